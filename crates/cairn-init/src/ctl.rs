//! `cairnctl`: control of the running init over a Unix socket,
//! [`SOCKET_PATH`] (mode 0600: root only).
//!
//! Protocol: the client sends one request line; the server answers with
//! `ok` or `error: MESSAGE` on the first line, then the body, then closes
//! (for `logs -f` it keeps sending new lines). Requests:
//!
//! ```text
//! status [--json]
//! logs [-f] [SERVICE]
//! start|stop|restart SERVICE
//! poweroff | reboot
//! ```
//!
//! A request line longer than [`MAX_REQUEST`] bytes, not UTF-8, or not one
//! of the above gets an error reply; nothing else happens.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the init listens.
pub const SOCKET_PATH: &str = "/run/cairn/control.sock";
/// Test mode only: overrides [`SOCKET_PATH`] (server and client).
pub const SOCKET_ENV: &str = "CAIRN_CONTROL";
/// Longest request line.
pub const MAX_REQUEST: usize = 1024;

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status {
        json: bool,
    },
    Logs {
        follow: bool,
        service: Option<String>,
    },
    Start(String),
    Stop(String),
    Restart(String),
    Poweroff,
    Reboot,
}

/// The usage line shown for bad requests.
pub const USAGE: &str =
    "usage: cairnctl status [--json] | logs [-f] [SERVICE] | start|stop|restart SERVICE | poweroff | reboot";

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Parses one request line (without the newline).
pub fn parse(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let name = |n: &str| {
        if valid_name(n) {
            Ok(n.to_string())
        } else {
            Err(format!("invalid service name {n:?}"))
        }
    };
    match words.as_slice() {
        ["status"] => Ok(Request::Status { json: false }),
        ["status", "--json"] => Ok(Request::Status { json: true }),
        ["logs", rest @ ..] => {
            let mut follow = false;
            let mut service = None;
            for w in rest {
                match *w {
                    "-f" | "--follow" if !follow => follow = true,
                    w if service.is_none() && !w.starts_with('-') => service = Some(name(w)?),
                    w => return Err(format!("unexpected argument {w:?} to logs")),
                }
            }
            Ok(Request::Logs { follow, service })
        }
        ["start", n] => Ok(Request::Start(name(n)?)),
        ["stop", n] => Ok(Request::Stop(name(n)?)),
        ["restart", n] => Ok(Request::Restart(name(n)?)),
        ["poweroff"] => Ok(Request::Poweroff),
        ["reboot"] => Ok(Request::Reboot),
        [] => Err("empty request".into()),
        _ => Err(format!("unknown request {:?}", truncate(line, 80))),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err(String),
    /// Send the ring (and, with `follow`, keep sending).
    Logs {
        follow: bool,
        service: Option<String>,
    },
}

impl Reply {
    pub fn ok(body: String) -> Reply {
        Reply::Ok(body)
    }
    pub fn err(msg: String) -> Reply {
        Reply::Err(msg)
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Following the log: last sequence sent and the source filter.
    follow: Option<(u64, Option<String>)>,
    /// A request was read; nothing more is.
    asked: bool,
    done: bool,
}

/// The listening socket and its connected clients.
pub struct Server {
    listener: UnixListener,
    clients: Vec<Client>,
}

/// The socket path for this mode.
pub fn socket_path(mode: crate::Mode) -> Option<PathBuf> {
    match (mode, std::env::var_os(SOCKET_ENV)) {
        (crate::Mode::Test, Some(p)) => Some(p.into()),
        (crate::Mode::Test, None) => None,
        (crate::Mode::Pid1, _) => Some(SOCKET_PATH.into()),
    }
}

impl Server {
    /// Binds `path` (removing a stale socket), mode 0600.
    pub fn bind(path: &Path) -> std::io::Result<Server> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            clients: Vec::new(),
        })
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Fds of clients that may send something (index = client number).
    pub fn client_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.clients.iter().map(|c| c.stream.as_fd()).collect()
    }

    /// Accepts pending connections (at most 16 clients at once).
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= 16 {
                let mut s = stream;
                let _ = s.write_all(b"error: too many clients\n");
                continue;
            }
            let _ = stream.set_nonblocking(true);
            self.clients.push(Client {
                stream,
                buf: Vec::new(),
                follow: None,
                asked: false,
                done: false,
            });
        }
    }

    /// Reads from the ready clients; returns complete requests. Bad ones
    /// are answered here.
    pub fn read_clients(&mut self, ready: &[usize]) -> Vec<(usize, Request)> {
        let mut out = Vec::new();
        for &i in ready {
            let Some(c) = self.clients.get_mut(i) else {
                continue;
            };
            if c.done || (c.asked && c.follow.is_none()) {
                continue;
            }
            let mut buf = [0u8; 512];
            match c.stream.read(&mut buf) {
                Ok(0) => c.done = true,
                Ok(n) if c.follow.is_some() => {
                    let _ = n; // followers send nothing that matters
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&buf[..n]);
                    if let Some(pos) = c.buf.iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8(c.buf[..pos].to_vec());
                        c.asked = true;
                        match line
                            .map_err(|_| "request is not UTF-8".to_string())
                            .and_then(|l| parse(&l))
                        {
                            Ok(req) => out.push((i, req)),
                            Err(e) => {
                                send(c, &format!("error: {e}\n{USAGE}\n"));
                                c.done = true;
                            }
                        }
                    } else if c.buf.len() > MAX_REQUEST {
                        send(c, "error: request too long\n");
                        c.done = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => c.done = true,
            }
        }
        out
    }

    /// Sends `reply` to client `i`.
    pub fn reply(&mut self, i: usize, reply: Reply) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        match reply {
            Reply::Ok(body) => {
                send(c, &format!("ok\n{body}"));
                c.done = true;
            }
            Reply::Err(msg) => {
                send(c, &format!("error: {msg}\n"));
                c.done = true;
            }
            Reply::Logs { follow, service } => {
                let lines = crate::log::since(0, service.as_deref());
                let last = lines.last().map_or(crate::log::last_seq(), |e| e.seq);
                let text: String = lines.iter().map(|e| e.render()).collect();
                send(c, &format!("ok\n{text}"));
                if follow {
                    c.follow = Some((last.max(crate::log::last_seq()), service));
                } else {
                    c.done = true;
                }
            }
        }
    }

    /// Sends followers what was logged since, and drops finished clients.
    pub fn finish_round(&mut self) {
        for c in &mut self.clients {
            if let Some((seq, filter)) = &c.follow {
                let new = crate::log::since(*seq, filter.as_deref());
                if let Some(last) = new.last() {
                    let last = last.seq;
                    let text: String = new.iter().map(|e| e.render()).collect();
                    if !send(c, &text) {
                        c.done = true;
                    }
                    if let Some((s, _)) = &mut c.follow {
                        *s = last;
                    }
                }
            }
        }
        self.clients.retain(|c| !c.done);
    }

    /// Whether a client follows the log (the loop then wakes up to feed it).
    pub fn has_followers(&self) -> bool {
        self.clients.iter().any(|c| c.follow.is_some())
    }
}

/// Writes `text`, waiting at most a second in all; false on failure.
fn send(c: &mut Client, text: &str) -> bool {
    let _ = c.stream.set_nonblocking(false);
    let _ = c.stream.set_write_timeout(Some(Duration::from_secs(1)));
    let ok = c.stream.write_all(text.as_bytes()).is_ok();
    let _ = c.stream.set_nonblocking(true);
    ok
}

/// Runs `cairnctl ARGS`; returns the exit status.
pub fn main(args: &[std::ffi::OsString]) -> i32 {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let line = words.join(" ");
    if matches!(
        words.first().map(String::as_str),
        None | Some("-h" | "--help" | "help")
    ) {
        eprintln!("{USAGE}");
        return 2;
    }
    // Check locally first: a typo gets the usage without a round trip.
    let follow = match parse(&line) {
        Ok(Request::Logs { follow, .. }) => follow,
        Ok(_) => false,
        Err(e) => {
            eprintln!("cairnctl: {e}\n{USAGE}");
            return 2;
        }
    };
    let path = std::env::var_os(SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| SOCKET_PATH.into());
    let mut s = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairnctl: cannot connect to {}: {e}", path.display());
            return 1;
        }
    };
    if !follow {
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    }
    if let Err(e) = s.write_all(format!("{line}\n").as_bytes()) {
        eprintln!("cairnctl: {e}");
        return 1;
    }
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => first.push(byte[0]),
            _ => break,
        }
    }
    let first = String::from_utf8_lossy(&first).into_owned();
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    let mut rest = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if first == "ok" => {
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            Ok(n) => rest.extend_from_slice(&buf[..n]),
        }
    }
    if first == "ok" {
        0
    } else {
        eprintln!(
            "cairnctl: {}",
            first.strip_prefix("error: ").unwrap_or(&first)
        );
        let _ = std::io::stderr().write_all(&rest);
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(parse("status"), Ok(Request::Status { json: false }));
        assert_eq!(
            parse("  status   --json "),
            Ok(Request::Status { json: true })
        );
        assert_eq!(
            parse("logs -f web"),
            Ok(Request::Logs {
                follow: true,
                service: Some("web".into())
            })
        );
        assert_eq!(
            parse("logs"),
            Ok(Request::Logs {
                follow: false,
                service: None
            })
        );
        assert_eq!(parse("restart web"), Ok(Request::Restart("web".into())));
        assert_eq!(parse("stop a.b_c-1"), Ok(Request::Stop("a.b_c-1".into())));
        assert_eq!(parse("start x"), Ok(Request::Start("x".into())));
        assert_eq!(parse("poweroff"), Ok(Request::Poweroff));
        assert_eq!(parse("reboot"), Ok(Request::Reboot));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "   ",
            "status --yaml",
            "restart",
            "restart a b",
            "stop ../etc",
            "logs -f -f",
            "logs a b",
            "logs --bogus",
            "poweroff now",
            "\u{0}\u{1}\u{2}",
            "rm -rf /",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(10_000);
        let e = parse(&long).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn server_answers_garbage_with_an_error_and_stays_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let mut srv = Server::bind(&path).unwrap();
        let mut a = UnixStream::connect(&path).unwrap();
        a.write_all(b"frobnicate\n").unwrap();
        let mut b = UnixStream::connect(&path).unwrap();
        b.write_all(&[0xff, 0xfe, b'\n']).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        // Exactly three reads' worth, so the server leaves nothing unread.
        c.write_all(&[b'a'; 1536]).unwrap();
        let mut d = UnixStream::connect(&path).unwrap();
        d.write_all(b"status\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        srv.accept();
        assert_eq!(srv.clients.len(), 4);
        let mut reqs = Vec::new();
        for _ in 0..4 {
            reqs.extend(srv.read_clients(&[0, 1, 2, 3]));
        }
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].1, Request::Status { json: false });
        srv.reply(reqs[0].0, Reply::ok("hello\n".into()));
        srv.finish_round();
        assert!(srv.clients.is_empty());
        let read = |s: &mut UnixStream| {
            let mut t = String::new();
            s.read_to_string(&mut t).unwrap();
            t
        };
        assert!(read(&mut a).starts_with("error: unknown request \"frobnicate\""));
        assert!(read(&mut b).starts_with("error: request is not UTF-8"));
        assert!(read(&mut c).starts_with("error: request too long"));
        assert_eq!(read(&mut d), "ok\nhello\n");
    }
}

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
//! `cairnctl update check|now|status` goes to the update agent's own
//! socket ([`crate::update::SOCKET_PATH`]).
//!
//! A request line longer than [`MAX_REQUEST`] bytes, not UTF-8, or not one
//! of the above gets an error reply; nothing else happens.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::event::{EventLoop, Handler, Token};

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
    /// From the node config agent: `node-config apply` (the verified
    /// config is at [`cairn_manifest::NODE_CONFIG_PATH`]) or `node-config
    /// builtin`; either lets the services waiting for it start.
    NodeConfig {
        apply: bool,
    },
}

/// The usage line shown for bad requests.
pub const USAGE: &str =
    "usage: cairnctl status [--json] | logs [-f] [SERVICE] | start|stop|restart SERVICE | poweroff | reboot | update check|now|status";

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
            Err(format!("invalid service name {}", quote(n)))
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
                    w => return Err(format!("unexpected argument {} to logs", quote(w))),
                }
            }
            Ok(Request::Logs { follow, service })
        }
        ["start", n] => Ok(Request::Start(name(n)?)),
        ["stop", n] => Ok(Request::Stop(name(n)?)),
        ["restart", n] => Ok(Request::Restart(name(n)?)),
        ["poweroff"] => Ok(Request::Poweroff),
        ["reboot"] => Ok(Request::Reboot),
        ["node-config", w @ ("apply" | "builtin")] => Ok(Request::NodeConfig {
            apply: *w == "apply",
        }),
        [] => Err("empty request".into()),
        _ => Err(format!("unknown request {}", quote(line))),
    }
}

/// `s` quoted and escaped as Rust's `{:?}` does, cut to 80 characters
/// (then ending in `..."`): an error reply stays short whatever was sent.
fn quote(s: &str) -> String {
    let q = format!("{s:?}");
    if q.chars().count() <= 80 {
        q
    } else {
        format!("{}...\"", truncate(&q, 80))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What the bytes a client has sent so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framed {
    /// No newline yet, and not too long: wait for more.
    Partial,
    /// The request line, parsed (or why it is refused).
    Line(Result<Request, String>),
    /// No newline within [`MAX_REQUEST`] bytes.
    TooLong,
}

/// Finds and parses the request line in `buf`, the bytes a client has
/// sent so far (read in pieces of up to 512 bytes).
pub(crate) fn frame(buf: &[u8]) -> Framed {
    match buf.iter().position(|&b| b == b'\n') {
        Some(pos) if pos > MAX_REQUEST => Framed::TooLong,
        Some(pos) => {
            let line = String::from_utf8(buf[..pos].to_vec());
            Framed::Line(
                line.map_err(|_| "request is not UTF-8".to_string())
                    .and_then(|l| parse(&l)),
            )
        }
        None if buf.len() > MAX_REQUEST => Framed::TooLong,
        None => Framed::Partial,
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

/// How long a client has to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take its whole reply (followers excepted).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients at once; a new connection closes the oldest when full.
pub const MAX_CLIENTS: usize = 16;
/// A `logs -f` follower whose unsent lines pass this is closed.
pub const FOLLOW_MAX: usize = 1 << 20;
/// Connections accepted per call (the rest wait for the next turn).
const ACCEPT_BUDGET: usize = 8;

struct Client {
    stream: UnixStream,
    /// The request line so far.
    buf: Vec<u8>,
    /// Reply bytes not sent yet.
    out: Vec<u8>,
    /// Following the log: last sequence sent and the source filter.
    follow: Option<(u64, Option<String>)>,
    /// A request was read; nothing more is.
    asked: bool,
    /// Close once `out` is sent.
    last: bool,
    /// Closed when this passes (none while following).
    deadline: Option<Instant>,
    closed: bool,
    token: Option<Token>,
    /// The loop also waits for room to write.
    writing: bool,
}

impl Client {
    /// Sends what `out` holds without blocking; closes the client when
    /// all is sent and it was the last of it, or on error.
    fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => break,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
        if self.last {
            self.closed = true;
        }
    }

    fn send(&mut self, text: &str, last: bool) {
        self.out.extend_from_slice(text.as_bytes());
        self.last |= last;
        self.flush();
    }
}

/// The listening socket and its connected clients. Nothing here blocks:
/// requests are read and replies written as the clients allow, each
/// within [`REQUEST_TIMEOUT`] and [`REPLY_TIMEOUT`].
pub struct Server {
    listener: UnixListener,
    clients: Vec<Client>,
    /// Clients refused or closed so far because the table was full.
    evicted: u64,
    /// Connections refused for lack of permission.
    refused: u64,
}

/// `CAP_SYS_ADMIN`: what a root client needs in its effective set.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether the peer of `stream` may use the control socket: root with
/// `CAP_SYS_ADMIN` in its effective set, or (an init not running as root,
/// in test mode) the init's own user. A root service whose manifest drops
/// its capabilities is refused.
fn permitted(stream: &UnixStream) -> Result<(), String> {
    let cred = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("a client whose credentials cannot be read: {e}"))?;
    let (pid, uid) = (cred.pid.as_raw_nonzero().get(), cred.uid.as_raw());
    let own = rustix::process::geteuid().as_raw();
    if own != 0 && uid == own {
        return Ok(());
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("pid {pid} (uid {uid}): its /proc status cannot be read ({e})"))?;
    if uid == 0 && has_cap(&status, CAP_SYS_ADMIN) {
        return Ok(());
    }
    Err(format!(
        "pid {pid} (uid {uid}): not root with CAP_SYS_ADMIN"
    ))
}

/// Whether the `CapEff` line of a /proc/PID/status text has `cap`.
fn has_cap(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << cap) != 0)
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
            evicted: 0,
            refused: 0,
        })
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Accepts pending connections (a few per call). When the table is
    /// full the oldest client that has not sent its request is closed to
    /// make room (or, if all have, the oldest): a stuck or hostile client
    /// never locks out a new `cairnctl`.
    pub fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BUDGET {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
            let _ = stream.set_nonblocking(true);
            if let Err(why) = permitted(&stream) {
                let mut s = stream;
                let _ = s.write_all(
                    b"error: permission denied: cairnctl needs root with CAP_SYS_ADMIN\n",
                );
                self.refused += 1;
                if self.refused.is_power_of_two() {
                    crate::warn!(
                        "control socket: refused {why} ({} refused so far)",
                        self.refused
                    );
                }
                continue;
            }
            let open = self.clients.iter().filter(|c| !c.closed).count();
            if open >= MAX_CLIENTS {
                // The oldest that has not asked anything yet; failing that
                // the oldest of all (a follower, a reply being written).
                let victim = match self.clients.iter().position(|c| !c.closed && !c.asked) {
                    Some(i) => Some(i),
                    None => self.clients.iter().position(|c| !c.closed),
                };
                if let Some(oldest) = victim.and_then(|i| self.clients.get_mut(i)) {
                    oldest.out.clear();
                    oldest.send("error: too many clients\n", true);
                    oldest.closed = true;
                }
                self.evicted += 1;
                if self.evicted.is_power_of_two() {
                    crate::warn!(
                        "control socket: client table full; closed the oldest client ({} so far)",
                        self.evicted
                    );
                }
            }
            self.clients.push(Client {
                stream,
                buf: Vec::new(),
                out: Vec::new(),
                follow: None,
                asked: false,
                last: false,
                deadline: Some(now + REQUEST_TIMEOUT),
                closed: false,
                token: None,
                writing: false,
            });
        }
    }

    /// The client watched as `token` is ready: sends what it can take and
    /// reads its request (once). Returns the request, if complete; bad
    /// ones are answered here.
    pub fn ready(&mut self, token: Token, now: Instant) -> Option<(Token, Request)> {
        let c = self.clients.iter_mut().find(|c| c.token == Some(token))?;
        c.flush();
        if c.closed {
            return None;
        }
        let mut buf = [0u8; 512];
        match c.stream.read(&mut buf) {
            Ok(0) => {
                // Gone; a follower's or pending reply has nobody to read it.
                c.closed = true;
                None
            }
            // After the request, followers and slow readers send nothing
            // that matters.
            Ok(_) if c.asked => None,
            Ok(n) => {
                c.buf.extend_from_slice(&buf[..n]);
                match frame(&c.buf) {
                    Framed::Partial => {}
                    Framed::Line(line) => {
                        c.asked = true;
                        c.deadline = Some(now + REPLY_TIMEOUT);
                        match line {
                            Ok(req) => return Some((token, req)),
                            Err(e) => c.send(&format!("error: {e}\n{USAGE}\n"), true),
                        }
                    }
                    Framed::TooLong => c.send("error: request too long\n", true),
                }
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
            Err(_) => {
                c.closed = true;
                None
            }
        }
    }

    /// Queues `reply` for the client watched as `token`.
    pub fn reply(&mut self, token: Token, reply: Reply) {
        let Some(c) = self.clients.iter_mut().find(|c| c.token == Some(token)) else {
            return;
        };
        match reply {
            Reply::Ok(body) => c.send(&format!("ok\n{body}"), true),
            Reply::Err(msg) => c.send(&format!("error: {msg}\n"), true),
            Reply::Logs { follow, service } => {
                let lines = crate::log::since(0, service.as_deref());
                let last = lines.last().map_or(crate::log::last_seq(), |e| e.seq);
                let text: String = lines.iter().map(|e| e.render()).collect();
                if follow {
                    c.follow = Some((last.max(crate::log::last_seq()), service));
                    c.deadline = None;
                }
                c.send(&format!("ok\n{text}"), !follow);
            }
        }
    }

    /// Queues for followers what was logged since their last line; a
    /// follower that lets more than [`FOLLOW_MAX`] pile up is closed.
    pub fn feed_followers(&mut self) {
        let newest = crate::log::last_seq();
        for c in self.clients.iter_mut().filter(|c| !c.closed) {
            let Some((seq, filter)) = &mut c.follow else {
                continue;
            };
            if *seq >= newest {
                continue;
            }
            let new = crate::log::since(*seq, filter.as_deref());
            *seq = new.last().map_or(newest, |e| e.seq);
            let text: String = new.iter().map(|e| e.render()).collect();
            if c.out.len() + text.len() > FOLLOW_MAX {
                c.out.clear();
                c.send("cairnctl: too slow; closing\n", true);
                c.closed = true;
                continue;
            }
            c.send(&text, false);
        }
    }

    /// Whether a client follows the log.
    pub fn has_followers(&self) -> bool {
        self.clients.iter().any(|c| c.follow.is_some() && !c.closed)
    }

    /// The earliest client timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter(|c| !c.closed)
            .filter_map(|c| c.deadline)
            .min()
    }

    /// Closes the clients whose time is up.
    pub fn expire(&mut self, now: Instant) {
        for c in &mut self.clients {
            if c.deadline.is_some_and(|d| d <= now) && !c.closed {
                if !c.asked {
                    c.out.clear();
                    c.send("error: no request within 5s\n", true);
                }
                c.closed = true;
            }
        }
    }

    /// Brings the event loop up to date: watches new clients (with
    /// `handler`), waits for room to write where replies are pending,
    /// drops closed clients.
    pub fn sync<T>(&mut self, ev: &mut EventLoop<T>, handler: Handler<T>) {
        self.clients.retain_mut(|c| {
            if c.closed {
                if let Some(t) = c.token {
                    ev.deregister(&c.stream, t);
                }
                return false;
            }
            let writing = !c.out.is_empty();
            if c.token.is_none() {
                match ev.register(&c.stream, "control client", handler) {
                    Ok(t) => {
                        c.token = Some(t);
                        c.writing = false;
                    }
                    Err(e) => {
                        crate::info!("{e}");
                        return false;
                    }
                }
            }
            if let Some(t) = c.token {
                if writing != c.writing {
                    ev.set_interest(&c.stream, t, true, writing);
                    c.writing = writing;
                }
            }
            true
        });
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.iter().filter(|c| !c.closed).count()
    }
}

/// Runs `cairnctl ARGS`; returns the exit status.
/// `cairnctl update check|now|status`: asks the update agent (a helper
/// process with its own socket), not PID 1.
fn update_client(words: &[String]) -> i32 {
    let w = match words {
        [w] if matches!(w.as_str(), "check" | "now" | "status") => w,
        _ => {
            eprintln!("usage: cairnctl update check|now|status");
            return 2;
        }
    };
    let path = crate::update::SOCKET_PATH;
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairnctl: cannot reach the update agent at {path}: {e}");
            return 1;
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(900)));
    let mut out = String::new();
    if let Err(e) = s
        .write_all(format!("{w}\n").as_bytes())
        .and_then(|()| s.read_to_string(&mut out))
    {
        eprintln!("cairnctl: {e}");
        return 1;
    }
    match out.split_once('\n') {
        Some(("ok", body)) => {
            print!("{body}");
            0
        }
        _ => {
            eprintln!(
                "cairnctl: {}",
                out.trim().strip_prefix("error: ").unwrap_or(out.trim())
            );
            1
        }
    }
}

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
    if words.first().map(String::as_str) == Some("update") {
        return update_client(&words[1..]);
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
    // A server that refuses us writes why and closes at once, possibly
    // before our request is written (EPIPE): its reason is still there to
    // read, so a failed write only counts when nothing came back.
    let sent = s.write_all(format!("{line}\n").as_bytes());
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => first.push(byte[0]),
            _ => break,
        }
    }
    if let (Err(e), true) = (&sent, first.is_empty()) {
        eprintln!("cairnctl: {e}");
        return 1;
    }
    let first = String::from_utf8_lossy(&first).into_owned();
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    let mut rest = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            // A follower's lines go out as they come.
            Ok(n) if first == "ok" && follow => {
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            // Anything else is taken whole first: a slow reader of our
            // output (a pager) must not hold the server's 10 s for us.
            Ok(n) => rest.extend_from_slice(&buf[..n]),
        }
    }
    if first == "ok" {
        let _ = out.write_all(&rest);
        let _ = out.flush();
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
        assert_eq!(
            parse("node-config apply"),
            Ok(Request::NodeConfig { apply: true })
        );
        assert!(parse("node-config other").is_err());
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

    /// Found by the `ctl` fuzz target: an error reply quoted the whole
    /// offending word (up to the request's length, each control character
    /// escaped into 6 bytes), and a line longer than [`MAX_REQUEST`] was
    /// taken when its newline came in the same read as the bytes past the
    /// limit (the buffer grows 512 bytes at a time).
    #[test]
    fn error_replies_are_short_and_long_lines_are_refused_whole() {
        let bad = format!("stop {}", "\u{1f}".repeat(1000));
        let e = parse(&bad).unwrap_err();
        assert!(e.len() < 300, "{} bytes: {e}", e.len());
        let e = parse(&format!("logs a {}", "\u{1f}".repeat(1000))).unwrap_err();
        assert!(e.len() < 300, "{} bytes: {e}", e.len());
        let mut long = format!("status{}", " ".repeat(MAX_REQUEST));
        long.push('\n');
        assert_eq!(frame(long.as_bytes()), Framed::TooLong);
        assert_eq!(
            frame(b"status --json\n"),
            Framed::Line(Ok(Request::Status { json: true }))
        );
        assert_eq!(frame(b"status"), Framed::Partial);
    }

    #[test]
    fn only_root_with_cap_sys_admin_is_let_in() {
        assert!(has_cap(
            "Name:\tx\nCapEff:\t000001ffffffffff\n",
            CAP_SYS_ADMIN
        ));
        assert!(!has_cap("CapEff:\t0000000000000000\n", CAP_SYS_ADMIN));
        assert!(!has_cap("CapEff:\t0000000000200000\n", 20));
        assert!(has_cap("CapEff:\t0000000000200000\n", 21));
        assert!(!has_cap("garbage", CAP_SYS_ADMIN));
        // This process is let in: root with all capabilities, or the init's
        // own user.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let l = UnixListener::bind(&path).unwrap();
        let _c = UnixStream::connect(&path).unwrap();
        let (s, _) = l.accept().unwrap();
        assert_eq!(permitted(&s), Ok(()));
    }

    /// The server driven by a real event loop, as in the init.
    fn serve(srv: &mut Server, ev: &mut EventLoop<Server>, turns: usize) {
        fn on_client(srv: &mut Server, _: &mut EventLoop<Server>, t: Token) {
            if let Some((t, req)) = srv.ready(t, Instant::now()) {
                let body = format!("{req:?}\n");
                srv.reply(t, Reply::ok(body));
            }
        }
        for _ in 0..turns {
            srv.accept(Instant::now());
            srv.expire(Instant::now());
            srv.sync(ev, on_client);
            ev.timer(
                "wake",
                |_| Some(Instant::now() + Duration::from_millis(5)),
                |_, _, _| {},
            );
            ev.turn(srv, |_, _| {});
            srv.sync(ev, on_client);
        }
    }

    fn read(s: &mut UnixStream) -> String {
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    }

    #[test]
    fn server_answers_garbage_with_an_error_and_stays_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let mut srv = Server::bind(&path).unwrap();
        let mut ev = EventLoop::new().unwrap();
        let mut a = UnixStream::connect(&path).unwrap();
        a.write_all(b"frobnicate\n").unwrap();
        let mut b = UnixStream::connect(&path).unwrap();
        b.write_all(&[0xff, 0xfe, b'\n']).unwrap();
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(&[b'a'; 1536]).unwrap();
        let mut d = UnixStream::connect(&path).unwrap();
        d.write_all(b"status\n").unwrap();
        serve(&mut srv, &mut ev, 8);
        assert_eq!(srv.clients(), 0);
        assert_eq!(ev.registered(), 0);
        assert!(read(&mut a).starts_with("error: unknown request \"frobnicate\""));
        assert!(read(&mut b).starts_with("error: request is not UTF-8"));
        assert!(read(&mut c).starts_with("error: request too long"));
        assert_eq!(read(&mut d), "ok\nStatus { json: false }\n");
    }

    #[test]
    fn a_full_table_closes_the_oldest_and_a_new_client_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let mut srv = Server::bind(&path).unwrap();
        let mut ev = EventLoop::new().unwrap();
        let mut idle: Vec<UnixStream> = (0..MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        serve(&mut srv, &mut ev, 2);
        assert_eq!(srv.clients(), MAX_CLIENTS);
        let mut fresh = UnixStream::connect(&path).unwrap();
        fresh.write_all(b"status --json\n").unwrap();
        serve(&mut srv, &mut ev, 4);
        assert_eq!(read(&mut fresh), "ok\nStatus { json: true }\n");
        assert_eq!(read(&mut idle[0]), "error: too many clients\n");
        assert_eq!(srv.clients(), MAX_CLIENTS - 1);
    }

    #[test]
    fn a_full_table_closes_an_idle_client_before_one_that_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let mut srv = Server::bind(&path).unwrap();
        let mut ev = EventLoop::new().unwrap();
        // The oldest client follows the log; the others are idle.
        let follower = UnixStream::connect(&path).unwrap();
        serve(&mut srv, &mut ev, 1);
        // As if it had asked `logs -f` and been answered.
        srv.clients[0].follow = Some((0, None));
        srv.clients[0].asked = true;
        srv.clients[0].deadline = None;
        let mut idle: Vec<UnixStream> = (1..MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        serve(&mut srv, &mut ev, 2);
        let _fresh = UnixStream::connect(&path).unwrap();
        serve(&mut srv, &mut ev, 2);
        assert!(!srv.clients.iter().any(|c| c.closed));
        assert!(srv.clients[0].follow.is_some(), "the follower stays");
        drop(follower);
        assert_eq!(read(&mut idle[0]), "error: too many clients\n");
    }

    #[test]
    fn idle_clients_time_out_and_replies_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let mut srv = Server::bind(&path).unwrap();
        let mut ev = EventLoop::new().unwrap();
        let mut idle = UnixStream::connect(&path).unwrap();
        let slow = UnixStream::connect(&path).unwrap();
        serve(&mut srv, &mut ev, 2);
        // A reply far larger than the socket buffer to a client that
        // reads nothing: queued, the loop goes on.
        let t = srv.clients[1].token.unwrap();
        srv.clients[1].asked = true;
        srv.clients[1].deadline = Some(Instant::now() + REPLY_TIMEOUT);
        srv.reply(t, Reply::ok("x".repeat(4 << 20)));
        assert!(!srv.clients[1].out.is_empty());
        serve(&mut srv, &mut ev, 2);
        assert_eq!(srv.clients(), 2);
        // Time passes: both are closed.
        srv.expire(Instant::now() + REPLY_TIMEOUT + Duration::from_secs(1));
        serve(&mut srv, &mut ev, 1);
        assert_eq!(srv.clients(), 0);
        assert_eq!(read(&mut idle), "error: no request within 5s\n");
        drop(slow);
    }
}

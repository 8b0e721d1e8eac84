//! `cairn-test-load MODE`: guest programs for the liveness tests
//! (tests/tests/liveness.rs), built static for the init's target and put in
//! the image. BusyBox cannot open Unix sockets, so the hostile `cairnctl`
//! clients are here; so is a ticker that never forks, the well-behaved
//! service whose log must keep flowing while the rest of the machine is
//! under load. Std only; every mode runs until it is killed.
//!
//! - `tick`: prints `tick N` once a second (N from 1).
//! - `idle N`: keeps N connections to the control socket open, sending
//!   nothing; reports each one the server closes (and how long it lived),
//!   then opens it again 2 s later.
//! - `slow`: sends `logs`, then reads the reply one byte a second; reports
//!   when the server closes the connection or the whole reply was read
//!   (seconds since connecting and since the first byte of the reply),
//!   then starts over 2 s later.
//! - `flood N`: keeps N connections open (sending nothing) to fill the
//!   server's client table, each reopened 2 s after the server closes it;
//!   every 10 s prints how many are open and how many the server closed.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Where cairn-init listens (`CAIRN_CONTROL` overrides it, as for
/// cairnctl).
fn socket() -> PathBuf {
    std::env::var_os("CAIRN_CONTROL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/run/cairn/control.sock".into())
}

/// One output line, written at once; a closed stdout ends the program.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(format!("{text}\n").as_bytes()).is_err() || out.flush().is_err() {
        std::process::exit(1);
    }
}

fn connect() -> Option<UnixStream> {
    match UnixStream::connect(socket()) {
        Ok(s) => Some(s),
        Err(e) => {
            say(&format!("cannot connect to {}: {e}", socket().display()));
            None
        }
    }
}

fn tick() -> ! {
    for i in 1u64.. {
        say(&format!("tick {i}"));
        sleep(Duration::from_secs(1));
    }
    unreachable!()
}

/// Reads until the server closes `s` (or `limit` passes); returns what it
/// sent first (up to 64 bytes) and whether it closed.
fn wait_closed(s: &mut UnixStream, limit: Duration) -> (String, bool) {
    let end = Instant::now() + limit;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&first).into_owned(), true),
            Ok(n) => {
                let room = 64usize.saturating_sub(first.len()).min(n);
                first.extend_from_slice(&buf[..room]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&first).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&first).into_owned(), false)
}

fn idle(n: usize) -> ! {
    for k in 1..=n {
        std::thread::spawn(move || loop {
            if let Some(mut s) = connect() {
                let t0 = Instant::now();
                let (said, closed) = wait_closed(&mut s, Duration::from_secs(120));
                let secs = t0.elapsed().as_secs_f64();
                if closed {
                    say(&format!(
                        "idle {k}: closed by the server after {secs:.1}s (it said {:?})",
                        said.trim_end()
                    ));
                } else {
                    say(&format!(
                        "idle {k}: still open after {secs:.0}s; closing it"
                    ));
                }
            }
            sleep(Duration::from_secs(2));
        });
    }
    say(&format!("idle: holding {n} connections that send nothing"));
    loop {
        sleep(Duration::from_secs(3600));
    }
}

/// Whether the peer has closed `s` (readable data may still be queued).
fn peer_closed(s: &UnixStream) -> bool {
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    const POLLERR: i16 = 0x8;
    const POLLHUP: i16 = 0x10;
    const POLLRDHUP: i16 = 0x2000;
    extern "C" {
        fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
    }
    let mut p = PollFd {
        fd: s.as_raw_fd(),
        events: POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `p` is one valid, writable pollfd for the duration of the
    // call and `s` keeps its fd open; a zero timeout never blocks.
    let n = unsafe { poll(&mut p, 1, 0) };
    n > 0 && p.revents & (POLLERR | POLLHUP | POLLRDHUP) != 0
}

fn slow() -> ! {
    loop {
        if let Some(mut s) = connect() {
            let t0 = Instant::now();
            // When the first byte of the reply was read: the server's
            // grace for a slow reader starts about then, not at connect
            // (a busy server may take long to answer at all).
            let mut first: Option<Instant> = None;
            let mut got = 0u64;
            let sent = s.write_all(b"logs\n");
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let end = t0 + Duration::from_secs(120);
            let outcome = loop {
                if sent.is_err() {
                    break "the request could not be sent".to_string();
                }
                if Instant::now() > end {
                    break "still open after 120s; closing it".to_string();
                }
                if peer_closed(&s) {
                    break "closed by the server".to_string();
                }
                let mut byte = [0u8; 1];
                match s.read(&mut byte) {
                    Ok(0) => break "the whole reply was read".to_string(),
                    Ok(_) => {
                        got += 1;
                        first.get_or_insert_with(Instant::now);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => break format!("read error: {e}"),
                }
                sleep(Duration::from_secs(1));
            };
            let since_reply = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            say(&format!(
                "slow: {outcome} after {:.1}s, {since_reply:.1}s after the reply began ({got} bytes read)",
                t0.elapsed().as_secs_f64()
            ));
        }
        sleep(Duration::from_secs(2));
    }
}

fn flood(n: usize) -> ! {
    let open = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let told_full = Arc::new(AtomicU64::new(0));
    for _ in 0..n {
        let (open, closed, told_full) = (open.clone(), closed.clone(), told_full.clone());
        std::thread::spawn(move || loop {
            if let Some(mut s) = connect() {
                open.fetch_add(1, Ordering::Relaxed);
                let (said, was_closed) = wait_closed(&mut s, Duration::from_secs(600));
                open.fetch_sub(1, Ordering::Relaxed);
                if was_closed {
                    closed.fetch_add(1, Ordering::Relaxed);
                }
                if said.contains("too many clients") {
                    told_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            sleep(Duration::from_secs(2));
        });
    }
    loop {
        sleep(Duration::from_secs(10));
        say(&format!(
            "flood: {} of {n} connections open, {} closed by the server, {} told 'too many clients'",
            open.load(Ordering::Relaxed),
            closed.load(Ordering::Relaxed),
            told_full.load(Ordering::Relaxed)
        ));
    }
}

/// Prints the ids and capabilities the kernel gave this process (for a
/// setuid copy: did the setuid bit take?).
fn whoami() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for l in status.lines() {
        if l.starts_with("Uid:") || l.starts_with("CapEff:") || l.starts_with("NoNewPrivs:") {
            say(&format!(
                "whoami {}",
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |s: Option<&String>| s.and_then(|s| s.parse::<usize>().ok()).filter(|n| *n > 0);
    match (args.first().map(String::as_str), count(args.get(1))) {
        (Some("tick"), _) => tick(),
        (Some("idle"), Some(n)) => idle(n),
        (Some("slow"), _) => slow(),
        (Some("flood"), Some(n)) => flood(n),
        (Some("whoami"), _) => whoami(),
        _ => {
            eprintln!("usage: cairn-test-load tick | idle N | slow | flood N | whoami");
            std::process::exit(2);
        }
    }
}

//! A service's stdout and stderr: one pipe per run, read into the log line
//! by line, with a budget per loop turn and a rate limit per service.
//!
//! - Budget: at most [`READ_BUDGET`] bytes are read from one pipe per call;
//!   what is left waits for the next turn of the event loop, after every
//!   other source had its turn.
//! - Long lines: a line is cut every [`LINE_MAX`](crate::log::LINE_MAX)
//!   bytes; each cut piece is logged with ` [cut]` at its end.
//! - Rate limit: per service, a bucket of [`BURST`] lines refilled at
//!   [`RATE`] lines a second, and one of [`BYTE_BURST`] bytes refilled at
//!   [`BYTE_RATE`] bytes a second; a line must fit in both. Lines over
//!   either are read and dropped, and `service NAME: N lines dropped (over
//!   100 lines/s or 32 KiB/s)` is logged at most once a second (and when
//!   the pipe closes). The log (ring, file, console) is never asked to take
//!   more than that: one chatty service cannot push every other service's
//!   history out of the 1 MiB ring in seconds.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use cairn_manifest::Level;
use rustix::io::Errno;

use crate::event::Token;
use crate::log::LineBuf;

/// Bytes read from one pipe per call.
pub const READ_BUDGET: usize = 64 * 1024;
/// Lines a service may log at once before the rate applies.
pub const BURST: u32 = 1000;
/// Lines per second a service may log over time.
pub const RATE: u32 = 100;
/// Bytes a service may log at once before [`BYTE_RATE`] applies.
pub const BYTE_BURST: u32 = 256 * 1024;
/// Bytes per second a service may log over time.
pub const BYTE_RATE: u32 = 32 * 1024;

/// Two token buckets: lines and bytes.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    bytes: f64,
    last: Instant,
    dropped: u64,
    reported: Option<Instant>,
}

impl RateLimit {
    pub fn new(now: Instant) -> Self {
        RateLimit {
            tokens: f64::from(BURST),
            bytes: f64::from(BYTE_BURST),
            last: now,
            dropped: 0,
            reported: None,
        }
    }

    /// Whether one more line of `len` bytes may be logged at `now`;
    /// counts it as dropped if not.
    pub fn take(&mut self, now: Instant, len: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(RATE)).min(f64::from(BURST));
        self.bytes = (self.bytes + elapsed * f64::from(BYTE_RATE)).min(f64::from(BYTE_BURST));
        let len = len as f64;
        if self.tokens >= 1.0 && self.bytes >= len {
            self.tokens -= 1.0;
            self.bytes -= len;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// The number of lines dropped since the last report, when a report is
    /// due (`force`: at the end of the pipe; otherwise at most once a
    /// second).
    pub fn report(&mut self, now: Instant, force: bool) -> Option<u64> {
        if self.dropped == 0 {
            return None;
        }
        let due = force
            || self
                .reported
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if !due {
            return None;
        }
        self.reported = Some(now);
        Some(std::mem::take(&mut self.dropped))
    }
}

/// One service run's output pipe.
pub struct Output {
    /// Index of the service in the supervisor.
    pub service: usize,
    pub fd: OwnedFd,
    /// Set once the event loop watches `fd`.
    pub token: Option<Token>,
    buf: LineBuf,
}

/// What a read left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The pipe is still open (maybe with more to read next turn).
    Open,
    /// End of file or error: the pipe can go.
    Closed,
}

impl Output {
    pub fn new(service: usize, fd: OwnedFd) -> Self {
        Output {
            service,
            fd,
            token: None,
            buf: LineBuf::default(),
        }
    }

    /// Reads at most `budget` bytes and logs the lines under `name`
    /// through `limit`.
    pub fn read(&mut self, name: &str, limit: &mut RateLimit, budget: usize) -> ReadOutcome {
        let mut buf = [0u8; 4096];
        let mut left = budget;
        let outcome = loop {
            if left == 0 {
                break ReadOutcome::Open;
            }
            let want = left.min(buf.len());
            match rustix::io::read(&self.fd, &mut buf[..want]) {
                Ok(0) => {
                    if let Some(rest) = self.buf.rest() {
                        log_line(name, limit, &rest);
                    }
                    break ReadOutcome::Closed;
                }
                Ok(n) => {
                    left -= n;
                    for line in self.buf.feed(&buf[..n]) {
                        log_line(name, limit, &line);
                    }
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => break ReadOutcome::Open,
                Err(_) => break ReadOutcome::Closed,
            }
        };
        report_drops(name, limit, outcome == ReadOutcome::Closed);
        outcome
    }
}

fn log_line(name: &str, limit: &mut RateLimit, line: &str) {
    if limit.take(Instant::now(), line.len()) {
        crate::log::record(Level::Info, name, line, None);
    }
}

/// Logs the drop count of `limit` when one is due.
pub fn report_drops(name: &str, limit: &mut RateLimit, force: bool) {
    if let Some(n) = limit.report(Instant::now(), force) {
        crate::warn!(
            "service {name}: {n} lines dropped (over {RATE} lines/s or {} KiB/s)",
            BYTE_RATE / 1024
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(t0);
        let ok = (0..BURST + 50).filter(|_| r.take(t0, 2)).count();
        assert_eq!(ok, BURST as usize);
        assert_eq!(r.report(t0, false), Some(50));
        // Nothing more dropped: nothing to report.
        assert_eq!(r.report(t0, true), None);
        // Half a second refills 50 lines.
        let t1 = t0 + Duration::from_millis(500);
        let ok = (0..80).filter(|_| r.take(t1, 2)).count();
        assert_eq!(ok, 50);
        // Reported at most once a second, unless forced.
        assert_eq!(r.report(t1, false), None);
        assert_eq!(r.report(t1, true), Some(30));
    }

    #[test]
    fn long_lines_are_limited_by_bytes_too() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(t0);
        // 4 KiB lines: the byte burst (256 KiB) allows 64, not 1000.
        let ok = (0..100).filter(|_| r.take(t0, 4096)).count();
        assert_eq!(ok, 64);
        // One second refills 32 KiB: 8 more.
        let t1 = t0 + Duration::from_secs(1);
        let ok = (0..100).filter(|_| r.take(t1, 4096)).count();
        assert_eq!(ok, 8);
    }

    #[test]
    fn a_flooding_pipe_is_read_within_the_budget() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK).unwrap();
        let line = b"y\n".repeat(8192); // 16 KiB
        rustix::io::write(&w, &line).unwrap();
        let mut out = Output::new(0, r);
        let mut limit = RateLimit::new(Instant::now());
        assert_eq!(out.read("yes", &mut limit, 4096), ReadOutcome::Open);
        // 4096 bytes = 2048 lines: 1000 logged, the rest counted.
        assert_eq!(limit.tokens.floor() as u32, 0);
        assert!(limit.reported.is_some(), "the drops were reported");
        // The rest is still in the pipe for the next turn.
        let mut rest = [0u8; 65536];
        let n = rustix::io::read(&out.fd, &mut rest).unwrap();
        assert_eq!(n, 16384 - 4096);
        drop(w);
        assert_eq!(out.read("yes", &mut limit, 4096), ReadOutcome::Closed);
    }
}

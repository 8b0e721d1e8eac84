//! The one log: init's own messages, the kernel's (`/dev/kmsg`) and every
//! service's output, each line with a timestamp and its source.
//!
//! Lines are kept in a bounded ring in memory (`[log] lines`), mirrored to
//! the console when at least as important as `[log] console`, and appended
//! to `DIR/cairn.log` once [`set_log_dir`] found a writable directory (the
//! file is rotated to `cairn.log.1` at [`FILE_MAX`] bytes). Console lines
//! look like the kernel's, so the two read as one timeline:
//!
//! ```text
//! [    1.234567] cairn: init started
//! [    1.301000] web: listening on :80
//! ```
//!
//! Time comes from `CLOCK_BOOTTIME` moved onto the kernel log's own clock:
//! printk stamps records with the scheduler clock (the TSC), which starts
//! at a different moment and, under emulation, runs at a slightly different
//! rate; tens of milliseconds apart around boot. PID 1 measures the
//! difference ([`calibrate_kernel_clock`]: one record written to
//! `/dev/kmsg` and read back with its stamp) when it starts and again when
//! it logs ready, so its lines and the kernel's sort as one timeline.
//! Console lines go to standard error (PID 1 points it at `/dev/console`),
//! each in one `write(2)`. Kernel lines are not mirrored: the kernel
//! prints them on the console itself.
//!
//! While the status screen is shown ([`pause_console`]) lines are only
//! held in the ring; [`resume_console`] prints what was held.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cairn_manifest::Level;
use rustix::time::{clock_gettime, ClockId};

/// Size at which `cairn.log` is rotated.
pub const FILE_MAX: u64 = 1 << 20;
/// Longest line kept; longer ones are cut into pieces of this many bytes,
/// each but the last ending in [`CUT_MARK`].
pub const LINE_MAX: usize = 4096;
/// Ends a line that was cut at [`LINE_MAX`].
pub const CUT_MARK: &str = " [cut]";
/// Most bytes of text the ring keeps, whatever `[log] lines` says.
pub const RING_BYTES: usize = 1 << 20;
/// How often a log file that failed is tried again.
pub const FILE_RETRY: Duration = Duration::from_secs(5);

/// `cairn.debug` is on.
static DEBUG: AtomicBool = AtomicBool::new(false);
/// `[log] console = "debug"`.
static CONSOLE_DEBUG: AtomicBool = AtomicBool::new(false);
/// How far (ns) the kernel log's clock is ahead of `CLOCK_BOOTTIME`.
static KERNEL_CLOCK_AHEAD_NS: AtomicI64 = AtomicI64::new(0);
/// Whether [`calibrate_kernel_clock`] may write to `/dev/kmsg` (PID 1).
static KERNEL_CLOCK: AtomicBool = AtomicBool::new(false);
/// The text of the calibration record (level 7: kept, never on the
/// console).
const CLOCK_REFERENCE: &str = "cairn-init: log clock reference";

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number, counting from 1 across the whole boot.
    pub seq: u64,
    pub time: Duration,
    pub level: Level,
    /// `cairn`, `kernel`, or a service name.
    pub source: String,
    pub text: String,
}

impl Entry {
    /// `[    1.234567] SOURCE: TEXT`.
    pub fn render(&self) -> String {
        format_line(self.time, &format!("{}: {}", self.source, self.text))
    }
}

struct Logger {
    ring: VecDeque<Entry>,
    cap: usize,
    next_seq: u64,
    console: Level,
    /// Held lines start after this sequence number while paused.
    paused_at: Option<u64>,
    file: Option<FileLog>,
    /// Bytes of text (and source names) in the ring.
    bytes: usize,
}

/// The log file: path, open file, bytes in it, and whether writing it
/// failed (then it is retried every [`FILE_RETRY`]).
struct FileLog {
    path: PathBuf,
    file: File,
    size: u64,
    stopped: Option<Stopped>,
}

struct Stopped {
    retry_at: std::time::Instant,
    missed: u64,
}

/// What a write to the log file did, beyond writing.
#[derive(Debug, PartialEq, Eq)]
enum FileEvent {
    Written,
    /// Writing failed (the file log stops until a retry works).
    Stopped(String),
    /// A retry worked after `missed` lines were not written.
    Resumed(u64),
    /// Stopped and not yet due for a retry.
    Skipped,
}

static LOG: Mutex<Logger> = Mutex::new(Logger {
    ring: VecDeque::new(),
    cap: cairn_manifest::supervision::DEFAULT_LOG_LINES,
    next_seq: 1,
    console: Level::Info,
    paused_at: None,
    file: None,
    bytes: 0,
});

fn lock() -> MutexGuard<'static, Logger> {
    LOG.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held by unit tests that change the global logger's settings (or need
/// them unchanged while they look at the ring).
#[cfg(test)]
pub(crate) fn test_settings() -> MutexGuard<'static, ()> {
    static SETTINGS: Mutex<()> = Mutex::new(());
    SETTINGS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Turns debug lines on or off (`cairn.debug`): debug lines are then kept
/// and mirrored to the console.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
    if on {
        lock().console = Level::Debug;
    }
}

/// Whether debug lines are kept: `cairn.debug` or `[log] console =
/// "debug"` asked for them.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed) || CONSOLE_DEBUG.load(Ordering::Relaxed)
}

/// The console level in effect: `[log] console`, or debug with
/// `cairn.debug`.
fn console_level(configured: Level, cmdline_debug: bool) -> Level {
    if cmdline_debug {
        Level::Debug
    } else {
        configured
    }
}

/// Whether a line at `level` is recorded at all: debug lines only when
/// they may be shown (see [`debug_enabled`]).
fn keeps(level: Level, debug: bool) -> bool {
    level != Level::Debug || debug
}

/// Applies `[log]`: ring size and console level. `console = "debug"`
/// keeps and shows debug lines; `cairn.debug` shows them whatever the
/// level.
pub fn configure(lines: usize, console: Level) {
    let mut l = lock();
    l.cap = lines.max(1);
    trim(&mut l);
    l.console = console_level(console, DEBUG.load(Ordering::Relaxed));
    CONSOLE_DEBUG.store(console == Level::Debug, Ordering::Relaxed);
}

/// Starts writing `dir/cairn.log` (appending; what the ring holds is
/// written first). Errors leave the file off.
pub fn set_log_dir(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("cairn.log");
    let mut f = open_append(&path)?;
    let mut l = lock();
    let mut size = f.metadata().map(|m| m.len()).unwrap_or(0);
    for e in &l.ring {
        let line = e.render();
        f.write_all(line.as_bytes())?;
        size += line.len() as u64;
    }
    l.file = Some(FileLog {
        path,
        file: f,
        size,
        stopped: None,
    });
    Ok(())
}

/// Opens `path` for appending, creating it; a symlink there is refused
/// (`O_NOFOLLOW`): the log directory may be on a disk others can write.
fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Stops writing the log file (before unmounting its filesystem).
pub fn close_log_file() {
    let mut l = lock();
    if let Some(f) = l.file.take() {
        let _ = f.file.sync_all();
    }
}

/// Time since boot (`CLOCK_BOOTTIME`).
pub fn boottime() -> Duration {
    let ts = clock_gettime(ClockId::Boottime);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Now on the kernel log's clock: [`boottime`] plus the measured offset.
pub fn now() -> Duration {
    shift(boottime(), KERNEL_CLOCK_AHEAD_NS.load(Ordering::Relaxed))
}

fn shift(t: Duration, ahead_ns: i64) -> Duration {
    if ahead_ns >= 0 {
        t + Duration::from_nanos(ahead_ns as u64)
    } else {
        t.saturating_sub(Duration::from_nanos(ahead_ns.unsigned_abs()))
    }
}

/// How far `stamp` (the kernel's stamp of a record written between
/// `before` and `after`) is ahead of `CLOCK_BOOTTIME`, in ns.
fn ahead_ns(stamp: Duration, before: Duration, after: Duration) -> i64 {
    let mid = before + (after.saturating_sub(before)) / 2;
    stamp.as_nanos() as i64 - mid.as_nanos() as i64
}

/// Lets [`calibrate_kernel_clock`] write its record to `/dev/kmsg` (PID 1
/// only: a test-mode init must not write to its host's kernel log).
pub fn use_kernel_clock() {
    KERNEL_CLOCK.store(true, Ordering::Relaxed);
}

/// Measures the kernel log clock's offset from `CLOCK_BOOTTIME` and uses
/// it for every line from now on: writes [`CLOCK_REFERENCE`] to
/// `/dev/kmsg` and reads the record back with its stamp. Returns the
/// offset (ns), or `None` (offset unchanged) without `/dev/kmsg` or when
/// not enabled by [`use_kernel_clock`].
pub fn calibrate_kernel_clock() -> Option<i64> {
    use rustix::fs::{Mode, OFlags};
    if !KERNEL_CLOCK.load(Ordering::Relaxed) {
        return None;
    }
    let fd = rustix::fs::open(
        "/dev/kmsg",
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // Read only what comes after our write.
    rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0)).ok()?;
    let before = boottime();
    rustix::io::write(&fd, format!("<7>{CLOCK_REFERENCE}\n").as_bytes()).ok()?;
    let after = boottime();
    let mut buf = [0u8; 1024];
    // Kernel messages logged in between come first; a few at most.
    for _ in 0..32 {
        let n = match rustix::io::read(&fd, &mut buf) {
            Ok(n) => n,
            Err(rustix::io::Errno::PIPE) => continue, // overwritten records
            Err(_) => return None,
        };
        if let Some((_, stamp, text)) = parse_kmsg(&buf[..n]) {
            if text == CLOCK_REFERENCE {
                let ahead = ahead_ns(stamp, before, after);
                KERNEL_CLOCK_AHEAD_NS.store(ahead, Ordering::Relaxed);
                return Some(ahead);
            }
        }
    }
    None
}

/// The log line for a measured offset (see [`calibrate_kernel_clock`]).
pub fn kernel_clock_note(ahead_ns: i64) -> String {
    format!(
        "log clock: the kernel's is {} us ahead of CLOCK_BOOTTIME",
        ahead_ns / 1000
    )
}

/// Formats one console line: `[SSSSS.UUUUUU] text\n`, like printk.
pub fn format_line(since_boot: Duration, text: &str) -> String {
    format!(
        "[{:5}.{:06}] {}\n",
        since_boot.as_secs(),
        since_boot.subsec_micros(),
        text
    )
}

/// Lines the console could not take since the last one it did.
static CONSOLE_DROPPED: AtomicU64 = AtomicU64::new(0);
/// A line went out in part: the next write starts on a new line.
static CONSOLE_BROKEN: AtomicBool = AtomicBool::new(false);

/// One `write(2)` of `s` to the console (standard error, non-blocking as
/// PID 1): never waits. A line it cannot take is counted, and the next
/// one that gets through is preceded by `console: N lines not shown`.
fn console_write(s: &str) {
    let dropped = CONSOLE_DROPPED.load(Ordering::Relaxed);
    let broken = CONSOLE_BROKEN.load(Ordering::Relaxed);
    let text = if dropped > 0 || broken {
        let nl = if broken { "\n" } else { "" };
        format!("{nl}console: {dropped} lines not shown\n{s}")
    } else {
        s.to_string()
    };
    match rustix::io::write(rustix::stdio::stderr(), text.as_bytes()) {
        Ok(n) if n == text.len() => {
            CONSOLE_DROPPED.store(0, Ordering::Relaxed);
            CONSOLE_BROKEN.store(false, Ordering::Relaxed);
        }
        Ok(n) => {
            CONSOLE_DROPPED.fetch_add(1, Ordering::Relaxed);
            CONSOLE_BROKEN.store(n > 0, Ordering::Relaxed);
        }
        Err(_) => {
            CONSOLE_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes `text` as one timestamped console line, outside the ring (the
/// banner).
pub fn write_line(text: &str) {
    console_write(&format_line(now(), text));
}

/// Records one line from `source` at `level` (at `time`, or now).
pub fn record(level: Level, source: &str, text: &str, time: Option<Duration>) {
    if !keeps(level, debug_enabled()) {
        return;
    }
    let time = time.unwrap_or_else(now);
    let mut rest = text;
    // A piece cut by [`LineBuf`] already carries its mark.
    if rest.len() <= LINE_MAX + CUT_MARK.len() {
        push(level, source, rest, time);
        return;
    }
    loop {
        let mut cut = rest.len().min(LINE_MAX);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (part, tail) = rest.split_at(cut);
        if tail.is_empty() {
            push(level, source, part, time);
            break;
        }
        push(level, source, &format!("{part}{CUT_MARK}"), time);
        rest = tail;
    }
}

fn push(level: Level, source: &str, text: &str, time: Duration) {
    // A panic while the lock is held would deadlock the panic hook: nothing
    // in here panics (no indexing, no unwrap).
    let mut l = lock();
    push_locked(&mut l, level, source, text, time);
}

fn push_locked(l: &mut Logger, level: Level, source: &str, text: &str, time: Duration) {
    let entry = Entry {
        seq: l.next_seq,
        time,
        level,
        source: source.to_string(),
        text: text.to_string(),
    };
    l.next_seq += 1;
    let line = entry.render();
    if source != "kernel" && level <= l.console && l.paused_at.is_none() {
        console_write(&line);
    }
    l.bytes += entry.text.len() + entry.source.len();
    l.ring.push_back(entry);
    trim(l);
    let event = write_file(&mut l.file, &line, FILE_MAX, std::time::Instant::now());
    let path = l.file.as_ref().map(|f| f.path.display().to_string());
    let path = path.unwrap_or_default();
    let note = match event {
        FileEvent::Stopped(e) => {
            format!("log file {path} stopped: {e}; logging goes on in memory")
        }
        FileEvent::Resumed(n) => format!("log file {path} resumed ({n} lines not written)"),
        FileEvent::Written | FileEvent::Skipped => return,
    };
    push_locked(l, Level::Warn, "cairn", &note, time);
}

/// Drops the oldest lines past `[log] lines` or [`RING_BYTES`].
fn trim(l: &mut Logger) {
    while l.ring.len() > l.cap || l.bytes > RING_BYTES && l.ring.len() > 1 {
        match l.ring.pop_front() {
            Some(e) => l.bytes = l.bytes.saturating_sub(e.text.len() + e.source.len()),
            None => break,
        }
    }
}

/// Appends `line` to the log file, then rotates it once it is larger than
/// `max` bytes: renamed to `cairn.log.1` (replacing the previous one) and
/// a new, empty `cairn.log` opened. A failed write (a full disk) stops the
/// file log; it is tried again every [`FILE_RETRY`] from `now` on.
fn write_file(
    file: &mut Option<FileLog>,
    line: &str,
    max: u64,
    now: std::time::Instant,
) -> FileEvent {
    let Some(f) = file else {
        return FileEvent::Skipped;
    };
    if let Some(st) = &mut f.stopped {
        if now < st.retry_at {
            st.missed += 1;
            return FileEvent::Skipped;
        }
    }
    // After a failure the file may end in part of a line: start afresh.
    let text = match f.stopped {
        Some(_) => format!("\n{line}"),
        None => line.to_string(),
    };
    let event = match f.file.write_all(text.as_bytes()) {
        Ok(()) => {
            f.size += text.len() as u64;
            match f.stopped.take() {
                Some(st) => FileEvent::Resumed(st.missed),
                None => FileEvent::Written,
            }
        }
        Err(e) => match &mut f.stopped {
            Some(st) => {
                st.missed += 1;
                st.retry_at = now + FILE_RETRY;
                return FileEvent::Skipped;
            }
            None => {
                f.stopped = Some(Stopped {
                    retry_at: now + FILE_RETRY,
                    missed: 1,
                });
                return FileEvent::Stopped(e.to_string());
            }
        },
    };
    if f.size > max {
        let old = f.path.with_extension("log.1");
        let _ = std::fs::rename(&f.path, &old);
        if let Ok(new) = open_append(&f.path) {
            f.file = new;
            f.size = 0;
        }
    }
    event
}

/// The lines after sequence number `after` (oldest first), optionally only
/// from `source`.
pub fn since(after: u64, source: Option<&str>) -> Vec<Entry> {
    lock()
        .ring
        .iter()
        .filter(|e| e.seq > after && source.is_none_or(|s| e.source == s))
        .cloned()
        .collect()
}

/// The sequence number of the newest line (0 when empty).
pub fn last_seq() -> u64 {
    lock().next_seq - 1
}

/// Stops mirroring to the console (the status screen owns it).
pub fn pause_console() {
    let mut l = lock();
    if l.paused_at.is_none() {
        l.paused_at = Some(l.next_seq - 1);
    }
}

/// Mirrors to the console again, first printing the lines held meanwhile.
pub fn resume_console() {
    let mut l = lock();
    if let Some(at) = l.paused_at.take() {
        let console = l.console;
        let held: String = l
            .ring
            .iter()
            .filter(|e| e.seq > at && e.source != "kernel" && e.level <= console)
            .map(Entry::render)
            .collect();
        console_write(&held);
    }
}

/// Whether the console is paused (status screen shown).
pub fn console_paused() -> bool {
    lock().paused_at.is_some()
}

/// Used by the panic hook: never blocks on the log lock (the panic may
/// have happened while it was held).
pub fn panic_line(text: &str) {
    match LOG.try_lock() {
        Ok(g) => {
            drop(g);
            record(Level::Error, "cairn", text, None);
        }
        Err(_) => write_line(&format!("cairn: {text}")),
    }
}

/// Logs `cairn: MESSAGE` at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::record(
            cairn_manifest::Level::Info, "cairn", &format!($($arg)*), None)
    };
}

/// Logs `cairn: MESSAGE` at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log::record(
            cairn_manifest::Level::Warn, "cairn", &format!($($arg)*), None)
    };
}

/// Logs `cairn: MESSAGE` at debug level, only when debug lines are kept
/// (`cairn.debug` or `[log] console = "debug"`).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::record(
                cairn_manifest::Level::Debug, "cairn", &format!($($arg)*), None)
        }
    };
}

/// Splits a byte stream into lines: bytes go in, complete lines come out;
/// a line longer than [`LINE_MAX`] is cut.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Adds `data`; returns the complete lines (without `\n`, `\r`
    /// trimmed, invalid UTF-8 replaced).
    pub fn feed(&mut self, data: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        // One pass, one drain at the end: a read full of short lines
        // costs what it reads.
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + i;
            if end - start > LINE_MAX {
                // Pieces of a long line that ends here.
                while end - start > LINE_MAX {
                    out.push(clean(&self.buf[start..start + LINE_MAX]) + CUT_MARK);
                    start += LINE_MAX;
                }
            }
            out.push(clean(&self.buf[start..end]));
            start = end + 1;
        }
        while self.buf.len() - start >= LINE_MAX {
            out.push(clean(&self.buf[start..start + LINE_MAX]) + CUT_MARK);
            start += LINE_MAX;
        }
        self.buf.drain(..start);
        out
    }

    /// What is left without a newline (at EOF).
    pub fn rest(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            None
        } else {
            let line = std::mem::take(&mut self.buf);
            Some(clean(&line))
        }
    }
}

fn clean(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.trim_end_matches('\r').to_string()
}

/// Parses one `/dev/kmsg` record (`PRI,SEQ,USEC,FLAGS;TEXT`) into level,
/// time and text.
pub fn parse_kmsg(record: &[u8]) -> Option<(Level, Duration, String)> {
    let text = std::str::from_utf8(record).ok()?;
    let (head, msg) = text.split_once(';')?;
    let mut f = head.split(',');
    let pri: u32 = f.next()?.parse().ok()?;
    let _seq = f.next()?;
    let usec: u64 = f.next()?.parse().ok()?;
    let level = match pri & 7 {
        0..=3 => Level::Error,
        4 => Level::Warn,
        5 | 6 => Level::Info,
        _ => Level::Debug,
    };
    // Continuation lines (" KEY=value") follow the first newline.
    let msg = msg.split('\n').next().unwrap_or("");
    Some((level, Duration::from_micros(usec), msg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_clock_offset() {
        let ms = Duration::from_millis;
        // Stamped at 1.030 s by the kernel, written between 1.000 and 1.004 s.
        assert_eq!(ahead_ns(ms(1030), ms(1000), ms(1004)), 28_000_000);
        assert_eq!(ahead_ns(ms(990), ms(1000), ms(1000)), -10_000_000);
        assert_eq!(shift(ms(1000), 28_000_000), ms(1028));
        assert_eq!(shift(ms(1000), -10_000_000), ms(990));
        assert_eq!(shift(ms(5), -10_000_000), Duration::ZERO);
        // Without use_kernel_clock (tests, test mode) nothing is written.
        assert_eq!(calibrate_kernel_clock(), None);
    }

    #[test]
    fn line_matches_kernel_format() {
        let line = format_line(Duration::new(1, 234_567_891), "cairn: init started");
        assert_eq!(line, "[    1.234567] cairn: init started\n");
    }

    #[test]
    fn zero_and_large_times() {
        assert_eq!(format_line(Duration::ZERO, "x"), "[    0.000000] x\n");
        assert_eq!(
            format_line(Duration::new(123_456, 5_000), "x"),
            "[123456.000005] x\n"
        );
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime();
        let b = boottime();
        assert!(b >= a);
        assert!(a > Duration::ZERO);
    }

    #[test]
    fn line_buffer_splits_and_keeps_partial_lines() {
        let mut b = LineBuf::default();
        assert_eq!(b.feed(b"one\ntw"), ["one"]);
        assert_eq!(b.feed(b"o\r\nthree\n"), ["two", "three"]);
        assert!(b.feed(b"tail").is_empty());
        assert_eq!(b.rest().as_deref(), Some("tail"));
        assert_eq!(b.rest(), None);
        let long = vec![b'x'; LINE_MAX + 10];
        let out = b.feed(&long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), LINE_MAX + CUT_MARK.len());
        assert!(out[0].ends_with(" [cut]"));
        assert_eq!(b.feed(&[0xff, b'\n']), ["xxxxxxxxxx\u{fffd}"]);
    }

    #[test]
    fn kmsg_records() {
        let (lvl, t, msg) =
            parse_kmsg(b"6,339,5140900,-;NET: Registered protocol\n SUBSYSTEM=net").unwrap();
        assert_eq!(lvl, Level::Info);
        assert_eq!(t, Duration::from_micros(5_140_900));
        assert_eq!(msg, "NET: Registered protocol");
        assert_eq!(parse_kmsg(b"3,1,2,-;oops").unwrap().0, Level::Error);
        assert!(parse_kmsg(b"garbage").is_none());
        assert!(parse_kmsg(b"x,1,2;y").is_none());
    }

    #[test]
    fn console_debug_from_the_config_keeps_debug_lines() {
        let _settings = test_settings();
        let start = last_seq();
        configure(cairn_manifest::supervision::DEFAULT_LOG_LINES, Level::Debug);
        assert!(debug_enabled());
        assert_eq!(lock().console, Level::Debug);
        record(Level::Debug, "debugtest", "kept", None);
        configure(cairn_manifest::supervision::DEFAULT_LOG_LINES, Level::Info);
        assert!(!debug_enabled());
        record(Level::Debug, "debugtest", "dropped", None);
        let got: Vec<String> = since(start, Some("debugtest"))
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(got, ["kept"]);
        // `cairn.debug` shows debug lines whatever the configured level.
        assert_eq!(console_level(Level::Warn, true), Level::Debug);
        assert_eq!(console_level(Level::Warn, false), Level::Warn);
        assert_eq!(console_level(Level::Debug, false), Level::Debug);
        assert!(keeps(Level::Debug, true));
        assert!(!keeps(Level::Debug, false));
        assert!(keeps(Level::Info, false));
    }

    #[test]
    fn log_file_is_rotated_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.log");
        let rotated = dir.path().join("cairn.log.1");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap()
        };
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let log = |size: u64| FileLog {
            path: path.clone(),
            file: open(),
            size,
            stopped: None,
        };
        let now = std::time::Instant::now();
        let write_file = |f: &mut Option<FileLog>, line: &str, max: u64| {
            assert_eq!(write_file(f, line, max, now), FileEvent::Written);
        };
        let mut file = Some(log(0));
        let line = |c: char| format!("{}\n", c.to_string().repeat(99));
        // 100-byte lines, limit 250: the third line goes past it.
        write_file(&mut file, &line('a'), 250);
        write_file(&mut file, &line('b'), 250);
        assert_eq!(read(&path), line('a') + &line('b'));
        assert!(!rotated.exists());
        write_file(&mut file, &line('c'), 250);
        assert_eq!(read(&rotated), line('a') + &line('b') + &line('c'));
        assert_eq!(read(&path), "");
        assert_eq!(file.as_ref().map(|f| f.size), Some(0));
        // The next lines go to the new file; the next rotation replaces
        // cairn.log.1.
        for c in ['d', 'e', 'f'] {
            write_file(&mut file, &line(c), 250);
        }
        assert_eq!(read(&rotated), line('d') + &line('e') + &line('f'));
        write_file(&mut file, &line('g'), 250);
        assert_eq!(read(&path), line('g'));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A file that already holds bytes (set_log_dir after a reboot
        // counts them): one more line takes it past the limit.
        let mut file = Some(log(240));
        write_file(&mut file, &line('h'), 250);
        assert_eq!(read(&rotated), line('g') + &line('h'));
    }

    #[test]
    fn a_long_line_ending_in_one_read_is_cut_into_marked_pieces() {
        let mut b = LineBuf::default();
        let mut data = vec![b'y'; 2 * LINE_MAX + 5];
        data.extend_from_slice(b"\nnext\n");
        let out = b.feed(&data);
        assert_eq!(out.len(), 4);
        assert!(out[0].ends_with(CUT_MARK) && out[1].ends_with(CUT_MARK));
        assert_eq!(out[2], "yyyyy");
        assert_eq!(out[3], "next");
    }

    #[test]
    fn a_full_disk_stops_the_file_log_and_a_retry_resumes_it() {
        let dir = tempfile::tempdir().unwrap();
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut file = Some(FileLog {
            path: dir.path().join("cairn.log"),
            file: full,
            size: 0,
            stopped: None,
        });
        let t0 = std::time::Instant::now();
        let e = write_file(&mut file, "a\n", FILE_MAX, t0);
        assert!(
            matches!(e, FileEvent::Stopped(ref m) if m.contains("No space left")),
            "{e:?}"
        );
        // Not retried before FILE_RETRY: counted.
        assert_eq!(
            write_file(&mut file, "b\n", FILE_MAX, t0),
            FileEvent::Skipped
        );
        // Still full at the retry: counted, retried later.
        let t1 = t0 + FILE_RETRY;
        assert_eq!(
            write_file(&mut file, "c\n", FILE_MAX, t1),
            FileEvent::Skipped
        );
        // Room again (a file that takes writes): resumed, with the count.
        let ok = dir.path().join("cairn.log");
        file.as_mut().unwrap().file = std::fs::File::create(&ok).unwrap();
        let t2 = t1 + FILE_RETRY;
        assert_eq!(
            write_file(&mut file, "d\n", FILE_MAX, t2),
            FileEvent::Resumed(3)
        );
        assert_eq!(std::fs::read_to_string(&ok).unwrap(), "\nd\n");
        assert_eq!(
            write_file(&mut file, "e\n", FILE_MAX, t2),
            FileEvent::Written
        );
    }

    #[test]
    fn a_symlink_where_the_log_goes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("cairn.log")).unwrap();
        assert!(open_append(&dir.path().join("cairn.log")).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn ring_is_bounded_in_bytes() {
        let _settings = test_settings();
        configure(1_000_000, Level::Off);
        let big = "z".repeat(LINE_MAX);
        for _ in 0..(2 * RING_BYTES / LINE_MAX) {
            record(Level::Info, "bytestest", &big, None);
        }
        let l = lock();
        assert!(l.bytes <= RING_BYTES, "{}", l.bytes);
        let counted: usize = l.ring.iter().map(|e| e.text.len() + e.source.len()).sum();
        assert_eq!(counted, l.bytes);
        drop(l);
        configure(cairn_manifest::supervision::DEFAULT_LOG_LINES, Level::Info);
    }

    #[test]
    fn ring_is_bounded_and_filterable() {
        // The logger is global: use sources no other test uses.
        let _settings = test_settings();
        configure(3, Level::Off);
        let start = last_seq();
        for i in 0..5 {
            record(Level::Info, "ringtest", &format!("l{i}"), None);
        }
        let got: Vec<String> = since(start, Some("ringtest"))
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(got, ["l2", "l3", "l4"]);
        configure(cairn_manifest::supervision::DEFAULT_LOG_LINES, Level::Info);
    }
}

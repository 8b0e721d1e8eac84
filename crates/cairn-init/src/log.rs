//! Timestamped console lines: the boot timeline.
//!
//! Every line looks like the kernel's own log, so the two read as one
//! timeline on the serial console:
//!
//! ```text
//! [    1.234567] cairn: init started
//! ```
//!
//! Time comes from `CLOCK_BOOTTIME` (time since the kernel started, including
//! suspend), the same origin as the kernel's printk timestamps. Lines go to
//! standard error, which PID 1 points at `/dev/console`, each in one
//! `write(2)` so lines from different sources do not tear.
//!
//! Debug lines (see [`debug!`](crate::debug)) are only printed when the
//! `cairn.debug` flag is on the kernel command line.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns debug lines on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug lines are printed.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Time since boot (`CLOCK_BOOTTIME`).
pub fn boottime() -> Duration {
    let ts = clock_gettime(ClockId::Boottime);
    // Both fields are non-negative for CLOCK_BOOTTIME; clamp defensively.
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Formats one console line: `[SSSSS.UUUUUU] text\n`, seconds right-aligned
/// in five columns and microseconds zero-padded to six, like printk.
pub fn format_line(since_boot: Duration, text: &str) -> String {
    format!(
        "[{:5}.{:06}] {}\n",
        since_boot.as_secs(),
        since_boot.subsec_micros(),
        text
    )
}

static SINK: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Also sends every line to `sink` (the disk log, see
/// [`crate::disk::log`]). Only the first call takes effect.
pub fn set_sink(sink: fn(&str)) {
    let _ = SINK.set(sink);
}

/// Writes `text` as one timestamped line. Errors are ignored: there is
/// nowhere else to report them.
pub fn write_line(text: &str) {
    let line = format_line(boottime(), text);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(sink) = SINK.get() {
        sink(&line);
    }
}

/// Logs `cairn: MESSAGE`, always.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::write_line(&format!("cairn: {}", format_args!($($arg)*)))
    };
}

/// Logs `cairn: MESSAGE` only when `cairn.debug` is on.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::write_line(&format!("cairn: {}", format_args!($($arg)*)))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

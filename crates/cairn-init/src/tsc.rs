//! Time since power-on, from the CPU's time-stamp counter (on arm64 the
//! generic timer's virtual count, which QEMU's `virt` starts at reset).
//!
//! The kernel log's clock starts only once the kernel has decompressed
//! itself and set up its clocks; the TSC starts at reset. Reading it at
//! init start and again at ready gives its rate against the kernel log's
//! clock, and its value at ready divided by that rate is the time since
//! power-on: firmware, the kernel's decompression and its early setup
//! included. Under QEMU's `-icount` the TSC counts guest time from reset,
//! so the figure is as deterministic as the rest of the timeline.

#![forbid(unsafe_code)]

use crate::sys::time::tsc as read;

use std::sync::Mutex;
use std::time::Duration;

/// The TSC and the kernel log's clock at init start.
static START: Mutex<Option<(u64, Duration)>> = Mutex::new(None);

/// Remembers the TSC at init start, against the kernel log's clock `now`.
pub fn mark_start(now: Duration) {
    if let Some(tsc) = read() {
        *START.lock().unwrap_or_else(|e| e.into_inner()) = Some((tsc, now));
    }
}

/// Time since power-on (see the module doc), `now` being the kernel log's
/// clock; `None` without a TSC or a start mark.
pub fn since_power_on(now: Duration) -> Option<Duration> {
    let start = (*START.lock().unwrap_or_else(|e| e.into_inner()))?;
    estimate(start, (read()?, now))
}

/// The TSC's value at `now` in time: its ticks divided by its rate between
/// `start` and `now` (each a TSC value and a kernel-clock time). `None`
/// when the counter or the clock did not move forward.
pub fn estimate(start: (u64, Duration), now: (u64, Duration)) -> Option<Duration> {
    let ticks = now.0.checked_sub(start.0).filter(|&t| t > 0)?;
    let elapsed = now.1.checked_sub(start.1).filter(|d| !d.is_zero())?;
    let ns = now.0 as f64 * elapsed.as_nanos() as f64 / ticks as f64;
    ns.is_finite().then(|| Duration::from_nanos(ns as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_ticks_by_the_measured_rate() {
        // A 2 GHz counter: 2 ticks per ns; 1.0 s of ticks at init start.
        let start = (2_000_000_000, Duration::from_millis(600));
        let now = (2_020_000_000, Duration::from_millis(610));
        assert_eq!(estimate(start, now), Some(Duration::from_millis(1010)));
        // Under -icount, one tick per ns.
        let t = estimate(
            (400_000_000, Duration::from_millis(300)),
            (405_000_000, Duration::from_millis(305)),
        );
        assert_eq!(t, Some(Duration::from_millis(405)));
    }

    #[test]
    fn refuses_a_counter_or_clock_that_stood_still() {
        let s = (10, Duration::from_millis(1));
        assert_eq!(estimate(s, (10, Duration::from_millis(2))), None);
        assert_eq!(estimate(s, (5, Duration::from_millis(2))), None);
        assert_eq!(estimate(s, (20, Duration::from_millis(1))), None);
    }
}

//! `adjtime(3)` (rustix offers `clock_adjtime`/`adjtimex`, but not libc's
//! single-shot slew with the same semantics) and the CPU's time-stamp
//! counter.

use std::io;

use super::check;

/// Slews the clock gradually by `delta`; the old pending delta is dropped.
pub fn adjtime(delta: &libc::timeval) -> io::Result<()> {
    // SAFETY: `delta` is a valid timeval; a null pointer says the old
    // delta is not wanted.
    check(unsafe { libc::adjtime(delta, std::ptr::null_mut()) })
}

/// The CPU's time-stamp counter, where it has one (x86_64).
pub fn tsc() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it touches no memory and every
        // x86_64 CPU has it.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

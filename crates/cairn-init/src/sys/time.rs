//! `adjtime(3)`: rustix offers `clock_adjtime`/`adjtimex`, but not libc's
//! single-shot slew with the same semantics.

use std::io;

use super::check;

/// Slews the clock gradually by `delta`; the old pending delta is dropped.
pub fn adjtime(delta: &libc::timeval) -> io::Result<()> {
    // SAFETY: `delta` is a valid timeval; a null pointer says the old
    // delta is not wanted.
    check(unsafe { libc::adjtime(delta, std::ptr::null_mut()) })
}

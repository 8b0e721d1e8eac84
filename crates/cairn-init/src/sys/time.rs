//! `adjtime(3)` (rustix offers `clock_adjtime`/`adjtimex`, but not libc's
//! single-shot slew with the same semantics) and the CPU's counter from
//! reset.

use std::io;

use super::check;

/// Slews the clock gradually by `delta`; the old pending delta is dropped.
pub fn adjtime(delta: &libc::timeval) -> io::Result<()> {
    // SAFETY: `delta` is a valid timeval; a null pointer says the old
    // delta is not wanted.
    check(unsafe { libc::adjtime(delta, std::ptr::null_mut()) })
}

/// The CPU's counter that runs from reset: the time-stamp counter on
/// x86_64, the generic timer's virtual count (`CNTVCT_EL0`, which Linux
/// lets user space read) on arm64; `None` elsewhere.
pub fn tsc() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it touches no memory and every
        // x86_64 CPU has it.
        Some(unsafe { core::arch::x86_64::_rdtsc() })
    }
    #[cfg(target_arch = "aarch64")]
    {
        let count: u64;
        // SAFETY: MRS of CNTVCT_EL0 reads a system register into `count`;
        // it touches no memory, and Linux enables EL0 access to it
        // (CNTKCTL_EL1.EL0VCTEN) on every arm64 system.
        unsafe {
            core::arch::asm!("mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack));
        }
        Some(count)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

//! The watchdog's timeout (`WDIOC_SETTIMEOUT`): rustix has no wrapper.

use std::os::fd::{AsFd, AsRawFd};

/// `_IOWR('W', 6, int)`.
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;

/// Sets the watchdog's timeout to `secs`; returns what the driver took
/// (drivers round to what their hardware can count).
pub fn set_timeout(fd: impl AsFd, secs: u32) -> std::io::Result<u32> {
    let mut v: libc::c_int = secs.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: the fd is open (borrowed for the call); WDIOC_SETTIMEOUT
    // reads and writes one int, and `v` is a live, aligned c_int.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), WDIOC_SETTIMEOUT as _, &mut v) };
    super::check(rc)?;
    Ok(v.max(0) as u32)
}

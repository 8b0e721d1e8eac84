//! The signal mask, the signalfd and `kill(-1, …)`: libc calls that rustix
//! has no safe wrapper for (its `sigprocmask` is an unsafe `runtime`
//! function and it has no signalfd).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};

use super::check;

/// A set of signals (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    /// The set holding exactly `signals`.
    pub fn of(signals: &[libc::c_int]) -> io::Result<SigSet> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset
        // then only touches that initialised set, and assume_init runs only
        // once both succeeded.
        unsafe {
            if libc::sigemptyset(set.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for &sig in signals {
                if libc::sigaddset(set.as_mut_ptr(), sig) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(SigSet(set.assume_init()))
        }
    }
}

/// `sigprocmask(SIG_BLOCK, set)`: adds `set` to the blocked signals.
pub fn block(set: &SigSet) -> io::Result<()> {
    // SAFETY: `set.0` is an initialised sigset; the old mask is not wanted,
    // so a null pointer is passed for it.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set.0, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new non-blocking, close-on-exec signalfd for `set`.
pub fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: -1 asks for a new fd; `set.0` is an initialised sigset.
    let fd = unsafe { libc::signalfd(-1, &set.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Empties the signal mask. Async-signal-safe and allocation-free: it is
/// called in a child between `fork` and `exec` (services must not inherit
/// PID 1's blocked signals).
pub fn unblock_all() -> io::Result<()> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises `set` (it cannot fail on a valid
    // pointer) before sigprocmask reads it; the old mask is not wanted.
    let rc = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `kill(-1, sig)`: every process this one may signal except itself (as
/// PID 1: every process but kernel threads). rustix's `Pid` cannot be -1.
pub fn kill_all(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    check(unsafe { libc::kill(-1, sig) })
}

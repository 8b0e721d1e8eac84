//! Signals as events: the signals PID 1 acts on are blocked and read from a
//! `signalfd`, so the main loop is a plain `poll(2)` with no handlers and no
//! races.
//!
//! | signal  | meaning for cairn-init                                   |
//! |---------|----------------------------------------------------------|
//! | SIGCHLD | a child ended: reap every zombie                         |
//! | SIGTERM | power off                                                |
//! | SIGUSR1 | power off                                                |
//! | SIGPWR  | power off (sent by container managers and UPS tools)     |
//! | SIGINT  | reboot (Ctrl-Alt-Del once CAD is off, see `reboot(2)`)   |
//! | SIGUSR2 | reboot                                                   |

#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;

use rustix::io::Errno;

use crate::sys;

/// The signals [`SignalFd`] takes over.
pub const HANDLED: [libc::c_int; 7] = [
    libc::SIGCHLD,
    // Taken only to be ignored: a hangup must not end the init when it is
    // not PID 1 (test mode, a container), where the default would kill it.
    libc::SIGHUP,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPWR,
];

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot block signals: {0}")]
    Block(std::io::Error),
    #[error("cannot create signalfd: {0}")]
    Create(std::io::Error),
    #[error("reading the signalfd failed: {0}")]
    Read(Errno),
}

/// What a signal asks PID 1 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    Reap,
    Poweroff,
    Reboot,
    Ignore,
}

/// Maps a signal number to its action (see the module docs).
pub fn action(signo: libc::c_int) -> SignalAction {
    match signo {
        libc::SIGCHLD => SignalAction::Reap,
        libc::SIGTERM | libc::SIGUSR1 | libc::SIGPWR => SignalAction::Poweroff,
        libc::SIGINT | libc::SIGUSR2 => SignalAction::Reboot,
        _ => SignalAction::Ignore,
    }
}

/// A non-blocking signalfd for [`HANDLED`], which are blocked for the
/// process while it exists (and stay blocked: PID 1 never gives them back).
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks [`HANDLED`] and opens the signalfd. Call before any child is
    /// started so no SIGCHLD is lost (pending signals are delivered through
    /// the fd once it exists).
    pub fn new() -> Result<Self, SignalError> {
        let set = sys::signal::SigSet::of(&HANDLED).map_err(SignalError::Block)?;
        sys::signal::block(&set).map_err(SignalError::Block)?;
        let fd = sys::signal::signalfd(&set).map_err(SignalError::Create)?;
        Ok(SignalFd { fd })
    }

    /// The fd to watch for readability.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Reads every pending signal without blocking.
    pub fn drain(&self) -> Result<Vec<libc::c_int>, SignalError> {
        // struct signalfd_siginfo is 128 bytes and starts with u32 ssi_signo.
        const INFO: usize = 128;
        let mut buf = [0u8; INFO * 16];
        let mut out = Vec::new();
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for rec in buf[..n].chunks_exact(INFO) {
                        let signo = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
                        out.push(signo as libc::c_int);
                    }
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(SignalError::Read(e)),
            }
        }
        Ok(out)
    }
}

/// Short name of a signal for the log (`SIGTERM`), or its number.
pub fn name(signo: libc::c_int) -> String {
    let known = match signo {
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPWR => "SIGPWR",
        libc::SIGKILL => "SIGKILL",
        libc::SIGHUP => "SIGHUP",
        _ => return format!("signal {signo}"),
    };
    known.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        assert_eq!(action(libc::SIGCHLD), SignalAction::Reap);
        assert_eq!(action(libc::SIGTERM), SignalAction::Poweroff);
        assert_eq!(action(libc::SIGUSR1), SignalAction::Poweroff);
        assert_eq!(action(libc::SIGPWR), SignalAction::Poweroff);
        assert_eq!(action(libc::SIGINT), SignalAction::Reboot);
        assert_eq!(action(libc::SIGUSR2), SignalAction::Reboot);
        assert_eq!(action(libc::SIGHUP), SignalAction::Ignore);
    }

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(64), "signal 64");
    }
}

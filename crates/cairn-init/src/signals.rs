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

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::time::Timespec;

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
    #[error("waiting for signals failed: {0}")]
    Poll(Errno),
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

fn handled_set() -> Result<libc::sigset_t, std::io::Error> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given; sigaddset then
    // only touches that initialised set.
    unsafe {
        if libc::sigemptyset(set.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for sig in HANDLED {
            if libc::sigaddset(set.as_mut_ptr(), sig) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(set.assume_init())
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
        let set = handled_set().map_err(SignalError::Block)?;
        // SAFETY: `set` is an initialised sigset; the old mask is not wanted.
        let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(SignalError::Block(std::io::Error::last_os_error()));
        }
        // SAFETY: -1 asks for a new fd; `set` is initialised.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(SignalError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: signalfd returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd })
    }

    /// Waits until a signal arrives, one of the extra fds (see
    /// [`set_extra`]) is readable, or `timeout` (or the extra deadline)
    /// passes (`None`: forever), then returns the signal numbers read
    /// (possibly none).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Vec<libc::c_int>, SignalError> {
        let timeout = with_extra_deadline(timeout);
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        let extra = extra_fds();
        let mut fds = vec![PollFd::new(&self.fd, PollFlags::IN)];
        fds.extend(extra.iter().map(|f| PollFd::new(f, PollFlags::IN)));
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(SignalError::Poll(e)),
        }
        self.drain()
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

/// How the main loop waits for events: a [`SignalFd`], or, if that could
/// not be set up, a degraded mode that wakes every second and reaps.
pub enum Waiter {
    Fd(SignalFd),
    Polling,
}

impl Waiter {
    /// Sets up the signalfd, falling back to polling (logged).
    pub fn setup() -> Self {
        match SignalFd::new() {
            Ok(fd) => Waiter::Fd(fd),
            Err(e) => {
                crate::info!("{e}; falling back to reaping every second");
                Waiter::Polling
            }
        }
    }

    /// The signalfd to poll, if there is one.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Waiter::Fd(fd) => Some(fd.fd.as_fd()),
            Waiter::Polling => None,
        }
    }

    /// Waits for signals or `timeout`; see [`SignalFd::wait`]. In polling
    /// mode it sleeps at most a second and reports a SIGCHLD.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Vec<libc::c_int>, SignalError> {
        match self {
            Waiter::Fd(fd) => fd.wait(timeout),
            Waiter::Polling => {
                let second = Duration::from_secs(1);
                let timeout = with_extra_deadline(timeout);
                std::thread::sleep(timeout.map_or(second, |t| t.min(second)));
                Ok(vec![libc::SIGCHLD])
            }
        }
    }
}

/// More things for the main loop to wait on besides signals: the network
/// manager's sockets and its next timer. PID 1 is single-threaded, so this
/// lives in a thread-local that [`Waiter::wait`] reads.
#[derive(Default)]
struct Extra {
    fds: Vec<OwnedFd>,
    deadline: Option<Instant>,
}

thread_local! {
    static EXTRA: RefCell<Extra> = RefCell::new(Extra::default());
}

/// Makes [`Waiter::wait`] also return when one of `fds` is readable or
/// `deadline` passes. Replaces what was set before.
pub fn set_extra(fds: Vec<OwnedFd>, deadline: Option<Instant>) {
    EXTRA.with(|e| *e.borrow_mut() = Extra { fds, deadline });
}

/// Stops waiting on extra fds and deadlines (before shutdown).
pub fn clear_extra() {
    set_extra(Vec::new(), None);
}

/// Duplicates of the extra fds, for a caller that polls by itself.
pub fn extra_fds() -> Vec<OwnedFd> {
    EXTRA.with(|e| {
        e.borrow()
            .fds
            .iter()
            .filter_map(|f| f.try_clone().ok())
            .collect()
    })
}

/// `timeout` shortened to the extra deadline, if that comes first.
pub fn with_extra_deadline(timeout: Option<Duration>) -> Option<Duration> {
    let extra = EXTRA
        .with(|e| e.borrow().deadline)
        .map(|d| d.saturating_duration_since(Instant::now()));
    match (timeout, extra) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Empties the signal mask. Meant for a child between `fork` and `exec`
/// (it is async-signal-safe): services must not inherit PID 1's blocked
/// signals.
pub fn unblock_all() -> std::io::Result<()> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises `set` before sigprocmask reads it.
    let rc = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
    fn extra_deadline_shortens_the_wait() {
        set_extra(Vec::new(), Some(Instant::now() + Duration::from_millis(50)));
        let t = with_extra_deadline(Some(Duration::from_secs(10))).unwrap();
        assert!(t <= Duration::from_millis(50));
        let t = with_extra_deadline(None).unwrap();
        assert!(t <= Duration::from_millis(50));
        clear_extra();
        assert_eq!(with_extra_deadline(None), None);
    }

    #[test]
    fn extra_fd_wakes_the_wait() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"x").unwrap();
        set_extra(vec![r], None);
        let sfd = SignalFd::new().unwrap();
        let start = Instant::now();
        sfd.wait(Some(Duration::from_secs(5))).unwrap();
        assert!(start.elapsed() < Duration::from_secs(4));
        clear_extra();
    }

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(64), "signal 64");
    }
}

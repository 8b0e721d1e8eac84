//! What a child does between `fork` and `exec`.
//!
//! `Command::pre_exec` is unsafe because its closure runs in the forked
//! child, where only async-signal-safe calls are allowed. A safe wrapper
//! taking any closure could not keep that promise, so the only closure of
//! the init lives here: [`before_exec`] takes a [`ChildSetup`], plain data
//! prepared before `fork`, and the child only makes system calls with it
//! (rustix's where they exist, the two below where they do not). Nothing
//! in the child allocates, locks or touches shared state.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::fs::{Mode, OFlags};
use rustix::process::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};

use super::{check, signal};

/// The steps a child takes before `exec`, in this order: empty the signal
/// mask, start a new session, then each step that is set.
#[derive(Default)]
pub struct ChildSetup {
    /// Make fd 0 (a tty) the session's controlling terminal, taking it
    /// from another session if need be (`TIOCSCTTY` with 1).
    pub controlling_tty: bool,
    /// An open `cgroup.procs` to move the child into (it writes "0").
    pub cgroup_procs: Option<OwnedFd>,
    /// `setrlimit(resource, limit)` with soft = hard; `None` is unlimited.
    pub limits: Vec<(u32, Option<u64>)>,
    /// The file mode creation mask.
    pub umask: Option<u32>,
    /// The capabilities to keep, as a bit mask: the others leave the
    /// bounding set, and after the switch of user these are the
    /// effective, permitted, inheritable and ambient sets.
    pub keep_caps: Option<u64>,
    /// The user the child runs as (also decides `PR_SET_KEEPCAPS`).
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<Gid>,
    /// Whether to call `setgroups`, `setgid` and `setuid` at all.
    pub switch_user: bool,
    /// `PR_SET_NO_NEW_PRIVS`: a setuid binary or file capabilities give the
    /// program nothing.
    pub no_new_privs: bool,
    /// Every fd from 3 up is closed at exec (`close_range` with
    /// `CLOSE_RANGE_CLOEXEC`): the program gets exactly fds 0, 1 and 2,
    /// whatever the init had open without close-on-exec.
    pub only_stdio: bool,
    /// Set `oom_score_adj` back to 0: PID 1's -1000 is inherited, and a
    /// service must stay a candidate for the OOM killer.
    pub oom_killable: bool,
    /// SIGKILL when the parent ends (`PR_SET_PDEATHSIG`): a container's
    /// first process does not outlive the helper that started it.
    pub die_with_parent: bool,
    /// Mount a fresh `/proc` (the child is the first process of a new PID
    /// namespace, in a mount namespace and root of its own).
    pub mount_proc: bool,
}

impl ChildSetup {
    /// Runs in the child between `fork` and `exec`: system calls only.
    fn apply(&self) -> io::Result<()> {
        signal::unblock_all()?;
        if self.only_stdio {
            // Marked, not closed: std's own exec-error pipe must live
            // until exec. Kernels before 5.11 lack the flag; the init's
            // own fds are close-on-exec anyway.
            let _ = cloexec_from(3);
        }
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true)?;
        }
        if self.oom_killable {
            // Raising the value needs no privilege. A static path: no
            // allocation after fork.
            let fd = rustix::fs::open(
                c"/proc/self/oom_score_adj",
                OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::io::write(&fd, b"0")?;
        }
        if self.die_with_parent {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        }
        if self.mount_proc {
            use rustix::mount::MountFlags;
            rustix::mount::mount(
                c"proc",
                c"/proc",
                c"proc",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                None,
            )?;
        }
        rustix::process::setsid()?;
        if self.controlling_tty {
            set_controlling_tty(rustix::stdio::stdin())?;
        }
        if let Some(fd) = &self.cgroup_procs {
            // "0" moves the writing process itself.
            rustix::io::write(fd, b"0")?;
        }
        for &(resource, limit) in &self.limits {
            set_rlimit(resource, limit)?;
        }
        if let Some(m) = self.umask {
            rustix::process::umask(Mode::from_bits_retain(m));
        }
        if let Some(mask) = self.keep_caps {
            for cap in 0..64 {
                if mask & (1 << cap) == 0
                    && rustix::thread::remove_capability_from_bounding_set(
                        CapabilitySet::from_bits_retain(1 << cap),
                    )
                    .is_err()
                {
                    // EINVAL: past the last capability the kernel knows.
                    break;
                }
            }
            if self.uid != 0 {
                rustix::thread::set_keep_capabilities(true)?;
            }
        }
        if self.switch_user {
            // The thread-level calls are the process-wide ones here: the
            // forked child has a single thread.
            rustix::thread::set_thread_groups(&self.groups)?;
            rustix::thread::set_thread_gid(Gid::from_raw(self.gid))?;
            rustix::thread::set_thread_uid(Uid::from_raw(self.uid))?;
        }
        if let Some(mask) = self.keep_caps {
            let set = CapabilitySet::from_bits_retain(mask);
            rustix::thread::set_capabilities(
                None,
                CapabilitySets {
                    effective: set,
                    permitted: set,
                    inheritable: set,
                },
            )?;
            for cap in 0..64 {
                if mask & (1 << cap) != 0 {
                    rustix::thread::configure_capability_in_ambient_set(
                        CapabilitySet::from_bits_retain(1 << cap),
                        true,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Has `cmd` carry out `setup` in the child between `fork` and `exec`.
pub fn before_exec(cmd: &mut Command, setup: ChildSetup) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe operations are sound. `ChildSetup::apply`
    // only makes system calls (sigemptyset/sigprocmask, setsid, ioctl,
    // write, setrlimit, umask, prctl, mount of /proc with static
    // strings, setgroups, setgid, setuid, capset)
    // on data owned by the closure and prepared before fork; it does not
    // allocate (errors are `io::Error`s from an errno), take locks or
    // touch other shared state.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
}

/// `unshare(flags)` for the container helper (`crate::container`).
/// Namespace flags only: the helper is single-threaded, so no other
/// thread could be surprised by a changed view.
pub fn unshare_namespaces(flags: rustix::thread::UnshareFlags) -> io::Result<()> {
    use rustix::thread::UnshareFlags as F;
    let allowed = F::NEWNS | F::NEWPID | F::NEWIPC | F::NEWUTS | F::NEWNET | F::NEWCGROUP;
    if !allowed.contains(flags) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: rustix marks unshare unsafe because CLONE_FILES / CLONE_FS /
    // CLONE_VM change what other threads of the process share. Only
    // namespace flags are passed (checked above), and the caller is the
    // single-threaded container helper process.
    Ok(unsafe { rustix::thread::unshare_unsafe(flags) }?)
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: every fd from `first` up
/// is closed at exec. rustix has no `close_range`.
fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers; with CLOSE_RANGE_CLOEXEC it
    // closes nothing now, so no fd this process still uses goes away.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(rc as libc::c_int)
}

/// `ioctl(fd, TIOCSCTTY, 1)`. rustix's `ioctl_tiocsctty` passes 0, which
/// does not take the tty from a session that already has it.
fn set_controlling_tty(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument, not a pointer; `fd` is
    // open for the duration of the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 1) })
}

/// `setrlimit(resource, {limit, limit})`; `None` is `RLIM_INFINITY`.
/// rustix's `Resource` is an enum with no way in from a number.
fn set_rlimit(resource: u32, limit: Option<u64>) -> io::Result<()> {
    let v = limit.map_or(libc::RLIM_INFINITY, |v| v as libc::rlim_t);
    let lim = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: `lim` is a valid rlimit that setrlimit only reads.
    check(unsafe { libc::setrlimit(resource as _, &lim) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// A non-CLOEXEC fd of the parent does not reach the program, and
    /// no_new_privs is set.
    #[test]
    fn only_stdio_and_no_new_privs_reach_the_program() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        // Far above what `ls` opens, and without CLOEXEC.
        let high = rustix::io::fcntl_dupfd_cloexec(&r, 100).unwrap();
        rustix::io::fcntl_setfd(&high, rustix::io::FdFlags::empty()).unwrap();
        let leaked = std::os::fd::AsRawFd::as_raw_fd(&high);
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "ls /proc/self/fd | sort -n | tr '\\n' ' '; grep NoNewPrivs /proc/self/status; \
             cat /proc/self/oom_score_adj",
        ])
        .stdout(Stdio::piped());
        before_exec(
            &mut cmd,
            ChildSetup {
                only_stdio: true,
                no_new_privs: true,
                oom_killable: true,
                ..Default::default()
            },
        );
        let out = cmd.output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        // 0, 1, 2 and the fd `ls` opens for /proc/self/fd itself.
        let fds: Vec<i32> = text
            .split_whitespace()
            .take_while(|w| w.parse::<i32>().is_ok())
            .map(|w| w.parse().unwrap())
            .collect();
        assert!(!fds.contains(&leaked), "{text}");
        assert!(fds.len() <= 4, "{text}");
        assert!(text.contains("NoNewPrivs:\t1"), "{text}");
        assert!(text.ends_with("\n0\n"), "{text}");
    }

    /// The child's limits, umask, ids and capability sets, as root only.
    #[test]
    fn child_setup_reaches_the_exec_ed_program() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "ulimit -n; umask; id -u; id -g; id -G; \
             grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status",
        ])
        .stdout(Stdio::piped());
        before_exec(
            &mut cmd,
            ChildSetup {
                limits: vec![(7, Some(64))], // RLIMIT_NOFILE
                umask: Some(0o027),
                keep_caps: Some(1 << 10), // CAP_NET_BIND_SERVICE
                uid: 65534,
                gid: 65533,
                groups: vec![Gid::from_raw(65532)],
                switch_user: true,
                ..Default::default()
            },
        );
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines[..5], ["64", "0027", "65534", "65533", "65533 65532"]);
        for line in &lines[5..] {
            assert!(line.ends_with("0000000000000400"), "{text}");
        }
    }
}

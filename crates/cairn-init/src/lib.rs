//! cairn-init: the PID 1 of cairn appliances.
//!
//! Boot sequence (see [`init::run`]):
//! 1. block the signals PID 1 acts on and read them from a signalfd
//!    ([`signals`]); make sure fds 0-2 are the console;
//! 2. print `cairn-init VERSION` and `cairn: init started`;
//! 3. mount `/proc`, `/sys`, `/dev`, `/dev/pts`, `/dev/shm`, `/run`, `/tmp`
//!    ([`boot`]); turn Ctrl-Alt-Del into SIGINT;
//! 4. read `/etc/cairn/system.json` ([`config`]);
//! 5. load kernel modules ([`modules`]), set the hostname, mount the disks
//!    ([`disk`]), merge the secondary config ([`config`]), start
//!    networking ([`net`]);
//! 6. hand every source (signals, services, network, control socket,
//!    console, power button, kernel log: [`machine`]) to the one event
//!    loop ([`event`]), which runs until a service's `on_exit`, a signal,
//!    `cairnctl` or the power button asks for a shutdown ([`shutdown`]),
//!    then stop everything and power off or reboot.
//!
//! Every step prints a timestamped line ([`log`]), giving a boot timeline
//! on the console. The kernel command line is parsed by [`cmdline`];
//! `cairn.debug` turns on verbose lines.
//!
//! PID 1 must not die: each unit of work runs under `catch_unwind` and the
//! config's `on_panic` decides between logging and carrying on or rebooting.
//! A missing or invalid config is reported (with line and column) and init
//! keeps running as a plain reaper without services.
//!
//! # Test mode
//! When the process is not PID 1 it runs in test mode: no mounts, no
//! module loading, no hostname or network changes, no `kill(-1)`, and it
//! exits (status 0) instead of powering off or rebooting. It makes itself
//! a child subreaper so orphans of its services are still reaped. Only in
//! test mode, `CAIRN_CONFIG` overrides the config path and `CAIRN_CMDLINE`
//! replaces `/proc/cmdline`.
//!
//! # Multi-call
//! Invoked as `cairnctl` the binary is the control client ([`console::ctl`]).
//!
//! # Unsafe code
//! Every raw system call that needs `unsafe` is in `sys`, each block with
//! a `// SAFETY:` line; the crate root denies `unsafe_code` and allows it
//! on `sys` alone, and every other top-level module (so also its
//! submodules) starts with `#![forbid(unsafe_code)]`, which no `allow`
//! inside it can lift.

#![deny(unsafe_code)]

pub mod accounts;
pub mod boot;
pub mod cgroup;
pub mod cmdline;
pub mod config;
pub mod console;
pub mod container;
pub mod disk;
pub mod event;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod init;
pub mod log;
pub mod machine;
pub mod modules;
pub mod net;
pub mod power;
pub mod procfs;
pub mod shutdown;
pub mod signals;
pub mod supervise;
#[allow(unsafe_code)]
mod sys;
pub mod targets;
pub mod tsc;
pub mod update;

use std::ffi::OsStr;
use std::path::Path;

/// Whether this process is the real PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1: owns the machine.
    Pid1,
    /// Any other pid: touches nothing system-wide, exits at the end.
    Test,
}

impl Mode {
    pub fn detect() -> Self {
        if rustix::process::getpid() == rustix::process::Pid::INIT {
            Mode::Pid1
        } else {
            Mode::Test
        }
    }
}

/// Which program a multi-call invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applet {
    Init,
    Cairnctl,
    /// The container helper ([`container`]).
    Container,
    /// The reaper of a container with `init = true` ([`container`]).
    Reaper,
    /// `cairn-update`: the update agent ([`update`]).
    Update,
    /// `cairn-node-config`: fetches the node config ([`update::node`]).
    NodeConfig,
}

/// Picks the applet from `argv[0]`'s file name; anything unknown is init.
pub fn applet(argv0: Option<&OsStr>) -> Applet {
    match argv0.and_then(|a| Path::new(a).file_name()) {
        Some(n) if n == "cairnctl" => Applet::Cairnctl,
        Some(n) if n == container::APPLET => Applet::Container,
        Some(n) if n == container::REAPER => Applet::Reaper,
        Some(n) if n == "cairn-update" => Applet::Update,
        Some(n) if n == "cairn-node-config" => Applet::NodeConfig,
        _ => Applet::Init,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_from_argv0() {
        assert_eq!(
            applet(Some(OsStr::new("/usr/bin/cairnctl"))),
            Applet::Cairnctl
        );
        assert_eq!(applet(Some(OsStr::new("cairnctl"))), Applet::Cairnctl);
        assert_eq!(applet(Some(OsStr::new("/init"))), Applet::Init);
        assert_eq!(applet(Some(OsStr::new("/sbin/cairnctl-x"))), Applet::Init);
        assert_eq!(applet(None), Applet::Init);
        assert_eq!(
            applet(Some(OsStr::new("cairn-container"))),
            Applet::Container
        );
        assert_eq!(applet(Some(OsStr::new("cairn-reaper"))), Applet::Reaper);
    }

    #[test]
    fn tests_do_not_run_as_pid1() {
        assert_eq!(Mode::detect(), Mode::Test);
    }
}

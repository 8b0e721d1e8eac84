//! What a person sees and types: the status screen on the console
//! ([`status`]), the break-glass shell ([`shell`]) and the `cairnctl`
//! control socket ([`ctl`]).
//!
//! All three draw from a [`Snapshot`]: a plain copy of the services'
//! rows, the mounts and the network state that the init makes when one is
//! asked for. Nothing here reaches back into the supervisor or the network
//! manager.

#![forbid(unsafe_code)]

pub mod ctl;
pub mod shell;
pub mod status;

use std::os::fd::OwnedFd;
use std::time::Instant;

use rustix::io::Errno;
use rustix::process::Pid;

use crate::disk::MountStatus;
use crate::event::Token;
use crate::net::manager::Status as NetStatus;
use crate::supervise::policy::Exit;
use crate::supervise::ServiceRow;

/// The state of the machine at one moment, for display.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub services: Vec<ServiceRow>,
    pub mounts: Vec<MountStatus>,
    pub net: Option<NetStatus>,
}

/// The console as an input source: the status screen toggle and the
/// break-glass shell dialogue.
#[derive(Default)]
pub struct Console {
    fd: Option<OwnedFd>,
    screen: status::Screen,
    shell: shell::Shell,
    /// Set while the event loop watches `fd`.
    pub token: Option<Token>,
}

impl Console {
    /// `fd`: the console (non-blocking), `shell`: the `[shell]` config.
    pub fn new(fd: Option<OwnedFd>, shell: Option<cairn_manifest::ShellConfig>) -> Self {
        if let Some(c) = &fd {
            let _ = rustix::io::ioctl_fionbio(c, true);
        }
        Console {
            fd,
            screen: status::Screen::default(),
            shell: shell::Shell::new(shell),
            token: None,
        }
    }

    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// Whether the init should read the console now (not while the shell
    /// runs on it).
    pub fn wants_input(&self) -> bool {
        self.fd.is_some() && self.shell.reads_console()
    }

    /// Reads what was typed (at most 256 bytes per call) and acts on it;
    /// `snapshot` is called only when the status screen is drawn.
    pub fn input(&mut self, snapshot: impl FnOnce() -> Snapshot) {
        let Some(fd) = &self.fd else { return };
        let mut buf = [0u8; 256];
        match rustix::io::read(fd, &mut buf) {
            Ok(0) | Err(Errno::BADF) | Err(Errno::IO) => self.fd = None,
            Ok(n) => {
                let input = &buf[..n];
                if self.shell.active() {
                    self.shell.input(input, fd);
                    return;
                }
                let shell = self.shell.enabled();
                if let Some(rest) = self.screen.input(input, snapshot, shell) {
                    self.shell.begin(fd);
                    self.shell.input(&input[rest..], fd);
                }
            }
            Err(_) => {}
        }
    }

    /// When the shell's lock after a wrong password ends.
    pub fn deadline(&self) -> Option<Instant> {
        self.shell.deadline()
    }

    /// The lock's time has come.
    pub fn tick(&mut self) {
        self.shell.tick(self.fd.as_ref());
    }

    /// A child that is no service was reaped: the shell, maybe.
    pub fn reaped(&mut self, pid: Pid, exit: Exit) -> bool {
        self.shell.reaped(pid, exit, self.fd.as_ref())
    }
}

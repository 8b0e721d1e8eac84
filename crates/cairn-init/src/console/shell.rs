//! The break-glass shell on the console (`[shell]`, off by default).
//!
//! Type `shell` and Enter on the console: the log mirror pauses, echo is
//! turned off and PID 1 asks for the password, checked against the
//! manifest's argon2 PHC hash. An empty line gives up. A wrong password
//! locks the prompt for [`delay`] (3 s, doubling with each failure in a
//! row, at most 60 s); what is typed meanwhile is thrown away. The right
//! one starts `exec` on the console's tty in a session of its own with the
//! tty as its controlling terminal (`setsid` + `TIOCSCTTY`), so job
//! control and Ctrl-C work. PID 1 stops reading the console while it runs;
//! when it exits, the log mirror resumes and prints what was held.
//!
//! Verifying a password blocks the supervisor for as long as argon2 takes
//! (the hash's own parameters; `cairn hash-password` picks ones that take
//! well under a second).

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use cairn_manifest::{Level, ShellConfig};
use rustix::fs::{Mode, OFlags};
use rustix::process::Pid;
use rustix::termios::{self, LocalModes, OptionalActions, QueueSelector, Termios};

use crate::supervise::policy::Exit;
use crate::{info, log, sys};

/// What a console user types to ask for the shell.
pub const WORD: &str = "shell";
/// Longest password read.
pub const PASSWORD_MAX: usize = 256;
/// The wait after the first wrong password.
pub const FIRST_DELAY: Duration = Duration::from_secs(3);
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("cannot open the console tty {path}: {source}")]
    Tty {
        path: String,
        source: rustix::io::Errno,
    },
    #[error("cannot run {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
    #[error("[shell] exec is empty")]
    EmptyExec,
}

/// The wait after `failures` wrong passwords in a row (at least 1).
pub fn delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << shift).min(MAX_DELAY)
}

/// Whether `password` matches the argon2 PHC string `phc`. A malformed
/// hash matches nothing.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password, &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[derive(Debug)]
enum Phase {
    Idle,
    /// Reading the password (echo off).
    Prompt {
        buf: Vec<u8>,
    },
    /// After a wrong password: input is discarded until `until`.
    Locked {
        until: Instant,
    },
    Running {
        pid: Pid,
    },
}

/// The shell's state on the console.
#[derive(Debug)]
pub struct Shell {
    cfg: Option<ShellConfig>,
    phase: Phase,
    failures: u32,
    saved: Option<Termios>,
}

impl Default for Shell {
    fn default() -> Self {
        Shell {
            cfg: None,
            phase: Phase::Idle,
            failures: 0,
            saved: None,
        }
    }
}

fn say(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}

impl Shell {
    pub fn new(cfg: Option<ShellConfig>) -> Self {
        Shell {
            cfg,
            ..Shell::default()
        }
    }

    /// Whether `[shell]` is configured.
    pub fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    /// Whether console input belongs to the shell dialogue.
    pub fn active(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// Whether PID 1 should read the console (not while the shell runs).
    pub fn reads_console(&self) -> bool {
        !matches!(self.phase, Phase::Running { .. })
    }

    /// When the lock after a wrong password ends.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Locked { until } => Some(until),
            _ => None,
        }
    }

    /// `shell` was typed: pause the log, echo off, ask for the password.
    pub fn begin(&mut self, console: &OwnedFd) {
        if !self.enabled() || self.active() {
            return;
        }
        log::pause_console();
        self.saved = termios::tcgetattr(console).ok();
        if let Some(t) = &self.saved {
            let mut quiet = t.clone();
            quiet.local_modes.remove(LocalModes::ECHO);
            let _ = termios::tcsetattr(console, OptionalActions::Now, &quiet);
        }
        say("\ncairn break-glass shell (empty line: back to the log)\n");
        self.prompt();
    }

    fn prompt(&mut self) {
        say("Password: ");
        self.phase = Phase::Prompt { buf: Vec::new() };
    }

    fn restore_tty(&mut self, console: &OwnedFd) {
        if let Some(t) = self.saved.take() {
            let _ = termios::tcsetattr(console, OptionalActions::Now, &t);
        }
    }

    fn back_to_log(&mut self, console: &OwnedFd) {
        self.restore_tty(console);
        self.phase = Phase::Idle;
        log::resume_console();
    }

    /// Console input while [`Shell::active`].
    pub fn input(&mut self, data: &[u8], console: &OwnedFd) {
        for &b in data {
            let Phase::Prompt { buf } = &mut self.phase else {
                // Locked: thrown away. Running: not read at all.
                return;
            };
            if b != b'\n' && b != b'\r' {
                if buf.len() < PASSWORD_MAX {
                    buf.push(b);
                }
                continue;
            }
            let password = std::mem::take(buf);
            say("\n");
            if password.is_empty() {
                self.back_to_log(console);
                return;
            }
            self.check(&password, console);
        }
    }

    fn check(&mut self, password: &[u8], console: &OwnedFd) {
        let Some(cfg) = self.cfg.clone() else { return };
        if !verify(&cfg.password_hash, password) {
            self.failures = self.failures.saturating_add(1);
            let wait = delay(self.failures);
            log::record(
                Level::Warn,
                "cairn",
                &format!(
                    "shell: wrong password ({} in a row); next try in {}s",
                    self.failures,
                    wait.as_secs()
                ),
                None,
            );
            say(&format!("Wrong password. Wait {}s.\n", wait.as_secs()));
            self.phase = Phase::Locked {
                until: Instant::now() + wait,
            };
            return;
        }
        self.failures = 0;
        self.restore_tty(console);
        match spawn(&cfg) {
            Ok(pid) => {
                info!(
                    "shell: password accepted; {} started (pid {})",
                    cfg.exec.join(" "),
                    pid.as_raw_nonzero()
                );
                self.phase = Phase::Running { pid };
            }
            Err(e) => {
                log::record(Level::Error, "cairn", &format!("shell: {e}"), None);
                say(&format!("{e}\n"));
                self.back_to_log(console);
            }
        }
    }

    /// Ends the lock once its time has come: drop what was typed, ask again.
    pub fn tick(&mut self, console: Option<&OwnedFd>) {
        if let Phase::Locked { until } = self.phase {
            if until <= Instant::now() {
                if let Some(c) = console {
                    drain(c);
                    let _ = termios::tcflush(c, QueueSelector::IFlush);
                }
                self.prompt();
            }
        }
    }

    /// A child was reaped: if it is the shell, go back to the log. Returns
    /// whether it was.
    pub fn reaped(&mut self, pid: Pid, exit: Exit, console: Option<&OwnedFd>) -> bool {
        match self.phase {
            Phase::Running { pid: p } if p == pid => {
                info!("shell: exited ({exit}); back to the log");
                self.phase = Phase::Idle;
                if let Some(c) = console {
                    let _ = termios::tcflush(c, QueueSelector::IFlush);
                }
                log::resume_console();
                true
            }
            _ => false,
        }
    }
}

/// Reads and drops whatever is pending on the (non-blocking) console.
fn drain(console: &OwnedFd) {
    let mut buf = [0u8; 256];
    for _ in 0..64 {
        match rustix::io::read(console, &mut buf) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// The device behind `/dev/console`: the last entry of
/// `/sys/class/tty/console/active` (`ttyS0`), if it exists in `/dev`.
pub fn console_device(active: &str) -> Option<String> {
    let name = active.split_whitespace().last()?;
    if name.contains('/') || name.is_empty() {
        return None;
    }
    Some(format!("/dev/{name}"))
}

fn open_tty() -> Result<OwnedFd, ShellError> {
    let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC;
    let dev = std::fs::read_to_string("/sys/class/tty/console/active")
        .ok()
        .and_then(|a| console_device(&a))
        .filter(|p| std::path::Path::new(p).exists());
    if let Some(p) = dev {
        if let Ok(fd) = rustix::fs::open(p.as_str(), flags, Mode::empty()) {
            return Ok(fd);
        }
    }
    rustix::fs::open("/dev/console", flags, Mode::empty()).map_err(|source| ShellError::Tty {
        path: "/dev/console".into(),
        source,
    })
}

/// Starts the shell on the console tty as its controlling terminal.
fn spawn(cfg: &ShellConfig) -> Result<Pid, ShellError> {
    let (program, args) = cfg.exec.split_first().ok_or(ShellError::EmptyExec)?;
    let tty = open_tty()?;
    let exec_err = |source| ShellError::Exec {
        program: program.clone(),
        source,
    };
    let out = tty.try_clone().map_err(exec_err)?;
    let err = tty.try_clone().map_err(exec_err)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", crate::supervise::DEFAULT_PATH)
        .env("HOME", "/")
        .env("TERM", "linux")
        .current_dir("/")
        .stdin(Stdio::from(tty))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // In the child, after std has set up fds 0-2: its own session with
    // the tty (fd 0) as its controlling terminal.
    sys::process::before_exec(
        &mut cmd,
        sys::process::ChildSetup {
            controlling_tty: true,
            only_stdio: true,
            oom_killable: true,
            ..Default::default()
        },
    );
    let child = cmd.spawn().map_err(exec_err)?;
    let raw = child.id() as i32;
    Pid::from_raw(raw)
        .ok_or_else(|| exec_err(std::io::Error::other(format!("kernel returned pid {raw}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn hash(pw: &str) -> String {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        a.hash_password(pw.as_bytes(), &salt).unwrap().to_string()
    }

    #[test]
    fn verifies_phc_strings() {
        let h = hash("right");
        cairn_manifest::shell::check_password_hash(&h).unwrap();
        assert!(verify(&h, b"right"));
        assert!(!verify(&h, b"wrong"));
        assert!(!verify(&h, b""));
        assert!(!verify("garbage", b"right"));
        assert!(!verify("", b""));
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let secs: Vec<u64> = (1..=8).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [3, 6, 12, 24, 48, 60, 60, 60]);
        assert_eq!(delay(0), FIRST_DELAY);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn console_devices() {
        assert_eq!(
            console_device("tty0 ttyS0\n").as_deref(),
            Some("/dev/ttyS0")
        );
        assert_eq!(console_device("ttyS0").as_deref(), Some("/dev/ttyS0"));
        assert_eq!(console_device(""), None);
        assert_eq!(console_device("../x"), None);
    }

    #[test]
    fn off_by_default() {
        let s = Shell::default();
        assert!(!s.enabled() && !s.active() && s.reads_console());
        assert_eq!(s.deadline(), None);
    }
}

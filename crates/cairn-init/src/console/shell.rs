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
//! well under a second; the manifest bounds `m` and `t`). The memory argon2
//! needs is checked at boot and before every attempt against
//! `MemAvailable`: an attempt that would take more than half of it, or
//! whose allocation fails, is refused with a log line ([`Verdict::Refused`])
//! and PID 1 goes on (it never aborts on allocation).

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash};
use cairn_manifest::{Level, ShellConfig};
use rustix::fs::{Mode, OFlags};
use rustix::process::Pid;
use rustix::termios::{self, LocalModes, OptionalActions, QueueSelector, Termios};

use crate::supervise::policy::Exit;
use crate::{info, log, sys};

/// What a console user types to ask for the shell.
pub const WORD: &str = "shell";
/// Longest password read (the manifest's contract: `cairn hash-password`
/// refuses longer ones).
pub use cairn_manifest::shell::PASSWORD_MAX;
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

/// What checking a password came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Match,
    /// Wrong password (or a malformed hash, which matches nothing).
    NoMatch,
    /// Not checked: why (memory short, allocation failed, parameters out
    /// of bounds). Not counted as a wrong password.
    Refused(String),
}

/// The memory (KiB) checking a password against `phc` takes, after the
/// manifest's checks on the hash (argon2 with `m` and `t` in bounds).
pub fn hash_memory_kib(phc: &str) -> Result<u64, String> {
    cairn_manifest::shell::check_password_hash(phc).map_err(|e| e.to_string())?;
    let h = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    let params = argon2::Params::try_from(&h).map_err(|e| e.to_string())?;
    Ok(params.block_count() as u64 * argon2::Block::SIZE as u64 / 1024)
}

/// Why the memory of this appliance (`available` KiB, `MemAvailable`;
/// `None`: unknown) cannot hold a check that needs `need` KiB, if it
/// cannot: more than half of what is available is refused.
pub fn memory_short(need: u64, available: Option<u64>) -> Option<String> {
    let available = available?;
    (need > available / 2).then(|| {
        format!("checking the password needs {need} KiB; only {available} KiB of memory are available (at most half of it is used)")
    })
}

/// `MemAvailable` of /proc/meminfo in KiB, if known.
pub fn available_kib() -> Option<u64> {
    let (_, available) = crate::procfs::meminfo(&crate::procfs::read("/proc/meminfo"));
    (available > 0).then_some(available)
}

/// At boot: `Err` when the hash can never be checked (the shell is off);
/// `Ok(Some(warning))` when this appliance's memory is too short for it
/// now (each attempt checks again).
pub fn boot_check(phc: &str, available: Option<u64>) -> Result<Option<String>, String> {
    let need = hash_memory_kib(phc)?;
    Ok(memory_short(need, available))
}

/// Checks `password` against the argon2 PHC string `phc` with the memory
/// it needs taken from the heap fallibly, after comparing that with
/// `available` KiB. Never aborts on allocation.
pub fn verify_within(phc: &str, password: &[u8], available: Option<u64>) -> Verdict {
    let Ok(h) = PasswordHash::new(phc) else {
        return Verdict::NoMatch;
    };
    let (Ok(alg), Some(salt), Some(expected)) =
        (argon2::Algorithm::try_from(h.algorithm), h.salt, h.hash)
    else {
        return Verdict::NoMatch;
    };
    let need = match hash_memory_kib(phc) {
        Ok(n) => n,
        Err(e) => return Verdict::Refused(e),
    };
    if let Some(why) = memory_short(need, available) {
        return Verdict::Refused(why);
    }
    let version = match h.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return Verdict::NoMatch,
    };
    let Ok(params) = argon2::Params::try_from(&h) else {
        return Verdict::NoMatch;
    };
    let blocks = params.block_count();
    let mut memory: Vec<argon2::Block> = Vec::new();
    if memory.try_reserve_exact(blocks).is_err() {
        return Verdict::Refused(format!(
            "cannot allocate the {need} KiB checking the password needs"
        ));
    }
    memory.resize(blocks, argon2::Block::default());
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return Verdict::NoMatch;
    };
    let mut out = vec![0u8; expected.len()];
    let a = argon2::Argon2::new(alg, version, params);
    if a.hash_password_into_with_memory(password, salt, &mut out, &mut memory[..])
        .is_err()
    {
        return Verdict::NoMatch;
    }
    // Output's comparison takes constant time.
    match Output::new(&out) {
        Ok(o) if o == expected => Verdict::Match,
        _ => Verdict::NoMatch,
    }
}

/// Whether `password` matches the argon2 PHC string `phc` (with this
/// machine's memory). A malformed hash matches nothing.
pub fn verify(phc: &str, password: &[u8]) -> bool {
    verify_within(phc, password, available_kib()) == Verdict::Match
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
        let verdict = verify_within(&cfg.password_hash, password, available_kib());
        if let Verdict::Refused(why) = &verdict {
            log::record(
                Level::Warn,
                "cairn",
                &format!("shell: password not checked: {why}"),
                None,
            );
            say("The password cannot be checked now (see the log).\n");
            self.back_to_log(console);
            return;
        }
        if verdict != Verdict::Match {
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
    fn same_answers_as_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier;
        // Other algorithms, versions, parameters and output lengths.
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        for (alg, ver, m, t, p, len) in [
            (
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                64,
                1,
                1,
                32,
            ),
            (
                argon2::Algorithm::Argon2i,
                argon2::Version::V0x13,
                128,
                2,
                2,
                16,
            ),
            (
                argon2::Algorithm::Argon2d,
                argon2::Version::V0x10,
                256,
                3,
                1,
                64,
            ),
        ] {
            let params = argon2::Params::new(m, t, p, Some(len)).unwrap();
            let a = argon2::Argon2::new(alg, ver, params);
            let h = a.hash_password(b"pw", &salt).unwrap().to_string();
            let parsed = PasswordHash::new(&h).unwrap();
            assert!(argon2::Argon2::default()
                .verify_password(b"pw", &parsed)
                .is_ok());
            assert_eq!(verify_within(&h, b"pw", None), Verdict::Match, "{h}");
            assert_eq!(verify_within(&h, b"pW", None), Verdict::NoMatch, "{h}");
        }
    }

    #[test]
    fn a_check_that_cannot_get_its_memory_is_refused() {
        let h = hash("right"); // m = 64 KiB
        assert_eq!(hash_memory_kib(&h), Ok(64));
        assert_eq!(verify_within(&h, b"right", Some(128)), Verdict::Match);
        match verify_within(&h, b"right", Some(127)) {
            Verdict::Refused(why) => {
                assert!(why.contains("needs 64 KiB; only 127 KiB"), "{why}")
            }
            v => panic!("{v:?}"),
        }
        // At boot: a warning, the shell stays on.
        assert_eq!(boot_check(&h, Some(1 << 20)), Ok(None));
        assert!(boot_check(&h, Some(100))
            .unwrap()
            .unwrap()
            .contains("64 KiB"));
        // Out of the manifest's bounds (a hand-made runtime config): the
        // shell is off at boot, and an attempt is refused, not run.
        let slow = "$argon2id$v=19$m=64,t=1000,p=1$c2FsdHNhbHRzYWx0$Wz0J0F2b6b2l0ufTbrG9bUL8nV3iw+2g2yPNH2cUk1A";
        let e = boot_check(slow, None).unwrap_err();
        assert!(e.contains("1000 passes"), "{e}");
        assert!(matches!(
            verify_within(slow, b"x", None),
            Verdict::Refused(_)
        ));
        let big = "$argon2id$v=19$m=4000000,t=1,p=1$c2FsdHNhbHRzYWx0$Wz0J0F2b6b2l0ufTbrG9bUL8nV3iw+2g2yPNH2cUk1A";
        assert!(matches!(
            verify_within(big, b"x", None),
            Verdict::Refused(_)
        ));
        assert!(boot_check("garbage", None).is_err());
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

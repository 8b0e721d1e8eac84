//! Service supervision: start in order, reap, restart, and turn a service's
//! end or a signal into a shutdown request.
//!
//! The [`Supervisor`] is driven one [`Supervisor::step`] at a time (one unit
//! of work: start what is due, wait for an event, handle it) so the caller
//! can catch a panic per step and keep PID 1 alive.
//!
//! Each service runs in its own session (`setsid`), so its process group id
//! is its pid and shutdown can signal the whole group. Stdin is
//! `/dev/null`, stdout and stderr are inherited (the console), the
//! environment is exactly the service's `env` on top of
//! `PATH=/usr/sbin:/usr/bin:/sbin:/bin`, and the working directory is `/`.
//!
//! When a run ends (including an exec that fails, which counts as an
//! unsuccessful run) the restart policy decides ([`policy`]): `always`
//! restarts, `on-failure` restarts unless it exited with status 0, `never`
//! does not; restarts wait 1 s. Once the decision is not to restart, the
//! service's `on_exit` (`poweroff` / `reboot`) becomes a shutdown request
//! (so with `restart = "always"` it never fires).

pub mod order;
pub mod policy;
pub mod shutdown;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_manifest::{ExitAction, ServiceConfig};
use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions, WaitStatus};

use crate::signals::{self, SignalAction, Waiter};
use crate::{debug, info};
use policy::{Backoff, Decision, Exit, FixedDelay};

/// `PATH` for services unless their `env` sets one.
pub const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How the machine should go down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Poweroff,
    Reboot,
}

impl std::fmt::Display for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shutdown::Poweroff => "power off",
            Shutdown::Reboot => "reboot",
        })
    }
}

impl From<ExitAction> for Shutdown {
    fn from(a: ExitAction) -> Self {
        match a {
            ExitAction::Poweroff => Shutdown::Poweroff,
            ExitAction::Reboot => Shutdown::Reboot,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("service {service}: exec is empty")]
    EmptyExec { service: String },
    #[error("service {service}: cannot run {program}: {source}")]
    Exec {
        service: String,
        program: String,
        source: std::io::Error,
    },
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet (waiting for its `after` list).
    Waiting,
    Running {
        pid: Pid,
        since: Instant,
    },
    /// Ended; starts again at `at`.
    Restarting {
        at: Instant,
    },
    /// Ended for good.
    Stopped(Exit),
}

/// Runtime state of one service.
pub struct ServiceState {
    pub state: State,
    /// The first start attempt is over (for ordering and readiness).
    pub attempted: bool,
    /// Successful starts so far.
    pub starts: u32,
    backoff: Box<dyn Backoff>,
}

/// Supervises the configured services.
pub struct Supervisor {
    configs: Vec<ServiceConfig>,
    states: Vec<ServiceState>,
    /// Services that can never start (a cycle in `after`).
    blocked: Vec<bool>,
    announce_ready: bool,
    ready_logged: bool,
    stopping: bool,
    pending: Option<Shutdown>,
    /// Targets reached so far (see [`Supervisor::reach_target`]).
    reached: Vec<String>,
}

impl Supervisor {
    /// A supervisor for `configs` (manifest order). Logs `after` names that
    /// match nothing and services caught in an `after` cycle.
    pub fn new(configs: Vec<ServiceConfig>) -> Self {
        for u in order::unknown_afters(&configs) {
            info!(
                "service {}: after = {:?} names no service or target; ignored",
                u.service, u.name
            );
        }
        let (_, never) = order::start_sequence(&configs, &|_| true);
        let mut blocked = vec![false; configs.len()];
        for i in never {
            blocked[i] = true;
            info!(
                "service {} never starts: its after list is part of a cycle",
                configs[i].name
            );
        }
        let states = configs
            .iter()
            .map(|_| ServiceState {
                state: State::Waiting,
                attempted: false,
                starts: 0,
                backoff: Box::new(FixedDelay::default()),
            })
            .collect();
        Supervisor {
            configs,
            states,
            blocked,
            announce_ready: true,
            ready_logged: false,
            stopping: false,
            pending: None,
            // `mounts` is reached by the time services start.
            reached: vec!["mounts".to_string()],
        }
    }

    /// Marks a target (`network-online`) as reached: services that wait
    /// for it with `after` may start at the next step.
    pub fn reach_target(&mut self, name: &str) {
        if !self.target_reached(name) {
            debug!("target {name} reached");
            self.reached.push(name.to_string());
        }
    }

    pub fn target_reached(&self, name: &str) -> bool {
        self.reached.iter().any(|r| r == name)
    }

    /// A supervisor with no services that never reports ready: PID 1 as a
    /// plain reaper (used when the configuration cannot be read).
    pub fn idle() -> Self {
        let mut s = Supervisor::new(Vec::new());
        s.announce_ready = false;
        s
    }

    pub fn configs(&self) -> &[ServiceConfig] {
        &self.configs
    }

    pub fn states(&self) -> &[ServiceState] {
        &self.states
    }

    /// Asks for a shutdown; the first request wins.
    pub fn request(&mut self, kind: Shutdown) {
        self.pending.get_or_insert(kind);
    }

    /// One unit of work: start what is due, wait for a signal or the next
    /// restart deadline, reap. Returns a shutdown request once there is one.
    pub fn step(&mut self, waiter: &Waiter) -> Option<Shutdown> {
        self.start_due();
        if let Some(r) = self.pending.take() {
            return Some(r);
        }
        let timeout = self
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()));
        self.wait_and_handle(waiter, timeout);
        self.reap();
        self.start_due();
        self.pending.take()
    }

    /// Waits for signals and acts on them (shutdown requests only; reaping
    /// is up to the caller).
    fn wait_and_handle(&mut self, waiter: &Waiter, timeout: Option<Duration>) {
        let sigs = match waiter.wait(timeout) {
            Ok(s) => s,
            Err(e) => {
                info!("{e}");
                // Do not spin on a broken fd.
                std::thread::sleep(Duration::from_secs(1));
                Vec::new()
            }
        };
        for sig in sigs {
            debug!("received {}", signals::name(sig));
            match signals::action(sig) {
                SignalAction::Poweroff if !self.stopping => {
                    info!("{} received: power off", signals::name(sig));
                    self.request(Shutdown::Poweroff);
                }
                SignalAction::Reboot if !self.stopping => {
                    info!("{} received: reboot", signals::name(sig));
                    self.request(Shutdown::Reboot);
                }
                _ => {}
            }
        }
    }

    /// Starts services whose turn has come: first starts in `after` order,
    /// then restarts whose delay has passed. Logs `ready` once every
    /// startable service has had its first start.
    fn start_due(&mut self) {
        if self.stopping {
            return;
        }
        loop {
            let attempted: Vec<bool> = self.states.iter().map(|s| s.attempted).collect();
            let reached = |t: &str| self.target_reached(t);
            match order::next_startable(&self.configs, &attempted, &reached) {
                Some(i) => self.start(i),
                None => break,
            }
        }
        let now = Instant::now();
        for i in 0..self.states.len() {
            if matches!(self.states[i].state, State::Restarting { at } if at <= now) {
                self.start(i);
            }
        }
        self.maybe_ready();
    }

    fn maybe_ready(&mut self) {
        if !self.announce_ready || self.ready_logged {
            return;
        }
        let startable = || (0..self.states.len()).filter(|&i| !self.blocked[i]);
        if !startable().all(|i| self.states[i].attempted) {
            return;
        }
        self.ready_logged = true;
        let failed = startable().filter(|&i| self.states[i].starts == 0).count();
        if failed == 0 {
            info!("ready");
        } else {
            info!(
                "ready ({failed} of {} services failed to start)",
                self.configs.len()
            );
        }
    }

    fn start(&mut self, i: usize) {
        self.states[i].attempted = true;
        let cfg = &self.configs[i];
        match spawn(cfg) {
            Ok(pid) => {
                info!(
                    "service {} started (pid {})",
                    cfg.name,
                    pid.as_raw_nonzero()
                );
                let st = &mut self.states[i];
                st.starts += 1;
                st.state = State::Running {
                    pid,
                    since: Instant::now(),
                };
            }
            Err(e) => {
                info!("{e}");
                self.on_end(i, Exit::SpawnFailed);
            }
        }
    }

    /// Reaps every child that has ended, services and orphans alike.
    /// Returns whether children remain.
    pub fn reap(&mut self) -> bool {
        loop {
            // `wait` is waitpid(-1): any child. (rustix's `waitpid(None)`
            // is waitpid(0), our own process group only, which would miss
            // every service since each runs in its own session.)
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => self.on_reaped(pid, status),
                Ok(None) => return true,
                Err(Errno::CHILD) => return false,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    info!("waitpid failed: {e}");
                    return true;
                }
            }
        }
    }

    fn on_reaped(&mut self, pid: Pid, status: WaitStatus) {
        let exit = exit_of(status);
        let found = self
            .states
            .iter()
            .position(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid));
        match found {
            Some(i) => {
                info!("service {} exited ({exit})", self.configs[i].name);
                self.on_end(i, exit);
            }
            None => debug!("reaped pid {} ({exit})", pid.as_raw_nonzero()),
        }
    }

    /// A run of service `i` is over: restart it or stop it for good, and
    /// then honour its `on_exit`.
    fn on_end(&mut self, i: usize, exit: Exit) {
        let cfg = &self.configs[i];
        let st = &mut self.states[i];
        if self.stopping {
            st.state = State::Stopped(exit);
            return;
        }
        match policy::decide(cfg.restart, exit, st.backoff.as_mut()) {
            Decision::Restart(delay) => {
                info!(
                    "service {} restarting in {}.{:03}s",
                    cfg.name,
                    delay.as_secs(),
                    delay.subsec_millis()
                );
                st.state = State::Restarting {
                    at: Instant::now() + delay,
                };
            }
            Decision::Stop => {
                st.state = State::Stopped(exit);
                if let Some(action) = cfg.on_exit {
                    let kind = Shutdown::from(action);
                    info!("service {} ended: {kind} requested", cfg.name);
                    self.request(kind);
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.states
            .iter()
            .filter_map(|s| match s.state {
                State::Restarting { at } => Some(at),
                _ => None,
            })
            .min()
    }

    /// Pids (= process group ids) of running services.
    pub fn running(&self) -> Vec<(usize, Pid)> {
        self.states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.state {
                State::Running { pid, .. } => Some((i, pid)),
                _ => None,
            })
            .collect()
    }
}

fn exit_of(status: WaitStatus) -> Exit {
    if let Some(code) = status.exit_status() {
        Exit::Code(code)
    } else if let Some(sig) = status.terminating_signal() {
        Exit::Signal(sig)
    } else {
        // Stopped/continued are not reported without WUNTRACED/WCONTINUED.
        Exit::Code(-1)
    }
}

/// Starts one service process; returns its pid.
fn spawn(cfg: &ServiceConfig) -> Result<Pid, SpawnError> {
    let (program, args) = cfg
        .exec
        .split_first()
        .ok_or_else(|| SpawnError::EmptyExec {
            service: cfg.name.clone(),
        })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&cfg.env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs between fork and exec; it only makes the
    // async-signal-safe sigprocmask and setsid syscalls and does not
    // allocate or take locks.
    unsafe {
        cmd.pre_exec(|| {
            signals::unblock_all()?;
            rustix::process::setsid()?;
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        service: cfg.name.clone(),
        program: program.clone(),
        source,
    })?;
    // Dropping `Child` neither waits nor kills; the reaper owns it now.
    let raw = child.id() as i32;
    Pid::from_raw(raw).ok_or_else(|| SpawnError::Exec {
        service: cfg.name.clone(),
        program: program.clone(),
        source: std::io::Error::other(format!("kernel returned pid {raw}")),
    })
}

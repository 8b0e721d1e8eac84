//! Service supervision: start in order, reap, restart, and turn a service's
//! end or a signal into a shutdown request.
//!
//! The [`Supervisor`] knows services only: it owns their configs, states,
//! cgroups and output pipes. It does not wait for anything itself: the
//! event loop ([`crate::event`]) calls it when a pipe is readable
//! ([`Supervisor::read_output`]), a child ended ([`Supervisor::reap`]) or
//! one of its deadlines passed ([`Supervisor::on_time`]), and
//! [`crate::machine`] wires it to the loop.
//!
//! Each service runs in its own session (`setsid`), so its process group id
//! is its pid, and (PID 1 with cgroup v2) in its own cgroup; see [`spawn`]
//! for credentials, limits and capabilities. Stdin is `/dev/null`; stdout
//! and stderr go through a pipe into the log, line by line.
//!
//! Service output is read with a budget per turn and a rate limit per
//! service ([`output`]).
//!
//! When a run ends (including an exec that fails, which counts as an
//! unsuccessful run) the restart policy decides ([`policy`]): `always`
//! restarts, `on-failure` restarts unless it exited with status 0, `never`
//! does not; restarts back off exponentially and after `restart_limit`
//! quick failures the service is `failed`. Once the decision is not to
//! restart, the service's `on_exit` (`poweroff` / `reboot`) becomes a
//! shutdown request (so with `restart = "always"` it never fires).

#![forbid(unsafe_code)]

pub mod order;
pub mod output;
pub mod policy;
pub mod spawn;

use std::time::{Duration, Instant};

use cairn_manifest::{ExitAction, Level, ServiceConfig};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::accounts::Accounts;
use crate::cgroup::Cgroup;
use crate::event::Token;
use crate::{debug, info, targets, warn};
use output::{Output, RateLimit, ReadOutcome, READ_BUDGET};
use policy::{Backoff, Decision, Exit, Exponential};

pub use spawn::{SpawnError, DEFAULT_PATH};

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

/// What `cairnctl` may ask of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
}

/// One service as the status screen and `cairnctl status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    pub state: &'static str,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// What happens once a service being stopped has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped (`cairnctl stop`, shutdown).
    Stay,
    /// Start again at once (`cairnctl restart`).
    Restart,
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
    /// SIGTERM sent; SIGKILL at `deadline`.
    Stopping {
        pid: Pid,
        since: Instant,
        deadline: Instant,
        then: AfterStop,
    },
    /// Ended; starts again at `at`.
    Restarting {
        at: Instant,
    },
    /// Ended for good (or stopped by request).
    Stopped(Exit),
    /// Gave up after `restart_limit` quick failures.
    Failed(Exit),
}

impl State {
    /// One word for status output.
    pub fn word(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running { .. } => "running",
            State::Stopping { .. } => "stopping",
            State::Restarting { .. } => "restarting",
            State::Stopped(_) => "stopped",
            State::Failed(_) => "failed",
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        match self {
            State::Running { pid, .. } | State::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// Runtime state of one service.
pub struct ServiceState {
    pub state: State,
    /// The first start attempt is over (for ordering and readiness).
    pub attempted: bool,
    /// Successful starts so far.
    pub starts: u32,
    /// How the last run ended.
    pub last_exit: Option<Exit>,
    backoff: Box<dyn Backoff>,
    cgroup: Option<Cgroup>,
    /// Lines this service may still log (shared by its runs).
    limit: RateLimit,
}

impl ServiceState {
    /// Restarts so far (starts after the first).
    pub fn restarts(&self) -> u32 {
        self.starts.saturating_sub(1)
    }
}

/// Supervises the configured services.
pub struct Supervisor {
    configs: Vec<ServiceConfig>,
    states: Vec<ServiceState>,
    /// Services that can never start (a cycle in `after`).
    blocked: Vec<bool>,
    /// Service indices in the order of their first start.
    start_order: Vec<usize>,
    announce_ready: bool,
    ready_logged: bool,
    stopping: bool,
    pending: Option<Shutdown>,
    accounts: Accounts,
    use_cgroups: bool,
    outputs: Vec<Output>,
    /// Pipes found closed while reaping, not yet handed to the caller.
    closed: Vec<Output>,
}

impl Supervisor {
    /// A supervisor for `configs` (manifest order). Logs `after` names that
    /// match nothing and services caught in an `after` cycle.
    pub fn new(configs: Vec<ServiceConfig>) -> Self {
        for u in order::unknown_afters(&configs) {
            warn!(
                "service {}: after = {:?} names no service or target; ignored",
                u.service, u.name
            );
        }
        let (_, never) = order::start_sequence(&configs, &|_| true);
        let mut blocked = vec![false; configs.len()];
        for i in never {
            blocked[i] = true;
            warn!(
                "service {} never starts: its after list is part of a cycle",
                configs[i].name
            );
        }
        let states = configs
            .iter()
            .map(|c| ServiceState {
                state: State::Waiting,
                attempted: false,
                starts: 0,
                last_exit: None,
                backoff: Box::new(Exponential::new(
                    Duration::from_millis(c.run.restart_delay_ms),
                    Duration::from_millis(c.run.restart_delay_max_ms),
                    c.run.restart_limit,
                )),
                cgroup: None,
                limit: RateLimit::new(Instant::now()),
            })
            .collect();
        Supervisor {
            configs,
            states,
            blocked,
            start_order: Vec::new(),
            announce_ready: true,
            ready_logged: false,
            stopping: false,
            pending: None,
            accounts: Accounts::default(),
            use_cgroups: false,
            outputs: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// A supervisor with no services that never reports ready: PID 1 as a
    /// plain reaper (used when the configuration cannot be read).
    pub fn idle() -> Self {
        let mut s = Supervisor::new(Vec::new());
        s.announce_ready = false;
        s
    }

    /// Users and groups for `user`/`group`/`groups`.
    pub fn set_accounts(&mut self, a: Accounts) {
        self.accounts = a;
    }

    /// Put each service in its own cgroup (PID 1 with cgroup v2).
    pub fn set_cgroups(&mut self, on: bool) {
        self.use_cgroups = on;
    }

    pub fn configs(&self) -> &[ServiceConfig] {
        &self.configs
    }

    pub fn states(&self) -> &[ServiceState] {
        &self.states
    }

    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Asks for a shutdown; the first request wins.
    pub fn request(&mut self, kind: Shutdown) {
        if !self.stopping {
            self.pending.get_or_insert(kind);
        }
    }

    /// Whether `name` is a service.
    pub fn has_service(&self, name: &str) -> bool {
        self.configs.iter().any(|c| c.name == name)
    }

    /// Takes `env` from `new` (the same services, a node config applied)
    /// for the services that have not started yet, and stops for good the
    /// ones it disables.
    pub fn override_waiting(&mut self, new: Vec<ServiceConfig>) {
        for n in new {
            let Some(i) = self.configs.iter().position(|c| c.name == n.name) else {
                continue;
            };
            if self.states[i].attempted {
                continue;
            }
            self.configs[i].env = n.env;
            if !n.enabled {
                let _ = self.command(Command::Stop, &n.name);
            }
        }
    }

    /// `cairnctl start|stop|restart NAME`.
    pub fn command(&mut self, cmd: Command, n: &str) -> Result<(), String> {
        if self.stopping {
            return Err("shutting down".into());
        }
        let i = self
            .configs
            .iter()
            .position(|c| c.name == n)
            .ok_or_else(|| format!("no service {n}"))?;
        let state = self.states[i].state;
        match cmd {
            Command::Stop => {
                info!("cairnctl: stop {n}");
                match state {
                    State::Running { .. } => self.begin_stop(i, AfterStop::Stay),
                    State::Restarting { .. } | State::Waiting => {
                        self.states[i].attempted = true;
                        self.states[i].state =
                            State::Stopped(self.states[i].last_exit.unwrap_or(Exit::Signal(15)));
                    }
                    _ => {}
                }
            }
            Command::Start => {
                info!("cairnctl: start {n}");
                match state {
                    State::Stopped(_) | State::Failed(_) | State::Restarting { .. } => {
                        self.states[i].backoff.reset();
                        self.start(i);
                    }
                    State::Waiting => return Err(format!("{n} is waiting for its after list")),
                    _ => {}
                }
            }
            Command::Restart => {
                info!("cairnctl: restart {n}");
                match state {
                    State::Running { .. } => self.begin_stop(i, AfterStop::Restart),
                    State::Stopping {
                        pid,
                        since,
                        deadline,
                        ..
                    } => {
                        self.states[i].state = State::Stopping {
                            pid,
                            since,
                            deadline,
                            then: AfterStop::Restart,
                        }
                    }
                    State::Waiting => return Err(format!("{n} is waiting for its after list")),
                    _ => {
                        self.states[i].backoff.reset();
                        self.start(i);
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the pending shutdown request, if any.
    pub fn take_pending(&mut self) -> Option<Shutdown> {
        self.pending.take()
    }

    /// Whether `ready` was logged (every startable service had its first
    /// start), or there is nothing to get ready (idle).
    pub fn is_ready(&self) -> bool {
        self.ready_logged || !self.announce_ready
    }

    /// One row per service for the status screen and `cairnctl status`.
    pub fn rows(&self) -> Vec<ServiceRow> {
        self.configs
            .iter()
            .zip(&self.states)
            .map(|(c, s)| ServiceRow {
                name: c.name.clone(),
                state: s.state.word(),
                pid: s.state.pid().map(|p| p.as_raw_nonzero().get()),
                restarts: s.restarts(),
                last_exit: s.last_exit.map(|e| e.to_string()),
            })
            .collect()
    }

    /// Output pipes the event loop does not watch yet.
    pub fn unwatched_outputs(&mut self) -> impl Iterator<Item = &mut Output> {
        self.outputs.iter_mut().filter(|o| o.token.is_none())
    }

    /// Reads the output pipe watched as `token` (within its budget).
    /// Returns the pipe once it is closed, for the caller to deregister.
    pub fn read_output(&mut self, token: Token) -> Option<Output> {
        let j = self.outputs.iter().position(|o| o.token == Some(token))?;
        self.read_output_at(j, READ_BUDGET)
    }

    fn read_output_at(&mut self, j: usize, budget: usize) -> Option<Output> {
        let o = self.outputs.get_mut(j)?;
        let st = self.states.get_mut(o.service)?;
        let name = self.configs.get(o.service).map_or("?", |c| c.name.as_str());
        match o.read(name, &mut st.limit, budget) {
            ReadOutcome::Open => None,
            ReadOutcome::Closed => Some(self.outputs.remove(j)),
        }
    }

    /// Reads what service `i`'s pipes hold now, within one budget each: a
    /// process of the service that lives on and keeps writing is read on
    /// later turns. Closed pipes are returned for the caller to deregister.
    fn drain_outputs(&mut self, i: usize) {
        let mut j = 0;
        while j < self.outputs.len() {
            if self.outputs[j].service == i {
                if let Some(closed) = self.read_output_at(j, READ_BUDGET) {
                    self.closed.push(closed);
                    continue;
                }
            }
            j += 1;
        }
    }

    /// Pipes closed outside [`Supervisor::read_output`] (while reaping),
    /// for the caller to deregister.
    pub fn take_closed(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.closed)
    }

    /// Deadlines passed: SIGKILL for services that did not stop in time,
    /// starts and restarts that are due.
    pub fn on_time(&mut self) {
        self.check_stop_deadlines();
        self.start_due();
    }

    /// Shutdown begins: nothing starts any more. Returns the services to
    /// stop, in reverse start order, then those being stopped by request
    /// or never in the start order.
    pub fn begin_shutdown(&mut self) -> Vec<usize> {
        self.stopping = true;
        self.pending = None;
        let mut order = self.stop_order();
        for (i, _) in self.running() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order
    }

    /// Stops service `i` for shutdown: SIGTERM if it runs. Returns its
    /// name when there is an end to wait for.
    pub fn stop_for_shutdown(&mut self, i: usize) -> Option<&str> {
        match self.states[i].state {
            State::Running { .. } => self.begin_stop(i, AfterStop::Stay),
            State::Stopping { .. } => {}
            State::Restarting { .. } | State::Waiting => {
                self.states[i].state = State::Stopped(Exit::Code(0));
                return None;
            }
            _ => return None,
        }
        Some(&self.configs[i].name)
    }

    /// Whether service `i` has no process left to wait for.
    pub fn is_down(&self, i: usize) -> bool {
        self.states[i].state.pid().is_none()
    }

    /// SIGTERM to service `i`'s group; SIGKILL after its stop timeout.
    pub fn begin_stop(&mut self, i: usize, then: AfterStop) {
        if let State::Running { pid, since } = self.states[i].state {
            let timeout = Duration::from_millis(self.configs[i].run.stop_timeout_ms);
            self.states[i].state = State::Stopping {
                pid,
                since,
                deadline: Instant::now() + timeout,
                then,
            };
            debug!("stopping service {}", self.configs[i].name);
            signal_group(pid, Signal::TERM);
            if let Some(cg) = &self.states[i].cgroup {
                cg.signal(Signal::TERM);
            }
        }
    }

    /// SIGKILL to services whose stop timeout passed.
    fn check_stop_deadlines(&mut self) {
        let now = Instant::now();
        for i in 0..self.states.len() {
            if let State::Stopping {
                pid,
                since,
                deadline,
                then,
            } = self.states[i].state
            {
                if deadline <= now {
                    info!(
                        "service {} did not stop within {}ms; killing it with SIGKILL",
                        self.configs[i].name, self.configs[i].run.stop_timeout_ms
                    );
                    self.kill_service(i, pid);
                    // Once is enough: the reaper takes it from here (and
                    // a `restart` still starts it again).
                    self.states[i].state = State::Stopping {
                        pid,
                        since,
                        deadline: now + Duration::from_secs(3600),
                        then,
                    };
                }
            }
        }
    }

    fn kill_service(&self, i: usize, pid: Pid) {
        if let Some(cg) = &self.states[i].cgroup {
            cg.kill();
        }
        signal_group(pid, Signal::KILL);
    }

    /// SIGKILL to what is left of service `i` once its main process `pid`
    /// has been reaped: its cgroup and its process group. Only the group:
    /// the pid itself may already belong to someone else.
    fn kill_remains(&self, i: usize, pid: Pid) {
        if let Some(cg) = &self.states[i].cgroup {
            cg.kill();
        }
        if rustix::process::kill_process_group(pid, Signal::KILL).is_ok() {
            info!(
                "service {}: killed what was left of its process group",
                self.configs[i].name
            );
        }
    }

    /// Starts services whose turn has come: first starts in `after` order,
    /// then restarts whose delay has passed. Logs `ready` once every
    /// startable service has had its first start.
    pub fn start_due(&mut self) {
        if self.stopping {
            return;
        }
        loop {
            let attempted: Vec<bool> = self.states.iter().map(|s| s.attempted).collect();
            match order::next_startable(&self.configs, &attempted, &targets::is_reached) {
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
        // The kernel log's clock drifts from CLOCK_BOOTTIME until the
        // kernel refines its TSC calibration: measure again for this line.
        if let Some(ns) = crate::log::calibrate_kernel_clock() {
            debug!("{}", crate::log::kernel_clock_note(ns));
        }
        let failed = startable().filter(|&i| self.states[i].starts == 0).count();
        let rss = crate::procfs::init_rss_kib();
        // PID 1 only (the start mark is set there): the whole boot, firmware
        // and kernel decompression included, for `cargo xtask bench`.
        let power_on = crate::tsc::since_power_on(crate::log::now())
            .map(|t| format!("; {:.6} s since power-on by the TSC", t.as_secs_f64()))
            .unwrap_or_default();
        if failed == 0 {
            info!("ready (init RSS {rss} KiB{power_on})");
        } else {
            info!(
                "ready ({failed} of {} services failed to start; init RSS {rss} KiB{power_on})",
                self.configs.len()
            );
        }
    }

    fn start(&mut self, i: usize) {
        if !self.states[i].attempted {
            self.start_order.push(i);
        }
        self.states[i].attempted = true;
        let cfg = &self.configs[i];
        let mut procs = None;
        if self.use_cgroups && self.states[i].cgroup.is_none() {
            match Cgroup::create(
                &cfg.name,
                cfg.run.memory_max,
                Some(crate::cgroup::pids_max(cfg)),
            ) {
                Ok((cg, fd)) => {
                    self.states[i].cgroup = Some(cg);
                    procs = Some(fd);
                }
                Err(e) => warn!("service {}: {e}", cfg.name),
            }
        } else if let Some(cg) = &self.states[i].cgroup {
            match Cgroup::create(
                &cfg.name,
                cfg.run.memory_max,
                Some(crate::cgroup::pids_max(cfg)),
            ) {
                Ok((_, fd)) => procs = Some(fd),
                Err(e) => warn!("service {}: {e} ({})", cfg.name, cg.path.display()),
            }
        }
        match spawn::spawn(cfg, &self.accounts, procs) {
            Ok(sp) => {
                info!(
                    "service {} started (pid {})",
                    cfg.name,
                    sp.pid.as_raw_nonzero()
                );
                self.outputs.push(Output::new(i, sp.output));
                let st = &mut self.states[i];
                st.starts += 1;
                st.state = State::Running {
                    pid: sp.pid,
                    since: Instant::now(),
                };
            }
            Err(e) => {
                info!("{e}");
                self.on_end(i, Exit::SpawnFailed, Duration::ZERO);
            }
        }
    }

    /// Reaps every child that has ended, services and orphans alike; the
    /// children that are not services (the break-glass shell, orphans)
    /// are added to `others`. Returns whether children remain.
    pub fn reap(&mut self, others: &mut Vec<(Pid, Exit)>) -> bool {
        loop {
            // `wait` is waitpid(-1): any child.
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    if let Some(other) = self.on_reaped(pid, status) {
                        others.push(other);
                    }
                }
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

    fn on_reaped(&mut self, pid: Pid, status: WaitStatus) -> Option<(Pid, Exit)> {
        let exit = exit_of(status);
        let found = self.states.iter().position(|s| s.state.pid() == Some(pid));
        match found {
            Some(i) => {
                // What it wrote before it ended comes first in the log, and
                // is not lost if its end powers the machine off.
                self.drain_outputs(i);
                let (since, then) = match self.states[i].state {
                    State::Running { since, .. } => (since, None),
                    State::Stopping { since, then, .. } => (since, Some(then)),
                    _ => (Instant::now(), None),
                };
                let ran = since.elapsed();
                self.states[i].last_exit = Some(exit);
                match then {
                    Some(then) => {
                        // The rest of its group and cgroup had SIGTERM
                        // with it: whatever is still there is killed now.
                        self.kill_remains(i, pid);
                        info!("service {} stopped ({exit})", self.configs[i].name);
                        self.states[i].state = State::Stopped(exit);
                        if then == AfterStop::Restart && !self.stopping {
                            self.states[i].backoff.reset();
                            self.start(i);
                        }
                    }
                    None => {
                        info!("service {} exited ({exit})", self.configs[i].name);
                        self.on_end(i, exit, ran);
                    }
                }
            }
            None => return Some((pid, exit)),
        }
        None
    }

    /// A run of service `i` is over: restart it or stop it for good, and
    /// then honour its `on_exit`.
    fn on_end(&mut self, i: usize, exit: Exit, ran: Duration) {
        self.states[i].last_exit = Some(exit);
        if self.stopping {
            self.states[i].state = State::Stopped(exit);
            return;
        }
        let cfg = &self.configs[i];
        let st = &mut self.states[i];
        match policy::decide(cfg.restart, exit, ran, st.backoff.as_mut()) {
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
            Decision::GiveUp => {
                crate::log::record(
                    Level::Error,
                    "cairn",
                    &format!(
                        "service {} failed: {} quick restarts in a row; giving up",
                        cfg.name, cfg.run.restart_limit
                    ),
                    None,
                );
                st.state = State::Failed(exit);
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

    /// The next restart or stop timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.states
            .iter()
            .filter_map(|s| match s.state {
                // Nothing starts once a shutdown began.
                State::Restarting { at } if !self.stopping => Some(at),
                State::Stopping { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Pids (= process group ids) of running services.
    pub fn running(&self) -> Vec<(usize, Pid)> {
        self.states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.state.pid().map(|p| (i, p)))
            .collect()
    }

    /// Service indices in reverse start order (for shutdown).
    pub fn stop_order(&self) -> Vec<usize> {
        self.start_order.iter().rev().copied().collect()
    }
}

fn exit_of(status: WaitStatus) -> Exit {
    if let Some(code) = status.exit_status() {
        Exit::Code(code)
    } else if let Some(sig) = status.terminating_signal() {
        Exit::Signal(sig)
    } else {
        Exit::Code(-1)
    }
}

/// Signals a service's process group (its pid, thanks to `setsid`); if the
/// group is gone, the process itself.
pub fn signal_group(pid: Pid, sig: Signal) {
    if rustix::process::kill_process_group(pid, sig) == Err(Errno::SRCH) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::{waitid, WaitId, WaitIdOptions};

    /// A service that writes and ends before the loop reads its pipe: the
    /// line is logged when it is reaped, before its end is acted on.
    #[test]
    fn output_written_before_the_end_is_logged_when_reaped() {
        let cfg: ServiceConfig = serde_json::from_str(
            r#"{"name": "last-words", "exec": ["/bin/sh", "-c", "echo said before the end"],
                "on_exit": "poweroff"}"#,
        )
        .unwrap();
        let mut s = Supervisor::new(vec![cfg]);
        // No other test shrinks the ring meanwhile.
        let _settings = crate::log::test_settings();
        let before = crate::log::last_seq();
        s.start(0);
        let pid = s.running()[0].1;
        // Wait until it has ended, leaving it for `reap` (no poll ran).
        waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        )
        .unwrap();
        s.reap(&mut Vec::new());
        let said: Vec<String> = crate::log::since(before, Some("last-words"))
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(said, ["said before the end"]);
        assert_eq!(s.pending, Some(Shutdown::Poweroff));
    }
}

//! Service supervision: start in order, reap, restart, and turn a service's
//! end or a signal into a shutdown request.
//!
//! The [`Supervisor`] is driven one [`Supervisor::step`] at a time (one unit
//! of work: start what is due, wait for an event, handle it) so the caller
//! can catch a panic per step and keep PID 1 alive.
//!
//! Each service runs in its own session (`setsid`), so its process group id
//! is its pid, and (PID 1 with cgroup v2) in its own cgroup; see [`spawn`]
//! for credentials, limits and capabilities. Stdin is `/dev/null`; stdout
//! and stderr go through a pipe into the log, line by line.
//!
//! One step waits with `poll(2)` on: the signalfd, the service output
//! pipes, the control socket and its clients ([`crate::ctl`]), `/dev/kmsg`,
//! the ACPI power button ([`crate::power`]) and the console (the status
//! screen, [`crate::status`]).
//!
//! When a run ends (including an exec that fails, which counts as an
//! unsuccessful run) the restart policy decides ([`policy`]): `always`
//! restarts, `on-failure` restarts unless it exited with status 0, `never`
//! does not; restarts back off exponentially and after `restart_limit`
//! quick failures the service is `failed`. Once the decision is not to
//! restart, the service's `on_exit` (`poweroff` / `reboot`) becomes a
//! shutdown request (so with `restart = "always"` it never fires).

pub mod order;
pub mod policy;
pub mod shutdown;
pub mod spawn;

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use cairn_manifest::{ExitAction, Level, ServiceConfig};
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use crate::accounts::Accounts;
use crate::cgroup::Cgroup;
use crate::log::LineBuf;
use crate::signals::{self, SignalAction, Waiter};
use crate::{ctl, debug, info, power, status, targets, warn};
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
}

impl ServiceState {
    /// Restarts so far (starts after the first).
    pub fn restarts(&self) -> u32 {
        self.starts.saturating_sub(1)
    }
}

struct Output {
    service: usize,
    fd: OwnedFd,
    buf: LineBuf,
}

/// What one poll entry is.
#[derive(Clone, Copy)]
enum Src {
    Signals,
    Output(usize),
    Listener,
    Client(usize),
    Kmsg,
    Power,
    Console,
    /// A socket of another subsystem (see `signals::set_extra`).
    Extra,
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
    pub(crate) ctl: Option<ctl::Server>,
    kmsg: Option<OwnedFd>,
    power: Option<OwnedFd>,
    /// The power button is looked for once ready is logged, or at this
    /// moment if ready takes longer (see [`Supervisor::watch_power`]).
    power_due: Option<Instant>,
    console: Option<OwnedFd>,
    screen: status::Screen,
    shell: crate::shell::Shell,
    /// `cairn.test_panic`: panic once inside a step (test hook).
    test_panic: bool,
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
            ctl: None,
            kmsg: None,
            power: None,
            power_due: None,
            console: None,
            screen: status::Screen::default(),
            shell: crate::shell::Shell::default(),
            test_panic: false,
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

    /// Event sources besides signals and service output.
    pub fn set_sources(
        &mut self,
        ctl: Option<ctl::Server>,
        kmsg: Option<OwnedFd>,
        console: Option<OwnedFd>,
    ) {
        self.ctl = ctl;
        self.kmsg = kmsg;
        self.console = console;
    }

    /// Looks for the ACPI power button once ready is logged (finding it
    /// reads sysfs and is not on the way to ready; every service's output
    /// is read after that), or after `at_most` if ready takes longer (a
    /// slow network): a press while the appliance waits is never lost.
    pub fn watch_power(&mut self, at_most: Duration) {
        self.power_due = Some(Instant::now() + at_most);
        if !self.announce_ready {
            self.open_power();
        }
    }

    fn open_power(&mut self) {
        if self.power_due.take().is_none() {
            return;
        }
        self.power = power::open().map(|(p, fd)| {
            debug!("watching {} (Power Button)", p.display());
            fd
        });
    }

    /// The break-glass shell (`[shell]`); `None`: off.
    pub fn set_shell(&mut self, cfg: Option<cairn_manifest::ShellConfig>) {
        self.shell = crate::shell::Shell::new(cfg);
    }

    /// Arms the test hook: the next step panics once.
    pub fn arm_test_panic(&mut self) {
        self.test_panic = true;
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

    /// One unit of work: start what is due, wait for an event or the next
    /// deadline, handle it, reap. Returns a shutdown request once there is
    /// one.
    pub fn step(&mut self, waiter: &Waiter) -> Option<Shutdown> {
        self.start_due();
        if let Some(r) = self.pending.take() {
            return Some(r);
        }
        if self.test_panic && self.ready_logged {
            self.test_panic = false;
            panic!("test panic requested by cairn.test_panic");
        }
        if self.power_due.is_some_and(|at| at <= Instant::now()) {
            self.open_power();
        }
        let timeout = self
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()));
        self.poll_events(waiter, timeout);
        self.shell.tick(self.console.as_ref());
        self.reap();
        self.check_stop_deadlines();
        self.start_due();
        self.pending.take()
    }

    /// Waits up to `timeout` (`None`: until something happens) for any
    /// event source and handles what is ready.
    pub fn poll_events(&mut self, waiter: &Waiter, timeout: Option<Duration>) {
        let Some(sigfd) = waiter.fd() else {
            // Degraded mode without a signalfd: sleep, then drain pipes.
            let _ = waiter.wait(timeout.map(|t| t.min(Duration::from_millis(200))));
            for i in 0..self.outputs.len() {
                self.read_output(i);
            }
            self.outputs.retain(|o| o.service != usize::MAX);
            return;
        };
        let mut srcs = vec![Src::Signals];
        let mut fds = vec![PollFd::new(&sigfd, PollFlags::IN)];
        for (i, o) in self.outputs.iter().enumerate() {
            srcs.push(Src::Output(i));
            fds.push(PollFd::new(&o.fd, PollFlags::IN));
        }
        if let Some(c) = &self.ctl {
            srcs.push(Src::Listener);
            fds.push(PollFd::new(c.listener(), PollFlags::IN));
            for (i, fd) in c.client_fds().into_iter().enumerate() {
                srcs.push(Src::Client(i));
                fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            }
        }
        // The kernel's boot messages wait in its ring until the services
        // are up: copying them is not on the way to ready.
        if let Some(k) = self
            .kmsg
            .as_ref()
            .filter(|_| self.ready_logged || !self.announce_ready)
        {
            srcs.push(Src::Kmsg);
            fds.push(PollFd::new(k, PollFlags::IN));
        }
        if let Some(p) = &self.power {
            srcs.push(Src::Power);
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        if let Some(c) = self.console.as_ref().filter(|_| self.shell.reads_console()) {
            srcs.push(Src::Console);
            fds.push(PollFd::new(c, PollFlags::IN));
        }
        // Sockets and the next timer of other subsystems (networking): they
        // only wake the loop; their owners do the work after the step.
        let extra = signals::extra_fds();
        for fd in &extra {
            srcs.push(Src::Extra);
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        let timeout = signals::with_extra_deadline(timeout);
        let ts = timeout.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => {
                info!("poll failed: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let ready: Vec<(Src, PollFlags)> = srcs
            .iter()
            .zip(fds.iter())
            .map(|(s, f)| (*s, f.revents()))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(fds);
        let mut clients = Vec::new();
        for (src, _) in ready {
            match src {
                Src::Signals => self.handle_signals(waiter),
                Src::Output(i) => self.read_output(i),
                Src::Listener => {
                    if let Some(c) = &mut self.ctl {
                        c.accept();
                    }
                }
                Src::Client(i) => clients.push(i),
                Src::Kmsg => self.read_kmsg(),
                Src::Power => {
                    if let Some(fd) = &self.power {
                        match power::read_pressed(fd) {
                            Ok(true) => {
                                info!("power button pressed: power off");
                                self.request(Shutdown::Poweroff);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                info!("power button: {e}; no longer watched");
                                self.power = None;
                            }
                        }
                    }
                }
                Src::Console => self.read_console(),
                Src::Extra => {}
            }
        }
        self.outputs.retain(|o| o.service != usize::MAX);
        if !clients.is_empty() {
            let reqs = match &mut self.ctl {
                Some(c) => c.read_clients(&clients),
                None => Vec::new(),
            };
            for (client, req) in reqs {
                let reply = self.handle_request(req);
                if let Some(c) = &mut self.ctl {
                    c.reply(client, reply);
                }
            }
        }
        if let Some(c) = &mut self.ctl {
            c.finish_round();
        }
    }

    fn handle_signals(&mut self, waiter: &Waiter) {
        let sigs = match waiter.wait(Some(Duration::ZERO)) {
            Ok(s) => s,
            Err(e) => {
                info!("{e}");
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

    fn read_output(&mut self, i: usize) {
        let Some(o) = self.outputs.get_mut(i) else {
            return;
        };
        let name = self
            .configs
            .get(o.service)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(&o.fd, &mut buf) {
                Ok(0) => {
                    if let Some(rest) = o.buf.rest() {
                        crate::log::record(Level::Info, &name, &rest, None);
                    }
                    o.service = usize::MAX; // closed: removed after the round
                    return;
                }
                Ok(n) => {
                    for line in o.buf.feed(&buf[..n]) {
                        crate::log::record(Level::Info, &name, &line, None);
                    }
                    if n < buf.len() {
                        return;
                    }
                }
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => return,
                Err(_) => {
                    o.service = usize::MAX;
                    return;
                }
            }
        }
    }

    /// Reads whatever service `i`'s pipes hold now (without waiting).
    fn drain_outputs(&mut self, i: usize) {
        for j in 0..self.outputs.len() {
            if self.outputs[j].service == i {
                self.read_output(j);
            }
        }
        self.outputs.retain(|o| o.service != usize::MAX);
    }

    fn read_kmsg(&mut self) {
        let Some(fd) = &self.kmsg else { return };
        let mut buf = [0u8; 8192];
        for _ in 0..256 {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) | Err(Errno::AGAIN) => return,
                Ok(n) => {
                    if let Some((level, time, text)) = crate::log::parse_kmsg(&buf[..n]) {
                        crate::log::record(level, "kernel", &text, Some(time));
                    }
                }
                // Overwritten records: carry on with the next one.
                Err(Errno::PIPE) | Err(Errno::INTR) => continue,
                Err(_) => {
                    self.kmsg = None;
                    return;
                }
            }
        }
    }

    fn read_console(&mut self) {
        let Some(fd) = &self.console else { return };
        let mut buf = [0u8; 256];
        match rustix::io::read(fd, &mut buf) {
            Ok(0) | Err(Errno::BADF) | Err(Errno::IO) => self.console = None,
            Ok(n) => {
                let input = buf[..n].to_vec();
                if self.shell.active() {
                    if let Some(fd) = &self.console {
                        self.shell.input(&input, fd);
                    }
                    return;
                }
                let screen = status::render(self);
                let shell = self.shell.enabled();
                if let Some(rest) = self.screen.input(&input, &screen, shell) {
                    if let Some(fd) = &self.console {
                        self.shell.begin(fd);
                        self.shell.input(&input[rest..], fd);
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// Handles one control request.
    fn handle_request(&mut self, req: ctl::Request) -> ctl::Reply {
        use ctl::{Reply, Request};
        let find = |s: &Self, n: &str| s.configs.iter().position(|c| c.name == n);
        match req {
            Request::Status { json } => Reply::ok(if json {
                status::json(self)
            } else {
                status::render(self)
            }),
            Request::Logs { follow, service } => {
                if let Some(n) = &service {
                    if find(self, n).is_none() && n != "cairn" && n != "kernel" {
                        return Reply::err(format!("no service {n}"));
                    }
                }
                Reply::Logs { follow, service }
            }
            Request::Poweroff | Request::Reboot if self.stopping => {
                Reply::err("already shutting down".into())
            }
            Request::Poweroff => {
                info!("cairnctl: power off");
                self.request(Shutdown::Poweroff);
                Reply::ok(String::new())
            }
            Request::Reboot => {
                info!("cairnctl: reboot");
                self.request(Shutdown::Reboot);
                Reply::ok(String::new())
            }
            Request::Stop(n) | Request::Start(n) | Request::Restart(n) if self.stopping => {
                let _ = n;
                Reply::err("shutting down".into())
            }
            Request::Stop(n) => match find(self, &n) {
                None => Reply::err(format!("no service {n}")),
                Some(i) => {
                    info!("cairnctl: stop {n}");
                    match self.states[i].state {
                        State::Running { .. } => self.begin_stop(i, AfterStop::Stay),
                        State::Restarting { .. } | State::Waiting => {
                            self.states[i].attempted = true;
                            self.states[i].state = State::Stopped(
                                self.states[i].last_exit.unwrap_or(Exit::Signal(15)),
                            );
                        }
                        _ => {}
                    }
                    Reply::ok(String::new())
                }
            },
            Request::Start(n) => match find(self, &n) {
                None => Reply::err(format!("no service {n}")),
                Some(i) => {
                    info!("cairnctl: start {n}");
                    match self.states[i].state {
                        State::Stopped(_) | State::Failed(_) | State::Restarting { .. } => {
                            self.states[i].backoff.reset();
                            self.start(i);
                            Reply::ok(String::new())
                        }
                        State::Waiting => Reply::err(format!("{n} is waiting for its after list")),
                        _ => Reply::ok(String::new()),
                    }
                }
            },
            Request::Restart(n) => match find(self, &n) {
                None => Reply::err(format!("no service {n}")),
                Some(i) => {
                    info!("cairnctl: restart {n}");
                    match self.states[i].state {
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
                        State::Waiting => {
                            return Reply::err(format!("{n} is waiting for its after list"))
                        }
                        _ => {
                            self.states[i].backoff.reset();
                            self.start(i);
                        }
                    }
                    Reply::ok(String::new())
                }
            },
        }
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
    fn start_due(&mut self) {
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
        let rss = crate::status::init_rss_kib();
        if failed == 0 {
            info!("ready (init RSS {rss} KiB)");
        } else {
            info!(
                "ready ({failed} of {} services failed to start; init RSS {rss} KiB)",
                self.configs.len()
            );
        }
        self.open_power();
    }

    fn start(&mut self, i: usize) {
        if !self.states[i].attempted {
            self.start_order.push(i);
        }
        self.states[i].attempted = true;
        let cfg = &self.configs[i];
        let mut procs = None;
        if self.use_cgroups && self.states[i].cgroup.is_none() {
            match Cgroup::create(&cfg.name, cfg.run.memory_max, cfg.run.pids_max) {
                Ok((cg, fd)) => {
                    self.states[i].cgroup = Some(cg);
                    procs = Some(fd);
                }
                Err(e) => warn!("service {}: {e}", cfg.name),
            }
        } else if let Some(cg) = &self.states[i].cgroup {
            match Cgroup::create(&cfg.name, cfg.run.memory_max, cfg.run.pids_max) {
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
                self.outputs.push(Output {
                    service: i,
                    fd: sp.output,
                    buf: LineBuf::default(),
                });
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

    /// Reaps every child that has ended, services and orphans alike.
    /// Returns whether children remain.
    pub fn reap(&mut self) -> bool {
        loop {
            // `wait` is waitpid(-1): any child.
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
            None => {
                if !self.shell.reaped(pid, exit, self.console.as_ref()) {
                    debug!("reaped pid {} ({exit})", pid.as_raw_nonzero());
                }
            }
        }
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

    fn next_deadline(&self) -> Option<Instant> {
        self.states
            .iter()
            .filter_map(|s| match s.state {
                State::Restarting { at } => Some(at),
                State::Stopping { deadline, .. } => Some(deadline),
                _ => None,
            })
            .chain(self.shell.deadline())
            .chain(self.power_due)
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
        s.reap();
        let said: Vec<String> = crate::log::since(before, Some("last-words"))
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(said, ["said before the end"]);
        assert_eq!(s.pending, Some(Shutdown::Poweroff));
    }
}

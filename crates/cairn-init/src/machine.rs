//! The running machine: every event source of PID 1 and how each one is
//! wired to the event loop ([`crate::event`]).
//!
//! | source            | fd / deadline                      | work per call            |
//! |-------------------|------------------------------------|--------------------------|
//! | signals           | signalfd                           | all pending signals      |
//! | service output    | one pipe per run                   | 64 KiB, rate-limited     |
//! | supervisor        | restart and stop deadlines         | due starts and kills     |
//! | network           | its sockets, its next timer        | bounded per socket       |
//! | control socket    | listener, one fd per client        | 8 accepts / one read     |
//! | console           | fd 0 while the shell is not on it  | 256 bytes                |
//! | power button      | `/dev/input/eventN`                | pending events           |
//! | kernel log        | `/dev/kmsg` once ready             | 64 records               |
//!
//! [`Machine`] owns them all; each handler below does its source's share
//! and returns. After every turn [`Machine::settle`] starts what is due,
//! watches new pipes and clients and feeds `cairnctl logs -f`.

#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use cairn_manifest::{Level, PanicAction};
use rustix::io::Errno;

use crate::console::ctl::{self, Reply, Request};
use crate::console::{Console, Snapshot};
use crate::disk::MountStatus;
use crate::event::{EventLoop, Token};
use crate::net::Net;
use crate::signals::{self, SignalAction, SignalFd};
use crate::supervise::{Command, Shutdown, Supervisor};
use crate::{debug, info, power, Mode};

/// The power button is looked for once the appliance is ready, or after
/// this long if ready takes longer.
pub const POWER_BUTTON_AT_MOST: Duration = Duration::from_secs(1);
/// `/dev/kmsg` records copied per call.
const KMSG_BUDGET: usize = 64;

/// The loop of this machine.
pub type Loop = EventLoop<Machine>;

/// Everything PID 1 watches.
pub struct Machine {
    pub sup: Supervisor,
    pub mode: Mode,
    signals: Option<SignalFd>,
    net: Option<Net>,
    /// The network manager's fds the loop watches.
    net_fds: Vec<(RawFd, Token)>,
    ctl: Option<ctl::Server>,
    console: Console,
    kmsg: Option<(OwnedFd, Option<Token>)>,
    power: Option<(OwnedFd, Token)>,
    /// When to look for the power button if ready has not come yet.
    power_due: Option<Instant>,
    mounts: Vec<MountStatus>,
    on_panic: PanicAction,
    /// `cairn.test_panic`: panic once after ready (test hook).
    test_panic: bool,
    /// When that panic is due (set once ready).
    test_panic_at: Option<Instant>,
    /// Wake the loop at this moment (shutdown waits).
    pub wake: Option<Instant>,
    /// Children that were no service, reaped while nobody asked.
    pub reaped_others: u64,
}

/// What [`Machine::new`] is built from.
pub struct Parts {
    pub sup: Supervisor,
    pub mode: Mode,
    pub signals: Option<SignalFd>,
    pub net: Option<Net>,
    pub ctl: Option<ctl::Server>,
    pub console: Console,
    pub kmsg: Option<OwnedFd>,
    pub watch_power: bool,
    pub mounts: Vec<MountStatus>,
    pub on_panic: PanicAction,
    pub test_panic: bool,
}

impl Machine {
    pub fn new(p: Parts) -> Self {
        Machine {
            sup: p.sup,
            mode: p.mode,
            signals: p.signals,
            net: p.net,
            net_fds: Vec::new(),
            ctl: p.ctl,
            console: p.console,
            kmsg: p.kmsg.map(|fd| (fd, None)),
            power: None,
            power_due: p.watch_power.then(|| Instant::now() + POWER_BUTTON_AT_MOST),
            mounts: p.mounts,
            on_panic: p.on_panic,
            test_panic: p.test_panic,
            test_panic_at: None,
            wake: None,
            reaped_others: 0,
        }
    }

    /// Registers every source with `ev`.
    pub fn start(&mut self, ev: &mut Loop) {
        if let Some(s) = &self.signals {
            if let Err(e) = ev.register(s.fd(), "signals", on_signals) {
                info!("{e}; reaping every second instead");
                self.signals = None;
            }
        }
        if self.signals.is_none() {
            // Degraded: no signalfd, so no SIGCHLD; reap once a second.
            ev.timer(
                "reaper",
                |_| Some(Instant::now() + Duration::from_secs(1)),
                |m, ev, _| m.reap(ev),
            );
        }
        if let Some(c) = &self.ctl {
            if let Err(e) = ev.register(c.listener(), "control socket", on_listener) {
                info!("{e}");
                self.ctl = None;
            }
        }
        self.sync_console(ev);
        ev.timer(
            "supervisor",
            |m| m.sup.next_deadline(),
            |m, _, _| m.sup.on_time(),
        );
        ev.timer(
            "network",
            |m| m.net.as_ref()?.deadline(),
            |m, ev, _| m.net_process(ev),
        );
        ev.timer(
            "control clients",
            |m| m.ctl.as_ref()?.next_deadline(),
            |m, _, now| {
                if let Some(c) = &mut m.ctl {
                    c.expire(now);
                }
            },
        );
        ev.timer(
            "console",
            |m| m.console.deadline(),
            |m, _, _| m.console.tick(),
        );
        ev.timer("power button", |m| m.power_due, |m, ev, _| m.open_power(ev));
        ev.timer("wake", |m| m.wake, |m, _, _| m.wake = None);
        ev.timer(
            "test panic",
            |m| m.test_panic_at,
            |m, _, _| {
                m.test_panic_at = None;
                panic!("test panic requested by cairn.test_panic");
            },
        );
        self.net_sync(ev);
        self.settle(ev);
    }

    /// After each turn: start what is due, watch new output pipes and
    /// clients, act on ready, feed log followers.
    pub fn settle(&mut self, ev: &mut Loop) {
        self.sup.start_due();
        for o in self.sup.unwatched_outputs() {
            match ev.register(&o.fd, "service output", on_output) {
                Ok(t) => o.token = Some(t),
                Err(e) => info!("{e}"),
            }
        }
        for o in self.sup.take_closed() {
            if let Some(t) = o.token {
                ev.deregister(&o.fd, t);
            }
        }
        if self.sup.is_ready() {
            self.open_power(ev);
            self.watch_kmsg(ev);
            if std::mem::take(&mut self.test_panic) {
                self.test_panic_at = Some(Instant::now());
            }
        }
        if let Some(c) = &mut self.ctl {
            c.feed_followers();
            c.sync(ev, on_client);
        }
        self.sync_console(ev);
    }

    /// A shutdown asked for by a signal, a service's `on_exit`,
    /// `cairnctl` or the power button.
    pub fn take_shutdown(&mut self) -> Option<Shutdown> {
        self.sup.take_pending()
    }

    /// The state to show, made now.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.sup, &self.mounts, self.net.as_ref())
    }

    /// Reaps ended children; the shell's end goes to the console.
    pub fn reap(&mut self, _ev: &mut Loop) {
        let mut others = Vec::new();
        self.sup.reap(&mut others);
        for (pid, exit) in others {
            if !self.console.reaped(pid, exit) {
                self.reaped_others += 1;
                debug!("reaped pid {} ({exit})", pid.as_raw_nonzero());
            }
        }
    }

    /// Whether children remain (after reaping what ended).
    pub fn reap_all(&mut self) -> bool {
        let mut others = Vec::new();
        let left = self.sup.reap(&mut others);
        for (pid, exit) in others {
            self.console.reaped(pid, exit);
        }
        left
    }

    /// Stops networking (before shutdown): its sockets close.
    pub fn stop_network(&mut self, ev: &mut Loop) {
        self.net = None;
        for (_, t) in self.net_fds.drain(..) {
            ev.forget(t);
        }
    }

    fn open_power(&mut self, ev: &mut Loop) {
        if self.power_due.take().is_none() {
            return;
        }
        if let Some((path, fd)) = power::open() {
            match ev.register(&fd, "power button", on_power) {
                Ok(t) => {
                    debug!("watching {} (Power Button)", path.display());
                    self.power = Some((fd, t));
                }
                Err(e) => info!("{e}"),
            }
        }
    }

    /// The kernel's boot messages wait in its ring until the services are
    /// up: copying them is not on the way to ready.
    fn watch_kmsg(&mut self, ev: &mut Loop) {
        if let Some((fd, token @ None)) = &mut self.kmsg {
            match ev.register(&*fd, "kernel log", on_kmsg) {
                Ok(t) => *token = Some(t),
                Err(e) => {
                    info!("{e}");
                    self.kmsg = None;
                }
            }
        }
    }

    /// Watches the console while the init reads it; pauses it while the
    /// shell owns it.
    fn sync_console(&mut self, ev: &mut Loop) {
        let want = self.console.wants_input();
        match (self.console.token, self.console.fd()) {
            (None, Some(fd)) if want => match ev.register(fd, "console", on_console) {
                Ok(t) => self.console.token = Some(t),
                Err(e) => info!("{e}"),
            },
            (Some(t), Some(fd)) if !want => {
                ev.deregister(fd, t);
                self.console.token = None;
            }
            (Some(t), None) => {
                ev.forget(t);
                self.console.token = None;
            }
            _ => {}
        }
    }

    fn net_process(&mut self, ev: &mut Loop) {
        let Some(n) = self.net.as_mut() else { return };
        if n.process(Instant::now()) {
            crate::targets::reach("network-online");
        }
        self.net_sync(ev);
    }

    /// Watches the manager's current sockets: new ones are added (an fd
    /// number that was closed and reused is added again: the kernel
    /// dropped the old one from the set when it was closed), gone ones
    /// forgotten.
    fn net_sync(&mut self, ev: &mut Loop) {
        let Some(n) = &self.net else { return };
        let now: Vec<std::os::fd::BorrowedFd<'_>> = n.fds();
        let mut keep = Vec::with_capacity(now.len());
        for fd in now {
            let raw = fd.as_raw_fd();
            let old = self.net_fds.iter().position(|(r, _)| *r == raw);
            match ev.register(fd, "network", on_net) {
                Ok(t) => {
                    if let Some(i) = old {
                        ev.forget(self.net_fds.swap_remove(i).1);
                    }
                    keep.push((raw, t));
                }
                // Still watched under its old token.
                Err(crate::event::EventError::Register {
                    errno: Errno::EXIST,
                    ..
                }) => {
                    if let Some(i) = old {
                        keep.push(self.net_fds.swap_remove(i));
                    }
                }
                Err(e) => info!("{e}"),
            }
        }
        for (_, t) in self.net_fds.drain(..) {
            ev.forget(t);
        }
        self.net_fds = keep;
    }

    fn handle_request(&mut self, req: Request) -> Reply {
        match req {
            Request::Status { json } => {
                let snap = self.snapshot();
                Reply::ok(if json {
                    crate::console::status::json(&snap)
                } else {
                    crate::console::status::render(&snap)
                })
            }
            Request::Logs { follow, service } => match &service {
                Some(n) if !self.sup.has_service(n) && n != "cairn" && n != "kernel" => {
                    Reply::err(format!("no service {n}"))
                }
                _ => Reply::Logs { follow, service },
            },
            Request::Poweroff | Request::Reboot if self.sup.stopping() => {
                Reply::err("already shutting down".into())
            }
            Request::Poweroff => {
                info!("cairnctl: power off");
                self.sup.request(Shutdown::Poweroff);
                Reply::ok(String::new())
            }
            Request::Reboot => {
                info!("cairnctl: reboot");
                self.sup.request(Shutdown::Reboot);
                Reply::ok(String::new())
            }
            Request::NodeConfig { apply } => {
                match crate::config::settle_node(&mut self.sup, apply) {
                    Ok(()) => Reply::ok(String::new()),
                    Err(e) => Reply::err(e),
                }
            }
            Request::Start(n) => self.command(Command::Start, &n),
            Request::Stop(n) => self.command(Command::Stop, &n),
            Request::Restart(n) => self.command(Command::Restart, &n),
        }
    }

    fn command(&mut self, cmd: Command, name: &str) -> Reply {
        match self.sup.command(cmd, name) {
            Ok(()) => Reply::ok(String::new()),
            Err(e) => Reply::err(e),
        }
    }
}

/// A snapshot from its parts (kept apart from `Machine` so the console
/// handler can borrow them while the console itself is borrowed).
fn snapshot(sup: &Supervisor, mounts: &[MountStatus], net: Option<&Net>) -> Snapshot {
    Snapshot {
        services: sup.rows(),
        mounts: mounts.to_vec(),
        net: net.map(Net::status),
    }
}

/// What a panic in a source does: `continue` logs it and carries on,
/// `reboot` asks for a clean reboot after 5 s.
pub fn on_panic(m: &mut Machine, source: &'static str) {
    let what = match source {
        "network" => {
            // Never a busy loop on a network fault: networking stops,
            // services carry on.
            info!("network manager panicked; networking stopped");
            m.net = None;
            crate::targets::reach("network-online");
            return;
        }
        "signals" | "supervisor" | "service output" | "test panic" => "supervisor step",
        other => other,
    };
    match m.on_panic {
        PanicAction::Continue => {
            info!("{what} panicked; carrying on (on_panic = continue)");
            // Never spin on a panic that repeats every turn.
            std::thread::sleep(Duration::from_millis(100));
        }
        PanicAction::Reboot => {
            info!("{what} panicked; rebooting in 5s (on_panic = reboot)");
            std::thread::sleep(Duration::from_secs(5));
            m.sup.request(Shutdown::Reboot);
        }
    }
}

fn on_signals(m: &mut Machine, ev: &mut Loop, _: Token) {
    let sigs = match m.signals.as_ref().map(SignalFd::drain) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            info!("{e}");
            Vec::new()
        }
        None => Vec::new(),
    };
    for sig in sigs {
        debug!("received {}", signals::name(sig));
        match signals::action(sig) {
            SignalAction::Reap => m.reap(ev),
            SignalAction::Poweroff if !m.sup.stopping() => {
                info!("{} received: power off", signals::name(sig));
                m.sup.request(Shutdown::Poweroff);
            }
            SignalAction::Reboot if !m.sup.stopping() => {
                info!("{} received: reboot", signals::name(sig));
                m.sup.request(Shutdown::Reboot);
            }
            _ => {}
        }
    }
}

fn on_output(m: &mut Machine, ev: &mut Loop, t: Token) {
    if let Some(closed) = m.sup.read_output(t) {
        ev.deregister(&closed.fd, t);
    }
}

fn on_listener(m: &mut Machine, ev: &mut Loop, _: Token) {
    if let Some(c) = &mut m.ctl {
        c.accept(Instant::now());
        c.sync(ev, on_client);
    }
}

fn on_client(m: &mut Machine, ev: &mut Loop, t: Token) {
    let req = m.ctl.as_mut().and_then(|c| c.ready(t, Instant::now()));
    if let Some((t, req)) = req {
        let reply = m.handle_request(req);
        if let Some(c) = &mut m.ctl {
            c.reply(t, reply);
        }
    }
    if let Some(c) = &mut m.ctl {
        c.sync(ev, on_client);
    }
}

fn on_console(m: &mut Machine, ev: &mut Loop, _: Token) {
    let (sup, mounts, net) = (&m.sup, &m.mounts, m.net.as_ref());
    m.console.input(|| snapshot(sup, mounts, net));
    m.sync_console(ev);
}

fn on_power(m: &mut Machine, ev: &mut Loop, t: Token) {
    let Some((fd, _)) = &m.power else { return };
    match power::read_pressed(fd) {
        Ok(true) => {
            info!("power button pressed: power off");
            m.sup.request(Shutdown::Poweroff);
        }
        Ok(false) => {}
        Err(e) => {
            info!("power button: {e}; no longer watched");
            if let Some((fd, _)) = m.power.take() {
                ev.deregister(fd.as_fd(), t);
            }
        }
    }
}

fn on_kmsg(m: &mut Machine, ev: &mut Loop, t: Token) {
    let Some((fd, _)) = &m.kmsg else { return };
    let mut buf = [0u8; 8192];
    for _ in 0..KMSG_BUDGET {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) | Err(Errno::AGAIN) => return,
            Ok(n) => {
                if let Some((level, time, text)) = crate::log::parse_kmsg(&buf[..n]) {
                    crate::log::record(level, "kernel", &text, Some(time));
                    if let Some(kdev) = crate::disk::io_error_device(&text) {
                        for ms in &mut m.mounts {
                            if ms.note_io_error(kdev, &text) {
                                crate::log::record(
                                    Level::Warn,
                                    "cairn",
                                    &format!(
                                        "mount {} ({}) is failing: the kernel reports I/O errors on {kdev}: {text}",
                                        ms.path, ms.source
                                    ),
                                    None,
                                );
                            }
                        }
                    }
                }
            }
            // Overwritten records: carry on with the next one.
            Err(Errno::PIPE) | Err(Errno::INTR) => continue,
            Err(e) => {
                crate::log::record(
                    Level::Warn,
                    "cairn",
                    &format!("/dev/kmsg: {e}; kernel messages no longer copied"),
                    None,
                );
                if let Some((fd, _)) = m.kmsg.take() {
                    ev.deregister(fd.as_fd(), t);
                }
                return;
            }
        }
    }
}

fn on_net(m: &mut Machine, ev: &mut Loop, _: Token) {
    m.net_process(ev);
}

//! The init program: boot, supervise, shut down. See the crate docs for the
//! sequence and for test mode.

#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use cairn_manifest::{PanicAction, SystemConfig};
use rustix::system::RebootCommand;

use crate::boot::{self, MountOutcome, MountTable, SysMounter};
use crate::cmdline::Cmdline;
use crate::config::{config_path, load_config, CONFIG_ENV};
use crate::console::Console;
use crate::disk::MountStatus;
use crate::machine::{on_panic, Loop, Machine, Parts};
use crate::modules::{self, FinitLoader};
use crate::shutdown::{self, reboot_forever};
use crate::signals::SignalFd;
use crate::supervise::{Shutdown, Supervisor};
use crate::{debug, info, log, net, Mode};
/// Test mode only: replaces the contents of `/proc/cmdline`.
pub const CMDLINE_ENV: &str = "CAIRN_CMDLINE";

/// Reads the kernel command line and applies what init understands
/// (`cairn.debug`).
fn apply_cmdline(mode: Mode) -> Cmdline {
    // Remember it for supervisor_setup.
    let cmdline = read_cmdline(mode);
    log::set_debug(cmdline.debug());
    debug!("kernel command line: {:?}", cmdline.params);
    cmdline
}

fn read_cmdline(mode: Mode) -> Cmdline {
    if mode == Mode::Test {
        if let Ok(text) = std::env::var(CMDLINE_ENV) {
            return Cmdline::parse(&text);
        }
    }
    match std::fs::read_to_string("/proc/cmdline") {
        Ok(text) => Cmdline::parse(&text),
        Err(e) => {
            info!("cannot read /proc/cmdline: {e}");
            Cmdline::default()
        }
    }
}

/// Logs a possibly multi-line message, one timestamped line each.
fn info_lines(text: &str) {
    for line in text.lines() {
        info!("{line}");
    }
}

/// Runs one unit of work of the boot sequence, catching a panic. With
/// `on_panic = continue` a panic yields `None`; with `reboot` it waits 5 s
/// and reboots (test mode: exits with status 1).
fn unit<T>(what: &str, on_panic: PanicAction, mode: Mode, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => match on_panic {
            PanicAction::Continue => {
                info!("{what} panicked; carrying on (on_panic = continue)");
                None
            }
            PanicAction::Reboot => {
                info!("{what} panicked; rebooting in 5s (on_panic = reboot)");
                reboot_after_panic(mode)
            }
        },
    }
}

/// After a panic that leaves nothing to supervise: waits 5 s (the log line
/// before it stays readable) and reboots; test mode exits with status 1.
fn reboot_after_panic(mode: Mode) -> ! {
    std::thread::sleep(Duration::from_secs(5));
    match mode {
        Mode::Test => std::process::exit(1),
        Mode::Pid1 => reboot_forever(Shutdown::Reboot),
    }
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::log::panic_line(&format!("panic: {}", info.to_string().replace('\n', ": ")));
    }));
}

/// The sources around the supervisor: accounts, cgroups, control
/// socket, kernel log, power button, console, log file. Returns the
/// machine ready to be started.
fn machine_setup(
    mut sup: Supervisor,
    cfg: Option<&SystemConfig>,
    boot: BootState,
    cmdline: &Cmdline,
) -> Machine {
    let mode = boot.mode;
    let mut shell = cfg.and_then(|c| c.shell.clone());
    if let Some(cfg) = cfg {
        log::configure(cfg.log.lines, cfg.log.console);
        if let Some(sh) = &shell {
            use crate::console::shell::{available_kib, boot_check};
            match boot_check(&sh.password_hash, available_kib()) {
                Ok(warning) => {
                    info!("break-glass shell: type `shell` and Enter on the console");
                    if let Some(w) = warning {
                        info!("break-glass shell: {w}: attempts are refused while memory is this short");
                    }
                }
                Err(e) => {
                    info!("break-glass shell off: {e}");
                    shell = None;
                }
            }
        }
        if let Some(dir) = &cfg.log.dir {
            match log::set_log_dir(Path::new(dir)) {
                Ok(()) => info!("logging to {dir}/cairn.log"),
                Err(e) => debug!("no log file in {dir}: {e}"),
            }
        }
    }
    match crate::accounts::Accounts::load(Path::new("/")) {
        Ok(a) => sup.set_accounts(a),
        Err(e) => info!("{e}"),
    }
    let ctl =
        crate::console::ctl::socket_path(mode).and_then(
            |p| match crate::console::ctl::Server::bind(&p) {
                Ok(s) => Some(s),
                Err(e) => {
                    info!("control socket {}: {e}", p.display());
                    None
                }
            },
        );
    let (mut kmsg, mut console_fd) = (None, None);
    if mode == Mode::Pid1 {
        if crate::cgroup::available() {
            let services = cfg.map_or(&[][..], |c| &c.services[..]);
            for e in crate::cgroup::setup(&crate::cgroup::controllers(
                services,
                &crate::cgroup::available_controllers(),
            )) {
                info!("{e}");
            }
            sup.set_cgroups(true);
        }
        kmsg = rustix::fs::open(
            "/dev/kmsg",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        // The console: fd 0 (the status screen reads Enter from it).
        console_fd = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3).ok();
    }
    let hooks = mode == Mode::Test || cfg.is_some_and(|c| c.test_hooks);
    let test_panic = match test_panic_request(cmdline, hooks) {
        // Outside every per-unit guard: only the last resort in `run`
        // catches this one.
        TestPanic::Setup => panic!("test panic requested by cairn.test_panic=setup"),
        TestPanic::AfterReady => true,
        TestPanic::Ignored => {
            info!("cairn.test_panic ignored: this image does not allow test hooks (test_hooks = true in the manifest)");
            false
        }
        TestPanic::None => false,
    };
    Machine::new(Parts {
        sup,
        mode,
        signals: boot.signals,
        net: boot.net,
        ctl,
        console: Console::new(console_fd, shell),
        kmsg,
        watch_power: mode == Mode::Pid1,
        mounts: boot.mounts,
        on_panic: cfg.map_or(PanicAction::Continue, |c| c.on_panic),
        test_panic,
    })
}

/// What `cairn.test_panic` on the kernel command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestPanic {
    None,
    /// `cairn.test_panic=setup`: panic while the main loop is set up.
    Setup,
    /// `cairn.test_panic`: panic once in a supervisor step after ready.
    AfterReady,
    /// Asked for, but test hooks are off (not test mode, and the manifest
    /// has no `test_hooks = true`): nothing happens.
    Ignored,
}

/// The test panic `cmdline` asks for, given whether test hooks are on
/// (test mode, or `test_hooks = true` in the manifest). Anyone who can edit
/// the boot entry's command line must not be able to crash PID 1 in a
/// production image.
pub fn test_panic_request(cmdline: &Cmdline, hooks: bool) -> TestPanic {
    match cmdline.params.iter().find(|(k, _)| k == "cairn.test_panic") {
        None => TestPanic::None,
        Some(_) if !hooks => TestPanic::Ignored,
        Some((_, Some(v))) if v == "setup" => TestPanic::Setup,
        Some(_) => TestPanic::AfterReady,
    }
}

/// `cairn.test_hold_write=SECS` (at most 600), only with test hooks on:
/// the init holds the template's write between the synced temp file and
/// the rename, so the power-cut test can cut exactly there.
pub fn test_write_hold(cmdline: &Cmdline, hooks: bool) -> Option<std::time::Duration> {
    let secs: u64 = cmdline.get("cairn.test_hold_write")?.parse().ok()?;
    if !hooks {
        info!("cairn.test_hold_write ignored: this image does not allow test hooks");
        return None;
    }
    Some(std::time::Duration::from_secs(secs.min(600)))
}

/// What the boot sequence hands to [`machine_setup`].
struct BootState {
    mode: Mode,
    signals: Option<SignalFd>,
    net: Option<net::Net>,
    mounts: Vec<MountStatus>,
}

/// Modules and hostname (PID 1 only). Loopback comes after the network
/// manager has sent its first DHCP message, so the exchange overlaps it.
fn system_setup(cfg: &SystemConfig) {
    let report = modules::load_all(&cfg.modules, &mut FinitLoader);
    info!(
        "modules loaded ({} ok, {} failed)",
        report.ok,
        report.failed.len()
    );
    if let Some(name) = &cfg.hostname {
        match boot::set_hostname(name) {
            Ok(()) => debug!("hostname set to {name}"),
            Err(e) => info!("{e}"),
        }
    }
}

fn loopback_up() {
    match net::loopback_up() {
        Ok(()) => debug!("lo up"),
        Err(e) => info!("{e}"),
    }
}

/// PID 1's main program. Never returns: as PID 1 it ends in
/// `reboot(2)`, in test mode in `exit`. A panic that escapes the per-unit
/// guards (setting up the main loop itself) is the last resort: logged,
/// then a reboot after 5 s, since nothing could be supervised.
pub fn run() -> ! {
    let mode = Mode::detect();
    install_panic_hook();
    let _ = catch_unwind(move || {
        boot_and_supervise(mode);
    });
    info!("init panicked outside its guarded steps; rebooting in 5s");
    reboot_after_panic(mode)
}

fn boot_and_supervise(mode: Mode) -> ! {
    // Before any child exists, so no SIGCHLD is missed.
    let signals = match SignalFd::new() {
        Ok(s) => Some(s),
        Err(e) => {
            info!("{e}; falling back to reaping every second");
            None
        }
    };

    let mut clock = None;
    if mode == Mode::Pid1 {
        // Nothing to log to if this fails; it is retried after /dev exists.
        let _ = boot::ensure_console();
        log::use_kernel_clock();
        clock = log::calibrate_kernel_clock();
        crate::tsc::mark_start(log::now());
    }
    log::write_line(&format!("cairn-init {}", env!("CARGO_PKG_VERSION")));
    info!("init started");

    let mut mounts = MountTable::default();
    let cmdline;
    match mode {
        Mode::Pid1 => {
            // /proc/cmdline (and with it cairn.debug) needs /proc: mount
            // first, report after.
            let outcomes = unit("mounting", PanicAction::Continue, mode, || {
                boot::mount_all(&mut SysMounter, boot::API_MOUNTS, &mut mounts)
            });
            let console = boot::ensure_console();
            cmdline = apply_cmdline(mode);
            match clock {
                Some(ns) => debug!("{}", log::kernel_clock_note(ns)),
                None => debug!("log clock: CLOCK_BOOTTIME (no /dev/kmsg at start)"),
            }
            for (spec, outcome) in outcomes.unwrap_or_default() {
                match outcome {
                    MountOutcome::Mounted => debug!("mounted {} on {}", spec.fstype, spec.target),
                    MountOutcome::AlreadyMounted => debug!("{} already mounted", spec.target),
                    MountOutcome::Failed(e) => info!("{e}"),
                }
            }
            match console {
                Ok(true) => debug!("opened /dev/console"),
                Ok(false) => {}
                Err(e) => info!("{e}"),
            }
            // The OOM killer never picks PID 1 (needs /proc).
            if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
                info!("cannot set oom_score_adj: {e}");
            }
            // Ctrl-Alt-Del then sends SIGINT to PID 1 instead of rebooting.
            if let Err(e) = rustix::system::reboot(RebootCommand::CadOff) {
                info!("cannot disable Ctrl-Alt-Del: {e}");
            }
        }
        Mode::Test => {
            cmdline = apply_cmdline(mode);
            info!(
                "test mode (pid {}): no mounts or system changes; exit instead of power off",
                rustix::process::getpid().as_raw_nonzero()
            );
            if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
                info!("cannot become a child subreaper: {e}");
            }
        }
    }

    let path = config_path(mode, std::env::var_os(CONFIG_ENV));
    let mut network = None;
    let mut mount_status = Vec::new();
    let (sup, cfg) = match load_config(&path) {
        Ok(cfg) => {
            debug!("config {} loaded", path.display());
            let on_panic = cfg.on_panic;
            if mode == Mode::Pid1 {
                let _ = unit("system setup", on_panic, mode, || system_setup(&cfg));
            } else {
                debug!("test mode: skipping modules, hostname, lo and networking");
            }
            // Disks before any service: the `mounts` target is reached
            // once this returns. Then the secondary config on them.
            let report = match mode {
                Mode::Pid1 => unit("disks", on_panic, mode, || {
                    crate::disk::prepare(&cfg, &mut mounts)
                })
                .unwrap_or_default(),
                Mode::Test => Default::default(),
            };
            let fatal = report.fatal;
            mount_status = report.status;
            let cfg = if fatal {
                cfg
            } else {
                let primary = cfg.clone();
                let hooks = mode == Mode::Test || cfg.test_hooks;
                let hold = test_write_hold(&cmdline, hooks);
                unit("config", on_panic, mode, || {
                    crate::config::settle(cfg, &report.mounted, hold)
                })
                .unwrap_or(primary)
            };
            // Networking after the disks: the secondary config may
            // override `[[network]]` and `[net]`.
            if mode == Mode::Pid1 {
                network = unit("network setup", on_panic, mode, || {
                    net::Net::start(cfg.net.clone(), cfg.hostname.clone())
                        .map_err(|e| info!("networking not started: {e}"))
                        .ok()
                })
                .flatten();
                let _ = unit("loopback", on_panic, mode, loopback_up);
            }
            let sup = if fatal {
                Supervisor::idle()
            } else {
                Supervisor::new(cfg.services.clone())
            };
            (sup, Some(cfg))
        }
        Err(e) => {
            info_lines(&e.to_string());
            info!("no usable config: running as an idle reaper without services");
            (Supervisor::idle(), None)
        }
    };

    if network.is_some() {
        // Services with `after = ["network-online"]` wait for the manager.
        crate::targets::hold("network-online");
    }
    if cfg.as_ref().is_some_and(|c| c.netboot.is_some()) {
        // The others wait for the node config agent's word.
        crate::targets::hold(cairn_manifest::NODE_TARGET);
    }
    let boot = BootState {
        mode,
        signals,
        net: network,
        mounts: mount_status,
    };
    let mut m = machine_setup(sup, cfg.as_ref(), boot, &cmdline);
    drop(cfg);
    let mut ev = match Loop::new() {
        Ok(ev) => ev,
        // Without an epoll set there is no loop: nothing can be watched.
        Err(e) => {
            info!("{e}; rebooting in 5s");
            reboot_after_panic(mode)
        }
    };
    m.start(&mut ev);
    let kind = run_loop(&mut m, &mut ev);
    let _ = unit("shutdown", PanicAction::Continue, mode, || {
        shutdown::shutdown(&mut m, &mut ev, kind, &mut mounts)
    });
    match mode {
        Mode::Test => std::process::exit(0),
        // Only reached if shutdown panicked before rebooting.
        Mode::Pid1 => reboot_forever(kind),
    }
}

/// The main loop: turns of the event loop until a shutdown is requested
/// (or a panic asks for a reboot).
fn run_loop(m: &mut Machine, ev: &mut Loop) -> Shutdown {
    loop {
        ev.turn(m, on_panic);
        if catch_unwind(AssertUnwindSafe(|| m.settle(ev))).is_err() {
            on_panic(m, "supervisor");
        }
        if let Some(kind) = m.take_shutdown() {
            return kind;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panicking_unit_continues() {
        let r: Option<()> = unit("test unit", PanicAction::Continue, Mode::Test, || {
            panic!("boom")
        });
        assert_eq!(r, None);
        assert_eq!(
            unit("ok unit", PanicAction::Continue, Mode::Test, || 7),
            Some(7)
        );
    }

    #[test]
    fn test_panic_only_with_test_hooks() {
        let c = |t: &str| Cmdline::parse(t);
        let on = c("console=ttyS0 cairn.test_panic");
        let setup = c("cairn.test_panic=setup quiet");
        assert_eq!(test_panic_request(&on, true), TestPanic::AfterReady);
        assert_eq!(test_panic_request(&setup, true), TestPanic::Setup);
        assert_eq!(test_panic_request(&on, false), TestPanic::Ignored);
        assert_eq!(test_panic_request(&setup, false), TestPanic::Ignored);
        assert_eq!(test_panic_request(&c("quiet"), false), TestPanic::None);
        assert_eq!(test_panic_request(&c("quiet"), true), TestPanic::None);
    }

    #[test]
    fn write_hold_only_with_test_hooks_and_bounded() {
        let c = |t: &str| Cmdline::parse(t);
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            test_write_hold(&c("cairn.test_hold_write=30"), true),
            Some(secs(30))
        );
        assert_eq!(test_write_hold(&c("cairn.test_hold_write=30"), false), None);
        assert_eq!(
            test_write_hold(&c("cairn.test_hold_write=99999"), true),
            Some(secs(600))
        );
        assert_eq!(test_write_hold(&c("cairn.test_hold_write=x"), true), None);
        assert_eq!(test_write_hold(&c("quiet"), true), None);
    }
}

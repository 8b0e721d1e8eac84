//! The init program: boot, supervise, shut down. See the crate docs for the
//! sequence and for test mode.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_manifest::{PanicAction, SystemConfig, SYSTEM_CONFIG_PATH};
use rustix::system::RebootCommand;

use crate::boot::{self, MountOutcome, MountTable, SysMounter};
use crate::cmdline::Cmdline;
use crate::modules::{self, FinitLoader};
use crate::signals::Waiter;
use crate::supervise::shutdown::{self, reboot_forever};
use crate::supervise::{Shutdown, Supervisor};
use crate::{debug, info, log, net, Mode};

/// The power button is looked for once the appliance is ready, or after
/// this long if ready takes longer.
const POWER_BUTTON_AT_MOST: Duration = Duration::from_secs(1);

/// Test mode only: overrides the config path.
pub const CONFIG_ENV: &str = "CAIRN_CONFIG";
/// Test mode only: replaces the contents of `/proc/cmdline`.
pub const CMDLINE_ENV: &str = "CAIRN_CMDLINE";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid config {path}: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
}

/// Reads and parses the runtime config: JSON as the builder writes it, or
/// TOML when the file name ends in `.toml` (a hand-written config for test
/// mode).
pub fn load_config(path: &Path) -> Result<SystemConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "toml") {
        return SystemConfig::from_toml(&text).map_err(|source| ConfigError::Toml {
            path: path.into(),
            source,
        });
    }
    SystemConfig::from_json(&text).map_err(|source| ConfigError::Json {
        path: path.into(),
        source,
    })
}

/// The config path: [`SYSTEM_CONFIG_PATH`], or `overridden` (the value of
/// `$CAIRN_CONFIG`) in test mode.
pub fn config_path(mode: Mode, overridden: Option<std::ffi::OsString>) -> PathBuf {
    match (mode, overridden) {
        (Mode::Test, Some(p)) => p.into(),
        _ => SYSTEM_CONFIG_PATH.into(),
    }
}

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

/// Everything the supervisor needs besides the config: accounts, cgroups,
/// control socket, kernel log, power button, console, log file.
fn supervisor_setup(
    sup: &mut Supervisor,
    cfg: Option<&SystemConfig>,
    mode: Mode,
    cmdline: &Cmdline,
) {
    if let Some(cfg) = cfg {
        log::configure(cfg.log.lines, cfg.log.console);
        if cfg.shell.is_some() {
            info!("break-glass shell: type `shell` and Enter on the console");
        }
        sup.set_shell(cfg.shell.clone());
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
    let ctl = crate::ctl::socket_path(mode).and_then(|p| match crate::ctl::Server::bind(&p) {
        Ok(s) => Some(s),
        Err(e) => {
            info!("control socket {}: {e}", p.display());
            None
        }
    });
    let (mut kmsg, mut console) = (None, None);
    if mode == Mode::Pid1 {
        if crate::cgroup::available() {
            let services = cfg.map_or(&[][..], |c| &c.services[..]);
            for e in crate::cgroup::setup(&crate::cgroup::controllers(services)) {
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
        sup.watch_power(POWER_BUTTON_AT_MOST);
        // The console: fd 0 (the status screen reads Enter from it).
        console = rustix::io::dup(rustix::stdio::stdin()).ok();
        if let Some(c) = &console {
            let _ = rustix::io::ioctl_fionbio(c, true);
        }
    }
    sup.set_sources(ctl, kmsg, console);
    match cmdline.params.iter().find(|(k, _)| k == "cairn.test_panic") {
        // Outside every per-unit guard: only the last resort in `run`
        // catches this one.
        Some((_, Some(v))) if v == "setup" => {
            panic!("test panic requested by cairn.test_panic=setup")
        }
        Some(_) => sup.arm_test_panic(),
        None => {}
    }
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
    let waiter = Waiter::setup();
    let mut clock = None;
    if mode == Mode::Pid1 {
        // Nothing to log to if this fails; it is retried after /dev exists.
        let _ = boot::ensure_console();
        log::use_kernel_clock();
        clock = log::calibrate_kernel_clock();
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
    let (mut sup, on_panic) = match load_config(&path) {
        Ok(cfg) => {
            debug!("config {} loaded", path.display());
            let on_panic = cfg.on_panic;
            if mode == Mode::Pid1 {
                let _ = unit("system setup", on_panic, mode, || system_setup(&cfg));
            } else {
                debug!("test mode: skipping modules, hostname, lo and networking");
            }
            // Disks (mounts, secondary config) before any service: the
            // `mounts` target is reached once this returns.
            let disks = match mode {
                Mode::Pid1 => unit("disks", on_panic, mode, || {
                    crate::disk::prepare(cfg.clone(), &mut mounts)
                }),
                Mode::Test => Some(Some(crate::config2::without_disabled(cfg.clone()))),
            };
            let (cfg, fatal) = match disks {
                Some(Some(c)) => (c, false),
                Some(None) => (cfg, true),
                None => (cfg, false),
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
            let mut sup = if fatal {
                Supervisor::idle()
            } else {
                Supervisor::new(cfg.services.clone())
            };
            supervisor_setup(&mut sup, Some(&cfg), mode, &cmdline);
            (sup, on_panic)
        }
        Err(e) => {
            info_lines(&e.to_string());
            info!("no usable config: running as an idle reaper without services");
            let mut sup = Supervisor::idle();
            supervisor_setup(&mut sup, None, mode, &cmdline);
            (sup, PanicAction::Continue)
        }
    };

    if network.is_some() {
        // Services with `after = ["network-online"]` wait for the manager.
        crate::targets::hold("network-online");
    }
    let kind = supervise(&mut sup, &waiter, on_panic, &mut network);
    crate::signals::clear_extra();
    let _ = unit("shutdown", PanicAction::Continue, mode, || {
        shutdown::shutdown(&mut sup, &waiter, kind, mode, &mut mounts)
    });
    match mode {
        Mode::Test => std::process::exit(0),
        // Only reached if shutdown panicked before rebooting.
        Mode::Pid1 => reboot_forever(kind),
    }
}

/// The main loop: one supervisor step per unit of work, until a shutdown
/// is requested (or a panic asks for a reboot).
fn supervise(
    sup: &mut Supervisor,
    waiter: &Waiter,
    on_panic: PanicAction,
    network: &mut Option<net::Net>,
) -> Shutdown {
    loop {
        if let Some(n) = network.as_mut() {
            match catch_unwind(AssertUnwindSafe(|| {
                let reached = n.process(std::time::Instant::now());
                n.register();
                reached
            })) {
                Ok(true) => crate::targets::reach("network-online"),
                Ok(false) => {}
                Err(_) => {
                    // Never a busy loop on a network fault: networking stops,
                    // services carry on.
                    info!("network manager panicked; networking stopped");
                    crate::signals::clear_extra();
                    *network = None;
                    crate::targets::reach("network-online");
                }
            }
        }
        match catch_unwind(AssertUnwindSafe(|| sup.step(waiter))) {
            Ok(Some(kind)) => return kind,
            Ok(None) => {}
            Err(_) => match on_panic {
                PanicAction::Continue => {
                    info!("supervisor step panicked; carrying on (on_panic = continue)");
                    // Never spin on a panic that repeats every step.
                    std::thread::sleep(Duration::from_millis(100));
                }
                PanicAction::Reboot => {
                    info!("supervisor step panicked; rebooting in 5s (on_panic = reboot)");
                    std::thread::sleep(Duration::from_secs(5));
                    return Shutdown::Reboot;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_override_only_in_test_mode() {
        let over = || Some(std::ffi::OsString::from("/tmp/x.toml"));
        assert_eq!(
            config_path(Mode::Test, over()),
            PathBuf::from("/tmp/x.toml")
        );
        assert_eq!(
            config_path(Mode::Pid1, over()),
            PathBuf::from(SYSTEM_CONFIG_PATH)
        );
        assert_eq!(
            config_path(Mode::Test, None),
            PathBuf::from(SYSTEM_CONFIG_PATH)
        );
    }

    #[test]
    fn config_errors_name_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let e = load_config(&missing).unwrap_err().to_string();
        assert!(e.contains("none.toml"), "{e}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "name = \"x\"\n[[service]]\nname = 3\n").unwrap();
        let e = load_config(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "{e}");
        assert!(e.contains("line 3, column 8"), "{e}");

        let bad = dir.path().join("system.json");
        std::fs::write(
            &bad,
            "{\"name\": \"x\",\n\"service\": [\n  {\"name\": 3}]}\n",
        )
        .unwrap();
        let e = load_config(&bad).unwrap_err().to_string();
        assert!(e.contains("system.json"), "{e}");
        assert!(e.contains("line 3 column 12"), "{e}");
        let good = SystemConfig {
            name: "x".into(),
            ..Default::default()
        };
        std::fs::write(&bad, good.to_json()).unwrap();
        assert_eq!(load_config(&bad).unwrap(), good);
    }

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
}

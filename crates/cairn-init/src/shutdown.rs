//! Clean shutdown.
//!
//! 1. Services are stopped one at a time in reverse start order: SIGTERM
//!    to the service's process group (and cgroup), up to its
//!    `stop_timeout`, then SIGKILL to the whole cgroup and group. The event
//!    loop keeps running meanwhile: output is logged, `cairnctl` answers
//!    (`shutting down`), the console is read.
//! 2. As PID 1 only: `kill(-1, SIGTERM)` for strays, wait up to
//!    [`STRAY_GRACE`], then `kill(-1, SIGKILL)`.
//! 3. The log file is closed, `sync`, unmount what boot mounted (reverse
//!    order, lazily if busy).
//! 4. `reboot(POWER_OFF)` or `reboot(RESTART)`, retried every 5 s should
//!    the kernel refuse. In test mode the process exits instead.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use rustix::system::RebootCommand;

use crate::boot::{self, MountTable, SysMounter};
use crate::machine::{on_panic, Loop, Machine};
use crate::supervise::Shutdown;
use crate::{info, Mode};

/// How long strays get between SIGTERM and SIGKILL.
pub const STRAY_GRACE: Duration = Duration::from_secs(2);

/// Stops everything and, as PID 1, powers off or reboots (never returning).
/// In test mode it returns after the services are stopped.
pub fn shutdown(m: &mut Machine, ev: &mut Loop, kind: Shutdown, mounts: &mut MountTable) {
    let mode = m.mode;
    info!(
        "{}",
        match kind {
            Shutdown::Poweroff => "powering off",
            Shutdown::Reboot => "rebooting",
        }
    );
    m.stop_network(ev);
    stop_services(m, ev);
    if mode == Mode::Pid1 {
        kill_strays(m, ev);
    }
    info!("all services stopped; syncing and unmounting");
    crate::log::close_log_file();
    rustix::fs::sync();
    let errs = boot::unmount_all(&mut SysMounter, mounts);
    for e in &errs {
        info!("{e}");
    }
    info!("sync done, filesystems unmounted ({} errors)", errs.len());
    match mode {
        Mode::Test => info!("test mode: exiting instead of {kind}"),
        Mode::Pid1 => reboot_forever(kind),
    }
}

/// Stops running services in reverse start order, each with its own
/// timeout, then anything still running.
pub fn stop_services(m: &mut Machine, ev: &mut Loop) {
    for i in m.sup.begin_shutdown() {
        if let Some(name) = m.sup.stop_for_shutdown(i) {
            info!("stopping service {name}");
            wait_for(m, ev, |m| m.sup.is_down(i));
        }
    }
}

/// Runs the event loop until `done` or ten minutes pass (stop timeouts
/// turn into SIGKILL inside the loop).
fn wait_for(m: &mut Machine, ev: &mut Loop, done: impl Fn(&Machine) -> bool) {
    let backstop = Instant::now() + Duration::from_secs(600);
    m.reap_all();
    while !done(m) && Instant::now() < backstop {
        turn(m, ev, Duration::from_secs(1));
    }
    // Last output lines of stopped services.
    turn(m, ev, Duration::ZERO);
}

/// One turn of the loop that waits at most `at_most`.
fn turn(m: &mut Machine, ev: &mut Loop, at_most: Duration) {
    m.wake = Some(Instant::now() + at_most);
    ev.turn(m, on_panic);
    m.settle(ev);
    // A shutdown is under way: later requests are answered, not acted on.
    let _ = m.take_shutdown();
}

/// `kill(-1, …)`: every process but PID 1 and kernel threads. PID 1 only.
fn kill_strays(m: &mut Machine, ev: &mut Loop) {
    for (sig, limit) in [
        (libc::SIGTERM, STRAY_GRACE),
        (libc::SIGKILL, Duration::from_secs(1)),
    ] {
        // As PID 1, every process we may signal is what we want.
        if let Err(e) = crate::sys::signal::kill_all(sig) {
            if e.raw_os_error() == Some(libc::ESRCH) {
                return; // nobody left
            }
            info!("kill(-1, {sig}) failed: {e}");
        }
        let deadline = Instant::now() + limit;
        while m.reap_all() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            turn(m, ev, (deadline - now).min(Duration::from_millis(100)));
        }
    }
}

/// Asks the kernel to power off or reboot; never returns.
pub fn reboot_forever(kind: Shutdown) -> ! {
    let cmd = match kind {
        Shutdown::Poweroff => RebootCommand::PowerOff,
        Shutdown::Reboot => RebootCommand::Restart,
    };
    loop {
        rustix::fs::sync();
        if let Err(e) = rustix::system::reboot(cmd) {
            info!("reboot({cmd:?}) failed: {e}; retrying in 5s");
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

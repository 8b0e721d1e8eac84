//! Clean shutdown.
//!
//! 1. `SIGTERM` to every running service's process group; wait up to
//!    [`GRACE`] while reaping; `SIGKILL` to the groups still there.
//! 2. As PID 1 only: `kill(-1, SIGTERM)` for strays (daemons that left
//!    their group), wait up to [`STRAY_GRACE`], then `kill(-1, SIGKILL)`.
//! 3. `sync`, unmount what boot mounted (reverse order, lazily if busy).
//! 4. `reboot(POWER_OFF)` or `reboot(RESTART)`, retried every 5 s should
//!    the kernel refuse. In test mode the process exits instead.

use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use rustix::system::RebootCommand;

use super::{Shutdown, Supervisor};
use crate::boot::{self, MountTable, SysMounter};
use crate::signals::Waiter;
use crate::{debug, info, Mode};

/// How long services get between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
/// How long strays get between SIGTERM and SIGKILL.
pub const STRAY_GRACE: Duration = Duration::from_secs(2);

/// Stops everything and, as PID 1, powers off or reboots (never returning).
/// In test mode it returns after the services are stopped.
pub fn shutdown(
    sup: &mut Supervisor,
    waiter: &Waiter,
    kind: Shutdown,
    mode: Mode,
    mounts: &mut MountTable,
) {
    info!(
        "{}",
        match kind {
            Shutdown::Poweroff => "powering off",
            Shutdown::Reboot => "rebooting",
        }
    );
    stop_services(sup, waiter, GRACE);
    if mode == Mode::Pid1 {
        kill_strays(sup, waiter);
    }
    rustix::fs::sync();
    for e in boot::unmount_all(&mut SysMounter, mounts) {
        info!("{e}");
    }
    match mode {
        Mode::Test => info!("test mode: exiting instead of {kind}"),
        Mode::Pid1 => reboot_forever(kind),
    }
}

/// SIGTERM to every running service's group, SIGKILL after `grace`.
pub fn stop_services(sup: &mut Supervisor, waiter: &Waiter, grace: Duration) {
    sup.stopping = true;
    sup.pending = None;
    for (i, pid) in sup.running() {
        debug!("stopping service {}", sup.configs[i].name);
        signal_group(pid, Signal::TERM);
    }
    wait_for_services(sup, waiter, grace);
    let left = sup.running();
    if left.is_empty() {
        return;
    }
    for (i, pid) in left {
        info!(
            "service {} did not stop within {}s; killing it",
            sup.configs[i].name,
            grace.as_secs()
        );
        signal_group(pid, Signal::KILL);
    }
    wait_for_services(sup, waiter, Duration::from_secs(1));
}

fn wait_for_services(sup: &mut Supervisor, waiter: &Waiter, limit: Duration) {
    let deadline = Instant::now() + limit;
    sup.reap();
    while !sup.running().is_empty() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let _ = waiter.wait(Some(deadline - now));
        sup.reap();
    }
}

/// Signals a service's process group (its pid, thanks to `setsid`); if the
/// group is gone, the process itself.
fn signal_group(pid: Pid, sig: Signal) {
    if rustix::process::kill_process_group(pid, sig) == Err(Errno::SRCH) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// `kill(-1, …)`: every process but PID 1 and kernel threads. PID 1 only.
fn kill_strays(sup: &mut Supervisor, waiter: &Waiter) {
    for (sig, limit) in [
        (libc::SIGTERM, STRAY_GRACE),
        (libc::SIGKILL, Duration::from_secs(1)),
    ] {
        // SAFETY: kill has no memory-safety preconditions; pid -1 targets
        // every process we may signal, which as PID 1 is what we want.
        let rc = unsafe { libc::kill(-1, sig) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return; // nobody left
            }
            info!("kill(-1, {sig}) failed: {e}");
        }
        let deadline = Instant::now() + limit;
        while sup.reap() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = waiter.wait(Some((deadline - now).min(Duration::from_millis(100))));
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

//! Clean shutdown.
//!
//! 1. Services are stopped one at a time in reverse start order: SIGTERM
//!    to the service's process group (and cgroup), up to its
//!    `stop_timeout` while its output is still logged, then SIGKILL to the
//!    whole cgroup and group.
//! 2. As PID 1 only: `kill(-1, SIGTERM)` for strays, wait up to
//!    [`STRAY_GRACE`], then `kill(-1, SIGKILL)`.
//! 3. The log file is closed, `sync`, unmount what boot mounted (reverse
//!    order, lazily if busy).
//! 4. `reboot(POWER_OFF)` or `reboot(RESTART)`, retried every 5 s should
//!    the kernel refuse. In test mode the process exits instead.

use std::time::{Duration, Instant};

use rustix::system::RebootCommand;

use super::{AfterStop, Shutdown, State, Supervisor};
use crate::boot::{self, MountTable, SysMounter};
use crate::signals::Waiter;
use crate::{info, Mode};

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
    stop_services(sup, waiter);
    if mode == Mode::Pid1 {
        kill_strays(sup, waiter);
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
pub fn stop_services(sup: &mut Supervisor, waiter: &Waiter) {
    sup.stopping = true;
    sup.pending = None;
    let mut order = sup.stop_order();
    // Services being stopped by request, or not in the start order.
    for (i, _) in sup.running() {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    for i in order {
        match sup.states[i].state {
            State::Running { .. } => sup.begin_stop(i, AfterStop::Stay),
            State::Stopping { .. } => {}
            State::Restarting { .. } | State::Waiting => {
                sup.states[i].state = State::Stopped(super::policy::Exit::Code(0));
                continue;
            }
            _ => continue,
        }
        info!("stopping service {}", sup.configs[i].name);
        wait_for(sup, waiter, |s| s.states[i].state.pid().is_none());
    }
}

/// Runs the event loop until `done` or no deadline is left (stop timeouts
/// turn into SIGKILL inside the loop).
fn wait_for(sup: &mut Supervisor, waiter: &Waiter, done: impl Fn(&Supervisor) -> bool) {
    let backstop = Instant::now() + Duration::from_secs(600);
    sup.reap();
    while !done(sup) && Instant::now() < backstop {
        let timeout = sup
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1));
        sup.poll_events(waiter, Some(timeout.min(Duration::from_secs(1))));
        sup.reap();
        sup.check_stop_deadlines();
    }
    // Last output lines of stopped services.
    sup.poll_events(waiter, Some(Duration::ZERO));
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

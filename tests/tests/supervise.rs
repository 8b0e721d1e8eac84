//! cairn-init as PID 1 in QEMU: restart backoff and the failed state,
//! services as a non-root user with groups, cairnctl from a service, the
//! status screen on Enter, a caught panic, and a clean shutdown from the
//! ACPI power button (QMP `system_powerdown`) with services stopped in
//! reverse order.

use std::time::Duration;

use cairn_e2e::{qmp, Live};

const MANIFEST: &str = r#"
name = "sup"
hostname = "suptest"
test_hooks = true              # obey cairn.test_panic below

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1 cairn.test_panic"
modules = ["evdev", "button"]

[[binary]]
path = "/bin/busybox"

[[user]]
name = "app"
uid = 1000

[[group]]
name = "extra"
gid = 2000
members = ["app"]

[[service]]
name = "first"
exec = ["/bin/busybox", "sh", "-c", "trap 'echo first got TERM; exit 0' TERM; echo first up; while true; do /bin/busybox sleep 1; done"]

[[service]]
name = "crash"
exec = ["/bin/busybox", "sh", "-c", "read up idle < /proc/uptime; echo started-at $up; exit 3"]
restart = "on-failure"
restart_delay = "200ms"
restart_delay_max = "1s"
restart_limit = 3

[[service]]
name = "ids"
exec = ["/bin/busybox", "sh", "-c", "echo ids: $(/bin/busybox id)"]
user = "app"
groups = ["extra"]

[[service]]
name = "ctl"
after = ["first"]
exec = ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 4; /usr/bin/cairnctl status; echo CTL-DONE"]

[[service]]
name = "tick"
exec = ["/bin/busybox", "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; /bin/busybox sleep 1; done"]

[[service]]
name = "last"
after = ["ctl"]
exec = ["/bin/busybox", "sh", "-c", "trap 'echo last got TERM; exit 0' TERM; while true; do /bin/busybox sleep 1; done"]
"#;

fn pos(out: &str, needle: &str) -> usize {
    out.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{out}"))
}

#[test]
fn supervision_control_and_power_button_in_qemu() {
    let (_dir, mut live, qmp_sock) = Live::manifest_with_qmp(MANIFEST, Duration::from_secs(300));
    live.wait_for("CTL-DONE", Duration::from_secs(240));
    // The status screen on Enter; the log is held while it is shown.
    const FOOTER: &str = "[Enter: refresh, q Enter: back to the log]";
    live.send("\n");
    live.wait_for(FOOTER, Duration::from_secs(30));
    let shown = live.output().len();
    // `tick` logs a line a second: some would come now.
    std::thread::sleep(Duration::from_secs(3));
    // Enter again: a fresh screen.
    live.send("\n");
    live.wait_until(|o| o.matches(FOOTER).count() >= 2, Duration::from_secs(30));
    let screen = live.output()[shown..].to_string();
    assert!(
        !screen.contains("tick: tick"),
        "log lines while the screen was shown:\n{screen}"
    );
    assert!(
        screen.contains("MiB available of"),
        "no memory line:\n{screen}"
    );
    assert!(screen.contains("hostname: suptest"), "{screen}");
    // Back to the log: the held lines come out, none lost.
    live.send("q\n");
    live.wait_until(
        |o| o[shown..].contains("tick: tick"),
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(1));
    qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not power off:\n{o}");

    // Backoff: growing delays, then failed.
    let d1 = pos(&o, "service crash restarting in 0.200s");
    let d2 = pos(&o, "service crash restarting in 0.400s");
    let d3 = pos(&o, "service crash restarting in 0.800s");
    let failed = pos(
        &o,
        "service crash failed: 3 quick restarts in a row; giving up",
    );
    assert!(d1 < d2 && d2 < d3 && d3 < failed, "{o}");
    // ...and the service really waited that long: the times at which the
    // service itself started (its own reading of the guest's uptime, not
    // the init's words) are at least the announced delays apart.
    let starts: Vec<f64> = o
        .lines()
        .filter_map(|l| l.split_once("crash: started-at ").map(|(_, t)| t))
        .map(|t| t.trim().parse().expect("an uptime"))
        .collect();
    assert_eq!(starts.len(), 4, "a start and 3 restarts:\n{o}");
    for (i, want) in [0.2, 0.4, 0.8].into_iter().enumerate() {
        let gap = starts[i + 1] - starts[i];
        assert!(
            gap >= want,
            "restart {} came {gap:.3}s after the last start, not >= {want}s: {starts:?}",
            i + 1
        );
    }
    // Non-root user with its groups.
    let ids = &o[pos(&o, "ids: ids: ")..];
    let ids = &ids[..ids.find('\n').unwrap_or(ids.len())];
    assert!(
        ids.contains("uid=1000(app) gid=1000(app)") && ids.contains("2000(extra)"),
        "{ids}"
    );
    // cairnctl from a service shows the truth.
    let status = &o[pos(&o, "ctl: cairn status")..pos(&o, "CTL-DONE")];
    assert!(status.contains("hostname: suptest"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.contains("crash") && l.contains("failed")),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.contains("first") && l.contains("running")),
        "{status}"
    );
    assert!(
        status.contains("lo") && status.contains("127.0.0.1/8"),
        "{status}"
    );
    // The status screen on the console (raw, not a log line).
    assert!(o.matches("hostname: suptest").count() >= 2, "{o}");
    // Every tick was logged once, in order: held lines were not dropped.
    let ticks: Vec<u32> = o
        .lines()
        .filter_map(|l| {
            l.split_once("tick: tick ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .collect();
    assert!(ticks.len() > 5, "{o}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "ticks missing or repeated: {ticks:?}"
    );
    // The test panic was caught and supervision went on.
    let panic = pos(&o, "panic: ");
    assert!(panic < pos(&o, "CTL-DONE"), "{o}");
    // Power button: services stopped in reverse start order.
    let button = pos(&o, "cairn: power button pressed: power off");
    let last = pos(&o, "last: last got TERM");
    let first = pos(&o, "first: first got TERM");
    let synced = pos(&o, "cairn: sync done, filesystems unmounted");
    assert!(button < last && last < first && first < synced, "{o}");
    assert!(o.contains("reboot: Power down"), "{o}");
}

/// The power button works while the appliance still waits for ready: the
/// init looks for it at ready or at most a second after setting up its
/// services. Here ready never comes (no NIC, a service after
/// `network-online` with a long timeout) and the press still powers off.
#[test]
fn power_button_while_waiting_for_the_network() {
    let (_dir, mut live, qmp_sock) = Live::manifest_with_qmp(
        r#"
name = "waiting"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1 cairn.debug"
modules = ["evdev", "button"]

[net]
online_timeout = 600

[[binary]]
path = "/bin/busybox"

[[service]]
name = "late"
exec = ["/bin/busybox", "echo", "late started"]
after = ["network-online"]
"#,
        Duration::from_secs(300),
    );
    live.wait_for("(Power Button)", Duration::from_secs(240));
    qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not power off:\n{o}");
    let pressed = pos(&o, "power button pressed: power off");
    assert!(pos(&o, "(Power Button)") < pressed, "{o}");
    assert!(!o.contains("cairn: ready"), "ready came after all:\n{o}");
    assert!(!o.contains("late started"), "{o}");
}

//! How a cairn machine ends, in QEMU: Ctrl-Alt-Del and `cairnctl reboot`
//! reboot it cleanly, a panic in the init reboots it (`on_panic = "reboot"`
//! for a supervisor step, always for a panic outside the guarded steps),
//! and a kernel panic makes `cairn run` fail instead of exiting 0.

use std::time::Duration;

use cairn_e2e::{boot, qmp_json, Live, Outcome};

const TIMEOUT: Duration = Duration::from_secs(240);

/// A BusyBox appliance with one long-running service that reports
/// SIGTERM; `extra` is appended to the top level (before the tables),
/// `cmdline` to the kernel command line, `services` after the first one.
fn manifest(extra: &str, cmdline: &str, services: &str) -> String {
    format!(
        r#"
name = "life"
hostname = "life"
{extra}

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1 {cmdline}"

[[binary]]
path = "/bin/busybox"

[[service]]
name = "svc"
exec = ["/bin/busybox", "sh", "-c", "trap 'echo svc got TERM; exit 0' TERM; echo svc up; while true; do /bin/busybox sleep 1; done"]
{services}
"#
    )
}

fn boot_text(text: &str) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(&path, text).unwrap();
    boot(&path, &dir.path().join("out"), &["--net", "none"], TIMEOUT)
}

/// The service was stopped with SIGTERM, the disks synced, and the kernel
/// restarted the machine (QEMU's -no-reboot then ended it).
fn assert_clean_reboot(out: &str) {
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{out}"))
    };
    let order = [
        at("cairn: rebooting"),
        at("svc got TERM"),
        at("cairn: sync done"),
        at("reboot: Restarting system"),
    ];
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{out}"
    );
    assert!(!out.contains("reboot: Power down"), "{out}");
    assert!(!out.contains("Kernel panic"), "{out}");
}

#[test]
fn ctrl_alt_del_reboots_cleanly() {
    // cairn.test_panic without `test_hooks = true`: ignored, with a line
    // that says so (a production image cannot be crashed from its
    // command line).
    let (_dir, mut live, sock) =
        Live::manifest_with_qmp(&manifest("", "cairn.test_panic=setup", ""), TIMEOUT);
    live.wait_for("cairn: ready", TIMEOUT);
    live.wait_for("svc up", Duration::from_secs(60));
    qmp_json(
        &sock,
        r#"{"execute":"send-key","arguments":{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}}"#,
    );
    let (out, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not end:\n{out}");
    assert!(
        out.contains("cairn: cairn.test_panic ignored: this image does not allow test hooks"),
        "{out}"
    );
    assert!(!out.contains("panic: "), "{out}");
    assert_clean_reboot(&out);
}

#[test]
fn cairnctl_reboot_from_a_service() {
    let o = boot_text(&manifest(
        "",
        "",
        r#"
[[service]]
name = "ctl"
after = ["svc"]
exec = ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 1; /usr/bin/cairnctl reboot; /bin/busybox sleep 60"]
"#,
    ));
    o.assert_ok();
    // The request reached the init over its socket, then the reboot.
    o.assert_in_order(&["cairn: cairnctl: reboot", "cairn: rebooting"]);
    assert_clean_reboot(&o.stdout);
}

#[test]
fn a_supervisor_panic_reboots_with_on_panic_reboot() {
    // cairn.test_panic: one panic inside a supervisor step after ready.
    let o = boot_text(&manifest(
        "on_panic = \"reboot\"\ntest_hooks = true",
        "cairn.test_panic",
        "",
    ));
    o.assert_ok();
    o.assert_in_order(&[
        "cairn: ready",
        "panic: ",
        "cairn: supervisor step panicked; rebooting in 5s (on_panic = reboot)",
    ]);
    assert_clean_reboot(&o.stdout);
}

#[test]
fn a_panic_outside_the_guarded_steps_reboots() {
    // cairn.test_panic=setup panics while the main loop is being set up,
    // before any service starts: the last resort catches it.
    let o = boot_text(&manifest("test_hooks = true", "cairn.test_panic=setup", ""));
    o.assert_ok();
    o.assert_in_order(&[
        "panic: ",
        "cairn: init panicked outside its guarded steps; rebooting in 5s",
        "reboot: Restarting system",
    ]);
    assert!(!o.stdout.contains("svc up"), "{}", o.stdout);
    assert!(!o.stdout.contains("Kernel panic"), "{}", o.stdout);
}

#[test]
fn a_kernel_panic_fails_cairn_run() {
    // No init where the kernel looks: it panics, and with panic=-1 and
    // -no-reboot QEMU itself exits 0.
    let o = boot_text(&manifest("", "rdinit=/no-such-init", ""));
    assert!(
        !o.success,
        "cairn run succeeded:\n{}\n{}",
        o.stdout, o.stderr
    );
    assert!(
        o.stderr
            .contains("the guest's kernel panicked: Kernel panic - not syncing"),
        "stderr: {}",
        o.stderr
    );
    // The console still reached the terminal.
    o.assert_stdout_has("Kernel panic - not syncing");
}

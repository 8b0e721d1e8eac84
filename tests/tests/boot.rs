//! Boot the examples in QEMU (TCG) and read the serial console.

use std::time::Duration;

use cairn_e2e::{boot, example, Outcome};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// `needles` appear in stdout in this order.
fn assert_in_order(o: &Outcome, needles: &[&str]) {
    let mut from = 0;
    for n in needles {
        match o.stdout[from..].find(n) {
            Some(i) => from += i + n.len(),
            None => panic!(
                "expected {n:?} (after the previous markers) in the console\n--- stdout ---\n{}\n--- stderr ---\n{}",
                o.stdout, o.stderr
            ),
        }
    }
}

fn hello_markers() -> [&'static str; 5] {
    [
        "cairn: init started",
        "cairn: service greet started",
        "Hello from cairn!",
        "cairn: service greet exited (status 0)",
        "cairn: powering off",
    ]
}

#[test]
fn hello_direct_kernel_boot() {
    let out = tempfile::tempdir().unwrap();
    let o = boot(
        &example("hello"),
        out.path(),
        &["--net", "none", "--mem", "128M"],
        BOOT_TIMEOUT,
    );
    o.assert_ok();
    assert_in_order(&o, &hello_markers());
    o.assert_stdout_has("cairn: ready");
    // cairn-init's banner and the boot timeline with CLOCK_BOOTTIME stamps.
    o.assert_stdout_has("cairn-init ");
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with('[') && l.contains("] cairn: ready")),
        "ready line has no timestamp:\n{}",
        o.stdout
    );
}

#[test]
fn hello_uefi_boot_through_ovmf() {
    let out = tempfile::tempdir().unwrap();
    let o = boot(
        &example("hello"),
        out.path(),
        &["--uefi", "--net", "none"],
        BOOT_TIMEOUT,
    );
    o.assert_ok();
    // The firmware, not QEMU's direct kernel boot, started the UKI.
    o.assert_stdout_has("BdsDxe: starting");
    assert_in_order(&o, &hello_markers());
}

#[test]
fn jq_example_runs_a_dynamic_debian_program_and_loads_modules() {
    let out = tempfile::tempdir().unwrap();
    let o = boot(&example("jq"), out.path(), &["--net", "user"], BOOT_TIMEOUT);
    o.assert_ok();
    assert_in_order(
        &o,
        &[
            "cairn: modules loaded (",
            "cairn: service report started",
            "part kernel: 1",
            "part init: 1",
            "part services: 1",
            "cairn: powering off",
        ],
    );
    // virtio_net and its dependencies all loaded.
    assert!(o.stdout.contains(" 0 failed)"), "{}", o.stdout);
}

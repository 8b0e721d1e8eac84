//! Boot the examples in QEMU (TCG) and read the serial console.

use std::time::Duration;

use cairn_e2e::{boot, example};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

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
    o.assert_in_order(&hello_markers());
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
    o.assert_in_order(&hello_markers());
}

#[test]
fn jq_example_runs_a_dynamic_debian_program_and_loads_modules() {
    let out = tempfile::tempdir().unwrap();
    let o = boot(&example("jq"), out.path(), &["--net", "user"], BOOT_TIMEOUT);
    o.assert_ok();
    o.assert_in_order(&[
        "cairn: modules loaded (",
        "cairn: service report started",
        "part kernel: 1",
        "part init: 1",
        "part services: 1",
        "cairn: powering off",
    ]);
    // virtio_net and its dependencies all loaded.
    assert!(o.stdout.contains(" 0 failed)"), "{}", o.stdout);
}

//! Kernel modules implied by the manifest (Debian's cloud kernel): the
//! build table names each with its reason, `implied_modules = false` turns
//! them off, an explicit list still works, and an appliance that lists no
//! module at all powers off from the ACPI power button (QMP
//! `system_powerdown`).

use std::time::Duration;

use cairn_e2e::{build, qmp, Live};

const KERNEL: &str = r#"
[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"
"#;

const REST: &str = r#"
[[binary]]
path = "/bin/busybox"

[[service]]
name = "idle"
exec = ["/bin/busybox", "sh", "-c", "trap 'echo idle got TERM; exit 0' TERM; echo idle up; while true; do /bin/busybox sleep 1; done"]
after = ["mounts"]
"#;

/// Builds `manifest` in a temporary directory; returns the build table's
/// module lines as (module name, the rest of the origin).
fn module_lines(manifest: &str) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cairn.toml");
    std::fs::write(&p, manifest).unwrap();
    let o = build(&p, &dir.path().join("out"));
    o.assert_ok();
    o.stdout
        .lines()
        .filter_map(|l| l.split_once("  module "))
        .map(|(_, rest)| {
            let (name, why) = rest.split_once(' ').unwrap_or((rest, ""));
            (name.to_string(), why.trim().to_string())
        })
        .collect()
}

fn has(lines: &[(String, String)], name: &str, why: &str) -> bool {
    lines.iter().any(|(n, w)| n == name && w == why)
}

#[test]
fn build_table_says_what_implies_each_module() {
    let mounts = r#"
[[mount]]
label = "BOOT"
path = "/boot"
fs = "vfat"

[[mount]]
label = "DATA"
path = "/data"
fs = "ext4"

[[network]]
match = { name = "eth*" }
"#;
    let lines = module_lines(&format!("name = \"imp\"\n{KERNEL}{mounts}{REST}"));
    let boot = "(implied by [[mount]] /boot (vfat))";
    for (name, why) in [
        ("button", "(implied by the ACPI power button)"),
        ("evdev", "(implied by the ACPI power button)"),
        ("virtio_net", "(implied by [[network]])"),
        ("virtio_pci", "(implied by [[network]])"),
        ("virtio_blk", boot),
        ("vfat", boot),
        ("nls_cp437", boot),
        // Debian's kernels: CONFIG_FAT_DEFAULT_IOCHARSET="ascii".
        ("nls_ascii", boot),
        // Dependencies come along, without a reason of their own.
        ("virtio", ""),
        ("fat", ""),
    ] {
        assert!(has(&lines, name, why), "{name} {why}: {lines:?}");
    }
    // ext4 is built into Debian's cloud kernel: nothing to add.
    assert!(!lines.iter().any(|(n, _)| n == "ext4"), "{lines:?}");
}

#[test]
fn explicit_modules_and_switching_implied_ones_off() {
    let off = KERNEL.replace(
        "[kernel]\n",
        "[kernel]\nimplied_modules = false\nmodules = [\"virtio_pci\", \"virtio_net\"]\n",
    );
    let lines = module_lines(&format!("name = \"off\"\n{off}{REST}"));
    assert!(has(&lines, "virtio_net", ""), "{lines:?}");
    assert!(lines.iter().all(|(_, w)| w.is_empty()), "{lines:?}");
    assert!(!lines.iter().any(|(n, _)| n == "button"), "{lines:?}");
    // Listed explicitly, a module is not marked as implied.
    let listed = KERNEL.replace("[kernel]\n", "[kernel]\nmodules = [\"evdev\"]\n");
    let lines = module_lines(&format!("name = \"listed\"\n{listed}{REST}"));
    assert!(has(&lines, "evdev", ""), "{lines:?}");
    assert!(
        has(&lines, "button", "(implied by the ACPI power button)"),
        "{lines:?}"
    );
}

#[test]
fn power_button_works_without_listing_modules() {
    // cairn.debug: the init logs when it watches the button.
    let kernel = KERNEL.replace("panic=-1", "panic=-1 cairn.debug");
    let manifest = format!("name = \"button\"\n{kernel}{REST}");
    assert!(!manifest.contains("modules"));
    let (_dir, mut live, qmp_sock) = Live::manifest_with_qmp(&manifest, Duration::from_secs(300));
    live.wait_for("idle up", Duration::from_secs(240));
    live.wait_for("(Power Button)", Duration::from_secs(60));
    qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not power off:\n{o}");
    let pressed = o
        .find("power button pressed: power off")
        .unwrap_or_else(|| panic!("no power button press:\n{o}"));
    let term = o.find("idle got TERM").expect("idle stopped");
    assert!(pressed < term, "{o}");
    assert!(o.contains("reboot: Power down"), "{o}");
}

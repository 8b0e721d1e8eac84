//! arm64 appliances: the kernel, the init and the programs all for arm64,
//! built on an x86_64 host and booted on QEMU's arm64 `virt` board (TCG).
//!
//! The arm64 init comes from `cargo xtask build-init --arch arm64`
//! (`CAIRN_INIT_ARM64`); without a working arm64 toolchain these tests
//! fail, they do not skip.

use std::path::Path;
use std::time::Duration;

use cairn_e2e::{example, init_arm64_bin, run_with_timeout, Outcome};

/// Under TCG an arm64 boot is translated instruction by instruction: give
/// it plenty of time (no timing is asserted).
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

/// The ELF machine of the file at `path`.
fn elf_machine(path: &Path) -> u16 {
    let head = std::fs::read(path).unwrap();
    assert_eq!(&head[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([head[18], head[19]])
}

/// `cairn ARGS` with the arm64 init.
fn cairn_arm64(args: &[&str], manifest: &Path, out: &Path, timeout: Duration) -> Outcome {
    let mut c = cairn_e2e::cairn();
    c.env("CAIRN_INIT_ARM64", init_arm64_bin())
        .arg(args[0])
        .arg(manifest)
        .arg("-o")
        .arg(out)
        .args(&args[1..]);
    run_with_timeout(c, timeout)
}

/// examples/arm64: Debian's arm64 cloud kernel, the static aarch64 init
/// and Lua with its libraries from Debian's arm64 packages (the host is
/// x86_64 and has no arm64 packages installed). The build writes the
/// kernel, the initramfs and a UKI on systemd-stub's arm64 build (from
/// Debian's arm64 systemd-boot-efi); `cairn run` boots the kernel and
/// initramfs directly on `virt`, the init reaches ready, runs Lua, and the
/// machine powers off through PSCI with QEMU exiting cleanly.
#[test]
fn arm64_appliance_from_debian_packages_boots_on_virt() {
    let init = init_arm64_bin();
    assert_eq!(elf_machine(&init), 183, "the arm64 init is not AArch64");
    let m = example("arm64");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let built = cairn_arm64(&["build"], &m, &out, Duration::from_secs(600));
    built.assert_ok();
    let table = &built.stdout;
    let line = |path: &str| cairn_e2e::table_line(table, path);
    assert!(line("kernel").contains("cloud-arm64"), "{table}");
    assert!(
        line("/usr/bin/lua5.4").contains("package lua5.4"),
        "{table}"
    );
    for lib in [
        "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libreadline.so.8",
    ] {
        assert!(line(lib).contains(" package "), "{lib}:\n{table}");
    }
    assert!(!table.contains(" host "), "a host file went in:\n{table}");
    assert!(
        line("UEFI stub").contains("package systemd-boot-efi")
            && line("UEFI stub").contains("(arm64)"),
        "{table}"
    );
    for f in ["arm64.vmlinuz", "arm64.initrd", "arm64.efi"] {
        assert!(out.join(f).is_file(), "no {f}");
    }

    let run = cairn_arm64(
        &["run", "--accel", "tcg", "--net", "none", "--timeout", "900"],
        &m,
        &out,
        BOOT_TIMEOUT + Duration::from_secs(120),
    );
    run.assert_ok();
    run.assert_in_order(&[
        "cairn: ready",
        "hello: Hello from Lua 5.4, taken from Debian's archive",
        "cairn: powering off",
        "reboot: Power down",
    ]);
}

/// Networking on `virt`: the arm64 kernel package's virtio_pci and
/// virtio_net modules (loadable there, as on x86_64) are loaded, the NIC
/// gets a DHCPv4 lease from QEMU's user network, and the service that
/// waits for the network then runs.
#[test]
fn arm64_appliance_gets_a_dhcp_lease_on_virt() {
    let (_dir, m) = cairn_e2e::copy_example("arm64");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace(
            "cmdline = \"console=ttyAMA0 quiet panic=-1\"",
            "cmdline = \"console=ttyAMA0 quiet panic=-1\"\nmodules = [\"virtio_pci\", \"virtio_net\"]",
        )
        .replace(
            "on_exit = \"poweroff\"",
            "on_exit = \"poweroff\"\nafter = [\"network-online\"]",
        );
    assert!(text.contains("virtio_net") && text.contains("network-online"));
    std::fs::write(&m, text).unwrap();
    let out = m.parent().unwrap().join("out");
    let run = cairn_arm64(
        &["run", "--accel", "tcg", "--net", "user", "--timeout", "900"],
        &m,
        &out,
        BOOT_TIMEOUT + Duration::from_secs(120),
    );
    run.assert_ok();
    run.assert_in_order(&[
        "eth0: DHCPv4 lease obtained: 10.0.2.15/24",
        "cairn: network online",
        "hello: Hello from Lua 5.4, taken from Debian's archive",
        "reboot: Power down",
    ]);
    // The build table (on stderr) names the modules taken.
    assert!(run.stderr.contains("module virtio_net"), "{}", run.stderr);
}

/// The arm64 UKI: `cairn inspect` reads it as an arm64 PE32+ image with
/// its sections, and it boots through AAVMF (UEFI on `virt`) from a FAT
/// drive's EFI/BOOT/BOOTAA64.EFI, to ready and a clean power-off, from
/// `cairn run --uefi` and from `cairn boot NAME.efi`.
#[test]
fn arm64_uki_boots_through_aavmf() {
    let m = example("arm64");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = cairn_arm64(
        &[
            "run",
            "--uefi",
            "--accel",
            "tcg",
            "--net",
            "none",
            "--timeout",
            "900",
        ],
        &m,
        &out,
        BOOT_TIMEOUT + Duration::from_secs(120),
    );
    run.assert_ok();
    run.assert_in_order(&[
        "BdsDxe: starting",
        "cairn: ready",
        "hello: Hello from Lua 5.4, taken from Debian's archive",
        "reboot: Power down",
    ]);

    // `cairn boot` of the UKI alone picks the arm64 machine from its PE
    // header.
    let mut c = cairn_e2e::cairn();
    c.arg("boot")
        .arg(out.join("arm64.efi"))
        .args(["--net", "none", "--timeout", "900"]);
    let booted = run_with_timeout(c, BOOT_TIMEOUT + Duration::from_secs(120));
    booted.assert_ok();
    booted.assert_in_order(&["BdsDxe: starting", "cairn: ready", "reboot: Power down"]);

    let mut c = cairn_e2e::cairn();
    c.arg("inspect").arg(out.join("arm64.efi"));
    let o = run_with_timeout(c, Duration::from_secs(60));
    o.assert_ok();
    o.assert_in_order(&[
        "PE32+ image for arm64",
        ".osrel",
        ".cmdline",
        ".initrd",
        ".linux",
        "console=ttyAMA0",
        "/usr/bin/lua5.4",
    ]);
}

const ARM64_BASE: &str =
    "name = \"hello\"\narch = \"arm64\"\n[kernel]\npackage = \"linux-image-cloud-arm64\"\n";

/// A host (x86_64) program in an arm64 image is refused at its place, and
/// so is an x86_64 init.
#[test]
fn x86_64_programs_are_refused_in_an_arm64_image() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{ARM64_BASE}[[binary]]\npath = \"/usr/bin/jq\"\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = cairn_arm64(&["build"], &bad, &out, Duration::from_secs(600));
    assert!(!o.success, "accepted:\n{}", o.stdout);
    for e in [
        "bad.toml:6:8",
        "/usr/bin/jq is a program for X86_64",
        "this image is arm64",
    ] {
        assert!(o.stderr.contains(e), "expected {e:?} in:\n{}", o.stderr);
    }
    assert!(!out.join("hello.initrd").exists());

    std::fs::write(&bad, ARM64_BASE).unwrap();
    let mut c = cairn_e2e::cairn();
    c.env("CAIRN_INIT_ARM64", cairn_e2e::init_bin())
        .arg("build")
        .arg(&bad)
        .arg("-o")
        .arg(&out);
    let o = run_with_timeout(c, Duration::from_secs(600));
    assert!(!o.success, "accepted:\n{}", o.stdout);
    for e in ["bad.toml:2:8", "the init:", "is a program for X86_64"] {
        assert!(o.stderr.contains(e), "expected {e:?} in:\n{}", o.stderr);
    }
}

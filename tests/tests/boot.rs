//! Boot the examples in QEMU (TCG) and read the serial console.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_e2e::{boot, build, example, example_with, Outcome};

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
    let o = boot_small(&example("hello"), out.path());
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

/// `cairn run` by direct kernel boot with no NIC and 128 MiB.
fn boot_small(manifest: &Path, out: &Path) -> Outcome {
    boot(
        manifest,
        out,
        &["--net", "none", "--mem", "128M"],
        BOOT_TIMEOUT,
    )
}

/// Builds hello with `[initramfs] compression = COMPRESSION`, checks the
/// initrd really is in that format, and boots it by direct kernel boot: the
/// kernel must unpack it itself.
fn boot_hello_with_compression(compression: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let manifest = example_with(
        "hello",
        dir.path(),
        &format!("[initramfs]\ncompression = \"{compression}\"\n"),
    );
    let out = dir.path().join("out");
    let o = boot_small(&manifest, &out);
    o.assert_ok();
    o.assert_in_order(&hello_markers());
    o.assert_stdout_has("reboot: Power down");
    assert!(
        !o.stdout.contains("Initramfs unpacking failed"),
        "{}",
        o.stdout
    );
    std::fs::read(out.join("hello.initrd")).unwrap()
}

#[test]
fn hello_gzip_initramfs_direct_kernel_boot() {
    let initrd = boot_hello_with_compression("gzip");
    // gzip magic and method 8 (deflate).
    assert_eq!(
        initrd[..3],
        [0x1f, 0x8b, 0x08],
        "not gzip: {:02x?}",
        &initrd[..8]
    );
}

#[test]
fn hello_xz_initramfs_direct_kernel_boot() {
    let initrd = boot_hello_with_compression("xz");
    // xz stream header: magic, then stream flags 0x00 0x01 = CRC32 check
    // (the kernel's decompressor refuses CRC64, xz's default).
    assert_eq!(
        initrd[..8],
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, 0x00, 0x01],
        "not xz with CRC32: {:02x?}",
        &initrd[..8]
    );
}

/// A manifest on Debian's cloud kernel whose one service (BusyBox) runs
/// `args` and then asks for `on_exit`; written into a new scratch directory.
fn busybox_manifest(name: &str, args: &[&str], on_exit: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let exec: Vec<String> = std::iter::once("/bin/busybox")
        .chain(args.iter().copied())
        .map(|a| format!("{a:?}"))
        .collect();
    let text = format!(
        r#"name = "{name}"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"

[[binary]]
path = "/bin/busybox"

[[service]]
name = "once"
exec = [{}]
on_exit = "{on_exit}"
"#,
        exec.join(", ")
    );
    let manifest = dir.path().join("cairn.toml");
    std::fs::write(&manifest, text).unwrap();
    (dir, manifest)
}

/// The service lists /proc/mounts: the init mounted the API filesystems
/// with their flags. Then `on_exit = "reboot"`: the init stops everything
/// and restarts the machine (the kernel's restart path, not its
/// power-off); QEMU runs with -no-reboot, so the restart ends it with
/// status 0.
#[test]
fn api_mounts_then_on_exit_reboot_restarts_the_machine() {
    let (dir, manifest) = busybox_manifest(
        "rebooter",
        &[
            "sh",
            "-c",
            "cat /proc/mounts; stat -c 'mode %a %n' /tmp /dev/shm",
        ],
        "reboot",
    );
    let o = boot_small(&manifest, &dir.path().join("out"));
    o.assert_ok();
    o.assert_in_order(&[
        "cairn: service once started",
        "once: proc /proc proc ",
        "cairn: service once exited (status 0)",
        "cairn: service once ended: reboot requested",
        "cairn: rebooting",
        "cairn: all services stopped; syncing and unmounting",
        "cairn: sync done, filesystems unmounted (0 errors)",
        "reboot: Restarting system",
    ]);
    // Not the power-off path, and not a panic's emergency restart (panic=-1
    // restarts too, without that kernel line).
    for absent in ["cairn: powering off", "reboot: Power down", "Kernel panic"] {
        assert!(
            !o.stdout.contains(absent),
            "{absent:?} on the console:\n{}",
            o.stdout
        );
    }
    // /proc/mounts as the service printed it: "SOURCE TARGET TYPE OPTIONS
    // 0 0", the last mount on a target winning.
    let mut mounts = std::collections::BTreeMap::new();
    for l in o.stdout.lines() {
        if let Some((_, m)) = l.split_once("] once: ") {
            let w: Vec<&str> = m.split_whitespace().collect();
            if w.len() == 6 {
                mounts.insert(w[1], (w[2], w[3].split(',').collect::<Vec<_>>()));
            }
        }
    }
    for (target, fstype, flags) in [
        ("/proc", "proc", &["nosuid", "nodev", "noexec"][..]),
        ("/sys", "sysfs", &["nosuid", "nodev", "noexec"]),
        ("/sys/fs/cgroup", "cgroup2", &["nosuid", "nodev", "noexec"]),
        ("/dev", "devtmpfs", &["nosuid", "mode=755"]),
        (
            "/dev/pts",
            "devpts",
            &["nosuid", "noexec", "mode=620", "ptmxmode=666"],
        ),
        ("/dev/shm", "tmpfs", &["nosuid", "nodev"]),
        ("/run", "tmpfs", &["nosuid", "nodev", "mode=755"]),
        ("/tmp", "tmpfs", &["nosuid", "nodev"]),
    ] {
        let Some((ty, opts)) = mounts.get(target) else {
            panic!("nothing mounted on {target}: {mounts:?}\n{}", o.stdout);
        };
        assert_eq!(*ty, fstype, "{target}: {mounts:?}");
        for f in flags {
            assert!(opts.contains(f), "{target} lacks {f}: {opts:?}");
        }
    }
    // tmpfs's default mode, which /proc/mounts does not show.
    for dir in ["/tmp", "/dev/shm"] {
        let want = format!("once: mode 1777 {dir}");
        assert!(
            o.stdout.lines().any(|l| l.trim_end().ends_with(&want)),
            "{want:?} missing:\n{}",
            o.stdout
        );
    }
}

/// The kernel image and modules directory that resolving
/// linux-image-cloud-amd64 unpacked into the cache (building hello first
/// makes sure it did), read from the cache's record by the library the CLI
/// uses (the `cairn` processes the tests start share this environment).
fn unpacked_debian_kernel() -> (PathBuf, PathBuf) {
    use cairn_image::kernel::{cache_dir, resolve_package_cached};
    let out = tempfile::tempdir().unwrap();
    build(&example("hello"), out.path()).assert_ok();
    let k = resolve_package_cached("linux-image-cloud-amd64", &cache_dir())
        .unwrap()
        .expect("the build recorded its kernel package in the cache");
    let modules = k.modules_dir.expect("the package has a modules directory");
    (k.image, modules)
}

/// `[kernel] path` + `modules_dir` instead of a package: the image and
/// modules the package path unpacked, named directly. The build says it
/// used that path, and the booted kernel has the listed module (and its
/// dependencies) loaded.
#[test]
fn explicit_kernel_path_and_modules_dir_build_and_boot() {
    let (image, modules_dir) = unpacked_debian_kernel();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("cairn.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "kpath"

[kernel]
path = "{}"
modules_dir = "{}"
cmdline = "console=ttyS0 quiet panic=-1"
modules = ["virtio_net"]

[[binary]]
path = "/bin/busybox"

[[service]]
name = "greet"
exec = ["/bin/busybox", "sh", "-c", "echo Hello from cairn!; cat /proc/modules"]
on_exit = "poweroff"
"#,
            image.display(),
            modules_dir.display()
        ),
    )
    .unwrap();
    let o = boot_small(&manifest, &dir.path().join("out"));
    o.assert_ok();
    // The build table (on stderr for `run`) names the kernel by its path,
    // and lists virtio_net's dependency closure from that modules_dir.
    assert!(
        o.stderr.contains(&format!("path:{}", image.display())),
        "{}",
        o.stderr
    );
    let modules: Vec<&str> = o
        .stderr
        .lines()
        .filter_map(|l| l.split_once("  module ")?.1.split_whitespace().next())
        .collect();
    assert!(
        modules.contains(&"virtio_net") && modules.contains(&"net_failover"),
        "{}",
        o.stderr
    );
    let loaded = format!("cairn: modules loaded ({} ok, 0 failed)", modules.len());
    o.assert_in_order(&[
        &loaded,
        "cairn: service greet started",
        "Hello from cairn!",
        "cairn: service greet exited (status 0)",
        "cairn: powering off",
        "reboot: Power down",
    ]);
    // Each is in the kernel's /proc/modules ("NAME SIZE REFS ...").
    for m in modules {
        assert!(
            o.stdout.contains(&format!("greet: {m} ")),
            "{m} not in /proc/modules:\n{}",
            o.stdout
        );
    }
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

//! The tiny kernel profile: `examples/tiny` names Debian's linux-source-6.1
//! with `kernel/tiny.config`. The kernel is built ONCE for the whole suite
//! (a cold cache takes minutes); every later build takes it from
//! `~/.cache/cairn/kernels/built/`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_e2e::net::{static_only_network, user_net_lease_and_web_page};
use cairn_e2e::{
    boot, build, cairn, copy_example, example, qmp, root, run_with_timeout, Live, Outcome,
};

/// A cold kernel build on a shared 2-core machine.
const KERNEL_BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// `cairn kernel build examples/tiny/cairn.toml`, once per test binary;
/// returns its output.
fn kernel_built() -> &'static Outcome {
    static BUILT: OnceLock<Outcome> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut c = cairn();
        c.arg("kernel").arg("build").arg(example("tiny"));
        let o = run_with_timeout(c, KERNEL_BUILD_TIMEOUT);
        o.assert_ok();
        o
    })
}

/// `kernel/NAME.config` in the repository.
fn profile(name: &str) -> std::path::PathBuf {
    root().join("kernel").join(format!("{name}.config"))
}

/// Writes `DIR/NAME.toml`: appliance NAME on a kernel built from
/// linux-source-6.1 with `fragments` merged onto tinyconfig, BusyBox in the
/// image, then `services` (TOML).
fn source_manifest(
    dir: &std::path::Path,
    name: &str,
    fragments: &[std::path::PathBuf],
    services: &str,
) -> std::path::PathBuf {
    let list: Vec<String> = fragments
        .iter()
        .map(|f| format!("\"{}\"", f.display()))
        .collect();
    let manifest = dir.join(format!("{name}.toml"));
    std::fs::write(
        &manifest,
        format!(
            "name = \"{name}\"\nhostname = \"{name}\"\n\n[kernel]\n\
             source = \"/usr/src/linux-source-6.1.tar.xz\"\nconfig = [{}]\n\
             base = \"tinyconfig\"\ncmdline = \"console=ttyS0 quiet panic=-1\"\n\n\
             [[binary]]\npath = \"/bin/busybox\"\n{services}",
            list.join(", ")
        ),
    )
    .unwrap();
    manifest
}

/// Builds appliance NAME on the tiny profile with `extra` on top and
/// `services`, boots it with `cairn run` ARGS, and checks it powered off
/// cleanly. (A cold build of such a kernel takes a few minutes more than
/// tiny's.)
fn boot_on_profile(
    dir: &std::path::Path,
    name: &str,
    extra: &str,
    services: &str,
    args: &[&str],
) -> Outcome {
    let manifest = source_manifest(dir, name, &[profile("tiny"), profile(extra)], services);
    let o = boot(&manifest, &dir.join("out"), args, KERNEL_BUILD_TIMEOUT);
    o.assert_ok();
    o
}

fn markers() -> [&'static str; 5] {
    [
        "cairn: init started",
        "cairn: service greet started",
        "Hello from a tiny cairn!",
        "cairn: service greet exited (status 0)",
        "cairn: powering off",
    ]
}

#[test]
fn tiny_kernel_builds_with_every_fragment_option_and_is_cached() {
    let first = kernel_built();
    // Every option of kernel/tiny.config stuck.
    assert!(
        !first.stderr.contains("warning"),
        "options did not stick:\n{}",
        first.stderr
    );
    first.assert_stdout_has("image  ");
    // A second build is served from the cache: no kernel time.
    let mut c = cairn();
    c.arg("kernel").arg("build").arg(example("tiny"));
    let t = Instant::now();
    let again = run_with_timeout(c, Duration::from_secs(60));
    again.assert_ok();
    again.assert_stdout_has("from the cache");
    assert!(
        !again.stderr.contains("[3/4]"),
        "rebuilt the kernel:\n{}",
        again.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    // The build is stamped with the fixed reproducible identity.
    let image = again
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("image  "))
        .expect("image line");
    let bytes = std::fs::read(image.trim()).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    // The bzImage header holds the version string uncompressed.
    assert!(
        text.contains("(cairn@cairn)") && text.contains("#1 Thu Jan  1 00:00:00 UTC 1970"),
        "kernel version string is not the reproducible one"
    );
    // Small: the tiny profile stays a small kernel.
    assert!(bytes.len() < 4 << 20, "bzImage is {} bytes", bytes.len());
}

#[test]
fn tiny_kernel_boots_hello_directly() {
    kernel_built();
    let out = tempfile::tempdir().unwrap();
    let o = boot(
        &example("tiny"),
        out.path(),
        &["--net", "none", "--mem", "64M"],
        BOOT_TIMEOUT,
    );
    o.assert_ok();
    o.assert_in_order(&markers());
    o.assert_stdout_has("cairn: ready");
}

#[test]
fn tiny_kernel_boots_hello_through_ovmf() {
    kernel_built();
    let out = tempfile::tempdir().unwrap();
    let o = boot(
        &example("tiny"),
        out.path(),
        &["--uefi", "--net", "none"],
        BOOT_TIMEOUT,
    );
    o.assert_ok();
    o.assert_in_order(&markers());
}

#[test]
fn tiny_build_reports_the_source_kernel() {
    kernel_built();
    let out = tempfile::tempdir().unwrap();
    let o = build(&example("tiny"), out.path());
    o.assert_ok();
    o.assert_stdout_has(TINY_SOURCE);
    // No modules directory in a tiny image.
    assert!(!o.stdout.contains("/lib/modules/"), "{}", o.stdout);
}

/// The tiny profile's promises on a networked appliance in 32 MiB: a DHCP
/// lease over virtio-net (QEMU user networking), cgroup v2 with the memory
/// and pids controllers (a service's limits land in its cgroup), and the
/// ACPI power button shutting the machine down cleanly; the init's log
/// lines on the kernel log's clock.
#[test]
fn tiny_kernel_networked_appliance_in_32_mib() {
    kernel_built();
    let dir = tempfile::tempdir().unwrap();
    let manifest = source_manifest(
        dir.path(),
        "tinynet",
        &[profile("tiny")],
        r#"
[[service]]
name = "probe"
exec = ["/bin/busybox", "sh", "-c", "echo '<3>probe-kmsg: clock mark' > /dev/kmsg; echo clock mark; echo ctl: $(cat /sys/fs/cgroup/cgroup.controllers); echo cg: $(cat /proc/self/cgroup); echo mem: $(cat /sys/fs/cgroup/cairn/probe/memory.max) pids: $(cat /sys/fs/cgroup/cairn/probe/pids.max); /bin/busybox sleep 1; echo klog: $(/usr/bin/cairnctl logs | /bin/busybox grep -m1 'kernel: Linux version'); echo st: $(/usr/bin/cairnctl status | /bin/busybox grep -m1 'dhcp4'); echo json: $(/usr/bin/cairnctl status --json); echo PROBE-DONE; exec /bin/busybox sleep 600"]
after = ["network-online"]
memory_max = "8M"
pids_max = 16
"#,
    );
    let (mut live, qmp_sock) = Live::start_with_qmp(
        &manifest,
        dir.path(),
        &["--net", "user", "--mem", "32M"],
        Duration::from_secs(300),
    );
    live.wait_for("PROBE-DONE", BOOT_TIMEOUT);
    qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not power off:\n{o}");
    let line = |prefix: &str| {
        o.lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{o}"))
            .to_string()
    };
    assert!(line("DHCPv4 lease obtained: 10.0.2.15/24").contains("router 10.0.2.2"));
    let controllers = line("probe: ctl: ");
    assert!(
        controllers.contains("memory") && controllers.contains("pids"),
        "{controllers}"
    );
    assert!(line("probe: cg: ").contains("0::/cairn/probe"), "{o}");
    // The kernel's boot messages are in the init's log, from the first
    // one on (they fit the tiny kernel's 16 KiB ring).
    let klog = line("probe: klog: ");
    assert!(klog.contains("] kernel: Linux version 6.1."), "{klog}");
    // The live network state in `cairnctl status`, text and JSON.
    let st = line("probe: st: ");
    assert!(
        st.contains("eth0") && st.contains("dhcp4 BOUND 10.0.2.15/24 from 10.0.2.2"),
        "{st}"
    );
    let json = line("probe: json: ");
    for needle in [
        "\"network\":{\"online\":true",
        "{\"name\":\"eth0\",\"dhcp4\":\"BOUND\",\"lease\":{\"address\":\"10.0.2.15\",\"prefix\":24,\"server\":\"10.0.2.2\"",
        "\"dns\":[\"10.0.2.3\"]",
    ] {
        assert!(json.contains(needle), "{needle} not in {json}");
    }
    let limits = line("probe: mem: ");
    assert!(limits.contains("mem: 8388608 pids: 16"), "{limits}");
    // One clock: the service writes a kernel record, then a line the init
    // reads and stamps; the init's stamp comes after the kernel's, and not
    // by much.
    let stamp = |l: String| -> f64 {
        l.split('[')
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no timestamp in {l:?}"))
    };
    let kernel = stamp(line("probe-kmsg: clock mark"));
    let init = stamp(line("probe: clock mark"));
    assert!(
        init >= kernel && init - kernel < 0.5,
        "kernel {kernel} vs init {init}:\n{o}"
    );
    // The power button: the service is stopped, then the machine powers off.
    o.find("service probe stopped")
        .or_else(|| o.find("service probe exited"))
        .unwrap_or_else(|| panic!("probe was not stopped:\n{o}"));
    assert!(o.contains("cairn: powering off"), "{o}");
}

/// A copy of example `name` whose `[kernel]` table is replaced by the tiny
/// profile (no modules: everything is built in).
fn on_tiny_kernel(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, manifest) = copy_example(name);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let start = text.find("[kernel]").expect("a [kernel] table");
    let end = text[start..]
        .find("\n[")
        .map_or(text.len(), |i| start + i + 1);
    let cmdline = text[start..end]
        .lines()
        .find(|l| l.starts_with("cmdline"))
        .expect("a cmdline")
        .to_string();
    let kernel = format!(
        "[kernel]\nsource = \"/usr/src/linux-source-6.1.tar.xz\"\nconfig = [\"{}\"]\n\
         base = \"tinyconfig\"\n{cmdline}\n\n",
        profile("tiny").display()
    );
    let patched = format!("{}{kernel}{}", &text[..start], &text[end..]);
    std::fs::write(&manifest, patched).unwrap();
    (dir, manifest)
}

const TINY_SOURCE: &str = "source:/usr/src/linux-source-6.1.tar.xz (tinyconfig)";

/// The examples that need no more than the tiny profile boot on it:
/// hello and jq (a dynamically linked Debian program) directly, and the
/// disk appliance (GPT, vfat ESP, ext4 data formatted on first boot, mounts
/// by label) through OVMF from its disk image. (The network examples: see
/// `tiny_kernel_runs_the_network_examples`.)
#[test]
fn tiny_kernel_boots_the_hello_jq_and_disk_examples() {
    kernel_built();
    // Example NAME on the tiny kernel, booted with `cairn run` ARGS: it
    // powers off cleanly after printing `markers` in order.
    let check = |name: &str, args: &[&str], markers: &[&str]| {
        let (_dir, manifest) = on_tiny_kernel(name);
        let out = tempfile::tempdir().unwrap();
        let o = boot(&manifest, out.path(), args, BOOT_TIMEOUT);
        o.assert_ok();
        // `cairn run` prints the build table on stderr.
        assert!(o.stderr.contains(TINY_SOURCE), "{name}: {}", o.stderr);
        o.assert_in_order(markers);
    };
    let direct = ["--net", "none", "--mem", "64M"];
    check(
        "hello",
        &direct,
        &[
            "cairn: init started",
            "Hello from cairn!",
            "cairn: powering off",
        ],
    );
    check(
        "jq",
        &direct,
        &[
            "cairn: modules loaded (0 ok, 0 failed)",
            "cairn: service report started",
            "part kernel: 1",
            "part services: 1",
            "cairn: powering off",
        ],
    );
    check(
        "disk",
        // Through OVMF the firmware needs more than the guest: the tiny
        // UKI boots at 96 MiB, not at 64 MiB (direct boot needs 32 MiB).
        &["--disk", "--net", "none", "--mem", "128M"],
        &[
            "cairn: mounted /dev/vda2 (LABEL=CONFIG) on /config",
            "cairn: formatting /dev/vda3 as ext4 (label DATA)",
            "boot 1: hello from the primary config",
            "cairn: powering off",
        ],
    );
}

/// The network examples on the tiny kernel (virtio-net built in, no
/// modules): examples/net gets a lease over QEMU user networking and serves
/// its page through a forwarded port; examples/net-static configures its
/// addresses, routes, MTU and DNS from the manifest, pings the gateway on a
/// tap device and never speaks DHCP to the server there.
#[test]
fn tiny_kernel_runs_the_network_examples() {
    kernel_built();
    let (_dir, net) = on_tiny_kernel("net");
    user_net_lease_and_web_page(net.to_str().unwrap());
    let (_dir, net_static) = on_tiny_kernel("net-static");
    static_only_network(net_static.to_str().unwrap());
}

/// `cairn kernel check` merges fragments without compiling: the tiny
/// profile alone and with the hardware or container profile on top applies
/// every option; a fragment asking for what the tiny profile cannot have
/// (cpusets without SMP) is reported, with exit status 1.
#[test]
fn kernel_profiles_merge_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, fragments: &[std::path::PathBuf]| {
        let manifest = source_manifest(
            dir.path(),
            name,
            fragments,
            "[[service]]\nname = \"x\"\nexec = [\"/init\"]\n",
        );
        let mut c = cairn();
        c.arg("kernel").arg("check").arg(&manifest);
        run_with_timeout(c, Duration::from_secs(600))
    };
    for extra in [None, Some("hardware"), Some("container")] {
        let mut frags = vec![profile("tiny")];
        frags.extend(extra.map(profile));
        let o = check(extra.unwrap_or("tiny"), &frags);
        o.assert_ok();
        o.assert_stdout_has("every option of the fragments applied");
        // Merged, not compiled.
        assert!(o.stderr.contains("[2/4] merge"), "{}", o.stderr);
        assert!(!o.stderr.contains("[3/4]"), "{}", o.stderr);
    }
    let bad = dir.path().join("cpusets.config");
    std::fs::write(&bad, "CONFIG_CPUSETS=y\n").unwrap();
    let o = check("bad", &[profile("tiny"), bad]);
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has("CONFIG_CPUSETS=y (requested), got is not set");
}

/// The hardware profile on top of tiny, built and booted on QEMU's
/// emulation of common real hardware instead of virtio: two CPUs (SMP), an
/// Intel e1000e NIC that gets a DHCP lease, an NVMe disk and a SATA disk
/// on an AHCI controller, each read by a service.
#[test]
fn hardware_profile_boots_on_e1000e_nvme_and_sata() {
    let dir = tempfile::tempdir().unwrap();
    let disk = |name: &str, mark: &str| {
        let path = dir.path().join(name);
        let mut data = mark.as_bytes().to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&path, data).unwrap();
        path
    };
    let nvme = disk("nvme.img", "NVME-MARK-4921");
    let sata = disk("sata.img", "SATA-MARK-7730");
    let drive =
        |id: &str, p: &std::path::Path| format!("if=none,id={id},format=raw,file={}", p.display());
    let (nvme_drive, sata_drive) = (drive("nv", &nvme), drive("sa", &sata));
    let o = boot_on_profile(
        dir.path(),
        "hw",
        "hardware",
        r#"
[[service]]
name = "probe"
exec = ["/bin/busybox", "sh", "-c", "echo cpus: $(/bin/busybox nproc); echo nic: $(/bin/busybox basename $(/bin/busybox readlink /sys/class/net/eth0/device/driver)); echo nvme: $(/bin/busybox head -c 14 /dev/nvme0n1); echo sata: $(/bin/busybox head -c 14 /dev/sda)"]
after = ["network-online"]
on_exit = "poweroff"
"#,
        &[
            "--net",
            "none",
            "--mem",
            "128M",
            "--",
            "-smp",
            "2",
            "-netdev",
            "user,id=n0,ipv6=off",
            "-device",
            "e1000e,netdev=n0",
            "-drive",
            &nvme_drive,
            "-device",
            "nvme,drive=nv,serial=cairn0",
            "-drive",
            &sata_drive,
            "-device",
            "ahci,id=ahci0",
            "-device",
            "ide-hd,drive=sa,bus=ahci0.0",
        ],
    );
    o.assert_in_order(&[
        "DHCPv4 lease obtained: 10.0.2.15/24",
        "probe: cpus: 2",
        "probe: nic: e1000e",
        "probe: nvme: NVME-MARK-4921",
        "probe: sata: SATA-MARK-7730",
        "cairn: powering off",
    ]);
}

/// The container profile on top of tiny, built and booted: what a
/// container runtime needs from the kernel works (an unprivileged user
/// namespace, an overlay mount, a bridge, every cgroup v2 controller a
/// runtime delegates, seccomp).
#[test]
fn container_profile_boots_with_namespaces_overlay_bridge_and_controllers() {
    let dir = tempfile::tempdir().unwrap();
    let o = boot_on_profile(
        dir.path(),
        "ctr",
        "container",
        r#"
[[service]]
name = "probe"
exec = ["/bin/busybox", "sh", "-c", "echo userns: $(/bin/busybox unshare -U -r /bin/busybox id -u); cd /tmp && /bin/busybox mkdir l u w m && echo below > l/f && /bin/busybox mount -t overlay overlay -o lowerdir=l,upperdir=u,workdir=w m && echo overlay: $(cat m/f); /bin/busybox brctl addbr br0 && echo bridge: $(cat /sys/class/net/br0/type); echo controllers: $(cat /sys/fs/cgroup/cgroup.controllers); echo seccomp: $(/bin/busybox grep Seccomp: /proc/self/status)"]
on_exit = "poweroff"
"#,
        &["--net", "none", "--mem", "128M"],
    );
    o.assert_in_order(&[
        "probe: userns: 0",
        "probe: overlay: below",
        "probe: bridge: 1",
        "probe: controllers: ",
        "probe: seccomp: Seccomp: 0",
        "cairn: powering off",
    ]);
    let controllers = o
        .stdout
        .lines()
        .find(|l| l.contains("probe: controllers: "))
        .unwrap_or_default();
    for c in ["cpuset", "cpu", "memory", "pids"] {
        assert!(
            controllers.split_whitespace().any(|w| w == c),
            "{c} missing: {controllers}"
        );
    }
}

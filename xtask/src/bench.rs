//! `cargo xtask bench`: boot cairn and a classic BusyBox appliance side by
//! side on the same QEMU and DHCP server (dnsmasq in a network namespace),
//! and report sizes, the smallest guest RAM that reaches ready, init RSS and
//! the boot timeline, with ratios. Writes bench/RESULTS.md and
//! bench/timeline.png.
//!
//! Every variant boots under three guest clocks ([`Clock`]): QEMU's
//! `-icount shift=0` with `sleep=on` (the budgets' measure), the same with
//! `sleep=off`, and the plain TCG clock (wall time, for information).

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_image::{compress, cpio};

/// Console marks (substrings of timestamped lines) one variant prints.
#[derive(Clone, Copy)]
pub struct Marks {
    pub init: &'static str,
    /// The start of the DHCP exchange (the first DISCOVER).
    pub dhcp: &'static str,
    pub lease: &'static str,
    pub ready: &'static str,
    /// A complete console line containing this ends the boot: the bench has
    /// what it needs and stops QEMU.
    pub done: &'static str,
}

/// Both appliances' clocks start at the kernel's `Run /init as init
/// process` line (printed just before it execs PID 1; the kernel command
/// line has no `quiet` so it reaches the console): the same point for
/// cairn-init and BusyBox init, and everything either init does counts.
pub const INIT_EXEC: &str = " as init process";

/// How the guest's clock runs during a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `-icount shift=0`: one guest ns per retired instruction, so the
    /// times are CPU work and do not depend on how busy the host is.
    /// `sleep`: whether idle time (waiting for a DHCP reply) passes at host
    /// speed (`on`) or jumps to the next timer (`off`).
    Icount { sleep: bool },
    /// QEMU's default TCG clock: host time, translation of code included,
    /// and so host load.
    Wall,
}

/// The clocks every run boots each variant under, in report order.
pub const CLOCKS: [Clock; 3] = [
    Clock::Icount { sleep: true },
    Clock::Icount { sleep: false },
    Clock::Wall,
];

/// The clock the budgets are measured in (see README, "Measured numbers":
/// `sleep=on` lets the DHCP reply arrive as it would on a network; with
/// `sleep=off` the wait becomes whatever timer the guest armed next).
pub const BUDGET_CLOCK: Clock = Clock::Icount { sleep: true };

impl Clock {
    /// The QEMU arguments for this clock.
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            Clock::Icount { sleep } => vec![
                "-icount".into(),
                format!("shift=0,sleep={}", if sleep { "on" } else { "off" }),
            ],
            Clock::Wall => Vec::new(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Clock::Icount { sleep: true } => "icount (`-icount shift=0,sleep=on`)",
            Clock::Icount { sleep: false } => "icount (`-icount shift=0,sleep=off`)",
            Clock::Wall => "wall clock (plain TCG, depends on host load)",
        }
    }
}

pub const CAIRN_MARKS: Marks = Marks {
    init: INIT_EXEC,
    dhcp: "DHCPv4 discover sent",
    lease: "DHCPv4 lease obtained",
    ready: "cairn: ready",
    done: "cairn: ready",
};

/// The label of the BusyBox baseline variant.
pub const BASELINE_LABEL: &str = "busybox";

pub const BASELINE_MARKS: Marks = Marks {
    init: INIT_EXEC,
    dhcp: "bench: dhcp start",
    lease: "bench: lease obtained",
    ready: "bench: ready",
    done: "VmRSS:",
};

/// One appliance to boot.
#[derive(Clone)]
pub struct Variant {
    pub label: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub efi: Option<PathBuf>,
    pub init_bytes: u64,
    pub cmdline: String,
    pub marks: Marks,
}

/// Times (seconds since kernel start) read off one boot's console.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timeline {
    pub init: f64,
    pub dhcp: Option<f64>,
    pub lease: f64,
    pub ready: f64,
    pub rss_kib: Option<u64>,
    /// Power-on to ready by the guest's TSC (cairn-init's ready line):
    /// firmware and the kernel's decompression included, which the kernel
    /// log's clock starts after.
    pub power_on: Option<f64>,
}

/// `[  1.234567] text` -> (1.234567, text)
fn stamped(line: &str) -> Option<(f64, &str)> {
    let line = line.trim_start_matches(|c: char| c.is_control());
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    let t = rest[..end].trim().parse().ok()?;
    Some((t, rest[end + 1..].trim_start()))
}

/// First stamped line containing `mark`, for the lease mark only lines that
/// also say "lease".
fn find_mark(console: &str, mark: &str, lease: bool) -> Option<f64> {
    console.lines().find_map(|l| {
        let (t, text) = stamped(l)?;
        (text.contains(mark) && (!lease || text.contains("lease"))).then_some(t)
    })
}

/// Whether a complete (newline-terminated) line of `console` contains `mark`.
fn has_line(console: &str, mark: &str) -> bool {
    console
        .split_inclusive('\n')
        .any(|l| l.ends_with('\n') && l.contains(mark))
}

pub fn parse_timeline(console: &str, marks: &Marks) -> Option<Timeline> {
    // BusyBox's probe prints /proc/1/status's "VmRSS: N kB"; cairn-init
    // reports "init RSS N KiB" on its ready line.
    let rss_kib = console.lines().find_map(|l| {
        let rest = l
            .split("VmRSS:")
            .nth(1)
            .or_else(|| l.split("init RSS").nth(1))?;
        rest.split_whitespace().next()?.parse().ok()
    });
    // "... 0.412345 s since power-on by the TSC)"
    let power_on = console.lines().find_map(|l| {
        let before = l
            .split(" s since power-on")
            .next()
            .filter(|b| b.len() < l.len())?;
        before.rsplit([' ', ';']).next()?.parse().ok()
    });
    Some(Timeline {
        init: find_mark(console, marks.init, false)?,
        dhcp: find_mark(console, marks.dhcp, false),
        lease: find_mark(console, marks.lease, true)?,
        ready: find_mark(console, marks.ready, false)?,
        rss_kib,
        power_on,
    })
}

/// A network namespace with a tap device and dnsmasq serving DHCPv4 on it.
/// Everything is torn down on drop.
pub struct Lab {
    ns: String,
    dnsmasq: Child,
}

impl Lab {
    pub fn start() -> Result<Lab> {
        let ns = format!("cairnbench{}", std::process::id());
        let ip = |args: &[&str]| -> Result<()> {
            let st = Command::new("ip").args(args).status().context("ip")?;
            if !st.success() {
                bail!("ip {} failed", args.join(" "));
            }
            Ok(())
        };
        ip(&["netns", "add", &ns])?;
        let in_ns = |args: &[&str]| {
            let mut v = vec!["netns", "exec", ns.as_str(), "ip"];
            v.extend_from_slice(args);
            ip(&v)
        };
        let setup = (|| -> Result<Child> {
            in_ns(&["link", "set", "lo", "up"])?;
            in_ns(&["tuntap", "add", "dev", "tap0", "mode", "tap"])?;
            in_ns(&["addr", "add", "10.77.0.1/24", "dev", "tap0"])?;
            in_ns(&["link", "set", "tap0", "up"])?;
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "dnsmasq",
                    "--no-daemon",
                    "--conf-file=/dev/null",
                ])
                .args([
                    "--interface=tap0",
                    "--bind-interfaces",
                    "--port=0",
                    "--no-ping",
                    // RFC 4039; udhcpc never asks for it, cairn-init does.
                    "--dhcp-rapid-commit",
                ])
                .args(["--dhcp-range=10.77.0.10,10.77.0.200,255.255.255.0,1h"])
                .arg(format!("--dhcp-leasefile=/tmp/{ns}.leases"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting dnsmasq")?;
            Ok(child)
        })();
        match setup {
            Ok(dnsmasq) => Ok(Lab { ns, dnsmasq }),
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
                Err(e)
            }
        }
    }

    /// Boot `v` with `mem_mib` of RAM; the console output, or None if the
    /// guest did not power off within `timeout`.
    pub fn boot(
        &self,
        v: &Variant,
        mem_mib: u32,
        clock: Clock,
        timeout: Duration,
    ) -> Result<(bool, String)> {
        self.boot_with(v, mem_mib, timeout, &clock.qemu_args())
    }

    /// [`Lab::boot`] with more QEMU arguments.
    pub fn boot_with(
        &self,
        v: &Variant,
        mem_mib: u32,
        timeout: Duration,
        qemu_extra: &[String],
    ) -> Result<(bool, String)> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "qemu-system-x86_64"])
            .args([
                "-accel",
                "tcg",
                "-smp",
                "1",
                "-no-reboot",
                "-display",
                "none",
            ])
            .args(["-vga", "none", "-serial", "stdio", "-monitor", "none"])
            .args(["-m", &format!("{mem_mib}M")])
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .arg("-kernel")
            .arg(&v.vmlinuz)
            .arg("-initrd")
            .arg(&v.initrd)
            .args(["-append", &v.cmdline])
            .args(qemu_extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting qemu")?;
        let mut out = child.stdout.take().expect("piped");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let text = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        let start = Instant::now();
        // QEMU (the child of `ip netns exec`, which execs it) is stopped by
        // its pid once the done mark is seen or the time is up.
        let finished = loop {
            if child.try_wait()?.is_some() {
                break true;
            }
            let done = has_line(&text(), v.marks.done);
            if done || start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break done;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = reader.join();
        let console = text();
        if std::env::var_os("CAIRN_BENCH_CONSOLE").is_some() {
            eprintln!("--- {} ({mem_mib} MiB) ---\n{console}", v.label);
        }
        Ok((finished, console))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_file(format!("/tmp/{}.leases", self.ns));
    }
}

/// The classic appliance: BusyBox as init, an rcS script, udhcpc, and the
/// same service binary as the cairn appliances (`service`).
/// Kernel modules (for a modular kernel) are taken from `modules_from`, a
/// cairn initramfs for the same kernel, and loaded by rcS in the same order.
pub fn build_baseline(
    root: &Path,
    vmlinuz: &Path,
    modules_from: &Path,
    service: &Path,
    out: &Path,
) -> Result<Variant> {
    let dir = root.join("bench/baseline");
    let busybox = std::fs::read("/bin/busybox").context("busybox-static is needed")?;
    let mut a = cpio::Archive::default();
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/etc/init.d",
        "/sbin",
        "/tmp",
        "/srv/www",
    ] {
        a.add_dir(d, 0o755)?;
    }
    a.add_char_dev("/dev/console", 0o600, 5, 1)?;
    // rcS writes its marks to /dev/kmsg, the first one before it mounts
    // anything.
    a.add_char_dev("/dev/kmsg", 0o644, 1, 11)?;
    a.add_file("/bin/busybox", 0o755, busybox.clone())?;
    for l in ["/sbin/init", "/bin/sh"] {
        a.add_symlink(l, "/bin/busybox")?;
    }
    a.add_file("/bin/hello-web", 0o755, std::fs::read(service)?)?;
    a.add_file(
        "/srv/www/index.html",
        0o644,
        std::fs::read(root.join("bench/index.html"))?,
    )?;
    a.add_file("/etc/inittab", 0o644, std::fs::read(dir.join("inittab"))?)?;
    a.add_file("/etc/init.d/rcS", 0o755, std::fs::read(dir.join("rcS"))?)?;
    a.add_file(
        "/etc/udhcpc.script",
        0o755,
        std::fs::read(dir.join("udhcpc.script"))?,
    )?;
    let (_, raw) = compress::decompress_auto(&std::fs::read(modules_from)?)?;
    let mut order = String::new();
    for e in cpio::read(&raw)? {
        if e.path.starts_with("lib/modules/") && e.is_file() && e.path.ends_with(".ko") {
            a.add_file(&e.path, 0o644, e.data)?;
        } else if Some(e.path.as_str()) == cairn_manifest::SYSTEM_CONFIG_PATH.strip_prefix('/') {
            let cfg = cairn_manifest::SystemConfig::from_json(&String::from_utf8_lossy(&e.data))?;
            for m in cfg.modules {
                let _ = writeln!(order, "{m}");
            }
        }
    }
    a.add_file("/etc/modules", 0o644, order.into_bytes())?;
    let initrd = compress::compress(&a.to_bytes(0), cairn_manifest::Compression::Zstd)?;
    std::fs::create_dir_all(out)?;
    let path = out.join("baseline.initrd");
    std::fs::write(&path, initrd)?;
    Ok(Variant {
        label: BASELINE_LABEL.into(),
        vmlinuz: vmlinuz.to_path_buf(),
        initrd: path,
        efi: None,
        init_bytes: busybox.len() as u64,
        cmdline: "console=ttyS0 panic=-1 rdinit=/sbin/init".into(),
        marks: BASELINE_MARKS,
    })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Results for one variant.
#[derive(Default, Clone)]
pub struct Measured {
    pub runs: Vec<Timeline>,
    pub min_mem_mib: Option<u32>,
}

impl Measured {
    fn med(&self, f: impl Fn(&Timeline) -> f64) -> f64 {
        median(self.runs.iter().map(f).collect())
    }
    pub fn kernel_to_init(&self) -> f64 {
        self.med(|t| t.init)
    }
    pub fn init_to_lease(&self) -> f64 {
        self.med(|t| t.lease - t.init)
    }
    pub fn init_to_ready(&self) -> f64 {
        self.med(|t| t.ready - t.init)
    }
    /// The fastest run's userspace boot: noise on a shared machine only
    /// adds time, so this is the steadiest figure between bench runs.
    pub fn init_to_ready_fastest(&self) -> f64 {
        self.runs
            .iter()
            .map(|t| t.ready - t.init)
            .min_by(|a, b| a.total_cmp(b))
            .unwrap_or(f64::NAN)
    }
    /// First DISCOVER to lease, over the runs that show both.
    pub fn dhcp_exchange(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|t| t.dhcp.map(|d| t.lease - d))
            .collect();
        (!v.is_empty()).then(|| median(v))
    }
    pub fn rss(&self) -> Option<u64> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|t| t.rss_kib.map(|r| r as f64))
            .collect();
        (!v.is_empty()).then(|| median(v) as u64)
    }
    /// Kernel start (the kernel log's zero) to ready.
    pub fn kernel_to_ready(&self) -> f64 {
        self.med(|t| t.ready)
    }
    /// Power-on to ready by the guest's TSC, over the runs that report it.
    pub fn power_on_to_ready(&self) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter_map(|t| t.power_on).collect();
        (!v.is_empty()).then(|| median(v))
    }
    /// Slowest minus fastest userspace boot: near zero when the clock is
    /// deterministic.
    pub fn init_to_ready_spread(&self) -> f64 {
        let v = self.runs.iter().map(|t| t.ready - t.init);
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        if self.runs.is_empty() {
            f64::NAN
        } else {
            hi - lo
        }
    }
}

/// Smallest RAM (MiB, within `step`) at which `v` still reaches ready.
pub fn min_memory(lab: &Lab, v: &Variant, step: u32) -> Result<Option<u32>> {
    let ok = |mem: u32| -> Result<bool> {
        let (_, console) = lab.boot(v, mem, Clock::Wall, Duration::from_secs(90))?;
        Ok(find_mark(&console, v.marks.ready, false).is_some())
    };
    let (mut lo, mut hi) = (8u32, 256u32);
    // `lo` never reached ready (or is below any kernel's need), `hi` did.
    if !ok(hi)? {
        return Ok(None);
    }
    while hi - lo > step {
        let mid = (lo + hi) / 2;
        if ok(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(Some(hi))
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn mib(n: u64) -> String {
    format!("{:.2} MiB", n as f64 / 1048576.0)
}

/// How long `cairn build` of one manifest takes with the kernel and
/// packages cached (medians of [`ASSEMBLY_BUILDS`] builds, in seconds).
pub struct Assembly {
    pub manifest: String,
    /// The same inputs again: everything comes from the cache.
    pub same: f64,
    /// Changed contents (another SOURCE_DATE_EPOCH, so every file's mtime):
    /// the initramfs is compressed anew.
    pub changed: f64,
    /// The same with `cairn build --fast` (development setting).
    pub changed_fast: f64,
}

/// Timed builds per case in [`Assembly`].
pub const ASSEMBLY_BUILDS: usize = 3;

/// The image-assembly budget (DESIGN.md: under 1 s from a warm cache).
fn assembly_report(list: &[Assembly]) -> String {
    let mut s = format!(
        "\nImage assembly from a warm cache (`cairn build` with the kernel and packages \
         cached; median of {ASSEMBLY_BUILDS} builds), budget under 1 s:\n\n"
    );
    let verdict = |t: f64| if t < 1.0 { "met" } else { "NOT met" };
    for a in list {
        let _ = writeln!(
            s,
            "- {}: same inputs again {:.2} s, {}; changed contents (initramfs compressed \
             anew) {:.2} s with `--fast`, {} (release setting: {:.2} s)",
            a.manifest,
            a.same,
            verdict(a.same),
            a.changed_fast,
            verdict(a.changed_fast),
            a.changed,
        );
    }
    s
}

/// A run's measurements: for each clock of `clocks`, one [`Measured`]
/// per variant (the sizes, RAM and RSS come from the first clock's).
pub struct Results<'a> {
    pub clocks: &'a [Clock],
    pub measured: &'a [Vec<Measured>],
}

impl Results<'_> {
    /// The measurements under `clock`, if it was booted with.
    pub fn under(&self, clock: Clock) -> Option<&[Measured]> {
        let i = self.clocks.iter().position(|&c| c == clock)?;
        Some(&self.measured[i])
    }
}

/// One table row: a cell per variant and the ratio of the first to
/// `variants[base]`.
fn row(s: &mut String, name: &str, vals: &[Option<f64>], base: usize, fmt: &dyn Fn(f64) -> String) {
    let _ = write!(s, "| {name} | ");
    for v in vals {
        let _ = write!(s, "{} | ", v.map(fmt).unwrap_or_else(|| "n/a".into()));
    }
    let ratio = match (vals[0], vals[base]) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    let _ = writeln!(s, "{ratio} |");
}

fn table_head(s: &mut String, first: &str, variants: &[Variant], base: usize) {
    let _ = write!(s, "| {first} | ");
    for v in variants {
        let _ = write!(s, "{} | ", v.label);
    }
    let _ = writeln!(
        s,
        "ratio {} / {} |",
        variants[0].label, variants[base].label
    );
    let _ = writeln!(s, "|---|{}---|", "---|".repeat(variants.len()));
}

/// Times in the report: milliseconds (userspace boots under icount are a
/// few of them).
fn secs(n: f64) -> String {
    format!("{:.1} ms", n * 1000.0)
}

/// The timing table for one clock.
fn timing_table(s: &mut String, clock: Clock, variants: &[Variant], m: &[Measured], base: usize) {
    table_head(s, clock.label(), variants, base);
    let all = |f: &dyn Fn(&Measured) -> f64| -> Vec<Option<f64>> {
        m.iter()
            .map(|x| Some(f(x)).filter(|v| v.is_finite()))
            .collect()
    };
    row(
        s,
        "kernel start -> init",
        &all(&Measured::kernel_to_init),
        base,
        &secs,
    );
    row(
        s,
        "init -> IPv4 lease",
        &all(&Measured::init_to_lease),
        base,
        &secs,
    );
    row(
        s,
        "of which DHCP (first DISCOVER -> lease)",
        &m.iter().map(Measured::dhcp_exchange).collect::<Vec<_>>(),
        base,
        &secs,
    );
    row(
        s,
        "init -> ready (userspace boot)",
        &all(&Measured::init_to_ready),
        base,
        &secs,
    );
    row(
        s,
        "init -> ready, fastest run",
        &all(&Measured::init_to_ready_fastest),
        base,
        &secs,
    );
    row(
        s,
        "init -> ready, slowest - fastest run",
        &all(&Measured::init_to_ready_spread),
        base,
        &secs,
    );
    row(
        s,
        "kernel start -> ready",
        &all(&Measured::kernel_to_ready),
        base,
        &secs,
    );
    // Under the plain clock the TSC counts host time since QEMU started.
    if clock != Clock::Wall {
        row(
            s,
            "power-on -> ready (TSC: firmware, decompression included)",
            &m.iter()
                .map(Measured::power_on_to_ready)
                .collect::<Vec<_>>(),
            base,
            &secs,
        );
    }
}

/// The Markdown report: sizes, then one timing table per clock (ratios
/// against `variants[base]`), the budgets when `base` is the BusyBox
/// baseline, and the image-assembly times.
pub fn report(
    variants: &[Variant],
    results: &Results,
    base: usize,
    assembly: &[Assembly],
    containers: Option<&ContainerCosts>,
    cmd: &str,
) -> String {
    let mut s = String::new();
    let first = &results.measured[0];
    let _ = writeln!(
        s,
        "Measured with `{cmd}` (QEMU 7.2 TCG, 1 vCPU, dnsmasq in a network namespace; median \
         of {} boots of each variant under each clock, interleaved). Times are seconds since \
         the kernel log's zero (after the kernel has decompressed itself) unless the row says \
         otherwise. The icount tables count guest instructions (1 ns each) and do not depend on \
         host load; the wall-clock table does, and is there for information.\n",
        first[0].runs.len()
    );
    table_head(&mut s, "size and memory", variants, base);
    let bytes = |n: f64| mib(n as u64);
    row(
        &mut s,
        "UKI (.efi)",
        &variants
            .iter()
            .map(|v| v.efi.as_deref().map(|p| size(p) as f64))
            .collect::<Vec<_>>(),
        base,
        &bytes,
    );
    let sizes =
        |f: &dyn Fn(&Variant) -> f64| variants.iter().map(|v| Some(f(v))).collect::<Vec<_>>();
    row(
        &mut s,
        "kernel",
        &sizes(&|v| size(&v.vmlinuz) as f64),
        base,
        &bytes,
    );
    row(
        &mut s,
        "initramfs",
        &sizes(&|v| size(&v.initrd) as f64),
        base,
        &bytes,
    );
    row(
        &mut s,
        "init binary",
        &sizes(&|v| v.init_bytes as f64),
        base,
        &bytes,
    );
    row(
        &mut s,
        "smallest guest RAM reaching ready",
        &first
            .iter()
            .map(|m| m.min_mem_mib.map(f64::from))
            .collect::<Vec<_>>(),
        base,
        &|n| format!("{n} MiB"),
    );
    row(
        &mut s,
        "init RSS after ready",
        &first
            .iter()
            .map(|m| m.rss().map(|r| r as f64))
            .collect::<Vec<_>>(),
        base,
        &|n| format!("{n} KiB"),
    );
    for (clock, m) in results.clocks.iter().zip(results.measured) {
        s.push('\n');
        timing_table(&mut s, *clock, variants, m, base);
    }
    // The budgets speak of the BusyBox baseline; a table without it (an
    // `--only` or `--compare` run) has none.
    if variants[base].label == BASELINE_LABEL {
        s.push_str(&budgets(variants, results, base));
        s.push_str(CLOCK_NOTE);
    }
    if !assembly.is_empty() {
        s.push_str(&assembly_report(assembly));
    }
    if let Some(c) = containers {
        s.push_str(&containers_report(c));
    }
    s
}

/// What a container service prints first, in the container-timing boots
/// (the same program as a plain service and in a container).
pub const FIRST_OUTPUT: &str = "bench: first output";

/// Seconds from the kernel's `Run /init` line to the first line with
/// [`FIRST_OUTPUT`].
pub fn init_to_first_output(console: &str) -> Option<f64> {
    Some(find_mark(console, FIRST_OUTPUT, false)? - find_mark(console, INIT_EXEC, false)?)
}

/// What containers add, measured by `cargo xtask bench` side by side with
/// what a user would otherwise run them with.
pub struct ContainerCosts {
    /// cairn-init as benched (with the container helper and reaper).
    pub init_with: u64,
    /// The same built with `--no-default-features` (no container applets).
    pub init_without: u64,
    /// Container runtimes and daemons from Debian 12's packages:
    /// (description, bytes of their binaries).
    pub others: Vec<(String, u64)>,
    /// [`init_to_first_output`] of each boot under `clock`: the program
    /// as a plain service, and in a container from a one-layer image.
    pub plain: Vec<f64>,
    pub container: Vec<f64>,
    pub clock: Clock,
}

/// The containers section of the report: sizes, then the time to the
/// first output line.
pub fn containers_report(c: &ContainerCosts) -> String {
    let mut s = String::from(
        "\nWhat containers (`[[service]] image`) add, next to the runtimes a user would \
         otherwise install (Debian 12's packages; dynamically linked ones without their \
         libraries):\n\n| | bytes | ratio to cairn-init without containers |\n|---|---|---|\n",
    );
    let base = c.init_without as f64;
    let mut line = |what: &str, n: u64| {
        let _ = writeln!(s, "| {what} | {n} | {:.2} |", n as f64 / base);
    };
    line(
        "cairn-init without the container applets (`--no-default-features`)",
        c.init_without,
    );
    line("cairn-init with them (as benched)", c.init_with);
    for (what, n) in &c.others {
        line(what, *n);
    }
    let _ = writeln!(
        s,
        "\nThe container helper and reaper applets add {} to the init (the supervisor's side \
         of a container service, which hands the helper its settings, is in both builds).",
        mib_or_kib(c.init_with.saturating_sub(c.init_without))
    );
    let med = |v: &[f64]| (!v.is_empty()).then(|| median(v.to_vec()));
    let _ = writeln!(
        s,
        "\nInit start (`Run /init`) to the first output line of `busybox echo`, as a plain \
         service and in a container from a one-layer image on the initramfs, tiny kernel \
         with the container profile, {} (median of {} boots each):\n\n\
         | plain service | container | container - plain |\n|---|---|---|",
        c.clock.label(),
        c.plain.len().max(c.container.len())
    );
    let cell = |v: Option<f64>| v.map_or("n/a".to_string(), secs);
    let (p, k) = (med(&c.plain), med(&c.container));
    let _ = writeln!(
        s,
        "| {} | {} | {} |",
        cell(p),
        cell(k),
        cell(p.zip(k).map(|(p, k)| k - p))
    );
    s
}

/// `12.3 KiB` below a MiB, else MiB.
fn mib_or_kib(n: u64) -> String {
    if n < 1 << 20 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        mib(n)
    }
}

/// Why the budgets use `sleep=on` (README, "Measured numbers", says more).
pub const CLOCK_NOTE: &str = "
Why `sleep=on` for the budgets: the two icount tables agree on everything but the DHCP \
exchange, a wait for a packet from dnsmasq on the host. With `sleep=off` an idle guest's \
clock leaps to its next timer, so the wait costs whatever timer the client happened to \
arm (udhcpc's poll timeout: hundreds of ms up to many seconds, see its spread row), not \
network or CPU time. With `sleep=on` the wait is dnsmasq's real reply time, the only \
host-dependent part of these figures (small; the spread rows show it), and everything \
else is still counted in instructions. Under the Debian kernel (SMP) the kernel log's \
zero is aligned to CLOCK_MONOTONIC rather than to the TSC's start, so compare its \
kernel phase by the power-on row.
";

/// The label of the variant on Firecracker's guest kernel configuration.
pub const FIRECRACKER_LABEL: &str = "cairn (Firecracker's kernel config)";

/// Kernel start to ready on the tiny networked appliance, in icount time.
pub const KERNEL_TO_READY_BUDGET: f64 = 0.150;

/// The project's budgets (DESIGN.md, issue 18) checked against the first
/// variant: sizes and memory from the first clock's boots, times in
/// [`BUDGET_CLOCK`].
fn budgets(variants: &[Variant], results: &Results, base: usize) -> String {
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    let v = &variants[0];
    let m = &results.measured[0][0];
    let uki = v.efi.as_deref().map(size);
    let mut s = format!("\nBudgets for {}:\n\n", v.label);
    let _ = writeln!(
        s,
        "- whole UKI at most 3,000,000 bytes: {} bytes, {}",
        uki.map_or("n/a".into(), |n| n.to_string()),
        verdict(uki.map(|n| n <= 3_000_000))
    );
    let _ = writeln!(
        s,
        "- ready in 32 MiB of guest RAM: smallest {}, {}",
        m.min_mem_mib.map_or("n/a".into(), |n| format!("{n} MiB")),
        verdict(m.min_mem_mib.map(|n| n <= 32))
    );
    let _ = writeln!(
        s,
        "- init RSS under 2 MiB: {}, {}",
        m.rss().map_or("n/a".into(), |n| format!("{n} KiB")),
        verdict(m.rss().map(|n| n < 2048))
    );
    let Some(timed) = results.under(BUDGET_CLOCK) else {
        s.push_str("- boot times: not measured under the budgets' clock\n");
        return s;
    };
    let (m, b) = (&timed[0], &timed[base]);
    let ratio = m.init_to_ready() / b.init_to_ready();
    let _ = writeln!(
        s,
        "- userspace boot (init -> ready) at most half of the baseline's, in {}: \
         {} against {}, ratio {ratio:.2}, {}",
        BUDGET_CLOCK.label(),
        secs(m.init_to_ready()),
        secs(b.init_to_ready()),
        verdict(ratio.is_finite().then_some(ratio <= 0.5))
    );
    if let Some(d) = b.dhcp_exchange() {
        let _ = writeln!(
            s,
            "  (the baseline's DHCP exchange alone, which every appliance here waits \
             for, is {:.2} of its userspace boot)",
            d / b.init_to_ready()
        );
    }
    let whole = m.power_on_to_ready();
    let _ = writeln!(
        s,
        "- kernel start -> ready at most {:.0} ms of icount time, decompression included: \
         {} from power-on by the TSC (firmware included), {} from the kernel log's zero, {}",
        KERNEL_TO_READY_BUDGET * 1000.0,
        whole.map_or("n/a".into(), secs),
        secs(m.kernel_to_ready()),
        verdict(whole.map(|t| t <= KERNEL_TO_READY_BUDGET))
    );
    if let Some(fc) = variants.iter().position(|x| x.label == FIRECRACKER_LABEL) {
        let f = &timed[fc];
        let _ = writeln!(
            s,
            "- kernel start -> init well below Firecracker's guest kernel configuration on the \
             same source: {} against {}, ratio {:.2}{}",
            secs(m.kernel_to_init()),
            secs(f.kernel_to_init()),
            m.kernel_to_init() / f.kernel_to_init(),
            match (m.power_on_to_ready(), f.power_on_to_ready()) {
                (Some(a), Some(b)) => format!(
                    "; power-on -> ready {} against {}, ratio {:.2}",
                    secs(a),
                    secs(b),
                    a / b
                ),
                _ => String::new(),
            }
        );
    }
    s
}

/// The boot timeline as an SVG bar chart in [`BUDGET_CLOCK`] time: one bar
/// per variant, per phase (firmware and decompression where the TSC tells,
/// kernel, init to lease, lease to ready).
pub fn timeline_svg(variants: &[Variant], measured: &[Measured]) -> String {
    let own_pre = |m: &Measured| {
        m.power_on_to_ready()
            .map(|p| (p - m.kernel_to_ready()).max(0.0))
    };
    // The BusyBox init cannot read the TSC: its bar takes the firmware
    // and decompression time of a variant booting the same kernel.
    let pres: Vec<f64> = variants
        .iter()
        .zip(measured)
        .map(|(v, m)| {
            own_pre(m)
                .or_else(|| {
                    variants
                        .iter()
                        .zip(measured)
                        .filter(|(o, _)| o.vmlinuz == v.vmlinuz)
                        .find_map(|(_, o)| own_pre(o))
                })
                .unwrap_or(0.0)
        })
        .collect();
    let phases = |i: usize| {
        let m = &measured[i];
        let k = m.kernel_to_init();
        let l = m.init_to_lease();
        let r = (m.init_to_ready() - l).max(0.0);
        [pres[i], k, l, r]
    };
    let max = (0..measured.len())
        .map(|i| phases(i).iter().sum::<f64>())
        .fold(0.1f64, f64::max);
    let (w, left, bar_h) = (980.0, 250.0, 34.0);
    let scale = (w - left - 90.0) / max;
    let h = 80.0 + variants.len() as f64 * (bar_h + 20.0) + 40.0;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='13'>\
         <rect width='100%' height='100%' fill='white'/>\
         <text x='{left}' y='24' font-size='16'>Boot timeline (icount seconds from power-on, median)</text>"
    );
    let colors = [
        ("firmware + decompression", "#f59e0b"),
        ("kernel", "#9aa5b1"),
        ("init to IPv4 lease", "#3b82f6"),
        ("lease to ready", "#10b981"),
    ];
    for (i, (name, c)) in colors.iter().enumerate() {
        let x = 10.0 + i as f64 * 230.0;
        let _ = write!(s, "<rect x='{x}' y='38' width='14' height='14' fill='{c}'/><text x='{}' y='50'>{name}</text>", x + 20.0);
    }
    for (i, v) in variants.iter().enumerate() {
        let y = 70.0 + i as f64 * (bar_h + 20.0);
        let _ = write!(
            s,
            "<text x='10' y='{}'>{}</text>",
            y + bar_h / 2.0 + 5.0,
            v.label
        );
        let mut x = left;
        let p = phases(i);
        for (len, (_, c)) in p.iter().zip(colors.iter()) {
            let wd = (len * scale).max(0.0);
            let _ = write!(
                s,
                "<rect x='{x:.1}' y='{y}' width='{wd:.1}' height='{bar_h}' fill='{c}'/>"
            );
            x += wd;
        }
        let _ = write!(
            s,
            "<text x='{:.1}' y='{}'>{:.3} s</text>",
            x + 6.0,
            y + bar_h / 2.0 + 5.0,
            p.iter().sum::<f64>()
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_console() {
        let console = "\x1b[2J[    0.000000] Linux version\n\
                       [    1.480000] Run /init as init process\n\
                       [    1.500000] cairn: init started\n\
                       [    1.550000] cairn: eth0: DHCPv4 discover sent\n\
                       [    1.600000] cairn: eth0: DHCPv4 lease obtained: 10.0.0.5/24 from 10.0.0.1\n\
                       [    1.700000] cairn: ready\n\
                       bench: init VmRSS:\t    1234 kB\n";
        let t = parse_timeline(console, &CAIRN_MARKS).unwrap();
        assert_eq!(
            (t.init, t.dhcp, t.lease, t.ready),
            (1.48, Some(1.55), 1.6, 1.7)
        );
        assert_eq!(t.rss_kib, Some(1234));
        assert!(parse_timeline("[ 1.0] Run /init as init process\n", &CAIRN_MARKS).is_none());
        let own = "[ 1.0] Run /init as init process\n[ 1.1] cairn: eth0: DHCPv4 lease obtained\n\
                   [ 1.2] cairn: ready in 0.200 s (init RSS 1500 KiB)\n";
        let t = parse_timeline(own, &CAIRN_MARKS).unwrap();
        assert_eq!((t.rss_kib, t.dhcp), (Some(1500), None));
    }

    #[test]
    fn done_needs_a_whole_line() {
        assert!(!has_line("[ 1.2] cairn: rea", "cairn: ready"));
        assert!(!has_line(
            "[ 1.2] cairn: ready (init RSS 15",
            "cairn: ready"
        ));
        assert!(has_line(
            "x\n[ 1.2] cairn: ready (init RSS 1500 KiB)\n",
            "cairn: ready"
        ));
    }

    fn variant(label: &str) -> Variant {
        Variant {
            label: label.into(),
            vmlinuz: "/nonexistent".into(),
            initrd: "/nonexistent".into(),
            efi: None,
            init_bytes: 0,
            cmdline: String::new(),
            marks: CAIRN_MARKS,
        }
    }

    fn run(kernel: f64, ready: f64, rss: u64, power_on: Option<f64>) -> Timeline {
        Timeline {
            init: kernel,
            dhcp: Some(kernel + ready / 4.0),
            lease: kernel + ready / 2.0,
            ready: kernel + ready,
            rss_kib: Some(rss),
            power_on,
        }
    }

    #[test]
    fn budgets_say_met_and_not_met() {
        let v = variant("a");
        let a = Measured {
            runs: vec![run(0.09, 0.005, 1500, Some(0.140))],
            min_mem_mib: Some(33),
        };
        let fc = Measured {
            runs: vec![run(0.36, 0.005, 1500, Some(0.400))],
            min_mem_mib: None,
        };
        let base = Measured {
            runs: vec![run(0.09, 0.02, 1000, None)],
            min_mem_mib: Some(30),
        };
        let variants = [
            v.clone(),
            variant(FIRECRACKER_LABEL),
            variant(BASELINE_LABEL),
        ];
        let measured = vec![
            vec![a.clone(), fc.clone(), base.clone()],
            vec![a.clone(), fc.clone(), base.clone()],
        ];
        let clocks = [BUDGET_CLOCK, Clock::Wall];
        let results = Results {
            clocks: &clocks,
            measured: &measured,
        };
        let b = budgets(&variants, &results, 2);
        assert!(
            b.contains("UKI at most 3,000,000 bytes: n/a bytes, not measured"),
            "{b}"
        );
        assert!(b.contains("smallest 33 MiB, NOT met"), "{b}");
        assert!(b.contains("1500 KiB, met"), "{b}");
        assert!(b.contains("5.0 ms against 20.0 ms, ratio 0.25, met"), "{b}");
        assert!(b.contains("DHCP exchange alone, which every appliance here waits for, is 0.25 of its userspace boot"), "{b}");
        assert!(
            b.contains("140.0 ms from power-on by the TSC (firmware included), 95.0 ms from the kernel log's zero, met"),
            "{b}"
        );
        assert!(
            b.contains("90.0 ms against 360.0 ms, ratio 0.25; power-on -> ready 140.0 ms against 400.0 ms, ratio 0.35"),
            "{b}"
        );

        // The report carries them only against the BusyBox baseline, and
        // one timing table per clock.
        let built = [Assembly {
            manifest: "m.toml".into(),
            same: 0.25,
            changed: 1.5,
            changed_fast: 0.5,
        }];
        let with = report(&variants, &results, 2, &built, None, "x");
        assert!(with.contains("Budgets for a:"), "{with}");
        assert!(
            with.contains("| icount (`-icount shift=0,sleep=on`) | a | "),
            "{with}"
        );
        assert!(
            with.contains("| wall clock (plain TCG, depends on host load) | a | "),
            "{with}"
        );
        // The TSC row only where the TSC counts guest time.
        assert_eq!(with.matches("power-on -> ready (TSC").count(), 1, "{with}");
        assert!(
            with.contains("| power-on -> ready (TSC: firmware, decompression included) | 140.0 ms | 400.0 ms | n/a | n/a |"),
            "{with}"
        );
        assert!(
            with.contains(
                "- m.toml: same inputs again 0.25 s, met; changed contents (initramfs \
                 compressed anew) 0.50 s with `--fast`, met (release setting: 1.50 s)"
            ),
            "{with}"
        );
        let two = vec![vec![a.clone(), base.clone()]];
        let results = Results {
            clocks: &clocks[..1],
            measured: &two,
        };
        let without = report(&[v.clone(), variant("b")], &results, 1, &[], None, "x");
        assert!(!without.contains("Budgets"), "{without}");
        assert!(!without.contains("Image assembly"), "{without}");
        assert!(without.contains("| ratio a / b |"), "{without}");
    }

    #[test]
    fn budget_clock_is_icount_and_clocks_become_qemu_arguments() {
        assert_eq!(
            Clock::Icount { sleep: true }.qemu_args(),
            ["-icount", "shift=0,sleep=on"]
        );
        assert_eq!(
            Clock::Icount { sleep: false }.qemu_args(),
            ["-icount", "shift=0,sleep=off"]
        );
        assert!(Clock::Wall.qemu_args().is_empty());
        assert!(matches!(BUDGET_CLOCK, Clock::Icount { .. }));
        assert!(CLOCKS.contains(&BUDGET_CLOCK) && CLOCKS.contains(&Clock::Wall));
    }

    #[test]
    fn reads_the_power_on_time_off_the_ready_line() {
        let console = "[    0.081000] Run /init as init process\n\
                       [    0.084000] cairn: eth0: DHCPv4 lease obtained: 10.0.0.5/24\n\
                       [    0.089000] cairn: ready (init RSS 1448 KiB; 0.123456 s since power-on by the TSC)\n";
        let t = parse_timeline(console, &CAIRN_MARKS).unwrap();
        assert_eq!(t.power_on, Some(0.123456));
        assert_eq!(t.rss_kib, Some(1448));
        let m = Measured {
            runs: vec![
                t,
                Timeline {
                    power_on: None,
                    ..t
                },
            ],
            min_mem_mib: None,
        };
        assert_eq!(m.power_on_to_ready(), Some(0.123456));
        assert!((m.kernel_to_ready() - 0.089).abs() < 1e-9);
        assert_eq!(m.init_to_ready_spread(), 0.0);
        // The BusyBox baseline has no such line.
        let bb = "[ 0.08] Run /sbin/init as init process\n[ 0.09] bench: lease obtained\n[ 0.1] bench: ready\n";
        assert_eq!(parse_timeline(bb, &BASELINE_MARKS).unwrap().power_on, None);
    }

    #[test]
    fn containers_table_has_sizes_ratios_and_first_output() {
        let console = "[    0.081000] Run /init as init process\n\
                       [    0.093300] cairn: service c started\n\
                       [    0.101300] c: bench: first output\n";
        let t = init_to_first_output(console).unwrap();
        assert!((t - 0.0203).abs() < 1e-9, "{t}");
        assert_eq!(
            init_to_first_output("[ 0.1] Run /init as init process\n"),
            None
        );
        let c = ContainerCosts {
            init_with: 2_192_224,
            init_without: 2_106_208,
            others: vec![("runc 1.1.5".into(), 8_752_456)],
            plain: vec![0.0123, 0.0123],
            container: vec![0.0202, 0.0203, 0.0202],
            clock: BUDGET_CLOCK,
        };
        let r = containers_report(&c);
        assert!(
            r.contains("| cairn-init without the container applets (`--no-default-features`) | 2106208 | 1.00 |"),
            "{r}"
        );
        assert!(
            r.contains("| cairn-init with them (as benched) | 2192224 | 1.04 |"),
            "{r}"
        );
        assert!(r.contains("| runc 1.1.5 | 8752456 | 4.16 |"), "{r}");
        assert!(r.contains("applets add 84.0 KiB to the init"), "{r}");
        assert!(r.contains("(median of 3 boots each)"), "{r}");
        assert!(
            r.contains("\n| plain service | container | container - plain |\n|---|---|---|\n| 12.3 ms | 20.2 ms | 7.9 ms |\n"),
            "{r}"
        );
        // Markdown: no line is indented, no run of spaces.
        assert!(!r.contains("  ") && !r.contains("\n "), "{r}");
        let none = containers_report(&ContainerCosts {
            plain: vec![],
            container: vec![],
            ..c
        });
        assert!(none.contains("| n/a | n/a | n/a |"), "{none}");
        // In the report, after everything else.
        let v = variant("a");
        let m = vec![vec![Measured::default()]];
        let results = Results {
            clocks: &[BUDGET_CLOCK],
            measured: &m,
        };
        let costs = ContainerCosts {
            plain: vec![0.01],
            container: vec![0.02],
            ..none_costs()
        };
        let r = report(&[v], &results, 0, &[], Some(&costs), "x");
        assert!(
            r.contains("What containers (`[[service]] image`) add"),
            "{r}"
        );
    }

    fn none_costs() -> ContainerCosts {
        ContainerCosts {
            init_with: 2,
            init_without: 1,
            others: vec![],
            plain: vec![],
            container: vec![],
            clock: BUDGET_CLOCK,
        }
    }

    #[test]
    fn median_and_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        let m = Measured {
            runs: vec![
                Timeline {
                    init: 1.0,
                    dhcp: Some(1.1),
                    lease: 1.5,
                    ready: 2.0,
                    rss_kib: Some(900),
                    power_on: None,
                },
                Timeline {
                    init: 1.0,
                    dhcp: Some(1.2),
                    lease: 1.3,
                    ready: 1.8,
                    rss_kib: Some(1000),
                    power_on: None,
                },
                Timeline {
                    init: 1.2,
                    dhcp: None,
                    lease: 1.7,
                    ready: 2.4,
                    rss_kib: None,
                    power_on: None,
                },
            ],
            min_mem_mib: Some(40),
        };
        assert!((m.init_to_ready() - 1.0).abs() < 1e-9);
        assert!((m.init_to_ready_fastest() - 0.8).abs() < 1e-9);
        assert!(Measured::default().init_to_ready_fastest().is_nan());
        assert!((m.init_to_ready_spread() - 0.4).abs() < 1e-9);
        assert_eq!(m.rss(), Some(1000));
        // Over the two runs that saw the DISCOVER (0.4 and 0.1), the
        // median being the upper middle value.
        assert!((m.dhcp_exchange().unwrap() - 0.4).abs() < 1e-9);
    }
}

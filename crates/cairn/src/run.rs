//! `cairn run`: boot built outputs in QEMU with the serial console on the
//! terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// AAVMF: OVMF's arm64 build, for QEMU's `virt` board (qemu-efi-aarch64).
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
/// OVMF built with Secure Boot (needs SMM and a secure pflash).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Debian's variable store with its snakeoil PK/KEK/db enrolled and Secure
/// Boot on.
pub const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what} not found at {path}; install it with `cargo xtask deps` ({hint})")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("cannot prepare the EFI boot directory {path}: {source}")]
    EfiDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for QEMU (pid {pid}): {source}")]
    Wait { pid: u32, source: std::io::Error },
    #[error("the guest did not power off within {0:?}; QEMU was stopped")]
    Timeout(Duration),
    #[error("QEMU exited with {0}")]
    Failed(ExitStatus),
    #[error("the guest's kernel panicked: {0}")]
    GuestPanic(String),
    #[error("an arm64 image boots only by direct kernel boot so far; {0} is for x86_64 images")]
    NotForArm64(&'static str),
    #[error("--save-vars needs a UEFI boot (--uefi, --disk or --secure-boot)")]
    SaveVarsWithoutUefi,
    #[error("--bios boots an ISO or a disk image through SeaBIOS; it cannot be combined with {0}")]
    BiosConflict(&'static str),
    #[error("cannot save the OVMF variable store to {path}: {source}")]
    SaveVars {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if /dev/kvm is usable, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Net {
    /// QEMU user networking (slirp) with a virtio-net NIC, IPv6 off so its
    /// DHCPv4 server answers.
    User,
    None,
}

/// How an ISO or disk image is attached to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MediaKind {
    /// A CD-ROM drive (AHCI), read-only.
    Cdrom,
    /// A USB stick: usb-storage on an xHCI controller.
    Usb,
    /// A virtio disk.
    Disk,
}

/// A boot medium: an ISO or a disk image file, and how it is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub path: PathBuf,
    /// QEMU's format name: raw, qcow2, vpc, vhdx.
    pub format: String,
    pub kind: MediaKind,
    /// Open read-only (an ISO: nothing may change it).
    pub readonly: bool,
}

impl Media {
    /// `path` attached as `kind`, its format from its name and first bytes:
    /// `.vhd` is vpc, `.vhdx` vhdx, a qcow2 header qcow2, else raw; an
    /// `.iso` is read-only.
    pub fn from_file(path: &Path, kind: MediaKind) -> Media {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let mut magic = [0u8; 4];
        let qcow2 = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && magic == *b"QFI\xfb";
        let format = match ext.as_str() {
            "vhd" => "vpc",
            "vhdx" => "vhdx",
            _ if qcow2 => "qcow2",
            _ => "raw",
        };
        Media {
            path: path.to_path_buf(),
            format: format.to_string(),
            kind,
            readonly: ext == "iso",
        }
    }

    /// QEMU arguments attaching the medium as the first boot device.
    fn qemu_args(&self) -> Vec<String> {
        let ro = if self.readonly || self.kind == MediaKind::Cdrom {
            ",readonly=on"
        } else {
            ""
        };
        let cd = if self.kind == MediaKind::Cdrom {
            ",media=cdrom"
        } else {
            ""
        };
        let mut a = vec![
            "-drive".to_string(),
            format!(
                "if=none,id=boot0,file={},format={}{cd}{ro}",
                self.path.display(),
                self.format
            ),
        ];
        match self.kind {
            MediaKind::Cdrom => {
                a.extend(["-device".into(), "ide-cd,drive=boot0,bootindex=1".into()])
            }
            MediaKind::Usb => a.extend([
                "-device".into(),
                "qemu-xhci,id=xhci".into(),
                "-device".into(),
                "usb-storage,bus=xhci.0,drive=boot0,bootindex=1".into(),
            ]),
            MediaKind::Disk => a.extend([
                "-device".into(),
                "virtio-blk-pci,drive=boot0,bootindex=1".into(),
            ]),
        }
        a
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub uefi: bool,
    /// Boot `Boot::media` through SeaBIOS (QEMU's BIOS) instead of OVMF.
    pub bios: bool,
    /// Boot through OVMF's Secure Boot build, enforcing signatures (implies
    /// `uefi`).
    pub secure_boot: bool,
    /// The OVMF variable store to start from (copied, never modified);
    /// default: the plain store, or the snakeoil one with `secure_boot`.
    pub vars: Option<PathBuf>,
    /// After a clean power-off, write the variable store as the firmware
    /// left it (keys enrolled by the guest, boot entries) to this file.
    pub save_vars: Option<PathBuf>,
    pub accel: Accel,
    pub mem: String,
    pub net: Net,
    pub timeout: Option<Duration>,
    pub qemu: PathBuf,
    /// Extra arguments appended to QEMU's command line.
    pub extra: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            uefi: false,
            bios: false,
            secure_boot: false,
            vars: None,
            save_vars: None,
            accel: Accel::Tcg,
            mem: "256M".into(),
            net: Net::User,
            timeout: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            extra: Vec::new(),
        }
    }
}

/// The built files `cairn run` boots.
#[derive(Debug, Clone)]
pub struct Boot {
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub efi: PathBuf,
    pub cmdline: String,
    /// With `uefi`: boot this disk image (path, format) instead of a FAT
    /// directory holding the UKI.
    pub disk: Option<(PathBuf, cairn_manifest::ImageFormat)>,
    /// Boot this ISO or disk image, attached as it says, by UEFI (OVMF)
    /// or with `RunOptions::bios` by SeaBIOS; takes precedence over the
    /// rest.
    pub media: Option<Media>,
    /// The machine: a q35 PC (x86_64) or QEMU's arm64 `virt` board.
    pub arch: cairn_manifest::Arch,
}

impl Boot {
    pub fn in_dir(dir: &Path, name: &str, cmdline: &str) -> Self {
        Boot {
            vmlinuz: dir.join(format!("{name}.vmlinuz")),
            initrd: dir.join(format!("{name}.initrd")),
            efi: dir.join(format!("{name}.efi")),
            cmdline: cmdline.to_string(),
            disk: None,
            media: None,
            arch: cairn_manifest::Arch::X86_64,
        }
    }
}

/// The CPU of the arm64 `virt` board: `max` under TCG, with QEMU's cheaper
/// pointer authentication (the architected one costs much translation
/// time).
const VIRT_CPU: &str = "max,pauth-impdef=on";

/// The QEMU program for a machine of `arch`.
pub fn qemu_for(arch: cairn_manifest::Arch) -> PathBuf {
    PathBuf::from(match arch {
        cairn_manifest::Arch::X86_64 => "qemu-system-x86_64",
        cairn_manifest::Arch::Arm64 => "qemu-system-aarch64",
    })
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn require(path: &Path, what: &'static str, hint: &'static str) -> Result<(), RunError> {
    if path.exists() {
        Ok(())
    } else {
        Err(RunError::Missing {
            what,
            path: path.to_path_buf(),
            hint,
        })
    }
}

/// The QEMU command line for `boot`. `work` is a scratch directory that must
/// outlive QEMU (EFI boot dir, writable OVMF variable store).
pub fn qemu_command(boot: &Boot, opts: &RunOptions, work: &Path) -> Result<Command, RunError> {
    let mut cmd = Command::new(&opts.qemu);
    let accel = match opts.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
        Accel::Auto if kvm_usable() => "kvm",
        Accel::Auto => "tcg",
    };
    cmd.args(["-accel", accel, "-m", &opts.mem, "-no-reboot"]);
    cmd.args(["-smp", "1", "-display", "none", "-vga", "none"]);
    if std::io::stdin().is_terminal() {
        // Serial and monitor multiplexed on the terminal: Ctrl-A X quits.
        cmd.args(["-serial", "mon:stdio"]);
    } else {
        cmd.args(["-serial", "stdio", "-monitor", "none"]);
    }
    match opts.net {
        Net::User => cmd.args([
            "-netdev",
            "user,id=n0,ipv6=off",
            "-device",
            "virtio-net-pci,netdev=n0",
        ]),
        Net::None => cmd.args(["-nic", "none"]),
    };
    if boot.arch == cairn_manifest::Arch::Arm64 {
        let other = [
            (opts.bios, "--bios"),
            (opts.secure_boot, "--secure-boot"),
            (boot.media.is_some(), "--iso"),
            (boot.disk.is_some(), "--disk"),
        ];
        if let Some((_, what)) = other.iter().find(|(set, _)| *set) {
            return Err(RunError::NotForArm64(what));
        }
    }
    if let (Some(media), true) = (&boot.media, opts.bios) {
        if opts.secure_boot {
            return Err(RunError::BiosConflict("--secure-boot"));
        }
        if opts.vars.is_some() || opts.save_vars.is_some() {
            return Err(RunError::BiosConflict("--vars or --save-vars"));
        }
        require(&media.path, "the image to boot", "run `cairn build` first")?;
        // QEMU's own firmware is SeaBIOS.
        cmd.args(["-machine", "q35"]);
        cmd.args(media.qemu_args());
    } else if opts.bios {
        return Err(RunError::BiosConflict(
            "a boot without an ISO or disk image",
        ));
    } else if opts.uefi || opts.secure_boot || boot.media.is_some() {
        let arm64 = boot.arch == cairn_manifest::Arch::Arm64;
        let (code, default_vars) = if opts.secure_boot {
            (OVMF_CODE_SECBOOT, OVMF_VARS_SNAKEOIL)
        } else if arm64 {
            (AAVMF_CODE, AAVMF_VARS)
        } else {
            (OVMF_CODE, OVMF_VARS)
        };
        let (firmware, package) = if arm64 {
            ("AAVMF firmware", "package qemu-efi-aarch64")
        } else {
            ("OVMF firmware", "package ovmf")
        };
        require(Path::new(code), firmware, package)?;
        let src_vars = opts
            .vars
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_vars));
        require(
            &src_vars,
            "the OVMF variable store",
            "package ovmf, or --vars FILE",
        )?;
        let vars = work.join("OVMF_VARS.fd");
        // Boot from the disk image when there is one, else from a FAT
        // directory drive holding the UKI.
        let disk = boot.disk.as_ref().filter(|_| opts.uefi);
        let prep = || -> std::io::Result<()> {
            std::fs::create_dir_all(work)?;
            if disk.is_none() && boot.media.is_none() {
                let efi_dir = work.join("esp/EFI/BOOT");
                std::fs::create_dir_all(&efi_dir)?;
                let name = if arm64 { "BOOTAA64.EFI" } else { "BOOTX64.EFI" };
                std::fs::copy(&boot.efi, efi_dir.join(name))?;
            }
            std::fs::copy(&src_vars, &vars)?;
            Ok(())
        };
        if let Some(m) = &boot.media {
            require(&m.path, "the image to boot", "run `cairn build` first")?;
        } else if let Some((img, _)) = disk {
            require(
                img,
                "the disk image",
                "add a [disk] table and run `cairn build`",
            )?;
        } else {
            require(&boot.efi, "the UKI", "run `cairn build` first")?;
        }
        prep().map_err(|source| RunError::EfiDir {
            path: work.to_path_buf(),
            source,
        })?;
        if opts.secure_boot {
            // Secure Boot OVMF keeps its variables in SMM-protected flash.
            cmd.args(["-machine", "q35,smm=on"]);
            cmd.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        } else if arm64 {
            cmd.args(["-machine", "virt", "-cpu", VIRT_CPU]);
        } else {
            cmd.args(["-machine", "q35"]);
        }
        cmd.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={code}"
        ));
        cmd.arg("-drive").arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
        match (&boot.media, disk) {
            (Some(m), _) => cmd.args(m.qemu_args()),
            (None, Some((img, format))) => cmd.arg("-drive").arg(format!(
                "file={},format={},if=virtio",
                img.display(),
                format.qemu_name()
            )),
            (None, None) => cmd.arg("-drive").arg(format!(
                "file=fat:rw:{},format=raw,if=virtio",
                work.join("esp").display()
            )),
        };
    } else {
        if boot.arch == cairn_manifest::Arch::Arm64 {
            // The `virt` board: PL011 serial (console=ttyAMA0), virtio over
            // PCIe, PSCI power off.
            cmd.args(["-machine", "virt", "-cpu", VIRT_CPU]);
        }
        require(&boot.vmlinuz, "the kernel", "run `cairn build` first")?;
        require(&boot.initrd, "the initramfs", "run `cairn build` first")?;
        cmd.arg("-kernel").arg(&boot.vmlinuz);
        cmd.arg("-initrd").arg(&boot.initrd);
        cmd.arg("-append").arg(&boot.cmdline);
    }
    cmd.args(&opts.extra);
    Ok(cmd)
}

/// Boot and wait for QEMU to exit. Returns Ok when the guest powered off
/// (or rebooted: QEMU runs with -no-reboot) and QEMU exited 0.
pub fn run(boot: &Boot, opts: &RunOptions) -> Result<(), RunError> {
    let uefi = (opts.uefi || opts.secure_boot || boot.media.is_some()) && !opts.bios;
    if opts.save_vars.is_some() && !uefi {
        return Err(RunError::SaveVarsWithoutUefi);
    }
    let work = tempfile::Builder::new()
        .prefix("cairn-run-")
        .tempdir()
        .map_err(|source| RunError::EfiDir {
            path: std::env::temp_dir(),
            source,
        })?;
    let mut cmd = qemu_command(boot, opts, work.path())?;
    die_with_parent(&mut cmd);
    // The console passes through cairn, which looks for a kernel panic:
    // with panic=-1 and -no-reboot a panic also ends QEMU with status 0.
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: opts.qemu.display().to_string(),
        source,
    })?;
    let console = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let mut watch = PanicWatch::default();
            pass_through(out, std::io::stdout(), &mut watch);
            watch.finish()
        })
    });
    let status = wait_with_timeout(child, opts.timeout);
    let panicked = console.and_then(|t| t.join().ok()).flatten();
    let status = status?;
    if let Some(line) = panicked {
        return Err(RunError::GuestPanic(line));
    }
    if !status.success() {
        return Err(RunError::Failed(status));
    }
    if let Some(dst) = &opts.save_vars {
        save_vars(&work.path().join("OVMF_VARS.fd"), dst)?;
    }
    Ok(())
}

/// What the kernel prints when it panics.
const KERNEL_PANIC: &str = "Kernel panic - not syncing";

/// Watches a console stream, line by line, for the kernel's panic line.
#[derive(Debug, Default)]
struct PanicWatch {
    line: Vec<u8>,
    found: Option<String>,
}

impl PanicWatch {
    /// Longest line kept; the panic line is short.
    const MAX_LINE: usize = 4096;

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if self.found.is_none() {
                    let text = String::from_utf8_lossy(&self.line);
                    if let Some(i) = text.find(KERNEL_PANIC) {
                        self.found = Some(text[i..].trim_end().to_string());
                    }
                }
                self.line.clear();
            } else if self.line.len() < Self::MAX_LINE {
                self.line.push(b);
            }
        }
    }

    /// The panic line, if the stream had one (also an unfinished last line).
    fn finish(mut self) -> Option<String> {
        self.feed(b"\n");
        self.found
    }
}

/// Copies `from` to `to` as it comes, feeding `watch`, until end of file.
fn pass_through(mut from: impl std::io::Read, mut to: impl std::io::Write, watch: &mut PanicWatch) {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                watch.feed(&buf[..n]);
                // The terminal going away must not stop the watch.
                let _ = to.write_all(&buf[..n]).and_then(|()| to.flush());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Copy the store to a temporary name beside `dst`, sync, rename: `dst` is
/// either the old file or the whole new one.
fn save_vars(src: &Path, dst: &Path) -> Result<(), RunError> {
    let err = |source| RunError::SaveVars {
        path: dst.to_path_buf(),
        source,
    };
    let dir = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let data = std::fs::read(src).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    std::io::Write::write_all(&mut tmp, &data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(dst).map_err(|e| err(e.error))?;
    Ok(())
}

/// Ask the kernel to SIGKILL the child if `cairn run` itself dies, so a
/// killed runner never leaves a QEMU behind.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // one async-signal-safe syscall (prctl), allocating nothing.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// Wait for `child`; past `timeout`, kill it (by its pid) and report it.
pub fn wait_with_timeout(
    mut child: Child,
    timeout: Option<Duration>,
) -> Result<ExitStatus, RunError> {
    let pid = child.id();
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(source) => return Err(RunError::Wait { pid, source }),
        }
        if let Some(t) = timeout {
            if start.elapsed() >= t {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout(t));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_line_is_found_across_reads_and_passed_through() {
        let console = b"[    1.0] Run /init as init process\r\n[    1.2] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n[    1.3] ---[ end Kernel panic";
        // Feed it in small pieces, so the line straddles reads.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(7).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let mut watch = PanicWatch::default();
        pass_through(Trickle(console), &mut out, &mut watch);
        assert_eq!(out, console);
        assert_eq!(
            watch.finish().as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100")
        );
        let mut calm = PanicWatch::default();
        calm.feed(b"reboot: Power down\r\n");
        assert_eq!(calm.finish(), None);
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn direct_boot_command() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["x.vmlinuz", "x.initrd"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let boot = Boot::in_dir(dir.path(), "x", "console=ttyS0 quiet");
        let opts = RunOptions {
            net: Net::None,
            mem: "64M".into(),
            ..RunOptions::default()
        };
        let cmd = qemu_command(&boot, &opts, dir.path()).unwrap();
        let a = args(&cmd);
        let pos = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(a[pos + 1], "console=ttyS0 quiet");
        assert!(a.windows(2).any(|w| w == ["-m", "64M"]));
        assert!(a.windows(2).any(|w| w == ["-nic", "none"]));
        assert!(a.windows(2).any(|w| w == ["-accel", "tcg"]));
        assert!(a.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn accel_choices_reach_qemu() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["x.vmlinuz", "x.initrd"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let boot = Boot::in_dir(dir.path(), "x", "");
        let accel_of = |accel| {
            let opts = RunOptions {
                accel,
                ..RunOptions::default()
            };
            let a = args(&qemu_command(&boot, &opts, dir.path()).unwrap());
            let pos = a.iter().position(|x| x == "-accel").unwrap();
            a[pos + 1].clone()
        };
        assert_eq!(accel_of(Accel::Kvm), "kvm");
        assert_eq!(accel_of(Accel::Tcg), "tcg");
        // auto: KVM only where /dev/kvm opens.
        let auto = if kvm_usable() { "kvm" } else { "tcg" };
        assert_eq!(accel_of(Accel::Auto), auto);
    }

    #[test]
    fn missing_kernel_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let boot = Boot::in_dir(dir.path(), "nope", "");
        let err = qemu_command(&boot, &RunOptions::default(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("nope.vmlinuz"), "{err}");
    }

    #[test]
    fn uefi_command_prepares_esp() {
        if !Path::new(OVMF_VARS).exists() {
            eprintln!("skipped: OVMF not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.efi"), b"MZ").unwrap();
        let boot = Boot::in_dir(dir.path(), "x", "");
        let opts = RunOptions {
            uefi: true,
            ..RunOptions::default()
        };
        let work = dir.path().join("work");
        let cmd = qemu_command(&boot, &opts, &work).unwrap();
        assert!(work.join("esp/EFI/BOOT/BOOTX64.EFI").is_file());
        assert!(work.join("OVMF_VARS.fd").is_file());
        assert!(args(&cmd).iter().any(|a| a.starts_with("file=fat:rw:")));
    }

    #[test]
    fn save_vars_needs_uefi() {
        let opts = RunOptions {
            save_vars: Some(PathBuf::from("/nonexistent/vars.fd")),
            ..RunOptions::default()
        };
        let boot = Boot::in_dir(Path::new("/nonexistent"), "x", "");
        assert!(matches!(
            run(&boot, &opts),
            Err(RunError::SaveVarsWithoutUefi)
        ));
    }

    #[test]
    fn secure_boot_command() {
        if !Path::new(OVMF_VARS_SNAKEOIL).exists() {
            eprintln!("skipped: OVMF not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.efi"), b"MZ").unwrap();
        let boot = Boot::in_dir(dir.path(), "x", "");
        let mut opts = RunOptions {
            secure_boot: true,
            ..RunOptions::default()
        };
        let work = dir.path().join("work");
        let a = args(&qemu_command(&boot, &opts, &work).unwrap());
        assert!(
            a.windows(2).any(|w| w == ["-machine", "q35,smm=on"]),
            "{a:?}"
        );
        assert!(a
            .iter()
            .any(|x| x == "driver=cfi.pflash01,property=secure,value=on"));
        assert!(a.iter().any(|x| x.ends_with(OVMF_CODE_SECBOOT)), "{a:?}");
        assert_eq!(
            std::fs::read(work.join("OVMF_VARS.fd")).unwrap(),
            std::fs::read(OVMF_VARS_SNAKEOIL).unwrap()
        );
        // A given variable store is copied, and a missing one is named.
        let mine = dir.path().join("mine.fd");
        std::fs::write(&mine, b"VARS").unwrap();
        opts.vars = Some(mine.clone());
        let work2 = dir.path().join("work2");
        qemu_command(&boot, &opts, &work2).unwrap();
        assert_eq!(std::fs::read(work2.join("OVMF_VARS.fd")).unwrap(), b"VARS");
        opts.vars = Some(dir.path().join("nope.fd"));
        let e = qemu_command(&boot, &opts, &dir.path().join("w3")).unwrap_err();
        assert!(e.to_string().contains("nope.fd"), "{e}");
    }

    #[test]
    fn media_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("x.iso");
        std::fs::write(&iso, b"CD001").unwrap();
        let boot = |kind| Boot {
            media: Some(Media::from_file(&iso, kind)),
            ..Boot::in_dir(dir.path(), "x", "")
        };
        let bios = RunOptions {
            bios: true,
            ..RunOptions::default()
        };
        let a = args(&qemu_command(&boot(MediaKind::Cdrom), &bios, dir.path()).unwrap());
        assert!(!a.iter().any(|x| x.contains("pflash")), "{a:?}");
        assert!(
            a.iter()
                .any(|x| x.ends_with("format=raw,media=cdrom,readonly=on")),
            "{a:?}"
        );
        assert!(
            a.contains(&"ide-cd,drive=boot0,bootindex=1".to_string()),
            "{a:?}"
        );
        let a = args(&qemu_command(&boot(MediaKind::Usb), &bios, dir.path()).unwrap());
        assert!(
            a.contains(&"usb-storage,bus=xhci.0,drive=boot0,bootindex=1".to_string()),
            "{a:?}"
        );
        let sb = RunOptions {
            bios: true,
            secure_boot: true,
            ..RunOptions::default()
        };
        assert!(matches!(
            qemu_command(&boot(MediaKind::Disk), &sb, dir.path()),
            Err(RunError::BiosConflict(_))
        ));
        let plain = Boot::in_dir(dir.path(), "x", "");
        assert!(matches!(
            qemu_command(&plain, &bios, dir.path()),
            Err(RunError::BiosConflict(_))
        ));
        if Path::new(OVMF_VARS).exists() {
            let a = args(
                &qemu_command(
                    &boot(MediaKind::Disk),
                    &RunOptions::default(),
                    &dir.path().join("w"),
                )
                .unwrap(),
            );
            assert!(a.iter().any(|x| x.contains("pflash")), "{a:?}");
            assert!(
                a.contains(&"virtio-blk-pci,drive=boot0,bootindex=1".to_string()),
                "{a:?}"
            );
            assert!(!a.iter().any(|x| x.starts_with("file=fat")), "{a:?}");
        }
        // Formats by name and content.
        let vhd = dir.path().join("d.vhd");
        std::fs::write(&vhd, b"").unwrap();
        assert_eq!(Media::from_file(&vhd, MediaKind::Disk).format, "vpc");
        let q = dir.path().join("d.img");
        std::fs::write(&q, b"QFI\xfbrest").unwrap();
        let m = Media::from_file(&q, MediaKind::Disk);
        assert_eq!((m.format.as_str(), m.readonly), ("qcow2", false));
    }

    #[test]
    fn timeout_kills_the_child() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let err = wait_with_timeout(child, Some(Duration::from_millis(200))).unwrap_err();
        assert!(matches!(err, RunError::Timeout(_)));
        // The process is gone (reaped): /proc/PID no longer exists.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}

//! `cairn write IMAGE DEVICE`: puts a raw disk image or ISO that cairn
//! built onto a whole block device the user named, after checking that the
//! device is not a partition, not mounted or otherwise in use, does not
//! hold the running system's root filesystem and is large enough; then
//! reads it back and compares SHA-256 sums.
//!
//! The device is never guessed: the user names it, and unless `--yes` is
//! given types its name back on a terminal. Every check runs before the
//! first byte is written.

use std::fmt;
use std::io::{BufRead, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Size of each write (and read-back) in bytes.
const CHUNK: usize = 4 << 20;
const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: {reason}", image.display())]
    Image { image: PathBuf, reason: String },
    #[error("{device}: {reason}; nothing was written")]
    Refused { device: String, reason: String },
    #[error("{device}: {what}: {err}")]
    Io {
        device: String,
        what: String,
        err: std::io::Error,
    },
    #[error(
        "{device}: verification failed: the device's first {len} bytes have SHA-256 {got}, \
         the image {want}"
    )]
    Verify {
        device: String,
        len: u64,
        got: String,
        want: String,
    },
}

fn refused(device: &str, reason: impl Into<String>) -> WriteError {
    WriteError::Refused {
        device: device.to_string(),
        reason: reason.into(),
    }
}

/// Where the kernel's tables are; tests point these at a fake tree.
#[derive(Debug, Clone)]
pub struct Host {
    /// `/sys`.
    pub sys: PathBuf,
    /// `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// `/proc/swaps`.
    pub swaps: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            sys: PathBuf::from("/sys"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            swaps: PathBuf::from("/proc/swaps"),
        }
    }
}

/// One line of /proc/self/mountinfo, the parts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// major:minor of the filesystem's device (0:N for btrfs and the like).
    pub dev: (u32, u32),
    pub mount_point: String,
    /// The mount source (`/dev/sda1`, `tmpfs`, ...).
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `"8:1"` as (8, 1).
pub fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses /proc/self/mountinfo (lines it cannot read are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        // id parent maj:min root mount-point options [optional...] - type source super
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if sep < 6 || f.len() < sep + 3 {
            continue;
        }
        let Some(dev) = parse_dev(f[2]) else { continue };
        v.push(Mount {
            dev,
            mount_point: unescape(f[4]),
            source: unescape(f[sep + 2]),
        });
    }
    v
}

/// A block device (whole disk or partition) as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Kernel name: `sdb`, `loop3`, `nvme0n1`.
    pub name: String,
    pub dev: (u32, u32),
}

/// What is known of the whole device about to be overwritten.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The path as the user gave it.
    pub path: PathBuf,
    pub disk: Block,
    /// Its partitions.
    pub parts: Vec<Block>,
    /// Size in bytes.
    pub size: u64,
    pub model: String,
    pub vendor: String,
    pub transport: String,
    pub removable: bool,
    pub read_only: bool,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        writeln!(
            f,
            "device    {} ({}, {}:{})",
            self.path.display(),
            self.disk.name,
            self.disk.dev.0,
            self.disk.dev.1
        )?;
        writeln!(f, "size      {}", human(self.size))?;
        writeln!(f, "model     {}", or(&self.model))?;
        writeln!(f, "vendor    {}", or(&self.vendor))?;
        writeln!(
            f,
            "transport {}{}",
            or(&self.transport),
            if self.removable { " (removable)" } else { "" }
        )?;
        let parts: Vec<&str> = self.parts.iter().map(|p| p.name.as_str()).collect();
        writeln!(
            f,
            "partitions {}",
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(" ")
            }
        )
    }
}

/// `123456789` as `117.7 MiB (123456789 bytes)`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {} ({bytes} bytes)", units[u])
    }
}

/// A sysfs attribute, trimmed ("" if absent).
fn attr(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The transport the way lsblk names it, from where the device sits in
/// sysfs (its resolved path) and its name.
pub fn transport(name: &str, sys_path: &str) -> String {
    let t = if name.starts_with("loop") {
        "loop"
    } else if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if sys_path.contains("/usb") {
        "usb"
    } else if sys_path.contains("/ata") {
        "sata"
    } else if sys_path.contains("/virtio") {
        "virtio"
    } else if sys_path.contains("/host") && sys_path.contains("/target") {
        "scsi"
    } else {
        ""
    };
    t.to_string()
}

/// Size of the image and the device: refuses when the device is smaller.
pub fn check_size(device: &str, image_len: u64, device_len: u64) -> Result<(), WriteError> {
    if device_len < image_len {
        return Err(refused(
            device,
            format!(
                "the device is too small: {} for an image of {}",
                human(device_len),
                human(image_len)
            ),
        ));
    }
    Ok(())
}

/// Looks up the block device `dev` (major, minor) in sysfs: refuses a
/// partition, returns the whole disk's description otherwise.
pub fn describe(host: &Host, path: &Path, dev: (u32, u32)) -> Result<DeviceInfo, WriteError> {
    let shown = path.display().to_string();
    let link = host.sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
    let dir = std::fs::canonicalize(&link).map_err(|e| {
        refused(
            &shown,
            format!("no block device {}:{} in sysfs ({e})", dev.0, dev.1),
        )
    })?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir.join("partition").exists() {
        let whole = dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| format!("/dev/{}", n.to_string_lossy()))
            .unwrap_or_else(|| "the whole disk".into());
        return Err(refused(
            &shown,
            format!("{name} is a partition: name the whole device ({whole})"),
        ));
    }
    let sectors: u64 = attr(&dir, "size").parse().map_err(|_| {
        refused(
            &shown,
            format!("cannot read the size from {}", dir.join("size").display()),
        )
    })?;
    let mut parts = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.join("partition").exists() {
                if let Some(d) = parse_dev(&attr(&p, "dev")) {
                    parts.push(Block {
                        name: e.file_name().to_string_lossy().into_owned(),
                        dev: d,
                    });
                }
            }
        }
    }
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        transport: transport(&name, &dir.to_string_lossy()),
        model: attr(&dir, "device/model"),
        vendor: attr(&dir, "device/vendor"),
        removable: attr(&dir, "removable") == "1",
        read_only: attr(&dir, "ro") == "1",
        disk: Block { name, dev },
        parts,
        // sysfs counts 512-byte sectors whatever the device's block size.
        size: sectors * 512,
    })
}

/// Refuses a device that is mounted, holds the root filesystem, is used
/// as swap or is held by another device (LVM, RAID, dm-crypt).
pub fn check_unused(host: &Host, d: &DeviceInfo) -> Result<(), WriteError> {
    let shown = d.path.display().to_string();
    let all: Vec<&Block> = std::iter::once(&d.disk).chain(&d.parts).collect();
    let is_ours = |m: &Mount| {
        all.iter()
            .find(|b| b.dev == m.dev || m.source == format!("/dev/{}", b.name))
    };
    let mounts = parse_mountinfo(&std::fs::read_to_string(&host.mountinfo).unwrap_or_default());
    if let Some(b) = mounts
        .iter()
        .filter(|m| m.mount_point == "/")
        .find_map(is_ours)
    {
        return Err(refused(
            &shown,
            format!("{} holds the running system's root filesystem (/)", b.name),
        ));
    }
    let mounted: Vec<String> = mounts
        .iter()
        .filter_map(|m| is_ours(m).map(|b| format!("{} on {}", b.name, m.mount_point)))
        .collect();
    if !mounted.is_empty() {
        return Err(refused(
            &shown,
            format!("mounted: {} (unmount it first)", mounted.join(", ")),
        ));
    }
    let swaps = std::fs::read_to_string(&host.swaps).unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let Some(f) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(b) = all.iter().find(|b| f == format!("/dev/{}", b.name)) {
            return Err(refused(&shown, format!("{} is in use as swap", b.name)));
        }
    }
    for b in &all {
        let holders = host.sys.join(format!("class/block/{}/holders", b.name));
        let held: Vec<String> = std::fs::read_dir(&holders)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !held.is_empty() {
            return Err(refused(
                &shown,
                format!(
                    "{} is in use by {} (LVM, RAID or an encrypted volume)",
                    b.name,
                    held.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses images cairn does not write raw: qcow2, VHD, VHDX.
pub fn check_image(image: &Path) -> Result<u64, WriteError> {
    let bad = |reason: String| WriteError::Image {
        image: image.to_path_buf(),
        reason,
    };
    let raw_hint = "write the raw image instead: set [disk] format = \"raw\" (NAME.img) or use \
                    NAME.iso, or convert it with `qemu-img convert -O raw`";
    let ext = image
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(ext.as_str(), "qcow2" | "vhd" | "vhdx") {
        return Err(bad(format!(
            "a .{ext} image cannot be written to a device as is; {raw_hint}"
        )));
    }
    let mut f = std::fs::File::open(image).map_err(|e| bad(format!("cannot open: {e}")))?;
    let md = f.metadata().map_err(|e| bad(format!("cannot stat: {e}")))?;
    if !md.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let len = md.len();
    if len == 0 {
        return Err(bad("the image is empty".into()));
    }
    let mut head = [0u8; 8];
    let n = f.read(&mut head).unwrap_or(0);
    let mut tail = [0u8; 8];
    if len >= 512 {
        let _ = f
            .seek(SeekFrom::Start(len - 512))
            .and_then(|_| f.read_exact(&mut tail));
    }
    let kind = if n >= 4 && head[..4] == *b"QFI\xfb" {
        Some("qcow2")
    } else if n == 8 && head == *b"vhdxfile" {
        Some("VHDX")
    } else if head == *b"conectix" || tail == *b"conectix" {
        Some("VHD")
    } else {
        None
    };
    if let Some(k) = kind {
        return Err(bad(format!(
            "this is a {k} image, not a raw one; {raw_hint}"
        )));
    }
    if !matches!(ext.as_str(), "img" | "iso") {
        return Err(bad(
            "expected a raw disk image (NAME.img) or an ISO (NAME.iso) built by cairn".into(),
        ));
    }
    Ok(len)
}

/// Options of [`write`].
#[derive(Debug, Default)]
pub struct WriteOptions {
    /// Do not ask for the device name to be typed back.
    pub yes: bool,
    pub host: Host,
}

/// The result of a successful write.
#[derive(Debug)]
pub struct Written {
    pub device: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} to {}; read back and verified, SHA-256 {}",
            human(self.bytes),
            self.device.display(),
            self.sha256
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks everything, asks (unless `yes`), writes `image` to `device`,
/// syncs, reads back and compares.
pub fn write(image: &Path, device: &Path, o: &WriteOptions) -> Result<Written, WriteError> {
    let shown = device.display().to_string();
    let image_len = check_image(image)?;
    let md = std::fs::metadata(device).map_err(|e| refused(&shown, format!("cannot stat: {e}")))?;
    if !md.file_type().is_block_device() {
        return Err(refused(
            &shown,
            "not a block device (name a whole disk such as /dev/sdb)",
        ));
    }
    let rdev = md.rdev();
    let dev = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let info = describe(&o.host, device, dev)?;
    if info.read_only {
        return Err(refused(&shown, "the device is read-only"));
    }
    check_unused(&o.host, &info)?;
    check_size(&shown, image_len, info.size)?;
    // Linux refuses O_EXCL on a block device that is mounted or claimed
    // (a mounted partition, swap, a device-mapper holder), whatever the
    // checks above missed.
    let fd = rustix::fs::open(
        device,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::EXCL | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        if e == rustix::io::Errno::BUSY {
            refused(
                &shown,
                "the device is in use (mounted, or held by another program or the kernel)",
            )
        } else {
            refused(&shown, format!("cannot open it exclusively: {e}"))
        }
    })?;
    let mut dev_file = std::fs::File::from(fd);

    print!("{info}");
    println!("image     {} ({})", image.display(), human(image_len));
    if !o.yes {
        if !std::io::stdin().is_terminal() {
            return Err(refused(
                &shown,
                "not asking without a terminal: pass --yes to confirm",
            ));
        }
        eprint!(
            "Everything on {} will be lost. Type the device name ({}) to go on: ",
            shown, info.disk.name
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| refused(&shown, format!("cannot read the answer: {e}")))?;
        let a = answer.trim();
        if a != info.disk.name && a != format!("/dev/{}", info.disk.name) && a != shown {
            return Err(refused(&shown, "the name typed did not match"));
        }
    }

    let io = |what: &str, err: std::io::Error| WriteError::Io {
        device: shown.clone(),
        what: what.to_string(),
        err,
    };
    let mut src = std::fs::File::open(image).map_err(|e| WriteError::Image {
        image: image.to_path_buf(),
        reason: format!("cannot open: {e}"),
    })?;
    let mut buf = vec![0u8; CHUNK];
    let mut want = Sha256::new();
    let mut done = 0u64;
    let mut next_report = 0u64;
    let step = (image_len / 10).max(64 * MIB);
    while done < image_len {
        let n = ((image_len - done) as usize).min(CHUNK);
        src.read_exact(&mut buf[..n])
            .map_err(|e| WriteError::Image {
                image: image.to_path_buf(),
                reason: format!("read failed at byte {done}: {e}"),
            })?;
        want.update(&buf[..n]);
        dev_file
            .write_all(&buf[..n])
            .map_err(|e| io(&format!("write failed at byte {done}"), e))?;
        done += n as u64;
        if done >= next_report || done == image_len {
            println!(
                "written {} of {} MiB ({}%)",
                done / MIB,
                image_len.div_ceil(MIB),
                done * 100 / image_len
            );
            next_report = done + step;
        }
    }
    println!("syncing");
    dev_file.sync_all().map_err(|e| io("fsync failed", e))?;
    // Drop the device's cached pages so the read-back comes from the
    // device, not from what was just written to memory.
    let _ = rustix::fs::fadvise(&dev_file, 0, None, rustix::fs::Advice::DontNeed);
    println!("reading back");
    dev_file
        .seek(SeekFrom::Start(0))
        .map_err(|e| io("seek failed", e))?;
    let mut got = Sha256::new();
    let mut left = image_len;
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        dev_file
            .read_exact(&mut buf[..n])
            .map_err(|e| io(&format!("read-back failed at byte {}", image_len - left), e))?;
        got.update(&buf[..n]);
        left -= n as u64;
    }
    let (want, got) = (hex(&want.finalize()), hex(&got.finalize()));
    if want != got {
        return Err(WriteError::Verify {
            device: shown,
            len: image_len,
            got,
            want,
        });
    }
    Ok(Written {
        device: device.to_path_buf(),
        bytes: image_len,
        sha256: want,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const MOUNTINFO: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
24 22 8:17 / /media/my\\040stick rw,relatime shared:30 - vfat /dev/sdb1 rw
25 22 0:45 / /srv rw,relatime shared:31 master:7 - btrfs /dev/sdc rw
broken line
";

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[0],
            Mount {
                dev: (8, 2),
                mount_point: "/".into(),
                source: "/dev/sda2".into()
            }
        );
        assert_eq!(m[2].mount_point, "/media/my stick");
        assert_eq!(m[2].dev, (8, 17));
        // Optional fields before the separator are skipped.
        assert_eq!(m[3].source, "/dev/sdc");
        assert_eq!(m[3].dev, (0, 45));
    }

    /// A fake /sys and /proc: `disks` are (name, dev, sectors, partitions
    /// as (name, dev)).
    struct Fake {
        _dir: tempfile::TempDir,
        host: Host,
    }

    /// (name, major:minor, sectors, partitions as (name, major:minor)).
    type FakeDisk<'a> = (&'a str, &'a str, u64, &'a [(&'a str, &'a str)]);

    fn fake(disks: &[FakeDisk], mountinfo: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let devices =
            sys.join("devices/pci0000:00/0000:00:14.0/usb2/2-1/host6/target6:0:0/6:0:0:0/block");
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        for (name, dev, sectors, parts) in disks {
            let d = devices.join(name);
            std::fs::create_dir_all(d.join("device")).unwrap();
            std::fs::create_dir_all(d.join("holders")).unwrap();
            std::fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
            std::fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            std::fs::write(d.join("removable"), "1\n").unwrap();
            std::fs::write(d.join("ro"), "0\n").unwrap();
            std::fs::write(d.join("device/model"), "Cruzer Blade    \n").unwrap();
            std::fs::write(d.join("device/vendor"), "SanDisk \n").unwrap();
            symlink(&d, sys.join("dev/block").join(dev)).unwrap();
            symlink(&d, sys.join("class/block").join(name)).unwrap();
            for (p, pdev) in *parts {
                let pd = d.join(p);
                std::fs::create_dir_all(pd.join("holders")).unwrap();
                std::fs::write(pd.join("partition"), "1\n").unwrap();
                std::fs::write(pd.join("dev"), format!("{pdev}\n")).unwrap();
                std::fs::write(pd.join("size"), "2048\n").unwrap();
                symlink(&pd, sys.join("dev/block").join(pdev)).unwrap();
                symlink(&pd, sys.join("class/block").join(p)).unwrap();
            }
        }
        let mi = dir.path().join("mountinfo");
        std::fs::write(&mi, mountinfo).unwrap();
        let swaps = dir.path().join("swaps");
        std::fs::write(
            &swaps,
            "Filename\tType\tSize\tUsed\tPriority\n/dev/sdd1 partition 1024 0 -2\n",
        )
        .unwrap();
        Fake {
            host: Host {
                sys,
                mountinfo: mi,
                swaps,
            },
            _dir: dir,
        }
    }

    fn err(r: Result<impl std::fmt::Debug, WriteError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn reads_sysfs_attributes() {
        let f = fake(
            &[(
                "sdb",
                "8:16",
                8 << 20 >> 9,
                &[("sdb1", "8:17"), ("sdb2", "8:18")],
            )],
            "",
        );
        let d = describe(&f.host, Path::new("/dev/sdb"), (8, 16)).unwrap();
        assert_eq!(d.disk.name, "sdb");
        assert_eq!(d.size, 8 << 20);
        assert_eq!(d.model, "Cruzer Blade");
        assert_eq!(d.vendor, "SanDisk");
        assert_eq!(d.transport, "usb");
        assert!(d.removable && !d.read_only);
        let names: Vec<_> = d.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sdb1", "sdb2"]);
        let shown = d.to_string();
        assert!(shown.contains("8.0 MiB (8388608 bytes)"), "{shown}");
        assert!(shown.contains("partitions sdb1 sdb2"), "{shown}");
    }

    #[test]
    fn refuses_a_partition() {
        let f = fake(&[("sdb", "8:16", 1 << 20, &[("sdb1", "8:17")])], "");
        let e = err(describe(&f.host, Path::new("/dev/sdb1"), (8, 17)));
        assert_eq!(
            e,
            "/dev/sdb1: sdb1 is a partition: name the whole device (/dev/sdb); nothing was written"
        );
    }

    #[test]
    fn refuses_mounted_root_swap_and_held() {
        let f = fake(
            &[
                ("sda", "8:0", 1 << 20, &[("sda1", "8:1"), ("sda2", "8:2")]),
                ("sdb", "8:16", 1 << 20, &[("sdb1", "8:17")]),
                ("sdc", "8:32", 1 << 20, &[]),
                ("sdd", "8:48", 1 << 20, &[("sdd1", "8:49")]),
                ("sde", "8:64", 1 << 20, &[("sde1", "8:65")]),
                ("sdf", "8:80", 1 << 20, &[]),
            ],
            MOUNTINFO,
        );
        std::fs::create_dir_all(f.host.sys.join("class/block/sde1/holders/dm-0")).unwrap();
        let check = |name: &str, dev| {
            let d = describe(&f.host, &PathBuf::from(format!("/dev/{name}")), dev).unwrap();
            check_unused(&f.host, &d)
        };
        assert!(
            err(check("sda", (8, 0))).contains("sda2 holds the running system's root filesystem")
        );
        assert_eq!(
            err(check("sdb", (8, 16))),
            "/dev/sdb: mounted: sdb1 on /media/my stick (unmount it first); nothing was written"
        );
        // Matched by the source when the device number is btrfs's 0:N.
        assert!(err(check("sdc", (8, 32))).contains("sdc on /srv"));
        assert!(err(check("sdd", (8, 48))).contains("sdd1 is in use as swap"));
        assert!(err(check("sde", (8, 64))).contains("sde1 is in use by dm-0"));
        check("sdf", (8, 80)).unwrap();
    }

    #[test]
    fn compares_sizes() {
        check_size("/dev/sdb", 100, 100).unwrap();
        check_size("/dev/sdb", 100, 101).unwrap();
        assert_eq!(
            err(check_size("/dev/sdb", 110 << 20, 16 << 20)),
            "/dev/sdb: the device is too small: 16.0 MiB (16777216 bytes) for an image of \
             110.0 MiB (115343360 bytes); nothing was written"
        );
    }

    #[test]
    fn refuses_images_that_are_not_raw() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        let mut vhd = vec![0u8; 1024];
        vhd[512..520].copy_from_slice(b"conectix");
        for (name, data, want) in [
            ("a.qcow2", &b"QFI\xfb\0\0\0\x03"[..], "a .qcow2 image"),
            ("a.vhdx", b"x", "a .vhdx image"),
            ("a.img", b"QFI\xfb\0\0\0\x03", "a qcow2 image"),
            ("b.img", b"vhdxfile", "a VHDX image"),
            ("c.img", &vhd, "a VHD image"),
            ("d.raw", &[1u8; 512], "expected a raw disk image"),
            ("e.img", b"", "empty"),
        ] {
            let e = err(check_image(&w(name, data)));
            assert!(e.contains(want), "{name}: {e}");
        }
        assert_eq!(check_image(&w("ok.img", &[0u8; 4096])).unwrap(), 4096);
        assert_eq!(check_image(&w("ok.iso", &[0u8; 2048])).unwrap(), 2048);
    }

    #[test]
    fn refuses_a_regular_file_as_device() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.img");
        std::fs::write(&img, [0u8; 4096]).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, [7u8; 8192]).unwrap();
        let e = err(write(&img, &target, &WriteOptions::default()));
        assert!(e.contains("not a block device"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), [7u8; 8192]);
    }

    #[test]
    fn names_transports() {
        assert_eq!(
            transport("loop0", "/sys/devices/virtual/block/loop0"),
            "loop"
        );
        assert_eq!(
            transport("nvme0n1", "/sys/devices/pci/nvme/nvme0/nvme0n1"),
            "nvme"
        );
        assert_eq!(
            transport(
                "sda",
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda"
            ),
            "sata"
        );
        assert_eq!(
            transport(
                "vda",
                "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda"
            ),
            "virtio"
        );
    }
}

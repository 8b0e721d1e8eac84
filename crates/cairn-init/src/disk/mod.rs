//! Disks at boot: find the `[[mount]]` filesystems by label, partition
//! label or UUID (reading superblocks and GPTs ourselves: no blkid), wait a
//! bounded time for slow devices, format an empty partition when asked,
//! mount. Runs before any service starts, so the `mounts` target is
//! reached when this is done.
//!
//! The partitions are not covered by Secure Boot: every mount is
//! `nosuid,nodev` unless its options say `suid` / `dev`
//! ([`parse_options`]), and two devices that match one mount are an error
//! naming both ([`choose`]), never a first match.
//!
//! A `required` mount that cannot be found or mounted is fatal: the init
//! prints what it looked for and every device it saw, starts no services
//! and stays up showing that (it still reaps, and answers power-off
//! signals). What became of each mount ([`MountReport::status`]) is shown on the
//! status screen and by `cairnctl status`.

#![forbid(unsafe_code)]

mod faults;
pub mod probe;

pub use faults::io_error_device;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_manifest::{FormatPolicy, MountConfig, MountSource, MKFS_EXT4_PATH};
use rustix::mount::MountFlags;

use crate::boot::MountTable;
use crate::info;
use probe::Signature;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{what}: no filesystem found after {wait}s; devices seen: {seen}")]
    NotFound {
        what: String,
        wait: u32,
        seen: String,
    },
    #[error("{what}: {dev} holds {found}, not {fs}")]
    WrongFs {
        what: String,
        dev: String,
        found: String,
        fs: &'static str,
    },
    #[error("{what}: cannot create mount point: {source}")]
    Mkdir {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: mounting {dev} failed: {source}")]
    Mount {
        what: String,
        dev: String,
        source: rustix::io::Errno,
    },
    #[error("{what}: {first} and {second} both match {matched}; refusing to pick one (remove or relabel one of them)")]
    Ambiguous {
        what: String,
        matched: String,
        first: String,
        second: String,
    },
    #[error("{what}: formatting {dev} failed: {detail}")]
    Mkfs {
        what: String,
        dev: String,
        detail: String,
    },
}

/// A block device as the init sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Kernel name: `vda1`.
    pub name: String,
    /// GPT partition name, if it is a partition of a GPT disk.
    pub partlabel: Option<String>,
    pub sig: Signature,
}

impl Device {
    pub fn dev_path(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    fn describe(&self) -> String {
        let mut s = self.name.clone();
        match &self.sig {
            Signature::Ext4 { label, uuid } => s += &format!(" ext4 label={label:?} uuid={uuid}"),
            Signature::Vfat { label, uuid } => s += &format!(" vfat label={label:?} uuid={uuid}"),
            Signature::Erofs { label, uuid } => s += &format!(" erofs label={label:?} uuid={uuid}"),
            Signature::Unknown => s += " (unknown contents)",
            Signature::Empty => s += " (empty)",
        }
        if let Some(p) = &self.partlabel {
            s += &format!(" partlabel={p:?}");
        }
        s
    }
}

fn read_head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_at(path: &Path, offset: u64, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// GPT partition names of whole disk `dev` (512-byte sectors).
fn gpt_names(dev: &Path) -> Vec<(u32, String)> {
    gpt_names_with(|offset, n| read_at(dev, offset, n))
}

/// GPT partition names of a disk read through `read_at(offset, length)`
/// (512-byte sectors): what [`gpt_names`] does with a device, apart from
/// the device (the fuzz target reads from bytes).
pub(crate) fn gpt_names_with(
    mut read_at: impl FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Vec<(u32, String)> {
    let Ok(lba1) = read_at(512, 512) else {
        return Vec::new();
    };
    let Ok(h) = probe::gpt_header(&lba1) else {
        return Vec::new();
    };
    let Some(off) = h.entries_lba.checked_mul(512) else {
        return Vec::new();
    };
    match read_at(off, h.entries_len()) {
        Ok(b) => probe::gpt_names(&h, &b).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Every block device under `/sys/class/block` (except loop, ram and
/// zram devices), with what it holds.
pub fn scan() -> Vec<Device> {
    let sys = Path::new("/sys/class/block");
    let Ok(rd) = std::fs::read_dir(sys) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let entry = sys.join(&name);
        let partno: Option<u32> = std::fs::read_to_string(entry.join("partition"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let partlabel = partno.and_then(|n| {
            let parent = std::fs::canonicalize(&entry).ok()?;
            let disk = parent.parent()?.file_name()?.to_string_lossy().into_owned();
            gpt_names(&Path::new("/dev").join(disk))
                .into_iter()
                .find(|(i, _)| *i == n)
                .map(|(_, l)| l)
        });
        let dev = Path::new("/dev").join(&name);
        let sig = match read_head(&dev, probe::PROBE_BYTES) {
            Ok(b) => probe::probe(&b),
            Err(_) => continue,
        };
        out.push(Device {
            name,
            partlabel,
            sig,
        });
    }
    out
}

/// Two devices match one `[[mount]]`: their kernel names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguous {
    pub first: String,
    pub second: String,
}

/// The only element of `it`, `None` when empty; two are [`Ambiguous`]
/// (anyone who can plug in a disk or write a partition could otherwise
/// choose what is mounted by being found first).
fn only<'a>(mut it: impl Iterator<Item = &'a Device>) -> Result<Option<&'a Device>, Ambiguous> {
    let Some(first) = it.next() else {
        return Ok(None);
    };
    match it.next() {
        Some(second) => Err(Ambiguous {
            first: first.dev_path().display().to_string(),
            second: second.dev_path().display().to_string(),
        }),
        None => Ok(Some(first)),
    }
}

/// The device `m` names, if any; an error when two do.
pub fn find<'a>(m: &MountConfig, devices: &'a [Device]) -> Result<Option<&'a Device>, Ambiguous> {
    only(devices.iter().filter(|d| match (&m.source, &d.sig) {
        (
            MountSource::Label(l),
            Signature::Ext4 { label, .. }
            | Signature::Vfat { label, .. }
            | Signature::Erofs { label, .. },
        ) => {
            label == l || (matches!(d.sig, Signature::Vfat { .. }) && label.eq_ignore_ascii_case(l))
        }
        (
            MountSource::Uuid(u),
            Signature::Ext4 { uuid, .. }
            | Signature::Vfat { uuid, .. }
            | Signature::Erofs { uuid, .. },
        ) => uuid.eq_ignore_ascii_case(u),
        (MountSource::Partlabel(l), _) => d.partlabel.as_deref() == Some(l.as_str()),
        _ => false,
    }))
}

/// With `format = "if-empty"`: an empty partition whose GPT name is the
/// mount's label (or partlabel). A partition with any non-zero byte in its
/// first 64 KiB is never chosen; two empty ones of that name are an error.
pub fn find_empty<'a>(
    m: &MountConfig,
    devices: &'a [Device],
) -> Result<Option<&'a Device>, Ambiguous> {
    if m.format != FormatPolicy::IfEmpty {
        return Ok(None);
    }
    let name = match &m.source {
        MountSource::Label(l) | MountSource::Partlabel(l) => l,
        MountSource::Uuid(_) => return Ok(None),
    };
    only(
        devices
            .iter()
            .filter(|d| d.sig == Signature::Empty && d.partlabel.as_deref() == Some(name.as_str())),
    )
}

/// The device to mount for `m` and whether to format it first: the one
/// `m` names (an empty one found by its partition name is formatted when `m`
/// allows it), else an empty partition to format. Two devices that match
/// are an error naming both.
pub fn choose<'a>(
    m: &MountConfig,
    devices: &'a [Device],
) -> Result<Option<(&'a Device, bool)>, Ambiguous> {
    if let Some(d) = find(m, devices)? {
        let format = d.sig == Signature::Empty && m.format == FormatPolicy::IfEmpty;
        return Ok(Some((d, format)));
    }
    Ok(find_empty(m, devices)?.map(|d| (d, true)))
}

/// Splits fstab options into mount flags and the filesystem's data string.
/// `nosuid` and `nodev` are on unless the options say `suid` or `dev`: a
/// partition is not covered by Secure Boot, so a setuid program or a device
/// node planted on it must give nobody anything.
pub fn parse_options(opts: &str) -> (MountFlags, String) {
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" | "defaults" => {}
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "strictatime" => flags |= MountFlags::STRICTATIME,
            "lazytime" => flags |= MountFlags::LAZYTIME,
            "nosuid" => flags |= MountFlags::NOSUID,
            "suid" => flags -= MountFlags::NOSUID,
            "nodev" => flags |= MountFlags::NODEV,
            "dev" => flags -= MountFlags::NODEV,
            "noexec" => flags |= MountFlags::NOEXEC,
            "exec" => flags -= MountFlags::NOEXEC,
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "dirsync" => flags |= MountFlags::DIRSYNC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

fn sig_name(s: &Signature) -> &'static str {
    match s {
        Signature::Ext4 { .. } => "ext4",
        Signature::Vfat { .. } => "vfat",
        Signature::Erofs { .. } => "erofs",
        Signature::Unknown => "unknown data",
        Signature::Empty => "nothing (empty)",
    }
}

fn mkfs_ext4(dev: &Path, label: &str) -> Result<(), String> {
    let out = std::process::Command::new(MKFS_EXT4_PATH)
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .arg(dev)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {MKFS_EXT4_PATH}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{MKFS_EXT4_PATH} {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Finds (waiting up to `m.wait` seconds), formats if asked and allowed,
/// and mounts one filesystem. Returns the device it mounted and whether it
/// formatted it first.
pub fn mount_one(m: &MountConfig, table: &mut MountTable) -> Result<(String, bool), DiskError> {
    let what = format!("mount {} on {}", m.source, m.path);
    let deadline = Instant::now() + Duration::from_secs(m.wait.into());
    let mut told = false;
    let (dev, format) = loop {
        let devices = scan();
        match choose(m, &devices) {
            Ok(Some((d, format))) => break (d.clone(), format),
            Ok(None) => {}
            Err(Ambiguous { first, second }) => {
                return Err(DiskError::Ambiguous {
                    what,
                    matched: m.source.to_string(),
                    first,
                    second,
                })
            }
        }
        if !told && m.wait > 0 {
            info!("{what}: waiting up to {}s for its device", m.wait);
            told = true;
        }
        if Instant::now() >= deadline {
            let seen = if devices.is_empty() {
                "none".to_string()
            } else {
                devices
                    .iter()
                    .map(Device::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(DiskError::NotFound {
                what,
                wait: m.wait,
                seen,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dev_path = dev.dev_path();
    let dev_name = dev_path.display().to_string();
    if format {
        let label = match &m.source {
            MountSource::Label(l) | MountSource::Partlabel(l) => l.clone(),
            MountSource::Uuid(_) => String::new(),
        };
        info!("formatting {dev_name} as ext4 (label {label}): it is empty");
        mkfs_ext4(&dev_path, &label).map_err(|detail| DiskError::Mkfs {
            what: what.clone(),
            dev: dev_name.clone(),
            detail,
        })?;
    } else {
        let found = sig_name(&dev.sig);
        if found != m.fs.as_str() {
            return Err(DiskError::WrongFs {
                what,
                dev: dev_name,
                found: found.to_string(),
                fs: m.fs.as_str(),
            });
        }
    }
    std::fs::create_dir_all(&m.path).map_err(|source| DiskError::Mkdir {
        what: what.clone(),
        source,
    })?;
    let (flags, data) = parse_options(&m.options);
    let data_c = std::ffi::CString::new(data.clone()).unwrap_or_default();
    let data_opt = (!data.is_empty()).then_some(data_c.as_c_str());
    rustix::mount::mount(
        dev_path.as_path(),
        m.path.as_str(),
        m.fs.as_str(),
        flags,
        data_opt,
    )
    .map_err(|source| DiskError::Mount {
        what,
        dev: dev_name.clone(),
        source,
    })?;
    table.mounted.push(PathBuf::from(&m.path));
    Ok((dev_name, format))
}

/// What became of one `[[mount]]` at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountState {
    /// Mounted from `dev`; `formatted`: it was empty and formatted first.
    Mounted { dev: String, formatted: bool },
    /// No device matched within `wait` seconds.
    NotFound { wait: u32 },
    /// Found but not mounted: the error.
    Failed(String),
    /// Mounted from `dev`, then the kernel reported I/O errors on it:
    /// the first such line.
    Failing { dev: String, error: String },
}

/// One `[[mount]]` and its [`MountState`], for the status screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStatus {
    /// The mount point.
    pub path: String,
    /// `LABEL=...`, `PARTLABEL=...` or `UUID=...`.
    pub source: String,
    pub required: bool,
    pub state: MountState,
}

impl MountStatus {
    fn new(m: &MountConfig, result: &Result<(String, bool), DiskError>) -> MountStatus {
        let state = match result {
            Ok((dev, formatted)) => MountState::Mounted {
                dev: dev.clone(),
                formatted: *formatted,
            },
            Err(DiskError::NotFound { wait, .. }) => MountState::NotFound { wait: *wait },
            Err(e) => {
                // The error without its "mount SOURCE on PATH: " prefix,
                // which the status row shows already.
                let text = e.to_string();
                let prefix = format!("mount {} on {}: ", m.source, m.path);
                MountState::Failed(text.strip_prefix(&prefix).unwrap_or(&text).to_string())
            }
        };
        MountStatus {
            path: m.path.clone(),
            source: m.source.to_string(),
            required: m.required,
            state,
        }
    }
}

/// The outcome of [`mount_all`].
#[derive(Debug, Default)]
pub struct MountReport {
    /// A required mount failed: services must not start.
    pub fatal: bool,
    /// Mount points that are mounted.
    pub mounted: Vec<String>,
    /// What became of each `[[mount]]`, in manifest order, for the status
    /// screen and `cairnctl status`.
    pub status: Vec<MountStatus>,
}

/// Mounts every `[[mount]]` in order, logging each outcome. A failed
/// required mount is reported as FATAL with everything the init knows.
pub fn mount_all(mounts: &[MountConfig], table: &mut MountTable) -> MountReport {
    let mut report = MountReport::default();
    for m in mounts {
        let result = mount_one(m, table);
        report.status.push(MountStatus::new(m, &result));
        match result {
            Ok((dev, _)) => {
                info!("mounted {dev} ({}) on {}", m.source, m.path);
                report.mounted.push(m.path.clone());
            }
            Err(e) if m.required => {
                info!("FATAL: required {e}");
                report.fatal = true;
            }
            Err(e) => info!("{e} (not required: boot goes on)"),
        }
    }
    if !mounts.is_empty() && !report.fatal {
        info!("mounts done");
    }
    report
}

/// The disk stage of boot (PID 1, after modules are loaded, before any
/// service): mount the `[[mount]]`s and create the log directory. The
/// secondary config on one of them is [`crate::config::settle`]'s.
pub fn prepare(cfg: &cairn_manifest::SystemConfig, table: &mut MountTable) -> MountReport {
    if cfg.mounts.is_empty() {
        return MountReport::default();
    }
    let report = mount_all(&cfg.mounts, table);
    if report.fatal {
        info!("FATAL: a required filesystem is missing: no services will be started");
        return report;
    }
    // The log directory usually lives on one of these mounts; the log
    // itself opens it later.
    if let Some(dir) = &cfg.log.dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            info!("cannot create log directory {dir}: {e}");
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_manifest::FsType;

    fn mc(source: MountSource, format: FormatPolicy) -> MountConfig {
        MountConfig {
            source,
            path: "/data".into(),
            fs: FsType::Ext4,
            options: String::new(),
            format,
            required: true,
            wait: 0,
        }
    }

    fn devs() -> Vec<Device> {
        vec![
            Device {
                name: "vda1".into(),
                partlabel: Some("ESP".into()),
                sig: Signature::Vfat {
                    label: "ESP".into(),
                    uuid: "1234-ABCD".into(),
                },
            },
            Device {
                name: "vda2".into(),
                partlabel: Some("CONFIG".into()),
                sig: Signature::Ext4 {
                    label: "CONFIG".into(),
                    uuid: "00010203-0405-0607-0809-0a0b0c0d0e0f".into(),
                },
            },
            Device {
                name: "vda3".into(),
                partlabel: Some("DATA".into()),
                sig: Signature::Empty,
            },
            Device {
                name: "vda4".into(),
                partlabel: Some("USED".into()),
                sig: Signature::Unknown,
            },
        ]
    }

    #[test]
    fn finds_by_label_partlabel_uuid() {
        let d = devs();
        let f = |s| {
            find(&mc(s, FormatPolicy::Never), &d)
                .unwrap()
                .map(|d| d.name.clone())
        };
        assert_eq!(
            f(MountSource::Label("CONFIG".into())).as_deref(),
            Some("vda2")
        );
        assert_eq!(f(MountSource::Label("esp".into())).as_deref(), Some("vda1"));
        assert_eq!(f(MountSource::Label("config".into())), None);
        assert_eq!(
            f(MountSource::Partlabel("DATA".into())).as_deref(),
            Some("vda3")
        );
        assert_eq!(
            f(MountSource::Uuid(
                "00010203-0405-0607-0809-0A0B0C0D0E0F".into()
            ))
            .as_deref(),
            Some("vda2")
        );
        assert_eq!(
            f(MountSource::Uuid("1234-abcd".into())).as_deref(),
            Some("vda1")
        );
        assert_eq!(f(MountSource::Label("DATA".into())), None);
    }

    #[test]
    fn formats_only_empty_partitions_when_asked() {
        let d = devs();
        let data = MountSource::Label("DATA".into());
        assert!(find_empty(&mc(data.clone(), FormatPolicy::Never), &d)
            .unwrap()
            .is_none());
        assert_eq!(
            find_empty(&mc(data, FormatPolicy::IfEmpty), &d)
                .unwrap()
                .map(|d| d.name.as_str()),
            Some("vda3")
        );
        // Non-zero bytes: never formatted.
        let used = MountSource::Partlabel("USED".into());
        assert!(find_empty(&mc(used, FormatPolicy::IfEmpty), &d)
            .unwrap()
            .is_none());
        let cfg = MountSource::Label("CONFIG".into());
        assert!(find_empty(&mc(cfg, FormatPolicy::IfEmpty), &d)
            .unwrap()
            .is_none());
    }

    #[test]
    fn chooses_what_to_mount_and_whether_to_format() {
        let d = devs();
        let pick = |s, f| {
            choose(&mc(s, f), &d)
                .unwrap()
                .map(|(d, fmt)| (d.name.clone(), fmt))
        };
        // Found by partition name and empty: formatted only when allowed.
        let data = MountSource::Partlabel("DATA".into());
        assert_eq!(
            pick(data.clone(), FormatPolicy::IfEmpty),
            Some(("vda3".into(), true))
        );
        assert_eq!(
            pick(data, FormatPolicy::Never),
            Some(("vda3".into(), false))
        );
        // By label: the empty partition of that GPT name.
        assert_eq!(
            pick(MountSource::Label("DATA".into()), FormatPolicy::IfEmpty),
            Some(("vda3".into(), true))
        );
        // A filesystem with data is never formatted.
        assert_eq!(
            pick(
                MountSource::Partlabel("CONFIG".into()),
                FormatPolicy::IfEmpty
            ),
            Some(("vda2".into(), false))
        );
        assert_eq!(
            pick(MountSource::Partlabel("USED".into()), FormatPolicy::IfEmpty),
            Some(("vda4".into(), false))
        );
        assert_eq!(
            pick(MountSource::Label("NONE".into()), FormatPolicy::IfEmpty),
            None
        );
    }

    /// `devs()` with `extra` added (a second disk).
    fn with(extra: Device) -> Vec<Device> {
        let mut d = devs();
        d.push(extra);
        d
    }

    #[test]
    fn two_devices_that_match_are_an_error_naming_both() {
        let ext4 = |label: &str, uuid: &str| Signature::Ext4 {
            label: label.into(),
            uuid: uuid.into(),
        };
        fn both<T>(first: &str, second: &str) -> Result<T, Ambiguous> {
            Err(Ambiguous {
                first: first.into(),
                second: second.into(),
            })
        }
        // The same filesystem label on a second disk.
        let d = with(Device {
            name: "vdb1".into(),
            partlabel: Some("OTHER".into()),
            sig: ext4("CONFIG", "11111111-0405-0607-0809-0a0b0c0d0e0f"),
        });
        let m = mc(MountSource::Label("CONFIG".into()), FormatPolicy::Never);
        assert_eq!(find(&m, &d), both("/dev/vda2", "/dev/vdb1"));
        assert_eq!(
            choose(&m, &d).map(|c| c.map(|(d, _)| d.name.clone())),
            both("/dev/vda2", "/dev/vdb1")
        );
        // A FAT label matches case-insensitively: that is a match too.
        let d = with(Device {
            name: "vdb1".into(),
            partlabel: None,
            sig: Signature::Vfat {
                label: "esp".into(),
                uuid: "9999-0000".into(),
            },
        });
        let m = mc(MountSource::Label("ESP".into()), FormatPolicy::Never);
        assert_eq!(find(&m, &d), both("/dev/vda1", "/dev/vdb1"));
        // The same partition name.
        let d = with(Device {
            name: "vdb2".into(),
            partlabel: Some("CONFIG".into()),
            sig: Signature::Unknown,
        });
        let m = mc(MountSource::Partlabel("CONFIG".into()), FormatPolicy::Never);
        assert_eq!(find(&m, &d), both("/dev/vda2", "/dev/vdb2"));
        // The same UUID (a cloned disk), in another case.
        let d = with(Device {
            name: "vdc".into(),
            partlabel: None,
            sig: ext4("X", "00010203-0405-0607-0809-0A0B0C0D0E0F"),
        });
        let m = mc(
            MountSource::Uuid("00010203-0405-0607-0809-0a0b0c0d0e0f".into()),
            FormatPolicy::Never,
        );
        assert_eq!(find(&m, &d), both("/dev/vda2", "/dev/vdc"));
        // Two empty partitions of the name to format: neither is formatted.
        let d = with(Device {
            name: "vdb3".into(),
            partlabel: Some("DATA".into()),
            sig: Signature::Empty,
        });
        let m = mc(MountSource::Label("DATA".into()), FormatPolicy::IfEmpty);
        assert_eq!(
            choose(&m, &d).map(|c| c.map(|(d, _)| d.name.clone())),
            both("/dev/vda3", "/dev/vdb3")
        );
        // One match elsewhere does not make a label ambiguous.
        let d = with(Device {
            name: "vdb1".into(),
            partlabel: Some("CONFIG2".into()),
            sig: ext4("CONFIG2", "22222222-0405-0607-0809-0a0b0c0d0e0f"),
        });
        let m = mc(MountSource::Label("CONFIG".into()), FormatPolicy::Never);
        assert_eq!(find(&m, &d).unwrap().map(|d| d.name.as_str()), Some("vda2"));
        // The error's text, as logged and shown on the status screen.
        let e = DiskError::Ambiguous {
            what: "mount LABEL=CONFIG on /data".into(),
            matched: "LABEL=CONFIG".into(),
            first: "/dev/vda2".into(),
            second: "/dev/vdb1".into(),
        };
        assert_eq!(
            e.to_string(),
            "mount LABEL=CONFIG on /data: /dev/vda2 and /dev/vdb1 both match LABEL=CONFIG; refusing to pick one (remove or relabel one of them)"
        );
        let m = mc(MountSource::Label("CONFIG".into()), FormatPolicy::Never);
        let st = MountStatus::new(&m, &Err(e)).state;
        assert!(
            matches!(&st, MountState::Failed(t) if t.starts_with("/dev/vda2 and /dev/vdb1")),
            "{st:?}"
        );
    }

    #[test]
    fn mount_status_from_each_outcome() {
        let m = mc(MountSource::Label("DATA".into()), FormatPolicy::IfEmpty);
        let st = |r| MountStatus::new(&m, &r).state;
        assert_eq!(
            st(Ok(("/dev/vda3".into(), true))),
            MountState::Mounted {
                dev: "/dev/vda3".into(),
                formatted: true
            }
        );
        let not_found = DiskError::NotFound {
            what: "mount LABEL=DATA on /data".into(),
            wait: 5,
            seen: "vda".into(),
        };
        assert_eq!(st(Err(not_found)), MountState::NotFound { wait: 5 });
        // The error without the "mount SOURCE on PATH: " the row shows.
        let failed = DiskError::Mount {
            what: "mount LABEL=DATA on /data".into(),
            dev: "/dev/vda3".into(),
            source: rustix::io::Errno::INVAL,
        };
        let text = failed.to_string();
        assert_eq!(
            st(Err(failed)),
            MountState::Failed(text["mount LABEL=DATA on /data: ".len()..].to_string())
        );
        let full = MountStatus::new(&m, &Ok(("/dev/vda3".into(), false)));
        assert_eq!(
            (full.path.as_str(), full.source.as_str(), full.required),
            ("/data", "LABEL=DATA", true)
        );
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (f, d) = parse_options("noatime,ro,data=journal,journal_checksum,sync");
        assert!(f.contains(MountFlags::NOATIME | MountFlags::RDONLY | MountFlags::SYNCHRONOUS));
        assert_eq!(d, "data=journal,journal_checksum");
        // nosuid and nodev unless asked otherwise.
        let safe = MountFlags::NOSUID | MountFlags::NODEV;
        assert_eq!(parse_options(""), (safe, String::new()));
        assert!(f.contains(safe));
        let (f, d) = parse_options("suid");
        assert_eq!((f, d.as_str()), (MountFlags::NODEV, ""));
        let (f, d) = parse_options("dev,noatime");
        assert_eq!(
            (f, d.as_str()),
            (MountFlags::NOSUID | MountFlags::NOATIME, "")
        );
        assert_eq!(parse_options("suid,dev").0, MountFlags::empty());
        // The last word wins, as in fstab.
        assert_eq!(parse_options("suid,nosuid").0, safe);
        assert_eq!(parse_options("noexec,exec").0, safe);
    }
}

//! The disk parts of the manifest: `[disk]`, `[[partition]]`, `[[mount]]`,
//! `[config]`.
//!
//! ```toml
//! [disk]                         # write NAME.img
//! size = "256M"                  # optional; default: what the partitions need
//! format = "raw"                 # raw | qcow2
//! esp_size = "64M"               # the FAT32 EFI system partition
//!
//! [[partition]]
//! label = "DATA"                 # GPT partition name and filesystem label
//! size = "64M"
//! fs = "ext4"                    # ext4 | vfat | none (left unformatted, all zeros)
//! content = "data"               # optional: a directory copied in, relative to the manifest
//!
//! [[mount]]
//! label = "DATA"                 # or partlabel = "..." or uuid = "..."
//! path = "/data"
//! fs = "ext4"                    # ext4 | vfat
//! options = "noatime"            # fstab-style options; nosuid,nodev unless "suid" / "dev"
//! format = "if-empty"            # never (default) | if-empty (ext4 only)
//! required = true                # missing = fatal, services are not started
//! wait = 5                       # seconds to wait for the device
//!
//! [config]
//! mount = "/data"                # secondary config at /data/cairn.toml
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::diagnostic::{Located, Span};
use crate::runtime::{FormatPolicy, FsType, MountConfig, MountSource, DEFAULT_MOUNT_WAIT_SECS};

/// One MiB: partitions are aligned to and sized in whole MiB.
pub const MIB: u64 = 1 << 20;
/// The ESP size when `[disk] esp_size` is not set.
pub const DEFAULT_ESP_SIZE: u64 = 64 * MIB;
/// FAT32 needs at least 65525 clusters; with 512-byte clusters that is
/// about 33 MiB.
pub const MIN_ESP_SIZE: u64 = 34 * MIB;
/// Smallest data partition.
pub const MIN_PARTITION_SIZE: u64 = MIB;
/// Largest disk image (1 TiB): a guard against typos.
pub const MAX_DISK_SIZE: u64 = 1 << 40;
/// Label of the EFI system partition.
pub const ESP_LABEL: &str = "ESP";

/// Everything the disk keys can get wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DiskInvalid {
    #[error("invalid size {0}: expected a number of bytes or a string such as \"64M\", \"512K\", \"2G\" (a whole number of MiB)")]
    Size(String),
    #[error("`{key}` is {size} bytes; at least {min} bytes ({} MiB) are needed", min / MIB)]
    TooSmall {
        key: &'static str,
        size: u64,
        min: u64,
    },
    #[error("the disk would be {0} bytes; at most 1 TiB is allowed")]
    TooLarge(u64),
    #[error("[disk] size is {size} bytes but the partitions need {needed} bytes (ESP, partitions, 1 MiB for each GPT copy)")]
    DiskTooSmall { size: u64, needed: u64 },
    #[error("[[partition]] entries need a [disk] table")]
    PartitionWithoutDisk,
    #[error("invalid label `{label}`: {reason}")]
    Label { label: String, reason: &'static str },
    #[error("duplicate partition label `{label}` (already used on line {first_line})")]
    DuplicateLabel { label: String, first_line: usize },
    #[error("`content` needs a filesystem: a partition with fs = \"none\" is left empty")]
    ContentWithoutFs,
    #[error("a [[mount]] names its filesystem with exactly one of `label`, `partlabel` or `uuid`")]
    MountSource,
    #[error("invalid uuid `{0}`: expected 8-4-4-4-12 hex digits (ext4) or XXXX-XXXX (FAT)")]
    Uuid(String),
    #[error("invalid mount point `{path}`: {reason}")]
    MountPath { path: String, reason: &'static str },
    #[error("`{path}` is already mounted by the entry on line {first_line}")]
    DuplicateMount { path: String, first_line: usize },
    #[error("format = \"if-empty\" is only supported for ext4 (mkfs.ext4 is added to the image)")]
    FormatFs,
    #[error("invalid mount options `{0}`: expected comma-separated options without spaces or NUL")]
    Options(String),
    #[error("mount option `{0}` gives up ext4's power-cut safety (journalled metadata, ordered data, write barriers): cairn refuses it")]
    UnsafeOption(String),
    #[error("`wait` must be between 0 and 600 seconds, got {0}")]
    Wait(i64),
    #[error("[config] mount = `{0}` must be the `path` of a [[mount]]")]
    ConfigMount(String),
}

/// ext4 mount options that would let a power cut corrupt the filesystem
/// or expose stale data: without them ext4 runs with the kernel's
/// defaults, `data=ordered` and write barriers on.
pub const UNSAFE_EXT4_OPTIONS: &[&str] = &[
    "nobarrier",
    "barrier=0",
    "data=writeback",
    "noload",
    "norecovery",
    "journal_async_commit",
];

/// `[disk]`: write `NAME.img`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// Total size in bytes (a multiple of 1 MiB).
    pub size: u64,
    /// `format`: `raw` (default) or `qcow2`.
    pub format: ImageFormat,
    /// `esp_size`: bytes of the FAT32 ESP; default 64 MiB.
    pub esp_size: u64,
    /// With `[update]`: the ESP also holds the A/B slots
    /// (`EFI/cairn/A.efi` = the built UKI; B is written by updates).
    pub ab_slots: bool,
    /// `[[partition]]` entries after the ESP, in manifest order.
    pub partitions: Vec<PartitionSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    #[default]
    Raw,
    Qcow2,
    /// Fixed-size VHD (qemu-img `vpc`, `subformat=fixed`): what Azure and
    /// Hyper-V take.
    Vhd,
    /// Dynamic VHDX (qemu-img `vhdx`): Hyper-V's own format.
    Vhdx,
}

impl ImageFormat {
    /// The output file's extension: `img` for raw and qcow2 (as before),
    /// `vhd` and `vhdx` for those (Hyper-V goes by the extension).
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Raw | ImageFormat::Qcow2 => "img",
            ImageFormat::Vhd => "vhd",
            ImageFormat::Vhdx => "vhdx",
        }
    }

    /// QEMU's (and qemu-img's) name of the format.
    pub fn qemu_name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vhd => "vpc",
            ImageFormat::Vhdx => "vhdx",
        }
    }
}

/// `[iso]`: also write `NAME.iso`, a hybrid image that boots from CD and
/// from a USB stick or disk, under BIOS (isolinux) and UEFI (the UKI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoSpec {
    /// `label`: the ISO 9660 volume id, `[A-Z0-9_]`, at most 32
    /// characters; default: the name in upper case, `-` as `_`.
    pub label: String,
    /// `bios`: add the isolinux boot path for legacy BIOS (default true).
    /// Without it the ISO boots by UEFI only and is about half the size.
    pub bios: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIso {
    #[serde(default)]
    pub label: Option<Spanned<String>>,
    #[serde(default)]
    pub bios: Option<bool>,
}

/// The default ISO volume id for appliance `name`.
pub fn default_iso_label(name: &str) -> String {
    name.chars()
        .take(32)
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// ISO 9660 volume ids are d-characters: `[A-Z0-9_]`, at most 32.
pub fn check_iso_label(label: &str) -> Result<(), DiskInvalid> {
    let reason = if label.is_empty() {
        "must not be empty"
    } else if label.len() > 32 {
        "at most 32 characters (the ISO 9660 limit)"
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        "expected upper-case letters, digits and `_` (ISO 9660 d-characters)"
    } else {
        return Ok(());
    };
    Err(DiskInvalid::Label {
        label: label.to_string(),
        reason,
    })
}

pub(crate) fn build_iso(
    name: &str,
    raw: Option<Spanned<RawIso>>,
) -> Result<Option<IsoSpec>, Failure> {
    let Some(raw) = raw else { return Ok(None) };
    let r = raw.into_inner();
    let label = match &r.label {
        Some(l) => {
            check_iso_label(l.get_ref()).map_err(|e| (span(l), e))?;
            l.get_ref().clone()
        }
        None => default_iso_label(name),
    };
    Ok(Some(IsoSpec {
        label,
        bios: r.bios.unwrap_or(true),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionFs {
    Ext4,
    Vfat,
    None,
    /// A container image's root filesystem (`storage = "erofs"`): made by
    /// the builder, never written in a `[[partition]]`. Its `content` is
    /// the erofs image file.
    #[serde(skip_deserializing)]
    Erofs,
}

/// A `[[partition]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// GPT partition name and filesystem label.
    pub label: Located<String>,
    /// Bytes, a multiple of 1 MiB.
    pub size: u64,
    pub fs: PartitionFs,
    /// A host directory whose tree is copied in (resolved against the
    /// manifest's directory).
    pub content: Option<Located<PathBuf>>,
}

/// A `[[mount]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub config: MountConfig,
    /// Span of the whole entry.
    pub span: Span,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDisk {
    #[serde(default)]
    pub size: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub format: ImageFormat,
    #[serde(default)]
    pub esp_size: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPartition {
    pub label: Spanned<String>,
    pub size: Spanned<toml::Value>,
    pub fs: PartitionFs,
    #[serde(default)]
    pub content: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMount {
    #[serde(default)]
    pub label: Option<Spanned<String>>,
    #[serde(default)]
    pub partlabel: Option<Spanned<String>>,
    #[serde(default)]
    pub uuid: Option<Spanned<String>>,
    pub path: Spanned<String>,
    pub fs: Spanned<FsType>,
    #[serde(default)]
    pub options: Option<Spanned<String>>,
    #[serde(default)]
    pub format: Option<Spanned<FormatPolicy>>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub wait: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub mount: Spanned<String>,
}

type Failure = (Span, DiskInvalid);

fn span<T>(s: &Spanned<T>) -> Span {
    s.span().into()
}

fn line_of(text: &str, span: Span) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `"64M"`, `"512K"`, `"2G"`, `"1T"` (binary units, optional `iB`), or a
/// bare integer of bytes. The result must be a whole number of MiB.
pub fn parse_size(v: &toml::Value) -> Result<u64, DiskInvalid> {
    let bad = || DiskInvalid::Size(v.to_string());
    let bytes = match v {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad())?,
        toml::Value::String(s) => {
            let t = s.trim();
            let t = t
                .strip_suffix("iB")
                .or_else(|| t.strip_suffix('B'))
                .unwrap_or(t);
            let (num, mult) = match t.char_indices().last() {
                Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
                Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
                Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
                Some((i, 'T' | 't')) => (&t[..i], 1 << 40),
                _ => (t, 1),
            };
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u64 = num.parse().map_err(|_| bad())?;
            n.checked_mul(mult).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if bytes == 0 || bytes % MIB != 0 {
        return Err(bad());
    }
    Ok(bytes)
}

/// A label that works as GPT name, ext4 label (16 bytes) and FAT label
/// (11 characters, upper case): `[A-Z0-9_-]`, 1 to 11 characters.
pub fn check_label(label: &str) -> Result<(), DiskInvalid> {
    let reason = if label.is_empty() {
        "must not be empty"
    } else if label.len() > 11 {
        "at most 11 characters (the FAT limit)"
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        "expected upper-case letters, digits, `_` and `-`"
    } else if label == ESP_LABEL {
        "`ESP` is the EFI system partition's label"
    } else {
        return Ok(());
    };
    Err(DiskInvalid::Label {
        label: label.to_string(),
        reason,
    })
}

fn check_mount_label(label: &str) -> Result<(), DiskInvalid> {
    let reason = if label.is_empty() {
        "must not be empty"
    } else if label.len() > 36 {
        "at most 36 characters"
    } else if label.chars().any(|c| c.is_control()) {
        "control characters are not allowed"
    } else {
        return Ok(());
    };
    Err(DiskInvalid::Label {
        label: label.to_string(),
        reason,
    })
}

/// ext4 `8-4-4-4-12` or FAT `XXXX-XXXX`, hex.
pub fn check_uuid(u: &str) -> Result<(), DiskInvalid> {
    let groups: Vec<&str> = u.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let shape_ok = lens == [8, 4, 4, 4, 12] || lens == [4, 4];
    if shape_ok
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err(DiskInvalid::Uuid(u.to_string()))
    }
}

/// Paths the init mounts itself, or that would hide the image.
const RESERVED_MOUNTS: [&str; 6] = ["/", "/proc", "/sys", "/dev", "/run", "/etc"];

fn check_mount_path(path: &str) -> Result<(), DiskInvalid> {
    let norm = normalize(path);
    let reason = if !path.starts_with('/') {
        "expected an absolute path"
    } else if path.split('/').any(|c| c == ".." || c == ".") {
        "`.` and `..` are not allowed"
    } else if path.contains('\0') || path.contains(char::is_whitespace) {
        "whitespace and NUL are not allowed"
    } else if RESERVED_MOUNTS.iter().any(|r| {
        let r = normalize(r);
        norm == r || (r == "/proc" || r == "/sys" || r == "/dev") && norm.starts_with(&(r + "/"))
    }) {
        "the init mounts this itself, or mounting there would hide the image"
    } else {
        return Ok(());
    };
    Err(DiskInvalid::MountPath {
        path: path.to_string(),
        reason,
    })
}

/// `/a//b/` -> `/a/b`.
pub fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Whether `path` is `base` or below it.
pub fn is_under(path: &str, base: &str) -> bool {
    let (p, b) = (normalize(path), normalize(base));
    p == b || b == "/" || p.starts_with(&format!("{b}/"))
}

pub(crate) struct DiskParts {
    pub disk: Option<DiskSpec>,
    pub mounts: Vec<Mount>,
    pub config_mount: Option<Located<String>>,
}

pub(crate) fn build(
    text: &str,
    dir: &std::path::Path,
    disk: Option<Spanned<RawDisk>>,
    partitions: Vec<Spanned<RawPartition>>,
    mounts: Vec<Spanned<RawMount>>,
    config: Option<Spanned<RawConfig>>,
) -> Result<DiskParts, Failure> {
    let disk = match disk {
        Some(d) => Some(build_disk(text, dir, d, partitions)?),
        None => {
            if let Some(p) = partitions.first() {
                return Err((span(p), DiskInvalid::PartitionWithoutDisk));
            }
            None
        }
    };
    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut out = Vec::new();
    for m in mounts {
        let whole = span(&m);
        let m = m.into_inner();
        let source = match (&m.label, &m.partlabel, &m.uuid) {
            (Some(l), None, None) => {
                check_mount_label(l.get_ref()).map_err(|e| (span(l), e))?;
                MountSource::Label(l.get_ref().clone())
            }
            (None, Some(l), None) => {
                check_mount_label(l.get_ref()).map_err(|e| (span(l), e))?;
                MountSource::Partlabel(l.get_ref().clone())
            }
            (None, None, Some(u)) => {
                check_uuid(u.get_ref()).map_err(|e| (span(u), e))?;
                MountSource::Uuid(u.get_ref().clone())
            }
            _ => return Err((whole, DiskInvalid::MountSource)),
        };
        check_mount_path(m.path.get_ref()).map_err(|e| (span(&m.path), e))?;
        let key = normalize(m.path.get_ref());
        if let Some(first) = seen.get(&key) {
            return Err((
                span(&m.path),
                DiskInvalid::DuplicateMount {
                    path: m.path.get_ref().clone(),
                    first_line: line_of(text, *first),
                },
            ));
        }
        seen.insert(key, span(&m.path));
        let format = match &m.format {
            Some(f) => {
                if *f.get_ref() == FormatPolicy::IfEmpty && *m.fs.get_ref() != FsType::Ext4 {
                    return Err((span(f), DiskInvalid::FormatFs));
                }
                *f.get_ref()
            }
            None => FormatPolicy::Never,
        };
        let options = match &m.options {
            Some(o) => {
                let v = o.get_ref();
                if v.is_empty()
                    || v.contains(char::is_whitespace)
                    || v.contains('\0')
                    || v.split(',').any(str::is_empty)
                {
                    return Err((span(o), DiskInvalid::Options(v.clone())));
                }
                if *m.fs.get_ref() == FsType::Ext4 {
                    if let Some(bad) = v.split(',').find(|o| UNSAFE_EXT4_OPTIONS.contains(o)) {
                        return Err((span(o), DiskInvalid::UnsafeOption(bad.to_string())));
                    }
                }
                v.clone()
            }
            None => String::new(),
        };
        let wait = match &m.wait {
            Some(w) => match u32::try_from(*w.get_ref()) {
                Ok(s) if s <= 600 => s,
                _ => return Err((span(w), DiskInvalid::Wait(*w.get_ref()))),
            },
            None => DEFAULT_MOUNT_WAIT_SECS,
        };
        out.push(Mount {
            config: MountConfig {
                source,
                path: m.path.into_inner(),
                fs: *m.fs.get_ref(),
                options,
                format,
                required: m.required,
                wait,
            },
            span: whole,
        });
    }
    let config_mount = match config {
        Some(c) => {
            let c = c.into_inner();
            let p = c.mount.get_ref();
            if !out
                .iter()
                .any(|m| normalize(&m.config.path) == normalize(p))
            {
                return Err((span(&c.mount), DiskInvalid::ConfigMount(p.clone())));
            }
            Some(Located::new(normalize(p), span(&c.mount)))
        }
        None => None,
    };
    Ok(DiskParts {
        disk,
        mounts: out,
        config_mount,
    })
}

fn build_disk(
    text: &str,
    dir: &std::path::Path,
    raw: Spanned<RawDisk>,
    partitions: Vec<Spanned<RawPartition>>,
) -> Result<DiskSpec, Failure> {
    let table = span(&raw);
    let d = raw.into_inner();
    let esp_size = match &d.esp_size {
        Some(v) => {
            let s = parse_size(v.get_ref()).map_err(|e| (span(v), e))?;
            if s < MIN_ESP_SIZE {
                return Err((
                    span(v),
                    DiskInvalid::TooSmall {
                        key: "esp_size",
                        size: s,
                        min: MIN_ESP_SIZE,
                    },
                ));
            }
            s
        }
        None => DEFAULT_ESP_SIZE,
    };
    let mut seen: HashMap<String, Span> = HashMap::new();
    let mut parts = Vec::new();
    // 1 MiB before the first partition (MBR, GPT), 1 MiB after the last
    // (backup GPT).
    let mut needed = 2 * MIB + esp_size;
    for p in partitions {
        let p = p.into_inner();
        check_label(p.label.get_ref()).map_err(|e| (span(&p.label), e))?;
        if let Some(first) = seen.get(p.label.get_ref()) {
            return Err((
                span(&p.label),
                DiskInvalid::DuplicateLabel {
                    label: p.label.get_ref().clone(),
                    first_line: line_of(text, *first),
                },
            ));
        }
        seen.insert(p.label.get_ref().clone(), span(&p.label));
        let size = parse_size(p.size.get_ref()).map_err(|e| (span(&p.size), e))?;
        if size < MIN_PARTITION_SIZE {
            return Err((
                span(&p.size),
                DiskInvalid::TooSmall {
                    key: "size",
                    size,
                    min: MIN_PARTITION_SIZE,
                },
            ));
        }
        needed = needed.saturating_add(size);
        let content = match p.content {
            Some(c) => {
                if p.fs == PartitionFs::None {
                    return Err((span(&c), DiskInvalid::ContentWithoutFs));
                }
                let sp = span(&c);
                Some(Located::new(dir.join(c.into_inner()), sp))
            }
            None => None,
        };
        parts.push(PartitionSpec {
            label: Located::new(p.label.get_ref().clone(), span(&p.label)),
            size,
            fs: p.fs,
            content,
        });
    }
    let size = match &d.size {
        Some(v) => {
            let s = parse_size(v.get_ref()).map_err(|e| (span(v), e))?;
            if s < needed {
                return Err((span(v), DiskInvalid::DiskTooSmall { size: s, needed }));
            }
            s
        }
        None => needed,
    };
    if size > MAX_DISK_SIZE {
        return Err((table, DiskInvalid::TooLarge(size)));
    }
    Ok(DiskSpec {
        size,
        format: d.format,
        esp_size,
        ab_slots: false,
        partitions: parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> toml::Value {
        toml::Value::String(s.into())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&v("64M")).unwrap(), 64 * MIB);
        assert_eq!(parse_size(&v("64MiB")).unwrap(), 64 * MIB);
        assert_eq!(parse_size(&v("1G")).unwrap(), 1024 * MIB);
        assert_eq!(parse_size(&v("2048K")).unwrap(), 2 * MIB);
        assert_eq!(parse_size(&toml::Value::Integer(MIB as i64)).unwrap(), MIB);
        for bad in [
            "",
            "M",
            "1.5M",
            "-1M",
            "12X",
            "100K",
            "0M",
            "99999999999999999999T",
        ] {
            assert!(parse_size(&v(bad)).is_err(), "{bad}");
        }
        assert!(parse_size(&toml::Value::Integer(-1)).is_err());
        assert!(parse_size(&toml::Value::Boolean(true)).is_err());
    }

    #[test]
    fn labels_and_uuids() {
        assert!(check_label("DATA").is_ok());
        assert!(check_label("CONFIG_1").is_ok());
        assert!(check_label("data").is_err());
        assert!(check_label("ESP").is_err());
        assert!(check_label("TOOLONGLABEL").is_err());
        assert!(check_uuid("0123abcd-0000-1111-2222-333344445555").is_ok());
        assert!(check_uuid("ABCD-1234").is_ok());
        assert!(check_uuid("ABCD1234").is_err());
        assert!(check_uuid("zzzz-1234").is_err());
    }

    #[test]
    fn mount_paths() {
        assert!(check_mount_path("/data").is_ok());
        assert!(check_mount_path("/var/lib/x").is_ok());
        assert!(check_mount_path("/").is_err());
        assert!(check_mount_path("/proc").is_err());
        assert!(check_mount_path("/dev/x").is_err());
        assert!(check_mount_path("data").is_err());
        assert!(check_mount_path("/a/../b").is_err());
        assert!(is_under("/data/log", "/data/"));
        assert!(is_under("/data", "/data"));
        assert!(!is_under("/database", "/data"));
    }

    const HEAD: &str = "name = \"x\"\nkernel = { package = \"linux-image-cloud-amd64\" }\n";

    fn parse(rest: &str) -> Result<crate::Manifest, crate::Diagnostic> {
        crate::Manifest::parse(
            &format!("{HEAD}{rest}"),
            std::path::Path::new("app/cairn.toml"),
        )
    }

    /// (line, col, message) of the error; lines count from the HEAD's 3rd.
    fn err(rest: &str) -> (usize, usize, String) {
        let d = parse(rest).expect_err("should be refused");
        (d.line - 2, d.col, d.message)
    }

    const GOOD: &str = r#"[disk]
format = "qcow2"
[[partition]]
label = "DATA"
size = "16M"
fs = "ext4"
content = "seed"
[[partition]]
label = "SCRATCH"
size = "8M"
fs = "none"
[[mount]]
label = "DATA"
path = "/data"
fs = "ext4"
options = "noatime"
required = true
[[mount]]
partlabel = "SCRATCH"
path = "/scratch/"
fs = "ext4"
format = "if-empty"
wait = 2
[config]
mount = "/data"
"#;

    #[test]
    fn full_disk_manifest() {
        let m = parse(GOOD).unwrap();
        let d = m.disk.as_ref().unwrap();
        assert_eq!(d.format, ImageFormat::Qcow2);
        assert_eq!(d.esp_size, DEFAULT_ESP_SIZE);
        assert_eq!(d.size, DEFAULT_ESP_SIZE + 24 * MIB + 2 * MIB);
        assert_eq!(
            d.partitions[0].content.as_ref().unwrap().value,
            PathBuf::from("app/seed")
        );
        assert_eq!(d.partitions[1].fs, PartitionFs::None);
        assert_eq!(m.mounts.len(), 2);
        assert_eq!(m.mounts[1].config.format, FormatPolicy::IfEmpty);
        assert_eq!(m.mounts[1].config.wait, 2);
        assert_eq!(m.mounts[0].config.wait, DEFAULT_MOUNT_WAIT_SECS);
        let sys = m.system_config(vec![]);
        assert_eq!(sys.config_mount.as_deref(), Some("/data"));
        assert_eq!(sys.mounts[0].source, MountSource::Label("DATA".into()));
        sys.assert_round_trips();
    }

    #[test]
    fn disk_errors_point_at_the_value() {
        let e = err("[disk]\nsize = \"3M\"\n");
        assert_eq!((e.0, e.1), (2, 8), "{}", e.2);
        assert!(e.2.contains("partitions need"), "{}", e.2);
        let e = err("[disk]\nesp_size = \"64X\"\n");
        assert_eq!((e.0, e.1), (2, 12), "{}", e.2);
        let e = err("[[partition]]\nlabel = \"A\"\nsize = \"1M\"\nfs = \"ext4\"\n");
        assert_eq!(e.0, 1, "{}", e.2);
        assert!(e.2.contains("[disk]"), "{}", e.2);
        let e = err("[disk]\n[[partition]]\nlabel = \"low\"\nsize = \"1M\"\nfs = \"ext4\"\n");
        assert_eq!((e.0, e.1), (3, 9), "{}", e.2);
        let e = err("[disk]\n[[partition]]\nlabel = \"A\"\nsize = \"1M\"\nfs = \"ext4\"\n[[partition]]\nlabel = \"A\"\nsize = \"1M\"\nfs = \"none\"\n");
        assert_eq!((e.0, e.1), (7, 9), "{}", e.2);
        assert!(e.2.contains("line 5"), "{}", e.2);
        let e = err(
            "[disk]\n[[partition]]\nlabel = \"A\"\nsize = \"1M\"\nfs = \"none\"\ncontent = \"d\"\n",
        );
        assert_eq!((e.0, e.1), (6, 11), "{}", e.2);
        let e = err("[disk]\n[[partition]]\nlabel = \"A\"\nsize = \"1M\"\nfs = \"btrfs\"\n");
        assert_eq!(e.0, 5, "{}", e.2);
    }

    #[test]
    fn iso_table() {
        assert!(parse("").unwrap().iso.is_none());
        let m = parse("[iso]\n").unwrap();
        let iso = m.iso.unwrap();
        assert_eq!(iso.label, "X");
        assert!(iso.bios);
        let m = parse("[iso]\nlabel = \"MY_APP_1\"\nbios = false\n").unwrap();
        assert_eq!(
            m.iso,
            Some(IsoSpec {
                label: "MY_APP_1".into(),
                bios: false
            })
        );
        assert_eq!(default_iso_label("web-1"), "WEB_1");
        let e = err("[iso]\nlabel = \"my-app\"\n");
        assert_eq!((e.0, e.1), (2, 9), "{}", e.2);
        assert!(e.2.contains("d-characters"), "{}", e.2);
        let e = err("[iso]\nbios = \"yes\"\n");
        assert_eq!(e.0, 2, "{}", e.2);
        let e = err("[iso]\nefi = false\n");
        assert!(e.2.contains("unknown key `efi`"), "{}", e.2);
        let e = err("[disk]\nformat = \"vmdk\"\n");
        assert_eq!(e.0, 2, "{}", e.2);
        let m = parse("[disk]\nformat = \"vhdx\"\n").unwrap();
        let f = m.disk.unwrap().format;
        assert_eq!(
            (f, f.extension(), f.qemu_name()),
            (ImageFormat::Vhdx, "vhdx", "vhdx")
        );
        assert_eq!(ImageFormat::Vhd.qemu_name(), "vpc");
    }

    #[test]
    fn mount_errors_point_at_the_value() {
        let e = err("[[mount]]\npath = \"/d\"\nfs = \"ext4\"\n");
        assert_eq!(e.0, 1, "{}", e.2);
        assert!(e.2.contains("exactly one"), "{}", e.2);
        let e =
            err("[[mount]]\nlabel = \"A\"\nuuid = \"ABCD-0000\"\npath = \"/d\"\nfs = \"ext4\"\n");
        assert!(e.2.contains("exactly one"), "{}", e.2);
        let e = err("[[mount]]\nlabel = \"A\"\npath = \"/proc\"\nfs = \"ext4\"\n");
        assert_eq!((e.0, e.1), (3, 8), "{}", e.2);
        let e = err("[[mount]]\nuuid = \"nope\"\npath = \"/d\"\nfs = \"ext4\"\n");
        assert_eq!((e.0, e.1), (2, 8), "{}", e.2);
        let e =
            err("[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"vfat\"\nformat = \"if-empty\"\n");
        assert_eq!((e.0, e.1), (5, 10), "{}", e.2);
        let e = err("[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"ext4\"\noptions = \"a,,b\"\n");
        assert_eq!((e.0, e.1), (5, 11), "{}", e.2);
        let e = err(
            "[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"ext4\"\noptions = \"noatime,nobarrier\"\n",
        );
        assert_eq!((e.0, e.1), (5, 11), "{}", e.2);
        assert!(e.2.contains("`nobarrier` gives up"), "{}", e.2);
        let e = err(
            "[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"ext4\"\noptions = \"data=writeback\"\n",
        );
        assert_eq!((e.0, e.1), (5, 11), "{}", e.2);
        let e = err("[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"ext4\"\nwait = -1\n");
        assert_eq!((e.0, e.1), (5, 8), "{}", e.2);
        let e = err("[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"ext4\"\nbogus = 1\n");
        assert!(
            e.2.contains("unknown key `bogus` in [[mount]] #1"),
            "{}",
            e.2
        );
        let e = err("[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"ext4\"\n[[mount]]\nlabel = \"B\"\npath = \"/d/\"\nfs = \"ext4\"\n");
        assert_eq!((e.0, e.1), (7, 8), "{}", e.2);
        let e = err(
            "[[mount]]\nlabel = \"A\"\npath = \"/d\"\nfs = \"ext4\"\n[config]\nmount = \"/e\"\n",
        );
        assert_eq!((e.0, e.1), (6, 9), "{}", e.2);
    }
}

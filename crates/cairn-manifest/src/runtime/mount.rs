//! Disks as the init acts on them: what to mount at boot (`[[mount]]`),
//! where the secondary config lives, and the `mkfs.ext4` the builder adds
//! for `format = "if-empty"` (validated in [`crate::disk`]).

use serde::{Deserialize, Serialize};

/// Seconds `cairn-init` waits for a mount's device when `wait` is not set.
pub const DEFAULT_MOUNT_WAIT_SECS: u32 = 5;

/// Name of the secondary config file inside the config mount.
pub const SECONDARY_CONFIG_FILE: &str = "cairn.toml";

/// Where `mkfs.ext4` is put in the image when a mount has
/// `format = "if-empty"`.
pub const MKFS_EXT4_PATH: &str = "/usr/sbin/mkfs.ext4";

/// How a mount finds its filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountSource {
    /// The filesystem label (ext4 `s_volume_name`, FAT volume label).
    Label(String),
    /// The GPT partition name.
    Partlabel(String),
    /// The filesystem UUID (ext4: `xxxxxxxx-xxxx-...`, FAT: `XXXX-XXXX`),
    /// compared case-insensitively.
    Uuid(String),
}

impl std::fmt::Display for MountSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountSource::Label(l) => write!(f, "LABEL={l}"),
            MountSource::Partlabel(l) => write!(f, "PARTLABEL={l}"),
            MountSource::Uuid(u) => write!(f, "UUID={u}"),
        }
    }
}

/// Filesystems cairn mounts and formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsType {
    Ext4,
    Vfat,
    /// Read-only: a container image's partition (`storage = "erofs"`), or
    /// one the user made with mkfs.erofs.
    Erofs,
}

impl FsType {
    /// The name `mount(2)` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Vfat => "vfat",
            FsType::Erofs => "erofs",
        }
    }
}

/// What to do with a partition that holds no filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FormatPolicy {
    /// Never create a filesystem (default).
    #[default]
    Never,
    /// Create one when the partition has no filesystem signature at all
    /// (its first MiB is all zeros); never on one that holds anything.
    IfEmpty,
}

/// One `[[mount]]` as the init acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    pub source: MountSource,
    /// Absolute mount point; created if missing.
    pub path: String,
    pub fs: FsType,
    /// Comma-separated mount options as in fstab.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub options: String,
    #[serde(default)]
    pub format: FormatPolicy,
    /// A missing required mount is fatal: services are not started.
    #[serde(default)]
    pub required: bool,
    /// Seconds to wait for the device to appear.
    #[serde(default = "default_wait")]
    pub wait: u32,
}

fn default_wait() -> u32 {
    DEFAULT_MOUNT_WAIT_SECS
}

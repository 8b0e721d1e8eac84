//! The cairn manifest: what the user writes (`cairn.toml`), how it is
//! validated, and the runtime contract ([`runtime`], `SystemConfig`) that
//! the builder bakes into the image at `/etc/cairn/system.json` for
//! `cairn-init` to read.
//!
//! ```no_run
//! # use std::path::Path;
//! let manifest = cairn_manifest::Manifest::load(Path::new("cairn.toml"))
//!     .unwrap_or_else(|diag| panic!("{diag}"));
//! let runtime = manifest.system_config(Vec::new());
//! # let _ = runtime;
//! ```

pub mod compression;
pub mod container;
pub mod date;
pub mod diagnostic;
pub mod disk;
pub mod implied;
pub mod manifest;
pub mod netboot;
pub mod network;
mod raw;
pub mod release;
pub mod runtime;
pub mod secondary;
pub mod shell;
pub mod supervision;
pub mod update;
pub mod validate;

pub use compression::Compression;
pub use container::{ContainerSpec, ImageRef};
pub use diagnostic::{Diagnostic, Located, Span};
pub use disk::{DiskSpec, ImageFormat, IsoSpec, Mount, PartitionFs, PartitionSpec};
pub use manifest::{
    Arch, BinaryEntry, FileEntry, KernelBase, KernelSource, KernelSpec, Manifest, Service,
    SignSpec, SourceKernel, DEFAULT_CMDLINE, DEFAULT_FILE_MODE, GENERATED_DIRS, GENERATED_FILES,
    GENERATED_TREES,
};
pub use runtime::{
    ContainerConfig, ContainerNetwork, ExitAction, FormatPolicy, FsType, InterfaceConfig, IpPrefix,
    Ipv6Mode, Level, LogConfig, MatchRule, MountConfig, MountSource, NetConfig, PanicAction,
    RestartPolicy, RouteConfig, RunSettings, ServiceConfig, ShellConfig, SystemConfig,
    VolumeConfig, CONTAINER_ROOT_DIR, DEFAULT_MOUNT_WAIT_SECS, DEFAULT_ONLINE_TIMEOUT,
    MKFS_EXT4_PATH, NODE_CONFIG_PATH, NODE_TARGET, SECONDARY_CONFIG_FILE, SYSTEM_CONFIG_PATH,
};
pub use secondary::{SecondaryOverrides, ServiceOverride};
pub use shell::Shell;
pub use supervision::Accounts;

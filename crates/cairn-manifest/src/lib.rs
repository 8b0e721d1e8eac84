//! The cairn manifest: what the user writes (`cairn.toml`), how it is
//! validated, and the runtime subset (`SystemConfig`) that the builder bakes
//! into the image at `/etc/cairn/system.toml` for `cairn-init` to read.

pub mod compression;
pub mod system;

pub use compression::Compression;
pub use system::{
    ExitAction, PanicAction, RestartPolicy, ServiceConfig, SystemConfig, SYSTEM_CONFIG_PATH,
};

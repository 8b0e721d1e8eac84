//! Initramfs compression choice, shared by the manifest and the image builder.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    /// xz with a CRC32 check (the kernel refuses CRC64).
    Xz,
    None,
}

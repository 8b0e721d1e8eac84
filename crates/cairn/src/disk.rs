//! The disk parts of `cairn build`: `NAME.img` and the programs the init
//! needs for the manifest's mounts.

use std::path::{Path, PathBuf};

use cairn_image::{disk, iso, output};
use cairn_manifest::{
    Diagnostic, FormatPolicy, FsType, ImageFormat, Manifest, PartitionFs, Span, MKFS_EXT4_PATH,
};

/// Everything writing `NAME.img` can run into (shown as `cairn build`
/// showed it when these were its own).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A `content` directory that is not one, at its place in the manifest.
    #[error("{0}")]
    Content(Box<Diagnostic>),
    #[error("disk image: {0}")]
    Image(#[from] disk::DiskError),
    #[error("output: {0}")]
    Output(#[from] output::OutputError),
    #[error("ISO image: {0}")]
    Iso(#[from] iso::IsoError),
}

/// `[[binary]]`s the builder adds by itself: `mkfs.ext4` when a mount may
/// have to format an ext4 filesystem (`format = "if-empty"`), unless the
/// manifest installs it already. Located at that mount.
pub fn auto_binaries(m: &Manifest) -> Vec<(PathBuf, String, Span)> {
    let wants_mkfs = m
        .mounts
        .iter()
        .find(|mt| mt.config.format == FormatPolicy::IfEmpty && mt.config.fs == FsType::Ext4);
    match wants_mkfs {
        Some(mt) if !m.binaries.iter().any(|b| b.dst == MKFS_EXT4_PATH) => {
            vec![(
                PathBuf::from(MKFS_EXT4_PATH),
                MKFS_EXT4_PATH.to_string(),
                mt.span,
            )]
        }
        _ => Vec::new(),
    }
}

/// The disk image's file name: `NAME.img` (raw, qcow2), `NAME.vhd`,
/// `NAME.vhdx`.
pub fn image_name(m: &Manifest) -> Option<String> {
    m.disk
        .as_ref()
        .map(|d| format!("{}.{}", m.name, d.format.extension()))
}

/// Writes the disk image into `out`; returns its final path and size
/// (`None` when an existing image was kept).
/// `spec` is the manifest's `[disk]` with the container images'
/// partitions added (see `build`).
pub fn write(
    m: &Manifest,
    spec: &cairn_manifest::DiskSpec,
    efi: &[u8],
    mtime: u32,
    keep: bool,
    out: &mut output::OutputSet,
) -> Result<Option<(PathBuf, u64)>, DiskError> {
    // Two slots, the fallback copy and an update's temporary file.
    let needed = 4 * efi.len() as u64 + 2 * cairn_manifest::disk::MIB;
    if spec.ab_slots && needed > spec.esp_size {
        return Err(DiskError::Content(Box::new(Diagnostic::without_position(
            &m.path,
            format!(
                "[update] needs an ESP of at least {} MiB for this {} MiB UKI (two slots, \
                 the fallback copy and a download); set [disk] esp_size",
                needed.div_ceil(cairn_manifest::disk::MIB),
                efi.len() as u64 / cairn_manifest::disk::MIB
            ),
        ))));
    }
    let file_name = format!("{}.{}", m.name, spec.format.extension());
    let existing = out.dir().join(&file_name);
    if keep && existing.is_file() {
        if spec.format != ImageFormat::Raw {
            eprintln!(
                "cairn: keeping {} as it is (a {} image is not updated in place; delete it to rebuild)",
                existing.display(),
                spec.format.qemu_name()
            );
            return Ok(None);
        }
        match disk::refresh_esp(&existing, &m.name, spec, efi) {
            Ok(()) => return Ok(None),
            Err(e) => eprintln!(
                "cairn: rebuilding {} from scratch (its state is lost): {e}",
                existing.display()
            ),
        }
    }
    // A container image's partition has an erofs file as its content.
    for p in spec
        .partitions
        .iter()
        .filter(|p| p.fs != PartitionFs::Erofs)
    {
        if let Some(c) = &p.content {
            if !c.value.is_dir() {
                return Err(DiskError::Content(Box::new(m.error_at(
                    c.span,
                    format!("content {} is not a directory", c.value.display()),
                ))));
            }
        }
    }
    let written = add_output(out, &file_name, |tmp| {
        disk::write_image(tmp, &m.name, spec, efi, mtime, spec.format)
    })?;
    Ok(Some((written.0, written.1.unwrap_or(spec.size))))
}

/// Adds `file_name` to `out`, written by `write` into a temp path; keeps
/// `write`'s own error (not only its text). Returns the final path and the
/// size written, when known.
fn add_output<E>(
    out: &mut output::OutputSet,
    file_name: &str,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(PathBuf, Option<u64>), DiskError>
where
    E: std::fmt::Display,
    DiskError: From<E>,
{
    let mut err = None;
    let path = out.add_with(file_name, |tmp: &Path| {
        write(tmp).map_err(|e| {
            let msg = e.to_string();
            err = Some(e);
            std::io::Error::other(msg)
        })
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    let path = path?;
    let size = std::fs::metadata(
        out.dir()
            .join(format!(".{file_name}.tmp-{}", std::process::id())),
    )
    .map(|md| md.len())
    .ok();
    Ok((path, size))
}

/// Writes `NAME.iso` into `out` when the manifest has an `[iso]`; returns
/// its final path and size.
pub fn write_iso(
    m: &Manifest,
    efi: &[u8],
    vmlinuz: &[u8],
    initrd: &[u8],
    mtime: u32,
    out: &mut output::OutputSet,
) -> Result<Option<(PathBuf, u64)>, DiskError> {
    let Some(spec) = &m.iso else {
        return Ok(None);
    };
    let file_name = format!("{}.iso", m.name);
    let bios = spec.bios.then_some(iso::BiosBoot {
        vmlinuz,
        initrd,
        cmdline: &m.kernel.cmdline,
    });
    let inputs = iso::IsoInputs {
        name: &m.name,
        label: &spec.label,
        uki: efi,
        bios,
        mtime,
    };
    let (path, size) = add_output(out, &file_name, |tmp| iso::write_iso(tmp, &inputs))?;
    Ok(Some((path, size.unwrap_or(0))))
}

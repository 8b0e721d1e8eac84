//! `NAME.iso`: one hybrid image that boots from a CD and, written to a USB
//! stick or disk as it is (`dd`), from that too; by UEFI and by legacy BIOS.
//!
//! - UEFI: an EFI system partition image (FAT, written by cairn like the
//!   disk image's ESP) holding only `EFI/BOOT/BOOTX64.EFI` = the UKI. It is
//!   appended after the ISO 9660 filesystem and is at once the El Torito
//!   EFI boot image (CD) and partition 2 of a GPT (USB stick, disk): no
//!   boot loader, so under Secure Boot the firmware checks the signed UKI
//!   itself, and the signature covers kernel, initramfs and command line.
//! - BIOS: isolinux (Debian's `isolinux` and `syslinux-common`) as the El
//!   Torito BIOS boot image, with the kernel and initramfs as plain files
//!   in the ISO 9660 tree and the command line in `isolinux.cfg`; the
//!   isohybrid MBR code (`isohdpfx.bin`) boots it from a disk. Nothing on
//!   this path is signed.
//!
//! xorriso assembles the image (as Arch's archiso does: `-partition_offset
//! 16` so partition 1, the ISO filesystem, starts after the GPT,
//! `-append_partition 2` with the ESP type GUID, `-appended_part_as_gpt`).
//! Dates come from `SOURCE_DATE_EPOCH` (every file's time, the volume dates
//! and the GPT GUIDs xorriso derives from them), the FAT volume id from the
//! appliance name: the same inputs give the same bytes.
//!
//! El Torito counts a boot image in 512-byte sectors in 16 bits: an EFI
//! boot image is at most 65535 sectors, 32 MiB less 512 bytes. The ESP is
//! sized to the UKI (plus FAT overhead); a UKI too large for that is
//! refused with the sizes named.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk::{self, DiskError};

/// Debian's isolinux package.
pub const ISOLINUX_BIN: &str = "/usr/lib/ISOLINUX/isolinux.bin";
/// The isohybrid MBR: boot code that loads isolinux.bin from a disk at the
/// block xorriso patches in (isolinux package).
pub const ISOHDPFX_BIN: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";
/// isolinux's core module (syslinux-common).
pub const LDLINUX_C32: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
/// El Torito's limit for a boot image: 65535 sectors of 512 bytes.
pub const EL_TORITO_MAX: u64 = 65535 * 512;
/// FAT label of the ESP image.
pub const ESP_IMAGE_LABEL: &str = "EFIBOOT";

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("cannot prepare the ISO tree in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} not found at {path}; install Debian's {package} package")]
    Missing {
        what: &'static str,
        path: PathBuf,
        package: &'static str,
    },
    #[error(
        "the UKI is {uki} bytes, so the EFI system partition image would be {esp} bytes: \
         El Torito describes a boot image in at most 65535 sectors of 512 bytes \
         ({EL_TORITO_MAX} bytes, 32 MiB), so a CD could not boot it by UEFI; \
         make the UKI smaller (a smaller kernel, fewer modules, xz compression)"
    )]
    EspTooLarge { uki: u64, esp: u64 },
    #[error("EFI system partition image: {0}")]
    Esp(#[from] DiskError),
    #[error("cannot run xorriso (install Debian's xorriso package): {0}")]
    Spawn(std::io::Error),
    #[error("xorriso failed ({status}): {stderr}")]
    Xorriso { status: String, stderr: String },
}

/// The BIOS boot path: what isolinux loads.
#[derive(Debug, Clone, Copy)]
pub struct BiosBoot<'a> {
    pub vmlinuz: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
}

/// What goes into the ISO.
#[derive(Debug, Clone, Copy)]
pub struct IsoInputs<'a> {
    /// The appliance name (seeds the FAT volume id).
    pub name: &'a str,
    /// ISO 9660 volume id.
    pub label: &'a str,
    /// The UKI, booted by UEFI.
    pub uki: &'a [u8],
    /// The isolinux path for BIOS; `None`: UEFI only.
    pub bios: Option<BiosBoot<'a>>,
    /// SOURCE_DATE_EPOCH.
    pub mtime: u32,
}

/// Bytes of the FAT image that holds `uki` as `EFI/BOOT/BOOTX64.EFI`: the
/// file, plus a sixteenth for FAT tables and cluster slack, plus 256 KiB,
/// rounded up to 64 KiB.
pub fn esp_image_size(uki: u64) -> u64 {
    let want = uki + uki / 16 + 256 * 1024;
    want.div_ceil(64 * 1024) * 64 * 1024
}

/// `isolinux.cfg`: straight to the appliance, console on the first serial
/// port too (as the kernel's `console=ttyS0` usually is).
pub fn isolinux_cfg(cmdline: &str) -> String {
    format!(
        "SERIAL 0 115200\nDEFAULT cairn\nPROMPT 0\nTIMEOUT 0\n\nLABEL cairn\n  KERNEL /boot/vmlinuz\n  INITRD /boot/initrd\n  APPEND {cmdline}\n"
    )
}

fn require(path: &str, what: &'static str, package: &'static str) -> Result<(), IsoError> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(IsoError::Missing {
            what,
            path: PathBuf::from(path),
            package,
        })
    }
}

/// Writes the ISO for `inputs` at `path` (created or replaced).
pub fn write_iso(path: &Path, inputs: &IsoInputs) -> Result<(), IsoError> {
    let uki_len = inputs.uki.len() as u64;
    let esp_len = esp_image_size(uki_len);
    if esp_len > EL_TORITO_MAX {
        return Err(IsoError::EspTooLarge {
            uki: uki_len,
            esp: esp_len,
        });
    }
    if inputs.bios.is_some() {
        require(ISOLINUX_BIN, "isolinux.bin", "isolinux")?;
        require(ISOHDPFX_BIN, "the isohybrid MBR isohdpfx.bin", "isolinux")?;
        require(LDLINUX_C32, "ldlinux.c32", "syslinux-common")?;
    }
    let work = tempfile::Builder::new()
        .prefix("cairn-iso-")
        .tempdir()
        .map_err(|source| IsoError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IsoError::Io { path, source }
    };
    let esp = work.path().join("esp.img");
    disk::write_esp_image(&esp, inputs.name, ESP_IMAGE_LABEL, esp_len, inputs.uki)?;

    let tree = work.path().join("tree");
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    if let Some(b) = &inputs.bios {
        let bin = std::fs::read(ISOLINUX_BIN).map_err(io_err(Path::new(ISOLINUX_BIN)))?;
        let ld = std::fs::read(LDLINUX_C32).map_err(io_err(Path::new(LDLINUX_C32)))?;
        files.push((tree.join("isolinux/isolinux.bin"), bin));
        files.push((tree.join("isolinux/ldlinux.c32"), ld));
        files.push((
            tree.join("isolinux/isolinux.cfg"),
            isolinux_cfg(b.cmdline).into_bytes(),
        ));
        files.push((tree.join("boot/vmlinuz"), b.vmlinuz.to_vec()));
        files.push((tree.join("boot/initrd"), b.initrd.to_vec()));
    }
    std::fs::create_dir_all(&tree).map_err(io_err(&tree))?;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(inputs.mtime));
    let mut dirs = vec![tree.clone()];
    for (p, bytes) in &files {
        let parent = p.parent().expect("inside the tree");
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        if !dirs.iter().any(|d| d == parent) {
            dirs.push(parent.to_path_buf());
        }
        std::fs::write(p, bytes).map_err(io_err(p))?;
        let f = std::fs::File::options()
            .write(true)
            .open(p)
            .map_err(io_err(p))?;
        f.set_modified(when).map_err(io_err(p))?;
    }
    // Directories last: writing files into them changed their times.
    for d in &dirs {
        std::fs::File::open(d)
            .and_then(|f| f.set_modified(when))
            .map_err(io_err(d))?;
    }

    let mut cmd = Command::new("xorriso");
    // No startup files (a user's ~/.xorrisorc could change the image).
    cmd.args(["-no_rc", "-as", "mkisofs", "-quiet", "-o"])
        .arg(path)
        .args(["-V", inputs.label, "-r", "-iso-level", "3"])
        // No 300 KiB tail padding (it only made a third "Gap" partition).
        .arg("-no-pad")
        // A disk GUID of this appliance's own (partition GUIDs follow it);
        // by default xorriso derives it from the date alone.
        .arg("--gpt_disk_guid")
        .arg(hex(&disk::derive_id(&[inputs.name, "iso"])))
        .args(["-partition_offset", "16"])
        .args(["-append_partition", "2", disk::ESP_TYPE])
        .arg(&esp)
        .arg("-appended_part_as_gpt");
    if inputs.bios.is_some() {
        cmd.arg("-isohybrid-mbr")
            .arg(ISOHDPFX_BIN)
            .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
            .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
            .arg("-eltorito-alt-boot");
    } else {
        cmd.args(["-c", "boot.cat"]);
    }
    cmd.args([
        "-e",
        "--interval:appended_partition_2:all::",
        "-no-emul-boot",
    ])
    .arg(&tree)
    // Volume dates, every file's dates and the GPT GUIDs follow it.
    .env("SOURCE_DATE_EPOCH", inputs.mtime.to_string())
    .env("TZ", "UTC");
    let out = cmd.output().map_err(IsoError::Spawn)?;
    if !out.status.success() {
        return Err(IsoError::Xorriso {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_sizes() {
        // A Debian cloud kernel UKI (about 15 MB) fits with room to spare.
        let debian = esp_image_size(15_500_000);
        assert!(debian < EL_TORITO_MAX, "{debian}");
        assert_eq!(debian % (64 * 1024), 0);
        assert!(debian >= 15_500_000 + 256 * 1024);
        // About 30 MB of UKI is the most an El Torito EFI image can hold.
        assert!(esp_image_size(30_000_000) < EL_TORITO_MAX);
        assert!(esp_image_size(31_500_000) > EL_TORITO_MAX);
    }

    #[test]
    fn too_large_uki_is_refused_before_any_work() {
        let big = vec![0u8; 32 << 20];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.iso");
        let e = write_iso(
            &out,
            &IsoInputs {
                name: "x",
                label: "X",
                uki: &big,
                bios: None,
                mtime: 0,
            },
        )
        .unwrap_err();
        assert!(matches!(e, IsoError::EspTooLarge { .. }), "{e}");
        assert!(e.to_string().contains("65535 sectors"), "{e}");
        assert!(!out.exists());
    }

    /// ESP images for UKIs from tiny to the largest that fits (FAT12, 16
    /// and the edge of El Torito) pass `fsck.vfat -n` and hold the UKI.
    #[test]
    fn esp_images_pass_fsck() {
        let fsck = ["/usr/sbin/fsck.vfat", "/sbin/fsck.vfat"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(fsck) = fsck else {
            eprintln!("skipped: fsck.vfat not installed (dosfstools)");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        for len in [100_000usize, 2_802_176, 15_986_688, 31_000_000] {
            let uki: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let esp_len = esp_image_size(len as u64);
            assert!(esp_len <= EL_TORITO_MAX);
            let p = dir.path().join(format!("esp-{len}.img"));
            disk::write_esp_image(&p, "x", ESP_IMAGE_LABEL, esp_len, &uki).unwrap();
            let out = Command::new(fsck).arg("-n").arg(&p).output().unwrap();
            assert!(
                out.status.success(),
                "{len}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let img = std::fs::read(&p).unwrap();
            assert!(
                img.windows(4096).any(|w| w == &uki[..4096]),
                "{len}: the UKI's first bytes are not in the image"
            );
        }
    }

    #[test]
    fn isolinux_config() {
        let c = isolinux_cfg("console=ttyS0 quiet");
        assert!(c.starts_with("SERIAL 0 115200\n"), "{c}");
        assert!(c.contains("\n  APPEND console=ttyS0 quiet\n"), "{c}");
    }
}

//! VHD and VHDX images from qemu-img, made reproducible.
//!
//! `qemu-img convert -O vpc` stamps the footer with the current time and a
//! random unique id; `-O vhdx` gives each header random sequence numbers
//! and file/data write GUIDs, gives the metadata a random virtual disk id,
//! and leaves a stale log entry (with a random GUID) behind, unused since
//! the headers' log GUID is zero. [`make_reproducible`] replaces all of
//! that with values derived from the appliance name and
//! `SOURCE_DATE_EPOCH`, and recomputes the checksums (the VHD footer's
//! one's complement sum, CRC-32C over each VHDX header), so two builds of
//! the same inputs give the same bytes. `qemu-img check` accepts the
//! result (the tests check it).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::disk::{derive_id, guid_bytes};

/// Seconds from 1970-01-01 to 2000-01-01, the VHD time base.
const VHD_EPOCH: u32 = 946_684_800;
const KIB: u64 = 1024;
/// VHDX: the two headers, the region table, the metadata items used here.
const VHDX_HEADERS: [u64; 2] = [64 * KIB, 128 * KIB];
const VHDX_REGION_TABLE: u64 = 192 * KIB;
const VHDX_METADATA_REGION: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const VHDX_PAGE83: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";

/// Rewrites the random parts of the VHD or VHDX file at `path` (by its
/// signature) with values derived from `name` and `mtime`.
pub fn make_reproducible(path: &Path, name: &str, mtime: u32) -> Result<(), String> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut magic = [0u8; 8];
    f.read_exact_at(&mut magic, 0).map_err(|e| e.to_string())?;
    if &magic == b"vhdxfile" {
        vhdx(&f, name)?;
    } else {
        // A fixed VHD has its footer at the end only; a dynamic one has a
        // copy at the start too.
        let mut found = false;
        for at in [len.saturating_sub(512), 0] {
            let mut footer = [0u8; 512];
            f.read_exact_at(&mut footer, at)
                .map_err(|e| e.to_string())?;
            if &footer[..8] == b"conectix" {
                vhd_footer(&mut footer, name, mtime);
                f.write_all_at(&footer, at).map_err(|e| e.to_string())?;
                found = true;
            }
        }
        if !found {
            return Err("neither a VHD footer nor a VHDX signature found".into());
        }
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// Sets the footer's time stamp and unique id, then its checksum.
pub fn vhd_footer(footer: &mut [u8; 512], name: &str, mtime: u32) {
    let stamp = mtime.saturating_sub(VHD_EPOCH);
    footer[24..28].copy_from_slice(&stamp.to_be_bytes());
    footer[68..84].copy_from_slice(&derive_id(&[name, "vhd"]));
    footer[64..68].fill(0);
    let sum = footer
        .iter()
        .fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
}

fn read(f: &std::fs::File, at: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, at)
        .map_err(|e| format!("reading {len} bytes at {at}: {e}"))?;
    Ok(b)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn vhdx(f: &std::fs::File, name: &str) -> Result<(), String> {
    let mut headers = Vec::new();
    for at in VHDX_HEADERS {
        let h = read(f, at, 4096)?;
        if &h[..4] != b"head" {
            return Err(format!("no VHDX header at {at}"));
        }
        headers.push(h);
    }
    // The current header is the one with the larger sequence number; keep
    // that order with fixed numbers.
    let current = usize::from(u64_at(&headers[1], 8) > u64_at(&headers[0], 8));
    let mut log = None;
    for (i, (h, at)) in headers.iter_mut().zip(VHDX_HEADERS).enumerate() {
        if h[48..64].iter().any(|b| *b != 0) {
            return Err("the VHDX log is in use (non-zero log GUID)".into());
        }
        let seq: u64 = if i == current { 2 } else { 1 };
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..32].copy_from_slice(&derive_id(&[name, "vhdx", "file-write"]));
        h[32..48].copy_from_slice(&derive_id(&[name, "vhdx", "data-write"]));
        h[4..8].fill(0);
        let crc = crc32c(h);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(h, at).map_err(|e| e.to_string())?;
        log = Some((u64_at(h, 72), u32_at(h, 68)));
    }
    // With a zero log GUID the log holds nothing to replay: clear what
    // qemu-img left there.
    if let Some((off, len)) = log {
        if len > 0 {
            f.write_all_at(&vec![0u8; len as usize], off)
                .map_err(|e| e.to_string())?;
        }
    }
    // The virtual disk id (SCSI page 83) in the metadata region.
    let table = read(f, VHDX_REGION_TABLE, 64 * KIB as usize)?;
    if &table[..4] != b"regi" {
        return Err("no VHDX region table".into());
    }
    let meta_guid = guid_bytes(VHDX_METADATA_REGION).expect("valid GUID");
    let count = u32_at(&table, 8) as usize;
    let meta = (0..count.min(2047))
        .map(|i| &table[16 + 32 * i..16 + 32 * (i + 1)])
        .find(|e| e[..16] == meta_guid)
        .map(|e| u64_at(e, 16))
        .ok_or("no metadata region in the VHDX region table")?;
    let mtab = read(f, meta, 64 * KIB as usize)?;
    if &mtab[..8] != b"metadata" {
        return Err("no VHDX metadata table".into());
    }
    let page83 = guid_bytes(VHDX_PAGE83).expect("valid GUID");
    let entries = usize::from(u16::from_le_bytes([mtab[10], mtab[11]]));
    let item = (1..=entries.min(2047))
        .map(|i| &mtab[32 * i..32 * (i + 1)])
        .find(|e| e[..16] == page83)
        .ok_or("no virtual disk id in the VHDX metadata")?;
    let (off, len) = (u64::from(u32_at(item, 16)), u32_at(item, 20));
    if len != 16 {
        return Err(format!("VHDX virtual disk id of {len} bytes"));
    }
    f.write_all_at(&derive_id(&[name, "vhdx", "disk-id"]), meta + off)
        .map_err(|e| e.to_string())
}

/// CRC-32C (Castagnoli), as VHDX checksums its headers.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn footer_checksum() {
        let mut f = [0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        vhd_footer(&mut f, "x", VHD_EPOCH + 5);
        assert_eq!(&f[24..28], &5u32.to_be_bytes());
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        f[64..68].fill(0);
        let sum = f.iter().fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
        assert_eq!(stored, !sum);
    }

    /// Two conversions of the same raw image a second apart differ until
    /// patched; then they are equal, qemu-img still accepts them and the
    /// data reads back.
    #[test]
    fn qemu_img_outputs_become_identical() {
        if Command::new("qemu-img").arg("--version").output().is_err() {
            eprintln!("skipped: qemu-img not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.raw");
        let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&raw)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        for (fmt, opts) in [
            ("vpc", "subformat=fixed,force_size=on"),
            ("vpc", "subformat=dynamic"),
            ("vhdx", "subformat=dynamic"),
        ] {
            let mut outs = Vec::new();
            for i in 0..2 {
                let out = dir.path().join(format!("{fmt}-{i}"));
                let st = Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", fmt, "-o", opts])
                    .arg(&raw)
                    .arg(&out)
                    .status()
                    .unwrap();
                assert!(st.success());
                make_reproducible(&out, "app", 1_700_000_000).unwrap();
                // qemu-img check knows VHDX; for VHD ("vpc") it has no
                // checks (exit 63): the read-back below stands for it.
                if fmt == "vpc" {
                    outs.push(std::fs::read(&out).unwrap());
                    std::thread::sleep(std::time::Duration::from_millis(1100));
                    continue;
                }
                let check = Command::new("qemu-img")
                    .args(["check", "-f", fmt])
                    .arg(&out)
                    .output()
                    .unwrap();
                assert!(
                    check.status.success(),
                    "{fmt} {opts}: {}",
                    String::from_utf8_lossy(&check.stdout)
                );
                outs.push(std::fs::read(&out).unwrap());
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            assert!(outs[0] == outs[1], "{fmt} {opts}: outputs differ");
            // The data reads back.
            let back = dir.path().join(format!("{fmt}.back"));
            let st = Command::new("qemu-img")
                .args(["convert", "-f", fmt, "-O", "raw"])
                .arg(dir.path().join(format!("{fmt}-0")))
                .arg(&back)
                .status()
                .unwrap();
            assert!(st.success());
            assert_eq!(std::fs::read(&back).unwrap()[..data.len()], data[..]);
        }
    }
}

//! `NAME.img`: a GPT disk with a protective MBR, a FAT32 EFI system
//! partition holding `EFI/BOOT/BOOTX64.EFI`, and the data partitions of the
//! manifest (ext4 through `mkfs.ext4 -d`, vfat through the `fatfs` crate,
//! or left empty).
//!
//! Every identifier (disk GUID, partition GUIDs, ext4 UUIDs and hash seeds,
//! FAT volume ids) is derived from the appliance name and the partition
//! label, and file times are fixed, so the same inputs give the same bytes.
//!
//! Layout: 512-byte sectors, partitions aligned to 1 MiB; the first MiB
//! holds the protective MBR and the primary GPT, the last MiB the backup
//! GPT.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_manifest::disk::{DiskSpec, ImageFormat, PartitionFs, ESP_LABEL, MIB};

/// Sector size of the images.
pub const SECTOR: u64 = 512;
/// GPT type of the EFI system partition.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type "Linux filesystem data".
pub const LINUX_FS_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Where the UKI goes on the ESP (the removable-media default path).
pub const ESP_BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// The A/B slots of updates (`[update]`): the built UKI goes in A.
pub const ESP_SLOT_DIR: &str = "EFI/cairn";
pub const ESP_SLOT_A: &str = "EFI/cairn/A.efi";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot write disk image {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("partition table: {0}")]
    Gpt(String),
    #[error("partition {label}: FAT: {source}")]
    Fat { label: String, source: io::Error },
    #[error("partition {label}: content {path}: {source}")]
    Content {
        label: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("partition {label}: cannot run {program} (install e2fsprogs): {source}")]
    Spawn {
        label: String,
        program: String,
        source: io::Error,
    },
    #[error("partition {label}: mkfs.ext4 failed ({status}): {stderr}")]
    Mkfs {
        label: String,
        status: String,
        stderr: String,
    },
    #[error("partition {label}: debugfs failed ({status}) setting fixed file times: {stderr}")]
    Debugfs {
        label: String,
        status: String,
        stderr: String,
    },
    #[error("partition {label}: content {path}: a name with a double quote or a control character cannot be put on ext4 reproducibly")]
    ContentName { label: String, path: PathBuf },
    #[error("qemu-img convert failed ({0}); install qemu-utils")]
    QemuImg(String),
    #[error("{path}: cannot fix the identifiers qemu-img made at random: {reason}")]
    Vhd { path: PathBuf, reason: String },
}

/// A 16-byte identifier derived from `parts`: two FNV-1a-64 hashes with
/// different seeds, mixed, with the RFC 4122 version 4 and variant bits set
/// (in the GUID's on-disk, mixed-endian layout: byte 7 holds the version).
pub fn derive_id(parts: &[&str]) -> [u8; 16] {
    fn fnv(seed: u64, parts: &[&str]) -> u64 {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain([0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        }
        // splitmix64 finaliser.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
    let a = fnv(0xcbf2_9ce4_8422_2325, parts);
    let b = fnv(0x6c62_272e_07bb_0142, parts);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out[7] = (out[7] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// A GUID string (`C12A7328-F81F-...`) in its on-disk byte order (the
/// first three groups little-endian). `None` if malformed.
pub fn guid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let dashes: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
    if hex.len() != 32 || s.len() != 36 || dashes != [8, 13, 18, 23] {
        return None;
    }
    let mut be = [0u8; 16];
    for (i, b) in be.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let mut le = be;
    le[0..4].reverse();
    le[4..6].reverse();
    le[6..8].reverse();
    Some(le)
}

/// `8-4-4-4-12` lower-case hex of `b` in plain (big-endian) order, as ext4
/// tools print UUIDs.
pub fn uuid_string(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Where each partition lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPartition {
    pub label: String,
    pub fs: PartitionFs,
    /// Byte offset and length in the image.
    pub offset: u64,
    pub len: u64,
    pub content: Option<PathBuf>,
}

/// The ESP first, then the manifest's partitions, each 1 MiB-aligned.
pub fn layout(spec: &DiskSpec) -> Vec<PlacedPartition> {
    let mut out = vec![PlacedPartition {
        label: ESP_LABEL.to_string(),
        fs: PartitionFs::Vfat,
        offset: MIB,
        len: spec.esp_size,
        content: None,
    }];
    let mut next = MIB + spec.esp_size;
    for p in &spec.partitions {
        out.push(PlacedPartition {
            label: p.label.value.clone(),
            fs: p.fs,
            offset: next,
            len: p.size,
            content: p.content.as_ref().map(|c| c.value.clone()),
        });
        next += p.size;
    }
    out
}

/// Block size of a [`Window`]'s cache.
const BLOCK: u64 = 4096;

/// A window `[start, start + len)` of a file, as a stream of its own (for
/// fatfs, which formats and fills one partition). fatfs reads and writes a
/// few bytes at a time (a FAT entry, a directory entry): the window keeps
/// the blocks it has touched in memory and writes the changed ones back in
/// [`Window::flush`], instead of a seek and a system call for each.
pub struct Window<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    pos: u64,
    /// Block index -> its bytes (the last block may be short).
    blocks: BTreeMap<u64, Vec<u8>>,
    dirty: BTreeSet<u64>,
}

impl<'a> Window<'a> {
    pub fn new(file: &'a mut File, start: u64, len: u64) -> Self {
        Window {
            file,
            start,
            len,
            pos: 0,
            blocks: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    fn block_len(&self, idx: u64) -> usize {
        (self.len - idx * BLOCK).min(BLOCK) as usize
    }

    /// Block `idx`, read from the file the first time (`whole`: it is about
    /// to be overwritten entirely, so its old bytes are not read).
    fn block(&mut self, idx: u64, whole: bool) -> io::Result<&mut Vec<u8>> {
        if !self.blocks.contains_key(&idx) {
            let mut b = vec![0u8; self.block_len(idx)];
            if !whole {
                let at = self.start + idx * BLOCK;
                let mut got = 0;
                while got < b.len() {
                    match self.file.read_at(&mut b[got..], at + got as u64) {
                        Ok(0) => break, // past the end of the file: zeros
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            self.blocks.insert(idx, b);
        }
        Ok(self.blocks.get_mut(&idx).expect("inserted above"))
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if buf.is_empty() || left == 0 {
            return Ok(0);
        }
        let (idx, off) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let block = self.block(idx, false)?;
        let n = buf.len().min(block.len() - off);
        buf[..n].copy_from_slice(&block[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let (idx, off) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let whole = off == 0 && buf.len() >= self.block_len(idx);
        let block = self.block(idx, whole)?;
        let n = buf.len().min(block.len() - off);
        block[off..off + n].copy_from_slice(&buf[..n]);
        self.dirty.insert(idx);
        self.pos += n as u64;
        Ok(n)
    }

    /// Writes the changed blocks back to the file.
    fn flush(&mut self) -> io::Result<()> {
        for idx in std::mem::take(&mut self.dirty) {
            if let Some(b) = self.blocks.get(&idx) {
                self.file.write_all_at(b, self.start + idx * BLOCK)?;
            }
        }
        self.file.flush()
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// Writes the raw image for `spec` at `path` (created or truncated).
/// `name` is the appliance name (it seeds the identifiers), `uki` the
/// `.efi` to boot, `mtime` the time stamp for ext4 (SOURCE_DATE_EPOCH).
pub fn write_raw(
    path: &Path,
    name: &str,
    spec: &DiskSpec,
    uki: &[u8],
    mtime: u32,
) -> Result<(), DiskError> {
    let io_err = |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    };
    let parts = layout(spec);
    {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err)?;
        f.set_len(spec.size).map_err(io_err)?;
        write_gpt(&mut f, name, &parts)?;
        for p in &parts {
            match p.fs {
                PartitionFs::Vfat => {
                    let esp = p.label == ESP_LABEL;
                    let fat32 = esp.then_some(fatfs::FatType::Fat32);
                    write_fat(&mut f, name, p, fat32, esp.then_some(uki), spec.ab_slots)?
                }
                PartitionFs::Erofs => copy_erofs(&f, p)?,
                PartitionFs::Ext4 | PartitionFs::None => {}
            }
        }
        f.sync_all().map_err(io_err)?;
    }
    for p in &parts {
        if p.fs == PartitionFs::Ext4 {
            mkfs_ext4(path, name, p, mtime)?;
        }
    }
    Ok(())
}

/// Writes the raw image, converted to `format` at `path` (qcow2, VHD,
/// VHDX through qemu-img; VHD and VHDX are then made reproducible by
/// [`crate::vhd::make_reproducible`]).
pub fn write_image(
    path: &Path,
    name: &str,
    spec: &DiskSpec,
    uki: &[u8],
    mtime: u32,
    format: ImageFormat,
) -> Result<(), DiskError> {
    if format == ImageFormat::Raw {
        return write_raw(path, name, spec, uki, mtime);
    }
    let raw = path.with_extension("raw-tmp");
    let r = write_raw(&raw, name, spec, uki, mtime).and_then(|()| {
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-f", "raw", "-O", format.qemu_name()]);
        if format == ImageFormat::Vhd {
            // Fixed (Azure takes nothing else), and exactly the raw size
            // rather than rounded to a CHS geometry.
            cmd.args(["-o", "subformat=fixed,force_size=on"]);
        }
        let out = cmd
            .arg(&raw)
            .arg(path)
            .output()
            .map_err(|e| DiskError::QemuImg(e.to_string()))?;
        if !out.status.success() {
            return Err(DiskError::QemuImg(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        match format {
            ImageFormat::Vhd | ImageFormat::Vhdx => {
                crate::vhd::make_reproducible(path, name, mtime).map_err(|e| DiskError::Vhd {
                    path: path.to_path_buf(),
                    reason: e,
                })
            }
            ImageFormat::Raw | ImageFormat::Qcow2 => Ok(()),
        }
    });
    let _ = std::fs::remove_file(&raw);
    r
}

/// Writes `path` as a FAT image of `len` bytes (a whole number of 512-byte
/// sectors) holding only `EFI/BOOT/BOOTX64.EFI` = `uki`: the EFI system
/// partition of an ISO. FAT12/16/32 as the size calls for (removable media
/// may use any), volume label `label`, volume id derived from `name`.
pub fn write_esp_image(
    path: &Path,
    name: &str,
    label: &str,
    len: u64,
    uki: &[u8],
) -> Result<(), DiskError> {
    let io_err = |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err)?;
    f.set_len(len).map_err(io_err)?;
    let p = PlacedPartition {
        label: label.to_string(),
        fs: PartitionFs::Vfat,
        offset: 0,
        len,
        content: None,
    };
    write_fat(&mut f, name, &p, None, Some(uki), false)?;
    f.sync_all().map_err(io_err)
}

/// Rewrites only the ESP of an existing raw image (with the new UKI),
/// keeping every other partition's data. Refused (so the caller rebuilds)
/// when the image's partition table does not match `spec`'s layout.
pub fn refresh_esp(path: &Path, name: &str, spec: &DiskSpec, uki: &[u8]) -> Result<(), DiskError> {
    let io_err = |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    let size = f.metadata().map_err(io_err)?.len();
    let gpt = gptman::GPT::read_from(&mut f, SECTOR).map_err(|e| DiskError::Gpt(e.to_string()))?;
    let parts = layout(spec);
    let used: Vec<_> = gpt.iter().filter(|(_, e)| e.is_used()).collect();
    let same = size == spec.size
        && used.len() == parts.len()
        && used.iter().zip(&parts).all(|((_, e), p)| {
            e.starting_lba == p.offset / SECTOR
                && e.ending_lba + 1 == (p.offset + p.len) / SECTOR
                && e.partition_name.as_str() == p.label
        });
    if !same {
        return Err(DiskError::Gpt(
            "the partition table differs from the manifest's [disk]".into(),
        ));
    }
    write_fat(
        &mut f,
        name,
        &parts[0],
        Some(fatfs::FatType::Fat32),
        Some(uki),
        spec.ab_slots,
    )?;
    // The container images are built anew with the UKI: never state.
    for p in parts.iter().filter(|p| p.fs == PartitionFs::Erofs) {
        copy_erofs(&f, p)?;
    }
    f.sync_all().map_err(io_err)
}

/// Copies a container image's erofs file (`p.content`) to the start of
/// its partition; the rest of the partition is left as it is (zeros in a
/// new image; erofs never reads past its own size).
fn copy_erofs(f: &File, p: &PlacedPartition) -> Result<(), DiskError> {
    let Some(path) = &p.content else {
        return Ok(());
    };
    let err = |source| DiskError::Content {
        label: p.label.clone(),
        path: path.clone(),
        source,
    };
    let bytes = std::fs::read(path).map_err(err)?;
    if bytes.len() as u64 > p.len {
        return Err(err(io::Error::other(format!(
            "{} bytes do not fit the partition's {}",
            bytes.len(),
            p.len
        ))));
    }
    f.write_all_at(&bytes, p.offset).map_err(err)
}

/// A partition of an existing disk image: GPT name, first byte, length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPartition {
    pub label: String,
    pub offset: u64,
    pub len: u64,
}

/// Reads a raw GPT disk image (as `cairn build` writes it): its
/// partitions and the UKI in its EFI system partition
/// (`EFI/BOOT/BOOTX64.EFI`), if there is one. The ESP is read into memory
/// and the file is never written.
pub fn read_image(path: &Path) -> Result<(Vec<FoundPartition>, Option<Vec<u8>>), DiskError> {
    let io_err = |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let gpt = gptman::GPT::read_from(&mut f, SECTOR).map_err(|e| DiskError::Gpt(e.to_string()))?;
    let esp_type = guid_bytes(ESP_TYPE).unwrap_or_default();
    let mut parts = Vec::new();
    let mut uki = None;
    for (_, e) in gpt.iter().filter(|(_, e)| e.is_used()) {
        let p = FoundPartition {
            label: e.partition_name.as_str().to_string(),
            offset: e.starting_lba * SECTOR,
            len: (e.ending_lba + 1 - e.starting_lba) * SECTOR,
        };
        if e.partition_type_guid == esp_type && uki.is_none() {
            let mut bytes = vec![0u8; p.len as usize];
            f.read_exact_at(&mut bytes, p.offset).map_err(io_err)?;
            let fat_err = |source| DiskError::Fat {
                label: p.label.clone(),
                source,
            };
            let fs = fatfs::FileSystem::new(io::Cursor::new(bytes), fatfs::FsOptions::new())
                .map_err(fat_err)?;
            let found = fs.root_dir().open_file(ESP_BOOT_PATH);
            if let Ok(mut file) = found {
                let mut data = Vec::new();
                file.read_to_end(&mut data).map_err(fat_err)?;
                uki = Some(data);
            }
        }
        parts.push(p);
    }
    Ok((parts, uki))
}

fn write_gpt(f: &mut File, name: &str, parts: &[PlacedPartition]) -> Result<(), DiskError> {
    let gpt_err = |e: gptman::Error| DiskError::Gpt(e.to_string());
    let mut gpt = gptman::GPT::new_from(f, SECTOR, derive_id(&[name, "disk"])).map_err(gpt_err)?;
    gpt.align = MIB / SECTOR;
    for (i, p) in parts.iter().enumerate() {
        let ty = if i == 0 { ESP_TYPE } else { LINUX_FS_TYPE };
        let first = p.offset / SECTOR;
        gpt[(i + 1) as u32] = gptman::GPTPartitionEntry {
            partition_type_guid: guid_bytes(ty).unwrap_or_default(),
            unique_partition_guid: derive_id(&[name, &p.label, "partition"]),
            starting_lba: first,
            ending_lba: first + p.len / SECTOR - 1,
            attribute_bits: 0,
            partition_name: p.label.as_str().into(),
        };
    }
    gpt.write_into(f).map_err(gpt_err)?;
    gptman::GPT::write_protective_mbr_into(f, SECTOR).map_err(gpt_err)?;
    Ok(())
}

/// FAT volume labels are 11 bytes, space padded.
fn fat_label(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (o, b) in out.iter_mut().zip(label.bytes()) {
        *o = b.to_ascii_uppercase();
    }
    out
}

/// Formats `p` as FAT (`fat_type`, or what its size calls for) and fills
/// it: `uki` as `EFI/BOOT/BOOTX64.EFI`, then the partition's content.
fn write_fat(
    f: &mut File,
    name: &str,
    p: &PlacedPartition,
    fat_type: Option<fatfs::FatType>,
    uki: Option<&[u8]>,
    ab_slots: bool,
) -> Result<(), DiskError> {
    let fat_err = |source| DiskError::Fat {
        label: p.label.clone(),
        source,
    };
    let id = derive_id(&[name, &p.label, "fat"]);
    let mut opts = fatfs::FormatVolumeOptions::new()
        .volume_label(fat_label(&p.label))
        .volume_id(u32::from_le_bytes([id[0], id[1], id[2], id[3]]));
    if let Some(t) = fat_type {
        opts = opts.fat_type(t);
    }
    let mut w = Window::new(f, p.offset, p.len);
    fatfs::format_volume(&mut w, opts).map_err(fat_err)?;
    {
        let fs = fatfs::FileSystem::new(&mut w, fatfs::FsOptions::new().time_provider(&FIXED_TIME))
            .map_err(fat_err)?;
        {
            let root = fs.root_dir();
            if let Some(uki) = uki {
                root.create_dir("EFI").map_err(fat_err)?;
                root.create_dir("EFI/BOOT").map_err(fat_err)?;
                let mut file = root.create_file(ESP_BOOT_PATH).map_err(fat_err)?;
                file.write_all(uki).map_err(fat_err)?;
                if ab_slots {
                    root.create_dir(ESP_SLOT_DIR).map_err(fat_err)?;
                    let mut file = root.create_file(ESP_SLOT_A).map_err(fat_err)?;
                    file.write_all(uki).map_err(fat_err)?;
                }
            }
            if let Some(dir) = &p.content {
                copy_tree_fat(&root, dir, "", &p.label)?;
            }
        }
        fs.unmount().map_err(fat_err)?;
    }
    fix_dot_entries(&mut w).map_err(fat_err)?;
    fix_fat(&mut w, p.offset / SECTOR).map_err(fat_err)?;
    w.flush().map_err(fat_err)
}

/// File times on FAT: 1980-01-01 00:00, the DOS epoch (fatfs without its
/// `chrono` feature would write the invalid month 0).
#[derive(Debug)]
struct FixedTime;

static FIXED_TIME: FixedTime = FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

/// The geometry of a FAT volume, from its boot sector.
struct FatGeometry {
    bps: u64,
    spc: u64,
    reserved: u64,
    fat_bits: u32,
    /// FAT32: the root directory's first cluster; FAT12/16: 0.
    root_cluster: u32,
    /// FAT12/16: byte range of the fixed root directory.
    root_region: (u64, u64),
    data_start: u64,
    clusters: u64,
}

fn geometry<S: Read + Seek>(s: &mut S) -> io::Result<FatGeometry> {
    let mut bs = [0u8; 512];
    s.seek(SeekFrom::Start(0))?;
    s.read_exact(&mut bs)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected FAT boot sector");
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let spc = u64::from(bs[13]);
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let fats = u64::from(bs[16]);
    let root_entries = u64::from(u16::from_le_bytes([bs[17], bs[18]]));
    let total16 = u64::from(u16::from_le_bytes([bs[19], bs[20]]));
    let fat16 = u64::from(u16::from_le_bytes([bs[22], bs[23]]));
    let total32 = u64::from(u32::from_le_bytes([bs[32], bs[33], bs[34], bs[35]]));
    if bps < 512 || spc == 0 {
        return Err(bad());
    }
    let fat_size = if fat16 != 0 {
        fat16
    } else {
        u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]))
    };
    let total = if total16 != 0 { total16 } else { total32 };
    let root_start = (reserved + fats * fat_size) * bps;
    let root_len = root_entries * 32;
    let data_start = root_start + root_len.div_ceil(bps) * bps;
    let clusters = (total * bps).checked_sub(data_start).ok_or_else(bad)? / (spc * bps);
    let fat_bits = if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        32
    };
    let root_cluster = if fat_bits == 32 {
        u32::from_le_bytes([bs[44], bs[45], bs[46], bs[47]])
    } else {
        0
    };
    Ok(FatGeometry {
        bps,
        spc,
        reserved,
        fat_bits,
        root_cluster,
        root_region: (root_start, root_len),
        data_start,
        clusters,
    })
}

impl FatGeometry {
    fn cluster_bytes(&self) -> u64 {
        self.spc * self.bps
    }
    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_start + (u64::from(c) - 2) * self.cluster_bytes()
    }
    fn next<S: Read + Seek>(&self, s: &mut S, c: u32) -> io::Result<Option<u32>> {
        let fat = self.reserved * self.bps;
        let c64 = u64::from(c);
        let (off, width) = match self.fat_bits {
            12 => (c64 + c64 / 2, 2),
            16 => (c64 * 2, 2),
            _ => (c64 * 4, 4),
        };
        let mut b = [0u8; 4];
        s.seek(SeekFrom::Start(fat + off))?;
        s.read_exact(&mut b[..width])?;
        let v = u32::from_le_bytes(b);
        let (v, end) = match self.fat_bits {
            12 => (if c % 2 == 1 { v >> 4 } else { v & 0xfff }, 0xff8),
            16 => (v & 0xffff, 0xfff8),
            _ => (v & 0x0fff_ffff, 0x0fff_fff8),
        };
        Ok((v >= 2 && v < end && u64::from(v) < self.clusters + 2).then_some(v))
    }
    /// Byte ranges of a directory: its cluster chain (at most `limit`
    /// clusters, against loops).
    fn chain<S: Read + Seek>(&self, s: &mut S, first: u32) -> io::Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let mut c = Some(first);
        while let Some(cl) = c {
            if out.len() > 65536 || u64::from(cl) < 2 || u64::from(cl) >= self.clusters + 2 {
                break;
            }
            out.push((self.cluster_offset(cl), self.cluster_bytes()));
            c = self.next(s, cl)?;
        }
        Ok(out)
    }
}

/// rust-fatfs 0.3.6 writes long-name entries in front of the `.` and `..`
/// entries of a new directory, and points `..` at the FAT32 root cluster
/// instead of 0. `fsck.vfat` rejects both. Walk every directory and put
/// `.` and `..` in slots 0 and 1 (marking the long-name slots deleted) and
/// `..` of the root's children at cluster 0.
pub fn fix_dot_entries<S: Read + Write + Seek>(s: &mut S) -> io::Result<()> {
    let g = geometry(s)?;
    let root: Vec<(u64, u64)> = if g.fat_bits == 32 {
        g.chain(s, g.root_cluster)?
    } else {
        vec![g.root_region]
    };
    // (directory byte ranges, is the root)
    let mut todo = vec![(root, true)];
    let mut seen = 0usize;
    while let Some((ranges, is_root)) = todo.pop() {
        seen += 1;
        if seen > 100_000 {
            break;
        }
        let mut bytes = Vec::new();
        for (off, len) in &ranges {
            let mut b = vec![0u8; *len as usize];
            s.seek(SeekFrom::Start(*off))?;
            s.read_exact(&mut b)?;
            bytes.extend(b);
        }
        let mut changed = false;
        if !is_root {
            let slots: Vec<&[u8]> = bytes.chunks(32).take(8).collect();
            let dot = slots.iter().position(|e| &e[..11] == b".          ");
            let dotdot = slots.iter().position(|e| &e[..11] == b"..         ");
            if let (Some(d), Some(dd)) = (dot, dotdot) {
                let mut dot_e = slots[d].to_vec();
                let mut dotdot_e = slots[dd].to_vec();
                let parent = (u32::from(u16::from_le_bytes([dotdot_e[20], dotdot_e[21]])) << 16)
                    | u32::from(u16::from_le_bytes([dotdot_e[26], dotdot_e[27]]));
                if g.fat_bits == 32 && parent == g.root_cluster {
                    dotdot_e[20..22].copy_from_slice(&[0, 0]);
                    dotdot_e[26..28].copy_from_slice(&[0, 0]);
                }
                dot_e[11] = 0x10;
                dotdot_e[11] = 0x10;
                let upto = d.max(dd);
                for i in 0..=upto {
                    let e = &mut bytes[i * 32..i * 32 + 32];
                    match i {
                        0 => e.copy_from_slice(&dot_e),
                        1 => e.copy_from_slice(&dotdot_e),
                        _ => {
                            e.fill(0);
                            e[0] = 0xe5;
                        }
                    }
                }
                changed = true;
            }
        }
        for e in bytes.chunks(32) {
            if e[0] == 0 {
                break;
            }
            if e[0] == 0xe5 || e[11] & 0x0f == 0x0f || e[11] & 0x10 == 0 || e[0] == b'.' {
                continue;
            }
            let first = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
                | u32::from(u16::from_le_bytes([e[26], e[27]]));
            todo.push((g.chain(s, first)?, false));
        }
        if changed {
            let mut at = 0usize;
            for (off, len) in &ranges {
                s.seek(SeekFrom::Start(*off))?;
                s.write_all(&bytes[at..at + *len as usize])?;
                at += *len as usize;
            }
        }
    }
    s.flush()
}

fn copy_tree_fat<T: fatfs::ReadWriteSeek>(
    root: &fatfs::Dir<T>,
    host: &Path,
    rel: &str,
    label: &str,
) -> Result<(), DiskError> {
    let content_err = |path: &Path, source| DiskError::Content {
        label: label.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(host)
        .map_err(|e| content_err(host, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| content_err(host, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let fname = e.file_name().to_string_lossy().into_owned();
        let inner = if rel.is_empty() {
            fname
        } else {
            format!("{rel}/{fname}")
        };
        let meta = std::fs::metadata(&p).map_err(|e| content_err(&p, e))?;
        if meta.is_dir() {
            root.create_dir(&inner).map_err(|e| content_err(&p, e))?;
            copy_tree_fat(root, &p, &inner, label)?;
        } else if meta.is_file() {
            let bytes = std::fs::read(&p).map_err(|e| content_err(&p, e))?;
            let mut file = root.create_file(&inner).map_err(|e| content_err(&p, e))?;
            file.write_all(&bytes).map_err(|e| content_err(&p, e))?;
        }
    }
    Ok(())
}

/// After fatfs: record the partition's start in `hidden sectors` (both boot
/// sectors) and, for FAT32, write the true free-cluster count and next-free
/// hint into the FSInfo sector and its backup. rust-fatfs 0.3.6 leaves a
/// free count that `fsck.vfat` rejects.
pub fn fix_fat<S: Read + Write + Seek>(s: &mut S, start_lba: u64) -> io::Result<()> {
    let mut bs = [0u8; 512];
    s.seek(SeekFrom::Start(0))?;
    s.read_exact(&mut bs)?;
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let spc = u64::from(bs[13]);
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let fats = u64::from(bs[16]);
    let root_entries = u16::from_le_bytes([bs[17], bs[18]]);
    let total16 = u16::from_le_bytes([bs[19], bs[20]]);
    let fat16 = u16::from_le_bytes([bs[22], bs[23]]);
    let total32 = u32::from_le_bytes([bs[32], bs[33], bs[34], bs[35]]);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected FAT boot sector");
    if bps == 0 || spc == 0 || bps % 512 != 0 {
        return Err(bad());
    }
    let hidden = u32::try_from(start_lba).map_err(|_| bad())?.to_le_bytes();
    let fat32 = root_entries == 0 && total16 == 0 && fat16 == 0;
    let backup = if fat32 {
        u64::from(u16::from_le_bytes([bs[50], bs[51]]))
    } else {
        0
    };
    let boot_sectors: &[u64] = if backup != 0 { &[0, backup] } else { &[0] };
    for sector in boot_sectors {
        s.seek(SeekFrom::Start(sector * bps + 28))?;
        s.write_all(&hidden)?;
    }
    if !fat32 {
        return Ok(());
    }
    let fat_size = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
    let fsinfo = u64::from(u16::from_le_bytes([bs[48], bs[49]]));
    let data_start = reserved + fats * fat_size;
    let clusters = (u64::from(total32).checked_sub(data_start).ok_or_else(bad)?) / spc;
    let mut fat = vec![0u8; (fat_size * bps) as usize];
    s.seek(SeekFrom::Start(reserved * bps))?;
    s.read_exact(&mut fat)?;
    let mut free = 0u32;
    let mut next_free = 0xffff_ffffu32;
    for c in 2..clusters + 2 {
        let i = (c * 4) as usize;
        let Some(e) = fat.get(i..i + 4) else { break };
        if u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x0fff_ffff == 0 {
            free += 1;
            if next_free == 0xffff_ffff {
                next_free = c as u32;
            }
        }
    }
    let mut info_sectors = vec![fsinfo];
    if backup != 0 {
        info_sectors.push(backup + fsinfo);
    }
    for sector in info_sectors {
        if sector == 0 {
            continue;
        }
        let mut info = [0u8; 512];
        s.seek(SeekFrom::Start(sector * bps))?;
        s.read_exact(&mut info)?;
        if info[0..4] != *b"RRaA" || info[484..488] != *b"rrAa" {
            continue;
        }
        info[488..492].copy_from_slice(&free.to_le_bytes());
        info[492..496].copy_from_slice(&next_free.to_le_bytes());
        s.seek(SeekFrom::Start(sector * bps))?;
        s.write_all(&info)?;
    }
    s.flush()
}

fn mkfs_ext4(image: &Path, name: &str, p: &PlacedPartition, mtime: u32) -> Result<(), DiskError> {
    let uuid = uuid_string(&derive_id(&[name, &p.label, "ext4"]));
    let seed = uuid_string(&derive_id(&[name, &p.label, "ext4-hash"]));
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-t", "ext4", "-L", &p.label, "-U", &uuid])
        .arg("-E")
        .arg(format!(
            "offset={},hash_seed={seed},root_owner=0:0,nodiscard",
            p.offset
        ))
        // Fixed times: mke2fs reads both (E2FSPROGS_FAKE_TIME in 1.47.0,
        // SOURCE_DATE_EPOCH from 1.47.1).
        .env("E2FSPROGS_FAKE_TIME", mtime.max(1).to_string())
        .env("SOURCE_DATE_EPOCH", mtime.to_string())
        .env("MKE2FS_DETERMINISTIC", "1");
    if let Some(dir) = &p.content {
        cmd.arg("-d").arg(dir);
    }
    cmd.arg(image).arg(format!("{}k", p.len / 1024));
    // mkfs.ext4 lives in /usr/sbin, which a user's PATH may lack.
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{path}:/usr/sbin:/sbin"));
    let out = cmd.output().map_err(|source| DiskError::Spawn {
        label: p.label.clone(),
        program: "mkfs.ext4".into(),
        source,
    })?;
    if !out.status.success() {
        return Err(DiskError::Mkfs {
            label: p.label.clone(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if let Some(dir) = &p.content {
        fix_ext4_times(image, p, dir, mtime)?;
    }
    Ok(())
}

/// Paths (relative, '/'-separated, sorted, directories before their
/// contents) of everything under `dir`.
fn tree_paths(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let inner = format!("{rel}/{}", e.file_name().to_string_lossy());
        out.push((inner.clone(), e.path()));
        if e.file_type()?.is_dir() {
            tree_paths(&e.path(), &inner, out)?;
        }
    }
    Ok(())
}

/// `mkfs.ext4 -d` copies each host file's atime, mtime and ctime, so reading
/// the content tree (atime) or checking it out again (ctime) would change the
/// image. Set every copied inode's times to `mtime` with debugfs.
fn fix_ext4_times(
    image: &Path,
    p: &PlacedPartition,
    dir: &Path,
    mtime: u32,
) -> Result<(), DiskError> {
    let mut paths = vec![(String::from("/"), dir.to_path_buf())];
    tree_paths(dir, "", &mut paths).map_err(|source| DiskError::Content {
        label: p.label.clone(),
        path: dir.to_path_buf(),
        source,
    })?;
    let mut script = String::new();
    for (inner, host) in &paths {
        if inner.contains(|c: char| c == '"' || c.is_control()) {
            return Err(DiskError::ContentName {
                label: p.label.clone(),
                path: host.clone(),
            });
        }
        for field in ["atime", "mtime", "ctime", "crtime"] {
            script.push_str(&format!("sif \"{inner}\" {field} @{mtime}\n"));
        }
    }
    let io_err = |source| DiskError::Spawn {
        label: p.label.clone(),
        program: "debugfs".into(),
        source,
    };
    let mut file = tempfile::NamedTempFile::new().map_err(io_err)?;
    file.write_all(script.as_bytes()).map_err(io_err)?;
    let mut device = image.as_os_str().to_owned();
    device.push(format!("?offset={}", p.offset));
    let path = std::env::var("PATH").unwrap_or_default();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(file.path())
        .arg(&device)
        .env("PATH", format!("{path}:/usr/sbin:/sbin"))
        .output()
        .map_err(io_err)?;
    // debugfs reports a failed command on stderr but still exits 0.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        return Err(DiskError::Debugfs {
            label: p.label.clone(),
            status: out.status.to_string(),
            stderr: complaints.join("; "),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(derive_id(&["a", "b"]), derive_id(&["a", "b"]));
        assert_ne!(derive_id(&["a", "b"]), derive_id(&["ab", ""]));
        let id = derive_id(&["x"]);
        assert_eq!(id[7] >> 4, 4);
        assert_eq!(id[8] >> 6, 2);
    }

    #[test]
    fn guid_text_to_disk_order() {
        let b = guid_bytes(ESP_TYPE).unwrap();
        assert_eq!(&b[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(&b[8..], &[0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
        assert!(guid_bytes("nope").is_none());
        assert!(guid_bytes("C12A7328F81F11D2BA4B00A0C93EC93B----").is_none());
        assert_eq!(
            uuid_string(&[0x01; 16]),
            "01010101-0101-0101-0101-010101010101"
        );
    }

    #[test]
    fn window_caches_blocks_until_flush() {
        // A window of 3 blocks and a bit, over a file with old content and
        // bytes on both sides that must stay as they are.
        let (start, len) = (100u64, 3 * BLOCK + 10);
        let old: Vec<u8> = (0..start + len + 50).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&old).unwrap();
        let mut want = old.clone();
        let mut w = Window::new(&mut f, start, len);
        // Across a block boundary, a whole block, and the short last block.
        let spans = [
            (BLOCK - 3, 7usize),
            (BLOCK * 2, BLOCK as usize),
            (len - 4, 4),
        ];
        for (n, (at, size)) in spans.into_iter().enumerate() {
            let data = vec![0xE0 + n as u8; size];
            w.seek(SeekFrom::Start(at)).unwrap();
            w.write_all(&data).unwrap();
            let at = (start + at) as usize;
            want[at..at + size].copy_from_slice(&data);
        }
        // The window reads its own writes; old bytes around them are kept.
        w.seek(SeekFrom::Start(0)).unwrap();
        let mut seen = Vec::new();
        w.read_to_end(&mut seen).unwrap();
        assert_eq!(seen, want[start as usize..(start + len) as usize]);
        w.flush().unwrap();
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(all, want);
    }

    #[test]
    fn window_stays_inside() {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(100).unwrap();
        let mut w = Window::new(&mut f, 10, 20);
        w.write_all(&[7u8; 20]).unwrap();
        assert!(w.write_all(&[1]).is_err());
        assert!(w.seek(SeekFrom::Start(21)).is_err());
        w.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        w.read_to_end(&mut back).unwrap();
        assert_eq!(back, vec![7u8; 20]);
        w.flush().unwrap();
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(all[9], 0);
        assert_eq!(all[10], 7);
        assert_eq!(all[30], 0);
    }
}

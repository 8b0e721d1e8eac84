//! Reading filesystem signatures and GPT partition names from raw bytes.
//! Pure functions over byte slices: every offset is checked, hostile input
//! yields `None` or an error, never a panic.

/// What a partition holds, from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Ext4 {
        label: String,
        uuid: String,
    },
    Vfat {
        label: String,
        uuid: String,
    },
    /// Read-only: a container image's partition (`storage = "erofs"`).
    Erofs {
        label: String,
        uuid: String,
    },
    /// Some bytes are not zero but no filesystem cairn knows is there.
    Unknown,
    /// The probed area is all zeros.
    Empty,
}

/// How many bytes [`probe`] wants to see (the first 64 KiB; an empty
/// partition must be all zero there).
pub const PROBE_BYTES: usize = 64 * 1024;

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64le(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A label field: up to the first NUL, trailing spaces trimmed, lossy UTF-8.
fn label(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .trim_end()
        .to_string()
}

/// ext4 (ext2/3 too): magic 0xEF53 at 1024+56, UUID at 1024+104, label at
/// 1024+120 (16 bytes).
pub fn ext4(b: &[u8]) -> Option<Signature> {
    const SB: usize = 1024;
    if u16le(b, SB + 56)? != 0xef53 {
        return None;
    }
    Some(Signature::Ext4 {
        label: label(b.get(SB + 120..SB + 136)?),
        uuid: uuid(b.get(SB + 104..SB + 120)?),
    })
}

/// 16 bytes as `8-4-4-4-12` lower-case hex.
fn uuid(b: &[u8]) -> String {
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

/// erofs: magic 0xE0F5E1E2 at 1024, UUID at 1024+48, volume name at
/// 1024+64 (16 bytes).
pub fn erofs(b: &[u8]) -> Option<Signature> {
    const SB: usize = 1024;
    if u32le(b, SB)? != 0xe0f5_e1e2 {
        return None;
    }
    Some(Signature::Erofs {
        label: label(b.get(SB + 64..SB + 80)?),
        uuid: uuid(b.get(SB + 48..SB + 64)?),
    })
}

/// FAT12/16/32: boot signature 0x55AA, a sane BPB, and the extended boot
/// signature 0x29 carrying volume id and label (FAT32 at 0x43/0x47,
/// FAT12/16 at 0x27/0x2B).
pub fn vfat(b: &[u8]) -> Option<Signature> {
    if b.get(510..512)? != [0x55, 0xaa] {
        return None;
    }
    let bps = u16le(b, 11)?;
    let spc = *b.get(13)?;
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || spc == 0 || !spc.is_power_of_two() {
        return None;
    }
    if *b.get(16)? == 0 {
        return None; // no FATs
    }
    let fat32 = u16le(b, 22)? == 0;
    let (sig_at, id_at, label_at, type_at) = if fat32 {
        (0x42, 0x43, 0x47, 0x52)
    } else {
        (0x26, 0x27, 0x2b, 0x36)
    };
    let fs_type = b.get(type_at..type_at + 8)?;
    if *b.get(sig_at)? != 0x29 && !fs_type.starts_with(b"FAT") {
        return None;
    }
    let id = u32le(b, id_at)?;
    Some(Signature::Vfat {
        label: label(b.get(label_at..label_at + 11)?),
        uuid: format!("{:04X}-{:04X}", id >> 16, id & 0xffff),
    })
}

/// Identifies what `b` (the first bytes of a partition) holds.
pub fn probe(b: &[u8]) -> Signature {
    if let Some(s) = ext4(b) {
        return s;
    }
    if let Some(s) = vfat(b) {
        return s;
    }
    if let Some(s) = erofs(b) {
        return s;
    }
    if b.iter().all(|&x| x == 0) {
        Signature::Empty
    } else {
        Signature::Unknown
    }
}

/// Errors reading a GPT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GptError {
    #[error("no GPT header at LBA 1 (signature missing)")]
    NoHeader,
    #[error("GPT header field {field} out of range ({value})")]
    Field { field: &'static str, value: u64 },
    #[error("GPT header CRC mismatch")]
    HeaderCrc,
    #[error("GPT partition entries CRC mismatch")]
    EntriesCrc,
    #[error("GPT data truncated (need {need} bytes, have {have})")]
    Truncated { need: usize, have: usize },
}

/// The fields of a GPT header cairn needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub entries_lba: u64,
    pub entries: u32,
    pub entry_size: u32,
    entries_crc: u32,
}

/// CRC-32 (IEEE, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Parses the header in `lba1` (the 512 bytes at LBA 1), checking its CRC.
pub fn gpt_header(lba1: &[u8]) -> Result<GptHeader, GptError> {
    if lba1.get(0..8) != Some(b"EFI PART") {
        return Err(GptError::NoHeader);
    }
    let size = u32le(lba1, 12).ok_or(GptError::NoHeader)? as usize;
    if !(92..=512).contains(&size) || size > lba1.len() {
        return Err(GptError::Field {
            field: "header size",
            value: size as u64,
        });
    }
    let mut hdr = lba1[..size].to_vec();
    let want = u32le(&hdr, 16).ok_or(GptError::NoHeader)?;
    hdr[16..20].fill(0);
    if crc32(&hdr) != want {
        return Err(GptError::HeaderCrc);
    }
    let entries_lba = u64le(lba1, 72).ok_or(GptError::NoHeader)?;
    let entries = u32le(lba1, 80).ok_or(GptError::NoHeader)?;
    let entry_size = u32le(lba1, 84).ok_or(GptError::NoHeader)?;
    if !(128..=4096).contains(&entry_size) || entry_size % 8 != 0 {
        return Err(GptError::Field {
            field: "entry size",
            value: entry_size.into(),
        });
    }
    if entries > 1024 {
        return Err(GptError::Field {
            field: "number of entries",
            value: entries.into(),
        });
    }
    if entries_lba < 2 {
        return Err(GptError::Field {
            field: "entries LBA",
            value: entries_lba,
        });
    }
    Ok(GptHeader {
        entries_lba,
        entries,
        entry_size,
        entries_crc: u32le(lba1, 88).ok_or(GptError::NoHeader)?,
    })
}

impl GptHeader {
    /// Bytes of the entry array.
    pub fn entries_len(&self) -> usize {
        self.entries as usize * self.entry_size as usize
    }
}

/// The names of the used partitions, as (partition number from 1, name),
/// from the entry array `b` (checked against the header's CRC).
pub fn gpt_names(h: &GptHeader, b: &[u8]) -> Result<Vec<(u32, String)>, GptError> {
    let need = h.entries_len();
    let arr = b.get(..need).ok_or(GptError::Truncated {
        need,
        have: b.len(),
    })?;
    if crc32(arr) != h.entries_crc {
        return Err(GptError::EntriesCrc);
    }
    let mut out = Vec::new();
    for (i, e) in arr.chunks_exact(h.entry_size as usize).enumerate() {
        if e[..16].iter().all(|&x| x == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        out.push((i as u32 + 1, String::from_utf16_lossy(&units)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext4_image(label_text: &str) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[1024 + 56..1024 + 58].copy_from_slice(&0xef53u16.to_le_bytes());
        for (i, x) in (0u8..16).enumerate() {
            b[1024 + 104 + i] = x;
        }
        b[1024 + 120..1024 + 120 + label_text.len()].copy_from_slice(label_text.as_bytes());
        b
    }

    #[test]
    fn reads_ext4() {
        assert_eq!(
            probe(&ext4_image("DATA")),
            Signature::Ext4 {
                label: "DATA".into(),
                uuid: "00010203-0405-0607-0809-0a0b0c0d0e0f".into()
            }
        );
    }

    #[test]
    fn reads_erofs() {
        let mut b = vec![0u8; 4096];
        b[1024..1028].copy_from_slice(&0xe0f5_e1e2u32.to_le_bytes());
        for (i, x) in b[1024 + 48..1024 + 64].iter_mut().enumerate() {
            *x = i as u8;
        }
        b[1024 + 64..1024 + 67].copy_from_slice(b"IMG");
        assert_eq!(
            probe(&b),
            Signature::Erofs {
                label: "IMG".into(),
                uuid: "00010203-0405-0607-0809-0a0b0c0d0e0f".into()
            }
        );
        // Cut short before the name: not erofs, just data.
        assert_eq!(probe(&b[..1024 + 70]), Signature::Unknown);
    }

    #[test]
    fn reads_fat32_and_fat16() {
        let mut b = vec![0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[16] = 2;
        b[510] = 0x55;
        b[511] = 0xaa;
        b[0x42] = 0x29;
        b[0x43..0x47].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        b[0x47..0x52].copy_from_slice(b"ESP        ");
        assert_eq!(
            probe(&b),
            Signature::Vfat {
                label: "ESP".into(),
                uuid: "1234-ABCD".into()
            }
        );
        let mut c = b.clone();
        c[22] = 9; // sectors per FAT (16-bit): FAT12/16
        c[0x26] = 0x29;
        c[0x2b..0x36].copy_from_slice(b"SMALL      ");
        assert!(matches!(probe(&c), Signature::Vfat { label, .. } if label == "SMALL"));
    }

    #[test]
    fn empty_and_unknown() {
        assert_eq!(probe(&[0u8; 4096]), Signature::Empty);
        assert_eq!(probe(&[]), Signature::Empty);
        let mut b = vec![0u8; 4096];
        b[3000] = 1;
        assert_eq!(probe(&b), Signature::Unknown);
    }

    #[test]
    fn hostile_input_never_panics() {
        // Truncated superblocks, boot sectors with wild values, random bytes.
        let mut seed = 0x1234_5678u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [0usize, 1, 11, 511, 512, 1025, 1080, 1100, 1136, 2048, 4096] {
            for _ in 0..200 {
                let mut b: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                if len >= 1082 && rnd() % 2 == 0 {
                    b[1024 + 56] = 0x53;
                    b[1024 + 57] = 0xef;
                }
                if len >= 512 && rnd() % 2 == 0 {
                    b[510] = 0x55;
                    b[511] = 0xaa;
                }
                let _ = probe(&b);
                if len >= 8 && rnd() % 2 == 0 {
                    b[..8].copy_from_slice(b"EFI PART");
                }
                if let Ok(h) = gpt_header(&b) {
                    let _ = gpt_names(&h, &b);
                }
            }
        }
        let mut sb = ext4_image("X");
        sb.truncate(1130);
        assert_eq!(ext4(&sb), None); // label cut off
    }

    fn gpt(names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let mut entries = vec![0u8; 128 * 128];
        for (i, n) in names.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0] = 1; // a type GUID
            for (j, u) in n.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        (h, entries)
    }

    #[test]
    fn gpt_names_and_crcs() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let (h, e) = gpt(&["ESP", "DATA"]);
        let hdr = gpt_header(&h).unwrap();
        assert_eq!(
            gpt_names(&hdr, &e).unwrap(),
            vec![(1, "ESP".to_string()), (2, "DATA".to_string())]
        );
        let mut bad = h.clone();
        bad[80] = 3;
        assert_eq!(gpt_header(&bad), Err(GptError::HeaderCrc));
        let mut e2 = e.clone();
        e2[60] ^= 1;
        assert_eq!(gpt_names(&hdr, &e2), Err(GptError::EntriesCrc));
        assert!(matches!(
            gpt_names(&hdr, &e[..100]),
            Err(GptError::Truncated { .. })
        ));
        assert_eq!(gpt_header(&[0u8; 512]), Err(GptError::NoHeader));
    }
}

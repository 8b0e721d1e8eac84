//! PE32+ (UEFI executable) reading, for `cairn inspect` and UKI assembly.
//!
//! Hand-rolled and bounds-checked: every read names the header field and file
//! offset it came from, so a truncated or hostile file gives an error, never a
//! panic.

use thiserror::Error;

/// `IMAGE_NT_OPTIONAL_HDR64_MAGIC`.
pub const PE32_PLUS_MAGIC: u16 = 0x20b;
/// `IMAGE_NT_OPTIONAL_HDR32_MAGIC`.
pub const PE32_MAGIC: u16 = 0x10b;
/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_AMD64: u16 = 0x8664;
/// `IMAGE_FILE_MACHINE_ARM64`.
pub const MACHINE_ARM64: u16 = 0xaa64;
/// Index of the certificate (security) table in the data directories.
pub const DIR_SECURITY: usize = 4;
/// Size of one section table entry.
pub const SECTION_HEADER_SIZE: usize = 40;

/// `IMAGE_SCN_CNT_CODE`.
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_EXECUTE`.
pub const SCN_MEM_EXECUTE: u32 = 0x2000_0000;
/// `IMAGE_SCN_MEM_READ`.
pub const SCN_MEM_READ: u32 = 0x4000_0000;

/// Errors while reading a PE file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PeError {
    /// The file ends before a header field.
    #[error("PE file truncated: {field} at offset {offset:#x} needs {need} bytes, file has {len}")]
    Truncated {
        field: &'static str,
        offset: usize,
        need: usize,
        len: usize,
    },
    /// A magic number or signature does not match.
    #[error("not a PE file: {field} at offset {offset:#x} is {found:#x}, expected {expected:#x}")]
    BadMagic {
        field: &'static str,
        offset: usize,
        found: u32,
        expected: u32,
    },
    /// A header field has a value that cannot be right.
    #[error("invalid PE file: {field} at offset {offset:#x}: {reason}")]
    Invalid {
        field: &'static str,
        offset: usize,
        reason: String,
    },
}

/// What `parse` reports about a PE32+ image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeInfo {
    pub machine: u16,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub sections: Vec<SectionInfo>,
    /// The security (certificate table) data directory is non-empty.
    pub has_signature: bool,
}

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    /// Name with trailing NULs removed (long `/NN` names are kept verbatim).
    pub name: String,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
    pub characteristics: u32,
}

/// Offsets of the headers inside the file, for writers (UKI assembly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Offset of the COFF file header (just after `PE\0\0`).
    pub coff: usize,
    /// Offset of the optional header.
    pub opt: usize,
    /// Offset of the section table.
    pub section_table: usize,
    pub pointer_to_symbol_table: u32,
    pub number_of_symbols: u32,
}

// Field offsets inside the COFF file header.
pub(crate) const COFF_NUMBER_OF_SECTIONS: usize = 2;
pub(crate) const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
pub(crate) const COFF_NUMBER_OF_SYMBOLS: usize = 12;
pub(crate) const COFF_CHARACTERISTICS: usize = 18;
// Field offsets inside the PE32+ optional header.
pub(crate) const OPT_SIZE_OF_CODE: usize = 4;
pub(crate) const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
pub(crate) const OPT_SIZE_OF_IMAGE: usize = 56;
pub(crate) const OPT_CHECKSUM: usize = 64;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_NUMBER_OF_RVA_AND_SIZES: usize = 108;
const OPT_DATA_DIRECTORIES: usize = 112;

pub(crate) fn read_u16(bytes: &[u8], offset: usize, field: &'static str) -> Result<u16, PeError> {
    let b = slice(bytes, offset, 2, field)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

pub(crate) fn read_u32(bytes: &[u8], offset: usize, field: &'static str) -> Result<u32, PeError> {
    let b = slice(bytes, offset, 4, field)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn slice<'a>(
    bytes: &'a [u8],
    offset: usize,
    need: usize,
    field: &'static str,
) -> Result<&'a [u8], PeError> {
    offset
        .checked_add(need)
        .and_then(|end| bytes.get(offset..end))
        .ok_or(PeError::Truncated {
            field,
            offset,
            need,
            len: bytes.len(),
        })
}

/// Parse the headers and section table of a PE32+ image.
pub fn parse(bytes: &[u8]) -> Result<PeInfo, PeError> {
    parse_with_layout(bytes).map(|(info, _)| info)
}

pub(crate) fn parse_with_layout(bytes: &[u8]) -> Result<(PeInfo, Layout), PeError> {
    let mz = read_u16(bytes, 0, "DOS header e_magic")?;
    if mz != 0x5a4d {
        return Err(PeError::BadMagic {
            field: "DOS header e_magic",
            offset: 0,
            found: mz.into(),
            expected: 0x5a4d,
        });
    }
    let pe_off = read_u32(bytes, 0x3c, "DOS header e_lfanew")? as usize;
    let sig = read_u32(bytes, pe_off, "PE signature")?;
    if sig != 0x0000_4550 {
        return Err(PeError::BadMagic {
            field: "PE signature",
            offset: pe_off,
            found: sig,
            expected: 0x4550,
        });
    }
    let coff = pe_off + 4;
    let machine = read_u16(bytes, coff, "COFF Machine")?;
    let nsections = read_u16(
        bytes,
        coff + COFF_NUMBER_OF_SECTIONS,
        "COFF NumberOfSections",
    )?;
    let pointer_to_symbol_table = read_u32(
        bytes,
        coff + COFF_POINTER_TO_SYMBOL_TABLE,
        "COFF PointerToSymbolTable",
    )?;
    let number_of_symbols = read_u32(bytes, coff + COFF_NUMBER_OF_SYMBOLS, "COFF NumberOfSymbols")?;
    let size_opt = read_u16(bytes, coff + 16, "COFF SizeOfOptionalHeader")? as usize;
    let opt = coff + 20;
    let magic = read_u16(bytes, opt, "optional header Magic")?;
    if magic != PE32_PLUS_MAGIC {
        let reason = if magic == PE32_MAGIC {
            "PE32 (32-bit) images are not supported, expected PE32+ (0x20b)".to_string()
        } else {
            format!("{magic:#x}, expected PE32+ (0x20b)")
        };
        return Err(PeError::Invalid {
            field: "optional header Magic",
            offset: opt,
            reason,
        });
    }
    if size_opt < OPT_DATA_DIRECTORIES {
        return Err(PeError::Invalid {
            field: "COFF SizeOfOptionalHeader",
            offset: coff + 16,
            reason: format!("{size_opt} is smaller than the PE32+ optional header (112 bytes)"),
        });
    }
    // The whole optional header must be in the file.
    slice(bytes, opt, size_opt, "optional header")?;
    let section_alignment = read_u32(
        bytes,
        opt + OPT_SECTION_ALIGNMENT,
        "optional header SectionAlignment",
    )?;
    let file_alignment = read_u32(
        bytes,
        opt + OPT_FILE_ALIGNMENT,
        "optional header FileAlignment",
    )?;
    let size_of_image = read_u32(
        bytes,
        opt + OPT_SIZE_OF_IMAGE,
        "optional header SizeOfImage",
    )?;
    let size_of_headers = read_u32(
        bytes,
        opt + OPT_SIZE_OF_HEADERS,
        "optional header SizeOfHeaders",
    )?;
    let n_dirs = read_u32(
        bytes,
        opt + OPT_NUMBER_OF_RVA_AND_SIZES,
        "optional header NumberOfRvaAndSizes",
    )? as usize;
    if n_dirs > 16 || OPT_DATA_DIRECTORIES + n_dirs * 8 > size_opt {
        return Err(PeError::Invalid {
            field: "optional header NumberOfRvaAndSizes",
            offset: opt + OPT_NUMBER_OF_RVA_AND_SIZES,
            reason: format!(
                "{n_dirs} data directories do not fit in a {size_opt}-byte optional header (at most 16)"
            ),
        });
    }
    let has_signature = if n_dirs > DIR_SECURITY {
        let dir = opt + OPT_DATA_DIRECTORIES + DIR_SECURITY * 8;
        let addr = read_u32(bytes, dir, "security directory VirtualAddress")?;
        let size = read_u32(bytes, dir + 4, "security directory Size")?;
        addr != 0 || size != 0
    } else {
        false
    };

    let section_table = opt + size_opt;
    let mut sections = Vec::with_capacity(nsections.into());
    for i in 0..usize::from(nsections) {
        let off = section_table + i * SECTION_HEADER_SIZE;
        let raw = slice(bytes, off, SECTION_HEADER_SIZE, "section table entry")?;
        let name_bytes = &raw[..8];
        let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(8);
        let name = String::from_utf8_lossy(&name_bytes[..name_len]).into_owned();
        let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let s = SectionInfo {
            name,
            virtual_size: word(8),
            virtual_address: word(12),
            raw_size: word(16),
            raw_offset: word(20),
            characteristics: word(36),
        };
        if s.raw_size != 0 {
            let end = u64::from(s.raw_offset) + u64::from(s.raw_size);
            if end > bytes.len() as u64 {
                return Err(PeError::Invalid {
                    field: "section PointerToRawData/SizeOfRawData",
                    offset: off + 16,
                    reason: format!(
                        "section {:?} raw data {:#x}..{end:#x} lies beyond the end of the file ({:#x} bytes)",
                        s.name,
                        s.raw_offset,
                        bytes.len()
                    ),
                });
            }
        }
        sections.push(s);
    }
    let info = PeInfo {
        machine,
        section_alignment,
        file_alignment,
        size_of_image,
        size_of_headers,
        sections,
        has_signature,
    };
    let layout = Layout {
        coff,
        opt,
        section_table,
        pointer_to_symbol_table,
        number_of_symbols,
    };
    Ok((info, layout))
}

/// The raw bytes of the first section called `name`, trimmed to its
/// VirtualSize (a section's raw data is padded to FileAlignment).
/// `None` if the file does not parse, has no such section, or the data lies
/// outside the file.
pub fn section_data<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let info = parse(bytes).ok()?;
    let s = info.sections.iter().find(|s| s.name == name)?;
    let len = s.raw_size.min(s.virtual_size) as usize;
    let start = s.raw_offset as usize;
    bytes.get(start..start.checked_add(len)?)
}

/// The PE image checksum (as computed by `CheckSumMappedFile`): the 16-bit
/// one's-complement-style folded sum of the file, with the CheckSum field
/// itself counted as zero, plus the file length.
pub(crate) fn checksum(bytes: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in bytes.chunks(2).enumerate() {
        let off = i * 2;
        if off >= checksum_offset && off < checksum_offset + 4 {
            continue;
        }
        let word = u16::from_le_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// Offset of the CheckSum field for a file with this layout.
pub(crate) fn checksum_offset(layout: &Layout) -> usize {
    layout.opt + OPT_CHECKSUM
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    fn stub() -> Vec<u8> {
        std::fs::read(STUB).expect("systemd-boot-efi stub installed")
    }

    #[test]
    fn parses_systemd_stub() {
        let bytes = stub();
        let info = parse(&bytes).unwrap();
        assert_eq!(info.machine, MACHINE_AMD64);
        assert!(!info.has_signature);
        assert!(info.section_alignment >= 0x200);
        assert_eq!(info.file_alignment, 0x200);
        let names: Vec<&str> = info.sections.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&".text"), "{names:?}");
        assert!(names.contains(&".sdmagic"), "{names:?}");
        let sdmagic = section_data(&bytes, ".sdmagic").unwrap();
        assert!(
            sdmagic.starts_with(b"#### LoaderInfo: systemd-stub"),
            "{sdmagic:?}"
        );
        assert!(section_data(&bytes, ".nope").is_none());
    }

    #[test]
    fn checksum_matches_the_one_the_stub_carries() {
        let bytes = stub();
        let (_, layout) = parse_with_layout(&bytes).unwrap();
        let stored = read_u32(&bytes, checksum_offset(&layout), "CheckSum").unwrap();
        assert_ne!(stored, 0);
        assert_eq!(checksum(&bytes, checksum_offset(&layout)), stored);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            parse(b""),
            Err(PeError::Truncated { offset: 0, .. })
        ));
        assert!(matches!(
            parse(b"\x7fELF and more bytes here"),
            Err(PeError::BadMagic { offset: 0, .. })
        ));
        // MZ with e_lfanew pointing far outside the file.
        let mut b = vec![0u8; 64];
        b[0] = b'M';
        b[1] = b'Z';
        b[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let e = parse(&b).unwrap_err();
        assert!(
            matches!(
                e,
                PeError::Truncated {
                    field: "PE signature",
                    ..
                }
            ),
            "{e}"
        );
        assert!(section_data(&b, ".linux").is_none());
    }

    #[test]
    fn every_truncation_of_the_stub_headers_errors_without_panic() {
        let bytes = stub();
        for len in 0..0x400 {
            assert!(
                parse(&bytes[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
    }

    #[test]
    fn hostile_fields_are_reported() {
        let bytes = stub();
        let (info, layout) = parse_with_layout(&bytes).unwrap();
        // Section raw data beyond the end of the file.
        let mut b = bytes.clone();
        let entry = layout.section_table + 16;
        b[entry..entry + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = parse(&b).unwrap_err();
        assert!(e.to_string().contains(".text"), "{e}");
        assert!(section_data(&b, ".text").is_none());
        // PE32 magic.
        let mut b = bytes.clone();
        b[layout.opt..layout.opt + 2].copy_from_slice(&PE32_MAGIC.to_le_bytes());
        let e = parse(&b).unwrap_err();
        assert!(e.to_string().contains("PE32 (32-bit)"), "{e}");
        // Too many data directories.
        let mut b = bytes.clone();
        let at = layout.opt + OPT_NUMBER_OF_RVA_AND_SIZES;
        b[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(parse(&b), Err(PeError::Invalid { .. })));
        // A section count that runs past the end of the file.
        let mut b = bytes[..0x400].to_vec();
        let at = layout.coff + COFF_NUMBER_OF_SECTIONS;
        b[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(parse(&b).is_err());
        // A signature shows up.
        let mut b = bytes;
        let at = layout.opt + OPT_DATA_DIRECTORIES + DIR_SECURITY * 8;
        b[at..at + 4].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(parse(&b).unwrap().has_signature);
        assert!(!info.has_signature);
    }
}

//! Unified kernel image assembly: systemd-stub plus `.osrel`, `.cmdline`,
//! `.initrd` and `.linux` PE sections, written directly (no objcopy).
//!
//! Layout follows ukify: new sections go after the stub's last section, each
//! at the next free virtual address (aligned to SectionAlignment, and to at
//! least a 4 KiB page), raw data at FileAlignment-aligned offsets. `.linux` is
//! placed last, as ukify does ("linux shall be last to leave breathing room
//! for decompression": with the EFI handover protocol used by systemd-stub
//! 252 on x86 the kernel starts inside its section). A COFF symbol table at
//! the end of the stub (Debian's 252 stub carries one) is dropped, as ukify
//! does, so the new sections follow the section data directly.

use crate::pe::{self, PeError, SECTION_HEADER_SIZE};
use thiserror::Error;

/// Debian's systemd-boot-efi stub.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Sections `build` adds; a stub that already has one is refused.
pub const UKI_SECTIONS: [&str; 4] = [".osrel", ".cmdline", ".initrd", ".linux"];

/// Virtual addresses of new sections are aligned to at least a page.
const MIN_VA_ALIGN: u32 = 0x1000;
/// `IMAGE_FILE_LOCAL_SYMS_STRIPPED`.
const FILE_LOCAL_SYMS_STRIPPED: u16 = 0x0008;
/// Size of one COFF symbol table record.
const COFF_SYMBOL_SIZE: u64 = 18;

/// The payloads of a UKI. Empty `osrel`, `cmdline` or `initrd` are left out.
#[derive(Debug, Clone, Copy)]
pub struct UkiParts<'a> {
    pub osrel: &'a [u8],
    pub cmdline: &'a [u8],
    pub linux: &'a [u8],
    pub initrd: &'a [u8],
}

/// Errors while assembling a UKI.
#[derive(Debug, Error)]
pub enum UkiError {
    #[error("UEFI stub is not a usable PE32+ image: {0}")]
    Stub(#[from] PeError),
    #[error("UEFI stub already has a {0} section; expected a bare systemd-stub")]
    SectionExists(String),
    #[error(
        "UEFI stub carries a signature (security directory is not empty); \
         assemble from an unsigned stub and sign the finished UKI"
    )]
    Signed,
    #[error("the .linux payload is empty; a UKI needs a kernel")]
    NoKernel,
    #[error("UEFI stub has invalid {field} {value:#x}: expected a power of two")]
    BadAlignment { field: &'static str, value: u32 },
    #[error(
        "no room for {needed} more section headers in the stub: the section table ends at \
         {table_end:#x} and the headers end at {headers_end:#x}"
    )]
    NoHeaderRoom {
        needed: usize,
        table_end: usize,
        headers_end: usize,
    },
    #[error(
        "header space after the section table at {offset:#x} is not zero; refusing to overwrite it"
    )]
    HeaderSlackInUse { offset: usize },
    #[error("section {name} ({len} bytes) does not fit in a 32-bit PE image")]
    TooLarge { name: &'static str, len: usize },
}

fn align_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The AArch64 NOP (`hint #0`), little-endian: Debian's arm64 stub (its
/// linker script puts the headers in the text segment) pads its header
/// space with it.
const AARCH64_NOP: [u8; 4] = [0x1f, 0x20, 0x03, 0xd5];

/// The first byte of header space `slack` (at file offset `at`) that holds
/// something other than padding: zeros, or AArch64 NOPs on their 4-byte
/// boundaries; `None` when it is all padding.
fn header_slack_in_use(slack: &[u8], at: usize) -> Option<usize> {
    slack
        .iter()
        .enumerate()
        .position(|(i, &b)| b != 0 && b != AARCH64_NOP[(at + i) % 4])
}

/// Append the UKI sections to `stub` and return the new image. Deterministic:
/// the output depends only on the inputs. The PE checksum is recomputed.
pub fn build(stub: &[u8], parts: &UkiParts) -> Result<Vec<u8>, UkiError> {
    let (info, layout) = pe::parse_with_layout(stub)?;
    if info.has_signature {
        return Err(UkiError::Signed);
    }
    if let Some(s) = info
        .sections
        .iter()
        .find(|s| UKI_SECTIONS.contains(&s.name.as_str()))
    {
        return Err(UkiError::SectionExists(s.name.clone()));
    }
    if parts.linux.is_empty() {
        return Err(UkiError::NoKernel);
    }
    for (field, value) in [
        ("SectionAlignment", info.section_alignment),
        ("FileAlignment", info.file_alignment),
    ] {
        if !value.is_power_of_two() {
            return Err(UkiError::BadAlignment { field, value });
        }
    }
    let file_align = u64::from(info.file_alignment);
    let va_align = u64::from(info.section_alignment.max(MIN_VA_ALIGN));

    let new: Vec<(&'static str, &[u8], u32)> = [
        (
            ".osrel",
            parts.osrel,
            pe::SCN_CNT_INITIALIZED_DATA | pe::SCN_MEM_READ,
        ),
        (
            ".cmdline",
            parts.cmdline,
            pe::SCN_CNT_INITIALIZED_DATA | pe::SCN_MEM_READ,
        ),
        (
            ".initrd",
            parts.initrd,
            pe::SCN_CNT_INITIALIZED_DATA | pe::SCN_MEM_READ,
        ),
        // Code in .linux runs in place (EFI handover entry point).
        (
            ".linux",
            parts.linux,
            pe::SCN_CNT_CODE | pe::SCN_MEM_READ | pe::SCN_MEM_EXECUTE,
        ),
    ]
    .into_iter()
    .filter(|(_, data, _)| !data.is_empty())
    .collect();

    // Room for the new section headers between the section table and the
    // first section's data (and within SizeOfHeaders).
    let table_end = layout.section_table + info.sections.len() * SECTION_HEADER_SIZE;
    let first_raw = info
        .sections
        .iter()
        .filter(|s| s.raw_size != 0)
        .map(|s| s.raw_offset as usize)
        .min()
        .unwrap_or(usize::MAX);
    let headers_end = (info.size_of_headers as usize).min(first_raw);
    let new_table_end = table_end + new.len() * SECTION_HEADER_SIZE;
    if new_table_end > headers_end {
        return Err(UkiError::NoHeaderRoom {
            needed: new.len(),
            table_end,
            headers_end,
        });
    }
    if let Some(pos) = header_slack_in_use(&stub[table_end..new_table_end], table_end) {
        return Err(UkiError::HeaderSlackInUse {
            offset: table_end + pos,
        });
    }

    // Drop a trailing COFF symbol table (+ string table) as ukify does,
    // unless a section name refers into the string table.
    let mut end = stub.len();
    let mut strip_symbols = false;
    if layout.pointer_to_symbol_table != 0 && !info.sections.iter().any(|s| s.name.starts_with('/'))
    {
        let symtab = u64::from(layout.pointer_to_symbol_table);
        let strtab = symtab + u64::from(layout.number_of_symbols) * COFF_SYMBOL_SIZE;
        let strtab_size = usize::try_from(strtab)
            .ok()
            .and_then(|at| pe::read_u32(stub, at, "COFF string table size").ok());
        let data_end = info
            .sections
            .iter()
            .map(|s| u64::from(s.raw_offset) + u64::from(s.raw_size))
            .max()
            .unwrap_or(0);
        if let Some(size) = strtab_size {
            if strtab + u64::from(size) == stub.len() as u64 && symtab >= data_end {
                end = symtab as usize;
                strip_symbols = true;
            }
        }
    }

    let mut out = stub[..end].to_vec();
    if strip_symbols {
        let c = layout.coff;
        put_u32(&mut out, c + pe::COFF_POINTER_TO_SYMBOL_TABLE, 0);
        put_u32(&mut out, c + pe::COFF_NUMBER_OF_SYMBOLS, 0);
        let chars = pe::read_u16(&out, c + pe::COFF_CHARACTERISTICS, "COFF Characteristics")?;
        put_u16(
            &mut out,
            c + pe::COFF_CHARACTERISTICS,
            chars | FILE_LOCAL_SYMS_STRIPPED,
        );
    }

    let mut next_va = info
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
        .chain([u64::from(info.size_of_image)])
        .max()
        .unwrap_or(0);
    let mut size_of_code = u64::from(pe::read_u32(
        &out,
        layout.opt + pe::OPT_SIZE_OF_CODE,
        "optional header SizeOfCode",
    )?);
    let mut size_of_data = u64::from(pe::read_u32(
        &out,
        layout.opt + pe::OPT_SIZE_OF_INITIALIZED_DATA,
        "optional header SizeOfInitializedData",
    )?);
    let mut image_end = next_va;
    for (i, (name, data, characteristics)) in new.iter().enumerate() {
        let too_large = || UkiError::TooLarge {
            name,
            len: data.len(),
        };
        let va = align_up(next_va, va_align);
        let raw_offset = align_up(out.len() as u64, file_align);
        let raw_size = align_up(data.len() as u64, file_align);
        image_end = va + data.len() as u64;
        next_va = image_end;
        if align_up(image_end, va_align) > u64::from(u32::MAX)
            || raw_offset + raw_size > u64::from(u32::MAX)
        {
            return Err(too_large());
        }
        out.resize(raw_offset as usize, 0);
        out.extend_from_slice(data);
        out.resize((raw_offset + raw_size) as usize, 0);

        let mut header = [0u8; SECTION_HEADER_SIZE];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_u32(&mut header, 8, data.len() as u32);
        put_u32(&mut header, 12, va as u32);
        put_u32(&mut header, 16, raw_size as u32);
        put_u32(&mut header, 20, raw_offset as u32);
        put_u32(&mut header, 36, *characteristics);
        let at = table_end + i * SECTION_HEADER_SIZE;
        out[at..at + SECTION_HEADER_SIZE].copy_from_slice(&header);

        if characteristics & pe::SCN_CNT_CODE != 0 {
            size_of_code += raw_size;
        } else {
            size_of_data += raw_size;
        }
    }

    let n = info.sections.len() + new.len();
    let n = u16::try_from(n).map_err(|_| UkiError::NoHeaderRoom {
        needed: new.len(),
        table_end,
        headers_end,
    })?;
    put_u16(&mut out, layout.coff + pe::COFF_NUMBER_OF_SECTIONS, n);
    let size_of_image = align_up(image_end, va_align);
    put_u32(
        &mut out,
        layout.opt + pe::OPT_SIZE_OF_IMAGE,
        size_of_image as u32,
    );
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    put_u32(
        &mut out,
        layout.opt + pe::OPT_SIZE_OF_CODE,
        clamp(size_of_code),
    );
    put_u32(
        &mut out,
        layout.opt + pe::OPT_SIZE_OF_INITIALIZED_DATA,
        clamp(size_of_data),
    );
    let sum_at = pe::checksum_offset(&layout);
    put_u32(&mut out, sum_at, 0);
    let sum = pe::checksum(&out, sum_at);
    put_u32(&mut out, sum_at, sum);
    Ok(out)
}

#[cfg(test)]
mod slack_tests {
    use super::*;

    #[test]
    fn header_padding_is_zeros_or_aarch64_nops() {
        assert_eq!(header_slack_in_use(&[0; 8], 0x148), None);
        let nops: Vec<u8> = AARCH64_NOP.repeat(4);
        assert_eq!(header_slack_in_use(&nops, 0x148), None);
        // Misaligned NOP bytes are not padding.
        assert_eq!(header_slack_in_use(&nops, 0x149), Some(0));
        assert_eq!(header_slack_in_use(&[0, 0, 7, 0], 0x148), Some(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn stub() -> Vec<u8> {
        std::fs::read(DEFAULT_STUB).expect("systemd-boot-efi installed")
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    struct Fixture {
        osrel: Vec<u8>,
        cmdline: Vec<u8>,
        linux: Vec<u8>,
        initrd: Vec<u8>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                osrel: b"ID=cairn\nNAME=\"cairn test\"\n".to_vec(),
                cmdline: b"console=ttyS0 panic=-1".to_vec(),
                linux: payload(300_001, 7),
                initrd: payload(70_000, 3),
            }
        }
        fn parts(&self) -> UkiParts<'_> {
            UkiParts {
                osrel: &self.osrel,
                cmdline: &self.cmdline,
                linux: &self.linux,
                initrd: &self.initrd,
            }
        }
    }

    fn build_fixture() -> (Fixture, Vec<u8>) {
        let f = Fixture::new();
        let out = build(&stub(), &f.parts()).unwrap();
        (f, out)
    }

    #[test]
    fn sections_are_appended_in_order_without_overlap() {
        let stub_bytes = stub();
        let stub_info = pe::parse(&stub_bytes).unwrap();
        let (f, out) = build_fixture();
        let info = pe::parse(&out).unwrap();
        assert_eq!(info.sections.len(), stub_info.sections.len() + 4);
        let added: Vec<&str> = info.sections[stub_info.sections.len()..]
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(added, [".osrel", ".cmdline", ".initrd", ".linux"]);
        // Stub sections unchanged.
        assert_eq!(
            &info.sections[..stub_info.sections.len()],
            &stub_info.sections[..]
        );
        // Payloads come back exactly.
        assert_eq!(pe::section_data(&out, ".osrel").unwrap(), &f.osrel[..]);
        assert_eq!(pe::section_data(&out, ".cmdline").unwrap(), &f.cmdline[..]);
        assert_eq!(pe::section_data(&out, ".initrd").unwrap(), &f.initrd[..]);
        assert_eq!(pe::section_data(&out, ".linux").unwrap(), &f.linux[..]);
        // Virtual ranges ascend and do not overlap; raw ranges too.
        let mut prev_va_end = 0u64;
        let mut prev_raw_end = 0u64;
        for s in &info.sections {
            let va = u64::from(s.virtual_address);
            assert!(va >= prev_va_end, "{s:?} overlaps");
            prev_va_end = va + u64::from(s.virtual_size);
            assert!(
                u64::from(s.raw_offset) >= prev_raw_end,
                "{s:?} raw overlaps"
            );
            prev_raw_end = u64::from(s.raw_offset) + u64::from(s.raw_size);
        }
        for s in &info.sections[stub_info.sections.len()..] {
            assert_eq!(s.virtual_address % 0x1000, 0, "{s:?}");
            assert_eq!(s.virtual_address % info.section_alignment, 0, "{s:?}");
            assert_eq!(s.raw_offset % info.file_alignment, 0, "{s:?}");
            assert_eq!(s.raw_size % info.file_alignment, 0, "{s:?}");
            assert!(u64::from(s.virtual_address) >= u64::from(stub_info.size_of_image));
        }
        let linux = info.sections.last().unwrap();
        assert_eq!(linux.characteristics & pe::SCN_CNT_CODE, pe::SCN_CNT_CODE);
        let osrel = &info.sections[stub_info.sections.len()];
        assert_eq!(
            osrel.characteristics,
            pe::SCN_CNT_INITIALIZED_DATA | pe::SCN_MEM_READ
        );
        let end = u64::from(linux.virtual_address) + u64::from(linux.virtual_size);
        assert_eq!(u64::from(info.size_of_image), align_up(end, 0x1000));
        assert_eq!(
            out.len() as u64,
            u64::from(linux.raw_offset) + u64::from(linux.raw_size)
        );
        assert!(!info.has_signature);
    }

    #[test]
    fn checksum_and_symbols_are_fixed_up() {
        let (_, out) = build_fixture();
        let (_, layout) = pe::parse_with_layout(&out).unwrap();
        let at = pe::checksum_offset(&layout);
        let stored = pe::read_u32(&out, at, "CheckSum").unwrap();
        assert_eq!(stored, pe::checksum(&out, at));
        assert_eq!(layout.pointer_to_symbol_table, 0);
        assert_eq!(layout.number_of_symbols, 0);
    }

    #[test]
    fn output_is_deterministic() {
        let (_, a) = build_fixture();
        let (_, b) = build_fixture();
        assert_eq!(a, b);
    }

    #[test]
    fn empty_optional_parts_are_left_out() {
        let linux = payload(1000, 1);
        let out = build(
            &stub(),
            &UkiParts {
                osrel: b"",
                cmdline: b"",
                linux: &linux,
                initrd: b"",
            },
        )
        .unwrap();
        let info = pe::parse(&out).unwrap();
        let names: Vec<&str> = info.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.last(), Some(&".linux"));
        assert!(!names.contains(&".cmdline"));
        let e = build(
            &stub(),
            &UkiParts {
                osrel: b"x",
                cmdline: b"",
                linux: b"",
                initrd: b"",
            },
        )
        .unwrap_err();
        assert!(matches!(e, UkiError::NoKernel), "{e}");
    }

    #[test]
    fn refuses_existing_sections_signed_stubs_and_garbage() {
        let f = Fixture::new();
        let (_, uki) = build_fixture();
        let e = build(&uki, &f.parts()).unwrap_err();
        assert!(
            matches!(&e, UkiError::SectionExists(n) if n == ".osrel"),
            "{e}"
        );

        let mut signed = stub();
        let (_, layout) = pe::parse_with_layout(&signed).unwrap();
        let at = layout.opt + 112 + pe::DIR_SECURITY * 8;
        signed[at..at + 8].copy_from_slice(&[0, 0x10, 0, 0, 0x10, 0, 0, 0]);
        assert!(matches!(build(&signed, &f.parts()), Err(UkiError::Signed)));

        assert!(matches!(build(b"", &f.parts()), Err(UkiError::Stub(_))));
        assert!(matches!(
            build(&payload(5000, 9), &f.parts()),
            Err(UkiError::Stub(_))
        ));
        let stub_bytes = stub();
        for len in [0x40, 0x100, 0x2c8, 0x400, 0x5000] {
            assert!(build(&stub_bytes[..len], &f.parts()).is_err(), "{len}");
        }
    }

    #[test]
    fn no_header_room_is_an_error() {
        let mut s = stub();
        let (_, layout) = pe::parse_with_layout(&s).unwrap();
        // Claim the headers end right after the existing section table.
        let info = pe::parse(&s).unwrap();
        let table_end = layout.section_table + info.sections.len() * SECTION_HEADER_SIZE;
        put_u32(&mut s, layout.opt + 60, table_end as u32 + 40);
        let e = build(&s, &Fixture::new().parts()).unwrap_err();
        assert!(matches!(e, UkiError::NoHeaderRoom { needed: 4, .. }), "{e}");
    }

    fn tool_available(name: &str) -> bool {
        Command::new(name).arg("--help").output().is_ok()
    }

    fn run(cmd: &mut Command) -> std::process::Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        out
    }

    #[test]
    fn objdump_sees_the_sections() {
        assert!(tool_available("objdump"), "binutils objdump needed");
        let dir = tempfile::tempdir().unwrap();
        let (f, out) = build_fixture();
        let path = dir.path().join("t.efi");
        std::fs::write(&path, &out).unwrap();
        let o = run(Command::new("objdump").arg("-h").arg(&path));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        let info = pe::parse(&out).unwrap();
        for (name, len) in [
            (".osrel", f.osrel.len()),
            (".cmdline", f.cmdline.len()),
            (".initrd", f.initrd.len()),
            (".linux", f.linux.len()),
        ] {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("{name} missing from objdump -h:\n{text}"));
            let cols: Vec<&str> = line.split_whitespace().collect();
            let size = u64::from_str_radix(cols[2], 16).unwrap();
            let vma = u64::from_str_radix(cols[3], 16).unwrap();
            let off = u64::from_str_radix(cols[5], 16).unwrap();
            let s = info.sections.iter().find(|s| s.name == name).unwrap();
            // objdump reports the raw size (FileAlignment-padded) for PE.
            assert!(size >= len as u64 && size < len as u64 + 0x200, "{line}");
            assert_eq!(vma, u64::from(s.virtual_address), "{line}");
            assert_eq!(off, u64::from(s.raw_offset), "{line}");
        }
        let p = run(Command::new("objdump").arg("-p").arg(&path));
        let ptext = String::from_utf8_lossy(&p.stdout);
        let soi = ptext
            .lines()
            .find(|l| l.starts_with("SizeOfImage"))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|v| u64::from_str_radix(v, 16).unwrap())
            .unwrap();
        assert_eq!(soi, u64::from(info.size_of_image));
    }

    fn sbsign_roundtrip(dir: &Path, efi: &Path) {
        let key = dir.join("db.key");
        let crt = dir.join("db.crt");
        let o = run(Command::new("timeout")
            .args([
                "60",
                "openssl",
                "req",
                "-new",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=cairn test/",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt));
        assert!(
            o.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let signed = dir.join("signed.efi");
        let o = run(Command::new("timeout")
            .args(["60", "sbsign", "--key"])
            .arg(&key)
            .arg("--cert")
            .arg(&crt)
            .arg("--output")
            .arg(&signed)
            .arg(efi));
        assert!(
            o.status.success(),
            "sbsign: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let o = run(Command::new("timeout")
            .args(["60", "sbverify", "--cert"])
            .arg(&crt)
            .arg(&signed));
        assert!(
            o.status.success(),
            "sbverify --cert: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let bytes = std::fs::read(&signed).unwrap();
        let info = pe::parse(&bytes).unwrap();
        assert!(info.has_signature);
        // Our own build refuses the signed result.
        let e = build(&bytes, &Fixture::new().parts()).unwrap_err();
        assert!(
            matches!(e, UkiError::Signed | UkiError::SectionExists(_)),
            "{e}"
        );
    }

    #[test]
    fn sbverify_and_sbsign_accept_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (_, out) = build_fixture();
        let efi = dir.path().join("uki.efi");
        std::fs::write(&efi, &out).unwrap();
        let o = run(Command::new("timeout")
            .args(["60", "sbverify", "--list"])
            .arg(&efi));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // sbverify --list on an unsigned image: parses it, reports no signature.
        assert!(text.contains("No signature table present"), "{text}");
        assert!(!text.to_lowercase().contains("invalid"), "{text}");
        // Exit status 0 for an unsigned image; no "data remaining: gaps
        // between PE/COFF sections" warning (the stub alone has one, for its
        // symbol table, which build drops).
        assert!(o.status.success(), "{text}");
        assert!(!text.contains("data remaining"), "{text}");
        sbsign_roundtrip(dir.path(), &efi);
    }
}

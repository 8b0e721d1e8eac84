//! UEFI boot variables through efivarfs: `Boot####` load options for the
//! two slots, `BootOrder`, `BootNext` and `BootCurrent`.
//!
//! An efivarfs file is the variable's 4-byte attributes followed by its
//! data; existing variables are immutable files (`chattr -i` first), and
//! one `write` replaces the whole value.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use cairn_manifest::runtime::EspLocation;

pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRS: u32 = 0x7;

/// The slots' `Boot####` numbers: `BootCA0A`, `BootCA0B`.
pub fn slot_entry(slot: char) -> u16 {
    if slot == 'B' {
        0xCA0B
    } else {
        0xCA0A
    }
}

pub fn entry_slot(n: u16) -> Option<char> {
    match n {
        0xCA0A => Some('A'),
        0xCA0B => Some('B'),
        _ => None,
    }
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(format!("{EFIVARS}/{name}-{GLOBAL}"))
}

/// A variable's data (without the attributes); `None` when absent.
pub fn read(name: &str) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path(name)) {
        Ok(b) if b.len() >= 4 => Ok(Some(b[4..].to_vec())),
        Ok(_) => Ok(Some(Vec::new())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn clear_immutable(p: &std::path::Path) -> std::io::Result<()> {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let f = match std::fs::File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let flags = ioctl_getflags(&f)?;
    if flags.contains(IFlags::IMMUTABLE) {
        ioctl_setflags(&f, flags - IFlags::IMMUTABLE)?;
    }
    Ok(())
}

/// Sets variable `name` to `data` (non-volatile).
pub fn write(name: &str, data: &[u8]) -> std::io::Result<()> {
    let p = path(name);
    clear_immutable(&p)?;
    let mut buf = ATTRS.to_le_bytes().to_vec();
    buf.extend_from_slice(data);
    // No O_TRUNC: efivarfs replaces the value with each write.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)?;
    f.write_all(&buf)
}

pub fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn boot_current() -> std::io::Result<Option<u16>> {
    Ok(read("BootCurrent")?.and_then(|b| u16s(&b).first().copied()))
}

pub fn boot_order() -> std::io::Result<Vec<u16>> {
    Ok(read("BootOrder")?.map(|b| u16s(&b)).unwrap_or_default())
}

pub fn set_boot_order(order: &[u16]) -> std::io::Result<()> {
    write("BootOrder", &u16_bytes(order))
}

pub fn set_boot_next(n: u16) -> std::io::Result<()> {
    write("BootNext", &n.to_le_bytes())
}

/// `order` with `first` first, then `second`, then the rest as they were.
pub fn reordered(order: &[u16], first: u16, second: u16) -> Vec<u16> {
    let mut v = vec![first, second];
    v.extend(order.iter().filter(|&&n| n != first && n != second));
    v
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(|c| c.to_le_bytes())
        .collect()
}

/// The `EFI_LOAD_OPTION` of a slot: active, "cairn SLOT", the short-form
/// device path `HD(part,GPT,guid,start,size)/\EFI\cairn\SLOT.efi`
/// (firmware expands it to the disk holding that partition).
pub fn load_option(slot: char, esp: &EspLocation) -> Option<Vec<u8>> {
    let guid = cairn_manifest::release::unhex(&esp.guid)?;
    if guid.len() != 16 {
        return None;
    }
    let mut dp = vec![0x04, 0x01, 42, 0];
    dp.extend(esp.partition.to_le_bytes());
    dp.extend(esp.start_lba.to_le_bytes());
    dp.extend(esp.sectors.to_le_bytes());
    dp.extend(&guid);
    dp.extend([0x02, 0x02]);
    let file = utf16z(&format!("\\EFI\\cairn\\{slot}.efi"));
    dp.extend([0x04, 0x04]);
    dp.extend(((4 + file.len()) as u16).to_le_bytes());
    dp.extend(file);
    dp.extend([0x7f, 0xff, 0x04, 0x00]);
    let mut opt = 1u32.to_le_bytes().to_vec();
    opt.extend((dp.len() as u16).to_le_bytes());
    opt.extend(utf16z(&format!("cairn {slot}")));
    opt.extend(dp);
    Some(opt)
}

pub fn entry_name(n: u16) -> String {
    format!("Boot{n:04X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_option_layout() {
        let esp = EspLocation {
            partition: 1,
            start_lba: 2048,
            sectors: 131072,
            guid: "00112233445566778899aabbccddeeff".into(),
        };
        let o = load_option('B', &esp).unwrap();
        assert_eq!(&o[..4], &[1, 0, 0, 0]);
        let dp_len = u16::from_le_bytes([o[4], o[5]]) as usize;
        let desc = utf16z("cairn B");
        assert_eq!(&o[6..6 + desc.len()], &desc[..]);
        let dp = &o[6 + desc.len()..];
        assert_eq!(dp.len(), dp_len);
        assert_eq!(&dp[..4], &[4, 1, 42, 0]);
        assert_eq!(u64::from_le_bytes(dp[8..16].try_into().unwrap()), 2048);
        assert_eq!(dp[24], 0x00);
        assert_eq!(dp[39], 0xff);
        assert_eq!(&dp[40..42], &[2, 2]);
        assert_eq!(&dp[42..44], &[4, 4]);
        assert_eq!(&dp[dp.len() - 4..], &[0x7f, 0xff, 4, 0]);
        assert_eq!(entry_name(slot_entry('A')), "BootCA0A");
        assert_eq!(
            reordered(&[1, 0xCA0A, 2, 0xCA0B], 0xCA0B, 0xCA0A),
            vec![0xCA0B, 0xCA0A, 1, 2]
        );
    }
}

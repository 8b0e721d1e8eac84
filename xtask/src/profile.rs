//! `cargo xtask profile`: which guest code each init runs before its
//! service starts, read from QEMU's translation log.
//!
//! Under TCG every guest code block is translated the first time it runs,
//! and on these machines that translation, not the work the code does, is
//! most of a boot step's cost. So the amount of distinct code an init runs
//! before ready tells where its boot time goes. The bench appliances are
//! booted once each with `-d in_asm` and `norandmaps`; the blocks from the
//! init's entry point to the service's entry point are summed: the init's
//! own (for cairn-init attributed to functions and crates through the
//! symbols of an unstripped build of the same code), and the kernel's that
//! ran for the first time in that span (system calls, devices, network
//! stack paths the kernel's own boot had not used yet).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Where position-independent static programs are mapped (the mmap area).
const PIE_FLOOR: u64 = 0x7f00_0000_0000;
/// Above the user-space half.
const USER_END: u64 = 0x8000_0000_0000;
/// The kernel's half of the address space.
const KERNEL_FLOOR: u64 = 0xffff_8000_0000_0000;
/// The first instruction of musl's and glibc's x86-64 `_start`
/// (`xor %rbp, %rbp`).
const START_BYTES: [u8; 3] = [0x48, 0x31, 0xed];

/// One translated block: its address and its instructions' bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub addr: u64,
    pub bytes: Vec<u8>,
}

/// The blocks of a `-d in_asm` log, in translation order.
pub fn parse_log(log: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut open = false;
    for line in log.lines() {
        if line.starts_with("IN:") {
            open = true;
            continue;
        }
        if line.starts_with("----") {
            open = false;
            continue;
        }
        // `0x7ffff7e79d6a:  48 31 ed                 xorq ...`
        let Some((addr, rest)) = line.strip_prefix("0x").and_then(|l| l.split_once(":  ")) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let bytes: Vec<u8> = rest
            .split_whitespace()
            .map_while(|t| {
                (t.len() == 2)
                    .then(|| u8::from_str_radix(t, 16).ok())
                    .flatten()
            })
            .collect();
        match blocks.last_mut() {
            Some(b) if !open => b.bytes.extend(bytes),
            _ => blocks.push(Block { addr, bytes }),
        }
        open = false;
    }
    blocks
}

/// `e_entry` and `e_type == ET_DYN` of a 64-bit ELF file.
pub fn elf_entry(image: &[u8]) -> Result<(u64, bool)> {
    if image.len() < 64 || &image[..4] != b"\x7fELF" || image[4] != 2 {
        bail!("not a 64-bit ELF file");
    }
    let e_type = u16::from_le_bytes([image[16], image[17]]);
    let entry = u64::from_le_bytes(image[24..32].try_into().expect("8 bytes"));
    Ok((entry, e_type == 3))
}

/// The init's blocks: from its entry point up to (not including) the first
/// block of another program's `_start` (the service's exec).
/// `entry` is the init's entry address for a fixed-address program, or
/// `None` for a PIE (then the first block in the mmap area is its entry).
/// Returns the blocks and the init's load bias.
pub fn init_span(blocks: &[Block], entry: Option<u64>) -> Option<(&[Block], u64)> {
    let start = blocks.iter().position(|b| match entry {
        Some(e) => b.addr == e,
        None => (PIE_FLOOR..USER_END).contains(&b.addr),
    })?;
    let first = blocks[start].addr;
    let end = blocks[start + 1..]
        .iter()
        .position(|b| b.addr != first && b.addr < USER_END && b.bytes.starts_with(&START_BYTES))
        .map_or(blocks.len(), |i| start + 1 + i);
    Some((&blocks[start..end], first))
}

/// Sorted `(address, name)` of the function symbols of `binary` (nm).
pub fn symbols(binary: &Path) -> Result<Vec<(u64, String)>> {
    let out = std::process::Command::new("nm")
        .args(["-n", "-C", "--defined-only"])
        .arg(binary)
        .output()
        .context("running nm (binutils)")?;
    if !out.status.success() {
        bail!("nm {} failed", binary.display());
    }
    let mut syms: Vec<(u64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let kind = it.next()?;
            let name = it.next()?;
            matches!(kind, "t" | "T" | "w" | "W").then(|| (addr, name.to_string()))
        })
        .collect();
    syms.sort();
    if syms.is_empty() {
        bail!("{} has no symbols (stripped?)", binary.display());
    }
    Ok(syms)
}

/// The crate a demangled symbol belongs to: its first path segment, with
/// `<impl ... for ...>` and reference prefixes peeled off; C functions
/// (musl) count as `libc`.
pub fn crate_of(symbol: &str) -> String {
    let s = symbol.trim_start_matches(['<', '&', '*']);
    let s = s
        .strip_prefix("dyn ")
        .or_else(|| s.strip_prefix("mut "))
        .or_else(|| s.strip_prefix("impl "))
        .unwrap_or(s);
    match s.split_once("::") {
        Some((head, _)) if !head.contains([' ', '<', '(', '[']) => head.to_string(),
        _ if !symbol.contains("::") => "libc".into(),
        _ => "(generic)".into(),
    }
}

/// Bytes translated per function and per crate.
pub struct Breakdown {
    /// The init's own code (user space).
    pub total: usize,
    pub blocks: usize,
    /// Kernel code translated in the same span.
    pub kernel: usize,
    pub by_crate: Vec<(String, usize)>,
    pub by_function: Vec<(String, usize)>,
}

pub fn breakdown(span: &[Block], bias: u64, syms: &[(u64, String)]) -> Breakdown {
    let mut crates: BTreeMap<String, usize> = BTreeMap::new();
    let mut funcs: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut total, mut kernel, mut blocks) = (0, 0, 0);
    for b in span {
        if b.addr >= KERNEL_FLOOR {
            kernel += b.bytes.len();
            continue;
        }
        if b.addr >= USER_END {
            continue;
        }
        blocks += 1;
        let off = b.addr.wrapping_sub(bias);
        let i = syms.partition_point(|(a, _)| *a <= off);
        let name = if i == 0 { "?" } else { syms[i - 1].1.as_str() };
        *crates.entry(crate_of(name)).or_default() += b.bytes.len();
        *funcs.entry(name).or_default() += b.bytes.len();
        total += b.bytes.len();
    }
    let sorted = |m: BTreeMap<String, usize>| {
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    Breakdown {
        total,
        blocks,
        kernel,
        by_crate: sorted(crates),
        by_function: sorted(funcs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
    }
}

/// The Markdown report.
pub fn report(cairn: &Breakdown, baseline: Option<&Breakdown>, top: usize) -> String {
    let kib = |n: usize| format!("{:.1} KiB", n as f64 / 1024.0);
    let mut s = String::new();
    s.push_str(
        "Guest code translated by QEMU (TCG) from the init's entry point until \
         the service is exec'd (`cargo xtask profile`):\n\n",
    );
    s.push_str(&format!(
        "- cairn-init: {} of its own code in {} blocks, and {} of kernel code\n",
        kib(cairn.total),
        cairn.blocks,
        kib(cairn.kernel)
    ));
    if let Some(b) = baseline {
        s.push_str(&format!(
            "- BusyBox (init, sh, mount, ifconfig, udhcpc and its script): {} of its own \
             code in {} blocks, and {} of kernel code\n",
            kib(b.total),
            b.blocks,
            kib(b.kernel)
        ));
    }
    s.push_str("\n| crate | translated | share |\n|---|---|---|\n");
    for (c, n) in cairn.by_crate.iter().take(top) {
        s.push_str(&format!(
            "| {c} | {} | {:.0}% |\n",
            kib(*n),
            100.0 * *n as f64 / cairn.total.max(1) as f64
        ));
    }
    s.push_str("\n| function | bytes |\n|---|---|\n");
    for (f, n) in cairn.by_function.iter().take(top) {
        let short: String = f.chars().take(110).collect();
        s.push_str(&format!("| `{}` | {n} |\n", short.replace('|', "\\|")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "----------------\n\
        IN: \n\
        0x000fe05b:  2e 66 83 3e c8 61 00     cmpl     $0, %cs:0x61c8\n\
        \n\
        ----------------\n\
        IN: \n\
        0x7ffff7e79d6a:  48 31 ed                 xorq     %rbp, %rbp\n\
        0x7ffff7e79d6d:  48 89 e7                 movq     %rsp, %rdi\n\
        \n\
        ----------------\n\
        IN: \n\
        0x7ffff7e79e00:  c3                       retq     \n\
        \n\
        ----------------\n\
        IN: \n\
        0xffffffff81000000:  48 31 ed 90              xorq     %rbp, %rbp\n\
        \n\
        ----------------\n\
        IN: \n\
        0x7ffff7f9dd78:  48 31 ed                 xorq     %rbp, %rbp\n\
        \n";

    #[test]
    fn parses_blocks_and_cuts_at_the_next_program() {
        let blocks = parse_log(LOG);
        assert_eq!(blocks.len(), 5);
        assert_eq!(blocks[1].addr, 0x7fff_f7e7_9d6a);
        assert_eq!(blocks[1].bytes, [0x48, 0x31, 0xed, 0x48, 0x89, 0xe7]);
        let (span, bias) = init_span(&blocks, None).unwrap();
        assert_eq!(bias, 0x7fff_f7e7_9d6a);
        assert_eq!(span.len(), 3, "stops at the service's _start");
        let syms = vec![
            (0, "_start".to_string()),
            (0x90, "cairn_init::main".to_string()),
        ];
        let b = breakdown(span, bias, &syms);
        assert_eq!((b.total, b.blocks, b.kernel), (7, 2, 4));
        assert_eq!(b.by_function[0], ("_start".to_string(), 6));
        assert_eq!(
            b.by_crate.iter().find(|c| c.0 == "cairn_init").unwrap().1,
            1
        );
        // A fixed-address init starts at its entry point.
        assert!(init_span(&blocks, Some(0x1234)).is_none());
        assert_eq!(init_span(&blocks, Some(0xfe05b)).unwrap().0.len(), 1);
    }

    #[test]
    fn crates_of_symbols() {
        assert_eq!(crate_of("toml_edit::parser::parse_document"), "toml_edit");
        assert_eq!(
            crate_of("<alloc::vec::Vec<T,A> as core::clone::Clone>::clone"),
            "alloc"
        );
        assert_eq!(crate_of("__libc_malloc_impl"), "libc");
        assert_eq!(
            crate_of("<(Alt2,Alt3) as winnow::Alt>::choice"),
            "(generic)"
        );
    }

    #[test]
    fn elf_header() {
        let mut h = vec![0u8; 64];
        h[..5].copy_from_slice(b"\x7fELF\x02");
        h[16] = 3;
        h[24..32].copy_from_slice(&0x13d6au64.to_le_bytes());
        assert_eq!(elf_entry(&h).unwrap(), (0x13d6a, true));
        assert!(elf_entry(b"nope").is_err());
    }
}

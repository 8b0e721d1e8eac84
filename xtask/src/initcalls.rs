//! `cargo xtask initcalls`: where the tiny kernel's boot time goes. Boots
//! the bench's tiny-kernel appliance once under `-icount shift=0,sleep=off`
//! with `initcall_debug`, reads each initcall's time off the console and
//! names it with the build's System.map (the tiny kernel has no kallsyms,
//! so the kernel prints bare addresses; the boot has `nokaslr` so that
//! they are the map's).

use std::collections::BTreeMap;

/// One initcall's cost, as the kernel reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct Initcall {
    /// `0xffffffff8...` or, with kallsyms, `name+0x0/0x10`.
    pub func: String,
    pub usecs: u64,
}

/// `initcall FUNC returned RET after N usecs` lines (Linux 6.1's format).
pub fn parse(console: &str) -> Vec<Initcall> {
    console
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("initcall ")? + "initcall ".len()..];
            let (func, rest) = rest.split_once(" returned ")?;
            let after = rest.split_once(" after ")?.1;
            let usecs = after.strip_suffix(" usecs")?.trim().parse().ok()?;
            Some(Initcall {
                func: func.trim().to_string(),
                usecs,
            })
        })
        .collect()
}

/// Text symbols of a System.map (`ADDR TYPE NAME` lines) by address.
pub fn system_map(text: &str) -> BTreeMap<u64, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            matches!(kind, "t" | "T").then(|| (addr, name.to_string()))
        })
        .collect()
}

/// The furthest an address is taken to be inside the symbol below it.
const MAX_OFFSET: u64 = 64 << 10;

/// The symbol an initcall's printed function is in: the nearest text
/// symbol at or below a bare address; a kallsyms name as it is.
pub fn resolve(func: &str, map: &BTreeMap<u64, String>) -> String {
    let Some(hex) = func.strip_prefix("0x") else {
        return func.split('+').next().unwrap_or(func).to_string();
    };
    let Ok(addr) = u64::from_str_radix(hex, 16) else {
        return func.to_string();
    };
    match map.range(..=addr).next_back() {
        Some((a, name)) if *a == addr => name.clone(),
        // Further than any function is long: the map is not this boot's
        // layout (KASLR moved the kernel; boot with `nokaslr`).
        Some((a, name)) if addr - a < MAX_OFFSET => format!("{name}+{:#x}", addr - a),
        _ => func.to_string(),
    }
}

/// The report: total, then the `top` slowest initcalls with their share.
pub fn report(calls: &[Initcall], map: &BTreeMap<u64, String>, top: usize) -> String {
    use std::fmt::Write as _;
    let total: u64 = calls.iter().map(|c| c.usecs).sum();
    let mut sorted: Vec<&Initcall> = calls.iter().collect();
    sorted.sort_by(|a, b| b.usecs.cmp(&a.usecs).then(a.func.cmp(&b.func)));
    let mut s = format!(
        "{} initcalls, {:.1} ms in all (icount time)\n\n| initcall | ms | share |\n|---|---|---|\n",
        calls.len(),
        total as f64 / 1000.0
    );
    for c in sorted.iter().take(top) {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.0}% |",
            resolve(&c.func, map),
            c.usecs as f64 / 1000.0,
            100.0 * c.usecs as f64 / total.max(1) as f64
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_initcalls_and_names_them() {
        let console = "[    0.010000] calling  0xffffffff81e0a0b0 @ 1\n\
                       [    0.012000] initcall 0xffffffff81e0a0b0 returned 0 after 1953 usecs\n\
                       [    0.013000] initcall 0xffffffff81e0a1c4 returned -19 after 7 usecs\n\
                       [    0.020000] initcall pci_init+0x0/0x30 returned 0 after 5000 usecs\n\
                       [    0.021000] initcall 0xffffffff81e0a0b0 returned 0 after\n";
        let calls = parse(console);
        assert_eq!(
            calls,
            [
                Initcall {
                    func: "0xffffffff81e0a0b0".into(),
                    usecs: 1953
                },
                Initcall {
                    func: "0xffffffff81e0a1c4".into(),
                    usecs: 7
                },
                Initcall {
                    func: "pci_init+0x0/0x30".into(),
                    usecs: 5000
                },
            ]
        );
        let map = system_map(
            "ffffffff81000000 T _text\n\
             ffffffff81e0a0b0 t virtio_net_driver_init\n\
             ffffffff81e0a1c0 T acpi_init\n\
             ffffffff81f00000 D some_data\n",
        );
        assert_eq!(
            resolve("0xffffffff81e0a0b0", &map),
            "virtio_net_driver_init"
        );
        assert_eq!(resolve("0xffffffff81e0a1c4", &map), "acpi_init+0x4");
        assert_eq!(resolve("pci_init+0x0/0x30", &map), "pci_init");
        assert_eq!(resolve("0xffffffff80000000", &map), "0xffffffff80000000");
        // A randomized (KASLR) address is not named after whatever lies below.
        assert_eq!(resolve("0xffffffffaa000000", &map), "0xffffffffaa000000");
        let r = report(&calls, &map, 2);
        assert!(r.starts_with("3 initcalls, 7.0 ms in all"), "{r}");
        assert!(
            r.contains("| pci_init | 5.00 | 72% |\n| virtio_net_driver_init | 1.95 | 28% |\n"),
            "{r}"
        );
        assert!(!r.contains("acpi_init"), "{r}");
    }
}

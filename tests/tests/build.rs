//! `cairn build` and `cairn inspect` end to end, checked with external tools.

use std::path::Path;
use std::process::Command;

use cairn_e2e::{
    assert_refused_cleanly, build, cairn, dir_contents, example, run_with_timeout, Outcome,
};

fn inspect(file: &Path) -> Outcome {
    let mut c = cairn();
    c.arg("inspect").arg(file);
    run_with_timeout(c, std::time::Duration::from_secs(60))
}

/// The size column of the build table's row whose first word is `label`
/// ("13.53 MiB", "42.8 KiB", "12 B").
fn table_size(table: &str, label: &str) -> String {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label))
        .unwrap_or_else(|| panic!("no row {label} in the table:\n{table}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words.len() >= 3, "no size in {line:?}");
    format!("{} {}", words[1], words[2])
}

/// Checks a size as the table prints it against `real` bytes: bytes below
/// 1 KiB, KiB with one decimal below 1 MiB, MiB with two decimals above,
/// the number right to its last printed digit.
fn assert_size_matches(printed: &str, real: u64) {
    let (num, unit) = printed
        .split_once(' ')
        .unwrap_or_else(|| panic!("size {printed:?}"));
    let num: f64 = num.parse().unwrap_or_else(|_| panic!("size {printed:?}"));
    let (want_unit, scale, half_step) = if real >= 1 << 20 {
        ("MiB", (1u64 << 20) as f64, 0.005)
    } else if real >= 1 << 10 {
        ("KiB", 1024.0, 0.05)
    } else {
        ("B", 1.0, 0.0)
    };
    assert_eq!(unit, want_unit, "{printed:?} for {real} bytes");
    assert!(
        (num - real as f64 / scale).abs() <= half_step + 1e-9,
        "{printed:?} for {real} bytes"
    );
}

#[test]
fn build_writes_three_outputs_and_a_table() {
    let out = tempfile::tempdir().unwrap();
    let o = build(&example("hello"), out.path());
    o.assert_ok();
    for f in ["hello.vmlinuz", "hello.initrd", "hello.efi"] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
    // The table names what went in.
    o.assert_stdout_has("/init");
    o.assert_stdout_has("/bin/echo");
    o.assert_stdout_has("libc.so.6");
    o.assert_stdout_has("hello.efi");
    // Only the three outputs, no temporary files.
    assert_eq!(dir_contents(out.path()).len(), 3);
    // The table's sizes are the real ones: each output's file, the kernel
    // input (the vmlinuz output is that image) and the uncompressed
    // initramfs.
    for f in ["hello.vmlinuz", "hello.initrd", "hello.efi"] {
        let path = out.path().join(f);
        let real = std::fs::metadata(&path).unwrap().len();
        assert_size_matches(&table_size(&o.stdout, &path.display().to_string()), real);
    }
    let vmlinuz = std::fs::metadata(out.path().join("hello.vmlinuz"))
        .unwrap()
        .len();
    assert_size_matches(&table_size(&o.stdout, "kernel"), vmlinuz);
    let raw = unzstd(&out.path().join("hello.initrd")).len() as u64;
    assert_size_matches(&table_size(&o.stdout, "initramfs"), raw);
}

#[test]
fn two_builds_are_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    build(&example("jq"), a.path()).assert_ok();
    build(&example("jq"), b.path()).assert_ok();
    assert_eq!(dir_contents(a.path()), dir_contents(b.path()));
}

#[test]
fn uki_layout_is_accepted_by_objdump_and_sbverify() {
    let out = tempfile::tempdir().unwrap();
    build(&example("hello"), out.path()).assert_ok();
    let efi = out.path().join("hello.efi");
    let o = Command::new("objdump")
        .arg("-h")
        .arg(&efi)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for s in [".osrel", ".cmdline", ".linux", ".initrd"] {
        assert!(text.contains(s), "objdump -h lacks {s}:\n{text}");
    }
    // The .initrd section is exactly the initrd output.
    let initrd_len = std::fs::metadata(out.path().join("hello.initrd"))
        .unwrap()
        .len();
    let line = text.lines().find(|l| l.contains(".initrd")).unwrap();
    let size = u64::from_str_radix(line.split_whitespace().nth(2).unwrap(), 16).unwrap();
    assert_eq!(size, initrd_len, "{line}");
    // sbverify parses it (and says there is no signature yet).
    let o = Command::new("sbverify")
        .arg("--list")
        .arg(&efi)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(all.contains("No signature table present"), "{all}");
}

/// (name, address relative to the image base, size, file offset) of each
/// section in `cairn inspect`'s table of a UKI ("section vaddr size file
/// offset", sizes in decimal bytes).
fn inspect_sections(text: &str) -> Vec<(String, u64, u64, u64)> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let v: Vec<_> = text
        .lines()
        .skip_while(|l| !l.starts_with("section "))
        .skip(1)
        .map_while(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 4 && w[0].starts_with('.')).then(|| {
                (
                    w[0].to_string(),
                    hex(w[1]),
                    w[2].parse().unwrap(),
                    hex(w[3]),
                )
            })
        })
        .collect();
    assert!(!v.is_empty(), "no section table in:\n{text}");
    v
}

/// The same from `objdump -h` (hex sizes; VMAs include the ImageBase that
/// `objdump -p` prints). For a PE image objdump's size is the VirtualSize
/// unless the section's raw data is shorter, which no UKI section is.
fn objdump_sections(file: &Path) -> Vec<(String, u64, u64, u64)> {
    let run = |flag: &str| {
        let o = Command::new("objdump")
            .arg(flag)
            .arg(file)
            .output()
            .unwrap();
        assert!(o.status.success(), "objdump {flag} failed");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    let headers = run("-p");
    let base = headers
        .lines()
        .find_map(|l| l.strip_prefix("ImageBase"))
        .map(|v| hex(v.trim()))
        .unwrap_or_else(|| panic!("no ImageBase in objdump -p:\n{headers}"));
    // "Idx Name Size VMA LMA File-off Algn" rows start with the index.
    run("-h")
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 7 && w[0].parse::<u32>().is_ok())
                .then(|| (w[1].to_string(), hex(w[3]) - base, hex(w[2]), hex(w[5])))
        })
        .collect()
}

#[test]
fn inspect_lists_uki_sections_and_initramfs_entries() {
    let out = tempfile::tempdir().unwrap();
    build(&example("hello"), out.path()).assert_ok();
    let efi = out.path().join("hello.efi");
    let o = inspect(&efi);
    o.assert_ok();
    for s in [
        ".osrel",
        ".cmdline",
        ".linux",
        ".initrd",
        "console=ttyS0",
        "IMAGE_ID=hello",
    ] {
        o.assert_stdout_has(s);
    }
    // Its section table is what objdump reads from the same file: names in
    // order, sizes, addresses and file offsets.
    assert_eq!(inspect_sections(&o.stdout), objdump_sections(&efi));
    let o = inspect(&out.path().join("hello.initrd"));
    o.assert_ok();
    o.assert_stdout_has("crw-------    0    0        5,1 /dev/console");
    o.assert_stdout_has("crw-r--r--    0    0       1,11 /dev/kmsg");
    o.assert_stdout_has("-rwxr-xr-x    0    0");
    o.assert_stdout_has("/init\n");
    // Root only: it holds the shell's password hash and services' env.
    let line = o
        .stdout
        .lines()
        .find(|l| l.ends_with(" /etc/cairn/system.json"))
        .expect("system.json listed");
    assert!(line.starts_with("-rw-------    0    0"), "{line}");
    o.assert_stdout_has("/usr/bin/cairnctl -> /init");
}

#[test]
fn initramfs_is_read_by_gnu_cpio() {
    let out = tempfile::tempdir().unwrap();
    build(&example("jq"), out.path()).assert_ok();
    let raw = unzstd(&out.path().join("jq.initrd"));
    let mut cpio = Command::new("cpio")
        .args(["-itv", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    cpio.stdin.take().unwrap().write_all(&raw).unwrap();
    let o = cpio.wait_with_output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "usr/bin/jq",
        "srv/inventory.json",
        "virtio_net.ko",
        "modules.dep",
        "libjq.so",
    ] {
        assert!(text.contains(needle), "cpio -t lacks {needle}:\n{text}");
    }
    // Fixed owners: every entry is root root.
    assert!(
        text.lines()
            .all(|l| l.contains(" root     root ") || l.contains(" 0        0 ")),
        "{text}"
    );
}

/// `zstd -dc FILE`.
fn unzstd(file: &Path) -> Vec<u8> {
    let raw = Command::new("zstd").arg("-dc").arg(file).output().unwrap();
    assert!(
        raw.status.success(),
        "zstd -dc {}: {}",
        file.display(),
        String::from_utf8_lossy(&raw.stderr)
    );
    raw.stdout
}

/// (name, mtime) of every entry of a newc archive, read from the headers
/// themselves: "070701", then 13 fields of 8 hex digits (ino, mode, uid,
/// gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
/// namesize, check), the name, padding to 4, the data, padding to 4.
fn newc_mtimes(raw: &[u8]) -> Vec<(String, u32)> {
    let align4 = |n: usize| n.div_ceil(4) * 4;
    let mut entries = Vec::new();
    let mut pos = 0;
    loop {
        assert_eq!(&raw[pos..pos + 6], b"070701", "no newc header at {pos}");
        let field = |i: usize| {
            let hex = std::str::from_utf8(&raw[pos + 6 + i * 8..pos + 14 + i * 8]).unwrap();
            u32::from_str_radix(hex, 16).unwrap() as usize
        };
        let (mtime, filesize, namesize) = (field(5), field(6), field(11));
        let name = String::from_utf8_lossy(&raw[pos + 110..pos + 110 + namesize - 1]).into_owned();
        if name == "TRAILER!!!" {
            return entries;
        }
        entries.push((name, mtime as u32));
        pos = align4(align4(pos + 110 + namesize) + filesize);
    }
}

/// Every initramfs entry carries SOURCE_DATE_EPOCH as its mtime, or 0
/// when it is unset.
#[test]
fn initramfs_mtimes_are_source_date_epoch_or_zero() {
    for (epoch, expect) in [(Some("1234567890"), 1_234_567_890), (None, 0)] {
        let out = tempfile::tempdir().unwrap();
        let mut c = cairn();
        c.arg("build")
            .arg(example("hello"))
            .arg("-o")
            .arg(out.path());
        match epoch {
            Some(e) => c.env("SOURCE_DATE_EPOCH", e),
            None => c.env_remove("SOURCE_DATE_EPOCH"),
        };
        run_with_timeout(c, std::time::Duration::from_secs(300)).assert_ok();
        let entries = newc_mtimes(&unzstd(&out.path().join("hello.initrd")));
        for name in ["init", "dev/console", "etc/cairn/system.json", "bin/echo"] {
            assert!(
                entries.iter().any(|(n, _)| n == name),
                "{name} not in the archive: {entries:?}"
            );
        }
        let other: Vec<_> = entries.iter().filter(|(_, m)| *m != expect).collect();
        assert!(
            other.is_empty(),
            "SOURCE_DATE_EPOCH={epoch:?}: entries whose mtime is not {expect}: {other:?}"
        );
    }
}

const BASE: &str = "name = \"hello\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n";

#[test]
fn missing_file_is_refused_with_its_place() {
    let text = format!("{BASE}[[file]]\nsrc = \"nope.txt\"\ndst = \"/x\"\n");
    assert_refused_cleanly(&text, &["bad.toml:5:7", "nope.txt"]);
}

#[test]
fn unknown_module_is_refused_with_its_place() {
    let text = "name = \"hello\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\nmodules = [\"virtio_nett\"]\n";
    assert_refused_cleanly(text, &["bad.toml:4:12", "virtio_nett", "virtio_net"]);
}

#[test]
fn service_program_missing_from_image_is_refused() {
    let text = format!("{BASE}[[service]]\nname = \"x\"\nexec = [\"/usr/bin/jq\"]\n");
    assert_refused_cleanly(&text, &["bad.toml:6:8", "/usr/bin/jq", "not in the image"]);
}

#[test]
fn unknown_key_is_refused() {
    let text = format!("{BASE}colour = \"blue\"\n");
    assert_refused_cleanly(&text, &["bad.toml:", "colour"]);
}

#[test]
fn shell_program_missing_from_image_is_refused() {
    let hash =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$Wz0J0F2b6b2l0ufTbrG9bUL8nV3iw+2g2yPNH2cUk1A";
    let text =
        format!("{BASE}[shell]\nexec = [\"/bin/busybox\", \"sh\"]\npassword_hash = '{hash}'\n");
    assert_refused_cleanly(
        &text,
        &[
            "bad.toml:5:8",
            "[shell] runs /bin/busybox",
            "not in the image",
        ],
    );
}

#[test]
fn hash_password_makes_a_phc_string() {
    let mut c = cairn_e2e::cairn();
    c.arg("hash-password");
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let h = String::from_utf8(out.stdout).unwrap();
    assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
}

/// `memory` too small for the initramfs: the build still succeeds (one
/// UKI may boot on larger machines) but warns with the sizes; the same
/// manifest with room to spare builds without the warning.
#[test]
fn initramfs_too_large_for_memory_is_warned() {
    let text = std::fs::read_to_string(example("hello")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (memory, warned) in [("4M", true), ("256M", false)] {
        let m = dir.path().join(format!("hello-{memory}.toml"));
        std::fs::write(&m, format!("memory = \"{memory}\"\n{text}")).unwrap();
        let o = build(&m, &dir.path().join(memory));
        o.assert_ok();
        let said = o
            .stderr
            .contains("cairn: warning: the initramfs unpacks to");
        assert_eq!(said, warned, "memory = {memory}:\n{}", o.stderr);
        if warned {
            assert!(
                o.stderr
                    .contains("more than half of the appliance's 4.00 MiB of RAM (`memory`)"),
                "{}",
                o.stderr
            );
        }
    }
}

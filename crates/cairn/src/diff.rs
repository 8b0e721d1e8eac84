//! `cairn diff OLD NEW`: what changed between two images (UKIs,
//! initramfs files or raw GPT disk images, in any mix), the audit step
//! before an update goes out: a disk's partitions, kernel version,
//! command line, every file added, removed or changed (sizes and
//! SHA-256), services, network and the rest of the runtime config
//! (`/etc/cairn/system.json`), and the Secure Boot signature.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cairn_image::{authenticode, compress, cpio, pe};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::inspect::{mode_string, InspectError};
use crate::report::human;

/// One file of the initramfs, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileInfo {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    /// SHA-256 of a regular file's contents, a symlink's target, or a
    /// device's numbers.
    content: String,
}

/// An image as `diff` sees it.
#[derive(Debug, Default)]
pub struct Image {
    path: PathBuf,
    /// `UKI` or `initramfs`.
    kind: &'static str,
    /// Kernel version and the SHA-256 and size of the kernel image (UKI
    /// only; an initramfs names the version of its modules directory).
    kernel_version: Option<String>,
    kernel: Option<(String, u64)>,
    cmdline: Option<String>,
    osrel: Option<String>,
    files: BTreeMap<String, FileInfo>,
    /// `/etc/cairn/system.json`, if the image has it.
    system: Option<Value>,
    /// One line per signature: signer and whether its digest matches.
    signatures: Option<Vec<String>>,
    /// A disk image's partitions (GPT name, size, offset).
    partitions: Option<Vec<String>>,
}

fn sha256_hex(b: &[u8]) -> String {
    authenticode::hex(&Sha256::digest(b))
}

/// The version string of a bzImage (the setup header's `kernel_version`
/// pointer, at 0x20e, plus 0x200), up to the first space.
pub fn bzimage_version(k: &[u8]) -> Option<String> {
    if k.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*k.get(0x20e)?, *k.get(0x20f)?]) as usize + 0x200;
    let s = k.get(ptr..)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    std::str::from_utf8(&s[..end]).ok().map(str::to_string)
}

/// A raw copy of qcow2 disk `path` in a temporary directory (removed
/// when the returned guard is dropped), made by `qemu-img convert`.
fn qcow2_to_raw(path: &Path) -> Result<(tempfile::TempDir, PathBuf), InspectError> {
    let fail = |detail: String| InspectError::Qcow2 {
        path: path.to_path_buf(),
        detail,
    };
    let dir = tempfile::tempdir().map_err(|e| fail(format!("temporary directory: {e}")))?;
    let raw = dir.path().join("disk.raw");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(path)
        .arg(&raw)
        .output()
        .map_err(|e| fail(format!("cannot run qemu-img (package qemu-utils): {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "qemu-img convert failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((dir, raw))
}

/// Whether `path` holds an ISO 9660 filesystem (`CD001` in the primary
/// volume descriptor at 32 KiB).
fn is_iso9660(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut id = [0u8; 5];
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(0x8001))?;
            f.read_exact(&mut id)
        })
        .is_ok()
        && &id == b"CD001"
}

/// Reads `path`: a UKI (PE), a disk image or ISO (the UKI in its EFI
/// partition) or a (compressed) initramfs.
pub fn load(path: &Path) -> Result<Image, InspectError> {
    let read_err = |source| InspectError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut img = Image {
        path: path.to_path_buf(),
        ..Image::default()
    };
    // A GPT disk image ("EFI PART" in its second sector): its partitions,
    // and the UKI in its ESP, compared as a UKI.
    let mut head = [0u8; 520];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(read_err)?;
    // A cairn ISO is a hybrid: its GPT (after the ISO 9660 system area)
    // holds the EFI partition with the UKI, read like a disk image's.
    let iso = is_iso9660(path);
    // A qcow2 disk (`[disk] format = "qcow2"`): converted to a raw copy
    // with qemu-img (qemu-utils, which the builder uses to write it) and
    // read like a raw one.
    let qcow2 = n >= 4 && head.starts_with(b"QFI\xfb");
    let raw_copy = if qcow2 {
        Some(qcow2_to_raw(path)?)
    } else {
        None
    };
    let raw_path = raw_copy.as_ref().map_or(path, |(_, p)| p.as_path());
    let gpt = qcow2 || (n == head.len() && &head[512..520] == b"EFI PART");
    let bytes = if gpt {
        let (parts, uki) =
            cairn_image::disk::read_image(raw_path).map_err(|source| InspectError::Disk {
                path: path.to_path_buf(),
                source,
            })?;
        img.partitions = Some(
            parts
                .iter()
                .map(|p| {
                    format!(
                        "{} ({} at {})",
                        if p.label.is_empty() {
                            "(no name)"
                        } else {
                            &p.label
                        },
                        human(p.len),
                        human(p.offset)
                    )
                })
                .collect(),
        );
        uki.ok_or_else(|| InspectError::NoUki {
            path: path.to_path_buf(),
        })?
    } else {
        std::fs::read(path).map_err(read_err)?
    };
    let initrd: Vec<u8>;
    if bytes.starts_with(b"MZ") {
        img.kind = match (&img.partitions, iso) {
            (Some(_), _) if qcow2 => "qcow2 disk image, its UKI",
            (Some(_), true) => "ISO image, its UKI",
            (Some(_), false) => "disk image, its UKI",
            (None, _) => "UKI",
        };
        pe::parse(&bytes).map_err(|source| InspectError::Pe {
            path: path.to_path_buf(),
            source,
        })?;
        let text = |name| {
            pe::section_data(&bytes, name).map(|d| {
                String::from_utf8_lossy(d)
                    .trim_end_matches('\0')
                    .trim()
                    .to_string()
            })
        };
        img.cmdline = text(".cmdline");
        img.osrel = text(".osrel");
        if let Some(k) = pe::section_data(&bytes, ".linux") {
            img.kernel = Some((sha256_hex(k), k.len() as u64));
            img.kernel_version = text(".uname").or_else(|| bzimage_version(k));
        }
        initrd = pe::section_data(&bytes, ".initrd")
            .unwrap_or_default()
            .to_vec();
        let err = |source| InspectError::Signature {
            path: path.to_path_buf(),
            source,
        };
        let mut sigs = Vec::new();
        for s in authenticode::signatures(&bytes).map_err(err)? {
            let matches = match s.algorithm {
                Some(a) => match authenticode::digest(&bytes, a).map_err(err)? {
                    Some(d) if d == s.signed_digest => "digest matches",
                    Some(_) => "digest does NOT match (changed after signing)",
                    None => "digest not checked",
                },
                None => "digest not checked (unsupported algorithm)",
            };
            sigs.push(format!(
                "signed by {} ({matches})",
                s.signer_subject.as_deref().unwrap_or("(no certificate)")
            ));
        }
        img.signatures = Some(sigs);
    } else {
        img.kind = "initramfs";
        initrd = bytes;
    }
    if !initrd.is_empty() {
        let (_, raw) =
            compress::decompress_auto(&initrd).map_err(|source| InspectError::Compress {
                path: path.to_path_buf(),
                source,
            })?;
        let entries = cpio::read(&raw).map_err(|source| InspectError::Cpio {
            path: path.to_path_buf(),
            source,
        })?;
        for e in entries {
            let p = format!("/{}", e.path.trim_start_matches('/'));
            let content = if e.is_symlink() {
                format!("-> {}", String::from_utf8_lossy(&e.data))
            } else if e.is_file() {
                sha256_hex(&e.data)
            } else if e.is_dir() {
                "-".to_string()
            } else {
                format!("dev {},{}", e.rdev_major, e.rdev_minor)
            };
            if p == cairn_manifest::SYSTEM_CONFIG_PATH {
                img.system = serde_json::from_slice(&e.data).ok();
            }
            if img.kernel_version.is_none() {
                if let Some(v) = p.strip_prefix("/lib/modules/") {
                    if !v.contains('/') && e.is_dir() {
                        img.kernel_version = Some(format!("{v} (its modules directory)"));
                    }
                }
            }
            img.files.insert(
                p,
                FileInfo {
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    size: e.data.len() as u64,
                    content,
                },
            );
        }
    }
    Ok(img)
}

/// The differences, as text, and whether there are any.
pub struct Diff {
    pub text: String,
    pub changed: bool,
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "(none)".into())
}

/// The first 16 hex digits of a SHA-256; anything else (a symlink's
/// target, a device's numbers) whole.
fn short(content: &str) -> &str {
    if content.len() == 64 && content.bytes().all(|b| b.is_ascii_hexdigit()) {
        &content[..16]
    } else {
        content
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `key: old -> new` for each top-level key of two JSON objects that
/// differs (`(unset)` for a missing one).
fn object_changes(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    let unset = Value::String("(unset)".into());
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| match (o.get(k), n.get(k)) {
            // Long lists (modules): what came and went; short ones
            // (a command line) whole.
            (Some(Value::Array(a)), Some(Value::Array(b))) if a.len().max(b.len()) > 4 => {
                format!("{k}: {}", list_changes(a, b))
            }
            (a, b) => format!(
                "{k}: {} -> {}",
                compact(a.unwrap_or(&unset)),
                compact(b.unwrap_or(&unset))
            ),
        })
        .collect()
}

/// Two lists: the items added and removed, or `reordered`.
fn list_changes(a: &[Value], b: &[Value]) -> String {
    let removed: Vec<String> = a.iter().filter(|x| !b.contains(x)).map(compact).collect();
    let added: Vec<String> = b.iter().filter(|x| !a.contains(x)).map(compact).collect();
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("+ {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("- {}", removed.join(", ")));
    }
    if parts.is_empty() {
        parts.push(format!(
            "reordered: {} -> {}",
            compact(&Value::from(a.to_vec())),
            compact(&Value::from(b.to_vec()))
        ));
    }
    parts.join("; ")
}

/// Services by name from system.json.
fn services(system: &Option<Value>) -> BTreeMap<String, Value> {
    system
        .as_ref()
        .and_then(|s| s.get("service"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| {
                    let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
                    (name.to_string(), s.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn file_line(p: &str, f: &FileInfo) -> String {
    format!(
        "{} {:>10}  {}  {}",
        mode_string(f.mode),
        human(f.size),
        short(&f.content),
        p
    )
}

/// Compares two loaded images.
pub fn diff(old: &Image, new: &Image) -> Diff {
    let mut out = String::new();
    let mut changed = false;
    let _ = writeln!(out, "--- {} ({})", old.path.display(), old.kind);
    let _ = writeln!(out, "+++ {} ({})", new.path.display(), new.kind);

    // Partitions (disk images).
    if old.partitions.is_some() || new.partitions.is_some() {
        let list = |i: &Image| {
            i.partitions
                .as_ref()
                .map_or_else(|| "(not a disk image)".to_string(), |p| p.join(", "))
        };
        if old.partitions != new.partitions {
            changed = true;
            let _ = writeln!(out, "partitions: changed");
            let _ = writeln!(out, "  - {}", list(old));
            let _ = writeln!(out, "  + {}", list(new));
        } else {
            let _ = writeln!(out, "partitions: {} (unchanged)", list(new));
        }
    }

    // Kernel.
    let kv = |i: &Image| opt(&i.kernel_version);
    if old.kernel_version != new.kernel_version || old.kernel != new.kernel {
        changed = true;
        let _ = writeln!(out, "kernel: {} -> {}", kv(old), kv(new));
        if let (Some((oh, os)), Some((nh, ns))) = (&old.kernel, &new.kernel) {
            if oh != nh {
                let _ = writeln!(
                    out,
                    "  image {} {} -> {} {}",
                    human(*os),
                    short(oh),
                    human(*ns),
                    short(nh)
                );
            }
        }
    } else {
        let _ = writeln!(out, "kernel: {} (unchanged)", kv(new));
    }

    // Command line.
    if old.cmdline != new.cmdline {
        changed = true;
        let _ = writeln!(out, "cmdline: changed");
        let _ = writeln!(out, "  - {}", opt(&old.cmdline));
        let _ = writeln!(out, "  + {}", opt(&new.cmdline));
    } else {
        let _ = writeln!(out, "cmdline: {} (unchanged)", opt(&new.cmdline));
    }
    if old.osrel != new.osrel {
        changed = true;
        let _ = writeln!(out, "os-release: changed");
        let (o, n) = (opt(&old.osrel), opt(&new.osrel));
        for l in o.lines().filter(|l| !n.lines().any(|m| m == *l)) {
            let _ = writeln!(out, "  - {l}");
        }
        for l in n.lines().filter(|l| !o.lines().any(|m| m == *l)) {
            let _ = writeln!(out, "  + {l}");
        }
    }

    // Files.
    let mut lines = Vec::new();
    let (mut added, mut removed, mut modified) = (0, 0, 0);
    for (p, f) in &old.files {
        match new.files.get(p) {
            None => {
                removed += 1;
                lines.push(format!("  - {}", file_line(p, f)));
            }
            Some(g) if g != f => {
                modified += 1;
                let mut what = Vec::new();
                if f.content != g.content {
                    what.push(format!(
                        "{} -> {}  {} -> {}",
                        human(f.size),
                        human(g.size),
                        short(&f.content),
                        short(&g.content)
                    ));
                }
                if f.mode != g.mode {
                    what.push(format!(
                        "mode {} -> {}",
                        mode_string(f.mode),
                        mode_string(g.mode)
                    ));
                }
                if (f.uid, f.gid) != (g.uid, g.gid) {
                    what.push(format!("owner {}:{} -> {}:{}", f.uid, f.gid, g.uid, g.gid));
                }
                lines.push(format!("  ~ {p}  {}", what.join("; ")));
            }
            Some(_) => {}
        }
    }
    for (p, f) in &new.files {
        if !old.files.contains_key(p) {
            added += 1;
            lines.push(format!("  + {}", file_line(p, f)));
        }
    }
    // Sorted by path, whatever the change.
    lines.sort_by(|a, b| path_of(a).cmp(path_of(b)));
    let _ = writeln!(
        out,
        "files: {added} added, {removed} removed, {modified} changed ({} -> {} entries)",
        old.files.len(),
        new.files.len()
    );
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    changed |= !lines.is_empty();

    // Services.
    let (os, ns) = (services(&old.system), services(&new.system));
    let mut svc = Vec::new();
    for (name, s) in &os {
        match ns.get(name) {
            None => svc.push(format!("  - {name}")),
            Some(t) if t != s => {
                svc.push(format!("  ~ {name}"));
                for c in object_changes(s, t) {
                    svc.push(format!("      {c}"));
                }
            }
            Some(_) => {}
        }
    }
    for (name, s) in &ns {
        if !os.contains_key(name) {
            let exec = s.get("exec").map(compact).unwrap_or_default();
            svc.push(format!("  + {name} {exec}"));
        }
    }
    if svc.is_empty() {
        let _ = writeln!(out, "services: {} (unchanged)", ns.len());
    } else {
        changed = true;
        let _ = writeln!(out, "services: {} -> {}", os.len(), ns.len());
        for l in svc {
            let _ = writeln!(out, "{l}");
        }
    }

    // Network and the rest of system.json.
    let null = Value::Null;
    let get = |i: &Image, k: &str| i.system.as_ref().and_then(|s| s.get(k)).cloned();
    // No `net` in system.json means the defaults.
    let default_net = serde_json::to_value(cairn_manifest::NetConfig::default()).unwrap_or(null);
    let (on, nn) = (
        get(old, "net").unwrap_or(default_net.clone()),
        get(new, "net").unwrap_or(default_net),
    );
    if on != nn {
        changed = true;
        let _ = writeln!(out, "network: changed");
        for c in object_changes(&on, &nn) {
            let _ = writeln!(out, "  {c}");
        }
    } else {
        let _ = writeln!(out, "network: unchanged");
    }
    let strip = |i: &Image| {
        let mut v = i.system.clone().unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("service");
            o.remove("net");
        }
        v
    };
    let (oc, nc) = (strip(old), strip(new));
    if oc != nc {
        changed = true;
        let _ = writeln!(out, "system config: changed");
        for c in object_changes(&oc, &nc) {
            let _ = writeln!(out, "  {c}");
        }
    }

    // Signature.
    let sig = |i: &Image| match &i.signatures {
        None => "(not a UKI)".to_string(),
        Some(s) if s.is_empty() => "unsigned".to_string(),
        Some(s) => s.join("; "),
    };
    let (osig, nsig) = (sig(old), sig(new));
    if osig != nsig {
        changed = true;
        let _ = writeln!(out, "signature: {osig} -> {nsig}");
    } else {
        let _ = writeln!(out, "signature: {nsig}");
    }
    if !changed {
        let _ = writeln!(out, "no differences");
    }
    Diff { text: out, changed }
}

/// The path at the end of a file line (`  + MODE SIZE HASH PATH` or
/// `  ~ PATH  ...`).
fn path_of(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("  ~ ") {
        rest.split("  ").next().unwrap_or(rest)
    } else {
        line.rsplit(' ').next().unwrap_or(line)
    }
}

/// Loads and compares `old` and `new`.
pub fn diff_files(old: &Path, new: &Path) -> Result<Diff, InspectError> {
    Ok(diff(&load(old)?, &load(new)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])], system: &str) -> Vec<u8> {
        let mut a = cpio::Archive::default();
        for (p, d) in files {
            a.add_file(p, 0o755, d.to_vec()).unwrap();
        }
        a.add_file(cairn_manifest::SYSTEM_CONFIG_PATH, 0o644, system.into())
            .unwrap();
        a.to_bytes(0)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn initramfs_files_services_and_network() {
        let dir = tempfile::tempdir().unwrap();
        let old = archive(
            &[("/bin/a", b"aaa"), ("/bin/same", b"s"), ("/bin/gone", b"g")],
            r#"{"name":"x","service":[{"name":"web","exec":["/bin/a"],"restart":"never"},{"name":"old","exec":["/bin/gone"]}],"net":{"online_timeout":30}}"#,
        );
        let new = archive(
            &[("/bin/a", b"aaaa"), ("/bin/same", b"s"), ("/bin/new", b"n")],
            r#"{"name":"x","service":[{"name":"web","exec":["/bin/a"],"restart":"always"},{"name":"fresh","exec":["/bin/new"]}],"net":{"online_timeout":10,"ntp":["192.0.2.1"]}}"#,
        );
        let o = write(dir.path(), "old.initrd", &old);
        let n = write(dir.path(), "new.initrd", &new);
        let d = diff_files(&o, &n).unwrap();
        let t = &d.text;
        assert!(d.changed);
        assert!(t.contains("files: 1 added, 1 removed, 2 changed"), "{t}");
        assert!(t.contains("  + -rwxr-xr-x        1 B  "), "{t}");
        assert!(t.contains("/bin/new"), "{t}");
        assert!(t.contains("  - ") && t.contains("/bin/gone"), "{t}");
        let a_old = &sha256_hex(b"aaa")[..16];
        let a_new = &sha256_hex(b"aaaa")[..16];
        assert!(
            t.contains(&format!("  ~ /bin/a  3 B -> 4 B  {a_old} -> {a_new}")),
            "{t}"
        );
        assert!(!t.contains("/bin/same"), "{t}");
        assert!(t.contains("services: 2 -> 2"), "{t}");
        assert!(t.contains("  - old\n"), "{t}");
        assert!(t.contains("  + fresh [\"/bin/new\"]"), "{t}");
        assert!(
            t.contains("  ~ web\n      restart: \"never\" -> \"always\""),
            "{t}"
        );
        assert!(t.contains("network: changed"), "{t}");
        assert!(t.contains("  ntp: \"(unset)\" -> [\"192.0.2.1\"]"), "{t}");
        assert!(t.contains("  ~ /bin/a") && !t.contains("exec: "), "{t}");
        assert!(t.contains("  online_timeout: 30 -> 10"), "{t}");
        assert!(t.contains("signature: (not a UKI)"), "{t}");
        // An image against itself: nothing.
        let d = diff_files(&o, &o).unwrap();
        assert!(!d.changed, "{}", d.text);
        assert!(d.text.contains("no differences"));
        assert!(d.text.contains("services: 2 (unchanged)"));
    }

    #[test]
    fn compressed_initramfs_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let raw = archive(&[("/bin/a", b"a")], "{}");
        let z = compress::compress(&raw, cairn_manifest::Compression::Zstd).unwrap();
        let o = write(dir.path(), "a.initrd", &raw);
        let n = write(dir.path(), "b.initrd", &z);
        let d = diff_files(&o, &n).unwrap();
        assert!(!d.changed, "{}", d.text);
    }

    #[test]
    fn bzimage_version_from_the_setup_header() {
        let mut k = vec![0u8; 0x400];
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        k[0x300..0x316].copy_from_slice(b"6.1.0-57-cloud-amd64 (");
        assert_eq!(bzimage_version(&k).as_deref(), Some("6.1.0-57-cloud-amd64"));
        assert_eq!(bzimage_version(&[0u8; 16]), None);
    }
}

//! Looking inside disk images with the host's tools: sfdisk for the
//! partition table, dd to cut partitions out, e2fsck / fsck.vfat to check
//! them, debugfs to read and write files in ext4 without mounting.

use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// GPT partitions of `img` as (start byte, size bytes, name), via sfdisk.
pub fn partitions(img: &Path) -> Vec<(u64, u64, String)> {
    let out = Command::new("sfdisk").arg("-J").arg(img).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut v = Vec::new();
    for chunk in text.split("\"start\":").skip(1) {
        let num = |key: &str, s: &str| -> u64 {
            let s = if key.is_empty() {
                s
            } else {
                s.split(key).nth(1).unwrap()
            };
            s.trim_start_matches([' ', ':'])
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        };
        let start = num("", chunk.trim_start());
        let size = num("\"size\"", chunk);
        let name = chunk
            .split("\"name\":")
            .nth(1)
            .and_then(|s| s.split('"').nth(1))
            .unwrap_or("")
            .to_string();
        v.push((start * 512, size * 512, name));
    }
    v
}

/// Copies `len` bytes at `start` of `img` (whole MiB) to the file `to`.
pub fn extract(img: &Path, start: u64, len: u64, to: &Path) {
    let st = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=1M", "status=none"])
        .arg(format!("skip={}", start / MIB))
        .arg(format!("count={}", len / MIB))
        .status()
        .unwrap();
    assert!(st.success());
}

/// Writes the file `from` back into `img` at `start`.
pub fn put_back(img: &Path, start: u64, from: &Path) {
    let st = Command::new("dd")
        .arg(format!("if={}", from.display()))
        .arg(format!("of={}", img.display()))
        .args(["bs=1M", "status=none", "conv=notrunc"])
        .arg(format!("seek={}", start / MIB))
        .status()
        .unwrap();
    assert!(st.success());
}

/// Copies the partition named `label` of `img` into `dir`; returns the
/// copy's path and the partition's start.
pub fn copy_partition(img: &Path, label: &str, dir: &Path) -> (PathBuf, u64) {
    let (s, l, _) = partitions(img)
        .into_iter()
        .find(|p| p.2 == label)
        .unwrap_or_else(|| panic!("no partition {label} in {}", img.display()));
    let part = dir.join(label);
    extract(img, s, l, &part);
    (part, s)
}

/// Runs `cmd args... part`, panicking with its output unless it exits 0.
pub fn check(cmd: &str, args: &[&str], part: &Path) {
    let out = Command::new(cmd).args(args).arg(part).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// After a power cut: lets `e2fsck -fp` (preen, what a boot-time fsck
/// runs) replay the journal of the ext4 image `part` (a copy: it is
/// changed). Preen mode only makes the fixes that are expected after a
/// crash (journal replay, orphaned inodes, the superblock's free counts,
/// which ext4 does not keep current) and stops with "UNEXPECTED
/// INCONSISTENCY" at anything else. Panics unless it succeeded and a second,
/// read-only `e2fsck -fn` then finds the filesystem clean. Returns what
/// the first e2fsck printed.
pub fn replay_and_check_ext4(part: &Path) -> String {
    let out = Command::new("e2fsck")
        .arg("-fp")
        .arg(part)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 0: clean; 1: fixed what preen may fix; 4 and up: needs a human.
    assert!(
        matches!(out.status.code(), Some(0 | 1)) && !text.contains("UNEXPECTED INCONSISTENCY"),
        "e2fsck -fp {}: {:?}\n{text}",
        part.display(),
        out.status
    );
    check("e2fsck", &["-fn"], part);
    text
}

/// A file of the ext4 image `part`, read with debugfs (`None` if absent).
pub fn debugfs_read(part: &Path, file: &str) -> Option<Vec<u8>> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("stat {file}")])
        .arg(part)
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&out.stdout).contains("Inode:") {
        return None;
    }
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {file}")])
        .arg(part)
        .output()
        .unwrap();
    Some(out.stdout)
}

/// A file of the ext4 partition `label` of `img`, as text ("" if absent).
pub fn debugfs_cat(img: &Path, label: &str, file: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let (part, _) = copy_partition(img, label, tmp.path());
    String::from_utf8_lossy(&debugfs_read(&part, file).unwrap_or_default()).into_owned()
}

/// Replaces `file` in the (cleanly unmounted) ext4 partition `label` of
/// `img` with `content`.
pub fn debugfs_write(img: &Path, label: &str, file: &str, content: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (part, s) = copy_partition(img, label, tmp.path());
    let local = tmp.path().join("content");
    std::fs::write(&local, content).unwrap();
    for req in [
        format!("rm {file}"),
        format!("write {} {file}", local.display()),
    ] {
        Command::new("debugfs")
            .args(["-w", "-R", &req])
            .arg(&part)
            .output()
            .unwrap();
    }
    put_back(img, s, &part);
}

//! erofs images of container root filesystems (`storage = "erofs"`): the
//! image's tree is written to a scratch directory, with its owners, modes,
//! hard links and device nodes, and packed by `mkfs.erofs` (erofs-utils)
//! into a file the disk writer copies into the image's partition.
//!
//! Reproducible: every inode gets one time stamp (`-T`, SOURCE_DATE_EPOCH),
//! the UUID is derived from the appliance and partition names (`-U`),
//! extended attributes of the scratch directory are left out (`-x-1`), and
//! mkfs.erofs sorts each directory itself. Uncompressed: the tiny kernel
//! then needs no decompressor, and reads are plain block reads.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::oci::{NodeKind, Tree};

/// erofs' block size: the image is a whole number of them.
pub const BLOCK: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    #[error("cannot write the image's tree to {path}: {source}")]
    Tree { path: PathBuf, source: io::Error },
    #[error(
        "`{path}` in the image is {what}; cairn build must run as root to put it on an erofs \
         partition (an initramfs keeps it without root: storage = \"initramfs\")"
    )]
    NeedsRoot { path: String, what: String },
    #[error("cannot run mkfs.erofs (install erofs-utils): {0}")]
    Spawn(io::Error),
    #[error("mkfs.erofs failed ({status}): {stderr}")]
    Mkfs { status: String, stderr: String },
}

/// What only root can write to a directory: another owner than root (a
/// non-root builder uses `--all-root`), a device node.
fn needs_root(tree: &Tree) -> Option<(String, String)> {
    tree.nodes.iter().find_map(|(path, n)| {
        let what = match n.kind {
            NodeKind::Char(..) | NodeKind::Block(..) => "a device node".to_string(),
            _ if n.uid != 0 || n.gid != 0 => format!("owned by {}:{}", n.uid, n.gid),
            _ => return None,
        };
        Some((path.clone(), what))
    })
}

/// Writes `tree` into the empty directory `dir`: parents before children
/// (the tree is sorted), hard links after the files they link to, owners
/// (with `owners`) and then modes, directories' modes last so a read-only
/// directory can still be filled.
pub fn write_tree(tree: &Tree, dir: &Path, owners: bool) -> io::Result<()> {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    let mut links = Vec::new();
    let mut dirs = Vec::new();
    for (path, n) in &tree.nodes {
        let p = dir.join(path);
        if let Some(t) = tree.live_link(n) {
            links.push((p, dir.join(t)));
            continue;
        }
        let dev = |major, minor| rustix::fs::makedev(major, minor);
        match &n.kind {
            NodeKind::Dir => {
                std::fs::create_dir(&p)?;
                dirs.push((p.clone(), n.mode));
            }
            NodeKind::File(data) => std::fs::write(&p, data.as_slice())?,
            NodeKind::Symlink(t) => std::os::unix::fs::symlink(t, &p)?,
            NodeKind::Char(a, b) => {
                mknodat(CWD, &p, FileType::CharacterDevice, Mode::RUSR, dev(*a, *b))?
            }
            NodeKind::Block(a, b) => {
                mknodat(CWD, &p, FileType::BlockDevice, Mode::RUSR, dev(*a, *b))?
            }
            NodeKind::Fifo => mknodat(CWD, &p, FileType::Fifo, Mode::RUSR, 0)?,
        }
        if owners {
            std::os::unix::fs::lchown(&p, Some(n.uid), Some(n.gid))?;
        }
        // After chown, which clears setuid and setgid.
        if !matches!(n.kind, NodeKind::Symlink(_) | NodeKind::Dir) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(n.mode))?;
        }
    }
    for (link, target) in links {
        std::fs::hard_link(target, link)?;
    }
    for (p, mode) in dirs.iter().rev() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    if owners {
        std::os::unix::fs::lchown(dir, Some(0), Some(0))?;
    }
    Ok(())
}

/// Packs `tree` into the erofs image `out` (created or replaced): its
/// UUID `uuid`, every time stamp `mtime`. `scratch` is an empty directory
/// to unpack into (removed by the caller). Returns the image's size.
pub fn build(
    tree: &Tree,
    out: &Path,
    scratch: &Path,
    uuid: &str,
    mtime: u32,
) -> Result<u64, ErofsError> {
    let as_root = rustix::process::geteuid().is_root();
    if !as_root {
        if let Some((path, what)) = needs_root(tree) {
            return Err(ErofsError::NeedsRoot {
                path: format!("/{path}"),
                what,
            });
        }
    }
    write_tree(tree, scratch, as_root).map_err(|source| ErofsError::Tree {
        path: scratch.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new("mkfs.erofs");
    cmd.arg("--quiet")
        .arg("-x-1")
        .arg(format!("-T{mtime}"))
        .arg(format!("-U{uuid}"));
    if !as_root {
        cmd.arg("--all-root");
    }
    cmd.arg(out)
        .arg(scratch)
        .env("SOURCE_DATE_EPOCH", mtime.to_string());
    let o = cmd.output().map_err(ErofsError::Spawn)?;
    if !o.status.success() {
        return Err(ErofsError::Mkfs {
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(|source| ErofsError::Tree {
            path: out.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Node;
    use std::sync::Arc;

    fn node(kind: NodeKind, mode: u32, uid: u32) -> Node {
        Node {
            kind,
            mode,
            uid,
            gid: uid,
            link_to: None,
        }
    }

    fn tree() -> Tree {
        let data = Arc::new(b"#!/bin/sh\necho hi\n".to_vec());
        let mut t = Tree::default();
        t.nodes.insert("bin".into(), node(NodeKind::Dir, 0o755, 0));
        t.nodes.insert(
            "bin/run".into(),
            node(NodeKind::File(data.clone()), 0o4755, 0),
        );
        let mut link = node(NodeKind::File(data), 0o4755, 0);
        link.link_to = Some("bin/run".into());
        t.nodes.insert("bin/again".into(), link);
        t.nodes.insert(
            "bin/sh".into(),
            node(NodeKind::Symlink("run".into()), 0o777, 0),
        );
        t.nodes.insert("ro".into(), node(NodeKind::Dir, 0o555, 0));
        t.nodes.insert(
            "ro/f".into(),
            node(NodeKind::File(Arc::new(b"x".to_vec())), 0o400, 0),
        );
        t
    }

    #[test]
    fn only_root_may_keep_owners_and_devices() {
        let mut t = tree();
        assert_eq!(needs_root(&t), None);
        t.nodes
            .insert("home".into(), node(NodeKind::Dir, 0o755, 1000));
        assert_eq!(
            needs_root(&t),
            Some(("home".into(), "owned by 1000:1000".into()))
        );
        t.nodes.remove("home");
        t.nodes
            .insert("null".into(), node(NodeKind::Char(1, 3), 0o666, 0));
        assert_eq!(
            needs_root(&t),
            Some(("null".into(), "a device node".into()))
        );
    }

    #[test]
    fn the_tree_lands_with_links_modes_and_read_only_dirs() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("t");
        std::fs::create_dir(&root).unwrap();
        write_tree(&tree(), &root, rustix::process::geteuid().is_root()).unwrap();
        let run = std::fs::metadata(root.join("bin/run")).unwrap();
        assert_eq!(run.mode() & 0o7777, 0o4755);
        assert_eq!(run.nlink(), 2);
        assert_eq!(
            run.ino(),
            std::fs::metadata(root.join("bin/again")).unwrap().ino()
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("run")
        );
        let ro = std::fs::metadata(root.join("ro")).unwrap();
        assert_eq!(ro.mode() & 0o777, 0o555);
        assert_eq!(std::fs::read(root.join("ro/f")).unwrap(), b"x");
    }

    /// Two packs of the same tree, unpacked in different orders, give the
    /// same bytes; fsck.erofs accepts them. Needs erofs-utils.
    #[test]
    fn mkfs_erofs_is_reproducible() {
        if Command::new("mkfs.erofs").arg("--help").output().is_err() {
            eprintln!("skipped: mkfs.erofs is not installed (erofs-utils)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mut sizes = Vec::new();
        for (i, extra) in ["a", "z"].iter().enumerate() {
            let mut t = tree();
            // A different scratch path and insertion history each time.
            t.nodes
                .insert(format!("tmp-{extra}"), node(NodeKind::Dir, 0o1777, 0));
            t.nodes.remove(&format!("tmp-{extra}"));
            let scratch = d.path().join(format!("scratch{i}"));
            std::fs::create_dir(&scratch).unwrap();
            let out = d.path().join(format!("{i}.erofs"));
            let n = build(
                &t,
                &out,
                &scratch,
                "01234567-89ab-4def-8123-456789abcdef",
                1,
            )
            .unwrap();
            assert_eq!(n % BLOCK, 0);
            sizes.push(std::fs::read(&out).unwrap());
        }
        assert!(sizes[0] == sizes[1], "two packs differ");
        let o = Command::new("fsck.erofs")
            .arg(d.path().join("0.erofs"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

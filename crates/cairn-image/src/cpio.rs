//! Deterministic cpio "newc" (`070701`) archives: the initramfs format.
//!
//! [`Archive`] collects entries keyed by their normalized path (no leading
//! `/`, no `.` or empty components, never `..`). Adding a path that is
//! already present replaces the earlier entry ("last wins"), except that a
//! directory which has entries below it can only be replaced by another
//! directory. Missing parent directories are created with mode 0755 as
//! entries are added, and an explicit [`Archive::add_dir`] overrides such an
//! automatic parent.
//!
//! [`Archive::to_bytes`] writes the entries sorted by path (so every parent
//! precedes its children), with uid/gid 0, one mtime, inode numbers counted
//! from 1 in that order, `nlink` 1 for non-directories and 2 + subdirectories
//! for directories, and the closing `TRAILER!!!` entry. The same set of
//! entries therefore always gives the same bytes, whatever the insertion order.
//!
//! [`read`] parses newc archives (also `070702`, whose checksum it ignores)
//! for inspection; it never panics on hostile input.

use std::collections::BTreeMap;

/// File type bits of `st_mode`.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
/// Permission bits including setuid/setgid/sticky.
const PERM_MASK: u32 = 0o7777;

const MAGIC_NEWC: &[u8; 6] = b"070701";
const MAGIC_CRC: &[u8; 6] = b"070702";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// Errors from building or parsing a cpio archive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpioError {
    /// A path given to one of the `add_*` methods is not acceptable.
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The new entry clashes with entries already in the archive.
    #[error("cannot add {path:?} to the archive: {reason}")]
    Conflict { path: String, reason: String },
    /// A field of a header is not what newc allows.
    #[error("cpio archive, offset {offset}: {what}")]
    Parse { offset: usize, what: String },
    /// The input ends before the structure starting at `offset` is complete.
    #[error("cpio archive truncated at offset {offset}: expected {what}")]
    Truncated { offset: usize, what: String },
}

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path without a leading `/`.
    pub path: String,
    /// Full `st_mode`, file type included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    /// File content, or the target of a symlink; empty otherwise.
    pub data: Vec<u8>,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// A hard link: the path (normalized) of the regular file this entry
    /// is another name of. Both are written with one inode number and the
    /// link count (each carrying the data; the kernel links the later
    /// names to the first).
    pub link_to: Option<String>,
}

impl Entry {
    fn new(path: String, mode: u32, data: Vec<u8>) -> Self {
        Entry {
            path,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            data,
            rdev_major: 0,
            rdev_minor: 0,
            link_to: None,
        }
    }

    /// An entry of any type (`mode` with its file type bits), owned by
    /// `uid`/`gid`; add it with [`Archive::add_entry`].
    pub fn with_owner(path: &str, mode: u32, uid: u32, gid: u32, data: Vec<u8>) -> Self {
        let mut e = Entry::new(path.to_string(), mode, data);
        e.uid = uid;
        e.gid = gid;
        e
    }

    /// Whether this entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// Whether this entry is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// Whether this entry is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
}

/// An archive under construction. See the module documentation for the rules.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Normalizes an archive path: strips leading `/`, drops empty and `.`
/// components, refuses `..`, NUL and the empty result.
pub fn normalize_path(path: &str) -> Result<String, CpioError> {
    let invalid = |reason| CpioError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("'..' components are not allowed")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(invalid("names no entry (empty or the root itself)"));
    }
    Ok(parts.join("/"))
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory with permission bits `mode` (e.g. `0o755`).
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let path = normalize_path(path)?;
        self.insert(Entry::new(path, S_IFDIR | (mode & PERM_MASK), Vec::new()))
    }

    /// Adds a regular file with permission bits `mode` (e.g. `0o755`).
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), CpioError> {
        let path = normalize_path(path)?;
        self.insert(Entry::new(path, S_IFREG | (mode & PERM_MASK), data))
    }

    /// Adds a symbolic link `path` -> `target` (target stored verbatim).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let path_n = normalize_path(path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::InvalidPath {
                path: path.to_string(),
                reason: "symlink target is empty or contains a NUL byte",
            });
        }
        self.insert(Entry::new(
            path_n,
            S_IFLNK | 0o777,
            target.as_bytes().to_vec(),
        ))
    }

    /// Adds a character device node.
    pub fn add_char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let path = normalize_path(path)?;
        let mut e = Entry::new(path, S_IFCHR | (mode & PERM_MASK), Vec::new());
        e.rdev_major = major;
        e.rdev_minor = minor;
        self.insert(e)
    }

    /// Adds a prepared entry as it is (type, mode, owner, device numbers,
    /// hard link), its path normalized first. A hard link must name a
    /// regular file already in the archive.
    pub fn add_entry(&mut self, mut entry: Entry) -> Result<(), CpioError> {
        entry.path = normalize_path(&entry.path)?;
        if let Some(target) = &entry.link_to {
            let target = normalize_path(target)?;
            if !self.entries.get(&target).is_some_and(|t| t.is_file()) || !entry.is_file() {
                return Err(CpioError::Conflict {
                    path: entry.path.clone(),
                    reason: format!(
                        "hard link to {target:?}, which is not a regular file in the archive"
                    ),
                });
            }
            entry.link_to = Some(target);
        }
        self.insert(entry)
    }

    /// Entry at `path` (normalized first).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        normalize_path(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// Whether an entry of any type exists at `path` (normalized first).
    pub fn contains(&self, path: &str) -> bool {
        normalize_path(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// The entries, sorted by path (mtime 0 here; [`Archive::to_bytes`] sets it).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Number of entries (automatic parents included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn insert(&mut self, entry: Entry) -> Result<(), CpioError> {
        // Every parent must be (or become) a directory.
        let mut parents = Vec::new();
        let mut rest = entry.path.as_str();
        while let Some((parent, _)) = rest.rsplit_once('/') {
            parents.push(parent);
            rest = parent;
        }
        for parent in &parents {
            if let Some(existing) = self.entries.get(*parent) {
                if !existing.is_dir() {
                    return Err(CpioError::Conflict {
                        path: entry.path.clone(),
                        reason: format!(
                            "its parent {parent:?} is already in the archive as a {}",
                            type_name(existing.mode)
                        ),
                    });
                }
            }
        }
        if let Some(existing) = self.entries.get(&entry.path) {
            if existing.is_dir() && !entry.is_dir() && self.has_children(&entry.path) {
                return Err(CpioError::Conflict {
                    path: entry.path.clone(),
                    reason: format!(
                        "a directory with entries below it cannot be replaced by a {}",
                        type_name(entry.mode)
                    ),
                });
            }
        }
        for parent in parents {
            if !self.entries.contains_key(parent) {
                self.entries.insert(
                    parent.to_string(),
                    Entry::new(parent.to_string(), S_IFDIR | 0o755, Vec::new()),
                );
            }
        }
        self.entries.insert(entry.path.clone(), entry);
        Ok(())
    }

    /// Serializes the archive (see the module documentation), every entry
    /// carrying `mtime`.
    pub fn to_bytes(&self, mtime: u32) -> Vec<u8> {
        // nlink of a directory: 2 + number of direct subdirectories.
        let mut subdirs: BTreeMap<&str, u32> = BTreeMap::new();
        for e in self.entries.values().filter(|e| e.is_dir()) {
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                *subdirs.entry(parent).or_default() += 1;
            }
        }
        let size: usize = self
            .entries
            .values()
            .map(|e| HEADER_LEN + e.path.len() + e.data.len() + 8)
            .sum();
        let mut out = Vec::with_capacity(size + 128);
        // Hard links share their target's inode number and link count.
        let index: BTreeMap<&str, u32> = self
            .entries
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), u32::try_from(i + 1).unwrap_or(u32::MAX)))
            .collect();
        let mut links: BTreeMap<&str, u32> = BTreeMap::new();
        for e in self.entries.values() {
            if let Some(t) = e
                .link_to
                .as_deref()
                .filter(|t| self.entries.contains_key(*t))
            {
                *links.entry(t).or_insert(1) += 1;
            }
        }
        for (i, e) in self.entries.values().enumerate() {
            let own = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let target = e
                .link_to
                .as_deref()
                .filter(|t| self.entries.contains_key(*t))
                .unwrap_or(e.path.as_str());
            let (ino, nlink) = if e.is_dir() {
                (own, 2 + subdirs.get(e.path.as_str()).copied().unwrap_or(0))
            } else {
                (index[target], links.get(target).copied().unwrap_or(1))
            };
            write_entry(&mut out, ino, e, nlink, mtime);
        }
        let trailer = Entry::new(TRAILER.to_string(), 0, Vec::new());
        write_entry(&mut out, 0, &trailer, 1, 0);
        out
    }
}

fn type_name(mode: u32) -> &'static str {
    match mode & S_IFMT {
        S_IFDIR => "directory",
        S_IFREG => "regular file",
        S_IFLNK => "symlink",
        S_IFCHR => "character device",
        _ => "special file",
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

fn write_entry(out: &mut Vec<u8>, ino: u32, e: &Entry, nlink: u32, mtime: u32) {
    // Header fields are 32 bits; sizes above that cannot be represented and
    // an initramfs never holds a 4 GiB file, so saturate rather than wrap.
    let filesize = u32::try_from(e.data.len()).unwrap_or(u32::MAX);
    let namesize = u32::try_from(e.path.len() + 1).unwrap_or(u32::MAX);
    let fields = [
        ino,
        e.mode,
        e.uid,
        e.gid,
        nlink,
        mtime,
        filesize,
        0, // devmajor
        0, // devminor
        e.rdev_major,
        e.rdev_minor,
        namesize,
        0, // check
    ];
    out.extend_from_slice(MAGIC_NEWC);
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(e.path.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(&e.data);
    pad4(out);
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

fn hex_field(bytes: &[u8], offset: usize, name: &str) -> Result<u32, CpioError> {
    let s = std::str::from_utf8(bytes).ok();
    s.and_then(|s| {
        if s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u32::from_str_radix(s, 16).ok()
        } else {
            None
        }
    })
    .ok_or_else(|| CpioError::Parse {
        offset,
        what: format!("header field {name} is {bytes:?}, expected 8 hex digits"),
    })
}

/// Parses a newc archive (several concatenated archives, separated by zero
/// padding, are read one after another). The `TRAILER!!!` entries are not
/// returned.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>, CpioError> {
    const NAMES: [&str; 13] = [
        "ino",
        "mode",
        "uid",
        "gid",
        "nlink",
        "mtime",
        "filesize",
        "devmajor",
        "devminor",
        "rdevmajor",
        "rdevminor",
        "namesize",
        "check",
    ];
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let mut saw_trailer = false;
    loop {
        if saw_trailer {
            // After a trailer: zero padding, then optionally another archive.
            while pos < bytes.len() && bytes[pos] == 0 {
                pos += 1;
            }
            if pos >= bytes.len() {
                return Ok(entries);
            }
            saw_trailer = false;
        }
        let magic = &bytes[pos..bytes.len().min(pos + 6)];
        if !MAGIC_NEWC.starts_with(magic) && !MAGIC_CRC.starts_with(magic) {
            return Err(CpioError::Parse {
                offset: pos,
                what: format!(
                    "magic is {:?}, expected \"070701\" (newc)",
                    String::from_utf8_lossy(magic)
                ),
            });
        }
        let header = bytes
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| CpioError::Truncated {
                offset: pos,
                what: format!("a {HEADER_LEN}-byte newc header (no {TRAILER} entry seen)"),
            })?;
        let mut f = [0u32; 13];
        for (i, name) in NAMES.iter().enumerate() {
            let start = 6 + i * 8;
            f[i] = hex_field(&header[start..start + 8], pos + start, name)?;
        }
        let [_ino, mode, uid, gid, _nlink, mtime, filesize, _dmaj, _dmin, rmaj, rmin, namesize, _check] =
            f;
        let name_start = pos + HEADER_LEN;
        let namesize = namesize as usize;
        if namesize == 0 {
            return Err(CpioError::Parse {
                offset: pos + 6 + 11 * 8,
                what: "namesize is 0, expected at least 1 (the name's NUL)".into(),
            });
        }
        let name_bytes = bytes
            .get(name_start..name_start + namesize)
            .ok_or_else(|| CpioError::Truncated {
                offset: name_start,
                what: format!("a {namesize}-byte name"),
            })?;
        let (last, name) = name_bytes.split_last().unwrap_or((&0, &[]));
        if *last != 0 || name.contains(&0) {
            return Err(CpioError::Parse {
                offset: name_start,
                what: "entry name is not a NUL-terminated string of namesize bytes".into(),
            });
        }
        let name = std::str::from_utf8(name).map_err(|_| CpioError::Parse {
            offset: name_start,
            what: "entry name is not valid UTF-8".into(),
        })?;
        let data_start = align4(name_start + namesize);
        let filesize = filesize as usize;
        let data = bytes
            .get(data_start..data_start + filesize)
            .ok_or_else(|| CpioError::Truncated {
                offset: data_start,
                what: format!("{filesize} bytes of data for {name:?}"),
            })?;
        let next = align4(data_start + filesize);
        if name == TRAILER {
            saw_trailer = true;
        } else {
            entries.push(Entry {
                path: name.to_string(),
                mode,
                uid,
                gid,
                mtime,
                data: data.to_vec(),
                rdev_major: rmaj,
                rdev_minor: rmin,
                link_to: None,
            });
        }
        // Padding after the last member may be cut short; that is harmless.
        pos = next.min(bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add_file("/bin/hello", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap();
        a.add_dir("/etc", 0o700).unwrap();
        a.add_file("etc/odd", 0o600, vec![1, 2, 3]).unwrap();
        a.add_symlink("/init", "bin/hello").unwrap();
        a.add_char_dev("/dev/console", 0o600, 5, 1).unwrap();
        a
    }

    #[test]
    fn normalizes_and_rejects_paths() {
        assert_eq!(normalize_path("//a/./b/").unwrap(), "a/b");
        assert!(normalize_path("a/../b").is_err());
        assert!(normalize_path("/").is_err());
        assert!(normalize_path("a\0b").is_err());
        let mut a = Archive::new();
        assert!(matches!(
            a.add_file("../x", 0o644, vec![]),
            Err(CpioError::InvalidPath { .. })
        ));
    }

    #[test]
    fn round_trip() {
        let a = sample();
        let bytes = a.to_bytes(1234);
        let got = read(&bytes).unwrap();
        let paths: Vec<_> = got.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/hello",
                "dev",
                "dev/console",
                "etc",
                "etc/odd",
                "init"
            ]
        );
        let by = |p: &str| got.iter().find(|e| e.path == p).unwrap();
        assert_eq!(by("bin").mode, 0o040_755);
        assert_eq!(by("etc").mode, 0o040_700);
        assert_eq!(by("bin/hello").mode, 0o100_755);
        assert_eq!(by("bin/hello").data, b"#!/bin/sh\necho hi\n");
        assert_eq!(by("etc/odd").data, [1, 2, 3]);
        assert_eq!(by("init").mode, 0o120_777);
        assert_eq!(by("init").data, b"bin/hello");
        let dev = by("dev/console");
        assert_eq!(
            (dev.mode, dev.rdev_major, dev.rdev_minor),
            (0o020_600, 5, 1)
        );
        assert!(got
            .iter()
            .all(|e| e.mtime == 1234 && e.uid == 0 && e.gid == 0));
        // Entries from the builder equal what was read back (bar mtime).
        for (built, read_back) in a.entries().zip(&got) {
            assert_eq!(built.path, read_back.path);
            assert_eq!(built.data, read_back.data);
            assert_eq!(built.mode, read_back.mode);
        }
    }

    #[test]
    fn header_layout_and_padding() {
        let mut a = Archive::new();
        a.add_file("ab", 0o644, vec![7; 5]).unwrap();
        let b = a.to_bytes(0);
        // header 110 + "ab\0" = 113 -> padded to 116; data 5 -> 124.
        assert_eq!(&b[..6], b"070701");
        assert_eq!(&b[6..14], b"00000001"); // ino
        assert_eq!(&b[14..22], b"000081a4"); // mode
        assert_eq!(&b[38..46], b"00000001"); // nlink
        assert_eq!(&b[54..62], b"00000005"); // filesize
        assert_eq!(&b[94..102], b"00000003"); // namesize
        assert_eq!(&b[110..116], b"ab\0\0\0\0");
        assert_eq!(&b[116..121], &[7; 5]);
        assert_eq!(&b[121..124], &[0; 3]);
        assert_eq!(&b[124..130], b"070701");
        assert_eq!(&b[124 + 110..124 + 121], b"TRAILER!!!\0");
        assert_eq!(b.len() % 4, 0);
    }

    #[test]
    fn directory_nlink_counts_subdirectories() {
        let mut a = Archive::new();
        a.add_dir("a/b", 0o755).unwrap();
        a.add_dir("a/c", 0o755).unwrap();
        a.add_file("a/f", 0o644, vec![]).unwrap();
        let b = a.to_bytes(0);
        // First entry is "a": nlink = 2 + 2 subdirectories.
        assert_eq!(&b[38..46], b"00000004");
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut a = Archive::new();
        a.add_file("/usr/lib/x.so", 0o644, vec![1]).unwrap();
        a.add_dir("/usr", 0o755).unwrap();
        a.add_symlink("/lib", "usr/lib").unwrap();
        a.add_file("/init", 0o755, vec![2; 9]).unwrap();
        let mut b = Archive::new();
        b.add_file("/init", 0o755, vec![2; 9]).unwrap();
        b.add_symlink("/lib", "usr/lib").unwrap();
        b.add_file("/usr/lib/x.so", 0o644, vec![1]).unwrap();
        b.add_dir("/usr", 0o755).unwrap();
        assert_eq!(a.to_bytes(42), b.to_bytes(42));
        assert_ne!(a.to_bytes(42), a.to_bytes(43));
    }

    #[test]
    fn last_wins_and_conflicts() {
        let mut a = Archive::new();
        a.add_file("x", 0o644, vec![1]).unwrap();
        a.add_file("x", 0o600, vec![2]).unwrap();
        let e = a.entries().find(|e| e.path == "x").unwrap();
        assert_eq!((e.mode, e.data.clone()), (0o100_600, vec![2]));
        // An automatic parent is overridden by an explicit dir...
        a.add_file("d/f", 0o644, vec![]).unwrap();
        a.add_dir("d", 0o711).unwrap();
        assert_eq!(a.entries().find(|e| e.path == "d").unwrap().mode, 0o040_711);
        // ...but an explicit dir is not overridden by a later automatic parent.
        a.add_file("d/g", 0o644, vec![]).unwrap();
        assert_eq!(a.entries().find(|e| e.path == "d").unwrap().mode, 0o040_711);
        // A non-directory cannot be a parent, nor replace a populated dir.
        assert!(matches!(
            a.add_file("x/y", 0o644, vec![]),
            Err(CpioError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_symlink("d", "elsewhere"),
            Err(CpioError::Conflict { .. })
        ));
        assert!(a.contains("/d/g") && a.contains("d") && !a.contains("nope"));
    }

    #[test]
    fn gnu_cpio_lists_our_archive() {
        let bytes = sample().to_bytes(0);
        let mut child = match Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("note: skipping, GNU cpio not runnable: {e}");
                return;
            }
        };
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "cpio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let rows: Vec<(String, String, String, String)> = text
            .lines()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                // perms nlink owner group (size | major, minor) month day year name [-> target]
                let name = if w[0].starts_with('c') { w[9] } else { w[8] };
                let tail = l.split_once(name).map(|(_, t)| t.trim()).unwrap_or("");
                (
                    w[0].to_string(),
                    format!("{}:{}", w[2], w[3]),
                    name.to_string(),
                    tail.to_string(),
                )
            })
            .collect();
        let expect = [
            ("drwxr-xr-x", "bin", ""),
            ("-rwxr-xr-x", "bin/hello", ""),
            ("drwxr-xr-x", "dev", ""),
            ("crw-------", "dev/console", ""),
            ("drwx------", "etc", ""),
            ("-rw-------", "etc/odd", ""),
            ("lrwxrwxrwx", "init", "-> bin/hello"),
        ];
        assert_eq!(rows.len(), expect.len(), "cpio listing:\n{text}");
        for (row, (perms, name, tail)) in rows.iter().zip(expect) {
            assert_eq!(row.0, perms, "{text}");
            assert_eq!(row.1, "root:root", "{text}");
            assert_eq!(row.2, name, "{text}");
            assert_eq!(row.3, tail, "{text}");
        }
    }

    #[test]
    fn hostile_input_is_an_error() {
        let good = sample().to_bytes(0);
        assert!(matches!(
            read(&[]),
            Err(CpioError::Truncated { offset: 0, .. })
        ));
        assert!(matches!(
            read(b"garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage"),
            Err(CpioError::Parse { offset: 0, .. })
        ));
        // Every truncation point errors (no trailer) rather than panicking.
        for cut in 0..good.len() - 12 {
            assert!(read(&good[..cut]).is_err(), "cut at {cut} accepted");
        }
        // Corrupt a hex digit of the first header's filesize.
        let mut bad = good.clone();
        bad[54] = b'z';
        assert_eq!(
            read(&bad),
            Err(CpioError::Parse {
                offset: 54,
                what: "header field filesize is [122, 48, 48, 48, 48, 48, 48, 48], expected 8 hex digits"
                    .into()
            })
        );
        // A huge filesize is a truncation, not an allocation.
        let mut huge = good.clone();
        huge[54..62].copy_from_slice(b"ffffffff");
        assert!(matches!(read(&huge), Err(CpioError::Truncated { .. })));
        // Pseudo-random corruption never panics.
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = seed as usize % b.len();
                b[i] = (seed >> 24) as u8;
            }
            let _ = read(&b);
        }
    }

    #[test]
    fn concatenated_archives_are_read() {
        let mut a = Archive::new();
        a.add_file("one", 0o644, vec![1]).unwrap();
        let mut b = Archive::new();
        b.add_file("two", 0o644, vec![2]).unwrap();
        let mut bytes = a.to_bytes(0);
        bytes.extend_from_slice(&[0; 512]);
        bytes.extend(b.to_bytes(0));
        let names: Vec<_> = read(&bytes).unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(names, ["one", "two"]);
    }
}

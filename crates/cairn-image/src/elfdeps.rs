//! Host binaries with the shared libraries they need, found the way ld.so
//! finds them.
//!
//! Every lookup happens under `root` ("/" in production), with symlinks
//! resolved by this module (never by the OS), so an absolute symlink inside a
//! test root stays inside it.
//!
//! Image layout: each object is placed at the path where the search found it
//! (e.g. `/lib/x86_64-linux-gnu/libc.so.6`), with the directory part taken
//! literally: directory symlinks on the host (merged /usr: `/lib -> usr/lib`)
//! are followed but not reproduced, so the image has real directories only and
//! cannot clash with other content under `/lib` or `/usr`. Symlinks in the
//! last path component (`libjq.so.1 -> libjq.so.1.0.4`,
//! `/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...`) are kept as
//! symlinks and their targets are included, chains followed. A relative target
//! climbing (`..`) out of a directory reached through a directory symlink is
//! rewritten to the absolute path it reaches on the host.

use goblin::elf::header::{EI_CLASS, EI_DATA};
use goblin::elf::Elf;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Library directories searched after the ld.so.conf ones, in order, for
/// an x86_64 program (Debian's ld.so has its multiarch directory built in).
pub const DEFAULT_LIB_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// [`DEFAULT_LIB_DIRS`] for an arm64 (AArch64) program.
pub const DEFAULT_LIB_DIRS_AARCH64: [&str; 4] = [
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// The default library directories of ld.so for programs of ELF `machine`.
fn default_lib_dirs(machine: u16) -> &'static [&'static str] {
    match machine {
        goblin::elf::header::EM_AARCH64 => &DEFAULT_LIB_DIRS_AARCH64,
        _ => &DEFAULT_LIB_DIRS,
    }
}

/// Symlinks followed for one lookup before giving up (as the kernel does).
const MAX_SYMLINK_HOPS: u32 = 40;
/// Nesting limit for `include` in ld.so.conf.
const MAX_CONF_DEPTH: u32 = 8;

/// One entry the image needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    /// Absolute path in the image.
    pub image_path: String,
    pub kind: HostFileKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFileKind {
    /// A regular file copied from `host_path` with permission bits `mode`.
    File { host_path: PathBuf, mode: u32 },
    /// A symlink with this target text.
    Symlink { target: String },
}

/// Errors while computing a binary's closure.
#[derive(Debug, Error)]
pub enum ElfDepsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is a script ({interpreter}), not an ELF binary; list its interpreter as the binary"
    )]
    Script { path: PathBuf, interpreter: String },
    #[error("{path} is not an ELF binary ({what})")]
    NotElf { path: PathBuf, what: String },
    #[error("cannot parse ELF file {path}: {reason}")]
    BadElf { path: PathBuf, reason: String },
    #[error("{path}: interpreter {interpreter} not found under {root}")]
    MissingInterpreter {
        path: PathBuf,
        interpreter: String,
        root: PathBuf,
    },
    #[error("{path}: interpreter {interpreter} does not match the binary ({reason})")]
    BadInterpreter {
        path: PathBuf,
        interpreter: String,
        reason: String,
    },
    #[error(
        "library {library} needed by {needed_by} not found under {root}; searched: {}",
        searched.join(", ")
    )]
    MissingLibrary {
        library: String,
        needed_by: String,
        root: PathBuf,
        searched: Vec<String>,
    },
    #[error("{needed_by} needs {library} by relative path; only plain names and absolute paths are supported")]
    RelativeNeeded { library: String, needed_by: String },
    #[error("too many levels of symbolic links resolving {path} under {root}")]
    SymlinkLoop { path: String, root: PathBuf },
    #[error("image path {0:?} is not absolute")]
    RelativeImagePath(String),
}

type Result<T> = std::result::Result<T, ElfDepsError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ElfDepsError + '_ {
    move |source| ElfDepsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Split an absolute or relative path into components, lexically resolving
/// `.` and `..` (`..` at the top stays at the top).
fn normalize(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

fn join(comps: &[String]) -> String {
    if comps.is_empty() {
        "/".to_string()
    } else {
        comps.iter().map(|c| format!("/{c}")).collect()
    }
}

fn dirname(path: &str) -> String {
    let comps = normalize(path);
    join(&comps[..comps.len().saturating_sub(1)])
}

/// The result of resolving a file name under the root.
struct Found {
    /// Entries to add to the image (symlink chain, then the file).
    entries: Vec<HostFile>,
    /// The regular file finally reached, on the host.
    host_path: PathBuf,
    mode: u32,
}

impl Found {
    /// A regular file at `image_path`, reached with no symlink in between.
    fn file(image_path: String, host_path: PathBuf, mode: u32) -> Self {
        Found {
            entries: vec![HostFile {
                image_path,
                kind: HostFileKind::File {
                    host_path: host_path.clone(),
                    mode,
                },
            }],
            host_path,
            mode,
        }
    }
}

/// Path resolution under a root directory.
struct Root<'a> {
    root: &'a Path,
}

impl Root<'_> {
    fn host(&self, comps: &[String]) -> PathBuf {
        let mut p = self.root.to_path_buf();
        p.extend(comps);
        p
    }

    fn lstat(&self, comps: &[String]) -> Result<Option<fs::Metadata>> {
        let p = self.host(comps);
        match fs::symlink_metadata(&p) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => {
                Ok(None)
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    fn readlink(&self, comps: &[String]) -> Result<String> {
        let p = self.host(comps);
        let t = fs::read_link(&p).map_err(io_err(&p))?;
        Ok(t.to_string_lossy().into_owned())
    }

    fn hop(&self, hops: &mut u32, path: &[String]) -> Result<()> {
        *hops += 1;
        if *hops > MAX_SYMLINK_HOPS {
            return Err(ElfDepsError::SymlinkLoop {
                path: join(path),
                root: self.root.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Resolve `rel` (absolute, or relative to the real directory `start`)
    /// to a real directory, following every symlink. `None` if some
    /// component is missing or not a directory.
    fn resolve_dir(
        &self,
        start: Vec<String>,
        rel: &str,
        hops: &mut u32,
    ) -> Result<Option<Vec<String>>> {
        let mut real = if rel.starts_with('/') {
            Vec::new()
        } else {
            start
        };
        for c in rel.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    real.pop();
                }
                name => {
                    real.push(name.to_string());
                    let Some(meta) = self.lstat(&real)? else {
                        return Ok(None);
                    };
                    if meta.file_type().is_symlink() {
                        self.hop(hops, &real)?;
                        let target = self.readlink(&real)?;
                        real.pop();
                        match self.resolve_dir(real, &target, hops)? {
                            Some(r) => real = r,
                            None => return Ok(None),
                        }
                    } else if !meta.is_dir() {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(real))
    }

    /// Find the regular file at the absolute image path `logical`, keeping a
    /// symlink in the last component as a symlink. `None` if it does not
    /// exist or is not a regular file.
    fn resolve_file(&self, logical: &str, hops: &mut u32) -> Result<Option<Found>> {
        let comps = normalize(logical);
        let Some((name, parent)) = comps.split_last() else {
            return Ok(None);
        };
        let Some(mut real) = self.resolve_dir(Vec::new(), &join(parent), hops)? else {
            return Ok(None);
        };
        let real_parent = real.clone();
        real.push(name.clone());
        let Some(meta) = self.lstat(&real)? else {
            return Ok(None);
        };
        let image_path = join(&comps);
        if meta.file_type().is_symlink() {
            self.hop(hops, &real)?;
            let target = self.readlink(&real)?;
            let climbs = target.split('/').any(|c| c == "..");
            let target = if target.starts_with('/') || !climbs || real_parent.as_slice() == parent {
                target
            } else {
                // `..` from a directory reached through a directory symlink
                // (which the image does not reproduce) would land elsewhere
                // in the image: use the absolute path it reaches on the host.
                join(&normalize(&format!("{}/{target}", join(&real_parent))))
            };
            let next = if target.starts_with('/') {
                target.clone()
            } else {
                format!("{}/{target}", join(parent))
            };
            let Some(mut found) = self.resolve_file(&next, hops)? else {
                return Ok(None);
            };
            found.entries.insert(
                0,
                HostFile {
                    image_path,
                    kind: HostFileKind::Symlink { target },
                },
            );
            Ok(Some(found))
        } else if meta.is_file() {
            let host_path = self.host(&real);
            let mode = meta.permissions().mode() & 0o7777;
            Ok(Some(Found::file(image_path, host_path, mode)))
        } else {
            Ok(None)
        }
    }

    /// Read a file under the root (following symlinks); `None` if absent.
    fn read(&self, logical: &str) -> Result<Option<Vec<u8>>> {
        let mut hops = 0;
        match self.resolve_file(logical, &mut hops)? {
            Some(f) => fs::read(&f.host_path)
                .map(Some)
                .map_err(io_err(&f.host_path)),
            None => Ok(None),
        }
    }

    /// Names in the directory `logical` (sorted); empty if absent.
    fn list_dir(&self, logical: &str) -> Result<Vec<String>> {
        let mut hops = 0;
        let Some(real) = self.resolve_dir(Vec::new(), logical, &mut hops)? else {
            return Ok(Vec::new());
        };
        let p = self.host(&real);
        let mut names = Vec::new();
        for e in fs::read_dir(&p).map_err(io_err(&p))? {
            let e = e.map_err(io_err(&p))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// Where a search directory is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostDir {
    /// A path under the root, resolved by `Root`.
    Root(String),
    /// A directory outside the root (a binary's `$ORIGIN` outside it).
    Os(PathBuf),
}

/// A directory to search: where it is in the image and on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SearchDir {
    image: String,
    host: HostDir,
}

impl SearchDir {
    fn plain(dir: &str) -> Self {
        let d = join(&normalize(dir));
        SearchDir {
            image: d.clone(),
            host: HostDir::Root(d),
        }
    }

    fn describe(&self) -> String {
        match &self.host {
            HostDir::Root(d) if *d == self.image => self.image.clone(),
            HostDir::Root(d) => format!("{} (host {d})", self.image),
            HostDir::Os(p) => format!("{} (host {})", self.image, p.display()),
        }
    }

    /// `$ORIGIN`-relative directory `rest` (e.g. "/../lib").
    fn relative(&self, rest: &str) -> Self {
        let image = join(&normalize(&format!("{}/{rest}", self.image)));
        let host = match &self.host {
            HostDir::Root(d) => HostDir::Root(join(&normalize(&format!("{d}/{rest}")))),
            HostDir::Os(p) => HostDir::Os(p.join(rest.trim_start_matches('/'))),
        };
        SearchDir { image, host }
    }

    /// Look `name` up in this directory.
    fn lookup(&self, root: &Root, name: &str) -> Result<Option<Found>> {
        let image_path = format!("{}/{name}", self.image.trim_end_matches('/'));
        match &self.host {
            HostDir::Root(d) => {
                let mut hops = 0;
                let host_logical = format!("{}/{name}", d.trim_end_matches('/'));
                let Some(found) = root.resolve_file(&host_logical, &mut hops)? else {
                    return Ok(None);
                };
                if *d == self.image {
                    return Ok(Some(found));
                }
                // The image directory differs from the host one: copy the
                // file itself to the image path.
                Ok(Some(Found {
                    entries: vec![HostFile {
                        image_path,
                        kind: HostFileKind::File {
                            host_path: found.host_path.clone(),
                            mode: found.mode,
                        },
                    }],
                    ..found
                }))
            }
            HostDir::Os(dir) => {
                let p = dir.join(name);
                let Ok(meta) = fs::metadata(&p) else {
                    return Ok(None);
                };
                if !meta.is_file() {
                    return Ok(None);
                }
                let host_path = fs::canonicalize(&p).map_err(io_err(&p))?;
                let mode = meta.permissions().mode() & 0o7777;
                Ok(Some(Found::file(image_path, host_path, mode)))
            }
        }
    }
}

/// ELF class, byte order and machine: what must match between objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    class: u8,
    data: u8,
    machine: u16,
}

impl Kind {
    fn describe(self) -> String {
        let class = match self.class {
            1 => "32-bit",
            2 => "64-bit",
            _ => "unknown class",
        };
        let data = if self.data == 2 {
            "big-endian"
        } else {
            "little-endian"
        };
        format!("{class} {data} machine {}", self.machine)
    }
}

/// What the closure needs from one ELF object.
struct Object {
    /// Path in the image (for messages and `$ORIGIN`).
    image_path: String,
    origin: SearchDir,
    kind: Kind,
    /// ELF `e_machine`: which default library directories apply.
    machine: u16,
    interpreter: Option<String>,
    soname: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Option<Vec<String>>,
    /// Index of the object that loaded this one.
    loader: Option<usize>,
}

fn read_kind(bytes: &[u8]) -> Option<Kind> {
    let h = Elf::parse_header(bytes).ok()?;
    Some(Kind {
        class: h.e_ident[EI_CLASS],
        data: h.e_ident[EI_DATA],
        machine: h.e_machine,
    })
}

/// Check the magic and say what a non-ELF file is.
fn check_elf(path: &Path, bytes: &[u8]) -> Result<()> {
    if bytes.starts_with(b"\x7fELF") {
        return Ok(());
    }
    if let Some(rest) = bytes.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(ElfDepsError::Script {
            path: path.to_path_buf(),
            interpreter: format!("#!{}", String::from_utf8_lossy(line).trim()),
        });
    }
    let what = if bytes.is_empty() {
        "empty file".to_string()
    } else if bytes.starts_with(b"MZ") {
        "a PE/DOS executable".to_string()
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("starts with bytes {}, expected 7f 45 4c 46", head.join(" "))
    };
    Err(ElfDepsError::NotElf {
        path: path.to_path_buf(),
        what,
    })
}

fn parse_object(
    host_path: &Path,
    bytes: &[u8],
    image_path: String,
    origin: SearchDir,
    loader: Option<usize>,
) -> Result<Object> {
    check_elf(host_path, bytes)?;
    let bad = |reason: String| ElfDepsError::BadElf {
        path: host_path.to_path_buf(),
        reason,
    };
    let elf = Elf::parse(bytes).map_err(|e| bad(e.to_string()))?;
    let kind = read_kind(bytes).ok_or_else(|| bad("unreadable ELF header".into()))?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .map(str::to_string)
            .collect()
    };
    Ok(Object {
        image_path,
        origin,
        kind,
        machine: elf.header.e_machine,
        interpreter: elf.interpreter.map(str::to_string),
        soname: elf.soname.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: (!elf.runpaths.is_empty()).then(|| split(&elf.runpaths)),
        loader,
    })
}

/// Expand one DT_RPATH/DT_RUNPATH element; `None` for elements ld.so would
/// not find in the image (empty = current directory, relative, `$LIB` ...).
fn expand(origin: &SearchDir, element: &str) -> Option<SearchDir> {
    for token in ["${ORIGIN}", "$ORIGIN"] {
        if let Some(rest) = element.strip_prefix(token) {
            if rest.contains('$') || !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            return Some(origin.relative(rest));
        }
    }
    if element.starts_with('/') && !element.contains('$') {
        Some(SearchDir::plain(element))
    } else {
        None
    }
}

/// Match a shell-style pattern with `*` and `?`.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// Directories listed in ld.so.conf under the root, following `include`.
fn ld_so_conf_dirs(root: &Root, file: &str, depth: u32, out: &mut Vec<String>) -> Result<()> {
    if depth > MAX_CONF_DEPTH {
        return Ok(());
    }
    let Some(bytes) = root.read(file)? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&bytes);
    let conf_dir = dirname(file);
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("include") => {
                for pattern in words {
                    let pattern = if pattern.starts_with('/') {
                        pattern.to_string()
                    } else {
                        format!("{conf_dir}/{pattern}")
                    };
                    let dir = dirname(&pattern);
                    let file_pat = pattern.rsplit('/').next().unwrap_or_default();
                    if file_pat.contains(['*', '?']) {
                        for name in root.list_dir(&dir)? {
                            if glob_match(file_pat.as_bytes(), name.as_bytes()) {
                                ld_so_conf_dirs(root, &format!("{dir}/{name}"), depth + 1, out)?;
                            }
                        }
                    } else {
                        ld_so_conf_dirs(root, &pattern, depth + 1, out)?;
                    }
                }
            }
            Some("hwcap") => {}
            _ if line.starts_with('/') => out.push(line.to_string()),
            _ => {}
        }
    }
    Ok(())
}

/// `binary` plus everything ld.so would load for it, as image entries.
///
/// `binary` is a host path (inside or outside `root`) and is placed at
/// `image_path`; libraries and the interpreter are looked up under `root`.
/// The result is sorted by image path and has no duplicates.
pub fn closure(binary: &Path, image_path: &str, root: &Path) -> Result<Vec<HostFile>> {
    if !image_path.starts_with('/') {
        return Err(ElfDepsError::RelativeImagePath(image_path.to_string()));
    }
    let image_path = join(&normalize(image_path));
    let fsroot = Root { root };
    let bytes = fs::read(binary).map_err(io_err(binary))?;
    let meta = fs::metadata(binary).map_err(io_err(binary))?;
    let mut out: BTreeMap<String, HostFile> = BTreeMap::new();
    out.insert(
        image_path.clone(),
        HostFile {
            image_path: image_path.clone(),
            kind: HostFileKind::File {
                host_path: binary.to_path_buf(),
                mode: meta.permissions().mode() & 0o7777,
            },
        },
    );

    let image_dir = dirname(&image_path);
    let origin = match binary.parent().and_then(|p| p.strip_prefix(root).ok()) {
        Some(rel) => SearchDir {
            image: image_dir,
            host: HostDir::Root(join(&normalize(&rel.to_string_lossy()))),
        },
        None => SearchDir {
            image: image_dir,
            host: HostDir::Os(binary.parent().unwrap_or(Path::new("/")).to_path_buf()),
        },
    };
    let main = parse_object(binary, &bytes, image_path, origin, None)?;
    let main_kind = main.kind;
    let mut objects = vec![main];
    // Names (DT_NEEDED strings and sonames) already loaded.
    let mut loaded: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<usize> = VecDeque::from([0]);

    if let Some(interp) = objects[0].interpreter.clone() {
        let mut hops = 0;
        let found = fsroot.resolve_file(&interp, &mut hops)?.ok_or_else(|| {
            ElfDepsError::MissingInterpreter {
                path: binary.to_path_buf(),
                interpreter: interp.clone(),
                root: root.to_path_buf(),
            }
        })?;
        let ibytes = fs::read(&found.host_path).map_err(io_err(&found.host_path))?;
        let origin = SearchDir::plain(&dirname(&interp));
        let obj = parse_object(&found.host_path, &ibytes, interp.clone(), origin, Some(0))
            .map_err(|e| ElfDepsError::BadInterpreter {
                path: binary.to_path_buf(),
                interpreter: interp.clone(),
                reason: e.to_string(),
            })?;
        if obj.kind != main_kind {
            return Err(ElfDepsError::BadInterpreter {
                path: binary.to_path_buf(),
                interpreter: interp,
                reason: format!("{} vs {}", obj.kind.describe(), main_kind.describe()),
            });
        }
        loaded.insert(interp.clone());
        if let Some(s) = &obj.soname {
            loaded.insert(s.clone());
        }
        for e in found.entries {
            out.entry(e.image_path.clone()).or_insert(e);
        }
        objects.push(obj);
        queue.push_back(objects.len() - 1);
    }

    let mut conf = Vec::new();
    ld_so_conf_dirs(&fsroot, "/etc/ld.so.conf", 0, &mut conf)?;
    let mut system_dirs: Vec<SearchDir> = Vec::new();
    let defaults = default_lib_dirs(objects[0].machine);
    for d in conf
        .iter()
        .map(String::as_str)
        .chain(defaults.iter().copied())
    {
        let d = SearchDir::plain(d);
        if !system_dirs.contains(&d) {
            system_dirs.push(d);
        }
    }

    while let Some(idx) = queue.pop_front() {
        for name in objects[idx].needed.clone() {
            if loaded.contains(&name) {
                continue;
            }
            let needed_by = objects[idx].image_path.clone();
            let dirs: Vec<(SearchDir, String)> = if name.contains('/') {
                if !name.starts_with('/') {
                    return Err(ElfDepsError::RelativeNeeded {
                        library: name,
                        needed_by,
                    });
                }
                let d = SearchDir::plain(&dirname(&name));
                let base = name.rsplit('/').next().unwrap_or_default().to_string();
                vec![(d, base)]
            } else {
                search_dirs(&objects, idx, &system_dirs)
                    .into_iter()
                    .map(|d| (d, name.clone()))
                    .collect()
            };
            let mut searched = Vec::new();
            let mut hit = None;
            for (dir, base) in &dirs {
                let Some(found) = dir.lookup(&fsroot, base)? else {
                    searched.push(dir.describe());
                    continue;
                };
                let lbytes = fs::read(&found.host_path).map_err(io_err(&found.host_path))?;
                match read_kind(&lbytes) {
                    Some(k) if k == main_kind => {
                        hit = Some((dir.clone(), found, lbytes));
                        break;
                    }
                    Some(k) => {
                        searched.push(format!("{} (skipped: {})", dir.describe(), k.describe()))
                    }
                    None => searched.push(format!("{} (skipped: not ELF)", dir.describe())),
                }
            }
            let Some((dir, found, lbytes)) = hit else {
                return Err(ElfDepsError::MissingLibrary {
                    library: name,
                    needed_by,
                    root: root.to_path_buf(),
                    searched,
                });
            };
            let base = name.rsplit('/').next().unwrap_or_default();
            let lib_image_path = format!("{}/{base}", dir.image.trim_end_matches('/'));
            let obj = parse_object(&found.host_path, &lbytes, lib_image_path, dir, Some(idx))?;
            loaded.insert(name.clone());
            if let Some(s) = &obj.soname {
                loaded.insert(s.clone());
            }
            for e in found.entries {
                out.entry(e.image_path.clone()).or_insert(e);
            }
            objects.push(obj);
            queue.push_back(objects.len() - 1);
        }
    }
    Ok(out.into_values().collect())
}

/// The directories ld.so searches for a DT_NEEDED of `objects[idx]`:
/// DT_RPATH of the object and its loaders (only if the object has no
/// DT_RUNPATH; loaders with DT_RUNPATH contribute nothing), then the object's
/// DT_RUNPATH, then ld.so.conf and the default directories.
fn search_dirs(objects: &[Object], idx: usize, system: &[SearchDir]) -> Vec<SearchDir> {
    let mut dirs = Vec::new();
    let obj = &objects[idx];
    if obj.runpath.is_none() {
        let mut cur = Some(idx);
        while let Some(i) = cur {
            let o = &objects[i];
            if o.runpath.is_none() {
                dirs.extend(o.rpath.iter().filter_map(|e| expand(&o.origin, e)));
            }
            cur = o.loader;
        }
    }
    if let Some(rp) = &obj.runpath {
        dirs.extend(rp.iter().filter_map(|e| expand(&obj.origin, e)));
    }
    dirs.extend(system.iter().cloned());
    let mut unique = Vec::new();
    for d in dirs {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn find<'a>(files: &'a [HostFile], path: &str) -> Option<&'a HostFile> {
        files.iter().find(|f| f.image_path == path)
    }

    fn names(files: &[HostFile]) -> Vec<&str> {
        files.iter().map(|f| f.image_path.as_str()).collect()
    }

    /// Every symlink in the result leads, inside the result, to a file.
    fn assert_self_contained(files: &[HostFile]) {
        let mut sorted = names(files);
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, names(files), "not sorted/deduplicated");
        for f in files {
            let mut cur = f.clone();
            for _ in 0..10 {
                match &cur.kind {
                    HostFileKind::File { host_path, .. } => {
                        assert!(host_path.is_file(), "{host_path:?}");
                        break;
                    }
                    HostFileKind::Symlink { target } => {
                        let next = if target.starts_with('/') {
                            join(&normalize(target))
                        } else {
                            join(&normalize(&format!(
                                "{}/{target}",
                                dirname(&cur.image_path)
                            )))
                        };
                        cur = find(files, &next)
                            .unwrap_or_else(|| {
                                panic!("{} -> {next} dangles in {files:#?}", f.image_path)
                            })
                            .clone();
                    }
                }
            }
        }
    }

    #[test]
    fn jq_brings_its_libraries_and_interpreter() {
        let files = closure(Path::new("/usr/bin/jq"), "/bin/jq", Path::new("/")).unwrap();
        assert_self_contained(&files);
        let all = names(&files);
        let base = |n: &str| all.iter().any(|p| p.rsplit('/').next() == Some(n));
        for lib in [
            "libjq.so.1",
            "libonig.so.5",
            "libc.so.6",
            "libm.so.6",
            "ld-linux-x86-64.so.2",
        ] {
            assert!(base(lib), "{lib} missing from {all:#?}");
        }
        match &find(&files, "/bin/jq").unwrap().kind {
            HostFileKind::File { host_path, mode } => {
                assert_eq!(host_path, Path::new("/usr/bin/jq"));
                assert_eq!(mode & 0o111, 0o111);
            }
            k => panic!("{k:?}"),
        }
        // The PT_INTERP path exists in the image, as the host's symlink.
        let interp = find(&files, "/lib64/ld-linux-x86-64.so.2").expect("interpreter path");
        assert_eq!(
            interp.kind,
            HostFileKind::Symlink {
                target: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()
            }
        );
        // Merged /usr: no directory symlinks are emitted, and files are
        // read through them.
        assert!(find(&files, "/lib").is_none() && find(&files, "/lib64").is_none());
        match &find(&files, "/lib/x86_64-linux-gnu/libjq.so.1")
            .unwrap()
            .kind
        {
            HostFileKind::Symlink { target } => {
                assert!(target.starts_with("libjq.so.1."), "{target}");
                let real = format!("/lib/x86_64-linux-gnu/{target}");
                assert!(matches!(
                    find(&files, &real).unwrap().kind,
                    HostFileKind::File { .. }
                ));
            }
            k => panic!("expected a symlink, got {k:?}"),
        }
    }

    #[test]
    fn static_busybox_is_just_itself() {
        let files = closure(Path::new("/bin/busybox"), "/bin/busybox", Path::new("/")).unwrap();
        assert_eq!(files.len(), 1, "{files:#?}");
        assert_eq!(files[0].image_path, "/bin/busybox");
        assert!(matches!(
            files[0].kind,
            HostFileKind::File { mode: 0o755, .. }
        ));
    }

    #[test]
    fn scripts_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        fs::write(&script, "#!/bin/sh -e\necho hi\n").unwrap();
        let e = closure(&script, "/bin/run", dir.path()).unwrap_err();
        assert!(
            matches!(&e, ElfDepsError::Script { interpreter, .. } if interpreter == "#!/bin/sh -e"),
            "{e}"
        );
        assert!(e.to_string().contains("run.sh"), "{e}");
        let text = dir.path().join("notes.txt");
        fs::write(&text, "hello").unwrap();
        let e = closure(&text, "/x", dir.path()).unwrap_err();
        assert!(matches!(e, ElfDepsError::NotElf { .. }), "{e}");
        assert!(
            e.to_string().contains("notes.txt") && e.to_string().contains("68 65 6c 6c"),
            "{e}"
        );
        let e = closure(&dir.path().join("absent"), "/x", dir.path()).unwrap_err();
        assert!(matches!(e, ElfDepsError::Io { .. }), "{e}");
        // Truncated ELF.
        let bytes = fs::read("/usr/bin/jq").unwrap();
        let cut = dir.path().join("cut");
        fs::write(&cut, &bytes[..100]).unwrap();
        let e = closure(&cut, "/x", dir.path()).unwrap_err();
        assert!(matches!(e, ElfDepsError::BadElf { .. }), "{e}");
    }

    fn copy(from: &str, root: &Path, to: &str) {
        let dest = root.join(to.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(from, &dest).unwrap();
    }

    #[test]
    fn missing_interpreter_and_missing_library_are_named() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        copy("/usr/bin/jq", r, "/usr/bin/jq");
        let jq = r.join("usr/bin/jq");
        let e = closure(&jq, "/usr/bin/jq", r).unwrap_err();
        assert!(
            matches!(&e, ElfDepsError::MissingInterpreter { interpreter, .. } if interpreter == "/lib64/ld-linux-x86-64.so.2"),
            "{e}"
        );
        copy(
            "/lib64/ld-linux-x86-64.so.2",
            r,
            "/lib64/ld-linux-x86-64.so.2",
        );
        let e = closure(&jq, "/usr/bin/jq", r).unwrap_err();
        match &e {
            ElfDepsError::MissingLibrary {
                library,
                needed_by,
                searched,
                ..
            } => {
                assert_eq!(library, "libjq.so.1");
                assert_eq!(needed_by, "/usr/bin/jq");
                assert_eq!(
                    searched.first().map(String::as_str),
                    Some("/lib/x86_64-linux-gnu")
                );
                assert!(searched.iter().any(|s| s == "/usr/lib"), "{searched:?}");
            }
            e => panic!("{e}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("libjq.so.1") && msg.contains("/usr/bin/jq") && msg.contains("/usr/lib64"),
            "{msg}"
        );
    }

    fn cc(args: &[&str]) {
        let o = Command::new("timeout")
            .args(["60", "cc"])
            .args(args)
            .output()
            .expect("cc");
        assert!(
            o.status.success(),
            "cc {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// A fake merged-/usr root with symlink chains, an `$ORIGIN` rpath, an
    /// ld.so.conf include and a library of the wrong machine that must be
    /// skipped.
    #[test]
    fn fake_root_with_symlink_chains_origin_rpath_and_ld_so_conf() {
        let build = tempfile::tempdir().unwrap();
        let b = |n: &str| build.path().join(n).to_string_lossy().into_owned();
        fs::write(build.path().join("foo.c"), "int foo(void) { return 1; }\n").unwrap();
        fs::write(build.path().join("bar.c"), "int bar(void) { return 2; }\n").unwrap();
        fs::write(
            build.path().join("prog.c"),
            "int foo(void); int bar(void); int main(void) { return foo() + bar(); }\n",
        )
        .unwrap();
        cc(&[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libfoo.so.1",
            "-o",
            &b("libfoo.so.1.2"),
            &b("foo.c"),
        ]);
        cc(&[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libbar.so.1",
            "-o",
            &b("libbar.so.1"),
            &b("bar.c"),
        ]);
        symlink("libfoo.so.1.2", build.path().join("libfoo.so.1")).unwrap();
        cc(&[
            "-o",
            &b("prog"),
            &b("prog.c"),
            &format!("-L{}", b("")),
            "-l:libfoo.so.1",
            "-l:libbar.so.1",
            "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib",
        ]);

        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mkdir = |d: &str| fs::create_dir_all(r.join(d)).unwrap();
        let ln = |target: &str, at: &str| symlink(target, r.join(at)).unwrap();
        // Merged /usr with a relative and an absolute symlink.
        mkdir("usr/lib/x86_64-linux-gnu");
        mkdir("usr/lib64");
        ln("usr/lib", "lib");
        ln("usr/lib64", "lib64");
        copy(
            "/lib/x86_64-linux-gnu/libc.so.6",
            r,
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        );
        copy(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            r,
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        );
        ln(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "usr/lib64/ld-linux-x86-64.so.2",
        );
        // The application with an $ORIGIN rpath and a versioned symlink.
        copy(&b("prog"), r, "/opt/app/bin/prog");
        copy(&b("libfoo.so.1.2"), r, "/opt/app/lib/libfoo.so.1.2");
        ln("libfoo.so.1.2", "opt/app/lib/libfoo.so.1");
        // libbar through ld.so.conf, behind a relative then absolute chain,
        // with a wrong-machine decoy in an earlier directory.
        mkdir("etc/ld.so.conf.d");
        fs::write(
            r.join("etc/ld.so.conf"),
            "# comment\ninclude /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/ld.so.conf.d/a.conf"),
            "/opt/decoy\n/opt/extra\n",
        )
        .unwrap();
        fs::write(r.join("etc/ld.so.conf.d/ignored.txt"), "/opt/never\n").unwrap();
        let mut decoy = fs::read(b("libbar.so.1")).unwrap();
        decoy[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        mkdir("opt/decoy");
        fs::write(r.join("opt/decoy/libbar.so.1"), decoy).unwrap();
        copy(&b("libbar.so.1"), r, "/opt/real/libbar.so.1.0");
        mkdir("opt/extra");
        mkdir("opt/extra2");
        ln("../extra2/libbar-link", "opt/extra/libbar.so.1");
        ln("/opt/real/libbar.so.1.0", "opt/extra2/libbar-link");

        let prog = r.join("opt/app/bin/prog");
        let files = closure(&prog, "/opt/app/bin/prog", r).unwrap();
        assert_self_contained(&files);
        let sym = |t: &str| HostFileKind::Symlink { target: t.into() };
        let kind = |p: &str| {
            find(&files, p)
                .unwrap_or_else(|| panic!("{p} missing from {:#?}", names(&files)))
                .kind
                .clone()
        };
        assert_eq!(kind("/opt/app/lib/libfoo.so.1"), sym("libfoo.so.1.2"));
        assert!(matches!(
            kind("/opt/app/lib/libfoo.so.1.2"),
            HostFileKind::File { .. }
        ));
        assert_eq!(kind("/opt/extra/libbar.so.1"), sym("../extra2/libbar-link"));
        assert_eq!(
            kind("/opt/extra2/libbar-link"),
            sym("/opt/real/libbar.so.1.0")
        );
        match kind("/opt/real/libbar.so.1.0") {
            HostFileKind::File { host_path, .. } => {
                assert_eq!(host_path, r.join("opt/real/libbar.so.1.0"))
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(
            kind("/lib64/ld-linux-x86-64.so.2"),
            sym("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        match kind("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2") {
            HostFileKind::File { host_path, .. } => assert_eq!(
                host_path,
                r.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                "absolute symlinks must stay inside the root"
            ),
            k => panic!("{k:?}"),
        }
        assert!(find(&files, "/lib/x86_64-linux-gnu/libc.so.6").is_some());
        assert!(!names(&files)
            .iter()
            .any(|p| p.contains("decoy") || p.contains("never")));
        assert_eq!(files.len(), 9, "{:#?}", names(&files));

        // Placed elsewhere in the image, $ORIGIN follows the image path.
        let files = closure(&prog, "/bin/prog", r).unwrap();
        assert_self_contained(&files);
        assert!(matches!(
            find(&files, "/lib/libfoo.so.1").unwrap().kind,
            HostFileKind::File { .. }
        ));
        assert!(find(&files, "/opt/app/lib/libfoo.so.1").is_none());

        // The binary outside the root: $ORIGIN is looked up next to it.
        let files = closure(&build.path().join("prog"), "/usr/bin/prog", r).unwrap_err();
        // libfoo.so.1 is at ../lib relative to the build dir: not there.
        assert!(
            matches!(&files, ElfDepsError::MissingLibrary { library, searched, .. }
                if library == "libfoo.so.1" && searched[0].starts_with("/usr/lib (host ")),
            "{files}"
        );
    }

    #[test]
    fn climbing_out_of_a_symlinked_directory_is_made_absolute() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("deep/b")).unwrap();
        symlink("deep/b", r.join("a")).unwrap();
        symlink("../y", r.join("deep/b/x")).unwrap();
        symlink("z", r.join("deep/b/w")).unwrap();
        fs::write(r.join("deep/b/z"), "z").unwrap();
        fs::write(r.join("deep/y"), "physical").unwrap();
        fs::write(r.join("y"), "lexical").unwrap();
        let fsroot = Root { root: r };
        let found = fsroot.resolve_file("/a/x", &mut 0).unwrap().unwrap();
        assert_eq!(found.host_path, r.join("deep/y"));
        let kinds: Vec<(&str, &HostFileKind)> = found
            .entries
            .iter()
            .map(|e| (e.image_path.as_str(), &e.kind))
            .collect();
        assert_eq!(
            kinds[0],
            (
                "/a/x",
                &HostFileKind::Symlink {
                    target: "/deep/y".into()
                }
            )
        );
        assert_eq!(kinds[1].0, "/deep/y");
        // A plain relative name stays relative.
        let found = fsroot.resolve_file("/a/w", &mut 0).unwrap().unwrap();
        assert_eq!(
            found.entries[0].kind,
            HostFileKind::Symlink { target: "z".into() }
        );
        assert_eq!(found.entries[1].image_path, "/a/z");
        assert!(fsroot.resolve_file("/a/missing", &mut 0).unwrap().is_none());
        assert!(fsroot.resolve_file("/deep", &mut 0).unwrap().is_none());
    }

    #[test]
    fn symlink_loops_are_reported() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        copy("/usr/bin/jq", r, "/usr/bin/jq");
        fs::create_dir_all(r.join("lib64")).unwrap();
        symlink("ld-b", r.join("lib64/ld-linux-x86-64.so.2")).unwrap();
        symlink("ld-linux-x86-64.so.2", r.join("lib64/ld-b")).unwrap();
        let e = closure(&r.join("usr/bin/jq"), "/usr/bin/jq", r).unwrap_err();
        assert!(matches!(e, ElfDepsError::SymlinkLoop { .. }), "{e}");
    }

    #[test]
    fn helpers() {
        assert_eq!(join(&normalize("/a/./b/../c//d/")), "/a/c/d");
        assert_eq!(join(&normalize("/../..")), "/");
        assert_eq!(dirname("/usr/bin/jq"), "/usr/bin");
        assert!(glob_match(b"*.conf", b"libc.conf"));
        assert!(!glob_match(b"*.conf", b"libc.conf.bak"));
        assert!(glob_match(b"a?c*", b"abcdef"));
        let o = SearchDir::plain("/opt/app/bin");
        assert_eq!(
            expand(&o, "$ORIGIN/../lib"),
            Some(SearchDir::plain("/opt/app/lib"))
        );
        assert_eq!(
            expand(&o, "${ORIGIN}"),
            Some(SearchDir::plain("/opt/app/bin"))
        );
        assert_eq!(
            expand(&o, "/usr/local/lib"),
            Some(SearchDir::plain("/usr/local/lib"))
        );
        assert_eq!(expand(&o, ""), None);
        assert_eq!(expand(&o, "lib"), None);
        assert_eq!(expand(&o, "/$LIB/x"), None);
    }
}

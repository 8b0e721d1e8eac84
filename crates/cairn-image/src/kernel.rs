//! Kernel resolution: a Debian kernel package fetched into a cache, or a
//! kernel image (and module directory) given by path.
//!
//! Package mode ([`resolve_package`]):
//! 1. Fast path: if `CACHE/kernels/PACKAGE.resolved` records a resolution of
//!    the version that the local apt lists name as candidate
//!    (`apt-cache show`), and its directory exists, it is used without any
//!    download.
//! 2. Otherwise `apt-get download PACKAGE` runs in a temporary directory under
//!    `CACHE/kernels`. A package whose `.deb` has no `/boot/vmlinuz-*` is a
//!    meta package: its first `linux-image-*` dependency is downloaded instead
//!    (at most [`MAX_DEPTH`] levels). The kernel package is extracted with
//!    `dpkg-deb -x` into a temporary directory that is then renamed to
//!    `CACHE/kernels/PACKAGE_VERSION/`, so that directory is always complete.
//!    The record is then (re)written.
//! 3. If apt fails and a record exists, the recorded kernel is used with a
//!    warning on stderr (offline builds).

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How many meta-package levels are followed before giving up.
pub const MAX_DEPTH: usize = 4;

/// Errors from resolving a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("invalid Debian package name {name:?}: expected lowercase letters, digits, '+', '-' and '.', starting with a letter or digit")]
    InvalidPackageName { name: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("`apt-get download {package}` failed:\n{stderr}\nhint: is the package name right? Run `apt-get update` to refresh the package lists.")]
    Apt { package: String, stderr: String },
    #[error("`dpkg-deb {args}` failed on {deb}:\n{stderr}")]
    DpkgDeb {
        deb: PathBuf,
        args: String,
        stderr: String,
    },
    #[error("apt-get download {package} left no .deb file in {dir}")]
    NoDeb { package: String, dir: PathBuf },
    #[error("package {package} contains no /boot/vmlinuz-* and has no linux-image-* dependency (Depends: {depends:?}); name a kernel image package such as linux-image-cloud-amd64")]
    NoKernel { package: String, depends: String },
    #[error("meta package chain too long (more than {MAX_DEPTH} levels): {}", .chain.join(" -> "))]
    TooDeep { chain: Vec<String> },
    #[error("{dir} holds no boot/vmlinuz-* kernel image")]
    NoImage { dir: PathBuf },
    #[error("{what} {path} does not exist or is not a {kind}")]
    NotFound {
        what: &'static str,
        path: PathBuf,
        kind: &'static str,
    },
    #[error(
        "cannot tell the kernel version of {image}: name it vmlinuz-VERSION or give modules_dir"
    )]
    UnknownVersion { image: PathBuf },
    #[error("cache directory {dir} is owned by uid {owner}, not by you (uid {me}); refusing to use it (its contents go into images). Set CAIRN_CACHE_DIR to a directory of your own")]
    CacheNotOwned { dir: PathBuf, owner: u32, me: u32 },
    #[error("cache directory {dir} has mode {mode:04o}: other users can write into it, and its contents go into images; run `chmod 700 {dir}` or set CAIRN_CACHE_DIR")]
    CacheWritable { dir: PathBuf, mode: u32 },
    #[error("{path} is not a directory; set CAIRN_CACHE_DIR to a directory")]
    CacheNotDir { path: PathBuf },
}

/// Creates the cache directory `dir` (mode 0700, parents as needed) or
/// checks an existing one: it must be a real directory (not a symlink),
/// owned by the current user, and not writable by group or others. Its
/// contents (kernels, initramfs) go into images, so a cache someone else
/// can write is refused.
pub fn prepare_cache_dir(dir: &Path) -> Result<(), KernelError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // The umask may have narrowed 0700 further; never widen it.
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(KernelError::CacheNotDir {
            path: dir.to_path_buf(),
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(KernelError::CacheNotOwned {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(KernelError::CacheWritable {
            dir: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// SHA-256 of an extracted kernel tree: every entry's relative path, type
/// and content (a symlink's target), in sorted order. Recorded when the
/// package is extracted and checked every time the tree is reused.
pub fn tree_sha256(root: &Path) -> Result<String, KernelError> {
    use sha2::{Digest, Sha256};
    fn walk(root: &Path, dir: &Path, h: &mut Sha256) -> Result<(), KernelError> {
        for p in sorted_entries(dir) {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
            h.update(rel.as_os_str().as_encoded_bytes());
            h.update([0]);
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p).map_err(io_err(&p))?;
                h.update(b"l");
                h.update(t.as_os_str().as_encoded_bytes());
                h.update([0]);
            } else if meta.is_dir() {
                h.update(b"d");
                walk(root, &p, h)?;
            } else {
                h.update(format!("f{:o}:{}:", meta.mode() & 0o7777, meta.len()));
                let mut f = fs::File::open(&p).map_err(io_err(&p))?;
                std::io::copy(&mut f, h).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }
    let mut h = Sha256::new();
    walk(root, root, &mut h)?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, hex.
pub(crate) fn file_sha256(path: &Path) -> Result<String, KernelError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(hex(&h.finalize()))
}

/// A resolved kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel image (bzImage).
    pub image: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// The `lib/modules/VERSION` directory, if there is one.
    pub modules_dir: Option<PathBuf>,
    /// Where it came from: `debian:PACKAGE VERSION` or `path:IMAGE`.
    pub origin: String,
}

/// The cache directory: `$CAIRN_CACHE_DIR`, else `$XDG_CACHE_HOME/cairn`,
/// else `~/.cache/cairn` (else `$TMPDIR/cairn-cache` without a home).
pub fn cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

/// Debian's cloud kernel for the tests that need a real one, resolved
/// once per test process through apt into the user's cache: only when
/// `CAIRN_NET_TESTS` is set (`cargo xtask test` sets it), since it may
/// download about 27 MB. Without it, `None` and a note.
#[cfg(test)]
pub(crate) fn debian_cloud_kernel_for_tests() -> Option<Kernel> {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    if std::env::var_os("CAIRN_NET_TESTS").is_none() {
        eprintln!("note: set CAIRN_NET_TESTS=1 to run the tests on Debian's real kernel");
        return None;
    }
    Some(
        KERNEL
            .get_or_init(|| {
                resolve_package("linux-image-cloud-amd64", &cache_dir())
                    .expect("resolving Debian's cloud kernel (CAIRN_NET_TESTS is set)")
            })
            .clone(),
    )
}

fn cache_dir_from(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("CAIRN_CACHE_DIR") {
        return d;
    }
    if let Some(d) = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return d.join("cairn");
    }
    if let Some(h) = var("HOME") {
        return h.join(".cache/cairn");
    }
    std::env::temp_dir().join("cairn-cache")
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn validate_package_name(name: &str) -> Result<(), KernelError> {
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(KernelError::InvalidPackageName {
            name: name.to_string(),
        })
    }
}

/// One alternative of a `Depends:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    /// Version constraint without parentheses, e.g. `= 6.1.192-2`.
    pub constraint: Option<String>,
}

/// Parses a Debian `Depends:` value into groups of alternatives. Architecture
/// qualifiers (`:any`), architecture lists (`[amd64]`) and build profiles
/// (`<!nocheck>`) are dropped.
pub fn parse_depends(value: &str) -> Vec<Vec<Dependency>> {
    value
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let alt = alt.trim();
                    let (head, constraint) = match alt.split_once('(') {
                        Some((h, rest)) => {
                            let c = rest.split(')').next().unwrap_or("");
                            let c = c.split_whitespace().collect::<Vec<_>>().join(" ");
                            (h, (!c.is_empty()).then_some(c))
                        }
                        None => (alt, None),
                    };
                    let name = head
                        .split(['[', '<'])
                        .next()
                        .unwrap_or("")
                        .trim()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    (!name.is_empty()).then_some(Dependency { name, constraint })
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// The first `linux-image-*` package named in a `Depends:` value (groups in
/// order, alternatives in order).
pub fn first_linux_image_dependency(depends: &str) -> Option<String> {
    parse_depends(depends)
        .into_iter()
        .flatten()
        .map(|d| d.name)
        .find(|n| n.starts_with("linux-image-"))
}

/// Parses `Field: value` control text (with continuation lines) and returns
/// the value of `field` (case-insensitive name).
pub fn control_field(text: &str, field: &str) -> Option<String> {
    let mut value: Option<String> = None;
    let mut in_field = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if in_field {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        in_field = false;
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case(field) && value.is_none() {
                value = Some(v.trim().to_string());
                in_field = true;
            }
        }
    }
    value
}

/// What `PACKAGE.resolved` records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    /// Version of the requested package when it was resolved.
    version: String,
    /// Directory name under `CACHE/kernels`.
    dir: String,
    origin: String,
    /// SHA-256 of the downloaded `.deb` the directory was extracted from.
    deb_sha256: String,
    /// [`tree_sha256`] of the directory right after extraction.
    tree_sha256: String,
}

impl Record {
    fn to_text(&self) -> String {
        format!(
            "version={}\ndir={}\norigin={}\ndeb_sha256={}\ntree_sha256={}\n",
            self.version, self.dir, self.origin, self.deb_sha256, self.tree_sha256
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        let rec = Record {
            version: get("version")?,
            dir: get("dir")?,
            origin: get("origin")?,
            // A record from before hashes were kept has none: it is not
            // trusted (the kernel is downloaded again).
            deb_sha256: get("deb_sha256")?,
            tree_sha256: get("tree_sha256")?,
        };
        // The directory must be a plain name inside the cache.
        (!rec.dir.is_empty() && !rec.dir.contains('/') && !rec.dir.starts_with('.')).then_some(rec)
    }
}

pub(crate) fn is_root() -> bool {
    // /proc/self is owned by the process's effective uid.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(crate) fn run(
    cmd: &mut Command,
    program: &'static str,
) -> Result<std::process::Output, KernelError> {
    cmd.env("LC_ALL", "C")
        .output()
        .map_err(|source| KernelError::Spawn { program, source })
}

/// The apt programs to run (replaceable in tests) and the options that
/// point them at an architecture's own lists.
#[derive(Debug, Clone)]
pub struct Apt {
    pub(crate) get: &'static str,
    pub(crate) cache: &'static str,
    /// `-o` options (empty: the host's apt as configured).
    pub(crate) options: Vec<String>,
}

pub(crate) const APT: Apt = Apt {
    get: "apt-get",
    cache: "apt-cache",
    options: Vec::new(),
};

/// The host's Debian architecture (`dpkg --print-architecture`).
pub fn host_debian_arch() -> Option<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()?;
    let a = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !a.is_empty()).then_some(a)
}

impl Apt {
    /// apt for Debian architecture `darch` (`amd64`, `arm64`): the host's
    /// apt for the host's own architecture; for another one, a private apt
    /// state under `CACHE/apt/DARCH` (its own package lists, fetched from
    /// the host's configured sources and checked against the host's keys,
    /// refreshed when older than [`RECHECK_AFTER`]), so the host's dpkg
    /// and apt configuration are never changed.
    pub fn for_arch(darch: &str, cache: &Path) -> Result<Apt, KernelError> {
        if host_debian_arch().as_deref() == Some(darch) {
            return Ok(APT);
        }
        validate_package_name(darch)?;
        prepare_cache_dir(cache)?;
        let state = cache.join("apt").join(darch);
        let lists = state.join("lists");
        for d in [lists.join("partial"), state.join("archives/partial")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let status = state.join("status");
        if !status.exists() {
            fs::write(&status, b"").map_err(io_err(&status))?;
        }
        let apt = Apt {
            options: vec![
                format!("APT::Architecture={darch}"),
                format!("APT::Architectures={darch}"),
                format!("Dir::State::Lists={}", lists.display()),
                format!("Dir::State::status={}", status.display()),
                format!("Dir::Cache={}", state.display()),
                format!("Dir::Cache::archives={}", state.join("archives").display()),
            ],
            ..APT
        };
        let stamp = state.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < RECHECK_AFTER);
        if !fresh {
            let mut cmd = apt.command(apt.get);
            cmd.args(["-q", "update"]);
            let out = run(&mut cmd, "apt-get")?;
            if !out.status.success() {
                return Err(KernelError::Apt {
                    package: format!("(update of the {darch} package lists)"),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            fs::write(&stamp, b"").map_err(io_err(&stamp))?;
        }
        Ok(apt)
    }

    /// `program` (apt-get or apt-cache) with this apt's options.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if is_root() {
            // Root's apt drops to _apt, which cannot write our private temp dir
            // and would warn; download as root instead.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        for o in &self.options {
            cmd.args(["-o", o]);
        }
        cmd
    }
}

/// `apt-get download` of `packages` (names, or `name=version`) into `dir`.
pub fn apt_download(apt: &Apt, packages: &[&str], dir: &Path) -> Result<(), KernelError> {
    let mut cmd = apt.command(apt.get);
    cmd.current_dir(dir).args(["-q", "download"]);
    cmd.args(packages);
    let out = run(&mut cmd, "apt-get")?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KernelError::Apt {
            package: packages.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The candidate version of `package` in the local apt lists (no network).
fn candidate_version(apt: &Apt, package: &str) -> Option<String> {
    control_field(&apt_show(apt, &[package])?, "Version")
}

/// The control stanzas of `packages`' candidate versions in the local apt
/// lists (no network), blank-line separated; unknown and purely virtual
/// packages have none. `None` when there is none at all.
pub(crate) fn apt_show<S: AsRef<std::ffi::OsStr>>(apt: &Apt, packages: &[S]) -> Option<String> {
    let out = apt
        .command(apt.cache)
        .env("LC_ALL", "C")
        .args(["show", "--no-all-versions"])
        .args(packages)
        .output()
        .ok()?;
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn dpkg_deb(deb: &Path, args: &[&str]) -> Result<String, KernelError> {
    let out = run(Command::new("dpkg-deb").args(args).arg(deb), "dpkg-deb")?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(KernelError::DpkgDeb {
            deb: deb.to_path_buf(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn find_deb(package: &str, dir: &Path) -> Result<PathBuf, KernelError> {
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    debs.into_iter().next().ok_or_else(|| KernelError::NoDeb {
        package: package.to_string(),
        dir: dir.to_path_buf(),
    })
}

/// What [`download_and_extract`] made.
struct Downloaded {
    dir: String,
    origin: String,
    version: String,
    deb_sha256: String,
    tree_sha256: String,
}

/// Downloads `package` (following meta packages) and makes sure its kernel
/// is extracted. Returns (directory name, origin, version of `package`,
/// SHA-256 of the kernel `.deb`, [`tree_sha256`] of the directory).
fn download_and_extract(
    apt: &Apt,
    package: &str,
    kernels: &Path,
    chain: &mut Vec<String>,
) -> Result<Downloaded, KernelError> {
    chain.push(package.to_string());
    if chain.len() > MAX_DEPTH {
        return Err(KernelError::TooDeep {
            chain: chain.clone(),
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(kernels)
        .map_err(io_err(kernels))?;
    apt_download(apt, &[package], tmp.path())?;
    let deb = find_deb(package, tmp.path())?;
    let control = dpkg_deb(&deb, &["-f"])?;
    let name = control_field(&control, "Package").unwrap_or_else(|| package.to_string());
    let version = control_field(&control, "Version").unwrap_or_default();
    let depends = control_field(&control, "Depends").unwrap_or_default();
    let dir_name = format!("{name}_{version}").replace([':', '/'], "_");
    let target = kernels.join(&dir_name);
    // Only kernel packages are ever extracted, so an existing directory
    // saves listing the archive.
    let has_kernel = target.is_dir()
        || dpkg_deb(&deb, &["-c"])?
            .lines()
            .any(|l| l.contains(" ./boot/vmlinuz-"));
    if !has_kernel {
        let Some(next) = first_linux_image_dependency(&depends) else {
            return Err(KernelError::NoKernel {
                package: package.to_string(),
                depends,
            });
        };
        validate_package_name(&next)?;
        let mut d = download_and_extract(apt, &next, kernels, chain)?;
        d.version = version;
        return Ok(d);
    }
    let deb_sha256 = file_sha256(&deb)?;
    // Always extract what was just downloaded: a directory already in the
    // cache is kept only if it is exactly that (same tree hash).
    let staging = tmp.path().join("extract");
    extract(&deb, &staging)?;
    let tree = tree_sha256(&staging)?;
    if target.is_dir() && tree_sha256(&target)? != tree {
        eprintln!(
            "warning: {} differs from the package {name} {version} just downloaded; replacing it",
            target.display()
        );
        fs::remove_dir_all(&target).map_err(io_err(&target))?;
    }
    if !target.is_dir() {
        if let Err(e) = fs::rename(&staging, &target) {
            // Another build may have won the race; its directory is complete.
            if !target.is_dir() {
                return Err(KernelError::Io {
                    path: target,
                    source: e,
                });
            }
        }
    }
    Ok(Downloaded {
        dir: dir_name,
        origin: format!("debian:{name} {version}"),
        version,
        deb_sha256,
        tree_sha256: tree,
    })
}

pub(crate) fn extract(deb: &Path, into: &Path) -> Result<(), KernelError> {
    let out = run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        "dpkg-deb",
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KernelError::DpkgDeb {
            deb: deb.to_path_buf(),
            args: format!("-x {}", into.display()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn write_record(path: &Path, rec: &Record) -> Result<(), KernelError> {
    let tmp = path.with_extension(format!("resolved.tmp-{}", std::process::id()));
    fs::write(&tmp, rec.to_text()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// The record for `package`, if its directory still has the tree hash
/// recorded when it was extracted. A directory that changed since is
/// refused with a message, and removed with its record, so that the
/// package is downloaded again.
fn read_record(kernels: &Path, package: &str) -> Option<Record> {
    let path = kernels.join(format!("{package}.resolved"));
    let rec = fs::read_to_string(&path)
        .ok()
        .and_then(|t| Record::parse(&t))
        .filter(|r| kernels.join(&r.dir).is_dir())?;
    let dir = kernels.join(&rec.dir);
    match tree_sha256(&dir) {
        Ok(h) if h == rec.tree_sha256 => Some(rec),
        found => {
            let found = found.unwrap_or_else(|e| format!("unreadable ({e})"));
            eprintln!(
                "warning: the cached kernel {} (from {}, package SHA-256 {}) does not match \
                 what was recorded when it was extracted (tree SHA-256 {}, now {found}); \
                 refusing it and downloading the package again",
                dir.display(),
                rec.origin,
                rec.deb_sha256,
                rec.tree_sha256
            );
            let _ = fs::remove_file(&path);
            let _ = fs::remove_dir_all(&dir);
            None
        }
    }
}

/// Resolves a Debian kernel package into `cache` (see the module docs).
pub fn resolve_package(package: &str, cache: &Path) -> Result<Kernel, KernelError> {
    resolve_package_with(&APT, package, cache)
}

/// The kernel recorded for `package` by an earlier [`resolve_package`],
/// without running apt at all (for offline or fast builds); `None` if
/// there is no usable record.
pub fn resolve_package_cached(package: &str, cache: &Path) -> Result<Option<Kernel>, KernelError> {
    validate_package_name(package)?;
    let kernels = cache.join("kernels");
    read_record(&kernels, package)
        .map(|rec| kernel_from_dir(&kernels.join(&rec.dir), &rec.origin))
        .transpose()
}

/// How long a recorded resolution is trusted without asking apt again
/// (see [`resolve_package_recent`]).
pub const RECHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Like [`resolve_package`] for Debian architecture `darch` (through
/// [`Apt::for_arch`]), but trusts a record written or re-checked less
/// than [`RECHECK_AFTER`] ago without running apt (which takes about a
/// second). `refresh` always re-checks.
pub fn resolve_package_recent(
    package: &str,
    darch: &str,
    cache: &Path,
    refresh: bool,
) -> Result<Kernel, KernelError> {
    validate_package_name(package)?;
    let record_path = cache.join("kernels").join(format!("{package}.resolved"));
    let fresh = fs::metadata(&record_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < RECHECK_AFTER);
    if fresh && !refresh {
        if let Some(k) = resolve_package_cached(package, cache)? {
            return Ok(k);
        }
    }
    let k = resolve_package_with(&Apt::for_arch(darch, cache)?, package, cache)?;
    // The record was confirmed: restart its clock.
    if let Ok(f) = fs::File::options().append(true).open(&record_path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    Ok(k)
}

fn resolve_package_with(apt: &Apt, package: &str, cache: &Path) -> Result<Kernel, KernelError> {
    validate_package_name(package)?;
    prepare_cache_dir(cache)?;
    let kernels = cache.join("kernels");
    fs::create_dir_all(&kernels).map_err(io_err(&kernels))?;
    let record_path = kernels.join(format!("{package}.resolved"));
    let record = read_record(&kernels, package);
    if let Some(rec) = &record {
        if candidate_version(apt, package).as_deref() == Some(rec.version.as_str()) {
            return kernel_from_dir(&kernels.join(&rec.dir), &rec.origin);
        }
    }
    match (
        download_and_extract(apt, package, &kernels, &mut Vec::new()),
        record,
    ) {
        (Ok(d), _) => {
            let rec = Record {
                version: d.version,
                dir: d.dir,
                origin: d.origin,
                deb_sha256: d.deb_sha256,
                tree_sha256: d.tree_sha256,
            };
            write_record(&record_path, &rec)?;
            kernel_from_dir(&kernels.join(&rec.dir), &rec.origin)
        }
        (Err(KernelError::Apt { package: p, stderr }), Some(rec)) => {
            let reason = stderr.lines().last().unwrap_or("no output");
            eprintln!(
                "warning: cannot download {p} ({reason}); using the cached kernel {} \
                 resolved earlier for {package}",
                rec.origin
            );
            kernel_from_dir(&kernels.join(&rec.dir), &rec.origin)
        }
        (Err(e), _) => Err(e),
    }
}

pub(crate) fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A kernel from an extracted package root (`boot/vmlinuz-*`,
/// `lib/modules/*` or `usr/lib/modules/*`).
fn kernel_from_dir(root: &Path, origin: &str) -> Result<Kernel, KernelError> {
    let images: Vec<PathBuf> = sorted_entries(&root.join("boot"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    let modules: Vec<PathBuf> = ["lib/modules", "usr/lib/modules"]
        .iter()
        .flat_map(|d| sorted_entries(&root.join(d)))
        .filter(|p| p.is_dir())
        .collect();
    let image_version = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .map(str::to_string)
    };
    // Prefer the image whose version has a module directory.
    let (image, modules_dir) = images
        .iter()
        .find_map(|img| {
            let v = image_version(img)?;
            let m = modules
                .iter()
                .find(|m| m.file_name().is_some_and(|n| *n == *v))?;
            Some((img.clone(), Some(m.clone())))
        })
        .or_else(|| {
            images
                .first()
                .map(|i| (i.clone(), modules.first().cloned()))
        })
        .ok_or_else(|| KernelError::NoImage {
            dir: root.to_path_buf(),
        })?;
    let version = match &modules_dir {
        Some(m) => m.file_name().map(|n| n.to_string_lossy().into_owned()),
        None => image_version(&image),
    }
    .unwrap_or_default();
    Ok(Kernel {
        image,
        version,
        modules_dir,
        origin: origin.to_string(),
    })
}

/// The version string from an x86 bzImage setup header (`kernel_version`
/// field), first word only, or `None` if absent.
pub fn bzimage_version(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*head.get(0x20e)?, *head.get(0x20f)?]);
    if ptr == 0 {
        return None;
    }
    let start = usize::from(ptr) + 0x200;
    let tail = head.get(start..)?;
    let end = tail.iter().position(|b| *b == 0)?;
    let s = std::str::from_utf8(&tail[..end]).ok()?;
    s.split_whitespace()
        .next()
        .filter(|v| v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
}

/// A kernel given by path. Version: the last component of `modules_dir`,
/// else the `vmlinuz-VERSION` file name, else the bzImage header.
pub fn resolve_path(image: &Path, modules_dir: Option<&Path>) -> Result<Kernel, KernelError> {
    if !image.is_file() {
        return Err(KernelError::NotFound {
            what: "kernel image",
            path: image.to_path_buf(),
            kind: "file",
        });
    }
    if let Some(m) = modules_dir {
        if !m.is_dir() {
            return Err(KernelError::NotFound {
                what: "modules_dir",
                path: m.to_path_buf(),
                kind: "directory",
            });
        }
    }
    let from_modules = modules_dir
        .and_then(|m| m.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let from_name = image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let version = match from_modules.or(from_name) {
        Some(v) => v,
        None => {
            let mut head = Vec::new();
            fs::File::open(image)
                .and_then(|f| f.take(0x10000).read_to_end(&mut head))
                .map_err(io_err(image))?;
            bzimage_version(&head).ok_or_else(|| KernelError::UnknownVersion {
                image: image.to_path_buf(),
            })?
        }
    };
    Ok(Kernel {
        image: image.to_path_buf(),
        version,
        modules_dir: modules_dir.map(Path::to_path_buf),
        origin: format!("path:{}", image.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_depends_with_alternatives_and_constraints() {
        let d = parse_depends(
            "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2), kmod | busybox-static:any (>=1.0) [amd64], \
             initramfs-tools <!stage1>",
        );
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0],
            vec![Dependency {
                name: "linux-image-6.1.0-56-cloud-amd64".into(),
                constraint: Some("= 6.1.192-2".into())
            }]
        );
        assert_eq!(d[1][0].name, "kmod");
        assert_eq!(d[1][1].name, "busybox-static");
        assert_eq!(d[1][1].constraint.as_deref(), Some(">=1.0"));
        assert_eq!(d[2][0].name, "initramfs-tools");
        assert!(parse_depends("").is_empty());
    }

    #[test]
    fn picks_first_linux_image_dependency() {
        assert_eq!(
            first_linux_image_dependency("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)")
                .as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            first_linux_image_dependency(
                "kmod, linux-base (>= 4.3~) | foo, linux-image-6.1.0-9-amd64-unsigned | linux-image-6.1.0-9-amd64"
            )
            .as_deref(),
            Some("linux-image-6.1.0-9-amd64-unsigned")
        );
        assert_eq!(first_linux_image_dependency("kmod, linux-base"), None);
    }

    #[test]
    fn control_fields() {
        let text =
            "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\nDepends: a,\n b (= 1)\nX: y\n";
        assert_eq!(
            control_field(text, "package").as_deref(),
            Some("linux-image-cloud-amd64")
        );
        assert_eq!(
            control_field(text, "Depends").as_deref(),
            Some("a, b (= 1)")
        );
        assert_eq!(control_field(text, "Missing"), None);
    }

    #[test]
    fn validates_package_names() {
        assert!(validate_package_name("linux-image-cloud-amd64").is_ok());
        for bad in ["-o", "", "Linux", "a b", "x;rm", "a"] {
            assert!(validate_package_name(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            resolve_package("--help", Path::new("/nonexistent")),
            Err(KernelError::InvalidPackageName { .. })
        ));
    }

    #[test]
    fn record_round_trip_and_rejects_escapes() {
        let r = Record {
            version: "6.1.192-2".into(),
            dir: "linux-image-6.1.0-56-cloud-amd64_6.1.192-2".into(),
            origin: "debian:linux-image-6.1.0-56-cloud-amd64 6.1.192-2".into(),
            deb_sha256: "ab".into(),
            tree_sha256: "cd".into(),
        };
        assert_eq!(Record::parse(&r.to_text()), Some(r));
        // A record from before hashes were kept is not trusted.
        assert_eq!(
            Record::parse("version=1\ndir=x\norigin=o\n"),
            None,
            "a record without hashes"
        );
        assert_eq!(Record::parse("version=1\ndir=../x\norigin=o\n"), None);
        assert_eq!(Record::parse("version=1\n"), None);
    }

    #[test]
    fn resolve_path_on_a_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let boot = tmp.path().join("boot");
        let mods = tmp.path().join("lib/modules/6.1.0-x");
        fs::create_dir_all(&boot).unwrap();
        fs::create_dir_all(&mods).unwrap();
        let image = boot.join("vmlinuz-6.1.0-x");
        fs::write(&image, b"not really a kernel").unwrap();

        let k = resolve_path(&image, None).unwrap();
        assert_eq!(k.version, "6.1.0-x");
        assert_eq!(k.modules_dir, None);
        assert_eq!(k.origin, format!("path:{}", image.display()));

        let k = resolve_path(&image, Some(&mods)).unwrap();
        assert_eq!(k.modules_dir.as_deref(), Some(mods.as_path()));
        // modules_dir's name wins over the image name.
        let renamed = boot.join("bzImage");
        fs::write(&renamed, b"x").unwrap();
        assert_eq!(
            resolve_path(&renamed, Some(&mods)).unwrap().version,
            "6.1.0-x"
        );
        assert!(matches!(
            resolve_path(&renamed, None),
            Err(KernelError::UnknownVersion { .. })
        ));
        assert!(matches!(
            resolve_path(&boot.join("nope"), None),
            Err(KernelError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_path(&image, Some(&boot.join("nope"))),
            Err(KernelError::NotFound { .. })
        ));
        // The extracted-package layout is understood too.
        let k = kernel_from_dir(tmp.path(), "debian:x 1").unwrap();
        assert_eq!((k.image, k.version), (image, "6.1.0-x".to_string()));
        assert_eq!(k.modules_dir, Some(mods));
    }

    #[test]
    fn bzimage_header_version() {
        let mut head = vec![0u8; 0x1000];
        head[0x202..0x206].copy_from_slice(b"HdrS");
        head[0x20e..0x210].copy_from_slice(&0x0300u16.to_le_bytes());
        let s = b"6.9.1-tiny (me@host) #1 SMP\0";
        head[0x500..0x500 + s.len()].copy_from_slice(s);
        assert_eq!(bzimage_version(&head).as_deref(), Some("6.9.1-tiny"));
        head[0x202] = b'X';
        assert_eq!(bzimage_version(&head), None);
        assert_eq!(bzimage_version(&[]), None);
        // Debian's real kernel (CAIRN_NET_TESTS): the header names the
        // release apt resolved.
        if let Some(k) = debian_cloud_kernel_for_tests() {
            let bytes = fs::read(&k.image).unwrap();
            assert_eq!(bzimage_version(&bytes).as_deref(), Some(k.version.as_str()));
        }
    }

    #[test]
    fn cache_dir_precedence() {
        fn env(
            pairs: &[(&'static str, &'static str)],
        ) -> impl Fn(&str) -> Option<std::ffi::OsString> {
            let pairs = pairs.to_vec();
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let all = [
            ("CAIRN_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(&all)), PathBuf::from("/c"));
        let no_cairn = [
            ("CAIRN_CACHE_DIR", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(&no_cairn)), PathBuf::from("/x/cairn"));
        let relative_xdg = [("XDG_CACHE_HOME", "rel"), ("HOME", "/h")];
        assert_eq!(
            cache_dir_from(env(&relative_xdg)),
            PathBuf::from("/h/.cache/cairn")
        );
        assert_eq!(
            cache_dir_from(env(&[])),
            std::env::temp_dir().join("cairn-cache")
        );
    }

    /// The tree of an extracted kernel package 9.9.9-x in `dir`.
    fn fake_kernel_tree(dir: &Path) {
        fs::create_dir_all(dir.join("boot")).unwrap();
        fs::create_dir_all(dir.join("lib/modules/9.9.9-x/kernel")).unwrap();
        fs::write(dir.join("boot/vmlinuz-9.9.9-x"), b"k").unwrap();
    }

    /// A cache with one extracted kernel package (no record yet): the
    /// cache, its `kernels` directory and the package's tree.
    fn fake_extracted_kernel() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let cache = tempfile::tempdir().unwrap();
        let kernels = cache.path().join("kernels");
        let dir = kernels.join("linux-image-9.9.9-x_9.9.9-1");
        fake_kernel_tree(&dir);
        (cache, kernels, dir)
    }

    #[test]
    fn falls_back_to_the_record_when_apt_fails() {
        let (cache, kernels, dir) = fake_extracted_kernel();
        let failing = Apt {
            get: "false",
            cache: "false",
            options: Vec::new(),
        };
        // No record yet: apt's failure is the error.
        assert!(matches!(
            resolve_package_with(&failing, "linux-image-x", cache.path()),
            Err(KernelError::Apt { .. })
        ));
        assert_eq!(
            resolve_package_cached("linux-image-x", cache.path()).unwrap(),
            None
        );
        let rec = Record {
            version: "9.9.9-1".into(),
            dir: "linux-image-9.9.9-x_9.9.9-1".into(),
            origin: "debian:linux-image-9.9.9-x 9.9.9-1".into(),
            deb_sha256: "00".into(),
            tree_sha256: tree_sha256(&dir).unwrap(),
        };
        write_record(&kernels.join("linux-image-x.resolved"), &rec).unwrap();
        let k = resolve_package_with(&failing, "linux-image-x", cache.path()).unwrap();
        assert_eq!(k.version, "9.9.9-x");
        assert_eq!(k.image, dir.join("boot/vmlinuz-9.9.9-x"));
        assert_eq!(k.origin, rec.origin);
        assert_eq!(
            resolve_package_cached("linux-image-x", cache.path()).unwrap(),
            Some(k)
        );
        // A record pointing at a missing directory is ignored.
        fs::remove_dir_all(&dir).unwrap();
        assert!(resolve_package_with(&failing, "linux-image-x", cache.path()).is_err());
    }

    /// A cached kernel tree changed after extraction (a replaced image, an
    /// added module) is refused and dropped, never used.
    #[test]
    fn a_tampered_cached_kernel_is_refused() {
        let (cache, kernels, dir) = fake_extracted_kernel();
        let rec = Record {
            version: "9.9.9-1".into(),
            dir: "linux-image-9.9.9-x_9.9.9-1".into(),
            origin: "debian:linux-image-9.9.9-x 9.9.9-1".into(),
            deb_sha256: "00".into(),
            tree_sha256: tree_sha256(&dir).unwrap(),
        };
        let record = kernels.join("linux-image-x.resolved");
        write_record(&record, &rec).unwrap();
        assert!(resolve_package_cached("linux-image-x", cache.path())
            .unwrap()
            .is_some());
        type Tamper = Box<dyn Fn(&Path)>;
        let tampers: Vec<Tamper> = vec![
            Box::new(|d| fs::write(d.join("boot/vmlinuz-9.9.9-x"), b"evil").unwrap()),
            Box::new(|d| fs::write(d.join("lib/modules/9.9.9-x/kernel/x.ko"), b"m").unwrap()),
            Box::new(|d| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(
                    d.join("boot/vmlinuz-9.9.9-x"),
                    fs::Permissions::from_mode(0o4755),
                )
                .unwrap()
            }),
        ];
        for tamper in tampers {
            tamper(&dir);
            assert_eq!(
                resolve_package_cached("linux-image-x", cache.path()).unwrap(),
                None
            );
            // Record and tree are gone: the next build downloads again.
            assert!(!record.exists());
            assert!(!dir.exists());
            fake_kernel_tree(&dir);
            write_record(&record, &rec).unwrap();
        }
        // Offline (apt failing), a tampered tree is an error, not a fallback.
        fs::write(dir.join("boot/vmlinuz-9.9.9-x"), b"evil").unwrap();
        let failing = Apt {
            get: "false",
            cache: "false",
            options: Vec::new(),
        };
        assert!(matches!(
            resolve_package_with(&failing, "linux-image-x", cache.path()),
            Err(KernelError::Apt { .. })
        ));
    }

    #[test]
    fn cache_dir_is_private_and_ours() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("a/cairn");
        prepare_cache_dir(&cache).unwrap();
        let mode = fs::metadata(&cache).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        // Existing and fine: again.
        prepare_cache_dir(&cache).unwrap();
        // 0755 (an older cache) is accepted: no one else can write it.
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o755)).unwrap();
        prepare_cache_dir(&cache).unwrap();
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_cache_dir(&cache).unwrap_err();
        assert!(matches!(e, KernelError::CacheWritable { .. }), "{e}");
        assert!(e.to_string().contains("chmod 700"), "{e}");
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
        // Someone else's directory (giving it away needs root).
        let me = rustix::process::geteuid().as_raw();
        if me == 0 {
            std::os::unix::fs::chown(&cache, Some(4242), None).unwrap();
            let e = prepare_cache_dir(&cache).unwrap_err();
            assert!(matches!(e, KernelError::CacheNotOwned { .. }), "{e}");
            assert!(e.to_string().contains("CAIRN_CACHE_DIR"), "{e}");
            std::os::unix::fs::chown(&cache, Some(me), None).unwrap();
        }
        // A symlink to a directory is not the directory.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        assert!(matches!(
            prepare_cache_dir(&link),
            Err(KernelError::CacheNotDir { .. })
        ));
    }

    #[test]
    fn unknown_package_reports_apt_error() {
        if std::env::var_os("CAIRN_NET_TESTS").is_none() {
            eprintln!("note: set CAIRN_NET_TESTS=1 to run apt-based tests");
            return;
        }
        let cache = tempfile::tempdir().unwrap();
        match resolve_package("cairn-no-such-package-xyz", cache.path()) {
            Err(e @ KernelError::Apt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("Unable to locate package"), "{msg}");
                assert!(msg.contains("apt-get update"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Downloads ~27 MB, so it only runs with `CAIRN_NET_TESTS=1`.
    #[test]
    fn resolves_debian_cloud_kernel() {
        if std::env::var_os("CAIRN_NET_TESTS").is_none() {
            eprintln!("note: set CAIRN_NET_TESTS=1 to download and resolve a real kernel");
            return;
        }
        let cache = tempfile::tempdir().unwrap();
        let k = resolve_package("linux-image-cloud-amd64", cache.path()).unwrap();
        assert!(k.version.ends_with("-cloud-amd64"), "{k:?}");
        assert!(k.image.is_file());
        assert_eq!(
            k.image.file_name().unwrap().to_string_lossy(),
            format!("vmlinuz-{}", k.version)
        );
        let m = k.modules_dir.clone().unwrap();
        assert!(m.join("kernel").is_dir() && m.ends_with(&k.version));
        assert!(
            k.origin
                .starts_with(&format!("debian:linux-image-{}", k.version)),
            "{k:?}"
        );
        let kernels = cache.path().join("kernels");
        let rec = fs::read_to_string(kernels.join("linux-image-cloud-amd64.resolved")).unwrap();
        assert!(rec.contains(&k.origin));
        // No temporary directories are left behind.
        let leftovers: Vec<_> = fs::read_dir(&kernels)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // Second resolution: cache hit, same answer.
        let t = std::time::Instant::now();
        assert_eq!(
            resolve_package("linux-image-cloud-amd64", cache.path()).unwrap(),
            k
        );
        eprintln!("cached resolution took {:?}", t.elapsed());
    }
}

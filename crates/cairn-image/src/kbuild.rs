//! Kernels built from source with Kbuild, cached.
//!
//! [`build`] takes a kernel source (a tarball such as Debian's
//! `/usr/src/linux-source-6.1.tar.xz`, or an unpacked tree), a base
//! configuration (`tinyconfig` or `defconfig`) and config fragments, and:
//!
//! 1. computes a cache key from the source's identity (canonical path, size
//!    and mtime of the tarball; for a tree, of its top-level `Makefile`), the
//!    fragments' contents, the base, `gcc --version` and `make --version`;
//! 2. if `CACHE/kernels/built/KEY/` exists, returns it (no kernel time);
//! 3. otherwise unpacks a tarball once into `CACHE/kernels/src/SRCKEY/`,
//!    runs `make O=CACHE/kernels/obj/KEY ARCH=x86_64 BASE`, merges the
//!    fragments with `scripts/kconfig/merge_config.sh -m`, runs `make
//!    olddefconfig`, checks that every fragment option ended up as requested
//!    (those that did not are returned as warnings), builds `bzImage` with
//!    `-j$(nproc)` and fixed `KBUILD_BUILD_*` values (reproducible), and
//!    moves `bzImage`, `.config`, `System.map` and the kernel release into
//!    `built/KEY/` atomically (rename of a complete directory).
//!
//! Every make step writes to `CACHE/kernels/obj/KEY/cairn-build.log`; a
//! failing step is named in the error together with the log's last lines.
//! A lock file serialises concurrent builds (tests run in parallel).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Fixed `KBUILD_BUILD_TIMESTAMP` (the kernel's `uname -v` date).
pub const BUILD_TIMESTAMP: &str = "Thu Jan  1 00:00:00 UTC 1970";
/// Fixed `KBUILD_BUILD_USER` and `KBUILD_BUILD_HOST`.
pub const BUILD_USER: &str = "cairn";
/// Fixed `KBUILD_BUILD_VERSION` (the `#1` in `uname -v`).
pub const BUILD_VERSION: &str = "1";
/// Bumped when the build procedure changes in a way that changes outputs.
const KEY_VERSION: &str = "cairn-kbuild-1";
/// Lines of the make log shown when a step fails.
const LOG_TAIL: usize = 25;
/// How often a running compile reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Errors from building a kernel from source.
#[derive(Debug, thiserror::Error)]
pub enum KbuildError {
    #[error("kernel source {0} does not exist")]
    NoSource(PathBuf),
    #[error("kernel source {path} is neither a tarball nor a kernel tree (no Makefile)")]
    NotASource { path: PathBuf },
    #[error("config fragment {path}: {source}")]
    Fragment {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config fragment {path}:{line}: expected `CONFIG_X=value` or `# CONFIG_X is not set`, found {text:?}")]
    FragmentSyntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source} (install it: apt-get install flex bison libelf-dev bc libssl-dev make gcc)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("kernel build step `{step}` failed ({status}); last lines of {log}:\n{tail}")]
    Step {
        step: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("unpacked {tarball} but found no single top-level directory with a Makefile in it")]
    BadTarball { tarball: PathBuf },
    #[error("the build finished but {0} is missing")]
    NoImage(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KbuildError + '_ {
    move |source| KbuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The Kbuild base configuration.
pub use cairn_manifest::KernelBase as Base;

/// What to build.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// A tarball or a kernel tree.
    pub source: &'a Path,
    pub base: Base,
    /// Config fragments, in merge order.
    pub fragments: &'a [PathBuf],
    /// The cache root (`~/.cache/cairn`).
    pub cache: &'a Path,
}

/// A built (or cached) kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `CACHE/kernels/built/KEY/bzImage`.
    pub image: PathBuf,
    /// The final `.config`.
    pub config: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
    /// The cache key (hex SHA-256).
    pub key: String,
    /// True when the kernel came from the cache without building.
    pub cached: bool,
    /// Fragment options that did not end up as requested, with what they
    /// became: `CONFIG_X=y (requested), got: is not set`.
    pub not_applied: Vec<String>,
}

/// One requested option value: `Some("y")`, `Some("\"str\"")`, or `None`
/// for `# CONFIG_X is not set`.
pub type Options = BTreeMap<String, Option<String>>;

/// Parses a config fragment (or a `.config`): later lines win.
/// Blank lines and other comments are skipped.
pub fn parse_config(text: &str, path: &Path) -> Result<Options, KbuildError> {
    let mut out = Options::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if is_option_name(name) {
                    out.insert(name.to_string(), None);
                    continue;
                }
            }
            continue; // an ordinary comment
        }
        if line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((name, value)) if is_option_name(name) && !value.is_empty() => {
                out.insert(name.to_string(), Some(value.to_string()));
            }
            _ => {
                return Err(KbuildError::FragmentSyntax {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: raw.to_string(),
                })
            }
        }
    }
    Ok(out)
}

fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|n| {
        !n.is_empty()
            && n
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
    // Kconfig symbols are upper case by convention but lower case exists.
    || name.strip_prefix("CONFIG_").is_some_and(|n| {
        !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Options of `wanted` whose value in `got` differs, described for a
/// warning. An option absent from `got` counts as "is not set".
pub fn not_applied(wanted: &Options, got: &Options) -> Vec<String> {
    let show = |v: &Option<String>| match v {
        Some(v) => format!("={v}"),
        None => " is not set".to_string(),
    };
    wanted
        .iter()
        .filter_map(|(name, want)| {
            let have = got.get(name).cloned().unwrap_or(None);
            (have != *want).then(|| {
                format!(
                    "{name}{} (requested), got{}",
                    show(want),
                    show(&have).replace('=', " =")
                )
            })
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn tool_version(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .env("LC_ALL", "C")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| format!("{program}: not found"))
}

fn is_tarball(path: &Path) -> bool {
    path.is_file()
}

/// Identity of the source: canonical path, size, mtime (of the tarball, or
/// of a tree's top-level Makefile).
fn source_identity(source: &Path) -> Result<(PathBuf, String), KbuildError> {
    let canon = source
        .canonicalize()
        .map_err(|_| KbuildError::NoSource(source.to_path_buf()))?;
    let probe = if is_tarball(&canon) {
        canon.clone()
    } else {
        let mk = canon.join("Makefile");
        if !mk.is_file() {
            return Err(KbuildError::NotASource { path: canon });
        }
        mk
    };
    let md = fs::metadata(&probe).map_err(io_err(&probe))?;
    let id = format!(
        "{} size={} mtime={}.{}",
        canon.display(),
        md.len(),
        md.mtime(),
        md.mtime_nsec()
    );
    Ok((canon, id))
}

/// The cache key of a request, and the fragments it read.
fn cache_key(req: &Request) -> Result<(String, String, Vec<Options>), KbuildError> {
    let (_, source_id) = source_identity(req.source)?;
    let mut h = String::new();
    let _ = writeln!(h, "{KEY_VERSION}");
    let _ = writeln!(h, "source {source_id}");
    let _ = writeln!(h, "base {}", req.base.target());
    let _ = writeln!(h, "gcc {}", tool_version("gcc"));
    let _ = writeln!(h, "make {}", tool_version("make"));
    let mut parsed = Vec::new();
    for f in req.fragments {
        let text = fs::read_to_string(f).map_err(|source| KbuildError::Fragment {
            path: f.clone(),
            source,
        })?;
        parsed.push(parse_config(&text, f)?);
        let _ = writeln!(h, "fragment {}", sha256_hex(text.as_bytes()));
    }
    Ok((
        sha256_hex(h.as_bytes())[..32].to_string(),
        source_id,
        parsed,
    ))
}

/// Looks for a finished build of `req` without building.
pub fn cached(req: &Request) -> Result<Option<Built>, KbuildError> {
    let (key, _, _) = cache_key(req)?;
    load_built(&req.cache.join("kernels/built").join(&key), &key)
}

fn load_built(dir: &Path, key: &str) -> Result<Option<Built>, KbuildError> {
    let image = dir.join("bzImage");
    if !image.is_file() {
        return Ok(None);
    }
    let release_path = dir.join("kernel.release");
    let release = fs::read_to_string(&release_path)
        .map_err(io_err(&release_path))?
        .trim()
        .to_string();
    let warnings = fs::read_to_string(dir.join("not-applied")).unwrap_or_default();
    Ok(Some(Built {
        image,
        config: dir.join("config"),
        release,
        key: key.to_string(),
        cached: true,
        not_applied: warnings.lines().map(str::to_string).collect(),
    }))
}

/// Builds (or takes from the cache) the kernel `req` describes. `progress`
/// gets one line per phase and a line every 30 s while compiling.
pub fn build(req: &Request, progress: &mut dyn FnMut(&str)) -> Result<Built, KbuildError> {
    build_reporting_every(req, PROGRESS_EVERY, progress)
}

/// [`build`], with a compile progress line every `every` (a terminal's
/// progress bar wants a count that moves).
pub fn build_reporting_every(
    req: &Request,
    every: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, KbuildError> {
    let (key, source_id, fragments) = cache_key(req)?;
    let kernels = req.cache.join("kernels");
    let built_dir = kernels.join("built").join(&key);
    if let Some(b) = load_built(&built_dir, &key)? {
        return Ok(b);
    }
    fs::create_dir_all(kernels.join("built")).map_err(io_err(&kernels))?;
    let lock_path = kernels.join("kbuild.lock");
    let _lock = Lock::exclusive(&lock_path, progress)?;
    // Someone else may have finished it while we waited.
    if let Some(b) = load_built(&built_dir, &key)? {
        return Ok(b);
    }
    let started = Instant::now();
    progress(&format!("kernel: building {source_id} (cache key {key})"));

    let tree = source_tree(req.source, &kernels, progress)?;
    let obj = kernels.join("obj").join(&key);
    fs::create_dir_all(&obj).map_err(io_err(&obj))?;
    let log = obj.join("cairn-build.log");
    let mut runner = Runner::new(&tree, &obj, &log)?;

    let (config_path, missing) = configure(&mut runner, &tree, &obj, req, fragments, progress)?;
    let base = req.base.target();

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "kernel: [3/4] make -j{jobs} bzImage (log: {})",
        log.display()
    ));
    let t = Instant::now();
    runner.make_watching(
        "bzImage",
        every,
        &[&format!("-j{jobs}"), "bzImage"],
        &mut |lines| {
            progress(&format!(
                "kernel:       ... {lines} objects compiled, {}s",
                t.elapsed().as_secs()
            ))
        },
    )?;

    progress("kernel: [4/4] store in cache");
    let image = obj.join("arch/x86/boot/bzImage");
    if !image.is_file() {
        return Err(KbuildError::NoImage(image));
    }
    runner.make("kernelrelease", &["-s", "kernelrelease"])?;
    let release = runner.last_output.trim().to_string();
    let tmp = kernels.join("built").join(format!("{key}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let copy = |from: &Path, name: &str| {
        fs::copy(from, tmp.join(name))
            .map(|_| ())
            .map_err(io_err(from))
    };
    copy(&image, "bzImage")?;
    copy(&config_path, "config")?;
    copy(&log, "build.log")?;
    // Symbols for reading `initcall_debug` addresses and profiles of a
    // kernel without kallsyms (the tiny profile); not part of the key.
    copy(&obj.join("System.map"), "System.map")?;
    let write = |name: &str, text: String| {
        let p = tmp.join(name);
        fs::write(&p, text).map_err(io_err(&p))
    };
    write("kernel.release", format!("{release}\n"))?;
    write("not-applied", missing.join("\n"))?;
    write("source", format!("{source_id}\nbase {base}\n"))?;
    fs::rename(&tmp, &built_dir).map_err(io_err(&built_dir))?;
    // The object tree is large and no longer needed; a failed build keeps
    // it so that a retry continues where it stopped.
    let _ = fs::remove_dir_all(&obj);
    progress(&format!(
        "kernel: built {release} in {}s",
        started.elapsed().as_secs()
    ));
    let mut b = load_built(&built_dir, &key)?.ok_or(KbuildError::NoImage(built_dir.clone()))?;
    b.cached = false;
    Ok(b)
}

/// Steps 1 and 2 of a build in `obj`: the base config, the fragments
/// merged onto it, `olddefconfig`. Returns the .config and the fragment
/// options that did not end up as requested.
fn configure(
    runner: &mut Runner,
    tree: &Path,
    obj: &Path,
    req: &Request,
    fragments: Vec<Options>,
    progress: &mut dyn FnMut(&str),
) -> Result<(PathBuf, Vec<String>), KbuildError> {
    let base = req.base.target();
    progress(&format!("kernel: [1/4] make {base}"));
    runner.make("base config", &[base])?;

    progress(&format!(
        "kernel: [2/4] merge {} config fragment(s), make olddefconfig",
        req.fragments.len()
    ));
    let mut merge = Command::new(tree.join("scripts/kconfig/merge_config.sh"));
    merge.current_dir(tree).arg("-m").arg("-O").arg(obj);
    merge.arg(obj.join(".config"));
    for f in req.fragments {
        merge.arg(f.canonicalize().map_err(|source| KbuildError::Fragment {
            path: f.clone(),
            source,
        })?);
    }
    runner.run("merge_config.sh", &mut merge)?;
    runner.make("olddefconfig", &["olddefconfig"])?;
    let wanted = fragments.into_iter().fold(Options::new(), |mut acc, f| {
        acc.extend(f);
        acc
    });
    let config_path = obj.join(".config");
    let got = parse_config(
        &fs::read_to_string(&config_path).map_err(io_err(&config_path))?,
        &config_path,
    )?;
    let missing = not_applied(&wanted, &got);
    for m in &missing {
        progress(&format!("kernel: warning: {m}"));
    }
    Ok((config_path, missing))
}

/// Merges the fragments onto the base config in a scratch object tree,
/// without compiling, and returns the options that did not end up as
/// requested (`cairn kernel check`: seconds instead of a build).
pub fn check(req: &Request, progress: &mut dyn FnMut(&str)) -> Result<Vec<String>, KbuildError> {
    let (key, source_id, fragments) = cache_key(req)?;
    let kernels = req.cache.join("kernels");
    fs::create_dir_all(&kernels).map_err(io_err(&kernels))?;
    // Unpacking the source tree is shared with builds.
    let _lock = Lock::exclusive(&kernels.join("kbuild.lock"), progress)?;
    progress(&format!("kernel: checking the config of {source_id}"));
    let tree = source_tree(req.source, &kernels, progress)?;
    let obj = kernels.join("obj").join(format!("{key}-check"));
    let _ = fs::remove_dir_all(&obj);
    fs::create_dir_all(&obj).map_err(io_err(&obj))?;
    let log = obj.join("cairn-build.log");
    let mut runner = Runner::new(&tree, &obj, &log)?;
    let (_, missing) = configure(&mut runner, &tree, &obj, req, fragments, progress)?;
    let _ = fs::remove_dir_all(&obj);
    Ok(missing)
}

/// The kernel tree: `source` itself, or the tarball unpacked (once) into
/// `kernels/src/SRCKEY/`.
fn source_tree(
    source: &Path,
    kernels: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, KbuildError> {
    let (canon, id) = source_identity(source)?;
    if !is_tarball(&canon) {
        return Ok(canon);
    }
    let src_root = kernels.join("src");
    let dir = src_root.join(&sha256_hex(id.as_bytes())[..32]);
    if !dir.is_dir() {
        progress(&format!("kernel: unpacking {}", canon.display()));
        fs::create_dir_all(&src_root).map_err(io_err(&src_root))?;
        let tmp = src_root.join(format!(".unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let out = Command::new("tar")
            .arg("-xf")
            .arg(&canon)
            .arg("-C")
            .arg(&tmp)
            .output()
            .map_err(|source| KbuildError::Spawn {
                program: "tar".into(),
                source,
            })?;
        if !out.status.success() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(KbuildError::Step {
                step: format!("tar -xf {}", canon.display()),
                status: out.status.to_string(),
                log: canon,
                tail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    }
    // The tarball holds one top-level directory (linux-source-6.1/).
    let entries: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    match entries.as_slice() {
        [one] if one.join("Makefile").is_file() => Ok(one.clone()),
        _ if dir.join("Makefile").is_file() => Ok(dir),
        _ => Err(KbuildError::BadTarball { tarball: canon }),
    }
}

/// Runs the build's commands with a fixed environment, output to the log.
struct Runner {
    tree: PathBuf,
    obj: PathBuf,
    log: PathBuf,
    last_output: String,
}

impl Runner {
    fn new(tree: &Path, obj: &Path, log: &Path) -> Result<Runner, KbuildError> {
        fs::write(log, b"").map_err(io_err(log))?;
        Ok(Runner {
            tree: tree.to_path_buf(),
            obj: obj.to_path_buf(),
            log: log.to_path_buf(),
            last_output: String::new(),
        })
    }

    fn make_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("make");
        c.current_dir(&self.tree)
            .arg(format!("O={}", self.obj.display()))
            .arg("ARCH=x86_64")
            .args(args);
        c
    }

    fn prepare(&self, c: &mut Command) {
        // A fixed environment: reproducible and independent of a caller's
        // make (cargo's jobserver) or locale.
        for v in [
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
            "MAKEOVERRIDES",
            "KCONFIG_CONFIG",
        ] {
            c.env_remove(v);
        }
        c.env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("KBUILD_BUILD_TIMESTAMP", BUILD_TIMESTAMP)
            .env("KBUILD_BUILD_USER", BUILD_USER)
            .env("KBUILD_BUILD_HOST", BUILD_USER)
            .env("KBUILD_BUILD_VERSION", BUILD_VERSION)
            .stdin(Stdio::null());
    }

    fn log_file(&self) -> Result<fs::File, KbuildError> {
        fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(io_err(&self.log))
    }

    fn make(&mut self, step: &str, args: &[&str]) -> Result<(), KbuildError> {
        let mut c = self.make_cmd(args);
        self.run(step, &mut c)
    }

    /// Runs `c`, stderr to the log, stdout captured (and logged).
    fn run(&mut self, step: &str, c: &mut Command) -> Result<(), KbuildError> {
        self.prepare(c);
        let log = self.log_file()?;
        c.stderr(log).stdout(Stdio::piped());
        let program = c.get_program().to_string_lossy().into_owned();
        let out = c
            .output()
            .map_err(|source| KbuildError::Spawn { program, source })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        {
            use std::io::Write;
            let mut log = self.log_file()?;
            let _ = log.write_all(stdout.as_bytes());
        }
        self.last_output = stdout;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failed(step, &out.status.to_string()))
        }
    }

    /// Runs make with all output to the log, calling `tick` with the
    /// number of compiled objects every `every`.
    fn make_watching(
        &mut self,
        step: &str,
        every: Duration,
        args: &[&str],
        tick: &mut dyn FnMut(usize),
    ) -> Result<(), KbuildError> {
        let mut c = self.make_cmd(args);
        self.prepare(&mut c);
        c.stdout(self.log_file()?).stderr(self.log_file()?);
        let mut child = c.spawn().map_err(|source| KbuildError::Spawn {
            program: "make".into(),
            source,
        })?;
        let mut last = Instant::now();
        let status = loop {
            match child.try_wait().map_err(io_err(&self.log))? {
                Some(status) => break status,
                None => {
                    std::thread::sleep(Duration::from_millis(250));
                    if last.elapsed() >= every {
                        last = Instant::now();
                        tick(self.compiled());
                    }
                }
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(self.failed(step, &status.to_string()))
        }
    }

    fn compiled(&self) -> usize {
        fs::File::open(&self.log)
            .map(|f| {
                BufReader::new(f)
                    .lines()
                    .map_while(Result::ok)
                    .filter(|l| l.starts_with("  CC ") || l.starts_with("  AS "))
                    .count()
            })
            .unwrap_or(0)
    }

    fn failed(&self, step: &str, status: &str) -> KbuildError {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
        KbuildError::Step {
            step: step.to_string(),
            status: status.to_string(),
            log: self.log.clone(),
            tail,
        }
    }
}

/// An exclusive `flock` held until dropped.
struct Lock {
    _file: fs::File,
}

impl Lock {
    fn exclusive(path: &Path, progress: &mut dyn FnMut(&str)) -> Result<Lock, KbuildError> {
        use rustix::fs::{flock, FlockOperation};
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            progress(&format!(
                "kernel: waiting for another kernel build (lock {})",
                path.display()
            ));
            flock(&file, FlockOperation::LockExclusive)
                .map_err(|e| io_err(path)(std::io::Error::from(e)))?;
        }
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fragments() {
        let text = "# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S=\"x y\"\nCONFIG_N=0x10\nCONFIG_A=n\n";
        let o = parse_config(text, Path::new("f")).unwrap();
        assert_eq!(o["CONFIG_A"].as_deref(), Some("n"));
        assert_eq!(o["CONFIG_B"], None);
        assert_eq!(o["CONFIG_S"].as_deref(), Some("\"x y\""));
        assert_eq!(o["CONFIG_N"].as_deref(), Some("0x10"));
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn rejects_bad_fragment_lines_with_their_line() {
        let e = parse_config("CONFIG_A=y\nVIRTIO=y\n", Path::new("k/tiny.config")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config fragment k/tiny.config:2: expected `CONFIG_X=value` or `# CONFIG_X is not set`, found \"VIRTIO=y\""
        );
        assert!(parse_config("CONFIG_A=\n", Path::new("f")).is_err());
    }

    #[test]
    fn reports_options_that_did_not_stick() {
        let want = parse_config(
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_E=\"s\"\n",
            Path::new("f"),
        )
        .unwrap();
        let got = parse_config(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_E=\"t\"\n",
            Path::new(".config"),
        )
        .unwrap();
        assert_eq!(
            not_applied(&want, &got),
            [
                "CONFIG_B=y (requested), got is not set",
                "CONFIG_C is not set (requested), got =y",
                "CONFIG_E=\"s\" (requested), got =\"t\"",
            ]
        );
    }

    #[test]
    fn key_depends_on_fragments_base_and_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("linux.tar");
        fs::write(&src, b"not really a tarball").unwrap();
        let f1 = dir.path().join("a.config");
        fs::write(&f1, "CONFIG_A=y\n").unwrap();
        let frags = [f1.clone()];
        let req = Request {
            source: &src,
            base: Base::Tinyconfig,
            fragments: &frags,
            cache: dir.path(),
        };
        let k1 = cache_key(&req).unwrap().0;
        assert_eq!(cache_key(&req).unwrap().0, k1, "stable");
        let k2 = cache_key(&Request {
            base: Base::Defconfig,
            ..req.clone()
        })
        .unwrap()
        .0;
        assert_ne!(k1, k2);
        fs::write(&f1, "CONFIG_A=n\n").unwrap();
        let k3 = cache_key(&req).unwrap().0;
        assert_ne!(k1, k3);
        fs::write(&src, b"another tarball, longer").unwrap();
        assert_ne!(cache_key(&req).unwrap().0, k3);
        // No cached build yet.
        assert_eq!(cached(&req).unwrap(), None);
        // Missing inputs are named.
        let gone = dir.path().join("gone.config");
        let e = cache_key(&Request {
            fragments: std::slice::from_ref(&gone),
            ..req.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("gone.config"), "{e}");
        let e = cache_key(&Request {
            source: &dir.path().join("nope"),
            ..req
        })
        .unwrap_err();
        assert!(matches!(e, KbuildError::NoSource(_)), "{e}");
    }

    #[test]
    fn a_tree_without_makefile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = source_identity(dir.path()).unwrap_err();
        assert!(matches!(e, KbuildError::NotASource { .. }), "{e}");
    }

    /// A failing make step is named and its log tail shown: a tree whose
    /// Makefile fails.
    #[test]
    fn failing_step_is_named_with_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("linux");
        fs::create_dir_all(&tree).unwrap();
        fs::write(
            tree.join("Makefile"),
            "tinyconfig:\n\t@echo 'scripts/kconfig: something broke' >&2; exit 2\n",
        )
        .unwrap();
        let cache = dir.path().join("cache");
        let req = Request {
            source: &tree,
            base: Base::Tinyconfig,
            fragments: &[],
            cache: &cache,
        };
        let mut lines = Vec::new();
        let e = build(&req, &mut |l| lines.push(l.to_string())).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("kernel build step `base config` failed"),
            "{msg}"
        );
        assert!(msg.contains("something broke"), "{msg}");
        assert!(lines.iter().any(|l| l.contains("[1/4] make tinyconfig")));
    }

    /// `check` runs the base config, the merge and olddefconfig (here a
    /// fake tree whose olddefconfig drops CONFIG_C, as a missing dependency
    /// would), reports what did not stick, compiles nothing and leaves no
    /// object tree behind.
    #[test]
    fn check_reports_options_that_did_not_stick_without_compiling() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("linux");
        fs::create_dir_all(tree.join("scripts/kconfig")).unwrap();
        fs::write(
            tree.join("Makefile"),
            "tinyconfig:\n\t@printf 'CONFIG_A=y\\n' > $(O)/.config\n\
             olddefconfig:\n\t@sed -i '/CONFIG_C=y/d' $(O)/.config\n\
             bzImage:\n\t@echo compiled > $(O)/compiled\n",
        )
        .unwrap();
        let merge = tree.join("scripts/kconfig/merge_config.sh");
        // merge_config.sh -m -O OBJ BASE FRAGMENT...
        fs::write(
            &merge,
            "#!/bin/sh\nshift 3\nbase=$1\nshift\ncat \"$@\" >> \"$base\"\n",
        )
        .unwrap();
        fs::set_permissions(&merge, fs::Permissions::from_mode(0o755)).unwrap();
        let frag = dir.path().join("f.config");
        fs::write(&frag, "CONFIG_B=y\nCONFIG_C=y\n").unwrap();
        let cache = dir.path().join("cache");
        let frags = [frag];
        let req = Request {
            source: &tree,
            base: Base::Tinyconfig,
            fragments: &frags,
            cache: &cache,
        };
        let mut lines = Vec::new();
        let missing = check(&req, &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(missing, ["CONFIG_C=y (requested), got is not set"]);
        assert!(lines.iter().any(|l| l.contains("[2/4] merge 1 config")));
        assert!(!lines.iter().any(|l| l.contains("[3/4]")), "{lines:?}");
        // Nothing compiled, nothing cached, no object tree left.
        let obj = cache.join("kernels/obj");
        assert_eq!(fs::read_dir(&obj).unwrap().count(), 0);
        assert!(
            !cache.join("kernels/built").exists()
                || fs::read_dir(cache.join("kernels/built")).unwrap().count() == 0
        );
    }
}

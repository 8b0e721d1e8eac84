//! Kernel module dependency closure, computed without depmod.
//!
//! Debian's kernel packages ship no `modules.dep` (depmod writes it at install
//! time), so dependencies come from each module's ELF `.modinfo` section,
//! whose `depends=` field lists the modules it needs. [`ModuleIndex::load`]
//! only walks `MODULES_DIR/kernel/**` for `*.ko`, `*.ko.xz` and `*.ko.zst`
//! and reads `modules.builtin`; `.modinfo` is read lazily, for the modules a
//! closure actually visits.
//!
//! Module names are file stems with `-` replaced by `_` (as the kernel does);
//! names given by the user are normalized the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Errors from indexing modules or computing a closure.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a kernel module directory: expected a kernel/ subdirectory")]
    NotModulesDir { path: PathBuf },
    #[error("unknown kernel module {name:?}{}", suggest(.suggestions))]
    Unknown {
        name: String,
        suggestions: Vec<String>,
    },
    #[error(
        "module {module:?} depends on {dependency:?}, which is neither a module file nor built in"
    )]
    MissingDependency { module: String, dependency: String },
    #[error("module dependency cycle: {}", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("{path}: not a valid kernel module: {reason}")]
    BadModule { path: PathBuf, reason: String },
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", s.join(", "))
    }
}

/// One module selected by [`ModuleIndex::closure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    /// Module name, `_` form (e.g. `virtio_net`).
    pub name: String,
    /// Path relative to the modules directory as stored in the image, always
    /// the uncompressed `.ko` name (e.g. `kernel/drivers/net/virtio_net.ko`).
    pub rel_path: String,
    /// The file on the host (possibly `.ko.xz` / `.ko.zst`).
    pub host_path: PathBuf,
    /// Direct dependencies from `.modinfo`, in their order there, without
    /// the built-in ones.
    pub depends: Vec<String>,
}

#[derive(Debug, Clone)]
struct ModFile {
    rel_path: String,
    host_path: PathBuf,
    /// Known dependencies (synthetic indexes); `None` = read `.modinfo`.
    depends: Option<Vec<String>>,
}

/// Modules available for one kernel version.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    version: String,
    modules: BTreeMap<String, ModFile>,
    builtin: BTreeSet<String>,
}

/// Normalizes a module name: `-` becomes `_`.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name and in-image relative path for a module file name, or `None`
/// if the file is not a module.
fn module_file_name(file: &str) -> Option<(String, &str)> {
    for ext in [".ko", ".ko.xz", ".ko.zst"] {
        if let Some(stem) = file.strip_suffix(ext) {
            if !stem.is_empty() {
                return Some((normalize_name(stem), ext));
            }
        }
    }
    None
}

impl ModuleIndex {
    /// Indexes `modules_dir` (a `/lib/modules/VERSION` directory).
    pub fn load(modules_dir: &Path) -> Result<Self, KmodError> {
        let kernel_dir = modules_dir.join("kernel");
        if !kernel_dir.is_dir() {
            return Err(KmodError::NotModulesDir {
                path: modules_dir.to_path_buf(),
            });
        }
        let version = modules_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = Vec::new();
        walk(&kernel_dir, "kernel", &mut files)?;
        files.sort();
        let mut modules = BTreeMap::new();
        for (rel, host) in files {
            let file = rel.rsplit('/').next().unwrap_or(&rel);
            let Some((name, ext)) = module_file_name(file) else {
                continue;
            };
            let rel_path = format!("{}.ko", &rel[..rel.len() - ext.len()]);
            // Sorted walk: the first path wins if a name appears twice.
            modules.entry(name).or_insert(ModFile {
                rel_path,
                host_path: host,
                depends: None,
            });
        }
        let builtin_path = modules_dir.join("modules.builtin");
        let builtin = match fs::read_to_string(&builtin_path) {
            Ok(text) => parse_builtin(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => {
                return Err(KmodError::Io {
                    path: builtin_path,
                    source,
                })
            }
        };
        Ok(ModuleIndex {
            version,
            modules,
            builtin,
        })
    }

    /// An index from known data (tests, or callers with their own metadata):
    /// `(name, rel_path, depends)` triples; host paths are `rel_path` itself.
    pub fn from_parts(version: &str, modules: &[(&str, &str, &[&str])], builtin: &[&str]) -> Self {
        ModuleIndex {
            version: version.to_string(),
            modules: modules
                .iter()
                .map(|(name, rel, deps)| {
                    (
                        normalize_name(name),
                        ModFile {
                            rel_path: rel.to_string(),
                            host_path: PathBuf::from(rel),
                            depends: Some(deps.iter().map(|d| normalize_name(d)).collect()),
                        },
                    )
                })
                .collect(),
            builtin: builtin.iter().map(|b| normalize_name(b)).collect(),
        }
    }

    /// The kernel version (the modules directory's name).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether `name` is built into the kernel (per `modules.builtin`).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_name(name))
    }

    /// Whether a module file named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&normalize_name(name))
    }

    fn depends_of(m: &ModFile) -> Result<Vec<String>, KmodError> {
        match &m.depends {
            Some(d) => Ok(d.clone()),
            None => {
                let bytes = read_module(&m.host_path)?;
                let section = modinfo_section(&bytes, &m.host_path)?;
                Ok(parse_modinfo_depends(section))
            }
        }
    }

    /// The requested modules plus their transitive dependencies, each after
    /// all of its dependencies (DFS post-order following the request order
    /// and each module's `depends=` order). Built-in modules are skipped.
    pub fn closure(&self, names: &[&str]) -> Result<Vec<ModuleRef>, KmodError> {
        let mut done: HashMap<String, usize> = HashMap::new();
        let mut out: Vec<ModuleRef> = Vec::new();
        for requested in names {
            let name = normalize_name(requested);
            if self.is_builtin(&name) || done.contains_key(&name) {
                continue;
            }
            if !self.modules.contains_key(&name) {
                return Err(KmodError::Unknown {
                    suggestions: self.suggestions(&name),
                    name: requested.to_string(),
                });
            }
            self.visit(&name, &mut Vec::new(), &mut done, &mut out)?;
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        stack: &mut Vec<String>,
        done: &mut HashMap<String, usize>,
        out: &mut Vec<ModuleRef>,
    ) -> Result<(), KmodError> {
        if done.contains_key(name) {
            return Ok(());
        }
        if let Some(pos) = stack.iter().position(|s| s == name) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(name.to_string());
            return Err(KmodError::Cycle { cycle });
        }
        let m = &self.modules[name];
        let mut depends = Vec::new();
        stack.push(name.to_string());
        for dep in Self::depends_of(m)? {
            let dep = normalize_name(&dep);
            if self.builtin.contains(&dep) && !self.modules.contains_key(&dep) {
                continue;
            }
            if !self.modules.contains_key(&dep) {
                return Err(KmodError::MissingDependency {
                    module: name.to_string(),
                    dependency: dep,
                });
            }
            self.visit(&dep, stack, done, out)?;
            depends.push(dep);
        }
        stack.pop();
        done.insert(name.to_string(), out.len());
        out.push(ModuleRef {
            name: name.to_string(),
            rel_path: m.rel_path.clone(),
            host_path: m.host_path.clone(),
            depends,
        });
        Ok(())
    }

    /// Up to five known names close to `name` (edit distance, substrings).
    fn suggestions(&self, name: &str) -> Vec<String> {
        let limit = (name.len() / 3).max(2);
        let mut scored: Vec<(usize, &String)> = self
            .modules
            .keys()
            .chain(self.builtin.iter())
            .filter_map(|k| {
                let d = edit_distance(name, k);
                if d <= limit {
                    Some((d, k))
                } else if name.len() >= 4 && k.contains(name) {
                    Some((limit + 1, k))
                } else {
                    None
                }
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored.into_iter().take(5).map(|(_, k)| k.clone()).collect()
    }
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), KmodError> {
    let io = |source| KmodError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let ty = entry.file_type().map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_child = format!("{rel}/{name}");
        if ty.is_dir() {
            walk(&entry.path(), &rel_child, out)?;
        } else if ty.is_file() {
            out.push((rel_child, entry.path()));
        }
    }
    Ok(())
}

/// Names from a `modules.builtin` text (one `kernel/.../name.ko` a line).
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let file = l.trim().rsplit('/').next()?;
            module_file_name(file).map(|(n, _)| n)
        })
        .collect()
}

/// The `depends=` list of a `.modinfo` section (NUL-separated `key=value`
/// strings). Empty if the field is absent or empty.
pub fn parse_modinfo_depends(section: &[u8]) -> Vec<String> {
    section
        .split(|b| *b == 0)
        .filter_map(|s| s.strip_prefix(b"depends="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(normalize_name)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Levenshtein distance between two ASCII-ish strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn read_module(path: &Path) -> Result<Vec<u8>, KmodError> {
    let raw = fs::read(path).map_err(|source| KmodError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.to_string_lossy();
    if name.ends_with(".ko.xz") || name.ends_with(".ko.zst") {
        crate::compress::decompress_auto(&raw)
            .map(|(_, d)| d)
            .map_err(|e| KmodError::BadModule {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    } else {
        Ok(raw)
    }
}

fn modinfo_section<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8], KmodError> {
    let bad = |reason: String| KmodError::BadModule {
        path: path.to_path_buf(),
        reason,
    };
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| bad(format!("ELF parse error: {e}")))?;
    for sh in &elf.section_headers {
        if elf.shdr_strtab.get_at(sh.sh_name) == Some(".modinfo") {
            let start = usize::try_from(sh.sh_offset).map_err(|_| bad("bad offset".into()))?;
            let len = usize::try_from(sh.sh_size).map_err(|_| bad("bad size".into()))?;
            return start
                .checked_add(len)
                .and_then(|end| bytes.get(start..end))
                .ok_or_else(|| {
                    bad(format!(
                        ".modinfo section ({len} bytes at offset {start}) lies outside the file"
                    ))
                });
        }
    }
    Err(bad("no .modinfo section".into()))
}

/// The uncompressed module file (what `finit_module` is given).
pub fn load_bytes(m: &ModuleRef) -> Result<Vec<u8>, KmodError> {
    read_module(&m.host_path)
}

/// `modules.dep` text (depmod's format) for a selected set: one line per
/// module, `rel_path: dep dep ...`, listing all transitive dependencies within
/// the set such that each module comes before its own dependencies (the
/// right-most one is loaded first). Lines follow the order of `mods`.
pub fn modules_dep(mods: &[ModuleRef]) -> String {
    let by_name: HashMap<&str, &ModuleRef> = mods.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut text = String::new();
    for m in mods {
        // Post-order (deps first), then reversed: dependents before deps.
        let mut order: Vec<&str> = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        seen.insert(m.name.as_str());
        post_order(m, &by_name, &mut seen, &mut order);
        let deps: Vec<&str> = order
            .iter()
            .rev()
            .map(|n| by_name[n].rel_path.as_str())
            .collect();
        let _ = write!(text, "{}:", m.rel_path);
        for d in deps {
            let _ = write!(text, " {d}");
        }
        text.push('\n');
    }
    text
}

fn post_order<'a>(
    m: &'a ModuleRef,
    by_name: &HashMap<&str, &'a ModuleRef>,
    seen: &mut BTreeSet<&'a str>,
    order: &mut Vec<&'a str>,
) {
    for dep in &m.depends {
        if let Some(d) = by_name.get(dep.as_str()) {
            if seen.insert(d.name.as_str()) {
                post_order(d, by_name, seen, order);
                order.push(d.name.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[ModuleRef]) -> Vec<&str> {
        v.iter().map(|m| m.name.as_str()).collect()
    }

    fn index() -> ModuleIndex {
        ModuleIndex::from_parts(
            "6.1.0-test",
            &[
                (
                    "virtio_net",
                    "kernel/drivers/net/virtio_net.ko",
                    &["virtio_ring", "virtio", "net_failover"],
                ),
                (
                    "net_failover",
                    "kernel/drivers/net/net_failover.ko",
                    &["failover"],
                ),
                ("failover", "kernel/net/core/failover.ko", &[]),
                (
                    "virtio",
                    "kernel/drivers/virtio/virtio.ko",
                    &["virtio_ring"],
                ),
                ("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko", &[]),
                (
                    "virtio_blk",
                    "kernel/drivers/block/virtio_blk.ko",
                    &["virtio", "crc32c"],
                ),
                (
                    "virtio-rng",
                    "kernel/drivers/char/hw_random/virtio-rng.ko",
                    &["virtio"],
                ),
                ("a", "a.ko", &["b"]),
                ("b", "b.ko", &["c"]),
                ("c", "c.ko", &["a"]),
                ("broken", "broken.ko", &["nowhere"]),
            ],
            &["crc32c", "ext4"],
        )
    }

    #[test]
    fn parses_modinfo_depends() {
        let sec = b"license=GPL\0depends=virtio_ring,virtio,net_failover\0name=virtio_net\0\0\0";
        assert_eq!(
            parse_modinfo_depends(sec),
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert!(parse_modinfo_depends(b"depends=\0name=failover\0").is_empty());
        assert!(parse_modinfo_depends(b"").is_empty());
        assert_eq!(parse_modinfo_depends(b"depends=a-b\0"), ["a_b"]);
    }

    #[test]
    fn parses_builtin() {
        let b = parse_builtin("kernel/fs/ext4/ext4.ko\nkernel/x/amd-uncore.ko\n\n");
        assert_eq!(b.into_iter().collect::<Vec<_>>(), ["amd_uncore", "ext4"]);
    }

    #[test]
    fn closure_is_post_order_and_skips_builtins() {
        let idx = index();
        let c = idx.closure(&["virtio_net"]).unwrap();
        assert_eq!(
            names(&c),
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(c[4].depends, ["virtio_ring", "virtio", "net_failover"]);
        // Second request shares deps; builtin crc32c and ext4 are skipped.
        let c = idx
            .closure(&["virtio_blk", "ext4", "virtio-rng", "virtio_net"])
            .unwrap();
        assert_eq!(
            names(&c),
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "virtio_rng",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        assert_eq!(c[2].depends, ["virtio"]);
        assert!(idx.is_builtin("crc32c") && !idx.is_builtin("virtio"));
        assert_eq!(idx.version(), "6.1.0-test");
    }

    #[test]
    fn closure_errors() {
        let idx = index();
        match idx.closure(&["virtio_nte"]) {
            Err(KmodError::Unknown { name, suggestions }) => {
                assert_eq!(name, "virtio_nte");
                assert_eq!(suggestions[0], "virtio_net");
            }
            other => panic!("{other:?}"),
        }
        match idx.closure(&["a"]) {
            Err(KmodError::Cycle { cycle }) => assert_eq!(cycle, ["a", "b", "c", "a"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            idx.closure(&["broken"]),
            Err(KmodError::MissingDependency { .. })
        ));
    }

    #[test]
    fn modules_dep_lists_dependents_before_dependencies() {
        let idx = index();
        let c = idx.closure(&["virtio_net"]).unwrap();
        let text = modules_dep(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "kernel/drivers/virtio/virtio_ring.ko:");
        assert_eq!(
            lines[1],
            "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko"
        );
        // Same as depmod's line for this module on Debian 6.1.
        assert_eq!(
            lines[4],
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko \
             kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko \
             kernel/drivers/virtio/virtio_ring.ko"
        );
    }

    #[test]
    fn load_walks_a_directory_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("6.1.0-x");
        fs::create_dir_all(dir.join("kernel/drivers/net")).unwrap();
        fs::write(dir.join("kernel/drivers/net/virtio_net.ko"), b"x").unwrap();
        fs::write(dir.join("kernel/drivers/net/foo-bar.ko.xz"), b"x").unwrap();
        fs::write(dir.join("kernel/drivers/net/README"), b"x").unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let idx = ModuleIndex::load(&dir).unwrap();
        assert_eq!(idx.version(), "6.1.0-x");
        assert!(idx.contains("virtio_net") && idx.contains("foo-bar") && idx.contains("foo_bar"));
        assert!(idx.is_builtin("ext4"));
        assert_eq!(
            idx.modules["foo_bar"].rel_path,
            "kernel/drivers/net/foo-bar.ko"
        );
        // Garbage module file: error names the file.
        match idx.closure(&["virtio_net"]) {
            Err(KmodError::BadModule { path, .. }) => assert!(path.ends_with("virtio_net.ko")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ModuleIndex::load(tmp.path()),
            Err(KmodError::NotModulesDir { .. })
        ));
    }

    /// The modules directory of Debian's cloud kernel (CAIRN_NET_TESTS).
    fn debian_modules() -> Option<(String, PathBuf)> {
        let k = crate::kernel::debian_cloud_kernel_for_tests()?;
        Some((
            k.version,
            k.modules_dir.expect("a Debian kernel has modules"),
        ))
    }

    #[test]
    fn real_debian_kernel_virtio_net() {
        let Some((version, dir)) = debian_modules() else {
            return;
        };
        let idx = ModuleIndex::load(&dir).unwrap();
        assert_eq!(idx.version(), version);
        // In this kernel virtio and virtio_ring are modules, not built in.
        assert!(!idx.is_builtin("virtio") && !idx.is_builtin("virtio_ring"));
        assert!(idx.is_builtin("binfmt_script"));
        let c = idx.closure(&["virtio_net"]).unwrap();
        assert_eq!(
            names(&c),
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        let dep = modules_dep(&c);
        assert!(dep.contains(
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko \
             kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko \
             kernel/drivers/virtio/virtio_ring.ko\n"
        ));
        let bytes = load_bytes(&c[4]).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        // A name with '-' in its file name resolves via '_'.
        let rng = idx.closure(&["virtio-rng"]).unwrap();
        assert_eq!(
            rng.last().unwrap().rel_path,
            "kernel/drivers/char/hw_random/virtio-rng.ko"
        );
        match idx.closure(&["virtio_nett"]) {
            Err(KmodError::Unknown { suggestions, .. }) => {
                assert!(suggestions.contains(&"virtio_net".to_string()))
            }
            other => panic!("{other:?}"),
        }
    }
}

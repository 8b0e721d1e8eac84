//! `[[package]]`: image files taken from Debian packages fetched with apt,
//! never from the build host.
//!
//! [`resolve`] follows the named packages' `Depends:` and `Pre-Depends:`
//! (the first alternative of each group that the apt lists know as a real
//! package) to a closure, pins each to the candidate version apt has now,
//! downloads the ones not in the cache with one `apt-get download
//! NAME=VERSION ...` (apt checks them against its signed indexes) and
//! extracts each into `CACHE/debs/NAME_VERSION_ARCH/` (through a temporary
//! directory and a rename, with the tree's hash recorded beside it and
//! checked at every reuse, as for kernels). The closure is then laid out,
//! by hard links, in one temporary root: [`crate::elfdeps::closure`]
//! looks for shared libraries under that root only, so a library missing
//! from the packages is an error, never a silent copy from the host.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::kernel::{self, control_field, parse_depends, Apt, KernelError};

/// The most packages one closure may hold (a typo in a dependency chain
/// must not download the archive).
pub const MAX_PACKAGES: usize = 200;

/// Errors from resolving `[[package]]` entries.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(transparent)]
    Fetch(#[from] KernelError),
    #[error("package {package} is not in the apt lists of this machine (for {arch}); check its name, or run `apt-get update`")]
    Unknown { package: String, arch: String },
    #[error("package {package} has no Version in `apt-cache show`")]
    NoVersion { package: String },
    #[error("the dependencies of {roots} take more than {MAX_PACKAGES} packages")]
    TooMany { roots: String },
    #[error("apt-get download left no .deb for {package} {version}")]
    NotDownloaded { package: String, version: String },
    #[error("downloaded {deb} is {got}, not the {package} {version} ({arch}) that apt resolved")]
    Mismatch {
        deb: PathBuf,
        got: String,
        package: String,
        version: String,
        arch: String,
    },
    #[error("{0} is not a supported image architecture (x86_64, arm64)")]
    Arch(String),
}

/// One package of the closure, as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub version: String,
    /// Debian's name: `amd64`, or `all` for architecture-independent ones.
    pub arch: String,
    /// SHA-256 of the `.deb`, hex.
    pub deb_sha256: String,
    /// Named in the manifest (not only a dependency).
    pub named: bool,
}

impl Resolved {
    fn dir_name(&self) -> String {
        format!("{}_{}_{}", self.name, self.version, self.arch).replace([':', '/'], "_")
    }

    /// The package's extracted tree in `cache` (its `usr/share/doc` has
    /// the copyright file the SBOM reads the licence from).
    pub fn tree(&self, cache: &Path) -> PathBuf {
        cache.join("debs").join(self.dir_name())
    }
}

/// The packages' files in one root (removed when this is dropped).
#[derive(Debug)]
pub struct Sysroot {
    dir: tempfile::TempDir,
    /// In closure order: the named packages first.
    pub packages: Vec<Resolved>,
    /// Path inside the root (`/usr/sbin/dnsmasq`) -> index in `packages`.
    owners: BTreeMap<String, usize>,
}

impl Sysroot {
    /// The root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The package a path of the root (`/lib/x86_64-linux-gnu/libc.so.6`)
    /// came from.
    pub fn owner(&self, path: &str) -> Option<&Resolved> {
        self.owners.get(path).map(|&i| &self.packages[i])
    }

    /// The package `host_path` (a path under [`Sysroot::root`]) came from.
    pub fn owner_of_host_path(&self, host_path: &Path) -> Option<&Resolved> {
        let rel = host_path.strip_prefix(self.root()).ok()?;
        self.owner(&format!("/{}", rel.display()))
    }
}

/// Debian's name of an image architecture.
pub fn debian_arch(arch: &str) -> Result<&'static str, PackageError> {
    match arch {
        "x86_64" => Ok("amd64"),
        "arm64" => Ok("arm64"),
        other => Err(PackageError::Arch(other.to_string())),
    }
}

/// Resolves, fetches and lays out `names` with their dependencies for
/// image architecture `arch` (`x86_64`, `arm64`: apt for that
/// architecture, see [`Apt::for_arch`]), using `cache` (already checked by
/// [`kernel::prepare_cache_dir`]). `progress` gets one line per download.
pub fn resolve(
    names: &[&str],
    arch: &str,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Sysroot, PackageError> {
    let darch = debian_arch(arch)?;
    let apt = Apt::for_arch(darch, cache)?;
    let wanted = closure(names, darch, &|n| apt_show_many(&apt, n, darch))?;
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(kernel::io_err(&debs))?;
    let mut packages = Vec::new();
    let mut missing = Vec::new();
    for (name, version, pkg_arch) in &wanted {
        let mut r = Resolved {
            name: name.clone(),
            version: version.clone(),
            arch: pkg_arch.clone(),
            deb_sha256: String::new(),
            named: names.contains(&name.as_str()),
        };
        match cached(&debs, &r) {
            Some(sha) => r.deb_sha256 = sha,
            None => missing.push(packages.len()),
        }
        packages.push(r);
    }
    if !missing.is_empty() {
        let specs: Vec<String> = missing
            .iter()
            .map(|&i| {
                let r = &packages[i];
                format!("{}:{}={}", r.name, darch, r.version)
            })
            .collect();
        progress(&format!(
            "downloading {} Debian package(s): {}",
            specs.len(),
            specs.join(" ")
        ));
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&debs)
            .map_err(kernel::io_err(&debs))?;
        let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
        kernel::apt_download(&apt, &refs, tmp.path())?;
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        for p in kernel::sorted_entries(tmp.path()) {
            if p.extension().is_some_and(|e| e == "deb") {
                let control = kernel::dpkg_deb(&p, &["-f"])?;
                let got = control_field(&control, "Package").unwrap_or_default();
                by_name.insert(got, p);
            }
        }
        for &i in &missing {
            let r = &mut packages[i];
            let deb = by_name
                .get(&r.name)
                .ok_or_else(|| PackageError::NotDownloaded {
                    package: r.name.clone(),
                    version: r.version.clone(),
                })?;
            let control = kernel::dpkg_deb(deb, &["-f"])?;
            let field = |f: &str| control_field(&control, f).unwrap_or_default();
            let got = format!(
                "{} {} ({})",
                field("Package"),
                field("Version"),
                field("Architecture")
            );
            if field("Version") != r.version || field("Architecture") != r.arch {
                return Err(PackageError::Mismatch {
                    deb: deb.clone(),
                    got,
                    package: r.name.clone(),
                    version: r.version.clone(),
                    arch: r.arch.clone(),
                });
            }
            r.deb_sha256 = kernel::file_sha256(deb)?;
            store(&debs, r, deb, tmp.path())?;
        }
    }
    lay_out(&debs, packages)
}

/// The closure of `names`: (name, version, Debian architecture) in
/// breadth-first order, the named packages first. `show` gives the
/// `apt-cache show` stanzas of the packages it knows among those asked
/// (one call per level of the dependency graph: each call costs apt a
/// second or more to load its lists).
fn closure(
    names: &[&str],
    darch: &str,
    show: &dyn Fn(&[String]) -> BTreeMap<String, String>,
) -> Result<Vec<(String, String, String)>, PackageError> {
    let mut known: BTreeMap<String, Option<String>> = BTreeMap::new();
    let lookup = |want: Vec<String>, known: &mut BTreeMap<String, Option<String>>| {
        let new: BTreeSet<String> = want
            .into_iter()
            .filter(|n| !known.contains_key(n))
            .collect();
        let new: Vec<String> = new.into_iter().collect();
        if new.is_empty() {
            return;
        }
        let mut got = show(&new);
        for n in new {
            let stanza = got.remove(&n);
            known.insert(n, stanza);
        }
    };
    let mut out = Vec::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut level: Vec<String> = Vec::new();
    for n in names {
        if taken.insert(n.to_string()) {
            level.push(n.to_string());
        }
    }
    lookup(level.clone(), &mut known);
    while !level.is_empty() {
        let mut groups = Vec::new();
        for name in &level {
            let Some(stanza) = known.get(name).cloned().flatten() else {
                if names.contains(&name.as_str()) {
                    return Err(PackageError::Unknown {
                        package: name.clone(),
                        arch: darch.to_string(),
                    });
                }
                continue;
            };
            let version =
                control_field(&stanza, "Version").ok_or_else(|| PackageError::NoVersion {
                    package: name.clone(),
                })?;
            let arch = control_field(&stanza, "Architecture").unwrap_or_else(|| darch.to_string());
            out.push((name.clone(), version, arch));
            if out.len() > MAX_PACKAGES {
                return Err(PackageError::TooMany {
                    roots: names.join(" "),
                });
            }
            for field in ["Pre-Depends", "Depends"] {
                let value = control_field(&stanza, field).unwrap_or_default();
                groups.extend(parse_depends(&value));
            }
        }
        lookup(
            groups.iter().flatten().map(|d| d.name.clone()).collect(),
            &mut known,
        );
        let mut next = Vec::new();
        for group in groups {
            // One already taken satisfies the group; else the first
            // alternative that is a real package (a purely virtual one
            // has no stanza of its own).
            if group.iter().any(|d| taken.contains(&d.name)) {
                continue;
            }
            if let Some(d) = group
                .iter()
                .find(|d| known.get(&d.name).is_some_and(Option::is_some))
            {
                taken.insert(d.name.clone());
                next.push(d.name.clone());
            }
        }
        level = next;
    }
    Ok(out)
}

/// `apt-cache show` of `names` for Debian architecture `darch`, by
/// package name (unknown and purely virtual names are left out).
fn apt_show_many(apt: &Apt, names: &[String], darch: &str) -> BTreeMap<String, String> {
    let specs: Vec<String> = names.iter().map(|n| format!("{n}:{darch}")).collect();
    let mut out = BTreeMap::new();
    let Some(text) = kernel::apt_show(apt, &specs) else {
        return out;
    };
    for stanza in text.split("\n\n") {
        if let Some(name) = control_field(stanza, "Package") {
            out.entry(name).or_insert_with(|| stanza.to_string());
        }
    }
    out
}

/// The recorded `.deb` hash of `r` when its extracted tree is in the cache
/// and still has the hash recorded when it was extracted.
fn cached(debs: &Path, r: &Resolved) -> Option<String> {
    let dir = debs.join(r.dir_name());
    let rec = fs::read_to_string(debs.join(format!("{}.record", r.dir_name()))).ok()?;
    let field = |k: &str| {
        rec.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_string)
    };
    let (deb, tree) = (field("deb_sha256")?, field("tree_sha256")?);
    match kernel::tree_sha256(&dir) {
        Ok(t) if t == tree => Some(deb),
        Ok(_) => {
            eprintln!(
                "warning: {} changed since it was extracted; downloading {} {} again",
                dir.display(),
                r.name,
                r.version
            );
            let _ = fs::remove_dir_all(&dir);
            None
        }
        Err(_) => None,
    }
}

/// Extracts `deb` for `r` into the cache (staging in `tmp`, then a rename)
/// and writes its record.
fn store(debs: &Path, r: &Resolved, deb: &Path, tmp: &Path) -> Result<(), PackageError> {
    let staging = tmp.join(format!("x-{}", r.dir_name()));
    kernel::extract(deb, &staging)?;
    let tree = kernel::tree_sha256(&staging)?;
    let target = debs.join(r.dir_name());
    if target.exists() {
        fs::remove_dir_all(&target).map_err(kernel::io_err(&target))?;
    }
    fs::rename(&staging, &target).map_err(kernel::io_err(&target))?;
    let record = debs.join(format!("{}.record", r.dir_name()));
    let part = tmp.join("record");
    fs::write(
        &part,
        format!("deb_sha256={}\ntree_sha256={tree}\n", r.deb_sha256),
    )
    .map_err(kernel::io_err(&part))?;
    fs::rename(&part, &record).map_err(kernel::io_err(&record))?;
    Ok(())
}

/// Lays the packages' extracted trees out in one temporary root (hard
/// links, or copies across file systems); the first package to ship a
/// path keeps it.
fn lay_out(debs: &Path, packages: Vec<Resolved>) -> Result<Sysroot, PackageError> {
    let dir = tempfile::Builder::new()
        .prefix(".sysroot-")
        .tempdir_in(debs)
        .map_err(kernel::io_err(debs))?;
    let mut owners = BTreeMap::new();
    for (i, r) in packages.iter().enumerate() {
        let src = debs.join(r.dir_name());
        merge(&src, &src, dir.path(), i, &mut owners)?;
    }
    Ok(Sysroot {
        dir,
        packages,
        owners,
    })
}

fn merge(
    top: &Path,
    from: &Path,
    root: &Path,
    index: usize,
    owners: &mut BTreeMap<String, usize>,
) -> Result<(), PackageError> {
    for p in kernel::sorted_entries(from) {
        let rel = p.strip_prefix(top).unwrap_or(&p);
        let to = root.join(rel);
        let meta = fs::symlink_metadata(&p).map_err(kernel::io_err(&p))?;
        if meta.is_dir() {
            match fs::symlink_metadata(&to) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue,
                Err(_) => fs::create_dir(&to).map_err(kernel::io_err(&to))?,
            }
            merge(top, &p, root, index, owners)?;
            continue;
        }
        if fs::symlink_metadata(&to).is_ok() {
            continue;
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&p).map_err(kernel::io_err(&p))?;
            std::os::unix::fs::symlink(target, &to).map_err(kernel::io_err(&to))?;
        } else if meta.is_file() {
            if fs::hard_link(&p, &to).is_err() {
                fs::copy(&p, &to).map_err(kernel::io_err(&to))?;
            }
        } else {
            // Device nodes and FIFOs in a package are not image files.
            continue;
        }
        owners.insert(format!("/{}", rel.display()), index);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanzas() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            (
                "app",
                "Package: app\nVersion: 1.0-1\nArchitecture: amd64\nPre-Depends: libc6 (>= 2.34)\nDepends: libfoo1 | libfoo-alt, virtual-thing | real-thing, libc6\n",
            ),
            ("libc6", "Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\nDepends: libgcc-s1\n"),
            ("libgcc-s1", "Package: libgcc-s1\nVersion: 12.2.0-14\nArchitecture: amd64\nDepends: libc6 (>= 2.35)\n"),
            ("libfoo1", "Package: libfoo1\nVersion: 3:0.5-2\nArchitecture: amd64\n"),
            ("libfoo-alt", "Package: libfoo-alt\nVersion: 1\nArchitecture: amd64\n"),
            ("real-thing", "Package: real-thing\nVersion: 7\nArchitecture: all\n"),
        ])
    }

    /// What `apt-cache show` gives for `ns`, from `st`.
    fn show_from(st: &BTreeMap<&str, &str>, ns: &[String]) -> BTreeMap<String, String> {
        ns.iter()
            .filter_map(|n| Some((n.clone(), st.get(n.as_str())?.to_string())))
            .collect()
    }

    #[test]
    fn closure_takes_first_real_alternative_once_each() {
        let st = stanzas();
        let show = |ns: &[String]| show_from(&st, ns);
        let c = closure(&["app"], "amd64", &show).unwrap();
        let names: Vec<&str> = c.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["app", "libc6", "libfoo1", "real-thing", "libgcc-s1"]
        );
        assert_eq!(c[2].1, "3:0.5-2");
        assert_eq!(c[3].2, "all");
    }

    #[test]
    fn an_unknown_named_package_is_refused() {
        let st = stanzas();
        let show = |ns: &[String]| show_from(&st, ns);
        let e = closure(&["app", "nope"], "amd64", &show).unwrap_err();
        assert!(
            e.to_string()
                .contains("package nope is not in the apt lists"),
            "{e}"
        );
    }

    #[test]
    fn epochs_and_slashes_make_plain_directory_names() {
        let r = Resolved {
            name: "libfoo1".into(),
            version: "3:0.5-2".into(),
            arch: "amd64".into(),
            deb_sha256: String::new(),
            named: false,
        };
        assert_eq!(r.dir_name(), "libfoo1_3_0.5-2_amd64");
    }

    #[test]
    fn layout_keeps_the_first_owner_and_links() {
        let cache = tempfile::tempdir().unwrap();
        let debs = cache.path();
        let mk = |dir: &str, files: &[(&str, &str)]| {
            for (f, text) in files {
                let p = debs.join(dir).join(f);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, text).unwrap();
            }
        };
        mk(
            "a_1_amd64",
            &[("usr/bin/a", "A"), ("usr/share/x", "from a")],
        );
        mk(
            "b_2_amd64",
            &[("usr/lib/libb.so.1", "B"), ("usr/share/x", "from b")],
        );
        std::os::unix::fs::symlink("libb.so.1", debs.join("b_2_amd64/usr/lib/libb.so")).unwrap();
        let r = |n: &str, v: &str| Resolved {
            name: n.into(),
            version: v.into(),
            arch: "amd64".into(),
            deb_sha256: String::new(),
            named: n == "a",
        };
        let s = lay_out(debs, vec![r("a", "1"), r("b", "2")]).unwrap();
        assert_eq!(
            fs::read_to_string(s.root().join("usr/share/x")).unwrap(),
            "from a"
        );
        assert_eq!(s.owner("/usr/share/x").unwrap().name, "a");
        assert_eq!(s.owner("/usr/lib/libb.so.1").unwrap().name, "b");
        assert_eq!(
            fs::read_link(s.root().join("usr/lib/libb.so")).unwrap(),
            Path::new("libb.so.1")
        );
        assert_eq!(
            s.owner_of_host_path(&s.root().join("usr/bin/a"))
                .unwrap()
                .version,
            "1"
        );
        let root = s.root().to_path_buf();
        drop(s);
        assert!(!root.exists());
    }
}

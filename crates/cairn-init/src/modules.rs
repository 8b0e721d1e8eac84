//! Kernel module loader.
//!
//! The builder has already resolved dependencies and lists the `.ko` files
//! in load order, so this only loads each file with `finit_module(fd, "", 0)`.
//! A module that is already loaded (`EEXIST`) counts as loaded; any other
//! failure is reported with the kernel's errno text and loading goes on.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot open module {path}: {source}")]
    Open { path: PathBuf, source: Errno },
    #[error("cannot load module {path}: {source}{}", hint(*.source))]
    Load { path: PathBuf, source: Errno },
}

/// What the errno of `finit_module` usually means, for the log.
fn hint(e: Errno) -> &'static str {
    match e {
        Errno::NOEXEC => " (not a module for this kernel)",
        Errno::NOENT => " (unknown symbol: a dependency is missing or loaded later)",
        Errno::PERM => " (module loading is disabled or the module is unsigned)",
        _ => "",
    }
}

/// How one module ended up loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    New,
    AlreadyLoaded,
}

/// Loads one module file.
pub trait ModuleLoader {
    fn load(&mut self, path: &Path) -> Result<Loaded, ModuleError>;
}

/// The real loader: `open` + `finit_module`.
pub struct FinitLoader;

impl ModuleLoader for FinitLoader {
    fn load(&mut self, path: &Path) -> Result<Loaded, ModuleError> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(
            |source| ModuleError::Open {
                path: path.into(),
                source,
            },
        )?;
        match rustix::system::finit_module(&fd, c"", 0) {
            Ok(()) => Ok(Loaded::New),
            Err(Errno::EXIST) => Ok(Loaded::AlreadyLoaded),
            Err(source) => Err(ModuleError::Load {
                path: path.into(),
                source,
            }),
        }
    }
}

/// The result of loading a list of modules.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Loaded now or already loaded.
    pub ok: usize,
    pub failed: Vec<ModuleError>,
}

/// Loads `paths` in order, going on after failures. Each failure is
/// logged as it happens (so the timeline stays in order) and kept in the
/// report.
pub fn load_all(paths: &[String], loader: &mut dyn ModuleLoader) -> LoadReport {
    let mut report = LoadReport::default();
    for path in paths {
        match loader.load(Path::new(path)) {
            Ok(Loaded::New) => {
                crate::debug!("module {path} loaded");
                report.ok += 1;
            }
            Ok(Loaded::AlreadyLoaded) => {
                crate::debug!("module {path} already loaded");
                report.ok += 1;
            }
            Err(e) => {
                crate::info!("{e}");
                report.failed.push(e);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        seen: Vec<String>,
    }

    impl ModuleLoader for Fake {
        fn load(&mut self, path: &Path) -> Result<Loaded, ModuleError> {
            let p = path.to_str().unwrap().to_owned();
            self.seen.push(p.clone());
            match p.as_str() {
                "/m/dup.ko" => Ok(Loaded::AlreadyLoaded),
                "/m/bad.ko" => Err(ModuleError::Load {
                    path: path.into(),
                    source: Errno::NOEXEC,
                }),
                _ => Ok(Loaded::New),
            }
        }
    }

    #[test]
    fn loads_in_order_and_continues_after_failure() {
        let paths: Vec<String> = ["/m/a.ko", "/m/bad.ko", "/m/dup.ko", "/m/b.ko"]
            .map(String::from)
            .to_vec();
        let mut fake = Fake { seen: vec![] };
        let report = load_all(&paths, &mut fake);
        assert_eq!(fake.seen, paths);
        assert_eq!(report.ok, 3);
        assert_eq!(report.failed.len(), 1);
        let msg = report.failed[0].to_string();
        assert!(msg.contains("/m/bad.ko"), "{msg}");
        assert!(msg.contains("not a module for this kernel"), "{msg}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = FinitLoader
            .load(Path::new("/nonexistent/cairn-test.ko"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModuleError::Open { .. }));
        assert!(msg.contains("/nonexistent/cairn-test.ko"), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }
}

//! Atomic build outputs: all files of one build appear together or not at all.
//!
//! [`OutputSet::add`] writes each output to a hidden temporary file
//! `DIR/.NAME.tmp-PID` and fsyncs it; [`OutputSet::commit`] renames every
//! temporary file onto its final name and fsyncs the directory. A set that is
//! dropped without being committed (an error, a panic) removes its temporary
//! files, so earlier outputs in `DIR` stay exactly as they were.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors from writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot create output directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "invalid output file name {name:?}: expected a plain file name (no '/', not '.' or '..')"
    )]
    InvalidName { name: String },
    #[error("output {name:?} was added twice to the same build")]
    Duplicate { name: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move {from} into place as {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sync directory {path}: {source}")]
    SyncDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The outputs of one build, written to temporary files until committed.
#[derive(Debug)]
pub struct OutputSet {
    dir: PathBuf,
    /// (temporary path, final path, file name), in insertion order.
    pending: Vec<(PathBuf, PathBuf, String)>,
}

impl OutputSet {
    /// Starts a set writing into `dir`, which is created if missing.
    pub fn new(dir: &Path) -> Result<Self, OutputError> {
        fs::create_dir_all(dir).map_err(|source| OutputError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(OutputSet {
            dir: dir.to_path_buf(),
            pending: Vec::new(),
        })
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` to a temporary file for `file_name` and fsyncs it.
    /// Returns the path the file will have after [`OutputSet::commit`].
    pub fn add(&mut self, file_name: &str, bytes: &[u8]) -> Result<PathBuf, OutputError> {
        self.add_with(file_name, |path| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?;
            f.write_all(bytes)
        })
    }

    /// Like [`OutputSet::add`] for outputs too large to hold in memory or
    /// made by other programs: `write` creates the file at the temporary
    /// path it is given; the file is then fsynced.
    pub fn add_with(
        &mut self,
        file_name: &str,
        write: impl FnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<PathBuf, OutputError> {
        if file_name.is_empty()
            || file_name == "."
            || file_name == ".."
            || file_name.contains('/')
            || file_name.contains('\0')
        {
            return Err(OutputError::InvalidName {
                name: file_name.to_string(),
            });
        }
        if self.pending.iter().any(|(_, _, n)| n == file_name) {
            return Err(OutputError::Duplicate {
                name: file_name.to_string(),
            });
        }
        let tmp = self
            .dir
            .join(format!(".{file_name}.tmp-{}", std::process::id()));
        let final_path = self.dir.join(file_name);
        // Record first so that Drop cleans up a partially written file.
        self.pending
            .push((tmp.clone(), final_path.clone(), file_name.to_string()));
        let _ = fs::remove_file(&tmp);
        write(&tmp)
            .and_then(|()| OpenOptions::new().write(true).open(&tmp)?.sync_all())
            .map_err(|source| OutputError::Write { path: tmp, source })?;
        Ok(final_path)
    }

    /// Renames every output into place and fsyncs the directory. Returns the
    /// final paths in the order they were added. On error the outputs not yet
    /// renamed are removed.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, OutputError> {
        let mut done = Vec::with_capacity(self.pending.len());
        // Take the list out; on error, Drop removes whatever is left in it.
        let pending = std::mem::take(&mut self.pending);
        let mut iter = pending.into_iter();
        while let Some((tmp, final_path, name)) = iter.next() {
            if let Err(source) = fs::rename(&tmp, &final_path) {
                self.pending.push((tmp.clone(), final_path.clone(), name));
                self.pending.extend(iter);
                return Err(OutputError::Rename {
                    from: tmp,
                    to: final_path,
                    source,
                });
            }
            done.push(final_path);
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| OutputError::SyncDir {
                path: self.dir.clone(),
                source,
            })?;
        Ok(done)
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        for (tmp, _, _) in self.pending.drain(..) {
            // Best effort: the file may not exist if its write failed early.
            let _ = fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_moves_outputs_into_place() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out/nested");
        let mut set = OutputSet::new(&dir).unwrap();
        let a = set.add("web.efi", b"efi").unwrap();
        let b = set.add("web.initrd", b"initrd").unwrap();
        assert_eq!(a, dir.join("web.efi"));
        // Before commit only hidden temporary files exist.
        assert!(listing(&dir).iter().all(|(n, _)| n.starts_with('.')));
        assert!(!a.exists());
        let paths = set.commit().unwrap();
        assert_eq!(paths, vec![a.clone(), b]);
        assert_eq!(
            listing(&dir),
            vec![
                ("web.efi".to_string(), b"efi".to_vec()),
                ("web.initrd".to_string(), b"initrd".to_vec())
            ]
        );
    }

    #[test]
    fn dropped_set_leaves_directory_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("web.efi"), b"old efi").unwrap();
        fs::write(dir.join("other"), b"keep").unwrap();
        let before = listing(dir);
        {
            let mut set = OutputSet::new(dir).unwrap();
            set.add("web.efi", b"new efi").unwrap();
            set.add("web.initrd", b"new initrd").unwrap();
            assert_ne!(listing(dir), before);
        }
        assert_eq!(listing(dir), before);
    }

    #[test]
    fn rejects_bad_and_duplicate_names() {
        let tmp = tempfile::tempdir().unwrap();
        let mut set = OutputSet::new(tmp.path()).unwrap();
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                set.add(bad, b""),
                Err(OutputError::InvalidName { .. })
            ));
        }
        set.add("x", b"1").unwrap();
        assert!(matches!(
            set.add("x", b"2"),
            Err(OutputError::Duplicate { .. })
        ));
    }

    #[test]
    fn failed_commit_removes_remaining_temporaries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut set = OutputSet::new(dir).unwrap();
        set.add("a", b"a").unwrap();
        set.add("b", b"b").unwrap();
        // A non-empty directory where "b" should go makes its rename fail.
        fs::create_dir(dir.join("b")).unwrap();
        fs::write(dir.join("b/inside"), b"x").unwrap();
        assert!(matches!(set.commit(), Err(OutputError::Rename { .. })));
        let names: Vec<_> = listing_names(dir);
        assert_eq!(names, ["a", "b"]);
    }

    fn listing_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

//! Atomic build outputs: all files of one build appear together or not at all.
//!
//! [`OutputSet::add`] writes each output to a hidden temporary file
//! `DIR/.NAME.tmp-PID` and fsyncs it; [`OutputSet::commit`] renames every
//! temporary file onto its final name and fsyncs the directory. A set that is
//! dropped without being committed (an error, a panic) removes its temporary
//! files, so earlier outputs in `DIR` stay exactly as they were. A commit
//! that fails halfway puts back the outputs it had already replaced (it
//! keeps a hard link `DIR/.NAME.old-PID` to each until it is done), so a
//! directory never holds a mix of two builds.
//!
//! Builds into one directory are serialised: [`OutputSet::new`] takes an
//! exclusive `flock` on `DIR/.cairn-build.lock` and holds it until the set
//! is committed or dropped; a second build waits for it (and says so on
//! stderr). Holding the lock, it removes the temporary and backup files
//! that an interrupted build (killed before its destructor ran) left
//! behind: no live build can own them.

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
    #[error("cannot lock {path} (another build into the same directory?): {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file in an output directory.
pub const LOCK_FILE: &str = ".cairn-build.lock";

/// An exclusive lock on an output directory, released when dropped (or
/// when the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` (which must exist), waiting for another holder; `waiting`
    /// is called once if it has to wait.
    pub fn acquire(dir: &Path, waiting: impl FnOnce(&Path)) -> Result<DirLock, OutputError> {
        use rustix::fs::{flock, FlockOperation};
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(LOCK_FILE);
        let lock_err = |source: std::io::Error| OutputError::Lock {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(lock_err)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                waiting(&path);
                flock(&file, FlockOperation::LockExclusive)
                    .map_err(|e| lock_err(std::io::Error::from(e)))?;
            }
            Err(e) => return Err(lock_err(std::io::Error::from(e))),
        }
        Ok(DirLock { _file: file })
    }
}

/// Is `name` a temporary or backup file of [`OutputSet`]
/// (`.NAME.tmp-PID`, `.NAME.old-PID`)?
fn is_leftover(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    ["tmp-", "old-"].iter().any(|tag| {
        rest.rsplit_once(&format!(".{tag}"))
            .is_some_and(|(base, pid)| {
                !base.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
            })
    })
}

/// Removes what an interrupted build left in `dir`; the caller holds the
/// lock. Returns the names removed.
fn remove_leftovers(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_leftover(&name)
            && e.file_type().is_ok_and(|t| t.is_file())
            && fs::remove_file(e.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// The outputs of one build, written to temporary files until committed.
#[derive(Debug)]
pub struct OutputSet {
    dir: PathBuf,
    /// (temporary path, final path, file name), in insertion order.
    pending: Vec<(PathBuf, PathBuf, String)>,
    /// Held for the set's life; declared last so it is released after
    /// Drop has removed the temporaries.
    _lock: DirLock,
}

impl OutputSet {
    /// Starts a set writing into `dir`, which is created if missing. Takes
    /// the directory's lock, waiting (with a line on stderr) while another
    /// build holds it, then removes the leftovers of interrupted builds.
    pub fn new(dir: &Path) -> Result<Self, OutputError> {
        Self::new_with(dir, |lock| {
            eprintln!(
                "waiting for another build into {} to finish (it holds {})...",
                dir.display(),
                lock.display()
            )
        })
    }

    /// [`OutputSet::new`] with what to do when it has to wait.
    pub fn new_with(dir: &Path, waiting: impl FnOnce(&Path)) -> Result<Self, OutputError> {
        fs::create_dir_all(dir).map_err(|source| OutputError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = DirLock::acquire(dir, waiting)?;
        for name in remove_leftovers(dir) {
            eprintln!(
                "removed {} left by an interrupted build",
                dir.join(name).display()
            );
        }
        Ok(OutputSet {
            dir: dir.to_path_buf(),
            pending: Vec::new(),
            _lock: lock,
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
    /// final paths in the order they were added. On error the directory is
    /// as it was before: outputs already moved are taken back (the previous
    /// files restored) and the temporaries removed.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, OutputError> {
        // Take the list out; on error, Drop removes whatever is left in it.
        let pending = std::mem::take(&mut self.pending);
        // Keep the previous outputs reachable until every rename is done.
        let mut backups: Vec<Option<PathBuf>> = Vec::with_capacity(pending.len());
        let mut failed = None;
        for (_, final_path, name) in &pending {
            let backup = self.dir.join(format!(".{name}.old-{}", std::process::id()));
            let _ = fs::remove_file(&backup);
            match fs::hard_link(final_path, &backup) {
                Ok(()) => backups.push(Some(backup)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => backups.push(None),
                Err(source) => {
                    failed = Some(OutputError::Write {
                        path: final_path.clone(),
                        source,
                    });
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for b in backups.into_iter().flatten() {
                let _ = fs::remove_file(b);
            }
            self.pending = pending;
            return Err(e);
        }
        let mut done: Vec<PathBuf> = Vec::with_capacity(pending.len());
        let mut iter = pending.into_iter();
        while let Some((tmp, final_path, name)) = iter.next() {
            if let Err(source) = fs::rename(&tmp, &final_path) {
                // Undo: the moved outputs go, the old files come back.
                for (moved, backup) in done.iter().zip(&backups) {
                    match backup {
                        Some(b) => {
                            let _ = fs::rename(b, moved);
                        }
                        None => {
                            let _ = fs::remove_file(moved);
                        }
                    }
                }
                for b in backups.iter().skip(done.len()).flatten() {
                    let _ = fs::remove_file(b);
                }
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
        for b in backups.into_iter().flatten() {
            let _ = fs::remove_file(b);
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
            .filter(|e| e.as_ref().unwrap().file_name() != LOCK_FILE)
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
    fn failed_commit_puts_the_previous_outputs_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("a"), b"old a").unwrap();
        let mut set = OutputSet::new(dir).unwrap();
        set.add("a", b"new a").unwrap();
        set.add("new", b"new").unwrap();
        set.add("b", b"b").unwrap();
        fs::write(dir.join("b"), b"old b").unwrap();
        // "b"'s temporary vanishing makes its rename fail, after "a" and
        // "new" were moved into place.
        fs::remove_file(dir.join(format!(".b.tmp-{}", std::process::id()))).unwrap();
        assert!(matches!(set.commit(), Err(OutputError::Rename { .. })));
        // No temporaries, no backups, no output of the failed build.
        assert_eq!(
            listing(dir),
            vec![
                ("a".to_string(), b"old a".to_vec()),
                ("b".to_string(), b"old b".to_vec())
            ]
        );
    }

    #[test]
    fn a_directory_in_the_way_fails_before_anything_moves() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("a"), b"old a").unwrap();
        let mut set = OutputSet::new(dir).unwrap();
        set.add("a", b"new a").unwrap();
        set.add("b", b"b").unwrap();
        fs::create_dir(dir.join("b")).unwrap();
        fs::write(dir.join("b/inside"), b"x").unwrap();
        assert!(set.commit().is_err());
        assert_eq!(listing_names(dir), ["a", "b"]);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"old a");
        assert_eq!(fs::read(dir.join("b/inside")).unwrap(), b"x");
    }

    #[test]
    fn commit_leaves_no_backups() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("a"), b"old a").unwrap();
        let mut set = OutputSet::new(dir).unwrap();
        set.add("a", b"new a").unwrap();
        set.commit().unwrap();
        assert_eq!(listing(dir), vec![("a".to_string(), b"new a".to_vec())]);
    }

    #[test]
    fn leftover_names() {
        assert!(is_leftover(".web.efi.tmp-123"));
        assert!(is_leftover(".web.img.old-9"));
        for keep in [
            "web.efi",
            ".web.efi.tmp-",
            ".tmp-12",
            ".x.tmp-12a",
            ".cairn-build.lock",
            "a.tmp-1",
        ] {
            assert!(!is_leftover(keep), "{keep}");
        }
    }

    /// What a build killed by SIGKILL leaves (its destructor never ran) is
    /// removed by the next build; other files stay.
    #[test]
    fn the_next_build_removes_what_an_interrupted_one_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("web.efi"), b"old").unwrap();
        fs::write(dir.join(".web.efi.tmp-4242"), b"half").unwrap();
        fs::write(dir.join(".web.img.old-4242"), b"backup").unwrap();
        fs::write(dir.join(".keep"), b"user file").unwrap();
        let mut set = OutputSet::new(dir).unwrap();
        assert_eq!(listing_names(dir), [".keep", "web.efi"]);
        set.add("web.initrd", b"new").unwrap();
        set.commit().unwrap();
        assert_eq!(listing_names(dir), [".keep", "web.efi", "web.initrd"]);
    }

    /// A second set on the same directory waits until the first is done
    /// (committed or dropped), and says it waits.
    #[test]
    fn a_second_build_waits_for_the_first() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut first = OutputSet::new(&dir).unwrap();
        first.add("a", b"first").unwrap();
        let waited = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let t = {
            let (dir, waited, done) = (dir.clone(), waited.clone(), done.clone());
            std::thread::spawn(move || {
                // flock locks belong to the open file description: a second
                // open in the same process contends like another process.
                let mut second =
                    OutputSet::new_with(&dir, |_| waited.store(true, Ordering::SeqCst)).unwrap();
                done.store(true, Ordering::SeqCst);
                second.add("a", b"second").unwrap();
                second.commit().unwrap();
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            waited.load(Ordering::SeqCst),
            "the second build did not wait"
        );
        assert!(
            !done.load(Ordering::SeqCst),
            "the second build did not block"
        );
        first.commit().unwrap();
        t.join().unwrap();
        assert_eq!(listing(&dir), vec![("a".to_string(), b"second".to_vec())]);
    }

    fn listing_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != LOCK_FILE)
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

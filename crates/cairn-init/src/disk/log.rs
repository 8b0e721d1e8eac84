//! The disk log sink: log lines appended to `DIR/cairn.log`, rotated by
//! size to `cairn.log.1` (one old file is kept).
//!
//! API for the in-memory log: [`DiskLog::open`] once the log directory's
//! filesystem is mounted, then [`DiskLog::write_line`] per line. Each line
//! is written with one `write(2)` and `fdatasync`ed, so a power cut loses
//! at most the line being written. The init's own lines reach it through
//! [`install`], which hooks [`crate::log::set_sink`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File name of the current log.
pub const LOG_FILE: &str = "cairn.log";
/// Rotate when the current file would grow past this.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiskLogError {
    #[error("log directory {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct DiskLog {
    dir: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
}

impl DiskLog {
    /// Opens (creating `dir` and the file if needed) `dir/cairn.log` for
    /// appending.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<DiskLog, DiskLogError> {
        let err = |source| DiskLogError::Open {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let file = Self::open_file(dir).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(DiskLog {
            dir: dir.to_path_buf(),
            file,
            size,
            max_bytes: max_bytes.max(1024),
        })
    }

    fn open_file(dir: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))
    }

    /// Appends `line` (a newline is added if missing), rotating first when
    /// the file would pass the size limit.
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let mut bytes = line.as_bytes().to_vec();
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `cairn.log` -> `cairn.log.1` (replacing it), then a new `cairn.log`;
    /// the directory is fsynced so the rename survives a power cut.
    pub fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(
            self.dir.join(LOG_FILE),
            self.dir.join(format!("{LOG_FILE}.1")),
        )?;
        self.file = Self::open_file(&self.dir)?;
        File::open(&self.dir)?.sync_all()?;
        self.size = 0;
        Ok(())
    }
}

static SINK: Mutex<Option<DiskLog>> = Mutex::new(None);

/// Sends every later init log line to `log` as well.
pub fn install(log: DiskLog) {
    if let Ok(mut s) = SINK.lock() {
        *s = Some(log);
    }
    crate::log::set_sink(write_global);
}

fn write_global(line: &str) {
    // try_lock: a line logged while the sink itself is failing must not
    // deadlock.
    if let Ok(mut s) = SINK.try_lock() {
        if let Some(l) = s.as_mut() {
            if l.write_line(line).is_err() {
                *s = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = DiskLog::open(&dir.path().join("log"), 1024).unwrap();
        for i in 0..30 {
            l.write_line(&format!("line {i:03} {}", "x".repeat(40)))
                .unwrap();
        }
        let cur = std::fs::read_to_string(dir.path().join("log/cairn.log")).unwrap();
        let old = std::fs::read_to_string(dir.path().join("log/cairn.log.1")).unwrap();
        assert!(cur.len() <= 1024 && old.len() <= 1024);
        assert!(cur.ends_with("x\n"));
        assert!(cur.contains("line 029"));
        assert!(!cur.contains("line 000"));
        // Reopening appends.
        drop(l);
        let mut l = DiskLog::open(&dir.path().join("log"), 1024).unwrap();
        l.write_line("again").unwrap();
        let cur2 = std::fs::read_to_string(dir.path().join("log/cairn.log")).unwrap();
        assert!(cur2.starts_with(&cur) || cur2 == "again\n");
    }
}

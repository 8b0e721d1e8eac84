//! Early boot: the API filesystems, the console and the hostname.
//!
//! Mounting goes through the [`Mounter`] trait so the plan (order, what is
//! tolerated, what is remembered for unmounting) is unit-tested without root;
//! [`SysMounter`] is the real implementation.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

/// Errors of early boot steps. None of them stops the boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot create mount point {path}: {source}")]
    Mkdir { path: PathBuf, source: Errno },
    #[error("cannot mount {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        source: Errno,
    },
    #[error("cannot unmount {target}: {source}")]
    Unmount { target: PathBuf, source: Errno },
    #[error("cannot open /dev/console: {source}")]
    Console { source: Errno },
    #[error("cannot set hostname to {name:?}: {source}")]
    Hostname { name: String, source: Errno },
}

/// One filesystem to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    /// Filesystem-specific options (`mount -o` data), empty for none.
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// The API filesystems every cairn system gets, in mount order (parents
/// before children).
pub const API_MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: "mode=0755",
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: "mode=0620,ptmxmode=0666",
    },
    MountSpec {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: "mode=1777",
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: "mode=0755",
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: "mode=1777",
    },
];

/// The syscalls the mount plan needs.
pub trait Mounter {
    /// Creates `path` (mode 0755); an existing directory is fine.
    fn mkdir(&mut self, path: &Path) -> Result<(), Errno>;
    /// Whether something is already mounted on `path`.
    fn is_mountpoint(&mut self, path: &Path) -> Result<bool, Errno>;
    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno>;
    /// Unmounts `path`; `lazy` detaches it even if busy (`MNT_DETACH`).
    fn unmount(&mut self, path: &Path, lazy: bool) -> Result<(), Errno>;
}

/// What happened to one entry of the plan.
#[derive(Debug)]
pub enum MountOutcome {
    /// Mounted by us; to unmount at shutdown.
    Mounted,
    /// Already mounted (by the kernel or an earlier stage); left alone.
    AlreadyMounted,
    Failed(BootError),
}

/// The filesystems we mounted, in mount order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountTable {
    pub mounted: Vec<PathBuf>,
}

/// Mounts every entry of `plan` in order. A failure is reported in the
/// outcome and the rest of the plan still runs; `EBUSY` and a target that is
/// already a mount point count as already mounted.
pub fn mount_all(
    m: &mut dyn Mounter,
    plan: &[MountSpec],
    table: &mut MountTable,
) -> Vec<(MountSpec, MountOutcome)> {
    plan.iter()
        .map(|spec| {
            let outcome = mount_one(m, spec);
            if matches!(outcome, MountOutcome::Mounted) {
                table.mounted.push(PathBuf::from(spec.target));
            }
            (*spec, outcome)
        })
        .collect()
}

fn mount_one(m: &mut dyn Mounter, spec: &MountSpec) -> MountOutcome {
    let target = Path::new(spec.target);
    if let Err(source) = m.mkdir(target) {
        return MountOutcome::Failed(BootError::Mkdir {
            path: target.into(),
            source,
        });
    }
    // Stat can fail for odd reasons; then just try the mount.
    if m.is_mountpoint(target) == Ok(true) {
        return MountOutcome::AlreadyMounted;
    }
    match m.mount(spec) {
        Ok(()) => MountOutcome::Mounted,
        Err(Errno::BUSY) => MountOutcome::AlreadyMounted,
        Err(source) => MountOutcome::Failed(BootError::Mount {
            fstype: spec.fstype,
            target: target.into(),
            source,
        }),
    }
}

/// Unmounts what `table` holds, last mounted first. A busy filesystem is
/// detached lazily. Returns the errors (already logged by nobody; the caller
/// logs them) and empties the table.
pub fn unmount_all(m: &mut dyn Mounter, table: &mut MountTable) -> Vec<BootError> {
    let mut errors = Vec::new();
    while let Some(path) = table.mounted.pop() {
        if m.unmount(&path, false).is_ok() {
            continue;
        }
        if let Err(source) = m.unmount(&path, true) {
            errors.push(BootError::Unmount {
                target: path,
                source,
            });
        }
    }
    errors
}

/// The real syscalls.
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mkdir(&mut self, path: &Path) -> Result<(), Errno> {
        match rustix::fs::mkdir(path, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn is_mountpoint(&mut self, path: &Path) -> Result<bool, Errno> {
        let here = rustix::fs::stat(path)?;
        let parent = rustix::fs::stat(path.join(".."))?;
        // A different device than the parent, or the same inode as the
        // parent (the root), means a mount point.
        Ok(here.st_dev != parent.st_dev || here.st_ino == parent.st_ino)
    }

    fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
        let data = std::ffi::CString::new(spec.data).map_err(|_| Errno::INVAL)?;
        let data = (!spec.data.is_empty()).then_some(data.as_c_str());
        rustix::mount::mount(spec.source, spec.target, spec.fstype, spec.flags, data)
    }

    fn unmount(&mut self, path: &Path, lazy: bool) -> Result<(), Errno> {
        let flags = if lazy {
            UnmountFlags::DETACH
        } else {
            UnmountFlags::empty()
        };
        rustix::mount::unmount(path, flags)
    }
}

/// Makes sure fds 0, 1 and 2 are open; if any is not, opens `/dev/console`
/// onto all three. Returns whether the console was (re)opened.
pub fn ensure_console() -> Result<bool, BootError> {
    use rustix::stdio::{stderr, stdin, stdout};
    // fds 0-2 are only borrowed for an fcntl probe that does not close or
    // change them (a closed one fails with EBADF).
    if [stdin(), stdout(), stderr()]
        .into_iter()
        .all(|fd| rustix::io::fcntl_getfd(fd).is_ok())
    {
        return Ok(false);
    }
    let console = rustix::fs::open(
        "/dev/console",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| BootError::Console { source })?;
    let dup = |r: rustix::io::Result<()>| r.map_err(|source| BootError::Console { source });
    dup(rustix::stdio::dup2_stdin(&console))?;
    dup(rustix::stdio::dup2_stdout(&console))?;
    dup(rustix::stdio::dup2_stderr(&console))?;
    Ok(true)
}

/// Sets the kernel hostname.
pub fn set_hostname(name: &str) -> Result<(), BootError> {
    rustix::system::sethostname(name.as_bytes()).map_err(|source| BootError::Hostname {
        name: name.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records calls; answers from scripted results.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        already: Vec<&'static str>,
        busy: Vec<&'static str>,
        fail: Vec<&'static str>,
        busy_unmount: Vec<PathBuf>,
    }

    impl Mounter for Fake {
        fn mkdir(&mut self, path: &Path) -> Result<(), Errno> {
            self.calls.push(format!("mkdir {}", path.display()));
            Ok(())
        }
        fn is_mountpoint(&mut self, path: &Path) -> Result<bool, Errno> {
            Ok(self.already.iter().any(|a| Path::new(a) == path))
        }
        fn mount(&mut self, spec: &MountSpec) -> Result<(), Errno> {
            self.calls
                .push(format!("mount {} {}", spec.fstype, spec.target));
            if self.busy.contains(&spec.target) {
                Err(Errno::BUSY)
            } else if self.fail.contains(&spec.target) {
                Err(Errno::NODEV)
            } else {
                Ok(())
            }
        }
        fn unmount(&mut self, path: &Path, lazy: bool) -> Result<(), Errno> {
            self.calls.push(format!(
                "umount{} {}",
                if lazy { " -l" } else { "" },
                path.display()
            ));
            if !lazy && self.busy_unmount.iter().any(|b| b == path) {
                Err(Errno::BUSY)
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn mounts_in_order_parents_first() {
        let mut fake = Fake::default();
        let mut table = MountTable::default();
        let out = mount_all(&mut fake, API_MOUNTS, &mut table);
        assert!(out.iter().all(|(_, o)| matches!(o, MountOutcome::Mounted)));
        let mounts: Vec<_> = fake
            .calls
            .iter()
            .filter(|c| c.starts_with("mount "))
            .cloned()
            .collect();
        assert_eq!(
            mounts,
            [
                "mount proc /proc",
                "mount sysfs /sys",
                "mount cgroup2 /sys/fs/cgroup",
                "mount devtmpfs /dev",
                "mount devpts /dev/pts",
                "mount tmpfs /dev/shm",
                "mount tmpfs /run",
                "mount tmpfs /tmp",
            ]
        );
        // Each mount point is created right before its mount.
        assert_eq!(fake.calls[6], "mkdir /dev");
        assert_eq!(fake.calls[7], "mount devtmpfs /dev");
        assert_eq!(table.mounted.len(), 8);
    }

    #[test]
    fn ebusy_and_existing_mounts_are_tolerated_and_not_remembered() {
        let mut fake = Fake {
            already: vec!["/dev"],
            busy: vec!["/sys"],
            fail: vec!["/dev/shm"],
            ..Fake::default()
        };
        let mut table = MountTable::default();
        let out = mount_all(&mut fake, API_MOUNTS, &mut table);
        let by_target = |t: &str| &out.iter().find(|(s, _)| s.target == t).unwrap().1;
        assert!(matches!(by_target("/sys"), MountOutcome::AlreadyMounted));
        assert!(matches!(by_target("/dev"), MountOutcome::AlreadyMounted));
        assert!(!fake.calls.contains(&"mount devtmpfs /dev".to_string()));
        match by_target("/dev/shm") {
            MountOutcome::Failed(e) => {
                let msg = e.to_string();
                assert!(msg.contains("tmpfs on /dev/shm"), "{msg}");
            }
            other => panic!("expected failure, got {other:?}"),
        }
        // The plan went on after the failure.
        assert!(matches!(by_target("/tmp"), MountOutcome::Mounted));
        assert_eq!(
            table.mounted,
            ["/proc", "/sys/fs/cgroup", "/dev/pts", "/run", "/tmp"].map(PathBuf::from)
        );
    }

    #[test]
    fn unmounts_in_reverse_and_lazily_when_busy() {
        let mut fake = Fake {
            busy_unmount: vec![PathBuf::from("/dev")],
            ..Fake::default()
        };
        let mut table = MountTable {
            mounted: ["/proc", "/dev", "/run"].map(PathBuf::from).to_vec(),
        };
        let errors = unmount_all(&mut fake, &mut table);
        assert!(errors.is_empty());
        assert!(table.mounted.is_empty());
        assert_eq!(
            fake.calls,
            [
                "umount /run",
                "umount /dev",
                "umount -l /dev",
                "umount /proc"
            ]
        );
    }

    #[test]
    fn real_mounter_sees_root_as_mountpoint() {
        let mut m = SysMounter;
        assert_eq!(m.is_mountpoint(Path::new("/")), Ok(true));
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        m.mkdir(&sub).unwrap();
        m.mkdir(&sub).unwrap(); // existing is fine
        assert_eq!(m.is_mountpoint(&sub), Ok(false));
    }
}

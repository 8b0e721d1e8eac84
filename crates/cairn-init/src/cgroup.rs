//! One cgroup v2 per service under `/sys/fs/cgroup/cairn/NAME`, with the
//! manifest's `memory_max` and `pids_max`; stopping a service kills the
//! whole cgroup (`cgroup.kill`). Used by PID 1 only, when cgroup2 is
//! mounted.

#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Where cairn's cgroups live.
pub const BASE: &str = "/sys/fs/cgroup/cairn";
const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |error| CgroupError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io(path))
}

/// Whether cgroup v2 is mounted at `/sys/fs/cgroup`.
pub fn available() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// `pids.max` of a service without `pids_max`: a fork bomb stays inside
/// its own cgroup, and PID 1 and the other services can still fork.
pub const DEFAULT_PIDS_MAX: u64 = 512;

/// The `pids.max` a service gets: its `pids_max`, or [`DEFAULT_PIDS_MAX`].
pub fn pids_max(cfg: &cairn_manifest::ServiceConfig) -> u64 {
    cfg.run.pids_max.unwrap_or(DEFAULT_PIDS_MAX)
}

/// The controllers to delegate for `services`, of those the kernel has
/// (`available`: the text of the root's `cgroup.controllers`): `pids`
/// always (every service has a `pids.max`, see [`DEFAULT_PIDS_MAX`]);
/// `cpu` always, so CPU time is shared per cgroup and not per process: a
/// service with hundreds of busy processes (a fork bomb) gets one share,
/// and PID 1, in the root cgroup, keeps about half the CPU whenever it
/// needs it; `memory` if a service sets `memory_max`. A controller
/// nobody needs is left off: turning one on makes the kernel set up its
/// state for every cgroup below, on the way to ready.
pub fn controllers(
    services: &[cairn_manifest::ServiceConfig],
    available: &str,
) -> Vec<&'static str> {
    let has = |c: &str| available.split_whitespace().any(|a| a == c);
    let mut out = Vec::new();
    if services.iter().any(|s| s.run.memory_max.is_some()) && has("memory") {
        out.push("+memory");
    }
    for (name, flag) in [("pids", "+pids"), ("cpu", "+cpu")] {
        if has(name) {
            out.push(flag);
        }
    }
    out
}

/// The controllers this kernel offers (the root's `cgroup.controllers`).
pub fn available_controllers() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default()
}

/// Creates `/sys/fs/cgroup/cairn` and delegates `controllers` (see
/// [`controllers`]) to it and its children. Errors are returned per step;
/// a missing controller only means its limits are not applied.
pub fn setup(controllers: &[&str]) -> Vec<CgroupError> {
    let mut errs = Vec::new();
    if let Err(e) = std::fs::create_dir(BASE) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            errs.push(io(Path::new(BASE))(e));
            return errs;
        }
    }
    for dir in [ROOT, BASE] {
        for c in controllers {
            if let Err(e) = write(&Path::new(dir).join("cgroup.subtree_control"), c) {
                errs.push(e);
            }
        }
    }
    errs
}

/// A service's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    /// Creates (or reuses) the cgroup of `name` and sets its limits.
    /// Returns it and an open `cgroup.procs` for the child to write `0`
    /// into between fork and exec.
    pub fn create(
        name: &str,
        memory_max: Option<u64>,
        pids_max: Option<u64>,
    ) -> Result<(Cgroup, OwnedFd), CgroupError> {
        let path = Path::new(BASE).join(name);
        if let Err(e) = std::fs::create_dir(&path) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(io(&path)(e));
            }
        }
        if let Some(m) = memory_max {
            write(&path.join("memory.max"), &m.to_string())?;
        }
        if let Some(p) = pids_max {
            write(&path.join("pids.max"), &p.to_string())?;
        }
        let procs = path.join("cgroup.procs");
        let f = OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(io(&procs))?;
        Ok((Cgroup { path }, f.into()))
    }

    /// Kills every process in the cgroup (`cgroup.kill`, Linux 5.14+;
    /// otherwise each pid in `cgroup.procs`).
    pub fn kill(&self) {
        if write(&self.path.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }

    /// Pids in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Sends `sig` to every process in the cgroup.
    pub fn signal(&self, sig: rustix::process::Signal) {
        for pid in self.pids() {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, sig);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_manifest::{RunSettings, ServiceConfig};

    fn svc(memory_max: Option<u64>, pids_max: Option<u64>) -> ServiceConfig {
        ServiceConfig {
            run: RunSettings {
                memory_max,
                pids_max,
                ..RunSettings::default()
            },
            ..ServiceConfig::new("s", &["/bin/true"])
        }
    }

    #[test]
    fn pids_and_cpu_always_memory_when_a_limit_needs_it() {
        let all = "cpuset cpu io memory hugetlb pids rdma misc\n";
        assert_eq!(controllers(&[], all), ["+pids", "+cpu"]);
        assert_eq!(controllers(&[svc(None, None)], all), ["+pids", "+cpu"]);
        assert_eq!(
            controllers(&[svc(Some(1 << 20), None)], all),
            ["+memory", "+pids", "+cpu"]
        );
        // Only what the kernel has (a tiny kernel without CGROUP_SCHED).
        assert_eq!(
            controllers(&[svc(Some(1 << 20), None)], "pids\n"),
            ["+pids"]
        );
        assert!(controllers(&[], "").is_empty());
        assert_eq!(pids_max(&svc(None, None)), DEFAULT_PIDS_MAX);
        assert_eq!(pids_max(&svc(None, Some(16))), 16);
    }
}

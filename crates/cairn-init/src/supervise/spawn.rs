//! Starting one service process: argv, environment, working directory,
//! stdin from `/dev/null`, stdout and stderr into a pipe the supervisor
//! reads line by line, its own session (so its process group is its pid),
//! its cgroup, resource limits, umask, user, groups and capabilities.
//!
//! Everything is resolved before `fork`; the code between `fork` and
//! `exec` only makes async-signal-safe system calls on prepared data.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use cairn_manifest::supervision::{capability_number, rlimit_number, UNLIMITED};
use cairn_manifest::ServiceConfig;
use rustix::process::Pid;

use crate::accounts::{AccountError, Accounts};
use crate::signals;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("service {service}: exec is empty")]
    EmptyExec { service: String },
    #[error("service {service}: {source}")]
    Account {
        service: String,
        source: AccountError,
    },
    #[error("service {service}: cannot create the output pipe: {source}")]
    Pipe {
        service: String,
        source: rustix::io::Errno,
    },
    #[error("service {service}: cannot run {program}: {source}")]
    Exec {
        service: String,
        program: String,
        source: std::io::Error,
    },
}

/// A started service process.
pub struct Spawned {
    pub pid: Pid,
    /// Read end of the stdout+stderr pipe (non-blocking).
    pub output: OwnedFd,
}

/// `PATH` for services unless their `env` sets one.
pub const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Bit mask of the capabilities named in `keep`.
pub fn capability_mask(keep: &[String]) -> u64 {
    keep.iter()
        .filter_map(|c| capability_number(c))
        .fold(0u64, |m, n| m | (1u64 << n))
}

/// Starts `cfg`. `cgroup_procs` is an open `cgroup.procs` of the service's
/// cgroup (the child moves itself there before exec).
pub fn spawn(
    cfg: &ServiceConfig,
    accounts: &Accounts,
    cgroup_procs: Option<OwnedFd>,
) -> Result<Spawned, SpawnError> {
    let service = || cfg.name.clone();
    let (program, args) = cfg
        .exec
        .split_first()
        .ok_or_else(|| SpawnError::EmptyExec { service: service() })?;
    let creds = accounts
        .resolve(
            cfg.run.user.as_deref(),
            cfg.run.group.as_deref(),
            &cfg.run.groups,
        )
        .map_err(|source| SpawnError::Account {
            service: service(),
            source,
        })?;
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|source| {
        SpawnError::Pipe {
            service: service(),
            source,
        }
    })?;
    let _ = rustix::io::ioctl_fionbio(&rd, true);
    let wr2 = wr.try_clone().map_err(|e| SpawnError::Exec {
        service: service(),
        program: program.clone(),
        source: e,
    })?;

    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", creds.home.as_deref().unwrap_or("/"))
        .envs(&cfg.env)
        .current_dir(cfg.run.workdir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::from(wr2));

    let limits: Vec<(u32, u64)> = cfg
        .run
        .limits
        .iter()
        .filter_map(|(k, v)| rlimit_number(k).map(|r| (r, *v)))
        .collect();
    let umask = cfg.run.umask;
    let keep = cfg.run.capabilities.as_deref().map(capability_mask);
    let uid = creds.uid;
    let gid = creds.gid;
    let groups: Vec<libc::gid_t> = creds.groups.clone();
    let procs = cgroup_procs;
    let switch_user =
        cfg.run.user.is_some() || cfg.run.group.is_some() || !cfg.run.groups.is_empty();

    // SAFETY: the closure runs in the child between fork and exec. It only
    // makes async-signal-safe system calls (sigprocmask, setsid, write,
    // setrlimit, umask, prctl, setgroups, setgid, setuid, capset) on data
    // prepared before fork; it does not allocate or take locks.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            signals::unblock_all()?;
            rustix::process::setsid()?;
            if let Some(fd) = &procs {
                // "0" moves the writing process itself.
                check(libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) as libc::c_int)?;
            }
            for &(res, val) in &limits {
                let v = if val == UNLIMITED {
                    libc::RLIM_INFINITY
                } else {
                    val as libc::rlim_t
                };
                let lim = libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                };
                check(libc::setrlimit(res as _, &lim))?;
            }
            if let Some(m) = umask {
                libc::umask(m as libc::mode_t);
            }
            if let Some(mask) = keep {
                for cap in 0..64u64 {
                    if mask & (1 << cap) == 0
                        && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                    {
                        // EINVAL: past the last capability the kernel knows.
                        break;
                    }
                }
                if uid != 0 {
                    check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
                }
            }
            if switch_user {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            if let Some(mask) = keep {
                let hdr = CapHeader {
                    version: LINUX_CAPABILITY_VERSION_3,
                    pid: 0,
                };
                let lo = mask as u32;
                let hi = (mask >> 32) as u32;
                let data = [
                    CapData {
                        effective: lo,
                        permitted: lo,
                        inheritable: lo,
                    },
                    CapData {
                        effective: hi,
                        permitted: hi,
                        inheritable: hi,
                    },
                ];
                check(libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) as libc::c_int)?;
                for cap in 0..64u64 {
                    if mask & (1 << cap) != 0 {
                        check(libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        ))?;
                    }
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        service: service(),
        program: program.clone(),
        source,
    })?;
    // Dropping `Child` neither waits nor kills; the reaper owns it now.
    let raw = child.id() as i32;
    let pid = Pid::from_raw(raw).ok_or_else(|| SpawnError::Exec {
        service: service(),
        program: program.clone(),
        source: std::io::Error::other(format!("kernel returned pid {raw}")),
    })?;
    Ok(Spawned { pid, output: rd })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(capability_mask(&[]), 0);
        assert_eq!(
            capability_mask(&["CAP_NET_BIND_SERVICE".into(), "CAP_KILL".into()]),
            (1 << 10) | (1 << 5)
        );
        assert_eq!(capability_mask(&["CAP_CHECKPOINT_RESTORE".into()]), 1 << 40);
    }
}

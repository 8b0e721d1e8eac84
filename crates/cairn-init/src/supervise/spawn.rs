//! Starting one service process: argv, environment, working directory,
//! stdin from `/dev/null`, stdout and stderr into a pipe the supervisor
//! reads line by line, its own session (so its process group is its pid),
//! its cgroup, resource limits, umask, user, groups and capabilities.
//!
//! Everything is resolved before `fork`; the code between `fork` and
//! `exec` only makes async-signal-safe system calls on prepared data.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use cairn_manifest::supervision::{capability_number, rlimit_number, UNLIMITED};
use cairn_manifest::ServiceConfig;
use rustix::process::{Gid, Pid};

use crate::accounts::{AccountError, Accounts};
use crate::sys;

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

    // A container: the init binary as `cairn-container` sets it up and
    // runs `exec` inside; the user, capabilities and working directory are
    // the entrypoint's, applied there.
    let container = cfg.container.as_ref().map(|c| {
        let keep_caps = capability_mask(
            cfg.run
                .capabilities
                .as_deref()
                .unwrap_or(&crate::container::DEFAULT_CAPABILITIES.map(String::from)),
        );
        crate::container::HelperSpec {
            name: cfg.name.clone(),
            config: c.clone(),
            workdir: cfg.run.workdir.clone(),
            keep_caps,
            no_new_privs: c.uid != 0,
        }
    });
    let mut cmd = match &container {
        Some(spec) => {
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg0(crate::container::APPLET)
                .args(crate::container::helper_args(spec, &cfg.exec));
            cmd
        }
        None => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    };
    let workdir = match &container {
        Some(_) => "/",
        None => cfg.run.workdir.as_deref().unwrap_or("/"),
    };
    cmd.env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", creds.home.as_deref().unwrap_or("/"))
        .envs(&cfg.env)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::from(wr2));

    let switch_user = container.is_none()
        && (cfg.run.user.is_some() || cfg.run.group.is_some() || !cfg.run.groups.is_empty());
    let setup = sys::process::ChildSetup {
        cgroup_procs,
        limits: cfg
            .run
            .limits
            .iter()
            .filter_map(|(k, v)| rlimit_number(k).map(|r| (r, (*v != UNLIMITED).then_some(*v))))
            .collect(),
        umask: cfg.run.umask,
        // A non-root service without `capabilities` keeps none, not even in
        // its bounding set: a setuid binary in the image gives it nothing.
        keep_caps: match cfg.run.capabilities.as_deref() {
            // The helper needs its privileges; it drops them for the entrypoint.
            _ if container.is_some() => None,
            Some(caps) => Some(capability_mask(caps)),
            None if creds.uid != 0 => Some(0),
            None => None,
        },
        no_new_privs: creds.uid != 0 && container.is_none(),
        only_stdio: true,
        oom_killable: true,
        uid: creds.uid,
        gid: creds.gid,
        groups: creds.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
        switch_user,
        ..Default::default()
    };
    sys::process::before_exec(&mut cmd, setup);
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

//! The container helper: what a service with `image` runs instead of its
//! program. The supervisor starts it like any service (cgroup, limits,
//! output pipe, session); it is the init binary under the name
//! `cairn-container`, a single-threaded process of its own, so PID 1
//! itself never changes namespaces or mounts.
//!
//! The helper unshares the mount, PID, IPC and UTS namespaces (and the
//! network namespace for `network = "none"`), builds the container's root
//! in a tmpfs of its new mount namespace (an overlay of the image's
//! read-only tree under `/containers/NAME` with a tmpfs upper layer, a
//! minimal `/dev`, `/etc/hostname`, `/etc/hosts` and a copy of the
//! appliance's `/etc/resolv.conf`, the volumes bind-mounted), moves it
//! onto `/` and `chroot`s into it (the initramfs root cannot be
//! `pivot_root`ed away from), sets the host name, and starts the
//! entrypoint: the first process of the new PID namespace, PID 1 there,
//! with a fresh `/proc`, its user, capabilities and `no_new_privs`. The
//! helper waits for it and exits with its status (128 + N when a signal
//! N ended it); the entrypoint is killed if the helper is. Everything it
//! mounted goes away with the namespace: a restart starts from the image.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_manifest::{ContainerConfig, ContainerNetwork};
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::process::Gid;
use serde::{Deserialize, Serialize};

use crate::sys;

/// `argv[0]` of the helper.
pub const APPLET: &str = "cairn-container";

/// `argv[0]` of the reaper (`init = true`): PID 1 of the container, the
/// entrypoint its child.
pub const REAPER: &str = "cairn-reaper";

/// Where the helper mounts a container's scratch tmpfs (in its own mount
/// namespace; only the empty directory is visible outside).
pub const RUN_DIR: &str = "/run/containers";

/// Docker's default capabilities: what a container keeps when its service
/// sets no `capabilities`.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// What the supervisor hands the helper (as JSON in `argv[1]`; the argv
/// of the entrypoint follows, the environment is the service's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperSpec {
    pub name: String,
    pub config: ContainerConfig,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Capability mask the entrypoint keeps.
    pub keep_caps: u64,
    pub no_new_privs: bool,
}

/// The helper's argv after `argv[0]`: the spec, then the entrypoint's argv.
pub fn helper_args(spec: &HelperSpec, exec: &[String]) -> Vec<String> {
    let mut v = vec![serde_json::to_string(spec).unwrap_or_default()];
    v.extend(exec.iter().cloned());
    v
}

/// Entry point of the `cairn-container` applet.
pub fn main(args: &[OsString]) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-container: {e}");
            // Like a shell's "cannot execute": a failure, restartable.
            126
        }
    }
}

fn ctx(what: impl Fn() -> String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", what()))
}

fn run(args: &[OsString]) -> io::Result<i32> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
    let spec_text = args
        .get(1)
        .and_then(|a| a.to_str())
        .ok_or_else(|| bad("usage: cairn-container SPEC-JSON PROGRAM [ARG...]"))?;
    let spec: HelperSpec =
        serde_json::from_str(spec_text).map_err(|e| bad(&format!("bad spec: {e}")))?;
    let exec: Vec<&OsString> = args[2..].iter().collect();
    let (program, argv) = exec.split_first().ok_or_else(|| bad("no program to run"))?;
    let c = &spec.config;

    // Signals the supervisor sends (to the group and the cgroup) reach the
    // entrypoint directly; the helper waits for it rather than dying first.
    // The entrypoint gets an empty mask back (ChildSetup).
    let set = sys::signal::SigSet::of(&[
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ])?;
    sys::signal::block(&set)?;

    use rustix::thread::UnshareFlags as F;
    let mut flags = F::NEWNS | F::NEWPID | F::NEWIPC | F::NEWUTS;
    if c.network == ContainerNetwork::None {
        flags |= F::NEWNET;
    }
    sys::process::unshare_namespaces(flags).map_err(ctx(|| "unshare".into()))?;
    // Nothing mounted from here on leaks out to the appliance.
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| ctx(|| "make / private".into())(e.into()))?;

    let scratch = PathBuf::from(RUN_DIR).join(&spec.name);
    let root = prepare_root(&spec, &scratch)?;
    if let Some(h) = &c.hostname {
        rustix::system::sethostname(h.as_bytes())
            .map_err(|e| ctx(|| "sethostname".into())(e.into()))?;
    }
    if c.network == ContainerNetwork::None {
        bring_up_loopback();
    }
    // With `init`, the first process is the reaper: this same binary,
    // reached through an fd opened before the chroot (its path is outside
    // the container's root) and the fresh /proc the child mounts.
    let exe = if c.init {
        Some(
            rustix::fs::open(
                c"/proc/self/exe",
                rustix::fs::OFlags::RDONLY,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| ctx(|| "open /proc/self/exe".into())(e.into()))?,
        )
    } else {
        None
    };
    // The initramfs root is rootfs, which pivot_root refuses: move the new
    // root over it, as switch_root does, and chroot into it.
    std::env::set_current_dir(&root).map_err(ctx(|| format!("chdir {}", root.display())))?;
    rustix::mount::mount_move(c".", c"/")
        .map_err(|e| ctx(|| "move the root onto /".into())(e.into()))?;
    rustix::process::chroot(c".").map_err(|e| ctx(|| "chroot".into())(e.into()))?;
    std::env::set_current_dir("/")?;

    let mut cmd = match &exe {
        Some(fd) => {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            cmd.arg0(REAPER).args(&args[1..]);
            cmd
        }
        None => {
            let mut cmd = Command::new(program);
            cmd.args(argv)
                .current_dir(spec.workdir.as_deref().unwrap_or("/"));
            cmd
        }
    };
    let setup = if exe.is_some() {
        // The reaper keeps its privileges; it drops them for the entrypoint.
        sys::process::ChildSetup {
            die_with_parent: true,
            mount_proc: true,
            ..Default::default()
        }
    } else {
        entrypoint_setup(&spec)
    };
    sys::process::before_exec(&mut cmd, setup);
    let child = cmd
        .spawn()
        .map_err(ctx(|| format!("cannot run {}", program.to_string_lossy())))?;
    drop(exe);
    let pid = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| bad("kernel returned pid 0"))?;
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, status))) => {
                if let Some(code) = status.exit_status() {
                    return Ok(code);
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(128 + sig);
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The entrypoint's child setup: its user, capabilities and
/// `no_new_privs`, killed with its parent; as the first process of the
/// namespace it mounts `/proc`, as the reaper's child it gets fds 0-2 only.
fn entrypoint_setup(spec: &HelperSpec) -> sys::process::ChildSetup {
    let c = &spec.config;
    sys::process::ChildSetup {
        keep_caps: Some(spec.keep_caps),
        no_new_privs: spec.no_new_privs,
        uid: c.uid,
        gid: c.gid,
        groups: c.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
        switch_user: c.uid != 0 || c.gid != 0 || !c.groups.is_empty(),
        die_with_parent: true,
        mount_proc: !c.init,
        only_stdio: c.init,
        ..Default::default()
    }
}

/// Entry point of the `cairn-reaper` applet: PID 1 of a container with
/// `init = true`. Starts the entrypoint, reaps every child that ends
/// (orphans of the container are re-parented here), passes SIGTERM,
/// SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 on to the entrypoint and
/// exits with the entrypoint's status (128 + N after signal N); the
/// kernel then kills what is left in the namespace.
pub fn reaper_main(args: &[OsString]) -> i32 {
    match reap(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-reaper: {e}");
            126
        }
    }
}

fn reap(args: &[OsString]) -> io::Result<i32> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
    let spec: HelperSpec = args
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| bad("usage: cairn-reaper SPEC-JSON PROGRAM [ARG...]"))?;
    let (program, argv) = args
        .get(2..)
        .unwrap_or_default()
        .split_first()
        .ok_or_else(|| bad("no program to run"))?;
    let set = sys::signal::SigSet::of(&[
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGCHLD,
    ])?;
    sys::signal::block(&set)?;
    let sfd = sys::signal::signalfd(&set)?;
    let mut cmd = Command::new(program);
    cmd.args(argv)
        .current_dir(spec.workdir.as_deref().unwrap_or("/"));
    sys::process::before_exec(&mut cmd, entrypoint_setup(&spec));
    let child = cmd
        .spawn()
        .map_err(ctx(|| format!("cannot run {}", program.to_string_lossy())))?;
    let pid = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| bad("kernel returned pid 0"))?;
    let mut buf = [0u8; 128];
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &sfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        // One signalfd_siginfo per read; ssi_signo is its first field.
        while let Ok(n) = rustix::io::read(&sfd, &mut buf) {
            if n < 4 {
                break;
            }
            let sig = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if sig != libc::SIGCHLD {
                if let Some(s) = rustix::process::Signal::from_named_raw(sig) {
                    let _ = rustix::process::kill_process(pid, s);
                }
            }
        }
        // Reap everything that has ended; the entrypoint's end is ours.
        while let Ok(Some((p, status))) =
            rustix::process::wait(rustix::process::WaitOptions::NOHANG)
        {
            if p == pid {
                if let Some(code) = status.exit_status() {
                    return Ok(code);
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(128 + sig);
                }
            }
        }
    }
}

fn mkdirs(p: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .map_err(ctx(|| format!("mkdir {}", p.display())))
}

/// A path inside the container root `root` (`/x/y` -> `root/x/y`).
fn inside(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn mount_err(what: String) -> impl FnOnce(rustix::io::Errno) -> io::Error {
    move |e| io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

/// Builds the container's root under `scratch` and returns it.
fn prepare_root(spec: &HelperSpec, scratch: &Path) -> io::Result<PathBuf> {
    let c = &spec.config;
    mkdirs(scratch, 0o700)?;
    rustix::mount::mount(
        "tmpfs",
        scratch,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=0700"),
    )
    .map_err(mount_err(format!("tmpfs on {}", scratch.display())))?;
    let (upper, work, root) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("root"),
    );
    for d in [&upper, &work, &root] {
        mkdirs(d, 0o755)?;
    }
    let opts = std::ffi::CString::new(format!(
        "lowerdir={},upperdir={},workdir={}",
        c.root,
        upper.display(),
        work.display()
    ))
    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if let Err(e) = rustix::mount::mount(
        "overlay",
        &root,
        "overlay",
        MountFlags::empty(),
        Some(opts.as_c_str()),
    ) {
        // Without overlayfs the image's tree is used read-only as it is.
        eprintln!(
            "cairn-container {}: overlay unavailable ({e}); the root is read-only",
            spec.name
        );
        rustix::mount::mount_bind(c.root.as_str(), &root)
            .map_err(mount_err(format!("bind {}", c.root)))?;
        let _ = rustix::mount::mount_remount(&root, MountFlags::BIND | MountFlags::RDONLY, c"");
    }

    // /proc (mounted by the entrypoint), /dev, /tmp, /etc.
    for (d, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
    ] {
        let p = inside(&root, d);
        if !p.is_dir() {
            let _ = mkdirs(&p, mode);
        }
    }
    setup_dev(&inside(&root, "dev"))?;
    if let Some(h) = &c.hostname {
        let _ = fs::write(inside(&root, "etc/hostname"), format!("{h}\n"));
        let _ = fs::write(
            inside(&root, "etc/hosts"),
            format!("127.0.0.1\tlocalhost {h}\n::1\tlocalhost {h}\n"),
        );
    }
    if c.network == ContainerNetwork::Host {
        if let Ok(text) = fs::read("/etc/resolv.conf") {
            let _ = fs::remove_file(inside(&root, "etc/resolv.conf"));
            let _ = fs::write(inside(&root, "etc/resolv.conf"), text);
        }
    }
    if let Some(w) = &spec.workdir {
        let _ = mkdirs(&inside(&root, w), 0o755);
    }
    for v in &c.volumes {
        let src = Path::new(&v.src);
        mkdirs(src, 0o755)?;
        let dst = inside(&root, &v.dst);
        mkdirs(&dst, 0o755)?;
        rustix::mount::mount_bind(src, &dst)
            .map_err(mount_err(format!("volume {} -> {}", v.src, v.dst)))?;
        let mut flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
        if v.readonly {
            flags |= MountFlags::RDONLY;
        }
        rustix::mount::mount_remount(&dst, flags, c"")
            .map_err(mount_err(format!("remount volume {}", v.dst)))?;
    }
    Ok(root)
}

/// A tmpfs `/dev` with the usual character devices bind-mounted from the
/// appliance's, `/dev/shm`, `/dev/pts` and the `fd` links.
fn setup_dev(dev: &Path) -> io::Result<()> {
    rustix::mount::mount(
        "tmpfs",
        dev,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"mode=0755,size=64k"),
    )
    .map_err(mount_err(format!("tmpfs on {}", dev.display())))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let node = dev.join(name);
        fs::write(&node, b"")?;
        fs::set_permissions(&node, fs::Permissions::from_mode(0o666))?;
        rustix::mount::mount_bind(&host, &node).map_err(mount_err(format!("bind /dev/{name}")))?;
    }
    for (d, mode) in [("shm", 0o1777), ("pts", 0o755)] {
        mkdirs(&dev.join(d), mode)?;
    }
    let _ = rustix::mount::mount(
        "shm",
        dev.join("shm"),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=1777,size=1m"),
    );
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    Ok(())
}

/// `lo` up in a new network namespace (`network = "none"`).
fn bring_up_loopback() {
    if let Err(e) = crate::net::loopback_up() {
        eprintln!("cairn-container: cannot bring up lo: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_argv() {
        let spec = HelperSpec {
            name: "web".into(),
            config: ContainerConfig {
                root: "/containers/web".into(),
                hostname: Some("web".into()),
                volumes: vec![],
                network: ContainerNetwork::None,
                uid: 1000,
                gid: 1000,
                groups: vec![],
                init: false,
            },
            workdir: Some("/srv".into()),
            keep_caps: 1 << 10,
            no_new_privs: true,
        };
        let args = helper_args(&spec, &["/bin/sh".into(), "-c".into(), "x".into()]);
        let back: HelperSpec = serde_json::from_str(&args[0]).unwrap();
        assert_eq!(back.config, spec.config);
        assert_eq!(&args[1..], ["/bin/sh", "-c", "x"]);
    }
}

//! Runtime configuration baked into the image for `cairn-init`.
//!
//! This is the contract between the builder and the init: the builder
//! resolves everything it can (module load order, paths) so the init only
//! has to act on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::supervision::{self as sv, LogConfig};

/// Where the builder writes the runtime config inside the image. It is
/// JSON, not TOML: the init parses it on every boot, and under emulation
/// (QEMU TCG) every distinct code block costs its translation the first
/// time it runs; serde_json's reader runs about a third of the code that
/// toml's document parser does (see `cargo xtask profile`). The secondary
/// config, which people write, stays TOML.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/cairn/system.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Appliance name (from the manifest).
    pub name: String,
    /// Hostname to set; `None` leaves the kernel default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Kernel modules to load, as absolute paths inside the image, already
    /// in dependency order (dependencies first).
    #[serde(default)]
    pub modules: Vec<String>,
    /// What PID 1 does after catching a panic in one of its units of work.
    #[serde(default)]
    pub on_panic: PanicAction,
    /// Services in manifest order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// Filesystems to mount before any service starts (`[[mount]]`).
    #[serde(default, rename = "mount", skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::storage::MountConfig>,
    /// Mount point holding the secondary config (`[config] mount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_mount: Option<String>,
    /// Network interfaces, `network-online` timeout, time servers.
    #[serde(default, skip_serializing_if = "crate::network::NetConfig::is_default")]
    pub net: crate::network::NetConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[shell]`: the break-glass console shell; `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<crate::shell::ShellConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// argv; `exec[0]` is an absolute path inside the image.
    pub exec: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<ExitAction>,
    /// Names of services or targets (`network-online`, `mounts`) this one
    /// starts after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// `false` keeps the service from starting (the secondary config can
    /// turn services on and off).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// User (name or number) to run as; `None`: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Primary group (name or number); `None`: the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Supplementary groups (names or numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// rlimit name (`nofile`) -> value (soft = hard); `supervision::UNLIMITED`: no limit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, u64>,
    /// Capabilities to keep (`CAP_*`); `None`: leave them alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    #[serde(default = "d_stop")]
    pub stop_timeout_ms: u64,
    #[serde(default = "d_delay")]
    pub restart_delay_ms: u64,
    #[serde(default = "d_delay_max")]
    pub restart_delay_max_ms: u64,
    #[serde(default = "d_limit")]
    pub restart_limit: u32,
}

fn d_stop() -> u64 {
    sv::DEFAULT_STOP_TIMEOUT_MS
}
fn d_delay() -> u64 {
    sv::DEFAULT_RESTART_DELAY_MS
}
fn d_delay_max() -> u64 {
    sv::DEFAULT_RESTART_DELAY_MAX_MS
}
fn d_limit() -> u32 {
    sv::DEFAULT_RESTART_LIMIT
}

impl ServiceConfig {
    /// A service with just a name and argv, everything else default.
    pub fn new(name: &str, exec: &[&str]) -> Self {
        ServiceConfig {
            name: name.into(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            restart: RestartPolicy::default(),
            on_exit: None,
            after: Vec::new(),
            enabled: true,
            user: None,
            group: None,
            groups: Vec::new(),
            umask: None,
            workdir: None,
            limits: BTreeMap::new(),
            capabilities: None,
            memory_max: None,
            pids_max: None,
            stop_timeout_ms: sv::DEFAULT_STOP_TIMEOUT_MS,
            restart_delay_ms: sv::DEFAULT_RESTART_DELAY_MS,
            restart_delay_max_ms: sv::DEFAULT_RESTART_DELAY_MAX_MS,
            restart_limit: sv::DEFAULT_RESTART_LIMIT,
        }
    }

    /// Copies validated supervision settings in.
    pub fn with_run(mut self, r: &sv::RunSettings) -> Self {
        self.user = r.user.clone();
        self.group = r.group.clone();
        self.groups = r.groups.clone();
        self.umask = r.umask;
        self.workdir = r.workdir.clone();
        self.limits = r.limits.clone();
        self.capabilities = r.capabilities.clone();
        self.memory_max = r.memory_max;
        self.pids_max = r.pids_max;
        self.stop_timeout_ms = r.stop_timeout_ms;
        self.restart_delay_ms = r.restart_delay_ms;
        self.restart_delay_max_ms = r.restart_delay_max_ms;
        self.restart_limit = r.restart_limit;
        self
    }
}

pub(crate) fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    #[default]
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitAction {
    Poweroff,
    Reboot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PanicAction {
    /// Log the panic and keep supervising.
    #[default]
    Continue,
    /// Log the panic, wait a few seconds, reboot.
    Reboot,
}

impl SystemConfig {
    /// The form baked into the image at [`SYSTEM_CONFIG_PATH`].
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("SystemConfig always serializes");
        s.push('\n');
        s
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The same config as TOML (what a test-mode init may be given).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("SystemConfig always serializes")
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Both serialized forms read back as `self` (for tests).
    #[cfg(test)]
    pub(crate) fn assert_round_trips(&self) {
        assert_eq!(&SystemConfig::from_json(&self.to_json()).unwrap(), self);
        assert_eq!(&SystemConfig::from_toml(&self.to_toml()).unwrap(), self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let cfg = SystemConfig {
            name: "hello".into(),
            hostname: Some("hello".into()),
            modules: vec!["/lib/modules/6.1/kernel/a.ko".into()],
            on_panic: PanicAction::Reboot,
            services: vec![ServiceConfig {
                env: BTreeMap::from([("A".into(), "b".into())]),
                restart: RestartPolicy::OnFailure,
                on_exit: Some(ExitAction::Poweroff),
                after: vec!["network-online".into()],
                enabled: false,
                user: Some("app".into()),
                groups: vec!["audio".into()],
                limits: BTreeMap::from([("nofile".into(), 64)]),
                capabilities: Some(vec!["CAP_KILL".into()]),
                memory_max: Some(1 << 20),
                ..ServiceConfig::new("greet", &["/bin/echo", "hi"])
            }],
            shell: Some(crate::shell::ShellConfig {
                exec: vec!["/bin/sh".into()],
                password_hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA".into(),
            }),
            ..Default::default()
        };
        cfg.assert_round_trips();
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = SystemConfig::from_toml("name = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = SystemConfig::from_json("{\"name\": \"x\",\n \"bogus\": 1}").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bogus") && msg.contains("line 2"), "{msg}");
    }
}

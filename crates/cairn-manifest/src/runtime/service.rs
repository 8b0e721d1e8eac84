//! One `[[service]]` as the init runs it: what to run and when
//! ([`ServiceConfig`]), and how ([`RunSettings`]: credentials, limits,
//! capabilities, cgroup limits, stop and restart timing), which the
//! manifest's validation ([`crate::supervision`]) produces as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Defaults of the restart and stop settings.
pub const DEFAULT_RESTART_DELAY_MS: u64 = 1000;
pub const DEFAULT_RESTART_DELAY_MAX_MS: u64 = 60_000;
pub const DEFAULT_RESTART_LIMIT: u32 = 10;
pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 5000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// argv; `exec[0]` is an absolute path inside the image.
    pub exec: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `config_env`: the environment variables the secondary config (on
    /// the CONFIG partition, which Secure Boot does not cover) may set for
    /// this service; it may set no others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_env: Vec<String>,
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
    #[serde(default = "super::yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// `image`: the service runs this OCI image's root filesystem in
    /// namespaces of its own; `exec` is then the argv inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<super::ContainerConfig>,
    /// How it runs; its keys sit beside the ones above in the JSON (and
    /// last, so the file reads as before they were grouped).
    #[serde(flatten)]
    pub run: RunSettings,
}

/// The supervision settings of one `[[service]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
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
    DEFAULT_STOP_TIMEOUT_MS
}
fn d_delay() -> u64 {
    DEFAULT_RESTART_DELAY_MS
}
fn d_delay_max() -> u64 {
    DEFAULT_RESTART_DELAY_MAX_MS
}
fn d_limit() -> u32 {
    DEFAULT_RESTART_LIMIT
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            user: None,
            group: None,
            groups: Vec::new(),
            umask: None,
            workdir: None,
            limits: BTreeMap::new(),
            capabilities: None,
            memory_max: None,
            pids_max: None,
            stop_timeout_ms: DEFAULT_STOP_TIMEOUT_MS,
            restart_delay_ms: DEFAULT_RESTART_DELAY_MS,
            restart_delay_max_ms: DEFAULT_RESTART_DELAY_MAX_MS,
            restart_limit: DEFAULT_RESTART_LIMIT,
        }
    }
}

impl ServiceConfig {
    /// A service with just a name and argv, everything else default.
    pub fn new(name: &str, exec: &[&str]) -> Self {
        ServiceConfig {
            name: name.into(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            config_env: Vec::new(),
            restart: RestartPolicy::default(),
            on_exit: None,
            after: Vec::new(),
            enabled: true,
            container: None,
            run: RunSettings::default(),
        }
    }
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

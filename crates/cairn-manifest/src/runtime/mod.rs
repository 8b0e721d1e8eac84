//! The runtime contract: what the builder bakes into the image at
//! `/etc/cairn/system.json` ([`SystemConfig`]) and `cairn-init` reads at
//! boot. Every type in it is here, and nothing here depends on the rest of
//! the crate: the manifest's validation (`manifest`, `supervision`,
//! `network`, `shell`, `disk`, `secondary`) produces these types; the init
//! only consumes them.
//!
//! The builder resolves everything it can (module load order, paths,
//! defaults) so the init only has to act on it.
//!
//! - this module: [`SystemConfig`], [`PanicAction`], [`ShellConfig`];
//! - [`service`]: [`ServiceConfig`] and the [`RunSettings`] it embeds;
//! - [`log`]: [`LogConfig`] (`[log]`);
//! - [`mount`]: [`MountConfig`] (`[[mount]]`, the secondary config's place);
//! - [`net`]: [`NetConfig`] (`[[network]]`, `[net]`).

pub mod container;
pub mod log;
pub mod mount;
pub mod net;
pub mod netboot;
pub mod service;
pub mod update;

use serde::{Deserialize, Serialize};

pub use container::{ContainerConfig, ContainerNetwork, VolumeConfig, CONTAINER_ROOT_DIR};
pub use log::{Level, LogConfig, DEFAULT_LOG_LINES};
pub use mount::{
    FormatPolicy, FsType, MountConfig, MountSource, DEFAULT_MOUNT_WAIT_SECS, MKFS_EXT4_PATH,
    SECONDARY_CONFIG_FILE,
};
pub use net::{
    InterfaceConfig, IpPrefix, Ipv6Mode, MatchRule, NetConfig, RouteConfig, DEFAULT_ONLINE_TIMEOUT,
};
pub use netboot::{NetbootConfig, NODE_AGENT_PATH, NODE_CONFIG_PATH, NODE_SERVICE, NODE_TARGET};
pub use service::{
    ExitAction, RestartPolicy, RunSettings, ServiceConfig, DEFAULT_RESTART_DELAY_MAX_MS,
    DEFAULT_RESTART_DELAY_MS, DEFAULT_RESTART_LIMIT, DEFAULT_STOP_TIMEOUT_MS,
};
pub use update::{
    EspLocation, HealthConfig, UpdateConfig, WatchdogConfig, ESP_MOUNT, METADATA_FILE,
    UPDATE_AGENT_PATH, UPDATE_SERVICE,
};

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
    /// `test_hooks = true`: the init obeys its test hooks on the kernel
    /// command line (`cairn.test_panic`) outside test mode too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_hooks: bool,
    /// Services in manifest order.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceConfig>,
    /// Filesystems to mount before any service starts (`[[mount]]`).
    #[serde(default, rename = "mount", skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountConfig>,
    /// Mount point holding the secondary config (`[config] mount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_mount: Option<String>,
    /// Network interfaces, `network-online` timeout, time servers.
    #[serde(default, skip_serializing_if = "NetConfig::is_default")]
    pub net: NetConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[shell]`: the break-glass console shell; `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<ShellConfig>,
    /// `[update]`: the update agent's settings; `None`: no updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateConfig>,
    /// `[netboot]`: the node config agent's settings; `None`: no node
    /// config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netboot: Option<NetbootConfig>,
}

/// A helper process of the image's own (the init binary at `exec`) as a
/// service, started after target `after`.
fn helper(name: &str, exec: &str, restart: RestartPolicy, after: &str) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        exec: vec![exec.into()],
        env: Default::default(),
        config_env: Vec::new(),
        restart,
        on_exit: None,
        after: vec![after.into()],
        enabled: true,
        run: RunSettings::default(),
        container: None,
    }
}

/// The runtime form of `[shell]` (validated in [`crate::shell`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellConfig {
    pub exec: Vec<String>,
    pub password_hash: String,
}

/// `#[serde(default = "...")]` of the flags that are on unless said.
fn yes() -> bool {
    true
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
    /// With `[update]`: the ESP mounted at [`ESP_MOUNT`] and the update
    /// agent as a supervised service ([`UPDATE_SERVICE`], after `mounts`).
    pub fn with_update_agent(mut self) -> Self {
        if self.update.is_some() {
            self.mounts.push(MountConfig {
                source: MountSource::Partlabel(crate::disk::ESP_LABEL.into()),
                path: ESP_MOUNT.into(),
                fs: FsType::Vfat,
                options: String::new(),
                format: FormatPolicy::Never,
                required: false,
                wait: DEFAULT_MOUNT_WAIT_SECS,
            });
            self.services.push(helper(
                UPDATE_SERVICE,
                UPDATE_AGENT_PATH,
                RestartPolicy::Always,
                "mounts",
            ));
        }
        self
    }

    /// With `[netboot]`: the node config agent as a one-shot service
    /// ([`NODE_SERVICE`], after `network-online`), and every other
    /// service after [`NODE_TARGET`].
    pub fn with_node_agent(mut self) -> Self {
        if self.netboot.is_some() {
            for s in &mut self.services {
                if s.name != UPDATE_SERVICE {
                    s.after.push(NODE_TARGET.into());
                }
            }
            self.services.push(helper(
                NODE_SERVICE,
                NODE_AGENT_PATH,
                RestartPolicy::Never,
                "network-online",
            ));
        }
        self
    }

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
    use std::collections::BTreeMap;

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
                run: RunSettings {
                    user: Some("app".into()),
                    groups: vec!["audio".into()],
                    limits: BTreeMap::from([("nofile".into(), 64)]),
                    capabilities: Some(vec!["CAP_KILL".into()]),
                    memory_max: Some(1 << 20),
                    ..Default::default()
                },
                ..ServiceConfig::new("greet", &["/bin/echo", "hi"])
            }],
            shell: Some(ShellConfig {
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

    #[test]
    fn unknown_service_key_is_refused_beside_the_flattened_run_settings() {
        let svc = |extra: &str| {
            format!("{{\"name\": \"x\", \"service\": [{{\"name\": \"a\", \"exec\": [\"/a\"], \"user\": \"app\"{extra}}}]}}")
        };
        let cfg = SystemConfig::from_json(&svc("")).unwrap();
        assert_eq!(cfg.services[0].run.user.as_deref(), Some("app"));
        let err = SystemConfig::from_json(&svc(", \"bogus\": 1")).unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        let err = SystemConfig::from_toml(
            "name = \"x\"\n[[service]]\nname = \"a\"\nexec = [\"/a\"]\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}

//! Runtime configuration baked into the image for `cairn-init`.
//!
//! This is the contract between the builder and the init: the builder
//! resolves everything it can (module load order, paths) so the init only
//! has to act on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the builder writes the runtime config inside the image.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/cairn/system.toml";

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
    /// Network interfaces, `network-online` timeout, time servers.
    #[serde(default, skip_serializing_if = "crate::network::NetConfig::is_default")]
    pub net: crate::network::NetConfig,
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
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("SystemConfig always serializes")
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
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
                name: "greet".into(),
                exec: vec!["/bin/echo".into(), "hi".into()],
                env: BTreeMap::from([("A".into(), "b".into())]),
                restart: RestartPolicy::OnFailure,
                on_exit: Some(ExitAction::Poweroff),
                after: vec!["network-online".into()],
            }],
            net: Default::default(),
        };
        let text = cfg.to_toml();
        assert_eq!(SystemConfig::from_toml(&text).unwrap(), cfg);
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = SystemConfig::from_toml("name = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}

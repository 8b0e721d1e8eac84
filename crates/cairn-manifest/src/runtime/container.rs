//! A service that runs an OCI image (`image` on a `[[service]]`), as the
//! init runs it. The builder fills it in from the manifest and the image
//! config: the root filesystem's place in the appliance, the volumes, the
//! network mode and the numeric user the entrypoint runs as. The service's
//! `exec`, `env` and `workdir` are the container's (inside its root).

use serde::{Deserialize, Serialize};

/// Where the builder puts the root filesystem of the image of service NAME.
pub const CONTAINER_ROOT_DIR: &str = "/containers";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// The image's root filesystem in the appliance (read-only lower layer
    /// of the container's root).
    pub root: String,
    /// Host name inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeConfig>,
    #[serde(default)]
    pub network: ContainerNetwork,
    /// The entrypoint's user and group, numeric (names resolved against
    /// the image's `/etc/passwd` and `/etc/group` at build time).
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
    /// `init = true`: a tiny reaper is PID 1 of the container (it reaps
    /// orphans and passes signals on); the entrypoint is its child.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
}

/// `SRC:DST[:ro]`: an appliance directory bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    pub src: String,
    pub dst: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerNetwork {
    /// The appliance's network (no network namespace).
    #[default]
    Host,
    /// A network namespace of its own with only loopback.
    None,
}

//! `[netboot]` as the node config agent acts on it (validated in
//! [`crate::netboot`]).

use serde::{Deserialize, Serialize};

/// The agent's service name (a supervised one-shot service).
pub const NODE_SERVICE: &str = "cairn-node-config";
/// The agent: the init binary under another name.
pub const NODE_AGENT_PATH: &str = "/usr/bin/cairn-node-config";
/// The target every other service waits for: reached once the node
/// config is applied, or the built-in config is to run.
pub const NODE_TARGET: &str = "node-config";
/// Where the agent leaves the verified node config for the init.
pub const NODE_CONFIG_PATH: &str = "/run/cairn/node.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetbootConfig {
    /// `url`: where node configs are, `http://IPV4[:PORT]/PATH/`.
    pub url: String,
    /// Trusted ed25519 public keys, hex.
    pub keys: Vec<String>,
    /// Without a good node config, services are not started.
    pub required: bool,
    /// How long the agent keeps trying the server.
    pub timeout_s: u64,
}

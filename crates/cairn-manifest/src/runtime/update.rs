//! `[update]` as the update agent acts on it (validated in
//! [`crate::update`]): where to poll, which keys to trust, this image's
//! version, the health check of a trial boot and the watchdog.

use serde::{Deserialize, Serialize};

/// Where the agent mounts the ESP.
pub const ESP_MOUNT: &str = "/boot/efi";
/// The agent's service name (it runs as a supervised service).
pub const UPDATE_SERVICE: &str = "cairn-update";
/// The agent: the init binary under another name.
pub const UPDATE_AGENT_PATH: &str = "/usr/bin/cairn-update";
/// The metadata file in the update repository.
pub const METADATA_FILE: &str = "cairn-update.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// `version`: this image's release number.
    pub version: u64,
    /// `url`: the repository, `http://IPV4[:PORT]/PATH/`.
    pub url: String,
    /// Trusted ed25519 public keys, hex.
    pub keys: Vec<String>,
    /// Seconds between polls (jittered).
    pub interval_s: u64,
    pub health: HealthConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<WatchdogConfig>,
    /// The ESP's place on the disk, for `Boot####` entries (filled in by
    /// the builder from the disk layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp: Option<EspLocation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Services that must stay running (same pid) for `for_s`.
    pub services: Vec<String>,
    pub for_s: u64,
    /// `network-online` must be reached.
    pub network: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    pub device: String,
    pub timeout_s: u64,
}

/// The GPT partition the slots are on (a UEFI `HD()` device path node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspLocation {
    /// 1-based partition number.
    pub partition: u32,
    pub start_lba: u64,
    pub sectors: u64,
    /// The partition's unique GUID as stored on disk (16 bytes, hex).
    pub guid: String,
}

//! `[netboot]`: per-node configuration for diskless fleets. Every node
//! boots the same image; at boot each fetches its own config from the
//! boot server and applies it before its services start.
//!
//! ```toml
//! [netboot]
//! url = "http://10.0.0.1/nodes/"   # fetches URL + "52-54-00-12-34-56.toml" (the MAC)
//! keys = ["node.pub"]              # who may sign node configs (cairn keys generate --update)
//! required = false                 # true: no services without a good node config
//! timeout = "30s"                  # how long the server may take to answer
//! ```
//!
//! A node config has the secondary config's schema and checks
//! ([`crate::secondary`]) except `[[network]]` and `[net]` (the network it
//! was fetched over is already up), and ends in a signature line made by
//! `cairn netboot sign-node`:
//!
//! ```text
//! # cairn-signature ed25519 PUBLIC-KEY-HEX SIGNATURE-HEX
//! ```
//!
//! The signature covers the appliance's name, the node's MAC and every
//! byte before that line, so a config signed for one node or appliance is
//! refused by every other. The signature is checked before the TOML is
//! parsed.

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::diagnostic::Span;
use crate::release::{self, Signature};
use crate::runtime::NetbootConfig;

pub const DEFAULT_TIMEOUT_S: u64 = 30;
/// The largest node config a node reads.
pub const NODE_CONFIG_MAX: usize = 64 * 1024;
/// What starts a node config's signature line.
const SIGNATURE_LINE: &str = "# cairn-signature ed25519 ";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetbootInvalid {
    #[error("[netboot] `url` must be `http://IPV4[:PORT]/PATH/` (integrity comes from signatures; names are not resolved); got `{0}`")]
    Url(String),
    #[error("[netboot] `keys` must name at least one ed25519 public key")]
    NoKeys,
    #[error("[netboot] key `{0}` is neither base64 of a 32-byte ed25519 public key nor a readable file holding one ({1})")]
    Key(String, String),
    #[error("[netboot] `timeout`: expected a duration like \"30s\", \"2m\" or a number of seconds, at least 1 s; got `{0}`")]
    Timeout(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetboot {
    pub url: Spanned<String>,
    pub keys: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub timeout: Option<Spanned<toml::Value>>,
}

/// Validates `[netboot]`; `dir` resolves key files.
pub(crate) fn build(
    raw: Option<RawNetboot>,
    dir: &std::path::Path,
) -> Result<Option<NetbootConfig>, (Span, NetbootInvalid)> {
    let Some(n) = raw else { return Ok(None) };
    if crate::update::parse_url(n.url.get_ref()).is_none() {
        return Err((
            n.url.span().into(),
            NetbootInvalid::Url(n.url.get_ref().clone()),
        ));
    }
    if n.keys.get_ref().is_empty() {
        return Err((n.keys.span().into(), NetbootInvalid::NoKeys));
    }
    let keys = crate::update::resolve_keys(n.keys.get_ref(), dir)
        .map_err(|(sp, k, e)| (sp, NetbootInvalid::Key(k, e)))?;
    let timeout_s = match &n.timeout {
        Some(v) => crate::update::parse_duration(v.get_ref()).ok_or_else(|| {
            (
                v.span().into(),
                NetbootInvalid::Timeout(v.get_ref().to_string()),
            )
        })?,
        None => DEFAULT_TIMEOUT_S,
    };
    Ok(Some(NetbootConfig {
        url: n.url.into_inner(),
        keys,
        required: n.required.unwrap_or(false),
        timeout_s,
    }))
}

/// A MAC address as node config files are named: `52-54-00-12-34-56`
/// (lower case), from any case with `:` or `-`; `None` if it is not one.
pub fn mac_name(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.trim().split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| parts.join("-").to_ascii_lowercase())
}

/// The bytes a node config's signature covers.
fn message(name: &str, mac: &str, text: &str) -> Vec<u8> {
    format!("cairn node config\n{name}\n{mac}\n{text}").into_bytes()
}

/// `text` with its signature line (for appliance `name`, node `mac` as
/// [`mac_name`] gives it) by the key of `seed`.
pub fn sign(text: &str, name: &str, mac: &str, seed: &[u8; 32]) -> String {
    let mut text = text.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let s = release::sign_bytes(&message(name, mac, &text), seed);
    format!("{text}{SIGNATURE_LINE}{} {}\n", s.key, s.sig)
}

/// Why a node config was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeRefused {
    #[error("larger than {} KiB", NODE_CONFIG_MAX / 1024)]
    TooLarge,
    #[error("not signed (no `{}` last line)", SIGNATURE_LINE.trim_end())]
    Unsigned,
    #[error("no signature by a trusted key for appliance `{0}` and this node ({1}) verifies")]
    Signature(String, String),
}

/// Checks `bytes` (a fetched node config) for appliance `name` and node
/// `mac` against `trusted` (hex keys); returns the TOML text before the
/// signature line, not yet parsed.
pub fn verify<'a>(
    bytes: &'a [u8],
    trusted: &[String],
    name: &str,
    mac: &str,
) -> Result<&'a str, NodeRefused> {
    if bytes.len() > NODE_CONFIG_MAX {
        return Err(NodeRefused::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| NodeRefused::Unsigned)?;
    let body = text.strip_suffix('\n').unwrap_or(text);
    let cut = body.rfind('\n').map_or(0, |i| i + 1);
    let (signed, last) = text.split_at(cut);
    let mut words = last
        .strip_prefix(SIGNATURE_LINE)
        .ok_or(NodeRefused::Unsigned)?
        .split_ascii_whitespace();
    let (Some(key), Some(sig), None) = (words.next(), words.next(), words.next()) else {
        return Err(NodeRefused::Unsigned);
    };
    let sigs = [Signature {
        key: key.into(),
        sig: sig.into(),
    }];
    if !release::trusted_signature(&sigs, trusted, &message(name, mac, signed)) {
        return Err(NodeRefused::Signature(name.into(), mac.into()));
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_names() {
        let n = "52-54-00-ab-cd-ef";
        assert_eq!(mac_name("52:54:00:AB:CD:EF").as_deref(), Some(n));
        assert_eq!(mac_name("52-54-00-ab-cd-ef").as_deref(), Some(n));
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:eg",
            "5:54:00:ab:cd:ef0",
            "",
        ] {
            assert_eq!(mac_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn signed_for_one_node_of_one_appliance() {
        let seed = [3u8; 32];
        let trusted = vec![release::hex(&release::public_key(&seed))];
        let mac = "52-54-00-77-00-01";
        let text = "[service.app]\nenv = { V = \"1\" }";
        let signed = sign(text, "node", mac, &seed);
        assert_eq!(
            verify(signed.as_bytes(), &trusted, "node", mac),
            Ok("[service.app]\nenv = { V = \"1\" }\n")
        );
        // Another node, another appliance, another key.
        let other = "52-54-00-77-00-02";
        assert!(matches!(
            verify(signed.as_bytes(), &trusted, "node", other),
            Err(NodeRefused::Signature(..))
        ));
        assert!(verify(signed.as_bytes(), &trusted, "web", mac).is_err());
        let untrusted = vec![release::hex(&release::public_key(&[4u8; 32]))];
        assert!(verify(signed.as_bytes(), &untrusted, "node", mac).is_err());
        // One byte changed; the signature line missing, cut or doubled.
        let tampered = signed.replace("\"1\"", "\"2\"");
        assert!(verify(tampered.as_bytes(), &trusted, "node", mac).is_err());
        assert_eq!(
            verify(text.as_bytes(), &trusted, "node", mac),
            Err(NodeRefused::Unsigned)
        );
        let cut = &signed[..signed.len() - 10];
        assert!(verify(cut.as_bytes(), &trusted, "node", mac).is_err());
        let extra = format!("{signed}[service.app]\nenabled = false\n");
        assert_eq!(
            verify(extra.as_bytes(), &trusted, "node", mac),
            Err(NodeRefused::Unsigned)
        );
        let big = format!("{}{signed}", "#".repeat(NODE_CONFIG_MAX));
        assert_eq!(
            verify(big.as_bytes(), &trusted, "node", mac),
            Err(NodeRefused::TooLarge)
        );
        assert_eq!(
            verify(b"\xff\xfe", &trusted, "node", mac),
            Err(NodeRefused::Unsigned)
        );
    }
}

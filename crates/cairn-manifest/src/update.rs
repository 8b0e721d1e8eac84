//! `[update]`: signed A/B updates of the UKI (see the README's "Field
//! updates").
//!
//! ```toml
//! [update]
//! version = 2                        # this image's release; only goes up
//! url = "http://updates.example.com:8000/"  # the repository (cairn publish --repo); a name or an IPv4 address
//! keys = ["update.pub"]              # files from `cairn keys generate --update`, or base64
//! interval = "1h"                    # between polls, jittered
//! health = { services = ["app"], for = "30s", network = true }
//! watchdog = { device = "/dev/watchdog", timeout = "30s" }
//! ```

use std::path::Path;

use base64ct::{Base64, Encoding};
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::diagnostic::Span;
use crate::runtime::{HealthConfig, UpdateConfig, WatchdogConfig};

pub const DEFAULT_INTERVAL_S: u64 = 6 * 3600;
pub const DEFAULT_HEALTH_S: u64 = 30;
pub const DEFAULT_WATCHDOG_S: u64 = 60;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpdateInvalid {
    #[error("[update] needs a [disk]: the A/B slots live on its EFI system partition")]
    NoDisk,
    #[error("[update] `version` must be a whole number from 1 up; got {0}")]
    Version(i64),
    #[error("[update] `url` must be `http://HOST[:PORT]/PATH`, HOST an IPv4 address or a DNS name (plain HTTP: integrity comes from signatures); got `{0}`")]
    Url(String),
    #[error("[update] `keys` must name at least one ed25519 public key")]
    NoKeys,
    #[error("[update] key `{0}` is neither base64 of a 32-byte ed25519 public key nor a readable file holding one ({1})")]
    Key(String, String),
    #[error("[update] `{0}`: expected a duration like \"30s\", \"5m\", \"1h\" or a number of seconds, at least 1 s; got `{1}`")]
    Duration(&'static str, String),
    #[error("[update] health service `{0}` is not a [[service]] of this manifest")]
    UnknownService(String),
    #[error("[update] watchdog `device` must be an absolute path; got `{0}`")]
    Device(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdate {
    pub version: Spanned<i64>,
    pub url: Spanned<String>,
    pub keys: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub interval: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub watchdog: Option<RawWatchdog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    #[serde(default)]
    pub services: Vec<Spanned<String>>,
    #[serde(default, rename = "for")]
    pub for_: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub network: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWatchdog {
    #[serde(default)]
    pub device: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<toml::Value>>,
}

fn span<T>(s: &Spanned<T>) -> Span {
    s.span().into()
}

/// `"30s"`, `"5m"`, `"2h"`, `"1d"` or an integer number of seconds.
pub fn parse_duration(v: &toml::Value) -> Option<u64> {
    let s = match v {
        toml::Value::Integer(i) if *i >= 1 => return Some(*i as u64),
        toml::Value::String(s) => s.trim(),
        _ => return None,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let mul = match &s[split..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mul).filter(|&d| d >= 1)
}

fn duration(key: &'static str, v: &Spanned<toml::Value>) -> Result<u64, (Span, UpdateInvalid)> {
    parse_duration(v.get_ref()).ok_or_else(|| {
        (
            span(v),
            UpdateInvalid::Duration(key, v.get_ref().to_string()),
        )
    })
}

/// Decodes a public key: base64 of 32 bytes (surrounding space ignored).
pub fn decode_key(text: &str) -> Option<[u8; 32]> {
    let v = Base64::decode_vec(text.trim()).ok()?;
    v.try_into().ok()
}

/// `http://A.B.C.D[:PORT]/PATH`: host, port and path (path ends in `/`).
pub fn parse_url(url: &str) -> Option<(std::net::Ipv4Addr, u16, String)> {
    let (host, port, path) = parse_http_url(url)?;
    Some((host.parse().ok()?, port, path))
}

/// `http://HOST[:PORT]/PATH` where HOST is an IPv4 address or a DNS name
/// (letters, digits and hyphens in dot-separated labels): host, port and
/// path (path ends in `/`).
pub fn parse_http_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (hostport, 80),
    };
    if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let is_name = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if host.parse::<std::net::Ipv4Addr>().is_err() && !is_name {
        return None;
    }
    let mut path = path.to_string();
    if !path.ends_with('/') {
        path.push('/');
    }
    Some((host.to_string(), port, path))
}

/// Public keys as a manifest names them (base64 of 32 bytes, or a file
/// relative to `dir` holding that, as `cairn keys generate --update`
/// writes), in hex; a bad one is (where, what was written, why).
pub(crate) fn resolve_keys(
    keys: &[Spanned<String>],
    dir: &Path,
) -> Result<Vec<String>, (Span, String, String)> {
    let mut out = Vec::new();
    for k in keys {
        let text = k.get_ref();
        let key = match decode_key(text) {
            Some(key) => key,
            None => {
                let read = crate::manifest::read_limited(&dir.join(text), 4096)
                    .map_err(|e| e.to_string())
                    .and_then(|t| decode_key(&t).ok_or_else(|| "not base64 of 32 bytes".into()));
                read.map_err(|e| (span(k), text.clone(), e))?
            }
        };
        out.push(key.iter().map(|b| format!("{b:02x}")).collect());
    }
    Ok(out)
}

/// Validates `[update]`; `services` are the manifest's service names,
/// `dir` resolves key files.
pub(crate) fn build(
    raw: Option<Spanned<RawUpdate>>,
    has_disk: bool,
    services: &[&str],
    dir: &Path,
) -> Result<Option<UpdateConfig>, (Span, UpdateInvalid)> {
    let Some(raw) = raw else { return Ok(None) };
    let table = span(&raw);
    let u = raw.into_inner();
    if !has_disk {
        return Err((table, UpdateInvalid::NoDisk));
    }
    if *u.version.get_ref() < 1 {
        return Err((
            span(&u.version),
            UpdateInvalid::Version(*u.version.get_ref()),
        ));
    }
    if parse_http_url(u.url.get_ref()).is_none() {
        return Err((span(&u.url), UpdateInvalid::Url(u.url.get_ref().clone())));
    }
    if u.keys.get_ref().is_empty() {
        return Err((span(&u.keys), UpdateInvalid::NoKeys));
    }
    let keys =
        resolve_keys(u.keys.get_ref(), dir).map_err(|(sp, k, e)| (sp, UpdateInvalid::Key(k, e)))?;
    let interval_s = match &u.interval {
        Some(v) => duration("interval", v)?,
        None => DEFAULT_INTERVAL_S,
    };
    let health = match u.health {
        Some(h) => {
            for s in &h.services {
                if !services.contains(&s.get_ref().as_str()) {
                    return Err((span(s), UpdateInvalid::UnknownService(s.get_ref().clone())));
                }
            }
            HealthConfig {
                services: h.services.into_iter().map(Spanned::into_inner).collect(),
                for_s: match &h.for_ {
                    Some(v) => duration("health.for", v)?,
                    None => DEFAULT_HEALTH_S,
                },
                network: h.network.unwrap_or(false),
            }
        }
        None => HealthConfig {
            services: Vec::new(),
            for_s: DEFAULT_HEALTH_S,
            network: false,
        },
    };
    let watchdog = match u.watchdog {
        Some(w) => {
            let device = match w.device {
                Some(d) if !d.get_ref().starts_with('/') => {
                    return Err((span(&d), UpdateInvalid::Device(d.get_ref().clone())))
                }
                Some(d) => d.into_inner(),
                None => "/dev/watchdog".into(),
            };
            Some(WatchdogConfig {
                device,
                timeout_s: match &w.timeout {
                    Some(v) => duration("watchdog.timeout", v)?,
                    None => DEFAULT_WATCHDOG_S,
                },
            })
        }
        None => None,
    };
    Ok(Some(UpdateConfig {
        version: *u.version.get_ref() as u64,
        url: u.url.into_inner(),
        keys,
        interval_s,
        health,
        watchdog,
        esp: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_urls() {
        let s = |x: &str| toml::Value::String(x.into());
        assert_eq!(parse_duration(&s("30s")), Some(30));
        assert_eq!(parse_duration(&s("5m")), Some(300));
        assert_eq!(parse_duration(&s("2h")), Some(7200));
        assert_eq!(parse_duration(&toml::Value::Integer(7)), Some(7));
        assert_eq!(parse_duration(&s("0s")), None);
        assert_eq!(parse_duration(&s("5x")), None);
        assert_eq!(parse_duration(&s("")), None);
        let (h, p, path) = parse_url("http://10.0.2.2:8000/repo").unwrap();
        assert_eq!(
            (h.to_string(), p, path.as_str()),
            ("10.0.2.2".into(), 8000, "/repo/")
        );
        assert_eq!(parse_url("http://1.2.3.4").unwrap().2, "/");
        assert!(parse_url("https://1.2.3.4/").is_none());
        assert!(parse_url("http://example.com/").is_none());
        assert_eq!(
            parse_http_url("http://updates.example.com:8080/r").unwrap(),
            ("updates.example.com".to_string(), 8080, "/r/".to_string())
        );
        assert_eq!(parse_http_url("http://10.0.0.1/").unwrap().0, "10.0.0.1");
        for bad in [
            "http://a b/",
            "http://-x.example/",
            "http://a..b/",
            "http:///",
            "http://ex_ample/",
        ] {
            assert!(parse_http_url(bad).is_none(), "{bad}");
        }
    }
}

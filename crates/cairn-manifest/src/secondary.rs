//! The secondary config: `cairn.toml` on the config mount (`[config]
//! mount`), read by the init at boot, overriding parts of the config built
//! into the image. It uses the manifest's own schema for what it may set:
//!
//! ```toml
//! [[network]]                  # present: replaces every built-in [[network]]
//! match = { name = "eth0" }
//! addresses = ["192.168.7.2/24"]
//! gateway = "192.168.7.1"
//!
//! [net]                        # each key given replaces the built-in one
//! online_timeout = 10
//! ntp = ["192.168.7.1"]        # the time servers ("time" is [net] ntp)
//!
//! [service.web]                # a service of the appliance, by name
//! enabled = false
//! env = { LOG_LEVEL = "debug" } # merged over the built-in variables
//! ```
//!
//! The file sits on a partition that Secure Boot does not cover, so it may
//! set only the variables the service's `config_env` in the manifest lists;
//! any other is an error at its name, naming the service. Names the dynamic
//! loader or an interpreter takes code from (`LD_*`, `PATH`, ...:
//! [`crate::validate::never_from_config`]) are refused even when listed (the
//! manifest refuses to list them; this guards a hand-made runtime config).
//!
//! Any other key is an error. `[[network]]` and `[net]` are validated by
//! the same code as in the manifest ([`crate::network`]), so errors carry the
//! same messages and exact `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::diagnostic::{Diagnostic, Located, Span};
use crate::network::{RawNet, RawNetwork};
use crate::runtime::{InterfaceConfig, SystemConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecondary {
    #[serde(default)]
    network: Option<Vec<Spanned<RawNetwork>>>,
    #[serde(default)]
    net: Option<RawSecondaryNet>,
    #[serde(default)]
    service: BTreeMap<Spanned<String>, RawServiceOverride>,
}

/// `[net]`: like the manifest's, but an absent `ntp` keeps the built-in
/// servers while `ntp = []` removes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecondaryNet {
    #[serde(default)]
    online_timeout: Option<Spanned<i64>>,
    #[serde(default)]
    ntp: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceOverride {
    #[serde(default)]
    env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `[service.NAME]` of a secondary config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOverride {
    pub name: String,
    /// Where the name was written (for "no such service").
    pub span: Span,
    /// Merged over the service's variables: (name where it was written,
    /// value), in name order.
    pub env: Vec<(Located<String>, String)>,
    pub enabled: Option<bool>,
}

/// A parsed and validated secondary config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryOverrides {
    /// `Some` when the file has `[[network]]`: replaces the built-in list.
    pub interfaces: Option<Vec<InterfaceConfig>>,
    /// `[net] online_timeout`, seconds.
    pub online_timeout: Option<u64>,
    /// `[net] ntp`: replaces the built-in time servers.
    pub ntp: Option<Vec<IpAddr>>,
    pub services: Vec<ServiceOverride>,
    file: PathBuf,
    source: String,
}

/// Parses and validates secondary config `text`; `file` is where it came
/// from (for messages).
pub fn parse(text: &str, file: &Path) -> Result<SecondaryOverrides, Diagnostic> {
    let at = |span: Span, msg: String| Diagnostic::at(file, text, span, msg);
    let raw: RawSecondary =
        crate::raw::parse_as(text).map_err(|(span, msg)| at(span.unwrap_or_default(), msg))?;
    let line_of = |s: Span| text[..s.start.min(text.len())].matches('\n').count() + 1;
    let has_network = raw.network.is_some();
    let (ntp_given, timeout, ntp) = match raw.net {
        Some(n) => (n.ntp.is_some(), n.online_timeout, n.ntp.unwrap_or_default()),
        None => (false, None, Vec::new()),
    };
    let net = crate::network::build(
        raw.network.unwrap_or_default(),
        Some(RawNet {
            online_timeout: timeout.clone(),
            ntp,
        }),
        &line_of,
    )
    .map_err(|(span, e)| at(span, e.to_string()))?;

    let mut services = Vec::new();
    for (name, s) in raw.service {
        let mut env = Vec::new();
        for (k, v) in s.env.unwrap_or_default() {
            let key = k.get_ref();
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(at(
                    k.span().into(),
                    format!("invalid environment variable name `{key}`"),
                ));
            }
            if v.get_ref().contains('\0') {
                return Err(at(
                    v.span().into(),
                    format!("the value of `{key}` contains a NUL byte"),
                ));
            }
            env.push((Located::new(key.clone(), k.span().into()), v.into_inner()));
        }
        services.push(ServiceOverride {
            span: name.span().into(),
            name: name.into_inner(),
            env,
            enabled: s.enabled,
        });
    }
    Ok(SecondaryOverrides {
        interfaces: has_network.then_some(net.interfaces),
        online_timeout: timeout.map(|_| net.online_timeout),
        ntp: ntp_given.then_some(net.ntp),
        services,
        file: file.to_path_buf(),
        source: text.to_string(),
    })
}

impl SecondaryOverrides {
    /// `primary` with these overrides applied. A `[service.NAME]` that the
    /// appliance does not have is an error at its name.
    pub fn apply(&self, primary: &SystemConfig) -> Result<SystemConfig, Diagnostic> {
        let mut cfg = primary.clone();
        if let Some(i) = &self.interfaces {
            cfg.net.interfaces = i.clone();
        }
        if let Some(t) = self.online_timeout {
            cfg.net.online_timeout = t;
        }
        if let Some(n) = &self.ntp {
            cfg.net.ntp = n.clone();
        }
        for o in &self.services {
            let Some(s) = cfg.services.iter_mut().find(|s| s.name == o.name) else {
                let known: Vec<String> = primary
                    .services
                    .iter()
                    .map(|s| format!("`{}`", s.name))
                    .collect();
                return Err(Diagnostic::at(
                    &self.file,
                    &self.source,
                    o.span,
                    format!(
                        "there is no service `{}` in this appliance (known: {})",
                        o.name,
                        known.join(", ")
                    ),
                ));
            };
            for (key, value) in &o.env {
                if let Some(e) = refused_env(&s.name, &s.config_env, &key.value) {
                    return Err(Diagnostic::at(&self.file, &self.source, key.span, e));
                }
                s.env.insert(key.value.clone(), value.clone());
            }
            if let Some(e) = o.enabled {
                s.enabled = e;
            }
        }
        Ok(cfg)
    }
}

/// Why the secondary config may not set variable `key` of service
/// `service` whose manifest allows `allowed` (its `config_env`), if it may
/// not.
fn refused_env(service: &str, allowed: &[String], key: &str) -> Option<String> {
    if let Some(reason) = crate::validate::never_from_config(key) {
        return Some(format!(
            "the secondary config may not set `{key}` for service `{service}`: {reason}"
        ));
    }
    if allowed.iter().any(|a| a == key) {
        return None;
    }
    let what = if allowed.is_empty() {
        "its manifest allows none (`config_env` in its [[service]])".to_string()
    } else {
        let names: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
        format!(
            "its manifest allows only {} (`config_env` in its [[service]])",
            names.join(", ")
        )
    };
    Some(format!(
        "the secondary config may not set `{key}` for service `{service}`: {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Ipv6Mode, MatchRule, ServiceConfig};

    fn primary() -> SystemConfig {
        let web = ServiceConfig {
            config_env: vec!["A".into(), "GREETING".into()],
            ..ServiceConfig::new("web", &["/bin/x"])
        };
        let mut cfg = SystemConfig {
            name: "app".into(),
            services: vec![web, ServiceConfig::new("job", &["/bin/y"])],
            ..Default::default()
        };
        cfg.net.interfaces = vec![InterfaceConfig::automatic()];
        cfg.net.ntp = vec![IpAddr::from([10, 0, 0, 1])];
        cfg
    }

    fn f() -> &'static Path {
        Path::new("/config/cairn.toml")
    }

    fn apply(text: &str) -> Result<SystemConfig, Diagnostic> {
        parse(text, f())?.apply(&primary())
    }

    #[test]
    fn network_and_net_override() {
        let cfg = apply(
            "[[network]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.9.8.7/24\"]\n\
             ipv6 = \"off\"\ngateway = \"10.9.8.1\"\n\
             [net]\nonline_timeout = 5\nntp = [\"10.9.8.1\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.net.interfaces.len(), 1);
        let i = &cfg.net.interfaces[0];
        assert_eq!(i.matches, MatchRule::Name("eth0".into()));
        assert!(
            !i.dhcp4,
            "a static address turns DHCP off, as in the manifest"
        );
        assert_eq!(i.ipv6, Ipv6Mode::Off);
        assert_eq!(i.addresses[0].to_string(), "10.9.8.7/24");
        assert_eq!(cfg.net.online_timeout, 5);
        assert_eq!(cfg.net.ntp, vec![IpAddr::from([10, 9, 8, 1])]);
        assert_eq!(cfg.services, primary().services);
    }

    #[test]
    fn absent_keys_keep_the_primary() {
        assert_eq!(apply("").unwrap(), primary());
        let cfg = apply("[net]\nonline_timeout = 7\n").unwrap();
        assert_eq!(cfg.net.interfaces, primary().net.interfaces);
        assert_eq!(cfg.net.ntp, primary().net.ntp);
        assert_eq!(cfg.net.online_timeout, 7);
        let cfg = apply("[net]\nntp = []\n").unwrap();
        assert!(cfg.net.ntp.is_empty());
        assert_eq!(cfg.net.online_timeout, primary().net.online_timeout);
    }

    #[test]
    fn services_env_and_enabled() {
        let cfg = apply("[service.web]\nenabled = false\nenv = { A = \"1\" }\n").unwrap();
        assert!(!cfg.services[0].enabled);
        assert_eq!(cfg.services[0].env["A"], "1");
    }

    fn err(text: &str) -> (usize, usize, String) {
        let d = apply(text).expect_err("should be refused");
        (d.line, d.col, d.message)
    }

    #[test]
    fn only_listed_env_keys_and_never_loader_keys() {
        let cfg = apply("[service.web]\nenv = { GREETING = \"hi\" }\n").unwrap();
        assert_eq!(cfg.services[0].env["GREETING"], "hi");
        // Listed in a hand-made runtime config, LD_* and PATH are still
        // refused: the manifest could never have listed them.
        let mut prim = primary();
        prim.services[0].config_env = vec!["LD_PRELOAD".into(), "PATH".into()];
        for key in ["LD_PRELOAD", "PATH"] {
            let text = format!("[service.web]\nenv = {{ {key} = \"/x\" }}\n");
            let d = parse(&text, f()).unwrap().apply(&prim).unwrap_err();
            assert_eq!((d.line, d.col), (2, 9), "{d}");
            assert!(
                d.message.starts_with(&format!(
                    "the secondary config may not set `{key}` for service `web`"
                )),
                "{d}"
            );
        }
    }

    #[test]
    fn errors_have_positions() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            (
                "\nhostname = \"x\"\n",
                (2, 1),
                "unknown key `hostname` at the top level",
            ),
            ("[time]\nntp = []\n", (1, 2), "unknown key `time`"),
            (
                "[[network]]\nmatch = { name = \"eth0\" }\nfoo = 1\n",
                (3, 1),
                "unknown key `foo`",
            ),
            (
                "[[network]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.9.8.7\"]\n",
                (3, 14),
                "prefix length",
            ),
            (
                "[[network]]\nmatch = { name = \"a\" }\n[[network]]\nmatch = { name = \"a\" }\n",
                (4, 9),
                "entry on line 2",
            ),
            ("[net]\nonline_timeout = 0\n", (2, 18), "between 1 and 3600"),
            ("[net]\nntp = [\"x\"]\n", (2, 8), "invalid IP"),
            ("[net]\ninterface = []\n", (2, 1), "unknown key `interface`"),
            ("\n[service.web]\nenabled = \"yes\"\n", (3, 11), "enabled"),
            (
                "[service.nope]\nenabled = true\n",
                (1, 10),
                "no service `nope`",
            ),
            (
                "[service.web]\nenv = { \"A=B\" = \"1\" }\n",
                (2, 9),
                "invalid environment",
            ),
            ("x = [\n", (1, 6), "unclosed array"),
            (
                "[service.web]\nenv = { A = \"1\", LD_PRELOAD = \"/config/x.so\" }\n",
                (2, 18),
                "may not set `LD_PRELOAD` for service `web`",
            ),
            (
                "[service.web]\nenv = { PORT = \"1\" }\n",
                (2, 9),
                "may not set `PORT` for service `web`: its manifest allows only `A`, `GREETING`",
            ),
            (
                "\n[service.job]\nenv = { A = \"1\" }\n",
                (3, 9),
                "may not set `A` for service `job`: its manifest allows none",
            ),
        ];
        for (text, pos, needle) in cases {
            let (l, c, m) = err(text);
            assert_eq!((l, c), *pos, "{text}: {m}");
            assert!(m.contains(needle), "{text}: {m}");
        }
        let d = apply("[net]\nonline_timeout = 0\n").unwrap_err();
        assert!(
            d.to_string()
                .starts_with("/config/cairn.toml:2:18: error: `online_timeout`"),
            "{d}"
        );
    }
}

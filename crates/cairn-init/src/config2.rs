//! The secondary config: `cairn.toml` on the config mount (`[config]
//! mount` in the manifest) overrides parts of the primary config baked
//! into the image.
//!
//! It may set, with the primary's schema:
//! - `[[network]]`, `[time]` (any top-level key listed in
//!   [`OVERRIDABLE`]): replaces the primary's value as a whole;
//! - `[service.NAME]` with `env = { ... }` (merged over the primary's
//!   variables) and `enabled = true|false`.
//!
//! The merge happens on TOML values, so keys the primary config gains
//! later work without changes here. A secondary config with an error is
//! reported as `FILE:LINE:COL: error: ...` and the primary is used. When
//! the file does not exist, a commented template is written (temp file +
//! fsync + rename + fsync of the directory, so a power cut leaves either
//! no file or the whole file).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_manifest::{SystemConfig, SECONDARY_CONFIG_FILE};
use serde::Deserialize;
use toml::Spanned;

/// Top-level keys a secondary config may replace.
pub const OVERRIDABLE: [&str; 2] = ["network", "time"];

#[derive(Debug, thiserror::Error)]
pub enum Config2Error {
    #[error("{file}:{line}:{col}: error: {message}")]
    At {
        file: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: error: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecondary {
    #[serde(default)]
    network: Option<Spanned<toml::Value>>,
    #[serde(default)]
    time: Option<Spanned<toml::Value>>,
    #[serde(default)]
    service: BTreeMap<Spanned<String>, RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Applies secondary config `text` (from `file`, for messages) over
/// `primary`.
pub fn apply(
    primary: &SystemConfig,
    text: &str,
    file: &Path,
) -> Result<SystemConfig, Config2Error> {
    let at = |offset: usize, message: String| {
        let (line, col) = line_col(text, offset);
        Config2Error::At {
            file: file.to_path_buf(),
            line,
            col,
            message,
        }
    };
    let raw: RawSecondary = toml::from_str(text).map_err(|e| {
        let off = e.span().map_or(0, |s| s.start);
        at(off, e.message().trim().to_string())
    })?;
    let mut merged = toml::Value::try_from(primary)
        .map_err(|e| at(0, format!("cannot represent the primary config: {e}")))?;
    let Some(top) = merged.as_table_mut() else {
        return Err(at(0, "the primary config is not a table".into()));
    };
    let mut spans: Vec<(&str, usize)> = Vec::new();
    for (key, v) in [("network", &raw.network), ("time", &raw.time)] {
        if let Some(v) = v {
            top.insert(key.to_string(), v.get_ref().clone());
            spans.push((key, v.span().start));
        }
    }
    let services = top
        .entry("service")
        .or_insert_with(|| toml::Value::Array(Vec::new()));
    for (name, s) in &raw.service {
        let entry = services.as_array_mut().and_then(|a| {
            a.iter_mut()
                .find(|v| v.get("name").and_then(|n| n.as_str()) == Some(name.get_ref()))
        });
        let Some(entry) = entry.and_then(|e| e.as_table_mut()) else {
            return Err(at(
                name.span().start,
                format!(
                    "there is no service `{}` in this appliance (known: {})",
                    name.get_ref(),
                    primary
                        .services
                        .iter()
                        .map(|s| format!("`{}`", s.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if let Some(env) = &s.env {
            let e = entry
                .entry("env")
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let Some(t) = e.as_table_mut() {
                for (k, v) in env {
                    if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                        return Err(at(
                            name.span().start,
                            format!(
                                "invalid environment variable `{k}` for service `{}`",
                                name.get_ref()
                            ),
                        ));
                    }
                    t.insert(k.clone(), toml::Value::String(v.clone()));
                }
            }
        }
        if let Some(en) = s.enabled {
            entry.insert("enabled".into(), toml::Value::Boolean(en));
        }
    }
    merged.try_into::<SystemConfig>().map_err(|e| {
        // Point at the key whose value the primary's schema refused.
        let msg = e.message().trim().to_string();
        let off = spans
            .iter()
            .find(|(k, _)| msg.contains(k))
            .or(spans.first())
            .map_or(0, |(_, o)| *o);
        let key = spans
            .iter()
            .find(|(_, o)| *o == off)
            .map_or("config", |(k, _)| k);
        at(off, format!("`{key}`: {msg}"))
    })
}

/// Drops disabled services (and `after` references to them).
pub fn without_disabled(mut cfg: SystemConfig) -> SystemConfig {
    let off: Vec<String> = cfg
        .services
        .iter()
        .filter(|s| !s.enabled)
        .map(|s| s.name.clone())
        .collect();
    cfg.services.retain(|s| s.enabled);
    for s in &mut cfg.services {
        s.after.retain(|a| !off.contains(a));
    }
    cfg
}

/// The commented template written on first boot.
pub fn template(primary: &SystemConfig) -> String {
    let mut t = format!(
        "# Secondary config of the cairn appliance `{}`.\n\
         # Settings here override the ones built into the image. Uncomment and\n\
         # edit; a file with an error is reported on the console (file:line:col)\n\
         # and the built-in settings are used instead.\n\
         #\n\
         # [[network]]                 # replaces the whole built-in [[network]] list\n\
         # match = {{ name = \"eth0\" }}\n\
         # dhcp4 = true\n",
        primary.name
    );
    for s in &primary.services {
        t += &format!("\n# [service.{}]\n# enabled = {}\n", s.name, s.enabled);
        let env: Vec<String> = s
            .env
            .iter()
            .map(|(k, v)| format!("{k} = {}", toml::Value::String(v.clone())))
            .collect();
        t += &format!("# env = {{ {} }}\n", env.join(", "));
    }
    t
}

/// Writes `bytes` to `path` atomically and durably: `path.tmp`, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// What happened with the secondary config.
#[derive(Debug)]
pub enum Outcome {
    /// There was none; the template was written.
    WroteTemplate(PathBuf),
    /// It was applied.
    Applied(PathBuf),
    /// It was refused; the primary is used.
    Refused(Config2Error),
}

/// Reads `DIR/cairn.toml` and applies it over `primary`; writes the
/// template when it does not exist. Always returns a usable config.
pub fn load(primary: SystemConfig, dir: &Path) -> (SystemConfig, Outcome) {
    let path = dir.join(SECONDARY_CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match apply(&primary, &text, &path) {
            Ok(cfg) => (cfg, Outcome::Applied(path)),
            Err(e) => (primary, Outcome::Refused(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let out = match write_atomic(&path, template(&primary).as_bytes()) {
                Ok(()) => Outcome::WroteTemplate(path),
                Err(source) => Outcome::Refused(Config2Error::Io { file: path, source }),
            };
            (primary, out)
        }
        Err(source) => (
            primary,
            Outcome::Refused(Config2Error::Io { file: path, source }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_manifest::ServiceConfig;

    fn primary() -> SystemConfig {
        let svc = |n: &str, after: &[&str]| ServiceConfig {
            env: BTreeMap::from([("A".into(), "1".into())]),
            after: after.iter().map(|s| s.to_string()).collect(),
            ..ServiceConfig::new(n, &["/bin/x"])
        };
        SystemConfig {
            name: "app".into(),
            services: vec![svc("web", &[]), svc("job", &["web"])],
            ..Default::default()
        }
    }

    fn p() -> &'static Path {
        Path::new("/config/cairn.toml")
    }

    #[test]
    fn overrides_env_and_enabled() {
        let text =
            "[service.web]\nenv = { A = \"2\", B = \"3\" }\n[service.job]\nenabled = false\n";
        let cfg = apply(&primary(), text, p()).unwrap();
        assert_eq!(cfg.services[0].env["A"], "2");
        assert_eq!(cfg.services[0].env["B"], "3");
        assert!(!cfg.services[1].enabled);
        let cfg = without_disabled(cfg);
        assert_eq!(cfg.services.len(), 1);
        let text = "[service.web]\nenabled = false\n";
        let cfg = without_disabled(apply(&primary(), text, p()).unwrap());
        assert_eq!(cfg.services[0].name, "job");
        assert!(cfg.services[0].after.is_empty());
    }

    #[test]
    fn the_template_applies_cleanly() {
        let t = template(&primary());
        assert_eq!(apply(&primary(), &t, p()).unwrap(), primary());
        assert!(t.contains("# [service.web]"), "{t}");
    }

    #[test]
    fn errors_have_line_and_column() {
        let e = apply(&primary(), "\n[service.web]\nenabled = \"yes\"\n", p()).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/config/cairn.toml:3:11: error:"), "{s}");
        let e = apply(&primary(), "hostname = \"x\"\n", p())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/config/cairn.toml:1:1: error: unknown field `hostname`"),
            "{e}"
        );
        let e = apply(&primary(), "[service.nope]\nenabled = true\n", p())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":1:10: error: there is no service `nope`"),
            "{e}"
        );
        let e = apply(&primary(), "x = [\n", p()).unwrap_err().to_string();
        assert!(e.contains("/config/cairn.toml:"), "{e}");
        // `time` is not (yet) part of the primary schema: refused at its key.
        let e = apply(&primary(), "\n[time]\nntp = 1\n", p())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/config/cairn.toml:2:1: error: `time`"),
            "{e}"
        );
    }

    #[test]
    fn load_writes_template_then_applies() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, o) = load(primary(), dir.path());
        assert!(matches!(o, Outcome::WroteTemplate(_)), "{o:?}");
        assert_eq!(cfg, primary());
        let text = std::fs::read_to_string(dir.path().join("cairn.toml")).unwrap();
        assert_eq!(text, template(&primary()));
        std::fs::write(
            dir.path().join("cairn.toml"),
            "[service.web]\nenabled = false\n",
        )
        .unwrap();
        let (cfg, o) = load(primary(), dir.path());
        assert!(matches!(o, Outcome::Applied(_)));
        assert!(!cfg.services[0].enabled);
        std::fs::write(dir.path().join("cairn.toml"), "bad = \n").unwrap();
        let (cfg, o) = load(primary(), dir.path());
        assert!(matches!(o, Outcome::Refused(_)));
        assert_eq!(cfg, primary());
    }
}

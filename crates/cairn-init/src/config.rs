//! The configuration the init runs: the primary config baked into the
//! image (`/etc/cairn/system.json`, read by [`load_config`]), with the
//! secondary config merged over it ([`settle`]). This is the one place
//! where the two meet; test mode goes through the same path.
//!
//! The secondary config: `cairn.toml` on the config mount (`[config]
//! mount` in the manifest) overrides parts of the primary config baked
//! into the image.
//!
//! It uses the user manifest's schema for what it may set (parsed and
//! validated by [`cairn_manifest::secondary`]):
//! - `[[network]]`: when present, replaces the built-in `[[network]]` list;
//! - `[net]` `online_timeout` and `ntp` (the time servers): each replaces
//!   the built-in value;
//! - `[service.NAME]` with `env = { ... }` (merged over the primary's
//!   variables) and `enabled = true|false`. Only the variables the
//!   service's `config_env` lists may be set, never `LD_*`, `PATH` and the
//!   like: the partition is not covered by Secure Boot, and a service's
//!   environment is code for many programs.
//!
//! A secondary config with an error is reported as `FILE:LINE:COL: error:
//! ...` and the primary is used. When the file does not exist, a commented
//! template is written (temp file + fsync + rename + fsync of the
//! directory, so a power cut leaves either no file or the whole file).

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_manifest::{
    Diagnostic, SystemConfig, NODE_CONFIG_PATH, NODE_TARGET, SECONDARY_CONFIG_FILE,
    SYSTEM_CONFIG_PATH,
};

use crate::{info, Mode};

/// Test mode only: overrides the config path.
pub const CONFIG_ENV: &str = "CAIRN_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum Config2Error {
    #[error("{0}")]
    At(Diagnostic),
    #[error("{file}: error: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// Applies secondary config `text` (from `file`, for messages) over
/// `primary`.
pub fn apply(
    primary: &SystemConfig,
    text: &str,
    file: &Path,
) -> Result<SystemConfig, Config2Error> {
    cairn_manifest::secondary::parse(text, file)
        .and_then(|o| o.apply(primary))
        .map_err(Config2Error::At)
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

/// The commented template written on first boot. Every commented example
/// is valid: uncommenting a block gives a config that applies.
pub fn template(primary: &SystemConfig) -> String {
    let mut t = format!(
        "# Secondary config of the cairn appliance `{}`.\n\
         # Settings here override the ones built into the image, with the same\n\
         # schema as the appliance manifest. Uncomment and edit; a file with an\n\
         # error is reported on the console (file:line:col) and the built-in\n\
         # settings are used instead.\n\
         #\n\
         # [[network]]                  # replaces ALL built-in [[network]] entries\n\
         # match = {{ name = \"eth0\" }}    # or {{ mac = \"52:54:00:12:34:56\" }}\n\
         # addresses = [\"192.168.7.2/24\"] # a static IPv4 address turns DHCP off\n\
         # gateway = \"192.168.7.1\"\n\
         # dns = [\"192.168.7.1\"]\n\
         # ipv6 = \"slaac\"                # slaac | off | static\n\
         #\n\
         # [net]\n\
         # online_timeout = 30           # seconds network-online waits at most\n\
         # ntp = [\"192.168.7.1\"]         # time (SNTP) servers, IP addresses\n",
        primary.name
    );
    for s in &primary.services {
        t += &format!("\n# [service.{}]\n# enabled = {}\n", s.name, s.enabled);
        // Only the variables this file may set (the manifest's
        // `config_env`), with their built-in values; the others, which
        // may hold secrets, are never copied here.
        if s.config_env.is_empty() {
            t += "#   (no env: the manifest's `config_env` lists no variable this file may set)\n";
            continue;
        }
        let keys: Vec<String> = s.config_env.iter().map(|k| toml_key(k)).collect();
        t += &format!("#   (env may set: {})\n", keys.join(", "));
        let env: Vec<String> = s
            .config_env
            .iter()
            .filter_map(|k| {
                let v = s.env.get(k)?;
                Some(format!(
                    "{} = {}",
                    toml_key(k),
                    toml::Value::String(v.clone())
                ))
            })
            .collect();
        t += &format!("# env = {{ {} }}\n", env.join(", "));
    }
    t
}

/// `k` as a TOML key: bare when it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

/// `template` with every `# ` comment prefix removed except on lines that
/// are only prose: what a user gets by uncommenting everything.
#[cfg(test)]
fn uncommented(t: &str) -> String {
    t.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Writes `bytes` to `path` atomically and durably: `path.tmp`, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_held(path, bytes, None)
}

/// [`write_atomic`] with a test hook: `hold` stops between the synced temp
/// file and the rename (logged), so a test can cut the power exactly
/// there. Only test mode or `test_hooks = true` images pass one (see
/// `cairn.test_hold_write` in init.rs).
fn write_atomic_held(path: &Path, bytes: &[u8], hold: Option<Duration>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = path.with_extension("tmp");
    // Never through a symlink planted at the temp name: remove whatever is
    // there (unlink does not follow) and create the file anew.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Some(hold) = hold {
        info!(
            "test hook: {} written and synced; holding {}s before the rename",
            tmp.display(),
            hold.as_secs()
        );
        std::thread::sleep(hold);
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid config {path}: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
}

/// Reads and parses the runtime config: JSON as the builder writes it, or
/// TOML when the file name ends in `.toml` (a hand-written config for test
/// mode).
pub fn load_config(path: &Path) -> Result<SystemConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "toml") {
        return SystemConfig::from_toml(&text).map_err(|source| ConfigError::Toml {
            path: path.into(),
            source,
        });
    }
    SystemConfig::from_json(&text).map_err(|source| ConfigError::Json {
        path: path.into(),
        source,
    })
}

/// The config path: [`SYSTEM_CONFIG_PATH`], or `overridden` (the value of
/// `$CAIRN_CONFIG`) in test mode.
pub fn config_path(mode: Mode, overridden: Option<std::ffi::OsString>) -> PathBuf {
    match (mode, overridden) {
        (Mode::Test, Some(p)) => p.into(),
        _ => SYSTEM_CONFIG_PATH.into(),
    }
}

/// The config to run, once the disks are mounted: the secondary config
/// from `[config] mount` applied over the primary when that mount is in
/// `mounted` (each outcome logged), then disabled services dropped.
/// `hold`: the test hook of [`write_atomic_held`] for the template.
pub fn settle(cfg: SystemConfig, mounted: &[String], hold: Option<Duration>) -> SystemConfig {
    let cfg = match &cfg.config_mount {
        Some(dir) if mounted.iter().any(|m| m == dir) => {
            let (cfg, outcome) = load_held(cfg.clone(), Path::new(dir), hold);
            match outcome {
                Outcome::WroteTemplate(p) => {
                    info!(
                        "secondary config: wrote a commented template to {}",
                        p.display()
                    )
                }
                Outcome::Applied(p) => info!("secondary config {} applied", p.display()),
                Outcome::Refused(e) => {
                    for line in e.to_string().lines() {
                        info!("{line}");
                    }
                    info!("secondary config refused: using the built-in config");
                }
            }
            cfg
        }
        Some(dir) if !cfg.mounts.is_empty() => {
            info!("secondary config: {dir} is not mounted; using the built-in config");
            cfg
        }
        _ => cfg,
    };
    without_disabled(cfg)
}

/// The node config agent's word (`cairnctl`'s `node-config apply|builtin`
/// request): with `apply`, the verified node config it left at
/// [`NODE_CONFIG_PATH`] is applied to the services that have not
/// started; either way the services waiting for [`NODE_TARGET`] may start.
/// Taken once per boot.
pub fn settle_node(sup: &mut crate::supervise::Supervisor, take: bool) -> Result<(), String> {
    if crate::targets::is_reached(NODE_TARGET) {
        return Err("the node config is settled for this boot".into());
    }
    if take {
        let path = Path::new(NODE_CONFIG_PATH);
        let primary = SystemConfig {
            services: sup.configs().to_vec(),
            ..Default::default()
        };
        let applied = read_limited(path, SECONDARY_MAX)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| apply(&primary, &text, path).map_err(|e| e.to_string()))?;
        sup.override_waiting(applied.services);
        info!("node config applied");
    }
    crate::targets::reach(NODE_TARGET);
    Ok(())
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

/// Largest secondary config read (it holds a few settings).
pub const SECONDARY_MAX: u64 = 256 * 1024;

/// Reads a text file of at most `max` bytes; a larger one is an error
/// that says so (the file sits on a partition anyone may write).
fn read_limited(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    File::open(path)?.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB; refused",
            max / 1024
        )));
    }
    Ok(text)
}

/// Reads `DIR/cairn.toml` and applies it over `primary`; writes the
/// template when it does not exist. Always returns a usable config.
pub fn load(primary: SystemConfig, dir: &Path) -> (SystemConfig, Outcome) {
    load_held(primary, dir, None)
}

fn load_held(primary: SystemConfig, dir: &Path, hold: Option<Duration>) -> (SystemConfig, Outcome) {
    let path = dir.join(SECONDARY_CONFIG_FILE);
    match read_limited(&path, SECONDARY_MAX) {
        Ok(text) => match apply(&primary, &text, &path) {
            Ok(cfg) => (cfg, Outcome::Applied(path)),
            Err(e) => (primary, Outcome::Refused(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let out = match write_atomic_held(&path, template(&primary).as_bytes(), hold) {
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
    use std::collections::BTreeMap;

    #[test]
    fn config_override_only_in_test_mode() {
        let over = || Some(std::ffi::OsString::from("/tmp/x.toml"));
        assert_eq!(
            config_path(Mode::Test, over()),
            PathBuf::from("/tmp/x.toml")
        );
        assert_eq!(
            config_path(Mode::Pid1, over()),
            PathBuf::from(SYSTEM_CONFIG_PATH)
        );
        assert_eq!(
            config_path(Mode::Test, None),
            PathBuf::from(SYSTEM_CONFIG_PATH)
        );
    }

    #[test]
    fn config_errors_name_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let e = load_config(&missing).unwrap_err().to_string();
        assert!(e.contains("none.toml"), "{e}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "name = \"x\"\n[[service]]\nname = 3\n").unwrap();
        let e = load_config(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "{e}");
        assert!(e.contains("line 3, column 8"), "{e}");

        let bad = dir.path().join("system.json");
        std::fs::write(
            &bad,
            "{\"name\": \"x\",\n\"service\": [\n  {\"name\": 3}]}\n",
        )
        .unwrap();
        let e = load_config(&bad).unwrap_err().to_string();
        assert!(e.contains("system.json"), "{e}");
        assert!(e.contains("line 3 column 12"), "{e}");
        let good = SystemConfig {
            name: "x".into(),
            ..Default::default()
        };
        std::fs::write(&bad, good.to_json()).unwrap();
        assert_eq!(load_config(&bad).unwrap(), good);
    }

    fn primary() -> SystemConfig {
        let svc = |n: &str, after: &[&str]| ServiceConfig {
            env: BTreeMap::from([("A".into(), "1".into()), ("TOKEN".into(), "s3cret".into())]),
            config_env: vec!["A".into(), "B".into()],
            after: after.iter().map(|s| s.to_string()).collect(),
            ..ServiceConfig::new(n, &["/bin/x"])
        };
        SystemConfig {
            name: "app".into(),
            services: vec![svc("web", &[]), svc("job", &["web"])],
            ..Default::default()
        }
    }

    #[test]
    fn an_oversized_secondary_config_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let big = "# x\n".repeat((SECONDARY_MAX as usize) / 4 + 1);
        std::fs::write(dir.path().join("cairn.toml"), big).unwrap();
        let (cfg, out) = load(primary(), dir.path());
        assert_eq!(cfg, primary());
        match out {
            Outcome::Refused(e) => assert!(e.to_string().contains("larger than 256 KiB"), "{e}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn the_template_is_not_written_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("cairn.tmp")).unwrap();
        let (_, out) = load(primary(), dir.path());
        assert!(matches!(out, Outcome::WroteTemplate(_)), "{out:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
        assert!(!dir.path().join("cairn.tmp").exists());
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
    fn env_keys_the_manifest_does_not_list_are_refused_at_their_place() {
        // The attack: root code through the CONFIG partition.
        let text = "[service.web]\nenv = { A = \"2\", LD_PRELOAD = \"/config/x.so\" }\n";
        let e = apply(&primary(), text, p()).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "/config/cairn.toml:2:18: error: the secondary config may not set `LD_PRELOAD` for service `web`"
            ),
            "{e}"
        );
        // A plain key the manifest does not list: refused, naming what is allowed.
        let text = "\n[service.job]\nenv = { TOKEN = \"mine\" }\n";
        let e = apply(&primary(), text, p()).unwrap_err().to_string();
        assert!(
            e.starts_with("/config/cairn.toml:3:9: error: the secondary config may not set `TOKEN` for service `job`: its manifest allows only `A`, `B`"),
            "{e}"
        );
        // Through load: refused as a whole, the primary runs.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cairn.toml"),
            "[service.web]\nenabled = false\nenv = { PATH = \"/config/bin\" }\n",
        )
        .unwrap();
        let (cfg, out) = load(primary(), dir.path());
        assert_eq!(cfg, primary());
        match out {
            Outcome::Refused(e) => assert!(
                e.to_string()
                    .contains(":3:9: error: the secondary config may not set `PATH`"),
                "{e}"
            ),
            o => panic!("{o:?}"),
        }
        // Listed keys still apply.
        let cfg = apply(&primary(), "[service.web]\nenv = { B = \"x\" }\n", p()).unwrap();
        assert_eq!(cfg.services[0].env["B"], "x");
    }

    #[test]
    fn the_template_holds_only_the_keys_it_may_set() {
        let t = template(&primary());
        assert!(
            t.contains("#   (env may set: A, B)\n# env = { A = \"1\" }\n"),
            "{t}"
        );
        assert!(!t.contains("TOKEN") && !t.contains("s3cret"), "{t}");
        let mut none = primary();
        none.services[0].config_env.clear();
        let t = template(&none);
        assert!(t.contains("no variable this file may set"), "{t}");
        let cfg = apply(&none, &uncommented(&t), p()).unwrap();
        assert_eq!(cfg.services, none.services);
    }

    #[test]
    fn the_template_applies_cleanly() {
        let t = template(&primary());
        assert_eq!(apply(&primary(), &t, p()).unwrap(), primary());
        assert!(t.contains("# [service.web]"), "{t}");
        // Uncommenting every example gives a valid config.
        let all = uncommented(&t);
        let cfg = apply(&primary(), &all, p()).unwrap_or_else(|e| panic!("{e}\n{all}"));
        assert_eq!(
            cfg.net.interfaces[0].addresses[0].to_string(),
            "192.168.7.2/24"
        );
        assert_eq!(cfg.net.ntp.len(), 1);
        assert_eq!(cfg.services, primary().services);
    }

    #[test]
    fn network_override_replaces_the_primary_list() {
        let mut prim = primary();
        prim.net.interfaces = vec![cairn_manifest::InterfaceConfig::automatic()];
        let text = "[[network]]\nmatch = { mac = \"52:54:00:12:34:56\" }\n\
                    addresses = [\"10.9.8.7/24\"]\nipv6 = \"off\"\n\
                    [net]\nonline_timeout = 3\n";
        let cfg = apply(&prim, text, p()).unwrap();
        assert_eq!(cfg.net.interfaces.len(), 1);
        let i = &cfg.net.interfaces[0];
        assert!(!i.dhcp4);
        assert_eq!(i.addresses[0].to_string(), "10.9.8.7/24");
        assert_eq!(cfg.net.online_timeout, 3);
        assert_eq!(cfg.services, prim.services);
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
            e.starts_with("/config/cairn.toml:1:1: error: unknown key `hostname`"),
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
        // Networking is validated like the manifest's, at the value.
        let e = apply(
            &primary(),
            "[[network]]\nmatch = { name = \"eth0\" }\ngateway = \"10.0.0.1\"\n",
            p(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/config/cairn.toml:3:11: error: `gateway` needs an IPv4 address"),
            "{e}"
        );
        // There is no `[time]`: time servers are `[net] ntp`.
        let e = apply(&primary(), "\n[time]\nntp = 1\n", p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key `time`"), "{e}");
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

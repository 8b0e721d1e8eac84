//! How services run: credentials, limits, capabilities, restart backoff,
//! stop timeout, cgroup limits; the image's users and groups (`[[user]]`,
//! `[[group]]`, rendered as `/etc/passwd` and `/etc/group`); and `[log]`.
//! This module validates the keys; what they become is the runtime
//! contract's ([`crate::runtime::RunSettings`], [`crate::runtime::LogConfig`]).
//!
//! ```toml
//! [[user]]
//! name = "app"
//! uid = 1000
//! gid = 1000              # default: uid (a group named like the user is added if missing)
//! home = "/var/lib/app"   # default "/"
//!
//! [[group]]
//! name = "audio"
//! gid = 29
//! members = ["app"]
//!
//! [[service]]
//! # ...
//! user = "app"            # name or number; default root
//! group = "app"           # default: the user's primary group
//! groups = ["audio"]      # supplementary groups
//! umask = "0027"
//! workdir = "/var/lib/app"
//! limits = { nofile = 1024, core = 0, stack = "unlimited" }
//! capabilities = ["CAP_NET_BIND_SERVICE"]   # keep these, drop the rest
//! memory_max = "64M"      # cgroup v2 memory.max
//! pids_max = 32           # cgroup v2 pids.max
//! stop_timeout = "5s"     # SIGTERM .. SIGKILL
//! restart_delay = "1s"    # first restart delay, doubled each time
//! restart_delay_max = "1m"
//! restart_limit = 10      # quick failures in a row before `failed`; 0 = never give up
//!
//! [log]
//! lines = 1000            # in-memory ring
//! console = "info"        # off | error | warn | info | debug
//! dir = "/var/log"        # written when it exists and is writable
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::runtime::{Level, LogConfig, RunSettings};

/// Linux capability names, by number (`CAP_CHOWN` is 0).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Resource limit names (`limits` keys) and their `RLIMIT_*` numbers.
pub const RLIMITS: [(&str, u32); 16] = [
    ("cpu", 0),
    ("fsize", 1),
    ("data", 2),
    ("stack", 3),
    ("core", 4),
    ("rss", 5),
    ("nproc", 6),
    ("nofile", 7),
    ("memlock", 8),
    ("as", 9),
    ("locks", 10),
    ("sigpending", 11),
    ("msgqueue", 12),
    ("nice", 13),
    ("rtprio", 14),
    ("rttime", 15),
];

/// `limits` value meaning no limit (`RLIM_INFINITY`); the largest value
/// a TOML integer can hold.
pub const UNLIMITED: u64 = i64::MAX as u64;

/// Most lines `[log] lines` may keep.
pub const MAX_LOG_LINES: usize = 1_000_000;

/// The defaults of the keys validated here belong to the runtime forms.
pub use crate::runtime::{
    DEFAULT_LOG_LINES, DEFAULT_RESTART_DELAY_MAX_MS, DEFAULT_RESTART_DELAY_MS,
    DEFAULT_RESTART_LIMIT, DEFAULT_STOP_TIMEOUT_MS,
};

/// Everything the supervision keys can get wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RunInvalid {
    #[error(
        "invalid duration `{0}`: expected a number with a unit, like \"500ms\", \"5s\" or \"2m\""
    )]
    Duration(String),
    #[error("invalid size `{0}`: expected bytes as a number, or a string like \"512K\", \"64M\", \"1G\"")]
    Size(String),
    #[error("unknown capability `{0}`: expected a name such as CAP_NET_BIND_SERVICE")]
    Capability(String),
    #[error("unknown resource limit `{0}`: expected one of cpu, fsize, data, stack, core, rss, nproc, nofile, memlock, as, locks, sigpending, msgqueue, nice, rtprio, rttime")]
    Rlimit(String),
    #[error("invalid limit value: expected a non-negative integer or \"unlimited\"")]
    RlimitValue,
    #[error("invalid umask `{0}`: expected octal digits such as \"0022\", at most \"0777\"")]
    Umask(String),
    #[error("`workdir` must be an absolute path inside the image; got `{0}`")]
    Workdir(String),
    #[error(
        "user `{0}` is not defined: add a [[user]] (root and nobody always exist) or use a number"
    )]
    UnknownUser(String),
    #[error("group `{0}` is not defined: add a [[group]] (root and nogroup always exist) or use a number")]
    UnknownGroup(String),
    #[error("invalid user or group name `{0}`: expected lowercase letters, digits, `_` and `-`, starting with a letter or `_`, at most 32 characters")]
    AccountName(String),
    #[error("duplicate {kind} `{name}`")]
    DuplicateAccount { kind: &'static str, name: String },
    #[error("`home` must be an absolute path without `:`; got `{0}`")]
    Home(String),
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    #[error("`lines` must be between 1 and {MAX_LOG_LINES}")]
    LogLines,
    #[error("`dir` must be an absolute path inside the image; got `{0}`")]
    LogDir(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    #[serde(default)]
    pub lines: Option<Spanned<i64>>,
    #[serde(default)]
    pub console: Option<Level>,
    #[serde(default)]
    pub dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub name: Spanned<String>,
    pub uid: u32,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default)]
    pub home: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub name: Spanned<String>,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<Spanned<String>>,
}

/// A `[[user]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// A `[[group]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The raw supervision keys of a `[[service]]`.
#[derive(Debug, Default)]
pub(crate) struct RawRun {
    pub user: Option<Spanned<toml::Value>>,
    pub group: Option<Spanned<toml::Value>>,
    pub groups: Vec<Spanned<toml::Value>>,
    pub umask: Option<Spanned<String>>,
    pub workdir: Option<Spanned<String>>,
    pub limits: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    pub capabilities: Option<Vec<Spanned<String>>>,
    pub memory_max: Option<Spanned<toml::Value>>,
    pub pids_max: Option<Spanned<u64>>,
    pub stop_timeout: Option<Spanned<toml::Value>>,
    pub restart_delay: Option<Spanned<toml::Value>>,
    pub restart_delay_max: Option<Spanned<toml::Value>>,
    pub restart_limit: Option<u32>,
}

/// A failure with the span it is about.
pub(crate) type RunFailure = (crate::Span, RunInvalid);

fn sp<T>(s: &Spanned<T>) -> crate::Span {
    s.span().into()
}

/// Parses `"500ms"`, `"5s"`, `"2m"`, `"1h"` or a bare integer (seconds)
/// into milliseconds.
pub fn parse_duration_ms(v: &toml::Value) -> Result<u64, RunInvalid> {
    let text = match v {
        toml::Value::Integer(n) if *n >= 0 => return Ok((*n as u64).saturating_mul(1000)),
        toml::Value::String(s) => s.trim(),
        other => return Err(RunInvalid::Duration(other.to_string())),
    };
    let bad = || RunInvalid::Duration(text.to_string());
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = text[..digits].parse().map_err(|_| bad())?;
    let mult = match text[digits..].trim() {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses a byte size: an integer, or `"512K"`, `"64M"`, `"1G"` (powers
/// of 1024), or `"max"` for no limit (`None`).
pub fn parse_size(v: &toml::Value) -> Result<Option<u64>, RunInvalid> {
    let text = match v {
        toml::Value::Integer(n) if *n > 0 => return Ok(Some(*n as u64)),
        toml::Value::String(s) => s.trim(),
        other => return Err(RunInvalid::Size(other.to_string())),
    };
    if text == "max" {
        return Ok(None);
    }
    let bad = || RunInvalid::Size(text.to_string());
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = text[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match &text[digits..] {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(bad()),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(bad()),
        Some(b) => Ok(Some(b)),
    }
}

/// `CAP_NET_ADMIN`, `cap_net_admin` or `net_admin` → `CAP_NET_ADMIN`.
pub fn normalize_capability(name: &str) -> Result<String, RunInvalid> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(RunInvalid::Capability(name.to_string()))
    }
}

/// The number of a capability name as [`normalize_capability`] returns it.
pub fn capability_number(name: &str) -> Option<u32> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .map(|i| i as u32)
}

/// The `RLIMIT_*` number of a `limits` key.
pub fn rlimit_number(name: &str) -> Option<u32> {
    RLIMITS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// `[a-z_][a-z0-9_-]*`, at most 32 characters (useradd's rule, without `$`).
pub fn check_account_name(name: &str) -> Result<(), RunInvalid> {
    let mut c = name.chars();
    let first = c.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest = c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first && rest && name.len() <= 32 {
        Ok(())
    } else {
        Err(RunInvalid::AccountName(name.to_string()))
    }
}

/// The image's accounts: the built-in `root` and `nobody` plus the
/// manifest's entries; primary groups that no `[[group]]` defines are
/// added, named after their user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<UserEntry>,
    pub groups: Vec<GroupEntry>,
}

impl Accounts {
    pub(crate) fn build(
        users: Vec<Spanned<RawUser>>,
        groups: Vec<Spanned<RawGroup>>,
    ) -> Result<Accounts, RunFailure> {
        let mut out = Accounts {
            users: vec![
                UserEntry {
                    name: "root".into(),
                    uid: 0,
                    gid: 0,
                    home: "/root".into(),
                },
                UserEntry {
                    name: "nobody".into(),
                    uid: 65534,
                    gid: 65534,
                    home: "/nonexistent".into(),
                },
            ],
            groups: vec![
                GroupEntry {
                    name: "root".into(),
                    gid: 0,
                    members: Vec::new(),
                },
                GroupEntry {
                    name: "nogroup".into(),
                    gid: 65534,
                    members: Vec::new(),
                },
            ],
        };
        for g in groups {
            let g = g.into_inner();
            check_account_name(g.name.get_ref()).map_err(|e| (sp(&g.name), e))?;
            if out.groups.iter().any(|o| o.name == *g.name.get_ref()) {
                return Err((
                    sp(&g.name),
                    RunInvalid::DuplicateAccount {
                        kind: "group",
                        name: g.name.get_ref().clone(),
                    },
                ));
            }
            out.groups.push(GroupEntry {
                name: g.name.into_inner(),
                gid: g.gid,
                members: Vec::new(),
            });
            let idx = out.groups.len() - 1;
            for m in g.members {
                check_account_name(m.get_ref()).map_err(|e| (sp(&m), e))?;
                out.groups[idx].members.push(m.into_inner());
            }
        }
        for u in users {
            let u = u.into_inner();
            check_account_name(u.name.get_ref()).map_err(|e| (sp(&u.name), e))?;
            if out.users.iter().any(|o| o.name == *u.name.get_ref()) {
                return Err((
                    sp(&u.name),
                    RunInvalid::DuplicateAccount {
                        kind: "user",
                        name: u.name.get_ref().clone(),
                    },
                ));
            }
            let home = match &u.home {
                Some(h) => {
                    let v = h.get_ref();
                    if !v.starts_with('/') || v.contains(':') || v.contains('\n') {
                        return Err((sp(h), RunInvalid::Home(v.clone())));
                    }
                    v.clone()
                }
                None => "/".into(),
            };
            let gid = u.gid.unwrap_or(u.uid);
            if !out.groups.iter().any(|g| g.gid == gid) {
                if out.groups.iter().any(|g| g.name == *u.name.get_ref()) {
                    return Err((
                        sp(&u.name),
                        RunInvalid::DuplicateAccount {
                            kind: "group",
                            name: u.name.get_ref().clone(),
                        },
                    ));
                }
                out.groups.push(GroupEntry {
                    name: u.name.get_ref().clone(),
                    gid,
                    members: Vec::new(),
                });
            }
            out.users.push(UserEntry {
                name: u.name.into_inner(),
                uid: u.uid,
                gid,
                home,
            });
        }
        Ok(out)
    }

    fn user_known(&self, v: &str) -> bool {
        v.parse::<u32>().is_ok() || self.users.iter().any(|u| u.name == v)
    }

    fn group_known(&self, v: &str) -> bool {
        v.parse::<u32>().is_ok() || self.groups.iter().any(|g| g.name == v)
    }

    /// `/etc/passwd` (login shell `/bin/false`: nothing logs in).
    pub fn passwd(&self) -> String {
        self.users
            .iter()
            .map(|u| {
                format!(
                    "{}:x:{}:{}:{}:{}:/bin/false\n",
                    u.name, u.uid, u.gid, u.name, u.home
                )
            })
            .collect()
    }

    /// `/etc/group`.
    pub fn group(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")))
            .collect()
    }
}

/// A user or group value: a name (string) or a number.
fn account_value(v: &Spanned<toml::Value>, kind: &str) -> Result<String, RunFailure> {
    match v.get_ref() {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) if (0..=i64::from(u32::MAX - 1)).contains(n) => Ok(n.to_string()),
        other => Err((
            sp(v),
            if kind == "user" {
                RunInvalid::UnknownUser(other.to_string())
            } else {
                RunInvalid::UnknownGroup(other.to_string())
            },
        )),
    }
}

fn duration(v: &Option<Spanned<toml::Value>>, default: u64) -> Result<u64, RunFailure> {
    match v {
        Some(v) => parse_duration_ms(v.get_ref()).map_err(|e| (sp(v), e)),
        None => Ok(default),
    }
}

/// Validates a service's supervision keys against the image's accounts.
pub(crate) fn run_settings(raw: RawRun, accounts: &Accounts) -> Result<RunSettings, RunFailure> {
    let mut out = RunSettings::default();
    if let Some(u) = &raw.user {
        let name = account_value(u, "user")?;
        if !accounts.user_known(&name) {
            return Err((sp(u), RunInvalid::UnknownUser(name)));
        }
        out.user = Some(name);
    }
    if let Some(g) = &raw.group {
        let name = account_value(g, "group")?;
        if !accounts.group_known(&name) {
            return Err((sp(g), RunInvalid::UnknownGroup(name)));
        }
        out.group = Some(name);
    }
    for g in &raw.groups {
        let name = account_value(g, "group")?;
        if !accounts.group_known(&name) {
            return Err((sp(g), RunInvalid::UnknownGroup(name)));
        }
        out.groups.push(name);
    }
    if let Some(m) = &raw.umask {
        let t = m.get_ref();
        let ok = !t.is_empty() && t.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(t, 8) {
            Ok(v) if ok && v <= 0o777 => out.umask = Some(v),
            _ => return Err((sp(m), RunInvalid::Umask(t.clone()))),
        }
    }
    if let Some(w) = &raw.workdir {
        let t = w.get_ref();
        if !t.starts_with('/') || t.contains('\0') {
            return Err((sp(w), RunInvalid::Workdir(t.clone())));
        }
        out.workdir = Some(t.clone());
    }
    for (k, v) in &raw.limits {
        if rlimit_number(k.get_ref()).is_none() {
            return Err((sp(k), RunInvalid::Rlimit(k.get_ref().clone())));
        }
        let n = match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => *n as u64,
            toml::Value::String(s) if s == "unlimited" => UNLIMITED,
            _ => return Err((sp(v), RunInvalid::RlimitValue)),
        };
        out.limits.insert(k.get_ref().clone(), n);
    }
    if let Some(caps) = &raw.capabilities {
        let mut keep = Vec::new();
        for c in caps {
            let n = normalize_capability(c.get_ref()).map_err(|e| (sp(c), e))?;
            if !keep.contains(&n) {
                keep.push(n);
            }
        }
        out.capabilities = Some(keep);
    }
    if let Some(m) = &raw.memory_max {
        out.memory_max = parse_size(m.get_ref()).map_err(|e| (sp(m), e))?;
    }
    if let Some(p) = &raw.pids_max {
        if *p.get_ref() == 0 {
            return Err((sp(p), RunInvalid::Zero("pids_max")));
        }
        out.pids_max = Some(*p.get_ref());
    }
    out.stop_timeout_ms = duration(&raw.stop_timeout, DEFAULT_STOP_TIMEOUT_MS)?;
    out.restart_delay_ms = duration(&raw.restart_delay, DEFAULT_RESTART_DELAY_MS)?;
    out.restart_delay_max_ms = duration(&raw.restart_delay_max, DEFAULT_RESTART_DELAY_MAX_MS)?;
    if out.restart_delay_max_ms < out.restart_delay_ms {
        out.restart_delay_max_ms = out.restart_delay_ms;
    }
    out.restart_limit = raw.restart_limit.unwrap_or(DEFAULT_RESTART_LIMIT);
    Ok(out)
}

/// Validates `[log]`.
pub(crate) fn log_config(raw: Option<RawLog>) -> Result<LogConfig, RunFailure> {
    let mut out = LogConfig::default();
    let Some(raw) = raw else { return Ok(out) };
    if let Some(l) = &raw.lines {
        let n = *l.get_ref();
        if n < 1 || n as u64 > MAX_LOG_LINES as u64 {
            return Err((sp(l), RunInvalid::LogLines));
        }
        out.lines = n as usize;
    }
    if let Some(c) = raw.console {
        out.console = c;
    }
    if let Some(d) = &raw.dir {
        let t = d.get_ref();
        if !t.starts_with('/') || t.contains('\0') || t.split('/').any(|c| c == "..") {
            return Err((sp(d), RunInvalid::LogDir(t.clone())));
        }
        out.dir = Some(t.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> toml::Value {
        toml::Value::String(t.into())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms(&s("500ms")), Ok(500));
        assert_eq!(parse_duration_ms(&s("5s")), Ok(5000));
        assert_eq!(parse_duration_ms(&s("2m")), Ok(120_000));
        assert_eq!(parse_duration_ms(&toml::Value::Integer(3)), Ok(3000));
        for bad in ["", "s", "5", "5 parsecs", "-1s", "1.5s"] {
            assert!(parse_duration_ms(&s(bad)).is_err(), "{bad}");
        }
        assert!(parse_duration_ms(&toml::Value::Integer(-1)).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&s("64M")), Ok(Some(64 << 20)));
        assert_eq!(parse_size(&s("1G")), Ok(Some(1 << 30)));
        assert_eq!(parse_size(&s("max")), Ok(None));
        assert_eq!(parse_size(&toml::Value::Integer(4096)), Ok(Some(4096)));
        for bad in ["", "M", "64X", "0"] {
            assert!(parse_size(&s(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities() {
        assert_eq!(
            normalize_capability("net_bind_service").unwrap(),
            "CAP_NET_BIND_SERVICE"
        );
        assert_eq!(normalize_capability("CAP_KILL").unwrap(), "CAP_KILL");
        assert!(normalize_capability("CAP_FLY").is_err());
        assert_eq!(capability_number("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(rlimit_number("nofile"), Some(7));
        assert_eq!(rlimit_number("bogus"), None);
    }

    #[test]
    fn account_names() {
        assert!(check_account_name("app").is_ok());
        assert!(check_account_name("_svc-1").is_ok());
        for bad in ["", "App", "1app", "a:b", &"x".repeat(33)] {
            assert!(check_account_name(bad).is_err(), "{bad}");
        }
    }

    const HEAD: &str = "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n";

    fn parse(tail: &str) -> Result<crate::Manifest, crate::Diagnostic> {
        crate::Manifest::parse(&format!("{HEAD}{tail}"), std::path::Path::new("m.toml"))
    }

    fn err(tail: &str) -> (usize, usize, String) {
        let d = parse(tail).expect_err("should be refused");
        (d.line, d.col, d.message)
    }

    const SVC: &str = "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n";

    #[test]
    fn full_service_settings_reach_the_runtime_config() {
        let m = parse(&format!(
            "[[user]]\nname = \"app\"\nuid = 1000\nhome = \"/srv\"\n[[group]]\nname = \"audio\"\ngid = 29\nmembers = [\"app\"]\n[log]\nlines = 50\nconsole = \"warn\"\n{SVC}user = \"app\"\ngroups = [\"audio\", 7]\numask = \"0027\"\nworkdir = \"/srv\"\nlimits = {{ nofile = 64, core = \"unlimited\" }}\ncapabilities = [\"net_bind_service\"]\nmemory_max = \"16M\"\npids_max = 8\nstop_timeout = \"2s\"\nrestart_delay = \"100ms\"\nrestart_delay_max = \"1s\"\nrestart_limit = 3\n"
        ))
        .unwrap();
        let c = m.system_config(Vec::new());
        let s = &c.services[0];
        assert_eq!(s.run.user.as_deref(), Some("app"));
        assert_eq!(s.run.groups, ["audio", "7"]);
        assert_eq!(s.run.umask, Some(0o027));
        assert_eq!(s.run.limits["nofile"], 64);
        assert_eq!(s.run.limits["core"], UNLIMITED);
        assert_eq!(
            s.run.capabilities.as_deref(),
            Some(&["CAP_NET_BIND_SERVICE".to_string()][..])
        );
        assert_eq!(s.run.memory_max, Some(16 << 20));
        assert_eq!(s.run.pids_max, Some(8));
        assert_eq!(
            (
                s.run.stop_timeout_ms,
                s.run.restart_delay_ms,
                s.run.restart_delay_max_ms,
                s.run.restart_limit
            ),
            (2000, 100, 1000, 3)
        );
        assert_eq!(c.log.lines, 50);
        assert_eq!(c.log.console, Level::Warn);
        assert_eq!(
            m.accounts.passwd(),
            "root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/srv:/bin/false\n"
        );
        assert_eq!(
            m.accounts.group(),
            "root:x:0:\nnogroup:x:65534:\naudio:x:29:app\napp:x:1000:\n"
        );
        c.assert_round_trips();
    }

    #[test]
    fn bad_values_point_at_themselves() {
        let base = 4 + 3; // HEAD is 3 lines, SVC 3 more; the key is on line 7
        let (l, c, m) = err(&format!("{SVC}user = \"ghost\"\n"));
        assert_eq!((l, c), (base, 8), "{m}");
        assert!(m.contains("user `ghost` is not defined"), "{m}");
        let (l, c, m) = err(&format!("{SVC}groups = [\"wheel\"]\n"));
        assert_eq!((l, c), (base, 11), "{m}");
        assert!(m.contains("group `wheel`"), "{m}");
        let (l, c, m) = err(&format!("{SVC}limits = {{ files = 3 }}\n"));
        assert_eq!((l, c), (base, 12), "{m}");
        assert!(m.contains("unknown resource limit `files`"), "{m}");
        let (l, _, m) = err(&format!("{SVC}capabilities = [\"CAP_FLY\"]\n"));
        assert_eq!(l, base, "{m}");
        let (l, c, m) = err(&format!("{SVC}restart_delay = \"soon\"\n"));
        assert_eq!((l, c), (base, 17), "{m}");
        assert!(m.contains("invalid duration `soon`"), "{m}");
        let (_, _, m) = err(&format!("{SVC}umask = \"999\"\n"));
        assert!(m.contains("invalid umask"), "{m}");
        let (_, _, m) = err(&format!("{SVC}memory_max = \"lots\"\n"));
        assert!(m.contains("invalid size"), "{m}");
        let (_, _, m) = err(&format!("{SVC}pids_max = 0\n"));
        assert!(m.contains("pids_max"), "{m}");
        let (_, _, m) = err(&format!("{SVC}bogus_key = 1\n"));
        assert!(m.contains("unknown key `bogus_key`"), "{m}");
        let (l, c, m) = err("[log]\nlines = 0\n");
        assert_eq!((l, c), (5, 9), "{m}");
        let (_, _, m) = err("[log]\nconsole = \"loud\"\n");
        assert!(m.contains("loud"), "{m}");
        let (_, _, m) = err("[log]\ndir = \"var/log\"\n");
        assert!(m.contains("absolute"), "{m}");
        let (_, _, m) = err("[[user]]\nname = \"root\"\nuid = 5\n");
        assert!(m.contains("duplicate user `root`"), "{m}");
        let (l, c, m) = err("[[user]]\nname = \"Bad\"\nuid = 5\n");
        assert_eq!((l, c), (5, 8), "{m}");
        let (_, _, m) = err("[[user]]\nname = \"a\"\nuid = 5\nhome = \"rel\"\n");
        assert!(m.contains("`home`"), "{m}");
    }
}

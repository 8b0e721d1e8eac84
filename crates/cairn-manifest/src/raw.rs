//! The manifest exactly as written: serde types with spans, before any
//! validation, and the translation of TOML/serde errors into messages that
//! say where in the manifest the problem is.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_path_to_error::Segment;
use toml::Spanned;

use crate::compression::Compression;
use crate::diagnostic::Span;
use crate::runtime::{ExitAction, PanicAction, RestartPolicy};
use crate::supervision::{RawGroup, RawLog, RawRun, RawUser};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub name: Spanned<String>,
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub on_panic: Option<PanicAction>,
    #[serde(default)]
    pub arch: Option<Spanned<crate::manifest::Arch>>,
    #[serde(default)]
    pub test_hooks: Option<bool>,
    #[serde(default)]
    pub memory: Option<Spanned<toml::Value>>,
    pub kernel: Spanned<RawKernel>,
    #[serde(default)]
    pub initramfs: Option<RawInitramfs>,
    #[serde(default)]
    pub service: Vec<Spanned<RawService>>,
    #[serde(default)]
    pub file: Vec<Spanned<RawFile>>,
    #[serde(default)]
    pub binary: Vec<Spanned<RawBinary>>,
    #[serde(default)]
    pub package: Vec<Spanned<RawPackage>>,
    #[serde(default)]
    pub disk: Option<Spanned<crate::disk::RawDisk>>,
    #[serde(default)]
    pub partition: Vec<Spanned<crate::disk::RawPartition>>,
    #[serde(default)]
    pub mount: Vec<Spanned<crate::disk::RawMount>>,
    #[serde(default)]
    pub config: Option<Spanned<crate::disk::RawConfig>>,
    #[serde(default)]
    pub iso: Option<Spanned<crate::disk::RawIso>>,
    #[serde(default)]
    pub network: Vec<Spanned<crate::network::RawNetwork>>,
    #[serde(default)]
    pub net: Option<crate::network::RawNet>,
    #[serde(default)]
    pub user: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub group: Vec<Spanned<RawGroup>>,
    #[serde(default)]
    pub log: Option<RawLog>,
    #[serde(default)]
    pub shell: Option<crate::shell::RawShell>,
    pub sign: Option<Spanned<RawSign>>,
    #[serde(default)]
    pub update: Option<Spanned<crate::update::RawUpdate>>,
    #[serde(default)]
    pub netboot: Option<crate::netboot::RawNetboot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSign {
    pub key: Spanned<String>,
    pub cert: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKernel {
    #[serde(default)]
    pub package: Option<Spanned<String>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub modules_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub cmdline: Option<Spanned<String>>,
    #[serde(default)]
    pub modules: Vec<Spanned<String>>,
    /// `false`: add no modules beyond `modules` (see crate::implied).
    #[serde(default)]
    pub implied_modules: Option<bool>,
    /// A kernel source tarball or tree to build with Kbuild.
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    /// Config fragments merged onto `base` (with `source` only).
    #[serde(default)]
    pub config: Option<Spanned<Vec<Spanned<String>>>>,
    /// `tinyconfig` or `defconfig` (with `source` only).
    #[serde(default)]
    pub base: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInitramfs {
    #[serde(default)]
    pub compression: Compression,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Spanned<String>,
    #[serde(default)]
    pub exec: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    // A container (see crate::container).
    #[serde(default)]
    pub image: Option<Spanned<String>>,
    #[serde(default)]
    pub volumes: Vec<Spanned<String>>,
    #[serde(default)]
    pub network: Option<Spanned<String>>,
    #[serde(default)]
    pub hostname: Option<Spanned<String>>,
    #[serde(default)]
    pub init: Option<Spanned<bool>>,
    #[serde(default)]
    pub storage: Option<Spanned<String>>,
    #[serde(default)]
    pub config_env: Vec<Spanned<String>>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub on_exit: Option<ExitAction>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    // Supervision settings (see crate::supervision).
    #[serde(default)]
    pub user: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub group: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub groups: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub umask: Option<Spanned<String>>,
    #[serde(default)]
    pub workdir: Option<Spanned<String>>,
    #[serde(default)]
    pub limits: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub capabilities: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub memory_max: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub pids_max: Option<Spanned<u64>>,
    #[serde(default)]
    pub stop_timeout: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub restart_delay: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub restart_delay_max: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub restart_limit: Option<u32>,
}

impl RawService {
    /// Moves the supervision keys out.
    pub fn take_run(&mut self) -> RawRun {
        RawRun {
            user: self.user.take(),
            group: self.group.take(),
            groups: std::mem::take(&mut self.groups),
            umask: self.umask.take(),
            workdir: self.workdir.take(),
            limits: std::mem::take(&mut self.limits),
            capabilities: self.capabilities.take(),
            memory_max: self.memory_max.take(),
            pids_max: self.pids_max.take(),
            stop_timeout: self.stop_timeout.take(),
            restart_delay: self.restart_delay.take(),
            restart_delay_max: self.restart_delay_max.take(),
            restart_limit: self.restart_limit.take(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub src: Spanned<String>,
    pub dst: Spanned<String>,
    /// Kept as any value so that a bare number gets a helpful message
    /// instead of being silently read as decimal.
    #[serde(default)]
    pub mode: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBinary {
    pub path: Spanned<String>,
    #[serde(default)]
    pub dst: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPackage {
    pub name: Spanned<String>,
    pub files: Spanned<Vec<Spanned<String>>>,
}

/// Parses the TOML text into the raw types. On failure returns the span
/// (if the parser knows one) and a message that names the key and the
/// table it is in.
pub(crate) fn parse(text: &str) -> Result<RawManifest, (Option<Span>, String)> {
    parse_as(text)
}

/// [`parse`] for any raw type (the secondary config has its own).
pub(crate) fn parse_as<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, (Option<Span>, String)> {
    let de = toml::Deserializer::parse(text).map_err(|err| {
        let span = err.span().map(Span::from);
        (span, describe(&[], err.message()))
    })?;
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = simplify(err.path().iter());
        let err = err.into_inner();
        let span = err.span().map(Span::from);
        (span, describe(&path, err.message()))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The path to the failing value, without serde's internal markers
/// (`Spanned` shows up as a private field name).
fn simplify<'a>(path: impl Iterator<Item = &'a Segment>) -> Vec<Seg> {
    path.filter_map(|s| match s {
        Segment::Map { key } if key.starts_with("$__serde_spanned") => None,
        Segment::Map { key } => Some(Seg::Key(key.clone())),
        Segment::Seq { index } => Some(Seg::Index(*index)),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
    .collect()
}

/// Where a table is, as the user wrote it: `at the top level`, `in
/// [kernel]`, `in [[service]] #2`, or a dotted path for anything deeper.
fn in_table(path: &[Seg]) -> String {
    match path {
        [] => "at the top level".to_string(),
        [Seg::Key(k)] => format!("in [{k}]"),
        [Seg::Key(k), Seg::Index(i)] => format!("in [[{k}]] #{}", i + 1),
        _ => format!("in `{}`", dotted(path)),
    }
}

fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where a value is: `name`, or `exec in [[service]] #1`.
fn value_name(path: &[Seg]) -> String {
    let table_len = match path {
        [Seg::Key(_), Seg::Index(_), Seg::Key(_), ..] => 2,
        [Seg::Key(_), Seg::Key(_), ..] => 1,
        _ => 0,
    };
    let (table, rest) = path.split_at(table_len);
    if table.is_empty() {
        format!("`{}`", dotted(rest))
    } else {
        format!("`{}` {}", dotted(rest), in_table(table))
    }
}

/// serde speaks of sequences, maps and (internal) struct names; TOML users
/// write arrays and tables.
fn toml_words(message: &str) -> String {
    let message = match message.find("expected struct ") {
        Some(i) => format!("{}expected a table", &message[..i]),
        None => message.to_string(),
    };
    message
        .replace("a sequence", "an array")
        .replace("type: sequence", "type: array")
        .replace("a map", "a table")
        .replace("type: map", "type: table")
        .replace("unknown variant", "unknown value")
}

fn describe(path: &[Seg], message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // Here the path ends with the unknown key itself.
        let table = path.len().saturating_sub(1);
        if let Some((key, expected)) = rest.split_once('`') {
            return format!("unknown key `{key}` {}{expected}", in_table(&path[..table]));
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((key, _)) = rest.split_once('`') {
            return format!("missing required key `{key}` {}", in_table(path));
        }
    }
    if path.is_empty() {
        // Syntax errors and the like: the parser's words are precise enough.
        return message.to_string();
    }
    format!("{}: {}", value_name(path), toml_words(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[&str]) -> Vec<Seg> {
        segs.iter()
            .map(|s| match s.parse() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key(s.to_string()),
            })
            .collect()
    }

    #[test]
    fn unknown_field_names_key_table_and_expected_keys() {
        let msg = describe(
            &p(&["service", "1", "foo"]),
            "unknown field `foo`, expected one of `name`, `exec`",
        );
        assert_eq!(
            msg,
            "unknown key `foo` in [[service]] #2, expected one of `name`, `exec`"
        );
        let msg = describe(&p(&["x"]), "unknown field `x`, expected `name`");
        assert_eq!(msg, "unknown key `x` at the top level, expected `name`");
        let msg = describe(&p(&["service", "0"]), "m");
        assert_eq!(msg, "`service[0]`: m");
    }

    #[test]
    fn value_errors_name_the_value() {
        let msg = describe(
            &p(&["service", "0", "exec"]),
            "invalid type: string \"x\", expected a sequence",
        );
        assert_eq!(
            msg,
            "`exec` in [[service]] #1: invalid type: string \"x\", expected an array"
        );
        let msg = describe(
            &p(&["kernel"]),
            "invalid type: integer `3`, expected struct RawKernel",
        );
        assert_eq!(msg, "`kernel`: invalid type: integer `3`, expected a table");
        let msg = describe(&p(&["kernel", "modules", "2"]), "m");
        assert_eq!(msg, "`modules[2]` in [kernel]: m");
        let msg = describe(&p(&["name"]), "m");
        assert_eq!(msg, "`name`: m");
    }

    #[test]
    fn missing_field_names_the_table() {
        let msg = describe(&p(&["kernel"]), "missing field `package`");
        assert_eq!(msg, "missing required key `package` in [kernel]");
    }
}

//! `[log]` as the init keeps its log (validated in [`crate::supervision`]).

use serde::{Deserialize, Serialize};

/// Lines kept in memory when `[log] lines` is not set.
pub const DEFAULT_LOG_LINES: usize = 1000;

/// Console level of `[log]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Off,
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Lines kept in memory.
    #[serde(default = "default_lines")]
    pub lines: usize,
    /// Lines at or above this importance are mirrored to the console.
    #[serde(default)]
    pub console: Level,
    /// Directory to write `cairn.log` into, when it exists and is writable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

fn default_lines() -> usize {
    DEFAULT_LOG_LINES
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            lines: DEFAULT_LOG_LINES,
            console: Level::Info,
            dir: None,
        }
    }
}

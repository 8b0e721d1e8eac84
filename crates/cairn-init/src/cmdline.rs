//! The kernel command line (`/proc/cmdline`).
//!
//! Parsed the way the kernel splits it: parameters are separated by
//! whitespace; double quotes group text containing spaces and are removed
//! (`a="b c"` and `"a=b c"` both give key `a`, value `b c`); a parameter is
//! `key=value` (split at the first `=`) or a bare flag. Everything after a
//! lone `--` is kept apart as arguments meant for init.
//!
//! Parameters cairn-init understands:
//!
//! | parameter     | effect                                                      |
//! |---------------|-------------------------------------------------------------|
//! | `cairn.debug` | verbose console log (mounts, spawns, reaped orphans, signals). `cairn.debug=0`/`false`/`no`/`off` turns it off again. |

#![forbid(unsafe_code)]

/// The kernel command line as parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// `key=value` parameters have `Some(value)`, flags have `None`.
    pub params: Vec<(String, Option<String>)>,
    /// Words after a lone `--`.
    pub init_args: Vec<String>,
}

impl Cmdline {
    /// Parses a command line. Never fails: unbalanced quotes run to the end.
    pub fn parse(text: &str) -> Self {
        let mut out = Cmdline::default();
        let mut after_dashes = false;
        for word in split_words(text) {
            if after_dashes {
                out.init_args.push(word);
            } else if word == "--" {
                after_dashes = true;
            } else {
                match word.split_once('=') {
                    Some((k, v)) => out.params.push((k.to_owned(), Some(v.to_owned()))),
                    None => out.params.push((word, None)),
                }
            }
        }
        out
    }

    /// The value of the last `key=value` for `key` (the kernel's convention:
    /// later parameters override earlier ones).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, v)| k == key && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether `key` is on: present as a bare flag, or with a value other
    /// than `0`, `false`, `no`, `off`. The last occurrence wins.
    pub fn flag(&self, key: &str) -> bool {
        match self.params.iter().rev().find(|(k, _)| k == key) {
            None => false,
            Some((_, None)) => true,
            Some((_, Some(v))) => !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            ),
        }
    }

    /// `cairn.debug`: verbose logging.
    pub fn debug(&self) -> bool {
        self.flag("cairn.debug")
    }
}

/// Splits at unquoted whitespace, dropping the quote characters.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut in_quote = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                in_word = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_flags() {
        let c = Cmdline::parse("console=ttyS0 quiet  root=/dev/vda1\n");
        assert_eq!(
            c.params,
            vec![
                ("console".into(), Some("ttyS0".into())),
                ("quiet".into(), None),
                ("root".into(), Some("/dev/vda1".into())),
            ]
        );
        assert_eq!(c.get("console"), Some("ttyS0"));
        assert!(c.flag("quiet"));
        assert!(!c.flag("cairn.debug"));
        assert_eq!(c.get("quiet"), None);
    }

    #[test]
    fn quoted_values_keep_spaces() {
        let c = Cmdline::parse(r#"a="b c" "d=e f" g=h"#);
        assert_eq!(c.get("a"), Some("b c"));
        assert_eq!(c.get("d"), Some("e f"));
        assert_eq!(c.get("g"), Some("h"));
    }

    #[test]
    fn value_with_equals_splits_at_first() {
        let c = Cmdline::parse("opt=x=y");
        assert_eq!(c.get("opt"), Some("x=y"));
    }

    #[test]
    fn unbalanced_quote_runs_to_end() {
        let c = Cmdline::parse(r#"a="b c d"#);
        assert_eq!(c.get("a"), Some("b c d"));
    }

    #[test]
    fn empty_value_and_empty_quotes() {
        let c = Cmdline::parse(r#"a= b="""#);
        assert_eq!(c.get("a"), Some(""));
        assert_eq!(c.get("b"), Some(""));
    }

    #[test]
    fn debug_flag_forms() {
        assert!(Cmdline::parse("cairn.debug").debug());
        assert!(Cmdline::parse("cairn.debug=1").debug());
        assert!(!Cmdline::parse("cairn.debug=0").debug());
        assert!(!Cmdline::parse("cairn.debug=off").debug());
        assert!(!Cmdline::parse("cairn.debugx").debug());
        assert!(!Cmdline::parse("cairn.debug cairn.debug=no").debug());
    }

    #[test]
    fn last_value_wins_and_init_args_split() {
        let c = Cmdline::parse("x=1 x=2 -- cairn.debug single");
        assert_eq!(c.get("x"), Some("2"));
        assert!(!c.debug(), "words after -- are not kernel params");
        assert_eq!(c.init_args, vec!["cairn.debug", "single"]);
    }

    #[test]
    fn empty_line() {
        assert_eq!(Cmdline::parse("  \n"), Cmdline::default());
    }
}

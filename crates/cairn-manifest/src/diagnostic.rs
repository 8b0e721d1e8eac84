//! Positions in the manifest text and error reports that point at them.
//!
//! A [`Diagnostic`] renders like a compiler error:
//!
//! ```text
//! cairn.toml:7:11: error: restart: unknown value `sometimes`, expected one of `always`, `on-failure`, `never`
//!   |
//! 7 | restart = "sometimes"
//!   |           ^^^^^^^^^^^
//! ```
//!
//! A diagnostic without a position (the manifest could not be read at all)
//! has `line == 0` and `col == 0` and renders as `PATH: error: MESSAGE`, with
//! no source snippet.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A byte range in the manifest text (`start..end`, `end` exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

impl From<Range<usize>> for Span {
    fn from(r: Range<usize>) -> Self {
        Span::new(r.start, r.end)
    }
}

/// A value together with where it was written in the manifest, so that
/// later checks (for example the builder finding that a file does not
/// exist) can point at it with [`crate::Manifest::error_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Located<T> {
    pub fn new(value: T, span: Span) -> Self {
        Located { value, span }
    }
}

/// An error in (or about) a manifest file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the error is about, as it was given.
    pub file: PathBuf,
    /// 1-based line number; 0 when the error has no position (unreadable file).
    pub line: usize,
    /// 1-based column counted in characters (not bytes); 0 when the error
    /// has no position.
    pub col: usize,
    /// What is wrong, and what was expected.
    pub message: String,
    /// The byte range the error is about, if any.
    pub span: Option<Span>,
    /// The text of the line holding the start of the span (without its line
    /// ending), for the snippet.
    pub line_text: Option<String>,
    /// How many characters the `^` marker covers (at least 1 when there is a
    /// snippet; a span reaching past the end of its line is cut there).
    pub marker_len: usize,
}

impl Diagnostic {
    /// An error about `span` in `source`, the text of `file`. Out-of-range
    /// or mid-character offsets are clamped, never a panic.
    pub fn at(file: &Path, source: &str, span: Span, message: impl Into<String>) -> Self {
        let mut start = floor_char_boundary(source, span.start.min(source.len()));
        // An error at the very end of a file that ends with a newline is
        // shown at the end of the last line rather than on an empty one.
        if start == source.len() && start > 0 && source.ends_with('\n') {
            start -= 1;
            if start > 0 && source.as_bytes()[start - 1] == b'\r' {
                start -= 1;
            }
        }
        let end = floor_char_boundary(source, span.end.clamp(start, source.len()));

        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let mut text = &source[line_start..line_end];
        if let Some(stripped) = text.strip_suffix('\r') {
            text = stripped;
        }
        let line = source[..start].matches('\n').count() + 1;
        let col = source[line_start..start].chars().count() + 1;
        let marker_end = end.min(line_start + text.len()).max(start);
        let marker_len = source[start..marker_end].chars().count().max(1);

        Diagnostic {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
            span: Some(Span::new(start, end)),
            line_text: Some(text.to_string()),
            marker_len,
        }
    }

    /// An error about the file as a whole (for example: it cannot be read).
    pub fn without_position(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            message: message.into(),
            span: None,
            line_text: None,
            marker_len: 0,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.line == 0 {
            return write!(f, "{file}: error: {}", self.message);
        }
        write!(
            f,
            "{file}:{}:{}: error: {}",
            self.line, self.col, self.message
        )?;
        if let Some(text) = &self.line_text {
            let number = self.line.to_string();
            let gutter = " ".repeat(number.len());
            // Keep tabs before the marker so it lines up under the span.
            let pad: String = text
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(
                f,
                "\n{gutter} |\n{number} | {text}\n{gutter} | {pad}{}",
                "^".repeat(self.marker_len.max(1))
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(source: &str, start: usize, end: usize) -> Diagnostic {
        Diagnostic::at(Path::new("m.toml"), source, Span::new(start, end), "bad")
    }

    #[test]
    fn line_and_column_are_one_based() {
        let d = at("a = 1\nbb = 2\n", 6, 8);
        assert_eq!((d.line, d.col, d.marker_len), (2, 1, 2));
        assert_eq!(d.line_text.as_deref(), Some("bb = 2"));
    }

    #[test]
    fn column_counts_characters_not_bytes() {
        let src = "x = \"é€\" y\n";
        let start = src.find('y').unwrap();
        let d = at(src, start, start + 1);
        assert_eq!((d.line, d.col), (1, 10));
    }

    #[test]
    fn display_shows_line_and_caret() {
        let d = at("name = 1\nbogus = 2\n", 9, 14);
        let shown = d.to_string();
        assert_eq!(
            shown,
            "m.toml:2:1: error: bad\n  |\n2 | bogus = 2\n  | ^^^^^"
        );
    }

    #[test]
    fn marker_stops_at_end_of_line_and_keeps_tabs() {
        let d = at("\tkey = [\n 1]\n", 7, 12);
        assert_eq!((d.line, d.col, d.marker_len), (1, 8, 1));
        assert!(d.to_string().ends_with("| \t      ^"), "{d}");
    }

    #[test]
    fn out_of_range_spans_are_clamped() {
        let d = at("a = 1\n", 100, 200);
        assert_eq!((d.line, d.col), (1, 6));
        let d = at("é", 1, 2);
        assert_eq!((d.line, d.col), (1, 1));
        let d = at("", 0, 0);
        assert_eq!((d.line, d.col, d.marker_len), (1, 1, 1));
    }

    #[test]
    fn crlf_line_endings_are_not_shown() {
        let d = at("a = 1\r\nb = 2\r\n", 7, 8);
        assert_eq!(d.line_text.as_deref(), Some("b = 2"));
        assert_eq!((d.line, d.col), (2, 1));
    }

    #[test]
    fn without_position_has_no_snippet() {
        let d = Diagnostic::without_position(Path::new("x/cairn.toml"), "cannot read it");
        assert_eq!(d.to_string(), "x/cairn.toml: error: cannot read it");
        assert_eq!((d.line, d.col), (0, 0));
    }
}

//! Progress of the slow steps (a kernel download or build, compressing a
//! large initramfs, writing a disk image), on stderr: a spinner with the
//! step, its latest line and the elapsed time when stderr is a terminal
//! (indicatif), plain lines otherwise, so logs and pipes get no control
//! codes. Standard output (the build table) is left alone.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Steps quicker than this leave no line behind when not on a terminal.
const QUIET_BELOW: Duration = Duration::from_secs(1);

/// Whether progress is drawn (stderr is a terminal and `CAIRN_PROGRESS`
/// is not `plain`).
pub fn interactive() -> bool {
    std::env::var("CAIRN_PROGRESS").map_or(true, |v| v != "plain")
        && std::io::stderr().is_terminal()
}

/// One slow step in progress.
pub struct Step {
    bar: Option<ProgressBar>,
    what: String,
    start: Instant,
}

impl Step {
    /// Starts step `what` ("compressing the initramfs (3.2 MiB, zstd)").
    pub fn start(what: impl Into<String>) -> Step {
        Step::start_on(what, interactive())
    }

    fn start_on(what: impl Into<String>, interactive: bool) -> Step {
        let what = what.into();
        let bar = interactive.then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {wide_msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(what.clone());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Step {
            bar,
            what,
            start: Instant::now(),
        }
    }

    /// A line of the step's own (a phase, a count): the spinner's message
    /// on a terminal, with phases kept above it; a plain line otherwise.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => {
                // Counts replace each other; phases stay on the screen.
                if !text.contains("...") {
                    b.println(text);
                }
                b.set_message(text.trim_start_matches("kernel:").trim().to_string());
            }
            None => eprintln!("{text}"),
        }
    }

    /// Ends the step. A step that took a second or more leaves one line
    /// saying so, on a terminal or not.
    pub fn done(self) -> Option<String> {
        let took = self.start.elapsed();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        (took >= QUIET_BELOW).then(|| {
            let line = format!("cairn: {} took {:.1} s", self.what, took.as_secs_f64());
            eprintln!("{line}");
            line
        })
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        // An error on the way out must not leave a spinner running.
        if let Some(b) = &self.bar {
            if !b.is_finished() {
                b.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_steps_leave_nothing_slow_ones_a_line() {
        let s = Step::start_on("quick", false);
        assert_eq!(s.done(), None);
        let mut s = Step::start_on("compressing", false);
        s.start -= Duration::from_millis(1500);
        assert_eq!(s.done().as_deref(), Some("cairn: compressing took 1.5 s"));
    }

    #[test]
    fn a_hidden_bar_finishes_cleanly() {
        let mut s = Step::start_on("building", true);
        if let Some(b) = s.bar.take() {
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            s.bar = Some(b);
        }
        s.line("kernel: [1/4] make tinyconfig");
        s.line("kernel:       ... 12 objects compiled, 3s");
        assert_eq!(
            s.bar.as_ref().unwrap().message(),
            "... 12 objects compiled, 3s"
        );
        s.done();
    }
}

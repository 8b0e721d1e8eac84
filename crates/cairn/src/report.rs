//! What `cairn build` reports: each input with its origin and size, and
//! the outputs. `build` fills it in; `sbom` reads the inputs' origins.

use std::fmt;
use std::path::PathBuf;

/// One line of the build report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportLine {
    pub what: String,
    pub origin: String,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub name: String,
    pub kernel_version: String,
    pub inputs: Vec<ReportLine>,
    pub outputs: Vec<(PathBuf, u64)>,
    pub initrd_uncompressed: u64,
    /// The kernel command line (for direct kernel boot).
    pub cmdline: String,
    /// The manifest's `memory`, in bytes (`cairn run`'s default `--mem`).
    pub memory: Option<u64>,
    /// The manifest's disk image, when it has a `[disk]`: its path in the
    /// output directory and its format.
    pub disk: Option<(PathBuf, cairn_manifest::ImageFormat)>,
    /// `NAME.iso`, when the manifest has an `[iso]`.
    pub iso: Option<PathBuf>,
    /// The image's architecture (which machine boots it).
    pub arch: cairn_manifest::Arch,
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .inputs
            .iter()
            .map(|l| l.what.len())
            .max()
            .unwrap_or(0)
            .max(20);
        writeln!(f, "{:<w$}  {:>10}  origin", "input", "bytes")?;
        for l in &self.inputs {
            writeln!(f, "{:<w$}  {:>10}  {}", l.what, human(l.bytes), l.origin)?;
        }
        writeln!(
            f,
            "{:<w$}  {:>10}  (uncompressed)",
            "initramfs",
            human(self.initrd_uncompressed)
        )?;
        writeln!(f)?;
        writeln!(f, "{:<w$}  {:>10}", "output", "bytes")?;
        for (p, n) in &self.outputs {
            writeln!(f, "{:<w$}  {:>10}", p.display(), human(*n))?;
        }
        Ok(())
    }
}

/// A byte count for people: `12 B`, `2.0 KiB`, `3.00 MiB`.
pub fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(2048), "2.0 KiB");
        assert_eq!(human(3 << 20), "3.00 MiB");
    }
}

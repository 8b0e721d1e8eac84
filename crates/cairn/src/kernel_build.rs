//! `[kernel] source`: building the kernel with Kbuild (cached), for
//! `cairn build` and `cairn kernel build`.

use cairn_image::kbuild::{self, KbuildError};
use cairn_image::kernel::Kernel;
use cairn_manifest::{Diagnostic, Manifest, SourceKernel};
use std::path::{Path, PathBuf};

/// Builds (or takes from the cache) the kernel a `[kernel] source`
/// describes. Progress and warnings go to stderr. Errors about a fragment
/// or the source point at them in the manifest.
pub fn build_source_kernel(
    m: &Manifest,
    src: &SourceKernel,
    cache: &Path,
) -> Result<(Kernel, kbuild::Built), Box<Diagnostic>> {
    let fragments: Vec<PathBuf> = src.config.iter().map(|c| c.value.clone()).collect();
    let req = kbuild::Request {
        source: &src.source,
        base: src.base,
        fragments: &fragments,
        cache,
    };
    let built = kbuild::build(&req, &mut |line| eprintln!("{line}")).map_err(|e| {
        let span = match &e {
            KbuildError::Fragment { path, .. } | KbuildError::FragmentSyntax { path, .. } => src
                .config
                .iter()
                .find(|c| &c.value == path)
                .map(|c| c.span)
                .unwrap_or(m.kernel.source.span),
            _ => m.kernel.source.span,
        };
        Box::new(m.error_at(span, e.to_string()))
    })?;
    if !built.not_applied.is_empty() {
        eprintln!(
            "cairn: warning: {} kernel config option(s) from the fragments did not end up as \
             requested (missing dependencies?):",
            built.not_applied.len()
        );
        for n in &built.not_applied {
            eprintln!("cairn: warning:   {n}");
        }
    }
    let kernel = Kernel {
        image: built.image.clone(),
        version: built.release.clone(),
        modules_dir: None,
        origin: format!("source:{} ({})", src.source.display(), src.base.target()),
    };
    Ok((kernel, built))
}

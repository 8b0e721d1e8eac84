//! `[kernel] source`: building the kernel with Kbuild (cached), for
//! `cairn build` and `cairn kernel build`.

use cairn_image::kbuild::{self, KbuildError};
use cairn_image::kernel::Kernel;
use cairn_manifest::{Diagnostic, Manifest, SourceKernel};
use std::path::{Path, PathBuf};

/// A kbuild error as a diagnostic at the fragment or the source it is about.
fn diagnostic(m: &Manifest, src: &SourceKernel, e: KbuildError) -> Box<Diagnostic> {
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
}

fn request<'a>(
    src: &'a SourceKernel,
    fragments: &'a [PathBuf],
    cache: &'a Path,
) -> kbuild::Request<'a> {
    kbuild::Request {
        source: &src.source,
        base: src.base,
        fragments,
        cache,
    }
}

/// `cairn kernel check`: the fragment options that did not end up as
/// requested after merging, without compiling. Progress goes to stderr.
pub fn check_source_kernel(
    m: &Manifest,
    src: &SourceKernel,
    cache: &Path,
) -> Result<Vec<String>, Box<Diagnostic>> {
    let fragments: Vec<PathBuf> = src.config.iter().map(|c| c.value.clone()).collect();
    kbuild::check(&request(src, &fragments, cache), &mut |line| {
        eprintln!("{line}")
    })
    .map_err(|e| diagnostic(m, src, e))
}

/// Builds (or takes from the cache) the kernel a `[kernel] source`
/// describes. Progress and warnings go to stderr. Errors about a fragment
/// or the source point at them in the manifest.
pub fn build_source_kernel(
    m: &Manifest,
    src: &SourceKernel,
    cache: &Path,
) -> Result<(Kernel, kbuild::Built), Box<Diagnostic>> {
    let fragments: Vec<PathBuf> = src.config.iter().map(|c| c.value.clone()).collect();
    let built = kbuild::build(&request(src, &fragments, cache), &mut |line| {
        eprintln!("{line}")
    })
    .map_err(|e| diagnostic(m, src, e))?;
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

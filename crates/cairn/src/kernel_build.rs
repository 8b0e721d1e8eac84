//! `[kernel] source`: building the kernel with Kbuild (cached), for
//! `cairn build` and `cairn kernel build`.

use cairn_image::kbuild::{self, KbuildError};
use cairn_image::kernel::Kernel;
use cairn_manifest::{Diagnostic, Manifest, SourceKernel};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::progress::Step;

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
    let step = Step::start("kernel config check");
    let missing = kbuild::check(&request(src, &fragments, cache), &mut |line| {
        step.line(line)
    })
    .map_err(|e| diagnostic(m, src, e))?;
    step.done();
    Ok(missing)
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
    // On a terminal the compiled-object count moves every second; in a
    // log, a line every 30 s.
    let every = Duration::from_secs(if crate::progress::interactive() {
        1
    } else {
        30
    });
    let step = Step::start("kernel build");
    let built =
        kbuild::build_reporting_every(&request(src, &fragments, cache), every, &mut |line| {
            step.line(line)
        })
        .map_err(|e| diagnostic(m, src, e))?;
    step.done();
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

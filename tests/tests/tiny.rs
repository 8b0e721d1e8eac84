//! The tiny kernel profile: `examples/tiny` names Debian's linux-source-6.1
//! with `kernel/tiny.config`. The kernel is built ONCE for the whole suite
//! (a cold cache takes minutes); every later build takes it from
//! `~/.cache/cairn/kernels/built/`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_e2e::{boot, build, cairn, example, run_with_timeout, Outcome};

/// A cold kernel build on a shared 2-core machine.
const KERNEL_BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// `cairn kernel build examples/tiny/cairn.toml`, once per test binary;
/// returns its output.
fn kernel_built() -> &'static Outcome {
    static BUILT: OnceLock<Outcome> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut c = cairn();
        c.arg("kernel").arg("build").arg(example("tiny"));
        let o = run_with_timeout(c, KERNEL_BUILD_TIMEOUT);
        o.assert_ok();
        o
    })
}

fn markers() -> [&'static str; 5] {
    [
        "cairn: init started",
        "cairn: service greet started",
        "Hello from a tiny cairn!",
        "cairn: service greet exited (status 0)",
        "cairn: powering off",
    ]
}

#[test]
fn tiny_kernel_builds_with_every_fragment_option_and_is_cached() {
    let first = kernel_built();
    // Every option of kernel/tiny.config stuck.
    assert!(
        !first.stderr.contains("warning"),
        "options did not stick:\n{}",
        first.stderr
    );
    first.assert_stdout_has("image  ");
    // A second build is served from the cache: no kernel time.
    let mut c = cairn();
    c.arg("kernel").arg("build").arg(example("tiny"));
    let t = Instant::now();
    let again = run_with_timeout(c, Duration::from_secs(60));
    again.assert_ok();
    again.assert_stdout_has("from the cache");
    assert!(
        !again.stderr.contains("[3/4]"),
        "rebuilt the kernel:\n{}",
        again.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    // The build is stamped with the fixed reproducible identity.
    let image = again
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("image  "))
        .expect("image line");
    let bytes = std::fs::read(image.trim()).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    // The bzImage header holds the version string uncompressed.
    assert!(
        text.contains("(cairn@cairn)") && text.contains("#1 Thu Jan  1 00:00:00 UTC 1970"),
        "kernel version string is not the reproducible one"
    );
    // Small: the tiny profile stays a small kernel.
    assert!(bytes.len() < 4 << 20, "bzImage is {} bytes", bytes.len());
}

#[test]
fn tiny_kernel_boots_hello_directly() {
    kernel_built();
    let out = tempfile::tempdir().unwrap();
    let o = boot(
        &example("tiny"),
        out.path(),
        &["--net", "none", "--mem", "64M"],
        BOOT_TIMEOUT,
    );
    o.assert_ok();
    o.assert_in_order(&markers());
    o.assert_stdout_has("cairn: ready");
}

#[test]
fn tiny_kernel_boots_hello_through_ovmf() {
    kernel_built();
    let out = tempfile::tempdir().unwrap();
    let o = boot(
        &example("tiny"),
        out.path(),
        &["--uefi", "--net", "none"],
        BOOT_TIMEOUT,
    );
    o.assert_ok();
    o.assert_in_order(&markers());
}

#[test]
fn tiny_build_reports_the_source_kernel() {
    kernel_built();
    let out = tempfile::tempdir().unwrap();
    let o = build(&example("tiny"), out.path());
    o.assert_ok();
    o.assert_stdout_has("source:/usr/src/linux-source-6.1.tar.xz (tinyconfig)");
    // No modules directory in a tiny image.
    assert!(!o.stdout.contains("/lib/modules/"), "{}", o.stdout);
}

//! Project tasks: `cargo xtask deps | build-init | demo | test | deny | fuzz`.
//!
//! `demo` and `test` are the README's two commands: each installs what is
//! missing (Debian/Ubuntu packages through apt-get), builds what it needs,
//! then boots the example or runs the whole test suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod initcalls;
mod profile;

/// Debian packages the build, the runner and the tests need.
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "ovmf",
    "systemd-boot-efi",
    "cpio",
    "zstd",
    "xz-utils",
    "sbsigntool",
    "jq",
    "openssl",
    "python3-pip",
    // The update tests' repository server: python3 -m http.server.
    "python3",
    "coreutils",
    "binutils",
    "busybox-static",
    "dnsmasq-base",
    // BIOS network boot: undionly.kpxe for `cairn netboot` (tests/tests/netboot.rs).
    "ipxe",
    // A second real DHCP server for the network tests (tests/tests/net.rs).
    "kea-dhcp4-server",
    // An NTP server for the SNTP test (tests/tests/net.rs).
    "chrony",
    "iproute2",
    "librsvg2-bin",
    // Disk images: mkfs.ext4 -d (build), fsck.vfat / e2fsck / sfdisk
    // (tests), qemu-img (qcow2 output).
    "e2fsprogs",
    "dosfstools",
    "fdisk",
    "qemu-utils",
    // NAME.iso: xorriso assembles it; isolinux (isolinux.bin, the
    // isohybrid MBR isohdpfx.bin) and syslinux-common (ldlinux.c32) are
    // its BIOS boot path; mtools reads the ISO's ESP in the tests.
    "xorriso",
    "isolinux",
    "syslinux-common",
    // Containers (tests/tests/containers.rs): images made by real tools,
    // podman (oci-archive, docker-archive) and umoci (an OCI layout).
    "podman",
    "umoci",
    // storage = "erofs": mkfs.erofs (build), fsck.erofs / dump.erofs (tests).
    "erofs-utils",
    "mtools",
    // Building the tiny kernel from source (examples/tiny, tests/tests/tiny.rs).
    "linux-source-6.1",
    "make",
    "gcc",
    // libFuzzer (C++), built by libfuzzer-sys for the fuzz targets.
    "g++",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    // arm64 (tests/tests/arm64.rs): the init is built by Debian's rustc-web
    // (its arm64 standard library is fetched beside it, see arm64_sysroot)
    // and linked by the cross gcc against static glibc; QEMU's arm64 machine.
    "rustc-web",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-system-arm",
    // AAVMF, UEFI for QEMU's arm64 `virt` board.
    "qemu-efi-aarch64",
];

/// The init is built for musl: a static musl binary is about 0.7 of the
/// static glibc one and its allocator keeps PID 1's RSS lower. glibc is the
/// fallback when rustup cannot add the musl target (offline machine).
const MUSL: &str = "x86_64-unknown-linux-musl";
const GNU: &str = "x86_64-unknown-linux-gnu";

/// The target triple for the static binaries in the image: musl when rustup
/// has it or can add it, else glibc with a warning.
fn static_target() -> &'static str {
    let installed = |t: &str| {
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == t))
            .unwrap_or(false)
    };
    if installed(MUSL) {
        return MUSL;
    }
    eprintln!("xtask: adding the Rust target {MUSL} (rustup target add)");
    let added = Command::new("rustup")
        .args(["target", "add", MUSL])
        .status()
        .is_ok_and(|s| s.success());
    if added {
        return MUSL;
    }
    eprintln!(
        "xtask: warning: cannot add {MUSL}; building the init against static glibc \
         (larger binary, higher RSS)"
    );
    GNU
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn missing_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect()
}

/// virt-firmware (PyPI) gives `virt-fw-vars`, which the Secure Boot tests
/// use to enroll keys into an OVMF variable store; jsonschema validates
/// the manifest's JSON Schema from the outside.
fn pip_deps() -> Result<()> {
    let home = std::env::var_os("HOME").unwrap_or_default();
    let have = [
        "virt-fw-vars".into(),
        Path::new(&home).join(".local/bin/virt-fw-vars"),
    ]
    .iter()
    .any(|p: &PathBuf| {
        Command::new(p)
            .arg("--help")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !have {
        eprintln!("xtask: installing {VIRT_FIRMWARE} (pip --user)");
        pip_install(VIRT_FIRMWARE)?;
    }
    // jsonschema: the outside validator of schema/*.json (tests/tests/schema.rs).
    let have_jsonschema = Command::new("python3")
        .args(["-c", "import jsonschema, tomllib"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_jsonschema {
        eprintln!("xtask: installing jsonschema (pip --user)");
        pip_install(JSONSCHEMA)?;
    }
    // spdx-tools: the outside SPDX validator of the SBOM tests.
    let have_spdx = Command::new("python3")
        .args(["-c", "import spdx_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_spdx {
        eprintln!("xtask: installing {SPDX_TOOLS} (pip --user)");
        pip_install(SPDX_TOOLS)?;
    }
    Ok(())
}

/// The pinned PyPI requirements: `virt-fw-vars`, the schema validator and
/// the SPDX validator (`pyspdxtools`).
const VIRT_FIRMWARE: &str = "virt-firmware==26.10";
const JSONSCHEMA: &str = "jsonschema==4.26.0";
const SPDX_TOOLS: &str = "spdx-tools==0.8.5";

/// cargo-deny, pinned: installed with `cargo install --locked` when missing
/// or of another version.
const CARGO_DENY_VERSION: &str = "0.20.2";

fn cargo_deny_deps() -> Result<()> {
    let have = Command::new(env!("CARGO"))
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w == CARGO_DENY_VERSION)
        });
    if have {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deny {CARGO_DENY_VERSION} (cargo install --locked)");
    run(Command::new(env!("CARGO")).args([
        "install",
        "--locked",
        "--quiet",
        "cargo-deny",
        "--version",
        CARGO_DENY_VERSION,
    ]))
}

/// cargo-fuzz, pinned: installed with `cargo install --locked` when missing
/// or of another version (about 3 minutes on a busy 2-core machine).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz targets (crates/cairn-init/fuzz/fuzz_targets, each checking
/// the property of `cairn_init::fuzz::NAME`), each with its kept corpus
/// in crates/cairn-init/fuzz/corpus/NAME.
const FUZZ_TARGETS: &[&str] = &[
    "dhcp", "ra", "rtnl", "disk", "config", "ctl", "kmsg", "cmdline", "sntp", "update",
];

/// Seconds each target searches in `cargo xtask fuzz` and in `cargo xtask test`.
const FUZZ_SECS: u64 = 60;
const FUZZ_TEST_SECS: u64 = 10;
/// libFuzzer's seed for the suite's fuzz check (any fixed number).
const FUZZ_TEST_SEED: u32 = 1;

fn cargo_fuzz_deps() -> Result<()> {
    let have = Command::new(env!("CARGO"))
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w == CARGO_FUZZ_VERSION)
        });
    if have {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install --locked)");
    run(Command::new(env!("CARGO")).args([
        "install",
        "--locked",
        "--quiet",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// A cargo-fuzz command in crates/cairn-init. libFuzzer's coverage flags
/// are nightly-only; RUSTC_BOOTSTRAP=1 lets the stable toolchain take
/// them (for this command only: the workspace builds stay on stable).
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root().join("crates/cairn-init"))
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz")
        .args(args);
    c
}

/// `cargo xtask fuzz [--time SECS] [--seed N] [TARGET...]`: builds the targets with
/// coverage and runs each for SECS seconds (default [`FUZZ_SECS`]), one at
/// a time, starting from its kept corpus. New inputs go to
/// target/fuzz/corpus/TARGET (the kept corpus stays as committed); a
/// failing input is left in target/fuzz/artifacts/TARGET and stops the
/// run: fix the parser, then keep the input as a regression case in
/// crates/cairn-init/fuzz/corpus/TARGET. `--time 10 --seed 1` is the
/// suite's check.
fn fuzz_cmd(args: &[String]) -> Result<()> {
    let mut secs = FUZZ_SECS;
    let mut seed = None;
    let mut targets: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => secs = it.next().context("--time SECS")?.parse()?,
            "--seed" => seed = Some(it.next().context("--seed N")?.parse()?),
            t if FUZZ_TARGETS.contains(&t) => targets.push(t),
            other => bail!(
                "unknown fuzz target or option {other} (targets: {})",
                FUZZ_TARGETS.join(", ")
            ),
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    fuzz(secs, seed, &targets)
}

/// Runs each target for `secs` seconds. With a `seed`, the search is the
/// suite's check: it starts from the kept corpus alone (a fresh directory
/// for what it finds) with libFuzzer's seed fixed, so the inputs it tries
/// are the same sequence on every machine, only cut at a different length
/// by the machine's speed: what fails in CI fails here with the same
/// command. Without one, it is a search that grows target/fuzz/corpus.
fn fuzz(secs: u64, seed: Option<u32>, targets: &[&str]) -> Result<()> {
    cargo_fuzz_deps()?;
    let started = std::time::Instant::now();
    // cargo-fuzz has no --locked: check first that the fuzz crate's own
    // Cargo.lock (committed) is what the build will use.
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "fetch",
        "--locked",
        "--quiet",
        "--manifest-path",
        "crates/cairn-init/fuzz/Cargo.toml",
    ]))?;
    run(&mut cargo_fuzz(&["build", "-O"]))?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for t in targets {
        let fresh = match seed {
            Some(_) => {
                let d = root().join("target/fuzz/check").join(t);
                let _ = std::fs::remove_dir_all(&d);
                d
            }
            None => root().join("target/fuzz/corpus").join(t),
        };
        let artifacts = root().join("target/fuzz/artifacts").join(t);
        std::fs::create_dir_all(&fresh)?;
        std::fs::create_dir_all(&artifacts)?;
        let kept = root().join("crates/cairn-init/fuzz/corpus").join(t);
        eprintln!("xtask: fuzzing {t} for {secs} s");
        let mut c = cargo_fuzz(&["run", "-O", t]);
        c.arg(&fresh)
            .arg(&kept)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .args(seed.map(|s| format!("-seed={s}")))
            .arg("-timeout=10")
            .arg("-rss_limit_mb=1024")
            .arg("-max_len=70000")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        run(&mut c).with_context(|| {
            format!(
                "fuzz target {t} found an input that breaks its property (in {}); fix the \
                 parser and keep the input in crates/cairn-init/fuzz/corpus/{t}",
                artifacts.display()
            )
        })?;
    }
    eprintln!(
        "xtask: fuzzing done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The advisory database snapshot beside the repository (`../shared`,
/// read-only, not a git checkout) or `$CAIRN_ADVISORY_DB`.
fn advisory_snapshot() -> PathBuf {
    std::env::var_os("CAIRN_ADVISORY_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/advisory-db"))
}

/// Where cargo-deny looks for the database of deny.toml's `db-urls` under
/// its `db-path` (target/advisory-dbs): the URL's last segment and its
/// XxHash64 (seed 0xca80de71), cargo-deny 0.20's naming.
const ADVISORY_DB_DIR: &str = "advisory-db-3157b0e258782691";

/// The snapshot's date: `(YYYY-MM-DD)` in its README.cairn.md, else now.
fn snapshot_date(snapshot: &Path) -> Option<std::time::SystemTime> {
    let text = std::fs::read_to_string(snapshot.join("README.cairn.md")).ok()?;
    let i = text.find("(20")?;
    let date = text.get(i + 1..i + 11)?;
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()
        .ok()?;
    let secs: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else if e.file_type()?.is_file() {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

fn pip_install(package: &str) -> Result<()> {
    run(Command::new("python3").args(["-m", "pip", "install", "--user", "--quiet", package]))
}

/// Supply chain: advisories (the local snapshot, never fetched), licences,
/// bans and duplicates, sources, as deny.toml says.
/// `required`: without the snapshot, fail (`cargo xtask deny`) or say
/// loudly that the check was skipped (`cargo xtask test` on a machine
/// that has no copy of the database).
fn deny(required: bool) -> Result<()> {
    let snapshot = advisory_snapshot();
    if !snapshot.join("crates").is_dir() {
        let msg = format!(
            "no advisory database snapshot at {} (expected its crates/ folder); \
             set CAIRN_ADVISORY_DB to a copy of the RustSec advisory-db",
            snapshot.display()
        );
        if required {
            bail!(msg);
        }
        eprintln!("xtask: WARNING: supply-chain check (cargo deny) SKIPPED: {msg}");
        return Ok(());
    }
    cargo_deny_deps()?;
    // cargo-deny wants a writable git-like checkout: copy the advisories
    // and stamp .git/FETCH_HEAD with the snapshot's date, so that its
    // staleness limit (deny.toml) measures the snapshot's real age.
    let db = root().join("target/advisory-dbs").join(ADVISORY_DB_DIR);
    let _ = std::fs::remove_dir_all(&db);
    copy_tree(&snapshot.join("crates"), &db.join("crates"))?;
    std::fs::create_dir_all(db.join(".git"))?;
    let fetch_head = db.join(".git/FETCH_HEAD");
    std::fs::write(&fetch_head, "")?;
    let date = snapshot_date(&snapshot).unwrap_or_else(std::time::SystemTime::now);
    std::fs::File::options()
        .write(true)
        .open(&fetch_head)?
        .set_modified(date)?;
    // cargo deny reads the metadata of every target's dependencies (wasm
    // ones too), which a build for this host never downloads: fetch them
    // first, so that --offline below is about the advisory database only.
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["fetch", "--locked", "--quiet"]))?;
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        // --offline: the advisory database is opened, never fetched, and
        // its age checked against deny.toml's maximum-db-staleness.
        "deny",
        "--offline",
        "--locked",
        "check",
    ]))
}

/// Install the apt packages that are missing (with sudo when not root).
fn deps() -> Result<()> {
    apt_deps()?;
    pip_deps()
}

fn apt_deps() -> Result<()> {
    let missing = missing_packages();
    // `apt-get download` (kernel packages) needs the package lists too.
    let have_lists = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false);
    if missing.is_empty() && have_lists {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let is_root = is_root();
    let apt = |args: &[&str]| {
        let mut c = if is_root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    run(&mut apt(&["update", "-qq"]))?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    run(&mut install)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Build the static PID 1 and return its path.
fn build_init() -> Result<PathBuf> {
    build_static("cairn-init", static_target())
}

/// The arm64 init's target: rustup cannot add Rust targets on an offline
/// machine, so the init is built by Debian's `rustc-web` (a newer rustc
/// than bookworm's own, with per-architecture standard libraries) against
/// its arm64 std, and linked statically against glibc by the cross gcc.
const ARM64: &str = "aarch64-unknown-linux-gnu";
const RUSTC_WEB: &str = "/usr/bin/rustc";

/// A sysroot holding the arm64 standard library of the installed
/// `rustc-web`: `libstd-rust-web-dev:arm64` of exactly its version, fetched
/// with apt for arm64 (a private apt state in the cache, the host's apt
/// left alone; see cairn_image::kernel::Apt::for_arch) and unpacked into
/// target/arm64-sysroot/VERSION.
fn arm64_sysroot() -> Result<PathBuf> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "rustc-web"])
        .output()
        .context("dpkg-query")?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version.is_empty() {
        bail!("rustc-web is not installed (cargo xtask deps installs it)");
    }
    let sysroot = root()
        .join("target/arm64-sysroot")
        .join(version.replace([':', '~', '+'], "_"));
    let lib = sysroot.join("lib/rustlib").join(ARM64).join("lib");
    if lib.is_dir() {
        return Ok(sysroot);
    }
    let cache = cairn_image::kernel::cache_dir();
    let apt = cairn_image::kernel::Apt::for_arch("arm64", &cache)?;
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(root().join("target"))?;
    let spec = format!("libstd-rust-web-dev:arm64={version}");
    eprintln!("xtask: fetching {spec} (the arm64 Rust standard library)");
    cairn_image::kernel::apt_download(&apt, &[&spec], tmp.path())?;
    let deb = std::fs::read_dir(tmp.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = tmp.path().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let from = unpacked.join("usr/lib/rustlib").join(ARM64);
    if !from.join("lib").is_dir() {
        bail!("{} has no usr/lib/rustlib/{ARM64}/lib", deb.display());
    }
    let staging = tmp.path().join("sysroot");
    std::fs::create_dir_all(staging.join("lib/rustlib"))?;
    std::fs::rename(&from, staging.join("lib/rustlib").join(ARM64))?;
    std::fs::create_dir_all(sysroot.parent().context("sysroot parent")?)?;
    std::fs::rename(&staging, &sysroot)?;
    Ok(sysroot)
}

/// Build the static arm64 PID 1 (see [`ARM64`]) and return its path,
/// target/aarch64-unknown-linux-gnu/release/cairn-init.
fn build_init_arm64() -> Result<PathBuf> {
    let sysroot = arm64_sysroot()?;
    let dir = root().join("target");
    // RUSTFLAGS reach the arm64 crates only (--target): build scripts and
    // proc-macros are built for the host by the same rustc, with its own
    // (amd64) standard library.
    let flags = format!(
        "--sysroot {} -C linker=aarch64-linux-gnu-gcc",
        sysroot.display()
    );
    run(static_build("cairn-init", ARM64, &dir, true, &flags).env("RUSTC", RUSTC_WEB))?;
    Ok(dir.join(ARM64).join("release/cairn-init"))
}

/// `build-init [--arch x86_64|arm64]`.
fn build_init_cmd(args: &[String]) -> Result<PathBuf> {
    match args {
        [] => build_init(),
        [a, arch] if a == "--arch" => match arch.as_str() {
            "x86_64" => build_init(),
            "arm64" => {
                apt_deps()?;
                build_init_arm64()
            }
            other => bail!("unknown architecture {other} (x86_64, arm64)"),
        },
        _ => bail!("usage: cargo xtask build-init [--arch x86_64|arm64]"),
    }
}

/// Build the liveness tests' guest program (tests/load: a ticker and
/// hostile cairnctl clients) static, for the same target as the init, and
/// return its path.
fn build_test_load() -> Result<PathBuf> {
    build_static("cairn-test-load", static_target())
}

/// Build one workspace package as a static release binary for `triple`
/// and return its path, target/TRIPLE/release/PACKAGE.
fn build_static(package: &str, triple: &str) -> Result<PathBuf> {
    build_static_in(package, triple, &root().join("target"), true)
}

/// [`build_static`] into another target directory, optionally keeping the
/// symbols (same code, same addresses: only the symbol table differs).
fn build_static_in(package: &str, triple: &str, dir: &Path, strip: bool) -> Result<PathBuf> {
    build_static_with(package, triple, dir, strip, &[])
}

/// [`build_static_in`] with more `cargo build` arguments (features).
fn build_static_with(
    package: &str,
    triple: &str,
    dir: &Path,
    strip: bool,
    extra: &[&str],
) -> Result<PathBuf> {
    run(static_build(package, triple, dir, strip, "").args(extra))?;
    Ok(dir.join(triple).join("release").join(package))
}

/// The cargo command of [`build_static_in`], with `rustflags` before the
/// static-linking flag.
fn static_build(package: &str, triple: &str, dir: &Path, strip: bool, rustflags: &str) -> Command {
    // --target keeps RUSTFLAGS away from proc-macros and build scripts, and
    // gives the static build its own directory.
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root())
        .env(
            "RUSTFLAGS",
            format!("{rustflags} -C target-feature=+crt-static").trim(),
        )
        .env(
            "CARGO_PROFILE_RELEASE_STRIP",
            if strip { "true" } else { "false" },
        )
        .args([
            "build",
            "--locked",
            "--quiet",
            "--release",
            "-p",
            package,
            "--target",
            triple,
            "--target-dir",
        ])
        .arg(dir);
    c
}

fn build_cli(release: bool) -> Result<PathBuf> {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root())
        .args(["build", "--locked", "--quiet", "-p", "cairn"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("cairn"))
}

fn demo(args: &[String]) -> Result<()> {
    deps()?;
    let init = build_init()?;
    let cairn = build_cli(true)?;
    let mut c = Command::new(cairn);
    c.current_dir(root())
        .env("CAIRN_INIT", init)
        .args(["run", "examples/hello/cairn.toml", "-o", "out"])
        .args(args);
    run(&mut c)
}

fn test(args: &[String]) -> Result<()> {
    deps()?;
    let init = build_init()?;
    let init_arm64 = build_init_arm64()?;
    let load = build_test_load()?;
    let cairn = build_cli(false)?;
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["fmt", "--all", "--check"]))?;
    deny(false)?;
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "clippy",
        "--locked",
        "--quiet",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The parsers' fuzz targets search for FUZZ_TEST_SECS each from a
    // fixed seed (their kept corpus is also replayed by `cargo test`, on
    // stable, below).
    fuzz(FUZZ_TEST_SECS, Some(FUZZ_TEST_SEED), FUZZ_TARGETS)?;
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root())
        .env("CAIRN_INIT", &init)
        .env("CAIRN_INIT_ARM64", &init_arm64)
        .env("CAIRN_TEST_LOAD", &load)
        .env("CAIRN_BIN", &cairn)
        // The unit tests that need apt and Debian's real kernel run too.
        .env("CAIRN_NET_TESTS", "1")
        .args(["test", "--locked", "--workspace", "--no-fail-fast"])
        .args(args);
    run(&mut c)
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = args
        .split_first()
        .map(|(t, r)| (t.as_str(), r))
        .unwrap_or(("help", &[]));
    match task {
        "deps" => deps(),
        "build-init" => {
            let p = build_init_cmd(rest)?;
            println!("{}", p.display());
            Ok(())
        }
        "build-test-load" => {
            let p = build_test_load()?;
            println!("{}", p.display());
            Ok(())
        }
        "demo" => demo(rest),
        "bench" => bench_cmd(rest),
        "profile" => profile_cmd(rest),
        "initcalls" => initcalls_cmd(rest),
        "test" => test(rest),
        "deny" => deny(true),
        "fuzz" => fuzz_cmd(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask TASK\n\n\
                 tasks:\n  \
                 demo         install what is missing, build and boot examples/hello in QEMU\n  \
                 test         install what is missing, run fmt, cargo deny, clippy, 10 s of each fuzz target and the whole test suite\n  \
                 deny         the supply-chain check alone (cargo deny against ../shared/advisory-db, offline)\n  \
                 fuzz         [--time SECS] [TARGET...] run the parsers' fuzz targets (60 s each)\n  \
                 bench        boot cairn and a BusyBox baseline side by side; write bench/RESULTS.md\n  \
                 profile      which code each init runs before its service starts (QEMU TCG translation log)\n  \
                 initcalls    the tiny kernel's slowest initcalls in icount time (initcall_debug + System.map)\n  \
                 deps         install the Debian packages and the PyPI tools cairn needs\n  \
                 build-init   [--arch x86_64|arm64] build the static cairn-init and print its path\n  \
                 build-test-load  build the liveness tests' static guest program and print its path"
            );
            if task == "help" {
                Ok(())
            } else {
                bail!("unknown task {task}")
            }
        }
    }
}

/// Build the bench appliances' service (examples/web) static, for the same
/// target as the init, and copy it to `out/hello-web`, where the bench
/// manifests take it from.
fn build_web(init: &Path, out: &Path) -> Result<PathBuf> {
    // The init lives at target/TRIPLE/release/cairn-init.
    let triple = init
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|t| t.to_str())
        .context("cannot tell the init's target from its path")?;
    let built = build_static("hello-web", triple)?;
    std::fs::create_dir_all(out)?;
    let dst = out.join("hello-web");
    std::fs::copy(&built, &dst).with_context(|| format!("copying {}", built.display()))?;
    Ok(dst)
}

/// `cairn build` of `manifest` with the kernel and packages cached: after
/// one build to warm the cache, the same inputs again, then with changed
/// contents (a new SOURCE_DATE_EPOCH each time, one no earlier build used,
/// so the initramfs is compressed anew).
fn time_build(cairn: &Path, init: &Path, manifest: &str, out: &Path) -> Result<bench::Assembly> {
    let build_with = |epoch: Option<u64>, fast: bool| -> Result<f64> {
        let mut cmd = Command::new(cairn);
        cmd.current_dir(root())
            .env("CAIRN_INIT", init)
            .stdout(std::process::Stdio::null())
            .args(["build", manifest, "-o"])
            .arg(out);
        if fast {
            cmd.arg("--fast");
        }
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e.to_string());
        }
        let t = std::time::Instant::now();
        run(&mut cmd)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let build = |epoch: Option<u64>| build_with(epoch, false);
    build(None)?;
    let n = bench::ASSEMBLY_BUILDS;
    let same = (0..n).map(|_| build(None)).collect::<Result<Vec<f64>>>()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let changed = (0..n as u64)
        .map(|i| build(Some(now + i)))
        .collect::<Result<Vec<f64>>>()?;
    // Epochs after the release builds' ones: nothing cached either.
    let changed_fast = (n as u64..2 * n as u64)
        .map(|i| build_with(Some(now + i), true))
        .collect::<Result<Vec<f64>>>()?;
    Ok(bench::Assembly {
        manifest: manifest.into(),
        same: bench::median(same),
        changed: bench::median(changed),
        changed_fast: bench::median(changed_fast),
    })
}

/// Build one cairn bench appliance with the release CLI.
fn bench_cairn(
    cairn: &Path,
    init: &Path,
    manifest: &str,
    out: &Path,
    label: &str,
) -> Result<bench::Variant> {
    run(Command::new(cairn)
        .current_dir(root())
        .env("CAIRN_INIT", init)
        .stdout(std::process::Stdio::null())
        .args(["build", manifest, "-o"])
        .arg(out))?;
    let m = cairn_manifest::Manifest::load(&root().join(manifest))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(bench::Variant {
        label: label.into(),
        vmlinuz: out.join(format!("{}.vmlinuz", m.name)),
        initrd: out.join(format!("{}.initrd", m.name)),
        efi: Some(out.join(format!("{}.efi", m.name))),
        init_bytes: std::fs::metadata(init)?.len(),
        cmdline: m.kernel.cmdline.clone(),
        marks: bench::CAIRN_MARKS,
    })
}

/// `cargo xtask bench [--runs N] [--no-mem] [--only WORD[,WORD..]] [--init PATH]
/// [--compare PATH] [--append ARGS]` (`--init`: measure another cairn-init
/// build, such as one made with a different opt-level, against the same
/// baseline; `--compare`: add the tiny-kernel appliance built with another
/// init as one more variant, booted in turn with the others, for an A/B of
/// a change; `--append`: extra kernel command line for the cairn variants,
/// such as `cairn.debug` for a per-step timeline with CAIRN_BENCH_CONSOLE=1).
/// With `--only`, `--compare` or `--append` the table is printed but
/// bench/RESULTS.md is left alone.
fn bench_cmd(args: &[String]) -> Result<()> {
    let mut runs = 3usize;
    let mut mem = true;
    let mut only: Option<String> = None;
    let mut init_override: Option<PathBuf> = None;
    let mut append: Option<String> = None;
    let mut compare: Option<PathBuf> = None;
    let mut wall = true;
    let mut firecracker = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--no-mem" => mem = false,
            "--only" => only = Some(it.next().context("--only WORD")?.clone()),
            "--init" => init_override = Some(it.next().context("--init PATH")?.into()),
            "--append" => append = Some(it.next().context("--append ARGS")?.clone()),
            "--compare" => compare = Some(it.next().context("--compare PATH")?.into()),
            "--no-wall" => wall = false,
            "--no-firecracker" => firecracker = false,
            other => bail!("unknown bench option {other}"),
        }
    }
    deps()?;
    let init = match &init_override {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--init {}", p.display()))?,
        None => build_init()?,
    };
    let cairn = build_cli(true)?;
    let out = root().join("target/bench");
    let web = build_web(&init, &out)?;
    let mut variants = Vec::new();
    if root().join("bench/cairn-tiny.toml").exists() {
        variants.push(bench_cairn(
            &cairn,
            &init,
            "bench/cairn-tiny.toml",
            &out,
            "cairn (tiny kernel)",
        )?);
        if let Some(other) = &compare {
            let other = other
                .canonicalize()
                .with_context(|| format!("--compare {}", other.display()))?;
            variants.push(bench_cairn(
                &cairn,
                &other,
                "bench/cairn-tiny.toml",
                &out.join("compare"),
                "cairn (tiny kernel, --compare init)",
            )?);
        }
    }
    variants.push(bench_cairn(
        &cairn,
        &init,
        "bench/cairn-debian.toml",
        &out,
        "cairn (Debian kernel)",
    )?);
    // Only the cairn variants (all of them so far) get `--append`.
    if let Some(extra) = &append {
        for v in &mut variants {
            v.cmdline = format!("{} {extra}", v.cmdline);
        }
    }
    // The baseline runs on the same kernel as the first cairn variant.
    let (kernel, initrd) = (variants[0].vmlinuz.clone(), variants[0].initrd.clone());
    if firecracker {
        // The tiny appliance's initramfs on Firecracker's guest kernel
        // configuration, built from the same source (everything it needs
        // is built in).
        let image = firecracker_kernel()?;
        variants.push(bench::Variant {
            label: bench::FIRECRACKER_LABEL.into(),
            vmlinuz: image,
            efi: None,
            ..variants[0].clone()
        });
    }
    variants.push(bench::build_baseline(
        &root(),
        &kernel,
        &initrd,
        &web,
        &out,
    )?);
    if let Some(word) = &only {
        // Comma-separated words; a variant stays if its label has any.
        variants.retain(|v| word.split(',').any(|w| v.label.contains(w)));
        if variants.is_empty() {
            bail!("--only {word}: no variant's label contains it");
        }
    }
    let base = variants.len() - 1;

    let clocks: Vec<bench::Clock> = bench::CLOCKS
        .into_iter()
        .filter(|&c| wall || c != bench::Clock::Wall)
        .collect();
    let lab = bench::Lab::start()?;
    let mut measured: Vec<Vec<bench::Measured>> = clocks
        .iter()
        .map(|_| vec![bench::Measured::default(); variants.len()])
        .collect();
    for r in 0..runs {
        for (clock, per_clock) in clocks.iter().zip(measured.iter_mut()) {
            for (v, m) in variants.iter().zip(per_clock.iter_mut()) {
                eprintln!("bench: run {}/{runs}: {} ({:?})", r + 1, v.label, clock);
                let (_, console) = lab.boot(v, 256, *clock, std::time::Duration::from_secs(180))?;
                match bench::parse_timeline(&console, &v.marks) {
                    Some(t) => m.runs.push(t),
                    None => bail!(
                        "{} ({clock:?}): boot did not reach ready; console:\n{console}",
                        v.label
                    ),
                }
            }
        }
    }
    if mem {
        for (v, m) in variants.iter().zip(measured[0].iter_mut()) {
            eprintln!("bench: smallest RAM for {}", v.label);
            m.min_mem_mib = bench::min_memory(&lab, v, 1)?;
        }
    }
    // What containers add; not for an A/B run of boots.
    let containers = if only.is_none() && compare.is_none() && append.is_none() {
        Some(container_costs(
            &cairn,
            &init,
            &out.join("containers"),
            &lab,
            runs,
        )?)
    } else {
        None
    };
    drop(lab);

    let cmd = format!(
        "cargo xtask bench --runs {runs}{}{}{}{}",
        if mem { "" } else { " --no-mem" },
        if wall { "" } else { " --no-wall" },
        if firecracker { "" } else { " --no-firecracker" },
        init_override
            .as_ref()
            .map(|p| format!(" --init {}", p.display()))
            .unwrap_or_default()
    );
    // An --only/--compare/--append run is an A/B of boots: it leaves
    // bench/RESULTS.md alone and skips the image-assembly timing.
    let partial = only.is_some() || append.is_some() || compare.is_some();
    let manifests: &[&str] = if partial {
        &[]
    } else {
        &[
            "bench/cairn-tiny.toml",
            "bench/cairn-debian.toml",
            "examples/disk/cairn.toml",
        ]
    };
    let mut assembly = Vec::new();
    for manifest in manifests {
        eprintln!("bench: timing cairn build {manifest}");
        assembly.push(time_build(&cairn, &init, manifest, &out.join("assembly"))?);
    }
    let results = bench::Results {
        clocks: &clocks,
        measured: &measured,
    };
    let md = bench::report(
        &variants,
        &results,
        base,
        &assembly,
        containers.as_ref(),
        &cmd,
    );
    print!("{md}");
    if partial {
        eprintln!("bench: --only/--compare/--append run: bench/RESULTS.md left as it was");
        return Ok(());
    }
    std::fs::write(root().join("bench/RESULTS.md"), &md)?;
    let svg = root().join("target/bench/timeline.svg");
    let timed = results
        .under(bench::BUDGET_CLOCK)
        .context("the budgets' clock was not measured")?;
    std::fs::write(&svg, bench::timeline_svg(&variants, timed))?;
    run(Command::new("rsvg-convert")
        .arg(&svg)
        .arg("-o")
        .arg(root().join("bench/timeline.png")))?;
    eprintln!("bench: wrote bench/RESULTS.md and bench/timeline.png");
    Ok(())
}

/// The bench's "what containers add" figures: the init without its
/// container applets, Debian's container runtimes, and init to the first
/// output of `busybox echo` as a plain service and in a container (one
/// boot each per run, on the tiny kernel with the container profile).
fn container_costs(
    cairn: &Path,
    init: &Path,
    out: &Path,
    lab: &bench::Lab,
    runs: usize,
) -> Result<bench::ContainerCosts> {
    std::fs::create_dir_all(out)?;
    eprintln!("bench: cairn-init without container support");
    let without = build_static_with(
        "cairn-init",
        static_target(),
        &root().join("target/bench-no-containers"),
        true,
        &["--no-default-features"],
    )?;
    let mut others = Vec::new();
    for (pkg, files, what) in [
        (
            "crun",
            &["./usr/bin/crun"][..],
            "(`/usr/bin/crun`, dynamically linked: plus libseccomp, libyajl, libcap, libsystemd)",
        ),
        ("runc", &["./usr/sbin/runc"][..], "(`/usr/sbin/runc`)"),
        (
            "containerd",
            &[
                "./usr/bin/containerd",
                "./usr/bin/containerd-shim-runc-v2",
                "./usr/bin/ctr",
            ][..],
            "(`containerd` + `containerd-shim-runc-v2` + `ctr`, without runc)",
        ),
    ] {
        let (version, bytes) = debian_binaries(&out.join("debs"), pkg, files)?;
        others.push((format!("{pkg} {version} {what}"), bytes));
    }

    // A one-layer image of busybox (umoci, as tests/tests/containers.rs
    // makes them), and the same program as a plain service.
    let layout = out.join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    let rootfs = out.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    let tar = out.join("layer.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    let img = format!("{}:v1", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &img]))?;
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image", &img])
        .arg(&tar))?;
    let exec = format!(
        "exec = [\"/bin/busybox\", \"echo\", \"{}\"]",
        bench::FIRST_OUTPUT
    );
    let mut variants = Vec::new();
    for (name, service) in [
        ("plain", exec.clone()),
        ("container", format!("image = \"oci:{img}\"\n{exec}")),
    ] {
        let m = out.join(format!("{name}.toml"));
        std::fs::write(
            &m,
            format!(
                "name = \"bench-{name}\"\n\n[kernel]\nsource = \"/usr/src/linux-source-6.1.tar.xz\"\n\
                 config = [\"{tiny}\", \"{ctr}\"]\nbase = \"tinyconfig\"\ncmdline = \"console=ttyS0 panic=-1\"\n\n\
                 [[binary]]\npath = \"/bin/busybox\"\n\n[[service]]\nname = \"{name}\"\n{service}\n",
                tiny = root().join("kernel/tiny.config").display(),
                ctr = root().join("kernel/container.config").display(),
            ),
        )?;
        let mut v = bench_cairn(
            cairn,
            init,
            m.to_str().context("bench path")?,
            &out.join(name),
            name,
        )?;
        v.marks.done = bench::FIRST_OUTPUT;
        variants.push(v);
    }
    let clock = bench::BUDGET_CLOCK;
    let (mut plain, mut container) = (Vec::new(), Vec::new());
    for r in 0..runs {
        for (v, times) in variants.iter().zip([&mut plain, &mut container]) {
            eprintln!("bench: run {}/{runs}: first output, {}", r + 1, v.label);
            let (_, console) = lab.boot(v, 256, clock, std::time::Duration::from_secs(120))?;
            match bench::init_to_first_output(&console) {
                Some(t) => times.push(t),
                None => bail!("{}: no first output; console:\n{console}", v.label),
            }
        }
    }
    Ok(bench::ContainerCosts {
        init_with: std::fs::metadata(init)?.len(),
        init_without: std::fs::metadata(&without)?.len(),
        others,
        plain,
        container,
        clock,
    })
}

/// `apt-get download PKG` into `dir` (once): its version and the total
/// size of `files` (paths as `dpkg-deb -c` lists them).
fn debian_binaries(dir: &Path, pkg: &str, files: &[&str]) -> Result<(String, u64)> {
    std::fs::create_dir_all(dir)?;
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
    };
    if find().is_none() {
        run(Command::new("apt-get")
            .args(["download", "-qq", pkg])
            .current_dir(dir))?;
    }
    let deb = find().with_context(|| format!("apt-get download {pkg} gave no .deb"))?;
    let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let version = name.split('_').nth(1).unwrap_or("?").to_string();
    let list = Command::new("dpkg-deb").arg("-c").arg(&deb).output()?;
    let list = String::from_utf8_lossy(&list.stdout);
    let mut total = 0;
    for f in files {
        // "-rwxr-xr-x root/root 490184 2023-11-02 16:52 ./usr/bin/crun"
        let size = list
            .lines()
            .find(|l| l.split_whitespace().nth(5) == Some(*f))
            .and_then(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
            .with_context(|| format!("{f} is not in {}", deb.display()))?;
        total += size;
    }
    Ok((version, total))
}

/// Firecracker's guest kernel configuration for 6.1 (bench/firecracker-6.1.config,
/// a copy of shared/anchors/), built from the same source as the tiny
/// profile, or taken from the kernel cache: the path of its bzImage.
fn firecracker_kernel() -> Result<PathBuf> {
    let fragments = [root().join("bench/firecracker-6.1.config")];
    let cache = cairn_image::kernel::cache_dir();
    let req = cairn_image::kbuild::Request {
        source: Path::new("/usr/src/linux-source-6.1.tar.xz"),
        base: cairn_image::kbuild::Base::Defconfig,
        fragments: &fragments,
        cache: &cache,
    };
    let built = cairn_image::kbuild::build(&req, &mut |line| eprintln!("bench: {line}"))?;
    Ok(built.image)
}

/// `cargo xtask initcalls [--top N] [--system-map PATH]`: boots the bench's
/// tiny-kernel appliance once under `-icount shift=0,sleep=off` with
/// `initcall_debug` and prints the slowest initcalls, named with the
/// kernel's System.map (kept beside its bzImage in the kernel cache, or
/// given).
fn initcalls_cmd(args: &[String]) -> Result<()> {
    let mut top = 25usize;
    let mut map_path: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--top" => top = it.next().context("--top N")?.parse()?,
            "--system-map" => map_path = Some(it.next().context("--system-map PATH")?.into()),
            other => bail!("unknown initcalls option {other}"),
        }
    }
    deps()?;
    let init = build_init()?;
    let cairn = build_cli(true)?;
    let out = root().join("target/initcalls");
    build_web(&init, &root().join("target/bench"))?;
    let mut tiny = bench_cairn(
        &cairn,
        &init,
        "bench/cairn-tiny.toml",
        &out,
        "cairn (tiny kernel)",
    )?;
    let map_path = match map_path {
        Some(p) => p,
        None => {
            let fragments = [root().join("kernel/tiny.config")];
            let cache = cairn_image::kernel::cache_dir();
            let req = cairn_image::kbuild::Request {
                source: Path::new("/usr/src/linux-source-6.1.tar.xz"),
                base: cairn_image::kbuild::Base::Tinyconfig,
                fragments: &fragments,
                cache: &cache,
            };
            let built = cairn_image::kbuild::cached(&req)?
                .context("the tiny kernel is not in the cache")?;
            built.image.with_file_name("System.map")
        }
    };
    let map = initcalls::system_map(
        &std::fs::read_to_string(&map_path)
            .with_context(|| format!("{} (give one with --system-map)", map_path.display()))?,
    );
    // nokaslr: the printed addresses are then the System.map's.
    tiny.cmdline.push_str(" initcall_debug loglevel=8 nokaslr");
    tiny.marks.done = "cairn: ready";
    let lab = bench::Lab::start()?;
    let (done, console) = lab.boot_with(
        &tiny,
        256,
        std::time::Duration::from_secs(300),
        &bench::Clock::Icount { sleep: false }.qemu_args(),
    )?;
    drop(lab);
    if !done {
        bail!("the tiny appliance did not reach ready; console:\n{console}");
    }
    let calls = initcalls::parse(&console);
    if calls.is_empty() {
        bail!("no initcall lines on the console (initcall_debug):\n{console}");
    }
    print!("{}", initcalls::report(&calls, &map, top));
    if let Some(t) = bench::parse_timeline(&console, &bench::CAIRN_MARKS) {
        println!(
            "\nkernel log zero -> init {:.3} s; power-on -> ready {} (with initcall_debug \
             printing at loglevel 8, which adds its own console time)",
            t.init,
            t.power_on.map_or("n/a".into(), |p| format!("{p:.3} s"))
        );
    }
    Ok(())
}

/// `cargo xtask profile [--top N]`: boots the bench's tiny-kernel cairn
/// appliance (with an unstripped build of the same init) and the BusyBox
/// baseline once each with QEMU's translation log, and prints which code
/// each init runs before its service starts (see xtask/src/profile.rs).
fn profile_cmd(args: &[String]) -> Result<()> {
    let mut top = 25usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--top" => top = it.next().context("--top N")?.parse()?,
            other => bail!("unknown profile option {other}"),
        }
    }
    deps()?;
    let dir = root().join("target/profile");
    let init = build_static_in("cairn-init", static_target(), &dir, false)?;
    let cairn = build_cli(true)?;
    let web = build_web(&init, &root().join("target/bench"))?;
    let mut tiny = bench_cairn(
        &cairn,
        &init,
        "bench/cairn-tiny.toml",
        &dir,
        "cairn (tiny kernel)",
    )?;
    let mut base = bench::build_baseline(&root(), &tiny.vmlinuz, &tiny.initrd, &web, &dir)?;
    // Fixed load addresses, so the init's blocks map onto its symbols.
    for v in [&mut tiny, &mut base] {
        v.cmdline.push_str(" norandmaps");
    }
    let lab = bench::Lab::start()?;
    let mut logs = Vec::new();
    for v in [&tiny, &base] {
        let log = dir.join(format!(
            "{}.in_asm",
            v.label.split(' ').next().unwrap_or("x")
        ));
        let _ = std::fs::remove_file(&log);
        eprintln!("profile: booting {} with the translation log", v.label);
        let qemu = [
            "-d".to_string(),
            "in_asm".into(),
            "-D".into(),
            log.display().to_string(),
        ];
        let (done, console) = lab.boot_with(v, 256, std::time::Duration::from_secs(300), &qemu)?;
        if !done {
            bail!("{} did not reach ready; console:\n{console}", v.label);
        }
        logs.push(std::fs::read_to_string(&log).with_context(|| log.display().to_string())?);
    }
    drop(lab);

    let (entry, pie) = profile::elf_entry(&std::fs::read(&init)?)?;
    let blocks = profile::parse_log(&logs[0]);
    let (span, start) = profile::init_span(&blocks, (!pie).then_some(entry))
        .context("cairn-init's entry point is not in the translation log")?;
    let bias = if pie { start - entry } else { 0 };
    let cairn_bd = profile::breakdown(span, bias, &profile::symbols(&init)?);
    let (bb_entry, bb_pie) = profile::elf_entry(&std::fs::read("/bin/busybox")?)?;
    let bb_blocks = profile::parse_log(&logs[1]);
    let bb = profile::init_span(&bb_blocks, (!bb_pie).then_some(bb_entry))
        .map(|(s, _)| profile::breakdown(s, 0, &[]));
    print!("{}", profile::report(&cairn_bd, bb.as_ref(), top));
    Ok(())
}

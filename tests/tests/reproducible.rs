//! Reproducible builds: the same manifest built from two clean caches gives
//! byte-identical outputs; `--sbom` lists every file with its origin.

use std::path::Path;
use std::time::Duration;

use cairn_e2e::{cairn, dir_contents, example, pip_tool, run_with_timeout, Outcome};
use sha2::{Digest, Sha256};

fn build_with_cache(manifest: &Path, out: &Path, cache: &Path, extra: &[&str]) -> Outcome {
    let mut c = cairn();
    c.arg("build")
        .arg(manifest)
        .arg("-o")
        .arg(out)
        .args(extra)
        .env("CAIRN_CACHE_DIR", cache);
    // A cold cache may mean a kernel build from source.
    run_with_timeout(c, Duration::from_secs(60 * 60))
}

/// jq: a Debian kernel downloaded into each clean cache, modules, a
/// dynamically linked program, and the SBOM.
#[test]
fn clean_cache_builds_are_byte_identical_including_the_sbom() {
    let (c1, c2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (o1, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build_with_cache(&example("jq"), o1.path(), c1.path(), &["--sbom"]).assert_ok();
    build_with_cache(&example("jq"), o2.path(), c2.path(), &["--sbom"]).assert_ok();
    let (a, b) = (dir_contents(o1.path()), dir_contents(o2.path()));
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["jq.efi", "jq.initrd", "jq.spdx.json", "jq.vmlinuz"],
        "outputs"
    );
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{n} differs between two clean-cache builds");
    }
}

#[test]
fn sbom_names_every_file_with_origin_and_licence() {
    let out = tempfile::tempdir().unwrap();
    let mut c = cairn();
    c.arg("build")
        .arg(example("jq"))
        .arg("-o")
        .arg(out.path())
        .arg("--sbom");
    run_with_timeout(c, Duration::from_secs(300)).assert_ok();
    let doc = std::fs::read_to_string(out.path().join("jq.spdx.json")).unwrap();
    for needle in [
        "\"spdxVersion\": \"SPDX-2.3\"",
        "\"fileName\": \"./init\"",
        "origin: crate cairn-init",
        "\"fileName\": \"./usr/bin/jq\"",
        "origin: debian package jq ",
        "origin: debian package libc6 ",
        "\"fileName\": \"./vmlinuz\"",
        "origin: debian package linux-image-",
        "virtio_net.ko",
        "\"GPL-2.0-only\"",
        "pkg:deb/debian/libjq1@",
        "origin: host file ",
        "\"algorithm\": \"SHA256\"",
    ] {
        assert!(
            doc.contains(needle),
            "{needle:?} missing from the SBOM:\n{doc}"
        );
    }
    // One file entry per regular file in the initramfs, plus the kernel.
    let mut c = cairn();
    c.arg("inspect").arg(out.path().join("jq.initrd"));
    let listing = run_with_timeout(c, Duration::from_secs(60));
    listing.assert_ok();
    let regular = listing
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("-r"))
        .count();
    assert!(regular > 5, "inspect listing:\n{}", listing.stdout);
    assert_eq!(doc.matches("\"fileName\"").count(), regular + 1);

    // An outside SPDX validator (spdx-tools from PyPI) accepts it.
    let tool =
        pip_tool("pyspdxtools").expect("pyspdxtools: `cargo xtask deps` installs spdx-tools");
    let mut c = std::process::Command::new(tool);
    c.arg("-i").arg(out.path().join("jq.spdx.json"));
    run_with_timeout(c, Duration::from_secs(120)).assert_ok();

    // Every file's SHA-256 is that of the file in the image: unpack the
    // initramfs with GNU cpio and hash what it wrote.
    let root = tempfile::tempdir().unwrap();
    let cpio = root.path().join("initrd.cpio");
    let mut c = std::process::Command::new("zstd");
    c.args(["-d", "-q", "-f", "-o"])
        .arg(&cpio)
        .arg(out.path().join("jq.initrd"));
    run_with_timeout(c, Duration::from_secs(60)).assert_ok();
    let tree = root.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let mut c = std::process::Command::new("sh");
    c.current_dir(&tree).arg("-c").arg(format!(
        "cpio -id --quiet --no-absolute-filenames < '{}'",
        cpio.display()
    ));
    run_with_timeout(c, Duration::from_secs(60)).assert_ok();
    let json: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let files = json["files"].as_array().expect("files");
    let mut checked = 0;
    for f in files {
        let name = f["fileName"].as_str().unwrap();
        let sha = f["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["algorithm"] == "SHA256")
            .and_then(|c| c["checksumValue"].as_str())
            .unwrap_or_else(|| panic!("{name}: no SHA256"));
        let path = if name == "./vmlinuz" {
            out.path().join("jq.vmlinuz")
        } else {
            tree.join(name.trim_start_matches("./"))
        };
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, sha, "{name}: the SBOM's SHA-256 is not the image's");
        checked += 1;
    }
    assert_eq!(checked, regular + 1);
}

/// The tiny example, kernel built from source: a build from a cold cache
/// (its own source and object paths) gives the same .vmlinuz, .initrd and
/// .efi as a build from the suite's shared cache (which the tiny-kernel
/// tests fill; if it is cold too, this builds the kernel twice).
#[test]
fn source_kernel_builds_are_byte_identical() {
    let shared = tempfile::tempdir().unwrap();
    let mut c = cairn();
    c.arg("build")
        .arg(example("tiny"))
        .arg("-o")
        .arg(shared.path());
    run_with_timeout(c, Duration::from_secs(60 * 60)).assert_ok();
    let (cold_cache, cold_out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let o = build_with_cache(&example("tiny"), cold_out.path(), cold_cache.path(), &[]);
    o.assert_ok();
    let (a, b) = (dir_contents(shared.path()), dir_contents(cold_out.path()));
    let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["tiny.efi", "tiny.initrd", "tiny.vmlinuz"],
        "outputs"
    );
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{n} differs between a shared-cache and a cold-cache build"
        );
    }
}

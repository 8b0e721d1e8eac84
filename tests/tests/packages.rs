//! `[[package]]`: programs taken from Debian's archive, with their
//! libraries from the packages' dependencies, never from the build host.

use std::process::Command;
use std::time::Duration;

use cairn_e2e::{assert_refused_cleanly, boot, build, example};

/// The candidate version apt has for `package`.
fn apt_version(package: &str) -> String {
    let o = Command::new("apt-cache")
        .args(["show", "--no-all-versions", package])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap_or_else(|| panic!("apt knows no {package}: run apt-get update"))
        .to_string()
}

/// examples/packages takes Lua from Debian's archive. Lua is not installed
/// on the build host, so the interpreter and its libraries (readline,
/// ncurses' tinfo, libc) can only have come from the fetched packages: the
/// build table says which package and version each file is from, the SBOM
/// lists those packages with their versions and licences, two builds are
/// byte-identical, and the appliance runs the Lua script.
#[test]
fn lua_from_debian_packages_builds_reproducibly_and_runs() {
    let host_has_lua = Command::new("dpkg")
        .args(["-s", "lua5.4"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        !host_has_lua,
        "lua5.4 is installed on this host; this test shows the image does not need it"
    );
    let version = apt_version("lua5.4");
    let m = example("packages");
    let dir = tempfile::tempdir().unwrap();
    let (o1, o2) = (dir.path().join("one"), dir.path().join("two"));
    let mut c = cairn_e2e::cairn();
    c.arg("build").arg(&m).arg("-o").arg(&o1).arg("--sbom");
    let first = cairn_e2e::run_with_timeout(c, Duration::from_secs(600));
    first.assert_ok();
    let table = &first.stdout;
    let line = |path: &str| cairn_e2e::table_line(table, path);
    assert!(
        line("/usr/bin/lua5.4").contains(&format!("package lua5.4 {version}")),
        "{table}"
    );
    for lib in [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libreadline.so.8",
        "/lib/x86_64-linux-gnu/libtinfo.so.6",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    ] {
        let l = line(lib);
        assert!(l.contains(" package "), "{lib} not from a package: {l}");
    }
    assert!(!table.contains(" host "), "a host file went in:\n{table}");

    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o1.join("packages.spdx.json")).unwrap()).unwrap();
    let pkg = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "lua5.4")
        .unwrap_or_else(|| panic!("lua5.4 not in the SBOM"));
    assert_eq!(pkg["versionInfo"], version.as_str());
    assert_eq!(pkg["licenseDeclared"], "MIT");

    build(&m, &o2).assert_ok();
    for f in ["packages.initrd", "packages.efi"] {
        assert!(
            std::fs::read(o1.join(f)).unwrap() == std::fs::read(o2.join(f)).unwrap(),
            "{f} differs between two builds"
        );
    }

    let run = boot(&m, &o1, &[], Duration::from_secs(120));
    run.assert_ok();
    run.assert_stdout_has("hello: Hello from Lua 5.4, taken from Debian's archive");
}

const BASE: &str = "name = \"hello\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n";

#[test]
fn unknown_package_is_refused_at_its_name() {
    let text = format!("{BASE}[[package]]\nname = \"no-such-package-cairn\"\nfiles = [\"/x\"]\n");
    assert_refused_cleanly(
        &text,
        &[
            "bad.toml:5:8",
            "package no-such-package-cairn is not in the apt lists",
        ],
    );
}

#[test]
fn file_missing_from_its_package_is_refused_at_its_place() {
    // /usr/bin/nope is in no package; libjq.so.1 is in libjq1, which jq
    // depends on, not in jq itself.
    let text = format!("{BASE}[[package]]\nname = \"jq\"\nfiles = [\"/usr/bin/nope\"]\n");
    assert_refused_cleanly(
        &text,
        &["bad.toml:6:10", "`/usr/bin/nope` is not in package jq"],
    );
    let text = format!(
        "{BASE}[[package]]\nname = \"jq\"\nfiles = [\"/usr/lib/x86_64-linux-gnu/libjq.so.1.0.4\"]\n"
    );
    assert_refused_cleanly(
        &text,
        &["bad.toml:6:10", "comes from package libjq1", "not from jq"],
    );
}

/// A `[[binary]]` built for another architecture (here a copy of a host
/// program with its ELF machine set to AArch64) is refused at its place.
#[test]
fn binary_of_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut elf = std::fs::read("/usr/bin/jq").unwrap();
    elf[18..20].copy_from_slice(&183u16.to_le_bytes());
    let arm = dir.path().join("jq-arm64");
    std::fs::write(&arm, elf).unwrap();
    let text = format!(
        "{BASE}[[binary]]\npath = \"{}\"\ndst = \"/usr/bin/jq\"\n",
        arm.display()
    );
    assert_refused_cleanly(
        &text,
        &[
            "bad.toml:5:8",
            "is a program for",
            "AARCH64",
            "this image is x86_64",
        ],
    );
}

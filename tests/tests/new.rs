//! `cairn new`: every template is written, builds as it is, and boots in
//! QEMU (Debian's cloud kernel, TCG) to `cairn: ready`; a second `cairn
//! new` into the same directory refuses to overwrite the manifest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_e2e::{boot, build, cairn, run_with_timeout, Outcome};

const TEMPLATES: [&str; 4] = ["hello", "net", "web", "disk"];

/// `cairn new DIR --template T`.
fn new(dir: &Path, template: &str) -> Outcome {
    let mut c = cairn();
    c.arg("new").arg(dir).args(["--template", template]);
    run_with_timeout(c, Duration::from_secs(30))
}

fn new_ok(dir: &Path, template: &str) -> PathBuf {
    let o = new(dir, template);
    o.assert_ok();
    // It says how to boot it and where to change it.
    o.assert_stdout_has("cairn run ");
    o.assert_stdout_has("what to change next");
    dir.join("cairn.toml")
}

#[test]
fn every_template_builds_and_refuses_to_be_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    for t in TEMPLATES {
        let dir = tmp.path().join(format!("my-{t}"));
        let manifest = new_ok(&dir, t);
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(text.contains(&format!("name = \"my-{t}\"")), "{text}");
        let o = build(&manifest, &dir.join("out"));
        o.assert_ok();
        for ext in ["efi", "initrd", "vmlinuz"] {
            assert!(dir.join(format!("out/my-{t}.{ext}")).is_file(), "{t}.{ext}");
        }
        if t == "disk" {
            assert!(dir.join("out/my-disk.img").is_file());
        }
        // Again: refused, the manifest untouched.
        std::fs::write(&manifest, "# mine\n").unwrap();
        let again = new(&dir, t);
        assert!(!again.success, "second `cairn new` succeeded");
        assert!(
            again.stderr.contains("refusing to overwrite"),
            "{}",
            again.stderr
        );
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "# mine\n");
    }
}

#[test]
fn hello_template_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("greeter");
    let manifest = new_ok(&dir, "hello");
    let o = boot(
        &manifest,
        &dir.join("out"),
        &["--net", "none", "--mem", "256M"],
        Duration::from_secs(240),
    );
    o.assert_ok();
    o.assert_in_order(&["cairn: ready", "Hello from greeter!", "cairn: powering off"]);
}

#[test]
fn net_template_boots_and_gets_a_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("netty");
    let manifest = new_ok(&dir, "net");
    let o = boot(&manifest, &dir.join("out"), &[], Duration::from_secs(240));
    o.assert_ok();
    o.assert_in_order(&[
        "DHCPv4 lease obtained: 10.0.2.15/24",
        "cairn: ready",
        "inet 10.0.2.15/24",
        "nameserver 10.0.2.3",
        "cairn: powering off",
    ]);
}

/// The web template, booted the way `cairn new` says (port 80 forwarded,
/// here from a free port rather than 8080), serves its page.
#[test]
fn web_template_serves_its_page() {
    use cairn_e2e::net::{free_port, http_get, Guest};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    let o = new(&dir, "web");
    o.assert_ok();
    // The printed command forwards port 8080; use a free one instead.
    let line = o
        .stdout
        .lines()
        .find(|l| l.contains("hostfwd=tcp:127.0.0.1:8080-:80"))
        .unwrap_or_else(|| panic!("no forwarding command:\n{}", o.stdout));
    let extra: Vec<String> = line
        .split_once(" -- ")
        .unwrap()
        .1
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let port = free_port();
    let extra: Vec<String> = extra
        .into_iter()
        .map(|a| a.replace(":8080-", &format!(":{port}-")))
        .collect();
    let manifest = dir.join("cairn.toml");
    let out = dir.join("out");
    let g = Guest::start(
        &[],
        manifest.to_str().unwrap(),
        out.to_str().unwrap(),
        &extra,
    );
    g.wait("service httpd started", 240);
    let body = http_get(port, 60);
    assert!(
        body.contains("Hello from site, a cairn appliance."),
        "{body:?}\n{}",
        g.text()
    );
}

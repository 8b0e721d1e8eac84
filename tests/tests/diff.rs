//! `cairn diff` on two real builds: a change of command line, services,
//! network, files (with the modules the new service implies) and
//! signature between two UKIs and between their initramfs files; an image
//! against itself has no differences.

use std::path::Path;
use std::time::Duration;

use cairn_e2e::{build, cairn, run_with_timeout, Outcome};

const OLD: &str = r#"name = "app"
[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"

[[binary]]
path = "/bin/busybox"

[[service]]
name = "greet"
exec = ["/bin/busybox", "echo", "hello"]
on_exit = "poweroff"
"#;

const NEW: &str = r#"name = "app"
[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1 loglevel=4"

[[binary]]
path = "/bin/busybox"

[[file]]
src = "motd"
dst = "/etc/motd"

[[service]]
name = "greet"
exec = ["/bin/busybox", "echo", "hello again"]
restart = "on-failure"

[[service]]
name = "web"
exec = ["/bin/busybox", "httpd", "-f"]
after = ["network-online"]

[[network]]
match = { name = "eth0" }
addresses = ["192.168.7.2/24"]
gateway = "192.168.7.1"
"#;

fn diff(old: &Path, new: &Path) -> Outcome {
    let mut c = cairn();
    c.arg("diff").arg(old).arg(new);
    run_with_timeout(c, Duration::from_secs(60))
}

#[test]
fn diff_of_two_builds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("old")).unwrap();
    std::fs::create_dir_all(d.join("new")).unwrap();
    std::fs::write(d.join("old/cairn.toml"), OLD).unwrap();
    std::fs::write(d.join("new/cairn.toml"), NEW).unwrap();
    std::fs::write(d.join("new/motd"), "welcome\n").unwrap();
    // The new image is signed with a key of its own.
    let mut keys = cairn();
    keys.args(["keys", "generate"]).arg(d.join("keys"));
    run_with_timeout(keys, Duration::from_secs(120)).assert_ok();
    build(&d.join("old/cairn.toml"), &d.join("old/out")).assert_ok();
    let mut b = cairn();
    b.arg("build")
        .arg(d.join("new/cairn.toml"))
        .arg("-o")
        .arg(d.join("new/out"))
        .arg("--sign-key")
        .arg(d.join("keys/db.key"))
        .arg("--sign-cert")
        .arg(d.join("keys/db.crt"));
    run_with_timeout(b, Duration::from_secs(300)).assert_ok();

    let (old_efi, new_efi) = (d.join("old/out/app.efi"), d.join("new/out/app.efi"));
    let o = diff(&old_efi, &new_efi);
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    for needle in [
        "-cloud-amd64 (unchanged)",
        "cmdline: changed\n  - console=ttyS0 quiet panic=-1\n  + console=ttyS0 quiet panic=-1 loglevel=4\n",
        // The file, with its size, and the NIC modules web implies.
        "8 B  ",
        "/etc/motd",
        "virtio_net.ko",
        "services: 1 -> 2\n",
        "  ~ greet\n",
        "      exec: [\"/bin/busybox\",\"echo\",\"hello\"] -> [\"/bin/busybox\",\"echo\",\"hello again\"]",
        "      on_exit: \"poweroff\" -> \"(unset)\"",
        "  + web [\"/bin/busybox\",\"httpd\",\"-f\"]",
        "network: changed\n  interface: \"(unset)\" -> [",
        "192.168.7.2/24",
        "signature: unsigned -> signed by CN=cairn db",
        "(digest matches)",
    ] {
        o.assert_stdout_has(needle);
    }
    let motd = o.stdout.lines().find(|l| l.ends_with("/etc/motd")).unwrap();
    assert!(motd.starts_with("  + -rw-r--r--"), "{motd}");

    // The same between the initramfs files (no kernel, no signature).
    let o = diff(&d.join("old/out/app.initrd"), &d.join("new/out/app.initrd"));
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has("services: 1 -> 2");
    o.assert_stdout_has("/etc/motd");
    o.assert_stdout_has("signature: (not a UKI)");

    // An image against itself.
    let o = diff(&new_efi, &new_efi);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has("no differences");
    // Trouble is 2.
    let o = diff(&new_efi, &d.join("missing.efi"));
    assert_eq!(o.code, Some(2), "{}\n{}", o.stdout, o.stderr);
}

/// Two disk images (raw GPT): their partitions, and the UKIs in their
/// ESPs compared as UKIs.
#[test]
fn diff_of_two_disk_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, size, greeting) in [("old", "32M", "boot"), ("new", "48M", "start")] {
        let mut c = cairn();
        c.arg("new").arg(d.join(name)).args(["--template", "disk"]);
        run_with_timeout(c, Duration::from_secs(30)).assert_ok();
        let m = d.join(name).join("cairn.toml");
        let text = std::fs::read_to_string(&m)
            .unwrap()
            .replace("size = \"32M\"", &format!("size = \"{size}\""))
            .replace("name = \"new\"", "name = \"old\"")
            .replace("echo \\\"boot $n", &format!("echo \\\"{greeting} $n"))
            + "\n[iso]\n";
        std::fs::write(&m, text).unwrap();
        build(&m, &d.join(name).join("out")).assert_ok();
    }
    let (old, new) = (d.join("old/out/old.img"), d.join("new/out/old.img"));
    let o = diff(&old, &new);
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has("(disk image, its UKI)");
    o.assert_stdout_has(
        "partitions: changed\n  - ESP (64.00 MiB at 1.00 MiB), DATA (32.00 MiB at 65.00 MiB)\n  + ESP (64.00 MiB at 1.00 MiB), DATA (48.00 MiB at 65.00 MiB)\n",
    );
    o.assert_stdout_has("services: 1 -> 1\n  ~ count\n      exec: ");
    o.assert_stdout_has("signature: unsigned");
    let o = diff(&old, &old);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has(
        "partitions: ESP (64.00 MiB at 1.00 MiB), DATA (32.00 MiB at 65.00 MiB) (unchanged)",
    );
    // Their ISOs: the UKI in the ISO's EFI partition, and an ISO against
    // the other's disk image.
    let (old_iso, new_iso) = (d.join("old/out/old.iso"), d.join("new/out/old.iso"));
    let o = diff(&old_iso, &new_iso);
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has("(ISO image, its UKI)");
    o.assert_stdout_has("services: 1 -> 1\n  ~ count\n      exec: ");
    let o = diff(&old_iso, &old);
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has("files: 0 added, 0 removed, 0 changed");
    // A qcow2 copy of the old disk (as `[disk] format = "qcow2"` writes
    // it): read through qemu-img, and the same as the raw one.
    let qcow2 = d.join("old.qcow2");
    let mut c = std::process::Command::new("qemu-img");
    c.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&old)
        .arg(&qcow2);
    run_with_timeout(c, Duration::from_secs(60)).assert_ok();
    let o = diff(&qcow2, &old);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    o.assert_stdout_has("(qcow2 disk image, its UKI)");
    o.assert_stdout_has(
        "partitions: ESP (64.00 MiB at 1.00 MiB), DATA (32.00 MiB at 65.00 MiB) (unchanged)",
    );
}

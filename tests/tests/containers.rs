//! OCI images as services (issue 15), end to end, with images made by real
//! tools in the test: `podman build` (chroot isolation: the sandbox's
//! cgroups keep crun from running a RUN step, and none is needed) from a
//! Containerfile `FROM scratch` with busybox-static and a dynamically
//! linked program (`id`) with its libraries, saved as oci-archive and as
//! docker-archive; and an OCI layout made with `umoci`, whose second layer
//! (a tar made with GNU tar, added with `umoci raw add-layer`) deletes a
//! file (whiteout) and replaces a directory (opaque).
//!
//! One appliance on Debian's cloud kernel with a data partition runs three
//! containers and a plain service; two boots of it check:
//! - `web` (oci-archive, a volume on /data, a host name of its own): its
//!   entrypoint is PID 1 of its namespace and sees few processes, its root
//!   is the image's (`/etc/cairn` absent), the dynamically linked `id` runs
//!   as the image's user, the host name is set; a write outside the volume
//!   is gone when it restarts (it exits once per boot, `restart =
//!   "on-failure"`), the volume's counter goes on across the reboot;
//!   `cairnctl logs web` shows its output; the power button's SIGTERM
//!   reaches it and the machine powers off cleanly;
//! - `dock` (docker-archive, `network = "none"`, `user = "app"` from the
//!   image's /etc/passwd): only `lo`, uid 1000;
//! - `layers` (oci:DIR:TAG): the whiteout and the opaque directory were
//!   applied; `memory_max` is enforced (it is killed allocating 48 MB).
//!
//! Bad images are refused at build time with the manifest's place and the
//! image and blob named: a digest mismatch, a missing blob, layers with
//! `../` paths and a write through an absolute symlink.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_e2e::{build, pip_tool, run_with_timeout, Live};

fn tool(cmd: &mut Command) -> String {
    let mut c = Command::new("timeout");
    c.arg("300").arg(cmd.get_program()).args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    let o = run_with_timeout(c, Duration::from_secs(320));
    assert!(o.success, "{cmd:?} failed:\n{}\n{}", o.stdout, o.stderr);
    o.stdout
}

fn copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, dst).unwrap();
}

const RUN_SH: &str = r#"echo "web: pid=$$ procs=$(ls /proc | grep -c '^[0-9]') host=$(hostname) file=$(cat /etc/hostname) pwd=$(pwd)"
if [ -e /etc/cairn ]; then echo "web: sees /etc/cairn"; else echo "web: no /etc/cairn"; fi
echo "web: marker=$(cat /etc/cairn-image-marker)"
echo "web: id=$(/usr/bin/id -u):$(/usr/bin/id -g)"
echo "web: ifaces=$(grep -c : /proc/net/dev)"
if [ -e /scratch ]; then echo "web: scratch survived"; else echo "web: scratch absent"; fi
echo x > /scratch
n=$(cat /var/lib/web/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /var/lib/web/count; sync
echo "web: volume count=$n"
if [ ! -e /var/lib/web/restarted ]; then touch /var/lib/web/restarted; sync; echo "web: exiting to be restarted"; exit 3; fi
rm /var/lib/web/restarted; sync
trap 'echo "web: got TERM"; exit 0' TERM
echo "web: waiting"
while true; do sleep 1; done
"#;

/// Builds the podman image and saves it both ways; returns (oci-archive,
/// docker-archive).
fn podman_images(dir: &Path) -> (PathBuf, PathBuf) {
    let ctx = dir.join("ctx");
    let root = ctx.join("rootfs");
    copy(Path::new("/bin/busybox"), &root.join("bin/busybox"));
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    // A dynamically linked program and the libraries ldd names.
    copy(Path::new("/usr/bin/id"), &root.join("usr/bin/id"));
    let ldd = tool(Command::new("ldd").arg("/usr/bin/id"));
    for line in ldd.lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(p) = path {
            copy(&p, &root.join(p.strip_prefix("/").unwrap()));
        }
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\nweb:x:2000:2000::/srv:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nweb:x:2000:\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/cairn-image-marker"), "from the image\n").unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::write(root.join("app/run.sh"), RUN_SH).unwrap();
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY rootfs/ /\nUSER web\nWORKDIR /srv\nENV GREETING=from-the-image\n\
         ENTRYPOINT [\"/bin/busybox\", \"sh\"]\nCMD [\"/app/run.sh\"]\n",
    )
    .unwrap();
    let tag = format!("localhost/cairn-e2e-web-{}:1", std::process::id());
    tool(
        Command::new("podman")
            .args(["build", "--isolation=chroot", "-q", "-t", &tag, "."])
            .current_dir(&ctx),
    );
    let oci = dir.join("web-oci.tar");
    let docker = dir.join("web-docker.tar");
    tool(
        Command::new("podman")
            .args(["save", "-q", "--format", "oci-archive", "-o"])
            .arg(&oci)
            .arg(&tag),
    );
    tool(
        Command::new("podman")
            .args(["save", "-q", "--format", "docker-archive", "-o"])
            .arg(&docker)
            .arg(&tag),
    );
    tool(Command::new("podman").args(["rmi", "-f", &tag]));
    (oci, docker)
}

/// An OCI layout made with umoci: layer 1 (busybox and a hard link to it,
/// /etc/motd, /opt/old/a, a device node /opt/null),
/// layer 2 (a whiteout of /etc/motd, /opt/old made opaque with a new b).
fn umoci_layout(dir: &Path) -> PathBuf {
    let lay = dir.join("layout");
    let img = format!("{}:v1", lay.display());
    tool(Command::new("umoci").args(["init", "--layout"]).arg(&lay));
    tool(Command::new("umoci").args(["new", "--image", &img]));
    let l1 = dir.join("l1");
    copy(Path::new("/bin/busybox"), &l1.join("bin/busybox"));
    std::fs::create_dir_all(l1.join("etc")).unwrap();
    std::fs::write(l1.join("etc/motd"), "old motd\n").unwrap();
    std::fs::create_dir_all(l1.join("opt/old")).unwrap();
    std::fs::write(l1.join("opt/old/a"), "a\n").unwrap();
    // A hard link and a device node, kept through tar, umoci and the build.
    std::fs::hard_link(l1.join("bin/busybox"), l1.join("bin/bb-link")).unwrap();
    tool(
        Command::new("mknod")
            .arg(l1.join("opt/null"))
            .args(["c", "1", "3"]),
    );
    let l2 = dir.join("l2");
    std::fs::create_dir_all(l2.join("etc")).unwrap();
    std::fs::write(l2.join("etc/.wh.motd"), "").unwrap();
    std::fs::create_dir_all(l2.join("opt/old")).unwrap();
    std::fs::write(l2.join("opt/old/.wh..wh..opq"), "").unwrap();
    std::fs::write(l2.join("opt/old/b"), "b\n").unwrap();
    for (n, l) in [("l1.tar", &l1), ("l2.tar", &l2)] {
        let t = dir.join(n);
        tool(
            Command::new("tar")
                .arg("-C")
                .arg(l)
                .arg("-cf")
                .arg(&t)
                .arg("."),
        );
        tool(
            Command::new("umoci")
                .args(["raw", "add-layer", "--image", &img])
                .arg(&t),
        );
    }
    tool(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.entrypoint",
        "/bin/busybox",
        "--config.cmd",
        "sh",
    ]));
    lay
}

fn manifest(oci: &Path, docker: &Path, layout: &Path) -> String {
    format!(
        r#"name = "ctr"
hostname = "appliance"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"
modules = ["virtio_pci", "virtio_blk", "virtio_net", "evdev", "button"]

[disk]
format = "raw"

[[partition]]
label = "DATA"
size = "32M"
fs = "none"

[[mount]]
label = "DATA"
path = "/data"
fs = "ext4"
format = "if-empty"
required = true

[[binary]]
path = "/bin/busybox"

[[service]]
name = "web"
image = "oci-archive:{oci}"
storage = "erofs"
volumes = ["/data/web:/var/lib/web"]
hostname = "webbox"
restart = "on-failure"
restart_delay = "200ms"

[[service]]
name = "dock"
image = "docker-archive:{docker}"
exec = ["/bin/busybox", "sh", "-c", "echo \"dock: pid=$$ ifaces=$(grep -c : /proc/net/dev) id=$(/usr/bin/id -u):$(/usr/bin/id -g) host=$(hostname) greeting=$GREETING marker=$(cat /etc/cairn-image-marker)\""]
network = "none"
user = "app"

[[service]]
name = "layers"
image = "oci:{layout}:v1"
exec = ["/bin/busybox", "sh", "-c", "if [ -e /etc/motd ]; then m=present; else m=gone; fi; echo \"layers: motd=$m old=$(ls /opt/old | tr '\\n' ' ')\"; echo layers: allocating; x=$(head -c 50000000 /dev/zero | tr '\\0' a); echo \"layers: allocated ${{#x}}\""]
memory_max = "16M"

[[service]]
name = "ctl"
exec = ["/bin/busybox", "sh", "-c", "until /usr/bin/cairnctl logs web | grep -q 'web: waiting'; do sleep 1; done; /usr/bin/cairnctl logs web | sed 's/^/CTL| /'; echo CTL-DONE"]
"#,
        oci = oci.display(),
        docker = docker.display(),
        layout = layout.display(),
    )
}

#[test]
fn containers_run_from_podman_and_umoci_images() {
    let dir = tempfile::tempdir().unwrap();
    let (oci, docker) = podman_images(dir.path());
    let layout = umoci_layout(dir.path());
    let m = dir.path().join("cairn.toml");
    std::fs::write(&m, manifest(&oci, &docker, &layout)).unwrap();
    let out = dir.path().join("out");
    let o = build(&m, &out);
    o.assert_ok();
    o.assert_stdout_has("module erofs (implied by [[service]] web (storage = erofs))");
    erofs_partition_holds_the_image(
        &out.join("ctr.img"),
        &out.join("ctr.initrd"),
        "web",
        &["dock", "layers"],
        dir.path(),
    );

    let qmp_sock = dir.path().join("qmp.sock");
    let qmp_arg = format!("unix:{},server,nowait", qmp_sock.display());
    // `cairn run`'s own NIC (user networking): eth0.
    let args = ["--disk", "--mem", "256M", "--", "-qmp", &qmp_arg];
    let t = Duration::from_secs(400);
    let mut live = Live::start(&m, &out, &args, t);
    live.wait_for("CTL-DONE", t);
    live.wait_for("layers: allocating", Duration::from_secs(60));
    live.wait_until(
        |o| o.contains("service layers exited"),
        Duration::from_secs(60),
    );
    cairn_e2e::qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not power off:\n{o}");
    let has = |s: &str| assert!(o.contains(s), "{s:?} missing:\n{o}");
    // web: its own root, PID 1, few processes, its host name and user.
    has("web: pid=1 procs=");
    has("host=webbox file=webbox pwd=/srv");
    has("web: no /etc/cairn");
    // web's image is the erofs partition, mounted before any service.
    has("(PARTLABEL=img-web) on /containers/web");
    has("web: marker=from the image");
    has("web: id=2000:2000");
    has("web: ifaces=2"); // host network: lo and eth0
    has("web: volume count=1");
    has("web: exiting to be restarted");
    // Restarted: the write outside the volume is gone, the volume kept it.
    has("web: volume count=2");
    assert!(!o.contains("web: scratch survived"), "{o}");
    has("web: waiting");
    // cairnctl logs web, through the control socket.
    has("CTL| ");
    assert!(
        o.lines()
            .any(|l| l.contains("CTL| ") && l.contains("web: volume count=2")),
        "{o}"
    );
    // dock: docker-archive, no network, the manifest's user from the image.
    has("dock: pid=1 ifaces=1 id=1000:1000 host=appliance greeting=from-the-image marker=from the image");
    // layers: whiteout and opaque directory applied; memory_max enforced.
    has("layers: motd=gone old=b ");
    assert!(!o.contains("layers: allocated"), "{o}");
    // The power button: SIGTERM reached the entrypoint, clean power off.
    has("web: got TERM");
    has("reboot: Power down");

    // Second boot: the volume's counter goes on.
    let args = ["--disk", "--mem", "256M", "--net", "none"];
    let mut live = Live::start(&m, &out, &args, t);
    live.wait_for("web: volume count=4", t);
    let (o, _) = live.finish(Duration::from_secs(1));
    assert!(o.contains("web: volume count=3"), "{o}");
}

/// The image of service `name` (storage = "erofs") is an erofs
/// filesystem on the partition `img-NAME` of `disk` that fsck.erofs
/// accepts and that holds the image's files with their owners; the
/// initramfs `initrd` has only its (empty) mount point, and still holds
/// the trees of the containers `in_initramfs`.
fn erofs_partition_holds_the_image(
    disk: &Path,
    initrd: &Path,
    name: &str,
    in_initramfs: &[&str],
    dir: &Path,
) {
    use cairn_e2e::img;
    let (part, _) = img::copy_partition(disk, &format!("img-{name}"), dir);
    img::check("fsck.erofs", &[], &part);
    let dump = |args: &[&str]| tool(Command::new("dump.erofs").args(args).arg(&part));
    let sb = dump(&["-s"]);
    assert!(sb.contains("0xE0F5E1E2"), "{sb}");
    let busybox = dump(&["--path=/bin/busybox"]);
    assert!(busybox.contains("regular file"), "{busybox}");
    assert!(busybox.contains("Uid: 0"), "{busybox}");
    let (_, raw) = cairn_image::compress::decompress_auto(&std::fs::read(initrd).unwrap()).unwrap();
    let paths: Vec<String> = cairn_image::cpio::read(&raw)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    let root = format!("containers/{name}");
    assert!(paths.contains(&root), "no mount point {root}");
    let inside: Vec<&String> = paths
        .iter()
        .filter(|p| p.starts_with(&format!("{root}/")))
        .collect();
    assert!(inside.is_empty(), "the initramfs holds {inside:?}");
    for other in in_initramfs {
        let bin = format!("containers/{other}/bin/busybox");
        assert!(paths.contains(&bin), "{bin} is not in the initramfs");
    }
}

/// Each bad image is refused by `cairn build` with the manifest's line and
/// column, the image and the blob.
#[test]
fn bad_images_are_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let layout = umoci_layout(dir.path());
    let manifest_for = |image: &str| {
        let m = dir.path().join("bad.toml");
        std::fs::write(
            &m,
            format!(
                "name = \"bad\"\n\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n\n\
                 [[service]]\nname = \"c\"\nimage = \"{image}\"\n"
            ),
        )
        .unwrap();
        m
    };
    let refused = |image: &str, want: &[&str]| {
        let m = manifest_for(image);
        let o = build(&m, &dir.path().join("out"));
        assert!(!o.success, "built {image}:\n{}", o.stdout);
        assert!(
            o.stderr.contains("bad.toml:8:9: error: image "),
            "{}",
            o.stderr
        );
        for w in want {
            assert!(o.stderr.contains(w), "{w:?} missing:\n{}", o.stderr);
        }
    };
    // The layout itself builds, to the same bytes twice, and its digests
    // are in the SBOM.
    let img = format!("oci:{}:v1", layout.display());
    let sbom_build = |out: &Path| {
        let mut c = cairn_e2e::cairn();
        c.arg("build")
            .arg(manifest_for(&img))
            .arg("-o")
            .arg(out)
            .arg("--sbom");
        let o = run_with_timeout(c, Duration::from_secs(300));
        o.assert_ok();
        // The manifest lists no modules; the overlay module comes anyway.
        o.assert_stdout_has("module overlay");
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    sbom_build(&a);
    sbom_build(&b);
    for f in ["bad.initrd", "bad.efi", "bad.spdx.json"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two builds"
        );
    }
    // With storage = "erofs" the disk image, its erofs partition
    // included, is the same bytes twice too; without a [disk] to put the
    // partition on, the build is refused at `storage`.
    let erofs_manifest = |disk: &str| {
        let m = dir.path().join("erofs.toml");
        std::fs::write(
            &m,
            format!(
                "name = \"bad\"\n\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n\n{disk}\
                 [[service]]\nname = \"c\"\nimage = \"{img}\"\nstorage = \"erofs\"\n"
            ),
        )
        .unwrap();
        m
    };
    let o = build(&erofs_manifest(""), &dir.path().join("out"));
    assert!(!o.success, "{}", o.stdout);
    assert!(
        o.stderr
            .contains("erofs.toml:9:11: error: storage = \"erofs\" puts the image on a partition"),
        "{}",
        o.stderr
    );
    let (ea, eb) = (dir.path().join("ea"), dir.path().join("eb"));
    for out in [&ea, &eb] {
        build(&erofs_manifest("[disk]\n"), out).assert_ok();
    }
    for f in ["bad.initrd", "bad.img"] {
        assert!(
            std::fs::read(ea.join(f)).unwrap() == std::fs::read(eb.join(f)).unwrap(),
            "{f} differs between two builds"
        );
    }
    erofs_partition_holds_the_image(
        &ea.join("bad.img"),
        &ea.join("bad.initrd"),
        "c",
        &[],
        dir.path(),
    );

    let sbom = std::fs::read_to_string(a.join("bad.spdx.json")).unwrap();
    // An outside SPDX validator accepts the document with the image in it.
    let validator =
        pip_tool("pyspdxtools").expect("pyspdxtools: `cargo xtask deps` installs spdx-tools");
    let mut c = Command::new(validator);
    c.arg("-i").arg(a.join("bad.spdx.json"));
    run_with_timeout(c, Duration::from_secs(120)).assert_ok();
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    let manifest_digest = index
        .split("\"digest\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    assert!(
        sbom.contains(&format!("\"versionInfo\": \"{manifest_digest}\"")),
        "{sbom}"
    );
    assert!(
        sbom.contains("\"primaryPackagePurpose\": \"CONTAINER\""),
        "{sbom}"
    );
    // Every blob the image manifest names (config, layers) is in it.
    let manifest_json =
        std::fs::read_to_string(layout.join("blobs/sha256").join(&manifest_digest[7..])).unwrap();
    let named: Vec<&str> = manifest_json
        .split("sha256:")
        .skip(1)
        .map(|r| &r[..64])
        .collect();
    assert_eq!(named.len(), 3, "{manifest_json}");
    for d in named {
        assert!(sbom.contains(d), "{d} not in the SBOM:\n{sbom}");
    }
    assert!(sbom.contains("./containers/c/bin/busybox"), "{sbom}");

    // The largest blob is the busybox layer: change one byte of it.
    let blobs = layout.join("blobs/sha256");
    let mut all: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let big = all.last().unwrap().clone();
    let digest = format!("sha256:{}", big.file_name().unwrap().to_str().unwrap());
    let orig = std::fs::read(&big).unwrap();
    let mut bytes = orig.clone();
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    std::fs::write(&big, &bytes).unwrap();
    refused(&img, &[&digest, "digest mismatch"]);
    std::fs::remove_file(&big).unwrap();
    refused(&img, &[&digest, "blob is missing from the image"]);
    std::fs::write(&big, &orig).unwrap();

    // An image without Entrypoint or Cmd and a service without `exec`;
    // a `user` the image does not have.
    let bare = dir.path().join("bare");
    let bare_ref = format!("{}:v1", bare.display());
    tool(Command::new("umoci").args(["init", "--layout"]).arg(&bare));
    tool(Command::new("umoci").args(["new", "--image", &bare_ref]));
    tool(
        Command::new("umoci")
            .args(["raw", "add-layer", "--image", &bare_ref])
            .arg(dir.path().join("l1.tar")),
    );
    refused(
        &format!("oci:{bare_ref}"),
        &["no Entrypoint or Cmd in its config; set `exec`"],
    );
    let m = dir.path().join("user.toml");
    std::fs::write(
        &m,
        format!(
            "name = \"bad\"\n\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n\n\
             [[service]]\nname = \"c\"\nimage = \"{img}\"\nuser = \"nosuch\"\n"
        ),
    )
    .unwrap();
    let o = build(&m, &dir.path().join("out"));
    assert!(!o.success, "{}", o.stdout);
    assert!(
        o.stderr.contains("user.toml:9:8: error: image ")
            && o.stderr
                .contains("user `nosuch` is not in the image's /etc/passwd"),
        "{}",
        o.stderr
    );

    // Hostile layers, made with Python's tarfile (GNU tar will not write
    // them) and added with umoci.
    for (name, script, want) in [
        (
            "dotdot",
            "t.addfile(tarfile.TarInfo('../../escape'))",
            "`..` would leave the image root",
        ),
        (
            "symlink",
            "i = tarfile.TarInfo('etc'); i.type = tarfile.SYMTYPE; i.linkname = '/etc'; t.addfile(i); \
             t.addfile(tarfile.TarInfo('etc/passwd'))",
            "goes through the symlink `etc` -> `/etc`",
        ),
    ] {
        let lay = dir.path().join(format!("lay-{name}"));
        tool(Command::new("cp").arg("-a").arg(&layout).arg(&lay));
        let tar = dir.path().join(format!("{name}.tar"));
        let py = format!(
            "import tarfile\nt = tarfile.open('{}', 'w')\n{script}\nt.close()\n",
            tar.display()
        );
        tool(Command::new("python3").arg("-c").arg(&py));
        let umoci_ref = format!("{}:v1", lay.display());
        tool(Command::new("umoci").args(["raw", "add-layer", "--image", &umoci_ref]).arg(&tar));
        refused(&format!("oci:{umoci_ref}"), &[want, "layer entry"]);
    }
}

/// Two containers whose entrypoint orphans a child and then becomes a
/// program that never waits (`sleep`): `r1` without `init`, `r2` with.
/// The orphan (`sleep 1`) exits after the shell has become `sleep`: an
/// orphan that ended while the shell still ran could be reaped by the
/// shell itself (it did once, under load), and `r1` would show no zombie.
fn reapers(layout: &Path) -> String {
    let mut out = String::new();
    for (n, init) in [("r1", false), ("r2", true)] {
        out += &format!(
            r#"
[[service]]
name = "{n}"
image = "oci:{layout}:v1"
init = {init}
exec = ["/bin/busybox", "sh", "-c", "echo {n}: pid=$$; (/bin/busybox sleep 1 &); (/bin/busybox sleep 3; echo {n}: zombies=$(/bin/busybox cat /proc/[0-9]*/stat | /bin/busybox grep -c ') Z ')) & exec /bin/busybox sleep 5"]
"#,
            layout = layout.display()
        );
    }
    out
}

/// The tiny kernel with the container profile (`kernel/tiny.config` +
/// `kernel/container.config`, built from Debian's linux-source-6.1 as
/// tests/tests/tiny.rs does, and cached there) runs a container: its
/// entrypoint is PID 1 with the image's root (written through the
/// overlay), its own host name, no network. Its image is on an erofs
/// partition (`storage = "erofs"`, the kernel's built-in erofs), hard
/// link and device node included; the reapers' images are in the
/// initramfs.
#[test]
fn tiny_container_kernel_runs_a_container() {
    let dir = tempfile::tempdir().unwrap();
    let layout = umoci_layout(dir.path());
    let root = cairn_e2e::root();
    let m = dir.path().join("tiny-ctr.toml");
    std::fs::write(
        &m,
        format!(
            r#"name = "tiny-ctr"
hostname = "tiny"

[kernel]
source = "/usr/src/linux-source-6.1.tar.xz"
config = ["{tiny}", "{ctr}"]
base = "tinyconfig"
cmdline = "console=ttyS0 quiet panic=-1"

[disk]

[[service]]
name = "c"
image = "oci:{layout}:v1"
storage = "erofs"
exec = ["/bin/busybox", "sh", "-c", "echo c: pid=$$ host=$(/bin/busybox hostname) ifaces=$(/bin/busybox grep -c : /proc/net/dev) etc=$(/bin/busybox ls /etc) old=$(/bin/busybox ls /opt/old); echo written > /opt/new && echo c: overlay=$(/bin/busybox cat /opt/new); /bin/busybox test -e /etc/cairn || echo c: no /etc/cairn; echo c: links=$(/bin/busybox stat -c %h /bin/bb-link) same=$(/bin/busybox stat -c %i /bin/busybox /bin/bb-link | /bin/busybox uniq | /bin/busybox wc -l) null=$(/bin/busybox stat -c %F,%t,%T /opt/null); /bin/busybox sleep 10"]
hostname = "inner"
network = "none"
on_exit = "poweroff"
{reapers}"#,
            tiny = root.join("kernel/tiny.config").display(),
            ctr = root.join("kernel/container.config").display(),
            layout = layout.display(),
            reapers = reapers(&layout),
        ),
    )
    .unwrap();
    // A cold kernel build takes minutes on 2 cores; tiny.rs shares the cache.
    // The kernel boots directly; the disk with c's erofs partition is
    // attached beside it.
    let out = dir.path().join("out");
    let drive = format!(
        "file={},format=raw,if=virtio",
        out.join("tiny-ctr.img").display()
    );
    let o = cairn_e2e::boot(
        &m,
        &out,
        &["--net", "none", "--mem", "128M", "--", "-drive", &drive],
        Duration::from_secs(45 * 60),
    );
    o.assert_ok();
    erofs_partition_holds_the_image(
        &out.join("tiny-ctr.img"),
        &out.join("tiny-ctr.initrd"),
        "c",
        &["r1", "r2"],
        dir.path(),
    );
    o.assert_stdout_has("(PARTLABEL=img-c) on /containers/c");
    // Without `init` an entrypoint that does not reap leaves a zombie;
    // with it, the reaper is PID 1 and reaps it.
    o.assert_in_order(&["r1: pid=1", "r1: zombies=1"]);
    o.assert_in_order(&["r2: pid=2", "r2: zombies=0"]);
    o.assert_in_order(&[
        "c: pid=1 host=inner ifaces=1 etc=hostname hosts old=b",
        "c: overlay=written",
        "c: no /etc/cairn",
        "c: links=2 same=1 null=character special file,1,3",
        "cairn: powering off",
    ]);
}

//! Disk images: layout checked by external tools, boot from the disk through
//! OVMF, mounts by label, format-if-empty, secondary config.

use std::path::Path;
use std::time::Duration;

use cairn_e2e::img::{check, debugfs_cat, debugfs_write, extract, partitions};
use cairn_e2e::{boot, build, copy_example, example, qmp, Live};

const MIB: u64 = 1 << 20;

/// A standalone ext4 image of `size` at `img` labelled `label`, with the
/// tree `content` in it (`mkfs.ext4 -d`) and any `extra` options.
fn mkfs_ext4(img: &Path, label: &str, size: &str, content: Option<&Path>, extra: &[&str]) {
    let mut c = std::process::Command::new("mkfs.ext4");
    c.args(["-q", "-F", "-L", label]).args(extra);
    if let Some(d) = content {
        c.arg("-d").arg(d);
    }
    let st = c
        .arg(img)
        .arg(size)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4 failed");
}

/// Hot-plugs a virtio disk through QMP: block node `node` with `file`
/// (the JSON of its protocol layer: a file, an NBD export, blkdebug...).
fn hot_add_disk(qmp_sock: &Path, node: &str, file: &str) {
    cairn_e2e::qmp_json(
        qmp_sock,
        &format!(
            r#"{{"execute":"blockdev-add","arguments":{{"driver":"raw","node-name":"{node}","file":{file}}}}}"#
        ),
    );
    cairn_e2e::qmp_json(
        qmp_sock,
        &format!(
            r#"{{"execute":"device_add","arguments":{{"driver":"virtio-blk-pci","drive":"{node}","id":"{node}blk"}}}}"#
        ),
    );
}

/// The example's partitions as built: DATA left empty for the init.
const BUILT: &[(&str, &str)] = &[("ESP", "vfat"), ("CONFIG", "ext4"), ("DATA", "none")];
/// The example's partitions after a boot: DATA formatted by the init.
const BOOTED: &[(&str, &str)] = &[("ESP", "vfat"), ("CONFIG", "ext4"), ("DATA", "ext4")];

/// The filesystem `blkid -p` finds in the partition copy `part`: `vfat`,
/// `ext4`, ... or `none`.
fn fs_type(part: &Path) -> String {
    let out = std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(part)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        // 2: nothing found.
        Some(2) => "none".to_string(),
        _ => panic!(
            "blkid -p {}: {:?}\n{}",
            part.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// sfdisk --verify, then every partition checked by the filesystem it
/// holds: `fsck.vfat -n` for vfat, `e2fsck -fn` for ext4, all zeros for
/// none (any other type fails). `want`: each partition's GPT name and
/// filesystem, in disk order.
fn check_image(img: &Path, want: &[(&str, &str)]) {
    check("sfdisk", &["--verify"], img);
    let tmp = tempfile::tempdir().unwrap();
    let mut found = Vec::new();
    for (start, len, name) in partitions(img) {
        let part = tmp.path().join(&name);
        extract(img, start, len, &part);
        let ty = fs_type(&part);
        match ty.as_str() {
            "vfat" => check("fsck.vfat", &["-n"], &part),
            "ext4" => check("e2fsck", &["-fn"], &part),
            "none" => assert!(
                std::fs::read(&part).unwrap().iter().all(|&x| x == 0),
                "partition {name} holds no filesystem but is not empty"
            ),
            other => panic!("partition {name}: no check for a {other} filesystem"),
        }
        std::fs::remove_file(&part).unwrap();
        found.push((name, ty));
    }
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(found, want, "partitions of {}", img.display());
}

/// Boots `manifest`'s disk image (no network) until it powers off.
fn boot_disk(manifest: &Path, out: &Path) -> cairn_e2e::Outcome {
    boot(
        manifest,
        out,
        &["--disk", "--net", "none", "--mem", "256M"],
        Duration::from_secs(300),
    )
}

#[test]
fn image_layout_is_clean_and_reproducible() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // A copy of the example whose content tree gets new atime, mtime and
    // ctime between the builds (as a fresh checkout or a first read does):
    // the image must not change.
    let (src, manifest) = copy_example("disk");
    build(&manifest, a.path()).assert_ok();
    let content = src.path().join("disk/config");
    let mut files: Vec<_> = std::fs::read_dir(&content)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "the example's CONFIG content is empty");
    files.push(content);
    let touched = std::process::Command::new("touch")
        .args(["-c", "-d", "2031-01-02 03:04:05"])
        .args(&files)
        .status()
        .unwrap();
    assert!(touched.success());
    build(&manifest, b.path()).assert_ok();
    let img = a.path().join("disk.img");
    let parts = partitions(&img);
    let names: Vec<&str> = parts.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(names, ["ESP", "CONFIG", "DATA"]);
    assert_eq!(parts[0].0, MIB);
    assert_eq!(parts[0].1, 64 * MIB);
    assert_eq!(parts[2].1, 32 * MIB);
    // DATA ("none" in BUILT) is checked to be all zeros, left for the init
    // to format.
    check_image(&img, BUILT);
    // CONFIG holds the content directory's files, byte for byte.
    for f in std::fs::read_dir(example("disk").parent().unwrap().join("config")).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            debugfs_cat(&img, "CONFIG", &format!("/{name}")),
            std::fs::read_to_string(&f).unwrap(),
            "{name} on CONFIG"
        );
    }
    let (x, y) = (
        std::fs::read(&img).unwrap(),
        std::fs::read(b.path().join("disk.img")).unwrap(),
    );
    let first = x.iter().zip(&y).position(|(p, q)| p != q);
    assert!(
        x.len() == y.len() && first.is_none(),
        "two builds differ (lengths {} and {}, first differing byte at {first:?})",
        x.len(),
        y.len()
    );
}

#[test]
fn boots_from_disk_formats_once_and_applies_secondary_config() {
    let out = tempfile::tempdir().unwrap();
    let args = ["--disk", "--net", "none", "--mem", "256M"];
    let t = Duration::from_secs(300);
    // First boot: DATA is empty and gets formatted, the template is written.
    let o = boot(&example("disk"), out.path(), &args, t);
    o.assert_ok();
    o.assert_stdout_has("cairn: formatting /dev/vda3 as ext4 (label DATA)");
    o.assert_stdout_has("cairn: mounted /dev/vda2 (LABEL=CONFIG) on /config");
    o.assert_stdout_has("cairn: secondary config: wrote a commented template");
    o.assert_stdout_has("boot 1: hello from the primary config");
    let img = out.path().join("disk.img");
    check_image(&img, BOOTED);
    let template = debugfs_cat(&img, "CONFIG", "/cairn.toml");
    assert!(template.contains("# [service.count]"), "{template}");
    assert!(
        template.contains("# env = { GREETING = \"hello from the primary config\" }"),
        "{template}"
    );
    // [[mount]]s are nosuid,nodev unless the manifest says otherwise.
    o.assert_stdout_has("/dev/vda3 /data ext4 rw,nosuid,nodev,");
    assert!(debugfs_cat(&img, "DATA", "/log/cairn.log").contains("cairn: logging to /data/log"));

    // Second boot: not formatted again (data kept), overrides applied: the
    // service's env and the network (the image has no [[network]], so
    // without the override eth0 would ask for DHCP).
    debugfs_write(
        &img,
        "CONFIG",
        "/cairn.toml",
        "[service.count]\nenv = { GREETING = \"hello from the secondary config\" }\n\
         [[network]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.2.77/24\"]\n\
         ipv6 = \"off\"\n",
    );
    let with_nic = [
        &args[..],
        &[
            "--",
            "-nic",
            "user,model=virtio-net-pci,mac=52:54:00:12:34:56,ipv6=off",
        ],
    ]
    .concat();
    let o = boot(&example("disk"), out.path(), &with_nic, t);
    o.assert_ok();
    assert!(!o.stdout.contains("formatting"), "{}", o.stdout);
    o.assert_stdout_has("secondary config /config/cairn.toml applied");
    o.assert_stdout_has("eth0: found (mac 52:54:00:12:34:56), configuring: dhcp4 off, ipv6 Off");
    assert!(!o.stdout.contains("(DHCPv4)"), "{}", o.stdout);
    o.assert_stdout_has("cairn: eth0: address 10.0.2.77/24 added (static)");
    o.assert_stdout_has("boot 2: hello from the secondary config");

    // Third boot: a broken secondary config is reported with line:col and
    // the primary is used.
    debugfs_write(
        &img,
        "CONFIG",
        "/cairn.toml",
        "\n[service.count]\nenabled = \"no\"\n",
    );
    let o = boot(&example("disk"), out.path(), &args, t);
    o.assert_ok();
    o.assert_stdout_has("cairn: /config/cairn.toml:3:11: error:");
    o.assert_stdout_has("secondary config refused: using the built-in config");
    o.assert_stdout_has("boot 3: hello from the primary config");
    check_image(&img, BOOTED);
    // The error is in the log file on DATA too (written after boot 2's
    // lines: the file is appended to on every boot).
    let log = debugfs_cat(&img, "DATA", "/log/cairn.log");
    let boot2 = log
        .find("count: boot 2: hello from the secondary config")
        .unwrap_or_else(|| panic!("boot 2 is not in cairn.log:\n{log}"));
    let error = log
        .find("cairn: /config/cairn.toml:3:11: error:")
        .unwrap_or_else(|| panic!("the secondary config error is not in cairn.log:\n{log}"));
    assert!(boot2 < error, "{log}");
    assert!(
        log[error..].contains("cairn: secondary config refused: using the built-in config"),
        "{log}"
    );

    // Fourth boot: whoever can write CONFIG tries to get code into the
    // (root) service with LD_PRELOAD; the manifest's config_env lists only
    // GREETING, so the whole file is refused at that key.
    debugfs_write(
        &img,
        "CONFIG",
        "/cairn.toml",
        "[service.count]\nenv = { GREETING = \"pwned\", LD_PRELOAD = \"/config/x.so\" }\n",
    );
    let o = boot(&example("disk"), out.path(), &args, t);
    o.assert_ok();
    o.assert_stdout_has(
        "cairn: /config/cairn.toml:2:29: error: the secondary config may not set `LD_PRELOAD` for service `count`",
    );
    o.assert_stdout_has("secondary config refused: using the built-in config");
    o.assert_stdout_has("boot 4: hello from the primary config");
    assert!(!o.stdout.contains("boot 4: pwned"), "{}", o.stdout);
    o.assert_stdout_has("/dev/vda3 /data ext4 rw,nosuid,nodev,");
    check_image(&img, BOOTED);
}

/// `format = "qcow2"`: the image is a clean qcow2 holding the same disk as
/// the raw build, and it boots through OVMF.
#[test]
fn qcow2_image_matches_raw_and_boots() {
    let (_src, manifest) = copy_example("disk");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("format = \"raw\""));
    std::fs::write(
        &manifest,
        text.replace("format = \"raw\"", "format = \"qcow2\""),
    )
    .unwrap();
    let raw = tempfile::tempdir().unwrap();
    build(&example("disk"), raw.path()).assert_ok();
    check_image(&raw.path().join("disk.img"), BUILT);
    let out = tempfile::tempdir().unwrap();
    build(&manifest, out.path()).assert_ok();
    let img = out.path().join("disk.img");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&img)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    check("qemu-img", &["check"], &img);
    let same = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "raw"])
        .arg(&img)
        .arg(raw.path().join("disk.img"))
        .status()
        .unwrap();
    assert!(
        same.success(),
        "the qcow2 image holds a different disk than the raw one"
    );

    let o = boot_disk(&manifest, out.path());
    o.assert_ok();
    o.assert_stdout_has("cairn: formatting /dev/vda3 as ext4 (label DATA)");
    o.assert_stdout_has("boot 1: hello from the primary config");
}

/// `cairn run --disk` on a manifest without `[disk]` stops before QEMU with
/// a message naming the manifest.
#[test]
fn run_disk_without_a_disk_table_is_refused() {
    let out = tempfile::tempdir().unwrap();
    let mut c = cairn_e2e::cairn();
    c.arg("run")
        .arg(example("hello"))
        .arg("-o")
        .arg(out.path())
        .args(["--disk", "--timeout", "5"]);
    let o = cairn_e2e::run_with_timeout(c, Duration::from_secs(300));
    assert!(!o.success && !o.timed_out, "{o:?}");
    assert!(
        o.stderr.contains("--disk needs a [disk] table in"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stdout.contains("Linux version"),
        "QEMU was started: {}",
        o.stdout
    );
}

/// Mounts found by filesystem UUID and by GPT partition name, a vfat data
/// partition with initial content mounted by label, and a missing mount
/// that is not required: boot goes on, and `cairnctl status` (text and
/// JSON) shows each mount's state.
#[test]
fn mounts_by_uuid_and_partlabel() {
    let (src, manifest) = copy_example("disk");
    let extra = src.path().join("disk/extra");
    std::fs::create_dir_all(extra.join("sub")).unwrap();
    std::fs::write(extra.join("hello.txt"), "hello from vfat\n").unwrap();
    std::fs::write(extra.join("sub/nested.txt"), "and from a subdirectory\n").unwrap();
    let text = std::fs::read_to_string(&manifest).unwrap();
    let service_end = r#"echo \"boot $n: $GREETING\"; /bin/busybox grep ' /data ' /proc/mounts"]"#;
    assert_eq!(text.matches(service_end).count(), 1, "{text}");
    let text = text.replace(
        service_end,
        r#"echo \"boot $n: $GREETING\"; /bin/busybox grep ' /data ' /proc/mounts; echo extra: $(cat /extra/hello.txt) $(cat /extra/sub/nested.txt); echo extra-mount: $(grep ' /extra ' /proc/mounts); /usr/bin/cairnctl status; /usr/bin/cairnctl status --json; echo STATUS-DONE"]"#,
    ) + r#"
[[partition]]
label = "EXTRA"
size = "8M"
fs = "vfat"
content = "extra"

[[mount]]
label = "EXTRA"
path = "/extra"
fs = "vfat"
options = "ro,noatime,umask=027"

[[mount]]
label = "NOPE"
path = "/nope"
fs = "ext4"
wait = 1

[[mount]]
partlabel = "EXTRA"
path = "/wrongfs"
fs = "ext4"
"#;
    std::fs::write(&manifest, &text).unwrap();
    let out = tempfile::tempdir().unwrap();
    build(&manifest, out.path()).assert_ok();
    let img = out.path().join("disk.img");
    check_image(
        &img,
        &[
            ("ESP", "vfat"),
            ("CONFIG", "ext4"),
            ("DATA", "none"),
            ("EXTRA", "vfat"),
        ],
    );
    // The CONFIG filesystem's UUID, as e2fsprogs reads it.
    let parts = partitions(&img);
    let (start, len, _) = parts.iter().find(|p| p.2 == "CONFIG").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let part = tmp.path().join("config");
    extract(&img, *start, *len, &part);
    let dump = std::process::Command::new("dumpe2fs")
        .arg("-h")
        .arg(&part)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    let uuid = dump
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem UUID:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no UUID in dumpe2fs output:\n{dump}"))
        .to_string();
    let changed = text
        .replace(
            "[[mount]]\nlabel = \"CONFIG\"",
            &format!("[[mount]]\nuuid = \"{}\"", uuid.to_uppercase()),
        )
        .replace(
            "[[mount]]\nlabel = \"DATA\"",
            "[[mount]]\npartlabel = \"DATA\"",
        );
    assert_eq!(changed.matches("[[mount]]\nlabel").count(), 2, "{changed}");
    std::fs::write(&manifest, changed).unwrap();
    std::fs::remove_file(&img).unwrap();

    let o = boot_disk(&manifest, out.path());
    o.assert_ok();
    // Matched case-insensitively: the manifest has it upper case.
    let config = format!("UUID={}", uuid.to_uppercase());
    o.assert_stdout_has(&format!("cairn: mounted /dev/vda2 ({config}) on /config"));
    o.assert_stdout_has("cairn: mounted /dev/vda3 (PARTLABEL=DATA) on /data");
    o.assert_stdout_has("cairn: mounted /dev/vda4 (LABEL=EXTRA) on /extra");
    o.assert_stdout_has(
        "cairn: mount LABEL=NOPE on /nope: no filesystem found after 1s; devices seen: ",
    );
    o.assert_stdout_has("(not required: boot goes on)");
    o.assert_stdout_has("boot 1: hello from the primary config");
    // The vfat partition's initial content, read in the guest.
    o.assert_stdout_has("count: extra: hello from vfat and from a subdirectory");
    // Its options: the flags (ro, noatime) and the filesystem's own (umask).
    let opts = o
        .stdout
        .lines()
        .find_map(|l| l.split_once("count: extra-mount: /dev/vda4 /extra vfat "))
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no /extra line from /proc/mounts:\n{}", o.stdout));
    let opts: Vec<&str> = opts.split(',').collect();
    for want in ["ro", "noatime", "fmask=0027", "dmask=0027"] {
        assert!(opts.contains(&want), "{want} not in {opts:?}");
    }

    // `cairnctl status`: one row per mount with its state.
    let out_text = &o.stdout;
    let from = out_text
        .find("count: cairn status")
        .unwrap_or_else(|| panic!("no cairnctl status output:\n{out_text}"));
    let to = from
        + out_text[from..]
            .find("count: STATUS-DONE")
            .unwrap_or_else(|| panic!("cairnctl did not finish:\n{out_text}"));
    let status = &out_text[from..to];
    let row = |path: &str, source: &str, required: &str, state: &str| {
        let want = format!("{path} {source} {required} {state}");
        assert!(
            status.lines().any(|l| {
                l.split_once("count: ").is_some_and(|(_, rest)| {
                    rest.split_whitespace().collect::<Vec<_>>().join(" ") == want
                })
            }),
            "no row {want:?} in:\n{status}"
        );
    };
    row("/config", &config, "yes", "mounted from /dev/vda2");
    row(
        "/data",
        "PARTLABEL=DATA",
        "yes",
        "formatted (it was empty), mounted from /dev/vda3",
    );
    row("/extra", "LABEL=EXTRA", "no", "mounted from /dev/vda4");
    row("/nope", "LABEL=NOPE", "no", "not found after 1s");
    // Found, but not what the mount asked for: failed, with the reason.
    row(
        "/wrongfs",
        "PARTLABEL=EXTRA",
        "no",
        "failed: /dev/vda4 holds vfat, not ext4",
    );
    // And `cairnctl status --json`.
    for want in [
        format!(
            r#"{{"path":"/config","source":"{config}","required":true,"state":"mounted","device":"/dev/vda2","error":null}}"#
        ),
        r#"{"path":"/data","source":"PARTLABEL=DATA","required":true,"state":"formatted","device":"/dev/vda3","error":null}"#.to_string(),
        r#"{"path":"/extra","source":"LABEL=EXTRA","required":false,"state":"mounted","device":"/dev/vda4","error":null}"#.to_string(),
        r#"{"path":"/nope","source":"LABEL=NOPE","required":false,"state":"not-found","device":null,"error":"not found after 1s"}"#.to_string(),
        r#"{"path":"/wrongfs","source":"PARTLABEL=EXTRA","required":false,"state":"failed","device":null,"error":"/dev/vda4 holds vfat, not ext4"}"#.to_string(),
    ] {
        assert!(
            status.lines().any(|l| l.contains("\"mounts\":[") && l.contains(&want)),
            "no {want} in the JSON status:\n{status}"
        );
    }

    // The image is clean after the boot (the init unmounted everything),
    // DATA now ext4.
    check_image(
        &img,
        &[
            ("ESP", "vfat"),
            ("CONFIG", "ext4"),
            ("DATA", "ext4"),
            ("EXTRA", "vfat"),
        ],
    );
}

/// A required mount whose filesystem does not exist: after its short wait
/// the console says FATAL with what was looked for and what was seen, no
/// service starts, the status screen shows the mount as not found, and the
/// init stays up (it still powers off on the power button).
#[test]
fn missing_required_mount_is_fatal_and_starts_no_service() {
    let (src, manifest) = copy_example("disk");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let modules = r#""nls_ascii"]"#;
    assert_eq!(text.matches(modules).count(), 1, "{text}");
    let text = text.replace(modules, r#""nls_ascii", "evdev", "button"]"#)
        + r#"
[[mount]]
label = "MISSING"
path = "/missing"
fs = "ext4"
required = true
wait = 2
"#;
    std::fs::write(&manifest, text).unwrap();
    let (mut live, qmp_sock) = Live::start_with_qmp(
        &manifest,
        src.path(),
        &["--disk", "--net", "none", "--mem", "256M"],
        Duration::from_secs(400),
    );
    live.wait_for("no services will be started", Duration::from_secs(300));
    // The status screen on Enter, then back to the log.
    live.send("\n");
    live.wait_for("[Enter: refresh", Duration::from_secs(30));
    live.send("q\n");
    std::thread::sleep(Duration::from_secs(1));
    qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not power off:\n{o}");

    let fatal = o
        .lines()
        .find(|l| l.contains("cairn: FATAL: required mount LABEL=MISSING on /missing: "))
        .unwrap_or_else(|| panic!("no FATAL line for the missing mount:\n{o}"));
    assert!(
        fatal.contains("no filesystem found after 2s; devices seen: ")
            && fatal.contains(r#"vda2 ext4 label="CONFIG""#)
            && fatal.contains(r#"vda1 vfat label="ESP""#),
        "{fatal}"
    );
    assert!(
        o.contains("cairn: FATAL: a required filesystem is missing: no services will be started"),
        "{o}"
    );
    // The service never started.
    assert!(!o.contains("] count: "), "a service ran:\n{o}");
    assert!(!o.contains("boot 1:"), "a service ran:\n{o}");
    // The screen (raw text, not log lines): no services, the mounts with
    // their state.
    let end = o.find("[Enter: refresh").unwrap();
    let start = o[..end]
        .rfind("cairn status")
        .unwrap_or_else(|| panic!("{o}"));
    let screen = &o[start..end];
    let section = |name: &str| {
        screen
            .find(name)
            .unwrap_or_else(|| panic!("no {name} on the screen:\n{screen}"))
    };
    let services = &screen[section("services:")..section("mounts:")];
    assert_eq!(services.lines().count(), 2, "services listed:\n{screen}");
    let row = |words: &str| {
        assert!(
            screen
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == words),
            "no row {words:?} on the screen:\n{screen}"
        );
    };
    row("/config LABEL=CONFIG yes mounted from /dev/vda2");
    row("/missing LABEL=MISSING yes not found after 2s");
    assert!(o.contains("cairn: power button pressed: power off"), "{o}");
}

/// A device that comes late: the init waits (bounded by `wait`) for the
/// filesystem, the disk is hot-added meanwhile (QMP), the init mounts it
/// and only then starts the service, which reads a file from it.
#[test]
fn mount_waits_for_a_disk_that_comes_late() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("hello.txt"), "hello from the late disk\n").unwrap();
    let late = dir.path().join("late.img");
    mkfs_ext4(&late, "LATE", "8M", Some(&content), &[]);
    let (_guard, mut live, sock) = Live::manifest_with_qmp(
        r#"
name = "late"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"
modules = ["virtio_pci", "virtio_blk"]

[[binary]]
path = "/bin/busybox"

[[mount]]
label = "LATE"
path = "/late"
fs = "ext4"
required = true
wait = 120

[[service]]
name = "reader"
after = ["mounts"]
exec = ["/bin/busybox", "cat", "/late/hello.txt"]
on_exit = "poweroff"
"#,
        Duration::from_secs(400),
    );
    live.wait_for(
        "cairn: mount LABEL=LATE on /late: waiting up to 120s for its device",
        Duration::from_secs(240),
    );
    hot_add_disk(
        &sock,
        "late",
        &format!(r#"{{"driver":"file","filename":"{}"}}"#, late.display()),
    );
    let (o, exited) = live.finish(Duration::from_secs(180));
    assert!(exited, "QEMU did not power off:\n{o}");
    let at = |needle: &str| {
        o.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{o}"))
    };
    let waiting = at("waiting up to 120s for its device");
    let mounted = at("cairn: mounted /dev/vda (LABEL=LATE) on /late");
    let started = at("cairn: service reader started");
    let read = at("reader: hello from the late disk");
    assert!(
        waiting < mounted && mounted < started && started < read,
        "{o}"
    );
    assert!(o.contains("reboot: Power down"), "{o}");
    // The filesystem was unmounted cleanly at power-off.
    check("e2fsck", &["-fn"], &late);
}

/// A data disk that starts failing while mounted. It is served to QEMU by
/// `qemu-nbd` (hot-added through QMP, as a network disk would be); once a
/// service has written to it, the server is killed, and from then on every
/// request fails with EIO. The service sees its own errors, the init says
/// once that the mount is failing (however many errors the kernel logs),
/// `cairnctl status --json` and the status screen show it, and shutdown
/// still completes.
#[test]
fn a_disk_failing_while_mounted_is_reported_and_shutdown_completes() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("faulty.img");
    mkfs_ext4(&disk, "FAULTY", "16M", None, &[]);
    let sock = dir.path().join("nbd.sock");
    let mut server = std::process::Command::new("qemu-nbd")
        .args([
            "--format=raw",
            "--persistent",
            "--export-name=faulty",
            "--socket",
        ])
        .arg(&sock)
        .arg(&disk)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-nbd starts");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(std::time::Instant::now() < end, "qemu-nbd made no socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_guard, mut live, qmp_sock) = Live::manifest_with_qmp(
        r#"
name = "faulty"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"
modules = ["virtio_pci", "virtio_blk"]

[[binary]]
path = "/bin/busybox"

[[mount]]
label = "FAULTY"
path = "/faulty"
fs = "ext4"
wait = 120

[[service]]
name = "writer"
after = ["mounts"]
exec = ["/bin/busybox", "sh", "-c", "i=0; told=0; while true; do i=$((i+1)); if out=$(/bin/busybox dd if=/dev/zero of=/faulty/f$i bs=4k count=8 conv=fsync 2>&1); then echo write $i ok; else echo write $i FAILED: $out | /bin/busybox tr '\\n' ' '; echo; if [ $told = 0 ]; then told=1; /usr/bin/cairnctl status --json; echo; echo STATUS-DONE; fi; fi; /bin/busybox sleep 1; done"]
"#,
        Duration::from_secs(400),
    );
    live.wait_for(
        "mount LABEL=FAULTY on /faulty: waiting up to 120s",
        Duration::from_secs(240),
    );
    hot_add_disk(
        &qmp_sock,
        "faulty",
        &format!(
            r#"{{"driver":"nbd","server":{{"type":"unix","path":"{}"}},"export":"faulty"}}"#,
            sock.display()
        ),
    );
    live.wait_for("writer: write 2 ok", Duration::from_secs(120));
    // The disk goes: the server is killed, by its pid.
    server.kill().unwrap();
    server.wait().unwrap();
    live.wait_for("STATUS-DONE", Duration::from_secs(120));
    live.wait_for("is failing", Duration::from_secs(60));
    // A few more failing writes, then the status screen.
    let seen = live.output().len();
    live.wait_until(
        |o| o[seen..].matches("FAILED").count() >= 2,
        Duration::from_secs(60),
    );
    live.send("\n");
    live.wait_for("[Enter: refresh", Duration::from_secs(30));
    let screen = live.output()[seen..].to_string();
    live.send("q\n");
    std::thread::sleep(Duration::from_secs(1));
    qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(180));
    assert!(exited, "QEMU did not power off:\n{o}");
    assert!(o.contains("reboot: Power down"), "{o}");

    // The service saw its own errors.
    assert!(o.contains("writer: write 1 ok"), "{o}");
    let failed = o
        .lines()
        .find(|l| l.contains("FAILED:"))
        .unwrap_or_else(|| panic!("the service saw no error:\n{o}"));
    assert!(failed.contains("Input/output error"), "{failed}");
    // The init said so once, naming the mount and the device.
    let said: Vec<&str> = o.lines().filter(|l| l.contains("is failing")).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains(
            "cairn: mount /faulty (LABEL=FAULTY) is failing: the kernel reports I/O errors on vda"
        ),
        "{}",
        said[0]
    );
    // cairnctl status --json: the mount's state.
    let json = o
        .lines()
        .find(|l| l.contains("writer: {"))
        .unwrap_or_else(|| panic!("no status JSON:\n{o}"));
    let json = &json[json.find('{').unwrap()..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let m = &v["mounts"][0];
    assert_eq!(m["path"], "/faulty", "{v}");
    assert_eq!(m["state"], "failing", "{v}");
    assert_eq!(m["device"], "/dev/vda", "{v}");
    assert!(m["error"].as_str().unwrap().contains("error"), "{v}");
    // The status screen.
    assert!(
        screen
            .lines()
            .any(|l| l.contains("/faulty") && l.contains("FAILING: I/O errors on /dev/vda")),
        "{screen}"
    );
}

/// A CONFIG disk whose secondary config cannot be read: QEMU's blkdebug
/// fails every read of the file's data block with EIO (the block found
/// with debugfs). The mount itself works; the init says it cannot read
/// the file and runs on the built-in config, and the service gets the
/// built-in value, not the one in the file (which the host can read).
#[test]
fn an_unreadable_config_falls_back_to_the_built_in_config() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(
        content.join("cairn.toml"),
        "[service.greet]\nenv = { GREETING = \"from the secondary config\" }\n",
    )
    .unwrap();
    let img = dir.path().join("config.img");
    mkfs_ext4(&img, "CONFIG", "8M", Some(&content), &["-b", "1024"]);
    // The file's first data block (1 KiB blocks): two 512-byte sectors.
    let bmap = std::process::Command::new("debugfs")
        .args(["-R", "bmap /cairn.toml 0"])
        .arg(&img)
        .output()
        .unwrap();
    let block: u64 = String::from_utf8_lossy(&bmap.stdout)
        .trim()
        .parse()
        .expect("debugfs bmap gives a block");
    assert!(block > 0);
    let sector = block * 2;
    let (_guard, mut live, qmp_sock) = Live::manifest_with_qmp(
        r#"
name = "badconfig"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"
modules = ["virtio_pci", "virtio_blk"]

[[binary]]
path = "/bin/busybox"

[[mount]]
label = "CONFIG"
path = "/config"
fs = "ext4"
wait = 120

[config]
mount = "/config"

[[service]]
name = "greet"
after = ["mounts"]
exec = ["/bin/busybox", "sh", "-c", "echo greeting: $GREETING"]
env = { GREETING = "built in" }
config_env = ["GREETING"]
on_exit = "poweroff"
"#,
        Duration::from_secs(400),
    );
    live.wait_for(
        "mount LABEL=CONFIG on /config: waiting up to 120s",
        Duration::from_secs(240),
    );
    hot_add_disk(
        &qmp_sock,
        "cfg",
        &format!(
            r#"{{"driver":"blkdebug","inject-error":[{{"event":"read_aio","errno":5,"sector":{sector}}},{{"event":"read_aio","errno":5,"sector":{}}}],"image":{{"driver":"file","filename":"{}"}}}}"#,
            sector + 1,
            img.display()
        ),
    );
    let (o, exited) = live.finish(Duration::from_secs(180));
    assert!(exited, "QEMU did not power off:\n{o}");
    let at = |needle: &str| {
        o.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{o}"))
    };
    let mounted = at("cairn: mounted /dev/vda (LABEL=CONFIG) on /config");
    let cannot = at("/config/cairn.toml");
    let fallback = at("secondary config refused: using the built-in config");
    let greeted = at("greet: greeting: built in");
    assert!(
        mounted < cannot && cannot < fallback && fallback < greeted,
        "{o}"
    );
    let line = o[cannot..].lines().next().unwrap();
    assert!(
        line.contains("Input/output error") || line.contains("os error 5"),
        "{line}"
    );
    assert!(!o.contains("from the secondary config"), "{o}");
    assert!(o.contains("reboot: Power down"), "{o}");
}

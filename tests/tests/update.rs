//! Field updates end to end: appliances booted by OVMF from their GPT
//! disk (a writable variable store per test, real reboots, a watchdog
//! device) poll a real HTTP server (`python3 -m http.server`) in a
//! network namespace, refuse bad metadata, take a good release through a
//! trial boot, and roll back from one whose health check fails.
//!
//! Effects are read back, not only log lines: the HTTP server's request
//! log (a refused or bad release is never downloaded), the slots on the
//! ESP (read with mtools after QEMU has exited) and the version each boot
//! reports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_e2e::net::Netns;
use cairn_e2e::{
    build, cairn, ovmf_args, run_with_timeout, snakeoil_key, Live, OVMF_VARS, OVMF_VARS_SNAKEOIL,
    SNAKEOIL_PEM,
};

const SERVER: &str = "192.168.78.1";
/// The repository's name in the manifests: dnsmasq answers it with
/// [`SERVER`] (the agent resolves it through the DNS server DHCP gave).
const REPO_NAME: &str = "updates.cairn.test";

/// The appliance at `version`; `app` is its service's shell script.
fn manifest(dir: &Path, version: u64, app: &str) -> PathBuf {
    manifest_with(dir, version, app, "8s", "120s", "")
}

/// [`manifest`] with the health check's `for`, the watchdog's timeout and
/// `tail` (more TOML) given.
fn manifest_with(
    dir: &Path,
    version: u64,
    app: &str,
    health_for: &str,
    watchdog: &str,
    tail: &str,
) -> PathBuf {
    let d = dir.join(format!("v{version}"));
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join("cairn.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "upd"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 panic=-1"
modules = ["virtio_pci", "virtio_blk", "virtio_net", "vfat", "nls_cp437", "nls_ascii", "efivarfs", "softdog"]

[net]
online_timeout = 30

[disk]
esp_size = "96M"

[update]
version = {version}
url = "http://{REPO_NAME}:8000/"
keys = ["{keys}/update.pub"]
interval = "10s"
health = {{ services = ["app"], for = "{health_for}", network = true }}
watchdog = {{ device = "/dev/watchdog", timeout = "{watchdog}" }}

[[binary]]
path = "/usr/bin/busybox"

[[service]]
name = "app"
exec = ["/usr/bin/busybox", "sh", "-c", "echo app version {version} starting; {app}"]
restart = "always"
after = ["network-online"]

[[service]]
name = "report"
exec = ["/usr/bin/busybox", "sh", "-c", "/usr/bin/busybox sleep 12; echo STATUS-JSON $(/usr/bin/cairnctl status --json); echo UPDATE-STATUS $(/usr/bin/cairnctl update status); echo UPDATE-CHECK $(/usr/bin/cairnctl update check 2>&1)"]
after = ["network-online"]
{tail}
"#,
            keys = dir.join("keys").display()
        ),
    )
    .unwrap();
    path
}

const GOOD: &str = "exec /usr/bin/busybox sleep 100000";
const FAILS: &str = "/usr/bin/busybox sleep 2; echo app gives up; exit 3";

fn publish(manifest: &Path, repo: &Path, key: &Path, extra: &[&str]) -> cairn_e2e::Outcome {
    let mut c = cairn();
    c.arg("publish")
        .arg(manifest)
        .arg("-o")
        .arg(manifest.parent().unwrap().join("out"))
        .arg("--repo")
        .arg(repo)
        .arg("--key")
        .arg(key)
        .args(extra);
    run_with_timeout(c, Duration::from_secs(300))
}

/// Puts `src`'s files into the served directory `to` (each through a
/// rename, so the server never serves half a file).
fn serve_from(src: &Path, to: &Path) {
    for e in std::fs::read_dir(to).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let tmp = to.join(".incoming");
        std::fs::copy(e.path(), &tmp).unwrap();
        std::fs::rename(&tmp, to.join(e.file_name())).unwrap();
    }
}

fn qemu(ns: &Netns, img: &Path, vars: &Path) -> Live {
    qemu_on(ns, img, vars, false)
}

/// With `secure`: OVMF's Secure Boot build (enforcing; `vars` should hold
/// the snakeoil keys).
fn qemu_on(ns: &Netns, img: &Path, vars: &Path, secure: bool) -> Live {
    let mut c = Command::new("ip");
    c.args(["netns", "exec"])
        .arg(ns.prefix()[3])
        .args(["qemu-system-x86_64", "-accel", "tcg"]);
    ovmf_args(&mut c, vars, secure);
    c.args([
        "-m", "256M", "-smp", "1", "-display", "none", "-vga", "none",
    ])
    .args(["-serial", "stdio", "-monitor", "none"])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", img.display()))
    .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
    .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"])
    .args([
        "-device",
        "i6300esb",
        "-action",
        "reboot=reset,watchdog=reset",
    ]);
    Live::command(c)
}

/// A file on the image's ESP (at 1 MiB), read with mtools.
fn esp_file(img: &Path, file: &str) -> Option<Vec<u8>> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@1M", img.display()))
        .arg(format!("::{file}"))
        .arg(out.path())
        .output()
        .unwrap();
    st.status
        .success()
        .then(|| std::fs::read(out.path()).unwrap())
}

/// A namespace with dnsmasq (DHCP) and `python3 -m http.server` serving
/// `served` on [`SERVER`]:8000; returns it and the server's request log.
fn servers(tag: &str, d: &Path, served: &Path) -> (Netns, PathBuf) {
    let mut ns = Netns::new(tag, &format!("{SERVER}/24"), None);
    ns.dnsmasq(
        d,
        &[
            "--no-ping",
            "--dhcp-range=192.168.78.50,192.168.78.99,255.255.255.0,2m",
            // DNS too: the repository's name.
            "--port=53",
            "--no-resolv",
            "--log-queries",
            &format!("--host-record={REPO_NAME},{SERVER}"),
        ],
    );
    let http_log = d.join("http.log");
    ns.http_server(SERVER, 8000, served, &http_log);
    (ns, http_log)
}

fn mdir(img: &Path, dir: &str) -> String {
    let o = Command::new("mdir")
        .arg("-i")
        .arg(format!("{}@@1M", img.display()))
        .arg(format!("::{dir}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// After a passing test: the servers are stopped (by pid) and the
/// scratch directory (disks and repositories, several hundred MB) is
/// removed; a failing test keeps it for a look.
fn cleanup(ns: Netns, dir: &Path) {
    drop(ns);
    let _ = std::fs::remove_dir_all(dir);
}

/// `cairn keys generate --update DIR`; returns the private key's path.
fn update_keys(dir: &Path) -> PathBuf {
    let mut c = cairn();
    c.args(["keys", "generate", "--update"]).arg(dir);
    run_with_timeout(c, Duration::from_secs(30)).assert_ok();
    dir.join("update.key")
}

/// The console line that starts at the first `marker` in `out`, from
/// the marker on.
fn line_from(out: &str, marker: &str) -> String {
    let at = out
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in:\n{out}"));
    out[at..].lines().next().unwrap_or_default().to_string()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// V1 refuses expired, badly signed, older and garbage metadata (and
/// never downloads a UKI for them), takes V2 through a trial boot and
/// commits it; a cold boot runs V2 from slot B while slot A still holds
/// V1. Then V3, whose service dies, is tried, fails its health check and
/// is rolled back (reported on the console and in `cairnctl status
/// --json`), never downloaded again; V4 is taken into slot A.
#[test]
fn refuses_bad_metadata_takes_good_update_and_rolls_back_failing_one() {
    // Kept when the test fails (see `cleanup`): the consoles, the
    // server's log, the disk.
    let dir = cairn_e2e::net::scratch("update");
    let d = dir.as_path();
    let key = update_keys(&d.join("keys"));

    // V1: the disk that is flashed.
    let m1 = manifest(d, 1, GOOD);
    build(&m1, &d.join("v1/out")).assert_ok();
    let img = d.join("upd.img");
    std::fs::copy(d.join("v1/out/upd.img"), &img).unwrap();
    let v1_efi = std::fs::read(d.join("v1/out/upd.efi")).unwrap();
    assert_eq!(
        esp_file(&img, "/EFI/cairn/A.efi").as_deref(),
        Some(&v1_efi[..])
    );
    assert_eq!(
        esp_file(&img, "/EFI/BOOT/BOOTX64.EFI").as_deref(),
        Some(&v1_efi[..])
    );
    assert!(esp_file(&img, "/EFI/cairn/B.efi").is_none());

    // Repositories: V1 (for "not newer"), V2 expired, V2 good.
    let m2 = manifest(d, 2, GOOD);
    let repo1 = d.join("repo1");
    publish(&m1, &repo1, &key, &[]).assert_ok();
    let expired = d.join("repo2-expired");
    publish(&m2, &expired, &key, &["--expires-at", "1000000000"]).assert_ok();
    let repo2 = d.join("repo2");
    let p = publish(&m2, &repo2, &key, &[]);
    p.assert_ok();
    // The repository's version only goes up.
    let again = publish(&m1, &repo2, &key, &[]);
    assert!(!again.success, "publishing V1 over V2 was accepted");
    assert!(
        again.stderr.contains("not greater than"),
        "{}",
        again.stderr
    );
    let v2_efi = std::fs::read(repo2.join("upd-2.efi")).unwrap();
    // A tampered signature: one byte of the signed text changed.
    let badsig = d.join("repo2-badsig");
    std::fs::create_dir_all(&badsig).unwrap();
    std::fs::copy(repo2.join("upd-2.efi"), badsig.join("upd-2.efi")).unwrap();
    let md = std::fs::read_to_string(repo2.join("cairn-update.json")).unwrap();
    assert!(md.contains("\\\"expires\\\":"), "{md}");
    let tampered = md.replacen("\\\"expires\\\":", "\\\"expires\\\":9", 1);
    std::fs::write(badsig.join("cairn-update.json"), tampered).unwrap();
    let garbage = d.join("repo-garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("cairn-update.json"), "<html>not found</html>").unwrap();

    let served = d.join("www");
    std::fs::create_dir_all(&served).unwrap();
    serve_from(&expired, &served);

    let (ns, http_log) = servers("upd", d, &served);
    let vars = d.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let long = Duration::from_secs(400);

    // Boot 1: V1 refuses what it is offered, then takes V2.
    let mut g = qemu(&ns, &img, &vars);
    g.wait_for("update: running version 1 from slot A", long);
    g.wait_for("app version 1 starting", long);
    g.wait_for("metadata refused: metadata expired", long);
    serve_from(&badsig, &served);
    g.wait_for(
        "metadata refused: no signature by a trusted key verifies",
        long,
    );
    serve_from(&repo1, &served);
    g.wait_for(
        "metadata refused: version 1 is not newer than the running version 1",
        long,
    );
    serve_from(&garbage, &served);
    g.wait_for("metadata refused: metadata is not valid JSON", long);
    let log = std::fs::read_to_string(&http_log).unwrap();
    assert!(
        !log.contains(".efi"),
        "a UKI was downloaded for refused metadata:\n{log}"
    );
    assert!(!g.output().contains("downloading"), "{}", g.output());

    serve_from(&repo2, &served);
    g.wait_for("update: version 2 written to slot B", long);
    // Boot 2: the trial of V2, which commits.
    g.wait_for("update: trial boot of version 2 (slot B)", long);
    g.wait_for("app version 2 starting", long);
    g.wait_for(
        "update: version 2 passed its health check and is committed (slot B)",
        long,
    );
    let (out, _) = g.finish(Duration::from_secs(1));
    std::fs::write(d.join("console-1.txt"), &out).unwrap();
    assert!(out.contains("watchdog /dev/watchdog armed"), "{out}");
    eprintln!("{}", mdir(&img, "/EFI/BOOT"));

    // The ESP: B holds V2, A still V1, the fallback is V2.
    assert_eq!(
        esp_file(&img, "/EFI/cairn/B.efi").as_deref(),
        Some(&v2_efi[..])
    );
    assert_eq!(
        esp_file(&img, "/EFI/cairn/A.efi").as_deref(),
        Some(&v1_efi[..])
    );
    assert_eq!(
        esp_file(&img, "/EFI/BOOT/BOOTX64.EFI").as_deref(),
        Some(&v2_efi[..])
    );

    // A bad V3: its service exits; served before the cold boot.
    let m3 = manifest(d, 3, FAILS);
    publish(&m3, &repo2, &key, &[]).assert_ok();
    let v3_efi = std::fs::read(repo2.join("upd-3.efi")).unwrap();
    serve_from(&repo2, &served);

    // Boot 3 (cold): V2 from slot B; it takes V3 into slot A.
    let mut g = qemu(&ns, &img, &vars);
    g.wait_for(
        "update: running version 2 from slot B (committed: slot B, BootCurrent CA0B)",
        long,
    );
    g.wait_for("update: version 3 written to slot A", long);
    // Boot 4: V3's trial fails; boot 5: V2 again, reporting it.
    g.wait_for("update: trial boot of version 3 (slot A)", long);
    g.wait_for(
        "update: version 3 failed its health check: service app exited",
        long,
    );
    g.wait_for(
        "update: rolled back from version 3: service app exited",
        long,
    );
    const BACK: &str = "update: rolled back from version 3";
    g.wait_until(
        |o| {
            o.rfind(BACK)
                .is_some_and(|i| o[i..].contains("UPDATE-STATUS"))
        },
        long,
    );
    g.wait_for("version 3 is recorded as bad", long);
    let out = g.output();
    let tail = &out[out.rfind(BACK).unwrap()..];
    // The boot that says so is V2's (its app may start before or after).
    let at = out.rfind(BACK).unwrap();
    let boot = out[..at].rfind("update: running version").unwrap();
    assert!(
        out[boot..].starts_with("update: running version 2 from slot B"),
        "{}",
        &out[boot..]
    );
    let status = line_from(tail, "STATUS-JSON");
    assert!(
        status.contains("\"rolled_back\":{\"version\":3,\"reason\":\"service app exited"),
        "{status}"
    );
    let log = std::fs::read_to_string(&http_log).unwrap();
    assert_eq!(count(&log, "GET /upd-3.efi"), 1, "{log}");
    // The status screen (Enter on the console) says it too; `q` goes back
    // to the log.
    g.send("\n");
    g.wait_until(
        |o| {
            o.lines().any(|l| {
                l.starts_with("update:   version 2 (slot B), ")
                    && l.contains("; rolled back from version 3: service app exited")
            })
        },
        long,
    );
    g.send("q\n");

    // V4, good, is taken into slot A (V3 was there). It is signed by the
    // current key and introduces the next one (key rotation).
    update_keys(&d.join("keys2"));
    let m4 = manifest(d, 4, GOOD);
    set_keys(
        &m4,
        &[d.join("keys/update.pub"), d.join("keys2/update.pub")],
    );
    publish(&m4, &repo2, &key, &[]).assert_ok();
    let v4_efi = std::fs::read(repo2.join("upd-4.efi")).unwrap();
    serve_from(&repo2, &served);
    g.wait_for("update: version 4 written to slot A", long);
    g.wait_for(
        "update: version 4 passed its health check and is committed (slot A)",
        long,
    );
    let (out, _) = g.finish(Duration::from_secs(1));
    std::fs::write(d.join("console-2.txt"), &out).unwrap();
    assert!(out.contains("app version 4 starting"), "{out}");
    let log = std::fs::read_to_string(&http_log).unwrap();
    assert_eq!(
        count(&log, "GET /upd-3.efi"),
        1,
        "V3 downloaded again:\n{log}"
    );
    assert_ne!(v3_efi, v4_efi);
    assert_eq!(
        esp_file(&img, "/EFI/cairn/A.efi").as_deref(),
        Some(&v4_efi[..])
    );
    assert_eq!(
        esp_file(&img, "/EFI/cairn/B.efi").as_deref(),
        Some(&v2_efi[..])
    );
    assert_eq!(
        esp_file(&img, "/EFI/BOOT/BOOTX64.EFI").as_deref(),
        Some(&v4_efi[..])
    );
    let state = String::from_utf8(esp_file(&img, "/EFI/cairn/state.json").unwrap()).unwrap();
    assert!(state.contains("\"committed\": \"A\""), "{state}");
    assert!(state.contains("\"version\": 3"), "{state}");

    // V5 is signed by the new key only (its manifest trusts only that
    // one): V4 takes it.
    let m5 = manifest(d, 5, GOOD);
    set_keys(&m5, &[d.join("keys2/update.pub")]);
    let old_key = publish(&m5, &repo2, &key, &[]);
    assert!(
        !old_key.success
            && old_key
                .stderr
                .contains("not among the manifest's [update] keys"),
        "{}",
        old_key.stderr
    );
    publish(&m5, &repo2, &d.join("keys2/update.key"), &[]).assert_ok();
    let v5_efi = std::fs::read(repo2.join("upd-5.efi")).unwrap();
    serve_from(&repo2, &served);
    let mut g = qemu(&ns, &img, &vars);
    g.wait_for("update: running version 4 from slot A", long);
    g.wait_for(
        "update: version 5 passed its health check and is committed (slot B)",
        long,
    );
    let (out, _) = g.finish(Duration::from_secs(1));
    std::fs::write(d.join("console-3.txt"), &out).unwrap();
    assert_eq!(
        esp_file(&img, "/EFI/cairn/B.efi").as_deref(),
        Some(&v5_efi[..])
    );
    cleanup(ns, &dir);
}

/// Rewrites the manifest's `[update] keys` to `keys`.
fn set_keys(manifest: &Path, keys: &[PathBuf]) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let list: Vec<String> = keys
        .iter()
        .map(|k| format!("\"{}\"", k.display()))
        .collect();
    let line = text
        .lines()
        .find(|l| l.starts_with("keys = "))
        .unwrap()
        .to_string();
    let text = text.replace(&line, &format!("keys = [{}]", list.join(", ")));
    std::fs::write(manifest, text).unwrap();
}

/// Under Secure Boot: V2, signed with a key the firmware does not trust,
/// is written to slot B and tried with BootNext; the firmware refuses it
/// and boots BootOrder's first entry, V1, which reports the rollback ("it
/// never started"). Then V3, properly signed, boots but its agent freezes
/// (SIGSTOP) during the health check: the watchdog (softdog, armed by the
/// trial) resets the machine, and V1 reports that rollback too. V1 keeps
/// running from slot A throughout.
#[test]
fn secure_boot_refusal_and_watchdog_reset_roll_back() {
    let dir = cairn_e2e::net::scratch("update-sb");
    let d = dir.as_path();
    let key = update_keys(&d.join("keys"));
    let mut c = cairn();
    c.args(["keys", "generate"]).arg(d.join("sb"));
    run_with_timeout(c, Duration::from_secs(120)).assert_ok();
    let snakeoil = snakeoil_key(d);
    let signed = format!(
        "\n[sign]\nkey = \"{}\"\ncert = \"{SNAKEOIL_PEM}\"\n",
        snakeoil.display()
    );
    let untrusted = format!(
        "\n[sign]\nkey = \"{}\"\ncert = \"{}\"\n",
        d.join("sb/db.key").display(),
        d.join("sb/db.crt").display()
    );
    // The health check outlasts the watchdog: a frozen agent cannot commit.
    let m1 = manifest_with(d, 1, GOOD, "90s", "15s", &signed);
    build(&m1, &d.join("v1/out")).assert_ok();
    let img = d.join("upd.img");
    std::fs::copy(d.join("v1/out/upd.img"), &img).unwrap();
    let v1_efi = std::fs::read(d.join("v1/out/upd.efi")).unwrap();
    let m2 = manifest_with(d, 2, GOOD, "90s", "15s", &untrusted);
    let repo = d.join("repo");
    publish(&m2, &repo, &key, &[]).assert_ok();
    let freeze = "/usr/bin/busybox sleep 3; /usr/bin/busybox kill -STOP $(/usr/bin/busybox pidof cairn-update); echo agent frozen; exec /usr/bin/busybox sleep 100000";
    let m3 = manifest_with(d, 3, freeze, "90s", "15s", &signed);

    let served = d.join("www");
    std::fs::create_dir_all(&served).unwrap();
    serve_from(&repo, &served);
    let (ns, http_log) = servers("upsb", d, &served);
    let vars = d.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS_SNAKEOIL, &vars).unwrap();
    let long = Duration::from_secs(500);

    let mut g = qemu_on(&ns, &img, &vars, true);
    g.wait_for("update: running version 1 from slot A", long);
    g.wait_for("update: version 2 written to slot B", long);
    // The firmware refuses B; V1 boots again and says why.
    g.wait_for(
        "update: rolled back from version 2: it never started (refused by the firmware",
        long,
    );
    let out = g.output();
    let at = out.find("version 2 written to slot B").unwrap();
    // OVMF's own words, then V1 again.
    assert!(
        out[at..].contains("failed to load BootCA0B \"cairn B\"")
            && out[at..].contains("Access Denied"),
        "{out}"
    );
    assert!(!out[at..].contains("running version 2"), "V2 ran:\n{out}");
    assert!(out[at..].contains("running version 1 from slot A"), "{out}");
    g.wait_for("version 2 is recorded as bad", long);

    // V3 is signed; its agent freezes during the health check.
    publish(&m3, &repo, &key, &[]).assert_ok();
    serve_from(&repo, &served);
    g.wait_for("update: version 3 written to slot B", long);
    g.wait_for("update: trial boot of version 3 (slot B)", long);
    g.wait_for("agent frozen", long);
    g.wait_for(
        "update: rolled back from version 3: it was reset before passing its health check",
        long,
    );
    let (out, _) = g.finish(Duration::from_secs(1));
    std::fs::write(d.join("console.txt"), &out).unwrap();
    let at = out.find("agent frozen").unwrap();
    assert!(!out[at..].contains("passed its health check"), "{out}");
    assert!(
        out[at..].contains("softdog: Initiating system reboot"),
        "{out}"
    );
    let log = std::fs::read_to_string(&http_log).unwrap();
    assert_eq!(count(&log, "GET /upd-2.efi"), 1, "{log}");
    // Slot A and the fallback still hold V1.
    assert_eq!(
        esp_file(&img, "/EFI/cairn/A.efi").as_deref(),
        Some(&v1_efi[..])
    );
    assert_eq!(
        esp_file(&img, "/EFI/BOOT/BOOTX64.EFI").as_deref(),
        Some(&v1_efi[..])
    );
    let state = String::from_utf8(esp_file(&img, "/EFI/cairn/state.json").unwrap()).unwrap();
    assert!(state.contains("\"committed\": \"A\""), "{state}");
    cleanup(ns, &dir);
}

/// The server first has nothing to offer (404): the appliance keeps
/// running, retries with backoff and says so in `cairnctl update status`.
/// Then V2 is offered and the power is cut (QEMU killed) while it
/// downloads: the next boot runs V1, drops the unfinished file and
/// downloads again. Through the agent's test hook (`test_hooks = true`
/// and an `EFI/cairn/test-hold` file) the power is then cut at the two
/// other points an update can be interrupted: with the download complete
/// and synced but before the rename into slot B, and after the rename
/// but before `BootNext` is set. Each time the next boot runs V1 from
/// slot A; the last boot takes V2 through the trial and commits it.
#[test]
fn unreachable_repository_backoff_and_power_cut_during_download() {
    let dir = cairn_e2e::net::scratch("update-cut");
    let d = dir.as_path();
    let key = update_keys(&d.join("keys"));
    let m1 = manifest(d, 1, GOOD);
    let text = std::fs::read_to_string(&m1).unwrap();
    std::fs::write(&m1, format!("test_hooks = true\n{text}")).unwrap();
    build(&m1, &d.join("v1/out")).assert_ok();
    let img = d.join("upd.img");
    std::fs::copy(d.join("v1/out/upd.img"), &img).unwrap();
    let repo = d.join("repo");
    publish(&manifest(d, 2, GOOD), &repo, &key, &[]).assert_ok();
    let v2_efi = std::fs::read(repo.join("upd-2.efi")).unwrap();

    let served = d.join("www");
    std::fs::create_dir_all(&served).unwrap();
    let (ns, http_log) = servers("upcut", d, &served);
    let vars = d.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let long = Duration::from_secs(400);

    let mut g = qemu(&ns, &img, &vars);
    g.wait_for(
        "update: check failed (2 in a row): GET /cairn-update.json: HTTP/1.0 404",
        long,
    );
    g.wait_for("UPDATE-STATUS", long);
    let out = g.output();
    let status = line_from(&out, "UPDATE-STATUS");
    assert!(
        status.contains("\"last_error\": \"GET /cairn-update.json: HTTP/1.0 404"),
        "{status}"
    );
    assert!(status.contains("\"version\": 1"), "{status}");
    g.wait_for("UPDATE-CHECK", long);
    let out = g.output();
    let check = line_from(&out, "UPDATE-CHECK");
    assert!(
        check.contains("cairnctl: GET /cairn-update.json: HTTP/1.0 404"),
        "{check}"
    );
    assert!(out.contains("app version 1 starting"), "{out}");

    serve_from(&repo, &served);
    g.wait_for("update: downloading version 2", long);
    let (out, _) = g.finish(Duration::from_millis(1));
    assert!(
        !out.contains("written to slot B"),
        "the download finished before the cut:\n{out}"
    );
    std::fs::write(d.join("console-1.txt"), &out).unwrap();

    // Cut with V2 complete and synced in B.tmp, before the rename.
    hold(&img, Some("rename"));
    let mut g = qemu(&ns, &img, &vars);
    g.wait_for("update: test hook: holding before rename", long);
    let (out, _) = g.finish(Duration::from_millis(1));
    std::fs::write(d.join("console-2.txt"), &out).unwrap();
    assert_ne!(
        esp_file(&img, "/EFI/cairn/B.efi").as_deref(),
        Some(&v2_efi[..])
    );

    // Cut after the rename into slot B, before BootNext is set.
    hold(&img, Some("bootnext"));
    let mut g = qemu(&ns, &img, &vars);
    g.wait_for("update: test hook: holding before bootnext", long);
    let (out, _) = g.finish(Duration::from_millis(1));
    std::fs::write(d.join("console-3.txt"), &out).unwrap();
    // The synced download of the cut before survived the cut (fsync of
    // the file is durable on vfat) and is dropped, not trusted.
    assert!(
        out.contains("update: removing the unfinished /boot/efi/EFI/cairn/B.tmp"),
        "{out}"
    );
    assert!(
        out.contains("update: running version 1 from slot A"),
        "{out}"
    );
    assert_eq!(
        esp_file(&img, "/EFI/cairn/B.efi").as_deref(),
        Some(&v2_efi[..])
    );
    hold(&img, None);

    let mut g = qemu(&ns, &img, &vars);
    g.wait_for("update: running version 1 from slot A", long);
    g.wait_for("update: version 2 written to slot B", long);
    g.wait_for(
        "update: version 2 passed its health check and is committed (slot B)",
        long,
    );
    let (out, _) = g.finish(Duration::from_secs(1));
    std::fs::write(d.join("console-4.txt"), &out).unwrap();
    assert!(out.contains("app version 2 starting"), "{out}");
    let log = std::fs::read_to_string(&http_log).unwrap();
    assert_eq!(count(&log, "GET /upd-2.efi"), 4, "{log}");
    // The agent found the repository by its name, through DHCP's server.
    let dns = std::fs::read_to_string(d.join("dnsmasq.log")).unwrap();
    assert!(
        dns.contains(&format!("query[A] {REPO_NAME} from 192.168.78.")),
        "{dns}"
    );
    assert_eq!(
        esp_file(&img, "/EFI/cairn/B.efi").as_deref(),
        Some(&v2_efi[..])
    );
    assert!(esp_file(&img, "/EFI/cairn/B.tmp").is_none());
    cleanup(ns, &dir);
}

/// Writes (or with `None` removes) the agent's test hook file on the
/// image's ESP, with mtools, while no guest runs.
fn hold(img: &Path, point: Option<&str>) {
    let esp = format!("{}@@1M", img.display());
    let st = match point {
        Some(p) => {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), p).unwrap();
            Command::new("mcopy")
                .args(["-o", "-i", &esp])
                .arg(f.path())
                .arg("::/EFI/cairn/test-hold")
                .status()
                .unwrap()
        }
        None => Command::new("mdel")
            .args(["-i", &esp, "::/EFI/cairn/test-hold"])
            .status()
            .unwrap(),
    };
    assert!(st.success(), "mtools on {esp} failed");
}

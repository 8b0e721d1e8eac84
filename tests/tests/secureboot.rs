//! Secure Boot, end to end: UKIs signed by cairn boot under OVMF's enforcing
//! Secure Boot firmware; unsigned and tampered ones are refused; keys made by
//! `cairn keys generate` and enrolled in a variable store take over from the
//! snakeoil ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_e2e::{
    boot, boot_until, build, cairn, example, example_with, pip_tool, run_with_timeout,
    snakeoil_key, SNAKEOIL_KEY, SNAKEOIL_PEM,
};

const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

const READY: &str = "cairn: ready";
/// What OVMF prints when it refuses an image, and once it has given up.
const DENIED: &str = "Access Denied";
const GAVE_UP: &str = "No bootable option or device was found";

/// `cairn boot EFI --secure-boot [--vars V]` until ready or refused.
fn sb_boot(efi: &Path, vars: Option<&Path>) -> String {
    let mut c = cairn();
    c.arg("boot")
        .arg(efi)
        .args(["--secure-boot", "--accel", "tcg", "--net", "none"])
        .args(["--timeout", "240"]);
    if let Some(v) = vars {
        c.arg("--vars").arg(v);
    }
    let (out, seen) = boot_until(c, &[READY, GAVE_UP], Duration::from_secs(240));
    assert!(seen, "the boot neither finished nor was refused:\n{out}");
    out
}

fn assert_boots(efi: &Path, vars: Option<&Path>) {
    let out = sb_boot(efi, vars);
    assert!(out.contains(READY), "signed image did not boot:\n{out}");
    assert!(!out.contains(DENIED), "{out}");
}

fn assert_refused(efi: &Path, vars: Option<&Path>) {
    let out = sb_boot(efi, vars);
    assert!(out.contains(DENIED), "firmware did not refuse:\n{out}");
    assert!(!out.contains(READY), "refused image reached init:\n{out}");
    assert!(!out.contains("Linux version"), "kernel started:\n{out}");
}

fn inspect(efi: &Path, cert: &Path) -> String {
    let mut c = cairn();
    c.arg("inspect").arg(efi).arg("--cert").arg(cert);
    let o = run_with_timeout(c, Duration::from_secs(60));
    o.assert_ok();
    o.stdout
}

fn sbverify(efi: &Path, cert: &Path) -> bool {
    Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(efi)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn snakeoil_signed_boots_while_tampered_and_unsigned_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    snakeoil_key(d);
    // [sign] paths are relative to the manifest.
    let manifest = example_with(
        "hello",
        d,
        &format!("[sign]\nkey = \"snakeoil.key\"\ncert = \"{SNAKEOIL_PEM}\"\n"),
    );
    let out = d.join("signed");
    build(&manifest, &out).assert_ok();
    let signed = out.join("hello.efi");
    let pem = Path::new(SNAKEOIL_PEM);
    assert!(sbverify(&signed, pem), "sbverify refuses cairn's signature");
    let text = inspect(&signed, pem);
    for needle in [
        "signer: C=US, ST=Colorado, L=Fort Collins, O=SnakeOil",
        "digest algorithm: sha256",
        "digest matches image: yes",
        "verifies against /usr/share/ovmf/PkKek-1-snakeoil.pem: yes",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    assert_boots(&signed, None);

    // Change the signed kernel command line: one byte.
    let mut bytes = std::fs::read(&signed).unwrap();
    let at = bytes
        .windows(b"quiet".len())
        .position(|w| w == b"quiet")
        .expect("cmdline in the UKI");
    bytes[at] = b'Q';
    let tampered = d.join("tampered.efi");
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(!sbverify(&tampered, pem));
    let text = inspect(&tampered, pem);
    assert!(text.contains("digest matches image: NO"), "{text}");
    assert!(text.contains(": NO (sbverify"), "{text}");
    assert_refused(&tampered, None);

    // Unsigned.
    let out = d.join("unsigned");
    build(&example("hello"), &out).assert_ok();
    let unsigned = out.join("hello.efi");
    assert!(inspect(&unsigned, pem).contains("signatures: none"));
    assert_refused(&unsigned, None);
}

/// Under Secure Boot the kernel command line is the UKI's own, inside the
/// signature: one the firmware hands over is ignored. QEMU's `-kernel` and
/// `-append` make OVMF load the image itself and pass `-append` as its
/// load options (what a boot entry's options would be). Without Secure
/// Boot the same image takes them, which shows the test can tell.
#[test]
fn firmware_command_line_is_ignored_under_secure_boot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    snakeoil_key(d);
    // Without `quiet`, so the kernel prints the command line it got.
    let text = std::fs::read_to_string(example("hello"))
        .unwrap()
        .replace("console=ttyS0 quiet panic=-1", "console=ttyS0 panic=-1");
    let manifest = d.join("cairn.toml");
    std::fs::write(
        &manifest,
        format!("{text}\n[sign]\nkey = \"snakeoil.key\"\ncert = \"{SNAKEOIL_PEM}\"\n"),
    )
    .unwrap();
    build(&manifest, &d.join("out")).assert_ok();
    let signed = d.join("out/hello.efi");
    let passed = "console=ttyS0 panic=-1 cairn.passed-by-firmware";
    let boot_with_append = |secure: bool| {
        let mut c = cairn();
        c.arg("boot").arg(&signed);
        if secure {
            c.arg("--secure-boot");
        }
        c.args(["--accel", "tcg", "--net", "none", "--timeout", "240", "--"])
            .arg("-kernel")
            .arg(&signed)
            .args(["-append", passed]);
        let (out, seen) = boot_until(c, &[READY, GAVE_UP], Duration::from_secs(240));
        assert!(seen, "the boot neither finished nor was refused:\n{out}");
        assert!(out.contains(READY), "did not boot:\n{out}");
        // The firmware started the image from QEMU's kernel blob, not from
        // a boot option on the disk.
        assert!(!out.contains("BdsDxe: loading Boot"), "{out}");
        out.lines()
            .find_map(|l| {
                l.split_once("Kernel command line: ")
                    .map(|(_, c)| c.trim_end().to_string())
            })
            .unwrap_or_else(|| panic!("no command line on the console:\n{out}"))
    };
    assert_eq!(boot_with_append(true), "console=ttyS0 panic=-1");
    assert_eq!(boot_with_append(false), passed);
}

#[test]
fn generated_keys_enrolled_in_ovmf_replace_snakeoil() {
    let Some(vfv) = pip_tool("virt-fw-vars") else {
        panic!("virt-fw-vars not found: `cargo xtask deps` installs virt-firmware from PyPI");
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = generate_keys(d);
    // Enroll cairn's own signature lists (byte for byte) with Secure Boot on.
    let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let var = |name: &str, guid: &str| {
        format!(
            "{{\"name\": \"{name}\", \"guid\": \"{guid}\", \"attr\": 39, \"data\": \"{}\"}}",
            hex(std::fs::read(keys.join(format!("{name}.esl"))).unwrap())
        )
    };
    let global = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
    let json = format!(
        "{{\"version\": 2, \"variables\": [{}, {}, {}]}}",
        var("PK", global),
        var("KEK", global),
        var("db", "d719b2cb-3d3a-4596-a3bc-dad00e67656f")
    );
    std::fs::write(d.join("keys.json"), json).unwrap();
    let vars = d.join("vars.fd");
    let st = Command::new(&vfv)
        .args(["-i", OVMF_VARS, "-o"])
        .arg(&vars)
        .arg("--set-json")
        .arg(d.join("keys.json"))
        .arg("--secure-boot")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    // Signed with the generated db key (on the command line): boots.
    let mine = hello_signed_with_db(&keys, &d.join("mine"));
    assert!(sbverify(&mine, &keys.join("db.crt")));
    assert!(!sbverify(&mine, Path::new(SNAKEOIL_PEM)));
    assert!(inspect(&mine, &keys.join("db.crt")).contains("signer: CN=cairn db"));
    assert_boots(&mine, Some(&vars));

    // Signed with snakeoil: these keys do not trust it.
    snakeoil_key(d);
    let manifest = example_with(
        "hello",
        d,
        &format!("[sign]\nkey = \"snakeoil.key\"\ncert = \"{SNAKEOIL_PEM}\"\n"),
    );
    let out = d.join("snakeoil");
    build(&manifest, &out).assert_ok();
    assert_refused(&out.join("hello.efi"), Some(&vars));
}

/// `cairn keys generate` into `d/keys`; checks every file is there.
fn generate_keys(d: &Path) -> PathBuf {
    let keys = d.join("keys");
    let mut c = cairn();
    c.args(["keys", "generate"]).arg(&keys);
    let o = run_with_timeout(c, Duration::from_secs(120));
    o.assert_ok();
    o.assert_stdout_has("of=PK-8be4df61-93ca-11d2-aa0d-00e098032b8c bs=64k");
    for f in ["PK", "KEK", "db"] {
        for ext in ["key", "crt", "cer", "esl", "auth"] {
            assert!(keys.join(format!("{f}.{ext}")).is_file(), "{f}.{ext}");
        }
        // X.509 with an RSA key of at least 2048 bits.
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(keys.join(format!("{f}.crt")))
            .output()
            .unwrap();
        assert!(text.status.success(), "{f}.crt is not an X.509 certificate");
        let text = String::from_utf8_lossy(&text.stdout);
        let bits: u32 = text
            .split_once("Public-Key: (")
            .and_then(|(_, r)| r.split_once(" bit)"))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("no key size in {f}.crt:\n{text}"));
        assert!(
            text.contains("rsaEncryption") && bits >= 2048,
            "{f}.crt:\n{text}"
        );
    }
    keys
}

/// hello built into `out`, signed with the generated db key given on the
/// command line; returns the UKI.
fn hello_signed_with_db(keys: &Path, out: &Path) -> PathBuf {
    let mut c = cairn();
    c.arg("build")
        .arg(example("hello"))
        .arg("-o")
        .arg(out)
        .arg("--sign-key")
        .arg(keys.join("db.key"))
        .arg("--sign-cert")
        .arg(keys.join("db.crt"));
    run_with_timeout(c, Duration::from_secs(300)).assert_ok();
    out.join("hello.efi")
}

/// The .auth files of `cairn keys generate` enrolled the way a user would:
/// from Linux, through efivarfs, into firmware in setup mode. PK goes
/// first, so the firmware is in user mode when KEK.auth (signed by PK) and
/// db.auth (signed by KEK) arrive and must check their signatures. The
/// store the firmware wrote is kept (`--save-vars`); with it, an image signed
/// by the db key boots and an unsigned one is refused.
#[test]
fn auth_files_enroll_through_the_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = generate_keys(d);
    let script = "\
        /bin/busybox mount -t efivarfs efivarfs /sys/firmware/efi/efivars; \
        mode() { /bin/busybox od -An -tu1 /sys/firmware/efi/efivars/SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c | /bin/busybox awk '{print $NF}'; }; \
        echo \"setup mode before: $(mode)\"; \
        for v in PK KEK db; do \
          g=8be4df61-93ca-11d2-aa0d-00e098032b8c; [ $v = db ] && g=d719b2cb-3d3a-4596-a3bc-dad00e67656f; \
          /bin/busybox printf '\\047\\000\\000\\000' > /tmp/$v; /bin/busybox cat /keys/$v.auth >> /tmp/$v; \
          /bin/busybox dd if=/tmp/$v of=/sys/firmware/efi/efivars/$v-$g bs=65536 && echo \"enrolled $v\" || echo \"refused $v\"; \
        done; \
        echo \"setup mode after: $(mode)\"";
    let manifest = format!(
        "name = \"enroll\"\n\
         [kernel]\npackage = \"linux-image-cloud-amd64\"\n\
         cmdline = \"console=ttyS0 quiet panic=-1\"\nmodules = [\"efivarfs\"]\n\
         [[binary]]\npath = \"/bin/busybox\"\n\
         {files}\
         [[service]]\nname = \"enroll\"\n\
         exec = [\"/bin/busybox\", \"sh\", \"-c\", {script:?}]\n\
         on_exit = \"poweroff\"\n",
        files = ["PK", "KEK", "db"]
            .iter()
            .map(|v| format!("[[file]]\nsrc = \"keys/{v}.auth\"\ndst = \"/keys/{v}.auth\"\n"))
            .collect::<String>(),
    );
    std::fs::write(d.join("cairn.toml"), manifest).unwrap();
    let vars = d.join("enrolled.fd");
    let args = [
        "--secure-boot",
        "--vars",
        OVMF_VARS,
        "--save-vars",
        vars.to_str().unwrap(),
        "--net",
        "none",
    ];
    let o = boot(
        &d.join("cairn.toml"),
        &d.join("out"),
        &args,
        Duration::from_secs(300),
    );
    o.assert_ok();
    o.assert_in_order(&[
        "setup mode before: 1",
        "enrolled PK",
        "enrolled KEK",
        "enrolled db",
        "setup mode after: 0",
    ]);
    assert!(vars.is_file(), "--save-vars wrote nothing");

    let mine = hello_signed_with_db(&keys, &d.join("mine"));
    assert_boots(&mine, Some(&vars));
    let out = d.join("unsigned");
    build(&example("hello"), &out).assert_ok();
    assert_refused(&out.join("hello.efi"), Some(&vars));
}

#[test]
fn bad_sign_key_fails_the_build_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = example_with(
        "hello",
        d,
        "[sign]\nkey = \"missing.key\"\ncert = \"missing.pem\"\n",
    );
    let out = d.join("out");
    let o = build(&manifest, &out);
    assert!(!o.success);
    assert!(o.stderr.contains("cairn.toml:"), "{}", o.stderr);
    assert!(o.stderr.contains("missing.key"), "{}", o.stderr);
    // The passphrase-protected snakeoil key cannot be used without a prompt.
    let manifest = example_with(
        "hello",
        d,
        &format!("[sign]\nkey = \"{SNAKEOIL_KEY}\"\ncert = \"{SNAKEOIL_PEM}\"\n"),
    );
    let o = build(&manifest, &out);
    assert!(!o.success);
    assert!(o.stderr.contains("sbsign failed"), "{}", o.stderr);
    // Nothing but the output directory's build lock (empty; it stays, see
    // the README's build outputs).
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n == ".cairn-build.lock"),
        "outputs left behind: {left:?}"
    );
    if let Ok(m) = std::fs::metadata(out.join(".cairn-build.lock")) {
        assert_eq!(m.len(), 0, "the lock file holds data");
    }
}

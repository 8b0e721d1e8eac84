//! Install media, end to end: the hybrid `NAME.iso` boots as a CD, a USB
//! stick and a plain disk, under SeaBIOS, OVMF and OVMF with Secure Boot
//! (a signed UKI boots, an unsigned one is refused), and outside tools
//! (xorriso, sfdisk, fdisk, fsck.vfat) find it sound; two builds are
//! byte-identical. VHD and VHDX disks hold the same disk as the raw image,
//! pass `qemu-img` (check for VHDX, compare for both), are reproducible and
//! boot.
//!
//! Every ISO boot is of `examples/net` on Debian's cloud kernel with QEMU's
//! user network: it must print its DHCP lease and `cairn: ready`.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_e2e::img::check;
use cairn_e2e::{
    boot, boot_until, build, cairn, copy_example, example, run_with_timeout, snakeoil_key,
    SNAKEOIL_PEM,
};

const READY: &str = "cairn: ready";
const LEASE: &str = "DHCPv4 lease obtained";
/// What OVMF prints when it refuses an image, and once it has given up.
const DENIED: &str = "Access Denied";
const GAVE_UP: &str = "No bootable option or device was found";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firmware {
    SeaBios,
    Ovmf,
    SecureBoot,
}

/// A copy of examples/net with `[iso]` added (and `extra`); returns the
/// directory guard and the manifest.
fn net_with_iso(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, manifest) = copy_example("net");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}\n[iso]\n{extra}")).unwrap();
    (dir, manifest)
}

/// `cairn build MANIFEST -o OUT ARGS...`.
fn build_with(manifest: &Path, out: &Path, args: &[&str]) {
    let mut c = cairn();
    c.arg("build").arg(manifest).arg("-o").arg(out).args(args);
    run_with_timeout(c, Duration::from_secs(300)).assert_ok();
}

/// `cairn boot IMAGE --as MEDIA` under `fw` until ready (or refused);
/// returns the console.
fn boot_image(image: &Path, fw: Firmware, media: &str, net: bool) -> String {
    let mut c = cairn();
    c.arg("boot")
        .arg(image)
        .args(["--as", media, "--accel", "tcg", "--timeout", "300"])
        .args(["--net", if net { "user" } else { "none" }]);
    match fw {
        Firmware::SeaBios => c.arg("--bios"),
        Firmware::Ovmf => &mut c,
        Firmware::SecureBoot => c.arg("--secure-boot"),
    };
    let (out, seen) = boot_until(c, &[READY, GAVE_UP], Duration::from_secs(300));
    assert!(
        seen,
        "{} as {media} under {fw:?}: neither ready nor refused:\n{out}",
        image.display()
    );
    out
}

fn assert_boots(image: &Path, fw: Firmware, media: &str) {
    let out = boot_image(image, fw, media, true);
    assert!(
        out.contains(READY) && out.contains(LEASE),
        "{media} under {fw:?}: no lease or not ready:\n{out}"
    );
    assert!(!out.contains(DENIED), "{out}");
    // Which path booted: isolinux under BIOS, the UKI's stub under UEFI.
    if fw == Firmware::SeaBios {
        assert!(out.contains("ISOLINUX"), "isolinux did not run:\n{out}");
    } else {
        assert!(!out.contains("ISOLINUX"), "{out}");
    }
}

fn assert_refused(image: &Path, media: &str) {
    let out = boot_image(image, Firmware::SecureBoot, media, false);
    assert!(
        out.contains(DENIED),
        "{media}: firmware did not refuse:\n{out}"
    );
    assert!(
        !out.contains(READY),
        "{media}: refused image reached init:\n{out}"
    );
    assert!(!out.contains("Linux version"), "kernel started:\n{out}");
}

/// Output of a command that must succeed.
fn stdout_of(program: &str, args: &[&str], file: &Path) -> String {
    let o = Command::new(program).args(args).arg(file).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{program} {args:?}: {text}");
    text
}

/// xorriso's view of the El Torito catalog and the system area.
fn xorriso_report(iso: &Path) -> String {
    let o = Command::new("xorriso")
        .args(["-no_rc", "-indev"])
        .arg(iso)
        .args(["-report_el_torito", "plain", "-report_system_area", "plain"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "xorriso: {text}");
    text
}

/// The GPT partitions of `img` as (start sector, sectors, type name) from
/// `sfdisk -l`-style JSON.
fn gpt_partitions(img: &Path) -> Vec<(u64, u64, String)> {
    let json = stdout_of("sfdisk", &["-J"], img);
    let v: Vec<(u64, u64, String)> = json
        .split("\"node\":")
        .skip(1)
        .map(|p| {
            let num = |key: &str| -> u64 {
                p.split(key)
                    .nth(1)
                    .unwrap()
                    .trim_start_matches([' ', ':'])
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
                    .parse()
                    .unwrap()
            };
            let ty = p
                .split("\"type\":")
                .nth(1)
                .and_then(|s| s.split('"').nth(1))
                .unwrap()
                .to_string();
            (num("\"start\""), num("\"size\""), ty)
        })
        .collect();
    assert!(json.contains("\"label\": \"gpt\""), "{json}");
    v
}

/// Checks `iso` with outside tools: El Torito BIOS (when `bios`) and UEFI
/// entries, a GPT whose partition 2 is the ESP and is also the El Torito
/// EFI image, sfdisk --verify and fdisk -l content, and `fsck.vfat -n` on
/// the ESP, which holds exactly `uki` as EFI/BOOT/BOOTX64.EFI.
fn check_iso(iso: &Path, uki: &Path, bios: bool) {
    let report = xorriso_report(iso);
    let boot_imgs: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("El Torito boot img :"))
        .collect();
    assert_eq!(boot_imgs.len(), if bios { 2 } else { 1 }, "{report}");
    assert!(boot_imgs.iter().any(|l| l.contains("UEFI")), "{report}");
    assert_eq!(
        boot_imgs.iter().any(|l| l.contains("BIOS")),
        bios,
        "{report}"
    );
    assert!(report.contains("GPT"), "{report}");
    assert_eq!(report.contains("isohybrid"), bios, "{report}");

    check("sfdisk", &["--verify"], iso);
    let fdisk = stdout_of("fdisk", &["-l"], iso);
    assert!(fdisk.contains("Disklabel type: gpt"), "{fdisk}");
    assert!(fdisk.contains("EFI System"), "{fdisk}");

    let parts = gpt_partitions(iso);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let (start, sectors, ty) = &parts[1];
    assert_eq!(ty, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "{parts:?}");
    // The El Torito EFI image is that partition: its load address (in
    // 2048-byte blocks) is the partition's start.
    let efi_line = boot_imgs.iter().find(|l| l.contains("UEFI")).unwrap();
    let lba: u64 = efi_line
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{efi_line}"));
    assert_eq!(lba * 4, *start, "{report}\n{parts:?}");
    assert!(sectors * 512 <= 65535 * 512, "ESP beyond El Torito's reach");

    // The ESP, cut out and checked.
    let f = std::fs::File::open(iso).unwrap();
    let mut esp = vec![0u8; (*sectors * 512) as usize];
    f.read_exact_at(&mut esp, start * 512).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let esp_path = tmp.path().join("esp.img");
    std::fs::write(&esp_path, &esp).unwrap();
    check("fsck.vfat", &["-n"], &esp_path);
    let copied = tmp.path().join("BOOTX64.EFI");
    let st = Command::new("mcopy")
        .arg("-i")
        .arg(&esp_path)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&copied)
        .status()
        .unwrap();
    assert!(st.success(), "mcopy from the ESP failed");
    assert!(
        std::fs::read(&copied).unwrap() == std::fs::read(uki).unwrap(),
        "the ESP's BOOTX64.EFI is not the UKI"
    );
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn mib(n: u64) -> String {
    format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64)
}

/// The ISO is sound by outside tools, two builds are byte-identical, and a
/// UEFI-only ISO (`bios = false`) has no isolinux, is smaller and boots
/// from a CD by UEFI.
#[test]
fn iso_is_sound_and_reproducible() {
    let (dir, manifest) = net_with_iso("");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    build(&manifest, &a).assert_ok();
    build(&manifest, &b).assert_ok();
    let iso = a.join("net.iso");
    let uki = a.join("net.efi");
    assert!(
        std::fs::read(&iso).unwrap() == std::fs::read(b.join("net.iso")).unwrap(),
        "two builds of the same ISO differ"
    );
    check_iso(&iso, &uki, true);

    let (dir2, manifest2) = net_with_iso("bios = false\nlabel = \"NET_UEFI\"\n");
    let c = dir2.path().join("c");
    build(&manifest2, &c).assert_ok();
    let efi_only = c.join("net.iso");
    check_iso(&efi_only, &c.join("net.efi"), false);
    let report = xorriso_report(&efi_only);
    assert!(report.contains("NET_UEFI"), "{report}");
    eprintln!(
        "sizes: UKI {} ({} bytes); ISO {} ({} bytes); UEFI-only ISO {} ({} bytes)",
        mib(size(&uki)),
        size(&uki),
        mib(size(&iso)),
        size(&iso),
        mib(size(&efi_only)),
        size(&efi_only)
    );
    assert!(size(&efi_only) < size(&iso));
    // And it boots by UEFI.
    assert_boots(&efi_only, Firmware::Ovmf, "cdrom");
}

/// The unsigned ISO boots as CD, USB stick and disk under SeaBIOS (through
/// isolinux) and OVMF (the UKI), gets its lease and is ready; under Secure
/// Boot its UKI is refused from CD, USB stick and disk.
#[test]
fn iso_boots_by_bios_and_uefi_from_cd_usb_and_disk() {
    let (dir, manifest) = net_with_iso("");
    let out = dir.path().join("out");
    build(&manifest, &out).assert_ok();
    let iso = out.join("net.iso");
    for fw in [Firmware::SeaBios, Firmware::Ovmf] {
        for media in ["cdrom", "usb", "disk"] {
            assert_boots(&iso, fw, media);
        }
    }
    for media in ["cdrom", "usb", "disk"] {
        assert_refused(&iso, media);
    }
}

/// `cairn run --iso` needs an `[iso]` table, and `--bios`/`--as` need
/// `--iso`: both stop before QEMU with a message.
#[test]
fn run_iso_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (&["--iso"][..], "--iso needs an [iso] table in"),
        (&["--bios"][..], "--bios and --as go with --iso"),
        (&["--as", "usb"][..], "--bios and --as go with --iso"),
    ] {
        let mut c = cairn();
        c.arg("run")
            .arg(example("hello"))
            .arg("-o")
            .arg(dir.path())
            .args(["--timeout", "5"])
            .args(args);
        let o = run_with_timeout(c, Duration::from_secs(300));
        assert!(!o.success, "{args:?} was accepted");
        assert!(o.stderr.contains(want), "{args:?}: {}", o.stderr);
        assert!(!o.stdout.contains("SeaBIOS"), "QEMU started: {}", o.stdout);
    }
}

/// The ISO of a UKI signed with the snakeoil key (which OVMF's Secure Boot
/// variable store trusts) boots under Secure Boot from CD, USB and disk.
#[test]
fn signed_iso_boots_under_secure_boot() {
    let (dir, manifest) = net_with_iso("");
    let key = snakeoil_key(dir.path());
    let out = dir.path().join("out");
    build_with(
        &manifest,
        &out,
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--sign-cert",
            SNAKEOIL_PEM,
        ],
    );
    let iso = out.join("net.iso");
    check_iso(&iso, &out.join("net.efi"), true);
    for media in ["cdrom", "usb", "disk"] {
        assert_boots(&iso, Firmware::SecureBoot, media);
    }
}

/// `[disk] format = "vhd"` and `"vhdx"`: the same disk as the raw image
/// (`qemu-img compare`), VHDX passes `qemu-img check` (qemu-img has no
/// check for VHD: it says "This image format does not support checks"),
/// two builds are byte-identical, and each boots through OVMF.
#[test]
fn vhd_and_vhdx_hold_the_disk_and_boot() {
    let raw = tempfile::tempdir().unwrap();
    build(&example("disk"), raw.path()).assert_ok();
    let raw_img = raw.path().join("disk.img");
    for (format, qemu, ext) in [("vhd", "vpc", "vhd"), ("vhdx", "vhdx", "vhdx")] {
        let (_src, manifest) = copy_example("disk");
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(text.contains("format = \"raw\""));
        std::fs::write(
            &manifest,
            text.replace("format = \"raw\"", &format!("format = \"{format}\"")),
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        let again = tempfile::tempdir().unwrap();
        build(&manifest, out.path()).assert_ok();
        build(&manifest, again.path()).assert_ok();
        let img = out.path().join(format!("disk.{ext}"));
        assert!(
            std::fs::read(&img).unwrap()
                == std::fs::read(again.path().join(format!("disk.{ext}"))).unwrap(),
            "two builds of the {format} image differ"
        );
        let info = stdout_of("qemu-img", &["info", "--output=json", "-f", qemu], &img);
        assert!(info.contains(&format!("\"format\": \"{qemu}\"")), "{info}");
        assert!(
            info.contains(&format!("\"virtual-size\": {}", size(&raw_img))),
            "{info}"
        );
        if qemu == "vhdx" {
            check("qemu-img", &["check", "-f", "vhdx"], &img);
        } else {
            let text = String::from_utf8_lossy(
                &Command::new("qemu-img")
                    .args(["info", "-f", "vpc"])
                    .arg(&img)
                    .output()
                    .unwrap()
                    .stdout,
            )
            .into_owned();
            assert!(text.contains("file format: vpc"), "{text}");
        }
        let same = Command::new("qemu-img")
            .args(["compare", "-f", qemu, "-F", "raw"])
            .arg(&img)
            .arg(&raw_img)
            .status()
            .unwrap();
        assert!(same.success(), "the {format} image holds another disk");

        let o = boot(
            &manifest,
            out.path(),
            &["--disk", "--net", "none", "--mem", "256M"],
            Duration::from_secs(300),
        );
        o.assert_ok();
        o.assert_stdout_has("cairn: formatting /dev/vda3 as ext4 (label DATA)");
        o.assert_stdout_has("boot 1: hello from the primary config");
    }
}

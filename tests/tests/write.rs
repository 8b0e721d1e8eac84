//! `cairn write IMAGE DEVICE`: writes examples/disk's image to a loop
//! device and reads it back; refuses a mounted device, a too-small one, a
//! partition and (without --yes) a caller with no terminal, leaving each
//! untouched. Needs root (losetup, mount); no QEMU.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_e2e::{build, cairn, copy_example, run_with_timeout, Outcome};

const MIB: u64 = 1 << 20;

/// Runs `cmd args`, panicking with its output unless it succeeds; returns
/// its stdout.
fn sh(cmd: &str, args: &[&str]) -> String {
    let mut c = Command::new("timeout");
    c.arg("60").arg(cmd).args(args);
    let o = run_with_timeout(c, Duration::from_secs(90));
    assert!(
        o.success,
        "{cmd} {args:?} failed ({:?}):\n{}\n{}",
        o.code, o.stdout, o.stderr
    );
    o.stdout
}

/// A loop device over a sparse file, detached when dropped (also when the
/// test panics).
struct Loop {
    dev: String,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    /// A loop device of `len` bytes whose every byte is `fill` (0: sparse).
    fn new(len: u64, fill: u8) -> Loop {
        let file = tempfile::NamedTempFile::new().unwrap();
        if fill == 0 {
            file.as_file().set_len(len).unwrap();
        } else {
            std::fs::write(file.path(), vec![fill; len as usize]).unwrap();
        }
        let path = file.path().to_str().unwrap().to_string();
        let dev = sh("losetup", &["--find", "--show", "--partscan", &path])
            .trim()
            .to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup said {dev:?}");
        Loop { dev, _file: file }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let st = Command::new("losetup").args(["-d", &self.dev]).status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!("could not detach {}: {st:?}", self.dev);
        }
    }
}

/// A read-only mount, unmounted when dropped (before its loop device is
/// detached: declare it after the Loop).
struct Mounted {
    dir: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn write(img: &Path, dev: &str, extra: &[&str]) -> Outcome {
    let mut c = cairn();
    c.arg("write").arg(img).arg(dev).args(extra);
    run_with_timeout(c, Duration::from_secs(180))
}

/// A copy of the device's bytes now, to compare with later.
fn snapshot(dev: &str, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    sh("cp", &[dev, p.to_str().unwrap()]);
    p
}

fn same(a: &Path, b: &str) {
    sh("cmp", &[a.to_str().unwrap(), b]);
}

fn assert_refused(o: &Outcome, dev: &str, reason: &str) {
    assert!(
        !o.success && o.stderr.contains(dev) && o.stderr.contains(reason),
        "expected a refusal of {dev} with {reason:?} (code {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.code,
        o.stdout,
        o.stderr
    );
    assert!(o.stderr.contains("nothing was written"), "{}", o.stderr);
}

#[test]
fn writes_disk_image_to_a_loop_device_and_refuses_unsafe_targets() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root for losetup and mount");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let (_src, manifest) = copy_example("disk");
    build(&manifest, out.path()).assert_ok();
    let img = out.path().join("disk.img");
    let len = std::fs::metadata(&img).unwrap().len();
    let snaps = tempfile::tempdir().unwrap();

    // A device larger than the image, holding other bytes than the image.
    let big = Loop::new(len + 16 * MIB, 0);
    // Without a terminal and without --yes: refused, nothing written.
    let o = write(&img, &big.dev, &[]);
    assert_refused(&o, &big.dev, "not asking without a terminal: pass --yes");
    assert!(
        std::fs::read(&big.dev).unwrap().iter().all(|&b| b == 0),
        "{} was written to without confirmation",
        big.dev
    );

    let o = write(&img, &big.dev, &["--yes"]);
    o.assert_ok();
    o.assert_stdout_has("transport loop");
    o.assert_stdout_has(&format!(
        "written {} of {} MiB (100%)",
        len / MIB,
        len / MIB
    ));
    o.assert_stdout_has("read back and verified, SHA-256 ");
    // The device's first bytes are the image's, the rest still zeros.
    sh(
        "cmp",
        &["-n", &len.to_string(), img.to_str().unwrap(), &big.dev],
    );
    let dev_bytes = std::fs::read(&big.dev).unwrap();
    assert!(dev_bytes[len as usize..].iter().all(|&b| b == 0));
    drop(dev_bytes);

    // If the kernel makes partition devices for the loop device (it does
    // not in every container), naming one is refused. devtmpfs makes the
    // node; no udev needed.
    let _ = Command::new("blockdev")
        .args(["--rereadpt", &big.dev])
        .status();
    let part = format!("{}p1", big.dev);
    let t = std::time::Instant::now();
    while !Path::new(&part).exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if Path::new(&part).exists() {
        let o = write(&img, &part, &["--yes"]);
        assert_refused(&o, &part, "is a partition: name the whole device");
    } else {
        eprintln!("no {part} after re-reading the partition table: partition refusal not checked here (unit-tested)");
    }

    // A device that is mounted (read-only, so its bytes cannot change by
    // themselves): refused, untouched.
    let mounted = Loop::new(len + 16 * MIB, 0);
    sh("mkfs.ext4", &["-q", "-F", &mounted.dev]);
    let m = Mounted {
        dir: tempfile::tempdir().unwrap(),
    };
    sh(
        "mount",
        &["-o", "ro", &mounted.dev, m.dir.path().to_str().unwrap()],
    );
    let before = snapshot(&mounted.dev, snaps.path(), "mounted");
    let o = write(&img, &mounted.dev, &["--yes"]);
    assert_refused(&o, &mounted.dev, "mounted: ");
    same(&before, &mounted.dev);
    drop(m);
    std::fs::remove_file(&before).unwrap();

    // A device smaller than the image: refused, untouched.
    let small = Loop::new(16 * MIB, 0x5a);
    let o = write(&img, &small.dev, &["--yes"]);
    assert_refused(&o, &small.dev, "the device is too small: 16.0 MiB");
    assert!(
        std::fs::read(&small.dev)
            .unwrap()
            .iter()
            .all(|&b| b == 0x5a),
        "{} was changed",
        small.dev
    );

    // A qcow2-named image: refused before any device is looked at.
    let qcow = out.path().join("disk.qcow2");
    std::fs::copy(&img, &qcow).unwrap();
    let o = write(&qcow, &big.dev, &["--yes"]);
    assert!(
        !o.success && o.stderr.contains("write the raw image instead"),
        "{}",
        o.stderr
    );
}

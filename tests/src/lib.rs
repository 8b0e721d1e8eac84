//! Harness for cairn's end-to-end tests: find (or build) the `cairn` CLI and
//! the static `cairn-init`, build example manifests, boot them in QEMU under
//! TCG with a timeout, and hand back what the serial console printed.
//!
//! `cargo xtask test` sets `CAIRN_BIN` and `CAIRN_INIT`; without them the
//! harness builds both itself.

pub mod img;
pub mod net;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The `cairn` binary.
pub fn cairn_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CAIRN_BIN") {
            return PathBuf::from(p);
        }
        let status = Command::new(cargo())
            .current_dir(root())
            .args(["build", "--quiet", "-p", "cairn"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building cairn failed");
        root().join("target/debug/cairn")
    })
    .clone()
}

/// The static `cairn-init` binary.
pub fn init_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| xtask_built("CAIRN_INIT", &["build-init"]))
        .clone()
}

/// The static arm64 `cairn-init` (`CAIRN_INIT_ARM64`, as `cargo xtask
/// test` sets it; else built with `cargo xtask build-init --arch arm64`,
/// which fails loudly when the arm64 toolchain cannot be set up).
pub fn init_arm64_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| xtask_built("CAIRN_INIT_ARM64", &["build-init", "--arch", "arm64"]))
        .clone()
}

/// `$var`, else the path `cargo xtask ARGS` prints.
fn xtask_built(var: &str, args: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let out = Command::new(cargo())
        .current_dir(root())
        .args(["run", "--quiet", "-p", "xtask", "--"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo xtask {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The liveness tests' static guest program (tests/load: a ticker and
/// hostile cairnctl clients), built like the init for the init's target.
pub fn test_load_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| xtask_built("CAIRN_TEST_LOAD", &["build-test-load"]))
        .clone()
}

/// The line of `cairn build`'s table that starts with `what` (an image
/// path, `kernel`, ...); panics with the table when there is none.
pub fn table_line(table: &str, what: &str) -> String {
    table
        .lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what} in the build table:\n{table}"))
        .to_string()
}

/// A finished process: exit status and output.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Outcome {
    /// Panics with the whole output when `needle` is absent.
    pub fn assert_stdout_has(&self, needle: &str) {
        assert!(
            self.stdout.contains(needle),
            "expected {needle:?} in stdout\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Panics with the whole output unless `needles` appear in stdout in
    /// this order.
    pub fn assert_in_order(&self, needles: &[&str]) {
        let mut from = 0;
        for n in needles {
            match self.stdout[from..].find(n) {
                Some(i) => from += i + n.len(),
                None => panic!(
                    "expected {n:?} (after the previous markers) in the console\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout, self.stderr
                ),
            }
        }
    }

    pub fn assert_ok(&self) {
        assert!(
            self.success && !self.timed_out,
            "command failed (code {:?}, timed out: {})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.timed_out,
            self.stdout,
            self.stderr
        );
    }
}

/// Run `cmd` with stdin closed, capture its output, and kill it (by pid)
/// when `timeout` passes.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Outcome {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait works") {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait works");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        success: status.success(),
        code: status.code(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        timed_out,
    }
}

/// A `cairn` command with the test's init and a fixed SOURCE_DATE_EPOCH.
pub fn cairn() -> Command {
    let mut c = Command::new(cairn_bin());
    c.current_dir(root())
        .env("CAIRN_INIT", init_bin())
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

/// `cairn build MANIFEST -o OUT`.
pub fn build(manifest: &Path, out: &Path) -> Outcome {
    let mut c = cairn();
    c.arg("build").arg(manifest).arg("-o").arg(out);
    run_with_timeout(c, Duration::from_secs(300))
}

/// QEMU boots are serialised: two TCG guests on a 2-core machine only slow
/// each other down past their timeouts.
static QEMU: Mutex<()> = Mutex::new(());

/// `cairn run MANIFEST -o OUT --accel tcg ARGS...` with a timeout.
pub fn boot(manifest: &Path, out: &Path, args: &[&str], timeout: Duration) -> Outcome {
    let _guard = QEMU.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = cairn();
    c.arg("run")
        .arg(manifest)
        .arg("-o")
        .arg(out)
        .args(["--accel", "tcg", "--timeout"])
        .arg(timeout.as_secs().to_string())
        .args(args);
    // The runner stops QEMU at --timeout; ours is the backstop.
    run_with_timeout(c, timeout + Duration::from_secs(120))
}

/// Path of an example manifest.
pub fn example(name: &str) -> PathBuf {
    root().join("examples").join(name).join("cairn.toml")
}

/// Example `name`'s manifest with `extra` (TOML) appended, written to
/// `dir/cairn.toml` (for examples that name no file by a relative path, so
/// they build the same from there); returns that path.
pub fn example_with(name: &str, dir: &Path, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(example(name)).unwrap();
    let p = dir.join("cairn.toml");
    std::fs::write(&p, format!("{text}\n{extra}")).unwrap();
    p
}

/// A copy of example `name` (its whole directory) in a new temporary
/// directory, for tests that change its files; returns the directory guard
/// and the copied manifest.
pub fn copy_example(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = example(name);
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(src.parent().unwrap())
        .arg(dir.path().join(name))
        .status()
        .unwrap();
    assert!(copied.success(), "cp -r of example {name} failed");
    let manifest = dir.path().join(name).join("cairn.toml");
    (dir, manifest)
}

/// A QEMU boot whose console is read while it runs (for tests that act on
/// the guest: QMP commands, serial input).
pub struct Live {
    child: std::process::Child,
    out: std::sync::Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl Live {
    /// `cairn run MANIFEST -o OUT --accel tcg ARGS...`, stdin piped (it
    /// becomes the guest's serial input).
    pub fn start(manifest: &Path, out: &Path, args: &[&str], timeout: Duration) -> Live {
        let guard = QEMU.lock().unwrap_or_else(|p| p.into_inner());
        let mut c = cairn();
        c.arg("run")
            .arg(manifest)
            .arg("-o")
            .arg(out)
            .args(["--accel", "tcg", "--timeout"])
            .arg(timeout.as_secs().to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Live::spawn(c, guard)
    }

    /// Any command that boots a guest (holds the QEMU lock while it
    /// runs), stdin piped to the guest's serial input.
    pub fn command(mut c: Command) -> Live {
        let guard = QEMU.lock().unwrap_or_else(|p| p.into_inner());
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Live::spawn(c, guard)
    }

    fn spawn(mut c: Command, guard: std::sync::MutexGuard<'static, ()>) -> Live {
        let mut child = c.spawn().expect("the guest starts");
        let mut stdout = child.stdout.take().expect("piped");
        let buf = std::sync::Arc::new(Mutex::new(String::new()));
        let b2 = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Live {
            child,
            out: buf,
            reader: Some(reader),
            _guard: guard,
        }
    }

    /// [`Live::start`] with a QMP socket: `cairn run MANIFEST -o DIR/out
    /// ARGS... -- -qmp unix:DIR/qmp.sock` (after QEMU arguments that ARGS
    /// may end with, behind their own `--`). Returns the boot and the socket
    /// path for [`qmp`].
    pub fn start_with_qmp(
        manifest: &Path,
        dir: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> (Live, PathBuf) {
        let sock = dir.join("qmp.sock");
        let qmp_arg = format!("unix:{},server,nowait", sock.display());
        let mut all = args.to_vec();
        // QEMU arguments of the caller's (after its `--`) come first.
        if !all.contains(&"--") {
            all.push("--");
        }
        all.extend(["-qmp", &qmp_arg]);
        (Live::start(manifest, &dir.join("out"), &all, timeout), sock)
    }

    /// Writes `manifest` (TOML text) into a new temporary directory and
    /// boots it there with [`Live::start_with_qmp`], no network, 256 MiB.
    /// Returns the directory guard, the boot and the QMP socket.
    pub fn manifest_with_qmp(
        manifest: &str,
        timeout: Duration,
    ) -> (tempfile::TempDir, Live, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.toml");
        std::fs::write(&path, manifest).unwrap();
        let (live, sock) = Live::start_with_qmp(
            &path,
            dir.path(),
            &["--net", "none", "--mem", "256M"],
            timeout,
        );
        (dir, live, sock)
    }

    /// The console output so far.
    pub fn output(&self) -> String {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the console shows `needle`; panics with the output after
    /// `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let what = format!("{needle:?} never appeared on the console");
        self.wait_or_panic(|o| o.contains(needle), timeout, &what);
    }

    /// Waits until `done` holds for the console output; panics with the
    /// output after `timeout` or when QEMU has ended.
    pub fn wait_until(&mut self, done: impl Fn(&str) -> bool, timeout: Duration) {
        self.wait_or_panic(done, timeout, "the console never got there");
    }

    fn wait_or_panic(&mut self, done: impl Fn(&str) -> bool, timeout: Duration, what: &str) {
        if !self.poll_until(done, timeout) {
            let _ = self.child.kill();
            panic!("{what}:\n{}", self.output());
        }
    }

    /// Waits until `done` holds for the console output; false when
    /// `timeout` passes or QEMU has ended first (QEMU is left running: for
    /// tests that report the failure themselves, e.g. without dumping a
    /// console of megabytes).
    pub fn poll_until(&mut self, done: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(&self.output()) {
                return true;
            }
            if Instant::now() > end || self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` on the guest's serial console.
    pub fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped");
        stdin.write_all(text.as_bytes()).expect("write to QEMU");
        stdin.flush().expect("flush");
    }

    /// Waits for QEMU to exit (killing it by pid after `timeout`); returns
    /// the whole console output and whether it exited by itself.
    pub fn finish(mut self, timeout: Duration) -> (String, bool) {
        let end = Instant::now() + timeout;
        let exited = loop {
            if self.child.try_wait().ok().flatten().is_some() {
                break true;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (self.output(), exited)
    }
}

/// Sends one QMP command (after the capabilities handshake) to the QMP
/// socket at `path`.
pub fn qmp(path: &Path, command: &str) {
    qmp_json(path, &format!("{{\"execute\":\"{command}\"}}"));
}

/// Sends one whole QMP request (a JSON object, for commands with
/// arguments) to the QMP socket at `path` and waits for its reply.
pub fn qmp_json(path: &Path, request: &str) {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(path).expect("QMP socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).expect("QMP greeting");
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).expect("QMP capabilities reply");
    w.write_all(format!("{request}\n").as_bytes()).unwrap();
    // Events (such as POWERDOWN) may come before the reply.
    loop {
        line.clear();
        r.read_line(&mut line).expect("QMP reply");
        if line.contains("\"return\"") {
            return;
        }
        assert!(line.contains("\"event\""), "QMP {request}: {line}");
    }
}

/// Run `cmd` (a boot: holds the QEMU lock) until its stdout contains one of
/// `stop_at` or `timeout` passes, then kill it by pid. Returns what it
/// printed and whether a marker was seen.
pub fn boot_until(mut cmd: Command, stop_at: &[&str], timeout: Duration) -> (String, bool) {
    let _guard = QEMU.lock().unwrap_or_else(|p| p.into_inner());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut text = Vec::new();
    let mut seen = false;
    while start.elapsed() < timeout {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(chunk) => text.extend(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let s = String::from_utf8_lossy(&text);
        if stop_at.iter().any(|m| s.contains(m)) {
            seen = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    (String::from_utf8_lossy(&text).into_owned(), seen)
}

/// Every file directly in `dir` with its bytes, sorted by name: for
/// comparing two output directories.
/// The lock file `cairn build` keeps in its output directory (empty) is
/// left out.
pub fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map_or(true, |e| e.file_name() != ".cairn-build.lock")
        })
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF's Secure Boot build and a variable store with Debian's snakeoil
/// keys enrolled.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";

/// QEMU arguments for OVMF on q35: the firmware (with `secure`, its
/// Secure Boot build, enforcing) and `vars` as its writable variable
/// store.
pub fn ovmf_args(c: &mut Command, vars: &Path, secure: bool) {
    if secure {
        c.args(["-machine", "q35,smm=on"])
            .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
    } else {
        c.args(["-machine", "q35"]);
    }
    let code = if secure { OVMF_CODE_SECBOOT } else { OVMF_CODE };
    c.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={code}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ));
}

/// Debian's snakeoil Secure Boot key (passphrase `snakeoil`) and its cert.
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
pub const SNAKEOIL_PEM: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

/// The snakeoil key without its passphrase, in `dir` (sbsign cannot
/// prompt).
pub fn snakeoil_key(dir: &Path) -> PathBuf {
    let key = dir.join("snakeoil.key");
    let st = Command::new("openssl")
        .args([
            "rsa",
            "-passin",
            "pass:snakeoil",
            "-in",
            SNAKEOIL_KEY,
            "-out",
        ])
        .arg(&key)
        .status()
        .expect("openssl runs");
    assert!(st.success(), "openssl could not read {SNAKEOIL_KEY}");
    key
}

/// A program that `cargo xtask deps` installs from PyPI (`pip --user`):
/// on PATH, or where pip puts it.
pub fn pip_tool(name: &str) -> Option<PathBuf> {
    let mut cands = vec![PathBuf::from(name)];
    if let Some(home) = std::env::var_os("HOME") {
        cands.push(Path::new(&home).join(".local/bin").join(name));
        cands.push(Path::new(&home).join(".cache/cairn/venv/bin").join(name));
    }
    cands.into_iter().find(|p| {
        Command::new(p)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A failing build leaves earlier outputs untouched and writes nothing.
pub fn assert_refused_cleanly(manifest_text: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::copy(
        example("hello").parent().unwrap().join("cairn.toml"),
        dir.path().join("good.toml"),
    )
    .unwrap();
    build(&dir.path().join("good.toml"), &out).assert_ok();
    let before = dir_contents(&out);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, manifest_text).unwrap();
    let o = build(&bad, &out);
    assert!(!o.success, "bad manifest was accepted:\n{}", o.stdout);
    for e in expect {
        assert!(o.stderr.contains(e), "expected {e:?} in:\n{}", o.stderr);
    }
    assert_eq!(
        dir_contents(&out),
        before,
        "outputs changed after a failed build"
    );
}

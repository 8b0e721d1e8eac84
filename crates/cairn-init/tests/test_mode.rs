//! Runs the built cairn-init as an ordinary process (test mode) with a
//! config given through `CAIRN_CONFIG`, and checks its console output.
//! Every child gets a deadline and is killed when it passes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn-init");
const DEADLINE: Duration = Duration::from_secs(20);

struct Run {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// The init in test mode with `config` and `cmdline`; stdin `/dev/null`.
fn init_command(config: &Path, cmdline: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("CAIRN_CONFIG", config)
        .env("CAIRN_CMDLINE", cmdline)
        .stdin(Stdio::null());
    cmd
}

impl Run {
    fn start(config: &Path, cmdline: &str) -> Run {
        Run::spawn(init_command(config, cmdline))
    }

    /// Runs `cmd` (see [`init_command`]), reading its stdout and stderr.
    fn spawn(mut cmd: Command) -> Run {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn-init");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Run {
            child,
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Reads console lines until one contains `needle`.
    fn wait_for(&mut self, needle: &str) {
        let end = Instant::now() + DEADLINE;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                // Dropping `self` stops the init.
                Err(_) => panic!(
                    "no line containing {needle:?}; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for exit (stopping the child at the deadline); returns the
    /// status, all stderr lines and stdout.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let end = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > end {
                // Dropping `self` stops the init.
                panic!("cairn-init did not exit; output:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(self.lines.iter());
        let stdout = self
            .stdout
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        (status, seen, stdout)
    }
}

impl Drop for Run {
    /// A test that fails half-way leaves no init behind: SIGTERM (the init
    /// stops its services), SIGKILL if it is still there after a while.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("system.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn index_of(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line containing {needle:?} in:\n{}", lines.join("\n")))
}

/// `[    1.234567] text`
fn assert_timestamped(line: &str) {
    let b = line.as_bytes();
    let ok = b.len() > 15
        && b[0] == b'['
        && b[1..6].iter().all(|c| c.is_ascii_digit() || *c == b' ')
        && b[6] == b'.'
        && b[7..13].iter().all(u8::is_ascii_digit)
        && &b[13..15] == b"] ";
    assert!(ok, "not a timestamped line: {line:?}");
}

#[test]
fn services_start_in_after_order_and_on_exit_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    // `second` comes first in the manifest but must start after `first`.
    let cfg = write_config(
        dir.path(),
        r#"
name = "t"
hostname = "must-not-be-set-in-test-mode"

[[service]]
name = "second"
exec = ["/bin/sh", "-c", "sleep 30"]
after = ["first"]

[[service]]
name = "first"
exec = ["/bin/sh", "-c", "echo hi"]
on_exit = "poweroff"
"#,
    );
    let started = Instant::now();
    let run = Run::start(&cfg, "");
    let (status, lines, stdout) = run.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{status}\n{all}");
    // Service output is captured into the log, tagged with its source.
    assert!(lines.iter().any(|l| l.ends_with("] first: hi")), "{all}");
    assert!(!stdout.contains("hi"), "stdout: {stdout:?}");
    assert!(lines[0].ends_with(&format!("cairn-init {}", env!("CARGO_PKG_VERSION"))));
    for l in &lines {
        assert_timestamped(l);
    }
    let init = index_of(&lines, "cairn: init started");
    let first = index_of(&lines, "cairn: service first started (pid ");
    let second = index_of(&lines, "cairn: service second started (pid ");
    let ready = index_of(&lines, "cairn: ready");
    let exited = index_of(&lines, "cairn: service first exited (status 0)");
    let off = index_of(&lines, "cairn: powering off");
    assert!(init < first && first < second && second < ready, "{all}");
    assert!(exited < off, "{all}");
    // `second` (sleep 30) was stopped with SIGTERM, well within the grace.
    index_of(&lines, "cairn: service second stopped (signal 15)");
    index_of(&lines, "test mode: exiting instead of power off");
    assert!(
        !all.contains("modules loaded"),
        "test mode loads no modules\n{all}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{all}");
}

#[test]
fn on_failure_restarts_then_on_exit_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    // Fails the first time, succeeds the second; env and PATH reach it.
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"
name = "t"
[[service]]
name = "flaky"
exec = ["/bin/sh", "-c", "[ -e \"$MARK\" ] && exit 0; touch \"$MARK\"; exit 3"]
env = {{ MARK = "{}" }}
restart = "on-failure"
on_exit = "reboot"
"#,
            marker.display()
        ),
    );
    let (status, lines, _) = Run::start(&cfg, "").finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    let fail = index_of(&lines, "service flaky exited (status 3)");
    let restart = index_of(&lines, "service flaky restarting in 1.000s");
    let ok = index_of(&lines, "service flaky exited (status 0)");
    let reboot = index_of(&lines, "cairn: rebooting");
    assert!(fail < restart && restart < ok && ok < reboot, "{all}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("service flaky started"))
            .count(),
        2,
        "{all}"
    );
    assert!(marker.exists());
}

#[test]
fn exec_failure_counts_as_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"
name = "t"
[[service]]
name = "broken"
exec = ["/nonexistent/cairn-test-program"]
on_exit = "poweroff"
"#,
    );
    let (status, lines, _) = Run::start(&cfg, "").finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    index_of(
        &lines,
        "service broken: cannot run /nonexistent/cairn-test-program: No such file",
    );
    index_of(
        &lines,
        "cairn: ready (1 of 1 services failed to start; init RSS ",
    );
    index_of(&lines, "cairn: powering off");
}

#[test]
fn invalid_config_gives_line_and_column_then_idles_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "name = \"t\"\nbogus = 1\n");
    let mut run = Run::start(&cfg, "");
    run.wait_for("idle reaper");
    // Still alive after the error.
    std::thread::sleep(Duration::from_millis(200));
    assert!(run.child.try_wait().unwrap().is_none(), "init exited");
    run.signal(rustix::process::Signal::TERM);
    let (status, lines, _) = run.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    assert!(all.contains("line 2, column 1"), "{all}");
    assert!(all.contains("bogus"), "{all}");
    index_of(&lines, "SIGTERM received: power off");
    index_of(&lines, "cairn: powering off");
    assert!(!all.contains("cairn: ready"), "{all}");
}

#[test]
fn missing_config_idles_and_sigusr2_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(&dir.path().join("absent.toml"), "");
    run.wait_for("idle reaper");
    run.signal(rustix::process::Signal::USR2);
    let (status, lines, _) = run.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    index_of(&lines, "cannot read config");
    index_of(&lines, "absent.toml");
    index_of(&lines, "cairn: rebooting");
}

/// Every documented shutdown signal: SIGTERM, SIGUSR1 and SIGPWR power
/// off, SIGINT (Ctrl-Alt-Del) and SIGUSR2 reboot; the running service is
/// stopped first either way. SIGHUP changes nothing.
#[test]
fn each_shutdown_signal_stops_the_services_then_powers_off_or_reboots() {
    use rustix::process::Signal;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"
name = "t"

[[service]]
name = "svc"
exec = ["/bin/sh", "-c", "trap 'echo svc got TERM; exit 0' TERM; echo svc up; while true; do sleep 0.1; done"]
"#,
    );
    for (sig, name, kind) in [
        (Signal::TERM, "SIGTERM", "powering off"),
        (Signal::USR1, "SIGUSR1", "powering off"),
        (Signal::POWER, "SIGPWR", "powering off"),
        (Signal::INT, "SIGINT", "rebooting"),
        (Signal::USR2, "SIGUSR2", "rebooting"),
    ] {
        let mut run = Run::start(&cfg, "");
        run.wait_for("svc: svc up");
        run.signal(Signal::HUP);
        run.signal(sig);
        let (status, lines, _) = run.finish();
        let all = lines.join("\n");
        assert!(status.success(), "{name}: {all}");
        let at = index_of(&lines, &format!("cairn: {kind}"));
        assert!(at < index_of(&lines, "svc: svc got TERM"), "{name}: {all}");
        let other = if kind == "rebooting" {
            "powering off"
        } else {
            "rebooting"
        };
        assert!(!all.contains(&format!("cairn: {other}")), "{name}: {all}");
    }
}

#[test]
fn orphans_are_reaped_and_debug_flag_is_verbose() {
    let dir = tempfile::tempdir().unwrap();
    // The service leaves a background child behind, which becomes ours.
    let cfg = write_config(
        dir.path(),
        r#"
name = "t"
[[service]]
name = "parent"
exec = ["/bin/sh", "-c", "sleep 0.2 & exit 0"]

[[service]]
name = "timer"
exec = ["/bin/sh", "-c", "sleep 1"]
on_exit = "poweroff"
"#,
    );
    let (status, lines, _) = Run::start(&cfg, "console=ttyS0 cairn.debug").finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    index_of(&lines, "kernel command line");
    let parent = index_of(&lines, "service parent exited (status 0)");
    let orphan = index_of(&lines, "cairn: reaped pid ");
    let off = index_of(&lines, "powering off");
    assert!(parent < orphan && orphan < off, "{all}");
}

fn ctl(sock: &Path, args: &[&str]) -> (i32, String, String) {
    let dir = sock.parent().unwrap();
    let link = dir.join("cairnctl");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    let out = Command::new(&link)
        .args(args)
        .env("CAIRN_CONTROL", sock)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn backoff_grows_then_failed_and_cairnctl_controls_services() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let cfg = write_config(
        dir.path(),
        r#"
name = "t"

[log]
lines = 200

[[service]]
name = "crash"
exec = ["/bin/sh", "-c", "echo crashing; exit 3"]
restart = "on-failure"
restart_delay_ms = 100
restart_delay_max_ms = 400
restart_limit = 4

[[service]]
name = "web"
exec = ["/bin/sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo web up; while true; do sleep 0.1; done"]
restart = "always"
stop_timeout_ms = 3000
"#,
    );
    // Killed when dropped, should the test fail half-way.
    let run = start_with_control(&cfg, &sock);
    let end = Instant::now() + DEADLINE;
    let status = loop {
        let (code, out, _) = ctl(&sock, &["status"]);
        if code == 0 && out.contains("failed") && out.contains("web") {
            break out;
        }
        assert!(Instant::now() < end, "crash never failed: {out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.contains("hostname:") && status.contains("uptime:"),
        "{status}"
    );
    assert!(
        status.lines().any(|l| l.contains("crash")
            && l.contains("failed")
            && l.contains("status 3")
            && l.contains(" 4 ")),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.contains("web") && l.contains("running")),
        "{status}"
    );

    let (code, logs, _) = ctl(&sock, &["logs", "cairn"]);
    assert_eq!(code, 0);
    let delays: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.split("service crash restarting in ").nth(1))
        .collect();
    assert_eq!(delays, ["0.100s", "0.200s", "0.400s", "0.400s"], "{logs}");
    assert!(
        logs.contains("service crash failed: 4 quick restarts in a row; giving up"),
        "{logs}"
    );
    let (_, crash_logs, _) = ctl(&sock, &["logs", "crash"]);
    assert_eq!(
        crash_logs.matches("crash: crashing").count(),
        5,
        "{crash_logs}"
    );

    let (code, json, _) = ctl(&sock, &["status", "--json"]);
    assert_eq!(code, 0);
    assert!(json.starts_with("{\"hostname\":"), "{json}");
    assert!(json.contains("\"name\":\"crash\",\"state\":\"failed\",\"pid\":null,\"restarts\":4,\"last_exit\":\"status 3\""), "{json}");

    // Garbage: an error reply, and the init carries on.
    let (code, _, err) = ctl(&sock, &["restart", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("no service nosuch"), "{err}");
    let (code, _, err) = ctl(&sock, &["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(&[0u8, 1, 2, 0xff, b'\n']).unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        assert!(r.starts_with("error: "), "{r}");
    }

    // restart: SIGTERM reaches the service, it stops, starts again.
    let (code, _, err) = ctl(&sock, &["restart", "web"]);
    assert_eq!(code, 0, "{err}");
    let end = Instant::now() + DEADLINE;
    loop {
        let (_, logs, _) = ctl(&sock, &["logs", "web"]);
        if logs.matches("web: web up").count() == 2 {
            assert!(logs.contains("web: got TERM"), "{logs}");
            break;
        }
        assert!(Instant::now() < end, "{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, _) = ctl(&sock, &["stop", "web"]);
    assert_eq!(code, 0);
    let end = Instant::now() + DEADLINE;
    loop {
        let (_, st, _) = ctl(&sock, &["status"]);
        if st
            .lines()
            .any(|l| l.contains("web") && l.contains("stopped"))
        {
            break;
        }
        assert!(Instant::now() < end, "web never stopped: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // start: a stopped service and a failed one really run again.
    let (code, _, err) = ctl(&sock, &["start", "web"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ctl(&sock, &["start", "crash"]);
    assert_eq!(code, 0, "{err}");
    let end = Instant::now() + DEADLINE;
    loop {
        let (_, web, _) = ctl(&sock, &["logs", "web"]);
        let (_, crash, _) = ctl(&sock, &["logs", "crash"]);
        let (_, st, _) = ctl(&sock, &["status"]);
        if web.matches("web: web up").count() == 3
            && crash.matches("crash: crashing").count() > 5
            && st
                .lines()
                .any(|l| l.contains("web") && l.contains("running"))
        {
            break;
        }
        assert!(Instant::now() < end, "{web}\n{crash}\n{st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, logs, _) = ctl(&sock, &["logs", "cairn"]);
    assert_eq!(
        logs.matches("service web started (pid ").count(),
        3,
        "{logs}"
    );

    let (code, _, _) = ctl(&sock, &["poweroff"]);
    assert_eq!(code, 0);
    let (st, lines, _) = run.finish();
    assert!(st.success(), "{}", lines.join("\n"));
}

/// `cairnctl logs -f SERVICE`: first what the ring holds, then new lines as
/// they come, only that service's; the follower ends when the init does.
#[test]
fn cairnctl_logs_follow_streams_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let cfg = write_config(
        dir.path(),
        r#"
name = "t"

[[service]]
name = "ticker"
exec = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"]

[[service]]
name = "other"
exec = ["/bin/sh", "-c", "while true; do echo other line; sleep 0.1; done"]
"#,
    );
    // Guarded: a failure below still stops the init (and so the follower).
    let mut run = start_with_control(&cfg, &sock);
    let end = Instant::now() + DEADLINE;
    while ctl(&sock, &["logs", "ticker"]).1.matches("tick ").count() < 3 {
        assert!(Instant::now() < end, "ticker never ticked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let link = dir.path().join("cairnctl");
    let mut follower = Command::new(&link)
        .args(["logs", "-f", "ticker"])
        .env("CAIRN_CONTROL", &sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Ticks keep coming well past the ring's content at connect time.
    let mut seen = Vec::new();
    let mut first = None;
    let mut last = 0u32;
    while last < first.unwrap_or(u32::MAX - 20) + 20 {
        let left = end.saturating_duration_since(Instant::now()) + Duration::from_secs(10);
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("follow stalled after:\n{}", seen.join("\n")));
        assert!(!line.contains("other"), "filter leaked: {line}");
        if let Some(n) = line.split("ticker: tick ").nth(1) {
            let n: u32 = n.trim().parse().unwrap();
            assert!(n > last, "out of order: {n} after {last}");
            first.get_or_insert(n);
            last = n;
        }
        seen.push(line);
    }
    assert_timestamped(&seen[0]);
    // The follower is still connected until the init goes away.
    assert!(follower.try_wait().unwrap().is_none());
    let (code, _, _) = ctl(&sock, &["poweroff"]);
    assert_eq!(code, 0);
    let end = Instant::now() + DEADLINE;
    loop {
        let a = run.child.try_wait().unwrap();
        let b = follower.try_wait().unwrap();
        if a.is_some() && b.is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = follower.kill();
            let _ = follower.wait();
            panic!("init or follower did not end after poweroff");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap();
}

/// Polls `f` every 50 ms until it gives a value; panics with `what` after
/// [`DEADLINE`].
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The init with a control socket at `sock`, its console read as in
/// [`Run::start`].
fn start_with_control(config: &Path, sock: &Path) -> Run {
    let mut cmd = init_command(config, "");
    cmd.env("CAIRN_CONTROL", sock);
    Run::spawn(cmd)
}

/// State letter and start time (clock ticks after boot) of `pid`, from
/// `/proc/PID/stat`; `None`: no such process.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE ...`: COMM may hold spaces and parentheses.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    // Field 22 of the line is the 20th after COMM.
    let start = f.get(19)?.parse().ok()?;
    Some((state, start))
}

/// A process the test did not start itself (a service's child), known by
/// pid and start time so that a reused pid is not taken for it. Killed by
/// pid on drop if it is still running (a failed test leaves nothing).
struct Proc {
    pid: i32,
    start: u64,
}

impl Proc {
    fn of(pid: i32) -> Proc {
        let (_, start) = proc_stat(pid).unwrap_or_else(|| panic!("no process {pid}"));
        Proc { pid, start }
    }

    /// Still there, the same process, and not a zombie (the init in test
    /// mode is a subreaper: a killed orphan is its zombie until reaped).
    fn running(&self) -> bool {
        matches!(proc_stat(self.pid), Some((state, start)) if start == self.start && state != 'Z')
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            if let Some(p) = rustix::process::Pid::from_raw(self.pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The pid in `service NAME started (pid N)`, the first such line.
fn started_pid(lines: &[String], name: &str) -> i32 {
    let needle = format!("service {name} started (pid ");
    let line = &lines[index_of(lines, &needle)];
    let tail = line.split(&needle).nth(1).unwrap();
    tail.trim_end_matches(')').parse().unwrap()
}

/// The time stamp of a console line, `[    1.234567] ...`.
fn stamp(line: &str) -> Duration {
    assert_timestamped(line);
    let (secs, micros) = line[1..13].trim().split_once('.').unwrap();
    Duration::from_secs(secs.parse().unwrap()) + Duration::from_micros(micros.parse().unwrap())
}

/// `cairnctl stop`: SIGTERM goes to the whole process group; once the
/// service's main process has ended, what is left of the group (here a
/// child that ignores SIGTERM) is killed, not left running.
#[test]
fn cairnctl_stop_kills_what_is_left_of_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let pidfile = dir.path().join("child.pid");
    // The stop timeout is far away: the main process ends on SIGTERM at
    // once, so only its end can be what kills the child.
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"
name = "t"
[[service]]
name = "parent"
exec = ["/bin/sh", "-c", "/bin/sh -c 'trap \"\" TERM; echo $$ > \"$PIDFILE\"; exec sleep 1000' & wait"]
env = {{ PIDFILE = "{}" }}
stop_timeout_ms = 60000
"#,
            pidfile.display()
        ),
    );
    let mut run = start_with_control(&cfg, &sock);
    let pid = wait_until("the child's pid file", || {
        let text = std::fs::read_to_string(&pidfile).ok()?;
        text.strip_suffix('\n')?.parse::<i32>().ok()
    });
    let child = Proc::of(pid);
    let (code, _, err) = ctl(&sock, &["stop", "parent"]);
    assert_eq!(code, 0, "{err}");
    run.wait_for("service parent stopped");
    wait_until("the child that ignores SIGTERM to be killed", || {
        (!child.running()).then_some(())
    });
    let (code, _, err) = ctl(&sock, &["poweroff"]);
    assert_eq!(code, 0, "{err}");
    let (status, lines, _) = run.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    let killed = index_of(
        &lines,
        "cairn: service parent: killed what was left of its process group",
    );
    let stopped = index_of(&lines, "cairn: service parent stopped (signal 15)");
    assert!(killed < stopped, "{all}");
    assert!(!all.contains("did not stop within"), "{all}");
}

/// A service that ignores SIGTERM is killed with SIGKILL once its
/// `stop_timeout` has passed; a `restart` that had to kill it still starts
/// it again.
#[test]
fn a_service_ignoring_sigterm_is_killed_after_its_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let cfg = write_config(
        dir.path(),
        r#"
name = "t"
[[service]]
name = "stubborn"
exec = ["/bin/sh", "-c", "trap '' TERM; echo ignoring TERM; exec sleep 1000"]
stop_timeout_ms = 300
"#,
    );
    let mut run = start_with_control(&cfg, &sock);
    run.wait_for("stubborn: ignoring TERM");
    let first = Proc::of(started_pid(&run.seen, "stubborn"));
    let (code, _, err) = ctl(&sock, &["stop", "stubborn"]);
    assert_eq!(code, 0, "{err}");
    run.wait_for("service stubborn stopped");
    assert!(!first.running());

    let (code, _, err) = ctl(&sock, &["start", "stubborn"]);
    assert_eq!(code, 0, "{err}");
    wait_until("stubborn to run again", || {
        let (_, st, _) = ctl(&sock, &["status"]);
        st.lines()
            .any(|l| l.contains("stubborn") && l.contains("running"))
            .then_some(())
    });
    let (code, _, err) = ctl(&sock, &["restart", "stubborn"]);
    assert_eq!(code, 0, "{err}");
    wait_until("stubborn to be restarted after the kill", || {
        let (_, logs, _) = ctl(&sock, &["logs", "cairn"]);
        (logs.matches("service stubborn started (pid ").count() == 3).then_some(())
    });
    let (code, _, err) = ctl(&sock, &["poweroff"]);
    assert_eq!(code, 0, "{err}");
    let (status, lines, _) = run.finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");

    let asked = index_of(&lines, "cairn: cairnctl: stop stubborn");
    let timeout = index_of(
        &lines,
        "cairn: service stubborn did not stop within 300ms; killing it with SIGKILL",
    );
    let stopped = index_of(&lines, "cairn: service stubborn stopped (signal 9)");
    assert!(asked < timeout && timeout < stopped, "{all}");
    // Not before the timeout.
    assert!(
        stamp(&lines[timeout]) - stamp(&lines[asked]) >= Duration::from_millis(300),
        "{all}"
    );
    // The restart went through the same kill.
    let restart = index_of(&lines, "cairn: cairnctl: restart stubborn");
    assert!(
        lines[restart..]
            .iter()
            .any(|l| l.contains("service stubborn did not stop within 300ms")),
        "{all}"
    );
}

/// `[log] console = "debug"` shows debug lines without `cairn.debug`; the
/// default level does not; `cairn.debug` shows them whatever the level.
#[test]
fn console_level_from_the_config_shows_debug_lines() {
    let run = |log: &str, cmdline: &str| -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(
            dir.path(),
            &format!(
                "name = \"t\"\n{log}\n[[service]]\nname = \"idle\"\nexec = [\"/bin/sh\", \"-c\", \"sleep 30\"]\n"
            ),
        );
        let mut run = Run::start(&cfg, cmdline);
        run.wait_for("cairn: ready");
        run.signal(rustix::process::Signal::TERM);
        let (status, lines, _) = run.finish();
        let all = lines.join("\n");
        assert!(status.success(), "{all}");
        index_of(&lines, "cairn: SIGTERM received: power off");
        lines
    };
    // The debug line for the signal.
    let shows_debug = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.ends_with("] cairn: received SIGTERM"))
    };
    let lines = run("[log]\nconsole = \"debug\"", "");
    assert!(shows_debug(&lines), "{}", lines.join("\n"));
    let lines = run("", "");
    assert!(!shows_debug(&lines), "{}", lines.join("\n"));
    let lines = run("[log]\nconsole = \"warn\"", "cairn.debug");
    assert!(shows_debug(&lines), "{}", lines.join("\n"));
}

/// A service runs in its `workdir`, reads end-of-file from stdin
/// (`/dev/null`, not the init's stdin), and what it writes to stderr is
/// logged line by line like its stdout, in order.
#[test]
fn service_workdir_stdin_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let work = work.canonicalize().unwrap();
    // What the service would read if it shared the init's stdin.
    let input = dir.path().join("input");
    std::fs::write(&input, "from the init's stdin\n").unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"
name = "t"
[[service]]
name = "io"
exec = ["/bin/sh", "-c", "pwd; if read x; then echo \"read: $x\"; else echo stdin-eof; fi; echo to-stderr >&2; echo after"]
workdir = "{}"
on_exit = "poweroff"
"#,
            work.display()
        ),
    );
    let mut cmd = init_command(&cfg, "");
    cmd.stdin(std::fs::File::open(&input).unwrap());
    let (status, lines, stdout) = Run::spawn(cmd).finish();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    let line = |text: &str| {
        lines
            .iter()
            .position(|l| l.ends_with(&format!("] io: {text}")))
            .unwrap_or_else(|| panic!("no line `io: {text}` in:\n{all}"))
    };
    let pwd = line(&work.display().to_string());
    let eof = line("stdin-eof");
    let err = line("to-stderr");
    let after = line("after");
    assert!(pwd < eof && eof < err && err < after, "{all}");
    assert!(!all.contains("read: "), "{all}");
    assert!(!stdout.contains("to-stderr"), "stdout: {stdout:?}");
    assert_eq!(all.matches("to-stderr").count(), 1, "{all}");
}

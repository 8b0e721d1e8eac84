//! One QEMU boot for what a service gets and what the console offers:
//! capabilities kept and dropped, rlimits, umask, cgroup memory/pids limits
//! (a fork bomb held at `pids_max`), a forking daemon's orphan reaped with
//! no zombie left, and the break-glass shell (wrong password refused and
//! the prompt locked for 3 s, the right one gives a shell with a
//! controlling tty while the log mirror is held, exit returns to the
//! console).

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use cairn_e2e::{cairn, qmp, Live};

const PASSWORD: &str = "correct horse";

const MANIFEST: &str = r#"
name = "probes"
hostname = "probes"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"
modules = ["evdev", "button"]

[[binary]]
path = "/bin/busybox"

[[user]]
name = "app"
uid = 1000

[shell]
exec = ["/bin/busybox", "sh"]
password_hash = 'HASH'

[[service]]
name = "capkeep"
user = "app"
capabilities = ["CAP_NET_BIND_SERVICE"]
exec = ["/bin/busybox", "sh", "-c", "/bin/busybox grep -E '^Cap(Eff|Amb|Bnd)' /proc/self/status"]

[[service]]
name = "capuser"
user = "app"
exec = ["/bin/busybox", "sh", "-c", "/bin/busybox grep -E '^Cap(Eff|Amb)' /proc/self/status"]

[[service]]
name = "capdrop"
capabilities = []
exec = ["/bin/busybox", "sh", "-c", "/bin/busybox grep -E '^Cap(Eff|Bnd)' /proc/self/status"]

[[service]]
name = "limits"
umask = "0027"
limits = { nofile = 64 }
exec = ["/bin/busybox", "sh", "-c", "echo nofile=$(ulimit -n) umask=$(umask)"]

[[service]]
name = "cg"
memory_max = "32M"
pids_max = 8
exec = ["/bin/busybox", "sh", "-c", "d=/sys/fs/cgroup/cairn/cg; read mm < $d/memory.max; read pm < $d/pids.max; echo memory.max=$mm pids.max=$pm; (for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/busybox sleep 5 & done) 2>/dev/null; read cur < $d/pids.current; read ev < $d/pids.events; echo pids.current=$cur $ev"]

[[service]]
name = "daemon"
exec = ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 3 & echo $! > /run/daemon.pid; echo daemon-forked"]

[[service]]
name = "zombies"
after = ["daemon"]
exec = ["/bin/busybox", "sh", "-c", "i=0; while [ ! -s /run/daemon.pid ] && [ $i -lt 30 ]; do /bin/busybox sleep 1; i=$((i+1)); done; p=$(/bin/busybox cat /run/daemon.pid); /bin/busybox sleep 9; if [ -e /proc/$p ]; then echo daemon-left $(/bin/busybox cat /proc/$p/stat); else echo daemon-reaped; fi; z=0; for f in /proc/[0-9]*/stat; do read -r pid comm st rest 2>/dev/null < $f && [ \"$st\" = Z ] && z=$((z+1)) && echo zombie $pid $comm; done; echo zombies=$z"]

[[service]]
name = "ticker"
exec = ["/bin/busybox", "sh", "-c", "while true; do echo tick; /bin/busybox sleep 1; done"]
"#;

fn hash_password(pw: &str) -> String {
    let mut c = cairn();
    c.arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().expect("cairn hash-password starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "cairn hash-password failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn pos(out: &str, needle: &str) -> usize {
    out.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{out}"))
}

/// The text after `SOURCE: ` on the first console line with it.
fn line_of<'a>(out: &'a str, prefix: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?}:\n{out}"));
    &line[line.find(prefix).unwrap() + prefix.len()..]
}

/// The timestamp (seconds) of a `[    1.234567] ...` line holding `needle`.
fn stamp(out: &str, needle: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}:\n{out}"));
    stamp_of(line).unwrap_or_else(|| panic!("no timestamp in {line:?}"))
}

fn stamp_of(line: &str) -> Option<f64> {
    let rest = &line[line.find('[')? + 1..];
    rest[..rest.find(']')?].trim().parse().ok()
}

#[test]
fn service_limits_reaping_and_break_glass_shell_in_qemu() {
    let (_dir, mut live, qmp_sock) = Live::manifest_with_qmp(
        &MANIFEST.replace("HASH", &hash_password(PASSWORD)),
        Duration::from_secs(400),
    );
    live.wait_for("zombies=", Duration::from_secs(240));
    live.wait_for("pids.current=", Duration::from_secs(60));

    // The shell: a wrong password locks the prompt; what is typed during
    // the lock is thrown away.
    live.send("shell\n");
    live.wait_for("Password: ", Duration::from_secs(30));
    live.send("wrong\n");
    live.wait_for("Wrong password. Wait 3s.", Duration::from_secs(60));
    // During the lock: the right password, then a command. Were either
    // kept, the password would open the shell and the command would run
    // in it, printing "typed-in-lock-2".
    live.send(&format!("{PASSWORD}\necho typed-in-lock-$((1+1))\n"));
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while live.output().matches("Password: ").count() < 2 {
        assert!(std::time::Instant::now() < end, "{}", live.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    live.send(&format!("{PASSWORD}\n"));
    // A shell with the console as its controlling tty (ttyS0 = 4:64).
    live.send("echo shell-$((40+2)) ctty-$(/bin/busybox cut -d' ' -f7 /proc/self/stat)\n");
    live.wait_for("shell-42 ctty-1088", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    live.send("exit\n");
    live.wait_for("cairn: shell: exited", Duration::from_secs(30));
    // The console is the init's again: Enter shows the status screen.
    live.send("\n");
    live.wait_for("[Enter: refresh", Duration::from_secs(30));
    live.send("q\n");
    std::thread::sleep(Duration::from_secs(1));
    qmp(&qmp_sock, "system_powerdown");
    let (o, exited) = live.finish(Duration::from_secs(120));
    assert!(exited, "QEMU did not power off:\n{o}");

    // Capabilities: kept (effective and ambient) for a non-root user...
    let eff = line_of(&o, "capkeep: CapEff:").trim();
    assert_eq!(eff, "0000000000000400", "{o}");
    assert_eq!(line_of(&o, "capkeep: CapAmb:").trim(), "0000000000000400");
    assert_eq!(line_of(&o, "capkeep: CapBnd:").trim(), "0000000000000400");
    // ...none for a non-root user without `capabilities`...
    assert_eq!(line_of(&o, "capuser: CapEff:").trim(), "0000000000000000");
    assert_eq!(line_of(&o, "capuser: CapAmb:").trim(), "0000000000000000");
    // ...and all dropped for root with `capabilities = []`.
    assert_eq!(line_of(&o, "capdrop: CapEff:").trim(), "0000000000000000");
    assert_eq!(line_of(&o, "capdrop: CapBnd:").trim(), "0000000000000000");
    // rlimits and umask.
    assert_eq!(line_of(&o, "limits: ").trim(), "nofile=64 umask=0027");
    // cgroup limits, and the fork bomb held at pids.max.
    assert_eq!(line_of(&o, "cg: memory.max=").trim(), "33554432 pids.max=8");
    let cg = line_of(&o, "cg: pids.current=");
    let mut words = cg.split_whitespace();
    let current: u32 = words.next().unwrap().parse().unwrap();
    assert!(current <= 8, "{cg}");
    assert_eq!(words.next(), Some("max"), "{cg}");
    let refused: u32 = words.next().unwrap().parse().unwrap();
    assert!(refused > 0, "no fork was refused: {cg}");
    // The daemon's orphan was reaped; no zombie anywhere.
    assert!(o.contains("daemon: daemon-forked"), "{o}");
    assert!(o.contains("zombies: daemon-reaped"), "{o}");
    assert!(o.contains("zombies: zombies=0"), "{o}");

    // The shell: the delay is in the log, and the right password typed
    // during the lock did not count.
    let wrong = stamp(
        &o,
        "cairn: shell: wrong password (1 in a row); next try in 3s",
    );
    let accepted = stamp(&o, "cairn: shell: password accepted");
    let exited_at = stamp(&o, "cairn: shell: exited");
    assert!(accepted - wrong >= 3.0, "accepted {accepted} after {wrong}");
    // While the shell ran, log lines were held, not printed over it: the
    // ticker's lines from that time come after the shell's output.
    let shell_out = pos(&o, "shell-42 ctty-1088");
    let held: Vec<usize> = o
        .lines()
        .filter(|l| l.contains("] ticker: tick"))
        .filter(|l| stamp_of(l).is_some_and(|t| t > accepted && t < exited_at))
        .map(|l| pos(&o, l))
        .collect();
    assert!(!held.is_empty(), "no ticker line while the shell ran:\n{o}");
    assert!(held.iter().all(|&p| p > shell_out), "{o}");
    assert!(o.contains("reboot: Power down"), "{o}");
    // What was typed during the lock never ran; the password, typed three
    // times, never appeared on the console (the prompt does not echo).
    assert!(
        !o.contains("typed-in-lock-2"),
        "typed during the lock and run:\n{o}"
    );
    assert!(!o.contains(PASSWORD), "the password was echoed:\n{o}");
}

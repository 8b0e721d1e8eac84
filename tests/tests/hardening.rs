//! A hostile service must not escape what the manifest gave it (issue 13),
//! in one QEMU boot on Debian's cloud kernel:
//! - a non-root service sees exactly fds 0-2, runs with no_new_privs and an
//!   empty capability bounding set, cannot read `/etc/cairn/system.json`,
//!   cannot use the control socket, and a setuid-root copy of a program
//!   gives it nothing (the kernel leaves its uid and capabilities alone);
//! - a root service whose manifest sets `capabilities = []` is refused by
//!   the control socket's credential check (`cairnctl poweroff` fails and
//!   the init logs the refusal), while a root service with its
//!   capabilities powers the machine off through `cairnctl`.

use std::time::Duration;

use cairn_e2e::{boot, test_load_bin};

fn manifest() -> String {
    let load = test_load_bin();
    let load = load.display();
    format!(
        r#"name = "hard"

[kernel]
package = "linux-image-cloud-amd64"
cmdline = "console=ttyS0 quiet panic=-1"

[[binary]]
path = "/bin/busybox"

[[file]]
src = "{load}"
dst = "/bin/suid-load"
mode = "4755"

[[user]]
name = "app"
uid = 1000

[[service]]
name = "probe"
user = "app"
exec = ["/bin/busybox", "sh", "-c", """
echo "FDS $(/bin/busybox ls /proc/self/fd | /bin/busybox tr '\n' ' ')"
/bin/busybox grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status | /bin/busybox sed 's/^/PROBE /'
if /bin/busybox cat /etc/cairn/system.json >/dev/null 2>&1; then echo SYSTEM-JSON-READ; else echo SYSTEM-JSON-DENIED; fi
if /usr/bin/cairnctl status >/dev/null 2>&1; then echo CTL-ALLOWED; else echo CTL-DENIED; fi
/bin/suid-load whoami
/bin/busybox touch /tmp/probe.done
"""]
restart = "never"

[[service]]
name = "rootless"
capabilities = []
exec = ["/bin/busybox", "sh", "-c", """
/usr/bin/cairnctl poweroff; echo "ROOTLESS-POWEROFF-RC $?"
/bin/busybox touch /tmp/rootless.done
"""]
restart = "never"

[[service]]
name = "ender"
exec = ["/bin/busybox", "sh", "-c", """
i=0
while [ $i -lt 180 ] && ! {{ [ -e /tmp/probe.done ] && [ -e /tmp/rootless.done ]; }}; do i=$((i+1)); /bin/busybox sleep 1; done
echo ENDER-POWEROFF; /usr/bin/cairnctl poweroff
"""]
restart = "never"
"#
    )
}

fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{out}"))
}

#[test]
fn a_hostile_service_gets_nothing_the_manifest_did_not_give() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(&path, manifest()).unwrap();
    let o = boot(
        &path,
        &dir.path().join("out"),
        &["--net", "none"],
        Duration::from_secs(300),
    );
    o.assert_ok();
    let out = &o.stdout;
    // Exactly 0, 1, 2 (and the fd `ls` opened to list the directory).
    assert!(
        line_with(out, "probe: FDS ").ends_with("FDS 0 1 2 3 "),
        "{out}"
    );
    assert!(
        line_with(out, "PROBE NoNewPrivs:").ends_with("\t1"),
        "{out}"
    );
    assert!(
        line_with(out, "PROBE CapBnd:").ends_with("0000000000000000"),
        "{out}"
    );
    line_with(out, "probe: SYSTEM-JSON-DENIED");
    line_with(out, "probe: CTL-DENIED");
    // The setuid bit took no effect: still uid 1000, no capabilities.
    assert!(
        line_with(out, "whoami Uid:").ends_with("Uid: 1000 1000 1000 1000"),
        "{out}"
    );
    assert!(
        line_with(out, "whoami CapEff:").ends_with("0000000000000000"),
        "{out}"
    );
    // Root without its capabilities: refused, and the refusal logged.
    line_with(out, "rootless: ROOTLESS-POWEROFF-RC 1");
    line_with(out, "cairnctl: permission denied");
    line_with(out, "control socket: refused pid");
    // Root with them: the power off is its, after everything else.
    let asked = out.find("ender: ENDER-POWEROFF").expect("ender ran");
    let off = out
        .find("cairn: cairnctl: power off")
        .expect("powered off by cairnctl");
    assert!(asked < off, "{out}");
    assert_eq!(
        out.matches("cairn: cairnctl: power off").count(),
        1,
        "{out}"
    );
    o.assert_in_order(&["cairn: cairnctl: power off", "cairn: powering off"]);
}

//! The status screen and `cairnctl status`: hostname, uptime, memory, each
//! service (state, pid, restarts, last exit), each `[[mount]]` (mounted from
//! which device, formatted, not found, or the error) and the IP addresses
//! of each interface (read-only, from a netlink `RTM_GETADDR` dump).
//!
//! On the console the log and the screen take turns: press Enter and the
//! status screen is shown while log lines are held in the ring; Enter
//! again refreshes it; `q` then Enter goes back to the log, first printing
//! what was held.

use std::fmt::Write as _;

use super::Snapshot;
use crate::disk::{MountState, MountStatus};
use crate::log;
use crate::procfs::{init_rss_kib, meminfo, read};

/// The console toggle.
#[derive(Debug, Default)]
pub struct Screen {
    shown: bool,
    line: Vec<u8>,
}

impl Screen {
    /// Console input; `snapshot` gives the state to draw (asked for once,
    /// at the first Enter). With `shell` (a break-glass shell is
    /// configured) the line `shell` stops here and the index of the byte
    /// after it is returned: the rest is the shell's.
    pub fn input(
        &mut self,
        data: &[u8],
        snapshot: impl FnOnce() -> Snapshot,
        shell: bool,
    ) -> Option<usize> {
        let mut snapshot = Some(snapshot);
        let mut screen = String::new();
        for (i, &b) in data.iter().enumerate() {
            if b != b'\n' && b != b'\r' {
                if self.line.len() < 64 {
                    self.line.push(b);
                }
                continue;
            }
            let word = String::from_utf8_lossy(&self.line).trim().to_string();
            self.line.clear();
            if shell && word == super::shell::WORD {
                self.shown = false;
                return Some(i + 1);
            }
            if self.shown && word == "q" {
                self.shown = false;
                log::resume_console();
                continue;
            }
            self.shown = true;
            log::pause_console();
            if let Some(f) = snapshot.take() {
                screen = render(&f());
            }
            let text = format!("\n{screen}[Enter: refresh, q Enter: back to the log]\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
        }
        None
    }
}

fn hhmmss(secs: u64) -> String {
    format!(
        "{}d {:02}:{:02}:{:02}",
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The status text.
pub fn render(snap: &Snapshot) -> String {
    let host = read("/proc/sys/kernel/hostname");
    let (total, avail) = meminfo(&read("/proc/meminfo"));
    let mut out = String::new();
    let _ = writeln!(out, "cairn status");
    let _ = writeln!(out, "hostname: {}", host.trim());
    let _ = writeln!(out, "uptime:   {}", hhmmss(log::boottime().as_secs()));
    let _ = writeln!(
        out,
        "memory:   {} MiB available of {} MiB, init RSS {} KiB",
        avail / 1024,
        total / 1024,
        init_rss_kib()
    );
    let _ = writeln!(out, "services:");
    let _ = writeln!(
        out,
        "  {:<16} {:<10} {:>7} {:>8}  last exit",
        "NAME", "STATE", "PID", "RESTARTS"
    );
    for r in &snap.services {
        let (name, state, restarts) = (&r.name, r.state, r.restarts);
        let pid = r.pid.map_or("-".into(), |p| p.to_string());
        let last = r.last_exit.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  {name:<16} {state:<10} {pid:>7} {restarts:>8}  {last}"
        );
    }
    out.push_str(&render_mounts(&snap.mounts));
    let update = read(crate::update::SUMMARY_PATH);
    if !update.trim().is_empty() {
        let _ = writeln!(out, "update:   {}", update.trim());
    }
    let _ = writeln!(out, "addresses:");
    match crate::net::rtnl::named_addresses() {
        Ok(list) if list.is_empty() => {
            let _ = writeln!(out, "  (none)");
        }
        Ok(list) => {
            for (ifname, addr, prefix) in list {
                let _ = writeln!(out, "  {ifname:<10} {addr}/{prefix}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  (cannot read: {e})");
        }
    }
    if let Some(net) = &snap.net {
        out.push_str(&net.render());
    }
    out
}

/// What a mount's state reads as on the screen.
fn mount_state_text(state: &MountState) -> String {
    match state {
        MountState::Mounted {
            dev,
            formatted: false,
        } => format!("mounted from {dev}"),
        MountState::Mounted {
            dev,
            formatted: true,
        } => format!("formatted (it was empty), mounted from {dev}"),
        MountState::NotFound { wait } => format!("not found after {wait}s"),
        MountState::Failed(e) => format!("failed: {e}"),
        MountState::Failing { dev, error } => format!("FAILING: I/O errors on {dev}: {error}"),
    }
}

/// The `mounts:` section: one row per `[[mount]]` (nothing without any).
pub fn render_mounts(mounts: &[MountStatus]) -> String {
    let mut out = String::new();
    if mounts.is_empty() {
        return out;
    }
    let _ = writeln!(out, "mounts:");
    let _ = writeln!(
        out,
        "  {:<16} {:<24} {:<8}  state",
        "PATH", "SOURCE", "REQUIRED"
    );
    for m in mounts {
        let _ = writeln!(
            out,
            "  {:<16} {:<24} {:<8}  {}",
            m.path,
            m.source,
            if m.required { "yes" } else { "no" },
            mount_state_text(&m.state)
        );
    }
    out
}

/// The `mounts` array of `cairnctl status --json`: `state` is `mounted`,
/// `formatted` (was empty, formatted and mounted), `not-found`, `failed`
/// or `failing` (mounted, then I/O errors); `device` is set when mounted,
/// `error` when not mounted or failing.
pub fn mounts_json(mounts: &[MountStatus]) -> String {
    let items: Vec<String> = mounts
        .iter()
        .map(|m| {
            let (state, device, error) = match &m.state {
                MountState::Mounted { dev, formatted } => (
                    if *formatted { "formatted" } else { "mounted" },
                    json_str(dev),
                    "null".to_string(),
                ),
                MountState::NotFound { .. } => (
                    "not-found",
                    "null".to_string(),
                    json_str(&mount_state_text(&m.state)),
                ),
                MountState::Failed(e) => ("failed", "null".to_string(), json_str(e)),
                MountState::Failing { dev, error } => ("failing", json_str(dev), json_str(error)),
            };
            format!(
                "{{\"path\":{},\"source\":{},\"required\":{},\"state\":{},\"device\":{device},\"error\":{error}}}",
                json_str(&m.path),
                json_str(&m.source),
                m.required,
                json_str(state)
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// What the update agent last published (a JSON object), or `null`;
/// checked to be JSON before it goes into ours.
fn update_json() -> String {
    let text = read(crate::update::STATUS_PATH);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if v.is_object() && text.len() < 16 * 1024 => text.trim().to_string(),
        _ => "null".into(),
    }
}

/// `cairnctl status --json`: one object.
pub fn json(snap: &Snapshot) -> String {
    let (total, avail) = meminfo(&read("/proc/meminfo"));
    let services: Vec<String> = snap
        .services
        .iter()
        .map(|r| {
            format!(
                "{{\"name\":{},\"state\":{},\"pid\":{},\"restarts\":{},\"last_exit\":{}}}",
                json_str(&r.name),
                json_str(r.state),
                r.pid.map_or("null".into(), |p| p.to_string()),
                r.restarts,
                r.last_exit.as_deref().map_or("null".into(), json_str)
            )
        })
        .collect();
    let addrs: Vec<String> = crate::net::rtnl::named_addresses()
        .unwrap_or_default()
        .into_iter()
        .map(|(i, a, p)| {
            format!(
                "{{\"interface\":{},\"address\":{},\"prefix\":{p}}}",
                json_str(&i),
                json_str(&a.to_string())
            )
        })
        .collect();
    format!(
        "{{\"hostname\":{},\"uptime_s\":{},\"mem_total_kib\":{total},\"mem_available_kib\":{avail},\"init_rss_kib\":{},\"services\":[{}],\"mounts\":{},\"addresses\":[{}],\"network\":{},\"update\":{}}}\n",
        json_str(read("/proc/sys/kernel/hostname").trim()),
        log::boottime().as_secs(),
        init_rss_kib(),
        services.join(","),
        mounts_json(&snap.mounts),
        addrs.join(","),
        snap.net.as_ref().map_or("null".to_string(), |n| n.json()),
        update_json()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_section_and_json() {
        let status = |path: &str, source: &str, required, state| MountStatus {
            path: path.into(),
            source: source.into(),
            required,
            state,
        };
        let mounts = [
            status(
                "/config",
                "LABEL=CONFIG",
                true,
                MountState::Mounted {
                    dev: "/dev/vda2".into(),
                    formatted: false,
                },
            ),
            status(
                "/data",
                "PARTLABEL=DATA",
                true,
                MountState::Mounted {
                    dev: "/dev/vda3".into(),
                    formatted: true,
                },
            ),
            status(
                "/nope",
                "LABEL=NOPE",
                false,
                MountState::NotFound { wait: 1 },
            ),
            status(
                "/bad",
                "UUID=1234-ABCD",
                false,
                MountState::Failed("mounting /dev/vda4 failed: \"EINVAL\"".into()),
            ),
        ];
        let text = render_mounts(&mounts);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(lines[0], "mounts:");
        let row = |i: usize, words: &[&str]| {
            let got: Vec<&str> = lines[i].split_whitespace().collect();
            assert_eq!(got, words, "{text}");
        };
        row(1, &["PATH", "SOURCE", "REQUIRED", "state"]);
        row(
            2,
            &[
                "/config",
                "LABEL=CONFIG",
                "yes",
                "mounted",
                "from",
                "/dev/vda2",
            ],
        );
        row(
            3,
            &[
                "/data",
                "PARTLABEL=DATA",
                "yes",
                "formatted",
                "(it",
                "was",
                "empty),",
                "mounted",
                "from",
                "/dev/vda3",
            ],
        );
        row(
            4,
            &["/nope", "LABEL=NOPE", "no", "not", "found", "after", "1s"],
        );
        assert!(
            lines[5].ends_with("failed: mounting /dev/vda4 failed: \"EINVAL\""),
            "{text}"
        );
        // Nothing to show without [[mount]]s.
        assert_eq!(render_mounts(&[]), "");
        assert_eq!(mounts_json(&[]), "[]");
        assert_eq!(
            mounts_json(&mounts),
            concat!(
                "[{\"path\":\"/config\",\"source\":\"LABEL=CONFIG\",\"required\":true,",
                "\"state\":\"mounted\",\"device\":\"/dev/vda2\",\"error\":null},",
                "{\"path\":\"/data\",\"source\":\"PARTLABEL=DATA\",\"required\":true,",
                "\"state\":\"formatted\",\"device\":\"/dev/vda3\",\"error\":null},",
                "{\"path\":\"/nope\",\"source\":\"LABEL=NOPE\",\"required\":false,",
                "\"state\":\"not-found\",\"device\":null,\"error\":\"not found after 1s\"},",
                "{\"path\":\"/bad\",\"source\":\"UUID=1234-ABCD\",\"required\":false,",
                "\"state\":\"failed\",\"device\":null,",
                "\"error\":\"mounting /dev/vda4 failed: \\\"EINVAL\\\"\"}]"
            )
        );
    }

    #[test]
    fn json_strings_and_uptime() {
        assert_eq!(json_str("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
        assert_eq!(hhmmss(90061), "1d 01:01:01");
    }
}

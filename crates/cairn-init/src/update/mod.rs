//! The update agent: the init binary run as `cairn-update`, a supervised
//! helper process (so PID 1 gains no network client, no crypto and no
//! blocking I/O). It polls the `[update] url` repository, verifies the
//! signed metadata against the keys baked into the image, writes a newer
//! UKI into the inactive slot of the ESP and tries it once with
//! `BootNext`; on that trial boot it arms the watchdog and runs the
//! health check, then commits (`BootOrder`, `BOOTX64.EFI`) or records the
//! version as bad and reboots into the old slot. A rollback is reported
//! on every boot until the next successful update.
//!
//! State lives on the ESP in `EFI/cairn/state.json` (written through a
//! temporary file and a rename); what the agent is doing is in
//! [`STATUS_PATH`] (for `cairnctl status`) and it answers `cairnctl
//! update check|now|status` on [`SOCKET_PATH`].

#![forbid(unsafe_code)]

pub mod dns;
pub mod efi;
pub mod http;
pub mod node;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cairn_manifest::release::{self, Release};
use cairn_manifest::runtime::{UpdateConfig, ESP_MOUNT, METADATA_FILE};
use cairn_manifest::{SystemConfig, SYSTEM_CONFIG_PATH};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// What the agent is doing, as JSON (read by `cairnctl status`).
pub const STATUS_PATH: &str = "/run/cairn/update.json";
/// The same in one line, for the status screen.
pub const SUMMARY_PATH: &str = "/run/cairn/update.txt";
/// `cairnctl update ...` talks to the agent here.
pub const SOCKET_PATH: &str = "/run/cairn/update.sock";

fn slot_dir() -> PathBuf {
    Path::new(ESP_MOUNT).join("EFI/cairn")
}

fn other(slot: char) -> char {
    if slot == 'A' {
        'B'
    } else {
        'A'
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bad {
    pub version: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trial {
    pub slot: char,
    pub version: u64,
    /// Set by the new image when its agent starts.
    pub started: bool,
}

/// `EFI/cairn/state.json` on the ESP.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub committed: char,
    /// The version each slot holds, where known.
    #[serde(default)]
    pub versions: BTreeMap<char, u64>,
    #[serde(default)]
    pub trial: Option<Trial>,
    #[serde(default)]
    pub bad: Vec<Bad>,
    #[serde(default)]
    pub rolled_back: Option<Bad>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Status {
    version: u64,
    slot: String,
    state: String,
    available: Option<u64>,
    last_check: Option<String>,
    last_error: Option<String>,
    failures: u32,
    next_check_s: Option<u64>,
    rolled_back: Option<Bad>,
    bad: Vec<Bad>,
}

/// Flushes the whole filesystem holding `dir` (`syncfs`). An fsync of
/// the directory is not enough on vfat: a QEMU killed a second after a
/// rename over BOOTX64.EFI (with the file and its directory fsynced) left
/// the old directory entry pointing at clusters already freed in the FAT.
/// `syncfs` writes the FAT and every directory block out together.
fn fsync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
        let _ = rustix::fs::syncfs(&d);
    }
}

/// Writes `bytes` to `path` via `path.tmp`, fsync and rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        fsync_dir(d);
    }
    Ok(())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A pseudo-random number from the clock's nanoseconds (jitter only).
fn jitter(max: u64) -> u64 {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ (d.as_secs() * 2654435761))
        .unwrap_or(0);
    if max == 0 {
        0
    } else {
        n % max
    }
}

fn say(msg: &str) {
    println!("update: {msg}");
    let _ = std::io::stdout().flush();
}

/// One request to the init's control socket; the reply body.
pub(crate) fn ctl(request: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(crate::console::ctl::SOCKET_PATH)
        .map_err(|e| format!("control socket: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    match out.split_once('\n') {
        Some(("ok", body)) => Ok(body.to_string()),
        _ => Err(out.trim().to_string()),
    }
}

struct Agent {
    name: String,
    cfg: UpdateConfig,
    /// The repository's host (an IPv4 address or a name) and port.
    host: String,
    port: u16,
    path: String,
    state: State,
    booted: char,
    status: Arc<Mutex<Status>>,
    /// `test_hooks = true` in the manifest: [`Agent::test_hold`] obeys.
    hooks: bool,
}

impl Agent {
    fn save(&self) {
        let text = serde_json::to_string_pretty(&self.state).unwrap_or_default();
        if let Err(e) = write_atomic(&slot_dir().join("state.json"), text.as_bytes()) {
            say(&format!("cannot save state on the ESP: {e}"));
        }
    }

    fn publish_status(&self, f: impl FnOnce(&mut Status)) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st);
        st.rolled_back = self.state.rolled_back.clone();
        st.bad = self.state.bad.clone();
        let json = serde_json::to_string(&*st).unwrap_or_default();
        let _ = write_atomic(Path::new(STATUS_PATH), json.as_bytes());
        let mut line = format!("version {} (slot {}), {}", st.version, st.slot, st.state);
        if let Some(r) = &st.rolled_back {
            line.push_str(&format!(
                "; rolled back from version {}: {}",
                r.version, r.reason
            ));
        }
        if let Some(e) = &st.last_error {
            line.push_str(&format!("; last error: {e}"));
        }
        let _ = write_atomic(Path::new(SUMMARY_PATH), format!("{line}\n").as_bytes());
    }

    /// Test hook (images with `test_hooks = true` only): when the ESP
    /// holds `EFI/cairn/test-hold` naming `point`, the agent stops there
    /// for good, so the power-cut test can cut exactly between two steps.
    fn test_hold(&self, point: &str) {
        if !self.hooks {
            return;
        }
        let Ok(want) = std::fs::read_to_string(slot_dir().join("test-hold")) else {
            return;
        };
        if want.trim() == point {
            say(&format!("test hook: holding before {point}"));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    fn set_state(&self, s: &str) {
        self.publish_status(|st| st.state = s.to_string());
    }

    /// Both slots' `Boot####` entries exist and are in `BootOrder`
    /// (the committed one first when they were missing).
    fn ensure_entries(&self) -> Result<(), String> {
        let esp = self
            .cfg
            .esp
            .as_ref()
            .ok_or("the image names no ESP location")?;
        for slot in ['A', 'B'] {
            let name = efi::entry_name(efi::slot_entry(slot));
            let want = efi::load_option(slot, esp).ok_or("bad ESP GUID")?;
            let have = efi::read(&name).map_err(|e| format!("read {name}: {e}"))?;
            if have.as_deref() != Some(&want[..]) {
                efi::write(&name, &want).map_err(|e| format!("write {name}: {e}"))?;
            }
        }
        let order = efi::boot_order().map_err(|e| format!("read BootOrder: {e}"))?;
        let (a, b) = (efi::slot_entry('A'), efi::slot_entry('B'));
        if !order.contains(&a) || !order.contains(&b) {
            let c = self.state.committed;
            let new = efi::reordered(&order, efi::slot_entry(c), efi::slot_entry(other(c)));
            efi::set_boot_order(&new).map_err(|e| format!("write BootOrder: {e}"))?;
        }
        Ok(())
    }

    fn record_bad(&mut self, version: u64, reason: String) {
        self.state.bad.retain(|b| b.version != version);
        self.state.bad.push(Bad {
            version,
            reason: reason.clone(),
        });
        self.state.rolled_back = Some(Bad { version, reason });
        self.state.trial = None;
        self.save();
    }

    /// The trial boot of a new image: watchdog, health check, then commit
    /// or roll back.
    fn trial(&mut self) {
        let version = self.cfg.version;
        let slot = self.booted;
        self.state.trial = Some(Trial {
            slot,
            version,
            started: true,
        });
        self.save();
        self.set_state("trial: health check");
        let h = &self.cfg.health;
        say(&format!(
            "trial boot of version {version} (slot {slot}): health check: services [{}] up for {} s{}",
            h.services.join(" "),
            h.for_s,
            if h.network { ", network-online" } else { "" }
        ));
        let mut wd = self.cfg.watchdog.as_ref().and_then(|w| {
            match std::fs::OpenOptions::new().write(true).open(&w.device) {
                Ok(f) => {
                    let took = crate::sys::watchdog::set_timeout(&f, w.timeout_s as u32);
                    say(&format!(
                        "watchdog {} armed ({})",
                        w.device,
                        took.map_or_else(|e| format!("timeout not set: {e}"), |t| format!("{t} s"))
                    ));
                    Some(f)
                }
                Err(e) => {
                    say(&format!(
                        "watchdog {}: {e}; trial runs without it",
                        w.device
                    ));
                    None
                }
            }
        });
        match self.health(&mut wd) {
            Ok(()) => {
                if let Err(e) = self.commit() {
                    say(&format!("commit of version {version} failed: {e}"));
                }
                if let Some(mut f) = wd.take() {
                    // The magic close: the watchdog stops with the file.
                    let _ = f.write_all(b"V");
                }
            }
            Err(reason) => {
                say(&format!(
                    "version {version} failed its health check: {reason}; rolling back to slot {}",
                    self.state.committed
                ));
                self.record_bad(version, reason);
                self.set_state("rolling back");
                if let Err(e) = ctl("reboot") {
                    say(&format!("reboot request failed: {e}"));
                }
                // The watchdog (left armed) resets a reboot that hangs.
                loop {
                    if let Some(f) = wd.as_mut() {
                        let _ = f.write_all(b"\0");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn health(&self, wd: &mut Option<std::fs::File>) -> Result<(), String> {
        let h = &self.cfg.health;
        let want = Duration::from_secs(h.for_s);
        let deadline = Instant::now() + want + Duration::from_secs(180);
        let mut window: Option<Instant> = None;
        let mut pids: BTreeMap<String, i64> = BTreeMap::new();
        let mut why = String::from("no status yet");
        loop {
            if let Some(f) = wd.as_mut() {
                let _ = f.write_all(b"\0");
            }
            let ok = match ctl("status --json").and_then(|t| {
                serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string())
            }) {
                Err(e) => {
                    why = format!("status unavailable: {e}");
                    false
                }
                Ok(v) => healthy(h, &v, &mut pids, &mut why)?,
            };
            let now = Instant::now();
            if ok {
                let since = *window.get_or_insert(now);
                if now.duration_since(since) >= want {
                    return Ok(());
                }
            } else {
                window = None;
                if now > deadline {
                    return Err(why);
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn commit(&mut self) -> Result<(), String> {
        let slot = self.booted;
        let order = efi::boot_order().map_err(|e| format!("read BootOrder: {e}"))?;
        let new = efi::reordered(&order, efi::slot_entry(slot), efi::slot_entry(other(slot)));
        efi::set_boot_order(&new).map_err(|e| format!("write BootOrder: {e}"))?;
        let img = std::fs::read(slot_dir().join(format!("{slot}.efi")))
            .map_err(|e| format!("read slot {slot}: {e}"))?;
        let fallback = Path::new(ESP_MOUNT).join("EFI/BOOT/BOOTX64.EFI");
        write_atomic(&fallback, &img).map_err(|e| format!("refresh BOOTX64.EFI: {e}"))?;
        self.state.committed = slot;
        self.state.versions.insert(slot, self.cfg.version);
        self.state.trial = None;
        self.state.rolled_back = None;
        self.save();
        say(&format!(
            "version {} passed its health check and is committed (slot {slot})",
            self.cfg.version
        ));
        self.set_state("idle");
        Ok(())
    }

    /// Fetches and checks the metadata; with `install`, takes a newer
    /// release (which reboots).
    fn check(&mut self, install: bool) -> Result<String, String> {
        self.set_state("checking");
        let mut md = Vec::new();
        http::get_from(
            &self.host,
            self.port,
            &format!("{}{METADATA_FILE}", self.path),
            release::METADATA_MAX as u64,
            &mut md,
        )?;
        let rel = release::verify(
            &md,
            &self.cfg.keys,
            &self.name,
            self.cfg.version,
            now_unix(),
        )
        .map_err(|e| format!("metadata refused: {e}"))?;
        if let Some(b) = self.state.bad.iter().find(|b| b.version == rel.version) {
            return Ok(format!(
                "version {} is recorded as bad ({}); not taken",
                rel.version, b.reason
            ));
        }
        self.publish_status(|st| st.available = Some(rel.version));
        if !install {
            return Ok(format!("version {} is available", rel.version));
        }
        self.install(&rel)?;
        Ok(format!(
            "version {} installed; rebooting to try it",
            rel.version
        ))
    }

    fn install(&mut self, rel: &Release) -> Result<(), String> {
        if rel.file.is_empty()
            || rel.file.contains(['/', '\\', '?', '#', ' '])
            || rel.file.starts_with('.')
        {
            return Err(format!("metadata names a bad file {:?}", rel.file));
        }
        let target = other(self.state.committed);
        let dir = slot_dir();
        let tmp = dir.join(format!("{target}.tmp"));
        say(&format!(
            "downloading version {} ({} bytes) into slot {target}",
            rel.version, rel.size
        ));
        self.set_state("downloading");
        struct Hashing(std::fs::File, sha2::Sha256);
        impl Write for Hashing {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let n = self.0.write(b)?;
                self.1.update(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.0.flush()
            }
        }
        let f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut w = Hashing(f, sha2::Sha256::new());
        let fail = |msg: String| {
            let _ = std::fs::remove_file(&tmp);
            msg
        };
        let got = http::get_from(
            &self.host,
            self.port,
            &format!("{}{}", self.path, rel.file),
            rel.size,
            &mut w,
        )
        .map_err(fail)?;
        w.0.sync_all().map_err(|e| fail(format!("fsync: {e}")))?;
        let hash = release::hex(&w.1.finalize());
        if got != rel.size || hash != rel.sha256 {
            return Err(fail(format!(
                "download of version {} refused: {got} bytes with sha256 {hash}, expected {} bytes with {}",
                rel.version, rel.size, rel.sha256
            )));
        }
        self.test_hold("rename");
        std::fs::rename(&tmp, dir.join(format!("{target}.efi")))
            .map_err(|e| fail(format!("rename into slot {target}: {e}")))?;
        fsync_dir(&dir);
        self.state.versions.insert(target, rel.version);
        self.save();
        self.ensure_entries()?;
        self.test_hold("bootnext");
        efi::set_boot_next(efi::slot_entry(target)).map_err(|e| format!("write BootNext: {e}"))?;
        self.state.trial = Some(Trial {
            slot: target,
            version: rel.version,
            started: false,
        });
        self.save();
        say(&format!(
            "version {} written to slot {target} (sha256 {hash}); rebooting to try it",
            rel.version
        ));
        self.set_state("rebooting into the new version");
        ctl("reboot").map(|_| ())
    }
}

/// One look at the status: `Ok(true)` all good, `Ok(false)` not yet
/// (`why` says what), `Err` failed for good.
fn healthy(
    h: &cairn_manifest::runtime::HealthConfig,
    v: &serde_json::Value,
    pids: &mut BTreeMap<String, i64>,
    why: &mut String,
) -> Result<bool, String> {
    let services = v["services"].as_array().cloned().unwrap_or_default();
    let mut ok = true;
    for name in &h.services {
        let Some(s) = services.iter().find(|s| s["name"] == name.as_str()) else {
            return Err(format!("service {name} is not running in this image"));
        };
        let state = s["state"].as_str().unwrap_or("?");
        let last = s["last_exit"].as_str().unwrap_or("-").to_string();
        if s["restarts"].as_u64().unwrap_or(0) > 0 || matches!(state, "stopped" | "failed") {
            return Err(format!("service {name} exited ({last})"));
        }
        if state != "running" {
            *why = format!("service {name} is {state}");
            ok = false;
            continue;
        }
        let pid = s["pid"].as_i64().unwrap_or(0);
        if *pids.entry(name.clone()).or_insert(pid) != pid {
            return Err(format!("service {name} was restarted ({last})"));
        }
    }
    if h.network && v["network"]["online"] != true {
        // The first unmet condition is the reason given.
        if ok {
            *why = "network-online was not reached".into();
        }
        ok = false;
    }
    Ok(ok)
}

fn serve(
    listener: UnixListener,
    status: Arc<Mutex<Status>>,
    tx: mpsc::Sender<(bool, mpsc::Sender<Result<String, String>>)>,
) {
    for s in listener.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let _ = BufReader::new(&s).take(256).read_line(&mut line);
        let reply = match line.trim() {
            "status" => {
                let st = status.lock().unwrap_or_else(|p| p.into_inner());
                Ok(serde_json::to_string_pretty(&*st).unwrap_or_default())
            }
            w @ ("check" | "now") => {
                let (rtx, rrx) = mpsc::channel();
                if tx.send((w == "now", rtx)).is_err() {
                    Err("the agent is not polling".to_string())
                } else {
                    rrx.recv_timeout(Duration::from_secs(900))
                        .unwrap_or_else(|_| Err("no answer from the agent".into()))
                }
            }
            other => Err(format!(
                "unknown update request {other:?}; expected check, now or status"
            )),
        };
        let _ = match reply {
            Ok(body) => s.write_all(format!("ok\n{body}\n").as_bytes()),
            Err(e) => s.write_all(format!("error: {e}\n").as_bytes()),
        };
    }
}

fn idle_forever(why: &str) -> ! {
    say(why);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The image's runtime config, for the helper `who`; `None` after
/// saying why not.
pub(crate) fn system_config(who: &str) -> Option<SystemConfig> {
    std::fs::read_to_string(SYSTEM_CONFIG_PATH)
        .map_err(|e| e.to_string())
        .and_then(|t| SystemConfig::from_json(&t).map_err(|e| e.to_string()))
        .map_err(|e| eprintln!("{who}: {SYSTEM_CONFIG_PATH}: {e}"))
        .ok()
}

/// `cairn-update`: the agent's entry point; returns only on bad setup.
pub fn main() -> i32 {
    let Some(sys) = system_config("cairn-update") else {
        return 1;
    };
    let Some(cfg) = sys.update else {
        idle_forever("this image has no [update]; nothing to do");
    };
    let Some((host, port, path)) = cairn_manifest::update::parse_http_url(&cfg.url) else {
        idle_forever(&format!("bad url {}", cfg.url));
    };
    if !Path::new(efi::EFIVARS).is_dir() {
        idle_forever("not booted by UEFI (no efivars); updates are off");
    }
    let _ = rustix::mount::mount(
        "efivarfs",
        efi::EFIVARS,
        "efivarfs",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        None,
    );
    if !slot_dir().is_dir() {
        idle_forever(&format!(
            "no A/B slots at {} (ESP not mounted?); updates are off",
            slot_dir().display()
        ));
    }
    // Leftovers of a download or a state write cut short.
    if let Ok(rd) = std::fs::read_dir(slot_dir()) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                say(&format!("removing the unfinished {}", e.path().display()));
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let state = std::fs::read(slot_dir().join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<State>(&t).ok())
        .unwrap_or_else(|| State {
            committed: 'A',
            versions: BTreeMap::from([('A', cfg.version)]),
            trial: None,
            bad: Vec::new(),
            rolled_back: None,
        });
    let current = efi::boot_current().ok().flatten();
    let booted = current.and_then(efi::entry_slot).unwrap_or(state.committed);
    let status = Arc::new(Mutex::new(Status {
        version: cfg.version,
        slot: booted.to_string(),
        ..Status::default()
    }));
    let mut agent = Agent {
        name: sys.name,
        cfg,
        host,
        port,
        path,
        state,
        booted,
        status: status.clone(),
        hooks: sys.test_hooks,
    };
    say(&format!(
        "running version {} from slot {booted} (committed: slot {}, BootCurrent {})",
        agent.cfg.version,
        agent.state.committed,
        current.map_or("unknown".into(), |c| format!("{c:04X}"))
    ));
    if let Err(e) = agent.ensure_entries() {
        say(&format!("boot entries: {e}"));
    }
    if booted != agent.state.committed {
        agent.trial();
    } else if let Some(t) = agent.state.trial.clone() {
        let reason = if t.started {
            "it was reset before passing its health check (watchdog, crash or power loss)"
        } else {
            "it never started (refused by the firmware, or hung before its update agent ran)"
        };
        agent.record_bad(t.version, reason.into());
    }
    if let Some(r) = &agent.state.rolled_back {
        say(&format!(
            "rolled back from version {}: {}",
            r.version, r.reason
        ));
    }
    agent.set_state("idle");

    let _ = std::fs::remove_file(SOCKET_PATH);
    let (tx, rx) = mpsc::channel();
    match UnixListener::bind(SOCKET_PATH) {
        Ok(l) => {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(SOCKET_PATH, std::fs::Permissions::from_mode(0o600));
            std::thread::spawn(move || serve(l, status, tx));
        }
        Err(e) => say(&format!(
            "{SOCKET_PATH}: {e}; cairnctl update is unavailable"
        )),
    }
    let interval = agent.cfg.interval_s.max(1);
    let mut failures = 0u32;
    let mut wait = 2 + jitter(interval.min(30));
    loop {
        agent.publish_status(|st| st.next_check_s = Some(wait));
        let (install, reply) = match rx.recv_timeout(Duration::from_secs(wait)) {
            Ok((install, reply)) => (install, Some(reply)),
            Err(mpsc::RecvTimeoutError::Timeout) => (true, None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_secs(wait));
                (true, None)
            }
        };
        let result = agent.check(install);
        let when = format!("{} (Unix)", now_unix());
        match &result {
            Ok(msg) => {
                failures = 0;
                say(msg);
                agent.publish_status(|st| {
                    st.state = "idle".into();
                    st.last_check = Some(when);
                    st.last_error = None;
                    st.failures = 0;
                });
                wait = interval - interval / 10 + jitter(interval / 5 + 1);
            }
            Err(e) => {
                failures += 1;
                say(&format!("check failed ({failures} in a row): {e}"));
                agent.publish_status(|st| {
                    st.state = "idle".into();
                    st.last_check = Some(when);
                    st.last_error = Some(e.clone());
                    st.failures = failures;
                });
                // Backoff: 10 s doubling, at most the interval.
                wait = (10u64 << failures.min(16)).min(interval) + jitter(5);
            }
        }
        if let Some(r) = reply {
            let _ = r.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_manifest::runtime::HealthConfig;

    fn status(state: &str, pid: i64, restarts: u64, online: bool) -> serde_json::Value {
        let last = if restarts > 0 { "status 3" } else { "-" };
        serde_json::json!({
            "services": [{"name": "app", "state": state, "pid": pid, "restarts": restarts,
                          "last_exit": last}],
            "network": {"online": online}
        })
    }

    #[test]
    fn health_checks() {
        let h = HealthConfig {
            services: vec!["app".into()],
            for_s: 5,
            network: true,
        };
        let mut pids = BTreeMap::new();
        let mut why = String::new();
        let mut look = |h: &HealthConfig, v, pids: &mut BTreeMap<String, i64>| {
            healthy(h, &v, pids, &mut why).map(|ok| (ok, why.clone()))
        };
        assert_eq!(
            look(&h, status("waiting", 0, 0, false), &mut pids),
            Ok((false, "service app is waiting".into()))
        );
        assert_eq!(
            look(&h, status("running", 7, 0, false), &mut pids),
            Ok((false, "network-online was not reached".into()))
        );
        assert_eq!(
            look(&h, status("running", 7, 0, true), &mut pids).map(|r| r.0),
            Ok(true)
        );
        assert_eq!(
            look(&h, status("running", 9, 0, true), &mut pids),
            Err("service app was restarted (-)".into())
        );
        let mut fresh = BTreeMap::new();
        assert_eq!(
            look(&h, status("backoff", 0, 1, true), &mut fresh),
            Err("service app exited (status 3)".into())
        );
        let other = HealthConfig {
            services: vec!["db".into()],
            ..h
        };
        assert!(look(&other, status("running", 7, 0, true), &mut fresh).is_err());
    }
}

//! Networking end to end: QEMU guests against real servers. Each server
//! runs in a network namespace of its own with a tap device (unique names
//! per test and process), started and stopped by the test, every process
//! ended by pid. The guest's view is read from the init's log lines and
//! from services that print files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_e2e::{cairn, root};

/// A guest booted with `cairn run`, its console collected as it comes.
struct Guest {
    child: Child,
    console: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Guest {
    /// `prefix` runs the command inside a namespace (`ip netns exec NS`).
    fn start(prefix: &[&str], manifest: &str, out: &str, extra: &[String]) -> Guest {
        let base = cairn();
        let mut cmd = if prefix.is_empty() {
            base
        } else {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(base.get_program());
            for (k, v) in base.get_envs() {
                if let Some(v) = v {
                    c.env(k, v);
                }
            }
            c.current_dir(root());
            c
        };
        cmd.args([
            "run",
            manifest,
            "-o",
            out,
            "--timeout",
            "240",
            "--net",
            "none",
            "--",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cairn run starts");
        let console = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let console = console.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut c = console.lock().unwrap();
                    c.push_str(&line);
                    c.push('\n');
                }
            }));
        }
        Guest {
            child,
            console,
            readers,
        }
    }

    fn text(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits until the console has `needle` after byte `from`; returns the
    /// offset just past it. Panics with the console on timeout.
    fn wait_from(&self, from: usize, needle: &str, secs: u64) -> usize {
        let start = Instant::now();
        loop {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
                return from + i + needle.len();
            }
            if start.elapsed() > Duration::from_secs(secs) {
                panic!("{needle:?} did not appear within {secs}s\n--- console ---\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait(&self, needle: &str, secs: u64) -> usize {
        self.wait_from(0, needle, secs)
    }

    /// The line holding `needle` (after `from`).
    fn line_with(&self, from: usize, needle: &str) -> String {
        let text = self.text();
        text[from..]
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    }

    /// Waits for the guest to power off by itself.
    fn wait_exit(&mut self, secs: u64) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Everything printed before the exit is in the console.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

/// Pids of the children of `pid` (QEMU under `cairn run`).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn kill(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}

impl Drop for Guest {
    fn drop(&mut self) {
        // QEMU first (by pid), then cairn itself.
        for c in children(self.child.id()) {
            kill(c);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace with `tap0` for QEMU; deleted (with everything in
/// it) on drop, after the processes started in it are killed by pid.
struct Netns {
    name: String,
    procs: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn new(tag: &str, v4: &str, v6: Option<&str>) -> Netns {
        let name = format!("cairn-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            procs: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.ip(&["addr", "add", v4, "dev", "tap0"]);
        if let Some(v6) = v6 {
            ns.ip(&["-6", "addr", "add", v6, "dev", "tap0", "nodad"]);
        }
        ns.ip(&["link", "set", "tap0", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut a = vec!["netns", "exec", &self.name, "ip"];
        a.extend_from_slice(args);
        ip(&a);
    }

    fn prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }

    /// Starts a server in the namespace; its output goes to `log`.
    fn spawn(&mut self, args: &[&str], log: &PathBuf) -> usize {
        let f = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("server starts");
        self.procs.push(child);
        self.procs.len() - 1
    }

    /// dnsmasq on the tap device with DHCP logging, its lease file and
    /// log in `dir`, plus `extra` arguments; returns the log's path.
    fn dnsmasq(&mut self, dir: &std::path::Path, extra: &[&str]) -> PathBuf {
        let log = dir.join("dnsmasq.log");
        let leases = format!("--dhcp-leasefile={}", dir.join("leases").display());
        let mut args = vec![
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=tap0",
            "--bind-interfaces",
            "--log-dhcp",
            &leases,
        ];
        args.extend_from_slice(extra);
        self.spawn(&args, &log);
        log
    }

    fn stop(&mut self, i: usize) {
        let _ = self.procs[i].kill();
        let _ = self.procs[i].wait();
    }

    fn tap_args() -> Vec<String> {
        vec![
            "-netdev".into(),
            "tap,id=n0,ifname=tap0,script=no,downscript=no".into(),
            "-device".into(),
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56".into(),
        ]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-net-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, secs: u64) -> String {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.contains("200") {
                return body;
            }
        }
        if start.elapsed() > Duration::from_secs(secs) {
            return String::new();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// QEMU user networking (IPv6 off so slirp's DHCP answers): the lease,
/// resolv.conf, services held until network-online, and the web page
/// reached from the host through a forwarded port.
#[test]
fn user_net_lease_and_web_page_through_forwarded_port() {
    let port = free_port();
    let out = scratch("user");
    let g = Guest::start(
        &[],
        "examples/net/cairn.toml",
        out.to_str().unwrap(),
        &[
            "-netdev".into(),
            format!("user,id=n0,ipv6=off,hostfwd=tcp:127.0.0.1:{port}-:80"),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ],
    );
    let leased = g.wait(
        "eth0: DHCPv4 lease obtained: 10.0.2.15/24 from 10.0.2.2",
        120,
    );
    let online = g.wait_from(leased, "cairn: network online", 30);
    let started = g.wait_from(online, "service httpd started", 30);
    assert!(online < started);
    g.wait("nameserver 10.0.2.3", 30);
    assert!(g
        .text()
        .contains("eth0: route 0.0.0.0/0 via 10.0.2.2 added (DHCPv4)"));
    let body = http_get(port, 60);
    assert!(
        body.contains("Hello from a cairn appliance."),
        "no page through the forwarded port: {body:?}\n{}",
        g.text()
    );
}

/// Connects to a QEMU monitor socket (QEMU creates it as it starts).
fn monitor(path: &std::path::Path) -> std::os::unix::net::UnixStream {
    for _ in 0..100 {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no QEMU monitor socket at {}", path.display());
}

/// The current UTC year on the host.
fn host_year() -> String {
    let out = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// dnsmasq in a namespace: DHCPv4, router adverts with RDNSS and DNSSL,
/// SLAAC, and resolv.conf from both families in a stable order. In the
/// same boot: the guest's RTC starts in 2001 and SNTP (chronyd, offered
/// through DHCP option 42) steps the clock to the present; then the link
/// loses its carrier and gets it back (QEMU monitor `set_link`) and the
/// client confirms its still valid lease with INIT-REBOOT.
#[test]
fn dnsmasq_dhcp4_slaac_rdnss_search_sntp_and_init_reboot() {
    let dir = scratch("dnsmasq");
    let mut ns = Netns::new("dm", "192.168.77.1/24", Some("fd77::1/64"));
    let chrony = dir.join("chrony.conf");
    std::fs::write(
        &chrony,
        format!(
            "local stratum 8\nallow all\ncmdport 0\npidfile {d}/chronyd.pid\n\
             driftfile {d}/drift\n",
            d = dir.display()
        ),
    )
    .unwrap();
    // -x: serve time without touching the host's clock.
    ns.spawn(
        &["chronyd", "-d", "-x", "-f", chrony.to_str().unwrap()],
        &dir.join("chronyd.log"),
    );
    ns.dnsmasq(
        &dir,
        &[
            "--no-ping",
            "--dhcp-range=192.168.77.50,192.168.77.99,255.255.255.0,2m",
            "--dhcp-option=option:dns-server,192.168.77.53",
            "--dhcp-option=option:ntp-server,192.168.77.1",
            "--domain=lab.example",
            "--enable-ra",
            "--ra-param=tap0,4",
            "--dhcp-range=::,constructor:tap0,ra-stateless,64,2m",
            "--dhcp-option=option6:dns-server,[fd77::53]",
            "--dhcp-option=option6:domain-search,lab6.example",
        ],
    );
    let mon = dir.join("monitor.sock");
    let mut args = Netns::tap_args();
    args.extend([
        "-rtc".to_string(),
        "base=2001-01-01T00:00:00".to_string(),
        "-monitor".to_string(),
        format!("unix:{},server=on,wait=off", mon.display()),
    ]);
    let g = Guest::start(
        &ns.prefix(),
        "examples/net/cairn.toml",
        dir.join("out").to_str().unwrap(),
        &args,
    );
    g.wait("eth0: DHCPv4 lease obtained: 192.168.77.", 120);
    let lease = g.line_with(0, "lease obtained");
    assert!(lease.contains("from 192.168.77.1"), "{lease}");
    assert!(lease.contains("router 192.168.77.1"), "{lease}");
    g.wait("dns [fd77::53] search [lab6.example]", 90);
    g.wait("(SLAAC)", 60);
    let slaac = g.line_with(0, "(SLAAC)");
    assert!(
        slaac.contains("address fd77::5054:ff:fe12:3456/64"),
        "{slaac}"
    );
    g.wait(
        "resolv.conf: nameservers [192.168.77.53 fd77::53] search [lab.example lab6.example]",
        60,
    );

    // SNTP: the clock started in 2001 and is stepped to the present.
    g.wait("(SNTP 192.168.77.1)", 60);
    let step = g.line_with(0, "(SNTP 192.168.77.1)");
    let secs: f64 = step
        .split("clock stepped by +")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no forward step: {step}\n{}", g.text()));
    // From 2001 to now: more than 20 years.
    assert!(secs > 20.0 * 365.0 * 86400.0, "{step}");
    assert!(step.contains(&format!(" to {}-", host_year())), "{step}");

    // The carrier goes and comes back: INIT-REBOOT confirms the lease.
    let lease = g.line_with(0, "lease obtained");
    let addr = lease
        .split("lease obtained: ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let mut m = monitor(&mon);
    m.write_all(b"set_link n0 off\n").unwrap();
    let t = g.wait("eth0: carrier down", 60);
    m.write_all(b"set_link n0 on\n").unwrap();
    let t = g.wait_from(t, "eth0: carrier up", 60);
    let t = g.wait_from(
        t,
        &format!("eth0: DHCPv4 INIT-REBOOT: asking any server to confirm {addr}"),
        30,
    );
    g.wait_from(
        t,
        &format!("eth0: DHCPv4 lease confirmed (INIT-REBOOT): {addr} from 192.168.77.1"),
        60,
    );
    eprintln!("{step}\n{}", g.line_with(t, "lease confirmed"));
}

/// BusyBox udhcpd with a 20 s lease: renewal by unicast at T1; then the
/// server goes away and another (different address) takes over, reached
/// only by the broadcast at T2 (rebinding); then that one goes away too
/// and the address is removed when the lease runs out.
#[test]
fn udhcpd_short_lease_renew_rebind_and_expiry() {
    let dir = scratch("udhcpd");
    let mut ns = Netns::new("ud", "192.168.78.1/24", None);
    let conf = |n: u32| {
        let p = dir.join(format!("udhcpd{n}.conf"));
        std::fs::write(
            &p,
            format!(
                "start 192.168.78.50\nend 192.168.78.60\ninterface tap0\nmax_leases 10\n\
                 lease_file {dir}/leases{n}\npidfile {dir}/pid{n}\n\
                 static_lease 52:54:00:12:34:56 192.168.78.50\n\
                 option subnet 255.255.255.0\noption router 192.168.78.1\n\
                 option dns 192.168.78.53\noption lease 20\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        p
    };
    let (c1, c2) = (conf(1), conf(2));
    let first = ns.spawn(
        &["busybox", "udhcpd", "-f", c1.to_str().unwrap()],
        &dir.join("udhcpd1.log"),
    );
    let g = Guest::start(
        &ns.prefix(),
        "examples/net/cairn.toml",
        dir.join("out").to_str().unwrap(),
        &Netns::tap_args(),
    );
    let t = g.wait(
        "eth0: DHCPv4 lease obtained: 192.168.78.50/24 from 192.168.78.1 for 20s",
        120,
    );
    let t = g.wait_from(t, "eth0: DHCPv4 renewing with 192.168.78.1 (T1)", 30);
    let t = g.wait_from(
        t,
        "eth0: DHCPv4 lease renewed: 192.168.78.50 from 192.168.78.1",
        30,
    );

    // The first server goes away; a second one with another address comes.
    ns.stop(first);
    ns.ip(&["addr", "del", "192.168.78.1/24", "dev", "tap0"]);
    ns.ip(&["addr", "add", "192.168.78.2/24", "dev", "tap0"]);
    let second = ns.spawn(
        &["busybox", "udhcpd", "-f", c2.to_str().unwrap()],
        &dir.join("udhcpd2.log"),
    );
    let t = g.wait_from(t, "rebinding: 192.168.78.1 did not answer", 40);
    let t = g.wait_from(
        t,
        "eth0: DHCPv4 lease renewed: 192.168.78.50 from 192.168.78.2",
        30,
    );

    // Now no server at all: the lease runs out and the address goes.
    ns.stop(second);
    let t = g.wait_from(t, "rebinding: 192.168.78.2 did not answer", 40);
    g.wait_from(
        t,
        "eth0: DHCPv4 lease lost (lease expired): address 192.168.78.50/24 removed",
        30,
    );
}

/// A NIC hot-added through the QEMU monitor is found through netlink and
/// gets a lease with no configuration.
#[test]
fn hotplugged_nic_gets_a_lease() {
    let dir = scratch("hotplug");
    let mon = dir.join("monitor.sock");
    let g = Guest::start(
        &[],
        "examples/net/cairn.toml",
        dir.join("out").to_str().unwrap(),
        &[
            "-netdev".into(),
            "user,id=n1,ipv6=off".into(),
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", mon.display()),
        ],
    );
    let t = g.wait("cairn: resolv.conf: nameservers []", 120);
    assert!(!g.text().contains("eth0: found"));
    let mut sock = monitor(&mon);
    sock.write_all(b"device_add virtio-net-pci,netdev=n1,id=hot1\n")
        .unwrap();
    let t = g.wait_from(t, "eth0: new interface (hotplug)", 60);
    let t = g.wait_from(
        t,
        "eth0: DHCPv4 lease obtained: 10.0.2.15/24 from 10.0.2.2",
        60,
    );
    g.wait_from(t, "cairn: network online", 30);
}

/// DHCPv4 Rapid Commit (RFC 4039) against dnsmasq with
/// `--dhcp-rapid-commit`: by default the DISCOVER is answered by an ACK
/// and the lease is bound from it (two messages, no OFFER or REQUEST);
/// with `rapid_commit = false` the same server runs the classic exchange.
#[test]
fn dnsmasq_rapid_commit_and_classic_exchange() {
    let dir = scratch("rapid");
    let mut ns = Netns::new("rc", "192.168.75.1/24", None);
    let log = ns.dnsmasq(
        &dir,
        &[
            "--no-ping",
            "--dhcp-rapid-commit",
            "--dhcp-range=192.168.75.50,192.168.75.99,255.255.255.0,2m",
        ],
    );
    let served = || std::fs::read_to_string(&log).unwrap_or_default();
    let count = |what: &str| served().matches(what).count();

    let g = Guest::start(
        &ns.prefix(),
        "examples/net/cairn.toml",
        dir.join("out").to_str().unwrap(),
        &Netns::tap_args(),
    );
    g.wait(
        "eth0: DHCPv4 lease obtained (rapid commit): 192.168.75.",
        120,
    );
    drop(g);
    assert_eq!(count("DHCPDISCOVER(tap0)"), 1, "{}", served());
    assert_eq!(count("DHCPACK(tap0)"), 1, "{}", served());
    assert_eq!(count("DHCPOFFER(tap0)"), 0, "{}", served());
    assert_eq!(count("DHCPREQUEST(tap0)"), 0, "{}", served());

    // The same appliance with rapid commit turned off.
    let (_tmp, manifest) = cairn_e2e::copy_example("net");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[[network]]\nmatch = { name = \"eth*\" }\nrapid_commit = false\n");
    std::fs::write(&manifest, text).unwrap();
    let g = Guest::start(
        &ns.prefix(),
        manifest.to_str().unwrap(),
        dir.join("out2").to_str().unwrap(),
        &Netns::tap_args(),
    );
    g.wait("eth0: DHCPv4 lease obtained: 192.168.75.", 120);
    assert!(!g.text().contains("(rapid commit)"), "{}", g.text());
    drop(g);
    assert_eq!(count("DHCPOFFER(tap0)"), 1, "{}", served());
    assert_eq!(count("DHCPREQUEST(tap0)"), 1, "{}", served());
}

/// A static-only appliance: addresses, gateway, extra route, MTU and DNS
/// from the manifest, the gateway answers a ping, and the DHCP server on
/// the link never hears from it.
#[test]
fn static_only_appliance_sends_no_dhcp() {
    let dir = scratch("static");
    let mut ns = Netns::new("st", "192.168.79.1/24", None);
    let log = ns.dnsmasq(&dir, &["--dhcp-range=192.168.79.50,192.168.79.99,2m"]);
    let mut g = Guest::start(
        &ns.prefix(),
        "examples/net-static/cairn.toml",
        dir.join("out").to_str().unwrap(),
        &Netns::tap_args(),
    );
    assert!(g.wait_exit(180), "guest did not power off\n{}", g.text());
    let text = g.text();
    for needle in [
        "eth0: address 192.168.79.2/24 added (static)",
        "eth0: route 0.0.0.0/0 via 192.168.79.1 added",
        "eth0: route 10.79.0.0/16 via 192.168.79.254 added",
        "cairn: network online",
        "1 packets received",
        "nameserver 192.168.79.53",
        "search static.example",
        "check: 1400\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing\n{text}");
    }
    assert!(!text.contains("DHCPv4"), "{text}");
    let served = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        served.contains("DHCP, IP range") || served.contains("started"),
        "dnsmasq did not run: {served}"
    );
    assert!(!served.contains("DHCPDISCOVER"), "{served}");
}

/// The address a server offers is already taken on the link: the ARP
/// probe that runs while the address is first in use sees the other host,
/// and the client takes the address back, declines it and does not bind it
/// again.
#[test]
fn address_in_use_is_declined() {
    let dir = scratch("decline");
    let mut ns = Netns::new("dc", "192.168.76.1/24", None);
    // Another host already holds the address the server will hand out.
    ns.ip(&["addr", "add", "192.168.76.50/32", "dev", "tap0"]);
    let conf = dir.join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 192.168.76.50\nend 192.168.76.60\ninterface tap0\n\
             lease_file {d}/leases\npidfile {d}/pid\n\
             static_lease 52:54:00:12:34:56 192.168.76.50\n\
             option subnet 255.255.255.0\noption lease 60\n",
            d = dir.display()
        ),
    )
    .unwrap();
    ns.spawn(
        &["busybox", "udhcpd", "-f", conf.to_str().unwrap()],
        &dir.join("udhcpd.log"),
    );
    let g = Guest::start(
        &ns.prefix(),
        "examples/net/cairn.toml",
        dir.join("out").to_str().unwrap(),
        &Netns::tap_args(),
    );
    let t = g.wait(
        "eth0: 192.168.76.50 is already in use (ARP): declining",
        120,
    );
    let t = g.wait_from(
        t,
        "eth0: DHCPv4 lease lost (address in use): address 192.168.76.50/24 removed",
        30,
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = &g.text()[t..];
    assert!(!after.contains("lease obtained"), "{}", g.text());
    assert!(!after.contains("192.168.76.50/24 added"), "{}", g.text());
}

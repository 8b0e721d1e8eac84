//! Guests on real networks: `cairn run` with its console collected as it
//! comes, network namespaces with a tap device and real servers in them
//! (every process ended by pid), and the checks more than one test file
//! runs (the network examples on Debian's kernel and on the tiny one).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{cairn, root};

/// A guest booted with `cairn run`, its console collected as it comes.
pub struct Guest {
    child: Child,
    console: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Guest {
    /// `prefix` runs the command inside a namespace (`ip netns exec NS`).
    pub fn start(prefix: &[&str], manifest: &str, out: &str, extra: &[String]) -> Guest {
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
        .args(extra);
        Guest::spawn(cmd)
    }

    /// Any command that boots a guest (QEMU itself, say), its console
    /// (stdout and stderr) collected as it comes. Unlike [`crate::Live`]
    /// it does not wait for other boots: for guests that boot together.
    pub fn spawn(mut cmd: Command) -> Guest {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the guest starts");
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

    pub fn text(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// The pid of the process started (QEMU, or `cairn run`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The offset just past `needle` if the console has it after byte
    /// `from` (no waiting).
    pub fn find_from(&self, from: usize, needle: &str) -> Option<usize> {
        let text = self.text();
        let i = text.get(from..)?.find(needle)?;
        Some(from + i + needle.len())
    }

    /// Waits until the console has `needle` after byte `from`; returns the
    /// offset just past it. Panics with the console on timeout.
    pub fn wait_from(&self, from: usize, needle: &str, secs: u64) -> usize {
        let start = Instant::now();
        loop {
            if let Some(end) = self.find_from(from, needle) {
                return end;
            }
            if start.elapsed() > Duration::from_secs(secs) {
                let text = self.text();
                panic!("{needle:?} did not appear within {secs}s\n--- console ---\n{text}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Calls `send` once a second, at most `tries` times, until the
    /// console has `needle` after byte `from`; returns the offset just past
    /// it. For input the guest may not hear yet when it is first sent.
    pub fn resend_until(&self, from: usize, needle: &str, tries: u32, send: impl Fn()) -> usize {
        for _ in 0..tries {
            send();
            std::thread::sleep(Duration::from_secs(1));
            if let Some(end) = self.find_from(from, needle) {
                return end;
            }
        }
        let text = self.text();
        panic!("{needle:?} did not appear after sending {tries} times\n--- console ---\n{text}");
    }

    pub fn wait(&self, needle: &str, secs: u64) -> usize {
        self.wait_from(0, needle, secs)
    }

    /// Prints (to the test's stderr) the console lines that hold any of
    /// `needles`: what a passing test shows with `--nocapture`.
    pub fn show(&self, needles: &[&str]) {
        let text = self.text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .collect();
        eprintln!("{}", lines.join("\n"));
    }

    /// The address of the first `lease obtained` line after byte `from`.
    pub fn leased_address(&self, from: usize) -> String {
        let line = self.line_with(from, "lease obtained");
        line.split("lease obtained: ")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("no lease line after byte {from}:\n{}", self.text()))
            .to_string()
    }

    /// The line holding `needle` (after `from`).
    pub fn line_with(&self, from: usize, needle: &str) -> String {
        let text = self.text();
        text[from..]
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    }

    /// Waits for the guest to power off by itself.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
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
pub fn children(pid: u32) -> Vec<u32> {
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

pub fn kill(pid: u32) {
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
pub struct Netns {
    name: String,
    procs: Vec<Child>,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub fn new(tag: &str, v4: &str, v6: Option<&str>) -> Netns {
        let ns = Netns::empty(tag);
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ns.ip(&["addr", "add", v4, "dev", "tap0"]);
        if let Some(v6) = v6 {
            ns.ip(&["-6", "addr", "add", v6, "dev", "tap0", "nodad"]);
        }
        ns.ip(&["link", "set", "tap0", "up"]);
        ns
    }

    /// A namespace with bridge `br0` holding `v4` and `taps` tap devices
    /// on it (`tap0`, `tap1`, ...): one link for several guests.
    pub fn bridged(tag: &str, v4: &str, taps: usize) -> Netns {
        let ns = Netns::empty(tag);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", v4, "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        for i in 0..taps {
            let tap = format!("tap{i}");
            ns.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
            ns.ip(&["link", "set", &tap, "master", "br0"]);
            ns.ip(&["link", "set", &tap, "up"]);
        }
        ns
    }

    /// A new namespace with only `lo` (up).
    fn empty(tag: &str) -> Netns {
        let name = format!("cairn-{tag}-{}", std::process::id());
        // A namespace of that name left by an earlier run (usually none:
        // then ip's complaint is not worth showing).
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            procs: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["netns", "exec", &self.name, "ip"];
        a.extend_from_slice(args);
        ip(&a);
    }

    pub fn prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }

    /// Starts a server in the namespace; its output goes to `log`.
    pub fn spawn(&mut self, args: &[&str], log: &PathBuf) -> usize {
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
    pub fn dnsmasq(&mut self, dir: &std::path::Path, extra: &[&str]) -> PathBuf {
        self.start_dnsmasq(dir, extra).1
    }

    /// [`Netns::dnsmasq`], also giving the process's index for
    /// [`Netns::stop`].
    pub fn start_dnsmasq(&mut self, dir: &std::path::Path, extra: &[&str]) -> (usize, PathBuf) {
        self.start_dnsmasq_on("tap0", dir, extra)
    }

    /// [`Netns::start_dnsmasq`] on interface `iface`.
    pub fn start_dnsmasq_on(
        &mut self,
        iface: &str,
        dir: &std::path::Path,
        extra: &[&str],
    ) -> (usize, PathBuf) {
        let log = dir.join("dnsmasq.log");
        let leases = format!("--dhcp-leasefile={}", dir.join("leases").display());
        let iface = format!("--interface={iface}");
        let mut args = vec![
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            &iface,
            "--bind-interfaces",
            "--log-dhcp",
            &leases,
        ];
        // No DNS unless `extra` gives a port (dnsmasq refuses a repeated one).
        if !extra.iter().any(|a| a.starts_with("--port=")) {
            args.push("--port=0");
        }
        args.extend_from_slice(extra);
        let i = self.spawn(&args, &log);
        (i, log)
    }

    /// `python3 -m http.server` serving `dir` on `bind`:`port`; its log
    /// (a line per request, with the client's address) goes to `log`.
    pub fn http_server(&mut self, bind: &str, port: u16, dir: &Path, log: &PathBuf) -> usize {
        let port = port.to_string();
        self.spawn(
            &[
                "/usr/bin/python3",
                "-u",
                "-m",
                "http.server",
                "--bind",
                bind,
                "--directory",
                dir.to_str().unwrap(),
                &port,
            ],
            log,
        )
    }

    /// chronyd serving the host's time at stratum 8 to anyone in the
    /// namespace, without touching the host's clock (`-x`); its
    /// configuration, pid file and log in `dir`.
    pub fn chronyd(&mut self, dir: &Path) -> usize {
        let conf = dir.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum 8\nallow all\ncmdport 0\npidfile {d}/chronyd.pid\n\
                 driftfile {d}/drift\n",
                d = dir.display()
            ),
        )
        .unwrap();
        self.spawn(
            &["chronyd", "-d", "-x", "-f", conf.to_str().unwrap()],
            &dir.join("chronyd.log"),
        )
    }

    /// Runs `f` on a thread that has entered the namespace (setns(2) on
    /// its `ip netns` file), so the sockets `f` opens live there.
    pub fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // Only this thread moves; it ends after `f`.
            move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("the thread inside the namespace panicked")
    }

    /// Broadcasts one UDP datagram from `src`:67 (an address of the
    /// namespace) to 255.255.255.255:68, as a DHCP server's reply goes
    /// to a client without an address.
    pub fn dhcp_broadcast(&self, src: Ipv4Addr, payload: &[u8]) {
        let payload = payload.to_vec();
        self.inside(move || {
            let s = UdpSocket::bind((src, 67)).expect("bind to port 67");
            s.set_broadcast(true).unwrap();
            s.send_to(&payload, (Ipv4Addr::BROADCAST, 68))
                .expect("DHCP broadcast sent");
        });
    }

    /// Sends `icmp` (an ICMPv6 message from its type byte on; the kernel
    /// fills in the checksum) to all nodes (ff02::1) on `tap0` with hop
    /// limit 255, as a router sends its adverts.
    pub fn icmpv6_all_nodes(&self, icmp: &[u8]) {
        let icmp = icmp.to_vec();
        self.inside(move || {
            use rustix::net::{ipproto, netdevice, socket_with, sockopt};
            use rustix::net::{AddressFamily, SocketFlags, SocketType};
            let fd = socket_with(
                AddressFamily::INET6,
                SocketType::RAW,
                SocketFlags::CLOEXEC,
                Some(ipproto::ICMPV6),
            )
            .expect("ICMPv6 socket");
            sockopt::set_ipv6_multicast_hops(&fd, 255).expect("hop limit");
            let index = netdevice::name_to_index(&fd, "tap0").expect("tap0 in the namespace");
            // sendto(2) on a raw socket is the same call as on a UDP one
            // (the port must be 0).
            let sock = UdpSocket::from(fd);
            let to = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
            sock.send_to(&icmp, to).expect("ICMPv6 message sent");
        });
    }

    /// The link-local address of `tap0` once duplicate address detection
    /// is over (the source of what [`Netns::icmpv6_all_nodes`] sends).
    pub fn link_local(&self) -> String {
        for _ in 0..150 {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args([
                    "ip", "-6", "-o", "addr", "show", "dev", "tap0", "scope", "link",
                ])
                .output()
                .expect("ip runs");
            let text = String::from_utf8_lossy(&out.stdout);
            if !text.contains("tentative") {
                let addr = text
                    .split_whitespace()
                    .skip_while(|w| *w != "inet6")
                    .nth(1)
                    .and_then(|a| a.split('/').next());
                if let Some(a) = addr {
                    return a.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("tap0 in {} has no usable link-local address", self.name);
    }

    /// dnsmasq arguments for router adverts on `tap0` only (no DHCPv6):
    /// one every 4 s, the SLAAC prefix from `tap0`'s IPv6 address. DNS
    /// options (RDNSS, DNSSL) are the caller's.
    pub const RA_ONLY: [&'static str; 3] = [
        "--enable-ra",
        "--ra-param=tap0,4",
        "--dhcp-range=::,constructor:tap0,ra-only,64,2m",
    ];

    /// Pings `addr` (IPv4 or IPv6) from the namespace with BusyBox's
    /// ping (busybox-static is among the test packages; iputils is not),
    /// one echo request at a time, up to `tries` times; true as soon as
    /// one is answered.
    pub fn ping(&self, addr: &str, tries: u32) -> bool {
        for _ in 0..tries {
            let answered = Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(["busybox", "ping", "-c", "1", "-W", "2", addr])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// The pid of process `i` (from [`Netns::spawn`]): `ip netns exec`
    /// runs the server in its own place, so it is the server's.
    pub fn pid(&self, i: usize) -> u32 {
        self.procs[i].id()
    }

    pub fn stop(&mut self, i: usize) {
        let _ = self.procs[i].kill();
        let _ = self.procs[i].wait();
    }

    /// Boots `manifest` (outputs in `out`) with a virtio NIC (MAC
    /// 52:54:00:12:34:56) on this namespace's `tap0`, plus `extra` QEMU
    /// arguments.
    pub fn boot(&self, manifest: &str, out: &Path, extra: &[String]) -> Guest {
        let mut args: Vec<String> = vec![
            "-netdev".into(),
            "tap,id=n0,ifname=tap0,script=no,downscript=no".into(),
            "-device".into(),
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56".into(),
        ];
        args.extend_from_slice(extra);
        Guest::start(&self.prefix(), manifest, out.to_str().unwrap(), &args)
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

/// What the helpers above call in the C library (std has no setns or raw
/// sockets); values as in Linux's headers, the same on every architecture
/// cairn tests on.
/// QEMU arguments that start the guest's real-time clock, and with it
/// the guest's clock, on 2001-01-01.
pub fn rtc_in_2001() -> Vec<String> {
    vec!["-rtc".into(), "base=2001-01-01T00:00:00".into()]
}

/// Waits for the guest's clock to be stepped by SNTP from `server` and
/// checks the step: forward by more than 20 years (its clock started in
/// 2001, see [`rtc_in_2001`]) to the host's current year. Returns the
/// log line.
pub fn assert_clock_stepped(g: &Guest, server: &str, secs: u64) -> String {
    let tag = format!("(SNTP {server})");
    g.wait(&tag, secs);
    let step = g.line_with(0, &tag);
    let by: f64 = step
        .split("clock stepped by +")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no forward step: {step}\n{}", g.text()));
    // From 2001 to now: more than 20 years.
    assert!(by > 20.0 * 365.0 * 86400.0, "{step}");
    let out = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    let year = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(step.contains(&format!(" to {year}-")), "{step}");
    step
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-net-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes the manifest of appliance `name` to `dir/cairn.toml`: its name,
/// a `[kernel]` table for the virtio NIC (as in examples/net), then `body`
/// (tables only). Returns its path.
pub fn write_manifest(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join("cairn.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n\
             cmdline = \"console=ttyS0 panic=-1\"\n\
             modules = [\"virtio_pci\", \"virtio_net\"]\n\n{body}"
        ),
    )
    .unwrap();
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` on 127.0.0.1:`port`, retried for `secs`; the response or "".
pub fn http_get(port: u16, secs: u64) -> String {
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

/// Appliance `manifest` (examples/net, or it on another kernel) on QEMU
/// user networking (IPv6 off so slirp's DHCP answers): the lease,
/// resolv.conf, services held until network-online, and the web page
/// reached from the host through a forwarded port.
pub fn user_net_lease_and_web_page(manifest: &str) {
    let port = free_port();
    let out = scratch("user");
    let g = Guest::start(
        &[],
        manifest,
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

/// Appliance `manifest` (examples/net-static, or it on another kernel),
/// static only: addresses, gateway, extra route, MTU and DNS from the
/// manifest, the gateway answers a ping, and the DHCP server on the link
/// never hears from it.
pub fn static_only_network(manifest: &str) {
    let dir = scratch("static");
    let mut ns = Netns::new("st", "192.168.79.1/24", None);
    let log = ns.dnsmasq(&dir, &["--dhcp-range=192.168.79.50,192.168.79.99,2m"]);
    let mut g = ns.boot(manifest, &dir.join("out"), &[]);
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

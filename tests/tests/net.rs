//! Networking end to end: QEMU guests against real servers. Each server
//! runs in a network namespace of its own with a tap device (unique names
//! per test and process), started and stopped by the test, every process
//! ended by pid. The guest's view is read from the init's log lines and
//! from services that print files.

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use cairn_e2e::net::{
    assert_clock_stepped, rtc_in_2001, scratch, static_only_network, user_net_lease_and_web_page,
    write_manifest, Guest, Netns,
};

/// QEMU user networking (IPv6 off so slirp's DHCP answers): the lease,
/// resolv.conf, services held until network-online, and the web page
/// reached from the host through a forwarded port.
#[test]
fn user_net_lease_and_web_page_through_forwarded_port() {
    user_net_lease_and_web_page("examples/net/cairn.toml");
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
    ns.chronyd(&dir);
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
    let mut args = rtc_in_2001();
    args.extend([
        "-monitor".to_string(),
        format!("unix:{},server=on,wait=off", mon.display()),
    ]);
    let g = ns.boot("examples/net/cairn.toml", &dir.join("out"), &args);
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
    let step = assert_clock_stepped(&g, "192.168.77.1", 60);

    // The carrier goes and comes back: INIT-REBOOT confirms the lease.
    let addr = g.leased_address(0);
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

/// NAKs from a real server send the client back to DISCOVER, with a fresh
/// lease at the end, both after INIT-REBOOT and at renewal. Each time the
/// server is replaced by an authoritative dnsmasq serving a moved range
/// with no record of the client: it NAKs the old address.
#[test]
fn dnsmasq_naks_on_init_reboot_and_on_renew_end_in_a_fresh_lease() {
    let dir = scratch("nak");
    let mut ns = Netns::new("nk", "192.168.76.1/24", None);
    let server = |ns: &mut Netns, name: &str, range: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let range = format!("--dhcp-range={range},255.255.255.0,2m");
        // T1 of 20 s, so the renewal comes within the test's time.
        let args = [
            "--no-ping",
            "--dhcp-authoritative",
            &range,
            "--dhcp-option=option:T1,20",
            "--dhcp-option=option:T2,40",
        ];
        ns.start_dnsmasq(&d, &args)
    };
    let (first, _) = server(&mut ns, "a", "192.168.76.50,192.168.76.59");
    let mon = dir.join("monitor.sock");
    let args = vec![
        "-monitor".to_string(),
        format!("unix:{},server=on,wait=off", mon.display()),
    ];
    let g = ns.boot("examples/net/cairn.toml", &dir.join("out"), &args);
    let t = g.wait("eth0: DHCPv4 lease obtained: 192.168.76.5", 120);
    let old = g.leased_address(0);

    // INIT-REBOOT: the link drops, the server is replaced, the link comes
    // back; the client asks to keep its address and is refused.
    let mut m = monitor(&mon);
    m.write_all(b"set_link n0 off\n").unwrap();
    let t = g.wait_from(t, "eth0: carrier down", 60);
    ns.stop(first);
    let (second, log2) = server(&mut ns, "b", "192.168.76.150,192.168.76.159");
    m.write_all(b"set_link n0 on\n").unwrap();
    let t = g.wait_from(
        t,
        &format!("eth0: DHCPv4 INIT-REBOOT: asking any server to confirm {old}"),
        60,
    );
    let nak = g.wait_from(t, "(server sent NAK)", 60);
    let t = g.wait_from(nak, "eth0: DHCPv4 lease obtained: 192.168.76.15", 60);
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(
        log.contains(&format!("DHCPNAK(tap0) {old}")),
        "dnsmasq sent no NAK:\n{log}"
    );
    assert!(
        log.contains("DHCPDISCOVER(tap0)"),
        "no DISCOVER after the NAK:\n{log}"
    );
    let mid = g.leased_address(nak);

    // Renewal: the server is replaced again while the lease runs; the
    // unicast renewal at T1 is refused.
    ns.stop(second);
    let (_third, log3) = server(&mut ns, "c", "192.168.76.200,192.168.76.209");
    let t = g.wait_from(t, "eth0: DHCPv4 renewing with 192.168.76.1 (T1)", 60);
    let t = g.wait_from(t, "(server sent NAK)", 60);
    g.wait_from(t, "eth0: DHCPv4 lease obtained: 192.168.76.20", 60);
    let log = std::fs::read_to_string(&log3).unwrap();
    assert!(
        log.contains(&format!("DHCPNAK(tap0) {mid}")),
        "dnsmasq sent no NAK:\n{log}"
    );
    assert!(log.contains("DHCPACK(tap0) 192.168.76.20"), "{log}");
}

/// ISC Kea (Debian's kea-dhcp4-server) as the server: its lease with
/// classless static routes (option 121, which replaces the router option),
/// a domain search list (option 119) and T1/T2 from its config (20 s and
/// 40 s of a 120 s lease, not the defaults of half and 7/8). What the
/// guest sees is read by a service: its routing table and resolv.conf.
#[test]
fn kea_lease_with_classless_routes_search_list_and_its_timers() {
    let dir = scratch("kea");
    let mut ns = Netns::new("ke", "192.168.75.1/24", None);
    let conf = dir.join("kea.json");
    std::fs::write(
        &conf,
        r#"{"Dhcp4": {
  "interfaces-config": {"interfaces": ["tap0"], "dhcp-socket-type": "raw",
    "service-sockets-max-retries": 600, "service-sockets-retry-wait-time": 500},
  "lease-database": {"type": "memfile", "persist": false},
  "renew-timer": 20, "rebind-timer": 40, "valid-lifetime": 120,
  "subnet4": [{"id": 1, "subnet": "192.168.75.0/24",
    "pools": [{"pool": "192.168.75.50 - 192.168.75.59"}],
    "option-data": [
      {"name": "routers", "data": "192.168.75.99"},
      {"name": "domain-name-servers", "data": "192.168.75.53"},
      {"name": "domain-search", "data": "kea.example, lab.kea.example"},
      {"code": 121, "csv-format": false, "data": "100A01C0A84B0100C0A84B01"}
    ]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "DEBUG", "debuglevel": 40}]
}}"#,
    )
    .unwrap();
    // tap0 has no carrier until QEMU opens it: Kea retries its socket.
    let dirs = format!("KEA_PIDFILE_DIR={0} KEA_LOCKFILE_DIR={0}", dir.display());
    let kea_log = dir.join("kea.log");
    ns.spawn(
        &[
            "sh",
            "-c",
            &format!("exec env {dirs} kea-dhcp4 -c {}", conf.display()),
        ],
        &kea_log,
    );
    let manifest = write_manifest(
        &dir,
        "net-kea",
        r#"[[binary]]
path = "/usr/bin/busybox"

[[service]]
name = "view"
exec = ["/usr/bin/busybox", "sh", "-c", "/usr/bin/busybox ip route; /usr/bin/busybox cat /etc/resolv.conf; echo VIEW-DONE"]
after = ["network-online"]
"#,
    );
    let g = ns.boot(manifest.to_str().unwrap(), &dir.join("out"), &[]);
    let t = g.wait("eth0: DHCPv4 lease obtained: 192.168.75.5", 120);
    let lease = g.line_with(0, "lease obtained");
    assert!(lease.contains("from 192.168.75.1 for 120s"), "{lease}");
    g.wait_from(t, "VIEW-DONE", 60);
    let text = g.text();
    let view: Vec<&str> = text.lines().filter(|l| l.contains("view: ")).collect();
    let has = |needle: &str| view.iter().any(|l| l.contains(needle));
    // Option 121's routes; the router option (192.168.75.99) is ignored
    // when option 121 is present (RFC 3442).
    assert!(has("10.1.0.0/16 via 192.168.75.1 dev eth0"), "{view:#?}");
    assert!(has("default via 192.168.75.1 dev eth0"), "{view:#?}");
    assert!(!has("192.168.75.99"), "{view:#?}");
    assert!(has("search kea.example lab.kea.example"), "{view:#?}");
    assert!(has("nameserver 192.168.75.53"), "{view:#?}");
    // T1 from the server: the renewal comes 20 s after the lease by the
    // guest's own clock (the default would be 60 s).
    let r = g.wait_from(t, "eth0: DHCPv4 renewing with 192.168.75.1 (T1)", 90);
    g.wait_from(r, "eth0: DHCPv4 lease renewed: 192.168.75.5", 30);
    let stamp = |needle: &str| -> f64 {
        let line = g.line_with(0, needle);
        line.split('[')
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|x| x.trim().parse().ok())
            .unwrap_or_else(|| panic!("no timestamp in {line:?}"))
    };
    let t1 = stamp("renewing with 192.168.75.1 (T1)") - stamp("lease obtained");
    assert!(
        (19.0..30.0).contains(&t1),
        "renewed {t1:.1}s after the lease, not at T1 = 20s"
    );
    let log = std::fs::read_to_string(&kea_log).unwrap();
    assert!(log.contains("DHCP4_LEASE_ALLOC"), "{log}");
    assert!(
        log.contains("DHCP4_LEASE_ADVERT") || log.contains("DHCPOFFER"),
        "{log}"
    );
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
    let g = ns.boot("examples/net/cairn.toml", &dir.join("out"), &[]);
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

    let g = ns.boot("examples/net/cairn.toml", &dir.join("out"), &[]);
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
    let g = ns.boot(manifest.to_str().unwrap(), &dir.join("out2"), &[]);
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
    static_only_network("examples/net-static/cairn.toml");
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
    let g = ns.boot("examples/net/cairn.toml", &dir.join("out"), &[]);
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

/// No server of any kind on the link (a tap in a namespace with no DHCP
/// server and no router adverts) and a 5 s `online_timeout`: the interface
/// is configured and asks for a lease, network-online is reached with the
/// warning naming it, never a hang, and only then does a service ordered
/// after network-online start (it powers the machine off).
#[test]
fn online_timeout_warns_and_starts_services_after_it() {
    let dir = scratch("timeout");
    let ns = Netns::new("to", "192.168.73.1/24", None);
    let manifest = write_manifest(
        &dir,
        "net-timeout",
        r#"[net]
online_timeout = 5

[[binary]]
path = "/usr/bin/busybox"

[[service]]
name = "late"
exec = ["/usr/bin/busybox", "echo", "started after network-online"]
after = ["network-online"]
on_exit = "poweroff"
"#,
    );
    let mut g = ns.boot(manifest.to_str().unwrap(), &dir.join("out"), &[]);
    let asked = g.wait("eth0: DHCPv4 discover sent", 120);
    let warned = g.wait_from(
        asked,
        "cairn: warning: network-online reached after the 5s timeout without a usable \
         address on eth0",
        60,
    );
    let reached = g.wait_from(warned, "target network-online reached", 30);
    g.wait_from(reached, "late: started after network-online", 60);
    assert!(g.wait_exit(120), "guest did not power off\n{}", g.text());
    let text = g.text();
    // The service started once, after the warning, not before.
    let started = text
        .find("service late started")
        .unwrap_or_else(|| panic!("service late never started\n{text}"));
    assert!(
        started > warned,
        "service started before the timeout\n{text}"
    );
    assert!(!text.contains("cairn: network online"), "{text}");
    assert!(!text.contains("lease obtained"), "{text}");
    eprintln!(
        "{}\n{}",
        g.line_with(0, "cairn: warning: network-online"),
        g.line_with(0, "service late started")
    );
}

/// One interface with everything static next to DHCP: `ipv6 = "static"`
/// with an IPv6 address and `gateway6`, a static IPv4 address and DHCPv4
/// (dnsmasq, which also hands out a hostname and an MTU) on the same link.
/// The host reaches all three addresses from the namespace; the guest
/// reaches an address behind the IPv6 gateway (only through the default
/// route), lists both IPv4 addresses, and takes the DHCP hostname and MTU
/// because its manifest sets neither.
#[test]
fn static_ipv6_gateway6_and_static_ipv4_next_to_dhcp() {
    let dir = scratch("static6");
    let mut ns = Netns::new("s6", "192.168.74.1/24", Some("fd74::1/64"));
    // Off the guest's link: reachable only through its gateway6.
    ns.ip(&["-6", "addr", "add", "fd99::1/128", "dev", "lo"]);
    let log = ns.dnsmasq(
        &dir,
        &[
            "--no-ping",
            "--dhcp-range=192.168.74.50,192.168.74.99,255.255.255.0,2m",
            "--dhcp-host=52:54:00:12:34:56,192.168.74.60,dhcpbox",
            "--dhcp-option=option:mtu,1400",
        ],
    );
    let manifest = write_manifest(
        &dir,
        "net-static6",
        r#"[[network]]
match = { name = "eth0" }
dhcp4 = true
ipv6 = "static"
addresses = ["192.168.74.2/24", "fd74::2/64"]
gateway6 = "fd74::1"

[[binary]]
path = "/usr/bin/busybox"

[[service]]
name = "check"
exec = ["/usr/bin/busybox", "sh", "-c", """
n=0
until [ "$(cat /proc/sys/kernel/hostname)" = dhcpbox ] || [ $n -ge 90 ]; do n=$((n+1)); sleep 1; done
echo "hostname $(cat /proc/sys/kernel/hostname) mtu $(cat /sys/class/net/eth0/mtu)"
n=0
until busybox ping -c 1 -W 2 fd99::1 >/dev/null 2>&1 || [ $n -ge 30 ]; do n=$((n+1)); sleep 1; done
busybox ping -c 1 -W 5 fd99::1 | grep 'packets received' | sed 's/^/fd99::1 /'
busybox ip -4 addr show dev eth0 | grep inet | sed 's/^ *//'
echo done
"""]
after = ["network-online"]
"#,
    );
    let g = ns.boot(manifest.to_str().unwrap(), &dir.join("out"), &[]);
    // Service output lines read `check: ...`.
    g.wait(
        "eth0: DHCPv4 lease obtained: 192.168.74.60/24 from 192.168.74.1",
        120,
    );
    g.wait("check: done", 180);
    let text = g.text();
    for needle in [
        "eth0: address 192.168.74.2/24 added (static)",
        "eth0: address fd74::2/64 added (static)",
        "eth0: route ::/0 via fd74::1 added",
        "eth0: address 192.168.74.60/24 added (DHCPv4)",
        "hostname set to dhcpbox (DHCP)",
        "check: hostname dhcpbox mtu 1400\n",
        "check: fd99::1 1 packets transmitted, 1 packets received",
        "check: inet 192.168.74.2/24",
        "check: inet 192.168.74.60/24",
    ] {
        assert!(text.contains(needle), "{needle:?} missing\n{text}");
    }
    // ipv6 = "static": no router adverts are listened to, no SLAAC.
    assert!(!text.contains("(SLAAC)"), "{text}");
    for addr in ["fd74::2", "192.168.74.2", "192.168.74.60"] {
        assert!(
            ns.ping(addr, 30),
            "{addr} does not answer from the host side\n{}",
            g.text()
        );
    }
    let served = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        served.contains("DHCPACK(tap0) 192.168.74.60 52:54:00:12:34:56 dhcpbox"),
        "{served}"
    );
    g.show(&["eth0: ", "check: ", "(DHCP)"]);
}

/// SNTP from the manifest alone: `[net] ntp` names the server and there is
/// no DHCP at all (a static address, `dhcp4 = false`), so no option 42 can
/// name one. The guest's clock starts in 2001 and is stepped to the
/// present from that server (chronyd in the namespace).
#[test]
fn manifest_ntp_server_steps_the_clock() {
    let dir = scratch("ntp");
    let mut ns = Netns::new("nt", "192.168.72.1/24", None);
    ns.chronyd(&dir);
    let manifest = write_manifest(
        &dir,
        "net-ntp",
        r#"[net]
ntp = ["192.168.72.1"]

[[network]]
match = { name = "eth0" }
dhcp4 = false
ipv6 = "off"
addresses = ["192.168.72.2/24"]
"#,
    );
    let g = ns.boot(manifest.to_str().unwrap(), &dir.join("out"), &rtc_in_2001());
    g.wait("eth0: address 192.168.72.2/24 added (static)", 120);
    let step = assert_clock_stepped(&g, "192.168.72.1", 90);
    assert!(!g.text().contains("DHCPv4"), "{}", g.text());
    eprintln!("{step}");
}

/// An IPv6-only link: no IPv4 address in the namespace, dnsmasq sends
/// router adverts only (no DHCPv4 range, no DHCPv6) with RDNSS and DNSSL,
/// and the guest's `[[network]]` turns DHCPv4 off. The kernel makes a
/// SLAAC address; resolv.conf holds the advertised server and search
/// domain (the init's log line and the file as a service reads it);
/// network-online is reached through the IPv6 address, before a timeout
/// could have fired; the host reaches the guest's SLAAC address; the
/// manifest's IPv6 time server steps the clock (SNTP over IPv6).
#[test]
fn ipv6_only_link_slaac_rdnss_dnssl_and_network_online() {
    let dir = scratch("v6only");
    let mut ns = Netns::new("v6", "192.168.70.1/24", Some("fd70::1/64"));
    ns.ip(&["-4", "addr", "flush", "dev", "tap0"]);
    let mut servers = Netns::RA_ONLY.to_vec();
    servers.extend([
        "--dhcp-option=option6:dns-server,[fd70::53]",
        "--dhcp-option=option6:domain-search,v6only.example",
    ]);
    ns.dnsmasq(&dir, &servers);
    // A time server on the link's IPv6 address, named by the manifest.
    ns.chronyd(&dir);
    let manifest = write_manifest(
        &dir,
        "net-v6only",
        r#"[net]
online_timeout = 300
ntp = ["fd70::1"]

[[network]]
match = { name = "eth0" }
dhcp4 = false
ipv6 = "slaac"

[[binary]]
path = "/usr/bin/busybox"

[[service]]
name = "report"
exec = ["/usr/bin/busybox", "sh", "-c", """
n=0
until grep -q nameserver /etc/resolv.conf || [ $n -ge 60 ]; do n=$((n+1)); sleep 1; done
cat /etc/resolv.conf
echo done
"""]
after = ["network-online"]
"#,
    );
    let g = ns.boot(manifest.to_str().unwrap(), &dir.join("out"), &rtc_in_2001());
    let slaac = g.wait(
        "eth0: address fd70::5054:ff:fe12:3456/64 added (SLAAC)",
        150,
    );
    let online = g.wait("cairn: network online", 60);
    assert!(
        slaac < online,
        "online before the SLAAC address\n{}",
        g.text()
    );
    g.wait("dns [fd70::53] search [v6only.example]", 30);
    let advert = g.line_with(0, "dns [fd70::53]");
    assert!(
        advert.contains("eth0: router advert from fe80::"),
        "{advert}"
    );
    g.wait(
        "resolv.conf: nameservers [fd70::53] search [v6only.example]",
        30,
    );
    g.wait("report: done", 90);
    let text = g.text();
    for needle in [
        "report: nameserver fd70::53\n",
        "report: search v6only.example\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing\n{text}");
    }
    assert!(!text.contains("DHCPv4"), "{text}");
    assert!(!text.contains("warning: network-online"), "{text}");
    // SNTP over IPv6.
    assert_clock_stepped(&g, "fd70::1", 60);
    assert!(
        ns.ping("fd70::5054:ff:fe12:3456", 30),
        "the SLAAC address does not answer from the host side\n{}",
        g.text()
    );
    g.show(&["eth0: ", "resolv.conf", "online"]);
}

/// Hostile input on the link before any server answers, the same bytes as
/// the init's fuzz corpus: DHCP replies for the guest's MAC that are
/// truncated, have an option running past the end or a search list whose
/// compression pointers loop, then router adverts (from the namespace's
/// link-local address) that are truncated or hold a DNSSL name with a
/// compression pointer. The guest logs each one as dropped, with the
/// reason (drops are logged at most once every 10 s per socket: a later
/// one shows in the next line, with the count), and keeps working: once
/// dnsmasq starts it gets its lease and the DNS server from the adverts.
#[test]
fn hostile_dhcp_replies_and_router_adverts_are_dropped_with_a_log_line() {
    let dir = scratch("hostile");
    let mut ns = Netns::new("ho", "192.168.71.1/24", Some("fd71::1/64"));
    let g = ns.boot("examples/net/cairn.toml", &dir.join("out"), &[]);
    let mut t = g.wait("eth0: DHCPv4 discover sent", 120);
    let corpus = cairn_e2e::root().join("crates/cairn-init/fuzz/corpus");
    let read = |f: &str| std::fs::read(corpus.join(f)).unwrap();
    // Each one is sent again every second until the guest logs it: the
    // namespace cannot see when the guest starts hearing the link (its
    // IPv6, and so ff02::1, comes up a moment after the carrier).
    for (file, why) in [
        (
            "dhcp/truncated",
            "not a DHCP message: 200 bytes, a DHCP message has at least 240",
        ),
        (
            "dhcp/option_len_overflow",
            "DHCP field options: option runs past the end of the packet",
        ),
        (
            "dhcp/search_compression_loop",
            "DHCP field option 119: compression pointers loop",
        ),
    ] {
        let line = format!("eth0: DHCP packet dropped: {why}");
        let bytes = read(file);
        t = g.resend_until(t, &line, 60, || {
            ns.dhcp_broadcast(Ipv4Addr::new(192, 168, 71, 1), &bytes)
        });
    }
    let router = ns.link_local();
    for (file, why) in [
        ("ra/short", "router advert too short (10 bytes)"),
        (
            "ra/dnssl_loop",
            "DNSSL option at offset 16 holds a bad domain name",
        ),
    ] {
        let line = format!("eth0: router advert from {router} dropped: {why}");
        let bytes = read(file);
        t = g.resend_until(t, &line, 60, || ns.icmpv6_all_nodes(&bytes));
    }
    assert!(!g.text().contains("lease obtained"), "{}", g.text());

    // Still working: real servers now answer.
    let mut servers = Netns::RA_ONLY.to_vec();
    servers.extend([
        "--no-ping",
        "--dhcp-range=192.168.71.50,192.168.71.99,255.255.255.0,2m",
        "--dhcp-option=option6:dns-server,[fd71::53]",
    ]);
    ns.dnsmasq(&dir, &servers);
    g.wait_from(t, "eth0: DHCPv4 lease obtained: 192.168.71.", 120);
    g.wait_from(
        t,
        &format!("eth0: router advert from {router}: dns [fd71::53]"),
        90,
    );
    g.show(&["eth0: "]);
}

/// Liveness under hostile load on the link (issue 12): once the guest has
/// its lease (dnsmasq), the namespace floods its tap link with router
/// adverts, each naming a new DNS server, and at the same time with UDP to
/// port 68 (junk for the DHCP client). The init keeps at most 8 advert
/// DNS servers and says so once (not per advert), counts the dropped
/// packets in a line logged at a limited rate (not a line per packet), and
/// stays alive: afterwards the guest answers ping and a TCP connection, a
/// service's `cairnctl status --json` lists at most 8 advert servers, and a
/// well-behaved service that asks `cairnctl status` every second keeps
/// logging.
#[test]
fn router_advert_and_dhcp_port_floods_are_bounded() {
    const ADVERTS: u16 = 300;
    const UDP_BURSTS: usize = 40;
    const UDP_PER_BURST: usize = 100;
    let dir = scratch("flood");
    let mut ns = Netns::new("fl", "192.168.69.1/24", None);
    ns.dnsmasq(
        &dir,
        &[
            "--no-ping",
            "--dhcp-range=192.168.69.50,192.168.69.99,255.255.255.0,2m",
            "--dhcp-option=option:dns-server,192.168.69.53",
        ],
    );
    let manifest = write_manifest(
        &dir,
        "net-flood",
        r#"[[binary]]
path = "/usr/bin/busybox"

[[service]]
name = "tick"
exec = ["/usr/bin/busybox", "sh", "-c", """
n=0
while :; do
  n=$((n+1))
  if /usr/bin/cairnctl status >/dev/null; then echo "tick $n"; else echo "tick $n: cairnctl failed"; fi
  sleep 1
done
"""]

[[service]]
name = "report"
exec = ["/usr/bin/busybox", "sh", "-c", """
busybox nc -l -p 7000 >/dev/null
echo "json $(/usr/bin/cairnctl status --json)"
sed 's/^/resolv: /' /etc/resolv.conf
echo "report done"
"""]
after = ["network-online"]
"#,
    );
    let g = ns.boot(manifest.to_str().unwrap(), &dir.join("out"), &[]);
    let t = g.wait("eth0: DHCPv4 lease obtained: 192.168.69.", 120);
    let guest: Ipv4Addr = g
        .leased_address(0)
        .parse()
        .unwrap_or_else(|_| panic!("no leased address\n{}", g.text()));
    g.wait_from(t, "tick: tick ", 60);

    // Router adverts (router lifetime 0: not a default router) with one
    // RDNSS server each, fd69::1:N, lifetime 600 s.
    let advert = |n: u16| {
        let mut p = vec![134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[25, 3, 0, 0, 0, 0, 2, 0x58]);
        p.extend_from_slice(&std::net::Ipv6Addr::new(0xfd69, 0, 0, 0, 0, 0, 1, n).octets());
        p
    };
    let router = ns.link_local();
    // The guest hears the link's adverts (sent until it logs the first).
    let t = g.resend_until(
        t,
        &format!("eth0: router advert from {router}: dns [fd69::1:0]"),
        60,
        || ns.icmpv6_all_nodes(&advert(0)),
    );

    // Both floods at once, each bounded in count and in time, only on the
    // namespace's own tap link.
    let start = std::time::Instant::now();
    let limit = Duration::from_secs(120);
    std::thread::scope(|s| {
        let ns = &ns;
        s.spawn(move || {
            ns.inside(move || {
                let sock = std::net::UdpSocket::bind((Ipv4Addr::new(192, 168, 69, 1), 0))
                    .expect("UDP socket in the namespace");
                let junk: [&[u8]; 2] = [&[0x55; 40], &[0; 300]];
                for burst in 0..UDP_BURSTS {
                    if start.elapsed() > limit {
                        break;
                    }
                    for n in 0..UDP_PER_BURST {
                        let _ = sock.send_to(junk[(burst + n) % 2], (guest, 68));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        for n in 1..=ADVERTS {
            if start.elapsed() > limit {
                break;
            }
            ns.icmpv6_all_nodes(&advert(n));
        }
    });
    eprintln!("floods sent in {:?}", start.elapsed());

    let full = "eth0: router advert DNS list full (8 servers); the oldest are replaced";
    g.wait_from(t, full, 180);
    let counted = g.wait_from(t, " dropped in the last 10 s)", 120);

    // Still alive: ping, a TCP connection (it starts the report), the
    // report, and the ticking service goes on.
    assert!(
        ns.ping(&guest.to_string(), 30),
        "the guest does not answer ping after the floods\n{}",
        g.text()
    );
    let connected = ns.inside(move || {
        for _ in 0..60 {
            let to = std::net::SocketAddr::from((guest, 7000));
            if let Ok(mut c) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                let _ = c.write_all(b"go\n");
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        false
    });
    assert!(connected, "no TCP connection to the guest\n{}", g.text());
    let done = g.wait_from(counted, "report: report done", 60);
    g.wait_from(done, "tick: tick ", 30);

    let text = g.text();
    let after = &text[t..];
    // The full list is logged once; an advert line only while there was
    // room (the first advert and seven more), none per flooded advert.
    assert_eq!(after.matches(full).count(), 1, "{text}");
    let advert_lines = after
        .lines()
        .filter(|l| l.contains(&format!("eth0: router advert from {router}: dns [")))
        .count();
    assert!(advert_lines <= 7, "{advert_lines} advert lines\n{text}");
    // Drops: fewer lines than the drops they count.
    let drop_lines: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("eth0: DHCP packet dropped: "))
        .collect();
    let counted_drops: u64 = drop_lines
        .iter()
        .map(|l| {
            l.rsplit_once(" (")
                .and_then(|(_, c)| c.strip_suffix(" dropped in the last 10 s)"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        })
        .sum();
    assert!(
        (drop_lines.len() as u64) < counted_drops,
        "{} drop lines for {counted_drops} drops\n{text}",
        drop_lines.len()
    );
    // At most 8 advert servers in the status and in resolv.conf.
    let json = g.line_with(t, "report: json ");
    let dns = json
        .split("\"dns\":[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no dns list in {json}\n{text}"));
    let v6 = dns.split(',').filter(|d| d.contains("fd69::")).count();
    assert!((1..=8).contains(&v6), "{v6} advert servers: {json}");
    assert!(dns.contains("192.168.69.53"), "{json}");
    let resolv_v6 = after
        .lines()
        .filter(|l| l.contains("report: resolv: nameserver fd69::"))
        .count();
    assert!(resolv_v6 <= 8, "{text}");
    assert!(!text.contains("cairnctl failed"), "{text}");
    eprintln!("{json}");
    g.show(&[full, " dropped", "resolv.conf:", "report: "]);
}

//! Diskless fleets end to end: `cairn netboot` writes a boot server's
//! directory; a lab in a network namespace (a bridge, real dnsmasq for
//! DHCP and TFTP with the generated configuration, `python3 -m
//! http.server`) boots three diskless QEMU nodes at once, each with its
//! own MAC and firmware variable store: one by OVMF's UEFI HTTP boot, one
//! by OVMF's UEFI PXE (TFTP), one by SeaBIOS through iPXE. Each reaches
//! `cairn: ready` with the hostname DHCP gave its MAC, and the servers'
//! logs show each node's fetches. Then per-node configs (`[netboot]`):
//! signed, tampered with, absent, required, and behind a slow server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_e2e::net::{scratch, write_manifest, Guest, Netns};
use cairn_e2e::{
    cairn, ovmf_args, run_with_timeout, snakeoil_key, OVMF_VARS, OVMF_VARS_SNAKEOIL, SNAKEOIL_PEM,
};

const SERVER: &str = "10.77.0.1";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Firmware {
    UefiHttp,
    UefiPxe,
    Bios,
}

/// One diskless node of the lab: its tap, MAC, firmware, and the
/// hostname and address dnsmasq gives that MAC.
struct Node {
    host: &'static str,
    tap: usize,
    fw: Firmware,
}

impl Node {
    fn mac(&self) -> String {
        format!("52:54:00:77:00:{:02x}", self.tap + 1)
    }

    fn ip(&self) -> String {
        format!("10.77.0.{}", 11 + self.tap)
    }

    /// dnsmasq's `dhcp-host` for it.
    fn dhcp_host(&self) -> String {
        format!("--dhcp-host={},{},{}", self.mac(), self.ip(), self.host)
    }
}

const NODES: [Node; 3] = [
    Node {
        host: "node-http",
        tap: 0,
        fw: Firmware::UefiHttp,
    },
    Node {
        host: "node-pxe",
        tap: 1,
        fw: Firmware::UefiPxe,
    },
    Node {
        host: "node-bios",
        tap: 2,
        fw: Firmware::Bios,
    },
];

/// The appliance every node boots: a service that prints the hostname
/// and a per-node value (`NODE_VALUE`, which node configs may set), and
/// `netboot` (its `[netboot]` table's keys, trusting `dir/keys`).
fn manifest(dir: &Path, netboot: &str) -> PathBuf {
    write_manifest(
        dir,
        "node",
        &format!(
            r#"[[binary]]
path = "/usr/bin/busybox"

[[service]]
name = "whoami"
exec = ["/usr/bin/busybox", "sh", "-c", "echo \"node: hostname=$(/usr/bin/busybox hostname) value=$NODE_VALUE\""]
env = {{ NODE_VALUE = "builtin" }}
config_env = ["NODE_VALUE"]
after = ["network-online"]

[netboot]
keys = ["keys/update.pub"]
{netboot}
"#
        ),
    )
}

/// The node key pair in `dir/keys` (`cairn keys generate --update`).
fn keys(dir: &Path) -> PathBuf {
    let mut c = cairn();
    c.args(["keys", "generate", "--update"])
        .arg(dir.join("keys"));
    run_with_timeout(c, Duration::from_secs(60)).assert_ok();
    dir.join("keys/update.key")
}

/// `cairn netboot sign-node`: `NODE_VALUE = value` for `node`, into
/// `served/nodes/`; returns the file.
fn sign_node(d: &Path, manifest: &Path, served: &Path, node: &Node, value: &str) -> PathBuf {
    let config = d.join(format!("{}.toml", node.host));
    std::fs::write(
        &config,
        format!("[service.whoami]\nenv = {{ NODE_VALUE = \"{value}\" }}\n"),
    )
    .unwrap();
    let mut c = cairn();
    c.args(["netboot", "sign-node"])
        .arg(&config)
        .arg("--manifest")
        .arg(manifest)
        .args(["--mac", &node.mac()])
        .arg("--key")
        .arg(d.join("keys/update.key"))
        .arg("--dir")
        .arg(served);
    let o = run_with_timeout(c, Duration::from_secs(60));
    o.assert_ok();
    served
        .join("nodes")
        .join(format!("{}.toml", node.mac().replace(':', "-")))
}

/// `cairn netboot MANIFEST --dir DIR` for the lab's server.
fn netboot(manifest: &Path, dir: &Path) {
    netboot_with(manifest, dir, &[]);
}

/// [`netboot`] with more `cairn netboot` arguments (`--sign-key ...`).
fn netboot_with(manifest: &Path, dir: &Path, extra: &[&str]) {
    netboot_at(manifest, dir, &format!("{SERVER}:8000"), extra);
}

/// [`netboot_with`] for a directory served at `server` (`IP:PORT/PATH`).
fn netboot_at(manifest: &Path, dir: &Path, server: &str, extra: &[&str]) {
    let mut c = cairn();
    c.arg("netboot")
        .arg(manifest)
        .arg("--dir")
        .arg(dir)
        .args(["--server", server])
        .args(["--interface", "br0", "--fast"])
        .args(extra);
    let o = run_with_timeout(c, Duration::from_secs(300));
    o.assert_ok();
    o.assert_stdout_has("dnsmasq.conf");
}

/// The lab: the namespace with its bridge and taps, dnsmasq run with
/// the generated `dnsmasq.conf` (plus one `dhcp-host` per node), the
/// HTTP server on `served`.
struct Lab {
    ns: Netns,
    dnsmasq_log: PathBuf,
    http_log: PathBuf,
    dnsmasq: usize,
    http: usize,
}

impl Lab {
    fn start(tag: &str, scratch: &Path, served: &Path) -> Lab {
        Lab::start_with(tag, scratch, served, &[])
    }

    /// [`Lab::start`] with more dnsmasq arguments.
    fn start_with(tag: &str, scratch: &Path, served: &Path, more: &[&str]) -> Lab {
        Lab::start_for(&NODES, tag, scratch, served, more)
    }

    /// [`Lab::start_with`] for `nodes` (their taps and `dhcp-host`s).
    fn start_for(nodes: &[Node], tag: &str, scratch: &Path, served: &Path, more: &[&str]) -> Lab {
        let mut ns = Netns::bridged(tag, &format!("{SERVER}/24"), nodes.len());
        let conf = format!("--conf-file={}", served.join("dnsmasq.conf").display());
        let hosts: Vec<String> = nodes.iter().map(Node::dhcp_host).collect();
        let mut extra = vec![conf.as_str(), "--no-ping"];
        extra.extend(hosts.iter().map(String::as_str));
        extra.extend_from_slice(more);
        let (dnsmasq, dnsmasq_log) = ns.start_dnsmasq_on("br0", scratch, &extra);
        let http_log = scratch.join("http.log");
        let http = ns.http_server(SERVER, 8000, served, &http_log);
        Lab {
            ns,
            dnsmasq_log,
            http_log,
            dnsmasq,
            http,
        }
    }

    /// Boots `node` (QEMU in the namespace, on its tap), its variable
    /// store a fresh copy in `dir`.
    fn boot(&self, node: &Node, dir: &Path) -> Guest {
        self.boot_with(node, dir, false)
    }

    /// [`Lab::boot`]; with `secure`, a UEFI node boots OVMF's Secure Boot
    /// build (enforcing) with Debian's snakeoil keys enrolled.
    fn boot_with(&self, node: &Node, dir: &Path, secure: bool) -> Guest {
        let mut c = Command::new("ip");
        c.args(["netns", "exec"])
            .arg(self.ns.prefix()[3])
            .args(["qemu-system-x86_64", "-accel", "tcg", "-m", "256M"])
            .args(["-smp", "1", "-display", "none", "-vga", "none"])
            .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
            .arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname=tap{},script=no,downscript=no",
                node.tap
            ));
        // OVMF's own network stack (no iPXE option ROM on the NIC); SeaBIOS
        // boots through the NIC's ROM, Debian's iPXE.
        let rom = if node.fw == Firmware::Bios {
            ""
        } else {
            ",romfile="
        };
        c.arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={}{rom}", node.mac()));
        if node.fw == Firmware::Bios {
            c.args(["-machine", "pc"]);
            return Guest::spawn(c);
        }
        let vars = dir.join(format!("{}.vars.fd", node.host));
        let store = if secure {
            OVMF_VARS_SNAKEOIL
        } else {
            OVMF_VARS
        };
        std::fs::copy(store, &vars).unwrap();
        ovmf_args(&mut c, &vars, secure);
        if node.fw == Firmware::UefiHttp {
            // OVMF tries PXE before HTTP boot: this node has no PXE, so
            // its boot file comes from the DHCP offer for HTTP clients.
            for v in ["IPv4PXESupport", "IPv6PXESupport"] {
                c.args(["-fw_cfg", &format!("name=opt/org.tianocore/{v},string=no")]);
            }
        }
        Guest::spawn(c)
    }

    fn http_log(&self) -> String {
        std::fs::read_to_string(&self.http_log).unwrap_or_default()
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(&self.dnsmasq_log).unwrap_or_default()
    }

    /// Seconds of CPU (user + system) the servers have used so far:
    /// (dnsmasq, HTTP server).
    fn cpu(&self) -> (f64, f64) {
        (
            cpu_secs(self.ns.pid(self.dnsmasq)),
            cpu_secs(self.ns.pid(self.http)),
        )
    }
}

/// utime + stime of `pid` in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// The `ready` line's "N s since power-on by the TSC".
fn power_on_to_ready(console: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains("cairn: ready"))?;
    line.split("; ")
        .find(|p| p.contains("since power-on"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits (each node at most `secs`) until every node has printed its
/// line; returns the wall time each took from its start.
fn wait_all(
    guests: &[(&Node, Guest, Instant)],
    needle: &dyn Fn(&Node) -> String,
    secs: u64,
) -> Vec<f64> {
    let mut took = vec![None; guests.len()];
    let end = Instant::now() + Duration::from_secs(secs);
    while took.iter().any(Option::is_none) {
        for (i, (node, g, start)) in guests.iter().enumerate() {
            if took[i].is_none() && g.find_from(0, &needle(node)).is_some() {
                took[i] = Some(start.elapsed().as_secs_f64());
            }
        }
        if Instant::now() > end {
            for (i, (node, g, _)) in guests.iter().enumerate() {
                if took[i].is_none() {
                    panic!(
                        "{} ({:?}) did not print {:?} within {secs}s\n--- console ---\n{}",
                        node.host,
                        node.fw,
                        needle(node),
                        g.text()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    took.into_iter().map(Option::unwrap).collect()
}

/// A fresh scratch directory for a lab test with the node key pair in
/// it: (it, the directory to serve in it); `None` (the test is skipped)
/// without CAIRN_NET_TESTS.
fn lab_dir(name: &str) -> Option<(PathBuf, PathBuf)> {
    if std::env::var_os("CAIRN_NET_TESTS").is_none() {
        eprintln!("skipped: set CAIRN_NET_TESTS=1 (root, QEMU, dnsmasq, ipxe)");
        return None;
    }
    let d = scratch(name);
    keys(&d);
    let served = d.join("srv");
    Some((d, served))
}

/// The node config's path on the server, as the node asks for it.
fn config_path(node: &Node) -> String {
    format!("/nodes/{}.toml", node.mac().replace(':', "-"))
}

/// Whether the HTTP server's log has a `GET path` from `node`.
fn got(http: &str, node: &Node, path: &str) -> bool {
    let from = format!("{} ", node.ip());
    let get = format!("\"GET {path} HTTP");
    http.lines()
        .any(|l| l.starts_with(&from) && l.contains(&get))
}

/// The three nodes boot the one image at once, each by its own path,
/// and come up with the hostname DHCP gave its MAC and their own node
/// config: node-http's is signed (its value is printed), node-pxe's was
/// changed after signing (refused: the built-in value), node-bios has
/// none (the built-in value).
#[test]
fn three_diskless_nodes_boot_one_image_by_http_pxe_and_ipxe() {
    let Some((d, served)) = lab_dir("netboot") else {
        return;
    };
    let m = manifest(&d, &format!("url = \"http://{SERVER}:8000/nodes/\"\n"));
    netboot(&m, &served);
    let [http_node, pxe_node, bios_node] = &NODES;
    sign_node(&d, &m, &served, http_node, "alpha");
    let tampered = sign_node(&d, &m, &served, pxe_node, "bravo");
    let text = std::fs::read_to_string(&tampered).unwrap();
    std::fs::write(&tampered, text.replace("bravo", "BRAVO")).unwrap();

    let lab = Lab::start("nb", &d, &served);
    let guests: Vec<(&Node, Guest, Instant)> = NODES
        .iter()
        .map(|n| (n, lab.boot(n, &d), Instant::now()))
        .collect();
    let value = |n: &Node| if n.tap == 0 { "alpha" } else { "builtin" };
    let took = wait_all(
        &guests,
        &|n| format!("node: hostname={} value={}", n.host, value(n)),
        600,
    );
    let http = lab.http_log();
    let dnsmasq = lab.dnsmasq_log();
    let size = |f: &str| std::fs::metadata(served.join(f)).unwrap().len();
    let mut bytes = Vec::new();
    for (node, g, _) in &guests {
        let text = g.text();
        assert!(
            text.contains(&format!("cairn: hostname set to {} (DHCP)", node.host)),
            "{text}"
        );
        // Every node asked for its own config, by its MAC.
        assert!(got(&http, node, &config_path(node)), "{http}");
        let b = match node.fw {
            Firmware::UefiHttp => {
                assert!(got(&http, node, "/node.efi"), "no GET of the UKI:\n{http}");
                size("node.efi")
            }
            Firmware::UefiPxe => {
                let sent = format!("sent {}/node.efi to {}", served.display(), node.ip());
                assert!(dnsmasq.contains(&sent), "no TFTP of the UKI:\n{dnsmasq}");
                assert!(!got(&http, node, "/node.efi"), "{http}");
                size("node.efi")
            }
            Firmware::Bios => {
                // Only iPXE asks for the script (SeaBIOS's and iPXE's
                // own words go to the screen, which this node lacks).
                for f in ["/boot.ipxe", "/node.vmlinuz", "/node.initrd"] {
                    assert!(got(&http, node, f), "no GET of {f}:\n{http}");
                }
                size("boot.ipxe") + size("node.vmlinuz") + size("node.initrd")
            }
        };
        bytes.push(b);
    }
    let say = |n: &Node, what: &str| {
        let g = &guests[n.tap].1;
        g.line_with(0, what)
    };
    assert!(say(http_node, "signature verified").contains(&config_path(http_node)));
    assert!(guests[0].1.text().contains("cairn: node config applied"));
    let refused = say(pxe_node, "refused");
    assert!(
        refused.contains("no signature by a trusted key for appliance `node` and this node"),
        "{}",
        guests[1].1.text()
    );
    let absent = say(bios_node, "404 File not found");
    assert!(
        absent.contains(&config_path(bios_node)),
        "{}",
        guests[2].1.text()
    );
    for n in [pxe_node, bios_node] {
        assert!(!say(n, "running the built-in config").is_empty());
        assert!(!guests[n.tap].1.text().contains("node config applied"));
    }
    let (dns_cpu, http_cpu) = lab.cpu();
    for (i, (node, g, _)) in guests.iter().enumerate() {
        eprintln!(
            "{:<10} {:?}: ready {:.1} s after power-on (TSC), its line after {:.1} s wall; {} bytes served",
            node.host,
            node.fw,
            power_on_to_ready(&g.text()).unwrap_or(f64::NAN),
            took[i],
            bytes[i]
        );
    }
    eprintln!(
        "servers' CPU for {} boots: dnsmasq {dns_cpu:.2} s, HTTP {http_cpu:.2} s",
        NODES.len()
    );
    drop(guests);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

/// An HTTP server that waits `delay` seconds before each answer (the
/// standard library's server, `python3 -m http.server`'s handler).
const SLOW_SERVER: &str = "import functools, http.server, sys, time
class Slow(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        time.sleep(float(sys.argv[3]))
        super().do_GET()
h = functools.partial(Slow, directory=sys.argv[1])
http.server.ThreadingHTTPServer((sys.argv[4], int(sys.argv[2])), h).serve_forever()
";

/// `[netboot] required = true` behind a slow server: node-http's signed
/// config comes after the delay and its service waited for it; node-bios
/// has none, so none of its services starts and it never gets ready.
#[test]
fn required_node_config_behind_a_slow_server() {
    let Some((d, served)) = lab_dir("netboot-required") else {
        return;
    };
    let m = manifest(
        &d,
        &format!("url = \"http://{SERVER}:8001/nodes/\"\nrequired = true\ntimeout = \"20s\"\n"),
    );
    netboot(&m, &served);
    let [http_node, _, bios_node] = &NODES;
    sign_node(&d, &m, &served, http_node, "charlie");
    let mut lab = Lab::start("nbr", &d, &served);
    let slow_log = d.join("slow.log");
    let dir = served.to_str().unwrap().to_string();
    lab.ns.spawn(
        &[
            "/usr/bin/python3",
            "-u",
            "-c",
            SLOW_SERVER,
            &dir,
            "8001",
            "8",
            SERVER,
        ],
        &slow_log,
    );
    let guests: Vec<(&Node, Guest, Instant)> = [http_node, bios_node]
        .into_iter()
        .map(|n| (n, lab.boot(n, &d), Instant::now()))
        .collect();
    let (g_http, g_bios) = (&guests[0].1, &guests[1].1);
    let fetching = g_http.wait("fetching http://", 600);
    let verified = g_http.wait_from(fetching, "signature verified", 120);
    let line = g_http.wait_from(verified, "node: hostname=node-http value=charlie", 120);
    assert!(g_http
        .find_from(0, "node: hostname=node-http value=builtin")
        .is_none());
    let slow = std::fs::read_to_string(&slow_log).unwrap_or_default();
    assert!(got(&slow, http_node, &config_path(http_node)), "{slow}");
    let refused = g_bios.wait("services are not started", 600);
    // Long enough for a service to have started and printed.
    std::thread::sleep(Duration::from_secs(10));
    let text = g_bios.text();
    assert!(text[..refused].contains("404 File not found"), "{text}");
    assert!(!text.contains("node: hostname="), "{text}");
    assert!(!text.contains("cairn: ready"), "{text}");
    assert!(g_http.text()[..line].contains("cairn: node config applied"));
    drop(guests);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

/// Secure Boot on both UEFI nodes (OVMF enforcing, the snakeoil keys):
/// the UKI signed by `cairn netboot --sign-key` boots by HTTP and by
/// PXE; an unsigned UKI put in its place on the server is refused by the
/// firmware of both, after being fetched.
#[test]
fn secure_boot_nodes_take_the_signed_uki_and_refuse_an_unsigned_one() {
    let Some((d, served)) = lab_dir("netboot-sb") else {
        return;
    };
    let m = manifest(&d, &format!("url = \"http://{SERVER}:8000/nodes/\"\n"));
    let key = snakeoil_key(&d);
    netboot_with(
        &m,
        &served,
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--sign-cert",
            SNAKEOIL_PEM,
        ],
    );
    // The same image unsigned, for the second round.
    let unsigned = d.join("unsigned");
    netboot(&m, &unsigned);
    let lab = Lab::start("nbsb", &d, &served);
    let uefi = [&NODES[0], &NODES[1]];
    let signed: Vec<Guest> = uefi.iter().map(|n| lab.boot_with(n, &d, true)).collect();
    for (n, g) in uefi.iter().zip(&signed) {
        g.wait(&format!("node: hostname={} value=builtin", n.host), 600);
        assert!(!g.text().contains("Access Denied"), "{}", g.text());
    }
    drop(signed);
    // Through a rename: the server never serves half a file.
    let tmp = served.join("node.efi.new");
    std::fs::copy(unsigned.join("node.efi"), &tmp).unwrap();
    std::fs::rename(&tmp, served.join("node.efi")).unwrap();
    let (http_before, tftp_before) = (lab.http_log().len(), lab.dnsmasq_log().len());
    let refused: Vec<Guest> = uefi.iter().map(|n| lab.boot_with(n, &d, true)).collect();
    for g in &refused {
        g.wait("Access Denied", 600);
        let text = g.text();
        assert!(!text.contains("Linux version"), "{text}");
        assert!(!text.contains("cairn: ready"), "{text}");
    }
    // It was fetched (and then refused): by HTTP and by TFTP.
    assert!(got(&lab.http_log()[http_before..], &NODES[0], "/node.efi"));
    let sent = format!("sent {}/node.efi to {}", served.display(), NODES[1].ip());
    let tftp = lab.dnsmasq_log();
    assert!(tftp[tftp_before..].contains(&sent), "{tftp}");
    drop(refused);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

/// Rolling a fleet as the generated dnsmasq.conf says: V2 (another
/// built-in value) built into DIR/v2, the commented canary lines taken
/// with the canaries' MACs: the two UEFI nodes (HTTP and PXE) boot V2,
/// the BIOS node V1. Then V2 is built into DIR itself: the BIOS node's
/// next boot is V2 too.
#[test]
fn rolling_a_fleet_v2_to_canaries_by_mac_then_to_all() {
    let Some((d, served)) = lab_dir("netboot-roll") else {
        return;
    };
    let m1 = manifest(&d, &format!("url = \"http://{SERVER}:8000/nodes/\"\n"));
    let m2 = d.join("cairn-v2.toml");
    let v1 = std::fs::read_to_string(&m1).unwrap();
    std::fs::write(
        &m2,
        v1.replace("NODE_VALUE = \"builtin\"", "NODE_VALUE = \"v2\""),
    )
    .unwrap();
    netboot(&m1, &served);
    netboot_at(&m2, &served.join("v2"), &format!("{SERVER}:8000/v2"), &[]);
    let [http_node, pxe_node, bios_node] = &NODES;
    let conf = std::fs::read_to_string(served.join("dnsmasq.conf")).unwrap();
    let mut canary = String::new();
    for l in conf.lines() {
        if let Some(l) = l.strip_prefix("# dhcp-boot=tag:canary,") {
            canary += &format!("dhcp-boot=tag:canary,{l}\n");
        }
    }
    assert_eq!(canary.lines().count(), 3, "{conf}");
    for n in [http_node, pxe_node] {
        canary += &format!("dhcp-mac=set:canary,{}\n", n.mac());
    }
    let canary_conf = d.join("canary.conf");
    std::fs::write(&canary_conf, canary).unwrap();
    let arg = format!("--conf-file={}", canary_conf.display());
    let lab = Lab::start_with("nbroll", &d, &served, &[&arg]);
    let guests: Vec<(&Node, Guest, Instant)> = NODES
        .iter()
        .map(|n| (n, lab.boot(n, &d), Instant::now()))
        .collect();
    let version = |n: &Node| {
        if n.fw == Firmware::Bios {
            "builtin"
        } else {
            "v2"
        }
    };
    wait_all(
        &guests,
        &|n| format!("node: hostname={} value={}", n.host, version(n)),
        600,
    );
    let http = lab.http_log();
    assert!(got(&http, http_node, "/v2/node.efi"), "{http}");
    assert!(got(&http, bios_node, "/boot.ipxe"), "{http}");
    let sent = format!("sent {}/v2/node.efi to {}", served.display(), pxe_node.ip());
    assert!(lab.dnsmasq_log().contains(&sent), "{}", lab.dnsmasq_log());
    drop(guests);
    // To all: V2 replaces V1 where every node looks.
    netboot(&m2, &served);
    let g = lab.boot(bios_node, &d);
    g.wait("node: hostname=node-bios value=v2", 600);
    drop(g);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

/// Not part of the suite (`--ignored`): N nodes (CAIRN_NETBOOT_N, default
/// 3) boot by UEFI HTTP at once; prints each node's power-on to ready
/// (the guest's TSC; under TCG it runs at host speed), the bytes the HTTP
/// server sent per boot (the sizes of the files each node GETs) and the
/// servers' CPU time. The README's numbers come from it.
#[test]
#[ignore]
fn measure_n_nodes_booting_at_once() {
    let Some((d, served)) = lab_dir("netboot-measure") else {
        return;
    };
    let n: usize = std::env::var("CAIRN_NETBOOT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let m = manifest(&d, &format!("url = \"http://{SERVER}:8000/nodes/\"\n"));
    netboot(&m, &served);
    let nodes: Vec<Node> = (0..n)
        .map(|tap| Node {
            host: Box::leak(format!("node{tap}").into_boxed_str()),
            tap,
            fw: Firmware::UefiHttp,
        })
        .collect();
    let lab = Lab::start_for(&nodes, "nbm", &d, &served, &[]);
    let cpu0 = lab.cpu();
    let guests: Vec<(&Node, Guest, Instant)> = nodes
        .iter()
        .map(|n| (n, lab.boot(n, &d), Instant::now()))
        .collect();
    let took = wait_all(&guests, &|n| format!("node: hostname={} ", n.host), 1200);
    let cpu = lab.cpu();
    let http = lab.http_log();
    let size = |f: &str| std::fs::metadata(served.join(f)).map_or(0, |m| m.len());
    for (i, (node, g, _)) in guests.iter().enumerate() {
        let bytes = if got(&http, node, "/node.efi") {
            size("node.efi")
        } else {
            0
        };
        eprintln!(
            "N={n} {}: power-on to ready {:.1} s (TSC), {:.1} s wall; {bytes} bytes by HTTP",
            node.host,
            power_on_to_ready(&g.text()).unwrap_or(f64::NAN),
            took[i]
        );
    }
    eprintln!(
        "N={n}: servers' CPU for the boots: dnsmasq {:.2} s, HTTP {:.2} s",
        cpu.0 - cpu0.0,
        cpu.1 - cpu0.1
    );
    drop(guests);
    drop(lab);
    let _ = std::fs::remove_dir_all(&d);
}

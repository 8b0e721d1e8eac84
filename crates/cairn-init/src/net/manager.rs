//! The network manager: owns the interfaces, their DHCP clients and
//! sockets, and decides when `network-online` is reached.
//!
//! Driven from PID 1's event loop: [`Net::start`] once; the loop watches
//! [`Net::fds`] and [`Net::deadline`] and calls [`Net::process`] (reads
//! every socket without blocking, runs due timers) when one is ready.
//!
//! Hostile load stays bounded: one call reads at most
//! [`sock::PACKETS_PER_CALL`] packets per socket (a socket with more stays
//! readable and the loop calls again next turn); dropped packets are
//! counted and logged at most once every [`DROP_LOG_EVERY`] per socket;
//! the DNS lists from router adverts are capped per interface (see
//! [`ra::MAX_ADVERT_DNS`]), which the log says once, and a flood that
//! keeps replacing them rewrites resolv.conf at most once every
//! [`RESOLV_FLOOD_EVERY`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant, SystemTime};

use cairn_manifest::{InterfaceConfig, Ipv6Mode, NetConfig};

use super::dhcp::{self, Action, Client, Input, LeaseInfo};
use super::packet::{self, ClientId};
use super::ra::{self, AdvertDns};
use super::resolv::{self, DnsSource};
use super::rtnl::{Link, LinkEvent, Monitor, Rtnl};
use super::sntp;
use super::sock::{self, ArpProbe, DhcpSocket, RaSocket, PACKETS_PER_CALL};
use crate::{debug, info};

/// Where resolv.conf goes (the initramfs root is writable).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How much longer than the lease the kernel keeps a DHCP address.
const KERNEL_LIFETIME_SLACK: Duration = Duration::from_secs(5);
/// While not online, addresses are re-read this often (SLAAC happens in
/// the kernel; cairn only looks).
const ADDR_POLL: Duration = Duration::from_millis(500);
/// Router solicitations after an interface comes up.
const SOLICIT_AT: [Duration; 3] = [
    Duration::from_millis(1500),
    Duration::from_secs(4),
    Duration::from_secs(10),
];
const SNTP_TIMEOUT: Duration = Duration::from_secs(3);
const SNTP_RETRY: Duration = Duration::from_secs(10);
/// Dropped packets of one socket are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// While router adverts keep replacing entries of a full DNS list (a
/// flood), resolv.conf is rewritten (and logged) at most this often.
const RESOLV_FLOOD_EVERY: Duration = Duration::from_secs(5);

/// A snapshot for the status screen and `cairnctl status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub online: bool,
    pub interfaces: Vec<IfaceStatus>,
    pub dns: Vec<IpAddr>,
    pub search: Vec<String>,
    /// Whether SNTP has set the clock.
    pub clock_synced: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceStatus {
    pub name: String,
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    /// `address/prefix`, as the kernel has them (global scope).
    pub addresses: Vec<String>,
    /// The DHCP client's state (`BOUND`, ...), if DHCPv4 runs.
    pub dhcp: Option<&'static str>,
    pub lease: Option<LeaseStatus>,
    pub usable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub server: Ipv4Addr,
    pub remaining: Duration,
}

impl Status {
    /// Lines for the status screen.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "network:  {}{}",
            if self.online { "online" } else { "waiting" },
            if self.clock_synced {
                ", clock synced (SNTP)"
            } else {
                ""
            }
        );
        for i in &self.interfaces {
            let _ = write!(out, "  {:<10} dhcp4 {}", i.name, i.dhcp.unwrap_or("off"));
            if let Some(l) = &i.lease {
                let _ = write!(
                    out,
                    " {}/{} from {} ({}s left)",
                    l.addr,
                    l.prefix_len,
                    l.server,
                    l.remaining.as_secs()
                );
            }
            out.push('\n');
        }
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(out, "  dns {}", dns.join(" "));
        }
        out
    }

    /// A JSON object for `cairnctl status --json`.
    pub fn json(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let ifaces: Vec<String> = self
            .interfaces
            .iter()
            .map(|i| {
                let lease = i.lease.as_ref().map_or("null".to_string(), |l| {
                    format!(
                        "{{\"address\":{},\"prefix\":{},\"server\":{},\"remaining_s\":{}}}",
                        q(&l.addr.to_string()),
                        l.prefix_len,
                        q(&l.server.to_string()),
                        l.remaining.as_secs()
                    )
                });
                format!(
                    "{{\"name\":{},\"dhcp4\":{},\"lease\":{lease},\"usable\":{}}}",
                    q(&i.name),
                    i.dhcp.map_or("null".to_string(), q),
                    i.usable
                )
            })
            .collect();
        let dns: Vec<String> = self.dns.iter().map(|d| q(&d.to_string())).collect();
        format!(
            "{{\"online\":{},\"clock_synced\":{},\"interfaces\":[{}],\"dns\":[{}]}}",
            self.online,
            self.clock_synced,
            ifaces.join(","),
            dns.join(",")
        )
    }
}

/// Packets dropped on one socket (malformed, or for another client),
/// logged at a limited rate: a drop after a quiet spell is logged at once
/// with its reason; drops in the [`DROP_LOG_EVERY`] after a line are
/// counted, and one line then gives their number and the last one's
/// reason: `LINE (N dropped in the last 10 s)`.
#[derive(Debug, Default)]
struct DropLog {
    /// No line before this moment (None: the next drop is logged at once).
    quiet_until: Option<Instant>,
    /// Drops not logged yet, and the line the last of them would have had.
    pending: u64,
    last: String,
}

impl DropLog {
    /// Counts one drop; returns the line to log, if one is due. `line` is
    /// the drop's own log line.
    fn dropped(&mut self, now: Instant, line: impl FnOnce() -> String) -> Option<String> {
        self.pending += 1;
        self.last = line();
        if self.quiet_until.is_some_and(|t| now < t) {
            return None;
        }
        self.emit(now)
    }

    /// The count line for drops not logged yet, once the quiet spell is
    /// over.
    fn flush(&mut self, now: Instant) -> Option<String> {
        if self.pending == 0 || self.quiet_until.is_some_and(|t| now < t) {
            return None;
        }
        self.emit(now)
    }

    fn emit(&mut self, now: Instant) -> Option<String> {
        let n = std::mem::take(&mut self.pending);
        let line = std::mem::take(&mut self.last);
        self.quiet_until = Some(now + DROP_LOG_EVERY);
        Some(if n == 1 {
            line
        } else {
            format!(
                "{line} ({n} dropped in the last {} s)",
                DROP_LOG_EVERY.as_secs()
            )
        })
    }

    /// When [`DropLog::flush`] has a line to give.
    fn deadline(&self) -> Option<Instant> {
        if self.pending == 0 {
            None
        } else {
            self.quiet_until
        }
    }
}

/// Reads at most [`PACKETS_PER_CALL`] packets from `recv` (a DHCP packet
/// socket): the replies to the client with `mac`; every other packet is
/// counted in `drops`. Lines to log go to `log`.
fn read_dhcp(
    mut recv: impl FnMut() -> Option<Vec<u8>>,
    mac: &[u8; 6],
    name: &str,
    now: Instant,
    drops: &mut DropLog,
    log: &mut Vec<String>,
) -> Vec<dhcp::Reply> {
    let mut out = Vec::new();
    for _ in 0..PACKETS_PER_CALL {
        let Some(p) = recv() else {
            break;
        };
        match packet::udp_payload(&p).and_then(|b| packet::decode(b, mac)) {
            Ok(r) => out.push(r),
            // Malformed, or another client's (normal on a shared link, and
            // counted the same way).
            Err(e) => {
                log.extend(drops.dropped(now, || format!("{name}: DHCP packet dropped: {e}")))
            }
        }
    }
    out
}

/// What [`read_adverts`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
struct AdvertsRead {
    /// A DNS list changed below its cap: resolv.conf is due now.
    changed: bool,
    /// A full DNS list had entries replaced (a flood, maybe).
    replaced: bool,
}

/// Reads at most [`PACKETS_PER_CALL`] router adverts from `recv` (the
/// ICMPv6 socket of interface `name`) into `known`; refused ones are
/// counted in `drops`. Lines to log go to `log`: one per advert that
/// changes the lists while they have room, the "full" notice once per
/// interface, never a line per advert that only replaces entries.
fn read_adverts(
    mut recv: impl FnMut() -> Option<(Vec<u8>, std::net::Ipv6Addr)>,
    name: &str,
    now: Instant,
    known: &mut Option<AdvertDns>,
    drops: &mut DropLog,
    log: &mut Vec<String>,
) -> AdvertsRead {
    let mut out = AdvertsRead::default();
    for _ in 0..PACKETS_PER_CALL {
        let Some((p, src)) = recv() else {
            break;
        };
        // RFC 4861 6.1.2: adverts come from a link-local address.
        if src.segments()[0] & 0xffc0 != 0xfe80 {
            log.extend(drops.dropped(now, || {
                format!("{name}: router advert from non-link-local {src} dropped")
            }));
            continue;
        }
        match ra::parse(&p) {
            Ok(dns) => {
                let known = known.get_or_insert_with(AdvertDns::default);
                let m = known.merge(&dns, now);
                log.extend(AdvertDns::full_notices(name, &m));
                if m.changed && !m.evicted {
                    log.push(format!(
                        "{name}: router advert from {src}: dns [{}] search [{}]",
                        known
                            .servers
                            .iter()
                            .map(|s| s.0.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                        known
                            .search
                            .iter()
                            .map(|s| s.0.clone())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                    out.changed = true;
                } else if m.changed {
                    out.replaced = true;
                }
            }
            Err(e) => log.extend(drops.dropped(now, || {
                format!("{name}: router advert from {src} dropped: {e}")
            })),
        }
    }
    out
}

struct DhcpRun {
    client: Client,
    sock: DhcpSocket,
    /// Packets on `sock` that were not for this client.
    drops: DropLog,
    probe: Option<ArpProbe>,
    id: ClientId,
    /// An INIT-REBOOT after a carrier loss is waiting for its answer.
    rebooting: bool,
}

struct Iface {
    link: Link,
    cfg: InterfaceConfig,
    /// Index of the `[[network]]` entry that matched (None: automatic).
    entry: Option<usize>,
    dhcp: Option<DhcpRun>,
    ra: Option<RaSocket>,
    ra_dns: Option<AdvertDns>,
    /// Adverts on `ra` that were refused.
    ra_drops: DropLog,
    solicit: Vec<Instant>,
    /// Global addresses last read from the kernel.
    addresses: Vec<(IpAddr, u8)>,
    static_v4: bool,
}

impl Iface {
    fn usable(&self) -> bool {
        if self.static_v4 {
            return true;
        }
        if self
            .dhcp
            .as_ref()
            .is_some_and(|d| d.client.lease().is_some())
        {
            return true;
        }
        // SLAAC (or static IPv6) counts once the kernel has a global address.
        self.cfg.ipv6 != Ipv6Mode::Off && self.addresses.iter().any(|(a, _)| a.is_ipv6())
    }
}

struct Sntp {
    sock: std::net::UdpSocket,
    next: Instant,
    pending: Option<(SocketAddr, u64, Instant)>,
    turn: usize,
    stepped: bool,
}

/// The network manager.
pub struct Net {
    cfg: NetConfig,
    /// Hostname from the manifest: sent to DHCP servers; a DHCP hostname
    /// is only applied when there is none.
    hostname: Option<String>,
    rtnl: Rtnl,
    monitor: Option<Monitor>,
    ifaces: BTreeMap<u32, Iface>,
    online_deadline: Instant,
    online: bool,
    next_addr_poll: Instant,
    resolv: String,
    /// When resolv.conf was last (re)considered, and whether a change from
    /// full advert lists waits for [`RESOLV_FLOOD_EVERY`] to pass.
    resolv_at: Instant,
    resolv_pending: bool,
    sntp: Option<Sntp>,
    dhcp_ntp: Vec<IpAddr>,
    dhcp_hostname_set: bool,
    seed: u64,
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The hostname to set from a DHCP lease (option 12): the server's, only
/// when the manifest set none and no DHCP hostname was set before.
fn dhcp_hostname<'a>(
    manifest: Option<&str>,
    already_set: bool,
    offered: Option<&'a str>,
) -> Option<&'a str> {
    if manifest.is_some() || already_set {
        return None;
    }
    offered
}

/// The MTU to set from a DHCP lease (option 26): the server's, unless the
/// manifest sets one for the interface.
fn dhcp_mtu(manifest: Option<u32>, offered: Option<u16>) -> Option<u32> {
    match manifest {
        Some(_) => None,
        None => offered.map(u32::from),
    }
}

fn sysctl(iface: &str, key: &str, value: &str) {
    if !super::rtnl::valid_ifname(iface) {
        debug!("interface name {iface:?} not used in a /proc/sys path");
        return;
    }
    let path = format!("/proc/sys/net/ipv6/conf/{iface}/{key}");
    if let Err(e) = std::fs::write(&path, value) {
        debug!("cannot set {path}: {e}");
    }
}

impl Net {
    /// Opens rtnetlink, configures every interface present and starts
    /// listening for new ones.
    pub fn start(cfg: NetConfig, hostname: Option<String>) -> Result<Net, super::rtnl::RtnlError> {
        let rtnl = Rtnl::open()?;
        let monitor = match Monitor::open() {
            Ok(m) => Some(m),
            Err(e) => {
                info!("{e}; interfaces added later will not be configured");
                None
            }
        };
        let now = Instant::now();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let sntp = match super::sock::udp_socket() {
            Ok(sock) => Some(Sntp {
                sock,
                next: now,
                pending: None,
                turn: 0,
                stepped: false,
            }),
            Err(e) => {
                info!("cannot open the SNTP socket: {e}");
                None
            }
        };
        let mut net = Net {
            online_deadline: now + Duration::from_secs(cfg.online_timeout),
            cfg,
            hostname,
            rtnl,
            monitor,
            ifaces: BTreeMap::new(),
            online: false,
            next_addr_poll: now,
            resolv: String::new(),
            resolv_at: now,
            resolv_pending: false,
            sntp,
            dhcp_ntp: Vec::new(),
            dhcp_hostname_set: false,
            seed,
        };
        match net.rtnl.links() {
            Ok(links) => {
                for l in links {
                    net.add_link(l, now);
                }
            }
            Err(e) => info!("{e}"),
        }
        net.write_resolv();
        Ok(net)
    }

    fn add_link(&mut self, link: Link, now: Instant) {
        if !link.ethernet || self.ifaces.contains_key(&link.index) {
            debug!(
                "{}: not an ethernet interface to configure ({link:?})",
                link.name
            );
            return;
        }
        let entry = self
            .cfg
            .interfaces
            .iter()
            .position(|c| c.matches.matches(&link.name, link.mac.as_ref()));
        let Some(cfg) = self.cfg.for_interface(&link.name, link.mac.as_ref()) else {
            info!("{}: no [[network]] entry matches; left down", link.name);
            return;
        };
        let mac = link.mac.unwrap_or_default();
        info!(
            "{}: found (mac {}), configuring: dhcp4 {}, ipv6 {:?}",
            link.name,
            mac_str(&mac),
            if cfg.dhcp4 { "on" } else { "off" },
            cfg.ipv6
        );
        let name = link.name.clone();
        let index = link.index;
        // IPv6 behaviour must be set before the link goes up so the
        // kernel's own router solicitation already counts.
        match cfg.ipv6 {
            Ipv6Mode::Off => sysctl(&name, "disable_ipv6", "1"),
            Ipv6Mode::Slaac => {
                sysctl(&name, "disable_ipv6", "0");
                sysctl(&name, "accept_ra", "2");
                sysctl(&name, "autoconf", "1");
            }
            Ipv6Mode::Static => {
                sysctl(&name, "disable_ipv6", "0");
                sysctl(&name, "accept_ra", "0");
                sysctl(&name, "autoconf", "0");
            }
        }
        debug!("{name}: setting the link up");
        if let Err(e) = self.rtnl.set_up(index, cfg.mtu) {
            info!("{name}: {e}");
        }
        let mut static_v4 = false;
        for a in &cfg.addresses {
            match self.rtnl.add_address(index, a.addr, a.len, None) {
                Ok(()) => {
                    info!("{name}: address {a} added (static)");
                    static_v4 |= a.addr.is_ipv4();
                }
                Err(e) => info!("{name}: address {a}: {e}"),
            }
        }
        let mut routes: Vec<(IpAddr, u8, IpAddr)> = Vec::new();
        if let Some(g) = cfg.gateway {
            routes.push((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, IpAddr::V4(g)));
        }
        if let Some(g) = cfg.gateway6 {
            routes.push((
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                0,
                IpAddr::V6(g),
            ));
        }
        for r in &cfg.routes {
            routes.push((r.to.addr, r.to.len, r.via));
        }
        for (dst, len, via) in routes {
            match self.rtnl.add_route(index, dst, len, Some(via)) {
                Ok(()) => info!("{name}: route {dst}/{len} via {via} added"),
                Err(e) => info!("{name}: route {dst}/{len} via {via}: {e}"),
            }
        }
        debug!("{name}: link up, static configuration done");
        let dhcp = if cfg.dhcp4 {
            match DhcpSocket::open(index) {
                Ok(sock) => {
                    self.seed = self.seed.rotate_left(7) ^ u64::from(index);
                    let seed = self.seed
                        ^ u64::from_be_bytes([
                            0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
                        ]);
                    Some(DhcpRun {
                        client: Client::new(seed, None).with_rapid_commit(cfg.rapid_commit),
                        sock,
                        drops: DropLog::default(),
                        probe: None,
                        rebooting: false,
                        id: ClientId {
                            mac,
                            hostname: self.hostname.clone(),
                        },
                    })
                }
                Err(e) => {
                    info!("{name}: DHCPv4 not started: {e}");
                    None
                }
            }
        } else {
            None
        };
        let ra = if cfg.ipv6 == Ipv6Mode::Slaac {
            match RaSocket::open(index, &name) {
                Ok(s) => Some(s),
                Err(e) => {
                    info!("{name}: router adverts will not be read: {e}");
                    None
                }
            }
        } else {
            None
        };
        let iface = Iface {
            link,
            cfg,
            entry,
            dhcp,
            ra,
            ra_dns: None,
            ra_drops: DropLog::default(),
            solicit: SOLICIT_AT.iter().map(|d| now + *d).collect(),
            addresses: Vec::new(),
            static_v4,
        };
        debug!("{name}: sockets open");
        self.ifaces.insert(index, iface);
        let actions = match self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) {
            Some(d) => d.client.start(now),
            None => Vec::new(),
        };
        self.run_actions(index, now, actions);
    }

    /// Reads every socket, runs due timers, checks `network-online`.
    /// Returns true the first time the target is reached.
    pub fn process(&mut self, now: Instant) -> bool {
        self.link_events(now);
        let indexes: Vec<u32> = self.ifaces.keys().copied().collect();
        for index in indexes {
            self.dhcp_io(index, now);
            self.ra_io(index, now);
        }
        self.sntp_io(now);
        if self.resolv_pending && now >= self.resolv_at + RESOLV_FLOOD_EVERY {
            self.write_resolv();
        }
        self.check_online(now)
    }

    fn link_events(&mut self, now: Instant) {
        let events = match self.monitor.as_ref().map(|m| m.events()) {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                info!("{e}");
                Vec::new()
            }
            None => Vec::new(),
        };
        for ev in events {
            match ev {
                LinkEvent::New(l) => {
                    if let Some(i) = self.ifaces.get_mut(&l.index) {
                        if i.link.carrier != l.carrier {
                            info!(
                                "{}: carrier {}",
                                l.name,
                                if l.carrier { "up" } else { "down" }
                            );
                            if l.carrier {
                                self.carrier_back(l.index, now);
                                let Some(i) = self.ifaces.get_mut(&l.index) else {
                                    continue;
                                };
                                i.link = l;
                                continue;
                            }
                        }
                        i.link = l;
                    } else if l.ethernet {
                        info!("{}: new interface (hotplug)", l.name);
                        self.add_link(l, now);
                    }
                }
                LinkEvent::Address(index) => {
                    if self.ifaces.contains_key(&index) {
                        self.refresh_addresses(Some(index));
                    }
                }
                LinkEvent::Gone(index) => {
                    if let Some(i) = self.ifaces.remove(&index) {
                        info!("{}: interface removed", i.link.name);
                        self.write_resolv();
                    }
                }
            }
        }
    }

    /// The carrier came back: a DHCP client holding a lease confirms it
    /// with INIT-REBOOT (the link may now lead to another network).
    fn carrier_back(&mut self, index: u32, now: Instant) {
        let name = self.ifaces_name(index);
        let Some(d) = self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) else {
            return;
        };
        let actions = d.client.link_restored(now);
        if let dhcp::State::Rebooting { addr, .. } = d.client.state() {
            d.rebooting = true;
            info!("{name}: DHCPv4 INIT-REBOOT: asking any server to confirm {addr}");
        }
        self.run_actions(index, now, actions);
    }

    fn dhcp_io(&mut self, index: u32, now: Instant) {
        let mut inputs = Vec::new();
        let mut timer_due = false;
        let name = &self.ifaces_name(index);
        if let Some(d) = self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) {
            let mut log = Vec::new();
            let sock = &d.sock;
            let replies = read_dhcp(|| sock.recv(), &d.id.mac, name, now, &mut d.drops, &mut log);
            inputs.extend(replies.into_iter().map(Input::Reply));
            log.extend(d.drops.flush(now));
            for line in log {
                info!("{line}");
            }
            if let Some(probe) = &d.probe {
                if probe.conflict() {
                    info!("{name}: {} is already in use (ARP): declining", probe.addr);
                    inputs.push(Input::ArpConflict);
                }
            }
            timer_due = d.client.deadline().is_some_and(|t| t <= now);
        }
        for input in inputs {
            let actions = match self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) {
                Some(d) => d.client.handle(now, input),
                None => return,
            };
            self.run_actions(index, now, actions);
        }
        if timer_due {
            let (actions, before, after) =
                match self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) {
                    Some(d) => {
                        let before = d.client.state().name();
                        let actions = d.client.on_timer(now);
                        (actions, before, d.client.state().name())
                    }
                    None => return,
                };
            if before != after && before == "REBOOTING" {
                let held = match self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) {
                    Some(d) if d.rebooting => {
                        d.rebooting = false;
                        d.client.lease().map(|b| b.info.addr)
                    }
                    _ => None,
                };
                if let Some(addr) = held {
                    info!("{name}: DHCPv4 INIT-REBOOT got no answer; keeping {addr} ({after})");
                }
            }
            if before != after {
                let server = self
                    .ifaces
                    .get(&index)
                    .and_then(|i| i.dhcp.as_ref())
                    .and_then(|d| d.client.lease())
                    .map(|b| b.info.server);
                match (after, server) {
                    ("RENEWING", Some(s)) => info!("{name}: DHCPv4 renewing with {s} (T1)"),
                    ("REBINDING", Some(s)) => {
                        info!(
                            "{name}: DHCPv4 rebinding: {s} did not answer, asking any server (T2)"
                        )
                    }
                    _ => debug!("{name}: DHCPv4 {before} -> {after}"),
                }
            }
            self.run_actions(index, now, actions);
        }
        if let Some(d) = self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) {
            if !matches!(d.client.state(), dhcp::State::Probing { .. }) {
                d.probe = None;
            }
        }
    }

    fn ifaces_name(&self, index: u32) -> String {
        self.ifaces
            .get(&index)
            .map_or_else(|| format!("#{index}"), |i| i.link.name.clone())
    }

    fn run_actions(&mut self, index: u32, now: Instant, actions: Vec<Action>) {
        let name = self.ifaces_name(index);
        for a in actions {
            match a {
                Action::Send(out) => self.dhcp_send(index, &name, &out),
                Action::Probe(addr) => {
                    let Some(d) = self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) else {
                        continue;
                    };
                    debug!("{name}: probing {addr} with ARP");
                    match ArpProbe::start(index, d.id.mac, addr) {
                        Ok(p) => d.probe = Some(p),
                        Err(e) => info!("{name}: ARP probe not sent: {e}"),
                    }
                }
                Action::Bind(l) => {
                    self.apply_lease(index, &name, &l, false);
                    info!(
                        "{name}: DHCPv4 lease obtained{}: {}/{} from {} for {}s{}{}",
                        if l.rapid_commit {
                            " (rapid commit)"
                        } else {
                            ""
                        },
                        l.addr,
                        l.prefix_len,
                        l.server,
                        l.timers().2.as_secs(),
                        l.routes()
                            .first()
                            .map(|r| format!(", router {}", r.2))
                            .unwrap_or_default(),
                        if l.dns.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", dns {}",
                                l.dns
                                    .iter()
                                    .map(|d| d.to_string())
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            )
                        }
                    );
                }
                Action::Renewed(l) => {
                    self.apply_lease(index, &name, &l, true);
                    let rebooted = self
                        .ifaces
                        .get_mut(&index)
                        .and_then(|i| i.dhcp.as_mut())
                        .is_some_and(|d| std::mem::take(&mut d.rebooting));
                    info!(
                        "{name}: DHCPv4 lease {}: {} from {} for {}s",
                        if rebooted {
                            "confirmed (INIT-REBOOT)"
                        } else {
                            "renewed"
                        },
                        l.addr,
                        l.server,
                        l.timers().2.as_secs()
                    );
                }
                Action::Unbind { lease, why } => {
                    if let Some(d) = self.ifaces.get_mut(&index).and_then(|i| i.dhcp.as_mut()) {
                        d.rebooting = false;
                    }
                    for (dst, len, via) in lease.routes() {
                        let _ =
                            self.rtnl
                                .del_route(index, IpAddr::V4(dst), len, Some(IpAddr::V4(via)));
                    }
                    match self
                        .rtnl
                        .del_address(index, IpAddr::V4(lease.addr), lease.prefix_len)
                    {
                        Ok(()) => info!(
                            "{name}: DHCPv4 lease lost ({why}): address {}/{} removed",
                            lease.addr, lease.prefix_len
                        ),
                        // The kernel drops the address itself when its
                        // lifetime ends, which can be a moment before
                        // our own timer.
                        Err(e) if e.is_absent() => info!(
                            "{name}: DHCPv4 lease lost ({why}): address {}/{} removed \
                             (the kernel had already dropped it)",
                            lease.addr, lease.prefix_len
                        ),
                        Err(e) => info!(
                            "{name}: DHCPv4 lease lost ({why}); removing {}: {e}",
                            lease.addr
                        ),
                    }
                    self.dhcp_ntp.clear();
                    self.write_resolv();
                }
            }
        }
        let _ = now;
    }

    fn dhcp_send(&mut self, index: u32, name: &str, out: &dhcp::Outgoing) {
        let Some(d) = self.ifaces.get(&index).and_then(|i| i.dhcp.as_ref()) else {
            return;
        };
        let bytes = match packet::encode(out, &d.id) {
            Ok(b) => b,
            Err(e) => {
                info!("{name}: {e}");
                return;
            }
        };
        if out.kind == dhcp::MessageKind::Discover && out.secs == 0 {
            // The start of an exchange: the boot timeline (and the bench)
            // measure the lease from here.
            info!("{name}: DHCPv4 discover sent");
        } else {
            debug!("{name}: DHCP {:?} xid {:#x}", out.kind, out.xid);
        }
        let result = match out.unicast {
            Some(server) if !out.ciaddr.is_unspecified() => {
                sock::send_unicast(index, name, out.ciaddr, server, &bytes)
            }
            _ => d
                .sock
                .send_broadcast(&packet::ip_udp(out.ciaddr, Ipv4Addr::BROADCAST, &bytes)),
        };
        if let Err(e) = result {
            info!("{name}: {e}");
        }
    }

    fn apply_lease(&mut self, index: u32, name: &str, l: &LeaseInfo, renewal: bool) {
        // The kernel's own lifetime is a backstop only: it runs a little
        // past the lease, so cairn's timer removes the address first.
        let lease_secs = (l.timers().2 + KERNEL_LIFETIME_SLACK)
            .as_secs()
            .min(u64::from(u32::MAX - 1)) as u32;
        if let Err(e) =
            self.rtnl
                .add_address(index, IpAddr::V4(l.addr), l.prefix_len, Some(lease_secs))
        {
            info!("{name}: adding {}/{}: {e}", l.addr, l.prefix_len);
        } else if !renewal {
            info!("{name}: address {}/{} added (DHCPv4)", l.addr, l.prefix_len);
        }
        let configured = self.ifaces.get(&index).and_then(|i| i.cfg.mtu);
        if let Some(mtu) = dhcp_mtu(configured, l.mtu) {
            if let Err(e) = self.rtnl.set_up(index, Some(mtu)) {
                info!("{name}: MTU {mtu}: {e}");
            }
        }
        for (dst, len, via) in l.routes() {
            // A gateway outside the leased subnet needs an on-link route.
            let on_link = u32::from(via) >> (32 - u32::from(l.prefix_len.max(1)))
                == u32::from(l.addr) >> (32 - u32::from(l.prefix_len.max(1)));
            if !on_link {
                let _ = self.rtnl.add_route(index, IpAddr::V4(via), 32, None);
            }
            if let Err(e) = self
                .rtnl
                .add_route(index, IpAddr::V4(dst), len, Some(IpAddr::V4(via)))
            {
                info!("{name}: route {dst}/{len} via {via}: {e}");
            } else if !renewal {
                info!("{name}: route {dst}/{len} via {via} added (DHCPv4)");
            }
        }
        self.dhcp_ntp = l.ntp.iter().map(|a| IpAddr::V4(*a)).collect();
        if let Some(h) = dhcp_hostname(
            self.hostname.as_deref(),
            self.dhcp_hostname_set,
            l.hostname.as_deref(),
        ) {
            match crate::boot::set_hostname(h) {
                Ok(()) => {
                    self.dhcp_hostname_set = true;
                    info!("hostname set to {h} (DHCP)");
                }
                Err(e) => info!("{e}"),
            }
        }
        self.write_resolv();
    }

    fn ra_io(&mut self, index: u32, now: Instant) {
        let Some(i) = self.ifaces.get_mut(&index) else {
            return;
        };
        let Some(sock) = &i.ra else {
            return;
        };
        let name = i.link.name.clone();
        if i.solicit.first().is_some_and(|t| *t <= now) {
            i.solicit.remove(0);
            if let Err(e) = sock.solicit(&i.link.mac.unwrap_or_default()) {
                debug!("{name}: {e}");
            }
        }
        let mut log = Vec::new();
        let read = read_adverts(
            || sock.recv(),
            &name,
            now,
            &mut i.ra_dns,
            &mut i.ra_drops,
            &mut log,
        );
        log.extend(i.ra_drops.flush(now));
        for line in log {
            info!("{line}");
        }
        let mut changed = read.changed;
        // RDNSS/DNSSL entries expire with their lifetime.
        if let Some(dns) = &mut i.ra_dns {
            changed |= dns.expire(now);
        }
        if changed {
            self.write_resolv();
        } else if read.replaced {
            // Maybe a flood: `process` rewrites resolv.conf when its next
            // slot comes.
            self.resolv_pending = true;
        }
    }

    /// DNS sources in a stable order: static (manifest order), DHCPv4 and
    /// then router adverts, each by interface index.
    fn dns_sources(&self) -> Vec<DnsSource> {
        let mut out = Vec::new();
        for i in self.ifaces.values() {
            out.push(DnsSource {
                servers: i.cfg.dns.clone(),
                search: i.cfg.search.clone(),
            });
        }
        for i in self.ifaces.values() {
            if let Some(b) = i.dhcp.as_ref().and_then(|d| d.client.lease()) {
                let mut search = b.info.search.clone();
                if let Some(d) = &b.info.domain {
                    search.insert(0, d.clone());
                }
                out.push(DnsSource {
                    servers: b.info.dns.iter().map(|a| IpAddr::V4(*a)).collect(),
                    search,
                });
            }
        }
        for i in self.ifaces.values() {
            if let Some(d) = &i.ra_dns {
                out.push(DnsSource {
                    servers: d.servers.iter().map(|s| IpAddr::V6(s.0)).collect(),
                    search: d.search.iter().map(|s| s.0.clone()).collect(),
                });
            }
        }
        out
    }

    fn write_resolv(&mut self) {
        self.resolv_pending = false;
        self.resolv_at = Instant::now();
        let text = resolv::render(&self.dns_sources());
        if text == self.resolv {
            return;
        }
        match resolv::write_atomic(std::path::Path::new(RESOLV_CONF), &text) {
            Ok(()) => {
                let servers: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("nameserver "))
                    .collect();
                let search = text
                    .lines()
                    .find_map(|l| l.strip_prefix("search "))
                    .unwrap_or("");
                info!(
                    "resolv.conf: nameservers [{}] search [{search}]",
                    servers.join(" ")
                );
                self.resolv = text;
            }
            Err(e) => info!("cannot write {RESOLV_CONF}: {e}"),
        }
    }

    /// Re-reads the kernel's addresses of one interface (or all) and logs
    /// IPv6 addresses the kernel added or removed by itself (SLAAC).
    fn refresh_addresses(&mut self, only: Option<u32>) {
        let indexes: Vec<u32> = match only {
            Some(i) => vec![i],
            None => self.ifaces.keys().copied().collect(),
        };
        for index in indexes {
            match self.rtnl.addresses(index) {
                Ok(addrs) => {
                    let Some(i) = self.ifaces.get_mut(&index) else {
                        continue;
                    };
                    let ours = |a: &IpAddr| i.cfg.addresses.iter().any(|p| p.addr == *a);
                    for (a, l) in &addrs {
                        if a.is_ipv6() && !ours(a) && !i.addresses.contains(&(*a, *l)) {
                            info!("{}: address {a}/{l} added (SLAAC)", i.link.name);
                        }
                    }
                    for (a, l) in &i.addresses {
                        if a.is_ipv6() && !ours(a) && !addrs.contains(&(*a, *l)) {
                            info!("{}: address {a}/{l} removed (SLAAC)", i.link.name);
                        }
                    }
                    i.addresses = addrs;
                }
                Err(e) => debug!("{e}"),
            }
        }
    }

    fn check_online(&mut self, now: Instant) -> bool {
        if self.online {
            return false;
        }
        if now >= self.next_addr_poll {
            self.next_addr_poll = now + ADDR_POLL;
            self.refresh_addresses(None);
        }
        let ready = if self.cfg.interfaces.is_empty() {
            !self.ifaces.is_empty() && self.ifaces.values().all(Iface::usable)
        } else {
            self.cfg.interfaces.iter().enumerate().all(|(n, c)| {
                !c.required
                    || self
                        .ifaces
                        .values()
                        .any(|i| i.entry == Some(n) && i.usable())
            })
        };
        if ready {
            self.online = true;
            info!("network online");
            return true;
        }
        if now >= self.online_deadline {
            self.online = true;
            let waiting: Vec<String> = self
                .ifaces
                .values()
                .filter(|i| !i.usable())
                .map(|i| i.link.name.clone())
                .collect();
            info!(
                "warning: network-online reached after the {}s timeout without a usable address on {}",
                self.cfg.online_timeout,
                if waiting.is_empty() {
                    "any interface".to_string()
                } else {
                    waiting.join(", ")
                }
            );
            return true;
        }
        false
    }

    fn ntp_servers(&self) -> Vec<IpAddr> {
        let mut s = self.cfg.ntp.clone();
        for a in &self.dhcp_ntp {
            if !s.contains(a) {
                s.push(*a);
            }
        }
        s
    }

    fn sntp_io(&mut self, now: Instant) {
        let servers = self.ntp_servers();
        let any_usable = self.ifaces.values().any(Iface::usable);
        let Some(st) = self.sntp.as_mut() else {
            return;
        };
        let mut buf = [0u8; 128];
        for _ in 0..PACKETS_PER_CALL {
            let Ok((n, from)) = st.sock.recv_from(&mut buf) else {
                break;
            };
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            let Some((server, stamp, _)) = st.pending else {
                continue;
            };
            if from != server {
                continue;
            }
            match sntp::offset(&buf[..n], stamp, SystemTime::now()) {
                Ok(off) => {
                    st.pending = None;
                    st.next = now + sntp::POLL;
                    let secs = off as f64 / 1e9;
                    match sntp::apply(off, !st.stepped) {
                        Ok(true) => {
                            st.stepped = true;
                            info!(
                                "clock stepped by {secs:+.3}s to {} (SNTP {})",
                                sntp::utc(SystemTime::now()),
                                server.ip()
                            );
                        }
                        Ok(false) => info!("clock slewed by {secs:+.3}s (SNTP {})", server.ip()),
                        Err(e) => info!("cannot set the clock: {e}"),
                    }
                }
                Err(e) => info!("SNTP answer from {from} dropped: {e}"),
            }
        }
        if let Some((server, _, sent)) = st.pending {
            if now >= sent + SNTP_TIMEOUT {
                debug!("SNTP server {server} did not answer");
                st.pending = None;
                st.turn += 1;
                st.next = now + SNTP_RETRY;
            }
        }
        if st.pending.is_none() && now >= st.next && !servers.is_empty() && any_usable {
            let server = SocketAddr::new(servers[st.turn % servers.len()], 123);
            let (req, stamp) = sntp::request(SystemTime::now());
            match st.sock.send_to(&req, server) {
                Ok(_) => st.pending = Some((server, stamp, now)),
                Err(e) => {
                    debug!("SNTP to {server}: {e}");
                    st.turn += 1;
                    st.next = now + SNTP_RETRY;
                }
            }
        }
    }

    /// The next moment [`Net::process`] has work without any packet.
    pub fn deadline(&self) -> Option<Instant> {
        let mut d: Vec<Instant> = Vec::new();
        for i in self.ifaces.values() {
            if let Some(t) = i.dhcp.as_ref().and_then(|x| x.client.deadline()) {
                d.push(t);
            }
            if i.ra.is_some() {
                d.extend(i.solicit.first().copied());
            }
            if let Some(dns) = &i.ra_dns {
                d.extend(dns.next_expiry());
            }
            d.extend(i.ra_drops.deadline());
            d.extend(i.dhcp.as_ref().and_then(|x| x.drops.deadline()));
        }
        if self.resolv_pending {
            d.push(self.resolv_at + RESOLV_FLOOD_EVERY);
        }
        if !self.online {
            d.push(self.online_deadline);
            d.push(self.next_addr_poll);
        }
        if let Some(st) = &self.sntp {
            if let Some((_, _, sent)) = st.pending {
                d.push(sent + SNTP_TIMEOUT);
            } else if !self.ntp_servers().is_empty() {
                d.push(st.next.max(Instant::now()));
            }
        }
        d.into_iter().min()
    }

    /// The sockets to watch: the link monitor, each interface's DHCP
    /// socket (and address probe) and router advert socket, and the SNTP
    /// socket. Call [`Net::process`] when one is readable.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
        if let Some(m) = &self.monitor {
            fds.push(m.fd());
        }
        for i in self.ifaces.values() {
            if let Some(d) = &i.dhcp {
                fds.push(d.sock.fd());
                if let Some(p) = &d.probe {
                    fds.push(p.fd());
                }
            }
            if let Some(r) = &i.ra {
                fds.push(r.fd());
            }
        }
        if let Some(st) = &self.sntp {
            fds.push(std::os::fd::AsFd::as_fd(&st.sock));
        }
        fds
    }

    pub fn status(&self) -> Status {
        let now = Instant::now();
        let mut dns = Vec::new();
        let mut search = Vec::new();
        for s in self.dns_sources() {
            for d in s.servers {
                if !dns.contains(&d) {
                    dns.push(d);
                }
            }
            for d in s.search {
                if !search.contains(&d) {
                    search.push(d);
                }
            }
        }
        Status {
            online: self.online,
            interfaces: self
                .ifaces
                .values()
                .map(|i| IfaceStatus {
                    name: i.link.name.clone(),
                    index: i.link.index,
                    mac: i.link.mac,
                    addresses: i
                        .addresses
                        .iter()
                        .map(|(a, l)| format!("{a}/{l}"))
                        .collect(),
                    dhcp: i.dhcp.as_ref().map(|d| d.client.state().name()),
                    lease: i
                        .dhcp
                        .as_ref()
                        .and_then(|d| d.client.lease())
                        .map(|b| LeaseStatus {
                            addr: b.info.addr,
                            prefix_len: b.info.prefix_len,
                            server: b.info.server,
                            remaining: b.expiry.saturating_duration_since(now),
                        }),
                    usable: i.usable(),
                })
                .collect(),
            dns,
            search,
            clock_synced: self.sntp.as_ref().is_some_and(|s| s.stepped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn drops_are_logged_at_once_then_counted_at_most_every_10_s() {
        let t0 = Instant::now();
        let mut d = DropLog::default();
        assert_eq!(d.deadline(), None);
        assert_eq!(d.flush(t0), None);
        // The first drop is logged at once, with its reason.
        assert_eq!(
            d.dropped(t0, || "x: bad 0".into()).as_deref(),
            Some("x: bad 0")
        );
        // The next ones, in the 10 s after a line, are counted.
        for n in 1..=500u64 {
            assert_eq!(
                d.dropped(t0 + Duration::from_millis(n), || format!("x: bad {n}")),
                None
            );
        }
        assert_eq!(d.deadline(), Some(t0 + SECS(10)));
        assert_eq!(d.flush(t0 + SECS(9)), None);
        assert_eq!(
            d.flush(t0 + SECS(10)).as_deref(),
            Some("x: bad 500 (500 dropped in the last 10 s)")
        );
        assert_eq!(d.deadline(), None);
        // A line opens another quiet spell: a drop right after it waits.
        assert_eq!(d.dropped(t0 + SECS(11), || "x: bad 501".into()), None);
        assert_eq!(d.flush(t0 + SECS(15)), None);
        assert_eq!(d.deadline(), Some(t0 + SECS(20)));
        assert_eq!(d.flush(t0 + SECS(20)).as_deref(), Some("x: bad 501"));
        // After a quiet spell, a drop is logged at once again.
        assert_eq!(
            d.dropped(t0 + SECS(31), || "x: bad 502".into()).as_deref(),
            Some("x: bad 502")
        );
        assert_eq!(d.flush(t0 + SECS(60)), None);
    }

    /// A UDP flood to port 68 (junk, and replies for another client) with
    /// one real reply behind it: each call reads at most PACKETS_PER_CALL
    /// packets and leaves the socket readable; the reply is found when its
    /// turn comes; the drops make one line at once and one count line
    /// later, not a line per packet.
    #[test]
    fn dhcp_reads_are_bounded_per_call_and_drops_are_counted() {
        use crate::net::packet::tests::{server_reply, MAC};
        use dhcproto::v4::MessageType;
        let (sock, to) = DhcpSocket::loopback();
        let peer = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let to_68 = |payload: &[u8]| {
            let mut p = packet::ip_udp(Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::BROADCAST, payload);
            p[20..22].copy_from_slice(&67u16.to_be_bytes());
            p[22..24].copy_from_slice(&68u16.to_be_bytes());
            p
        };
        let mut other = server_reply(MessageType::Offer, 7);
        other[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        for n in 0..100 {
            let p = if n % 2 == 0 {
                to_68(&[0x55; 40])
            } else {
                to_68(&other)
            };
            peer.send_to(&p, to).unwrap();
        }
        peer.send_to(&to_68(&server_reply(MessageType::Offer, 7)), to)
            .unwrap();

        let t0 = Instant::now();
        let mut drops = DropLog::default();
        let mut log = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..6 {
            let mut reads = 0;
            let replies = read_dhcp(
                || {
                    let p = sock.recv();
                    reads += usize::from(p.is_some());
                    p
                },
                &MAC,
                "eth0",
                t0,
                &mut drops,
                &mut log,
            );
            calls.push((reads, replies.len()));
            if calls.len() == 1 {
                let fd = sock.fd();
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::IN,
                )];
                let zero = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 1);
            }
        }
        assert_eq!(PACKETS_PER_CALL, 32);
        assert_eq!(calls, [(32, 0), (32, 0), (32, 0), (5, 1), (0, 0), (0, 0)]);
        assert_eq!(
            log,
            ["eth0: DHCP packet dropped: not a DHCP message: 40 bytes, a DHCP message has at least 240"]
        );
        assert_eq!(drops.deadline(), Some(t0 + SECS(10)));
        assert_eq!(
            drops.flush(t0 + SECS(10)).as_deref(),
            Some("eth0: DHCP packet dropped: DHCP message is for another client (chaddr) (99 dropped in the last 10 s)")
        );
    }

    fn advert(server: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![
            ra::ROUTER_ADVERT,
            0,
            0,
            0,
            64,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        p.extend_from_slice(&[25, 3, 0, 0, 0, 0, 2, 0x58]);
        p.extend_from_slice(&server.octets());
        p
    }

    /// A flood of router adverts, each naming a new DNS server, with a
    /// few refused ones among them: each call reads at most
    /// PACKETS_PER_CALL; the list holds the newest 8; the log has a line
    /// per advert only while the list had room, the "full" notice once,
    /// and the refused adverts once (then counted).
    #[test]
    fn advert_reads_are_bounded_and_a_flood_logs_the_full_list_once() {
        let router: Ipv6Addr = "fe80::1".parse().unwrap();
        let mut queue: std::collections::VecDeque<(Vec<u8>, Ipv6Addr)> = (0..300u16)
            .map(|n| (advert(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, n)), router))
            .collect();
        queue.insert(100, (vec![134, 0, 0], router));
        queue.insert(
            150,
            (
                advert("fd00::99".parse().unwrap()),
                "fd00::1".parse().unwrap(),
            ),
        );
        let t0 = Instant::now();
        let (mut known, mut drops, mut log) = (None, DropLog::default(), Vec::new());
        let mut calls = Vec::new();
        while !queue.is_empty() {
            let before = queue.len();
            let read = read_adverts(
                || queue.pop_front(),
                "eth0",
                t0,
                &mut known,
                &mut drops,
                &mut log,
            );
            calls.push((before - queue.len(), read));
        }
        assert_eq!(calls.len(), 302usize.div_ceil(PACKETS_PER_CALL));
        assert!(calls.iter().all(|(n, _)| *n <= PACKETS_PER_CALL));
        assert_eq!(
            calls[0].1,
            AdvertsRead {
                changed: true,
                replaced: true
            }
        );
        assert_eq!(
            calls[1].1,
            AdvertsRead {
                changed: false,
                replaced: true
            }
        );
        let known = known.unwrap();
        let servers: Vec<u16> = known.servers.iter().map(|s| s.0.segments()[7]).collect();
        assert_eq!(servers, (292..300).collect::<Vec<u16>>());
        let per_advert = log
            .iter()
            .filter(|l| l.contains("eth0: router advert from fe80::1: dns ["))
            .count();
        assert_eq!(per_advert, 8, "{log:#?}");
        let full = "eth0: router advert DNS list full (8 servers); the oldest are replaced";
        assert_eq!(log.iter().filter(|l| *l == full).count(), 1, "{log:#?}");
        assert!(
            log.contains(
                &"eth0: router advert from fe80::1 dropped: router advert too short (3 bytes)"
                    .to_string()
            ),
            "{log:#?}"
        );
        assert_eq!(log.len(), 10, "{log:#?}");
        assert_eq!(
            drops.flush(t0 + SECS(10)).as_deref(),
            Some("eth0: router advert from non-link-local fd00::1 dropped")
        );
    }

    #[test]
    fn dhcp_hostname_only_when_the_manifest_has_none() {
        // The manifest's hostname always wins.
        assert_eq!(dhcp_hostname(Some("web"), false, Some("dhcpbox")), None);
        assert_eq!(dhcp_hostname(Some("web"), true, Some("dhcpbox")), None);
        // No hostname in the manifest: the server's is used, once.
        assert_eq!(dhcp_hostname(None, false, Some("dhcpbox")), Some("dhcpbox"));
        assert_eq!(dhcp_hostname(None, true, Some("other")), None);
        // Nothing offered, nothing set.
        assert_eq!(dhcp_hostname(None, false, None), None);
    }

    #[test]
    fn dhcp_mtu_unless_the_manifest_sets_one() {
        assert_eq!(dhcp_mtu(None, Some(1400)), Some(1400));
        assert_eq!(dhcp_mtu(None, Some(9000)), Some(9000));
        assert_eq!(dhcp_mtu(Some(1500), Some(1400)), None);
        assert_eq!(dhcp_mtu(Some(1500), None), None);
        assert_eq!(dhcp_mtu(None, None), None);
    }

    #[test]
    fn status_text_and_json() {
        let s = Status {
            online: true,
            interfaces: vec![IfaceStatus {
                name: "eth0".into(),
                index: 2,
                mac: None,
                addresses: vec!["10.0.2.15/24".into()],
                dhcp: Some("BOUND"),
                lease: Some(LeaseStatus {
                    addr: Ipv4Addr::new(10, 0, 2, 15),
                    prefix_len: 24,
                    server: Ipv4Addr::new(10, 0, 2, 2),
                    remaining: Duration::from_secs(99),
                }),
                usable: true,
            }],
            dns: vec![IpAddr::from([10, 0, 2, 3])],
            search: vec![],
            clock_synced: false,
        };
        let t = s.render();
        assert!(t.contains("network:  online"), "{t}");
        assert!(
            t.contains("eth0       dhcp4 BOUND 10.0.2.15/24 from 10.0.2.2 (99s left)"),
            "{t}"
        );
        assert!(t.contains("dns 10.0.2.3"), "{t}");
        assert_eq!(
            s.json(),
            "{\"online\":true,\"clock_synced\":false,\"interfaces\":[{\"name\":\"eth0\",\"dhcp4\":\"BOUND\",\"lease\":{\"address\":\"10.0.2.15\",\"prefix\":24,\"server\":\"10.0.2.2\",\"remaining_s\":99},\"usable\":true}],\"dns\":[\"10.0.2.3\"]}"
        );
    }
}

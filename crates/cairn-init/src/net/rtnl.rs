//! rtnetlink, synchronously: list links, bring them up, set the MTU, add
//! and remove addresses and routes, and a second socket that reports links
//! appearing and changing (hotplug). The few messages cairn needs are built
//! and parsed here by hand (netlink-packet-route cost the static init about
//! 350 KiB of code); netlink-sys is the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// rtnetlink multicast groups: link changes, IPv4 and IPv6 addresses.
const RTMGRP_LINK: u32 = 1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("netlink {op} failed: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("netlink {op}: kernel said: {source}")]
    Kernel {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("netlink {op}: unreadable answer: {msg}")]
    Decode { op: &'static str, msg: String },
}

impl RtnlError {
    /// The kernel said the address or route to remove is not there.
    pub fn is_absent(&self) -> bool {
        matches!(self, RtnlError::Kernel { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::ESRCH | libc::ENOENT)))
    }
}

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// An ethernet device (ARPHRD_ETHER, not a bridge/veth/... with a kind).
    pub ethernet: bool,
    pub up: bool,
    /// Carrier present (IFF_LOWER_UP).
    pub carrier: bool,
    pub mtu: Option<u32>,
}

/// A link event from the monitor socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    New(Link),
    Gone(u32),
    /// An address was added to or removed from this interface.
    Address(u32),
}

// netlink(7) / rtnetlink(7) numbers.
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
pub(crate) const IFLA_ADDRESS: u16 = 1;
pub(crate) const IFLA_IFNAME: u16 = 3;
pub(crate) const IFLA_MTU: u16 = 4;
pub(crate) const IFLA_LINKINFO: u16 = 18;
pub(crate) const IFF_UP: u32 = 1;
pub(crate) const IFF_LOWER_UP: u32 = 0x1_0000;
pub(crate) const ARPHRD_ETHER: u16 = 1;
pub(crate) const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_CACHEINFO: u16 = 6;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request being built: header, fixed part, then attributes.
pub(crate) struct Request {
    buf: Vec<u8>,
}

impl Request {
    pub(crate) fn new(kind: u16, flags: u16, fixed: &[u8]) -> Request {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(fixed);
        buf.resize(align4(buf.len()), 0);
        Request { buf }
    }

    pub(crate) fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Request {
        self.buf
            .extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub(crate) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|o| Ipv4Addr::from(o).into()),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|o| Ipv6Addr::from(o).into()),
        _ => None,
    }
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The `(type, value)` attributes after a fixed part; a malformed tail is
/// an error.
fn attributes<'a>(op: &'static str, mut b: &'a [u8]) -> Result<Vec<(u16, &'a [u8])>, RtnlError> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(ne_u16(b, 0).unwrap_or(0));
        let kind = ne_u16(b, 2).unwrap_or(0) & 0x3fff;
        if len < 4 || len > b.len() {
            return Err(RtnlError::Decode {
                op,
                msg: format!("attribute {kind} length {len} in {} bytes", b.len()),
            });
        }
        out.push((kind, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    Ok(out)
}

/// One decoded netlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Msg {
    Done,
    /// 0: the ACK; otherwise a negative errno.
    Error(i32),
    NewLink(Link),
    DelLink(u32),
    Address {
        new: bool,
        index: u32,
        prefix: u8,
        scope: u8,
        addrs: Vec<IpAddr>,
    },
    Other,
}

fn short(op: &'static str, what: &str) -> RtnlError {
    RtnlError::Decode {
        op,
        msg: format!("{what} too short"),
    }
}

fn parse_link(op: &'static str, p: &[u8]) -> Result<Link, RtnlError> {
    if p.len() < 16 {
        return Err(short(op, "ifinfomsg"));
    }
    let flags = ne_u32(p, 8).unwrap_or(0);
    let mut l = Link {
        index: ne_u32(p, 4).unwrap_or(0),
        name: String::new(),
        mac: None,
        ethernet: ne_u16(p, 2) == Some(ARPHRD_ETHER),
        up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
        mtu: None,
    };
    for (kind, v) in attributes(op, &p[16..])? {
        match kind {
            IFLA_IFNAME => {
                let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
                l.name = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            IFLA_ADDRESS => l.mac = <[u8; 6]>::try_from(v).ok(),
            IFLA_MTU => l.mtu = ne_u32(v, 0),
            // Virtual devices (bridge, veth, vlan, ...) carry a kind.
            IFLA_LINKINFO => l.ethernet = false,
            _ => {}
        }
    }
    Ok(l)
}

fn parse(op: &'static str, m: &[u8]) -> Result<(u32, Msg), RtnlError> {
    let kind = ne_u16(m, 4).unwrap_or(0);
    let seq = ne_u32(m, 8).unwrap_or(0);
    let p = &m[16.min(m.len())..];
    let msg = match kind {
        NLMSG_DONE => Msg::Done,
        NLMSG_ERROR => {
            let code = ne_u32(p, 0).ok_or_else(|| short(op, "nlmsgerr"))?;
            Msg::Error(code as i32)
        }
        RTM_NEWLINK => Msg::NewLink(parse_link(op, p)?),
        RTM_DELLINK => Msg::DelLink(parse_link(op, p)?.index),
        RTM_NEWADDR | RTM_DELADDR => {
            if p.len() < 8 {
                return Err(short(op, "ifaddrmsg"));
            }
            let addrs = attributes(op, &p[8..])?
                .into_iter()
                .filter(|(k, _)| *k == IFA_ADDRESS)
                .filter_map(|(_, v)| ip_from(v))
                .collect();
            Msg::Address {
                new: kind == RTM_NEWADDR,
                index: ne_u32(p, 4).unwrap_or(0),
                prefix: p[1],
                scope: p[3],
                addrs,
            }
        }
        _ => Msg::Other,
    };
    Ok((seq, msg))
}

/// A synchronous rtnetlink socket for requests.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> RtnlError {
    move |source| RtnlError::Io { op, source }
}

/// Splits a buffer holding several netlink messages and decodes each:
/// `(sequence number, message)`.
pub(crate) fn messages(op: &'static str, mut buf: &[u8]) -> Result<Vec<(u32, Msg)>, RtnlError> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(RtnlError::Decode {
                op,
                msg: format!("message length {len} in a {} byte buffer", buf.len()),
            });
        }
        out.push(parse(op, &buf[..len])?);
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    Ok(out)
}

impl Rtnl {
    pub fn open() -> Result<Rtnl, RtnlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        sock.bind_auto().map_err(RtnlError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(RtnlError::Socket)?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends `req` and collects the answers until the ACK or the end of
    /// the dump.
    fn request(&mut self, op: &'static str, req: Request) -> Result<Vec<Msg>, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let buf = req.finish(self.seq);
        self.sock.send(&buf, 0).map_err(io(op))?;
        let mut out = Vec::new();
        loop {
            let (data, from) = self.sock.recv_from_full().map_err(io(op))?;
            // Only the kernel (port 0) answers; anything else is ignored.
            if from.port_number() != KERNEL_PORT {
                continue;
            }
            for (seq, m) in messages(op, &data)? {
                if seq != self.seq {
                    continue;
                }
                match m {
                    Msg::Done | Msg::Error(0) => return Ok(out),
                    Msg::Error(code) => {
                        return Err(RtnlError::Kernel {
                            op,
                            source: std::io::Error::from_raw_os_error(code.saturating_neg()),
                        })
                    }
                    Msg::Other => {}
                    m => out.push(m),
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        let msgs = self.request("link dump", Request::new(RTM_GETLINK, NLM_F_DUMP, &[0; 16]))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                Msg::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// Sets IFF_UP, and the MTU if given.
    pub fn set_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), RtnlError> {
        let mut ifi = [0u8; 16];
        ifi[4..8].copy_from_slice(&index.to_ne_bytes());
        ifi[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
        ifi[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
        let mut r = Request::new(RTM_SETLINK, NLM_F_ACK, &ifi);
        if let Some(mtu) = mtu {
            r.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        self.request("set link up", r).map(drop)
    }

    fn addr_msg(kind: u16, flags: u16, index: u32, addr: IpAddr, prefix: u8) -> Request {
        let mut ifa = [0u8; 8];
        ifa[0] = family(addr);
        ifa[1] = prefix;
        ifa[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut r = Request::new(kind, flags, &ifa);
        r.attr(IFA_LOCAL, &ip_bytes(addr))
            .attr(IFA_ADDRESS, &ip_bytes(addr));
        r
    }

    /// Adds (or updates) an address; `lifetime` in seconds (`None`:
    /// forever) lets the kernel drop it by itself should cairn not.
    pub fn add_address(
        &mut self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        lifetime: Option<u32>,
    ) -> Result<(), RtnlError> {
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut r = Self::addr_msg(RTM_NEWADDR, flags, index, addr, prefix);
        if let IpAddr::V4(a) = addr {
            if prefix < 31 {
                let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let bcast = Ipv4Addr::from(u32::from(a) | host);
                r.attr(IFA_BROADCAST, &bcast.octets());
            }
        }
        if let Some(l) = lifetime {
            // struct ifa_cacheinfo: preferred, valid, cstamp, tstamp.
            let mut ci = [0u8; 16];
            ci[0..4].copy_from_slice(&l.to_ne_bytes());
            ci[4..8].copy_from_slice(&l.to_ne_bytes());
            r.attr(IFA_CACHEINFO, &ci);
        }
        self.request("add address", r).map(drop)
    }

    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), RtnlError> {
        let r = Self::addr_msg(RTM_DELADDR, NLM_F_ACK, index, addr, prefix);
        self.request("remove address", r).map(drop)
    }

    fn route_msg(
        kind: u16,
        flags: u16,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
    ) -> Request {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
        // scope, type, flags.
        let scope = if via.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        let rtm = [
            family(dst),
            prefix,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_STATIC,
            scope,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let mut r = Request::new(kind, flags, &rtm);
        if prefix > 0 {
            r.attr(RTA_DST, &ip_bytes(dst));
        }
        if let Some(gw) = via {
            r.attr(RTA_GATEWAY, &ip_bytes(gw));
        }
        r.attr(RTA_OIF, &index.to_ne_bytes());
        r
    }

    /// Adds or replaces a route to `dst/prefix` through `via` (or on-link).
    pub fn add_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
    ) -> Result<(), RtnlError> {
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let r = Self::route_msg(RTM_NEWROUTE, flags, index, dst, prefix, via);
        self.request("add route", r).map(drop)
    }

    pub fn del_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
    ) -> Result<(), RtnlError> {
        let r = Self::route_msg(RTM_DELROUTE, NLM_F_ACK, index, dst, prefix, via);
        self.request("remove route", r).map(drop)
    }

    /// Addresses of an interface: `(address, prefix)`, global scope only.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(IpAddr, u8)>, RtnlError> {
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|a| a.index == index && a.scope == RT_SCOPE_UNIVERSE)
            .map(|a| (a.addr, a.prefix))
            .collect())
    }

    /// Every address of every interface (the one address dump of the
    /// init: the network manager and the status screen both use it).
    pub fn all_addresses(&mut self) -> Result<Vec<IfAddr>, RtnlError> {
        let msgs = self.request(
            "address dump",
            Request::new(RTM_GETADDR, NLM_F_DUMP, &[0; 8]),
        )?;
        let mut out = Vec::new();
        for m in msgs {
            if let Msg::Address {
                new: true,
                index,
                prefix,
                scope,
                addrs,
            } = m
            {
                out.extend(addrs.into_iter().map(|addr| IfAddr {
                    index,
                    addr,
                    prefix,
                    scope,
                }));
            }
        }
        Ok(out)
    }
}

/// One address from [`Rtnl::all_addresses`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
    pub scope: u8,
}

/// Every address with its interface's name: `(name, address, prefix)`.
pub fn named_addresses() -> Result<Vec<(String, IpAddr, u8)>, RtnlError> {
    let mut rtnl = Rtnl::open()?;
    let links = rtnl.links()?;
    let name = |i: u32| {
        links
            .iter()
            .find(|l| l.index == i)
            .map_or_else(|| format!("if{i}"), |l| l.name.clone())
    };
    Ok(rtnl
        .all_addresses()?
        .into_iter()
        .map(|a| (name(a.index), a.addr, a.prefix))
        .collect())
}

/// A non-blocking socket subscribed to link changes.
pub struct Monitor {
    sock: Socket,
}

impl Monitor {
    pub fn open() -> Result<Monitor, RtnlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Socket)?;
        sock.bind(&SocketAddr::new(
            0,
            RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
        ))
        .map_err(RtnlError::Socket)?;
        sock.set_non_blocking(true).map_err(RtnlError::Socket)?;
        Ok(Monitor { sock })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Pending events (an empty list when there is none), at most
    /// [`MONITOR_BUDGET`] datagrams per call: the rest wait for the next
    /// turn of the event loop. Datagrams not sent by the kernel (port 0)
    /// are dropped.
    pub fn events(&self) -> Result<Vec<LinkEvent>, RtnlError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        for _ in 0..MONITOR_BUDGET {
            let (n, from) = match self.sock.recv_from(&mut &mut buf[..], 0) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("link events")(e)),
            };
            if from.port_number() != KERNEL_PORT {
                continue;
            }
            for (_, m) in messages("link events", &buf[..n.min(buf.len())])? {
                match m {
                    Msg::NewLink(l) => out.push(LinkEvent::New(l)),
                    Msg::DelLink(index) => out.push(LinkEvent::Gone(index)),
                    Msg::Address { index, .. } => out.push(LinkEvent::Address(index)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

/// The netlink port of the kernel: the only sender rtnetlink messages are
/// taken from.
const KERNEL_PORT: u32 = 0;
/// Link-monitor datagrams read per call.
pub const MONITOR_BUDGET: usize = 32;

/// Whether `name` is a plausible interface name, safe to put in a
/// `/proc/sys` path: 1 to 15 bytes, not `.` or `..`, no `/`, whitespace or
/// control characters.
pub fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_an_absent_address_is_told_apart() {
        let mut r = Rtnl::open().unwrap();
        // 192.0.2.0/24 is for documentation: never on loopback.
        let e = r
            .del_address(1, "192.0.2.77".parse().unwrap(), 32)
            .unwrap_err();
        // Without CAP_NET_ADMIN the kernel refuses before it looks.
        assert_eq!(e.is_absent(), rustix::process::geteuid().is_root(), "{e}");
        let refused = RtnlError::Kernel {
            op: "remove address",
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(!refused.is_absent());
    }

    #[test]
    fn lists_loopback() {
        // Reading the link list needs no privileges.
        let mut r = Rtnl::open().unwrap();
        let links = r.links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo exists");
        assert!(!lo.ethernet);
        assert!(lo.index > 0);
    }

    /// An RTM_NEWLINK as the kernel sends it for an ethernet NIC.
    fn newlink(index: u32, flags: u32, kind: Option<&[u8]>) -> Vec<u8> {
        let mut ifi = [0u8; 16];
        ifi[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        ifi[4..8].copy_from_slice(&index.to_ne_bytes());
        ifi[8..12].copy_from_slice(&flags.to_ne_bytes());
        let mut r = Request::new(RTM_NEWLINK, 0, &ifi);
        r.attr(IFLA_IFNAME, b"eth0\0")
            .attr(IFLA_MTU, &1500u32.to_ne_bytes())
            .attr(IFLA_ADDRESS, &[0x52, 0x54, 0, 1, 2, 3]);
        if let Some(k) = kind {
            r.attr(IFLA_LINKINFO | 0x8000, k);
        }
        r.finish(7)
    }

    #[test]
    fn parses_newlink_and_dellink() {
        let mut buf = newlink(2, IFF_UP | IFF_LOWER_UP, None);
        buf.extend_from_slice(&newlink(3, 0, Some(b"\x0c\0\x01\0bridge\0\0")));
        let msgs = messages("t", &buf).unwrap();
        let Msg::NewLink(l) = &msgs[0].1 else {
            panic!("{msgs:?}")
        };
        assert_eq!(msgs[0].0, 7);
        assert_eq!(
            *l,
            Link {
                index: 2,
                name: "eth0".into(),
                mac: Some([0x52, 0x54, 0, 1, 2, 3]),
                ethernet: true,
                up: true,
                carrier: true,
                mtu: Some(1500),
            }
        );
        let Msg::NewLink(l) = &msgs[1].1 else {
            panic!("{msgs:?}")
        };
        assert!(!l.ethernet && !l.up && !l.carrier, "{l:?}");
        let mut del = newlink(3, 0, None);
        del[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
        assert_eq!(messages("t", &del).unwrap()[0].1, Msg::DelLink(3));
    }

    #[test]
    fn route_request_layout() {
        let gw = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2));
        let r = Rtnl::route_msg(
            RTM_NEWROUTE,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            5,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            0,
            Some(gw),
        )
        .finish(9);
        // header 16 + rtmsg 12 + gateway 8 + oif 8
        assert_eq!(r.len(), 44);
        assert_eq!(ne_u32(&r, 0), Some(44));
        assert_eq!(ne_u16(&r, 4), Some(RTM_NEWROUTE));
        assert_eq!(ne_u16(&r, 6), Some(0x505));
        assert_eq!(ne_u32(&r, 8), Some(9));
        assert_eq!(&r[16..24], &[AF_INET, 0, 0, 0, 254, 4, 0, 1]);
        let attrs = attributes("t", &r[28..]).unwrap();
        assert_eq!(
            attrs,
            vec![
                (RTA_GATEWAY, &[10u8, 0, 2, 2][..]),
                (RTA_OIF, &5u32.to_ne_bytes()[..])
            ]
        );
    }

    #[test]
    fn errors_and_acks() {
        let mut e = Request::new(NLMSG_ERROR, 0, &(-17i32).to_ne_bytes()).finish(1);
        assert_eq!(messages("t", &e).unwrap(), vec![(1, Msg::Error(-17))]);
        e.truncate(16);
        e[0..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(messages("t", &e).is_err(), "nlmsgerr cut off");
        let bad_attr = [&newlink(1, 0, None)[..32], &[40, 0, 3, 0]].concat();
        let mut bad_attr = bad_attr;
        let n = bad_attr.len() as u32;
        bad_attr[0..4].copy_from_slice(&n.to_ne_bytes());
        assert!(messages("t", &bad_attr).is_err(), "attribute past the end");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(messages("t", &[0xff; 20]).is_err());
        assert!(messages("t", &[16, 0, 0, 0, 0, 0]).unwrap().is_empty());
    }
}
#[cfg(test)]
mod dump {
    use super::*;

    #[test]
    fn print_links() {
        let mut r = Rtnl::open().unwrap();
        for l in r.links().unwrap() {
            eprintln!("{l:?}");
        }
    }

    #[test]
    fn loopback_is_listed_on_the_host() {
        let list = named_addresses().unwrap();
        assert!(
            list.iter().any(|(n, a, _)| n == "lo" && a.is_loopback()),
            "{list:?}"
        );
    }

    #[test]
    fn interface_names_for_proc_paths() {
        for ok in [
            "eth0",
            "enp0s3",
            "wlan0",
            "a",
            "br-lan.10",
            "x23456789012345",
        ] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "a/b",
            "eth 0",
            "x234567890123456",
            "e\n",
            "e:1",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_datagram_from_another_process_is_not_taken_as_the_kernel() {
        let m = Monitor::open().unwrap();
        let mut other = Socket::new(NETLINK_ROUTE).unwrap();
        other.bind_auto().unwrap();
        // A forged "new link" message sent to the monitor's port.
        let mut addr = SocketAddr::new(0, 0);
        m.sock.get_address(&mut addr).unwrap();
        let port = addr.port_number();
        let mut link = vec![0u8; 16];
        link[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        link[4..8].copy_from_slice(&4242u32.to_ne_bytes());
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + link.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&link);
        let _ = other.send_to(&msg, &SocketAddr::new(port, 0), 0);
        let ev = m.events().unwrap();
        assert!(
            !ev.iter()
                .any(|e| matches!(e, LinkEvent::New(l) if l.index == 4242)),
            "{ev:?}"
        );
    }
}

//! rtnetlink, synchronously: list links, bring them up, set the MTU, add
//! and remove addresses and routes, and a second socket that reports links
//! appearing and changing (hotplug). netlink-packet-route builds and parses
//! the messages; netlink-sys is the socket.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
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

impl Link {
    fn from_msg(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            ethernet: m.header.link_layer_type == LinkLayerType::Ether,
            up: m.header.flags.contains(LinkFlags::Up),
            carrier: m.header.flags.contains(LinkFlags::LowerUp),
            mtu: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(b) if b.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(b);
                    l.mac = Some(mac);
                }
                LinkAttribute::Mtu(m) => l.mtu = Some(*m),
                // Virtual devices (bridge, veth, vlan, ...) carry a kind.
                LinkAttribute::LinkInfo(_) => l.ethernet = false,
                _ => {}
            }
        }
        l
    }
}

/// A link event from the monitor socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    New(Link),
    Gone(u32),
    /// An address was added to or removed from this interface.
    Address(u32),
}

/// A synchronous rtnetlink socket for requests.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> RtnlError {
    move |source| RtnlError::Io { op, source }
}

/// Splits a buffer holding several netlink messages.
fn messages(
    op: &'static str,
    mut buf: &[u8],
) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, RtnlError> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(RtnlError::Decode {
                op,
                msg: format!("message length {len} in a {} byte buffer", buf.len()),
            });
        }
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]).map_err(|e| {
            RtnlError::Decode {
                op,
                msg: e.to_string(),
            }
        })?;
        out.push(m);
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

    /// Sends `msg` and collects the answers until the ACK or the end of
    /// the dump.
    fn request(
        &mut self,
        op: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(io(op))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(io(op))?;
            for m in messages(op, &data)? {
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(RtnlError::Kernel {
                                op,
                                source: std::io::Error::from_raw_os_error(-code.get()),
                            }),
                        }
                    }
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    _ => {}
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        let msgs = self.request(
            "link dump",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_msg(l)),
                _ => None,
            })
            .collect())
    }

    /// Sets IFF_UP, and the MTU if given.
    pub fn set_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), RtnlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request("set link up", RouteNetlinkMessage::SetLink(m), NLM_F_ACK)
            .map(drop)
    }

    fn addr_msg(index: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        m
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
        let mut m = Self::addr_msg(index, addr, prefix);
        if let IpAddr::V4(a) = addr {
            if prefix < 31 {
                let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let bcast = std::net::Ipv4Addr::from(u32::from(a) | host);
                m.attributes.push(AddressAttribute::Broadcast(bcast));
            }
        }
        if let Some(l) = lifetime {
            let mut ci = CacheInfo::default();
            ci.ifa_preferred = l;
            ci.ifa_valid = l;
            m.attributes.push(AddressAttribute::CacheInfo(ci));
        }
        self.request(
            "add address",
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    pub fn del_address(&mut self, index: u32, addr: IpAddr, prefix: u8) -> Result<(), RtnlError> {
        let m = Self::addr_msg(index, addr, prefix);
        self.request(
            "remove address",
            RouteNetlinkMessage::DelAddress(m),
            NLM_F_ACK,
        )
        .map(drop)
    }

    fn route_msg(index: u32, dst: IpAddr, prefix: u8, via: Option<IpAddr>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if dst.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = prefix;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Static;
        m.header.kind = RouteType::Unicast;
        m.header.scope = if via.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if prefix > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        }
        if let Some(gw) = via {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        m.attributes.push(RouteAttribute::Oif(index));
        m
    }

    /// Adds or replaces a route to `dst/prefix` through `via` (or on-link).
    pub fn add_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
    ) -> Result<(), RtnlError> {
        let m = Self::route_msg(index, dst, prefix, via);
        self.request(
            "add route",
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(drop)
    }

    pub fn del_route(
        &mut self,
        index: u32,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
    ) -> Result<(), RtnlError> {
        let m = Self::route_msg(index, dst, prefix, via);
        self.request("remove route", RouteNetlinkMessage::DelRoute(m), NLM_F_ACK)
            .map(drop)
    }

    /// Addresses of an interface: `(address, prefix)`, global scope only.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(IpAddr, u8)>, RtnlError> {
        let msgs = self.request(
            "address dump",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index
                || a.header.scope != netlink_packet_route::address::AddressScope::Universe
            {
                continue;
            }
            for attr in &a.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    out.push((*ip, a.header.prefix_len));
                }
            }
        }
        Ok(out)
    }
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

    /// Every pending event (an empty list when there is none).
    pub fn events(&self) -> Result<Vec<LinkEvent>, RtnlError> {
        let mut out = Vec::new();
        loop {
            let mut buf = vec![0u8; 32 * 1024];
            let n = match self.sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("link events")(e)),
            };
            for m in messages("link events", &buf[..n.min(buf.len())])? {
                match m.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                        out.push(LinkEvent::New(Link::from_msg(&l)))
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                        out.push(LinkEvent::Gone(l.header.index))
                    }
                    NetlinkPayload::InnerMessage(
                        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a),
                    ) => out.push(LinkEvent::Address(a.header.index)),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_loopback() {
        // Reading the link list needs no privileges.
        let mut r = Rtnl::open().unwrap();
        let links = r.links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo exists");
        assert!(!lo.ethernet);
        assert!(lo.index > 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(messages("t", &[0xff; 20]).is_err());
        assert!(messages("t", &[16, 0, 0, 0, 0, 0]).unwrap().is_empty());
    }
}
#[cfg(test)]
mod dump {
    #[test]
    fn print_links() {
        let mut r = super::Rtnl::open().unwrap();
        for l in r.links().unwrap() {
            eprintln!("{l:?}");
        }
    }
}

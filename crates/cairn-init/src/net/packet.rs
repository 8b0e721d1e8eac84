//! DHCPv4 on the wire: our own small BOOTP/DHCP encoder and decoder (RFC
//! 2131/2132, with RFC 3396 long options, RFC 3397 search lists and RFC
//! 3442 classless routes), and the IPv4/UDP framing used on the raw packet
//! socket before the interface has an address. Every check names what was
//! wrong; nothing here panics on any input (see the property tests and
//! `fuzz/corpus`).
//!
//! This replaced the `dhcproto` crate, which pulled `hickory-proto`, `idna`
//! and ICU's Unicode tables into the static init (about 1 MB of it) for the
//! dozen options cairn reads. `dhcproto` stays a dev-dependency: the tests
//! check our messages against it.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::dhcp::{LeaseInfo, MessageKind, Outgoing, Reply, ReplyKind};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// Larger datagrams are refused before decoding.
pub const MAX_PACKET: usize = 1500;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("IP packet too short ({0} bytes)")]
    Short(usize),
    #[error("IP packet too large ({0} bytes)")]
    TooLarge(usize),
    #[error("not IPv4/UDP (version/ihl byte {0:#04x}, protocol {1})")]
    NotUdp(u8, u8),
    #[error("bad IPv4 header: {0}")]
    IpHeader(&'static str),
    #[error("bad UDP header: {0}")]
    UdpHeader(&'static str),
    #[error("UDP to port {0}, not 68")]
    Port(u16),
    #[error("not a DHCP message: {0}")]
    Decode(String),
    #[error("DHCP field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
    #[error("DHCP message is for another client (chaddr)")]
    OtherClient,
    #[error("cannot encode DHCP message: {0}")]
    Encode(String),
}

fn field(field: &'static str, problem: &'static str) -> PacketError {
    PacketError::Field { field, problem }
}

/// The UDP payload of an IPv4 packet to port 68, checked.
pub fn udp_payload(ip: &[u8]) -> Result<&[u8], PacketError> {
    if ip.len() > 65535 {
        return Err(PacketError::TooLarge(ip.len()));
    }
    if ip.len() < 28 {
        return Err(PacketError::Short(ip.len()));
    }
    if ip[0] >> 4 != 4 || ip[9] != 17 {
        return Err(PacketError::NotUdp(ip[0], ip[9]));
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::IpHeader("header length below 20"));
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total > ip.len() || total < ihl + 8 {
        return Err(PacketError::IpHeader(
            "total length does not fit the packet",
        ));
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(PacketError::IpHeader("fragmented"));
    }
    let udp = &ip[ihl..total];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if dport != CLIENT_PORT {
        return Err(PacketError::Port(dport));
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return Err(PacketError::UdpHeader("length does not fit the packet"));
    }
    let payload = &udp[8..ulen];
    if payload.len() > MAX_PACKET {
        return Err(PacketError::TooLarge(payload.len()));
    }
    Ok(payload)
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let w = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + UDP packet (client port to server port) around `payload`.
pub fn ip_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let total = 20 + ulen;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    p.extend_from_slice(&SERVER_PORT.to_be_bytes());
    p.extend_from_slice(&(ulen as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // UDP checksum over the pseudo header.
    let mut pseudo = Vec::with_capacity(12 + ulen);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(ulen as u16).to_be_bytes());
    pseudo.extend_from_slice(&p[20..]);
    let mut c = checksum(&pseudo);
    if c == 0 {
        c = 0xffff;
    }
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

/// What identifies us in every message.
#[derive(Debug, Clone)]
pub struct ClientId {
    pub mac: [u8; 6],
    pub hostname: Option<String>,
}

/// Option codes cairn sends or reads (RFC 2132 unless noted).
pub mod code {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const NTP: u8 = 42;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const RENEWAL: u8 = 58;
    pub const REBINDING: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    /// RFC 4039.
    pub const RAPID_COMMIT: u8 = 80;
    /// RFC 3397.
    pub const DOMAIN_SEARCH: u8 = 119;
    /// RFC 3442.
    pub const CLASSLESS_ROUTE: u8 = 121;
    pub const PAD: u8 = 0;
    pub const END: u8 = 255;
}

/// Values of option 53.
pub mod msg {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
}

const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// The options cairn asks for (option 55).
pub const REQUESTED: [u8; 11] = [
    code::SUBNET_MASK,
    code::ROUTER,
    code::DNS,
    code::HOSTNAME,
    code::DOMAIN_NAME,
    code::MTU,
    code::NTP,
    code::RENEWAL,
    code::REBINDING,
    code::DOMAIN_SEARCH,
    code::CLASSLESS_ROUTE,
];

/// A BOOTREQUEST header with no options (`op`..`file` and the cookie).
fn bootrequest(out: &Outgoing, mac: &[u8; 6]) -> Vec<u8> {
    let mut p = Vec::with_capacity(300);
    p.extend_from_slice(&[1u8, 1, 6, 0]);
    p.extend_from_slice(&out.xid.to_be_bytes());
    p.extend_from_slice(&out.secs.to_be_bytes());
    // We cannot receive unicast before having an address: ask for broadcast.
    let broadcast = out.unicast.is_none() && out.ciaddr.is_unspecified();
    p.extend_from_slice(&(if broadcast { 0x8000u16 } else { 0 }).to_be_bytes());
    p.extend_from_slice(&out.ciaddr.octets());
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(mac);
    p.extend_from_slice(&[0; 10 + 64 + 128]);
    p.extend_from_slice(&MAGIC);
    p
}

/// Appends one option; values longer than 255 bytes are refused.
fn put_option(p: &mut Vec<u8>, code: u8, value: &[u8]) -> Result<(), PacketError> {
    let len = u8::try_from(value.len())
        .map_err(|_| PacketError::Encode(format!("option {code} longer than 255 bytes")))?;
    p.push(code);
    p.push(len);
    p.extend_from_slice(value);
    Ok(())
}

/// Encodes an outgoing message. The xid comes from the state machine (no
/// getrandom(2) here: it can block for many seconds in an early-boot VM).
pub fn encode(out: &Outgoing, id: &ClientId) -> Result<Vec<u8>, PacketError> {
    let mut p = bootrequest(out, &id.mac);
    let kind = match out.kind {
        MessageKind::Discover => msg::DISCOVER,
        MessageKind::Request => msg::REQUEST,
        MessageKind::Decline => msg::DECLINE,
        MessageKind::Release => msg::RELEASE,
    };
    put_option(&mut p, code::MESSAGE_TYPE, &[kind])?;
    let mut cid = vec![1u8];
    cid.extend_from_slice(&id.mac);
    put_option(&mut p, code::CLIENT_ID, &cid)?;
    if let Some(r) = out.requested {
        put_option(&mut p, code::REQUESTED_IP, &r.octets())?;
    }
    if let Some(s) = out.server_id {
        put_option(&mut p, code::SERVER_ID, &s.octets())?;
    }
    if matches!(out.kind, MessageKind::Discover | MessageKind::Request) {
        put_option(&mut p, code::PARAMETER_LIST, &REQUESTED)?;
        put_option(&mut p, code::MAX_SIZE, &(MAX_PACKET as u16).to_be_bytes())?;
        if let Some(h) = &id.hostname {
            put_option(&mut p, code::HOSTNAME, h.as_bytes())?;
        }
    }
    if out.rapid_commit && out.kind == MessageKind::Discover {
        put_option(&mut p, code::RAPID_COMMIT, &[])?;
    }
    p.push(code::END);
    Ok(p)
}

fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// A domain name as it goes into resolv.conf or sethostname: one trailing
/// dot dropped, then 1 to 253 bytes of labels of 1 to 63 letters, digits
/// and hyphens. (`"."`, `"a..b"` or `".a"` once gave an empty hostname or
/// a name with an empty label: found by the `dhcp` fuzz target.)
fn clean_text(field_name: &'static str, s: &str) -> Result<String, PacketError> {
    let name = s.strip_suffix('.').unwrap_or(s);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(name.to_string())
    } else {
        Err(field(field_name, "not a valid domain name"))
    }
}

/// Options cairn reads; every other option is skipped.
const KEEP: [u8; 15] = [1, 3, 6, 12, 15, 26, 42, 51, 53, 54, 58, 59, 80, 119, 121];

/// Options whose repeated occurrences are joined into one value (RFC
/// 3396); for the fixed-size ones the last occurrence wins.
fn concatenates(code: u8) -> bool {
    matches!(code, 3 | 6 | 12 | 15 | 42 | 119 | 121)
}

/// The options cairn reads from one message, lengths checked.
#[derive(Debug, Default)]
struct Options {
    values: Vec<(u8, Vec<u8>)>,
}

impl Options {
    fn get(&self, code: u8) -> Option<&[u8]> {
        self.values
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    fn add(&mut self, code: u8, value: &[u8]) {
        match self.values.iter_mut().find(|(c, _)| *c == code) {
            Some((_, v)) if concatenates(code) => v.extend_from_slice(value),
            Some((_, v)) => *v = value.to_vec(),
            None => self.values.push((code, value.to_vec())),
        }
    }
}

/// Walks the option area by hand: checks every length against the packet
/// and the fixed sizes, and keeps only [`KEEP`] options.
fn options(bytes: &[u8]) -> Result<Options, PacketError> {
    if bytes.len() > MAX_PACKET {
        return Err(PacketError::TooLarge(bytes.len()));
    }
    if bytes.len() < 240 {
        return Err(PacketError::Decode(format!(
            "{} bytes, a DHCP message has at least 240",
            bytes.len()
        )));
    }
    if bytes[236..240] != MAGIC {
        return Err(field("magic cookie", "missing"));
    }
    let mut opts = Options::default();
    let mut i = 240;
    while i < bytes.len() {
        let code = bytes[i];
        match code {
            code::PAD => {
                i += 1;
                continue;
            }
            code::END => return Ok(opts),
            _ => {}
        }
        let Some(&len) = bytes.get(i + 1) else {
            return Err(field("options", "option cut off before its length"));
        };
        let len = usize::from(len);
        let Some(value) = bytes.get(i + 2..i + 2 + len) else {
            return Err(field("options", "option runs past the end of the packet"));
        };
        let size_ok = match code {
            1 | 51 | 54 | 58 | 59 => len == 4,
            53 => len == 1,
            26 => len == 2,
            80 => len == 0,
            3 | 6 | 42 => len > 0 && len % 4 == 0,
            12 | 15 | 119 | 121 => len > 0,
            _ => true,
        };
        if KEEP.contains(&code) {
            if !size_ok {
                return Err(PacketError::Field {
                    field: "options",
                    problem: "an option has the wrong length for its type",
                });
            }
            opts.add(code, value);
        }
        i += 2 + len;
    }
    Err(field("options", "no end option"))
}

fn be_u32(field_name: &'static str, v: &[u8]) -> Result<u32, PacketError> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| field(field_name, "not 4 bytes"))
}

fn addr(field_name: &'static str, v: &[u8]) -> Result<Ipv4Addr, PacketError> {
    be_u32(field_name, v).map(Ipv4Addr::from)
}

/// A list of addresses (lengths are multiples of 4, checked before).
fn addrs(v: &[u8]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    v.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
}

fn text(field_name: &'static str, v: &[u8]) -> Result<String, PacketError> {
    // Some servers NUL-terminate strings.
    let end = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let s = std::str::from_utf8(&v[..end]).map_err(|_| field(field_name, "not UTF-8"))?;
    clean_text(field_name, s)
}

/// One RFC 1035 name starting at `start` in an option 119 value, with
/// compression pointers into that value (RFC 3397); returns the name and
/// where the next one starts.
fn read_name(data: &[u8], start: usize) -> Result<(String, usize), PacketError> {
    let bad = |problem| field("option 119", problem);
    let mut name = String::new();
    let mut pos = start;
    let mut next = None;
    let mut jumps = 0;
    loop {
        let &len = data.get(pos).ok_or(bad("name runs past the end"))?;
        match len {
            0 => {
                let after = *next.get_or_insert(pos + 1);
                return Ok((name, after));
            }
            l if l & 0xc0 == 0xc0 => {
                let &lo = data
                    .get(pos + 1)
                    .ok_or(bad("compression pointer cut off"))?;
                let target = (usize::from(l & 0x3f) << 8) | usize::from(lo);
                if target >= pos {
                    return Err(bad("compression pointer does not point backwards"));
                }
                jumps += 1;
                if jumps > 32 {
                    return Err(bad("compression pointers loop"));
                }
                next.get_or_insert(pos + 2);
                pos = target;
            }
            l if l & 0xc0 != 0 => return Err(bad("reserved label type")),
            l => {
                let l = usize::from(l);
                let label = data
                    .get(pos + 1..pos + 1 + l)
                    .ok_or(bad("label runs past the end"))?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                if name.len() > 255 {
                    return Err(bad("name longer than 255 bytes"));
                }
                pos += 1 + l;
            }
        }
    }
}

/// Option 119: a list of compressed domain names.
fn search_list(data: &[u8]) -> Result<Vec<String>, PacketError> {
    let mut names = Vec::new();
    let mut pos = 0;
    while pos < data.len() && names.len() < 6 {
        let (name, next) = read_name(data, pos)?;
        // Raw labels (no IDNA conversion: `clean_text` only accepts ASCII).
        names.push(clean_text("option 119", &name)?);
        pos = next;
    }
    Ok(names)
}

/// Option 121: `(width, significant destination octets, router)` records.
fn classless_routes(data: &[u8]) -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr)>, PacketError> {
    let mut routes = Vec::new();
    let mut i = 0;
    while i < data.len() && routes.len() < 32 {
        let width = data[i];
        if width > 32 {
            return Err(field("option 121", "prefix longer than 32"));
        }
        let n = usize::from(width).div_ceil(8);
        let dest = data
            .get(i + 1..i + 1 + n)
            .ok_or(field("option 121", "destination cut off"))?;
        let gw = data
            .get(i + 1 + n..i + 5 + n)
            .ok_or(field("option 121", "router cut off"))?;
        let mut octets = [0u8; 4];
        octets[..n].copy_from_slice(dest);
        let mask = u32::MAX.checked_shl(32 - u32::from(width)).unwrap_or(0);
        let net = Ipv4Addr::from(u32::from_be_bytes(octets) & mask);
        routes.push((net, width, addr("option 121", gw)?));
        i += 5 + n;
    }
    Ok(routes)
}

fn secs(field_name: &'static str, v: &[u8]) -> Result<Duration, PacketError> {
    be_u32(field_name, v).map(|s| Duration::from_secs(u64::from(s)))
}

/// Decodes and checks a server message meant for `mac`.
pub fn decode(bytes: &[u8], mac: &[u8; 6]) -> Result<Reply, PacketError> {
    let opts = options(bytes)?;
    if bytes[0] != 2 {
        return Err(field("op", "not a BOOTREPLY"));
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(field("htype", "not ethernet"));
    }
    if bytes[28..34] != mac[..] {
        return Err(PacketError::OtherClient);
    }
    let xid = be_u32("xid", &bytes[4..8])?;
    let kind = match opts.get(code::MESSAGE_TYPE) {
        Some([msg::OFFER]) => ReplyKind::Offer,
        Some([msg::ACK]) => ReplyKind::Ack,
        Some([msg::NAK]) => ReplyKind::Nak,
        Some(_) => return Err(field("option 53", "not OFFER, ACK or NAK")),
        None => return Err(field("option 53", "missing")),
    };
    let server = match opts.get(code::SERVER_ID).map(|v| addr("option 54", v)) {
        Some(Ok(s)) if !s.is_unspecified() => s,
        _ => return Err(field("option 54", "missing server identifier")),
    };
    let mut info = LeaseInfo {
        addr: addr("yiaddr", &bytes[16..20])?,
        server,
        rapid_commit: opts.get(code::RAPID_COMMIT).is_some(),
        ..Default::default()
    };
    if kind == ReplyKind::Nak {
        return Ok(Reply { kind, xid, info });
    }
    let a = info.addr;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
        return Err(field("yiaddr", "not a usable address"));
    }
    info.prefix_len = match opts.get(code::SUBNET_MASK) {
        Some(mask) => prefix_of(addr("option 1", mask)?)
            .ok_or_else(|| field("option 1", "not a contiguous netmask"))?,
        // RFC 2131 leaves it optional: guess the classful size.
        None => match a.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    info.lease_time = match opts.get(code::LEASE_TIME) {
        Some(v) => secs("option 51", v)?,
        None if kind == ReplyKind::Offer => Duration::from_secs(3600),
        None => return Err(field("option 51", "ACK without a lease time")),
    };
    if let Some(v) = opts.get(code::RENEWAL) {
        info.t1 = Some(secs("option 58", v)?);
    }
    if let Some(v) = opts.get(code::REBINDING) {
        info.t2 = Some(secs("option 59", v)?);
    }
    if let Some(v) = opts.get(code::ROUTER) {
        info.routers = addrs(v)
            .filter(|r| !r.is_unspecified() && !r.is_broadcast())
            .take(4)
            .collect();
    }
    if let Some(v) = opts.get(code::DNS) {
        info.dns = addrs(v).filter(|d| !d.is_unspecified()).take(8).collect();
    }
    if let Some(v) = opts.get(code::NTP) {
        info.ntp = addrs(v).filter(|d| !d.is_unspecified()).take(4).collect();
    }
    if let Some(v) = opts.get(code::DOMAIN_NAME) {
        info.domain = Some(text("option 15", v)?);
    }
    if let Some(v) = opts.get(code::DOMAIN_SEARCH) {
        info.search = search_list(v)?;
    }
    if let Some(v) = opts.get(code::HOSTNAME) {
        info.hostname = Some(text("option 12", v)?);
    }
    if let Some(v) = opts.get(code::MTU) {
        let mtu = u16::from_be_bytes(
            <[u8; 2]>::try_from(v).map_err(|_| field("option 26", "not 2 bytes"))?,
        );
        if mtu < 576 {
            return Err(field("option 26", "MTU below 576"));
        }
        info.mtu = Some(mtu);
    }
    if let Some(v) = opts.get(code::CLASSLESS_ROUTE) {
        info.classless_routes = classless_routes(v)?;
    }
    Ok(Reply { kind, xid, info })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    // An independent implementation to check ours against.
    use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
    use dhcproto::{Decodable, Encodable};
    use proptest::prelude::*;

    pub const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server reply as a real server would send it.
    pub fn server_reply(kind: MessageType, xid: u32) -> Vec<u8> {
        let mut m = v4::Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.set_opcode(v4::Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        o.insert(DhcpOption::DomainName("example.org".into()));
        o.insert(DhcpOption::InterfaceMtu(1400));
        o.insert(DhcpOption::ClasslessStaticRoute(vec![(
            "10.9.0.0/16".parse().unwrap(),
            Ipv4Addr::new(10, 0, 2, 1),
        )]));
        m.to_vec().unwrap()
    }

    #[test]
    fn decodes_a_full_ack() {
        let r = decode(&server_reply(MessageType::Ack, 77), &MAC).unwrap();
        assert_eq!(r.kind, ReplyKind::Ack);
        assert_eq!(r.xid, 77);
        let i = r.info;
        assert_eq!(i.addr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(i.prefix_len, 24);
        assert_eq!(i.lease_time, Duration::from_secs(86400));
        assert_eq!(i.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(i.domain.as_deref(), Some("example.org"));
        assert_eq!(i.mtu, Some(1400));
        assert_eq!(
            i.routes(),
            vec![(Ipv4Addr::new(10, 9, 0, 0), 16, Ipv4Addr::new(10, 0, 2, 1))]
        );
    }

    #[test]
    fn rapid_commit_option_80() {
        let plain = decode(&server_reply(MessageType::Ack, 1), &MAC).unwrap();
        assert!(!plain.info.rapid_commit);
        let mut m = v4::Message::from_bytes(&server_reply(MessageType::Ack, 1)).unwrap();
        m.opts_mut().insert(DhcpOption::RapidCommit);
        let r = decode(&m.to_vec().unwrap(), &MAC).unwrap();
        assert!(r.info.rapid_commit);
        // Option 80 has no value; one with a value is malformed.
        let bad = with_raw_options(&[80, 1, 0]);
        assert!(decode(&bad, &MAC).is_err());
    }

    #[test]
    fn search_list_option_119() {
        let mut m = v4::Message::from_bytes(&server_reply(MessageType::Ack, 1)).unwrap();
        m.opts_mut().insert(DhcpOption::DomainSearch(vec![
            dhcproto::Name::from_ascii("lab.example.").unwrap(),
            dhcproto::Name::from_ascii("corp").unwrap(),
        ]));
        let r = decode(&m.to_vec().unwrap(), &MAC).unwrap();
        assert_eq!(r.info.search, ["lab.example", "corp"]);
    }

    #[test]
    fn refuses_other_clients_and_requests() {
        let bytes = server_reply(MessageType::Ack, 1);
        assert_eq!(decode(&bytes, &[1; 6]), Err(PacketError::OtherClient));
        let out = Outgoing {
            kind: MessageKind::Discover,
            xid: 5,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: Some(Ipv4Addr::new(10, 0, 0, 9)),
            server_id: None,
            unicast: None,
            secs: 0,
            rapid_commit: false,
        };
        let id = ClientId {
            mac: MAC,
            hostname: Some("box".into()),
        };
        let req = encode(&out, &id).unwrap();
        assert!(decode(&req, &MAC).is_err(), "a BOOTREQUEST is not a reply");
        let back = v4::Message::from_bytes(&req).unwrap();
        assert_eq!(back.xid(), 5);
        assert!(back.flags().broadcast());
        assert_eq!(
            back.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 9)))
        );
        assert!(back.opts().get(OptionCode::ParameterRequestList).is_some());
    }

    #[test]
    fn bad_mask_and_missing_server_id_are_named() {
        let mut m = v4::Message::from_bytes(&server_reply(MessageType::Ack, 1)).unwrap();
        m.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)));
        let e = decode(&m.to_vec().unwrap(), &MAC).unwrap_err();
        assert!(e.to_string().contains("option 1"), "{e}");
        m.opts_mut().remove(OptionCode::ServerIdentifier);
        let e = decode(&m.to_vec().unwrap(), &MAC).unwrap_err();
        assert!(e.to_string().contains("option 54"), "{e}");
    }

    #[test]
    fn ip_udp_round_trip() {
        let payload = server_reply(MessageType::Offer, 3);
        let mut p = ip_udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &payload);
        assert_eq!(checksum(&p[..20]), 0, "IP header checksum");
        // Pretend it was sent to us: swap ports.
        p[20..22].copy_from_slice(&67u16.to_be_bytes());
        p[22..24].copy_from_slice(&68u16.to_be_bytes());
        assert_eq!(udp_payload(&p).unwrap(), &payload[..]);
        assert_eq!(udp_payload(&p[..27]), Err(PacketError::Short(27)));
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(udp_payload(&p), Err(PacketError::Port(53)));
    }

    /// A reply with hand-written options after the fixed header.
    fn with_raw_options(opts: &[u8]) -> Vec<u8> {
        let mut b = server_reply(MessageType::Ack, 4);
        b.truncate(240);
        for (code, v) in [
            (53u8, &[5u8][..]),
            (54, &[10, 0, 2, 2]),
            (51, &[0, 0, 14, 16]),
        ] {
            b.push(code);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        b.extend_from_slice(opts);
        b.push(255);
        b
    }

    #[test]
    fn search_list_with_compression_pointers() {
        // "lab.example", then "corp" + pointer to "example" (offset 4).
        let mut v = vec![3, b'l', b'a', b'b', 7];
        v.extend_from_slice(b"example");
        v.push(0);
        v.extend_from_slice(&[4, b'c', b'o', b'r', b'p', 0xc0, 4]);
        let mut o = vec![119, v.len() as u8];
        o.extend_from_slice(&v);
        let r = decode(&with_raw_options(&o), &MAC).unwrap();
        assert_eq!(r.info.search, ["lab.example", "corp.example"]);
    }

    #[test]
    fn search_list_pointer_loops_and_forward_pointers_are_refused() {
        for v in [
            vec![1, b'x', 0xc0, 0], // points back at itself, forever
            vec![0xc0, 5, 0, 0, 0], // points forwards
            vec![0xc0],             // cut off
            vec![5, b'a', b'b'],    // label past the end
            vec![0x80, 0],          // reserved label type
        ] {
            let mut o = vec![119, v.len() as u8];
            o.extend_from_slice(&v);
            let e = decode(&with_raw_options(&o), &MAC).unwrap_err();
            assert!(e.to_string().contains("option 119"), "{v:?}: {e}");
        }
    }

    #[test]
    fn long_options_are_concatenated() {
        // RFC 3396: option 6 split in two.
        let o = [6, 4, 10, 0, 0, 1, 6, 4, 10, 0, 0, 2];
        let r = decode(&with_raw_options(&o), &MAC).unwrap();
        assert_eq!(
            r.info.dns,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
    }

    #[test]
    fn classless_routes_default_and_host_bits() {
        // 0.0.0.0/0 via 10.0.2.1; 10.9.255.0/16 (host bits dropped) via .3;
        // then a record cut off.
        let o = [121, 14, 0, 10, 0, 2, 1, 16, 10, 9, 10, 0, 2, 3, 33, 1];
        let e = decode(&with_raw_options(&o), &MAC).unwrap_err();
        assert!(e.to_string().contains("option 121"), "{e}");
        let o = [121, 12, 0, 10, 0, 2, 1, 16, 10, 9, 10, 0, 2, 3];
        let r = decode(&with_raw_options(&o), &MAC).unwrap();
        assert_eq!(
            r.info.classless_routes,
            vec![
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 0, 2, 1)),
                (Ipv4Addr::new(10, 9, 0, 0), 16, Ipv4Addr::new(10, 0, 2, 3)),
            ]
        );
    }

    #[test]
    fn text_options_may_be_nul_terminated_but_not_binary() {
        let r = decode(&with_raw_options(&[12, 4, b'b', b'o', b'x', 0]), &MAC).unwrap();
        assert_eq!(r.info.hostname.as_deref(), Some("box"));
        let e = decode(&with_raw_options(&[15, 2, 0xff, b'a']), &MAC).unwrap_err();
        assert!(e.to_string().contains("option 15"), "{e}");
    }

    #[test]
    fn names_with_empty_labels_are_refused() {
        for (code, v) in [
            (12u8, &b"."[..]),
            (12, b".."),
            (15, b"a..b"),
            (15, b".example"),
            (12, b"box.."),
        ] {
            let mut o = vec![code, v.len() as u8];
            o.extend_from_slice(v);
            let e = decode(&with_raw_options(&o), &MAC).unwrap_err();
            assert!(
                e.to_string().contains("not a valid domain name"),
                "{v:?}: {e}"
            );
        }
        let long_label = [b'a'; 64];
        let mut o = vec![12, 64];
        o.extend_from_slice(&long_label);
        assert!(decode(&with_raw_options(&o), &MAC).is_err());
        // One trailing dot (a fully qualified name) is fine.
        let r = decode(
            &with_raw_options(&[15, 8, b'l', b'a', b'b', b'.', b'o', b'r', b'g', b'.']),
            &MAC,
        )
        .unwrap();
        assert_eq!(r.info.domain.as_deref(), Some("lab.org"));
    }

    #[test]
    fn every_outgoing_kind_decodes_with_dhcproto() {
        let id = ClientId {
            mac: MAC,
            hostname: Some("box".into()),
        };
        for (kind, want) in [
            (MessageKind::Discover, MessageType::Discover),
            (MessageKind::Request, MessageType::Request),
            (MessageKind::Decline, MessageType::Decline),
            (MessageKind::Release, MessageType::Release),
        ] {
            let out = Outgoing {
                kind,
                xid: 0xdead_beef,
                ciaddr: Ipv4Addr::new(10, 0, 2, 15),
                requested: None,
                server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
                unicast: Some(Ipv4Addr::new(10, 0, 2, 2)),
                secs: 7,
                rapid_commit: true,
            };
            let m = v4::Message::from_bytes(&encode(&out, &id).unwrap()).unwrap();
            assert_eq!(m.opts().msg_type(), Some(want));
            assert_eq!(m.xid(), 0xdead_beef);
            assert_eq!(m.secs(), 7);
            assert!(!m.flags().broadcast());
            assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
            assert_eq!(m.chaddr().get(..6), Some(&MAC[..]));
            assert_eq!(
                m.opts().get(OptionCode::ServerIdentifier),
                Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)))
            );
            // Rapid Commit only ever goes into a DISCOVER.
            assert_eq!(
                m.opts().get(OptionCode::RapidCommit).is_some(),
                kind == MessageKind::Discover
            );
            let asks = matches!(kind, MessageKind::Discover | MessageKind::Request);
            assert_eq!(m.opts().get(OptionCode::Hostname).is_some(), asks);
            if asks {
                let Some(DhcpOption::ParameterRequestList(l)) =
                    m.opts().get(OptionCode::ParameterRequestList)
                else {
                    panic!("no option 55");
                };
                let codes: Vec<u8> = l.iter().map(|&c| u8::from(c)).collect();
                assert_eq!(codes, REQUESTED);
            }
        }
        let long = ClientId {
            mac: MAC,
            hostname: Some("x".repeat(300)),
        };
        let out = Outgoing {
            kind: MessageKind::Discover,
            xid: 1,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server_id: None,
            unicast: None,
            secs: 0,
            rapid_commit: false,
        };
        assert!(matches!(encode(&out, &long), Err(PacketError::Encode(_))));
    }

    /// Every message the state machine sends in a client's life (DISCOVER,
    /// REQUEST while selecting, DECLINE, INIT-REBOOT, renewing and
    /// rebinding REQUESTs, RELEASE), encoded with and without a hostname,
    /// carries option 61 exactly once: type 1 (ethernet) and the MAC.
    #[test]
    fn client_identifier_is_in_every_outgoing_message() {
        use super::super::dhcp::{Action, Client, Input, LeaseInfo, State};
        use std::time::Instant;

        let lease = LeaseInfo {
            addr: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            server: Ipv4Addr::new(10, 0, 2, 2),
            lease_time: Duration::from_secs(100),
            ..Default::default()
        };
        // The messages sent so far; a reply answers the last one's xid.
        let mut msgs: Vec<Outgoing> = Vec::new();
        let sends = |a: Vec<Action>| {
            a.into_iter().filter_map(|x| match x {
                Action::Send(m) => Some(m),
                _ => None,
            })
        };
        let answer = |msgs: &[Outgoing], kind: ReplyKind| {
            Input::Reply(Reply {
                kind,
                xid: msgs.last().unwrap().xid,
                info: lease.clone(),
            })
        };
        let t0 = Instant::now();
        let mut c = Client::new(3, None);
        msgs.extend(sends(c.start(t0)));
        msgs.extend(sends(c.handle(t0, answer(&msgs, ReplyKind::Offer))));
        msgs.extend(sends(c.handle(t0, answer(&msgs, ReplyKind::Ack))));
        msgs.extend(sends(c.handle(t0, Input::ArpConflict)));
        let mut now = c.deadline().unwrap();
        msgs.extend(sends(c.on_timer(now)));
        msgs.extend(sends(c.handle(now, answer(&msgs, ReplyKind::Offer))));
        msgs.extend(sends(c.handle(now, answer(&msgs, ReplyKind::Ack))));
        now = c.deadline().unwrap();
        msgs.extend(sends(c.on_timer(now)));
        assert_eq!(c.state(), &State::Bound);
        msgs.extend(sends(c.link_restored(now)));
        msgs.extend(sends(c.handle(now, answer(&msgs, ReplyKind::Ack))));
        while c.state() != &State::Rebinding {
            now = c.deadline().unwrap();
            msgs.extend(sends(c.on_timer(now)));
        }
        msgs.extend(sends(c.release(now)));
        let kinds: Vec<MessageKind> = msgs.iter().map(|m| m.kind).collect();
        for k in [
            MessageKind::Discover,
            MessageKind::Request,
            MessageKind::Decline,
            MessageKind::Release,
        ] {
            assert!(kinds.contains(&k), "no {k:?} in {kinds:?}");
        }
        let renew = |m: &Outgoing| m.kind == MessageKind::Request && !m.ciaddr.is_unspecified();
        assert!(msgs.iter().any(|m| renew(m) && m.unicast.is_some()));
        assert!(msgs.iter().any(|m| renew(m) && m.unicast.is_none()));
        assert!(msgs.iter().any(|m| m.kind == MessageKind::Request
            && m.ciaddr.is_unspecified()
            && m.server_id.is_none()));

        let mut want = vec![1u8];
        want.extend_from_slice(&MAC);
        for hostname in [None, Some("box".to_string())] {
            let id = ClientId { mac: MAC, hostname };
            for m in &msgs {
                let bytes = encode(m, &id).unwrap();
                let back = v4::Message::from_bytes(&bytes).unwrap();
                assert_eq!(
                    back.opts().get(OptionCode::ClientIdentifier),
                    Some(&DhcpOption::ClientIdentifier(want.clone())),
                    "{m:?} with {:?}",
                    id.hostname
                );
                // Exactly once in our own bytes.
                let mut i = 240;
                let mut seen = 0;
                while bytes[i] != code::END {
                    seen += usize::from(bytes[i] == code::CLIENT_ID);
                    i += 2 + usize::from(bytes[i + 1]);
                }
                assert_eq!(seen, 1, "{m:?}");
            }
        }
    }

    /// Corpus files (`crates/cairn-init/fuzz/corpus/dhcp`, DHCP messages
    /// without their IP/UDP header) that a client must accept.
    const CORPUS_GOOD: [&str; 3] = ["ack", "offer", "nak"];
    /// Corpus files that must be refused, with the words of their error.
    const CORPUS_REFUSED: [(&str, &str); 13] = [
        ("bad_cookie", "magic cookie: missing"),
        ("classless_bad", "option 121: prefix longer than 32"),
        ("domain_empty_label", "option 15: not a valid domain name"),
        ("hostname_dot", "option 12: not a valid domain name"),
        ("label_too_long", "not a valid domain name"),
        ("empty", "0 bytes, a DHCP message has at least 240"),
        ("garbage", "magic cookie: missing"),
        ("hostname_binary", "option 12: not UTF-8"),
        (
            "option_len_overflow",
            "option runs past the end of the packet",
        ),
        ("request_not_reply", "op: not a BOOTREPLY"),
        (
            "search_compression_loop",
            "option 119: compression pointers loop",
        ),
        ("truncated", "200 bytes, a DHCP message has at least 240"),
        ("zero_yiaddr", "yiaddr: not a usable address"),
    ];

    /// The stored corpus never panics; its hostile messages are refused
    /// with the expected reason and its good ones decode.
    #[test]
    fn corpus_never_panics_and_bad_messages_are_refused() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/dhcp");
        let mut seen = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            let got = decode(&bytes, &MAC);
            let _ = udp_payload(&bytes);
            if let Some((_, why)) = CORPUS_REFUSED.iter().find(|(n, _)| *n == name) {
                let err = got.expect_err(&name).to_string();
                assert!(err.contains(why), "{name}: {err}");
            } else if CORPUS_GOOD.contains(&name.as_str()) {
                got.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            seen.push(name);
        }
        for name in CORPUS_REFUSED.iter().map(|r| r.0).chain(CORPUS_GOOD) {
            assert!(seen.iter().any(|s| s == name), "corpus file {name} missing");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = decode(&bytes, &MAC);
            let _ = udp_payload(&bytes);
        }

        /// Replies encoded by dhcproto decode to the same values with ours.
        #[test]
        fn agrees_with_dhcproto(
            xid in any::<u32>(),
            lease in any::<u32>(),
            mtu in 576u16..,
            dns in proptest::collection::vec(1u32.., 1..8),
            prefix in 0u8..=32,
            host in "[a-z][a-z0-9-]{0,20}",
        ) {
            let mut m = v4::Message::from_bytes(&server_reply(MessageType::Offer, xid)).unwrap();
            let o = m.opts_mut();
            o.insert(DhcpOption::AddressLeaseTime(lease));
            o.insert(DhcpOption::InterfaceMtu(mtu));
            let dns: Vec<Ipv4Addr> = dns.into_iter().map(Ipv4Addr::from).collect();
            o.insert(DhcpOption::DomainNameServer(dns.clone()));
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            o.insert(DhcpOption::SubnetMask(Ipv4Addr::from(mask)));
            o.insert(DhcpOption::Hostname(host.clone()));
            let r = decode(&m.to_vec().unwrap(), &MAC).unwrap();
            prop_assert_eq!(r.kind, ReplyKind::Offer);
            prop_assert_eq!(r.xid, xid);
            prop_assert_eq!(r.info.lease_time, Duration::from_secs(u64::from(lease)));
            prop_assert_eq!(r.info.mtu, Some(mtu));
            prop_assert_eq!(r.info.dns, dns);
            prop_assert_eq!(r.info.prefix_len, prefix);
            prop_assert_eq!(r.info.hostname, Some(host));
        }

        #[test]
        fn mutated_replies_never_panic(
            idx in proptest::collection::vec((0usize..400, any::<u8>()), 1..12),
            cut in 0usize..400,
        ) {
            let mut bytes = server_reply(MessageType::Ack, 9);
            for (i, v) in idx {
                if let Some(b) = bytes.get_mut(i) { *b = v; }
            }
            let _ = decode(&bytes, &MAC);
            bytes.truncate(cut);
            let _ = decode(&bytes, &MAC);
        }
    }
}

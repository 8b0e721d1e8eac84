//! DHCPv4 on the wire: messages built and checked with dhcproto, and the
//! IPv4/UDP framing used on the raw packet socket before the interface has
//! an address. Every check names what was wrong; nothing here panics on
//! any input (see the property tests and `fuzz/corpus`).

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};

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

/// The options cairn asks for (option 55).
pub const REQUESTED: [OptionCode; 11] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::Hostname,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::NtpServers,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::DomainSearch,
    OptionCode::ClasslessStaticRoute,
];

/// A BOOTREQUEST header with no options (`op`..`file`, cookie, end).
fn bootrequest(out: &Outgoing, mac: &[u8; 6]) -> Vec<u8> {
    let mut p = vec![1u8, 1, 6, 0];
    p.extend_from_slice(&out.xid.to_be_bytes());
    p.extend_from_slice(&out.secs.to_be_bytes());
    // We cannot receive unicast before having an address: ask for broadcast.
    let broadcast = out.unicast.is_none() && out.ciaddr.is_unspecified();
    p.extend_from_slice(&(if broadcast { 0x8000u16 } else { 0 }).to_be_bytes());
    p.extend_from_slice(&out.ciaddr.octets());
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(mac);
    p.extend_from_slice(&[0; 10 + 64 + 128]);
    p.extend_from_slice(&[99, 130, 83, 99, 255]);
    p
}

/// Encodes an outgoing message.
pub fn encode(out: &Outgoing, id: &ClientId) -> Result<Vec<u8>, PacketError> {
    // dhcproto's constructors fill in a random xid through `rand`, whose
    // getrandom(2) blocks until the kernel's RNG is seeded, which can take
    // many seconds in an early-boot VM: build the header ourselves.
    let mut m = v4::Message::from_bytes(&bootrequest(out, &id.mac))
        .map_err(|e| PacketError::Encode(e.to_string()))?;
    let kind = match out.kind {
        MessageKind::Discover => MessageType::Discover,
        MessageKind::Request => MessageType::Request,
        MessageKind::Decline => MessageType::Decline,
        MessageKind::Release => MessageType::Release,
    };
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    let mut cid = vec![1u8];
    cid.extend_from_slice(&id.mac);
    opts.insert(DhcpOption::ClientIdentifier(cid));
    if let Some(r) = out.requested {
        opts.insert(DhcpOption::RequestedIpAddress(r));
    }
    if let Some(s) = out.server_id {
        opts.insert(DhcpOption::ServerIdentifier(s));
    }
    if matches!(out.kind, MessageKind::Discover | MessageKind::Request) {
        opts.insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
        opts.insert(DhcpOption::MaxMessageSize(MAX_PACKET as u16));
        if let Some(h) = &id.hostname {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
    }
    m.to_vec().map_err(|e| PacketError::Encode(e.to_string()))
}

fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

fn clean_text(field_name: &'static str, s: &str) -> Result<String, PacketError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(s.trim_end_matches('.').to_string())
    } else {
        Err(field(field_name, "not a valid domain name"))
    }
}

/// Options cairn reads; every other option is dropped before decoding,
/// so the decoder only ever sees these (and their lengths checked).
const KEEP: [u8; 14] = [1, 3, 6, 12, 15, 26, 42, 51, 53, 54, 58, 59, 119, 121];

/// Walks the option area by hand: checks every length against the packet
/// and the fixed sizes, and rebuilds the message with only [`KEEP`]
/// options.
pub fn sanitize(bytes: &[u8]) -> Result<Vec<u8>, PacketError> {
    if bytes.len() > MAX_PACKET {
        return Err(PacketError::TooLarge(bytes.len()));
    }
    if bytes.len() < 240 {
        return Err(PacketError::Decode(format!(
            "{} bytes, a DHCP message has at least 240",
            bytes.len()
        )));
    }
    if bytes[236..240] != [99, 130, 83, 99] {
        return Err(field("magic cookie", "missing"));
    }
    let mut out = bytes[..240].to_vec();
    let mut i = 240;
    let mut ended = false;
    while i < bytes.len() {
        let code = bytes[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => {
                ended = true;
                break;
            }
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
            out.push(code);
            out.push(len as u8);
            out.extend_from_slice(value);
        }
        i += 2 + len;
    }
    if !ended {
        return Err(field("options", "no end option"));
    }
    out.push(255);
    Ok(out)
}

/// Decodes and checks a server message meant for `mac`.
pub fn decode(bytes: &[u8], mac: &[u8; 6]) -> Result<Reply, PacketError> {
    let bytes = &sanitize(bytes)?;
    let m = v4::Message::from_bytes(bytes).map_err(|e| PacketError::Decode(e.to_string()))?;
    if m.opcode() != v4::Opcode::BootReply {
        return Err(field("op", "not a BOOTREPLY"));
    }
    if m.htype() != v4::HType::Eth || m.hlen() != 6 {
        return Err(field("htype", "not ethernet"));
    }
    if m.chaddr().get(..6) != Some(&mac[..]) {
        return Err(PacketError::OtherClient);
    }
    let opts = m.opts();
    let kind = match opts.msg_type() {
        Some(MessageType::Offer) => ReplyKind::Offer,
        Some(MessageType::Ack) => ReplyKind::Ack,
        Some(MessageType::Nak) => ReplyKind::Nak,
        Some(_) => return Err(field("option 53", "not OFFER, ACK or NAK")),
        None => return Err(field("option 53", "missing")),
    };
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) if !s.is_unspecified() => *s,
        _ => return Err(field("option 54", "missing server identifier")),
    };
    let mut info = LeaseInfo {
        addr: m.yiaddr(),
        server,
        ..Default::default()
    };
    if kind == ReplyKind::Nak {
        return Ok(Reply {
            kind,
            xid: m.xid(),
            info,
        });
    }
    let a = info.addr;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
        return Err(field("yiaddr", "not a usable address"));
    }
    info.prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => {
            prefix_of(*mask).ok_or_else(|| field("option 1", "not a contiguous netmask"))?
        }
        // RFC 2131 leaves it optional: guess the classful size.
        _ => match a.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    info.lease_time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => Duration::from_secs(u64::from(*s)),
        None if kind == ReplyKind::Offer => Duration::from_secs(3600),
        _ => return Err(field("option 51", "ACK without a lease time")),
    };
    if let Some(DhcpOption::Renewal(s)) = opts.get(OptionCode::Renewal) {
        info.t1 = Some(Duration::from_secs(u64::from(*s)));
    }
    if let Some(DhcpOption::Rebinding(s)) = opts.get(OptionCode::Rebinding) {
        info.t2 = Some(Duration::from_secs(u64::from(*s)));
    }
    if let Some(DhcpOption::Router(r)) = opts.get(OptionCode::Router) {
        info.routers = r
            .iter()
            .copied()
            .filter(|r| !r.is_unspecified() && !r.is_broadcast())
            .take(4)
            .collect();
    }
    if let Some(DhcpOption::DomainNameServer(d)) = opts.get(OptionCode::DomainNameServer) {
        info.dns = d
            .iter()
            .copied()
            .filter(|d| !d.is_unspecified())
            .take(8)
            .collect();
    }
    if let Some(DhcpOption::NtpServers(d)) = opts.get(OptionCode::NtpServers) {
        info.ntp = d
            .iter()
            .copied()
            .filter(|d| !d.is_unspecified())
            .take(4)
            .collect();
    }
    if let Some(DhcpOption::DomainName(d)) = opts.get(OptionCode::DomainName) {
        info.domain = Some(clean_text("option 15", d)?);
    }
    if let Some(DhcpOption::DomainSearch(names)) = opts.get(OptionCode::DomainSearch) {
        for n in names.iter().take(6) {
            // Raw labels (no IDNA conversion: it would pull Unicode tables
            // into the init, and `clean_text` only accepts ASCII anyway).
            let labels: Vec<String> = n
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            info.search
                .push(clean_text("option 119", &labels.join("."))?);
        }
    }
    if let Some(DhcpOption::Hostname(h)) = opts.get(OptionCode::Hostname) {
        info.hostname = Some(clean_text("option 12", h)?);
    }
    if let Some(DhcpOption::InterfaceMtu(mtu)) = opts.get(OptionCode::InterfaceMtu) {
        if *mtu < 576 {
            return Err(field("option 26", "MTU below 576"));
        }
        info.mtu = Some(*mtu);
    }
    if let Some(DhcpOption::ClasslessStaticRoute(routes)) =
        opts.get(OptionCode::ClasslessStaticRoute)
    {
        for (net, gw) in routes.iter().take(32) {
            info.classless_routes
                .push((net.network(), net.prefix_len(), *gw));
        }
    }
    Ok(Reply {
        kind,
        xid: m.xid(),
        info,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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

    /// The stored corpus (`crates/cairn-init/fuzz/corpus/dhcp`) never panics.
    #[test]
    fn corpus_never_panics() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/dhcp");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            let _ = decode(&bytes, &MAC);
            let _ = udp_payload(&bytes);
            n += 1;
        }
        assert!(n >= 5, "corpus has {n} files");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = decode(&bytes, &MAC);
            let _ = udp_payload(&bytes);
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

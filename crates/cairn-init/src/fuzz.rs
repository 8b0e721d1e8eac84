//! The properties the fuzz targets check (`crates/cairn-init/fuzz`), one
//! function per target, each taking the fuzzer's bytes. A property that
//! does not hold panics (that is what the fuzzer reports); an input the
//! parser refuses is fine as long as it is refused with an error.
//!
//! Built only for tests and with the `fuzz` feature: the corpus replay in
//! this module's tests runs every kept input through the same checks on
//! stable (`cargo test`), and `cargo xtask fuzz` searches for new ones.

#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::net::dhcp::{MessageKind, Outgoing, Reply, ReplyKind};
use crate::net::packet::{self, ClientId, MAX_PACKET};

/// One target's check of one input.
pub type Check = fn(&[u8]);

/// The targets, by name: what `cargo xtask fuzz` runs and the corpus
/// folders under `crates/cairn-init/fuzz/corpus`.
pub const TARGETS: &[(&str, Check)] = &[
    ("dhcp", dhcp),
    ("ra", ra),
    ("rtnl", rtnl),
    ("disk", disk),
    ("config", config),
    ("ctl", ctl),
    ("kmsg", kmsg),
    ("cmdline", cmdline),
    ("sntp", sntp),
    ("update", update),
];

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A name as the decoders may hand it on (to resolv.conf, sethostname):
/// 1 to 253 bytes, labels of 1 to 63 letters, digits and hyphens.
fn assert_domain(what: &str, name: &str) {
    assert!(
        !name.is_empty() && name.len() <= 253,
        "{what}: bad length {name:?}"
    );
    for label in name.split('.') {
        assert!(
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{what}: bad label in {name:?}"
        );
    }
}

// ---------------------------------------------------------------- DHCP

/// A DHCP message (without IP/UDP), and the same bytes as an IPv4 packet.
/// A reply that decodes has sane values (address usable, lists within
/// their caps, names valid) and survives encode -> decode unchanged; the
/// client's own encoder, driven by the first bytes, makes messages that
/// hold what it was given, within [`MAX_PACKET`].
pub fn dhcp(data: &[u8]) {
    if let Ok(payload) = packet::udp_payload(data) {
        assert!(payload.len() <= MAX_PACKET && payload.len() + 28 <= data.len());
        dhcp_reply(payload);
    }
    dhcp_reply(data);
    dhcp_outgoing(data);
}

fn dhcp_reply(data: &[u8]) {
    let Ok(r) = packet::decode(data, &MAC) else {
        return;
    };
    let i = &r.info;
    assert!(!i.server.is_unspecified());
    if r.kind != ReplyKind::Nak {
        let a = i.addr;
        assert!(!(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()));
        assert!(i.prefix_len <= 32);
        assert!(i.routers.len() <= 4 && i.dns.len() <= 8 && i.ntp.len() <= 4);
        assert!(i.search.len() <= 6 && i.classless_routes.len() <= 32);
        assert!(i.mtu.is_none_or(|m| m >= 576));
        for (net, width, _) in &i.classless_routes {
            assert!(*width <= 32);
            let host = u32::MAX.checked_shr(u32::from(*width)).unwrap_or(0);
            assert_eq!(u32::from(*net) & host, 0, "host bits in {net}/{width}");
        }
        for n in i.search.iter().chain(&i.domain).chain(&i.hostname) {
            assert_domain("DHCP name", n);
        }
    }
    let again = encode_reply(&r);
    if again.len() <= MAX_PACKET {
        let back = packet::decode(&again, &MAC)
            .unwrap_or_else(|e| panic!("re-encoded reply refused: {e}\n{r:?}"));
        assert_eq!(back, r, "decode -> encode -> decode differs");
    }
}

/// A server's encoding of `r` (uncompressed names, long options split).
fn encode_reply(r: &Reply) -> Vec<u8> {
    let i = &r.info;
    let mut p = vec![0u8; 236];
    p[..3].copy_from_slice(&[2, 1, 6]);
    p[4..8].copy_from_slice(&r.xid.to_be_bytes());
    p[16..20].copy_from_slice(&i.addr.octets());
    p[28..34].copy_from_slice(&MAC);
    p.extend_from_slice(&MAGIC);
    let mut opt = |code: u8, v: &[u8]| {
        if v.is_empty() {
            p.extend_from_slice(&[code, 0]);
        }
        for chunk in v.chunks(255) {
            p.push(code);
            p.push(chunk.len() as u8);
            p.extend_from_slice(chunk);
        }
    };
    let kind = match r.kind {
        ReplyKind::Offer => 2,
        ReplyKind::Ack => 5,
        ReplyKind::Nak => 6,
    };
    opt(53, &[kind]);
    opt(54, &i.server.octets());
    if i.rapid_commit {
        opt(80, &[]);
    }
    if r.kind != ReplyKind::Nak {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(i.prefix_len))
            .unwrap_or(0);
        opt(1, &mask.to_be_bytes());
        let secs = |d: Duration| (d.as_secs() as u32).to_be_bytes();
        opt(51, &secs(i.lease_time));
        if let Some(t) = i.t1 {
            opt(58, &secs(t));
        }
        if let Some(t) = i.t2 {
            opt(59, &secs(t));
        }
        let addrs = |l: &[Ipv4Addr]| l.iter().flat_map(|a| a.octets()).collect::<Vec<u8>>();
        if !i.routers.is_empty() {
            opt(3, &addrs(&i.routers));
        }
        if !i.dns.is_empty() {
            opt(6, &addrs(&i.dns));
        }
        if !i.ntp.is_empty() {
            opt(42, &addrs(&i.ntp));
        }
        if let Some(d) = &i.domain {
            opt(15, d.as_bytes());
        }
        if let Some(h) = &i.hostname {
            opt(12, h.as_bytes());
        }
        if !i.search.is_empty() {
            let mut v = Vec::new();
            for name in &i.search {
                for label in name.split('.') {
                    v.push(label.len() as u8);
                    v.extend_from_slice(label.as_bytes());
                }
                v.push(0);
            }
            opt(119, &v);
        }
        if let Some(m) = i.mtu {
            opt(26, &m.to_be_bytes());
        }
        if !i.classless_routes.is_empty() {
            let mut v = Vec::new();
            for (net, width, gw) in &i.classless_routes {
                v.push(*width);
                v.extend_from_slice(&net.octets()[..usize::from(*width).div_ceil(8)]);
                v.extend_from_slice(&gw.octets());
            }
            opt(121, &v);
        }
    }
    p.push(255);
    p
}

/// The client's encoder, driven by the fuzzer: every message it makes is
/// within [`MAX_PACKET`] and holds exactly what it was given.
fn dhcp_outgoing(data: &[u8]) {
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    let ip = |i: usize| Ipv4Addr::new(b(i), b(i + 1), b(i + 2), b(i + 3));
    let kind = [
        MessageKind::Discover,
        MessageKind::Request,
        MessageKind::Decline,
        MessageKind::Release,
    ][usize::from(b(0) & 3)];
    let out = Outgoing {
        kind,
        xid: u32::from_be_bytes([b(1), b(2), b(3), b(4)]),
        ciaddr: ip(5),
        requested: (b(0) & 4 != 0).then(|| ip(9)),
        server_id: (b(0) & 8 != 0).then(|| ip(13)),
        unicast: (b(0) & 16 != 0).then(|| ip(13)),
        secs: u16::from_be_bytes([b(17), b(18)]),
        rapid_commit: b(0) & 32 != 0,
    };
    let hostname = (b(0) & 64 != 0)
        .then(|| String::from_utf8_lossy(data.get(19..).unwrap_or(&[])).into_owned());
    let id = ClientId {
        mac: MAC,
        hostname: hostname.clone(),
    };
    let bytes = match packet::encode(&out, &id) {
        Ok(bytes) => bytes,
        Err(e) => {
            assert!(hostname.is_some_and(|h| h.len() > 255), "{e}");
            return;
        }
    };
    assert!(bytes.len() <= MAX_PACKET);
    assert_eq!(bytes[0], 1);
    assert_eq!(&bytes[4..8], &out.xid.to_be_bytes());
    assert_eq!(&bytes[28..34], &MAC);
    assert_eq!(&bytes[236..240], &MAGIC);
    // Walk our own options: every one once, the END last.
    let mut seen: Vec<(u8, &[u8])> = Vec::new();
    let mut at = 240;
    while bytes[at] != 255 {
        let (code, len) = (bytes[at], usize::from(bytes[at + 1]));
        assert!(seen.iter().all(|(c, _)| *c != code), "option {code} twice");
        seen.push((code, &bytes[at + 2..at + 2 + len]));
        at += 2 + len;
    }
    assert_eq!(at, bytes.len() - 1, "bytes after END");
    let get = |code: u8| seen.iter().find(|(c, _)| *c == code).map(|(_, v)| *v);
    let want_kind = match kind {
        MessageKind::Discover => 1,
        MessageKind::Request => 3,
        MessageKind::Decline => 4,
        MessageKind::Release => 7,
    };
    assert_eq!(get(53), Some(&[want_kind][..]));
    assert_eq!(
        get(61),
        Some(&[1, MAC[0], MAC[1], MAC[2], MAC[3], MAC[4], MAC[5]][..])
    );
    assert_eq!(
        get(50),
        out.requested.map(|a| a.octets()).as_ref().map(|a| &a[..])
    );
    assert_eq!(
        get(54),
        out.server_id.map(|a| a.octets()).as_ref().map(|a| &a[..])
    );
    let asks = matches!(kind, MessageKind::Discover | MessageKind::Request);
    assert_eq!(
        get(12),
        if asks {
            hostname.as_deref().map(str::as_bytes)
        } else {
            None
        }
    );
    assert_eq!(
        get(80).is_some(),
        out.rapid_commit && kind == MessageKind::Discover
    );
}

// ------------------------------------------------------- router adverts

/// An ICMPv6 router advert. One that parses holds at most 8 servers and 6
/// valid search domains, none multicast or unspecified; encoding what was
/// read as an advert again reads back the same; merged into a link's
/// lists it keeps them within [`crate::net::ra::MAX_ADVERT_DNS`].
pub fn ra(data: &[u8]) {
    use crate::net::ra::{parse, AdvertDns, RaDns, MAX_ADVERT_DNS};
    let Ok(r) = parse(data) else {
        return;
    };
    assert!(r.servers.len() <= 8 && r.search.len() <= 6);
    for (ip, _) in &r.servers {
        assert!(!ip.is_multicast() && !ip.is_unspecified());
    }
    for (name, _) in &r.search {
        assert_domain("DNSSL name", name);
    }
    // Encode again: one RDNSS and one DNSSL option per entry.
    let mut p = vec![134, 0, 0, 0, 64, 0];
    p.extend_from_slice(&(r.router_lifetime.as_secs() as u16).to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    let life = |d: &Duration| (d.as_secs() as u32).to_be_bytes();
    for (ip, l) in &r.servers {
        p.extend_from_slice(&[25, 3, 0, 0]);
        p.extend_from_slice(&life(l));
        p.extend_from_slice(&ip.octets());
    }
    for (name, l) in &r.search {
        let mut v = Vec::new();
        for label in name.split('.') {
            v.push(label.len() as u8);
            v.extend_from_slice(label.as_bytes());
        }
        v.push(0);
        v.resize(v.len().div_ceil(8) * 8, 0);
        p.extend_from_slice(&[31, (v.len() / 8 + 1) as u8, 0, 0]);
        p.extend_from_slice(&life(l));
        p.extend_from_slice(&v);
    }
    let back: RaDns = parse(&p).unwrap_or_else(|e| panic!("re-encoded advert refused: {e}"));
    assert_eq!(back, r, "parse -> encode -> parse differs");
    let mut lists = AdvertDns::default();
    let t0 = Instant::now();
    for n in 0..3u64 {
        lists.merge(&r, t0 + Duration::from_secs(n));
        assert!(lists.servers.len() <= MAX_ADVERT_DNS && lists.search.len() <= MAX_ADVERT_DNS);
    }
}

// ----------------------------------------------------------- rtnetlink

/// A datagram from the rtnetlink socket. Messages that decode are at
/// most one per 16 bytes; a link's name holds no NUL; a link encoded
/// again as the kernel would decodes to the same link.
pub fn rtnl(data: &[u8]) {
    use crate::net::rtnl::*;
    let Ok(msgs) = messages("fuzz", data) else {
        return;
    };
    assert!(msgs.len() <= data.len() / 16);
    for (seq, m) in msgs {
        let Msg::NewLink(l) = m else {
            if let Msg::Address { addrs, .. } = &m {
                assert!(addrs.len() <= data.len() / 8);
            }
            continue;
        };
        assert!(!l.name.contains('\0'), "{l:?}");
        let mut ifi = [0u8; 16];
        if l.ethernet {
            ifi[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        }
        ifi[4..8].copy_from_slice(&l.index.to_ne_bytes());
        let flags = if l.up { IFF_UP } else { 0 } | if l.carrier { IFF_LOWER_UP } else { 0 };
        ifi[8..12].copy_from_slice(&flags.to_ne_bytes());
        let mut r = Request::new(RTM_NEWLINK, 0, &ifi);
        let mut name = l.name.as_bytes().to_vec();
        name.push(0);
        r.attr(IFLA_IFNAME, &name);
        if let Some(mac) = l.mac {
            r.attr(IFLA_ADDRESS, &mac);
        }
        if let Some(mtu) = l.mtu {
            r.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        let again = r.finish(seq);
        let back = messages("fuzz", &again).expect("re-encoded link refused");
        assert_eq!(
            back,
            vec![(seq, Msg::NewLink(l))],
            "decode -> encode -> decode differs"
        );
    }
}

// ----------------------------------------------------------- disk probe

/// The first bytes of a disk: the filesystem probe and the GPT reader.
/// A signature's UUID has its fixed form and its label is short, with no
/// NUL and no trailing space; `Empty` means all zero. The GPT reader asks
/// for at most 4 MiB of entries, and the names it gives are numbered
/// within the table in order, at most 36 UTF-16 units, with no NUL. The
/// GPT is read twice: as given, and with both CRCs made right, so that
/// the search gets past them.
pub fn disk(data: &[u8]) {
    use crate::disk::probe::{self, Signature};
    let head = &data[..data.len().min(probe::PROBE_BYTES)];
    match probe::probe(head) {
        Signature::Ext4 { label, uuid } | Signature::Erofs { label, uuid } => {
            assert!(label.len() <= 16 * 3 && !label.contains('\0') && label.trim_end() == label);
            assert_eq!(uuid.len(), 36);
            assert!(uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        }
        Signature::Vfat { label, uuid } => {
            assert!(label.len() <= 11 * 3 && !label.contains('\0') && label.trim_end() == label);
            assert_eq!(uuid.len(), 9);
        }
        Signature::Empty => assert!(head.iter().all(|&b| b == 0)),
        Signature::Unknown => assert!(head.iter().any(|&b| b != 0)),
    }
    gpt(data);
    if data.len() >= 1024 && &data[512..520] == b"EFI PART" {
        // The entries' CRC first (the header covers it), then the header's.
        let mut fixed = data.to_vec();
        let le32 =
            |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let lba = u64::from(le32(&fixed, 584)) | u64::from(le32(&fixed, 588)) << 32;
        let len = (le32(&fixed, 592) as usize).saturating_mul(le32(&fixed, 596) as usize);
        let start = lba.saturating_mul(512).min(fixed.len() as u64) as usize;
        let end = start.saturating_add(len).min(fixed.len());
        let crc = probe::crc32(&fixed[start..end]);
        fixed[600..604].copy_from_slice(&crc.to_le_bytes());
        let size = le32(&fixed, 524) as usize;
        if (92..=512).contains(&size) {
            fixed[528..532].fill(0);
            let crc = probe::crc32(&fixed[512..512 + size]);
            fixed[528..532].copy_from_slice(&crc.to_le_bytes());
        }
        gpt(&fixed);
    }
}

fn gpt(data: &[u8]) {
    let mut asked = Vec::new();
    let names = crate::disk::gpt_names_with(|offset, n| {
        asked.push(n);
        assert!(n <= 4 << 20, "GPT reader asks for {n} bytes");
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        Ok(data[start..data.len().min(start.saturating_add(n))].to_vec())
    });
    let mut last = 0;
    for (i, name) in &names {
        assert!(*i > last && *i <= 1024, "partition numbers {names:?}");
        last = *i;
        assert!(name.encode_utf16().count() <= 36 && !name.contains('\0'));
    }
}

// ----------------------------------------------------- secondary config

/// `cairn.toml` on the CONFIG partition, over a fixed primary config with
/// two services. Refused text gets a `FILE:LINE:COL` inside the text. An
/// accepted one changes only what it may: the same services in the same
/// order, each changed in `env` (only variables the service's
/// `config_env` lists) and `enabled` alone; applying it twice gives what
/// applying it once did; the result survives the JSON the builder writes.
pub fn config(data: &[u8]) {
    use cairn_manifest::{ServiceConfig, SystemConfig};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let svc = |n: &str| ServiceConfig {
        env: [("A", "1"), ("TOKEN", "s3cret")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        config_env: vec!["A".into(), "B".into(), "LOG_LEVEL".into()],
        ..ServiceConfig::new(n, &["/bin/x"])
    };
    let mut primary = SystemConfig {
        name: "app".into(),
        services: vec![svc("web"), svc("job")],
        ..Default::default()
    };
    primary.services[1].after = vec!["web".into()];
    let file = Path::new("/config/cairn.toml");
    let cfg = match crate::config::apply(&primary, text, file) {
        Ok(cfg) => cfg,
        Err(crate::config::Config2Error::At(d)) => {
            assert!(d.line <= text.lines().count() + 1, "{d}");
            let shown = d.to_string();
            assert!(shown.starts_with("/config/cairn.toml:"), "{shown}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.services.len(), primary.services.len());
    for (got, was) in cfg.services.iter().zip(&primary.services) {
        for (k, v) in &got.env {
            if was.env.get(k) != Some(v) {
                assert!(was.config_env.contains(k), "{k} set from the config");
            }
        }
        let restored = ServiceConfig {
            env: was.env.clone(),
            enabled: was.enabled,
            ..got.clone()
        };
        assert_eq!(&restored, was, "more than env/enabled changed");
    }
    assert_eq!(cfg.name, primary.name);
    let twice = crate::config::apply(&cfg, text, file).expect("applies once, not twice");
    assert_eq!(twice, cfg, "applying twice differs");
    let json = SystemConfig::from_json(&cfg.to_json()).expect("JSON round trip");
    assert_eq!(json, cfg, "JSON round trip differs");
    let left = crate::config::without_disabled(cfg);
    for s in &left.services {
        assert!(
            s.enabled
                && s.after
                    .iter()
                    .all(|a| left.services.iter().any(|o| &o.name == a))
        );
    }
}

// ------------------------------------------------------- control socket

/// What a `cairnctl` client sends, arriving in reads of up to 512 bytes
/// (the first byte sets the read sizes). The server waits while no
/// newline came and no more than [`MAX_REQUEST`] bytes did; a request it
/// accepts came on a line of at most [`MAX_REQUEST`] bytes, names valid
/// services, and written back as `cairnctl` would write it parses to the
/// same request; a refusal is a short message.
///
/// [`MAX_REQUEST`]: crate::console::ctl::MAX_REQUEST
pub fn ctl(data: &[u8]) {
    use crate::console::ctl::{frame, parse, Framed, Request, MAX_REQUEST};
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) * 2 + 1;
    let mut buf = Vec::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        match frame(&buf) {
            Framed::Partial => assert!(buf.len() <= MAX_REQUEST),
            Framed::TooLong => {
                let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
                assert!(line.len() > MAX_REQUEST);
                return;
            }
            Framed::Line(Ok(req)) => {
                let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
                assert!(
                    line.len() <= MAX_REQUEST,
                    "a {}-byte request line accepted",
                    line.len()
                );
                let text = match &req {
                    Request::Status { json } => {
                        format!("status{}", if *json { " --json" } else { "" })
                    }
                    Request::Logs { follow, service } => format!(
                        "logs{}{}",
                        if *follow { " -f" } else { "" },
                        service
                            .as_ref()
                            .map(|s| format!(" {s}"))
                            .unwrap_or_default()
                    ),
                    Request::Start(n) => format!("start {n}"),
                    Request::Stop(n) => format!("stop {n}"),
                    Request::Restart(n) => format!("restart {n}"),
                    Request::Poweroff => "poweroff".into(),
                    Request::Reboot => "reboot".into(),
                    Request::NodeConfig { apply } => {
                        format!("node-config {}", if *apply { "apply" } else { "builtin" })
                    }
                };
                assert_eq!(parse(&text), Ok(req), "{text:?}");
                return;
            }
            Framed::Line(Err(e)) => {
                assert!(e.len() <= 256, "a {}-byte error reply", e.len());
                return;
            }
        }
    }
}

// ---------------------------------------------------------- kernel log

/// One `/dev/kmsg` record, and the same bytes as a service's output
/// through the line splitter. A record that parses gives one line (no
/// newline) no longer than the record, and written back as the kernel
/// would reads back the same; a device it names with an I/O error (what
/// marks a mount failing) is a bounded name taken from the line. The
/// splitter's lines hold no newline and
/// are at most [`LINE_MAX`] bytes before the cut mark (3 times that once
/// invalid UTF-8 is replaced); valid text without `\r` and long lines
/// comes out as it went in.
///
/// [`LINE_MAX`]: crate::log::LINE_MAX
pub fn kmsg(data: &[u8]) {
    use crate::log::{parse_kmsg, LineBuf, CUT_MARK, LINE_MAX};
    use cairn_manifest::Level;
    if let Some((level, time, text)) = parse_kmsg(data) {
        assert!(!text.contains('\n') && text.len() <= data.len());
        let pri = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            _ => 7,
        };
        let again = format!("{pri},1,{},-;{text}", time.as_micros());
        // A kernel line naming a device with an I/O error (what marks a
        // mount failing): a non-empty, bounded name found in the line,
        // with no separator in it.
        if let Some(dev) = crate::disk::io_error_device(&text) {
            assert!(!dev.is_empty() && dev.len() <= 32 && text.contains(dev));
            assert!(!dev.contains([',', ')']), "{dev:?}");
        }
        assert_eq!(parse_kmsg(again.as_bytes()), Some((level, time, text)));
    }
    let mut lb = LineBuf::default();
    let mut lines = Vec::new();
    for chunk in data.chunks(97) {
        for l in lb.feed(chunk) {
            assert!(!l.contains('\n'));
            assert!(
                l.len() <= 3 * LINE_MAX + CUT_MARK.len(),
                "a {}-byte line",
                l.len()
            );
            lines.push(l);
        }
    }
    let rest = lb.rest();
    if let Ok(s) = std::str::from_utf8(data) {
        if !s.contains('\r') && s.split('\n').all(|l| l.len() < LINE_MAX) {
            let mut joined: String = lines.iter().map(|l| format!("{l}\n")).collect();
            joined += rest.as_deref().unwrap_or("");
            assert_eq!(joined, s, "lines differ from the text");
        }
    }
}

// -------------------------------------------------- kernel command line

/// The kernel command line. Every parameter and init argument written
/// back quoted parses to the same command line; a key holds no `=`; a
/// parameter cairn reads has one answer whatever else is there.
pub fn cmdline(data: &[u8]) {
    use crate::cmdline::Cmdline;
    let text = String::from_utf8_lossy(data);
    let c = Cmdline::parse(&text);
    let mut again = Vec::new();
    for (k, v) in &c.params {
        assert!(!k.contains('=') && !k.contains('"'), "{k:?}");
        // `--=x` is a parameter; a bare `--` starts the init's arguments.
        assert!(!(k == "--" && v.is_none()));
        again.push(match v {
            Some(v) => format!("\"{k}={v}\""),
            None => format!("\"{k}\""),
        });
    }
    if !c.init_args.is_empty() {
        again.push("--".into());
        again.extend(c.init_args.iter().map(|a| format!("\"{a}\"")));
    }
    let back = Cmdline::parse(&again.join(" "));
    assert_eq!(back, c, "parse -> write -> parse differs");
    let _ = c.debug();
}

// ----------------------------------------------------------------- SNTP

/// An answer from a time server (its origin stamp echoed, so the checks
/// get past it): the offset is an error or within what 64-bit NTP stamps
/// can express, and an answer that is not a synchronised mode-4 reply of
/// 48 bytes or more is refused.
pub fn sntp(data: &[u8]) {
    use crate::net::sntp::offset;
    let sent = data
        .get(24..32)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for (stamp, received) in [(sent, now), (sent ^ 1, now), (sent, SystemTime::UNIX_EPOCH)] {
        if let Ok(ns) = offset(data, stamp, received) {
            assert!(data.len() >= 48 && data[0] & 7 == 4 && (1..=15).contains(&data[1]));
            assert!(ns.unsigned_abs() < 1u128 << 100, "offset {ns}");
        }
    }
}

// --------------------------------------------------------------- update

/// A reply from the update server (and from its DNS server), read in
/// pieces of the size the first byte says: a body is only taken from a 200 reply, is at most the
/// length asked for, is exactly the bytes after the headers, and is
/// exactly `Content-Length` long when the server gave one. The body then
/// goes through the metadata check with a fixed trusted key: a release
/// is taken only with that key's signature over its exact bytes, for
/// this appliance, newer than the running version and not expired; and
/// through the per-node config check, which passes at most the text
/// before the signature line.
pub fn update(data: &[u8]) {
    use crate::update::http::read_response;
    use cairn_manifest::release::{self, Metadata};
    use std::io::Read;
    struct Pieces<'a>(&'a [u8], usize);
    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let Some((&piece, reply)) = data.split_first() else {
        return;
    };
    // The same bytes as the DNS server's answer to the agent's A query
    // (the ID taken from the reply, so the checks get past it): an
    // address only from a reply to that question with no error code.
    let id = reply
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if let Ok(Some(_)) = crate::update::dns::answer(id, "updates.example", reply) {
        assert!(reply[2] & 0x80 != 0 && reply[2] & 0x02 == 0 && reply[3] & 0x0f == 0);
    }
    let max = 1 << 16;
    let mut body = Vec::new();
    let got = read_response(
        &mut Pieces(reply, usize::from(piece % 64) + 1),
        "fuzz",
        "/m",
        max,
        &mut body,
    );
    let Ok(n) = got else {
        return;
    };
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&reply[..end]);
    assert_eq!(head.split_whitespace().nth(1), Some("200"));
    assert!(n <= max && n as usize == body.len());
    assert!(reply[end..].starts_with(&body));
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<u64>().ok())?
    });
    if let Some(l) = length {
        assert_eq!(n, l);
    }
    let seed = [7u8; 32];
    let trusted = [release::hex(&release::public_key(&seed))];
    // The body as a per-node config (`[netboot]`): what passes is the
    // text before its signature line, within the size limit.
    let node = cairn_manifest::netboot::verify(&body, &trusted, "fuzz", "52-54-00-12-34-56");
    if let Ok(text) = node {
        assert!(body.starts_with(text.as_bytes()) && text.len() < body.len());
        assert!(body.len() <= cairn_manifest::netboot::NODE_CONFIG_MAX);
    }
    let (running, now) = (5, 1_800_000_000);
    if let Ok(r) = release::verify(&body, &trusted, "fuzz", running, now) {
        assert!(r.name == "fuzz" && r.version > running && r.expires > now);
        // ed25519 signatures are deterministic and cannot be forged: only
        // the exact bytes our key signed pass.
        let md: Metadata = serde_json::from_slice(&body).unwrap();
        let ours = release::sign(&r, &seed);
        assert_eq!(
            md.signed, ours.signed,
            "a release passed without our signature"
        );
        let bytes = |s: &str| release::unhex(s);
        let sig = bytes(&ours.signatures[0].sig);
        assert!(
            md.signatures.iter().any(|s| bytes(&s.sig) == sig),
            "no signature is ours (hex in any case)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept corpus of every target (`crates/cairn-init/fuzz/corpus`),
    /// replayed through the same checks on stable: what `cargo test` runs
    /// of the fuzzing (`cargo xtask fuzz` searches for more).
    #[test]
    fn kept_corpus_holds_every_property() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, check) in TARGETS {
            let dir = root.join(name);
            let mut n = 0;
            for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = e.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let r = std::panic::catch_unwind(|| check(&bytes));
                assert!(r.is_ok(), "{name}: {} fails its property", path.display());
                n += 1;
            }
            assert!(n > 0, "no corpus for {name}");
        }
    }

    /// The update target's seed reaches past the signature check (so the
    /// fuzzer starts from a release that is taken).
    #[test]
    fn update_seed_is_a_signed_release() {
        use cairn_manifest::release;
        let data = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/update/signed_release"),
        )
        .unwrap();
        let mut body = Vec::new();
        let n = crate::update::http::read_response(&mut &data[1..], "t", "/m", 1 << 16, &mut body);
        assert_eq!(n, Ok(body.len() as u64));
        let key = [release::hex(&release::public_key(&[7; 32]))];
        let r = release::verify(&body, &key, "fuzz", 5, 1_800_000_000).unwrap();
        assert_eq!(r.version, 6);
    }

    /// The update target's node-config seed passes the per-node check.
    #[test]
    fn update_seed_is_a_signed_node_config() {
        use cairn_manifest::release;
        let data = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/update/signed_node_config"),
        )
        .unwrap();
        let mut body = Vec::new();
        crate::update::http::read_response(&mut &data[1..], "t", "/m", 1 << 16, &mut body).unwrap();
        let key = [release::hex(&release::public_key(&[7; 32]))];
        let text =
            cairn_manifest::netboot::verify(&body, &key, "fuzz", "52-54-00-12-34-56").unwrap();
        assert!(text.starts_with("[service.web]"));
    }

    /// Every target here has its fuzz_targets/NAME.rs and its entry in the
    /// fuzz crate's Cargo.toml and in xtask's list, and nothing else does.
    #[test]
    fn every_target_is_built_and_run() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<String> = std::fs::read_dir(root.join("fuzz/fuzz_targets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().replace(".rs", ""))
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|t| t.0.to_string()).collect();
        names.sort();
        assert_eq!(files, names);
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        let xtask = std::fs::read_to_string(root.join("../../xtask/src/main.rs")).unwrap();
        for n in &names {
            assert!(
                manifest.contains(&format!("name = \"{n}\"")),
                "{n} not in fuzz/Cargo.toml"
            );
            assert!(
                xtask.contains(&format!("\"{n}\",")),
                "{n} not in xtask's FUZZ_TARGETS"
            );
        }
    }
}

//! A DNS stub resolver for the helper processes (the update agent): an A
//! query over UDP to each server in `/etc/resolv.conf` (which the init
//! writes from DHCP, router adverts or the static config), from a random
//! port with a random ID. Only IPv4 addresses come back: that is what the
//! HTTP client connects to. Names are resolved, not trusted: what is
//! fetched is checked against signatures anyway.

#![forbid(unsafe_code)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Where the init writes the resolvers it learnt.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long one server has to answer one query.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Rounds over all servers before giving up.
const ROUNDS: usize = 2;
/// CNAME hops followed inside one answer.
const MAX_CHAIN: usize = 8;
/// Compression pointers followed in one name (a loop is refused).
const MAX_JUMPS: usize = 32;

/// `host` (an IPv4 address or a DNS name) and `port` as a socket address.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, port)));
    }
    let conf = std::fs::read_to_string(RESOLV_CONF)
        .map_err(|e| format!("resolve {host}: {RESOLV_CONF}: {e}"))?;
    let servers = nameservers(&conf);
    if servers.is_empty() {
        return Err(format!("resolve {host}: no nameserver in {RESOLV_CONF}"));
    }
    let mut last = String::new();
    for _ in 0..ROUNDS {
        for &server in &servers {
            match ask(server, host) {
                Ok(ip) => return Ok(SocketAddr::from((ip, port))),
                Err(e) => last = e,
            }
        }
    }
    Err(format!("resolve {host}: {last}"))
}

/// The `nameserver` addresses of a resolv.conf, in order.
pub fn nameservers(conf: &str) -> Vec<IpAddr> {
    conf.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()?.parse().ok())?
        })
        .collect()
}

fn ask(server: IpAddr, host: &str) -> Result<Ipv4Addr, String> {
    let id = random_id();
    let q = query(id, host)?;
    let bind: SocketAddr = match server {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind).map_err(|e| format!("socket: {e}"))?;
    s.connect((server, 53))
        .map_err(|e| format!("{server}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    s.send(&q).map_err(|e| format!("{server}: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = s.recv(&mut buf).map_err(|e| format!("{server}: {e}"))?;
        // A reply to another query (wrong ID) is skipped, not believed.
        if n >= 2 && buf[..2] != id.to_be_bytes() {
            continue;
        }
        return match answer(id, host, &buf[..n])? {
            Some(ip) => Ok(ip),
            None => Err(format!("{server}: {host} has no IPv4 address")),
        };
    }
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u16::from_be_bytes(b)
}

/// A recursive query for the A record of `name`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!("{name:?} is not a host name"));
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Reads a (possibly compressed) name at `at`; returns it in lower case
/// and the offset after it in the record.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let bad = || "malformed name in the reply".to_string();
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or_else(bad)? as usize;
        match len {
            0 => {
                return Ok((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let lo = *msg.get(at + 1).ok_or_else(bad)? as usize;
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(bad());
                }
                at = ((l & 0x3f) << 8) | lo;
            }
            l if l <= 63 => {
                let label = msg.get(at + 1..at + 1 + l).ok_or_else(bad)?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().map(|&b| b.to_ascii_lowercase() as char));
                if name.len() > 255 {
                    return Err(bad());
                }
                at += 1 + l;
            }
            _ => return Err(bad()),
        }
    }
}

/// The first IPv4 address the reply `msg` to query `id` for `name` gives
/// (following CNAMEs inside the reply); `None` when the name exists
/// without one. Refused: a reply that is not a reply to this question, a
/// truncated one, and any error code (NXDOMAIN is said as such).
pub fn answer(id: u16, name: &str, msg: &[u8]) -> Result<Option<Ipv4Addr>, String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if msg.len() < 12 {
        return Err("short reply".into());
    }
    let u16_at = |i: usize| -> Result<u16, String> {
        msg.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "short reply".to_string())
    };
    if u16_at(0)? != id || msg[2] & 0x80 == 0 {
        return Err("not a reply to our query".into());
    }
    if msg[2] & 0x02 != 0 {
        return Err("truncated reply (TC)".into());
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Err(format!("{name}: no such name (NXDOMAIN)")),
        rc => return Err(format!("server error (rcode {rc})")),
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    if qd != 1 {
        return Err("reply does not echo one question".into());
    }
    let (qname, at) = read_name(msg, 12)?;
    if qname != name || u16_at(at)? != 1 || u16_at(at + 2)? != 1 {
        return Err("reply is for another question".into());
    }
    let mut at = at + 4;
    let mut chain = vec![name];
    for _ in 0..an {
        let (owner, next) = read_name(msg, at)?;
        let (rtype, class) = (u16_at(next)?, u16_at(next + 2)?);
        let len = u16_at(next + 8)? as usize;
        let data = msg
            .get(next + 10..next + 10 + len)
            .ok_or("record runs past the reply")?;
        if class == 1 && chain.contains(&owner) {
            match (rtype, len) {
                (1, 4) => return Ok(Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]))),
                (5, _) if chain.len() < MAX_CHAIN => {
                    chain.push(read_name(msg, next + 10)?.0);
                }
                _ => {}
            }
        }
        at = next + 10 + len;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `q` with `answers` (raw records) appended.
    fn reply(q: &[u8], rcode: u8, answers: &[&[u8]]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r[7] = answers.len() as u8;
        for a in answers {
            r.extend_from_slice(a);
        }
        r
    }

    #[test]
    fn queries_and_answers() {
        let q = query(0x1234, "Updates.Example.").unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 1, 0]);
        assert_eq!(&q[12..21], b"\x07Updates\x07");
        // An A record by a pointer to the question's name.
        let a: &[u8] = &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7];
        let r = reply(&q, 0, &[a]);
        assert_eq!(
            answer(0x1234, "updates.example", &r),
            Ok(Some(Ipv4Addr::new(192, 0, 2, 7)))
        );
        // Through a CNAME to a name spelled out.
        let cname: &[u8] = &[
            0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'c', b'd', b'n', 0xc0, 20,
        ];
        let a2: &[u8] = &[
            3, b'c', b'd', b'n', 0xc0, 20, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9,
        ];
        let r = reply(&q, 0, &[cname, a2]);
        assert_eq!(
            answer(0x1234, "updates.example", &r),
            Ok(Some(Ipv4Addr::new(10, 0, 0, 9)))
        );
        // An A record for another name is not ours.
        let other: &[u8] = &[
            3, b'e', b'v', b'l', 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 6, 6, 6, 6,
        ];
        assert_eq!(
            answer(0x1234, "updates.example", &reply(&q, 0, &[other])),
            Ok(None)
        );
        let e = answer(0x1234, "updates.example", &reply(&q, 3, &[])).unwrap_err();
        assert!(e.contains("NXDOMAIN"), "{e}");
        assert!(answer(0x4321, "updates.example", &reply(&q, 0, &[a])).is_err());
        assert!(answer(0x1234, "other.example", &reply(&q, 0, &[a])).is_err());
        // A pointer loop ends in an error.
        let looped: &[u8] = &[0xc0, 33, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4];
        let mut r = reply(&q, 0, &[looped]);
        let at = r.len() - looped.len();
        r[at + 1] = at as u8;
        assert!(answer(0x1234, "updates.example", &r).is_err());
        assert!(query(1, "bad name").is_err());
        assert!(query(1, "").is_err());
    }

    #[test]
    fn resolv_conf_servers() {
        let conf =
            "# from DHCP\nsearch lan\nnameserver 192.168.1.1\nnameserver fe80::1\nnameserver x\n";
        let s = nameservers(conf);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)));
    }
}

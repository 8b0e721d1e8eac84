//! IPv6 router adverts: the kernel does SLAAC itself (`accept_ra`); cairn
//! only reads the DNS options it ignores, RDNSS (RFC 8106 type 25) and DNSSL
//! (type 31), from an ICMPv6 socket. Parsing is bounds-checked and hostile
//! input is refused with a reason.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

pub const ROUTER_ADVERT: u8 = 134;
pub const ROUTER_SOLICIT: u8 = 133;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RaError {
    #[error("router advert too short ({0} bytes)")]
    Short(usize),
    #[error("not a router advert (ICMPv6 type {0}, code {1})")]
    NotRa(u8, u8),
    #[error("option at offset {0} has length 0 or runs past the end")]
    OptionLength(usize),
    #[error("RDNSS option at offset {0} is malformed")]
    Rdnss(usize),
    #[error("DNSSL option at offset {0} holds a bad domain name")]
    Dnssl(usize),
}

/// DNS information from one advert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaDns {
    pub servers: Vec<(Ipv6Addr, Duration)>,
    pub search: Vec<(String, Duration)>,
    /// Router lifetime (0: not a default router).
    pub router_lifetime: Duration,
}

/// At most this many DNS servers, and as many search domains, are kept
/// from router adverts per interface: a flood of adverts each naming a new
/// server evicts the oldest instead of growing the list without end.
pub const MAX_ADVERT_DNS: usize = 8;

/// The DNS servers and search domains learnt from router adverts on one
/// link, each kept until its own expiry (RFC 8106 5.3.1): an advert
/// refreshes or adds the entries it carries and leaves the others alone.
/// Each list holds at most [`MAX_ADVERT_DNS`] entries; a new entry beyond
/// that evicts the one added first (a refresh does not make an entry
/// younger).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvertDns {
    pub servers: Vec<(Ipv6Addr, Instant)>,
    pub search: Vec<(String, Instant)>,
    /// Whether the server list, and the search list, have been full
    /// (an entry evicted) on this interface: the log says so once.
    servers_full: bool,
    search_full: bool,
}

/// What [`AdvertDns::merge`] did with one advert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// The lists changed (not only a lifetime).
    pub changed: bool,
    /// Entries were evicted to make room (the list was full).
    pub evicted: bool,
    /// The server list, or the search list, overflowed for the first time
    /// on this interface (see [`AdvertDns::full_notices`]).
    pub servers_first_full: bool,
    pub search_first_full: bool,
}

impl AdvertDns {
    /// Takes in an advert read at `now`: an entry it carries gets the new
    /// lifetime (a new one is added at the end, evicting the oldest when
    /// the list is full; a lifetime of 0 removes it); entries it does not
    /// carry keep theirs.
    pub fn merge(&mut self, advert: &RaDns, now: Instant) -> Merged {
        let (a, ea) = merge_entries(&mut self.servers, &advert.servers, now);
        let (b, eb) = merge_entries(&mut self.search, &advert.search, now);
        let servers_first_full = ea && !std::mem::replace(&mut self.servers_full, true);
        let search_first_full = eb && !std::mem::replace(&mut self.search_full, true);
        Merged {
            changed: a || b,
            evicted: ea || eb,
            servers_first_full,
            search_first_full,
        }
    }

    /// The log lines for lists that overflowed for the first time on
    /// interface `name` (once per interface and list, never per packet).
    pub fn full_notices(name: &str, m: &Merged) -> Vec<String> {
        let mut out = Vec::new();
        if m.servers_first_full {
            out.push(format!(
                "{name}: router advert DNS list full ({MAX_ADVERT_DNS} servers); the oldest are replaced"
            ));
        }
        if m.search_first_full {
            out.push(format!(
                "{name}: router advert search list full ({MAX_ADVERT_DNS} domains); the oldest are replaced"
            ));
        }
        out
    }

    /// Drops the entries whose lifetime has run out at `now`. True if any
    /// went.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.servers.len() + self.search.len();
        self.servers.retain(|s| s.1 > now);
        self.search.retain(|s| s.1 > now);
        before != self.servers.len() + self.search.len()
    }

    /// When the next entry expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.servers
            .iter()
            .map(|s| s.1)
            .chain(self.search.iter().map(|s| s.1))
            .min()
    }
}

/// Merges `advert` into `list` (at most [`MAX_ADVERT_DNS`] entries).
/// Returns (changed, evicted).
fn merge_entries<T: PartialEq + Clone>(
    list: &mut Vec<(T, Instant)>,
    advert: &[(T, Duration)],
    now: Instant,
) -> (bool, bool) {
    let mut changed = false;
    let mut evicted = false;
    for (value, lifetime) in advert {
        let pos = list.iter().position(|(v, _)| v == value);
        match (pos, lifetime.is_zero()) {
            (Some(i), true) => {
                list.remove(i);
                changed = true;
            }
            (Some(i), false) => list[i].1 = now + *lifetime,
            (None, true) => {}
            (None, false) => {
                if list.len() >= MAX_ADVERT_DNS {
                    // Entries are kept in the order they were added.
                    list.drain(..=list.len() - MAX_ADVERT_DNS);
                    evicted = true;
                }
                list.push((value.clone(), now + *lifetime));
                changed = true;
            }
        }
    }
    (changed, evicted)
}

/// Parses an ICMPv6 router advert (starting at the ICMPv6 type byte).
pub fn parse(p: &[u8]) -> Result<RaDns, RaError> {
    if p.len() < 16 {
        return Err(RaError::Short(p.len()));
    }
    if p[0] != ROUTER_ADVERT || p[1] != 0 {
        return Err(RaError::NotRa(p[0], p[1]));
    }
    let mut out = RaDns {
        router_lifetime: Duration::from_secs(u64::from(u16::from_be_bytes([p[6], p[7]]))),
        ..Default::default()
    };
    let mut off = 16;
    while off < p.len() {
        if p.len() - off < 2 {
            return Err(RaError::OptionLength(off));
        }
        let len = usize::from(p[off + 1]) * 8;
        if len == 0 || off + len > p.len() {
            return Err(RaError::OptionLength(off));
        }
        let opt = &p[off..off + len];
        match opt[0] {
            25 => {
                if len < 24 || (len - 8) % 16 != 0 {
                    return Err(RaError::Rdnss(off));
                }
                let life = lifetime(opt);
                for a in opt[8..].chunks_exact(16) {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(a);
                    let ip = Ipv6Addr::from(b);
                    if ip.is_multicast() || ip.is_unspecified() {
                        return Err(RaError::Rdnss(off));
                    }
                    if out.servers.len() < 8 {
                        out.servers.push((ip, life));
                    }
                }
            }
            31 => {
                if len < 16 {
                    return Err(RaError::Dnssl(off));
                }
                let life = lifetime(opt);
                for name in names(&opt[8..]).map_err(|_| RaError::Dnssl(off))? {
                    if out.search.len() < 6 {
                        out.search.push((name, life));
                    }
                }
            }
            _ => {}
        }
        off += len;
    }
    Ok(out)
}

fn lifetime(opt: &[u8]) -> Duration {
    Duration::from_secs(u64::from(u32::from_be_bytes([
        opt[4], opt[5], opt[6], opt[7],
    ])))
}

/// DNS wire-format names (no compression), ended by zero padding.
fn names(mut b: &[u8]) -> Result<Vec<String>, ()> {
    let mut out = Vec::new();
    while !b.is_empty() && b[0] != 0 {
        let mut labels: Vec<String> = Vec::new();
        loop {
            let (&n, rest) = b.split_first().ok_or(())?;
            let n = usize::from(n);
            if n == 0 {
                b = rest;
                break;
            }
            if n > 63 || rest.len() < n {
                return Err(());
            }
            let label = &rest[..n];
            if !label
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            {
                return Err(());
            }
            labels.push(String::from_utf8_lossy(label).into_owned());
            b = &rest[n..];
        }
        let name = labels.join(".");
        if name.is_empty() || name.len() > 253 {
            return Err(());
        }
        out.push(name);
    }
    // Only padding may follow.
    if b.iter().any(|&c| c != 0) {
        return Err(());
    }
    Ok(out)
}

/// A router solicitation (the kernel fills in the checksum).
pub fn solicitation(mac: &[u8; 6]) -> Vec<u8> {
    let mut p = vec![ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    // Source link-layer address option.
    p.extend_from_slice(&[1, 1]);
    p.extend_from_slice(mac);
    p
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn sample() -> Vec<u8> {
        let mut p = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        // RDNSS with two servers, lifetime 600.
        p.extend_from_slice(&[25, 5, 0, 0, 0, 0, 2, 0x58]);
        p.extend_from_slice(&"fd00::53".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::54".parse::<Ipv6Addr>().unwrap().octets());
        // DNSSL: example.com, lab
        let mut names = Vec::new();
        names.extend_from_slice(b"\x07example\x03com\x00\x03lab\x00");
        while (names.len() + 8) % 8 != 0 {
            names.push(0);
        }
        p.extend_from_slice(&[31, ((names.len() + 8) / 8) as u8, 0, 0, 0, 0, 2, 0x58]);
        p.extend_from_slice(&names);
        // An unknown option is skipped.
        p.extend_from_slice(&[200, 1, 0, 0, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn reads_rdnss_and_dnssl() {
        let r = parse(&sample()).unwrap();
        assert_eq!(r.router_lifetime, Duration::from_secs(0x708));
        let s: Vec<String> = r.servers.iter().map(|s| s.0.to_string()).collect();
        assert_eq!(s, ["fd00::53", "fd00::54"]);
        assert_eq!(r.servers[0].1, Duration::from_secs(600));
        let d: Vec<&str> = r.search.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(d, ["example.com", "lab"]);
    }

    #[test]
    fn malformed_options_are_refused() {
        let mut p = sample();
        p[17] = 0; // RDNSS length 0
        assert_eq!(parse(&p), Err(RaError::OptionLength(16)));
        let mut p = sample();
        p[17] = 200; // runs past the end
        assert_eq!(parse(&p), Err(RaError::OptionLength(16)));
        let mut p = sample();
        p[17] = 2; // RDNSS of 16 bytes holds no address
        assert!(parse(&p).is_err());
        assert_eq!(parse(&[133, 0, 0, 0]), Err(RaError::Short(4)));
        let mut p = sample();
        p[0] = 133;
        assert_eq!(parse(&p), Err(RaError::NotRa(133, 0)));
        let mut p = sample();
        let dnssl = 16 + 40 + 8;
        p[dnssl] = 64; // label too long
        assert!(matches!(parse(&p), Err(RaError::Dnssl(_))));
    }

    /// Whether merging `a` changed the lists (not only a lifetime).
    fn changed(d: &mut AdvertDns, a: &RaDns, now: Instant) -> bool {
        d.merge(a, now).changed
    }

    fn one_server(n: u16, search: Option<String>) -> RaDns {
        RaDns {
            servers: vec![(
                Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, n),
                Duration::from_secs(600),
            )],
            search: search
                .map(|s| vec![(s, Duration::from_secs(600))])
                .unwrap_or_default(),
            router_lifetime: Duration::ZERO,
        }
    }

    /// A flood of adverts each naming a new server (and a new search
    /// domain): each list stays at 8, holding the newest, and the lists
    /// report being full once each, not once per advert.
    #[test]
    fn advert_dns_lists_are_capped_oldest_evicted_and_full_is_reported_once() {
        let t0 = Instant::now();
        let mut d = AdvertDns::default();
        let mut notices = Vec::new();
        let mut evicting = 0;
        for n in 0..300u16 {
            let m = d.merge(&one_server(n, Some(format!("d{n}.example"))), t0);
            assert!(m.changed, "advert {n}");
            evicting += usize::from(m.evicted);
            notices.extend(AdvertDns::full_notices("eth0", &m));
            assert!(d.servers.len() <= MAX_ADVERT_DNS && d.search.len() <= MAX_ADVERT_DNS);
        }
        assert_eq!(evicting, 300 - MAX_ADVERT_DNS);
        assert_eq!(
            notices,
            [
                "eth0: router advert DNS list full (8 servers); the oldest are replaced",
                "eth0: router advert search list full (8 domains); the oldest are replaced",
            ]
        );
        // The newest eight, oldest first.
        let servers: Vec<u16> = d.servers.iter().map(|s| s.0.segments()[7]).collect();
        assert_eq!(servers, (292..300).collect::<Vec<u16>>());
        let search: Vec<&str> = d.search.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(search[0], "d292.example");
        assert_eq!(search[7], "d299.example");

        // A refresh of a known entry evicts nothing and does not make it
        // younger: the next new server evicts it, being the oldest.
        let m = d.merge(&one_server(292, None), t0 + Duration::from_secs(5));
        assert_eq!(m, Merged::default());
        let m = d.merge(&one_server(1000, None), t0 + Duration::from_secs(5));
        assert!(m.changed && m.evicted && !m.servers_first_full);
        assert_eq!(d.servers[0].0.segments()[7], 293);

        // Below the cap nothing is evicted or reported; another interface
        // (another AdvertDns) reports its own full list once.
        let mut other = AdvertDns::default();
        for n in 0..8 {
            let m = other.merge(&one_server(n, None), t0);
            assert!(!m.evicted && AdvertDns::full_notices("eth1", &m).is_empty());
        }
        let m = other.merge(&one_server(8, None), t0);
        assert_eq!(
            AdvertDns::full_notices("eth1", &m),
            ["eth1: router advert DNS list full (8 servers); the oldest are replaced"]
        );
    }

    #[test]
    fn advert_dns_entries_are_merged_and_expire_one_by_one() {
        let secs = Duration::from_secs;
        let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let advert = |servers: &[(&str, u64)], search: &[(&str, u64)]| RaDns {
            servers: servers.iter().map(|(a, l)| (ip(a), secs(*l))).collect(),
            search: search
                .iter()
                .map(|(d, l)| (d.to_string(), secs(*l)))
                .collect(),
            router_lifetime: secs(1800),
        };
        let servers = |d: &AdvertDns| {
            d.servers
                .iter()
                .map(|s| s.0.to_string())
                .collect::<Vec<_>>()
        };
        let search = |d: &AdvertDns| d.search.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
        let t0 = Instant::now();
        let mut d = AdvertDns::default();
        // A lifetime of 0 for an unknown entry adds nothing.
        assert!(changed(
            &mut d,
            &advert(
                &[("fd00::53", 600), ("fd00::54", 30), ("fd00::55", 0)],
                &[("lab", 60), ("example.com", 600)]
            ),
            t0
        ));
        assert_eq!(servers(&d), ["fd00::53", "fd00::54"]);
        assert_eq!(d.next_expiry(), Some(t0 + secs(30)));
        // An advert without DNS options (or from another router with other
        // servers) leaves the entries it does not name alone.
        assert!(!changed(&mut d, &advert(&[], &[]), t0 + secs(10)));
        assert!(changed(
            &mut d,
            &advert(&[("fd00::99", 600)], &[]),
            t0 + secs(10)
        ));
        assert_eq!(servers(&d), ["fd00::53", "fd00::54", "fd00::99"]);
        // Up to the end of a lifetime the entry stays; at its end it goes.
        assert!(!d.expire(t0 + secs(29)));
        assert!(d.expire(t0 + secs(30)));
        assert_eq!(servers(&d), ["fd00::53", "fd00::99"]);
        assert_eq!(search(&d), ["lab", "example.com"]);
        // A refresh moves the expiry: only a lifetime changed.
        assert!(!changed(
            &mut d,
            &advert(&[], &[("lab", 600)]),
            t0 + secs(50)
        ));
        assert!(!d.expire(t0 + secs(60)));
        assert_eq!(d.next_expiry(), Some(t0 + secs(600)));
        // A lifetime of 0 withdraws a known entry at once.
        assert!(changed(
            &mut d,
            &advert(&[("fd00::53", 0)], &[]),
            t0 + secs(70)
        ));
        assert_eq!(servers(&d), ["fd00::99"]);
        assert!(d.expire(t0 + secs(650)));
        assert!(d.servers.is_empty() && d.search.is_empty());
        assert_eq!(d.next_expiry(), None);
        assert!(!d.expire(t0 + secs(10_000)));
    }

    /// Corpus files (`crates/cairn-init/fuzz/corpus/ra`) that hold an
    /// acceptable advert; every other named file below must be refused.
    const CORPUS_GOOD: [&str; 1] = ["good"];
    /// Corpus files that must be refused, with the error each one gets.
    fn corpus_refused() -> [(&'static str, RaError); 5] {
        [
            ("dnssl_loop", RaError::Dnssl(16)),
            ("past_end", RaError::OptionLength(16)),
            ("rs", RaError::Short(8)),
            ("short", RaError::Short(10)),
            ("zero_len", RaError::OptionLength(16)),
        ]
    }

    /// The stored corpus never panics; its hostile adverts are refused
    /// with the expected reason and its good one is read.
    #[test]
    fn corpus_never_panics_and_bad_adverts_are_refused() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/ra");
        let mut seen = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let got = parse(&std::fs::read(e.path()).unwrap());
            if let Some((_, want)) = corpus_refused().into_iter().find(|(n, _)| *n == name) {
                assert_eq!(got, Err(want), "{name}");
            } else if CORPUS_GOOD.contains(&name.as_str()) {
                let dns = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!dns.servers.is_empty(), "{name}: {dns:?}");
            }
            seen.push(name);
        }
        for (name, _) in corpus_refused() {
            assert!(seen.iter().any(|s| s == name), "corpus file {name} missing");
        }
        for name in CORPUS_GOOD {
            assert!(seen.iter().any(|s| s == name), "corpus file {name} missing");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn arbitrary_adverts_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut p = vec![134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            p.extend_from_slice(&tail);
            let _ = parse(&p);
            let _ = parse(&tail);
        }

        #[test]
        fn mutated_adverts_never_panic(edits in proptest::collection::vec((0usize..120, any::<u8>()), 1..10)) {
            let mut p = sample();
            for (i, v) in edits {
                if let Some(b) = p.get_mut(i) { *b = v; }
            }
            let _ = parse(&p);
        }
    }
}

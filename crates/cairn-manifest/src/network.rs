//! Network configuration: the `[[network]]` entries and the `[net]` table
//! of the manifest and their validation into the runtime form
//! ([`crate::runtime::net`], `NetConfig`) that the init reads from
//! `/etc/cairn/system.json`.
//!
//! ```toml
//! [net]
//! online_timeout = 30          # seconds network-online waits at most (default 30)
//! ntp = ["192.0.2.123"]        # SNTP servers (IP addresses); DHCP option 42 adds more
//!
//! [[network]]
//! match = { name = "eth*" }    # a glob on the interface name, or { mac = "52:54:00:12:34:56" }
//! dhcp4 = true                 # default: true unless `addresses` has an IPv4 address
//! rapid_commit = true          # DHCPv4 Rapid Commit, RFC 4039 (default true; needs dhcp4)
//! ipv6 = "slaac"               # slaac (default) | off | static
//! addresses = ["192.168.7.2/24", "fd00::2/64"]
//! gateway = "192.168.7.1"      # IPv4 default route
//! gateway6 = "fd00::1"         # IPv6 default route
//! routes = [{ to = "10.0.0.0/8", via = "192.168.7.254" }]
//! mtu = 1500
//! dns = ["192.168.7.1"]
//! search = ["example.com"]
//! required = true              # network-online waits for it (default true)
//! ```
//!
//! Without any `[[network]]` every ethernet interface gets DHCPv4 and SLAAC.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::diagnostic::Span;
use crate::runtime::net::{
    parse_mac, InterfaceConfig, IpPrefix, Ipv6Mode, MatchRule, NetConfig, NetInvalid, RouteConfig,
};

/// Everything a `[[network]]` entry or `[net]` can get wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetworkInvalid {
    #[error("`match` needs exactly one of `name` (an interface name or glob) and `mac`")]
    MatchOne,
    #[error("invalid interface name or glob `{0}`: expected 1-15 characters of letters, digits, `_.-` and the wildcards `*` and `?`")]
    NameGlob(String),
    #[error("invalid MAC address `{0}`: expected six two-digit hex bytes separated by `:`, like 52:54:00:12:34:56")]
    Mac(String),
    #[error("this interface is already matched by the [[network]] entry on line {first_line}")]
    DuplicateMatch { first_line: usize },
    #[error(transparent)]
    Prefix(#[from] NetInvalid),
    #[error("invalid IP address `{0}`")]
    Ip(String),
    #[error("invalid {key} `{value}`: {reason}")]
    Unusable {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("`{0}` must be an IPv4 address")]
    NotV4(&'static str),
    #[error("`{0}` must be an IPv6 address")]
    NotV6(&'static str),
    #[error("`ipv6 = \"static\"` needs at least one IPv6 address in `addresses`")]
    StaticWithoutV6,
    #[error("`ipv6 = \"off\"` but `{0}` has IPv6 values")]
    V6Off(&'static str),
    #[error("`rapid_commit` is a DHCPv4 setting, but dhcp4 is off for this entry")]
    RapidCommitWithoutDhcp,
    #[error("`gateway` needs an IPv4 address in `addresses` (a DHCP lease brings its own router)")]
    GatewayWithoutV4,
    #[error("route via {via} is not reachable: no static address of that family and no dynamic configuration for it on this interface")]
    RouteFamily { via: String },
    #[error("route destination `{0}` has host bits set; did you mean the network address?")]
    RouteHostBits(String),
    #[error("`to` and `via` of a route must be the same IP family")]
    RouteMixed,
    #[error("`mtu` must be between 68 and 65535 (1280 or more with IPv6); got {0}")]
    Mtu(i64),
    #[error(
        "invalid search domain `{0}`: expected dot-separated labels of letters, digits and `-`"
    )]
    Search(String),
    #[error("this entry configures nothing: dhcp4 is off, ipv6 is off and there are no addresses")]
    Nothing,
    #[error("`online_timeout` must be between 1 and 3600 seconds; got {0}")]
    Timeout(i64),
    #[error("address {0} is given twice")]
    DuplicateAddress(String),
}

type Fail = (Span, NetworkInvalid);

fn sp<T>(s: &Spanned<T>) -> Span {
    s.span().into()
}

// ---------------------------------------------------------------- raw

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    #[serde(rename = "match")]
    pub matches: Spanned<RawMatch>,
    #[serde(default)]
    pub dhcp4: Option<Spanned<bool>>,
    #[serde(default)]
    pub rapid_commit: Option<Spanned<bool>>,
    #[serde(default)]
    pub ipv6: Option<Spanned<Ipv6Mode>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    #[serde(default)]
    pub gateway: Option<Spanned<String>>,
    #[serde(default)]
    pub gateway6: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub mtu: Option<Spanned<i64>>,
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    #[serde(default)]
    pub search: Vec<Spanned<String>>,
    #[serde(default)]
    pub required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub mac: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub to: Spanned<String>,
    pub via: Spanned<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNet {
    #[serde(default)]
    pub online_timeout: Option<Spanned<i64>>,
    #[serde(default)]
    pub ntp: Vec<Spanned<String>>,
}

fn check_glob(g: &str) -> Result<(), NetworkInvalid> {
    let ok = !g.is_empty()
        && g.len() <= 15
        && g.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-*?".contains(c));
    if ok {
        Ok(())
    } else {
        Err(NetworkInvalid::NameGlob(g.to_string()))
    }
}

fn check_domain(d: &str) -> Result<(), NetworkInvalid> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let d2 = d.strip_suffix('.').unwrap_or(d);
    if d2.len() <= 253 && d2.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(NetworkInvalid::Search(d.to_string()))
    }
}

fn parse_ip(key: &'static str, s: &Spanned<String>) -> Result<IpAddr, Fail> {
    let ip: IpAddr = s
        .get_ref()
        .parse()
        .map_err(|_| (sp(s), NetworkInvalid::Ip(s.get_ref().clone())))?;
    let reason = if ip.is_unspecified() {
        "the unspecified address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        "the broadcast address"
    } else {
        return Ok(ip);
    };
    Err((
        sp(s),
        NetworkInvalid::Unusable {
            key,
            value: s.get_ref().clone(),
            reason,
        },
    ))
}

// ---------------------------------------------------------------- validation

/// Validates `[[network]]` and `[net]`. `line_of` turns a span into a line
/// number (for "already on line N").
pub(crate) fn build(
    raw: Vec<Spanned<RawNetwork>>,
    net: Option<RawNet>,
    line_of: &dyn Fn(Span) -> usize,
) -> Result<NetConfig, Fail> {
    let mut out = NetConfig::default();
    let mut seen: HashMap<MatchRule, Span> = HashMap::new();
    for entry in raw {
        let entry_span = sp(&entry);
        let iface = interface(entry.into_inner(), entry_span, &mut seen, line_of)?;
        out.interfaces.push(iface);
    }
    if let Some(net) = net {
        if let Some(t) = &net.online_timeout {
            let v = *t.get_ref();
            if !(1..=3600).contains(&v) {
                return Err((sp(t), NetworkInvalid::Timeout(v)));
            }
            out.online_timeout = v as u64;
        }
        for s in &net.ntp {
            out.ntp.push(parse_ip("ntp server", s)?);
        }
    }
    Ok(out)
}

fn interface(
    n: RawNetwork,
    entry_span: Span,
    seen: &mut HashMap<MatchRule, Span>,
    line_of: &dyn Fn(Span) -> usize,
) -> Result<InterfaceConfig, Fail> {
    let m = n.matches.get_ref();
    let match_span = sp(&n.matches);
    let matches = match (&m.name, &m.mac) {
        (Some(name), None) => {
            check_glob(name.get_ref()).map_err(|e| (sp(name), e))?;
            MatchRule::Name(name.get_ref().clone())
        }
        (None, Some(mac)) => {
            let bytes = parse_mac(mac.get_ref())
                .ok_or_else(|| (sp(mac), NetworkInvalid::Mac(mac.get_ref().clone())))?;
            MatchRule::Mac(
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            )
        }
        _ => return Err((match_span, NetworkInvalid::MatchOne)),
    };
    if let Some(first) = seen.get(&matches) {
        return Err((
            match_span,
            NetworkInvalid::DuplicateMatch {
                first_line: line_of(*first),
            },
        ));
    }
    seen.insert(matches.clone(), match_span);

    let mut addresses: Vec<IpPrefix> = Vec::new();
    for a in &n.addresses {
        let p: IpPrefix = a
            .get_ref()
            .parse()
            .map_err(|e| (sp(a), NetworkInvalid::from(e)))?;
        let unusable = |reason| {
            (
                sp(a),
                NetworkInvalid::Unusable {
                    key: "address",
                    value: a.get_ref().clone(),
                    reason,
                },
            )
        };
        if p.addr.is_unspecified() || p.addr.is_multicast() || p.addr.is_loopback() {
            return Err(unusable("not an address an interface can have"));
        }
        if p.addr.is_ipv4() && p.len < 31 && p.network() == p.addr {
            return Err(unusable("this is the network address of its prefix"));
        }
        if addresses.iter().any(|q| q.addr == p.addr) {
            return Err((sp(a), NetworkInvalid::DuplicateAddress(p.addr.to_string())));
        }
        addresses.push(p);
    }
    let has_v4 = addresses.iter().any(|p| p.addr.is_ipv4());
    let has_v6 = addresses.iter().any(|p| p.addr.is_ipv6());

    let dhcp4 = n.dhcp4.as_ref().map_or(!has_v4, |d| *d.get_ref());
    let rapid_commit = match &n.rapid_commit {
        Some(r) if *r.get_ref() && !dhcp4 => {
            return Err((sp(r), NetworkInvalid::RapidCommitWithoutDhcp))
        }
        Some(r) => *r.get_ref(),
        None => dhcp4,
    };
    let ipv6 = n.ipv6.as_ref().map_or(Ipv6Mode::Slaac, |v| *v.get_ref());
    let ipv6_span = n.ipv6.as_ref().map_or(entry_span, sp);
    match ipv6 {
        Ipv6Mode::Static if !has_v6 => return Err((ipv6_span, NetworkInvalid::StaticWithoutV6)),
        Ipv6Mode::Off if has_v6 => {
            let a = n.addresses.iter().find(|a| a.get_ref().contains(':'));
            return Err((a.map_or(ipv6_span, sp), NetworkInvalid::V6Off("addresses")));
        }
        _ => {}
    }

    let gateway = match &n.gateway {
        Some(g) => match parse_ip("gateway", g)? {
            IpAddr::V4(a) if has_v4 => Some(a),
            IpAddr::V4(_) => return Err((sp(g), NetworkInvalid::GatewayWithoutV4)),
            IpAddr::V6(_) => return Err((sp(g), NetworkInvalid::NotV4("gateway"))),
        },
        None => None,
    };
    let gateway6 = match &n.gateway6 {
        Some(g) => match parse_ip("gateway6", g)? {
            IpAddr::V6(_) if ipv6 == Ipv6Mode::Off => {
                return Err((sp(g), NetworkInvalid::V6Off("gateway6")))
            }
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => return Err((sp(g), NetworkInvalid::NotV6("gateway6"))),
        },
        None => None,
    };

    let mut routes = Vec::new();
    for r in &n.routes {
        let r = r.get_ref();
        let to: IpPrefix =
            r.to.get_ref()
                .parse()
                .map_err(|e| (sp(&r.to), NetworkInvalid::from(e)))?;
        if to.network() != to.addr {
            return Err((
                sp(&r.to),
                NetworkInvalid::RouteHostBits(r.to.get_ref().clone()),
            ));
        }
        let via = parse_ip("via", &r.via)?;
        if via.is_ipv4() != to.addr.is_ipv4() {
            return Err((sp(&r.via), NetworkInvalid::RouteMixed));
        }
        let reachable = if via.is_ipv4() {
            has_v4 || dhcp4
        } else {
            ipv6 != Ipv6Mode::Off
        };
        if !reachable {
            return Err((
                sp(&r.via),
                NetworkInvalid::RouteFamily {
                    via: via.to_string(),
                },
            ));
        }
        routes.push(RouteConfig { to, via });
    }

    let mtu = match &n.mtu {
        Some(m) => {
            let v = *m.get_ref();
            let min = if ipv6 == Ipv6Mode::Off { 68 } else { 1280 };
            if !(min..=65535).contains(&v) {
                return Err((sp(m), NetworkInvalid::Mtu(v)));
            }
            Some(v as u32)
        }
        None => None,
    };
    let mut dns = Vec::new();
    for d in &n.dns {
        let ip = parse_ip("dns server", d)?;
        if ip.is_ipv6() && ipv6 == Ipv6Mode::Off {
            return Err((sp(d), NetworkInvalid::V6Off("dns")));
        }
        dns.push(ip);
    }
    let mut search = Vec::new();
    for s in &n.search {
        check_domain(s.get_ref()).map_err(|e| (sp(s), e))?;
        search.push(s.get_ref().clone());
    }
    if !dhcp4 && ipv6 == Ipv6Mode::Off && addresses.is_empty() {
        return Err((entry_span, NetworkInvalid::Nothing));
    }
    Ok(InterfaceConfig {
        matches,
        dhcp4,
        rapid_commit,
        ipv6,
        addresses,
        gateway,
        gateway6,
        routes,
        mtu,
        dns,
        search,
        required: n.required.unwrap_or(true),
    })
}

#[cfg(test)]
mod manifest_tests {
    use super::*;
    use crate::Manifest;
    use std::path::Path;

    const HEAD: &str = "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n";

    fn parse(body: &str) -> Result<Manifest, crate::Diagnostic> {
        Manifest::parse(&format!("{HEAD}{body}"), Path::new("cairn.toml"))
    }

    /// (line, col, message), lines counted from the body's first line.
    fn err(body: &str) -> (usize, usize, String) {
        let d = parse(body).expect_err("should be refused");
        (d.line - 3, d.col, d.message)
    }

    #[test]
    fn full_entry_round_trips() {
        let m = parse(
            "[net]\nonline_timeout = 12\nntp = [\"10.0.2.2\"]\n\
             [[network]]\nmatch = { name = \"eth*\" }\ndhcp4 = true\nipv6 = \"slaac\"\n\
             addresses = [\"192.168.7.2/24\", \"fd00::2/64\"]\ngateway = \"192.168.7.1\"\n\
             gateway6 = \"fd00::1\"\nroutes = [{ to = \"10.0.0.0/8\", via = \"192.168.7.254\" }]\n\
             mtu = 1400\ndns = [\"192.168.7.1\", \"fd00::53\"]\nsearch = [\"example.com\"]\n\
             required = false\n\
             [[network]]\nmatch = { mac = \"52:54:00:AA:BB:CC\" }\n",
        )
        .unwrap();
        let net = &m.net;
        assert_eq!(net.online_timeout, 12);
        assert_eq!(net.ntp, vec![IpAddr::from([10, 0, 2, 2])]);
        let a = &net.interfaces[0];
        assert!(a.dhcp4, "explicit dhcp4 next to a static address");
        assert_eq!(a.addresses.len(), 2);
        assert_eq!(a.gateway, Some(Ipv4Addr::new(192, 168, 7, 1)));
        assert_eq!(a.routes[0].to.to_string(), "10.0.0.0/8");
        assert_eq!(a.mtu, Some(1400));
        assert!(!a.required);
        let b = &net.interfaces[1];
        assert_eq!(b.matches, MatchRule::Mac("52:54:00:aa:bb:cc".into()));
        assert!(b.dhcp4 && b.ipv6 == Ipv6Mode::Slaac && b.required);
        let sys = m.system_config(vec![]);
        sys.assert_round_trips();
    }

    #[test]
    fn rapid_commit_follows_dhcp4_unless_set() {
        let m = parse(
            "[[network]]\nmatch = { name = \"a\" }\n\
             [[network]]\nmatch = { name = \"b\" }\nrapid_commit = false\n\
             [[network]]\nmatch = { name = \"c\" }\naddresses = [\"10.0.0.2/24\"]\n",
        )
        .unwrap();
        let rc: Vec<bool> = m.net.interfaces.iter().map(|i| i.rapid_commit).collect();
        assert_eq!(rc, [true, false, false]);
        assert!(InterfaceConfig::automatic().rapid_commit);
        let sys = m.system_config(vec![]);
        sys.assert_round_trips();
    }

    #[test]
    fn static_address_turns_dhcp_off_by_default() {
        let m = parse("[[network]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.0.2/24\"]\n")
            .unwrap();
        assert!(!m.net.interfaces[0].dhcp4);
    }

    #[test]
    fn errors_have_positions() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("[[network]]\nmatch = {}\n", (2, 9), "exactly one of"),
            (
                "[[network]]\nmatch = { name = \"e\", mac = \"52:54:00:00:00:01\" }\n",
                (2, 9),
                "exactly one of",
            ),
            ("[[network]]\nmatch = { name = \"eth/0\" }\n", (2, 18), "interface name"),
            ("[[network]]\nmatch = { mac = \"52:54\" }\n", (2, 17), "MAC"),
            ("[[network]]\nmatch = { name = \"a\" }\nfoo = 1\n", (3, 1), "unknown key `foo`"),
            (
                "[[network]]\nmatch = { name = \"a\" }\naddresses = [\"10.0.0.2\"]\n",
                (3, 14),
                "prefix length",
            ),
            (
                "[[network]]\nmatch = { name = \"a\" }\naddresses = [\"10.0.0.0/24\"]\n",
                (3, 14),
                "network address",
            ),
            (
                "[[network]]\nmatch = { name = \"a\" }\ngateway = \"10.0.0.1\"\n",
                (3, 11),
                "needs an IPv4 address",
            ),
            (
                "[[network]]\nmatch = { name = \"a\" }\naddresses = [\"10.0.0.2/24\"]\ngateway = \"fd00::1\"\n",
                (4, 11),
                "must be an IPv4",
            ),
            ("[[network]]\nmatch = { name = \"a\" }\nipv6 = \"static\"\n", (3, 8), "needs at least one IPv6"),
            (
                "[[network]]\nmatch = { name = \"a\" }\ndhcp4 = false\nrapid_commit = true\n",
                (4, 16),
                "`rapid_commit` is a DHCPv4 setting",
            ),
            ("[[network]]\nmatch = { name = \"a\" }\nipv6 = \"auto\"\n", (3, 8), "unknown value"),
            (
                "[[network]]\nmatch = { name = \"a\" }\nipv6 = \"off\"\naddresses = [\"fd00::2/64\"]\n",
                (4, 14),
                "but `addresses` has IPv6",
            ),
            ("[[network]]\nmatch = { name = \"a\" }\nmtu = 40\n", (3, 7), "between 68"),
            ("[[network]]\nmatch = { name = \"a\" }\ndns = [\"nope\"]\n", (3, 8), "invalid IP"),
            ("[[network]]\nmatch = { name = \"a\" }\nsearch = [\"a..b\"]\n", (3, 11), "search domain"),
            (
                "[[network]]\nmatch = { name = \"a\" }\nroutes = [{ to = \"10.1.2.3/8\", via = \"10.0.0.1\" }]\n",
                (3, 18),
                "host bits",
            ),
            (
                "[[network]]\nmatch = { name = \"a\" }\nroutes = [{ to = \"10.0.0.0/8\", via = \"fd00::1\" }]\n",
                (3, 38),
                "same IP family",
            ),
            (
                "[[network]]\nmatch = { name = \"a\" }\ndhcp4 = false\nipv6 = \"off\"\n",
                (1, 1),
                "configures nothing",
            ),
            (
                "[[network]]\nmatch = { name = \"a\" }\n[[network]]\nmatch = { name = \"a\" }\n",
                (4, 9),
                "entry on line 5",
            ),
            ("[net]\nonline_timeout = 0\n", (2, 18), "between 1 and 3600"),
            ("[net]\nntp = [\"224.0.0.1\"]\n", (2, 8), "multicast"),
        ];
        for (body, pos, needle) in cases {
            let (l, c, m) = err(body);
            assert_eq!((l, c), *pos, "{body}: {m}");
            assert!(m.contains(needle), "{body}: {m}");
        }
    }
}

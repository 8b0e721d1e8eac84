//! Network configuration: the `[[network]]` entries and the `[net]` table
//! of the manifest, their validation, and the runtime form (`NetConfig`)
//! that the init reads from `/etc/cairn/system.json`.
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
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::Spanned;

use crate::diagnostic::Span;

/// `network-online` waits at most this long unless `[net] online_timeout`
/// says otherwise.
pub const DEFAULT_ONLINE_TIMEOUT: u64 = 30;

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
    #[error("invalid address `{0}`: expected an IP address with a prefix length, like 192.168.7.2/24 or fd00::2/64")]
    Prefix(String),
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

// ---------------------------------------------------------------- runtime

/// The network part of the runtime config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// `[[network]]` entries in manifest order (the first match wins).
    /// Empty: every ethernet interface gets DHCPv4 and SLAAC.
    #[serde(default, rename = "interface", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceConfig>,
    /// Seconds `network-online` waits for the required interfaces.
    #[serde(default = "default_timeout")]
    pub online_timeout: u64,
    /// SNTP servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<IpAddr>,
}

fn default_timeout() -> u64 {
    DEFAULT_ONLINE_TIMEOUT
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            interfaces: Vec::new(),
            online_timeout: DEFAULT_ONLINE_TIMEOUT,
            ntp: Vec::new(),
        }
    }
}

impl NetConfig {
    pub fn is_default(&self) -> bool {
        *self == NetConfig::default()
    }

    /// The entry for an interface, first match wins. Without any entry
    /// every ethernet interface gets [`InterfaceConfig::automatic`].
    pub fn for_interface(&self, name: &str, mac: Option<&[u8; 6]>) -> Option<InterfaceConfig> {
        if self.interfaces.is_empty() {
            return Some(InterfaceConfig::automatic());
        }
        self.interfaces
            .iter()
            .find(|c| c.matches.matches(name, mac))
            .cloned()
    }
}

/// How an entry picks its interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum MatchRule {
    /// A glob (`*`, `?`) on the interface name.
    Name(String),
    /// A MAC address, lowercase `aa:bb:...`.
    Mac(String),
}

impl MatchRule {
    pub fn matches(&self, name: &str, mac: Option<&[u8; 6]>) -> bool {
        match self {
            MatchRule::Name(glob) => glob_match(glob.as_bytes(), name.as_bytes()),
            MatchRule::Mac(m) => mac.is_some_and(|mac| parse_mac(m) == Some(*mac)),
        }
    }
}

impl fmt::Display for MatchRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchRule::Name(n) => write!(f, "name {n}"),
            MatchRule::Mac(m) => write!(f, "mac {m}"),
        }
    }
}

/// `ipv6 =`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ipv6Mode {
    /// Accept router adverts; the kernel does SLAAC.
    #[default]
    Slaac,
    /// IPv6 disabled on the interface.
    Off,
    /// Only the static addresses; router adverts are ignored.
    Static,
}

/// An address with its prefix length, written `192.168.7.2/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for IpPrefix {
    type Err = NetworkInvalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetworkInvalid::Prefix(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
            return Err(bad());
        }
        let len: u8 = l.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad());
        }
        Ok(IpPrefix { addr, len })
    }
}

impl TryFrom<String> for IpPrefix {
    type Error = NetworkInvalid;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpPrefix> for String {
    fn from(p: IpPrefix) -> String {
        p.to_string()
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl IpPrefix {
    /// The address with its host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

/// An extra route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub to: IpPrefix,
    pub via: IpAddr,
}

/// One `[[network]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    #[serde(rename = "match")]
    pub matches: MatchRule,
    pub dhcp4: bool,
    /// Ask for DHCPv4 Rapid Commit (RFC 4039): a server that supports it
    /// answers the DISCOVER with an ACK, two messages instead of four.
    #[serde(default = "crate::system::yes")]
    pub rapid_commit: bool,
    pub ipv6: Ipv6Mode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpPrefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    pub required: bool,
}

impl InterfaceConfig {
    /// What an ethernet interface gets when the manifest has no
    /// `[[network]]`: DHCPv4 and SLAAC.
    pub fn automatic() -> Self {
        InterfaceConfig {
            matches: MatchRule::Name("*".into()),
            dhcp4: true,
            rapid_commit: true,
            ipv6: Ipv6Mode::Slaac,
            addresses: Vec::new(),
            gateway: None,
            gateway6: None,
            routes: Vec::new(),
            mtu: None,
            dns: Vec::new(),
            search: Vec::new(),
            required: true,
        }
    }
}

// ---------------------------------------------------------------- helpers

/// `*` and `?` globbing (no classes), iterative with backtracking.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// `52:54:00:12:34:56` (either case) into bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
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

impl std::hash::Hash for MatchRule {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            MatchRule::Name(n) => (0u8, n).hash(h),
            MatchRule::Mac(m) => (1u8, m).hash(h),
        }
    }
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
        let p: IpPrefix = a.get_ref().parse().map_err(|e| (sp(a), e))?;
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
        let to: IpPrefix = r.to.get_ref().parse().map_err(|e| (sp(&r.to), e))?;
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
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"eth*", b"eth0"));
        assert!(glob_match(b"*", b"enp0s3"));
        assert!(glob_match(b"e?h0", b"eth0"));
        assert!(!glob_match(b"eth?", b"eth10"));
        assert!(glob_match(b"*0", b"eth10"));
        assert!(!glob_match(b"wl*", b"eth0"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:ef"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:ef:00"), None);
        assert_eq!(parse_mac("5:54:00:ab:cd:ef"), None);
    }

    #[test]
    fn prefixes() {
        let p: IpPrefix = "192.168.7.2/24".parse().unwrap();
        assert_eq!(p.network(), IpAddr::from([192, 168, 7, 0]));
        assert_eq!(p.to_string(), "192.168.7.2/24");
        assert!("192.168.7.2/33".parse::<IpPrefix>().is_err());
        assert!("192.168.7.2".parse::<IpPrefix>().is_err());
        assert!("fd00::1/129".parse::<IpPrefix>().is_err());
        assert!("fd00::1/+4".parse::<IpPrefix>().is_err());
        let p: IpPrefix = "fd00::1/64".parse().unwrap();
        assert_eq!(p.network(), "fd00::".parse::<IpAddr>().unwrap());
        let p: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!(p.network(), IpAddr::from([0, 0, 0, 0]));
    }

    #[test]
    fn automatic_when_no_entries() {
        let c = NetConfig::default();
        assert_eq!(
            c.for_interface("eth0", None),
            Some(InterfaceConfig::automatic())
        );
    }

    #[test]
    fn first_match_wins_and_mac_matches() {
        let mut a = InterfaceConfig::automatic();
        a.matches = MatchRule::Mac("52:54:00:00:00:01".into());
        a.dhcp4 = false;
        let mut b = InterfaceConfig::automatic();
        b.matches = MatchRule::Name("eth*".into());
        let c = NetConfig {
            interfaces: vec![a.clone(), b.clone()],
            ..Default::default()
        };
        let mac = [0x52, 0x54, 0, 0, 0, 1];
        assert_eq!(c.for_interface("eth0", Some(&mac)), Some(a));
        assert_eq!(c.for_interface("eth0", Some(&[0; 6])), Some(b));
        assert_eq!(c.for_interface("wlan0", Some(&[0; 6])), None);
    }
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

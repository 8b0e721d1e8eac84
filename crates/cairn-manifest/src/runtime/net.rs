//! The network part of the runtime contract: `[[network]]` and `[net]` as
//! the init acts on them (`net` in `/etc/cairn/system.json`), and the
//! matching of an interface to its entry. Validation is in
//! [`crate::network`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// `network-online` waits at most this long unless `[net] online_timeout`
/// says otherwise.
pub const DEFAULT_ONLINE_TIMEOUT: u64 = 30;

/// What a runtime network value can get wrong when it is read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetInvalid {
    #[error("invalid address `{0}`: expected an IP address with a prefix length, like 192.168.7.2/24 or fd00::2/64")]
    Prefix(String),
}

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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    type Err = NetInvalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetInvalid::Prefix(s.to_string());
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
    type Error = NetInvalid;
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
    #[serde(default = "super::yes")]
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

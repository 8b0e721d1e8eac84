//! `/etc/resolv.conf`, written atomically (temporary file + rename) from
//! every source in a stable order: the manifest's static servers first,
//! then DHCPv4, then router adverts, each in interface-index order.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

/// DNS facts from one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSource {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// glibc reads at most this many servers and search domains.
pub const MAX_SERVERS: usize = 3;
pub const MAX_SEARCH: usize = 6;

/// The file's text: sources in the given order, duplicates dropped.
pub fn render(sources: &[DnsSource]) -> String {
    let mut servers: Vec<IpAddr> = Vec::new();
    let mut search: Vec<&str> = Vec::new();
    for s in sources {
        for ip in &s.servers {
            if !servers.contains(ip) {
                servers.push(*ip);
            }
        }
        for d in &s.search {
            if !search.contains(&d.as_str()) {
                search.push(d);
            }
        }
    }
    let mut out = String::from("# written by cairn-init\n");
    for ip in servers.iter().take(MAX_SERVERS) {
        let _ = writeln!(out, "nameserver {ip}");
    }
    if !search.is_empty() {
        let list: Vec<&str> = search.into_iter().take(MAX_SEARCH).collect();
        let _ = writeln!(out, "search {}", list.join(" "));
    }
    out
}

/// Writes `text` to `path` through a temporary file in the same directory
/// and a rename, so readers see the old or the new file, never half.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("cairn-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_order_and_dedup() {
        let a = DnsSource {
            servers: vec!["192.168.7.1".parse().unwrap()],
            search: vec!["example.com".into()],
        };
        let b = DnsSource {
            servers: vec![
                "10.0.2.3".parse().unwrap(),
                "192.168.7.1".parse().unwrap(),
                "fd00::53".parse().unwrap(),
                "fd00::54".parse().unwrap(),
            ],
            search: vec!["lab".into(), "example.com".into()],
        };
        assert_eq!(
            render(&[a, b]),
            "# written by cairn-init\nnameserver 192.168.7.1\nnameserver 10.0.2.3\n\
             nameserver fd00::53\nsearch example.com lab\n"
        );
        assert_eq!(render(&[]), "# written by cairn-init\n");
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/resolv.conf");
        write_atomic(&p, "one\n").unwrap();
        write_atomic(&p, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}

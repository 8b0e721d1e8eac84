//! The node config agent: the init binary run as `cairn-node-config`, a
//! one-shot supervised service after `network-online` (so PID 1 gains
//! no network client and no crypto; it shares the update agent's HTTP
//! client and signature check). It fetches `[netboot] url` +
//! `MAC.toml` (the MAC of the interface the route to the server leaves
//! by), checks the signature against the image's keys before parsing,
//! checks the config as the secondary config is checked (and that it
//! leaves the network alone), leaves it at [`NODE_CONFIG_PATH`] and asks
//! PID 1 to apply it. A missing, refused or unreachable config: the
//! built-in config runs, or with `required = true` no service starts.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_manifest::netboot::{self, NODE_CONFIG_MAX};
use cairn_manifest::{SystemConfig, NODE_CONFIG_PATH};

use super::ctl;

/// One line on the console (the supervisor prefixes the service's name).
fn say(msg: &str) {
    use std::io::Write;
    println!("{msg}");
    let _ = std::io::stdout().flush();
}

/// The interface `/proc/net/route` (`routes`) sends packets for `dst`
/// through: the longest matching prefix.
pub fn route_iface(routes: &str, dst: Ipv4Addr) -> Option<String> {
    // The kernel prints each address as the u32 its bytes make in memory.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    let want = u32::from(dst);
    routes
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, mask) = (hex(f.get(1)?)?, hex(f.get(7)?)?);
            (want & mask == dest & mask).then(|| (mask.count_ones(), f[0].to_string()))
        })
        .max_by_key(|(bits, _)| *bits)
        .map(|(_, iface)| iface)
}

fn fetch(sys: &SystemConfig) -> Result<String, String> {
    let nb = sys.netboot.as_ref().ok_or("no [netboot]")?;
    let (ip, port, dir) =
        cairn_manifest::update::parse_url(&nb.url).ok_or(format!("bad url {}", nb.url))?;
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let iface = route_iface(&routes, ip).ok_or(format!("no route to {ip}"))?;
    let addr = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .map_err(|e| format!("{iface}: {e}"))?;
    let mac = netboot::mac_name(&addr).ok_or(format!("{iface}: no MAC address"))?;
    let path = format!("{dir}{mac}.toml");
    let url = format!("http://{ip}:{port}{path}");
    say(&format!("fetching {url} ({iface})"));
    let deadline = Instant::now() + Duration::from_secs(nb.timeout_s);
    let mut body = Vec::new();
    loop {
        body.clear();
        match super::http::get(
            SocketAddr::from((ip, port)),
            &path,
            NODE_CONFIG_MAX as u64,
            &mut body,
        ) {
            Ok(_) => break,
            // The server answered: there is none for this node.
            Err(e) if e.contains(" 404") => return Err(format!("{url}: {e}")),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{url}: {e}; gave up after {} s", nb.timeout_s))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
    let text = netboot::verify(&body, &nb.keys, &sys.name, &mac)
        .map_err(|e| format!("{url}: refused: {e}"))?;
    let applied = crate::config::apply(sys, text, Path::new(&url)).map_err(|e| e.to_string())?;
    if applied.net != sys.net {
        return Err(format!(
            "{url}: refused: a node config may not change the network it was fetched over ([[network]], [net])"
        ));
    }
    super::write_atomic(Path::new(NODE_CONFIG_PATH), text.as_bytes())
        .map_err(|e| format!("{NODE_CONFIG_PATH}: {e}"))?;
    Ok(url)
}

/// `cairn-node-config`: the agent's entry point.
pub fn main() -> i32 {
    let Some(sys) = super::system_config("cairn-node-config") else {
        return 1;
    };
    let required = sys.netboot.as_ref().is_some_and(|n| n.required);
    let word = match fetch(&sys) {
        Ok(url) => {
            say(&format!("{url}: signature verified, config checked"));
            "apply"
        }
        Err(e) => {
            say(&e);
            if required {
                say("a node config is required ([netboot] required = true): services are not started");
                return 1;
            }
            say("running the built-in config");
            "builtin"
        }
    };
    match ctl(&format!("node-config {word}")) {
        Ok(_) => 0,
        Err(e) => {
            say(&format!("the init refused it: {e}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_to_the_server() {
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth1\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            route_iface(routes, ip("10.77.0.1")).as_deref(),
            Some("eth1")
        );
        assert_eq!(route_iface(routes, ip("8.8.8.8")).as_deref(), Some("eth0"));
        assert_eq!(route_iface("Iface\n", ip("10.77.0.1")), None);
    }
}

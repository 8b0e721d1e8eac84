//! `cairn netboot`: a directory a boot server serves as it is. After the
//! build (NAME.efi, NAME.vmlinuz, NAME.initrd) it writes
//!
//! - `undionly.kpxe`: Debian's iPXE for BIOS PXE ROMs (package `ipxe`),
//! - `boot.ipxe`: the iPXE script that loads NAME.vmlinuz and NAME.initrd
//!   over HTTP with the image's command line,
//! - `dnsmasq.conf`: full DHCP and TFTP, the boot file chosen by the
//!   client's architecture (DHCP option 93): UEFI HTTP boot (arch 16,
//!   answered with vendor class `HTTPClient` and the UKI's URL), UEFI PXE
//!   (arch 7 and 9: the UKI by TFTP), BIOS (undionly.kpxe by TFTP, then
//!   iPXE, which says so with user class `iPXE`, gets `boot.ipxe`),
//! - `dnsmasq-proxy.conf`: the same as proxy DHCP, next to a DHCP server
//!   the site already runs (PXE only: UEFI HTTP boot needs the site's
//!   server to send the URL, see the README),
//! - `nodes/`: the signed per-node configs (`cairn netboot sign-node`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Debian's iPXE for BIOS PXE ROMs (package `ipxe`).
pub const UNDIONLY: &str = "/usr/lib/ipxe/undionly.kpxe";
/// The iPXE script's name in the directory.
pub const IPXE_SCRIPT: &str = "boot.ipxe";

#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}: no iPXE for BIOS machines there; install Debian's `ipxe` package or pass --ipxe FILE"
    )]
    NoIpxe(PathBuf),
    #[error("--server {0:?}: expected IPV4[:PORT][/PATH], where the nodes reach the directory over HTTP")]
    Server(String),
    #[error("--range {0:?}: expected FIRST,LAST (IPv4 addresses on the server's network)")]
    Range(String),
    #[error("--interface {0:?}: not an interface name")]
    Interface(String),
    #[error("{0}")]
    Manifest(#[from] Box<cairn_manifest::Diagnostic>),
    #[error("{0} has no [netboot] table: it names the keys node configs are signed with")]
    NoNetboot(PathBuf),
    #[error("--mac {0:?}: expected a MAC address like 52:54:00:12:34:56")]
    Mac(String),
    #[error(transparent)]
    Key(#[from] crate::publish::PublishError),
    #[error(
        "{key} is not among the manifest's [netboot] keys: the nodes would refuse this config"
    )]
    Untrusted { key: String },
    #[error("{0}")]
    Config(String),
    #[error(
        "{0}: a node config may not change the network it was fetched over ([[network]], [net])"
    )]
    Network(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetbootError + '_ {
    move |source| NetbootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the boot server's files say besides the image.
#[derive(Debug, Clone)]
pub struct Site {
    /// The HTTP server as the nodes reach it, `IPV4[:PORT]` (also the TFTP
    /// server: dnsmasq on the same address).
    pub server: String,
    /// Where the directory is on it: `""` (the root) or `/PATH`.
    pub path: String,
    /// The interface dnsmasq serves.
    pub interface: String,
    /// First and last address dnsmasq leases (full DHCP).
    pub range: (Ipv4Addr, Ipv4Addr),
}

impl Site {
    /// Checks `server` (`IPV4[:PORT][/PATH]`), `interface` and `range`
    /// (`FIRST,LAST`; default .100 to .199 of the server's /24).
    pub fn parse(server: &str, interface: &str, range: Option<&str>) -> Result<Site, NetbootError> {
        let bad = || NetbootError::Server(server.into());
        let (host, path) = match server.find('/') {
            Some(i) => server.split_at(i),
            None => (server, ""),
        };
        let path = path.trim_end_matches('/');
        let path_ok = path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
        if !path_ok || path.contains("//") || path.split('/').any(|p| p == "..") {
            return Err(bad());
        }
        let ip = server_ip(host).ok_or_else(bad)?;
        if interface.is_empty()
            || interface.len() > 15
            || !interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(NetbootError::Interface(interface.into()));
        }
        let range = match range {
            Some(r) => {
                let bad = || NetbootError::Range(r.into());
                let (a, b) = r.split_once(',').ok_or_else(bad)?;
                (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                )
            }
            None => {
                let o = ip.octets();
                (
                    Ipv4Addr::new(o[0], o[1], o[2], 100),
                    Ipv4Addr::new(o[0], o[1], o[2], 199),
                )
            }
        };
        Ok(Site {
            server: host.into(),
            path: path.into(),
            interface: interface.into(),
            range,
        })
    }

    fn ip(&self) -> Ipv4Addr {
        server_ip(&self.server).expect("checked by Site::parse")
    }

    fn url(&self, file: &str) -> String {
        format!("http://{}{}/{file}", self.server, self.path)
    }
}

/// The address of `IPV4[:PORT]`.
fn server_ip(server: &str) -> Option<Ipv4Addr> {
    let (host, port) = match server.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (server, None),
    };
    if let Some(p) = port {
        p.parse::<u16>().ok().filter(|&p| p != 0)?;
    }
    host.parse().ok()
}

/// The iPXE script: kernel and initramfs over HTTP, with `cmdline`.
pub fn ipxe_script(name: &str, cmdline: &str, site: &Site) -> String {
    format!(
        "#!ipxe\n\
         # cairn appliance `{name}` for BIOS machines (written by cairn netboot)\n\
         echo cairn: booting {name} from {server}\n\
         kernel {kernel} initrd={name}.initrd {cmdline}\n\
         initrd {initrd}\n\
         boot\n",
        server = site.server,
        kernel = site.url(&format!("{name}.vmlinuz")),
        initrd = site.url(&format!("{name}.initrd")),
    )
}

/// The part of both dnsmasq configurations that is the same.
fn dnsmasq_common(site: &Site, dir: &Path) -> String {
    format!(
        "port=0\n\
         interface={iface}\n\
         bind-interfaces\n\
         enable-tftp\n\
         tftp-root={root}\n\
         # iPXE says so in its user class: it gets the script, not iPXE again.\n\
         dhcp-userclass=set:ipxe,iPXE\n",
        iface = site.interface,
        root = dir.display(),
    )
}

/// `dnsmasq.conf`: full DHCP, the boot file by client architecture.
pub fn dnsmasq_conf(name: &str, site: &Site, dir: &Path) -> String {
    let (a, b) = site.range;
    format!(
        "# cairn netboot: appliance `{name}`, DHCP and TFTP on {iface}, HTTP at {server}.\n\
         # Run: dnsmasq --no-daemon --conf-file={dir}/dnsmasq.conf\n\
         # and serve {dir} over HTTP at {url} (any static server).\n\
         # One node's address and hostname: dhcp-host=52:54:00:00:00:01,{ip_example},node1\n\
         {common}\
         dhcp-range={a},{b},12h\n\
         dhcp-option=option:router,{ip}\n\
         # DHCP option 93, client system architecture.\n\
         dhcp-match=set:efi-http,option:client-arch,16\n\
         dhcp-match=set:efi-pxe,option:client-arch,7\n\
         dhcp-match=set:efi-pxe,option:client-arch,9\n\
         dhcp-match=set:bios,option:client-arch,0\n\
         # UEFI HTTP boot: the firmware takes the offer only with vendor class HTTPClient.\n\
         dhcp-option-force=tag:efi-http,option:vendor-class,HTTPClient\n\
         dhcp-boot=tag:!canary,tag:efi-http,{uki_url}\n\
         # UEFI PXE: the UKI by TFTP.\n\
         dhcp-boot=tag:!canary,tag:efi-pxe,{name}.efi\n\
         # BIOS: a PXE ROM chains to iPXE, iPXE runs the script.\n\
         dhcp-boot=tag:bios,tag:!ipxe,undionly.kpxe\n\
         dhcp-boot=tag:!canary,tag:bios,tag:ipxe,{script_url}\n\
         #\n\
         # A new version to some nodes first (canaries, by MAC): build it into\n\
         # {dir}/v2 with `cairn netboot ... --dir {dir}/v2 --server {server}{path}/v2`,\n\
         # uncomment the lines below (one dhcp-mac per canary), restart dnsmasq;\n\
         # the canaries boot V2 at their next boot. Then to all: build V2 here.\n\
         # dhcp-mac=set:canary,52:54:00:00:00:01\n\
         # dhcp-boot=tag:canary,tag:efi-http,{v2_uki_url}\n\
         # dhcp-boot=tag:canary,tag:efi-pxe,v2/{name}.efi\n\
         # dhcp-boot=tag:canary,tag:bios,tag:ipxe,{v2_script_url}\n",
        iface = site.interface,
        server = site.server,
        dir = dir.display(),
        common = dnsmasq_common(site, dir),
        url = site.url(""),
        ip = site.ip(),
        ip_example = a,
        uki_url = site.url(&format!("{name}.efi")),
        script_url = site.url(IPXE_SCRIPT),
        path = site.path,
        v2_uki_url = site.url(&format!("v2/{name}.efi")),
        v2_script_url = site.url(&format!("v2/{IPXE_SCRIPT}")),
    )
}

/// `dnsmasq-proxy.conf`: proxy DHCP next to the site's DHCP server.
pub fn dnsmasq_proxy_conf(name: &str, site: &Site, dir: &Path) -> String {
    format!(
        "# cairn netboot: appliance `{name}`, proxy DHCP and TFTP on {iface} next to\n\
         # the site's DHCP server (which keeps leasing addresses), HTTP at {server}.\n\
         # PXE only: for UEFI HTTP boot the site's DHCP server sends the URL (README).\n\
         # Run: dnsmasq --no-daemon --conf-file={dir}/dnsmasq-proxy.conf\n\
         {common}\
         dhcp-range={ip},proxy\n\
         pxe-prompt=\"cairn {name}\",0\n\
         pxe-service=tag:!ipxe,x86PC,\"cairn {name}: iPXE\",undionly.kpxe\n\
         pxe-service=tag:ipxe,x86PC,\"cairn {name}\",{script_url}\n\
         pxe-service=x86-64_EFI,\"cairn {name}\",{name}.efi\n\
         pxe-service=BC_EFI,\"cairn {name}\",{name}.efi\n",
        iface = site.interface,
        server = site.server,
        dir = dir.display(),
        common = dnsmasq_common(site, dir),
        ip = site.ip(),
        script_url = site.url(IPXE_SCRIPT),
    )
}

/// Writes the boot server's files into `dir` (which holds the build's
/// NAME.efi, NAME.vmlinuz and NAME.initrd); `ipxe` is undionly.kpxe.
/// Returns what was written, one line each.
pub fn write_dir(
    dir: &Path,
    name: &str,
    cmdline: &str,
    site: &Site,
    ipxe: &Path,
) -> Result<String, NetbootError> {
    let dir = std::path::absolute(dir).map_err(io(dir))?;
    let undi = std::fs::read(ipxe).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NetbootError::NoIpxe(ipxe.to_path_buf()),
        _ => io(ipxe)(e),
    })?;
    let nodes = dir.join("nodes");
    std::fs::create_dir_all(&nodes).map_err(io(&nodes))?;
    let files = [
        ("undionly.kpxe", undi),
        (IPXE_SCRIPT, ipxe_script(name, cmdline, site).into_bytes()),
        ("dnsmasq.conf", dnsmasq_conf(name, site, &dir).into_bytes()),
        (
            "dnsmasq-proxy.conf",
            dnsmasq_proxy_conf(name, site, &dir).into_bytes(),
        ),
    ];
    let mut said = String::new();
    for (file, bytes) in files {
        let path = dir.join(file);
        crate::publish::write_atomic(&path, &bytes, 0o644).map_err(io(&path))?;
        said += &format!("{:<22} {} bytes\n", file, bytes.len());
    }
    said += &format!(
        "{dir}: serve it over HTTP at {url} and run\n  \
         dnsmasq --no-daemon --conf-file={dir}/dnsmasq.conf\n\
         (DHCP {a} to {b} and TFTP on {iface}; or dnsmasq-proxy.conf next to the site's DHCP server)\n",
        dir = dir.display(),
        url = site.url(""),
        a = site.range.0,
        b = site.range.1,
        iface = site.interface,
    );
    Ok(said)
}

/// `cairn netboot sign-node`: checks `config` as the node will (the
/// secondary config's schema over the manifest's, the network left
/// alone), signs it for the node with MAC `mac` with `key` and writes it
/// to `DIR/nodes/MAC.toml`. Returns what was written.
pub fn sign_node(
    manifest: &Path,
    config: &Path,
    mac: &str,
    key: &Path,
    dir: &Path,
) -> Result<String, NetbootError> {
    let m = cairn_manifest::Manifest::load(manifest).map_err(Box::new)?;
    let nb = m
        .netboot
        .as_ref()
        .ok_or_else(|| NetbootError::NoNetboot(manifest.to_path_buf()))?;
    let mac_name = cairn_manifest::netboot::mac_name(mac).ok_or(NetbootError::Mac(mac.into()))?;
    let seed = crate::publish::read_seed(key)?;
    let pk = cairn_manifest::release::hex(&cairn_manifest::release::public_key(&seed));
    if !nb.keys.iter().any(|k| k.eq_ignore_ascii_case(&pk)) {
        return Err(NetbootError::Untrusted { key: pk });
    }
    let text = std::fs::read_to_string(config).map_err(io(config))?;
    let primary = m.system_config(Vec::new());
    let applied = cairn_manifest::secondary::parse(&text, config)
        .and_then(|o| o.apply(&primary))
        .map_err(|d| NetbootError::Config(d.to_string()))?;
    if applied.net != primary.net {
        return Err(NetbootError::Network(config.to_path_buf()));
    }
    let signed = cairn_manifest::netboot::sign(&text, &m.name, &mac_name, &seed);
    if signed.len() > cairn_manifest::netboot::NODE_CONFIG_MAX {
        return Err(NetbootError::Config(format!(
            "{}: larger than the {} KiB a node reads",
            config.display(),
            cairn_manifest::netboot::NODE_CONFIG_MAX / 1024
        )));
    }
    let nodes = dir.join("nodes");
    std::fs::create_dir_all(&nodes).map_err(io(&nodes))?;
    let out = nodes.join(format!("{mac_name}.toml"));
    crate::publish::write_atomic(&out, signed.as_bytes(), 0o644).map_err(io(&out))?;
    Ok(format!(
        "{}: node config for {} (appliance `{}`), signed by {pk}\n",
        out.display(),
        mac_name,
        m.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::parse("10.7.0.1:8080", "br0", None).unwrap()
    }

    #[test]
    fn site_arguments_are_checked() {
        let s = site();
        assert_eq!(s.range.0.to_string(), "10.7.0.100");
        assert_eq!(s.url("a.efi"), "http://10.7.0.1:8080/a.efi");
        let v2 = Site::parse("10.7.0.1/fleet/v2/", "br0", None).unwrap();
        assert_eq!(v2.url("a.efi"), "http://10.7.0.1/fleet/v2/a.efi");
        for bad in [
            "host:80",
            "10.0.0.1:0",
            "10.0.0.1:x",
            "",
            "10.0.0.1/../x",
            "10.0.0.1/a b",
        ] {
            assert!(matches!(
                Site::parse(bad, "br0", None),
                Err(NetbootError::Server(_))
            ));
        }
        assert!(matches!(
            Site::parse("10.0.0.1", "br0\nx", None),
            Err(NetbootError::Interface(_))
        ));
        assert!(matches!(
            Site::parse("10.0.0.1", "br0", Some("10.0.0.5")),
            Err(NetbootError::Range(_))
        ));
        let s = Site::parse("10.0.0.1", "eth1", Some("10.0.0.5, 10.0.0.9")).unwrap();
        assert_eq!(s.range.1.to_string(), "10.0.0.9");
    }

    #[test]
    fn the_script_boots_kernel_and_initramfs_over_http() {
        let t = ipxe_script("web", "console=ttyS0", &site());
        assert!(t.starts_with("#!ipxe\n"), "{t}");
        assert!(
            t.contains("kernel http://10.7.0.1:8080/web.vmlinuz initrd=web.initrd console=ttyS0\n")
        );
        assert!(t.contains("initrd http://10.7.0.1:8080/web.initrd\nboot\n"));
    }

    /// Both configurations are accepted by dnsmasq itself.
    #[test]
    fn dnsmasq_accepts_both_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let undi = dir.path().join("undi");
        std::fs::write(&undi, b"x").unwrap();
        write_dir(dir.path(), "web", "console=ttyS0", &site(), &undi).unwrap();
        let full = std::fs::read_to_string(dir.path().join("dnsmasq.conf")).unwrap();
        assert!(full.contains("dhcp-boot=tag:!canary,tag:efi-http,http://10.7.0.1:8080/web.efi\n"));
        assert!(full.contains("dhcp-option-force=tag:efi-http,option:vendor-class,HTTPClient\n"));
        assert!(full.contains("dhcp-boot=tag:!canary,tag:efi-pxe,web.efi\n"));
        assert!(full
            .contains("dhcp-boot=tag:!canary,tag:bios,tag:ipxe,http://10.7.0.1:8080/boot.ipxe\n"));
        assert!(full.contains("# dhcp-boot=tag:canary,tag:efi-pxe,v2/web.efi\n"));
        assert!(dir.path().join("nodes").is_dir());
        let Ok(dnsmasq) = which("dnsmasq") else {
            eprintln!("no dnsmasq here; configurations not checked by it");
            return;
        };
        for conf in ["dnsmasq.conf", "dnsmasq-proxy.conf"] {
            let out = std::process::Command::new(&dnsmasq)
                .arg("--test")
                .arg(format!("--conf-file={}", dir.path().join(conf).display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{conf}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(matches!(
            write_dir(dir.path(), "web", "", &site(), &dir.path().join("none")),
            Err(NetbootError::NoIpxe(_))
        ));
    }

    fn which(name: &str) -> Result<PathBuf, ()> {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .ok_or(())
    }
}

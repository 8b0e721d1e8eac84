//! Networking: loopback (an ioctl, see [`loopback_up`]) and, through
//! [`manager::Net`], every ethernet interface: static configuration,
//! DHCPv4 ([`dhcp`] state machine, [`packet`] wire format), IPv6 SLAAC by
//! the kernel with DNS from router adverts ([`ra`]), `/etc/resolv.conf`
//! ([`resolv`]), SNTP ([`sntp`]), hotplug and the `network-online` target.
//! Links, addresses and routes change through rtnetlink ([`rtnl`]).
//!
//! Everything runs in PID 1's single thread: the event loop watches the
//! manager's sockets ([`manager::Net::fds`]) and its next timer
//! ([`manager::Net::deadline`]) and calls [`manager::Net::process`] when
//! one is ready (see [`crate::machine`]); each socket is read at most 32
//! packets per call and no call blocks except short netlink requests.

#![forbid(unsafe_code)]

pub mod dhcp;
pub mod manager;
pub mod packet;
pub mod ra;
pub mod resolv;
pub mod rtnl;
pub mod sntp;
pub mod sock;

pub use manager::{IfaceStatus, Net, Status};

use std::os::fd::AsFd;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a socket for interface ioctls: {0}")]
    Socket(Errno),
    #[error("interface name {0:?} is too long (at most 15 bytes)")]
    Name(String),
    #[error("{op} on interface {iface} failed: {source}")]
    Ioctl {
        iface: String,
        op: &'static str,
        source: std::io::Error,
    },
}

/// Sets `IFF_UP` on `lo`.
pub fn loopback_up() -> Result<(), NetError> {
    interface_up("lo")
}

/// Sets `IFF_UP` on the interface `name`, keeping its other flags.
pub fn interface_up(name: &str) -> Result<(), NetError> {
    // Interface ioctls work on a socket of any family; fall back to AF_UNIX
    // for kernels built without IPv4.
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)
        .or_else(|_| rustix::net::socket(AddressFamily::UNIX, SocketType::DGRAM, None))
        .map_err(NetError::Socket)?;

    let ifname = sys::net::IfName::new(name).ok_or_else(|| NetError::Name(name.to_owned()))?;
    let failed = |op: &'static str| {
        move |source| NetError::Ioctl {
            iface: name.to_owned(),
            op,
            source,
        }
    };

    let flags = sys::net::interface_flags(sock.as_fd(), &ifname).map_err(failed("SIOCGIFFLAGS"))?;
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    sys::net::set_interface_flags(sock.as_fd(), &ifname, flags | libc::IFF_UP as libc::c_short)
        .map_err(failed("SIOCSIFFLAGS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_name_is_refused() {
        let err = interface_up("a-very-long-interface-name").unwrap_err();
        assert!(matches!(err, NetError::Name(_)), "{err}");
    }

    #[test]
    fn missing_interface_names_it() {
        let err = interface_up("cairnnope0").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("SIOCGIFFLAGS on interface cairnnope0"),
            "{msg}"
        );
    }

    #[test]
    fn loopback_already_up_on_host_is_ok() {
        // On any host running tests, lo is up: the call must see IFF_UP and
        // return without needing privileges.
        loopback_up().unwrap();
    }
}

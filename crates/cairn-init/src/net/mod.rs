//! Networking: loopback (an ioctl, see [`loopback_up`]) and, through
//! [`manager::Net`], every ethernet interface: static configuration,
//! DHCPv4 ([`dhcp`] state machine, [`packet`] wire format), IPv6 SLAAC by
//! the kernel with DNS from router adverts ([`ra`]), `/etc/resolv.conf`
//! ([`resolv`]), SNTP ([`sntp`]), hotplug and the `network-online` target.
//! Links, addresses and routes change through rtnetlink ([`rtnl`]).
//!
//! Everything runs in PID 1's single thread: the manager hands its sockets
//! and its next timer to the main loop's `poll` (see
//! [`crate::signals::set_extra`]) and does its work between supervisor
//! steps; no call blocks except short netlink requests.

pub mod dhcp;
pub mod manager;
pub mod packet;
pub mod ra;
pub mod resolv;
pub mod rtnl;
pub mod sntp;
pub mod sock;

pub use manager::{IfaceStatus, Net, Status};

use std::os::fd::AsRawFd;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketType};

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

    // SAFETY: ifreq is plain old data (a name array and a union of integers
    // and sockaddrs); all zero bytes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() || name.as_bytes().contains(&0) {
        return Err(NetError::Name(name.to_owned()));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }

    let ioctl = |req: &mut libc::ifreq, op: libc::c_ulong, op_name: &'static str| {
        // SAFETY: `sock` is an open socket for the duration of the call and
        // `req` is a valid, NUL-terminated ifreq that the kernel reads and
        // (for SIOCGIFFLAGS) writes in place.
        let rc =
            unsafe { libc::ioctl(sock.as_raw_fd(), op as libc::Ioctl, req as *mut libc::ifreq) };
        if rc < 0 {
            Err(NetError::Ioctl {
                iface: name.to_owned(),
                op: op_name,
                source: std::io::Error::last_os_error(),
            })
        } else {
            Ok(())
        }
    };

    ioctl(&mut req, libc::SIOCGIFFLAGS, "SIOCGIFFLAGS")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(&mut req, libc::SIOCSIFFLAGS, "SIOCSIFFLAGS")
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

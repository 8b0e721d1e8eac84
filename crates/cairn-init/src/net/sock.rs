//! The sockets networking needs beyond netlink, as thin wrappers over the
//! syscalls: a raw `AF_PACKET` socket for DHCP before the interface has an
//! address (with a BPF filter so only UDP to port 68 reaches us), an ARP
//! socket for the address probe, a UDP socket for unicast renewals, an
//! ICMPv6 socket for router adverts and a UDP socket for SNTP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{RecvFlags, SendFlags};

use crate::sys::net as sys_net;

#[derive(Debug, thiserror::Error)]
pub enum SockError {
    #[error("{what} on interface #{index}: {source}")]
    Sys {
        what: &'static str,
        index: u32,
        source: std::io::Error,
    },
}

fn sys(what: &'static str, index: u32) -> impl Fn(std::io::Error) -> SockError {
    move |source| SockError::Sys {
        what,
        index,
        source,
    }
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// The most packets the manager reads from one socket per call
/// (`Net::process`): a flood gets this share of a loop turn; the rest
/// waits in the socket, which stays readable, so the loop calls again at
/// once after serving its other sources.
pub const PACKETS_PER_CALL: usize = 32;
/// The most stale packets [`DhcpSocket::open`] throws away.
const OPEN_DRAIN: usize = 256;

fn socket(domain: i32, ty: i32, proto: i32) -> std::io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};
    Ok(rustix::net::socket_with(
        AddressFamily::from_raw(domain as _),
        SocketType::from_raw(ty as _),
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        std::num::NonZeroU32::new(proto as u32).map(Protocol::from_raw),
    )?)
}

fn packet_socket(index: u32, proto: u16, what: &'static str) -> Result<OwnedFd, SockError> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto.to_be()))
        .map_err(sys(what, index))?;
    sys_net::bind_link(fd.as_fd(), index, proto).map_err(sys(what, index))?;
    Ok(fd)
}

/// Reads one datagram; `None` when nothing is pending.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    loop {
        match rustix::net::recv(fd, &mut *buf, RecvFlags::empty()) {
            Ok((n, _)) => return Some(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
}

fn send_ll(fd: &OwnedFd, index: u32, proto: u16, data: &[u8]) -> std::io::Result<()> {
    sys_net::send_link(fd.as_fd(), index, proto, &BROADCAST_MAC, data)
}

/// Classic BPF for a cooked (SOCK_DGRAM) packet socket: accept IPv4 UDP,
/// unfragmented, to port 68.
fn dhcp_filter() -> [libc::sock_filter; 9] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_B_ABS: u16 = 0x30;
    const LD_H_ABS: u16 = 0x28;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const LDX_MSH: u16 = 0xb1;
    const LD_H_IND: u16 = 0x48;
    const RET_K: u16 = 0x06;
    [
        op(LD_B_ABS, 0, 0, 9),        // protocol
        op(JEQ_K, 0, 6, 17),          // UDP?
        op(LD_H_ABS, 0, 0, 6),        // flags + fragment offset
        op(JSET_K, 4, 0, 0x1fff),     // a fragment: drop
        op(LDX_MSH, 0, 0, 0),         // x = header length
        op(LD_H_IND, 0, 0, 2),        // UDP destination port
        op(JEQ_K, 0, 1, 68),          // port 68?
        op(RET_K, 0, 0, 0x0004_0000), // accept
        op(RET_K, 0, 0, 0),           // drop
    ]
}

/// DHCP over a raw packet socket.
pub struct DhcpSocket {
    fd: OwnedFd,
    index: u32,
}

impl DhcpSocket {
    pub fn open(index: u32) -> Result<DhcpSocket, SockError> {
        let fd = packet_socket(index, ETH_P_IP, "DHCP packet socket")?;
        sys_net::attach_filter(fd.as_fd(), &dhcp_filter())
            .map_err(sys("attaching the DHCP BPF filter", index))?;
        // Whatever arrived before the filter was attached is dropped (a
        // bounded number: under a flood the queue may never run dry; what
        // is left is read, and dropped, as any other packet).
        let mut buf = [0u8; 2048];
        for _ in 0..OPEN_DRAIN {
            if recv(&fd, &mut buf).is_none() {
                break;
            }
        }
        Ok(DhcpSocket { fd, index })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The next IPv4 packet (header included), if any.
    pub fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        let n = recv(&self.fd, &mut buf)?;
        buf.truncate(n);
        Some(buf)
    }

    /// Broadcasts an IPv4 packet on the link.
    pub fn send_broadcast(&self, ip_packet: &[u8]) -> Result<(), SockError> {
        send_ll(&self.fd, self.index, ETH_P_IP, ip_packet)
            .map_err(sys("sending a DHCP broadcast", self.index))
    }
}

#[cfg(test)]
impl DhcpSocket {
    /// A socket that reads, as if from the link, the datagrams sent to the
    /// returned address (a UDP socket on the loopback): for tests of how
    /// the manager reads.
    pub(crate) fn loopback() -> (DhcpSocket, SocketAddr) {
        let s = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        s.set_nonblocking(true).unwrap();
        let to = s.local_addr().unwrap();
        (
            DhcpSocket {
                fd: OwnedFd::from(s),
                index: 0,
            },
            to,
        )
    }
}

/// Sends one UDP datagram from `src:68` (an address we hold) to `dst:67`.
pub fn send_unicast(
    index: u32,
    ifname: &str,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> Result<(), SockError> {
    let what = "sending a DHCP unicast";
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(sys(what, index))?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)
        .map_err(|e| sys(what, index)(e.into()))?;
    sys_net::bind_to_device(fd.as_fd(), ifname).map_err(sys(what, index))?;
    let sock = std::net::UdpSocket::from(fd);
    // Binding to a fixed port needs no privilege beyond what PID 1 has.
    let bound = socket2_bind(&sock, SocketAddr::new(IpAddr::V4(src), 68));
    bound.map_err(sys(what, index))?;
    sock.send_to(payload, SocketAddr::new(IpAddr::V4(dst), 67))
        .map(drop)
        .map_err(sys(what, index))
}

fn socket2_bind(sock: &std::net::UdpSocket, addr: SocketAddr) -> std::io::Result<()> {
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    Ok(rustix::net::bind(sock, &v4)?)
}

/// ARP probing (RFC 5227) for one candidate address.
pub struct ArpProbe {
    fd: OwnedFd,
    mac: [u8; 6],
    pub addr: Ipv4Addr,
}

impl ArpProbe {
    /// Opens the socket and sends the first probe.
    pub fn start(index: u32, mac: [u8; 6], addr: Ipv4Addr) -> Result<ArpProbe, SockError> {
        let fd = packet_socket(index, ETH_P_ARP, "ARP socket")?;
        let p = ArpProbe { fd, mac, addr };
        let mut pkt = vec![0, 1, 8, 0, 6, 4, 0, 1];
        pkt.extend_from_slice(&mac);
        pkt.extend_from_slice(&[0, 0, 0, 0]);
        pkt.extend_from_slice(&[0; 6]);
        pkt.extend_from_slice(&addr.octets());
        send_ll(&p.fd, index, ETH_P_ARP, &pkt).map_err(sys("sending an ARP probe", index))?;
        Ok(p)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether a pending ARP packet shows another host with the address.
    /// Reads at most [`PACKETS_PER_CALL`] packets; the rest wait for the
    /// next call (the socket stays readable).
    pub fn conflict(&self) -> bool {
        let mut buf = [0u8; 256];
        let mut seen = false;
        for _ in 0..PACKETS_PER_CALL {
            let Some(n) = recv(&self.fd, &mut buf) else {
                break;
            };
            seen |= arp_conflict(&buf[..n], &self.mac, self.addr);
        }
        seen
    }
}

/// An ARP packet that claims `addr` for another MAC (a reply or request
/// from it, or another host probing for it at the same time).
pub fn arp_conflict(p: &[u8], mac: &[u8; 6], addr: Ipv4Addr) -> bool {
    if p.len() < 28 || p[0..6] != [0, 1, 8, 0, 6, 4] {
        return false;
    }
    let sha = &p[8..14];
    let spa = &p[14..18];
    let tpa = &p[24..28];
    if sha == mac {
        return false;
    }
    spa == addr.octets() || (spa == [0, 0, 0, 0] && tpa == addr.octets())
}

/// An ICMPv6 socket on one interface that receives router adverts.
pub struct RaSocket {
    fd: OwnedFd,
    index: u32,
}

impl RaSocket {
    pub fn open(index: u32, ifname: &str) -> Result<RaSocket, SockError> {
        let what = "ICMPv6 socket";
        let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)
            .map_err(sys(what, index))?;
        // ICMP6_FILTER: a set bit blocks that type; pass only adverts.
        let mut filter = [u32::MAX; 8];
        let t = u32::from(super::ra::ROUTER_ADVERT);
        filter[(t >> 5) as usize] &= !(1 << (t & 31));
        sys_net::set_icmp6_filter(fd.as_fd(), &filter).map_err(sys(what, index))?;
        sys_net::bind_to_device(fd.as_fd(), ifname).map_err(sys(what, index))?;
        rustix::net::sockopt::set_ipv6_multicast_hops(&fd, 255)
            .map_err(|e| sys(what, index)(e.into()))?;
        Ok(RaSocket { fd, index })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sends a router solicitation to all routers (ff02::2).
    pub fn solicit(&self, mac: &[u8; 6]) -> Result<(), SockError> {
        let pkt = super::ra::solicitation(mac);
        let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
        let to = std::net::SocketAddrV6::new(all_routers, 0, 0, self.index);
        rustix::net::sendto(&self.fd, &pkt, SendFlags::empty(), &to)
            .map_err(|e| sys("sending a router solicitation", self.index)(e.into()))?;
        Ok(())
    }

    /// The next advert and its source address, if any.
    pub fn recv(&self) -> Option<(Vec<u8>, Ipv6Addr)> {
        let mut buf = vec![0u8; 2048];
        let (n, _, from) =
            rustix::net::recvfrom(&self.fd, &mut buf[..], RecvFlags::empty()).ok()?;
        let from = from.and_then(|a| std::net::SocketAddrV6::try_from(a).ok());
        buf.truncate(n);
        Some((buf, from.map_or(Ipv6Addr::UNSPECIFIED, |a| *a.ip())))
    }
}

/// A UDP socket for SNTP: IPv6 and IPv4 (dual stack), or IPv4 only when
/// the kernel has no IPv6. Answers from IPv4 servers come back as
/// IPv4-mapped addresses (`::ffff:a.b.c.d`; `IpAddr::to_canonical` turns
/// them back into IPv4).
pub fn udp_socket() -> std::io::Result<std::net::UdpSocket> {
    use rustix::net::{bind, socket_with, sockopt, AddressFamily, SocketFlags, SocketType};
    let dual = || -> rustix::io::Result<OwnedFd> {
        let fd = socket_with(
            AddressFamily::INET6,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        sockopt::set_ipv6_v6only(&fd, false)?;
        bind(&fd, &SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?;
        Ok(fd)
    };
    if let Ok(fd) = dual() {
        return Ok(std::net::UdpSocket::from(fd));
    }
    // A SocketAddr, not a "0.0.0.0:0" string: the string form links
    // getaddrinfo (and with it NSS and dlopen) into the static init.
    let s = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sntp_socket_reaches_ipv4_and_ipv6_peers() {
        let sock = udp_socket().unwrap();
        for peer in [
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        ] {
            let server = std::net::UdpSocket::bind(peer).unwrap();
            let to = server.local_addr().unwrap();
            sock.send_to(b"ping", to).unwrap();
            let mut buf = [0u8; 8];
            let (n, back) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"ping");
            server.send_to(b"pong", back).unwrap();
            let from = loop {
                match sock.recv_from(&mut buf) {
                    Ok((_, from)) => break from,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            // The answer's source compares equal to the server asked.
            assert_eq!(SocketAddr::new(from.ip().to_canonical(), from.port()), to);
        }
    }

    #[test]
    fn arp_conflicts() {
        let me = [2, 0, 0, 0, 0, 1];
        let them = [2, 0, 0, 0, 0, 2];
        let addr = Ipv4Addr::new(10, 0, 0, 5);
        let pkt = |sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]| {
            let mut p = vec![0, 1, 8, 0, 6, 4, 0, 2];
            p.extend_from_slice(&sha);
            p.extend_from_slice(&spa);
            p.extend_from_slice(&[0; 6]);
            p.extend_from_slice(&tpa);
            p
        };
        assert!(arp_conflict(&pkt(them, [10, 0, 0, 5], [0; 4]), &me, addr));
        assert!(arp_conflict(&pkt(them, [0; 4], [10, 0, 0, 5]), &me, addr));
        assert!(!arp_conflict(&pkt(me, [10, 0, 0, 5], [0; 4]), &me, addr));
        assert!(!arp_conflict(
            &pkt(them, [10, 0, 0, 6], [10, 0, 0, 7]),
            &me,
            addr
        ));
        assert!(!arp_conflict(&[0; 10], &me, addr));
    }

    /// A flood on the ARP socket: one call reads at most
    /// PACKETS_PER_CALL packets; the rest wait (the socket stays readable)
    /// and the next call finds the conflict among them.
    #[test]
    fn arp_reads_are_bounded_per_call() {
        let (dhcp, to) = DhcpSocket::loopback();
        let mac = [2, 0, 0, 0, 0, 1];
        let addr = Ipv4Addr::new(10, 0, 0, 5);
        let probe = ArpProbe {
            fd: dhcp.fd,
            mac,
            addr,
        };
        let arp = |sha: [u8; 6], spa: [u8; 4]| {
            let mut p = vec![0, 1, 8, 0, 6, 4, 0, 2];
            p.extend_from_slice(&sha);
            p.extend_from_slice(&spa);
            p.extend_from_slice(&[0; 6]);
            p.extend_from_slice(&[10, 0, 0, 9]);
            p
        };
        let peer = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        for n in 0..40u8 {
            let p = if n == PACKETS_PER_CALL as u8 + 3 {
                arp([2, 0, 0, 0, 0, 2], addr.octets())
            } else {
                arp([2, 0, 0, 0, 0, n], [10, 0, 1, n])
            };
            peer.send_to(&p, to).unwrap();
        }
        assert!(!probe.conflict(), "the conflict is past the first share");
        let mut fds = [rustix::event::PollFd::new(
            &probe.fd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 1);
        assert!(probe.conflict());
        assert!(!probe.conflict(), "nothing left");
    }

    #[test]
    fn filter_is_well_formed() {
        let f = dhcp_filter();
        // Every jump lands inside the program.
        for (i, ins) in f.iter().enumerate() {
            assert!(i + 1 + (ins.jt as usize) < f.len() || ins.code == 0x06);
            assert!(i + 1 + (ins.jf as usize) < f.len() || ins.code == 0x06);
        }
    }
}

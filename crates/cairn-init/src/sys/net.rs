//! Socket calls rustix has no safe wrapper for: interface flags
//! (`SIOCGIFFLAGS` / `SIOCSIFFLAGS`), link-layer (`sockaddr_ll`) addresses,
//! classic BPF and ICMPv6 filters, and `SO_BINDTODEVICE`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::check;

/// An interface name as the interface ioctls take it: at most 15 bytes,
/// no NUL, NUL-padded to `IFNAMSIZ`.
pub struct IfName([libc::c_char; libc::IFNAMSIZ]);

impl IfName {
    /// `None` when `name` is too long or holds a NUL byte.
    pub fn new(name: &str) -> Option<IfName> {
        let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
        if name.len() >= buf.len() || name.as_bytes().contains(&0) {
            return None;
        }
        for (dst, src) in buf.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        Some(IfName(buf))
    }

    fn request(&self) -> libc::ifreq {
        // SAFETY: ifreq is plain old data (a name array and a union of
        // integers and sockaddrs); all zero bytes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name = self.0;
        req
    }
}

/// `ioctl(sock, op, req)` for an interface request.
fn ifreq_ioctl(sock: BorrowedFd<'_>, op: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `sock` is open for the duration of the call and `req` is a
    // valid ifreq with a NUL-terminated name that the kernel reads and (for
    // the SIOCG* requests) writes in place; `op` is one of the interface
    // requests of this module, whose argument is a `struct ifreq *`.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), op as libc::Ioctl, req as *mut libc::ifreq) })
}

/// `SIOCGIFFLAGS`: the interface's `IFF_*` flags, through any socket.
pub fn interface_flags(sock: BorrowedFd<'_>, name: &IfName) -> io::Result<libc::c_short> {
    let mut req = name.request();
    ifreq_ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union (and the
    // zeroed union is a valid c_short in any case).
    Ok(unsafe { req.ifr_ifru.ifru_flags })
}

/// `SIOCSIFFLAGS`: sets the interface's `IFF_*` flags to `flags`.
pub fn set_interface_flags(
    sock: BorrowedFd<'_>,
    name: &IfName,
    flags: libc::c_short,
) -> io::Result<()> {
    let mut req = name.request();
    req.ifr_ifru.ifru_flags = flags;
    ifreq_ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

/// `setsockopt(fd, level, name, val)` with `val` passed by pointer and size.
/// Private: each option has a typed wrapper below.
fn setsockopt<T>(fd: BorrowedFd<'_>, level: i32, name: i32, val: &T) -> io::Result<()> {
    // SAFETY: `val` points at a live T of the size passed; setsockopt only
    // reads it (and whatever it points to, for the duration of the call).
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// `SO_ATTACH_FILTER`: a classic BPF program the kernel copies in.
pub fn attach_filter(fd: BorrowedFd<'_>, filter: &[libc::sock_filter]) -> io::Result<()> {
    let len =
        u16::try_from(filter.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads the program; the cast to *mut is the C API.
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// `ICMP6_FILTER` on a raw ICMPv6 socket: a set bit blocks that type.
pub fn set_icmp6_filter(fd: BorrowedFd<'_>, blocked: &[u32; 8]) -> io::Result<()> {
    const ICMP6_FILTER: i32 = 1;
    setsockopt(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, blocked)
}

/// `SO_BINDTODEVICE`: the socket only sees traffic of interface `name`.
pub fn bind_to_device(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    // SAFETY: the name buffer is valid for reads of its length, which is
    // what is passed (the kernel does not need a NUL).
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr() as *const libc::c_void,
            name.len() as libc::socklen_t,
        )
    })
}

/// The `sockaddr_ll` of interface `index`, protocol `proto` (host order)
/// and hardware address `dest`.
fn link_addr(index: u32, proto: u16, dest: &[u8; 6]) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(dest);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: proto.to_be(),
        sll_ifindex: index as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

const LINK_ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_ll>() as _;

/// Binds an `AF_PACKET` socket to interface `index` and protocol `proto`.
pub fn bind_link(fd: BorrowedFd<'_>, index: u32, proto: u16) -> io::Result<()> {
    let sa = link_addr(index, proto, &[0; 6]);
    // SAFETY: `sa` is a valid sockaddr_ll of the size passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            LINK_ADDR_LEN,
        )
    })
}

/// Sends `data` from an `AF_PACKET` socket to hardware address `dest` on
/// interface `index`, as protocol `proto`.
pub fn send_link(
    fd: BorrowedFd<'_>,
    index: u32,
    proto: u16,
    dest: &[u8; 6],
    data: &[u8],
) -> io::Result<()> {
    let sa = link_addr(index, proto, dest);
    // SAFETY: `data` and `sa` are valid for reads of the lengths passed.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr() as *const libc::c_void,
            data.len(),
            0,
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            LINK_ADDR_LEN,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

//! The gallery: appliances people deploy, booted as they are.
//! `examples/dns`: dnsmasq from Debian as a DNS server and forwarder on
//! QEMU's user network, queried from the host through a forwarded UDP
//! port; `examples/ntp`: chronyd from Debian as an NTP server, asked for
//! the time the same way.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use cairn_e2e::example;
use cairn_e2e::net::{free_port, scratch, Guest};

/// A DNS query for `name`, type A, class IN (RFC 1035 4.1).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

/// The IPv4 addresses of the A records in answer `r` to a query of
/// `qlen` bytes (answers follow the echoed question; names compressed).
fn a_records(r: &[u8], qlen: usize) -> Vec<[u8; 4]> {
    let count = u16::from_be_bytes([r[6], r[7]]);
    let mut at = qlen;
    let mut out = Vec::new();
    for _ in 0..count {
        // Name: a pointer (2 bytes) or labels.
        while r[at] != 0 && r[at] & 0xc0 != 0xc0 {
            at += 1 + r[at] as usize;
        }
        at += if r[at] == 0 { 1 } else { 2 };
        let ty = u16::from_be_bytes([r[at], r[at + 1]]);
        let len = u16::from_be_bytes([r[at + 8], r[at + 9]]) as usize;
        at += 10;
        if ty == 1 && len == 4 {
            out.push([r[at], r[at + 1], r[at + 2], r[at + 3]]);
        }
        at += len;
    }
    out
}

#[test]
fn dns_forwarder_answers_through_a_forwarded_port() {
    let (g, port) = boot_with_udp_port("dns", 53);
    // dnsmasq took the DHCP server's resolver as its upstream.
    g.wait("using nameserver 10.0.2.3#53", 240);
    let q = query(0x4242, "appliance.test");
    let answer = ask(&g, port, &q);
    assert_eq!(&answer[..2], &[0x42, 0x42], "{answer:?}");
    assert_eq!(answer[3] & 0x0f, 0, "rcode: {answer:?}");
    assert_eq!(a_records(&answer, q.len()), vec![[192, 0, 2, 7]]);
    g.wait("query[A] appliance.test from", 30);
}

/// Boots example `name` on QEMU's user network with host UDP port ->
/// guest port `guest_port`; returns the guest and the host port.
fn boot_with_udp_port(name: &str, guest_port: u16) -> (Guest, u16) {
    let port = free_port();
    let out = scratch(&format!("gallery-{name}"));
    let g = Guest::start(
        &[],
        example(name).to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "-netdev".into(),
            format!("user,id=n0,ipv6=off,hostfwd=udp:127.0.0.1:{port}-:{guest_port}"),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ],
    );
    (g, port)
}

/// Sends `request` to the forwarded port until an answer comes (the guest
/// may still be starting its server).
fn ask(g: &Guest, port: u16, request: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        sock.send_to(request, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return buf[..n].to_vec();
        }
        assert!(Instant::now() < end, "no answer:\n{}", g.text());
    }
}

#[test]
fn ntp_server_answers_through_a_forwarded_port() {
    let (g, port) = boot_with_udp_port("ntp", 123);
    g.wait("service chronyd started", 240);
    // An SNTP client request (RFC 4330): LI 0, version 4, mode 3 (client),
    // with a transmit timestamp the server echoes as the originate one.
    let mut req = [0u8; 48];
    req[0] = 0x23;
    req[40..48].copy_from_slice(&[0xe9, 1, 2, 3, 4, 5, 6, 7]);
    let r = ask(&g, port, &req);
    assert_eq!(r.len(), 48, "{r:?}");
    assert_eq!(r[0] & 0x07, 4, "not a server reply: {r:?}");
    assert_eq!(r[1], 10, "stratum (local stratum 10): {r:?}\n{}", g.text());
    assert_eq!(&r[24..32], &req[40..48], "originate timestamp: {r:?}");
    // The transmit timestamp is a time after 2020 (NTP era 0 seconds).
    let secs = u32::from_be_bytes([r[40], r[41], r[42], r[43]]);
    assert!(secs > 3_786_825_600, "transmit time {secs}:\n{}", g.text());
}

#[test]
fn dns_query_codec() {
    let q = query(1, "a.bc");
    assert_eq!(q.len(), 12 + 6 + 4);
    // An answer: the question echoed, one A record with a name pointer.
    let mut r = q.clone();
    r[7] = 1;
    r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9]);
    assert_eq!(a_records(&r, q.len()), vec![[10, 0, 0, 9]]);
}

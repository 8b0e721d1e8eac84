//! The gallery: appliances people deploy, booted as they are.
//! `examples/dns`: dnsmasq from Debian as a DNS server and forwarder on
//! QEMU's user network, queried from the host through a forwarded UDP
//! port.

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
    let port = free_port();
    let out = scratch("gallery-dns");
    let g = Guest::start(
        &[],
        example("dns").to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "-netdev".into(),
            format!("user,id=n0,ipv6=off,hostfwd=udp:127.0.0.1:{port}-:53"),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ],
    );
    // dnsmasq took the DHCP server's resolver as its upstream.
    g.wait("using nameserver 10.0.2.3#53", 240);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = query(0x4242, "appliance.test");
    let end = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        sock.send_to(&q, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            break buf[..n].to_vec();
        }
        assert!(Instant::now() < end, "no DNS answer:\n{}", g.text());
    };
    assert_eq!(&answer[..2], &[0x42, 0x42], "{answer:?}");
    assert_eq!(answer[3] & 0x0f, 0, "rcode: {answer:?}");
    assert_eq!(a_records(&answer, q.len()), vec![[192, 0, 2, 7]]);
    g.wait("query[A] appliance.test from", 30);
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

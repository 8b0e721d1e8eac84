//! A minimal HTTP/1.1 GET for the update agent (a helper process, so
//! plain blocking sockets with timeouts): `Connection: close`, a
//! `Content-Length` or read-to-close body, nothing else (no redirects, no
//! chunked encoding, no TLS: integrity comes from the signatures).

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const HEADER_MAX: usize = 16 * 1024;

/// GETs `path` from `addr`, writing at most `max` body bytes to `sink`;
/// returns the body length.
pub fn get(addr: SocketAddr, path: &str, max: u64, sink: &mut dyn Write) -> Result<u64, String> {
    fetch(addr, &addr.to_string(), path, max, sink)
}

/// [`get`] from `host` (an IPv4 address or a name, resolved through
/// [`super::dns`] at each call) on `port`; the request's `Host:` is the
/// name, so name-based virtual hosts work.
pub fn get_from(
    host: &str,
    port: u16,
    path: &str,
    max: u64,
    sink: &mut dyn Write,
) -> Result<u64, String> {
    let addr = super::dns::resolve(host, port)?;
    let header = if port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    };
    fetch(addr, &header, path, max, sink)
}

fn fetch(
    addr: SocketAddr,
    host: &str,
    path: &str,
    max: u64,
    sink: &mut dyn Write,
) -> Result<u64, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cairn-update\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    read_response(&mut s, &addr.to_string(), path, max, sink)
}

/// Reads the response to `GET path` from `r` (the server `from`): the
/// status must be 200; at most `max` body bytes go to `sink`, and exactly
/// `Content-Length` of them when the server gives one. Returns the body
/// length.
pub fn read_response(
    r: &mut dyn Read,
    from: &str,
    path: &str,
    max: u64,
    sink: &mut dyn Write,
) -> Result<u64, String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let body_start;
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| format!("read from {from}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "{from} closed the connection before the headers ended"
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            body_start = i + 4;
            break;
        }
        if head.len() > HEADER_MAX {
            return Err(format!("{from}: response headers longer than 16 KiB"));
        }
    }
    let text = String::from_utf8_lossy(&head[..body_start]).into_owned();
    let status = text.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(format!("GET {path}: {}", status.trim()));
    }
    let mut length = None;
    for l in text.lines().skip(1) {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                // Digits only, and one value however often it is sent
                // (RFC 9110 8.6): anything else is a framing attack.
                let v = v.trim_matches([' ', '\t']);
                let n = v
                    .parse::<u64>()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("GET {path}: bad Content-Length {v:?}"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(format!("GET {path}: two different Content-Length values"));
                }
                length = Some(n);
            } else if k == "transfer-encoding" && !v.trim().eq_ignore_ascii_case("identity") {
                return Err(format!(
                    "GET {path}: transfer-encoding {} not supported",
                    v.trim()
                ));
            }
        }
    }
    if length.is_some_and(|l| l > max) {
        return Err(format!(
            "GET {path}: {} bytes, more than the {max} expected",
            length.unwrap_or(0)
        ));
    }
    let mut got = 0u64;
    let mut put = |b: &[u8], got: &mut u64| -> Result<(), String> {
        *got += b.len() as u64;
        if *got > max {
            return Err(format!(
                "GET {path}: body longer than the {max} bytes expected"
            ));
        }
        sink.write_all(b).map_err(|e| format!("write: {e}"))
    };
    put(&head[body_start..], &mut got)?;
    loop {
        if length.is_some_and(|l| got >= l) {
            break;
        }
        let n = r
            .read(&mut buf)
            .map_err(|e| format!("read from {from}: {e}"))?;
        if n == 0 {
            break;
        }
        put(&buf[..n], &mut got)?;
    }
    if let Some(l) = length {
        if got != l {
            return Err(format!("GET {path}: got {got} of {l} bytes"));
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `reply` once on a local port; returns the address.
    fn server(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(reply);
        });
        addr
    }

    #[test]
    fn responses() {
        let mut body = Vec::new();
        let a = server(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(get(a, "/x", 10, &mut body), Ok(5));
        assert_eq!(body, b"hello");
        // Without a length: to the close.
        let a = server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
        assert_eq!(get(a, "/x", 10, &mut Vec::new()), Ok(3));
        let a = server(b"HTTP/1.0 404 File not found\r\n\r\n");
        assert_eq!(
            get(a, "/m.json", 10, &mut Vec::new()),
            Err("GET /m.json: HTTP/1.0 404 File not found".into())
        );
        let a = server(b"HTTP/1.0 200 OK\r\nContent-Length: 50\r\n\r\n");
        let e = get(a, "/x", 10, &mut Vec::new()).unwrap_err();
        assert!(e.contains("more than the 10"), "{e}");
        let a = server(b"HTTP/1.0 200 OK\r\n\r\n0123456789ABC");
        let e = get(a, "/x", 10, &mut Vec::new()).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let a = server(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nabc");
        assert_eq!(
            get(a, "/x", 10, &mut Vec::new()),
            Err("GET /x: got 3 of 9 bytes".into())
        );
        let a =
            server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        let e = get(a, "/x", 10, &mut Vec::new()).unwrap_err();
        assert!(e.contains("chunked"), "{e}");
        // Found by the update fuzz target: a bad or a second, different
        // Content-Length is refused, not ignored.
        for head in [
            "Content-Length: 3\x0c",
            "Content-Length: +3",
            "Content-Length: 3\r\nContent-Length: x",
            "Content-Length: 3\r\nContent-Length: 4",
        ] {
            let r = format!("HTTP/1.0 200 OK\r\n{head}\r\n\r\nabc").into_bytes();
            let e = read_response(&mut &r[..], "t", "/x", 10, &mut Vec::new()).unwrap_err();
            assert!(e.contains("Content-Length"), "{head:?}: {e}");
        }
    }
}

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
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cairn-update\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let body_start;
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "{addr} closed the connection before the headers ended"
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            body_start = i + 4;
            break;
        }
        if head.len() > HEADER_MAX {
            return Err(format!("{addr}: response headers longer than 16 KiB"));
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
                length = v.trim().parse::<u64>().ok();
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
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read from {addr}: {e}"))?;
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

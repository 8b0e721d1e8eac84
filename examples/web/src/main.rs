//! `hello-web [--port N] [--file PATH]`: answers every HTTP request with the
//! contents of one file (read once at start). Single-threaded, std only, so
//! the static binary stays small; the service of examples/web and of the
//! benchmark appliance.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The largest request head we read before answering anyway.
const MAX_HEAD: usize = 8192;

fn main() {
    let mut port = 80u16;
    let mut body = b"hello from cairn\n".to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next();
        let parsed = match (a.as_str(), value) {
            ("--port", Some(v)) => v.parse().map(|p| port = p).map_err(|e| e.to_string()),
            ("--file", Some(v)) => std::fs::read(&v)
                .map(|b| body = b)
                .map_err(|e| format!("{v}: {e}")),
            (other, _) => Err(format!("unknown or incomplete option {other}")),
        };
        if let Err(e) = parsed {
            eprintln!("hello-web: {e}\nusage: hello-web [--port N] [--file PATH]");
            std::process::exit(2);
        }
    }
    let listener =
        match TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port))) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hello-web: cannot listen on port {port}: {e}");
                std::process::exit(1);
            }
        };
    println!("hello-web: listening on port {port}");
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                if let Err(e) = serve(s, &body) {
                    eprintln!("hello-web: {e}");
                }
            }
            Err(e) => eprintln!("hello-web: accept: {e}"),
        }
    }
}

/// Reads the request head (up to a blank line) and answers with `body`.
fn serve(mut s: TcpStream, body: &[u8]) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head_complete(&head) && head.len() < MAX_HEAD {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    s.write_all(&response(&head, body))
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// `200` with `body` for GET, the same headers without a body for HEAD,
/// `405` for anything else.
fn response(head: &[u8], body: &[u8]) -> Vec<u8> {
    let method = head.split(|&b| b == b' ').next().unwrap_or_default();
    let (status, send_body) = match method {
        b"GET" => ("200 OK", true),
        b"HEAD" => ("200 OK", false),
        _ => ("405 Method Not Allowed", false),
    };
    let len = if status.starts_with("200") {
        body.len()
    } else {
        0
    };
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/html\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_head_and_refuses_others() {
        let get = String::from_utf8(response(b"GET / HTTP/1.1\r\n\r\n", b"hi")).unwrap();
        assert!(get.starts_with("HTTP/1.0 200 OK\r\n"), "{get}");
        assert!(
            get.contains("Content-Length: 2\r\n") && get.ends_with("\r\n\r\nhi"),
            "{get}"
        );
        let head = String::from_utf8(response(b"HEAD / HTTP/1.1\r\n\r\n", b"hi")).unwrap();
        assert!(
            head.contains("Content-Length: 2\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let post = String::from_utf8(response(b"POST / HTTP/1.1\r\n\r\n", b"hi")).unwrap();
        assert!(post.starts_with("HTTP/1.0 405"), "{post}");
        assert!(post.ends_with("\r\n\r\n"), "{post}");
    }

    #[test]
    fn head_ends_at_a_blank_line() {
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET /\n\n"));
    }

    #[test]
    fn serves_over_a_real_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            serve(s, b"page").unwrap();
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        t.join().unwrap();
        assert!(
            got.starts_with("HTTP/1.0 200 OK") && got.ends_with("page"),
            "{got}"
        );
    }
}

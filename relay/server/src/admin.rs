//! The admin listener: `GET /metrics` (Prometheus text) and `GET /healthz`, on its own
//! thread with blocking sockets — it is not on the serving path, and a scrape a few times a
//! minute does not need a ring.

use crate::metrics::Metrics;
use relay_proto::{Limits, Parsed, ResponseHead, parse_request};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// Serves admin requests until the process exits. One connection at a time, each bounded
/// by a 2 s read/write timeout and an 8 KiB head.
pub fn spawn(listener: TcpListener, metrics: Metrics) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("relay-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => handle(s, &metrics),
                    Err(e) => log::warn!("admin accept: {e}"),
                }
            }
        })
        .map(|_| ())
}

fn handle(mut s: TcpStream, metrics: &Metrics) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8192];
    let mut len = 0;
    let limits = Limits {
        max_head_bytes: buf.len(),
        ..Limits::DEFAULT
    };
    let date = relay_proto::DateCache::new(SystemTime::now());
    let mut out = Vec::with_capacity(4096);
    let (status, body, ctype): (u16, String, &str) = loop {
        let n = match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        len += n;
        match parse_request(&buf[..len], &limits) {
            Ok(Parsed::Partial) if len < buf.len() => continue,
            Ok(Parsed::Partial) => {
                relay_proto::error_response(431, date.get(), &mut out);
                let _ = s.write_all(&out);
                return;
            }
            Err(e) => {
                relay_proto::error_response(e.status(), date.get(), &mut out);
                let _ = s.write_all(&out);
                return;
            }
            Ok(Parsed::Complete { request, .. }) => {
                break match request.path {
                    "/metrics" => {
                        let mut text = String::with_capacity(8192);
                        metrics.render(&mut text);
                        (200, text, "text/plain; version=0.0.4")
                    }
                    "/healthz" => {
                        if metrics.shared.shutdown.load(Ordering::Relaxed) {
                            (503, "draining\n".into(), "text/plain")
                        } else {
                            (200, "ok\n".into(), "text/plain")
                        }
                    }
                    _ => (404, "not found\n".into(), "text/plain"),
                };
            }
        }
    };
    let head = ResponseHead {
        content_length: Some(body.len() as u64),
        keep_alive: false,
        content_type: Some(ctype),
        ..ResponseHead::new(status, date.get())
    };
    head.encode(&mut out);
    out.extend_from_slice(body.as_bytes());
    let _ = s.write_all(&out);
}

//! A load client for restart tests: threads that ask for `/a.txt` (expecting `hello\n`)
//! over and over, on new connections or kept-alive ones, and count what they see.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the clients saw.
#[derive(Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    /// Kept-alive connections the server closed between requests (a client sends again
    /// on a new one, as HTTP clients do for idempotent requests).
    pub reconnected: AtomicU64,
}

impl Counts {
    /// (answered, refused, failed, kept-alive connections closed between requests)
    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.reconnected.load(Ordering::Relaxed),
        )
    }
}

/// One request on `s`; Ok(true) answered right, Ok(false) closed before any byte.
fn ask(s: &mut TcpStream, close: bool) -> std::io::Result<bool> {
    let conn = if close { "close" } else { "keep-alive" };
    s.write_all(
        format!("GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: {conn}\r\n\r\n").as_bytes(),
    )?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n")
            && got.len() >= end + 4 + 6
        {
            let ok = got.starts_with(b"HTTP/1.1 200") && got[end + 4..].starts_with(b"hello\n");
            return if ok {
                Ok(true)
            } else {
                Err(std::io::Error::other(
                    String::from_utf8_lossy(&got).into_owned(),
                ))
            };
        }
    }
}

/// Asks `addr` until `stop` (at most 60 s): on one kept-alive connection after another
/// when `keep`, else a new connection per request.
pub fn hammer(addr: SocketAddr, keep: bool, stop: Arc<AtomicBool>, c: Arc<Counts>) {
    let mut conn: Option<TcpStream> = None;
    let end = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let fresh = conn.is_none();
        let mut s = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    s
                }
                Err(e) => {
                    eprintln!("refused: {e}");
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        match ask(&mut s, !keep) {
            Ok(true) => {
                c.ok.fetch_add(1, Ordering::Relaxed);
                if keep {
                    conn = Some(s);
                }
            }
            // A kept-alive connection closed by the server before this request's answer.
            Ok(false) if keep && !fresh => {
                c.reconnected.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                eprintln!("closed without an answer");
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("failed: {e}");
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Clients on `addr` until the returned flag is set: two on new connections, two on
/// kept-alive ones.
pub fn start(
    addr: SocketAddr,
) -> (
    Arc<AtomicBool>,
    Arc<Counts>,
    Vec<std::thread::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let clients = [false, false, true, true]
        .into_iter()
        .map(|keep| {
            let (stop, c) = (stop.clone(), counts.clone());
            std::thread::spawn(move || hammer(addr, keep, stop, c))
        })
        .collect();
    (stop, counts, clients)
}

/// Stops the clients of [`start`] and waits for them.
pub fn finish(stop: &AtomicBool, clients: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
}

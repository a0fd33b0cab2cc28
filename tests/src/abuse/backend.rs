//! The HTTP origin behind the relay under attack: a cacheable object for the good client's
//! hits, a large object for slow readers to hold, and an echo for uploads. Bodies are made
//! on the fly from one block, so a hundred readers of a large object cost the harness no
//! memory. Loopback only; a thread per connection, each ending within a second of the
//! backend's drop.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The cacheable object (the good client's hit, the flood's pipelined GET).
pub const OBJ_PATH: &str = "/obj";
/// Its length: in the memory tier's registered arena (16 KiB and up), one chunk.
pub const OBJ_BYTES: usize = 64 << 10;
/// The large object slow readers ask for, passed through (`no-store` or `Authorization`).
pub const BIG_PATH: &str = "/big";
/// Where uploads go (any other method is passed through and echoed).
pub const UPLOAD_PATH: &str = "/upload";

/// The bytes of [`OBJ_PATH`].
pub fn obj_body() -> Vec<u8> {
    crate::pattern(OBJ_BYTES, 13)
}

/// The answer to a POST of `n` body bytes.
pub fn upload_answer(n: u64) -> Vec<u8> {
    format!("received {n} bytes\n").into_bytes()
}

pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Requests answered, by kind: GET of the object, GET of the big one, uploads.
    pub counts: Arc<Counts>,
}

#[derive(Default)]
pub struct Counts {
    pub obj: AtomicU64,
    pub big: AtomicU64,
    pub uploads: AtomicU64,
}

impl Backend {
    /// Serves [`OBJ_PATH`], [`BIG_PATH`] (`big_bytes` long) and uploads on 127.0.0.1.
    pub fn start(big_bytes: u64) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("backend address");
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let obj: Arc<[u8]> = obj_body().into();
        let (st, c) = (stop.clone(), counts.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (st, c, obj) = (st.clone(), c.clone(), obj.clone());
                        std::thread::spawn(move || serve(conn, &obj, big_bytes, &c, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Backend { addr, stop, counts }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection: keep-alive requests until the peer closes, the backend stops, or
/// 100,000 requests; reads wait at most a second at a time so a stop is seen.
fn serve(conn: TcpStream, obj: &[u8], big: u64, counts: &Counts, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = conn.set_nodelay(true);
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = conn;
    for _ in 0..100_000 {
        let Some(head) = read_head(&mut reader, stop) else {
            return;
        };
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        // The path without its query (a query makes another cache key for the same body).
        let target = words.next().unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/").to_string();
        let length: u64 = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if method != "GET" && method != "HEAD" {
            // Read (and drop) the body, within the limits a trickle can reach in a test.
            if !skip_body(&mut reader, length, stop) {
                return;
            }
            counts.uploads.fetch_add(1, Ordering::Relaxed);
            let body = upload_answer(length);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\r\n",
                body.len()
            );
            if write_all(&mut out, head.as_bytes(), stop).is_err()
                || write_all(&mut out, &body, stop).is_err()
            {
                return;
            }
            continue;
        }
        let (body_len, is_big) = if path == BIG_PATH {
            counts.big.fetch_add(1, Ordering::Relaxed);
            (big, true)
        } else if path == OBJ_PATH {
            counts.obj.fetch_add(1, Ordering::Relaxed);
            (obj.len() as u64, false)
        } else {
            let _ = write_all(
                &mut out,
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                stop,
            );
            continue;
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\nETag: \"{}\"\r\n\
             Last-Modified: Tue, 01 Sep 2026 10:00:00 GMT\r\nCache-Control: max-age=3600\r\n\r\n",
            if is_big { "big" } else { "obj" }
        );
        if write_all(&mut out, head.as_bytes(), stop).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        // The body from `obj` repeated: the big object is never held whole.
        let mut left = body_len;
        while left > 0 {
            let n = left.min(obj.len() as u64) as usize;
            if write_all(&mut out, &obj[..n], stop).is_err() {
                return;
            }
            left -= n as u64;
        }
    }
}

/// A request head, or None when the peer closed or the backend stopped.
fn read_head(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<String> {
    let mut head = String::new();
    loop {
        if stop.load(Ordering::Relaxed) || head.len() > 64 << 10 {
            return None;
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {
                // An empty line ends the head (a line a timed-out read cut in two does not).
                let at_line_start = head.is_empty() || head.ends_with('\n');
                let end = at_line_start && (line == "\r\n" || line == "\n");
                head.push_str(&line);
                if end && head.trim().is_empty() {
                    head.clear();
                } else if end {
                    return Some(head);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Keep what a timed-out read_line took so far.
                head.push_str(&line);
            }
            Err(_) => return None,
        }
    }
}

fn skip_body(reader: &mut BufReader<TcpStream>, mut left: u64, stop: &AtomicBool) -> bool {
    let mut buf = [0u8; 16 << 10];
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let want = left.min(buf.len() as u64) as usize;
        match reader.read(&mut buf[..want]) {
            Ok(0) => return false,
            Ok(n) => left -= n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Writes all of `bytes`, waiting (a second at a time) while the peer does not read, until
/// the backend stops.
fn write_all(out: &mut TcpStream, mut bytes: &[u8], stop: &AtomicBool) -> std::io::Result<()> {
    while !bytes.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return Err(ErrorKind::Interrupted.into());
        }
        match out.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

//! The origin every server under `miss` fetches from: a small HTTP/1.1 server on loopback,
//! a thread per connection, that waits `delay` before each response head (a distant
//! origin's round trip) and serves deterministic bytes for any `/obj/<name>?size=N`.
//!
//! Each answer carries `Content-Length`, `ETag` (strong, from the name and size),
//! `Last-Modified`, `Accept-Ranges: bytes` and `Cache-Control: max-age=3600`; a single
//! `Range` (`bytes=a-b`, `a-`, `-n`) gets a 206 with its `Content-Range` and exactly those
//! bytes, an unsatisfiable one a 416, several ranges the whole body (RFC 9110 §14.2 allows
//! ignoring them). Keep-alive; HEAD answers the head alone. Every request and every body
//! byte sent is counted per object name, so the benchmark reports origin fetches and
//! origin bytes as the origin saw them.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the origin served for one object (or for all of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Served {
    /// Requests (any method, any range).
    pub requests: u64,
    /// Body bytes handed to the socket.
    pub body_bytes: u64,
}

impl Served {
    fn add(&mut self, o: Served) {
        self.requests += o.requests;
        self.body_bytes += o.body_bytes;
    }

    /// What was served since `before`.
    pub fn since(self, before: Served) -> Served {
        Served {
            requests: self.requests - before.requests,
            body_bytes: self.body_bytes - before.body_bytes,
        }
    }
}

#[derive(Default)]
struct Counts {
    by_name: HashMap<String, Served>,
    total: Served,
}

pub struct Origin {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    stop: Arc<AtomicBool>,
}

/// Most requests one connection may make (a bound on every connection's loop).
const MAX_REQUESTS_PER_CONNECTION: usize = 1_000_000;
/// Longest request head line, and most header fields, the origin reads.
const MAX_LINE: usize = 8 << 10;
const MAX_FIELDS: usize = 100;

impl Origin {
    /// Listens on 127.0.0.1 (any port) and serves until dropped.
    pub fn start(delay: Duration) -> Result<Origin> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the origin")?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (counts.clone(), stop.clone());
        std::thread::Builder::new()
            .name("origin-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (c, st) = (c.clone(), st.clone());
                    let _ = std::thread::Builder::new()
                        .name("origin".into())
                        .stack_size(256 << 10)
                        .spawn(move || serve(conn, &c, &st, delay));
                }
            })?;
        Ok(Origin { addr, counts, stop })
    }

    /// What was served for the object `name` so far.
    pub fn served(&self, name: &str) -> Served {
        self.lock().by_name.get(name).copied().unwrap_or_default()
    }

    /// What was served for every object so far.
    pub fn total(&self) -> Served {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// The path of an object: what every server is asked for and forwards.
pub fn path(name: &str, size: u64) -> String {
    format!("/obj/{name}?size={size}")
}

/// `/obj/<name>?size=N` → (name, N).
fn parse_target(target: &str) -> Option<(&str, u64)> {
    let rest = target.strip_prefix("/obj/")?;
    let (name, query) = rest.split_once('?')?;
    let size = query
        .split('&')
        .find_map(|p| p.strip_prefix("size="))?
        .parse()
        .ok()?;
    (!name.is_empty() && !name.contains('/')).then_some((name, size))
}

/// A `Range` field's one range within `len` bytes: Ok(None) to send the whole body (no
/// field, several ranges, or one that does not parse), Err(()) when unsatisfiable.
fn parse_range(v: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = v.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => (first, last.min(len.saturating_sub(1))),
        (Ok(first), Err(_)) if b.is_empty() => (first, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
}

/// One request head: method, target and the `Range` field. None when the connection ended
/// (or sent something that is not a head).
fn read_head<R: BufRead>(r: &mut R) -> Option<(String, String, Option<String>)> {
    let mut line = String::new();
    let read_line = |r: &mut R, line: &mut String| -> Option<()> {
        line.clear();
        let n = std::io::Read::take(r, MAX_LINE as u64)
            .read_line(line)
            .ok()?;
        (n > 0 && line.ends_with('\n')).then_some(())
    };
    read_line(r, &mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let target = words.next()?.to_string();
    let mut range = None;
    for _ in 0..=MAX_FIELDS {
        read_line(r, &mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            return Some((method, target, range));
        }
        if let Some((n, v)) = l.split_once(':')
            && n.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    None
}

fn serve(conn: TcpStream, counts: &Mutex<Counts>, stop: &AtomicBool, delay: Duration) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(60)));
    let _ = conn.set_nodelay(true);
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = conn;
    let mut buf = vec![0u8; 256 << 10];
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let Some((method, target, range)) = read_head(&mut reader) else {
            return;
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let object = parse_target(&target);
        let name = object.map_or("(other)", |(n, _)| n).to_string();
        let count = |c: Served| {
            let mut all = counts.lock().unwrap_or_else(|p| p.into_inner());
            all.by_name.entry(name.clone()).or_default().add(c);
            all.total.add(c);
        };
        count(Served {
            requests: 1,
            body_bytes: 0,
        });
        std::thread::sleep(delay);
        let Some((obj, len)) = object.filter(|_| method == "GET" || method == "HEAD") else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        let common = format!(
            "ETag: \"{obj}-{len}\"\r\nLast-Modified: Mon, 01 Jun 2026 00:00:00 GMT\r\n\
             Cache-Control: max-age=3600\r\nAccept-Ranges: bytes\r\n\
             Content-Type: application/octet-stream\r\n"
        );
        let (first, last, head) = match parse_range(range.as_deref(), len) {
            Err(()) => {
                let head = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                     Content-Length: 0\r\n{common}\r\n"
                );
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
            Ok(Some((a, z))) => (
                a,
                z + 1,
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{z}/{len}\r\n\
                     Content-Length: {}\r\n{common}\r\n",
                    z + 1 - a
                ),
            ),
            Ok(None) => (
                0,
                len,
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n{common}\r\n"),
            ),
        };
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        let seed = seed(obj);
        let mut at = first;
        while at < last {
            let n = ((last - at) as usize).min(buf.len());
            fill(seed, at, &mut buf[..n]);
            // Counted as it is handed to the socket: by the time a client has a byte, the
            // origin has counted it.
            count(Served {
                requests: 0,
                body_bytes: n as u64,
            });
            if out.write_all(&buf[..n]).is_err() {
                return;
            }
            at += n as u64;
        }
    }
}

/// An object's byte stream: FNV-1a of its name.
pub fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The object's bytes from `offset` on into `out`: byte `p` is byte `p % 8` of
/// splitmix64(seed + p / 8), so any range is made without the bytes before it.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let word = |i: u64| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    };
    let mut p = offset;
    let mut rest = out;
    // The unaligned head, then whole words.
    while !p.is_multiple_of(8) && !rest.is_empty() {
        rest[0] = word(p / 8)[(p % 8) as usize];
        rest = &mut rest[1..];
        p += 1;
    }
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&word(p / 8));
        p += 8;
    }
    for b in words.into_remainder() {
        *b = word(p / 8)[(p % 8) as usize];
        p += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn any_range_of_an_object_is_the_same_bytes() {
        let mut whole = vec![0u8; 1000];
        fill(7, 0, &mut whole);
        for (a, n) in [(0, 1000), (1, 5), (3, 997), (8, 16), (999, 1), (13, 0)] {
            let mut part = vec![0u8; n];
            fill(7, a as u64, &mut part);
            assert_eq!(part, whole[a..a + n], "{a}+{n}");
        }
        let mut other = vec![0u8; 1000];
        fill(8, 0, &mut other);
        assert_ne!(other, whole);
    }

    #[test]
    fn targets_and_ranges_parse() {
        assert_eq!(parse_target("/obj/a1?size=42"), Some(("a1", 42)));
        assert_eq!(parse_target("/obj/a1?x=1&size=42"), Some(("a1", 42)));
        assert_eq!(parse_target("/obj/a1"), None);
        assert_eq!(parse_target("/obj/a/b?size=1"), None);
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=0-1048575"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=10-20"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=x"), 10), Ok(None));
    }

    /// A ranged GET on a kept-alive connection after a whole one: 206, Content-Range,
    /// the right bytes, and both counted with their body bytes.
    #[test]
    fn serves_ranges_and_counts_them() {
        let origin = Origin::start(Duration::ZERO).unwrap();
        let mut s = TcpStream::connect(origin.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            b"GET /obj/o?size=100 HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /obj/o?size=100 HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n",
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < 2
            || !got.ends_with(&{
                let mut b = [0u8; 10];
                fill(seed("o"), 10, &mut b);
                b
            })
        {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"));
        assert!(
            text.contains("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\n")
        );
        assert!(text.contains("ETag: \"o-100\"") && text.contains("max-age=3600"));
        assert_eq!(
            origin.served("o"),
            Served {
                requests: 2,
                body_bytes: 110
            }
        );
        assert_eq!(origin.total(), origin.served("o"));
    }
}

//! A small HTTP/1.1 origin the tests own: objects in memory with ETag, Last-Modified and
//! Cache-Control; honours single `Range`s; counts every request and records the header fields
//! each one carried (and echoes them back, per object, on request); and misbehaves on demand
//! (ignores Range, answers slowly, streams slowly, cuts bodies short, changes an object; or,
//! for one object, answers late or not in HTTP at all).
//! Loopback only; every connection thread ends when the server is dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One object the origin serves.
#[derive(Clone)]
pub struct Object {
    pub body: Vec<u8>,
    pub etag: String,
    pub cache_control: Option<String>,
    /// More header fields to send, as they are.
    pub extra_headers: Vec<(String, String)>,
    /// Variants by `Accept-Language` value (the object then sends `Vary: Accept-Language`
    /// and a per-variant ETag; requests without a listed value get `body`).
    pub by_language: Vec<(String, Vec<u8>)>,
    /// `Last-Modified` (None: not sent, so no heuristic freshness either).
    pub last_modified: Option<String>,
    pub status: u16,
    /// Echo the request's header fields in the response: `Echo-<name>: <value>` per field
    /// line (name lower-case), so a client sees what reached the origin for its response.
    pub echo_headers: bool,
    /// Wait this long before answering a GET of this object, ms (one slow URL).
    pub delay_ms: u64,
    /// Answer a GET of this object with these bytes and close, instead of a response (an
    /// origin that is broken for one URL).
    pub raw: Option<Vec<u8>>,
}

impl Object {
    pub fn new(body: Vec<u8>, etag: &str) -> Object {
        Object {
            body,
            etag: format!("\"{etag}\""),
            cache_control: Some("max-age=300".into()),
            last_modified: Some("Tue, 01 Sep 2026 10:00:00 GMT".into()),
            extra_headers: Vec::new(),
            by_language: Vec::new(),
            status: 200,
            echo_headers: false,
            delay_ms: 0,
            raw: None,
        }
    }

    /// A greeting that varies on Accept-Language: "hello (default)", French "bonjour",
    /// German "hallo".
    pub fn greeting() -> Object {
        let mut o = Object::new(b"hello (default)".to_vec(), "lang");
        o.by_language = vec![
            ("fr".into(), b"bonjour".to_vec()),
            ("de".into(), b"hallo".to_vec()),
        ];
        o
    }
}

/// How the origin misbehaves (all off by default).
#[derive(Default)]
pub struct Behaviour {
    pub ignore_range: AtomicBool,
    /// Answer a Range with at most this many bytes from its start (0: all it asks), as an
    /// origin capping the bytes of a range does: a 206 whose `Content-Range` says so.
    pub range_cap: AtomicU64,
    /// Send this many bytes (`J`) past a 206's range, its `Content-Length` counting them: an
    /// answer longer than its `Content-Range` says.
    pub range_junk: AtomicU64,
    /// Send a 206 with no `Content-Length`, its body (and any `range_junk`) ended by the
    /// connection's close.
    pub range_unframed: AtomicBool,
    /// Delay before the response head, ms.
    pub head_delay_ms: AtomicU64,
    /// Delay between the response head and its body, ms.
    pub body_delay_ms: AtomicU64,
    /// Write bodies in pieces of this many bytes with `piece_delay_ms` between (0: at once).
    pub piece_bytes: AtomicU64,
    pub piece_delay_ms: AtomicU64,
    /// Cut every body after this many bytes (0: never), then close.
    pub truncate_after: AtomicU64,
    /// Cut the next body longer than this after this many bytes, then close; once (0: none).
    pub truncate_once_after: AtomicU64,
    /// Announce this `Content-Length` instead of the true one (0: the true one), then send
    /// the true body and close: an origin that lies about its length.
    pub claim_length: AtomicU64,
}

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The header fields, in order: (lower-case name, trimmed value).
    pub fields: Vec<(String, String)>,
}

impl Received {
    /// The value of the first `name` field (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `name` field (lower-case) arrived at all.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Object>,
    /// (path, Range header value or "") of every request, in order.
    log: Vec<(String, String)>,
    /// (path, the request) of every request, in order.
    received: Vec<(String, Received)>,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub behaviour: Arc<Behaviour>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    pub fn start() -> Origin {
        Origin::start_on("127.0.0.1:0")
    }

    /// An origin listening on `addr` (a namespace's address; port 0: any).
    pub fn start_on(addr: &str) -> Origin {
        let listener = TcpListener::bind(addr).expect("bind origin");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let behaviour = Arc::new(Behaviour::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b, st) = (state.clone(), behaviour.clone(), stop.clone());
        std::thread::spawn(move || {
            // Accept until stopped; each connection gets a thread.
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, b, st) = (s.clone(), b.clone(), st.clone());
                        std::thread::spawn(move || serve(conn, &s, &b, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Origin {
            addr,
            behaviour,
            state,
            stop,
        }
    }

    pub fn put(&self, path: &str, object: Object) {
        self.lock().objects.insert(path.to_string(), object);
    }

    pub fn remove(&self, path: &str) {
        self.lock().objects.remove(path);
    }

    /// Requests seen for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.lock().log.iter().filter(|(p, _)| p == path).count()
    }

    /// The Range headers of the requests for `path`.
    pub fn ranges(&self, path: &str) -> Vec<String> {
        self.lock()
            .log
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The requests seen for `path`, in order, with the header fields each carried.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, b: &Behaviour, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut out = conn;
    // Keep-alive: at most 10,000 requests per connection.
    for _ in 0..10_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || stop.load(Ordering::Relaxed) {
            // A stopped origin answers nothing more, even on open connections.
            return;
        }
        let method = line.split_whitespace().next().unwrap_or("GET").to_string();
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut content_length = 0usize;
        let mut seen_headers: Vec<String> = Vec::new();
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut range = String::new();
        let mut inm = String::new();
        let mut language = String::new();
        loop {
            // (Read as bytes: a field value need not be UTF-8; kept lossily.)
            let mut raw = Vec::new();
            if reader.read_until(b'\n', &mut raw).unwrap_or(0) == 0 {
                return;
            }
            let h = String::from_utf8_lossy(&raw);
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':')
                && n.eq_ignore_ascii_case("range")
            {
                range = v.trim().to_string();
            }
            if let Some((n, v)) = h.split_once(':')
                && n.eq_ignore_ascii_case("if-none-match")
            {
                inm = v.trim().to_string();
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("accept-language") {
                    language = v.trim().to_string();
                }
                if n.eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
                seen_headers.push(format!("{}={}", n.trim().to_ascii_lowercase(), v.trim()));
                fields.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let chunked = fields
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body_in = match chunked {
            // A body relay streams on without a length (the first 16 MiB kept).
            true => match read_chunked(&mut reader, 1 << 24) {
                Some(b) => b,
                None => return,
            },
            false => {
                let mut b = vec![0u8; content_length.min(1 << 24)];
                if reader.read_exact(&mut b).is_err() {
                    return;
                }
                b
            }
        };
        let received = Received {
            method: method.clone(),
            fields,
        };
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .received
            .push((path.clone(), received.clone()));
        if method != "GET" && method != "HEAD" {
            // PUT stores the body as the object's new version; others echo what came.
            let reply = {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.log
                    .push((path.clone(), format!("{method} {}", seen_headers.join(";"))));
                if method == "PUT" {
                    let tag = format!("put-{}", body_in.len() + s.log.len());
                    s.objects
                        .insert(path.clone(), Object::new(body_in.clone(), &tag));
                    b"stored".to_vec()
                } else {
                    let mut r = format!("{method} {path} {} bytes: ", body_in.len()).into_bytes();
                    r.extend_from_slice(&body_in);
                    r
                }
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\
                 X-Method: {method}\r\n\r\n",
                reply.len()
            );
            if out.write_all(head.as_bytes()).is_err() || out.write_all(&reply).is_err() {
                return;
            }
            continue;
        }
        let object = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.log.push((path.clone(), range.clone()));
            s.objects.get(&path).cloned()
        };
        let delay = b.head_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let object = object.map(|mut o| {
            if !o.by_language.is_empty() {
                if let Some((_, body)) = o.by_language.iter().find(|(l, _)| *l == language) {
                    o.body = body.clone();
                    o.etag = format!("{}-{language}\"", o.etag.trim_end_matches('"'));
                }
                o.extra_headers
                    .push(("Vary".into(), "Accept-Language".into()));
            }
            o
        });
        let Some(obj) = object else {
            let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            continue;
        };
        if obj.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(obj.delay_ms));
        }
        if let Some(raw) = &obj.raw {
            let _ = out.write_all(raw);
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
        if !inm.is_empty() && inm == obj.etag {
            let mut head = format!("HTTP/1.1 304 Not Modified\r\nETag: {}\r\n", obj.etag);
            if let Some(cc) = &obj.cache_control {
                head.push_str(&format!("Cache-Control: {cc}\r\n"));
            }
            head.push_str("\r\n");
            let _ = out.write_all(head.as_bytes());
            continue;
        }
        let len = obj.body.len() as u64;
        let mut head = String::new();
        let (status, start, end) = match parse_range(&range, len) {
            Some((a, z)) if !b.ignore_range.load(Ordering::Relaxed) && obj.status == 200 => {
                let cap = b.range_cap.load(Ordering::Relaxed);
                match cap {
                    0 => (206, a, z + 1),
                    _ => (206, a, (z + 1).min(a + cap)),
                }
            }
            None if !range.is_empty()
                && len == 0
                && obj.status == 200
                && !b.ignore_range.load(Ordering::Relaxed) =>
            {
                let _ = out.write_all(
                    b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */0\r\n\
                      Content-Length: 0\r\nCache-Control: max-age=300\r\n\r\n",
                );
                continue;
            }
            _ => (obj.status, 0, len),
        };
        head.push_str(&format!("HTTP/1.1 {status} X\r\n"));
        let claim = b.claim_length.load(Ordering::Relaxed);
        let junk = match status {
            206 => b.range_junk.load(Ordering::Relaxed) as usize,
            _ => 0,
        };
        let unframed = status == 206 && b.range_unframed.load(Ordering::Relaxed);
        let announced = if claim > 0 {
            claim
        } else {
            end - start + junk as u64
        };
        match unframed {
            true => head.push_str("Connection: close\r\n"),
            false => head.push_str(&format!("Content-Length: {announced}\r\n")),
        }
        if status == 206 {
            head.push_str(&format!(
                "Content-Range: bytes {start}-{}/{len}\r\n",
                end - 1
            ));
        }
        head.push_str(&format!("ETag: {}\r\n", obj.etag));
        if let Some(lm) = &obj.last_modified {
            head.push_str(&format!("Last-Modified: {lm}\r\n"));
        }
        head.push_str(&format!(
            "Date: {}\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        ));
        for (n, v) in &obj.extra_headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if obj.echo_headers {
            for (n, v) in &received.fields {
                head.push_str(&format!("Echo-{n}: {v}\r\n"));
            }
        }
        if let Some(cc) = &obj.cache_control {
            head.push_str(&format!("Cache-Control: {cc}\r\n"));
        }
        head.push_str("\r\n");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(
            b.body_delay_ms.load(Ordering::Relaxed),
        ));
        // A response to HEAD has the head a GET would get, and no body.
        let mut body = if method == "HEAD" {
            &[][..]
        } else {
            &obj.body[start as usize..end as usize]
        };
        let mut cut = b.truncate_after.load(Ordering::Relaxed) as usize;
        let once = b.truncate_once_after.load(Ordering::Relaxed) as usize;
        if once > 0
            && body.len() > once
            && b.truncate_once_after
                .compare_exchange(once as u64, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            cut = once;
        }
        let truncated = cut > 0 && body.len() > cut;
        if truncated {
            body = &body[..cut];
        }
        let piece = b.piece_bytes.load(Ordering::Relaxed) as usize;
        if piece == 0 {
            if out.write_all(body).is_err() {
                return;
            }
        } else {
            for part in body.chunks(piece) {
                if out.write_all(part).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(
                    b.piece_delay_ms.load(Ordering::Relaxed),
                ));
            }
        }
        if junk > 0 && !truncated && out.write_all(&vec![b'J'; junk]).is_err() {
            return;
        }
        if truncated || claim > 0 || unframed {
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
    let _ = reader.read(&mut [0u8; 1]);
}

/// `bytes=a-b` / `bytes=a-` (single range only), clamped.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let r = v.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = if b.trim().is_empty() {
        len.checked_sub(1)?
    } else {
        b.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (a <= b).then_some((a, b))
}

/// Reads a chunked request body from `r` (trailers dropped), keeping its first `keep`
/// bytes; None when the connection ends first or the framing is not chunked.
fn read_chunked(r: &mut impl BufRead, keep: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let size = line.trim_end().split(';').next()?;
        let mut left = u64::from_str_radix(size.trim(), 16).ok()?;
        if left == 0 {
            break;
        }
        while left > 0 {
            let n = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..n]).ok()?;
            let k = n.min(keep.saturating_sub(body.len()));
            body.extend_from_slice(&buf[..k]);
            left -= n as u64;
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).ok()?;
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end().is_empty() {
            return Some(body);
        }
    }
}

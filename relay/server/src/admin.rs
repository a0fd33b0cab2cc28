//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /cache?key=K`
//! (what the cache holds of an object) and
//! `POST /purge?key=K|prefix=P[&mode=soft]` (bearer token from `admin.purge_token`), with
//! blocking sockets, a thread per connection — it is not on the serving path, and a scrape
//! a few times a minute does not need a ring.
//!
//! No client can hold it: connections are served at once and side by side, each with
//! [`HEAD_DEADLINE`] for its whole request head and [`WRITE_DEADLINE`] for the response,
//! counted from the start, not from the last byte: a client trickling a byte a second is
//! closed when its time is up, and `/healthz` answers meanwhile. At most [`PER_SOURCE`] are
//! served from any one client (an IPv4 address or an IPv6 /64); more from it are closed as
//! they are accepted. At most [`MAX_CONNECTIONS`] are served in all: a new connection past
//! that closes the oldest one (a scrape or a health check takes milliseconds, so the oldest
//! is one that stalls), so clients from many addresses that fill the listener and keep it
//! full still cannot keep out a health check.

use crate::metrics::Metrics;
use relay_proto::{Limits, Parsed, ResponseHead, parse_request};
use relay_upstream::budget::Client;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Admin connections served at once; a new one past this closes the oldest.
pub const MAX_CONNECTIONS: usize = 64;
/// Admin connections served at once from one client address: one address cannot take
/// every slot.
pub const PER_SOURCE: usize = 8;
/// Time for a connection's whole request head, from its accept.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Time for the whole response to be written.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Stack of a connection's thread: its 8 KiB head buffer and the response are on the heap
/// or small.
const STACK_BYTES: usize = 256 << 10;

/// Serves admin requests until the process exits: the listener's thread accepts, and each
/// connection is handled on a thread of its own, within [`MAX_CONNECTIONS`].
pub fn spawn(listener: TcpListener, metrics: Metrics) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("relay-admin".into())
        .spawn(move || accept_loop(&listener, &metrics))
        .map(|_| ())
}

fn accept_loop(listener: &TcpListener, metrics: &Metrics) {
    let open = Arc::new(AtomicUsize::new(0));
    let sources: Arc<Mutex<HashMap<Client, usize>>> = Arc::default();
    let served: Arc<Mutex<Served>> = Arc::default();
    let mut refused: u64 = 0;
    let mut evicted: u64 = 0;
    for stream in listener.incoming() {
        let s = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("admin accept: {e}");
                // Out of descriptors: do not spin on the error.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // (A connection whose peer is already gone is dropped: closed.)
        // One client: an IPv4 address or an IPv6 /64, as the data plane counts them.
        let Ok(ip) = s.peer_addr().map(|a| Client::of(a.ip())) else {
            continue;
        };
        let theirs = {
            let held = lock(&sources);
            held.get(&ip).copied().unwrap_or(0) >= PER_SOURCE
        };
        // Past the bound, the oldest connection is closed for this one; its thread ends as
        // its read or write fails. Threads that have not ended yet are bounded too: should
        // they pile up, new connections are closed instead.
        let open_now = open.load(Ordering::Acquire);
        let full = open_now >= MAX_CONNECTIONS;
        let swamped = open_now >= 2 * MAX_CONNECTIONS;
        if theirs || swamped {
            refused += 1;
            if refused.is_power_of_two() {
                log::warn!(
                    "admin: {PER_SOURCE} connections from {ip}, or {open_now} open; \
                     closing new ones ({refused} so far)"
                );
            }
            continue; // dropped: closed
        }
        if full && lock(&served).close_oldest() {
            evicted += 1;
            if evicted.is_power_of_two() {
                log::warn!(
                    "admin: {MAX_CONNECTIONS} connections open; closed the oldest for a new \
                     one ({evicted} so far)"
                );
            }
        }
        open.fetch_add(1, Ordering::AcqRel);
        *lock(&sources).entry(ip).or_default() += 1;
        let id = lock(&served).add(&s);
        let slot = Slot {
            open: open.clone(),
            sources: sources.clone(),
            served: served.clone(),
            ip,
            id,
        };
        let metrics = metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("relay-admin-conn".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let _slot = slot;
                handle(s, &metrics);
            });
        if let Err(e) = spawned {
            // The closure (and its slot) was dropped with the error.
            log::warn!("admin: no thread for a connection: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connections being served, oldest first, each with a handle to shut it down.
#[derive(Default)]
struct Served {
    next: u64,
    conns: VecDeque<(u64, Option<TcpStream>)>,
}

impl Served {
    /// Adds a connection; its id. (Without a handle, it cannot be closed early: it still
    /// ends at its deadlines.)
    fn add(&mut self, s: &TcpStream) -> u64 {
        let id = self.next;
        self.next += 1;
        self.conns.push_back((id, s.try_clone().ok()));
        id
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.conns.iter().position(|(c, _)| *c == id) {
            self.conns.remove(i);
        }
    }

    /// Shuts the oldest connection that can be closed down (its thread sees its socket
    /// end); false when none can.
    fn close_oldest(&mut self) -> bool {
        while let Some((_, handle)) = self.conns.pop_front() {
            if let Some(h) = handle {
                let _ = h.shutdown(std::net::Shutdown::Both);
                return true;
            }
        }
        false
    }
}

/// One open admin connection, counted while it lives, in all and for its client address.
struct Slot {
    open: Arc<AtomicUsize>,
    sources: Arc<Mutex<HashMap<Client, usize>>>,
    served: Arc<Mutex<Served>>,
    ip: Client,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.served).remove(self.id);
        self.open.fetch_sub(1, Ordering::AcqRel);
        let mut held = lock(&self.sources);
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// The time left until `deadline`, or `None` when it has passed.
fn left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Reads into `buf` with whatever time is left before `deadline`; `None` at the end of
/// input, on an error or when time is up.
fn read_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Option<usize> {
    loop {
        s.set_read_timeout(Some(left(deadline)?)).ok()?;
        match s.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Writes all of `bytes` by `deadline`, however slowly the client reads; gives up then.
fn write_by(s: &mut TcpStream, mut bytes: &[u8], deadline: Instant) {
    while !bytes.is_empty() {
        let Some(t) = left(deadline) else { return };
        if s.set_write_timeout(Some(t)).is_err() {
            return;
        }
        match s.write(bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn handle(mut s: TcpStream, metrics: &Metrics) {
    let head_deadline = Instant::now() + HEAD_DEADLINE;
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let limits = Limits {
        max_head_bytes: buf.len(),
        ..Limits::DEFAULT
    };
    let date = relay_proto::DateCache::new(SystemTime::now());
    let mut out = Vec::with_capacity(4096);
    let (status, body, ctype): (u16, String, &str) = loop {
        let Some(n) = read_by(&mut s, &mut buf[len..], head_deadline) else {
            return;
        };
        len += n;
        match parse_request(&buf[..len], &limits) {
            Ok(Parsed::Partial) if len < buf.len() => continue,
            Ok(Parsed::Partial) => {
                relay_proto::error_response(431, date.get(), &mut out);
                write_by(&mut s, &out, Instant::now() + WRITE_DEADLINE);
                return;
            }
            Err(e) => {
                relay_proto::error_response(e.status(), date.get(), &mut out);
                write_by(&mut s, &out, Instant::now() + WRITE_DEADLINE);
                return;
            }
            Ok(Parsed::Complete { request, head_len }) => {
                if request.path == "/cache" {
                    break inspect(metrics, request.target);
                }
                if request.path == "/purge" {
                    break purge(
                        metrics,
                        &buf[..head_len],
                        request.method_str,
                        request.target,
                    );
                }
                break match request.path {
                    "/metrics" => {
                        let mut text = String::with_capacity(8192);
                        metrics.render(&mut text);
                        (200, text, "text/plain; version=0.0.4")
                    }
                    "/healthz" => {
                        let shared = &metrics.shared;
                        if shared.shutdown.load(Ordering::Relaxed)
                            || shared.draining.load(Ordering::Relaxed)
                        {
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
    write_by(&mut s, &out, Instant::now() + WRITE_DEADLINE);
}

/// `POST /purge?key=K` (the object and its variants) or `?prefix=P`, `&mode=hard` (default:
/// drop the objects' descriptions, their chunks in memory and their chunk files; answers
/// `{"purged":objects,"descriptions":..,"memory_chunks":..,"disk_chunks":..}`, what was
/// really there: 0 for a key that matched nothing) or `&mode=soft` (mark them stale: the
/// next request revalidates, and a 304 keeps the chunks; `purged` counts the descriptions). Keys are as relay writes them
/// (`relay_cache::key`): `http://` + host (lower case, no trailing dot, no `:80`) + path and
/// query for HTTP origins, `dir:` + path for the directory; one that cannot start such a
/// key is refused, so a purge in another form does not silently match nothing.
fn purge(
    metrics: &Metrics,
    head: &[u8],
    method: &str,
    target: &str,
) -> (u16, String, &'static str) {
    let Some(token) = metrics.shared.config.admin.purge_token.as_deref() else {
        return (
            403,
            "purging is off (no admin.purge_token)\n".into(),
            "text/plain",
        );
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(head);
    let given = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| h.value.strip_prefix(b"Bearer "))
        .unwrap_or(b"");
    // Compare in time independent of where the first difference is.
    let same = given.len() == token.len()
        && given
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return (401, "bad or missing bearer token\n".into(), "text/plain");
    }
    if method != "POST" {
        return (405, "use POST\n".into(), "text/plain");
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let (mut key, mut prefix, mut soft) = (None, None, false);
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(v) = percent_decode(v) else {
            return (400, "bad percent-encoding\n".into(), "text/plain");
        };
        match k {
            "key" => key = Some(v),
            "prefix" => prefix = Some(v),
            "mode" if v == "soft" => soft = true,
            "mode" if v == "hard" => soft = false,
            _ => return (400, format!("unknown parameter {k:?}\n"), "text/plain"),
        }
    }
    if let Some(k) = key.as_deref().or(prefix.as_deref())
        && !names_objects(k, prefix.is_some())
    {
        return (
            400,
            format!(
                "{k:?} is not an object key: keys are {}host/path?query or {}/path\n",
                relay_cache::key::HTTP,
                relay_cache::key::DIRECTORY
            ),
            "text/plain",
        );
    }
    let what = match (&key, &prefix) {
        (Some(k), None) => relay_cache::Purge::Key(k),
        (None, Some(p)) if !p.is_empty() => relay_cache::Purge::Prefix(p),
        _ => {
            return (
                400,
                "give exactly one of key= or a non-empty prefix=\n".into(),
                "text/plain",
            );
        }
    };
    let cache = &metrics.shared.cache;
    let body = if soft {
        let n = cache.expire(what);
        format!("{{\"purged\":{n},\"mode\":\"soft\"}}\n")
    } else {
        let p = cache.purge(what);
        format!(
            "{{\"purged\":{},\"descriptions\":{},\"memory_chunks\":{},\"disk_chunks\":{},\
             \"mode\":\"hard\"}}\n",
            p.objects, p.descriptions, p.memory_chunks, p.disk_chunks
        )
    };
    (200, body, "application/json")
}

/// `GET /cache?key=K`: what the cache holds of object `K` (a key as `/purge` takes it): its
/// stored description (status, length, version, validators, age, TTL, stale windows), and
/// where its chunks are (memory, disk, on their way); the versions the disk tier holds.
/// JSON; 404 when nothing of it is held anywhere.
fn inspect(metrics: &Metrics, target: &str) -> (u16, String, &'static str) {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let key = query
        .split('&')
        .find_map(|p| p.strip_prefix("key="))
        .and_then(percent_decode);
    let Some(key) = key.filter(|k| names_objects(k, false)) else {
        return (
            400,
            format!(
                "give key=<object key>: {}host/path?query or {}/path\n",
                relay_cache::key::HTTP,
                relay_cache::key::DIRECTORY
            ),
            "text/plain",
        );
    };
    let cache = &metrics.shared.cache;
    let now = Instant::now();
    let json = |s: &str| serde_json::Value::String(s.to_string());
    let chunks_of = |version: u64, count: u64| {
        let (mut memory, mut disk, mut flying) = (0u64, 0u64, 0u64);
        // (Bounded: a scan of at most a million chunks.)
        for index in 0..count.min(1 << 20) {
            let r = relay_cache::key::ChunkRef {
                object: &key,
                version,
                index,
            };
            memory += u64::from(cache.memory.contains(&r));
            disk += u64::from(cache.disk.as_ref().is_some_and(|d| d.contains(&r)));
            let owned = r.to_owned_key();
            flying += u64::from(cache.inflight.flight(&owned).is_some());
        }
        serde_json::json!({"count": count, "memory": memory, "disk": disk, "in_flight": flying})
    };
    let description = cache.meta.get(&key).map(|m| {
        let count = match m.open_ended {
            true => 0,
            false => cache.layout.chunk_count(m.len),
        };
        serde_json::json!({
            "status": m.status,
            "length": (!m.open_ended).then_some(m.len),
            "version": m.version,
            "etag": json(&m.etag),
            "last_modified": json(&m.last_modified),
            "content_type": json(&m.content_type),
            "age_s": m.age(now),
            "ttl_s": m.ttl.as_secs(),
            "fresh": m.is_fresh(now, Duration::MAX),
            "stale_while_revalidate_s": m.stale_while_revalidate.as_secs(),
            "stale_if_error_s": m.stale_if_error.as_secs(),
            "must_revalidate": m.must_revalidate,
            "storable": m.storable,
            "chunks": chunks_of(m.version, count),
        })
    });
    let on_disk: Vec<serde_json::Value> = cache
        .disk
        .as_ref()
        .map(|d| d.object_versions(&key))
        .unwrap_or_default()
        .into_iter()
        .map(|v| serde_json::json!({"version": v.version, "length": v.object_len, "chunks": v.chunks}))
        .collect();
    let held = description.is_some() || !on_disk.is_empty();
    let body = serde_json::json!({
        "key": key,
        "held": held,
        "description": description,
        "disk_versions": on_disk,
    });
    let status = if held { 200 } else { 404 };
    (status, format!("{body}\n"), "application/json")
}

/// Whether `k` names objects: a key starts with an origin kind's tag; a prefix may also be
/// the start of one (`http` purges every HTTP origin's objects).
fn names_objects(k: &str, prefix: bool) -> bool {
    [relay_cache::key::HTTP, relay_cache::key::DIRECTORY]
        .iter()
        .any(|tag| k.starts_with(tag) || (prefix && !k.is_empty() && tag.starts_with(k)))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

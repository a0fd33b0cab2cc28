//! One worker: an io_uring event loop on its own thread, with its own listener
//! (SO_REUSEPORT), its own connections and its own buffers. Workers share only the cache
//! (sharded, reference-counted chunks) and their statistics (one cache line each).
//!
//! A request's way: multishot accept → recv into the connection's buffer → sans-IO parse
//! (`relay_proto`) → object description (cache, else origin) → response head → for each
//! chunk of the body: memory tier hit, else an io_uring read from the origin file that fills
//! the memory tier → one `sendmsg` per piece (head and first piece together) → next request.

use crate::conn::{Body, Conn, Fill, Phase};
use crate::origin::{DirOrigin, OriginError};
use crate::ring::Ring;
use crate::{Shared, WorkerStats, sys};
use bytes::Bytes;
use crossbeam_utils::CachePadded;
use io_uring::types::Timespec;
use relay_cache::{ChunkRef, ObjectMeta};
use relay_proto::range::{ByteRange, RangeSpec};
use relay_proto::{DateCache, Method, Parsed, ResponseHead, parse_request};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

const ACCEPT: u8 = 1;
const RECV: u8 = 2;
const RECV_TIMEOUT: u8 = 3;
const SEND: u8 = 4;
const SEND_TIMEOUT: u8 = 5;
const READ: u8 = 6;
const TICK: u8 = 7;
const CANCEL: u8 = 8;

/// How long an object description from the directory origin is trusted before the file is
/// looked at again (a changed file gets a new version; its old chunks are never mixed in).
const META_MAX_AGE: Duration = Duration::from_secs(1);
/// How long in-flight responses may finish after shutdown is asked for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

fn ud(kind: u8, slot: u32, generation: u32) -> u64 {
    (u64::from(slot) << 32) | (u64::from(generation & 0x00ff_ffff) << 8) | u64::from(kind)
}

fn ud_parts(ud: u64) -> (u8, u32, u32) {
    (
        ud as u8,
        (ud >> 32) as u32,
        ((ud >> 8) & 0x00ff_ffff) as u32,
    )
}

fn timespec(d: Duration) -> Box<Timespec> {
    Box::new(Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()))
}

pub struct Worker {
    ring: Ring,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stats: Arc<CachePadded<WorkerStats>>,
    origin: Arc<DirOrigin>,
    conns: Vec<Conn>,
    free: Vec<u32>,
    live: usize,
    date: DateCache,
    header_timeout: Box<Timespec>,
    idle_timeout: Box<Timespec>,
    send_timeout: Box<Timespec>,
    tick: Box<Timespec>,
    completions: Vec<(u64, i32, u32)>,
    accepting: bool,
    draining: Option<Instant>,
}

impl Worker {
    pub fn new(
        listener: std::net::TcpListener,
        shared: Arc<Shared>,
        stats: Arc<CachePadded<WorkerStats>>,
        origin: Arc<DirOrigin>,
    ) -> std::io::Result<Worker> {
        let cfg = &shared.config;
        Ok(Worker {
            ring: Ring::new(4096)?,
            listener,
            header_timeout: timespec(Duration::from_millis(cfg.server.header_timeout_ms)),
            idle_timeout: timespec(Duration::from_millis(cfg.server.idle_timeout_ms)),
            send_timeout: timespec(Duration::from_millis(cfg.server.idle_timeout_ms)),
            tick: timespec(Duration::from_millis(200)),
            shared,
            stats,
            origin,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            date: DateCache::new(SystemTime::now()),
            completions: Vec::with_capacity(1024),
            accepting: true,
            draining: None,
        })
    }

    /// Runs until shutdown is asked for and the connections are drained.
    pub fn run(mut self) -> std::io::Result<()> {
        self.ring
            .accept_multi(self.listener.as_raw_fd(), ud(ACCEPT, 0, 0))?;
        // SAFETY: `self.tick` is boxed and lives as long as the worker.
        unsafe { self.ring.timeout(&*self.tick, ud(TICK, 0, 0))? };
        loop {
            match self.ring.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            self.completions.clear();
            for cqe in self.ring.ring.completion() {
                self.completions
                    .push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
            self.date.update(SystemTime::now());
            for i in 0..self.completions.len() {
                let (u, res, flags) = self.completions[i];
                self.complete(u, res, flags)?;
            }
            if self.draining.is_some() && self.live == 0 && !self.accepting {
                return Ok(());
            }
        }
    }

    fn complete(&mut self, u: u64, res: i32, flags: u32) -> std::io::Result<()> {
        let (kind, slot, generation) = ud_parts(u);
        match kind {
            ACCEPT => self.on_accept(res, flags),
            TICK => self.on_tick(),
            CANCEL => Ok(()),
            _ => {
                let Some(c) = self.conns.get_mut(slot as usize) else {
                    return Ok(());
                };
                if c.generation & 0x00ff_ffff != generation || c.inflight == 0 {
                    log::error!("completion for a stale slot {slot} (kind {kind})");
                    return Ok(());
                }
                c.inflight -= 1;
                if c.closing {
                    self.maybe_free(slot);
                    return Ok(());
                }
                match kind {
                    RECV => self.on_recv(slot, res),
                    SEND => self.on_send(slot, res),
                    READ => self.on_read(slot, res),
                    _ => Ok(()), // timeouts: the linked operation reports the outcome
                }
            }
        }
    }

    fn on_tick(&mut self) -> std::io::Result<()> {
        if self.shared.shutdown.load(Ordering::Relaxed) && self.draining.is_none() {
            self.draining = Some(Instant::now());
            if self.accepting {
                self.ring.cancel(ud(ACCEPT, 0, 0), ud(CANCEL, 0, 0))?;
            }
            // Idle connections go now; busy ones close after their response.
            for slot in 0..self.conns.len() as u32 {
                let c = &mut self.conns[slot as usize];
                if c.fd < 0 || c.closing {
                    continue;
                }
                c.close_after = true;
                if c.phase == Phase::Recv {
                    self.close(slot);
                }
            }
        }
        if let Some(t) = self.draining
            && t.elapsed() > DRAIN_DEADLINE
        {
            for slot in 0..self.conns.len() as u32 {
                if self.conns[slot as usize].fd >= 0 {
                    self.close(slot);
                }
            }
        }
        // SAFETY: `self.tick` is boxed and lives as long as the worker.
        unsafe { self.ring.timeout(&*self.tick, ud(TICK, 0, 0)) }
    }

    fn on_accept(&mut self, res: i32, flags: u32) -> std::io::Result<()> {
        if !io_uring::cqueue::more(flags) {
            if self.draining.is_some() {
                self.accepting = false;
            } else {
                // The kernel ended the multishot (e.g. out of memory): arm it again.
                self.ring
                    .accept_multi(self.listener.as_raw_fd(), ud(ACCEPT, 0, 0))?;
            }
        }
        if res < 0 {
            if res != -libc::ECANCELED {
                log::warn!("accept: {}", std::io::Error::from_raw_os_error(-res));
            }
            return Ok(());
        }
        let fd = res as RawFd;
        if self.live >= self.shared.config.server.max_connections || self.draining.is_some() {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            sys::close(fd);
            return Ok(());
        }
        sys::set_nodelay(fd);
        let rbuf_len = self.shared.config.server.limits.max_head_bytes + 4096;
        let slot = match self.free.pop() {
            Some(s) => {
                let c = &mut self.conns[s as usize];
                let g = c.generation.wrapping_add(1);
                c.reset(fd, g);
                s
            }
            None => {
                self.conns.push(Conn::new(fd, 0, rbuf_len));
                (self.conns.len() - 1) as u32
            }
        };
        self.live += 1;
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.submit_recv(slot)
    }

    fn submit_recv(&mut self, slot: u32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        if c.rstart > 0 {
            c.rbuf.copy_within(c.rstart..c.rend, 0);
            c.rend -= c.rstart;
            c.rstart = 0;
        }
        let timeout: *const Timespec = if c.rend > 0 {
            &*self.header_timeout
        } else {
            &*self.idle_timeout
        };
        let room = &mut c.rbuf[c.rend..];
        c.phase = Phase::Recv;
        c.inflight += 2;
        let g = c.generation;
        // SAFETY: `rbuf` is a boxed slice owned by the slot, freed only once the slot's
        // in-flight count is 0; the timespecs are boxed in the worker.
        unsafe {
            self.ring.recv(
                c.fd,
                room.as_mut_ptr(),
                room.len() as u32,
                ud(RECV, slot, g),
                timeout,
                ud(RECV_TIMEOUT, slot, g),
            )
        }
    }

    fn submit_send(&mut self, slot: u32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        c.send.prepare();
        c.phase = Phase::Send;
        c.inflight += 2;
        let g = c.generation;
        // SAFETY: the msghdr and iovecs live in the slot's boxed SendState and point into its
        // head Vec and body Bytes, none of which change until the send completes.
        unsafe {
            self.ring.sendmsg(
                c.fd,
                &c.send.msg,
                ud(SEND, slot, g),
                &*self.send_timeout,
                ud(SEND_TIMEOUT, slot, g),
            )
        }
    }

    fn on_recv(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        if res <= 0 {
            self.close(slot);
            return Ok(());
        }
        self.conns[slot as usize].rend += res as usize;
        self.drive(slot)
    }

    fn on_send(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        if res < 0 {
            self.close(slot);
            return Ok(());
        }
        let c = &mut self.conns[slot as usize];
        let body = c.send.advance(res as usize);
        self.stats.bytes.fetch_add(res as u64, Ordering::Relaxed);
        let _ = body;
        if c.send.pending() > 0 {
            return self.submit_send(slot);
        }
        self.drive(slot)
    }

    fn on_read(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let (Some(fill), Some(body)) = (c.fill.as_mut(), c.body.as_ref()) else {
            self.close(slot);
            return Ok(());
        };
        if res <= 0 {
            // The file shrank or failed under us: the head promised more bytes than we can
            // send, so the client must see a cut connection, never a short body as whole.
            log::warn!(
                "origin read of {:?} chunk {} failed: {res}",
                c.path,
                fill.index
            );
            self.shared.meta.remove(&c.path);
            self.close(slot);
            return Ok(());
        }
        fill.got += res as usize;
        if fill.got < fill.buf.len() {
            return self.submit_read(slot);
        }
        let fill = c.fill.take().expect("checked above");
        let version = body.meta.version;
        let chunk = Bytes::from(fill.buf);
        let key = ChunkRef {
            object: &c.path,
            version,
            index: fill.index,
        };
        self.shared.memory.insert(key.to_owned_key(), chunk);
        self.drive(slot)
    }

    fn submit_read(&mut self, slot: u32) -> std::io::Result<()> {
        let layout = self.shared.layout;
        let c = &mut self.conns[slot as usize];
        let (Some(fill), Some(body)) = (c.fill.as_mut(), c.body.as_ref()) else {
            return Ok(());
        };
        let Some(file) = body.file.as_ref() else {
            return Ok(());
        };
        let offset = layout.chunk_start(fill.index) + fill.got as u64;
        let room = &mut fill.buf[fill.got..];
        c.phase = Phase::Fill;
        c.inflight += 1;
        // SAFETY: `fill.buf` is a heap Vec owned by the slot and kept until the read completes.
        unsafe {
            self.ring.read(
                file.as_raw_fd(),
                room.as_mut_ptr(),
                room.len() as u32,
                offset,
                ud(READ, slot, c.generation),
            )
        }
    }

    /// Moves a connection forward until it must wait for the kernel.
    fn drive(&mut self, slot: u32) -> std::io::Result<()> {
        loop {
            let c = &mut self.conns[slot as usize];
            if c.closing {
                return Ok(());
            }
            if c.send.pending() > 0 {
                return self.submit_send(slot);
            }
            if let Some(body) = c.body.as_mut() {
                if body.pos < body.end {
                    match self.next_piece(slot)? {
                        true => continue,
                        false => return Ok(()),
                    }
                }
                c.body = None;
            }
            if c.close_after {
                self.close(slot);
                return Ok(());
            }
            // Skip a request body we do not use.
            if c.discard > 0 {
                let n = (c.discard.min((c.rend - c.rstart) as u64)) as usize;
                c.rstart += n;
                c.discard -= n as u64;
                if c.discard > 0 {
                    return self.submit_recv(slot);
                }
            }
            if c.rstart == c.rend {
                c.rstart = 0;
                c.rend = 0;
                return self.submit_recv(slot);
            }
            let limits = &self.shared.limits;
            match parse_request(&c.rbuf[c.rstart..c.rend], limits) {
                Ok(Parsed::Partial) => {
                    if c.rend - c.rstart >= limits.max_head_bytes {
                        self.error(slot, 431);
                        continue;
                    }
                    return self.submit_recv(slot);
                }
                Ok(Parsed::Complete { request, head_len }) => {
                    let req = RequestInfo {
                        method: request.method,
                        version: request.version,
                        keep_alive: request.keep_alive,
                    };
                    c.path.clear();
                    c.path.push_str(request.path);
                    let range = request.range.map(copy_small);
                    let inm = request.if_none_match.map(copy_small);
                    let content_length = request.content_length;
                    c.rstart += head_len;
                    c.discard = content_length;
                    self.respond(slot, &req, range.as_ref(), inm.as_ref());
                }
                Err(e) => {
                    self.error(slot, e.status());
                }
            }
        }
    }

    /// Queues the next body piece; returns false when it has to wait for an origin read.
    fn next_piece(&mut self, slot: u32) -> std::io::Result<bool> {
        let layout = self.shared.layout;
        let c = &mut self.conns[slot as usize];
        let Some(body) = c.body.as_mut() else {
            return Ok(true);
        };
        let index = layout.chunk_of(body.pos);
        let key = ChunkRef {
            object: &c.path,
            version: body.meta.version,
            index,
        };
        if let Some(chunk) = self.shared.memory.get(&key) {
            let start = layout.chunk_start(index);
            let from = (body.pos - start) as usize;
            let to = ((body.end - start) as usize).min(chunk.len());
            if from >= to {
                // A stored chunk shorter than the object says: never send it.
                log::error!(
                    "chunk {index} of {:?} is short; dropping the connection",
                    c.path
                );
                self.close(slot);
                return Ok(false);
            }
            c.send.body = chunk.slice(from..to);
            c.send.body_off = 0;
            body.pos += (to - from) as u64;
            return Ok(true);
        }
        // Miss: read the chunk from the origin file into a new buffer.
        if body.file.is_none() {
            match self.origin.open_object(&c.path) {
                Ok((file, meta)) if meta.version == body.meta.version => body.file = Some(file),
                _ => {
                    // The object changed or vanished since its head was sent.
                    self.shared.meta.remove(&c.path);
                    self.close(slot);
                    return Ok(false);
                }
            }
        }
        let len = layout.chunk_len(body.meta.len, index) as usize;
        c.fill = Some(Fill {
            buf: vec![0u8; len],
            got: 0,
            index,
        });
        self.submit_read(slot)?;
        Ok(false)
    }

    /// Starts the response to a parsed request.
    fn respond(
        &mut self,
        slot: u32,
        req: &RequestInfo,
        range: Option<&Small>,
        inm: Option<&Small>,
    ) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if !matches!(req.method, Method::Get | Method::Head) {
            self.simple(
                slot,
                req,
                405,
                &[("Allow", b"GET, HEAD")],
                "method not allowed\n",
            );
            return;
        }
        let now = Instant::now();
        let cached = self.shared.meta.get(&self.conns[slot as usize].path);
        let mut file = None;
        let meta = match cached {
            Some(m) if m.is_fresh(now, META_MAX_AGE) => m,
            _ => match self.origin.open_object(&self.conns[slot as usize].path) {
                Ok((f, m)) => {
                    file = Some(f);
                    self.shared.meta.insert(&self.conns[slot as usize].path, m)
                }
                Err(OriginError::NotFound) => {
                    self.simple(slot, req, 404, &[], "not found\n");
                    return;
                }
                Err(OriginError::BadPath) => {
                    self.simple(slot, req, 400, &[], "bad path\n");
                    return;
                }
                Err(OriginError::Io(kind)) => {
                    log::warn!("origin: {kind:?}");
                    self.simple(slot, req, 502, &[], "origin error\n");
                    return;
                }
            },
        };
        let len = meta.len;
        if let Some(v) = inm
            && relay_proto::conditional::if_none_match_hits(
                v.as_bytes(),
                Some(meta.etag.as_bytes()),
            )
        {
            self.head_only(slot, req, 304, &meta, None);
            return;
        }
        let mut ranges = [ByteRange::default(); relay_proto::range::MAX_RANGES];
        let (status, start, end) =
            match range.map(|r| relay_proto::range::parse_range(r.as_bytes(), len, &mut ranges)) {
                Some(RangeSpec::Single(r)) => (206, r.start, r.end + 1),
                Some(RangeSpec::Unsatisfiable) => {
                    let c = &mut self.conns[slot as usize];
                    let head = ResponseHead {
                        content_length: Some(0),
                        content_range: Some(relay_proto::ContentRange::Unsatisfied { total: len }),
                        ..base_head(&self.date, 416, req, None)
                    };
                    head.encode(&mut c.send.head);
                    if !req.keep_alive {
                        c.close_after = true;
                    }
                    return;
                }
                _ => (200, 0, len),
            };
        // Hit when every chunk the body needs is in memory now.
        let layout = self.shared.layout;
        let c = &mut self.conns[slot as usize];
        let hit = start >= end
            || (layout.chunk_of(start)..=layout.chunk_of(end - 1)).all(|i| {
                self.shared.memory.contains(&ChunkRef {
                    object: &c.path,
                    version: meta.version,
                    index: i,
                })
            });
        if hit {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
        }
        let content_range = (status == 206).then(|| relay_proto::ContentRange::Bytes {
            start,
            end: end - 1,
            total: len,
        });
        let head = ResponseHead {
            content_length: Some(end - start),
            etag: Some(meta.etag.as_bytes()),
            last_modified: Some(meta.last_modified.as_bytes()),
            content_range,
            accept_ranges: true,
            content_type: Some("application/octet-stream"),
            ..base_head(
                &self.date,
                status,
                req,
                Some(if hit { "hit" } else { "fwd=miss" }),
            )
        };
        head.encode(&mut c.send.head);
        if !req.keep_alive {
            c.close_after = true;
        }
        if req.method == Method::Get && end > start {
            c.body = Some(Body {
                meta,
                pos: start,
                end,
                file,
            });
        }
    }

    fn head_only(
        &mut self,
        slot: u32,
        req: &RequestInfo,
        status: u16,
        meta: &ObjectMeta,
        cache_status: Option<&str>,
    ) {
        let head = ResponseHead {
            etag: Some(meta.etag.as_bytes()),
            last_modified: Some(meta.last_modified.as_bytes()),
            ..base_head(&self.date, status, req, cache_status)
        };
        let c = &mut self.conns[slot as usize];
        head.encode(&mut c.send.head);
        if !req.keep_alive {
            c.close_after = true;
        }
    }

    /// A small complete response (errors, 404) on a connection that stays usable.
    fn simple(
        &mut self,
        slot: u32,
        req: &RequestInfo,
        status: u16,
        extra: &[(&str, &[u8])],
        text: &'static str,
    ) {
        let head = ResponseHead {
            content_length: Some(text.len() as u64),
            content_type: Some("text/plain"),
            extra,
            ..base_head(&self.date, status, req, None)
        };
        let c = &mut self.conns[slot as usize];
        head.encode(&mut c.send.head);
        if req.method != Method::Head {
            c.send.body = Bytes::from_static(text.as_bytes());
            c.send.body_off = 0;
        }
        if !req.keep_alive {
            c.close_after = true;
        }
    }

    /// An error response after which the connection closes (the request stream is no longer
    /// trustworthy).
    fn error(&mut self, slot: u32, status: u16) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let c = &mut self.conns[slot as usize];
        relay_proto::error_response(status, self.date.get(), &mut c.send.head);
        c.close_after = true;
        c.rstart = c.rend;
        c.discard = 0;
    }

    fn close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.closing || c.fd < 0 {
            return;
        }
        c.closing = true;
        // Pending receives and sends complete at once; the slot is freed when they have.
        sys::shutdown(c.fd);
        self.maybe_free(slot);
    }

    fn maybe_free(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.inflight > 0 || c.fd < 0 {
            return;
        }
        sys::close(c.fd);
        c.fd = -1;
        c.body = None;
        c.fill = None;
        c.send.body = Bytes::new();
        self.free.push(slot);
        self.live -= 1;
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn base_head<'a>(
    date: &'a DateCache,
    status: u16,
    req: &RequestInfo,
    cache_status: Option<&'a str>,
) -> ResponseHead<'a> {
    ResponseHead {
        version: req.version,
        keep_alive: req.keep_alive,
        cache_status,
        ..ResponseHead::new(status, date.get())
    }
}

/// What `respond` needs of a request once its borrow of the receive buffer ends.
struct RequestInfo {
    method: Method,
    version: u8,
    keep_alive: bool,
}

/// A header value copied onto the stack (values longer than 256 bytes are ignored).
struct Small {
    buf: [u8; 256],
    len: usize,
}

impl Small {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn copy_small(v: &[u8]) -> Small {
    let mut s = Small {
        buf: [0; 256],
        len: 0,
    };
    if v.len() <= s.buf.len() {
        s.buf[..v.len()].copy_from_slice(v);
        s.len = v.len();
    }
    s
}

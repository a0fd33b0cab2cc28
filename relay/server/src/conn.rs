//! Per-connection state owned by a worker's slot table.

use bytes::Bytes;
use relay_cache::ObjectMeta;
use relay_cache::fill::{Fill as UpFill, Pending};
use relay_proto::Method;
use relay_proto::range::{ByteRange, MAX_RANGES};
use relay_upstream::budget::Reservation;
use std::fs::File;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

/// What a connection waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A receive is in flight (reading a request head).
    Recv,
    /// A send is in flight.
    Send,
    /// A chunk read from the origin is in flight.
    Fill,
    /// Waiting for an upstream fetch (an object head or chunk bytes); woken through the
    /// worker's eventfd.
    Wait,
}

/// The bytes of one `sendmsg`: a response head and one body piece. Boxed so the `msghdr` and
/// iovecs the kernel reads keep their address while the slot table is reorganised.
pub struct SendState {
    pub head: Vec<u8>,
    pub head_off: usize,
    pub body: Bytes,
    pub body_off: usize,
    pub iov: [libc::iovec; 2],
    pub msg: libc::msghdr,
}

impl SendState {
    pub fn new(head_capacity: usize) -> Box<SendState> {
        Box::new(SendState {
            head: Vec::with_capacity(head_capacity),
            head_off: 0,
            body: Bytes::new(),
            body_off: 0,
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 2],
            // SAFETY: msghdr is a plain C struct; all-zero is its documented empty value.
            msg: unsafe { std::mem::zeroed() },
        })
    }

    pub fn pending(&self) -> usize {
        (self.head.len() - self.head_off) + (self.body.len() - self.body_off)
    }

    /// Points the iovecs and msghdr at what is left to send.
    pub fn prepare(&mut self) {
        let head = &self.head[self.head_off..];
        let body = &self.body[self.body_off..];
        let mut n = 0;
        for part in [head, body] {
            if !part.is_empty() {
                self.iov[n] = libc::iovec {
                    iov_base: part.as_ptr() as *mut libc::c_void,
                    iov_len: part.len(),
                };
                n += 1;
            }
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n;
    }

    /// Accounts `sent` bytes; returns how many of them were body bytes.
    pub fn advance(&mut self, mut sent: usize) -> usize {
        let h = (self.head.len() - self.head_off).min(sent);
        self.head_off += h;
        sent -= h;
        let b = (self.body.len() - self.body_off).min(sent);
        self.body_off += b;
        if self.pending() == 0 {
            self.head.clear();
            self.head_off = 0;
            self.body = Bytes::new();
            self.body_off = 0;
        }
        b
    }
}

/// The body of the response being sent: bytes `pos..end` of one object version.
pub struct Body {
    pub meta: Arc<ObjectMeta>,
    pub pos: u64,
    pub end: u64,
    /// The origin file, once a chunk had to be read from it.
    pub file: Option<File>,
}

/// A chunk being read from the directory origin.
pub struct FileRead {
    /// The chunk's memory (registered arena when large enough): read into, then stored.
    pub buf: relay_cache::arena::ChunkBuf,
    pub got: usize,
    /// The chunk's own key: what it is stored (and shared) under, whatever the connection
    /// answers by the time the read completes.
    pub key: relay_cache::ChunkKey,
}

pub struct Conn {
    pub fd: RawFd,
    pub generation: u32,
    pub inflight: u32,
    pub closing: bool,
    pub phase: Phase,
    /// When the pending receive or send is given up (checked by the worker's sweep).
    pub deadline: Instant,
    /// When the response being sent was started (for the latency histogram).
    pub req_start: Option<Instant>,
    /// When the first byte of the request being read arrived.
    pub request_started: Option<Instant>,
    /// Receive buffer; unconsumed request bytes are `rbuf[rstart..rend]`.
    pub rbuf: Box<[u8]>,
    pub rstart: usize,
    pub rend: usize,
    /// Request body bytes still to skip (bodies of GET/HEAD are read and ignored).
    pub discard: u64,
    /// The request's body is chunked: its decoder, while the body is collected for a
    /// pass-through or skipped after the response.
    pub chunked: Option<relay_proto::chunked::Decoder>,
    /// Close once the current response is sent.
    pub close_after: bool,
    /// Cache key of the current response's object (capacity kept across requests).
    pub path: String,
    pub send: Box<SendState>,
    pub body: Option<Body>,
    pub fill: Option<FileRead>,
    /// Where the current request's object comes from.
    pub route: Route,
    /// The request line and headers a response needs, kept while waiting for upstream.
    pub saved: Box<Saved>,
    /// The upstream request target (path and query) for HTTP origins.
    pub upath: String,
    /// Where the current request's head (HTTP origins) lies in `rbuf`, and a copy of it,
    /// made when the response has to wait for upstream or before `rbuf` is compacted under
    /// it (`head_saved`): see [`Conn::head`].
    pub head_at: (usize, usize),
    pub head_copy: Vec<u8>,
    pub head_saved: bool,
    /// The client's header fields the upstream fetches of this response send; built on the
    /// response's first miss ([`Conn::fill_forward`]), never on a hit.
    pub forward: Option<relay_upstream::Forward>,
    /// `path` names a variant of a response that varies (the base key plus the `Vary`
    /// values this request sends).
    pub variant: bool,
    /// The object head being fetched upstream, while the response waits for it.
    pub pending: Option<Arc<Pending>>,
    /// Disk-tier description reads made for the request being answered (`RESTORE_*` bits).
    pub restores: u8,
    /// The in-flight head entry this connection owns while it restores a description from
    /// the disk tier (other clients asking meanwhile wait on it).
    pub restore_entry: Option<RestoreEntry>,
    /// The chunk read (disk tier or directory origin) this connection makes for others too
    /// (its key), or the one another connection makes that this one waits for.
    pub chunk_share: Option<(relay_cache::ChunkKey, Arc<ChunkShare>)>,
    pub chunk_wait: Option<(relay_cache::ChunkKey, Arc<ChunkShare>)>,
    /// Length of the request's own key in `path` (before a variant's part is appended).
    pub path_base: usize,
    /// This connection's request started the pending head fetch (its fields went upstream).
    pub head_owner: bool,
    /// That fetch, kept while its answer (one that may not be stored) is sent: the later
    /// chunks of a whole body the origin sent at once are read from it.
    pub owner_fetch: Option<Arc<Pending>>,
    /// The `Cache-Status` of a pass-through response (RFC 9211), set when it starts.
    pub pass_note: &'static str,
    /// The stale description a revalidation started from (served on stale-if-error).
    pub stale: Option<Arc<ObjectMeta>>,
    /// A request passed through to the origin (methods other than GET/HEAD): its outcome.
    pub pass: Option<Arc<relay_upstream::PassSlot>>,
    /// The passed-through response's body, streamed as it arrives.
    pub pass_body: Option<PassReader>,
    /// The request body being collected for a pass-through, and how much is still to come.
    pub upload: Vec<u8>,
    pub upload_left: u64,
    /// What `upload` holds of the pass-through budget (`origin.pass_buffer_bytes`); it goes
    /// to the upstream with the body ([`HeldBody`]).
    pub upload_reserved: Option<Reservation>,
    /// The pass-through request, ready once its body is complete.
    pub pass_request: Option<Box<PassRequest>>,
    /// A chunk being read from the disk tier.
    pub dread: Option<DiskRead>,
    /// A directory-origin file being opened and described through the ring.
    pub dopen: Option<DirOpen>,
    /// A chunk read (and verified) from the disk tier for this response: (version, index,
    /// bytes). Sent from here even if the memory tier cannot keep it.
    pub local: Option<(u64, u64, bytes::Bytes)>,
    /// The chunk fill the body is being streamed from.
    pub src: Option<Arc<UpFill>>,
    /// A multishot receive is armed (bytes arrive without a submission per request).
    pub multishot: bool,
    /// Bytes received while the receive buffer was full (a client pipelining far ahead).
    pub overflow: Vec<u8>,
    /// Zero-copy sends are worth trying on this connection (off once the kernel reports
    /// that it copied anyway, e.g. over loopback).
    pub zc_ok: bool,
    /// A zero-copy send is in flight (until its notification, or its failure without one):
    /// the bytes it reported sent, applied when the notification comes. The notification
    /// comes only once the peer has acked the bytes, so a close meanwhile resets the
    /// connection rather than wait on a client that stopped reading.
    pub zc_sent: Option<usize>,
    /// The connection closes after its response, and whatever the client still sends is read
    /// and dropped meanwhile (an error answered before its request was read whole: a
    /// lingering close, so the client is not cut off while it is still sending).
    pub linger: Option<Linger>,
    /// Multi-range state (reused across requests; `n == 0` when the response is not
    /// multipart).
    pub multi: MultiRange,
}

/// The ranges of a `multipart/byteranges` response and which part comes next.
pub struct MultiRange {
    pub ranges: [ByteRange; MAX_RANGES],
    pub n: usize,
    pub next: usize,
    pub total: u64,
    pub content_type: String,
}

impl Conn {
    pub fn new(fd: RawFd, generation: u32, rbuf_len: usize) -> Conn {
        Conn {
            fd,
            generation,
            inflight: 0,
            closing: false,
            phase: Phase::Recv,
            deadline: Instant::now(),
            request_started: None,
            req_start: None,
            rbuf: vec![0u8; rbuf_len].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            discard: 0,
            chunked: None,
            close_after: false,
            path: String::with_capacity(256),
            send: SendState::new(1024),
            body: None,
            fill: None,
            route: Route::Directory,
            saved: Box::new(Saved {
                req: RequestInfo {
                    method: Method::Get,
                    version: 1,
                    keep_alive: true,
                },
                cond: Conditionals::default(),
            }),
            upath: String::with_capacity(256),
            head_at: (0, 0),
            head_copy: Vec::with_capacity(1024),
            head_saved: false,
            forward: None,
            variant: false,
            pending: None,
            head_owner: false,
            owner_fetch: None,
            restores: 0,
            restore_entry: None,
            chunk_share: None,
            chunk_wait: None,
            path_base: 0,
            pass_note: "fwd=uri-miss",
            pass: None,
            multishot: false,
            overflow: Vec::new(),
            zc_ok: true,
            linger: None,
            zc_sent: None,
            pass_body: None,
            upload: Vec::new(),
            upload_left: 0,
            upload_reserved: None,
            pass_request: None,
            dread: None,
            dopen: None,
            local: None,
            stale: None,
            src: None,
            multi: MultiRange {
                ranges: [ByteRange::default(); MAX_RANGES],
                n: 0,
                next: 0,
                total: 0,
                content_type: String::with_capacity(64),
            },
        }
    }

    /// What a wait was for has come (an origin head, a pass-through's answer, another
    /// connection's read): the next wait, say for the body's first bytes, starts from
    /// `deadline` rather than inheriting what the first one used (`Worker::wait` keeps the
    /// deadline of a connection already waiting).
    pub fn waited(&mut self, deadline: Instant) {
        if self.phase == Phase::Wait {
            self.phase = Phase::Fill;
            self.deadline = deadline;
        }
    }

    /// Keeps the pass-through budget reserved for what `upload` holds (its capacity) as a
    /// chunked body grows; false when the budget has no room for it.
    pub fn reserve_upload(&mut self) -> bool {
        let held = self.upload.capacity() as u64;
        match self.upload_reserved.as_mut() {
            Some(r) if held > r.bytes() => r.grow(held - r.bytes()),
            _ => true,
        }
    }

    /// The collected request body, for the upstream: its reservation travels with its
    /// bytes and is given back when the upstream drops them.
    pub fn take_upload(&mut self) -> Bytes {
        let bytes = std::mem::take(&mut self.upload);
        match self.upload_reserved.take() {
            Some(reserved) => Bytes::from_owner(HeldBody {
                bytes,
                _reserved: reserved,
            }),
            None => Bytes::from(bytes),
        }
    }

    /// Decodes what has arrived of the request's chunked body, if it has one: into `upload`
    /// when `keep` (a pass-through's body), else skipped. Past `max` body bytes, `TooLong`
    /// and nothing more is kept. `Whole` once the body is (or there is none).
    pub fn decode_chunked(
        &mut self,
        keep: bool,
        max: u64,
    ) -> Result<Upload, relay_proto::chunked::ChunkedError> {
        let Some(dec) = self.chunked.as_mut() else {
            return Ok(Upload::Whole);
        };
        let mut seen = dec.body_len();
        let upload = &mut self.upload;
        let mut too_long = false;
        let p = dec.decode(&self.rbuf[self.rstart..self.rend], |b| {
            seen += b.len() as u64;
            if seen > max {
                too_long = true;
            } else if keep {
                upload.extend_from_slice(b);
            }
        })?;
        self.rstart += p.consumed;
        if too_long {
            return Ok(Upload::TooLong);
        }
        if p.done {
            self.chunked = None;
            // What grew by doubling is trimmed before it is held until the origin has it.
            self.upload.shrink_to_fit();
            if let Some(r) = self.upload_reserved.as_mut() {
                r.shrink_to(self.upload.capacity() as u64);
            }
            return Ok(Upload::Whole);
        }
        Ok(Upload::Partial)
    }

    /// Reuses a slot's buffers for a new connection.
    pub fn reset(&mut self, fd: RawFd, generation: u32) {
        self.fd = fd;
        self.generation = generation;
        self.inflight = 0;
        self.closing = false;
        self.phase = Phase::Recv;
        self.request_started = None;
        self.req_start = None;
        self.rstart = 0;
        self.rend = 0;
        self.discard = 0;
        self.chunked = None;
        self.close_after = false;
        self.path.clear();
        self.head_saved = false;
        self.forward = None;
        self.variant = false;
        self.send.head.clear();
        self.send.head_off = 0;
        self.send.body_off = 0;
        self.head_owner = false;
        self.multishot = false;
        self.overflow = Vec::new();
        self.zc_ok = true;
        self.zc_sent = None;
        self.linger = None;
        self.upload_left = 0;
        self.multi.n = 0;
        // (and `upload`, `upload_reserved`, `pass_request` with the rest)
        self.release();
    }
}

impl Conn {
    /// Drops everything that holds cache memory (chunks, fills, arena blocks) once the
    /// connection is closed and nothing is in flight.
    pub fn release(&mut self) {
        self.owner_fetch = None;
        self.body = None;
        self.fill = None;
        self.send.body = Bytes::new();
        self.pending = None;
        self.pass = None;
        self.pass_body = None;
        self.dread = None;
        self.dopen = None;
        self.chunk_wait = None;
        self.local = None;
        self.stale = None;
        self.src = None;
        self.upload = Vec::new();
        self.upload_reserved = None;
        self.pass_request = None;
    }

    /// Drops what this connection holds apart from memory the kernel may still read or
    /// write for an operation in flight, which is leaked: the receive buffer, the send state
    /// (head and body piece) and the targets of file reads. For a worker that stops with
    /// operations in flight.
    pub fn forget_kernel_memory(mut self) {
        std::mem::forget(std::mem::take(&mut self.rbuf));
        std::mem::forget(std::mem::replace(&mut self.send, SendState::new(0)));
        std::mem::forget(self.fill.take());
        // Their open files close (the kernel holds its own reference for a read in flight).
        if let Some(d) = self.dread.as_mut() {
            d.file = None;
        }
        if let Some(d) = self.dopen.as_mut() {
            d.file = None;
        }
        std::mem::forget(self.dread.take());
        std::mem::forget(self.dopen.take());
        // Everything else (upstream slots and streams, budget reservations, cache entries)
        // drops here; a stream window the leaked send state still points into keeps its
        // share of the pass-through budget.
    }

    /// The head of the request being answered (HTTP origins): in `rbuf` until it is saved.
    pub fn head(&self) -> &[u8] {
        head_in(&self.rbuf, &self.head_copy, self.head_at, self.head_saved)
    }

    /// Copies the request's head out of `rbuf` (once per request): the response has to wait,
    /// or `rbuf` is about to be compacted under it. Allocation-free once `head_copy` has grown
    /// to the heads this connection sends.
    pub fn save_head(&mut self) {
        if self.head_saved || !matches!(self.route, Route::Http(_)) {
            return;
        }
        let (at, len) = self.head_at;
        self.head_copy.clear();
        if let Some(head) = self.rbuf.get(at..at + len) {
            self.head_copy.extend_from_slice(head);
        }
        self.head_saved = true;
    }

    /// Appends to `path` the variant of a response varying on `fields` that this request
    /// selects; false (and `path` unchanged) when it sends none of the fields.
    pub fn select_variant(&mut self, fields: &[String]) -> bool {
        // Field by field: `path` changes while the head is read.
        let head = head_in(&self.rbuf, &self.head_copy, self.head_at, self.head_saved);
        let mut slots = [httparse::EMPTY_HEADER; relay_proto::MAX_HEADERS_CAP];
        let mut req = httparse::Request::new(&mut slots);
        let _ = req.parse(head);
        let sent = req.headers.iter().map(|h| (h.name, h.value));
        relay_cache::key::push_variant(&mut self.path, fields, sent)
    }

    /// The client's end-to-end request fields an upstream fill sends for this response
    /// (`relay_proto::forward::FILL_OWN` left out), built on the first call — a miss.
    pub fn fill_forward(&mut self) -> relay_upstream::Forward {
        if let Some(f) = &self.forward {
            return f.clone();
        }
        let mut fields =
            relay_proto::forward::forwarded_fields(self.head(), relay_proto::forward::FILL_OWN);
        self.forwarded_for(&mut fields);
        let f: relay_upstream::Forward = fields.into();
        self.forward = Some(f.clone());
        f
    }
}

impl Conn {
    /// Appends `X-Forwarded-For: <client address>` to fields going upstream, after any the
    /// client sent (one more line of the same list, RFC 9110 §5.3). A shared fill carries
    /// the address of the client whose request started it.
    /// When the address cannot be read (the client reset the connection meanwhile), the
    /// entry says `unknown`: the last entry is always relay's own, never the client's.
    pub fn forwarded_for(&self, fields: &mut Vec<(String, Vec<u8>)>) {
        let who = crate::sys::peer_addr(self.fd).map_or_else(
            || "unknown".to_string(),
            |addr| addr.ip().to_canonical().to_string(),
        );
        fields.push(("X-Forwarded-For".to_string(), who.into_bytes()));
    }
}

/// A request's head: its saved copy, or where it lies in the receive buffer.
fn head_in<'a>(rbuf: &'a [u8], copy: &'a [u8], (at, len): (usize, usize), saved: bool) -> &'a [u8] {
    if saved {
        return copy;
    }
    rbuf.get(at..at + len).unwrap_or_default()
}

/// Which origin serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Directory,
    /// Index into `[[origin.http]]`.
    Http(usize),
}

/// What a response needs of its request once the receive buffer moves on.
pub struct Saved {
    pub req: RequestInfo,
    pub cond: Conditionals,
}

/// The request line facts a response needs.
#[derive(Clone, Copy)]
pub struct RequestInfo {
    pub method: Method,
    pub version: u8,
    pub keep_alive: bool,
}

/// The request's conditional and range headers, copied out of the receive buffer.
#[derive(Default)]
pub struct Conditionals {
    pub range: Option<Small>,
    pub if_range: Option<Small>,
    pub if_none_match: Option<Small>,
    pub if_modified_since: Option<Small>,
}

/// A header value copied out of the receive buffer (values over 256 bytes are dropped).
pub struct Small {
    buf: [u8; 256],
    len: usize,
}

impl Small {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn copy(v: &[u8]) -> Small {
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
}

/// A chunk read (from the disk tier, or from a directory origin's file) shared by every
/// connection that needs the chunk while it is in flight: the reading connection publishes
/// the (verified) bytes, or None (the file was bad or gone, or its client left), and the
/// others take them, or fetch or read the chunk themselves.
#[derive(Default)]
pub struct ChunkShare {
    pub result: std::sync::OnceLock<Option<bytes::Bytes>>,
    /// The workers with a connection waiting.
    pub watchers: relay_cache::wake::Watchers,
}

/// An in-flight head entry owned by a connection restoring its description from the disk
/// tier. When the restore cannot publish the description (nothing usable on disk, or the
/// client went away), `fallback`, a head fetch under the same entry, does.
pub struct RestoreEntry {
    pub key: Arc<str>,
    pub pending: Arc<Pending>,
    pub fallback: relay_upstream::HeadRequest,
}

/// The body of a passed-through response, as this connection reads it.
pub enum PassReader {
    /// Streamed through a window: the reader releases what it has sent (and, dropped,
    /// tells the upstream to stop).
    Stream(relay_upstream::stream::StreamReader),
    /// Buffered whole (no `Content-Length` from the origin).
    Whole(Arc<UpFill>),
}

/// A directory-origin file being opened (`openat2` beneath the root) and described
/// (`statx`) through the ring. The path, `open_how` and `statx` buffer live here until
/// their operations complete (the ring's buffer rule).
pub struct DirOpen {
    pub path: std::ffi::CString,
    pub how: Box<io_uring::types::OpenHow>,
    pub stat: Box<libc::statx>,
    /// The open file (None until `openat2` completes).
    pub file: Option<File>,
    /// The `openat2` has been submitted (by `drive`).
    pub submitted: bool,
    /// Describe the object and answer the saved request with it; or, when false, the
    /// object's description was cached and only its body needs the file.
    pub describe: bool,
}

impl DirOpen {
    pub fn new(path: std::ffi::CString, describe: bool) -> DirOpen {
        DirOpen {
            path,
            how: Box::new(
                io_uring::types::OpenHow::new()
                    .flags(crate::origin::OPEN_FLAGS)
                    .resolve(crate::origin::OPEN_RESOLVE),
            ),
            // SAFETY: statx is a plain C struct of integers; all-zero is a valid value.
            stat: Box::new(unsafe { std::mem::zeroed() }),
            file: None,
            submitted: false,
            describe,
        }
    }
}

/// A chunk file being read from the disk tier (whole file: header and body, verified on
/// completion).
pub struct DiskRead {
    pub plan: relay_cache::disk::ReadPlan,
    /// The chunk file's path, for the ring's `openat`.
    pub path: std::ffi::CString,
    /// The open chunk file (None until the ring's `openat` completes).
    pub file: Option<File>,
    /// The file's header (`..plan.body_offset`), read alongside the body.
    pub header: Vec<u8>,
    pub header_got: usize,
    /// The body (registered arena when large enough): verified, then sent and promoted.
    pub body: relay_cache::arena::ChunkBuf,
    pub body_got: usize,
    /// Reads of this chunk in flight (header and body go out together).
    pub reads: u8,
    /// A read failed (error or end of file before the planned length).
    pub failed: Option<i32>,
    /// The read rebuilds an object's description (its first chunk, after a restart).
    pub restore: bool,
}

impl DiskRead {
    /// A read of `plan`'s file, not yet opened: header into the heap, body into memory from
    /// the memory tier (the registered arena when large enough). None when the path cannot
    /// be handed to the kernel (an interior NUL; relay never names a chunk so).
    pub fn new(
        plan: relay_cache::disk::ReadPlan,
        memory: &relay_cache::MemoryTier,
        restore: bool,
    ) -> Option<DiskRead> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(plan.path.as_os_str().as_bytes()).ok()?;
        Some(DiskRead {
            header: vec![0u8; plan.body_offset as usize],
            body: memory.chunk_buf(plan.body_len as usize),
            plan,
            path,
            file: None,
            header_got: 0,
            body_got: 0,
            reads: 0,
            failed: None,
            restore,
        })
    }
}

/// A request to pass through, waiting for its body.
pub struct PassRequest {
    pub origin: usize,
    pub method: http::Method,
    pub headers: Vec<(String, Vec<u8>)>,
    pub host: String,
    /// The request's body goes with it (collected first); false for a GET that asks again
    /// for an answer another client's fetch may not share, whose body is skipped after it.
    pub with_body: bool,
}

/// A lingering close under way ([`Conn::linger`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// How many more bytes are read and dropped before it gives up.
    pub left: u64,
    /// The response is sent and the write side shut: only the lingering read remains.
    pub shut: bool,
}

impl Linger {
    pub const fn new(bytes: u64) -> Linger {
        Linger {
            left: bytes,
            shut: false,
        }
    }
}

/// How far a request body has been read ([`Conn::decode_chunked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Partial,
    Whole,
    /// Longer than the most relay collects.
    TooLong,
}

/// A request body with the share of the pass-through budget it holds.
pub struct HeldBody {
    bytes: Vec<u8>,
    /// Given back when the last `Bytes` of this body drops.
    _reserved: Reservation,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

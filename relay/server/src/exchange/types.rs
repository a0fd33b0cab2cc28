//! The data an exchange keeps between events: the body being sent, the reads it makes
//! (their buffers stay here, untouched, while the kernel has them: the ring's buffer rule),
//! the request facts a response needs, and what it shares with other connections.

use bytes::Bytes;
use relay_cache::ObjectMeta;
use relay_cache::inflight::Pending;
use relay_proto::Method;
use relay_proto::range::{ByteRange, MAX_RANGES};
use relay_upstream::budget::Reservation;
use std::fs::File;
use std::sync::Arc;

/// The bytes of the response being sent: a head and one body piece. The worker points its
/// `sendmsg` at them and the exchange leaves them alone until the send completes.
/// The head room a connection keeps between responses (most heads fit).
pub const HEAD_ROOM: usize = 1024;

/// The most body bytes one copying send takes: a larger piece (a 1 MiB chunk) goes out in
/// several. (Not a zero-copy send: its connection waits for the notification, which comes
/// once the peer has the bytes, before its next send, so a smaller one would cost a round
/// trip per piece on a real network.)
/// Measured on one core serving a 1 MiB object to the bench's load client (req/s, medians
/// of 3 alternated runs): whole 1 MiB sends 3.2k at 64 connections; sends of 64 KiB 7.5k,
/// 128 KiB 8.5k, 256 KiB 7.7k; at 256 connections 128 KiB 7.8k but 256 KiB 3.7k, at 1000
/// connections 128 KiB 6.3k and 1 MiB 2.9k. A response this large costs mostly kernel
/// work (the copy into the socket, the loopback delivery run as softirq); sends past a
/// few hundred KiB across many connections make it fall off a cliff.
pub const SEND_MAX: usize = 128 * 1024;

pub struct Outgoing {
    pub head: Vec<u8>,
    pub head_off: usize,
    pub body: Bytes,
    pub body_off: usize,
}

impl Outgoing {
    pub fn new(head_capacity: usize) -> Outgoing {
        Outgoing {
            head: Vec::with_capacity(head_capacity),
            head_off: 0,
            body: Bytes::new(),
            body_off: 0,
        }
    }

    /// Gives back head room a large head grew beyond the usual.
    pub fn trim(&mut self) {
        self.head.shrink_to(HEAD_ROOM);
    }

    /// Bytes still to send.
    pub fn pending(&self) -> usize {
        (self.head.len() - self.head_off) + (self.body.len() - self.body_off)
    }

    /// What is left of the head, then of the body piece.
    pub fn parts(&self) -> [&[u8]; 2] {
        self.sendable(usize::MAX)
    }

    /// [`Outgoing::parts`] with at most `max_body` bytes of the body: what one send takes
    /// ([`SEND_MAX`] for a copying send).
    pub fn sendable(&self, max_body: usize) -> [&[u8]; 2] {
        let end = self.body.len().min(self.body_off.saturating_add(max_body));
        [&self.head[self.head_off..], &self.body[self.body_off..end]]
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

/// The body of the response being sent: bytes `pos..end` of one object version (`end` is
/// `u64::MAX` while the length of an open-ended body is not known; it is set when the body
/// is found to end).
pub struct Body {
    pub meta: Arc<ObjectMeta>,
    pub pos: u64,
    pub end: u64,
    /// The origin file, once a chunk had to be read from it.
    pub file: Option<File>,
    /// How the body is delimited on the wire.
    pub chunked: Chunked,
    /// The checksum of the pieces sent so far, sent after them as a trailer field
    /// (`relay_cluster::peer::CHUNK_SUM`): a whole chunk streamed to another relay while
    /// it arrives here.
    pub sum: Option<relay_cache::disk::RunningSum>,
    /// The furthest chunk the fetches ahead of this body have seen to (`read_ahead`).
    pub ahead: u64,
    /// The fills those fetches started, in chunk order, held until the body reaches them:
    /// the memory tier may let a completed one go before then, and the chunk would be
    /// fetched again.
    pub ahead_fills: std::collections::VecDeque<Arc<relay_cache::fill::Fill>>,
    /// Of an object whose origin ignores Range (`relay_upstream::ranges`), the chunks the
    /// read-ahead found in memory, held until the body reaches them likewise: another
    /// answer for one the tier let go would cost the origin the object's start again.
    pub ahead_held: std::collections::VecDeque<(u64, bytes::Bytes)>,
    /// Where this body is, for the fetch that brings it from one answer (its
    /// `owner_fetch`): the fills it keeps that this body has not reached stay kept
    /// (`relay_cache::inflight::Pending::reader`).
    pub reader: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The streamed fetch those chunks are handed to while they run on from one another
    /// (`relay_upstream::feed`); dropped with the body, which ends the fetch.
    pub feed: Option<relay_upstream::feed::Feeder>,
    /// Chunks below this one were counted for the disk tier's admission.
    pub counted: u64,
}

/// Whether a body goes out in the chunked coding (HTTP/1.1, its length unknown when the
/// head went out), and how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    /// Delimited by the head's `Content-Length`, or by the connection's close.
    No,
    /// Chunked; no chunk went out yet.
    First,
    /// Chunked; the next chunk's size line starts with the CRLF that ends the previous one.
    More,
}

/// A chunk being read from the directory origin. Each read is followed by a `statx` of
/// the file (linked after it in the ring), so a file changed under the read is noticed;
/// both buffers stay here until both complete (the ring's buffer rule).
pub struct FileRead {
    /// The chunk's memory (registered arena when large enough): read into, then stored.
    pub buf: relay_cache::arena::ChunkBuf,
    pub got: usize,
    /// The chunk's own key: what it is stored (and shared) under, whatever the connection
    /// answers by the time the read completes. Its version is that of the description the
    /// response was built from.
    pub key: relay_cache::ChunkKey,
    /// What the `statx` after the last read found.
    pub stat: Box<libc::statx>,
    /// The last read's result, and its `statx`'s, as each completes.
    pub read: Option<i32>,
    pub checked: Option<i32>,
}

/// A `statx` buffer for the ring to fill (boxed: it stays put while the kernel writes it).
fn statx_buf() -> Box<libc::statx> {
    // SAFETY: statx is a plain C struct of integers; all-zero is a valid value.
    Box::new(unsafe { std::mem::zeroed() })
}

impl FileRead {
    pub fn new(buf: relay_cache::arena::ChunkBuf, key: relay_cache::ChunkKey) -> FileRead {
        FileRead {
            buf,
            got: 0,
            key,
            stat: statx_buf(),
            read: None,
            checked: None,
        }
    }
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
    /// What the request's own cache directives ask (none for most requests).
    pub asks: Asks,
    /// The request carries `Authorization` (RFC 9111 §3.5): only a stored response that
    /// says it may answer such requests does; its fills carry the credentials.
    pub authorized: bool,
}

/// What a request's `Cache-Control` (and `Pragma: no-cache`) asks of a stored response
/// (RFC 9111 §5.2.1, §5.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Asks {
    /// Validate before using a stored response (`no-cache`, `Pragma: no-cache`).
    pub no_cache: bool,
    /// Store nothing of the request or its response (`no-store`).
    pub no_store: bool,
    /// A stored response or 504, never the origin (`only-if-cached`).
    pub only_if_cached: bool,
    /// No response older than this (`max-age`), seconds.
    pub max_age: Option<u32>,
    /// Fresh for at least this much longer (`min-fresh`), seconds.
    pub min_fresh: Option<u32>,
    /// Stale by at most this much is fine (`max-stale`).
    pub max_stale: Option<relay_cache::policy::MaxStale>,
}

/// What a stored response is to a request ([`Asks::judge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usable {
    /// Fresh, and what the request accepts: served.
    Fresh,
    /// Stale, but the request's `max-stale` accepts it and the response allows it.
    StaleAccepted,
    /// To be validated with the origin (or, stale, served within a window it allows).
    Validate,
}

impl Asks {
    /// Reads a request's cache directives from its header fields, under the policy's
    /// settings (`Cache::policy`).
    pub fn read<'a>(
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        policy: &relay_cache::policy::PolicyConfig,
    ) -> Asks {
        let r = relay_cache::policy::RequestDirectives::from_request(b"GET", fields, policy);
        let d = &r.directives;
        Asks {
            no_cache: r.no_cache(),
            no_store: d.no_store,
            only_if_cached: d.only_if_cached,
            max_age: d.max_age,
            min_fresh: d.min_fresh,
            max_stale: d.max_stale,
        }
    }

    /// What `meta` is to this request at `now` (RFC 9111 §4.2, §5.2.1): `max-age` and
    /// `min-fresh` narrow what counts as fresh, `max-stale` widens it unless the response
    /// forbids serving it stale, `no-cache` sends every stored response to validation.
    pub fn judge(&self, meta: &ObjectMeta, now: std::time::Instant) -> Usable {
        if self.no_cache {
            return Usable::Validate;
        }
        if self.max_age.is_some_and(|n| meta.age(now) > u64::from(n)) {
            return Usable::Validate;
        }
        let elapsed = now.saturating_duration_since(meta.fetched);
        if meta.is_fresh(now, std::time::Duration::MAX) {
            let left = meta.ttl.saturating_sub(elapsed).as_secs();
            return match self.min_fresh {
                Some(n) if left < u64::from(n) => Usable::Validate,
                _ => Usable::Fresh,
            };
        }
        let stale_for = elapsed.saturating_sub(meta.ttl).as_secs();
        match self.max_stale {
            Some(m) if m.allows(stale_for) && !meta.must_revalidate => Usable::StaleAccepted,
            _ => Usable::Validate,
        }
    }
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
    pub if_match: Option<Small>,
    pub if_unmodified_since: Option<Small>,
}

/// A header value copied out of the receive buffer (values over 256 bytes are dropped).
pub struct Small {
    buf: [u8; 256],
    len: usize,
}

impl Small {
    /// The longest value kept.
    pub const CAPACITY: usize = 256;

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn copy(v: &[u8]) -> Small {
        let mut s = Small {
            buf: [0; Small::CAPACITY],
            len: 0,
        };
        if v.len() <= s.buf.len() {
            s.buf[..v.len()].copy_from_slice(v);
            s.len = v.len();
        }
        s
    }
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
    /// The `openat2` has been asked for (by `poll`).
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
            stat: statx_buf(),
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
    /// A read of `plan`'s file, not yet opened: header into the heap, body into `body`
    /// (from the memory tier: the registered arena when large enough). None when the path
    /// cannot be handed to the kernel (an interior NUL; relay never names a chunk so).
    pub fn new(
        plan: relay_cache::disk::ReadPlan,
        body: relay_cache::arena::ChunkBuf,
        restore: bool,
    ) -> Option<DiskRead> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(plan.path.as_os_str().as_bytes()).ok()?;
        Some(DiskRead {
            header: vec![0u8; plan.body_offset as usize],
            body,
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

/// A lingering close's bound on what it still reads and drops: input after a refused
/// request, until the answer is sent (`Exchange::linger`), then while the connection
/// lingers ([`State::Lingering`](super::State)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// How many more bytes are read and dropped before it gives up.
    pub left: u64,
}

impl Linger {
    pub const fn new(bytes: u64) -> Linger {
        Linger { left: bytes }
    }
}

/// How far a request body has been read (`Exchange::decode_chunked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Partial,
    Whole,
    /// Longer than the most relay collects.
    TooLong,
}

/// Appends `bytes` to a body being collected whose length will not pass `max`: its memory
/// doubles as it grows, as a `Vec`'s does, but never past `max` (a capacity counted against
/// the pass-through budget, and the client's share of it, is never twice the most a body
/// may hold).
pub fn extend_within(body: &mut Vec<u8>, bytes: &[u8], max: u64) {
    let need = body.len() + bytes.len();
    if need > body.capacity() {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let want = body.capacity().saturating_mul(2).min(max).max(need);
        body.reserve_exact(want - body.len());
    }
    body.extend_from_slice(bytes);
}

/// A request body with the share of the pass-through budget it holds.
pub struct HeldBody {
    bytes: Vec<u8>,
    /// Given back when the last `Bytes` of this body drops.
    _reserved: Reservation,
}

impl HeldBody {
    pub fn new(bytes: Vec<u8>, reserved: Reservation) -> HeldBody {
        HeldBody {
            bytes,
            _reserved: reserved,
        }
    }
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}
/// The ranges of a `multipart/byteranges` response and which part comes next.
pub struct MultiRange {
    pub ranges: [ByteRange; MAX_RANGES],
    pub n: usize,
    pub next: usize,
    pub total: u64,
    pub content_type: String,
}

/// A response as the access log sees it: its status and `Cache-Status` read from its head
/// as that went out, and the bytes sent since.
#[derive(Default)]
pub(super) struct SentLog {
    /// The access log is on (noted as each request is read).
    pub logging: bool,
    /// The request being answered was read and routed (its method and URL are known).
    pub routed: bool,
    /// A final response's head went out, and its line is not written yet.
    pub active: bool,
    pub status: u16,
    pub bytes: u64,
    /// `Cache-Status` as sent (capacity kept across responses).
    pub cache_status: String,
    /// The client's address, looked up once per connection.
    pub client: Option<std::net::SocketAddr>,
}

impl SentLog {
    /// `head` starts going out: a final response's (not a 1xx, nor a chunk's framing)
    /// status and `Cache-Status` are noted.
    pub fn head(&mut self, head: &[u8]) {
        let status = match head.get(..12) {
            Some([b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', d @ ..]) => {
                d.iter().try_fold(0u16, |n, &b| {
                    b.is_ascii_digit().then(|| n * 10 + u16::from(b - b'0'))
                })
            }
            _ => None,
        };
        let Some(status @ 200..) = status else {
            return;
        };
        self.active = true;
        self.status = status;
        self.bytes = 0;
        self.cache_status.clear();
        const FIELD: &[u8] = b"\r\nCache-Status: ";
        if let Some(at) = head.windows(FIELD.len()).position(|w| w == FIELD) {
            let value = &head[at + FIELD.len()..];
            let end = value
                .iter()
                .position(|&b| b == b'\r')
                .unwrap_or(value.len());
            self.cache_status
                .push_str(&String::from_utf8_lossy(&value[..end]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_body_piece_goes_out_in_sends_of_at_most_send_max() {
        let mut out = Outgoing::new(64);
        out.head.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let body: Vec<u8> = (0..SEND_MAX * 2 + 100).map(|i| i as u8).collect();
        out.body = Bytes::from(body.clone());
        let mut got = Vec::new();
        let mut sends = 0;
        while out.pending() > 0 {
            let [head, piece] = out.sendable(SEND_MAX);
            assert!(piece.len() <= SEND_MAX);
            // (A short send, as a full socket gives: a third of what was offered.)
            let offered = head.len() + piece.len();
            let took = (offered / 3).max(1);
            let mut all = head.to_vec();
            all.extend_from_slice(piece);
            got.extend_from_slice(&all[..took]);
            out.advance(took);
            sends += 1;
        }
        assert_eq!(&got[..19], b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(&got[19..], &body[..]);
        assert!(sends > 6, "{sends}");
    }
}

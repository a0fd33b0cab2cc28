//! One connection's HTTP exchange, with no I/O of its own: the worker hands it events
//! (bytes received, bytes sent, a file opened, stat'ed or read, a disk chunk read, a wake-up,
//! a deadline) and carries out the [`Action`] it answers with (send, receive, open, stat or
//! read a file, read a disk chunk, wait for a wake-up, linger, close). Every HTTP and cache
//! decision of a connection is made here; the worker (`crate::worker`) owns the ring, the
//! slot table, the user-data encoding and the socket, and decides nothing about HTTP.
//!
//! Layout:
//! - this file: [`Exchange`], its [`State`], its events and [`Exchange::poll`], which walks
//!   the request through its phases until it needs an I/O completion or a wake-up;
//! - `request`: the receive buffer, parsing and routing a request, collecting or skipping
//!   its body, the fields that go upstream; `collect`: a longer pass-through body streamed
//!   to the origin through a window, and a body's deadline (its longest pause and its least
//!   rate), answered 408 when it passes;
//! - `respond`: answering from an object description, from a pass-through, with an error;
//!   waiting on an origin's head or a pass-through's answer;
//! - `body`: the body piece by piece, each chunk from where `Cache::source` finds it
//!   (memory, the fill being streamed, disk tier, origin), or a pass-through's stream;
//! - `reads`: the file I/O it asks for and what it does with the results (a directory
//!   file opened, described and read; a disk chunk read and verified), and one read per
//!   chunk however many connections want it;
//! - `restore`: rebuilding an object's description from the disk tier after a restart;
//! - `types`: the data the phases keep between events.
//!
//! What a request waits for is one [`State`], whose variants carry that wait's data;
//! `poll` matches on it (the map in `docs/ARCHITECTURE.md` draws the transitions):
//!
//! ```text
//!  Ready(reading) ─parse─► Opening ─► Ready(sending) ─► (next request)
//!     │  │                ReadingDisk(restore) ┘  ▲ │ memory, fill, pass: in place
//!     │  │                AwaitingHead ───────────┘ │ disk: ReadingDisk, file: ReadingFile
//!     │  └─► CollectingBody ─► AwaitingPass ────────┘
//!     ├─► error answer ─► Lingering ─► Closed ─► (slot released) ─► Ready
//!     └─► deadline, client gone, cut (any state) ─► Closed
//! ```

mod body;
mod collect;
mod digest;
mod errors;
mod overflow;
mod pass;
mod reads;
mod request;
mod respond;
mod restore;
mod types;

#[cfg(test)]
mod tests;

pub use overflow::OverflowMeter;
pub use types::{Outgoing, SEND_MAX};

use crate::{Shared, WorkerStats};
use hdrhistogram::Histogram;
use relay_proto::DateCache;
use std::fs::File;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use types::{
    Body, DirOpen, DiskRead, FileRead, Linger, MultiRange, PassReader, PassRequest, RequestInfo,
    RestoreEntry, Route, Saved,
};

/// The receive buffer a connection takes with its first bytes; it grows to its full size
/// (`max_head_bytes` + 4 KiB) only for a head that does not fit or requests sent ahead.
const RBUF_START: usize = 4096;

/// A connection idle between requests this long gives its receive buffer back (taken again
/// with its next bytes): an idle keep-alive connection holds no more than its slot.
pub const IDLE_TRIM: Duration = Duration::from_secs(1);

/// The longest request body relay reads through and drops to keep a connection (a GET or
/// HEAD with a body); past it, or for a chunked one, the connection ends after the answer.
const DISCARD_MAX: u64 = 64 << 10;

/// A lingering close (after an error answer) reads and drops at most this much input...
const LINGER_BYTES: u64 = 16 << 20;
/// ...for at most this long.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Largest request body relay passes through (413 beyond).
const PASS_BODY_LIMIT: u64 = 64 << 20;

/// The interim response to a request that expects `100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// `Exchange::restores` bits: the description of the request's base key, or of its variant,
/// was looked for on disk.
const RESTORE_BASE: u8 = 1;
const RESTORE_VARIANT: u8 = 2;
/// ...and the response started over once (`Exchange::start_over`).
const STARTED_OVER: u8 = 4;

/// What the worker gives an exchange with each event: the shared cache and upstream, this
/// worker's counters and clock, and the few things only the socket knows.
pub struct Cx<'a> {
    pub shared: &'a Shared,
    pub stats: &'a WorkerStats,
    /// This worker's number: what it watches what it waits on under (`relay_cache::wake`).
    pub worker: usize,
    /// The loop turn's clock reading.
    pub now: Instant,
    pub date: &'a DateCache,
    pub timeouts: Timeouts,
    /// The multipart/byteranges boundary of this worker.
    pub boundary: &'a str,
    /// Request latency (µs), recorded when a response ends.
    pub latency: &'a mut Histogram<u64>,
    /// The client's address (`X-Forwarded-For` on a miss; looked up only then).
    pub peer: &'a dyn Fn() -> Option<std::net::SocketAddr>,
    /// The client as budgets count it (its address, read once at accept).
    pub client: relay_upstream::budget::Client,
    /// Input is being read as it comes (a multishot receive is armed): a lingering close
    /// is possible.
    pub reading: bool,
    /// No multishot receive is armed: input is read by single receives into
    /// [`Exchange::recv_room`] when the exchange asks (a connection paused for sending far
    /// ahead, or a kernel without provided-buffer rings). A lingering close reads that way.
    pub single_reads: bool,
}

/// The deadlines an exchange gives its waits (live-reloadable, read by the worker each tick).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A request head must be whole this long after its first byte.
    pub header: Duration,
    /// Between requests.
    pub idle: Duration,
    /// A send, a file read or a wait on an origin without progress.
    pub send: Duration,
    /// A collected request body's longest pause, and its grace before the rate applies.
    pub body: Duration,
    /// Bytes per second a collected request body must average after its grace (0: none).
    pub body_min_rate: u64,
    /// How long a directory object's description is trusted (`origin.revalidate_ms`).
    pub revalidate: Duration,
}

/// What the exchange is waiting for (its deadline says until when).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Input: a request head, a body, or a lingering client's last bytes.
    Recv,
    /// A send of [`Exchange::outgoing`].
    Send,
    /// A file open, stat or read (directory origin, disk tier).
    Fill,
    /// A wake-up: an upstream fetch (an object head, chunk bytes, a pass-through's answer)
    /// or another connection's read.
    Wait,
}

/// Whether the connection's input is being read (receive backpressure). A client that sends
/// ahead of its answers (pipelining) is read until its receive buffer is full, then not at
/// all until the exchange has used what it holds and asks for input again: its unread
/// requests wait in the kernel's socket buffer, not in relay's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// A multishot receive is armed (or will be when input is asked for).
    On,
    /// The exchange asked the worker to cancel the multishot receive
    /// ([`Received::Pause`]); its last completion has not come yet.
    Stopping,
    /// The multishot receive ended for the pause: input is read by single receives from
    /// then on ([`Exchange::reads_in_bursts`]).
    Off,
}

/// Where the request being answered stands beyond reading and sending: the one thing it
/// waits for, with what that wait needs. `Ready` when it waits for none of these (reading a
/// request, sending from what it holds, or between requests).
enum State {
    Ready,
    /// A directory-origin file being opened and described (`statx`): to describe the
    /// object, or to read the body whose head came from a cached description.
    Opening(Box<DirOpen>),
    /// A chunk being read from the directory origin's file.
    ReadingFile(FileRead),
    /// A chunk file being read from the disk tier: for the body, or (`restore`) to rebuild
    /// an object's description after a restart.
    ReadingDisk(Box<DiskRead>),
    /// Waiting on the object's head from the origin (a fetch this request started or
    /// joined).
    AwaitingHead(Arc<relay_cache::inflight::Pending>),
    /// Collecting a pass-through's request body.
    CollectingBody(Box<Collect>),
    /// Waiting on a pass-through's answer.
    AwaitingPass(Arc<relay_upstream::PassSlot>),
    /// The answer is sent and the write side shut: input is read and dropped, within what
    /// is left of its bound, until the client closes or the deadline (`start_linger`).
    Lingering(Linger),
    /// The connection is closing ([`Exchange::on_close`]): nothing more is done. It keeps
    /// the file I/O it was waiting for (an open, a `statx`, a read), whose memory the
    /// kernel may still write, until its slot is released.
    Closed(Option<Box<State>>),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Opening(_) => "opening",
            State::ReadingFile(_) => "reading-file",
            State::ReadingDisk(_) => "reading-disk",
            State::AwaitingHead(_) => "awaiting-head",
            State::CollectingBody(_) => "collecting-body",
            State::AwaitingPass(_) => "awaiting-pass",
            State::Lingering(_) => "lingering",
            State::Closed(_) => "closed",
        }
    }
}

/// A pass-through request and its body as it is collected, or streamed to the origin.
struct Collect {
    request: PassRequest,
    /// The body so far (decoded, when chunked); while streamed, a chunked body's decoded
    /// bytes on their way into the window.
    body: Vec<u8>,
    /// Bytes of a body with a length still to come.
    left: u64,
    /// What `body` holds of the pass-through budget (`origin.pass_buffer_bytes`); it goes
    /// to the upstream with the body.
    reserved: Option<relay_upstream::budget::Reservation>,
    /// Body bytes received so far (decoded), for its deadline.
    received: u64,
    /// The body is streamed to the origin (`collect`): the request went ahead of it.
    upload: Option<collect::Streaming>,
}

/// A read the worker submits for an exchange: `len` bytes of `fd` at `offset` into `at`.
/// The memory belongs to the exchange, which leaves it alone until the read's event.
#[derive(Debug)]
pub struct ReadOp {
    pub fd: RawFd,
    pub at: *mut u8,
    pub len: usize,
    pub offset: u64,
}

/// What the exchange asks of the worker. Each completes with the event named.
#[derive(Debug)]
#[must_use = "an action the worker does not carry out leaves its exchange stuck"]
pub enum Action {
    /// Nothing to submit: the exchange waits for input already being received (a multishot
    /// receive is armed) or for an operation already in flight.
    Idle,
    /// It needs input: without a multishot receive armed, receive into
    /// [`Exchange::recv_room`] ([`Exchange::on_received`]).
    Recv,
    /// Send [`Exchange::outgoing`] ([`Exchange::on_sent`]).
    Send,
    /// Send these bytes at once, outside the ring (`100 Continue`: nothing else is being
    /// sent); [`Exchange::poll`] again, or close when it cannot.
    SendNow(&'static [u8]),
    /// `openat2(root, path, how)` beneath the directory origin's root
    /// ([`Exchange::on_dir_opened`]).
    OpenDir {
        root: RawFd,
        path: *const libc::c_char,
        how: *const io_uring::types::OpenHow,
    },
    /// `statx` of the opened directory-origin file into `buf` ([`Exchange::on_dir_stat`]).
    StatDir { fd: RawFd, buf: *mut libc::statx },
    /// Read a directory-origin chunk ([`Exchange::on_chunk_read`]), then `statx` the file
    /// into `check`, linked after the read ([`Exchange::on_chunk_checked`]): whether it
    /// changed under the read.
    ReadChunk { op: ReadOp, check: *mut libc::statx },
    /// Open a disk-tier chunk file read-only ([`Exchange::on_disk_opened`]).
    OpenDisk { path: *const libc::c_char },
    /// Read a disk-tier chunk file's header and body, both at once
    /// ([`Exchange::on_disk_read`] for each).
    ReadDisk {
        header: Option<ReadOp>,
        body: Option<ReadOp>,
    },
    /// Park until a wake-up (then [`Exchange::poll`]) or the deadline.
    Wait,
    /// Shut the write side; input goes on being read and dropped until it ends
    /// ([`Exchange::on_recv_result`]) or the deadline. Without a multishot receive armed
    /// ([`Cx::single_reads`]), receive into [`Exchange::recv_room`]
    /// ([`Exchange::on_received`] answers `Linger` again while it goes on).
    Linger,
    /// Close the connection ([`Exchange::on_close`]).
    Close,
}

/// What became of a multishot receive's bytes ([`Exchange::on_input`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Input {
    Kept,
    /// Kept, and the connection now holds input beyond its receive buffer (the worker
    /// remembers since when: the longest holder is cut first when its bound is reached).
    Holding,
    /// Not kept: the worker's bound on such input is reached. The worker makes room (cuts
    /// the connection that has held input longest) and gives them again, or calls
    /// [`Exchange::on_no_room`].
    NoRoom,
}

/// What the worker does after a multishot receive's completion ([`Exchange::on_recv_result`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    Close,
    /// Nothing more now; arm the multishot receive again when `rearm`.
    Keep {
        rearm: bool,
    },
    /// The receive buffer is full while a response is under way and input keeps coming:
    /// cancel the multishot receive (its last completion comes back here).
    Pause,
    /// Arm again when `rearm`, then [`Exchange::poll`].
    Poll {
        rearm: bool,
    },
}

/// One step of [`Exchange::poll`]: go on, or hand the worker an action.
enum Step {
    Again,
    Do(Action),
}

/// One connection's HTTP exchange (see the module docs).
pub struct Exchange {
    phase: Phase,
    /// What the request being answered waits for (see [`State`]).
    state: State,
    /// When what the exchange waits for is given up (checked by the worker's sweep).
    deadline: Instant,
    /// When the response being sent was started (for the latency histogram).
    req_start: Option<Instant>,
    /// When the first byte of the request being read arrived.
    request_started: Option<Instant>,
    /// Receive buffer (empty until the connection's first bytes, and again when it idles:
    /// [`Exchange::trim`]); unconsumed request bytes are `rbuf[rstart..rend]`.
    rbuf: Box<[u8]>,
    /// The receive buffer's size when it holds one.
    rbuf_len: usize,
    /// Whether input is being read (see [`Reading`]).
    reading: Reading,
    /// Since when the connection has been idle between requests with nothing buffered.
    idle_since: Option<Instant>,
    rstart: usize,
    rend: usize,
    /// Bytes received while the receive buffer was full (a client pipelining far ahead),
    /// within its worker's bound.
    overflow: overflow::Overflow,
    /// The overflow would have passed its bounds: the connection is cut.
    flooded: bool,
    /// Request body bytes still to skip (bodies of GET/HEAD are read and ignored).
    discard: u64,
    /// The request's body is chunked: its decoder, while the body is collected for a
    /// pass-through or skipped after the response.
    chunked: Option<relay_proto::chunked::Decoder>,
    /// Close once the current response is sent.
    close_after: bool,
    /// A drain began while no response was under way: the next request's response is the
    /// connection's last (`drain`, `drain_fresh`).
    drain_next: bool,
    /// The close is a reset: a body delimited by the close was cut, and a plain close would
    /// tell the client it ended.
    abort: bool,
    /// The connection closes after its response and then lingers ([`State::Lingering`]
    /// takes this bound over); whatever the client still sends is read and dropped
    /// meanwhile (an error answered before its request was read whole).
    linger: Option<Linger>,
    /// The response being sent.
    out: Outgoing,
    /// The body of the response being sent.
    body: Option<Body>,
    /// Multi-range state (reused across requests; `n == 0` when the response is not
    /// multipart).
    multi: MultiRange,
    /// Where the current request's object comes from.
    route: Route,
    /// The request line and headers a response needs, kept while waiting for upstream.
    saved: Box<Saved>,
    /// Cache key of the current response's object (capacity kept across requests): the
    /// origin's kind, the authority (HTTP origins), then `target` (`relay_cache::key`).
    key: String,
    /// Length of the request's own key in `key` (before a variant's part is appended).
    key_base: usize,
    /// `key` names a variant of a response that varies (the base key plus the `Vary`
    /// values this request sends).
    variant: bool,
    /// The request's target in origin-form: for HTTP origins the path and query sent
    /// upstream, for the directory the path of the file.
    target: String,
    /// Where the current request's head (HTTP origins) lies in `rbuf`, and a copy of it,
    /// made when the response has to wait for upstream or before `rbuf` is compacted under
    /// it (`head_saved`): see [`Exchange::head`].
    head_at: (usize, usize),
    head_copy: Vec<u8>,
    head_saved: bool,
    /// The client's header fields the upstream fetches of this response send; built on the
    /// response's first miss ([`Exchange::fill_forward`]), never on a hit.
    forward: Option<relay_upstream::Forward>,
    /// This connection's request started the pending head fetch (its fields went upstream).
    head_owner: bool,
    /// The origin's 103 Early Hints went to this request's client already.
    hinted: bool,
    /// That fetch, kept while its answer (one that may not be stored) is sent: the later
    /// chunks of a whole body the origin sent at once, or those the head fetch's span
    /// brought, are read from it.
    owner_fetch: Option<Arc<relay_cache::inflight::Pending>>,
    /// The stale description a revalidation started from (served on stale-if-error).
    stale: Option<Arc<relay_cache::ObjectMeta>>,
    /// Disk-tier description reads made for the request being answered (`RESTORE_*` bits).
    restores: u8,
    /// The in-flight head entry this connection owns while it restores a description from
    /// the disk tier (other clients asking meanwhile wait on it).
    restore_entry: Option<RestoreEntry>,
    /// The chunk read (disk tier or directory origin) this connection makes for others too,
    /// settled when it ends.
    chunk_share: Option<Arc<relay_cache::inflight::ChunkShare>>,
    /// A chunk this response holds (read from disk or taken when its head was built):
    /// (version, index, bytes). Sent from here even if the memory tier cannot keep it.
    local: Option<(u64, u64, bytes::Bytes)>,
    /// What the body follows for a chunk on its way: the fill it is being streamed from,
    /// or the read another connection makes that this one waits for.
    src: Option<relay_cache::inflight::Flight>,
    /// The method of the request being answered when it is neither GET nor HEAD (capacity
    /// kept across requests; for the log line of an answer relay makes up).
    other_method: String,
    /// The `Cache-Status` of a pass-through response (RFC 9211), set when it starts; the
    /// origin's status is added when it answers.
    pass_status: crate::cache_status::CacheStatus,
    /// The response's `Cache-Status` value as written (capacity kept across requests).
    status_buf: String,
    /// The passed-through response's body, streamed as it arrives.
    pass_body: Option<PassReader>,
    /// How the request body being collected has come (`collect`).
    body_clock: Option<collect::BodyClock>,
    /// Accepted on the peer listener: every request must carry valid `Relay-Peer`
    /// credentials (`relay_cluster::peer`), else 403.
    peer: bool,
    /// The hop of the peer request being answered (`relay_cluster::peer`).
    hop: u8,
    /// A streamed request body the origin answered before it was whole: its window stays
    /// open (the origin's connection still reads the answer) until the answer is sent.
    upload_kept: Option<relay_upstream::upload::UploadWriter>,
    /// The response being sent as the access log sees it (when the log is on).
    sent: types::SentLog,
    /// The client has sent something on this connection (a fresh one, closed while its
    /// first request may be on its way, would lose that request).
    began: bool,
    /// The states entered, in order (tests check the transitions).
    #[cfg(test)]
    trail: Vec<&'static str>,
}

impl Exchange {
    /// A new connection's exchange, with a receive buffer of `rbuf_len` bytes, waiting for
    /// its first request until `deadline`; what it holds beyond that buffer counts against
    /// its worker's `meter`.
    pub fn new(rbuf_len: usize, deadline: Instant, meter: Arc<OverflowMeter>) -> Exchange {
        Exchange {
            phase: Phase::Recv,
            state: State::Ready,
            deadline,
            req_start: None,
            request_started: None,
            rbuf: Box::default(),
            rbuf_len,
            reading: Reading::On,
            idle_since: None,
            rstart: 0,
            rend: 0,
            overflow: overflow::Overflow::new(meter),
            flooded: false,
            discard: 0,
            chunked: None,
            close_after: false,
            drain_next: false,
            abort: false,
            linger: None,
            out: Outgoing::new(types::HEAD_ROOM),
            body: None,
            multi: MultiRange {
                ranges: [relay_proto::range::ByteRange::default(); relay_proto::range::MAX_RANGES],
                n: 0,
                next: 0,
                total: 0,
                content_type: String::with_capacity(64),
            },
            route: Route::Directory,
            saved: Box::new(Saved {
                req: RequestInfo {
                    method: relay_proto::Method::Get,
                    version: 1,
                    keep_alive: true,
                },
                cond: Default::default(),
                asks: Default::default(),
                authorized: false,
            }),
            key: String::with_capacity(256),
            key_base: 0,
            variant: false,
            target: String::with_capacity(256),
            head_at: (0, 0),
            head_copy: Vec::with_capacity(types::HEAD_ROOM),
            head_saved: false,
            forward: None,
            head_owner: false,
            hinted: false,
            owner_fetch: None,
            stale: None,
            restores: 0,
            restore_entry: None,
            chunk_share: None,
            local: None,
            src: None,
            other_method: String::new(),
            pass_status: crate::cache_status::CacheStatus::fwd(crate::cache_status::Fwd::Method),
            status_buf: String::with_capacity(96),
            pass_body: None,
            body_clock: None,
            upload_kept: None,
            peer: false,
            hop: 0,
            sent: types::SentLog::default(),
            began: false,
            #[cfg(test)]
            trail: Vec::new(),
        }
    }

    /// Starts a new connection on a slot whose last one is closed and released: buffers
    /// (and their capacity) are kept, everything else starts afresh. Input is awaited until
    /// `deadline` (the idle timeout).
    pub fn reset(&mut self, deadline: Instant) {
        self.phase = Phase::Recv;
        self.deadline = deadline;
        self.request_started = None;
        self.req_start = None;
        self.rstart = 0;
        self.rend = 0;
        self.overflow.clear();
        self.flooded = false;
        self.reading = Reading::On;
        self.idle_since = None;
        self.discard = 0;
        self.chunked = None;
        self.close_after = false;
        self.drain_next = false;
        self.abort = false;
        self.linger = None;
        self.out.head.clear();
        self.out.head_off = 0;
        self.out.body_off = 0;
        self.multi.n = 0;
        self.key.clear();
        self.sent.active = false;
        self.sent.routed = false;
        self.sent.client = None;
        self.began = false;
        self.variant = false;
        self.head_saved = false;
        self.forward = None;
        self.head_owner = false;
        self.body_clock = None;
        // (and `state` with the rest)
        self.release();
    }

    /// Drops everything that holds cache memory (chunks, fills, arena blocks) once the
    /// connection is closed and nothing is in flight.
    pub fn release(&mut self) {
        // The slot may stay free for long: it keeps no receive buffer and no grown buffers.
        self.overflow.clear();
        self.give_back_buffers();
        self.owner_fetch = None;
        self.body = None;
        self.out.body = bytes::Bytes::new();
        drop(self.leave());
        self.pass_body = None;
        self.upload_kept = None;
        self.local = None;
        self.stale = None;
        self.src = None;
    }

    /// Gives back the receive buffer and the head room a large response grew (for a
    /// connection idle or closed: nothing of them is in use).
    fn give_back_buffers(&mut self) {
        self.rbuf = Box::default();
        self.out.trim();
        self.head_copy.shrink_to(types::HEAD_ROOM);
    }

    /// Drops what this exchange holds apart from memory the kernel may still read or write
    /// for an operation in flight, which is leaked: the receive buffer, the response being
    /// sent and the targets of file reads. For a worker that stops with operations in
    /// flight.
    pub fn forget_kernel_memory(mut self) {
        std::mem::forget(std::mem::take(&mut self.rbuf));
        std::mem::forget(std::mem::replace(&mut self.out, Outgoing::new(0)));
        // The targets of file reads are leaked; their open files close (the kernel holds its
        // own reference for a read in flight).
        let state = match std::mem::replace(&mut self.state, State::Ready) {
            State::Closed(Some(kept)) => *kept,
            s => s,
        };
        match state {
            State::ReadingFile(f) => std::mem::forget(f),
            State::ReadingDisk(mut d) => {
                d.file = None;
                std::mem::forget(d);
            }
            State::Opening(mut o) => {
                o.file = None;
                std::mem::forget(o);
            }
            _ => {}
        }
        // Everything else (upstream slots and streams, budget reservations, cache entries)
        // drops here; a stream window the leaked response still points into keeps its
        // share of the pass-through budget.
    }

    /// The connection came in on the peer listener (set at accept, kept until the slot is
    /// reused).
    pub fn set_peer(&mut self, peer: bool) {
        self.peer = peer;
    }

    /// When what the exchange waits for is given up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A deadline that passed is a timeout to count (not the end of a lingering close).
    pub fn timeout_counts(&self) -> bool {
        !matches!(self.state, State::Lingering(_))
    }

    /// The connection is closing ([`Exchange::on_close`]): its slot waits for what is in
    /// flight, then is released.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// The connection sent past its receive buffer and the overflow bound.
    pub fn flooded(&self) -> bool {
        self.flooded
    }

    /// The connection must close with a reset ([`Exchange::upstream_failed`]).
    pub fn aborts(&self) -> bool {
        self.abort
    }

    /// Parked until a wake-up.
    pub fn is_waiting(&self) -> bool {
        self.phase == Phase::Wait
    }

    /// The response being sent (the worker points its send at it).
    pub fn outgoing(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    /// The response counters' slot of the origin the request went to.
    fn origin_slot(&self) -> usize {
        crate::cache_status::origin_slot(match self.route {
            Route::Http(o) => Some(o),
            Route::Directory => None,
        })
    }

    /// Nothing has come on this connection yet: its first request may be on its way.
    pub fn is_fresh(&self) -> bool {
        !self.began
    }

    /// A fresh connection while the worker stops: its first request is answered if it
    /// comes before `until`, then the connection closes.
    pub fn drain_fresh(&mut self, until: Instant) {
        self.drain_next = true;
        self.deadline = self.deadline.min(until);
    }

    /// A drain began: the connection closes after the response it is answering, or, when
    /// it answers none yet (between requests, or a request's head still coming), after the
    /// next one; true when it is idle between requests and may close now.
    pub fn drain(&mut self) -> bool {
        // (Closing on `close_after` with no response under way would close a connection
        // whose request is still arriving, or has arrived unread, unanswered.)
        match self.req_start.is_some() {
            true => self.close_after = true,
            false => self.drain_next = true,
        }
        let idle = self.rstart == self.rend
            && matches!(self.state, State::Ready)
            && self.discard == 0
            && self.chunked.is_none()
            && self.linger.is_none();
        self.phase == Phase::Recv && idle
    }

    /// Walks the request through its phases until it needs an I/O completion or a wake-up.
    pub fn poll(&mut self, cx: &mut Cx<'_>) -> Action {
        loop {
            let step = match &self.state {
                State::Opening(_) => self.open_dir(cx),
                // An object's description being rebuilt from the disk tier: read it (once),
                // then `respond` runs again from `on_disk_read`.
                State::ReadingDisk(d) if d.restore => match d.reads {
                    0 => Step::Do(self.read_disk(cx)),
                    _ => Step::Do(Action::Idle),
                },
                State::CollectingBody(_) => self.collect_timed(cx),
                State::AwaitingPass(_) => self.await_pass(cx),
                State::AwaitingHead(_) => self.await_head(cx),
                // Only input (or its end, or the deadline) moves these on.
                State::Lingering(_) | State::Closed(_) => Step::Do(Action::Idle),
                State::Ready | State::ReadingFile(_) | State::ReadingDisk(_) => self.stream(cx),
            };
            match step {
                Step::Again => {}
                Step::Do(a) => return a,
            }
        }
    }

    /// Sending the response, then the next request: the next body piece, the send, the
    /// next multipart part, the end of the response, the request after it.
    fn stream(&mut self, cx: &mut Cx<'_>) -> Step {
        // The next body piece first, so that a head (or part head) and the piece after it
        // leave in one send (one TCP segment for a small response, not two).
        if self.out.body_off >= self.out.body.len()
            && self.body.as_ref().is_some_and(|b| b.pos < b.end)
        {
            return self.next_piece(cx);
        }
        if self.out.pending() > 0 {
            self.phase = Phase::Send;
            self.deadline = cx.now + cx.timeouts.send;
            return Step::Do(Action::Send);
        }
        if self.body.is_some() {
            if self.end_chunked() || self.next_part(cx) {
                return Step::Again;
            }
            self.end_body(cx);
        }
        // The chunk this response streamed from (or, for HEAD and 304, the fill its head
        // fetch started): an idle keep-alive connection must not hold its memory (an arena
        // block) after eviction.
        self.src = None;
        self.owner_fetch = None;
        self.upload_kept = None;
        let took = self
            .req_start
            .take()
            .map(|t| cx.now.saturating_duration_since(t));
        if let Some(t) = took {
            let _ = cx.latency.record((t.as_micros() as u64).max(1));
        }
        if self.sent.active {
            self.log_response(cx, took.unwrap_or_default(), true);
        }
        if self.close_after {
            return Step::Do(match self.linger.is_some() {
                true => self.start_linger(cx),
                false => Action::Close,
            });
        }
        self.next_request(cx)
    }

    /// Sends what `out` holds while the request waits (an interim answer): the wait goes on
    /// once it is sent.
    fn send_interim(&mut self, cx: &Cx<'_>) -> Action {
        self.phase = Phase::Send;
        self.deadline = cx.now + cx.timeouts.send;
        Action::Send
    }

    /// Moves to `next` from `Ready`: a wait never replaces another unnoticed.
    fn enter(&mut self, next: State) {
        debug_assert!(
            matches!(self.state, State::Ready),
            "{} entered over {}",
            next.name(),
            self.state.name()
        );
        self.set(next);
    }

    /// Leaves the current state for `Ready`, and returns it.
    fn leave(&mut self) -> State {
        #[cfg(test)]
        if !matches!(self.state, State::Ready) {
            self.trail.push("ready");
        }
        std::mem::replace(&mut self.state, State::Ready)
    }

    fn set(&mut self, next: State) {
        #[cfg(test)]
        self.trail.push(next.name());
        self.state = next;
    }

    /// The name of what the request being answered waits for (logs and tests).
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// Parks until a wake-up. The deadline is set on entering the wait, not each time a
    /// wake finds nothing new (every tick drives the waiters): a wait without progress ends
    /// at its deadline.
    fn wait(&mut self, cx: &Cx<'_>) -> Action {
        if self.phase != Phase::Wait {
            self.deadline = cx.now + cx.timeouts.send;
        }
        self.phase = Phase::Wait;
        Action::Wait
    }

    /// What a wait was for has come (an origin head, a pass-through's answer, another
    /// connection's read): the next wait, say for the body's first bytes, starts from now
    /// rather than inheriting what the first one used.
    fn waited(&mut self, cx: &Cx<'_>) {
        if self.phase == Phase::Wait {
            self.phase = Phase::Fill;
            self.deadline = cx.now + cx.timeouts.send;
        }
    }

    /// An I/O of a file (open, stat, read) goes out: its deadline is the send deadline.
    fn filling(&mut self, cx: &Cx<'_>) {
        self.phase = Phase::Fill;
        self.deadline = cx.now + cx.timeouts.send;
    }

    /// Bytes of the response were sent.
    pub fn on_sent(&mut self, cx: &mut Cx<'_>, sent: usize) -> Action {
        self.advance(sent);
        if self.out.pending() > 0 {
            self.phase = Phase::Send;
            self.deadline = cx.now + cx.timeouts.send;
            return Action::Send;
        }
        self.poll(cx)
    }

    /// The head sent ahead of a linked zero-copy body: accounted for when it went whole
    /// (true); the body's completion drives the exchange (a short head cancels it).
    pub fn on_head_sent(&mut self, sent: usize) -> bool {
        let whole = sent == self.out.head.len() - self.out.head_off;
        if whole {
            self.advance(sent);
        }
        whole
    }

    /// `sent` bytes of `out` went out; the access log notes a response's head (its status
    /// and `Cache-Status`, as sent) and counts its bytes.
    fn advance(&mut self, sent: usize) {
        if self.sent.logging {
            if self.out.head_off == 0 && sent > 0 {
                self.sent.head(&self.out.head);
            }
            self.sent.bytes += sent as u64;
        }
        self.out.advance(sent);
    }

    /// The access log's line for the response just ended, or cut (`complete` false).
    fn log_response(&mut self, cx: &Cx<'_>, took: Duration, complete: bool) {
        self.sent.active = false;
        let routed = std::mem::take(&mut self.sent.routed);
        let Some(log) = cx.shared.access_log.as_ref() else {
            return;
        };
        if self.sent.client.is_none() {
            self.sent.client = (cx.peer)();
        }
        let (method, url) = match routed {
            false => (std::borrow::Cow::Borrowed("-"), "-".to_string()),
            true => {
                let method = match self.saved.req.method {
                    relay_proto::Method::Get => std::borrow::Cow::Borrowed("GET"),
                    relay_proto::Method::Head => std::borrow::Cow::Borrowed("HEAD"),
                    relay_proto::Method::Other => {
                        std::borrow::Cow::Owned(self.other_method.clone())
                    }
                };
                let key = &self.key[..self.key_base.min(self.key.len())];
                let url = key.strip_prefix(relay_cache::key::DIRECTORY).unwrap_or(key);
                (method, url.to_string())
            }
        };
        log.log(crate::access_log::Entry {
            time: std::time::SystemTime::now(),
            client: self.sent.client,
            method,
            url,
            version: self.saved.req.version,
            status: self.sent.status,
            bytes: self.sent.bytes,
            duration: took,
            cache_status: self.sent.cache_status.clone(),
            worker: cx.worker,
            peer: self.peer,
            complete,
        });
    }

    /// The connection closes (asked by the exchange, a deadline, an error or the client):
    /// whatever others wait on from it is settled.
    pub fn on_close(&mut self, cx: &mut Cx<'_>) {
        // What it waited for is let go (a fetch, a pass-through, a body's budget), apart
        // from file I/O in flight, whose memory stays until the slot is released.
        let kept = match std::mem::replace(&mut self.state, State::Ready) {
            s @ (State::Opening(_) | State::ReadingFile(_) | State::ReadingDisk(_)) => {
                Some(Box::new(s))
            }
            State::Closed(kept) => kept,
            _ => None,
        };
        self.set(State::Closed(kept));
        if self.sent.active {
            // A response cut short: logged with what went out of it.
            let took = self.req_start.map(|t| cx.now.saturating_duration_since(t));
            self.log_response(cx, took.unwrap_or_default(), false);
        }
        // An upload the origin answered early ends with its client.
        self.upload_kept = None;
        // Its share of the worker's bound goes back now, not when the slot is released.
        self.overflow.clear();
        if self.restore_entry.is_some() {
            // Others may wait on the description this connection was restoring.
            self.restore_fallback(cx);
        }
        // ...or on a chunk it was reading: they fetch it upstream.
        self.publish_chunk_share(cx, None);
    }

    /// Closes after an answer while the client may still be sending: the write side is shut
    /// (the client sees the whole answer and its end) and input is read and dropped until
    /// the client closes, `LINGER_BYTES` have come or `LINGER_TIME` has passed. Closing at
    /// once could leave the client blocked on a full window (no RST goes out when the
    /// receive queue happens to be empty), or reset it before it read the answer.
    fn start_linger(&mut self, cx: &Cx<'_>) -> Action {
        // (A multishot receive being cancelled for a pause ends, then is armed again.)
        let reads = cx.reading || cx.single_reads || self.reading == Reading::Stopping;
        let Some(l) = self.linger.filter(|l| l.left > 0 && reads) else {
            // Input already ended (or is not read without a request).
            return Action::Close;
        };
        self.linger = None;
        // Whatever the receive buffer held is dropped: its room takes what still comes
        // (a full one would leave a single receive no room, and read as the input's end).
        self.rstart = 0;
        self.rend = 0;
        self.enter(State::Lingering(l));
        self.phase = Phase::Recv;
        self.deadline = cx.now + LINGER_TIME;
        Action::Linger
    }
}

/// A file the ring opened for an exchange: owned from here on.
pub fn opened(res: i32) -> Result<File, i32> {
    use std::os::fd::FromRawFd;
    match res {
        // SAFETY: the ring's open returned this fd to us; nothing else owns it.
        fd if fd >= 0 => Ok(unsafe { File::from_raw_fd(fd) }),
        e => Err(e),
    }
}

#[cfg(test)]
impl Exchange {
    /// Part of the response went out (as a send that stopped short would leave it).
    fn on_head_sent_partially_for_test(&mut self, n: usize) {
        self.advance(n);
    }
}

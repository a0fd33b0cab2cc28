//! relay's miss path for HTTP origins: chunks are fetched with Range requests, once per chunk
//! however many clients wait, and streamed into a shared [`Fill`] that waiting clients send
//! from as bytes arrive.
//!
//! Layout:
//! - [`Upstream`]: a thread running a single-threaded tokio runtime with a keep-alive pooled
//!   HTTP/1.1 client (hyper). Workers ask it for a head ([`Upstream::fetch_head`]), a chunk
//!   ([`Upstream::fill_chunk`]) or a pass-through ([`Upstream::pass`]); each becomes a job
//!   on an unbounded channel, run as a task of its own. Started by the daemon from the
//!   config, the opened [`Cache`] and the workers' wakers ([`Upstream::open`]).
//! - `fetch`: running the jobs, one module each:
//!   - `fetch` (mod): the jobs' shared context, the dispatch, failing and waking fills,
//!     and the end-to-end header fields relayed to clients;
//!   - `fetch::request`: the one retry loop every job's request goes through, and a fill's
//!     request;
//!   - `fetch::head`: a head fetch (conditional when a stale copy exists): describe the
//!     object, renew it on 304, split off `Vary` variants, fill chunk 0;
//!   - `fetch::chunk`: filling one chunk of a known version;
//!   - `fetch::body`: streaming a body into fills (one chunk, or a whole object cut into
//!     chunks) and completing them into the memory and disk tiers;
//!   - `fetch::pass`: a pass-through: the request with its body, the answer streamed back
//!     through a window, with a length or without.
//! - `head`: reading an origin's response head defensively (Content-Range, validators,
//!   freshness).
//! - `disk_writer`: admitted chunks go to the disk tier through an io_uring of their own.
//! - [`stream`]: a passed-through body with a length, streamed through a bounded window.
//! - [`upload`]: a passed-through request body streamed to the origin through a bounded
//!   window as its client sends it.
//! - [`budget`]: the bound on bytes held for pass-throughs (`origin.pass_buffer_bytes`).
//! - [`Health`]: passive health: consecutive requests that could not reach an origin mark it
//!   down for a while.
//!
//! This path is not the hot path (a miss costs a round trip to the origin), so it uses tokio
//! and hyper, maintained crates that own connection pooling, chunked decoding and timeouts;
//! the serving loop stays on io_uring.

pub mod budget;
pub mod disk_writer;
pub mod dns;
pub mod feed;
mod fetch;
mod head;
mod origin;
pub mod ranges;
pub mod stray;
pub mod stream;
pub mod tls;
pub mod upload;

use bytes::Bytes;
use relay_cache::disk::{Admission, DiskTier};
use relay_cache::fill::FillWriter;
use relay_cache::inflight::InFlight;
use relay_cache::key::ChunkRef;
use relay_cache::wake::{Wakers, Watchers};
use relay_cache::{Cache, Layout, MemoryTier, MetaCache, ObjectMeta};
use relay_config::{HttpOrigin, OriginConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use head::ObjectHead;
pub use origin::{Health, Origin, Server, WholeSlot, server_bit};

/// Why the upstream could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot start the upstream's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the disk tier's writer: {0}")]
    DiskWriter(std::io::Error),
    #[error("cannot start the upstream thread: {0}")]
    Thread(std::io::Error),
    #[error("origin.http[{0}]: {1}")]
    Tls(usize, tls::TlsError),
    #[error("{0}")]
    Resolver(dns::ResolverError),
}

/// Where fetched bytes go, and how waiting workers are woken.
#[derive(Clone)]
pub struct Store {
    pub memory: Arc<MemoryTier>,
    pub meta: Arc<MetaCache>,
    pub inflight: Arc<InFlight>,
    pub layout: Layout,
    /// Wakes the workers watching what a fetch completes (they re-check their waiting
    /// clients).
    pub wakers: Wakers,
    /// The disk tier, when configured: completed, storable chunks are written there.
    pub disk: Option<Arc<DiskTier>>,
    /// Which completed chunks go to disk (None: every one).
    pub admission: Option<Arc<Admission>>,
    /// The caching policy's settings (`cache.targeted_fields`).
    pub policy: Arc<relay_cache::policy::PolicyConfig>,
}

impl Store {
    /// The tiers of `cache` fetches fill, and `wakers` to wake the workers waiting on them.
    pub fn new(cache: &Cache, wakers: Wakers) -> Store {
        Store {
            memory: cache.memory.clone(),
            meta: cache.meta.clone(),
            inflight: cache.inflight.clone(),
            layout: cache.layout,
            wakers,
            disk: cache.disk.clone(),
            admission: cache.admission.clone(),
            policy: cache.policy.clone(),
        }
    }
}

/// A request for an object's description ([`Upstream::fetch_head`]): fetch its first chunk,
/// publish the description through `InFlight::finish_head`, and fill chunk 0 (and every
/// chunk, when the origin ignores Range and sends the whole body).
pub struct HeadRequest {
    pub origin: usize,
    /// The cache key the description is published under.
    pub object: Arc<str>,
    /// The request target sent to the origin.
    pub path: String,
    /// A stale copy to revalidate (`If-None-Match` / `If-Modified-Since`): a 304 renews
    /// it and its chunks stay valid.
    pub stale: Option<Arc<ObjectMeta>>,
    /// The triggering client's request header fields, sent with the fetch.
    pub forward: Forward,
    /// `object` names a variant of a response that varies (its `Vary` values are in
    /// `forward`). When false it names the base entry, which holds the response to a
    /// request sending none of the fields the response varies on: an answer that varies on
    /// a field `forward` carried is stored as that variant instead, and the base entry is
    /// fetched again without those fields.
    pub variant: bool,
    /// The request carries `Authorization` (in `forward`): the answer is stored only when it
    /// says it may answer such requests (RFC 9111 §3.5), else it is that client's alone.
    pub authorization: bool,
    /// How the site's other relays may be asked first ([`Peers`]); None: the origin only.
    pub peers: Option<PeerRoute>,
    /// How many chunks from the object's start the fetch asks for (at least one): more than
    /// one brings a cold object's start in the head's own round trip, the chunks after
    /// the first filled as the answer reaches them.
    pub span: u64,
}

/// A fetch that may ask the chunk's owner among the site's relays first: the client's
/// authority (the others key the object under it too) and the hop its request carries
/// (`relay_cluster::peer::MAX_HOPS` at most).
#[derive(Clone, Debug)]
pub struct PeerRoute {
    pub authority: Arc<str>,
    pub hop: u8,
}

/// A request to fill one chunk of a known object version ([`Upstream::fill_chunk`]).
pub struct ChunkRequest {
    pub origin: usize,
    /// The request target sent to the origin.
    pub path: String,
    pub meta: Arc<ObjectMeta>,
    /// The chunk's fill (its key names the chunk); dropped unfilled, it fails.
    pub writer: FillWriter,
    /// The header fields of the client request that started this chunk.
    pub forward: Forward,
    /// As [`HeadRequest::peers`].
    pub peers: Option<PeerRoute>,
}

/// The chunks ahead of a client in one Range request (`feed`): from `first`'s chunk to byte
/// `end` of the object (a chunk's end: at most four read-aheads on, and no further than the
/// client's body or the chunk before one held or on its way), each chunk's fill handed to
/// the fetch as the client's read-ahead claims it. A chunk the answer does not fill (it
/// broke off) is fetched as a [`ChunkRequest`] of its own.
pub struct StreamRequest {
    pub origin: usize,
    /// The request target sent to the origin.
    pub path: String,
    pub meta: Arc<ObjectMeta>,
    /// The first chunk's fill.
    pub first: FillWriter,
    /// The fills of the chunks after it, as they are claimed.
    pub feed: Arc<feed::Feed>,
    /// The last byte asked for (inclusive).
    pub end: u64,
    /// The header fields of the client request that started it.
    pub forward: Forward,
}

/// A request passed to the origin unchanged (with its body), its answer streamed back
/// ([`Upstream::pass`]); nothing is stored. Methods other than GET/HEAD take this way, and so
/// do GET/HEAD requests with `Authorization` (RFC 9111 §3.5). Unsafe methods invalidate what
/// they name.
pub struct PassRequest {
    pub origin: usize,
    pub method: http::Method,
    /// The request target sent to the origin.
    pub path: String,
    /// The client's header fields (`relay_proto::forward::PASS_OWN` and hop-by-hop ones
    /// already removed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request body: whole, its bytes holding a reservation of
    /// [`Upstream::pass_budget`] until the last reference to them drops; or streamed as the
    /// client sends it ([`Upstream::upload`]).
    pub body: RequestBody,
    /// The request's authority, normalised (for same-origin invalidation of Location /
    /// Content-Location).
    pub host: String,
    /// Where the answer lands.
    pub slot: Arc<PassSlot>,
    /// The client whose request this is: the response's window or buffer counts against its
    /// share of [`Upstream::pass_budget`].
    pub client: budget::Client,
}

/// A passed-through request's body.
pub enum RequestBody {
    /// Collected whole first (small bodies): sent with its length, and sent again if the
    /// request is retried.
    Whole(bytes::Bytes),
    /// Streamed through a window as the client sends it (longer bodies): never retried
    /// once sent.
    Stream(upload::UploadBody),
}

/// The other relays of the site, for the miss path: a chunk's owner among them (weighted
/// rendezvous hashing over the members' records, `relay_cluster::owners`) is asked for it
/// before the origin, so the site fetches each chunk from the origin once. Set once the
/// cluster is joined ([`Upstream::peers`]).
pub struct Peers {
    /// The peer address of the owner of a key when it is another relay (None: this relay
    /// owns it, or knows no other).
    pub owner: OwnerOf,
    /// What requests to them are signed with (`relay_cluster::peer`)...
    pub key: relay_cluster::peer::PeerKey,
    /// ...and this relay's name in them.
    pub node: String,
    /// The other live members (of any site): their peer address and the ETag of their
    /// digest (0: none yet), whose digests are fetched to find the nearest holder of a chunk
    /// (`fetch::digests`).
    pub members: MembersOf,
}

/// Gives the peer address of the owner of a chunk's name when it is another relay.
pub type OwnerOf = Box<dyn Fn(&[u8]) -> Option<std::net::SocketAddr> + Send + Sync>;

/// Gives the other live members' peer addresses and digest ETags.
pub type MembersOf = Box<dyn Fn() -> Vec<(std::net::SocketAddr, u64)> + Send + Sync>;

/// A fetch handed to the upstream thread.
pub(crate) enum Job {
    Head(HeadRequest),
    Chunk(ChunkRequest),
    Stream(StreamRequest),
    Pass(PassRequest),
}

/// A client's request header fields a fill sends on its behalf, as (name, value):
/// `relay_proto::forward::forwarded_fields` with `FILL_OWN`. The fetch adds its own Host,
/// Range, `Accept-Encoding: identity` and validators, and `User-Agent: relay` when the client
/// sent none.
pub type Forward = Arc<[(String, Vec<u8>)]>;

/// A passed-through response as the client gets it.
pub struct Passed {
    pub status: u16,
    /// The `Content-Length` to announce: the body's length, or for a response without a body
    /// (HEAD, 304) the origin's value; None for none (204, or the origin sent none).
    pub content_length: Option<u64>,
    /// End-to-end header fields, encoded (`Name: value\r\n`), Content-Type included.
    pub headers: bytes::Bytes,
    /// The origin's `Date`, or the time the answer was received when it sent none (RFC
    /// 9110 §6.6.1), sent on in its place.
    pub date: relay_cache::ResponseDate,
    /// The body as it arrives (None: the response has none).
    pub body: Option<PassBody>,
    /// Request targets this response invalidates (RFC 9111 §4.4), as paths.
    pub invalidate: Vec<String>,
}

/// A passed-through body.
#[derive(Clone)]
pub enum PassBody {
    /// Streamed through a window of [`PASS_WINDOW`] bytes as its client reads it (the
    /// upstream waits while the client is a window behind), with a `Content-Length` or
    /// without one.
    Stream(Arc<stream::Stream>),
}

impl PassBody {
    /// Its length, when the origin said it ahead.
    pub fn len(&self) -> Option<u64> {
        match self {
            PassBody::Stream(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// Where a pass-through's outcome lands; the waiting worker is woken through `watchers`.
#[derive(Default)]
pub struct PassSlot {
    pub result: std::sync::OnceLock<Result<Passed, relay_cache::fill::FillError>>,
    pub watchers: Watchers,
}

/// Memory one passed-through body takes, however long it is (and whether its length is known): the
/// upstream reads this far ahead of its client, then waits.
pub const PASS_WINDOW: usize = 2 << 20;

/// The window of a passed-through body whose length the origin did not say (chunked, or
/// until its close): smaller, as most are small (an API's answers) and each holds its own.
pub const PASS_WINDOW_UNSIZED: usize = 128 << 10;

/// The most an upstream connection reads ahead into its own buffer (hyper's read buffer;
/// hyper's default is about 400 KiB).
pub const UPSTREAM_READ_BUFFER: usize = 128 << 10;

/// What a streamed pass-through holds besides its window, counted in its reservation: the
/// frame being copied into the window (a slice of one read buffer, kept while the window is
/// full), the connection's read buffer (hyper grows it by doubling, so up to twice
/// [`UPSTREAM_READ_BUFFER`]) and the connection's and the job's state. Measured rather
/// than derived: readers of a passed-through 64 MiB body that never read made relay's RSS
/// grow by 2.83–2.93 MiB each with a 2 MiB window (2.45 MiB with 32 KiB read buffers), so
/// about four read buffers and 384 KiB besides; counting less let 112 such readers hold
/// 3.6 MiB more than the budget said.
pub const PASS_READ_AHEAD: usize = 4 * UPSTREAM_READ_BUFFER + (384 << 10);

/// How long a pass-through's upstream waits for its client to make room in the window
/// before it gives up (past the worker's own deadline for a stalled client, 60 s by
/// default, which ends the wait sooner by dropping the reader).
pub const PASS_STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// Counters of the miss path.
#[derive(Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    /// The disk writer's: chunks written, failed, dropped from a full queue, queued now.
    pub disk: Arc<disk_writer::WriterStats>,
    /// Cache fetches that found every fetch slot of their origin taken and waited.
    pub fetch_slot_waits: AtomicU64,
    /// Of those, fetches that got none within the first-byte timeout and failed.
    pub fetch_slot_timeouts: AtomicU64,
    /// Head and chunk fetches asked of the chunk's owner among the site's relays: answered
    /// (and used), or not (the origin asked instead).
    pub peer_answered: AtomicU64,
    pub peer_fell_back: AtomicU64,
    /// Chunks asked of a relay whose digest named it (`only-if-cached`): answered, or not
    /// (held no more, a false positive, or no answer).
    pub holder_hits: AtomicU64,
    pub holder_misses: AtomicU64,
    /// Other relays' digests fetched (a new build each).
    pub digests_fetched: AtomicU64,
    /// Chunks from a peer that did not match the checksum they came with.
    pub peer_corrupt: AtomicU64,
    /// Whole chunks answered by a peer, by where their checksum came: in the head (held
    /// there whole), in a trailer (streamed while it arrived there), or none sent.
    pub peer_sums: [AtomicU64; 3],
    /// Range requests an origin answered with the whole body (200), and the bytes before the
    /// wanted one read only to be thrown away (an origin that ignores Range, read by a slow
    /// client, costs this over and over).
    pub range_ignored: AtomicU64,
    pub range_skipped_bytes: AtomicU64,
    /// Origin answers to a chunk's Range request that ended short of the chunk (an origin
    /// that caps the bytes of a range, or an answer that broke off) after adding bytes to
    /// it: the rest asked for again from where the chunk stands.
    pub answers_resumed: AtomicU64,
}

/// The upstream thread and its origins.
pub struct Upstream {
    tx: tokio::sync::mpsc::UnboundedSender<Job>,
    origins: Arc<Vec<Origin>>,
    epoch: Instant,
    pub stats: Arc<UpstreamStats>,
    /// Bytes held for pass-throughs, bounded by `origin.pass_buffer_bytes`: the response
    /// windows the upstream reserves, and the request bodies workers collect before they
    /// hand them over (a body's reservation goes with it, [`PassRequest::body`]).
    pub pass_budget: Arc<budget::Budget>,
    /// Wakes the workers (a streamed request body's room).
    wakers: Wakers,
    /// The site's other relays, once the cluster is joined.
    peers: Arc<std::sync::OnceLock<Peers>>,
    /// The disk writer, and the disk tier's admission, for chunks admitted as they are
    /// served from memory ([`Upstream::store_chunk`]).
    disk_writer: Option<disk_writer::DiskWriter>,
    admission: Option<Arc<Admission>>,
    /// The descriptions, where a chunk admitted as it is served must still be described.
    described: Arc<MetaCache>,
}

impl Upstream {
    /// Starts the upstream thread for the HTTP origins of `config`, filling `cache` and
    /// waking workers through `wakers`; None when no HTTP origin is configured.
    pub fn open(
        config: &OriginConfig,
        cache: &Cache,
        wakers: Wakers,
    ) -> Result<Option<Upstream>, UpstreamError> {
        if config.http.is_empty() {
            return Ok(None);
        }
        let store = Store::new(cache, wakers);
        let budget = budget::Budget::new(
            config.pass_buffer_bytes,
            config
                .pass_buffer_per_client
                .bytes(config.pass_buffer_bytes),
        );
        Upstream::start(&config.http, &config.dns, store, budget).map(Some)
    }

    /// Starts the upstream thread for `origins`.
    /// `pass_budget` bounds the passed-through bodies held at once
    /// (`origin.pass_buffer_bytes`, and each client's share of it).
    pub fn start(
        origins: &[HttpOrigin],
        dns: &relay_config::DnsConfig,
        store: Store,
        pass_budget: Arc<budget::Budget>,
    ) -> Result<Upstream, UpstreamError> {
        let origins: Arc<Vec<Origin>> = Arc::new(
            origins
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut o =
                        Origin::with_tls(c.clone()).map_err(|e| UpstreamError::Tls(i, e))?;
                    o.policy = Arc::new(relay_cache::policy::PolicyConfig {
                        operator: c.cache.clone(),
                        ..(*store.policy).clone()
                    });
                    Ok(o)
                })
                .collect::<Result<_, _>>()?,
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let epoch = Instant::now();
        let stats = Arc::new(UpstreamStats::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(UpstreamError::Runtime)?;
        Upstream::look_up_names(&runtime, &origins, dns)?;
        let writer = match store.disk.clone() {
            Some(disk) => Some(
                disk_writer::DiskWriter::start(disk, stats.disk.clone())
                    .map_err(UpstreamError::DiskWriter)?,
            ),
            None => None,
        };
        let wakers = store.wakers.clone();
        let peers: Arc<std::sync::OnceLock<Peers>> = Arc::default();
        let (disk_writer, admission) = (writer.clone(), store.admission.clone());
        let described = store.meta.clone();
        let ctx = fetch::Context::new(
            origins.clone(),
            store,
            epoch,
            stats.clone(),
            writer,
            pass_budget.clone(),
            peers.clone(),
        );
        std::thread::Builder::new()
            .name("relay-upstream".into())
            .spawn(move || runtime.block_on(fetch::run(ctx, rx)))
            .map_err(UpstreamError::Thread)?;
        Ok(Upstream {
            tx,
            origins,
            epoch,
            stats,
            pass_budget,
            wakers,
            peers,
            disk_writer,
            admission,
            described,
        })
    }

    /// A response sends chunk `key` of `meta` (from memory when `bytes` are given): it
    /// counts a request for the disk tier's admission. Its second within the window admits
    /// it: written now from `bytes` (the disk writer skips a chunk the tier holds already),
    /// or, when its bytes are still on their way, once its fill completes. Nothing when
    /// every chunk is written as it is filled (`disk_admission = "always"`) or there is no
    /// disk tier.
    pub fn count_request(&self, key: &ChunkRef<'_>, bytes: Option<&Bytes>, meta: &ObjectMeta) {
        let (Some(writer), Some(admission)) = (self.disk_writer.as_ref(), &self.admission) else {
            return;
        };
        if !meta.storable || admission.written(key) || !admission.record(key) {
            return;
        }
        let Some(body) = bytes.filter(|_| !meta.open_ended) else {
            admission.mark_wanted(key);
            return;
        };
        // The removals so far, then the object still described as this version: a purge or
        // an invalidation drops the description before it is logged as a removal, so one
        // after this count finds the write at commit, and one before has dropped the
        // description. (The bytes may have been found long before: the chunks a slow
        // client's read-ahead held for it.)
        let since = relay_cache::disk::removals();
        let current = self.described.get(key.object);
        if current.is_none_or(|m| m.version != meta.version) {
            return;
        }
        admission.mark_written(key);
        writer.submit(disk_writer::WriteJob {
            key: key.to_owned_key(),
            object_len: meta.len,
            etag: meta.etag.clone(),
            last_modified: meta.last_modified.clone(),
            meta: meta.encode_blob(Instant::now(), fetch::unix_now()),
            body: body.clone(),
            sum: None,
            if_absent: true,
            since,
        });
    }

    /// The origins' servers given by DNS name looked up, all at once, before the upstream
    /// takes its first job (each within the resolver's timeout; one that fails is asked
    /// again soon), and kept looked up by tasks on `runtime` as their records expire.
    fn look_up_names(
        runtime: &tokio::runtime::Runtime,
        origins: &Arc<Vec<Origin>>,
        dns: &relay_config::DnsConfig,
    ) -> Result<(), UpstreamError> {
        let names = dns::names(origins);
        if names.is_empty() {
            return Ok(());
        }
        let resolver = runtime
            .block_on(async { dns::Resolver::new(dns) })
            .map_err(UpstreamError::Resolver)?;
        let resolver = Arc::new(resolver);
        let first = runtime.block_on(async {
            let mut all = tokio::task::JoinSet::new();
            for &(o, e) in &names {
                let (resolver, origins) = (resolver.clone(), origins.clone());
                all.spawn(async move {
                    let mut failures = 0;
                    let wait = dns::refresh(&resolver, &origins, o, e, &mut failures).await;
                    ((o, e), wait, failures)
                });
            }
            all.join_all().await
        });
        for (name, wait, failures) in first {
            runtime.spawn(dns::keep(
                resolver.clone(),
                origins.clone(),
                name,
                wait,
                failures,
            ));
        }
        Ok(())
    }

    /// The first origin that serves `host` (the request's authority without its port, as
    /// `relay_proto::Authority::host` gives it: any case, no trailing dot) and `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.origins.iter().position(|o| {
            path.starts_with(&o.config.prefix)
                && o.config.host.as_deref().is_none_or(|want| {
                    let want = want.strip_suffix('.').unwrap_or(want);
                    host.is_some_and(|h| h.eq_ignore_ascii_case(want))
                })
        })
    }

    /// Every origin (its Host and path prefix, as `origin.example/v/`) and its servers,
    /// each with whether it is up now.
    pub fn servers_up(&self) -> Vec<(String, Vec<(String, bool)>)> {
        let name = |o: &Origin| format!("{}{}", o.config.authority, o.config.prefix);
        let names: Vec<String> = self.origins.iter().map(name).collect();
        self.origins
            .iter()
            .enumerate()
            .map(|(i, o)| {
                // Origins that share an authority and prefix (told apart by the Host they
                // serve) are named by that Host too, and by their place in the config when
                // even that is shared: one series per origin, as Prometheus requires.
                let mut label = names[i].clone();
                if names.iter().filter(|n| **n == label).count() > 1 {
                    label.push_str(&format!(
                        " host={}",
                        o.config.host.as_deref().unwrap_or("*")
                    ));
                    let same = |j: usize| {
                        names[j] == names[i] && self.origins[j].config.host == o.config.host
                    };
                    if (0..names.len()).filter(|&j| same(j)).count() > 1 {
                        label.push_str(&format!(" #{}", i + 1));
                    }
                }
                (label, o.servers_up(self.epoch))
            })
            .collect()
    }

    /// Origin `origin`'s cache policy (its `cache_` keys).
    pub fn cache_policy(&self, origin: usize) -> Option<&relay_config::CachePolicy> {
        self.origins.get(origin).map(|o| &o.config.cache)
    }

    pub fn is_down(&self, origin: usize) -> bool {
        self.origins
            .get(origin)
            .is_some_and(|o| o.is_down(self.epoch))
    }

    /// Asks the origin for an object's description and its first chunk; the outcome is
    /// published under the request's in-flight head entry (`InFlight::finish_head`).
    pub fn fetch_head(&self, request: HeadRequest) {
        self.submit(Job::Head(request));
    }

    /// Fills one chunk from the origin. If the upstream thread is gone, the fill fails (its
    /// writer is dropped), so no client waits forever.
    pub fn fill_chunk(&self, request: ChunkRequest) {
        self.submit(Job::Chunk(request));
    }

    /// Fills the chunks ahead of a client from one answer ([`StreamRequest`]).
    pub fn fill_stream(&self, request: StreamRequest) {
        self.submit(Job::Stream(request));
    }

    /// A window to stream `client`'s request body of `len` bytes (None: not known, sent
    /// chunked) to the origin through, reserved from the pass-through budget: the worker
    /// writes to the [`upload::UploadWriter`] and hands the [`upload::UploadBody`] over with
    /// the request ([`RequestBody::Stream`]).
    pub fn upload(
        &self,
        client: budget::Client,
        len: Option<u64>,
    ) -> Result<(upload::UploadWriter, upload::UploadBody), budget::Refused> {
        let window = match len {
            Some(n) => n.min(upload::UPLOAD_WINDOW as u64) as usize + upload::PIECE_COST,
            None => upload::UPLOAD_WINDOW,
        };
        let reserved = self.pass_budget.reserve(client, window as u64)?;
        Ok(upload::Upload::open(
            len,
            window,
            Some(reserved),
            self.wakers.clone(),
        ))
    }

    /// Whether this relay has joined a cluster (its chunk fetches ask the site's relays
    /// first).
    pub fn clustered(&self) -> bool {
        self.peers.get().is_some()
    }

    /// Origin connections dropped because the origin sent bytes past the end of an
    /// answer, over every origin (`stray`).
    pub fn stray_answers(&self) -> u64 {
        self.origins
            .iter()
            .map(|o| o.strays.count.load(Ordering::Relaxed))
            .sum()
    }

    /// Whole fetches reading at their clients' pace now, over every origin
    /// ([`Origin::whole_slot`]).
    pub fn whole_fetches(&self) -> u64 {
        self.origins
            .iter()
            .map(|o| o.whole_fetches.load(Ordering::Acquire))
            .sum()
    }

    /// Whether origin `origin` answered a Range request for `object` with the whole body
    /// ([`ranges`]).
    pub fn ignores_range(&self, origin: usize, object: &str) -> bool {
        self.origins
            .get(origin)
            .is_some_and(|o| o.range_ignored.contains(object))
    }

    /// Where the site's other relays go once the cluster is joined: misses ask a chunk's
    /// owner among them before the origin (set once; later sets are ignored).
    pub fn peers(&self) -> Arc<std::sync::OnceLock<Peers>> {
        self.peers.clone()
    }

    /// Passes a request through to the origin; the answer lands in its slot.
    pub fn pass(&self, request: PassRequest) {
        self.submit(Job::Pass(request));
    }

    fn submit(&self, job: Job) {
        let _ = self.tx.send(job);
    }

    /// How long ago the upstream started (for tests and metrics).
    pub fn uptime(&self) -> Duration {
        self.epoch.elapsed()
    }
}

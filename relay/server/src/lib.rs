//! relay's data plane: one io_uring event loop per worker thread, thread-per-core and
//! share-nothing but for the chunk cache.
//!
//! Layout:
//! - [`bind`] / [`Eventfds`] / [`serve`]: bind the listeners (tests bind port 0), make each
//!   worker's eventfd, and start the workers with the [`Parts`] the caller built (the daemon
//!   opens the cache and starts the upstream; see its `run`).
//! - `exchange`: one connection's HTTP exchange, sans-IO: the events it takes, the actions
//!   it answers with, and every HTTP and cache decision of a request's way (start there).
//! - `worker`: the io_uring event loop, the exchanges' I/O shell (`worker::send`: sends).
//! - `ring`: io_uring submissions, one function per operation; the buffer rule lives here.
//! - `bufring`: the provided-buffer ring multishot receives land in.
//! - [`metrics`] / [`admin`]: Prometheus text of the workers' counters and merged latency
//!   histograms, served with `/healthz` on the admin listener.
//! - `origin`: the directory origin (`openat2` beneath its root).
//! - [`clients`]: open connections per client address across the workers.
//! - `sys`: the few plain syscalls made outside the ring.

pub mod access_log;
pub mod admin;
mod bufring;
pub mod cache_status;
pub mod clients;
pub mod digest;
pub mod errors;
mod exchange;
pub mod handover;
pub mod listen_lock;
pub mod metrics;
pub mod origin;
mod ring;
mod sys;
mod worker;

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use relay_cache::Cache;
use relay_cache::wake::Wakers;
use relay_config::Config;
use relay_proto::Limits;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

thread_local! {
    static WORKER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a worker thread (lets a test's counting allocator watch only the serving loop).
pub fn is_worker_thread() -> bool {
    WORKER_THREAD.with(|w| w.get())
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the origin directory {path}: {source}")]
    Origin {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up io_uring: {0}")]
    Ring(std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    #[error("{eventfds} worker eventfds for {listeners} listeners")]
    Eventfds { eventfds: usize, listeners: usize },
    #[error("a worker was given no client listener")]
    NoListener,
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
}

/// One eventfd per worker: a worker's ring reads its own, and whatever completes something a
/// worker waits on (the upstream thread, another worker) writes it through [`Eventfds::wakers`].
pub struct Eventfds {
    fds: Arc<Vec<OwnedFd>>,
}

impl Eventfds {
    /// Eventfds for `workers` workers (one per listener).
    pub fn new(workers: usize) -> Result<Eventfds, ServerError> {
        let fds = (0..workers)
            .map(|_| sys::eventfd())
            .collect::<Result<_, _>>()
            .map_err(ServerError::Ring)?;
        Ok(Eventfds { fds: Arc::new(fds) })
    }

    /// Wakes worker `w` by writing its eventfd.
    pub fn wakers(&self) -> Wakers {
        let fds = self.fds.clone();
        Wakers::new(move |w| {
            if let Some(fd) = fds.get(w) {
                sys::eventfd_signal(fd.as_raw_fd());
            }
        })
    }
}

/// What the workers serve from, built by the caller: the cache, the upstream (when HTTP
/// origins are configured) made with `wake.wakers()`, and the workers' eventfds.
pub struct Parts {
    pub cache: Cache,
    pub upstream: Option<relay_upstream::Upstream>,
    pub wake: Eventfds,
    /// The peer listener (`[cluster] peer_listen`), when there is one.
    pub peers: Option<Peers>,
}

/// What serving other relays takes: one listener per worker on the peer address (bound
/// like the client listeners, [`bind`]), and the key their requests are checked under.
pub struct Peers {
    pub listeners: Vec<TcpListener>,
    pub key: relay_cluster::peer::PeerKey,
    /// This relay's digest, served to the others (`digest`).
    pub digest: Arc<digest::DigestSlot>,
}

/// How workers hand memory that closed or idle connections freed back to the system: the
/// process's allocator keeps freed pages for reuse until the thread that freed them asks it
/// to give them back, which an idle worker would never do ([`set_memory_release`]).
static RELEASE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets how workers give freed memory back (the daemon's allocator's collect call); called on
/// a worker's tick after connections closed or gave their buffers back. Without it nothing
/// is done.
pub fn set_memory_release(release: fn()) {
    let _ = RELEASE_MEMORY.set(release);
}

pub(crate) fn release_memory() {
    if let Some(f) = RELEASE_MEMORY.get() {
        f();
    }
}

/// State shared by all workers: read-mostly, never locked on the hot path but for the
/// cache's short shard locks.
pub struct Shared {
    pub config: Config,
    pub limits: Limits,
    /// Every tier of the cache, and the fetches in flight.
    pub cache: Cache,
    /// The directory origin, when configured.
    pub origin: Option<origin::DirOrigin>,
    /// The HTTP origins' fetcher, when any is configured.
    pub upstream: Option<relay_upstream::Upstream>,
    /// One eventfd per worker: the upstream thread writes to wake waiting clients.
    pub wakers: Arc<Vec<OwnedFd>>,
    /// Wakes worker `w` through `wakers[w]` (handed to everything that completes a wait).
    pub wake: Wakers,
    pub shutdown: AtomicBool,
    /// Draining before a stop (`server.drain_ms`): serving as ever, `/healthz` at 503.
    pub draining: AtomicBool,
    /// Settings a SIGHUP may change while serving; workers read them on every tick.
    pub tunables: Tunables,
    /// Connections open per client address (`server.max_connections_per_client`).
    pub clients: clients::ClientConns,
    /// What requests on the peer listener are checked under (`relay_cluster::peer`).
    pub peer_key: Option<relay_cluster::peer::PeerKey>,
    /// This relay's digest, answered on the peer listener (`digest`).
    pub digest: Option<Arc<digest::DigestSlot>>,
    /// The access log (`[log] access`), when on.
    pub access_log: Option<access_log::AccessLog>,
}

/// The live-reloadable settings.
pub struct Tunables {
    pub header_timeout_ms: AtomicU64,
    pub idle_timeout_ms: AtomicU64,
    pub body_timeout_ms: AtomicU64,
    pub body_min_rate: AtomicU64,
    pub max_connections: AtomicU64,
    pub max_connections_per_client: AtomicU64,
    pub zerocopy_min_bytes: AtomicU64,
    pub zerocopy_unregistered_min_bytes: AtomicU64,
}

impl Tunables {
    fn from_config(c: &Config) -> Tunables {
        Tunables {
            header_timeout_ms: AtomicU64::new(c.server.header_timeout_ms),
            idle_timeout_ms: AtomicU64::new(c.server.idle_timeout_ms),
            body_timeout_ms: AtomicU64::new(c.server.body_timeout_ms),
            body_min_rate: AtomicU64::new(c.server.body_min_rate),
            max_connections: AtomicU64::new(c.server.max_connections as u64),
            max_connections_per_client: AtomicU64::new(c.server.max_connections_per_client as u64),
            zerocopy_min_bytes: AtomicU64::new(c.server.zerocopy_min_bytes),
            zerocopy_unregistered_min_bytes: AtomicU64::new(
                c.server.zerocopy_unregistered_min_bytes,
            ),
        }
    }
}

/// Counters of one worker, on a cache line of its own; summed on read.
pub struct WorkerStats {
    /// Request latency in µs, published by the worker from its private histogram every tick
    /// (one uncontended lock per tick, none per request) and merged by a scrape.
    pub latency: Mutex<Histogram<u64>>,
    pub sends: AtomicU64,
    pub zc_sends: AtomicU64,
    pub zc_copied: AtomicU64,
    /// Zero-copy sends from the registered arena (fixed buffers), of `zc_sends + zc_copied`.
    pub zc_fixed: AtomicU64,
    /// File reads into the registered arena (READ_FIXED): disk-tier bodies, directory chunks.
    pub read_fixed: AtomicU64,
    /// Chunks read from a directory origin's files (each read once however many wait).
    pub origin_file_reads: AtomicU64,
    /// Responses cut because their directory-origin file changed while being served.
    pub origin_file_changed: AtomicU64,
    /// 1 when this worker's ring registered the memory tier's arena.
    pub arena_registered: AtomicU64,
    pub upstream_heads: AtomicU64,
    pub upstream_chunks: AtomicU64,
    /// Of those, chunk fetches started ahead of a client (`origin.read_ahead_bytes`).
    pub read_ahead: AtomicU64,
    /// Streamed fetches started for chunks ahead of a client (each a Range request for a
    /// run of them: `relay_upstream::feed`).
    pub upstream_streams: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub disk_hits: AtomicU64,
    pub invalidations: AtomicU64,
    pub disk_corrupt: AtomicU64,
    pub accepted: AtomicU64,
    /// Connections closed at accept: the worker at `max_connections` (or draining)...
    pub rejected: AtomicU64,
    /// Connections whose reading stopped because they sent far ahead of their answers.
    pub reads_paused: AtomicU64,
    /// Connections cut for sending past their receive buffer and its overflow bound.
    pub floods_cut: AtomicU64,
    /// Times a response waited for chunk memory (at its bound, `relay_cache::arena`).
    pub room_waits: AtomicU64,
    /// Responses that started over before their first byte (`Exchange::start_over`).
    pub started_over: AtomicU64,
    /// Pass-through request bodies streamed to the origin through a window.
    pub uploads_streamed: AtomicU64,
    /// Requests on the peer listener whose `Relay-Peer` field held, and those refused 403.
    pub peer_ok: AtomicU64,
    pub peer_forbidden: AtomicU64,
    /// Of those, ones the origin answered before they were whole.
    pub uploads_answered_early: AtomicU64,
    /// What this worker's connections hold beyond their receive buffers, and its bound.
    pub overflow: Arc<exchange::OverflowMeter>,
    /// ...or their client at `max_connections_per_client`.
    pub refused_per_client: AtomicU64,
    pub open: AtomicU64,
    pub requests: AtomicU64,
    /// Responses by their `Cache-Status`: hits, misses, forwards by reason.
    pub lookups: cache_status::Lookups,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub bytes: AtomicU64,
    /// Answers relay made up itself, by status and reason, and their log lines' budget.
    pub made_up: errors::ErrorLog,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            latency: Mutex::new(metrics::latency_histogram()),
            sends: AtomicU64::new(0),
            zc_sends: AtomicU64::new(0),
            zc_copied: AtomicU64::new(0),
            zc_fixed: AtomicU64::new(0),
            read_fixed: AtomicU64::new(0),
            origin_file_reads: AtomicU64::new(0),
            origin_file_changed: AtomicU64::new(0),
            arena_registered: AtomicU64::new(0),
            upstream_heads: AtomicU64::new(0),
            upstream_chunks: AtomicU64::new(0),
            read_ahead: AtomicU64::new(0),
            upstream_streams: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            disk_corrupt: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            reads_paused: AtomicU64::new(0),
            floods_cut: AtomicU64::new(0),
            room_waits: AtomicU64::new(0),
            started_over: AtomicU64::new(0),
            uploads_streamed: AtomicU64::new(0),
            peer_ok: AtomicU64::new(0),
            peer_forbidden: AtomicU64::new(0),
            uploads_answered_early: AtomicU64::new(0),
            overflow: Arc::default(),
            refused_per_client: AtomicU64::new(0),
            open: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            lookups: cache_status::Lookups::default(),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            made_up: errors::ErrorLog::default(),
        }
    }
}

/// A snapshot of all workers' counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub rejected: u64,
    pub open: u64,
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub bytes: u64,
}

/// A running server: its shared state, counters and worker threads.
pub struct Server {
    pub shared: Arc<Shared>,
    stats: Arc<Vec<Arc<CachePadded<WorkerStats>>>>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    addr: SocketAddr,
    addrs: Vec<SocketAddr>,
}

impl Server {
    /// The address the listeners are bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every address the client listeners are bound to, `local_addr` first.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn stats(&self) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for w in self.stats.iter() {
            s.accepted += w.accepted.load(Ordering::Relaxed);
            s.rejected += w.rejected.load(Ordering::Relaxed);
            s.open += w.open.load(Ordering::Relaxed);
            s.requests += w.requests.load(Ordering::Relaxed);
            s.hits += w.lookups.hits.load(Ordering::Relaxed);
            s.misses += w.lookups.misses.load(Ordering::Relaxed);
            s.errors += w.errors.load(Ordering::Relaxed);
            s.timeouts += w.timeouts.load(Ordering::Relaxed);
            s.bytes += w.bytes.load(Ordering::Relaxed);
        }
        s
    }

    /// The handle a metrics scrape reads.
    /// The connections open across the workers, as a function to ask again later.
    pub fn open_connections(&self) -> impl Fn() -> u64 + Send + 'static {
        let workers = self.stats.clone();
        move || {
            workers
                .iter()
                .map(|w| w.open.load(std::sync::atomic::Ordering::Relaxed))
                .sum()
        }
    }

    pub fn metrics(&self) -> metrics::Metrics {
        metrics::Metrics {
            shared: self.shared.clone(),
            workers: self.stats.clone(),
            extra: None,
        }
    }

    /// Applies a reloaded config: the tunables that can change live take effect within one
    /// worker tick; returns the changed keys that need a restart (they keep their old value).
    pub fn reload(&self, new: &Config) -> Vec<&'static str> {
        let old = &self.shared.config;
        let t = &self.shared.tunables;
        t.header_timeout_ms
            .store(new.server.header_timeout_ms, Ordering::Relaxed);
        t.idle_timeout_ms
            .store(new.server.idle_timeout_ms, Ordering::Relaxed);
        t.body_timeout_ms
            .store(new.server.body_timeout_ms, Ordering::Relaxed);
        t.body_min_rate
            .store(new.server.body_min_rate, Ordering::Relaxed);
        t.max_connections
            .store(new.server.max_connections as u64, Ordering::Relaxed);
        t.max_connections_per_client.store(
            new.server.max_connections_per_client as u64,
            Ordering::Relaxed,
        );
        t.zerocopy_min_bytes
            .store(new.server.zerocopy_min_bytes, Ordering::Relaxed);
        t.zerocopy_unregistered_min_bytes.store(
            new.server.zerocopy_unregistered_min_bytes,
            Ordering::Relaxed,
        );
        self.shared
            .cache
            .memory
            .set_capacity(new.cache.memory_bytes);
        if let Some(up) = self.shared.upstream.as_ref() {
            // Of the budget running (its size is read once at start).
            let budget = up.pass_budget.limit();
            up.pass_budget
                .set_share(new.origin.pass_buffer_per_client.bytes(budget));
        }
        // Keys read once at start: a change is reported, not applied. Each key is named by
        // its path in `Config`.
        macro_rules! restart_only {
            ($($head:ident $(. $rest:ident)*),* $(,)?) => {
                [$((
                    concat!(stringify!($head) $(, ".", stringify!($rest))*),
                    old.$head$(.$rest)* != new.$head$(.$rest)*,
                )),*]
            };
        }
        restart_only![
            server.listen,
            server.listen_more,
            server.workers,
            server.pin_cpus,
            server.limits,
            cache.chunk_size,
            cache.disk_dir,
            cache.disk_bytes,
            cache.disk_fsync,
            cache.disk_admission,
            origin.directory,
            origin.revalidate_ms,
            origin.pass_buffer_bytes,
            origin.read_ahead_bytes,
            origin.dns,
            origin.http,
            log,
            admin,
            steer,
            cluster,
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// Starts draining: everything is served as before, but `/healthz` answers 503, so that
    /// whoever sends clients here sends them elsewhere before [`Server::shutdown`].
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Asks the workers to stop: no new connections; idle ones close; responses in flight
    /// finish (up to a deadline).
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
    }

    /// Waits for every worker to stop; the first worker error, if any.
    pub fn join(self) -> std::io::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("worker panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        if let Some(log) = &self.shared.access_log {
            log.finish();
        }
        result
    }

    /// Opens the access log's file again (SIGUSR1, after logrotate moved it).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.shared.access_log {
            log.reopen();
        }
    }
}

/// Binds `n` listeners on `addr` with SO_REUSEPORT (the kernel spreads connections across
/// them). With port 0 the first listener picks the port and the others share it.
pub fn bind(addr: SocketAddr, n: usize) -> Result<Vec<TcpListener>, ServerError> {
    let mut out = Vec::with_capacity(n);
    let mut addr_now = addr;
    for _ in 0..n.max(1) {
        let l = listener(addr_now).map_err(|source| ServerError::Listen { addr, source })?;
        addr_now = l
            .local_addr()
            .map_err(|source| ServerError::Listen { addr, source })?;
        out.push(l);
    }
    Ok(out)
}

/// The listeners of `workers` workers: each worker's, one per address of `addrs`, in
/// order (`bind` for each address).
pub fn bind_all(
    addrs: &[SocketAddr],
    workers: usize,
) -> Result<Vec<Vec<TcpListener>>, ServerError> {
    let mut out: Vec<Vec<TcpListener>> = (0..workers.max(1)).map(|_| Vec::new()).collect();
    for &addr in addrs {
        for (w, l) in bind(addr, workers)?.into_iter().enumerate() {
            out[w].push(l);
        }
    }
    Ok(out)
}

fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Starts one worker thread per entry of `listeners` (that worker's client listeners, one
/// per listen address, `bind_all`), serving `config` from `parts` until
/// [`Server::shutdown`].
pub fn serve(
    config: Config,
    listeners: Vec<Vec<TcpListener>>,
    parts: Parts,
) -> Result<Server, ServerError> {
    let Parts {
        cache,
        upstream,
        wake: eventfds,
        peers,
    } = parts;
    let peer_count = peers
        .as_ref()
        .map_or(listeners.len(), |p| p.listeners.len());
    if eventfds.fds.len() != listeners.len() || peer_count != listeners.len() {
        return Err(ServerError::Eventfds {
            eventfds: eventfds.fds.len(),
            listeners: listeners.len(),
        });
    }
    let (peer_key, digest, mut peer_listeners) = match peers {
        Some(p) => (
            Some(p.key),
            Some(p.digest),
            p.listeners.into_iter().map(Some).collect(),
        ),
        None => (None, None, Vec::new()),
    };
    peer_listeners.resize_with(listeners.len(), || None);
    // Every connection takes a descriptor (a miss or a disk read one more for a while): the
    // soft limit goes up to the hard one, and a limit below what the workers may hold is
    // said at start, not found out as failed accepts under load.
    match sys::raise_nofile_limit() {
        Ok(limit) => {
            let want = (listeners.len() as u64) * (config.server.max_connections as u64) + 1024;
            if limit < want {
                log::warn!(
                    "open files limited to {limit}, below the {want} that {} worker(s) × \
                     server.max_connections = {} may need: accepts past it wait in the backlog",
                    listeners.len(),
                    config.server.max_connections
                );
            }
        }
        Err(e) => log::warn!("RLIMIT_NOFILE: {e}"),
    }
    let origin = match &config.origin.directory {
        Some(dir) => Some(
            origin::DirOrigin::open(dir).map_err(|source| ServerError::Origin {
                path: dir.clone(),
                source,
            })?,
        ),
        None => None,
    };
    if listeners.iter().any(|l| l.is_empty()) {
        return Err(ServerError::NoListener);
    }
    let addrs: Vec<SocketAddr> = listeners
        .first()
        .map(|w| w.iter().filter_map(|l| l.local_addr().ok()).collect())
        .unwrap_or_default();
    let addr = addrs.first().copied().unwrap_or(config.server.listen);
    let limits = Limits {
        max_head_bytes: config.server.limits.max_head_bytes,
        max_headers: config.server.limits.max_headers,
        max_uri_bytes: config.server.limits.max_uri_bytes,
    };
    let wake = eventfds.wakers();
    if let Some(arena) = cache.memory.arena() {
        arena.set_wakers(wake.clone());
    }
    let wakers = eventfds.fds;
    let access_log = access_log::AccessLog::start(&config.log).map_err(ServerError::AccessLog)?;
    let shared = Arc::new(Shared {
        access_log,
        limits,
        cache,
        origin,
        upstream,
        wakers,
        wake,
        shutdown: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        tunables: Tunables::from_config(&config),
        clients: clients::ClientConns::default(),
        peer_key,
        digest,
        config,
    });
    let mut stats = Vec::new();
    let mut threads = Vec::new();
    for (i, (l, pl)) in listeners.into_iter().zip(peer_listeners).enumerate() {
        let st = Arc::new(CachePadded::new(WorkerStats::default()));
        stats.push(st.clone());
        let shared2 = shared.clone();
        // Build the ring on the thread that uses it (single-issuer rings belong to one task),
        // but report setup errors before returning.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let t = std::thread::Builder::new()
            .name(format!("relay-w{i}"))
            .spawn(move || {
                WORKER_THREAD.with(|w| w.set(true));
                if shared2.config.server.pin_cpus
                    && let Err(e) = sys::pin_to_allowed_cpu(i)
                {
                    log::warn!("worker {i}: cannot pin to a CPU: {e}");
                }
                match worker::Worker::new(l, pl, shared2, st, i) {
                    Ok(w) => {
                        let _ = tx.send(Ok(()));
                        w.run()
                    }
                    Err(e) => {
                        let kind = e.kind();
                        let _ = tx.send(Err(e));
                        Err(std::io::Error::from(kind))
                    }
                }
            })
            .map_err(ServerError::Thread)?;
        match rx.recv() {
            Ok(Ok(())) => threads.push(t),
            Ok(Err(e)) => {
                shared.shutdown.store(true, Ordering::Relaxed);
                return Err(ServerError::Ring(e));
            }
            Err(_) => return Err(ServerError::Ring(std::io::Error::other("worker died"))),
        }
    }
    Ok(Server {
        shared,
        stats: Arc::new(stats),
        threads,
        addr,
        addrs,
    })
}

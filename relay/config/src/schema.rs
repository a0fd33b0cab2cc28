//! The validated config relay runs with, its defaults and its bounds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use relay_proto::Limits;

use crate::bytesize::{KIB, MIB};

/// Most `server.listen` addresses.
pub const MAX_LISTEN: usize = 16;
/// `server.listen` when omitted.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Largest `server.workers`.
pub const MAX_WORKERS: usize = 1024;
/// `server.max_connections` when omitted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16384;
/// Largest `server.max_connections` (per worker).
pub const MAX_CONNECTIONS: usize = 1 << 20;
/// `server.header_timeout_ms` when omitted.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// `server.idle_timeout_ms` when omitted.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// `server.body_timeout_ms` when omitted.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;
/// `server.body_min_rate` when omitted (bytes per second).
pub const DEFAULT_BODY_MIN_RATE: u64 = 8 * KIB;
/// Largest `server.body_min_rate`.
pub const MAX_BODY_MIN_RATE: u64 = 1 << 30;
/// `server.max_connections_per_client` when omitted.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1024;
/// Largest timeout: one day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Bounds of `server.limits.max_head_bytes`.
pub const HEAD_BYTES_RANGE: (u64, u64) = (KIB, MIB);
/// Smallest `server.limits.max_uri_bytes` (the largest is `max_head_bytes`).
pub const MIN_URI_BYTES: u64 = 16;
/// `cache.chunk_size` when omitted.
pub const DEFAULT_CHUNK_SIZE: u64 = MIB;
/// Bounds of `cache.chunk_size`, which must also be a power of two.
pub const CHUNK_SIZE_RANGE: (u64, u64) = (4 * KIB, 64 * MIB);
/// `cache.memory_bytes` when omitted.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 * MIB;
/// `cache.meta_bytes` when omitted: about 65,000 descriptions of 1 KiB.
pub const DEFAULT_META_BYTES: u64 = 64 * MIB;
/// Bounds of `cache.meta_bytes`: at least 64 descriptions of the largest size stored
/// (64 KiB, `relay_cache::meta::MAX_DESCRIPTION_BYTES`).
pub const META_BYTES_RANGE: (u64, u64) = (4 * MIB, 1024 * 1024 * MIB);
/// `admin.listen` when omitted: loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));
/// `cache.disk_bytes` when omitted.
pub const DEFAULT_DISK_BYTES: u64 = 10 * 1024 * MIB;
/// `origin.revalidate_ms` when omitted.
pub const DEFAULT_REVALIDATE_MS: u64 = 1000;
/// `steer.pin_root` when omitted.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/relay";

/// The whole config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[server]`: listener, workers, connections, timeouts, request limits.
    pub server: ServerConfig,
    /// `[cache]`: chunking and the memory tier.
    pub cache: CacheConfig,
    /// `[origin]`: where objects come from.
    pub origin: OriginConfig,
    /// `[admin]`: the metrics and health listener.
    pub admin: AdminConfig,
    /// `[steer]`: the XDP steering program's pinned maps.
    pub steer: SteerConfig,
    /// `[cluster]`: gossip membership with the other relays; None: this relay stands alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `[log]`: the access log.
    pub log: LogConfig,
}

/// `[log]`: one line per response, written by a thread of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `access`: where the lines go; None (`""`, the default): nowhere.
    pub access: Option<AccessLogTarget>,
    /// `access_format`: `"logfmt"` (key=value pairs, the default) or `"json"` (an object
    /// per line).
    pub access_format: AccessLogFormat,
    /// `access_queue`: lines waiting for the writer at most; a line past it is dropped and
    /// counted (`relay_access_log_dropped_total`), never waited for (default 65536).
    pub access_queue: usize,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            access: None,
            access_format: AccessLogFormat::Logfmt,
            access_queue: 65536,
        }
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `"-"`: standard output (the journal, under systemd).
    Stdout,
    /// A file, appended to, opened again on SIGUSR1 (after logrotate moved it).
    File(std::path::PathBuf),
}

/// How an access log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Logfmt,
    Json,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1:8080): the first of `server.listen`, the one
    /// the listen lock and a hand-over are keyed on.
    pub listen: SocketAddr,
    /// The other `server.listen` addresses, when it lists several.
    pub listen_more: Vec<SocketAddr>,
    /// Worker threads; 0 means one per core (see [`ServerConfig::effective_workers`]).
    pub workers: usize,
    /// Open connections per worker (default 16384).
    pub max_connections: usize,
    /// Time allowed to receive a complete request head, in ms (default 10000).
    pub header_timeout_ms: u64,
    /// Time an idle keep-alive connection stays open, in ms (default 60000).
    pub idle_timeout_ms: u64,
    /// A request body relay collects (a pass-through's) may pause this long between bytes,
    /// and is given this long before `body_min_rate` applies, in ms (default 10000).
    pub body_timeout_ms: u64,
    /// Bytes per second a collected request body must average, counted from its start with
    /// `body_timeout_ms` of grace (default 8 KiB; 0: no rate, only the pause).
    pub body_min_rate: u64,
    /// Open connections from one client address (IPv4 address, IPv6 /64) across all
    /// workers; more are closed as they are accepted (default 1024; 0: no limit).
    pub max_connections_per_client: usize,
    /// `[server.limits]`: request-head limits (defaults from [`Limits::DEFAULT`]).
    pub limits: Limits,
    /// Pin worker `i` to CPU `i` (modulo the CPUs this process may use); default false.
    pub pin_cpus: bool,
    /// Body pieces in the registered memory arena at least this long are sent zero-copy
    /// while the kernel reports it does not copy them (0: never). Default 16 KiB
    /// (`cargo xtask bench zc-send`: from 8 KiB on, a fixed-buffer SEND_ZC costs less CPU
    /// per byte than a copying send).
    pub zerocopy_min_bytes: u64,
    /// The same for pieces outside the arena (their pages are pinned per send). Default
    /// 64 KiB (measured cheaper than the copy only from 48 KiB on).
    pub zerocopy_unregistered_min_bytes: u64,
    /// `drain_ms`: after SIGTERM, how long relay goes on serving (and accepting) with
    /// `/healthz` answering 503, so load balancers and the site's steering take it out of
    /// rotation before it stops (0, the default: it stops at once).
    pub drain_ms: u64,
}

impl ServerConfig {
    /// Worker threads to start: `workers`, or one per available core if 0.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map_or(1, NonZeroUsize::get)
                .min(MAX_WORKERS)
        }
    }

    /// `header_timeout_ms` as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `body_timeout_ms` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// Every address to listen on, `listen` first.
    pub fn listens(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen)
            .chain(self.listen_more.iter().copied())
            .collect()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            listen_more: Vec::new(),
            workers: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            body_timeout_ms: DEFAULT_BODY_TIMEOUT_MS,
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            limits: Limits::DEFAULT,
            pin_cpus: false,
            zerocopy_min_bytes: 16 * KIB,
            zerocopy_unregistered_min_bytes: 64 * KIB,
            drain_ms: 0,
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes per cached chunk: a power of two from 4 KiB to 64 MiB (default 1 MiB).
    pub chunk_size: u64,
    /// Memory-tier capacity in bytes, at least `chunk_size` (default 256 MiB).
    pub memory_bytes: u64,
    /// Memory for object descriptions (length, validators, freshness, the stored response
    /// header fields), each counted with its key and bookkeeping; past it the least used
    /// are dropped (default 64 MiB, 4 MiB to 1 TiB).
    pub meta_bytes: u64,
    /// Disk-tier directory for chunks of HTTP origins (absent: no disk tier). Relative
    /// paths are resolved against the config file's directory.
    pub disk_dir: Option<PathBuf>,
    /// Disk-tier capacity in bytes (default 10 GiB).
    pub disk_bytes: u64,
    /// `fdatasync` every chunk before it becomes visible (default false: checksums already
    /// guarantee a torn chunk is never served; syncing only keeps more across power loss).
    pub disk_fsync: bool,
    /// Which chunks go to disk: "second-hit" (default: keeps one-hit wonders off the disk)
    /// or "always".
    pub disk_admission: DiskAdmission,
    /// The targeted cache-control fields relay obeys (RFC 9213 §2.1), most specific first,
    /// lower-case: the first one a response carries (valid) decides its caching alone,
    /// over `Cache-Control` and `Expires` (default `["cdn-cache-control"]`; empty: none).
    pub targeted_fields: Vec<String>,
}

/// `cache.disk_admission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskAdmission {
    /// A chunk goes to disk on its second request, whatever room the tier has.
    SecondHit,
    /// Every chunk while the disk tier has room (its first fifteen sixteenths), then on its
    /// second request: filling a tier evicts (almost) nothing, so only a full one needs keeping
    /// one-hit wonders out (the default).
    SecondHitWhenFull,
    Always,
}

impl CacheConfig {
    /// Bytes the memory tier maps (and, registered with io_uring, pins): `memory_bytes` plus
    /// room for the chunks that hold blocks outside it — fills not yet stored and evicted
    /// chunks still being sent — and for the buddy allocator's fragmentation: an eighth
    /// more, at least four chunks (but never more than `memory_bytes` again).
    pub fn arena_bytes(&self) -> u64 {
        self.memory_bytes.saturating_add(self.headroom())
    }

    /// The most chunk memory kept on the heap beside the arena when the arena has no block
    /// free (fills, chunks being sent after eviction, chunks queued for the disk): as much
    /// again as the arena's headroom. All chunk memory is then within `memory_bytes` plus
    /// twice the headroom.
    pub fn loose_chunk_bytes(&self) -> u64 {
        self.headroom()
    }

    /// An eighth of `memory_bytes`, at least four chunks (never more than `memory_bytes`).
    fn headroom(&self) -> u64 {
        (self.memory_bytes / 8).max(self.chunk_size.saturating_mul(4).min(self.memory_bytes))
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            meta_bytes: DEFAULT_META_BYTES,
            disk_dir: None,
            disk_bytes: DEFAULT_DISK_BYTES,
            disk_fsync: false,
            disk_admission: DiskAdmission::SecondHitWhenFull,
            targeted_fields: vec!["cdn-cache-control".to_string()],
        }
    }
}

/// `[origin]`: a directory, HTTP origins, or both (HTTP origins are tried first, by
/// Host and path prefix; the directory serves what no HTTP origin claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Directory objects are served from. Relative paths in the file are
    /// resolved against the file's directory; `Config::load` also makes it
    /// canonical and checks that it is a directory.
    pub directory: Option<PathBuf>,
    /// `[[origin.http]]`: HTTP origins, in the order they are matched.
    pub http: Vec<HttpOrigin>,
    /// How long a file's description (length, mtime) is trusted before the file is looked
    /// at again, in ms (default 1000). A changed file gets a new version; old chunks of it
    /// are never served with the new one.
    pub revalidate_ms: u64,
    /// Bytes of passed-through bodies held in memory at once: a 2 MiB window per response
    /// body with a length, the whole of one without, and request bodies whole until they
    /// have gone to the origin; a pass-through that finds no room is answered 503 (default
    /// 256 MiB).
    pub pass_buffer_bytes: u64,
    /// How much of `pass_buffer_bytes` one client address may hold (default a quarter).
    pub pass_buffer_per_client: ClientShare,
    /// `read_ahead_bytes`: how far ahead of a client's position in an object from an HTTP
    /// origin its chunks not held are fetched at once (a run of them by one streamed
    /// request, outside a cluster), and how much a first fetch from the object's start asks
    /// for: a cold large object comes without a round trip per chunk (default 16 MiB;
    /// 0: off). Only chunks the client's response will send.
    pub read_ahead_bytes: u64,
    /// How origin servers' DNS names are looked up.
    pub dns: DnsConfig,
}

/// `origin.read_ahead_bytes` when omitted.
pub const DEFAULT_READ_AHEAD_BYTES: u64 = 16 * MIB;

/// `origin.pass_buffer_bytes` when omitted.
pub const DEFAULT_PASS_BUFFER_BYTES: u64 = 256 * MIB;

/// `origin.pass_buffer_per_client` when omitted: a quarter of the budget, so that under the
/// default budget (256 MiB) one client may still send the largest body relay collects
/// (64 MiB), and four addresses, not one, are needed to fill it.
pub const DEFAULT_PASS_BUFFER_PER_CLIENT: ClientShare = ClientShare::Fraction(PER_MILLION / 4);

/// The denominator of [`ClientShare::Fraction`].
pub const PER_MILLION: u32 = 1_000_000;

/// `origin.pass_buffer_per_client`: the most of the pass-through budget one client address
/// may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientShare {
    /// No bound per client (written `0`).
    Off,
    /// This many millionths of `pass_buffer_bytes` (written as a number from 0 to 1, or a
    /// percentage string, `"25%"`).
    Fraction(u32),
    /// This many bytes (written as a byte size, `"32 MiB"`).
    Bytes(u64),
}

impl ClientShare {
    /// The share in bytes of a budget of `budget` bytes; None when there is no bound.
    pub fn bytes(self, budget: u64) -> Option<u64> {
        match self {
            ClientShare::Off => None,
            ClientShare::Fraction(f) => {
                Some((u128::from(budget) * u128::from(f) / u128::from(PER_MILLION)) as u64)
            }
            ClientShare::Bytes(b) => Some(b.min(budget)),
        }
    }
}

/// `[[origin.http]]`: one HTTP/1.1 origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOrigin {
    /// The servers misses are fetched from: `servers`, each name's addresses, else the
    /// URL's (`http://host[:port]` or `https://host[:port]`, no path) address.
    pub servers: Vec<OriginServer>,
    /// `health_check`: each server asked for a path now and then; off when absent.
    pub health_check: Option<HealthCheck>,
    /// The authority sent as `Host` upstream: `host_header` when set, else
    /// `tls_server_name` when set (with the URL's port unless it is 443), else the URL's
    /// host[:port] as written.
    pub authority: String,
    /// TLS to the origin (an `https://` URL); None for `http://`.
    pub tls: Option<OriginTls>,
    /// The operator's caching terms for this origin's answers (the `cache_` keys).
    pub cache: CachePolicy,
    /// Serve only requests whose `Host` equals this (case-insensitive); any when absent.
    pub host: Option<String>,
    /// Serve only request paths starting with this (default "/").
    pub prefix: String,
    /// TCP connect timeout in ms (default 2000).
    pub connect_timeout_ms: u64,
    /// Time from request sent to the response head, in ms (default 10000).
    pub first_byte_timeout_ms: u64,
    /// Longest pause inside a response body, in ms (default 10000).
    pub idle_timeout_ms: u64,
    /// Retries of a failed idempotent fetch before any byte arrived (default 2).
    pub retries: u32,
    /// Consecutive failures that mark the origin down (default 3).
    pub down_after_failures: u32,
    /// How long a down origin is not asked (default 5000 ms); requests get 502 meanwhile.
    pub down_ms: u64,
    /// Cache fetches to this origin under way at once, and keep-alive connections kept
    /// idle for them (default 64); pass-throughs are bounded by the pass budget instead.
    pub max_connections: usize,
}

/// An origin's caching terms set by the operator (the `cache_` keys of `[[origin.http]]`),
/// over what its answers say (RFC 9111). All off by default: the answers decide. TTLs and
/// windows are in seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePolicy {
    /// `cache_default_ttl`: how long an answer is fresh when it states no freshness of its
    /// own (no `max-age`, `s-maxage`, `Expires` or targeted field) and its status is
    /// cacheable by default (200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501);
    /// it stands before the heuristic from `Last-Modified`.
    pub default_ttl: Option<u32>,
    /// `cache_status_ttl`: the same for answers with these statuses, cacheable by default
    /// or not (a 302, a 503: negative caching). An exact status wins over its class
    /// (`"5xx"`), and both over `default_ttl`.
    pub status_ttl: Vec<(StatusMatch, u32)>,
    /// `cache_ttl_min`, `cache_ttl_max`: bounds on the freshness lifetime of every answer
    /// stored, whatever set it (one that must always be revalidated, `no-cache`, stays so).
    pub ttl_min: Option<u32>,
    pub ttl_max: Option<u32>,
    /// `cache_ignore_no_cache`: an answer's `no-cache` is ignored.
    pub ignore_no_cache: bool,
    /// `cache_ignore_private`: an answer's `private` is ignored.
    pub ignore_private: bool,
    /// `cache_ignore_set_cookie`: an answer that sets a cookie is stored without its
    /// `Set-Cookie` field (the client whose request fetched it still gets it).
    pub ignore_set_cookie: bool,
    /// `cache_stale_while_revalidate`, `cache_stale_if_error`: the windows of an answer
    /// that states none (and does not forbid serving it stale).
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
    /// `cache_key_query`: what a GET or HEAD's query is in the cache key, and so what is
    /// asked of the origin: as sent, its parameters sorted, or none.
    pub query: QueryKey,
    /// `cache_key_query_drop`: parameters left out of the query (matched by name as sent,
    /// without decoding); the rest sorted.
    pub query_drop: Vec<String>,
}

/// `cache_key_query`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueryKey {
    /// As the client sent it.
    #[default]
    Keep,
    /// Its parameters sorted (`?b=2&a=1` and `?a=1&b=2` are one object).
    Sort,
    /// None at all.
    Drop,
}

/// A status `cache_status_ttl` names: one code, or a class (`Class(5)`: 500 to 599).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u16),
}

impl CachePolicy {
    /// The operator's freshness lifetime for an answer with `status` that states none:
    /// `status_ttl` (the code, then its class), else `default_ttl` when the status is
    /// `cacheable_by_default`.
    pub fn ttl_for(&self, status: u16, cacheable_by_default: bool) -> Option<u32> {
        let find = |m: StatusMatch| self.status_ttl.iter().find(|(s, _)| *s == m);
        find(StatusMatch::Code(status))
            .or_else(|| find(StatusMatch::Class(status / 100)))
            .map(|(_, ttl)| *ttl)
            .or(self.default_ttl.filter(|_| cacheable_by_default))
    }
}

/// One server of an origin's pool (`servers`, or the URL's host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginServer {
    /// As written, with the scheme's port when left out (`host:port`), for logs.
    pub name: String,
    /// An address, or a DNS name the upstream looks up (and again as its records expire).
    pub host: ServerHost,
    /// Its share of the requests among the servers up (1 to 1000, default 1).
    pub weight: u32,
    /// Asked only while no server that is not a backup is up.
    pub backup: bool,
}

/// Where an origin server is: an IP address, or a DNS name whose addresses (each a server
/// of the same weight) are looked up through `origin.resolver` and again as their records
/// expire (`origin.dns_ttl_min_ms` to `dns_ttl_max_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerHost {
    Address(SocketAddr),
    /// A DNS name (lower case, no trailing dot) and the port its addresses are asked on.
    Name {
        name: String,
        port: u16,
    },
}

impl OriginServer {
    /// Its address when it is written as one.
    pub fn address(&self) -> Option<SocketAddr> {
        match self.host {
            ServerHost::Address(a) => Some(a),
            ServerHost::Name { .. } => None,
        }
    }
}

/// How the DNS names of origin servers are looked up (`[origin]`: `resolver`,
/// `resolver_timeout_ms`, `dns_ttl_min_ms`, `dns_ttl_max_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The name servers asked (UDP, then TCP for a truncated answer); empty: those of
    /// `/etc/resolv.conf`, with its hosts file.
    pub resolver: Vec<SocketAddr>,
    /// How long one lookup may take before it fails (the last addresses are kept).
    pub timeout_ms: u64,
    /// A name's addresses are looked up again when its records expire, but not sooner than
    /// this nor later than `ttl_max_ms`.
    pub ttl_min_ms: u64,
    pub ttl_max_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            resolver: Vec::new(),
            timeout_ms: 2000,
            ttl_min_ms: 1000,
            ttl_max_ms: 300_000,
        }
    }
}

/// An origin's active health check (`health_check`): every `interval_ms`, each server is
/// asked `GET path` (the origin's Host, over TLS for `https://`); an answer below 400
/// within `timeout_ms` passes. `fall` failures in a row take the server out of the pool,
/// `rise` passes in a row bring it back. Beside the passive health every request keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub fall: u32,
    pub rise: u32,
}

/// The most servers one origin has at once (each address of a name counted; a name has at
/// least one, and at most 16, of them).
pub const MAX_ORIGIN_SERVERS: usize = 64;

/// How relay speaks TLS to an `https://` origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTls {
    /// The name sent in SNI and that the certificate must be valid for: `tls_server_name`,
    /// else the URL's host (a DNS name or an IP address).
    pub server_name: String,
    /// `tls_ca_file`: the PEM file of the certificate authorities trusted for this origin,
    /// instead of the system's (`/etc/ssl/certs`).
    pub ca_file: Option<std::path::PathBuf>,
    /// `tls_insecure_skip_verify`: accept any certificate for any name. Anyone on the path
    /// to the origin can then answer for it and poison the cache; for tests only, and
    /// logged as a warning at every start.
    pub insecure_skip_verify: bool,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Serve `/metrics` and `/healthz` (default true).
    pub enabled: bool,
    /// Address of the admin listener (default 127.0.0.1:9090; keep it off public networks).
    pub listen: SocketAddr,
    /// Bearer token that `POST /purge` requires; absent: purging is refused (403).
    pub purge_token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: DEFAULT_ADMIN_LISTEN,
            purge_token: None,
        }
    }
}

/// `[steer]`: the XDP steering plane (services, nodes, table sizes, policies, guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerConfig {
    /// The interface `relay run` keeps in step: when `relay_steer` is attached to it (pinned
    /// under `pin_root`), the daemon syncs its maps at start, on SIGHUP and when a node's
    /// health changes. None (default): the daemon leaves steering alone.
    pub iface: Option<String>,
    /// bpffs directory the steering maps are pinned under (default /sys/fs/bpf/relay).
    pub pin_root: PathBuf,
    /// Slots of each service's Maglev table: a prime from 13 to 65537 (default 65537).
    pub ring_size: u32,
    /// Services the maps have room for, 1 to 256 (default 16); at least `services.len()`.
    pub max_services: u32,
    /// Entries of the LRU connection table (default 1048576).
    pub flow_table_entries: u32,
    /// Malformed headers: pass or drop (default drop).
    pub malformed: SteerPolicy,
    /// IPv4 fragments and IPv6 fragment headers: pass or drop (default pass).
    pub fragments: SteerPolicy,
    /// IPv4 options / IPv6 extension headers: steer (IPv4 only), pass or drop (default steer).
    pub ip_options: SteerPolicy,
    /// Decapsulate IPIP / IP6IP6 from the encapsulation source prefixes (receiving relays).
    pub decap: bool,
    /// Outer IPv4 source prefix of encapsulated packets (default 172.16.0.0/16).
    pub encap_source_v4: (Ipv4Addr, u8),
    /// Outer IPv6 source prefix of encapsulated packets (default 100::/64).
    pub encap_source_v6: (Ipv6Addr, u8),
    /// Nodes within this round-trip time count fully; farther ones lose weight in
    /// proportion (default 1000 µs).
    pub proximity_rtt_us: u64,
    /// The live relays of this relay's site (`[cluster]`) are nodes of the tables beside
    /// `nodes`: their weight, their health (a member, whose HTTP address connects) and their
    /// measured round trip, so a relay that joins gets flows and one that dies loses them
    /// without a config edit. Needs `[cluster]` (default false).
    pub cluster_nodes: bool,
    /// A router towards the site's relays, whose MAC steered packets are sent to; None
    /// (default): the relays share this relay's link and each one's MAC is looked up.
    pub cluster_next_hop: Option<IpAddr>,
    /// `[steer.guard]`.
    pub guard: SteerGuard,
    /// `[steer.health]`.
    pub health: SteerHealth,
    /// `[[steer.services]]`.
    pub services: Vec<SteerService>,
    /// `[[steer.nodes]]`.
    pub nodes: Vec<SteerNode>,
}

impl Default for SteerConfig {
    fn default() -> Self {
        SteerConfig {
            iface: None,
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            ring_size: DEFAULT_RING_SIZE,
            max_services: DEFAULT_MAX_SERVICES,
            flow_table_entries: DEFAULT_FLOW_TABLE_ENTRIES,
            malformed: SteerPolicy::Drop,
            fragments: SteerPolicy::Pass,
            ip_options: SteerPolicy::Steer,
            decap: false,
            encap_source_v4: (Ipv4Addr::new(172, 16, 0, 0), 16),
            encap_source_v6: (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
            proximity_rtt_us: DEFAULT_PROXIMITY_RTT_US,
            cluster_nodes: false,
            cluster_next_hop: None,
            guard: SteerGuard::default(),
            health: SteerHealth::default(),
            services: Vec::new(),
            nodes: Vec::new(),
        }
    }
}

/// `steer.ring_size` when omitted (Maglev's usual table size).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Bounds of `steer.ring_size` (the largest is the kernel side's fixed ring capacity).
pub const RING_SIZE_RANGE: (u32, u32) = (13, 65537);
/// `steer.max_services` when omitted.
pub const DEFAULT_MAX_SERVICES: u32 = 16;
/// Largest `steer.max_services` and number of `[[steer.nodes]]`.
pub const MAX_STEER_SERVICES: u32 = 256;
/// Most `[[steer.nodes]]`.
pub const MAX_STEER_NODES: usize = 256;
/// `steer.flow_table_entries` when omitted, and its bounds.
pub const DEFAULT_FLOW_TABLE_ENTRIES: u32 = 1 << 20;
pub const FLOW_TABLE_RANGE: (u64, u64) = (1024, 1 << 26);
/// `steer.proximity_rtt_us` when omitted.
pub const DEFAULT_PROXIMITY_RTT_US: u64 = 1000;
/// `steer.guard.rate_table_entries` when omitted, and its bounds.
pub const DEFAULT_RATE_TABLE_ENTRIES: u32 = 1 << 16;
pub const RATE_TABLE_RANGE: (u64, u64) = (64, 1 << 24);
/// `steer.guard.new_flow_burst` when omitted.
pub const DEFAULT_NEW_FLOW_BURST: u64 = 64;
/// Largest `steer.nodes[].weight`.
pub const MAX_NODE_WEIGHT: u64 = 10_000;
/// `steer.nodes[].weight` when omitted.
pub const DEFAULT_NODE_WEIGHT: u32 = 100;

/// `steer.health.rtt_change_percent` when omitted.
pub const DEFAULT_RTT_CHANGE_PERCENT: u32 = 20;

/// `[steer.health]`: how `relay run` checks the nodes that have a `health_check` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerHealth {
    /// Time between two checks of a node, in ms (default 1000).
    pub interval_ms: u64,
    /// Bound on one check (connect, request, status line), in ms (default 500).
    pub timeout_ms: u64,
    /// Consecutive failed checks that mark a node down (default 3).
    pub down_after: u32,
    /// Consecutive passed checks that bring a down node back (default 2).
    pub up_after: u32,
    /// Path of the `GET` whose `200` answer means healthy (default "/healthz").
    pub path: String,
    /// Time each check's TCP connect (one round trip) and use the median of the last few as
    /// the node's `rtt_us` (default true). False: the configured `rtt_us` always applies.
    pub measure_rtt: bool,
    /// A measured round trip re-syncs the maps only when it moves the node's proximity
    /// factor by more than this many percent (default 20), so jitter does not move flows.
    pub rtt_change_percent: u32,
}

impl Default for SteerHealth {
    fn default() -> Self {
        SteerHealth {
            interval_ms: 1000,
            timeout_ms: 500,
            down_after: 3,
            up_after: 2,
            path: "/healthz".to_owned(),
            measure_rtt: true,
            rtt_change_percent: DEFAULT_RTT_CHANGE_PERCENT,
        }
    }
}

/// What the steering program does with a class of packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerPolicy {
    /// Hand to the local network stack untouched.
    Pass,
    /// Drop.
    Drop,
    /// Steer like any other packet (only `ip_options`, IPv4).
    Steer,
}

/// `[steer.guard]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerGuard {
    /// New flows per second allowed per source address (per CPU); 0 = unlimited (default).
    pub new_flows_per_second: u64,
    /// Token bucket size in new flows (default 64).
    pub new_flow_burst: u64,
    /// Sources tracked per CPU (LRU; default 65536).
    pub rate_table_entries: u32,
    /// Source prefixes whose packets are dropped.
    pub blocklist: Vec<(IpAddr, u8)>,
}

impl Default for SteerGuard {
    fn default() -> Self {
        SteerGuard {
            new_flows_per_second: 0,
            new_flow_burst: DEFAULT_NEW_FLOW_BURST,
            rate_table_entries: DEFAULT_RATE_TABLE_ENTRIES,
            blocklist: Vec::new(),
        }
    }
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SteerProtocol {
    Tcp,
    Udp,
}

/// One `[[steer.services]]`: an address, port and protocol the program steers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SteerService {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: SteerProtocol,
}

/// One `[[steer.nodes]]`: a relay flows can be steered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerNode {
    /// Unique name; its hash places the node in the Maglev tables, so keep it stable.
    pub name: String,
    /// IPv4 address (outer destination of IPIP).
    pub address: Option<Ipv4Addr>,
    /// IPv6 address (outer destination of IP6IP6).
    pub address_v6: Option<Ipv6Addr>,
    /// MAC of the node, when it shares the link.
    pub mac: Option<[u8; 6]>,
    /// A router towards the node, whose MAC is looked up in the neighbour table.
    pub next_hop: Option<IpAddr>,
    /// This machine: its flows pass to the local stack.
    pub local: bool,
    /// Capacity weight, 0 to 10000 (default 100).
    pub weight: u32,
    /// Health: false takes the node out of every table.
    pub up: bool,
    /// Round-trip time in µs (0: unknown, counts as near). With `steer.health.measure_rtt`
    /// and a `health_check` address, only the value until `relay run` has measured it.
    pub rtt_us: u64,
    /// Where `relay run` checks the node's health (`GET <steer.health.path>`, 200 = healthy):
    /// its admin listener or its service port. None: not checked (`up` alone decides).
    pub health_check: Option<SocketAddr>,
}

/// Defaults of `[[origin.http]]` keys.
pub mod http_defaults {
    pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
    pub const FIRST_BYTE_TIMEOUT_MS: u64 = 10_000;
    pub const IDLE_TIMEOUT_MS: u64 = 10_000;
    pub const RETRIES: u64 = 2;
    pub const DOWN_AFTER_FAILURES: u64 = 3;
    pub const DOWN_MS: u64 = 5_000;
    pub const MAX_CONNECTIONS: u64 = 64;
}

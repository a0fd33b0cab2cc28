//! The validated config relay runs with, its defaults and its bounds.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use relay_proto::Limits;

use crate::bytesize::{KIB, MIB};

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
    /// `[steer]`: the XDP steering program's pinned maps.
    pub steer: SteerConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Worker threads; 0 means one per core (see [`ServerConfig::effective_workers`]).
    pub workers: usize,
    /// Open connections per worker (default 16384).
    pub max_connections: usize,
    /// Time allowed to receive a complete request head, in ms (default 10000).
    pub header_timeout_ms: u64,
    /// Time an idle keep-alive connection stays open, in ms (default 60000).
    pub idle_timeout_ms: u64,
    /// `[server.limits]`: request-head limits (defaults from [`Limits::DEFAULT`]).
    pub limits: Limits,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN,
            workers: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            limits: Limits::DEFAULT,
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes per cached chunk: a power of two from 4 KiB to 64 MiB (default 1 MiB).
    pub chunk_size: u64,
    /// Memory-tier capacity in bytes, at least `chunk_size` (default 256 MiB).
    pub memory_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// `[origin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Directory objects are served from. Relative paths in the file are
    /// resolved against the file's directory; `Config::load` also makes it
    /// canonical and checks that it is a directory.
    pub directory: PathBuf,
}

/// `[steer]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SteerConfig {
    /// bpffs directory the steering maps are pinned under (default /sys/fs/bpf/relay).
    pub pin_root: PathBuf,
}

impl Default for SteerConfig {
    fn default() -> Self {
        SteerConfig {
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
        }
    }
}

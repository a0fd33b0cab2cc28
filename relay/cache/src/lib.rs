//! relay's chunk cache, sans-IO: it stores and finds bytes, it never reads a file or a socket.
//!
//! Layout:
//! - [`layout`]: how an object is cut into fixed-size chunks (pure arithmetic).
//! - [`disk`]: the disk tier: chunk files with checksummed headers, an index rebuilt at start,
//!   eviction and admission; plans the I/O for io_uring (plus a blocking std::fs path).
//! - [`Cache`] (`tiers`): every tier opened from the config's `[cache]`, in one place.
//! - [`fill`]: a chunk being filled from upstream, streamed to readers as it arrives.
//! - [`inflight`]: what is in flight process-wide: object heads being fetched, and chunks
//!   being fetched from an origin or read from a local file (disk tier, directory origin),
//!   so that however many readers want one at once it is fetched or read once.
//! - [`key`]: chunk keys, and borrowed lookups that allocate nothing.
//! - [`memory`]: the memory tier, bounded by bytes, with scan-resistant eviction.
//! - [`meta`]: what the cache knows of an object (length, validators) and when it was learnt.
//! - [`policy`]: HTTP caching semantics for a shared cache (RFC 9111): storability, freshness,
//!   validation, `Vary`, invalidation, and the named phases of a lookup.
//! - [`wake`]: how a worker waiting on a fill (or anything another thread completes) is
//!   woken: [`wake::Watchers`] and [`wake::Wakers`], the ordering stated once.

pub mod arena;
mod buddy;
pub mod disk;
pub mod fill;
pub mod inflight;
pub mod key;
pub mod layout;
pub mod memory;
pub mod meta;
pub mod policy;
pub mod purge;
mod tiers;
pub mod wake;

pub use key::{ChunkKey, ChunkRef};
pub use layout::Layout;
pub use memory::MemoryTier;
pub use meta::{MetaCache, ObjectMeta, ResponseDate};
pub use purge::{Purge, Purged};
pub use tiers::{Cache, CacheError, Held, Holdings, Source};

//! The caches a trace is replayed against, all bounded by the same bytes and charging each
//! entry the same weight as relay's memory tier does (its bytes plus the key's length plus a
//! 64-byte entry estimate; see `relay_cache::memory`).
//!
//! - [`Tier`]: relay's own `MemoryTier` (quick_cache's sharded CLOCK-PRO variant), with the
//!   keys and `Bytes` values relay uses; values share one static buffer, so a 4 GiB tier
//!   costs no 4 GiB of memory.
//! - [`Lru`]: plain LRU from the `lru` crate (unbounded by count), bounded by bytes here:
//!   after an insert, least recently used entries are dropped until the weight fits.
//! - [`Moka`]: `moka::sync::Cache` weighted by bytes (W-TinyLFU: a window LRU, a
//!   segmented-LRU main space, admission by a frequency sketch), as a reference.
//! - [`Static`]: not a policy but a ceiling for independent Zipf requests: a cache that holds,
//!   from the start, the entries with the highest request probability per byte.
//!
//! Every miss inserts the entry (a cache fill after an upstream fetch).

use bytes::Bytes;
use relay_cache::{ChunkKey, ChunkRef, MemoryTier};
use std::sync::Arc;

/// Object name of every benchmark chunk (the chunk index is the entry id).
const OBJECT: &str = "bench/hit-ratio/object";

/// The weight relay's memory tier charges an entry of `size` bytes under [`OBJECT`].
pub fn weight(size: u32) -> u64 {
    u64::from(size) + OBJECT.len() as u64 + 64
}

/// A cache replaying one trace.
pub trait Policy: Send {
    /// Requests entry `id` of `size` bytes; true on a hit. A miss inserts it.
    fn access(&mut self, id: u32, size: u32) -> bool;
}

/// Which cache, by name (the names the table and JSON use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tier,
    Lru,
    Moka,
    Static,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tier, Kind::Lru, Kind::Moka, Kind::Static];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Tier => "relay-memory-tier",
            Kind::Lru => "lru",
            Kind::Moka => "moka-w-tinylfu",
            Kind::Static => "static-top (ceiling)",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Tier => {
                "relay_cache::MemoryTier: quick_cache sync Cache, CLOCK-PRO variant, sharded"
            }
            Kind::Lru => {
                "plain LRU (lru crate, unbounded by count, bounded by bytes in the harness)"
            }
            Kind::Moka => "moka::sync::Cache weighted by bytes (W-TinyLFU)",
            Kind::Static => {
                "the entries with the most Zipf probability per byte, fixed (not a policy)"
            }
        }
    }
}

/// Builds a cache of `capacity` bytes; `Static` needs the per-id probabilities and sizes.
pub fn build(
    kind: Kind,
    capacity: u64,
    chunk: u64,
    probability: &[f64],
    sizes: &[u32],
) -> Box<dyn Policy> {
    match kind {
        Kind::Tier => Box::new(Tier::new(capacity, chunk)),
        Kind::Lru => Box::new(Lru::new(capacity)),
        Kind::Moka => Box::new(Moka::new(capacity)),
        Kind::Static => Box::new(Static::new(capacity, probability, sizes)),
    }
}

pub struct Tier {
    tier: MemoryTier,
    object: Arc<str>,
    zeros: &'static [u8],
}

impl Tier {
    pub fn new(capacity: u64, chunk: u64) -> Tier {
        Tier {
            tier: MemoryTier::new(capacity, chunk),
            object: Arc::from(OBJECT),
            zeros: zeros(chunk as usize),
        }
    }
}

/// One zeroed buffer per process for every value (`Bytes::from_static` slices it: no copy,
/// no allocation per insert).
fn zeros(len: usize) -> &'static [u8] {
    static ZEROS: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
    let z = ZEROS.get_or_init(|| Box::leak(vec![0u8; 1 << 24].into_boxed_slice()));
    &z[..len.min(z.len())]
}

impl Policy for Tier {
    fn access(&mut self, id: u32, size: u32) -> bool {
        let key = ChunkRef {
            object: OBJECT,
            version: 1,
            index: u64::from(id),
        };
        if self.tier.get(&key).is_some() {
            return true;
        }
        let value = Bytes::from_static(&self.zeros[..size as usize]);
        self.tier.insert(
            ChunkKey {
                object: Arc::clone(&self.object),
                version: 1,
                index: u64::from(id),
            },
            value,
        );
        false
    }
}

pub struct Lru {
    cache: lru::LruCache<u32, u32>,
    used: u64,
    capacity: u64,
}

impl Lru {
    pub fn new(capacity: u64) -> Lru {
        Lru {
            cache: lru::LruCache::unbounded(),
            used: 0,
            capacity,
        }
    }
}

impl Policy for Lru {
    fn access(&mut self, id: u32, size: u32) -> bool {
        if self.cache.get(&id).is_some() {
            return true;
        }
        let w = weight(size);
        if w > self.capacity {
            return false;
        }
        self.cache.put(id, size);
        self.used += w;
        while self.used > self.capacity {
            let Some((_, s)) = self.cache.pop_lru() else {
                break;
            };
            self.used -= weight(s);
        }
        false
    }
}

pub struct Moka {
    cache: moka::sync::Cache<u32, u32>,
}

impl Moka {
    pub fn new(capacity: u64) -> Moka {
        Moka {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, &size: &u32| u32::try_from(weight(size)).unwrap_or(u32::MAX))
                .build(),
        }
    }
}

impl Policy for Moka {
    fn access(&mut self, id: u32, size: u32) -> bool {
        if self.cache.get(&id).is_some() {
            return true;
        }
        self.cache.insert(id, size);
        false
    }
}

pub struct Static {
    held: Vec<bool>,
}

impl Static {
    /// Greedy by probability per byte until the capacity is full (optimal for equal sizes).
    pub fn new(capacity: u64, probability: &[f64], sizes: &[u32]) -> Static {
        let mut order: Vec<usize> = (0..probability.len()).collect();
        let density = |i: usize| probability[i] / weight(sizes[i]) as f64;
        order.sort_by(|&a, &b| density(b).total_cmp(&density(a)));
        let mut held = vec![false; probability.len()];
        let mut used = 0;
        for i in order {
            let w = weight(sizes[i]);
            if used + w <= capacity {
                used += w;
                held[i] = true;
            }
        }
        Static { held }
    }
}

impl Policy for Static {
    fn access(&mut self, id: u32, _size: u32) -> bool {
        self.held.get(id as usize).copied().unwrap_or(false)
    }
}

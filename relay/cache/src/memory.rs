//! The memory tier: chunks held as reference-counted [`Bytes`], bounded by total bytes.
//! Chunks of at least [`ARENA_MIN`](crate::arena::ARENA_MIN) bytes live in a registered [`Arena`] (see `arena`) and
//! weigh the arena bytes they take (length rounded up to 16 KiB); smaller ones live on the
//! heap.
//!
//! Eviction is `quick_cache`'s CLOCK-PRO variant (scan-resistant: a one-pass scan over many
//! cold chunks does not flush the hot set), sharded so concurrent workers rarely meet on a
//! shard. A chunk being sent keeps its memory alive through its `Bytes` handle even after
//! eviction, so the kernel never reads freed memory.

use crate::arena::{ARENA_MIN, Arena};
use crate::key::{ChunkKey, ChunkRef};
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Weighs a chunk by the memory it holds: its arena block, or its heap bytes.
#[derive(Clone, Copy)]
struct ByLength {
    /// The arena's address range (start, end), when there is one.
    arena: Option<(usize, usize)>,
}

impl Weighter<ChunkKey, Bytes> for ByLength {
    fn weight(&self, key: &ChunkKey, val: &Bytes) -> u64 {
        let at = val.as_ptr() as usize;
        let held = match self.arena {
            Some((start, end)) if at >= start && at < end => Arena::block_len(val.len()),
            _ => val.len(),
        };
        // The bytes plus a fixed estimate of the key and entry overhead.
        held as u64 + key.object.len() as u64 + 64
    }
}

/// Bounded store of chunks; shared by all workers.
pub struct MemoryTier {
    chunks: Cache<ChunkKey, Bytes, ByLength>,
    capacity: AtomicU64,
    arena: Option<Arc<Arena>>,
    left_out: AtomicU64,
    /// Inserts and removals so far ([`MemoryTier::changes`]).
    changes: AtomicU64,
}

impl MemoryTier {
    /// A tier holding at most `capacity_bytes` (chunk bytes plus per-entry overhead).
    /// `chunk_size` sizes the initial index.
    pub fn new(capacity_bytes: u64, chunk_size: u64) -> Self {
        Self::with_arena(capacity_bytes, chunk_size, None)
    }

    /// Like [`MemoryTier::new`], with large chunks kept in `arena`.
    pub fn with_arena(capacity_bytes: u64, chunk_size: u64, arena: Option<Arc<Arena>>) -> Self {
        let weigher = ByLength {
            arena: arena.as_ref().map(|a| a.bounds()),
        };
        let items = (capacity_bytes / chunk_size.max(1)).clamp(16, 1 << 22) as usize;
        // Shards by size, not by core count: each shard runs its own eviction over its own
        // share, so a small tier cut into many shards loses hit ratio (measured: 256 chunks,
        // Zipf 1.0 with scans, 56.5% hits in 4 shards vs 49.5% in 8). At least 256 chunks a
        // shard, at most 64 shards (contention stays low: a shard lock is held for a lookup).
        let shards = (items / 256).clamp(1, 64).next_power_of_two().min(64);
        let chunks = match OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity_bytes)
            .shards(shards)
            .build()
        {
            Ok(options) => {
                Cache::with_options(options, weigher, Default::default(), Default::default())
            }
            Err(_) => Cache::with_weighter(items, capacity_bytes, weigher),
        };
        MemoryTier {
            chunks,
            capacity: AtomicU64::new(capacity_bytes),
            arena,
            left_out: AtomicU64::new(0),
            changes: AtomicU64::new(0),
        }
    }

    /// The registered arena large chunks live in.
    pub fn arena(&self) -> Option<&Arc<Arena>> {
        self.arena.as_ref()
    }

    /// Memory for a chunk of `len` bytes about to be stored: arena when it fits (see
    /// `arena`), else heap; None when the heap chunks beside the arena are at their cap
    /// (the caller waits for room).
    pub fn chunk_buf(&self, len: usize) -> Option<crate::arena::ChunkBuf> {
        crate::arena::ChunkBuf::alloc(len, self.arena.as_ref())
    }

    /// The chunk, if held. Allocates nothing.
    pub fn get(&self, key: &ChunkRef<'_>) -> Option<Bytes> {
        self.chunks.get(key)
    }

    /// Whether the chunk is held, without counting it as a use.
    pub fn contains(&self, key: &ChunkRef<'_>) -> bool {
        self.chunks.contains_key(key)
    }

    /// Stores a chunk (replacing any previous one under the same key). With an arena, a
    /// chunk of arena size that lies on the heap (it found no block free when it was
    /// made) is copied into a block if one is free now, and left out if none is: the tier
    /// holds heap memory only for small chunks, so its bytes never stand beside a full
    /// arena (`memory_bytes` twice over) and the heap chunks, held only while used, stay
    /// within their cap (`arena`). False when the chunk was left out.
    pub fn insert(&self, key: ChunkKey, chunk: Bytes) -> bool {
        let chunk = match self.arena.as_ref() {
            Some(a)
                if (ARENA_MIN..=crate::arena::ARENA_MAX).contains(&chunk.len())
                    && !a.contains(chunk.as_ptr(), chunk.len()) =>
            {
                match crate::arena::ChunkBuf::in_arena(chunk.len(), a) {
                    Some(mut block) => {
                        block.as_mut_slice().copy_from_slice(&chunk);
                        block.freeze()
                    }
                    None => {
                        self.left_out.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                }
            }
            _ => chunk,
        };
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.chunks.insert(key, chunk);
        true
    }

    /// Chunks left out by [`MemoryTier::insert`]: heap chunks with no arena block free.
    pub fn left_out(&self) -> u64 {
        self.left_out.load(Ordering::Relaxed)
    }

    /// Drops every chunk of one object (all versions); returns how many.
    pub fn remove_object(&self, object: &str) -> usize {
        self.remove_objects(|o| o == object).len()
    }

    /// Drops every chunk of every object whose key `matches`; returns each dropped chunk's
    /// object key.
    pub fn remove_objects(&self, matches: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let removed = std::cell::RefCell::new(Vec::new());
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.chunks.retain(|k, _| {
            let drop = matches(&k.object);
            if drop {
                removed.borrow_mut().push(k.object.clone());
            }
            !drop
        });
        removed.into_inner()
    }

    /// Bytes held now (chunk bytes plus entry overhead).
    pub fn weight(&self) -> u64 {
        self.chunks.weight()
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Changes the capacity (config reload); shrinking evicts at once.
    pub fn set_capacity(&self, capacity_bytes: u64) {
        self.chunks.set_capacity(capacity_bytes);
        self.capacity.store(capacity_bytes, Ordering::Relaxed);
    }

    /// Up to `limit` chunks held: their object key and number (for the digest).
    pub fn chunk_keys(&self, out: &mut Vec<(Arc<str>, u64)>, limit: usize) {
        out.extend(
            self.chunks
                .iter()
                .take(limit)
                .map(|(k, _)| (k.object, k.index)),
        );
    }

    /// A count that moves whenever a chunk is put in or taken out (evictions happen on
    /// inserts).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(obj: &str, index: u64) -> ChunkKey {
        ChunkKey {
            object: Arc::from(obj),
            version: 1,
            index,
        }
    }

    #[test]
    fn stores_and_finds_by_borrowed_key() {
        let m = MemoryTier::new(1 << 20, 1024);
        m.insert(key("a", 0), Bytes::from_static(b"hello"));
        let r = ChunkRef {
            object: "a",
            version: 1,
            index: 0,
        };
        assert_eq!(m.get(&r).as_deref(), Some(&b"hello"[..]));
        assert!(m.get(&ChunkRef { version: 2, ..r }).is_none());
        m.remove_object("a");
        assert!(m.get(&r).is_none());
    }

    #[test]
    fn arena_chunks_weigh_their_block() {
        let arena = Arena::new(4 << 20, 0).unwrap();
        let m = MemoryTier::with_arena(8 << 20, 1 << 20, Some(arena.clone()));
        let mut buf = m.chunk_buf(600 * 1024).unwrap();
        assert!(buf.registered());
        buf.as_mut_slice()[0] = 9;
        m.insert(key("a", 0), buf.freeze());
        // 600 KiB in 16 KiB units, not the 1 MiB power of two.
        assert_eq!(m.weight(), (608 << 10) + 1 + 64);
        assert_eq!(arena.used(), 608 << 10);
        m.insert(key("b", 0), m.chunk_buf(100).unwrap().freeze());
        assert_eq!(m.weight(), (608 << 10) + 1 + 64 + 100 + 1 + 64);
        // Eviction (here: removal) returns the block once no handle is left.
        let held = m.get(&key("a", 0).as_ref()).unwrap();
        m.remove_object("a");
        assert_eq!(arena.used(), 608 << 10);
        assert_eq!(held[0], 9);
        drop(held);
        assert_eq!(arena.used(), 0);
    }

    /// Heap chunks of arena size are capped beside a full arena, and the tier keeps only
    /// arena memory for them: a copy into a block freed since, or nothing.
    #[test]
    fn heap_chunks_beside_a_full_arena_are_capped_and_never_stored_on_the_heap() {
        let arena = Arena::new(2 << 20, 1 << 20).unwrap();
        let m = MemoryTier::with_arena(2 << 20, 512 << 10, Some(arena.clone()));
        let held: Vec<_> = (0..4).map(|_| m.chunk_buf(512 << 10).unwrap()).collect();
        assert!(held.iter().all(|b| b.registered()));
        // The arena is full: two more on the heap, within the 1 MiB cap, then none.
        let mut loose: Vec<_> = (0..2).map(|_| m.chunk_buf(512 << 10).unwrap()).collect();
        assert!(loose.iter().all(|b| !b.registered()));
        assert_eq!(arena.loose(), 1 << 20);
        assert!(m.chunk_buf(512 << 10).is_none());
        assert_eq!(arena.refused(), 1);
        // Small chunks are not counted and never refused.
        assert!(m.chunk_buf(4096).is_some());
        // A heap chunk is left out while no block is free...
        loose[0].as_mut_slice().fill(7);
        let first = loose.remove(0).freeze();
        assert!(!m.insert(key("a", 0), first.clone()));
        assert!(m.get(&key("a", 0).as_ref()).is_none());
        assert_eq!(m.left_out(), 1);
        // ...and copied into one once a block is free again.
        drop(held);
        assert!(m.insert(key("a", 0), first.clone()));
        let stored = m.get(&key("a", 0).as_ref()).unwrap();
        assert!(arena.contains(stored.as_ptr(), stored.len()));
        assert!(stored.iter().all(|&b| b == 7));
        // The heap copies give their bytes back when dropped.
        drop((first, loose));
        assert_eq!(arena.loose(), 0);
    }

    #[test]
    fn bounded_by_bytes() {
        let cap = 64 * 1024;
        let m = MemoryTier::new(cap, 1024);
        for i in 0..1000 {
            m.insert(key("big", i), Bytes::from(vec![0u8; 1024]));
            assert!(m.weight() <= cap, "weight {} over capacity", m.weight());
        }
        assert!(m.len() < 1000);
        assert!(m.len() > 10);
        m.set_capacity(cap / 4);
        assert!(m.weight() <= cap / 4);
        assert_eq!(m.capacity(), cap / 4);
    }

    #[test]
    fn scan_does_not_flush_hot_chunks() {
        let m = MemoryTier::new(64 * 1100, 1024);
        for round in 0..4 {
            for i in 0..16 {
                let k = key("hot", i);
                if m.get(&k.as_ref()).is_none() {
                    m.insert(k, Bytes::from(vec![1u8; 1024]));
                }
            }
            // A scan of many cold chunks, each used once.
            for i in 0..200 {
                m.insert(key("scan", round * 1000 + i), Bytes::from(vec![2u8; 1024]));
            }
        }
        let hot = (0..16)
            .filter(|&i| m.contains(&key("hot", i).as_ref()))
            .count();
        assert!(hot >= 12, "only {hot}/16 hot chunks survived a scan");
    }
}

#[cfg(test)]
mod churn_tests {
    use super::*;

    fn key(i: u64) -> ChunkKey {
        ChunkKey {
            object: Arc::from("churn"),
            version: 1,
            index: i,
        }
    }

    /// A full tier keeps taking new chunks (each allocated before the insert that evicts):
    /// with an arena sized by `arena_len`, they keep landing in registered memory.
    #[test]
    fn churn_through_a_full_tier_stays_in_the_arena() {
        let (cap, chunk) = (8u64 << 20, 1u64 << 20);
        let arena = Arena::new(crate::arena::arena_len(cap, chunk), 0).unwrap();
        let m = MemoryTier::with_arena(cap, chunk, Some(arena.clone()));
        for i in 0..2000u64 {
            // Mixed sizes: whole chunks, tails, small objects.
            let len = match i % 4 {
                0 | 1 => chunk as usize,
                2 => 300_000,
                _ => 40_000,
            };
            let buf = m
                .chunk_buf(len)
                .expect("a block, or the heap for a small chunk");
            assert!(m.insert(key(i), buf.freeze()));
        }
        assert!(m.weight() <= cap);
        assert_eq!(arena.fallbacks(), 0, "chunks fell back to the heap");
    }
}

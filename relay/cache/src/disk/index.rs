//! The disk tier's in-memory index: which chunks are on disk, where, with what checksum,
//! and which one to evict next; plus a per-object view (which versions of an object are
//! held) so that a restarted relay can find an object's chunks by its cache key alone.
//!
//! Eviction is `quick_cache`'s CLOCK-PRO variant (the same policy as the memory tier):
//! weighted by each file's size in whole blocks, scan-resistant (a chunk read once sits in
//! the cold queue and leaves before a chunk read twice), with ghost entries so a chunk
//! evicted and soon wanted again comes back as hot. Evictions arrive through the cache's
//! `Lifecycle` hook; the index turns them into files to delete, which the caller unlinks
//! (with io_uring or std) — the index itself does no I/O.

use super::format;
use crate::key::{ChunkKey, ChunkRef};
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter, unsync};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

/// What the index keeps of one chunk file (the key is the map key): 32 bytes, so with
/// the key and the map's own overhead an entry costs about 100 bytes of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub generation: u64,
    pub file_len: u64,
    pub body_sum: u64,
    /// At most 64 KiB (the header limit) rounded up to a block.
    pub body_offset: u32,
    /// Lookups since the chunk was stored or loaded at start.
    pub hits: u32,
}

impl Entry {
    pub fn body_len(&self) -> u64 {
        self.file_len.saturating_sub(u64::from(self.body_offset))
    }
}

/// One version of an object held on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectVersion {
    pub version: u64,
    pub object_len: u64,
    /// How many of its chunks are on disk.
    pub chunks: u64,
    /// The newest write generation among them (the newest version is the one written last).
    pub newest_generation: u64,
}

/// Why an entry left the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gone {
    /// Evicted to stay within capacity.
    Evicted,
    /// A newer file for the same key replaced it.
    Replaced,
}

#[derive(Clone, Copy)]
struct ByBlocks;

impl Weighter<ChunkKey, Entry> for ByBlocks {
    fn weight(&self, _key: &ChunkKey, e: &Entry) -> u64 {
        format::weight(e.file_len)
    }
}

/// Collects evictions; only touched while the index's owner holds its lock, so this inner
/// mutex is never contended.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<(ChunkKey, Entry)>>>);

impl Lifecycle<ChunkKey, Entry> for Sink {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, key: ChunkKey, val: Entry) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key, val));
    }
}

pub(crate) struct Index {
    chunks: unsync::Cache<ChunkKey, Entry, ByBlocks, DefaultHashBuilder, Sink>,
    sink: Sink,
    /// In key order, so the objects a purge names by prefix (or a key's variants) are
    /// found without a walk of every chunk.
    objects: BTreeMap<Arc<str>, Vec<ObjectVersion>>,
    /// The chunk size the chunks are numbered by (`CacheConfig::chunk_size`).
    chunk_size: u64,
}

impl Index {
    /// An index for at most `capacity` bytes of files, sized for chunks of about
    /// `typical_file` bytes.
    pub fn new(capacity: u64, typical_file: u64) -> Self {
        let items = (capacity / typical_file.max(format::BLOCK)).clamp(16, 1 << 24) as usize;
        let sink = Sink::default();
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .build()
            .expect("both required options are set");
        Index {
            chunks: unsync::Cache::with_options(
                options,
                ByBlocks,
                DefaultHashBuilder::default(),
                sink.clone(),
            ),
            sink,
            objects: BTreeMap::new(),
            chunk_size: typical_file.max(1),
        }
    }

    /// The shared copy of an object key, so every chunk of an object holds one allocation.
    pub fn intern(&self, object: &str) -> Arc<str> {
        match self.objects.get_key_value(object) {
            Some((k, _)) => k.clone(),
            None => Arc::from(object),
        }
    }

    /// Up to `limit` chunks indexed: their object key and number.
    pub fn chunk_keys(&self, out: &mut Vec<(Arc<str>, u64)>, limit: usize) {
        out.extend(
            self.chunks
                .iter()
                .take(limit)
                .map(|(k, _)| (k.object.clone(), k.index)),
        );
    }

    /// Looks a chunk up, counting a use (for eviction and for the caller's promotion).
    pub fn lookup(&mut self, key: &ChunkRef<'_>) -> Option<Entry> {
        let mut e = self.chunks.get_mut(key)?;
        e.hits = e.hits.saturating_add(1);
        Some(*e)
    }

    /// Looks a chunk up without counting a use.
    pub fn peek(&self, key: &ChunkRef<'_>) -> Option<Entry> {
        self.chunks.peek(key).copied()
    }

    /// Inserts (or replaces) a chunk; returns every entry that left the index as a result.
    pub fn insert(
        &mut self,
        key: ChunkKey,
        entry: Entry,
        object_len: u64,
    ) -> Vec<(ChunkKey, Entry, Gone)> {
        let mut gone = Vec::new();
        let old = self.chunks.peek(&key.as_ref()).copied();
        if let Some(old) = old {
            gone.push((key.clone(), old, Gone::Replaced));
            self.object_forget(&key);
        }
        self.object_add(&key, &entry, object_len);
        let inserted = key.clone();
        self.chunks.insert(key, entry);
        // quick_cache reports the replaced value through the eviction hook too (0.6.24);
        // it was accounted for above, so leave it out here.
        let mut evicted = Vec::new();
        self.drain_evicted(&mut evicted);
        for (k, e, why) in evicted {
            if old.is_some_and(|o| o.generation == e.generation) && k == inserted {
                continue;
            }
            self.object_forget(&k);
            gone.push((k, e, why));
        }
        gone
    }

    /// Removes a chunk if `remove` says yes to its entry.
    pub fn remove_if(
        &mut self,
        key: &ChunkRef<'_>,
        remove: impl FnOnce(&Entry) -> bool,
    ) -> Option<(ChunkKey, Entry)> {
        let (k, e) = self.chunks.remove_if(key, |e| remove(e))?;
        self.object_forget(&k);
        Some((k, e))
    }

    /// Removes every chunk whose key matches.
    pub fn remove_where(
        &mut self,
        mut matches: impl FnMut(&ChunkKey) -> bool,
    ) -> Vec<(ChunkKey, Entry)> {
        let keys: Vec<ChunkKey> = self
            .chunks
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(r) = self.remove_if(&k.as_ref(), |_| true) {
                out.push(r);
            }
        }
        out
    }

    /// The objects held whose keys sort from `start` on, while `within` holds (in key order:
    /// a prefix's keys are consecutive).
    pub fn objects_from(&self, start: &str, within: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        self.objects
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| within(k))
            .cloned()
            .collect()
    }

    /// Removes every chunk of `object`, every version: looked up by their numbers from the
    /// object's length, so a purge or an invalidation costs the object's chunks, not a walk
    /// of the whole index under its lock (which any client sending unsafe methods could
    /// make as often as it likes). An object with many more chunk numbers than it has chunks
    /// held (a long one of which a few ranges were asked), or whose chunks are numbered
    /// otherwise (another chunk size before a restart), is removed by a walk after all, as
    /// every object was before: never much slower than that. `version`: that version only.
    pub fn remove_object(&mut self, object: &str, version: Option<u64>) -> Vec<(ChunkKey, Entry)> {
        let mut out = Vec::new();
        let versions = self.object_versions(object);
        for v in versions
            .iter()
            .filter(|v| version.is_none_or(|n| n == v.version))
        {
            let numbers = v.object_len.div_ceil(self.chunk_size).max(1);
            if numbers > self.len() as u64 || numbers > v.chunks.saturating_mul(64) + 64 {
                continue;
            }
            let mut left = v.chunks;
            for index in 0..numbers {
                if left == 0 {
                    break;
                }
                let key = ChunkRef {
                    object,
                    version: v.version,
                    index,
                };
                if let Some(r) = self.remove_if(&key, |_| true) {
                    out.push(r);
                    left -= 1;
                }
            }
        }
        let left = self.object_versions(object);
        if left.iter().any(|v| version.is_none_or(|n| n == v.version)) {
            out.extend(
                self.remove_where(|k| {
                    &*k.object == object && version.is_none_or(|n| n == k.version)
                }),
            );
        }
        out
    }

    /// Changes the capacity; returns what had to be evicted.
    pub fn set_capacity(&mut self, capacity: u64) -> Vec<(ChunkKey, Entry, Gone)> {
        self.chunks.set_capacity(capacity);
        let mut gone = Vec::new();
        self.drain_evicted(&mut gone);
        for (k, _, _) in &gone {
            self.object_forget(k);
        }
        gone
    }

    /// The newest version of an object held, if any chunk of it is.
    pub fn object(&self, object: &str) -> Option<ObjectVersion> {
        self.objects
            .get(object)?
            .iter()
            .max_by_key(|v| v.newest_generation)
            .copied()
    }

    /// Every version of an object held.
    pub fn object_versions(&self, object: &str) -> Vec<ObjectVersion> {
        self.objects.get(object).cloned().unwrap_or_default()
    }

    pub fn weight(&self) -> u64 {
        self.chunks.weight()
    }

    pub fn capacity(&self) -> u64 {
        self.chunks.capacity()
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Takes what the eviction hook collected (the caller updates the object view).
    fn drain_evicted(&mut self, gone: &mut Vec<(ChunkKey, Entry, Gone)>) {
        let evicted =
            std::mem::take(&mut *self.sink.0.lock().unwrap_or_else(PoisonError::into_inner));
        gone.extend(evicted.into_iter().map(|(k, e)| (k, e, Gone::Evicted)));
    }

    fn object_add(&mut self, key: &ChunkKey, e: &Entry, object_len: u64) {
        let versions = self.objects.entry(key.object.clone()).or_default();
        match versions.iter_mut().find(|v| v.version == key.version) {
            Some(v) => {
                v.chunks += 1;
                v.object_len = object_len;
                v.newest_generation = v.newest_generation.max(e.generation);
            }
            None => versions.push(ObjectVersion {
                version: key.version,
                object_len,
                chunks: 1,
                newest_generation: e.generation,
            }),
        }
    }

    fn object_forget(&mut self, key: &ChunkKey) {
        let Some(versions) = self.objects.get_mut(&*key.object) else {
            return;
        };
        if let Some(i) = versions.iter().position(|v| v.version == key.version) {
            versions[i].chunks = versions[i].chunks.saturating_sub(1);
            if versions[i].chunks == 0 {
                versions.swap_remove(i);
            }
        }
        if versions.is_empty() {
            self.objects.remove(&*key.object);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: u64, file_len: u64) -> Entry {
        Entry {
            generation,
            file_len,
            body_sum: 0,
            body_offset: 100,
            hits: 0,
        }
    }

    fn key(obj: &str, version: u64, index: u64) -> ChunkKey {
        ChunkKey {
            object: Arc::from(obj),
            version,
            index,
        }
    }

    /// An object's chunks are removed by their numbers, its versions all, no other
    /// object's (one whose key it begins, a variant); chunks numbered past the object's
    /// length (another chunk size) by a walk; the objects a prefix names are found in key
    /// order.
    #[test]
    fn an_object_is_removed_by_its_chunk_numbers() {
        let mut ix = Index::new(1 << 20, 4096);
        for (obj, version, index) in [
            ("a", 1, 0),
            ("a", 1, 1),
            ("a", 2, 2),
            ("ab", 1, 0),
            ("a\0lang=fr", 1, 0),
            ("b", 1, 0),
        ] {
            ix.insert(
                key(obj, version, index),
                entry(ix.len() as u64 + 1, 4000),
                3 * 4096,
            );
        }
        assert_eq!(ix.remove_object("a", Some(2)).len(), 1);
        assert_eq!(ix.object("a").map(|v| v.version), Some(1));
        let gone = ix.remove_object("a", None);
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|(k, _)| &*k.object == "a"));
        assert!(ix.object("a").is_none());
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.objects_from("a", |o| o.starts_with('a')).len(), 2);
        let variants = ix.objects_from("a\0", |o| o.starts_with("a\0"));
        assert_eq!(variants, vec![Arc::<str>::from("a\0lang=fr")]);
        // Numbered past its length: found by the walk.
        ix.insert(key("c", 1, 9), entry(90, 4000), 4096);
        assert_eq!(ix.remove_object("c", Some(1)).len(), 1);
        assert!(ix.object("c").is_none());
        assert!(ix.remove_object("nothing", None).is_empty());
        // Long, and only its last chunk held: a walk, not a look at every number.
        ix.insert(key("long", 1, 9_999), entry(91, 4000), 10_000 * 4096);
        assert_eq!(ix.remove_object("long", None).len(), 1);
        assert_eq!(ix.len(), 3);
    }

    #[test]
    fn objects_follow_chunks() {
        let mut ix = Index::new(1 << 20, 4096);
        ix.insert(key("a", 1, 0), entry(1, 4000), 1 << 20);
        ix.insert(key("a", 1, 1), entry(2, 4000), 1 << 20);
        ix.insert(key("a", 2, 0), entry(3, 4000), 1 << 20);
        let newest = ix.object("a").expect("held");
        assert_eq!((newest.version, newest.chunks), (2, 1));
        assert_eq!(ix.object_versions("a").len(), 2);
        // Replacing a chunk keeps the count.
        let gone = ix.insert(key("a", 1, 0), entry(4, 4000), 1 << 20);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].2, Gone::Replaced);
        assert_eq!(ix.object("a").map(|v| v.version), Some(1));
        assert_eq!(ix.remove_where(|k| k.version == 1).len(), 2);
        assert_eq!(ix.object("a").map(|v| v.version), Some(2));
        assert!(
            ix.remove_if(&key("a", 2, 0).as_ref(), |e| e.generation == 9)
                .is_none()
        );
        assert!(
            ix.remove_if(&key("a", 2, 0).as_ref(), |e| e.generation == 3)
                .is_some()
        );
        assert!(ix.object("a").is_none());
        assert_eq!(ix.len(), 0);
        assert_eq!(ix.weight(), 0);
    }

    #[test]
    fn evictions_are_reported_and_weight_is_blocks() {
        let mut ix = Index::new(10 * 4096, 4096);
        let mut evicted = 0;
        for i in 0..50 {
            let gone = ix.insert(key("s", 1, i), entry(i + 1, 4097), 1 << 20);
            evicted += gone.iter().filter(|g| g.2 == Gone::Evicted).count();
            assert!(ix.weight() <= 10 * 4096);
        }
        assert_eq!(ix.len() + evicted, 50);
        assert_eq!(ix.weight(), ix.len() as u64 * 8192);
        assert_eq!(ix.object("s").map(|v| v.chunks), Some(ix.len() as u64));
        let gone = ix.set_capacity(2 * 8192);
        assert_eq!(ix.len(), 2);
        assert!(gone.iter().all(|g| g.2 == Gone::Evicted));
    }
}

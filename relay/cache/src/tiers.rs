//! The cache's tiers opened from the config, in one place: what the daemon builds once and
//! hands to the upstream (which fills the tiers) and the server (which reads them).

use crate::arena::{ARENA_MIN, Arena, arena_len};
use crate::disk::{Admission, DiskConfig, DiskError, DiskTier};
use crate::inflight::{Flight, InFlight};
use crate::{ChunkRef, Layout, MemoryTier, MetaCache};
use relay_config::{CacheConfig, DiskAdmission};
use std::sync::Arc;

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot open the disk tier: {0}")]
    Disk(#[from] DiskError),
}

/// A window of a million fetches for `cache.disk_admission = "second-hit"`: a chunk fetched
/// twice within it goes to disk.
const ADMISSION_WINDOW: u64 = 1 << 20;

/// The tiers that hold chunks ([`Cache::holdings`]).
#[derive(Clone)]
pub struct Holdings {
    memory: Arc<MemoryTier>,
    disk: Option<Arc<DiskTier>>,
}

impl Holdings {
    /// The chunks of HTTP objects held in memory or on disk, each as the name it goes by
    /// between relays (the client's authority and target: the object key without its
    /// origin kind and variant, [`Cache::peer_name`]) and its number; a chunk in both tiers
    /// comes twice; at most `limit` (memory first). The relay's digest is built from these.
    pub fn chunk_names(&self, limit: usize) -> Vec<(Arc<str>, u64)> {
        let mut keys = Vec::with_capacity(self.memory.len().min(limit));
        self.memory.chunk_keys(&mut keys, limit);
        if let Some(disk) = &self.disk {
            let left = limit.saturating_sub(keys.len());
            disk.chunk_keys(&mut keys, left);
        }
        keys.retain(|(object, _)| object.starts_with(crate::key::HTTP));
        keys
    }

    /// A count that moves whenever a tier gains or loses a chunk: no scan is needed while it
    /// stays.
    pub fn changes(&self) -> u64 {
        let disk = self.disk.as_ref().map_or(0, |d| d.changes());
        self.memory.changes().wrapping_add(disk)
    }
}

/// Every tier of the cache, shared by the workers and the upstream thread.
pub struct Cache {
    /// How objects are cut into chunks (`cache.chunk_size`).
    pub layout: Layout,
    /// Chunks in memory (`cache.memory_bytes`), large ones in the registered arena.
    pub memory: Arc<MemoryTier>,
    /// What is known of each object.
    pub meta: Arc<MetaCache>,
    /// What is in flight (object heads being fetched; chunks being fetched or read), for
    /// coalescing: one fetch or one read however many want it.
    pub inflight: Arc<InFlight>,
    /// The disk tier (`cache.disk_dir`), when configured.
    pub disk: Option<Arc<DiskTier>>,
    /// Which completed chunks go to disk (`cache.disk_admission`; None: every one).
    pub admission: Option<Arc<Admission>>,
    /// The caching policy's settings from the config (`cache.targeted_fields`).
    pub policy: Arc<crate::policy::PolicyConfig>,
}

impl Cache {
    /// Opens the tiers `config` asks for: the memory tier (in a registered arena when the
    /// mapping is granted, else on the heap), the meta cache, the in-flight table, and the
    /// disk tier with its index rebuilt from the files found.
    /// The tiers that hold chunks, for building the relay's digest on a thread of its own.
    pub fn holdings(&self) -> Holdings {
        Holdings {
            memory: self.memory.clone(),
            disk: self.disk.clone(),
        }
    }

    /// The name between relays of an HTTP object key (see [`Cache::chunk_names`]).
    pub fn peer_name(object: &str) -> Option<&str> {
        let name = object.strip_prefix(crate::key::HTTP)?;
        Some(name.split('\0').next().unwrap_or(name))
    }

    pub fn open(config: &CacheConfig) -> Result<Cache, CacheError> {
        // Large chunks live in one mapping every worker registers with its ring; without it
        // (the mapping refused) they live on the heap and are sent unregistered.
        // Chunks smaller than the arena's smallest block never go there: no arena then.
        let arena = if config.chunk_size < ARENA_MIN as u64 {
            None
        } else {
            match Arena::new(
                arena_len(config.memory_bytes, config.chunk_size),
                config.loose_chunk_bytes(),
            ) {
                Ok(a) => Some(a),
                Err(e) => {
                    log::warn!("memory tier: no registered arena ({e}); chunks live on the heap");
                    None
                }
            }
        };
        let memory = Arc::new(MemoryTier::with_arena(
            config.memory_bytes,
            config.chunk_size,
            arena.clone(),
        ));
        let disk = match &config.disk_dir {
            Some(dir) => {
                let mut dc = DiskConfig::new(dir.clone(), config.disk_bytes);
                dc.chunk_size = config.chunk_size;
                dc.fsync = config.disk_fsync;
                let tier = DiskTier::open(&dc)?;
                let r = tier.recovery();
                log::info!(
                    "disk tier {}: {} chunks loaded, {} dropped as corrupt, {} bytes of headers \
                     read",
                    dir.display(),
                    r.loaded,
                    r.dropped_corrupt,
                    r.bytes_read
                );
                Some(Arc::new(tier))
            }
            None => None,
        };
        let admission = match config.disk_admission {
            DiskAdmission::Always => None,
            DiskAdmission::SecondHit => Some(Arc::new(Admission::new(ADMISSION_WINDOW))),
            DiskAdmission::SecondHitWhenFull => {
                Some(Arc::new(Admission::new(ADMISSION_WINDOW).while_room()))
            }
        };
        Ok(Cache {
            layout: Layout::new(config.chunk_size),
            memory,
            meta: Arc::new(MetaCache::new(config.meta_bytes)),
            inflight: Arc::new(match disk.is_some() {
                true => InFlight::with_arena(arena).summed(),
                false => InFlight::with_arena(arena),
            }),
            disk,
            admission,
            policy: Arc::new(crate::policy::PolicyConfig {
                targeted: config.targeted_fields.clone(),
                ..Default::default()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: Option<std::path::PathBuf>, admission: DiskAdmission) -> CacheConfig {
        CacheConfig {
            chunk_size: 1 << 20,
            memory_bytes: 8 << 20,
            disk_dir: dir,
            disk_bytes: 64 << 20,
            disk_fsync: false,
            disk_admission: admission,
            ..CacheConfig::default()
        }
    }

    #[test]
    fn opens_the_tiers_the_config_asks_for() {
        let c = Cache::open(&config(None, DiskAdmission::Always)).unwrap();
        assert_eq!(c.layout.chunk_size(), 1 << 20);
        assert!(c.disk.is_none() && c.admission.is_none());
        let dir = std::env::temp_dir().join(format!("relay-cache-open-{}", std::process::id()));
        let c = Cache::open(&config(Some(dir.clone()), DiskAdmission::SecondHit)).unwrap();
        assert!(c.disk.is_some() && c.admission.is_some());
        // The directory is locked while the tier lives: a second open says so.
        let again = Cache::open(&config(Some(dir.clone()), DiskAdmission::Always));
        let e = again.err().expect("a second tier on a locked directory");
        assert!(
            e.to_string().starts_with("cannot open the disk tier: "),
            "{e}"
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Where the bytes of a chunk are now ([`Cache::source`]).
pub enum Source {
    /// In the memory tier: the bytes themselves.
    Memory(bytes::Bytes),
    /// On its way: fetched into a fill the reader streams it from, or read from a local
    /// file by another reader, whose share the reader waits on.
    InFlight(Flight),
    /// On the disk tier: where its file is and how to read and verify it.
    Disk(crate::disk::ReadPlan),
    /// In no tier and not on its way: it comes from the origin (a fill, or a directory
    /// origin's file).
    Origin,
}

/// Whether a chunk is held, and where ([`Cache::held`]).
pub enum Held {
    Memory(bytes::Bytes),
    Disk,
    Nowhere,
}

impl Cache {
    /// Where the bytes of chunk `key` are now, in the one order they are looked for: the
    /// memory tier; then `following`, what the reader already follows for this chunk (the
    /// fill it streams, the read it waits on: no need to look further); then what is in
    /// flight for it ([`InFlight`]: a fill from the origin, then a local read, never both);
    /// then the disk tier; else the origin. What the caller brings itself (a disk or file
    /// read, a fill) it claims first ([`InFlight::claim_read`], [`InFlight::claim_fill`]),
    /// which looks again under the table's lock: each chunk is fetched or read once however
    /// many want it. Allocation-free on a memory hit.
    pub fn source(&self, key: &ChunkRef<'_>, following: Option<&Flight>) -> Source {
        if let Some(bytes) = self.memory.get(key) {
            return Source::Memory(bytes);
        }
        if let Some(flight) = following.filter(|f| f.key().as_ref() == *key) {
            return Source::InFlight(flight.clone());
        }
        if let Some(flight) = self.inflight.flight(&key.to_owned_key()) {
            return Source::InFlight(flight);
        }
        match self.disk.as_ref().and_then(|d| d.locate(key)) {
            Some(plan) => Source::Disk(plan),
            None => Source::Origin,
        }
    }

    /// The chunk is held by a tier (memory or disk): serving it is a hit.
    pub fn holds(&self, key: &ChunkRef<'_>) -> bool {
        self.memory.contains(key) || self.on_disk(key)
    }

    /// Whether chunk `key` is held, with its bytes when they are in memory; unlike
    /// [`Cache::source`] it plans no disk read (for a response that checks before it
    /// sends).
    pub fn held(&self, key: &ChunkRef<'_>) -> Held {
        match self.memory.get(key) {
            Some(bytes) => Held::Memory(bytes),
            None if self.on_disk(key) => Held::Disk,
            None => Held::Nowhere,
        }
    }

    fn on_disk(&self, key: &ChunkRef<'_>) -> bool {
        self.disk.as_ref().is_some_and(|d| d.contains(key))
    }
}

#[cfg(test)]
pub(crate) mod source_tests {
    use super::*;

    pub(crate) fn key(object: &str, index: u64) -> crate::ChunkKey {
        crate::ChunkKey {
            object: Arc::from(object),
            version: 1,
            index,
        }
    }

    /// A cache of 4 KiB chunks with a disk tier in a fresh temp directory named by `tag`.
    pub(crate) fn cache_on_disk(tag: &str) -> (Cache, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("relay-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = CacheConfig {
            chunk_size: 4096,
            memory_bytes: 1 << 20,
            disk_dir: Some(dir.clone()),
            ..CacheConfig::default()
        };
        (Cache::open(&config).unwrap(), dir)
    }

    #[test]
    fn memory_first_then_disk_then_the_origin() {
        let (cache, dir) = cache_on_disk("source");
        let (a, b, c) = (key("h/a", 0), key("h/a", 1), key("h/a", 2));
        cache
            .memory
            .insert(a.clone(), bytes::Bytes::from_static(b"in memory"));
        put_on_disk(&cache, &b, 3 * 4096);
        assert!(
            matches!(cache.source(&a.as_ref(), None), Source::Memory(m) if &m[..] == b"in memory")
        );
        assert!(matches!(cache.source(&b.as_ref(), None), Source::Disk(p) if p.key == b));
        assert!(matches!(cache.source(&c.as_ref(), None), Source::Origin));
        // A fill the reader streams from comes after memory, before the disk; one of
        // another chunk is no answer for this one.
        let (fill, _writer) = crate::fill::Fill::new(b.clone(), 4096);
        let streaming = Flight::Fill(fill.clone());
        assert!(matches!(
            cache.source(&b.as_ref(), Some(&streaming)),
            Source::InFlight(Flight::Fill(f)) if Arc::ptr_eq(&f, &fill)
        ));
        assert!(matches!(
            cache.source(&c.as_ref(), Some(&streaming)),
            Source::Origin
        ));
        let (fill_a, _w) = crate::fill::Fill::new(a.clone(), 4096);
        assert!(matches!(
            cache.source(&a.as_ref(), Some(&Flight::Fill(fill_a))),
            Source::Memory(_)
        ));
        assert!(cache.holds(&a.as_ref()) && cache.holds(&b.as_ref()) && !cache.holds(&c.as_ref()));
        assert!(matches!(cache.held(&a.as_ref()), Held::Memory(m) if &m[..] == b"in memory"));
        assert!(matches!(cache.held(&b.as_ref()), Held::Disk));
        assert!(matches!(cache.held(&c.as_ref()), Held::Nowhere));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Writes "on disk" as chunk `key` of an object `object_len` long to the disk tier.
    fn put_on_disk(cache: &Cache, key: &crate::ChunkKey, object_len: u64) {
        let disk = cache.disk.as_ref().unwrap();
        let info = crate::disk::ChunkInfo {
            key: key.as_ref(),
            object_len,
            etag: "\"e\"",
            last_modified: "",
            meta: b"",
        };
        let plan = disk.plan_write(&info, b"on disk").unwrap();
        std::fs::write(&plan.temp_path, [&plan.header[..], b"on disk"].concat()).unwrap();
        std::fs::rename(&plan.temp_path, &plan.final_path).unwrap();
        disk.commit_write(&plan);
    }

    #[test]
    fn what_is_in_flight_comes_after_memory_before_the_disk() {
        use crate::inflight::Claim;
        let (cache, dir) = cache_on_disk("source-inflight");
        let (a, b) = (key("h/b", 0), key("h/b", 1));
        for k in [&a, &b] {
            put_on_disk(&cache, k, 2 * 4096);
        }
        // A fill in flight: streamed rather than the disk copy read.
        let Claim::Mine(writer) = cache.inflight.claim_fill(a.clone(), 4096, &cache.memory) else {
            panic!()
        };
        assert!(matches!(
            cache.source(&a.as_ref(), None),
            Source::InFlight(Flight::Fill(f)) if Arc::ptr_eq(&f, writer.fill())
        ));
        // Another reader's read in flight: waited on rather than read again.
        let Claim::Mine(share) = cache.inflight.claim_read(b.clone(), &cache.memory) else {
            panic!()
        };
        assert!(matches!(
            cache.source(&b.as_ref(), None),
            Source::InFlight(Flight::Read(s)) if Arc::ptr_eq(&s, &share)
        ));
        // Once the read is settled (its chunk stored first), memory answers.
        cache
            .memory
            .insert(b.clone(), bytes::Bytes::from_static(b"read"));
        cache.inflight.settle(
            &share,
            Some(bytes::Bytes::from_static(b"read")),
            &crate::wake::Wakers::none(),
        );
        assert!(matches!(cache.source(&b.as_ref(), None), Source::Memory(_)));
        // Settled, the read is out of the table: once memory lets the chunk go, its disk
        // copy is read again.
        cache.memory.remove_object("h/b");
        assert!(matches!(cache.source(&b.as_ref(), None), Source::Disk(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

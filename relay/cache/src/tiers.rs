//! The cache's tiers opened from the config, in one place: what the daemon builds once and
//! hands to the upstream (which fills the tiers) and the server (which reads them).

use crate::arena::{ARENA_MIN, Arena, arena_len};
use crate::disk::{Admission, DiskConfig, DiskError, DiskTier};
use crate::fill::InFlight;
use crate::{Layout, MemoryTier, MetaCache};
use relay_config::{CacheConfig, DiskAdmission};
use std::sync::Arc;

/// Why the cache could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot open the disk tier: {0}")]
    Disk(#[from] DiskError),
}

/// Objects described at once in the meta cache.
const META_OBJECTS: usize = 1 << 16;

/// A window of a million fetches for `cache.disk_admission = "second-hit"`: a chunk fetched
/// twice within it goes to disk.
const ADMISSION_WINDOW: u64 = 1 << 20;

/// Every tier of the cache, shared by the workers and the upstream thread.
pub struct Cache {
    /// How objects are cut into chunks (`cache.chunk_size`).
    pub layout: Layout,
    /// Chunks in memory (`cache.memory_bytes`), large ones in the registered arena.
    pub memory: Arc<MemoryTier>,
    /// What is known of each object.
    pub meta: Arc<MetaCache>,
    /// Fetches in flight (object heads and chunk fills), for coalescing.
    pub inflight: Arc<InFlight>,
    /// The disk tier (`cache.disk_dir`), when configured.
    pub disk: Option<Arc<DiskTier>>,
    /// Which completed chunks go to disk (`cache.disk_admission`; None: every one).
    pub admission: Option<Arc<Admission>>,
}

impl Cache {
    /// Opens the tiers `config` asks for: the memory tier (in a registered arena when the
    /// mapping is granted, else on the heap), the meta cache, the in-flight table, and the
    /// disk tier with its index rebuilt from the files found.
    pub fn open(config: &CacheConfig) -> Result<Cache, CacheError> {
        // Large chunks live in one mapping every worker registers with its ring; without it
        // (the mapping refused) they live on the heap and are sent unregistered.
        // Chunks smaller than the arena's smallest block never go there: no arena then.
        let arena = if config.chunk_size < ARENA_MIN as u64 {
            None
        } else {
            match Arena::new(arena_len(config.memory_bytes, config.chunk_size)) {
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
        };
        Ok(Cache {
            layout: Layout::new(config.chunk_size),
            memory,
            meta: Arc::new(MetaCache::new(META_OBJECTS)),
            inflight: Arc::new(InFlight::with_arena(arena)),
            disk,
            admission,
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

//! What the cache knows of an object: its length and validators, and when that was learnt,
//! so the origin is asked again once the information is older than the configured limit.

use quick_cache::sync::Cache;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An object's description as the origin gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Body length in bytes.
    pub len: u64,
    /// Hash of the validators; part of every chunk key, so versions never mix.
    pub version: u64,
    /// Strong entity tag, quoted, e.g. `"5f3a-1000"`.
    pub etag: String,
    /// Last-Modified as an IMF-fixdate.
    pub last_modified: String,
    /// When the origin described it.
    pub fetched: Instant,
    /// How long the description (and so the chunks of this version) may be used without
    /// asking the origin again.
    pub ttl: Duration,
    /// Whether the chunks may be kept (a shared cache may store the response).
    pub storable: bool,
}

impl ObjectMeta {
    pub fn is_fresh(&self, now: Instant, max_age: Duration) -> bool {
        now.saturating_duration_since(self.fetched) < max_age.min(self.ttl)
    }
}

/// Object descriptions by cache key; bounded by count.
pub struct MetaCache {
    objects: Cache<Arc<str>, Arc<ObjectMeta>>,
}

impl MetaCache {
    pub fn new(max_objects: usize) -> Self {
        MetaCache {
            objects: Cache::new(max_objects.max(16)),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<ObjectMeta>> {
        self.objects.get(key)
    }

    pub fn insert(&self, key: &str, meta: ObjectMeta) -> Arc<ObjectMeta> {
        let meta = Arc::new(meta);
        self.objects.insert(Arc::from(key), meta.clone());
        meta
    }

    pub fn remove(&self, key: &str) {
        self.objects.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness() {
        let c = MetaCache::new(10);
        let t0 = Instant::now();
        let m = c.insert(
            "k",
            ObjectMeta {
                len: 1,
                version: 2,
                etag: "\"x\"".into(),
                last_modified: String::new(),
                fetched: t0,
                ttl: Duration::MAX,
                storable: true,
            },
        );
        assert!(m.is_fresh(t0, Duration::from_secs(1)));
        assert!(!m.is_fresh(t0 + Duration::from_secs(2), Duration::from_secs(1)));
        assert_eq!(c.get("k").map(|m| m.len), Some(1));
        c.remove("k");
        assert!(c.get("k").is_none());
    }
}

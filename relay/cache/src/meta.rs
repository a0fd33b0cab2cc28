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
    /// After `ttl`, how long a stale copy may still be served while it is revalidated in
    /// the background (`stale-while-revalidate`).
    pub stale_while_revalidate: Duration,
    /// After `ttl`, how long a stale copy may be served when the origin fails
    /// (`stale-if-error`).
    pub stale_if_error: Duration,
    /// The response's age when it was received (RFC 9111 §4.2.3), in seconds.
    pub initial_age: u64,
    /// `Content-Type` (empty when unknown).
    pub content_type: String,
    /// The origin's other end-to-end header fields, encoded as `Name: value\r\n` lines.
    pub headers: bytes::Bytes,
}

impl ObjectMeta {
    pub fn is_fresh(&self, now: Instant, max_age: Duration) -> bool {
        now.saturating_duration_since(self.fetched) < max_age.min(self.ttl)
    }

    /// A description of a plain file (directory origin): no HTTP caching fields.
    pub fn file(len: u64, version: u64, etag: String, last_modified: String) -> ObjectMeta {
        ObjectMeta {
            len,
            version,
            etag,
            last_modified,
            fetched: Instant::now(),
            ttl: Duration::MAX,
            storable: true,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            initial_age: 0,
            content_type: String::new(),
            headers: bytes::Bytes::new(),
        }
    }

    /// Stale, but within the `stale-while-revalidate` window.
    pub fn may_serve_while_revalidating(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.fetched);
        age >= self.ttl && age < self.ttl.saturating_add(self.stale_while_revalidate)
    }

    /// Stale, but within the `stale-if-error` window (or fresh).
    pub fn may_serve_on_error(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.fetched);
        age < self.ttl.saturating_add(self.stale_if_error)
    }

    /// The `Age` to send now, in seconds.
    pub fn age(&self, now: Instant) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_duration_since(self.fetched).as_secs())
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
                fetched: t0,
                ..ObjectMeta::file(1, 2, "\"x\"".into(), String::new())
            },
        );
        assert!(m.is_fresh(t0, Duration::from_secs(1)));
        assert!(!m.is_fresh(t0 + Duration::from_secs(2), Duration::from_secs(1)));
        assert_eq!(c.get("k").map(|m| m.len), Some(1));
        c.remove("k");
        assert!(c.get("k").is_none());
    }
}

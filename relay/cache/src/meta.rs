//! What the cache knows of an object: its length and validators, and when that was learnt,
//! so the origin is asked again once the information is older than the configured limit.
//! Whether a description is fresh or within a stale window is decided by
//! `policy::freshness` (the `kept_*` functions).

use crate::policy::freshness;
use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An object's description as the origin gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The response's status: 200 for most objects, or any final status an origin answered
    /// a GET with (a 301, a 404, ...), kept and served like a 200's body.
    pub status: u16,
    /// Body length in bytes (0 while [`ObjectMeta::open_ended`]).
    pub len: u64,
    /// The chunks may be fetched one by one with Range requests: a strong validator names
    /// this version (RFC 9110 §8.8.1), so chunks from separate responses belong to the same
    /// representation. Without one the body comes from one response, never stitched from
    /// several: its version is unique to the fetch that described it.
    pub ranged: bool,
    /// The body's length is not known yet (a chunked or close-delimited answer still
    /// arriving): it streams from its fetch's fills, each of a chunk's size, until one ends
    /// short. Never in the meta cache: once the body ended, a description with the length
    /// learnt and the same version replaces it.
    pub open_ended: bool,
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
    /// Never served stale, whatever a request's `max-stale` allows (`no-cache`,
    /// `must-revalidate`, `proxy-revalidate`: RFC 9111 §4.2.4).
    pub must_revalidate: bool,
    /// May answer a request with `Authorization` (`public`, `s-maxage` or `must-revalidate`:
    /// RFC 9111 §3.5); other stored responses never do.
    pub shared_with_credentials: bool,
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
    /// The stored response's `Date`: the origin's (RFC 9111 §4.2.3's `date_value`), or the
    /// time relay received it when the origin sent none (RFC 9110 §6.6.1), as the latest
    /// answer (a 304 included, §3.2) said. Sent with every response served from it, beside
    /// an `Age` that counts from it. None for a directory origin's file: relay is its
    /// origin, and its responses carry the time they are sent.
    pub date: Option<ResponseDate>,
    /// The disk tiers' removals when the answer it describes was asked for
    /// ([`crate::disk::removals`]; `u64::MAX`: not known, one not fetched here): the fills
    /// of that answer's body take it (`Fill::lower_since`), so a purge or an invalidation
    /// while the answer arrives keeps its chunks off the disk, however late each one
    /// starts.
    pub asked_at: u64,
    /// The request header fields the response varies on (lower-case; `Vary`, without
    /// `accept-encoding`, which relay always asks as identity). Variants are stored under
    /// their own keys (see the server's routing); this description is the variant for
    /// requests that send none of these fields.
    pub vary: Option<Arc<[String]>>,
}

impl ObjectMeta {
    /// Fresh at `now`, and described less than `max_age` ago.
    pub fn is_fresh(&self, now: Instant, max_age: Duration) -> bool {
        freshness::kept_is_fresh(self.elapsed(now), max_age.min(self.ttl))
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched)
    }

    /// A description of a plain file (directory origin): no HTTP caching fields.
    pub fn file(len: u64, version: u64, etag: String, last_modified: String) -> ObjectMeta {
        ObjectMeta {
            status: 200,
            len,
            ranged: true,
            open_ended: false,
            version,
            etag,
            last_modified,
            fetched: Instant::now(),
            ttl: Duration::MAX,
            storable: true,
            must_revalidate: false,
            shared_with_credentials: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            initial_age: 0,
            content_type: String::new(),
            headers: bytes::Bytes::new(),
            date: None,
            asked_at: u64::MAX,
            vary: None,
        }
    }

    /// Stale, but within the `stale-while-revalidate` window.
    pub fn may_serve_while_revalidating(&self, now: Instant) -> bool {
        freshness::kept_within_stale_while_revalidate(
            self.elapsed(now),
            self.ttl,
            self.stale_while_revalidate,
        )
    }

    /// Stale, but within the `stale-if-error` window (or fresh).
    pub fn may_serve_on_error(&self, now: Instant) -> bool {
        freshness::kept_within_stale_if_error(self.elapsed(now), self.ttl, self.stale_if_error)
    }

    /// The `Age` to send now, in seconds.
    pub fn age(&self, now: Instant) -> u64 {
        self.initial_age
            .saturating_add(now.saturating_duration_since(self.fetched).as_secs())
    }
}

/// A response's `Date` (RFC 9110 §6.6.1): seconds since the epoch, and the IMF-fixdate that
/// says them, formatted once when the response is described, so a response served from it
/// writes 29 bytes and formats nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseDate {
    secs: u64,
    text: [u8; IMF_FIXDATE_LEN],
}

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_LEN: usize = 29;

impl ResponseDate {
    /// The date `secs` seconds after the epoch, clamped to what an IMF-fixdate can show
    /// (up to the end of year 9999).
    pub fn from_unix(secs: u64) -> ResponseDate {
        const YEAR_10000: u64 = 253_402_300_800;
        let secs = secs.min(YEAR_10000 - 1);
        let when = std::time::UNIX_EPOCH + Duration::from_secs(secs);
        let mut text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        let formatted = httpdate::fmt_http_date(when);
        // (Always 29 bytes within the clamp; the epoch placeholder otherwise.)
        if formatted.len() == IMF_FIXDATE_LEN {
            text.copy_from_slice(formatted.as_bytes());
        }
        ResponseDate { secs, text }
    }

    /// Seconds since the epoch.
    pub fn unix(&self) -> u64 {
        self.secs
    }

    /// The IMF-fixdate, 29 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

/// Version of the blob [`ObjectMeta::encode_blob`] writes (1: before the status, `ranged`
/// and `must_revalidate`, read as a ranged 200 that may be served stale; 2: before the
/// `Date`, read as the age it was written at before the blob is read; 3: before the time it
/// was written, its age read as it was then, the time since uncounted).
const BLOB_FORMAT: u8 = 4;

impl ObjectMeta {
    /// What the disk tier keeps beside each chunk so the description can be rebuilt after a
    /// restart: the absolute expiry, the stale windows, the age, storability, the status,
    /// whether it is ranged, its `Date` and the header fields. (Length, version and validators are the disk tier's own fields.)
    pub fn encode_blob(&self, now: Instant, now_unix: u64) -> Vec<u8> {
        let elapsed = now.saturating_duration_since(self.fetched);
        let expires = if self.ttl == Duration::MAX {
            u64::MAX
        } else {
            now_unix.saturating_add(self.ttl.saturating_sub(elapsed).as_secs())
        };
        let mut out = Vec::with_capacity(64 + self.content_type.len() + self.headers.len());
        out.push(BLOB_FORMAT);
        let age = self.initial_age.saturating_add(elapsed.as_secs());
        // (A description without one, a file's, is written as received when written.)
        let date = self.date.map_or(now_unix.saturating_sub(age), |d| d.unix());
        for v in [
            expires,
            self.stale_while_revalidate.as_secs(),
            self.stale_if_error.as_secs(),
            age,
            date,
            now_unix,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(u8::from(self.storable));
        out.extend_from_slice(&self.status.to_le_bytes());
        out.push(
            u8::from(self.ranged)
                | u8::from(self.must_revalidate) << 1
                | u8::from(self.shared_with_credentials) << 2,
        );
        let vary = self.vary.as_ref().map(|v| v.join(",")).unwrap_or_default();
        for part in [
            self.content_type.as_bytes(),
            &self.headers[..],
            vary.as_bytes(),
        ] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Rebuilds a description from a chunk's stored fields and blob; None when the blob is
    /// not one this version wrote (then the object is fetched again).
    pub fn decode_blob(
        len: u64,
        version: u64,
        etag: &str,
        last_modified: &str,
        blob: &[u8],
        now_unix: u64,
    ) -> Option<ObjectMeta> {
        let (&format, mut rest) = blob.split_first()?;
        if !(1..=BLOB_FORMAT).contains(&format) {
            return None;
        }
        let mut u64s = [0u64; 6];
        let fields = match format {
            4.. => 6,
            3 => 5,
            _ => 4,
        };
        for v in &mut u64s[..fields] {
            let (head, tail) = rest.split_at_checked(8)?;
            *v = u64::from_le_bytes(head.try_into().ok()?);
            rest = tail;
        }
        let (&storable, mut rest) = rest.split_first()?;
        let (mut status, mut ranged) = (200, 1);
        if format >= 2 {
            let (head, tail) = rest.split_at_checked(2)?;
            status = u16::from_le_bytes(head.try_into().ok()?);
            let (&r, tail) = tail.split_first()?;
            (ranged, rest) = (r, tail);
        }
        let mut parts: [&[u8]; 3] = [&[], &[], &[]];
        for p in &mut parts {
            let (head, tail) = rest.split_at_checked(4)?;
            let n = u32::from_le_bytes(head.try_into().ok()?) as usize;
            let (part, tail) = tail.split_at_checked(n)?;
            *p = part;
            rest = tail;
        }
        if !rest.is_empty() || storable > 1 || ranged > 7 || !(200..1000).contains(&status) {
            return None;
        }
        let [expires, swr, sie, age, date, written] = u64s;
        // Its age now: as it was written, and the time since (relay's downtime included:
        // RFC 9111 §4.2.3's resident time). (Older blobs: as it was written.)
        let age = match format {
            4.. => age.saturating_add(now_unix.saturating_sub(written)),
            _ => age,
        };
        // (Blobs written before the `Date` was kept: as old as the age they were written at.)
        let date = match format {
            3.. => date,
            _ => now_unix.saturating_sub(age),
        };
        let ttl = if expires == u64::MAX {
            Duration::MAX
        } else {
            Duration::from_secs(expires.saturating_sub(now_unix))
        };
        Some(ObjectMeta {
            status,
            len,
            ranged: ranged & 1 == 1,
            must_revalidate: ranged & 2 == 2,
            shared_with_credentials: ranged & 4 == 4,
            open_ended: false,
            version,
            etag: etag.to_string(),
            last_modified: last_modified.to_string(),
            fetched: Instant::now(),
            ttl,
            storable: storable == 1,
            stale_while_revalidate: Duration::from_secs(swr),
            stale_if_error: Duration::from_secs(sie),
            initial_age: age,
            content_type: String::from_utf8(parts[0].to_vec()).ok()?,
            headers: bytes::Bytes::copy_from_slice(parts[1]),
            date: Some(ResponseDate::from_unix(date)),
            asked_at: u64::MAX,
            vary: match std::str::from_utf8(parts[2]).ok()? {
                "" => None,
                v => Some(v.split(',').map(str::to_string).collect()),
            },
        })
    }
}

/// The most a description may weigh ([`ObjectMeta::weight`]: its key, stored header fields,
/// validators and bookkeeping): a response whose description would weigh more is passed to
/// its client and not stored, so no one response takes more than a 64th of the smallest
/// budget (`cache.meta_bytes`, 4 MiB at least).
pub const MAX_DESCRIPTION_BYTES: u64 = 64 << 10;

/// What a description costs beside the bytes of its key and fields: the `ObjectMeta`
/// itself, the reference counts of its `Arc` and of its key's, the cache's entry and index
/// slot, and allocator rounding of the small allocations.
pub const DESCRIPTION_OVERHEAD: u64 = std::mem::size_of::<ObjectMeta>() as u64 + 192;

impl ObjectMeta {
    /// The heap this description holds under `key` in the meta cache, in bytes: its key,
    /// its strings and stored header fields, with [`DESCRIPTION_OVERHEAD`] for the rest.
    /// (The header fields are counted by length: they are built as an allocation of their
    /// exact length.)
    pub fn weight(&self, key: &str) -> u64 {
        let vary = self.vary.as_ref().map_or(0, |v| {
            16 + v
                .iter()
                .map(|f| (std::mem::size_of::<String>() + f.capacity()) as u64)
                .sum::<u64>()
        });
        DESCRIPTION_OVERHEAD
            + key.len() as u64
            + self.etag.capacity() as u64
            + self.last_modified.capacity() as u64
            + self.content_type.capacity() as u64
            + self.headers.len() as u64
            + vary
    }
}

/// Weighs a description by the heap it holds ([`ObjectMeta::weight`]).
#[derive(Clone, Copy)]
struct ByHeap;

impl Weighter<Arc<str>, Arc<ObjectMeta>> for ByHeap {
    fn weight(&self, key: &Arc<str>, meta: &Arc<ObjectMeta>) -> u64 {
        meta.weight(key)
    }
}

/// Object descriptions by cache key, bounded by the bytes they hold (`cache.meta_bytes`):
/// past it the least used go (CLOCK-PRO, as the memory tier). One weighing more than
/// [`MAX_DESCRIPTION_BYTES`] is never kept.
pub struct MetaCache {
    objects: Cache<Arc<str>, Arc<ObjectMeta>, ByHeap>,
    capacity: u64,
    /// Descriptions not kept for their weight ([`MetaCache::refused`]).
    refused: AtomicU64,
    /// Objects whose variants were invalidated, and when ([`MetaCache::invalidate_variants`]):
    /// a variant described before is gone when next looked up. (Bounded by count: a mark
    /// outlives [`INVALIDATED_MARKS`] later ones at least.)
    invalidated: Cache<Arc<str>, Instant>,
    /// Whether any mark was ever set (the lookups of a relay that never invalidated a
    /// variant do not look at the marks).
    any_invalidated: AtomicBool,
}

/// How many objects' variant invalidations [`MetaCache`] remembers.
pub const INVALIDATED_MARKS: usize = 16_384;

impl MetaCache {
    /// A cache holding descriptions of at most `capacity_bytes` in all (at least 64 of the
    /// largest kept, [`MAX_DESCRIPTION_BYTES`]).
    pub fn new(capacity_bytes: u64) -> Self {
        let capacity = capacity_bytes.max(64 * MAX_DESCRIPTION_BYTES);
        // Each shard evicts within its own share: shards of at least 4 MiB, so that the
        // largest description is a 64th of a shard at most; at most 64 shards.
        let shards = (capacity / (64 * MAX_DESCRIPTION_BYTES)).clamp(1, 64) as usize;
        let shards = match shards.is_power_of_two() {
            true => shards,
            false => shards.next_power_of_two() / 2,
        };
        // About a KiB a description, for the index's first size.
        let items = (capacity >> 10).clamp(64, 1 << 22) as usize;
        let objects = match OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .shards(shards)
            .build()
        {
            Ok(options) => {
                Cache::with_options(options, ByHeap, Default::default(), Default::default())
            }
            Err(_) => Cache::with_weighter(items, capacity, ByHeap),
        };
        MetaCache {
            objects,
            capacity,
            refused: AtomicU64::new(0),
            invalidated: Cache::new(INVALIDATED_MARKS),
            any_invalidated: AtomicBool::new(false),
        }
    }

    /// Bytes the descriptions held weigh now.
    pub fn weight(&self) -> u64 {
        self.objects.weight()
    }

    /// The most [`MetaCache::weight`] may reach (`cache.meta_bytes`).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Descriptions held now.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Descriptions not kept since start because they weighed more than
    /// [`MAX_DESCRIPTION_BYTES`].
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether a description of `meta` under `key` may be kept (it weighs no more than
    /// [`MAX_DESCRIPTION_BYTES`]); counts the ones that may not.
    pub fn admits(&self, key: &str, meta: &ObjectMeta) -> bool {
        let fits = meta.weight(key) <= MAX_DESCRIPTION_BYTES;
        if !fits {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    pub fn get(&self, key: &str) -> Option<Arc<ObjectMeta>> {
        let meta = self.objects.get(key)?;
        // A variant (`key::push_variant`) described before its object's variants were
        // invalidated, or the object's own description of an answer that arrived since
        // but was asked for before (a body without a length is described when it ends):
        // gone.
        if self.any_invalidated.load(Ordering::Relaxed)
            && self
                .invalidated
                .get(key.find('\0').map_or(key, |at| &key[..at]))
                .is_some_and(|when| meta.fetched < when)
        {
            self.objects.remove(key);
            return None;
        }
        Some(meta)
    }

    /// Invalidates every variant of `object` (an unsafe method's answer, RFC 9111 §4.4) at
    /// once, whatever their number: each is dropped when next looked up, unless described
    /// anew since. (The object's own description is dropped with [`MetaCache::remove`].)
    pub fn invalidate_variants(&self, object: &str) {
        self.invalidated.insert(Arc::from(object), Instant::now());
        self.any_invalidated.store(true, Ordering::Relaxed);
    }

    /// Keeps `meta` as the description of `key`, replacing any; one too heavy to keep
    /// ([`MetaCache::admits`]) is not kept, and the one it would replace is dropped (it
    /// describes an older answer). Returns the description either way.
    pub fn insert(&self, key: &str, meta: ObjectMeta) -> Arc<ObjectMeta> {
        let meta = Arc::new(meta);
        if self.admits(key, &meta) {
            self.objects.insert(Arc::from(key), meta.clone());
        } else {
            self.objects.remove(key);
        }
        meta
    }

    /// Drops one description; whether there was one.
    pub fn remove(&self, key: &str) -> bool {
        self.objects.remove(key).is_some()
    }

    /// Drops every description whose key `matches`; returns their keys.
    pub fn remove_objects(&self, matches: impl Fn(&str) -> bool) -> Vec<Arc<str>> {
        let removed = std::cell::RefCell::new(Vec::new());
        self.objects.retain(|k, _| {
            let drop = matches(k);
            if drop {
                removed.borrow_mut().push(k.clone());
            }
            !drop
        });
        removed.into_inner()
    }

    /// Marks descriptions stale (soft purge): the next request revalidates with the origin,
    /// whose 304 keeps the stored chunks. Returns how many.
    pub fn expire(&self, matches: impl Fn(&str) -> bool) -> usize {
        let keys: Vec<(Arc<str>, Arc<ObjectMeta>)> =
            self.objects.iter().filter(|(k, _)| matches(k)).collect();
        for (k, m) in &keys {
            let mut stale = (**m).clone();
            stale.ttl = Duration::ZERO;
            stale.stale_while_revalidate = Duration::ZERO;
            self.objects.insert(k.clone(), Arc::new(stale));
        }
        keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsafe method's invalidation reaches every variant at once, without a walk of
    /// the descriptions: those described before it go when looked up, later ones stay;
    /// the object's own description too.
    #[test]
    fn invalidated_variants_go_when_next_looked_up() {
        let cache = MetaCache::new(64 << 20);
        let t0 = Instant::now();
        let described = |at: Instant| ObjectMeta {
            fetched: at,
            ..ObjectMeta::file(10, 1, "\"e\"".into(), String::new())
        };
        cache.insert("h/a\0lang=fr\n", described(t0));
        cache.insert("h/a\0lang=de\n", described(t0));
        cache.insert("h/ab\0lang=fr\n", described(t0));
        cache.insert("h/a", described(t0));
        std::thread::sleep(Duration::from_millis(2));
        cache.invalidate_variants("h/a");
        assert!(cache.get("h/a\0lang=fr\n").is_none());
        assert!(cache.get("h/a\0lang=de\n").is_none());
        assert!(cache.get("h/ab\0lang=fr\n").is_some(), "another object's");
        // The base's own description of an answer asked for before (one arriving then,
        // described once it ended): gone too.
        assert!(cache.get("h/a").is_none(), "the base, described before");
        // Described anew since: kept.
        cache.insert("h/a\0lang=fr\n", described(Instant::now()));
        assert!(cache.get("h/a\0lang=fr\n").is_some());
        cache.insert("h/a", described(Instant::now()));
        assert!(cache.get("h/a").is_some());
    }

    #[test]
    fn blob_round_trip_and_garbage() {
        let t0 = Instant::now();
        let mut m = ObjectMeta::file(10, 7, "\"e\"".into(), "lm".into());
        m.ttl = Duration::from_secs(100);
        m.stale_if_error = Duration::from_secs(5);
        m.content_type = "video/mp4".into();
        m.headers = bytes::Bytes::from_static(b"X-A: b\r\n");
        m.vary = Some(vec!["accept-language".to_string()].into());
        m.fetched = t0;
        m.status = 404;
        m.ranged = false;
        m.must_revalidate = true;
        m.shared_with_credentials = true;
        m.date = Some(ResponseDate::from_unix(990));
        let blob = m.encode_blob(t0, 1_000);
        let back = ObjectMeta::decode_blob(10, 7, "\"e\"", "lm", &blob, 1_040).unwrap();
        assert_eq!(back.date, m.date);
        assert_eq!(back.ttl, Duration::from_secs(60));
        // Its age counts the 40 s since it was written (a restart's downtime, say).
        assert_eq!(back.initial_age, 40);
        assert_eq!(back.stale_if_error, Duration::from_secs(5));
        assert_eq!(back.content_type, "video/mp4");
        assert_eq!(&back.headers[..], b"X-A: b\r\n");
        assert_eq!(
            back.vary.as_deref(),
            Some(&["accept-language".to_string()][..])
        );
        assert!(back.storable);
        assert_eq!(
            (back.status, back.ranged, back.must_revalidate),
            (404, false, true)
        );
        assert!(back.shared_with_credentials);
        for cut in 0..blob.len() {
            assert!(ObjectMeta::decode_blob(10, 7, "", "", &blob[..cut], 0).is_none());
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(ObjectMeta::decode_blob(10, 7, "", "", &longer, 0).is_none());
        // A blob written before the Date was kept (format 2: no Date after the age): as old
        // as the age it was written at.
        m.initial_age = 30;
        let new = m.encode_blob(t0, 1_000);
        assert_eq!(
            ObjectMeta::decode_blob(10, 7, "", "", &new, 1_040).map(|b| b.initial_age),
            Some(70)
        );
        let mut old = vec![2];
        old.extend_from_slice(&new[1..33]);
        old.extend_from_slice(&new[49..]);
        let back = ObjectMeta::decode_blob(10, 7, "", "", &old, 1_040).unwrap();
        assert_eq!(back.date.map(|d| d.unix()), Some(1_010));
        assert_eq!(back.initial_age, 30);
        assert_eq!(back.content_type, "video/mp4");
        // Format 3 (the Date, not the time it was written): the age it was written at.
        let mut old = vec![3];
        old.extend_from_slice(&new[1..41]);
        old.extend_from_slice(&new[49..]);
        let back = ObjectMeta::decode_blob(10, 7, "", "", &old, 1_040).unwrap();
        assert_eq!(back.date, m.date);
        assert_eq!(back.initial_age, 30);
        assert_eq!(back.content_type, "video/mp4");
    }

    #[test]
    fn a_response_date_is_an_imf_fixdate() {
        let d = ResponseDate::from_unix(784_111_777);
        assert_eq!(d.as_bytes(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(d.unix(), 784_111_777);
        let far = ResponseDate::from_unix(u64::MAX);
        assert_eq!(far.as_bytes(), b"Fri, 31 Dec 9999 23:59:59 GMT");
    }

    /// A description whose stored fields are `pad` bytes.
    fn padded(pad: usize) -> ObjectMeta {
        let mut m = ObjectMeta::file(1, 2, "\"e\"".into(), String::new());
        m.headers = bytes::Bytes::from(format!("X-Pad: {}\r\n", "p".repeat(pad)));
        m
    }

    #[test]
    fn a_description_weighs_its_key_and_fields() {
        let m = padded(1000);
        assert_eq!(m.weight("k"), DESCRIPTION_OVERHEAD + 1 + 3 + 1009);
        assert_eq!(m.weight("kkkk") - m.weight("k"), 3);
        let mut v = m.clone();
        v.vary = Some(vec!["accept-language".to_string()].into());
        assert!(v.weight("k") > m.weight("k") + 15);
    }

    #[test]
    fn descriptions_are_bounded_by_their_bytes() {
        let c = MetaCache::new(4 << 20);
        assert_eq!(c.capacity(), 4 << 20);
        // 2,000 descriptions of about 16 KiB: 32 MiB asked for, 4 MiB kept.
        for i in 0..2000 {
            c.insert(&format!("http://h/o?i={i}"), padded(16 << 10));
            assert!(c.weight() <= c.capacity(), "{} at {i}", c.weight());
        }
        let each = padded(16 << 10).weight("http://h/o?i=1000");
        assert!(c.len() as u64 <= c.capacity() / each, "{} held", c.len());
        // The bound drops what does not fit, not far more.
        assert!(c.weight() >= c.capacity() / 2, "{} held", c.weight());
        assert!(c.get("http://h/o?i=1999").is_some(), "the newest is held");
        // Small descriptions: many more of them in the same bytes.
        let c = MetaCache::new(4 << 20);
        for i in 0..2000 {
            c.insert(&format!("http://h/s?i={i}"), padded(100));
        }
        assert_eq!(c.len(), 2000);
    }

    #[test]
    fn a_description_too_heavy_is_not_kept() {
        let c = MetaCache::new(4 << 20);
        c.insert("k", padded(100));
        assert!(c.get("k").is_some());
        let heavy = padded(MAX_DESCRIPTION_BYTES as usize);
        assert!(!c.admits("k", &heavy));
        // Kept, it would replace the description of an older answer: that one goes too.
        let back = c.insert("k", heavy);
        assert_eq!(back.headers.len(), MAX_DESCRIPTION_BYTES as usize + 9);
        assert!(c.get("k").is_none());
        assert_eq!(c.refused(), 2);
        assert_eq!(c.weight(), 0);
    }

    #[test]
    fn freshness() {
        let c = MetaCache::new(1 << 20);
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

//! Admission to the disk tier: a doorkeeper that keeps one-hit wonders off the disk.
//!
//! Most chunks of an edge cache are requested once and never again; writing them costs
//! disk bandwidth and evicts chunks that would have been hit. [`Admission::record`] is
//! called for every request that misses memory; it answers whether the chunk was already
//! requested within the window, i.e. whether this is (at least) its second request — the
//! caller writes a filled chunk to disk only then.
//!
//! The filter is two Bloom filters of atomic words, the current and the previous window:
//! a key counts as seen if either holds it, so a repeat is recognised if it comes within
//! `window` to `2 × window` requests of the first. Every `window` records the older filter
//! is cleared and becomes the current one. Lock-free and shared by all workers; races
//! (a bit set while a filter is being cleared) only cost an occasional missed admission.
//! About 10 bits per key per window and 7 probes: under 1 % false positives per filter.

use super::format::key_hash;
use crate::key::ChunkRef;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const PROBES: u64 = 7;
const BITS_PER_KEY: u64 = 10;

/// The doorkeeper. See the module documentation.
pub struct Admission {
    filters: [Box<[AtomicU64]>; 2],
    /// Index of the current filter.
    current: AtomicUsize,
    /// Records since the last rotation.
    count: AtomicU64,
    window: u64,
    /// Bits per filter, minus one (a power of two).
    mask: u64,
}

impl Admission {
    /// A doorkeeper that admits a chunk on its second request within `window` requests
    /// (up to `2 × window`). Memory: about `2 × 10 × window` bits.
    pub fn new(window: u64) -> Self {
        let window = window.max(1);
        let bits = window
            .saturating_mul(BITS_PER_KEY)
            .next_power_of_two()
            .clamp(512, 1 << 36);
        let words = (bits / 64) as usize;
        let filter = || (0..words).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Admission {
            filters: [filter(), filter()],
            current: AtomicUsize::new(0),
            count: AtomicU64::new(0),
            window,
            mask: bits - 1,
        }
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    fn probes(&self, key: &ChunkRef<'_>) -> impl Iterator<Item = (usize, u64)> + use<> {
        let h = key_hash(key);
        let (h1, h2) = (h as u64, ((h >> 64) as u64) | 1);
        let mask = self.mask;
        (0..PROBES).map(move |i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & mask;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    fn holds(&self, filter: usize, key: &ChunkRef<'_>) -> bool {
        let f = &self.filters[filter & 1];
        self.probes(key)
            .all(|(w, b)| f.get(w).is_some_and(|x| x.load(Ordering::Relaxed) & b != 0))
    }

    /// Whether the chunk was requested within the window, without recording a request.
    pub fn seen(&self, key: &ChunkRef<'_>) -> bool {
        let cur = self.current.load(Ordering::Acquire);
        self.holds(cur, key) || self.holds(cur ^ 1, key)
    }

    /// Records a request for the chunk; `true` if it had been requested within the window
    /// already (admit it to disk), `false` for a first request (keep it off the disk).
    pub fn record(&self, key: &ChunkRef<'_>) -> bool {
        let cur = self.current.load(Ordering::Acquire) & 1;
        let seen = self.holds(cur, key) || self.holds(cur ^ 1, key);
        // Always into the current filter, so a key requested every window stays known.
        let f = &self.filters[cur];
        for (w, b) in self.probes(key) {
            if let Some(x) = f.get(w) {
                x.fetch_or(b, Ordering::Relaxed);
            }
        }
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.window {
            self.rotate(cur);
        }
        seen
    }

    /// Clears the older filter and makes it current; exactly one recorder per window
    /// reaches the count that calls this.
    fn rotate(&self, cur: usize) {
        let older = cur ^ 1;
        for x in self.filters[older].iter() {
            x.store(0, Ordering::Relaxed);
        }
        self.current.store(older, Ordering::Release);
        self.count.store(0, Ordering::Release);
    }

    /// Forgets every request.
    pub fn clear(&self) {
        for f in &self.filters {
            for x in f.iter() {
                x.store(0, Ordering::Relaxed);
            }
        }
        self.count.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(object: &str, index: u64) -> ChunkRef<'_> {
        ChunkRef {
            object,
            version: 1,
            index,
        }
    }

    #[test]
    fn one_hit_wonders_stay_out() {
        let a = Admission::new(10_000);
        let admitted = (0..10_000).filter(|&i| a.record(&k("once", i))).count();
        // Only Bloom false positives can let a first request through.
        assert!(
            admitted < 100,
            "{admitted} of 10000 one-hit wonders admitted"
        );
    }

    #[test]
    fn second_request_within_the_window_is_admitted() {
        let a = Admission::new(1000);
        assert!(!a.record(&k("x", 0)));
        assert!(a.seen(&k("x", 0)));
        // 500 other requests in between: still within the window.
        for i in 0..500 {
            a.record(&k("noise", i));
        }
        assert!(a.record(&k("x", 0)), "second request admitted");
        assert!(a.record(&k("x", 0)), "and every one after it");
        // Other chunks of the same object, and other versions, are other keys.
        assert!(!a.record(&k("x", 1)));
        assert!(!a.record(&ChunkRef {
            version: 2,
            ..k("x", 0)
        }));
    }

    #[test]
    fn a_request_older_than_two_windows_is_forgotten() {
        let a = Admission::new(100);
        assert!(!a.record(&k("old", 0)));
        for i in 0..250 {
            a.record(&k("noise", i));
        }
        assert!(!a.seen(&k("old", 0)));
        assert!(
            !a.record(&k("old", 0)),
            "too long ago: a first request again"
        );
        a.clear();
        assert!(!a.seen(&k("noise", 249)));
    }

    #[test]
    fn shared_between_threads() {
        let a = Admission::new(100_000);
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let a = &a;
                s.spawn(move || {
                    for i in 0..5000 {
                        a.record(&k("shared", i * 2 + t));
                    }
                });
            }
        });
        let seen = (0..10_000).filter(|&i| a.seen(&k("shared", i))).count();
        assert_eq!(seen, 10_000);
    }
}

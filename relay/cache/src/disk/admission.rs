//! Admission to the disk tier: a doorkeeper that keeps one-hit wonders off the disk.
//!
//! Most chunks of an edge cache are requested once and never again; writing them costs
//! disk bandwidth and evicts chunks that would have been hit. A chunk counts a request each
//! time a response sends it, whatever it is sent from (memory, a fill, the disk):
//! [`Admission::record`] answers whether it was already requested within the window, i.e.
//! whether this is (at least) its second request. Only then is it written: at once when its
//! bytes are in memory ([`Admission::mark_written`]), or when the fill bringing them
//! completes ([`Admission::mark_wanted`], [`Admission::wanted`]). So an object served three
//! times from memory reaches the disk (and survives a restart) as surely as one fetched
//! twice.
//!
//! Each set is two Bloom filters of atomic words, the current and the previous window: a
//! key counts as in the set if either holds it, so a repeat is recognised if it comes
//! within `window` to `2 × window` requests of the first. Every `window` records the older
//! filters are cleared and become the current ones. Lock-free and shared by all workers;
//! races (a bit set while a filter is being cleared) only cost an occasional missed
//! admission, or a write the disk writer finds it need not make. About 10 bits per key per
//! window and 7 probes: under 1 % false positives per filter.

use super::format::key_hash;
use crate::key::ChunkRef;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const PROBES: u64 = 7;
const BITS_PER_KEY: u64 = 10;

/// Requests (0), chunks wanted on disk once their fill completes (1), chunks handed to the
/// disk writer (2): each a pair of filters.
const REQUESTED: usize = 0;
const WANTED: usize = 1;
const WRITTEN: usize = 2;

/// The doorkeeper. See the module documentation.
pub struct Admission {
    /// `sets[s][w]`: set `s`'s filter for window parity `w`.
    sets: [[Box<[AtomicU64]>; 2]; 3],
    /// Parity of the current window.
    current: AtomicUsize,
    /// Records since the last rotation.
    count: AtomicU64,
    window: u64,
    /// Bits per filter, minus one (a power of two).
    mask: u64,
    /// Every chunk is admitted while the tier has room (`disk_admission =
    /// "second-hit-when-full"`): the doorkeeper only decides once it is nearly full.
    while_room: bool,
}

impl Admission {
    /// A doorkeeper that admits a chunk on its second request within `window` requests
    /// (up to `2 × window`). Memory: about `6 × 10 × window` bits.
    pub fn new(window: u64) -> Self {
        let window = window.max(1);
        let bits = window
            .saturating_mul(BITS_PER_KEY)
            .next_power_of_two()
            .clamp(512, 1 << 36);
        let words = (bits / 64) as usize;
        let filter = || (0..words).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        let pair = || [filter(), filter()];
        Admission {
            sets: [pair(), pair(), pair()],
            current: AtomicUsize::new(0),
            count: AtomicU64::new(0),
            window,
            mask: bits - 1,
            while_room: false,
        }
    }

    /// This doorkeeper, letting every chunk in while the tier has room ([`Admission::room`]).
    pub fn while_room(mut self) -> Self {
        self.while_room = true;
        self
    }

    /// Whether this doorkeeper lets every chunk in while the tier has room.
    pub fn admits_while_room(&self) -> bool {
        self.while_room
    }

    /// Whether a chunk is admitted without a second request: when the doorkeeper lets
    /// chunks in while there is room, and a tier of `capacity` bytes holding `usage` has
    /// room, its first fifteen sixteenths (the rest is slack for the writes on their way;
    /// a burst queued past it evicts the oldest chunks, as any write to a full tier does).
    pub fn room(&self, usage: u64, capacity: u64) -> bool {
        self.while_room && usage < capacity - capacity / 16
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

    fn holds(&self, set: usize, parity: usize, key: &ChunkRef<'_>) -> bool {
        let f = &self.sets[set][parity & 1];
        self.probes(key)
            .all(|(w, b)| f.get(w).is_some_and(|x| x.load(Ordering::Relaxed) & b != 0))
    }

    /// Whether set `set` holds the key in either window.
    fn in_set(&self, set: usize, key: &ChunkRef<'_>) -> bool {
        let cur = self.current.load(Ordering::Acquire);
        self.holds(set, cur, key) || self.holds(set, cur ^ 1, key)
    }

    /// Adds the key to set `set` (in the current window).
    fn add(&self, set: usize, key: &ChunkRef<'_>) {
        let cur = self.current.load(Ordering::Acquire) & 1;
        let f = &self.sets[set][cur];
        for (w, b) in self.probes(key) {
            if let Some(x) = f.get(w) {
                x.fetch_or(b, Ordering::Relaxed);
            }
        }
    }

    /// Whether the chunk was requested within the window, without recording a request.
    pub fn seen(&self, key: &ChunkRef<'_>) -> bool {
        self.in_set(REQUESTED, key)
    }

    /// Records a request for the chunk; `true` if it had been requested within the window
    /// already (admit it to disk), `false` for a first request (keep it off the disk).
    pub fn record(&self, key: &ChunkRef<'_>) -> bool {
        let seen = self.seen(key);
        // Always into the current filter, so a key requested every window stays known.
        self.add(REQUESTED, key);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.window {
            self.rotate();
        }
        seen
    }

    /// The chunk is admitted but its bytes are still on their way: written when its fill
    /// completes.
    pub fn mark_wanted(&self, key: &ChunkRef<'_>) {
        self.add(WANTED, key);
    }

    /// Whether a completed fill of the chunk is to be written (it was admitted meanwhile).
    pub fn wanted(&self, key: &ChunkRef<'_>) -> bool {
        self.in_set(WANTED, key)
    }

    /// The chunk was handed to the disk writer: later requests need not count.
    pub fn mark_written(&self, key: &ChunkRef<'_>) {
        self.add(WRITTEN, key);
    }

    /// Whether the chunk was handed to the disk writer within the window.
    pub fn written(&self, key: &ChunkRef<'_>) -> bool {
        self.in_set(WRITTEN, key)
    }

    /// Clears the older filters and makes them current; exactly one recorder per window
    /// reaches the count that calls this.
    fn rotate(&self) {
        let older = (self.current.load(Ordering::Acquire) & 1) ^ 1;
        for set in &self.sets {
            for x in set[older].iter() {
                x.store(0, Ordering::Relaxed);
            }
        }
        self.current.store(older, Ordering::Release);
        self.count.store(0, Ordering::Release);
    }

    /// Forgets every request.
    pub fn clear(&self) {
        for set in &self.sets {
            for f in set {
                for x in f.iter() {
                    x.store(0, Ordering::Relaxed);
                }
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
    fn wanted_and_written_chunks_are_remembered_for_the_window() {
        let a = Admission::new(100);
        let x = k("x", 0);
        assert!(!a.wanted(&x) && !a.written(&x));
        a.mark_wanted(&x);
        a.mark_written(&k("y", 0));
        assert!(a.wanted(&x) && !a.written(&x));
        assert!(a.written(&k("y", 0)) && !a.wanted(&k("y", 0)));
        for i in 0..250 {
            a.record(&k("noise", i));
        }
        assert!(
            !a.wanted(&x) && !a.written(&k("y", 0)),
            "forgotten with the windows"
        );
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

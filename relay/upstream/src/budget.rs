//! The bound on bytes held for pass-throughs (`origin.pass_buffer_bytes`): a passed-through
//! body stays in memory while its client reads it, and any client can make a GET pass
//! through (with `Authorization`), so this is what bounds their memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A process-wide bound on bytes held for one purpose (passed-through bodies, which stay
/// in memory while their client reads them): reserve before holding, release on drop.
#[derive(Debug)]
pub struct Budget {
    held: AtomicU64,
    limit: u64,
}

/// Bytes reserved from a [`Budget`]; given back when dropped (with the body holding them).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}
impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicU64::new(0),
            limit,
        })
    }

    /// Reserves `bytes`, or None when that would pass the limit.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let next = held.checked_add(bytes).filter(|&n| n <= self.limit)?;
            match self
                .held
                .compare_exchange_weak(held, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => held = now,
            }
        }
    }

    /// Bytes reserved now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The most that may be reserved at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Reservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation by `bytes`, or false (unchanged) past the limit.
    pub fn grow(&mut self, bytes: u64) -> bool {
        match self.budget.reserve(bytes) {
            Some(more) => {
                self.bytes += more.bytes;
                std::mem::forget(more);
                true
            }
            None => false,
        }
    }

    /// Gives back what this reservation holds beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget
                .held
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_cache::ChunkKey;
    use relay_cache::fill::Fill;

    #[test]
    fn a_budget_is_reserved_grown_and_given_back() {
        let b = Budget::new(100);
        let r = b.reserve(60).unwrap();
        assert!(b.reserve(41).is_none());
        let mut s = b.reserve(40).unwrap();
        assert_eq!(b.held(), 100);
        assert!(!s.grow(1));
        drop(r);
        assert!(s.grow(60));
        assert_eq!(b.held(), 100);
        assert!(b.reserve(u64::MAX).is_none());
        // The fill holding a reservation gives it back when its last reader drops it.
        let (fill, w) = Fill::holding(
            ChunkKey {
                object: Arc::from("p"),
                version: 0,
                index: 0,
            },
            4,
            Box::new(s),
        );
        drop(w);
        assert_eq!(b.held(), 100);
        drop(fill);
        assert_eq!(b.held(), 0);
    }
}

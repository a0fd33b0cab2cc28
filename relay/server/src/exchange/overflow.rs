//! Input a connection holds beyond its receive buffer, and the bound a worker puts on all of
//! it together.
//!
//! A connection whose receive buffer is full stops being read (`Reading::Stopping`), but what
//! the kernel delivered before the cancel took effect must be kept: it is the client's
//! requests. How much that is depends on how much the client had queued (a pipelining burst,
//! an unused request body), not on relay. One client's burst is kept up to
//! [`OVERFLOW_LIMIT`]; all connections of a worker together hold at most
//! [`WORKER_OVERFLOW_BYTES`], so a crowd of clients that all send far ahead is cut once the
//! worker's bound is reached instead of each keeping its burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes one connection may hold beyond its receive buffer before it is cut off.
pub const OVERFLOW_LIMIT: usize = 1 << 20;

/// The least an overflow buffer grows by.
const MIN_GROWTH: usize = 16 << 10;

/// Bytes all of a worker's connections together may hold beyond their receive buffers.
pub const WORKER_OVERFLOW_BYTES: usize = 8 << 20;

/// What a worker's connections hold beyond their receive buffers (one per worker; read as a
/// gauge by `/metrics`).
#[derive(Debug)]
pub struct OverflowMeter {
    held: AtomicUsize,
    limit: usize,
}

impl OverflowMeter {
    pub fn new(limit: usize) -> OverflowMeter {
        OverflowMeter {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes of the bound, if they fit.
    fn take(&self, n: usize) -> bool {
        // One worker thread takes and gives; the atomic is for the metrics reader.
        let held = self.held.load(Ordering::Relaxed);
        if held + n > self.limit {
            return false;
        }
        self.held.store(held + n, Ordering::Relaxed);
        true
    }

    fn give(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Default for OverflowMeter {
    fn default() -> Self {
        OverflowMeter::new(WORKER_OVERFLOW_BYTES)
    }
}

/// One connection's input beyond its receive buffer, counted against its worker's meter.
pub struct Overflow {
    bytes: Vec<u8>,
    meter: Arc<OverflowMeter>,
}

impl Overflow {
    pub fn new(meter: Arc<OverflowMeter>) -> Overflow {
        Overflow {
            bytes: Vec::new(),
            meter,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Keeps `data`; false (and nothing kept) when it would take this connection past
    /// [`OVERFLOW_LIMIT`] or its worker past its bound: the client is flooding. The meter
    /// counts the memory held (the buffer's capacity), which grows by doubling.
    pub fn push(&mut self, data: &[u8]) -> bool {
        let needed = self.bytes.len() + data.len();
        if needed > OVERFLOW_LIMIT {
            return false;
        }
        let capacity = self.bytes.capacity();
        if needed > capacity {
            let grown = needed.max(capacity * 2).clamp(MIN_GROWTH, OVERFLOW_LIMIT);
            if !self.meter.take(grown - capacity) {
                return false;
            }
            self.bytes.reserve_exact(grown - self.bytes.len());
            // (The allocator may round up: what it gave beyond is counted too.)
            let extra = self.bytes.capacity() - grown;
            if extra > 0 && !self.meter.take(extra) {
                self.meter.give(grown - capacity);
                self.bytes.shrink_to(capacity);
                return false;
            }
        }
        self.bytes.extend_from_slice(data);
        true
    }

    /// Moves the oldest bytes into `to`; returns how many. Emptied, it frees its memory.
    pub fn take_into(&mut self, to: &mut [u8]) -> usize {
        let n = self.bytes.len().min(to.len());
        to[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes.drain(..n);
        if self.bytes.is_empty() {
            self.clear();
        }
        n
    }

    /// Drops what it holds.
    pub fn clear(&mut self) {
        self.meter.give(self.bytes.capacity());
        self.bytes = Vec::new();
    }

    /// Capacity held (tests).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

impl Drop for Overflow {
    fn drop(&mut self) {
        self.meter.give(self.bytes.capacity());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_bound_is_shared_by_its_connections_and_given_back() {
        let meter = Arc::new(OverflowMeter::new(64 << 10));
        let mut a = Overflow::new(meter.clone());
        let mut b = Overflow::new(meter.clone());
        assert!(a.push(&[1; 6000]));
        assert_eq!(meter.held(), a.capacity(), "the memory held is counted");
        assert!(a.push(&[1; 30_000]), "grows by doubling");
        assert!(a.capacity() >= 36_000);
        assert!(!b.push(&[2; 40_000]), "past the worker's bound");
        assert!(b.is_empty());
        assert!(b.push(&[2; 4000]));
        assert_eq!(meter.held(), a.capacity() + b.capacity());
        let mut to = [0u8; 20_000];
        assert_eq!(a.take_into(&mut to), 20_000);
        assert_eq!(a.take_into(&mut to), 16_000);
        assert_eq!((a.len(), a.capacity()), (0, 0), "emptied, freed");
        assert_eq!(meter.held(), b.capacity());
        b.clear();
        assert_eq!(meter.held(), 0);
        assert!(b.push(&[3; 100]));
        drop(b);
        assert_eq!(meter.held(), 0, "given back on drop");
    }

    #[test]
    fn one_connection_keeps_at_most_its_limit() {
        let meter = Arc::new(OverflowMeter::new(usize::MAX / 2));
        let mut a = Overflow::new(meter);
        assert!(a.push(&vec![0; OVERFLOW_LIMIT]));
        assert!(!a.push(&[0]));
    }
}

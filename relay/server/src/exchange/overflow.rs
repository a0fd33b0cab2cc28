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

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes one connection may hold beyond its receive buffer before it is cut off.
pub const OVERFLOW_LIMIT: usize = 1 << 20;

/// The size of an overflow block.
pub const BLOCK: usize = 16 << 10;

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
        // A load then a store, not one atomic update: only the worker's own thread takes
        // and gives (its exchanges never leave it); the atomic is for the metrics reader.
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

/// Why [`Overflow::push`] kept nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Past [`OVERFLOW_LIMIT`]: this connection is flooding.
    Connection,
    /// Past the worker's bound: room must be made (the worker cuts the connection that has
    /// held input the longest) or this one is cut.
    Worker,
}

/// One connection's input beyond its receive buffer, counted against its worker's meter:
/// in blocks of one size ([`BLOCK`]), so that what a crowd of connections takes and gives
/// back is reused as it is rather than left in the allocator in pieces of every size.
pub struct Overflow {
    blocks: VecDeque<Box<[u8]>>,
    /// Bytes of the first block already taken.
    head: usize,
    /// Bytes in the last block.
    tail: usize,
    meter: Arc<OverflowMeter>,
}

impl Overflow {
    pub fn new(meter: Arc<OverflowMeter>) -> Overflow {
        Overflow {
            blocks: VecDeque::new(),
            head: 0,
            tail: 0,
            meter,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        match self.blocks.len() {
            0 => 0,
            n => (n - 1) * BLOCK + self.tail - self.head,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Keeps `data`, or says why not (nothing is kept then). The meter counts the memory
    /// held: whole blocks.
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), Refused> {
        if self.len() + data.len() > OVERFLOW_LIMIT {
            return Err(Refused::Connection);
        }
        let room = match self.blocks.len() {
            0 => 0,
            _ => BLOCK - self.tail,
        };
        let more = data.len().saturating_sub(room).div_ceil(BLOCK);
        if more > 0 && !self.meter.take(more * BLOCK) {
            return Err(Refused::Worker);
        }
        while !data.is_empty() {
            if self.blocks.is_empty() || self.tail == BLOCK {
                self.blocks.push_back(vec![0u8; BLOCK].into_boxed_slice());
                self.tail = 0;
            }
            let Some(last) = self.blocks.back_mut() else {
                break;
            };
            let n = data.len().min(BLOCK - self.tail);
            last[self.tail..self.tail + n].copy_from_slice(&data[..n]);
            self.tail += n;
            data = &data[n..];
        }
        Ok(())
    }

    /// Moves the oldest bytes into `to`; returns how many. Blocks emptied are freed.
    pub fn take_into(&mut self, to: &mut [u8]) -> usize {
        let mut moved = 0;
        while moved < to.len() {
            let last = self.blocks.len() == 1;
            let Some(first) = self.blocks.front() else {
                break;
            };
            let end = if last { self.tail } else { BLOCK };
            let n = (end - self.head).min(to.len() - moved);
            to[moved..moved + n].copy_from_slice(&first[self.head..self.head + n]);
            moved += n;
            self.head += n;
            if self.head == end {
                self.blocks.pop_front();
                self.meter.give(BLOCK);
                self.head = 0;
                if last {
                    self.tail = 0;
                }
            }
        }
        moved
    }

    /// Drops what it holds.
    pub fn clear(&mut self) {
        self.meter.give(self.blocks.len() * BLOCK);
        self.blocks = VecDeque::new();
        self.head = 0;
        self.tail = 0;
    }

    /// Memory held (tests).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.blocks.len() * BLOCK
    }
}

impl Drop for Overflow {
    fn drop(&mut self) {
        self.meter.give(self.blocks.len() * BLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_bound_is_shared_by_its_connections_and_given_back() {
        let meter = Arc::new(OverflowMeter::new(4 * BLOCK));
        let mut a = Overflow::new(meter.clone());
        let mut b = Overflow::new(meter.clone());
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        assert!(a.push(&data[..6000]).is_ok());
        assert_eq!(
            meter.held(),
            BLOCK,
            "the memory held is counted: whole blocks"
        );
        assert!(a.push(&data[6000..36_000]).is_ok());
        assert_eq!((a.len(), a.capacity()), (36_000, 3 * BLOCK));
        assert_eq!(b.push(&data[..20_000]), Err(Refused::Worker));
        assert!(b.is_empty(), "nothing kept");
        assert!(b.push(&data[..4000]).is_ok());
        assert_eq!(meter.held(), 4 * BLOCK);
        // Taken in order, across blocks, whatever the pieces.
        let mut out = vec![0u8; 36_000];
        assert_eq!(a.take_into(&mut out[..20_000]), 20_000);
        assert_eq!(meter.held(), 3 * BLOCK, "an emptied block goes back");
        assert_eq!(a.take_into(&mut out[20_000..]), 16_000);
        assert_eq!(out, data[..36_000]);
        assert_eq!((a.len(), a.capacity()), (0, 0), "emptied, freed");
        assert!(a.push(&data[..10]).is_ok(), "and used again");
        a.clear();
        assert_eq!(meter.held(), b.capacity());
        b.clear();
        assert_eq!(meter.held(), 0);
        assert!(b.push(&[3; 100]).is_ok());
        drop(b);
        assert_eq!(meter.held(), 0, "given back on drop");
    }

    #[test]
    fn one_connection_keeps_at_most_its_limit() {
        let meter = Arc::new(OverflowMeter::new(usize::MAX / 2));
        let mut a = Overflow::new(meter);
        assert!(a.push(&vec![0; OVERFLOW_LIMIT]).is_ok());
        assert_eq!(a.push(&[0]), Err(Refused::Connection));
    }
}

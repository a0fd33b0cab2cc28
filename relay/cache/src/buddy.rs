//! The arena's block allocator: a binary buddy system over addresses, with each order's
//! free blocks in an ordered set.
//!
//! Written here rather than taken from `buddy_system_allocator`: that crate keeps its free
//! lists inside the free blocks and finds a block's buddy by walking the list of its order,
//! so one free costs a pointer chase per free block of that size — thousands of cache
//! misses over pinned pages, under the arena's lock, once many tails are free. Here a
//! free is a few ordered-set operations per merge level, and the arena's memory is never
//! touched by the allocator.
//!
//! Blocks are powers of two aligned to their size (in absolute addresses), from
//! `1 << min_order` to `1 << max_order` bytes; lower addresses are handed out first, which
//! keeps the upper part of the arena whole for large chunks.

use std::collections::BTreeSet;

/// Free blocks by order (`free[k]` holds the start addresses of free blocks of `1 << k`
/// bytes).
pub struct Buddy {
    free: Vec<BTreeSet<usize>>,
    min_order: u32,
    max_order: u32,
}

impl Buddy {
    /// An allocator over `start..end`, cut into the largest aligned blocks that fit
    /// (bytes that cannot form a block of `1 << min_order` are left out).
    pub fn new(start: usize, end: usize, min_order: u32, max_order: u32) -> Buddy {
        let mut b = Buddy {
            free: (0..=max_order).map(|_| BTreeSet::new()).collect(),
            min_order,
            max_order,
        };
        let mut at = start.next_multiple_of(1 << min_order);
        while at < end {
            let align = if at == 0 {
                max_order
            } else {
                at.trailing_zeros().min(max_order)
            };
            let room = usize::BITS - 1 - (end - at).leading_zeros();
            let order = align.min(room);
            if order < min_order {
                break;
            }
            b.free[order as usize].insert(at);
            at += 1 << order;
        }
        b
    }

    /// The order of a block holding `len` bytes, if one can.
    pub fn order_of(&self, len: usize) -> Option<u32> {
        let order = len
            .max(1)
            .checked_next_power_of_two()?
            .trailing_zeros()
            .max(self.min_order);
        (order <= self.max_order).then_some(order)
    }

    /// A free block of `1 << order` bytes (its start), splitting a larger one if needed.
    pub fn alloc(&mut self, order: u32) -> Option<usize> {
        let from = (order..=self.max_order).find(|&k| !self.free[k as usize].is_empty())?;
        let at = self.free[from as usize].pop_first()?;
        for k in (order..from).rev() {
            self.free[k as usize].insert(at + (1 << k));
        }
        Some(at)
    }

    /// Returns a block from [`Buddy::alloc`] of the same order, merging it with its free
    /// buddies.
    pub fn free(&mut self, mut at: usize, mut order: u32) {
        while order < self.max_order {
            let buddy = at ^ (1 << order);
            if !self.free[order as usize].remove(&buddy) {
                break;
            }
            at = at.min(buddy);
            order += 1;
        }
        self.free[order as usize].insert(at);
    }

    /// A run of `len` bytes (rounded up to the smallest block): the smallest block that
    /// holds it, with the unused tail given back at once as aligned blocks, so a chunk of
    /// 600 KiB takes 608 KiB, not 1 MiB.
    pub fn alloc_run(&mut self, len: usize) -> Option<usize> {
        let len = len.max(1).checked_next_multiple_of(1 << self.min_order)?;
        let at = self.alloc(self.order_of(len)?)?;
        let end = at + len.next_power_of_two();
        self.free_range(at + len, end);
        Some(at)
    }

    /// Returns a run from [`Buddy::alloc_run`] of the same `len`.
    pub fn free_run(&mut self, at: usize, len: usize) {
        let len = len.max(1).next_multiple_of(1 << self.min_order);
        self.free_range(at, at + len);
    }

    /// Frees `from..to` as the largest aligned blocks it splits into (each merges with its
    /// buddy when that is free).
    fn free_range(&mut self, mut from: usize, to: usize) {
        while from < to {
            let room = usize::BITS - 1 - (to - from).leading_zeros();
            let order = from.trailing_zeros().min(room).min(self.max_order);
            self.free(from, order);
            from += 1 << order;
        }
    }

    /// Free bytes.
    #[cfg(test)]
    pub fn free_bytes(&self) -> usize {
        self.free
            .iter()
            .enumerate()
            .map(|(k, set)| set.len() << k)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn splits_and_merges_back_to_whole_blocks() {
        let mut b = Buddy::new(2 * MIB, 6 * MIB, 14, 30);
        assert_eq!(b.free_bytes(), 4 * MIB);
        let o = b.order_of(100_000).unwrap();
        assert_eq!(o, 17);
        let x = b.alloc(o).unwrap();
        assert_eq!(x, 2 * MIB);
        assert_eq!(x % (1 << o), 0);
        let y = b.alloc(o).unwrap();
        assert_eq!(y, x + (1 << o));
        assert_eq!(b.free_bytes(), 4 * MIB - 2 * (1 << o));
        b.free(x, o);
        b.free(y, o);
        assert_eq!(b.free_bytes(), 4 * MIB);
        // Whole again: two 2 MiB blocks (they are not buddies: 2-4 and 4-6 MiB).
        assert!(b.alloc(21).is_some() && b.alloc(21).is_some() && b.alloc(14).is_none());
    }

    #[test]
    fn blocks_never_overlap_and_stay_inside() {
        let (start, end) = (8 * MIB, 8 * MIB + 3 * MIB + 512 * 1024);
        let mut b = Buddy::new(start, end, 14, 30);
        let total = b.free_bytes();
        let mut held: Vec<(usize, u32)> = Vec::new();
        let mut seed = 7u64;
        for step in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if seed >> 63 == 0 || held.is_empty() {
                let order = 14 + ((seed >> 40) % 8) as u32;
                if let Some(at) = b.alloc(order) {
                    assert!(at >= start && at + (1 << order) <= end, "step {step}");
                    assert_eq!(at % (1 << order), 0);
                    for &(h, k) in &held {
                        assert!(at + (1 << order) <= h || h + (1 << k) <= at, "overlap");
                    }
                    held.push((at, order));
                }
            } else {
                let i = (seed >> 20) as usize % held.len();
                let (at, k) = held.swap_remove(i);
                b.free(at, k);
            }
            let used: usize = held.iter().map(|&(_, k)| 1usize << k).sum();
            assert_eq!(b.free_bytes() + used, total);
        }
        for (at, k) in held.drain(..) {
            b.free(at, k);
        }
        assert_eq!(b.free_bytes(), total);
    }

    #[test]
    fn a_run_takes_its_length_and_gives_the_tail_back() {
        let mut b = Buddy::new(0, 2 * MIB, 14, 30);
        let total = b.free_bytes();
        let run = 600 * 1024;
        let at = b.alloc_run(run).unwrap();
        assert_eq!(at, 0);
        assert_eq!(b.free_bytes(), total - 608 * 1024);
        // The tail is usable at once: the rest of the first MiB and the second one.
        let next = b.alloc_run(400 * 1024).unwrap();
        assert!(next >= 608 * 1024);
        b.free_run(next, 400 * 1024);
        b.free_run(at, run);
        assert_eq!(b.free_bytes(), total);
        // Merged back into whole blocks.
        assert_eq!(b.alloc(21), Some(0));
    }

    #[test]
    fn runs_of_any_length_never_overlap_and_merge_back() {
        let mut b = Buddy::new(MIB, 9 * MIB, 14, 30);
        let total = b.free_bytes();
        let mut held: Vec<(usize, usize)> = Vec::new();
        let mut seed = 11u64;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if seed >> 63 == 0 || held.is_empty() {
                let len = 1 + (seed >> 33) as usize % (MIB + MIB / 2);
                if let Some(at) = b.alloc_run(len) {
                    let end = at + len;
                    assert!(at >= MIB && end <= 9 * MIB);
                    for &(h, l) in &held {
                        assert!(end <= h || h + l <= at, "overlap");
                    }
                    held.push((at, len));
                }
            } else {
                let i = (seed >> 20) as usize % held.len();
                let (at, len) = held.swap_remove(i);
                b.free_run(at, len);
            }
            let used: usize = held.iter().map(|&(_, l)| l.next_multiple_of(1 << 14)).sum();
            assert_eq!(b.free_bytes() + used, total);
        }
        for (at, len) in held.drain(..) {
            b.free_run(at, len);
        }
        assert_eq!(b.free_bytes(), total);
        assert_eq!(b.alloc(22), Some(4 * MIB));
    }

    #[test]
    fn sizes_outside_the_orders_are_refused() {
        let b = Buddy::new(0, 4 * MIB, 14, 22);
        assert_eq!(b.order_of(1), Some(14));
        assert_eq!(b.order_of(4 * MIB), Some(22));
        assert_eq!(b.order_of(4 * MIB + 1), None);
        assert_eq!(b.order_of(usize::MAX), None);
    }
}

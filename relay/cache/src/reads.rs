//! One read of a chunk however many readers want it at once: a chunk the caller reads
//! itself (from the disk tier, or from a directory origin's file) is claimed by the first
//! reader, and the others wait on its [`ChunkShare`] for the verified bytes (or for word
//! that there are none, and then read or fetch the chunk themselves). The fills of chunks
//! fetched from an origin coalesce the same way in [`crate::inflight::InFlight`].

use crate::wake::{Wakers, Watchers};
use crate::{ChunkKey, MemoryTier};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A chunk read in flight, as the readers that wait on it see it.
#[derive(Default)]
pub struct ChunkShare {
    result: OnceLock<Option<Bytes>>,
    /// The workers with a reader waiting.
    pub watchers: Watchers,
}

impl ChunkShare {
    /// None while the read is in flight; then its bytes, or None when it ended without
    /// them (a bad or vanished file, or its reader left).
    pub fn result(&self) -> Option<&Option<Bytes>> {
        self.result.get()
    }
}

/// How a reader stands with a chunk it is about to read ([`ChunkReads::claim`]).
pub enum Claim {
    /// Read it, then [`ChunkReads::settle`] the share for the others.
    Mine(Arc<ChunkShare>),
    /// Another reader reads it: wait on this share.
    Theirs(Arc<ChunkShare>),
    /// It was read and stored since the caller looked: take it from memory.
    Stored,
}

/// The chunk reads in flight, by chunk.
#[derive(Default)]
pub struct ChunkReads {
    table: Mutex<HashMap<ChunkKey, Arc<ChunkShare>>>,
}

impl ChunkReads {
    /// Claims the read of `key`, or finds the one in flight, or finds the chunk in `memory`
    /// (a reader stores its bytes before it settles its share, so a claim made after the
    /// share left the table finds them).
    pub fn claim(&self, key: &ChunkKey, memory: &MemoryTier) -> Claim {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(share) = table.get(key) {
            return Claim::Theirs(share.clone());
        }
        if memory.contains(&key.as_ref()) {
            return Claim::Stored;
        }
        let share = Arc::new(ChunkShare::default());
        table.insert(key.clone(), share.clone());
        Claim::Mine(share)
    }

    /// Ends the read of `key` that `share` stands for: its `bytes` (None: the others read or
    /// fetch the chunk themselves) go to the readers waiting on it, which are woken.
    pub fn settle(
        &self,
        key: &ChunkKey,
        share: &ChunkShare,
        bytes: Option<Bytes>,
        wakers: &Wakers,
    ) {
        {
            // Out of the table and settled together: a reader that finds it settled must
            // not find it in the table again (it would spin until it left).
            let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
            table.remove(key);
            let _ = share.result.set(bytes);
        }
        wakers.wake(&share.watchers);
    }

    /// Reads in flight.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(i: u64) -> ChunkKey {
        ChunkKey {
            object: Arc::from("h/o"),
            version: 1,
            index: i,
        }
    }

    #[test]
    fn the_first_reader_claims_the_others_wait_and_are_woken() {
        let reads = ChunkReads::default();
        let memory = MemoryTier::new(1 << 20, 4096);
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let wakers = Wakers::new(move |_| {
            w.fetch_add(1, Ordering::Relaxed);
        });
        let Claim::Mine(mine) = reads.claim(&key(0), &memory) else {
            panic!("the first reader reads it")
        };
        let Claim::Theirs(theirs) = reads.claim(&key(0), &memory) else {
            panic!("a second waits on the first")
        };
        assert!(theirs.result().is_none());
        theirs.watchers.watch(3);
        assert!(
            matches!(reads.claim(&key(1), &memory), Claim::Mine(_)),
            "per chunk"
        );
        memory.insert(key(0), Bytes::from_static(b"chunk"));
        reads.settle(&key(0), &mine, Some(Bytes::from_static(b"chunk")), &wakers);
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        assert!(matches!(theirs.result(), Some(Some(b)) if &b[..] == b"chunk"));
        assert!(
            matches!(reads.claim(&key(0), &memory), Claim::Stored),
            "then it is stored"
        );
        assert_eq!(reads.len(), 1, "only chunk 1's read is left");
    }

    #[test]
    fn a_read_that_ends_without_bytes_lets_the_next_reader_claim_it() {
        let reads = ChunkReads::default();
        let memory = MemoryTier::new(1 << 20, 4096);
        let Claim::Mine(mine) = reads.claim(&key(0), &memory) else {
            panic!()
        };
        reads.settle(&key(0), &mine, None, &Wakers::none());
        assert!(matches!(mine.result(), Some(None)));
        assert!(matches!(reads.claim(&key(0), &memory), Claim::Mine(_)));
    }
}

//! What is in flight, process-wide: the object heads being fetched ([`Pending`]), and the
//! chunks being filled from an origin, so any number of concurrent misses make one upstream
//! fetch.

use crate::arena::Arena;
use crate::fill::{Fill, FillError, FillWriter};
use crate::key::ChunkKey;
use crate::meta::ObjectMeta;
use crate::wake::{Wakers, Watchers};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// How many bytes of later fills a fetch keeps for the clients reading a body only it has
/// ([`Pending::push_fill`]).
pub const KEPT_BYTES: usize = 64 << 20;

/// An object description being fetched (the first response head of a miss); clients wait on
/// it, then find the chunk fills it started in [`InFlight`].
#[derive(Default)]
pub struct Pending {
    result: OnceLock<Result<Arc<ObjectMeta>, FillError>>,
    /// The fill of the object's first chunk, started by the head fetch: waiters read it even
    /// after it left [`InFlight`] (a response that may not be stored is never in memory).
    first: OnceLock<Arc<Fill>>,
    /// The response's fields as the fetching client gets them, when the stored description
    /// leaves some out (`private="Set-Cookie"`: the cookie is that client's).
    owner_headers: OnceLock<Bytes>,
    /// The origin's first `103 Early Hints`, encoded as an interim response for HTTP/1.1
    /// clients waiting on the final one (RFC 8297).
    hints: OnceLock<Bytes>,
    /// For a response that may not be stored (never in the memory tier), the later chunks'
    /// fills of a whole body the origin sent at once: its client reads them from here.
    more: Mutex<Vec<Arc<Fill>>>,
    /// The description came from the disk tier (a restore after a restart), not upstream.
    local: AtomicBool,
    /// The workers with a client waiting.
    pub watchers: Watchers,
}

impl Pending {
    pub fn result(&self) -> Option<&Result<Arc<ObjectMeta>, FillError>> {
        self.result.get()
    }

    /// Marks the description as read from the disk tier (before it is published).
    pub fn mark_local(&self) {
        self.local.store(true, Ordering::Release);
    }

    /// The description was read from the disk tier: its waiters' responses are hits.
    pub fn is_local(&self) -> bool {
        self.local.load(Ordering::Acquire)
    }

    pub fn first(&self) -> Option<&Arc<Fill>> {
        self.first.get()
    }

    /// Keeps a later chunk's fill of a body only this fetch has (one that may not be
    /// stored, or one from one answer), for the clients reading it: the last
    /// [`KEPT_BYTES`] of them (a client further behind its fetch than that is cut rather
    /// than letting an endless answer hold memory without bound).
    pub fn push_fill(&self, fill: Arc<Fill>) {
        let mut more = self.more.lock().unwrap_or_else(|p| p.into_inner());
        more.push(fill);
        let mut held: usize = more.iter().map(|f| f.room()).sum();
        while held > KEPT_BYTES && more.len() > 1 {
            held -= more.remove(0).room();
        }
    }

    /// Every chunk after the first is still kept ([`Pending::push_fill`]).
    pub fn keeps_all(&self) -> bool {
        let more = self.more.lock().unwrap_or_else(|p| p.into_inner());
        more.first().is_none_or(|f| f.key.index == 1)
    }

    /// The fill of chunk `index` kept by [`Pending::push_fill`].
    pub fn fill(&self, index: u64) -> Option<Arc<Fill>> {
        self.more
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|f| f.key.index == index)
            .cloned()
    }

    /// Gives the client that started the fetch its own response fields (before the fetch's
    /// outcome is published).
    pub fn set_owner_headers(&self, headers: Bytes) {
        let _ = self.owner_headers.set(headers);
    }

    /// Keeps the origin's first `103 Early Hints` (an encoded interim response); false when
    /// one was kept already.
    pub fn set_hints(&self, hints: Bytes) -> bool {
        self.hints.set(hints).is_ok()
    }

    /// The origin's `103 Early Hints`, if it sent one before its final answer.
    pub fn hints(&self) -> Option<&Bytes> {
        self.hints.get()
    }

    /// The fields for the client whose request started the fetch, if they differ from the
    /// stored description's.
    pub fn owner_headers(&self) -> Option<&Bytes> {
        self.owner_headers.get()
    }
}

/// What [`InFlight::join_or_start`] found.
pub enum Start {
    /// A new fill: the caller must have it fetched.
    New(FillWriter),
    /// A fill already in flight.
    Joined(Arc<Fill>),
    /// The chunk is stored now.
    Cached,
}

/// What is being fetched now, process-wide: one entry per object head and per chunk, so any
/// number of concurrent misses make one upstream fetch. Locked only on the miss path.
#[derive(Default)]
pub struct InFlight {
    heads: Mutex<HashMap<Arc<str>, Arc<Pending>>>,
    chunks: Mutex<HashMap<ChunkKey, Arc<Fill>>>,
    /// Answers without a length still arriving, by object: a client asking for one joins
    /// its fetch while the fetch still keeps every chunk of it, rather than starting
    /// another (such an answer is described only once it ended). Weak: a fetch's readers
    /// are the references to its `Pending`.
    open: Mutex<HashMap<Arc<str>, Weak<Pending>>>,
    /// Where the fills' bytes go (the memory tier's registered arena), if anywhere.
    arena: Option<Arc<Arena>>,
}

impl InFlight {
    /// A table whose fills take their memory from `arena` when it has room.
    pub fn with_arena(arena: Option<Arc<Arena>>) -> InFlight {
        InFlight {
            arena,
            ..InFlight::default()
        }
    }

    /// The arena fills allocate from.
    pub fn arena(&self) -> Option<&Arc<Arena>> {
        self.arena.as_ref()
    }

    /// An answer without a length to `object` is arriving through `pending`'s fetch.
    pub fn open_answer(&self, object: Arc<str>, pending: &Arc<Pending>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(object, Arc::downgrade(pending));
    }

    /// That answer ended (whole, cut or left): no one joins it any more.
    pub fn close_answer(&self, object: &str, pending: &Arc<Pending>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open
            .get(object)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(pending)))
        {
            open.remove(object);
        }
    }

    /// The fetch of an answer without a length to `object` still arriving, if it still
    /// keeps every chunk of it (a client joining reads it from the start).
    pub fn join_open(&self, object: &str) -> Option<Arc<Pending>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(object)
            .and_then(Weak::upgrade)
            .filter(|p| p.keeps_all())
    }

    /// The pending head fetch of `object`, and whether the caller created it (and so must
    /// start the fetch).
    pub fn head(&self, object: &str) -> (Arc<Pending>, bool) {
        self.head_unless(object, || false)
            .unwrap_or_else(|| (Arc::new(Pending::default()), false))
    }

    /// Like [`InFlight::head`], but None when `cached()` (asked under the lock) says the
    /// description is stored now: a head fetch publishes before it leaves the table.
    pub fn head_unless(
        &self,
        object: &str,
        cached: impl FnOnce() -> bool,
    ) -> Option<(Arc<Pending>, bool)> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = heads.get(object) {
            return Some((p.clone(), false));
        }
        if cached() {
            return None;
        }
        let p = Arc::new(Pending::default());
        heads.insert(Arc::from(object), p.clone());
        Some((p, true))
    }

    /// The pending head fetch of `object`, if one is in flight.
    pub fn pending(&self, object: &str) -> Option<Arc<Pending>> {
        self.heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(object)
            .cloned()
    }

    /// Publishes a head fetch's outcome, forgets it, and wakes its watchers.
    pub fn finish_head(
        &self,
        object: &str,
        result: Result<Arc<ObjectMeta>, FillError>,
        first: Option<Arc<Fill>>,
        wakers: &Wakers,
    ) {
        let p = self
            .heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(object);
        if let Some(p) = p {
            if let Some(f) = first {
                let _ = p.first.set(f);
            }
            let _ = p.result.set(result);
            wakers.wake(&p.watchers);
        }
    }

    /// The fill of a chunk in flight.
    pub fn chunk(&self, key: &ChunkKey) -> Option<Arc<Fill>> {
        self.chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Starts a fill of `len` bytes, or returns the one already in flight.
    pub fn start_chunk(&self, key: ChunkKey, len: usize) -> Result<FillWriter, Arc<Fill>> {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = chunks.get(&key) {
            return Err(f.clone());
        }
        let (fill, writer) = Fill::new_in(key.clone(), len, self.arena.as_ref());
        chunks.insert(key, fill);
        Ok(writer)
    }

    /// Like [`InFlight::start_chunk`], but first asks `cached` under the lock: a fill
    /// stores its chunk before it leaves the table, so a caller that missed the memory tier
    /// just before the store finds it here instead of starting a second fetch.
    pub fn join_or_start(
        &self,
        key: ChunkKey,
        len: usize,
        cached: impl FnOnce(&ChunkKey) -> bool,
    ) -> Start {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = chunks.get(&key) {
            return Start::Joined(f.clone());
        }
        if cached(&key) {
            return Start::Cached;
        }
        let (fill, writer) = Fill::new_in(key.clone(), len, self.arena.as_ref());
        chunks.insert(key, fill);
        Start::New(writer)
    }

    /// Forgets a finished or failed fill (readers holding it keep it alive), if it is the
    /// one in the table under its key (one already replaced stays).
    pub fn end_fill(&self, fill: &Arc<Fill>) {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.get(&fill.key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            chunks.remove(&fill.key);
        }
    }

    /// Fills and head fetches in flight now.
    pub fn len(&self) -> (usize, usize) {
        let h = self.heads.lock().map(|h| h.len()).unwrap_or(0);
        let c = self.chunks.lock().map(|c| c.len()).unwrap_or(0);
        (h, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChunkKey {
        ChunkKey {
            object: Arc::from("o"),
            version: 1,
            index: 0,
        }
    }

    #[test]
    fn in_flight_coalesces() {
        let f = InFlight::default();
        let (a, new_a) = f.head("o");
        let (b, new_b) = f.head("o");
        assert!(new_a && !new_b && Arc::ptr_eq(&a, &b));
        b.watchers.watch(1);
        let woken = Arc::new(Mutex::new(Vec::new()));
        let w = woken.clone();
        let wakers = Wakers::new(move |n| w.lock().unwrap().push(n));
        f.finish_head("o", Err(FillError::Connect), None, &wakers);
        assert_eq!(*woken.lock().unwrap(), [1]);
        // Finished and forgotten: finishing again wakes nobody.
        f.finish_head("o", Err(FillError::Connect), None, &wakers);
        assert_eq!(*woken.lock().unwrap(), [1]);
        assert_eq!(a.result(), Some(&Err(FillError::Connect)));
        let w = f.start_chunk(key(), 3).ok().unwrap();
        let other = f.start_chunk(key(), 3).err().unwrap();
        assert!(Arc::ptr_eq(w.fill(), &other));
        f.end_fill(w.fill());
        assert!(f.chunk(&key()).is_none());
        // Ending a fill that is not the one in the table leaves the table as it is.
        let shared = f.start_chunk(key(), 3).ok().unwrap();
        let (other, _w) = Fill::new(key(), 3);
        f.end_fill(&other);
        assert!(Arc::ptr_eq(&f.chunk(&key()).unwrap(), shared.fill()));
        f.end_fill(shared.fill());
        assert!(f.chunk(&key()).is_none());
    }
}

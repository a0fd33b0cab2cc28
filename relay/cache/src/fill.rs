//! A chunk being filled from upstream while clients read it: one writer appends, any number
//! of readers (on any worker) send the bytes already published, so waiting clients stream
//! the chunk as it arrives instead of polling for the whole of it.
//!
//! The rule, stated once: bytes below [`Fill::available`] are written once and never again;
//! the writer only writes above it, then publishes the new length with `Release`; readers
//! load it with `Acquire` and read only below it. A reader's slice keeps the fill alive
//! through an `Arc`, so memory a send is reading is never freed under it.

use crate::arena::{Arena, ChunkBuf};
use crate::key::ChunkKey;
use crate::meta::ObjectMeta;
use crate::wake::{Wakers, Watchers};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Why a fill ended without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("upstream could not be reached (connect refused or timed out)")]
    Connect,
    #[error("upstream connection reset or closed before a response head")]
    Closed,
    #[error("upstream timed out after {ms} ms ({wait})")]
    Timeout { wait: Wait, ms: u32 },
    #[error("upstream answer is not HTTP")]
    Malformed,
    #[error("upstream body ended early or was malformed")]
    Truncated,
    #[error("the object changed upstream between chunks")]
    Changed,
    #[error(
        "upstream answer's framing is invalid (both Transfer-Encoding and Content-Length, or a malformed one)"
    )]
    Framing,
    #[error("upstream is marked down")]
    Down,
    #[error("too many passed-through bytes held already")]
    Busy,
}

impl FillError {
    /// The status a client gets when no byte of its response was sent yet.
    pub fn status(self) -> u16 {
        match self {
            FillError::Status(s) if (400..500).contains(&s) => s,
            FillError::Timeout { .. } => 504,
            FillError::Busy => 503,
            _ => 502,
        }
    }
}

impl FillError {
    /// A timeout of `ms` milliseconds waiting for `wait`.
    pub fn timeout(wait: Wait, ms: u64) -> FillError {
        FillError::Timeout {
            wait,
            ms: u32::try_from(ms).unwrap_or(u32::MAX),
        }
    }

    /// A short name of the reason (a metric label).
    pub fn reason(self) -> &'static str {
        match self {
            FillError::Status(_) => "status",
            FillError::Connect => "connect",
            FillError::Closed => "closed",
            FillError::Timeout {
                wait: Wait::FirstByte,
                ..
            } => "first_byte_timeout",
            FillError::Timeout {
                wait: Wait::Idle, ..
            } => "idle_timeout",
            FillError::Malformed => "malformed",
            FillError::Truncated => "truncated",
            FillError::Changed => "changed",
            FillError::Framing => "framing",
            FillError::Down => "down",
            FillError::Busy => "pass_budget",
        }
    }
}

/// What a timed-out fetch was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The response head (`first_byte_timeout_ms`).
    FirstByte,
    /// The next body bytes (`idle_timeout_ms`).
    Idle,
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wait::FirstByte => "first byte",
            Wait::Idle => "idle",
        })
    }
}

const FILLING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// The shared side of a chunk being filled.
pub struct Fill {
    pub key: ChunkKey,
    /// Registered arena memory for large chunks (see `arena`), else heap.
    buf: ChunkBuf,
    filled: AtomicUsize,
    state: AtomicU8,
    error: OnceLock<FillError>,
    /// The object's description, once the first response head told it.
    meta: OnceLock<Arc<ObjectMeta>>,
    /// The workers with a client waiting on this fill.
    pub watchers: Watchers,
    /// Kept as long as the fill (a pass-through budget's reservation for its bytes, given
    /// back when the last reader drops it).
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

// SAFETY: the bytes are shared under the rule in the module docs: one writer (`FillWriter`,
// not Clone) writes only above `filled`; readers read only below it, after an Acquire load
// that pairs with the writer's Release store.
unsafe impl Sync for Fill {}
// SAFETY: the fill owns its buffer; nothing in it is tied to a thread.
unsafe impl Send for Fill {}

/// The only handle that writes a fill.
pub struct FillWriter {
    fill: Arc<Fill>,
}

impl Fill {
    /// A fill of `len` bytes (the chunk's length) and its writer.
    pub fn new(key: ChunkKey, len: usize) -> (Arc<Fill>, FillWriter) {
        Fill::new_in(key, len, None)
    }

    /// A fill whose bytes live in `arena` when it has room (and the chunk is large enough).
    pub fn new_in(
        key: ChunkKey,
        len: usize,
        arena: Option<&Arc<Arena>>,
    ) -> (Arc<Fill>, FillWriter) {
        Fill::build(key, len, arena, None)
    }

    /// A heap fill that keeps `held` until its last reader drops it (a budget's
    /// reservation for the fill's memory).
    pub fn holding(
        key: ChunkKey,
        len: usize,
        held: Box<dyn std::any::Any + Send + Sync>,
    ) -> (Arc<Fill>, FillWriter) {
        Fill::build(key, len, None, Some(held))
    }

    fn build(
        key: ChunkKey,
        len: usize,
        arena: Option<&Arc<Arena>>,
        held: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> (Arc<Fill>, FillWriter) {
        let fill = Arc::new(Fill {
            key,
            _held: held,
            buf: ChunkBuf::alloc(len, arena),
            filled: AtomicUsize::new(0),
            state: AtomicU8::new(FILLING),
            error: OnceLock::new(),
            meta: OnceLock::new(),
            watchers: Watchers::default(),
        });
        let writer = FillWriter { fill: fill.clone() };
        (fill, writer)
    }

    /// The chunk's length: its room while it fills; once done, what was written (less than
    /// the room only for a fill ended short, [`FillWriter::complete_short`]: the last chunk
    /// of a body whose length was not known ahead).
    pub fn len(&self) -> usize {
        match self.state.load(Ordering::Acquire) {
            DONE => self.filled.load(Ordering::Acquire),
            _ => self.buf.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The room the fill was made with (a chunk's size for a body of unknown length).
    pub fn room(&self) -> usize {
        self.buf.len()
    }

    /// Bytes published so far.
    pub fn available(&self) -> usize {
        self.filled.load(Ordering::Acquire)
    }

    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// The error, once the fill failed.
    pub fn error(&self) -> Option<FillError> {
        (self.state.load(Ordering::Acquire) == FAILED)
            .then(|| self.error.get().copied().unwrap_or(FillError::Truncated))
    }

    pub fn meta(&self) -> Option<&Arc<ObjectMeta>> {
        self.meta.get()
    }

    /// Published bytes `from..to` (clamped to what is published), kept alive by `self`.
    pub fn slice(self: &Arc<Self>, from: usize, to: usize) -> Bytes {
        let to = to.min(self.available());
        if from >= to {
            return Bytes::new();
        }
        Bytes::from_owner(Published {
            fill: self.clone(),
            from,
            to,
        })
    }

    /// The whole chunk as `Bytes` once done (no copy: the bytes stay where they were
    /// filled).
    pub fn bytes(self: &Arc<Self>) -> Option<Bytes> {
        self.is_done().then(|| self.slice(0, self.len()))
    }
}

/// A published range of a fill: the owner behind a `Bytes`.
struct Published {
    fill: Arc<Fill>,
    from: usize,
    to: usize,
}

impl AsRef<[u8]> for Published {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `from <= to <= available <= len` was checked at creation; bytes below
        // `available` are never written again (module rule).
        unsafe {
            std::slice::from_raw_parts(self.fill.buf.as_ptr().add(self.from), self.to - self.from)
        }
    }
}

impl FillWriter {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// Publishes the object's description (first response head).
    pub fn set_meta(&self, meta: Arc<ObjectMeta>) {
        let _ = self.fill.meta.set(meta);
    }

    /// Room left to fill.
    pub fn remaining(&self) -> usize {
        self.fill.room() - self.fill.filled.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.fill.filled.load(Ordering::Relaxed)
    }

    /// Appends bytes; more than the room left is an error (the upstream sent too much).
    pub fn append(&mut self, data: &[u8]) -> Result<(), FillError> {
        let at = self.fill.filled.load(Ordering::Relaxed);
        if data.len() > self.fill.room() - at {
            return Err(FillError::Truncated);
        }
        // SAFETY: only this writer (unique: not Clone, taken by &mut) writes, and only above
        // `filled` (`at + data.len() <= len` checked above), which no reader reads yet.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.fill.buf.as_ptr().add(at),
                data.len(),
            );
        }
        self.fill.filled.store(at + data.len(), Ordering::Release);
        Ok(())
    }

    /// Appends the last bytes and completes the fill. `store` receives the whole chunk
    /// *before* readers can see the last bytes, so a client that has read the whole chunk
    /// finds it in the memory tier on its next request. Too few or too many bytes fail.
    pub fn complete_with(
        self,
        last: &[u8],
        store: impl FnOnce(Bytes),
    ) -> Result<Arc<Fill>, FillError> {
        let at = self.fill.filled.load(Ordering::Relaxed);
        let len = self.fill.room();
        if last.len() != len - at {
            self.fail(FillError::Truncated);
            return Err(FillError::Truncated);
        }
        // SAFETY: as in `append`: the unique writer writes above `filled` only, and
        // `at + last.len() == len` was checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(
                last.as_ptr(),
                self.fill.buf.as_ptr().add(at),
                last.len(),
            );
        }
        // Every byte is written (by this thread); the Bytes reads them only after `store`
        // hands it on through a synchronising structure (the memory tier's lock).
        store(Bytes::from_owner(Published {
            fill: self.fill.clone(),
            from: 0,
            to: len,
        }));
        self.fill.filled.store(len, Ordering::Release);
        self.fill.state.store(DONE, Ordering::Release);
        Ok(self.fill.clone())
    }

    /// Completes the fill with what it holds, short of its room: the last chunk of a body
    /// whose length was not known ahead (a chunked or close-delimited answer). `store`
    /// receives the bytes (when there are any) before readers can see the fill done; a
    /// reader then finds its length ([`Fill::len`]) to be where the body ends.
    pub fn complete_short(self, store: impl FnOnce(Bytes)) -> Arc<Fill> {
        let len = self.fill.filled.load(Ordering::Relaxed);
        if len > 0 {
            store(Bytes::from_owner(Published {
                fill: self.fill.clone(),
                from: 0,
                to: len,
            }));
        }
        self.fill.state.store(DONE, Ordering::Release);
        self.fill.clone()
    }

    /// Marks the fill complete; an incomplete fill is a failure (never a short chunk).
    pub fn finish(self) -> Result<Arc<Fill>, FillError> {
        if self.remaining() != 0 {
            self.fail(FillError::Truncated);
            return Err(FillError::Truncated);
        }
        self.fill.state.store(DONE, Ordering::Release);
        Ok(self.fill.clone())
    }

    /// Marks the fill failed: readers stop at what they have and cut their clients.
    pub fn fail(&self, e: FillError) {
        let _ = self.fill.error.set(e);
        self.fill.state.store(FAILED, Ordering::Release);
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        // A writer dropped without finishing (a task cancelled) must not leave readers
        // waiting for bytes that never come.
        if self.fill.state.load(Ordering::Acquire) == FILLING {
            self.fail(FillError::Truncated);
        }
    }
}

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
    local: std::sync::atomic::AtomicBool,
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

    #[test]
    fn a_fill_keeps_what_it_holds_until_its_last_reader_drops_it() {
        let held = Arc::new(());
        let (fill, w) = Fill::holding(key(), 4, Box::new(held.clone()));
        let reader = fill.clone();
        drop(w);
        drop(fill);
        assert_eq!(Arc::strong_count(&held), 2, "a reader still holds the fill");
        drop(reader);
        assert_eq!(Arc::strong_count(&held), 1);
    }

    fn key() -> ChunkKey {
        ChunkKey {
            object: Arc::from("o"),
            version: 1,
            index: 0,
        }
    }

    #[test]
    fn readers_see_published_bytes_only() {
        let (fill, mut w) = Fill::new(key(), 10);
        assert_eq!(fill.available(), 0);
        w.append(b"hello").unwrap();
        let s = fill.slice(0, 10);
        assert_eq!(&s[..], b"hello");
        assert!(fill.bytes().is_none());
        assert_eq!(w.append(b"world!"), Err(FillError::Truncated));
        w.append(b"world").unwrap();
        let f = w.finish().unwrap();
        assert_eq!(&f.bytes().unwrap()[..], b"helloworld");
        // Slices outlive everything else.
        drop(f);
        drop(fill);
        assert_eq!(&s[..], b"hello");
    }

    #[test]
    fn complete_with_stores_before_publishing() {
        let (fill, mut w) = Fill::new(key(), 6);
        w.append(b"abc").unwrap();
        let seen = std::cell::Cell::new(0);
        let f = w
            .complete_with(b"def", |b| {
                assert_eq!(&b[..], b"abcdef");
                seen.set(fill.available());
            })
            .unwrap();
        assert_eq!(seen.get(), 3, "readers saw the last bytes before the store");
        assert_eq!(&f.bytes().unwrap()[..], b"abcdef");
        let (_, w) = Fill::new(key(), 6);
        assert!(
            w.complete_with(b"ab", |_| panic!("stored a short chunk"))
                .is_err()
        );
    }

    #[test]
    fn short_or_abandoned_fills_fail() {
        let (fill, mut w) = Fill::new(key(), 10);
        w.append(b"abc").unwrap();
        assert_eq!(w.finish().err(), Some(FillError::Truncated));
        assert_eq!(fill.error(), Some(FillError::Truncated));
        let (fill, w) = Fill::new(key(), 4);
        drop(w);
        assert_eq!(fill.error(), Some(FillError::Truncated));
        let (fill, w) = Fill::new(key(), 4);
        w.fail(FillError::timeout(Wait::Idle, 10));
        assert_eq!(fill.error().map(FillError::status), Some(504));
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

    #[test]
    fn concurrent_reader_sees_a_prefix() {
        let (fill, mut w) = Fill::new(key(), 1 << 20);
        let reader = {
            let fill = fill.clone();
            std::thread::spawn(move || {
                let mut seen = 0;
                for _ in 0..10_000_000 {
                    let n = fill.available();
                    let s = fill.slice(0, n);
                    assert!(s.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                    seen = n;
                    if fill.is_done() {
                        break;
                    }
                }
                seen
            })
        };
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for part in data.chunks(4096) {
            w.append(part).unwrap();
        }
        w.finish().unwrap();
        assert!(reader.join().unwrap() <= 1 << 20);
    }
}

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
use crate::wake::Watchers;
use bytes::Bytes;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Why a fill ended without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("upstream could not be reached (connect refused or timed out)")]
    Connect,
    #[error(
        "upstream TLS handshake failed (a certificate not trusted or not valid for the name, \
         or no protocol in common)"
    )]
    Tls,
    #[error("upstream connection reset or closed before a response head")]
    Closed,
    #[error("upstream timed out after {ms} ms ({wait})")]
    Timeout { wait: Wait, ms: u32 },
    #[error("upstream answer is not HTTP")]
    Malformed,
    #[error("upstream body ended early or was malformed")]
    Truncated,
    #[error("upstream answer ended before the bytes asked for (a range shorter than asked)")]
    Short,
    #[error("the object changed upstream between chunks")]
    Changed,
    #[error(
        "upstream answer's framing is invalid or not what was asked (both Transfer-Encoding \
         and Content-Length, a malformed length, a transfer coding relay cannot undo, or a \
         206 whose Content-Range is not the range asked for)"
    )]
    Framing,
    #[error("upstream is marked down")]
    Down,
    #[error("too many passed-through bytes held already")]
    Busy,
    #[error("the client holds its share of the passed-through bytes already")]
    Share,
    #[error("a relay's chunk does not match the checksum it sent with it")]
    Corrupt,
}

impl FillError {
    /// The status a client gets when no byte of its response was sent yet.
    pub fn status(self) -> u16 {
        match self {
            FillError::Status(s) if (400..500).contains(&s) => s,
            FillError::Timeout { .. } => 504,
            FillError::Busy | FillError::Share => 503,
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
            FillError::Tls => "tls",
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
            FillError::Short => "short",
            FillError::Changed => "changed",
            FillError::Framing => "framing",
            FillError::Down => "down",
            FillError::Corrupt => "corrupt",
            FillError::Busy => "pass_budget",
            FillError::Share => "pass_share",
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
    /// The disk tiers' removals when the fill started, or before when its answer was asked
    /// for before ([`Fill::lower_since`]; [`crate::disk::removals`]): a removal since that
    /// names its object keeps the chunk off the disk (`DiskTier::commit_write`).
    since: std::sync::atomic::AtomicU64,
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
    /// The XXH3 of the bytes written so far, when asked for ([`FillWriter::sum_as_written`]):
    /// each piece is summed as it is copied in, while it is still in the CPU's cache, so a
    /// chunk bound for the disk tier is not read back from memory to be checksummed.
    sum: Option<Box<xxhash_rust::xxh3::Xxh3>>,
}

impl Fill {
    /// A fill of `len` bytes (the chunk's length) and its writer.
    pub fn new(key: ChunkKey, len: usize) -> (Arc<Fill>, FillWriter) {
        Fill::build(key, ChunkBuf::on_heap(len), None)
    }

    /// A fill whose bytes live in `arena` when it has room (and the chunk is large enough),
    /// else on the heap within the arena's cap on such chunks; None past that cap
    /// ([`ChunkBuf::alloc`]).
    pub fn new_in(
        key: ChunkKey,
        len: usize,
        arena: Option<&Arc<Arena>>,
    ) -> Option<(Arc<Fill>, FillWriter)> {
        Some(Fill::build(key, ChunkBuf::alloc(len, arena)?, None))
    }

    /// A heap fill that keeps `held` until its last reader drops it (a budget's
    /// reservation for the fill's memory).
    pub fn holding(
        key: ChunkKey,
        len: usize,
        held: Box<dyn std::any::Any + Send + Sync>,
    ) -> (Arc<Fill>, FillWriter) {
        Fill::build(key, ChunkBuf::on_heap(len), Some(held))
    }

    fn build(
        key: ChunkKey,
        buf: ChunkBuf,
        held: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> (Arc<Fill>, FillWriter) {
        let fill = Arc::new(Fill {
            key,
            _held: held,
            buf,
            filled: AtomicUsize::new(0),
            state: AtomicU8::new(FILLING),
            error: OnceLock::new(),
            meta: OnceLock::new(),
            watchers: Watchers::default(),
            since: std::sync::atomic::AtomicU64::new(crate::disk::removals()),
        });
        let writer = FillWriter {
            fill: fill.clone(),
            sum: None,
        };
        (fill, writer)
    }

    /// The disk tiers' removals when the fill's bytes were asked for ([`Fill`]'s `since`).
    pub fn since(&self) -> u64 {
        self.since.load(Ordering::Acquire)
    }

    /// The fill's bytes are part of an answer asked for when the removals were `at` (a
    /// whole body's later chunks, whose fills start as the answer reaches them).
    pub fn lower_since(&self, at: u64) {
        self.since.fetch_min(at, Ordering::AcqRel);
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

    /// Sums the bytes as they are written from now on ([`FillWriter::sum_with`]); only
    /// before the first byte.
    pub fn sum_as_written(&mut self) {
        if self.written() == 0 {
            self.sum = Some(Box::new(xxhash_rust::xxh3::Xxh3::new()));
        }
    }

    /// The XXH3-64 of every byte written and then `last` (the disk tier's checksum of the
    /// chunk, when `last` completes it), if the bytes were summed as written; once.
    pub fn sum_with(&mut self, last: &[u8]) -> Option<u64> {
        let mut sum = self.sum.take()?;
        sum.update(last);
        Some(sum.digest())
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
        if let Some(sum) = self.sum.as_mut() {
            sum.update(data);
        }
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
    fn a_fill_summed_as_written_has_the_chunks_checksum() {
        let chunk: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let (_, mut w) = Fill::new(key(), chunk.len());
        w.sum_as_written();
        for piece in chunk[..290_000].chunks(7_000) {
            w.append(piece).unwrap();
        }
        assert_eq!(
            w.sum_with(&chunk[290_000..]),
            Some(crate::disk::checksum(&chunk))
        );
        assert_eq!(w.sum_with(b""), None, "taken once");
        // Asked for after a byte was written: not summed (it would miss that byte).
        let (_, mut w) = Fill::new(key(), 4);
        w.append(b"a").unwrap();
        w.sum_as_written();
        w.append(b"bc").unwrap();
        assert_eq!(w.sum_with(b"d"), None);
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

//! A passed-through body streamed through a bounded window: the upstream writes what the
//! window has room for, the worker sends it and releases what was sent, and the upstream
//! waits while its client is a window behind. However long the body, it holds one window
//! of memory (reserved from the pass-through [`Budget`](crate::budget::Budget)).
//!
//! The rule, stated once: byte `p` of the body lives at `ring[p % cap]`. The writer writes
//! only positions in `[written, released + cap)`, then publishes `written` with `Release`;
//! the reader loads it with `Acquire` and reads only `[released, written)`, and moves
//! `released` forward only past bytes no send reads any more. So no byte is overwritten
//! while a send may still read it, and none is read before it is written. A reader's slice
//! keeps the stream alive through an `Arc`.

use crate::budget::Reservation;
use atomic_waker::AtomicWaker;
use bytes::Bytes;
use relay_cache::wake::Watchers;
use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

const OPEN: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// `Stream::reader` states: no reader yet, one reading, the reader gone.
const UNREAD: u8 = 0;
const READING: u8 = 1;
const GONE: u8 = 2;

/// A stream's `len` when the body's length is not known ahead (`Stream::unsized_body`).
const UNSIZED: u64 = u64::MAX;

/// The shared side of a streamed body (one writer, one reader).
pub struct Stream {
    /// The body's length, or [`UNSIZED`]: then its end is where the writer finished.
    len: u64,
    ring: Box<[UnsafeCell<u8>]>,
    written: AtomicU64,
    released: AtomicU64,
    state: AtomicU8,
    reader: AtomicU8,
    /// The writer, waiting for room.
    room: AtomicWaker,
    /// The worker with its client waiting on this stream.
    pub watchers: Watchers,
    _reserved: Option<Reservation>,
}

// SAFETY: the ring is shared under the rule in the module docs: the one writer
// (`StreamWriter`, not Clone) writes only where the reader does not read, and publishes with
// Release what the reader loads with Acquire.
unsafe impl Sync for Stream {}
// SAFETY: the stream owns its ring; nothing in it is tied to a thread.
unsafe impl Send for Stream {}

/// The only handle that writes a stream. Dropped without `finish`, the stream fails: its
/// reader's client sees a cut connection, never a short body as whole.
pub struct StreamWriter {
    stream: Arc<Stream>,
}

impl Stream {
    /// A stream of a `len`-byte body through a window of `window` bytes (at most `len`,
    /// at least 1), holding `reserved` from the pass-through budget while it lives.
    pub fn new(
        len: u64,
        window: usize,
        reserved: Option<Reservation>,
    ) -> (Arc<Stream>, StreamWriter) {
        let cap = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .clamp(1, window.max(1));
        let stream = Arc::new(Stream {
            len,
            ring: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
            written: AtomicU64::new(0),
            released: AtomicU64::new(0),
            state: AtomicU8::new(if len == 0 { DONE } else { OPEN }),
            reader: AtomicU8::new(UNREAD),
            room: AtomicWaker::new(),
            watchers: Watchers::default(),
            _reserved: reserved,
        });
        (stream.clone(), StreamWriter { stream })
    }

    /// A stream of a body whose length is not known ahead (chunked, or delimited by the
    /// connection's close): it ends where its writer finishes ([`StreamWriter::finish`]).
    pub fn unsized_body(
        window: usize,
        reserved: Option<Reservation>,
    ) -> (Arc<Stream>, StreamWriter) {
        Stream::new(UNSIZED, window, reserved)
    }

    /// The body's length, when known ahead.
    pub fn len(&self) -> Option<u64> {
        (self.len != UNSIZED).then_some(self.len)
    }

    /// The body's length once known: ahead, or once its writer finished.
    pub fn end(&self) -> Option<u64> {
        match self.len {
            UNSIZED => self.is_done().then(|| self.written.load(Ordering::Acquire)),
            len => Some(len),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory the window takes.
    pub fn window(&self) -> usize {
        self.ring.len()
    }

    /// The written bytes from `pos` on that lie contiguously in the ring (empty when none
    /// are written yet). `pos` must not be below what was released.
    pub fn readable(self: &Arc<Self>, pos: u64) -> Bytes {
        let written = self.written.load(Ordering::Acquire);
        if pos >= written || pos < self.released.load(Ordering::Acquire) {
            return Bytes::new();
        }
        let cap = self.ring.len() as u64;
        let off = (pos % cap) as usize;
        let n = (written - pos).min(cap - off as u64) as usize;
        Bytes::from_owner(Window {
            stream: self.clone(),
            off,
            len: n,
        })
    }

    /// Everything before `upto` has been sent and no send reads it any more: the writer
    /// may reuse its room.
    pub fn release(&self, upto: u64) {
        let upto = upto.min(self.written.load(Ordering::Acquire));
        if self.released.fetch_max(upto, Ordering::AcqRel) < upto {
            self.room.wake();
        }
    }

    /// The reader's handle: while it lives the writer goes on; dropped (its client done or
    /// gone), the writer stops at its next wait for room.
    pub fn attach(self: &Arc<Self>) -> StreamReader {
        self.reader.store(READING, Ordering::Release);
        StreamReader(self.clone())
    }

    /// Every byte was written.
    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// The writer gave up (the upstream body ended early or failed).
    pub fn failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    fn room_from(&self, written: u64) -> usize {
        let released = self.released.load(Ordering::Acquire);
        (released + self.ring.len() as u64 - written) as usize
    }
}

/// The one reader of a stream (see [`Stream::attach`]).
pub struct StreamReader(Arc<Stream>);

impl StreamReader {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.0
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.0.reader.store(GONE, Ordering::Release);
        self.0.room.wake();
    }
}

/// A reader's slice of the ring (the owner of a `Bytes`).
struct Window {
    stream: Arc<Stream>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        let cell = &self.stream.ring[self.off..self.off + self.len];
        // SAFETY: these positions are in [released, written) when the slice was made and
        // stay so while it lives (the reader releases only bytes its sends are done with),
        // so the writer does not touch them (module rule). UnsafeCell<u8> has u8's layout.
        unsafe { std::slice::from_raw_parts(cell.as_ptr().cast::<u8>(), self.len) }
    }
}

impl StreamWriter {
    /// The body of unknown length ended whole: its end is what was written. (A body of a
    /// known length is done with its last byte; one short of it fails, as on drop.)
    pub fn finish(self) {
        if self.stream.len == UNSIZED {
            self.stream.state.store(DONE, Ordering::Release);
        }
    }

    /// Bytes still to be written (of a body of unknown length: as good as unbounded).
    pub fn remaining(&self) -> u64 {
        self.stream.len - self.stream.written.load(Ordering::Relaxed)
    }

    /// Copies as much of `data` as the window has room for (and the body still needs) and
    /// publishes it; returns how much. 0 when the window is full.
    pub fn write_some(&mut self, data: &[u8]) -> usize {
        let s = &self.stream;
        let written = s.written.load(Ordering::Relaxed);
        let want = (data.len() as u64).min(s.len - written) as usize;
        let n = want.min(s.room_from(written));
        let cap = s.ring.len();
        let mut done = 0;
        while done < n {
            let off = ((written + done as u64) % cap as u64) as usize;
            let part = (n - done).min(cap - off);
            let cells = &s.ring[off..off + part];
            // SAFETY: positions written..written+n lie in [written, released + cap): the
            // reader does not read them (module rule); the cells are ours to write.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data[done..].as_ptr(),
                    UnsafeCell::raw_get(cells.as_ptr()),
                    part,
                );
            }
            done += part;
        }
        if n > 0 {
            s.written.store(written + n as u64, Ordering::Release);
            if written + n as u64 == s.len {
                s.state.store(DONE, Ordering::Release);
            }
        }
        n
    }

    /// Ready when the window has room (or the body is complete); registers the writer's
    /// waker otherwise. For the upstream's async loop: `poll_fn(|cx| w.poll_room(cx))`.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let s = &self.stream;
        let written = s.written.load(Ordering::Relaxed);
        let ready = || written == s.len || s.room_from(written) > 0 || self.reader_gone();
        if ready() {
            return Poll::Ready(());
        }
        s.room.register(cx.waker());
        // Released (or gone) between the check and the registration: not lost.
        if ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// A reader has attached (it may have gone since).
    pub fn attached(&self) -> bool {
        self.stream.reader.load(Ordering::Acquire) != UNREAD
    }

    /// The reader attached and went away (its client finished or was cut): nobody will
    /// read the rest.
    pub fn reader_gone(&self) -> bool {
        self.stream.reader.load(Ordering::Acquire) == GONE
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let _ =
            self.stream
                .state
                .compare_exchange(OPEN, FAILED, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop_cx() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }

    #[test]
    fn a_body_of_unknown_length_ends_where_its_writer_finishes() {
        let (s, mut w) = Stream::unsized_body(4, None);
        assert_eq!((s.len(), s.end()), (None, None));
        assert_eq!(w.write_some(b"abcdef"), 4, "one window");
        assert_eq!(&s.readable(0)[..], b"abcd");
        s.release(4);
        assert_eq!(w.write_some(b"ef"), 2);
        assert!(!s.is_done());
        w.finish();
        assert!(s.is_done() && !s.failed());
        assert_eq!(s.end(), Some(6));
        assert_eq!(&s.readable(4)[..], b"ef");
        // Dropped unfinished: failed, never whole.
        let (s, mut w) = Stream::unsized_body(4, None);
        w.write_some(b"ab");
        drop(w);
        assert!(s.failed() && s.end().is_none());
        // A body of a known length is not ended short by finish.
        let (s, mut w) = Stream::new(10, 4, None);
        w.write_some(b"ab");
        w.finish();
        assert!(s.failed());
    }

    #[test]
    fn the_window_bounds_what_is_written_ahead_and_wraps() {
        let body: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        let (s, mut w) = Stream::new(100, 16, None);
        assert_eq!(s.window(), 16);
        assert_eq!(w.write_some(&body), 16);
        assert_eq!(w.write_some(&body[16..]), 0, "the window is full");
        assert!(w.poll_room(&mut noop_cx()).is_pending());
        let first = s.readable(0);
        assert_eq!(&first[..], &body[..16]);
        // Sent 10 of them: 10 bytes of room, written across the ring's end.
        s.release(10);
        assert!(w.poll_room(&mut noop_cx()).is_ready());
        assert_eq!(w.write_some(&body[16..]), 10);
        assert_eq!(&s.readable(10)[..], &body[10..16], "up to the ring's end");
        assert_eq!(&s.readable(16)[..], &body[16..26], "from the ring's start");
        assert!(!s.is_done());
        // Released positions cannot be read again.
        assert!(s.readable(5).is_empty());
        drop(first);
        let mut pos = 26;
        while pos < 100 {
            s.release(pos);
            pos += w.write_some(&body[pos as usize..]) as u64;
        }
        assert!(s.is_done() && w.remaining() == 0);
        assert!(w.poll_room(&mut noop_cx()).is_ready());
    }

    #[test]
    fn a_writer_dropped_early_fails_the_stream_and_a_finished_one_does_not() {
        let (s, mut w) = Stream::new(10, 4, None);
        w.write_some(b"abcd");
        assert!(!w.attached());
        let r = s.attach();
        assert!(w.attached() && !w.reader_gone());
        assert!(w.poll_room(&mut noop_cx()).is_pending());
        drop(r);
        assert!(w.reader_gone());
        assert!(
            w.poll_room(&mut noop_cx()).is_ready(),
            "a gone reader frees the writer"
        );
        drop(w);
        assert!(s.failed() && !s.is_done());
        let (s, mut w) = Stream::new(3, 4, None);
        assert_eq!(s.window(), 3, "never more than the body");
        assert_eq!(w.write_some(b"xyzzy"), 3, "never more than the body");
        drop(w);
        assert!(s.is_done() && !s.failed());
        let (s, w) = Stream::new(0, 4, None);
        assert!(s.is_done() && s.is_empty());
        assert!(!w.reader_gone(), "no reader yet is not a gone one");
    }

    /// A writer thread and a reader thread, random piece sizes, a small window: the reader
    /// sees every byte once, in order, and the writer never runs more than a window ahead.
    #[test]
    fn concurrent_writer_and_reader_agree_on_every_byte() {
        let len = 3_000_000u64;
        let body: Arc<Vec<u8>> = Arc::new((0..len).map(|i| (i * 7 % 251) as u8).collect());
        let (s, mut w) = Stream::new(len, 64 * 1024, None);
        let src = body.clone();
        let writer = std::thread::spawn(move || {
            let mut pos = 0usize;
            let mut seed = 1u64;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while pos < src.len() {
                assert!(std::time::Instant::now() < deadline, "writer stuck");
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let want = 1 + (seed >> 33) as usize % 20_000;
                let end = (pos + want).min(src.len());
                let n = w.write_some(&src[pos..end]);
                if n == 0 {
                    std::thread::yield_now();
                }
                pos += n;
            }
        });
        let mut pos = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while pos < len {
            assert!(std::time::Instant::now() < deadline, "reader stuck");
            let piece = s.readable(pos);
            if piece.is_empty() {
                std::thread::yield_now();
                continue;
            }
            let end = pos as usize + piece.len();
            assert!(
                piece[..] == body[pos as usize..end],
                "bytes at {pos} differ"
            );
            assert!(s.written.load(Ordering::Acquire) <= pos + s.window() as u64);
            pos = end as u64;
            drop(piece);
            s.release(pos);
        }
        writer.join().unwrap();
        assert!(s.is_done());
    }
}

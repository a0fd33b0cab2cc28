//! A passed-through request body streamed to the origin through a bounded window, instead
//! of being collected whole first: the worker writes what its client sends while the window
//! has room ([`UploadWriter`]), the origin's connection takes it as the request's body
//! ([`UploadBody`], a `hyper` body), and the worker stops reading its client while the
//! window is full. However long the body, it holds one window of memory, reserved from the
//! pass-through budget for the upload's life, and a client that trickles its body holds no
//! more than that.
//!
//! What the window counts: every piece written and not yet dropped by the origin's
//! connection (queued here, or in hyper's write buffer), each at its length plus
//! [`PIECE_COST`] for the allocations around it, so that a client sending one-byte chunks
//! cannot hold much more memory than the window says. A piece dropped wakes the worker
//! waiting for room (once per wait, [`Wakers::wake_once`]).
//!
//! The end: [`UploadWriter::finish`] once the whole body is written; a writer dropped
//! before that fails the body, and the origin's connection is aborted (never a short body
//! passed off as whole). A body that was given to no request (the upstream refused it)
//! simply drops. A queued piece holds the upload (its room goes back when it drops), so
//! whichever side ends first drops what is queued: nothing keeps the upload, and its
//! reservation, alive in a cycle.

use crate::budget::Reservation;
use atomic_waker::AtomicWaker;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use relay_cache::wake::{Wakers, Watchers};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// The window of a streamed request body: what the origin's connection may be behind its
/// client before relay stops reading the client. (At 10 ms of round trip to the origin, a
/// 256 KiB window carries about 200 Mbit/s.)
pub const UPLOAD_WINDOW: usize = 256 << 10;

/// What a piece counts in the window beyond its bytes: its allocations (the bytes' box, the
/// shared owner, the queue slot).
pub const PIECE_COST: usize = 128;

/// The upload as both sides share it.
pub struct Upload {
    inner: Mutex<Inner>,
    window: usize,
    /// The body's length, when the client announced one (sent upstream as
    /// `Content-Length`); None: sent chunked.
    len: Option<u64>,
    /// The origin's connection, waiting for a piece.
    reader: AtomicWaker,
    /// The pass job, waiting for the body's end (its first-byte timeout starts there).
    end: AtomicWaker,
    /// The worker waiting for room.
    pub watchers: Watchers,
    wakers: Wakers,
    /// The window's share of the pass-through budget: given back once the whole body has
    /// been sent ([`Upload::release_if_sent`]), or when the upload drops.
    reserved: Mutex<Option<Reservation>>,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Bytes>,
    /// Bytes (with [`PIECE_COST`] each) of the pieces not yet dropped.
    held: usize,
    state: End,
    /// The origin's connection took the last piece (or the body failed).
    taken: bool,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
enum End {
    #[default]
    Open,
    Done,
    Failed,
}

/// Why a streamed body could not be sent whole (the origin's connection is aborted).
#[derive(Debug, thiserror::Error)]
#[error("the client's request body ended before it was whole")]
pub struct UploadFailed;

/// The worker's side: writes the client's bytes while there is room.
pub struct UploadWriter {
    upload: Arc<Upload>,
    finished: bool,
}

/// The origin connection's side: the request's body.
pub struct UploadBody {
    upload: Arc<Upload>,
}

/// One written piece; dropped, its room goes back.
struct Piece {
    bytes: Box<[u8]>,
    upload: Arc<Upload>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let cost = self.bytes.len() + PIECE_COST;
        let u = &self.upload;
        u.lock().held -= cost;
        u.wakers.wake_once(&u.watchers);
    }
}

impl Upload {
    /// An upload of a body of `len` bytes (None: not known, sent chunked) through a window
    /// of `window` bytes, holding `reserved` while it lives; woken workers through `wakers`.
    pub fn open(
        len: Option<u64>,
        window: usize,
        reserved: Option<Reservation>,
        wakers: Wakers,
    ) -> (UploadWriter, UploadBody) {
        let upload = Arc::new(Upload {
            inner: Mutex::default(),
            window: window.max(PIECE_COST + 1),
            len,
            reader: AtomicWaker::new(),
            end: AtomicWaker::new(),
            watchers: Watchers::default(),
            wakers,
            reserved: Mutex::new(reserved),
        });
        let writer = UploadWriter {
            upload: upload.clone(),
            finished: false,
        };
        (writer, UploadBody { upload })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls for the body's end: the origin's connection has taken its last piece, or the
    /// body failed (its client left, or was cut). (One task waits on it: the pass job.)
    pub fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.end.register(cx.waker());
        let inner = self.lock();
        match inner.taken || inner.state == End::Failed {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// The body ended short: its writer was dropped before it was whole.
    pub fn failed(&self) -> bool {
        self.lock().state == End::Failed
    }

    /// Gives the window's reservation back when the whole body has been sent and nothing
    /// of it is held any more (the origin answered after reading it all): the answer's own
    /// window should not need room beside an upload that is over. Returns whether it did.
    pub fn release_if_sent(&self) -> bool {
        let over = {
            let inner = self.lock();
            // (Written whole, nothing queued, every piece dropped by the connection: sent,
            // whether or not hyper has asked for the body's end yet.)
            inner.state == End::Done && inner.queue.is_empty() && inner.held == 0
        };
        if over {
            drop(
                self.reserved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            );
        }
        over
    }

    /// [`Upload::release_if_sent`], given up to `wait` for the body's last steps to land:
    /// an origin that answers the moment it has read the body can be faster than the
    /// worker marking the body whole, or the connection dropping its last piece. Returns
    /// whether it gave the reservation back.
    pub async fn release_when_sent(&self, wait: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + wait;
        loop {
            if self.release_if_sent() {
                return true;
            }
            if self.failed() || std::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Bytes the window holds now.
    pub fn held(&self) -> usize {
        self.lock().held
    }
}

impl UploadWriter {
    /// Room for a piece of this many bytes, at most.
    pub fn room(&self) -> usize {
        let held = self.upload.lock().held;
        (self.upload.window.saturating_sub(held)).saturating_sub(PIECE_COST)
    }

    /// Writes as much of `data` as the window has room for, as one piece; returns how much
    /// (0: full, wait for room with [`UploadWriter::watch_room`]).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.push(&data[..n]);
        n
    }

    /// Writes all of `data` as one piece, room or not: for what a worker has to take at
    /// once (a chunked body's bytes decoded from one read, at most a receive buffer; the
    /// body collected before it was streamed). Call it when the window has room for it, or
    /// is empty.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let piece = Piece {
            bytes: data.into(),
            upload: self.upload.clone(),
        };
        {
            let mut inner = self.upload.lock();
            inner.held += data.len() + PIECE_COST;
            inner.queue.push_back(Bytes::from_owner(piece));
        }
        self.upload.reader.wake();
    }

    /// Nothing written is held any more (the origin's connection has sent it all).
    pub fn is_empty(&self) -> bool {
        self.upload.lock().held == 0
    }

    /// Has `worker` woken once room comes back; check [`UploadWriter::room`] after this.
    pub fn watch_room(&self, worker: usize) {
        self.upload.watchers.watch(worker);
    }

    /// The whole body is written.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        let end = match self.finished {
            true => End::Done,
            false => End::Failed,
        };
        let dropped = {
            let mut inner = self.upload.lock();
            inner.state = end;
            // A failed body's queued pieces are never sent: dropped now (after the lock:
            // each takes it to give its room back). They hold the upload, so left queued
            // they would keep it, and its reservation, alive.
            match end {
                End::Failed => std::mem::take(&mut inner.queue),
                End::Done | End::Open => VecDeque::new(),
            }
        };
        drop(dropped);
        self.upload.reader.wake();
        // A failed body also ends the pass job's wait: an origin that stopped reading
        // never polls the body again, so the job drops the request itself.
        self.upload.end.wake();
    }
}

impl UploadBody {
    pub fn upload(&self) -> &Arc<Upload> {
        &self.upload
    }
}

impl Drop for UploadBody {
    fn drop(&mut self) {
        // Taken by no one any more: whoever waits for the end stops waiting, and what is
        // still queued goes (dropped after the lock, as in the writer's drop).
        let dropped = {
            let mut inner = self.upload.lock();
            inner.taken = true;
            std::mem::take(&mut inner.queue)
        };
        drop(dropped);
        self.upload.end.wake();
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = UploadFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UploadFailed>>> {
        let u = &self.upload;
        u.reader.register(cx.waker());
        let mut inner = u.lock();
        if let Some(piece) = inner.queue.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let ready = match inner.state {
            End::Open => return Poll::Pending,
            End::Done => Poll::Ready(None),
            End::Failed => Poll::Ready(Some(Err(UploadFailed))),
        };
        inner.taken = true;
        drop(inner);
        u.end.wake();
        ready
    }

    fn is_end_stream(&self) -> bool {
        let inner = self.upload.lock();
        inner.state == End::Done && inner.queue.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.upload.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting() -> (Wakers, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (
            Wakers::new(move |_| {
                m.fetch_add(1, Ordering::Relaxed);
            }),
            n,
        )
    }

    #[test]
    fn the_window_bounds_what_is_written_and_a_dropped_piece_gives_room_back() {
        let (wakers, woken) = counting();
        let (mut w, body) = Upload::open(Some(10_000), 4096, None, wakers);
        let data = vec![7u8; 10_000];
        let n = w.write(&data);
        assert_eq!(n, 4096 - PIECE_COST, "one piece fills the window");
        assert_eq!(w.write(&data[n..]), 0, "full");
        w.watch_room(3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut body = body;
        let frame = rt.block_on(body.frame()).unwrap().unwrap();
        let piece = frame.into_data().unwrap();
        assert_eq!(piece.len(), n);
        assert_eq!(
            w.room(),
            0,
            "taken by the connection but not dropped: still held"
        );
        drop(piece);
        assert_eq!(
            woken.load(Ordering::Relaxed),
            1,
            "the waiting worker is woken once"
        );
        assert_eq!(w.room(), 4096 - PIECE_COST);
    }

    #[test]
    fn a_finished_body_ends_and_a_dropped_writer_fails_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (mut w, body) = Upload::open(Some(5), 4096, None, Wakers::none());
        assert_eq!(body.size_hint().exact(), Some(5));
        w.write(b"hello");
        w.finish();
        let all = rt.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&all[..], b"hello");

        let (mut w, mut body) = Upload::open(None, 4096, None, Wakers::none());
        assert_eq!(body.size_hint().exact(), None, "unknown: sent chunked");
        w.write(b"hel");
        let first = rt.block_on(body.frame()).unwrap().unwrap();
        let first = first.into_data().unwrap();
        assert_eq!(&first[..], b"hel");
        w.write(b"lo");
        assert_eq!(body.upload().held(), 3 + 2 + 2 * PIECE_COST);
        drop(w);
        // What was still queued is dropped with the failed writer: nothing keeps the
        // upload alive through its own queue.
        assert_eq!(
            body.upload().held(),
            3 + PIECE_COST,
            "the piece taken is still held"
        );
        assert!(rt.block_on(body.frame()).unwrap().is_err(), "cut short");
        let sent = std::future::poll_fn(|cx| body.upload().poll_sent(cx));
        rt.block_on(sent);
        assert!(body.upload().failed());
        drop(first);

        // A body dropped with pieces queued (its connection aborted) lets them go too.
        let (mut w, body) = Upload::open(Some(10), 4096, None, Wakers::none());
        w.write(b"abc");
        let upload = body.upload().clone();
        drop(body);
        assert_eq!(upload.held(), 0);
        assert_eq!(
            Arc::strong_count(&upload),
            2,
            "the writer and this handle only"
        );
    }

    #[test]
    fn tiny_pieces_count_their_cost() {
        let (mut w, _body) = Upload::open(None, 4096, None, Wakers::none());
        let mut pieces = 0;
        while w.write(b"x") == 1 {
            pieces += 1;
        }
        assert_eq!(pieces, 4096 / (1 + PIECE_COST));
    }
}

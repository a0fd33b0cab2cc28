//! A streamed read-ahead fetch ([`crate::StreamRequest`]): the chunks ahead of a client from
//! one Range request, each filled as the answer reaches it and handed over by the client's
//! read-ahead through the [`Feed`]. One origin round trip for a run of chunks rather than
//! one per chunk, and the chunks arrive in the order the client reads them (parallel chunk
//! fetches share the bandwidth, so the chunk the client waits for came no sooner than the
//! last of them).

use super::Context;
use super::chunk::fits;
use crate::feed::Feed;
use crate::{ChunkRequest, Forward, StreamRequest};
use bytes::Bytes;
use hyper::body::Incoming;
use relay_cache::ObjectMeta;
use relay_cache::fill::{FillError, FillWriter};
use std::sync::Arc;
use std::time::Duration;

/// How long a streamed fetch that has filled every chunk handed to it waits for the next,
/// holding its origin connection and fetch slot: a client slower than a chunk in this time
/// (5 MB/s with 1 MiB chunks) ends the fetch, and has its later chunks fetched one by one
/// as it comes to them (its read-ahead keeps it far ahead of such a client anyway).
const PAUSE: Duration = Duration::from_millis(200);

/// One answer's run of chunks, for [`Context::fill_in_order`].
pub(super) struct Run<'a> {
    pub origin: usize,
    /// The request target and the client's fields, for chunks fetched anew should the
    /// answer break off.
    pub path: &'a str,
    pub forward: &'a Forward,
    pub meta: &'a Arc<ObjectMeta>,
    /// The last chunk the answer holds.
    pub last: u64,
    /// A whole fetch holding one of its origin's whole slots: it waits for each chunk as
    /// long as its client reads, rather than pausing out.
    pub patient: bool,
    /// Where the answer's bytes end in the object ([`crate::head::answer_end`]): none past
    /// it is read.
    pub end: u64,
}

impl Context {
    /// Runs a [`StreamRequest`]: its first chunk, then each one the feed hands over, until
    /// the last byte asked for, the feed's close, or a pause past [`PAUSE`]. An answer of
    /// another version (or a 416: the object shrank) forgets the description and fails the
    /// chunks; an error status fails them (their clients ask again); a 200 (Range ignored)
    /// is read from the run's start, and makes the feed whole ([`Feed::whole`]): it runs on
    /// to the object's end at its client's pace, past the chunks held elsewhere, since any
    /// other answer would cost the origin the object's start again. A chunk the answer does
    /// not fill (it broke off) and those after it are fetched as chunk jobs of their own,
    /// from where they stand.
    pub(super) async fn stream_ahead(&self, request: StreamRequest) {
        let StreamRequest {
            origin,
            path,
            meta,
            first,
            feed,
            end,
            forward,
        } = request;
        let layout = self.store.layout;
        // (From where the first fill stands: a whole fetch that broke off goes on in one.)
        let start = layout.chunk_start(first.fill().key.index) + first.written() as u64;
        let last = layout.chunk_of(end);
        let resp = match self
            .send_fill(origin, &path, Some((start, end)), None, &forward, None)
            .await
        {
            Ok(r) => r,
            // (The request's own retries are done: each chunk fails as its own fetch would.)
            Err(e) => return self.fail_each(first, &feed, e),
        };
        let status = resp.status().as_u16();
        let object = first.fill().key.object.clone();
        match fits(status, resp.headers(), &meta, start) {
            Ok(()) => {}
            // The object changed (a 416: it shrank): never stitched together.
            Err(FillError::Changed | FillError::Status(416)) => {
                self.changed(&object, meta.version);
                return self.fail_each(first, &feed, FillError::Changed);
            }
            // An error status fails the chunks as their own fetches would (each client asks
            // again); an answer that is not theirs, likewise.
            Err(e) => return self.fail_each(first, &feed, e),
        }
        let answer_end = crate::head::answer_end(status, resp.headers());
        let mut body = resp.into_body();
        // (An origin that ignores Range sends the whole object: skipped to `start`.) A
        // whole answer runs to the object's end while it has a whole slot, made so before
        // the skip, so the client's read-ahead keeps the feed meanwhile; else it reads the
        // run asked for, pausing out as any streamed fetch does. An origin that answers
        // the range now has its object forgotten as one it ignores Range for.
        let slot = match status {
            206 => {
                self.origins[origin].range_ignored.forget(&object);
                feed.ranged();
                None
            }
            _ => self.origins[origin].whole_slot(),
        };
        let (lead, last) = match status {
            206 => (Bytes::new(), last),
            _ => {
                let end = layout.chunk_count(meta.len).saturating_sub(1);
                if slot.is_some() {
                    feed.whole(end);
                }
                match self.skip(origin, &object, &mut body, start).await {
                    Ok(rest) if slot.is_some() => (rest, end),
                    Ok(rest) => (rest, last),
                    Err(_) => {
                        return self.chunk_each(origin, &path, &meta, &forward, first, &feed);
                    }
                }
            }
        };
        let run = Run {
            origin,
            path: &path,
            meta: &meta,
            forward: &forward,
            last,
            patient: slot.is_some(),
            end: answer_end,
        };
        self.fill_in_order(&run, body, lead, first, &feed).await;
    }

    /// Streams `body` (after `lead`, bytes already read of it), the bytes of `first`'s
    /// chunk on, into `first` and then each fill `feed` hands over, up to the run's last
    /// chunk (the bytes of chunks between them not handed over, a whole feed's gaps, read
    /// past); waits up to [`PAUSE`] (or the origin's idle timeout, when shorter) for each
    /// next fill. A body that breaks off has its chunk and those handed over after it
    /// fetched as chunk jobs of their own, from where they stand; a whole one that had
    /// filled a chunk goes on as one new whole fetch instead ([`Context::resume_whole`]).
    pub(super) async fn fill_in_order(
        &self,
        run: &Run<'_>,
        mut body: Incoming,
        lead: Bytes,
        first: FillWriter,
        feed: &Arc<Feed>,
    ) {
        let origin = run.origin;
        let pause = PAUSE.min(Duration::from_millis(
            self.origins[origin].config.idle_timeout_ms,
        ));
        // A whole fetch waits on while no other fetch waits for a slot of its origin, for
        // at most the origin's idle timeout: a client that stalls, or reads slower than a
        // chunk in that time, lets its slot go (its later chunks come as any paused-out
        // client's do).
        let o = &self.origins[origin];
        let idle = Duration::from_millis(o.config.idle_timeout_ms);
        let mut current = first;
        let mut pending = lead;
        let mut filled = false;
        loop {
            let broke = loop {
                if pending.is_empty() {
                    // (A chunk the answer ended short of: fetched from where it stands.)
                    match self.next_for(origin, &mut body, &current, run.end).await {
                        Ok(d) => pending = d,
                        Err(e) => break Some(e),
                    }
                }
                if pending.len() >= current.remaining() {
                    break None;
                }
                if current.append(&pending).is_err() {
                    break Some(FillError::Truncated);
                }
                pending = Bytes::new();
                self.store.wakers.wake(&current.fill().watchers);
            };
            if let Some(e) = broke {
                log::debug!(
                    "{}: a streamed fetch broke off in chunk {} ({e})",
                    run.path,
                    current.fill().key.index
                );
                return self.broke_off(run, current, feed, filled);
            }
            let index = current.fill().key.index;
            let rest = pending.split_to(current.remaining());
            self.complete(current, &rest, run.meta);
            filled = true;
            if index >= run.last {
                return;
            }
            // (Dropping the answer unread closes its connection.)
            let until = tokio::time::Instant::now() + idle;
            let wait_more =
                || run.patient && !o.slots_awaited() && tokio::time::Instant::now() < until;
            match feed.take(pause, wait_more).await {
                Some(w) => current = w,
                None => return,
            }
            let layout = self.store.layout;
            let gap = layout.chunk_start(current.fill().key.index) - layout.chunk_start(index + 1);
            if gap > 0 {
                pending = match self.pass_over(origin, &mut body, pending, gap).await {
                    Ok(rest) => rest,
                    Err(e) => {
                        log::debug!("{}: a whole answer broke off ({e})", run.path);
                        return self.broke_off(run, current, feed, filled);
                    }
                };
            }
        }
    }

    /// An answer that broke off at `current`: a whole one (of an origin that ignores Range,
    /// any answer reading the object's start again) that had `filled` a chunk goes on as
    /// one new whole fetch from where `current` stands, its feed with it; any other has
    /// `current` and the fills handed over after it fetched one by one. (A whole answer
    /// that breaks before filling a chunk goes one by one too, so an origin that always
    /// breaks off is not asked again and again.)
    fn broke_off(&self, run: &Run<'_>, current: FillWriter, feed: &Arc<Feed>, filled: bool) {
        if !(run.patient && filled) {
            return self.chunk_each(run.origin, run.path, run.meta, run.forward, current, feed);
        }
        let layout = self.store.layout;
        let last = layout.chunk_count(run.meta.len).saturating_sub(1);
        let request = StreamRequest {
            origin: run.origin,
            path: run.path.to_string(),
            meta: run.meta.clone(),
            first: current,
            feed: feed.clone(),
            end: layout.chunk_start(last) + layout.chunk_len(run.meta.len, last) - 1,
            forward: run.forward.clone(),
        };
        let ctx = self.clone();
        tokio::spawn(async move { ctx.run_stream(request).await });
    }

    /// A streamed fetch, once one of the origin's fetch slots is free.
    pub(super) async fn run_stream(&self, request: StreamRequest) {
        let Some(_fetching) = self.fetch_slot(request.origin).await else {
            let e = self.slot_timeout(request.origin);
            return self.fail_stream(request, e);
        };
        self.stream_ahead(request).await
    }

    /// A streamed fetch that could not start: its chunks fail as their own fetches would.
    pub(super) fn fail_stream(&self, request: StreamRequest, e: FillError) {
        self.fail_each(request.first, &request.feed, e);
    }

    fn fail_each(&self, first: FillWriter, feed: &Feed, e: FillError) {
        self.fail(first, e);
        for w in feed.end() {
            self.fail(w, e);
        }
    }

    /// `current` (from where it stands) and the fills handed over after it, each a chunk job
    /// of its own.
    fn chunk_each(
        &self,
        origin: usize,
        path: &str,
        meta: &Arc<ObjectMeta>,
        forward: &Forward,
        current: FillWriter,
        feed: &Feed,
    ) {
        for writer in std::iter::once(current).chain(feed.end()) {
            self.chunk_job(origin, path, meta, forward, writer);
        }
    }

    /// `writer`'s chunk, from where it stands, as a chunk job of its own.
    pub(super) fn chunk_job(
        &self,
        origin: usize,
        path: &str,
        meta: &Arc<ObjectMeta>,
        forward: &Forward,
        writer: FillWriter,
    ) {
        let ctx = self.clone();
        let request = ChunkRequest {
            origin,
            path: path.to_string(),
            meta: meta.clone(),
            writer,
            forward: forward.clone(),
            peers: None,
        };
        tokio::spawn(async move { ctx.run_chunk(request).await });
    }
}

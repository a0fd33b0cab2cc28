//! Streaming an origin's body into fills: one chunk ([`Context::stream`]), or a whole object
//! cut into chunks as it arrives ([`Context::stream_whole`]), and completing a fill into the
//! memory tier and, when admitted, the disk tier.

use super::{Context, unix_now};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use relay_cache::fill::{FillError, FillWriter, Wait};
use relay_cache::inflight::{AHEAD_BYTES, KEPT_BYTES, NoRoom};

/// How often a fetch that keeps pace with its client looks whether the client came closer.
const PACE_POLL: std::time::Duration = std::time::Duration::from_millis(5);
use relay_cache::{ChunkKey, ObjectMeta};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The first `room` bytes of `data` at most: an answer's bytes past where it said they end
/// ([`crate::head::answer_end`]) are never taken for the object's.
fn within(data: Bytes, room: u64) -> Bytes {
    match usize::try_from(room) {
        Ok(room) if room < data.len() => data.slice(..room),
        _ => data,
    }
}

impl Context {
    /// Where `writer`'s next byte lies in its object.
    fn position(&self, writer: &FillWriter) -> u64 {
        let written = writer.fill().len() - writer.remaining();
        self.store.layout.chunk_start(writer.fill().key.index) + written as u64
    }

    /// The next bytes of `body` for `writer`, as far as the answer's bytes go (`end`, where
    /// they end in the object: [`crate::head::answer_end`]; none past it is read):
    /// [`FillError::Short`] once they are all in, or the body ended, with the chunk not.
    pub(super) async fn next_for(
        &self,
        origin: usize,
        body: &mut Incoming,
        writer: &FillWriter,
        end: u64,
    ) -> Result<Bytes, FillError> {
        let room = end.saturating_sub(self.position(writer));
        if room == 0 {
            return Err(FillError::Short);
        }
        match self.next_frame(origin, body).await? {
            Some(d) => Ok(within(d, room)),
            None => Err(FillError::Short),
        }
    }

    fn idle_ms(&self, origin: usize) -> u64 {
        self.origins[origin].config.idle_timeout_ms
    }

    pub(super) async fn next_frame(
        &self,
        origin: usize,
        body: &mut Incoming,
    ) -> Result<Option<Bytes>, FillError> {
        let idle_ms = self.idle_ms(origin);
        let idle = Duration::from_millis(idle_ms);
        loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(FillError::timeout(Wait::Idle, idle_ms)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(_))) => return Err(FillError::Truncated),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.stats
                            .bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Discards `n` body bytes of an answer to a Range request for `object` that holds the
    /// whole body (the origin ignored Range, remembered for the object:
    /// [`crate::ranges`]); returns what the last frame held beyond them.
    pub(super) async fn skip(
        &self,
        origin: usize,
        object: &Arc<str>,
        body: &mut Incoming,
        mut n: u64,
    ) -> Result<Bytes, FillError> {
        self.origins[origin].range_ignored.note(object);
        self.stats.range_ignored.fetch_add(1, Ordering::Relaxed);
        self.stats
            .range_skipped_bytes
            .fetch_add(n, Ordering::Relaxed);
        while n > 0 {
            let Some(data) = self.next_frame(origin, body).await? else {
                return Err(FillError::Truncated);
            };
            if (data.len() as u64) > n {
                return Ok(data.slice(n as usize..));
            }
            n -= data.len() as u64;
        }
        Ok(Bytes::new())
    }

    /// Reads past `n` bytes of `body`, the first of them in `pending` (bytes already read):
    /// the chunks of a whole answer that are held or on their way elsewhere. Returns what
    /// the last frame held beyond them. (Counted with the bytes thrown away.)
    pub(super) async fn pass_over(
        &self,
        origin: usize,
        body: &mut Incoming,
        mut pending: Bytes,
        n: u64,
    ) -> Result<Bytes, FillError> {
        self.stats
            .range_skipped_bytes
            .fetch_add(n, Ordering::Relaxed);
        let mut left = n;
        loop {
            if (pending.len() as u64) >= left {
                return Ok(pending.slice(left as usize..));
            }
            left -= pending.len() as u64;
            pending = self
                .next_frame(origin, body)
                .await?
                .ok_or(FillError::Truncated)?;
        }
    }

    /// Streams a body into one fill; a body that breaks off gives its writer back, holding what
    /// it got, so that the rest can come from elsewhere (a chunk from a peer that died
    /// mid-transfer continues from the origin at the same offset). `end`: where the answer's
    /// bytes end in the object ([`crate::head::answer_end`]); none past it is read.
    pub(super) async fn stream_or_return(
        &self,
        origin: usize,
        mut body: Incoming,
        mut writer: FillWriter,
        meta: &ObjectMeta,
        sum: Sum,
        end: u64,
    ) -> Result<(), (FillWriter, FillError)> {
        if sum != Sum::None {
            return self.checked_whole(origin, body, writer, meta, sum).await;
        }
        while writer.remaining() > 0 {
            // (A chunk the answer ended short of: the rest comes from elsewhere.)
            let data = match self.next_for(origin, &mut body, &writer, end).await {
                Ok(d) => d,
                Err(e) => return Err((writer, e)),
            };
            // A whole-object body (Range ignored) runs past this chunk: keep only its part.
            let n = data.len().min(writer.remaining());
            if n == writer.remaining() {
                self.complete(writer, &data[..n], meta);
                return Ok(());
            }
            if writer.append(&data[..n]).is_err() {
                return Err((writer, FillError::Truncated));
            }
            self.store.wakers.wake(&writer.fill().watchers);
        }
        self.complete(writer, &[], meta);
        Ok(())
    }

    /// A peer's whole chunk with its checksum (in the head, or a trailer after it): held
    /// here until it is all in and checked, and only then written into `writer`, so its
    /// readers never get a byte the checksum has not covered. A mismatch fails nothing
    /// they were sent; an answer that breaks off leaves the fill as it was (the chunk then
    /// comes whole from elsewhere). Costs the chunk's transfer time from the peer on the
    /// first byte (a peer is near: 0.5 ms for 1 MiB on loopback).
    async fn checked_whole(
        &self,
        origin: usize,
        mut body: Incoming,
        writer: FillWriter,
        meta: &ObjectMeta,
        sum: Sum,
    ) -> Result<(), (FillWriter, FillError)> {
        let len = writer.remaining();
        let mut held = bytes::BytesMut::with_capacity(len);
        while held.len() < len {
            let data = match self.next_frame(origin, &mut body).await {
                Ok(Some(d)) => d,
                Ok(None) => return Err((writer, FillError::Truncated)),
                Err(e) => return Err((writer, e)),
            };
            let n = data.len().min(len - held.len());
            held.extend_from_slice(&data[..n]);
        }
        let sum = match sum {
            Sum::Given(sum) => sum,
            Sum::Trailer => match trailer_sum(&mut body, self.idle_ms(origin)).await {
                Ok(sum) => sum,
                Err(e) => return Err((writer, e)),
            },
            Sum::None => return Err((writer, FillError::Corrupt)),
        };
        if !sum_matches(&writer, &held, sum) {
            return Err((writer, FillError::Corrupt));
        }
        self.complete(writer, &held, meta);
        Ok(())
    }

    /// A finished fill goes to the memory tier (when the response may be stored).
    /// The chunk's last bytes go in only after the chunk is in the memory tier; then it is
    /// written to the disk tier (if admitted) off this thread. A chunk of a body whose
    /// length is not known yet waits for it ([`Context::end_open`]).
    pub(super) fn complete(&self, mut writer: FillWriter, last: &[u8], meta: &ObjectMeta) {
        let fill = writer.fill().clone();
        let sum = writer.sum_with(last);
        let key = fill.key.clone();
        let memory = &self.store.memory;
        let mut whole = None;
        let stored = writer.complete_with(last, |bytes| {
            if meta.storable {
                memory.insert(key.clone(), bytes.clone());
                whole = Some(bytes);
            }
        });
        self.store.inflight.end_fill(&fill);
        if let Ok(fill) = stored {
            self.store.wakers.wake(&fill.watchers);
        }
        if let Some(body) = whole.filter(|_| !meta.open_ended) {
            self.to_disk(key, body, sum, meta, fill.since());
        }
    }

    /// Hands a stored chunk to the disk writer, when the disk tier admits it: always
    /// (`disk_admission = "always"`), while the tier has room (`"second-hit-when-full"`),
    /// or when a second request for it came while it was on its way (the requests are
    /// counted as responses send it: `Upstream::count_request`). `sum`: the body's checksum
    /// if its fill took it as it was written. `since`: the disk tiers' removals when its
    /// bytes were asked for (its fill's start), so a purge or an invalidation since keeps it
    /// off the disk.
    fn to_disk(&self, key: ChunkKey, body: Bytes, sum: Option<u64>, meta: &ObjectMeta, since: u64) {
        let Some(writer) = self.writer.as_ref() else {
            return;
        };
        let admitted = self.store.admission.as_ref().is_none_or(|a| {
            let room = a.admits_while_room()
                && self.store.disk.as_ref().is_some_and(|d| {
                    let (usage, capacity) = d.usage_and_capacity();
                    a.room(usage, capacity)
                });
            let wanted = room || a.wanted(&key.as_ref());
            if wanted {
                a.mark_written(&key.as_ref());
            }
            wanted
        });
        if admitted {
            writer.submit(crate::disk_writer::WriteJob {
                key,
                object_len: meta.len,
                etag: meta.etag.clone(),
                last_modified: meta.last_modified.clone(),
                meta: meta.encode_blob(Instant::now(), unix_now()),
                body,
                sum,
                if_absent: false,
                since,
            });
        }
    }

    /// A body whose length was not known ahead ended cleanly: its length is learnt. The
    /// description with that length (same version) is published first, so a reader that
    /// finds the last fill gone finds where the body ends; then the last fill completes
    /// short, and the chunks still in memory go to the disk tier with the length.
    fn end_open(&self, writer: FillWriter, object: &Arc<str>, meta: &ObjectMeta) {
        let layout = self.store.layout;
        let index = writer.fill().key.index;
        let len = layout.chunk_start(index) + writer.written() as u64;
        let done = ObjectMeta {
            len,
            open_ended: false,
            ..meta.clone()
        };
        if done.storable {
            self.store.meta.insert(object, done.clone());
        }
        let fill = writer.fill().clone();
        // (When the answer was asked for: its fills started as it reached them.)
        let since = fill.since().min(done.asked_at);
        let memory = &self.store.memory;
        let key = fill.key.clone();
        writer.complete_short(|bytes| {
            if done.storable {
                memory.insert(key, bytes);
            }
        });
        self.store.inflight.end_fill(&fill);
        self.store.wakers.wake(&fill.watchers);
        if !done.storable {
            return;
        }
        for index in 0..layout.chunk_count(len) {
            let key = ChunkKey {
                object: object.clone(),
                version: done.version,
                index,
            };
            if let Some(bytes) = memory.get(&key.as_ref()) {
                self.to_disk(key, bytes, None, &done, since);
            }
        }
    }

    /// The fill for chunk `index` of a whole-object body, or how many bytes to skip when
    /// the chunk is in flight already (another fetch fills it, or a reader reads it);
    /// [`NoRoom`] when chunk memory is at its bound (the caller completes what it holds,
    /// then waits: [`Context::start_when_room`]).
    /// A response that may not be stored has a version no other fetch shares
    /// (`object_meta`), so only its own client finds its fills; `keep` holds them for that
    /// client, as they never reach the memory tier.
    pub(super) fn open_chunk(
        &self,
        object: &Arc<str>,
        meta: &ObjectMeta,
        index: u64,
        keep: Option<&Arc<relay_cache::inflight::Pending>>,
    ) -> Result<(Option<FillWriter>, u64), NoRoom> {
        let (key, len) = self.chunk_key(object, meta, index);
        let started = self.store.inflight.start_fill(key, len as usize)?;
        asked_at(started.as_ref(), meta);
        Ok(self.opened(started, len, keep))
    }

    /// [`Context::open_chunk`], waiting for room; None when none came within the origin's
    /// idle timeout (the fetch ends: readers of the chunks it did not fill are cut). The
    /// chunk's readers wait meanwhile ([`relay_cache::inflight::InFlight::await_room`]),
    /// and the fetch lets go of what it holds: first `done`, the chunk it has just filled
    /// (completed with its `last` bytes once the chunk is marked as awaited, so its
    /// readers, woken, find the next one awaited rather than nowhere), then the kept fills
    /// its clients passed. Any of them may be the room.
    #[expect(
        clippy::too_many_arguments,
        reason = "one fetch's state, passed through"
    )]
    async fn open_chunk_when_room(
        &self,
        origin: usize,
        object: &Arc<str>,
        meta: &ObjectMeta,
        index: u64,
        keep: Option<&Arc<relay_cache::inflight::Pending>>,
        done: Option<FillWriter>,
        last: &[u8],
    ) -> Option<(Option<FillWriter>, u64)> {
        let (key, len) = self.chunk_key(object, meta, index);
        let _waiting = self.store.inflight.await_room(key.clone());
        if let Some(w) = done {
            self.complete(w, last, meta);
        }
        let started = self
            .start_when_room(origin, key, len as usize, keep)
            .await
            .ok()?;
        asked_at(started.as_ref(), meta);
        Some(self.opened(started, len, keep))
    }

    fn chunk_key(&self, object: &Arc<str>, meta: &ObjectMeta, index: u64) -> (ChunkKey, u64) {
        let key = ChunkKey {
            object: object.clone(),
            version: meta.version,
            index,
        };
        (key, self.chunk_room(meta, index))
    }

    fn opened(
        &self,
        started: Option<FillWriter>,
        len: u64,
        keep: Option<&Arc<relay_cache::inflight::Pending>>,
    ) -> (Option<FillWriter>, u64) {
        match started {
            Some(w) => {
                if let Some(p) = keep {
                    p.push_fill(w.fill().clone());
                    // A client of a paced body that got here first waits for it.
                    self.store.wakers.wake(&p.watchers);
                }
                (Some(w), 0)
            }
            None => (None, len),
        }
    }

    /// Starts a fill the upstream makes on its own ([`relay_cache::inflight::InFlight::start_fill`]),
    /// waiting while chunk memory is at its bound: a fill elsewhere completing, a sender
    /// finishing, a stalled reader cut at its send deadline, or (each time it looks) the
    /// fills `keep` holds for its clients that they have passed give room back. The origin
    /// waits meanwhile (its connection is not read). [`NoRoom`] when none came within the
    /// origin's idle timeout.
    pub(super) async fn start_when_room(
        &self,
        origin: usize,
        key: ChunkKey,
        len: usize,
        keep: Option<&Arc<relay_cache::inflight::Pending>>,
    ) -> Result<Option<FillWriter>, NoRoom> {
        let idle = Duration::from_millis(self.origins[origin].config.idle_timeout_ms);
        let started = Instant::now();
        let until = started + idle;
        loop {
            if let Some(p) = keep {
                // The fills its slower clients have not reached stay for half the wait;
                // then they go too, and only those clients are cut (not every client
                // of the answer, at the wait's end).
                p.let_go_passed(started.elapsed() < idle / 2);
            }
            match self.store.inflight.start_fill(key.clone(), len) {
                Err(NoRoom) if Instant::now() < until => tokio::time::sleep(PACE_POLL).await,
                done => return done,
            }
        }
    }

    /// Waits until the client of a body that may not be stored has come within
    /// [`AHEAD_BYTES`] of chunk `index` (at least two chunks); false when it left (nothing
    /// holds the fetch's `Pending` but the fetch), and the fetch ends.
    async fn keep_pace(&self, p: &Arc<relay_cache::inflight::Pending>, index: u64) -> bool {
        let ahead = self.ahead();
        loop {
            if Arc::strong_count(p) == 1 {
                return false;
            }
            if p.may_fill(index, ahead) {
                return true;
            }
            // A client that stops reading is cut at its send deadline, and lets go of the
            // fetch then.
            tokio::time::sleep(PACE_POLL).await;
        }
    }

    /// How many chunks a paced fetch may run ahead of its client.
    fn ahead(&self) -> u64 {
        (AHEAD_BYTES / self.store.layout.chunk_size()).max(2)
    }

    /// The room of chunk `index`'s fill: its length, or a whole chunk while the body's
    /// length is not known.
    pub(super) fn chunk_room(&self, meta: &ObjectMeta, index: u64) -> u64 {
        let layout = self.store.layout;
        match meta.open_ended {
            true => layout.chunk_size(),
            false => layout.chunk_len(meta.len, index),
        }
    }

    /// A whole body in one answer (the origin ignored Range, or it was asked for the whole
    /// body): cut it into chunks as it arrives. Chunks already in flight (another fetch
    /// fills them, or a reader reads them) are skipped. A body whose length is not known
    /// ahead runs until the answer ends ([`Context::end_open`]).
    pub(super) async fn stream_whole(
        &self,
        origin: usize,
        mut body: Incoming,
        first: Option<FillWriter>,
        object: &Arc<str>,
        meta: &Arc<ObjectMeta>,
        keep: Option<&Arc<relay_cache::inflight::Pending>>,
    ) {
        let count = match meta.open_ended {
            true => u64::MAX,
            false => self.store.layout.chunk_count(meta.len),
        };
        let mut current = first;
        let mut index = 0u64;
        let mut skip_left = if current.is_none() {
            self.chunk_room(meta, 0)
        } else {
            0
        };
        let mut pending = Bytes::new();
        while index < count {
            if pending.is_empty() {
                match self.next_frame(origin, &mut body).await {
                    Ok(Some(d)) => pending = d,
                    Ok(None) if meta.open_ended => {
                        if let Some(w) = current.take() {
                            self.end_open(w, object, meta);
                        }
                        return;
                    }
                    Ok(None) | Err(_) => {
                        if let Some(w) = current.take() {
                            self.fail(w, FillError::Truncated);
                        }
                        return;
                    }
                }
            }
            if let Some(w) = current.as_mut() {
                let n = pending.len().min(w.remaining());
                if n < w.remaining() {
                    if w.append(&pending[..n]).is_err() {
                        if let Some(w) = current.take() {
                            self.fail(w, FillError::Truncated);
                        }
                        return;
                    }
                    pending = pending.slice(n..);
                    self.store.wakers.wake(&w.fill().watchers);
                } else {
                    let last = pending.slice(..n);
                    pending = pending.slice(n..);
                    let done = current.take();
                    index += 1;
                    // A body that only ends when its answer does, which no client reads any
                    // more: it is read on to fill the cache within `KEPT_BYTES`, then not
                    // further (no one else can join it, as it is described only once it
                    // ended; an endless one would be read for no one).
                    let unread = meta.open_ended
                        && self.store.layout.chunk_start(index) > KEPT_BYTES as u64
                        && keep.is_some_and(|p| Arc::strong_count(p) == 1);
                    if unread {
                        if let Some(w) = done {
                            self.complete(w, &last, meta);
                        }
                        return;
                    }
                    // A body only its client reads: no further ahead of it than
                    // `AHEAD_BYTES` (the origin waits, as TCP lets it); no client, no fetch.
                    // The chunk just filled completes first: the client may be on it.
                    let mut done = done;
                    if let Some(p) = keep.filter(|_| !meta.storable && index < count)
                        && !p.may_fill(index, self.ahead())
                    {
                        if let Some(w) = done.take() {
                            self.complete(w, &last, meta);
                        }
                        if !self.keep_pace(p, index).await {
                            return;
                        }
                    }
                    // The next chunk's fill enters the table before this one completes:
                    // a client woken by the completion finds it there and joins it instead
                    // of asking the origin for it again.
                    if index < count {
                        let next = match self.open_chunk(object, meta, index, keep) {
                            Ok(next) => Some(next),
                            Err(NoRoom) => {
                                let done = done.take();
                                self.open_chunk_when_room(
                                    origin, object, meta, index, keep, done, &last,
                                )
                                .await
                            }
                        };
                        let Some(next) = next else {
                            return;
                        };
                        (current, skip_left) = next;
                    }
                    if let Some(w) = done {
                        self.complete(w, &last, meta);
                    }
                }
            } else {
                let n = (pending.len() as u64).min(skip_left) as usize;
                pending = pending.slice(n..);
                skip_left -= n as u64;
                if skip_left == 0 {
                    index += 1;
                    if index < count {
                        let next = self
                            .open_chunk_when_room(origin, object, meta, index, keep, None, &[])
                            .await;
                        let Some(next) = next else {
                            return;
                        };
                        (current, skip_left) = next;
                    }
                }
            }
        }
    }
}

/// The checksum a peer sends after a whole chunk's bytes, in a trailer field
/// (`relay_cluster::peer::CHUNK_SUM`): corrupt when the body runs on past the chunk or ends
/// without a readable one; a timeout after `idle_ms` without a frame.
async fn trailer_sum<B>(body: &mut B, idle_ms: u64) -> Result<u64, FillError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let idle = Duration::from_millis(idle_ms);
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(FillError::timeout(Wait::Idle, idle_ms)),
            Ok(None) => return Err(FillError::Corrupt),
            Ok(Some(Err(_))) => return Err(FillError::Truncated),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_trailers() {
            Ok(fields) => {
                return fields
                    .get(relay_cluster::peer::CHUNK_SUM)
                    .and_then(|v| relay_cluster::peer::parse_chunk_sum(v.as_bytes()))
                    .ok_or(FillError::Corrupt);
            }
            Err(frame) if frame.data_ref().is_some_and(|d| !d.is_empty()) => {
                return Err(FillError::Corrupt);
            }
            Err(_) => {}
        }
    }
}

/// What a peer's answer of one whole chunk says of the chunk's checksum
/// (`relay_cluster::peer::CHUNK_SUM`), checked before the chunk is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sum {
    /// Nothing to check: an origin's answer, part of a chunk, or a peer that sent none.
    None,
    /// In the answer's head: a chunk the peer holds whole.
    Given(u64),
    /// In a trailer field after the body (announced by `Trailer`): a chunk the peer
    /// streamed while it arrived there.
    Trailer,
}

impl Context {
    /// [`Sum::of`], counted by where the checksum comes (`peer_sums`).
    pub(super) fn peer_sum(&self, headers: &http::HeaderMap, whole_from_peer: bool) -> Sum {
        let sum = Sum::of(headers, whole_from_peer);
        let slot = match sum {
            _ if !whole_from_peer => return sum,
            Sum::Given(_) => 0,
            Sum::Trailer => 1,
            Sum::None => 2,
        };
        self.stats.peer_sums[slot].fetch_add(1, Ordering::Relaxed);
        sum
    }
}

impl Sum {
    /// The checksum `headers` announce, for an answer that is a peer's whole chunk.
    pub(super) fn of(headers: &http::HeaderMap, whole_from_peer: bool) -> Sum {
        use relay_cluster::peer::{CHUNK_SUM, parse_chunk_sum};
        if !whole_from_peer {
            return Sum::None;
        }
        if let Some(sum) = headers
            .get(CHUNK_SUM)
            .and_then(|v| parse_chunk_sum(v.as_bytes()))
        {
            return Sum::Given(sum);
        }
        let announced = headers.get_all(http::header::TRAILER).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|n| n.trim().eq_ignore_ascii_case(CHUNK_SUM))
            })
        });
        match announced {
            true => Sum::Trailer,
            false => Sum::None,
        }
    }
}

/// Whether the chunk `writer` holds, with `last` after it, is the one a peer's checksum
/// names (XXH3-64 of the whole chunk, as the disk tier's files carry it).
fn sum_matches(writer: &FillWriter, last: &[u8], sum: u64) -> bool {
    let fill = writer.fill();
    let written = fill.len() - writer.remaining();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&fill.slice(0, written));
    hasher.update(last);
    hasher.digest() == sum
}

/// A fill of an answer's body started as the answer reaches it: its bytes were asked for
/// when the answer was (`ObjectMeta::asked_at`), and a purge since keeps them off the disk.
pub(super) fn asked_at(started: Option<&FillWriter>, meta: &ObjectMeta) {
    if let Some(w) = started {
        w.fill().lower_since(meta.asked_at);
    }
}

#[cfg(test)]
mod tests {
    use relay_cache::ChunkKey;
    use relay_cache::fill::Fill;

    #[test]
    fn a_chunk_is_checked_against_the_checksum_it_came_with() {
        let chunk: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sum = xxhash_rust::xxh3::xxh3_64(&chunk);
        let key = ChunkKey {
            object: std::sync::Arc::from("http://h/o"),
            version: 1,
            index: 0,
        };
        let (_, mut w) = Fill::new(key.clone(), chunk.len());
        w.append(&chunk[..60_000]).unwrap();
        assert!(super::sum_matches(&w, &chunk[60_000..], sum));
        // One byte off anywhere, or the pieces in another order: refused.
        let mut bad = chunk.clone();
        bad[70_000] ^= 1;
        assert!(!super::sum_matches(&w, &bad[60_000..], sum));
        let (_, mut w) = Fill::new(key, chunk.len());
        w.append(&chunk[40_000..]).unwrap();
        assert!(!super::sum_matches(&w, &chunk[..40_000], sum));
    }

    #[test]
    fn a_checksum_is_found_in_the_head_or_announced_for_a_trailer() {
        use super::Sum;
        let mut h = http::HeaderMap::new();
        assert_eq!(Sum::of(&h, true), Sum::None);
        h.insert("trailer", "Other, relay-chunk-sum".parse().unwrap());
        assert_eq!(Sum::of(&h, true), Sum::Trailer);
        assert_eq!(
            Sum::of(&h, false),
            Sum::None,
            "part of a chunk: nothing to check"
        );
        h.insert("relay-chunk-sum", "00000000000000ff".parse().unwrap());
        assert_eq!(Sum::of(&h, true), Sum::Given(255));
    }

    /// The trailer after a chunk: its checksum read; a missing or garbled one, or bytes
    /// past the chunk, are corrupt; a broken body is truncated.
    #[tokio::test]
    async fn a_trailer_checksum_is_read_and_anything_else_refused() {
        use bytes::Bytes;
        use hyper::body::Frame;
        use relay_cache::fill::FillError;
        use std::collections::VecDeque;
        /// A body that hands out the frames it was given, in order.
        struct Frames(VecDeque<Result<Frame<Bytes>, std::io::Error>>);
        impl hyper::body::Body for Frames {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                std::task::Poll::Ready(self.0.pop_front())
            }
        }
        fn trailers(value: &str) -> Frame<Bytes> {
            let mut t = http::HeaderMap::new();
            t.insert("relay-chunk-sum", value.parse().unwrap());
            Frame::trailers(t)
        }
        type Case = (
            Vec<Result<Frame<Bytes>, std::io::Error>>,
            Result<u64, FillError>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![Ok(trailers("0123456789abcdef"))],
                Ok(0x0123_4567_89ab_cdef),
            ),
            (
                vec![
                    Ok(Frame::data(Bytes::new())),
                    Ok(trailers("0000000000000001")),
                ],
                Ok(1),
            ),
            (vec![Ok(trailers("not hex"))], Err(FillError::Corrupt)),
            (vec![], Err(FillError::Corrupt)),
            (
                vec![Ok(Frame::data(Bytes::from_static(b"x")))],
                Err(FillError::Corrupt),
            ),
            (
                vec![Err(std::io::Error::other("cut"))],
                Err(FillError::Truncated),
            ),
        ];
        for (i, (frames, want)) in cases.into_iter().enumerate() {
            let mut body = Frames(frames.into());
            assert_eq!(super::trailer_sum(&mut body, 1000).await, want, "case {i}");
        }
    }
}

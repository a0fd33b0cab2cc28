//! The body of a response, piece by piece: from the chunk the response holds or the memory
//! tier, else what is on its way (the chunk's fill, or another connection's read of it),
//! else the disk tier, the directory origin's file or a fill it claims; or a pass-through's
//! stream; multipart parts one after another.

use super::types::{Chunked, DirOpen, DiskRead, FileRead, PassReader, Route};
use super::{Action, Cx, Exchange, STARTED_OVER, State, Step};
use bytes::Bytes;
use relay_cache::fill::{Fill, FillError};
use relay_cache::inflight::{ChunkShare, Claim, Flight};
use relay_cache::{ChunkKey, ChunkRef, ObjectMeta, Source};
use relay_proto::multipart::Multipart;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the read-ahead found for one chunk (`Exchange::claim_ahead`).
enum Ahead {
    /// Claimed: this response has it fetched.
    Mine(relay_cache::fill::FillWriter),
    /// Held, or on its way already.
    Elsewhere,
    /// Chunk memory is at its bound.
    NoRoom,
}

/// The last chunk of a run from `first` that one streamed fetch asks for: up to `cap`,
/// ending before the first chunk held or on its way, so the answer is read to its end (its
/// connection kept) rather than cut there.
fn run_last(
    cache: &relay_cache::Cache,
    object: &Arc<str>,
    version: u64,
    first: u64,
    cap: u64,
) -> u64 {
    (first + 1..=cap)
        .take_while(|&index| {
            let key = ChunkKey {
                object: object.clone(),
                version,
                index,
            };
            !cache.holds(&key.as_ref()) && cache.inflight.flight(&key).is_none()
        })
        .last()
        .unwrap_or(first)
}

/// How many read-aheads one streamed fetch asks for at most (`Exchange::read_ahead`): a
/// longer body takes another, started as the read-ahead reaches the first's end, while the
/// first still has a read-ahead's bytes to come.
const STREAM_SPAN: u64 = 4;

impl Exchange {
    /// Queues the next body piece, or says what it has to wait for.
    pub(super) fn next_piece(&mut self, cx: &mut Cx<'_>) -> Step {
        let layout = cx.shared.cache.layout;
        let Some(body) = self.body.as_mut() else {
            return Step::Again;
        };
        if let Some(pass) = self.pass_body.as_ref() {
            let (piece, ended, end) = match pass {
                PassReader::Stream(r) => {
                    let s = r.stream();
                    // This runs once the previous piece is sent (a zero-copy one's
                    // notification included): its room goes back to the upstream.
                    s.release(body.pos);
                    s.watchers.watch(cx.worker);
                    // The end first: a body that ends right after this still has every
                    // byte readable below.
                    let ended = s.failed() || s.is_done();
                    (s.readable(body.pos), ended, s.end())
                }
            };
            let piece = piece.slice(..piece.len().min((body.end - body.pos) as usize));
            if !piece.is_empty() {
                body.pos += piece.len() as u64;
                self.queue(piece);
                return Step::Again;
            }
            if ended && end == Some(body.pos) {
                // A body without a length, whole: it ends here (then its last chunk).
                body.end = body.pos;
                return Step::Again;
            }
            if ended {
                // Cut short upstream: a 502 while nothing was sent yet, else the client sees
                // a cut connection (reset where the body was going until the close, which
                // would look whole: `Exchange::upstream_failed`).
                self.pass_body = None;
                return self.upstream_failed(cx, FillError::Truncated);
            }
            return Step::Do(self.wait(cx));
        }
        let index = layout.chunk_of(body.pos);
        if let Some(p) = self.owner_fetch.as_ref() {
            // (A body from one answer: its fetch keeps what this client has not reached.)
            body.reader
                .get_or_insert_with(|| p.reader())
                .store(index, Ordering::Release);
        }
        let version = body.meta.version;
        let key = ChunkRef {
            object: &self.key,
            version,
            index,
        };
        // The chunk this response already holds (taken when the head was built, or read
        // from disk), else wherever the cache says it is now (`Cache::source`: memory, what
        // this response already follows for it, a fill or a read in flight, the disk tier,
        // else the origin).
        let mut held = self
            .local
            .as_ref()
            .filter(|(v, i, _)| *v == version && *i == index)
            .map(|(_, _, bytes)| bytes.clone());
        // A chunk the read-ahead found in memory and holds for this body (an object whose
        // origin ignores Range).
        if let Some(b) = self.body.as_mut() {
            while b.ahead_held.front().is_some_and(|(i, _)| *i < index) {
                b.ahead_held.pop_front();
            }
            if held.is_none() && b.ahead_held.front().is_some_and(|(i, _)| *i == index) {
                held = b.ahead_held.pop_front().map(|(_, bytes)| bytes);
            }
        }
        // A fill the fetches ahead started for this chunk: followed, wherever else the
        // chunk may be (a failed one is let go, and the chunk looked for as usual).
        let ahead = self.body.as_mut().and_then(|b| {
            while b
                .ahead_fills
                .front()
                .is_some_and(|f| f.key.index < index || f.error().is_some())
            {
                b.ahead_fills.pop_front();
            }
            b.ahead_fills
                .front()
                .filter(|f| f.key.index == index)
                .cloned()
        });
        // A body from one answer: the fill its fetch keeps for its clients, before the
        // tiers. (Read back from disk, the chunk would need chunk memory that the fills kept
        // for this client hold: under the memory bound, the client and the fetch would each
        // wait for the other's room until the send deadline.)
        let ahead = match (&held, ahead, self.owner_fetch.as_ref()) {
            (None, None, Some(p)) => p.fill(index).filter(|f| f.error().is_none()),
            (_, ahead, _) => ahead,
        };
        let source = match (held, ahead) {
            (Some(bytes), _) => Source::Memory(bytes),
            (None, Some(fill)) => Source::InFlight(Flight::Fill(fill)),
            (None, None) => cx.shared.cache.source(&key, self.src.as_ref()),
        };
        // Each chunk a response sends counts once for the disk tier's admission, wherever
        // it is sent from (a chunk on disk needs none).
        if let (Route::Http(_), Some(body), Some(up)) =
            (self.route, self.body.as_mut(), cx.shared.upstream.as_ref())
            && index >= body.counted
        {
            body.counted = index + 1;
            match &source {
                Source::Memory(bytes) => up.count_request(&key, Some(bytes), &body.meta),
                Source::InFlight(Flight::Fill(_)) | Source::Origin => {
                    up.count_request(&key, None, &body.meta)
                }
                Source::InFlight(Flight::Read(_)) | Source::Disk(_) => {}
            }
        }
        // The chunks after this one are claimed once this one is held or on its way, never
        // before: claimed first, they could take the last chunk memory, and this client
        // would wait for room its own read-ahead holds (nothing it holds is let go until
        // it moves on).
        if let (Route::Http(origin), false) = (self.route, matches!(source, Source::Origin)) {
            self.read_ahead(cx, origin, index);
        }
        match (source, self.route) {
            (Source::Memory(chunk), _) => self.send_chunk(cx, index, chunk),
            (Source::InFlight(flight), _) => self.follow(cx, index, flight),
            (Source::Disk(plan), Route::Http(_)) => self.read_from_disk(cx, index, plan),
            (_, Route::Http(origin)) => {
                let step = self.fetch_chunk(cx, origin, index);
                let owned = ChunkKey {
                    object: Arc::from(self.key.as_str()),
                    version,
                    index,
                };
                if cx.shared.cache.inflight.flight(&owned).is_some() {
                    self.read_ahead(cx, origin, index);
                }
                step
            }
            // (Directory objects are never on the disk tier.)
            (_, Route::Directory) => self.read_from_file(cx, index),
        }
    }

    /// Queues the piece of `chunk` (chunk `index`, in memory) the body needs next.
    fn send_chunk(&mut self, cx: &mut Cx<'_>, index: u64, chunk: Bytes) -> Step {
        // A read this connection took on for others while the chunk reached memory some
        // other way: hand them these bytes.
        if self.chunk_share.is_some() {
            let version = self.body.as_ref().map_or(0, |b| b.meta.version);
            let owned = ChunkKey {
                object: Arc::from(self.key.as_str()),
                version,
                index,
            };
            self.publish_chunk_share(cx, Some((&owned, chunk.clone())));
        }
        let layout = cx.shared.cache.layout;
        let Some(body) = self.body.as_mut() else {
            return Step::Again;
        };
        let start = layout.chunk_start(index);
        let from = (body.pos - start) as usize;
        let to = ((body.end - start) as usize).min(chunk.len());
        if body.meta.open_ended && from == chunk.len() && from < layout.chunk_size() as usize {
            // The last chunk of a body whose length was not known: it ends here.
            body.end = body.pos;
            return Step::Again;
        }
        if from >= to {
            // A stored chunk shorter than the object says: never send it.
            log::error!(
                "chunk {index} of {:?} is short; dropping the connection",
                self.key
            );
            return Step::Do(Action::Close);
        }
        body.pos += (to - from) as u64;
        self.queue(chunk.slice(from..to));
        Step::Again
    }

    /// Queues `piece` as the body's next bytes: as they are, or as one chunk of the chunked
    /// coding (its size line, after the CRLF that ends the chunk before it).
    fn queue(&mut self, piece: Bytes) {
        if let Some(body) = self.body.as_mut()
            && body.chunked != Chunked::No
        {
            let head = &mut self.out.head;
            if body.chunked == Chunked::More {
                head.extend_from_slice(b"\r\n");
            }
            // (Written into the head buffer, kept between pieces: no allocation per piece.)
            let _ = write!(head, "{:x}\r\n", piece.len());
            body.chunked = Chunked::More;
            if let Some(sum) = body.sum.as_mut() {
                sum.update(&piece);
            }
        }
        self.out.body = piece;
        self.out.body_off = 0;
    }

    /// A chunked body is whole: queues its last-chunk (and the end of the chunk before it);
    /// false when the body is not chunked or its end is queued already.
    pub(super) fn end_chunked(&mut self) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        let end: &[u8] = match body.chunked {
            Chunked::No => return false,
            Chunked::First => b"0\r\n",
            Chunked::More => b"\r\n0\r\n",
        };
        let head = &mut self.out.head;
        head.extend_from_slice(end);
        if let Some(sum) = body.sum.take() {
            // The trailer section (RFC 9112 §7.1.2): the checksum of what went before.
            head.extend_from_slice(relay_cluster::peer::CHUNK_SUM.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(&relay_cluster::peer::chunk_sum_hex(sum.sum()));
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        body.chunked = Chunked::No;
        true
    }

    /// A directory-origin chunk not in memory: one read of it however many connections want
    /// it at once. Wait for the read another connection makes, or make it for the others too.
    fn read_from_file(&mut self, cx: &mut Cx<'_>, index: u64) -> Step {
        let Some(version) = self.body.as_ref().map(|b| b.meta.version) else {
            return Step::Again;
        };
        let key = ChunkKey {
            object: Arc::from(self.key.as_str()),
            version,
            index,
        };
        if self.chunk_share.as_ref().is_some_and(|s| s.key != key) {
            self.publish_chunk_share(cx, None);
        }
        if self.chunk_share.is_none() {
            let cache = &cx.shared.cache;
            match cache.inflight.claim_read(key.clone(), &cache.memory) {
                // Read and stored since our memory lookup: take it from memory.
                Claim::Stored => return Step::Again,
                Claim::InFlight(flight) => return self.follow(cx, index, flight),
                Claim::Mine(share) => self.chunk_share = Some(share),
                Claim::NoRoom => return self.wait_for_room(cx),
            }
        }
        // Read the chunk from the origin file into a new buffer, opening the file first
        // (through the ring) when the head came from a cached description.
        let Some(body) = self.body.as_ref() else {
            return Step::Again;
        };
        if body.file.is_none() {
            return match crate::origin::object_path(&self.target) {
                Ok(path) => {
                    self.enter(State::Opening(Box::new(DirOpen::new(path, false))));
                    Step::Again
                }
                Err(_) => Step::Do(Action::Close),
            };
        }
        let len = cx.shared.cache.layout.chunk_len(body.meta.len, index) as usize;
        let Some(buf) = cx.shared.cache.memory.chunk_buf(len) else {
            return self.wait_for_room(cx);
        };
        self.enter(State::ReadingFile(FileRead::new(buf, key)));
        Step::Do(self.read_chunk(cx))
    }

    /// An HTTP-origin chunk on the disk tier: one read of it however many connections want
    /// it at once (or the fill or read of it another connection claimed first). A file that
    /// cannot be read lets the others bring the chunk, and it is fetched upstream.
    fn read_from_disk(
        &mut self,
        cx: &mut Cx<'_>,
        index: u64,
        plan: relay_cache::disk::ReadPlan,
    ) -> Step {
        let cache = &cx.shared.cache;
        let share = match cache.inflight.claim_read(plan.key.clone(), &cache.memory) {
            // Read or fetched and stored since our memory lookup: take it from memory.
            Claim::Stored => return Step::Again,
            Claim::InFlight(flight) => return self.follow(cx, index, flight),
            Claim::Mine(share) => share,
            Claim::NoRoom => return self.wait_for_room(cx),
        };
        self.chunk_share = Some(share);
        let Some(buf) = cache.memory.chunk_buf(plan.body_len as usize) else {
            return self.wait_for_room(cx);
        };
        match DiskRead::new(plan, buf, false) {
            Some(read) => {
                self.enter(State::ReadingDisk(Box::new(read)));
                Step::Do(self.read_disk(cx))
            }
            None => {
                self.publish_chunk_share(cx, None);
                match self.route {
                    Route::Http(origin) => self.fetch_chunk(cx, origin, index),
                    Route::Directory => Step::Do(Action::Close),
                }
            }
        }
    }

    /// An HTTP-origin chunk in no tier and not in flight when looked for: claim its fill
    /// (or join the fill or read another connection claimed since) and send what it has
    /// published; wait for more.
    fn fetch_chunk(&mut self, cx: &mut Cx<'_>, origin: usize, index: u64) -> Step {
        let Some(meta) = self.body.as_ref().map(|b| b.meta.clone()) else {
            return Step::Again;
        };
        // A response that may not be stored has a version of its own (its fetch's), so the
        // fills found here are this client's alone; those its fetch already finished (never
        // in memory) are kept with the fetch.
        let (kept, paced) = match self.owner_fetch.as_ref() {
            Some(p) => {
                let paced = p.is_paced();
                if paced {
                    // Its fetch keeps pace with this client: a chunk not started yet comes
                    // as soon as the fetch sees the client ask for it (`Pending::may_fill`).
                    p.watchers.watch(cx.worker);
                }
                // (A failed one of a ranged body is fetched again, as any chunk is.)
                let kept = p
                    .fill(index)
                    .filter(|f| f.error().is_none() || !meta.ranged);
                (kept, paced)
            }
            None => (None, false),
        };
        if let Some(f) = kept {
            return self.follow(cx, index, Flight::Fill(f));
        }
        if paced {
            return Step::Do(self.wait(cx));
        }
        let key = ChunkKey {
            object: Arc::from(self.key.as_str()),
            version: meta.version,
            index,
        };
        let cache = &cx.shared.cache;
        if !meta.ranged || meta.open_ended {
            // Its chunks come from the one answer being streamed, or from nowhere.
            return match cache.inflight.flight(&key) {
                Some(flight) => self.follow(cx, index, flight),
                None if cache.memory.contains(&key.as_ref()) => Step::Again,
                // Its fetch waits for chunk memory before it fills it.
                None if cache.inflight.awaits_room(&key) => self.wait_for_room(cx),
                // A chunk its fetch started, filled and completed since the kept fills
                // were looked at above (the memory tier may have let it go at once): its
                // fetch keeps it (`Pending::push_fill`) from before it leaves the table, so
                // a second look finds it. Only then is it nowhere.
                // Nor a chunk its fetch has not reached yet: the fetch wakes its clients as
                // it starts each fill, and when it ends (watched before looking, so neither
                // is missed). (A client that came another way, a 304 to its revalidation,
                // follows the fetch bringing this version: `respond_meta`.)
                None => match self.owner_fetch.clone() {
                    Some(p) => {
                        p.watchers.watch(cx.worker);
                        match p.fill(index) {
                            Some(f) => self.follow(cx, index, Flight::Fill(f)),
                            None if p.answering() => Step::Do(self.wait(cx)),
                            None => self.unfetchable(cx, &meta),
                        }
                    }
                    None => self.unfetchable(cx, &meta),
                },
            };
        }
        let len = cache.layout.chunk_len(meta.len, index) as usize;
        let writer = match cache.inflight.claim_fill(key, len, &cache.memory) {
            // Stored between our memory lookup and now: take it from memory.
            Claim::Stored => return Step::Again,
            Claim::InFlight(flight) => return self.follow(cx, index, flight),
            Claim::Mine(writer) => writer,
            Claim::NoRoom => return self.wait_for_room(cx),
        };
        let fill = writer.fill().clone();
        cx.stats.upstream_chunks.fetch_add(1, Ordering::Relaxed);
        if let Some(up) = cx.shared.upstream.as_ref() {
            // An object whose origin ignores Range: any answer costs the object's start,
            // so the chunk goes to this body's whole fetch, or starts one that runs on to
            // the body's end at this client's pace.
            if !up.clustered() && up.ignores_range(origin, &self.key) {
                self.whole_fetch(cx, origin, &meta, writer);
                return self.follow(cx, index, Flight::Fill(fill));
            }
            up.fill_chunk(relay_upstream::ChunkRequest {
                origin,
                path: self.target.clone(),
                meta,
                writer,
                forward: self.fill_forward(cx),
                peers: self.peer_route(false),
            });
        }
        self.follow(cx, index, Flight::Fill(fill))
    }

    /// Hands `writer`'s chunk to this body's whole fetch (`relay_upstream::ranges`), or, if
    /// it takes it no more, starts one from that chunk to the body's end.
    fn whole_fetch(
        &mut self,
        cx: &mut Cx<'_>,
        origin: usize,
        meta: &Arc<relay_cache::ObjectMeta>,
        writer: relay_cache::fill::FillWriter,
    ) {
        let layout = cx.shared.cache.layout;
        let forward = self.fill_forward(cx);
        let Some(b) = self.body.as_mut() else {
            return;
        };
        let writer = match b.feed.as_ref().filter(|f| f.whole()) {
            Some(feed) => match feed.push(writer) {
                Ok(()) => return,
                Err(w) => w,
            },
            None => writer,
        };
        let last = layout.chunk_of(b.end.max(1) - 1);
        self.start_stream(cx, origin, meta, writer, last, true, forward);
    }

    /// Starts a streamed fetch of this body's chunks from `writer`'s to `last`, handed to
    /// it as they are claimed (`relay_upstream::feed`; `whole`: the origin ignores Range for
    /// this object, `Feed::whole`).
    #[expect(
        clippy::too_many_arguments,
        reason = "one stream's request, built here once"
    )]
    fn start_stream(
        &mut self,
        cx: &mut Cx<'_>,
        origin: usize,
        meta: &Arc<relay_cache::ObjectMeta>,
        writer: relay_cache::fill::FillWriter,
        last: u64,
        whole: bool,
        forward: relay_upstream::Forward,
    ) {
        let (Some(up), Some(b)) = (cx.shared.upstream.as_ref(), self.body.as_mut()) else {
            return;
        };
        let layout = cx.shared.cache.layout;
        let index = writer.fill().key.index;
        let last = last.max(index);
        let end = layout.chunk_start(last) + layout.chunk_len(meta.len, last) - 1;
        let (feeder, feed) = relay_upstream::feed::Feed::new(index, last);
        if whole {
            feed.whole(last);
        }
        b.feed = Some(feeder);
        cx.stats.upstream_streams.fetch_add(1, Ordering::Relaxed);
        up.fill_stream(relay_upstream::StreamRequest {
            origin,
            path: self.target.clone(),
            meta: meta.clone(),
            first: writer,
            feed,
            end,
            forward,
        });
    }

    /// The chunks of this body past chunk `index`, up to `origin.read_ahead_bytes` ahead and
    /// no further than the body ends, that are held nowhere and not on their way: their
    /// fills are claimed and fetched now, so a cold object comes without an origin round
    /// trip per chunk. Chunks that run on from one another go to one streamed fetch (a Range
    /// request from the first to the body's end, at most [`STREAM_SPAN`] read-aheads long:
    /// `relay_upstream::feed`), handed to it as they are claimed; in a cluster, where each
    /// chunk is asked of its owner first, each is a chunk fetch of its own. Each chunk is
    /// looked at once per body (`Body::ahead`); chunk memory at its bound stops it. Only for
    /// an object whose chunks are fetched by range (the others come from the one answer
    /// being streamed); for one that may not be stored, its chunks are under its fetch's
    /// own version, found by this client alone (those its head fetch brought are kept by
    /// that fetch, `Pending::kept`).
    fn read_ahead(&mut self, cx: &mut Cx<'_>, origin: usize, index: u64) {
        let cache = &cx.shared.cache;
        let layout = cache.layout;
        let depth = cx.shared.config.origin.read_ahead_bytes / layout.chunk_size();
        let Some(body) = self.body.as_mut() else {
            return;
        };
        let meta = &body.meta;
        // (A body its fetch brings whole, paced by its client, is not fetched again.)
        let paced = self.owner_fetch.as_ref().is_some_and(|p| p.is_paced());
        if depth == 0 || body.end == 0 || !meta.ranged || meta.open_ended || paced {
            return;
        }
        let last = layout.chunk_of(body.end - 1);
        let to = (index + depth).min(last);
        let from = body.ahead.max(index) + 1;
        if from > to {
            return;
        }
        body.ahead = to;
        let meta = meta.clone();
        let Some(up) = cx.shared.upstream.as_ref() else {
            return;
        };
        let streamed = !up.clustered();
        // The origin answered a Range request for this object with the whole body: one
        // whole fetch to the object's end, at this client's pace (`relay_upstream::ranges`).
        let whole = streamed && up.ignores_range(origin, &self.key);
        // (Allocation-free while every chunk ahead is held: the hit path; for an object whose
        // origin ignores Range, each held in memory is taken to hold for this client.)
        let mut object: Option<Arc<str>> = None;
        for j in from..=to {
            let writer = match self.claim_ahead(cache, &mut object, &meta, j, whole) {
                Ahead::Mine(writer) => writer,
                Ahead::NoRoom => {
                    // (Asked again as the body moves on.)
                    if let Some(b) = self.body.as_mut() {
                        b.ahead = j - 1;
                    }
                    return;
                }
                Ahead::Elsewhere => {
                    // The streamed fetch ends before it (one that paused out stays, so this
                    // body's chunks go one by one; a whole one, from an origin that ignored
                    // Range, reads past it, cheaper than another answer from the start).
                    if let Some(b) = self.body.as_mut()
                        && !b.feed.as_ref().is_some_and(|f| f.paused_out() || f.whole())
                    {
                        b.feed = None;
                    }
                    continue;
                }
            };
            // (The body is there: it was at the start, and nothing here takes it. A writer
            // dropped unfilled would fail its chunk for every reader.)
            let Some(b) = self.body.as_mut() else {
                return;
            };
            cx.stats.upstream_chunks.fetch_add(1, Ordering::Relaxed);
            cx.stats.read_ahead.fetch_add(1, Ordering::Relaxed);
            b.ahead_fills.push_back(writer.fill().clone());
            let writer = match b.feed.as_ref() {
                Some(feed) => match feed.push(writer) {
                    Ok(()) => continue,
                    Err(w) => w,
                },
                None => writer,
            };
            // A client slower than streaming pays for (its last streamed fetch paused out)
            // has its chunks fetched one by one.
            let paused_out = b.feed.as_ref().is_some_and(|f| f.paused_out());
            let forward = self.fill_forward(cx);
            // (A client of an object its origin ignores Range for has a whole fetch still.)
            let (Some(object), true) = (object.as_ref(), streamed && (whole || !paused_out)) else {
                up.fill_chunk(relay_upstream::ChunkRequest {
                    origin,
                    path: self.target.clone(),
                    meta: meta.clone(),
                    writer,
                    forward,
                    peers: self.peer_route(false),
                });
                continue;
            };
            let span_last = run_last(
                cache,
                object,
                meta.version,
                j,
                (j + depth * STREAM_SPAN - 1).min(last),
            );
            let span_last = match whole {
                true => last,
                false => span_last,
            };
            self.start_stream(cx, origin, &meta, writer, span_last, whole, forward);
        }
    }

    /// Chunk `j` of this body for the read-ahead: claimed (its fill this response's to have
    /// fetched), or held or on its way already. One on its way (a head fetch's span, kept
    /// for this client when it may not be stored; another client's fetch) is held for this
    /// client, so the memory tier letting it go before the client gets there costs no
    /// second fetch. `object` is the body's key, made on the first claim. `pin`: the
    /// object's origin ignores Range, and a chunk in memory is held for this client too
    /// (`Body::ahead_held`), since fetching it again would cost the object's start.
    fn claim_ahead(
        &mut self,
        cache: &relay_cache::Cache,
        object: &mut Option<Arc<str>>,
        meta: &relay_cache::ObjectMeta,
        j: u64,
        pin: bool,
    ) -> Ahead {
        let held = ChunkRef {
            object: &self.key,
            version: meta.version,
            index: j,
        };
        if pin {
            match cache.held(&held) {
                relay_cache::Held::Memory(bytes) => {
                    if let Some(b) = self.body.as_mut() {
                        b.ahead_held.push_back((j, bytes));
                    }
                    return Ahead::Elsewhere;
                }
                relay_cache::Held::Disk => return Ahead::Elsewhere,
                relay_cache::Held::Nowhere => {}
            }
        } else if cache.holds(&held) {
            return Ahead::Elsewhere;
        }
        let on_its_way = match self.owner_fetch.as_ref().and_then(|p| p.take_kept(j)) {
            Some(fill) => Some(fill),
            None => {
                let key = ChunkKey {
                    object: object
                        .get_or_insert_with(|| Arc::from(self.key.as_str()))
                        .clone(),
                    version: meta.version,
                    index: j,
                };
                let len = cache.layout.chunk_len(meta.len, j) as usize;
                match cache.inflight.claim_fill(key, len, &cache.memory) {
                    Claim::Mine(writer) => return Ahead::Mine(writer),
                    Claim::NoRoom => return Ahead::NoRoom,
                    Claim::InFlight(Flight::Fill(fill)) => Some(fill),
                    Claim::Stored | Claim::InFlight(_) => None,
                }
            }
        };
        if let (Some(fill), Some(b)) = (on_its_way, self.body.as_mut()) {
            b.ahead_fills.push_back(fill);
        }
        Ahead::Elsewhere
    }

    /// Chunk memory is at its bound (`relay_cache::arena`): this response lets go of the
    /// chunks it has sent and of a read it took on for others (they ask again themselves),
    /// and waits, asking again when chunk memory is given back (`Arena::watch_room`) or its
    /// worker ticks. Room comes back as fills complete, senders finish and stalled readers
    /// are cut; a response that gets none within its send deadline is cut (its head is
    /// out: the client sees a short body).
    fn wait_for_room(&mut self, cx: &mut Cx<'_>) -> Step {
        self.publish_chunk_share(cx, None);
        self.src = None;
        self.local = None;
        // The chunks the read-ahead holds ahead of this client (found in memory, or filled
        // for it) are room too: held while this client waits for room for a chunk before
        // them (one the tier let go since the read-ahead found it there), they could be all
        // of it, and every client wait on the others'. Those filled already go (a fill
        // still on its way is kept: it completes into the tier as it would, and holds no
        // more meanwhile); one the tier let go is fetched again when the client gets there.
        if let Some(b) = self.body.as_mut() {
            b.ahead_held.clear();
            b.ahead_fills.retain(|f| !f.is_done());
        }
        if let Some(arena) = cx.shared.cache.memory.arena() {
            arena.watch_room(cx.worker);
        }
        cx.stats.room_waits.fetch_add(1, Ordering::Relaxed);
        Step::Do(self.wait(cx))
    }

    /// Chunk `index` is on its way: stream what its fill has published, or wait on the
    /// read another connection makes of it.
    fn follow(&mut self, cx: &mut Cx<'_>, index: u64, flight: Flight) -> Step {
        match flight {
            Flight::Fill(fill) => {
                self.src = Some(Flight::Fill(fill.clone()));
                self.send_fill(cx, index, fill)
            }
            Flight::Read(share) => self.await_read(cx, index, share),
        }
    }

    /// Another connection's read of chunk `index`: its bytes become this response's once
    /// it has them; until then, wait (woken when it settles). A read that ended without
    /// bytes (a bad or vanished file, or its client left) is out of the table by then: look
    /// again (the disk tier has dropped a bad file; a good one is read by whoever asks
    /// first). A read this connection makes itself goes on.
    fn await_read(&mut self, cx: &mut Cx<'_>, index: u64, share: Arc<ChunkShare>) -> Step {
        if self
            .chunk_share
            .as_ref()
            .is_some_and(|own| Arc::ptr_eq(own, &share))
        {
            return match self.route {
                // Claimed before its file was opened: read it now.
                Route::Directory => self.read_from_file(cx, index),
                // (A disk read is made as soon as it is claimed: one left unmade lets the
                // others bring the chunk.)
                Route::Http(_) => {
                    self.publish_chunk_share(cx, None);
                    Step::Again
                }
            };
        }
        let result = match share.result() {
            Some(result) => result.clone(),
            None => {
                // Registered first, then looked at again: a settle after the look wakes us.
                share.watchers.watch(cx.worker);
                match share.result() {
                    Some(result) => result.clone(),
                    None => {
                        self.src = Some(Flight::Read(share));
                        return Step::Do(self.wait(cx));
                    }
                }
            }
        };
        self.src = None;
        self.waited(cx);
        if let Some(bytes) = result {
            self.local = Some((share.key.version, index, bytes));
        }
        Step::Again
    }

    /// Queues what `fill` (of chunk `index`) has published of the piece the body needs
    /// next, or waits for more; a fill that failed, or ended short, fails the response —
    /// unless the body's length was not known and the fill is its last chunk, ended short
    /// where the body ends.
    fn send_fill(&mut self, cx: &mut Cx<'_>, index: u64, fill: Arc<Fill>) -> Step {
        let layout = cx.shared.cache.layout;
        let Some(body) = self.body.as_mut() else {
            return Step::Do(Action::Idle);
        };
        fill.watchers.watch(cx.worker);
        // Done first: a fill seen done has its final length (written before it is marked).
        let done = fill.is_done();
        let len = if done { fill.len() } else { fill.room() };
        let start = layout.chunk_start(index);
        let from = (body.pos - start) as usize;
        let to = ((body.end - start) as usize).min(len);
        let piece = fill.slice(from, to);
        if !piece.is_empty() {
            body.pos += piece.len() as u64;
            self.queue(piece);
            return Step::Again;
        }
        if let Some(e) = fill.error() {
            self.src = None;
            return self.upstream_failed(cx, e);
        }
        if done && body.meta.open_ended && from == len && len < layout.chunk_size() as usize {
            body.end = body.pos;
            self.src = None;
            return Step::Again;
        }
        if from >= to {
            // The fill is shorter than the object says: never send a short body as whole.
            self.src = None;
            return self.upstream_failed(cx, FillError::Truncated);
        }
        Step::Do(self.wait(cx))
    }

    /// A chunk of an object whose body came from one answer (not `ranged`) is in no tier
    /// and no fill: it cannot be fetched alone. For an open-ended body this is where it
    /// ends when the description with its length says so; otherwise the response fails
    /// (cut, if bytes of it left already) and the description goes, so the next request
    /// fetches the object whole again.
    fn unfetchable(&mut self, cx: &mut Cx<'_>, meta: &ObjectMeta) -> Step {
        let described = cx.shared.cache.meta.get(&self.key);
        let pos = self.body.as_ref().map_or(0, |b| b.pos);
        if meta.open_ended
            && let Some(done) = described
                .as_ref()
                .filter(|d| d.version == meta.version && !d.open_ended)
            && done.len == pos
            && let Some(body) = self.body.as_mut()
        {
            body.end = pos;
            return Step::Again;
        }
        if described.is_some_and(|d| d.version == meta.version) {
            cx.shared.cache.meta.remove(&self.key);
        }
        if self.untouched() && self.restores & STARTED_OVER == 0 {
            return self.start_over(cx);
        }
        self.upstream_failed(cx, FillError::Changed)
    }

    /// No byte of the response has left yet (its head is made, not sent).
    fn untouched(&self) -> bool {
        self.out.head_off == 0
            && !self.out.head.is_empty()
            && self.out.body.is_empty()
            && self.multi.n == 0
    }

    /// A body from one answer lost a chunk to the memory tier between the lookup that
    /// found it whole and the read (`Exchange::at_hand` found each chunk held or on its
    /// way; the fetch ended and the tier let one go before this client got to it): no byte
    /// of the response left yet, so it starts over, once, from the lookup, which finds the
    /// object's chunks gone and fetches it whole again (or joins the fetch that does). A
    /// second loss is a 502, as any fetch failing under an untouched response.
    fn start_over(&mut self, cx: &mut Cx<'_>) -> Step {
        cx.stats.started_over.fetch_add(1, Ordering::Relaxed);
        self.body = None;
        self.out.head.clear();
        self.owner_fetch = None;
        self.src = None;
        self.local = None;
        self.restores |= STARTED_OVER;
        self.respond(cx);
        Step::Again
    }

    /// An upstream fetch failed under a response: if no byte of it left yet, answer with an
    /// error status; otherwise cut the connection (the client sees a short body, never a
    /// wrong one passed off as whole).
    pub(super) fn upstream_failed(&mut self, cx: &mut Cx<'_>, e: FillError) -> Step {
        cx.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        if self.untouched() {
            self.body = None;
            self.out.head.clear();
            self.upstream_error(cx, e);
            self.close_after = true;
            Step::Again
        } else {
            log::warn!("upstream failed mid-response ({e}); closing the connection");
            // A body sent until the close (open-ended, to an HTTP/1.0 client) would look
            // whole after a plain close: reset instead.
            self.abort = self
                .body
                .as_ref()
                .is_some_and(|b| b.meta.open_ended && b.chunked == Chunked::No);
            Step::Do(Action::Close)
        }
    }

    /// multipart/byteranges: queues the next part's head, or the closing boundary; false
    /// when the response is not multipart or its parts are done.
    pub(super) fn next_part(&mut self, cx: &Cx<'_>) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        if self.multi.n == 0 {
            return false;
        }
        let m = &mut self.multi;
        let ct = &body.meta.content_type;
        let Ok(mp) = Multipart::new(
            cx.boundary,
            (!ct.is_empty()).then_some(ct.as_str()),
            m.total,
        ) else {
            m.n = 0;
            return false;
        };
        if m.next < m.n {
            let r = m.ranges[m.next];
            mp.part_head(m.next, r, &mut self.out.head);
            body.pos = r.start;
            body.end = r.end + 1;
            m.next += 1;
        } else {
            mp.trailer(&mut self.out.head);
            m.n = 0;
        }
        true
    }

    /// The body is sent: let go of its sources.
    pub(super) fn end_body(&mut self, cx: &mut Cx<'_>) {
        self.body = None;
        self.pass_body = None;
        self.local = None;
        self.src = None;
        // (A share is always settled before its chunk is sent; never leave one.)
        self.publish_chunk_share(cx, None);
    }
}

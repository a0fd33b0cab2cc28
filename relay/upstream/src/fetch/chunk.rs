//! A chunk job: fill one chunk of a known object version with a Range request, refusing an
//! answer from another version (never stitch two versions together).

use super::Context;
use crate::ChunkRequest;
use crate::head;
use bytes::Bytes;
use hyper::body::Incoming;
use relay_cache::ObjectMeta;
use relay_cache::fill::{FillError, FillWriter};
use std::sync::Arc;

impl Context {
    /// Fills one chunk of a known version.
    pub(super) async fn chunk(&self, request: ChunkRequest) {
        let ChunkRequest {
            origin,
            path,
            meta,
            writer,
            forward,
            peers,
        } = request;
        let layout = self.store.layout;
        let index = writer.fill().key.index;
        let start = layout.chunk_start(index);
        let end = start + writer.fill().len() as u64 - 1;
        let key = writer.fill().key.clone();
        // The nearest relays whose digests name the chunk, then its owner among the site's
        // relays, then the origin. A holder's answer that does not fit (another version)
        // is dropped and the owner asked; the owner's, and the origin asked. One that breaks
        // off (the peer died mid-transfer) is continued from the origin (its bytes checked),
        // into the same fill: the client gets the whole chunk, or a cut connection.
        let (mut from_peer, mut owner_next) = match &peers {
            Some(route) => match self
                .ask_holders(origin, route, &path, (start, end), &forward)
                .await
            {
                Some(resp) => (Some(resp), true),
                None => (
                    self.ask_owner(origin, route, &path, Some((start, end)), None, &forward)
                        .await,
                    false,
                ),
            },
            None => (None, false),
        };
        let mut writer = writer;
        // After a peer broke off, the bytes it sent are checked against the origin's (no
        // checksum came for them): the origin is asked from the chunk's start.
        let mut check_sent = false;
        let mut resumed = 0;
        loop {
            let written = writer.fill().len() - writer.remaining();
            let held = if check_sent { written } else { 0 };
            let from = start + (written - held) as u64;
            let peer = from_peer.is_some();
            let resp = match from_peer.take() {
                Some(r) => r,
                None => match self
                    .send_fill(origin, &path, Some((from, end)), None, &forward, None)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return self.fail(writer, e),
                },
            };
            match self
                .fill_rest(origin, resp, writer, (from, held), &meta, peer)
                .await
            {
                Rest::Done => {
                    if peer {
                        self.peer_answered();
                    }
                    return;
                }
                // (Another relay may hold another version for a while: the origin says.)
                Rest::Refused(w, _) if peer => {
                    self.peer_fell_back();
                    writer = w;
                    // (Nothing was written: the owner is asked for the whole chunk.)
                    if let (true, Some(route)) = (std::mem::take(&mut owner_next), &peers) {
                        from_peer = self
                            .ask_owner(origin, route, &path, Some((start, end)), None, &forward)
                            .await;
                    }
                }
                Rest::Refused(w, e) => {
                    if e == FillError::Changed {
                        self.changed(&key.object, key.version);
                    }
                    return self.fail(w, e);
                }
                // Bytes that are not the chunk the peer said it sent: its readers were cut
                // at the end, and nothing is kept.
                Rest::Broke(w, FillError::Corrupt) => {
                    self.peer_corrupt(&path, &w);
                    return self.fail(w, FillError::Corrupt);
                }
                Rest::Broke(w, e) if peer => {
                    self.peer_broke_off(&path, &w, e);
                    check_sent = true;
                    writer = w;
                }
                // An answer of the same version that ended short of the chunk after adding
                // bytes to it (a 206 for fewer bytes than asked: RFC 9110 §15.3.7 has the
                // client read what the answer encloses; or one that broke off): the rest
                // is asked for from where the chunk stands, while each answer adds at least
                // a [`MAX_RESUMES`]th of the chunk. A whole answer that adds less (ranges
                // capped too short to fill a chunk in that many answers) has the object
                // asked for whole from now on, and its other chunk fetches stop resuming
                // (a client that left does not keep them asking).
                Rest::Broke(w, e) => {
                    let added = (w.fill().len() - w.remaining()).saturating_sub(written);
                    let least = w.fill().len().div_ceil(MAX_RESUMES as usize);
                    let whole = self.origins[origin].capped.contains(&key.object);
                    if added >= least.max(1) && resumed < MAX_RESUMES && !whole {
                        resumed += 1;
                        self.resumed(&path, &w, e);
                        writer = w;
                        // (A peer's bytes before it broke off were checked by this answer,
                        // which went past them: the next is asked from where it ended.)
                        check_sent = false;
                        continue;
                    }
                    if added > 0 && e == FillError::Short && !whole {
                        let why = "ranges capped too short";
                        self.capped(origin, &key.object, key.version, why);
                    }
                    return self.fail(w, e);
                }
            }
        }
    }

    /// An origin capped its ranges for `object` so short that a chunk took more than
    /// [`MAX_RESUMES`] answers (`why`): the object is asked for whole from now on
    /// ([`crate::origin::Origin::capped`]), its description of `version` (a stored one
    /// whose chunks are fetched by Range) dropped with that version's chunks on disk, so
    /// the next request asks for it anew.
    pub(super) fn capped(&self, origin: usize, object: &Arc<str>, version: u64, why: &str) {
        self.changed(object, version);
        let o = &self.origins[origin];
        if !o.capped.contains(object) {
            log::warn!(
                "origin {}: {object}: {why}; the object is asked for whole from now on",
                o.config.authority
            );
        }
        o.capped.note(object);
    }

    /// An origin's answer for a chunk ended short of it: logged, counted, asked again.
    pub(super) fn resumed(&self, path: &str, w: &FillWriter, e: FillError) {
        log::debug!(
            "{path} chunk {}: the origin's answer ended ({e}) at {} of {} bytes; the rest \
             asked for from there",
            w.fill().key.index,
            w.fill().len() - w.remaining(),
            w.fill().len()
        );
        self.stats
            .answers_resumed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The rest of a chunk from the origin, after a peer's answer broke off (a head fetch's
    /// first chunk; `Context::chunk` loops on its own): asked from the chunk's start, the
    /// bytes the peer sent checked against the origin's first. An answer that ends short
    /// after them (an origin capping its ranges) has the rest fetched as a chunk job from
    /// where the chunk stands, as [`Context::chunk`] resumes.
    pub(super) async fn resume_from_origin(
        &self,
        origin: usize,
        path: &str,
        forward: &crate::Forward,
        writer: FillWriter,
        meta: &Arc<ObjectMeta>,
    ) {
        let start = self.store.layout.chunk_start(writer.fill().key.index);
        let end = start + writer.fill().len() as u64 - 1;
        let held = writer.fill().len() - writer.remaining();
        let resp = match self
            .send_fill(origin, path, Some((start, end)), None, forward, None)
            .await
        {
            Ok(r) => r,
            Err(e) => return self.fail(writer, e),
        };
        match self
            .fill_rest(origin, resp, writer, (start, held), meta, false)
            .await
        {
            Rest::Done => {}
            Rest::Broke(w, FillError::Corrupt) => {
                self.peer_corrupt(path, &w);
                self.fail(w, FillError::Corrupt);
            }
            // (Past the peer's bytes: those are checked, and the rest goes on from there.)
            Rest::Broke(w, e) if meta.ranged && w.fill().len() - w.remaining() > held => {
                self.resumed(path, &w, e);
                self.chunk_job(origin, path, meta, forward, w);
            }
            Rest::Refused(w, e) | Rest::Broke(w, e) => self.fail(w, e),
        }
    }

    /// A peer's chunk did not match the checksum it came with: logged, counted, and the
    /// peer passed over for a while.
    pub(super) fn peer_corrupt(&self, path: &str, w: &FillWriter) {
        log::error!(
            "{path} chunk {}: a peer's {} bytes do not match the checksum it sent; not kept, \
             its readers cut",
            w.fill().key.index,
            w.fill().len()
        );
        self.stats
            .peer_corrupt
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A peer's answer broke off mid-chunk: logged and counted; the rest comes from the
    /// origin, which is asked from the chunk's start so that the bytes the peer sent are
    /// checked against its own (no checksum came for them).
    pub(super) fn peer_broke_off(&self, path: &str, w: &FillWriter, e: FillError) {
        log::warn!(
            "{path} chunk {}: the peer's answer broke off ({e}) after {} of {} bytes; the \
             rest from the origin, those bytes checked against its own",
            w.fill().key.index,
            w.fill().len() - w.remaining(),
            w.fill().len()
        );
        self.peer_fell_back();
    }

    /// Checks `resp`, an answer to a fetch of `writer`'s chunk from byte `from` of the
    /// object, against `meta` (the same version, the range asked for) and streams its
    /// bytes into `writer` after what it holds; its first `held` bytes are ones `writer`
    /// holds already (a peer's, before it broke off), compared rather than written: corrupt
    /// when they differ.
    pub(super) async fn fill_rest(
        &self,
        origin: usize,
        resp: http::Response<Incoming>,
        mut writer: FillWriter,
        (from, held): (u64, usize),
        meta: &ObjectMeta,
        peer: bool,
    ) -> Rest {
        let status = resp.status().as_u16();
        if let Err(e) = fits(status, resp.headers(), meta, from) {
            return Rest::Refused(writer, e);
        }
        // A peer's answer of one whole chunk carries its checksum: checked before the chunk
        // is kept (a fill that starts mid-chunk, after a peer broke off, has none to check).
        let sum = self.peer_sum(
            resp.headers(),
            peer && writer.remaining() == writer.fill().len(),
        );
        let end = head::answer_end(status, resp.headers());
        let mut body = resp.into_body();
        // (An origin that ignores Range sends the whole object: skip to `from`. One that
        // answers the range has the object forgotten as one it ignores Range for.)
        let skip = if status == 206 { 0 } else { from };
        if status == 206 {
            self.origins[origin]
                .range_ignored
                .forget(&writer.fill().key.object);
        }
        let mut leftover = Bytes::new();
        if skip > 0 {
            let object = writer.fill().key.object.clone();
            leftover = match self.skip(origin, &object, &mut body, skip).await {
                Ok(rest) => rest,
                Err(e) => return Rest::Broke(writer, e),
            };
        }
        // (An answer whose range ends before the held bytes cannot check them: none of it
        // past its range is read.)
        if held > 0 && end < from + held as u64 {
            return Rest::Broke(writer, FillError::Short);
        }
        if held > 0 {
            leftover = match self
                .compare_held(origin, &mut body, &writer, held, leftover)
                .await
            {
                Ok(rest) => rest,
                Err(e) => return Rest::Broke(writer, e),
            };
        }
        let n = leftover.len().min(writer.remaining());
        if n > 0 && writer.append(&leftover[..n]).is_err() {
            return Rest::Broke(writer, FillError::Truncated);
        }
        match self
            .stream_or_return(origin, body, writer, meta, sum, end)
            .await
        {
            Ok(()) => Rest::Done,
            Err((w, e)) => Rest::Broke(w, e),
        }
    }
}

impl Context {
    /// Reads the first `held` bytes of `body` (after `first`, bytes already read of it)
    /// and compares them with the first `held` bytes `writer` holds; what the last frame
    /// held beyond them. Corrupt when they differ.
    async fn compare_held(
        &self,
        origin: usize,
        body: &mut Incoming,
        writer: &FillWriter,
        held: usize,
        first: Bytes,
    ) -> Result<Bytes, FillError> {
        let have = writer.fill().slice(0, held);
        let mut at = 0;
        let mut data = first;
        loop {
            let n = data.len().min(held - at);
            if data[..n] != have[at..at + n] {
                return Err(FillError::Corrupt);
            }
            at += n;
            if at == held {
                return Ok(data.slice(n..));
            }
            data = match self.next_frame(origin, body).await? {
                Some(d) => d,
                None => return Err(FillError::Truncated),
            };
        }
    }
}

/// Whether an answer with `status` and `headers` to a fetch of `meta`'s bytes from `from`
/// on holds them: a 206 starting there, or a 200 (the origin ignored Range), of the same
/// version. Another version is [`FillError::Changed`]: two are never stitched together.
pub(super) fn fits(
    status: u16,
    headers: &http::HeaderMap,
    meta: &ObjectMeta,
    from: u64,
) -> Result<(), FillError> {
    match status {
        200 | 206 => match head::parse(status, headers) {
            Ok(h)
                if h.total != Some(meta.len)
                    || h.etag != meta.etag
                    || h.last_modified != meta.last_modified =>
            {
                Err(FillError::Changed)
            }
            Ok(h) if status == 206 && h.range_start != from => Err(FillError::Truncated),
            Ok(_) => Ok(()),
            Err(_) => Err(FillError::Truncated),
        },
        _ => Err(FillError::Status(status)),
    }
}

/// Origin answers one chunk fetch asks for again after each ended short of the chunk
/// having added bytes to it: an origin capping its ranges at 16 KiB fills a 1 MiB chunk
/// in 64. Past them the chunk fails (its clients cut, never given a short body).
pub(super) const MAX_RESUMES: u32 = 64;

/// How a chunk's answer went ([`Context::fill_rest`]).
pub(super) enum Rest {
    Done,
    /// It does not fit (another version, another range, an error status); nothing written.
    Refused(FillWriter, FillError),
    /// It broke off; the writer holds what came.
    Broke(FillWriter, FillError),
}

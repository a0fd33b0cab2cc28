//! A head job: fetch an object's first chunk (conditionally when a stale copy exists),
//! describe the object from the response head (RFC 9111, through `relay_cache::policy`),
//! renew a stale copy on 304, keep an answer that varies on a field the request carried as
//! that variant, publish the description and fill chunk 0 (or every chunk of a whole body).

use super::{Context, STORED_WRITTEN, end_to_end, unix_now};
use crate::HeadRequest;
use crate::head;
use bytes::Bytes;
use hyper::body::Incoming;
use relay_cache::fill::{FillError, FillWriter};
use relay_cache::policy::response_headers::{BodyFraming, ContentRange};
use relay_cache::{ChunkKey, MetaCache, ObjectMeta};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

impl Context {
    /// The object's description is unknown or stale: ask for its first chunk (conditionally
    /// when a stale copy exists), or for the whole body in one answer when its chunks could
    /// not be combined from separate ranges ([`answer`]).
    pub(super) async fn head(&self, request: HeadRequest) {
        let HeadRequest {
            origin,
            object,
            path,
            mut stale,
            mut forward,
            variant,
            authorization,
            peers,
            span,
        } = request;
        let cs = self.store.layout.chunk_size();
        // (In a cluster the first chunk is asked of its owner: one chunk.)
        let span = match self.peers.get() {
            Some(_) => 1,
            None => span.max(1),
        };
        // Where the origin's 103 Early Hints go: the clients waiting on this fetch.
        let hints = self.store.inflight.pending(&object);
        // (An object whose last answer had no strong validator: whole at once, unless a
        // stale copy is revalidated.)
        let o = &self.origins[origin];
        // (An object whose origin caps its ranges too short is asked for whole when
        // revalidated too: a 206 of a changed one would be read as all of it.)
        let mut whole =
            (stale.is_none() && o.unvalidated.contains(&object)) || o.capped.contains(&object);
        // The relays whose digests name the first chunk, then its owner among the site's
        // relays (once), then the origin.
        let mut ask_peer = peers;
        loop {
            let request_time = unix_now();
            // (Before the request: a purge from here on keeps this answer off the disk.)
            let asked_at = relay_cache::disk::removals();
            let range = (!whole).then_some((0, cs.saturating_mul(span) - 1));
            let from_peer = match (ask_peer.take(), range) {
                (Some(route), Some(chunk)) => {
                    // A relay whose digest names the first chunk (for an object not yet
                    // described here: a revalidation is the owner's or the origin's), then
                    // the first chunk's owner.
                    let held = match stale {
                        None => {
                            self.ask_holders(origin, &route, &path, chunk, &forward)
                                .await
                        }
                        Some(_) => None,
                    };
                    match held {
                        Some(resp) => Some(resp),
                        None => {
                            self.ask_owner(origin, &route, &path, range, stale.as_deref(), &forward)
                                .await
                        }
                    }
                }
                _ => None,
            };
            let peer_answer = from_peer.is_some();
            let resp = match from_peer {
                Some(r) => {
                    self.peer_answered();
                    r
                }
                None => match self
                    .send_fill(
                        origin,
                        &path,
                        range,
                        stale.as_deref(),
                        &forward,
                        hints.as_ref(),
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return self.head_failed(&object, e),
                },
            };
            let response_time = unix_now();
            let status = resp.status().as_u16();
            if status == 304 {
                let Some(stale) = stale.take() else {
                    log::warn!(
                        "origin {}: {path}: a 304 to a request that was not conditional",
                        self.origins[origin].config.authority
                    );
                    return self.head_failed(&object, FillError::Status(502));
                };
                // A 304 whose strong entity tag is not the stored one's validates another
                // representation (RFC 9111 §4.3.4): the stored one is not renewed; asked
                // again, unconditionally.
                if !validates(resp.headers(), &stale.etag) {
                    log::warn!(
                        "origin {}: {path}: a 304 names another entity tag than the stored \
                         {}; asking again without conditions",
                        self.origins[origin].config.authority,
                        stale.etag
                    );
                    continue;
                }
                // Still valid: renew the stored description; its chunks stay as they are.
                let fresh = describe(
                    200,
                    resp.headers(),
                    (request_time, response_time),
                    authorization,
                    &self.origins[origin].policy,
                );
                let mut renewed = stale.renewed(&fresh.keep, Instant::now());
                renewed.headers = updated_fields(&stale.headers, &fresh.headers);
                let renewed = Arc::new(renewed);
                if renewed.storable {
                    self.store.meta.insert(&object, (*renewed).clone());
                } else {
                    // The 304 says it may no longer be shared (`private`, `no-store`): the
                    // stored response answers no one else, from memory or from disk (which
                    // would rebuild its description with the old terms).
                    self.store.meta.remove(&object);
                    if let Some(disk) = self.store.disk.as_ref() {
                        disk.remove_object(&object);
                    }
                }
                let wakers = &self.store.wakers;
                return self
                    .store
                    .inflight
                    .finish_head(&object, Ok(renewed), None, wakers);
            }
            let shape = match answer(status, resp.headers(), whole, cs) {
                Answer::Object(shape) => shape,
                Answer::Whole => {
                    if !head::strong_validator(resp.headers()) {
                        self.origins[origin].unvalidated.note(&object);
                    }
                    whole = true;
                    continue;
                }
                Answer::Refused(e) => {
                    log::warn!(
                        "origin {}: {path}: refused answer {status}: {e}",
                        self.origins[origin].config.authority
                    );
                    return self.head_failed(&object, e);
                }
            };
            // An origin error while a stale copy may stand in (stale-if-error): the waiting
            // clients get that copy, and the stored description stays.
            if relay_cache::policy::freshness::is_error_status(status)
                && stale
                    .as_ref()
                    .is_some_and(|s| s.may_serve_on_error(Instant::now()))
            {
                return self.head_failed(&object, FillError::Status(status));
            }
            // (Never a chunk by Range of an origin that caps its ranges too short.)
            let shape = Shape {
                ranged: shape.ranged && !self.origins[origin].capped.contains(&object),
                ..shape
            };
            let d = describe(
                shape.status,
                resp.headers(),
                (request_time, response_time),
                authorization,
                &self.origins[origin].policy,
            );
            // What the fetching client alone gets when the stored fields leave some out.
            let owner_headers = d.strips.then(|| end_to_end(resp.headers(), STORED_WRITTEN));
            // The base entry answers requests that send none of the fields the response
            // varies on; this answer was fetched with some of them. It is the variant of the
            // values sent: keep it as that, and ask for the base entry without those fields
            // (each round drops at least one field, so this ends). An answer that may not be
            // stored is its client's alone whatever it varies on: it goes to that client as
            // it is (every other waiting client asks for itself), with no base to ask for.
            let vary = d.vary.clone();
            let mut meta = object_meta(
                &head::validators(resp.headers()),
                &shape,
                d,
                (&self.store.meta, &object),
            );
            meta.asked_at = asked_at;
            let meta = Arc::new(meta);
            // (With the fields its client gets: this answer's own, all of them.)
            let carried = vary
                .filter(|fields| !variant && meta.storable && carries_any(&forward, fields))
                .map(|fields| {
                    let owned = owner_headers
                        .clone()
                        .unwrap_or_else(|| end_to_end(resp.headers(), STORED_WRITTEN));
                    (fields, owned)
                });
            // A whole body for a Range request of a part of it: the origin ignores Range
            // for this object (`crate::ranges`); a part, it honours it (now).
            if status == 200 && meta.ranged && range.is_some_and(|(_, end)| meta.len > end + 1) {
                self.origins[origin].range_ignored.note(&object);
            } else if shape.partial {
                self.origins[origin].range_ignored.forget(&object);
            }
            if meta.ranged {
                self.origins[origin].unvalidated.forget(&object);
            }
            let sum = self.peer_sum(resp.headers(), peer_answer && shape.partial);
            // The bytes a 206 holds from the object's start (more than its first chunk when
            // the fetch asked for a span).
            // (No more than was asked: an origin that answers any range with the whole
            // object does not have it all filled here.)
            let covered = match head::content_range(resp.headers()) {
                Ok(ContentRange::Bytes { last, .. }) if shape.partial => {
                    last.saturating_add(1).min(cs.saturating_mul(span))
                }
                _ => 0,
            };
            let answered_end = head::answer_end(status, resp.headers());
            let extent = (covered, answered_end);
            let body = resp.into_body();
            if let Some((fields, owned)) = carried {
                // (Storable: see `carried`.)
                let mut key = object.to_string();
                let sent = forward.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
                relay_cache::key::push_variant(&mut key, &fields, sent);
                let key: Arc<str> = key.into();
                // The client that started the fetch is answered with this variant, this
                // answer's own fields (its cookie, say) included, whatever the base's
                // answer asked for next turns out to be.
                if let Some(p) = self.store.inflight.pending(&object) {
                    p.set_carried(relay_cache::inflight::Carried {
                        key: key.clone(),
                        version: meta.version,
                        headers: owned,
                    });
                }
                if !meta.open_ended {
                    self.store.meta.insert(&key, (*meta).clone());
                }
                let writer = self.start_first(origin, &key, &meta).await;
                let spanned = self.open_span(&key, &meta, covered, writer.is_some(), None);
                let ctx = self.clone();
                let answer = Answered::new(shape.partial, extent, spanned, &path, &forward);
                tokio::spawn(async move {
                    ctx.fill_from(origin, answer, body, writer, &key, &meta, None)
                        .await;
                });
                forward = forward
                    .iter()
                    .filter(|(n, _)| !fields.iter().any(|f| f.eq_ignore_ascii_case(n)))
                    .cloned()
                    .collect();
                whole = false;
                continue;
            }
            // Start chunk 0's fill before publishing the description, so waiters find it; and
            // those of the other chunks the answer holds, so their read-ahead finds them on
            // their way rather than fetching them again.
            let writer = self.start_first(origin, &object, &meta).await;
            let pending = self.store.inflight.pending(&object);
            if let (Some(p), Some(h)) = (pending.as_ref(), owner_headers) {
                p.set_owner_headers(h);
            }
            // A response that may not be stored never reaches the memory tier: its client
            // reads the later chunks this fetch brings from the pending fetch it started.
            // So do the clients of a body from one answer: none of its chunks can be
            // fetched again should the memory tier let it go before they read it.
            let keep = pending.filter(|_| !meta.storable || !meta.ranged);
            // A body from one answer: not a 206 of a ranged object (`fill_from` streams
            // the rest of the others whole).
            let whole = !shape.partial || !meta.ranged;
            if let Some(p) = keep.as_ref().filter(|_| !meta.storable && whole) {
                // Its client alone reads a body from one answer: the fetch keeps pace with
                // it. (The client of a ranged 206 fetches the chunks past what it holds
                // itself.)
                p.pace();
            }
            let spanned = self.open_span(&object, &meta, covered, writer.is_some(), keep.as_ref());
            // A body whose length is not known yet is described in the meta cache once it
            // ended (`Context::end_open`).
            if meta.storable && !meta.open_ended {
                self.store.meta.insert(&object, (*meta).clone());
            }
            let first = writer.as_ref().map(|w| w.fill().clone());
            // Its clients wait for the chunks of a body from one answer it has not started
            // yet, until it ends (however it ends: the guard), from before they learn of it;
            // an answer without a length (always from one answer) is joined by clients that
            // ask while it arrives: registered before the head entry goes, so no client
            // finds neither.
            let _answering = keep
                .as_ref()
                .filter(|_| whole)
                .map(|p| Answering::new(&self.store, &object, p));
            self.store
                .inflight
                .finish_head(&object, Ok(meta.clone()), first, &self.store.wakers);
            // (The fetch's readers are counted by the references to its `Pending`.)
            drop(hints);
            let spanned = match peer_answer {
                // (A peer is asked for one chunk: nothing spanned to fill.)
                true => {
                    for s in spanned {
                        self.fail(s, FillError::Truncated);
                    }
                    Vec::new()
                }
                false => spanned,
            };
            match (peer_answer && shape.partial, writer) {
                // A peer's first chunk that breaks off continues from the origin where it
                // stopped, into the same fill.
                (true, Some(w)) => match self
                    .stream_or_return(origin, body, w, &meta, sum, answered_end)
                    .await
                {
                    Ok(()) => {}
                    Err((w, FillError::Corrupt)) => {
                        self.peer_corrupt(&path, &w);
                        self.fail(w, FillError::Corrupt);
                    }
                    Err((w, e)) => {
                        self.peer_broke_off(&path, &w, e);
                        self.resume_from_origin(origin, &path, &forward, w, &meta)
                            .await;
                    }
                },
                (_, writer) => {
                    let answer = Answered::new(shape.partial, extent, spanned, &path, &forward);
                    self.fill_from(origin, answer, body, writer, &object, &meta, keep.as_ref())
                        .await
                }
            }
            return;
        }
    }

    /// The fill of an object's first chunk (None when it is empty or already in flight),
    /// once chunk memory has room for it (`Context::start_when_room`; None when it had
    /// none within the origin's idle timeout: the body is not read, and a client that
    /// wants it asks for the chunk again).
    pub(super) async fn start_first(
        &self,
        origin: usize,
        object: &Arc<str>,
        meta: &ObjectMeta,
    ) -> Option<FillWriter> {
        let first_len = self.chunk_room(meta, 0) as usize;
        let key = ChunkKey {
            object: object.clone(),
            version: meta.version,
            index: 0,
        };
        if first_len == 0 {
            return None;
        }
        let started = self
            .start_when_room(origin, key, first_len, None)
            .await
            .ok()
            .flatten();
        super::body::asked_at(started.as_ref(), meta);
        started
    }

    /// The fills of the chunks after the first that a head fetch's 206 holds whole
    /// (`covered` bytes from the object's start), started before the description is
    /// published: for a ranged object whose first chunk's fill this fetch started
    /// (`first`), storable, or kept for its client (`keep`: one that may not be stored).
    /// Stops at a chunk held or already on its way, or when chunk memory is at its bound
    /// (the rest of the answer is not read, and the client fetches those chunks).
    fn open_span(
        &self,
        object: &Arc<str>,
        meta: &ObjectMeta,
        covered: u64,
        first: bool,
        keep: Option<&Arc<relay_cache::inflight::Pending>>,
    ) -> Vec<FillWriter> {
        let layout = self.store.layout;
        let mut fills = Vec::new();
        let kept = meta.storable || keep.is_some();
        if !first || !meta.ranged || !kept || meta.open_ended || covered == 0 {
            return fills;
        }
        let covered = covered.min(meta.len);
        // Chunks the answer holds to their end.
        let whole = (1..layout.chunk_count(meta.len))
            .take_while(|&i| layout.chunk_start(i) + layout.chunk_len(meta.len, i) <= covered);
        for index in whole {
            let key = ChunkKey {
                object: object.clone(),
                version: meta.version,
                index,
            };
            let held = self.store.memory.contains(&key.as_ref())
                || self
                    .store
                    .disk
                    .as_ref()
                    .is_some_and(|d| d.contains(&key.as_ref()));
            if held {
                break;
            }
            match self.open_chunk(object, meta, index, keep) {
                Ok((Some(w), _)) => fills.push(w),
                _ => break,
            }
        }
        fills
    }

    /// Streams the body of a head fetch: its first chunk (a 206), the chunks after it the
    /// 206 holds whose fills were started ([`Context::open_span`]), or every chunk of a
    /// whole body in one answer (or of a 206 that holds an object whose chunks may not be
    /// fetched by range).
    #[expect(
        clippy::too_many_arguments,
        reason = "one fetch's state, passed through"
    )]
    pub(super) async fn fill_from(
        &self,
        origin: usize,
        answer: Answered,
        body: Incoming,
        first: Option<FillWriter>,
        object: &Arc<str>,
        meta: &Arc<ObjectMeta>,
        keep: Option<&Arc<relay_cache::inflight::Pending>>,
    ) {
        let cs = self.store.layout.chunk_size();
        if !answer.partial || (answer.covered > cs && !meta.ranged) {
            return self
                .stream_whole(origin, body, first, object, meta, keep)
                .await;
        }
        let Some(first) = first else {
            return;
        };
        let Some(last) = answer.spanned.last().map(|w| w.fill().key.index) else {
            // A 206 that ended short of the first chunk (an origin capping the bytes of a
            // range), or broke off, after some of its bytes: the rest is a chunk job of its
            // own, from where the chunk stands (as a run's chunks after a break are), if the
            // object's chunks may be fetched by Range (a strong validator: never two
            // versions in one chunk).
            let sum = super::body::Sum::None;
            let end = answer.end;
            if let Err((w, e)) = self
                .stream_or_return(origin, body, first, meta, sum, end)
                .await
            {
                match meta.ranged && w.remaining() < w.fill().len() {
                    true => {
                        self.resumed(&answer.path, &w, e);
                        self.chunk_job(origin, &answer.path, meta, &answer.forward, w);
                    }
                    false => self.fail(w, e),
                }
            }
            return;
        };
        let (feeder, feed) = crate::feed::Feed::new(0, last);
        for w in answer.spanned {
            if let Err(w) = feeder.push(w) {
                self.fail(w, FillError::Truncated);
            }
        }
        drop(feeder);
        let run = super::ahead::Run {
            origin,
            path: &answer.path,
            forward: &answer.forward,
            meta,
            last,
            patient: false,
            end: answer.end,
        };
        self.fill_in_order(&run, body, Bytes::new(), first, &feed)
            .await;
    }
}

/// Whether a 304 with `headers` may renew a stored response whose entity tag is `stored`
/// (RFC 9111 §4.3.4): unless both are strong tags that differ (one it does not name, a weak
/// one, or none, leaves the stored one as it is).
fn validates(headers: &http::HeaderMap, stored: &str) -> bool {
    use relay_proto::conditional::EntityTag;
    let sent = headers
        .get(http::header::ETAG)
        .and_then(|v| EntityTag::parse(v.as_bytes()));
    match (sent, EntityTag::parse(stored.as_bytes())) {
        (Some(sent), Some(stored)) if !sent.weak && !stored.weak => sent.strong_eq(&stored),
        _ => true,
    }
}

/// What a head fetch's answer holds, for [`Context::fill_from`].
pub(super) struct Answered {
    /// A 206 from the object's start.
    pub partial: bool,
    /// The bytes it holds from the start (a 206).
    pub covered: u64,
    /// Where its bytes end in the object ([`crate::head::answer_end`]).
    pub end: u64,
    /// The fills of its chunks after the first, in order ([`Context::open_span`]).
    pub spanned: Vec<FillWriter>,
    /// The request target and the client's fields, for chunks fetched anew should the
    /// answer break off.
    pub path: String,
    pub forward: crate::Forward,
}

impl Answered {
    /// `(covered, end)`: the bytes it holds from the start, and where they end.
    fn new(
        partial: bool,
        (covered, end): (u64, u64),
        spanned: Vec<FillWriter>,
        path: &str,
        forward: &crate::Forward,
    ) -> Answered {
        Answered {
            partial,
            covered,
            end,
            spanned,
            path: path.to_string(),
            forward: forward.clone(),
        }
    }
}

/// The stored fields as a 304 updates them (RFC 9111 §3.2, §4.3.4): each field the 304
/// carries replaces the stored lines of that name, the others stay. (Both are encoded
/// `Name: value\r\n` lines, without the fields relay writes itself: a 304 changes neither
/// the length nor the validators of what is stored.)
fn updated_fields(stored: &Bytes, fresh: &Bytes) -> Bytes {
    if fresh.is_empty() {
        return stored.clone();
    }
    let name = |line: &[u8]| -> Vec<u8> {
        let end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        line[..end].to_ascii_lowercase()
    };
    let lines = |b: &Bytes| -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(n) = b[at..].windows(2).position(|w| w == b"\r\n") {
            out.push(b.slice(at..at + n + 2));
            at += n + 2;
        }
        out
    };
    // (A cookie a 304 sets is its client's: never stored for the others.)
    let fresh: Vec<Bytes> = lines(fresh)
        .into_iter()
        .filter(|l| name(l) != b"set-cookie")
        .collect();
    let replaced: Vec<Vec<u8>> = fresh.iter().map(|l| name(l)).collect();
    let mut out = Vec::with_capacity(stored.len() + fresh.iter().map(Bytes::len).sum::<usize>());
    for line in lines(stored) {
        if !replaced.contains(&name(&line)) {
            out.extend_from_slice(&line);
        }
    }
    for line in fresh {
        out.extend_from_slice(&line);
    }
    // (An allocation of their exact length: the meta cache weighs them by it.)
    Bytes::from(out.into_boxed_slice())
}

/// Whether a fetch that sent `forward` carried any of the fields a response varies on.
fn carries_any(forward: &[(String, Vec<u8>)], vary: &[String]) -> bool {
    forward
        .iter()
        .any(|(n, _)| vary.iter().any(|f| f.eq_ignore_ascii_case(n)))
}

/// What the head of an answer to a head fetch makes of the object ([`answer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    /// The object's status (a 206 to relay's Range is a 200's part).
    status: u16,
    /// The body's length; None until the body ends (chunked, or until the connection
    /// closes).
    len: Option<u64>,
    /// The answer holds the first chunk only (a 206).
    partial: bool,
    /// Its other chunks may be fetched with Range requests ([`ObjectMeta::ranged`]).
    ranged: bool,
}

/// What to do with an answer to a head fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Object(Shape),
    /// Ask again without Range: the body must come from one answer (no strong validator to
    /// combine ranges under, or no complete length in the 206).
    Whole,
    /// Refused: never relayed, never stored.
    Refused(FillError),
}

/// Reads the head of an answer with `status` to a head fetch: a Range request for the first
/// `chunk_size` bytes, or (`whole`) for the whole body. Every final status is an object with
/// its body (RFC 9110 §15); only a 206 can be partial, and only a 200 (or its 206) with a
/// strong validator and a length is `ranged` (§8.8.1, §14.2). Interim statuses that reach
/// here (101), framing errors (RFC 9112 §6.3) and transfer codings other than chunked
/// (§6.1) are refused.
fn answer(status: u16, h: &http::HeaderMap, whole: bool, chunk_size: u64) -> Answer {
    let object = |status, len, partial, ranged| {
        Answer::Object(Shape {
            status,
            len,
            partial,
            ranged,
        })
    };
    match status {
        ..200 => Answer::Refused(FillError::Status(502)),
        // A coding relay cannot take off: its bytes are not the body.
        _ if head::foreign_transfer_coding(h) => Answer::Refused(FillError::Framing),
        206 if whole => Answer::Refused(FillError::Framing),
        206 => match head::content_range(h) {
            Ok(ContentRange::Bytes {
                first: 0,
                last,
                complete: Some(total),
            }) => {
                let strong = head::strong_validator(h);
                // The first chunk holds the whole object: nothing to combine.
                let single = last.saturating_add(1) >= total;
                match (strong, single || total <= chunk_size) {
                    (true, _) => object(200, Some(total), true, true),
                    (false, true) => object(200, Some(total), true, false),
                    (false, false) => Answer::Whole,
                }
            }
            Ok(ContentRange::Bytes { first: 0, .. }) => Answer::Whole,
            _ => Answer::Refused(FillError::Framing),
        },
        // An empty object answers any range with 416 and `bytes */0`.
        416 if !whole => match head::content_range(h) {
            Ok(ContentRange::Unsatisfied { complete: 0 }) => object(200, Some(0), true, true),
            _ => Answer::Whole,
        },
        _ => match head::framing(status, h) {
            Ok(BodyFraming::Empty) => object(status, Some(0), false, false),
            Ok(BodyFraming::Length(n)) => object(
                status,
                Some(n),
                false,
                status == 200 && head::strong_validator(h),
            ),
            Ok(BodyFraming::Chunked | BodyFraming::UntilClose) => {
                object(status, None, false, false)
            }
            Err(_) => Answer::Refused(FillError::Framing),
        },
    }
}

/// An object's description from its first answer's validators, shape and terms.
///
/// Only a storable, ranged object has a version named by its validators (and length), the
/// same for every fetch of that representation. Any other has a version of its own, unique
/// to this fetch: its chunk fills (keyed by version) are then found by the clients of this
/// fetch and by no other fetch, so two answers are never stitched into one body; and a
/// response that may not be stored is found by the client it was fetched for alone — its
/// later chunks, even when the origin sent the whole body at once — not even by a later
/// fetch of the same object for another client. A description heavier than the meta
/// cache keeps under `key` (`MetaCache::admits`: a huge head) makes its response one that
/// may not be stored.
fn object_meta(
    v: &(String, String),
    shape: &Shape,
    d: Described,
    (descriptions, key): (&MetaCache, &str),
) -> ObjectMeta {
    // Counted from a random start in each process: a restarted relay's versions never
    // meet those of the chunks a run before left on disk (chunks are told apart by
    // version alone: a new answer under an old one's version would be served with the old
    // answer's chunks from disk). (62 random bits: room to count without wrapping.)
    static OWN: std::sync::LazyLock<AtomicU64> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        AtomicU64::new(random >> 2)
    });
    let (etag, last_modified) = v;
    let len = shape.len.unwrap_or(0);
    let mut meta = ObjectMeta {
        status: shape.status,
        ranged: shape.ranged,
        open_ended: shape.len.is_none(),
        content_type: d.content_type,
        headers: d.headers,
        vary: d.vary,
        ..ObjectMeta::file(len, 0, etag.clone(), last_modified.clone())
    };
    meta.take_terms(&d.keep);
    // A description too heavy to keep (a huge head): its response is its client's alone,
    // as one that may not be stored.
    if meta.storable && !descriptions.admits(key, &meta) {
        meta.storable = false;
    }
    meta.version = if meta.storable && shape.ranged {
        head::version(etag, last_modified, len)
    } else {
        (1 << 63) | OWN.fetch_add(1, Ordering::Relaxed)
    };
    meta
}

/// What RFC 9111 makes of a response head (`keep`), and the fields relay keeps of it.
struct Described {
    keep: relay_cache::policy::keep::Keep,
    content_type: String,
    headers: Bytes,
    /// `headers` leave out fields a qualified `private` / `no-cache` names (the fetching
    /// client still gets them).
    strips: bool,
    vary: Option<Arc<[String]>>,
}

/// Freshness, storability and stale windows from a response head (the shared-cache rules
/// of `relay_cache::policy::keep`), and the end-to-end header fields to relay to clients.
fn describe(
    status: u16,
    h: &http::HeaderMap,
    times: (u64, u64),
    authorization: bool,
    policy: &relay_cache::policy::PolicyConfig,
) -> Described {
    let pairs = h.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    let (keep, stored) =
        relay_cache::policy::keep::keep(status, pairs, times, authorization, policy);
    let d = &stored.directives;
    Described {
        content_type: h
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        headers: stored_fields(h, d),
        strips: !d.private.fields().is_empty() || !d.no_cache.fields().is_empty(),
        vary: keep.vary.clone().map(Into::into),
        keep,
    }
}

/// The end-to-end fields kept with a description, without those a qualified `private` or
/// `no-cache` names (RFC 9111 §5.2.2.4, §5.2.2.7: e.g. `private="Set-Cookie"` shares the
/// body, never the cookie). The client whose request fetched it gets the fields all the
/// same (`Pending::set_owner_headers`).
fn stored_fields(h: &http::HeaderMap, d: &relay_cache::policy::CacheControl) -> Bytes {
    let mut left_out = STORED_WRITTEN.to_vec();
    left_out.extend(
        d.private
            .fields()
            .iter()
            .chain(d.no_cache.fields())
            .map(String::as_str),
    );
    end_to_end(h, &left_out)
}

/// A fetch bringing a body from one answer, for its clients ([`Pending::answering`],
/// [`relay_cache::inflight::InFlight::answering`]): registered while it lives; when it ends,
/// however it ends, the clients waiting for a chunk it did not start are woken to find it
/// nowhere.
struct Answering<'a> {
    store: &'a crate::Store,
    pending: &'a Arc<relay_cache::inflight::Pending>,
}

impl<'a> Answering<'a> {
    fn new(
        store: &'a crate::Store,
        object: &Arc<str>,
        pending: &'a Arc<relay_cache::inflight::Pending>,
    ) -> Answering<'a> {
        store.inflight.begin_answer(object.clone(), pending);
        Answering { store, pending }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.store.inflight.end_answer(self.pending);
        self.store.wakers.wake(&self.pending.watchers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::tests::fields;
    use std::time::Duration;

    #[test]
    fn rfc9111_4_3_4_a_304_replaces_the_stored_fields_it_carries() {
        let stored =
            Bytes::from_static(b"x-a: 1\r\ncache-control: max-age=5\r\nx-b: 2\r\nx-b: 3\r\n");
        let fresh = Bytes::from_static(b"Cache-Control: max-age=60\r\nx-b: 4\r\nx-new: 5\r\n");
        assert_eq!(
            &updated_fields(&stored, &fresh)[..],
            b"x-a: 1\r\nCache-Control: max-age=60\r\nx-b: 4\r\nx-new: 5\r\n"
        );
        // A cookie a 304 sets is never stored for the other clients.
        let cookie = Bytes::from_static(b"Set-Cookie: s=1\r\nx-new: 6\r\n");
        assert_eq!(
            &updated_fields(&stored, &cookie)[..],
            b"x-a: 1\r\ncache-control: max-age=5\r\nx-b: 2\r\nx-b: 3\r\nx-new: 6\r\n"
        );
        assert_eq!(updated_fields(&stored, &Bytes::new()), stored);
    }

    #[test]
    fn a_fetch_carries_a_vary_field_whatever_its_case() {
        let vary = ["accept-language".to_string(), "x-device".to_string()];
        assert!(carries_any(&fields(&[("Accept-Language", "fr")]), &vary));
        assert!(carries_any(
            &fields(&[("Cookie", "a"), ("X-DEVICE", "tv")]),
            &vary
        ));
        assert!(!carries_any(&fields(&[("Cookie", "a")]), &vary));
        assert!(!carries_any(&[], &vary));
        assert!(!carries_any(&fields(&[("Cookie", "a")]), &[]));
    }

    /// What a response head makes of the description kept from it, as the worker asks
    /// (`is_fresh`, `may_serve_while_revalidating`, `may_serve_on_error`) some time after it
    /// was received: RFC 9111 §4.2 and RFC 5861 through `describe`.
    #[test]
    fn rfc9111_4_2_a_described_response_is_fresh_stale_or_within_a_window() {
        struct Case {
            name: &'static str,
            response: &'static [(&'static str, &'static str)],
            /// Seconds after it was received (request sent and response received at
            /// t=1000, `Date` = 1000).
            after: u64,
            /// (fresh, serve while revalidating, serve on an origin error)
            expect: (bool, bool, bool),
        }
        const FRESH: (bool, bool, bool) = (true, false, true);
        const STALE: (bool, bool, bool) = (false, false, false);
        const CC: &str = "cache-control";
        let cases = [
            Case {
                name: "fresh",
                response: &[(CC, "max-age=60")],
                after: 59,
                expect: FRESH,
            },
            Case {
                name: "expired",
                response: &[(CC, "max-age=60"), ("etag", "\"v1\"")],
                after: 60,
                expect: STALE,
            },
            Case {
                name: "Age header counts",
                response: &[(CC, "max-age=60"), ("age", "59")],
                after: 1,
                expect: STALE,
            },
            Case {
                name: "s-maxage over max-age",
                response: &[(CC, "max-age=600, s-maxage=10")],
                after: 10,
                expect: STALE,
            },
            Case {
                name: "s-maxage fresh",
                response: &[(CC, "max-age=600, s-maxage=10")],
                after: 9,
                expect: FRESH,
            },
            Case {
                name: "response no-cache always validates",
                response: &[(CC, "max-age=600, no-cache, stale-if-error=60")],
                after: 0,
                expect: STALE,
            },
            Case {
                name: "swr window",
                response: &[(CC, "max-age=60, stale-while-revalidate=30")],
                after: 89,
                expect: (false, true, false),
            },
            Case {
                name: "swr beside s-maxage",
                response: &[(CC, "s-maxage=60, stale-while-revalidate=30")],
                after: 70,
                expect: (false, true, false),
            },
            Case {
                name: "swr window passed",
                response: &[(CC, "max-age=60, stale-while-revalidate=30")],
                after: 90,
                expect: STALE,
            },
            Case {
                name: "swr vs must-revalidate",
                response: &[(CC, "max-age=60, stale-while-revalidate=30, must-revalidate")],
                after: 70,
                expect: STALE,
            },
            Case {
                name: "sie window",
                response: &[(CC, "max-age=60, stale-if-error=300")],
                after: 200,
                expect: (false, false, true),
            },
            Case {
                name: "sie window passed",
                response: &[(CC, "max-age=60, stale-if-error=300")],
                after: 360,
                expect: STALE,
            },
            Case {
                name: "sie vs proxy-revalidate",
                response: &[(CC, "max-age=60, stale-if-error=300, proxy-revalidate")],
                after: 200,
                expect: STALE,
            },
            Case {
                name: "invalid expires",
                response: &[("expires", "0")],
                after: 0,
                expect: STALE,
            },
            Case {
                name: "expires in future",
                response: &[("expires", "Thu, 01 Jan 1970 00:17:40 GMT")],
                after: 59,
                expect: FRESH,
            },
            Case {
                name: "garbage max-age is stale",
                response: &[(CC, "max-age=soon")],
                after: 0,
                expect: STALE,
            },
        ];
        let shape = Shape {
            status: 200,
            len: Some(1),
            partial: false,
            ranged: true,
        };
        for c in &cases {
            let mut h = http::HeaderMap::new();
            for (n, v) in [("date", "Thu, 01 Jan 1970 00:16:40 GMT")]
                .iter()
                .chain(c.response)
            {
                h.append(
                    http::header::HeaderName::from_static(n),
                    http::HeaderValue::from_static(v),
                );
            }
            let meta = object_meta(
                &Default::default(),
                &shape,
                describe(200, &h, (1000, 1000), false, &Default::default()),
                (&MetaCache::new(0), "k"),
            );
            let now = meta.fetched + Duration::from_secs(c.after);
            let got = (
                meta.is_fresh(now, Duration::MAX),
                meta.may_serve_while_revalidating(now),
                meta.may_serve_on_error(now),
            );
            assert_eq!(got, c.expect, "{}", c.name);
        }
        // `Vary: *` never matches another request: not stored.
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::CACHE_CONTROL,
            "max-age=60".parse().expect("value"),
        );
        h.append(http::header::VARY, "*".parse().expect("value"));
        assert!(
            !describe(200, &h, (1000, 1000), false, &Default::default())
                .keep
                .storable
        );
    }
}

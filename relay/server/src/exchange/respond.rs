//! Answering a request: from an object description (conditionals, ranges, multipart, the
//! hit or miss it is), or with an error; and the wait on an origin's head that comes
//! before (a pass-through's answer: `pass`).

use super::types::{
    Body, Chunked, DirOpen, Linger, PassRequest, RequestInfo, Route, Small, Usable,
};
use super::{Collect, Cx, Exchange, LINGER_BYTES, RESTORE_BASE, RESTORE_VARIANT, State, Step};
use crate::cache_status::{CacheStatus, Fwd};
use crate::errors::Why;
use crate::origin::OriginError;
use bytes::Bytes;
use relay_cache::fill::FillError;
use relay_cache::inflight::Flight;
use relay_cache::{ChunkKey, ChunkRef, Held, ObjectMeta, ResponseDate};
use relay_proto::multipart::Multipart;
use relay_proto::range::RangeSpec;
use relay_proto::{Method, ResponseHead};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Exchange {
    /// Waits for the object's head from the origin (a fetch this request started or
    /// joined), then answers with it: as the variant this request selects, for this client
    /// alone when it may not be shared, or from a stale copy when the origin failed and
    /// stale-if-error allows.
    pub(super) fn await_head(&mut self, cx: &mut Cx<'_>) -> Step {
        let State::AwaitingHead(p) = &self.state else {
            return Step::Again;
        };
        let p = p.clone();
        p.watchers.watch(cx.worker);
        // Why this request went to the origin (RFC 9211 `fwd`), as its lookup found.
        let lookup = match (self.stale.is_some(), self.variant) {
            // A fresh stored response, validated because the request asked (no-cache,
            // max-age, min-fresh).
            (true, _)
                if self
                    .stale
                    .as_ref()
                    .is_some_and(|s| s.is_fresh(cx.now, Duration::MAX)) =>
            {
                Fwd::Request
            }
            (true, _) => Fwd::Stale,
            (false, true) => Fwd::VaryMiss,
            (false, false) => Fwd::UriMiss,
        };
        let meta = match p.result() {
            // The origin's 103 Early Hints, passed on to an HTTP/1.1 client while the final
            // answer is awaited (RFC 8297; nothing else is being sent on the connection).
            None if !self.hinted
                && self.saved.req.version == 1
                && self.out.pending() == 0
                && let Some(h) = p.hints() =>
            {
                self.hinted = true;
                self.out.head.extend_from_slice(h);
                return Step::Do(self.send_interim(cx));
            }
            None => return Step::Do(self.wait(cx)),
            Some(Err(e)) => {
                self.waited(cx);
                self.leave();
                let e = *e;
                match self.stale.take().filter(|s| s.may_serve_on_error(cx.now)) {
                    // stale-if-error: the origin failed, a stale copy may stand in.
                    Some(stale) => {
                        self.respond_meta(cx, stale, None, Some(CacheStatus::hit("stale-if-error")))
                    }
                    None => self.upstream_error(cx, e),
                }
                return Step::Again;
            }
            Some(Ok(meta)) => meta.clone(),
        };
        self.waited(cx);
        self.leave();
        // The first answer was this client's own variant (asked with its fields, it varies
        // on them): it goes to this client, whatever the base's answer asked for next says.
        let carried = p.carried().filter(|_| self.head_owner && !self.variant);
        let to_variant = match carried {
            Some(c) => {
                self.key.clear();
                self.key.push_str(&c.key);
                true
            }
            // The base entry came back varying, and this request selects another variant:
            // fetch that one (with the request's values) instead. (Not the client whose
            // request fetched an answer that may not be stored: it was asked with this
            // client's fields, and is this client's alone.)
            None => {
                !self.variant
                    && (meta.storable || !self.head_owner)
                    && matches!(self.route, Route::Http(_))
                    && meta.vary.clone().is_some_and(|f| self.select_variant(&f))
            }
        };
        if to_variant && let Route::Http(origin) = self.route {
            self.variant = true;
            self.stale = None;
            if let Some(m) = cx
                .shared
                .cache
                .meta
                .get(&self.key)
                .filter(|m| m.is_fresh(cx.now, Duration::MAX))
            {
                // That client's own answer: its own fields (a cookie the stored ones leave
                // out), and a miss, which it was.
                let (m, how) = match carried.filter(|c| c.version == m.version) {
                    Some(c) => (
                        Arc::new(ObjectMeta {
                            headers: c.headers.clone(),
                            ..(*m).clone()
                        }),
                        Some(CacheStatus {
                            fwd_status: m.status,
                            stored: m.storable,
                            ..CacheStatus::fwd(lookup)
                        }),
                    ),
                    None => (m, None),
                };
                self.respond_meta(cx, m, None, how);
                return Step::Again;
            }
            // After a restart the variant may be on disk: read it (once, however many
            // clients of the base want it) rather than fetch it.
            if self.restores & RESTORE_VARIANT == 0 && self.restore_or_join(cx, RESTORE_VARIANT) {
                return Step::Again;
            }
            let (pending, new) = cx.shared.cache.inflight.head(&self.key);
            if new && let Some(up) = cx.shared.upstream.as_ref() {
                cx.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                up.fetch_head(relay_upstream::HeadRequest {
                    origin,
                    object: Arc::from(self.key.as_str()),
                    path: self.target.clone(),
                    stale: None,
                    forward: self.fill_forward(cx),
                    peers: self.peer_route(true),
                    variant: true,
                    authorization: self.saved.authorized,
                    span: self.head_span(cx),
                });
            }
            self.head_owner = new;
            self.enter(State::AwaitingHead(pending));
            return Step::Again;
        }
        // A response that may not be stored was fetched with the fields of the client that
        // started the fetch (its cookies, say): it is that client's alone. Every other
        // waiting client asks for itself; so does a client with credentials that the answer
        // fetched for another may not serve (RFC 9111 §3.5).
        if (!meta.storable || (self.saved.authorized && !meta.shared_with_credentials))
            && !self.head_owner
            && let Route::Http(origin) = self.route
        {
            self.stale = None;
            self.fetch_alone(
                cx,
                origin,
                CacheStatus {
                    detail: Some("not-shared"),
                    ..CacheStatus::fwd(lookup)
                },
            );
            return Step::Again;
        }
        // Fields the stored description leaves out (a cookie named by `private=`) still
        // reach the client whose request fetched it.
        let meta = match p.owner_headers().filter(|_| self.head_owner) {
            Some(h) => Arc::new(ObjectMeta {
                headers: h.clone(),
                ..(*meta).clone()
            }),
            None => meta,
        };
        self.src = p.first().cloned().map(Flight::Fill);
        // The later chunks of a body from one answer come from that fetch alone: its
        // clients read them from it (it keeps them), whatever the memory tier keeps.
        // (A client whose revalidation was answered 304 reads them from the fetch that
        // brings or brought that body, while anyone holds it, rather than its own.)
        if !meta.ranged || (self.head_owner && !meta.storable) {
            let body_fetch = (!meta.ranged)
                .then(|| cx.shared.cache.inflight.answering(&self.key, meta.version))
                .flatten();
            self.owner_fetch = Some(body_fetch.unwrap_or_else(|| p.clone()));
        }
        // Same version as the stale copy: the origin confirmed it (304). Read from the disk
        // tier for another client: a hit.
        let confirmed = self
            .stale
            .take()
            .is_some_and(|s| s.version == meta.version && p.first().is_none());
        let how = (!p.is_local()).then_some(CacheStatus {
            fwd_status: if confirmed { 304 } else { meta.status },
            stored: meta.storable,
            collapsed: !self.head_owner,
            ..CacheStatus::fwd(lookup)
        });
        self.respond_meta(cx, meta, None, how);
        Step::Again
    }

    /// Fetches the request's object for this client alone, stored nowhere: the request goes
    /// to the origin as a pass-through of a GET or HEAD (its own fields, no body).
    fn fetch_alone(&mut self, cx: &mut Cx<'_>, origin: usize, status: CacheStatus) {
        if self.saved.asks.only_if_cached {
            // RFC 9111 §5.2.1.7: never the origin (a relay asking a holder sends it too).
            let req = self.saved.req;
            cx.stats.made_up.count(504, Why::NotCached);
            self.simple(cx, &req, 504, &[], "not cached\n");
            return;
        }
        let method = match self.saved.req.method {
            Method::Head => http::Method::HEAD,
            _ => http::Method::GET,
        };
        let mut headers =
            relay_proto::forward::forwarded_fields(self.head(), relay_proto::forward::PASS_OWN);
        self.forwarded_for(cx, &mut headers);
        self.pass_status = status;
        self.enter(State::CollectingBody(Box::new(Collect {
            request: PassRequest {
                origin,
                method,
                headers,
                host: String::new(),
                with_body: false,
            },
            body: Vec::new(),
            left: 0,
            reserved: None,
            received: 0,
            upload: None,
        })));
    }

    /// Answers the parsed request. Runs again (with `restores` set) after the disk tier
    /// rebuilt a description it needed, so it counts and times the request once and starts
    /// from the request's own key each time.
    pub(super) fn respond(&mut self, cx: &mut Cx<'_>) {
        if self.restores == 0 {
            cx.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.req_start = Some(cx.now);
        }
        self.key.truncate(self.key_base);
        self.forward = None;
        self.hinted = false;
        self.variant = false;
        // Sources of the previous response on this connection.
        self.src = None;
        self.local = None;
        self.pass_body = None;
        let req = self.saved.req;
        if !matches!(req.method, Method::Get | Method::Head) {
            self.made_up(cx, Why::MethodNotAllowed);
            self.simple(
                cx,
                &req,
                405,
                &[("Allow", b"GET, HEAD")],
                "method not allowed\n",
            );
            return;
        }
        let mut cached = cx.shared.cache.meta.get(&self.key);
        if cached.is_none()
            && matches!(self.route, Route::Http(_))
            && self.restores & RESTORE_BASE == 0
        {
            if self.restore_or_join(cx, RESTORE_BASE) {
                return;
            }
            cached = cx.shared.cache.meta.get(&self.key);
        }
        // A response that varies: this request's variant has a key of its own (unless it
        // sends none of the fields, then the base entry is its variant).
        if let Some(fields) = cached.as_ref().and_then(|m| m.vary.clone())
            && self.select_variant(&fields)
        {
            self.variant = true;
            cached = cx.shared.cache.meta.get(&self.key);
            if cached.is_none() && self.restores & RESTORE_VARIANT == 0 {
                if self.restore_or_join(cx, RESTORE_VARIANT) {
                    return;
                }
                cached = cx.shared.cache.meta.get(&self.key);
            }
        }
        // An object whose body came from one answer, with a chunk gone from every tier, is
        // fetched whole again rather than served in part.
        if cached.as_ref().is_some_and(|m| !self.at_hand(cx, m)) {
            cx.shared.cache.meta.remove(&self.key);
            cached = None;
        }
        match self.route {
            Route::Http(origin) => {
                // RFC 9111 §3.5: a request with credentials is answered from the cache only
                // by a response that says it may be; any other stored one makes it ask the
                // origin for itself.
                if self.saved.authorized
                    && cached.as_ref().is_some_and(|m| !m.shared_with_credentials)
                {
                    self.fetch_alone(
                        cx,
                        origin,
                        CacheStatus {
                            detail: Some("authorization"),
                            ..CacheStatus::fwd(Fwd::Request)
                        },
                    );
                    return;
                }
                // What the stored response is to this request (its own directives, RFC
                // 9111 §5.2.1, narrow or widen what counts as fresh).
                let asks = self.saved.asks;
                match cached.as_ref().map(|m| (m, asks.judge(m, cx.now))) {
                    Some((m, Usable::Fresh)) => {
                        self.respond_meta(cx, m.clone(), None, None);
                        return;
                    }
                    Some((m, Usable::StaleAccepted)) => {
                        self.respond_meta(cx, m.clone(), None, Some(CacheStatus::hit("max-stale")));
                        return;
                    }
                    _ => {}
                }
                // Stale within stale-while-revalidate: served at once, revalidated in the
                // background; not when the request wants a younger response than that.
                let within_swr = cached.as_ref().filter(|m| {
                    asks.max_age.is_none()
                        && asks.min_fresh.is_none()
                        && !asks.no_cache
                        && m.may_serve_while_revalidating(cx.now)
                });
                if asks.only_if_cached && within_swr.is_none() {
                    // RFC 9111 §5.2.1.7: a stored response, or 504; never the origin.
                    self.made_up(cx, Why::NotCached);
                    self.simple(cx, &req, 504, &[], "not cached\n");
                    return;
                }
                let Some(up) = cx.shared.upstream.as_ref() else {
                    return;
                };
                if let Some(m) = within_swr {
                    if !asks.only_if_cached
                        && let Some((_, true)) =
                            cx.shared.cache.inflight.head_unless(&self.key, || false)
                    {
                        cx.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                        up.fetch_head(relay_upstream::HeadRequest {
                            origin,
                            object: Arc::from(self.key.as_str()),
                            path: self.target.clone(),
                            stale: Some(m.clone()),
                            forward: self.fill_forward(cx),
                            peers: self.peer_route(true),
                            variant: self.variant,
                            authorization: self.saved.authorized,
                            span: 1,
                        });
                    }
                    let swr = CacheStatus::hit("stale-while-revalidate");
                    self.respond_meta(cx, m.clone(), None, Some(swr));
                    return;
                }
                // An answer without a length still arriving: joined from its start (it is
                // described only once it ended), rather than fetched again.
                if let Some(p) = cx.shared.cache.inflight.join_open(&self.key) {
                    self.head_owner = false;
                    self.stale = None;
                    self.enter(State::AwaitingHead(p));
                    self.save_head();
                    return;
                }
                if asks.no_store {
                    // RFC 9111 §5.2.1.5: nothing of it is stored; its answer is its own.
                    self.fetch_alone(
                        cx,
                        origin,
                        CacheStatus {
                            detail: Some("no-store"),
                            ..CacheStatus::fwd(Fwd::Request)
                        },
                    );
                    return;
                }
                if self
                    .restore_entry
                    .as_ref()
                    .is_some_and(|e| *e.key == *self.key)
                {
                    // The disk tier could not describe it after all: a head fetch takes over
                    // the entry other clients may be waiting on.
                    self.restore_fallback(cx);
                    return;
                }
                // Unknown or stale: one head fetch however many clients ask.
                let now = cx.now;
                let meta_cache = &cx.shared.cache.meta;
                let fresh = || {
                    meta_cache
                        .get(&self.key)
                        .is_some_and(|m| asks.judge(&m, now) == Usable::Fresh)
                };
                let Some((pending, new)) = cx.shared.cache.inflight.head_unless(&self.key, fresh)
                else {
                    // Described between our lookup and now.
                    match cx.shared.cache.meta.get(&self.key) {
                        Some(m) => self.respond_meta(cx, m, None, None),
                        // ...and evicted again at once: let the client retry.
                        None => {
                            self.made_up(cx, Why::Evicted);
                            self.simple(cx, &req, 503, &[("Retry-After", b"1")], "retry\n");
                        }
                    }
                    return;
                };
                if new {
                    cx.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                    up.fetch_head(relay_upstream::HeadRequest {
                        origin,
                        object: Arc::from(self.key.as_str()),
                        path: self.target.clone(),
                        stale: cached.clone(),
                        forward: self.fill_forward(cx),
                        peers: self.peer_route(true),
                        variant: self.variant,
                        authorization: self.saved.authorized,
                        span: if cached.is_some() {
                            1
                        } else {
                            self.head_span(cx)
                        },
                    });
                }
                self.head_owner = new;
                self.stale = cached;
                self.enter(State::AwaitingHead(pending));
                // The receive buffer moves on while the head is fetched; a `Vary` in the
                // answer is matched against this copy, and later fills forward its fields.
                self.save_head();
                // `poll` waits on it (`await_head`).
            }
            Route::Directory => match cached {
                Some(m) if m.is_fresh(cx.now, cx.timeouts.revalidate) => {
                    self.respond_meta(cx, m, None, None);
                }
                // Unknown or due for revalidation: open and describe the file through the
                // ring; `poll` asks for the open, `on_dir_stat` answers.
                _ => match crate::origin::object_path(&self.target) {
                    Ok(path) if cx.shared.origin.is_some() => {
                        self.enter(State::Opening(Box::new(DirOpen::new(path, true))));
                    }
                    Ok(_) => {
                        self.made_up(cx, Why::NoDirectory);
                        self.simple(cx, &req, 404, &[], "not found\n");
                    }
                    Err(e) => self.origin_error(cx, e),
                },
            },
        }
    }

    /// The status a request gets when its directory-origin file cannot be served.
    pub(super) fn origin_error(&mut self, cx: &mut Cx<'_>, e: OriginError) {
        let req = self.saved.req;
        self.made_up(cx, Why::Directory(e));
        let text = match e {
            OriginError::NotFound => "not found\n",
            OriginError::BadPath => "bad path\n",
            OriginError::Io(_) => "origin error\n",
        };
        self.simple(cx, &req, Why::Directory(e).status(), &[], text);
    }

    /// The status a request gets when its origin fetch failed before any byte of its
    /// answer was sent.
    pub(super) fn upstream_error(&mut self, cx: &mut Cx<'_>, e: FillError) {
        let req = self.saved.req;
        self.made_up(cx, Why::Upstream(e));
        self.simple(cx, &req, e.status(), &[], "upstream failed\n");
    }

    /// Answers the saved request from a known object description (`file`: the directory
    /// origin's file, already open; `how`: why it went to the origin, or a hit's detail;
    /// None: a hit). A hit whose body needs a chunk no tier holds is `fwd=partial`. The
    /// response's `Cache-Status` and the hit/miss counters both come from that one value.
    ///
    /// The object's own status goes out with its body. Preconditions are evaluated only for
    /// a 2xx (RFC 9110 §13.2.1) and a Range only for a 200 with a known length (§14.2);
    /// other statuses are sent whole. A body of unknown length goes out chunked to HTTP/1.1
    /// clients and until the close to HTTP/1.0 ones (RFC 9112 §6.3).
    pub(super) fn respond_meta(
        &mut self,
        cx: &mut Cx<'_>,
        meta: Arc<ObjectMeta>,
        file: Option<std::fs::File>,
        how: Option<CacheStatus>,
    ) {
        let how = how.unwrap_or(CacheStatus::HIT);
        // A body from one answer is read from the fetch that brings or brought it, as far
        // as it keeps it, whatever the memory tier lets go meanwhile: held from here on.
        if !meta.ranged && self.owner_fetch.is_none() {
            self.owner_fetch = cx.shared.cache.inflight.answering(&self.key, meta.version);
        }
        let req = self.saved.req;
        let req = &req;
        let cond = &self.saved.cond;
        let len = meta.len;
        let (etag, last_modified) = (meta.etag.as_bytes(), meta.last_modified.as_bytes());
        let (etag, last_modified) = (
            (!etag.is_empty()).then_some(etag),
            (!last_modified.is_empty()).then_some(last_modified),
        );
        // Preconditions, for a 2xx, in RFC 9110 §13.2.2's order: If-Match and
        // If-Unmodified-Since (a 412 for another version, so a client resuming with Range
        // gets no bytes of it to append), then If-None-Match and If-Modified-Since (304).
        fn field(v: &Option<Small>) -> Option<&[u8]> {
            v.as_ref().map(Small::as_bytes)
        }
        use relay_proto::conditional::{Precondition, evaluate, precondition_failed};
        let answered = match (200..300).contains(&meta.status) {
            false => None,
            true if precondition_failed(
                field(&cond.if_match),
                field(&cond.if_unmodified_since),
                etag,
                last_modified,
            ) =>
            {
                Some(412)
            }
            true => (evaluate(
                field(&cond.if_none_match),
                field(&cond.if_modified_since),
                etag,
                last_modified,
            ) == Precondition::NotModified)
                .then_some(304),
        };
        if let Some(status) = answered {
            cx.stats.lookups.count(&how, status, self.origin_slot());
            let mut buf = std::mem::take(&mut self.status_buf);
            how.write(&mut buf);
            // (A 412 has a body, empty; a 304 none.)
            let length = (status == 412).then_some(0);
            self.head_only(cx, req, status, &meta, Some(&buf), length);
            self.status_buf = buf;
            return;
        }
        let rangeable = meta.status == 200 && !meta.open_ended;
        // A Range counts only if If-Range (when sent) still names this representation.
        let range = cond.range.as_ref().filter(|_| rangeable).filter(|_| {
            cond.if_range.as_ref().is_none_or(|v| {
                relay_proto::conditional::if_range_allows(v.as_bytes(), etag, last_modified)
            })
        });
        let spec = match range {
            Some(r) => relay_proto::range::parse_range(r.as_bytes(), len, &mut self.multi.ranges),
            None => RangeSpec::None,
        };
        let (status, start, end) = match spec {
            RangeSpec::Single(r) => (206, r.start, r.end + 1),
            RangeSpec::Multi(_) => (206, 0, 0),
            RangeSpec::Unsatisfiable => {
                cx.stats.lookups.count(&how, 416, self.origin_slot());
                how.write(&mut self.status_buf);
                let head = ResponseHead {
                    content_length: Some(0),
                    content_range: Some(relay_proto::ContentRange::Unsatisfied { total: len }),
                    ..base_head(cx.date.get(), 416, req, Some(&self.status_buf))
                };
                head.encode(&mut self.out.head);
                if !req.keep_alive {
                    self.close_after = true;
                }
                return;
            }
            RangeSpec::None if meta.open_ended => (meta.status, 0, u64::MAX),
            RangeSpec::None => (meta.status, 0, len),
        };
        let multi_n = match spec {
            RangeSpec::Multi(n) => n,
            _ => 0,
        };
        let held = !meta.open_ended && self.take_held(cx, &meta, multi_n, start, end);
        // Another relay asking for one whole chunk not held here (in flight, or to fetch):
        // it streams as it arrives, chunked, its checksum in a trailer field after it.
        // (Only a range answer: a whole small object, a 404 say, keeps its length.)
        let trailer = self.peer
            && status == 206
            && !held
            && multi_n == 0
            && req.version == 1
            && req.method == Method::Get
            && self.whole_chunk(cx, &meta, start, end);
        if !held && self.peer && self.saved.asks.only_if_cached {
            // A relay whose digest named this one as a holder asks for what is held here
            // only: a chunk of the range held nowhere is 504 (its digest was stale, or a
            // false positive), never a fetch. Counted, not logged: the asker expects some.
            self.local = None;
            cx.stats.made_up.count(504, Why::NotCached);
            self.simple(cx, req, 504, &[], "not cached\n");
            return;
        }
        let how = match how {
            // Described from storage, and a chunk of the body is fetched.
            h if h.is_hit() && !held => CacheStatus {
                fwd_status: meta.status,
                stored: meta.storable,
                detail: h.detail,
                ..CacheStatus::fwd(Fwd::Partial)
            },
            h => h,
        };
        cx.stats.lookups.count(&how, status, self.origin_slot());
        how.write(&mut self.status_buf);
        let content_range =
            (status == 206 && multi_n == 0).then(|| relay_proto::ContentRange::Bytes {
                start,
                end: end - 1,
                total: len,
            });
        let object_type = (!meta.content_type.is_empty()).then_some(meta.content_type.as_str());
        let (content_length, content_type) = if multi_n > 0 {
            let Ok(mp) = Multipart::new(cx.boundary, object_type, len) else {
                // The boundary is ours and valid; never reached.
                return;
            };
            mp.content_type(&mut self.multi.content_type);
            (
                Some(mp.body_len(&self.multi.ranges[..multi_n])),
                Some(self.multi.content_type.as_str()),
            )
        } else if meta.open_ended || matches!(status, 204 | 304) || trailer {
            // (RFC 9110 §8.6: no Content-Length in a 204.)
            (None, object_type)
        } else {
            (Some(end - start), object_type)
        };
        // An open-ended body: chunked to an HTTP/1.1 client, until the close to a 1.0 one.
        let chunked = (meta.open_ended && req.version == 1) || trailer;
        let keep_alive = req.keep_alive && (!meta.open_ended || chunked);
        // HTTP-origin objects carry their age (RFC 9111 §5.1); files have none.
        let mut age_buf = itoa::Buffer::new();
        let mut extra: [(&str, &[u8]); 4] = [("", b""); 4];
        let mut n = 0;
        if let Some(age) = self.age(cx, &meta) {
            extra[n] = ("Age", age_buf.format(age).as_bytes());
            n += 1;
        }
        let date = self.stored_date(&meta);
        // Another relay asking for one whole chunk held here: its checksum, which the asker
        // checks before it keeps the chunk (`relay_cluster::peer::CHUNK_SUM`).
        let sum_buf: [u8; 16];
        if self.peer
            && multi_n == 0
            && held
            && let Some(sum) = self.whole_chunk_sum(cx, &meta, start, end)
        {
            sum_buf = relay_cluster::peer::chunk_sum_hex(sum);
            extra[n] = (relay_cluster::peer::CHUNK_SUM, &sum_buf);
            n += 1;
        }
        if chunked {
            extra[n] = ("Transfer-Encoding", b"chunked");
            n += 1;
        }
        if trailer {
            extra[n] = ("Trailer", relay_cluster::peer::CHUNK_SUM.as_bytes());
            n += 1;
        }
        let head = ResponseHead {
            content_length,
            etag,
            last_modified,
            content_range,
            accept_ranges: rangeable,
            content_type,
            extra: &extra[..n],
            raw: &meta.headers,
            keep_alive,
            ..base_head(
                date.as_ref().map_or(cx.date.get(), ResponseDate::as_bytes),
                status,
                req,
                Some(&self.status_buf),
            )
        };
        head.encode(&mut self.out.head);
        if !keep_alive {
            self.close_after = true;
        }
        let has_body = content_length.is_some_and(|n| n > 0)
            || (meta.open_ended && status != 204)
            || (trailer && end > start);
        if req.method == Method::Get && has_body {
            self.multi.n = multi_n;
            self.multi.next = 0;
            self.multi.total = len;
            self.body = Some(Body {
                meta,
                pos: start,
                end,
                file,
                chunked: match chunked {
                    true => Chunked::First,
                    false => Chunked::No,
                },
                sum: trailer.then(relay_cache::disk::RunningSum::new),
                ahead: 0,
                ahead_fills: Default::default(),
                reader: None,
                ahead_held: Default::default(),
                feed: None,
                counted: 0,
            });
        }
    }

    /// Whether the chunks of `meta` can all be had: always for a `ranged` object (a missing
    /// one is fetched with a Range request); for one whose body came from one answer, only
    /// while each is held by a tier or still to come from that answer, which fills them in
    /// order (the first not held is being filled), as none can be fetched alone.
    fn at_hand(&self, cx: &Cx<'_>, meta: &ObjectMeta) -> bool {
        if meta.ranged {
            return true;
        }
        let cache = &cx.shared.cache;
        let count = cache.layout.chunk_count(meta.len);
        let held = |index| {
            cache.holds(&ChunkRef {
                object: &self.key,
                version: meta.version,
                index,
            })
        };
        match (0..count).find(|&index| !held(index)) {
            None => true,
            Some(index) => matches!(
                cache.inflight.flight(&ChunkKey {
                    object: Arc::from(self.key.as_str()),
                    version: meta.version,
                    index,
                }),
                Some(Flight::Fill(_))
            ),
        }
    }

    /// Whether every chunk the body needs (`start..end`, or the `multi_n` ranges) is held
    /// by a tier now: a hit. The first chunk is taken now when it is in memory (one lookup,
    /// not a check here and a get when the body is sent): the response keeps it.
    fn take_held(
        &mut self,
        cx: &Cx<'_>,
        meta: &ObjectMeta,
        multi_n: usize,
        start: u64,
        end: u64,
    ) -> bool {
        let layout = cx.shared.cache.layout;
        let cache = &cx.shared.cache;
        let held = |i: u64| {
            cache.holds(&ChunkRef {
                object: &self.key,
                version: meta.version,
                index: i,
            })
        };
        let all_held = |start: u64, end: u64| {
            start >= end || (layout.chunk_of(start)..=layout.chunk_of(end - 1)).all(held)
        };
        if multi_n > 0 {
            return self.multi.ranges[..multi_n]
                .iter()
                .all(|r| all_held(r.start, r.end + 1));
        }
        if start >= end {
            return true;
        }
        let first = layout.chunk_of(start);
        let rest_held = (first + 1..=layout.chunk_of(end - 1)).all(held);
        let first_held = match cache.held(&ChunkRef {
            object: &self.key,
            version: meta.version,
            index: first,
        }) {
            Held::Memory(chunk) => {
                self.local = Some((meta.version, first, chunk));
                true
            }
            Held::Disk => true,
            Held::Nowhere => false,
        };
        first_held && rest_held
    }

    /// The `Age` of a response served from `meta` now (RFC 9111 §5.1): HTTP-origin objects
    /// carry theirs; files have none.
    fn age(&self, cx: &Cx<'_>, meta: &ObjectMeta) -> Option<u64> {
        matches!(self.route, Route::Http(_)).then(|| meta.age(cx.now))
    }

    /// The `Date` of a response served from `meta`: the stored response's (RFC 9111
    /// §4.2.3, the date its `Age` counts from), for an HTTP origin's; None (the time it is
    /// sent) for a file, whose origin relay is.
    fn stored_date(&self, meta: &ObjectMeta) -> Option<ResponseDate> {
        meta.date.filter(|_| matches!(self.route, Route::Http(_)))
    }

    /// A response without a body from an object's description: a 304, with the fields a
    /// 200 would carry among those RFC 9110 §15.4.5 lists (`Date`, `ETag`, `Cache-Control`,
    /// `Expires`, `Vary`, `Content-Location`) and `Last-Modified` and `Age`; a 412 (made up
    /// by relay, at its own `Date`), with `Content-Length: 0`. Validators the stored
    /// response had none of are left out, never sent empty.
    pub(super) fn head_only(
        &mut self,
        cx: &mut Cx<'_>,
        req: &RequestInfo,
        status: u16,
        meta: &ObjectMeta,
        cache_status: Option<&str>,
        content_length: Option<u64>,
    ) {
        const NOT_MODIFIED_FIELDS: &[&str] =
            &["cache-control", "expires", "vary", "content-location"];
        let not_modified = status == 304;
        fn present(v: &str) -> Option<&[u8]> {
            (!v.is_empty()).then_some(v.as_bytes())
        }
        let mut age_buf = itoa::Buffer::new();
        let age = match self.age(cx, meta).filter(|_| not_modified) {
            Some(age) => &[("Age", age_buf.format(age).as_bytes())][..],
            None => &[],
        };
        let date = self.stored_date(meta).filter(|_| not_modified);
        let head = ResponseHead {
            content_length,
            etag: present(&meta.etag),
            last_modified: present(&meta.last_modified),
            extra: age,
            raw: if not_modified { &meta.headers } else { &[] },
            raw_only: Some(NOT_MODIFIED_FIELDS),
            ..base_head(
                date.as_ref().map_or(cx.date.get(), ResponseDate::as_bytes),
                status,
                req,
                cache_status,
            )
        };
        head.encode(&mut self.out.head);
        if !req.keep_alive {
            self.close_after = true;
        }
    }

    /// A small complete response (errors, 404) on a connection that stays usable.
    pub(super) fn simple(
        &mut self,
        cx: &mut Cx<'_>,
        req: &RequestInfo,
        status: u16,
        extra: &[(&str, &[u8])],
        text: &'static str,
    ) {
        let head = ResponseHead {
            content_length: Some(text.len() as u64),
            content_type: Some("text/plain"),
            extra,
            ..base_head(cx.date.get(), status, req, None)
        };
        head.encode(&mut self.out.head);
        if req.method != Method::Head {
            self.out.body = Bytes::from_static(text.as_bytes());
            self.out.body_off = 0;
        }
        if !req.keep_alive {
            self.close_after = true;
        }
    }

    /// An error response after which the connection closes (the request stream is no longer
    /// trustworthy).
    pub(super) fn error(&mut self, cx: &mut Cx<'_>, why: Why) {
        cx.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.refuse(cx, why);
    }

    /// [`Self::error`] for a request already counted.
    pub(super) fn refuse(&mut self, cx: &mut Cx<'_>, why: Why) {
        let status = why.status();
        self.made_up(cx, why);
        cx.stats.errors.fetch_add(1, Ordering::Relaxed);
        // The client may still be sending (a body refused at its head, a request cut short):
        // what comes is dropped, and the connection lingers after the answer.
        self.linger = Some(Linger::new(LINGER_BYTES));
        self.overflow.clear();
        self.req_start = Some(cx.now);
        relay_proto::error_response(status, cx.date.get(), &mut self.out.head);
        self.close_after = true;
        self.rstart = self.rend;
        self.discard = 0;
        self.chunked = None;
        if let State::CollectingBody(_) = self.state {
            // (Its budget reservation goes back with it.)
            self.leave();
        }
    }
}

/// A head with `date` (an IMF-fixdate), the request's version and keep-alive, and
/// `cache_status`.
pub(super) fn base_head<'a>(
    date: &'a [u8],
    status: u16,
    req: &RequestInfo,
    cache_status: Option<&'a str>,
) -> ResponseHead<'a> {
    ResponseHead {
        version: req.version,
        keep_alive: req.keep_alive,
        cache_status,
        ..ResponseHead::new(status, date)
    }
}

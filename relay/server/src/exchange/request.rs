//! Reading requests: the receive buffer, parsing and routing, collecting a pass-through's
//! body or skipping one relay does not use, and the client's fields that go upstream.

use super::overflow::Refused;
use super::types::{
    Asks, Conditionals, HeldBody, Linger, PassRequest, RequestInfo, Route, Small, Upload,
};
use super::{
    Action, CONTINUE, Collect, Cx, DISCARD_MAX, Exchange, Input, LINGER_BYTES, PASS_BODY_LIMIT,
    Phase, Reading, Received, State, Step,
};
use crate::cache_status::{CacheStatus, Fwd};
use crate::errors::Why;
use bytes::Bytes;
use relay_proto::{Method, Parsed, parse_request};
use relay_upstream::upload::UPLOAD_WINDOW;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Exchange {
    /// Bytes a multishot receive brought: into the receive buffer (what does not fit waits
    /// in `overflow`), or dropped while lingering. Says whether they were kept and whether
    /// the connection began holding input beyond its buffer with them.
    pub fn on_input(&mut self, now: Instant, data: &[u8]) -> Input {
        if let Some(l) = self.dropping() {
            // Input after a refused request: read and dropped (a lingering close).
            l.left = l.left.saturating_sub(data.len() as u64);
            return Input::Kept;
        }
        if self.rend == self.rstart && self.overflow.is_empty() {
            self.request_started = Some(now);
        }
        self.idle_since = None;
        self.take_rbuf();
        if self.rbuf.len() - self.rend < data.len() {
            self.grow_rbuf();
        }
        if self.rstart > 0 && self.rbuf.len() - self.rend < data.len() {
            // The response being sent may still need its request's head (a later chunk's
            // fill forwards its fields): keep it before it is overwritten.
            self.save_head();
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        let room = self.rbuf.len() - self.rend;
        if self.overflow.is_empty() && room >= data.len() {
            self.rbuf[self.rend..self.rend + data.len()].copy_from_slice(data);
            self.rend += data.len();
            return Input::Kept;
        }
        if self.flooded {
            return Input::Kept;
        }
        let first = self.overflow.is_empty();
        match self.overflow.push(data) {
            Ok(()) if first => Input::Holding,
            Ok(()) => Input::Kept,
            Err(Refused::Worker) => Input::NoRoom,
            Err(Refused::Connection) => {
                // Past this connection's bound: cut (`on_recv_result`).
                self.flooded = true;
                Input::Kept
            }
        }
    }

    /// The worker could not make room for input [`Exchange::on_input`] found no room for:
    /// the connection is cut (`on_recv_result`).
    pub fn on_no_room(&mut self) {
        self.flooded = true;
    }

    /// Holds input beyond its receive buffer.
    pub fn holds_overflow(&self) -> bool {
        !self.overflow.is_empty()
    }

    /// A multishot receive completed with `res` (its bytes, if any, already went to
    /// [`Exchange::on_input`]); `more`: the receive stays armed.
    pub fn on_recv_result(&mut self, res: i32, more: bool) -> Received {
        let lingering = matches!(self.state, State::Lingering(_));
        if let Some(l) = self.dropping() {
            // (A cancel is the pause's: the input goes on, and is read again to be dropped.)
            let gone = res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED);
            let ended = gone || l.left == 0;
            // Gone while its answer waits on an origin: let the fetch go (as without linger).
            // Past `LINGER_BYTES` before the answer is sent, input is still dropped until it
            // is; `start_linger` then closes at once.
            if (ended && lingering) || (gone && self.phase == Phase::Wait && self.body.is_none()) {
                return Received::Close;
            }
            // Until the response is sent, an ended input only stops the reading.
            let rearm = !ended && !more;
            if rearm {
                self.reading = Reading::On;
            }
            return Received::Keep { rearm };
        }
        if res == 0 && (matches!(self.phase, Phase::Send | Phase::Fill) || self.body.is_some()) {
            // The client shut its side after its requests (a half-close): the response under
            // way (its body being sent, read, or waited for), and the requests already
            // received, are still answered; the next read then sees the end again and
            // closes. A client that leaves while relay waits on an origin before its answer
            // has begun is taken for gone, as nginx does, so the fetch it started is let go
            // (`relay_upstream` notices).
            return Received::Keep { rearm: false };
        }
        if self.reading == Reading::Stopping && !more {
            // The pause took effect (or the receive ended otherwise meanwhile: an end or an
            // error is judged below when input is next read).
            self.reading = Reading::Off;
            if res == -libc::ECANCELED || res == -libc::ENOBUFS {
                return match self.phase {
                    // Input was asked for again meanwhile: read it (by single receives).
                    Phase::Recv => Received::Poll { rearm: false },
                    _ => Received::Keep { rearm: false },
                };
            }
        }
        if res == 0 || (res < 0 && res != -libc::ENOBUFS) || self.flooded {
            return Received::Close;
        }
        if self.reading == Reading::On
            && more
            && !self.overflow.is_empty()
            && self.phase != Phase::Recv
        {
            // The receive buffer is full while a response is under way: no more is read
            // until it has been used. (While reading, `poll` uses what came at once.)
            self.reading = Reading::Stopping;
            return Received::Pause;
        }
        // Ended by the kernel (e.g. the buffer group ran dry): armed again, unless paused.
        let rearm = !more && self.reading == Reading::On;
        match self.phase {
            Phase::Recv => Received::Poll { rearm },
            _ => Received::Keep { rearm },
        }
    }

    /// The bound on input read and dropped: after a refused request, and while lingering.
    fn dropping(&mut self) -> Option<&mut Linger> {
        match &mut self.state {
            State::Lingering(l) => Some(l),
            _ => self.linger.as_mut(),
        }
    }

    /// The receive buffer, taken (again) when input comes.
    /// Starts small ([`RBUF_START`](super::RBUF_START)): most request heads fit, and a
    /// connection between requests holds no more than that.
    fn take_rbuf(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = vec![0u8; self.rbuf_len.min(super::RBUF_START)].into_boxed_slice();
        }
    }

    /// The receive buffer at its full size (`max_head_bytes` + 4 KiB), what is in it kept in
    /// place: a head that does not fit the small one, or requests sent ahead. Never while a
    /// single receive writes into it (only from `on_input`, for a multishot receive's bytes,
    /// and `recv_room`, before one is submitted).
    fn grow_rbuf(&mut self) {
        if self.rbuf.len() < self.rbuf_len {
            let mut grown = vec![0u8; self.rbuf_len].into_boxed_slice();
            grown[..self.rend].copy_from_slice(&self.rbuf[..self.rend]);
            self.rbuf = grown;
        }
    }

    /// Gives back the receive buffer of a connection idle between requests for
    /// [`IDLE_TRIM`](super::IDLE_TRIM) (its next bytes take one again), and head room a large
    /// response grew. For connections read by multishot receives only: a single receive in
    /// flight would still write into the buffer.
    pub fn trim(&mut self, now: std::time::Instant) -> bool {
        let idle_for = self.idle_since.map_or(std::time::Duration::ZERO, |t| {
            now.saturating_duration_since(t)
        });
        let idle = self.phase == Phase::Recv
            && self.rstart == self.rend
            && self.overflow.is_empty()
            && matches!(self.state, State::Ready)
            && self.body.is_none()
            && self.linger.is_none()
            && self.discard == 0
            && self.chunked.is_none();
        if idle && idle_for >= super::IDLE_TRIM && !self.rbuf.is_empty() {
            self.rstart = 0;
            self.rend = 0;
            self.give_back_buffers();
            return true;
        }
        false
    }

    /// Input is read by multishot receives. Off for good once the connection was paused
    /// (it sent far ahead of its answers): from then on it is read by single receives into
    /// what is free of its receive buffer, no faster than it is answered, since a multishot
    /// receive armed again would pull in whatever the client queued meanwhile.
    pub fn reads_in_bursts(&self) -> bool {
        self.reading == Reading::On
    }

    /// A connection read by single receives since a pause has caught up (it holds no
    /// input, and the worker found its socket's receive queue empty): it is read by a
    /// multishot receive again, so that it may give its receive buffer back when idle.
    /// True when it was switched.
    pub fn resume_bursts(&mut self) -> bool {
        let caught_up = self.reading == Reading::Off
            && self.rstart == self.rend
            && self.overflow.is_empty()
            && self.linger.is_none()
            && !matches!(self.state, State::Lingering(_) | State::Closed(_));
        if caught_up {
            self.reading = Reading::On;
        }
        caught_up
    }

    /// Where a single (not multishot) receive lands: the free end of the receive buffer.
    /// The exchange leaves the buffer alone until [`Exchange::on_received`].
    pub fn recv_room(&mut self) -> &mut [u8] {
        self.take_rbuf();
        if self.rend == self.rbuf.len() {
            self.grow_rbuf();
        }
        &mut self.rbuf[self.rend..]
    }

    /// A single receive brought `n > 0` bytes into [`Exchange::recv_room`].
    pub fn on_received(&mut self, cx: &mut Cx<'_>, n: usize) -> Action {
        if let State::Lingering(l) = &mut self.state {
            // Dropped: the receive buffer is written over by the next one.
            l.left = l.left.saturating_sub(n as u64);
            return match l.left {
                0 => Action::Close,
                _ => Action::Linger,
            };
        }
        if self.rend == self.rstart {
            self.request_started = Some(cx.now);
        }
        self.rend += n;
        self.poll(cx)
    }

    /// The exchange needs more input: the receive buffer is compacted and bytes that
    /// overflowed earlier are taken in (None: parse again), else it waits for input until
    /// the header timeout of the request's first byte (however slowly the rest trickles in:
    /// the slowloris defence) or, between requests, the idle timeout.
    pub(super) fn need_input(&mut self, cx: &Cx<'_>) -> Option<Action> {
        if self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if !self.overflow.is_empty() {
            let n = self.overflow.take_into(&mut self.rbuf[self.rend..]);
            self.rend += n;
            if n > 0 {
                return None;
            }
        }
        self.deadline = match self.request_started {
            Some(t) if self.rend > 0 => t + cx.timeouts.header,
            _ => {
                self.idle_since.get_or_insert(cx.now);
                cx.now + cx.timeouts.idle
            }
        };
        self.phase = Phase::Recv;
        Some(Action::Recv)
    }

    /// [`Exchange::need_input`] as a step of `poll`.
    fn input_step(&mut self, cx: &Cx<'_>) -> Step {
        match self.need_input(cx) {
            None => Step::Again,
            Some(a) => Step::Do(a),
        }
    }

    /// Collects a pass-through's request body (a chunked one decoded, sent on with its
    /// length, trailers dropped), then hands the request to the upstream.
    pub(super) fn collect_pass_body(&mut self, cx: &mut Cx<'_>) -> Step {
        let (with_body, streamed) = match &self.state {
            State::CollectingBody(c) => (c.request.with_body, c.upload.is_some()),
            _ => return Step::Again,
        };
        if streamed {
            return self.stream_pass_body(cx);
        }
        let collected = match with_body {
            true => self.decode_chunked(true, PASS_BODY_LIMIT),
            // Skipped after the response, like any body relay does not use.
            false => Ok(Upload::Whole),
        };
        let refused = match collected {
            Ok(Upload::TooLong) => Some(Why::BodyTooLarge),
            Ok(upload) => match (self.reserve_upload(), upload) {
                (Err(e), _) => Some(Why::from(e)),
                (Ok(()), Upload::Partial) if self.collected() > UPLOAD_WINDOW => {
                    // A chunked body longer than a window: streamed from here on (sent
                    // chunked), what it has so far first.
                    match self.start_upload(cx, None) {
                        Ok(()) => return self.stream_pass_body(cx),
                        Err(why) => Some(why),
                    }
                }
                (Ok(()), Upload::Partial) => return self.input_step(cx),
                (Ok(()), _) => None,
            },
            Err(e) => Some(Why::BadBody(e)),
        };
        if let Some(why) = refused {
            self.refuse(cx, why);
            return Step::Again;
        }
        let State::CollectingBody(c) = &mut self.state else {
            return Step::Again;
        };
        let n = (c.left.min((self.rend - self.rstart) as u64)) as usize;
        c.body
            .extend_from_slice(&self.rbuf[self.rstart..self.rstart + n]);
        self.rstart += n;
        c.left -= n as u64;
        c.received += n as u64;
        if c.left > 0 {
            return self.input_step(cx);
        }
        let State::CollectingBody(c) = self.leave() else {
            return Step::Again;
        };
        let Collect {
            request: r,
            body,
            reserved,
            ..
        } = *c;
        // The body's reservation travels with its bytes and is given back when the
        // upstream drops them.
        let body = relay_upstream::RequestBody::Whole(match reserved {
            Some(reserved) => Bytes::from_owner(HeldBody::new(body, reserved)),
            None => Bytes::from(body),
        });
        let slot = Arc::new(relay_upstream::PassSlot::default());
        if let Some(up) = cx.shared.upstream.as_ref() {
            up.pass(relay_upstream::PassRequest {
                origin: r.origin,
                method: r.method,
                path: self.target.clone(),
                headers: r.headers,
                body,
                host: r.host,
                slot: slot.clone(),
                client: cx.client,
            });
        }
        self.enter(State::AwaitingPass(slot));
        Step::Again
    }

    /// The response is done: skip the body of its request if relay did not use it, then
    /// parse the next request and start its answer.
    pub(super) fn next_request(&mut self, cx: &mut Cx<'_>) -> Step {
        self.began |= self.rend > self.rstart;
        self.sent.logging = cx.shared.access_log.is_some();
        if self.sent.logging && self.sent.client.is_none() {
            // (Once per connection, while it is surely open: a line for a response cut
            // short is written after its socket is gone.)
            self.sent.client = (cx.peer)();
        }
        match self.decode_chunked(false, DISCARD_MAX) {
            Ok(Upload::Whole) => {}
            Ok(Upload::Partial) => return self.input_step(cx),
            Ok(Upload::TooLong) | Err(_) => {
                // Too long to read through, or the next request cannot be found: the
                // connection ends here, lingering while the client may still send.
                self.chunked = None;
                self.linger = Some(Linger::new(LINGER_BYTES));
                return Step::Do(self.start_linger(cx));
            }
        }
        if self.discard > 0 {
            let n = (self.discard.min((self.rend - self.rstart) as u64)) as usize;
            self.rstart += n;
            self.discard -= n as u64;
            if self.discard > 0 {
                return self.input_step(cx);
            }
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
            return self.input_step(cx);
        }
        let limits = &cx.shared.limits;
        let (request, head_len) = match parse_request(&self.rbuf[self.rstart..self.rend], limits) {
            Ok(Parsed::Partial) => {
                if self.rend - self.rstart >= limits.max_head_bytes {
                    self.error(cx, Why::BadRequest(relay_proto::ParseError::HeadTooLarge));
                    return Step::Again;
                }
                return self.input_step(cx);
            }
            Err(e) => {
                self.error(cx, Why::BadRequest(e));
                return Step::Again;
            }
            Ok(Parsed::Complete { request, head_len }) => (request, head_len),
        };
        // (A drain that began before this request: its answer is the connection's last.)
        self.close_after |= self.drain_next;
        // (What an answer made up before routing logs is this request's, not the last one's
        // on this slot.)
        self.key.clear();
        self.target.clear();
        if self.peer {
            // Another relay's request: its credentials first (`relay_cluster::peer`).
            let signed = relay_cluster::peer::Signed {
                method: request.method_str,
                target: request.target,
                host: request.host.unwrap_or_default(),
                range: request.range.unwrap_or_default(),
            };
            let head = &self.rbuf[self.rstart..self.rstart + head_len];
            let verdict = match cx.shared.peer_key.as_ref() {
                None => Err(relay_cluster::peer::Forbidden::Missing),
                Some(key) => relay_proto::forward::with_fields(head, |fields| {
                    let name = relay_cluster::peer::FIELD.as_bytes();
                    let mut value = None;
                    for (n, v) in fields {
                        if n.eq_ignore_ascii_case(name) {
                            value = Some(v);
                            break;
                        }
                    }
                    key.verify(value, relay_cluster::peer::now_ms(), &signed)
                        .map(|(_, hop)| hop)
                }),
            };
            match verdict {
                Ok(hop) => self.hop = hop,
                Err(f) => {
                    self.target.push_str(request.target);
                    cx.stats.peer_forbidden.fetch_add(1, Ordering::Relaxed);
                    self.error(cx, Why::PeerForbidden(f));
                    return Step::Again;
                }
            }
            cx.stats.peer_ok.fetch_add(1, Ordering::Relaxed);
        }
        let req = RequestInfo {
            method: request.method,
            version: request.version,
            // (Its answer says so: `Connection: close`.)
            keep_alive: request.keep_alive && !self.drain_next,
        };
        self.saved.req = req;
        self.saved.cond = Conditionals {
            range: request.range.map(Small::copy),
            if_range: request.if_range.map(Small::copy),
            if_none_match: request.if_none_match.map(Small::copy),
            if_modified_since: request.if_modified_since.map(Small::copy),
            // (A value too long to keep is not evaluated here; an empty one would fail.)
            if_match: request
                .if_match
                .filter(|v| v.len() <= Small::CAPACITY)
                .map(Small::copy),
            if_unmodified_since: request.if_unmodified_since.map(Small::copy),
        };
        self.saved.authorized = request.authorization;
        // The request's own cache directives, read only when it has any.
        self.saved.asks = match request.cache_directives {
            true => relay_proto::forward::with_fields(
                &self.rbuf[self.rstart..self.rstart + head_len],
                |fields| Asks::read(fields, &cx.shared.cache.policy),
            ),
            false => Asks::default(),
        };
        // Route: an HTTP origin claiming the authority's host and the path, else the
        // directory. The object's key names the origin's kind, then (HTTP) the normalised
        // authority and the target in origin-form, or (directory) the path
        // (`relay_cache::key`).
        self.key.clear();
        self.target.clear();
        let upstream = cx.shared.upstream.as_ref();
        let http = upstream.and_then(|u| u.route(request.authority.map(|a| a.host), request.path));
        match http {
            Some(o) => {
                self.key.push_str(relay_cache::key::HTTP);
                if let Some(a) = request.authority {
                    a.push_normalised(&mut self.key, relay_proto::HTTP_PORT);
                }
                request.push_origin_form(&mut self.target);
                // A GET or HEAD's query as the origin's policy has it in the key (and asks
                // the origin for); other methods pass through as sent.
                if matches!(request.method, Method::Get | Method::Head)
                    && let Some(policy) = upstream.and_then(|u| u.cache_policy(o))
                {
                    relay_cache::key::shape_query(&mut self.target, policy);
                }
                self.key.push_str(&self.target);
                self.route = Route::Http(o);
            }
            None => {
                self.target.push_str(request.path);
                self.key.push_str(relay_cache::key::DIRECTORY);
                self.key.push_str(&self.target);
                self.route = Route::Directory;
            }
        }
        self.sent.routed = true;
        self.key_base = self.key.len();
        // The head stays readable in `rbuf` while `respond` runs; it is copied out only if the
        // response has to wait (a miss) or `rbuf` is compacted under it (`save_head`).
        self.head_at = (self.rstart, head_len);
        self.head_saved = false;
        if request.method == Method::Other {
            // (For the log line of an answer relay makes up.)
            self.other_method.clear();
            self.other_method.push_str(request.method_str);
        }
        let content_length = request.content_length;
        let has_body = content_length > 0 || request.chunked;
        let expect_continue = request.expect_continue && has_body;
        self.chunked = request
            .chunked
            .then(|| relay_proto::chunked::Decoder::new(limits.max_head_bytes));
        // Other methods go to the origin as they are. (GET and HEAD with credentials are
        // looked up: RFC 9111 §3.5 lets a response that says so answer them.)
        let pass = request.method == Method::Other;
        if let (Route::Http(origin), true) = (self.route, pass) {
            let host = self.authority().to_owned();
            let method = http::Method::from_bytes(request.method_str.as_bytes());
            let mut headers = relay_proto::forward::forwarded_fields(
                &self.rbuf[self.rstart..self.rstart + head_len],
                relay_proto::forward::PASS_OWN,
            );
            self.forwarded_for(cx, &mut headers);
            self.rstart += head_len;
            self.request_started = (self.rend > self.rstart).then_some(cx.now);
            cx.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.req_start = Some(cx.now);
            // RFC 9211: other methods are never looked up.
            self.pass_status = CacheStatus::fwd(Fwd::Method);
            // A body up to one upload window is held whole until it is handed over (it can
            // be sent again on a retry): within the pass-through budget, reserved now for a
            // length, as it grows for a chunked body. A longer one is streamed to the
            // origin through a window as it comes (`collect`), and so is a chunked one
            // that grows past the window.
            let streamed = content_length > relay_upstream::upload::UPLOAD_WINDOW as u64;
            let reserved = match (cx.shared.upstream.as_ref(), streamed) {
                (Some(_), true) => Ok(None),
                (Some(u), false) => u.pass_budget.reserve(cx.client, content_length).map(Some),
                (None, _) => Err(relay_upstream::budget::Refused::Full),
            };
            match (method, reserved) {
                (Ok(_), _) if content_length > PASS_BODY_LIMIT => {
                    self.refuse(cx, Why::BodyTooLarge)
                }
                (Ok(_), Err(e)) => self.refuse(cx, Why::from(e)),
                (Ok(method), Ok(reserved)) => {
                    // A chunked body's length is known once it is read.
                    self.enter(State::CollectingBody(Box::new(Collect {
                        request: PassRequest {
                            origin,
                            method,
                            headers,
                            host,
                            with_body: true,
                        },
                        body: match streamed {
                            true => Vec::new(),
                            false => Vec::with_capacity(content_length as usize),
                        },
                        left: content_length,
                        reserved,
                        received: 0,
                        upload: None,
                    })));
                    if streamed && let Err(why) = self.start_upload(cx, Some(content_length)) {
                        self.refuse(cx, why);
                        return Step::Again;
                    }
                    // The client may wait for this before it sends the body that relay is
                    // about to read (RFC 9110 §10.1.1). Nothing else is being sent on the
                    // connection now: the previous response is done before the next request
                    // is parsed.
                    if expect_continue && self.rend == self.rstart {
                        return Step::Do(Action::SendNow(CONTINUE));
                    }
                }
                (Err(_), _) => self.refuse(cx, Why::BadMethod),
            }
            return Step::Again;
        }
        if expect_continue || content_length > DISCARD_MAX {
            // Answered without its body: one the client may never send (it waits for a 100),
            // or one too long to read through (a trickled huge body would hold the
            // connection for as long as it likes; a chunked one is cut off the same way as
            // it is skipped). The connection ends after the response; what comes meanwhile
            // is dropped, within the linger bounds.
            self.saved.req.keep_alive = false;
            self.linger = Some(Linger::new(LINGER_BYTES));
        }
        self.rstart += head_len;
        self.discard = content_length;
        self.request_started = (self.rend > self.rstart).then_some(cx.now);
        self.restores = 0;
        self.key_base = self.key.len();
        if self.peer && self.target == relay_cluster::digest::PATH {
            self.answer_digest(cx);
            return Step::Again;
        }
        self.respond(cx);
        Step::Again
    }

    /// Keeps the pass-through budget reserved for what the collected body holds (its
    /// capacity) as a chunked body grows; refused when the budget, or the client's share of
    /// it, has no room for it.
    fn reserve_upload(&mut self) -> Result<(), relay_upstream::budget::Refused> {
        let State::CollectingBody(c) = &mut self.state else {
            return Ok(());
        };
        let held = c.body.capacity() as u64;
        match c.reserved.as_mut() {
            Some(r) if held > r.bytes() => r.grow(held - r.bytes()),
            _ => Ok(()),
        }
    }

    /// Decodes what has arrived of the request's chunked body, if it has one: into the
    /// pass-through's collected body when `keep`, else skipped. Past `max` body bytes,
    /// `TooLong` and nothing more is kept. `Whole` once the body is (or there is none).
    fn decode_chunked(
        &mut self,
        keep: bool,
        max: u64,
    ) -> Result<Upload, relay_proto::chunked::ChunkedError> {
        let Some(dec) = self.chunked.as_mut() else {
            return Ok(Upload::Whole);
        };
        let mut seen = dec.body_len();
        let mut kept = match &mut self.state {
            State::CollectingBody(c) if keep => Some(c),
            _ => None,
        };
        let mut too_long = false;
        let p = dec.decode(&self.rbuf[self.rstart..self.rend], |b| {
            seen += b.len() as u64;
            if seen > max {
                too_long = true;
            } else if let Some(c) = kept.as_mut() {
                super::types::extend_within(&mut c.body, b, max);
            }
        })?;
        self.rstart += p.consumed;
        if too_long {
            return Ok(Upload::TooLong);
        }
        if p.done {
            self.chunked = None;
            // What grew by doubling is trimmed before it is held until the origin has it.
            if let Some(c) = kept {
                c.body.shrink_to_fit();
                if let Some(r) = c.reserved.as_mut() {
                    r.shrink_to(c.body.capacity() as u64);
                }
            }
            return Ok(Upload::Whole);
        }
        Ok(Upload::Partial)
    }

    /// The object key's part before the target: its kind tag and, for an HTTP origin, the
    /// normalised authority (`relay_cache::key`). Read before a variant extends the key.
    pub(super) fn key_origin(&self) -> &str {
        let end = self.key.len().saturating_sub(self.target.len());
        self.key.get(..end).unwrap_or_default()
    }

    /// How a miss may go to the site's other relays first (`relay_upstream::Peers`): the
    /// client's authority, which they key the object under too, and the hop the request to
    /// them carries. A client's miss asks the chunk's owner (hop 1); a relay asked for a
    /// chunk (hop 1) asks the origin for it, but may ask the owner of the object's first
    /// chunk for its description (`head`, hop 2), which the origin alone answers: at most
    /// two hops whatever the relays' views of the membership.
    pub(super) fn peer_route(&self, head: bool) -> Option<relay_upstream::PeerRoute> {
        let hop = match (self.peer, self.hop, head) {
            (false, _, _) => 1,
            (true, 1, true) => 2,
            _ => return None,
        };
        Some(relay_upstream::PeerRoute {
            authority: Arc::from(self.authority()),
            hop,
        })
    }

    /// How many chunks a head fetch for this request asks for (`HeadRequest::span`): a
    /// read-ahead's worth (`origin.read_ahead_bytes`) for a GET from the object's start,
    /// outside a cluster, so the start of a cold object comes in the head's round trip and
    /// the read-ahead's fetch begins past it; no more than the chunks a single range that
    /// starts in the first chunk reaches (a `bytes=0-0` probe asks for one). Else one: a
    /// HEAD, a range further on or several ranges, a cluster (where the first chunk is
    /// asked of its owner). A revalidation asks for one too (its caller's choice).
    pub(super) fn head_span(&self, cx: &Cx<'_>) -> u64 {
        let chunk = cx.shared.cache.layout.chunk_size();
        let depth = cx.shared.config.origin.read_ahead_bytes / chunk;
        let clustered = cx.shared.upstream.as_ref().is_none_or(|u| u.clustered());
        if depth <= 1 || clustered || self.saved.req.method != Method::Get {
            return 1;
        }
        let Some(range) = self.saved.cond.range.as_ref() else {
            return depth;
        };
        match relay_proto::range::single_range(range.as_bytes()) {
            Some((start, end)) if start < chunk => {
                end.map_or(depth, |e| (e / chunk + 1).min(depth))
            }
            _ => 1,
        }
    }

    /// The request's authority, normalised (HTTP origins; empty without one).
    pub(super) fn authority(&self) -> &str {
        let origin = self.key_origin();
        origin
            .strip_prefix(relay_cache::key::HTTP)
            .unwrap_or_default()
    }

    /// The head of the request being answered (HTTP origins): in `rbuf` until it is saved.
    pub(super) fn head(&self) -> &[u8] {
        head_in(&self.rbuf, &self.head_copy, self.head_at, self.head_saved)
    }

    /// Copies the request's head out of `rbuf` (once per request): the response has to
    /// wait, or `rbuf` is about to be compacted under it. Allocation-free once `head_copy`
    /// has grown to the heads this connection sends.
    pub(super) fn save_head(&mut self) {
        if self.head_saved {
            return;
        }
        let (at, len) = self.head_at;
        self.head_copy.clear();
        if let Some(head) = self.rbuf.get(at..at + len) {
            self.head_copy.extend_from_slice(head);
        }
        self.head_saved = true;
    }

    /// Appends to `key` the variant of a response varying on `fields` that this request
    /// selects; false (and `key` unchanged) when it sends none of the fields.
    pub(super) fn select_variant(&mut self, fields: &[String]) -> bool {
        // Field by field: `key` changes while the head is read.
        let head = head_in(&self.rbuf, &self.head_copy, self.head_at, self.head_saved);
        let mut slots = [httparse::EMPTY_HEADER; relay_proto::MAX_HEADERS_CAP];
        let mut req = httparse::Request::new(&mut slots);
        let _ = req.parse(head);
        let sent = req.headers.iter().map(|h| (h.name, h.value));
        relay_cache::key::push_variant(&mut self.key, fields, sent)
    }

    /// The client's end-to-end request fields an upstream fill sends for this response
    /// (`relay_proto::forward::FILL_OWN` left out), built on the first call — a miss.
    pub(super) fn fill_forward(&mut self, cx: &Cx<'_>) -> relay_upstream::Forward {
        if let Some(f) = &self.forward {
            return f.clone();
        }
        let own = match self.saved.authorized {
            true => relay_proto::forward::FILL_OWN_CREDENTIALED,
            false => relay_proto::forward::FILL_OWN,
        };
        let mut fields = relay_proto::forward::forwarded_fields(self.head(), own);
        self.forwarded_for(cx, &mut fields);
        let f: relay_upstream::Forward = fields.into();
        self.forward = Some(f.clone());
        f
    }

    /// Appends `X-Forwarded-For: <client address>` to fields going upstream, after any the
    /// client sent (one more line of the same list, RFC 9110 §5.3). A shared fill carries
    /// the address of the client whose request started it. When the address cannot be read
    /// (the client reset the connection meanwhile), the entry says `unknown`: the last entry
    /// is always relay's own, never the client's.
    pub(super) fn forwarded_for(&self, cx: &Cx<'_>, fields: &mut Vec<(String, Vec<u8>)>) {
        let who = (cx.peer)().map_or_else(
            || "unknown".to_string(),
            |addr| addr.ip().to_canonical().to_string(),
        );
        fields.push(("X-Forwarded-For".to_string(), who.into_bytes()));
    }
}

/// A request's head: its saved copy, or where it lies in the receive buffer.
fn head_in<'a>(rbuf: &'a [u8], copy: &'a [u8], (at, len): (usize, usize), saved: bool) -> &'a [u8] {
    if saved {
        return copy;
    }
    rbuf.get(at..at + len).unwrap_or_default()
}

//! A pass-through's request body is held to a deadline while it is collected: it may pause
//! at most `server.body_timeout_ms` between bytes, and must average `server.body_min_rate`
//! from its start once that much time has passed (as Apache's `mod_reqtimeout` `MinRate`).
//! Each byte restarts the pause, but a trickle of tiny pieces falls behind the rate, so a
//! body sent a byte at a time is cut about `body_timeout_ms` after it began however long it
//! announced. Past either bound it is answered 408 and the connection lingers and closes,
//! as after other early errors; its reservation of the pass-through budget goes back at once.

use super::types::Linger;
use super::{Action, Cx, Exchange, LINGER_BYTES, PASS_BODY_LIMIT, Phase, State, Step, Timeouts};
use crate::errors::Why;
use relay_cache::fill::{FillError, Wait};
use relay_upstream::budget::Refused;
use relay_upstream::upload::UploadWriter;
use relay_upstream::{PassSlot, RequestBody};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// When a body being collected began, and how far it has come.
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyClock {
    started: Instant,
    /// When it last grew.
    last: Instant,
    /// Its length then (decoded bytes: a chunked body's framing does not count).
    bytes: u64,
    /// Since when relay has not been reading it: a streamed body whose window is full waits
    /// for the origin, and that time is not the client's.
    paused: Option<Instant>,
}

impl BodyClock {
    fn new(now: Instant) -> BodyClock {
        BodyClock {
            started: now,
            last: now,
            bytes: 0,
            paused: None,
        }
    }

    /// Stops the clock (from the first call on).
    fn pause(&mut self, now: Instant) {
        self.paused.get_or_insert(now);
    }

    /// Starts it again: the pause is as if it had not been.
    fn resume(&mut self, now: Instant) {
        if let Some(p) = self.paused.take() {
            let d = now.saturating_duration_since(p);
            self.started += d;
            self.last += d;
        }
    }

    /// The body is `bytes` long at `now`.
    fn progress(&mut self, now: Instant, bytes: u64) {
        if bytes > self.bytes {
            self.bytes = bytes;
            self.last = now;
        }
    }

    /// When the body is cut, and why then: the end of the longest pause after its last
    /// byte, or the time by which its rate would have brought more than it has.
    pub(super) fn deadline(&self, t: &Timeouts) -> (Instant, Why) {
        let far = || self.started + Duration::from_secs(86_400 * 365);
        let pause = self.last.checked_add(t.body).unwrap_or_else(far);
        if t.body_min_rate == 0 {
            return (pause, Why::BodyTimeout);
        }
        let earned = u128::from(self.bytes) * 1_000_000 / u128::from(t.body_min_rate);
        let earned = Duration::from_micros(u64::try_from(earned).unwrap_or(u64::MAX));
        let by_rate = self
            .started
            .checked_add(t.body)
            .and_then(|t| t.checked_add(earned))
            .unwrap_or_else(far);
        match by_rate < pause {
            true => (by_rate, Why::BodyTooSlow),
            false => (pause, Why::BodyTimeout),
        }
    }
}

impl Exchange {
    /// Collects the body as far as it has come ([`Exchange::collect_pass_body`]); while it
    /// waits for more, its deadline is the body's (not the idle timeout, which any byte
    /// would restart).
    pub(super) fn collect_timed(&mut self, cx: &mut Cx<'_>) -> Step {
        let step = self.collect_pass_body(cx);
        let State::CollectingBody(c) = &self.state else {
            self.body_clock = None;
            return step;
        };
        let clock = self
            .body_clock
            .get_or_insert_with(|| BodyClock::new(cx.now));
        // While a streamed body's window is full relay does not read its client: its clock
        // stops.
        match self.phase == Phase::Wait && c.upload.is_some() {
            true => clock.pause(cx.now),
            false => clock.resume(cx.now),
        }
        clock.progress(cx.now, c.received.max(c.body.len() as u64));
        if self.phase == Phase::Recv && matches!(step, Step::Do(Action::Recv)) {
            self.deadline = clock.deadline(&cx.timeouts).0;
        }
        step
    }

    /// The exchange's deadline passed (the worker's sweep): a request body still being
    /// collected is answered 408 and the connection lingers, then closes; a request still
    /// waiting for its origin's answer head is answered 504; anything else closes at once. (So does a body read one receive at a time, without a multishot
    /// receive: its receive in flight would land under the answer.)
    pub fn on_deadline(&mut self, cx: &mut Cx<'_>) -> Action {
        if let State::CollectingBody(c) = &self.state
            && let Some(s) = &c.upload
            && self.linger.is_none()
            && (self.phase == Phase::Wait || cx.reading)
        {
            // A streamed body: an answer that ends the upload came while relay waited for
            // input (only a wait for room is woken by it); or the origin took nothing of
            // the window for a whole send timeout: 504, as for an origin that stops
            // sending.
            if s.answer_ends_upload() {
                let _ = self.answered_early(cx);
                return self.poll(cx);
            }
            if self.phase == Phase::Wait {
                let ms = cx.timeouts.send.as_millis() as u64;
                self.refuse(cx, Why::Upstream(FillError::timeout(Wait::Idle, ms)));
                return self.poll(cx);
            }
        }
        // Still waiting for the origin's answer head past the send timeout (one shorter
        // than the upstream's own budget, its first-byte timeout on each try): a 504, as
        // for an origin that does not answer, rather than a close with no status.
        if matches!(self.state, State::AwaitingHead(_)) && self.linger.is_none() {
            self.waited(cx);
            self.leave();
            let ms = cx.timeouts.send.as_millis() as u64;
            self.upstream_error(cx, FillError::timeout(Wait::FirstByte, ms));
            self.close_after = true;
            return self.poll(cx);
        }
        let collecting = matches!(self.state, State::CollectingBody(_))
            && self.phase == Phase::Recv
            && self.linger.is_none()
            && cx.reading;
        let Some(clock) = self.body_clock.take().filter(|_| collecting) else {
            return Action::Close;
        };
        let (_, why) = clock.deadline(&cx.timeouts);
        // (Its reservation goes back as the body is dropped.)
        self.refuse(cx, why);
        self.poll(cx)
    }
}

/// A pass-through body streamed to the origin as it comes: the window it is written into,
/// and the slot the origin's answer lands in (the request went ahead of its body).
pub(super) struct Streaming {
    writer: UploadWriter,
    slot: Arc<PassSlot>,
}

impl Streaming {
    /// The origin answered (or the pass failed) before the body was whole: the upload ends.
    /// (Whatever the status: hyper sends no more of a request's body once its answer has
    /// come, so an origin that answers 2xx early and reads on would wait for bytes that
    /// never come.)
    fn answer_ends_upload(&self) -> bool {
        self.slot.result.get().is_some()
    }
}

/// The least room a body with a length waits for before it writes again (unless less is
/// left to write): no piece of a few bytes each time the origin's connection sends one.
const MIN_PIECE: usize = 16 << 10;

impl Exchange {
    /// Decoded body bytes collected so far.
    pub(super) fn collected(&self) -> usize {
        match &self.state {
            State::CollectingBody(c) => c.body.len(),
            _ => 0,
        }
    }

    /// Streams the body being collected from here on: opens its window (`len`: its length,
    /// or None for a chunked one, sent on chunked), reserved from the pass-through budget
    /// for its client, writes into it what was collected so far and hands the request to
    /// the upstream with it. Refused (503) when the budget or the client's share has no
    /// room for the window.
    pub(super) fn start_upload(&mut self, cx: &mut Cx<'_>, len: Option<u64>) -> Result<(), Why> {
        let Some(up) = cx.shared.upstream.as_ref() else {
            return Err(Why::from(Refused::Full));
        };
        let State::CollectingBody(c) = &mut self.state else {
            return Ok(());
        };
        let (mut writer, body) = up.upload(cx.client, len).map_err(Why::from)?;
        writer.push(&c.body);
        // What was collected is in the window now, and counted there.
        c.received = c.body.len() as u64;
        c.body = Vec::new();
        c.reserved = None;
        let slot = Arc::new(PassSlot::default());
        up.pass(relay_upstream::PassRequest {
            origin: c.request.origin,
            method: c.request.method.clone(),
            path: self.target.clone(),
            headers: std::mem::take(&mut c.request.headers),
            body: RequestBody::Stream(body),
            host: std::mem::take(&mut c.request.host),
            slot: slot.clone(),
            client: cx.client,
        });
        c.upload = Some(Streaming { writer, slot });
        cx.stats.uploads_streamed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes what has come of a streamed body into its window; waits for room while the
    /// window is full (input is then not read: the receive buffer fills and the worker stops
    /// receiving), for input while there is none. Once the body is whole, waits for the
    /// answer. An answer before that ends the upload ([`Exchange::answered_early`]).
    pub(super) fn stream_pass_body(&mut self, cx: &mut Cx<'_>) -> Step {
        loop {
            let State::CollectingBody(c) = &mut self.state else {
                return Step::Again;
            };
            let Some(s) = c.upload.as_mut() else {
                return Step::Again;
            };
            s.slot.watchers.watch(cx.worker);
            if s.answer_ends_upload() {
                return self.answered_early(cx);
            }
            let avail = self.rend - self.rstart;
            if avail == 0 {
                match self.need_input(cx) {
                    None => continue,
                    Some(a) => return Step::Do(a),
                }
            }
            let input = &self.rbuf[self.rstart..self.rend];
            // The room this step needs: a chunked body's bytes decoded from all the input
            // at once (so the window must have room for it, or be empty), else a piece.
            let need = match self.chunked {
                Some(_) => avail,
                None => avail.min(c.left as usize).min(MIN_PIECE),
            };
            if s.writer.room() < need && !s.writer.is_empty() {
                s.writer.watch_room(cx.worker);
                if s.writer.room() < need && !s.writer.is_empty() {
                    return Step::Do(self.wait(cx));
                }
            }
            let (consumed, done) = match self.chunked.as_mut() {
                Some(dec) => {
                    let staged = &mut c.body;
                    staged.clear();
                    match dec.decode(input, |b| staged.extend_from_slice(b)) {
                        Ok(_) if c.received + staged.len() as u64 > PASS_BODY_LIMIT => {
                            // (The origin's connection is aborted as the window drops.)
                            self.refuse(cx, Why::BodyTooLarge);
                            return Step::Again;
                        }
                        Ok(p) => {
                            s.writer.push(staged);
                            c.received += staged.len() as u64;
                            (p.consumed, p.done)
                        }
                        Err(e) => {
                            self.refuse(cx, Why::BadBody(e));
                            return Step::Again;
                        }
                    }
                }
                None => {
                    let n = s.writer.write(&input[..avail.min(c.left as usize)]);
                    c.left -= n as u64;
                    c.received += n as u64;
                    (n, c.left == 0)
                }
            };
            self.rstart += consumed;
            if done {
                self.chunked = None;
                let State::CollectingBody(c) = self.leave() else {
                    return Step::Again;
                };
                let Some(s) = c.upload else {
                    return Step::Again;
                };
                s.writer.finish();
                self.enter(State::AwaitingPass(s.slot));
                return Step::Again;
            }
            if consumed == 0 {
                // A chunk-size or trailer line not whole yet: more input.
                match self.need_input(cx) {
                    None => continue,
                    Some(a) => return Step::Do(a),
                }
            }
        }
    }

    /// The origin answered before the streamed body was whole (say 413 or 401), or the
    /// pass failed: the answer is sent, what the client still sends of its body is read
    /// and dropped (as after a refusal; RFC 9112 §9.5: the client should stop sending it),
    /// and the connection closes after it. The window stays open until
    /// the answer is sent: a body cut now would abort the origin's connection under its
    /// answer.
    fn answered_early(&mut self, cx: &mut Cx<'_>) -> Step {
        let State::CollectingBody(c) = self.leave() else {
            return Step::Again;
        };
        let Some(s) = c.upload else {
            return Step::Again;
        };
        self.linger = Some(Linger::new(LINGER_BYTES));
        self.overflow.clear();
        self.saved.req.keep_alive = false;
        self.close_after = true;
        self.rstart = self.rend;
        self.discard = 0;
        self.chunked = None;
        self.upload_kept = Some(s.writer);
        cx.stats
            .uploads_answered_early
            .fetch_add(1, Ordering::Relaxed);
        self.enter(State::AwaitingPass(s.slot));
        Step::Again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            send: Duration::from_secs(60),
            body: Duration::from_secs(10),
            body_min_rate: 8192,
            revalidate: Duration::from_secs(1),
        }
    }

    #[test]
    fn time_spent_waiting_for_the_origin_is_not_the_clients() {
        let t0 = Instant::now();
        let t = timeouts();
        let mut clock = BodyClock::new(t0);
        clock.progress(t0 + Duration::from_secs(1), 8192);
        let before = clock.deadline(&t);
        // The window is full for 30 s: relay does not read the client meanwhile.
        clock.pause(t0 + Duration::from_secs(2));
        clock.pause(t0 + Duration::from_secs(20));
        clock.resume(t0 + Duration::from_secs(32));
        let after = clock.deadline(&t);
        assert_eq!(
            after.0,
            before.0 + Duration::from_secs(30),
            "{before:?} {after:?}"
        );
        assert_eq!(after.1, before.1);
        // Resumed twice: once only.
        clock.resume(t0 + Duration::from_secs(40));
        assert_eq!(clock.deadline(&t).0, after.0);
    }
}

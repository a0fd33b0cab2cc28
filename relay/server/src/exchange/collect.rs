//! A pass-through's request body is held to a deadline while it is collected: it may pause
//! at most `server.body_timeout_ms` between bytes, and must average `server.body_min_rate`
//! from its start once that much time has passed (as Apache's `mod_reqtimeout` `MinRate`).
//! Each byte restarts the pause, but a trickle of tiny pieces falls behind the rate, so a
//! body sent a byte at a time is cut about `body_timeout_ms` after it began however long it
//! announced. Past either bound it is answered 408 and the connection lingers and closes,
//! as after other early errors; its reservation of the pass-through budget goes back at once.

use super::{Action, Cx, Exchange, Phase, State, Step, Timeouts};
use crate::errors::Why;
use std::time::{Duration, Instant};

/// When a body being collected began, and how far it has come.
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyClock {
    started: Instant,
    /// When it last grew.
    last: Instant,
    /// Its length then (decoded bytes: a chunked body's framing does not count).
    bytes: u64,
}

impl BodyClock {
    fn new(now: Instant) -> BodyClock {
        BodyClock {
            started: now,
            last: now,
            bytes: 0,
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
        clock.progress(cx.now, c.body.len() as u64);
        if self.phase == Phase::Recv && matches!(step, Step::Do(Action::Recv)) {
            self.deadline = clock.deadline(&cx.timeouts).0;
        }
        step
    }

    /// The exchange's deadline passed (the worker's sweep): a request body still being
    /// collected is answered 408 and the connection lingers, then closes; anything else
    /// closes at once. (So does a body read one receive at a time, without a multishot
    /// receive: its receive in flight would land under the answer.)
    pub fn on_deadline(&mut self, cx: &mut Cx<'_>) -> Action {
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

//! Answers relay makes up itself (an origin that failed, a bad request, a missing file):
//! why each one was made ([`Why`]), counted by status and reason ([`ErrorLog::count`],
//! `relay_errors_total` on `/metrics`), and logged one line each within a per-worker
//! budget ([`ErrorLog::admit`]): a client sending garbage as fast as it can gets at most
//! [`LINES_PER_SECOND`] lines a second out of a worker, and the lines left out are counted
//! and reported once the second is over.

use crate::origin::OriginError;
use relay_cache::fill::FillError;
use relay_proto::ParseError;
use relay_proto::chunked::ChunkedError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lines a worker logs for its made-up answers in one second at most.
pub const LINES_PER_SECOND: u64 = 20;

/// Why relay answered a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The HTTP origin's fetch failed (what the upstream reported).
    Upstream(FillError),
    /// The request could not be parsed or broke a limit.
    BadRequest(ParseError),
    /// The request's chunked body is malformed.
    BadBody(ChunkedError),
    /// A method name the pass-through cannot send.
    BadMethod,
    /// A pass-through's body over the limit relay collects.
    BodyTooLarge,
    /// The pass-through budget (`origin.pass_buffer_bytes`) has no room for the body.
    PassBudget,
    /// The client holds its share of the pass-through budget (`origin.pass_buffer_per_client`).
    PassShare,
    /// A request body being collected paused longer than `server.body_timeout_ms`.
    BodyTimeout,
    /// A request body being collected fell behind `server.body_min_rate`.
    BodyTooSlow,
    /// The directory origin could not serve the file.
    Directory(OriginError),
    /// No directory origin is configured for a request no HTTP origin takes.
    NoDirectory,
    /// A method other than GET or HEAD for the directory origin.
    MethodNotAllowed,
    /// The description was evicted as soon as it was fetched (the client may retry).
    Evicted,
    /// `only-if-cached` and nothing stored answers it (RFC 9111 §5.2.1.7).
    NotCached,
    /// A request on the peer listener without valid `Relay-Peer` credentials.
    PeerForbidden(relay_cluster::peer::Forbidden),
}

/// Every reason label, in counter order.
const REASONS: &[&str] = &[
    "status",
    "connect",
    "tls",
    "closed",
    "first_byte_timeout",
    "idle_timeout",
    "malformed",
    "truncated",
    "short",
    "changed",
    "framing",
    "down",
    "pass_budget",
    "pass_share",
    "body_timeout",
    "body_too_slow",
    "bad_request",
    "bad_body",
    "bad_method",
    "body_too_large",
    "not_found",
    "bad_path",
    "origin_io",
    "method_not_allowed",
    "evicted",
    "not_cached",
    "peer_forbidden",
];

/// The statuses counted apart; the others by class (`4xx`, `5xx`).
const STATUSES: &[u16] = &[
    400, 403, 404, 405, 408, 413, 414, 417, 431, 501, 502, 503, 504, 505,
];
const STATUS_LABELS: &[&str] = &[
    "400", "403", "404", "405", "408", "413", "414", "417", "431", "501", "502", "503", "504",
    "505", "4xx", "5xx",
];
const SLOTS: usize = STATUS_LABELS.len() * REASONS.len();

impl Why {
    /// The status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            Why::Upstream(e) => e.status(),
            Why::BadRequest(e) => e.status(),
            Why::BadBody(_) | Why::BadMethod => 400,
            Why::BodyTooLarge => 413,
            Why::PassBudget | Why::PassShare | Why::Evicted => 503,
            Why::BodyTimeout | Why::BodyTooSlow => 408,
            Why::NotCached => 504,
            Why::PeerForbidden(_) => 403,
            Why::Directory(OriginError::NotFound) | Why::NoDirectory => 404,
            Why::Directory(OriginError::BadPath) => 400,
            Why::Directory(OriginError::Io(_)) => 502,
            Why::MethodNotAllowed => 405,
        }
    }

    /// A short name of the reason (the metric's `reason` label).
    pub fn reason(self) -> &'static str {
        match self {
            Why::Upstream(e) => e.reason(),
            Why::BadRequest(_) => "bad_request",
            Why::BadBody(_) => "bad_body",
            Why::BadMethod => "bad_method",
            Why::BodyTooLarge => "body_too_large",
            Why::PassBudget => "pass_budget",
            Why::PassShare => "pass_share",
            Why::BodyTimeout => "body_timeout",
            Why::BodyTooSlow => "body_too_slow",
            Why::Directory(OriginError::NotFound) | Why::NoDirectory => "not_found",
            Why::Directory(OriginError::BadPath) => "bad_path",
            Why::Directory(OriginError::Io(_)) => "origin_io",
            Why::MethodNotAllowed => "method_not_allowed",
            Why::Evicted => "evicted",
            Why::NotCached => "not_cached",
            Why::PeerForbidden(_) => "peer_forbidden",
        }
    }

    /// Whether the request was parsed (its method, URL and route are known).
    pub fn parsed(self) -> bool {
        !matches!(self, Why::BadRequest(_))
    }
}

impl From<relay_upstream::budget::Refused> for Why {
    fn from(e: relay_upstream::budget::Refused) -> Why {
        match e {
            relay_upstream::budget::Refused::Full => Why::PassBudget,
            relay_upstream::budget::Refused::Share => Why::PassShare,
        }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Upstream(e) => write!(f, "{e}"),
            Why::BadRequest(e) => write!(f, "bad request: {e}"),
            Why::BadBody(e) => write!(f, "bad request body: {e}"),
            Why::BadMethod => f.write_str("bad request: a method name relay cannot send"),
            Why::BodyTooLarge => f.write_str("request body over the pass-through limit"),
            Why::PassBudget => f.write_str("pass-through budget full"),
            Why::PassShare => f.write_str("the client holds its share of the pass-through budget"),
            Why::BodyTimeout => f.write_str("request body paused past server.body_timeout_ms"),
            Why::BodyTooSlow => f.write_str("request body slower than server.body_min_rate"),
            Why::Directory(OriginError::NotFound) => f.write_str("file not found"),
            Why::Directory(e) => write!(f, "{e}"),
            Why::NoDirectory => f.write_str("no directory origin"),
            Why::MethodNotAllowed => f.write_str("method not allowed"),
            Why::Evicted => f.write_str("description evicted as it was fetched"),
            Why::NotCached => f.write_str("only-if-cached, and nothing stored answers it"),
            Why::PeerForbidden(e) => write!(f, "peer request refused: {e}"),
        }
    }
}

/// A worker's made-up answers: counted by status and reason, and the budget of its log
/// lines. Written by its worker only (the counters are read by scrapes).
pub struct ErrorLog {
    counts: [AtomicU64; SLOTS],
    /// The second (since `epoch`) the lines in `lines` were logged in.
    window: AtomicU64,
    lines: AtomicU64,
    /// Lines left out, not yet reported.
    suppressed: AtomicU64,
    epoch: Instant,
}

impl Default for ErrorLog {
    fn default() -> Self {
        ErrorLog {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            window: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

fn slot(status: u16, reason: &str) -> Option<usize> {
    let r = REASONS.iter().position(|r| *r == reason)?;
    let s = STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(match status {
            ..500 => STATUSES.len(),
            _ => STATUSES.len() + 1,
        });
    Some(s * REASONS.len() + r)
}

impl ErrorLog {
    /// Counts one answer with `status` made for `why`.
    pub fn count(&self, status: u16, why: Why) {
        if let Some(i) = slot(status, why.reason()) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Answers counted with `status` and `reason` (tests).
    pub fn counted(&self, status: u16, reason: &str) -> u64 {
        slot(status, reason).map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Every (status, reason, count) counted at least once.
    pub fn each(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.counts.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Ordering::Relaxed);
            (n > 0).then(|| {
                (
                    STATUS_LABELS[i / REASONS.len()],
                    REASONS[i % REASONS.len()],
                    n,
                )
            })
        })
    }

    /// Whether a line may be logged at `now`: at most [`LINES_PER_SECOND`] a second; the
    /// others are counted, and reported when a later second begins.
    pub fn admit(&self, now: Instant) -> bool {
        self.roll(now);
        if self.lines.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND {
            return true;
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Starts the second `now` is in, reporting the lines left out before it (the worker
    /// calls it every tick, so they are reported even when no more errors come).
    pub fn roll(&self, now: Instant) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        if self.window.load(Ordering::Relaxed) == second {
            return;
        }
        self.window.store(second, Ordering::Relaxed);
        self.lines.store(0, Ordering::Relaxed);
        let n = self.suppressed.swap(0, Ordering::Relaxed);
        if n > 0 {
            log::warn!(
                "{n} error answer lines not logged (at most {LINES_PER_SECOND} a second per worker)"
            );
        }
    }

    /// Lines left out and not yet reported (tests).
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_reason_has_a_counter() {
        let whys = [
            Why::Upstream(FillError::Status(404)),
            Why::Upstream(FillError::Connect),
            Why::Upstream(FillError::Closed),
            Why::Upstream(FillError::timeout(relay_cache::fill::Wait::FirstByte, 5)),
            Why::Upstream(FillError::timeout(relay_cache::fill::Wait::Idle, 5)),
            Why::Upstream(FillError::Malformed),
            Why::Upstream(FillError::Truncated),
            Why::Upstream(FillError::Short),
            Why::Upstream(FillError::Changed),
            Why::Upstream(FillError::Framing),
            Why::Upstream(FillError::Down),
            Why::Upstream(FillError::Busy),
            Why::Upstream(FillError::Share),
            Why::BadRequest(ParseError::UriTooLong),
            Why::BadBody(ChunkedError::InvalidSize),
            Why::BadMethod,
            Why::BodyTooLarge,
            Why::PassBudget,
            Why::PassShare,
            Why::BodyTimeout,
            Why::BodyTooSlow,
            Why::Directory(OriginError::NotFound),
            Why::Directory(OriginError::BadPath),
            Why::Directory(OriginError::Io(std::io::ErrorKind::Other)),
            Why::NoDirectory,
            Why::MethodNotAllowed,
            Why::Evicted,
            Why::NotCached,
        ];
        let log = ErrorLog::default();
        for why in whys {
            log.count(why.status(), why);
            assert!(log.counted(why.status(), why.reason()) > 0, "{why:?}");
            assert!(!why.to_string().is_empty());
        }
        assert_eq!(log.counted(404, "status"), 1);
        assert_eq!(log.counted(414, "bad_request"), 1);
        // Statuses not listed are counted by class.
        log.count(418, Why::Upstream(FillError::Status(418)));
        assert!(
            log.each()
                .any(|(s, r, n)| (s, r, n) == ("4xx", "status", 1))
        );
    }

    #[test]
    fn lines_are_bounded_per_second_and_the_rest_reported_later() {
        let log = ErrorLog::default();
        let t = log.epoch + Duration::from_millis(1500);
        let admitted = (0..1000).filter(|_| log.admit(t)).count() as u64;
        assert_eq!(admitted, LINES_PER_SECOND);
        assert_eq!(log.suppressed(), 1000 - LINES_PER_SECOND);
        // The next second: the count is reported, and lines are admitted again.
        log.roll(t + Duration::from_secs(1));
        assert_eq!(log.suppressed(), 0);
        assert!(log.admit(t + Duration::from_secs(1)));
    }
}

//! What relay did for a response, as the `Cache-Status` field says it (RFC 9211) and the
//! hit, miss and forward counters count it: one value, decided once per response
//! ([`CacheStatus`]), written into a reused buffer (no allocation) and counted
//! ([`Lookups::count`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a request went to the origin (RFC 9211 §2.2 `fwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fwd {
    /// Nothing was stored for the key.
    UriMiss,
    /// The base response was stored, not the variant this request selects.
    VaryMiss,
    /// A stored response was revalidated (or replaced).
    Stale,
    /// The description was stored, a chunk the body needs was fetched.
    Partial,
    /// A method other than GET and HEAD, passed through.
    Method,
    /// Forwarded for the request's own fields (`Authorization`, ...).
    Request,
    /// relay was configured not to cache it.
    Bypass,
}

impl Fwd {
    pub const ALL: [Fwd; 7] = [
        Fwd::UriMiss,
        Fwd::VaryMiss,
        Fwd::Stale,
        Fwd::Partial,
        Fwd::Method,
        Fwd::Request,
        Fwd::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Partial => "partial",
            Fwd::Method => "method",
            Fwd::Request => "request",
            Fwd::Bypass => "bypass",
        }
    }

    /// The request looked in the cache first (a miss), rather than going past it.
    pub fn looked_up(self) -> bool {
        !matches!(self, Fwd::Method | Fwd::Request | Fwd::Bypass)
    }
}

/// A response's `Cache-Status` entry: a hit (`fwd` None) or a forward with its reason and
/// what came of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStatus {
    pub fwd: Option<Fwd>,
    /// The origin's status (`fwd-status`; 0: not said).
    pub fwd_status: u16,
    /// The answer was stored.
    pub stored: bool,
    /// This request waited on another request's fetch instead of making its own.
    pub collapsed: bool,
    /// `detail` (`stale-while-revalidate`, `stale-if-error`, `authorization`, ...).
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// Served from storage, fresh.
    pub const HIT: CacheStatus = CacheStatus {
        fwd: None,
        fwd_status: 0,
        stored: false,
        collapsed: false,
        detail: None,
    };

    /// Served from storage, as `detail` allowed (`stale-while-revalidate`, ...).
    pub fn hit(detail: &'static str) -> CacheStatus {
        CacheStatus {
            detail: Some(detail),
            ..CacheStatus::HIT
        }
    }

    /// Forwarded for `fwd`.
    pub fn fwd(fwd: Fwd) -> CacheStatus {
        CacheStatus {
            fwd: Some(fwd),
            ..CacheStatus::HIT
        }
    }

    pub fn is_hit(&self) -> bool {
        self.fwd.is_none()
    }

    /// Writes the entry's parameters (after `relay; `) into `out`, replacing what it held.
    pub fn write(&self, out: &mut String) {
        out.clear();
        match self.fwd {
            None => out.push_str("hit"),
            Some(f) => {
                out.push_str("fwd=");
                out.push_str(f.as_str());
                if self.fwd_status != 0 {
                    let _ = write!(out, "; fwd-status={}", self.fwd_status);
                }
                if self.stored {
                    out.push_str("; stored");
                }
                if self.collapsed {
                    out.push_str("; collapsed");
                }
            }
        }
        if let Some(d) = self.detail {
            out.push_str("; detail=");
            out.push_str(d);
        }
    }
}

/// What became of a response, as an operator alerts on it: its [`CacheStatus`] in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served from storage, fresh.
    Hit,
    /// Served from storage stale, as a window allowed (`stale-while-revalidate`,
    /// `stale-if-error`).
    Stale,
    /// A stored response the origin confirmed (304) and that then answered.
    Revalidated,
    /// Looked up, not found (or not whole), fetched.
    Miss,
    /// Not looked up: another method, the request's own fields, a bypass.
    Pass,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Hit,
        Outcome::Stale,
        Outcome::Revalidated,
        Outcome::Miss,
        Outcome::Pass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Miss => "miss",
            Outcome::Pass => "pass",
        }
    }

    pub fn of(status: &CacheStatus) -> Outcome {
        match status.fwd {
            None if status.detail.is_some_and(|d| d.starts_with("stale")) => Outcome::Stale,
            None => Outcome::Hit,
            Some(Fwd::Stale) if status.fwd_status == 304 => Outcome::Revalidated,
            Some(f) if f.looked_up() => Outcome::Miss,
            Some(_) => Outcome::Pass,
        }
    }
}

/// A status's class: 1 for 1xx, ... 5 for 5xx (0 for anything else).
pub fn status_class(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => c as usize,
        _ => 0,
    }
}

/// The origins whose responses are counted apart ([`Lookups::responses`]): the directory
/// (0), then the first HTTP origins; the rest share the last slot.
pub const COUNTED_ORIGINS: usize = 34;

/// The [`Lookups::responses`] slot of a response routed to `http` (an HTTP origin's index)
/// or to the directory (None).
pub fn origin_slot(http: Option<usize>) -> usize {
    match http {
        None => 0,
        Some(o) => (o + 1).min(COUNTED_ORIGINS - 1),
    }
}

/// A worker's responses by [`CacheStatus`]: hits, misses (forwards that looked in the cache
/// first), every forward by its reason, and every response by its origin, [`Outcome`] and
/// status class.
pub struct Lookups {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub forwards: [AtomicU64; Fwd::ALL.len()],
    /// `[origin slot][outcome][status class]` (class 0: a status outside 100 to 599).
    pub responses: Box<[[[AtomicU64; 6]; Outcome::ALL.len()]; COUNTED_ORIGINS]>,
}

impl Default for Lookups {
    fn default() -> Lookups {
        Lookups {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            forwards: Default::default(),
            responses: Box::new(std::array::from_fn(|_| Default::default())),
        }
    }
}

impl Lookups {
    /// A response with `status` (HTTP) from origin slot `origin` ([`origin_slot`]) went out
    /// as `cache` says.
    pub fn count(&self, cache: &CacheStatus, status: u16, origin: usize) {
        self.responses[origin.min(COUNTED_ORIGINS - 1)][Outcome::of(cache) as usize]
            [status_class(status)]
        .fetch_add(1, Ordering::Relaxed);
        self.count_lookup(cache);
    }

    fn count_lookup(&self, status: &CacheStatus) {
        match status.fwd {
            None => {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            Some(f) => {
                if f.looked_up() {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                }
                self.forwards[f as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Forwards counted for `fwd`.
    pub fn forwarded(&self, fwd: Fwd) -> u64 {
        self.forwards[fwd as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(s: CacheStatus) -> String {
        let mut out = String::new();
        s.write(&mut out);
        out
    }

    #[test]
    fn entries_are_written_in_the_order_rfc_9211_gives() {
        assert_eq!(written(CacheStatus::HIT), "hit");
        assert_eq!(
            written(CacheStatus::hit("stale-if-error")),
            "hit; detail=stale-if-error"
        );
        let all = CacheStatus {
            fwd: Some(Fwd::Stale),
            fwd_status: 304,
            stored: true,
            collapsed: true,
            detail: None,
        };
        assert_eq!(written(all), "fwd=stale; fwd-status=304; stored; collapsed");
        for f in Fwd::ALL {
            assert_eq!(written(CacheStatus::fwd(f)), format!("fwd={}", f.as_str()));
        }
    }

    #[test]
    fn hits_and_misses_come_from_the_same_value() {
        let l = Lookups::default();
        l.count(&CacheStatus::HIT, 200, 0);
        l.count(&CacheStatus::hit("stale-while-revalidate"), 200, 0);
        l.count(&CacheStatus::fwd(Fwd::UriMiss), 404, 1);
        l.count(&CacheStatus::fwd(Fwd::Partial), 206, 1);
        l.count(&CacheStatus::fwd(Fwd::Method), 502, 1);
        l.count(&CacheStatus::fwd(Fwd::Request), 200, 1);
        let revalidated = CacheStatus {
            fwd_status: 304,
            ..CacheStatus::fwd(Fwd::Stale)
        };
        l.count(&revalidated, 200, 1);
        let n = |o: Outcome, class: usize| {
            (0..COUNTED_ORIGINS)
                .map(|s| l.responses[s][o as usize][class].load(Ordering::Relaxed))
                .sum::<u64>()
        };
        assert_eq!(
            l.responses[0][Outcome::Hit as usize][2].load(Ordering::Relaxed),
            1,
            "by origin slot"
        );
        assert_eq!(
            (
                n(Outcome::Hit, 2),
                n(Outcome::Stale, 2),
                n(Outcome::Revalidated, 2)
            ),
            (1, 1, 1)
        );
        assert_eq!((n(Outcome::Miss, 4), n(Outcome::Miss, 2)), (1, 1));
        assert_eq!((n(Outcome::Pass, 5), n(Outcome::Pass, 2)), (1, 1));
        assert_eq!(l.hits.load(Ordering::Relaxed), 2);
        // (The revalidated one counts as a miss of the cache too, as before.)
        assert_eq!(
            l.misses.load(Ordering::Relaxed),
            3,
            "method, request: not looked up"
        );
        assert_eq!(l.forwarded(Fwd::Method), 1);
        assert_eq!(l.forwarded(Fwd::Partial), 1);
    }
}

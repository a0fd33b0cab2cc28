//! Freshness (RFC 9111 §4.2): a stored response's freshness lifetime, its current age, and
//! what may be done with it once stale (`stale-while-revalidate`, `stale-if-error`,
//! `max-stale`, and the directives that forbid serving stale).
//!
//! All arithmetic saturates: an absurd `Age` or `max-age` yields a huge age or lifetime, never
//! an overflow. Times are seconds since the epoch.

use super::{PolicyConfig, RequestDirectives, StoredMeta};

/// Status codes that are heuristically cacheable (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Heuristic freshness lifetime (RFC 9111 §4.2.2): only without explicit freshness, only for a
/// heuristically cacheable status or a response marked `public`, only with a `Last-Modified`
/// not later than `Date`; `heuristic_percent` of (`Date` − `Last-Modified`), capped at
/// `heuristic_max`. `None` when no heuristic applies.
pub fn heuristic_lifetime(meta: &StoredMeta, config: &PolicyConfig) -> Option<u32> {
    if !config.heuristic
        || meta.has_explicit_freshness()
        || !(heuristically_cacheable(meta.status) || meta.directives.public)
    {
        return None;
    }
    let interval = meta.date_value().checked_sub(meta.last_modified?)?;
    let lifetime = interval.saturating_mul(u64::from(config.heuristic_percent)) / 100;
    Some(u32::try_from(lifetime.min(u64::from(config.heuristic_max))).unwrap_or(u32::MAX))
}

/// Freshness lifetime for a shared cache (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else
/// `Expires` − `Date`, else the heuristic lifetime, else 0.
pub fn freshness_lifetime(meta: &StoredMeta) -> u64 {
    let d = &meta.directives;
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return u64::from(s);
    }
    if let Some(expires) = meta.expires {
        return expires.saturating_sub(meta.date_value());
    }
    meta.heuristic_lifetime.map_or(0, u64::from)
}

/// Current age (RFC 9111 §4.2.3) at `now`.
pub fn current_age(meta: &StoredMeta, now: u64) -> u64 {
    let apparent_age = meta.response_time.saturating_sub(meta.date_value());
    let response_delay = meta.response_time.saturating_sub(meta.request_time);
    let corrected_age_value = u64::from(meta.age).saturating_add(response_delay);
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = now.saturating_sub(meta.response_time);
    corrected_initial_age.saturating_add(resident_time)
}

/// A stored response's lifetime and age at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime, seconds.
    pub lifetime: u64,
    /// Current age, seconds.
    pub age: u64,
}

impl Freshness {
    /// Computes both at `now`.
    pub fn of(meta: &StoredMeta, now: u64) -> Freshness {
        Freshness {
            lifetime: freshness_lifetime(meta),
            age: current_age(meta, now),
        }
    }

    /// `freshness_lifetime > current_age` (RFC 9111 §4.2).
    pub fn is_fresh(&self) -> bool {
        self.lifetime > self.age
    }

    /// Seconds since the response became stale (0 while fresh).
    pub fn staleness(&self) -> u64 {
        self.age.saturating_sub(self.lifetime)
    }

    /// Seconds of freshness left (0 once stale).
    pub fn remaining(&self) -> u64 {
        self.lifetime.saturating_sub(self.age)
    }
}

/// Whether the stored response is fresh at `now`.
pub fn is_fresh(meta: &StoredMeta, now: u64) -> bool {
    Freshness::of(meta, now).is_fresh()
}

/// Seconds the stored response has been stale at `now` (0 while fresh).
pub fn staleness(meta: &StoredMeta, now: u64) -> u64 {
    Freshness::of(meta, now).staleness()
}

/// Every reuse needs validation: unqualified response `no-cache` (RFC 9111 §5.2.2.4).
pub fn always_validate(meta: &StoredMeta) -> bool {
    meta.directives.no_cache.is_all()
}

/// Serving the response stale is forbidden in every case (RFC 9111 §4.2.4): `no-cache`,
/// `must-revalidate`, `proxy-revalidate`. (A stale response without these may still be
/// served only where a window or the request allows.)
pub fn stale_forbidden(meta: &StoredMeta) -> bool {
    let d = &meta.directives;
    d.no_cache.is_all() || d.must_revalidate || d.proxy_revalidate
}

/// A client's `max-stale` may be honoured: stale serving not forbidden, and no `s-maxage`
/// (which implies `proxy-revalidate` for shared caches, §5.2.2.10).
pub fn client_may_accept_stale(meta: &StoredMeta) -> bool {
    !stale_forbidden(meta) && meta.directives.s_maxage.is_none()
}

/// Within the `stale-while-revalidate` window (RFC 5861 §3): stale, by no more than the
/// window, and serving stale not forbidden.
///
/// Unlike `max-stale`, an origin's own `stale-while-revalidate` is honoured beside its
/// `s-maxage`: the implied `proxy-revalidate` of `s-maxage` is a default the same origin
/// explicitly relaxes (how CDNs read `s-maxage=60, stale-while-revalidate=30`).
pub fn within_stale_while_revalidate(meta: &StoredMeta, f: &Freshness) -> bool {
    !f.is_fresh()
        && !stale_forbidden(meta)
        && meta
            .directives
            .stale_while_revalidate
            .is_some_and(|w| f.staleness() <= u64::from(w))
}

/// Within the `stale-if-error` window (RFC 5861 §4): the larger of the response's and the
/// request's windows covers the staleness, and serving stale is not forbidden. A fresh
/// response is within any window.
pub fn within_stale_if_error(
    meta: &StoredMeta,
    request: &RequestDirectives,
    f: &Freshness,
) -> bool {
    let window = meta
        .directives
        .stale_if_error
        .max(request.directives.stale_if_error);
    !stale_forbidden(meta) && window.is_some_and(|w| f.staleness() <= u64::from(w))
}

/// Status codes that count as an error for `stale-if-error` (RFC 5861 §4).
pub fn is_error_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: u16, hs: &[(&str, &str)], req: u64, resp: u64) -> StoredMeta {
        let h = hs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        StoredMeta::from_response(status, h, req, resp, &PolicyConfig::default())
    }

    // 1_000_000 s after the epoch
    const D: &str = "Mon, 12 Jan 1970 13:46:40 GMT";

    #[test]
    fn rfc9111_4_2_1_lifetime_precedence() {
        let hs = [
            ("Date", D),
            ("Cache-Control", "max-age=100, s-maxage=10"),
            ("Expires", "Tue, 13 Jan 1970 13:46:40 GMT"),
        ];
        assert_eq!(freshness_lifetime(&meta(200, &hs, 0, 1_000_000)), 10);
        let hs = [
            ("Date", D),
            ("Cache-Control", "max-age=100"),
            ("Expires", "0"),
        ];
        assert_eq!(freshness_lifetime(&meta(200, &hs, 0, 1_000_000)), 100);
        let hs = [("Date", D), ("Expires", "Tue, 13 Jan 1970 13:46:40 GMT")];
        assert_eq!(freshness_lifetime(&meta(200, &hs, 0, 1_000_000)), 86_400);
        // Expires before Date
        let hs = [("Date", D), ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")];
        assert_eq!(freshness_lifetime(&meta(200, &hs, 0, 1_000_000)), 0);
        // Expires without Date: the response time stands in
        let hs = [("Expires", "Tue, 13 Jan 1970 13:46:40 GMT")];
        assert_eq!(freshness_lifetime(&meta(200, &hs, 0, 1_000_000)), 86_400);
        assert_eq!(freshness_lifetime(&meta(200, &[], 0, 1_000_000)), 0);
    }

    #[test]
    fn rfc9111_5_3_invalid_expires_means_expired() {
        let hs = [("Date", D), ("Expires", "soon")];
        let m = meta(200, &hs, 0, 1_000_000);
        assert_eq!(freshness_lifetime(&m), 0);
        assert!(!is_fresh(&m, 1_000_000));
        assert_eq!(heuristic_lifetime(&m, &PolicyConfig::default()), None);
    }

    #[test]
    fn rfc9111_4_2_2_heuristic() {
        // Last-Modified 100_000 s before Date: 10% = 10_000 s
        let lm = "Sun, 11 Jan 1970 10:00:00 GMT"; // 900_000
        let m = meta(200, &[("Date", D), ("Last-Modified", lm)], 0, 1_000_000);
        assert_eq!(m.heuristic_lifetime, Some(10_000));
        assert_eq!(freshness_lifetime(&m), 10_000);
        // not heuristically cacheable: no heuristic, unless public
        let m = meta(302, &[("Date", D), ("Last-Modified", lm)], 0, 1_000_000);
        assert_eq!(freshness_lifetime(&m), 0);
        let m = meta(
            302,
            &[
                ("Date", D),
                ("Last-Modified", lm),
                ("Cache-Control", "public"),
            ],
            0,
            1_000_000,
        );
        assert_eq!(freshness_lifetime(&m), 10_000);
        // capped
        let m = meta(
            200,
            &[
                ("Date", D),
                ("Last-Modified", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ],
            0,
            1_000_000,
        );
        assert_eq!(m.heuristic_lifetime, Some(86_400));
        // Last-Modified in the future of Date: none
        let m = meta(
            200,
            &[
                ("Date", D),
                ("Last-Modified", "Tue, 13 Jan 1970 13:46:40 GMT"),
            ],
            0,
            1_000_000,
        );
        assert_eq!(m.heuristic_lifetime, None);
        // switched off
        let off = PolicyConfig {
            heuristic: false,
            ..PolicyConfig::default()
        };
        let h = [
            (&b"Date"[..], D.as_bytes()),
            (b"Last-Modified", lm.as_bytes()),
        ];
        let m = StoredMeta::from_response(200, h, 0, 1_000_000, &off);
        assert_eq!(m.heuristic_lifetime, None);
    }

    #[test]
    fn rfc9111_4_2_3_current_age() {
        // apparent age 10 (Date 10 s before receipt), Age 3 + delay 2 = 5: initial age 10
        let hs = [("Date", D), ("Age", "3")];
        let m = meta(200, &hs, 1_000_008, 1_000_010);
        assert_eq!(current_age(&m, 1_000_010), 10);
        assert_eq!(current_age(&m, 1_000_030), 30);
        // Age dominates: 50 + 2
        let hs = [("Date", D), ("Age", "50")];
        let m = meta(200, &hs, 1_000_008, 1_000_010);
        assert_eq!(current_age(&m, 1_000_010), 52);
        // Date in the future of the response time: apparent age 0
        let m = meta(200, &[("Date", D)], 999_990, 999_990);
        assert_eq!(current_age(&m, 999_995), 5);
        // a clock that went back: resident time 0
        assert_eq!(current_age(&m, 0), 0);
    }

    #[test]
    fn rfc9111_1_2_2_age_overflow_saturates() {
        let hs = [
            ("Age", "99999999999999999999"),
            ("Cache-Control", "max-age=99999999999999999"),
        ];
        let m = meta(200, &hs, 0, u64::MAX);
        assert_eq!(current_age(&m, u64::MAX), u64::MAX);
        let f = Freshness::of(&m, u64::MAX);
        assert!(!f.is_fresh());
        assert_eq!(f.lifetime, 1 << 31);
    }

    #[test]
    fn rfc9111_4_2_is_fresh_is_strict() {
        let m = meta(200, &[("Cache-Control", "max-age=10")], 100, 100);
        assert!(is_fresh(&m, 109));
        assert!(!is_fresh(&m, 110));
        assert_eq!(staleness(&m, 110), 0);
        assert_eq!(staleness(&m, 115), 5);
        assert_eq!(Freshness::of(&m, 104).remaining(), 6);
    }

    #[test]
    fn rfc5861_stale_windows() {
        let m = meta(
            200,
            &[(
                "Cache-Control",
                "max-age=10, stale-while-revalidate=5, stale-if-error=20",
            )],
            0,
            0,
        );
        let req = RequestDirectives::get();
        let f = |now| Freshness::of(&m, now);
        assert!(
            !within_stale_while_revalidate(&m, &f(5)),
            "fresh is not in the window"
        );
        assert!(within_stale_while_revalidate(&m, &f(15)));
        assert!(!within_stale_while_revalidate(&m, &f(16)));
        assert!(within_stale_if_error(&m, &req, &f(30)));
        assert!(!within_stale_if_error(&m, &req, &f(31)));
        let m2 = meta(
            200,
            &[(
                "Cache-Control",
                "max-age=10, stale-if-error=20, must-revalidate",
            )],
            0,
            0,
        );
        assert!(!within_stale_if_error(&m2, &req, &Freshness::of(&m2, 11)));
        // a request's stale-if-error widens the window
        let cfg = PolicyConfig::default();
        let req = RequestDirectives::from_request(
            b"GET",
            [(&b"Cache-Control"[..], &b"stale-if-error=100"[..])],
            &cfg,
        );
        assert!(within_stale_if_error(&m, &req, &f(100)));
        assert!(is_error_status(503) && !is_error_status(501) && !is_error_status(404));
    }

    #[test]
    fn rfc9111_4_2_4_stale_forbidden() {
        for cc in ["no-cache", "must-revalidate", "proxy-revalidate"] {
            assert!(
                stale_forbidden(&meta(200, &[("Cache-Control", cc)], 0, 0)),
                "{cc}"
            );
        }
        let q = meta(200, &[("Cache-Control", "no-cache=\"set-cookie\"")], 0, 0);
        assert!(!stale_forbidden(&q) && !always_validate(&q));
        let s = meta(200, &[("Cache-Control", "s-maxage=5")], 0, 0);
        assert!(!stale_forbidden(&s) && !client_may_accept_stale(&s));
    }
}

//! Freshness (RFC 9111 §4.2): a stored response's freshness lifetime, its current age, the
//! directives that forbid serving it stale, and whether a description the cache keeps (in
//! relative terms: its remaining lifetime and stale windows, as relay's `ObjectMeta` holds
//! them) is fresh, within `stale-while-revalidate` or within `stale-if-error` (RFC 5861).
//!
//! All arithmetic saturates: an absurd `Age` or `max-age` yields a huge age or lifetime, never
//! an overflow. Times of a response are seconds since the epoch; a kept description's are
//! durations since it was fetched.

use super::{PolicyConfig, StoredMeta};
use std::time::Duration;

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
/// `Expires` − `Date`, else the operator's lifetime for it, else the heuristic lifetime,
/// else 0.
pub fn freshness_lifetime(meta: &StoredMeta) -> u64 {
    let d = &meta.directives;
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return u64::from(s);
    }
    if let Some(expires) = meta.expires {
        return expires.saturating_sub(meta.date_value());
    }
    meta.operator_lifetime
        .or(meta.heuristic_lifetime)
        .map_or(0, u64::from)
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

/// Fresh (§4.2), for a description the cache keeps in relative terms (relay's `ObjectMeta`):
/// less than `ttl` has passed since it was fetched. `ttl` is what was left of its freshness
/// lifetime then (lifetime less current age), zero when every reuse must be validated
/// ([`always_validate`]); `elapsed` is the time since it was fetched.
pub fn kept_is_fresh(elapsed: Duration, ttl: Duration) -> bool {
    elapsed < ttl
}

/// Stale, but within its `stale-while-revalidate` window (RFC 5861 §3): it may be served
/// while it is revalidated in the background. `window` is zero when the response had none or
/// serving it stale is forbidden ([`stale_forbidden`]). Terms as in [`kept_is_fresh`].
pub fn kept_within_stale_while_revalidate(
    elapsed: Duration,
    ttl: Duration,
    window: Duration,
) -> bool {
    elapsed >= ttl && elapsed < ttl.saturating_add(window)
}

/// Fresh, or stale within its `stale-if-error` window (RFC 5861 §4): it may stand in for an
/// origin that failed ([`is_error_status`], or no answer at all). Terms as in
/// [`kept_within_stale_while_revalidate`].
pub fn kept_within_stale_if_error(elapsed: Duration, ttl: Duration, window: Duration) -> bool {
    elapsed < ttl.saturating_add(window)
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
        assert!(freshness_lifetime(&m) <= current_age(&m, 1_000_000));
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
        assert_eq!(freshness_lifetime(&m), 1 << 31);
        assert!(freshness_lifetime(&m) <= current_age(&m, u64::MAX));
    }

    #[test]
    fn rfc9111_4_2_a_kept_description_is_fresh_strictly_before_its_ttl() {
        let s = Duration::from_secs;
        assert!(kept_is_fresh(s(9), s(10)));
        assert!(kept_is_fresh(s(10) - Duration::from_nanos(1), s(10)));
        assert!(!kept_is_fresh(s(10), s(10)));
        assert!(
            !kept_is_fresh(Duration::ZERO, Duration::ZERO),
            "always validated"
        );
        assert!(kept_is_fresh(s(u64::MAX), Duration::MAX), "never expires");
    }

    #[test]
    fn rfc5861_stale_windows() {
        // max-age=10, stale-while-revalidate=5, stale-if-error=20, as kept.
        let s = Duration::from_secs;
        let (ttl, swr, sie) = (s(10), s(5), s(20));
        assert!(
            !kept_within_stale_while_revalidate(s(5), ttl, swr),
            "fresh is not in the window"
        );
        assert!(kept_within_stale_while_revalidate(s(10), ttl, swr));
        assert!(kept_within_stale_while_revalidate(s(14), ttl, swr));
        assert!(!kept_within_stale_while_revalidate(s(15), ttl, swr));
        assert!(
            kept_within_stale_if_error(s(5), ttl, sie),
            "fresh stands in"
        );
        assert!(kept_within_stale_if_error(s(29), ttl, sie));
        assert!(!kept_within_stale_if_error(s(30), ttl, sie));
        // No window (none sent, or serving stale forbidden): fresh only.
        assert!(!kept_within_stale_while_revalidate(
            s(10),
            ttl,
            Duration::ZERO
        ));
        assert!(!kept_within_stale_if_error(s(10), ttl, Duration::ZERO));
        // Windows beside a description that never expires do not overflow.
        assert!(kept_within_stale_if_error(s(u64::MAX), Duration::MAX, sie));
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
        assert!(!stale_forbidden(&s));
    }
}

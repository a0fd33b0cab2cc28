//! The named states of a cache lookup (after pingora's `CachePhase`), and [`decide`], which
//! picks one for a request and a stored response at a given time (RFC 9111 §4, §4.2.4,
//! §5.2.1; RFC 5861). Each phase is logged by name ([`Phase::as_str`]).

use super::freshness::{
    Freshness, always_validate, client_may_accept_stale, within_stale_if_error,
    within_stale_while_revalidate,
};
use super::{Method, Reason, RequestDirectives, StoredMeta, Vary};

/// Where a request stands with respect to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serve the stored response; it is fresh (or stale within the client's `max-stale`).
    Hit,
    /// Nothing usable is stored: fetch from upstream (unconditionally).
    Miss,
    /// The stored response must be validated before use: send the conditional request
    /// from [`super::validate::conditional_headers`]; a 304 makes it [`Phase::Revalidated`].
    Stale,
    /// Serve the stale stored response now and revalidate it in the background.
    StaleWhileRevalidate,
    /// Validate (or refetch) upstream; if that fails (connection error, timeout, 500, 502,
    /// 503, 504) the stored response may be served instead.
    StaleIfError,
    /// Set by the caller once a 304 has refreshed the stored response: serve it.
    Revalidated,
    /// The request said `only-if-cached` and nothing may be served without upstream:
    /// answer 504 (Gateway Timeout) (RFC 9111 §5.2.1.7).
    OnlyIfCachedMiss,
    /// The cache takes no part in this request.
    Disabled(Reason),
}

impl Phase {
    /// The phase's name for logs and metrics (`Cache-Status`-like).
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Hit => "hit",
            Phase::Miss => "miss",
            Phase::Stale => "stale",
            Phase::StaleWhileRevalidate => "stale_while_revalidate",
            Phase::StaleIfError => "stale_if_error",
            Phase::Revalidated => "revalidated",
            Phase::OnlyIfCachedMiss => "only_if_cached_miss",
            Phase::Disabled(_) => "disabled",
        }
    }

    /// The stored response is sent to the client without waiting for upstream.
    pub fn serves_stored_now(&self) -> bool {
        matches!(
            self,
            Phase::Hit | Phase::StaleWhileRevalidate | Phase::Revalidated
        )
    }
}

/// Decides how a request may use a stored response at `now` (seconds since the epoch). The
/// caller has already matched the secondary key ([`super::vary`]).
///
/// In order:
/// 1. methods other than GET/HEAD, and `Vary: *`, disable the cache;
/// 2. validation is required by unqualified response `no-cache` or request `no-cache`
///    (`Pragma: no-cache`), or by a request `max-age` the age exceeds — except that a fresh
///    `immutable` response ignores the request's `no-cache` and `max-age` (RFC 8246: the
///    origin promised it will not change while fresh);
/// 3. otherwise a fresh response (that also meets `min-fresh`) is a [`Phase::Hit`], and so is
///    a stale one within the request's `max-stale` unless the response forbids it
///    (`must-revalidate`, `proxy-revalidate`, `s-maxage`);
/// 4. a stale response within `stale-while-revalidate` is [`Phase::StaleWhileRevalidate`],
///    unless the request wants validation or `min-fresh`;
/// 5. `only-if-cached`: [`Phase::OnlyIfCachedMiss`];
/// 6. within `stale-if-error` (the response's or the request's window):
///    [`Phase::StaleIfError`];
/// 7. with a validator: [`Phase::Stale`]; without one: [`Phase::Miss`].
pub fn decide(stored: &StoredMeta, request: &RequestDirectives, now: u64) -> Phase {
    if request.method == Method::Other {
        return Phase::Disabled(Reason::Method);
    }
    if stored.vary == Vary::Any {
        return Phase::Disabled(Reason::VaryAny);
    }
    let f = Freshness::of(stored, now);
    let req = &request.directives;
    let immutable_fresh = stored.directives.immutable && f.is_fresh();
    let age_ok = immutable_fresh || req.max_age.is_none_or(|m| f.age <= u64::from(m));
    let validate = always_validate(stored) || (request.no_cache() && !immutable_fresh) || !age_ok;
    if !validate {
        let min_fresh = req.min_fresh.map_or(0, u64::from);
        if f.is_fresh() && f.lifetime > f.age.saturating_add(min_fresh) {
            return Phase::Hit;
        }
        let max_stale_ok = req.max_stale.is_some_and(|ms| ms.allows(f.staleness()));
        if !f.is_fresh()
            && req.min_fresh.is_none()
            && max_stale_ok
            && client_may_accept_stale(stored)
        {
            return Phase::Hit;
        }
        if req.min_fresh.is_none() && within_stale_while_revalidate(stored, &f) {
            return Phase::StaleWhileRevalidate;
        }
    }
    if req.only_if_cached {
        return Phase::OnlyIfCachedMiss;
    }
    if within_stale_if_error(stored, request, &f) {
        return Phase::StaleIfError;
    }
    if stored.has_validator() {
        Phase::Stale
    } else {
        Phase::Miss
    }
}

/// [`decide`] when the lookup may have found nothing: without a stored response, a request
/// is a [`Phase::Miss`] (or [`Phase::OnlyIfCachedMiss`], or disabled for its method).
pub fn decide_lookup(stored: Option<&StoredMeta>, request: &RequestDirectives, now: u64) -> Phase {
    match stored {
        Some(s) => decide(s, request, now),
        None if request.method == Method::Other => Phase::Disabled(Reason::Method),
        None if request.directives.only_if_cached => Phase::OnlyIfCachedMiss,
        None => Phase::Miss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    struct Case {
        name: &'static str,
        method: &'static str,
        request: &'static str,
        response: &'static [(&'static str, &'static str)],
        /// Seconds after the response was received (request sent and received at t=1000,
        /// `Date` = 1000 unless the response says otherwise).
        after: u64,
        expect: Phase,
    }

    const ETAG: (&str, &str) = ("ETag", "\"v1\"");

    fn run(c: &Case) -> Phase {
        let config = PolicyConfig::default();
        let mut resp: Vec<(&[u8], &[u8])> = vec![(b"Date", b"Thu, 01 Jan 1970 00:16:40 GMT")];
        resp.extend(c.response.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let stored = StoredMeta::from_response(200, resp, 1000, 1000, &config);
        let req = RequestDirectives::from_request(
            c.method.as_bytes(),
            [(&b"Cache-Control"[..], c.request.as_bytes())],
            &config,
        );
        decide(&stored, &req, 1000 + c.after)
    }

    #[test]
    fn rfc9111_4_decide_table() {
        use Phase::*;
        let cases = [
            Case {
                name: "fresh",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=60")],
                after: 59,
                expect: Hit,
            },
            Case {
                name: "HEAD served from stored",
                method: "HEAD",
                request: "",
                response: &[("Cache-Control", "max-age=60")],
                after: 1,
                expect: Hit,
            },
            Case {
                name: "expired with etag",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=60"), ETAG],
                after: 60,
                expect: Stale,
            },
            Case {
                name: "expired without validator",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=60")],
                after: 61,
                expect: Miss,
            },
            Case {
                name: "Age header counts",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=60"), ("Age", "59"), ETAG],
                after: 1,
                expect: Stale,
            },
            Case {
                name: "s-maxage over max-age",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=600, s-maxage=10"), ETAG],
                after: 11,
                expect: Stale,
            },
            Case {
                name: "response no-cache fresh",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=600, no-cache"), ETAG],
                after: 1,
                expect: Stale,
            },
            Case {
                name: "request no-cache",
                method: "GET",
                request: "no-cache",
                response: &[("Cache-Control", "max-age=600"), ETAG],
                after: 1,
                expect: Stale,
            },
            Case {
                name: "request max-age=0",
                method: "GET",
                request: "max-age=0",
                response: &[("Cache-Control", "max-age=600"), ETAG],
                after: 1,
                expect: Stale,
            },
            Case {
                name: "immutable ignores reload",
                method: "GET",
                request: "no-cache, max-age=0",
                response: &[("Cache-Control", "max-age=600, immutable"), ETAG],
                after: 1,
                expect: Hit,
            },
            Case {
                name: "min-fresh unmet",
                method: "GET",
                request: "min-fresh=30",
                response: &[("Cache-Control", "max-age=60"), ETAG],
                after: 40,
                expect: Stale,
            },
            Case {
                name: "min-fresh met",
                method: "GET",
                request: "min-fresh=30",
                response: &[("Cache-Control", "max-age=60")],
                after: 20,
                expect: Hit,
            },
            Case {
                name: "max-stale within",
                method: "GET",
                request: "max-stale=30",
                response: &[("Cache-Control", "max-age=60")],
                after: 80,
                expect: Hit,
            },
            Case {
                name: "max-stale exceeded",
                method: "GET",
                request: "max-stale=10",
                response: &[("Cache-Control", "max-age=60"), ETAG],
                after: 80,
                expect: Stale,
            },
            Case {
                name: "max-stale vs must-revalidate",
                method: "GET",
                request: "max-stale",
                response: &[("Cache-Control", "max-age=60, must-revalidate"), ETAG],
                after: 80,
                expect: Stale,
            },
            Case {
                name: "max-stale vs s-maxage",
                method: "GET",
                request: "max-stale",
                response: &[("Cache-Control", "s-maxage=60"), ETAG],
                after: 80,
                expect: Stale,
            },
            Case {
                name: "swr window",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=60, stale-while-revalidate=30")],
                after: 90,
                expect: StaleWhileRevalidate,
            },
            Case {
                name: "swr beside s-maxage",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "s-maxage=60, stale-while-revalidate=30")],
                after: 70,
                expect: StaleWhileRevalidate,
            },
            Case {
                name: "swr window passed",
                method: "GET",
                request: "",
                response: &[
                    ("Cache-Control", "max-age=60, stale-while-revalidate=30"),
                    ETAG,
                ],
                after: 91,
                expect: Stale,
            },
            Case {
                name: "swr vs must-revalidate",
                method: "GET",
                request: "",
                response: &[
                    (
                        "Cache-Control",
                        "max-age=60, stale-while-revalidate=30, must-revalidate",
                    ),
                    ETAG,
                ],
                after: 70,
                expect: Stale,
            },
            Case {
                name: "swr vs request no-cache",
                method: "GET",
                request: "no-cache",
                response: &[
                    ("Cache-Control", "max-age=60, stale-while-revalidate=30"),
                    ETAG,
                ],
                after: 70,
                expect: Stale,
            },
            Case {
                name: "sie window",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=60, stale-if-error=300")],
                after: 200,
                expect: StaleIfError,
            },
            Case {
                name: "sie from request",
                method: "GET",
                request: "stale-if-error=300",
                response: &[("Cache-Control", "max-age=60"), ETAG],
                after: 200,
                expect: StaleIfError,
            },
            Case {
                name: "sie vs proxy-revalidate",
                method: "GET",
                request: "",
                response: &[
                    (
                        "Cache-Control",
                        "max-age=60, stale-if-error=300, proxy-revalidate",
                    ),
                    ETAG,
                ],
                after: 200,
                expect: Stale,
            },
            Case {
                name: "only-if-cached fresh",
                method: "GET",
                request: "only-if-cached",
                response: &[("Cache-Control", "max-age=60")],
                after: 1,
                expect: Hit,
            },
            Case {
                name: "only-if-cached stale",
                method: "GET",
                request: "only-if-cached",
                response: &[("Cache-Control", "max-age=60"), ETAG],
                after: 61,
                expect: OnlyIfCachedMiss,
            },
            Case {
                name: "only-if-cached swr",
                method: "GET",
                request: "only-if-cached",
                response: &[("Cache-Control", "max-age=60, stale-while-revalidate=9")],
                after: 61,
                expect: StaleWhileRevalidate,
            },
            Case {
                name: "POST disabled",
                method: "POST",
                request: "",
                response: &[("Cache-Control", "max-age=60")],
                after: 1,
                expect: Disabled(Reason::Method),
            },
            Case {
                name: "vary star",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=60"), ("Vary", "*")],
                after: 1,
                expect: Disabled(Reason::VaryAny),
            },
            Case {
                name: "invalid expires",
                method: "GET",
                request: "",
                response: &[("Expires", "0"), ETAG],
                after: 0,
                expect: Stale,
            },
            Case {
                name: "expires in future",
                method: "GET",
                request: "",
                response: &[("Expires", "Thu, 01 Jan 1970 00:17:40 GMT")],
                after: 59,
                expect: Hit,
            },
            Case {
                name: "garbage max-age is stale",
                method: "GET",
                request: "",
                response: &[("Cache-Control", "max-age=soon"), ETAG],
                after: 0,
                expect: Stale,
            },
        ];
        for c in &cases {
            assert_eq!(run(c), c.expect, "{}", c.name);
        }
    }

    #[test]
    fn decide_lookup_without_stored() {
        let config = PolicyConfig::default();
        let get = RequestDirectives::get();
        assert_eq!(decide_lookup(None, &get, 0), Phase::Miss);
        let oic = RequestDirectives::from_request(
            b"GET",
            [(&b"Cache-Control"[..], &b"only-if-cached"[..])],
            &config,
        );
        assert_eq!(decide_lookup(None, &oic, 0), Phase::OnlyIfCachedMiss);
        let put = RequestDirectives::from_request(b"PUT", std::iter::empty(), &config);
        assert_eq!(
            decide_lookup(None, &put, 0),
            Phase::Disabled(Reason::Method)
        );
        assert_eq!(
            Phase::StaleWhileRevalidate.as_str(),
            "stale_while_revalidate"
        );
        assert!(Phase::Hit.serves_stored_now() && !Phase::Stale.serves_stored_now());
    }
}

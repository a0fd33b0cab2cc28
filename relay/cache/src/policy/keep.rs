//! What a response head means for the description the cache keeps of it: how long it may be
//! used without asking again, whether it may be stored, its stale windows and the fields it
//! varies on; and how a `304 Not Modified` renews a kept description (RFC 9111 §4.3.4).

use super::{PolicyConfig, RequestDirectives, Storability, StoredMeta, Vary, freshness};
use crate::ObjectMeta;
use std::time::{Duration, Instant};

/// A response head's terms, as the cache keeps them ([`keep`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keep {
    /// How long the description may be used without asking the origin again (its
    /// freshness lifetime less its current age; zero when it must always be validated).
    pub ttl: Duration,
    /// A shared cache may store the response (and `Vary` is not `*`).
    pub storable: bool,
    /// No client's `max-stale` may have it stale (`no-cache`, `must-revalidate`,
    /// `proxy-revalidate`, and `s-maxage`, which carries the last); only the first three
    /// also close the stale windows the origin grants.
    pub must_revalidate: bool,
    /// It may answer requests with `Authorization` (`public`, `s-maxage` or
    /// `must-revalidate`, RFC 9111 §3.5).
    pub shared_with_credentials: bool,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// The response's age when it was received, in seconds.
    pub initial_age: u64,
    /// Its `Date` (Unix seconds), or the time it was received when it has none (RFC 9110
    /// §6.6.1): what its age counts from.
    pub date: u64,
    /// The head carried terms of its own: `Expires`, or any cache directive.
    pub explicit: bool,
    /// The request fields it varies on (lower-case), without `accept-encoding`: relay asks
    /// for identity, which every client accepts. None when it varies on none.
    pub vary: Option<Vec<String>>,
}

/// The terms of a response with `status` and header fields `pairs` (as received), asked at
/// `request_time` and received at `response_time` (Unix seconds) by a request with
/// `Authorization` or not, under the policy's settings `config`, and what the cache stores
/// of it to decide later.
pub fn keep<'a, I>(
    status: u16,
    pairs: I,
    (request_time, response_time): (u64, u64),
    authorization: bool,
    config: &PolicyConfig,
) -> (Keep, StoredMeta)
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let stored = StoredMeta::from_response(status, pairs, request_time, response_time, config);
    let mut request = RequestDirectives::from_request(b"GET", std::iter::empty(), config);
    request.authorization = authorization;
    let mut storable = super::storable(&request, &stored, config) == Storability::Store;
    // `Vary: *` never matches another request. Other fields make variants, stored under
    // keys of their own.
    let mut vary = None;
    match &stored.vary {
        Vary::Any => storable = false,
        Vary::Fields(f) => {
            let fields: Vec<String> = f
                .iter()
                .filter(|n| n.as_str() != "accept-encoding")
                .cloned()
                .collect();
            if !fields.is_empty() {
                vary = Some(fields);
            }
        }
    }
    let op = &config.operator;
    let mut lifetime = freshness::freshness_lifetime(&stored);
    // The operator's cap, on any lifetime.
    if let Some(max) = op.ttl_max {
        lifetime = lifetime.min(u64::from(max));
    }
    let forbidden = freshness::stale_forbidden(&stored);
    let age = freshness::current_age(&stored, response_time);
    let mut ttl = lifetime.saturating_sub(age);
    // The operator's floor, on what is left of it when received: never on what must be
    // revalidated (no-cache, must-revalidate, proxy-revalidate, s-maxage=0) or an answer
    // to a request with credentials, whose origin alone may say it can be reused.
    let must_ask = forbidden || stored.directives.s_maxage == Some(0) || authorization;
    if let Some(min) = op.ttl_min.filter(|_| !must_ask) {
        ttl = ttl.max(u64::from(min));
    }
    let ttl = if freshness::always_validate(&stored) {
        Duration::ZERO
    } else {
        Duration::from_secs(ttl)
    };
    let d = &stored.directives;
    // `s-maxage` carries `proxy-revalidate` for a shared cache (RFC 9111 §5.2.2.10): never
    // stale for a client's `max-stale` or on relay's own defaults. The origin's own
    // `stale-while-revalidate` / `stale-if-error` beside it still stand: it grants them
    // explicitly (RFC 5861), as CDNs take `s-maxage=60, stale-while-revalidate=30` to mean.
    let proxy_revalidate = forbidden || d.s_maxage.is_some();
    let window = |w: Option<u32>| match w {
        Some(s) if !forbidden => Duration::from_secs(u64::from(s)),
        _ => Duration::ZERO,
    };
    let default = |w: Option<u32>| w.filter(|_| !proxy_revalidate);
    // (Any directive: a 304's Cache-Control replaces the stored one whole, RFC 9111
    // §4.3.4, so `private` or `no-store` alone on a 304 ends its sharing.)
    let explicit = stored.expires.is_some() || *d != super::cache_control::CacheControl::default();
    let keep = Keep {
        ttl,
        storable,
        must_revalidate: proxy_revalidate,
        shared_with_credentials: d.public || d.s_maxage.is_some() || d.must_revalidate,
        stale_while_revalidate: window(
            d.stale_while_revalidate
                .or(default(op.stale_while_revalidate)),
        ),
        stale_if_error: window(d.stale_if_error.or(default(op.stale_if_error))),
        initial_age: age,
        date: stored.date_value(),
        explicit,
        vary,
    };
    (keep, stored)
}

impl ObjectMeta {
    /// This description as a `304 Not Modified` with terms `fresh` renews it (RFC 9111
    /// §4.3.4): described anew at `now`, with the 304's `Date` and the age it had when
    /// received (§3.2: its fields replace the stored ones, and the age counts from them);
    /// its freshness, storability and stale windows are the 304's when it states its own,
    /// else kept. Its chunks stay valid (same version).
    pub fn renewed(&self, fresh: &Keep, now: Instant) -> ObjectMeta {
        let mut renewed = self.clone();
        renewed.fetched = now;
        if fresh.explicit {
            renewed.take_terms(fresh);
        }
        renewed.initial_age = fresh.initial_age;
        renewed.date = Some(crate::ResponseDate::from_unix(fresh.date));
        renewed
    }

    /// Takes a response head's terms: freshness, storability, whether it may be served
    /// stale or to requests with credentials, its stale windows, its age and its `Date`.
    pub fn take_terms(&mut self, k: &Keep) {
        self.date = Some(crate::ResponseDate::from_unix(k.date));
        self.ttl = k.ttl;
        self.storable = k.storable;
        self.must_revalidate = k.must_revalidate;
        self.shared_with_credentials = k.shared_with_credentials;
        self.stale_while_revalidate = k.stale_while_revalidate;
        self.stale_if_error = k.stale_if_error;
        self.initial_age = k.initial_age;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(fields: &[(&str, &str)]) -> Keep {
        let pairs = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        keep(200, pairs, (1000, 1000), false, &PolicyConfig::default()).0
    }

    #[test]
    fn a_head_s_terms() {
        let k = terms(&[
            (
                "Cache-Control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=600",
            ),
            ("Vary", "Accept-Encoding, Accept-Language"),
        ]);
        assert_eq!(k.ttl, Duration::from_secs(60));
        assert!(k.storable && k.explicit);
        assert_eq!(k.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(k.stale_if_error, Duration::from_secs(600));
        assert_eq!(k.vary, Some(vec!["accept-language".to_string()]));
        // must-revalidate forbids serving stale: no windows.
        let k = terms(&[(
            "Cache-Control",
            "max-age=60, must-revalidate, stale-if-error=600",
        )]);
        assert_eq!(k.stale_if_error, Duration::ZERO);
        assert!(!terms(&[("Vary", "*")]).storable);
        assert!(!terms(&[("Cache-Control", "no-store")]).storable);
    }

    #[test]
    fn rfc9111_3_5_an_answer_to_a_request_with_credentials_is_kept_only_when_it_says_so() {
        let with = |cc: &str| {
            let pairs = [(&b"cache-control"[..], cc.as_bytes())];
            keep(200, pairs, (1000, 1000), true, &PolicyConfig::default()).0
        };
        assert!(!with("max-age=60").storable);
        for cc in [
            "public, max-age=60",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            let k = with(cc);
            assert!(k.storable && k.shared_with_credentials, "{cc}");
        }
        // Without credentials, max-age alone stores it, but not for requests with them.
        let k = terms(&[("Cache-Control", "max-age=60")]);
        assert!(k.storable && !k.shared_with_credentials);
    }

    fn with(status: u16, fields: &[(&str, &str)], op: relay_config::CachePolicy) -> Keep {
        let pairs = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let config = PolicyConfig {
            operator: op,
            ..PolicyConfig::default()
        };
        keep(status, pairs, (1000, 1000), false, &config).0
    }

    #[test]
    fn the_operator_s_ttls_apply_where_an_answer_states_none() {
        use relay_config::{CachePolicy, StatusMatch};
        let op = CachePolicy {
            default_ttl: Some(600),
            status_ttl: vec![
                (StatusMatch::Class(5), 5),
                (StatusMatch::Code(404), 10),
                (StatusMatch::Class(4), 20),
            ],
            ..CachePolicy::default()
        };
        let secs = |k: &Keep| (k.storable, k.ttl.as_secs());
        // Nothing stated: the default (a 200), the status's (exact over class).
        assert_eq!(secs(&with(200, &[], op.clone())), (true, 600));
        assert_eq!(secs(&with(404, &[], op.clone())), (true, 10));
        assert_eq!(secs(&with(410, &[], op.clone())), (true, 20));
        // Not cacheable by default, but named: negative caching.
        assert_eq!(secs(&with(503, &[], op.clone())), (true, 5));
        assert!(!with(302, &[], op.clone()).storable, "302: no TTL names it");
        // The answer's own freshness wins.
        let cc = [("Cache-Control", "max-age=30")];
        assert_eq!(secs(&with(200, &cc, op.clone())), (true, 30));
        assert_eq!(secs(&with(404, &cc, op.clone())), (true, 30));
        // Without operator terms, none of this is stored.
        for status in [200, 404, 503] {
            assert!(
                !with(status, &[], CachePolicy::default()).storable,
                "{status}"
            );
        }
    }

    #[test]
    fn the_operator_s_bounds_ignores_and_stale_windows() {
        use relay_config::CachePolicy;
        let bounds = CachePolicy {
            ttl_min: Some(60),
            ttl_max: Some(3600),
            ..CachePolicy::default()
        };
        let ttl = |cc: &str, op: &CachePolicy| {
            with(200, &[("Cache-Control", cc)], op.clone())
                .ttl
                .as_secs()
        };
        assert_eq!(ttl("max-age=86400", &bounds), 3600);
        assert_eq!(ttl("max-age=0", &bounds), 60);
        assert_eq!(ttl("max-age=600", &bounds), 600);
        // No floor on what must be revalidated, or an answer to a request with credentials.
        assert_eq!(ttl("max-age=0, must-revalidate", &bounds), 0);
        assert_eq!(ttl("s-maxage=0, max-age=60", &bounds), 0);
        let config = PolicyConfig {
            operator: bounds.clone(),
            ..PolicyConfig::default()
        };
        let pairs = [(&b"cache-control"[..], &b"public, max-age=0"[..])];
        let k = keep(200, pairs, (1000, 1000), true, &config).0;
        assert!(
            k.storable && k.ttl.is_zero(),
            "credentials: the origin's word"
        );
        // The floor is on what is left when received: an answer already 100 s old.
        let pairs = [
            (&b"cache-control"[..], &b"max-age=120"[..]),
            (&b"age"[..], &b"100"[..]),
        ];
        assert_eq!(
            keep(200, pairs, (1000, 1000), false, &config)
                .0
                .ttl
                .as_secs(),
            60
        );
        // Always revalidated stays so, unless no-cache is ignored.
        assert_eq!(ttl("no-cache, max-age=600", &bounds), 0);
        let ignore = CachePolicy {
            ignore_no_cache: true,
            ignore_private: true,
            ..bounds.clone()
        };
        assert_eq!(ttl("no-cache, max-age=600", &ignore), 600);
        assert!(
            !with(
                200,
                &[("Cache-Control", "private, max-age=60")],
                bounds.clone()
            )
            .storable
        );
        assert!(
            with(
                200,
                &[("Cache-Control", "private, max-age=60")],
                ignore.clone()
            )
            .storable
        );
        // A named field stays named: stored without it, the cookie never shared.
        let named = [
            ("Cache-Control", "private=\"Set-Cookie\", max-age=60"),
            ("Set-Cookie", "a=b"),
        ];
        assert!(with(200, &named, ignore).storable);
        // A cookie: not stored, unless the operator says to store it without the cookie.
        let cookie = [("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")];
        assert!(!with(200, &cookie, CachePolicy::default()).storable);
        let strip = CachePolicy {
            ignore_set_cookie: true,
            ..CachePolicy::default()
        };
        assert!(with(200, &cookie, strip).storable);
        // Stale windows where the answer states none, never where it forbids stale.
        let stale = CachePolicy {
            stale_if_error: Some(3600),
            stale_while_revalidate: Some(30),
            ..CachePolicy::default()
        };
        let k = with(200, &[("Cache-Control", "max-age=60")], stale.clone());
        assert_eq!(
            (
                k.stale_if_error.as_secs(),
                k.stale_while_revalidate.as_secs()
            ),
            (3600, 30)
        );
        let k = with(
            200,
            &[("Cache-Control", "max-age=60, stale-if-error=5")],
            stale.clone(),
        );
        assert_eq!(k.stale_if_error.as_secs(), 5);
        let k = with(
            200,
            &[("Cache-Control", "max-age=60, must-revalidate")],
            stale.clone(),
        );
        assert_eq!(k.stale_if_error.as_secs(), 0);
        // s-maxage carries proxy-revalidate (RFC 9111 §5.2.2.10): no client's max-stale,
        // none of the operator's windows; the origin's own windows beside it stand.
        let k = with(200, &[("Cache-Control", "s-maxage=60")], stale.clone());
        assert!(k.must_revalidate);
        assert_eq!(
            (k.stale_if_error, k.stale_while_revalidate),
            (Duration::ZERO, Duration::ZERO)
        );
        let k = with(
            200,
            &[(
                "Cache-Control",
                "s-maxage=60, stale-while-revalidate=30, stale-if-error=5",
            )],
            stale,
        );
        assert!(k.must_revalidate);
        assert_eq!(
            (
                k.stale_while_revalidate.as_secs(),
                k.stale_if_error.as_secs()
            ),
            (30, 5)
        );
    }

    #[test]
    fn a_304_renews_with_its_own_terms_or_keeps_the_old_ones() {
        let t0 = Instant::now();
        let old = ObjectMeta {
            ttl: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(9),
            ..ObjectMeta::file(10, 7, "\"e\"".into(), String::new())
        };
        let later = t0 + Duration::from_secs(100);
        let kept = old.renewed(&terms(&[]), later);
        assert_eq!((kept.fetched, kept.ttl, kept.version), (later, old.ttl, 7));
        assert_eq!(kept.stale_if_error, old.stale_if_error);
        let new = old.renewed(&terms(&[("Cache-Control", "max-age=300")]), later);
        assert_eq!(
            (new.ttl, new.stale_if_error, new.version),
            (Duration::from_secs(300), Duration::ZERO, 7)
        );
        // A 304's directives replace the stored ones whole: `private` or `no-store` alone
        // ends the sharing (and the freshness the old ones gave).
        for cc in ["private", "no-store"] {
            let shared = ObjectMeta {
                storable: true,
                ..old.clone()
            };
            let ended = shared.renewed(&terms(&[("Cache-Control", cc)]), later);
            assert!(!ended.storable, "{cc}");
            assert_eq!(ended.ttl, Duration::ZERO, "{cc}");
        }
    }

    #[test]
    fn rfc9111_3_2_a_304_s_date_and_age_replace_the_stored_ones() {
        let t0 = Instant::now();
        let old = ObjectMeta {
            initial_age: 40,
            date: Some(crate::ResponseDate::from_unix(500)),
            ..ObjectMeta::file(10, 7, "\"e\"".into(), String::new())
        };
        // (Received at 1000.) The 304's Date, 10 s before: its age counts from that, with
        // or without terms of its own.
        for cc in [None, Some("max-age=60")] {
            let mut fields = vec![("Date", "Thu, 01 Jan 1970 00:16:30 GMT")];
            fields.extend(cc.map(|v| ("Cache-Control", v)));
            let renewed = old.renewed(&terms(&fields), t0);
            assert_eq!(renewed.date.map(|d| d.unix()), Some(990), "{cc:?}");
            assert_eq!(renewed.initial_age, 10, "{cc:?}");
            assert_eq!(renewed.age(t0), 10);
        }
        // Without a Date: the time it was received.
        let renewed = old.renewed(&terms(&[]), t0);
        assert_eq!(renewed.date.map(|d| d.unix()), Some(1000));
        assert_eq!(renewed.initial_age, 0);
        assert_eq!(
            renewed.date.unwrap().as_bytes(),
            b"Thu, 01 Jan 1970 00:16:40 GMT"
        );
    }
}

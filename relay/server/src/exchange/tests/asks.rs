//! A request's own cache directives against a stored response (RFC 9111 §5.2.1): what
//! `Asks::judge` makes of them, and `Asks::read` of the fields.

use crate::exchange::types::{Asks, Usable};
use relay_cache::ObjectMeta;
use relay_cache::policy::MaxStale;
use std::time::{Duration, Instant};

/// Fresh for `ttl` seconds, fetched `ago` seconds before `now`.
fn stored(ttl: u64, ago: u64, now: Instant) -> ObjectMeta {
    ObjectMeta {
        ttl: Duration::from_secs(ttl),
        fetched: now - Duration::from_secs(ago),
        ..ObjectMeta::file(10, 1, "\"e\"".into(), String::new())
    }
}

fn read(fields: &[(&str, &str)]) -> Asks {
    let policy = relay_cache::policy::PolicyConfig::default();
    Asks::read(
        fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        &policy,
    )
}

#[test]
fn rfc9111_5_2_1_1_max_age_refuses_an_older_response() {
    let now = Instant::now();
    let m = stored(60, 30, now);
    assert_eq!(Asks::default().judge(&m, now), Usable::Fresh);
    let asks = |n| Asks {
        max_age: Some(n),
        ..Asks::default()
    };
    assert_eq!(asks(10).judge(&m, now), Usable::Validate);
    assert_eq!(asks(30).judge(&m, now), Usable::Fresh);
    assert_eq!(read(&[("Cache-Control", "max-age=5")]), asks(5));
}

#[test]
fn rfc9111_5_2_1_3_min_fresh_wants_freshness_left() {
    let now = Instant::now();
    let m = stored(60, 30, now);
    let asks = |n| Asks {
        min_fresh: Some(n),
        ..Asks::default()
    };
    assert_eq!(asks(40).judge(&m, now), Usable::Validate);
    assert_eq!(asks(20).judge(&m, now), Usable::Fresh);
}

#[test]
fn rfc9111_5_2_1_2_max_stale_accepts_a_stale_response_unless_it_must_revalidate() {
    let now = Instant::now();
    // Stale for 30 s.
    let mut m = stored(60, 90, now);
    let asks = |s| Asks {
        max_stale: Some(s),
        ..Asks::default()
    };
    assert_eq!(Asks::default().judge(&m, now), Usable::Validate);
    assert_eq!(
        asks(MaxStale::Limit(40)).judge(&m, now),
        Usable::StaleAccepted
    );
    assert_eq!(asks(MaxStale::Limit(20)).judge(&m, now), Usable::Validate);
    assert_eq!(asks(MaxStale::Any).judge(&m, now), Usable::StaleAccepted);
    assert_eq!(read(&[("Cache-Control", "max-stale")]), asks(MaxStale::Any));
    // RFC 9111 §4.2.4: must-revalidate (or proxy-revalidate, no-cache) forbids it.
    m.must_revalidate = true;
    assert_eq!(asks(MaxStale::Any).judge(&m, now), Usable::Validate);
}

#[test]
fn rfc9111_5_2_1_4_no_cache_and_pragma_validate_even_a_fresh_response() {
    let now = Instant::now();
    let m = stored(60, 0, now);
    for fields in [
        &[("Cache-Control", "no-cache")][..],
        &[("Pragma", "no-cache")],
        &[("cache-control", "max-age=100, No-Cache")],
    ] {
        let asks = read(fields);
        assert!(asks.no_cache, "{fields:?}");
        assert_eq!(asks.judge(&m, now), Usable::Validate, "{fields:?}");
    }
    // RFC 9111 §5.4: Pragma counts only without Cache-Control.
    let asks = read(&[("Pragma", "no-cache"), ("Cache-Control", "max-age=100")]);
    assert!(!asks.no_cache);
    assert_eq!(asks.judge(&m, now), Usable::Fresh);
}

#[test]
fn rfc9111_5_2_1_no_store_only_if_cached_and_bad_values_are_read() {
    let asks = read(&[("Cache-Control", "no-store, only-if-cached")]);
    assert!(asks.no_store && asks.only_if_cached);
    // A bad number counts as the strictest value (the parser's rule for every directive).
    assert_eq!(read(&[("Cache-Control", "max-age=soon")]).max_age, Some(0));
    assert_eq!(read(&[("X-Other", "no-cache")]), Asks::default());
}

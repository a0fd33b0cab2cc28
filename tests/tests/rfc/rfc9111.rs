//! RFC 9111 (HTTP caching) through relay: what is stored (§3) and the request's own
//! directives (§5.2.1).

use crate::kit::*;
use relay_tests::fetch;
use std::time::Duration;

#[test]
fn rfc9111_3_statuses_are_stored_with_explicit_freshness_and_not_without() {
    let node = Node::start();
    let relay = node.relay();
    // Explicit freshness stores any final status, a 404 and a 301 (heuristically
    // cacheable) as well as a 302 (not).
    for path in ["/status/404", "/status/301", "/status/302"] {
        let with = format!("{path}?cc=max-age%3D60");
        let first = get(&relay, &with);
        let again = get(&relay, &with);
        assert_eq!(first.body, again.body);
        assert_eq!(again.field("cache-status"), Some("relay; hit"), "{with}");
        assert_eq!(node.count(path), 1, "{with}: fetched once");
    }
    // Without any, a 302 is not stored: each request goes to the origin.
    let path = "/status/307";
    for n in 1..=2 {
        assert_eq!(get(&relay, path).status, 307);
        assert_eq!(node.count(path), n);
    }
    // no-store is never stored, whatever the status.
    let path = "/status/410?cc=no-store";
    for n in 1..=2 {
        assert_eq!(get(&relay, path).status, 410);
        assert_eq!(node.count("/status/410"), n);
    }
}

#[test]
fn rfc9111_5_2_1_a_requests_own_directives_are_honoured() {
    let node = Node::start();
    let relay = node.relay();
    let url = relay.url("/status/200?cc=max-age%3D60");
    let count = || node.count("/status/200");
    assert_eq!(fetch(&url, &[]).status, 200);
    assert_eq!(fetch(&url, &[]).field("cache-status"), Some("relay; hit"));
    assert_eq!(count(), 1);
    // §5.2.1.4 no-cache, and Pragma: no-cache from HTTP/1.0 clients: asked again.
    for (n, field) in [(2, "Cache-Control: no-cache"), (3, "Pragma: no-cache")] {
        let got = fetch(&url, &["-H", field]);
        assert_eq!(got.status, 200);
        assert_eq!(count(), n, "{field}");
        // RFC 9211: forwarded because of the request.
        let status = got.field("cache-status").unwrap_or("");
        assert!(
            status.starts_with("relay; fwd=request;"),
            "{field}: {status}"
        );
    }
    // §5.2.1.1 max-age: a second old is too old for max-age=0.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(fetch(&url, &["-H", "Cache-Control: max-age=0"]).status, 200);
    assert_eq!(count(), 4);
    assert_eq!(
        fetch(&url, &["-H", "Cache-Control: max-age=30"]).field("cache-status"),
        Some("relay; hit")
    );
    assert_eq!(count(), 4);
    // §5.2.1.7 only-if-cached: the stored response, or 504 without asking the origin.
    let got = fetch(&url, &["-H", "Cache-Control: only-if-cached"]);
    assert_eq!(got.field("cache-status"), Some("relay; hit"));
    let got = fetch(
        &relay.url("/status/203"),
        &["-H", "Cache-Control: only-if-cached"],
    );
    assert_eq!(got.status, 504);
    assert_eq!(node.count("/status/203"), 0);
    // §5.2.1.5 no-store: answered, stored nowhere.
    let url = relay.url("/status/404?cc=max-age%3D60");
    assert_eq!(fetch(&url, &["-H", "Cache-Control: no-store"]).status, 404);
    assert_eq!(fetch(&url, &[]).status, 404);
    assert_eq!(
        node.count("/status/404"),
        2,
        "the no-store answer was not stored"
    );
}

#[test]
fn rfc9111_5_2_1_2_max_stale_takes_a_stale_response() {
    let node = Node::start();
    let relay = node.relay();
    let url = relay.url("/status/200?cc=max-age%3D1");
    assert_eq!(fetch(&url, &[]).status, 200);
    std::thread::sleep(Duration::from_millis(2100));
    let got = fetch(&url, &["-H", "Cache-Control: max-stale=60"]);
    assert_eq!(
        got.field("cache-status"),
        Some("relay; hit; detail=max-stale")
    );
    assert_eq!(node.count("/status/200"), 1);
    // Without it, stale is stale: asked again.
    assert_eq!(fetch(&url, &[]).status, 200);
    assert_eq!(node.count("/status/200"), 2);
}

//! RFC 9110 (HTTP semantics) through relay: every final status relayed as the origin
//! answered it (§15), and ranges combined only under a strong validator (§8.8.1).

use crate::kit::*;
use relay_tests::fetch;

#[test]
fn rfc9110_15_every_final_status_is_relayed_as_the_origin_answered() {
    let node = Node::start();
    let relay = node.relay();
    for status in [
        200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 500, 501, 502,
        503, 504,
    ] {
        let path = format!("/status/{status}");
        let direct = fetch(&format!("http://127.0.0.1:{}{path}", node.http), &[]);
        let through = get(&relay, &path);
        assert_eq!(direct.status, status);
        assert_eq!(through.status, status, "{path}: {}", through.head);
        assert_eq!(through.body, direct.body, "{path}: the origin's body");
        assert_eq!(
            through.field("location"),
            direct.field("location"),
            "{path}"
        );
        if status == 204 {
            assert_eq!(through.field("content-length"), None, "RFC 9110 §8.6");
        }
    }
}

/// Each byte of a `versioned` body is its version's number: one value means one answer.
fn versions(body: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = body.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn rfc9110_8_8_1_without_a_validator_a_body_comes_from_one_answer() {
    let node = Node::start();
    let relay = node.relay();
    // No validator, then a weak one: chunks fetched by separate Range requests could be of
    // different versions, so the body comes whole from one answer.
    for path in ["/changing/1000000", "/weak/1000000"] {
        let first = get(&relay, path);
        assert_eq!(
            (first.code, first.status),
            (0, 200),
            "{path}: {}",
            first.head
        );
        assert_eq!(first.body.len(), 1_000_000);
        assert_eq!(versions(&first.body).len(), 1, "{path}: one version");
        let again = get(&relay, path);
        assert_eq!(again.field("cache-status"), Some("relay; hit"), "{path}");
        assert!(again.body == first.body, "{path}: the stored answer");
        // A range of it is a range of that one answer.
        let r = fetch(&relay.url(path), &["-r", "300000-600000"]);
        assert_eq!(r.body, &first.body[300_000..=600_000], "{path}");
    }
}

#[test]
fn rfc9110_8_8_1_a_strong_validator_that_changes_between_chunks_cuts_the_body() {
    let node = Node::start();
    // The head fetch asks for the first 2 chunks (of 4); the read-ahead's fetch for the rest.
    let relay = node.relay_with(&format!("read_ahead_bytes = {}\n", 2 * CHUNK));
    // Every answer is a new version with its own strong ETag: the first chunks are one
    // version, the next fetched another. Never stitched: the body is cut.
    let got = get(&relay, "/strong/1000000");
    assert_eq!(got.status, 200);
    assert_ne!(got.code, 0, "curl sees a cut body");
    assert!(got.body.len() < 1_000_000);
    assert_eq!(versions(&got.body).len(), 1);
}

/// §15.3.7: a client reads what a 206's `Content-Range` encloses. node answers each range
/// with its own framing (chunked, no `Content-Length`); capped at 100,000 bytes a range,
/// and with 3,000 bytes past each range in the same chunked body: relay reads each answer
/// up to the end its `Content-Range` names and asks for the rest from there, so the object
/// (4 chunks) and a range of it arrive whole and right, never with a byte past a range.
#[test]
fn rfc9110_15_3_7_a_206_is_read_up_to_the_end_its_content_range_names() {
    let node = Node::start();
    let relay = node.relay();
    let len = 1_000_000;
    let want = pattern(len, 5);
    for query in ["", "?cap=100000", "?cap=100000&extra=3000", "?extra=3000"] {
        let path = format!("/ranged/{len}{query}");
        let got = get(&relay, &path);
        assert_eq!((got.code, got.status), (0, 200), "{path}: {}", got.head);
        assert!(
            got.body == want,
            "{path}: {} bytes, not the object",
            got.body.len()
        );
        let again = get(&relay, &path);
        assert_eq!(again.field("cache-status"), Some("relay; hit"), "{path}");
        assert!(again.body == want, "{path}: the stored object");
        let cold = format!("/ranged/{len}?cold=1{}", query.replacen('?', "&", 1));
        let r = fetch(&relay.url(&cold), &["-r", "300000-700000"]);
        assert_eq!((r.code, r.status), (0, 206), "{cold}: {}", r.head);
        assert!(
            r.body == want[300_000..=700_000],
            "{cold}: the range's bytes"
        );
    }
}

/// §15.4.5: relay's 304 for a stored response carries the fields a 200 would among
/// `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires` and `Vary`, with
/// `Last-Modified` and `Age`; none with an empty value, and no representation metadata
/// besides (no `Content-Type`).
#[test]
fn rfc9110_15_4_5_a_304_carries_the_fields_a_200_would() {
    let node = Node::start();
    let relay = node.relay();
    let url = relay.url("/dated/b?ago=10&exp=60&cc=public%2C%20max-age%3D60");
    let full = fetch(&url, &[]);
    assert_eq!(full.status, 200, "{}", full.head);
    let got = fetch(&url, &["-H", "If-None-Match: \"ev\""]);
    assert_eq!(got.status, 304, "{}", got.head);
    assert_eq!(
        got.field("cache-status"),
        Some("relay; hit"),
        "{}",
        got.head
    );
    for name in [
        "cache-control",
        "content-location",
        "date",
        "etag",
        "expires",
        "vary",
        "last-modified",
    ] {
        assert!(got.field(name).is_some(), "no {name}: {}", got.head);
        assert_eq!(got.field(name), full.field(name), "{name}: {}", got.head);
    }
    assert_eq!(got.field("etag"), Some("\"ev\""));
    assert!(near(age(&got), 10, 2), "{}", got.head);
    assert_eq!(empty_fields(&got), Vec::<&str>::new(), "{}", got.head);
    assert_eq!(got.field("content-type"), None, "{}", got.head);
    assert_eq!(node.count("/dated/b"), 1);
}

//! RFC 9112 (HTTP/1.1) through relay: every framing of an answer (§6.3): a length,
//! chunked (§7.1) and until the close; framing errors refused and never stored.

use crate::kit::*;
use relay_tests::fetch;
use std::time::Duration;

#[test]
fn rfc9112_7_1_a_chunked_answer_streams_chunked_and_is_stored_with_its_length() {
    let node = Node::start();
    let relay = node.relay();
    // Three and a bit chunks; exactly two chunks (the body ends on a chunk's end); one
    // byte; none.
    for n in [3 * CHUNK + 4321, 2 * CHUNK, 1, 0] {
        let path = format!("/chunked/{n}");
        let want = pattern(n, 3);
        let direct = fetch(
            &format!("http://127.0.0.1:{}{path}?cc=max-age%3D60", node.http),
            &[],
        );
        assert_eq!(direct.field("transfer-encoding"), Some("chunked"));
        assert!(direct.body == want);
        let url = format!("{path}?cc=max-age%3D60");
        let first = get(&relay, &url);
        assert_eq!(
            (first.code, first.status),
            (0, 200),
            "{path}: {}",
            first.head
        );
        assert_eq!(first.field("transfer-encoding"), Some("chunked"), "{path}");
        assert_eq!(first.field("content-length"), None);
        assert!(first.body == want, "{path}: {} bytes", first.body.len());
        // Stored once whole, its length learnt.
        let again = get(&relay, &url);
        assert_eq!(again.field("cache-status"), Some("relay; hit"), "{path}");
        let len = n.to_string();
        assert_eq!(again.field("content-length"), Some(len.as_str()));
        assert!(again.body == want);
        // Ranges of it, from the cache.
        if n > CHUNK {
            let r = fetch(
                &relay.url(&url),
                &["-r", &format!("{}-{}", CHUNK - 5, CHUNK + 5)],
            );
            assert_eq!(r.status, 206);
            assert_eq!(r.body, &want[CHUNK - 5..=CHUNK + 5]);
        }
        assert_eq!(node.count(&path), 2, "{path}: relay fetched it once");
    }
    // To an HTTP/1.0 client: until the close.
    let path = "/chunked/300001?cc=max-age%3D60";
    let old = fetch(&relay.url(path), &["--http1.0"]);
    assert_eq!((old.code, old.status), (0, 200), "{}", old.head);
    assert_eq!(old.field("transfer-encoding"), None);
    assert_eq!(old.field("connection"), Some("close"));
    assert!(old.body == pattern(300_001, 3));
}

#[test]
fn rfc9112_7_1_clients_waiting_on_one_chunked_answer_share_one_fetch() {
    let node = Node::start();
    let relay = node.relay();
    let n = 4 * CHUNK + 99;
    let path = "/chunked/1048675";
    let url = relay.url(&format!("{path}?cc=max-age%3D60"));
    fetch_together(&url, 6, Duration::ZERO, &pattern(n, 3));
    assert_eq!(node.count(path), 1, "one fetch for every client");
}

#[test]
fn rfc9112_6_3_a_close_delimited_answer_is_relayed_and_stored() {
    let node = Node::start();
    let relay = node.relay();
    let want = pattern(700_000, 5);
    let first = get(&relay, "/close/700000");
    assert_eq!((first.code, first.status), (0, 200), "{}", first.head);
    assert!(first.body == want);
    let again = get(&relay, "/close/700000");
    assert_eq!(again.field("cache-status"), Some("relay; hit"));
    assert_eq!(again.field("content-length"), Some("700000"));
    assert!(again.body == want);
    // One fetch: the origin ignores Range, and its whole answer is the body.
    assert_eq!(node.count("/close/700000"), 1);
}

#[test]
fn rfc9112_6_3_transfer_encoding_with_content_length_is_refused_never_stored() {
    let node = Node::start();
    let relay = node.relay();
    for n in 1..=2 {
        let got = get(&relay, "/te-cl");
        assert_eq!(got.status, 502, "{}", got.head);
        assert!(
            !got.body.starts_with(b"hel"),
            "no part passed off as the body"
        );
        assert_eq!(node.count("/te-cl"), n, "never stored");
    }
}

#[test]
fn rfc9112_6_3_a_body_cut_short_is_never_passed_off_as_whole() {
    let node = Node::start();
    let relay = node.relay();
    for n in 1..=2 {
        let got = get(&relay, "/short/600000");
        assert!(
            got.status == 502 || (got.code == 18 && got.body.len() < 600_000),
            "curl {} status {} with {} bytes",
            got.code,
            got.status,
            got.body.len()
        );
        assert!(node.count("/short/600000") >= n, "never stored");
    }
}

#[test]
fn rfc9112_7_1_clients_arriving_while_a_chunked_answer_streams_join_its_fetch() {
    let node = Node::start();
    let relay = node.relay();
    // 320 KiB over about a second: clients arrive a fifth of a second apart.
    let n = 20 * 16384;
    let path = "/slow-chunked/327680";
    fetch_together(
        &relay.url(path),
        4,
        Duration::from_millis(200),
        &pattern(n, 3),
    );
    assert_eq!(node.count(path), 1, "one fetch for every client");
}

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

/// §7.1 through a pass-through (a POST): an answer without a length streams to its client
/// as node sends it (the head and first bytes before the origin is done, chunked to an
/// HTTP/1.1 client, until the close to a 1.0 one), whatever its size, with one window held
/// (`relay_upstream::PASS_WINDOW`): a 40 MiB answer arrives whole where it used to be held
/// back whole and refused past 32 MiB, after the origin had acted on the POST.
#[test]
fn rfc9112_7_1_an_answer_without_a_length_to_a_post_streams_through() {
    let node = Node::start();
    let relay = node.relay();
    let post = ["-X", "POST", "-d", "x"];
    // 16 pieces of 16 KiB, 50 ms apart: the first reaches the client long before the last.
    let dir = relay_tests::TempDir::new("post-stream");
    let out = dir.path().join("body");
    let (code, timing, err) = relay_tests::curl(&[
        "-X",
        "POST",
        "-d",
        "x",
        "-o",
        out.to_str().expect("path"),
        "-w",
        "%{time_starttransfer} %{time_total}",
        &relay.url("/slow-chunked/262144"),
    ]);
    assert_eq!(code, 0, "{err}");
    let timing = String::from_utf8_lossy(&timing).into_owned();
    let mut t = timing
        .split(' ')
        .map(|s| s.parse::<f64>().expect("seconds"));
    let (first, total) = (t.next().expect("ttfb"), t.next().expect("total"));
    assert!(
        total > 0.6 && first < total - 0.4,
        "first byte at {first} s of {total} s: held back, not streamed"
    );
    assert!(std::fs::read(&out).expect("body") == pattern(262_144, 3));
    // 40 MiB, chunked to an HTTP/1.1 client.
    let n = 40 << 20;
    let got = fetch(&relay.url(&format!("/chunked/{n}")), &post);
    assert_eq!((got.code, got.status), (0, 200), "{}", got.head);
    assert_eq!(got.field("transfer-encoding"), Some("chunked"));
    assert_eq!(got.field("content-length"), None);
    assert!(got.body == pattern(n, 3), "{} bytes", got.body.len());
    // Until the close to an HTTP/1.0 client.
    let mut old = vec!["-0"];
    old.extend_from_slice(&post);
    let got = fetch(&relay.url("/chunked/1000000"), &old);
    assert_eq!((got.code, got.status), (0, 200), "{}", got.head);
    assert_eq!(got.field("transfer-encoding"), None);
    assert_eq!(got.field("connection"), Some("close"));
    assert!(got.body == pattern(1_000_000, 3));
}

//! RFC 9111 (HTTP caching) through relay: what is stored (§3) and the request's own
//! directives (§5.2.1).

use crate::kit::*;
use relay_tests::{Got, fetch};
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
    // §5.2.2.10: s-maxage carries proxy-revalidate for a shared cache: never stale.
    let shared = relay.url("/status/203?cc=s-maxage%3D1");
    assert_eq!(fetch(&shared, &[]).status, 203);
    std::thread::sleep(Duration::from_millis(2100));
    let got = fetch(&url, &["-H", "Cache-Control: max-stale=60"]);
    assert_eq!(
        got.field("cache-status"),
        Some("relay; hit; detail=max-stale")
    );
    assert_eq!(node.count("/status/200"), 1);
    let got = fetch(&shared, &["-H", "Cache-Control: max-stale=60"]);
    assert_eq!(got.status, 203);
    assert_ne!(
        got.field("cache-status"),
        Some("relay; hit; detail=max-stale"),
        "s-maxage served stale"
    );
    assert_eq!(node.count("/status/203"), 2);
    // Without it, stale is stale: asked again.
    assert_eq!(fetch(&url, &[]).status, 200);
    assert_eq!(node.count("/status/200"), 2);
}

/// §3: a response with `Cache-Control: private` is not stored; node sends it chunked, at the
/// pace its socket drains. curl reads it rate-limited, far slower than node could send: it
/// gets every byte, and relay holds only a window of it meanwhile (its fetch keeps within
/// 8 MiB of the client: `relay_cache::inflight::AHEAD_BYTES`), not the whole answer.
#[test]
fn rfc9111_3_a_private_answer_reaches_a_slow_curl_whole_while_relay_holds_a_window() {
    const LEN: usize = 32 << 20;
    let node = Node::start();
    let relay = node.relay();
    let baseline = relay.rss();
    let out = relay_tests::TempDir::new("slow-curl");
    let file = out.path().join("body");
    let mut curl = std::process::Command::new("curl")
        .args(["-s", "--limit-rate", "4M", "-o"])
        .arg(&file)
        .arg(relay.url(&format!("/chunked/{LEN}?cc=private")))
        .spawn()
        .expect("curl");
    let mut peak = baseline;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = curl.try_wait().expect("curl") {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "curl took over 60 s");
        peak = peak.max(relay.rss());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "curl: {status}");
    let got = std::fs::read(&file).expect("curl's output");
    assert_eq!(got.len(), LEN);
    assert!(got == pattern(LEN, 3), "the body differs");
    let grew = peak.saturating_sub(baseline);
    eprintln!(
        "private chunked answer of {} MiB to curl at 4 MiB/s: relay RSS peak +{} MiB",
        LEN >> 20,
        grew >> 20
    );
    assert!(grew < 20 << 20, "relay held {} MiB of it", grew >> 20);
}

/// §4.2.3, §5.1: a response served from storage carries the stored response's `Date` (the
/// origin's: when it was generated), and an `Age` that counts from it; so a client's
/// `Expires` − `Date` − `Age` is the freshness truly left. The origin's answer was
/// generated 30 s before it was sent, and expires 60 s after that.
#[test]
fn rfc9111_4_2_3_a_stored_response_keeps_the_origins_date_and_its_age_counts_from_it() {
    let node = Node::start();
    let relay = node.relay();
    let url = relay.url("/dated/a?ago=30&exp=60&cc=public");
    let sent = unix_now();
    let miss = fetch(&url, &[]);
    assert_eq!(miss.status, 200, "{}", miss.head);
    let date = date_field(&miss, "date");
    // The miss, answered as its fill streams, carries the origin's Date too.
    assert!(near(date, sent - 30, 2), "{}", miss.head);
    assert!(near(age(&miss), 30, 2), "{}", miss.head);
    let left = |got: &Got| date_field(got, "expires") as i64 - date as i64 - age(got) as i64;
    assert!((58..=60).contains(&left(&miss)), "{}", miss.head);
    std::thread::sleep(Duration::from_millis(2100));
    let hit = fetch(&url, &[]);
    assert_eq!(
        hit.field("cache-status"),
        Some("relay; hit"),
        "{}",
        hit.head
    );
    assert_eq!(hit.field("date"), miss.field("date"), "{}", hit.head);
    assert_eq!(hit.field("expires"), miss.field("expires"));
    let aged = age(&hit);
    assert!(aged >= age(&miss) + 2 && aged <= 34, "{}", hit.head);
    assert!((56..=58).contains(&left(&hit)), "{}", hit.head);
    assert_eq!(node.count("/dated/a"), 1);
    // An answer fetched for one client alone (its request's no-store, nothing stored)
    // goes on with the origin's Date as well.
    let sent = unix_now();
    let own = fetch(
        &relay.url("/dated/p?ago=30&exp=60"),
        &["-H", "Cache-Control: no-store"],
    );
    assert_eq!(own.status, 200, "{}", own.head);
    let status = own.field("cache-status").unwrap_or("");
    assert!(status.contains("fwd=request"), "{}", own.head);
    assert!(near(date_field(&own, "date"), sent - 30, 2), "{}", own.head);
}

/// §3.2, §4.3.4: a stored response revalidated with a 304 takes the 304's `Date`, and its
/// `Age` counts from that: the 304 was generated 5 s before it was sent, the first answer
/// 30 s before.
#[test]
fn rfc9111_3_2_a_revalidated_response_takes_the_304s_date() {
    let node = Node::start();
    let relay = node.relay();
    let url = relay.url("/dated/c?ago=30&ago304=5&cc=max-age%3D31");
    let miss = fetch(&url, &[]);
    assert_eq!(miss.status, 200, "{}", miss.head);
    assert!(near(date_field(&miss, "date"), unix_now() - 30, 2));
    // Stale after a second or so: revalidated, and the origin answers 304.
    std::thread::sleep(Duration::from_millis(2100));
    let sent = unix_now();
    let renewed = fetch(&url, &[]);
    assert_eq!(
        renewed.field("cache-status"),
        Some("relay; fwd=stale; fwd-status=304; stored"),
        "{}",
        renewed.head
    );
    assert_eq!(renewed.body, b"dated\n");
    assert!(
        near(date_field(&renewed, "date"), sent - 5, 2),
        "{}",
        renewed.head
    );
    assert!(near(age(&renewed), 5, 2), "{}", renewed.head);
    // Served from storage again: that Date.
    let hit = fetch(&url, &[]);
    assert_eq!(
        hit.field("cache-status"),
        Some("relay; hit"),
        "{}",
        hit.head
    );
    assert_eq!(hit.field("date"), renewed.field("date"));
    assert_eq!(node.count("/dated/c"), 2);
}

/// §4.4, and an operator's purge: a purge while an answer without a length still arrives
/// (it is described only once it ends) holds: the description the answer then publishes
/// is never served, and the next request asks the origin again.
#[test]
fn rfc9111_4_4_a_purge_while_an_answer_without_a_length_arrives_holds() {
    let node = Node::start();
    let relay = relay_tests::Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\
         memory_bytes = 67108864\n\n[origin]\n\n[[origin.http]]\n\
         url = \"http://127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         purge_token = \"purge-token-purge-token\"\n",
        node.http
    ));
    // (20 pieces of 16 KiB, 50 ms apart: arriving for about a second.)
    let path = "/slow-chunked/327680";
    let url = relay.url(path);
    let first = std::thread::spawn(move || fetch(&url, &[]));
    std::thread::sleep(Duration::from_millis(300));
    let admin = relay.admin.expect("admin");
    let purged = fetch(
        &format!("http://{admin}/purge?key={}", relay.url(path)),
        &[
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer purge-token-purge-token",
        ],
    );
    assert_eq!(purged.status, 200, "{}", purged.head);
    let first = first.join().expect("first client");
    assert_eq!((first.code, first.status), (0, 200));
    assert!(first.body == pattern(327680, 3));
    let again = get(&relay, path);
    assert_eq!(again.status, 200);
    assert_eq!(
        again.field("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored"),
        "the purged answer served"
    );
    assert_eq!(node.count(path), 2);
}

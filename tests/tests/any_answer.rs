//! Any origin answer through relay, the right bytes: every status, every framing, never two
//! versions stitched into one body. The origin is node's own `http` module (its framing, its
//! chunked coding: `tests/origins/answers.js`), and a raw socket beside it for answers `http`
//! will not send; the client is curl. Each test is named after the RFC section it checks.

use relay_tests::{Got, Relay, curl, fetch};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHUNK: usize = 256 * 1024;

/// `node tests/origins/answers.js` on two loopback ports it picked; killed on drop.
struct Node {
    child: Child,
    http: u16,
    raw: u16,
}

impl Node {
    fn start() -> Node {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/origins/answers.js");
        let mut child = Command::new("node")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is installed by `cargo xtask setup`");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        // The script prints its ports once listening, or exits.
        let _ = BufReader::new(stdout).read_line(&mut line);
        let port = |name: &str| -> u16 {
            let at = line.find(&format!("\"{name}\":")).expect("ports line") + name.len() + 3;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        };
        let (http, raw) = (port("http"), port("raw"));
        Node { child, http, raw }
    }

    /// How many requests the origin got for `path`.
    fn count(&self, path: &str) -> u64 {
        let (_, body, _) = curl(&[&format!("http://127.0.0.1:{}/count", self.http)]);
        let text = String::from_utf8_lossy(&body).into_owned();
        let Some(at) = text.find(&format!("\"{path}\":")) else {
            return 0;
        };
        text[at + path.len() + 3..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// A relay in front of both ports (the raw one for its paths).
    fn relay(&self) -> Relay {
        let mut config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\
             memory_bytes = 67108864\n\n[origin]\n"
        );
        for prefix in ["/close", "/te-cl", "/short"] {
            config.push_str(&format!(
                "\n[[origin.http]]\nurl = \"http://127.0.0.1:{}\"\nprefix = \"{prefix}\"\n",
                self.raw
            ));
        }
        config.push_str(&format!(
            "\n[[origin.http]]\nurl = \"http://127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            self.http
        ));
        Relay::start(&config)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes `answers.js` sends (its `pattern`).
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) + seed * 7 + (i >> 8)) as u8)
        .collect()
}

fn get(relay: &Relay, path: &str) -> Got {
    fetch(&relay.url(path), &[])
}

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

/// `clients` curl fetches of `url`, started `apart` from one another: each gets `want`
/// whole.
fn fetch_together(url: &str, clients: usize, apart: Duration, want: &[u8]) {
    let started: Vec<_> = (0..clients)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(apart);
            }
            let url = url.to_string();
            std::thread::spawn(move || fetch(&url, &[]))
        })
        .collect();
    for c in started {
        let got = c.join().expect("client");
        assert_eq!((got.code, got.status), (0, 200), "{}", got.head);
        assert!(got.body == want, "{} bytes", got.body.len());
    }
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
    let relay = node.relay();
    // Every answer is a new version with its own strong ETag: the first chunk is one
    // version, the next fetched one another. Never stitched: the body is cut.
    let got = get(&relay, "/strong/1000000");
    assert_eq!(got.status, 200);
    assert_ne!(got.code, 0, "curl sees a cut body");
    assert!(got.body.len() < 1_000_000);
    assert_eq!(versions(&got.body).len(), 1);
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

#[test]
fn rfc8297_an_origins_early_hints_reach_the_clients_waiting_on_its_answer() {
    let node = Node::start();
    let relay = node.relay();
    let got = get(&relay, "/hints");
    assert!(
        got.head.starts_with("HTTP/1.1 103 Early Hints\r\n"),
        "{}",
        got.head
    );
    assert!(
        got.head
            .contains("link: </style.css>; rel=preload; as=style\r\n")
    );
    assert_eq!(
        (got.status, &got.body[..]),
        (200, &b"hinted"[..]),
        "{}",
        got.head
    );
    // Stored: a hit has no interim answer; nor does an HTTP/1.0 client ever get one.
    let again = get(&relay, "/hints");
    assert!(again.head.starts_with("HTTP/1.1 200"), "{}", again.head);
    let old = fetch(&relay.url("/hints?v=1.0"), &["--http1.0"]);
    assert!(old.head.starts_with("HTTP/1.1 200"), "{}", old.head);
    assert_eq!(old.body, b"hinted");
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

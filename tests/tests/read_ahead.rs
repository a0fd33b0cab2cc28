//! A client reading a cold object from an HTTP origin has the chunks ahead of it fetched at
//! once (`origin.read_ahead_bytes`), each by a Range request of its own and each once: the
//! object arrives in about two origin round trips rather than one per chunk, whole and
//! right; a second client takes it from the cache; a range of one chunk fetches nothing
//! past its end; with read-ahead off, a round trip per chunk.

use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, fetch, metric_in, pattern};
use std::time::{Duration, Instant};

const CHUNK: usize = 64 << 10;
const DELAY_MS: u64 = 150;

fn relay(origin: &Origin, read_ahead: &str) -> Relay {
    relay_with(origin, read_ahead, "64 MiB")
}

fn relay_with(origin: &Origin, read_ahead: &str, memory: &str) -> Relay {
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\
         memory_bytes = \"{memory}\"\n\n[origin]\nread_ahead_bytes = \"{read_ahead}\"\n\n\
         [[origin.http]]\nurl = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    ))
}

fn slow(body: &[u8], etag: &str) -> Object {
    let mut o = Object::new(body.to_vec(), etag);
    o.delay_ms = DELAY_MS;
    o
}

#[test]
fn a_cold_object_is_fetched_ahead_of_its_client_in_parallel_once_per_chunk() {
    let origin = Origin::start();
    // 17 chunks; 8 of them ahead of the client at a time.
    let body = pattern(16 * CHUNK + 1234, 5);
    origin.put("/big", slow(&body, "big"));
    origin.put("/one", slow(&body, "one"));
    origin.put("/seq", slow(&body, "seq"));
    let relay = relay(&origin, "512 KiB");

    let started = Instant::now();
    let got = fetch(&relay.url("/big"), &[]);
    let took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.body == body, "other bytes");
    assert_eq!(origin.count("/big"), 17, "each chunk fetched once");
    let sequential = Duration::from_millis(17 * DELAY_MS);
    eprintln!("17 chunks, {DELAY_MS} ms a request: {took:?} (one at a time: {sequential:?})");
    assert!(
        took < sequential / 2,
        "{took:?}: not fetched ahead (a round trip per chunk takes {sequential:?})"
    );
    let m = relay.metrics();
    let ahead = metric_in(&m, "relay_chunk_fetches_total{started=\"ahead\"}").unwrap_or(0.0);
    assert!(ahead >= 8.0, "{m}");

    // A second client: from the cache.
    let again = fetch(&relay.url("/big"), &[]);
    assert!(again.status == 200 && again.body == body);
    assert_eq!(origin.count("/big"), 17);

    // A range within one chunk: nothing fetched past what the response sends.
    let part = fetch(&relay.url("/one"), &["-r", "100-199"]);
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.body, &body[100..200]);
    std::thread::sleep(Duration::from_millis(3 * DELAY_MS));
    assert_eq!(origin.count("/one"), 1, "{:?}", origin.ranges("/one"));

    // Read-ahead off: a round trip per chunk.
    let off = self::relay(&origin, "0");
    let started = Instant::now();
    let got = fetch(&off.url("/seq"), &[]);
    let took = started.elapsed();
    assert!(got.status == 200 && got.body == body);
    eprintln!("read-ahead off: {took:?}");
    assert!(took >= sequential, "{took:?}");
    assert_eq!(origin.count("/seq"), 17);
}

/// A memory tier smaller than the object: the chunks fetched ahead are held for the client
/// until it reaches them (the tier may let them go first), so none is fetched twice.
#[test]
fn chunks_fetched_ahead_are_held_for_their_client_when_memory_is_short() {
    let origin = Origin::start();
    let body = pattern(40 * CHUNK + 99, 6);
    origin.put("/big", slow(&body, "big"));
    let relay = relay_with(&origin, "1 MiB", "1 MiB");
    let started = Instant::now();
    let got = fetch(&relay.url("/big"), &[]);
    let took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.body == body, "other bytes");
    eprintln!(
        "41 chunks through a 1 MiB memory tier: {took:?}, {} requests",
        origin.count("/big")
    );
    assert_eq!(origin.count("/big"), 41, "{:?}", origin.ranges("/big"));
}

//! A client reading a cold object from an HTTP origin has the chunks ahead of it fetched at
//! once (`origin.read_ahead_bytes`), each once: the head fetch asks for a read-ahead's worth
//! from the start, and one streamed Range request the chunks after it, handed to it as the
//! read-ahead claims them; the object arrives in about two origin round trips rather than
//! one per chunk, whole and right; a second client takes it from the cache; a range of one
//! chunk fetches nothing past its end; an answer that breaks off has the rest fetched chunk
//! by chunk; an origin that caps the bytes of each range is asked again for the rest, from
//! where each chunk stands, and bytes an answer sends past its range are never taken for
//! the object's; with read-ahead off, a round trip per chunk.

use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, fetch, metric_in, pattern};
use std::sync::atomic::Ordering;
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
    origin.put("/three", slow(&body, "three"));
    let relay = relay(&origin, "512 KiB");

    let started = Instant::now();
    let got = fetch(&relay.url("/big"), &[]);
    let took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.body == body, "other bytes");
    let ranges = origin.ranges("/big");
    assert_eq!(
        ranges,
        [
            format!("bytes=0-{}", 8 * CHUNK - 1),
            format!("bytes={}-{}", 8 * CHUNK, body.len() - 1),
        ],
        "the head's span, then the rest in one request"
    );
    let sequential = Duration::from_millis(17 * DELAY_MS);
    eprintln!("17 chunks, {DELAY_MS} ms a request: {took:?} (one at a time: {sequential:?})");
    assert!(
        took < sequential / 2,
        "{took:?}: not fetched ahead (a round trip per chunk takes {sequential:?})"
    );
    let m = relay.metrics();
    let ahead = metric_in(&m, "relay_chunk_fetches_total{started=\"ahead\"}").unwrap_or(0.0);
    assert!(ahead >= 8.0, "{m}");
    let streams = metric_in(&m, "relay_read_ahead_streams_total").unwrap_or(0.0);
    assert_eq!(streams, 1.0, "{m}");

    // A second client: from the cache.
    let again = fetch(&relay.url("/big"), &[]);
    assert!(again.status == 200 && again.body == body);
    assert_eq!(origin.count("/big"), 2);

    // A range within one chunk: nothing fetched past the chunk the response sends.
    let part = fetch(&relay.url("/one"), &["-r", "100-199"]);
    assert_eq!(part.status, 206, "{}", part.head);
    assert_eq!(part.body, &body[100..200]);
    std::thread::sleep(Duration::from_millis(3 * DELAY_MS));
    assert_eq!(origin.ranges("/one"), [format!("bytes=0-{}", CHUNK - 1)]);
    // A range of three chunks from the start: the head fetch asks for those three.
    let part = fetch(
        &relay.url("/three"),
        &["-r", &format!("0-{}", 3 * CHUNK - 1)],
    );
    assert_eq!(part.status, 206, "{}", part.head);
    assert!(part.body == body[..3 * CHUNK]);
    std::thread::sleep(Duration::from_millis(3 * DELAY_MS));
    assert_eq!(
        origin.ranges("/three"),
        [format!("bytes=0-{}", 3 * CHUNK - 1)]
    );

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
/// until it reaches them (the tier may let them go first), so none is fetched again for it;
/// fetches that find chunk memory at its bound end, and the rest come in later ones.
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
    // Never more than a request per chunk (the streams end where memory ran short).
    assert!(origin.count("/big") <= 41, "{:?}", origin.ranges("/big"));
}

/// Answers that break off mid-object: the chunk where one broke continues from where it
/// stood, and each chunk after it is fetched on its own; the client gets every byte right.
#[test]
fn a_streamed_fetch_that_breaks_off_is_finished_chunk_by_chunk() {
    let origin = Origin::start();
    let body = pattern(20 * CHUNK + 777, 7);
    origin.put("/cut", Object::new(body.clone(), "cut"));
    // Any answer stops after two and a half chunks.
    origin
        .behaviour
        .truncate_after
        .store((5 * CHUNK / 2) as u64, Ordering::Relaxed);
    let relay = relay(&origin, "512 KiB");
    let got = fetch(&relay.url("/cut"), &[]);
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.body == body, "other bytes");
    let ranges = origin.ranges("/cut");
    eprintln!("{} requests: {ranges:?}", ranges.len());
    // The head's span (8 chunks) broke in chunk 2: chunk 2 from where it stood, 3..7 each
    // on their own; the stream from chunk 8 likewise.
    assert!(
        ranges.contains(&format!("bytes={}-{}", 5 * CHUNK / 2, 3 * CHUNK - 1)),
        "{ranges:?}"
    );
    assert!(ranges.len() <= 21, "{ranges:?}");
    origin.behaviour.truncate_after.store(0, Ordering::Relaxed);
    let again = fetch(&relay.url("/cut"), &[]);
    assert!(again.status == 200 && again.body == body);
}

/// Chunk memory shorter than the clients' read-aheads together: each client's own chunk is
/// claimed before the chunks after it, and a client that waits for room for its own chunk
/// (one the tier let go after the read-ahead found it there) lets go of what its read-ahead
/// holds past it, so no client waits for room that its own read-ahead (or another's)
/// holds; every client gets its whole body, from the start or from the middle of a chunk,
/// in seconds (claimed the other way round, they waited out the room timeout, a minute,
/// and were cut; holding on while waiting, one round in ten or so left a client stuck).
/// Five rounds of four cold objects through one relay.
#[test]
fn clients_whose_read_aheads_outgrow_chunk_memory_are_never_stuck() {
    let origin = Origin::start();
    // Room for about 22 chunks of 64 KiB; each client reads 32 ahead.
    let relay = relay_with(&origin, "2 MiB", "1 MiB");
    for round in 0..5u64 {
        let objects: Vec<(String, Vec<u8>)> = (0..4u64)
            .map(|i| {
                let body = pattern(64 * CHUNK + 4321, 20 + 4 * round + i);
                (format!("/cold{round}-{i}"), body)
            })
            .collect();
        for (path, body) in &objects {
            origin.put(path, Object::new(body.clone(), path));
        }
        let started = Instant::now();
        let clients: Vec<_> = objects
            .iter()
            .enumerate()
            .map(|(i, (path, body))| {
                let url = relay.url(path);
                let body = body.clone();
                // Two from the start, two from the middle of chunk 4.
                let from = if i % 2 == 0 { 0 } else { 4 * CHUNK + 777 };
                std::thread::spawn(move || {
                    let range = format!("{from}-");
                    let got = fetch(&url, &["-r", &range, "--max-time", "50"]);
                    (got.status, got.body == body[from..], got.body.len())
                })
            })
            .collect();
        for (i, c) in clients.into_iter().enumerate() {
            let (status, whole, len) = c.join().expect("client");
            assert!(
                (status == 200 || status == 206) && whole,
                "round {round}, client {i}: status {status}, {len} bytes, {:?}",
                started.elapsed()
            );
        }
        let took = started.elapsed();
        eprintln!(
            "round {round}: 4 clients, 65 chunks each, through 1 MiB of chunk memory: {took:?}"
        );
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
}

/// An origin answering every Range with at most 20,000 bytes (a 206 saying so, as RFC 9110
/// §15.3.7 lets a client find out): relay asks again for the rest of each chunk from where
/// it stands, for the head fetch's first chunk as for the others, so a whole GET and a
/// range arrive whole and right, the origin asked a bounded number of times. An origin
/// capping so low that a chunk takes more answers than relay asks for one chunk cuts the
/// client: never a short body passed off as whole.
#[test]
fn an_origin_capping_its_ranges_is_asked_for_the_rest_of_each_chunk() {
    let origin = Origin::start();
    let cap = 20_000u64;
    origin.behaviour.range_cap.store(cap, Ordering::Relaxed);
    let body = pattern(5 * CHUNK + 777, 11);
    origin.put("/capped", Object::new(body.clone(), "capped"));
    origin.put("/part", Object::new(body.clone(), "part"));
    let relay = relay(&origin, "256 KiB");

    let got = fetch(&relay.url("/capped"), &[]);
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(
        got.body == body,
        "the whole body, right ({} bytes)",
        got.body.len()
    );
    let answers = origin.count("/capped") as u64;
    // Each chunk in 20,000-byte answers (4 for a 64 KiB chunk), the streams' answers
    // beside them.
    let least = (body.len() as u64).div_ceil(cap);
    assert!(
        (least..=3 * least).contains(&answers),
        "{answers} origin requests for {least} answers' worth: {:?}",
        origin.ranges("/capped")
    );
    let m = relay.metrics();
    let resumed = metric_in(&m, "relay_upstream_answers_resumed_total").unwrap_or(0.0);
    assert!(resumed >= 5.0, "{m}");
    // From the cache now.
    let again = fetch(&relay.url("/capped"), &[]);
    assert!(again.status == 200 && again.body == body);
    assert_eq!(origin.count("/capped") as u64, answers);

    // A range across chunks, cold.
    let (a, z) = (CHUNK + 5000, 3 * CHUNK + 100);
    let part = fetch(&relay.url("/part"), &["-r", &format!("{a}-{z}")]);
    assert_eq!(part.status, 206, "{}", part.head);
    assert!(part.body == body[a..=z], "the range's bytes");

    // 100 bytes an answer: a 64 KiB chunk would take 656 answers; relay gives up on it
    // and cuts its client rather than send a short body as whole, its other chunks' fetches
    // stop, and the object is asked for whole from then on.
    origin.behaviour.range_cap.store(100, Ordering::Relaxed);
    origin.put("/tiny", Object::new(body.clone(), "tiny"));
    let cut = fetch(&relay.url("/tiny"), &[]);
    assert!(
        cut.body.len() < body.len() && cut.body[..] == body[..cut.body.len()],
        "cut, with right bytes up to the cut: {} of {}",
        cut.body.len(),
        body.len()
    );
    let whole = fetch(&relay.url("/tiny"), &[]);
    assert_eq!(whole.status, 200, "{}", whole.head);
    assert!(
        whole.body == body,
        "asked for whole: {} bytes",
        whole.body.len()
    );
    let asked = origin.count("/tiny");
    assert!(
        asked <= 3 * 66,
        "{asked} origin requests: about one chunk's worth of tries"
    );
}

/// An origin whose 206s send bytes past the range their `Content-Range` names (counted in
/// their `Content-Length`, or with no length and the connection's close ending them), with
/// and without capping its ranges: those bytes are never read (each answer is read up to
/// the end its `Content-Range` names, the rest asked for from there), and every client gets
/// the object's own bytes, from the origin and then from the cache.
#[test]
fn bytes_an_origin_sends_past_its_range_are_never_served() {
    let origin = Origin::start();
    origin.behaviour.range_junk.store(1000, Ordering::Relaxed);
    let body = pattern(5 * CHUNK + 777, 13);
    let relay = relay(&origin, "256 KiB");
    for (n, (cap, unframed)) in [(0, false), (20_000, false), (0, true), (20_000, true)]
        .into_iter()
        .enumerate()
    {
        origin.behaviour.range_cap.store(cap, Ordering::Relaxed);
        origin
            .behaviour
            .range_unframed
            .store(unframed, Ordering::Relaxed);
        let path = format!("/junk{n}");
        origin.put(&path, Object::new(body.clone(), &format!("j{n}")));
        for round in 0..2 {
            let got = fetch(&relay.url(&path), &[]);
            assert_eq!(got.status, 200, "{path} round {round}: {}", got.head);
            assert!(
                !got.body.windows(8).any(|w| w == b"JJJJJJJJ"),
                "{path} (cap {cap}, unframed {unframed}) round {round}: the origin's stray \
                 bytes in the body"
            );
            assert!(
                got.body == body,
                "{path} (cap {cap}, unframed {unframed}) round {round}: {} bytes, not the object",
                got.body.len()
            );
            let (a, z) = (CHUNK + 5000, 3 * CHUNK + 100);
            let part = fetch(&relay.url(&path), &["-r", &format!("{a}-{z}")]);
            assert_eq!(part.status, 206, "{}", part.head);
            assert!(
                part.body == body[a..=z],
                "{path} round {round}: the range's bytes"
            );
        }
    }
}

/// An object smaller than a chunk with no validator at all, its first answer capped short,
/// the object changing at the origin (same length) before the rest could be asked for: its
/// chunk is never resumed by Range (nothing tells the versions apart), so no client gets,
/// and the cache never keeps, one version's start with the other's rest.
#[test]
fn a_capped_answer_of_an_unvalidated_object_is_never_resumed_into_another_version() {
    let origin = Origin::start();
    origin.behaviour.range_cap.store(5_000, Ordering::Relaxed);
    origin.behaviour.head_delay_ms.store(400, Ordering::Relaxed);
    let len = 20_000;
    let (v1, v2) = (pattern(len, 21), pattern(len, 22));
    let weak = |body: &Vec<u8>| {
        let mut o = Object::new(body.clone(), "x");
        // No entity tag, no Last-Modified: no validator at all.
        o.etag = String::new();
        o.last_modified = None;
        o
    };
    origin.put("/weak", weak(&v1));
    let relay = relay(&origin, "256 KiB");
    let url = relay.url("/weak");
    let client = std::thread::spawn(move || fetch(&url, &[]));
    // The first answer (v1) is on its way; the origin has the object change before the
    // rest is asked for.
    let t = Instant::now();
    while origin.count("/weak") < 1 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    origin.put("/weak", weak(&v2));
    let got = client.join().expect("client");
    let again = fetch(&relay.url("/weak"), &[]);
    for (who, got) in [("first", &got), ("second", &again)] {
        let n = got.body.len();
        let one = [&v1, &v2].iter().any(|v| got.body[..] == v[..n.min(len)]);
        assert!(
            n <= len && one && (n == len || got.code != 0),
            "{who} client: {} of {len} bytes, exit {}: a whole version, or a cut prefix of \
             one (asked: {:?})",
            n,
            got.code,
            origin.ranges("/weak")
        );
    }
}

/// An object of an origin capping its ranges too short is asked for whole, and stored as a
/// body from one answer; once stale, and changed at the origin, its revalidation is asked
/// for whole too, and its client gets the new version whole (not the capped 206's first
/// bytes taken for all of it).
#[test]
fn a_changed_object_of_an_origin_capping_its_ranges_revalidates_whole() {
    let origin = Origin::start();
    origin.behaviour.range_cap.store(100, Ordering::Relaxed);
    let body = pattern(3 * CHUNK + 777, 31);
    let object = |body: &Vec<u8>, tag: &str| {
        let mut o = Object::new(body.clone(), tag);
        o.cache_control = Some("max-age=1".into());
        o
    };
    origin.put("/reval", object(&body, "r1"));
    let relay = relay(&origin, "256 KiB");
    let _cut = fetch(&relay.url("/reval"), &[]);
    let whole = fetch(&relay.url("/reval"), &[]);
    assert!(whole.status == 200 && whole.body == body, "asked for whole");
    // Stale; the object changes.
    std::thread::sleep(Duration::from_millis(2100));
    let body2 = pattern(3 * CHUNK + 777, 32);
    origin.put("/reval", object(&body2, "r2"));
    let got = fetch(&relay.url("/reval"), &[]);
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(
        got.body == body2,
        "the changed object whole: {} of {} bytes (curl exit {})",
        got.body.len(),
        body2.len(),
        got.code
    );
}

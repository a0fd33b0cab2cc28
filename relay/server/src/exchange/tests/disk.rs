//! The disk tier: a chunk read and verified, a corrupt one refetched, a description restored after a restart.

use super::*;

/// A 5,000-byte object `body` of version `version`, described in the meta cache and its one
/// chunk on the disk tier (not in memory).
pub(super) fn describe_on_disk(kit: &Kit, key: &str, version: u64, body: &[u8]) {
    kit.shared.cache.meta.insert(
        key,
        ObjectMeta::file(5000, version, "\"v\"".into(), String::new()),
    );
    put_on_disk(kit, key, version, 0, 5000, body, b"");
}

#[test]
fn a_chunk_on_the_disk_tier_is_read_verified_promoted_and_sent() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/d");
    let body = object(5000);
    describe_on_disk(&kit, &key, 3, &body);
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/d"));
    assert_eq!(ex.state_name(), "reading-disk");
    let a = kit.disk_read(&mut ex, a);
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert!(matches!(next, Action::Recv));
    assert_eq!(ex.trail, ["reading-disk", "ready"]);
    assert_eq!(kit.count(&kit.stats.disk_hits), 1);
    // Promoted: the next request is a memory hit, no file touched.
    let a = kit.input(&mut ex, &cdn_get("/d"));
    assert!(matches!(a, Action::Send), "{a:?}");
}

#[test]
fn a_corrupt_chunk_on_disk_is_never_sent_and_is_fetched_again() {
    let body = object(5000);
    let (url, origin) = range_origin(body.clone());
    let mut kit = Kit::with_origin(true, &url);
    let key = cdn_key("/bad");
    describe_on_disk(&kit, &key, 4, &body);
    // Flip a byte of the body on disk.
    let disk = kit.shared.cache.disk.as_ref().unwrap();
    let plan = disk
        .locate(&relay_cache::ChunkRef {
            object: &key,
            version: 4,
            index: 0,
        })
        .unwrap();
    let mut bytes = std::fs::read(&plan.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&plan.path, bytes).unwrap();
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/bad"));
    let a = kit.disk_read(&mut ex, a);
    assert_eq!(kit.count(&kit.stats.disk_corrupt), 1);
    // It fetches the chunk (the origin, on loopback, may have answered before the
    // exchange looks at the fill): what the client gets is the origin's bytes, in one
    // response, and nothing of the corrupt chunk.
    let (mut sent, mut next) = kit.run(&mut ex, a);
    assert_eq!(kit.count(&kit.stats.upstream_chunks), 1);
    for _ in 0..100 {
        if !matches!(next, Action::Wait) {
            break;
        }
        let (more, after) = kit.woken_until_sent(&mut ex);
        sent.extend_from_slice(&more);
        next = after;
    }
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(rest, &body[..]);
    let request = origin.join().unwrap();
    assert!(request.contains("range: bytes=0-4999"), "{request}");
}

#[test]
fn a_corrupt_chunk_a_crowd_waits_on_is_fetched_once_for_all() {
    let body = object(5000);
    let (url, origin) = range_origin(body.clone());
    let mut kit = Kit::with_origin(true, &url);
    let key = cdn_key("/bad-crowd");
    describe_on_disk(&kit, &key, 5, &body);
    let plan = kit
        .shared
        .cache
        .disk
        .as_ref()
        .unwrap()
        .locate(&relay_cache::ChunkRef {
            object: &key,
            version: 5,
            index: 0,
        })
        .unwrap();
    let mut bytes = std::fs::read(&plan.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&plan.path, bytes).unwrap();
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &cdn_get("/bad-crowd"));
    let mut second = kit.exchange();
    let b = kit.input(&mut second, &cdn_get("/bad-crowd"));
    assert!(
        matches!(b, Action::Wait),
        "it waits on the first one's read: {b:?}"
    );
    // The read finds the chunk corrupt: it ends without bytes, and its reader fetches it.
    // (The origin on loopback may answer before the exchange looks again: then the body
    // goes out at once.)
    let a = kit.disk_read(&mut first, a);
    let (sent_first, next) = kit.run(&mut first, a);
    assert!(matches!(next, Action::Wait | Action::Recv), "{next:?}");
    // The second, woken, joins that fetch rather than reading or fetching again.
    let (sent_second, next) = kit.woken(&mut second);
    assert!(matches!(next, Action::Wait | Action::Recv), "{next:?}");
    assert_eq!(
        kit.count(&kit.stats.upstream_chunks),
        1,
        "one fetch for both"
    );
    assert_eq!(kit.count(&kit.stats.disk_corrupt), 1, "one read for both");
    for (mut sent, ex) in [(sent_first, &mut first), (sent_second, &mut second)] {
        if sent.is_empty() {
            sent = kit.woken_until_sent(ex).0;
        }
        assert_eq!(split_response(&sent).1, &body[..]);
    }
    origin.join().unwrap();
}

#[test]
fn a_chunk_whose_fill_is_in_flight_is_streamed_from_it_not_read_from_disk() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/both");
    let body = object(5000);
    describe_on_disk(&kit, &key, 6, &body);
    // The test is the upstream: the chunk's fill is in flight.
    let chunk = ChunkKey {
        object: Arc::from(key.as_str()),
        version: 6,
        index: 0,
    };
    let cache = &kit.shared.cache;
    let Claim::Mine(mut writer) = cache.inflight.claim_fill(chunk, 5000, &cache.memory) else {
        panic!("the test starts the fill")
    };
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/both"));
    let (sent, next) = kit.run(&mut ex, a);
    assert!(sent.is_empty());
    assert!(
        matches!(next, Action::Wait),
        "it joined the fetch: {next:?}"
    );
    assert_eq!(
        kit.count(&kit.stats.disk_hits),
        0,
        "no read of the disk copy"
    );
    writer.append(&body).unwrap();
    writer.finish().unwrap();
    let (sent, _) = kit.woken(&mut ex);
    assert_eq!(split_response(&sent).1, &body[..]);
}

#[test]
fn one_disk_read_per_chunk_however_many_connections_want_it() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/many");
    let body = object(5000);
    describe_on_disk(&kit, &key, 7, &body);
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &cdn_get("/many"));
    assert_eq!(first.state_name(), "reading-disk");
    // A second asks meanwhile: it waits on the first one's read.
    let mut second = kit.exchange();
    let b = kit.input(&mut second, &cdn_get("/many"));
    assert!(matches!(b, Action::Wait), "{b:?}");
    assert!(matches!(
        kit.shared.cache.inflight.flight(&ChunkKey {
            object: Arc::from(key.as_str()),
            version: 7,
            index: 0,
        }),
        Some(Flight::Read(_))
    ));
    let a = kit.disk_read(&mut first, a);
    let (sent, _) = kit.run(&mut first, a);
    assert_eq!(split_response(&sent).1, &body[..]);
    let (sent, _) = kit.woken(&mut second);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert_eq!(kit.count(&kit.stats.disk_hits), 1, "one disk read for both");
}

#[test]
fn after_a_restart_a_description_is_restored_from_disk_once() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/r");
    let body = object(3000);
    let now_unix = relay_cache::policy::unix_seconds(std::time::SystemTime::now());
    let mut meta = ObjectMeta::file(3000, 5, "\"v\"".into(), String::new());
    meta.content_type = "video/mp4".into();
    let blob = meta.encode_blob(Instant::now(), now_unix);
    put_on_disk(&kit, &key, 5, 0, 3000, &body, &blob);
    // The first client reads the description (its first chunk); a second waits on it.
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &cdn_get("/r"));
    assert_eq!(first.state_name(), "reading-disk");
    let mut second = kit.exchange();
    assert!(matches!(
        kit.input(&mut second, &cdn_get("/r")),
        Action::Wait
    ));
    assert_eq!(second.state_name(), "awaiting-head");
    let a = kit.disk_read(&mut first, a);
    let (sent, _) = kit.run(&mut first, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "content-type"), Some("video/mp4"), "{head}");
    assert_eq!(rest, &body[..]);
    assert_eq!(first.trail, ["reading-disk", "ready"]);
    let (sent, _) = kit.woken(&mut second);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert_eq!(kit.count(&kit.stats.disk_hits), 1, "one disk read for both");
    assert_eq!(second.trail, ["awaiting-head", "ready"]);
}

#[test]
fn a_restoring_client_that_leaves_hands_its_entry_to_a_head_fetch() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/gone-r");
    let now_unix = relay_cache::policy::unix_seconds(std::time::SystemTime::now());
    let meta = ObjectMeta::file(100, 8, "\"v\"".into(), String::new());
    put_on_disk(
        &kit,
        &key,
        8,
        0,
        100,
        &object(100),
        &meta.encode_blob(Instant::now(), now_unix),
    );
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &cdn_get("/gone-r"));
    assert!(matches!(a, Action::OpenDisk { .. }), "{a:?}");
    let mut second = kit.exchange();
    assert!(matches!(
        kit.input(&mut second, &cdn_get("/gone-r")),
        Action::Wait
    ));
    // The first client leaves with its open in flight: its entry goes to a head fetch (the
    // test's origin refuses it), and what the kernel may still use stays with the slot.
    first.on_close(&mut kit.cx());
    assert_eq!(first.state_name(), "closed");
    assert!(
        matches!(&first.state, State::Closed(Some(kept)) if kept.name() == "reading-disk"),
        "the read's memory is kept"
    );
    assert!(matches!(first.poll(&mut kit.cx()), Action::Idle));
    assert_eq!(kit.count(&kit.stats.upstream_heads), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = loop {
        std::thread::sleep(Duration::from_millis(10));
        let (sent, next) = kit.woken(&mut second);
        if !sent.is_empty() || Instant::now() > deadline {
            break sent;
        }
        assert!(matches!(next, Action::Wait));
    };
    assert!(
        sent.starts_with(b"HTTP/1.1 502 "),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );
}

/// With the arena full and the heap chunks beside it at their cap, a response that needs
/// chunk memory holds none, waits, and goes on once room comes back; no chunk is made past
/// the cap meanwhile.
#[test]
fn a_chunk_read_waits_for_room_when_chunk_memory_is_at_its_bound() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/room");
    let len = 16 << 10;
    let body = object(len);
    kit.shared.cache.meta.insert(
        &key,
        ObjectMeta::file(len as u64, 8, "\"v\"".into(), String::new()),
    );
    put_on_disk(&kit, &key, 8, 0, len as u64, &body, b"");
    let memory = &kit.shared.cache.memory;
    let arena = memory
        .arena()
        .expect("the kit's chunks are of arena size")
        .clone();
    // Take every block, then heap chunks up to the cap.
    let mut held = Vec::new();
    while let Some(buf) = memory.chunk_buf(len) {
        held.push(buf);
        assert!(held.len() < 1000, "the loose chunks have a cap");
    }
    assert!(arena.loose() > 0 && arena.loose() <= arena.loose_cap());
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/room"));
    assert!(matches!(a, Action::Wait), "{a:?}");
    assert_eq!(ex.state_name(), "ready", "no read started without memory");
    assert_eq!(kit.count(&kit.stats.room_waits), 1);
    // Woken with still no room: it keeps waiting.
    assert!(matches!(ex_poll(&mut kit, &mut ex), Action::Wait));
    assert!(arena.loose() <= arena.loose_cap());
    // Room again: the read goes on and the body is whole.
    drop(held);
    let a = ex_poll(&mut kit, &mut ex);
    let a = kit.disk_read(&mut ex, a);
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert!(matches!(next, Action::Recv));
}

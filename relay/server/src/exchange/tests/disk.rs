//! The disk tier: a chunk read and verified, a corrupt one refetched, a description restored after a restart.

use super::*;

#[test]
fn a_chunk_on_the_disk_tier_is_read_verified_promoted_and_sent() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/d");
    let body = object(5000);
    kit.shared.cache.meta.insert(
        &key,
        ObjectMeta::file(5000, 3, "\"v\"".into(), String::new()),
    );
    put_on_disk(&kit, &key, 3, 0, 5000, &body, b"");
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/d"));
    assert_eq!(ex.state_name(), "reading-disk");
    let a = kit.disk_read(&mut ex, a);
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert!(matches!(next, Action::Recv));
    assert_eq!(kit.count(&kit.stats.disk_hits), 1);
    // Promoted: the next request is a memory hit, no file touched.
    let a = kit.input(&mut ex, &cdn_get("/d"));
    assert!(matches!(a, Action::Send), "{a:?}");
}

#[test]
fn a_corrupt_chunk_on_disk_is_never_sent_and_is_fetched_again() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/bad");
    let body = object(5000);
    kit.shared.cache.meta.insert(
        &key,
        ObjectMeta::file(5000, 4, "\"v\"".into(), String::new()),
    );
    put_on_disk(&kit, &key, 4, 0, 5000, &body, b"");
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
    // The test is the upstream: the chunk's fill is in flight when the disk read fails.
    let chunk = ChunkKey {
        object: Arc::from(key.as_str()),
        version: 4,
        index: 0,
    };
    let Start::New(mut writer) = kit
        .shared
        .cache
        .inflight
        .join_or_start(chunk, 5000, |_| false)
    else {
        panic!("the test starts the fill")
    };
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/bad"));
    let a = kit.disk_read(&mut ex, a);
    assert_eq!(kit.count(&kit.stats.disk_corrupt), 1);
    let (sent, next) = kit.run(&mut ex, a);
    assert!(sent.is_empty(), "nothing of the corrupt chunk went out");
    assert!(
        matches!(next, Action::Wait),
        "it joined the fetch: {next:?}"
    );
    writer.append(&body).unwrap();
    writer.finish().unwrap();
    let (sent, _) = kit.woken(&mut ex);
    assert_eq!(split_response(&sent).1, &body[..]);
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
    let (sent, _) = kit.woken(&mut second);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert_eq!(kit.count(&kit.stats.disk_hits), 1, "one disk read for both");
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
    assert_eq!(first.state_name(), "reading-disk");
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

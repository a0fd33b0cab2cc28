//! `Cache-Status` (RFC 9211) says what really happened to each response, and the hit, miss
//! and forward counters count that same value.

use super::*;
use crate::cache_status::Fwd;

fn status(head: &str) -> &str {
    field(head, "cache-status").unwrap_or("")
}

/// (hits, misses) counted so far.
fn lookups(kit: &Kit) -> (u64, u64) {
    (
        kit.count(&kit.stats.lookups.hits),
        kit.count(&kit.stats.lookups.misses),
    )
}

#[test]
fn a_directory_object_is_a_uri_miss_then_a_hit_then_partial_without_its_chunk() {
    let mut kit = Kit::new();
    kit.file("p.bin", &object(20_000));
    let mut ex = kit.exchange();
    let (head, _, _) = kit.ask(&mut ex, &get("/p.bin"));
    assert_eq!(
        status(&head),
        "relay; fwd=uri-miss; fwd-status=200; stored",
        "{head}"
    );
    assert_eq!(lookups(&kit), (0, 1));
    let (head, _, _) = kit.ask(&mut ex, &get("/p.bin"));
    assert_eq!(status(&head), "relay; hit");
    assert_eq!(lookups(&kit), (1, 1));
    // A conditional answered from storage is a hit too.
    let etag = field(&head, "etag").unwrap().to_owned();
    let req = format!("GET /p.bin HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n");
    let (head, _, _) = kit.ask(&mut ex, req.as_bytes());
    assert!(head.starts_with("HTTP/1.1 304 "), "{head}");
    assert_eq!(status(&head), "relay; hit");
    assert_eq!(lookups(&kit), (2, 1));
    // The description is kept, its chunks are gone: the body comes from the origin again.
    let key = format!("{}/p.bin", relay_cache::key::DIRECTORY);
    kit.shared.cache.memory.remove_object(&key);
    let (head, body, _) = kit.ask(&mut ex, &get("/p.bin"));
    assert_eq!(
        status(&head),
        "relay; fwd=partial; fwd-status=200; stored",
        "{head}"
    );
    assert_eq!(body, object(20_000));
    assert_eq!(lookups(&kit), (2, 2));
    let forwarded = |f| kit.stats.lookups.forwarded(f);
    assert_eq!((forwarded(Fwd::UriMiss), forwarded(Fwd::Partial)), (1, 1));
}

#[test]
fn a_directory_description_due_for_revalidation_is_stale() {
    let mut kit = Kit::new();
    kit.timeouts.revalidate = Duration::ZERO;
    kit.file("r.txt", b"again");
    let mut ex = kit.exchange();
    let (head, _, _) = kit.ask(&mut ex, &get("/r.txt"));
    assert!(status(&head).starts_with("relay; fwd=uri-miss"), "{head}");
    std::thread::sleep(Duration::from_millis(5));
    let (head, body, _) = kit.ask(&mut ex, &get("/r.txt"));
    assert_eq!(status(&head), "relay; fwd=stale; fwd-status=200; stored");
    assert_eq!(body, b"again");
    assert_eq!(kit.stats.lookups.forwarded(Fwd::Stale), 1);
}

/// A stale copy of `path` (version 5), a request for it waiting on the revalidation the
/// test makes, and the origin's answer: `meta` (with its body's first chunk `fill`).
fn revalidated(kit: &mut Kit, path: &str, meta: ObjectMeta, fill: Option<&[u8]>) -> String {
    let key = cdn_key(path);
    stale_object(kit, &key, 5, &object(300), 0, 0);
    kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(kit.input(&mut ex, &cdn_get(path)), Action::Wait));
    let version = meta.version;
    let fill = fill.map(|bytes| {
        let (fill, mut w) = Fill::new(
            ChunkKey {
                object: Arc::from(key.as_str()),
                version,
                index: 0,
            },
            bytes.len(),
        );
        w.append(bytes).unwrap();
        w.finish().unwrap();
        fill
    });
    kit.shared
        .cache
        .inflight
        .finish_head(&key, Ok(Arc::new(meta)), fill, &kit.shared.wake);
    let (sent, _) = kit.woken(&mut ex);
    split_response(&sent).0
}

#[test]
fn a_revalidated_copy_is_stale_with_the_origins_status() {
    let mut kit = Kit::new();
    // 304: the same version, its chunks kept.
    let same = ObjectMeta::file(300, 5, "\"s\"".into(), String::new());
    let head = revalidated(&mut kit, "/same", same, None);
    assert_eq!(
        status(&head),
        "relay; fwd=stale; fwd-status=304; stored; collapsed",
        "{head}"
    );
    // A new version.
    let new = ObjectMeta::file(4, 6, "\"n\"".into(), String::new());
    let head = revalidated(&mut kit, "/new", new, Some(b"new!"));
    assert_eq!(
        status(&head),
        "relay; fwd=stale; fwd-status=200; stored; collapsed",
        "{head}"
    );
    assert_eq!(lookups(&kit), (0, 2));
    assert_eq!(kit.stats.lookups.forwarded(Fwd::Stale), 2);
}

#[test]
fn stale_copies_served_are_hits_with_their_detail() {
    let mut kit = Kit::new();
    let body = object(100);
    stale_object(&kit, &cdn_key("/swr"), 3, &body, 60, 0);
    let mut ex = kit.exchange();
    let (head, _, _) = kit.ask(&mut ex, &cdn_get("/swr"));
    assert_eq!(status(&head), "relay; hit; detail=stale-while-revalidate");
    stale_object(&kit, &cdn_key("/sie"), 4, &body, 0, 60);
    let (sent, _) = kit.head_fails("/sie");
    let (head, _) = split_response(&sent);
    assert_eq!(status(&head), "relay; hit; detail=stale-if-error");
    assert_eq!(lookups(&kit), (2, 0), "both served from storage");
}

#[test]
fn an_answer_relay_makes_up_has_no_cache_status_and_counts_no_lookup() {
    let mut kit = Kit::new();
    let (sent, _) = kit.head_fails("/down");
    let (head, _) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert_eq!(field(&head, "cache-status"), None);
    assert_eq!(lookups(&kit), (0, 0));
}

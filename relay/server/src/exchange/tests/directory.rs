//! Directory-origin objects: open, describe and read through the actions, conditionals and ranges, one read per chunk for many connections.

use super::*;

#[test]
fn a_directory_miss_opens_describes_and_reads_the_file_then_sends_it() {
    let mut kit = Kit::new();
    let body = object(40_000);
    kit.file("a.bin", &body);
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/a.bin"));
    assert!(matches!(a, Action::OpenDir { .. }), "{a:?}");
    assert_eq!(ex.state_name(), "opening");
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(field(&head, "content-length"), Some("40000"));
    assert_eq!(
        field(&head, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(rest, &body[..], "the body, whole and right");
    assert!(
        matches!(next, Action::Recv),
        "then the next request: {next:?}"
    );
    assert_eq!(
        kit.count(&kit.stats.origin_file_reads),
        3,
        "one read per chunk"
    );
    assert_eq!(kit.count(&kit.stats.lookups.misses), 1);
}

#[test]
fn a_second_request_is_a_memory_hit_without_file_io() {
    let mut kit = Kit::new();
    let body = object(20_000);
    kit.file("b.txt", &body);
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/b.txt"));
    let (_, next) = kit.run(&mut ex, a);
    assert!(matches!(next, Action::Recv));
    let a = kit.input(&mut ex, &get("/b.txt"));
    assert!(
        matches!(a, Action::Send),
        "a hit goes straight to the send: {a:?}"
    );
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(
        field(&head, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"));
    assert_eq!(rest, &body[..]);
    assert!(matches!(next, Action::Recv));
    assert_eq!(kit.count(&kit.stats.lookups.hits), 1);
    assert_eq!(kit.count(&kit.stats.requests), 2);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut kit = Kit::new();
    kit.file("one", b"first");
    kit.file("two", b"second!");
    let mut ex = kit.exchange();
    let mut both = get("/one");
    both.extend_from_slice(&get("/two"));
    let a = kit.input(&mut ex, &both);
    let (sent, next) = kit.run(&mut ex, a);
    let (h1, rest) = split_response(&sent);
    assert_eq!(field(&h1, "content-length"), Some("5"));
    assert!(rest.starts_with(b"first"));
    let (h2, rest) = split_response(&rest[5..]);
    assert_eq!(field(&h2, "content-length"), Some("7"));
    assert_eq!(rest, b"second!");
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_missing_file_is_404_and_the_connection_stays_usable() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let (head, rest, next) = kit.ask(&mut ex, &get("/nope"));
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert_eq!(rest, b"not found\n");
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_failed_open_other_than_not_found_is_502() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/x"));
    assert!(matches!(a, Action::OpenDir { .. }));
    let a = ex.on_dir_opened(&mut kit.cx(), Err(-libc::EIO));
    let (sent, _) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 502 "));
}

#[test]
fn a_short_read_reads_the_rest_and_a_failed_read_cuts_the_connection() {
    let mut kit = Kit::new();
    kit.file("c", &object(10_000));
    let mut ex = kit.exchange();
    // Open and stat it, up to the first read.
    let a = kit.input(&mut ex, &get("/c"));
    assert!(matches!(a, Action::OpenDir { .. }));
    let f = std::fs::File::open(kit.dir.0.join("c")).unwrap();
    let a = ex.on_dir_opened(&mut kit.cx(), Ok(f));
    assert!(matches!(a, Action::StatDir { .. }));
    fill_statx(
        ex.dir_stat_buf().unwrap(),
        &std::fs::metadata(kit.dir.0.join("c")).unwrap(),
    );
    let a = ex.on_dir_stat(&mut kit.cx(), 0, |_| Ok(()));
    let Action::ReadChunk { op, .. } = a else {
        panic!("then the chunk is read: {a:?}")
    };
    assert_eq!(ex.state_name(), "reading-file");
    assert_eq!((op.offset, op.len), (0, 10_000));
    // A short read cancels the statx linked after it; the rest is read, and looked after.
    let a = ex.on_chunk_read(&mut kit.cx(), 4_000);
    assert!(matches!(a, Action::Idle), "{a:?}");
    let a = ex.on_chunk_checked(&mut kit.cx(), -libc::ECANCELED);
    let Action::ReadChunk { op: rest, .. } = a else {
        panic!("a short read is read again: {a:?}")
    };
    assert_eq!((rest.offset, rest.len), (4_000, 6_000));
    assert_eq!(rest.at, op.at.wrapping_add(4_000));
    // Either order: the check's completion first.
    assert!(matches!(
        ex.on_chunk_checked(&mut kit.cx(), -libc::ECANCELED),
        Action::Idle
    ));
    assert!(matches!(
        ex.on_chunk_read(&mut kit.cx(), -libc::EIO),
        Action::Close
    ));
    assert!(
        kit.shared.cache.meta.get("dir:/c").is_none(),
        "the description goes with it"
    );
}

#[test]
fn a_conditional_request_for_the_current_version_is_304() {
    let mut kit = Kit::new();
    kit.file("d", &object(100));
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/d"));
    let (sent, _) = kit.run(&mut ex, a);
    let (head, _) = split_response(&sent);
    let etag = field(&head, "etag").unwrap().to_owned();
    let req = format!("GET /d HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n");
    let (head, rest, next) = kit.ask(&mut ex, req.as_bytes());
    assert!(head.starts_with("HTTP/1.1 304 "), "{head}");
    assert!(rest.is_empty());
    assert!(matches!(next, Action::Recv));
}

#[test]
fn ranges_are_206_multipart_or_416() {
    let mut kit = Kit::new();
    let body = object(50_000);
    kit.file("e", &body);
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        b"GET /e HTTP/1.1\r\nHost: x\r\nRange: bytes=17000-17009\r\n\r\n",
    );
    let (sent, _) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 206 "), "{head}");
    assert_eq!(
        field(&head, "content-range"),
        Some("bytes 17000-17009/50000")
    );
    assert_eq!(rest, &body[17000..17010]);

    let a = kit.input(
        &mut ex,
        b"GET /e HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,49998-\r\n\r\n",
    );
    let (sent, _) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(
        field(&head, "content-type")
            .unwrap()
            .starts_with("multipart/byteranges; boundary=relay-test-boundary")
    );
    assert_eq!(
        field(&head, "content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        rest.len()
    );
    let text = String::from_utf8_lossy(rest);
    assert!(text.contains("Content-Range: bytes 0-1/50000"), "{text}");
    assert!(text.contains("Content-Range: bytes 49998-49999/50000"));
    assert!(text.ends_with("--relay-test-boundary--\r\n"));

    let a = kit.input(
        &mut ex,
        b"GET /e HTTP/1.1\r\nHost: x\r\nRange: bytes=60000-\r\n\r\n",
    );
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 416 "), "{head}");
    assert_eq!(field(&head, "content-range"), Some("bytes */50000"));
    assert!(rest.is_empty());
    assert!(matches!(next, Action::Recv));
}

#[test]
fn head_has_no_body_and_connection_close_closes_after_the_answer() {
    let mut kit = Kit::new();
    kit.file("f", &object(3000));
    let mut ex = kit.exchange();
    let (head, rest, next) = kit.ask(&mut ex, b"HEAD /f HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(field(&head, "content-length"), Some("3000"));
    assert!(rest.is_empty());
    assert!(matches!(next, Action::Recv));
    let a = kit.input(
        &mut ex,
        b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1.len(), 3000);
    assert!(matches!(next, Action::Close), "{next:?}");
}

#[test]
fn other_methods_on_the_directory_are_405() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, b"DELETE /f HTTP/1.1\r\nHost: x\r\n\r\n");
    let (sent, next) = kit.run(&mut ex, a);
    let (head, _) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert_eq!(field(&head, "allow"), Some("GET, HEAD"));
    assert!(matches!(next, Action::Recv));
}

#[test]
fn one_read_per_chunk_however_many_connections_want_it() {
    let mut kit = Kit::new();
    let body = object(5000);
    kit.file("shared", &body);
    // The first connection describes the file and starts reading its chunk.
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &get("/shared"));
    assert!(matches!(a, Action::OpenDir { .. }));
    let f = std::fs::File::open(kit.dir.0.join("shared")).unwrap();
    let Action::StatDir { .. } = first.on_dir_opened(&mut kit.cx(), Ok(f)) else {
        panic!()
    };
    let m = std::fs::metadata(kit.dir.0.join("shared")).unwrap();
    fill_statx(first.dir_stat_buf().unwrap(), &m);
    let Action::ReadChunk { op, check } = first.on_dir_stat(&mut kit.cx(), 0, |_| Ok(())) else {
        panic!("the first connection reads the chunk")
    };
    // A second asks meanwhile: the description is cached, the chunk is being read.
    let mut second = kit.exchange();
    let a = kit.input(&mut second, &get("/shared"));
    assert!(
        matches!(a, Action::Wait),
        "it waits on the first one's read: {a:?}"
    );
    // The read completes: the first sends, the second takes the same bytes when woken.
    let fd = op.fd;
    let n = kernel_read(op);
    let a = kit.read_done(&mut first, n, fd, check);
    let (sent, _) = kit.run(&mut first, a);
    assert_eq!(split_response(&sent).1, &body[..]);
    let (sent, _) = kit.woken(&mut second);
    assert_eq!(split_response(&sent).1, &body[..]);
    assert_eq!(
        kit.count(&kit.stats.origin_file_reads),
        1,
        "one read for both"
    );
}

#[test]
fn a_reader_that_leaves_lets_the_waiters_read_for_themselves() {
    let mut kit = Kit::new();
    let body = object(3000);
    kit.file("left", &body);
    // Describe it first so that both connections go straight to the chunk.
    let mut warm = kit.exchange();
    let a = kit.input(&mut warm, b"HEAD /left HTTP/1.1\r\nHost: x\r\n\r\n");
    let (_, next) = kit.run(&mut warm, a);
    assert!(matches!(next, Action::Recv));
    let mut reader = kit.exchange();
    let a = kit.input(&mut reader, &get("/left"));
    assert!(
        matches!(a, Action::OpenDir { .. }),
        "its body needs the file: {a:?}"
    );
    let mut waiter = kit.exchange();
    assert!(matches!(
        kit.input(&mut waiter, &get("/left")),
        Action::Wait
    ));
    // The reader's client goes: its share is settled without bytes.
    reader.on_close(&mut kit.cx());
    assert!(
        matches!(reader.poll(&mut kit.cx()), Action::Idle),
        "closed: nothing more"
    );
    let (sent, next) = kit.woken(&mut waiter);
    assert_eq!(
        split_response(&sent).1,
        &body[..],
        "it read the chunk itself"
    );
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_file_changed_under_its_reads_cuts_the_response_and_is_described_again() {
    let mut kit = Kit::new();
    let old = object(40_000);
    let path = kit.file("moving.bin", &old);
    let version = |p: &std::path::Path| {
        let m = std::fs::metadata(p).unwrap();
        crate::origin::FileStat {
            len: m.len(),
            mtime_s: m.mtime(),
            mtime_ns: m.mtime_nsec() as u32,
            ino: m.ino(),
            regular: true,
        }
        .version()
    };
    let described = version(&path);
    let mut ex = kit.exchange();
    // Described, and the first chunk read and sent whole.
    let a = kit.input(&mut ex, &get("/moving.bin"));
    let f = std::fs::File::open(&path).unwrap();
    assert!(matches!(a, Action::OpenDir { .. }));
    assert!(matches!(
        ex.on_dir_opened(&mut kit.cx(), Ok(f)),
        Action::StatDir { .. }
    ));
    fill_statx(
        ex.dir_stat_buf().unwrap(),
        &std::fs::metadata(&path).unwrap(),
    );
    let Action::ReadChunk { op, check } = ex.on_dir_stat(&mut kit.cx(), 0, |_| Ok(())) else {
        panic!("the first chunk is read")
    };
    let fd = op.fd;
    let n = kernel_read(op);
    let a = kit.read_done(&mut ex, n, fd, check);
    assert!(matches!(a, Action::Send), "{a:?}");
    // Rewritten in place: the same length and inode, other bytes, a later mtime.
    let new: Vec<u8> = old.iter().map(|b| b ^ 0x5a).collect();
    let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    w.write_all_at(&new, 0).unwrap();
    w.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    assert_ne!(version(&path), described);
    let (sent, next) = kit.run(&mut ex, a);
    assert!(matches!(next, Action::Close), "cut: {next:?}");
    let (_, body) = split_response(&sent);
    assert_eq!(
        body,
        &old[..CHUNK as usize],
        "the old first chunk, then nothing"
    );
    let stored = |index| {
        kit.shared.cache.memory.contains(&relay_cache::ChunkRef {
            object: "dir:/moving.bin",
            version: described,
            index,
        })
    };
    assert!(
        stored(0) && !stored(1),
        "the chunk read after the change is not kept"
    );
    assert!(kit.shared.cache.meta.get("dir:/moving.bin").is_none());
    assert_eq!(kit.count(&kit.stats.origin_file_changed), 1);
    // The next request describes the file again and gets it whole.
    let mut next = kit.exchange();
    let (head, body, _) = kit.ask(&mut next, &get("/moving.bin"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, new, "the new file, whole");
}

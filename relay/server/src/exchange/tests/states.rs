//! The exchange's states and every transition between them, as its trail records them
//! (`Exchange::trail`: each state entered, in order), errors and deadlines included. The
//! other test files check what each path sends (the disk tier's tests check its trail too);
//! these check which states each path goes through.

use super::disk::describe_on_disk;
use super::*;

/// The states entered since the last look.
fn trail(ex: &mut Exchange) -> Vec<&'static str> {
    std::mem::take(&mut ex.trail)
}

fn status_line(sent: &[u8]) -> String {
    let (head, _) = split_response(sent);
    head.lines().next().unwrap().to_owned()
}

/// A refused request (400) played to where the exchange lingers.
fn refused(kit: &mut Kit, ex: &mut Exchange) -> Action {
    let a = kit.input(ex, b"BAD\r\n\r\n");
    let (sent, a) = kit.run(ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 400 "));
    a
}

/// An origin that accepts connections (into its backlog) and never answers, kept while the
/// listener lives: a pass-through to it waits.
fn silent_origin() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// A pass-through (a DELETE) handed to the upstream, waiting for its answer (the kit's
/// origin must not answer: [`silent_origin`]).
fn passing(kit: &mut Kit, ex: &mut Exchange) {
    let a = kit.input(
        ex,
        format!("DELETE /x HTTP/1.1\r\nHost: {CDN}\r\n\r\n").as_bytes(),
    );
    assert!(matches!(a, Action::Wait), "{a:?}");
}

#[test]
fn a_directory_miss_opens_the_file_then_reads_each_chunk_and_a_hit_enters_no_state() {
    let mut kit = Kit::new();
    kit.file("f", &object(40_000));
    let mut ex = kit.exchange();
    let (head, body, next) = kit.ask(&mut ex, &get("/f"));
    assert!(head.starts_with("HTTP/1.1 200 ") && body == object(40_000));
    assert!(matches!(next, Action::Recv));
    // Three 16 KiB chunks: described once, then each read from the file.
    let read = ["reading-file", "ready"];
    let expected = [&["opening", "ready"][..], &read, &read, &read].concat();
    assert_eq!(trail(&mut ex), expected);
    let (head, _, _) = kit.ask(&mut ex, &get("/f"));
    assert!(head.starts_with("HTTP/1.1 200 "));
    assert!(trail(&mut ex).is_empty(), "a memory hit waits for nothing");
    // A missing file: opening, then the 404 from Ready; the connection stays.
    let (head, _, next) = kit.ask(&mut ex, &get("/nope"));
    assert!(head.starts_with("HTTP/1.1 404 "));
    assert!(matches!(next, Action::Recv));
    assert_eq!(trail(&mut ex), ["opening", "ready"]);
}

#[test]
fn a_miss_awaits_the_head_and_an_origin_failure_is_answered_from_ready() {
    let mut kit = Kit::new();
    let key = cdn_key("/h");
    kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(kit.input(&mut ex, &cdn_get("/h")), Action::Wait));
    assert_eq!(trail(&mut ex), ["awaiting-head"]);
    // A wake-up with nothing new stays.
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Wait));
    assert!(trail(&mut ex).is_empty());
    let meta = Arc::new(ObjectMeta::file(10, 4, String::new(), String::new()));
    let (fill, mut writer) = Fill::new(
        ChunkKey {
            object: Arc::from(key.as_str()),
            version: 4,
            index: 0,
        },
        10,
    );
    writer.append(b"0123456789").unwrap();
    writer.finish().unwrap();
    kit.shared
        .cache
        .inflight
        .finish_head(&key, Ok(meta), Some(fill), &kit.shared.wake);
    let (sent, next) = kit.woken(&mut ex);
    assert_eq!(split_response(&sent).1, b"0123456789");
    assert!(matches!(next, Action::Recv));
    assert_eq!(trail(&mut ex), ["ready"]);
    // The origin fails: 502 from Ready, and the connection stays.
    let (sent, next) = kit.head_fails("/h2");
    assert_eq!(status_line(&sent), "HTTP/1.1 502 Bad Gateway");
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_pass_through_collects_its_body_then_awaits_the_answer() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!("POST /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: 5\r\n\r\nhel").as_bytes(),
    );
    assert!(matches!(a, Action::Recv), "{a:?}");
    assert_eq!(trail(&mut ex), ["collecting-body"]);
    let a = kit.input(&mut ex, b"lo");
    // (The upstream's connect to nothing may already have failed: then the 502 goes out.)
    assert!(matches!(a, Action::Wait | Action::Send), "{a:?}");
    assert_eq!(trail(&mut ex)[..2], ["ready", "awaiting-pass"]);
    // Without a body: its empty body is collected at once. The origin (nothing listens)
    // fails: 502 from Ready.
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!("DELETE /x HTTP/1.1\r\nHost: {CDN}\r\n\r\n").as_bytes(),
    );
    let (mut sent, mut next) = kit.run(&mut ex, a);
    if sent.is_empty() {
        (sent, next) = kit.woken_until_sent(&mut ex);
    }
    assert_eq!(status_line(&sent), "HTTP/1.1 502 Bad Gateway");
    assert!(matches!(next, Action::Recv));
    assert_eq!(
        trail(&mut ex),
        ["collecting-body", "ready", "awaiting-pass", "ready"]
    );
}

#[test]
fn a_body_past_its_deadline_is_answered_408_then_lingers() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let head = format!("POST /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: 100\r\n\r\n");
    assert!(matches!(kit.input(&mut ex, head.as_bytes()), Action::Recv));
    let mut cx = kit.cx();
    cx.now = ex.deadline();
    let a = ex.on_deadline(&mut cx);
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(status_line(&sent), "HTTP/1.1 408 Request Timeout");
    assert!(matches!(next, Action::Linger), "{next:?}");
    assert_eq!(trail(&mut ex), ["collecting-body", "ready", "lingering"]);
}

#[test]
fn lingering_drops_input_until_the_client_closes_and_its_deadline_is_no_timeout() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let before = Instant::now();
    assert!(matches!(refused(&mut kit, &mut ex), Action::Linger));
    assert_eq!(trail(&mut ex), ["lingering"]);
    assert!(ex.deadline() >= before + LINGER_TIME);
    assert!(!ex.timeout_counts(), "its end is no timeout");
    // Input is read and dropped: never parsed, nothing answered.
    let a = kit.input(&mut ex, &get("/f"));
    assert!(matches!(a, Action::Idle), "{a:?}");
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Idle));
    assert_eq!(ex.rstart, ex.rend, "nothing kept");
    // The client closes: so does relay.
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
    ex.on_close(&mut kit.cx());
    assert_eq!(trail(&mut ex), ["closed"]);
    // ...or its deadline passes.
    let mut ex = kit.exchange();
    assert!(matches!(refused(&mut kit, &mut ex), Action::Linger));
    let mut cx = kit.cx();
    cx.now = ex.deadline();
    assert!(matches!(ex.on_deadline(&mut cx), Action::Close));
}

#[test]
fn lingering_ends_at_its_byte_bound() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    assert!(matches!(refused(&mut kit, &mut ex), Action::Linger));
    let junk = vec![b'x'; 1 << 20];
    for _ in 0..(LINGER_BYTES >> 20) - 1 {
        assert_eq!(ex.on_input(Instant::now(), &junk), Input::Kept);
        assert_eq!(
            ex.on_recv_result(junk.len() as i32, true),
            Received::Keep { rearm: false }
        );
    }
    assert_eq!(ex.on_input(Instant::now(), &junk), Input::Kept);
    assert_eq!(ex.on_recv_result(junk.len() as i32, true), Received::Close);
}

#[test]
fn without_a_multishot_receive_an_error_answer_closes_at_once() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let _ = ex.on_input(Instant::now(), b"BAD\r\n\r\n");
    let mut cx = kit.cx();
    cx.reading = false;
    let a = ex.poll(&mut cx);
    assert!(matches!(a, Action::Send));
    let n = ex.outgoing().pending();
    let mut cx = kit.cx();
    cx.reading = false;
    assert!(matches!(ex.on_sent(&mut cx, n), Action::Close));
    assert!(trail(&mut ex).is_empty(), "never lingering");
}

/// A connection read by single receives (paused for sending far ahead, or on a kernel
/// without provided-buffer rings) lingers too: each receive's bytes are dropped and the next
/// is asked for, until the client closes or the bound is reached. Closing at once would
/// reset a connection with unread input, and the reset can drop the answer.
#[test]
fn a_connection_read_by_single_receives_lingers_by_single_receives() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    fn single(kit: &mut Kit) -> Cx<'_> {
        let mut cx = kit.cx();
        cx.reading = false;
        cx.single_reads = true;
        cx
    }
    // A bad request and more behind it, filling the receive buffer.
    let room = ex.recv_room();
    let len = room.len();
    room.fill(b'x');
    room[..7].copy_from_slice(b"BAD\r\n\r\n");
    let a = ex.on_received(&mut single(&mut kit), len);
    assert!(matches!(a, Action::Send), "{a:?}");
    let n = ex.outgoing().pending();
    let a = ex.on_sent(&mut single(&mut kit), n);
    assert!(matches!(a, Action::Linger), "{a:?}");
    assert_eq!(trail(&mut ex), ["lingering"]);
    // Each receive is dropped and the next asked for (into a buffer with room again);
    // nothing is parsed or kept.
    for _ in 0..3 {
        let room = ex.recv_room();
        assert!(room.len() >= 1024);
        room[..4].copy_from_slice(b"GET ");
        let len = room.len();
        assert!(matches!(
            ex.on_received(&mut single(&mut kit), len),
            Action::Linger
        ));
        assert_eq!(ex.rstart, ex.rend, "nothing kept");
    }
    assert_eq!(ex.outgoing().pending(), 0, "nothing answered");
    // The bound ends it.
    let mut left = LINGER_BYTES;
    let mut last = Action::Linger;
    for _ in 0..100_000 {
        let len = ex.recv_room().len();
        last = ex.on_received(&mut single(&mut kit), len);
        left = left.saturating_sub(len as u64);
        if !matches!(last, Action::Linger) {
            break;
        }
    }
    assert!(matches!(last, Action::Close), "{last:?}");
    assert!(left <= 3 * 8192, "closed at the bound, not before");
}

/// An error answered while the pause's cancel of the multishot receive is still under way
/// lingers too: the cancel's completion arms the receive again, to drop what still comes.
#[test]
fn an_error_answered_while_a_pause_takes_effect_lingers() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    ex.reading = Reading::Stopping;
    let _ = ex.on_input(Instant::now(), b"BAD\r\n\r\n");
    let stopping = |kit: &mut Kit, ex: &mut Exchange, sent: Option<usize>| {
        let mut cx = kit.cx();
        cx.reading = false;
        match sent {
            Some(n) => ex.on_sent(&mut cx, n),
            None => ex.poll(&mut cx),
        }
    };
    assert!(matches!(stopping(&mut kit, &mut ex, None), Action::Send));
    let n = ex.outgoing().pending();
    let a = stopping(&mut kit, &mut ex, Some(n));
    assert!(matches!(a, Action::Linger), "{a:?}");
    assert_eq!(trail(&mut ex), ["lingering"]);
    assert_eq!(
        ex.on_recv_result(-libc::ECANCELED, false),
        Received::Keep { rearm: true }
    );
    assert!(ex.reads_in_bursts());
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
}

#[test]
fn closing_lets_go_of_what_it_waited_for_and_keeps_file_io_in_flight() {
    let (_origin, url) = silent_origin();
    let mut kit = Kit::with_origin(true, &url);
    // Awaiting a head: the fetch is let go at the close, not when the slot is released.
    let key = cdn_key("/w");
    let (pending, _) = kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(kit.input(&mut ex, &cdn_get("/w")), Action::Wait));
    let held = Arc::strong_count(&pending);
    ex.on_close(&mut kit.cx());
    assert_eq!(Arc::strong_count(&pending), held - 1);
    assert_eq!(trail(&mut ex), ["awaiting-head", "closed"]);
    // Collecting a body: its share of the pass-through budget goes back at the close.
    let held = |kit: &Kit| kit.shared.upstream.as_ref().unwrap().pass_budget.held();
    let mut ex = kit.exchange();
    let head = format!("PUT /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: 1000\r\n\r\n");
    assert!(matches!(kit.input(&mut ex, head.as_bytes()), Action::Recv));
    assert_eq!(held(&kit), 1000);
    ex.on_close(&mut kit.cx());
    assert_eq!(held(&kit), 0);
    assert_eq!(trail(&mut ex), ["collecting-body", "closed"]);
    // Awaiting a pass-through's answer.
    let mut ex = kit.exchange();
    passing(&mut kit, &mut ex);
    ex.on_close(&mut kit.cx());
    assert!(matches!(&ex.state, State::Closed(None)));
    // A file open or a disk read in flight: the memory the kernel may write stays with the
    // closed exchange until its slot is released.
    kit.file("o", b"open me");
    let mut ex = kit.exchange();
    assert!(matches!(
        kit.input(&mut ex, &get("/o")),
        Action::OpenDir { .. }
    ));
    ex.on_close(&mut kit.cx());
    assert!(matches!(&ex.state, State::Closed(Some(k)) if k.name() == "opening"));
    describe_on_disk(&kit, &cdn_key("/k"), 2, &object(5000));
    let mut ex = kit.exchange();
    assert!(matches!(
        kit.input(&mut ex, &cdn_get("/k")),
        Action::OpenDisk { .. }
    ));
    ex.on_close(&mut kit.cx());
    assert!(matches!(&ex.state, State::Closed(Some(k)) if k.name() == "reading-disk"));
    assert_eq!(trail(&mut ex), ["reading-disk", "closed"]);
    // Released: Ready, holding nothing.
    ex.release();
    assert_eq!(trail(&mut ex), ["ready"]);
    assert!(!ex.is_closed());
}

#[test]
fn a_closed_exchange_does_nothing_more_until_its_slot_starts_a_new_connection() {
    let mut kit = Kit::new();
    kit.file("c", b"closed");
    let mut ex = kit.exchange();
    ex.on_close(&mut kit.cx());
    assert!(ex.is_closed());
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Idle));
    assert!(matches!(ex.on_deadline(&mut kit.cx()), Action::Close));
    // A second close (a deadline and an error in one turn) changes nothing.
    ex.on_close(&mut kit.cx());
    assert_eq!(trail(&mut ex), ["closed", "closed"]);
    ex.release();
    ex.reset(Instant::now() + kit.timeouts.idle);
    let (head, body, _) = kit.ask(&mut ex, &get("/c"));
    assert!(head.starts_with("HTTP/1.1 200 ") && body == b"closed");
}

#[test]
fn every_wait_ends_at_its_deadline() {
    let (_origin, url) = silent_origin();
    let mut kit = Kit::with_origin(true, &url);
    // Opening a directory file, reading its chunk, a disk chunk, a pass-through's answer:
    // each closes at its deadline (its I/O is canceled by the worker); a head is answered
    // 504, then closes.
    kit.file("slow", &object(100));
    let mut waits: Vec<(&str, Exchange)> = Vec::new();
    let mut ex = kit.exchange();
    assert!(matches!(
        kit.input(&mut ex, &get("/slow")),
        Action::OpenDir { .. }
    ));
    waits.push(("opening", ex));
    describe_on_disk(&kit, &cdn_key("/dk"), 2, &object(5000));
    let mut ex = kit.exchange();
    let _ = kit.input(&mut ex, &cdn_get("/dk"));
    waits.push(("reading-disk", ex));
    kit.shared.cache.inflight.head(&cdn_key("/hd"));
    let mut ex = kit.exchange();
    let _ = kit.input(&mut ex, &cdn_get("/hd"));
    waits.push(("awaiting-head", ex));
    let mut ex = kit.exchange();
    passing(&mut kit, &mut ex);
    waits.push(("awaiting-pass", ex));
    for (name, mut ex) in waits {
        assert_eq!(ex.state_name(), name);
        let mut cx = kit.cx();
        assert!(ex.deadline() > cx.now, "{name}: not yet");
        cx.now = ex.deadline();
        let action = ex.on_deadline(&mut cx);
        if name == "awaiting-head" {
            assert!(matches!(action, Action::Send), "{name}");
            let head = String::from_utf8_lossy(&ex.outgoing().head).into_owned();
            assert!(head.starts_with("HTTP/1.1 504 "), "{head}");
        } else {
            assert!(matches!(action, Action::Close), "{name}");
        }
        assert!(ex.timeout_counts(), "{name}: a timeout");
    }
}

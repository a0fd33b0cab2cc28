//! Reading requests: deadlines, malformed and oversized heads, half-closed and pipelining clients, drains, reused slots, the single-receive path, bodies relay does not use.

use super::*;

#[test]
fn a_new_connection_waits_for_its_request_until_the_idle_deadline() {
    let mut kit = Kit::new();
    let before = Instant::now();
    let mut ex = kit.exchange();
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Recv));
    assert!(ex.deadline() >= before + kit.timeouts.idle);
    assert!(ex.drain(), "an idle connection closes at once on a drain");
}

#[test]
fn a_partial_head_waits_until_the_header_deadline_of_its_first_byte() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let before = Instant::now();
    assert!(matches!(
        kit.input(&mut ex, b"GET /a HTTP/1.1\r\nHost: x"),
        Action::Recv
    ));
    let d = ex.deadline();
    assert!(d >= before + kit.timeouts.header && d < before + kit.timeouts.idle);
    // The rest of the head does not move the deadline on while it is still partial.
    assert!(matches!(
        kit.input(&mut ex, b"\r\nAccept: */*"),
        Action::Recv
    ));
    assert_eq!(ex.deadline(), d);
}

#[test]
fn a_malformed_request_is_answered_then_the_connection_lingers() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    let before = Instant::now();
    let (sent, next) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 400 "));
    assert!(matches!(next, Action::Linger), "{next:?}");
    assert!(ex.deadline() >= before + LINGER_TIME && ex.deadline() < before + kit.timeouts.idle);
    assert!(!ex.timeout_counts(), "the end of a linger is no timeout");
    // What the client still sends is dropped until it closes.
    assert!(matches!(kit.input(&mut ex, &[b'x'; 5000]), Action::Idle));
    assert_eq!(ex.rend, ex.rstart, "dropped, not buffered");
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
}

#[test]
fn a_head_past_the_limit_is_431() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let mut req = b"GET /a HTTP/1.1\r\nHost: x\r\n".to_vec();
    while req.len() < 5000 {
        req.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let a = kit.input(&mut ex, &req);
    let (sent, next) = kit.run(&mut ex, a);
    assert!(
        sent.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );
    assert!(matches!(next, Action::Linger));
    assert_eq!(kit.count(&kit.stats.errors), 1);
}

#[test]
fn a_half_closed_client_still_gets_the_response_under_way() {
    let mut kit = Kit::new();
    kit.file("g", &object(100));
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/g"));
    // The open is in flight (phase Fill) when the client shuts its side.
    assert!(matches!(a, Action::OpenDir { .. }));
    assert_eq!(ex.on_recv_result(0, false), Received::Keep { rearm: false });
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1.len(), 100);
    // Then the next read sees the end again: nothing more to answer, so it closes.
    assert!(matches!(next, Action::Recv));
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
}

#[test]
fn a_client_sending_far_ahead_is_not_read_until_its_buffer_is_used() {
    let mut kit = Kit::new();
    kit.file("p", &object(10));
    let mut ex = kit.exchange();
    let one = get("/p");
    let burst = one.repeat(2000);
    // The first request is answered while the others pile up behind it.
    let _ = ex.on_input(Instant::now(), &burst[..4096]);
    ex.phase = Phase::Send;
    let mut paused = None;
    for (i, piece) in burst[4096..].chunks(4096).enumerate() {
        let _ = ex.on_input(Instant::now(), piece);
        match ex.on_recv_result(piece.len() as i32, true) {
            Received::Pause => {
                paused = Some(i);
                break;
            }
            r => assert_eq!(r, Received::Keep { rearm: false }),
        }
    }
    let at = paused.expect("reading stops once the receive buffer is full");
    assert!(
        at <= 2,
        "stopped at the buffer's size (8 KiB), not later: {at}"
    );
    // Completions the kernel had posted before the cancel still land...
    let upto = 4096 * (at + 2);
    let _ = ex.on_input(Instant::now(), &burst[upto..upto + 4096]);
    assert_eq!(
        ex.on_recv_result(4096, true),
        Received::Keep { rearm: false }
    );
    // ...then the cancel ends the receive, which is not armed again for now.
    assert_eq!(
        ex.on_recv_result(-libc::ECANCELED, false),
        Received::Keep { rearm: false }
    );
    assert!(
        ex.overflow.len() <= 2 * 4096,
        "held beyond the buffer: {}",
        ex.overflow.len()
    );
    // Once the response is sent, the requests it holds are answered, and only then is
    // input asked for again (the worker arms the receive).
    ex.phase = Phase::Recv;
    let held = (ex.rend - ex.rstart + ex.overflow.len()) / one.len();
    let a = ex.poll(&mut kit.cx());
    let (sent, next) = kit.run(&mut ex, a);
    let answered = sent.windows(8).filter(|w| w == b"HTTP/1.1").count();
    assert!(answered >= held - 1, "{answered} of {held}");
    assert!(matches!(next, Action::Recv), "{next:?}");
    assert!(ex.overflow.is_empty() && ex.overflow.capacity() == 0);
    // From then on it is read by single receives into what is free of its buffer.
    assert!(!ex.reads_in_bursts());
    let rest = &one[(upto + 4096) % one.len()..];
    ex.recv_room()[..rest.len()].copy_from_slice(rest);
    let a = ex.on_received(&mut kit.cx(), rest.len());
    let (sent, _) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 200 "));
}

#[test]
fn a_paused_connection_asked_for_input_before_the_cancel_ended_is_read_again() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    assert!(ex.overflow.push(b"x").is_ok());
    ex.phase = Phase::Send;
    assert_eq!(ex.on_recv_result(1, true), Received::Pause);
    ex.overflow.clear();
    // Input is asked for (the worker sees the receive still armed and waits)...
    ex.phase = Phase::Recv;
    // ...then the cancel's completion arms it again and parses.
    assert_eq!(
        ex.on_recv_result(-libc::ECANCELED, false),
        Received::Poll { rearm: false }
    );
    assert!(!ex.reads_in_bursts(), "read by single receives from now on");
}

#[test]
fn an_idle_connection_gives_its_receive_buffer_back() {
    let mut kit = Kit::new();
    kit.file("t", &object(10));
    let mut ex = kit.exchange();
    assert!(ex.rbuf.is_empty(), "none before the first bytes");
    let (head, _, next) = kit.ask(&mut ex, &get("/t"));
    assert!(head.starts_with("HTTP/1.1 200 "));
    assert!(matches!(next, Action::Recv));
    assert!(!ex.rbuf.is_empty());
    ex.trim(Instant::now());
    assert!(
        !ex.rbuf.is_empty(),
        "kept while idle for less than IDLE_TRIM"
    );
    ex.trim(Instant::now() + IDLE_TRIM);
    assert!(ex.rbuf.is_empty(), "given back");
    // The next request takes one again.
    let (head, body, _) = kit.ask(&mut ex, &get("/t"));
    assert!(head.starts_with("HTTP/1.1 200 "));
    assert_eq!(body, object(10));
    // A connection mid-request keeps it.
    let a = kit.input(&mut ex, b"GET /t HTTP/1.1\r\n");
    assert!(matches!(a, Action::Recv));
    ex.trim(Instant::now() + 2 * IDLE_TRIM);
    assert!(!ex.rbuf.is_empty());
}

#[test]
fn a_client_pipelining_past_the_overflow_limit_is_cut() {
    let mut kit = Kit::new();
    kit.file("h", &object(10));
    let mut ex = kit.exchange();
    // The receive buffer holds 8 KiB; were the kernel to go on delivering after the pause,
    // the rest would wait in the overflow, up to its limit.
    let burst = get("/h").repeat(2000);
    let mut last = Received::Keep { rearm: false };
    for piece in burst
        .chunks(4096)
        .chain(std::iter::repeat_n(&burst[..4096], 300))
    {
        let _ = ex.on_input(Instant::now(), piece);
        last = ex.on_recv_result(piece.len() as i32, true);
        if last == Received::Close {
            break;
        }
        // Not answered meanwhile: the exchange is busy (a send is in flight).
        ex.phase = Phase::Send;
    }
    assert_eq!(last, Received::Close);
    assert!(ex.flooded());
    assert!(ex.overflow.len() <= super::super::overflow::OVERFLOW_LIMIT);
}

#[test]
fn a_drain_closes_after_the_response_under_way() {
    let mut kit = Kit::new();
    kit.file("i", &object(100));
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/i"));
    assert!(!ex.drain(), "busy: it finishes its response first");
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1.len(), 100);
    assert!(matches!(next, Action::Close));
}

/// A drain that finds a connection answering nothing yet (fresh, or its head still coming)
/// closes it after its next response, not before: the request it is about to read gets an
/// answer with `Connection: close`.
#[test]
fn a_drain_before_a_request_closes_after_its_answer() {
    let mut kit = Kit::new();
    kit.file("i", &object(100));
    // Accepted as a stop began: its request comes after the drain.
    let mut ex = kit.exchange();
    let until = Instant::now() + Duration::from_millis(500);
    ex.drain_fresh(until);
    assert!(ex.deadline() <= until, "a moment to send its request");
    let a = kit.input(&mut ex, &get("/i"));
    let (sent, next) = kit.run(&mut ex, a);
    let (head, body) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{head}"
    );
    assert_eq!(body.len(), 100);
    assert!(matches!(next, Action::Close), "{next:?}");
    // Half a head when the drain begins: the rest still gets its answer.
    let mut ex = kit.exchange();
    assert!(matches!(
        kit.input(&mut ex, b"GET /i HTTP/1.1\r\nHo"),
        Action::Recv
    ));
    assert!(!ex.drain(), "a head is coming: not idle");
    let a = kit.input(&mut ex, b"st: x\r\n\r\n");
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1.len(), 100);
    assert!(matches!(next, Action::Close), "{next:?}");
}

#[test]
fn what_a_multishot_receive_ending_leads_to() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    // Between requests: more input is parsed; an end is the client gone; an error too,
    // but a dry buffer group (ENOBUFS) only needs the receive armed again.
    assert_eq!(ex.on_recv_result(10, true), Received::Poll { rearm: false });
    assert_eq!(ex.on_recv_result(10, false), Received::Poll { rearm: true });
    assert_eq!(
        ex.on_recv_result(-libc::ENOBUFS, false),
        Received::Poll { rearm: true }
    );
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
    assert_eq!(ex.on_recv_result(-libc::ECONNRESET, false), Received::Close);
    // While a send is under way, input waits for the response to end.
    ex.phase = Phase::Send;
    assert_eq!(ex.on_recv_result(10, true), Received::Keep { rearm: false });
    assert_eq!(ex.on_recv_result(10, false), Received::Keep { rearm: true });
    // Lingering: input is dropped until it ends (or its bound), then the close.
    ex.linger = Some(Linger::new(100));
    assert_eq!(ex.on_recv_result(10, false), Received::Keep { rearm: true });
    ex.linger = Some(Linger::new(0));
    assert_eq!(
        ex.on_recv_result(10, false),
        Received::Keep { rearm: false },
        "past the bound before the answer is sent: reading stops, the answer goes on"
    );
    ex.linger = None;
    ex.state = State::Lingering(Linger::new(0));
    assert_eq!(ex.on_recv_result(10, true), Received::Close);
}

#[test]
fn a_reused_slot_starts_clean() {
    let mut kit = Kit::new();
    kit.file("r", b"fresh");
    let mut ex = kit.exchange();
    // Leave it dirty: a refused request lingering, bytes half-sent, pipelined overflow.
    let a = kit.input(&mut ex, b"BAD\r\n\r\n");
    assert!(matches!(a, Action::Send));
    ex.on_head_sent_partially_for_test(3);
    assert!(ex.overflow.push(b"GET /x HTTP/1.1\r\n").is_ok());
    ex.reset(Instant::now() + kit.timeouts.idle);
    assert!(ex.linger.is_none() && ex.overflow.is_empty() && !ex.close_after);
    assert_eq!(ex.outgoing().pending(), 0);
    let (head, rest, next) = kit.ask(&mut ex, &get("/r"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(rest, b"fresh");
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_single_receive_lands_in_the_receive_buffer() {
    let mut kit = Kit::new();
    kit.file("s", b"single");
    let mut ex = kit.exchange();
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Recv));
    let req = get("/s");
    ex.recv_room()[..req.len()].copy_from_slice(&req);
    let a = ex.on_received(&mut kit.cx(), req.len());
    let (sent, _) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1, b"single");
}

#[test]
fn a_long_unused_request_body_ends_the_connection_after_the_answer() {
    let mut kit = Kit::new();
    kit.file("u", b"ok");
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!(
            "GET /u HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            DISCARD_MAX + 1
        )
        .as_bytes(),
    );
    let (sent, next) = kit.run(&mut ex, a);
    let (head, _) = split_response(&sent);
    assert_eq!(field(&head, "connection"), Some("close"), "{head}");
    assert!(matches!(next, Action::Linger), "{next:?}");
    // Without input being read, a linger is a close.
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, b"BAD\r\n\r\n");
    let mut cx = kit.cx();
    cx.reading = false;
    assert!(matches!(a, Action::Send));
    let [h, b] = ex.outgoing().parts();
    let n = h.len() + b.len();
    assert!(matches!(ex.on_sent(&mut cx, n), Action::Close));
}

#[test]
fn requests_longer_than_the_first_receive_buffer_grow_it_in_place() {
    let mut kit = Kit::new();
    kit.file("g", &object(10));
    // Two requests of 3,000 bytes each: more than the 4 KiB a buffer starts with.
    let one = format!(
        "GET /g HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(2950)
    );
    let two = one.repeat(2);
    // In the pieces a multishot receive brings...
    let mut ex = kit.exchange();
    let mut sent = Vec::new();
    for piece in two.as_bytes().chunks(1500) {
        let a = kit.input(&mut ex, piece);
        sent.extend(kit.run(&mut ex, a).0);
    }
    assert_eq!(
        count_responses(&sent),
        2,
        "{}",
        String::from_utf8_lossy(&sent)
    );
    assert_eq!(
        ex.rbuf.len(),
        4096,
        "each answered before the next came: no need to grow"
    );
    // Both at once: it grows, keeping what it holds.
    let a = kit.input(&mut ex, two.as_bytes());
    let (sent, _) = kit.run(&mut ex, a);
    assert_eq!(count_responses(&sent), 2);
    assert_eq!(ex.rbuf.len(), 8192, "grown to its full size");
    // ...and by single receives, which never get an empty room.
    let mut ex = kit.exchange();
    let mut at = 0;
    let mut sent = Vec::new();
    let mut a = ex.poll(&mut kit.cx());
    while at < two.len() {
        assert!(matches!(a, Action::Recv), "{a:?}");
        let room = ex.recv_room();
        assert!(!room.is_empty());
        let n = room.len().min(two.len() - at);
        room[..n].copy_from_slice(&two.as_bytes()[at..at + n]);
        at += n;
        a = ex.on_received(&mut kit.cx(), n);
        let (more, next) = kit.run(&mut ex, a);
        sent.extend(more);
        a = next;
    }
    assert_eq!(count_responses(&sent), 2);
}

fn count_responses(sent: &[u8]) -> usize {
    sent.windows(13).filter(|w| w == b"HTTP/1.1 200 ").count()
}

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
fn a_client_pipelining_past_the_overflow_limit_is_cut() {
    let mut kit = Kit::new();
    kit.file("h", &object(10));
    let mut ex = kit.exchange();
    // The receive buffer holds 8 KiB; the rest waits in the overflow, up to its limit.
    let burst = get("/h").repeat(2000);
    let mut last = Received::Keep { rearm: false };
    for piece in burst
        .chunks(4096)
        .chain(std::iter::repeat_n(&burst[..4096], 300))
    {
        ex.on_input(Instant::now(), piece);
        last = ex.on_recv_result(piece.len() as i32, true);
        if last == Received::Close {
            break;
        }
        // Not answered meanwhile: the exchange is busy (a send is in flight).
        ex.phase = Phase::Send;
    }
    assert_eq!(last, Received::Close);
    assert!(ex.overflow.len() > OVERFLOW_LIMIT);
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
    ex.linger = Some(Linger {
        left: 0,
        shut: false,
    });
    assert_eq!(
        ex.on_recv_result(10, false),
        Received::Keep { rearm: false },
        "past the bound before the answer is sent: reading stops, the answer goes on"
    );
    ex.linger = Some(Linger {
        left: 0,
        shut: true,
    });
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
    ex.overflow.extend_from_slice(b"GET /x HTTP/1.1\r\n");
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

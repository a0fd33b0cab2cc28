//! Pass-through: request bodies bounded, 100-continue, an origin that fails.

use super::*;

#[test]
fn pass_through_bodies_are_bounded_and_expect_continue_is_answered() {
    let mut kit = Kit::new();
    // Too long to collect: 413, and the connection lingers.
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!(
            "POST /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: {}\r\n\r\n",
            PASS_BODY_LIMIT + 1
        )
        .as_bytes(),
    );
    let (sent, next) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 413 "));
    assert!(matches!(next, Action::Linger));
    // More than the pass-through budget (256 KiB here) holds: 503.
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!("POST /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: 300000\r\n\r\n").as_bytes(),
    );
    let (sent, _) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 503 "));
    // A client that waits for 100 Continue gets it, then its body is collected.
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!(
            "PUT /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(matches!(a, Action::SendNow(b) if b == CONTINUE), "{a:?}");
    assert!(
        matches!(ex.poll(&mut kit.cx()), Action::Recv),
        "waits for the body"
    );
    assert_eq!(ex.state_name(), "collecting-body");
    let a = kit.input(&mut ex, b"hello");
    assert!(
        matches!(a, Action::Wait),
        "handed over, it waits for the answer: {a:?}"
    );
    assert_eq!(ex.state_name(), "awaiting-pass");
}

#[test]
fn a_pass_through_whose_origin_fails_is_answered_with_its_status() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    // The test's origin address has nothing listening: the upstream's connect fails.
    let a = kit.input(
        &mut ex,
        format!("DELETE /x HTTP/1.1\r\nHost: {CDN}\r\n\r\n").as_bytes(),
    );
    assert!(matches!(a, Action::Wait), "{a:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (sent, next) = loop {
        std::thread::sleep(Duration::from_millis(10));
        let (sent, next) = kit.woken(&mut ex);
        if !sent.is_empty() || Instant::now() > deadline {
            break (sent, next);
        }
        assert!(matches!(next, Action::Wait));
    };
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert_eq!(rest, b"upstream failed\n");
    assert!(matches!(next, Action::Recv));
}

/// A chunked body's memory doubles as it grows but never past the most a body may hold:
/// what it reserves of the pass-through budget (and its client's share) stays within it.
#[test]
fn a_collected_body_grows_by_doubling_within_its_limit() {
    let mut body = Vec::new();
    let mut capacities = Vec::new();
    for _ in 0..333 {
        super::super::types::extend_within(&mut body, &[7; 3000], 1_000_000);
        if capacities.last() != Some(&body.capacity()) {
            capacities.push(body.capacity());
        }
    }
    assert_eq!(body.len(), 999_000);
    assert!(body.iter().all(|&b| b == 7));
    assert_eq!(capacities.last(), Some(&1_000_000), "{capacities:?}");
    assert!(
        capacities.len() < 12,
        "doubling, not a piece at a time: {capacities:?}"
    );
}

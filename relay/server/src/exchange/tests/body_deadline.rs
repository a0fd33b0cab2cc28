//! A pass-through's request body held to its deadline (`collect`): the pause between its
//! bytes, and the rate it must average after its grace. The kit gives 5 s and 1 KiB/s.

use super::*;

const HEAD: &str = "POST /up HTTP/1.1\r\nHost: cdn.test\r\nContent-Length: 100000\r\n\r\n";

/// Bytes received at `now` (a multishot receive), and the action they lead to.
fn feed(kit: &mut Kit, ex: &mut Exchange, now: Instant, bytes: &[u8]) -> Action {
    let mut cx = kit.cx();
    cx.now = now;
    let _ = ex.on_input(now, bytes);
    match ex.on_recv_result(bytes.len() as i32, true) {
        Received::Poll { .. } => ex.poll(&mut cx),
        _ => Action::Idle,
    }
}

/// The deadline passes at `now`: what the exchange sends, and where it stops.
fn expire(kit: &mut Kit, ex: &mut Exchange, now: Instant) -> (Vec<u8>, Action) {
    let mut cx = kit.cx();
    cx.now = now;
    let a = ex.on_deadline(&mut cx);
    kit.run(ex, a)
}

fn held(kit: &Kit) -> u64 {
    kit.shared.upstream.as_ref().unwrap().pass_budget.held()
}

/// A byte a second restarts the pause each time, but not the rate: the body is cut at its
/// grace plus what its few bytes earned, 408, and its reservation goes back.
#[test]
fn a_trickled_body_is_cut_by_its_rate() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let t0 = Instant::now();
    let a = feed(&mut kit, &mut ex, t0, format!("{HEAD}x").as_bytes());
    assert!(matches!(a, Action::Recv), "{a:?}");
    assert_eq!(ex.state_name(), "collecting-body");
    assert_eq!(held(&kit), 100_000);
    for s in 1..5 {
        let a = feed(&mut kit, &mut ex, t0 + Duration::from_secs(s), b"x");
        assert!(matches!(a, Action::Recv), "{a:?}");
        // 5 s of grace and s + 1 bytes at 1 KiB/s: the pause (s + 5 s) is later.
        let earned = Duration::from_micros((s + 1) * 1_000_000 / 1024);
        let by_rate = t0 + Duration::from_secs(5) + earned;
        assert!(
            ex.deadline() <= by_rate,
            "byte {s}: the pause restarted the deadline"
        );
        assert!(ex.deadline() > t0 + Duration::from_secs(5));
    }
    let at = ex.deadline();
    let (sent, next) = expire(&mut kit, &mut ex, at);
    assert!(
        sent.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&sent)
    );
    assert!(matches!(next, Action::Linger), "{next:?}");
    assert_eq!(held(&kit), 0, "the reservation went back with the body");
    assert_eq!(kit.stats.made_up.counted(408, "body_too_slow"), 1);
}

/// A body that came fast and then stopped is cut at the longest pause after its last byte
/// (its rate would give it far longer).
#[test]
fn a_paused_body_is_cut_at_the_pause() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let t0 = Instant::now();
    let a = feed(&mut kit, &mut ex, t0, HEAD.as_bytes());
    assert!(matches!(a, Action::Recv));
    let t1 = t0 + Duration::from_millis(300);
    let a = feed(&mut kit, &mut ex, t1, &[b'y'; 60_000]);
    assert!(matches!(a, Action::Recv));
    assert_eq!(ex.deadline(), t1 + Duration::from_secs(5));
    let at = ex.deadline();
    let (sent, next) = expire(&mut kit, &mut ex, at);
    assert!(sent.starts_with(b"HTTP/1.1 408 "));
    assert!(matches!(next, Action::Linger));
    assert_eq!(held(&kit), 0);
    assert_eq!(kit.stats.made_up.counted(408, "body_timeout"), 1);
}

/// A body at the rate, pausing less than the longest pause, is collected whole and handed
/// over; without a rate (0), only the pause applies however slow the body.
#[test]
fn a_body_within_its_deadline_is_collected_and_the_rate_may_be_off() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let t0 = Instant::now();
    let _ = feed(&mut kit, &mut ex, t0, HEAD.as_bytes());
    let mut a = Action::Idle;
    for s in 1..=10u64 {
        a = feed(
            &mut kit,
            &mut ex,
            t0 + Duration::from_secs(s * 3),
            &[b'z'; 10_000],
        );
        if s < 10 {
            assert!(matches!(a, Action::Recv), "{a:?}");
            assert!(ex.deadline() > t0 + Duration::from_secs(s * 3 + 4));
        }
    }
    // Handed over whole: it waits for the answer (or the test's origin, which refuses
    // connections, has already answered 502).
    match a {
        Action::Wait => assert_eq!(ex.state_name(), "awaiting-pass"),
        Action::Send => assert!(ex.outgoing().parts()[0].starts_with(b"HTTP/1.1 502 ")),
        a => panic!("{a:?}"),
    }
    // No rate: a byte every 4 s lives on, each restarting the 5 s pause.
    kit.timeouts.body_min_rate = 0;
    let mut ex = kit.exchange();
    let _ = feed(&mut kit, &mut ex, t0, HEAD.as_bytes());
    for s in 1..20u64 {
        let now = t0 + Duration::from_secs(s * 4);
        let _ = feed(&mut kit, &mut ex, now, b"x");
        assert_eq!(ex.deadline(), now + Duration::from_secs(5));
    }
}

/// A deadline that passes anywhere else (the idle wait between requests) closes as before,
/// and so does a body's read without a multishot receive (its receive in flight would land
/// under an answer); the reservation goes back as the connection is let go.
#[test]
fn other_deadlines_close() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let (sent, next) = expire(&mut kit, &mut ex, Instant::now());
    assert!(sent.is_empty());
    assert!(matches!(next, Action::Close));
    let mut ex = kit.exchange();
    let t0 = Instant::now();
    let _ = feed(&mut kit, &mut ex, t0, HEAD.as_bytes());
    assert_eq!(held(&kit), 100_000);
    let mut cx = kit.cx();
    cx.now = t0 + Duration::from_secs(6);
    cx.reading = false;
    assert!(matches!(ex.on_deadline(&mut cx), Action::Close));
    ex.on_close(&mut cx);
    ex.release();
    assert_eq!(held(&kit), 0);
}

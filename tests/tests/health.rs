//! An HTTP origin's passive health as clients can see it: only requests that cannot reach
//! the origin mark it down; a URL that answers 5xx, stalls, answers garbage or closes its
//! connection unanswered (a handler that crashed) fails only its own requests.

use relay_tests::Relay;
use relay_tests::client::Client;
use relay_tests::origin::{Object, Origin};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One origin at `address`: two failed requests mark it down for a minute; a head is
/// waited for 300 ms, and a request is tried twice.
fn config(address: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[cache]\nchunk_size = 65536\n\
         memory_bytes = 16777216\n\n[origin]\n\n[[origin.http]]\nurl = \"http://{address}\"\n\
         first_byte_timeout_ms = 300\nconnect_timeout_ms = 300\nretries = 1\n\
         down_after_failures = 2\ndown_ms = 60000\n\n[admin]\nenabled = false\n"
    )
}

fn get(relay: &Relay, path: &str) -> relay_tests::client::Response {
    Client::connect(relay.addr).get(path)
}

#[test]
fn a_url_that_fails_does_not_take_its_origin_down_for_other_urls() {
    let origin = Origin::start();
    let mut broken = Object::new(b"oops".to_vec(), "b");
    broken.status = 500;
    broken.cache_control = Some("no-store".into());
    origin.put("/broken", broken);
    let mut slow = Object::new(b"late".to_vec(), "s");
    slow.delay_ms = 1500;
    origin.put("/slow", slow);
    let mut garbage = Object::new(Vec::new(), "g");
    garbage.raw = Some(b"SPAM SPAM SPAM\r\n\r\n".to_vec());
    origin.put("/garbage", garbage);
    let mut crash = Object::new(Vec::new(), "c");
    crash.raw = Some(Vec::new());
    origin.put("/crash", crash);
    origin.put("/ok", Object::new(b"fine".to_vec(), "o"));
    // Each on a relay of its own: any one of them used to take the origin down.
    // (The 500 is relayed as the origin answered it.)
    for (path, status) in [
        ("/broken", 500),
        ("/slow", 504),
        ("/garbage", 502),
        ("/crash", 502),
    ] {
        let relay = Relay::start(&config(&origin.addr.to_string()));
        // Any client can ask for it as often as it likes; each request fails.
        for _ in 0..3 {
            let t0 = Instant::now();
            assert_eq!(get(&relay, path).status, status, "{path}");
            assert!(t0.elapsed() < Duration::from_secs(3));
        }
        let r = get(&relay, "/ok");
        assert_eq!((r.status, &r.body[..]), (200, &b"fine"[..]), "after {path}");
        assert!(!relay.wait_log("marked down", Duration::from_millis(100)));
    }
}

#[test]
fn an_origin_that_refuses_connections_is_marked_down_and_not_asked() {
    // Nothing listens on this port (bound then dropped).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = dead.local_addr().unwrap();
    drop(dead);
    let relay = Relay::start(&config(&address.to_string()));
    // Two requests (two attempts each) that cannot connect: down.
    assert_eq!(get(&relay, "/a").status, 502);
    assert!(
        !relay.wait_log("marked down", Duration::from_millis(100)),
        "one request, one failure"
    );
    assert_eq!(get(&relay, "/b").status, 502);
    assert!(relay.wait_log("marked down", Duration::from_secs(2)));
    // Something listens there now, but a down origin is not asked.
    let back = std::net::TcpListener::bind(address).unwrap();
    back.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    assert_eq!(get(&relay, "/c").status, 502);
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "answered without trying"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(back.accept().is_err(), "the down origin was asked");
}

/// An origin given `max_connections` fetch slots, with a head waited for `first_byte_ms`.
fn slotted(address: &str, slots: usize, first_byte_ms: u64) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = 65536\n\
         memory_bytes = 16777216\n\n[origin]\n\n[[origin.http]]\nurl = \"http://{address}\"\n\
         first_byte_timeout_ms = {first_byte_ms}\nretries = 0\nmax_connections = {slots}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// Slow misses of distinct objects, `n` at once; their answers.
fn slow_misses(origin: &Origin, relay: &Relay, n: usize, delay_ms: u64) -> Vec<(u16, Vec<u8>)> {
    for i in 0..n {
        let mut o = Object::new(format!("object {i}").into_bytes(), &format!("e{i}"));
        o.delay_ms = delay_ms;
        origin.put(&format!("/slot{i}"), o);
    }
    std::thread::scope(|s| {
        let asks: Vec<_> = (0..n)
            .map(|i| s.spawn(move || get(relay, &format!("/slot{i}"))))
            .collect();
        asks.into_iter()
            .map(|a| {
                let r = a.join().unwrap();
                (r.status, r.body)
            })
            .collect()
    })
}

/// Cache fetches to one origin are bounded by its `max_connections`: misses past it wait
/// for a slot and are then answered whole; a miss that gets no slot within the first-byte
/// timeout is answered 504, as a slow origin would be, and counted.
#[test]
fn cache_fetches_to_an_origin_wait_for_its_fetch_slots() {
    let origin = Origin::start();
    let addr = origin.url().trim_start_matches("http://").to_string();
    // Two slots, six misses of 300 ms each: four wait, all are answered.
    let relay = Relay::start(&slotted(&addr, 2, 5000));
    let got = slow_misses(&origin, &relay, 6, 300);
    for (i, (status, body)) in got.iter().enumerate() {
        assert_eq!(*status, 200, "/slot{i}");
        assert_eq!(body, format!("object {i}").as_bytes());
    }
    assert_eq!(
        relay.metric("relay_upstream_fetch_slot_waits_total"),
        Some(4.0)
    );
    assert_eq!(
        relay.metric("relay_upstream_fetch_slot_timeouts_total"),
        Some(0.0)
    );
    drop(relay);
    // One slot, held about 1.2 s by a fetch whose body the origin sends slowly (its head at
    // once): the two misses asked just after it get no slot within 400 ms and are
    // answered 504; the first is answered whole.
    let relay = Relay::start(&slotted(&addr, 1, 400));
    origin.put("/held", Object::new(vec![b'h'; 12_000], "h"));
    origin.behaviour.piece_bytes.store(1000, Ordering::Relaxed);
    origin
        .behaviour
        .piece_delay_ms
        .store(100, Ordering::Relaxed);
    let held = std::thread::spawn({
        let relay_addr = relay.addr;
        move || Client::connect(relay_addr).get("/held")
    });
    std::thread::sleep(Duration::from_millis(150));
    let got = slow_misses(&origin, &relay, 2, 0);
    assert!(got.iter().all(|(status, _)| *status == 504), "{got:?}");
    let held = held.join().unwrap();
    assert_eq!((held.status, held.body.len()), (200, 12_000));
    assert_eq!(
        relay.metric("relay_upstream_fetch_slot_timeouts_total"),
        Some(2.0)
    );
}

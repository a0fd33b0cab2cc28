//! `server.drain_ms`: after SIGTERM the relay goes on serving, new connections too, with
//! `/healthz` at 503 so that load balancers and the site's steering send clients elsewhere,
//! then stops; a second SIGTERM cuts the drain short.

use relay_tests::client::Client;
use relay_tests::{Relay, TempDir, config};
use std::time::{Duration, Instant};

fn healthz(relay: &Relay) -> u16 {
    Client::connect(relay.admin.expect("admin listener"))
        .get("/healthz")
        .status
}

fn draining(drain_ms: u64, www: &TempDir) -> Relay {
    let cfg = config("127.0.0.1:0", www.path(), 65536, 8 << 20)
        .replace("[server]\n", &format!("[server]\ndrain_ms = {drain_ms}\n"));
    Relay::start(&cfg)
}

fn wait_for(what: impl Fn() -> bool, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sigterm_drains_serving_with_healthz_at_503_then_stops() {
    let www = TempDir::new("drain-www");
    www.write("a.txt", b"hello\n");
    let relay = draining(1500, &www);
    assert_eq!(healthz(&relay), 200);
    relay.signal(libc::SIGTERM);
    let sent = Instant::now();
    assert!(wait_for(|| healthz(&relay) == 503, Duration::from_secs(1)));
    // Still serving, on a new connection, while draining.
    let mut c = Client::connect(relay.addr);
    let r = c.get("/a.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello\n"[..]));
    assert!(relay.wait_log("draining for 1500 ms", Duration::from_secs(1)));
    assert!(relay.wait_log("relay: stopped", Duration::from_secs(10)));
    let took = sent.elapsed();
    eprintln!("SIGTERM to stopped with drain_ms = 1500: {took:?}");
    assert!(took >= Duration::from_millis(1400), "{took:?}");

    // A second SIGTERM ends a long drain at once.
    let relay = draining(60_000, &www);
    relay.signal(libc::SIGTERM);
    assert!(wait_for(|| healthz(&relay) == 503, Duration::from_secs(1)));
    let second = Instant::now();
    relay.signal(libc::SIGTERM);
    assert!(relay.wait_log("relay: stopped", Duration::from_secs(5)));
    assert!(second.elapsed() < Duration::from_secs(5));
}

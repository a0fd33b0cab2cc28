//! An HTTP origin's passive health as clients can see it: only requests that cannot reach
//! the origin mark it down; a URL that answers 5xx, stalls or answers garbage fails only
//! its own requests.

use relay_tests::Relay;
use relay_tests::client::Client;
use relay_tests::origin::{Object, Origin};
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
    origin.put("/ok", Object::new(b"fine".to_vec(), "o"));
    // Each on a relay of its own: any one of them used to take the origin down.
    // (The 500 is relayed as the origin answered it.)
    for (path, status) in [("/broken", 500), ("/slow", 504), ("/garbage", 502)] {
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

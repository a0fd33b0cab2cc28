//! Answers relay makes up itself: each logs one line saying who asked for what, from which
//! origin, and why, and counts in `relay_errors_total{status,reason}`; the lines are
//! bounded however fast a client sends garbage.

use relay_tests::client::Client;
use relay_tests::origin::Origin;
use relay_tests::{Relay, TempDir};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// A port nothing listens on (bound, then let go).
/// A loopback port nothing listens on, held (bound, never listening) by the socket
/// returned, so that no one else (the relay under test, say) is given it meanwhile:
/// connections to it are refused.
fn dead_port() -> (socket2::Socket, u16) {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let port = s
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("an inet address")
        .port();
    (s, port)
}

/// An origin answering every request with both `Transfer-Encoding` and `Content-Length`.
fn te_cl_origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.read(&mut [0u8; 4096]);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n",
            );
        }
    });
    port
}

fn relay(slow: &Origin) -> (Relay, u16, TempDir, socket2::Socket) {
    let dir = TempDir::new("errors");
    let (held, dead) = dead_port();
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = 65536\n\
         memory_bytes = 16777216\n\n[origin]\ndirectory = \"{}\"\n",
        dir.path().display()
    );
    for (prefix, address) in [
        ("/dead", format!("127.0.0.1:{dead}")),
        ("/slow", slow.addr.to_string()),
        ("/te-cl", format!("127.0.0.1:{}", te_cl_origin())),
    ] {
        config.push_str(&format!(
            "\n[[origin.http]]\nurl = \"http://{address}\"\nprefix = \"{prefix}\"\n\
             first_byte_timeout_ms = 300\nretries = 0\ndown_after_failures = 100\n"
        ));
    }
    config.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    (Relay::start(&config), dead, dir, held)
}

#[test]
fn each_made_up_answer_logs_why_and_counts_by_status_and_reason() {
    let slow = Origin::start();
    slow.put("/slow/a", relay_tests::origin::Object::greeting());
    slow.behaviour
        .head_delay_ms
        .store(3000, std::sync::atomic::Ordering::Relaxed);
    let (relay, dead, _dir, _held) = relay(&slow);
    let mut c = Client::connect(relay.addr);
    let r = c.get("/dead/x");
    assert_eq!(r.status, 502);
    let line = format!(
        "answered 502: client 127.0.0.1:{}, GET test/dead/x, origin 127.0.0.1:{dead}: \
         upstream could not be reached",
        c.local_port()
    );
    assert!(relay.wait_log(&line, Duration::from_secs(5)), "{line}");
    let r = c.get("/slow/a");
    assert_eq!(r.status, 504);
    let line = "GET test/slow/a, origin 127.0.0.1:";
    assert!(relay.wait_log(line, Duration::from_secs(5)), "{line}");
    assert!(relay.wait_log(
        "upstream timed out after 300 ms (first byte)",
        Duration::from_secs(5)
    ));
    let r = c.get("/te-cl/y");
    assert_eq!(r.status, 502);
    assert!(relay.wait_log(
        "GET test/te-cl/y, origin 127.0.0.1:",
        Duration::from_secs(5)
    ));
    assert!(relay.wait_log(
        "upstream answer's framing is invalid",
        Duration::from_secs(5)
    ));
    let r = c.get("/not-there");
    assert_eq!(r.status, 404);
    assert!(relay.wait_log(
        "GET test/not-there, origin directory: file not found",
        Duration::from_secs(5)
    ));
    let mut bad = Client::connect(relay.addr);
    bad.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(bad.read_response(false).expect("an answer").status, 400);
    assert!(relay.wait_log("answered 400: client 127.0.0.1:", Duration::from_secs(5)));
    assert!(relay.wait_log(
        "request unparsed, origin -: bad request: more than one Host field",
        Duration::from_secs(5)
    ));

    let mut a = Client::connect(relay.admin.expect("admin listener"));
    let text = String::from_utf8(a.get("/metrics").body).expect("text");
    assert!(text.contains("# TYPE relay_errors_total counter"), "{text}");
    for (labels, n) in [
        ("status=\"502\",reason=\"connect\"", 1.0),
        ("status=\"504\",reason=\"first_byte_timeout\"", 1.0),
        ("status=\"502\",reason=\"framing\"", 1.0),
        ("status=\"404\",reason=\"not_found\"", 1.0),
        ("status=\"400\",reason=\"bad_request\"", 1.0),
    ] {
        let name = format!("relay_errors_total{{{labels}}}");
        assert_eq!(
            relay_tests::metric_in(&text, &name),
            Some(n),
            "{name} in:\n{text}"
        );
    }
}

#[test]
fn a_flood_of_bad_requests_logs_a_bounded_number_of_lines() {
    let slow = Origin::start();
    let (relay, _, _dir, _held) = relay(&slow);
    let started = std::time::Instant::now();
    for _ in 0..400 {
        let mut bad = Client::connect(relay.addr);
        bad.send(b"GET / HTTP/1.1\r\n\r\n");
        let _ = bad.read_response(false);
    }
    assert!(
        relay.wait_log("error answer lines not logged", Duration::from_secs(5)),
        "the lines left out are reported"
    );
    let seconds = started.elapsed().as_secs() + 2;
    let lines = relay
        .log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains("answered 400"))
        .count() as u64;
    // Two workers, each logging at most 20 lines a second (`relay_server::errors`).
    let bound = 2 * 20 * seconds;
    assert!(lines <= bound, "{lines} lines in {seconds} s");
    let mut a = Client::connect(relay.admin.expect("admin listener"));
    let text = String::from_utf8(a.get("/metrics").body).expect("text");
    assert_eq!(
        relay_tests::metric_in(
            &text,
            "relay_errors_total{status=\"400\",reason=\"bad_request\"}"
        ),
        Some(400.0),
        "every answer counted"
    );
}

//! Receive backpressure against legitimate clients: connections that send far ahead and
//! never read must not get good clients cut, and connections that were paused give their
//! receive buffer back once idle.

use relay_tests::client::Client;
use relay_tests::{Relay, TempDir, config, pattern};
use std::io::Write;
use std::time::Duration;

const CHUNK: u64 = 64 * 1024;

fn metric(relay: &Relay, name: &str) -> u64 {
    let admin = relay.admin.expect("admin");
    let text = String::from_utf8(Client::connect(admin).get("/metrics").body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn start() -> (Relay, TempDir) {
    let origin = TempDir::new("origin");
    origin.write("small.txt", b"hello\n");
    origin.write("big.bin", &pattern(5 * CHUNK as usize, 1));
    let cfg = config("127.0.0.1:0", origin.path(), CHUNK, 64 << 20).replace(
        "workers = 2\n",
        "workers = 2\nmax_connections_per_client = 0\n",
    );
    (Relay::start(&cfg), origin)
}

/// One client address opens a few hundred connections that each send 1 MB of pipelined
/// GETs and never read: each pause lets ~120 KiB into the overflow (one multishot burst),
/// so ~65 of them hold a worker's whole 8 MiB. From then on any other client that sends
/// more than its receive buffer (20 KiB) while its answer is under way is cut as a flood:
/// here a GET carrying a 30 KB body, and 64 KiB of pipelined GETs.
#[test]
fn good_clients_are_not_cut_while_stalled_senders_hold_the_worker_bound() {
    let (relay, _o) = start();
    let mut bad = Vec::new();
    for _ in 0..400 {
        let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
        s.set_nonblocking(true).unwrap();
        let req = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".repeat((1 << 20) / 36);
        let mut at = 0;
        while let Ok(n) = s.write(&req[at..]) {
            at += n;
            if at == req.len() {
                break;
            }
        }
        bad.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    eprintln!(
        "overflow held {} KiB; floods cut {}",
        metric(&relay, "relay_input_overflow_bytes") >> 10,
        metric(&relay, "relay_connections_flood_cut_total")
    );
    let (mut body_failed, mut pipe_failed) = (0, 0);
    for _ in 0..10 {
        let mut c = Client::connect(relay.addr);
        let mut req = b"GET /big.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 30000\r\n\r\n".to_vec();
        req.extend_from_slice(&[b'x'; 30000]);
        c.send(&req);
        let a = c.read_response(false).map(|r| r.status);
        let _ = c.try_send(b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let b = c.read_response(false).map(|r| r.status);
        body_failed += usize::from(a != Some(200) || b != Some(200));

        let mut c = Client::connect(relay.addr);
        let one = b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n";
        let k = (64 << 10) / one.len();
        let mut req = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        req.extend_from_slice(&one.repeat(k));
        c.send(&req);
        let ok = (0..=k)
            .take_while(|_| c.read_response(false).is_some_and(|r| r.status == 200))
            .count();
        pipe_failed += usize::from(ok != k + 1);
    }
    drop(bad);
    assert_eq!(
        (body_failed, pipe_failed),
        (0, 0),
        "good clients cut (GET with body, pipelined) of 10 each"
    );
}

/// Connections that were paused once (sent > 20 KiB ahead of an answer) and then idle keep
/// their receive buffer for as long as they live: `sweep_deadlines` trims only connections
/// with a multishot receive, and a paused one never gets one back.
#[test]
fn idle_connections_that_were_paused_give_their_receive_buffer_back() {
    let (relay, _o) = start();
    let conns = 1500;
    let crowd = |ahead: usize| {
        let one = b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n";
        let k = ahead / one.len();
        let mut req = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        req.extend_from_slice(&one.repeat(k));
        (0..conns)
            .map(|_| {
                let mut c = Client::connect(relay.addr);
                c.send(&req);
                for _ in 0..=k {
                    assert_eq!(c.read_response(false).unwrap().status, 200);
                }
                c
            })
            .collect::<Vec<_>>()
    };
    std::thread::sleep(Duration::from_secs(1));
    let base = relay.rss();
    let paused0 = metric(&relay, "relay_connection_reads_paused_total");
    let a = crowd(12 << 10); // fits the receive buffer: never paused
    std::thread::sleep(Duration::from_secs(3));
    let idle_a = relay.rss();
    let b = crowd(64 << 10); // paused
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..8 {
        drop(Client::connect(relay.addr)); // a close: workers ask the allocator
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle_b = relay.rss();
    let paused = metric(&relay, "relay_connection_reads_paused_total") - paused0;
    let (per_a, per_b) = (
        idle_a.saturating_sub(base) / conns as u64,
        idle_b.saturating_sub(idle_a) / conns as u64,
    );
    eprintln!("idle per connection: never paused {per_a} B, paused {per_b} B ({paused} paused)");
    assert_eq!(paused, conns as u64);
    assert!(
        per_b < per_a + 4096,
        "an idle connection that was paused holds {per_b} B, one that was not {per_a} B"
    );
    drop((a, b));
}

/// A connection paused for sending far ahead whose stream then turns bad gets its 400 whole
/// and a clean end: relay lingers on it by single receives, dropping what the client still
/// sends, instead of closing with unread input (a reset, which can destroy the answer
/// before the client reads it).
#[test]
fn a_paused_connection_gets_its_error_answer_whole_and_a_clean_end() {
    use std::io::Read;
    let (relay, _o) = start();
    let paused0 = metric(&relay, "relay_connection_reads_paused_total");
    let one = b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let k = (64 << 10) / one.len();
    let mut req = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    req.extend_from_slice(&one.repeat(k));
    req.extend_from_slice(b"BAD\r\n\r\n");
    // What a broken client goes on sending after its bad request.
    req.extend_from_slice(&[b'x'; 256 << 10]);
    let s = std::net::TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let sent = w.write_all(&req);
        let _ = w.shutdown(std::net::Shutdown::Write);
        sent
    });
    // Read nothing for a while: relay's answer to the first request fills the window, and
    // the requests behind it pause the connection.
    std::thread::sleep(Duration::from_millis(500));
    let mut got = Vec::new();
    let mut r = s;
    let end = loop {
        let mut buf = [0u8; 65536];
        match r.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let text = String::from_utf8_lossy(&got);
    let ok = text.matches("HTTP/1.1 200 OK\r\n").count();
    let bad = text.matches("HTTP/1.1 400 ").count();
    eprintln!("200s {ok} of {}, 400s {bad}, end {end:?}", k + 1);
    assert!(
        metric(&relay, "relay_connection_reads_paused_total") > paused0,
        "the connection was paused"
    );
    assert_eq!(ok, k + 1, "every request before the bad one answered");
    assert_eq!(bad, 1, "the bad one answered 400");
    assert!(text.ends_with("\r\n\r\n") || text.ends_with('\n'));
    assert!(end.is_ok(), "a clean end, not {end:?}");
    assert!(writer.join().unwrap().is_ok(), "what it sent was read");
}

//! A body that may not be stored, which the origin sends in one answer (it ignores Range),
//! is read from the origin no faster than its client reads it: a slow client gets every
//! byte (it is never cut for being slow) and relay holds only a few MiB of it meanwhile,
//! not the whole body.

use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, pattern};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const BODY: usize = 96 << 20;

fn config(origin: &Origin, chunk: usize) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[cache]\nchunk_size = {chunk}\n\
         memory_bytes = 16777216\n\n[origin]\n\n[[origin.http]]\nurl = \"{}\"\n\
         idle_timeout_ms = 20000\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    )
}

/// Small chunks: the fetch runs up to 8 MiB (32 chunks) ahead of its client.
#[test]
fn a_slow_client_of_a_private_body_gets_it_whole_and_relay_holds_little_of_it() {
    slow_client(256 << 10);
}

/// Large chunks: two chunks ahead at least, and a client that catches up with the fetch
/// waits for the next chunk rather than being cut.
#[test]
fn with_large_chunks_too() {
    slow_client(4 << 20);
}

fn slow_client(chunk: usize) {
    let origin = Origin::start();
    origin.behaviour.ignore_range.store(true, Ordering::Relaxed);
    let body = pattern(BODY, 7);
    let mut o = Object::new(body.clone(), "p");
    o.cache_control = Some("private".into());
    origin.put("/private.bin", o);
    let relay = Relay::start(&config(&origin, chunk));
    let baseline = relay.rss();
    let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A small receive window, so the kernel's buffers hold little of it either.
    s.write_all(b"GET /private.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::with_capacity(BODY + 4096);
    let mut buf = vec![0u8; 64 * 1024];
    let mut peak = baseline;
    // Slowly for a while (about 1 MiB/s: far slower than the origin on loopback)...
    let slow_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < slow_until {
        let n = s.read(&mut buf[..16 * 1024]).unwrap();
        assert!(n > 0, "cut while reading slowly");
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(15));
        peak = peak.max(relay.rss());
    }
    let slow_bytes = got.len();
    // ...then as fast as it can, to the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
        if head_end.is_some_and(|e| got.len() >= e + 4 + BODY) || Instant::now() > deadline {
            break;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "cut after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(got.len() - end, BODY, "the whole body");
    assert!(got[end..] == body[..], "the right bytes");
    // While the client lagged (it read a few MiB of 96), relay held only a few MiB: the
    // fetch waits within 8 MiB of it, and drops what the client passed.
    let grew = peak.saturating_sub(baseline);
    eprintln!(
        "slow phase: client read {} KiB in 3 s; relay RSS {} MiB at rest, peak +{} MiB",
        slow_bytes >> 10,
        baseline >> 20,
        grew >> 20
    );
    assert!(
        slow_bytes < 16 << 20,
        "the client was not slow: {slow_bytes}"
    );
    assert!(
        grew < 24 << 20,
        "relay held {} MiB of a body its client lagged behind on",
        grew >> 20
    );
}

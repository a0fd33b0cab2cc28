//! A directory-origin file overwritten in place while a client downloads it: the client
//! gets only the old file's bytes (whole, or cut short), never a body mixed from both, and
//! the next request gets the new file whole.

use relay_tests::client::Client;
use relay_tests::{Relay, TempDir, config, pattern};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::time::Duration;

const CHUNK: u64 = 256 * 1024;
/// Far more than the sockets between relay and a client that stops reading can hold, so
/// most chunks are read from the file after it changed.
const LEN: usize = 96 * CHUNK as usize;

/// A `GET path` whose client reads the head and `first` body bytes, then stops reading
/// while `meanwhile` runs, then reads the rest: (Content-Length, every body byte it got
/// before the body was whole or the connection ended).
fn slow_get(relay: &Relay, path: &str, first: usize, meanwhile: impl FnOnce()) -> (usize, Vec<u8>) {
    let ask = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    let (mut s, head, mut body) = relay_tests::client::head_only(relay.addr, &ask);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length");
    let mut buf = vec![0u8; 64 * 1024];
    let mut meanwhile = Some(meanwhile);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while body.len() < length {
        assert!(std::time::Instant::now() < end, "the body stalled");
        if body.len() >= first
            && let Some(f) = meanwhile.take()
        {
            f();
        }
        let want = (length - body.len()).min(buf.len());
        let want = if meanwhile.is_some() {
            want.min(first - body.len())
        } else {
            want
        };
        match s.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            // A reset is a cut too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the body: {e}"),
        }
    }
    (length, body)
}

#[test]
fn a_file_rewritten_during_a_download_is_never_served_mixed() {
    let origin = TempDir::new("origin");
    let old = pattern(LEN, 21);
    let new = pattern(LEN, 22);
    let path = origin.write("movie.bin", &old);
    let relay = Relay::start(&config("127.0.0.1:0", origin.path(), CHUNK, 64 << 20));
    let (length, body) = slow_get(&relay, "/movie.bin", 1 << 20, || {
        // Let relay fill the sockets and stop, then rewrite the file in place: the same
        // length and inode, other bytes.
        std::thread::sleep(Duration::from_millis(300));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&new, 0).unwrap();
    });
    assert_eq!(length, LEN);
    let mixed = body.iter().zip(&old).position(|(a, b)| a != b);
    assert_eq!(
        mixed,
        None,
        "the client got other bytes than the old file's from byte {mixed:?} of {}",
        body.len()
    );
    if body.len() == length {
        // Read whole before the rewrite: its description may stand until relay looks at
        // the file again.
        std::thread::sleep(Duration::from_millis(1200));
    } else {
        assert!(relay.wait_log("changed while being served", Duration::from_secs(2)));
    }
    let r = Client::connect(relay.addr).get("/movie.bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), LEN);
    assert!(r.body == new, "the next request gets the new file whole");
    // Counted.
    let admin = relay.admin.expect("admin listener");
    let metrics = String::from_utf8(Client::connect(admin).get("/metrics").body).unwrap();
    let changed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("relay_origin_file_changed_total "))
        .expect("the metric");
    assert_eq!(changed, if body.len() < length { "1" } else { "0" });
}

//! The hit path allocates nothing: a counting global allocator watches the worker threads
//! while a keep-alive client fetches cached objects (whole, ranged, HEAD, 304) thousands of
//! times.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Counting;

static WORKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers every call to the system allocator; counting has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if relay_server::is_worker_thread() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if relay_server::is_worker_thread() {
            WORKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reads one response framed by Content-Length (no body for HEAD or 304).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, no_body: bool) -> (u16, String) {
    let mut tmp = [0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize = if no_body || status == 304 {
                0
            } else {
                head.lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp).unwrap();
                assert!(n > 0, "closed");
                buf.extend_from_slice(&tmp[..n]);
            }
            buf.drain(..end + 4 + len);
            return (status, head);
        }
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[test]
fn hit_path_allocates_nothing() {
    let dir = std::env::temp_dir().join(format!("relay-noalloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("small"), vec![7u8; 4096]).unwrap();
    std::fs::write(dir.join("multi"), vec![9u8; 3 * 65536 + 100]).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[cache]\nchunk_size = 65536\n\
         [origin]\ndirectory = \"{}\"\nrevalidate_ms = 600000\n",
        dir.display()
    );
    let config = relay_config::Config::from_str(&text, &dir, "test.toml").unwrap();
    let listeners = relay_server::bind(config.server.listen, 1).unwrap();
    let server = relay_server::serve(config, listeners).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    let etag = {
        s.write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (_, head) = read_response(&mut s, &mut buf, false);
        head.lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_string()
    };
    let requests: Vec<(Vec<u8>, bool, u16)> = vec![
        (
            b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            false,
            200,
        ),
        (
            b"GET /multi HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            false,
            200,
        ),
        (
            b"HEAD /multi HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            true,
            200,
        ),
        (
            b"GET /multi HTTP/1.1\r\nHost: t\r\nRange: bytes=65000-140000\r\n\r\n".to_vec(),
            false,
            206,
        ),
        (
            format!("GET /small HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n").into_bytes(),
            true,
            304,
        ),
        (
            b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            false,
            404,
        ),
    ];
    // Warm up: fill the cache, grow every reusable buffer to its working size.
    for _ in 0..50 {
        for (req, no_body, want) in &requests {
            s.write_all(req).unwrap();
            assert_eq!(read_response(&mut s, &mut buf, *no_body).0, *want);
        }
    }
    // The miss of /nope allocates (the origin is asked each time); measure hits only.
    let hits = &requests[..5];
    std::thread::sleep(Duration::from_millis(300));
    let before = WORKER_ALLOCS.load(Ordering::Relaxed);
    let rounds = 400;
    for _ in 0..rounds {
        for (req, no_body, want) in hits {
            s.write_all(req).unwrap();
            assert_eq!(read_response(&mut s, &mut buf, *no_body).0, *want);
        }
    }
    let after = WORKER_ALLOCS.load(Ordering::Relaxed);
    let n = rounds * hits.len();
    assert_eq!(
        after - before,
        0,
        "{} allocations on worker threads during {n} hit requests",
        after - before
    );
    server.shutdown();
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

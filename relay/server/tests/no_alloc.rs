//! The hit path allocates nothing: a counting global allocator watches the worker threads
//! while a keep-alive client fetches cached objects (whole, ranged, HEAD, 304) thousands of
//! times, from a directory origin and from an HTTP origin (with the request fields a miss
//! would forward, and a response that varies).

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

/// The tests share the counter: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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

/// The server wired as the daemon wires it: listeners, cache, eventfds, upstream.
fn start(config: relay_config::Config) -> relay_server::Server {
    let listeners = relay_server::bind_all(&[config.server.listen], 1).unwrap();
    let cache = relay_cache::Cache::open(&config.cache).unwrap();
    let wake = relay_server::Eventfds::new(listeners.len()).unwrap();
    let upstream = relay_upstream::Upstream::open(&config.origin, &cache, wake.wakers()).unwrap();
    let parts = relay_server::Parts {
        cache,
        upstream,
        wake,
        peers: None,
    };
    relay_server::serve(config, listeners, parts).unwrap()
}

#[test]
fn hit_path_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
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
    let server = start(config);
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
    // The miss of /nope allocates (the origin is asked each time); measure hits only.
    assert_hits_allocate_nothing(&mut s, &requests, 5);
    server.shutdown();
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Warms up with `requests`, then sends the first `hits` of them (cached by then) many
/// times and checks that no worker thread allocated meanwhile.
fn assert_hits_allocate_nothing(s: &mut TcpStream, requests: &[(Vec<u8>, bool, u16)], hits: usize) {
    let mut buf = Vec::with_capacity(1 << 20);
    // Warm up: fill the cache, grow every reusable buffer to its working size.
    for _ in 0..50 {
        for (req, no_body, want) in requests {
            s.write_all(req).unwrap();
            assert_eq!(read_response(s, &mut buf, *no_body).0, *want);
        }
    }
    let hits = &requests[..hits];
    std::thread::sleep(Duration::from_millis(300));
    let before = WORKER_ALLOCS.load(Ordering::Relaxed);
    let rounds = 400;
    for _ in 0..rounds {
        for (req, no_body, want) in hits {
            s.write_all(req).unwrap();
            assert_eq!(read_response(s, &mut buf, *no_body).0, *want);
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
}

/// A minimal HTTP origin: `/small` (4 KiB) and `/multi` (three chunks and a bit) answer
/// single ranges with 206; `/lang` varies on Accept-Language. Keep-alive, loopback only.
fn start_origin() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (mut range, mut lang) = (None, String::new());
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (n, v) = h.split_once(':').unwrap_or((h, ""));
                        if n.eq_ignore_ascii_case("range") {
                            range = v.trim().strip_prefix("bytes=").map(str::to_string);
                        }
                        if n.eq_ignore_ascii_case("accept-language") {
                            lang = v.trim().to_string();
                        }
                    }
                    let (body, extra) = match path.as_str() {
                        "/small" => (vec![7u8; 4096], ""),
                        // A weak validator: the body is one answer's, never combined.
                        "/weak" => (vec![5u8; 4096], ""),
                        "/multi" => (vec![9u8; 3 * 65536 + 100], ""),
                        "/lang" if lang == "fr" => {
                            (b"bonjour".to_vec(), "Vary: Accept-Language\r\n")
                        }
                        "/lang" => (b"hello".to_vec(), "Vary: Accept-Language\r\n"),
                        _ => (Vec::new(), ""),
                    };
                    let len = body.len();
                    let (a, z) = range
                        .as_deref()
                        .and_then(|r| r.split_once('-'))
                        .and_then(|(a, z)| {
                            Some((a.parse::<usize>().ok()?, z.parse::<usize>().ok()?))
                        })
                        .map_or((0, len.saturating_sub(1)), |(a, z)| (a, z.min(len - 1)));
                    let weak = if path == "/weak" { "W/" } else { "" };
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\n\
                         Content-Range: bytes {a}-{z}/{len}\r\nETag: {weak}\"{path}-{lang}\"\r\n\
                         Cache-Control: max-age=600\r\nX-Origin: yes\r\n{extra}\r\n",
                        z + 1 - a
                    );
                    if out.write_all(head.as_bytes()).is_err()
                        || out.write_all(&body[a..=z]).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn http_origin_hit_path_allocates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let origin = start_origin();
    let dir = std::env::temp_dir().join(format!("relay-noalloc-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[cache]\nchunk_size = 65536\n\
         [origin]\n[[origin.http]]\nurl = \"http://{origin}\"\n"
    );
    let config = relay_config::Config::from_str(&text, &dir, "test.toml").unwrap();
    let server = start(config);
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The fields a browser sends: a miss would forward them; a hit must not even look.
    let fields = "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\n\
                  Cookie: session=abc; theme=dark\r\nX-Custom-Trace: t-42\r\n";
    let get = |path: &str, more: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{fields}{more}\r\n").into_bytes()
    };
    let requests: Vec<(Vec<u8>, bool, u16)> = vec![
        (get("/small", ""), false, 200),
        (get("/weak", ""), false, 200),
        (get("/multi", ""), false, 200),
        (
            format!("HEAD /multi HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes(),
            true,
            200,
        ),
        (get("/multi", "Range: bytes=65000-140000\r\n"), false, 206),
        (get("/small", "If-None-Match: \"/small-\"\r\n"), true, 304),
        (get("/lang", "Accept-Language: fr\r\n"), false, 200),
        (get("/lang", ""), false, 200),
    ];
    assert_hits_allocate_nothing(&mut s, &requests, requests.len());
    server.shutdown();
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

//! The relay binary against real clients: curl and a raw HTTP/1.1 client.

use relay_tests::client::Client;
use relay_tests::{Relay, TempDir, config, curl, pattern};

const CHUNK: u64 = 64 * 1024;

struct Fixture {
    relay: Relay,
    small: Vec<u8>,
    big: Vec<u8>,
    _origin: TempDir,
}

fn fixture(memory_bytes: u64) -> Fixture {
    let origin = TempDir::new("origin");
    let small = b"hello from the origin\n".to_vec();
    // 5 chunks and a bit: every chunk boundary is crossed.
    let big = pattern(5 * CHUNK as usize + 1234, 1);
    origin.write("small.txt", &small);
    origin.write("dir/big.bin", &big);
    origin.write("empty", b"");
    let relay = Relay::start(&config("127.0.0.1:0", origin.path(), CHUNK, memory_bytes));
    Fixture {
        relay,
        small,
        big,
        _origin: origin,
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// curl -D - : returns (head text of the last response, body).
fn curl_get(url: &str, extra: &[&str]) -> (String, Vec<u8>) {
    let dir = TempDir::new("curl");
    let head_path = dir.path().join("head");
    let mut args = vec!["-D", head_path.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(url);
    let (code, body, err) = curl(&args);
    assert_eq!(code, 0, "curl {url} failed: {err}");
    (std::fs::read_to_string(head_path).unwrap(), body)
}

#[test]
fn curl_fetches_origin_bytes_and_second_fetch_is_a_hit() {
    let f = fixture(64 << 20);
    for (path, want) in [("/small.txt", &f.small), ("/dir/big.bin", &f.big)] {
        let (head, body) = curl_get(&f.relay.url(path), &[]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), want.len());
        assert!(body == *want, "{path}: body differs from the origin's");
        assert_eq!(
            header(&head, "cache-status"),
            Some("relay; fwd=uri-miss; fwd-status=200; stored"),
            "{head}"
        );
        assert_eq!(
            header(&head, "content-length"),
            Some(&*want.len().to_string())
        );
        let (head2, body2) = curl_get(&f.relay.url(path), &[]);
        assert!(body2 == *want);
        assert_eq!(
            header(&head2, "cache-status"),
            Some("relay; hit"),
            "{head2}"
        );
        assert_eq!(header(&head, "etag"), header(&head2, "etag"));
    }
    let (head, body) = curl_get(&f.relay.url("/empty"), &[]);
    assert!(head.starts_with("HTTP/1.1 200"));
    assert!(body.is_empty());
}

#[test]
fn curl_reuses_one_connection_for_several_requests() {
    let f = fixture(64 << 20);
    let (code, body, err) = curl(&[
        "-v",
        &f.relay.url("/small.txt"),
        &f.relay.url("/dir/big.bin"),
        &f.relay.url("/small.txt"),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut want = f.small.clone();
    want.extend_from_slice(&f.big);
    want.extend_from_slice(&f.small);
    assert!(body == want, "bodies differ");
    assert_eq!(err.matches("Connected to").count(), 1, "{err}");
    assert!(err.contains("Re-using existing connection") || err.contains("Reusing existing"));
}

#[test]
fn curl_range_across_chunk_boundaries() {
    let f = fixture(64 << 20);
    let start = CHUNK as usize - 10;
    let end = 3 * CHUNK as usize + 5;
    let (head, body) = curl_get(
        &f.relay.url("/dir/big.bin"),
        &["-r", &format!("{start}-{end}")],
    );
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some(&*format!("bytes {start}-{end}/{}", f.big.len()))
    );
    assert!(body == f.big[start..=end]);
    let (head, _) = curl_get(&f.relay.url("/dir/big.bin"), &["-r", "99999999-"]);
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
}

#[test]
fn keep_alive_and_pipelining_with_a_raw_client() {
    let f = fixture(64 << 20);
    let mut c = Client::connect(f.relay.addr);
    for _ in 0..3 {
        let r = c.get("/small.txt");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, f.small);
    }
    // Three requests in one write; responses come back in order.
    c.send(
        b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /dir/big.bin HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let a = c.read_response(false).unwrap();
    assert_eq!((a.status, &a.body), (200, &f.small));
    let b = c.read_response(true).unwrap();
    assert_eq!(b.status, 200);
    assert_eq!(b.header("content-length"), Some(&*f.big.len().to_string()));
    let n = c.read_response(false).unwrap();
    assert_eq!(n.status, 404);
    // Still open after a 404.
    assert_eq!(c.get("/dir/big.bin").body, f.big);
    // A request split across many writes.
    for piece in [
        &b"GET /sm"[..],
        b"all.txt HTT",
        b"P/1.1\r\nHo",
        b"st: t\r\n",
        b"\r\n",
    ] {
        c.send(piece);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(c.read_response(false).unwrap().body, f.small);
    // Connection: close is honoured.
    c.send(b"GET /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

/// A client that shuts its sending side after its requests (`nc -N`, some health checkers)
/// still gets every response whole: the end of its input is not taken for a client gone.
#[test]
fn a_half_closed_client_still_gets_its_responses() {
    use std::io::{Read, Write};
    let f = fixture(64 << 20);
    for warm in [false, true] {
        let mut s = std::net::TcpStream::connect(f.relay.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(
            b"GET /dir/big.bin HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let text = String::from_utf8_lossy(&got);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "warm {warm}");
        assert!(
            got.ends_with(&f.small),
            "warm {warm}: the second response is cut"
        );
        let big_at = got
            .windows(f.big.len().min(64))
            .position(|w| w == &f.big[..64])
            .expect("the first body");
        assert!(
            got[big_at..big_at + f.big.len()] == f.big[..],
            "warm {warm}"
        );
    }
    // Far more pipelined requests than the receive buffer holds, then the half-close: the
    // ones that overflowed it are answered too.
    let mut s = std::net::TcpStream::connect(f.relay.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut many = b"GET /dir/big.bin HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    for _ in 0..3000 {
        many.extend_from_slice(b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    s.write_all(&many).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let answered = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200 OK")
        .count();
    assert_eq!(answered, 3001);
}

/// Out of descriptors, accepts fail (EMFILE) while connections wait in the backlog: relay
/// does not spin on them (were the kernel to end the multishot accept, it would be armed
/// again on the next tick, not in a loop that fails at once), and it serves again as soon
/// as descriptors are free.
#[test]
fn out_of_descriptors_relay_neither_spins_nor_stops_serving() {
    let origin = TempDir::new("origin");
    origin.write("small.txt", b"hi\n");
    let relay = Relay::start_with(
        &config("127.0.0.1:0", origin.path(), CHUNK, 1 << 24),
        &["prlimit", "--nofile=96:96"],
    );
    let held: Vec<_> = (0..160)
        .map(|_| std::net::TcpStream::connect(relay.addr).unwrap())
        .collect();
    assert!(
        relay.wait_log("Too many open files", std::time::Duration::from_secs(5)),
        "the descriptors never ran out"
    );
    let before = relay.cpu_ticks();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let spent = relay.cpu_ticks() - before;
    assert!(
        spent < 30,
        "relay spent {spent} ticks of 100 in a second, out of descriptors"
    );
    drop(held);
    let r = Client::connect(relay.addr).get("/small.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"hi\n"[..]));
}

/// A GET or HEAD body relay does not use is read through and dropped when it is small; a
/// longer one (or a chunked one past the same bound) ends the connection after the answer
/// instead, so a client trickling a huge body cannot hold it.
#[test]
fn long_unused_request_bodies_end_the_connection() {
    let f = fixture(64 << 20);
    let mut c = Client::connect(f.relay.addr);
    let mut req = b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 1000]);
    req.extend_from_slice(b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(&req);
    for _ in 0..2 {
        assert_eq!(c.read_response(false).unwrap().body, f.small);
    }
    let mut req = b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    req.extend_from_slice(&vec![b'x'; 1_000_000]);
    c.send(&req);
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.is_closed());
    let mut c = Client::connect(f.relay.addr);
    c.send(b"GET /small.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let block = [b"10000\r\n".as_slice(), &vec![b'y'; 1 << 16], b"\r\n"].concat();
    for _ in 0..4 {
        c.send(&block);
    }
    assert_eq!(c.read_response(false).unwrap().body, f.small);
    assert!(c.is_closed());
}

#[test]
fn bad_requests_get_clear_statuses() {
    let f = fixture(64 << 20);
    let cases: &[(&[u8], u16)] = &[
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /small.txt HTTP/1.1\r\n\r\n", 400), // no Host
        (b"GET /small.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (
            b"GET /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"GET /../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"POST /small.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405),
    ];
    for (req, want) in cases {
        let mut c = Client::connect(f.relay.addr);
        c.send(req);
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, *want, "{}", String::from_utf8_lossy(req));
    }
    // An oversized head: 431, then the connection closes.
    let mut c = Client::connect(f.relay.addr);
    let mut req = b"GET /small.txt HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..400 {
        req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(60)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    c.send(&req);
    let r = c.read_response(false).expect("a response");
    assert_eq!(r.status, 431);
    assert!(c.is_closed());
}

#[test]
fn a_small_memory_tier_still_serves_every_byte() {
    // Room for 3 chunks: the 6-chunk object never fits whole.
    let f = fixture(3 * (CHUNK + 4096));
    for _ in 0..3 {
        let (_, body) = curl_get(&f.relay.url("/dir/big.bin"), &[]);
        assert!(body == f.big);
    }
    let (head, body) = curl_get(&f.relay.url("/small.txt"), &[]);
    assert!(body == f.small, "{head}");
}

#[test]
fn sigterm_stops_the_relay_cleanly() {
    let f = fixture(64 << 20);
    let (_, body) = curl_get(&f.relay.url("/small.txt"), &[]);
    assert_eq!(body, f.small);
    let _idle = Client::connect(f.relay.addr);
    let status = f.relay.stop();
    assert!(status.success(), "exit status {status}");
}

/// `relay check-config` with these arguments.
fn check_config(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(relay_tests::relay_bin())
        .arg("check-config")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_names_key_and_line() {
    let dir = TempDir::new("cc");
    let good = dir.write(
        "good.toml",
        format!("[origin]\ndirectory = \"{}\"\n", dir.path().display()).as_bytes(),
    );
    // Positional, and as `run` takes it.
    for args in [
        vec![good.as_os_str()],
        vec!["--config".as_ref(), good.as_os_str()],
    ] {
        let out = check_config(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = dir.write(
        "bad.toml",
        format!(
            "[origin]\ndirectory = \"{}\"\n\n[cache]\nchunk_size = 1000\n",
            dir.path().display()
        )
        .as_bytes(),
    );
    let out = check_config(&[bad.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cache.chunk_size"), "{err}");
    assert!(err.contains(":5:"), "no line 5 in: {err}");
    let unknown = dir.write("unknown.toml", b"[cache]\nchunk_sise = 4096\n");
    let out = check_config(&[unknown.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chunk_sise") && err.contains(":2:"), "{err}");
}

#[test]
fn check_config_reports_every_error() {
    let dir = TempDir::new("cc");
    let file = dir.write(
        "many.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\nbogus = 1\nworkers = \"x\"\n\
             [cache]\nfoo = 2\nmemory_bytes = \"zz\"\n\
             [log]\naccess_format = \"xml\"\n\
             [origin]\ndirectory = \"{}\"\n\
             [[origin.http]]\nurl = \"http://127.0.0.1:1\"\ncolour = 1\n",
            dir.path().display()
        )
        .as_bytes(),
    );
    let name = file.display().to_string();
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = std::process::Command::new(relay_tests::relay_bin())
            .args(args)
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for at in [
            ":3:1: server.bogus: unknown key `bogus`, expected one of `listen`",
            ":4:11: server.workers: invalid type",
            ":6:1: cache.foo: unknown key `foo`",
            ":7:16: cache.memory_bytes: invalid byte size",
            ":9:17: log.access_format: must be",
            ":14:1: origin.http[0].colour: unknown key `colour`",
        ] {
            assert!(
                err.contains(&format!("{name}{at}")),
                "{args:?}: no {at} in: {err}"
            );
        }
    }
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let origin = TempDir::new("origin");
    origin.write("a", b"abc");
    let cfg = config("127.0.0.1:0", origin.path(), CHUNK, 1 << 20).replace(
        "[cache]",
        "header_timeout_ms = 600\nidle_timeout_ms = 1500\n\n[cache]",
    );
    let relay = Relay::start(&cfg);
    // Slowloris: a byte every 100 ms never completes the head; cut after ~600 ms.
    let mut slow = Client::connect(relay.addr);
    let started = std::time::Instant::now();
    let mut cut = false;
    for b in b"GET /a HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.try_send(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(cut || slow.is_closed(), "a slow head was never cut off");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Idle keep-alive: a served connection that sends nothing more is closed.
    let mut idle = Client::connect(relay.addr);
    assert_eq!(idle.get("/a").body, b"abc");
    let t = std::time::Instant::now();
    assert!(idle.is_closed(), "idle connection stayed open");
    let waited = t.elapsed();
    assert!(
        waited > std::time::Duration::from_millis(1000)
            && waited < std::time::Duration::from_secs(5),
        "idle close after {waited:?}"
    );
}

#[test]
fn multi_range_if_range_and_if_modified_since() {
    let f = fixture(64 << 20);
    let url = f.relay.url("/dir/big.bin");
    let ranges = [
        (10usize, 19usize),
        (CHUNK as usize - 5, CHUNK as usize + 5),
        (300_000, 300_100),
    ];
    let spec = ranges
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",");
    let (head, body) = curl_get(&url, &["-r", &spec]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    let ctype = header(&head, "content-type").unwrap();
    let boundary = ctype
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{ctype}"));
    assert_eq!(
        header(&head, "content-length"),
        Some(&*body.len().to_string())
    );
    // Walk the parts: each has a Content-Range naming its bytes, then exactly those bytes.
    let mut rest = &body[..];
    for (a, b) in ranges {
        let delim = format!("--{boundary}\r\n");
        let at = rest
            .windows(delim.len())
            .position(|w| w == delim.as_bytes())
            .expect("part delimiter");
        rest = &rest[at + delim.len()..];
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let part_head = std::str::from_utf8(&rest[..end]).unwrap();
        assert!(
            part_head.contains(&format!("Content-Range: bytes {a}-{b}/{}", f.big.len())),
            "{part_head}"
        );
        rest = &rest[end + 4..];
        assert!(rest[..=b - a] == f.big[a..=b], "part {a}-{b} bytes differ");
        rest = &rest[b - a + 1..];
    }
    assert_eq!(rest, format!("\r\n--{boundary}--\r\n").as_bytes());

    // If-Range with another validator: the Range is ignored, the whole object comes back.
    let (head, body) = curl_get(&url, &["-r", "0-9", "-H", "If-Range: \"other\""]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == f.big);
    let etag = header(&head, "etag").unwrap().to_string();
    let lm = header(&head, "last-modified").unwrap().to_string();
    let (head, body) = curl_get(&url, &["-r", "0-9", "-H", &format!("If-Range: {etag}")]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(body == f.big[..10]);
    // Conditionals: If-None-Match and If-Modified-Since give 304 with no body.
    let (head, body) = curl_get(&url, &["-H", &format!("If-None-Match: {etag}")]);
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(body.is_empty());
    let (head, _) = curl_get(&url, &["-H", &format!("If-Modified-Since: {lm}")]);
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    let (head, body) = curl_get(
        &url,
        &["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"],
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == f.big);
}

#[test]
fn the_directory_origin_serves_regular_files_beneath_its_root_only() {
    use std::os::unix::ffi::OsStrExt;
    let f = fixture(64 << 20);
    let root = f._origin.path();
    // A symlink that stays inside the root is followed; one that leaves it is refused.
    std::os::unix::fs::symlink("small.txt", root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("escape")).unwrap();
    std::os::unix::fs::symlink("../small.txt", root.join("dir/up")).unwrap();
    // A FIFO nobody writes to: a blocking open would wait for a writer forever.
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let mut c = Client::connect(f.relay.addr);
    for (path, status) in [
        ("/fifo", 404),
        ("/link.txt", 200),
        ("/escape", 400),
        ("/dir/up", 200),
        ("/dir", 404),
        ("/nope", 404),
        ("/%2e%2e/etc/hostname", 400),
        ("/small.txt", 200),
    ] {
        let r = c.get(path);
        assert_eq!(r.status, status, "{path}");
        if status == 200 {
            assert_eq!(r.body, f.small, "{path}");
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the FIFO held a worker: {:?}",
        started.elapsed()
    );
    // Every worker still answers (connections spread over both by SO_REUSEPORT).
    for _ in 0..8 {
        assert_eq!(
            Client::connect(f.relay.addr).get("/small.txt").body,
            f.small
        );
    }
}

#[test]
fn a_changed_origin_file_is_described_anew_after_revalidate_ms() {
    let f = fixture(64 << 20);
    let first = f.relay.url("/small.txt");
    let (head1, body1) = curl_get(&first, &[]);
    assert_eq!(body1, f.small);
    let changed = b"a longer, different body for the same name\n".to_vec();
    f._origin.write("small.txt", &changed);
    // origin.revalidate_ms is 1000 by default: within it the cached description stands.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let (head2, body2) = curl_get(&first, &[]);
    assert_eq!(body2, changed, "{head2}");
    assert_ne!(header(&head1, "etag"), header(&head2, "etag"));
    let (_, gone) = {
        std::fs::remove_file(f._origin.path().join("small.txt")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1300));
        curl_get(&first, &["-o", "/dev/null", "-w", "%{http_code}"])
    };
    assert_eq!(gone, b"404");
}

/// A crowd on one directory-origin object at once reads each chunk from the file once:
/// the first connection to miss a chunk reads it for the others, who take its bytes (both
/// workers, every connection); every body is whole.
#[test]
fn a_crowd_on_a_directory_object_reads_each_chunk_once() {
    let origin = TempDir::new("origin");
    let body = pattern((12 << 20) + 777, 12);
    origin.write("crowd.bin", &body);
    let relay = Relay::start(&config("127.0.0.1:0", origin.path(), 4 << 20, 64 << 20));
    // Described first (a 1-byte range reads chunk 0 only), so the crowd meets on the chunks.
    let mut c = Client::connect(relay.addr);
    assert_eq!(c.get_with("/crowd.bin", "Range: bytes=0-0\r\n").status, 206);
    let responses = relay_tests::client::crowd(relay.addr, 24, "/crowd.bin");
    for (i, r) in responses.iter().enumerate() {
        assert!(r.body == body, "client {i}: body differs");
    }
    let mut a = Client::connect(relay.admin.expect("admin"));
    let text = String::from_utf8(a.get("/metrics").body).unwrap();
    let reads = text
        .lines()
        .find_map(|l| l.strip_prefix("relay_origin_file_chunks_read_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("relay_origin_file_chunks_read_total");
    assert_eq!(reads, 4.0, "each of the 4 chunks read once for the crowd");
}

/// Crowds on objects larger than the memory tier (chunks evicted while others are read,
/// shared reads of evicted chunks, two objects at once): every body is whole and right.
#[test]
fn crowds_over_a_small_memory_tier_get_every_byte_right() {
    let origin = TempDir::new("origin");
    let a = pattern(6 * CHUNK as usize + 999, 21);
    let b = pattern(5 * CHUNK as usize + 17, 22);
    origin.write("a.bin", &a);
    origin.write("b.bin", &b);
    // Room for about three chunks.
    let relay = Relay::start(&config(
        "127.0.0.1:0",
        origin.path(),
        CHUNK,
        3 * (CHUNK + 4096),
    ));
    for round in 0..3 {
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| relay_tests::client::crowd(relay.addr, 12, "/a.bin"));
            let tb = s.spawn(|| relay_tests::client::crowd(relay.addr, 12, "/b.bin"));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        for (i, r) in ra.iter().enumerate() {
            assert!(r.body == a, "round {round}, client {i}: a.bin differs");
        }
        for (i, r) in rb.iter().enumerate() {
            assert!(r.body == b, "round {round}, client {i}: b.bin differs");
        }
    }
}

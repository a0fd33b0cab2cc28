//! Unit tests of the exchange: synthetic events, no ring, no socket. The test plays the
//! kernel (it carries out each action: records what is sent, opens, stats and reads real
//! files in a temporary directory) and, for HTTP origins, the upstream (it makes the
//! in-flight head and chunk entries the exchange joins, and publishes their outcome).

use super::*;
use crate::{Tunables, WorkerStats};
use relay_cache::fill::{Fill, FillError, Start};
use relay_cache::wake::Wakers;
use relay_cache::{ChunkKey, ObjectMeta};
use relay_config::Config;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};

const CHUNK: u64 = 16 * 1024;
/// The host the test's HTTP origin serves.
const CDN: &str = "cdn.test";

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("relay-exchange-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a worker gives an exchange: the shared cache (and an HTTP origin the test plays),
/// counters, a clock.
struct Kit {
    shared: Shared,
    stats: WorkerStats,
    date: DateCache,
    latency: Histogram<u64>,
    timeouts: Timeouts,
    dir: TempDir,
}

impl Kit {
    fn new() -> Kit {
        Kit::with_disk(false)
    }

    /// With a disk tier (in `dir/disk`) when `disk`.
    fn with_disk(disk: bool) -> Kit {
        let dir = TempDir::new();
        let disk_dir = match disk {
            true => format!("disk_dir = \"{}/disk\"\n", dir.0.display()),
            false => String::new(),
        };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 3000\nidle_timeout_ms = 7000\n\
             [server.limits]\nmax_head_bytes = 4096\nmax_uri_bytes = 2048\n\
             [cache]\nchunk_size = \"16 KiB\"\nmemory_bytes = \"4 MiB\"\n{disk_dir}\
             [origin]\ndirectory = \"{}\"\npass_buffer_bytes = \"256 KiB\"\n\
             [[origin.http]]\nurl = \"http://127.0.0.1:9\"\nhost = \"{CDN}\"\n",
            dir.0.display()
        );
        let config = Config::from_str(&text, &dir.0, "relay.toml").unwrap();
        let cache = relay_cache::Cache::open(&config.cache).unwrap();
        let wakers: Arc<Vec<std::os::fd::OwnedFd>> = Arc::new(vec![crate::sys::eventfd().unwrap()]);
        // Never asked in these tests: every fetch they need is made by the test first,
        // so the exchange joins it.
        let upstream = relay_upstream::Upstream::open(&config.origin, &cache, Wakers::new(|_| {}))
            .unwrap()
            .unwrap();
        let shared = Shared {
            limits: relay_proto::Limits {
                max_head_bytes: config.server.limits.max_head_bytes,
                max_headers: config.server.limits.max_headers,
                max_uri_bytes: config.server.limits.max_uri_bytes,
            },
            cache,
            origin: Some(crate::origin::DirOrigin::open(&dir.0).unwrap()),
            upstream: Some(upstream),
            wakers,
            wake: Wakers::new(|_| {}),
            shutdown: AtomicBool::new(false),
            tunables: Tunables::from_config(&config),
            config,
        };
        let timeouts = Timeouts {
            header: Duration::from_secs(3),
            idle: Duration::from_secs(7),
            send: Duration::from_secs(11),
            revalidate: Duration::from_secs(60),
        };
        Kit {
            shared,
            stats: WorkerStats::default(),
            date: DateCache::new(std::time::SystemTime::now()),
            latency: crate::metrics::latency_histogram(),
            timeouts,
            dir,
        }
    }

    fn cx(&mut self) -> Cx<'_> {
        Cx {
            shared: &self.shared,
            stats: &self.stats,
            worker: 0,
            now: Instant::now(),
            date: &self.date,
            timeouts: self.timeouts,
            boundary: "relay-test-boundary",
            latency: &mut self.latency,
            peer: &|| Some("192.0.2.7:4000".parse().unwrap()),
            reading: true,
        }
    }

    fn exchange(&mut self) -> Exchange {
        Exchange::new(8192, Instant::now() + self.timeouts.idle)
    }

    /// A file of the directory origin.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn count(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes a multishot receive brought, and the action they lead to.
    fn input(&mut self, ex: &mut Exchange, bytes: &[u8]) -> Action {
        let mut cx = self.cx();
        ex.on_input(cx.now, bytes);
        match ex.on_recv_result(bytes.len() as i32, true) {
            Received::Poll { .. } => ex.poll(&mut cx),
            Received::Keep { .. } => Action::Idle,
            Received::Close => Action::Close,
        }
    }

    /// Plays the kernel and the directory origin's file system for `a` and every action
    /// after it until the exchange waits for input, a wake-up or a close; returns what was
    /// sent and where it stopped.
    fn run(&mut self, ex: &mut Exchange, mut a: Action) -> (Vec<u8>, Action) {
        let mut sent = Vec::new();
        let mut file: Option<std::fs::File> = None;
        for _ in 0..10_000 {
            a = match a {
                Action::Send => {
                    let [h, b] = ex.outgoing().parts();
                    let n = h.len() + b.len();
                    sent.extend_from_slice(h);
                    sent.extend_from_slice(b);
                    ex.on_sent(&mut self.cx(), n)
                }
                Action::SendNow(bytes) => {
                    sent.extend_from_slice(bytes);
                    ex.poll(&mut self.cx())
                }
                Action::OpenDir { root, .. } => {
                    assert_eq!(
                        root,
                        self.shared.origin.as_ref().unwrap().root_fd(),
                        "opened beneath the origin's root"
                    );
                    let name = ex.dir_path().unwrap().to_str().unwrap().to_owned();
                    let opened = std::fs::File::open(self.dir.0.join(&name))
                        .map_err(|e| -e.raw_os_error().unwrap());
                    ex.on_dir_opened(&mut self.cx(), opened)
                }
                Action::StatDir { fd, .. } => {
                    let f = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
                    fill_statx(ex.dir_stat_buf().unwrap(), &f.metadata().unwrap());
                    file = Some(f);
                    ex.on_dir_stat(&mut self.cx(), 0, |_| Ok(()))
                }
                Action::ReadChunk(op) => {
                    let n = kernel_read(op);
                    ex.on_chunk_read(&mut self.cx(), n)
                }
                other => return (sent, other),
            };
        }
        drop(file);
        panic!("the exchange never stopped: {a:?}");
    }
}

/// The test as the kernel: `statx` of a file into the exchange's buffer.
fn fill_statx(st: &mut libc::statx, m: &std::fs::Metadata) {
    st.stx_mode = m.mode() as u16;
    st.stx_size = m.len();
    st.stx_ino = m.ino();
    st.stx_mtime.tv_sec = m.mtime();
    st.stx_mtime.tv_nsec = m.mtime_nsec() as u32;
}

/// The test as the kernel: a read the exchange asked for, into its buffer.
fn kernel_read(op: ReadOp) -> i32 {
    let f = std::fs::File::open(format!("/proc/self/fd/{}", op.fd)).unwrap();
    // SAFETY: the exchange handed `op.at..op.at + op.len` over for this read and leaves it
    // alone until `on_chunk_read` (the ring's buffer rule, as the kernel would have it).
    let buf = unsafe { std::slice::from_raw_parts_mut(op.at, op.len) };
    f.read_at(buf, op.offset).unwrap() as i32
}

/// The head and body of one response in `bytes`, and what follows it.
fn split_response(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    (head, &bytes[end..])
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn object(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

#[test]
fn a_new_connection_waits_for_its_request_until_the_idle_deadline() {
    let mut kit = Kit::new();
    let before = Instant::now();
    let mut ex = kit.exchange();
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Recv));
    assert!(ex.deadline() >= before + kit.timeouts.idle);
    assert!(ex.drain(), "an idle connection closes at once on a drain");
}

#[test]
fn a_partial_head_waits_until_the_header_deadline_of_its_first_byte() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let before = Instant::now();
    assert!(matches!(
        kit.input(&mut ex, b"GET /a HTTP/1.1\r\nHost: x"),
        Action::Recv
    ));
    let d = ex.deadline();
    assert!(d >= before + kit.timeouts.header && d < before + kit.timeouts.idle);
    // The rest of the head does not move the deadline on while it is still partial.
    assert!(matches!(
        kit.input(&mut ex, b"\r\nAccept: */*"),
        Action::Recv
    ));
    assert_eq!(ex.deadline(), d);
}

#[test]
fn a_directory_miss_opens_describes_and_reads_the_file_then_sends_it() {
    let mut kit = Kit::new();
    let body = object(40_000);
    kit.file("a.bin", &body);
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/a.bin"));
    assert!(matches!(a, Action::OpenDir { .. }), "{a:?}");
    assert_eq!(ex.state_name(), "opening");
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(field(&head, "content-length"), Some("40000"));
    assert_eq!(
        field(&head, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(rest, &body[..], "the body, whole and right");
    assert!(
        matches!(next, Action::Recv),
        "then the next request: {next:?}"
    );
    assert_eq!(
        kit.count(&kit.stats.origin_file_reads),
        3,
        "one read per chunk"
    );
    assert_eq!(kit.count(&kit.stats.misses), 1);
}

#[test]
fn a_second_request_is_a_memory_hit_without_file_io() {
    let mut kit = Kit::new();
    let body = object(20_000);
    kit.file("b.txt", &body);
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/b.txt"));
    let (_, next) = kit.run(&mut ex, a);
    assert!(matches!(next, Action::Recv));
    let a = kit.input(&mut ex, &get("/b.txt"));
    assert!(
        matches!(a, Action::Send),
        "a hit goes straight to the send: {a:?}"
    );
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(
        field(&head, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"));
    assert_eq!(rest, &body[..]);
    assert!(matches!(next, Action::Recv));
    assert_eq!(kit.count(&kit.stats.hits), 1);
    assert_eq!(kit.count(&kit.stats.requests), 2);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut kit = Kit::new();
    kit.file("one", b"first");
    kit.file("two", b"second!");
    let mut ex = kit.exchange();
    let mut both = get("/one");
    both.extend_from_slice(&get("/two"));
    let a = kit.input(&mut ex, &both);
    let (sent, next) = kit.run(&mut ex, a);
    let (h1, rest) = split_response(&sent);
    assert_eq!(field(&h1, "content-length"), Some("5"));
    assert!(rest.starts_with(b"first"));
    let (h2, rest) = split_response(&rest[5..]);
    assert_eq!(field(&h2, "content-length"), Some("7"));
    assert_eq!(rest, b"second!");
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_missing_file_is_404_and_the_connection_stays_usable() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/nope"));
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
    assert_eq!(rest, b"not found\n");
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_failed_open_other_than_not_found_is_502() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/x"));
    assert!(matches!(a, Action::OpenDir { .. }));
    let a = ex.on_dir_opened(&mut kit.cx(), Err(-libc::EIO));
    let (sent, _) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 502 "));
}

#[test]
fn a_short_read_reads_the_rest_and_a_failed_read_cuts_the_connection() {
    let mut kit = Kit::new();
    kit.file("c", &object(10_000));
    let mut ex = kit.exchange();
    // Open and stat it, up to the first read.
    let a = kit.input(&mut ex, &get("/c"));
    assert!(matches!(a, Action::OpenDir { .. }));
    let f = std::fs::File::open(kit.dir.0.join("c")).unwrap();
    let a = ex.on_dir_opened(&mut kit.cx(), Ok(f));
    assert!(matches!(a, Action::StatDir { .. }));
    fill_statx(
        ex.dir_stat_buf().unwrap(),
        &std::fs::metadata(kit.dir.0.join("c")).unwrap(),
    );
    let a = ex.on_dir_stat(&mut kit.cx(), 0, |_| Ok(()));
    let Action::ReadChunk(op) = a else {
        panic!("then the chunk is read: {a:?}")
    };
    assert_eq!(ex.state_name(), "reading-file");
    assert_eq!((op.offset, op.len), (0, 10_000));
    let a = ex.on_chunk_read(&mut kit.cx(), 4_000);
    let Action::ReadChunk(rest) = a else {
        panic!("a short read is read again: {a:?}")
    };
    assert_eq!((rest.offset, rest.len), (4_000, 6_000));
    assert_eq!(rest.at, op.at.wrapping_add(4_000));
    assert!(matches!(
        ex.on_chunk_read(&mut kit.cx(), -libc::EIO),
        Action::Close
    ));
    assert!(
        kit.shared.cache.meta.get("/c").is_none(),
        "the description goes with it"
    );
}

#[test]
fn a_conditional_request_for_the_current_version_is_304() {
    let mut kit = Kit::new();
    kit.file("d", &object(100));
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/d"));
    let (sent, _) = kit.run(&mut ex, a);
    let (head, _) = split_response(&sent);
    let etag = field(&head, "etag").unwrap().to_owned();
    let req = format!("GET /d HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n");
    let a = kit.input(&mut ex, req.as_bytes());
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 304 "), "{head}");
    assert!(rest.is_empty());
    assert!(matches!(next, Action::Recv));
}

#[test]
fn ranges_are_206_multipart_or_416() {
    let mut kit = Kit::new();
    let body = object(50_000);
    kit.file("e", &body);
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        b"GET /e HTTP/1.1\r\nHost: x\r\nRange: bytes=17000-17009\r\n\r\n",
    );
    let (sent, _) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 206 "), "{head}");
    assert_eq!(
        field(&head, "content-range"),
        Some("bytes 17000-17009/50000")
    );
    assert_eq!(rest, &body[17000..17010]);

    let a = kit.input(
        &mut ex,
        b"GET /e HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,49998-\r\n\r\n",
    );
    let (sent, _) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(
        field(&head, "content-type")
            .unwrap()
            .starts_with("multipart/byteranges; boundary=relay-test-boundary")
    );
    assert_eq!(
        field(&head, "content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        rest.len()
    );
    let text = String::from_utf8_lossy(rest);
    assert!(text.contains("Content-Range: bytes 0-1/50000"), "{text}");
    assert!(text.contains("Content-Range: bytes 49998-49999/50000"));
    assert!(text.ends_with("--relay-test-boundary--\r\n"));

    let a = kit.input(
        &mut ex,
        b"GET /e HTTP/1.1\r\nHost: x\r\nRange: bytes=60000-\r\n\r\n",
    );
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 416 "), "{head}");
    assert_eq!(field(&head, "content-range"), Some("bytes */50000"));
    assert!(rest.is_empty());
    assert!(matches!(next, Action::Recv));
}

#[test]
fn head_has_no_body_and_connection_close_closes_after_the_answer() {
    let mut kit = Kit::new();
    kit.file("f", &object(3000));
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, b"HEAD /f HTTP/1.1\r\nHost: x\r\n\r\n");
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "content-length"), Some("3000"));
    assert!(rest.is_empty());
    assert!(matches!(next, Action::Recv));
    let a = kit.input(
        &mut ex,
        b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1.len(), 3000);
    assert!(matches!(next, Action::Close), "{next:?}");
}

#[test]
fn other_methods_on_the_directory_are_405() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, b"DELETE /f HTTP/1.1\r\nHost: x\r\n\r\n");
    let (sent, next) = kit.run(&mut ex, a);
    let (head, _) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert_eq!(field(&head, "allow"), Some("GET, HEAD"));
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_malformed_request_is_answered_then_the_connection_lingers() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    let before = Instant::now();
    let (sent, next) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 400 "));
    assert!(matches!(next, Action::Linger), "{next:?}");
    assert!(ex.deadline() >= before + LINGER_TIME && ex.deadline() < before + kit.timeouts.idle);
    assert!(!ex.timeout_counts(), "the end of a linger is no timeout");
    // What the client still sends is dropped until it closes.
    assert!(matches!(kit.input(&mut ex, &[b'x'; 5000]), Action::Idle));
    assert_eq!(ex.rend, ex.rstart, "dropped, not buffered");
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
}

#[test]
fn a_head_past_the_limit_is_431() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    let mut req = b"GET /a HTTP/1.1\r\nHost: x\r\n".to_vec();
    while req.len() < 5000 {
        req.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let a = kit.input(&mut ex, &req);
    let (sent, next) = kit.run(&mut ex, a);
    assert!(
        sent.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );
    assert!(matches!(next, Action::Linger));
    assert_eq!(kit.count(&kit.stats.errors), 1);
}

#[test]
fn a_half_closed_client_still_gets_the_response_under_way() {
    let mut kit = Kit::new();
    kit.file("g", &object(100));
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/g"));
    // The open is in flight (phase Fill) when the client shuts its side.
    assert!(matches!(a, Action::OpenDir { .. }));
    assert_eq!(ex.on_recv_result(0, false), Received::Keep { rearm: false });
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1.len(), 100);
    // Then the next read sees the end again: nothing more to answer, so it closes.
    assert!(matches!(next, Action::Recv));
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
}

#[test]
fn a_client_pipelining_past_the_overflow_limit_is_cut() {
    let mut kit = Kit::new();
    kit.file("h", &object(10));
    let mut ex = kit.exchange();
    // The receive buffer holds 8 KiB; the rest waits in the overflow, up to its limit.
    let burst = get("/h").repeat(2000);
    let mut cx = kit.cx();
    let mut last = Received::Keep { rearm: false };
    for piece in burst
        .chunks(4096)
        .chain(std::iter::repeat_n(&burst[..4096], 300))
    {
        ex.on_input(cx.now, piece);
        last = ex.on_recv_result(piece.len() as i32, true);
        if last == Received::Close {
            break;
        }
        // Not answered meanwhile: the exchange is busy (a send is in flight).
        ex.phase = Phase::Send;
    }
    assert_eq!(last, Received::Close);
    assert!(ex.overflow.len() > OVERFLOW_LIMIT);
    let _ = ex.poll(&mut cx);
}

#[test]
fn a_drain_closes_after_the_response_under_way() {
    let mut kit = Kit::new();
    kit.file("i", &object(100));
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &get("/i"));
    assert!(!ex.drain(), "busy: it finishes its response first");
    let (sent, next) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1.len(), 100);
    assert!(matches!(next, Action::Close));
}

/// An HTTP-origin object's key, as the exchange makes it from Host and target.
fn cdn_key(path: &str) -> String {
    format!("{CDN}{path}")
}

fn cdn_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {CDN}\r\nUser-Agent: t\r\n\r\n").into_bytes()
}

#[test]
fn a_miss_waits_on_the_head_fetch_then_streams_the_fill_as_it_arrives() {
    let mut kit = Kit::new();
    let key = cdn_key("/v/seg1");
    // The test is the upstream: the head fetch is in flight when the request comes.
    let (pending, new) = kit.shared.cache.inflight.head(&key);
    assert!(new);
    let mut ex = kit.exchange();
    let before = Instant::now();
    let a = kit.input(&mut ex, &cdn_get("/v/seg1"));
    assert!(
        matches!(a, Action::Wait),
        "joined the fetch in flight: {a:?}"
    );
    assert!(ex.is_waiting());
    assert_eq!(ex.state_name(), "awaiting-head");
    let d = ex.deadline();
    assert!(d >= before + kit.timeouts.send);
    // A wake-up with nothing new keeps the deadline of the wait.
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Wait));
    assert_eq!(ex.deadline(), d);
    assert!(pending.watchers.contains(0), "registered to be woken");

    // The origin answers: a 20000-byte object, its first chunk filling.
    let body = object(20_000);
    let meta = Arc::new(ObjectMeta::file(
        20_000,
        42,
        "\"v42\"".into(),
        String::new(),
    ));
    let (fill, mut writer) = Fill::new(
        ChunkKey {
            object: Arc::from(key.as_str()),
            version: 42,
            index: 0,
        },
        CHUNK as usize,
    );
    writer.append(&body[..1000]).unwrap();
    kit.shared
        .cache
        .inflight
        .finish_head(&key, Ok(meta), Some(fill.clone()), &kit.shared.wake);
    let (sent, next) = kit.woken(&mut ex);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(field(&head, "content-length"), Some("20000"));
    assert_eq!(field(&head, "cache-status"), Some("relay; fwd=miss"));
    assert!(field(&head, "age").is_some());
    assert_eq!(rest, &body[..1000], "what the fill had, at once");
    assert!(
        matches!(next, Action::Wait),
        "then it waits for more: {next:?}"
    );
    assert_eq!(ex.state_name(), "ready", "streaming from the fill it holds");

    writer.append(&body[1000..CHUNK as usize]).unwrap();
    writer.finish().unwrap();
    let (sent, next) = kit.woken(&mut ex);
    assert_eq!(sent, &body[1000..CHUNK as usize]);
    // The second chunk: the test makes its fill first, so the exchange joins it too.
    let Action::Wait = next else {
        // (it joined or started a fill: a start would submit to the upstream)
        panic!("{next:?}")
    };
    drop(fill);
}

/// A wake-up: the worker polls the waiting exchange.
fn ex_poll(kit: &mut Kit, ex: &mut Exchange) -> Action {
    ex.poll(&mut kit.cx())
}

impl Kit {
    /// A request for `path` of the HTTP origin while its head fetch (the test's) is in
    /// flight; the fetch fails; what the woken exchange then does.
    fn head_fails(&mut self, path: &str) -> (Vec<u8>, Action) {
        let key = cdn_key(path);
        self.shared.cache.inflight.head(&key);
        let mut ex = self.exchange();
        assert!(matches!(self.input(&mut ex, &cdn_get(path)), Action::Wait));
        self.shared.cache.inflight.finish_head(
            &key,
            Err(FillError::Connect),
            None,
            &self.shared.wake,
        );
        self.woken(&mut ex)
    }

    /// A wake-up, and what the exchange then does until it stops again.
    fn woken(&mut self, ex: &mut Exchange) -> (Vec<u8>, Action) {
        let a = ex.poll(&mut self.cx());
        self.run(ex, a)
    }
}

#[test]
fn a_head_fetch_that_fails_is_a_502() {
    let mut kit = Kit::new();
    let (sent, next) = kit.head_fails("/gone");
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert_eq!(rest, b"upstream failed\n");
    assert!(
        matches!(next, Action::Recv),
        "the connection stays: {next:?}"
    );
}

#[test]
fn a_fill_that_fails_before_any_byte_is_an_error_status_and_after_is_a_cut() {
    let mut kit = Kit::new();
    for (cut_after, expect_status) in [(0usize, true), (500, false)] {
        let key = cdn_key(&format!("/f{cut_after}"));
        kit.shared.cache.inflight.head(&key);
        let mut ex = kit.exchange();
        assert!(matches!(
            kit.input(&mut ex, &cdn_get(&format!("/f{cut_after}"))),
            Action::Wait
        ));
        let meta = Arc::new(ObjectMeta::file(9000, 7, String::new(), String::new()));
        let (fill, mut writer) = Fill::new(
            ChunkKey {
                object: Arc::from(key.as_str()),
                version: 7,
                index: 0,
            },
            9000,
        );
        if cut_after > 0 {
            writer.append(&object(cut_after)).unwrap();
        }
        kit.shared
            .cache
            .inflight
            .finish_head(&key, Ok(meta), Some(fill.clone()), &kit.shared.wake);
        let first = ex_poll(&mut kit, &mut ex);
        let (sent, next) = kit.run(&mut ex, first);
        assert!(matches!(next, Action::Wait), "{next:?}");
        writer.fail(FillError::Truncated);
        let (more, last) = kit.woken(&mut ex);
        if expect_status {
            assert!(sent.is_empty(), "nothing went out before the failure");
            let (head, _) = split_response(&more);
            assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
            assert!(matches!(last, Action::Close), "{last:?}");
        } else {
            assert_eq!(split_response(&sent).1.len(), cut_after);
            assert!(more.is_empty(), "never a short body passed off as whole");
            assert!(matches!(last, Action::Close), "cut: {last:?}");
        }
    }
}

#[test]
fn each_wait_gets_a_deadline_of_its_own() {
    let mut kit = Kit::new();
    let key = cdn_key("/slow");
    kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(
        kit.input(&mut ex, &cdn_get("/slow")),
        Action::Wait
    ));
    let first = ex.deadline();
    std::thread::sleep(Duration::from_millis(20));
    let meta = Arc::new(ObjectMeta::file(100, 9, String::new(), String::new()));
    let (fill, _writer) = Fill::new(
        ChunkKey {
            object: Arc::from(key.as_str()),
            version: 9,
            index: 0,
        },
        100,
    );
    kit.shared
        .cache
        .inflight
        .finish_head(&key, Ok(meta), Some(fill), &kit.shared.wake);
    // The head came; the body's first bytes have not: a new wait, with its own deadline.
    assert!(matches!(ex_poll(&mut kit, &mut ex), Action::Wait));
    assert!(ex.deadline() > first);
}

#[test]
fn a_client_that_leaves_while_its_answer_waits_on_the_origin_is_gone() {
    let mut kit = Kit::new();
    let key = cdn_key("/w");
    kit.shared.cache.inflight.head(&key);
    let mut ex = kit.exchange();
    assert!(matches!(kit.input(&mut ex, &cdn_get("/w")), Action::Wait));
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
}

#[test]
fn the_fields_of_a_miss_go_upstream_with_the_clients_address() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    kit.shared.cache.inflight.head(&cdn_key("/h"));
    assert!(matches!(kit.input(&mut ex, &cdn_get("/h")), Action::Wait));
    let fields = ex.fill_forward(&kit.cx());
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"User-Agent"), "{names:?}");
    assert!(!names.iter().any(|n| n.eq_ignore_ascii_case("host")));
    let xff = fields.iter().find(|(n, _)| n == "X-Forwarded-For").unwrap();
    assert_eq!(xff.1, b"192.0.2.7");
}

#[test]
fn a_request_to_an_http_origin_is_keyed_by_host_and_target() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    kit.shared.cache.inflight.head(&cdn_key("/p?q=1"));
    let a = kit.input(&mut ex, b"GET /p?q=1 HTTP/1.1\r\nHost: CDN.test\r\n\r\n");
    assert!(matches!(a, Action::Wait));
    assert_eq!(ex.key, cdn_key("/p?q=1"), "host lower-cased, query kept");
    assert_eq!(ex.target, "/p?q=1");
    assert!(matches!(ex.route, Route::Http(0)));
}

#[test]
fn what_a_multishot_receive_ending_leads_to() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    // Between requests: more input is parsed; an end is the client gone; an error too,
    // but a dry buffer group (ENOBUFS) only needs the receive armed again.
    assert_eq!(ex.on_recv_result(10, true), Received::Poll { rearm: false });
    assert_eq!(ex.on_recv_result(10, false), Received::Poll { rearm: true });
    assert_eq!(
        ex.on_recv_result(-libc::ENOBUFS, false),
        Received::Poll { rearm: true }
    );
    assert_eq!(ex.on_recv_result(0, false), Received::Close);
    assert_eq!(ex.on_recv_result(-libc::ECONNRESET, false), Received::Close);
    // While a send is under way, input waits for the response to end.
    ex.phase = Phase::Send;
    assert_eq!(ex.on_recv_result(10, true), Received::Keep { rearm: false });
    assert_eq!(ex.on_recv_result(10, false), Received::Keep { rearm: true });
    // Lingering: input is dropped until it ends (or its bound), then the close.
    ex.linger = Some(Linger::new(100));
    assert_eq!(ex.on_recv_result(10, false), Received::Keep { rearm: true });
    ex.linger = Some(Linger {
        left: 0,
        shut: false,
    });
    assert_eq!(
        ex.on_recv_result(10, false),
        Received::Keep { rearm: false },
        "past the bound before the answer is sent: reading stops, the answer goes on"
    );
    ex.linger = Some(Linger {
        left: 0,
        shut: true,
    });
    assert_eq!(ex.on_recv_result(10, true), Received::Close);
    let _ = kit.cx();
}

#[test]
fn a_reused_slot_starts_clean() {
    let mut kit = Kit::new();
    kit.file("r", b"fresh");
    let mut ex = kit.exchange();
    // Leave it dirty: a refused request lingering, bytes half-sent, pipelined overflow.
    let a = kit.input(&mut ex, b"BAD\r\n\r\n");
    assert!(matches!(a, Action::Send));
    ex.on_head_sent_partially_for_test(3);
    ex.overflow.extend_from_slice(b"GET /x HTTP/1.1\r\n");
    ex.reset(Instant::now() + kit.timeouts.idle);
    assert!(ex.linger.is_none() && ex.overflow.is_empty() && !ex.close_after);
    assert_eq!(ex.outgoing().pending(), 0);
    let a = kit.input(&mut ex, &get("/r"));
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(rest, b"fresh");
    assert!(matches!(next, Action::Recv));
}

#[test]
fn a_single_receive_lands_in_the_receive_buffer() {
    let mut kit = Kit::new();
    kit.file("s", b"single");
    let mut ex = kit.exchange();
    assert!(matches!(ex.poll(&mut kit.cx()), Action::Recv));
    let req = get("/s");
    ex.recv_room()[..req.len()].copy_from_slice(&req);
    let a = ex.on_received(&mut kit.cx(), req.len());
    let (sent, _) = kit.run(&mut ex, a);
    assert_eq!(split_response(&sent).1, b"single");
}

#[test]
fn a_long_unused_request_body_ends_the_connection_after_the_answer() {
    let mut kit = Kit::new();
    kit.file("u", b"ok");
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!(
            "GET /u HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            DISCARD_MAX + 1
        )
        .as_bytes(),
    );
    let (sent, next) = kit.run(&mut ex, a);
    let (head, _) = split_response(&sent);
    assert_eq!(field(&head, "connection"), Some("close"), "{head}");
    assert!(matches!(next, Action::Linger), "{next:?}");
    // Without input being read, a linger is a close.
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, b"BAD\r\n\r\n");
    let mut cx = kit.cx();
    cx.reading = false;
    assert!(matches!(a, Action::Send));
    let [h, b] = ex.outgoing().parts();
    let n = h.len() + b.len();
    assert!(matches!(ex.on_sent(&mut cx, n), Action::Close));
}

#[test]
fn one_read_per_chunk_however_many_connections_want_it() {
    let mut kit = Kit::new();
    let body = object(5000);
    kit.file("shared", &body);
    // The first connection describes the file and starts reading its chunk.
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &get("/shared"));
    assert!(matches!(a, Action::OpenDir { .. }));
    let f = std::fs::File::open(kit.dir.0.join("shared")).unwrap();
    let Action::StatDir { .. } = first.on_dir_opened(&mut kit.cx(), Ok(f)) else {
        panic!()
    };
    let m = std::fs::metadata(kit.dir.0.join("shared")).unwrap();
    fill_statx(first.dir_stat_buf().unwrap(), &m);
    let Action::ReadChunk(op) = first.on_dir_stat(&mut kit.cx(), 0, |_| Ok(())) else {
        panic!("the first connection reads the chunk")
    };
    // A second asks meanwhile: the description is cached, the chunk is being read.
    let mut second = kit.exchange();
    let a = kit.input(&mut second, &get("/shared"));
    assert!(
        matches!(a, Action::Wait),
        "it waits on the first one's read: {a:?}"
    );
    // The read completes: the first sends, the second takes the same bytes when woken.
    let n = kernel_read(op);
    let a = first.on_chunk_read(&mut kit.cx(), n);
    let (sent, _) = kit.run(&mut first, a);
    assert_eq!(split_response(&sent).1, &body[..]);
    let (sent, _) = kit.woken(&mut second);
    assert_eq!(split_response(&sent).1, &body[..]);
    assert_eq!(
        kit.count(&kit.stats.origin_file_reads),
        1,
        "one read for both"
    );
}

#[test]
fn a_reader_that_leaves_lets_the_waiters_read_for_themselves() {
    let mut kit = Kit::new();
    let body = object(3000);
    kit.file("left", &body);
    // Describe it first so that both connections go straight to the chunk.
    let mut warm = kit.exchange();
    let a = kit.input(&mut warm, b"HEAD /left HTTP/1.1\r\nHost: x\r\n\r\n");
    let (_, next) = kit.run(&mut warm, a);
    assert!(matches!(next, Action::Recv));
    let mut reader = kit.exchange();
    let a = kit.input(&mut reader, &get("/left"));
    assert!(
        matches!(a, Action::OpenDir { .. }),
        "its body needs the file: {a:?}"
    );
    let mut waiter = kit.exchange();
    assert!(matches!(
        kit.input(&mut waiter, &get("/left")),
        Action::Wait
    ));
    // The reader's client goes: its share is settled without bytes.
    reader.on_close(&mut kit.cx());
    assert!(
        matches!(reader.poll(&mut kit.cx()), Action::Idle),
        "closed: nothing more"
    );
    let (sent, next) = kit.woken(&mut waiter);
    assert_eq!(
        split_response(&sent).1,
        &body[..],
        "it read the chunk itself"
    );
    assert!(matches!(next, Action::Recv));
}

#[test]
fn pass_through_bodies_are_bounded_and_expect_continue_is_answered() {
    let mut kit = Kit::new();
    // Too long to collect: 413, and the connection lingers.
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!(
            "POST /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: {}\r\n\r\n",
            PASS_BODY_LIMIT + 1
        )
        .as_bytes(),
    );
    let (sent, next) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 413 "));
    assert!(matches!(next, Action::Linger));
    // More than the pass-through budget (256 KiB here) holds: 503.
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!("POST /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: 300000\r\n\r\n").as_bytes(),
    );
    let (sent, _) = kit.run(&mut ex, a);
    assert!(sent.starts_with(b"HTTP/1.1 503 "));
    // A client that waits for 100 Continue gets it, then its body is collected.
    let mut ex = kit.exchange();
    let a = kit.input(
        &mut ex,
        format!(
            "PUT /up HTTP/1.1\r\nHost: {CDN}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(matches!(a, Action::SendNow(b) if b == CONTINUE), "{a:?}");
    assert!(
        matches!(ex.poll(&mut kit.cx()), Action::Recv),
        "waits for the body"
    );
    assert_eq!(ex.state_name(), "collecting-body");
    let a = kit.input(&mut ex, b"hello");
    assert!(
        matches!(a, Action::Wait),
        "handed over, it waits for the answer: {a:?}"
    );
    assert_eq!(ex.state_name(), "awaiting-pass");
}

#[test]
fn a_pass_through_whose_origin_fails_is_answered_with_its_status() {
    let mut kit = Kit::new();
    let mut ex = kit.exchange();
    // The test's origin address has nothing listening: the upstream's connect fails.
    let a = kit.input(
        &mut ex,
        format!("DELETE /x HTTP/1.1\r\nHost: {CDN}\r\n\r\n").as_bytes(),
    );
    assert!(matches!(a, Action::Wait), "{a:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (sent, next) = loop {
        std::thread::sleep(Duration::from_millis(10));
        let (sent, next) = kit.woken(&mut ex);
        if !sent.is_empty() || Instant::now() > deadline {
            break (sent, next);
        }
        assert!(matches!(next, Action::Wait));
    };
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert_eq!(rest, b"upstream failed\n");
    assert!(matches!(next, Action::Recv));
}

/// The test as the disk writer: chunk `index` of `key` (version `version`, of an object
/// `len` bytes long described by `meta`) written to the disk tier.
fn put_on_disk(kit: &Kit, key: &str, version: u64, index: u64, len: u64, body: &[u8], meta: &[u8]) {
    let disk = kit.shared.cache.disk.as_ref().expect("a disk tier");
    let info = relay_cache::disk::ChunkInfo {
        key: relay_cache::ChunkRef {
            object: key,
            version,
            index,
        },
        object_len: len,
        etag: "\"v\"",
        last_modified: "",
        meta,
    };
    let plan = disk.plan_write(&info, body).unwrap();
    std::fs::write(&plan.temp_path, [&plan.header[..], body].concat()).unwrap();
    std::fs::rename(&plan.temp_path, &plan.final_path).unwrap();
    disk.commit_write(&plan);
}

impl Kit {
    /// Plays the kernel for a disk-tier chunk read: the open, then the header and body
    /// reads; returns the action after them.
    fn disk_read(&mut self, ex: &mut Exchange, a: Action) -> Action {
        let Action::OpenDisk { .. } = a else {
            panic!("the chunk file is opened first: {a:?}")
        };
        let path = ex.disk_path().unwrap().to_str().unwrap().to_owned();
        let a = ex.on_disk_opened(&mut self.cx(), Ok(std::fs::File::open(path).unwrap()));
        let Action::ReadDisk { header, body } = a else {
            panic!("then its header and body are read together: {a:?}")
        };
        let (header, body) = (header.unwrap(), body.unwrap());
        let (h, b) = (kernel_read(header), kernel_read(body));
        let a = ex.on_disk_read(&mut self.cx(), false, h);
        assert!(
            matches!(a, Action::Idle),
            "the body read is still in flight: {a:?}"
        );
        ex.on_disk_read(&mut self.cx(), true, b)
    }
}

#[test]
fn a_chunk_on_the_disk_tier_is_read_verified_promoted_and_sent() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/d");
    let body = object(5000);
    kit.shared.cache.meta.insert(
        &key,
        ObjectMeta::file(5000, 3, "\"v\"".into(), String::new()),
    );
    put_on_disk(&kit, &key, 3, 0, 5000, &body, b"");
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/d"));
    assert_eq!(ex.state_name(), "reading-disk");
    let a = kit.disk_read(&mut ex, a);
    let (sent, next) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert!(matches!(next, Action::Recv));
    assert_eq!(kit.count(&kit.stats.disk_hits), 1);
    // Promoted: the next request is a memory hit, no file touched.
    let a = kit.input(&mut ex, &cdn_get("/d"));
    assert!(matches!(a, Action::Send), "{a:?}");
}

#[test]
fn a_corrupt_chunk_on_disk_is_never_sent_and_is_fetched_again() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/bad");
    let body = object(5000);
    kit.shared.cache.meta.insert(
        &key,
        ObjectMeta::file(5000, 4, "\"v\"".into(), String::new()),
    );
    put_on_disk(&kit, &key, 4, 0, 5000, &body, b"");
    // Flip a byte of the body on disk.
    let disk = kit.shared.cache.disk.as_ref().unwrap();
    let plan = disk
        .locate(&relay_cache::ChunkRef {
            object: &key,
            version: 4,
            index: 0,
        })
        .unwrap();
    let mut bytes = std::fs::read(&plan.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&plan.path, bytes).unwrap();
    // The test is the upstream: the chunk's fill is in flight when the disk read fails.
    let chunk = ChunkKey {
        object: Arc::from(key.as_str()),
        version: 4,
        index: 0,
    };
    let Start::New(mut writer) = kit
        .shared
        .cache
        .inflight
        .join_or_start(chunk, 5000, |_| false)
    else {
        panic!("the test starts the fill")
    };
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/bad"));
    let a = kit.disk_read(&mut ex, a);
    assert_eq!(kit.count(&kit.stats.disk_corrupt), 1);
    let (sent, next) = kit.run(&mut ex, a);
    assert!(sent.is_empty(), "nothing of the corrupt chunk went out");
    assert!(
        matches!(next, Action::Wait),
        "it joined the fetch: {next:?}"
    );
    writer.append(&body).unwrap();
    writer.finish().unwrap();
    let (sent, _) = kit.woken(&mut ex);
    assert_eq!(split_response(&sent).1, &body[..]);
}

#[test]
fn after_a_restart_a_description_is_restored_from_disk_once() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/r");
    let body = object(3000);
    let now_unix = relay_cache::policy::unix_seconds(std::time::SystemTime::now());
    let mut meta = ObjectMeta::file(3000, 5, "\"v\"".into(), String::new());
    meta.content_type = "video/mp4".into();
    let blob = meta.encode_blob(Instant::now(), now_unix);
    put_on_disk(&kit, &key, 5, 0, 3000, &body, &blob);
    // The first client reads the description (its first chunk); a second waits on it.
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &cdn_get("/r"));
    assert_eq!(first.state_name(), "reading-disk");
    let mut second = kit.exchange();
    assert!(matches!(
        kit.input(&mut second, &cdn_get("/r")),
        Action::Wait
    ));
    assert_eq!(second.state_name(), "awaiting-head");
    let a = kit.disk_read(&mut first, a);
    let (sent, _) = kit.run(&mut first, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "content-type"), Some("video/mp4"), "{head}");
    assert_eq!(rest, &body[..]);
    let (sent, _) = kit.woken(&mut second);
    let (head, rest) = split_response(&sent);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert_eq!(rest, &body[..]);
    assert_eq!(kit.count(&kit.stats.disk_hits), 1, "one disk read for both");
}

/// A description of `len` bytes, version `version`, stale since a second ago, with the
/// given stale windows; its one chunk in memory (`body`).
fn stale_object(kit: &Kit, key: &str, version: u64, body: &[u8], swr: u64, sie: u64) {
    let meta = ObjectMeta {
        fetched: Instant::now() - Duration::from_secs(2),
        ttl: Duration::from_secs(1),
        stale_while_revalidate: Duration::from_secs(swr),
        stale_if_error: Duration::from_secs(sie),
        ..ObjectMeta::file(body.len() as u64, version, "\"s\"".into(), String::new())
    };
    kit.shared.cache.meta.insert(key, meta);
    let chunk = ChunkKey {
        object: Arc::from(key),
        version,
        index: 0,
    };
    kit.shared
        .cache
        .memory
        .insert(chunk, bytes::Bytes::copy_from_slice(body));
}

#[test]
fn a_stale_copy_within_stale_while_revalidate_is_served_and_revalidated_once() {
    let mut kit = Kit::new();
    let key = cdn_key("/swr");
    let body = object(700);
    stale_object(&kit, &key, 6, &body, 60, 0);
    let mut ex = kit.exchange();
    let a = kit.input(&mut ex, &cdn_get("/swr"));
    assert!(matches!(a, Action::Send), "served at once: {a:?}");
    let (sent, _) = kit.run(&mut ex, a);
    let (head, rest) = split_response(&sent);
    assert_eq!(
        field(&head, "cache-status"),
        Some("relay; hit; detail=stale-while-revalidate"),
        "{head}"
    );
    assert_eq!(rest, &body[..]);
    assert_eq!(kit.count(&kit.stats.upstream_heads), 1, "one revalidation");
    // With a revalidation already in flight (the test's), a client is served the same way
    // and starts none.
    let key = cdn_key("/swr2");
    stale_object(&kit, &key, 9, &body, 60, 0);
    kit.shared.cache.inflight.head(&key);
    let mut again = kit.exchange();
    let a = kit.input(&mut again, &cdn_get("/swr2"));
    let (sent, next) = kit.run(&mut again, a);
    assert_eq!(split_response(&sent).1, &body[..]);
    assert!(matches!(next, Action::Recv));
    assert_eq!(kit.count(&kit.stats.upstream_heads), 1, "no second fetch");
}

#[test]
fn an_origin_failure_is_answered_from_a_stale_copy_within_stale_if_error() {
    let mut kit = Kit::new();
    let key = cdn_key("/sie");
    let body = object(900);
    stale_object(&kit, &key, 7, &body, 0, 60);
    let (sent, _) = kit.head_fails("/sie");
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        field(&head, "cache-status"),
        Some("relay; hit; detail=stale-if-error")
    );
    assert_eq!(rest, &body[..]);
}

#[test]
fn a_restoring_client_that_leaves_hands_its_entry_to_a_head_fetch() {
    let mut kit = Kit::with_disk(true);
    let key = cdn_key("/gone-r");
    let now_unix = relay_cache::policy::unix_seconds(std::time::SystemTime::now());
    let meta = ObjectMeta::file(100, 8, "\"v\"".into(), String::new());
    put_on_disk(
        &kit,
        &key,
        8,
        0,
        100,
        &object(100),
        &meta.encode_blob(Instant::now(), now_unix),
    );
    let mut first = kit.exchange();
    let a = kit.input(&mut first, &cdn_get("/gone-r"));
    assert!(matches!(a, Action::OpenDisk { .. }), "{a:?}");
    let mut second = kit.exchange();
    assert!(matches!(
        kit.input(&mut second, &cdn_get("/gone-r")),
        Action::Wait
    ));
    // The first client leaves with its open in flight: its entry goes to a head fetch (the
    // test's origin refuses it), and what the kernel may still use stays with the slot.
    first.on_close(&mut kit.cx());
    assert_eq!(first.state_name(), "reading-disk");
    assert!(matches!(first.poll(&mut kit.cx()), Action::Idle));
    assert_eq!(kit.count(&kit.stats.upstream_heads), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let sent = loop {
        std::thread::sleep(Duration::from_millis(10));
        let (sent, next) = kit.woken(&mut second);
        if !sent.is_empty() || Instant::now() > deadline {
            break sent;
        }
        assert!(matches!(next, Action::Wait));
    };
    assert!(
        sent.starts_with(b"HTTP/1.1 502 "),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );
}

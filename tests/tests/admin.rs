//! The admin listener (/metrics, /healthz, and that no client can hold it) and live reload
//! on SIGHUP.

use relay_tests::client::Client;
use relay_tests::{Relay, TempDir, config};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn metric(text: &str, name: &str) -> f64 {
    relay_tests::metric_in(text, name).unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[test]
fn metrics_count_requests_hits_and_latency() {
    let origin = TempDir::new("origin");
    origin.write("a.bin", &relay_tests::pattern(100_000, 3));
    let relay = Relay::start(&config("127.0.0.1:0", origin.path(), 65536, 1 << 24));
    let admin = relay.admin.expect("admin listener");
    let mut c = Client::connect(relay.addr);
    for _ in 0..10 {
        assert_eq!(c.get("/a.bin").status, 200);
    }
    assert_eq!(c.get("/missing").status, 404);
    // Latency is published on the workers' 200 ms tick.
    std::thread::sleep(Duration::from_millis(500));
    let mut a = Client::connect(admin);
    let m = a.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(m.body).unwrap();
    assert_eq!(metric(&text, "relay_requests_total"), 11.0);
    assert_eq!(
        metric(
            &text,
            "relay_cache_lookups_total{result=\"hit\",tier=\"memory\"}"
        ),
        9.0
    );
    assert_eq!(
        metric(
            &text,
            "relay_cache_lookups_total{result=\"miss\",tier=\"origin\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "relay_cache_forwards_total{fwd=\"uri-miss\"}"),
        1.0,
        "the miss, by its Cache-Status"
    );
    assert_eq!(
        metric(
            &text,
            "relay_errors_total{status=\"404\",reason=\"not_found\"}"
        ),
        1.0
    );
    // The same responses by origin, result and status class: the answers relay made up as
    // errors.
    let responses = |origin: &str, result: &str, class: &str| {
        metric(
            &text,
            &format!(
                "relay_responses_total{{origin=\"{origin}\",result=\"{result}\",status=\"{class}\"}}"
            ),
        )
    };
    assert_eq!(
        (
            responses("directory", "hit", "2xx"),
            responses("directory", "miss", "2xx"),
            responses("-", "error", "4xx")
        ),
        (9.0, 1.0, 1.0)
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("relay_build_info{version=\"0.1.0\",revision=\"")
                && l.ends_with(" 1")
        ),
        "{text}"
    );
    assert_eq!(metric(&text, "relay_request_duration_seconds_count"), 11.0);
    assert_eq!(
        metric(&text, "relay_request_duration_seconds_bucket{le=\"+Inf\"}"),
        11.0
    );
    assert!(metric(&text, "relay_bytes_sent_total") >= 1_000_000.0);
    assert_eq!(metric(&text, "relay_connections_open"), 1.0);
    assert!(metric(&text, "relay_memory_tier_bytes") >= 100_000.0);
    assert_eq!(metric(&text, "relay_workers"), 2.0);
    let mut h = Client::connect(admin);
    let r = h.get("/healthz");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok\n"[..]));
    let mut n = Client::connect(admin);
    assert_eq!(n.get("/nope").status, 404);
}

#[test]
fn sighup_reloads_live_settings_and_refuses_a_bad_config() {
    let origin = TempDir::new("origin");
    origin.write("a", b"abc");
    let base = config("127.0.0.1:0", origin.path(), 65536, 1 << 24);
    let relay = Relay::start(&base);
    let admin = relay.admin.expect("admin listener");
    // Shrink the memory tier and the idle timeout, and change a restart-only key.
    let changed = base
        .replace("memory_bytes = 16777216", "memory_bytes = 1048576")
        .replace("workers = 2", "workers = 2\nidle_timeout_ms = 300")
        .replace("chunk_size = 65536", "chunk_size = 131072");
    std::fs::write(&relay.config, changed).unwrap();
    relay.signal(libc::SIGHUP);
    assert!(relay.wait_log("relay: reloaded", Duration::from_secs(5)));
    assert!(relay.wait_log("cache.chunk_size", Duration::from_secs(1)));
    std::thread::sleep(Duration::from_millis(400)); // one worker tick
    let mut a = Client::connect(admin);
    let text = String::from_utf8(a.get("/metrics").body).unwrap();
    assert_eq!(metric(&text, "relay_memory_tier_capacity_bytes"), 1048576.0);
    // The new idle timeout applies.
    let mut c = Client::connect(relay.addr);
    assert_eq!(c.get("/a").body, b"abc");
    let t = std::time::Instant::now();
    assert!(c.is_closed());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "idle close took {:?}",
        t.elapsed()
    );
    // A broken config is refused; the relay keeps serving.
    std::fs::write(&relay.config, "[cache]\nchunk_size = 1000\n").unwrap();
    relay.signal(libc::SIGHUP);
    assert!(relay.wait_log("reload refused", Duration::from_secs(5)));
    let mut c = Client::connect(relay.addr);
    assert_eq!(c.get("/a").body, b"abc");
}

#[test]
fn zero_copy_is_tried_and_dropped_where_the_kernel_copies() {
    let origin = TempDir::new("origin");
    let big = relay_tests::pattern(3 << 20, 9);
    origin.write("big.bin", &big);
    let relay = Relay::start(&config("127.0.0.1:0", origin.path(), 1 << 20, 1 << 26));
    let mut c = Client::connect(relay.addr);
    for _ in 0..3 {
        assert!(c.get("/big.bin").body == big);
    }
    let mut a = Client::connect(relay.admin.expect("admin"));
    let text = String::from_utf8(a.get("/metrics").body).unwrap();
    // Over loopback the kernel copies: the first large piece goes zero-copy, its
    // notification says "copied", and the connection sends plainly from then on.
    let copied = metric(&text, "relay_sends_zerocopy_copied_total");
    let zc = metric(&text, "relay_sends_zerocopy_total");
    assert!(copied + zc >= 1.0, "no zero-copy send was tried");
    assert!(
        copied <= 1.0 || zc > 0.0,
        "zero-copy kept being tried after a copy report"
    );
    assert!(metric(&text, "relay_sends_copy_total") >= 8.0);
    // Both thresholds change on SIGHUP: at 0 nothing is tried zero-copy any more.
    let base = std::fs::read_to_string(&relay.config).unwrap();
    let never = base.replace(
        "workers = 2",
        "workers = 2\nzerocopy_min_bytes = 0\nzerocopy_unregistered_min_bytes = 0",
    );
    std::fs::write(&relay.config, never).unwrap();
    relay.signal(libc::SIGHUP);
    assert!(relay.wait_log("relay: reloaded", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(400)); // one worker tick
    for _ in 0..2 {
        let mut c = Client::connect(relay.addr);
        assert!(c.get("/big.bin").body == big);
    }
    let mut a = Client::connect(relay.admin.expect("admin"));
    let text = String::from_utf8(a.get("/metrics").body).unwrap();
    assert_eq!(
        metric(&text, "relay_sends_zerocopy_copied_total")
            + metric(&text, "relay_sends_zerocopy_total"),
        copied + zc,
        "a zero-copy send after both thresholds went to 0"
    );
}

/// Chunks of 16 KiB and more live in the memory tier's arena, which every worker registers
/// with its ring: directory chunks are read into it with READ_FIXED and the first large
/// piece of each connection goes out as a zero-copy send of a fixed buffer (its head
/// linked ahead of it). Loopback copies zero-copy sends, so later pieces go plainly.
#[test]
fn large_chunks_live_in_registered_memory_and_leave_from_it() {
    let test = "large_chunks_live_in_registered_memory_and_leave_from_it";
    let origin = TempDir::new("origin");
    let big = relay_tests::pattern((3 << 20) + 100_000, 5);
    let small = relay_tests::pattern(3000, 6);
    // Above the arena's 16 KiB threshold, below the 64 KiB one for other memory.
    let mid = relay_tests::pattern(40 << 10, 7);
    origin.write("big.bin", &big);
    origin.write("small.bin", &small);
    origin.write("mid.bin", &mid);
    let relay = Relay::start(&config("127.0.0.1:0", origin.path(), 1 << 20, 1 << 26));
    for round in 0..4 {
        let mut c = Client::connect(relay.addr);
        for _ in 0..2 {
            let r = c.get("/big.bin");
            assert_eq!(r.status, 200);
            assert!(r.body == big, "round {round}: body differs");
            assert!(c.get("/small.bin").body == small);
        }
    }
    let mut a = Client::connect(relay.admin.expect("admin"));
    let text = String::from_utf8(a.get("/metrics").body).unwrap();
    let registered = metric(&text, "relay_memory_arena_registered_workers");
    // Four chunks of the big object: three of 1 MiB and one of 100,000 bytes, which takes
    // 112 KiB (seven 16 KiB units); the small object lives on the heap.
    assert_eq!(
        metric(&text, "relay_memory_arena_bytes"),
        ((3 << 20) + (112 << 10)) as f64
    );
    assert_eq!(metric(&text, "relay_memory_arena_fallbacks_total"), 0.0);
    // memory_bytes plus an eighth of headroom.
    assert!(metric(&text, "relay_memory_arena_capacity_bytes") >= (9 << 23) as f64);
    if registered == 0.0 {
        assert!(
            !relay_tests::is_root(),
            "root could not register the arena:\n{text}"
        );
        assert_eq!(metric(&text, "relay_sends_zerocopy_fixed_total"), 0.0);
        eprintln!(
            "SKIPPED: {test}: fixed-buffer part: registering the arena needs root or a \
             larger RLIMIT_MEMLOCK"
        );
        return;
    }
    assert_eq!(registered, 2.0);
    // The directory origin's four chunks were read into registered memory.
    assert!(metric(&text, "relay_reads_fixed_total") >= 4.0);
    // Each of the four connections sent its first big piece from a fixed buffer.
    let fixed = metric(&text, "relay_sends_zerocopy_fixed_total");
    assert!(fixed >= 4.0, "fixed-buffer sends:\n{text}");
    // A 40 KiB object in the arena goes zero-copy too (server.zerocopy_min_bytes, 16 KiB).
    let mut c = Client::connect(relay.addr);
    assert!(c.get("/mid.bin").body == mid); // fills it
    let mut c = Client::connect(relay.addr);
    assert!(c.get("/mid.bin").body == mid);
    let mut a = Client::connect(relay.admin.expect("admin"));
    let text = String::from_utf8(a.get("/metrics").body).unwrap();
    assert!(
        metric(&text, "relay_sends_zerocopy_fixed_total") >= fixed + 1.0,
        "no fixed-buffer send of a 40 KiB arena chunk:\n{text}"
    );
}

/// A client that asks for a large object and stops reading: the first piece goes zero-copy,
/// and its notification would come only once the client acked every byte, which it never
/// does. When the send deadline closes the connection, relay resets it (the send queue is
/// dropped, the notification comes), so the slot and the chunk are let go, instead of being
/// held for as long as the client stays connected.
#[test]
fn a_client_that_stops_reading_is_cut_and_its_slot_freed() {
    let origin = TempDir::new("origin");
    let big = relay_tests::pattern(32 << 20, 11);
    origin.write("big.bin", &big);
    let cfg = config("127.0.0.1:0", origin.path(), 4 << 20, 1 << 26)
        .replace("workers = 2", "workers = 2\nidle_timeout_ms = 1000");
    let relay = Relay::start(&cfg);
    assert!(Client::connect(relay.addr).get("/big.bin").body == big);
    let open = || {
        let mut a = Client::connect(relay.admin.expect("admin"));
        metric(
            &String::from_utf8(a.get("/metrics").body).unwrap(),
            "relay_connections_open",
        )
    };
    // A small receive buffer, set before connecting: the window closes after a few KiB.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&relay.addr.into()).unwrap();
    let mut stalled = std::net::TcpStream::from(s);
    std::io::Write::write_all(&mut stalled, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(open(), 1.0);
    // The send deadline (1 s) passes; within a few ticks the slot is free.
    let mut left = open();
    for _ in 0..60 {
        if left == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = open();
    }
    assert_eq!(left, 0.0, "the stalled connection still holds its slot");
    // The client sees its connection reset (or cut) after some of the body.
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stalled, &mut got);
    assert!(got.len() < big.len());
    drop(stalled);
    assert!(Client::connect(relay.addr).get("/big.bin").body == big);
}

/// One read of `s` within `wait`: `Some(true)` when the server closed it, `Some(false)` when
/// bytes came, `None` when nothing did.
/// Admin connections relay serves at once from one address (`admin::PER_SOURCE`).
const PER_SOURCE: usize = 8;

/// A connection to `admin` from the loopback address 127.0.0.`host` (every 127/8 address
/// is this machine's): clients that look like different hosts.
fn connect_from(admin: SocketAddr, host: u8) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from = SocketAddr::from(([127, 0, 0, host], 0));
    s.bind(&from.into()).expect("bind a loopback source");
    s.connect(&admin.into()).expect("connect");
    s.into()
}

fn read_closed(s: &mut TcpStream, wait: Duration) -> Option<bool> {
    s.set_read_timeout(Some(wait)).unwrap();
    match s.read(&mut [0u8; 512]) {
        Ok(0) => Some(true),
        Ok(_) => Some(false),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(_) => Some(true),
    }
}

/// Waits (at most `within`) for the server to close `s`, dropping what comes; the time it
/// took, or `None` when it stayed open.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        if read_closed(s, Duration::from_millis(100)) == Some(true) {
            return Some(t.elapsed());
        }
    }
    None
}

/// `/healthz` over a fresh connection, and how long it took.
fn healthz(admin: SocketAddr) -> Duration {
    let t = Instant::now();
    let r = Client::connect(admin).get("/healthz");
    assert_eq!((r.status, &r.body[..]), (200, &b"ok\n"[..]));
    t.elapsed()
}

/// A relay with its admin listener, on an empty directory origin.
fn with_empty_origin() -> (TempDir, Relay) {
    let origin = TempDir::new("origin");
    let relay = Relay::start(&config("127.0.0.1:0", origin.path(), 65536, 1 << 24));
    (origin, relay)
}

/// Admin clients trickling their request heads a byte every 200 ms hold neither the
/// listener nor each other: `/healthz` answers at once while they trickle, and each is
/// closed when its head deadline (5 s from its accept, not from its last byte) passes.
#[test]
fn trickling_admin_clients_hold_nothing_and_are_closed_at_their_deadline() {
    const STALLED: usize = PER_SOURCE;
    let (_origin, relay) = with_empty_origin();
    let admin = relay.admin.expect("admin listener");
    // From one other address, as many as it may hold at once.
    let tricklers: Vec<_> = (0..STALLED)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect_from(admin, 2);
                let t = Instant::now();
                s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
                // At most 60 bytes (12 s); the head is never finished.
                for _ in 0..60 {
                    if s.write_all(b"a").is_err() {
                        return Some(t.elapsed());
                    }
                    match read_closed(&mut s, Duration::from_millis(200)) {
                        Some(true) => return Some(t.elapsed()),
                        Some(false) => panic!("an answer to a head never finished"),
                        None => {}
                    }
                }
                None
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    // One more from that address is closed at once.
    let mut more = connect_from(admin, 2);
    let t = closed_within(&mut more, Duration::from_secs(2)).expect("a ninth stayed open");
    assert!(t < Duration::from_secs(1), "closed after {t:?}");
    let times: Vec<Duration> = (0..10).map(|_| healthz(admin)).collect();
    let worst = times.iter().max().copied().unwrap_or_default();
    eprintln!("/healthz with {STALLED} trickling admin clients: worst of 10 {worst:?}");
    assert!(
        worst < Duration::from_millis(200),
        "/healthz took {times:?}"
    );
    for t in tricklers {
        let closed = t.join().unwrap().expect("a trickler was never closed");
        assert!(
            closed >= Duration::from_millis(4500) && closed < Duration::from_secs(8),
            "a trickler was closed after {closed:?}, not at its 5 s deadline"
        );
    }
    assert!(healthz(admin) < Duration::from_millis(200));
}

/// At most 64 admin connections are served at once. Clients from many addresses that take
/// them all and stay silent cannot keep a health check out: a new connection that finds
/// them all taken closes the oldest, `/healthz` answers at once, and the rest still end at
/// their deadline.
#[test]
fn a_full_admin_listener_closes_its_oldest_connection_for_a_new_one() {
    const HELD: usize = 64;
    let (_origin, relay) = with_empty_origin();
    let admin = relay.admin.expect("admin listener");
    // From as many addresses as it takes, each holding as many as it may.
    let per = PER_SOURCE;
    let mut held: Vec<TcpStream> = (0..HELD)
        .map(|i| connect_from(admin, 2 + (i / per) as u8))
        .collect();
    // Let the listener take them all before the health checks come.
    std::thread::sleep(Duration::from_millis(300));
    let times: Vec<Duration> = (0..4).map(|_| healthz(admin)).collect();
    eprintln!("/healthz with {HELD} silent admin connections held: {times:?}");
    assert!(
        times.iter().all(|t| *t < Duration::from_millis(200)),
        "/healthz took {times:?}"
    );
    // The first closed the oldest held connection at once; its slot served the others
    // (a check that came before the closed one's thread ended closed the next oldest).
    let t = closed_within(&mut held[0], Duration::from_secs(2)).expect("the oldest stayed open");
    assert!(t < Duration::from_secs(1), "the oldest closed after {t:?}");
    let closed: Vec<bool> = held[1..]
        .iter_mut()
        .map(|s| read_closed(s, Duration::from_millis(20)) == Some(true))
        .collect();
    let early = closed.iter().take_while(|c| **c).count();
    assert!(
        early < times.len() && closed[early..].iter().all(|c| !c),
        "closed early: {closed:?} (oldest first, one per check at most)"
    );
    // The rest are closed at their deadline.
    for s in &mut held[1 + early..] {
        assert!(
            closed_within(s, Duration::from_secs(8)).is_some(),
            "a silent connection outlived its deadline"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(healthz(admin) < Duration::from_millis(200));
}

/// An HTTP origin's answers by what became of them: a miss, a hit, a revalidation the
/// origin confirmed (304), a pass-through, the origin's 404 (a miss of class 4xx).
#[test]
fn responses_are_counted_by_result_and_status_class() {
    use relay_tests::origin::{Object, Origin};
    let origin = Origin::start();
    origin.put("/fresh", Object::new(b"fresh".to_vec(), "f"));
    let mut stale = Object::new(b"stale".to_vec(), "s");
    stale.cache_control = Some("max-age=0".into());
    origin.put("/stale", stale);
    let mut missing = Object::new(b"gone".to_vec(), "m");
    missing.status = 404;
    origin.put("/missing", missing);
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[[origin.http]]\nurl = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    ));
    let mut c = Client::connect(relay.addr);
    assert_eq!(c.get("/fresh").status, 200);
    assert_eq!(c.get("/fresh").status, 200);
    assert_eq!(c.get("/stale").status, 200);
    assert_eq!(c.get("/stale").status, 200);
    assert_eq!(c.get("/missing").status, 404);
    let (code, _, err) =
        relay_tests::curl(&["-X", "DELETE", "-o", "/dev/null", &relay.url("/fresh")]);
    assert_eq!(code, 0, "{err}");
    let text = relay.metrics();
    // (The origin's label: the Host it serves, any, and its prefix.)
    let n = |result: &str, class: &str| {
        let want = format!("result=\"{result}\",status=\"{class}\"}}");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("relay_responses_total{origin=\"") && l.contains(&want))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(!lines[0].contains("origin=\"-\""), "{}", lines[0]);
        lines[0].rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    assert_eq!(n("miss", "2xx"), 2.0, "{text}");
    assert_eq!(n("hit", "2xx"), 1.0, "{text}");
    assert_eq!(n("revalidated", "2xx"), 1.0, "{text}");
    assert_eq!(n("miss", "4xx"), 1.0, "{text}");
    let passed: f64 = ["2xx", "4xx", "5xx"].iter().map(|c| n("pass", c)).sum();
    assert_eq!(passed, 1.0, "{text}");
}

/// `relay cache inspect URL` (the admin listener's `/cache?key=`): a cached object's
/// description, validators, age and TTL, and where its chunks are; nothing for one never
/// asked (exit status 1).
#[test]
fn cache_inspect_tells_what_is_held_of_a_url() {
    use relay_tests::origin::{Object, Origin};
    let origin = Origin::start();
    origin.put(
        "/seg/1.ts",
        Object::new(relay_tests::pattern(3 * 65536 + 10, 4), "seg1"),
    );
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[cache]\nchunk_size = 65536\n\n\
         [[origin.http]]\nurl = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    ));
    assert_eq!(Client::connect(relay.addr).get("/seg/1.ts").status, 200);
    let admin = relay.admin.expect("admin").to_string();
    let inspect = |url: &str| {
        let out = std::process::Command::new(relay_tests::relay_bin())
            .args(["cache", "inspect", url, "--admin", &admin])
            .output()
            .expect("relay cache inspect");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // (The test client sends `Host: test`.)
    let (code, text) = inspect("http://TEST:80/seg/1.ts");
    assert_eq!(code, Some(0), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let d = &v["description"];
    assert_eq!(v["held"], true, "{v}");
    assert_eq!(d["status"], 200, "{v}");
    assert_eq!(d["length"], 3 * 65536 + 10, "{v}");
    assert_eq!(d["etag"], "\"seg1\"", "{v}");
    assert_eq!(d["ttl_s"], 300, "max-age=300: {v}");
    assert_eq!(d["fresh"], true, "{v}");
    assert!(d["age_s"].as_u64().is_some_and(|a| a < 5), "{v}");
    assert_eq!(d["chunks"]["count"], 4, "{v}");
    assert_eq!(d["chunks"]["memory"], 4, "{v}");
    let (code, text) = inspect("http://test/never");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("\"held\":false"), "{text}");
}

/// Origins that share a URL and prefix, told apart by the Host they serve, each have their
/// own series: no two lines of /metrics name the same metric with the same labels (a
/// scrape with duplicates is refused whole by Prometheus).
#[test]
fn origins_sharing_a_url_have_series_of_their_own() {
    let mut cfg = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    for host in ["a.test", "b.test", "c.test"] {
        cfg.push_str(&format!(
            "\n[[origin.http]]\nurl = \"http://127.0.0.1:9\"\nhost = \"{host}\"\n"
        ));
    }
    let relay = Relay::start(&cfg);
    let text = relay.metrics();
    let mut seen = std::collections::HashSet::new();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s))
        .collect();
    let twice: Vec<&&str> = series.iter().filter(|s| !seen.insert(**s)).collect();
    assert!(twice.is_empty(), "series twice: {twice:?}");
    assert!(
        text.contains("relay_origin_server_up{origin=\"127.0.0.1:9/ host=b.test\""),
        "{text}"
    );
}

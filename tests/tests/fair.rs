//! Fair budgets (issue 13, point 2): no client address can take what every other client
//! needs. Attackers are raw `TcpStream`s bound to one loopback address (127.0.0.3 and up:
//! every 127/8 address is this machine's); the good client is curl from 127.0.0.2, against
//! the test kit's HTTP origin. Every loop is bounded in time and count.

use relay_tests::Relay;
use relay_tests::client::Client;
use relay_tests::origin::Origin;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A relay in front of `origin` with `server` and `origin` lines added to its tables.
fn start(origin: &Origin, server: &str, origin_keys: &str) -> Relay {
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n{server}\n\
         [cache]\nmemory_bytes = \"64 MiB\"\n\n\
         [origin]\n{origin_keys}\n\n[[origin.http]]\nurl = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    ))
}

/// A connection to `to` from the loopback address 127.0.0.`host`.
fn connect_from(to: SocketAddr, host: u8) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::from(([127, 0, 0, host], 0)).into())
        .expect("bind a loopback source");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    s.into()
}

/// What a streamed request body holds of the pass-through budget: one upload window and
/// its piece allowance (`relay_upstream::upload`).
const WINDOW: u64 = (256 << 10) + 128;

/// The value of metric `name` (0 when absent).
fn metric(relay: &Relay, name: &str) -> f64 {
    relay.metric(name).unwrap_or(0.0)
}

/// Waits (at most `within`) until metric `name` satisfies `ok`; its last value.
fn wait_metric(relay: &Relay, name: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
    let end = Instant::now() + within;
    loop {
        let v = metric(relay, name);
        if ok(v) || Instant::now() > end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one read of `s` within `wait` says: `Some(true)` the server closed it (or reset
/// it), `Some(false)` bytes came (appended to `got`), `None` nothing came.
fn read_some(s: &mut TcpStream, wait: Duration, got: &mut Vec<u8>) -> Option<bool> {
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 16384];
    match s.read(&mut buf) {
        Ok(0) => Some(true),
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            Some(false)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(_) => Some(true),
    }
}

/// The status of the response at the start of `got`, once its status line is there.
fn status_of(got: &[u8]) -> Option<u16> {
    let line = got.split(|&b| b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One POST by curl from 127.0.0.2: its status and how long it took.
fn good_post(relay: &Relay, body: &str) -> (u16, Duration) {
    let t = Instant::now();
    let (code, out, err) = relay_tests::curl(&[
        "--interface",
        "127.0.0.2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        body,
        &relay.url("/up"),
    ]);
    assert_eq!(code, 0, "curl: {err}");
    let status = String::from_utf8_lossy(&out).trim().parse().unwrap_or(0);
    (status, t.elapsed())
}

/// An attacker's connection and what it read back.
type Conns = Arc<std::sync::Mutex<Vec<(TcpStream, Vec<u8>)>>>;

/// Uploads announcing `len` bytes from 127.0.0.`host`, trickling a byte every 500 ms on a
/// thread of their own (at most `for_at_most`) until dropped.
struct Trickle {
    /// Each upload's connection, and what it read back.
    conns: Conns,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trickle {
    fn start(relay: &Relay, host: u8, n: usize, len: u64, for_at_most: Duration) -> Trickle {
        let mut conns = Vec::new();
        for _ in 0..n {
            let mut s = connect_from(relay.addr, host);
            let head = format!("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\nx");
            s.write_all(head.as_bytes()).expect("send the head");
            conns.push((s, Vec::new()));
        }
        let conns = Arc::new(std::sync::Mutex::new(conns));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + for_at_most;
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(500));
                for (s, _) in c.lock().unwrap().iter_mut() {
                    let _ = s.write_all(b"x");
                }
            }
        });
        Trickle {
            conns,
            stop,
            thread: Some(thread),
        }
    }

    /// The statuses the uploads were answered with so far (None: not answered), looking
    /// for at most `wait` on each.
    fn answers(&self, wait: Duration) -> Vec<Option<u16>> {
        let mut conns = self.conns.lock().unwrap();
        conns
            .iter_mut()
            .map(|(s, got)| {
                if status_of(got).is_none() {
                    let _ = read_some(s, wait, got);
                }
                status_of(got)
            })
            .collect()
    }
}

impl Trickle {
    /// Waits (at most `within`) for every upload to be answered; each one's status and when
    /// it came, from `since` (None: never).
    fn answered(&self, since: Instant, within: Duration) -> Vec<Option<(u16, Duration)>> {
        let n = self.conns.lock().unwrap().len();
        let mut out = vec![None; n];
        let end = Instant::now() + within;
        while out.iter().any(Option::is_none) && Instant::now() < end {
            let mut conns = self.conns.lock().unwrap();
            for (i, (s, got)) in conns.iter_mut().enumerate() {
                if out[i].is_none() {
                    let _ = read_some(s, Duration::from_millis(5), got);
                    out[i] = status_of(got).map(|st| (st, since.elapsed()));
                }
            }
            drop(conns);
            std::thread::sleep(Duration::from_millis(5));
        }
        out
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Four uploads from one address announcing 64 MiB each and trickling a byte every 500 ms
/// (the attack of issue 13), the first after sending 8 MiB at once. They used to be
/// collected whole: the four reserved 256 MiB, the default budget, and every other
/// client's POST got 503. Now a body longer than one upload window is streamed to the
/// origin as it comes, and each holds one window (256 KiB) however long it is and however
/// it is sent. The client's share still bounds how many windows one address holds: with
/// a share of 4 MiB, 15 windows fit and the uploads past them get 503 (`pass_share`). A
/// good client's POSTs from another address meanwhile all pass. The body deadline is set
/// far off here: this is the budget alone.
#[test]
fn trickling_uploads_hold_one_window_each_within_their_clients_share() {
    let origin = Origin::start();
    let keep = "body_timeout_ms = 60000\nbody_min_rate = 0";
    const LEN: u64 = 64 << 20;
    let relay = start(&origin, keep, "");
    let mut fast = connect_from(relay.addr, 3);
    fast.write_all(
        format!("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
    )
    .expect("head");
    fast.write_all(&vec![b'f'; 8 << 20]).expect("8 MiB at once");
    let attack = Trickle::start(&relay, 3, 3, LEN, Duration::from_secs(20));
    let held = wait_metric(
        &relay,
        "relay_pass_buffer_bytes",
        Duration::from_secs(5),
        |v| v >= (4 * WINDOW) as f64,
    );
    assert_eq!(held, (4 * WINDOW) as f64, "one window each");
    assert_eq!(metric(&relay, "relay_pass_uploads_streamed_total"), 4.0);
    let mut times = Vec::new();
    for i in 0..20 {
        let (status, took) = good_post(&relay, &format!("good {i}"));
        assert_eq!(status, 200, "the good client's POST {i}");
        times.push(took);
    }
    times.sort();
    eprintln!(
        "good POSTs beside 4 trickling 64 MiB uploads: median {:?}, worst {:?} of 20; \
         the uploads hold {held} bytes",
        times[10], times[19]
    );
    assert!(times[19] < Duration::from_secs(2), "{times:?}");
    let answers = attack.answers(Duration::from_millis(10));
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    drop((attack, fast));
    let held = wait_metric(
        &relay,
        "relay_pass_buffer_bytes",
        Duration::from_secs(5),
        |v| v == 0.0,
    );
    assert_eq!(held, 0.0, "the windows go back with their connections");
    assert_eq!(metric(&relay, "relay_pass_buffer_clients"), 0.0);

    // A share of 4 MiB: 15 windows fit; 20 uploads from one address, 5 refused.
    let relay = start(&origin, keep, "pass_buffer_per_client = \"4 MiB\"");
    let attack = Trickle::start(&relay, 3, 20, LEN, Duration::from_secs(20));
    let held = wait_metric(
        &relay,
        "relay_pass_buffer_bytes",
        Duration::from_secs(5),
        |v| v >= (15 * WINDOW) as f64,
    );
    let answers = attack.answers(Duration::from_millis(300));
    assert_eq!(
        answers.iter().filter(|a| **a == Some(503)).count(),
        5,
        "the uploads past their address's share are refused: {answers:?}"
    );
    assert_eq!(answers.iter().filter(|a| a.is_none()).count(), 15);
    assert_eq!(held, (15 * WINDOW) as f64);
    assert!(
        metric(
            &relay,
            "relay_errors_total{status=\"503\",reason=\"pass_share\"}"
        ) >= 5.0
    );
    let (status, _) = good_post(&relay, "another address");
    assert_eq!(status, 200);
    drop(attack);
    let held = wait_metric(
        &relay,
        "relay_pass_buffer_bytes",
        Duration::from_secs(5),
        |v| v == 0.0,
    );
    assert_eq!(held, 0.0);
}

/// The uploads again, with a body deadline of 2 s (the default rate, 8 KiB/s):
/// four bodies trickled a byte every 500 ms, and one that sent 512 KiB at once and paused,
/// are each answered 408 about 2 s after they began (the rate cuts the trickles, the pause
/// the other), never later than the deadline plus the worker's 200 ms sweep; the
/// connections close, every reservation goes back, and a good client's POSTs meanwhile
/// pass. Uploads from one address announcing 1 MiB: streamed, a window each.
#[test]
fn a_trickled_or_paused_body_is_answered_408_within_its_deadline() {
    let origin = Origin::start();
    let relay = start(&origin, "body_timeout_ms = 2000", "");
    let started = Instant::now();
    let trickles = Trickle::start(&relay, 3, 4, 1 << 20, Duration::from_secs(10));
    let mut paused = connect_from(relay.addr, 4);
    paused
        .write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
        .unwrap();
    paused.write_all(&[b'p'; 512 << 10]).unwrap();
    let paused_at = Instant::now();
    let held = wait_metric(
        &relay,
        "relay_pass_buffer_bytes",
        Duration::from_secs(2),
        |v| v >= (5 * WINDOW) as f64,
    );
    assert_eq!(
        held,
        (5 * WINDOW) as f64,
        "five bodies streamed, a window each"
    );
    let (status, took) = good_post(&relay, "while they trickle");
    assert_eq!(status, 200);
    eprintln!("a good POST beside five slow bodies: {took:?}");
    let answers = trickles.answered(started, Duration::from_secs(5));
    eprintln!("trickled bodies answered: {answers:?}");
    for a in &answers {
        let (status, after) = a.expect("a trickled body was never answered");
        assert_eq!(status, 408);
        assert!(
            after >= Duration::from_millis(1900) && after < Duration::from_millis(3000),
            "a trickled body lived {after:?}, not about its 2 s deadline"
        );
    }
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while status_of(&got).is_none() && Instant::now() < end {
        if read_some(&mut paused, Duration::from_millis(20), &mut got) == Some(true) {
            break;
        }
    }
    let lived = paused_at.elapsed();
    eprintln!("the paused body answered {:?} after its last byte", lived);
    assert_eq!(status_of(&got), Some(408));
    assert!(lived >= Duration::from_millis(1900) && lived < Duration::from_millis(3000));
    // Each connection ends (after the lingering read), and every reservation is back.
    let closed =
        (0..250).any(|_| read_some(&mut paused, Duration::from_millis(20), &mut got) == Some(true));
    assert!(closed, "the paused upload's connection stayed open");
    assert_eq!(
        wait_metric(
            &relay,
            "relay_pass_buffer_bytes",
            Duration::from_secs(2),
            |v| v == 0.0
        ),
        0.0
    );
    assert_eq!(
        metric(
            &relay,
            "relay_errors_total{status=\"408\",reason=\"body_too_slow\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &relay,
            "relay_errors_total{status=\"408\",reason=\"body_timeout\"}"
        ),
        1.0
    );
    assert_eq!(good_post(&relay, "after").0, 200);
}

/// Clients that ask for a passed-through body (8 MiB, `no-store`) and stop reading after
/// its head are cut at the send deadline (here the idle timeout, 1.5 s) as readers of
/// cached bodies are, and the windows they held go back to the budget: a 5.75 MiB budget two
/// of them filled (each a 2 MiB window and the 896 KiB its upstream connection and job
/// hold besides) serves again.
#[test]
fn stalled_readers_of_passed_through_bodies_are_cut_and_their_windows_given_back() {
    use relay_tests::origin::Object;
    let origin = Origin::start();
    let body = relay_tests::pattern(8 << 20, 7);
    origin.put("/big", Object::new(body.clone(), "big"));
    let relay = start(
        &origin,
        "idle_timeout_ms = 1500",
        "pass_buffer_bytes = \"5888 KiB\"\npass_buffer_per_client = 0",
    );
    let ask = b"GET /big HTTP/1.1\r\nHost: t\r\nCache-Control: no-store\r\n\r\n";
    let stall = |host: u8| {
        // A small receive buffer, set before connecting: the window closes after a few KiB.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_recv_buffer_size(4096).expect("rcvbuf");
        s.bind(&SocketAddr::from(([127, 0, 0, host], 0)).into())
            .expect("bind");
        s.connect(&relay.addr.into()).expect("connect");
        let mut s = TcpStream::from(s);
        s.write_all(ask).expect("ask");
        let mut got = Vec::new();
        while status_of(&got).is_none() {
            assert_eq!(
                read_some(&mut s, Duration::from_secs(5), &mut got),
                Some(false)
            );
        }
        assert_eq!(status_of(&got), Some(200));
        (s, Instant::now())
    };
    let mut stalled = [stall(5), stall(6)];
    assert_eq!(
        wait_metric(
            &relay,
            "relay_pass_buffer_bytes",
            Duration::from_secs(2),
            |v| { v >= (5888 << 10) as f64 }
        ),
        (5888 << 10) as f64,
        "two windows fill the budget"
    );
    let mut c = Client::connect(relay.addr);
    c.send(ask);
    assert_eq!(c.read_response(false).expect("answer").status, 503);
    drop(c);
    // Cut at the send deadline: about 1.5 s after their last progress (and within the
    // worker's 200 ms sweep), both are closed as timeouts, without a byte read meanwhile.
    let since = stalled.iter().map(|(_, t)| *t).min().expect("two");
    let cut = wait_metric(
        &relay,
        "relay_connection_timeouts_total",
        Duration::from_secs(6),
        |v| v >= 2.0,
    );
    let after = since.elapsed();
    eprintln!("stalled readers of passed-through bodies cut {after:?} after their heads");
    assert_eq!(cut, 2.0, "the stalled readers were not cut");
    assert!(after < Duration::from_secs(3), "cut after {after:?}");
    for (s, _) in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        let mut n_read = 0;
        for _ in 0..100 {
            match s.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => n_read += n,
            }
        }
        assert!(n_read < body.len(), "a stalled client got the whole body");
    }
    assert_eq!(
        wait_metric(
            &relay,
            "relay_pass_buffer_bytes",
            Duration::from_secs(3),
            |v| v == 0.0
        ),
        0.0,
        "the stalled readers' windows stayed reserved"
    );
    eprintln!("their windows back {:?} after their heads", since.elapsed());
    let r = Client::connect(relay.addr).get_with("/big", "Cache-Control: no-store\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert!(metric(&relay, "relay_connection_timeouts_total") >= 2.0);
}

/// A GET of `/a` on `s`: its status, or None when the connection was closed first.
fn get_a(s: &mut TcpStream) -> Option<u16> {
    if s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
        return None;
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        if got.ends_with(b"abc") {
            break;
        }
        if read_some(s, Duration::from_millis(50), &mut got) == Some(true) {
            return None;
        }
    }
    status_of(&got)
}

/// At most `server.max_connections_per_client` connections (8 here) from one address,
/// across both workers: a ninth is closed as it is accepted, without an answer, and counted
/// (`relay_connections_refused_total{reason="per_client"}`), while other addresses get in;
/// a close makes room again; the limit changes on SIGHUP (0: off); and once every
/// connection has closed no address is counted any more (each counted down exactly once).
#[test]
fn connections_past_the_per_client_limit_are_refused_while_other_addresses_get_in() {
    use relay_tests::origin::Object;
    let origin = Origin::start();
    origin.put("/a", Object::new(b"abc".to_vec(), "a"));
    let relay = start(&origin, "max_connections_per_client = 8", "");
    let mut held: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = connect_from(relay.addr, 3);
            assert_eq!(get_a(&mut s), Some(200), "connection {i} of 8");
            s
        })
        .collect();
    let mut refused_after = Vec::new();
    for _ in 0..3 {
        let mut extra = connect_from(relay.addr, 3);
        let t = Instant::now();
        assert_eq!(get_a(&mut extra), None, "a ninth connection was answered");
        refused_after.push(t.elapsed());
    }
    eprintln!("connections past the per-client limit closed after {refused_after:?}");
    assert!(refused_after.iter().all(|t| *t < Duration::from_secs(1)));
    // Other addresses get in: curl from 127.0.0.2, eight more from 127.0.0.4.
    let (status, took) = good_post(&relay, "another address");
    assert_eq!(status, 200);
    eprintln!("a POST from another address meanwhile: {took:?}");
    let others: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect_from(relay.addr, 4);
            assert_eq!(get_a(&mut s), Some(200));
            s
        })
        .collect();
    assert_eq!(
        metric(
            &relay,
            "relay_connections_refused_total{reason=\"per_client\"}"
        ),
        3.0
    );
    // (curl's address is let go once relay has seen its close.)
    let clients = wait_metric(
        &relay,
        "relay_connection_clients",
        Duration::from_secs(2),
        |v| v == 2.0,
    );
    assert_eq!(clients, 2.0, "127.0.0.3 and 127.0.0.4");
    // One of the eight closes: once relay has seen it, there is room for one more.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut s = connect_from(relay.addr, 3);
        if get_a(&mut s) == Some(200) {
            again = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    held.push(again.expect("no room after a close"));
    let mut ninth = connect_from(relay.addr, 3);
    assert_eq!(get_a(&mut ninth), None, "still eight at most");
    // Off on SIGHUP: twelve more from the same address get in.
    let text = std::fs::read_to_string(&relay.config).unwrap();
    let off = text.replace(
        "max_connections_per_client = 8",
        "max_connections_per_client = 0",
    );
    std::fs::write(&relay.config, off).unwrap();
    relay.signal(libc::SIGHUP);
    assert!(relay.wait_log("relay: reloaded", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(500)); // a worker tick
    for _ in 0..12 {
        let mut s = connect_from(relay.addr, 3);
        assert_eq!(get_a(&mut s), Some(200), "refused with the limit off");
        held.push(s);
    }
    drop((held, others, ninth));
    let end = Instant::now() + Duration::from_secs(5);
    while (metric(&relay, "relay_connection_clients") > 0.0
        || metric(&relay, "relay_connections_open") > 0.0)
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&relay, "relay_connection_clients"), 0.0);
    assert_eq!(metric(&relay, "relay_connections_open"), 0.0);
}

//! An origin server given by DNS name, looked up through a name server no one here wrote
//! (dnsmasq on a loopback port, answering from its own hosts file, TTL 1 s; no query leaves
//! the machine): the relay follows the name as its records change, spreads misses over
//! every address it has, and keeps the last addresses when the name server dies.
//! Two python `http.server`s on one port at 127.0.0.2 and 127.0.0.3 (both on loopback)
//! serve the same names with different bytes, so each answer tells which one was asked.

use relay_tests::dnsmasq::Dnsmasq;
use relay_tests::python::PythonOrigin;
use relay_tests::{Relay, TempDir, fetch};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[test]
fn an_origin_named_in_dns_is_followed_as_its_records_change() {
    let test = "an_origin_named_in_dns_is_followed_as_its_records_change";
    let Some(mut dns) = Dnsmasq::start(&[("127.0.0.2", "origin.test")]) else {
        eprintln!("SKIPPED: {test}: dnsmasq is not installed (`cargo xtask setup` installs it)");
        return;
    };
    let (a_files, b_files) = (TempDir::new("dns-a"), TempDir::new("dns-b"));
    for i in 0..200 {
        a_files.write(&format!("o{i}"), format!("from a, o{i}").as_bytes());
        b_files.write(&format!("o{i}"), format!("from b, o{i}").as_bytes());
    }
    let port = std::net::TcpListener::bind((A, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let a = PythonOrigin::start_on(a_files.path(), A, port);
    let b = PythonOrigin::start_on(b_files.path(), B, port);
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[origin]\n\
         resolver = [\"127.0.0.1:{}\"]\nresolver_timeout_ms = 500\ndns_ttl_min_ms = 500\n\n\
         [[origin.http]]\nurl = \"http://origin.test:{port}\"\nconnect_timeout_ms = 500\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        dns.port
    ));
    let mut next = 0;
    let mut miss = || {
        let i = next;
        next += 1;
        assert!(i < 200, "more misses than objects");
        let got = fetch(&relay.url(&format!("/o{i}")), &[]);
        assert_eq!(got.status, 200, "/o{i}: {}", got.head);
        match String::from_utf8_lossy(&got.body).split(',').next() {
            Some("from a") => 'a',
            Some("from b") => 'b',
            _ => panic!("/o{i}: {:?}", got.body),
        }
    };
    // Looked up before the first request.
    let first: String = (0..5).map(|_| miss()).collect();
    assert_eq!(first, "aaaaa");
    assert!(dns.queries("origin.test") >= 1);

    // The name moves to b: within its TTL (1 s) and a lookup, misses go to b alone.
    dns.set(&[("127.0.0.3", "origin.test")]);
    let moved = Instant::now();
    while miss() != 'b' {
        assert!(
            moved.elapsed() < Duration::from_secs(5),
            "still asking a 5 s after its record went (TTL 1 s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "the name moved: misses went to b after {:?}",
        moved.elapsed()
    );
    let after: String = (0..10).map(|_| miss()).collect();
    assert_eq!(after, "b".repeat(10), "a left the pool with its record");
    let metrics = relay.metrics();
    let up = |ip: Ipv4Addr| {
        metrics.lines().any(|l| {
            l.starts_with("relay_origin_server_up{")
                && l.contains(&format!("server=\"origin.test:{port} ({ip}:{port})\""))
                && l.ends_with(" 1")
        })
    };
    assert!(up(B) && !up(A), "{metrics}");

    // Both addresses: misses spread over both.
    dns.set(&[("127.0.0.2", "origin.test"), ("127.0.0.3", "origin.test")]);
    std::thread::sleep(Duration::from_millis(2500));
    let both: String = (0..20).map(|_| miss()).collect();
    eprintln!("two records: {both}");
    assert_eq!(both.matches('a').count(), 10, "round robin: {both}");

    // The name server dies: the last addresses are kept, misses still answered by both.
    dns.kill();
    assert!(relay.wait_log("cannot look up origin.test", Duration::from_secs(5)));
    let kept: String = (0..20).map(|_| miss()).collect();
    assert_eq!(kept.matches('a').count(), 10, "both kept: {kept}");
    eprintln!(
        "origin gets: a {}, b {}; name server queries: {}",
        a.gets("/"),
        b.gets("/"),
        dns.queries("origin.test")
    );
}

/// An https origin by name: connected to at the address its name resolves to, its
/// certificate verified for the name (and the name sent in SNI and Host).
#[test]
fn an_https_origin_named_in_dns_is_verified_for_its_name() {
    let test = "an_https_origin_named_in_dns_is_verified_for_its_name";
    let Some(dns) = Dnsmasq::start(&[("127.0.0.1", "origin.test")]) else {
        eprintln!("SKIPPED: {test}: dnsmasq is not installed (`cargo xtask setup` installs it)");
        return;
    };
    let files = TempDir::new("dns-tls-www");
    let body = relay_tests::pattern(700_000, 9);
    files.write("big.bin", &body);
    let ca = relay_tests::tls::TestCa::new("relay test CA");
    let cert = ca.server(&["origin.test"]);
    let origin = relay_tests::nginx::NginxOrigin::start_tls(
        files.path(),
        &cert.chain,
        &cert.key,
        "location / { expires 1h; }",
    );
    let pem = files.write("ca.pem", ca.pem().as_bytes());
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[origin]\n\
         resolver = [\"127.0.0.1:{}\"]\n\n[[origin.http]]\nurl = \"https://origin.test:{}\"\n\
         tls_ca_file = \"{}\"\n",
        dns.port,
        origin.port,
        pem.display()
    ));
    let got = fetch(&relay.url("/big.bin"), &[]);
    assert_eq!(got.status, 200, "{}", got.head);
    assert!(got.body == body, "other bytes");
    assert!(dns.queries("origin.test") >= 1);
    let asked = origin.access_log();
    assert!(!asked.is_empty(), "nginx was asked over TLS");
}

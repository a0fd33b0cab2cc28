//! HTTPS origins (`url = "https://..."`), against nginx serving TLS with a certificate from
//! a CA made at test time: bodies arrive whole and verified, connections are reused, an
//! upload goes over TLS too; a certificate not signed by the CA relay trusts, or not valid
//! for the name it verifies, is a 502 with the reason logged and no request sent, and only
//! the loudly named `tls_insecure_skip_verify` lets it through.

use relay_tests::nginx::NginxOrigin;
use relay_tests::tls::TestCa;
use relay_tests::{Relay, TempDir, fetch, pattern};
use std::time::Duration;

const CHUNK: usize = 256 << 10;

struct Site {
    origin: NginxOrigin,
    ca: TestCa,
    files: TempDir,
    big: Vec<u8>,
}

/// nginx over TLS, its certificate for `origin.test` and 127.0.0.1, serving a 1.3 MiB
/// file and small ones.
fn site() -> Site {
    let files = TempDir::new("tls-www");
    let big = pattern(5 * CHUNK + 12_345, 21);
    files.write("big.bin", &big);
    for i in 0..10 {
        files.write(&format!("s{i}.txt"), format!("small {i}\n").as_bytes());
    }
    let ca = TestCa::new("relay test CA");
    let cert = ca.server(&["origin.test", "127.0.0.1"]);
    let origin = NginxOrigin::start_tls(
        files.path(),
        &cert.chain,
        &cert.key,
        "client_max_body_size 8m;\nlocation / { expires 1h; }",
    );
    Site {
        origin,
        ca,
        files,
        big,
    }
}

/// A relay in front of `site` with these `[[origin.http]]` TLS lines.
fn relay(site: &Site, tls: &str) -> Relay {
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\n\
         [[origin.http]]\nurl = \"https://127.0.0.1:{}\"\ndown_after_failures = 1000\n{tls}\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        site.origin.port
    ))
}

#[test]
fn an_https_origin_is_fetched_verified_with_its_connections_reused() {
    let site = site();
    let dir = TempDir::new("tls-ca");
    let ca = dir.write("ca.pem", site.ca.pem().as_bytes());
    let relay = relay(
        &site,
        &format!(
            "tls_server_name = \"origin.test\"\ntls_ca_file = \"{}\"",
            ca.display()
        ),
    );
    let got = fetch(&relay.url("/big.bin"), &[]);
    assert_eq!((got.code, got.status), (0, 200), "{}", got.head);
    assert!(
        got.body == site.big,
        "{} bytes, not the file",
        got.body.len()
    );
    let again = fetch(&relay.url("/big.bin"), &[]);
    assert!(again.body == site.big);
    assert!(
        again
            .field("cache-status")
            .is_some_and(|s| s.contains("hit")),
        "{}",
        again.head
    );
    let part = fetch(&relay.url("/big.bin"), &["-r", "300000-300099"]);
    assert_eq!(part.status, 206);
    assert!(part.body == site.big[300_000..300_100]);
    for i in 0..10 {
        let got = fetch(&relay.url(&format!("/s{i}.txt")), &[]);
        assert_eq!(got.status, 200);
        assert_eq!(got.body, format!("small {i}\n").as_bytes());
    }
    // A small request body is sent whole through the pool; a large one is streamed on a
    // connection of its own, over TLS as well (nginx refuses a POST to a static file: its
    // answer, not a 502).
    let upload = site.files.write("upload.bin", &pattern(4 << 20, 5));
    let data = format!("@{}", upload.display());
    for body in ["some bytes", data.as_str()] {
        let posted = fetch(
            &relay.url("/s0.txt"),
            &["-X", "POST", "--data-binary", body],
        );
        assert_eq!(posted.status, 405, "{}", posted.head);
    }
    // (nginx logs a request once it is finished, the 4 MiB body it refused read and
    // dropped first: a moment after relay passed its 405 on.)
    let posts = |log: &[(u64, String)]| {
        log.iter()
            .filter(|(_, r)| r.starts_with("POST /s0.txt"))
            .count()
    };
    let mut log = site.origin.access_log();
    for _ in 0..100 {
        if posts(&log) >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        log = site.origin.access_log();
    }
    let connections: std::collections::HashSet<u64> = log.iter().map(|(c, _)| *c).collect();
    eprintln!(
        "HTTPS origin: {} requests over {} TLS connections",
        log.len(),
        connections.len()
    );
    assert_eq!(posts(&log), 2);
    assert!(
        relay
            .metric("relay_pass_uploads_streamed_total")
            .unwrap_or(0.0)
            >= 1.0,
        "the large body was not streamed"
    );
    // The object (one fetch: the head's span holds it), the small files (10) and the
    // uploads: reused connections, not one each.
    assert!(log.len() >= 13, "{log:?}");
    assert!(connections.len() * 2 <= log.len(), "{log:?}");
}

#[test]
fn an_untrusted_or_misnamed_certificate_is_refused_unless_verification_is_turned_off() {
    let site = site();
    let other = TestCa::new("another CA");
    let cases = [
        // The system's roots (`/etc/ssl/certs`): the test CA is not among them.
        (
            String::new(),
            "tls_server_name = \"origin.test\"",
            "UnknownIssuer",
        ),
        // Signed by a CA relay does not trust.
        (
            other.pem(),
            "tls_server_name = \"origin.test\"\ntls_ca_file = \"CA\"",
            "UnknownIssuer",
        ),
        // Trusted, but not valid for the name verified.
        (
            site.ca.pem(),
            "tls_server_name = \"elsewhere.test\"\ntls_ca_file = \"CA\"",
            "not valid for name",
        ),
    ];
    for (pem, tls, reason) in cases {
        let dir = TempDir::new("tls-ca");
        let ca = dir.write("ca.pem", pem.as_bytes());
        let tls = tls.replace("CA", &ca.display().to_string());
        let before = site.origin.access_log().len();
        let relay = relay(&site, &tls);
        let got = fetch(&relay.url("/s1.txt"), &[]);
        assert_eq!(got.status, 502, "{tls}: {}", got.head);
        assert!(
            relay.wait_log(reason, Duration::from_secs(5)),
            "{tls}: no log line naming {reason}"
        );
        // The client's 502 line and its count say TLS, not a connection refused.
        assert!(
            relay.wait_log("upstream TLS handshake failed", Duration::from_secs(5)),
            "{tls}: the 502 line does not say TLS"
        );
        assert_eq!(
            relay.metric("relay_errors_total{status=\"502\",reason=\"tls\"}"),
            Some(1.0),
            "{tls}"
        );
        assert_eq!(
            site.origin.access_log().len(),
            before,
            "{tls}: a request was sent"
        );
    }
    // Verification off, loudly: the untrusted certificate is taken, and the start says so.
    let dir = TempDir::new("tls-ca");
    let ca = dir.write("ca.pem", other.pem().as_bytes());
    let relay = relay(
        &site,
        &format!(
            "tls_ca_file = \"{}\"\ntls_insecure_skip_verify = true",
            ca.display()
        ),
    );
    assert!(relay.wait_log("tls_insecure_skip_verify", Duration::from_secs(5)));
    let got = fetch(&relay.url("/s1.txt"), &[]);
    assert_eq!((got.status, &got.body[..]), (200, &b"small 1\n"[..]));
}

/// An origin that takes the TCP connection and never answers the TLS handshake fails to
/// connect within `connect_timeout_ms`, not the first-byte timeout, and counts against its
/// health: marked down after `down_after_failures`, then refused at once.
#[test]
fn a_stalled_tls_handshake_is_a_connect_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts and holds every connection without a byte (bounded: the test's lifetime).
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(16).flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[[origin.http]]\n\
         url = \"https://127.0.0.1:{port}\"\ntls_server_name = \"origin.test\"\n\
         connect_timeout_ms = 300\nfirst_byte_timeout_ms = 20000\nretries = 0\n\
         down_after_failures = 2\n\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
    for i in 0..3 {
        let t = std::time::Instant::now();
        let got = fetch(&relay.url(&format!("/x{i}")), &[]);
        let took = t.elapsed();
        eprintln!(
            "stalled handshake, request {i}: {} after {took:?}",
            got.status
        );
        assert_eq!(got.status, 502);
        assert!(took < Duration::from_secs(5), "waited {took:?}");
    }
    assert!(
        relay.wait_log("no connection within 300 ms", Duration::from_secs(2)),
        "the stall is not logged as a connect failure"
    );
    // Two failures marked it down: the third request did not connect.
    assert_eq!(held.lock().unwrap().len(), 2);
}

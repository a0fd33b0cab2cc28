//! Request bodies streamed to an origin no one here wrote: node's `http` module as the
//! origin (it takes chunked request bodies, can pause reading one, and can answer before a
//! body is whole) and curl as the client. A body longer than one upload window goes to the
//! origin as it comes (`relay_upstream::upload`); the origin hashes what it got, and the
//! test compares that with the file curl sent.

use relay_tests::{Relay, TempDir, curl, pattern};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The origin: `/sum` answers the body's length, SHA-256 and framing as JSON; `/slow` does
/// the same after not reading for 3 s; `/early` answers 413 at once without reading;
/// `/accept` answers 200 at once and reads the body after; `/never` neither reads nor
/// answers.
const ORIGIN_JS: &str = r#"
const http = require('http');
const crypto = require('crypto');
const srv = http.createServer((req, res) => {
  if (req.url.startsWith('/early')) {
    res.writeHead(413, {'Content-Type': 'text/plain'});
    res.end('too large, said early\n');
    return;
  }
  if (req.url.startsWith('/accept')) {
    // A 200 before reading anything; node reads (and drops) the body after it.
    res.writeHead(200, {'Content-Type': 'text/plain'});
    res.end('accepted\n');
    return;
  }
  if (req.url.startsWith('/never')) {
    req.pause();
    return;
  }
  const h = crypto.createHash('sha256');
  let n = 0;
  if (req.url.startsWith('/slow')) { req.pause(); setTimeout(() => req.resume(), 3000); }
  req.on('data', d => { h.update(d); n += d.length; });
  req.on('end', () => {
    const body = JSON.stringify({len: n, sha256: h.digest('hex'),
      te: req.headers['transfer-encoding'] || null,
      cl: req.headers['content-length'] || null}) + '\n';
    res.writeHead(200, {'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body)});
    res.end(body);
  });
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
"#;

/// The node origin on a loopback port it picked; killed on drop.
struct NodeOrigin {
    child: Child,
    port: u16,
}

impl NodeOrigin {
    fn start(dir: &TempDir) -> NodeOrigin {
        let script = dir.write("origin.js", ORIGIN_JS.as_bytes());
        let mut child = Command::new("node")
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is installed by `cargo xtask setup`");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("node says its port");
        let port = line.trim().parse().expect("a port");
        NodeOrigin { child, port }
    }
}

impl Drop for NodeOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SHA-256 of `path`, as coreutils' `sha256sum` says it.
fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_owned()
}

/// curl POSTs `file` to `url` (`extra` arguments first): (status, body).
fn post(url: &str, file: &std::path::Path, extra: &[&str]) -> (u16, String) {
    let data = format!("@{}", file.display());
    let mut args = extra.to_vec();
    args.extend(["-w", "\n%{http_code}", "--data-binary", &data, url]);
    let (code, out, err) = curl(&args);
    assert_eq!(code, 0, "curl: {err}");
    let out = String::from_utf8_lossy(&out).into_owned();
    let (body, status) = out.rsplit_once('\n').expect("a status line");
    (status.parse().expect("a status"), body.to_owned())
}

#[test]
fn long_bodies_stream_to_node_whole_and_an_early_answer_ends_the_upload() {
    let dir = TempDir::new("uploads");
    let origin = NodeOrigin::start(&dir);
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nmemory_bytes = \"64 MiB\"\n\n\
         [[origin.http]]\nurl = \"http://127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.port
    ));
    let file = dir.write("body", &pattern(20 << 20, 77));
    let want = sha256(&file);
    let streamed = || {
        relay
            .metric("relay_pass_uploads_streamed_total")
            .unwrap_or(0.0)
    };

    // With a length: the origin gets it with that length and every byte.
    let (status, body) = post(&relay.url("/sum"), &file, &[]);
    assert_eq!(status, 200);
    assert!(body.contains(&format!("\"len\":{}", 20 << 20)), "{body}");
    assert!(body.contains(&want), "the origin got other bytes: {body}");
    assert!(body.contains("\"cl\":\"20971520\""), "{body}");
    assert_eq!(streamed(), 1.0);

    // Chunked: streamed on chunked, the same bytes.
    let (status, body) = post(
        &relay.url("/sum"),
        &file,
        &["-H", "Transfer-Encoding: chunked"],
    );
    assert_eq!(status, 200);
    assert!(
        body.contains(&want) && body.contains("\"te\":\"chunked\""),
        "{body}"
    );
    assert_eq!(streamed(), 2.0);

    // A small body is collected and sent with its length, as before.
    let small = dir.write("small", b"hello");
    let (status, body) = post(
        &relay.url("/sum"),
        &small,
        &["-H", "Transfer-Encoding: chunked"],
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("\"len\":5") && body.contains("\"cl\":\"5\""),
        "{body}"
    );
    assert_eq!(streamed(), 2.0);

    // An origin that stops reading for 3 s: relay holds one window meanwhile (not the 20
    // MiB the client has to send), with a length or chunked, and the body arrives whole
    // after.
    for extra in [None, Some("Transfer-Encoding: chunked")] {
        let url = relay.url("/slow");
        let (f, w) = (file.clone(), want.clone());
        let slow = std::thread::spawn(move || {
            let args: Vec<&str> = extra.map(|h| vec!["-H", h]).unwrap_or_default();
            let (status, body) = post(&url, &f, &args);
            assert_eq!(status, 200);
            assert!(body.contains(&w), "{body}");
        });
        let end = Instant::now() + Duration::from_millis(2500);
        let mut most = 0.0f64;
        while Instant::now() < end {
            most = most.max(relay.metric("relay_pass_buffer_bytes").unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(50));
        }
        slow.join().expect("the slow upload");
        eprintln!("an upload ({extra:?}) to an origin that paused held at most {most} bytes");
        assert!(
            most <= ((256 << 10) + 128) as f64,
            "more than one window held: {most}"
        );
    }

    // An answer before the body is whole: the client gets it; the rest of the body is
    // dropped and the connection closes after the answer.
    let t = Instant::now();
    let (status, body) = post(&relay.url("/early"), &file, &[]);
    assert_eq!((status, body.as_str()), (413, "too large, said early\n"));
    eprintln!("an early answer reached the client in {:?}", t.elapsed());
    assert_eq!(
        relay.metric("relay_pass_uploads_answered_early_total"),
        Some(1.0)
    );
    // So does a 200 before the body is whole: the client gets it.
    let (status, body) = post(&relay.url("/accept"), &file, &[]);
    assert_eq!((status, body.as_str()), (200, "accepted\n"));
    assert_eq!(
        relay.metric("relay_pass_uploads_answered_early_total"),
        Some(2.0)
    );
    // And relay goes on serving uploads.
    let (status, body) = post(&relay.url("/sum"), &file, &[]);
    assert_eq!(status, 200);
    assert!(body.contains(&want), "{body}");
    assert_eq!(relay.metric("relay_pass_buffer_bytes"), Some(0.0));
}

/// An origin that takes a connection and never reads the body: once the window is full
/// and nothing of it is taken for a send timeout (here the idle timeout, 1.5 s), the client
/// gets 504 and the window goes back; the origin's connection is dropped with it.
#[test]
fn an_origin_that_stops_reading_a_streamed_body_is_a_504() {
    let dir = TempDir::new("uploads-never");
    let origin = NodeOrigin::start(&dir);
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nidle_timeout_ms = 1500\n\n\
         [cache]\nmemory_bytes = \"64 MiB\"\n\n\
         [[origin.http]]\nurl = \"http://127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.port
    ));
    let file = dir.write("body", &pattern(40 << 20, 78));
    let t = Instant::now();
    let (status, _) = post(&relay.url("/never"), &file, &[]);
    eprintln!(
        "an upload to an origin that never reads: {status} after {:?}",
        t.elapsed()
    );
    assert_eq!(status, 504);
    assert!(t.elapsed() < Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(5);
    while relay.metric("relay_pass_buffer_bytes") != Some(0.0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(relay.metric("relay_pass_buffer_bytes"), Some(0.0));
}

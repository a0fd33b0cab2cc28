//! relay between software no one here wrote: python's `http.server` as the HTTP origin and
//! curl as the client. The project's own test origin only answers what its authors
//! thought of; this one answers as the standard library does (no Range support: every
//! fetch gets the whole body, `Last-Modified` and no `ETag`).

use relay_tests::{Relay, TempDir, curl, pattern};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHUNK: u64 = 256 * 1024;

/// `python3 -m http.server` serving `dir` on a loopback port it picked; killed on drop.
struct PythonOrigin {
    child: Child,
    port: u16,
}

impl PythonOrigin {
    fn start(dir: &std::path::Path) -> PythonOrigin {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is installed by `cargo xtask setup`");
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        let mut reader = BufReader::new(stdout);
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            line.clear();
            assert!(Instant::now() < deadline, "http.server did not start");
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("http.server exited before it said its port");
            }
            if let Some(p) = line
                .split_whitespace()
                .skip_while(|w| *w != "port")
                .nth(1)
                .and_then(|p| p.parse().ok())
            {
                break p;
            }
        };
        PythonOrigin { child, port }
    }
}

impl Drop for PythonOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl through relay: (head of the response, body).
fn get(relay: &Relay, path: &str, extra: &[&str]) -> (String, Vec<u8>) {
    let dir = TempDir::new("tp-curl");
    let head = dir.path().join("head");
    let url = relay.url(path);
    let mut args = vec!["-D", head.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, body, err) = curl(&args);
    assert_eq!(code, 0, "curl {url}: {err}");
    (std::fs::read_to_string(&head).unwrap(), body)
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn python_http_server_as_origin_curl_as_client() {
    let files = TempDir::new("tp-files");
    // Three and a half chunks, and a small one.
    let big = pattern((3 * CHUNK + CHUNK / 2) as usize, 7);
    // Modified ten days ago: with no Cache-Control from python, relay's heuristic
    // freshness (a tenth of the time since Last-Modified, RFC 9111 §4.2.2) keeps it a day.
    let path = files.write("big.bin", &big);
    let ten_days_ago = std::time::SystemTime::now() - Duration::from_secs(10 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(ten_days_ago))
        .unwrap();
    // Modified just now: no heuristic freshness, so every later request revalidates.
    files.write("small.txt", b"hello from python\n");
    let origin = PythonOrigin::start(files.path());
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = {CHUNK}\n\
         memory_bytes = 67108864\n\n[origin]\n\n[[origin.http]]\n\
         url = \"http://127.0.0.1:{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.port
    );
    let relay = Relay::start(&config);

    // A miss: fetched once, whole (the origin ignores Range), and served whole.
    let (head, body) = get(&relay, "/big.bin", &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), big.len());
    assert!(body == big, "the bytes python sent");
    assert_eq!(
        field(&head, "cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    // Again: a hit, the same bytes.
    let (head, body) = get(&relay, "/big.bin", &[]);
    assert_eq!(field(&head, "cache-status"), Some("relay; hit"), "{head}");
    assert!(body == big);
    // A range across two chunks, from the cache.
    let (from, to) = (CHUNK - 10, CHUNK + 9);
    let range = format!("{from}-{to}");
    let (head, body) = get(&relay, "/big.bin", &["-r", &range]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, &big[from as usize..=to as usize]);
    // A conditional on the validator python gave (Last-Modified): 304.
    let last_modified = field(&head, "last-modified").expect("python sends Last-Modified");
    let since = format!("If-Modified-Since: {last_modified}");
    let (head, body) = get(&relay, "/big.bin", &["-H", &since]);
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(body.is_empty());
    // A small object, and its type as python named it.
    let (head, body) = get(&relay, "/small.txt", &[]);
    assert_eq!(body, b"hello from python\n");
    assert!(
        field(&head, "content-type").is_some_and(|t| t.starts_with("text/plain")),
        "{head}"
    );
    // Just modified, it is stale at once: asked again, relay revalidates with
    // If-Modified-Since, python answers 304, and the kept bytes are served.
    let (head, body) = get(&relay, "/small.txt", &[]);
    assert_eq!(
        field(&head, "cache-status"),
        Some("relay; fwd=stale; fwd-status=304; stored"),
        "{head}"
    );
    assert_eq!(body, b"hello from python\n");
}

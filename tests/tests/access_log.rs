//! The access log (`[log] access`): a line per response with what went out, against
//! python's `http.server` as the origin and curl as the client: a miss, a hit, the origin's
//! 404 and 501, a HEAD, a request relay cannot read (400), a response its client cut short
//! (complete=false); bytes as curl counted them; the file opened again on SIGUSR1 after it
//! was moved; JSON lines; the counters on /metrics.

use relay_tests::python::PythonOrigin;
use relay_tests::{Relay, TempDir, curl, pattern};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The logfmt line's pairs (quoted values unquoted; `\"` and `\\` unescaped).
fn pairs(line: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        let (value, next) = match after.strip_prefix('"') {
            Some(q) => {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => v.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                (v, &q[end..])
            }
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            }
        };
        out.insert(key.trim().to_string(), value);
        rest = next.trim_start();
    }
    out
}

/// The log's lines once it holds `n` (waiting up to 5 s for the writer).
fn lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > end {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn relay(origin: &PythonOrigin, log: &std::path::Path, format: &str) -> Relay {
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = 65536\n\n\
         [[origin.http]]\nurl = \"http://127.0.0.1:{}\"\ncache_default_ttl = 60\n\n[log]\naccess = \"{}\"\n\
         access_format = \"{format}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.port,
        log.display()
    ))
}

#[test]
fn every_response_is_a_line_saying_what_went_out() {
    let files = TempDir::new("alog-www");
    files.write("a.txt", b"hello access log\n");
    let big = pattern(4 << 20, 3);
    files.write("big.bin", &big);
    let origin = PythonOrigin::start(files.path());
    let dir = TempDir::new("alog");
    let path = dir.path().join("access.log");
    let relay = relay(&origin, &path, "logfmt");
    // (size_header counts the head as curl read it: what relay sent of it.)
    let get = |target: &str, extra: &[&str]| -> (u16, u64) {
        let mut args = vec![
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_header} %{size_download}",
        ];
        args.extend_from_slice(extra);
        let url = relay.url(target);
        args.push(&url);
        let (_, out, err) = curl(&args);
        let out = String::from_utf8(out).expect("text");
        let v: Vec<u64> = out.split(' ').map(|n| n.parse().expect(&err)).collect();
        (v[0] as u16, v[1] + v[2])
    };
    let asked = [
        get("/a.txt", &[]),
        get("/a.txt", &[]),
        get("/nope", &[]),
        get("/a.txt", &["-I"]),
        get("/a.txt", &["-X", "POST", "-d", "x=1"]),
    ];
    assert_eq!(
        asked.iter().map(|a| a.0).collect::<Vec<_>>(),
        [200, 200, 404, 200, 501]
    );
    // (Each response's line is written when its last send completes, which may be just
    // after its client has it: the five are in the file before the next requests, so the
    // lines stay in the order asked.)
    assert_eq!(lines(&path, 5).len(), 5);
    // A request relay cannot read: 400.
    let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
    s.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 400"));
    assert_eq!(lines(&path, 6).len(), 6);
    // A client that reads a little of a large response and leaves.
    let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut some = [0u8; 100_000];
    s.read_exact(&mut some).unwrap();
    drop(s);

    let got = lines(&path, 7);
    assert_eq!(got.len(), 7, "{got:#?}");
    let l: Vec<HashMap<String, String>> = got.iter().map(|l| pairs(l)).collect();
    let url = format!("http://127.0.0.1:{}/a.txt", relay.addr.port());
    let field = |i: usize, k: &str| l[i].get(k).cloned().unwrap_or_default();
    for (i, (method, status, cache)) in [
        ("GET", "200", "fwd=uri-miss"),
        ("GET", "200", "hit"),
        ("GET", "404", "fwd=uri-miss"),
        ("HEAD", "200", "hit"),
        ("POST", "501", "fwd=method"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(field(i, "method"), method, "{}", got[i]);
        assert_eq!(field(i, "status"), status, "{}", got[i]);
        assert!(field(i, "cache_status").contains(cache), "{}", got[i]);
        assert_eq!(
            field(i, "bytes").parse::<u64>().unwrap(),
            asked[i].1,
            "bytes as curl counted them: {}",
            got[i]
        );
        assert!(field(i, "client").starts_with("127.0.0.1:"), "{}", got[i]);
        assert_eq!(field(i, "proto"), "HTTP/1.1");
        assert!(!got[i].contains("complete=false"), "{}", got[i]);
    }
    assert_eq!(field(0, "url"), url);
    assert!(field(2, "url").ends_with("/nope"));
    assert!(
        field(2, "cache_status").contains("fwd-status=404"),
        "{}",
        got[2]
    );
    assert!(field(0, "time").ends_with('Z') && field(0, "duration").parse::<f64>().is_ok());
    assert_eq!(
        (field(5, "status"), field(5, "method"), field(5, "url")),
        ("400".into(), "-".into(), "-".into())
    );
    assert_eq!(field(6, "status"), "200", "{}", got[6]);
    assert_eq!(field(6, "complete"), "false", "{}", got[6]);
    assert!(field(6, "client").starts_with("127.0.0.1:"), "{}", got[6]);
    let cut: u64 = field(6, "bytes").parse().unwrap();
    assert!(cut >= 100_000 && cut < big.len() as u64, "{}", got[6]);
    let m = relay.metrics();
    assert_eq!(
        relay_tests::metric_in(&m, "relay_access_log_written_total"),
        Some(7.0),
        "{m}"
    );
    assert_eq!(relay.metric("relay_access_log_dropped_total"), Some(0.0));

    // logrotate: the file moved, SIGUSR1, the next line in a new file.
    std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
    relay.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get("/a.txt", &[]).0, 200);
    let fresh = lines(&path, 1);
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(lines(&dir.path().join("access.log.1"), 7).len(), 7);
}

#[test]
fn json_lines_are_objects() {
    let files = TempDir::new("alog-json-www");
    files.write("a.txt", b"hello\n");
    let origin = PythonOrigin::start(files.path());
    let dir = TempDir::new("alog-json");
    let path = dir.path().join("access.json");
    let relay = relay(&origin, &path, "json");
    let (code, body, _) = curl(&[&relay.url("/a.txt?b=1")]);
    assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]));
    let got = lines(&path, 1);
    let v: serde_json::Value = serde_json::from_str(&got[0]).expect("a JSON object");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["status"], 200);
    assert!(v["url"].as_str().unwrap().ends_with("/a.txt?b=1"), "{v}");
    assert!(
        v["cache_status"].as_str().unwrap().contains("fwd=uri-miss"),
        "{v}"
    );
    assert_eq!(v["complete"], true);
}

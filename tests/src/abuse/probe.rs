//! The well-behaved client: one request at a time, each on a connection of its own from
//! 127.0.0.1, read whole and checked; how long each took and how each failed.

use super::backend;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A request the good client makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// GET of the cached object: a memory hit.
    Hit,
    /// POST of a small body, passed through to the origin (needs the pass-through budget).
    Post,
    /// GET of the cached object with `Authorization`: the stored response may not answer it
    /// (it is not `public`), so it is passed through too.
    AuthGet,
    /// `GET /healthz` on the admin listener.
    Healthz,
}

/// The body the good client's POST carries.
const POST_BODY: &[u8] = b"a well-behaved upload";

impl Probe {
    pub fn name(self) -> &'static str {
        match self {
            Probe::Hit => "GET hit",
            Probe::Post => "POST",
            Probe::AuthGet => "GET Authorization",
            Probe::Healthz => "GET /healthz",
        }
    }

    fn request(self) -> Vec<u8> {
        let path = backend::OBJ_PATH;
        match self {
            Probe::Hit => format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            Probe::AuthGet => format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer good\r\n\
                 Connection: close\r\n\r\n"
            ),
            Probe::Post => format!(
                "POST {} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                backend::UPLOAD_PATH,
                POST_BODY.len(),
                String::from_utf8_lossy(POST_BODY)
            ),
            Probe::Healthz => {
                "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".into()
            }
        }
        .into_bytes()
    }

    fn expected(self) -> Vec<u8> {
        match self {
            Probe::Hit | Probe::AuthGet => backend::obj_body(),
            Probe::Post => backend::upload_answer(POST_BODY.len() as u64),
            Probe::Healthz => b"ok\n".to_vec(),
        }
    }
}

/// One request of the good client.
#[derive(Clone, Debug)]
pub struct Sample {
    pub probe: Probe,
    /// When it started, from the start of the measurement.
    pub at: Duration,
    /// It started while the attack ran (else after the attackers left).
    pub during: bool,
    /// From the connect to the last byte of the answer (or to the failure).
    pub latency: Duration,
    /// None: the right status and body; else why not ("status 503", "timeout", ...).
    pub failure: Option<String>,
}

/// Makes `probe` once against `relay` (the data plane) or `admin`, waiting at most
/// `timeout` for each step.
pub fn once(
    probe: Probe,
    relay: SocketAddr,
    admin: Option<SocketAddr>,
    timeout: Duration,
) -> (Duration, Option<String>) {
    let started = Instant::now();
    let target = match probe {
        Probe::Healthz => match admin {
            Some(a) => a,
            None => return (Duration::ZERO, Some("no admin listener".into())),
        },
        _ => relay,
    };
    let result = exchange(target, &probe.request(), timeout);
    let latency = started.elapsed();
    let failure = match result {
        Err(e) => Some(e),
        Ok((200, body)) if body == probe.expected() => None,
        Ok((200, _)) => Some("body differs".into()),
        Ok((status, _)) => Some(format!("status {status}")),
    };
    (latency, failure)
}

/// GETs `path` from the relay and reads the whole answer (a warm-up that stores the
/// object); panics when that fails.
pub fn fetch_whole(relay: SocketAddr, path: &str, timeout: Duration) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    match exchange(relay, request.as_bytes(), timeout) {
        Ok((200, _)) => {}
        Ok((status, _)) => panic!("warm-up GET {path}: status {status}"),
        Err(e) => panic!("warm-up GET {path}: {e}"),
    }
}

/// Sends `request` on a new connection and reads one response framed by Content-Length:
/// its status and body.
fn exchange(
    target: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect_timeout(&target, timeout).map_err(|e| kind("connect", &e))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| kind("socket", &e))?;
    s.write_all(request).map_err(|e| kind("send", &e))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let deadline = Instant::now() + timeout;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = resp.parse(&got) {
            let status = resp.code.unwrap_or(0);
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= head_len + len {
                return Ok((status, got[head_len..head_len + len].to_vec()));
            }
        }
        if Instant::now() > deadline {
            return Err("timeout".into());
        }
        match s.read(&mut buf) {
            Ok(0) => return Err("closed before the answer".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(kind("read", &e)),
        }
    }
}

fn kind(step: &str, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout".into(),
        ErrorKind::ConnectionReset => format!("{step}: reset"),
        ErrorKind::ConnectionRefused => format!("{step}: refused"),
        _ => format!("{step}: {e}"),
    }
}

/// Latency figures of one probe's samples.
#[derive(Clone, Debug)]
pub struct Summary {
    pub probe: Probe,
    pub requests: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Failures by reason, most frequent first.
    pub failures: Vec<(String, usize)>,
}

impl Summary {
    /// `probe`'s samples taken while the attack ran (`during`), or after.
    pub fn of(probe: Probe, during: bool, samples: &[Sample]) -> Summary {
        let mine = || {
            samples
                .iter()
                .filter(move |s| s.probe == probe && s.during == during)
        };
        let mut times: Vec<Duration> = mine().map(|s| s.latency).collect();
        times.sort();
        let pick = |q: f64| -> Duration {
            if times.is_empty() {
                return Duration::ZERO;
            }
            // Nearest rank.
            let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
            times[rank - 1]
        };
        let mut failures: Vec<(String, usize)> = Vec::new();
        for s in mine() {
            if let Some(f) = &s.failure {
                match failures.iter_mut().find(|(r, _)| r == f) {
                    Some((_, n)) => *n += 1,
                    None => failures.push((f.clone(), 1)),
                }
            }
        }
        failures.sort_by_key(|f| std::cmp::Reverse(f.1));
        Summary {
            probe,
            requests: times.len(),
            p50: pick(0.50),
            p99: pick(0.99),
            max: times.last().copied().unwrap_or_default(),
            failures,
        }
    }

    /// Requests that failed.
    pub fn failed(&self) -> usize {
        self.failures.iter().map(|(_, n)| n).sum()
    }

    /// Failures as "3 status 503, 1 timeout" ("none" when none).
    pub fn failures_text(&self) -> String {
        if self.failures.is_empty() {
            return "none".into();
        }
        self.failures
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

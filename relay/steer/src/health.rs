//! Node health for the daemon: an HTTP check ([`check`]) and the pure bookkeeping that turns
//! check results into up / down changes ([`Tracker`]).
//!
//! A node with `health_check = "ADDR:PORT"` in `[[steer.nodes]]` is checked every
//! `steer.health.interval_ms` with `GET <steer.health.path>` (default `/healthz`), bounded by
//! `timeout_ms`; only a `200` answer passes. `down_after` consecutive failures mark it down,
//! `up_after` consecutive passes bring it back. A node starts up (as configured), so that a
//! daemon restart does not take every node out of the tables while the first checks run.
//! The thread that runs the checks and syncs the maps is in [`crate::keeper`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One node's health as the checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    /// Up (in the tables, if the config also says `up`) or down.
    pub up: bool,
    /// Consecutive failed checks (while up) or passed checks (while down).
    pub streak: u32,
}

/// A change of a node's health, for the log and the sync it triggers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub node: String,
    pub up: bool,
    /// Why: the last check's result.
    pub why: String,
}

/// Health of the checked nodes, by name, and the thresholds that move them.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    nodes: HashMap<String, NodeHealth>,
}

impl Tracker {
    /// Whether `node` is up; a node never checked is.
    pub fn is_up(&self, node: &str) -> bool {
        self.nodes.get(node).is_none_or(|h| h.up)
    }

    /// The health of `node`, if it was checked.
    pub fn get(&self, node: &str) -> Option<NodeHealth> {
        self.nodes.get(node).copied()
    }

    /// Forgets nodes not in `names` (they left the config).
    pub fn retain(&mut self, names: &[&str]) {
        self.nodes.retain(|name, _| names.contains(&name.as_str()));
    }

    /// Records one check of `node`: `Ok` passed, `Err(why)` failed. Returns the change when
    /// this check moves the node: down after `down_after` failures in a row, up after
    /// `up_after` passes in a row.
    pub fn observe(
        &mut self,
        node: &str,
        result: Result<(), String>,
        down_after: u32,
        up_after: u32,
    ) -> Option<Change> {
        let health = self.nodes.entry(node.to_owned()).or_insert(NodeHealth {
            up: true,
            streak: 0,
        });
        // A result that agrees with the current state resets the streak; one that disagrees
        // extends it, and enough of them in a row flip the state.
        let agrees = result.is_ok() == health.up;
        if agrees {
            health.streak = 0;
            return None;
        }
        health.streak += 1;
        let needed = if health.up { down_after } else { up_after };
        if health.streak < needed.max(1) {
            return None;
        }
        health.up = !health.up;
        health.streak = 0;
        let why = match result {
            Ok(()) => format!("{up_after} checks in a row passed"),
            Err(e) => format!("{down_after} checks in a row failed, last: {e}"),
        };
        Some(Change {
            node: node.to_owned(),
            up: health.up,
            why,
        })
    }
}

/// Most bytes of the answer read to find its status line.
const MAX_STATUS_LINE: usize = 512;

/// What one health check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// How long the TCP connect took (SYN to SYN-ACK: one round trip), when it succeeded.
    pub rtt: Option<Duration>,
    /// `Ok` for a `200` answer; otherwise why not.
    pub result: Result<(), String>,
}

/// One health check: `GET path` on `addr` over HTTP/1.1, all of it (connect, request, status
/// line) within `timeout`; the connect is timed (the node's round trip).
pub fn check(addr: SocketAddr, path: &str, timeout: Duration) -> Checked {
    let started = Instant::now();
    let deadline = started + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {timeout:?}"))
    };
    let connected = left().and_then(|left| {
        TcpStream::connect_timeout(&addr, left).map_err(|e| format!("connect {addr}: {e}"))
    });
    let rtt = connected.is_ok().then(|| started.elapsed());
    let result = connected.and_then(|stream| ask(stream, addr, path, &left));
    Checked { rtt, result }
}

/// A check that only connects: a relay of the site (`steer.cluster_nodes`) is probed at its
/// HTTP address for other relays, where a request would need the cluster's credentials.
/// Passes when the connect does within `timeout`, which is also the round trip measured.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Checked {
    let started = Instant::now();
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => Checked {
            rtt: Some(started.elapsed()),
            result: Ok(()),
        },
        Err(e) => Checked {
            rtt: None,
            result: Err(format!("connect {addr}: {e}")),
        },
    }
}

/// The request and status line of a check on a connected `stream`.
fn ask(
    mut stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    left: &dyn Fn() -> Result<Duration, String>,
) -> Result<(), String> {
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: relay-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut len = 0;
    // Bounded: every read adds at least one byte to a fixed buffer, or ends the loop.
    while len < buf.len() {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("receive: {e}")),
        };
        len += n;
        if buf[..len].contains(&b'\n') {
            break;
        }
    }
    status_is_ok(&buf[..len])
}

/// Whether an answer starts with a `200` status line.
fn status_is_ok(answer: &[u8]) -> Result<(), String> {
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    let mut words = line.split(' ');
    match (words.next(), words.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/1.") => Ok(()),
        _ if line.is_empty() => Err("closed without an answer".to_owned()),
        _ => Err(format!("answered {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn down_after_n_failures_up_after_m_passes() {
        let mut t = Tracker::default();
        let fail = || Err("refused".to_owned());
        assert!(t.is_up("r2"), "unchecked nodes are up");
        assert_eq!(t.observe("r2", fail(), 3, 2), None);
        assert_eq!(t.observe("r2", fail(), 3, 2), None);
        // A pass in between resets the count.
        assert_eq!(t.observe("r2", Ok(()), 3, 2), None);
        assert_eq!(t.observe("r2", fail(), 3, 2), None);
        assert_eq!(t.observe("r2", fail(), 3, 2), None);
        let down = t
            .observe("r2", fail(), 3, 2)
            .expect("third failure in a row");
        assert!(!down.up && down.node == "r2" && down.why.contains("refused"));
        assert!(!t.is_up("r2"));
        assert_eq!(t.observe("r2", fail(), 3, 2), None, "already down");
        assert_eq!(t.observe("r2", Ok(()), 3, 2), None);
        assert_eq!(
            t.observe("r2", fail(), 3, 2),
            None,
            "a failure resets the passes"
        );
        assert_eq!(t.observe("r2", Ok(()), 3, 2), None);
        let up = t.observe("r2", Ok(()), 3, 2).expect("second pass in a row");
        assert!(up.up);
        assert!(t.is_up("r2"));
        assert!(t.is_up("r1"), "other nodes are not affected");
        t.retain(&["r1"]);
        assert_eq!(t.get("r2"), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_is_ok(b"HTTP/1.1 200 OK\r\nx: y\r\n"), Ok(()));
        assert_eq!(status_is_ok(b"HTTP/1.0 200\r\n"), Ok(()));
        assert!(status_is_ok(b"HTTP/1.1 503 Service Unavailable\r\n").is_err());
        assert!(status_is_ok(b"HTTP/1.1 2000 OK\r\n").is_err());
        assert!(status_is_ok(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert_eq!(
            status_is_ok(b""),
            Err("closed without an answer".to_owned())
        );
    }

    /// A listener that answers one connection with `answer` (or, with `None`, reads the
    /// request and never answers).
    fn serve_once(answer: Option<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                match answer {
                    Some(a) => {
                        let _ = s.write_all(a);
                    }
                    None => std::thread::sleep(Duration::from_millis(500)),
                }
            }
        });
        addr
    }

    #[test]
    fn checks_over_loopback() {
        let ok = serve_once(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
        let checked = check(ok, "/healthz", Duration::from_secs(2));
        assert_eq!(checked.result, Ok(()));
        let rtt = checked.rtt.expect("a connect is timed");
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
        let bad = serve_once(Some(b"HTTP/1.1 404 Not Found\r\n\r\n"));
        let checked = check(bad, "/healthz", Duration::from_secs(2));
        let err = checked.result.unwrap_err();
        assert!(err.contains("404"), "{err}");
        assert!(checked.rtt.is_some(), "the connect succeeded");
        let silent = serve_once(None);
        let started = Instant::now();
        let err = check(silent, "/healthz", Duration::from_millis(100))
            .result
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(400), "{err}");
        // A port nobody listens on (bound, then closed).
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        let checked = check(closed, "/healthz", Duration::from_secs(1));
        assert!(checked.result.is_err());
        assert_eq!(checked.rtt, None, "no connect, no round trip");
    }
}

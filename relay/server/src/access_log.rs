//! The access log: one line per response, handed by the worker that sent it to a writer
//! thread of its own through a bounded queue (`log.access_queue`), so a slow disk never
//! stalls a worker: a line that finds the queue full is dropped and counted
//! (`relay_access_log_dropped_total`). The writer formats the lines (logfmt or JSON),
//! writes them in batches, and opens its file again when asked (SIGUSR1, after logrotate
//! moved it).
//!
//! What a line says is taken from what went out: the status and `Cache-Status` are read
//! from the response head as it was sent, the bytes are those the socket took (head and
//! body), so the log agrees with what the client got, a response cut short included
//! (`complete=false`).

use relay_config::{AccessLogFormat, AccessLogTarget, LogConfig};
use std::borrow::Cow;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// One response, as the log line says it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    /// When the response ended (or was cut).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The client's address and port (None: no longer known, a connection already gone).
    pub client: Option<SocketAddr>,
    /// "GET", "HEAD", another method as sent, or "-" (no request could be read).
    pub method: Cow<'static, str>,
    /// What the request named: `http://host[:port]/path?query` for an HTTP origin (the
    /// cache key's form), the path for the directory origin, "-" when none could be read.
    pub url: String,
    /// HTTP/1.x's minor version.
    #[serde(skip)]
    pub version: u8,
    pub status: u16,
    /// Bytes the socket took: head and body.
    pub bytes: u64,
    /// From the request's head read whole to the response's end, in seconds.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// The response's `Cache-Status` (RFC 9211: hit, miss, stale, the origin's status as
    /// `fwd-status`), "" when it had none.
    pub cache_status: String,
    pub worker: usize,
    /// The request came on the peer listener (another relay).
    pub peer: bool,
    /// The whole response went out (false: the connection ended first).
    pub complete: bool,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Timestamp(*t))
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e6)
}

/// A time written as RFC 3339 in UTC to the millisecond.
struct Timestamp(SystemTime);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match jiff::Timestamp::try_from(self.0) {
            Ok(t) => write!(f, "{t:.3}"),
            Err(_) => f.write_str("-"),
        }
    }
}

impl Entry {
    /// The entry as one logfmt line (`key=value`, values with spaces or quotes quoted).
    pub fn logfmt(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "time={} client=", Timestamp(self.time));
        match self.client {
            Some(c) => {
                let _ = write!(out, "{c}");
            }
            None => out.push(b'-'),
        }
        out.extend_from_slice(b" method=");
        quoted(out, &self.method);
        out.extend_from_slice(b" url=");
        quoted(out, &self.url);
        let _ = write!(
            out,
            " proto=HTTP/1.{} status={} bytes={} duration={:.6} cache_status=",
            self.version,
            self.status,
            self.bytes,
            self.duration.as_secs_f64()
        );
        quoted(out, &self.cache_status);
        let _ = write!(out, " worker={}", self.worker);
        if self.peer {
            out.extend_from_slice(b" peer=true");
        }
        if !self.complete {
            out.extend_from_slice(b" complete=false");
        }
        out.push(b'\n');
    }

    /// The entry as one JSON object on a line.
    pub fn json(&self, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        }
    }
}

/// A logfmt value: as it is when it holds no space, quote, `=` or control; else quoted,
/// with `"` and `\` escaped and controls written as `\xNN`.
fn quoted(out: &mut Vec<u8>, v: &str) {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
    if plain {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    out.push(b'"');
    for c in v.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The access log's counters (on `/metrics`).
#[derive(Default)]
pub struct Counters {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped: the queue was full.
    pub dropped: AtomicU64,
    /// Writes (or opens) that failed; their lines are lost.
    pub errors: AtomicU64,
}

/// The workers' side of the log: the queue, the counters, the writer thread.
pub struct AccessLog {
    tx: crossbeam_channel::Sender<Entry>,
    pub counters: Arc<Counters>,
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// Opens the log `config` names and starts its writer; None when it is off.
    pub fn start(config: &LogConfig) -> std::io::Result<Option<AccessLog>> {
        let Some(target) = config.access.clone() else {
            return Ok(None);
        };
        let sink = Sink::open(&target)?;
        let (tx, rx) = crossbeam_channel::bounded(config.access_queue);
        let counters = Arc::new(Counters::default());
        let reopen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            rx,
            sink,
            target,
            format: config.access_format,
            counters: counters.clone(),
            reopen: reopen.clone(),
            stop: stop.clone(),
            buf: Vec::with_capacity(WRITE_BATCH),
        };
        let thread = std::thread::Builder::new()
            .name("relay-access-log".into())
            .spawn(move || writer.run())?;
        Ok(Some(AccessLog {
            tx,
            counters,
            reopen,
            stop,
            thread: std::sync::Mutex::new(Some(thread)),
        }))
    }

    /// Queues `entry`; dropped (and counted) when the queue is full.
    pub fn log(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The file is opened again before the next line (SIGUSR1).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes what is queued and stops the writer (once the workers have stopped).
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Bytes formatted before they are written out.
const WRITE_BATCH: usize = 64 << 10;

enum Sink {
    Stdout(std::io::Stdout),
    File(std::fs::File),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> std::io::Result<Sink> {
        match target {
            AccessLogTarget::Stdout => Ok(Sink::Stdout(std::io::stdout())),
            AccessLogTarget::File(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Sink::File)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("log.access {}: {e}", path.display()))
                }),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(bytes)?;
                s.flush()
            }
            Sink::File(f) => f.write_all(bytes),
        }
    }
}

struct Writer {
    rx: crossbeam_channel::Receiver<Entry>,
    sink: Sink,
    target: AccessLogTarget,
    format: AccessLogFormat,
    counters: Arc<Counters>,
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => Some(e),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            };
            if self.reopen.swap(false, Ordering::Relaxed) {
                self.flush();
                match Sink::open(&self.target) {
                    Ok(s) => self.sink = s,
                    Err(e) => {
                        // (The old file stays in use: no line is lost to a failed reopen.)
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        log::error!("access log: cannot open it again: {e}");
                    }
                }
            }
            // What is queued, written in batches of about WRITE_BATCH bytes.
            let mut next = first;
            while let Some(e) = next {
                match self.format {
                    AccessLogFormat::Logfmt => e.logfmt(&mut self.buf),
                    AccessLogFormat::Json => e.json(&mut self.buf),
                }
                self.counters.written.fetch_add(1, Ordering::Relaxed);
                if self.buf.len() >= WRITE_BATCH {
                    self.flush();
                }
                next = self.rx.try_recv().ok();
            }
            self.flush();
            if self.stop.load(Ordering::Relaxed) && self.rx.is_empty() {
                return;
            }
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.sink.write_all(&self.buf) {
            let n = self.counters.errors.fetch_add(1, Ordering::Relaxed);
            // (Once, then every 1000th: a full disk would log as fast as it fails.)
            if n.is_multiple_of(1000) {
                log::error!("access log: write failed ({} in all): {e}", n + 1);
            }
        }
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_601_600_123),
            client: Some("192.0.2.7:40000".parse().unwrap()),
            method: Cow::Borrowed("GET"),
            url: "http://video.example/seg 1.ts?a=\"b\"".into(),
            version: 1,
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(2105),
            cache_status: "relay; hit".into(),
            worker: 1,
            peer: false,
            complete: true,
        }
    }

    #[test]
    fn a_logfmt_line_quotes_what_needs_it() {
        let mut out = Vec::new();
        entry().logfmt(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "time=2026-12-07T00:00:00.123Z client=192.0.2.7:40000 method=GET \
             url=\"http://video.example/seg 1.ts?a=\\\"b\\\"\" proto=HTTP/1.1 status=200 \
             bytes=1234 duration=0.002105 cache_status=\"relay; hit\" worker=1\n"
        );
        let mut e = entry();
        e.client = None;
        e.cache_status.clear();
        e.method = Cow::Owned("PURGE\u{1}".into());
        e.complete = false;
        e.peer = true;
        let mut out = Vec::new();
        e.logfmt(&mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains(" client=- method=\"PURGE\\x01\" "), "{line}");
        assert!(line.contains(" cache_status=\"\" "), "{line}");
        assert!(line.ends_with(" peer=true complete=false\n"), "{line}");
    }

    #[test]
    fn a_json_line_is_one_object() {
        let mut out = Vec::new();
        entry().json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-12-07T00:00:00.123Z");
        assert_eq!(v["client"], "192.0.2.7:40000");
        assert_eq!(v["url"], "http://video.example/seg 1.ts?a=\"b\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration"], 0.002105);
        assert_eq!(v["cache_status"], "relay; hit");
        assert_eq!(v["complete"], true);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_stop_writes_what_is_queued() {
        let dir = std::env::temp_dir().join(format!("relay-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let config = LogConfig {
            access: Some(AccessLogTarget::File(path.clone())),
            access_format: AccessLogFormat::Logfmt,
            access_queue: 16,
        };
        let log = AccessLog::start(&config).unwrap().unwrap();
        for _ in 0..5000 {
            log.log(entry());
        }
        log.finish();
        let written = log.counters.written.load(Ordering::Relaxed);
        let dropped = log.counters.dropped.load(Ordering::Relaxed);
        assert_eq!(written + dropped, 5000);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count() as u64, written);
        // Opened again (as after logrotate moved it): lines go to the new file.
        let moved = dir.join("access.log.1");
        std::fs::rename(&path, &moved).unwrap();
        let log = AccessLog::start(&config).unwrap().unwrap();
        log.reopen();
        log.log(entry());
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

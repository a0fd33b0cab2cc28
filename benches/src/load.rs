//! `relay-bench load`: a closed-loop HTTP/1.1 load client that discards response bodies
//! without copying them, so that on a 2-core machine the server, not the client, is what a
//! run measures.
//!
//! wrk reads every body byte into user space; at 64 KiB and 1 MiB that copy is most of its
//! core, and wrk saturates before the server does. Here each connection (keep-alive, over
//! one epoll loop per thread) sends its next request when its response ends (or keeps
//! `pipeline` requests in flight), parses every response head (`httparse`), follows its
//! framing (`Content-Length` or chunked), and drops body bytes in the kernel with
//! `recv(MSG_TRUNC)` on the TCP socket: the bytes are consumed from the socket queue and
//! never copied. A fraction of the bodies (`--verify`) is read for real and checked byte for
//! byte against the object. Latency (request written to response end) goes into an
//! hdrhistogram; errors are counted by kind. A run is bounded by its duration (and
//! optionally a request count); connects and each response have a timeout.
//!
//! The summary is one `RELAYBENCH key=value ...` line in the form the wrk runner's Lua
//! hook prints (`wrk::parse` reads both), plus the counts wrk has no field for.

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct Options {
    /// `http://host:port/path` (plain HTTP only).
    pub url: String,
    /// Keep-alive connections, spread over the threads.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: u32,
    /// Threads, each with its own epoll loop.
    #[arg(long, short = 't', default_value_t = 1)]
    pub threads: u32,
    /// Seconds to run.
    #[arg(long, short = 'd', default_value_t = 10)]
    pub duration: u32,
    /// Stop after this many responses in all (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_requests: u64,
    /// Requests kept in flight per connection (1: one at a time).
    #[arg(long, default_value_t = 1)]
    pub pipeline: u32,
    /// Fraction of bodies read and compared with `--expect` (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub verify: f64,
    /// The object every response body must equal (needed when `--verify` > 0).
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Seconds a response may take before its connection counts a timeout and is replaced.
    #[arg(long, default_value_t = 5)]
    pub timeout: u32,
}

/// Bodies up to this size are read with their head (copied); larger ones are dropped in
/// the kernel after a read of the head alone.
const SMALL_BODY: u64 = 12 << 10;

/// What a run counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Whole responses (any status).
    pub responses: u64,
    /// Bytes read off the sockets (heads and bodies).
    pub bytes: u64,
    pub connect_errors: u64,
    /// The server closed or reset a connection with a response outstanding, or a read
    /// failed.
    pub read_errors: u64,
    pub write_errors: u64,
    /// Responses that took longer than the timeout.
    pub timeouts: u64,
    /// Responses outside 2xx/3xx.
    pub status_errors: u64,
    /// Heads that did not parse, or framing that could not be followed.
    pub parse_errors: u64,
    /// Bodies read and compared that differed from the object (or had its length wrong).
    pub verify_errors: u64,
    /// Bodies read and compared.
    pub verified: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.responses += o.responses;
        self.bytes += o.bytes;
        self.connect_errors += o.connect_errors;
        self.read_errors += o.read_errors;
        self.write_errors += o.write_errors;
        self.timeouts += o.timeouts;
        self.status_errors += o.status_errors;
        self.parse_errors += o.parse_errors;
        self.verify_errors += o.verify_errors;
        self.verified += o.verified;
    }
}

/// Where to send, and what to send there.
struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
    expect: Option<Arc<Vec<u8>>>,
}

pub fn run(o: Options) -> Result<()> {
    let target = target(&o)?;
    let stop = Arc::new(AtomicBool::new(false));
    let threads = o.threads.clamp(1, o.connections.max(1));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(u64::from(o.duration));
    let target = Arc::new(target);
    let per_thread_cap = match o.max_requests {
        0 => u64::MAX,
        n => n.div_ceil(u64::from(threads)),
    };
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let conns = o.connections / threads + u32::from(t < o.connections % threads);
            let target = target.clone();
            let stop = stop.clone();
            let cfg = LoopConfig {
                conns: conns as usize,
                pipeline: o.pipeline.max(1) as usize,
                verify: o.verify.clamp(0.0, 1.0),
                timeout: Duration::from_secs(u64::from(o.timeout.max(1))),
                deadline,
                max_responses: per_thread_cap,
                seed: 0x9e37_79b9_7f4a_7c15 ^ u64::from(t),
            };
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || event_loop(&target, &cfg, &stop))
        })
        .collect::<std::io::Result<_>>()?;
    let mut total = Counts::default();
    let mut hist = latency_histogram();
    for h in handles {
        let (c, l) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.add(&c);
        hist.add(&l).context("merging latency histograms")?;
    }
    let elapsed = started.elapsed();
    println!("{}", summary_line(&total, &hist, elapsed));
    Ok(())
}

fn target(o: &Options) -> Result<Target> {
    let rest = o
        .url
        .strip_prefix("http://")
        .with_context(|| format!("{}: only http:// URLs", o.url))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = match authority.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => authority.to_string(),
        _ => format!("{authority}:80"),
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port}: no address"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes();
    let expect = match (&o.expect, o.verify > 0.0) {
        (Some(p), _) => Some(Arc::new(
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )),
        (None, true) => bail!("--verify needs --expect FILE"),
        (None, false) => None,
    };
    Ok(Target {
        addr,
        request,
        expect,
    })
}

/// The latency histogram: 1 µs to 100 s, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// The summary in the wrk runner's form (`wrk::parse`), and this client's own counts.
fn summary_line(c: &Counts, h: &Histogram<u64>, elapsed: Duration) -> String {
    let q = |p: f64| h.value_at_quantile(p);
    format!(
        "RELAYBENCH requests={} bytes={} duration_us={} connect={} read={} write={} status={} \
         timeout={} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} parse={} verify={} \
         verified={}",
        c.responses,
        c.bytes,
        elapsed.as_micros(),
        c.connect_errors,
        c.read_errors + c.parse_errors + c.verify_errors,
        c.write_errors,
        c.status_errors,
        c.timeouts,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        h.max(),
        c.parse_errors,
        c.verify_errors,
        c.verified,
    )
}

struct LoopConfig {
    conns: usize,
    pipeline: usize,
    verify: f64,
    timeout: Duration,
    deadline: Instant,
    max_responses: u64,
    seed: u64,
}

/// Where a connection's response being read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Reading the head into `head`.
    Head,
    /// `left` body bytes of a `Content-Length` body.
    Length { left: u64 },
    /// Chunked: a size line is next (in `head`, reused as the line buffer).
    ChunkSize,
    /// Chunked: `left` bytes of chunk data, then its CRLF.
    ChunkData { left: u64 },
    /// Chunked: the CRLF after chunk data.
    ChunkEnd,
    /// Chunked: trailer lines until an empty one.
    Trailers,
}

struct Conn {
    sock: Option<TcpStream>,
    framing: Framing,
    /// Head bytes (or a chunked body's framing lines) read so far.
    head: Vec<u8>,
    /// When each request in flight was written, oldest first.
    sent_at: std::collections::VecDeque<Instant>,
    /// Request bytes still to write.
    out: Vec<u8>,
    /// The response being read is compared with the object: its bytes so far.
    checking: Option<Vec<u8>>,
    status: u16,
    /// The last response's body length: what the next head's read is sized for.
    last_len: u64,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            sock: None,
            framing: Framing::Head,
            head: Vec::with_capacity(1024),
            sent_at: Default::default(),
            out: Vec::new(),
            checking: None,
            status: 0,
            last_len: 0,
        }
    }
}

/// What a response head says of its body.
pub(crate) struct Head {
    /// The head's length in bytes.
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) length: Option<u64>,
    pub(crate) chunked: bool,
}

/// The response head at the start of `buf`: `Ok(None)` while it is not whole, an error for
/// one that does not parse or has a bad `Content-Length`.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut head = Head {
        len,
        status: resp.code.unwrap_or(0),
        length: None,
        chunked: false,
    };
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ())?;
            head.length = Some(v.trim().parse::<u64>().map_err(|_| ())?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = h.value.eq_ignore_ascii_case(b"chunked");
        }
    }
    Ok(Some(head))
}

/// A tiny xorshift generator: which responses are verified.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A read of up to `len` bytes of `fd` discarded in the kernel (`MSG_TRUNC` on TCP).
fn discard(fd: i32, len: usize) -> std::io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket the kernel writes nothing to the buffer (it
    // is null); it only consumes up to `len` bytes from the receive queue.
    let n = unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    match n {
        n if n >= 0 => Ok(n as usize),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// A copying read into `buf`.
fn read_into(fd: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    match n {
        n if n >= 0 => Ok(n as usize),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// An epoll instance (closed on drop).
pub(crate) struct Epoll(i32);

impl Epoll {
    pub(crate) fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall; the fd is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    pub(crate) fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is valid for the call; `fd` is an open socket.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn wait(&self, events: &mut [libc::epoll_event], ms: i32) -> usize {
        // SAFETY: `events` is valid for writes of its length.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, ms) };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our own fd.
        unsafe { libc::close(self.0) };
    }
}

/// What one connection's step led to.
enum Next {
    Go,
    /// Replace the connection (its error is counted).
    Reconnect,
}

struct Loop<'a> {
    target: &'a Target,
    cfg: &'a LoopConfig,
    counts: Counts,
    hist: Histogram<u64>,
    rng: Rng,
    epoll: Epoll,
    conns: Vec<Conn>,
    /// Body bytes copied for a verified response (reused).
    scratch: Vec<u8>,
}

fn event_loop(
    target: &Target,
    cfg: &LoopConfig,
    stop: &AtomicBool,
) -> Result<(Counts, Histogram<u64>)> {
    let mut l = Loop {
        target,
        cfg,
        counts: Counts::default(),
        hist: latency_histogram(),
        rng: Rng(cfg.seed | 1),
        epoll: Epoll::new()?,
        conns: (0..cfg.conns).map(|_| Conn::new()).collect(),
        scratch: vec![0u8; 256 << 10],
    };
    for i in 0..cfg.conns {
        l.connect(i);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut last_sweep = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= cfg.deadline || l.counts.responses >= cfg.max_responses {
            break;
        }
        let n = l.epoll.wait(&mut events, 10);
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            if l.conns[i].sock.is_none() {
                continue;
            }
            let step = match ev.events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 {
                0 => l.flush(i),
                _ => l.read(i),
            };
            if let Next::Reconnect = step {
                l.connect(i);
            }
        }
        if now.duration_since(last_sweep) >= Duration::from_millis(100) {
            last_sweep = now;
            for i in 0..l.conns.len() {
                let late = l.conns[i]
                    .sent_at
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > cfg.timeout);
                if late {
                    l.counts.timeouts += 1;
                    l.connect(i);
                }
            }
        }
    }
    Ok((l.counts, l.hist))
}

impl Loop<'_> {
    /// (Re)opens connection `i` and sends its first requests; a failed connect is counted
    /// and tried again on the next sweep's timeout (the connection stays without a socket
    /// until then: the sweep's clock starts now).
    fn connect(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(s) = c.sock.take() {
            let _ = self
                .epoll
                .ctl(libc::EPOLL_CTL_DEL, s.as_raw_fd(), 0, i as u64);
        }
        *c = Conn::new();
        if Instant::now() >= self.cfg.deadline {
            return;
        }
        let s = match TcpStream::connect_timeout(&self.target.addr, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(_) => {
                self.counts.connect_errors += 1;
                c.sent_at.push_back(Instant::now());
                return;
            }
        };
        let _ = s.set_nodelay(true);
        if s.set_nonblocking(true).is_err()
            || self
                .epoll
                .ctl(
                    libc::EPOLL_CTL_ADD,
                    s.as_raw_fd(),
                    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
                    i as u64,
                )
                .is_err()
        {
            self.counts.connect_errors += 1;
            c.sent_at.push_back(Instant::now());
            return;
        }
        c.sock = Some(s);
        for _ in 0..self.cfg.pipeline {
            self.queue_request(i);
        }
        let _ = self.flush(i);
    }

    fn queue_request(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.out.extend_from_slice(&self.target.request);
        c.sent_at.push_back(Instant::now());
    }

    /// Writes what connection `i` has queued.
    fn flush(&mut self, i: usize) -> Next {
        let c = &mut self.conns[i];
        let Some(s) = c.sock.as_mut() else {
            return Next::Go;
        };
        while !c.out.is_empty() {
            match s.write(&c.out) {
                Ok(0) => {
                    self.counts.write_errors += 1;
                    return Next::Reconnect;
                }
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.counts.write_errors += 1;
                    return Next::Reconnect;
                }
            }
        }
        Next::Go
    }

    /// Reads what connection `i` has (edge-triggered: until the socket would block).
    fn read(&mut self, i: usize) -> Next {
        let Some(fd) = self.conns[i].sock.as_ref().map(|s| s.as_raw_fd()) else {
            return Next::Go;
        };
        loop {
            let got = match self.conns[i].framing {
                Framing::Length { left } if self.conns[i].checking.is_none() => {
                    discard(fd, usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30))
                }
                Framing::ChunkData { left } if self.conns[i].checking.is_none() => {
                    discard(fd, usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30))
                }
                Framing::Length { left } | Framing::ChunkData { left } => {
                    let len = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.scratch.len());
                    read_into(fd, &mut self.scratch[..len])
                }
                // Heads and framing lines, copied: after a small body, with the next bodies
                // (one read may bring several small responses); after a large one, the head
                // alone, so that the body is not copied but dropped.
                _ => {
                    let len = match self.conns[i].last_len {
                        n if n > SMALL_BODY => 1024,
                        _ => 16 << 10,
                    };
                    read_into(fd, &mut self.scratch[..len])
                }
            };
            let n = match got {
                Ok(0) => {
                    // The server closed: fine between responses when it said so, else an
                    // error (wrk counts it as a read error too).
                    if !self.conns[i].sent_at.is_empty() {
                        self.counts.read_errors += 1;
                    }
                    return Next::Reconnect;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let _ = self.flush(i);
                    return Next::Go;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counts.read_errors += 1;
                    return Next::Reconnect;
                }
            };
            self.counts.bytes += n as u64;
            match self.conns[i].framing {
                Framing::Length { .. } | Framing::ChunkData { .. }
                    if self.conns[i].checking.is_none() =>
                {
                    self.body_bytes(i, n, None);
                }
                Framing::Length { .. } | Framing::ChunkData { .. } => {
                    let bytes = std::mem::take(&mut self.scratch);
                    self.body_bytes(i, n, Some(&bytes[..n]));
                    self.scratch = bytes;
                }
                _ => {
                    let bytes = std::mem::take(&mut self.scratch);
                    let r = self.framing_bytes(i, &bytes[..n]);
                    self.scratch = bytes;
                    if let Next::Reconnect = r {
                        return Next::Reconnect;
                    }
                }
            }
            if let Next::Reconnect = self.maybe_done(i) {
                return Next::Reconnect;
            }
        }
    }

    /// `n` body bytes arrived (and, when verifying, here they are).
    fn body_bytes(&mut self, i: usize, n: usize, bytes: Option<&[u8]>) {
        let c = &mut self.conns[i];
        if let (Some(b), Some(seen)) = (bytes, c.checking.as_mut()) {
            seen.extend_from_slice(b);
        }
        match &mut c.framing {
            Framing::Length { left } => *left -= n as u64,
            Framing::ChunkData { left } => {
                *left -= n as u64;
                if *left == 0 {
                    c.framing = Framing::ChunkEnd;
                }
            }
            _ => {}
        }
    }

    /// Bytes read while a head or chunked framing is expected: parsed as far as they go;
    /// body bytes among them are taken as the body's.
    fn framing_bytes(&mut self, i: usize, mut bytes: &[u8]) -> Next {
        while !bytes.is_empty() {
            let framing = self.conns[i].framing;
            match framing {
                Framing::Head => {
                    // Parsed where the bytes lie: copied only when a head spans reads.
                    let c = &mut self.conns[i];
                    let held = c.head.len();
                    let parsed = if held == 0 {
                        parse_head(bytes)
                    } else {
                        c.head.extend_from_slice(bytes);
                        parse_head(&c.head)
                    };
                    let head = match parsed {
                        Ok(Some(h)) => h,
                        Ok(None) if held + bytes.len() < 64 << 10 => {
                            if held == 0 {
                                c.head.extend_from_slice(bytes);
                            }
                            return Next::Go;
                        }
                        _ => {
                            self.counts.parse_errors += 1;
                            return Next::Reconnect;
                        }
                    };
                    // What follows the head in these bytes goes round again.
                    bytes = &bytes[head.len - held..];
                    c.head.clear();
                    c.status = head.status;
                    let verify = self.target.expect.is_some()
                        && self.cfg.verify > 0.0
                        && self.rng.unit() < self.cfg.verify;
                    let c = &mut self.conns[i];
                    c.checking = verify.then(Vec::new);
                    c.last_len = head.length.unwrap_or(u64::MAX);
                    c.framing = match (head.chunked, head.length) {
                        (true, _) => Framing::ChunkSize,
                        (false, Some(n)) => Framing::Length { left: n },
                        (false, None)
                            if (100..200).contains(&head.status) || head.status == 204 =>
                        {
                            Framing::Length { left: 0 }
                        }
                        (false, None) => {
                            // Delimited by the close: not a keep-alive benchmark's answer.
                            self.counts.parse_errors += 1;
                            return Next::Reconnect;
                        }
                    };
                    if let Next::Reconnect = self.maybe_done(i) {
                        return Next::Reconnect;
                    }
                }
                Framing::Length { left } | Framing::ChunkData { left } => {
                    let take = (left.min(bytes.len() as u64)) as usize;
                    let checking = self.conns[i].checking.is_some();
                    self.body_bytes(i, take, checking.then_some(&bytes[..take]));
                    bytes = &bytes[take..];
                    if let Next::Reconnect = self.maybe_done(i) {
                        return Next::Reconnect;
                    }
                }
                Framing::ChunkSize | Framing::ChunkEnd | Framing::Trailers => {
                    let c = &mut self.conns[i];
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        c.head.extend_from_slice(bytes);
                        if c.head.len() > 4096 {
                            self.counts.parse_errors += 1;
                            return Next::Reconnect;
                        }
                        return Next::Go;
                    };
                    c.head.extend_from_slice(&bytes[..=nl]);
                    bytes = &bytes[nl + 1..];
                    let line = std::mem::take(&mut c.head);
                    let line = line.strip_suffix(b"\r\n").unwrap_or(&line);
                    c.framing = match framing {
                        Framing::ChunkEnd if line.is_empty() => Framing::ChunkSize,
                        Framing::ChunkEnd => {
                            self.counts.parse_errors += 1;
                            return Next::Reconnect;
                        }
                        Framing::Trailers if line.is_empty() => Framing::Length { left: 0 },
                        Framing::Trailers => Framing::Trailers,
                        _ => {
                            let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
                            let size = std::str::from_utf8(hex)
                                .ok()
                                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
                            match size {
                                Some(0) => Framing::Trailers,
                                Some(n) => Framing::ChunkData { left: n },
                                None => {
                                    self.counts.parse_errors += 1;
                                    return Next::Reconnect;
                                }
                            }
                        }
                    };
                    if let Next::Reconnect = self.maybe_done(i) {
                        return Next::Reconnect;
                    }
                }
            }
        }
        Next::Go
    }

    /// The response ends when its body has no byte left: count it, check it, and send the
    /// next request.
    fn maybe_done(&mut self, i: usize) -> Next {
        let c = &mut self.conns[i];
        if c.framing != (Framing::Length { left: 0 }) {
            return Next::Go;
        }
        let now = Instant::now();
        if let Some(t) = c.sent_at.pop_front() {
            let us = now.duration_since(t).as_micros() as u64;
            let _ = self.hist.record(us.max(1));
        }
        self.counts.responses += 1;
        if !(200..400).contains(&c.status) {
            self.counts.status_errors += 1;
        }
        if let (Some(seen), Some(expect)) = (c.checking.take(), self.target.expect.as_ref()) {
            self.counts.verified += 1;
            if seen != **expect {
                self.counts.verify_errors += 1;
            }
        }
        c.framing = Framing::Head;
        if now < self.cfg.deadline && self.counts.responses < self.cfg.max_responses {
            self.queue_request(i);
            return self.flush(i);
        }
        Next::Go
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A server the test writes: answers each request on a connection with `answers[k]`
    /// in turn (cycling), as fast as they come.
    fn server(answers: Vec<Vec<u8>>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let answers = answers.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut k = 0;
                    let mut tmp = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if s.write_all(&answers[k % answers.len()]).is_err() {
                                return;
                            }
                            k += 1;
                        }
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                });
            }
        });
        addr
    }

    fn run_against(addr: SocketAddr, verify: f64, expect: Option<Vec<u8>>) -> Counts {
        run_with(addr, verify, expect, 2, 1)
    }

    fn run_with(
        addr: SocketAddr,
        verify: f64,
        expect: Option<Vec<u8>>,
        conns: usize,
        pipeline: usize,
    ) -> Counts {
        let c = loop_for(addr, verify, expect, conns, pipeline);
        // It stops asking at 400; what was in flight then still ends.
        assert!(
            (400..=400 + (conns * pipeline) as u64).contains(&c.responses),
            "{c:?}"
        );
        c
    }

    /// One loop against `addr` for at most 5 s or 400 responses.
    fn loop_for(
        addr: SocketAddr,
        verify: f64,
        expect: Option<Vec<u8>>,
        conns: usize,
        pipeline: usize,
    ) -> Counts {
        let target = Target {
            addr,
            request: b"GET /o HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            expect: expect.map(Arc::new),
        };
        let cfg = LoopConfig {
            conns,
            pipeline,
            verify,
            timeout: Duration::from_secs(2),
            deadline: Instant::now() + Duration::from_secs(5),
            max_responses: 400,
            seed: 7,
        };
        let (c, h) = event_loop(&target, &cfg, &AtomicBool::new(false)).unwrap();
        assert_eq!(h.len(), c.responses);
        c
    }

    fn object(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn length_answer(body: &[u8]) -> Vec<u8> {
        let mut a = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX: y\r\n\r\n",
            body.len()
        )
        .into_bytes();
        a.extend_from_slice(body);
        a
    }

    fn chunked_answer(body: &[u8], piece: usize) -> Vec<u8> {
        let mut a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for p in body.chunks(piece) {
            a.extend_from_slice(format!("{:x};ext=1\r\n", p.len()).as_bytes());
            a.extend_from_slice(p);
            a.extend_from_slice(b"\r\n");
        }
        a.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
        a
    }

    #[test]
    fn length_bodies_are_discarded_and_counted_and_verified_when_asked() {
        let body = object(300_000);
        let answer = length_answer(&body);
        let addr = server(vec![answer.clone()]);
        let c = run_against(addr, 0.0, None);
        assert_eq!(c.bytes, c.responses * answer.len() as u64);
        assert_eq!(c.read_errors + c.parse_errors + c.status_errors, 0);
        let c = run_against(addr, 1.0, Some(body.clone()));
        assert_eq!((c.verified, c.verify_errors), (c.responses, 0));
        // Half checked, against the wrong object: every checked one is an error.
        let mut wrong = body.clone();
        wrong[123_456] ^= 1;
        let c = run_against(addr, 0.5, Some(wrong));
        assert!(c.verified > 100 && c.verified < 300, "{c:?}");
        assert_eq!(c.verify_errors, c.verified);
    }

    #[test]
    fn chunked_bodies_are_followed_through_their_framing() {
        let body = object(100_000);
        let addr = server(vec![chunked_answer(&body, 7_777), length_answer(b"")]);
        let c = run_with(addr, 1.0, Some(body), 3, 4);

        assert_eq!(c.parse_errors + c.read_errors, 0, "{c:?}");
        // Every other answer is the empty one: those differ from the object.
        assert_eq!(c.verified, c.responses);
        assert!(c.verify_errors >= 190 && c.verify_errors <= 215, "{c:?}");
    }

    #[test]
    fn bad_statuses_heads_and_closes_are_counted_by_kind() {
        let addr = server(vec![
            b"HTTP/1.1 503 No\r\nContent-Length: 2\r\n\r\nno".to_vec(),
        ]);
        let c = run_against(addr, 0.0, None);
        assert_eq!(c.status_errors, c.responses);
        let addr = server(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n".to_vec(),
        ]);
        let c = loop_for(addr, 0.0, None, 1, 1);
        assert_eq!(c.responses, 0);
        assert!(c.parse_errors > 0);
        // A body cut by the close.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(3) {
                let mut s = s.unwrap();
                let mut tmp = [0u8; 1024];
                let _ = s.read(&mut tmp);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
            }
        });
        let target = Target {
            addr,
            request: b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            expect: None,
        };
        let cfg = LoopConfig {
            conns: 1,
            pipeline: 1,
            verify: 0.0,
            timeout: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_millis(500),
            max_responses: 10,
            seed: 1,
        };
        let (c, _) = event_loop(&target, &cfg, &AtomicBool::new(false)).unwrap();
        assert_eq!(c.responses, 0);
        assert!(c.read_errors >= 1, "{c:?}");
    }

    /// Software no one here wrote: nginx's file server (keep-alive, `Content-Length`,
    /// sendfile) and node's `http` (chunked bodies, written in pieces). Every body is
    /// checked against the object, none may differ, and no error of any kind is counted.
    #[test]
    fn against_nginx_and_node_every_checked_body_is_the_object() {
        let dir = std::env::temp_dir().join(format!("relay-load-test-{}", std::process::id()));
        let origin = dir.join("origin");
        std::fs::create_dir_all(&origin).unwrap();
        let body = object(200_000);
        std::fs::write(origin.join("o"), &body).unwrap();
        let cpus = crate::procs::allowed_cpus();
        let cpu = cpus.first().copied().unwrap_or(0).to_string();
        let nginx = crate::servers::Nginx::start(&dir.join("nginx"), &origin, &cpu, 1, true)
            .expect("nginx (installed by cargo xtask setup)");
        let c = run_with(nginx.files, 1.0, Some(body.clone()), 4, 2);
        assert_eq!((c.verified, c.verify_errors), (c.responses, 0), "{c:?}");
        drop(nginx);
        // node answers each request with the object in 7,777-byte pieces (chunked).
        let script = format!(
            "const fs=require('fs');const b=fs.readFileSync('{}');\
             const s=require('http').createServer((q,r)=>{{\
             for(let i=0;i<b.length;i+=7777)r.write(b.subarray(i,i+7777));r.end();}});\
             s.listen(0,'127.0.0.1',()=>console.log(s.address().port));",
            origin.join("o").display()
        );
        let mut node = std::process::Command::new("node")
            .args(["-e", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node (installed by cargo xtask setup)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(node.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port: u16 = line.trim().parse().expect("node's port");
        let c = run_with(([127, 0, 0, 1], port).into(), 1.0, Some(body), 4, 2);
        let _ = node.kill();
        let _ = node.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((c.verified, c.verify_errors), (c.responses, 0), "{c:?}");
        assert_eq!(c.parse_errors + c.read_errors + c.status_errors, 0, "{c:?}");
    }

    #[test]
    fn the_summary_parses_as_the_wrk_runners_does() {
        let mut h = latency_histogram();
        h.record(100).unwrap();
        h.record(900).unwrap();
        let c = Counts {
            responses: 2,
            bytes: 8500,
            ..Counts::default()
        };
        let line = summary_line(&c, &h, Duration::from_secs(2));
        let o = crate::wrk::parse(line.strip_prefix("RELAYBENCH ").unwrap(), 0.5).unwrap();
        assert_eq!((o.requests, o.wire_bytes, o.duration_s), (2, 8500, 2.0));
        assert!(o.p99_us >= 900.0);
    }
}

//! Unit tests of the exchange: synthetic events, no ring, no socket. The test plays the
//! kernel (it carries out each action: records what is sent, opens, stats and reads real
//! files in a temporary directory) and, for HTTP origins, the upstream (it makes the
//! in-flight head and chunk entries the exchange joins, and publishes their outcome).

use super::*;
use crate::{Tunables, WorkerStats};
use relay_cache::fill::{Fill, FillError};
use relay_cache::inflight::{Claim, Flight};
use relay_cache::wake::Wakers;
use relay_cache::{ChunkKey, ObjectMeta};
use relay_config::Config;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};

mod asks;
mod body_deadline;
mod cache_status;
mod directory;
mod disk;
mod errors;
mod http_origin;
mod input;
mod pass;
mod states;

const CHUNK: u64 = 16 * 1024;
/// The host the test's HTTP origin serves.
const CDN: &str = "cdn.test";

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("relay-exchange-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a worker gives an exchange: the shared cache (and an HTTP origin the test plays),
/// counters, a clock.
struct Kit {
    shared: Shared,
    stats: WorkerStats,
    date: DateCache,
    latency: Histogram<u64>,
    timeouts: Timeouts,
    dir: TempDir,
}

impl Kit {
    fn new() -> Kit {
        Kit::with_disk(false)
    }

    /// With a disk tier (in `dir/disk`) when `disk`.
    fn with_disk(disk: bool) -> Kit {
        // (Nothing listens there: a fetch the test does not make itself fails.)
        Kit::with_origin(disk, "http://127.0.0.1:9")
    }

    /// With a disk tier when `disk`, and the HTTP origin (serving [`CDN`]) at `url`.
    fn with_origin(disk: bool, url: &str) -> Kit {
        let dir = TempDir::new();
        let disk_dir = match disk {
            true => format!("disk_dir = \"{}/disk\"\n", dir.0.display()),
            false => String::new(),
        };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 3000\nidle_timeout_ms = 7000\n\
             [server.limits]\nmax_head_bytes = 4096\nmax_uri_bytes = 2048\n\
             [cache]\nchunk_size = \"16 KiB\"\nmemory_bytes = \"4 MiB\"\n{disk_dir}\
             [origin]\ndirectory = \"{}\"\npass_buffer_bytes = \"256 KiB\"\n\
             [[origin.http]]\nurl = \"{url}\"\nhost = \"{CDN}\"\n",
            dir.0.display()
        );
        let config = Config::from_str(&text, &dir.0, "relay.toml").unwrap();
        let cache = relay_cache::Cache::open(&config.cache).unwrap();
        let wakers: Arc<Vec<std::os::fd::OwnedFd>> = Arc::new(vec![crate::sys::eventfd().unwrap()]);
        // Asked only by tests that start an origin: every other fetch a test needs is made
        // by the test first, so the exchange joins it.
        let upstream = relay_upstream::Upstream::open(&config.origin, &cache, Wakers::new(|_| {}))
            .unwrap()
            .unwrap();
        let shared = Shared {
            limits: relay_proto::Limits {
                max_head_bytes: config.server.limits.max_head_bytes,
                max_headers: config.server.limits.max_headers,
                max_uri_bytes: config.server.limits.max_uri_bytes,
            },
            cache,
            origin: Some(crate::origin::DirOrigin::open(&dir.0).unwrap()),
            upstream: Some(upstream),
            wakers,
            wake: Wakers::new(|_| {}),
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            tunables: Tunables::from_config(&config),
            clients: Default::default(),
            peer_key: None,
            digest: None,
            access_log: None,
            config,
        };
        let timeouts = Timeouts {
            header: Duration::from_secs(3),
            idle: Duration::from_secs(7),
            send: Duration::from_secs(11),
            body: Duration::from_secs(5),
            body_min_rate: 1024,
            revalidate: Duration::from_secs(60),
        };
        Kit {
            shared,
            stats: WorkerStats::default(),
            date: DateCache::new(std::time::SystemTime::now()),
            latency: crate::metrics::latency_histogram(),
            timeouts,
            dir,
        }
    }

    fn cx(&mut self) -> Cx<'_> {
        Cx {
            shared: &self.shared,
            stats: &self.stats,
            worker: 0,
            now: Instant::now(),
            date: &self.date,
            timeouts: self.timeouts,
            boundary: "relay-test-boundary",
            latency: &mut self.latency,
            peer: &|| Some("192.0.2.7:4000".parse().unwrap()),
            client: relay_upstream::budget::Client::V4([192, 0, 2, 7]),
            reading: true,
            single_reads: false,
        }
    }

    fn exchange(&mut self) -> Exchange {
        Exchange::new(
            8192,
            Instant::now() + self.timeouts.idle,
            self.stats.overflow.clone(),
        )
    }

    /// A file of the directory origin.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn count(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes a multishot receive brought, and the action they lead to.
    fn input(&mut self, ex: &mut Exchange, bytes: &[u8]) -> Action {
        let mut cx = self.cx();
        let _ = ex.on_input(cx.now, bytes);
        match ex.on_recv_result(bytes.len() as i32, true) {
            Received::Poll { .. } => ex.poll(&mut cx),
            Received::Keep { .. } | Received::Pause => Action::Idle,
            Received::Close => Action::Close,
        }
    }

    /// A request's bytes in, played through to where the exchange stops: the head of the
    /// response, its body, and the action it stopped at.
    fn ask(&mut self, ex: &mut Exchange, request: &[u8]) -> (String, Vec<u8>, Action) {
        let a = self.input(ex, request);
        let (sent, next) = self.run(ex, a);
        let (head, body) = split_response(&sent);
        (head, body.to_vec(), next)
    }

    /// Plays the kernel and the directory origin's file system for `a` and every action
    /// after it until the exchange waits for input, a wake-up or a close; returns what was
    /// sent and where it stopped.
    fn run(&mut self, ex: &mut Exchange, mut a: Action) -> (Vec<u8>, Action) {
        let mut sent = Vec::new();
        let mut file: Option<std::fs::File> = None;
        for _ in 0..10_000 {
            a = match a {
                Action::Send => {
                    let [h, b] = ex.outgoing().parts();
                    let n = h.len() + b.len();
                    sent.extend_from_slice(h);
                    sent.extend_from_slice(b);
                    ex.on_sent(&mut self.cx(), n)
                }
                Action::SendNow(bytes) => {
                    sent.extend_from_slice(bytes);
                    ex.poll(&mut self.cx())
                }
                Action::OpenDir { root, .. } => {
                    assert_eq!(
                        root,
                        self.shared.origin.as_ref().unwrap().root_fd(),
                        "opened beneath the origin's root"
                    );
                    let name = ex.dir_path().unwrap().to_str().unwrap().to_owned();
                    let opened = std::fs::File::open(self.dir.0.join(&name))
                        .map_err(|e| -e.raw_os_error().unwrap());
                    ex.on_dir_opened(&mut self.cx(), opened)
                }
                Action::StatDir { fd, .. } => {
                    let f = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
                    fill_statx(ex.dir_stat_buf().unwrap(), &f.metadata().unwrap());
                    file = Some(f);
                    ex.on_dir_stat(&mut self.cx(), 0, |_| Ok(()))
                }
                Action::ReadChunk { op, check } => {
                    let fd = op.fd;
                    let n = kernel_read(op);
                    self.read_done(ex, n, fd, check)
                }
                other => return (sent, other),
            };
        }
        drop(file);
        panic!("the exchange never stopped: {a:?}");
    }
}

impl Kit {
    /// The test as the kernel after a chunk read of `fd` that brought `n`: the read's
    /// completion, then the linked `statx` into `check` (canceled after a failed read).
    fn read_done(&mut self, ex: &mut Exchange, n: i32, fd: i32, check: *mut libc::statx) -> Action {
        let a = ex.on_chunk_read(&mut self.cx(), n);
        assert!(matches!(a, Action::Idle), "the check is waited for: {a:?}");
        if n <= 0 {
            return ex.on_chunk_checked(&mut self.cx(), -libc::ECANCELED);
        }
        let f = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
        // SAFETY: the exchange handed its statx buffer over with the read and leaves it
        // alone until `on_chunk_checked` (the ring's buffer rule).
        fill_statx(unsafe { &mut *check }, &f.metadata().unwrap());
        ex.on_chunk_checked(&mut self.cx(), 0)
    }
}

/// The test as the kernel: `statx` of a file into the exchange's buffer.
fn fill_statx(st: &mut libc::statx, m: &std::fs::Metadata) {
    st.stx_mode = m.mode() as u16;
    st.stx_size = m.len();
    st.stx_ino = m.ino();
    st.stx_mtime.tv_sec = m.mtime();
    st.stx_mtime.tv_nsec = m.mtime_nsec() as u32;
}

/// The test as the kernel: a read the exchange asked for, into its buffer.
fn kernel_read(op: ReadOp) -> i32 {
    let f = std::fs::File::open(format!("/proc/self/fd/{}", op.fd)).unwrap();
    // SAFETY: the exchange handed `op.at..op.at + op.len` over for this read and leaves it
    // alone until `on_chunk_read` (the ring's buffer rule, as the kernel would have it).
    let buf = unsafe { std::slice::from_raw_parts_mut(op.at, op.len) };
    f.read_at(buf, op.offset).unwrap() as i32
}

/// The head and body of one response in `bytes`, and what follows it.
fn split_response(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    (head, &bytes[end..])
}

fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn object(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// An HTTP-origin object's key, as the exchange makes it from Host and target.
fn cdn_key(path: &str) -> String {
    format!("http://{CDN}{path}")
}

fn cdn_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {CDN}\r\nUser-Agent: t\r\n\r\n").into_bytes()
}

/// A wake-up: the worker polls the waiting exchange.
fn ex_poll(kit: &mut Kit, ex: &mut Exchange) -> Action {
    ex.poll(&mut kit.cx())
}

impl Kit {
    /// A request for `path` of the HTTP origin while its head fetch (the test's) is in
    /// flight; the fetch fails; what the woken exchange then does.
    fn head_fails(&mut self, path: &str) -> (Vec<u8>, Action) {
        self.head_fails_with(path, FillError::Connect)
    }

    /// [`Kit::head_fails`], the fetch failing with `e`.
    fn head_fails_with(&mut self, path: &str, e: FillError) -> (Vec<u8>, Action) {
        let key = cdn_key(path);
        self.shared.cache.inflight.head(&key);
        let mut ex = self.exchange();
        assert!(matches!(self.input(&mut ex, &cdn_get(path)), Action::Wait));
        self.shared
            .cache
            .inflight
            .finish_head(&key, Err(e), None, &self.shared.wake);
        self.woken(&mut ex)
    }

    /// A wake-up, and what the exchange then does until it stops again.
    fn woken(&mut self, ex: &mut Exchange) -> (Vec<u8>, Action) {
        let a = ex.poll(&mut self.cx());
        self.run(ex, a)
    }

    /// Wake-ups until the exchange sends something (the upstream's thread fills what it
    /// waits on; these tests' wakers wake nobody), for at most 10 s.
    fn woken_until_sent(&mut self, ex: &mut Exchange) -> (Vec<u8>, Action) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let (sent, next) = self.woken(ex);
            if !sent.is_empty() || Instant::now() > deadline {
                return (sent, next);
            }
            assert!(matches!(next, Action::Wait), "{next:?}");
        }
    }
}

/// The test as an HTTP origin: it answers one request for a Range of `body` (an object
/// whose ETag is `"v"`) with a 206 and those bytes. Returns its URL, and the request it
/// answered once it has.
fn range_origin(body: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the fetch closed before its head");
            request.extend_from_slice(&buf[..n]);
        }
        let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
        let (from, to) = request
            .lines()
            .find_map(|l| l.strip_prefix("range: bytes="))
            .and_then(|r| r.trim().split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .expect("a Range request");
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{to}/{}\r\n\
             Content-Length: {}\r\nETag: \"v\"\r\n\r\n",
            body.len(),
            to + 1 - from
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&body[from..=to]).unwrap();
        request
    });
    (url, served)
}

/// The test as the disk writer: chunk `index` of `key` (version `version`, of an object
/// `len` bytes long described by `meta`) written to the disk tier.
fn put_on_disk(kit: &Kit, key: &str, version: u64, index: u64, len: u64, body: &[u8], meta: &[u8]) {
    let disk = kit.shared.cache.disk.as_ref().expect("a disk tier");
    let info = relay_cache::disk::ChunkInfo {
        key: relay_cache::ChunkRef {
            object: key,
            version,
            index,
        },
        object_len: len,
        etag: "\"v\"",
        last_modified: "",
        meta,
    };
    let plan = disk.plan_write(&info, body).unwrap();
    std::fs::write(&plan.temp_path, [&plan.header[..], body].concat()).unwrap();
    std::fs::rename(&plan.temp_path, &plan.final_path).unwrap();
    disk.commit_write(&plan);
}

impl Kit {
    /// Plays the kernel for a disk-tier chunk read: the open, then the header and body
    /// reads; returns the action after them.
    fn disk_read(&mut self, ex: &mut Exchange, a: Action) -> Action {
        let Action::OpenDisk { .. } = a else {
            panic!("the chunk file is opened first: {a:?}")
        };
        let path = ex.disk_path().unwrap().to_str().unwrap().to_owned();
        let a = ex.on_disk_opened(&mut self.cx(), Ok(std::fs::File::open(path).unwrap()));
        let Action::ReadDisk { header, body } = a else {
            panic!("then its header and body are read together: {a:?}")
        };
        let (header, body) = (header.unwrap(), body.unwrap());
        let (h, b) = (kernel_read(header), kernel_read(body));
        let a = ex.on_disk_read(&mut self.cx(), false, h);
        assert!(
            matches!(a, Action::Idle),
            "the body read is still in flight: {a:?}"
        );
        ex.on_disk_read(&mut self.cx(), true, b)
    }
}

/// A description of `len` bytes, version `version`, stale since a second ago, with the
/// given stale windows; its one chunk in memory (`body`).
fn stale_object(kit: &Kit, key: &str, version: u64, body: &[u8], swr: u64, sie: u64) {
    let meta = ObjectMeta {
        fetched: Instant::now() - Duration::from_secs(2),
        ttl: Duration::from_secs(1),
        stale_while_revalidate: Duration::from_secs(swr),
        stale_if_error: Duration::from_secs(sie),
        ..ObjectMeta::file(body.len() as u64, version, "\"s\"".into(), String::new())
    };
    kit.shared.cache.meta.insert(key, meta);
    let chunk = ChunkKey {
        object: Arc::from(key),
        version,
        index: 0,
    };
    kit.shared
        .cache
        .memory
        .insert(chunk, bytes::Bytes::copy_from_slice(body));
}

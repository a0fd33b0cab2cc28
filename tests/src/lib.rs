//! relay's test kit: start the real `relay` binary on a config the test writes, talk to it
//! with real clients (curl, and a small raw HTTP/1.1 client for keep-alive and pipelining),
//! and build network namespaces for root-only tests.
//!
//! Layout:
//! - [`relay_bin`], [`Relay`]: the binary under test, started and stopped per test.
//! - [`TempDir`], [`pattern`]: origin directories with deterministic content.
//! - [`client`]: a raw HTTP/1.1 client over `TcpStream`.
//! - [`abuse`]: attacks (floods, idle crowds, slowloris, trickled uploads, slow readers, a
//!   stalled admin client) run against a relay while its memory and a good client's
//!   latency are measured; shared by `tests/tests/abuse.rs` and `relay-bench abuse`.
//! - `netns`: namespace and veth guards for root-only tests.

pub mod abuse;
pub mod client;
pub mod dnsmasq;
pub mod hammer;
pub mod netns;
pub mod nginx;
pub mod origin;
pub mod python;
pub mod steer_site;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The relay binary: `$RELAY_BIN`, else `relay` in this test's own target directory, else the
/// workspace's `target/debug/relay` or `target/release/relay`.
pub fn relay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RELAY_BIN") {
        return PathBuf::from(p);
    }
    // The binary built into the same target directory as this test (`<target>/debug/deps/
    // <test>` → `<target>/debug/relay`), so a `CARGO_TARGET_DIR` never picks up a stale one.
    if let Some(p) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("relay")))
        .filter(|p| p.exists())
    {
        return p;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for p in ["target/debug/relay", "target/release/relay"] {
        let p = root.join(p);
        if p.exists() {
            return p;
        }
    }
    panic!("relay binary not found: run `cargo build -p relay` or set RELAY_BIN");
}

/// What follows `prefix` in a log `line` (after its time and level, or the journal's
/// priority).
pub fn after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.find(prefix).map(|at| &line[at + prefix.len()..])
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("relay-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create dir");
        }
        std::fs::write(&p, bytes).expect("write file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes; `seed` varies the stream.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A running relay process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener, when the config enables it.
    pub admin: Option<SocketAddr>,
    /// Every stderr line the relay printed so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub config: PathBuf,
    _dir: TempDir,
}

impl Relay {
    /// Writes `config` (TOML) to a temp file and starts `relay run` on it, through `wrap`
    /// (e.g. `ip netns exec NS`) when given. Waits (at most 20 s) for the listening line.
    pub fn start_with(config: &str, wrap: &[&str]) -> Relay {
        Relay::start_bin(&relay_bin(), config, wrap)
    }

    /// [`Relay::start_with`] for the binary at `bin` (a benchmark measuring a given build).
    pub fn start_bin(bin: &Path, config: &str, wrap: &[&str]) -> Relay {
        Relay::start_full(bin, config, wrap, &[])
    }

    /// `relay run --take-over` on `config`: takes the sockets of the relay running on its
    /// address (a restart without a gap).
    pub fn take_over(config: &str) -> Relay {
        Relay::start_full(&relay_bin(), config, &[], &["--take-over"])
    }

    /// `relay run` on `config` given `socket` as systemd passes one (`relay.socket`): as
    /// descriptor 3, with `LISTEN_FDS=1` and `LISTEN_PID` its own pid (a shell that puts it
    /// there, then becomes relay).
    pub fn start_activated(config: &str, socket: &std::net::TcpListener) -> Relay {
        let fd = std::os::fd::OwnedFd::from(socket.try_clone().expect("a copy of the socket"));
        let wrap = [
            "sh",
            "-c",
            "exec 3<&0 </dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"",
        ];
        Relay::start_io(&relay_bin(), config, &wrap, &[], Some(Stdio::from(fd)))
    }

    fn start_full(bin: &Path, config: &str, wrap: &[&str], extra: &[&str]) -> Relay {
        Relay::start_io(bin, config, wrap, extra, None)
    }

    fn start_io(
        bin: &Path,
        config: &str,
        wrap: &[&str],
        extra: &[&str],
        stdin: Option<Stdio>,
    ) -> Relay {
        let dir = TempDir::new("cfg");
        let path = dir.write("relay.toml", config.as_bytes());
        let mut cmd = if let Some((first, rest)) = wrap.split_first() {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(s) = stdin {
            cmd.stdin(s);
        }
        let mut child = cmd.spawn().expect("start relay");
        let stderr = child.stderr.take().expect("stderr pipe");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[relay] {line}");
                if let Some(rest) = after(&line, "relay: listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                if let Ok(mut l) = log2.lock() {
                    l.push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("relay did not start listening within 20 s ({status:?})");
            }
        };
        // The admin line follows the listening line at once when the admin listener is on.
        let mut admin = None;
        for _ in 0..20 {
            let found = log.lock().ok().and_then(|l| {
                l.iter().find_map(|line| {
                    let rest = after(line, "relay: admin on http://")?;
                    rest.split_whitespace().next()?.parse().ok()
                })
            });
            if found.is_some() {
                admin = found;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Relay {
            child,
            addr,
            admin,
            log,
            config: path,
            _dir: dir,
        }
    }

    pub fn start(config: &str) -> Relay {
        Relay::start_with(config, &[])
    }

    /// The address in the line the relay logged after `prefix` (say
    /// "relay: cluster on udp://"), waiting up to 5 s for it.
    pub fn printed_addr(&self, prefix: &str) -> std::net::SocketAddr {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = self
                .log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find_map(|l| after(l, prefix)?.trim().parse().ok());
            if let Some(a) = found {
                return a;
            }
            assert!(std::time::Instant::now() < end, "no line {prefix:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The relay process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The relay process's CPU time so far (user + system, in clock ticks).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("relay's /proc stat");
        // Fields after the command name (which may hold spaces): utime is the 14th, stime the
        // 15th of the whole line.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f[11] + f[12]
    }

    /// The relay process's resident memory now, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("relay's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Sends a signal to the relay process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: signalling our own child process by pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits (at most `within`) for a stderr line containing `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end {
            if self
                .log
                .lock()
                .is_ok_and(|l| l.iter().any(|line| line.contains(needle)))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The admin listener's `/metrics` text (the config must enable the listener).
    pub fn metrics(&self) -> String {
        let admin = self.admin.expect("an admin listener in the config");
        String::from_utf8(client::Client::connect(admin).get("/metrics").body)
            .expect("metrics are UTF-8")
    }

    /// The value of metric `name` (unlabelled) now; None when relay does not export it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_in(&self.metrics(), name)
    }

    /// Sends SIGTERM and waits (at most 15 s) for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process by pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        for _ in 0..150 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait relay")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A config for one relay serving `origin` on `listen`.
pub fn config(listen: &str, origin: &Path, chunk_size: u64, memory_bytes: u64) -> String {
    format!(
        "[server]\nlisten = \"{listen}\"\nworkers = 2\n\n[cache]\nchunk_size = {chunk_size}\n\
         memory_bytes = {memory_bytes}\n\n[origin]\ndirectory = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.display()
    )
}

/// Runs curl with `args`; returns (exit code, stdout bytes, stderr text).
pub fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed by `cargo xtask setup`");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// One answer as curl saw it ([`fetch`]).
pub struct Got {
    /// curl's exit code (0: whole; 18: the body ended before its length; 56: cut).
    pub code: i32,
    pub status: u16,
    /// The response head as received (status line and fields).
    pub head: String,
    pub body: Vec<u8>,
}

impl Got {
    /// A field's value (the first with that name, any case).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// curl `url` with `extra` arguments: its exit code, status, head and body (never panics on
/// a failed transfer, so tests can look at cut bodies).
pub fn fetch(url: &str, extra: &[&str]) -> Got {
    let dir = TempDir::new("curl-head");
    let head = dir.path().join("head");
    let mut args = vec!["-D", head.to_str().expect("path")];
    args.extend_from_slice(extra);
    args.push(url);
    let (code, body, _) = curl(&args);
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    // The final answer's status (after any interim ones, such as a 103).
    let status = head
        .split("\r\n\r\n")
        .filter(|h| !h.is_empty())
        .last()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Got {
        code,
        status,
        head,
        body,
    }
}

/// The value of the unlabelled metric `name` in a `/metrics` text.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A seeded Zipf sampler (s = 1) over `n` items, on a xorshift generator: the same
/// sequence for the same seed.
pub struct Zipf {
    weights: Vec<f64>,
    total: f64,
    x: u64,
}

impl Zipf {
    pub fn new(n: usize, seed: u64) -> Zipf {
        let weights: Vec<f64> = (1..=n.max(1)).map(|k| 1.0 / k as f64).collect();
        let total = weights.iter().sum();
        Zipf {
            weights,
            total,
            x: seed | 1,
        }
    }

    /// The next raw number of the generator.
    pub fn next_u64(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }

    /// The next item, 0 the most asked for.
    pub fn item(&mut self) -> usize {
        let mut u = (self.next_u64() % 1_000_000) as f64 / 1_000_000.0 * self.total;
        let mut i = 0;
        while i + 1 < self.weights.len() && u > self.weights[i] {
            u -= self.weights[i];
            i += 1;
        }
        i
    }
}

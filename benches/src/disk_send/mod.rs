//! `relay-bench disk-send`: the data-plane issue's question "disk-tier chunks with splice
//! (file → pipe → socket) or READ_FIXED + send — measure both, keep the faster", measured
//! with real io_uring and real TCP over loopback.
//!
//! Setup: `--files` chunk files of each `--sizes-kib` size in a temp dir (pseudo-random
//! bytes, synced, read back once so the page cache holds them clean: the disk tier's hot
//! case; `--cold` adds rows with posix_fadvise(DONTNEED) before every file). Per connection
//! count, K keep-alive loopback connections; the [`sender`] (one thread and one io_uring,
//! pinned with its io-wq workers to `--sender-cpu`) sends whole files on every connection by
//! each [`Method`]; the [`receiver`] (one thread, epoll, pinned to `--receiver-cpu`) drains
//! them and checks the byte counts are exact. One short run per size and method compares
//! every received byte with the files before the measured runs.
//!
//! Measured runs are interleaved: round by round, size by size, the methods in rotated
//! order, so drift of the machine hits every method alike. Per run: GB/s (bytes delivered
//! from the sender's start to the receiver's last byte) and the sender's CPU seconds per GB:
//! the whole process's CPU time minus the receiver's and the main thread's, which is the
//! sender thread plus the ring's io-wq workers (io_uring runs SPLICE in io-wq worker
//! threads, never inline; the sender thread alone would hide that cost).

mod receiver;
mod sender;
pub mod sys;

use crate::machine::{self, Machine};
use crate::procs;
use crate::serve::Progress;
use crate::stats::Stat;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// How a chunk file gets from the page cache to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// READ_FIXED into a registered buffer, then SEND.
    #[value(name = "read-fixed")]
    ReadFixed,
    /// READ_FIXED, XXH3-64 of the chunk checked, then SEND (relay's verify-then-serve path).
    #[value(name = "read-fixed-xxh3")]
    ReadFixedXxh3,
    /// READ_FIXED, then SEND_ZC from the registered buffer.
    #[value(name = "send-zc-fixed")]
    SendZc,
    /// SPLICE file→pipe linked to SPLICE pipe→socket.
    #[value(name = "splice")]
    Splice,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::ReadFixed => "read_fixed",
            Method::ReadFixedXxh3 => "read_fixed+xxh3",
            Method::SendZc => "send_zc_fixed",
            Method::Splice => "splice",
        }
    }
}

#[derive(clap::Args)]
pub struct Options {
    /// Chunk file sizes in KiB, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1024])]
    pub sizes_kib: Vec<u64>,
    /// Files per size.
    #[arg(long, default_value_t = 64)]
    pub files: usize,
    /// Keep-alive connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64])]
    pub connections: Vec<usize>,
    /// Methods, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Method::ReadFixed, Method::ReadFixedXxh3, Method::SendZc, Method::Splice])]
    pub methods: Vec<Method>,
    /// Measured runs per row.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds per run (the sender starts no file after this; files in flight finish).
    #[arg(long, default_value_t = 1.2)]
    pub seconds: f64,
    /// Seconds of the verifying warm-up run per size and method (not recorded).
    #[arg(long, default_value_t = 0.25)]
    pub verify_seconds: f64,
    /// Also measure the cold case: posix_fadvise(DONTNEED) on each file before it is sent.
    #[arg(long)]
    pub cold: bool,
    /// The receiver discards with recv(MSG_TRUNC) instead of copying (verifying runs copy).
    #[arg(long)]
    pub discard: bool,
    /// Pipe capacity for splice, raised with F_SETPIPE_SZ (KiB).
    #[arg(long, default_value_t = 1024)]
    pub pipe_kib: usize,
    /// CPU of the sender thread and its io-wq workers.
    #[arg(long, default_value_t = 1)]
    pub sender_cpu: usize,
    /// CPU of the receiver thread.
    #[arg(long, default_value_t = 0)]
    pub receiver_cpu: usize,
    /// Where the temp dir of chunk files goes (a real filesystem, not tmpfs).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Directory for disk-send.json.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// How the benchmark was invoked, for the record (xtask passes its command line).
    #[arg(long)]
    pub command: Option<String>,
}

/// The chunk files of one size, and their bytes for the receiver's comparison.
struct Set {
    label: String,
    files: sender::Files,
    contents: Arc<Vec<Vec<u8>>>,
}

/// A (size, cache state) pair measured for every method.
#[derive(Clone, Copy)]
struct Config {
    set: usize,
    cold: bool,
}

/// One measured (or verifying) run.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub round: usize,
    pub size: u64,
    pub conns: usize,
    pub cache: &'static str,
    pub method: &'static str,
    pub bytes: u64,
    pub files: u64,
    /// Sender's start to the receiver's last byte.
    pub seconds: f64,
    pub gb_per_s: f64,
    /// Sender thread + io-wq workers (process minus receiver and main thread).
    pub sender_cpu_s: f64,
    pub sender_thread_cpu_s: f64,
    pub iowq_cpu_s: f64,
    pub receiver_cpu_s: f64,
    /// Busy seconds of each CPU (from /proc/stat) over the run, all processes.
    pub cpu_busy_s: Vec<f64>,
    /// Busy CPU seconds of the machine not spent by this process.
    pub other_cpu_s: f64,
    /// Wall seconds the CPU figures cover (a little more than `seconds`).
    pub cpu_window_s: f64,
    /// io-wq worker threads alive right after the run (idle workers linger a few seconds,
    /// so this includes those an earlier splice run started).
    pub iou_wrk_alive_after_run: usize,
    #[serde(flatten)]
    pub counts: sender::Counts,
    pub verified_bytes: u64,
}

impl RunRecord {
    fn gb(&self) -> f64 {
        self.bytes as f64 / 1e9
    }
}

/// Medians (min-max) of one row: size × connections × cache × method.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub size: u64,
    pub size_label: String,
    pub conns: usize,
    pub cache: &'static str,
    pub method: &'static str,
    pub runs: usize,
    pub gb_per_s: Stat,
    pub sender_cpu_s_per_gb: Stat,
    pub sender_thread_cpu_s_per_gb: Stat,
    pub iowq_cpu_s_per_gb: Stat,
    /// Percent of one CPU.
    pub sender_cpu_pct: Stat,
    pub sender_cpu_busy_pct: Stat,
    pub receiver_cpu_pct: Stat,
    pub other_cpu_pct: Stat,
    pub iou_wrk_alive_after_run: Stat,
}

/// `num`/`den` of two rows' medians.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub size_label: String,
    pub conns: usize,
    pub cache: &'static str,
    pub num: &'static str,
    pub den: &'static str,
    /// Ratios of the two medians.
    pub gb_per_s: f64,
    pub sender_cpu_s_per_gb: f64,
    /// Ratios within each round (the two runs were measured back to back), median (min-max).
    pub paired_gb_per_s: Stat,
    pub paired_sender_cpu_s_per_gb: Stat,
}

#[derive(Serialize)]
struct Host {
    cpu_model: String,
    cores: usize,
    memory_gib: f64,
    os: String,
    kernel: String,
    tree_git: String,
    loadavg_start: String,
    loadavg_end: String,
}

#[derive(Serialize)]
struct Settings {
    files_per_size: usize,
    sizes: Vec<u64>,
    connections: Vec<usize>,
    methods: Vec<&'static str>,
    runs: usize,
    seconds_per_run: f64,
    verify_seconds: f64,
    cold: bool,
    receiver: &'static str,
    sender_cpu: usize,
    receiver_cpu: usize,
    dir: String,
    fs_type: String,
    pipe_bytes: usize,
    iowq_max_workers_bounded_unbounded: [u32; 2],
    ring: &'static str,
    xxh3_gb_per_s_on_sender_cpu: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    benchmark: &'static str,
    command: Option<&'a str>,
    host: Host,
    settings: Settings,
    rows: &'a [Row],
    ratios: &'a [Ratio],
    checksum_note: &'static str,
    verify_runs: &'a [RunRecord],
    runs: &'a [RunRecord],
    seconds: f64,
}

const CHECKSUM_NOTE: &str = "relay verifies every disk chunk's XXH3-64 body checksum before \
sending any of its bytes (a corrupt chunk is dropped and refetched, never served); that needs \
the bytes in user memory (so does promoting the chunk to the memory tier). splice moves page-cache pages to the socket without the process ever \
seeing them, so it cannot verify: choosing splice means serving disk bytes unverified. The \
comparison that decides is therefore splice vs read_fixed+xxh3; read_fixed without the \
checksum is the lower bound of what reading costs.";

const RING_SETUP: &str = "single_issuer + defer_taskrun + coop_taskrun (as relay's workers)";

pub fn run(o: Options) -> Result<()> {
    let started = Instant::now();
    check_options(&o)?;
    let host_probe = Machine::probe(Path::new("/nonexistent"));
    let parent = o.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = TempDir::create(&parent)?;
    let fs_type = sys::fs_type(&dir.0);
    let sets = write_files(&dir.0, &o)?;
    let xxh3 = xxh3_speed(&sets, o.sender_cpu)?;
    let methods = o.methods.clone();
    let mut configs = Vec::new();
    for cold in [false, true] {
        if cold && !o.cold {
            continue;
        }
        for set in 0..sets.len() {
            configs.push(Config { set, cold });
        }
    }
    println!(
        "disk-send: {} files of {} each in {} ({fs_type}); {} connections; {}; {} runs of {} s, \
         methods interleaved; xxh3 {:.1} GB/s on CPU {}",
        o.files,
        sets.iter()
            .map(|s| s.label.as_str())
            .collect::<Vec<_>>()
            .join(" and "),
        dir.0.display(),
        o.connections
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        if o.cold {
            "page cache warm, and cold (DONTNEED before each file)"
        } else {
            "page cache warm"
        },
        o.runs,
        o.seconds,
        xxh3,
        o.sender_cpu
    );
    let steps = o.connections.len() * configs.len() * methods.len() * o.runs;
    let per_step = o.seconds + 0.15;
    let verify_total = o.connections.len() * configs.len() * methods.len();
    let estimate = steps as f64 * per_step + verify_total as f64 * (o.verify_seconds + 0.3);
    let mut progress = Progress::new(steps, estimate);
    let mut runs = Vec::new();
    let mut verify_runs = Vec::new();
    let mut pipe_bytes = 0;
    let mut iowq_max = [0, 0];
    for &k in &o.connections {
        let g = Group {
            o: &o,
            k,
            sets: &sets,
            configs: &configs,
            methods: &methods,
        };
        let info = g.run(&mut progress, &mut runs, &mut verify_runs)?;
        pipe_bytes = info.0;
        iowq_max = info.1;
    }
    progress.finish();
    let loadavg_end = machine::loadavg();

    let rows = rows(&runs, &sets, &o, &configs, &methods);
    let ratios = ratios(&rows, &runs);
    let host = Host {
        cpu_model: host_probe.cpu_model,
        cores: host_probe.cores,
        memory_gib: host_probe.memory_gib,
        os: host_probe.os,
        kernel: host_probe.kernel,
        tree_git: host_probe.tree_git,
        loadavg_start: host_probe.loadavg_start,
        loadavg_end,
    };
    let settings = Settings {
        files_per_size: o.files,
        sizes: sets.iter().map(|s| s.files.size).collect(),
        connections: o.connections.clone(),
        methods: methods.iter().map(|m| m.name()).collect(),
        runs: o.runs,
        seconds_per_run: o.seconds,
        verify_seconds: o.verify_seconds,
        cold: o.cold,
        receiver: if o.discard {
            "epoll, recv(MSG_TRUNC) (discards)"
        } else {
            "epoll, recv (copies)"
        },
        sender_cpu: o.sender_cpu,
        receiver_cpu: o.receiver_cpu,
        dir: dir.0.display().to_string(),
        fs_type,
        pipe_bytes,
        iowq_max_workers_bounded_unbounded: iowq_max,
        ring: RING_SETUP,
        xxh3_gb_per_s_on_sender_cpu: xxh3,
    };
    print_table(&host, &settings, &rows, &ratios);
    let seconds = started.elapsed().as_secs_f64();
    let report = Report {
        benchmark: "disk-send",
        command: o.command.as_deref(),
        host,
        settings,
        rows: &rows,
        ratios: &ratios,
        checksum_note: CHECKSUM_NOTE,
        verify_runs: &verify_runs,
        runs: &runs,
        seconds,
    };
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let json = o.out.join("disk-send.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("json: {}", json.display());
    eprintln!("relay-bench: disk-send done in {seconds:.0} s");
    Ok(())
}

fn check_options(o: &Options) -> Result<()> {
    if o.sizes_kib.is_empty() || o.sizes_kib.iter().any(|&s| s == 0 || s > 16 << 10) {
        bail!("--sizes-kib: each size must be between 1 and 16384");
    }
    if o.files == 0 || o.files > 4096 {
        bail!("--files must be between 1 and 4096");
    }
    if o.connections.is_empty() || o.connections.iter().any(|&k| k == 0 || k > 1024) {
        bail!("--connections: each count must be between 1 and 1024");
    }
    if o.methods.is_empty() || o.runs == 0 || o.runs > 100 {
        bail!("--methods must name one method or more, --runs must be between 1 and 100");
    }
    if !(0.05..=60.0).contains(&o.seconds) || !(0.0..=10.0).contains(&o.verify_seconds) {
        bail!("--seconds must be in [0.05, 60], --verify-seconds in [0, 10]");
    }
    if o.sender_cpu == o.receiver_cpu {
        bail!("the sender and the receiver need different CPUs");
    }
    let allowed = procs::allowed_cpus();
    for cpu in [o.sender_cpu, o.receiver_cpu] {
        if !allowed.contains(&cpu) {
            bail!("CPU {cpu} is not among the CPUs this process may use ({allowed:?})");
        }
    }
    Ok(())
}

/// The temp dir of chunk files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create(parent: &Path) -> Result<TempDir> {
        let dir = parent.join(format!("relay-disk-send-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes, syncs and reads back every chunk file; records each file's XXH3-64.
fn write_files(dir: &Path, o: &Options) -> Result<Vec<Set>> {
    let mut sets = Vec::new();
    for &kib in &o.sizes_kib {
        let size = kib << 10;
        let mut files = Vec::new();
        let mut contents = Vec::new();
        let mut sums = Vec::new();
        for i in 0..o.files {
            let bytes = pseudo_random(size as usize, (size << 20) ^ i as u64);
            let path = dir.join(format!("{kib}k-{i:04}.chunk"));
            let mut f =
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&bytes)?;
            // Clean pages: no writeback during the runs, and DONTNEED can drop them.
            f.sync_all()?;
            drop(f);
            // Read back once: the page cache holds the file (the disk tier's hot case).
            if std::fs::read(&path)? != bytes {
                bail!("{} did not read back as written", path.display());
            }
            sums.push(relay_cache::disk::checksum(&bytes));
            files.push(File::open(&path)?);
            contents.push(bytes);
        }
        sets.push(Set {
            label: size_label(size),
            files: sender::Files { size, files, sums },
            contents: Arc::new(contents),
        });
    }
    Ok(sets)
}

/// SplitMix64 bytes: every file different, reproducible.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn size_label(size: u64) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}

/// XXH3-64 throughput (GB/s) over the largest set, on the sender's CPU: what verifying
/// costs in isolation.
fn xxh3_speed(sets: &[Set], cpu: usize) -> Result<f64> {
    let set = sets
        .iter()
        .max_by_key(|s| s.files.size)
        .expect("at least one size");
    std::thread::scope(|s| {
        s.spawn(|| -> Result<f64> {
            sys::pin_current_thread(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
            let mut bytes = 0u64;
            let mut acc = 0u64;
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(300) {
                for c in set.contents.iter() {
                    acc ^= relay_cache::disk::checksum(c);
                    bytes += c.len() as u64;
                }
            }
            std::hint::black_box(acc);
            Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e9)
        })
        .join()
        .expect("the xxh3 thread panicked")
    })
}

enum SendCmd {
    Run {
        method: Method,
        set: usize,
        cold: bool,
        seconds: f64,
    },
}

/// What the sender thread reports once its ring is set up.
struct SenderInfo {
    tid: i32,
    pipe_bytes: usize,
    iowq_max: [u32; 2],
}

/// One connection count: the connections, the two threads, and every run over them.
struct Group<'a> {
    o: &'a Options,
    k: usize,
    sets: &'a [Set],
    configs: &'a [Config],
    methods: &'a [Method],
}

impl Group<'_> {
    /// Returns the pipe capacity splice got and io-wq's worker limits.
    fn run(
        &self,
        progress: &mut Progress,
        runs: &mut Vec<RunRecord>,
        verify_runs: &mut Vec<RunRecord>,
    ) -> Result<(usize, [u32; 2])> {
        let (clients, servers) = connect(self.k)?;
        let slot = self.sets.iter().map(|s| s.files.size).max().unwrap_or(0) as usize;
        let (o, sets) = (self.o, self.sets);
        std::thread::scope(|s| {
            // Created inside the scope: on any error the main thread's ends drop first, the
            // threads see their channels close and end, and the scope's join returns.
            let (send_tx, send_rx) = mpsc::channel::<SendCmd>();
            let (sent_tx, sent_rx) = mpsc::channel::<Result<sender::Outcome>>();
            let (info_tx, info_rx) = mpsc::channel::<Result<SenderInfo>>();
            let (recv_tx, recv_rx) = mpsc::channel::<receiver::Cmd>();
            let (got_tx, got_rx) = mpsc::channel::<Result<receiver::Outcome>>();
            let (rtid_tx, rtid_rx) = mpsc::channel::<Result<i32>>();
            s.spawn(move || {
                let setup = || -> Result<sender::Sender> {
                    sys::pin_current_thread(o.sender_cpu)
                        .with_context(|| format!("pinning the sender to CPU {}", o.sender_cpu))?;
                    sender::Sender::new(clients, slot, o.pipe_kib << 10, o.sender_cpu)
                };
                let mut snd = match setup() {
                    Ok(snd) => snd,
                    Err(e) => {
                        let _ = info_tx.send(Err(e));
                        return;
                    }
                };
                let _ = info_tx.send(Ok(SenderInfo {
                    tid: sys::gettid(),
                    pipe_bytes: snd.pipe_size,
                    iowq_max: snd.iowq_max_workers,
                }));
                while let Ok(SendCmd::Run {
                    method,
                    set,
                    cold,
                    seconds,
                }) = send_rx.recv()
                {
                    let spec = sender::Spec {
                        method,
                        files: &sets[set].files,
                        duration: Duration::from_secs_f64(seconds),
                        cold,
                        max_bytes: 1 << 40,
                    };
                    let r = snd.run(&spec);
                    let failed = r.is_err();
                    let _ = sent_tx.send(r);
                    if failed {
                        return; // drops the sockets: the receiver sees the end
                    }
                }
            });
            s.spawn(move || {
                let setup = || -> Result<receiver::Receiver> {
                    sys::pin_current_thread(o.receiver_cpu).with_context(|| {
                        format!("pinning the receiver to CPU {}", o.receiver_cpu)
                    })?;
                    receiver::Receiver::new(servers, o.discard)
                };
                let rcv = match setup() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = rtid_tx.send(Err(e));
                        return;
                    }
                };
                let _ = rtid_tx.send(Ok(sys::gettid()));
                receiver::serve(rcv, &recv_rx, &got_tx);
            });
            let info = info_rx.recv().context("the sender thread died")??;
            let rtid = rtid_rx.recv().context("the receiver thread died")??;
            let tids = Tids {
                main: sys::gettid(),
                sender: info.tid,
                receiver: rtid,
            };
            let ch = Channels {
                send_tx: &send_tx,
                sent_rx: &sent_rx,
                recv_tx: &recv_tx,
                got_rx: &got_rx,
            };
            // Verifying warm-up: every byte compared, for each size and method.
            for cfg in self.configs {
                for &m in self.methods {
                    let r = self.one(&ch, &tids, cfg, m, 0, self.o.verify_seconds, true)?;
                    verify_runs.push(r);
                }
            }
            for round in 0..self.o.runs {
                for (ci, cfg) in self.configs.iter().enumerate() {
                    let n = self.methods.len();
                    for j in 0..n {
                        let m = self.methods[(j + round + ci) % n];
                        let set = &self.sets[cfg.set];
                        progress.step(
                            &format!(
                                "round {}/{}  {} x {} conns{}  {:<16}",
                                round + 1,
                                self.o.runs,
                                set.label,
                                self.k,
                                if cfg.cold { " cold" } else { "" },
                                m.name()
                            ),
                            self.o.seconds,
                        );
                        let r = self.one(&ch, &tids, cfg, m, round + 1, self.o.seconds, false)?;
                        progress.done(&format!(
                            "{:.2} GB/s, sender {:.3} CPU s/GB",
                            r.gb_per_s,
                            r.sender_cpu_s / r.gb()
                        ));
                        runs.push(r);
                        procs::check_interrupted()?;
                    }
                }
            }
            Ok((info.pipe_bytes, info.iowq_max))
        })
    }

    /// One run of `method` on `cfg`, its CPU accounted.
    #[allow(clippy::too_many_arguments)]
    fn one(
        &self,
        ch: &Channels,
        tids: &Tids,
        cfg: &Config,
        method: Method,
        round: usize,
        seconds: f64,
        verify: bool,
    ) -> Result<RunRecord> {
        let set = &self.sets[cfg.set];
        let limit = Duration::from_secs_f64(seconds) + Duration::from_secs(60);
        let before = Snapshot::take(tids)?;
        ch.recv_tx
            .send(receiver::Cmd::Run {
                size: set.files.size,
                verify: verify.then(|| set.contents.clone()),
                limit,
            })
            .context("the receiver thread is gone")?;
        ch.send_tx
            .send(SendCmd::Run {
                method,
                set: cfg.set,
                cold: cfg.cold,
                seconds,
            })
            .context("the sender thread is gone")?;
        let sent = match ch.sent_rx.recv_timeout(limit) {
            Ok(r) => r?,
            Err(_) => bail!(
                "{}: the sender did not finish within {limit:?}",
                method.name()
            ),
        };
        let _ = ch
            .recv_tx
            .send(receiver::Cmd::Expect(sent.per_conn.clone()));
        let got = match ch.got_rx.recv_timeout(limit) {
            Ok(r) => r?,
            Err(_) => bail!(
                "{}: the receiver did not finish within {limit:?}",
                method.name()
            ),
        };
        let after = Snapshot::take(tids)?;
        let bytes: u64 = sent.per_conn.iter().sum();
        if got.per_conn != sent.per_conn || bytes != sent.files * set.files.size || bytes == 0 {
            bail!(
                "{}: byte counts disagree (sent {bytes} in {} files of {}, received {})",
                method.name(),
                sent.files,
                set.files.size,
                got.per_conn.iter().sum::<u64>()
            );
        }
        if verify && got.verified != bytes {
            bail!(
                "{}: verified {} of {bytes} bytes",
                method.name(),
                got.verified
            );
        }
        let start = sent.start.expect("a run records its start");
        let seconds = got.last_byte.saturating_duration_since(start).as_secs_f64();
        let d = |f: fn(&Snapshot) -> u64| after_minus(f(&after), f(&before)) as f64 / 1e9;
        let process = d(|s| s.process_ns);
        let receiver_cpu = d(|s| s.receiver_ns);
        let sender_thread = d(|s| s.sender_ns);
        let sender_cpu = (process - receiver_cpu - d(|s| s.main_ns)).max(sender_thread);
        let ticks = sys::clock_ticks();
        let busy: Vec<f64> = after
            .busy
            .iter()
            .zip(before.busy.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| after_minus(*a, *b) as f64 / ticks)
            .collect();
        Ok(RunRecord {
            round,
            size: set.files.size,
            conns: self.k,
            cache: if cfg.cold { "cold" } else { "warm" },
            method: method.name(),
            bytes,
            files: sent.files,
            seconds,
            gb_per_s: bytes as f64 / 1e9 / seconds,
            sender_cpu_s: sender_cpu,
            sender_thread_cpu_s: sender_thread,
            iowq_cpu_s: sender_cpu - sender_thread,
            receiver_cpu_s: receiver_cpu,
            other_cpu_s: (busy.iter().sum::<f64>() - process).max(0.0),
            cpu_busy_s: busy,
            cpu_window_s: after.at.duration_since(before.at).as_secs_f64(),
            iou_wrk_alive_after_run: sys::iou_workers(),
            counts: sent.counts,
            verified_bytes: got.verified,
        })
    }
}

struct Channels<'a> {
    send_tx: &'a mpsc::Sender<SendCmd>,
    sent_rx: &'a mpsc::Receiver<Result<sender::Outcome>>,
    recv_tx: &'a mpsc::Sender<receiver::Cmd>,
    got_rx: &'a mpsc::Receiver<Result<receiver::Outcome>>,
}

struct Tids {
    main: i32,
    sender: i32,
    receiver: i32,
}

/// CPU clocks at one instant.
struct Snapshot {
    at: Instant,
    process_ns: u64,
    main_ns: u64,
    sender_ns: u64,
    receiver_ns: u64,
    busy: Vec<u64>,
}

impl Snapshot {
    fn take(t: &Tids) -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            busy: sys::cpu_busy_ticks(),
            main_ns: sys::thread_cpu_ns(t.main)?,
            sender_ns: sys::thread_cpu_ns(t.sender)?,
            receiver_ns: sys::thread_cpu_ns(t.receiver)?,
            process_ns: sys::process_cpu_ns(),
        })
    }
}

fn after_minus(a: u64, b: u64) -> u64 {
    a.saturating_sub(b)
}

/// K loopback connections: (client ends for the sender, server ends for the receiver),
/// index by index the two ends of one connection.
fn connect(k: usize) -> Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    for _ in 0..k {
        let c = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        let (s, peer) = listener.accept().context("accepting")?;
        if peer != c.local_addr()? {
            bail!("accepted {peer}, expected {}", c.local_addr()?);
        }
        // As relay's connections (one small head then the body; harmless for bulk).
        c.set_nodelay(true)?;
        clients.push(c);
        servers.push(s);
    }
    Ok((clients, servers))
}

fn rows(
    runs: &[RunRecord],
    sets: &[Set],
    o: &Options,
    configs: &[Config],
    methods: &[Method],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for cfg in configs {
        for &k in &o.connections {
            let set = &sets[cfg.set];
            let cache = if cfg.cold { "cold" } else { "warm" };
            for &m in methods {
                let rs: Vec<&RunRecord> = runs
                    .iter()
                    .filter(|r| {
                        r.size == set.files.size
                            && r.conns == k
                            && r.cache == cache
                            && r.method == m.name()
                    })
                    .collect();
                let stat = |f: &dyn Fn(&RunRecord) -> f64| {
                    Stat::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or_default()
                };
                rows.push(Row {
                    size: set.files.size,
                    size_label: set.label.clone(),
                    conns: k,
                    cache,
                    method: m.name(),
                    runs: rs.len(),
                    gb_per_s: stat(&|r| r.gb_per_s),
                    sender_cpu_s_per_gb: stat(&|r| r.sender_cpu_s / r.gb()),
                    sender_thread_cpu_s_per_gb: stat(&|r| r.sender_thread_cpu_s / r.gb()),
                    iowq_cpu_s_per_gb: stat(&|r| r.iowq_cpu_s / r.gb()),
                    sender_cpu_pct: stat(&|r| 100.0 * r.sender_cpu_s / r.cpu_window_s),
                    sender_cpu_busy_pct: stat(&|r| {
                        100.0 * r.cpu_busy_s.get(o.sender_cpu).copied().unwrap_or(0.0)
                            / r.cpu_window_s
                    }),
                    receiver_cpu_pct: stat(&|r| 100.0 * r.receiver_cpu_s / r.cpu_window_s),
                    other_cpu_pct: stat(&|r| 100.0 * r.other_cpu_s / r.cpu_window_s),
                    iou_wrk_alive_after_run: stat(&|r| r.iou_wrk_alive_after_run as f64),
                });
            }
        }
    }
    rows
}

/// The ratios the issue asks about, where both methods were measured.
const RATIOS: [(&str, &str); 4] = [
    ("splice", "read_fixed"),
    ("splice", "read_fixed+xxh3"),
    ("read_fixed+xxh3", "read_fixed"),
    ("send_zc_fixed", "read_fixed"),
];

fn ratios(rows: &[Row], runs: &[RunRecord]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.method == rows[0].method) {
        for (num, den) in RATIOS {
            let find = |m: &str| {
                rows.iter().find(|x| {
                    x.size == r.size && x.conns == r.conns && x.cache == r.cache && x.method == m
                })
            };
            if let (Some(a), Some(b)) = (find(num), find(den)) {
                let run = |m: &str, round: usize| {
                    runs.iter().find(|x| {
                        x.size == r.size
                            && x.conns == r.conns
                            && x.cache == r.cache
                            && x.method == m
                            && x.round == round
                    })
                };
                let pairs: Vec<(&RunRecord, &RunRecord)> = runs
                    .iter()
                    .filter(|x| {
                        x.size == r.size
                            && x.conns == r.conns
                            && x.cache == r.cache
                            && x.method == num
                    })
                    .filter_map(|x| Some((x, run(den, x.round)?)))
                    .collect();
                let paired = |f: &dyn Fn(&RunRecord) -> f64| {
                    let v: Vec<f64> = pairs.iter().map(|(x, y)| f(x) / f(y)).collect();
                    Stat::of(&v).unwrap_or_default()
                };
                out.push(Ratio {
                    paired_gb_per_s: paired(&|x| x.gb_per_s),
                    paired_sender_cpu_s_per_gb: paired(&|x| x.sender_cpu_s / x.gb()),
                    size_label: r.size_label.clone(),
                    conns: r.conns,
                    cache: r.cache,
                    num,
                    den,
                    gb_per_s: a.gb_per_s.median / b.gb_per_s.median,
                    sender_cpu_s_per_gb: a.sender_cpu_s_per_gb.median
                        / b.sender_cpu_s_per_gb.median,
                });
            }
        }
    }
    out
}

fn cell(s: &Stat, prec: usize) -> String {
    format!("{:.p$} ({:.p$}-{:.p$})", s.median, s.min, s.max, p = prec)
}

fn print_table(host: &Host, st: &Settings, rows: &[Row], ratios: &[Ratio]) {
    println!();
    println!(
        "machine: {}, {} cores, {:.0} GiB, {}, Linux {}; relay tree {}",
        host.cpu_model, host.cores, host.memory_gib, host.os, host.kernel, host.tree_git
    );
    println!(
        "sender: 1 thread + io-wq workers pinned to CPU {} (ring: {}); receiver: 1 thread on CPU \
         {}, {}; pipe {} KiB; load average {} at start, {} at end",
        st.sender_cpu,
        st.ring,
        st.receiver_cpu,
        st.receiver,
        st.pipe_bytes >> 10,
        host.loadavg_start,
        host.loadavg_end
    );
    println!(
        "{} runs of {} s per row, methods interleaved; cells are median (min-max); GB/s = 10^9 \
         bytes delivered per second; sender CPU = sender thread + io-wq workers; % are of one \
         CPU;\nratio rows (a/b): the two methods' runs of the same round divided, median (min-max)",
        st.runs, st.seconds_per_run
    );
    println!();
    let cold = st.cold;
    println!(
        "{:<7} {:>5} {}{:<26} {:>19} {:>22} {:>10} {:>7} {:>7} {:>7} {:>7}",
        "size",
        "conns",
        if cold { "cache " } else { "" },
        "method",
        "GB/s",
        "sender CPU s/GB",
        "io-wq s/GB",
        "sender",
        format!("CPU{}", st.sender_cpu),
        "recv",
        "other"
    );
    let mut last = None;
    for r in rows {
        let key = (r.size, r.conns, r.cache);
        if last.is_some_and(|l| l != key) {
            print_ratios(ratios, last.expect("checked"), rows, cold);
            println!();
        }
        last = Some(key);
        println!(
            "{:<7} {:>5} {}{:<26} {:>19} {:>22} {:>10.3} {:>6.0}% {:>6.0}% {:>6.0}% {:>6.0}%",
            r.size_label,
            r.conns,
            if cold {
                format!("{:<6}", r.cache)
            } else {
                String::new()
            },
            r.method,
            cell(&r.gb_per_s, 2),
            cell(&r.sender_cpu_s_per_gb, 3),
            r.iowq_cpu_s_per_gb.median,
            r.sender_cpu_pct.median,
            r.sender_cpu_busy_pct.median,
            r.receiver_cpu_pct.median,
            r.other_cpu_pct.median
        );
    }
    if let Some(l) = last {
        print_ratios(ratios, l, rows, cold);
    }
    println!();
    println!(
        "columns: sender = sender thread + io-wq CPU; CPU{} = everything that ran on the sender's \
         CPU (incl. softirq);\nrecv = receiver thread; other = busy CPU not spent by this process (noise).",
        st.sender_cpu
    );
    println!();
    for line in wrap(CHECKSUM_NOTE, 100) {
        println!("{line}");
    }
    println!(
        "XXH3-64 alone runs at {:.1} GB/s on CPU {}: {:.3} CPU s per GB verified.",
        st.xxh3_gb_per_s_on_sender_cpu,
        st.sender_cpu,
        1.0 / st.xxh3_gb_per_s_on_sender_cpu
    );
    for r in ratios
        .iter()
        .filter(|r| r.num == "splice" && r.den == "read_fixed+xxh3")
    {
        let plain = ratios.iter().find(|x| {
            x.size_label == r.size_label
                && x.conns == r.conns
                && x.cache == r.cache
                && x.num == "splice"
                && x.den == "read_fixed"
        });
        println!(
            "{} x {} conns{}: splice moves {:.2}x the GB/s of read_fixed+xxh3 for {:.2}x its \
             sender CPU per GB{}",
            r.size_label,
            r.conns,
            if r.cache == "cold" { " (cold)" } else { "" },
            r.paired_gb_per_s.median,
            r.paired_sender_cpu_s_per_gb.median,
            plain.map_or(String::new(), |p| format!(
                " (vs read_fixed without checksum: {:.2}x, {:.2}x)",
                p.paired_gb_per_s.median, p.paired_sender_cpu_s_per_gb.median
            ))
        );
    }
}

fn print_ratios(ratios: &[Ratio], key: (u64, usize, &str), rows: &[Row], cold: bool) {
    let label = rows
        .iter()
        .find(|r| (r.size, r.conns, r.cache) == key)
        .map_or("", |r| r.size_label.as_str());
    for q in ratios
        .iter()
        .filter(|q| q.size_label == label && q.conns == key.1 && q.cache == key.2)
    {
        println!(
            "{:<7} {:>5} {}{:<26} {:>19} {:>22}",
            "",
            "",
            if cold { "      " } else { "" },
            format!("{}/{}", q.num, q.den),
            ratio_cell(&q.paired_gb_per_s),
            ratio_cell(&q.paired_sender_cpu_s_per_gb)
        );
    }
}

fn ratio_cell(s: &Stat) -> String {
    format!("{:.2}x ({:.2}-{:.2})", s.median, s.min, s.max)
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let cur = lines.last_mut().expect("never empty");
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method delivers exactly the files' bytes, in order, when transfers come back
    /// short: tiny send buffers, a 16 KiB pipe (several splice rounds per file) and a file
    /// size that is not a multiple of the page size. Needs io_uring; SKIPPED without it.
    #[test]
    fn every_method_delivers_exact_bytes_through_partial_transfers() {
        if io_uring::IoUring::new(8).is_err() {
            eprintln!("SKIPPED: disk-send partial transfers: io_uring is not available");
            return;
        }
        let dir = TempDir::create(&std::env::temp_dir()).unwrap();
        let size = 200 * 1024 + 123;
        let (mut files, mut contents, mut sums) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..3u64 {
            let bytes = pseudo_random(size as usize, i + 7);
            let path = dir.0.join(format!("test-{i}.chunk"));
            std::fs::write(&path, &bytes).unwrap();
            sums.push(relay_cache::disk::checksum(&bytes));
            files.push(File::open(&path).unwrap());
            contents.push(bytes);
        }
        let set = sender::Files { size, files, sums };
        let contents = Arc::new(contents);
        let (clients, servers) = connect(2).unwrap();
        use std::os::fd::AsRawFd;
        for c in &clients {
            sys::set_sockopt(c.as_raw_fd(), libc::SO_SNDBUF, 8192).unwrap();
        }
        let cpu = procs::allowed_cpus()[0];
        let mut snd = sender::Sender::new(clients, size as usize, 16 << 10, cpu).unwrap();
        assert!(
            snd.pipe_size < size as usize,
            "the pipe must need several rounds"
        );
        let rcv = receiver::Receiver::new(servers, false).unwrap();
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (res_tx, res_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || receiver::serve(rcv, &cmd_rx, &res_tx));
        for method in [
            Method::ReadFixed,
            Method::ReadFixedXxh3,
            Method::SendZc,
            Method::Splice,
        ] {
            cmd_tx
                .send(receiver::Cmd::Run {
                    size,
                    verify: Some(contents.clone()),
                    limit: Duration::from_secs(30),
                })
                .unwrap();
            let spec = sender::Spec {
                method,
                files: &set,
                duration: Duration::from_millis(100),
                cold: false,
                max_bytes: 1 << 30,
            };
            let sent = snd.run(&spec).unwrap();
            cmd_tx
                .send(receiver::Cmd::Expect(sent.per_conn.clone()))
                .unwrap();
            let got = res_rx.recv().unwrap().unwrap();
            let bytes: u64 = sent.per_conn.iter().sum();
            eprintln!(
                "{}: {} files, short reads {}, short sends {}, short splices {}, cancelled links \
                 {}, checksums {}, zc notifications {}",
                method.name(),
                sent.files,
                sent.counts.short_reads,
                sent.counts.short_sends,
                sent.counts.short_splices,
                sent.counts.cancelled_links,
                sent.counts.checksums,
                sent.counts.zc_notifs
            );
            assert!(
                sent.files >= 2,
                "{}: every connection sends a file",
                method.name()
            );
            assert_eq!(bytes, sent.files * size);
            assert_eq!(got.per_conn, sent.per_conn);
            assert_eq!(got.verified, bytes);
            if method == Method::ReadFixedXxh3 {
                assert_eq!(sent.counts.checksums, sent.files);
            }
        }
        drop(cmd_tx);
        thread.join().unwrap();
    }
}

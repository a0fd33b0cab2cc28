//! `relay-bench miss` (`cargo xtask bench miss`, issue 15): relay's miss path against nginx
//! `proxy_cache` (`proxy_cache_lock on`) and Varnish, all three in front of the same local
//! origin ([`origin`]) that waits `--origin-delay-ms` before every response head.
//!
//! 1. **Cold misses.** One GET of a 4 KiB, a 1 MiB and a 64 MiB object no cache has seen
//!    (a fresh name per server, size and run), on a fresh connection: time to first and to
//!    last byte, MB/s, and what the origin served for it.
//! 2. **A crowd.** `--crowd` (500) connections opened first; then the requests for one
//!    cold object (4 KiB, 1 MiB) are written on all of them back to back and one epoll loop
//!    takes the instants of each response's first and last bytes: origin requests and origin bytes per object size for the object, each
//!    client's time to first and last byte (from its own request), median and p99.
//! 3. **Zipf.** `--zipf-objects` objects of mixed sizes (seeded) whose total is several
//!    times relay's memory tier, `--zipf-requests` requests drawn by Zipf (s = 1, seeded)
//!    from `--zipf-connections` keep-alive connections, each server started empty: byte hit
//!    ratio (1 - origin body bytes / body bytes served), origin requests and bytes, req/s.
//!
//! Every body is checked byte for byte against the origin's stream ([`client`]): a wrong
//! status, length or byte stops the benchmark with an error. The harness (client and
//! origin) is pinned to one CPU, the servers (one worker, one thread pool) to the others.
//! Medians of `--runs` (min-max in the table); every run and parameter in `miss.json`, the
//! plot in `miss.svg` under `--out`.

mod client;
mod origin;
mod plot;

use crate::machine::{self, Machine};
use crate::procs;
use crate::report::{ms, rps, size_label, utc_now};
use crate::serve::{RunDir, list, split_cpus};
use crate::servers::{Nginx, Relay, Varnish, http_common, main_context};
use crate::stats::Stat;
use anyhow::{Context, Result, bail, ensure};
use client::{Conn, Want};
use origin::Origin;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Options {
    /// The relay binary to measure (a release build).
    #[arg(long)]
    pub relay: PathBuf,
    /// Directory for miss.json and miss.svg.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Runs of each cold miss and crowd (default 5; 1 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Runs of the Zipf workload, each server started empty (default 5; 1 with --quick).
    #[arg(long)]
    pub zipf_runs: Option<usize>,
    /// What the origin waits before each response head, ms.
    #[arg(long, default_value_t = 20)]
    pub origin_delay_ms: u64,
    /// Clients of the crowd.
    #[arg(long, default_value_t = 500)]
    pub crowd: usize,
    /// Objects of the Zipf catalogue.
    #[arg(long, default_value_t = 2000)]
    pub zipf_objects: usize,
    /// Requests of the Zipf workload (default 20000; 4000 with --quick).
    #[arg(long)]
    pub zipf_requests: Option<usize>,
    /// Keep-alive connections of the Zipf workload.
    #[arg(long, default_value_t = 32)]
    pub zipf_connections: usize,
    /// relay's memory tier, MiB (nginx's cache and Varnish's storage get this plus the disk
    /// budget, having one tier each).
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    /// relay's disk tier, MiB.
    #[arg(long, default_value_t = 1024)]
    pub disk_mib: u64,
    /// relay's `cache.disk_admission` (default: relay's own default).
    #[arg(long)]
    pub relay_disk_admission: Option<String>,
    /// relay's `origin.read_ahead_bytes`, as the config writes it ("32 MiB"; default:
    /// relay's own default).
    #[arg(long)]
    pub relay_read_ahead: Option<String>,
    /// Smoke test: 1 run of each, 4000 Zipf requests; results in miss-quick.*.
    #[arg(long)]
    pub quick: bool,
    /// CPUs for the harness (client and origin), comma-separated (default: the first CPU).
    #[arg(long, value_delimiter = ',')]
    pub client_cpus: Vec<usize>,
    /// CPUs for the servers (default: the others); one worker (thread pool) each.
    #[arg(long, value_delimiter = ',')]
    pub server_cpus: Vec<usize>,
    /// Sections to run, comma-separated: cold, crowd, zipf (default: all three). A table
    /// of fewer sections is for finding one row's cause, not for the record.
    #[arg(long, value_delimiter = ',', value_parser = ["cold", "crowd", "zipf"])]
    pub sections: Vec<String>,
    /// How the benchmark was invoked, for the record.
    #[arg(long)]
    pub command: Option<String>,
}

impl Options {
    fn runs_section(&self, name: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|s| s == name)
    }
}

/// The cold objects' sizes, and the crowd's.
const COLD_SIZES: [u64; 3] = [4 << 10, 1 << 20, 64 << 20];
const CROWD_SIZES: [u64; 2] = [4 << 10, 1 << 20];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Relay,
    Nginx,
    Varnish,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Relay, Kind::Nginx, Kind::Varnish];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Relay => "relay",
            Kind::Nginx => "nginx proxy_cache",
            Kind::Varnish => "Varnish",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Everything the run was asked and chose.
#[derive(Serialize)]
struct Settings {
    runs: usize,
    zipf_runs: usize,
    origin_delay_ms: u64,
    crowd: usize,
    cold_sizes: Vec<u64>,
    crowd_sizes: Vec<u64>,
    zipf_objects: usize,
    zipf_requests: usize,
    zipf_connections: usize,
    zipf_catalogue_bytes: u64,
    memory_mib: u64,
    disk_mib: u64,
    client_cpus: Vec<usize>,
    server_cpus: Vec<usize>,
    workers: usize,
    pinning: String,
    budgets: String,
    relay_config: String,
    nginx_cache: String,
    varnish_storage: String,
    quick: bool,
}

#[derive(Serialize)]
struct ColdRun {
    server: Kind,
    size: u64,
    run: usize,
    first_byte_ms: f64,
    last_byte_ms: f64,
    mb_per_s: f64,
    origin_requests: u64,
    origin_bytes: u64,
}

#[derive(Serialize)]
struct CrowdRun {
    server: Kind,
    size: u64,
    run: usize,
    clients: usize,
    /// From the first request written to the last.
    send_spread_ms: f64,
    origin_requests: u64,
    origin_bytes: u64,
    origin_bytes_per_object: f64,
    first_byte_p50_ms: f64,
    first_byte_p99_ms: f64,
    first_byte_max_ms: f64,
    last_byte_p50_ms: f64,
    last_byte_p99_ms: f64,
    last_byte_max_ms: f64,
}

#[derive(Serialize)]
struct ZipfRun {
    server: Kind,
    run: usize,
    requests: usize,
    body_bytes: u64,
    origin_requests: u64,
    origin_bytes: u64,
    byte_hit_ratio: f64,
    seconds: f64,
    req_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server's CPU seconds over the run (utime + stime, all its threads and
    /// processes).
    server_cpu_s: f64,
    /// How busy the harness's CPUs (client and origin) were over the run, 0 to 1: near 1,
    /// the harness and not the server bounds req/s.
    harness_busy: f64,
    /// relay's counters of its tiers and fetches at the run's end (its `/metrics` lines
    /// on the disk tier, chunk memory and origin requests), to read a row's cause from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    relay_counters: Vec<String>,
}

/// Which way a metric is better.
#[derive(Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Better {
    Lower,
    Higher,
    /// Shown, not judged.
    Neither,
}

/// One row of the table: a metric's median per server (relay, nginx, Varnish).
#[derive(Serialize)]
struct Line {
    section: &'static str,
    object: String,
    metric: &'static str,
    better: Better,
    stats: [Option<Stat>; 3],
    /// relay's median over nginx's and over Varnish's.
    ratios: [Option<f64>; 2],
    /// "yes" (ahead of both), "tie", "no", or "-" (not judged).
    relay_ahead: String,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    command: Option<String>,
    started_utc: String,
    seconds: f64,
    machine: Machine,
    varnish: String,
    loadavg_end: String,
    settings: Settings,
    table: Vec<Line>,
    cold: Vec<ColdRun>,
    crowd: Vec<CrowdRun>,
    zipf: Vec<ZipfRun>,
}

pub fn run(o: Options) -> Result<()> {
    let mut dir = RunDir::new()?;
    let result = measure(&o, &dir.path);
    if result.is_err() && !procs::interrupted() {
        dir.keep = true;
        eprintln!(
            "relay-bench: configs and logs kept in {}",
            dir.path.display()
        );
    }
    result
}

/// What the servers are started with.
struct Setup {
    relay_bin: PathBuf,
    server_cpus: String,
    workers: usize,
    memory_mib: u64,
    disk_mib: u64,
    admission: Option<String>,
    read_ahead: Option<String>,
    threads: usize,
}

fn measure(o: &Options, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let started_utc = utc_now();
    for tool in ["nginx", "varnishd", "taskset"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        ensure!(
            found,
            "{tool} is not installed: run `cargo xtask setup` (as root)"
        );
    }
    let relay_bin = std::fs::canonicalize(&o.relay)
        .with_context(|| format!("relay binary {}", o.relay.display()))?;
    let (client_cpus, server_cpus) = split_cpus(&o.client_cpus, &o.server_cpus)?;
    let runs = o.runs.unwrap_or(if o.quick { 1 } else { 5 });
    let zipf_runs = o.zipf_runs.unwrap_or(if o.quick { 1 } else { 5 });
    let zipf_requests = o
        .zipf_requests
        .unwrap_or(if o.quick { 4000 } else { 20_000 });
    ensure!(
        (1..=50).contains(&runs) && (1..=20).contains(&zipf_runs),
        "--runs must be 1..=50, --zipf-runs 1..=20"
    );
    ensure!(
        (1..=5000).contains(&o.crowd)
            && (1..=1024).contains(&o.zipf_connections)
            && (1..=1_000_000).contains(&o.zipf_objects)
            && (1..=10_000_000).contains(&zipf_requests)
            && o.origin_delay_ms <= 10_000,
        "--crowd 1..=5000, --zipf-connections 1..=1024, --zipf-objects 1..=1000000, \
         --zipf-requests 1..=10000000, --origin-delay-ms at most 10000"
    );
    ensure!(
        o.memory_mib >= 8 && o.disk_mib >= 16,
        "--memory-mib at least 8, --disk-mib at least 16"
    );
    // The harness (client and origin) on its CPUs from here on, its threads too.
    procs::pin_self(&list(&client_cpus))?;
    let machine = Machine::probe(&relay_bin);
    let varnish_version = varnish_version();
    let setup = Setup {
        relay_bin: relay_bin.clone(),
        server_cpus: list(&server_cpus),
        workers: server_cpus.len(),
        memory_mib: o.memory_mib,
        disk_mib: o.disk_mib,
        admission: o.relay_disk_admission.clone(),
        read_ahead: o.relay_read_ahead.clone(),
        threads: (o.crowd + 100).max(512),
    };
    let origin = Origin::start(Duration::from_millis(o.origin_delay_ms))?;
    let sizes = catalogue(o.zipf_objects, 0);
    let catalogue_bytes: u64 = sizes.iter().sum();
    let settings = Settings {
        runs,
        zipf_runs,
        origin_delay_ms: o.origin_delay_ms,
        crowd: o.crowd,
        cold_sizes: COLD_SIZES.to_vec(),
        crowd_sizes: CROWD_SIZES.to_vec(),
        zipf_objects: o.zipf_objects,
        zipf_requests,
        zipf_connections: o.zipf_connections,
        zipf_catalogue_bytes: catalogue_bytes,
        memory_mib: o.memory_mib,
        disk_mib: o.disk_mib,
        pinning: format!(
            "client and origin (this harness) pinned to CPU {}; each server pinned to CPU {} \
             with {} worker (nginx worker_processes, Varnish thread_pools, relay workers)",
            list(&client_cpus),
            list(&server_cpus),
            server_cpus.len()
        ),
        budgets: budgets(&setup),
        relay_config: relay_config(&setup, &dir.join("(server dir)"), origin.addr),
        nginx_cache: format!(
            "proxy_cache_path max_size={}m (disk, under the page cache), proxy_cache_lock on",
            o.memory_mib + o.disk_mib
        ),
        varnish_storage: varnish_storage(&setup),
        client_cpus,
        server_cpus,
        workers: setup.workers,
        quick: o.quick,
    };
    eprintln!("relay-bench: miss, {started_utc}");
    eprintln!("relay-bench: machine: {}", machine.line());
    eprintln!("relay-bench: {varnish_version}");
    eprintln!("relay-bench: pinning: {}", settings.pinning);
    eprintln!("relay-bench: budgets: {}", settings.budgets);
    eprintln!(
        "relay-bench: origin delay {} ms before each response head; {runs} run(s) of each cold \
         miss and crowd, {zipf_runs} Zipf run(s) of {zipf_requests} requests over {} objects \
         ({} MiB)",
        o.origin_delay_ms,
        o.zipf_objects,
        catalogue_bytes >> 20
    );
    if catalogue_bytes <= o.memory_mib << 20 {
        eprintln!("relay-bench: note: the Zipf catalogue fits in relay's memory tier");
    }
    let nonce = std::process::id();

    // Cold misses and crowds: the three servers side by side, fresh names.
    let (cold, crowd) = {
        let mut servers = Kind::ALL
            .iter()
            .map(|&k| Server::start(k, &setup, &dir.join(format!("a-{k:?}")), origin.addr))
            .collect::<Result<Vec<_>>>()?;
        let mut cold = Vec::new();
        let mut crowd = Vec::new();
        for run in 0..runs {
            for size in COLD_SIZES.into_iter().filter(|_| o.runs_section("cold")) {
                for s in rotated(&mut servers, run) {
                    procs::check_interrupted()?;
                    let name = format!("cold-{nonce}-{:?}-{size}-{run}", s.kind);
                    let r = cold_miss(s, &origin, &name, size)
                        .with_context(|| format!("{} cold miss of {name}", s.kind.label()))?;
                    eprintln!(
                        "cold  run {}/{runs} {:>7} {:<17} first byte {} ms, last {} ms, \
                         {} origin request(s)",
                        run + 1,
                        size_label(size),
                        s.kind.label(),
                        ms(r.first_byte_ms),
                        ms(r.last_byte_ms),
                        r.origin_requests
                    );
                    if let Proc::Relay(relay) = &s.proc {
                        for line in relay_counters(&relay.log) {
                            eprintln!("cold  run {}/{runs} relay (so far): {line}", run + 1);
                        }
                    }
                    cold.push(ColdRun { run, ..r });
                    s.check_alive()?;
                }
            }
            for size in CROWD_SIZES.into_iter().filter(|_| o.runs_section("crowd")) {
                for s in rotated(&mut servers, run) {
                    procs::check_interrupted()?;
                    let name = format!("crowd-{nonce}-{:?}-{size}-{run}", s.kind);
                    let r = crowd_run(s, &origin, &name, size, o.crowd)
                        .with_context(|| format!("{} crowd on {name}", s.kind.label()))?;
                    eprintln!(
                        "crowd run {}/{runs} {:>7} {:<17} {} origin request(s), first byte \
                         p50 {} ms p99 {} ms, last byte p99 {} ms",
                        run + 1,
                        size_label(size),
                        s.kind.label(),
                        r.origin_requests,
                        ms(r.first_byte_p50_ms),
                        ms(r.first_byte_p99_ms),
                        ms(r.last_byte_p99_ms)
                    );
                    crowd.push(CrowdRun { run, ..r });
                    s.check_alive()?;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        (cold, crowd)
    };

    // Zipf: each server alone and empty for each run. The runs' directories are removed
    // after the last: ext4 skips the inodes freed in the last minutes when it allocates
    // one, reading each, so a run right after another's thousands of cache files were
    // removed paid for that in every file it created (relay's disk tier and nginx's
    // proxy_cache; Varnish creates none).
    let mut zipf = Vec::new();
    let mut zipf_dirs = Vec::new();
    for run in (0..zipf_runs).filter(|_| o.runs_section("zipf")) {
        let mut order = Kind::ALL;
        order.rotate_left(run % Kind::ALL.len());
        for kind in order {
            procs::check_interrupted()?;
            let sub = dir.join(format!("z{run}-{kind:?}"));
            let mut s = Server::start(kind, &setup, &sub, origin.addr)?;
            let r = zipf_run(&s, &origin, &settings.client_cpus, o, zipf_requests, run)
                .with_context(|| format!("{} Zipf run {}", kind.label(), run + 1))?;
            eprintln!(
                "zipf  run {}/{zipf_runs} {:<17} byte hit ratio {:.3}, origin {} MiB in {} \
                 requests, {} req/s",
                run + 1,
                kind.label(),
                r.byte_hit_ratio,
                r.origin_bytes >> 20,
                r.origin_requests,
                rps(r.req_per_s)
            );
            for line in &r.relay_counters {
                eprintln!("zipf  run {}/{zipf_runs} relay: {line}", run + 1);
            }
            zipf.push(r);
            s.check_alive()?;
            drop(s);
            zipf_dirs.push(sub);
        }
    }
    for sub in zipf_dirs {
        let _ = std::fs::remove_dir_all(&sub);
    }
    drop(origin);

    let table = lines(&cold, &crowd, &zipf);
    let report = Report {
        benchmark: "miss",
        command: o.command.clone(),
        started_utc,
        seconds: started.elapsed().as_secs_f64(),
        machine,
        varnish: varnish_version,
        loadavg_end: machine::loadavg(),
        settings,
        table,
        cold,
        crowd,
        zipf,
    };
    print_table(&report);
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let stem = if o.quick { "miss-quick" } else { "miss" };
    let json = o.out.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = o.out.join(format!("{stem}.svg"));
    plot::write(&report, &svg)?;
    println!("json: {}", json.display());
    println!("plot: {}", svg.display());
    Ok(())
}

/// The servers in this run's order (rotated, so none is always first).
fn rotated(servers: &mut [Server], run: usize) -> impl Iterator<Item = &mut Server> {
    let n = servers.len();
    servers.rotate_left(run % n);
    let out: Vec<&mut Server> = servers.iter_mut().collect();
    out.into_iter()
}

fn varnish_version() -> String {
    std::process::Command::new("varnishd")
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| {
            let text = [o.stderr, o.stdout].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "varnishd (version unknown)".into())
}

fn budgets(s: &Setup) -> String {
    format!(
        "relay: {} MiB memory tier + {} MiB disk tier (temp dir, disk_admission {}, \
         read_ahead_bytes {}); \
         nginx: proxy_cache of {} MiB on disk (its memory is the page cache); \
         Varnish: {} (no disk tier in Debian's Varnish, so memory and disk budgets together)",
        s.memory_mib,
        s.disk_mib,
        s.admission.as_deref().unwrap_or("relay's default"),
        s.read_ahead.as_deref().unwrap_or("relay's default"),
        s.memory_mib + s.disk_mib,
        varnish_storage(s)
    )
}

fn varnish_storage(s: &Setup) -> String {
    format!("malloc,{}m", s.memory_mib + s.disk_mib)
}

fn relay_config(s: &Setup, dir: &Path, origin: SocketAddr) -> String {
    let admission = s
        .admission
        .as_ref()
        .map(|a| format!("disk_admission = \"{a}\"\n"))
        .unwrap_or_default();
    let read_ahead = s
        .read_ahead
        .as_ref()
        .map(|r| format!("read_ahead_bytes = \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        "# written by relay-bench (cargo xtask bench miss)\n[server]\nlisten = \"127.0.0.1:0\"\n\
         workers = {}\n# The crowd's clients all come from 127.0.0.1.\nmax_connections_per_client = 0\n\n\
         [cache]\nmemory_bytes = \"{} MiB\"\ndisk_dir = \"{}\"\ndisk_bytes = \"{} MiB\"\n{admission}\n\
         [origin]\n{read_ahead}\n[[origin.http]]\nurl = \"http://{origin}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        s.workers,
        s.memory_mib,
        dir.join("relay-disk").display(),
        s.disk_mib
    )
}

/// The caching proxy nginx: one server in front of the origin, `proxy_cache_lock on`
/// (its other lock settings nginx's defaults), keep-alive to the origin.
fn nginx_config(s: &Setup, dir: &Path, listen: SocketAddr, origin: SocketAddr) -> String {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    format!(
        "# written by relay-bench (cargo xtask bench miss)
{}
http {{
{}
    proxy_cache_path {}/cache levels=1:2 keys_zone=miss:64m max_size={}m inactive=1d use_temp_path=off;

    upstream origin {{
        server {origin};
        keepalive 64;
    }}

    server {{
        listen {listen} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache miss;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
",
        main_context(dir, s.workers, root),
        http_common(dir),
        dir.display(),
        s.memory_mib + s.disk_mib
    )
}

enum Proc {
    Relay(Relay),
    Nginx(Nginx),
    Varnish(Varnish),
}

/// One server under test, running.
struct Server {
    kind: Kind,
    addr: SocketAddr,
    proc: Proc,
    /// Its log or config, for errors.
    about: String,
}

impl Server {
    fn start(kind: Kind, s: &Setup, dir: &Path, origin: SocketAddr) -> Result<Server> {
        std::fs::create_dir_all(dir)?;
        let server = match kind {
            Kind::Relay => {
                std::fs::create_dir_all(dir.join("relay-disk"))?;
                let text = relay_config(s, dir, origin);
                let r = Relay::start_config(&s.relay_bin, dir, &text, &s.server_cpus)?;
                Server {
                    kind,
                    addr: r.addr,
                    about: format!("log {}", r.log.display()),
                    proc: Proc::Relay(r),
                }
            }
            Kind::Nginx => {
                let listen: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
                let text = nginx_config(s, dir, listen, origin);
                let n = Nginx::start_config(dir, &text, &s.server_cpus, listen, listen)?;
                Server {
                    kind,
                    addr: n.proxy,
                    about: format!("error log {}", n.error_log.display()),
                    proc: Proc::Nginx(n),
                }
            }
            Kind::Varnish => {
                let v = Varnish::start_with(
                    dir,
                    origin,
                    &s.server_cpus,
                    s.workers,
                    &varnish_storage(s),
                    s.threads,
                )?;
                Server {
                    kind,
                    addr: v.addr,
                    about: format!("VCL {}", v.vcl.display()),
                    proc: Proc::Varnish(v),
                }
            }
        };
        Ok(server)
    }

    /// The server's process (nginx's and Varnish's master: their workers are below it).
    fn pid(&self) -> u32 {
        match &self.proc {
            Proc::Relay(r) => r.pid(),
            Proc::Nginx(n) => n.pid(),
            Proc::Varnish(v) => v.pid(),
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        let r = match &mut self.proc {
            Proc::Relay(r) => r.check_alive(),
            Proc::Nginx(n) => n.check_alive(),
            Proc::Varnish(v) => v.check_alive(),
        };
        r.with_context(|| self.about.clone())
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cold_miss(s: &Server, origin: &Origin, name: &str, size: u64) -> Result<ColdRun> {
    let mut c = Conn::open(s.addr, 256 << 10)?;
    let (sent, got) = c.get(&origin::path(name, size), Want::of(name, size))?;
    let served = origin.served(name);
    let last = millis(got.last_byte - sent);
    Ok(ColdRun {
        server: s.kind,
        size,
        run: 0,
        first_byte_ms: millis(got.first_byte - sent),
        last_byte_ms: last,
        mb_per_s: size as f64 / 1e6 / (last / 1e3),
        origin_requests: served.requests,
        origin_bytes: served.body_bytes,
    })
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn crowd_run(
    s: &Server,
    origin: &Origin,
    name: &str,
    size: u64,
    clients: usize,
) -> Result<CrowdRun> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let path = origin::path(name, size);
    let want = Want::of(name, size);
    // Every connection open first, then the requests written back to back, then one epoll
    // loop takes each response's first and last bytes as they come (so that 500 clients'
    // instants are not those of 500 threads waiting for one core); the bodies are checked
    // after. One read (up to 256 KiB) per ready connection per wait, round the ready ones
    // (level-triggered: one with more left is ready again at once): 500 clients each read
    // their own socket, where a loop draining each connection before the next would hold
    // the others' first bytes behind whatever a server had queued on the ones before.
    let mut socks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let s = std::net::TcpStream::connect_timeout(&s.addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        socks.push(s);
    }
    let epoll = crate::load::Epoll::new()?;
    for (i, s) in socks.iter().enumerate() {
        let fd = s.as_raw_fd();
        epoll.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, i as u64)?;
    }
    let mut sent = Vec::with_capacity(clients);
    for s in &mut socks {
        sent.push(client::send(s, &path)?);
        s.set_nonblocking(true)?;
    }
    let mut bytes: Vec<Vec<u8>> = vec![Vec::new(); clients];
    let mut first: Vec<Option<Instant>> = vec![None; clients];
    let mut last: Vec<Option<Instant>> = vec![None; clients];
    let mut left = clients;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut tmp = vec![0u8; 256 << 10];
    let deadline = Instant::now() + Duration::from_secs(60);
    while left > 0 {
        ensure!(
            Instant::now() < deadline,
            "{left} of {clients} responses not whole after 60 s"
        );
        let ready = epoll.wait(&mut events, 100);
        for ev in &events[..ready] {
            let i = ev.u64 as usize;
            if last[i].is_some() {
                continue;
            }
            // Bounded: each read takes bytes, and a response is at most its head and
            // `size` body bytes (more is an error).
            let n = match socks[i].read(&mut tmp) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => bail!("client {i}: reading: {e}"),
            };
            let now = Instant::now();
            first[i].get_or_insert(now);
            bytes[i].extend_from_slice(&tmp[..n]);
            ensure!(
                bytes[i].len() as u64 <= size + (64 << 10),
                "client {i}: a response longer than the object and a head"
            );
            if n == 0 || client::complete(&bytes[i])? {
                last[i] = Some(now);
                left -= 1;
                let fd = socks[i].as_raw_fd();
                epoll.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)?;
            }
        }
    }
    let mut ttfb = Vec::with_capacity(clients);
    let mut ttlb = Vec::with_capacity(clients);
    for i in 0..clients {
        client::check(&bytes[i], want).with_context(|| format!("client {i}"))?;
        let (f, l) = (first[i].context("no byte")?, last[i].context("no end")?);
        ttfb.push(millis(f - sent[i]));
        ttlb.push(millis(l - sent[i]));
    }
    let (first, last) = (ttfb, ttlb);
    let served = origin.served(name);
    let (first, last) = (sorted(first), sorted(last));
    Ok(CrowdRun {
        server: s.kind,
        size,
        run: 0,
        clients,
        send_spread_ms: millis(sent[clients - 1] - sent[0]),
        origin_requests: served.requests,
        origin_bytes: served.body_bytes,
        origin_bytes_per_object: served.body_bytes as f64 / size as f64,
        first_byte_p50_ms: quantile(&first, 0.5),
        first_byte_p99_ms: quantile(&first, 0.99),
        first_byte_max_ms: quantile(&first, 1.0),
        last_byte_p50_ms: quantile(&last, 0.5),
        last_byte_p99_ms: quantile(&last, 0.99),
        last_byte_max_ms: quantile(&last, 1.0),
    })
}

/// A splitmix64 step: the catalogue's sizes.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The Zipf catalogue's object sizes (seeded): half 16 KiB, 35% 64 KiB, 12% 256 KiB, 3%
/// 2 MiB, each less up to a few KiB so that few end on a chunk boundary; about 122 KiB
/// on average.
fn catalogue(objects: usize, seed: u64) -> Vec<u64> {
    let mut x = 0x5eed ^ seed;
    (0..objects)
        .map(|_| {
            let r = splitmix(&mut x);
            let class: u64 = match r % 100 {
                0..50 => 16 << 10,
                50..85 => 64 << 10,
                85..97 => 256 << 10,
                _ => 2 << 20,
            };
            class - (r >> 32) % 4096
        })
        .collect()
}

fn zipf_run(
    s: &Server,
    origin: &Origin,
    harness_cpus: &[usize],
    o: &Options,
    requests: usize,
    run: usize,
) -> Result<ZipfRun> {
    let sizes = Arc::new(catalogue(o.zipf_objects, 0));
    let mut z = relay_tests::Zipf::new(o.zipf_objects, 0x2545_f491_4f6c_dd1d + run as u64);
    let trace: Arc<Vec<u32>> = Arc::new((0..requests).map(|_| z.item() as u32).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let before = origin.total();
    let cpu_before = procs::sample_tree(s.pid());
    let harness_idle_before = procs::cpus_idle_seconds(harness_cpus);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let addr = s.addr;
    let workers = (0..o.zipf_connections.min(requests))
        .map(|_| {
            let (sizes, trace, next) = (sizes.clone(), trace.clone(), next.clone());
            std::thread::Builder::new().stack_size(512 << 10).spawn(
                move || -> Result<(u64, Vec<f64>)> {
                    let mut conn = Conn::open(addr, 256 << 10)?;
                    let (mut bytes, mut lat) = (0u64, Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&obj) = trace.get(i) else {
                            return Ok((bytes, lat));
                        };
                        ensure!(Instant::now() < deadline, "over 600 s");
                        let name = format!("z{run}-{obj}");
                        let size = sizes[obj as usize];
                        let (sent, got) = conn
                            .get(&origin::path(&name, size), Want::of(&name, size))
                            .with_context(|| format!("request {i}, {name} ({size} bytes)"))?;
                        bytes += size;
                        lat.push(millis(got.last_byte - sent));
                        if got.close {
                            conn = Conn::open(addr, 256 << 10)?;
                        }
                    }
                },
            )
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut bytes = 0;
    let mut lat = Vec::with_capacity(requests);
    for w in workers {
        let (b, l) = w
            .join()
            .map_err(|_| anyhow::anyhow!("a Zipf client panicked"))??;
        bytes += b;
        lat.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu_s = procs::cpu_seconds(&cpu_before, &procs::sample_tree(s.pid()));
    let harness_idle = procs::cpus_idle_seconds(harness_cpus) - harness_idle_before;
    let harness_cpu_s = seconds * harness_cpus.len() as f64;
    let harness_busy = (1.0 - harness_idle / harness_cpu_s.max(1e-9)).clamp(0.0, 1.0);
    let served = origin.total().since(before);
    let lat = sorted(lat);
    Ok(ZipfRun {
        server: s.kind,
        run,
        requests,
        body_bytes: bytes,
        origin_requests: served.requests,
        origin_bytes: served.body_bytes,
        byte_hit_ratio: 1.0 - served.body_bytes as f64 / bytes.max(1) as f64,
        seconds,
        req_per_s: requests as f64 / seconds,
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
        server_cpu_s,
        harness_busy,
        relay_counters: match &s.proc {
            Proc::Relay(r) => relay_counters(&r.log),
            _ => Vec::new(),
        },
    })
}

/// The `/metrics` lines of the relay whose log is `log` on its disk tier, chunk memory and
/// origin requests (none when its admin listener cannot be found or asked).
fn relay_counters(log: &Path) -> Vec<String> {
    use std::io::{Read, Write};
    let scrape = || -> Option<String> {
        let text = std::fs::read_to_string(log).ok()?;
        let (_, rest) = text.split_once("admin on http://")?;
        let addr: SocketAddr = rest.split_whitespace().next()?.parse().ok()?;
        let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        c.take(8 << 20).read_to_string(&mut out).ok()?;
        Some(out)
    };
    let wanted = [
        "relay_disk_",
        "relay_memory_room_waits_total",
        "relay_memory_chunk_refusals_total",
        "relay_memory_tier_left_out_total",
        "relay_upstream_requests_total",
    ];
    scrape()
        .unwrap_or_default()
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .map(str::to_owned)
        .collect()
}

/// The table's rows from the runs: medians per server, relay's ratios, the verdict.
fn lines(cold: &[ColdRun], crowd: &[CrowdRun], zipf: &[ZipfRun]) -> Vec<Line> {
    let mut out = Vec::new();
    type ColdPick = fn(&ColdRun) -> f64;
    let cold_metrics: [(&str, Better, ColdPick); 4] = [
        ("first byte, ms", Better::Lower, |r| r.first_byte_ms),
        ("last byte, ms", Better::Lower, |r| r.last_byte_ms),
        ("MB/s", Better::Higher, |r| r.mb_per_s),
        ("origin requests", Better::Neither, |r| {
            r.origin_requests as f64
        }),
    ];
    for size in COLD_SIZES {
        for (metric, better, pick) in cold_metrics {
            let stats = medians(cold, |r, k| r.server == k && r.size == size, pick);
            out.push(line("cold miss", size_label(size), metric, better, stats));
        }
    }
    type CrowdPick = fn(&CrowdRun) -> f64;
    let crowd_metrics: [(&str, Better, CrowdPick); 6] = [
        ("origin requests", Better::Lower, |r| {
            r.origin_requests as f64
        }),
        ("origin bytes / object", Better::Lower, |r| {
            r.origin_bytes_per_object
        }),
        ("first byte p50, ms", Better::Lower, |r| r.first_byte_p50_ms),
        ("first byte p99, ms", Better::Lower, |r| r.first_byte_p99_ms),
        ("last byte p50, ms", Better::Lower, |r| r.last_byte_p50_ms),
        ("last byte p99, ms", Better::Lower, |r| r.last_byte_p99_ms),
    ];
    for size in CROWD_SIZES {
        for (metric, better, pick) in crowd_metrics {
            let stats = medians(crowd, |r, k| r.server == k && r.size == size, pick);
            out.push(line("crowd", size_label(size), metric, better, stats));
        }
    }
    type ZipfPick = fn(&ZipfRun) -> f64;
    let zipf_metrics: [(&str, Better, ZipfPick); 7] = [
        ("byte hit ratio", Better::Higher, |r| r.byte_hit_ratio),
        ("origin MiB", Better::Lower, |r| {
            r.origin_bytes as f64 / f64::from(1 << 20)
        }),
        ("origin requests", Better::Neither, |r| {
            r.origin_requests as f64
        }),
        ("req/s", Better::Higher, |r| r.req_per_s),
        ("p99 last byte, ms", Better::Lower, |r| r.p99_ms),
        // What req/s costs the server: where the harness is busy throughout, req/s is
        // its bound, and this row is the servers' difference.
        ("server CPU ms / 1k req", Better::Lower, |r| {
            r.server_cpu_s * 1e6 / r.requests.max(1) as f64
        }),
        ("harness CPU busy, %", Better::Neither, |r| {
            r.harness_busy * 100.0
        }),
    ];
    for (metric, better, pick) in zipf_metrics {
        let stats = medians(zipf, |r, k| r.server == k, pick);
        out.push(line("zipf", "mixed".into(), metric, better, stats));
    }
    out
}

/// Per server, the median (and range) of `pick` over the runs `keep` takes for it.
fn medians<R>(
    runs: &[R],
    keep: impl Fn(&R, Kind) -> bool,
    pick: fn(&R) -> f64,
) -> [Option<Stat>; 3] {
    Kind::ALL.map(|k| {
        let v: Vec<f64> = runs.iter().filter(|r| keep(r, k)).map(pick).collect();
        Stat::of(&v)
    })
}

fn line(
    section: &'static str,
    object: String,
    metric: &'static str,
    better: Better,
    stats: [Option<Stat>; 3],
) -> Line {
    let relay = stats[Kind::Relay.index()].map(|s| s.median);
    let ratio = |k: Kind| {
        let other = stats[k.index()]?.median;
        let r = relay?;
        (other != 0.0).then(|| r / other)
    };
    let ratios = [ratio(Kind::Nginx), ratio(Kind::Varnish)];
    let verdict = |k: Kind| -> Option<std::cmp::Ordering> {
        let (r, other) = (relay?, stats[k.index()]?.median);
        // Medians within 2% of each other are level: a few runs on a VM say no more.
        let ord = match (r - other).abs() <= 0.02 * r.abs().max(other.abs()) {
            true => std::cmp::Ordering::Equal,
            false => r.total_cmp(&other),
        };
        Some(match better {
            Better::Lower => ord.reverse(),
            _ => ord,
        })
    };
    use std::cmp::Ordering::{Equal, Greater, Less};
    let relay_ahead = match (better, verdict(Kind::Nginx), verdict(Kind::Varnish)) {
        (Better::Neither, _, _) | (_, None, _) | (_, _, None) => "-",
        (_, Some(Less), _) | (_, _, Some(Less)) => "no",
        (_, Some(Greater), Some(Greater)) => "yes",
        (_, Some(Equal | Greater), Some(Equal | Greater)) => "tie",
    };
    Line {
        section,
        object,
        metric,
        better,
        stats,
        ratios,
        relay_ahead: relay_ahead.into(),
    }
}

fn value(metric: &str, v: f64) -> String {
    if metric.ends_with("ms") {
        ms(v)
    } else if metric == "req/s" {
        rps(v)
    } else if metric.contains("ratio") {
        format!("{v:.3}")
    } else if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(metric: &str, s: Option<Stat>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.min == s.max => value(metric, s.median),
        Some(s) => format!(
            "{} ({}-{})",
            value(metric, s.median),
            value(metric, s.min),
            value(metric, s.max)
        ),
    }
}

fn print_table(r: &Report) {
    let s = &r.settings;
    println!("\nrelay bench miss, {}", r.started_utc);
    println!("machine: {}; {}", r.machine.line(), r.varnish);
    println!("pinning: {}", s.pinning);
    println!("budgets: {}", s.budgets);
    println!(
        "origin: a local HTTP/1.1 server in this harness, {} ms before every response head; \
         cold and crowd: {} run(s), crowd of {} clients; Zipf: {} run(s) of {} requests over \
         {} objects ({} MiB) from {} connections, each server started empty",
        s.origin_delay_ms,
        s.runs,
        s.crowd,
        s.zipf_runs,
        s.zipf_requests,
        s.zipf_objects,
        s.zipf_catalogue_bytes >> 20,
        s.zipf_connections
    );
    println!(
        "\nmedian (min-max) per server; ratios are relay's median over the other's (below 1 is \
         better for ms, bytes and requests, above 1 for MB/s, req/s and hit ratio); \
         \"relay ahead\": better than both (\"tie\": level with one or both, within 2%)\n"
    );
    println!(
        "| section | object | metric | relay | nginx proxy_cache | Varnish | relay/nginx | \
         relay/Varnish | relay ahead |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for l in &r.table {
        let ratio = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            l.section,
            l.object,
            l.metric,
            cell(l.metric, l.stats[0]),
            cell(l.metric, l.stats[1]),
            cell(l.metric, l.stats[2]),
            ratio(l.ratios[0]),
            ratio(l.ratios[1]),
            l.relay_ahead
        );
    }
    let behind: Vec<String> = r
        .table
        .iter()
        .filter(|l| l.relay_ahead == "no")
        .map(|l| format!("{} {} {}", l.section, l.object, l.metric))
        .collect();
    if behind.is_empty() {
        println!("\nrelay is ahead of (or level with) both on every judged row");
    } else {
        println!(
            "\nrelay is behind nginx or Varnish on {} row(s): {}",
            behind.len(),
            behind.join("; ")
        );
    }
    println!("load average at the end: {}", r.loadavg_end);
}

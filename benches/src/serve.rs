//! `relay-bench serve`: relay memory hits vs nginx (sendfile, page cache) vs nginx
//! `proxy_cache` hits vs Varnish hits, same machine, same objects, same client, client and
//! servers pinned to separate cores. The client is `relay-bench load` (bodies dropped in the
//! kernel, so the servers are the bottleneck up to 1 MiB objects), or wrk (`--client wrk`).
//!
//! Order of a run: write the objects (4 KiB, 64 KiB, 1 MiB) into a temp dir; start relay,
//! nginx and Varnish (in front of nginx's file server) pinned to the server CPUs with as
//! many workers (thread pools) as CPUs; fetch every object with curl and check the bytes and
//! that relay answers `Cache-Status: relay; hit`, the proxy `X-Cache-Status: HIT` and
//! Varnish `X-Cache: HIT`; one short unrecorded warm-up per server and size; then `runs`
//! rounds over connections × sizes × servers (server order rotated per round), each a client
//! run with the servers' CPU seconds sampled around it; the hits are checked again at the
//! end. Servers are stopped on every exit path (guards), the temp dir removed.

use crate::machine::{self, Machine};
use crate::procs;
use crate::report::{self, Report, Row, Run, Server, Settings};
use crate::servers::{Nginx, Relay, Varnish};
use crate::wrk::{ClientKind, LoadClient};
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The objects: (size in bytes, label, file name).
pub const OBJECTS: [(u64, &str, &str); 3] = [
    (4 << 10, "4 KiB", "obj-4k.bin"),
    (64 << 10, "64 KiB", "obj-64k.bin"),
    (1 << 20, "1 MiB", "obj-1m.bin"),
];

#[derive(clap::Args)]
pub struct Options {
    /// The relay binary to measure (a release build).
    #[arg(long)]
    pub relay: PathBuf,
    /// A second relay binary (the build before a change) measured alternately with the
    /// others, with relay's ratios to it: a change's effect shown in one run.
    #[arg(long)]
    pub relay_before: Option<PathBuf>,
    /// Directory for the JSON and SVG results.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Measured runs per row (default 5; 1 with --quick).
    #[arg(long)]
    pub runs: Option<u32>,
    /// Seconds per wrk run (default 10; 2 with --quick).
    #[arg(long)]
    pub duration: Option<u32>,
    /// Keep-alive connection counts, comma-separated (default 64,256; 64 with --quick).
    #[arg(long, value_delimiter = ',')]
    pub connections: Vec<u32>,
    /// Seconds of unrecorded wrk warm-up per server and size (default 2; 0 with --quick).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Smoke test: 1 run of 2 s at 64 connections, no warm-up; results in serve-quick.*.
    #[arg(long)]
    pub quick: bool,
    /// nginx's file server without sendfile (`sendfile off; output_buffers 1 1m`: it reads
    /// each object into a buffer and writes it, copying like relay's sends on loopback), to
    /// see how much of sendfile's CPU figure is work charged to the client's core; results
    /// in serve-nginx-copy.*. The targets are issue 3's, stated against sendfile.
    #[arg(long)]
    pub nginx_copy: bool,
    /// The load client: `load` (this binary's, bodies dropped in the kernel: the server is
    /// the bottleneck) or `wrk`.
    #[arg(long, value_enum, default_value_t = ClientKind::Load)]
    pub client: ClientKind,
    /// CPUs for the load client, comma-separated (default: the first CPU this process may
    /// use).
    #[arg(long, value_delimiter = ',')]
    pub client_cpus: Vec<usize>,
    /// CPUs for the servers, comma-separated (default: all the others); one worker each.
    #[arg(long, value_delimiter = ',')]
    pub server_cpus: Vec<usize>,
    /// How the benchmark was invoked, for the record (xtask passes its command line).
    #[arg(long)]
    pub command: Option<String>,
}

pub fn run(o: Options) -> Result<()> {
    let mut dir = RunDir::new()?;
    let result = measure(&o, &dir.path);
    if result.is_err() && !procs::interrupted() {
        // Servers are stopped by now (their guards dropped); keep their configs and logs.
        dir.keep = true;
        eprintln!(
            "relay-bench: configs and logs kept in {}",
            dir.path.display()
        );
    }
    result
}

fn measure(o: &Options, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let started_utc = report::utc_now();
    let settings = settings(o)?;
    for tool in ["wrk", "nginx", "varnishd", "curl", "taskset"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            bail!("{tool} is not installed: run `cargo xtask setup` (as root)");
        }
    }
    let relay_bin = std::fs::canonicalize(&o.relay)
        .with_context(|| format!("relay binary {}", o.relay.display()))?;
    let machine = Machine::probe(&relay_bin);
    let origin = dir.join("origin");
    std::fs::create_dir_all(&origin)?;
    let mut objects = Vec::new();
    for (i, (size, _, name)) in OBJECTS.iter().enumerate() {
        let bytes = pattern(*size as usize, i as u64 + 1);
        std::fs::write(origin.join(name), &bytes)?;
        objects.push(bytes);
    }

    eprintln!("relay-bench: serve, {started_utc}");
    eprintln!("relay-bench: machine: {}", machine.line());
    eprintln!(
        "relay-bench: pinning: {} on CPU {} ({} thread{}); relay and nginx on CPU {}, {} worker{} each",
        settings.client,
        list(&settings.client_cpus),
        settings.wrk_threads,
        plural(settings.wrk_threads as usize),
        list(&settings.server_cpus),
        settings.workers,
        plural(settings.workers),
    );
    eprintln!(
        "relay-bench: plan: {} run{} x {} s per row, connections {:?}, objects 4 KiB / 64 KiB / 1 MiB, \
         load average at start {}",
        settings.runs,
        plural(settings.runs as usize),
        settings.duration_s,
        settings.connections,
        machine.loadavg_start
    );

    let server_cpus = list(&settings.server_cpus);
    let mut relay = Relay::start(&relay_bin, dir, &origin, &server_cpus, settings.workers)?;
    let before_bin = match &o.relay_before {
        Some(b) => Some(
            std::fs::canonicalize(b).with_context(|| format!("relay binary {}", b.display()))?,
        ),
        None => None,
    };
    let mut relay_before = match &before_bin {
        Some(b) => Some(Relay::start(
            b,
            &{
                let d = dir.join("before");
                std::fs::create_dir_all(&d)?;
                d
            },
            &origin,
            &server_cpus,
            settings.workers,
        )?),
        None => None,
    };
    let servers = Server::measured(relay_before.is_some());
    let mut nginx = Nginx::start(
        &dir.join("nginx"),
        &origin,
        &server_cpus,
        settings.workers,
        settings.nginx_sendfile,
    )?;
    let mut varnish = Varnish::start(
        &dir.join("varnish"),
        nginx.files,
        &server_cpus,
        settings.workers,
    )?;
    let urls = Urls {
        relay: format!("http://{}", relay.addr),
        nginx: format!("http://{}", nginx.files),
        proxy: format!("http://{}", nginx.proxy),
        varnish: format!("http://{}", varnish.addr),
        before: relay_before.as_ref().map(|b| format!("http://{}", b.addr)),
    };
    eprintln!(
        "relay-bench: relay at {} (pid {}), nginx files at {} and proxy_cache at {} (master pid {}), \
         varnish at {} (pid {})",
        urls.relay,
        relay.pid(),
        urls.nginx,
        urls.proxy,
        nginx.pid(),
        urls.varnish,
        varnish.pid()
    );
    verify(&urls, &objects, dir, true, &servers).with_context(|| {
        format!(
            "warming and checking the servers (relay log {}, nginx config {}, error log {}, \
             varnish VCL {})",
            relay.log.display(),
            nginx.config.display(),
            nginx.error_log.display(),
            varnish.vcl.display()
        )
    })?;
    eprintln!(
        "relay-bench: every object checked: relay hits, nginx bytes, proxy_cache and varnish hits"
    );

    let wrk = LoadClient::new(
        o.client,
        &list(&settings.client_cpus),
        settings.wrk_threads,
        dir,
    )?;
    let mut rows: Vec<Row> = Vec::new();
    for &conns in &settings.connections {
        for (size, label, _) in OBJECTS {
            for &server in &servers {
                rows.push(Row::new(server, size, label, conns));
            }
        }
    }
    let max_conns = settings.connections.iter().copied().max().unwrap_or(64);
    let warm_steps = if settings.warmup_s > 0 {
        OBJECTS.len() * servers.len()
    } else {
        0
    };
    let measured = rows.len() * settings.runs as usize;
    let mut progress = Progress::new(
        warm_steps + measured,
        warm_steps as f64 * (f64::from(settings.warmup_s) + 0.5)
            + measured as f64 * (f64::from(settings.duration_s) + 0.5),
    );
    if settings.warmup_s > 0 {
        for (size, label, name) in OBJECTS {
            for &server in &servers {
                progress.step(
                    &format!("warm-up {label:>6} {} c={max_conns}", server.label()),
                    f64::from(settings.warmup_s),
                );
                let outcome = wrk.run(
                    &urls.get(server, name),
                    &origin.join(name),
                    max_conns,
                    settings.warmup_s,
                )?;
                progress.done(&format!(
                    "{:.0} req/s",
                    outcome.requests as f64 / outcome.duration_s.max(1e-9)
                ));
                if let Some(why) = outcome.invalid_reason(size, max_conns) {
                    progress.note(&format!(
                        "warm-up of {} at {label} was not clean: {why}",
                        server.label()
                    ));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    for round in 0..settings.runs {
        for &conns in &settings.connections {
            for (size, label, name) in OBJECTS {
                let mut order = servers.clone();
                order.rotate_left(round as usize % servers.len());
                for server in order {
                    procs::check_interrupted()?;
                    progress.step(
                        &format!(
                            "run {}/{} {label:>6} c={conns:<3} {:<17}",
                            round + 1,
                            settings.runs,
                            server.label()
                        ),
                        f64::from(settings.duration_s),
                    );
                    let pid = match server {
                        Server::Relay => relay.pid(),
                        Server::Nginx | Server::NginxProxyCache => nginx.pid(),
                        Server::Varnish => varnish.pid(),
                        Server::RelayBefore => relay_before.as_ref().map_or(0, |b| b.pid()),
                    };
                    let busy_before = procs::machine_busy_seconds();
                    let idle_before = procs::cpus_idle_seconds(&settings.server_cpus);
                    let before = procs::sample_tree(pid);
                    let outcome = wrk.run(
                        &urls.get(server, name),
                        &origin.join(name),
                        conns,
                        settings.duration_s,
                    )?;
                    let after = procs::sample_tree(pid);
                    let busy = procs::machine_busy_seconds() - busy_before;
                    let idle = procs::cpus_idle_seconds(&settings.server_cpus) - idle_before;
                    let server_cpu_s = procs::cpu_seconds(&before, &after);
                    let run = Run::new(round + 1, outcome, size, conns, server_cpu_s, busy)
                        .with_cores_idle(settings.server_cpus.len(), idle);
                    progress.done(&run.short());
                    rows.iter_mut()
                        .find(|r| r.server == server && r.size == size && r.connections == conns)
                        .expect("every (server, size, connections) has a row")
                        .runs
                        .push(run);
                    relay
                        .check_alive()
                        .with_context(|| format!("log: {}", relay.log.display()))?;
                    nginx
                        .check_alive()
                        .with_context(|| format!("log: {}", nginx.error_log.display()))?;
                    varnish.check_alive()?;
                    if let Some(b) = relay_before.as_mut() {
                        b.check_alive()
                            .with_context(|| format!("log: {}", b.log.display()))?;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
    }
    progress.finish();
    let mut notes = Vec::new();
    for &server in &servers {
        if let Err(e) = verify(&urls, &objects, dir, false, &[server]) {
            let why = format!("after the runs: {e:#}");
            for r in rows.iter_mut().filter(|r| r.server == server) {
                r.invalid.get_or_insert_with(|| why.clone());
            }
            notes.push(why);
        }
    }
    drop(relay);
    drop(varnish);
    drop(nginx);
    for r in &mut rows {
        r.finish();
    }
    let settings = Settings {
        wrk_command: wrk.describe(max_conns, settings.duration_s),
        relay_bin: relay_bin.display().to_string(),
        relay_before_bin: before_bin.as_ref().map(|b| b.display().to_string()),
        ..settings
    };
    let mut report = Report::new(
        started_utc,
        started.elapsed().as_secs_f64(),
        o.command
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        machine,
        settings,
        rows,
        notes,
    );
    report.loadavg_end = machine::loadavg();
    print!("{}", report.table());
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let stem = match (o.quick, o.nginx_copy) {
        (true, _) => "serve-quick",
        (false, true) => "serve-nginx-copy",
        (false, false) => "serve",
    };
    let json = o.out.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = o.out.join(format!("{stem}.svg"));
    crate::plot::write(&report, &svg)?;
    println!("json: {}", absolute(&json).display());
    println!("plot: {}", absolute(&svg).display());
    let invalid = report.rows.iter().filter(|r| r.invalid.is_some()).count();
    if invalid > 0 {
        bail!("{invalid} row(s) invalid: their numbers are not reported (see the table)");
    }
    Ok(())
}

fn settings(o: &Options) -> Result<Settings> {
    let runs = o.runs.unwrap_or(if o.quick { 1 } else { 5 });
    let duration_s = o.duration.unwrap_or(if o.quick { 2 } else { 10 });
    let warmup_s = o.warmup.unwrap_or(if o.quick { 0 } else { 2 });
    let connections = if !o.connections.is_empty() {
        o.connections.clone()
    } else if o.quick {
        vec![64]
    } else {
        vec![64, 256]
    };
    if !(1..=100).contains(&runs) || !(1..=600).contains(&duration_s) || warmup_s > 600 {
        bail!("--runs must be 1..=100, --duration 1..=600 s, --warmup at most 600 s");
    }
    if connections.iter().any(|&c| !(1..=10_000).contains(&c)) {
        bail!("--connections must each be 1..=10000");
    }
    let (client_cpus, server_cpus) = split_cpus(&o.client_cpus, &o.server_cpus)?;
    Ok(Settings {
        runs,
        duration_s,
        warmup_s,
        connections,
        wrk_threads: client_cpus.len() as u32,
        workers: server_cpus.len(),
        client_cpus,
        server_cpus,
        objects: OBJECTS.iter().map(|(s, _, _)| *s).collect(),
        client: o.client.name().into(),
        wrk_command: String::new(),
        quick: o.quick,
        nginx_sendfile: !o.nginx_copy,
        relay_bin: String::new(),
        relay_before_bin: None,
    })
}

/// The load client's CPUs (`client`, else the first CPU this process may use) and the
/// servers' (`server`, else all the others); an error when they overlap or one is empty.
pub(crate) fn split_cpus(client: &[usize], server: &[usize]) -> Result<(Vec<usize>, Vec<usize>)> {
    let allowed = procs::allowed_cpus();
    let client_cpus = if client.is_empty() {
        allowed.iter().copied().take(1).collect()
    } else {
        client.to_vec()
    };
    let server_cpus: Vec<usize> = if server.is_empty() {
        allowed
            .iter()
            .copied()
            .filter(|c| !client_cpus.contains(c))
            .collect()
    } else {
        server.to_vec()
    };
    if client_cpus.is_empty() || server_cpus.is_empty() {
        bail!("client and servers need separate CPUs, and this process may use only {allowed:?}");
    }
    if let Some(c) = client_cpus.iter().find(|c| server_cpus.contains(c)) {
        bail!("CPU {c} is both a client and a server CPU");
    }
    Ok((client_cpus, server_cpus))
}

struct Urls {
    relay: String,
    nginx: String,
    proxy: String,
    varnish: String,
    before: Option<String>,
}

impl Urls {
    fn get(&self, server: Server, name: &str) -> String {
        let base = match server {
            Server::Relay => &self.relay,
            Server::Nginx => &self.nginx,
            Server::NginxProxyCache => &self.proxy,
            Server::Varnish => &self.varnish,
            Server::RelayBefore => self.before.as_deref().unwrap_or_default(),
        };
        format!("{base}/{name}")
    }
}

/// Fetches every object from `servers` with curl and checks status and bytes; relay and
/// the proxy must answer from their caches (after one filling fetch when `fill`).
fn verify(
    urls: &Urls,
    objects: &[Vec<u8>],
    dir: &Path,
    fill: bool,
    servers: &[Server],
) -> Result<()> {
    for ((_, label, name), want) in OBJECTS.iter().zip(objects) {
        for &server in servers {
            let url = urls.get(server, name);
            let (header, hit) = match server {
                Server::Relay | Server::RelayBefore => ("cache-status", "relay; hit"),
                Server::Nginx => ("", ""),
                Server::NginxProxyCache => ("x-cache-status", "HIT"),
                Server::Varnish => ("x-cache", "HIT"),
            };
            // The first fetch fills the cache; a hit is expected by the second (a few
            // tries for the proxy, whose cache file is written as the response ends).
            // (After the runs, relay's first answer for an object idle for over a second
            // revalidates its file, `origin.revalidate_ms`: `fwd=stale`; the next is a hit.)
            let tries = if header.is_empty() {
                1
            } else if fill {
                5
            } else {
                2
            };
            let mut last = String::new();
            let mut ok = false;
            for _ in 0..tries {
                let r = curl(&url, dir)?;
                if r.status != 200 || r.body != *want {
                    bail!(
                        "{} {label}: status {}, {} bytes (want 200, {} bytes of the object)",
                        server.label(),
                        r.status,
                        r.body.len(),
                        want.len()
                    );
                }
                if header.is_empty() {
                    ok = true;
                    break;
                }
                last = r.header(header).unwrap_or("(none)").to_string();
                if last == hit {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ok {
                bail!(
                    "{} {label}: {header}: {last}, want {hit} (is the object cached?)",
                    server.label()
                );
            }
        }
    }
    Ok(())
}

struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn curl(url: &str, dir: &Path) -> Result<Fetched> {
    let head = dir.join("curl-head");
    let body = dir.join("curl-body");
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .arg(url)
        .output()
        .context("running curl")?;
    if !out.status.success() {
        bail!(
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let head = std::fs::read_to_string(&head)?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("curl {url}: no status line"))?;
    let headers = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Ok(Fetched {
        status,
        headers,
        body: std::fs::read(&body)?,
    })
}

/// The run's temp dir (objects, configs, logs, nginx cache), removed on drop unless kept
/// (after a failure, for its logs).
pub(crate) struct RunDir {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl RunDir {
    pub(crate) fn new() -> Result<RunDir> {
        let path = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path, keep: false })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), one stream per object.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

pub(crate) fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The progress line on stderr: rewritten in place on a terminal, one line per step
/// otherwise (logs, CI).
pub(crate) struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
    remaining_s: f64,
    current: String,
}

impl Progress {
    pub(crate) fn new(total: usize, estimate_s: f64) -> Progress {
        Progress {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            remaining_s: estimate_s,
            current: String::new(),
        }
    }

    pub(crate) fn step(&mut self, what: &str, secs: f64) {
        self.current = format!(
            "[{:>3}/{}] {what} (elapsed {}, ~{} left)",
            self.done + 1,
            self.total,
            mmss(self.started.elapsed().as_secs_f64()),
            mmss(self.remaining_s)
        );
        self.remaining_s = (self.remaining_s - secs - 0.5).max(0.0);
        if self.tty {
            eprint!("\r\x1b[2K{}", self.current);
            let _ = std::io::stderr().flush();
        }
    }

    pub(crate) fn done(&mut self, result: &str) {
        self.done += 1;
        if self.tty {
            eprint!("\r\x1b[2K{} {result}", self.current);
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{} {result}", self.current);
        }
    }

    pub(crate) fn note(&mut self, text: &str) {
        if self.tty {
            eprintln!();
        }
        eprintln!("relay-bench: {text}");
    }

    pub(crate) fn finish(&mut self) {
        if self.tty {
            eprintln!();
        }
        eprintln!(
            "relay-bench: {} measurements in {}",
            self.done,
            mmss(self.started.elapsed().as_secs_f64())
        );
    }
}

fn mmss(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}

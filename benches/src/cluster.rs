//! `relay-bench cluster` (`cargo xtask bench cluster`): relays of one site sharing one cache,
//! real processes on loopback, the test kit's origin behind them.
//!
//! 1. **Origin fetches per chunk.** A Zipf workload (s = 1; `--requests` over `--objects`
//!    objects of one to four 64 KiB chunks, each request to a relay picked at random, a
//!    fixed seed) through 1, 3 and 5 relays: the chunks asked for, what the origin served,
//!    and what as many independent relays would have fetched (each chunk once per relay that
//!    was asked for its object).
//! 2. **A peer hit against an origin fetch.** Time to first and to last byte of a 1 MiB and
//!    a 16 MiB object (1 MiB chunks) with the origin adding `--origin-delay-ms` before each
//!    answer (a distant origin), medians of `--runs`, each run a fresh object:
//!    - *origin*: a relay alone, fetching from the origin;
//!    - *site*: a relay of three asking the site for an object another relay fetched (1 MiB:
//!      a pure peer hit, taken from the relay that holds nothing; 16 MiB: its chunks from
//!      their owners, some of them this relay);
//!    - *local*: the same relay again, from its memory.
//!
//! The table goes to stdout, every figure to `cluster.json` under `--out`.

use crate::machine::Machine;
use crate::report::utc_now;
use anyhow::{Context, Result, bail, ensure};
use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, TempDir, pattern};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Options {
    /// The relay binary to measure (a release build).
    #[arg(long)]
    pub relay: PathBuf,
    /// Directory for cluster.json.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Requests of the Zipf workload.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Objects of the Zipf workload.
    #[arg(long, default_value_t = 300)]
    pub objects: usize,
    /// Runs per timing (medians).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// What the origin waits before each answer, ms.
    #[arg(long, default_value_t = 20)]
    pub origin_delay_ms: u64,
    /// How the benchmark was invoked, for the record.
    #[arg(long)]
    pub command: Option<String>,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    command: Option<String>,
    started_utc: String,
    machine: Machine,
    zipf: Vec<ZipfRow>,
    timings: Vec<TimingRow>,
}

#[derive(Serialize)]
struct ZipfRow {
    relays: usize,
    requests: usize,
    chunks_asked: usize,
    origin_fetches: usize,
    independent_fetches: usize,
    fetches_per_chunk: f64,
}

#[derive(Serialize)]
struct TimingRow {
    object_bytes: usize,
    path: &'static str,
    runs: usize,
    first_byte_ms_median: f64,
    last_byte_ms_median: f64,
    mb_per_s_median: f64,
}

/// The Host every request carries: the relays key objects under it, so one object is one
/// object whichever relay is asked.
const HOST: &str = "cdn.bench";

pub fn run(o: Options) -> Result<()> {
    ensure!(o.relay.exists(), "no relay binary at {}", o.relay.display());
    let started_utc = utc_now();
    let machine = Machine::probe(&o.relay);
    let mut zipf = Vec::new();
    for n in [1, 3, 5] {
        let row = zipf_run(&o, n)?;
        eprintln!(
            "zipf, {n} relay(s): {} chunks asked for, the origin fetched {}",
            row.chunks_asked, row.origin_fetches
        );
        zipf.push(row);
    }
    let timings = timing_runs(&o)?;
    let report = Report {
        benchmark: "cluster",
        command: o.command.clone(),
        started_utc,
        machine,
        zipf,
        timings,
    };
    print_table(&report);
    std::fs::create_dir_all(&o.out)?;
    let path = o.out.join("cluster.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!("json: {}", path.display());
    Ok(())
}

/// A relay of a site (`seeds`: whom it announces itself to; none and `alone`: no cluster).
fn relay(
    bin: &Path,
    dir: &TempDir,
    origin: &Origin,
    seeds: &[SocketAddr],
    chunk: &str,
    alone: bool,
) -> Relay {
    use std::os::unix::fs::PermissionsExt;
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[cache]\nmemory_bytes = \"128 MiB\"\n\
         chunk_size = \"{chunk}\"\n\n[[origin.http]]\nurl = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    );
    if !alone {
        let key = dir.write("cluster.key", "5e".repeat(32).as_bytes());
        let _ = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600));
        let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
        config.push_str(&format!(
            "\n[cluster]\nlisten = \"127.0.0.1:0\"\nseeds = [{}]\nkey_file = \"{}\"\n\
             peer_listen = \"127.0.0.1:0\"\nsize = 5\n",
            seeds.join(", "),
            key.display()
        ));
    }
    Relay::start_bin(bin, &config, &[])
}

/// `n` relays of one site (one alone when `n` is 1), each knowing every record.
fn site(bin: &Path, dirs: &[TempDir], origin: &Origin, chunk: &str) -> Result<Vec<Relay>> {
    if dirs.len() == 1 {
        return Ok(vec![relay(bin, &dirs[0], origin, &[], chunk, true)]);
    }
    let first = relay(bin, &dirs[0], origin, &[], chunk, false);
    let seed = first.printed_addr("relay: cluster on udp://");
    let mut relays = vec![first];
    for d in &dirs[1..] {
        relays.push(relay(bin, d, origin, &[seed], chunk, false));
    }
    let records = |r: &Relay| {
        r.metrics()
            .lines()
            .filter(|l| l.starts_with("relay_cluster_member_info{"))
            .count()
    };
    let end = Instant::now() + Duration::from_secs(20);
    while relays.iter().any(|r| records(r) < dirs.len()) {
        if Instant::now() > end {
            bail!("the relays did not learn each other's records in 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(relays)
}

/// A GET of `path` with the benchmark's Host: (status, body length, first byte, last byte).
fn get(addr: SocketAddr, path: &str) -> Result<(u16, usize, Duration, Duration)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = vec![0u8; 256 << 10];
    let mut got = Vec::new();
    let mut first = None;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| t.elapsed());
        got.extend_from_slice(&buf[..n]);
    }
    let last = t.elapsed();
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let head = String::from_utf8_lossy(&got[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((
        status,
        got.len() - head_end - 4,
        first.unwrap_or(last),
        last,
    ))
}

fn zipf_run(o: &Options, n: usize) -> Result<ZipfRow> {
    const CHUNK: usize = 64 << 10;
    let origin = Origin::start();
    let sizes: Vec<usize> = (0..o.objects)
        .map(|i| CHUNK * (1 + i % 4) - 1000 * (i % 3))
        .collect();
    for (i, &len) in sizes.iter().enumerate() {
        origin.put(
            &format!("/z{i}"),
            Object::new(pattern(len, i as u64), &format!("z{i}")),
        );
    }
    let dirs: Vec<TempDir> = (0..n)
        .map(|i| TempDir::new(&format!("bench-zipf-{i}")))
        .collect();
    let relays = site(&o.relay, &dirs, &origin, "64 KiB")?;
    let mut zipf = relay_tests::Zipf::new(o.objects, 0x9e37_79b9_7f4a_7c15);
    let mut asked = vec![std::collections::HashSet::new(); o.objects];
    for _ in 0..o.requests {
        let obj = zipf.item();
        let r = (zipf.next_u64() % n as u64) as usize;
        asked[obj].insert(r);
        let (status, len, _, _) = get(relays[r].addr, &format!("/z{obj}"))?;
        ensure!(
            status == 200 && len == sizes[obj],
            "/z{obj}: {status}, {len} bytes"
        );
    }
    let (mut chunks, mut fetched, mut independent) = (0, 0, 0);
    for (i, who) in asked.iter().enumerate() {
        if who.is_empty() {
            continue;
        }
        let c = sizes[i].div_ceil(CHUNK);
        chunks += c;
        independent += c * who.len();
        fetched += origin.count(&format!("/z{i}"));
    }
    Ok(ZipfRow {
        relays: n,
        requests: o.requests,
        chunks_asked: chunks,
        origin_fetches: fetched,
        independent_fetches: independent,
        fetches_per_chunk: fetched as f64 / chunks.max(1) as f64,
    })
}

fn timing_runs(o: &Options) -> Result<Vec<TimingRow>> {
    let origin = Origin::start();
    origin
        .behaviour
        .head_delay_ms
        .store(o.origin_delay_ms, Ordering::Relaxed);
    let alone_dir = [TempDir::new("bench-alone")];
    let alone = site(&o.relay, &alone_dir, &origin, "1 MiB")?;
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("bench-site-{i}")))
        .collect();
    let relays = site(&o.relay, &dirs, &origin, "1 MiB")?;
    let answered = |r: &Relay| {
        r.metric("relay_peer_fetches_total{result=\"answered\"}")
            .unwrap_or(0.0)
    };
    let mut rows = Vec::new();
    for size in [1usize << 20, 16 << 20] {
        let mut samples: [Vec<(Duration, Duration)>; 3] = Default::default();
        for run in 0..o.runs {
            let path = format!("/t{size}-{run}");
            let body = pattern(size, run as u64 + 7);
            origin.put(&path, Object::new(body, &format!("t{run}")));
            // A relay alone, from the origin.
            let (s, n, first, last) = get(alone[0].addr, &path)?;
            ensure!(s == 200 && n == size, "{path} alone: {s}, {n} bytes");
            samples[0].push((first, last));
            // The site: relay 0 fetches it (the owners of its chunks too); then another
            // relay asks the site. For one chunk, the relay that asks its owner is taken
            // (a relay that owns it would answer from memory).
            get(relays[0].addr, &path)?;
            let mut site_sample = None;
            for r in &relays[1..] {
                let before = answered(r);
                let (s, n, first, last) = get(r.addr, &path)?;
                ensure!(
                    s == 200 && n == size,
                    "{path} through the site: {s}, {n} bytes"
                );
                if size > 1 << 20 || answered(r) > before {
                    site_sample = Some((r.addr, first, last));
                    break;
                }
            }
            let (addr, first, last) = site_sample.context("no relay asked a peer")?;
            samples[1].push((first, last));
            let (s, n, first, last) = get(addr, &path)?;
            ensure!(s == 200 && n == size, "{path} local: {s}, {n} bytes");
            samples[2].push((first, last));
        }
        for (i, name) in ["origin", "site", "local"].into_iter().enumerate() {
            let med = |f: fn(&(Duration, Duration)) -> Duration| {
                let mut v: Vec<f64> = samples[i]
                    .iter()
                    .map(|s| f(s).as_secs_f64() * 1e3)
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let last = med(|s| s.1);
            rows.push(TimingRow {
                object_bytes: size,
                path: name,
                runs: o.runs,
                first_byte_ms_median: med(|s| s.0),
                last_byte_ms_median: last,
                mb_per_s_median: size as f64 / 1e6 / (last / 1e3),
            });
        }
    }
    Ok(rows)
}

fn print_table(r: &Report) {
    println!("\nrelay bench cluster: {}", r.started_utc);
    println!("machine: {}", r.machine.line_relay_only());
    println!(
        "\n| relays | requests | chunks asked | origin fetches | per chunk | independent relays |"
    );
    println!("|---|---|---|---|---|---|");
    for z in &r.zipf {
        println!(
            "| {} | {} | {} | {} | {:.2} | {} |",
            z.relays,
            z.requests,
            z.chunks_asked,
            z.origin_fetches,
            z.fetches_per_chunk,
            z.independent_fetches
        );
    }
    println!("\n| object | path | first byte (median) | last byte (median) | MB/s |");
    println!("|---|---|---|---|---|");
    for t in &r.timings {
        println!(
            "| {} MiB | {} | {:.1} ms | {:.1} ms | {:.0} |",
            t.object_bytes >> 20,
            t.path,
            t.first_byte_ms_median,
            t.last_byte_ms_median,
            t.mb_per_s_median
        );
    }
}

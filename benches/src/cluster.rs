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
    join: JoinRow,
    timings: Vec<TimingRow>,
}

/// A relay joining a warm site: the objects the site was asked for, asked through it.
#[derive(Serialize)]
struct JoinRow {
    site_relays: usize,
    objects: usize,
    chunks: usize,
    /// The chunks whose owner the newcomer now is: what it would fetch from the origin
    /// itself without the others' digests.
    owned_by_newcomer: usize,
    holder_hits: f64,
    holder_misses: f64,
    owner_answers: f64,
    origin_fetches: usize,
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
    let join = join_run(&o)?;
    eprintln!(
        "join: {} chunks through a newcomer: {} from holders, {} from owners, {} from the origin",
        join.chunks, join.holder_hits, join.owner_answers, join.origin_fetches
    );
    let timings = timing_runs(&o)?;
    let report = Report {
        benchmark: "cluster",
        command: o.command.clone(),
        started_utc,
        machine,
        zipf,
        join,
        timings,
    };
    print_table(&report);
    std::fs::create_dir_all(&o.out)?;
    let path = o.out.join("cluster.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    println!("json: {}", path.display());
    let svg = o.out.join("cluster.svg");
    plot(&report, &svg)?;
    println!("plot: {}", svg.display());
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

/// Three relays warmed with half the Zipf workload; a fourth joins, learns the others'
/// digests, and is asked for every object the site was asked for.
fn join_run(o: &Options) -> Result<JoinRow> {
    const CHUNK: usize = 64 << 10;
    let origin = Origin::start();
    let sizes: Vec<usize> = (0..o.objects).map(|i| CHUNK * (1 + i % 4) - 7).collect();
    for (i, &len) in sizes.iter().enumerate() {
        origin.put(
            &format!("/j{i}"),
            Object::new(pattern(len, 1000 + i as u64), &format!("j{i}")),
        );
    }
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("bench-join-{i}")))
        .collect();
    let relays = site(&o.relay, &dirs, &origin, "64 KiB")?;
    let mut zipf = relay_tests::Zipf::new(o.objects, 0x5851_f42d_4c95_7f2d);
    let mut asked = std::collections::BTreeSet::new();
    for _ in 0..o.requests / 2 {
        let obj = zipf.item();
        let r = (zipf.next_u64() % 3) as usize;
        asked.insert(obj);
        let (status, len, _, _) = get(relays[r].addr, &format!("/j{obj}"))?;
        ensure!(status == 200 && len == sizes[obj], "/j{obj}: {status}");
    }
    let chunks: usize = asked.iter().map(|&i| sizes[i].div_ceil(CHUNK)).sum();
    // Each relay's digest names what it holds within a look (5 s).
    let held = |r: &Relay| r.metric("relay_digest_chunks").unwrap_or(0.0);
    let end = Instant::now() + Duration::from_secs(20);
    while relays.iter().map(held).sum::<f64>() < chunks as f64 {
        ensure!(
            Instant::now() < end,
            "the relays' digests did not name their chunks"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seed = relays[0].printed_addr("relay: cluster on udp://");
    let dir = TempDir::new("bench-join-new");
    let newcomer = relay(&o.relay, &dir, &origin, &[seed], "64 KiB", false);
    let end = Instant::now() + Duration::from_secs(20);
    while newcomer
        .metric("relay_peer_digests_fetched_total")
        .unwrap_or(0.0)
        < 3.0
    {
        ensure!(
            Instant::now() < end,
            "the newcomer did not fetch the digests"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: usize = asked.iter().map(|i| origin.count(&format!("/j{i}"))).sum();
    // The chunks the newcomer owns, by the same rendezvous as the relays.
    use relay_cluster::owners::{Candidate, key_hash, owners};
    let gossip = |r: &Relay| r.printed_addr("relay: cluster on udp://");
    let me = gossip(&newcomer);
    let candidates: Vec<Candidate> = relays
        .iter()
        .map(gossip)
        .chain([me])
        .map(|a| Candidate::new(a, 100))
        .collect();
    let mut owned = 0;
    let mut name = Vec::new();
    for &i in &asked {
        for c in 0..sizes[i].div_ceil(CHUNK) as u64 {
            let target = format!("{HOST}/j{i}");
            relay_cluster::digest::chunk_name(target.as_bytes(), c, &mut name);
            if owners(key_hash(&name), &candidates, 1).first() == Some(&me) {
                owned += 1;
            }
        }
    }
    for &i in &asked {
        let (status, len, _, _) = get(newcomer.addr, &format!("/j{i}"))?;
        ensure!(
            status == 200 && len == sizes[i],
            "/j{i} through the newcomer: {status}"
        );
    }
    let after: usize = asked.iter().map(|i| origin.count(&format!("/j{i}"))).sum();
    let m = |name: &str| newcomer.metric(name).unwrap_or(0.0);
    Ok(JoinRow {
        site_relays: 3,
        objects: asked.len(),
        chunks,
        owned_by_newcomer: owned,
        holder_hits: m("relay_peer_holder_requests_total{result=\"hit\"}"),
        holder_misses: m("relay_peer_holder_requests_total{result=\"miss\"}"),
        owner_answers: m("relay_peer_fetches_total{result=\"answered\"}")
            - m("relay_peer_holder_requests_total{result=\"hit\"}"),
        origin_fetches: after - before,
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
    let j = &r.join;
    println!(
        "\nA relay joins a site of {} warmed with {} objects ({} chunks; it owns {} of them):",
        j.site_relays, j.objects, j.chunks, j.owned_by_newcomer
    );
    println!("\n| from holders (digests) | holder misses | from owners | from the origin |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        j.holder_hits, j.holder_misses, j.owner_answers, j.origin_fetches
    );
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

/// The SVG: origin fetches per chunk asked by relays in the site (against independent
/// relays), and time to first and last byte by where the bytes came from.
fn plot(r: &Report, path: &Path) -> Result<()> {
    draw(r, path).map_err(|e| anyhow::anyhow!("plot {}: {e}", path.display()))
}

fn draw(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(60);
    title.draw(&Text::new(
        format!("relay bench cluster, {}", r.started_utc),
        (20, 12),
        ("sans-serif", 18).into_font(),
    ))?;
    title.draw(&Text::new(
        r.machine.line_relay_only(),
        (20, 36),
        ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    let (left, right) = body.split_horizontally(520);
    let site_color = RGBColor(214, 39, 40);
    let alone_color = RGBColor(31, 119, 180);
    // Origin fetches per chunk asked for, by relays.
    let max = r
        .zipf
        .iter()
        .map(|z| z.independent_fetches as f64 / z.chunks_asked.max(1) as f64)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption("origin fetches per chunk asked (Zipf)", ("sans-serif", 16))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5f64..5.5, 0.0..max * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("relays in the site")
        .draw()?;
    let per = |f: fn(&ZipfRow) -> usize| -> Vec<(f64, f64)> {
        r.zipf
            .iter()
            .map(|z| (z.relays as f64, f(z) as f64 / z.chunks_asked.max(1) as f64))
            .collect()
    };
    chart
        .draw_series(LineSeries::new(
            per(|z| z.independent_fetches),
            alone_color.stroke_width(2),
        ))?
        .label("independent relays")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], alone_color));
    chart
        .draw_series(LineSeries::new(
            per(|z| z.origin_fetches),
            site_color.stroke_width(2),
        ))?
        .label("one site (owners, digests)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], site_color));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    // Time to first and last byte (log), by path and size.
    let labels: Vec<String> = r
        .timings
        .iter()
        .map(|t| format!("{} MiB {}", t.object_bytes >> 20, t.path))
        .collect();
    let hi = r
        .timings
        .iter()
        .map(|t| t.last_byte_ms_median)
        .fold(1.0, f64::max);
    let n = labels.len().max(1);
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "median ms to first byte (red) and last byte (blue), log",
            ("sans-serif", 16),
        )
        .margin(14)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, (0.05f64..hi * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| crate::plot::label_at(&labels, *x))
        .draw()?;
    for (i, t) in r.timings.iter().enumerate() {
        let x = i as f64;
        chart.draw_series([
            Rectangle::new(
                [(x - 0.3, 0.05), (x, t.first_byte_ms_median)],
                site_color.filled(),
            ),
            Rectangle::new(
                [(x, 0.05), (x + 0.3, t.last_byte_ms_median)],
                alone_color.filled(),
            ),
        ])?;
    }
    root.present()?;
    Ok(())
}

//! `relay-bench clients`: the load client checked against wrk. relay and nginx serve a
//! 4 KiB object (relay from memory, nginx with sendfile), each pinned to the server CPUs;
//! both clients, pinned to the client CPU, take turns against each server for `runs`
//! rounds. Where neither client is the bottleneck, their req/s must agree within 10%: the
//! load client counts what wrk counts. Each row says whether a client was above 90% of its
//! core (then the row measures that client, and the comparison is not judged).

use crate::procs;
use crate::servers::{Nginx, Relay};
use crate::stats;
use crate::wrk::{ClientKind, LoadClient, Outcome};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Options {
    /// The relay binary to measure (a release build).
    #[arg(long)]
    pub relay: PathBuf,
    /// Rounds (each client once against each server per round).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Seconds per run.
    #[arg(long, default_value_t = 6)]
    pub duration: u32,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// CPU for the clients (default: the first this process may use); the servers get the
    /// others.
    #[arg(long)]
    pub client_cpu: Option<usize>,
    /// Accepted for `cargo xtask bench` (unused: the result is printed).
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    #[arg(long)]
    pub command: Option<String>,
}

/// A client above this share of its core is the bottleneck.
const BOUND_PCT: f64 = 90.0;
/// The agreement asked of the two clients where neither is the bottleneck.
const AGREE: f64 = 0.10;
const SIZE: usize = 4096;

pub fn run(o: Options) -> Result<()> {
    let allowed = procs::allowed_cpus();
    let client = o
        .client_cpu
        .or_else(|| allowed.first().copied())
        .context("no CPU")?;
    let servers: Vec<String> = allowed
        .iter()
        .filter(|c| **c != client)
        .map(|c| c.to_string())
        .collect();
    if servers.is_empty() {
        bail!("the clients and the servers need separate CPUs");
    }
    let dir = std::env::temp_dir().join(format!("relay-bench-clients-{}", std::process::id()));
    let origin = dir.join("origin");
    std::fs::create_dir_all(&origin)?;
    let result = measure(&o, &dir, &origin, client, &servers.join(","), servers.len());
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    o: &Options,
    dir: &std::path::Path,
    origin: &std::path::Path,
    client: usize,
    server_cpus: &str,
    workers: usize,
) -> Result<()> {
    let object = origin.join("obj-4k.bin");
    std::fs::write(&object, crate::serve::pattern(SIZE, 1))?;
    let relay_bin = std::fs::canonicalize(&o.relay)
        .with_context(|| format!("relay binary {}", o.relay.display()))?;
    let relay = Relay::start(&relay_bin, dir, origin, server_cpus, workers)?;
    let nginx = Nginx::start(&dir.join("nginx"), origin, server_cpus, workers, true)?;
    let urls = [
        (
            "relay",
            format!("http://{}/obj-4k.bin", relay.addr),
            relay.pid(),
        ),
        (
            "nginx",
            format!("http://{}/obj-4k.bin", nginx.files),
            nginx.pid(),
        ),
    ];
    let cpu = client.to_string();
    let clients = [
        LoadClient::new(ClientKind::Wrk, &cpu, 1, dir)?,
        LoadClient::new(ClientKind::Load, &cpu, 1, dir)?,
    ];
    // Fill relay's memory tier, warm both.
    for (_, url, _) in &urls {
        clients[1].run(url, &object, o.connections, 1)?;
    }
    eprintln!(
        "relay-bench clients: 4 KiB, c={}, {} rounds x {} s; clients on CPU {client}, servers on \
         CPU {server_cpus}",
        o.connections, o.runs, o.duration
    );
    // (server, client) → runs as (req/s, client CPU %, server CPU %)
    let mut got: Vec<Vec<Vec<(f64, f64, f64)>>> = vec![vec![Vec::new(); 2]; 2];
    for round in 0..o.runs {
        for (si, (name, url, pid)) in urls.iter().enumerate() {
            for (ci, c) in clients.iter().enumerate() {
                procs::check_interrupted()?;
                let before = procs::sample_tree(*pid);
                let out: Outcome = c.run(url, &object, o.connections, o.duration)?;
                let server_s = procs::cpu_seconds(&before, &procs::sample_tree(*pid));
                if let Some(why) = out.invalid_reason(SIZE as u64, o.connections) {
                    bail!("{} against {name}: {why}", c.kind().name());
                }
                let secs = out.duration_s.max(1e-9);
                let run = (
                    out.requests as f64 / secs,
                    out.client_cpu_s / secs * 100.0,
                    server_s / secs * 100.0,
                );
                eprintln!(
                    "  round {} {name:<5} {:<16} {:>8.0} req/s, client {:.0}%, server {:.0}%",
                    round + 1,
                    c.kind().name(),
                    run.0,
                    run.1,
                    run.2
                );
                got[si][ci].push(run);
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    drop((relay, nginx));
    println!(
        "\nrelay-bench clients: median req/s at 4 KiB, c={} ({} runs each)",
        o.connections, o.runs
    );
    println!(
        "{:<6} {:>10} {:>7} {:>16} {:>7} {:>9}  verdict",
        "server", "wrk", "wrk CPU", "relay-bench load", "its CPU", "load/wrk"
    );
    let mut failed = false;
    for (si, (name, _, _)) in urls.iter().enumerate() {
        let med = |ci: usize, f: fn(&(f64, f64, f64)) -> f64| {
            stats::Stat::of(&got[si][ci].iter().map(f).collect::<Vec<_>>())
                .map_or(f64::NAN, |s| s.median)
        };
        let (w, wc) = (med(0, |r| r.0), med(0, |r| r.1));
        let (l, lc) = (med(1, |r| r.0), med(1, |r| r.1));
        let ratio = l / w.max(1e-9);
        let verdict = if wc >= BOUND_PCT || lc >= BOUND_PCT {
            "not judged: a client is the bottleneck".to_string()
        } else if (ratio - 1.0).abs() <= AGREE {
            "PASS (within 10%)".to_string()
        } else {
            failed = true;
            format!("FAIL (off by {:.0}%)", (ratio - 1.0) * 100.0)
        };
        println!("{name:<6} {w:>10.0} {wc:>6.0}% {l:>16.0} {lc:>6.0}% {ratio:>9.2}  {verdict}");
    }
    if failed {
        bail!("the two clients disagree where neither is the bottleneck");
    }
    Ok(())
}

//! `cargo xtask bench <which>`: benchmarks. Each benchmark lives in its own module; this
//! file only dispatches.
//!
//! - `serve` ([`crate::bench_serve`]): relay memory hits vs nginx (`sendfile`, page cache)
//!   vs nginx `proxy_cache` hits, wrk pinned to one core and the servers to the others.
//! - `steer` ([`crate::bench_steer`]): XDP paths timed through test_run against a no-op floor.
//! - `hit-ratio`: issue 4's hit-ratio benchmark: seeded Zipf traces replayed against relay's
//!   memory tier, plain LRU and moka at the same byte capacity (no servers, no root).
//! - `disk-send`: the data-plane issue's disk-tier question, "splice (file → pipe → socket)
//!   or READ_FIXED + send: measure both, keep the faster": chunk files in the page cache
//!   sent over loopback TCP by one pinned io_uring thread, received on another core.
//!
//! - `abuse` ([`crate::bench_abuse`]): issue 13's attacks at full scale (pipelining floods,
//!   idle crowds, slowloris, trickled uploads, slow pass-through readers, stalled admin
//!   clients): relay's RSS before, at the peak and after, and a good client's latency.
//! - `cluster`: relays of one site on loopback (`relay-bench cluster`): origin fetches per
//!   chunk under Zipf with 1, 3 and 5 relays, and a peer hit against an origin fetch.
//! - `miss` ([`crate::bench_serve::harness`], like `cluster`, after installing nginx and
//!   Varnish): issue 15's miss path, relay vs nginx `proxy_cache` (`proxy_cache_lock on`)
//!   vs Varnish in front of one local origin that waits `--origin-delay-ms` (20) per answer:
//!   cold misses of 4 KiB, 1 MiB and 64 MiB, a crowd of 500 clients on one cold object,
//!   a Zipf workload larger than relay's memory tier; `target/bench/miss.json` and
//!   `miss.svg`.
//!
//! - `zc-send`: where zero-copy sends start to pay (`server.zerocopy_min_bytes`), measured
//!   through a veth whose peer is down, in a network namespace, where the kernel does not copy them.
//!
//! The last three run the release `relay-bench` subcommand of the same name, passing ARGS
//! through (see its `--help`); the table goes to stdout, every run and parameter to
//! `target/bench/<name>.json`.

use crate::util::{cargo, root, run_cmd};
use anyhow::Result;

/// Arguments passed through to a `relay-bench` subcommand.
#[derive(clap::Args, Default)]
pub struct PassedArgs {
    /// Arguments for the `relay-bench` subcommand.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(clap::Args)]
pub struct Options {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(clap::Subcommand)]
pub enum Which {
    /// relay vs nginx (files and proxy_cache) vs Varnish on this machine: same objects, same
    /// client (relay-bench load, or wrk), pinned; writes a table, target/bench/serve.json and
    /// target/bench/serve.svg.
    Serve(crate::bench_serve::Options),
    /// The load client checked against wrk: req/s at 4 KiB against relay and nginx, both
    /// clients taking turns in one run.
    Clients(PassedArgs),
    /// XDP steering paths timed through BPF_PROG_TEST_RUN, as ratios to a no-op program.
    Steer,
    /// Hit ratios of the memory tier vs plain LRU (and moka) on seeded Zipf traces; writes a
    /// table and target/bench/hit-ratio.json.
    HitRatio(PassedArgs),
    /// Disk-tier chunks (page cache) to loopback TCP: io_uring READ_FIXED + SEND (with and
    /// without the chunk checksum, and SEND_ZC) vs SPLICE; writes a table and
    /// target/bench/disk-send.json.
    DiskSend(PassedArgs),
    /// SEND vs SEND_ZC (plain and registered buffers) by datagram size through a veth
    /// whose peer is down, where the kernel does not copy: where `server.zerocopy_min_bytes` should be
    /// (root); writes a table and target/bench/zc-send.json.
    ZcSend(PassedArgs),
    /// Issue 13's attacks at full scale, each against a fresh relay: RSS baseline, peak and
    /// after, a good client's p50/p99 and failures; writes a table and
    /// target/bench/abuse.json.
    Abuse(crate::bench_abuse::Options),
    /// Relays of one site on loopback (issue 14): origin fetches per chunk under Zipf with
    /// 1, 3 and 5 relays, and time to first and last byte of a peer hit against an origin
    /// fetch; writes a table and target/bench/cluster.json.
    Cluster(PassedArgs),
    /// The miss path (issue 15): relay vs nginx proxy_cache (proxy_cache_lock on) vs
    /// Varnish in front of one delaying local origin: cold misses, a crowd of 500 on one
    /// cold object, a Zipf workload larger than the memory tier; writes a table,
    /// target/bench/miss.json and target/bench/miss.svg (`--quick`: miss-quick.*).
    Miss(PassedArgs),
}

pub fn run(o: &Options) -> Result<()> {
    match &o.which {
        Which::Serve(s) => crate::bench_serve::run(s),
        Which::Clients(c) => crate::bench_serve::clients(&c.args),
        Which::Steer => crate::bench_steer::run(),
        Which::HitRatio(h) => relay_bench("hit-ratio", &h.args),
        Which::DiskSend(d) => relay_bench("disk-send", &d.args),
        Which::ZcSend(z) => relay_bench("zc-send", &z.args),
        Which::Abuse(a) => crate::bench_abuse::run(a),
        Which::Cluster(c) => {
            let mut cmd = crate::bench_serve::harness("cluster", None)?;
            cmd.args(&c.args);
            crate::util::run_cmd(&mut cmd)
        }
        Which::Miss(m) => {
            crate::setup::run(&crate::setup::Options::default())?;
            crate::setup::install(crate::setup::BENCH_PACKAGES)?;
            let mut cmd = crate::bench_serve::harness("miss", None)?;
            cmd.args(&m.args);
            crate::util::run_cmd(&mut cmd)
        }
    }
}

/// Runs the release `relay-bench <which>` (a release build: the loops are what is
/// measured) with its results under `target/bench` and the command that asked for it.
fn relay_bench(which: &str, args: &[String]) -> Result<()> {
    let invoked = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    run_cmd(
        cargo()
            .args(["run", "--locked", "--release", "-p", "relay-benches", "--"])
            .args([which, "--out"])
            .arg(root().join("target/bench"))
            .arg("--command")
            .arg(format!("cargo xtask {invoked}"))
            .args(args),
    )
}

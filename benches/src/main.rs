//! `relay-bench`: relay's side-by-side benchmarks, run through `cargo xtask bench serve`
//! (which installs wrk and nginx, builds the release relay and passes its path here).
//!
//! Layout:
//! - [`serve`]: the `serve` benchmark: objects, servers, warm-up checks, the measuring loop.
//! - [`servers`]: relay, nginx (file server and `proxy_cache`) and Varnish as pinned child processes
//!   stopped on drop; the nginx config the harness writes.
//! - [`wrk`]: one pinned run of the load client (`relay-bench load`, or wrk with its Lua
//!   summary), and the checks on what it reports.
//! - [`procs`]: CPU seconds from `/proc/PID/stat` over a process tree, child guards, signals.
//! - [`stats`], [`report`], [`plot`]: medians, the table, targets, JSON and the SVG plot.
//! - [`machine`]: what the numbers were measured on.
//! - [`hit_ratio`]: the `hit-ratio` benchmark (`cargo xtask bench hit-ratio`): relay's memory
//!   tier vs plain LRU (and moka) on seeded Zipf traces; no servers, no network.
//! - [`disk_send`]: the `disk-send` benchmark (`cargo xtask bench disk-send`): disk-tier
//!   chunks from the page cache to loopback TCP by io_uring READ_FIXED + SEND vs SPLICE.
//! - [`abuse`]: the `abuse` benchmark (`cargo xtask bench abuse`): issue 13's attacks at
//!   full scale (`relay_tests::abuse`), relay's RSS and a good client's latency under each.
//! - [`load`]: `relay-bench load`, the load client `serve` drives the servers with: keep-alive
//!   connections on epoll loops, every head parsed and its framing followed, bodies dropped
//!   in the kernel (`recv(MSG_TRUNC)`), a fraction checked byte for byte.
//! - [`cluster`]: the `cluster` benchmark (`cargo xtask bench cluster`): relays of one site
//!   on loopback, origin fetches per chunk under Zipf with 1, 3 and 5 relays, and a peer hit
//!   against an origin fetch.
//! - [`miss`]: the `miss` benchmark (`cargo xtask bench miss`, issue 15): relay's miss path
//!   against nginx `proxy_cache` (with `proxy_cache_lock`) and Varnish in front of one
//!   delaying origin of its own: cold misses (4 KiB, 1 MiB, 64 MiB), a crowd of 500 clients
//!   on one cold object, and a Zipf workload larger than relay's memory tier.
//! - [`clients`]: `relay-bench clients` (`cargo xtask bench clients`): the load client's
//!   req/s against wrk's at 4 KiB, relay and nginx, in one run.
//! - [`zc_send`]: the `zc-send` benchmark (`cargo xtask bench zc-send`): where `SEND_ZC` starts
//!   to cost less than a copying send, measured through a veth whose peer is down (root).

mod abuse;
mod clients;
mod cluster;
mod disk_send;
mod hit_ratio;
mod load;
mod machine;
mod miss;
mod plot;
mod procs;
mod report;
mod serve;
mod servers;
mod stats;
mod wrk;
mod zc_send;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "relay-bench", about = "relay's side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// relay memory hits vs nginx sendfile vs nginx proxy_cache hits, wrk as the client.
    Serve(serve::Options),
    /// Hit ratios of relay's memory tier vs plain LRU (and moka) on seeded Zipf traces.
    HitRatio(hit_ratio::Options),
    /// Disk-tier chunks to loopback TCP: io_uring READ_FIXED + SEND vs SPLICE (and SEND_ZC).
    DiskSend(disk_send::Options),
    /// SEND vs SEND_ZC (plain and fixed buffers) by size, where the kernel does not copy.
    ZcSend(zc_send::Options),
    /// Issue 13's attacks at full scale: relay's RSS and a good client's latency under each.
    Abuse(abuse::Options),
    /// A closed-loop HTTP/1.1 load client that discards bodies in the kernel (MSG_TRUNC).
    Load(load::Options),
    /// The load client checked against wrk: req/s at 4 KiB against relay and nginx.
    Clients(clients::Options),
    /// Relays of one site sharing one cache: origin fetches per chunk, peer hit vs origin.
    Cluster(cluster::Options),
    /// The miss path: relay vs nginx proxy_cache vs Varnish before one delaying origin.
    Miss(miss::Options),
}

fn main() -> std::process::ExitCode {
    procs::install_signal_handlers();
    let result = match Cli::parse().command {
        Command::Serve(o) => serve::run(o),
        Command::HitRatio(o) => hit_ratio::run(o),
        Command::DiskSend(o) => disk_send::run(o),
        Command::ZcSend(o) => zc_send::run(o),
        Command::Abuse(o) => abuse::run(o),
        Command::Load(o) => load::run(o),
        Command::Clients(o) => clients::run(o),
        Command::Cluster(o) => cluster::run(o),
        Command::Miss(o) => miss::run(o),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

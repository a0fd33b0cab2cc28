//! `relay-bench`: relay's side-by-side benchmarks, run through `cargo xtask bench serve`
//! (which installs wrk and nginx, builds the release relay and passes its path here).
//!
//! Layout:
//! - [`serve`]: the `serve` benchmark: objects, servers, warm-up checks, the measuring loop.
//! - [`servers`]: relay and nginx (file server and `proxy_cache`) as pinned child processes
//!   stopped on drop; the nginx config the harness writes.
//! - [`wrk`]: one pinned wrk run, its Lua summary and the checks on what it reports.
//! - [`procs`]: CPU seconds from `/proc/PID/stat` over a process tree, child guards, signals.
//! - [`stats`], [`report`], [`plot`]: medians, the table, targets, JSON and the SVG plot.
//! - [`machine`]: what the numbers were measured on.
//! - [`hit_ratio`]: the `hit-ratio` benchmark (`cargo xtask bench hit-ratio`): relay's memory
//!   tier vs plain LRU (and moka) on seeded Zipf traces; no servers, no network.

mod hit_ratio;
mod machine;
mod plot;
mod procs;
mod report;
mod serve;
mod servers;
mod stats;
mod wrk;

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
}

fn main() -> std::process::ExitCode {
    procs::install_signal_handlers();
    let result = match Cli::parse().command {
        Command::Serve(o) => serve::run(o),
        Command::HitRatio(o) => hit_ratio::run(o),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

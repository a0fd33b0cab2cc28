//! `cargo xtask bench <which>`: benchmarks. Each benchmark lives in its own module; this
//! file only dispatches.
//!
//! - `serve` ([`crate::bench_serve`]): relay memory hits vs nginx (`sendfile`, page cache)
//!   vs nginx `proxy_cache` hits, wrk pinned to one core and the servers to the others.
//! - `steer` ([`crate::bench_steer`]): XDP paths timed through test_run against a no-op floor.
//! - `hit-ratio` ([`crate::bench_hit_ratio`]): memory tier vs plain LRU on seeded Zipf traces.
//! - `disk-send` ([`crate::bench_disk_send`]): disk-tier chunks to loopback TCP, io_uring
//!   READ_FIXED + SEND vs SPLICE.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Options {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(clap::Subcommand)]
pub enum Which {
    /// relay vs nginx on this machine: same objects, same client (wrk), pinned; writes a
    /// table, target/bench/serve.json and target/bench/serve.svg.
    Serve(crate::bench_serve::Options),
    /// XDP steering paths timed through BPF_PROG_TEST_RUN, as ratios to a no-op program.
    Steer,
    /// Hit ratios of the memory tier vs plain LRU (and moka) on seeded Zipf traces; writes a
    /// table and target/bench/hit-ratio.json.
    HitRatio(crate::bench_hit_ratio::Options),
    /// Disk-tier chunks (page cache) to loopback TCP: io_uring READ_FIXED + SEND (with and
    /// without the chunk checksum, and SEND_ZC) vs SPLICE; writes a table and
    /// target/bench/disk-send.json.
    DiskSend(crate::bench_disk_send::Options),
}

pub fn run(o: &Options) -> Result<()> {
    match &o.which {
        Which::Serve(s) => crate::bench_serve::run(s),
        Which::Steer => crate::bench_steer::run(),
        Which::HitRatio(h) => crate::bench_hit_ratio::run(h),
        Which::DiskSend(d) => crate::bench_disk_send::run(d),
    }
}

//! `cargo xtask bench`: side-by-side benchmarks.
//!
//! Not yet implemented. `bench serve` will run relay (memory hits) against nginx
//! (`sendfile on`, page cache) and nginx `proxy_cache` hits, with wrk pinned to the other
//! core, for 4 KiB / 64 KiB / 1 MiB objects at 64 and 256 connections, 3+ runs each, and
//! write a table, JSON and a plot. `bench steer` will time XDP paths through test_run.

use anyhow::{Result, bail};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Which benchmark: `serve` or `steer`.
    pub which: Option<String>,
}

pub fn run(o: &Options) -> Result<()> {
    bail!(
        "benchmark {:?} is not implemented yet: `bench serve` (relay vs nginx, wrk pinned to \
         the other core, 4 KiB/64 KiB/1 MiB at 64 and 256 connections, medians of 3 runs) \
         and `bench steer` (XDP ns/packet via test_run) land with the data-plane and \
         steering work",
        o.which.as_deref().unwrap_or("serve")
    )
}

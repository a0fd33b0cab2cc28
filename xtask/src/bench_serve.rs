//! `cargo xtask bench serve`: issue 3's side-by-side benchmark, relay vs nginx on this
//! machine.
//!
//! xtask prepares what the measurement needs and hands over to the harness in `benches/`
//! (`relay-bench serve`), which does the measuring and writes the results:
//! 1. `setup` (wrk, nginx-light, curl, taskset come with Debian's util-linux), and Varnish;
//! 2. the release relay with its eBPF object (`build`), unless `--relay-bin` names one;
//! 3. the harness, a release build: it is also the load client (`relay-bench load`).
//!
//! The table goes to stdout; `target/bench/serve.json` and `target/bench/serve.svg`
//! (`serve-quick.*` with `--quick`) hold the full result and the plot.

use crate::util::{cargo, root, run_cmd};
use crate::{build, setup};
use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Smoke test: 1 run of 2 s at 64 connections, no warm-up (results in serve-quick.*).
    #[arg(long)]
    pub quick: bool,
    /// Measured runs per row (default 5).
    #[arg(long)]
    pub runs: Option<u32>,
    /// Seconds per wrk run (default 10).
    #[arg(long)]
    pub duration: Option<u32>,
    /// Keep-alive connection counts, comma-separated (default 64,256).
    #[arg(long, value_delimiter = ',')]
    pub connections: Vec<u32>,
    /// Seconds of unrecorded warm-up per server and size (default 2).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// nginx's file server copying (`sendfile off`) instead of sendfile: results in
    /// serve-nginx-copy.* (see docs/BENCHMARKS.md, "CPU accounting on loopback").
    #[arg(long)]
    pub nginx_copy: bool,
    /// Measure this relay binary instead of building the release one.
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
    /// Also measure this relay binary (the build before a change), alternating with the
    /// others in the same run, with relay's ratios to it.
    #[arg(long)]
    pub relay_before: Option<PathBuf>,
    /// The load client: `load` (relay-bench's own, which drops bodies in the kernel so the
    /// server is the bottleneck; the default) or `wrk`.
    #[arg(long)]
    pub client: Option<String>,
}

pub fn run(o: &Options) -> Result<()> {
    setup::run(&setup::Options::default())?;
    setup::install(setup::BENCH_PACKAGES)?;
    let mut cmd = harness("serve", o.relay_bin.as_ref())?;
    if o.quick {
        cmd.arg("--quick");
    }
    if o.nginx_copy {
        cmd.arg("--nginx-copy");
    }
    if let Some(b) = &o.relay_before {
        cmd.arg("--relay-before").arg(b);
    }
    if let Some(c) = &o.client {
        cmd.arg("--client").arg(c);
    }
    for (flag, value) in [
        ("--runs", o.runs),
        ("--duration", o.duration),
        ("--warmup", o.warmup),
    ] {
        if let Some(v) = value {
            cmd.arg(flag).arg(v.to_string());
        }
    }
    if !o.connections.is_empty() {
        let list: Vec<String> = o.connections.iter().map(|c| c.to_string()).collect();
        cmd.arg("--connections").arg(list.join(","));
    }
    run_cmd(&mut cmd)
}

/// `cargo xtask bench clients [ARGS]`: `relay-bench clients` against the tree's release
/// relay, with these arguments.
pub fn clients(args: &[String]) -> Result<()> {
    setup::run(&setup::Options::default())?;
    let mut cmd = harness("clients", None)?;
    cmd.args(args);
    run_cmd(&mut cmd)
}

/// The harness command `relay-bench <which>` (a release build: it is also the load
/// client), with the relay to measure (`relay_bin`, else
/// the release build with its eBPF object, built now), the output directory and the command
/// line this run was asked with.
pub(crate) fn harness(which: &str, relay_bin: Option<&PathBuf>) -> Result<Command> {
    let relay = match relay_bin {
        Some(p) => p.clone(),
        None => {
            build::run(&build::Options::default())?;
            target_dir().join("release/relay")
        }
    };
    // Release: the harness is also the load client (`relay-bench load`), whose loop is
    // measured against the servers'.
    run_cmd(cargo().args(["build", "--locked", "--release", "-p", "relay-benches"]))?;
    let invoked = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut cmd = Command::new(target_dir().join("release/relay-bench"));
    cmd.current_dir(root())
        .arg(which)
        .arg("--relay")
        .arg(&relay)
        .arg("--out")
        .arg(root().join("target/bench"))
        .arg("--command")
        .arg(format!("cargo xtask {invoked}"));
    Ok(cmd)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root, where
/// xtask runs cargo) or `target/`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root().join(d),
        None => root().join("target"),
    }
}

//! `cargo xtask bench hit-ratio [ARGS]`: issue 4's hit-ratio benchmark. Runs the release
//! `relay-bench hit-ratio` (seeded Zipf traces replayed against relay's memory tier, plain
//! LRU and moka at the same byte capacity; no servers, no root), passing ARGS through
//! (`--requests`, `--seed`, `--alpha`, `--capacity-mib`, ...; see `--help`).
//! The table goes to stdout, every figure and parameter to `target/bench/hit-ratio.json`.

use crate::util::{cargo, root, run_cmd};
use anyhow::Result;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Arguments for `relay-bench hit-ratio`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(o: &Options) -> Result<()> {
    let invoked = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    run_cmd(
        cargo()
            .args(["run", "--locked", "--release", "-p", "relay-benches", "--"])
            .args(["hit-ratio", "--out"])
            .arg(root().join("target/bench"))
            .arg("--command")
            .arg(format!("cargo xtask {invoked}"))
            .args(&o.args),
    )
}

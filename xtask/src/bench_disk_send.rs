//! `cargo xtask bench disk-send [ARGS]`: the data-plane issue's disk-tier question, "splice
//! (file → pipe → socket) or READ_FIXED + send: measure both, keep the faster". Runs the
//! release `relay-bench disk-send` (chunk files in the page cache sent over loopback TCP by
//! one pinned io_uring thread, received on another core; no servers, no root), passing ARGS
//! through (`--runs`, `--seconds`, `--connections`, `--sizes-kib`, `--methods`, `--cold`,
//! ...; see `--help`). A release build: the sender's loop and the checksums are what is
//! measured. The table goes to stdout, every run and parameter to
//! `target/bench/disk-send.json`.

use crate::util::{cargo, root, run_cmd};
use anyhow::Result;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Arguments for `relay-bench disk-send`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(o: &Options) -> Result<()> {
    let invoked = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    run_cmd(
        cargo()
            .args(["run", "--locked", "--release", "-p", "relay-benches", "--"])
            .args(["disk-send", "--out"])
            .arg(root().join("target/bench"))
            .arg("--command")
            .arg(format!("cargo xtask {invoked}"))
            .args(&o.args),
    )
}

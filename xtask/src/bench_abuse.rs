//! `cargo xtask bench abuse`: issue 13's table. Every attack of `relay_tests::abuse`
//! (pipelining flood, idle connections, slowloris, trickled uploads, slow readers of
//! passed-through bodies, stalled admin clients) at full scale against a fresh relay each,
//! with its RSS before, at the peak and after, and a good client's latency meanwhile.
//!
//! xtask builds what is measured and hands over to the harness in `benches/` (`relay-bench
//! abuse`), which runs the attacks and writes the results:
//! 1. the release relay with its eBPF object (`build`), unless `--relay-bin` names one (an
//!    older build, to compare before and after a change);
//! 2. the harness (a release build, shared with `bench serve`).
//!
//! The table goes to stdout, every figure to `target/bench/abuse.json` (`abuse-quick.json`
//! with `--quick`). Attacking connections come from 127.0.1.0 and up (loopback only); the
//! harness raises its descriptor limit to the hard one (10,000 idle connections need it).

use crate::bench_serve::harness;
use crate::util::run_cmd;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Default)]
pub struct Options {
    /// The tests' scale and settings (hundreds of connections, 16 MiB tiers, 4 s holds).
    #[arg(long)]
    pub quick: bool,
    /// Only these attacks, comma-separated: flood, idle, slowloris, uploads, pass-readers,
    /// admin.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seconds the attackers stay (default 12; 4 with --quick).
    #[arg(long)]
    pub hold: Option<u64>,
    /// Measure this relay binary instead of building the release one.
    #[arg(long)]
    pub relay_bin: Option<PathBuf>,
}

pub fn run(o: &Options) -> Result<()> {
    let mut cmd = harness("abuse", o.relay_bin.as_ref())?;
    if o.quick {
        cmd.arg("--quick");
    }
    if !o.only.is_empty() {
        cmd.arg("--only").arg(o.only.join(","));
    }
    if let Some(h) = o.hold {
        cmd.arg("--hold").arg(h.to_string());
    }
    run_cmd(&mut cmd)
}

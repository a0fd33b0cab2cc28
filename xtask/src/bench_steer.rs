//! `cargo xtask bench steer`: builds the eBPF object and runs `relay-steer`'s `bench_steer`
//! example (release), which times `relay_steer`'s paths through `BPF_PROG_TEST_RUN` next to
//! the no-op program `relay_noop` and prints a table with the ratio to that floor, then
//! measures packets per second across a veth pair between two namespaces it creates
//! (10.200.240.0/24), with the program on the receiving end in native and skb mode.
//! Needs root. xtask itself stays free of aya: the measuring code lives with the loader.

use crate::build;
use crate::util::{cargo, run_cmd};
use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    if !crate::util::is_root() {
        bail!("bench steer loads XDP programs: run it as root");
    }
    let obj = build::ebpf()?;
    run_cmd(cargo().env("RELAY_EBPF_OBJECT", &obj).args([
        "run",
        "--locked",
        "--release",
        "-p",
        "relay-steer",
        "--example",
        "bench_steer",
    ]))
}

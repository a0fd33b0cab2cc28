//! `cargo xtask test`: what CI runs. fmt, clippy (userspace and eBPF), then every unit and
//! integration test with the eBPF object embedded (the debug binary's Debian package built
//! first for `tests/tests/package.rs`, `RELAY_DEB`), and the thousand-relay membership
//! simulation in release. Root-only tests (network namespaces,
//! XDP) run when root; otherwise they print `SKIPPED: <reason>`, collected in the summary.

use crate::bench_serve::target_dir;
use crate::build;
use crate::run::demo_content;
use crate::setup;
use crate::util::{cargo, is_root, root, run_cmd};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Instant;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Skip fmt and clippy (tests only).
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments passed to the test harness (e.g. a test name filter).
    #[arg(last = true)]
    pub harness: Vec<String>,
}

pub fn run(o: &Options) -> Result<()> {
    let started = Instant::now();
    setup::run(&setup::Options::default())?;
    let obj = build::ebpf()?;
    if !o.no_lint {
        run_cmd(cargo().args(["fmt", "--all", "--check"]))?;
        run_cmd(
            build::nightly_cargo()
                .current_dir(root().join("ebpf/xdp"))
                .args(["fmt", "--check"]),
        )?;
        run_cmd(
            cargo()
                .env("RELAY_EBPF_OBJECT", &obj)
                .args(["clippy", "--locked", "--workspace", "--all-targets", "--"])
                .args(["-D", "warnings"]),
        )?;
        run_cmd(
            build::nightly_cargo()
                .current_dir(root().join("ebpf/xdp"))
                .args(["clippy", "--release", "--locked", "--", "-D", "warnings"]),
        )?;
    }
    // The integration tests start the relay binary (also inside network namespaces).
    run_cmd(
        cargo()
            .env("RELAY_EBPF_OBJECT", &obj)
            .args(["build", "--locked", "-p", "relay"]),
    )?;
    demo_content(&root().join("var/demo"))?;
    // The Debian package of the binary under test, for tests/tests/package.rs.
    let deb = crate::package::run(&crate::package::Options {
        binary: Some(target_dir().join("debug/relay")),
        out: Some(target_dir().join("package-test")),
    })?;
    if !is_root() {
        eprintln!("xtask: not root: namespace and XDP tests will report themselves skipped");
    }
    let skipped = harness(o, &obj, &deb)?;
    // The membership simulation at the size the design is projected to (a thousand relays):
    // too slow unoptimised for the debug harness, about 40 s in release.
    if o.harness.is_empty() {
        run_cmd(cargo().args([
            "test",
            "--locked",
            "--release",
            "-p",
            "relay-cluster",
            "--features",
            "large-sim",
            "--test",
            "sim",
            "--",
            "a_thousand_relays",
            "--nocapture",
        ]))?;
    }
    eprintln!(
        "xtask: test passed in {:.0?}; {} skipped",
        started.elapsed(),
        skipped.len()
    );
    for s in &skipped {
        eprintln!("xtask:   {s}");
    }
    Ok(())
}

/// Runs `cargo test` over the workspace, echoing its output and collecting SKIPPED lines.
fn harness(o: &Options, obj: &std::path::Path, deb: &std::path::Path) -> Result<Vec<String>> {
    let mut cmd = cargo();
    cmd.env("RELAY_EBPF_OBJECT", obj)
        .env("RELAY_DEB", deb)
        // The binary built above: in `$CARGO_TARGET_DIR` when set, not a stale `target/debug`.
        .env("RELAY_BIN", target_dir().join("debug/relay"))
        .args(["test", "--locked", "--workspace", "--", "--nocapture"])
        .args(&o.harness)
        .stderr(Stdio::piped());
    eprintln!("xtask: $ {cmd:?}");
    let mut child = cmd.spawn().context("starting cargo test")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut skipped = Vec::new();
    let mut err = std::io::stderr();
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        let _ = writeln!(err, "{line}");
        if let Some(pos) = line.find("SKIPPED:") {
            skipped.push(line[pos..].to_string());
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(skipped)
}

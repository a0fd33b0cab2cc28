//! `cargo xtask fuzz [--target T] [--seconds N]`: runs one cargo-fuzz target for a bounded
//! time and reports what it found.
//!
//! - cargo-fuzz is installed once per machine (`cargo install cargo-fuzz --locked`) under
//!   `target/tools/cargo-fuzz`, like bpf-linker; libFuzzer needs the `nightly` toolchain.
//! - The targets live in their crate's `fuzz/` directory (each its own workspace, outside the
//!   main one); [`TARGETS`] says which directory holds which target.
//! - Built with debug assertions, so arithmetic overflow is a crash, not a silent wrap.
//! - The growing corpus goes to `target/fuzz/corpus/<T>`, crash artifacts to
//!   `target/fuzz/artifacts/<T>/`; the committed seeds in `<crate>/fuzz/seeds/<T>` are read,
//!   never written. A crash fails the command and names the artifact to minimise
//!   (`cargo +nightly fuzz tmin <T> <artifact>` in the target's directory).

use crate::util::{cargo, output, root, run_cmd};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Every fuzz target and the directory (relative to the workspace root) that holds it.
pub const TARGETS: &[(&str, &str)] = &[
    ("parse_request", "relay/proto/fuzz"),
    ("parse_range", "relay/proto/fuzz"),
    ("response_head", "relay/cache/fuzz"),
];

#[derive(clap::Args)]
pub struct Options {
    /// Fuzz target: parse_request, parse_range or response_head.
    #[arg(long, default_value = "parse_request")]
    pub target: String,
    /// Stop after this many seconds (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Parallel fuzzing jobs (libFuzzer's -fork); 1 runs in-process.
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
}

pub fn run(o: &Options) -> Result<()> {
    let Some(&(name, dir)) = TARGETS.iter().find(|(t, _)| *t == o.target) else {
        let known: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
        bail!("unknown fuzz target {:?}; known: {known:?}", o.target);
    };
    let cargo_fuzz = cargo_fuzz()?;
    let out = fuzz_target_dir();
    let corpus = out.join("corpus").join(name);
    let artifacts = out.join("artifacts").join(name);
    let seeds = root().join(dir).join("seeds").join(name);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let crate_dir = root()
        .join(dir)
        .parent()
        .context("fuzz dir has a parent")?
        .to_path_buf();

    // `cargo +nightly fuzz`, with cargo-fuzz first on PATH.
    let mut cmd = crate::build::nightly_cargo_with(cargo_fuzz);
    cmd.current_dir(&crate_dir)
        .args([
            "fuzz",
            "run",
            "--release",
            "--debug-assertions",
            "--target-dir",
        ])
        .arg(out.join("build"))
        .arg(name)
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={}", o.seconds))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    if o.jobs > 1 {
        cmd.arg(format!("-fork={}", o.jobs));
    }
    let started = std::time::SystemTime::now();
    let result = run_cmd(&mut cmd);
    // Artifacts written by this run (older ones stay until removed).
    let crashes: Vec<PathBuf> = std::fs::read_dir(&artifacts)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= started)
        })
        .map(|e| e.path())
        .collect();
    let inputs = std::fs::read_dir(&corpus)?.count();
    eprintln!(
        "xtask: fuzz {name}: corpus {} ({inputs} inputs), artifacts {} ({} new)",
        corpus.display(),
        artifacts.display(),
        crashes.len()
    );
    for c in &crashes {
        eprintln!("xtask:   artifact {}", c.display());
    }
    result.with_context(|| {
        format!(
            "fuzz target {name} failed; minimise with `cargo +nightly fuzz tmin {name} <artifact>` in {}",
            crate_dir.display()
        )
    })
}

/// `$CARGO_TARGET_DIR/fuzz`, else `target/fuzz`: one build directory for all fuzz workspaces.
fn fuzz_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("fuzz")
}

/// The directory holding `cargo-fuzz`, installing it there once per machine.
fn cargo_fuzz() -> Result<PathBuf> {
    let prefix = root().join("target/tools/cargo-fuzz");
    let bin_dir = prefix.join("bin");
    let bin = bin_dir.join("cargo-fuzz");
    if output(Command::new(&bin).args(["fuzz", "--version"])).is_some() {
        return Ok(bin_dir);
    }
    eprintln!(
        "xtask: installing cargo-fuzz into {} (once per machine)",
        prefix.display()
    );
    run_cmd(
        cargo()
            .args(["install", "cargo-fuzz", "--locked", "--root"])
            .arg(&prefix),
    )?;
    output(Command::new(&bin).args(["fuzz", "--version"]))
        .context("cargo-fuzz was installed but does not run")?;
    Ok(bin_dir)
}

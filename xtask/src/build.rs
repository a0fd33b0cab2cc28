//! `cargo xtask build`: the eBPF object (nightly, bpfel-unknown-none) and the relay binary
//! (stable) with the object embedded, so a deployment is one binary plus its config.

use crate::setup;
use crate::util::{cargo, root, run_cmd};
use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Build the relay binary in debug mode instead of release.
    #[arg(long)]
    pub debug: bool,
}

/// Builds everything; returns the path of the relay binary.
pub fn run(o: &Options) -> Result<PathBuf> {
    setup::run(&setup::Options::default())?;
    let obj = ebpf()?;
    let mut cmd = cargo();
    cmd.env("RELAY_EBPF_OBJECT", &obj)
        .args(["build", "--locked", "-p", "relay"]);
    if !o.debug {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    let profile = if o.debug { "debug" } else { "release" };
    Ok(root().join("target").join(profile).join("relay"))
}

/// Builds the XDP programs; returns the object's path.
pub fn ebpf() -> Result<PathBuf> {
    let dir = root().join("ebpf/xdp");
    run_cmd(
        nightly_cargo()
            .current_dir(&dir)
            .args(["build", "--release", "--locked"]),
    )?;
    Ok(ebpf_object())
}

/// Where the eBPF build leaves its object.
pub fn ebpf_object() -> PathBuf {
    root().join("ebpf/xdp/target/bpfel-unknown-none/release/relay-xdp")
}

/// `cargo` of the nightly toolchain, with bpf-linker on PATH and none of the stable
/// toolchain's environment leaking in.
pub fn nightly_cargo() -> Command {
    nightly_cargo_with(setup::bpf_linker_bin_dir())
}

/// `cargo` of the nightly toolchain with `first` ahead of the PATH, and none of the stable
/// toolchain's environment (RUSTC, CARGO_TARGET_DIR, ...) leaking in.
pub fn nightly_cargo_with(first: PathBuf) -> Command {
    let mut paths = vec![first];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"])
        .env("PATH", std::env::join_paths(paths).unwrap_or_default());
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

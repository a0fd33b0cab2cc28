//! `cargo xtask setup`: idempotent; installs only what this machine lacks.
//!
//! - `rust-src` for the `nightly` toolchain (the eBPF crate builds `core` itself);
//! - `bpf-linker`, built once per machine against the nightly's own libLLVM and cached
//!   under `target/tools/bpf-linker` (Debian ships no LLVM of rustc's major version);
//! - the Debian packages tests and benchmarks use.

use crate::util::{cargo, is_root, output, root, run_cmd};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Debian packages the tests and benchmarks call.
const PACKAGES: &[&str] = &[
    "curl",
    "wrk",
    "nginx-light",
    "iproute2",
    "python3",
    "nodejs",
    // The system roots an https origin is verified against when it names no CA file.
    "ca-certificates",
    // The name server an origin named in DNS is looked up through in tests (loopback only).
    "dnsmasq-base",
    // `cargo xtask package`: strip and objdump (dpkg-deb is dpkg's own).
    "binutils",
    // systemd-socket-activate: the socket-activation test starts relay the way systemd does.
    "systemd",
];

#[derive(clap::Args, Default)]
pub struct Options {}

pub fn run(_: &Options) -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    packages()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

/// Directory holding the bpf-linker binary (put first on PATH for the eBPF build).
pub fn bpf_linker_bin_dir() -> PathBuf {
    tools_prefix().join("bin")
}

fn tools_prefix() -> PathBuf {
    root().join("target/tools/bpf-linker")
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context("the `nightly` toolchain is required for the eBPF build (rustup toolchain list)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    let prefix = tools_prefix();
    let bin = prefix.join("bin/bpf-linker");
    if output(Command::new(&bin).arg("--version")).is_some() {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("cannot ask the nightly rustc for its sysroot")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let so = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let major = so
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    if major.parse::<u32>().is_err() {
        bail!("cannot read the LLVM major version from {so}");
    }
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib)?;
    // One link for the link step (-lLLVM), one for the loader (rpath to this lib/).
    for name in ["libLLVM.so", so.as_str()] {
        let link = plib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&so), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!("xtask: building bpf-linker against {so} (once per machine, ~2 min)");
    run_cmd(
        cargo()
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--locked", "--no-default-features"])
            .args(["--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(&prefix),
    )?;
    output(Command::new(&bin).arg("--version")).context("bpf-linker was built but does not run")?;
    Ok(())
}

/// Debian packages only the benchmarks call (not installed for the tests).
pub const BENCH_PACKAGES: &[&str] = &["varnish"];

fn packages() -> Result<()> {
    install(PACKAGES)
}

/// Installs those of `wanted` this machine lacks (apt-get, as root).
pub fn install(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; run `cargo xtask setup` as root (apt-get install)"
        );
    }
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

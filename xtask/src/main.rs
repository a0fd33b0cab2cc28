//! relay's build pipeline: `cargo xtask <command>`.
//!
//! Layout: one module per subcommand ([`setup`], [`build`], [`run`], [`test`], [`bench`],
//! [`fuzz`], [`package`]); [`util`] holds the process helpers they share. xtask orchestrates what plain
//! cargo cannot: toolchain setup, the nightly eBPF build, root-only tests, benchmarks and
//! fuzzing.

mod bench;
mod bench_abuse;
mod bench_serve;
mod bench_steer;
mod build;
mod fuzz;
mod package;
mod run;
mod setup;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "relay's build pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks: rust-src (nightly), bpf-linker, Debian packages.
    Setup(setup::Options),
    /// Build the eBPF object and the relay binary with the object embedded.
    Build(build::Options),
    /// Build and start a relay on config/relay.toml with generated demo content.
    Run(run::Options),
    /// fmt, clippy (userspace and eBPF), and every unit and integration test.
    Test(test::Options),
    /// Benchmarks (relay vs nginx on the same machine).
    Bench(bench::Options),
    /// Run a cargo-fuzz target for a while (installs cargo-fuzz once; needs `nightly`).
    Fuzz(fuzz::Options),
    /// Build the Debian package (target/package/relay_<version>_<arch>.deb): the release
    /// binary with XDP embedded, the systemd unit, /etc/relay/relay.toml, manual pages.
    Package(package::Options),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup(o) => setup::run(&o),
        Command::Build(o) => build::run(&o).map(|_| ()),
        Command::Run(o) => run::run(&o),
        Command::Test(o) => test::run(&o),
        Command::Bench(o) => bench::run(&o),
        Command::Fuzz(o) => fuzz::run(&o),
        Command::Package(o) => package::run(&o).map(|_| ()),
    }
}

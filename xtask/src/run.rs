//! `cargo xtask run`: builds, fills the demo origin, and starts a relay on the documented
//! default config (`config/relay.toml`), which serves with nothing else running.

use crate::build;
use crate::util::root;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Config file (default: config/relay.toml).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

pub fn run(o: &Options) -> Result<()> {
    let bin = build::run(&build::Options::default())?;
    let demo = root().join("var/demo");
    demo_content(&demo)?;
    let config = o
        .config
        .clone()
        .unwrap_or_else(|| root().join("config/relay.toml"));
    eprintln!("xtask: demo objects in {}", demo.display());
    eprintln!("xtask: try:  curl -sv http://127.0.0.1:8080/hello.txt");
    eprintln!("xtask:       curl -s http://127.0.0.1:8080/demo-4mib.bin | sha256sum");
    eprintln!("xtask: stop with Ctrl-C");
    let status = Command::new(&bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    anyhow::ensure!(status.success(), "relay exited with {status}");
    Ok(())
}

/// Writes the demo objects (idempotent): a small text file and deterministic binaries
/// spanning several chunks, so misses, hits and chunk boundaries can be seen with curl.
pub fn demo_content(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let hello = b"Hello from relay: this object came through the cache.\n";
    write_if_changed(&dir.join("hello.txt"), hello)?;
    for (name, len) in [("demo-64kib.bin", 64 << 10), ("demo-4mib.bin", 4 << 20)] {
        write_if_changed(&dir.join(name), &pattern(len))?;
    }
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift), so a wrong offset shows as a wrong byte.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

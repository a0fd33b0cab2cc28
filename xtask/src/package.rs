//! `cargo xtask package`: relay as a Debian package, built with `dpkg-deb` from the files
//! the repository keeps for it (`deploy/`): the release binary with the XDP programs
//! embedded and its debug information stripped, the systemd unit, `/etc/relay/relay.toml`
//! (a conffile that validates as installed), the manual pages `relay man` generates from
//! the command line, the config reference and README, and the maintainer scripts (a
//! `relay` system user; the unit is not started until the operator has set the origin).
//! `cargo xtask test` packages the debug binary it tests, and `tests/tests/package.rs`
//! installs that package in a root of its own and checks it.

use crate::bench_serve::target_dir;
use crate::build;
use crate::util::{output, root, run_cmd};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Package this relay binary instead of building the release one (the tests package
    /// the debug build they test).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Where the package goes (default: target/package).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Builds the package; returns its path.
pub fn run(o: &Options) -> Result<PathBuf> {
    let binary = match &o.binary {
        Some(b) => b.clone(),
        None => build::run(&build::Options::default())?,
    };
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("package"));
    let stage = out.join("root");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let repo = root();
    let bin = place(&binary, &stage, "usr/bin/relay", 0o755)?;
    // The DWARF is most of a Rust binary; the symbols stay (backtraces, perf).
    run_cmd(Command::new("strip").arg("--strip-debug").arg(&bin))?;
    place(
        &repo.join("deploy/relay.service"),
        &stage,
        "lib/systemd/system/relay.service",
        0o644,
    )?;
    place(
        &repo.join("deploy/relay.socket"),
        &stage,
        "lib/systemd/system/relay.socket",
        0o644,
    )?;
    place(
        &repo.join("deploy/relay.toml"),
        &stage,
        "etc/relay/relay.toml",
        0o644,
    )?;
    let doc = "usr/share/doc/relay";
    place(
        &repo.join("config/relay.toml"),
        &stage,
        &format!("{doc}/relay.toml.example"),
        0o644,
    )?;
    place(
        &repo.join("README.md"),
        &stage,
        &format!("{doc}/README.md"),
        0o644,
    )?;
    write(
        &stage,
        &format!("{doc}/copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: relay\n\nFiles: *\nCopyright: relay developers\nLicense: Apache-2.0\n \
         On Debian systems the full text of the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    )?;
    let man = stage.join("usr/share/man/man1");
    run_cmd(Command::new(&bin).arg("man").arg("--out").arg(&man))?;
    for page in std::fs::read_dir(&man)? {
        run_cmd(Command::new("gzip").args(["-9n"]).arg(page?.path()))?;
    }
    // (Directories the unit's CacheDirectory/LogsDirectory make are left to systemd.)
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))
        .context("dpkg --print-architecture")?
        .trim()
        .to_string();
    let control = control(&bin, &stage, version, &arch)?;
    write(&stage, "DEBIAN/control", &control, 0o644)?;
    write(&stage, "DEBIAN/conffiles", "/etc/relay/relay.toml\n", 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        place(
            &repo.join("deploy/debian").join(script),
            &stage,
            &format!("DEBIAN/{script}"),
            0o755,
        )?;
    }
    write(&stage, "DEBIAN/md5sums", &md5sums(&stage)?, 0o644)?;
    let deb = out.join(format!("relay_{version}_{arch}.deb"));
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    eprintln!("xtask: {}", deb.display());
    Ok(deb)
}

/// Copies `from` to `stage/to` with `mode`; the path placed.
fn place(from: &Path, stage: &Path, to: &str, mode: u32) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dest = stage.join(to);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, &dest)
        .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
    Ok(dest)
}

/// Writes `text` to `stage/to` with `mode`.
fn write(stage: &Path, to: &str, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dest = stage.join(to);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The control file: what the binary links against (the newest glibc symbol version it
/// needs, libgcc_s when it uses it) as dependencies, and the installed size.
fn control(bin: &Path, stage: &Path, version: &str, arch: &str) -> Result<String> {
    let symbols = output(Command::new("objdump").arg("-T").arg(bin)).context("objdump -T")?;
    let glibc = symbols
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .context("the binary names no glibc symbol version")?;
    let needed = output(Command::new("objdump").arg("-p").arg(bin)).context("objdump -p")?;
    let mut depends = format!("libc6 (>= {}.{})", glibc.0, glibc.1);
    if needed.contains("libgcc_s.so") {
        depends.push_str(", libgcc-s1");
    }
    let kib = output(Command::new("du").args(["-sk"]).arg(stage))
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .context("du -sk")?;
    let mut c = String::new();
    let _ = write!(
        c,
        "Package: relay\nVersion: {version}\nArchitecture: {arch}\n\
         Maintainer: relay developers <relay@example.invalid>\nInstalled-Size: {kib}\n\
         Depends: {depends}\nRecommends: ca-certificates\nSection: net\nPriority: optional\n\
         Description: caching edge relay for Linux edge servers\n \
         relay serves HTTP/1.1 from a memory and disk chunk cache, one io_uring event\n \
         loop per core, fetches misses once per chunk from the nearest relay of its site\n \
         or the origin, and steers client flows with XDP programs embedded in the binary.\n"
    );
    if !c.is_ascii() {
        bail!("the control file must be ASCII");
    }
    Ok(c)
}

/// `DEBIAN/md5sums`: every file but the conffiles and the control area.
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![stage.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            let rel = p.strip_prefix(stage)?.to_path_buf();
            if rel.starts_with("DEBIAN") || rel.starts_with("etc") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(rel);
            }
        }
    }
    files.sort();
    let sums = output(Command::new("md5sum").args(&files).current_dir(stage)).context("md5sum")?;
    Ok(sums)
}

//! Build facts for `relay --version`: the git revision the binary was built from
//! (`RELAY_GIT_REVISION`, "unknown" outside a git checkout).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RELAY_GIT_REVISION={revision}");
    // Built again when HEAD moves: HEAD itself, the branch it names, the packed refs (only
    // files that exist: a missing one would make every build run this again).
    let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) else {
        return;
    };
    let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(dir.join(branch));
    }
    for path in watched.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

//! What the numbers were measured on: CPU model, cores, kernel, OS, memory, tool versions,
//! and the load average (a busy machine makes noisy numbers).

use serde::Serialize;
use std::path::Path;
use std::process::Command;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub os: String,
    pub memory_gib: f64,
    pub nginx: String,
    pub wrk: String,
    pub relay: String,
    /// The relay binary measured (`--relay-bin`, or the tree's release build).
    pub relay_bin: String,
    /// `git rev-parse --short HEAD` of the working tree the harness ran in, and whether it
    /// had uncommitted changes (the relay binary is built from it unless one was given).
    pub tree_git: String,
    pub loadavg_start: String,
}

impl Machine {
    pub fn probe(relay_bin: &Path) -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = field(&cpuinfo, "model name")
            .or_else(|| field(&cpuinfo, "Hardware"))
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "unknown OS".into());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
        // nginx -v and wrk -v print to stderr / stdout and wrk exits 1: take either stream.
        let nginx = first_line(Command::new("nginx").arg("-v"))
            .map(|l| l.trim_start_matches("nginx version: ").to_string())
            .unwrap_or_else(|| "nginx (version unknown)".into());
        let wrk = first_line(Command::new("wrk").arg("-v"))
            .map(|l| l.split("Copyright").next().unwrap_or(&l).trim().to_string())
            .unwrap_or_else(|| "wrk (version unknown)".into());
        let relay = first_line(Command::new(relay_bin).arg("--version"))
            .filter(|l| l.starts_with("relay"))
            .unwrap_or_else(|| "relay (version unknown)".into());
        let rev = first_line(Command::new("git").args(["rev-parse", "--short", "HEAD"]));
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        let tree_git = match rev {
            Some(r) if dirty => format!("{r} + uncommitted changes"),
            Some(r) => r,
            None => "unknown".into(),
        };
        Machine {
            cpu_model,
            cores,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os,
            memory_gib,
            nginx,
            wrk,
            relay,
            relay_bin: relay_bin.display().to_string(),
            tree_git,
            loadavg_start: loadavg(),
        }
    }

    /// One line without the client tools (benchmarks that run neither nginx nor wrk).
    pub fn line_relay_only(&self) -> String {
        format!(
            "{}, {} cores, {:.0} GiB, {}, Linux {}; relay {} ({}; tree {}); load {}",
            self.cpu_model,
            self.cores,
            self.memory_gib,
            self.os,
            self.kernel,
            self.relay.trim_start_matches("relay ").trim(),
            self.relay_bin,
            self.tree_git,
            self.loadavg_start
        )
    }

    /// One line for the table header and the plot title.
    pub fn line(&self) -> String {
        format!(
            "{}, {} cores, {:.0} GiB, {}, Linux {}; {}, {}; relay {} ({}; tree {})",
            self.cpu_model,
            self.cores,
            self.memory_gib,
            self.os,
            self.kernel,
            self.nginx,
            self.wrk,
            self.relay.trim_start_matches("relay ").trim(),
            self.relay_bin,
            self.tree_git
        )
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()?
        .trim()
        .to_string();
    (!line.is_empty()).then_some(line)
}

//! One load-client run, pinned with taskset, and the checks on what it reports. The client
//! is `relay-bench load` (this binary: bodies dropped in the kernel, so the server is the
//! bottleneck; see `load`) or wrk.
//!
//! Both print one `RELAYBENCH key=value ...` line: exact request and byte counts, every
//! error counter and latency percentiles in microseconds. For wrk, a Lua `done()` hook
//! prints it (no rounding as in wrk's text); only `done()` is defined, so wrk keeps its
//! fast path (no per-request Lua).

use crate::procs::{self, Guard};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"-- written by relay-bench: one summary line for the harness to parse
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RELAYBENCH requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"#;

/// Which load client a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// `relay-bench load`: bodies dropped in the kernel, a fraction checked.
    Load,
    Wrk,
}

impl ClientKind {
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Load => "relay-bench load",
            ClientKind::Wrk => "wrk",
        }
    }
}

/// Share of the bodies `relay-bench load` reads and compares with the object.
pub const VERIFY_SHARE: f64 = 0.01;

/// How the load client is started.
pub struct LoadClient {
    kind: ClientKind,
    cpus: String,
    threads: u32,
    script: PathBuf,
}

/// wrk's socket and status error counters.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    /// Responses with a status outside 2xx/3xx.
    pub status: u64,
}

/// What one wrk run reported.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub requests: u64,
    /// Bytes read off the sockets (heads and bodies).
    pub wire_bytes: u64,
    /// How long wrk measured, and how long it was asked to.
    pub duration_s: f64,
    pub requested_s: f64,
    pub errors: Errors,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// CPU seconds wrk itself used (user + system).
    pub client_cpu_s: f64,
}

impl LoadClient {
    /// A `kind` client on `cpus`; writes wrk's Lua script into `dir`.
    pub fn new(kind: ClientKind, cpus: &str, threads: u32, dir: &Path) -> Result<LoadClient> {
        let script = dir.join("summary.lua");
        std::fs::write(&script, SCRIPT).with_context(|| format!("writing {}", script.display()))?;
        Ok(LoadClient {
            kind,
            cpus: cpus.to_string(),
            threads,
            script,
        })
    }

    pub fn kind(&self) -> ClientKind {
        self.kind
    }

    /// The command line, for the record.
    pub fn describe(&self, conns: u32, secs: u32) -> String {
        match self.kind {
            ClientKind::Wrk => format!(
                "taskset -c {} wrk -t{} -c{conns} -d{secs}s --timeout 5s --latency -s summary.lua URL",
                self.cpus, self.threads
            ),
            ClientKind::Load => format!(
                "taskset -c {} relay-bench load -t{} -c{conns} -d{secs} --timeout 5 --verify {VERIFY_SHARE} --expect OBJECT URL",
                self.cpus, self.threads
            ),
        }
    }

    /// Runs the client against `url` (whose body is the file `expect`); an error if it
    /// cannot run, fails, or prints no summary.
    pub fn run(&self, url: &str, expect: &Path, conns: u32, secs: u32) -> Result<Outcome> {
        let threads = self.threads.min(conns).max(1);
        let mut cmd = match self.kind {
            ClientKind::Wrk => {
                let mut cmd = procs::pinned(&self.cpus, "wrk");
                cmd.arg(format!("-t{threads}"))
                    .arg(format!("-c{conns}"))
                    .arg(format!("-d{secs}s"))
                    .args(["--timeout", "5s", "--latency", "-s"])
                    .arg(&self.script);
                cmd
            }
            ClientKind::Load => {
                let exe = std::env::current_exe().context("this binary's path")?;
                let mut cmd = procs::pinned(&self.cpus, exe);
                cmd.arg("load")
                    .arg(format!("-t{threads}"))
                    .arg(format!("-c{conns}"))
                    .arg(format!("-d{secs}"))
                    .args(["--timeout", "5", "--verify"])
                    .arg(VERIFY_SHARE.to_string())
                    .arg("--expect")
                    .arg(expect);
                cmd
            }
        };
        cmd.arg(url).stdout(Stdio::piped()).stderr(Stdio::piped());
        let cpu_before = procs::reaped_children_cpu_seconds();
        let name = self.kind.name();
        let mut guard = Guard::spawn(&mut cmd, name, libc::SIGINT)?;
        let child = guard.child_mut();
        let mut stdout = child.stdout.take().context("wrk stdout")?;
        let mut stderr = child.stderr.take().context("wrk stderr")?;
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        // wrk stops itself after `secs`; allow 30 s more for 256 connections to open and close.
        let deadline = Instant::now() + Duration::from_secs(u64::from(secs) + 30);
        let status = loop {
            if let Some(st) = guard.child_mut().try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                bail!("{name} did not finish within {secs} s + 30 s: killed");
            }
            procs::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(20));
        };
        let client_cpu_s = procs::reaped_children_cpu_seconds() - cpu_before;
        let text = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        if !status.success() {
            bail!("{name} failed ({status}): {}{}", text.trim(), err.trim());
        }
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("RELAYBENCH "))
            .with_context(|| format!("{name} printed no summary line:\n{text}{err}"))?;
        let mut outcome = parse(line, client_cpu_s)?;
        outcome.requested_s = f64::from(secs);
        Ok(outcome)
    }
}

pub(crate) fn parse(line: &str, client_cpu_s: f64) -> Result<Outcome> {
    let get = |key: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("no {key} in wrk summary {line:?}"))?
            .parse::<f64>()
            .with_context(|| format!("bad {key} in wrk summary {line:?}"))
    };
    let count = |key: &str| -> Result<u64> { Ok(get(key)?.max(0.0) as u64) };
    Ok(Outcome {
        requests: count("requests")?,
        wire_bytes: count("bytes")?,
        duration_s: get("duration_us")? / 1e6,
        requested_s: 0.0,
        errors: Errors {
            connect: count("connect")?,
            read: count("read")?,
            write: count("write")?,
            timeout: count("timeout")?,
            status: count("status")?,
        },
        p50_us: get("p50_us")?,
        p90_us: get("p90_us")?,
        p99_us: get("p99_us")?,
        p999_us: get("p999_us")?,
        max_us: get("max_us")?,
        client_cpu_s,
    })
}

impl Outcome {
    /// Why this run cannot be reported, if it cannot: any socket or status error, no
    /// requests, or responses whose size is not the object's (a short or wrong body).
    /// `conns` bounds the responses that were in flight when wrk stopped.
    pub fn invalid_reason(&self, object_size: u64, conns: u32) -> Option<String> {
        let e = &self.errors;
        if e.status > 0 {
            return Some(format!("{} non-2xx/3xx responses", e.status));
        }
        if e.connect + e.read + e.write + e.timeout > 0 {
            return Some(format!(
                "socket errors: connect {}, read {}, write {}, timeout {}",
                e.connect, e.read, e.write, e.timeout
            ));
        }
        if self.requests == 0 || self.duration_s <= 0.0 {
            return Some("no request completed".into());
        }
        if self.duration_s < 0.9 * self.requested_s {
            return Some(format!(
                "wrk measured {:.2} s of the {:.0} s asked",
                self.duration_s, self.requested_s
            ));
        }
        // Each response is the object plus a head of a few hundred bytes. wrk also counts
        // the bytes of the responses still in flight when it stops, one per connection at
        // most.
        const HEAD: f64 = 1024.0;
        let per = self.wire_bytes as f64 / self.requests as f64;
        let lo = object_size as f64;
        let hi = (object_size as f64 + HEAD) * (1.0 + f64::from(conns) / self.requests as f64);
        if per < lo || per > hi {
            return Some(format!(
                "{per:.0} bytes per response for a {object_size}-byte object"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "requests=1000 bytes=4346000 duration_us=2000000 connect=0 read=0 \
                        write=0 status=0 timeout=0 p50_us=512 p90_us=900 p99_us=1500 \
                        p999_us=2500 max_us=9000";

    #[test]
    fn parses_the_summary_line() {
        let o = parse(LINE, 1.5).unwrap();
        assert_eq!(o.requests, 1000);
        assert_eq!(o.wire_bytes, 4_346_000);
        assert_eq!(o.duration_s, 2.0);
        assert_eq!(o.p99_us, 1500.0);
        assert_eq!(o.invalid_reason(4096, 64), None);
    }

    #[test]
    fn errors_and_wrong_sizes_make_a_run_invalid() {
        let mut o = parse(LINE, 0.0).unwrap();
        o.errors.status = 3;
        assert!(o.invalid_reason(4096, 64).unwrap().contains("non-2xx"));
        let mut o = parse(LINE, 0.0).unwrap();
        o.errors.read = 1;
        assert!(o.invalid_reason(4096, 64).unwrap().contains("socket"));
        let o = parse(LINE, 0.0).unwrap();
        assert!(
            o.invalid_reason(65536, 64)
                .unwrap()
                .contains("bytes per response")
        );
        // 64 responses of 4 KiB in flight at the end: not an error.
        let mut o = parse(LINE, 0.0).unwrap();
        o.wire_bytes += 64 * 4096;
        assert_eq!(o.invalid_reason(4096, 64), None);
        o.wire_bytes = 1000 * 6000;
        assert!(o.invalid_reason(4096, 64).is_some());
        assert!(parse("requests=1", 0.0).is_err());
        let mut o = parse(LINE, 0.0).unwrap();
        o.requested_s = 10.0;
        assert!(
            o.invalid_reason(4096, 64)
                .unwrap()
                .contains("2.00 s of the 10 s")
        );
    }
}

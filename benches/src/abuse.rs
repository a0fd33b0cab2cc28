//! `relay-bench abuse`: issue 13's table. Every attack of `relay_tests::abuse` at full
//! scale (`Scale::Full`: 2,000 connections flooding 1 MB of pipelined GETs each, 10,000
//! idle connections, 200 slowloris heads and bodies, 8 trickled uploads, 128 slow readers of
//! a passed-through object, 32 stalled admin clients), each against a fresh relay on the
//! config's defaults for the tiers and the budget (`Settings::defaults`), one after
//! another; or at the tests' scale and settings with `--quick`.
//!
//! Per attack: relay's RSS at rest before it, its peak while the attackers stay
//! (`VmRSS` sampled every 10 ms and `VmHWM`), its RSS once they left (when back within
//! 8 MiB of the baseline, or after 10 s), the bound the tests hold it to
//! (`Attack::memory_bound`), and the good client's latency (p50, p99) and failures by
//! kind of request. The table goes to stdout, every figure to `abuse.json` (`abuse-quick.json`)
//! under `--out`.

use crate::machine::Machine;
use crate::report::utc_now;
use anyhow::{Context, Result, bail};
use relay_tests::abuse::{self, Attack, Fixture, Outcome, Scale, human};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Options {
    /// The relay binary to measure (a release build, or an older one to compare).
    #[arg(long)]
    pub relay: PathBuf,
    /// Directory for abuse.json.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// The tests' scale and settings (hundreds of connections, 16 MiB tiers, 4 s holds):
    /// results in abuse-quick.json.
    #[arg(long)]
    pub quick: bool,
    /// Only these attacks, comma-separated: flood, idle, slowloris, uploads, pass-readers,
    /// miss-readers, admin.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seconds the attackers stay (default 12; 4 with --quick).
    #[arg(long)]
    pub hold: Option<u64>,
    /// How the benchmark was invoked, for the record (xtask passes its command line).
    #[arg(long)]
    pub command: Option<String>,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    command: Option<String>,
    started_utc: String,
    machine: Machine,
    scale: &'static str,
    settings: SettingsJson,
    hold_seconds: f64,
    settle_seconds: f64,
    after_slack_bytes: u64,
    attacks: Vec<AttackJson>,
    seconds: f64,
}

#[derive(Serialize)]
struct SettingsJson {
    workers: usize,
    memory_bytes: u64,
    pass_buffer_bytes: u64,
    big_object_bytes: u64,
}

#[derive(Serialize)]
struct AttackJson {
    attack: &'static str,
    scale: String,
    connections: usize,
    baseline_rss_bytes: u64,
    peak_rss_bytes: u64,
    peak_sampled_bytes: u64,
    hwm_reset: bool,
    after_rss_bytes: u64,
    after_wait_seconds: f64,
    /// The tests' bound on peak − baseline, and whether this run kept within it.
    bound_bytes: u64,
    within_bound: bool,
    /// How far above the baseline RSS may stay once the attackers left (`Attack::after_bound`).
    after_bound_bytes: u64,
    attackers: CrowdJson,
    good_client: Vec<ProbeJson>,
    good_client_after: Vec<ProbeJson>,
    seconds: f64,
}

#[derive(Serialize)]
struct CrowdJson {
    opened: u64,
    connect_failed: u64,
    closed_by_relay: u64,
    reconnects: u64,
    refused: u64,
    open_at_end: u64,
    bytes_sent: u64,
    connect_seconds: f64,
}

#[derive(Serialize)]
struct ProbeJson {
    request: &'static str,
    requests: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    failures: Vec<(String, usize)>,
}

fn probes_json(list: &[abuse::probe::Summary]) -> Vec<ProbeJson> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    list.iter()
        .map(|p| ProbeJson {
            request: p.probe.name(),
            requests: p.requests,
            p50_ms: ms(p.p50),
            p99_ms: ms(p.p99),
            max_ms: ms(p.max),
            failures: p.failures.clone(),
        })
        .collect()
}

impl AttackJson {
    fn of(o: &Outcome) -> AttackJson {
        AttackJson {
            attack: o.attack.name(),
            scale: o.attack.scale(),
            connections: o.connections,
            baseline_rss_bytes: o.baseline,
            peak_rss_bytes: o.peak,
            peak_sampled_bytes: o.peak_sampled,
            hwm_reset: o.hwm_reset,
            after_rss_bytes: o.after,
            after_wait_seconds: o.after_wait.as_secs_f64(),
            bound_bytes: o.memory_bound,
            within_bound: o.grew() <= o.memory_bound,
            after_bound_bytes: o.after_bound,
            attackers: CrowdJson {
                opened: o.crowd.opened,
                connect_failed: o.crowd.connect_failed,
                closed_by_relay: o.crowd.closed_by_relay,
                reconnects: o.crowd.reconnects,
                refused: o.crowd.refused,
                open_at_end: o.crowd.open_at_end,
                bytes_sent: o.crowd.bytes_sent,
                connect_seconds: o.crowd.connect_time.as_secs_f64(),
            },
            good_client: probes_json(&o.probes),
            good_client_after: probes_json(&o.after_probes),
            seconds: o.took.as_secs_f64(),
        }
    }
}

pub fn run(o: Options) -> Result<()> {
    let started = Instant::now();
    let started_utc = utc_now();
    let relay_bin = std::fs::canonicalize(&o.relay)
        .with_context(|| format!("relay binary {}", o.relay.display()))?;
    let scale = if o.quick { Scale::Ci } else { Scale::Full };
    let settings = scale.settings();
    let mut timing = scale.timing();
    if let Some(h) = o.hold {
        timing.hold = Duration::from_secs(h);
    }
    let mut attacks = scale.all();
    if !o.only.is_empty() {
        for name in &o.only {
            if !attacks.iter().any(|a| a.key() == name) {
                let known: Vec<&str> = attacks.iter().map(|a| a.key()).collect();
                bail!("no attack {name:?}: one of {}", known.join(", "));
            }
        }
        attacks.retain(|a| o.only.iter().any(|n| n == a.key()));
    }
    let nofile = abuse::raise_nofile();
    let most = attacks.iter().map(Attack::connections).max().unwrap_or(0);
    if nofile < most as u64 + 256 {
        bail!(
            "RLIMIT_NOFILE allows {nofile} descriptors: {most} attacking connections need more \
             (raise the hard limit, e.g. run as root)"
        );
    }
    let machine = Machine::probe(&relay_bin);
    eprintln!("relay-bench: abuse, {started_utc}");
    eprintln!("relay-bench: machine: {}", machine.line_relay_only());
    let mut outcomes = Vec::new();
    for attack in &attacks {
        crate::procs::check_interrupted()?;
        eprintln!(
            "relay-bench: {}: {} (attackers stay {:?})",
            attack.name(),
            attack.scale(),
            timing.hold
        );
        let fx = Fixture::start(&relay_bin, &settings);
        let outcome = abuse::run(&fx, attack, &timing);
        drop(fx);
        eprint!("{}", outcome.report());
        outcomes.push(outcome);
    }
    let seconds = started.elapsed().as_secs_f64();
    let label = if o.quick {
        "CI scale (--quick)"
    } else {
        "full"
    };
    println!(
        "{}",
        table(
            &outcomes,
            &machine,
            &started_utc,
            o.command.as_deref(),
            label,
            &settings,
            &timing
        )
    );
    let report = Report {
        benchmark: "abuse",
        command: o.command.clone(),
        started_utc,
        machine,
        scale: label,
        settings: SettingsJson {
            workers: settings.workers,
            memory_bytes: settings.memory_bytes,
            pass_buffer_bytes: settings.pass_buffer_bytes,
            big_object_bytes: settings.big_bytes,
        },
        hold_seconds: timing.hold.as_secs_f64(),
        settle_seconds: timing.settle.as_secs_f64(),
        after_slack_bytes: timing.after_slack,
        attacks: outcomes.iter().map(AttackJson::of).collect(),
        seconds,
    };
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let name = if o.quick {
        "abuse-quick.json"
    } else {
        "abuse.json"
    };
    let json = o.out.join(name);
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    println!("json: {}", json.display());
    eprintln!("relay-bench: abuse done in {seconds:.0} s");
    Ok(())
}

/// The Markdown table: a row per attack and kind of good request.
fn table(
    outcomes: &[Outcome],
    machine: &Machine,
    started_utc: &str,
    command: Option<&str>,
    scale: &str,
    settings: &abuse::Settings,
    timing: &abuse::Timing,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(out, "relay bench abuse ({scale}): {started_utc}");
    if let Some(c) = command {
        let _ = writeln!(out, "command: {c}");
    }
    let _ = writeln!(out, "machine: {}", machine.line_relay_only());
    let _ = writeln!(
        out,
        "relay: {} workers (0: one per core), memory_bytes {}, pass_buffer_bytes {}; attackers \
         stay {:?}; RSS after: once back within {} of the baseline, or {:?} after they left",
        settings.workers,
        human(settings.memory_bytes),
        human(settings.pass_buffer_bytes),
        timing.hold,
        human(timing.after_slack),
        timing.settle
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| attack | baseline RSS | peak RSS | bound (+) | RSS after | good request | p50 | p99 | good failures |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    for o in outcomes {
        for (i, p) in o.probes.iter().enumerate() {
            let failures = if p.failed() == 0 {
                "0".to_string()
            } else {
                format!("{} of {}: {}", p.failed(), p.requests, p.failures_text())
            };
            if i == 0 {
                let _ = writeln!(
                    out,
                    "| {}: {} | {} | {} (+{}) | +{}{} | {} (+{}, {:.1} s) | {} | {} | {} | {} |",
                    o.attack.name(),
                    o.attack.scale(),
                    human(o.baseline),
                    human(o.peak),
                    human(o.grew()),
                    human(o.memory_bound),
                    if o.grew() <= o.memory_bound {
                        ""
                    } else {
                        " exceeded"
                    },
                    human(o.after),
                    human(o.kept()),
                    o.after_wait.as_secs_f64(),
                    p.probe.name(),
                    ms(p.p50),
                    ms(p.p99),
                    failures
                );
            } else {
                let _ = writeln!(
                    out,
                    "| | | | | | {} | {} | {} | {} |",
                    p.probe.name(),
                    ms(p.p50),
                    ms(p.p99),
                    failures
                );
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "attackers (opened / closed by relay / still open at the end / refused 503):"
    );
    for o in outcomes {
        let _ = writeln!(
            out,
            "- {}: {} / {} / {} / {}",
            o.attack.name(),
            o.crowd.opened,
            o.crowd.closed_by_relay,
            o.crowd.open_at_end,
            o.crowd.refused
        );
    }
    out
}

//! The results: rows of runs, their medians, relay's ratios to nginx, the targets
//! with PASS/FAIL, the table printed to stdout, and the JSON document (this module's types
//! serialise to it as they are).

use crate::machine::Machine;
use crate::stats::Stat;
use crate::wrk::Outcome;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    Relay,
    Nginx,
    NginxProxyCache,
    Varnish,
    /// Another relay binary (`--relay-before`), measured alternately with the others to
    /// show a change's effect in one run.
    RelayBefore,
}

impl Server {
    pub const ALL: [Server; 4] = [
        Server::Relay,
        Server::Nginx,
        Server::NginxProxyCache,
        Server::Varnish,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Server::Relay => "relay",
            Server::Nginx => "nginx",
            Server::NginxProxyCache => "nginx proxy_cache",
            Server::Varnish => "varnish",
            Server::RelayBefore => "relay before",
        }
    }

    /// The servers measured: the four, and the relay before a change when there is one.
    pub fn measured(before: bool) -> Vec<Server> {
        let mut all = Server::ALL.to_vec();
        if before {
            all.push(Server::RelayBefore);
        }
        all
    }
}

/// How the run was set up.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub runs: u32,
    pub duration_s: u32,
    pub warmup_s: u32,
    pub connections: Vec<u32>,
    pub objects: Vec<u64>,
    pub client_cpus: Vec<usize>,
    pub server_cpus: Vec<usize>,
    pub wrk_threads: u32,
    /// relay workers and nginx worker_processes (the same).
    pub workers: usize,
    /// The load client (`relay-bench load` or wrk) and its command line.
    pub client: String,
    pub wrk_command: String,
    pub quick: bool,
    /// nginx's file server with `sendfile on` (the configuration) or copying.
    pub nginx_sendfile: bool,
    /// The relay binary measured.
    pub relay_bin: String,
    /// The relay binary it is compared with (`--relay-before`), if any.
    pub relay_before_bin: Option<String>,
}

/// One measured wrk run and what the server spent on it.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub run: u32,
    pub invalid: Option<String>,
    pub wrk: Outcome,
    /// Body bytes: requests × object size.
    pub body_bytes: f64,
    pub rps: f64,
    /// Body bytes per second / 10^9.
    pub gbps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Server CPU seconds (utime + stime, all threads; nginx: master and workers).
    pub server_cpu_s: f64,
    pub cpu_s_per_100k: f64,
    pub cpu_s_per_gb: f64,
    /// Server CPU seconds over the run's wall time, in percent (100 = one core busy).
    pub server_cpu_pct: f64,
    /// wrk's CPU seconds over the run's wall time, in percent.
    pub client_cpu_pct: f64,
    /// wrk's CPU seconds per 100k requests and per GB: what this server's responses cost
    /// the client. On loopback it also holds kernel work done for the server: TCP runs the
    /// sender's transmits and the receiver's input in softirq on whichever core handles the
    /// packet that triggers them, and (tick accounting) charges it to the process current
    /// there.
    pub client_cpu_s_per_100k: f64,
    pub client_cpu_s_per_gb: f64,
    /// CPU the rest of the machine used meanwhile (all CPUs busy, less server and wrk), in
    /// percent of one core: other work, and kernel time charged to no process. Near 0 on a
    /// quiet machine; high means the numbers are noisy.
    pub other_cpu_pct: f64,
    /// How busy the server cores were (from `/proc/stat`, in percent of all of them),
    /// whoever their time was charged to: on loopback part of the receive work for the
    /// client's sockets runs in softirq on the sending core, charged to no process, so a
    /// server can show under 100% CPU on a core that is never idle.
    pub server_cores_busy_pct: Option<f64>,
}

impl Run {
    pub fn new(
        run: u32,
        wrk: Outcome,
        size: u64,
        conns: u32,
        server_cpu_s: f64,
        machine_busy_s: f64,
    ) -> Run {
        let secs = wrk.duration_s.max(1e-9);
        let requests = wrk.requests as f64;
        let body_bytes = requests * size as f64;
        Run {
            run,
            invalid: wrk.invalid_reason(size, conns),
            body_bytes,
            rps: requests / secs,
            gbps: body_bytes / secs / 1e9,
            p50_ms: wrk.p50_us / 1e3,
            p99_ms: wrk.p99_us / 1e3,
            server_cpu_s,
            cpu_s_per_100k: server_cpu_s / requests.max(1.0) * 1e5,
            cpu_s_per_gb: server_cpu_s / (body_bytes / 1e9).max(1e-12),
            server_cpu_pct: server_cpu_s / secs * 100.0,
            client_cpu_pct: wrk.client_cpu_s / secs * 100.0,
            client_cpu_s_per_100k: wrk.client_cpu_s / requests.max(1.0) * 1e5,
            client_cpu_s_per_gb: wrk.client_cpu_s / (body_bytes / 1e9).max(1e-12),
            other_cpu_pct: ((machine_busy_s - server_cpu_s - wrk.client_cpu_s) / secs * 100.0)
                .max(0.0),
            server_cores_busy_pct: None,
            wrk,
        }
    }

    /// Records how busy the `cores` server cores were: `idle_s` of their seconds idle.
    pub fn with_cores_idle(mut self, cores: usize, idle_s: f64) -> Run {
        let total = self.wrk.duration_s.max(1e-9) * cores.max(1) as f64;
        self.server_cores_busy_pct = Some(((1.0 - idle_s / total) * 100.0).clamp(0.0, 100.0));
        self
    }

    /// For the progress line.
    pub fn short(&self) -> String {
        match &self.invalid {
            Some(why) => format!("INVALID: {why}"),
            None => format!(
                "{} req/s, p99 {} ms, server CPU {:.0}% (its cores {:.0}% busy), client {:.0}%, \
                 other {:.0}%",
                rps(self.rps),
                ms(self.p99_ms),
                self.server_cpu_pct,
                self.server_cores_busy_pct.unwrap_or(f64::NAN),
                self.client_cpu_pct,
                self.other_cpu_pct
            ),
        }
    }
}

/// Medians (and ranges) over a row's runs.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub rps: Stat,
    pub gbps: Stat,
    pub p50_ms: Stat,
    pub p99_ms: Stat,
    pub cpu_s_per_100k: Stat,
    pub cpu_s_per_gb: Stat,
    pub server_cpu_pct: Stat,
    /// How busy the server cores were, whoever their time was charged to
    /// ([`Run::server_cores_busy_pct`]).
    pub server_cores_busy_pct: Stat,
    pub client_cpu_pct: Stat,
    pub client_cpu_s_per_100k: Stat,
    pub client_cpu_s_per_gb: Stat,
    pub other_cpu_pct: Stat,
}

/// One server at one object size and connection count.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub server: Server,
    pub size: u64,
    pub size_label: &'static str,
    pub connections: u32,
    /// Why the row is not reported (any invalid run, or hits not confirmed).
    pub invalid: Option<String>,
    /// None when invalid.
    pub summary: Option<Summary>,
    pub runs: Vec<Run>,
}

impl Row {
    pub fn new(server: Server, size: u64, size_label: &'static str, connections: u32) -> Row {
        Row {
            server,
            size,
            size_label,
            connections,
            invalid: None,
            summary: None,
            runs: Vec::new(),
        }
    }

    /// Marks the row invalid if any run was, else computes its medians.
    pub fn finish(&mut self) {
        if self.invalid.is_none() {
            self.invalid = self
                .runs
                .iter()
                .find_map(|r| r.invalid.as_ref().map(|w| format!("run {}: {w}", r.run)));
        }
        if self.invalid.is_none() && self.runs.is_empty() {
            self.invalid = Some("no runs".into());
        }
        if self.invalid.is_some() {
            self.summary = None;
            return;
        }
        let stat = |f: fn(&Run) -> f64| {
            Stat::of(&self.runs.iter().map(f).collect::<Vec<_>>()).unwrap_or_default()
        };
        self.summary = Some(Summary {
            rps: stat(|r| r.rps),
            gbps: stat(|r| r.gbps),
            p50_ms: stat(|r| r.p50_ms),
            p99_ms: stat(|r| r.p99_ms),
            cpu_s_per_100k: stat(|r| r.cpu_s_per_100k),
            cpu_s_per_gb: stat(|r| r.cpu_s_per_gb),
            server_cpu_pct: stat(|r| r.server_cpu_pct),
            server_cores_busy_pct: stat(|r| r.server_cores_busy_pct.unwrap_or(f64::NAN)),
            client_cpu_pct: stat(|r| r.client_cpu_pct),
            client_cpu_s_per_100k: stat(|r| r.client_cpu_s_per_100k),
            client_cpu_s_per_gb: stat(|r| r.client_cpu_s_per_gb),
            other_cpu_pct: stat(|r| r.other_cpu_pct),
        });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Rps,
    Gbps,
    P50,
    P99,
    CpuPer100k,
    CpuPerGb,
}

impl Metric {
    fn label(self) -> &'static str {
        match self {
            Metric::Rps => "req/s",
            Metric::Gbps => "GB/s",
            Metric::P50 => "p50",
            Metric::P99 => "p99",
            Metric::CpuPer100k => "CPU per request",
            Metric::CpuPerGb => "CPU per GB",
        }
    }

    fn median(self, s: &Summary) -> f64 {
        match self {
            Metric::Rps => s.rps.median,
            Metric::Gbps => s.gbps.median,
            Metric::P50 => s.p50_ms.median,
            Metric::P99 => s.p99_ms.median,
            Metric::CpuPer100k => s.cpu_s_per_100k.median,
            Metric::CpuPerGb => s.cpu_s_per_gb.median,
        }
    }

    /// The client's (wrk's) CPU for the same unit as a CPU metric.
    fn client_median(self, s: &Summary) -> Option<f64> {
        match self {
            Metric::CpuPer100k => Some(s.client_cpu_s_per_100k.median),
            Metric::CpuPerGb => Some(s.client_cpu_s_per_gb.median),
            _ => None,
        }
    }
}

/// relay's median divided by another server's, per metric (None if either row is invalid).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub size: u64,
    pub connections: u32,
    pub against: Server,
    pub rps: Option<f64>,
    pub gbps: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub cpu_per_100k: Option<f64>,
    pub cpu_per_gb: Option<f64>,
}

impl Ratio {
    fn get(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::Rps => self.rps,
            Metric::Gbps => self.gbps,
            Metric::P50 => self.p50,
            Metric::P99 => self.p99,
            Metric::CpuPer100k => self.cpu_per_100k,
            Metric::CpuPerGb => self.cpu_per_gb,
        }
    }
}

/// One of issue 3's targets at one size and connection count.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub description: String,
    pub size: u64,
    pub connections: u32,
    pub against: Server,
    pub metric: Metric,
    /// ">=" or "<=".
    pub op: &'static str,
    pub bound: f64,
    pub ratio: Option<f64>,
    /// "PASS", "FAIL", "INVALID" (a row it needs is invalid) or "CLIENT-BOUND" (the client
    /// was the bottleneck in a row it needs: not judged).
    pub verdict: &'static str,
    /// Why a target was not judged (`CLIENT-BOUND`).
    pub judged_by: Option<String>,
    /// For a CPU target: what the client spent per unit on each server's responses,
    /// and server plus client together, so a server whose work was charged to the client's
    /// core can be told from one that did less work.
    pub client_cost: Option<String>,
}

/// A client at or above this share of its core (a row's median, in relay's row or the
/// other server's) is the bottleneck: the row measures the client, and its targets are not
/// judged.
const CLIENT_BOUND_PCT: f64 = 90.0;

/// The targets, judged on server-bound rows only: (size or all sizes, against, metric, op,
/// bound). Issue 3's at 4 KiB, latency and `proxy_cache`; issue 17's at 64 KiB and 1 MiB
/// (relay ≥ 1.5× nginx and ≥ 1.3× Varnish req/s, CPU per byte ≤ 0.8× nginx's).
const TARGETS: [(Option<u64>, Server, Metric, &str, f64); 10] = [
    (Some(4 << 10), Server::Nginx, Metric::Rps, ">=", 1.3),
    (Some(64 << 10), Server::Nginx, Metric::Rps, ">=", 1.5),
    (Some(1 << 20), Server::Nginx, Metric::Rps, ">=", 1.5),
    (Some(64 << 10), Server::Varnish, Metric::Rps, ">=", 1.3),
    (Some(1 << 20), Server::Varnish, Metric::Rps, ">=", 1.3),
    (Some(4 << 10), Server::Nginx, Metric::CpuPer100k, "<=", 0.7),
    (Some(64 << 10), Server::Nginx, Metric::CpuPerGb, "<=", 0.8),
    (Some(1 << 20), Server::Nginx, Metric::CpuPerGb, "<=", 0.8),
    (None, Server::Nginx, Metric::P99, "<=", 1.0),
    (None, Server::NginxProxyCache, Metric::Rps, ">=", 1.5),
];

/// The whole result, as written to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub started_utc: String,
    pub wall_s: f64,
    pub command: String,
    pub machine: Machine,
    pub loadavg_end: String,
    pub settings: Settings,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
}

impl Report {
    pub fn new(
        started_utc: String,
        wall_s: f64,
        command: String,
        machine: Machine,
        settings: Settings,
        rows: Vec<Row>,
        notes: Vec<String>,
    ) -> Report {
        let mut ratios = Vec::new();
        for &connections in &settings.connections {
            for &size in &settings.objects {
                let before = settings.relay_before_bin.is_some();
                for against in Server::measured(before).into_iter().skip(1) {
                    let find = |s: Server| {
                        rows.iter()
                            .find(|r| {
                                r.server == s && r.size == size && r.connections == connections
                            })
                            .and_then(|r| r.summary)
                    };
                    let (mine, theirs) = (find(Server::Relay), find(against));
                    let ratio = |m: Metric| {
                        let (a, b) = (m.median(mine.as_ref()?), m.median(theirs.as_ref()?));
                        (b > 0.0).then(|| a / b)
                    };
                    ratios.push(Ratio {
                        size,
                        connections,
                        against,
                        rps: ratio(Metric::Rps),
                        gbps: ratio(Metric::Gbps),
                        p50: ratio(Metric::P50),
                        p99: ratio(Metric::P99),
                        cpu_per_100k: ratio(Metric::CpuPer100k),
                        cpu_per_gb: ratio(Metric::CpuPerGb),
                    });
                }
            }
        }
        let mut targets = Vec::new();
        for (size, against, metric, op, bound) in TARGETS {
            for r in &ratios {
                if r.against != against || size.is_some_and(|s| s != r.size) {
                    continue;
                }
                let ratio = r.get(metric);
                let mut verdict = match ratio {
                    None => "INVALID",
                    Some(x) if (op == ">=" && x >= bound) || (op == "<=" && x <= bound) => "PASS",
                    Some(_) => "FAIL",
                };
                // The busier client of the two rows compared.
                let client_pct = [Server::Relay, against]
                    .iter()
                    .filter_map(|&srv| {
                        rows.iter()
                            .find(|w| {
                                w.server == srv
                                    && w.size == r.size
                                    && w.connections == r.connections
                            })
                            .and_then(|w| w.summary.as_ref())
                            .map(|sm| sm.client_cpu_pct.median)
                    })
                    .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
                let mut judged_by = None;
                if verdict != "INVALID"
                    && let Some(pct) = client_pct.filter(|p| *p >= CLIENT_BOUND_PCT)
                {
                    verdict = "CLIENT-BOUND";
                    judged_by = Some(format!(
                        "not judged: the client used {pct:.0}% of its core (from \
                         {CLIENT_BOUND_PCT:.0}% a row measures the client, not the server)"
                    ));
                }
                // CPU targets carry what the client spent on each server's responses.
                let cost_metric = match metric {
                    Metric::CpuPer100k | Metric::CpuPerGb => Some(metric),
                    _ => None,
                };
                let client_cost = cost_metric.and_then(|m| {
                    summaries(&rows, r)
                        .and_then(|(mine, theirs)| client_cost(m, &mine, &theirs, against))
                });
                targets.push(Target {
                    description: format!(
                        "relay/{} {} at {} c={}",
                        against.label(),
                        metric.label(),
                        size_label(r.size),
                        r.connections
                    ),
                    size: r.size,
                    connections: r.connections,
                    against,
                    metric,
                    op,
                    bound,
                    ratio,
                    verdict,
                    judged_by,
                    client_cost,
                });
            }
        }
        Report {
            benchmark: "serve",
            started_utc,
            wall_s,
            command,
            machine,
            loadavg_end: String::new(),
            settings,
            notes,
            rows,
            ratios,
            targets,
        }
    }

    /// The table (with the machine, the pinning, ratios, and PASS/FAIL per target).
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(out, "relay bench serve: {}", self.started_utc);
        let _ = writeln!(out, "command: {}", self.command);
        let _ = writeln!(out, "machine: {}", self.machine.line());
        if let Some(b) = &self.settings.relay_before_bin {
            let _ = writeln!(out, "relay before: {b} (the build before the change)");
        }
        if !s.nginx_sendfile {
            let _ = writeln!(
                out,
                "nginx: sendfile off (output_buffers 1 1m): the copying variant, not the \
                 issue's configuration"
            );
        }
        let _ = writeln!(
            out,
            "pinning: {} on CPU {:?} ({} thread), servers on CPU {:?} ({} worker each: relay \
             workers = nginx worker_processes); load average {} at start, {} at end",
            s.client,
            s.client_cpus,
            s.wrk_threads,
            s.server_cpus,
            s.workers,
            self.machine.loadavg_start,
            self.loadavg_end
        );
        let _ = writeln!(
            out,
            "{} run{} of {} s per row; cells are median (min-max); GB/s counts body bytes \
             (10^9); CPU is the server's utime+stime, all threads and processes",
            s.runs,
            if s.runs == 1 { "" } else { "s" },
            s.duration_s
        );
        let _ = writeln!(out);
        let header = [
            "size",
            "conns",
            "server",
            "req/s",
            "GB/s",
            "p50 ms",
            "p99 ms",
            "CPU s/100k req",
            "CPU s/GB",
            "server CPU (cores busy)",
            "client CPU",
            "other CPU",
        ];
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for &connections in &s.connections {
            for &size in &s.objects {
                for r in self
                    .rows
                    .iter()
                    .filter(|r| r.size == size && r.connections == connections)
                {
                    let mut l = vec![
                        r.size_label.to_string(),
                        connections.to_string(),
                        r.server.label().to_string(),
                    ];
                    match (&r.summary, &r.invalid) {
                        (Some(m), _) => l.extend([
                            cell(m.rps, rps),
                            cell(m.gbps, |v| format!("{v:.2}")),
                            cell(m.p50_ms, ms),
                            cell(m.p99_ms, ms),
                            cell(m.cpu_s_per_100k, |v| format!("{v:.3}")),
                            cell(m.cpu_s_per_gb, |v| format!("{v:.3}")),
                            format!(
                                "{:.0}% ({:.0}%)",
                                m.server_cpu_pct.median, m.server_cores_busy_pct.median
                            ),
                            format!("{:.0}%", m.client_cpu_pct.median),
                            format!("{:.0}%", m.other_cpu_pct.median),
                        ]),
                        (None, why) => l.push(format!(
                            "INVALID: {}",
                            why.as_deref().unwrap_or("no result")
                        )),
                    }
                    lines.push(l);
                }
                for ra in self
                    .ratios
                    .iter()
                    .filter(|x| x.size == size && x.connections == connections)
                {
                    let x = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
                    lines.push(vec![
                        String::new(),
                        String::new(),
                        format!("relay/{}", ra.against.label()),
                        x(ra.rps),
                        x(ra.gbps),
                        x(ra.p50),
                        x(ra.p99),
                        x(ra.cpu_per_100k),
                        x(ra.cpu_per_gb),
                    ]);
                }
                lines.push(Vec::new());
            }
        }
        let mut widths = vec![0usize; header.len()];
        for l in &lines {
            // An INVALID cell spans the rest of its line: it does not widen the column.
            for (i, c) in l
                .iter()
                .enumerate()
                .take(if l.len() == 4 { 3 } else { l.len() })
            {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        for l in &lines {
            let mut text = String::new();
            for (i, c) in l.iter().enumerate() {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i < 3 {
                    text.push_str(c);
                    text.push_str(&" ".repeat(pad));
                } else {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(c);
                }
                text.push_str("  ");
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }
        let _ = writeln!(
            out,
            "ratios are relay's median over the other's: above 1 is better for req/s and GB/s, \
             below 1 for latency and CPU"
        );
        let _ = writeln!(
            out,
            "server/client/other CPU: percent of one core during the run; other = the rest of the \
             machine (other processes, unattributed kernel time); (cores busy) = how busy the \
             server cores were from /proc/stat, whoever their time was charged to (on loopback \
             part of the client sockets' receive work runs on the sending core, charged to no \
             process)"
        );
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        if let Some(worst) = self.busiest_other_cpu()
            && worst > BUSY_PCT
        {
            let _ = writeln!(
                out,
                "note: other work used up to {worst:.0}% of a core during the runs (median of \
                 a row): the machine was shared, the numbers are noisy"
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "targets (issues 3 and 17, on server-bound rows; ratios in this run):"
        );
        for t in &self.targets {
            let _ = writeln!(
                out,
                "  {:<12} {:<44} {:>6}  (target {} {:.2})",
                t.verdict,
                t.description,
                t.ratio.map_or("-".into(), |v| format!("{v:.2}")),
                t.op,
                t.bound
            );
            for note in [&t.judged_by, &t.client_cost].into_iter().flatten() {
                let _ = writeln!(out, "          {note}");
            }
        }
        let count = |v: &str| self.targets.iter().filter(|t| t.verdict == v).count();
        let _ = writeln!(
            out,
            "targets: {} PASS, {} FAIL, {} INVALID, {} CLIENT-BOUND (not judged)",
            count("PASS"),
            count("FAIL"),
            count("INVALID"),
            count("CLIENT-BOUND")
        );
        out
    }
}

/// relay's and the other server's summaries at a ratio's size and connection count.
fn summaries(rows: &[Row], r: &Ratio) -> Option<(Summary, Summary)> {
    let find = |s: Server| {
        rows.iter()
            .find(|w| w.server == s && w.size == r.size && w.connections == r.connections)
            .and_then(|w| w.summary)
    };
    Some((find(Server::Relay)?, find(r.against)?))
}

/// The client's CPU per unit under each server, and server + client together, for a CPU
/// metric (None for the others). Flags a server whose responses cost the client at least a
/// quarter more than relay's.
fn client_cost(m: Metric, mine: &Summary, theirs: &Summary, against: Server) -> Option<String> {
    let (cm, ct) = (m.client_median(mine)?, m.client_median(theirs)?);
    let (sm, st) = (m.median(mine), m.median(theirs));
    if ct <= 0.0 || st + ct <= 0.0 {
        return None;
    }
    let unit = if m == Metric::CpuPerGb {
        "s/GB"
    } else {
        "s/100k"
    };
    let mut text = format!(
        "client CPU: {cm:.3} {unit} on relay's responses, {ct:.3} on {}'s ({:.2}); \
         server + client: {:.2}",
        against.label(),
        cm / ct,
        (sm + cm) / (st + ct)
    );
    if ct >= 1.25 * cm {
        let _ = write!(
            text,
            "; {}'s responses cost the client {:.1}x what relay's do (docs/BENCHMARKS.md, \
             \"CPU accounting on loopback\")",
            against.label(),
            ct / cm
        );
    }
    Some(text)
}

/// Other work above this (percent of a core, a row's median) marks the run as shared.
const BUSY_PCT: f64 = 10.0;

impl Report {
    /// The highest median `other_cpu_pct` over the valid rows.
    pub fn busiest_other_cpu(&self) -> Option<f64> {
        self.rows
            .iter()
            .filter_map(|r| r.summary.map(|s| s.other_cpu_pct.median))
            .reduce(f64::max)
    }
}

fn cell(s: Stat, f: impl Fn(f64) -> String) -> String {
    if s.min == s.max {
        f(s.median)
    } else {
        format!("{} ({}-{})", f(s.median), f(s.min), f(s.max))
    }
}

/// Requests per second: 95.2k, 1.23M.
pub fn rps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Milliseconds with three significant digits or so.
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn size_label(size: u64) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrk::Errors;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    fn outcome(requests: u64, size: u64, cpu: f64) -> Outcome {
        Outcome {
            requests,
            wire_bytes: requests * (size + 200),
            duration_s: 1.0,
            requested_s: 1.0,
            errors: Errors::default(),
            p50_us: 500.0,
            p90_us: 800.0,
            p99_us: 1000.0,
            p999_us: 2000.0,
            max_us: 3000.0,
            client_cpu_s: cpu,
        }
    }

    /// A row whose client used half its core.
    fn row(server: Server, rps: u64, cpu: f64) -> Row {
        row_with_client(server, rps, cpu, 0.5)
    }

    /// A row whose runs take `cpu` server seconds and `client` client seconds each.
    fn row_with_client(server: Server, rps: u64, cpu: f64, client: f64) -> Row {
        let mut r = Row::new(server, 4096, "4 KiB", 64);
        for i in 0..3 {
            r.runs.push(Run::new(
                i + 1,
                outcome(rps + u64::from(i), 4096, client),
                4096,
                64,
                cpu,
                cpu + 1.0,
            ));
        }
        r.finish();
        r
    }

    fn settings() -> Settings {
        Settings {
            runs: 3,
            duration_s: 1,
            warmup_s: 0,
            connections: vec![64],
            objects: vec![4096],
            client_cpus: vec![0],
            server_cpus: vec![1],
            wrk_threads: 1,
            workers: 1,
            client: "wrk".into(),
            wrk_command: String::new(),
            quick: false,
            nginx_sendfile: true,
            relay_bin: String::new(),
            relay_before_bin: None,
        }
    }

    /// A report over relay at `relay_rps` for `relay_cpu` s a run, nginx at 100k for 1 s,
    /// proxy_cache at 50k for 1 s (the client at 50% of its core in every row).
    fn report(relay_rps: u64, relay_cpu: f64) -> Report {
        let rows = vec![
            row(Server::Relay, relay_rps, relay_cpu),
            row(Server::Nginx, 100_000, 1.0),
            row(Server::NginxProxyCache, 50_000, 1.0),
        ];
        report_of(rows)
    }

    /// A report over these rows, with the test settings.
    fn report_of(rows: Vec<Row>) -> Report {
        let machine = Machine::probe(std::path::Path::new("/nonexistent"));
        Report::new(
            "t".into(),
            1.0,
            "c".into(),
            machine,
            settings(),
            rows,
            vec![],
        )
    }

    #[test]
    fn ratios_and_targets() {
        let r = report(140_000, 0.5);
        let vs_nginx = r
            .ratios
            .iter()
            .find(|x| x.against == Server::Nginx)
            .unwrap();
        assert!((vs_nginx.rps.unwrap() - 1.4).abs() < 1e-3);
        let t = |m: Metric, a: Server| {
            r.targets
                .iter()
                .find(|t| t.metric == m && t.against == a)
                .unwrap()
                .verdict
        };
        assert_eq!(t(Metric::Rps, Server::Nginx), "PASS");
        assert_eq!(t(Metric::CpuPer100k, Server::Nginx), "PASS");
        assert_eq!(t(Metric::Rps, Server::NginxProxyCache), "PASS");
        assert!(r.table().contains("relay/nginx"));
    }

    #[test]
    fn a_runs_server_cores_are_busy_for_what_they_did_not_idle() {
        // 1 s measured on 2 server cores, 0.5 s of their time idle: 75% busy.
        let r = Run::new(1, outcome(1000, 4096, 0.5), 4096, 64, 1.2, 2.0).with_cores_idle(2, 0.5);
        assert!((r.server_cores_busy_pct.unwrap() - 75.0).abs() < 1e-9);
        let idle = crate::procs::cpus_idle_seconds(&crate::procs::allowed_cpus());
        assert!(idle > 0.0, "this machine's cores have idled since boot");
    }

    #[test]
    fn targets_on_client_bound_rows_are_not_judged() {
        // The client at 95% of its core in nginx's row: relay's 1.1x (a FAIL if judged)
        // says nothing about relay.
        let rows = vec![
            row(Server::Relay, 110_000, 0.5),
            row_with_client(Server::Nginx, 100_000, 1.0, 0.95),
            row(Server::NginxProxyCache, 50_000, 1.0),
        ];
        let r = report_of(rows);
        let vs_nginx: Vec<_> = r
            .targets
            .iter()
            .filter(|t| t.against == Server::Nginx)
            .collect();
        assert!(!vs_nginx.is_empty());
        for t in vs_nginx {
            assert_eq!(t.verdict, "CLIENT-BOUND", "{}", t.description);
            assert!(t.judged_by.as_deref().unwrap().contains("95%"));
        }
        // proxy_cache's row and relay's are server-bound: judged.
        let proxy = r
            .targets
            .iter()
            .find(|t| t.against == Server::NginxProxyCache)
            .unwrap();
        assert_eq!(proxy.verdict, "PASS");
        assert!(r.table().contains("CLIENT-BOUND (not judged)"));
    }

    #[test]
    fn cpu_targets_show_what_each_server_cost_the_client() {
        // relay 0.6 s for 100k requests (wrk 1 s); nginx 1 s for 100k (wrk 2 s): the client
        // spent twice as much on nginx's responses, which the note flags.
        let rows = vec![
            row_with_client(Server::Relay, 100_000, 0.6, 1.0),
            row_with_client(Server::Nginx, 100_000, 1.0, 2.0),
            row(Server::NginxProxyCache, 50_000, 1.0),
        ];
        let r = report_of(rows);
        let t = r
            .targets
            .iter()
            .find(|t| t.metric == Metric::CpuPer100k)
            .unwrap();
        let note = t.client_cost.as_deref().unwrap();
        assert!(note.contains("1.000 s/100k on relay's responses, 2.000 on nginx's (0.50)"));
        assert!(note.contains("server + client: 0.53"), "{note}");
        assert!(
            note.contains("cost the client 2.0x what relay's do"),
            "{note}"
        );
        assert!(r.table().contains(note));
        // Latency and throughput targets carry none.
        let p99 = r.targets.iter().find(|t| t.metric == Metric::P99).unwrap();
        assert!(p99.client_cost.is_none());
        let rps = r.targets.iter().find(|t| t.metric == Metric::Rps).unwrap();
        assert!(rps.client_cost.is_none());
    }

    #[test]
    fn an_invalid_run_invalidates_its_row_and_targets() {
        let mut bad = Row::new(Server::Relay, 4096, "4 KiB", 64);
        let mut o = outcome(100, 4096, 0.0);
        o.errors.timeout = 2;
        bad.runs.push(Run::new(1, o, 4096, 64, 0.1, 0.1));
        bad.finish();
        assert!(bad.summary.is_none());
        assert!(bad.invalid.as_deref().unwrap().contains("timeout 2"));
        let rows = vec![bad, row(Server::Nginx, 100_000, 1.0)];
        let r = report_of(rows);
        assert!(r.targets.iter().all(|t| t.verdict == "INVALID"));
        assert!(r.table().contains("INVALID: run 1"));
    }
}

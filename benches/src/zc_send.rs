//! `relay-bench zc-send`: where zero-copy sends start to pay, measured where the kernel
//! really does not copy them.
//!
//! `server.zerocopy_min_bytes` trades the copy of a send against what `SEND_ZC` costs
//! instead: pinning the pages, building the socket buffer from them, and one more
//! completion (the notification) per send. Over loopback the kernel copies every zero-copy
//! send when it delivers it to the local socket, so loopback cannot say where the trade
//! turns. Here one pinned io_uring thread sends UDP datagrams of each size, in a network
//! namespace of its own, to an address behind one end of a veth pair (MTU 65535, a permanent
//! neighbour entry) whose other end is down: the veth hands each packet over without copying
//! it and the down end frees it, nothing is delivered, and `SEND_ZC`'s notification
//! (`IORING_SEND_ZC_REPORT_USAGE`) says whether the kernel copied; a run where it did is
//! marked, not counted. Methods, interleaved per run: `send` (copies), `send_zc` (pins a
//! plain buffer per send) and `send_zc_fixed` (pages registered with the ring, as relay's
//! memory arena is). The sender's CPU is its thread's scheduler time, which holds the whole
//! transmit path here (the veth frees packets synchronously, in the sender's context).
//!
//! What it leaves out: TCP's per-segment work and a NIC's DMA, the same for every method,
//! and the receiver. Needs root (the namespace); without it, says so and stops.

use crate::disk_send::sys;
use crate::stats::Stat;
use anyhow::{Context, Result, bail};
use io_uring::{IoUring, cqueue, opcode, types};
use serde::Serialize;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `IORING_SEND_ZC_REPORT_USAGE` (SQE ioprio): the notification reports a copy.
const REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED` in the notification's result.
const ZC_COPIED: i32 = 1 << 31;
/// The veth's network, and the address the datagrams go to (its neighbour entry is static:
/// nothing answers ARP behind a down end).
const LOCAL: &str = "10.201.0.1/24";
const PEER_ADDR: &str = "10.201.0.2";
const PEER: &str = "10.201.0.2:9";
/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

#[derive(clap::Args)]
pub struct Options {
    /// Datagram sizes in bytes, comma-separated (at most 65507).
    #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 4096, 8192, 16384, 32768, 65000])]
    pub sizes: Vec<usize>,
    /// Runs per size and method (methods interleaved in each run).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Seconds per run.
    #[arg(long, default_value_t = 0.5)]
    pub secs: f64,
    /// Sends kept in flight.
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,
    /// CPU the sender is pinned to (default: the last one this process may use).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Directory for zc-send.json.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// How the benchmark was invoked, for the record.
    #[arg(long)]
    pub command: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Method {
    Send,
    SendZc,
    SendZcFixed,
}

impl Method {
    const ALL: [Method; 3] = [Method::Send, Method::SendZc, Method::SendZcFixed];

    fn name(self) -> &'static str {
        match self {
            Method::Send => "send",
            Method::SendZc => "send_zc",
            Method::SendZcFixed => "send_zc_fixed",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
struct RunRecord {
    size: usize,
    method: Method,
    run: u32,
    bytes: u64,
    secs: f64,
    cpu_s: f64,
    /// Notifications that reported a copy (a zero-copy run with any is not counted).
    copied: u64,
}

#[derive(Clone, Debug, Serialize)]
struct Row {
    size: usize,
    method: Method,
    gbps: Option<Stat>,
    cpu_s_per_gb: Option<Stat>,
    copied: u64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    command: String,
    cpu: usize,
    runs: u32,
    secs: f64,
    inflight: usize,
    rows: Vec<Row>,
    /// Per size: median over runs of send_zc_fixed's CPU per GB / send's (paired by run).
    fixed_over_send: Vec<(usize, Option<Stat>)>,
    /// The smallest size from which on send_zc_fixed costs less CPU per GB than send.
    crossover: Option<usize>,
    records: Vec<RunRecord>,
}

pub fn run(o: Options) -> Result<()> {
    if o.sizes.is_empty() || o.sizes.iter().any(|&s| s == 0 || s > MAX_DATAGRAM) {
        bail!("--sizes must each be 1..={MAX_DATAGRAM}");
    }
    if !(1..=100).contains(&o.runs) || !(0.05..=60.0).contains(&o.secs) {
        bail!("--runs must be 1..=100 and --secs 0.05..=60");
    }
    if !(1..=256).contains(&o.inflight) {
        bail!("--inflight must be 1..=256");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("zc-send needs root: it makes a network namespace with a veth pair");
    }
    let cpu = match o.cpu {
        Some(c) => c,
        None => *crate::procs::allowed_cpus()
            .last()
            .context("no CPU this process may use")?,
    };
    let ns = Netns::new()?;
    let (records, ns_name) = {
        let name = ns.name.clone();
        let opts = (o.sizes.clone(), o.runs, o.secs, o.inflight);
        let records = std::thread::scope(|s| {
            s.spawn(|| measure(&name, cpu, &opts.0, opts.1, opts.2, opts.3))
                .join()
                .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?
        })?;
        (records, name)
    };
    drop(ns);
    let rows = rows(&records, &o.sizes);
    let fixed_over_send = o
        .sizes
        .iter()
        .map(|&size| (size, paired(&records, size)))
        .collect::<Vec<_>>();
    let crossover = crossover(&fixed_over_send);
    print_table(&o, cpu, &ns_name, &rows, &fixed_over_send, crossover);
    let report = Report {
        benchmark: "zc-send",
        command: o
            .command
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        cpu,
        runs: o.runs,
        secs: o.secs,
        inflight: o.inflight,
        rows,
        fixed_over_send,
        crossover,
        records,
    };
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let json = o.out.join("zc-send.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("json: {}", json.display());
    Ok(())
}

/// A network namespace with the veth pair (`zc0` up, `zc1` down), removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Result<Netns> {
        let ns = Netns {
            name: format!("relay-zc-{}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name])?;
        let n = ns.name.as_str();
        ip(&[
            "-n", n, "link", "add", "zc0", "type", "veth", "peer", "name", "zc1",
        ])?;
        ip(&["-n", n, "link", "set", "zc1", "mtu", "65535"])?;
        ip(&["-n", n, "link", "set", "zc0", "mtu", "65535", "up"])?;
        ip(&["-n", n, "addr", "add", LOCAL, "dev", "zc0"])?;
        ip(&[
            "-n",
            n,
            "neigh",
            "add",
            PEER_ADDR,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "zc0",
            "nud",
            "permanent",
        ])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Enters the namespace (this thread only), pins, and runs every size and method.
fn measure(
    ns: &str,
    cpu: usize,
    sizes: &[usize],
    runs: u32,
    secs: f64,
    inflight: usize,
) -> Result<Vec<RunRecord>> {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .with_context(|| format!("opening netns {ns}"))?;
    // SAFETY: setns on a namespace fd we hold open; it moves only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("entering the namespace");
    }
    sys::pin_current_thread(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    let tid = sys::gettid();
    let mut records = Vec::new();
    for run in 1..=runs {
        for &size in sizes {
            let mut order = Method::ALL;
            order.rotate_left(run as usize % Method::ALL.len());
            for method in order {
                let mut s = Sender::new(size, inflight, method)?;
                let before = sys::thread_cpu_ns(tid)?;
                let (bytes, took, copied) = s.run(Duration::from_secs_f64(secs))?;
                let cpu_s = (sys::thread_cpu_ns(tid)? - before) as f64 / 1e9;
                records.push(RunRecord {
                    size,
                    method,
                    run,
                    bytes,
                    secs: took,
                    cpu_s,
                    copied,
                });
            }
        }
    }
    Ok(records)
}

/// One socket and one ring sending `size`-byte datagrams, `inflight` at a time.
struct Sender {
    ring: IoUring,
    sock: UdpSocket,
    /// `inflight` page-aligned slots of `size` bytes (registered for `send_zc_fixed`).
    buf: Vec<u8>,
    stride: usize,
    size: usize,
    inflight: usize,
    method: Method,
}

impl Sender {
    fn new(size: usize, inflight: usize, method: Method) -> Result<Sender> {
        let sock = UdpSocket::bind("0.0.0.0:0").context("UDP socket in the namespace")?;
        sock.connect(PEER).context("connecting the UDP socket")?;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .build(256)
            .context("io_uring")?;
        let stride = size.div_ceil(4096) * 4096;
        let buf: Vec<u8> = (0..stride * inflight)
            .map(|i| (i as u8).wrapping_mul(31))
            .collect();
        if method == Method::SendZcFixed {
            let iov = [libc::iovec {
                iov_base: buf.as_ptr() as *mut _,
                iov_len: buf.len(),
            }];
            // SAFETY: the iovec covers `buf`, which lives (unmoved: a Vec's heap block) as
            // long as the ring, which unregisters it when dropped first (field order).
            unsafe { ring.submitter().register_buffers(&iov) }.context("registering")?;
        }
        Ok(Sender {
            ring,
            sock,
            buf,
            stride,
            size,
            inflight,
            method,
        })
    }

    fn push(&mut self, slot: usize) -> Result<()> {
        let fd = types::Fd(self.sock.as_raw_fd());
        let ptr = self.buf[slot * self.stride..].as_ptr();
        let len = self.size as u32;
        let sqe = match self.method {
            Method::Send => opcode::Send::new(fd, ptr, len).build(),
            Method::SendZc => opcode::SendZc::new(fd, ptr, len)
                .zc_flags(REPORT_USAGE)
                .build(),
            Method::SendZcFixed => opcode::SendZc::new(fd, ptr, len)
                .buf_index(Some(0))
                .zc_flags(REPORT_USAGE)
                .build(),
        }
        .user_data(slot as u64);
        // SAFETY: the slot's bytes stay untouched until its completion (and, for zero-copy,
        // its notification) has been reaped: a slot is pushed again only after that.
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| anyhow::anyhow!("submission queue full"))
    }

    /// Sends for `dur`, then drains; returns (bytes sent, seconds, copied notifications).
    fn run(&mut self, dur: Duration) -> Result<(u64, f64, u64)> {
        for slot in 0..self.inflight {
            self.push(slot)?;
        }
        let zc = self.method != Method::Send;
        let (mut bytes, mut copied, mut outstanding) = (0u64, 0u64, self.inflight);
        let started = Instant::now();
        let mut stopping = false;
        while outstanding > 0 {
            self.ring.submit_and_wait(1).context("io_uring_enter")?;
            stopping |= started.elapsed() >= dur;
            let done: Vec<(u64, i32, u32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (slot, res, flags) in done {
                if zc && !cqueue::notif(flags) {
                    if res < 0 {
                        bail!(
                            "{}: {}",
                            self.method.name(),
                            std::io::Error::from_raw_os_error(-res)
                        );
                    }
                    bytes += res as u64;
                    if cqueue::more(flags) {
                        continue; // the notification ends the slot
                    }
                } else if zc {
                    if res & ZC_COPIED != 0 {
                        copied += 1;
                    }
                } else {
                    if res < 0 {
                        bail!("send: {}", std::io::Error::from_raw_os_error(-res));
                    }
                    bytes += res as u64;
                }
                if stopping {
                    outstanding -= 1;
                } else {
                    self.push(slot as usize)?;
                }
            }
        }
        Ok((bytes, started.elapsed().as_secs_f64(), copied))
    }
}

fn rows(records: &[RunRecord], sizes: &[usize]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &size in sizes {
        for method in Method::ALL {
            let mine: Vec<&RunRecord> = records
                .iter()
                .filter(|r| r.size == size && r.method == method)
                .collect();
            let copied = mine.iter().map(|r| r.copied).sum();
            let counted: Vec<&&RunRecord> = mine.iter().filter(|r| r.copied == 0).collect();
            let gb = |r: &RunRecord| r.bytes as f64 / 1e9;
            rows.push(Row {
                size,
                method,
                gbps: Stat::of(&counted.iter().map(|r| gb(r) / r.secs).collect::<Vec<_>>()),
                cpu_s_per_gb: Stat::of(
                    &counted
                        .iter()
                        .map(|r| r.cpu_s / gb(r).max(1e-12))
                        .collect::<Vec<_>>(),
                ),
                copied,
            });
        }
    }
    rows
}

/// send_zc_fixed's CPU per GB over send's, paired by run (None if any run copied).
fn paired(records: &[RunRecord], size: usize) -> Option<Stat> {
    let find = |m: Method, run: u32| {
        records
            .iter()
            .find(|r| r.size == size && r.method == m && r.run == run)
    };
    let per_gb = |r: &RunRecord| r.cpu_s / (r.bytes as f64 / 1e9).max(1e-12);
    let mut ratios = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.size == size && r.method == Method::Send)
    {
        let z = find(Method::SendZcFixed, r.run)?;
        if z.copied > 0 {
            return None;
        }
        ratios.push(per_gb(z) / per_gb(r));
    }
    Stat::of(&ratios)
}

/// The smallest size from which on (every larger measured size too) zero-copy from fixed
/// buffers costs less CPU per GB than the copy.
fn crossover(ratios: &[(usize, Option<Stat>)]) -> Option<usize> {
    let mut sorted: Vec<_> = ratios.to_vec();
    sorted.sort_by_key(|(s, _)| *s);
    let mut from = None;
    for (size, r) in sorted {
        match r {
            Some(r) if r.median < 1.0 => {
                from.get_or_insert(size);
            }
            _ => from = None,
        }
    }
    from
}

fn print_table(
    o: &Options,
    cpu: usize,
    ns: &str,
    rows: &[Row],
    fixed_over_send: &[(usize, Option<Stat>)],
    crossover: Option<usize>,
) {
    let machine = crate::machine::Machine::probe(std::path::Path::new("/nonexistent"));
    println!(
        "relay bench zc-send: UDP datagrams through a veth whose peer is down (netns {ns}, MTU \
         65535): sent, never delivered"
    );
    println!("machine: {}", machine.line());
    println!(
        "sender: one io_uring thread pinned to CPU {cpu}, {} sends in flight; {} runs of {} s \
         per size and method, methods interleaved; cells: median (min-max)",
        o.inflight, o.runs, o.secs
    );
    println!();
    println!(
        "{:>7}  {:<14} {:>22} {:>26} {:>7}",
        "size", "method", "GB/s", "CPU s/GB", "copied"
    );
    let cell = |s: &Option<Stat>, p: usize| match s {
        Some(s) => format!("{:.p$} ({:.p$}-{:.p$})", s.median, s.min, s.max),
        None => "-".into(),
    };
    for r in rows {
        println!(
            "{:>7}  {:<14} {:>22} {:>26} {:>7}",
            r.size,
            r.method.name(),
            cell(&r.gbps, 2),
            cell(&r.cpu_s_per_gb, 3),
            r.copied
        );
        if r.method == Method::SendZcFixed
            && let Some((_, ratio)) = fixed_over_send.iter().find(|(s, _)| *s == r.size)
        {
            println!(
                "{:>7}  {:<14} {:>49}",
                "",
                "fixed/send",
                format!("{} CPU/GB", cell(ratio, 2))
            );
        }
    }
    println!();
    match crossover {
        Some(size) => println!(
            "zero-copy from registered buffers costs less CPU per GB than the copy from {size} \
             bytes on (server.zerocopy_min_bytes)"
        ),
        None => println!("zero-copy from registered buffers never cost less than the copy here"),
    }
    println!(
        "a zero-copy run whose notifications reported a copy is not counted (the copied column)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(median: f64) -> Option<Stat> {
        Stat::of(&[median])
    }

    #[test]
    fn the_crossover_is_where_zero_copy_stays_cheaper() {
        let r = |v: &[(usize, f64)]| {
            crossover(&v.iter().map(|&(s, m)| (s, stat(m))).collect::<Vec<_>>())
        };
        assert_eq!(r(&[(4096, 1.2), (16384, 0.9), (65000, 0.5)]), Some(16384));
        // Cheaper once at a small size, dearer again above it: from the size where it stays.
        assert_eq!(r(&[(4096, 0.9), (8192, 1.1), (16384, 0.8)]), Some(16384));
        assert_eq!(r(&[(4096, 1.2), (65000, 1.01)]), None);
        assert_eq!(crossover(&[(4096, None), (8192, stat(0.5))]), Some(8192));
    }
}

//! `cargo xtask bench steer` runs this: nanoseconds per packet through `BPF_PROG_TEST_RUN`
//! for the paths of `relay_steer`, next to `relay_noop` (the floor), printed as a table.
//! Needs root and the embedded object (`RELAY_EBPF_OBJECT`).
//!
//! Two modes, each with its own floor:
//! - `repeat`: one call, the packet run `REPEAT` times in the kernel. Only for paths that leave
//!   the packet alone (the kernel does not restore it between repeats, so an encapsulation
//!   would pile up): non-service traffic and an established flow to the local node.
//! - `calls`: `CALLS` calls of one run each (fresh packet every time), averaging the kernel's
//!   own per-run time: new flows (a different 5-tuple per call) and established flows to a
//!   remote node (IPIP encapsulation and XDP_TX).
//!
//! New flows are TCP SYNs; established flows are ACKs of a flow opened before the timing.
//!
//! Then packets per second across a veth pair between two namespaces, with the program on the
//! receiving end in native and skb mode (see `veth.rs`); `--no-veth` skips that part.

#[allow(
    dead_code,
    reason = "shared with relay-tests; not every helper is used here"
)]
#[path = "../../../../tests/src/netns.rs"]
mod netns;
mod veth;

use std::time::Instant;

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use relay_common::{NOOP_PROGRAM, XDP_PROGRAM};
use relay_steer::{Plan, SteerMaps};

const REPEAT: u32 = 100_000;
const CALLS: u32 = 100_000;

const CONFIG: &str = r#"
[origin]
directory = "/"
[steer]
encap_source_v4 = "10.200.252.0/24"
[[steer.services]]
address = "10.200.251.1"
port = 8080
[[steer.nodes]]
name = "NODE"
address = "10.200.250.11"
mac = "02:00:00:00:fa:11"
LOCAL
"#;

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench steer: needs root to load XDP programs");
        std::process::exit(1);
    }
    let object = relay_steer::object().unwrap_or_else(|e| {
        eprintln!("bench steer: {e}");
        std::process::exit(1)
    });
    pin_to_cpu0();
    let config = |local: bool| {
        CONFIG
            .replace("NODE", if local { "self" } else { "r1" })
            .replace("LOCAL", if local { "local = true" } else { "" })
    };
    let remote = Bench::new(object, &config(false));
    let local = Bench::new(object, &config(true));

    let tcp = |sport: u16, src: u8, flags: u8| {
        frame([10, 200, src, 7], [10, 200, 251, 1], sport, 8080, flags)
    };
    let syn = |sport: u16, src: u8| tcp(sport, src, 0x02);
    // An established flow's packets are ACKs (its first one, below, opens the flow).
    let established = tcp(40000, 1, 0x10);
    let other = frame([10, 200, 1, 7], [10, 200, 9, 9], 40000, 80, 0x10);

    let mut rows = Vec::new();
    let floor_repeat = local.repeat(NOOP_PROGRAM, &established);
    rows.push((
        "no-op program (floor)",
        "repeat",
        floor_repeat,
        floor_repeat,
    ));
    rows.push((
        "non-service packet → pass",
        "repeat",
        local.repeat(XDP_PROGRAM, &other),
        floor_repeat,
    ));
    local.calls(XDP_PROGRAM, 1, |_| established.clone());
    rows.push((
        "established flow → local (pass)",
        "repeat",
        local.repeat(XDP_PROGRAM, &established),
        floor_repeat,
    ));
    let floor_calls = remote.calls(NOOP_PROGRAM, CALLS, |_| established.clone());
    rows.push(("no-op program (floor)", "calls", floor_calls, floor_calls));
    rows.push((
        "new flow SYN → remote (IPIP, tx)",
        "calls",
        remote.calls(XDP_PROGRAM, CALLS, |i| {
            syn(1024 + (i % 60000) as u16, 10 + (i / 60000) as u8)
        }),
        floor_calls,
    ));
    rows.push((
        "established flow → remote (IPIP, tx)",
        "calls",
        remote.calls(XDP_PROGRAM, CALLS, |_| tcp(40000, 200, 0x10)),
        floor_calls,
    ));
    rows.push((
        "non-service packet → pass",
        "calls",
        remote.calls(XDP_PROGRAM, CALLS, |_| other.clone()),
        floor_calls,
    ));

    println!(
        "relay_steer through BPF_PROG_TEST_RUN (repeat: one call x {REPEAT} runs; calls: {CALLS} calls x 1 run)"
    );
    println!(
        "{:<40} {:>7} {:>10} {:>9}",
        "path", "mode", "ns/packet", "x floor"
    );
    for (path, mode, ns, floor) in rows {
        println!("{path:<40} {mode:>7} {ns:>10.1} {:>9.2}", ns / floor);
    }
    println!("targets: established ≤ 4x floor, new flows ≤ 8x floor");

    if std::env::args().any(|a| a == "--no-veth") {
        return;
    }
    let mut receiver = Bench::new(object, veth::CONFIG);
    println!();
    match veth::run_all(&mut receiver) {
        Ok(rows) => print_veth(&rows),
        Err(e) => println!("veth pair: not measured: {e}"),
    }
}

fn print_veth(rows: &[veth::Row]) {
    println!(
        "packets/s across a veth pair (AF_PACKET sender, batches of 64, 0.5 s windows, median \
         of {} rounds) with the program on the receiving end; CPU 0 runs sender and receiver",
        veth::ROUNDS
    );
    println!(
        "{:<40} {:>7} {:>11} {:>11} {:>9} {:>11}",
        "path", "mode", "sent/s", "handled/s", "x no-op", "counted/s"
    );
    for row in rows {
        let floor = rows
            .iter()
            .find(|r| r.mode == row.mode)
            .map_or(f64::NAN, |r| r.handled_per_s);
        let counted = row
            .counted_per_s
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}"));
        println!(
            "{:<40} {:>7} {:>11.0} {:>11.0} {:>9.2} {:>11}",
            row.path,
            row.mode,
            row.sent_per_s,
            row.handled_per_s,
            row.handled_per_s / floor,
            counted
        );
    }
}

struct Bench {
    ebpf: aya::Ebpf,
    maps: SteerMaps,
}

impl Bench {
    /// Loads both programs and fills the maps from the `[steer]` of `text`.
    fn new(object: &[u8], text: &str) -> Self {
        let steer = relay_config::Config::from_str(text, std::path::Path::new("/"), "bench")
            .expect("bench config")
            .steer;
        let plan = Plan::build(&steer, |_| unreachable!("no next hops")).expect("plan");
        let mut ebpf = relay_steer::loader(&plan)
            .load(object)
            .expect("load the object");
        for name in [XDP_PROGRAM, NOOP_PROGRAM] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .expect("program")
                .try_into()
                .expect("XDP");
            program.load().expect("verifier");
        }
        let mut maps = SteerMaps::from_ebpf(&mut ebpf).expect("maps");
        maps.sync(&plan).expect("sync");
        Self { ebpf, maps }
    }

    fn program_mut(&mut self, name: &str) -> &mut Xdp {
        self.ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("XDP")
    }

    /// Packets `relay_steer` counted so far (all verdicts, all CPUs).
    fn counted(&self) -> u64 {
        self.maps
            .counters()
            .expect("counters")
            .iter()
            .map(|c| c.packets)
            .sum()
    }

    fn program(&self, name: &str) -> &Xdp {
        self.ebpf
            .program(name)
            .expect("program")
            .try_into()
            .expect("XDP")
    }

    /// ns per run of `input`, run `REPEAT` times in one call.
    fn repeat(&self, name: &str, input: &[u8]) -> f64 {
        let mut out = vec![0u8; input.len() + 256];
        let result = self
            .program(name)
            .test_run(TestRunOptions {
                data_in: Some(input),
                data_out: Some(&mut out),
                repeat: REPEAT,
                ..TestRunOptions::default()
            })
            .expect("test_run");
        result.duration.as_nanos() as f64
    }

    /// Mean kernel-measured ns of `calls` single runs of `input(i)`.
    fn calls(&self, name: &str, calls: u32, input: impl Fn(u32) -> Vec<u8>) -> f64 {
        let program = self.program(name);
        let mut total = 0u128;
        let started = Instant::now();
        for i in 0..calls {
            let data = input(i);
            let mut out = vec![0u8; data.len() + 256];
            let result = program
                .test_run(TestRunOptions {
                    data_in: Some(&data),
                    data_out: Some(&mut out),
                    repeat: 1,
                    ..TestRunOptions::default()
                })
                .expect("test_run");
            total += result.duration.as_nanos();
            if started.elapsed().as_secs() > 60 {
                return total as f64 / f64::from(i + 1);
            }
        }
        total as f64 / f64::from(calls.max(1))
    }
}

/// Ethernet / IPv4 / TCP with `flags`.
fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xFFFF) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f
}

/// Ethernet / IPv4 / UDP with 18 bytes of payload (a 60-byte frame), to the veth pair's
/// receiving end.
fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xFFFF) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&26u16.to_be_bytes());
    f.extend_from_slice(&udp);
    f.extend_from_slice(&[0x55; 18]);
    f
}

/// Per-CPU maps and steady timings: stay on one CPU.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes into it; pid 0 is this
    // thread and the size matches the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

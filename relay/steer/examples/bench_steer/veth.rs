//! Packets per second across a veth pair: a bounded AF_PACKET sender in one namespace, the
//! program under test on the receiving end in another, in native (driver) and skb (generic)
//! mode, for `relay_noop` and for `relay_steer`'s pass and drop paths.
//!
//! ```text
//!   ns "bst": bs-tx 10.200.240.1 ──veth── bs-rx 10.200.240.2 (program attached) :ns "bsr"
//! ```
//! "Handled" is the receiving veth's `rx_packets` over the sending window (read from
//! `/proc/thread-self/net/dev` inside its namespace): in native mode veth counts every packet
//! its XDP program ran on, in skb mode every packet that entered the backlog, where generic
//! XDP runs on it. For `relay_steer` the program's own counters are read too, as a check.
//! The sender and the receive path share CPU 0 (the benchmark pins itself there), so a
//! cheaper program leaves more of that CPU to the sender: the ratio to the no-op program is
//! the comparable figure, the absolute rate depends on the machine. Each mode runs
//! [`ROUNDS`] rounds over all its paths, [`WINDOW`] each; a row is the median of its rounds.
//!
//! Both namespaces (and with them the veth pair) are removed by their guards, also when the
//! benchmark panics. Every loop is bounded in frames and in time.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use aya::programs::{Xdp, XdpMode};
use relay_common::{NOOP_PROGRAM, XDP_PROGRAM};

use crate::Bench;
use crate::netns::{Namespace, in_netns, run};

/// Most frames sent per measurement, and the longest one sends.
const MAX_FRAMES: u64 = 10_000_000;
const WINDOW: Duration = Duration::from_millis(500);
/// Rounds over all paths of a mode; each row reports its median round (the machine is shared,
/// and interleaving the paths spreads any change of load over all of them).
pub const ROUNDS: usize = 5;
/// Frames per `sendmmsg` call.
const BATCH: usize = 64;

const TX_IF: &str = "bs-tx";
const RX_IF: &str = "bs-rx";
const TX_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const RX_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// The steering config of the receiving end: one UDP service served here, a blocked prefix.
pub const CONFIG: &str = r#"
[origin]
directory = "/"
[steer]
encap_source_v4 = "10.200.252.0/24"
[steer.guard]
blocklist = ["10.200.243.0/24"]
[[steer.services]]
address = "10.200.241.1"
port = 9000
protocol = "udp"
[[steer.nodes]]
name = "self"
local = true
"#;

/// The two namespaces joined by the veth pair.
struct Pair {
    tx: Namespace,
    rx: Namespace,
}

impl Pair {
    fn new() -> io::Result<Pair> {
        let pair = Pair {
            tx: Namespace::new("bst")?,
            rx: Namespace::new("bsr")?,
        };
        let (tx, rx) = (&pair.tx, &pair.rx);
        run(tx.ip().args([
            "link",
            "add",
            TX_IF,
            "type",
            "veth",
            "peer",
            "name",
            RX_IF,
            "netns",
            rx.name(),
        ]))?;
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        run(tx
            .ip()
            .args(["link", "set", TX_IF, "address", &mac(TX_MAC)]))?;
        run(rx
            .ip()
            .args(["link", "set", RX_IF, "address", &mac(RX_MAC)]))?;
        run(tx
            .ip()
            .args(["addr", "add", "10.200.240.1/24", "dev", TX_IF]))?;
        run(rx
            .ip()
            .args(["addr", "add", "10.200.240.2/24", "dev", RX_IF]))?;
        run(tx.ip().args(["link", "set", TX_IF, "up"]))?;
        run(rx.ip().args(["link", "set", RX_IF, "up"]))?;
        // Nothing is forwarded out of the receiving namespace, whatever passes.
        rx.sysctl("net/ipv4/ip_forward", "0")?;
        Ok(pair)
    }

    /// `rx_packets` of the receiving veth.
    fn rx_packets(&self) -> io::Result<u64> {
        in_netns(self.rx.name(), || {
            let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
            text.lines()
                .find_map(|line| {
                    let (name, rest) = line.split_once(':')?;
                    (name.trim() == RX_IF).then(|| rest.split_whitespace().nth(1)?.parse().ok())?
                })
                .ok_or_else(|| io::Error::other(format!("{RX_IF} not in /proc/net/dev")))
        })?
    }
}

/// One row of the table.
pub struct Row {
    pub path: &'static str,
    pub mode: &'static str,
    pub sent_per_s: f64,
    pub handled_per_s: f64,
    /// Packets `relay_steer` counted, per second (None for the no-op program).
    pub counted_per_s: Option<f64>,
}

/// Runs every row; `Err` when the namespaces or an attachment cannot be made.
pub fn run_all(bench: &mut Bench) -> io::Result<Vec<Row>> {
    let pair = Pair::new()?;
    let other = crate::udp_frame([10, 200, 240, 1], [10, 200, 242, 9], 40000, 9);
    let service = crate::udp_frame([10, 200, 240, 1], [10, 200, 241, 1], 40000, 9000);
    let blocked = crate::udp_frame([10, 200, 243, 5], [10, 200, 241, 1], 40000, 9000);
    let cases: [(&'static str, &'static str, &[u8]); 4] = [
        ("no-op program → pass", NOOP_PROGRAM, &other),
        ("non-service packet → pass", XDP_PROGRAM, &other),
        ("established flow → local (pass)", XDP_PROGRAM, &service),
        ("blocked source → drop", XDP_PROGRAM, &blocked),
    ];
    let mut rows = Vec::new();
    for (mode_name, mode) in [("native", XdpMode::Driver), ("skb", XdpMode::Skb)] {
        let mut samples = vec![Vec::new(); cases.len()];
        for _ in 0..ROUNDS {
            for ((path, program, frame), samples) in cases.iter().zip(&mut samples) {
                samples.push(
                    measure(bench, &pair, program, mode, frame)
                        .map_err(|e| io::Error::other(format!("{path} ({mode_name}): {e}")))?,
                );
            }
        }
        for ((path, program, _), mut samples) in cases.into_iter().zip(samples) {
            samples.sort_by(|a, b| a.handled_per_s.total_cmp(&b.handled_per_s));
            let median = samples[samples.len() / 2];
            rows.push(Row {
                path,
                mode: mode_name,
                sent_per_s: median.sent_per_s,
                handled_per_s: median.handled_per_s,
                counted_per_s: (program == XDP_PROGRAM).then_some(median.counted_per_s),
            });
        }
    }
    drop(pair);
    Ok(rows)
}

/// One measurement: rates per second.
#[derive(Clone, Copy)]
struct Sample {
    sent_per_s: f64,
    handled_per_s: f64,
    counted_per_s: f64,
}

/// Attaches `program` to the receiving end in `mode`, sends `frame` for one window, detaches.
fn measure(
    bench: &mut Bench,
    pair: &Pair,
    program: &str,
    mode: XdpMode,
    frame: &[u8],
) -> io::Result<Sample> {
    let link = {
        let program: &mut Xdp = bench.program_mut(program);
        in_netns(pair.rx.name(), || program.attach(RX_IF, mode))?
            .map_err(|e| io::Error::other(format!("attach: {e}")))?
    };
    let counted_before = bench.counted();
    let rx_before = pair.rx_packets()?;
    let sent = in_netns(pair.tx.name(), || send(frame))?;
    // Let the receive path drain its queues before counting.
    std::thread::sleep(Duration::from_millis(50));
    let rx_after = pair.rx_packets();
    let counted = bench.counted() - counted_before;
    bench
        .program_mut(program)
        .detach(link)
        .map_err(|e| io::Error::other(format!("detach: {e}")))?;
    let (sent, elapsed) = sent?;
    let secs = elapsed.as_secs_f64();
    Ok(Sample {
        sent_per_s: sent as f64 / secs,
        handled_per_s: (rx_after? - rx_before) as f64 / secs,
        counted_per_s: counted as f64 / secs,
    })
}

/// Sends `frame` from `bs-tx` (this thread is in its namespace) in batches, until
/// [`MAX_FRAMES`] are sent or [`WINDOW`] has passed. Returns frames sent and the time taken.
fn send(frame: &[u8]) -> io::Result<(u64, Duration)> {
    // Protocol 0: the socket sends and receives nothing it did not send.
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value is a c_int that outlives the call, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the name is a NUL-terminated literal.
    let index = unsafe { libc::if_nametoindex(c"bs-tx".as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set below are plain integers.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&RX_MAC);
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr().cast_mut().cast(),
        iov_len: frame.len(),
    };
    // SAFETY: a zeroed msghdr is valid (null pointers, zero lengths); filled in below.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_name = (&raw mut addr).cast();
    header.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
    header.msg_iov = &raw mut iov;
    header.msg_iovlen = 1;
    let mut batch: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| libc::mmsghdr {
            msg_hdr: header,
            msg_len: 0,
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut calls = 0u64;
    while sent < MAX_FRAMES && started.elapsed() < WINDOW {
        // SAFETY: every header points at `addr`, `iov` and `frame`, which outlive the call
        // and are only read by the kernel; `batch` holds BATCH valid headers.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                batch.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
            )
        };
        calls += 1;
        if n > 0 {
            sent += n as u64;
        } else if calls > MAX_FRAMES {
            // Every call failing (a full queue): still bounded, by calls.
            break;
        }
    }
    Ok((sent, started.elapsed()))
}

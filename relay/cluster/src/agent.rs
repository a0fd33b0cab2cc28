//! The cluster's I/O: one thread owns the gossip socket and the timers and drives a
//! [`Node`]. Plain std: a blocking UDP socket whose read timeout is the next timer.

use crate::node::{Node, NodeId, Output, Received, Tick};
use crate::record::{Record, Records};
use crate::seal::Key;
use relay_config::ClusterConfig;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// While this relay knows no member, it announces itself to its seeds this often (a relay
/// whose link came back rejoins within it).
const REANNOUNCE: Duration = Duration::from_millis(500);
/// Former members a relay that knows no member announces itself to each time, besides its
/// seeds: the latest ones.
const ANNOUNCE_FORMER: usize = 16;
/// How often this relay publishes its record again (see `record`).
const REPUBLISH: Duration = Duration::from_secs(30);
/// The longest the loop sleeps without looking at its stop flag.
const LONGEST_WAIT: Duration = Duration::from_millis(200);

/// foca's settings for a cluster of about `size` members on a LAN or a WAN (derived from
/// memberlist's defaults; `docs/CLUSTER.md` gives the detection bounds they make).
pub fn timings(wan: bool, size: u32) -> foca::Config {
    let n = std::num::NonZeroU32::new(size.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    match wan {
        true => foca::Config::new_wan(n),
        false => foca::Config::new_lan(n),
    }
}

/// What the agent shows the rest of relay.
pub struct View {
    members: Mutex<Vec<NodeId>>,
    received: Mutex<Received>,
    records: Records,
}

impl View {
    /// The live members, this relay not included.
    pub fn members(&self) -> Vec<NodeId> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The records known: this relay's and its members'.
    pub fn records(&self) -> Vec<Record> {
        self.records.all()
    }

    /// The records of the live members of `site` and this relay's own (`me`): a record may
    /// outlive its member a little, so records alone are not the members.
    pub fn site_records(&self, me: SocketAddr, site: &str) -> Vec<Record> {
        let live: Vec<SocketAddr> = self.members().iter().map(|m| m.addr).collect();
        let mut records = self.records();
        records.retain(|r| (r.node == me || live.contains(&r.node)) && r.site == site);
        records
    }

    /// What the agent received, by outcome.
    pub fn received(&self) -> Received {
        *self.received.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Prometheus text: the members and the packets received by outcome.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let r = self.received();
        let _ = writeln!(
            out,
            "# HELP relay_cluster_members Live members of the cluster, this relay not included.\n\
             # TYPE relay_cluster_members gauge\nrelay_cluster_members {}\n\
             # HELP relay_cluster_packets_total Gossip packets received, by outcome (every \
             packet that is not accepted is dropped).\n\
             # TYPE relay_cluster_packets_total counter",
            self.members().len()
        );
        let _ = writeln!(
            out,
            "# HELP relay_cluster_member_info What each member says of itself (this relay \
             included): its site, HTTP address, weight and load (connections open).\n\
             # TYPE relay_cluster_member_info gauge"
        );
        let mut records = self.records();
        records.sort_by_key(|r| r.node);
        for r in records {
            // (The site is checked at its source and on receipt: at most 64 bytes; quotes
            // and backslashes are escaped here as the text format asks.)
            let site = r
                .site
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                out,
                "relay_cluster_member_info{{node=\"{}\",site=\"{site}\",http=\"{}\",weight=\"{}\",\
                 load=\"{}\"}} 1",
                r.node, r.http, r.weight, r.load
            );
        }
        for (result, n) in [
            ("accepted", r.accepted),
            ("malformed", r.malformed),
            ("bad_mac", r.bad_mac),
            ("stale", r.stale),
            ("replay", r.replay),
            ("refused", r.refused),
        ] {
            let _ = writeln!(
                out,
                "relay_cluster_packets_total{{result=\"{result}\"}} {n}"
            );
        }
    }
}

/// The running agent; stopped (leaving the cluster) by [`Agent::stop`] or on drop.
pub struct Agent {
    pub view: Arc<View>,
    /// The address the others send to.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The ETag of this relay's digest, for its record (0: none yet).
    digest: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    /// Binds the socket `config` names and starts the thread, under the cluster `key`,
    /// saying in its record that this relay serves HTTP at `http` (an unspecified address
    /// there becomes the gossip address's).
    /// `load` says how loaded this relay is (its connections open), asked once a second.
    pub fn start(
        config: &ClusterConfig,
        key: Key,
        http: SocketAddr,
        load: Box<dyn Fn() -> u32 + Send>,
    ) -> io::Result<Agent> {
        let socket = UdpSocket::bind(config.listen)?;
        let addr = match config.advertise {
            Some(a) => a,
            None => socket.local_addr()?,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let id = NodeId {
            addr,
            boot: now_ms(),
        };
        let timings = timings(config.wan, config.size);
        let http = match http.ip().is_unspecified() {
            true => SocketAddr::new(addr.ip(), http.port()),
            false => http,
        };
        let record = Record {
            node: addr,
            version: 0,
            site: config.site.clone(),
            http,
            weight: config.weight,
            steer: config.steer_address.unwrap_or(addr.ip()),
            digest: 0,
            load: 0,
        };
        let seed = id.boot ^ u64::from(std::process::id());
        let node = Node::new(id, key, timings, seed, record);
        let view = Arc::new(View {
            members: Mutex::default(),
            received: Mutex::default(),
            records: node.records().clone(),
        });
        let digest = Arc::new(AtomicU64::new(0));
        let (v, st, dg) = (view.clone(), stop.clone(), digest.clone());
        let seeds: Vec<SocketAddr> = config
            .seeds
            .iter()
            .copied()
            .filter(|&a| a != addr)
            .collect();
        let thread = std::thread::Builder::new()
            .name("relay-cluster".into())
            .spawn(move || run(socket, node, seeds, &v, &st, &dg, &*load))?;
        Ok(Agent {
            view,
            addr,
            stop,
            digest,
            thread: Some(thread),
        })
    }

    /// Where to say this relay's digest's ETag: the agent puts a new one in its record and
    /// tells the others.
    pub fn digest_etag(&self) -> Arc<AtomicU64> {
        self.digest.clone()
    }

    /// Leaves the cluster (the others learn it at once) and ends the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.halt();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The timers the node asked for, in the order they fire.
#[derive(Default)]
struct Timers {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    timers: HashMap<u64, Tick>,
    next: u64,
}

impl Timers {
    fn add(&mut self, at: Instant, t: Tick) {
        self.next += 1;
        self.due.push(Reverse((at, self.next)));
        self.timers.insert(self.next, t);
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Tick> {
        let &Reverse((at, k)) = self.due.peek()?;
        if at > now {
            return None;
        }
        self.due.pop();
        self.timers.remove(&k)
    }
}

fn run(
    socket: UdpSocket,
    mut node: Node,
    seeds: Vec<SocketAddr>,
    view: &View,
    stop: &AtomicBool,
    digest: &AtomicU64,
    load: &dyn Fn() -> u32,
) {
    let mut last_load: Option<Instant> = None;
    let mut timers = Timers::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let mut last_announce: Option<Instant> = None;
    let mut last_publish: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if last_publish.is_none_or(|t| now.duration_since(t) >= REPUBLISH) {
            node.publish(now_ms());
            last_publish = Some(now);
        }
        if node.set_digest(digest.load(Ordering::Relaxed), now_ms()) {
            last_publish = Some(now);
        }
        if last_load.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            last_load = Some(now);
            if node.set_load(load(), now_ms()) {
                last_publish = Some(now);
            }
        }
        if node.members().next().is_none()
            && last_announce.is_none_or(|t| now.duration_since(t) >= REANNOUNCE)
        {
            for s in announce_to(&seeds, node.former(), node.id().addr) {
                node.announce(s, now_ms(), &mut out);
            }
            last_announce = Some(now);
        }
        while let Some(t) = timers.pop_due(now) {
            node.on_timer(t, now_ms(), &mut out);
        }
        apply(&socket, &node, &mut out, &mut timers, view);
        let wait = timers
            .next_due()
            .map_or(LONGEST_WAIT, |at| {
                at.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_millis(1), LONGEST_WAIT);
        let _ = socket.set_read_timeout(Some(wait));
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            // Dropped packets are counted by the node and change nothing.
            let _ = node.on_packet(&buf[..n], now_ms(), &mut out);
            *view.received.lock().unwrap_or_else(|p| p.into_inner()) = node.received;
            apply(&socket, &node, &mut out, &mut timers, view);
        }
    }
    node.leave(now_ms(), &mut out);
    for o in out.drain(..) {
        if let Output::Send { to, packet } = o {
            let _ = socket.send_to(&packet, to);
        }
    }
}

/// Whom a relay that knows no member announces itself to: its seeds and the latest of its
/// former members ([`ANNOUNCE_FORMER`]), itself never.
pub fn announce_to(seeds: &[SocketAddr], former: &[SocketAddr], me: SocketAddr) -> Vec<SocketAddr> {
    let mut to: Vec<SocketAddr> = seeds.iter().copied().filter(|&s| s != me).collect();
    let seeded = to.len();
    for &a in former.iter().rev() {
        if to.len() == seeded + ANNOUNCE_FORMER {
            break;
        }
        if a != me && !to.contains(&a) {
            to.push(a);
        }
    }
    to
}

/// Carries out what the node asked for.
fn apply(socket: &UdpSocket, node: &Node, out: &mut Vec<Output>, timers: &mut Timers, view: &View) {
    let mut changed = false;
    for o in out.drain(..) {
        match o {
            Output::Send { to, packet } => {
                // (A send that fails is a lost packet; SWIM tolerates those.)
                let _ = socket.send_to(&packet, to);
            }
            Output::Timer { after, timer } => timers.add(Instant::now() + after, timer),
            Output::Up(id) => {
                log::info!("cluster: {} is a member (life {})", id.addr, id.boot);
                changed = true;
            }
            Output::Down(id) => {
                log::warn!("cluster: {} declared down (life {})", id.addr, id.boot);
                changed = true;
            }
            Output::Rejoined(id) => log::warn!(
                "cluster: the others had declared this relay down; rejoined as life {}",
                id.boot
            ),
            Output::Defunct => log::error!(
                "cluster: the others declared this relay down and it cannot rejoin by itself"
            ),
            Output::Alone(id) => {
                log::warn!(
                    "cluster: members declared down while this relay heard no one (its own \
                     link, most likely), or its last member: starting afresh as life {}, \
                     announcing to the seeds",
                    id.boot
                );
                changed = true;
            }
        }
    }
    if changed {
        *view.members.lock().unwrap_or_else(|p| p.into_inner()) = node.members().copied().collect();
    }
}

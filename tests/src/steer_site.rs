//! A steering site in network namespaces joined by a bridge (10.200.250.0/24), shared by the
//! steering tests:
//!
//! ```text
//!   client ──┐                      ┌── relay namespaces (VIP on their `lo`)
//!            ├── lan: bridge br0 ───┤
//!   entry  ──┘  (XDP relay_steer)   └── ...
//! ```
//! The client routes the service address (VIP 10.200.251.1:8080) via the entry, whose
//! `relay_steer` picks a relay per flow and sends the packet back out encapsulated (IPIP,
//! XDP_TX) to that relay's MAC; each relay decapsulates (`relay_steer` with `decap = true`)
//! and answers the client directly. Every namespace is removed by its guard.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{Bridge, Namespace, in_netns, run};
use crate::{TempDir, relay_bin};

pub const VIP: &str = "10.200.251.1";
pub const PORT: u16 = 8080;
pub const CLIENT: &str = "10.200.250.2";
pub const ENTRY: &str = "10.200.250.3";
pub const ENTRY_MAC: &str = "02:00:00:00:fa:03";
pub const CLIENT_MAC: &str = "02:00:00:00:fa:02";
/// The outer source prefix of encapsulated packets (`steer.encap_source_v4`).
pub const ENCAP_SOURCE: &str = "10.200.252.0/24";

/// The site's namespaces; each guard deletes its namespace (and the links in it) on drop.
pub struct Site {
    pub lan: Bridge,
    pub client: Namespace,
    pub entry: Namespace,
    pub relays: Vec<Namespace>,
}

impl Site {
    /// The bridge, the client, the entry and one namespace per relay of `hosts` (name,
    /// address, MAC), each relay with the VIP on its `lo`.
    pub fn new(hosts: &[(&str, &str, &str)]) -> std::io::Result<Site> {
        let lan = Bridge::new("lan")?;
        // br_netfilter (when built in) would check IPv4 headers at the bridge and drop the
        // malformed burst before it reaches the entry: the wire should not be that tidy.
        for key in ["call-iptables", "call-ip6tables", "call-arptables"] {
            let _ = lan.ns.sysctl(&format!("net/bridge/bridge-nf-{key}"), "0");
        }
        let client = Namespace::new("cli")?;
        let entry = Namespace::new("ent")?;
        let mut relays = Vec::new();
        for _ in hosts {
            relays.push(Namespace::new("rel")?);
        }
        let site = Site {
            lan,
            client,
            entry,
            relays,
        };
        site.plug(&site.client, "p-cli", CLIENT, CLIENT_MAC)?;
        site.plug(&site.entry, "p-ent", ENTRY, ENTRY_MAC)?;
        for (ns, (name, addr, mac)) in site.relays.iter().zip(hosts) {
            site.plug(ns, &format!("p-{name}"), addr, mac)?;
            run(ns
                .ip()
                .args(["addr", "add", &format!("{VIP}/32"), "dev", "lo"]))?;
            ns.sysctl("net/ipv4/conf/all/arp_announce", "2")?;
            ns.sysctl("net/ipv4/conf/all/rp_filter", "0")?;
            ns.sysctl("net/ipv4/conf/eth0/rp_filter", "0")?;
        }
        run(site
            .client
            .ip()
            .args(["route", "add", &format!("{VIP}/32"), "via", ENTRY]))?;
        Ok(site)
    }

    /// A veth from `ns` (as `eth0`, with `addr`/24 and `mac`) to the bridge (as `port`).
    pub fn plug(&self, ns: &Namespace, port: &str, addr: &str, mac: &str) -> std::io::Result<()> {
        self.lan.plug(ns, port, &format!("{addr}/24"), Some(mac))
    }
}

/// The entry's `relay steer status` until its `nodes` line shows `addr=state` (every 20 ms,
/// at most 10 s); how long that took, or None.
pub fn wait_node_state(site: &Site, pins: &Path, addr: &str, state: &str) -> Option<Duration> {
    let want = format!("{addr}={state}");
    wait_nodes(site, pins, Duration::from_secs(10), |nodes| {
        nodes.contains(&want.as_str())
    })
}

/// The entry's `relay steer status` until `done` holds for the words of its `nodes` line
/// (`10.200.250.12=up`, ...; none when the line is absent), every 20 ms for at most
/// `within`; how long that took, or None.
pub fn wait_nodes(
    site: &Site,
    pins: &Path,
    within: Duration,
    done: impl Fn(&[&str]) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    // Bounded: by `within`, and by a count (each round sleeps 20 ms).
    for _ in 0..(within.as_millis() / 20 + 1) {
        let text =
            String::from_utf8_lossy(&steer(&site.entry, &["status"], pins).stdout).into_owned();
        let nodes: Vec<&str> = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("nodes"))
            .map(|nodes| nodes.split_whitespace().collect())
            .unwrap_or_default();
        if done(&nodes) {
            return Some(started.elapsed());
        }
        if started.elapsed() > within {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn relay_steer_config() -> &'static str {
    "[steer]\ndecap = true\nencap_source_v4 = \"10.200.252.0/24\"\n"
}

/// Attaches the entry's `relay_steer` to its `eth0` (skb mode) with `config`'s `[steer]`,
/// its pins under `pin_root`; false when the binary has no XDP object (the caller skips).
pub fn attach_entry(site: &Site, config: &Path, pin_root: &Path) -> bool {
    let attach = site
        .entry
        .exec(relay_bin())
        .args([
            "steer", "attach", "--iface", "eth0", "--mode", "skb", "--config",
        ])
        .arg(config)
        .arg("--pin-root")
        .arg(pin_root)
        .output()
        .expect("run relay steer attach");
    let attach_err = String::from_utf8_lossy(&attach.stderr);
    if !attach.status.success() && attach_err.contains("built without XDP programs") {
        return false;
    }
    assert!(attach.status.success(), "entry attach: {attach_err}");
    true
}

/// Attaches a relay's decapsulating `relay_steer` to `eth0` in `ns` (skb mode), its pins
/// under `pin_root`, from a config written into `configs` as `<name>-steer.toml` (its
/// origin `origin`).
pub fn attach_decap(ns: &Namespace, name: &str, origin: &Path, configs: &TempDir, pin_root: &Path) {
    let config = configs.write(
        &format!("{name}-steer.toml"),
        format!(
            "[origin]\ndirectory = \"{}\"\n\n{}",
            origin.display(),
            relay_steer_config()
        )
        .as_bytes(),
    );
    let config = config.to_str().expect("a UTF-8 path");
    let args = [
        "attach", "--iface", "eth0", "--mode", "skb", "--config", config,
    ];
    steer(ns, &args, pin_root);
}

/// `relay steer ARGS` in `ns`, with the pin root under `pins`.
pub fn steer(ns: &Namespace, args: &[&str], pin_root: &Path) -> Output {
    let out = ns
        .exec(relay_bin())
        .arg("steer")
        .args(args)
        .arg("--pin-root")
        .arg(pin_root)
        .stdin(Stdio::null())
        .output()
        .expect("run relay steer");
    assert!(
        out.status.success(),
        "relay steer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A counter from `relay steer status`: `field` is `pass`/`drop`/`tx` (packets of a verdict
/// line) or a reason name (from the `reasons` line).
pub fn status_value(text: &str, field: &str) -> u64 {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(first) if first == field => {
                return words
                    .find_map(|w| w.strip_prefix("packets="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
            Some("reasons") => {
                for word in words {
                    if let Some(n) = word.strip_prefix(&format!("{field}=")) {
                        return n.parse().unwrap_or(0);
                    }
                }
            }
            _ => {}
        }
    }
    0
}

/// One HTTP/1.1 GET of `/who` on `stream`; the relay's name (the body), if it answered.
pub fn ask(stream: &mut TcpStream, close: bool) -> Option<String> {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET /who HTTP/1.1\r\nHost: vip\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    for _ in 0..64 {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(usize::MAX);
            if body.len() >= len {
                return head
                    .starts_with("HTTP/1.1 200")
                    .then(|| body[..len].to_owned());
            }
        }
    }
    None
}

pub fn connect() -> Option<TcpStream> {
    let addr: SocketAddr = format!("{VIP}:{PORT}").parse().expect("VIP");
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    Some(stream)
}

/// `n` fresh flows from the client (one request each); responses per relay, and failures.
pub fn spread(site: &Site, n: usize) -> (HashMap<String, usize>, usize) {
    in_netns(site.client.name(), || {
        let started = Instant::now();
        let mut served = HashMap::new();
        let mut failed = 0;
        for _ in 0..n {
            if started.elapsed() > Duration::from_secs(60) {
                failed += 1;
                continue;
            }
            match connect().and_then(|mut s| ask(&mut s, true)) {
                Some(who) => *served.entry(who).or_insert(0) += 1,
                None => failed += 1,
            }
        }
        (served, failed)
    })
    .expect("enter the client namespace")
}

pub fn share(served: &HashMap<String, usize>, name: &str, total: usize) -> f64 {
    *served.get(name).unwrap_or(&0) as f64 / total as f64
}

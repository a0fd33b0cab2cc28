//! [`Plan`]: what the maps should hold, computed from `[steer]` of the config. Pure apart from
//! [`Plan::from_config`]'s neighbour-table lookup for nodes given by `next_hop`.
//!
//! Node weight in the tables = `weight` × health (`up`) × proximity, where proximity is 1 for
//! a node within `proximity_rtt_us` and `proximity_rtt_us / rtt_us` beyond it, so flows go to
//! the nearest healthy relays ([`crate::proximity`]). `rtt_us` is the configured one here;
//! the daemon's keeper puts the measured one in its place.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use relay_common::{MAX_NODES, MAX_RING_SIZE, Node, Policy, ServiceKey, Settings, v4_mapped};
use relay_config::{SteerConfig, SteerNode, SteerPolicy, SteerProtocol};

use crate::SteerError;
use crate::maglev::{self, MaglevNode};
use crate::proximity;

/// Everything `sync` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The settings map's one value.
    pub settings: Settings,
    /// Room for this many services (rings are `2 × max_services`; fixed at attach).
    pub max_services: u32,
    /// Entries of the connection table (fixed at attach).
    pub flow_entries: u32,
    /// Entries of the per-source rate table (fixed at attach).
    pub rate_entries: u32,
    /// Services; a service's id is its index.
    pub services: Vec<ServiceKey>,
    /// Nodes, each with its table weight.
    pub nodes: Vec<PlanNode>,
    /// Blocked source prefixes: IPv4-mapped address words and prefix length (of 128).
    pub blocklist: Vec<([u32; 4], u32)>,
}

/// One node: what the nodes map holds for it, and its weight in the Maglev tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanNode {
    pub name: String,
    /// The map value (`tag` = hash of the name; `flags` include UP when healthy).
    pub node: Node,
    /// weight × proximity (0 = drained: no new flows; established flows stay).
    pub weight: u32,
}

impl Plan {
    /// The plan for `config`, resolving `next_hop` nodes' MACs from the neighbour table.
    pub fn from_config(config: &SteerConfig) -> Result<Plan, SteerError> {
        Self::build(config, resolve_mac)
    }

    /// The plan for `config` with `neighbour` resolving next hops (tests pass their own).
    pub fn build(
        config: &SteerConfig,
        mut neighbour: impl FnMut(IpAddr) -> Result<[u8; 6], SteerError>,
    ) -> Result<Plan, SteerError> {
        let invalid = |message: String| SteerError::InvalidPlan(message);
        if config.ring_size as usize > MAX_RING_SIZE || config.ring_size < 2 {
            return Err(invalid(format!(
                "ring_size {} is not between 2 and {MAX_RING_SIZE}",
                config.ring_size
            )));
        }
        if config.nodes.len() > MAX_NODES as usize {
            return Err(invalid(format!("more than {MAX_NODES} nodes")));
        }
        let (v4, v4_len) = config.encap_source_v4;
        let (v6, v6_len) = config.encap_source_v6;
        let v6_words = v6.to_bits();
        // The part of the last IPv6 word the prefix covers (bits 96..128 of the address).
        let v6_last_len = u32::from(v6_len.saturating_sub(96));
        let mut flags = Settings::ENABLED;
        if config.decap {
            flags |= Settings::DECAP;
        }
        if !config.guard.blocklist.is_empty() {
            flags |= Settings::BLOCKLIST;
        }
        let rate = config.guard.new_flows_per_second;
        let cost = 1_000_000_000u64.checked_div(rate).map_or(0, |c| c.max(1));
        let settings = Settings {
            flags,
            ring_size: config.ring_size,
            ip_options: policy(config.ip_options),
            fragments: policy(config.fragments),
            malformed: policy(config.malformed),
            encap_v4_prefix: v4.to_bits(),
            encap_v4_mask: prefix_mask(u32::from(v4_len)),
            encap_v6_mask: prefix_mask(v6_last_len),
            encap_v6_prefix: [
                (v6_words >> 96) as u32,
                (v6_words >> 64) as u32,
                (v6_words >> 32) as u32,
                v6_words as u32,
            ],
            rate_cost_ns: cost,
            rate_burst_ns: cost.saturating_mul(config.guard.new_flow_burst),
        };
        let services = config
            .services
            .iter()
            .map(|s| ServiceKey {
                addr: addr_words(s.address),
                port: u16::from_ne_bytes(s.port.to_be_bytes()),
                proto: match s.protocol {
                    SteerProtocol::Tcp => 6,
                    SteerProtocol::Udp => 17,
                },
                _pad: 0,
            })
            .collect();
        let mut nodes = Vec::with_capacity(config.nodes.len());
        for node in &config.nodes {
            nodes.push(plan_node(node, config.proximity_rtt_us, &mut neighbour)?);
        }
        let blocklist = config
            .guard
            .blocklist
            .iter()
            .map(|&(addr, len)| {
                let len = u32::from(len) + if addr.is_ipv4() { 96 } else { 0 };
                (addr_words(addr), len)
            })
            .collect();
        Ok(Plan {
            settings,
            max_services: config.max_services,
            flow_entries: config.flow_table_entries,
            rate_entries: config.guard.rate_table_entries,
            services,
            nodes,
            blocklist,
        })
    }

    /// The Maglev table every service uses, given each plan node's map id (`ids[i]` for
    /// `self.nodes[i]`).
    pub fn table(&self, ids: &[u32]) -> Vec<u32> {
        let nodes: Vec<MaglevNode> = self
            .nodes
            .iter()
            .zip(ids)
            .map(|(n, &id)| MaglevNode {
                id,
                key: maglev::name_key(&n.name),
                weight: n.weight,
                up: n.node.flags & Node::UP != 0,
            })
            .collect();
        maglev::build(&nodes, self.settings.ring_size as usize)
    }
}

fn plan_node(
    node: &SteerNode,
    proximity_rtt_us: u64,
    neighbour: &mut impl FnMut(IpAddr) -> Result<[u8; 6], SteerError>,
) -> Result<PlanNode, SteerError> {
    let mut flags = 0u16;
    if node.up {
        flags |= Node::UP;
    }
    if node.local {
        flags |= Node::LOCAL;
    }
    let mut value = Node {
        tag: maglev::name_key(&node.name) as u32,
        ..Node::default()
    };
    if let Some(a) = node.address {
        value.v4 = u32::from_ne_bytes(a.octets());
        flags |= Node::HAS_V4;
    }
    if let Some(a) = node.address_v6 {
        value.v6 = addr_words(IpAddr::V6(a));
        flags |= Node::HAS_V6;
    }
    // Never 0 (the program's "no such node"): a remote node has an address, a local one LOCAL.
    value.flags = flags;
    value.mac = match (node.mac, node.next_hop) {
        (Some(mac), _) => mac,
        (None, Some(hop)) if !node.local => neighbour(hop)?,
        _ => [0; 6],
    };
    Ok(PlanNode {
        name: node.name.clone(),
        node: value,
        weight: proximity::weight(node.weight, node.rtt_us, proximity_rtt_us),
    })
}

fn policy(p: SteerPolicy) -> u32 {
    match p {
        SteerPolicy::Pass => Policy::Pass as u32,
        SteerPolicy::Drop => Policy::Drop as u32,
        SteerPolicy::Steer => Policy::Steer as u32,
    }
}

/// The mask of the first `len` bits of a 32-bit word.
fn prefix_mask(len: u32) -> u32 {
    u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0)
}

/// An address as key words (wire bytes, IPv4-mapped for IPv4).
pub fn addr_words(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => v4_mapped(u32::from_ne_bytes(a.octets())),
        IpAddr::V6(a) => {
            let o = a.octets();
            [
                u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
                u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
                u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
                u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
            ]
        }
    }
}

/// The MAC of `hop` from this namespace's neighbour table (IPv4: `/proc/net/arp`). A missing
/// entry is asked for (a datagram to the discard port makes the kernel resolve it), and looked
/// up again for at most a second.
pub fn resolve_mac(hop: IpAddr) -> Result<[u8; 6], SteerError> {
    let IpAddr::V4(hop) = hop else {
        return Err(SteerError::InvalidPlan(format!(
            "next hop {hop}: IPv6 next hops are not resolved; give the node's `mac`"
        )));
    };
    let started = Instant::now();
    for attempt in 0..50 {
        if let Some(mac) = arp_entry(hop) {
            return Ok(mac);
        }
        if attempt == 0
            && let Ok(socket) = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        {
            let _ = socket.send_to(b"relay", (hop, 9));
        }
        if started.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(SteerError::InvalidPlan(format!(
        "next hop {hop} has no entry in the neighbour table; give the node's `mac`"
    )))
}

/// The complete IPv4 entries of this namespace's neighbour table, read once.
pub fn neighbours() -> std::collections::HashMap<Ipv4Addr, [u8; 6]> {
    let text = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    text.lines().skip(1).filter_map(arp_line).collect()
}

/// Asks the kernel to resolve `hop` (a datagram to its discard port), without waiting.
pub fn solicit(hop: Ipv4Addr) {
    if let Ok(socket) = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = socket.send_to(b"relay", (hop, 9));
    }
}

fn arp_entry(hop: Ipv4Addr) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp(&text, hop)
}

/// The complete entry for `hop` in `/proc/net/arp` text.
fn parse_arp(text: &str, hop: Ipv4Addr) -> Option<[u8; 6]> {
    text.lines()
        .skip(1)
        .filter_map(arp_line)
        .find_map(|(ip, mac)| (ip == hop).then_some(mac))
}

/// One line of `/proc/net/arp`: its address and MAC when the entry is complete.
fn arp_line(line: &str) -> Option<(Ipv4Addr, [u8; 6])> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (ip, flags, mac) = (fields.first()?, fields.get(2)?, fields.get(3)?);
    // ATF_COM (0x2): the entry is complete.
    let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & 2 != 0;
    if !complete {
        return None;
    }
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some((ip.parse().ok()?, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_entries_parse() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.200.250.1     0x1         0x2         02:00:00:00:fa:01     *        eth0\n\
                    10.200.250.2     0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        assert_eq!(
            parse_arp(text, Ipv4Addr::new(10, 200, 250, 1)),
            Some([2, 0, 0, 0, 0xfa, 1])
        );
        assert_eq!(parse_arp(text, Ipv4Addr::new(10, 200, 250, 2)), None);
        assert_eq!(parse_arp(text, Ipv4Addr::new(10, 200, 250, 3)), None);
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(24), 0xFFFF_FF00);
        assert_eq!(prefix_mask(32), u32::MAX);
    }

    #[test]
    fn weight_is_health_times_proximity() {
        let text = r#"
[origin]
directory = "/d"
[steer]
proximity_rtt_us = 1000
[[steer.nodes]]
name = "near"
local = true
weight = 100
rtt_us = 200
[[steer.nodes]]
name = "far"
address = "10.200.0.2"
next_hop = "10.200.0.1"
weight = 100
rtt_us = 4000
[[steer.nodes]]
name = "dead"
address = "10.200.0.3"
mac = "02:00:00:00:00:03"
up = false
"#;
        let config = relay_config::Config::from_str(text, std::path::Path::new("/"), "t")
            .unwrap()
            .steer;
        let plan = Plan::build(&config, |_| Ok([9; 6])).unwrap();
        assert_eq!(plan.nodes[0].weight, 100);
        assert_eq!(plan.nodes[1].weight, 25);
        assert_eq!(plan.nodes[1].node.mac, [9; 6]);
        assert_eq!(plan.nodes[2].node.flags & Node::UP, 0);
        assert_ne!(plan.nodes[2].node.flags, 0);
        let table = plan.table(&[0, 1, 2]);
        let shares = maglev::shares(&table, 3);
        assert_eq!(shares[2], 0, "a down node has no slots");
        assert!(shares[0] > 3 * shares[1], "{shares:?}");
        assert_eq!(plan.settings.flags, Settings::ENABLED);
        assert_eq!(plan.settings.encap_v4_mask, 0xFFFF_0000);
    }
}

//! `relay steer status`: what is pinned under the pin root, and the counters summed over CPUs.

use std::{fmt, fs, io, path::Path};

use aya::programs::links::PinnedLink;
use relay_common::{Counter, Node, Reason, Verdict};

use crate::{SteerError, pins::IfacePins};

/// One interface with `relay_steer` pinned for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceStatus {
    /// Interface name (the directory name under the pin root).
    pub iface: String,
    /// Packets and bytes per verdict, summed over CPUs; index = [`Verdict`] as `usize`.
    pub counters: [Counter; Verdict::COUNT as usize],
    /// What the pinned link says about the attachment.
    pub attachment: Attachment,
    /// Packets per reason (the path packets took), summed over CPUs; index = [`Reason`].
    pub reasons: [Counter; Reason::COUNT as usize],
    /// The configured nodes in the nodes map, by id.
    pub nodes: Vec<(u32, Node)>,
}

/// State of the pinned link of one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// The program is attached to the interface with this index.
    Attached {
        ifindex: u32,
        link_id: u32,
        program_id: u32,
    },
    /// The link is pinned but the interface it held is gone (e.g. the device was deleted).
    Defunct { link_id: u32, program_id: u32 },
    /// No link is pinned (a half-finished attach or detach); only the counters are left.
    NoLink,
}

impl IfaceStatus {
    /// The counter of one verdict.
    pub fn counter(&self, verdict: Verdict) -> Counter {
        self.counters[verdict as usize]
    }

    /// The counter of one reason.
    pub fn reason(&self, reason: Reason) -> Counter {
        self.reasons[reason as usize]
    }
}

/// Prints, for example:
/// ```text
/// eth0: attached ifindex=2 link_id=7 prog_id=31
///   aborted   packets=0 bytes=0
///   drop      packets=0 bytes=0
///   pass      packets=1042 bytes=871235
///   tx        packets=0 bytes=0
///   redirect  packets=0 bytes=0
/// ```
/// The first line is `IFACE: detached (interface gone) link_id=.. prog_id=..` for a defunct
/// link and `IFACE: no link pinned` without one. Then the non-zero reasons
/// (`  reasons   new_flow=12 remote=40 malformed=3`) and the nodes with their state
/// (`  nodes     local=up 10.200.250.12=down`), each line only when not empty. No trailing
/// newline.
impl fmt::Display for IfaceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attachment {
            Attachment::Attached {
                ifindex,
                link_id,
                program_id,
            } => write!(
                f,
                "{}: attached ifindex={ifindex} link_id={link_id} prog_id={program_id}",
                self.iface
            )?,
            Attachment::Defunct {
                link_id,
                program_id,
            } => write!(
                f,
                "{}: detached (interface gone) link_id={link_id} prog_id={program_id}",
                self.iface
            )?,
            Attachment::NoLink => write!(f, "{}: no link pinned", self.iface)?,
        }
        for verdict in Verdict::ALL {
            let Counter { packets, bytes } = self.counter(verdict);
            write!(
                f,
                "\n  {:<9} packets={packets} bytes={bytes}",
                verdict.name()
            )?;
        }
        let reasons: Vec<String> = Reason::ALL
            .iter()
            .filter(|r| self.reason(**r).packets > 0)
            .map(|r| format!("{}={}", r.name(), self.reason(*r).packets))
            .collect();
        if !reasons.is_empty() {
            write!(f, "\n  reasons   {}", reasons.join(" "))?;
        }
        if !self.nodes.is_empty() {
            write!(f, "\n  nodes    ")?;
            for (_, node) in &self.nodes {
                let state = if node.flags & Node::UP != 0 {
                    "up"
                } else {
                    "down"
                };
                write!(f, " {}={state}", node_name(node))?;
            }
        }
        Ok(())
    }
}

/// The XDP counters of every interface in `all` in the Prometheus text format: packets
/// and bytes per verdict, packets per reason (the path they took), and whether the
/// program is attached.
pub fn render_metrics(all: &[IfaceStatus], out: &mut String) {
    use std::fmt::Write as _;
    // One family: its HELP and TYPE, then a line per (labels, value).
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let by_verdict = |f: fn(Counter) -> u64| -> Vec<(String, u64)> {
        all.iter()
            .flat_map(|s| {
                Verdict::ALL.into_iter().map(move |v| {
                    let labels = format!("iface=\"{}\",verdict=\"{}\"", s.iface, v.name());
                    (labels, f(s.counter(v)))
                })
            })
            .collect()
    };
    family(
        "relay_xdp_packets_total",
        "counter",
        "Packets the XDP steering program saw, by interface and verdict.",
        by_verdict(|c| c.packets),
    );
    family(
        "relay_xdp_bytes_total",
        "counter",
        "Bytes the XDP steering program saw, by interface and verdict.",
        by_verdict(|c| c.bytes),
    );
    family(
        "relay_xdp_reason_packets_total",
        "counter",
        "Packets by the path they took through the XDP program (why they were passed, \
         steered or dropped).",
        all.iter()
            .flat_map(|s| {
                Reason::ALL.into_iter().map(move |r| {
                    let labels = format!("iface=\"{}\",reason=\"{}\"", s.iface, r.name());
                    (labels, s.reason(r).packets)
                })
            })
            .collect(),
    );
    family(
        "relay_xdp_attached",
        "gauge",
        "Whether the XDP program is attached to the interface.",
        all.iter()
            .map(|s| {
                let attached = matches!(s.attachment, Attachment::Attached { .. });
                (format!("iface=\"{}\"", s.iface), u64::from(attached))
            })
            .collect(),
    );
}

/// Reads every interface directory under `pin_root`, sorted by name.
pub(crate) fn read_all(pin_root: &Path) -> Result<Vec<IfaceStatus>, SteerError> {
    let entries = match fs::read_dir(pin_root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(SteerError::io(pin_root, error)),
    };
    let mut statuses = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| SteerError::io(pin_root, error))?;
        let is_dir = entry
            .file_type()
            .map_err(|error| SteerError::io(entry.path(), error))?
            .is_dir();
        // Only directories named like interfaces are ours; skip anything else under the root.
        let Some(iface) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_dir || crate::validate_iface(&iface).is_err() {
            continue;
        }
        let pins = IfacePins::new(pin_root, &iface);
        if !pins.link.exists() && !pins.counters.exists() {
            continue;
        }
        statuses.push(read_one(iface, &pins)?);
    }
    statuses.sort_by(|a, b| a.iface.cmp(&b.iface));
    Ok(statuses)
}

fn read_one(iface: String, pins: &IfacePins) -> Result<IfaceStatus, SteerError> {
    let attachment = if pins.link.exists() {
        link_state(&pins.link)?
    } else {
        Attachment::NoLink
    };
    let stats = if pins.counters.exists() {
        crate::tables::read_stats_pin(&pins.counters)?
    } else {
        relay_common::Stats::default()
    };
    let (counters, reasons) = (stats.verdicts, stats.reasons);
    let nodes_pin = pins.map(relay_common::maps::NODES);
    let nodes = if nodes_pin.exists() {
        crate::tables::read_nodes_pin(&nodes_pin)?
    } else {
        Vec::new()
    };
    Ok(IfaceStatus {
        iface,
        counters,
        attachment,
        reasons,
        nodes,
    })
}

/// How `status` names a node: `local`, or its IPv4 (else IPv6) address.
fn node_name(node: &Node) -> String {
    if node.flags & Node::LOCAL != 0 {
        "local".to_owned()
    } else if node.flags & Node::HAS_V4 != 0 {
        std::net::Ipv4Addr::from(node.v4.to_ne_bytes()).to_string()
    } else {
        let mut bytes = [0u8; 16];
        for (chunk, word) in bytes.chunks_mut(4).zip(node.v6) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        std::net::Ipv6Addr::from(bytes).to_string()
    }
}

/// What the link pinned at `path` holds.
pub(crate) fn link_state(path: &Path) -> Result<Attachment, SteerError> {
    let context = || format!("reading the link pinned at {}", path.display());
    let link = PinnedLink::from_pin(path).map_err(|error| SteerError::bpf(context(), error))?;
    // Keep the link open (an fd of this process) while its fdinfo is read.
    let link = aya::programs::links::FdLink::from(link);
    let info = link
        .info()
        .map_err(|error| SteerError::bpf(context(), error))?;
    let (link_id, program_id) = (info.id(), info.program_id());
    let attachment = match xdp_link_ifindex(link_id) {
        Some(ifindex) if ifindex != 0 => Attachment::Attached {
            ifindex,
            link_id,
            program_id,
        },
        _ => Attachment::Defunct {
            link_id,
            program_id,
        },
    };
    drop(link);
    Ok(attachment)
}

/// The interface index an XDP link of this process holds, from the link's fdinfo
/// (`ifindex:` is 0 once the device is gone). aya does not expose it.
fn xdp_link_ifindex(link_id: u32) -> Option<u32> {
    let want = link_id.to_string();
    for entry in fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name).map(str::trim))
        };
        if field("link_id:") == Some(want.as_str()) {
            return field("ifindex:").and_then(|value| value.parse().ok());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_render_as_prometheus_text() {
        let mut counters = [Counter::default(); Verdict::COUNT as usize];
        counters[Verdict::ALL[0] as usize] = Counter {
            packets: 7,
            bytes: 700,
        };
        let mut reasons = [Counter::default(); Reason::COUNT as usize];
        reasons[Reason::ALL[1] as usize].packets = 3;
        let s = IfaceStatus {
            iface: "eth0".into(),
            counters,
            attachment: Attachment::NoLink,
            reasons,
            nodes: Vec::new(),
        };
        let mut out = String::new();
        render_metrics(&[s], &mut out);
        let v0 = Verdict::ALL[0].name();
        let r1 = Reason::ALL[1].name();
        for line in [
            format!("relay_xdp_packets_total{{iface=\"eth0\",verdict=\"{v0}\"}} 7"),
            format!("relay_xdp_bytes_total{{iface=\"eth0\",verdict=\"{v0}\"}} 700"),
            format!("relay_xdp_reason_packets_total{{iface=\"eth0\",reason=\"{r1}\"}} 3"),
            "relay_xdp_attached{iface=\"eth0\"} 0".to_string(),
            "# TYPE relay_xdp_packets_total counter".to_string(),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in:\n{out}");
        }
    }
}

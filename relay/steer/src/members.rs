//! The site's relays as nodes of the tables (`steer.cluster_nodes`): the daemon hands the
//! keeper a [`MemberSource`] (the live members of its site, from the cluster's records), and
//! each member becomes a [`SteerNode`] with its record's weight, its steering address and the
//! MAC its packets are sent to. Its health is the keeper's: a member that leaves the cluster
//! leaves the tables, and one whose HTTP address stops connecting is marked down by the same
//! checks as a configured node ([`crate::health::connect`]); the connect time is its measured
//! round trip, so proximity weighs it as it does a configured node.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_config::SteerNode;

/// One live relay of the site, as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable across its restarts (its gossip address): the name places it in the tables.
    pub name: String,
    /// Where steered flows reach it (the outer destination of encapsulated packets).
    pub address: IpAddr,
    /// Its weight in the cluster (0: never given flows).
    pub weight: u32,
    /// This relay: its flows pass to the local stack.
    pub local: bool,
    /// Its HTTP address for other relays, probed by a TCP connect.
    pub probe: SocketAddr,
}

/// The live members of the site, asked once per check interval.
pub type MemberSource = Arc<dyn Fn() -> Vec<Member> + Send + Sync>;

/// How long a hop whose MAC was not found is not asked for again (its datagram to the
/// discard port), and its absence not logged again.
const RETRY_MAC: Duration = Duration::from_secs(10);

/// The hops whose MAC was not in the neighbour table, and when they were last solicited.
/// MACs themselves are read from the table at every round, never kept: a relay replaced at
/// the same address is steered to its new MAC at the next round (the checks' connects keep
/// the table's entries fresh).
#[derive(Default)]
pub(crate) struct Macs {
    missing: HashMap<IpAddr, Instant>,
}

impl Macs {
    /// The nodes for `members`, sorted by name: every member with a weight whose name is not
    /// `taken` by a configured node, its packets sent to `next_hop`'s MAC, else to its own,
    /// as `table` (the neighbour table) has it. A member whose MAC is not there is left out
    /// and its hop solicited (without waiting: found at a later round), logged once.
    pub(crate) fn nodes(
        &mut self,
        members: &[Member],
        next_hop: Option<IpAddr>,
        taken: &[String],
        table: &HashMap<std::net::Ipv4Addr, [u8; 6]>,
    ) -> Vec<SteerNode> {
        let hops: HashSet<IpAddr> = members
            .iter()
            .map(|m| next_hop.unwrap_or(m.address))
            .collect();
        self.missing.retain(|hop, _| hops.contains(hop));
        let mut nodes: Vec<SteerNode> = Vec::with_capacity(members.len());
        for m in members {
            if m.weight == 0 || taken.contains(&m.name) || nodes.iter().any(|n| n.name == m.name) {
                continue;
            }
            let mac = match m.local {
                true => None,
                false => match self.mac(next_hop.unwrap_or(m.address), table) {
                    Some(mac) => Some(mac),
                    None => continue,
                },
            };
            let (address, address_v6) = match m.address {
                IpAddr::V4(a) => (Some(a), None),
                IpAddr::V6(a) => (None, Some(a)),
            };
            nodes.push(SteerNode {
                name: m.name.clone(),
                address,
                address_v6,
                mac,
                next_hop: None,
                local: m.local,
                weight: m.weight,
                up: true,
                rtt_us: 0,
                health_check: (!m.local).then_some(m.probe),
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    fn mac(
        &mut self,
        hop: IpAddr,
        table: &HashMap<std::net::Ipv4Addr, [u8; 6]>,
    ) -> Option<[u8; 6]> {
        let IpAddr::V4(v4) = hop else {
            if self.missing.insert(hop, Instant::now()).is_none() {
                log::warn!(
                    "steer: a relay of the site at {hop} is left out of the tables: IPv6 next \
                     hops are not resolved (set steer.cluster_next_hop)"
                );
            }
            return None;
        };
        if let Some(mac) = table.get(&v4) {
            self.missing.remove(&hop);
            return Some(*mac);
        }
        let due = self
            .missing
            .get(&hop)
            .is_none_or(|at| at.elapsed() >= RETRY_MAC);
        if due {
            if !self.missing.contains_key(&hop) {
                log::warn!(
                    "steer: a relay of the site is left out of the tables until the MAC of \
                     {hop} is in the neighbour table (asked for)"
                );
            }
            crate::plan::solicit(v4);
            self.missing.insert(hop, Instant::now());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn member(name: &str, last: u8, weight: u32, local: bool) -> Member {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 9, 0, last));
        Member {
            name: name.to_owned(),
            address: ip,
            weight,
            local,
            probe: SocketAddr::new(ip, 8081),
        }
    }

    #[test]
    fn members_become_nodes_with_their_weight_and_probe() {
        let mut macs = Macs::default();
        // The neighbour table has the next hop.
        let hop: IpAddr = "10.9.0.254".parse().unwrap();
        let table = HashMap::from([("10.9.0.254".parse().unwrap(), [2, 0, 0, 0, 0, 1])]);
        let members = [
            member("a", 1, 100, true),
            member("b", 2, 300, false),
            member("c", 3, 0, false),
            member("d", 4, 100, false),
            member("b", 5, 100, false),
        ];
        let nodes = macs.nodes(&members, Some(hop), &["d".to_owned()], &table);
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        // c has no weight, d is a configured node's name, the second b a duplicate.
        assert_eq!(names, ["a", "b"]);
        assert!(nodes[0].local && nodes[0].mac.is_none() && nodes[0].health_check.is_none());
        assert_eq!(nodes[1].weight, 300);
        assert_eq!(nodes[1].mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(nodes[1].address, Some(Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(nodes[1].health_check, members[1].probe.into());
    }

    #[test]
    fn a_member_whose_mac_is_not_in_the_table_is_left_out_until_it_is() {
        let mut macs = Macs::default();
        let lost = member("x", 7, 100, false);
        // As after a solicitation (one here would send a datagram to the hop).
        let asked = Instant::now();
        macs.missing.insert(lost.address, asked);
        let table = HashMap::new();
        assert!(
            macs.nodes(std::slice::from_ref(&lost), None, &[], &table)
                .is_empty()
        );
        assert_eq!(
            macs.missing.get(&lost.address),
            Some(&asked),
            "solicited again at once"
        );
        // Once the table has it, it is in.
        let table = HashMap::from([("10.9.0.7".parse().unwrap(), [2, 0, 0, 0, 0, 7])]);
        let nodes = macs.nodes(std::slice::from_ref(&lost), None, &[], &table);
        assert_eq!(nodes[0].mac, Some([2, 0, 0, 0, 0, 7]));
        assert!(macs.missing.is_empty());
    }
}

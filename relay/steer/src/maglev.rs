//! The weighted Maglev table builder: pure, no I/O.
//!
//! [`build`] fills a table of `size` slots (a prime) with node ids:
//!
//! 1. **Base table** (Maglev, Eisenbud et al., NSDI 2016, with weights as in Katran): every node
//!    with a non-zero weight walks its own permutation of the slots (`offset + j * skip`, both
//!    from the hash of its name) and claims the next free slot in turn; a node claims as often
//!    as its weight allows (a running credit of `weight / max weight` per round), so its share
//!    of slots follows its weight. Nodes that are down are included: they keep their place.
//! 2. **Down nodes**: each slot whose owner is down goes to the up node with the highest
//!    weighted rendezvous score for that slot (`-weight / ln(u)`, `u` from the hash of node and
//!    slot). Marking a node down therefore moves only that node's slots, spread over the others
//!    by weight, and marking a second node down moves only the slots the second one held.
//!
//! Node identity is the name's hash ([`name_key`]), so tables do not depend on config order.

use relay_common::NO_NODE;

/// A node as the builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevNode {
    /// The id written into the slots.
    pub id: u32,
    /// Hash of the node's name ([`name_key`]): places it in the table.
    pub key: u64,
    /// Relative weight; 0 takes no slots in the base table (drained).
    pub weight: u32,
    /// Down nodes keep their base slots' positions, but their slots go to up nodes.
    pub up: bool,
}

/// A stable 64-bit hash of a node's name (FNV-1a, then a SplitMix64 finaliser).
pub fn name_key(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// SplitMix64's finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Builds a table of `size` slots (a prime above 1). Slots are [`NO_NODE`] when no node is up
/// with a non-zero weight.
pub fn build(nodes: &[MaglevNode], size: usize) -> Vec<u32> {
    assert!(size > 1, "a Maglev table needs a prime size above 1");
    let mut table = base(nodes, size);
    let up: Vec<&MaglevNode> = nodes.iter().filter(|n| n.up && n.weight > 0).collect();
    let down = |id: u32| {
        id == NO_NODE
            || nodes
                .iter()
                .find(|n| n.id == id)
                .is_none_or(|n| !n.up || n.weight == 0)
    };
    for (slot, owner) in table.iter_mut().enumerate() {
        if down(*owner) {
            *owner = rendezvous(&up, slot as u64).unwrap_or(NO_NODE);
        }
    }
    table
}

/// Step 1: the weighted Maglev fill over every node with a non-zero weight.
fn base(nodes: &[MaglevNode], size: usize) -> Vec<u32> {
    let mut table = vec![NO_NODE; size];
    // Claim order decides contested slots: order by key so the config's order does not matter.
    let mut members: Vec<&MaglevNode> = nodes.iter().filter(|n| n.weight > 0).collect();
    members.sort_by_key(|n| (n.key, n.id));
    let Some(max_weight) = members.iter().map(|n| u64::from(n.weight)).max() else {
        return table;
    };
    let m = size as u64;
    let perms: Vec<(u64, u64)> = members
        .iter()
        .map(|n| {
            (
                mix64(n.key) % m,
                mix64(n.key ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1,
            )
        })
        .collect();
    let mut next = vec![0u64; members.len()];
    let mut credit = vec![0u64; members.len()];
    let mut filled = 0usize;
    // Every round, the heaviest node claims a slot, so this ends within `size` rounds.
    'fill: for _round in 0..size {
        for (i, node) in members.iter().enumerate() {
            credit[i] += u64::from(node.weight);
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            let (offset, skip) = perms[i];
            // A node's permutation visits every slot once, so a free one comes up while
            // the table is not full.
            while next[i] < m {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == NO_NODE {
                    table[slot] = node.id;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break 'fill;
            }
        }
    }
    table
}

/// The up node with the highest weighted rendezvous score for `slot`.
fn rendezvous(up: &[&MaglevNode], slot: u64) -> Option<u32> {
    up.iter()
        .map(|n| {
            let h = mix64(n.key ^ mix64(slot.wrapping_add(0x5851_f42d_4c95_7f2d)));
            // u in (0, 1): 53 random bits, never 0.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (-f64::from(n.weight) / u.ln(), n.id)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, id)| id)
}

/// Slots per node id in `table` (ids below `nodes`).
pub fn shares(table: &[u32], nodes: usize) -> Vec<usize> {
    let mut counts = vec![0usize; nodes];
    for &id in table {
        if let Some(count) = counts.get_mut(id as usize) {
            *count += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: usize = 65537;

    /// xorshift64*: deterministic cases without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn nodes(weights: &[u32]) -> Vec<MaglevNode> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MaglevNode {
                id: i as u32,
                key: name_key(&format!("relay-{i}")),
                weight,
                up: true,
            })
            .collect()
    }

    /// Each up node's share is within 1% of its weight's share (or 2 slots, for rounding).
    fn assert_balanced(table: &[u32], nodes: &[MaglevNode], tolerance: f64) {
        let total: u64 = nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| u64::from(n.weight))
            .sum();
        let counts = shares(table, nodes.len());
        for node in nodes {
            let want = if node.up {
                table.len() as f64 * f64::from(node.weight) / total as f64
            } else {
                0.0
            };
            let got = counts[node.id as usize] as f64;
            assert!(
                (got - want).abs() <= (want * tolerance).max(2.0),
                "node {} (weight {}, up {}): {got} slots, expected {want:.1} (±{:.1}%)",
                node.id,
                node.weight,
                node.up,
                tolerance * 100.0
            );
        }
    }

    #[test]
    fn every_slot_is_filled_and_shares_follow_weights() {
        let mut rng = Rng(0x5eed);
        for case in 0..24 {
            let n = 1 + rng.below(12) as usize;
            let weights: Vec<u32> = (0..n).map(|_| 1 + rng.below(100) as u32).collect();
            let nodes = nodes(&weights);
            let table = build(&nodes, M);
            assert!(table.iter().all(|&id| (id as usize) < n), "case {case}");
            assert_balanced(&table, &nodes, 0.01);
        }
    }

    #[test]
    fn equal_weights_split_evenly() {
        let nodes = nodes(&[100; 3]);
        let counts = shares(&build(&nodes, M), 3);
        for c in counts {
            assert!((21845 - 2..=21846 + 2).contains(&c), "{c}");
        }
    }

    #[test]
    fn marking_a_node_down_moves_only_its_slots() {
        let mut rng = Rng(0xd0);
        for case in 0..16 {
            let n = 2 + rng.below(10) as usize;
            let weights: Vec<u32> = (0..n).map(|_| 1 + rng.below(100) as u32).collect();
            let mut nodes = nodes(&weights);
            let before = build(&nodes, M);
            let victim = rng.below(n as u64) as u32;
            nodes[victim as usize].up = false;
            let after = build(&nodes, M);
            for (slot, (&b, &a)) in before.iter().zip(&after).enumerate() {
                if b != victim {
                    assert_eq!(a, b, "case {case}: slot {slot} moved off a surviving node");
                } else {
                    assert_ne!(a, victim, "case {case}: slot {slot} still on the down node");
                }
            }
            // Within 1% of weights, with the moved slots' rendezvous noise (≈ 1/√slots).
            assert_balanced(&after, &nodes, 0.03);
            // A second node down: again only its slots move.
            let second = (victim + 1) % n as u32;
            if n > 2 {
                nodes[second as usize].up = false;
                let again = build(&nodes, M);
                for (&a, &b) in after.iter().zip(&again) {
                    if a != second {
                        assert_eq!(a, b, "case {case}: second removal moved other slots");
                    }
                }
            }
        }
    }

    #[test]
    fn removing_a_node_from_the_config_moves_little_more_than_its_share() {
        let mut rng = Rng(0xabc);
        for case in 0..8 {
            let n = 3 + rng.below(8) as usize;
            let weights: Vec<u32> = (0..n).map(|_| 1 + rng.below(100) as u32).collect();
            let all = nodes(&weights);
            let before = build(&all, M);
            let victim = rng.below(n as u64) as usize;
            let rest: Vec<MaglevNode> = all
                .iter()
                .copied()
                .filter(|x| x.id as usize != victim)
                .collect();
            let after = build(&rest, M);
            let share = before.iter().filter(|&&id| id as usize == victim).count();
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
            let extra = moved - share;
            // Maglev's disruption beyond the minimum is small; marking down (above) is exact.
            assert!(
                extra * 100 <= M * 3,
                "case {case}: {moved} slots moved, the removed node had {share}"
            );
        }
    }

    #[test]
    fn zero_weight_and_all_down() {
        let mut nodes = nodes(&[0, 10]);
        assert!(build(&nodes, 13).iter().all(|&id| id == 1));
        nodes[1].up = false;
        assert!(build(&nodes, 13).iter().all(|&id| id == NO_NODE));
        assert!(build(&[], 13).iter().all(|&id| id == NO_NODE));
    }

    #[test]
    fn tables_do_not_depend_on_node_order() {
        let nodes = nodes(&[10, 20, 30, 40]);
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(build(&nodes, 251), build(&reversed, 251));
    }
}

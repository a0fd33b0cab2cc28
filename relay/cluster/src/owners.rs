//! Who fetches a chunk: weighted rendezvous hashing (highest random weight) over the live
//! relays of a site. Every relay computes the same ordered owner list for a chunk from the
//! same members, with no coordination; a change of membership moves only the chunks of
//! the relays that came or went (measured in the tests: a tenth of the keys when a relay
//! joins ten, each to the newcomer).
//!
//! Scores: each candidate's score for a key is `weight / -ln(u)`, `u` a uniform number in
//! (0, 1) from hashing the key with the candidate. The largest score owns the key; the
//! next ones follow. A candidate's share of the keys is its weight over the sum (Schindelhauer
//! and Schomaker's weighted distributed hash tables; the `-ln` form is the exponential-race
//! argument: the minimum of `-ln(u) / w` falls to each `w` in proportion to it).
//!
//! Hashes are stable across builds and machines (every relay must agree): BLAKE3 for the
//! key and the candidate, SplitMix64's finalizer to combine them.

use std::net::SocketAddr;

/// A relay that may own chunks, its weight (0: never), and its hash (computed once, when
/// membership changes, not per key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: SocketAddr,
    pub weight: u32,
    hash: u64,
}

impl Candidate {
    pub fn new(node: SocketAddr, weight: u32) -> Candidate {
        Candidate {
            node,
            weight,
            hash: node_hash(&node),
        }
    }
}

/// A key's hash: the first 8 bytes of its BLAKE3 hash.
pub fn key_hash(key: &[u8]) -> u64 {
    first_u64(blake3::hash(key).as_bytes())
}

/// A candidate's hash (of its address as text: the same on every relay).
pub fn node_hash(node: &SocketAddr) -> u64 {
    first_u64(blake3::hash(node.to_string().as_bytes()).as_bytes())
}

fn first_u64(b: &[u8; 32]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// SplitMix64's finalizer: a bijection that spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `candidate`'s score for the key hashed to `key`.
fn score(key: u64, node: u64, weight: u32) -> f64 {
    // 53 random bits, offset by half a step: strictly inside (0, 1).
    let u = ((mix(key ^ node) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// The first `n` owners of the key hashed to `key` among `candidates`, best first
/// (candidates of weight 0 never own). The same on every relay for the same candidates,
/// in any order.
pub fn owners(key: u64, candidates: &[Candidate], n: usize) -> Vec<SocketAddr> {
    let mut scored: Vec<(f64, SocketAddr)> = candidates
        .iter()
        .filter(|c| c.weight > 0)
        .map(|c| (score(key, c.hash, c.weight), c.node))
        .collect();
    // Ties (equal scores: practically never) fall to the lower address, so the order is
    // total and the same everywhere.
    let order =
        |a: &(f64, SocketAddr), b: &(f64, SocketAddr)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if n == 0 {
        return Vec::new();
    }
    // The best `n` only are put in order: a miss wants the first one or two of many.
    if n < scored.len() {
        scored.select_nth_unstable_by(n - 1, order);
        scored.truncate(n);
    }
    scored.sort_by(order);
    scored.into_iter().map(|(_, node)| node).collect()
}

/// How far above the rest of the site's load (per unit of weight) a chunk's first owner
/// must be for its chunks to spill to their second owner.
pub const SPILL_FACTOR: f64 = 2.0;
/// The least load (connections open) that spills, so that a quiet site never does.
pub const SPILL_MIN_LOAD: u32 = 64;
/// An owner that spills goes on spilling until it is below this many times the others'
/// load per unit of weight (hysteresis: an owner near [`SPILL_FACTOR`] does not flip its
/// chunks back and forth with every load it publishes).
pub const SPILL_RELEASE: f64 = 1.5;

/// Whether an owner at `load` with `weight` is loaded well above the others of its site
/// (`totals`: the site's summed load and weight, the owner's included, [`totals`]): at least
/// [`SPILL_MIN_LOAD`], and more than [`SPILL_FACTOR`] times the others' load per unit of
/// weight. Its chunks then go to their second owner. (Compared with the others, not with
/// an average that includes the owner: in a site of two, no load would ever be twice an
/// average it is half of.)
pub fn overloaded(load: u32, weight: u32, totals: (u64, u64)) -> bool {
    above(load, weight, totals, SPILL_FACTOR)
}

/// Whether an owner that spills already goes on spilling: above [`SPILL_RELEASE`] times the
/// others' load per unit of weight (and at least [`SPILL_MIN_LOAD`]).
pub fn stays_overloaded(load: u32, weight: u32, totals: (u64, u64)) -> bool {
    above(load, weight, totals, SPILL_RELEASE)
}

fn above(load: u32, weight: u32, totals: (u64, u64), factor: f64) -> bool {
    let (total_load, total_weight) = totals;
    let others_weight = total_weight.saturating_sub(u64::from(weight));
    if load < SPILL_MIN_LOAD || weight == 0 || others_weight == 0 {
        return false;
    }
    let others = total_load.saturating_sub(u64::from(load)) as f64 / others_weight as f64;
    f64::from(load) / f64::from(weight) > factor * others
}

/// The site's summed load and weight: the members' (load, weight), weightless ones left out.
pub fn totals(members: impl Iterator<Item = (u32, u32)>) -> (u64, u64) {
    members
        .filter(|&(_, w)| w > 0)
        .fold((0, 0), |(l, w), (ml, mw)| {
            (l + u64::from(ml), w + u64::from(mw))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_owner_well_above_the_others_spills() {
        // Three relays of weight 100: 150 connections against 10 and 20.
        let site = totals([(150, 100), (10, 100), (20, 100)].into_iter());
        assert_eq!(site, (180, 300));
        assert!(overloaded(150, 100, site));
        assert!(!overloaded(20, 100, site));
        // A site of two: one far busier than the other spills.
        let two = totals([(10_000, 100), (0, 100)].into_iter());
        assert!(overloaded(10_000, 100, two));
        assert!(!overloaded(
            100,
            100,
            totals([(100, 100), (60, 100)].into_iter())
        ));
        // Twice the weight carries twice the load before it spills.
        assert!(!overloaded(
            150,
            200,
            totals([(150, 200), (40, 100)].into_iter())
        ));
        // A quiet site never spills, however uneven; a relay alone never does.
        assert!(!overloaded(
            40,
            100,
            totals([(40, 100), (0, 100)].into_iter())
        ));
        assert!(!overloaded(500, 100, totals([(500, 100)].into_iter())));
        // Between 1.5 and 2 times the others: an owner that spills goes on, one that does
        // not stays.
        let near = totals([(170, 100), (100, 100), (100, 100)].into_iter());
        assert!(!overloaded(170, 100, near) && stays_overloaded(170, 100, near));
        let below = totals([(140, 100), (100, 100), (100, 100)].into_iter());
        assert!(!stays_overloaded(140, 100, below));
    }

    fn relay(i: u32, weight: u32) -> Candidate {
        let node = format!("10.0.{}.{}:7946", i / 250, i % 250 + 1)
            .parse()
            .unwrap();
        Candidate::new(node, weight)
    }

    const KEYS: u64 = 60_000;

    fn owner_of(k: u64, c: &[Candidate]) -> SocketAddr {
        owners(key_hash(&k.to_le_bytes()), c, 1)[0]
    }

    #[test]
    fn every_relay_computes_the_same_order_whatever_order_it_holds_members_in() {
        let c: Vec<_> = (0..8).map(|i| relay(i, 100)).collect();
        let mut r = c.clone();
        r.reverse();
        r.swap(1, 5);
        for k in 0..1000u64 {
            let key = key_hash(&k.to_le_bytes());
            assert_eq!(owners(key, &c, 3), owners(key, &r, 3));
        }
        let all = owners(key_hash(b"x"), &c, 100);
        assert_eq!(all.len(), 8, "each candidate once");
    }

    #[test]
    fn shares_follow_weights_and_weight_zero_owns_nothing() {
        let c = [relay(1, 100), relay(2, 200), relay(3, 300), relay(4, 0)];
        let mut n = [0u64; 4];
        for k in 0..KEYS {
            let o = owner_of(k, &c);
            n[c.iter().position(|x| x.node == o).unwrap()] += 1;
        }
        let share = |i: usize| n[i] as f64 / KEYS as f64;
        for (i, want) in [(0, 1.0 / 6.0), (1, 2.0 / 6.0), (2, 3.0 / 6.0)] {
            assert!(
                (share(i) - want).abs() < 0.015,
                "relay {i}: {} of {want}",
                share(i)
            );
        }
        assert_eq!(n[3], 0);
    }

    #[test]
    fn a_join_or_a_leave_moves_only_the_share_of_the_relay_that_changed() {
        let ten: Vec<_> = (0..10).map(|i| relay(i, 100)).collect();
        let mut eleven = ten.clone();
        eleven.push(relay(10, 100));
        let (mut moved, mut to_new) = (0, 0);
        for k in 0..KEYS {
            let (before, after) = (owner_of(k, &ten), owner_of(k, &eleven));
            if before != after {
                moved += 1;
                to_new += u64::from(after == relay(10, 100).node);
            }
        }
        let joined = moved as f64 / KEYS as f64;
        assert!((joined - 1.0 / 11.0).abs() < 0.01, "a join moved {joined}");
        assert_eq!(to_new, moved, "every moved key went to the newcomer");
        // Relay 3 leaves: only its keys move, spread over the others.
        let nine: Vec<_> = ten
            .iter()
            .copied()
            .filter(|c| c != &relay(3, 100))
            .collect();
        let mut moved = 0;
        for k in 0..KEYS {
            let (before, after) = (owner_of(k, &ten), owner_of(k, &nine));
            if before != after {
                moved += 1;
                assert_eq!(
                    before,
                    relay(3, 100).node,
                    "a key of a relay that stayed moved"
                );
            }
        }
        let left = moved as f64 / KEYS as f64;
        assert!((left - 0.1).abs() < 0.01, "a leave moved {left}");
        eprintln!(
            "10 relays: a join moved {joined:.4} of the keys (1/11 = 0.0909), a leave {left:.4} (1/10)"
        );
    }

    #[test]
    fn at_a_thousand_relays_a_join_still_moves_only_its_share() {
        let before: Vec<_> = (0..1000).map(|i| relay(i, 100)).collect();
        let mut after = before.clone();
        after.push(relay(1000, 100));
        let keys = 10_000u64;
        let moved = (0..keys)
            .filter(|&k| owner_of(k, &before) != owner_of(k, &after))
            .count();
        let share = moved as f64 / keys as f64;
        eprintln!("1000 relays: a join moved {share:.5} of the keys (1/1001 = 0.00100)");
        assert!(share < 0.003, "{share}");
    }
}

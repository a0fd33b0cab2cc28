//! Proximity: how near a node is, from its round-trip time, and the pure bookkeeping that
//! turns measured round trips into table weights without letting jitter move flows.
//!
//! A node's *proximity factor* is 1 within `steer.proximity_rtt_us` and
//! `proximity_rtt_us / rtt_us` beyond it; its table weight is `weight` × health × that factor
//! ([`weight`]). `relay run` measures each checked node's round trip (the TCP connect of its
//! health check, one round trip) and [`Proximity`] keeps the last [`WINDOW`] samples: the
//! node's measured RTT is their median, once there are [`MIN_SAMPLES`]. The maps use the RTT
//! *applied* at the last sync; a new measurement triggers a sync only when it moves the
//! node's factor by more than `steer.health.rtt_change_percent` ([`moved`]), so near nodes
//! (factor 1 whatever their jitter) never do, and a far one only when it really moves.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Samples kept per node; the measured RTT is their median.
pub const WINDOW: usize = 5;
/// Samples needed before a node's measurement replaces its configured `rtt_us`.
pub const MIN_SAMPLES: usize = 3;

/// The proximity factor of a node `rtt_us` away: 1 within `proximity_rtt_us` (or when the
/// RTT is unknown, 0), else `proximity_rtt_us / rtt_us`.
pub fn factor(rtt_us: u64, proximity_rtt_us: u64) -> f64 {
    if rtt_us == 0 || rtt_us <= proximity_rtt_us {
        1.0
    } else {
        proximity_rtt_us as f64 / rtt_us as f64
    }
}

/// The table weight of a node of capacity `weight`, `rtt_us` away: `weight` × its proximity
/// factor, never rounded down to 0 (only a zero weight drains a node).
pub fn weight(weight: u32, rtt_us: u64, proximity_rtt_us: u64) -> u32 {
    if rtt_us == 0 || rtt_us <= proximity_rtt_us {
        return weight;
    }
    let scaled = u64::from(weight) * proximity_rtt_us / rtt_us;
    scaled.max(u64::from(weight > 0)) as u32
}

/// Whether a factor going from `old` to `new` changed by more than `percent` % of `old`.
pub fn moved(old: f64, new: f64, percent: u32) -> bool {
    (new - old).abs() > old * f64::from(percent) / 100.0
}

/// The median of `samples` (the lower middle one of an even count); None when empty.
pub fn median(samples: impl IntoIterator<Item = u64>) -> Option<u64> {
    let mut sorted: Vec<u64> = samples.into_iter().collect();
    sorted.sort_unstable();
    let len = sorted.len();
    (len > 0).then(|| sorted[(len - 1) / 2])
}

/// A node whose measured RTT moved its proximity factor past the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Drift {
    pub node: String,
    /// The RTT the maps use now (applied at the last sync, or configured), µs.
    pub from_us: u64,
    /// The measured RTT, µs.
    pub to_us: u64,
    pub from_factor: f64,
    pub to_factor: f64,
}

#[derive(Clone, Debug, Default)]
struct NodeRtt {
    samples: VecDeque<u64>,
    applied: Option<u64>,
}

/// Measured round trips by node name, and the ones the maps use.
#[derive(Clone, Debug, Default)]
pub struct Proximity {
    nodes: HashMap<String, NodeRtt>,
}

impl Proximity {
    /// Records one round trip of `node`.
    pub fn observe(&mut self, node: &str, rtt: Duration) {
        let entry = self.nodes.entry(node.to_owned()).or_default();
        if entry.samples.len() == WINDOW {
            entry.samples.pop_front();
        }
        // At least 1 µs: 0 means "unknown" in the config.
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        entry.samples.push_back(us);
    }

    /// The measured RTT of `node` in µs: the median of its last samples, once it has
    /// [`MIN_SAMPLES`].
    pub fn measured(&self, node: &str) -> Option<u64> {
        let entry = self.nodes.get(node)?;
        if entry.samples.len() < MIN_SAMPLES {
            return None;
        }
        median(entry.samples.iter().copied())
    }

    /// The RTT the maps should use for `node`: the one applied at the last sync, else
    /// `configured`.
    pub fn rtt_us(&self, node: &str, configured: u64) -> u64 {
        self.nodes
            .get(node)
            .and_then(|e| e.applied)
            .unwrap_or(configured)
    }

    /// The nodes (`(name, configured rtt_us)`) whose measured RTT moves their proximity
    /// factor by more than `percent` % from the one the maps use.
    pub fn drifted(
        &self,
        nodes: &[(&str, u64)],
        proximity_rtt_us: u64,
        percent: u32,
    ) -> Vec<Drift> {
        nodes
            .iter()
            .filter_map(|&(name, configured)| {
                let to_us = self.measured(name)?;
                let from_us = self.rtt_us(name, configured);
                let from_factor = factor(from_us, proximity_rtt_us);
                let to_factor = factor(to_us, proximity_rtt_us);
                moved(from_factor, to_factor, percent).then(|| Drift {
                    node: name.to_owned(),
                    from_us,
                    to_us,
                    from_factor,
                    to_factor,
                })
            })
            .collect()
    }

    /// Makes every node's measured RTT the one the maps use (called as the maps are synced).
    pub fn apply(&mut self) {
        for entry in self.nodes.values_mut() {
            if entry.samples.len() >= MIN_SAMPLES {
                entry.applied = median(entry.samples.iter().copied());
            }
        }
    }

    /// Forgets nodes not in `names` (they left the config).
    pub fn retain(&mut self, names: &[&str]) {
        self.nodes.retain(|name, _| names.contains(&name.as_str()));
    }

    /// `name=RTT` for each node of `names` with a measurement (`0.08ms`), for the log.
    pub fn describe<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> String {
        names
            .into_iter()
            .filter_map(|name| Some(format!("{name}={}", ms(self.measured(name)?))))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `µs` as milliseconds with two decimals, e.g. `20.31ms`.
pub fn ms(us: u64) -> String {
    format!("{}.{:02}ms", us / 1000, us % 1000 / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_and_weight() {
        assert_eq!(factor(0, 1000), 1.0, "unknown counts as near");
        assert_eq!(factor(800, 1000), 1.0);
        assert_eq!(factor(1000, 1000), 1.0);
        assert_eq!(factor(4000, 1000), 0.25);
        assert_eq!(weight(100, 200, 1000), 100);
        assert_eq!(weight(100, 4000, 1000), 25);
        assert_eq!(weight(100, 20_000, 1000), 5);
        assert_eq!(weight(100, 60_000_000, 1000), 1, "far, but never drained");
        assert_eq!(weight(0, 60_000_000, 1000), 0, "a zero weight stays zero");
        assert_eq!(weight(10_000, 60_000_000, 60_000_000), 10_000);
    }

    #[test]
    fn threshold() {
        assert!(!moved(1.0, 1.0, 20));
        assert!(!moved(1.0, 0.8, 20), "exactly 20% is not more than 20%");
        assert!(moved(1.0, 0.79, 20));
        assert!(moved(0.05, 1.0, 20));
        assert!(!moved(0.05, 0.055, 20));
        assert!(moved(0.05, 0.07, 20));
        assert!(moved(1.0, 0.95, 1));
    }

    #[test]
    fn median_resists_one_spike() {
        assert_eq!(median([]), None);
        assert_eq!(median([7]), Some(7));
        assert_eq!(median([90, 5000, 80, 100, 85]), Some(90));
        assert_eq!(median([4, 1, 3, 2]), Some(2));
    }

    #[test]
    fn measurements_apply_only_past_the_threshold() {
        let us = Duration::from_micros;
        let mut p = Proximity::default();
        let nodes = [("near", 0), ("far", 0), ("quiet", 300)];
        // Fewer than MIN_SAMPLES: nothing measured yet, the configured RTT applies.
        p.observe("far", us(20_000));
        p.observe("far", us(20_400));
        p.observe("near", us(80));
        assert_eq!(p.measured("far"), None);
        assert!(p.drifted(&nodes, 1000, 20).is_empty());
        assert_eq!(p.rtt_us("quiet", 300), 300);
        // The third sample of the far node moves its factor from 1 to 0.05: a drift.
        p.observe("far", us(19_800));
        p.observe("near", us(90));
        p.observe("near", us(4_000)); // one spike: the median stays near
        assert_eq!(p.measured("far"), Some(20_000));
        assert_eq!(p.measured("near"), Some(90));
        let drift = p.drifted(&nodes, 1000, 20);
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert_eq!(drift[0].node, "far");
        assert_eq!((drift[0].from_us, drift[0].to_us), (0, 20_000));
        assert_eq!((drift[0].from_factor, drift[0].to_factor), (1.0, 0.05));
        assert_eq!(p.rtt_us("far", 0), 0, "not applied until a sync");
        p.apply();
        assert_eq!(p.rtt_us("far", 0), 20_000);
        assert_eq!(p.rtt_us("near", 0), 90);
        assert!(p.drifted(&nodes, 1000, 20).is_empty());
        // Jitter within 20% of the far node's factor: no re-sync.
        for sample in [21_000, 23_000, 22_500, 23_500, 24_000] {
            p.observe("far", us(sample));
        }
        assert_eq!(p.measured("far"), Some(23_000));
        assert!(p.drifted(&nodes, 1000, 20).is_empty());
        // It moves away for good: factor 0.05 → 0.025.
        for sample in [40_000, 41_000, 39_000] {
            p.observe("far", us(sample));
        }
        let drift = p.drifted(&nodes, 1000, 20);
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].to_us, 39_000);
        // And comes back near: factor 1 again.
        for sample in [100, 120, 110] {
            p.observe("far", us(sample));
        }
        assert_eq!(p.drifted(&nodes, 1000, 20)[0].to_factor, 1.0);
        assert_eq!(
            p.describe(["near", "far", "quiet"]),
            "near=0.09ms far=0.12ms"
        );
        p.retain(&["near"]);
        assert_eq!(p.measured("far"), None);
        assert_eq!(ms(20_316), "20.31ms");
    }
}

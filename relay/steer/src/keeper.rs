//! [`Keeper`]: how `relay run` keeps the steering maps in step by itself.
//!
//! With `steer.iface` set and `relay_steer` attached to that interface (its pins under
//! `steer.pin_root`), the keeper syncs the maps from the config when the daemon starts
//! ([`Keeper::start`]) and when it reloads ([`Keeper::reload`], on SIGHUP), and runs one
//! thread that checks the nodes with a `health_check` address ([`crate::health`]). A node
//! that fails `down_after` checks in a row is marked down and one that passes `up_after` in a
//! row comes back, each through a sync: the same atomic table swap as `relay steer sync`,
//! where a down node has weight 0 and loses only its own slots.
//!
//! With `steer.health.measure_rtt` (the default), each check's TCP connect is also a round
//! trip sample of the node ([`crate::proximity`]): the median of its recent samples replaces
//! its configured `rtt_us` in the plan, and the maps are re-synced when that moves a node's
//! proximity factor by more than `rtt_change_percent` (or when a node goes down or up). The
//! measured round trips are logged with every sync.
//!
//! With `steer.cluster_nodes`, the live relays of the site are nodes too: the daemon hands
//! the keeper their source ([`Keeper::follow`]), asked at every check interval; a relay that
//! joins or leaves the cluster (or changes its weight) is a sync, and each is checked by a
//! TCP connect to its HTTP address ([`crate::members`]).
//!
//! Nothing here stops the daemon: a sync that fails (program not attached, not root) is
//! logged and tried again at the next reload, health change or proximity change.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use relay_config::{SteerConfig, SteerNode};

use crate::health::{self, Change, Checked, Tracker};
use crate::members::{Macs, MemberSource};
use crate::proximity::{self, Proximity};
use crate::{Plan, SteerError, SyncReport};

/// Keeps the maps of `steer.iface` in step with the config and the nodes' health; stops its
/// thread when dropped.
pub struct Keeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the health thread early: on reload and on stop.
    wake: Condvar,
}

struct State {
    config: SteerConfig,
    tracker: Tracker,
    /// Measured round trips, and the ones the maps use.
    proximity: Proximity,
    stop: bool,
    /// Bumped by every reload, so the thread does not apply checks of an older config.
    generation: u64,
    /// Where the site's live relays come from (`steer.cluster_nodes`), once the cluster is
    /// joined.
    source: Option<MemberSource>,
    /// The site's relays as nodes, as the last sync saw them (beside the config's nodes).
    members: Vec<SteerNode>,
}

impl State {
    /// Every node of the plan: the configured ones and the site's relays.
    fn nodes(&self) -> impl Iterator<Item = &SteerNode> {
        self.config.nodes.iter().chain(&self.members)
    }

    fn names(&self) -> Vec<String> {
        self.nodes().map(|n| n.name.clone()).collect()
    }
}

impl Keeper {
    /// Syncs the maps for `config` (if `steer.iface` is set) and starts the health thread.
    pub fn start(config: &SteerConfig) -> Keeper {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config: config.clone(),
                tracker: Tracker::default(),
                proximity: Proximity::default(),
                stop: false,
                generation: 0,
                source: None,
                members: Vec::new(),
            }),
            wake: Condvar::new(),
        });
        let Some(iface) = config.iface.clone() else {
            log::debug!("steer: no steer.iface; the daemon leaves the steering maps alone");
            return Keeper {
                shared,
                thread: None,
            };
        };
        sync_logged(&mut shared.lock(), "start");
        let thread = std::thread::Builder::new()
            .name(format!("steer-health-{iface}"))
            .spawn({
                let shared = shared.clone();
                move || health_loop(&shared)
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                log::error!("steer: cannot start the health thread: {e}");
                None
            }
        };
        Keeper { shared, thread }
    }

    /// Takes a reloaded config: syncs the maps from it at once (keeping what the checks know
    /// of nodes still configured) and has the health thread follow it.
    pub fn reload(&self, config: &SteerConfig) {
        let mut state = self.shared.lock();
        state.config = config.clone();
        state.generation += 1;
        if !config.cluster_nodes {
            state.members.clear();
        }
        let names = state.names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        state.tracker.retain(&names);
        if config.health.measure_rtt {
            state.proximity.retain(&names);
        } else {
            state.proximity = Proximity::default();
        }
        if config.iface.is_some() {
            sync_logged(&mut state, "reload");
        }
        drop(state);
        self.shared.wake.notify_all();
    }

    /// Has the site's live relays (`steer.cluster_nodes`) come from `source` from now on:
    /// they are looked at once at once, then at every check interval.
    pub fn follow(&self, source: MemberSource) {
        self.shared.lock().source = Some(source);
        self.shared.wake.notify_all();
    }

    /// What the checks currently say about `node` (up when never checked).
    pub fn is_up(&self, node: &str) -> bool {
        self.shared.lock().tracker.is_up(node)
    }

    /// The round trip the checks measured to `node`, in µs (None until enough checks).
    pub fn measured_rtt_us(&self, node: &str) -> Option<u64> {
        self.shared.lock().proximity.measured(node)
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("steer: the health thread panicked");
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The plan of `state`: the config, with the nodes the checks found down taken out and the
/// measured round trips (as applied at the last sync) in place of the configured ones.
fn effective_plan(state: &State) -> Result<Plan, SteerError> {
    let mut config = state.config.clone();
    config.nodes.extend(state.members.iter().cloned());
    for node in &mut config.nodes {
        node.up = node.up && state.tracker.is_up(&node.name);
        node.rtt_us = state.proximity.rtt_us(&node.name, node.rtt_us);
    }
    Plan::from_config(&config)
}

/// Syncs the interface's maps with `state`.
fn sync(state: &State) -> Result<Option<SyncReport>, SteerError> {
    let Some(iface) = state.config.iface.as_deref() else {
        return Ok(None);
    };
    let plan = effective_plan(state)?;
    crate::sync(iface, &state.config.pin_root, &plan).map(Some)
}

/// Makes the measured round trips the ones the maps use, then syncs.
fn sync_logged(state: &mut State, why: &str) {
    state.proximity.apply();
    let state = &*state;
    let iface = state.config.iface.as_deref().unwrap_or("-");
    match sync(state) {
        Ok(Some(report)) => {
            let down: Vec<&str> = state
                .nodes()
                .filter(|n| !(n.up && state.tracker.is_up(&n.name)))
                .map(|n| n.name.as_str())
                .collect();
            let rtt = state
                .proximity
                .describe(state.nodes().map(|n| n.name.as_str()));
            log::info!(
                "steer: synced {iface} ({why}): {} services, {} nodes ({} of the site), {} down \
                 {down:?}, rtt [{rtt}], table half {}",
                state.config.services.len(),
                state.nodes().count(),
                state.members.len(),
                down.len(),
                report.half
            );
        }
        Ok(None) => {}
        Err(SteerError::NotAttached(_)) => log::warn!(
            "steer: relay_steer is not attached to {iface} under {} ({why}); run `relay steer \
             attach` — the maps are synced at the next reload or health change",
            state.config.pin_root.display()
        ),
        Err(e) => log::error!("steer: syncing {iface} ({why}) failed: {e}"),
    }
}

/// How a node is checked.
#[derive(Clone, Copy)]
enum Probe {
    /// `GET <steer.health.path>`, 200 passes (a configured node's `health_check`).
    Http,
    /// A TCP connect (a relay of the site, at its HTTP address for other relays).
    Connect,
}

/// The health thread: every `interval_ms`, takes in the site's live relays (with
/// `steer.cluster_nodes`), checks every node that has a `health_check` address (in
/// parallel, each bounded by `timeout_ms`), and syncs when a node changes. Runs until the
/// keeper is dropped.
fn health_loop(shared: &Shared) {
    let mut macs = Macs::default();
    let mut state = shared.lock();
    while !state.stop {
        let interval = Duration::from_millis(state.config.health.interval_ms);
        state = shared
            .wake
            .wait_timeout(state, interval)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if state.stop {
            break;
        }
        let generation = state.generation;
        let health = state.config.health.clone();
        let source = match state.config.cluster_nodes {
            true => state.source.clone(),
            false => None,
        };
        let next_hop = state.config.cluster_next_hop;
        let configured: Vec<String> = state.config.nodes.iter().map(|n| n.name.clone()).collect();
        let mut targets: Vec<(String, std::net::SocketAddr, Probe)> = state
            .config
            .nodes
            .iter()
            .filter(|n| !n.local)
            .filter_map(|n| Some((n.name.clone(), n.health_check?, Probe::Http)))
            .collect();
        drop(state);
        // Asked without the lock (it reads the neighbour table).
        let members = source.map(|source| {
            let table = crate::plan::neighbours();
            macs.nodes(&source(), next_hop, &configured, &table)
        });
        for node in members.iter().flatten().filter(|n| !n.local) {
            if let Some(addr) = node.health_check {
                targets.push((node.name.clone(), addr, Probe::Connect));
            }
        }
        let results = check_all(&targets, &health);
        state = shared.lock();
        if state.stop || state.generation != generation {
            continue;
        }
        let mut joined = false;
        if let Some(members) = members
            && members != state.members
        {
            log_members(&state.members, &members);
            state.members = members;
            let names = state.names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            state.tracker.retain(&names);
            state.proximity.retain(&names);
            joined = true;
        }
        let mut changes: Vec<Change> = Vec::new();
        for (name, checked) in results {
            if let (true, Some(rtt)) = (health.measure_rtt, checked.rtt) {
                state.proximity.observe(&name, rtt);
            }
            changes.extend(state.tracker.observe(
                &name,
                checked.result,
                health.down_after,
                health.up_after,
            ));
        }
        let configured: Vec<(&str, u64)> =
            state.nodes().map(|n| (n.name.as_str(), n.rtt_us)).collect();
        let drifts = state.proximity.drifted(
            &configured,
            state.config.proximity_rtt_us,
            health.rtt_change_percent,
        );
        for drift in &drifts {
            log::info!(
                "steer: node {} round trip {} (was {}), proximity {:.2} -> {:.2}",
                drift.node,
                proximity::ms(drift.to_us),
                match drift.from_us {
                    0 => "unknown".to_owned(),
                    us => proximity::ms(us),
                },
                drift.from_factor,
                drift.to_factor
            );
        }
        for change in &changes {
            if change.up {
                log::info!("steer: node {} up: {}", change.node, change.why);
            } else {
                log::warn!("steer: node {} down: {}", change.node, change.why);
            }
        }
        if !changes.is_empty() {
            sync_logged(&mut state, "health");
        } else if joined {
            sync_logged(&mut state, "members");
        } else if !drifts.is_empty() {
            sync_logged(&mut state, "proximity");
        }
    }
}

/// Every target checked at once, each within `timeout_ms`.
fn check_all(
    targets: &[(String, std::net::SocketAddr, Probe)],
    health: &relay_config::schema::SteerHealth,
) -> Vec<(String, Checked)> {
    let timeout = Duration::from_millis(health.timeout_ms);
    std::thread::scope(|scope| {
        let checks: Vec<_> = targets
            .iter()
            .map(|(name, addr, probe)| {
                let (path, addr, probe) = (health.path.as_str(), *addr, *probe);
                let check = scope.spawn(move || match probe {
                    Probe::Http => health::check(addr, path, timeout),
                    Probe::Connect => health::connect(addr, timeout),
                });
                (name, check)
            })
            .collect();
        checks
            .into_iter()
            .map(|(name, check)| {
                let result = check.join().unwrap_or_else(|_| Checked {
                    rtt: None,
                    result: Err("the check panicked".to_owned()),
                });
                (name.clone(), result)
            })
            .collect()
    })
}

/// One line per relay of the site that joined or left the tables.
fn log_members(before: &[SteerNode], now: &[SteerNode]) {
    for node in now {
        if !before.iter().any(|b| b.name == node.name) {
            log::info!(
                "steer: relay {} of the site joins the tables (weight {}{})",
                node.name,
                node.weight,
                if node.local { ", this relay" } else { "" }
            );
        }
    }
    for node in before {
        if !now.iter().any(|n| n.name == node.name) {
            log::warn!("steer: relay {} of the site leaves the tables", node.name);
        }
    }
}

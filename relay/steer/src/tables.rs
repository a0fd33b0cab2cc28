//! [`SteerMaps`]: the maps of a loaded (or pinned) `relay_steer`, and [`SteerMaps::sync`],
//! which brings them in step with a [`Plan`].
//!
//! The order of a sync keeps every packet's view consistent:
//! 1. settings; nodes that are up (new ones get a free id, known ones keep theirs: ids live in
//!    the connection table, so a node keeps its id for as long as it is configured);
//! 2. the new Maglev table into the *inactive* half of every service's pair of rings, then
//!    one write of `RELAY_ACTIVE` flips all services to it: the program never sees a
//!    half-written table;
//! 3. nodes that are down (their established flows are then chosen again from the new
//!    table) and nodes no longer configured;
//! 4. services, then the blocklist.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::path::Path;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key},
};
use relay_common::{
    Active, Counter, MAX_NODES, MAX_RING_SIZE, NO_NODE, Node, Reason, Ring, Service, ServiceKey,
    Settings, Verdict, maps as names,
};

use crate::{Plan, SteerError};

/// Typed handles on the maps `sync` writes and `status` reads.
pub struct SteerMaps {
    settings: Array<MapData, Settings>,
    active: Array<MapData, Active>,
    services: HashMap<MapData, ServiceKey, Service>,
    nodes: Array<MapData, Node>,
    rings: Array<MapData, Ring>,
    blocklist: LpmTrie<MapData, [u32; 4], u32>,
    counters: PerCpuArray<MapData, Counter>,
    reasons: PerCpuArray<MapData, Counter>,
    service_stats: PerCpuArray<MapData, Counter>,
}

/// What a sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// Map id of each plan node, in plan order.
    pub node_ids: Vec<u32>,
    /// The half of the rings now live.
    pub half: u32,
    /// The table now live for every service.
    pub table: Vec<u32>,
}

fn typed<T>(name: &str, map: Map) -> Result<T, SteerError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(map).map_err(|error| SteerError::bpf(format!("map {name}"), error))
}

impl SteerMaps {
    /// Takes the maps out of a loaded object (the programs keep their own references).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, SteerError> {
        Self::open(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| SteerError::InvalidObject(format!("map {name}")))
        })
    }

    /// Opens the maps pinned in `dir` (`<pin root>/<iface>`).
    pub fn from_pins(dir: &Path) -> Result<Self, SteerError> {
        Self::open(|name| {
            let path = dir.join(name);
            let context = || format!("opening the map pinned at {}", path.display());
            let data = MapData::from_pin(&path).map_err(|e| SteerError::bpf(context(), e))?;
            Map::from_map_data(data).map_err(|e| SteerError::bpf(context(), e))
        })
    }

    fn open(
        mut get: impl FnMut(&'static str) -> Result<Map, SteerError>,
    ) -> Result<Self, SteerError> {
        Ok(Self {
            settings: typed(names::SETTINGS, get(names::SETTINGS)?)?,
            active: typed(names::ACTIVE, get(names::ACTIVE)?)?,
            services: typed(names::SERVICES, get(names::SERVICES)?)?,
            nodes: typed(names::NODES, get(names::NODES)?)?,
            rings: typed(names::RINGS, get(names::RINGS)?)?,
            blocklist: typed(names::BLOCKLIST, get(names::BLOCKLIST)?)?,
            counters: typed(names::COUNTERS, get(names::COUNTERS)?)?,
            reasons: typed(names::REASONS, get(names::REASONS)?)?,
            service_stats: typed(names::SERVICE_STATS, get(names::SERVICE_STATS)?)?,
        })
    }

    /// Writes `plan` into the maps (see the module docs for the order).
    pub fn sync(&mut self, plan: &Plan) -> Result<SyncReport, SteerError> {
        let capacity = self.rings.len() / 2;
        if plan.services.len() > capacity as usize {
            return Err(SteerError::InvalidPlan(format!(
                "{} services configured but the maps were attached with room for {capacity} \
                 (steer.max_services); detach and attach again to change it",
                plan.services.len()
            )));
        }
        let err = |what: &str| {
            let what = what.to_owned();
            move |e| SteerError::bpf(what, e)
        };
        let ids = self.assign_ids(plan)?;
        self.settings
            .set(0, plan.settings, 0)
            .map_err(err("writing the settings"))?;
        for (node, &id) in plan.nodes.iter().zip(&ids) {
            if node.node.flags & Node::UP != 0 {
                self.nodes
                    .set(id, node.node, 0)
                    .map_err(err("writing a node"))?;
            }
        }

        let table = plan.table(&ids);
        let mut ring = Box::new(Ring {
            slots: [NO_NODE; MAX_RING_SIZE],
        });
        ring.slots[..table.len()].copy_from_slice(&table);
        let live = self
            .active
            .get(&0, 0)
            .map_err(err("reading the live half"))?
            .half
            & 1;
        let next = live ^ 1;
        for id in 0..plan.services.len() as u32 {
            self.rings
                .set(id * 2 + next, ring.as_ref(), 0)
                .map_err(err("writing a Maglev table"))?;
        }
        self.active
            .set(0, Active { half: next }, 0)
            .map_err(err("flipping the live half"))?;

        let kept: HashSet<u32> = ids.iter().copied().collect();
        for (node, &id) in plan.nodes.iter().zip(&ids) {
            if node.node.flags & Node::UP == 0 {
                self.nodes
                    .set(id, node.node, 0)
                    .map_err(err("writing a node"))?;
            }
        }
        for id in 0..MAX_NODES {
            if !kept.contains(&id) {
                let current = self.nodes.get(&id, 0).map_err(err("reading a node"))?;
                if current.flags != 0 {
                    self.nodes
                        .set(id, Node::default(), 0)
                        .map_err(err("clearing a node"))?;
                }
            }
        }

        let wanted: StdHashMap<ServiceKey, u32> = plan
            .services
            .iter()
            .enumerate()
            .map(|(id, key)| (*key, id as u32))
            .collect();
        let existing: Vec<ServiceKey> = self.services.keys().filter_map(Result::ok).collect();
        for key in existing {
            if !wanted.contains_key(&key) {
                self.services
                    .remove(&key)
                    .map_err(err("removing a service"))?;
            }
        }
        for (key, &id) in &wanted {
            self.services
                .insert(key, Service { id, flags: 0 }, 0)
                .map_err(err("writing a service"))?;
        }

        let wanted: HashSet<([u32; 4], u32)> = plan.blocklist.iter().copied().collect();
        let existing: Vec<Key<[u32; 4]>> = self.blocklist.keys().filter_map(Result::ok).collect();
        for key in existing {
            if !wanted.contains(&(key.data(), key.prefix_len())) {
                self.blocklist
                    .remove(&key)
                    .map_err(err("removing a blocked prefix"))?;
            }
        }
        for &(addr, len) in &wanted {
            self.blocklist
                .insert(&Key::new(len, addr), 1, 0)
                .map_err(err("writing a blocked prefix"))?;
        }
        Ok(SyncReport {
            node_ids: ids,
            half: next,
            table,
        })
    }

    /// Map ids for the plan's nodes: a node already in the map (same name hash) keeps its id,
    /// a new one takes the lowest free id.
    fn assign_ids(&self, plan: &Plan) -> Result<Vec<u32>, SteerError> {
        let mut current = StdHashMap::new();
        for id in 0..MAX_NODES {
            let node = self
                .nodes
                .get(&id, 0)
                .map_err(|e| SteerError::bpf("reading a node", e))?;
            if node.flags != 0 {
                current.insert(node.tag, id);
            }
        }
        let mut tags = HashSet::new();
        let mut taken: HashSet<u32> = HashSet::new();
        let mut ids = vec![None; plan.nodes.len()];
        for (slot, node) in ids.iter_mut().zip(&plan.nodes) {
            if !tags.insert(node.node.tag) {
                return Err(SteerError::InvalidPlan(format!(
                    "node {:?}: its name hashes like another node's; rename it",
                    node.name
                )));
            }
            if let Some(&id) = current.get(&node.node.tag) {
                *slot = Some(id);
                taken.insert(id);
            }
        }
        let used: HashSet<u32> = current.values().copied().collect();
        let mut free = (0..MAX_NODES).filter(|id| !taken.contains(id) && !used.contains(id));
        // Ids of nodes that left the config are reused only when nothing else is free.
        let mut reusable = (0..MAX_NODES).filter(|id| !taken.contains(id) && used.contains(id));
        ids.into_iter()
            .map(|id| {
                id.or_else(|| free.next())
                    .or_else(|| reusable.next())
                    .ok_or_else(|| SteerError::InvalidPlan(format!("more than {MAX_NODES} nodes")))
            })
            .collect()
    }

    /// Packets and bytes per verdict, summed over CPUs.
    pub fn counters(&self) -> Result<[Counter; Verdict::COUNT as usize], SteerError> {
        let mut out = [Counter::default(); Verdict::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = sum(&self.counters, i as u32)?;
        }
        Ok(out)
    }

    /// Packets and bytes per reason, summed over CPUs.
    pub fn reasons(&self) -> Result<[Counter; Reason::COUNT as usize], SteerError> {
        let mut out = [Counter::default(); Reason::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = sum(&self.reasons, i as u32)?;
        }
        Ok(out)
    }

    /// Packets and bytes of service `id` per verdict, summed over CPUs.
    pub fn service_counters(
        &self,
        id: u32,
    ) -> Result<[Counter; Verdict::COUNT as usize], SteerError> {
        let mut out = [Counter::default(); Verdict::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = sum(&self.service_stats, id * Verdict::COUNT + i as u32)?;
        }
        Ok(out)
    }

    /// The reason counters of the map pinned at `path`, summed over CPUs.
    pub(crate) fn read_reasons_pin(
        path: &Path,
    ) -> Result<[Counter; Reason::COUNT as usize], SteerError> {
        let context = || format!("reading the reasons pinned at {}", path.display());
        let data = MapData::from_pin(path).map_err(|e| SteerError::bpf(context(), e))?;
        let map = Map::from_map_data(data).map_err(|e| SteerError::bpf(context(), e))?;
        let reasons: PerCpuArray<MapData, Counter> = typed(relay_common::maps::REASONS, map)?;
        let mut out = [Counter::default(); Reason::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = sum(&reasons, i as u32)?;
        }
        Ok(out)
    }

    /// The live half of the rings.
    pub fn live_half(&self) -> Result<u32, SteerError> {
        Ok(self
            .active
            .get(&0, 0)
            .map_err(|e| SteerError::bpf("reading the live half", e))?
            .half)
    }
}

fn sum(map: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Counter, SteerError> {
    let values = map
        .get(&index, 0)
        .map_err(|e| SteerError::bpf("reading a counter", e))?;
    Ok(values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets.wrapping_add(c.packets),
        bytes: acc.bytes.wrapping_add(c.bytes),
    }))
}

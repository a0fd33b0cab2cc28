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
//! 4. services: the hash (keys no longer configured out, then the configured ones in), the
//!    keys by id, then the port index the program reads first (so a port entry never names an
//!    id whose key is not yet written; a stale one only fails the key comparison); then the
//!    blocklist.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::path::Path;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key},
};
use relay_common::{
    Active, Counter, MAX_NODES, MAX_RING_SIZE, MAX_SERVICES, NO_NODE, Node, PORT_FREE, PORT_SHARED,
    Reason, Ring, Service, ServiceKey, Settings, Stats, Verdict, maps as names, service_port_index,
    stats_slot,
};

use crate::{Plan, SteerError};

/// Typed handles on the maps `sync` writes and `status` reads.
pub struct SteerMaps {
    settings: Array<MapData, Settings>,
    active: Array<MapData, Active>,
    services: HashMap<MapData, ServiceKey, Service>,
    service_ports: Array<MapData, u32>,
    service_keys: Array<MapData, ServiceKey>,
    nodes: Array<MapData, Node>,
    rings: Array<MapData, Ring>,
    blocklist: LpmTrie<MapData, [u32; 4], u32>,
    stats: PerCpuArray<MapData, Stats>,
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
            service_ports: typed(names::SERVICE_PORTS, get(names::SERVICE_PORTS)?)?,
            service_keys: typed(names::SERVICE_KEYS, get(names::SERVICE_KEYS)?)?,
            nodes: typed(names::NODES, get(names::NODES)?)?,
            rings: typed(names::RINGS, get(names::RINGS)?)?,
            blocklist: typed(names::BLOCKLIST, get(names::BLOCKLIST)?)?,
            stats: typed(names::STATS, get(names::STATS)?)?,
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
        for key in &existing {
            if !wanted.contains_key(key) {
                self.services
                    .remove(key)
                    .map_err(err("removing a service"))?;
            }
        }
        for (key, &id) in &wanted {
            self.services
                .insert(key, Service { id, flags: 0 }, 0)
                .map_err(err("writing a service"))?;
        }
        for id in 0..MAX_SERVICES {
            let key = plan.services.get(id as usize).copied().unwrap_or_default();
            self.service_keys
                .set(id, key, 0)
                .map_err(err("writing a service key"))?;
        }
        // Every port a service listened on before or listens on now gets its new entry.
        let ports = port_entries(&plan.services);
        for key in &existing {
            let index = service_port_index(key.proto, key.port);
            if !ports.contains_key(&index) {
                self.service_ports
                    .set(index, PORT_FREE, 0)
                    .map_err(err("clearing a service port"))?;
            }
        }
        for (&index, &entry) in &ports {
            self.service_ports
                .set(index, entry, 0)
                .map_err(err("writing a service port"))?;
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

    /// Packets and bytes per verdict, summed over CPUs and stats slots.
    pub fn counters(&self) -> Result<[Counter; Verdict::COUNT as usize], SteerError> {
        Ok(total(&self.stats)?.verdicts)
    }

    /// Packets and bytes per reason, summed over CPUs and stats slots.
    pub fn reasons(&self) -> Result<[Counter; Reason::COUNT as usize], SteerError> {
        Ok(total(&self.stats)?.reasons)
    }

    /// Packets and bytes of service `id` per verdict, summed over CPUs.
    pub fn service_counters(
        &self,
        id: u32,
    ) -> Result<[Counter; Verdict::COUNT as usize], SteerError> {
        Ok(slot(&self.stats, stats_slot(id))?.verdicts)
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

/// The entries of the port index for `services` (service id = position): `id + 1` for a port
/// (and protocol) that one service listens on, [`PORT_SHARED`] for one that several share.
fn port_entries(services: &[ServiceKey]) -> StdHashMap<u32, u32> {
    let mut entries = StdHashMap::new();
    for (id, key) in services.iter().enumerate() {
        entries
            .entry(service_port_index(key.proto, key.port))
            .and_modify(|entry| *entry = PORT_SHARED)
            .or_insert(id as u32 + 1);
    }
    entries
}

/// Slot `index` of the stats map, summed over CPUs.
fn slot(map: &PerCpuArray<MapData, Stats>, index: u32) -> Result<Stats, SteerError> {
    let values = map
        .get(&index, 0)
        .map_err(|e| SteerError::bpf("reading the counters", e))?;
    Ok(values.iter().fold(Stats::default(), |acc, s| acc.plus(s)))
}

/// Every slot of the stats map, summed over CPUs and slots.
pub(crate) fn total(map: &PerCpuArray<MapData, Stats>) -> Result<Stats, SteerError> {
    let mut sum = Stats::default();
    for index in 0..map.len() {
        sum = sum.plus(&slot(map, index)?);
    }
    Ok(sum)
}

/// The configured nodes (flags not zero) of the nodes map pinned at `path`, by id.
pub(crate) fn read_nodes_pin(path: &Path) -> Result<Vec<(u32, Node)>, SteerError> {
    let context = || format!("reading the nodes pinned at {}", path.display());
    let data = MapData::from_pin(path).map_err(|e| SteerError::bpf(context(), e))?;
    let map = Map::from_map_data(data).map_err(|e| SteerError::bpf(context(), e))?;
    let nodes: Array<MapData, Node> = typed(names::NODES, map)?;
    let mut out = Vec::new();
    for id in 0..nodes.len() {
        let node = nodes
            .get(&id, 0)
            .map_err(|e| SteerError::bpf(context(), e))?;
        if node.flags != 0 {
            out.push((id, node));
        }
    }
    Ok(out)
}

/// The counters of the stats map pinned at `path`, summed over CPUs and slots.
pub(crate) fn read_stats_pin(path: &Path) -> Result<Stats, SteerError> {
    let context = || format!("reading the counters pinned at {}", path.display());
    let data = MapData::from_pin(path).map_err(|e| SteerError::bpf(context(), e))?;
    let map = Map::from_map_data(data).map_err(|e| SteerError::bpf(context(), e))?;
    let stats: PerCpuArray<MapData, Stats> = typed(names::STATS, map)?;
    total(&stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_common::v4_mapped;

    fn key(last: u8, port: u16, proto: u8) -> ServiceKey {
        ServiceKey {
            addr: v4_mapped(u32::from_ne_bytes([10, 200, 251, last])),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    #[test]
    fn one_service_per_port_is_named_shared_ports_go_to_the_hash() {
        let services = [
            key(1, 8080, 6),
            key(1, 443, 6),
            key(2, 443, 6),
            key(1, 443, 17),
        ];
        let entries = port_entries(&services);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[&service_port_index(6, 8080u16.to_be())], 1);
        assert_eq!(entries[&service_port_index(6, 443u16.to_be())], PORT_SHARED);
        assert_eq!(entries[&service_port_index(17, 443u16.to_be())], 4);
        assert_eq!(service_port_index(17, 443u16.to_be()), (1 << 16) | 443);
    }
}

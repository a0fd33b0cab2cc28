//! The BPF maps of `relay_steer`, shared with the userspace loader (`relay/steer`), which pins
//! them under `<pin root>/<iface>/`, fills the configuration maps and reads the counters.
//! Key and value types come from `relay-common`; the names are checked against it at compile
//! time.
//!
//! - Counters (per CPU, so the program adds without atomics; userspace sums the CPUs):
//!   `RELAY_STATS`, one [`Stats`] per service and one for traffic to no service, each with
//!   packets and bytes by [`Verdict`] and by [`Reason`]. A packet touches one slot: one lookup.
//! - Configuration (written by userspace): `RELAY_SETTINGS`, `RELAY_SERVICES` (with its two
//!   lookup aids `RELAY_SERVICE_PORTS` and `RELAY_SERVICE_KEYS`), `RELAY_NODES`,
//!   `RELAY_RINGS` (two halves per service) and `RELAY_ACTIVE` (the live half), the
//!   `RELAY_BLOCKLIST` trie.
//! - State (written by the program): `RELAY_FLOWS` (LRU connection table), `RELAY_RATE`
//!   (per-CPU LRU token buckets per source).
//!
//! Sizes marked "set at load" are defaults the loader overrides from the config.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use relay_common::{
    Active, DEFAULT_BLOCKLIST_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_RATE_ENTRIES,
    DEFAULT_RING_ENTRIES, Flow, FlowKey, MAX_NODES, MAX_SERVICES, Node, RateState, Reason, Ring,
    SERVICE_PORT_ENTRIES, Service, ServiceKey, Settings, Stats, Verdict, maps as names,
};

/// `#[map]` takes the map's name as a literal; these keep it equal to the name the loader uses.
const _: () = {
    assert!(str_eq("RELAY_STATS", names::STATS));
    assert!(str_eq("RELAY_SETTINGS", names::SETTINGS));
    assert!(str_eq("RELAY_ACTIVE", names::ACTIVE));
    assert!(str_eq("RELAY_SERVICES", names::SERVICES));
    assert!(str_eq("RELAY_SERVICE_PORTS", names::SERVICE_PORTS));
    assert!(str_eq("RELAY_SERVICE_KEYS", names::SERVICE_KEYS));
    assert!(str_eq("RELAY_NODES", names::NODES));
    assert!(str_eq("RELAY_RINGS", names::RINGS));
    assert!(str_eq("RELAY_FLOWS", names::FLOWS));
    assert!(str_eq("RELAY_RATE", names::RATE));
    assert!(str_eq("RELAY_BLOCKLIST", names::BLOCKLIST));
};

/// Set at load: one slot per configured service slot, plus slot 0.
#[map(name = "RELAY_STATS")]
static RELAY_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(MAX_SERVICES + 1, 0);

#[map(name = "RELAY_SETTINGS")]
pub static RELAY_SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map(name = "RELAY_ACTIVE")]
pub static RELAY_ACTIVE: Array<Active> = Array::with_max_entries(1, 0);

#[map(name = "RELAY_SERVICES")]
pub static RELAY_SERVICES: aya_ebpf::maps::HashMap<ServiceKey, Service> =
    aya_ebpf::maps::HashMap::with_max_entries(MAX_SERVICES, 0);

#[map(name = "RELAY_SERVICE_PORTS")]
pub static RELAY_SERVICE_PORTS: Array<u32> = Array::with_max_entries(SERVICE_PORT_ENTRIES, 0);

#[map(name = "RELAY_SERVICE_KEYS")]
pub static RELAY_SERVICE_KEYS: Array<ServiceKey> = Array::with_max_entries(MAX_SERVICES, 0);

#[map(name = "RELAY_NODES")]
pub static RELAY_NODES: Array<Node> = Array::with_max_entries(MAX_NODES, 0);

/// Set at load: two rings per configured service slot.
#[map(name = "RELAY_RINGS")]
pub static RELAY_RINGS: Array<Ring> = Array::with_max_entries(DEFAULT_RING_ENTRIES, 0);

/// Set at load.
#[map(name = "RELAY_FLOWS")]
pub static RELAY_FLOWS: LruHashMap<FlowKey, Flow> =
    LruHashMap::with_max_entries(DEFAULT_FLOW_ENTRIES, 0);

/// Set at load.
#[map(name = "RELAY_RATE")]
pub static RELAY_RATE: LruPerCpuHashMap<[u32; 4], RateState> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_RATE_ENTRIES, 0);

/// Set at load. Keys: prefix length then the 16 address bytes (IPv4-mapped for IPv4).
#[map(name = "RELAY_BLOCKLIST")]
pub static RELAY_BLOCKLIST: LpmTrie<[u32; 4], u32> =
    LpmTrie::with_max_entries(DEFAULT_BLOCKLIST_ENTRIES, 0);

/// Counts one packet of `bytes` bytes in this CPU's stats slot `slot` under `verdict` and
/// each of `reasons`.
#[inline(always)]
pub fn count(slot: u32, verdict: Verdict, reasons: &[Option<Reason>; 3], bytes: u64) {
    let Some(stats) = RELAY_STATS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: the kernel returned a pointer to this CPU's value of a live map slot, valid and
    // aligned for a `Stats`; no other program touches this CPU's value while we run (XDP runs
    // with preemption disabled), so the exclusive borrow is not racy. It ends with this call.
    let stats = unsafe { &mut *stats };
    if let Some(counter) = stats.verdicts.get_mut(verdict as usize) {
        counter.add(bytes);
    }
    for reason in reasons.iter().flatten() {
        if let Some(counter) = stats.reasons.get_mut(*reason as usize) {
            counter.add(bytes);
        }
    }
}

/// `const` string equality, for compile-time checks of names the macros take as literals.
pub const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

//! Types shared, byte for byte, by the XDP programs (`ebpf/xdp`) and the userspace loader
//! (`relay/steer`). Everything here is `#[repr(C)]`, `Copy`, and free of padding surprises;
//! the few functions here (the flow hash, the encapsulation source) run on both sides, so
//! userspace tests can predict exactly what the kernel writes.
//!
//! Layout:
//! - [`maps`]: names of the maps, as the program declares them and the loader pins them.
//! - [`Verdict`], [`Reason`], [`Counter`], [`Stats`]: per-CPU counters by XDP action and by
//!   path taken, one [`Stats`] per service (and one for traffic to no service).
//! - [`ServiceKey`], [`Service`]: the services map, `(VIP, port, protocol) → service`.
//! - [`FlowKey`], [`Flow`], [`flow_hash`]: the connection table on the 5-tuple.
//! - [`Node`], [`Ring`]: relays and the Maglev tables (two halves per service, see [`Active`]).
//! - [`Settings`], [`Policy`]: what userspace configures (policies, rate limit, encap source).
//! - [`RateState`]: one source's new-flow token bucket.
//!
//! Addresses are `[u32; 4]` holding the 16 bytes as they are on the wire, each word read in
//! native order ([`u32::from_ne_bytes`]); IPv4 addresses are IPv4-mapped (`::ffff:a.b.c.d`), so
//! one key type and one LPM trie cover both families.
#![no_std]

/// Names of the maps, as the programs declare them and the loader pins them.
pub mod maps {
    /// Per-CPU array of [`crate::Stats`], indexed by [`crate::stats_slot`]: slot 0 for traffic
    /// to no service, `id + 1` for service `id`.
    pub const STATS: &str = "RELAY_STATS";
    /// One-element array of [`crate::Settings`].
    pub const SETTINGS: &str = "RELAY_SETTINGS";
    /// One-element array of [`crate::Active`]: which half of the rings is live.
    pub const ACTIVE: &str = "RELAY_ACTIVE";
    /// Hash map [`crate::ServiceKey`] → [`crate::Service`].
    pub const SERVICES: &str = "RELAY_SERVICES";
    /// Array of `u32` indexed by [`crate::service_port_index`]: which service listens on a
    /// destination port ([`crate::PORT_FREE`], `id + 1`, or [`crate::PORT_SHARED`]).
    pub const SERVICE_PORTS: &str = "RELAY_SERVICE_PORTS";
    /// Array of [`crate::ServiceKey`], indexed by service id (zeroed when the id is free).
    pub const SERVICE_KEYS: &str = "RELAY_SERVICE_KEYS";
    /// Array of [`crate::Node`], indexed by node id.
    pub const NODES: &str = "RELAY_NODES";
    /// Array of [`crate::Ring`], indexed by `service id * 2 + half`.
    pub const RINGS: &str = "RELAY_RINGS";
    /// LRU hash [`crate::FlowKey`] → [`crate::Flow`].
    pub const FLOWS: &str = "RELAY_FLOWS";
    /// Per-CPU LRU hash source address `[u32; 4]` → [`crate::RateState`].
    pub const RATE: &str = "RELAY_RATE";
    /// LPM trie of source prefixes (IPv4-mapped for IPv4) → `u32` (1 = blocked).
    pub const BLOCKLIST: &str = "RELAY_BLOCKLIST";

    /// Every map of `relay_steer`, in the order the loader pins them.
    pub const ALL: [&str; 11] = [
        STATS,
        SETTINGS,
        ACTIVE,
        SERVICES,
        SERVICE_PORTS,
        SERVICE_KEYS,
        NODES,
        RINGS,
        FLOWS,
        RATE,
        BLOCKLIST,
    ];
}

/// Name of the steering program in the object file.
pub const XDP_PROGRAM: &str = "relay_steer";
/// Name of the no-op program (returns `XDP_PASS`), the floor of `cargo xtask bench steer`.
pub const NOOP_PROGRAM: &str = "relay_noop";

/// Most services the maps hold (service ids are `0..MAX_SERVICES`).
pub const MAX_SERVICES: u32 = 256;
/// Most nodes the maps hold (node ids are `0..MAX_NODES`).
pub const MAX_NODES: u32 = 256;
/// Largest Maglev table; a [`Ring`] always has this many slots, of which `ring_size` are used.
pub const MAX_RING_SIZE: usize = 65537;
/// A ring slot with no node (the service has no live node): packets pass to the local stack.
pub const NO_NODE: u32 = u32::MAX;
/// Default entries of the connection table.
pub const DEFAULT_FLOW_ENTRIES: u32 = 1 << 20;
/// Default entries of the per-source rate table (per CPU).
pub const DEFAULT_RATE_ENTRIES: u32 = 1 << 16;
/// Default entries of the blocklist trie.
pub const DEFAULT_BLOCKLIST_ENTRIES: u32 = 1 << 14;
/// Default number of rings (two halves for each of 16 services).
pub const DEFAULT_RING_ENTRIES: u32 = 2 * 16;

/// Counter slots: one per XDP action, in the kernel's numbering (`XDP_ABORTED` = 0 ...).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    /// Number of counter slots.
    pub const COUNT: u32 = 5;
    /// All verdicts in slot order.
    pub const ALL: [Verdict; 5] = [
        Verdict::Aborted,
        Verdict::Drop,
        Verdict::Pass,
        Verdict::Tx,
        Verdict::Redirect,
    ];

    /// Lower-case name, as `relay steer status` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Aborted => "aborted",
            Verdict::Drop => "drop",
            Verdict::Pass => "pass",
            Verdict::Tx => "tx",
            Verdict::Redirect => "redirect",
        }
    }
}

/// Why a packet took the path it took. A packet counts under one [`Verdict`] and under every
/// reason on its way (a new flow to a remote node counts as `NewFlow` and `Remote`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Steering is not configured (zeroed settings): everything passes.
    Disabled = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed.
    NotIp = 1,
    /// IP traffic to no service: passed untouched.
    NoService = 2,
    /// A header that is cut short or contradicts itself: per `steer.malformed`.
    Malformed = 3,
    /// An IPv4 fragment or IPv6 fragment header: per `steer.fragments`.
    Fragment = 4,
    /// IPv4 options or IPv6 extension headers: per `steer.ip_options`.
    IpOptions = 5,
    /// Source in the blocklist: dropped.
    Blocked = 6,
    /// A new flow over its source's token bucket: dropped.
    RateLimited = 7,
    /// First packet of a flow: a node was chosen from the Maglev table.
    NewFlow = 8,
    /// A flow found in the connection table with its node alive.
    Established = 9,
    /// A flow found in the connection table whose node is down: chosen again.
    Rescheduled = 10,
    /// Steered to this node: passed to the local stack.
    Local = 11,
    /// Steered to another node: encapsulated and transmitted.
    Remote = 12,
    /// The service has no live node (or none of the packet's family): passed.
    NoNode = 13,
    /// Growing or shrinking the packet failed: dropped.
    EncapFailed = 14,
    /// An IPIP / IP6IP6 packet from the encapsulation source prefix: decapsulated, passed.
    Decap = 15,
}

impl Reason {
    /// Number of counter slots.
    pub const COUNT: u32 = 16;
    /// All reasons in slot order.
    pub const ALL: [Reason; 16] = [
        Reason::Disabled,
        Reason::NotIp,
        Reason::NoService,
        Reason::Malformed,
        Reason::Fragment,
        Reason::IpOptions,
        Reason::Blocked,
        Reason::RateLimited,
        Reason::NewFlow,
        Reason::Established,
        Reason::Rescheduled,
        Reason::Local,
        Reason::Remote,
        Reason::NoNode,
        Reason::EncapFailed,
        Reason::Decap,
    ];

    /// Lower-case name, as `relay steer status` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Disabled => "disabled",
            Reason::NotIp => "not_ip",
            Reason::NoService => "no_service",
            Reason::Malformed => "malformed",
            Reason::Fragment => "fragment",
            Reason::IpOptions => "ip_options",
            Reason::Blocked => "blocked",
            Reason::RateLimited => "rate_limited",
            Reason::NewFlow => "new_flow",
            Reason::Established => "established",
            Reason::Rescheduled => "rescheduled",
            Reason::Local => "local",
            Reason::Remote => "remote",
            Reason::NoNode => "no_node",
            Reason::EncapFailed => "encap_failed",
            Reason::Decap => "decap",
        }
    }
}

/// Packets and bytes counted in one per-CPU slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// Counts one packet of `bytes` bytes.
    #[inline(always)]
    pub fn add(&mut self, bytes: u64) {
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(bytes);
    }

    /// The sum of two counters (of two CPUs, or two slots).
    #[inline(always)]
    pub const fn plus(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// The counters of one slot of [`maps::STATS`] on one CPU: every packet counts once under its
/// verdict and once under each reason on its way. The program touches one slot per packet
/// (one map lookup), so counting costs the same however many reasons a packet has.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub verdicts: [Counter; Verdict::COUNT as usize],
    pub reasons: [Counter; Reason::COUNT as usize],
}

impl Stats {
    /// The sum of two slots' (or two CPUs') counters.
    pub fn plus(mut self, other: &Stats) -> Stats {
        for (a, b) in self.verdicts.iter_mut().zip(&other.verdicts) {
            *a = a.plus(*b);
        }
        for (a, b) in self.reasons.iter_mut().zip(&other.reasons) {
            *a = a.plus(*b);
        }
        self
    }
}

/// Slot of [`maps::STATS`] for traffic to no service.
pub const STATS_NO_SERVICE: u32 = 0;

/// Slot of [`maps::STATS`] for service `id`.
#[inline(always)]
pub const fn stats_slot(service: u32) -> u32 {
    service + 1
}

/// What to do with a class of packets (fragments, IP options, malformed headers).
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Pass to the local stack untouched (counted).
    #[default]
    Pass = 0,
    /// Drop (counted).
    Drop = 1,
    /// Steer like any other packet (IPv4 options only: the inner packet is never rewritten).
    Steer = 2,
}

/// Key of the services map: destination address, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// Service address (IPv4-mapped for IPv4), wire bytes.
    pub addr: [u32; 4],
    /// Destination port, wire bytes (`u16::from_ne_bytes` of the header's two bytes).
    pub port: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    pub _pad: u8,
}

/// Entries of [`maps::SERVICE_PORTS`]: one per protocol (TCP, UDP) and destination port.
pub const SERVICE_PORT_ENTRIES: u32 = 2 << 16;
/// A [`maps::SERVICE_PORTS`] value: no service listens on the port.
pub const PORT_FREE: u32 = 0;
/// A [`maps::SERVICE_PORTS`] value: several services (addresses) share the port; the services
/// map decides. Any other value is `id + 1` of the only service on the port.
pub const PORT_SHARED: u32 = u32::MAX;

/// Index of [`maps::SERVICE_PORTS`] for a destination `port` (wire bytes, as in
/// [`ServiceKey::port`]) and protocol: the port in host order, plus `1 << 16` for UDP.
///
/// The program finds a packet's service without hashing: one array lookup by port, and, when
/// one service owns the port, a comparison with that service's key in
/// [`maps::SERVICE_KEYS`]. Traffic to ports without a service costs one array lookup.
#[inline(always)]
pub const fn service_port_index(proto: u8, port: u16) -> u32 {
    let udp = if proto == 17 { 1 << 16 } else { 0 };
    udp | u16::from_be(port) as u32
}

/// Value of the services map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index of the service's rings (`id * 2 + half`) and counters; below [`MAX_SERVICES`].
    pub id: u32,
    /// Reserved (0).
    pub flags: u32,
}

/// Key of the connection table: the 5-tuple as on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Source and destination port: the first four bytes of the TCP/UDP header.
    pub ports: u32,
    /// IP protocol.
    pub proto: u32,
}

/// Value of the connection table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// The node the flow is steered to.
    pub node: u32,
    /// [`flow_hash`] of the key, kept so that the flow's later packets need not hash it again
    /// (for a new pick when its node is down, and for the encapsulation source).
    pub hash: u32,
}

/// One relay node, at its id's index of the nodes array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// Destination MAC of encapsulated frames: the node's, or its next hop's.
    pub mac: [u8; 6],
    /// [`Node::UP`], [`Node::LOCAL`], [`Node::HAS_V4`], [`Node::HAS_V6`].
    pub flags: u16,
    /// IPv4 address, wire bytes.
    pub v4: u32,
    /// IPv6 address, wire bytes.
    pub v6: [u32; 4],
    /// Hash of the node's name: lets userspace keep a node's id across config changes.
    pub tag: u32,
}

impl Node {
    /// The node is alive: established flows keep it.
    pub const UP: u16 = 1;
    /// The node is this machine: its packets pass to the local stack.
    pub const LOCAL: u16 = 2;
    /// `v4` is set.
    pub const HAS_V4: u16 = 4;
    /// `v6` is set.
    pub const HAS_V6: u16 = 8;
}

/// A Maglev lookup table: `slots[hash % ring_size]` is a node id (or [`NO_NODE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub slots: [u32; MAX_RING_SIZE],
}

/// Which half of every service's pair of rings is live: 0 or 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    pub half: u32,
}

/// One source's token bucket, per CPU: credit in nanoseconds of refill time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    pub credit_ns: u64,
    pub last_ns: u64,
}

/// What userspace configures, in a one-element array. All zero means steering is off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// [`Settings::ENABLED`], [`Settings::DECAP`], [`Settings::BLOCKLIST`].
    pub flags: u32,
    /// Slots used in each ring (a prime, at most [`MAX_RING_SIZE`]).
    pub ring_size: u32,
    /// [`Policy`] for IPv4 options and IPv6 extension headers.
    pub ip_options: u32,
    /// [`Policy`] for fragments (`Steer` acts as `Pass`).
    pub fragments: u32,
    /// [`Policy`] for malformed headers (`Steer` acts as `Pass`).
    pub malformed: u32,
    /// Encapsulation source prefix (IPv4, host order) and the mask of its prefix bits.
    pub encap_v4_prefix: u32,
    pub encap_v4_mask: u32,
    /// Mask of the prefix bits in the last word of the IPv6 source (host order).
    pub encap_v6_mask: u32,
    /// Encapsulation source prefix (IPv6), four host-order words.
    pub encap_v6_prefix: [u32; 4],
    /// Refill time of one new flow per source (1e9 / rate); 0 = no limit.
    pub rate_cost_ns: u64,
    /// Bucket size: burst × `rate_cost_ns`.
    pub rate_burst_ns: u64,
}

impl Settings {
    /// Steering and guard are on.
    pub const ENABLED: u32 = 1;
    /// Decapsulate IPIP / IP6IP6 packets whose outer source is in the encapsulation prefix.
    pub const DECAP: u32 = 2;
    /// The blocklist has entries (without it the trie lookup is skipped).
    pub const BLOCKLIST: u32 = 4;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all below): each type is repr(C), Copy, made only of integers and integer arrays
    // with no implicit padding (checked by the size assertions in the tests); every bit
    // pattern is a valid value.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Stats {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ServiceKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Service {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Flow {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Node {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Ring {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Active {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::RateState {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Settings {}
}

/// The IPv4-mapped prefix word (`::ffff:0:0/96`, third word) in wire order.
pub const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An IPv4 address (wire bytes as a native word) as a key address.
#[inline(always)]
pub const fn v4_mapped(addr: u32) -> [u32; 4] {
    [0, 0, V4_MAPPED, addr]
}

/// The flow hash: Maglev slot = `hash % ring_size`; it also fills the host bits of the
/// encapsulation source and the IPv6 flow label.
///
/// The key's ten words are taken as five 64-bit words, each folded in with one multiply
/// (`h = (h ^ w) * K; h ^= h >> 32`), then Murmur3's 64-bit finaliser mixes every input bit
/// into the 32 bits returned. About 40 BPF instructions, a quarter of 32-bit Murmur3 over the
/// same words, with no rotates (BPF has none); balance and avalanche are tested below.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    const SEED: u64 = 0x7265_6c61_7974_6873; // "relayths"
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let pair = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    let mut h = SEED;
    for word in [
        pair(key.src[0], key.src[1]),
        pair(key.src[2], key.src[3]),
        pair(key.dst[0], key.dst[1]),
        pair(key.dst[2], key.dst[3]),
        pair(key.ports, key.proto),
    ] {
        h = (h ^ word).wrapping_mul(K);
        h ^= h >> 32;
    }
    fmix64(h) as u32
}

/// Murmur3's 64-bit finaliser: every input bit affects every output bit.
#[inline(always)]
pub const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Outer IPv4 source of an encapsulated flow: the prefix bits from the settings, the host
/// bits from the flow hash, so that the receiver's RSS (which hashes the outer addresses)
/// still spreads flows over its queues. Returned as wire bytes.
#[inline(always)]
pub fn encap_source_v4(settings: &Settings, hash: u32) -> [u8; 4] {
    let mask = settings.encap_v4_mask;
    ((settings.encap_v4_prefix & mask) | (hash & !mask)).to_be_bytes()
}

/// Outer IPv6 source: the first three words of the prefix, then the last word's prefix bits
/// and the flow hash in its host bits. Returned as four wire words.
#[inline(always)]
pub fn encap_source_v6(settings: &Settings, hash: u32) -> [[u8; 4]; 4] {
    let p = settings.encap_v6_prefix;
    let mask = settings.encap_v6_mask;
    [
        p[0].to_be_bytes(),
        p[1].to_be_bytes(),
        p[2].to_be_bytes(),
        ((p[3] & mask) | (hash & !mask)).to_be_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn shared_types_have_no_padding() {
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<Stats>(), 16 * (5 + 16));
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<Service>(), 8);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<Flow>(), 8);
        assert_eq!(size_of::<Node>(), 32);
        assert_eq!(size_of::<Ring>(), 4 * MAX_RING_SIZE);
        assert_eq!(size_of::<Active>(), 4);
        assert_eq!(size_of::<RateState>(), 16);
        assert_eq!(size_of::<Settings>(), 64);
    }

    #[test]
    fn flow_hash_depends_on_every_word() {
        let base = FlowKey {
            src: v4_mapped(u32::from_ne_bytes([10, 200, 0, 1])),
            dst: v4_mapped(u32::from_ne_bytes([10, 200, 1, 1])),
            ports: 0x1234_5678,
            proto: 6,
        };
        let h = flow_hash(&base);
        let mut k = base;
        k.ports ^= 1 << 20;
        assert_ne!(flow_hash(&k), h);
        let mut k = base;
        k.src[3] ^= 1;
        assert_ne!(flow_hash(&k), h);
        let mut k = base;
        k.proto = 17;
        assert_ne!(flow_hash(&k), h);
        assert_eq!(flow_hash(&base), h, "deterministic");
    }

    /// 60000 flows of one client to one service (ports in sequence, the worst case for a weak
    /// hash) spread over a 251-slot ring as evenly as random placement would (chi-square), and
    /// flipping any one input bit flips each output bit about half the time.
    #[test]
    fn flow_hash_spreads_and_avalanches() {
        let key = |port: u32| FlowKey {
            src: v4_mapped(u32::from_ne_bytes([10, 200, 0, 1])),
            dst: v4_mapped(u32::from_ne_bytes([10, 200, 1, 1])),
            ports: port | (8080u32.to_be() << 16),
            proto: 6,
        };
        let mut slots = [0u32; 251];
        for port in 1000..61000u32 {
            slots[(flow_hash(&key(u32::from((port as u16).to_be()))) % 251) as usize] += 1;
        }
        // Chi-square with 250 degrees of freedom: 250 ± 22 for a uniform spread.
        let mean = 60000.0 / 251.0;
        let chi2: f64 = slots
            .iter()
            .map(|&n| (f64::from(n) - mean).powi(2) / mean)
            .sum();
        assert!(
            chi2 < 360.0,
            "chi-square {chi2:.0} over 251 slots: {slots:?}"
        );
        let mut flips = [0u32; 32];
        let mut trials = 0u32;
        for port in 0..200u32 {
            let base = key(port);
            let h = flow_hash(&base);
            for bit in 0..32 {
                for word in 0..10 {
                    let mut k = base;
                    match word {
                        0..4 => k.src[word] ^= 1 << bit,
                        4..8 => k.dst[word - 4] ^= 1 << bit,
                        8 => k.ports ^= 1 << bit,
                        _ => k.proto ^= 1 << bit,
                    }
                    let d = flow_hash(&k) ^ h;
                    for (out, n) in flips.iter_mut().enumerate() {
                        *n += (d >> out) & 1;
                    }
                    trials += 1;
                }
            }
        }
        for (out, &n) in flips.iter().enumerate() {
            let p = f64::from(n) / f64::from(trials);
            assert!(
                (0.45..0.55).contains(&p),
                "output bit {out} flips with p = {p:.3}"
            );
        }
    }

    #[test]
    fn encap_source_keeps_the_prefix() {
        let settings = Settings {
            encap_v4_prefix: u32::from_be_bytes([10, 200, 252, 0]),
            encap_v4_mask: 0xFFFF_FF00,
            encap_v6_prefix: [0xfd00_0000, 0, 0, 0xabcd_0000],
            encap_v6_mask: 0xFFFF_0000,
            ..Settings::default()
        };
        assert_eq!(
            encap_source_v4(&settings, 0xDEAD_BEEF),
            [10, 200, 252, 0xEF]
        );
        let v6 = encap_source_v6(&settings, 0xDEAD_BEEF);
        assert_eq!(v6[0], [0xfd, 0, 0, 0]);
        assert_eq!(v6[3], [0xab, 0xcd, 0xBE, 0xEF]);
    }
}

//! The steering decision (Katran's `balancer.bpf.c` `process_packet`), in order:
//!
//! 1. settings zeroed → pass (steering not configured);
//! 2. parse; malformed → `steer.malformed` policy; not IP → pass;
//! 3. source blocklisted → drop;
//! 4. fragment → `steer.fragments`; options / extension headers → `steer.ip_options`
//!    (`Steer` continues for IPv4 options: the inner packet is never rewritten);
//! 5. IPIP / IP6IP6 from the encapsulation prefix, when decap is on → strip, pass;
//! 6. no service for (destination, port, protocol) → pass untouched (found by port in an array
//!    and checked against the service's key; the services hash only for shared ports);
//! 7. connection table hit with a live node → that node; miss → token bucket (empty → drop),
//!    then the Maglev ring's slot `hash % ring_size` in the live half; the choice is recorded
//!    with the flow hash, so that the flow's later packets never hash again (a TCP SYN is
//!    recorded first and looked up only if its flow is already known);
//! 8. local node → pass; another node → encapsulate and transmit.
//!
//! Every step names its [`Reason`] in the [`Decision`]; `main` counts the verdict and the
//! reasons with one update of the packet's stats slot (its service's, or slot 0).

use aya_ebpf::{bindings::BPF_NOEXIST, programs::XdpContext};
use relay_common::{
    Flow, FlowKey, MAX_RING_SIZE, NO_NODE, Node, PORT_FREE, PORT_SHARED, Policy, Reason,
    STATS_NO_SERVICE, ServiceKey, Settings, Verdict, flow_hash, service_port_index, stats_slot,
};

use crate::{
    encap, guard,
    maps::{
        RELAY_ACTIVE, RELAY_FLOWS, RELAY_NODES, RELAY_RINGS, RELAY_SERVICE_KEYS,
        RELAY_SERVICE_PORTS, RELAY_SERVICES, RELAY_SETTINGS,
    },
    parse::{self, Frame, IPPROTO_TCP, IPPROTO_UDP, Packet},
};

/// What happened to a packet: its verdict, its stats slot and the reasons it counts under (at
/// most three: IP options, then how its flow was found, then where it went).
#[derive(Clone, Copy)]
pub struct Decision {
    pub verdict: Verdict,
    pub slot: u32,
    pub reasons: [Option<Reason>; 3],
}

impl Decision {
    /// A packet that is not service traffic, with one reason.
    #[inline(always)]
    fn plain(verdict: Verdict, reason: Reason) -> Self {
        Self {
            verdict,
            slot: STATS_NO_SERVICE,
            reasons: [Some(reason), None, None],
        }
    }
}

/// Passes or drops per `policy` (anything but `Drop` passes).
#[inline(always)]
fn by_policy(policy: u32) -> Verdict {
    if policy == Policy::Drop as u32 {
        Verdict::Drop
    } else {
        Verdict::Pass
    }
}

/// Decides the fate of the packet in `ctx`.
#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Decision {
    let Some(settings) = RELAY_SETTINGS.get(0) else {
        return Decision::plain(Verdict::Pass, Reason::Disabled);
    };
    if settings.flags & Settings::ENABLED == 0 {
        return Decision::plain(Verdict::Pass, Reason::Disabled);
    }
    let packet = match parse::parse(ctx) {
        Ok(Frame::Ip(packet)) => packet,
        Ok(Frame::NotIp) => return Decision::plain(Verdict::Pass, Reason::NotIp),
        Err(parse::ParseError::Malformed) => {
            return Decision::plain(by_policy(settings.malformed), Reason::Malformed);
        }
    };
    if settings.flags & Settings::BLOCKLIST != 0 && guard::blocked(&packet.src) {
        return Decision::plain(Verdict::Drop, Reason::Blocked);
    }
    if packet.fragment {
        return Decision::plain(by_policy(settings.fragments), Reason::Fragment);
    }
    let mut options = None;
    if packet.options {
        let steer_it = settings.ip_options == Policy::Steer as u32 && !packet.v6;
        if !steer_it {
            return Decision::plain(by_policy(settings.ip_options), Reason::IpOptions);
        }
        options = Some(Reason::IpOptions);
    }
    if settings.flags & Settings::DECAP != 0 && encap::is_ours_to_decap(&packet, settings) {
        return match encap::decap(ctx, &packet) {
            Ok(()) => Decision::plain(Verdict::Pass, Reason::Decap),
            Err(encap::EncapError) => Decision::plain(Verdict::Drop, Reason::EncapFailed),
        };
    }
    if packet.proto != IPPROTO_TCP && packet.proto != IPPROTO_UDP {
        return Decision::plain(Verdict::Pass, Reason::NoService);
    }
    let Some(id) = service_of(&packet) else {
        return Decision::plain(Verdict::Pass, Reason::NoService);
    };
    let (verdict, found, went) = steer_flow(ctx, settings, &packet, id);
    Decision {
        verdict,
        slot: stats_slot(id),
        reasons: [options, Some(found), went],
    }
}

/// The id of the service `packet` (TCP or UDP) is addressed to, if any.
///
/// The port array says whether a service listens on the destination port; when exactly one
/// does, its key is compared in full (the array of keys is indexed by id, so a stale port entry
/// during a sync can only miss, never name another service). Ports shared by several service
/// addresses fall back to the services hash.
#[inline(always)]
fn service_of(packet: &Packet) -> Option<u32> {
    let port = packet.dst_port();
    let entry = *RELAY_SERVICE_PORTS.get(service_port_index(packet.proto, port))?;
    if entry == PORT_FREE {
        return None;
    }
    if entry != PORT_SHARED {
        let id = entry - 1;
        let key = RELAY_SERVICE_KEYS.get(id)?;
        let same = key.addr == packet.dst && key.port == port && key.proto == packet.proto;
        return same.then_some(id);
    }
    let key = ServiceKey {
        addr: packet.dst,
        port,
        proto: packet.proto,
        _pad: 0,
    };
    let service = RELAY_SERVICES.get_ptr(key)?;
    // SAFETY: the kernel returned a pointer to a live value of the services map; `id` is a
    // plain u32 copied out at once (userspace replaces entries whole, never in place).
    Some(unsafe { (*service).id })
}

/// Steps 7 and 8 for a packet of service `service`: the verdict, how the flow was found
/// (`NewFlow`, `Established`, `Rescheduled`, `RateLimited`) and where it went.
///
/// A TCP SYN within its source's rate is recorded at once (an insert that fails if the flow
/// is known: one hash-table operation instead of a lookup and an insert); a SYN of a known
/// flow (a retransmission) gives its token back and is handled like any other packet.
#[inline(always)]
fn steer_flow(
    ctx: &XdpContext,
    settings: &Settings,
    packet: &Packet,
    service: u32,
) -> (Verdict, Reason, Option<Reason>) {
    let key = FlowKey {
        src: packet.src,
        dst: packet.dst,
        ports: packet.ports,
        proto: u32::from(packet.proto),
    };
    let mut admitted = None;
    if packet.syn {
        let admit = guard::admit_new_flow(settings, &packet.src);
        if admit {
            let hash = flow_hash(&key);
            let id = pick(settings, service, hash);
            let flow = Flow { node: id, hash };
            if id != NO_NODE
                && RELAY_FLOWS
                    .insert(key, flow, u64::from(BPF_NOEXIST))
                    .is_ok()
            {
                return deliver(ctx, settings, packet, Reason::NewFlow, node(id), hash);
            }
            guard::refund(settings, &packet.src);
        }
        admitted = Some(admit);
    }
    let known = RELAY_FLOWS.get_ptr(key).map(|flow| {
        // SAFETY: the kernel returned a pointer to a live entry of the connection table; the
        // 8-byte value is copied out at once (a racing update rewrites it whole).
        unsafe { *flow }
    });
    let (found, chosen, hash) = match known {
        Some(flow) => match node(flow.node) {
            Some(n) if n.flags & Node::UP != 0 => (Reason::Established, Some(n), flow.hash),
            _ => {
                let id = pick(settings, service, flow.hash);
                remember(&key, id, flow.hash);
                (Reason::Rescheduled, node(id), flow.hash)
            }
        },
        None => {
            let admit = admitted.unwrap_or_else(|| guard::admit_new_flow(settings, &packet.src));
            if !admit {
                return (Verdict::Drop, Reason::RateLimited, None);
            }
            let hash = flow_hash(&key);
            let id = pick(settings, service, hash);
            remember(&key, id, hash);
            (Reason::NewFlow, node(id), hash)
        }
    };
    deliver(ctx, settings, packet, found, chosen, hash)
}

/// Step 8: the packet of a flow found as `found`, steered to `chosen`: pass to the local
/// stack, or encapsulate to another node and transmit.
#[inline(always)]
fn deliver(
    ctx: &XdpContext,
    settings: &Settings,
    packet: &Packet,
    found: Reason,
    chosen: Option<Node>,
    hash: u32,
) -> (Verdict, Reason, Option<Reason>) {
    let Some(node) = chosen else {
        return (Verdict::Pass, found, Some(Reason::NoNode));
    };
    if node.flags & Node::LOCAL != 0 {
        return (Verdict::Pass, found, Some(Reason::Local));
    }
    let family = if packet.v6 {
        Node::HAS_V6
    } else {
        Node::HAS_V4
    };
    if node.flags & family == 0 {
        return (Verdict::Pass, found, Some(Reason::NoNode));
    }
    let result = if packet.v6 {
        encap::encap_v6(ctx, packet, &node, settings, hash)
    } else {
        encap::encap_v4(ctx, packet, &node, settings, hash)
    };
    match result {
        Ok(()) => (Verdict::Tx, found, Some(Reason::Remote)),
        Err(encap::EncapError) => (Verdict::Drop, found, Some(Reason::EncapFailed)),
    }
}

/// A copy of node `id`, if it is a configured node (flags not all zero).
#[inline(always)]
fn node(id: u32) -> Option<Node> {
    if id == NO_NODE {
        return None;
    }
    RELAY_NODES.get(id).copied().filter(|n| n.flags != 0)
}

/// The node in slot `hash % ring_size` of service `service`'s live ring, or [`NO_NODE`].
#[inline(always)]
fn pick(settings: &Settings, service: u32, hash: u32) -> u32 {
    let size = settings.ring_size;
    if size == 0 {
        return NO_NODE;
    }
    let half = RELAY_ACTIVE.get(0).map_or(0, |a| a.half & 1);
    let Some(ring) = RELAY_RINGS.get_ptr(service * 2 + half) else {
        return NO_NODE;
    };
    let slot = (hash % size) as usize;
    if slot >= MAX_RING_SIZE {
        return NO_NODE;
    }
    // SAFETY: `ring` points to a live `Ring` value of MAX_RING_SIZE slots and `slot` is below
    // that (checked above); the u32 is copied out.
    unsafe { *(ring as *const u32).add(slot) }
}

/// Records the flow's node and hash, unless there is no node.
#[inline(always)]
fn remember(key: &FlowKey, node: u32, hash: u32) {
    if node != NO_NODE {
        // A failed insert only means the next packet picks again (the same node, unless the
        // table changed in between).
        let _ = RELAY_FLOWS.insert(key, Flow { node, hash }, 0);
    }
}

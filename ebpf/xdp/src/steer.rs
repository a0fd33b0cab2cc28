//! The steering decision (Katran's `balancer.bpf.c` `process_packet`), in order:
//!
//! 1. settings zeroed → pass (steering not configured);
//! 2. parse; malformed → `steer.malformed` policy; not IP → pass;
//! 3. source blocklisted → drop;
//! 4. fragment → `steer.fragments`; options / extension headers → `steer.ip_options`
//!    (`Steer` continues for IPv4 options: the inner packet is never rewritten);
//! 5. IPIP / IP6IP6 from the encapsulation prefix, when decap is on → strip, pass;
//! 6. no service for (destination, port, protocol) → pass untouched;
//! 7. connection table hit with a live node → that node; miss → token bucket (empty → drop),
//!    then the Maglev ring's slot `hash % ring_size` in the live half; the choice is recorded;
//! 8. local node → pass; another node → encapsulate and transmit.
//!
//! Every step counts its [`Reason`]; `main` counts the verdict, overall and per service.

use aya_ebpf::programs::XdpContext;
use relay_common::{
    Flow, FlowKey, MAX_RING_SIZE, NO_NODE, Node, Policy, Reason, ServiceKey, Settings, Verdict,
    flow_hash,
};

use crate::{
    encap, guard,
    maps::{
        RELAY_ACTIVE, RELAY_FLOWS, RELAY_NODES, RELAY_RINGS, RELAY_SERVICES, RELAY_SETTINGS,
        count_reason,
    },
    parse::{self, Frame, IPPROTO_TCP, IPPROTO_UDP, Packet},
};

/// What happened to a packet: its verdict and, for service traffic, the service id.
#[derive(Clone, Copy)]
pub struct Decision {
    pub verdict: Verdict,
    pub service: Option<u32>,
}

impl Decision {
    #[inline(always)]
    fn plain(verdict: Verdict) -> Self {
        Self {
            verdict,
            service: None,
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

/// Decides the fate of the packet in `ctx` (`bytes` long, for the counters).
#[inline(always)]
pub fn decide(ctx: &XdpContext, bytes: u64) -> Decision {
    let reason = |r: Reason| count_reason(r, bytes);
    let Some(settings) = RELAY_SETTINGS.get(0) else {
        reason(Reason::Disabled);
        return Decision::plain(Verdict::Pass);
    };
    if settings.flags & Settings::ENABLED == 0 {
        reason(Reason::Disabled);
        return Decision::plain(Verdict::Pass);
    }
    let packet = match parse::parse(ctx) {
        Ok(Frame::Ip(packet)) => packet,
        Ok(Frame::NotIp) => {
            reason(Reason::NotIp);
            return Decision::plain(Verdict::Pass);
        }
        Err(parse::ParseError::Malformed) => {
            reason(Reason::Malformed);
            return Decision::plain(by_policy(settings.malformed));
        }
    };
    if settings.flags & Settings::BLOCKLIST != 0 && guard::blocked(&packet.src) {
        reason(Reason::Blocked);
        return Decision::plain(Verdict::Drop);
    }
    if packet.fragment {
        reason(Reason::Fragment);
        return Decision::plain(by_policy(settings.fragments));
    }
    if packet.options {
        reason(Reason::IpOptions);
        let steer_it = settings.ip_options == Policy::Steer as u32 && !packet.v6;
        if !steer_it {
            return Decision::plain(by_policy(settings.ip_options));
        }
    }
    if settings.flags & Settings::DECAP != 0 && encap::is_ours_to_decap(&packet, settings) {
        return Decision::plain(match encap::decap(ctx, &packet) {
            Ok(()) => {
                reason(Reason::Decap);
                Verdict::Pass
            }
            Err(encap::EncapError) => {
                reason(Reason::EncapFailed);
                Verdict::Drop
            }
        });
    }
    if packet.proto != IPPROTO_TCP && packet.proto != IPPROTO_UDP {
        reason(Reason::NoService);
        return Decision::plain(Verdict::Pass);
    }
    let key = ServiceKey {
        addr: packet.dst,
        port: packet.dst_port(),
        proto: packet.proto,
        _pad: 0,
    };
    let Some(service) = RELAY_SERVICES.get_ptr(key) else {
        reason(Reason::NoService);
        return Decision::plain(Verdict::Pass);
    };
    // SAFETY: the kernel returned a pointer to a live value of the services map; `id` is a
    // plain u32 copied out at once (userspace replaces entries whole, never in place).
    let id = unsafe { (*service).id };
    Decision {
        verdict: steer_flow(ctx, settings, &packet, id, bytes),
        service: Some(id),
    }
}

/// Steps 7 and 8 for a packet of service `service`.
#[inline(always)]
fn steer_flow(
    ctx: &XdpContext,
    settings: &Settings,
    packet: &Packet,
    service: u32,
    bytes: u64,
) -> Verdict {
    let reason = |r: Reason| count_reason(r, bytes);
    let key = FlowKey {
        src: packet.src,
        dst: packet.dst,
        ports: packet.ports,
        proto: u32::from(packet.proto),
    };
    let hash = flow_hash(&key);
    let known = RELAY_FLOWS.get_ptr(key).map(|flow| {
        // SAFETY: the kernel returned a pointer to a live entry of the connection table; the
        // u32 is copied out at once (a racing update rewrites it whole).
        unsafe { (*flow).node }
    });
    let node_id = match known {
        Some(id) if node(id).is_some_and(|n| n.flags & Node::UP != 0) => {
            reason(Reason::Established);
            id
        }
        Some(_) => {
            reason(Reason::Rescheduled);
            let id = pick(settings, service, hash);
            remember(&key, id);
            id
        }
        None => {
            if !guard::admit_new_flow(settings, &packet.src) {
                reason(Reason::RateLimited);
                return Verdict::Drop;
            }
            reason(Reason::NewFlow);
            let id = pick(settings, service, hash);
            remember(&key, id);
            id
        }
    };
    let Some(node) = node(node_id) else {
        reason(Reason::NoNode);
        return Verdict::Pass;
    };
    if node.flags & Node::LOCAL != 0 {
        reason(Reason::Local);
        return Verdict::Pass;
    }
    let result = if packet.v6 {
        if node.flags & Node::HAS_V6 == 0 {
            reason(Reason::NoNode);
            return Verdict::Pass;
        }
        encap::encap_v6(ctx, packet, &node, settings, hash)
    } else {
        if node.flags & Node::HAS_V4 == 0 {
            reason(Reason::NoNode);
            return Verdict::Pass;
        }
        encap::encap_v4(ctx, packet, &node, settings, hash)
    };
    match result {
        Ok(()) => {
            reason(Reason::Remote);
            Verdict::Tx
        }
        Err(encap::EncapError) => {
            reason(Reason::EncapFailed);
            Verdict::Drop
        }
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

/// Records the flow's node, unless there is none.
#[inline(always)]
fn remember(key: &FlowKey, node: u32) {
    if node != NO_NODE {
        // A failed insert only means the next packet picks again (the same node, unless the
        // table changed in between).
        let _ = RELAY_FLOWS.insert(key, Flow { node, flags: 0 }, 0);
    }
}

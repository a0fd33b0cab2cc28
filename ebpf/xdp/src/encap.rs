//! Encapsulation (Katran's `pckt_encap.h`): IPIP for IPv4 flows, IP6IP6 for IPv6 flows, and
//! the matching decapsulation on the receiving relay.
//!
//! The inner packet is never touched, so its checksums stay valid; the outer IPv4 header gets
//! its own checksum (IPv6 has none). The outer source carries the flow hash in its host bits
//! (see [`relay_common::encap_source_v4`]), so the receiver's RSS, which hashes the outer
//! addresses, still spreads flows over its queues; the IPv6 flow label carries it too.
//!
//! Frame layout before and after (the VLAN tag, when present, is kept):
//! ```text
//! in:  eth [vlan] inner-ip ...
//! out: eth(dst = node MAC, src = our MAC) [vlan] outer-ip(src = prefix|hash, dst = node) inner-ip ...
//! ```
//! `bpf_xdp_adjust_head` invalidates every packet pointer, so what is needed from the old
//! front (Ethernet header, tag) is copied out first and every write after it is checked again.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use relay_common::{Node, Settings, encap_source_v4, encap_source_v6};

use crate::parse::{
    EthHdr, IPPROTO_IPIP, IPPROTO_IPV6, Ipv4Hdr, Ipv6Hdr, Packet, ParseError, VlanHdr, ptr_at_mut,
    read_at,
};

/// Outer header TTL / hop limit.
const OUTER_TTL: u8 = 64;
/// IPv4 "don't fragment": the outer packet is never fragmented on the way.
const IP_DF: u16 = 0x4000;

/// Why the packet could not be rewritten (it is dropped and counted as `EncapFailed`).
#[derive(Clone, Copy)]
pub struct EncapError;

impl From<ParseError> for EncapError {
    fn from(_: ParseError) -> Self {
        EncapError
    }
}

/// Writes a `T` at `offset`, bounds-checked like every access.
#[inline(always)]
fn write_at<T: Copy>(ctx: &XdpContext, offset: usize, value: T) -> Result<(), EncapError> {
    let ptr = ptr_at_mut::<T>(ctx, offset)?;
    // SAFETY: `ptr_at_mut` checked that the whole `T` lies inside the packet, which the
    // program may write; `T` is a byte-array header (alignment 1), written unaligned.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// Moves the start of the packet by `delta` bytes (negative grows the front).
#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), EncapError> {
    // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel passed to this program; the helper
    // checks the headroom itself and fails without changing the packet.
    let rc = unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) };
    if rc == 0 { Ok(()) } else { Err(EncapError) }
}

/// The Ethernet header and optional tag, copied out before the front of the packet moves.
#[derive(Clone, Copy)]
struct Front {
    eth: EthHdr,
    tag: VlanHdr,
}

#[inline(always)]
fn read_front(ctx: &XdpContext, vlan: bool) -> Result<Front, EncapError> {
    let eth: EthHdr = read_at(ctx, 0)?;
    let tag = if vlan {
        read_at(ctx, EthHdr::LEN)?
    } else {
        VlanHdr {
            tci: [0; 2],
            ether_type: [0; 2],
        }
    };
    Ok(Front { eth, tag })
}

#[inline(always)]
fn write_front(ctx: &XdpContext, vlan: bool, front: Front) -> Result<(), EncapError> {
    write_at(ctx, 0, front.eth)?;
    if vlan {
        write_at(ctx, EthHdr::LEN, front.tag)?;
    }
    Ok(())
}

/// Wraps an IPv4 packet in IPv4 to `node` and addresses the frame to the node's MAC.
#[inline(always)]
pub fn encap_v4(
    ctx: &XdpContext,
    packet: &Packet,
    node: &Node,
    settings: &Settings,
    hash: u32,
) -> Result<(), EncapError> {
    let total = packet.ip_len + Ipv4Hdr::LEN as u32;
    if total > u32::from(u16::MAX) {
        return Err(EncapError);
    }
    let mut front = read_front(ctx, packet.vlan)?;
    adjust_head(ctx, -(Ipv4Hdr::LEN as i32))?;
    front.eth.src = front.eth.dst;
    front.eth.dst = node.mac;
    write_front(ctx, packet.vlan, front)?;
    let mut outer = Ipv4Hdr {
        version_ihl: 0x45,
        tos: packet.tos,
        tot_len: (total as u16).to_be_bytes(),
        id: [0; 2],
        frag_off: IP_DF.to_be_bytes(),
        ttl: OUTER_TTL,
        protocol: IPPROTO_IPIP,
        check: [0; 2],
        saddr: encap_source_v4(settings, hash),
        daddr: node.v4.to_ne_bytes(),
    };
    outer.check = ipv4_checksum(&outer);
    write_at(ctx, packet.l3_offset(), outer)
}

/// Wraps an IPv6 packet in IPv6 to `node` and addresses the frame to the node's MAC.
#[inline(always)]
pub fn encap_v6(
    ctx: &XdpContext,
    packet: &Packet,
    node: &Node,
    settings: &Settings,
    hash: u32,
) -> Result<(), EncapError> {
    // The outer payload is the whole inner packet.
    if packet.ip_len > u32::from(u16::MAX) {
        return Err(EncapError);
    }
    let mut front = read_front(ctx, packet.vlan)?;
    adjust_head(ctx, -(Ipv6Hdr::LEN as i32))?;
    front.eth.src = front.eth.dst;
    front.eth.dst = node.mac;
    write_front(ctx, packet.vlan, front)?;
    let first_word = (6u32 << 28) | (u32::from(packet.tos) << 20) | (hash & 0x000F_FFFF);
    let src = encap_source_v6(settings, hash);
    let v6 = node.v6;
    let outer = Ipv6Hdr {
        version_tc_flow: first_word.to_be_bytes(),
        payload_len: (packet.ip_len as u16).to_be_bytes(),
        next_header: IPPROTO_IPV6,
        hop_limit: OUTER_TTL,
        saddr: concat16(src[0], src[1], src[2], src[3]),
        daddr: concat16(
            v6[0].to_ne_bytes(),
            v6[1].to_ne_bytes(),
            v6[2].to_ne_bytes(),
            v6[3].to_ne_bytes(),
        ),
    };
    write_at(ctx, packet.l3_offset(), outer)
}

/// Strips the outer header of an IPIP (IPv4) or IP6IP6 (IPv6) packet, keeping the Ethernet
/// header (and tag) as they were. The caller checked the protocol, that the outer IPv4 header
/// has no options, and the outer source.
#[inline(always)]
pub fn decap(ctx: &XdpContext, packet: &Packet) -> Result<(), EncapError> {
    let outer_len = if packet.v6 {
        Ipv6Hdr::LEN
    } else {
        Ipv4Hdr::LEN
    };
    let front = read_front(ctx, packet.vlan)?;
    adjust_head(ctx, outer_len as i32)?;
    write_front(ctx, packet.vlan, front)
}

/// Whether `packet` is an IPIP / IP6IP6 packet from the encapsulation source prefix.
#[inline(always)]
pub fn is_ours_to_decap(packet: &Packet, settings: &Settings) -> bool {
    if packet.v6 {
        let p = settings.encap_v6_prefix;
        let mask = settings.encap_v6_mask;
        let src = packet.src;
        packet.proto == IPPROTO_IPV6
            && u32::from_be(src[0]) == p[0]
            && u32::from_be(src[1]) == p[1]
            && u32::from_be(src[2]) == p[2]
            && u32::from_be(src[3]) & mask == p[3] & mask
    } else {
        let mask = settings.encap_v4_mask;
        packet.proto == IPPROTO_IPIP
            && !packet.options
            && u32::from_be(packet.src[3]) & mask == settings.encap_v4_prefix & mask
    }
}

#[inline(always)]
fn concat16(a: [u8; 4], b: [u8; 4], c: [u8; 4], d: [u8; 4]) -> [u8; 16] {
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// RFC 1071 checksum of an option-less IPv4 header (its `check` field must be zero).
#[inline(always)]
fn ipv4_checksum(h: &Ipv4Hdr) -> [u8; 2] {
    let word = |a: u8, b: u8| u32::from(u16::from_be_bytes([a, b]));
    let mut sum = word(h.version_ihl, h.tos)
        + word(h.tot_len[0], h.tot_len[1])
        + word(h.id[0], h.id[1])
        + word(h.frag_off[0], h.frag_off[1])
        + word(h.ttl, h.protocol)
        + word(h.check[0], h.check[1])
        + word(h.saddr[0], h.saddr[1])
        + word(h.saddr[2], h.saddr[3])
        + word(h.daddr[0], h.daddr[1])
        + word(h.daddr[2], h.daddr[3]);
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

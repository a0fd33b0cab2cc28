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
//! Headers are read and written a word at a time ([`crate::wire`]).

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use relay_common::{Node, Settings, encap_source_v4, encap_source_v6};

use crate::{
    parse::{
        EthHdr, IPPROTO_IPIP, IPPROTO_IPV6, Ipv4Hdr, Ipv6Hdr, Packet, ParseError, VlanHdr, ptr_at,
        ptr_at_mut,
    },
    wire::{load16, load32, store16, store32},
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

/// Moves the start of the packet by `delta` bytes (negative grows the front).
#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), EncapError> {
    // SAFETY: `ctx.ctx` is the live `xdp_md` the kernel passed to this program; the helper
    // checks the headroom itself and fails without changing the packet.
    let rc = unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) };
    if rc == 0 { Ok(()) } else { Err(EncapError) }
}

/// The Ethernet header (and tag), kept as wire words while the front of the packet moves.
#[derive(Clone, Copy)]
struct Front {
    /// Destination and source MAC, each as a word and a half-word.
    dst: (u32, u16),
    src: (u32, u16),
    /// The EtherType (untagged), or the tag's TPID and TCI (tagged).
    after_macs: u32,
    /// Tagged only: the inner EtherType.
    inner_type: u16,
}

impl Front {
    /// Addressed from this machine (the old destination) to `mac`.
    #[inline(always)]
    fn readdressed(self, mac: [u8; 6]) -> Self {
        Self {
            dst: (
                u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
                u16::from_ne_bytes([mac[4], mac[5]]),
            ),
            src: self.dst,
            ..self
        }
    }
}

#[inline(always)]
fn read_front(ctx: &XdpContext, vlan: bool) -> Result<Front, EncapError> {
    let eth = ptr_at::<EthHdr>(ctx, 0)? as *const u8;
    // SAFETY: `ptr_at` checked the 14 bytes of the Ethernet header; the reads lie within them.
    let mut front = unsafe {
        Front {
            dst: (load32(eth), load16(eth.add(4))),
            src: (load32(eth.add(6)), load16(eth.add(10))),
            after_macs: u32::from(load16(eth.add(12))),
            inner_type: 0,
        }
    };
    if vlan {
        let tagged = ptr_at::<[u8; EthHdr::LEN + VlanHdr::LEN]>(ctx, 0)? as *const u8;
        // SAFETY: `ptr_at` checked the 18 bytes of the tagged header; the reads lie within them.
        unsafe {
            front.after_macs = load32(tagged.add(12));
            front.inner_type = load16(tagged.add(16));
        }
    }
    Ok(front)
}

/// Writes `front` as the Ethernet header (and tag) at the start of the packet.
#[inline(always)]
fn write_front(ctx: &XdpContext, vlan: bool, front: Front) -> Result<(), EncapError> {
    if vlan {
        let eth = ptr_at_mut::<[u8; EthHdr::LEN + VlanHdr::LEN]>(ctx, 0)? as *mut u8;
        // SAFETY: `ptr_at_mut` checked the 18 bytes of the tagged header; the writes cover them.
        unsafe {
            store32(eth, front.dst.0);
            store16(eth.add(4), front.dst.1);
            store32(eth.add(6), front.src.0);
            store16(eth.add(10), front.src.1);
            store32(eth.add(12), front.after_macs);
            store16(eth.add(16), front.inner_type);
        }
    } else {
        let eth = ptr_at_mut::<EthHdr>(ctx, 0)? as *mut u8;
        // SAFETY: `ptr_at_mut` checked the 14 bytes of the Ethernet header; the writes cover
        // them.
        unsafe {
            store32(eth, front.dst.0);
            store16(eth.add(4), front.dst.1);
            store32(eth.add(6), front.src.0);
            store16(eth.add(10), front.src.1);
            store16(eth.add(12), front.after_macs as u16);
        }
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
    let front = read_front(ctx, packet.vlan)?;
    adjust_head(ctx, -(Ipv4Hdr::LEN as i32))?;
    write_front(ctx, packet.vlan, front.readdressed(node.mac))?;
    // The outer header as five wire words: version/IHL, TOS, length; id, DF; TTL, protocol,
    // checksum; source; destination.
    let len = (total as u16).to_be_bytes();
    let df = IP_DF.to_be_bytes();
    let mut words = [
        u32::from_ne_bytes([0x45, packet.tos, len[0], len[1]]),
        u32::from_ne_bytes([0, 0, df[0], df[1]]),
        u32::from_ne_bytes([OUTER_TTL, IPPROTO_IPIP, 0, 0]),
        u32::from_ne_bytes(encap_source_v4(settings, hash)),
        node.v4,
    ];
    let check = ipv4_checksum(&words).to_ne_bytes();
    words[2] = u32::from_ne_bytes([OUTER_TTL, IPPROTO_IPIP, check[0], check[1]]);
    let ip = ptr_at_mut::<Ipv4Hdr>(ctx, packet.l3_offset())? as *mut u8;
    // SAFETY: `ptr_at_mut` checked the 20 bytes of the outer header; the writes cover them.
    unsafe {
        store32(ip, words[0]);
        store32(ip.add(4), words[1]);
        store32(ip.add(8), words[2]);
        store32(ip.add(12), words[3]);
        store32(ip.add(16), words[4]);
    }
    Ok(())
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
    let front = read_front(ctx, packet.vlan)?;
    adjust_head(ctx, -(Ipv6Hdr::LEN as i32))?;
    write_front(ctx, packet.vlan, front.readdressed(node.mac))?;
    let first_word = (6u32 << 28) | (u32::from(packet.tos) << 20) | (hash & 0x000F_FFFF);
    let len = (packet.ip_len as u16).to_be_bytes();
    let src = encap_source_v6(settings, hash);
    let words = [
        first_word.to_be(),
        u32::from_ne_bytes([len[0], len[1], IPPROTO_IPV6, OUTER_TTL]),
        u32::from_ne_bytes(src[0]),
        u32::from_ne_bytes(src[1]),
        u32::from_ne_bytes(src[2]),
        u32::from_ne_bytes(src[3]),
        node.v6[0],
        node.v6[1],
        node.v6[2],
        node.v6[3],
    ];
    let ip = ptr_at_mut::<Ipv6Hdr>(ctx, packet.l3_offset())? as *mut u8;
    // SAFETY: `ptr_at_mut` checked the 40 bytes of the outer header; the writes cover them.
    unsafe {
        store32(ip, words[0]);
        store32(ip.add(4), words[1]);
        store32(ip.add(8), words[2]);
        store32(ip.add(12), words[3]);
        store32(ip.add(16), words[4]);
        store32(ip.add(20), words[5]);
        store32(ip.add(24), words[6]);
        store32(ip.add(28), words[7]);
        store32(ip.add(32), words[8]);
        store32(ip.add(36), words[9]);
    }
    Ok(())
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

/// RFC 1071 checksum of an option-less IPv4 header given as five wire words (its checksum
/// field zero); returned as the wire word to store.
#[inline(always)]
fn ipv4_checksum(words: &[u32; 5]) -> u16 {
    // One's-complement sums are byte-order independent: add the native 16-bit halves and the
    // result, folded and complemented, is the checksum in the same (wire) order.
    let mut sum = 0u64;
    for word in words {
        sum += u64::from(word & 0xFFFF) + u64::from(word >> 16);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    !(sum as u16)
}

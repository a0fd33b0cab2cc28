//! Packet parsing: header layouts, the one bounds-checked accessor [`ptr_at`] (and its writable
//! twin [`ptr_at_mut`]), and [`parse`], which walks Ethernet (with at most one 802.1Q / 802.1ad
//! tag), IPv4 or IPv6, and the TCP / UDP ports, and says what it found.
//!
//! Every header is checked against `data_end` before it is read, by [`ptr_at`] only; its fields
//! are then read with one load each ([`crate::wire`]). Multi-byte fields are in network byte
//! order as on the wire; the accessors convert. A header that is cut
//! short or contradicts itself is [`ParseError::Malformed`]; fragments, options and other
//! protocols are reported, not judged: [`crate::steer`] applies the policies.

use core::mem;

use aya_ebpf::programs::XdpContext;
use relay_common::v4_mapped;

use crate::wire::{load16, load32};

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ outer) tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
/// IP protocol numbers.
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
/// TCP flags.
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// IPv6 extension headers: hop-by-hop, routing, fragment, ESP, AH, destination options,
/// mobility, HIP, shim6.
const IPV6_FRAGMENT: u8 = 44;
const IPV6_EXTENSIONS: [u8; 8] = [0, 43, 50, 51, 60, 135, 139, 140];

/// Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

impl EthHdr {
    pub const LEN: usize = mem::size_of::<Self>();
}

/// One 802.1Q tag: TCI then the encapsulated EtherType.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub ether_type: [u8; 2],
}

impl VlanHdr {
    pub const LEN: usize = mem::size_of::<Self>();
}

/// IPv4 header without options (options are skipped through IHL).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

impl Ipv4Hdr {
    pub const LEN: usize = mem::size_of::<Self>();
}

/// IPv6 fixed header (extension headers are reported, not walked).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    pub version_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

impl Ipv6Hdr {
    pub const LEN: usize = mem::size_of::<Self>();
}

/// The first bytes of a TCP header that the parse needs: ports, then data offset at byte 12.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHead {
    ports: [u8; 4],
    seq_ack: [u8; 8],
    data_offset: u8,
    flags: u8,
    window: [u8; 2],
    check: [u8; 2],
    urgent: [u8; 2],
}

/// UDP header.
#[repr(C)]
#[derive(Clone, Copy)]
struct UdpHdr {
    ports: [u8; 4],
    len: [u8; 2],
    check: [u8; 2],
}

/// Why a packet could not be parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A header runs past the end of the packet, or contradicts itself (IHL below 5, version
    /// not matching the EtherType, lengths beyond the frame, TCP data offset below 5).
    Malformed,
}

/// What [`parse`] learned about a frame.
#[derive(Clone, Copy)]
pub enum Frame {
    /// Not IPv4 or IPv6.
    NotIp,
    /// An IP packet.
    Ip(Packet),
}

/// An IP packet: enough for the guard and the steering decision.
#[derive(Clone, Copy)]
pub struct Packet {
    /// The frame carries one VLAN tag (the network header is at 18, else 14).
    pub vlan: bool,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// IP protocol / IPv6 next header.
    pub proto: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// Length of the IP packet (header included), from its header.
    pub ip_len: u32,
    /// A fragment (IPv4 MF or offset, IPv6 fragment header).
    pub fragment: bool,
    /// IPv4 options or IPv6 extension headers.
    pub options: bool,
    /// Source and destination, IPv4-mapped for IPv4.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// The first four bytes of the TCP / UDP header (0 for other protocols and fragments).
    pub ports: u32,
    /// A TCP SYN without ACK: the first packet of a connection.
    pub syn: bool,
}

impl Packet {
    /// Offset of the network header.
    #[inline(always)]
    pub fn l3_offset(&self) -> usize {
        if self.vlan {
            EthHdr::LEN + VlanHdr::LEN
        } else {
            EthHdr::LEN
        }
    }

    /// Destination port as on the wire.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        (self.ports >> 16) as u16
    }
}

/// Returns a pointer to a `T` at `offset` bytes into the packet, if all of it lies before
/// `data_end`. The only way this crate reaches packet bytes.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ParseError> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(ParseError::Malformed);
    }
    Ok((start + offset) as *const T)
}

/// [`ptr_at`] for writing.
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ParseError> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}

/// Parses Ethernet, one optional VLAN tag, IPv4 / IPv6, and the TCP / UDP ports.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Frame, ParseError> {
    let eth = ptr_at::<EthHdr>(ctx, 0)? as *const u8;
    // SAFETY: `ptr_at` checked that the Ethernet header (14 bytes) lies inside the packet.
    let mut ether_type = u16::from_be(unsafe { load16(eth.add(12)) });
    let mut vlan = false;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag = ptr_at::<VlanHdr>(ctx, EthHdr::LEN)? as *const u8;
        // SAFETY: `ptr_at` checked that the tag (4 bytes) lies inside the packet.
        ether_type = u16::from_be(unsafe { load16(tag.add(2)) });
        vlan = true;
    }
    let l3 = if vlan {
        EthHdr::LEN + VlanHdr::LEN
    } else {
        EthHdr::LEN
    };
    let frame_len = ctx.data_end() - ctx.data();
    match ether_type {
        ETH_P_IP => parse_v4(ctx, vlan, l3, frame_len).map(Frame::Ip),
        ETH_P_IPV6 => parse_v6(ctx, vlan, l3, frame_len).map(Frame::Ip),
        _ => Ok(Frame::NotIp),
    }
}

#[inline(always)]
fn parse_v4(
    ctx: &XdpContext,
    vlan: bool,
    l3: usize,
    frame_len: usize,
) -> Result<Packet, ParseError> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, l3)? as *const u8;
    // SAFETY: `ptr_at` checked that the option-less header (20 bytes) lies inside the packet;
    // every field read lies within it (offsets from `Ipv4Hdr`).
    let (version_ihl, tos, tot_len, frag_off, protocol, saddr, daddr) = unsafe {
        (
            *ip,
            *ip.add(1),
            load16(ip.add(2)),
            load16(ip.add(6)),
            *ip.add(9),
            load32(ip.add(12)),
            load32(ip.add(16)),
        )
    };
    let header_len = usize::from(version_ihl & 0x0F) * 4;
    let ip_len = u16::from_be(tot_len);
    if version_ihl >> 4 != 4
        || header_len < Ipv4Hdr::LEN
        || usize::from(ip_len) < header_len
        || l3 + usize::from(ip_len) > frame_len
    {
        return Err(ParseError::Malformed);
    }
    let fragment = u16::from_be(frag_off) & 0x3FFF != 0;
    let l4_offset = l3 + header_len;
    let mut packet = Packet {
        vlan,
        v6: false,
        proto: protocol,
        tos,
        ip_len: u32::from(ip_len),
        fragment,
        options: header_len > Ipv4Hdr::LEN,
        src: v4_mapped(saddr),
        dst: v4_mapped(daddr),
        ports: 0,
        syn: false,
    };
    if !fragment {
        (packet.ports, packet.syn) =
            ports(ctx, protocol, l4_offset, usize::from(ip_len) - header_len)?;
    }
    Ok(packet)
}

#[inline(always)]
fn parse_v6(
    ctx: &XdpContext,
    vlan: bool,
    l3: usize,
    frame_len: usize,
) -> Result<Packet, ParseError> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, l3)? as *const u8;
    // SAFETY: `ptr_at` checked that the fixed header (40 bytes) lies inside the packet; every
    // field read lies within it (offsets from `Ipv6Hdr`).
    let (first, second, payload_len, next, src, dst) = unsafe {
        (
            *ip,
            *ip.add(1),
            u16::from_be(load16(ip.add(4))),
            *ip.add(6),
            [
                load32(ip.add(8)),
                load32(ip.add(12)),
                load32(ip.add(16)),
                load32(ip.add(20)),
            ],
            [
                load32(ip.add(24)),
                load32(ip.add(28)),
                load32(ip.add(32)),
                load32(ip.add(36)),
            ],
        )
    };
    if first >> 4 != 6 || l3 + Ipv6Hdr::LEN + usize::from(payload_len) > frame_len {
        return Err(ParseError::Malformed);
    }
    let fragment = next == IPV6_FRAGMENT;
    let options = !fragment && IPV6_EXTENSIONS.contains(&next);
    let l4_offset = l3 + Ipv6Hdr::LEN;
    let mut packet = Packet {
        vlan,
        v6: true,
        proto: next,
        tos: (first << 4) | (second >> 4),
        ip_len: u32::from(payload_len) + Ipv6Hdr::LEN as u32,
        fragment,
        options,
        src,
        dst,
        ports: 0,
        syn: false,
    };
    if !fragment && !options {
        (packet.ports, packet.syn) = ports(ctx, next, l4_offset, usize::from(payload_len))?;
    }
    Ok(packet)
}

/// The ports of a TCP or UDP header at `offset`, which must fit in the `room` bytes the IP
/// header gives its payload (0 for other protocols), and whether it is a TCP SYN without ACK.
#[inline(always)]
fn ports(
    ctx: &XdpContext,
    proto: u8,
    offset: usize,
    room: usize,
) -> Result<(u32, bool), ParseError> {
    match proto {
        IPPROTO_TCP => {
            let tcp = ptr_at::<TcpHead>(ctx, offset)? as *const u8;
            // SAFETY: `ptr_at` checked the first 20 bytes of the TCP header: the ports, the
            // data offset (byte 12) and the flags (byte 13) lie within them.
            let (ports, data_offset, flags) = unsafe { (load32(tcp), *tcp.add(12), *tcp.add(13)) };
            let data_offset = usize::from(data_offset >> 4) * 4;
            if data_offset < mem::size_of::<TcpHead>() || data_offset > room {
                return Err(ParseError::Malformed);
            }
            Ok((ports, flags & (TCP_SYN | TCP_ACK) == TCP_SYN))
        }
        IPPROTO_UDP => {
            let udp = ptr_at::<UdpHdr>(ctx, offset)? as *const u8;
            if room < mem::size_of::<UdpHdr>() {
                return Err(ParseError::Malformed);
            }
            // SAFETY: `ptr_at` checked the 8-byte UDP header; the ports are its first 4 bytes.
            Ok((unsafe { load32(udp) }, false))
        }
        _ => Ok((0, false)),
    }
}

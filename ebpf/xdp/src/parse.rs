//! Packet parsing: header layouts, the one bounds-checked accessor [`ptr_at`], and [`parse`],
//! which walks Ethernet (with at most one 802.1Q / 802.1ad tag), then IPv4 or IPv6, and says
//! where the layer-4 header starts.
//!
//! Every header is checked against `data_end` before it is read, by [`ptr_at`] only. Multi-byte
//! fields are in network byte order as on the wire; the accessors convert.

use core::mem;

use aya_ebpf::programs::XdpContext;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ outer) tag.
pub const ETH_P_8021AD: u16 = 0x88A8;

/// Ethernet II header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    ether_type: [u8; 2],
}

impl EthHdr {
    pub const LEN: usize = mem::size_of::<Self>();
    #[inline(always)]
    pub fn ether_type(&self) -> u16 {
        u16::from_be_bytes(self.ether_type)
    }
}

/// One 802.1Q tag: TCI then the encapsulated EtherType.
#[repr(C)]
pub struct VlanHdr {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

impl VlanHdr {
    pub const LEN: usize = mem::size_of::<Self>();
    #[inline(always)]
    pub fn vlan_id(&self) -> u16 {
        u16::from_be_bytes(self.tci) & 0x0FFF
    }
    #[inline(always)]
    pub fn ether_type(&self) -> u16 {
        u16::from_be_bytes(self.ether_type)
    }
}

/// IPv4 header without options (options are skipped through IHL).
#[repr(C)]
pub struct Ipv4Hdr {
    version_ihl: u8,
    pub tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

impl Ipv4Hdr {
    pub const LEN: usize = mem::size_of::<Self>();
    /// Header length in bytes (IHL * 4).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.version_ihl & 0x0F) * 4
    }
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }
}

/// IPv6 fixed header (extension headers are not walked yet).
#[repr(C)]
pub struct Ipv6Hdr {
    version_tc_flow: [u8; 4],
    payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

impl Ipv6Hdr {
    pub const LEN: usize = mem::size_of::<Self>();
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_tc_flow[0] >> 4
    }
}

/// Why a packet could not be parsed as far as the program needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A header runs past the end of the packet, or says it is shorter than its minimum.
    Truncated,
}

/// Network layer of a parsed packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    /// Some other EtherType (ARP, LLDP, ...), given in host order.
    Other(u16),
}

/// What [`parse`] learned about a packet: enough for a steering decision.
#[derive(Clone, Copy)]
#[expect(dead_code, reason = "read by the steering decision, which lands next")]
pub struct Packet {
    /// VLAN ID of the one tag, if the frame had one.
    pub vlan: Option<u16>,
    pub l3: L3,
    /// Offset of the network header from the start of the frame.
    pub l3_offset: usize,
    /// IP protocol / IPv6 next header (0 when `l3` is `Other`).
    pub l4_proto: u8,
    /// Offset of the layer-4 header (equal to `l3_offset` when `l3` is `Other`).
    pub l4_offset: usize,
}

/// Returns a pointer to a `T` at `offset` bytes into the packet, if all of it lies before
/// `data_end`. The only way this crate reaches packet bytes.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ParseError> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(ParseError::Truncated);
    }
    Ok((start + offset) as *const T)
}

/// Parses Ethernet, one optional VLAN tag, and IPv4 / IPv6.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, ParseError> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the whole header lies inside the packet.
    let mut ether_type = unsafe { (*eth).ether_type() };
    let mut offset = EthHdr::LEN;
    let mut vlan = None;

    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag: *const VlanHdr = ptr_at(ctx, offset)?;
        // SAFETY: `ptr_at` checked that the whole tag lies inside the packet.
        let (id, inner) = unsafe { ((*tag).vlan_id(), (*tag).ether_type()) };
        vlan = Some(id);
        ether_type = inner;
        offset += VlanHdr::LEN;
    }

    let l3_offset = offset;
    match ether_type {
        ETH_P_IP => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, l3_offset)?;
            // SAFETY: `ptr_at` checked that the fixed header lies inside the packet.
            let (version, header_len, proto) =
                unsafe { ((*ip).version(), (*ip).header_len(), (*ip).protocol) };
            if version != 4 || header_len < Ipv4Hdr::LEN {
                return Err(ParseError::Truncated);
            }
            Ok(Packet {
                vlan,
                l3: L3::Ipv4,
                l3_offset,
                l4_proto: proto,
                l4_offset: l3_offset + header_len,
            })
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, l3_offset)?;
            // SAFETY: `ptr_at` checked that the fixed header lies inside the packet.
            let (version, next) = unsafe { ((*ip).version(), (*ip).next_header) };
            if version != 6 {
                return Err(ParseError::Truncated);
            }
            Ok(Packet {
                vlan,
                l3: L3::Ipv6,
                l3_offset,
                l4_proto: next,
                l4_offset: l3_offset + Ipv6Hdr::LEN,
            })
        }
        other => Ok(Packet {
            vlan,
            l3: L3::Other(other),
            l3_offset,
            l4_proto: 0,
            l4_offset: l3_offset,
        }),
    }
}

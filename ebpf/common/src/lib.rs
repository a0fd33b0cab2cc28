//! Types shared, byte for byte, by the XDP programs (`ebpf/xdp`) and the userspace loader
//! (`relay/steer`). Everything here is `#[repr(C)]`, `Copy`, and free of padding surprises.
//!
//! Layout:
//! - [`Verdict`]: index of a per-CPU counter slot, one per XDP action the program takes.
//! - [`Counter`]: packets and bytes counted in one slot.
#![no_std]

/// Names of the maps, as the programs declare them and the loader pins them.
pub mod maps {
    /// Per-CPU array of [`crate::Counter`], indexed by [`crate::Verdict`].
    pub const COUNTERS: &str = "RELAY_COUNTERS";
}

/// Name of the XDP program in the object file.
pub const XDP_PROGRAM: &str = "relay_steer";

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

/// Packets and bytes counted in one per-CPU slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: Counter is repr(C), Copy, made of two u64 with no padding; every bit pattern is valid.
unsafe impl aya::Pod for Counter {}

//! Word-sized loads and stores of packet bytes.
//!
//! Header fields sit at any alignment in a packet, so Rust can only read them byte by byte
//! (`read_unaligned`), and the BPF backend then emits one load per byte, plus shifts and
//! register spills: a third of `relay_steer`'s instructions before this module. The kernel
//! itself accepts a 2-, 4- or 8-byte load from packet memory at any alignment (the verifier
//! checks packet alignment only under `BPF_F_STRICT_ALIGNMENT`, which the loader does not set;
//! the JIT emits plain loads, and the machines relay runs on, x86-64 and arm64, load unaligned
//! words natively). These helpers emit exactly that one instruction through inline assembly,
//! which makes no alignment promise to the compiler.
//!
//! The rule for every function here: the caller has checked, through [`crate::parse::ptr_at`],
//! that the bytes touched lie inside the packet. Values are the wire bytes as a native word
//! (`u32::from_ne_bytes` of them); convert with `from_be` / `to_be` where a number is meant.

use core::arch::asm;

/// The two bytes at `p`.
///
/// # Safety
/// `p .. p + 2` lies inside the packet, as checked by `ptr_at`.
#[inline(always)]
pub unsafe fn load16(p: *const u8) -> u16 {
    let value: u64;
    // SAFETY: the caller checked the bounds; one BPF load of packet memory, which the verifier
    // allows at any alignment (see the module docs). It reads nothing else and writes nothing.
    unsafe {
        asm!(
            "{value} = *(u16 *)({p} + 0)",
            value = lateout(reg) value,
            p = in(reg) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    value as u16
}

/// The four bytes at `p`.
///
/// # Safety
/// `p .. p + 4` lies inside the packet, as checked by `ptr_at`.
#[inline(always)]
pub unsafe fn load32(p: *const u8) -> u32 {
    let value: u64;
    // SAFETY: as for `load16`, four bytes.
    unsafe {
        asm!(
            "{value} = *(u32 *)({p} + 0)",
            value = lateout(reg) value,
            p = in(reg) p,
            options(readonly, nostack, preserves_flags),
        );
    }
    value as u32
}

/// Writes `value` (wire bytes as a native word) to the two bytes at `p`.
///
/// # Safety
/// `p .. p + 2` lies inside the packet, as checked by `ptr_at`.
#[inline(always)]
pub unsafe fn store16(p: *mut u8, value: u16) {
    // SAFETY: the caller checked the bounds; one BPF store to packet memory, which the program
    // may write at any alignment (see the module docs).
    unsafe {
        asm!(
            "*(u16 *)({p} + 0) = {value}",
            p = in(reg) p,
            value = in(reg) u64::from(value),
            options(nostack, preserves_flags),
        );
    }
}

/// Writes `value` (wire bytes as a native word) to the four bytes at `p`.
///
/// # Safety
/// `p .. p + 4` lies inside the packet, as checked by `ptr_at`.
#[inline(always)]
pub unsafe fn store32(p: *mut u8, value: u32) {
    // SAFETY: as for `store16`, four bytes.
    unsafe {
        asm!(
            "*(u32 *)({p} + 0) = {value}",
            p = in(reg) p,
            value = in(reg) u64::from(value),
            options(nostack, preserves_flags),
        );
    }
}

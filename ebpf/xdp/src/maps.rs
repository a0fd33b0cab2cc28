//! The BPF maps of `relay_steer`, shared with the userspace loader (`relay/steer`), which pins
//! them under `<pin root>/<iface>/` and reads them for `relay steer status`.
//!
//! - `RELAY_COUNTERS`: per-CPU array of [`Counter`], one slot per [`Verdict`]. Per CPU, so
//!   the program adds without atomics; userspace sums the CPUs.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use relay_common::{Counter, Verdict};

/// `#[map]` takes the map's name as a literal; this keeps it equal to the name the loader uses.
const _: () = assert!(str_eq("RELAY_COUNTERS", relay_common::maps::COUNTERS));

#[map(name = "RELAY_COUNTERS")]
static RELAY_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Verdict::COUNT, 0);

/// Adds one packet of `bytes` bytes to this CPU's slot for `verdict`.
#[inline(always)]
pub fn count(verdict: Verdict, bytes: u64) {
    if let Some(counter) = RELAY_COUNTERS.get_ptr_mut(verdict as u32) {
        // SAFETY: the kernel returned a pointer to this CPU's value of a live map slot, valid
        // and aligned for a `Counter`; no other program touches this CPU's slot while we run
        // (XDP runs with preemption disabled), so the read-modify-write is not racy.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
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

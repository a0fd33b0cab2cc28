//! relay's XDP programs: `relay_steer`, the steering plane, and `relay_noop`, which passes
//! every packet (the floor `cargo xtask bench steer` measures against).
//!
//! Layout (split by role, as Katran splits its `balancer_*.h` headers):
//! - `main.rs` (this file): the program entries, the verdict counters, license, panic handler.
//! - [`maps`]: the BPF maps the programs share with `relay/steer` (types from `relay-common`).
//! - [`parse`]: bounds-checked header access ([`parse::ptr_at`]) and the Ethernet / 802.1Q /
//!   IPv4 / IPv6 / TCP / UDP parse.
//! - [`guard`]: source blocklist and per-source new-flow token buckets.
//! - [`encap`]: IPIP / IP6IP6 encapsulation and decapsulation.
//! - [`steer`]: the decision: services, connection table, Maglev, local or remote.
//! - [`wire`]: one-instruction word loads and stores of packet bytes (inline assembly).
#![no_std]
#![no_main]
// Inline assembly for BPF (`wire`) is unstable; this crate builds with nightly only.
#![feature(asm_experimental_arch)]

mod encap;
mod guard;
mod maps;
mod parse;
mod steer;
mod wire;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use relay_common::Verdict;

/// The `#[xdp]` macro names the programs after the functions; the loader finds them by
/// these names.
const _: () = assert!(maps::str_eq("relay_steer", relay_common::XDP_PROGRAM));
const _: () = assert!(maps::str_eq("relay_noop", relay_common::NOOP_PROGRAM));

#[xdp]
pub fn relay_steer(ctx: XdpContext) -> u32 {
    match try_relay_steer(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// Decides the packet's fate and counts it under that verdict and its reasons, in its
/// service's stats slot (one map update per packet).
///
/// `Err` carries the action for a packet the program could not handle; it is counted the same
/// way, so that nothing leaves the program uncounted.
#[inline(always)]
fn try_relay_steer(ctx: &XdpContext) -> Result<u32, u32> {
    let len = ctx.data_end().saturating_sub(ctx.data()) as u64;
    let decision = steer::decide(ctx);
    maps::count(decision.slot, decision.verdict, &decision.reasons, len);
    match decision.verdict {
        Verdict::Pass => Ok(xdp_action::XDP_PASS),
        Verdict::Aborted => Err(xdp_action::XDP_ABORTED),
        Verdict::Drop => Ok(xdp_action::XDP_DROP),
        Verdict::Tx => Ok(xdp_action::XDP_TX),
        Verdict::Redirect => Ok(xdp_action::XDP_REDIRECT),
    }
}

/// Passes every packet: the cheapest XDP program there is, for benchmarks.
#[xdp]
pub fn relay_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The verifier needs a license; "GPL" keeps GPL-only helpers available to this object.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF programs cannot unwind or abort; the verifier rejects any path that reaches here
    // (an unbounded loop), so a panic that survives optimisation fails at load, not at run.
    loop {}
}

//! relay's XDP program, `relay_steer`: the entry point.
//!
//! Layout (split by role, as Katran splits its `balancer_*.h` headers):
//! - `main.rs` (this file): the program entry, the verdict, the license and panic handler.
//! - [`maps`]: the BPF maps the program shares with `relay/steer` (names from `relay-common`).
//! - [`parse`]: bounds-checked header access ([`parse::ptr_at`]) and the Ethernet / 802.1Q /
//!   IPv4 / IPv6 parse.
//!
//! First landing: every packet is counted (packets and bytes, per CPU, by verdict) and passed.
//! The parse already runs so that the verifier sees it; steering will decide on its result.
#![no_std]
#![no_main]

mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use relay_common::Verdict;

/// The `#[xdp]` macro names the program after the function; the loader finds it by
/// `relay_common::XDP_PROGRAM`.
const _: () = assert!(maps::str_eq("relay_steer", relay_common::XDP_PROGRAM));

#[xdp]
pub fn relay_steer(ctx: XdpContext) -> u32 {
    match try_relay_steer(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// Decides the packet's fate and counts it under that verdict.
///
/// `Err` carries the action for a packet the program could not handle; it is counted the same
/// way, so that nothing leaves the program uncounted.
#[inline(always)]
fn try_relay_steer(ctx: &XdpContext) -> Result<u32, u32> {
    let len = ctx.data_end().saturating_sub(ctx.data());
    let verdict = verdict(ctx);
    maps::count(verdict, len as u64);
    match verdict {
        Verdict::Pass => Ok(xdp_action::XDP_PASS),
        Verdict::Aborted => Err(xdp_action::XDP_ABORTED),
        Verdict::Drop => Ok(xdp_action::XDP_DROP),
        Verdict::Tx => Ok(xdp_action::XDP_TX),
        Verdict::Redirect => Ok(xdp_action::XDP_REDIRECT),
    }
}

/// The steering decision. For now every packet passes to the kernel stack, parsed or not:
/// a truncated or non-IP frame is the stack's business, not ours.
#[inline(always)]
fn verdict(ctx: &XdpContext) -> Verdict {
    match parse::parse(ctx) {
        Ok(packet) => {
            // Nothing reads the parse yet; `black_box` keeps it in the object so the verifier
            // checks it now rather than when steering lands on top of it.
            core::hint::black_box(packet);
            Verdict::Pass
        }
        Err(parse::ParseError::Truncated) => Verdict::Pass,
    }
}

/// The verifier needs a license; "GPL" keeps GPL-only helpers (e.g. `bpf_fib_lookup`, which
/// steering may want) available to this object.
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

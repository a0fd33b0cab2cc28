//! The packet guard: the source blocklist (an LPM trie of prefixes) and the per-source
//! new-flow token bucket (a per-CPU LRU map, so buckets need no atomics; a source whose flows
//! land on several CPUs gets a bucket on each). Malformed, fragment and option policies are
//! applied by [`crate::steer`] from the parse.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use relay_common::{RateState, Settings};

use crate::maps::{RELAY_BLOCKLIST, RELAY_RATE};

/// Whether `src` (IPv4-mapped for IPv4) lies in a blocklisted prefix.
#[inline(always)]
pub fn blocked(src: &[u32; 4]) -> bool {
    RELAY_BLOCKLIST.get(Key::new(128, *src)).is_some()
}

/// Takes one new-flow token from `src`'s bucket; false when it is empty.
///
/// The bucket holds credit in nanoseconds: it refills with elapsed time up to
/// `rate_burst_ns`, and a new flow costs `rate_cost_ns` (1e9 / flows per second). A source
/// seen for the first time starts with a full bucket.
#[inline(always)]
pub fn admit_new_flow(settings: &Settings, src: &[u32; 4]) -> bool {
    let cost = settings.rate_cost_ns;
    if cost == 0 {
        return true;
    }
    let burst = settings.rate_burst_ns;
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    match RELAY_RATE.get_ptr_mut(src) {
        Some(state) => {
            // SAFETY: the kernel returned a pointer to this CPU's value of a live entry, valid and
            // aligned for a `RateState`; per-CPU values are touched by no other CPU, and XDP runs
            // with preemption disabled.
            let state = unsafe { &mut *state };
            let elapsed = now.saturating_sub(state.last_ns);
            let credit = state.credit_ns.saturating_add(elapsed).min(burst);
            state.last_ns = now;
            if credit >= cost {
                state.credit_ns = credit - cost;
                true
            } else {
                state.credit_ns = credit;
                false
            }
        }
        None => {
            let admitted = burst >= cost;
            let state = RateState {
                credit_ns: if admitted { burst - cost } else { 0 },
                last_ns: now,
            };
            // A full table evicts its least recently used source; an error leaves the source
            // unlimited for this packet rather than dropping it.
            let _ = RELAY_RATE.insert(src, state, 0);
            admitted
        }
    }
}

/// Gives back the token [`admit_new_flow`] just took from `src`'s bucket, when the packet
/// turned out not to open a new flow (a SYN of a flow already in the connection table).
#[inline(always)]
pub fn refund(settings: &Settings, src: &[u32; 4]) {
    let cost = settings.rate_cost_ns;
    if cost == 0 {
        return;
    }
    if let Some(state) = RELAY_RATE.get_ptr_mut(src) {
        // SAFETY: as in `admit_new_flow`: this CPU's value of a live entry, touched by no one
        // else while we run.
        let state = unsafe { &mut *state };
        state.credit_ns = state
            .credit_ns
            .saturating_add(cost)
            .min(settings.rate_burst_ns);
    }
}

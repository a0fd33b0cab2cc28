//! Cluster membership for relay, with no control centre: the relays of a site find each
//! other and notice when one dies through SWIM (the `foca` crate, sans-IO), and every gossip
//! packet is authenticated under a cluster key ([`seal`]).
//!
//! A [`Node`] does no I/O: it takes packets, timer firings and the time, and gives back
//! what to send, when to fire which timer, and who joined or left ([`Output`]). The
//! [`Agent`] is its I/O: a thread that owns the UDP socket and the timers; the simulation
//! in `tests/` drives many nodes on a virtual network and clock instead, to measure
//! detection times.
//!
//! Why foca (not chitchat, not a protocol of our own): it is SWIM with suspicion and
//! Lifeguard-style refutation, it keeps its memory bound by the number of members, and it
//! never touches a socket or a clock, so it fits a loop that owns both, and a test can run
//! a thousand nodes in one thread. chitchat is a scuttlebutt key-value gossip on tokio:
//! it owns its UDP transport, and its failure detector is phi-accrual over heartbeats.

pub mod agent;
pub mod digest;
pub mod node;
pub mod owners;
pub mod peer;
pub mod record;
pub mod seal;

pub use agent::{Agent, View, announce_to};
pub use node::{Node, NodeId, Output, Received, Tick};
pub use record::{Record, Records};
pub use seal::{Dropped, Key};

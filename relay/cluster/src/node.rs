//! One relay's membership: foca's SWIM behind the authenticated envelope ([`crate::seal`]).

use crate::record::{Record, Records};
use crate::seal::{Dropped, Key, Opener, Sealer};
use foca::{AccumulatingRuntime, Config, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// Addresses of former members a node keeps, to announce itself to when it knows no
/// member ([`Node::former`]).
const FORMER: usize = 64;

/// The least change of load that is published again.
pub const LOAD_STEP: u32 = 8;
/// The shortest time between two publications of a changed load.
pub const LOAD_EVERY_MS: u64 = 2_000;

/// A member: its gossip address and its life (`boot`: larger for a later start, so a
/// relay that restarts, or that the others declared down while it lived, comes back as a
/// newer identity that wins over the old one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub addr: SocketAddr,
    pub boot: u64,
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            addr: self.addr,
            boot: self.boot.wrapping_add(1),
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.boot > adversary.boot
    }
}

/// What a node asks of its loop.
#[derive(Debug)]
pub enum Output {
    /// Send `packet` (sealed) to `to`.
    Send { to: SocketAddr, packet: Vec<u8> },
    /// Give `timer` back to [`Node::on_timer`] `after` from now.
    Timer { after: Duration, timer: Tick },
    /// A member joined (or came back).
    Up(NodeId),
    /// A member was declared down.
    Down(NodeId),
    /// This relay learnt the others had declared it down, and came back as `NodeId` (a
    /// newer life); its record has been sent to every member again.
    Rejoined(NodeId),
    /// This relay learnt it was declared down and could not come back by itself.
    Defunct,
    /// This relay declared a member down while it had heard no one for a suspicion's time,
    /// or declared its last member down, and starts afresh as `NodeId` (a newer life that
    /// knows no member and has nothing to gossip): what it decided while it heard no one is
    /// most likely its own link's failure, and is not passed on to the others when it hears
    /// them again.
    Alone(NodeId),
}

/// A timer a node asked for, given back to [`Node::on_timer`] when due. A node that
/// starts afresh ([`Output::Alone`]) ignores the timers of its earlier membership.
#[derive(Debug)]
pub struct Tick {
    life: u64,
    timer: Timer<NodeId>,
}

/// Counts of what a node received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub accepted: u64,
    pub malformed: u64,
    pub bad_mac: u64,
    pub stale: u64,
    pub replay: u64,
    pub refused: u64,
}

impl Received {
    fn count(&mut self, d: Dropped) {
        *match d {
            Dropped::Malformed => &mut self.malformed,
            Dropped::BadMac => &mut self.bad_mac,
            Dropped::Stale => &mut self.stale,
            Dropped::Replay => &mut self.replay,
            Dropped::Refused => &mut self.refused,
        } += 1;
    }

    /// Packets dropped, for any reason.
    pub fn dropped(&self) -> u64 {
        self.malformed + self.bad_mac + self.stale + self.replay + self.refused
    }
}

/// What a sealed packet carries: a foca message, or a member's record sent to one member
/// directly (to a member that just joined).
const KIND_FOCA: u8 = 0;
const KIND_RECORD: u8 = 1;

/// One node's membership, driven by its loop.
pub struct Node {
    foca: Foca<NodeId, PostcardCodec, SmallRng, Records>,
    /// foca's settings and the seed of its random choices, for a fresh start.
    config: Config,
    seed: u64,
    /// How many times this node started its membership afresh (stamps its timers).
    life: u64,
    /// When this node last accepted a packet (ms), and how long without one makes it deaf:
    /// foca's suspicion time. A member it declares down while deaf is not gossiped.
    heard_ms: Option<u64>,
    deaf_ms: u64,
    /// The addresses of members this node has held, the latest last (at most [`FORMER`]).
    former: Vec<SocketAddr>,
    runtime: AccumulatingRuntime<NodeId>,
    records: Records,
    /// When the load in this member's record was last published.
    load_ms: u64,
    /// This member's own record, and when it was last published.
    record: Record,
    published_ms: u64,
    /// Members that joined and are owed this member's record, sent to each directly (a
    /// broadcast already spent would never reach them, and one each time someone joins
    /// would crowd out the membership updates gossip carries).
    tell: Vec<SocketAddr>,
    sealer: Sealer,
    opener: Opener,
    pub received: Received,
}

impl Node {
    /// A node at `id` under the cluster `key`, with foca's `config` (`Config::new_lan` or
    /// `new_wan` for the expected cluster size), saying `record` of itself (its `node` is
    /// set to `id`'s address); `seed` seeds its random choices.
    pub fn new(id: NodeId, key: Key, config: Config, seed: u64, record: Record) -> Node {
        let records = Records::default();
        let rng = SmallRng::seed_from_u64(seed);
        Node {
            foca: Foca::with_custom_broadcast(
                id,
                config.clone(),
                rng,
                PostcardCodec,
                records.clone(),
            ),
            deaf_ms: config.suspect_to_down_after.as_millis() as u64,
            config,
            seed,
            life: 0,
            heard_ms: None,
            former: Vec::new(),
            runtime: AccumulatingRuntime::new(),
            records,
            record: Record {
                node: id.addr,
                ..record
            },
            published_ms: 0,
            load_ms: 0,
            tell: Vec::new(),
            sealer: Sealer::new(key.clone(), id.addr, id.boot),
            opener: Opener::new(key),
            received: Received::default(),
        }
    }

    pub fn id(&self) -> &NodeId {
        self.foca.identity()
    }

    /// The records known: this member's own and those of the members it holds.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Publishes this member's record (again), as a newer version: at start, now and then
    /// (a broadcast is sent only so many times, and members that join later must learn
    /// it), and when a member joins. False when the record is too large to send.
    pub fn publish(&mut self, now_ms: u64) -> bool {
        self.record.version = now_ms.max(self.record.version + 1);
        self.published_ms = now_ms;
        let Some(bytes) = self.record.encode() else {
            return false;
        };
        // (Offered to foca, which keeps it in `records` through the handler.)
        self.foca.add_broadcast(&bytes).is_ok()
    }

    /// Publishes this member's record with `etag` as its digest's, when that changed;
    /// whether it did.
    pub fn set_digest(&mut self, etag: u64, now_ms: u64) -> bool {
        if self.record.digest == etag {
            return false;
        }
        self.record.digest = etag;
        self.publish(now_ms)
    }

    /// Publishes this member's record with `load`, when it moved by a quarter (at least
    /// [`LOAD_STEP`]) since the last one published, at most every [`LOAD_EVERY_MS`]; whether
    /// it did.
    pub fn set_load(&mut self, load: u32, now_ms: u64) -> bool {
        let old = self.record.load;
        let moved = load.abs_diff(old) >= (old / 4).max(LOAD_STEP);
        if !moved || now_ms < self.load_ms.saturating_add(LOAD_EVERY_MS) {
            return false;
        }
        self.record.load = load;
        self.load_ms = now_ms;
        self.publish(now_ms)
    }

    /// The addresses of members this node has held, the latest last: a node that knows no
    /// member announces itself to some of them as well as to its seeds (a seed cut off and
    /// started afresh has no seed of its own to ask, and its members do not look for it).
    pub fn former(&self) -> &[SocketAddr] {
        &self.former
    }

    /// The members this node holds live (itself not included).
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.foca.iter_members().map(|m| m.id())
    }

    /// Asks the node at `to` (a seed from the config) to let this one join.
    pub fn announce(&mut self, to: SocketAddr, now_ms: u64, out: &mut Vec<Output>) {
        let seed = NodeId { addr: to, boot: 0 };
        // (An error here is foca refusing to announce to itself: nothing to do.)
        let _ = self.foca.announce(seed, &mut self.runtime);
        self.drain(now_ms, out);
    }

    /// A packet arrived at `now_ms`; what it asks for is appended to `out`. Dropped
    /// packets are counted in [`Node::received`] and change nothing.
    pub fn on_packet(
        &mut self,
        packet: &[u8],
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Dropped> {
        let r = match self.opener.open(packet, now_ms) {
            Ok(opened) => match opened.payload.split_first() {
                Some((&KIND_FOCA, data)) => self
                    .foca
                    .handle_data(data, &mut self.runtime)
                    .map_err(|_| Dropped::Refused),
                // A member's record sent to this one directly, by that member (the sender
                // the MAC covers) and no other.
                Some((&KIND_RECORD, data)) => match crate::record::decode(data) {
                    Ok(r) if r.node == opened.sender => {
                        self.records.offer(r);
                        Ok(())
                    }
                    _ => Err(Dropped::Refused),
                },
                _ => Err(Dropped::Malformed),
            },
            Err(d) => Err(d),
        };
        match r {
            Ok(()) => {
                self.received.accepted += 1;
                self.heard_ms = Some(now_ms);
            }
            Err(d) => self.received.count(d),
        }
        self.drain(now_ms, out);
        r
    }

    /// A timer the node asked for fired.
    pub fn on_timer(&mut self, tick: Tick, now_ms: u64, out: &mut Vec<Output>) {
        if tick.life == self.life {
            let _ = self.foca.handle_timer(tick.timer, &mut self.runtime);
        }
        self.drain(now_ms, out);
    }

    /// Leaves the cluster (a clean stop): the others learn it at once rather than
    /// detecting it.
    pub fn leave(mut self, now_ms: u64, out: &mut Vec<Output>) {
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.drain(now_ms, out);
    }

    /// Starts this node's membership again as a newer life that knows no member, once it
    /// has declared a member down having heard no one for a suspicion's time (deaf: its own
    /// link is down, most likely, as no live member goes that long without a probe or an
    /// ack), or declared its last member down. Its foca would otherwise hold the updates
    /// that declared the others down, unsent for want of anyone to hear them, and gossip
    /// them once its link came back: every member that had only gone quiet for it would be
    /// taken down by the rest, and have to come back as a newer life (steering would drop
    /// a healthy relay meanwhile). foca keeps a node's updates through a change of
    /// identity; a new one is cheap. The agent's loop announces it to its seeds again, and
    /// its record is published anew. A member that does die is declared down by the
    /// others, who still hear each other.
    fn afresh(&mut self, now_ms: u64) {
        // The members dropped with the old foca are not declared down: their records go
        // with them (they come again as the members do).
        for m in self.foca.iter_members() {
            self.records.forget(&m.id().addr);
        }
        let id = foca::Identity::renew(self.id()).unwrap_or(*self.id());
        self.life += 1;
        let rng = SmallRng::seed_from_u64(self.seed ^ self.life.rotate_left(32));
        self.foca = Foca::with_custom_broadcast(
            id,
            self.config.clone(),
            rng,
            PostcardCodec,
            self.records.clone(),
        );
        self.publish(now_ms);
    }

    fn drain(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        while let Some((to, payload)) = self.runtime.to_send() {
            let mut framed = Vec::with_capacity(1 + payload.len());
            framed.push(KIND_FOCA);
            framed.extend_from_slice(&payload);
            let packet = self.sealer.seal(&framed, now_ms);
            out.push(Output::Send {
                to: to.addr,
                packet,
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            let life = self.life;
            out.push(Output::Timer {
                after,
                timer: Tick { life, timer },
            });
        }
        let mut afresh = false;
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    // A member that joins learns this one's record at once (below).
                    self.tell.push(id.addr);
                    self.former.retain(|&a| a != id.addr);
                    if self.former.len() == FORMER {
                        self.former.remove(0);
                    }
                    self.former.push(id.addr);
                    out.push(Output::Up(id));
                }
                OwnedNotification::MemberDown(id) => {
                    self.records.forget(&id.addr);
                    out.push(Output::Down(id));
                    let deaf = self
                        .heard_ms
                        .is_some_and(|t| now_ms.saturating_sub(t) >= self.deaf_ms);
                    afresh |= deaf || self.foca.iter_members().next().is_none();
                }
                OwnedNotification::Rejoin(id) => {
                    // The others forgot this relay's record when they declared it down, and
                    // those it still counts as members will not see it join: a newer version
                    // (one that has not yet forgotten the old would keep it over the same
                    // version, then forget it), told to them all and broadcast.
                    self.publish(now_ms);
                    self.tell
                        .extend(self.foca.iter_members().map(|m| m.id().addr));
                    out.push(Output::Rejoined(id));
                }
                OwnedNotification::Defunct => out.push(Output::Defunct),
                _ => {}
            }
        }
        if afresh {
            self.afresh(now_ms);
            out.push(Output::Alone(*self.id()));
        }
        if !self.tell.is_empty()
            && let Some(record) = self.record.encode()
        {
            let mut framed = Vec::with_capacity(1 + record.len());
            framed.push(KIND_RECORD);
            framed.extend_from_slice(&record);
            for to in std::mem::take(&mut self.tell) {
                let packet = self.sealer.seal(&framed, now_ms);
                out.push(Output::Send { to, packet });
            }
        }
    }
}

//! Authenticated gossip packets: each one carries who sent it, in which life (`boot`), its
//! number in that life (`seq`) and when (`sent_ms`), with a MAC under the cluster key
//! (BLAKE3 in keyed mode) over all of it and the payload. A packet is dropped, and the
//! reason counted, when its MAC is wrong (another key, or altered), when it is older or
//! newer than [`MAX_SKEW_MS`] (a replay of an old capture), or when its sender already
//! sent a packet with that number in that life or one [`WINDOW`] numbers later (a replay
//! within the skew), or comes from an earlier life of that sender.
//!
//! Layout (version 1): `[1][sender: 19][boot: 8][seq: 8][sent_ms: 8][mac: 32][payload]`,
//! integers big-endian, the sender as family (4 or 6), 16 address bytes (IPv4 in the first
//! four), port.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How far a packet's send time may be from the receiver's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// How many numbers behind a sender's newest a packet may still arrive (reordered).
pub const WINDOW: u64 = 64;
/// Senders whose windows are kept (each is a key holder: a MAC came first).
pub const MAX_SENDERS: usize = 65_536;

const VERSION: u8 = 2;
const SENDER: usize = 19;
/// Bytes before the payload.
pub const OVERHEAD: usize = 1 + SENDER + 8 + 8 + 8 + 32;
const MAC_AT: usize = OVERHEAD - 32;

/// The cluster key: 32 bytes every member holds.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    pub fn new(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("malformed packet")]
    Malformed,
    #[error("wrong MAC (another key, or altered)")]
    BadMac,
    #[error("sent too long ago, or in the future")]
    Stale,
    #[error("replayed")]
    Replay,
    /// The MAC was good but the membership protocol refused the payload.
    #[error("refused by the membership protocol")]
    Refused,
}

impl Dropped {
    /// A short name (a metric label).
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed",
            Dropped::BadMac => "bad_mac",
            Dropped::Stale => "stale",
            Dropped::Replay => "replay",
            Dropped::Refused => "refused",
        }
    }
}

/// One node's sealing side: its address, its life, its next number.
pub struct Sealer {
    key: Key,
    me: SocketAddr,
    boot: u64,
    seq: u64,
}

impl Sealer {
    /// `boot` must grow from one life of the node to the next (the start time in ms does).
    pub fn new(key: Key, me: SocketAddr, boot: u64) -> Sealer {
        Sealer {
            key,
            me,
            boot,
            seq: 0,
        }
    }

    /// `payload` sealed for sending at `now_ms`.
    pub fn seal(&mut self, payload: &[u8], now_ms: u64) -> Vec<u8> {
        self.seq += 1;
        let mut p = Vec::with_capacity(OVERHEAD + payload.len());
        p.push(VERSION);
        p.extend_from_slice(&encode_addr(self.me));
        p.extend_from_slice(&self.boot.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&now_ms.to_be_bytes());
        let mac = mac(&self.key, &p, payload);
        p.extend_from_slice(&mac);
        p.extend_from_slice(payload);
        p
    }
}

/// What a receiver keeps per sender: its newest life, the newest number in it, and which
/// of the [`WINDOW`] numbers before it arrived.
#[derive(Clone, Copy)]
struct Seen {
    boot: u64,
    newest: u64,
    bits: u64,
}

/// The receiving side: the key and every sender's window.
pub struct Opener {
    key: Key,
    seen: HashMap<SocketAddr, Seen>,
}

/// A packet that passed: who sent it, and its payload.
#[derive(Debug)]
pub struct Opened<'a> {
    pub sender: SocketAddr,
    pub payload: &'a [u8],
}

impl Opener {
    pub fn new(key: Key) -> Opener {
        Opener {
            key,
            seen: HashMap::new(),
        }
    }

    /// Checks `packet` received at `now_ms`: its payload, or why it is dropped.
    pub fn open<'a>(&mut self, packet: &'a [u8], now_ms: u64) -> Result<Opened<'a>, Dropped> {
        if packet.len() < OVERHEAD || packet[0] != VERSION {
            return Err(Dropped::Malformed);
        }
        let (head, rest) = packet.split_at(MAC_AT);
        let (got, payload) = rest.split_at(32);
        let want = mac(&self.key, head, payload);
        // (blake3's Hash compares in constant time.)
        if blake3::Hash::from_bytes(want)
            != blake3::Hash::from_bytes(got.try_into().map_err(|_| Dropped::Malformed)?)
        {
            return Err(Dropped::BadMac);
        }
        let sender = decode_addr(&head[1..1 + SENDER]).ok_or(Dropped::Malformed)?;
        let int = |at: usize| {
            let b: [u8; 8] = head[at..at + 8].try_into().unwrap_or_default();
            u64::from_be_bytes(b)
        };
        let (boot, seq, sent) = (int(1 + SENDER), int(1 + SENDER + 8), int(1 + SENDER + 16));
        if sent.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(Dropped::Stale);
        }
        self.accept(sender, boot, seq)?;
        Ok(Opened { sender, payload })
    }

    /// Records `seq` of `sender`'s life `boot` unless it was seen, or is too old.
    fn accept(&mut self, sender: SocketAddr, boot: u64, seq: u64) -> Result<(), Dropped> {
        if !self.seen.contains_key(&sender) && self.seen.len() >= MAX_SENDERS {
            return Err(Dropped::Refused);
        }
        let s = self.seen.entry(sender).or_insert(Seen {
            boot,
            newest: 0,
            bits: 0,
        });
        if boot < s.boot {
            return Err(Dropped::Replay);
        }
        if boot > s.boot {
            *s = Seen {
                boot,
                newest: 0,
                bits: 0,
            };
        }
        if seq > s.newest {
            let shift = seq - s.newest;
            s.bits = if shift >= WINDOW { 0 } else { s.bits << shift };
            s.bits |= 1;
            s.newest = seq;
            return Ok(());
        }
        let back = s.newest - seq;
        if back >= WINDOW || s.bits & (1 << back) != 0 {
            return Err(Dropped::Replay);
        }
        s.bits |= 1 << back;
        Ok(())
    }
}

fn mac(key: &Key, head: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(head);
    h.update(payload);
    *h.finalize().as_bytes()
}

fn encode_addr(a: SocketAddr) -> [u8; SENDER] {
    let mut out = [0u8; SENDER];
    match a.ip() {
        IpAddr::V4(ip) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[0] = 6;
            out[1..17].copy_from_slice(&ip.octets());
        }
    }
    out[17..19].copy_from_slice(&a.port().to_be_bytes());
    out
}

fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*b.get(17)?, *b.get(18)?]);
    let ip = match b.first()? {
        4 => IpAddr::V4(Ipv4Addr::new(b[1], b[2], b[3], b[4])),
        6 => {
            let o: [u8; 16] = b.get(1..17)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::new([b; 32])
    }

    const A: &str = "10.0.0.1:7946";
    const T: u64 = 1_800_000_000_000;

    #[test]
    fn a_sealed_packet_opens_once_and_only_under_its_key() {
        let mut s = Sealer::new(key(1), A.parse().unwrap(), 5);
        let p = s.seal(b"hello", T);
        assert_eq!(p.len(), OVERHEAD + 5);
        let mut o = Opener::new(key(1));
        let got = o.open(&p, T + 10).unwrap();
        assert_eq!(
            (got.sender, got.payload),
            (A.parse().unwrap(), &b"hello"[..])
        );
        assert_eq!(o.open(&p, T + 10).unwrap_err(), Dropped::Replay);
        assert_eq!(
            Opener::new(key(2)).open(&p, T).unwrap_err(),
            Dropped::BadMac
        );
    }

    #[test]
    fn any_altered_byte_is_a_bad_mac() {
        let mut s = Sealer::new(key(1), "[2001:db8::1]:7946".parse().unwrap(), 5);
        let p = s.seal(b"payload", T);
        for i in 1..p.len() {
            let mut q = p.clone();
            q[i] ^= 0x40;
            let r = Opener::new(key(1)).open(&q, T);
            assert!(matches!(r, Err(Dropped::BadMac)), "byte {i} altered: {r:?}");
        }
        let mut q = p.clone();
        q[0] = VERSION + 1;
        assert_eq!(
            Opener::new(key(1)).open(&q, T).unwrap_err(),
            Dropped::Malformed
        );
        assert_eq!(
            Opener::new(key(1)).open(&p[..OVERHEAD - 1], T).unwrap_err(),
            Dropped::Malformed
        );
    }

    #[test]
    fn replays_old_captures_and_earlier_lives_are_dropped() {
        let mut s = Sealer::new(key(1), A.parse().unwrap(), 5);
        let packets: Vec<_> = (0..100).map(|_| s.seal(b"x", T)).collect();
        let mut o = Opener::new(key(1));
        // Reordered within the window: each once.
        assert!(o.open(&packets[50], T).is_ok());
        assert!(o.open(&packets[20], T).is_ok());
        assert_eq!(o.open(&packets[20], T).unwrap_err(), Dropped::Replay);
        assert!(o.open(&packets[99], T).is_ok());
        // Further back than the window: dropped.
        assert_eq!(o.open(&packets[10], T).unwrap_err(), Dropped::Replay);
        // Past the skew either way.
        let late = s.seal(b"x", T);
        assert_eq!(
            o.open(&late, T + MAX_SKEW_MS + 1).unwrap_err(),
            Dropped::Stale
        );
        assert_eq!(
            o.open(&late, T - MAX_SKEW_MS - 1).unwrap_err(),
            Dropped::Stale
        );
        // A new life starts its numbers again; the old life's packets are then dropped.
        let mut s2 = Sealer::new(key(1), A.parse().unwrap(), 6);
        assert!(o.open(&s2.seal(b"y", T), T).is_ok());
        assert_eq!(o.open(&s.seal(b"x", T), T).unwrap_err(), Dropped::Replay);
    }
}

//! Requests between relays, authenticated so that no client can use the peer listener.
//!
//! A relay asking a peer for a chunk sends the field [`FIELD`] with its node name, the time
//! and a MAC over the request's method, target, `Host` and `Range` values, that time and that name,
//! under a key derived from the cluster key (BLAKE3 `derive_key`, so a MAC of a gossip
//! packet is never one of a request, nor the reverse):
//!
//! ```text
//! Relay-Peer: node=10.0.0.2:7946;t=1765000000000;hop=1;mac=<64 hex digits>
//! ```
//!
//! `hop` counts the relays a client's miss has gone through (1: a relay asking on behalf
//! of its client; 2: the relay that was asked, asking for an object's description), at
//! most [`MAX_HOPS`], and the MAC covers it: a chain of relays asking each other is bounded
//! whatever their views of the membership.
//!
//! The peer answers a request whose field is missing, malformed, more than
//! [`MAX_SKEW_MS`] away from its own clock or whose MAC does not match with 403. Within the
//! skew a captured request can be sent again, with other fields than those the MAC covers
//! (say `Cache-Control: no-cache`, making the peer revalidate): it reads the same object,
//! as any client of the relay could.

use crate::seal::Key;

/// The request field carrying a peer request's credentials (lower case, as parsed).
pub const FIELD: &str = "relay-peer";

/// How far a peer request's time may be from the receiver's clock.
pub const MAX_SKEW_MS: u64 = 60_000;

/// The most relays one client's miss goes through.
pub const MAX_HOPS: u8 = 2;

/// The key peer requests are signed with, derived from the cluster key.
#[derive(Clone)]
pub struct PeerKey([u8; 32]);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

/// Why a peer request was refused (answered 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("no Relay-Peer field")]
    Missing,
    #[error("malformed Relay-Peer field")]
    Malformed,
    #[error("Relay-Peer time too far from this relay's clock")]
    Skew,
    #[error("Relay-Peer MAC does not match (another key, or the request altered)")]
    Mac,
}

/// What a peer request's MAC covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// The request target as sent (origin-form).
    pub target: &'a str,
    /// The `Host` field's value (the object's authority: another would be another object).
    pub host: &'a [u8],
    /// The `Range` field's value (empty without one).
    pub range: &'a [u8],
}

impl PeerKey {
    /// The peer-request key of cluster key `key`.
    pub fn derive(key: &Key) -> PeerKey {
        PeerKey(blake3::derive_key(
            "relay 2026-12 peer request v1",
            key.bytes(),
        ))
    }

    fn mac(&self, node: &str, t: u64, hop: u8, r: &Signed<'_>) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        // Each part with its length first: no two different requests hash alike.
        for part in [
            node.as_bytes(),
            &t.to_le_bytes(),
            &[hop],
            r.method.as_bytes(),
            r.target.as_bytes(),
            r.host,
            r.range,
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize()
    }

    /// The [`FIELD`] value for request `r` from `node` at `now_ms` (Unix time, ms), `hop`
    /// relays into its client's miss.
    pub fn sign(&self, node: &str, now_ms: u64, hop: u8, r: &Signed<'_>) -> String {
        format!(
            "node={node};t={now_ms};hop={hop};mac={}",
            self.mac(node, now_ms, hop, r).to_hex()
        )
    }

    /// Checks a [`FIELD`] value (None: the field is missing) for request `r` at `now_ms`;
    /// the sender's node name and the request's hop (1 to [`MAX_HOPS`]) when it holds.
    pub fn verify<'v>(
        &self,
        value: Option<&'v [u8]>,
        now_ms: u64,
        r: &Signed<'_>,
    ) -> Result<(&'v str, u8), Forbidden> {
        let value = value.ok_or(Forbidden::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| Forbidden::Malformed)?;
        let (mut node, mut t, mut hop, mut mac) = (None, None, None, None);
        for part in value.trim().split(';') {
            match part.trim().split_once('=') {
                Some(("node", v)) if node.is_none() => node = Some(v),
                Some(("t", v)) if t.is_none() => t = v.parse::<u64>().ok(),
                Some(("hop", v)) if hop.is_none() => hop = v.parse::<u8>().ok(),
                Some(("mac", v)) if mac.is_none() => mac = blake3::Hash::from_hex(v).ok(),
                _ => return Err(Forbidden::Malformed),
            }
        }
        let (Some(node), Some(t), Some(hop), Some(mac)) = (node, t, hop, mac) else {
            return Err(Forbidden::Malformed);
        };
        if node.is_empty() || !(1..=MAX_HOPS).contains(&hop) {
            return Err(Forbidden::Malformed);
        }
        if t.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(Forbidden::Skew);
        }
        // (`blake3::Hash` compares in constant time.)
        match self.mac(node, t, hop, r) == mac {
            true => Ok((node, hop)),
            false => Err(Forbidden::Mac),
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Signed<'static> = Signed {
        method: "GET",
        target: "/video/seg1.ts",
        host: b"cdn.example",
        range: b"bytes=0-1048575",
    };

    #[test]
    fn a_signed_request_verifies_and_anything_changed_does_not() {
        let k = PeerKey::derive(&Key::new([7; 32]));
        let now = 1_765_000_000_000;
        let v = k.sign("10.0.0.2:7946", now, 1, &GET);
        assert_eq!(
            k.verify(Some(v.as_bytes()), now + 5_000, &GET),
            Ok(("10.0.0.2:7946", 1))
        );
        // The hop is covered too, and bounded.
        let hopped = v.replace("hop=1", "hop=2");
        assert_eq!(
            k.verify(Some(hopped.as_bytes()), now, &GET),
            Err(Forbidden::Mac)
        );
        let far = k.sign("n", now, MAX_HOPS + 1, &GET);
        assert_eq!(
            k.verify(Some(far.as_bytes()), now, &GET),
            Err(Forbidden::Malformed)
        );
        let other = Signed {
            target: "/video/seg2.ts",
            ..GET
        };
        assert_eq!(
            k.verify(Some(v.as_bytes()), now, &other),
            Err(Forbidden::Mac)
        );
        let ranged = Signed {
            range: b"bytes=0-1",
            ..GET
        };
        assert_eq!(
            k.verify(Some(v.as_bytes()), now, &ranged),
            Err(Forbidden::Mac)
        );
        let head = Signed {
            method: "HEAD",
            ..GET
        };
        let host = Signed {
            host: b"other.example",
            ..GET
        };
        assert_eq!(
            k.verify(Some(v.as_bytes()), now, &host),
            Err(Forbidden::Mac)
        );
        assert_eq!(
            k.verify(Some(v.as_bytes()), now, &head),
            Err(Forbidden::Mac)
        );
        // Another node's name, the same MAC.
        let forged = v.replace("10.0.0.2", "10.0.0.3");
        assert_eq!(
            k.verify(Some(forged.as_bytes()), now, &GET),
            Err(Forbidden::Mac)
        );
        // Another cluster key.
        let stranger = PeerKey::derive(&Key::new([8; 32]));
        let v2 = stranger.sign("10.0.0.2:7946", now, 1, &GET);
        assert_eq!(
            k.verify(Some(v2.as_bytes()), now, &GET),
            Err(Forbidden::Mac)
        );
    }

    #[test]
    fn old_missing_or_malformed_credentials_are_refused() {
        let k = PeerKey::derive(&Key::new([7; 32]));
        let now = 1_765_000_000_000;
        let v = k.sign("n", now, 1, &GET);
        assert_eq!(
            k.verify(Some(v.as_bytes()), now + MAX_SKEW_MS + 1, &GET),
            Err(Forbidden::Skew)
        );
        assert_eq!(k.verify(None, now, &GET), Err(Forbidden::Missing));
        for bad in [
            "",
            "node=n;t=1",
            "node=;t=1;hop=1;mac=00",
            "node=n;t=1;mac=00",
            "node=n;t=x;mac=00",
            "node=n;t=1;t=2;mac=00",
            "garbage",
            "node=n;t=1;mac=zz",
        ] {
            assert_eq!(
                k.verify(Some(bad.as_bytes()), now, &GET),
                Err(Forbidden::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            k.verify(Some(&[0xff, 0xfe]), now, &GET),
            Err(Forbidden::Malformed)
        );
    }

    #[test]
    fn the_peer_key_is_not_the_gossip_key() {
        let key = Key::new([7; 32]);
        assert_ne!(&PeerKey::derive(&key).0, key.bytes());
    }
}

/// The field a relay's answer to another carries for one whole chunk it holds: the chunk's
/// XXH3-64, as 16 hex digits. The asker checks the chunk against it before it keeps it.
pub const CHUNK_SUM: &str = "Relay-Chunk-Sum";

/// A checksum as [`CHUNK_SUM`] carries it.
pub fn chunk_sum_hex(sum: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        let nibble = (sum >> (60 - 4 * i)) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    out
}

/// A [`CHUNK_SUM`] value read back; None when it is not 16 hex digits.
pub fn parse_chunk_sum(value: &[u8]) -> Option<u64> {
    if value.len() != 16 || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod chunk_sum_tests {
    #[test]
    fn a_chunk_sum_round_trips_and_garbage_is_refused() {
        for sum in [0u64, 1, 0xdead_beef_0123_4567, u64::MAX] {
            let hex = super::chunk_sum_hex(sum);
            assert_eq!(super::parse_chunk_sum(&hex), Some(sum));
        }
        assert_eq!(super::parse_chunk_sum(b"12"), None);
        assert_eq!(super::parse_chunk_sum(b"zzzzzzzzzzzzzzzz"), None);
        assert_eq!(super::parse_chunk_sum(b"+123456789abcdef"), None);
    }
}

/// Targets under this prefix on the peer listener are relay's own (the digest,
/// `crate::digest::PATH`): a relay never asks another for a client's request under it, so
/// no client reaches them through a relay's miss path.
pub const RESERVED: &str = "/.relay/";

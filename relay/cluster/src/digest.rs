//! Where each chunk is: a relay's digest, a compact filter of the chunks it holds
//! (a binary fuse filter through `xorf`: about 9 bits per chunk, about 0.4% false
//! positives, no false negatives). Each relay rebuilds its own now and then and serves it to
//! the others on its peer listener with an ETag ([`PATH`]); only the ETag travels in gossip
//! (the record's `digest`), so a peer fetches a digest again only when it changed. A false
//! positive costs one cheap miss at the peer (asked with `only-if-cached`), never an error.
//!
//! A chunk is named as for owners: the client's authority and target and the chunk's
//! number ([`chunk_name`]); the filter holds a 64-bit hash of that name ([`name_hash`]).
//!
//! The encoding ([`Digest::encode`], [`Digest::decode`]): `RDG1`, the ETag, the filter's
//! descriptor (seed, segment length, its mask, the segments' total length: little-endian)
//! and its fingerprints. A decoded filter is checked so that no lookup can index past its
//! fingerprints, whatever a peer sent.

use xorf::{BinaryFuse8, Filter};

/// Where a relay serves its digest on its peer listener (under `crate::peer::RESERVED`).
pub const PATH: &str = "/.relay/digest";
/// The largest digest accepted (about 59 million chunks).
pub const MAX_DIGEST: usize = 64 << 20;
const MAGIC: &[u8; 4] = b"RDG1";
const HEADER: usize = 4 + 8 + 8 + 4 + 4 + 4;

/// The name a chunk goes by between relays: the client's authority and target (path and
/// query) and the chunk's number, `#n`.
pub fn chunk_name(authority_and_target: &[u8], index: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(authority_and_target);
    out.push(b'#');
    out.extend_from_slice(index.to_string().as_bytes());
}

/// The hash a digest holds for a chunk's name (BLAKE3's first 8 bytes: the same on every
/// build and machine).
pub fn name_hash(name: &[u8]) -> u64 {
    let hash = blake3::hash(name);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// A relay's digest: the filter and the ETag that names this build of it.
#[derive(Clone, Debug)]
pub struct Digest {
    pub etag: u64,
    /// None for a relay that holds no chunk.
    filter: Option<BinaryFuse8>,
    /// How many chunk names it was built from.
    pub keys: usize,
}

/// Why a digest from a peer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadDigest {
    #[error("a digest of {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("not a digest (wrong magic or short header)")]
    NotADigest,
    #[error("a digest whose filter does not fit its fingerprints")]
    Inconsistent,
}

impl Digest {
    /// The digest of `names` (hashes of chunk names; repeats are fine). The ETag is a hash of
    /// the set, so two builds of the same chunks have the same one.
    pub fn build(mut names: Vec<u64>) -> Digest {
        names.sort_unstable();
        names.dedup();
        let mut etag = blake3::Hasher::new();
        for n in &names {
            etag.update(&n.to_le_bytes());
        }
        let etag = name_hash(etag.finalize().as_bytes());
        let filter = match names.is_empty() {
            true => None,
            // Building fails only for keys that are not distinct (they are).
            false => BinaryFuse8::try_from(&names).ok(),
        };
        Digest {
            etag,
            filter,
            keys: names.len(),
        }
    }

    /// Whether the chunk whose name hashes to `hash` may be held (no false negatives).
    pub fn may_hold(&self, hash: u64) -> bool {
        self.filter.as_ref().is_some_and(|f| f.contains(&hash))
    }

    /// The digest as it travels.
    pub fn encode(&self) -> Vec<u8> {
        let prints = self
            .filter
            .as_ref()
            .map_or(&[][..], |f| &f.fingerprints[..]);
        let mut out = Vec::with_capacity(HEADER + prints.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.etag.to_le_bytes());
        let (seed, len, mask, total) = self.filter.as_ref().map_or((0, 0, 0, 0), |f| {
            let d = &f.descriptor;
            (
                d.seed,
                d.segment_length,
                d.segment_length_mask,
                d.segment_count_length,
            )
        });
        out.extend_from_slice(&seed.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&mask.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(prints);
        out
    }

    /// A digest as it came from a peer, checked.
    pub fn decode(data: &[u8]) -> Result<Digest, BadDigest> {
        if data.len() > MAX_DIGEST {
            return Err(BadDigest::TooLarge(data.len()));
        }
        if data.len() < HEADER || &data[..4] != MAGIC {
            return Err(BadDigest::NotADigest);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&data[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let etag = u64_at(4);
        let (seed, len, mask, total) = (u64_at(12), u32_at(20), u32_at(24), u32_at(28));
        let prints = &data[HEADER..];
        if total == 0 && prints.is_empty() {
            return Ok(Digest {
                etag,
                filter: None,
                keys: 0,
            });
        }
        // A lookup reads fingerprints below total + 2 × len when the segment length is a
        // power of two with its mask, and total a whole number of segments.
        let fits = len.is_power_of_two()
            && mask == len - 1
            && total > 0
            && total % len == 0
            && (u64::from(total) + 2 * u64::from(len)) <= u64::from(u32::MAX)
            && prints.len() as u64 >= u64::from(total) + 2 * u64::from(len);
        if !fits {
            return Err(BadDigest::Inconsistent);
        }
        let filter = BinaryFuse8 {
            descriptor: xorf::Descriptor {
                seed,
                segment_length: len,
                segment_length_mask: mask,
                segment_count_length: total,
            },
            fingerprints: prints.into(),
        };
        Ok(Digest {
            etag,
            filter: Some(filter),
            // Not sent: about 9 bits per chunk.
            keys: prints.len() * 8 / 9,
        })
    }

    /// Bytes of its fingerprints.
    pub fn size(&self) -> usize {
        self.filter.as_ref().map_or(0, |f| f.fingerprints.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(range: std::ops::Range<u64>) -> Vec<u64> {
        let mut name = Vec::new();
        range
            .map(|i| {
                chunk_name(
                    format!("video.example/seg/{}.ts", i / 4).as_bytes(),
                    i % 4,
                    &mut name,
                );
                name_hash(&name)
            })
            .collect()
    }

    #[test]
    fn a_digest_holds_every_chunk_built_into_it_and_few_others() {
        let held = names(0..100_000);
        let digest = Digest::build(held.clone());
        assert!(held.iter().all(|&h| digest.may_hold(h)));
        let others = names(100_000..300_000);
        let false_hits = others.iter().filter(|&&h| digest.may_hold(h)).count();
        let rate = false_hits as f64 / others.len() as f64;
        let bits = digest.size() as f64 * 8.0 / held.len() as f64;
        eprintln!(
            "digest of 100000 chunks: {} bytes, {bits:.2} bits per chunk, false positives {:.3}%",
            digest.size(),
            rate * 100.0
        );
        assert!(rate < 0.006, "false positive rate {rate}");
        assert!(bits < 10.0, "{bits} bits per chunk");
    }

    #[test]
    fn the_etag_names_the_set_and_the_encoding_round_trips() {
        let a = Digest::build(names(0..1000));
        let mut shuffled = names(0..1000);
        shuffled.reverse();
        shuffled.extend(names(0..10));
        assert_eq!(Digest::build(shuffled).etag, a.etag);
        assert_ne!(Digest::build(names(0..1001)).etag, a.etag);
        let back = Digest::decode(&a.encode()).unwrap();
        assert_eq!(back.etag, a.etag);
        assert!(names(0..1000).iter().all(|&h| back.may_hold(h)));
        let empty = Digest::build(Vec::new());
        let back = Digest::decode(&empty.encode()).unwrap();
        assert!(!back.may_hold(names(0..1)[0]));
    }

    #[test]
    fn a_garbled_digest_is_refused_and_never_indexes_past_its_fingerprints() {
        let good = Digest::build(names(0..5000)).encode();
        assert_eq!(Digest::decode(b"RDG").unwrap_err(), BadDigest::NotADigest);
        assert_eq!(
            Digest::decode(&good[..good.len() - 1]).unwrap_err(),
            BadDigest::Inconsistent
        );
        let mut wrong = good.clone();
        wrong[0] = b'X';
        assert_eq!(Digest::decode(&wrong).unwrap_err(), BadDigest::NotADigest);
        // Every header field flipped in turn: refused, or a filter that answers without
        // panicking.
        let probes = names(0..2000);
        for at in 4..HEADER {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[at] ^= 1 << bit;
                if let Ok(d) = Digest::decode(&bad) {
                    for &h in &probes {
                        let _ = d.may_hold(h);
                    }
                }
            }
        }
        let huge = vec![0u8; MAX_DIGEST + 1];
        assert!(matches!(Digest::decode(&huge), Err(BadDigest::TooLarge(_))));
    }
}

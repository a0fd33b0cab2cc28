//! The chunk file format, as pure functions over byte slices: the header's encoding and its
//! defensive decoding, the checksum, and the names and paths of chunk and temp files.
//!
//! See the module documentation of [`crate::disk`] for the byte layout. Decoding checks
//! every length against the bytes actually present *before* it slices, so no byte sequence
//! read from disk can make it panic, allocate without bound, or pass off a wrong chunk.

use super::error::{Corruption, DiskError};
use crate::key::{ChunkKey, ChunkRef};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// First eight bytes of every chunk file.
pub const MAGIC: [u8; 8] = *b"relaychk";
/// Format version written in every header; a reader rejects any other.
pub const FORMAT: u32 = 1;
/// Bytes of the fixed part of the header (before key, validators and meta).
pub const FIXED_LEN: usize = 88;
/// Bytes of the header checksum that closes the header.
pub const SUM_LEN: usize = 8;
/// Largest header accepted (fixed part, variable part and checksum).
pub const MAX_HEADER: usize = 64 * 1024;
/// Bytes read from the start of each file at startup: one page, which holds the header of
/// any chunk whose meta is not unusually large (larger headers take a second read).
pub const HEADER_PROBE: usize = 4096;
/// Filesystem block: bodies of large chunks start on a block boundary, and usage is
/// counted in whole blocks.
pub const BLOCK: u64 = 4096;
/// Bodies of at least this many bytes start at a [`BLOCK`] boundary (ready for `O_DIRECT`
/// reads); smaller bodies follow the header directly so small objects cost one block.
pub const ALIGN_BODY_FROM: u64 = 64 * 1024;

/// The checksum of a chunk body, and of a header (XXH3, 64 bits).
pub fn checksum(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// [`checksum`] of bytes that come piece by piece (a chunk streamed to another relay as
/// it arrives, its checksum sent after it).
pub struct RunningSum(Box<xxhash_rust::xxh3::Xxh3>);

impl RunningSum {
    pub fn new() -> RunningSum {
        RunningSum(Box::new(xxhash_rust::xxh3::Xxh3::new()))
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// The checksum of every piece so far, in order.
    pub fn sum(&self) -> u64 {
        self.0.digest()
    }
}

impl Default for RunningSum {
    fn default() -> RunningSum {
        RunningSum::new()
    }
}

/// The 128-bit hash naming a chunk's file (XXH3-128 over the object key, version and index;
/// the version and index are fixed-width at the end, so the encoding is unambiguous).
pub fn key_hash(key: &ChunkRef<'_>) -> u128 {
    let mut h = Xxh3::new();
    h.update(key.object.as_bytes());
    h.update(&key.version.to_le_bytes());
    h.update(&key.index.to_le_bytes());
    h.digest128()
}

/// What the caller stores with a chunk: its key and its object's validators and metadata.
#[derive(Clone, Copy, Debug)]
pub struct ChunkInfo<'a> {
    pub key: ChunkRef<'a>,
    /// The whole object's length in bytes.
    pub object_len: u64,
    pub etag: &'a str,
    pub last_modified: &'a str,
    /// Opaque to the disk tier (the caller's RFC 9111 data); stored length-prefixed.
    pub meta: &'a [u8],
}

/// A decoded, checksum-verified chunk header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub key: ChunkKey,
    pub object_len: u64,
    pub etag: String,
    pub last_modified: String,
    pub meta: Vec<u8>,
    /// Write generation, unique per write in a directory; also in the file name.
    pub generation: u64,
    /// Bytes of the header, checksum included.
    pub header_len: u64,
    pub body_offset: u64,
    pub body_len: u64,
    pub body_sum: u64,
}

impl ChunkHeader {
    /// The length of the whole file: body offset plus body length.
    pub fn file_len(&self) -> u64 {
        self.body_offset + self.body_len
    }
}

/// Where a body of `body_len` bytes starts after a header of `header_len` bytes.
pub fn body_offset(header_len: usize, body_len: u64) -> u64 {
    let h = header_len as u64;
    if body_len >= ALIGN_BODY_FROM {
        h.div_ceil(BLOCK) * BLOCK
    } else {
        h
    }
}

/// What a file of `file_len` bytes costs against the capacity: whole blocks.
pub fn weight(file_len: u64) -> u64 {
    file_len.div_ceil(BLOCK).max(1) * BLOCK
}

/// Encodes the header of a chunk, padded with zeros to the body offset: the returned
/// bytes are what goes at offset 0 of the file, and the body follows directly.
pub(crate) fn encode(
    info: &ChunkInfo<'_>,
    generation: u64,
    body_len: u64,
    body_sum: u64,
) -> Result<Vec<u8>, DiskError> {
    let key = info.key.object.as_bytes();
    let var = key.len() + info.etag.len() + info.last_modified.len() + info.meta.len();
    let header_len = FIXED_LEN + var + SUM_LEN;
    if header_len > MAX_HEADER {
        return Err(DiskError::HeaderTooLarge {
            len: header_len,
            max: MAX_HEADER,
        });
    }
    let offset = body_offset(header_len, body_len);
    let mut out = Vec::with_capacity(offset as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(header_len as u32).to_le_bytes());
    for v in [
        offset,
        body_len,
        body_sum,
        info.key.version,
        info.key.index,
        info.object_len,
        generation,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for part in [
        key.len(),
        info.etag.len(),
        info.last_modified.len(),
        info.meta.len(),
    ] {
        out.extend_from_slice(&(part as u32).to_le_bytes());
    }
    debug_assert_eq!(out.len(), FIXED_LEN);
    out.extend_from_slice(key);
    out.extend_from_slice(info.etag.as_bytes());
    out.extend_from_slice(info.last_modified.as_bytes());
    out.extend_from_slice(info.meta);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out.resize(offset as usize, 0);
    Ok(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// The header length announced by the first bytes of a file, after checking the magic,
/// the format and the bounds. `prefix` needs at least [`FIXED_LEN`] bytes.
pub fn header_len(prefix: &[u8]) -> Result<usize, Corruption> {
    if prefix.len() < FIXED_LEN {
        return Err(Corruption::Truncated {
            expected: FIXED_LEN as u64,
            actual: prefix.len() as u64,
        });
    }
    if prefix[..8] != MAGIC {
        return Err(Corruption::BadMagic);
    }
    let format = u32_at(prefix, 8);
    if format != FORMAT {
        return Err(Corruption::UnknownFormat(format));
    }
    let len = u32_at(prefix, 12) as usize;
    if !(FIXED_LEN + SUM_LEN..=MAX_HEADER).contains(&len) {
        return Err(Corruption::BadField("header_len"));
    }
    Ok(len)
}

/// Decodes and verifies the header at the start of `bytes` (which may go on into the
/// body). Checks lengths, the header checksum and the text fields; not the body.
pub fn decode_header(bytes: &[u8]) -> Result<ChunkHeader, Corruption> {
    let len = header_len(bytes)?;
    let Some(header) = bytes.get(..len) else {
        return Err(Corruption::Truncated {
            expected: len as u64,
            actual: bytes.len() as u64,
        });
    };
    let (covered, sum) = header.split_at(len - SUM_LEN);
    if checksum(covered) != u64_at(sum, 0) {
        return Err(Corruption::HeaderChecksum);
    }
    // The checksum holds, so what follows was written by a relay; still check every field
    // so that a writer bug cannot become an out-of-bounds slice.
    let body_offset = u64_at(header, 16);
    let body_len = u64_at(header, 24);
    let lens = [
        u32_at(header, 72) as usize,
        u32_at(header, 76) as usize,
        u32_at(header, 80) as usize,
        u32_at(header, 84) as usize,
    ];
    let var = lens.iter().try_fold(0usize, |a, &l| a.checked_add(l));
    if var != Some(len - FIXED_LEN - SUM_LEN) {
        return Err(Corruption::BadField("field lengths"));
    }
    let max_offset = (MAX_HEADER as u64).next_multiple_of(BLOCK);
    if body_offset < len as u64
        || body_offset > max_offset
        || body_offset.checked_add(body_len).is_none()
    {
        return Err(Corruption::BadField("body_offset"));
    }
    let object_len = u64_at(header, 56);
    if body_len > object_len {
        return Err(Corruption::BadField("body_len"));
    }
    let mut at = FIXED_LEN;
    let mut field = |n: usize| {
        let s = &covered[at..at + n];
        at += n;
        s
    };
    let object = field(lens[0]);
    let etag = field(lens[1]);
    let last_modified = field(lens[2]);
    let meta = field(lens[3]);
    let text = |b: &[u8], name| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Corruption::BadField(name))
    };
    let object: Arc<str> = Arc::from(text(object, "key")?);
    Ok(ChunkHeader {
        key: ChunkKey {
            object,
            version: u64_at(header, 40),
            index: u64_at(header, 48),
        },
        object_len,
        etag: text(etag, "etag")?,
        last_modified: text(last_modified, "last_modified")?,
        meta: meta.to_vec(),
        generation: u64_at(header, 64),
        header_len: len as u64,
        body_offset,
        body_len,
        body_sum: u64_at(header, 32),
    })
}

/// Hex digits of a key hash: the first one names the top directory, the next two the
/// second-level directory.
fn hash_hex(hash: u128) -> String {
    format!("{hash:032x}")
}

/// `<root>/<h0>/<h1h2>`: the directory that holds a chunk's file.
pub fn chunk_dir(root: &Path, hash: u128) -> PathBuf {
    let hex = hash_hex(hash);
    root.join(&hex[0..1]).join(&hex[1..3])
}

/// `<root>/<h0>/<h1h2>/<hash>-<generation>.chunk`.
pub fn chunk_path(root: &Path, hash: u128, generation: u64) -> PathBuf {
    chunk_dir(root, hash).join(format!("{}-{generation:016x}.chunk", hash_hex(hash)))
}

/// `<root>/tmp/<hash>-<generation>.tmp`: where a chunk is written before its rename.
pub fn temp_path(root: &Path, hash: u128, generation: u64) -> PathBuf {
    root.join(TEMP_DIR)
        .join(format!("{}-{generation:016x}.tmp", hash_hex(hash)))
}

/// The directory of files being written; emptied at every start.
pub const TEMP_DIR: &str = "tmp";

/// The (hash, generation) a chunk file name encodes, or `None` if it is not one.
pub fn parse_chunk_name(name: &str) -> Option<(u128, u64)> {
    let stem = name.strip_suffix(".chunk")?;
    let (hash, generation) = stem.split_once('-')?;
    if hash.len() != 32 || generation.len() != 16 {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex(hash) || !hex(generation) {
        return None;
    }
    Some((
        u128::from_str_radix(hash, 16).ok()?,
        u64::from_str_radix(generation, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(meta: &'a [u8]) -> ChunkInfo<'a> {
        ChunkInfo {
            key: ChunkRef {
                object: "example.org/video/seg-1.ts",
                version: 0xfeed,
                index: 3,
            },
            object_len: 10 << 20,
            etag: "\"abc\"",
            last_modified: "Sun, 06 Nov 1994 08:49:37 GMT",
            meta,
        }
    }

    #[test]
    fn header_round_trip_and_alignment() {
        let small = encode(&info(b"m"), 9, 1000, 77).expect("encode");
        let h = decode_header(&small).expect("decode");
        assert_eq!(&*h.key.object, "example.org/video/seg-1.ts");
        assert_eq!((h.key.version, h.key.index), (0xfeed, 3));
        assert_eq!(h.etag, "\"abc\"");
        assert_eq!(h.meta, b"m");
        assert_eq!((h.generation, h.body_len, h.body_sum), (9, 1000, 77));
        assert_eq!(h.body_offset, small.len() as u64);
        assert_eq!(
            h.header_len, h.body_offset,
            "small bodies follow the header"
        );

        let big = encode(&info(b"m"), 9, 1 << 20, 77).expect("encode");
        assert_eq!(big.len() as u64, BLOCK, "large bodies start on a block");
        assert_eq!(decode_header(&big).expect("decode").body_offset, BLOCK);
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_rejected() {
        let bytes = encode(&info(b"rfc9111"), 1, 100, 5).expect("encode");
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[at] ^= 1 << bit;
                assert!(decode_header(&b).is_err(), "flip at {at}.{bit} accepted");
            }
            assert!(decode_header(&bytes[..at]).is_err(), "truncation at {at}");
        }
    }

    #[test]
    fn hostile_prefixes_never_panic() {
        // Random-ish byte soup, and valid magic with absurd lengths.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..2000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b: Vec<u8> = (0..(n % 300)).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if n % 2 == 0 && b.len() >= FIXED_LEN {
                b[..8].copy_from_slice(&MAGIC);
                b[8..12].copy_from_slice(&FORMAT.to_le_bytes());
            }
            let _ = decode_header(&b);
        }
        let mut b = encode(&info(b""), 1, 1, 1).expect("encode");
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header(&b), Err(Corruption::BadField("header_len")));
    }

    #[test]
    fn names() {
        let k = info(b"").key;
        let h = key_hash(&k);
        let p = chunk_path(Path::new("/c"), h, 0x2a);
        let name = p.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(parse_chunk_name(name), Some((h, 0x2a)));
        assert_eq!(p.parent(), Some(chunk_dir(Path::new("/c"), h).as_path()));
        assert_eq!(parse_chunk_name("x.chunk"), None);
        assert_eq!(parse_chunk_name(&name.to_uppercase()), None);
        assert_ne!(h, key_hash(&ChunkRef { index: 4, ..k }));
        assert_ne!(h, key_hash(&ChunkRef { version: 1, ..k }));
    }
}

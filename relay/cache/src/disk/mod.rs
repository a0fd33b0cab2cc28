//! The disk tier: chunks in files under one directory, an in-memory index rebuilt at start
//! from the files' headers, verification of every read, eviction by bytes, and admission.
//!
//! The tier decides; the caller does the I/O. [`DiskTier::plan_write`] /
//! [`DiskTier::commit_write`] and [`DiskTier::locate`] / [`DiskTier::verify`] say which
//! file to write or read and check what came back, so the server can do the `openat`,
//! `writev`, `rename`, `read` and `unlinkat` with io_uring. [`DiskTier::put`] and
//! [`DiskTier::get`] do the same operations with blocking std::fs, for tests and for
//! callers off the hot path. Recovery at [`DiskTier::open`] is blocking (it runs once,
//! before the event loops).
//!
//! # Directory layout
//!
//! ```text
//! <dir>/lock                          flock(2)ed while a relay has the directory open
//! <dir>/tmp/<hash>-<gen>.tmp          chunks being written; emptied at every start
//! <dir>/<h>/<hh>/<hash>-<gen>.chunk   one file per chunk
//! ```
//!
//! `<hash>` is the 32 hex digits of XXH3-128 over the chunk key (object key bytes, then
//! version and index as little-endian u64). Its first digit names one of 16 top-level
//! directories and the next two one of 256 below it: 4096 leaf directories, created at
//! the first start, so 4 million 1 MiB chunks (4 TiB) put about 1000 files in each.
//! `<gen>` is 16 hex digits of the write generation, a counter that is unique per write
//! within the directory (it resumes after the highest generation found at start). Because
//! every write has its own name, an unlink queued for an evicted or corrupt file can never
//! delete a newer file of the same chunk, however late it runs.
//!
//! # Chunk file format (version 1, little-endian)
//!
//! ```text
//! offset  size  field
//!      0     8  magic "relaychk"
//!      8     4  format version = 1
//!     12     4  header_len: bytes of the header including its closing checksum
//!     16     8  body_offset: where the body starts (>= header_len)
//!     24     8  body_len
//!     32     8  body checksum: XXH3-64 of the body
//!     40     8  object version (hash of the validators; part of the chunk key)
//!     48     8  chunk index
//!     56     8  object length (the whole object, >= body_len)
//!     64     8  write generation (as in the file name)
//!     72     4  key_len          ┐
//!     76     4  etag_len         │ lengths of the variable part
//!     80     4  last_modified_len│
//!     84     4  meta_len         ┘
//!     88     …  object key, ETag, Last-Modified (UTF-8), meta (opaque bytes)
//! header_len-8  8  header checksum: XXH3-64 of bytes 0 .. header_len-8
//!       …     …  zero padding up to body_offset
//! body_offset …  body (body_len bytes); the file ends here
//! ```
//!
//! Bodies of 64 KiB or more start at a 4 KiB boundary (ready for `O_DIRECT`); smaller ones
//! follow the header directly, so a small object costs one block. Headers are at most
//! 64 KiB. `meta` is the caller's (RFC 9111 data): the tier stores it and returns it with
//! every read and never parses it.
//!
//! # Never a wrong byte
//!
//! A chunk is written to `tmp/`, renamed to its final name, and only then committed to the
//! index. A kill -9 mid-write leaves at most a temp file, deleted at the next start. Without
//! fsync, a power cut may leave a renamed file with missing or zeroed blocks; that is why
//! the header has its own checksum covering every field, the file length must equal
//! `body_offset + body_len`, the header must name the key and generation the file name
//! encodes, and every read verifies the body checksum. Any failure drops the entry, queues
//! the file for deletion, bumps a counter, and the caller refetches. So no fsync is needed
//! for correctness; [`DiskConfig::fsync`] adds `fdatasync` before the rename for operators
//! who want chunks to survive power cuts (the directory entry itself is not synced: losing
//! it costs a refetch, never a wrong byte).
//!
//! XXH3 was chosen over CRC32C for the checksums: 64 bits, so a torn or rotten chunk passes
//! with probability 2⁻⁶⁴ rather than 2⁻³², at memory bandwidth with the SSE2/NEON every
//! x86-64 and aarch64 has (no CPU-feature dispatch), in a maintained pure-Rust crate
//! (`xxhash-rust`) that also names the files and feeds the admission filter.
//!
//! # Recovery
//!
//! [`DiskTier::open`] takes the lock, empties `tmp/`, then reads the first 4 KiB of every
//! chunk file (one `open`, `fstat`, `read`, `close`; a second read only for headers over
//! 4 KiB), in parallel over the top-level directories. Bodies are not read: a flipped byte
//! in a body is found by the first read of that chunk. Files whose header, name or length
//! do not hold are deleted and counted ([`RecoveryReport`]); of two files for one chunk the
//! newer generation is kept.
//!
//! # Eviction, promotion, admission
//!
//! The index evicts by bytes (each file counted in whole 4 KiB blocks) with `quick_cache`'s
//! scan-resistant CLOCK-PRO variant, as the memory tier does (see `index`). Promotion to
//! memory is the caller's choice; [`ReadPlan::hits`] counts the lookups of a chunk as the
//! hint. [`Admission`] keeps one-hit wonders off the disk: it admits a chunk on its second
//! request within a window.

mod admission;
mod error;
mod format;
mod index;
mod recover;
mod tier;

#[cfg(test)]
mod tests;

pub use admission::Admission;
pub use error::{Corruption, DiskError};
pub use format::{
    ALIGN_BODY_FROM, BLOCK, ChunkHeader, ChunkInfo, FORMAT, HEADER_PROBE, MAGIC, MAX_HEADER,
    RunningSum, checksum, decode_header, key_hash,
};
pub use index::ObjectVersion;
pub use recover::RecoveryReport;
pub use tier::{
    DiskConfig, DiskStats, DiskTier, ReadPlan, Removal, StoredChunk, VerifiedChunk, WritePlan,
    removals,
};

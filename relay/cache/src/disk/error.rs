//! The disk tier's errors: what went wrong with a file ([`Corruption`], comparable and
//! allocation-free) and with an operation ([`DiskError`]).

use std::io;
use std::path::PathBuf;

/// Why the bytes of a chunk file are not a valid chunk. Every one of these means the file
/// is dropped and the chunk refetched; none is ever served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Fewer bytes than the fixed header, or than the header says the file holds.
    #[error("file is {actual} bytes, expected {expected}")]
    Truncated { expected: u64, actual: u64 },
    /// The file is longer than its header says (something was appended or overwritten).
    #[error("file is {actual} bytes, its header says {expected}")]
    Oversized { expected: u64, actual: u64 },
    #[error("bad magic")]
    BadMagic,
    #[error("unknown format version {0}")]
    UnknownFormat(u32),
    /// A length or offset in the header is impossible (checked before the checksum, so a
    /// flipped length never makes the reader allocate or slice out of bounds).
    #[error("impossible header field {0}")]
    BadField(&'static str),
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("body checksum mismatch")]
    BodyChecksum,
    /// A valid header for another key or generation than the file name or index says.
    #[error("header names another chunk than expected")]
    WrongChunk,
}

/// An operation of the disk tier failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The chunk read from disk failed verification; it has been dropped from the index and
    /// its file queued for deletion. The caller refetches it.
    #[error("corrupt chunk on disk: {0}")]
    Corrupt(Corruption),
    /// The chunk's file would not fit in the tier at all.
    #[error("chunk file of {file_bytes} bytes does not fit a disk tier of {capacity} bytes")]
    TooLarge { file_bytes: u64, capacity: u64 },
    /// Key, validators and `meta` together exceed the header limit.
    #[error("chunk header of {len} bytes exceeds the limit of {max}")]
    HeaderTooLarge { len: usize, max: usize },
    /// The chunk described is impossible (e.g. a body longer than its object).
    #[error("invalid chunk: {0}")]
    BadChunk(&'static str),
    /// Another process (or another `DiskTier` in this one) holds the directory.
    #[error("disk cache directory {0} is in use by another relay")]
    Locked(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DiskError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DiskError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether refetching the chunk from upstream is the remedy (the chunk is simply not
    /// usable from disk), as opposed to a fault of the tier itself.
    pub fn is_miss(&self) -> bool {
        matches!(self, DiskError::Corrupt(_) | DiskError::TooLarge { .. })
    }
}

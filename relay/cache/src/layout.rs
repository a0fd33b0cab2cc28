//! Cutting objects into chunks. Every chunk but the last is `chunk_size` bytes long.

/// Chunk geometry for one cache: `chunk_size` is a power of two (checked by the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    chunk_size: u64,
}

impl Layout {
    /// `chunk_size` must be non-zero; the config guarantees a power of two.
    pub fn new(chunk_size: u64) -> Self {
        Layout {
            chunk_size: chunk_size.max(1),
        }
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Number of chunks of an object of `len` bytes (0 for an empty object).
    pub fn chunk_count(&self, len: u64) -> u64 {
        len.div_ceil(self.chunk_size)
    }

    /// Index of the chunk holding byte `offset`.
    pub fn chunk_of(&self, offset: u64) -> u64 {
        offset / self.chunk_size
    }

    /// Byte offset of the first byte of chunk `index`.
    pub fn chunk_start(&self, index: u64) -> u64 {
        index.saturating_mul(self.chunk_size)
    }

    /// Length of chunk `index` of an object of `len` bytes (0 past the end).
    pub fn chunk_len(&self, len: u64, index: u64) -> u64 {
        let start = self.chunk_start(index);
        len.saturating_sub(start).min(self.chunk_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        let l = Layout::new(1024);
        assert_eq!(l.chunk_count(0), 0);
        assert_eq!(l.chunk_count(1), 1);
        assert_eq!(l.chunk_count(1024), 1);
        assert_eq!(l.chunk_count(1025), 2);
        assert_eq!(l.chunk_of(1023), 0);
        assert_eq!(l.chunk_of(1024), 1);
        assert_eq!(l.chunk_len(2500, 0), 1024);
        assert_eq!(l.chunk_len(2500, 2), 452);
        assert_eq!(l.chunk_len(2500, 3), 0);
        assert_eq!(l.chunk_start(u64::MAX), u64::MAX);
    }
}

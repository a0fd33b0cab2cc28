//! Chunk keys. A chunk is named by its object's cache key, the object's version (a hash of
//! its validators, so chunks of two versions never mix) and its index in the object.
//! [`ChunkRef`] borrows the object key so a lookup on the hit path allocates nothing.

use quick_cache::Equivalent;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// An owned chunk key, stored in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkKey {
    pub object: Arc<str>,
    pub version: u64,
    pub index: u64,
}

/// A borrowed chunk key for lookups; hashes exactly as the [`ChunkKey`] it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef<'a> {
    pub object: &'a str,
    pub version: u64,
    pub index: u64,
}

impl Hash for ChunkKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state)
    }
}

impl Hash for ChunkRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.object.hash(state);
        self.version.hash(state);
        self.index.hash(state);
    }
}

impl ChunkKey {
    pub fn as_ref(&self) -> ChunkRef<'_> {
        ChunkRef {
            object: &self.object,
            version: self.version,
            index: self.index,
        }
    }
}

impl Equivalent<ChunkKey> for ChunkRef<'_> {
    fn equivalent(&self, key: &ChunkKey) -> bool {
        *self == key.as_ref()
    }
}

impl ChunkRef<'_> {
    pub fn to_owned_key(&self) -> ChunkKey {
        ChunkKey {
            object: Arc::from(self.object),
            version: self.version,
            index: self.index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn h<T: Hash>(t: &T) -> u64 {
        let mut s = DefaultHasher::new();
        t.hash(&mut s);
        s.finish()
    }

    #[test]
    fn borrowed_and_owned_hash_alike() {
        let r = ChunkRef {
            object: "example.org/a",
            version: 7,
            index: 3,
        };
        let k = r.to_owned_key();
        assert_eq!(h(&r), h(&k));
        assert!(r.equivalent(&k));
        let other = ChunkRef { index: 4, ..r };
        assert!(!other.equivalent(&k));
    }
}

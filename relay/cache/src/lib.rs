//! relay's chunk cache, sans-IO: it stores and finds bytes, it never reads a file or a socket.
//!
//! Layout:
//! - [`layout`]: how an object is cut into fixed-size chunks (pure arithmetic).
//! - [`key`]: chunk keys, and borrowed lookups that allocate nothing.
//! - [`memory`]: the memory tier, bounded by bytes, with scan-resistant eviction.
//! - [`meta`]: what the cache knows of an object (length, validators) and when it was learnt.

pub mod key;
pub mod layout;
pub mod memory;
pub mod meta;

pub use key::{ChunkKey, ChunkRef};
pub use layout::Layout;
pub use memory::MemoryTier;
pub use meta::{MetaCache, ObjectMeta};

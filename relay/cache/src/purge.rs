//! Purging: what `/purge` names (one key with its variants, or every key with a prefix) and
//! what a hard purge really removed from each tier, so an operator learns that a key matched
//! nothing rather than being told it went.

use crate::tiers::Cache;
use std::collections::HashSet;

/// Which objects a purge names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge<'a> {
    /// One object key and its variants (the key, `\0`, the varying fields: `key::push_variant`).
    Key(&'a str),
    /// Every object whose key starts with this.
    Prefix(&'a str),
}

impl Purge<'_> {
    /// Whether `object` (a key as stored) is one this purge names.
    pub fn matches(&self, object: &str) -> bool {
        match *self {
            Purge::Key(k) => object
                .strip_prefix(k)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('\0')),
            Purge::Prefix(p) => object.starts_with(p),
        }
    }

    /// What the disk tier removes for it.
    fn on_disk(&self) -> crate::disk::Removal {
        match *self {
            Purge::Key(k) => crate::disk::Removal::Variants(k.into()),
            Purge::Prefix(p) => crate::disk::Removal::Prefix(p.into()),
        }
    }
}

/// What a hard purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Distinct objects (variants counted apart) of which anything was removed.
    pub objects: usize,
    /// Descriptions dropped from the meta cache.
    pub descriptions: usize,
    /// Chunks dropped from the memory tier.
    pub memory_chunks: usize,
    /// Chunk files dropped from the disk tier.
    pub disk_chunks: usize,
}

impl Cache {
    /// Hard purge: drops the descriptions and the chunks (memory and disk, every version) of
    /// the objects `what` names; counts what was there to drop.
    pub fn purge(&self, what: Purge<'_>) -> Purged {
        let matches = |o: &str| what.matches(o);
        // (A key's description of an answer arriving now, described once it ends, goes
        // too: `MetaCache::get`.)
        if let Purge::Key(k) = what {
            self.meta.invalidate_variants(k);
        }
        let descriptions = self.meta.remove_objects(matches);
        let memory = self.memory.remove_objects(matches);
        let disk = self
            .disk
            .as_ref()
            .map(|d| d.remove_named_now(what.on_disk(), true))
            .unwrap_or_default();
        let objects: HashSet<&str> = descriptions
            .iter()
            .chain(&memory)
            .chain(&disk)
            .map(|k| &**k)
            .collect();
        Purged {
            objects: objects.len(),
            descriptions: descriptions.len(),
            memory_chunks: memory.len(),
            disk_chunks: disk.len(),
        }
    }

    /// Soft purge: marks the descriptions `what` names stale, so the next request
    /// revalidates (a 304 keeps the chunks); returns how many there were. On disk, their
    /// first chunks go (`DiskTier::remove_first_chunks`): a restart cannot rebuild them as
    /// fresh, and the other chunks stay for the same version.
    pub fn expire(&self, what: Purge<'_>) -> usize {
        if let Some(d) = self.disk.as_ref() {
            d.remove_first_chunks(&what.on_disk());
        }
        self.meta.expire(|k| what.matches(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectMeta;
    use crate::tiers::source_tests::{cache_on_disk, key};
    use bytes::Bytes;

    #[test]
    fn a_key_names_itself_and_its_variants_only() {
        let k = Purge::Key("http://h/a");
        assert!(k.matches("http://h/a"));
        assert!(k.matches("http://h/a\0accept-language=fr\n"));
        assert!(!k.matches("http://h/ab"));
        assert!(!k.matches("http://h/"));
        let p = Purge::Prefix("http://h/a");
        assert!(p.matches("http://h/ab") && !p.matches("http://h/b"));
    }

    #[test]
    fn a_purge_counts_what_each_tier_held() {
        let (cache, dir) = cache_on_disk("purge");
        let meta = || ObjectMeta::file(8192, 1, "\"e\"".into(), "lm".into());
        cache.meta.insert("http://h/a", meta());
        cache.meta.insert("http://h/a\0v=1\n", meta());
        cache.meta.insert("http://h/b", meta());
        for i in 0..2 {
            let body = Bytes::from(vec![7u8; 4096]);
            cache.memory.insert(key("http://h/a", i), body.clone());
            cache.memory.insert(key("http://h/c", i), body);
        }
        // Nothing by that name: nothing removed, and it says so.
        assert_eq!(cache.purge(Purge::Key("http://h/zz")), Purged::default());
        let removed = |objects, descriptions, memory_chunks| Purged {
            objects,
            descriptions,
            memory_chunks,
            disk_chunks: 0,
        };
        assert_eq!(cache.purge(Purge::Key("http://h/a")), removed(2, 2, 2));
        assert_eq!(cache.purge(Purge::Key("http://h/a")), Purged::default());
        assert_eq!(cache.expire(Purge::Prefix("http://h/")), 1);
        assert_eq!(cache.purge(Purge::Prefix("http://h/")), removed(2, 1, 2));
        drop(cache);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

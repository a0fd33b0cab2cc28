//! What each member says about itself, carried in gossip as a foca custom broadcast: its
//! site, the HTTP address other relays fetch from, its weight, the address steered flows
//! reach it at. A member publishes its
//! record at start and again now and then (a broadcast is sent only so many times, and a
//! relay that joins later must still learn it); a newer version replaces an older one, and
//! a member's record goes when the member does.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// The most a record may take in a packet (its encoding).
pub const MAX_RECORD: usize = 512;
/// The longest site name.
pub const MAX_SITE: usize = 64;

/// One member's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The member's gossip address (its identity's address).
    pub node: SocketAddr,
    /// Larger for a later record of the same member.
    pub version: u64,
    /// The site the member serves (relays of one site share a cache first).
    pub site: String,
    /// Where other relays send it HTTP requests.
    pub http: SocketAddr,
    /// Its share of the site's work relative to the others (100: an ordinary relay).
    pub weight: u32,
    /// Where steered flows reach it: the outer destination of encapsulated packets.
    pub steer: IpAddr,
    /// The ETag of its digest (`crate::digest`: the chunks it holds, served on its HTTP
    /// address); 0 before its first build.
    pub digest: u64,
    /// How loaded it is: its connections open, published again when that moves by a
    /// quarter (at least 8) and at most every 2 s. A chunk's owner loaded well above the
    /// site's average gives its chunks to their second owner (`crate::owners::overloaded`).
    pub load: u32,
}

impl Record {
    /// The record as it travels; None when it would exceed [`MAX_RECORD`] or its site
    /// [`MAX_SITE`].
    pub fn encode(&self) -> Option<Vec<u8>> {
        if self.site.len() > MAX_SITE {
            return None;
        }
        postcard::to_allocvec(self)
            .ok()
            .filter(|b| b.len() <= MAX_RECORD)
    }
}

/// The records known, by member; shared between the node's foca and its readers.
#[derive(Clone, Default)]
pub struct Records {
    by_node: Arc<Mutex<HashMap<SocketAddr, Record>>>,
}

impl Records {
    /// Every record known (this member's own included).
    pub fn all(&self) -> Vec<Record> {
        let map = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    pub fn get(&self, node: &SocketAddr) -> Option<Record> {
        let map = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        map.get(node).cloned()
    }

    /// Keeps `r` if it is newer than what is known of its member; whether it was.
    pub(crate) fn offer(&self, r: Record) -> bool {
        let mut map = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&r.node) {
            Some(known) if known.version >= r.version => false,
            _ => {
                map.insert(r.node, r);
                true
            }
        }
    }

    /// The member left or was declared down.
    pub(crate) fn forget(&self, node: &SocketAddr) {
        let mut map = self.by_node.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(node);
    }
}

/// A record's place in foca's dissemination backlog: a newer version of a member's record
/// replaces an older one not yet sent everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordKey {
    node: SocketAddr,
    version: u64,
}

impl foca::Invalidates for RecordKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.version >= other.version
    }
}

/// Why a received record was refused.
#[derive(Debug, thiserror::Error)]
pub enum BadRecord {
    #[error("a record of {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("a record that does not decode")]
    Garbled,
    #[error("a site name over {MAX_SITE} bytes")]
    LongSite,
}

/// A record as the first release sent it: no steering address, digest or load.
#[derive(Deserialize)]
struct RecordV1 {
    node: SocketAddr,
    version: u64,
    site: String,
    http: SocketAddr,
    weight: u32,
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Record {
        Record {
            steer: r.node.ip(),
            node: r.node,
            version: r.version,
            site: r.site,
            http: r.http,
            weight: r.weight,
            digest: 0,
            load: 0,
        }
    }
}

/// A record as it travels, checked.
pub(crate) fn decode(data: &[u8]) -> Result<Record, BadRecord> {
    if data.len() > MAX_RECORD {
        return Err(BadRecord::TooLarge(data.len()));
    }
    // Fields are only ever added at the end: a record of an earlier release (without the
    // later ones) decodes with their defaults, so a rolling upgrade keeps every record;
    // an earlier release decoding a later record reads its own fields and leaves the rest.
    let r: Record = match postcard::from_bytes(data) {
        Ok(r) => r,
        Err(_) => postcard::from_bytes::<RecordV1>(data)
            .map_err(|_| BadRecord::Garbled)?
            .into(),
    };
    if r.site.len() > MAX_SITE {
        return Err(BadRecord::LongSite);
    }
    Ok(r)
}

impl foca::BroadcastHandler<crate::NodeId> for Records {
    type Key = RecordKey;
    type Error = BadRecord;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&crate::NodeId>,
    ) -> Result<Option<RecordKey>, BadRecord> {
        let r = decode(data)?;
        let key = RecordKey {
            node: r.node,
            version: r.version,
        };
        Ok(self.offer(r).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_the_first_release_decodes_with_defaults_and_a_later_one_is_read_by_it() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct V1 {
            node: SocketAddr,
            version: u64,
            site: String,
            http: SocketAddr,
            weight: u32,
        }
        let old = V1 {
            node: "10.0.0.1:7946".parse().unwrap(),
            version: 3,
            site: "fra1".into(),
            http: "10.0.0.1:7947".parse().unwrap(),
            weight: 200,
        };
        let r = decode(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!((r.node, r.version, r.weight), (old.node, 3, 200));
        assert_eq!((r.steer, r.digest, r.load), (old.node.ip(), 0, 0));
        // The first release reading a record of this one: its own fields, the rest left.
        let new = Record {
            load: 77,
            digest: 9,
            ..r
        };
        let bytes = new.encode().unwrap();
        let back: V1 = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, old);
        assert_eq!(decode(&bytes).unwrap(), new);
        assert!(matches!(decode(&[0xff; 3]), Err(BadRecord::Garbled)));
    }
}

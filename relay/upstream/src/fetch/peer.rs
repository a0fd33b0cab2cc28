//! Asking the site's other relays before the origin: a head or chunk fetch goes first to
//! the chunk's owner among the relays of the site (`relay_cluster::owners`, weighted
//! rendezvous hashing over the members' records: every relay picks the same one), over its
//! peer listener, signed under the cluster key (`relay_cluster::peer`). The owner answers
//! from its cache, or fetches from the origin once for the whole site (its own request is
//! a peer request: it asks no one else, so there is never more than one hop). Any trouble
//! with the owner (no connection within 500 ms, no head within the origin's first-byte
//! timeout, a 5xx) and the origin is asked instead: a peer never turns a miss into an
//! error. Its answer is checked as the origin's would be (a chunk from another version is
//! refused, and the origin asked).

use super::Context;
use super::request::fill_request;
use hyper::body::Incoming;
use relay_cache::ObjectMeta;
use relay_cluster::peer::{FIELD, Signed, now_ms};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Context {
    /// Asks the owner of chunk `range` of `path` (under the client's `authority`) for it,
    /// when the owner is another relay; its answer when it is one to use (below 500).
    pub(super) async fn ask_owner(
        &self,
        origin: usize,
        authority: &str,
        path: &str,
        range: Option<(u64, u64)>,
        validate: Option<&ObjectMeta>,
        forward: &[(String, Vec<u8>)],
    ) -> Option<http::Response<Incoming>> {
        let peers = self.peers.get()?;
        let index = range.map_or(0, |(start, _)| start / self.store.layout.chunk_size());
        // Every relay names a chunk alike: the authority and target the clients asked for,
        // and the chunk's number.
        let mut name = Vec::with_capacity(authority.len() + path.len() + 21);
        name.extend_from_slice(authority.as_bytes());
        name.extend_from_slice(path.as_bytes());
        name.extend_from_slice(format!("#{index}").as_bytes());
        let owner = (peers.owner)(&name)?;
        let uri: http::Uri = format!("http://{owner}{path}").parse().ok()?;
        let mut req = fill_request(uri, authority, range, validate, forward).ok()?;
        let range_value = range.map_or(String::new(), |(s, e)| format!("bytes={s}-{e}"));
        let signed = Signed {
            method: "GET",
            target: path,
            range: range_value.as_bytes(),
        };
        let credentials = peers.key.sign(&peers.node, now_ms(), &signed);
        req.headers_mut().insert(
            http::header::HeaderName::from_static(FIELD),
            http::HeaderValue::from_str(&credentials).ok()?,
        );
        let first_byte = Duration::from_millis(self.origins[origin].config.first_byte_timeout_ms);
        let answer = tokio::time::timeout(first_byte, self.peer_client.request(req)).await;
        match answer {
            Ok(Ok(resp)) if resp.status().as_u16() < 500 => {
                self.stats.peer_answered.fetch_add(1, Ordering::Relaxed);
                Some(resp)
            }
            other => {
                let why = match other {
                    Ok(Ok(resp)) => format!("status {}", resp.status().as_u16()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer within the first-byte timeout".into(),
                };
                log::warn!("peer {owner}: {path} chunk {index}: {why}; asking the origin");
                self.peer_fell_back();
                None
            }
        }
    }

    /// An answer from the owner that could not be used: the origin is asked instead.
    pub(super) fn peer_fell_back(&self) {
        self.stats.peer_fell_back.fetch_add(1, Ordering::Relaxed);
    }
}

//! Asking the site's other relays before the origin: a head or chunk fetch goes first to
//! the chunk's owner among the relays of the site (`relay_cluster::owners`, weighted
//! rendezvous hashing over the members' records: every relay picks the same one), over its
//! peer listener, signed under the cluster key (`relay_cluster::peer`). The owner answers
//! from its cache, or fetches from the origin once for the whole site (a relay asked for a
//! chunk fetches it from the origin; for a description it may ask the first chunk's owner:
//! two hops at most). Only an answer a cache gives when all went well (200, 206, 304) is
//! used, and checked as the origin's would be (a chunk from another version is refused);
//! anything else, and the origin is asked. A peer that does not connect within 500 ms or
//! answer within the origin's first-byte timeout is passed over for 10 s (one log line).
//! A peer's chunk that breaks off continues from the origin into the same fill, the origin
//! asked from the chunk's start and the bytes the peer sent compared with its own first
//! (`Context::fill_rest`, `resume_from_origin`).

use super::Context;
use super::request::fill_request;
use hyper::body::Incoming;
use relay_cache::ObjectMeta;
use relay_cluster::peer::{FIELD, Signed, now_ms};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a peer that did not answer is passed over (the cluster drops a dead one within
/// about 5–10 s; a live one whose HTTP side is stuck stays a member).
const PEER_SHUN: Duration = Duration::from_secs(10);

/// How every relay names chunk `index` of `path` (`relay_cluster::digest::chunk_name`):
/// the authority and target the clients asked for, and the chunk's number.
pub(super) fn chunk_name_of(route: &crate::PeerRoute, path: &str, index: u64) -> Vec<u8> {
    let mut target = Vec::with_capacity(route.authority.len() + path.len());
    target.extend_from_slice(route.authority.as_bytes());
    target.extend_from_slice(path.as_bytes());
    let mut name = Vec::with_capacity(target.len() + 21);
    relay_cluster::digest::chunk_name(&target, index, &mut name);
    name
}

/// A fill request for `path` (its chunk `range`) to the relay at `to`, signed under the
/// cluster key for `route`'s hop (`relay_cluster::peer`).
pub(super) fn peer_request(
    peers: &crate::Peers,
    to: std::net::SocketAddr,
    route: &crate::PeerRoute,
    path: &str,
    range: Option<(u64, u64)>,
    validate: Option<&ObjectMeta>,
    forward: &[(String, Vec<u8>)],
) -> Option<http::Request<http_body_util::Full<bytes::Bytes>>> {
    let authority = &*route.authority;
    let uri: http::Uri = format!("http://{to}{path}").parse().ok()?;
    let mut req = fill_request(uri, authority, range, validate, forward).ok()?;
    let range_value = range.map_or(String::new(), |(s, e)| format!("bytes={s}-{e}"));
    let signed = Signed {
        method: "GET",
        target: path,
        host: authority.as_bytes(),
        range: range_value.as_bytes(),
    };
    let credentials = peers.key.sign(&peers.node, now_ms(), route.hop, &signed);
    // A chunk streamed while it arrives there comes with its checksum after it.
    req.headers_mut()
        .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    req.headers_mut().insert(
        http::header::HeaderName::from_static(FIELD),
        http::HeaderValue::from_str(&credentials).ok()?,
    );
    Some(req)
}

impl Context {
    /// Asks the owner of chunk `range` of `path` (under the client's `authority`) for it,
    /// when the owner is another relay; its answer when it is one to use (below 500).
    pub(super) async fn ask_owner(
        &self,
        origin: usize,
        route: &crate::PeerRoute,
        path: &str,
        range: Option<(u64, u64)>,
        validate: Option<&ObjectMeta>,
        forward: &[(String, Vec<u8>)],
    ) -> Option<http::Response<Incoming>> {
        let peers = self.peers.get()?;
        if path.starts_with(relay_cluster::peer::RESERVED) {
            return None;
        }
        let index = range.map_or(0, |(start, _)| start / self.store.layout.chunk_size());
        let name = chunk_name_of(route, path, index);
        let owner = (peers.owner)(&name)?;
        if self.peer_shunned(owner) {
            self.peer_fell_back();
            return None;
        }
        let req = peer_request(peers, owner, route, path, range, validate, forward)?;
        let first_byte = Duration::from_millis(self.origins[origin].config.first_byte_timeout_ms);
        let answer = tokio::time::timeout(first_byte, self.peer_client.request(req)).await;
        match answer {
            // What a cache answers a GET with Range (or conditionals) when all went well;
            // anything else (its own limits, a clock too far off, an error) is the origin's
            // to answer, not the peer's.
            Ok(Ok(resp)) if matches!(resp.status().as_u16(), 200 | 206 | 304) => Some(resp),
            Ok(Ok(resp)) => {
                log::debug!(
                    "peer {owner}: {path} chunk {index}: status {}; asking the origin",
                    resp.status().as_u16()
                );
                self.peer_fell_back();
                None
            }
            failed => {
                // No connection, or no head in time: the peer is passed over for a while.
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within the origin's first-byte timeout".into(),
                };
                if self.shun_peer(owner) {
                    log::warn!(
                        "peer {owner}: {why}; its chunks go to the origin for {} s",
                        PEER_SHUN.as_secs()
                    );
                }
                self.peer_fell_back();
                None
            }
        }
    }

    /// An answer from the owner was used.
    pub(super) fn peer_answered(&self) {
        self.stats.peer_answered.fetch_add(1, Ordering::Relaxed);
    }

    /// An answer from the owner that could not be used: the origin is asked instead.
    pub(super) fn peer_fell_back(&self) {
        self.stats.peer_fell_back.fetch_add(1, Ordering::Relaxed);
    }

    /// The peer at `addr` failed to answer a while ago: passed over.
    pub(super) fn peer_shunned(&self, addr: std::net::SocketAddr) -> bool {
        let shunned = self.shunned.lock().unwrap_or_else(|p| p.into_inner());
        shunned
            .get(&addr)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Passes over the peer at `addr` for [`PEER_SHUN`]; true when it was not already (the
    /// one log line per spell).
    pub(super) fn shun_peer(&self, addr: std::net::SocketAddr) -> bool {
        let now = Instant::now();
        let mut shunned = self.shunned.lock().unwrap_or_else(|p| p.into_inner());
        shunned.retain(|_, until| *until > now);
        shunned.insert(addr, now + PEER_SHUN).is_none()
    }
}

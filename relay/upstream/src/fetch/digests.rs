//! The other relays' digests (`relay_cluster::digest`), and asking the nearest that holds a
//! chunk before its owner. A task fetches a member's digest from its peer listener whenever
//! the ETag in its record changes (and asks again every [`REFRESH`] with `If-None-Match`,
//! which also measures its round trip). A miss asks up to [`MAX_HOLDERS`] relays whose
//! digest says they hold the chunk, nearest first, with `Cache-Control: only-if-cached`: a
//! holder answers from what it holds or 504 at once (a stale digest or a false positive
//! costs that one round trip), never fetching. Then the owner, then the origin.

use super::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use relay_cluster::digest::{Digest, MAX_DIGEST, PATH, name_hash};
use relay_cluster::peer::{FIELD, Signed, now_ms};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the members' records are looked at for a changed digest.
const LOOK: Duration = Duration::from_secs(2);
/// How often an unchanged digest is asked again (a 304), to keep its round trip current.
const REFRESH: Duration = Duration::from_secs(30);
/// The most holders asked for one chunk.
pub(crate) const MAX_HOLDERS: usize = 2;
/// How long a digest fetch may take, whole.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed fetch, a member's digest is not asked for again for this long, doubled
/// with each failure in a row up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The most bytes of the others' digests held at once; a digest past it is not kept.
const MAX_HELD: usize = 256 << 20;
/// How long a holder has to answer (from what it holds: no origin behind it).
const HOLDER_TIMEOUT: Duration = Duration::from_secs(1);

/// What is known of one member's digest.
struct Known {
    digest: Arc<Digest>,
    /// Smoothed time to the answer's head of its digest requests: its round trip, nearly.
    rtt: Duration,
    asked: Instant,
}

/// The members' digests, by their HTTP address.
#[derive(Default)]
pub(crate) struct Digests {
    by_peer: Mutex<HashMap<SocketAddr, Known>>,
    /// Members whose digest fetch failed: not asked again until then, and the backoff.
    failed: Mutex<HashMap<SocketAddr, (Instant, Duration)>>,
}

impl Digests {
    /// Up to [`MAX_HOLDERS`] members whose digest may hold the chunk named `hash`, nearest
    /// first, `skip` left out.
    pub(crate) fn holders(&self, hash: u64, skip: impl Fn(SocketAddr) -> bool) -> Vec<SocketAddr> {
        let map = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<(Duration, SocketAddr)> = map
            .iter()
            .filter(|(addr, k)| !skip(**addr) && k.digest.may_hold(hash))
            .map(|(addr, k)| (k.rtt, *addr))
            .collect();
        found.sort();
        found.truncate(MAX_HOLDERS);
        found.into_iter().map(|(_, a)| a).collect()
    }

    fn etag_of(&self, peer: SocketAddr) -> Option<(u64, Instant)> {
        let map = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&peer).map(|k| (k.digest.etag, k.asked))
    }

    /// Whether `peer`'s digest fetch failed lately (backing off).
    fn backing_off(&self, peer: SocketAddr) -> bool {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed
            .get(&peer)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    /// A fetch of `peer`'s digest failed: backs off, twice as long as the last time.
    fn failed(&self, peer: SocketAddr) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let backoff = failed
            .get(&peer)
            .map_or(FIRST_BACKOFF, |(_, b)| (*b * 2).min(MAX_BACKOFF));
        failed.insert(peer, (Instant::now() + backoff, backoff));
    }

    fn keep(&self, peer: SocketAddr, digest: Option<Digest>, rtt: Duration) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&peer);
        let mut map = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = &digest {
            let held: usize = map
                .iter()
                .filter(|(a, _)| **a != peer)
                .map(|(_, k)| k.digest.size())
                .sum();
            if held + d.size() > MAX_HELD {
                log::warn!(
                    "peer {peer}: its digest of {} bytes is not kept: the others' digests hold \
                     {held} bytes already",
                    d.size()
                );
                return;
            }
        }
        let now = Instant::now();
        match (map.get_mut(&peer), digest) {
            (Some(k), d) => {
                // 7/8 of the old and 1/8 of the new sample.
                k.rtt = (k.rtt * 7 + rtt) / 8;
                k.asked = now;
                if let Some(d) = d {
                    k.digest = Arc::new(d);
                }
            }
            (None, Some(d)) => {
                map.insert(
                    peer,
                    Known {
                        digest: Arc::new(d),
                        rtt,
                        asked: now,
                    },
                );
            }
            (None, None) => {}
        }
    }

    fn retain(&self, live: &[(SocketAddr, u64)]) {
        let mut map = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|addr, _| live.iter().any(|(a, _)| a == addr));
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.retain(|addr, _| live.iter().any(|(a, _)| a == addr));
    }
}

impl Context {
    /// Keeps the members' digests current, for the life of the upstream thread.
    pub(crate) async fn keep_digests(self) {
        let mut tick = tokio::time::interval(LOOK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(peers) = self.peers.get() else {
                continue;
            };
            let members = (peers.members)();
            self.digests.retain(&members);
            for (addr, etag) in members {
                if etag == 0 {
                    continue;
                }
                let due = match self.digests.etag_of(addr) {
                    None => true,
                    Some((known, asked)) => known != etag || asked.elapsed() >= REFRESH,
                };
                if due && !self.peer_shunned(addr) && !self.digests.backing_off(addr) {
                    self.fetch_digest(peers, addr).await;
                }
            }
        }
    }

    /// Asks `addr` for its digest (conditionally, when one is known).
    async fn fetch_digest(&self, peers: &crate::Peers, addr: SocketAddr) {
        let known = self.digests.etag_of(addr).map(|(e, _)| e);
        let host = addr.to_string();
        let signed = Signed {
            method: "GET",
            target: PATH,
            host: host.as_bytes(),
            range: b"",
        };
        let credentials = peers.key.sign(&peers.node, now_ms(), 1, &signed);
        let mut req = http::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = match format!("http://{addr}{PATH}").parse() {
            Ok(u) => u,
            Err(_) => return,
        };
        let h = req.headers_mut();
        let (Ok(host), Ok(creds)) = (
            http::HeaderValue::from_str(&host),
            http::HeaderValue::from_str(&credentials),
        ) else {
            return;
        };
        h.insert(http::header::HOST, host);
        h.insert(http::header::HeaderName::from_static(FIELD), creds);
        if let Some(etag) = known
            && let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag:016x}\""))
        {
            h.insert(http::header::IF_NONE_MATCH, v);
        }
        let started = Instant::now();
        let got = tokio::time::timeout(FETCH_TIMEOUT, async {
            let resp = self
                .peer_client
                .request(req)
                .await
                .map_err(|e| e.to_string())?;
            let rtt = started.elapsed();
            match resp.status().as_u16() {
                304 => Ok((None, rtt)),
                200 => {
                    let body = Limited::new(resp.into_body(), MAX_DIGEST)
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    let d = Digest::decode(&body).map_err(|e| e.to_string())?;
                    Ok((Some(d), rtt))
                }
                s => Err(format!("status {s}")),
            }
        })
        .await;
        match got {
            Ok(Ok((digest, rtt))) => {
                if let Some(d) = &digest {
                    self.stats.digests_fetched.fetch_add(1, Ordering::Relaxed);
                    log::debug!(
                        "peer {addr}: digest {:016x}, {} bytes, round trip {rtt:?}",
                        d.etag,
                        d.size()
                    );
                }
                self.digests.keep(addr, digest, rtt);
            }
            Ok(Err(why)) => {
                self.digests.failed(addr);
                log::debug!("peer {addr}: digest not fetched: {why}");
            }
            Err(_) => {
                self.digests.failed(addr);
                log::debug!("peer {addr}: digest not fetched within {FETCH_TIMEOUT:?}");
            }
        }
    }

    /// Asks the nearest relays whose digest names chunk `range` of `path` for it, each only
    /// for what it holds; the first whole answer (200 or 206).
    pub(super) async fn ask_holders(
        &self,
        origin: usize,
        route: &crate::PeerRoute,
        path: &str,
        range: (u64, u64),
        forward: &[(String, Vec<u8>)],
    ) -> Option<http::Response<Incoming>> {
        let peers = self.peers.get()?;
        if path.starts_with(relay_cluster::peer::RESERVED) {
            return None;
        }
        let index = range.0 / self.store.layout.chunk_size();
        let name = super::peer::chunk_name_of(route, path, index);
        let holders = self
            .digests
            .holders(name_hash(&name), |a| self.peer_shunned(a));
        let first_byte = Duration::from_millis(self.origins[origin].config.first_byte_timeout_ms)
            .min(HOLDER_TIMEOUT);
        for holder in holders {
            let mut req =
                super::peer::peer_request(peers, holder, route, path, Some(range), None, forward)?;
            let h = req.headers_mut();
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("only-if-cached"),
            );
            match tokio::time::timeout(first_byte, self.peer_client.request(req)).await {
                Ok(Ok(resp)) if matches!(resp.status().as_u16(), 200 | 206) => {
                    self.stats.holder_hits.fetch_add(1, Ordering::Relaxed);
                    return Some(resp);
                }
                Ok(Ok(resp)) => {
                    log::debug!(
                        "holder {holder}: {path} chunk {index}: status {}",
                        resp.status().as_u16()
                    );
                    self.stats.holder_misses.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    self.stats.holder_misses.fetch_add(1, Ordering::Relaxed);
                    if self.shun_peer(holder) {
                        log::warn!("holder {holder}: no answer; passed over for a while");
                    }
                }
            }
        }
        None
    }
}

//! The upstream thread's jobs: a head fetch ([`head`]), a chunk fill ([`chunk`]) and a
//! pass-through ([`pass`]). Each sends its request through the one retry loop
//! ([`request`]), checks the response head, and streams the body ([`body`]) into fills or a
//! pass-through's stream, waking waiting workers as bytes land. This module holds what they
//! share: the [`Context`], the dispatch ([`run`]), failing fills and waking workers, and the
//! end-to-end header fields relayed to clients.

mod ahead;
mod body;
mod chunk;
mod digests;
mod head;
mod pass;
mod peer;
mod request;

use crate::{Job, Origin, Store, UpstreamStats};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relay_cache::fill::{FillError, FillWriter};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a connection to another relay of the site may take before the origin is asked
/// instead.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How the pooled client reaches an origin: TCP, TLS for `https`, within the connect timeout.
type OriginConnector = crate::tls::Timed<hyper_rustls::HttpsConnector<HttpConnector>>;

/// Everything a job needs; cheap to clone into each task.
#[derive(Clone)]
pub(crate) struct Context {
    origins: Arc<Vec<Origin>>,
    clients: Arc<Vec<Client<OriginConnector, Full<Bytes>>>>,
    store: Store,
    epoch: Instant,
    stats: Arc<UpstreamStats>,
    writer: Option<crate::disk_writer::DiskWriter>,
    /// Bytes of passed-through bodies held now, bounded by `origin.pass_buffer_bytes`:
    /// each stays in memory until its client has read it, and any client can make a GET
    /// pass through (with `Authorization`), so this is what bounds their memory.
    pass_budget: Arc<crate::budget::Budget>,
    /// The site's other relays (set once the cluster is joined), and the client misses go
    /// to them through.
    peers: Arc<std::sync::OnceLock<crate::Peers>>,
    peer_client: Client<HttpConnector, Full<Bytes>>,
    /// The other relays' digests (`digests`).
    digests: Arc<digests::Digests>,
    /// Peers that failed to answer, passed over until then (`peer`).
    shunned: Arc<std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, Instant>>>,
}

impl Context {
    pub(crate) fn new(
        origins: Arc<Vec<Origin>>,
        store: Store,
        epoch: Instant,
        stats: Arc<UpstreamStats>,
        writer: Option<crate::disk_writer::DiskWriter>,
        pass_budget: Arc<crate::budget::Budget>,
        peers: Arc<std::sync::OnceLock<crate::Peers>>,
    ) -> Context {
        // Clients are built lazily inside the runtime (`run`); this holds the pools.
        Context {
            origins,
            clients: Arc::new(Vec::new()),
            store,
            epoch,
            stats,
            writer,
            pass_budget,
            peers,
            shunned: Arc::default(),
            digests: Arc::default(),
            peer_client: {
                let mut conn = HttpConnector::new();
                conn.set_connect_timeout(Some(PEER_CONNECT_TIMEOUT));
                conn.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .http1_max_buf_size(crate::UPSTREAM_READ_BUFFER)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(conn)
            },
        }
    }
}

impl Context {
    /// Origin `origin`'s active health check, for as long as the upstream runs: every
    /// interval, each server asked `GET path` through the pool's client (its connections
    /// reused, TLS for https); an answer below 400 within the timeout passes.
    async fn check_health(self, origin: usize) {
        let o = &self.origins[origin];
        let Some(check) = o.config.health_check.clone() else {
            return;
        };
        let timeout = Duration::from_millis(check.timeout_ms);
        let mut tick = tokio::time::interval(Duration::from_millis(check.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Every server at once: a round takes one timeout at most, however many there are.
            let mut round = tokio::task::JoinSet::new();
            for server in (0..o.servers.len()).filter(|&s| o.address(s).is_some()) {
                let ctx = self.clone();
                let check = check.clone();
                round.spawn(async move { ctx.check_server(origin, server, &check, timeout).await });
            }
            while round.join_next().await.is_some() {}
        }
    }

    /// One health check of server `server` of origin `origin`.
    async fn check_server(
        &self,
        origin: usize,
        server: usize,
        check: &relay_config::HealthCheck,
        timeout: Duration,
    ) {
        let o = &self.origins[origin];
        let req = http::Request::get(o.uri(server, &check.path))
            .header(http::header::HOST, &o.config.authority)
            .header(http::header::USER_AGENT, "relay health check")
            .body(Full::new(Bytes::new()));
        let Ok(req) = req else {
            return;
        };
        let asked = async {
            let resp = self.clients[origin]
                .request(req)
                .await
                .map_err(|e| request::deepest_cause(&e))?;
            let status = resp.status().as_u16();
            // (Read to its end, at most 64 KiB, so the connection is reused.)
            let body = http_body_util::Limited::new(resp.into_body(), 64 << 10);
            let _ = http_body_util::BodyExt::collect(body).await;
            match status {
                ..400 => Ok(()),
                s => Err(format!("status {s}")),
            }
        };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(())) => o.checked(server, true, ""),
            Ok(Err(why)) => o.checked(server, false, &why),
            Err(_) => {
                let why = format!("no answer within {} ms", check.timeout_ms);
                o.checked(server, false, &why);
            }
        }
    }
}

/// The upstream thread's loop: one task per job.
pub(crate) async fn run(mut ctx: Context, mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    ctx.clients = Arc::new(
        ctx.origins
            .iter()
            .map(|o| {
                let connect = Duration::from_millis(o.config.connect_timeout_ms);
                let mut conn = HttpConnector::new();
                conn.set_connect_timeout(Some(connect));
                conn.set_nodelay(true);
                // (`https` URIs pass the TCP connector to TLS.)
                conn.enforce_http(false);
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(o.config.max_connections)
                    .http1_max_buf_size(crate::UPSTREAM_READ_BUFFER)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(crate::tls::Tls::connector(
                        o.tls.as_ref(),
                        conn,
                        connect,
                        o.strays.clone(),
                    ))
            })
            .collect(),
    );
    tokio::spawn(ctx.clone().keep_digests());
    for origin in 0..ctx.origins.len() {
        if ctx.origins[origin].config.health_check.is_some() {
            tokio::spawn(ctx.clone().check_health(origin));
        }
    }
    while let Some(job) = rx.recv().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match job {
                Job::Head(request) => {
                    let Some(_fetching) = ctx.fetch_slot(request.origin).await else {
                        let e = ctx.slot_timeout(request.origin);
                        return ctx.head_failed(&request.object, e);
                    };
                    ctx.head(request).await
                }
                Job::Chunk(request) => ctx.run_chunk(request).await,
                Job::Stream(request) => ctx.run_stream(request).await,
                Job::Pass(request) => ctx.pass(request).await,
            }
        });
    }
}

impl Context {
    /// One of the origin's fetch slots ([`Origin::fetches`]), held until dropped; None when
    /// none came free within the origin's `first_byte_timeout_ms` (the fetch fails as a
    /// first-byte timeout would: its clients get 504, or are cut mid-body).
    async fn fetch_slot(&self, origin: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let o = &self.origins[origin];
        let wait = Duration::from_millis(o.config.first_byte_timeout_ms);
        match o.fetches.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                self.stats.fetch_slot_waits.fetch_add(1, Ordering::Relaxed);
                // Counted while it waits, however the wait ends.
                struct Waiting<'a>(&'a std::sync::atomic::AtomicU64);
                impl Drop for Waiting<'_> {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                o.slot_waiters.fetch_add(1, Ordering::AcqRel);
                let _waiting = Waiting(&o.slot_waiters);
                tokio::time::timeout(wait, o.fetches.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()
            }
        }
    }

    /// A chunk job, once one of the origin's fetch slots is free.
    async fn run_chunk(&self, request: crate::ChunkRequest) {
        let Some(_fetching) = self.fetch_slot(request.origin).await else {
            let e = self.slot_timeout(request.origin);
            return self.fail(request.writer, e);
        };
        self.chunk(request).await
    }

    fn slot_timeout(&self, origin: usize) -> FillError {
        self.stats
            .fetch_slot_timeouts
            .fetch_add(1, Ordering::Relaxed);
        let ms = self.origins[origin].config.first_byte_timeout_ms;
        FillError::timeout(relay_cache::fill::Wait::FirstByte, ms)
    }

    fn head_failed(&self, object: &str, e: FillError) {
        self.store
            .inflight
            .finish_head(object, Err(e), None, &self.store.wakers);
    }

    /// `version` of `object` is no longer its origin's (an answer of another version, or a
    /// 416: it shrank): its description goes, and so do its chunks on disk, from which the
    /// next request would describe it again (and be cut again where its chunks end, for as
    /// long as it is fresh). A description of another version, made since, stays.
    fn changed(&self, object: &Arc<str>, version: u64) {
        if self
            .store
            .meta
            .get(object)
            .is_some_and(|m| m.version == version)
        {
            self.store.meta.remove(object);
        }
        if let Some(disk) = self.store.disk.as_ref() {
            disk.remove_named(relay_cache::disk::Removal::Version(
                object.as_ref().into(),
                version,
            ));
        }
    }

    fn fail(&self, writer: FillWriter, e: FillError) {
        writer.fail(e);
        let fill = writer.fill().clone();
        self.store.inflight.end_fill(&fill);
        drop(writer);
        self.store.wakers.wake(&fill.watchers);
    }
}

pub(crate) fn unix_now() -> u64 {
    relay_cache::policy::unix_seconds(std::time::SystemTime::now())
}

/// Response fields relay writes itself for a stored response (from the stored description).
const STORED_WRITTEN: &[&str] = &[
    "content-length",
    "content-range",
    "content-type",
    "date",
    "age",
    "etag",
    "last-modified",
    "accept-ranges",
    "server",
    "cache-status",
];

/// The origin's header fields a client should see, encoded once: hop-by-hop fields, those
/// `Connection` names, and the ones relay writes itself (`own`) are left out.
fn end_to_end(h: &http::HeaderMap, own: &[&str]) -> Bytes {
    let named: Vec<String> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    for (name, value) in h {
        let n = name.as_str();
        // (Relay-Chunk-Sum names one answer's chunk between relays: never stored or passed
        // on, whoever sent it.)
        if relay_proto::HOP_BY_HOP.contains(&n)
            || own.contains(&n)
            || named.iter().any(|c| c == n)
            || n.eq_ignore_ascii_case(relay_cluster::peer::CHUNK_SUM)
        {
            continue;
        }
        // hyper has already refused CR/LF in values; keep the check local anyway.
        if value.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n') {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // An allocation of their exact length (a Vec grown line by line holds up to twice its
    // length): stored fields are weighed by it in the meta cache.
    Bytes::from(out.into_boxed_slice())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pass::PASS_WRITTEN;

    /// Client request fields as a fetch carries them, from (name, value) pairs.
    pub(crate) fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_passed_response_keeps_what_a_stored_one_rewrites() {
        let mut h = http::HeaderMap::new();
        for (n, v) in [
            ("content-length", "10"),
            ("content-range", "bytes 0-9/20"),
            ("etag", "\"e\""),
            ("date", "x"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-kept", "2"),
        ] {
            h.append(
                http::header::HeaderName::from_static(n),
                http::HeaderValue::from_static(v),
            );
        }
        let stored = end_to_end(&h, STORED_WRITTEN);
        assert_eq!(&stored[..], b"x-kept: 2\r\n");
        let passed = end_to_end(&h, PASS_WRITTEN);
        assert_eq!(
            &passed[..],
            b"content-range: bytes 0-9/20\r\netag: \"e\"\r\nx-kept: 2\r\n"
        );
    }
}

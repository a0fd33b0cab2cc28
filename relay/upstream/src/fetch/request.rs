//! Every job's request goes through one retry loop ([`retrying`]): an attempt that got no
//! response head back (no connection, a broken one, no head before the first-byte timeout,
//! an answer that is not HTTP) is sent again after a backoff, up to the job's number of
//! retries, unless the origin has been marked down meanwhile. A response, whatever its
//! status, ends the loop; so does a request that could not be made.
//!
//! Only connections not made speak of the origin ([`Failure::Unreachable`]: refused or
//! timed out connecting, a TLS handshake refused): a request that failed that way counts
//! once against its origin's health however many attempts it made, and
//! `down_after_failures` such requests in a row mark the origin down. A first-byte timeout,
//! a connection closed before a head, a garbage answer or a 5xx fails that request only:
//! any client can ask for a slow or broken URL, and one URL must not take the origin down
//! for every client. Any response head clears the count. Also a fill's request ([`fill_request`]).

use super::Context;
use crate::upload::{Upload, UploadBody};
use crate::{Origin, UpstreamStats};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use relay_cache::ObjectMeta;
use relay_cache::fill::{FillError, Wait};
use relay_cache::inflight::Pending;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// A streamed upload's own connection to its origin ([`Context::send_upload`]), running as
/// a task beside the request: aborted (its socket closed) when this drops, once the answer
/// has been read or given up.
pub(super) struct UploadConn(tokio::task::JoinHandle<()>);

impl Drop for UploadConn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The send buffer of a streamed upload's connection (the kernel doubles it).
const UPLOAD_SNDBUF: usize = 128 << 10;

/// relay's `Via` entry on requests to origins (protocol version and pseudonym).
pub(super) const VIA: &str = "1.1 relay";

/// Why one attempt brought no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The request could not be made; nothing was sent, and nothing is retried.
    Refused(FillError),
    /// The origin could not be reached (refused, timed out connecting, a TLS handshake
    /// refused), which counts against the origin's health. The request may be sent again.
    Unreachable(FillError),
    /// Sent, and no usable head came back (the connection reset or closed first, none
    /// before the first-byte timeout, or an answer that is not HTTP): this request's
    /// failure, not the origin's. The request may be sent again (it reached no one, or an
    /// idempotent method allows it).
    NoAnswer(FillError),
}

/// The innermost cause of `e` (what went wrong, under hyper's own wrapping).
pub(super) fn deepest_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut why = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    why
}

/// What a failed `client.request` says: the origin unreachable (a connect error: refused,
/// timed out, a TLS handshake refused), or only this request unanswered (the connection
/// reset or closed before a head, an answer hyper could not parse, or anything else it
/// reports). A server that took the connection is up: one URL whose handler dies (a
/// crashed worker closes its connection unanswered) must not take the origin down for
/// every URL, which any client could then do; a server that is going away is marked down
/// by the connections it then refuses.
fn failure(e: &hyper_util::client::legacy::Error) -> Failure {
    if e.is_connect() {
        return Failure::Unreachable(match tls_refused(e) {
            true => FillError::Tls,
            false => FillError::Connect,
        });
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() {
                return Failure::NoAnswer(FillError::Malformed);
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return Failure::NoAnswer(FillError::Closed);
            }
        }
        // (A connection the stray-bytes guard dropped is one of these too.)
        if s.is::<std::io::Error>() {
            return Failure::NoAnswer(FillError::Closed);
        }
        source = s.source();
    }
    Failure::NoAnswer(FillError::Connect)
}

/// Whether a connect error is a TLS handshake that failed (a certificate refused, a name
/// that does not match): a rustls error among its sources.
fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return true;
        }
        // (An I/O error's `source` skips the error it wraps; hyper-rustls wraps rustls's
        // in two.)
        source = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    false
}

/// After attempt `attempt` (0: the first) brought nothing back: how long to wait before the
/// next one, or None to give up (`retries` spent, or the origin is marked down).
fn backoff(attempt: u32, retries: u32, origin_down: bool) -> Option<Duration> {
    (attempt < retries && !origin_down).then(|| Duration::from_millis(25 << (attempt + 1).min(6)))
}

/// The retry loop: runs `attempt` until it brings a response, could not make its request,
/// or failed `retries + 1` times (fewer when the origin is marked down meanwhile, or no
/// server is left that did not let this request's first-byte timeout pass). An origin
/// already down is not asked at all ([`FillError::Down`]). Each failed attempt counts in
/// `stats.errors`, each retry in `stats.retries`; a request that failed, and failed to
/// reach the origin on any of its attempts, counts once against the origin's health. A
/// response clears it.
async fn retrying<T, F>(
    origin: &Origin,
    epoch: Instant,
    stats: &UpstreamStats,
    retries: u32,
    mut attempt: impl FnMut(usize) -> F,
) -> Result<T, FillError>
where
    F: Future<Output = Result<T, Failure>>,
{
    let Some(mut server) = origin.pick(epoch, 0) else {
        return Err(FillError::Down);
    };
    let bit = crate::server_bit;
    let mut n = 0;
    // The servers this request could not reach (a bit each): each counts once against its
    // health when the request ends, unless it answered after all.
    let mut unreachable = 0u64;
    // The servers that let this request's first-byte timeout pass: a slow URL is slow again
    // on the same server, and asking it again would add to the load of a server already
    // behind; the request goes on to another server only (nginx's `proxy_next_upstream
    // timeout` does the same; Varnish retries no timeout).
    let mut slow = 0u64;
    let settle = |unreachable: u64| {
        for s in (0..64).filter(|&s| unreachable & bit(s) != 0) {
            origin.failed(s, epoch);
        }
    };
    loop {
        let err = match attempt(server).await {
            Ok(answer) => {
                origin.succeeded(server);
                settle(unreachable & !bit(server));
                return Ok(answer);
            }
            Err(Failure::Refused(e)) => return Err(e),
            Err(Failure::Unreachable(e)) => {
                unreachable |= bit(server);
                e
            }
            Err(Failure::NoAnswer(e)) => {
                if matches!(
                    e,
                    FillError::Timeout {
                        wait: Wait::FirstByte,
                        ..
                    }
                ) {
                    slow |= bit(server);
                }
                e
            }
        };
        stats.errors.fetch_add(1, Ordering::Relaxed);
        // Not sent at all (no connection): another server is asked at once, whatever the
        // method and its retries (each server once).
        if matches!(err, FillError::Connect | FillError::Tls)
            && unreachable & bit(server) != 0
            && let Some(other) = origin.pick_other(epoch, unreachable)
        {
            server = other;
            continue;
        }
        // The next attempt goes to a server this request has not failed on, when one is up.
        let next = backoff(n, retries, origin.is_down(epoch)).and_then(|wait| {
            let other = match slow {
                0 => origin.pick(epoch, unreachable | bit(server)),
                _ => origin
                    .pick_other(epoch, unreachable | bit(server) | slow)
                    .or_else(|| origin.pick_among(epoch, |s| slow & bit(s) == 0)),
            };
            Some((wait, other?))
        });
        let Some((wait, other)) = next else {
            settle(unreachable);
            return Err(err);
        };
        server = other;
        n += 1;
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

impl Context {
    /// Sends the request `build` makes to `origin` through [`retrying`]; returns the
    /// response once its head arrived (within the origin's first-byte timeout).
    pub(super) async fn send(
        &self,
        origin: usize,
        retries: u32,
        build: impl Fn(usize) -> Result<http::Request<Full<Bytes>>, FillError>,
    ) -> Result<http::Response<Incoming>, FillError> {
        let o = &self.origins[origin];
        let client = &self.clients[origin];
        let first_byte = Duration::from_millis(o.config.first_byte_timeout_ms);
        let (build, stats) = (&build, &self.stats);
        retrying(o, self.epoch, stats, retries, move |server| async move {
            let mut req = build(server).map_err(Failure::Refused)?;
            if o.strays.suspect() {
                // (`crate::stray`: its answers may carry another after them.)
                req.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match tokio::time::timeout(first_byte, client.request(req)).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => {
                    let f = failure(&e);
                    if !e.is_connect() {
                        log::warn!("origin {}: {e} ({f:?})", o.config.authority);
                    } else if o.tls.is_some() {
                        // Why a TLS connection failed (a certificate refused, a name that
                        // does not match) is in the error's sources.
                        let why = deepest_cause(&e);
                        log::warn!("origin {}: cannot connect: {why}", o.config.authority);
                    }
                    Err(f)
                }
                // A slow URL, not a slow origin: this request's failure only.
                Err(_) => Err(Failure::NoAnswer(FillError::timeout(
                    Wait::FirstByte,
                    o.config.first_byte_timeout_ms,
                ))),
            }
        })
        .await
    }

    /// Sends a request whose body is streamed as its client sends it (`upload`), once (its
    /// bytes are gone once sent), on a connection of its own rather than the pool's: the
    /// connection is aborted when the returned [`UploadConn`] drops, which is what frees
    /// the body and whatever hyper holds of it when the origin stops reading (hyper, stuck
    /// writing, would never poll the failed body again). An answer may come before the
    /// body is all sent (say, a 413); otherwise the first-byte timeout starts once it is,
    /// however long its client took (the worker holds the client to its own deadlines). A
    /// body that ends short (its client left or was cut) ends the request. Only a failure
    /// to connect counts against the origin's health.
    pub(super) async fn send_upload(
        &self,
        origin: usize,
        mut req: http::Request<UploadBody>,
        upload: &Arc<Upload>,
    ) -> Result<(http::Response<Incoming>, UploadConn), FillError> {
        let o = &self.origins[origin];
        // On a connection of its own, the target goes in origin-form (the pooled client
        // rewrites it so itself).
        if let Some(pq) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = http::Uri::from(pq);
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let fail = |e: FillError| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            e
        };
        let connect = Duration::from_millis(o.config.connect_timeout_ms);
        // A server that takes no connection: the next one is tried (nothing was sent).
        let mut refused = 0u64;
        let (server, stream) = loop {
            let picked = match refused {
                0 => o.pick(self.epoch, 0),
                _ => o.pick_other(self.epoch, refused),
            };
            let Some(server) = picked else {
                return Err(match refused {
                    0 => FillError::Down,
                    _ => fail(FillError::Connect),
                });
            };
            let Some(address) = o.address(server) else {
                // (Its name's address went between the pick and now.)
                refused |= crate::server_bit(server);
                continue;
            };
            match tokio::time::timeout(connect, TcpStream::connect(address)).await {
                Ok(Ok(s)) => break (server, s),
                _ => {
                    o.failed(server, self.epoch);
                    refused |= crate::server_bit(server);
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // A small send buffer: what the kernel holds of the body on relay's side stays
        // near one window, so "sent" (below, when the first-byte timeout starts) is close
        // to what the origin has taken. (What the origin's own socket holds unread is the
        // origin's to answer for.)
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(UPLOAD_SNDBUF);
        let mut http1 = hyper::client::conn::http1::Builder::new();
        http1.max_buf_size(crate::UPSTREAM_READ_BUFFER);
        // An https origin: TLS first, within the connect timeout (a certificate refused
        // counts against the origin like a refused connection).
        let (mut sender, conn) = match o.tls.as_ref() {
            Some(tls) => {
                let stream = match tokio::time::timeout(connect, tls.connect(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) if tls_refused(&e) => {
                        log::warn!("origin {}: TLS handshake failed: {e}", o.config.authority);
                        o.failed(server, self.epoch);
                        return Err(fail(FillError::Tls));
                    }
                    _ => {
                        o.failed(server, self.epoch);
                        return Err(fail(FillError::Connect));
                    }
                };
                let (sender, conn) = http1
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|_| fail(FillError::Closed))?;
                (sender, tokio::spawn(async move { drop(conn.await) }))
            }
            None => {
                let (sender, conn) = http1
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|_| fail(FillError::Closed))?;
                (sender, tokio::spawn(async move { drop(conn.await) }))
            }
        };
        let conn = UploadConn(conn);
        let request = sender.send_request(req);
        tokio::pin!(request);
        let sent = std::future::poll_fn(|cx| upload.poll_sent(cx));
        let answer = tokio::select! {
            answer = &mut request => Some(answer),
            () = sent => None,
        };
        let answer = match answer {
            Some(a) => a,
            // The client's body ended short: nothing for the origin to answer.
            None if upload.failed() => return Err(FillError::Closed),
            None => {
                let first_byte = Duration::from_millis(o.config.first_byte_timeout_ms);
                match tokio::time::timeout(first_byte, request).await {
                    Ok(a) => a,
                    Err(_) => {
                        return Err(fail(FillError::timeout(
                            Wait::FirstByte,
                            o.config.first_byte_timeout_ms,
                        )));
                    }
                }
            }
        };
        match answer {
            Ok(resp) => {
                o.succeeded(server);
                Ok((resp, conn))
            }
            Err(e) => {
                log::warn!("origin {}: upload: {e}", o.config.authority);
                Err(fail(match e.is_parse() {
                    true => FillError::Malformed,
                    false => FillError::Closed,
                }))
            }
        }
    }

    /// Sends a fill's `GET path` with `Range: bytes=start-end` (None: the whole body) and
    /// the client's `forward` fields ([`fill_request`]), retried as the origin's config says
    /// (a GET is idempotent). A 5xx answer counts in `stats.errors`, but not against the
    /// origin's health: it came from a reachable origin.
    pub(super) async fn send_fill(
        &self,
        origin: usize,
        path: &str,
        range: Option<(u64, u64)>,
        validate: Option<&ObjectMeta>,
        forward: &[(String, Vec<u8>)],
        hints: Option<&Arc<Pending>>,
    ) -> Result<http::Response<Incoming>, FillError> {
        let o = &self.origins[origin];
        let build = |server| {
            let uri: http::Uri = o
                .uri(server, path)
                .parse()
                .map_err(|_| FillError::Connect)?;
            let mut req = fill_request(uri, &o.config.authority, range, validate, forward)?;
            if let Some(p) = hints {
                self.on_hints(&mut req, p);
            }
            Ok(req)
        };
        let resp = self.send(origin, o.config.retries, build).await?;
        if resp.status().is_server_error() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        Ok(resp)
    }
}

impl Context {
    /// Has the origin's `103 Early Hints` to `req` (the first one) kept with the head fetch
    /// `pending`, and its waiting clients woken to send it on (RFC 8297). Interim answers
    /// other than 103 are hyper's (100) or ignored.
    fn on_hints(&self, req: &mut http::Request<Full<Bytes>>, pending: &Arc<Pending>) {
        let wakers = self.store.wakers.clone();
        // Weak: the connection may keep the callback past the fetch, and a fetch's readers
        // are counted by the references to its `Pending`.
        let pending = Arc::downgrade(pending);
        hyper::ext::on_informational(req, move |res| {
            let Some(pending) = pending.upgrade() else {
                return;
            };
            if res.status() != http::StatusCode::EARLY_HINTS {
                return;
            }
            let mut out = b"HTTP/1.1 103 Early Hints\r\n".to_vec();
            out.extend_from_slice(&super::end_to_end(res.headers(), &[]));
            out.extend_from_slice(b"\r\n");
            if pending.set_hints(Bytes::from(out)) {
                wakers.wake(&pending.watchers);
            }
        });
    }
}

/// The request of a fill: the client's `forward` fields first, then relay's own — Host,
/// `Range: bytes=start-end` (when asked for), `Accept-Encoding: identity` and the stored validators —
/// replacing any of the same name; `User-Agent: relay` only when the client sent none.
/// Fields `http` refuses are left out rather than failing the fetch.
pub(super) fn fill_request(
    uri: http::Uri,
    authority: &str,
    range: Option<(u64, u64)>,
    validate: Option<&ObjectMeta>,
    forward: &[(String, Vec<u8>)],
) -> Result<http::Request<Full<Bytes>>, FillError> {
    use http::header::{self, HeaderName, HeaderValue};
    let value = |v: &str| HeaderValue::from_str(v).map_err(|_| FillError::Connect);
    let mut req = http::Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (n, v) in forward {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            h.append(n, v);
        }
    }
    if !h.contains_key(header::USER_AGENT) {
        h.insert(header::USER_AGENT, HeaderValue::from_static("relay"));
    }
    // RFC 9110 §7.6.3: a gateway names itself in every request it forwards, after any
    // intermediaries the client's request already passed.
    h.append(header::VIA, HeaderValue::from_static(VIA));
    h.insert(header::HOST, value(authority)?);
    match range {
        Some((start, end)) => {
            h.insert(header::RANGE, value(&format!("bytes={start}-{end}"))?);
        }
        None => {
            h.remove(header::RANGE);
        }
    }
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        h.remove(&name);
    }
    if let Some(m) = validate {
        if !m.etag.is_empty() {
            h.insert(header::IF_NONE_MATCH, value(&m.etag)?);
        }
        if !m.last_modified.is_empty() {
            h.insert(header::IF_MODIFIED_SINCE, value(&m.last_modified)?);
        }
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::tests::fields;

    fn values<'a>(req: &'a http::Request<Full<Bytes>>, name: &str) -> Vec<&'a [u8]> {
        req.headers()
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes())
            .collect()
    }

    fn request(
        validate: Option<&ObjectMeta>,
        forward: &[(String, Vec<u8>)],
    ) -> http::Request<Full<Bytes>> {
        let uri: http::Uri = "http://10.0.0.1:8080/a?b=1".parse().expect("uri");
        fill_request(uri, "origin.example", Some((0, 65535)), validate, forward).expect("request")
    }

    #[test]
    fn a_fill_sends_the_clients_fields_and_relays_own() {
        let forward = fields(&[
            ("User-Agent", "agent/1"),
            ("Cookie", "a=1"),
            ("cookie", "b=2"),
            ("X-Custom", "kept"),
            ("Accept-Language", "fr"),
        ]);
        let req = request(None, &forward);
        assert_eq!(req.uri(), "http://10.0.0.1:8080/a?b=1");
        assert_eq!(values(&req, "user-agent"), [&b"agent/1"[..]]);
        assert_eq!(values(&req, "cookie"), [&b"a=1"[..], b"b=2"]);
        assert_eq!(values(&req, "x-custom"), [&b"kept"[..]]);
        assert_eq!(values(&req, "accept-language"), [&b"fr"[..]]);
        assert_eq!(values(&req, "host"), [&b"origin.example"[..]]);
        assert_eq!(values(&req, "range"), [&b"bytes=0-65535"[..]]);
        assert_eq!(values(&req, "accept-encoding"), [&b"identity"[..]]);
        assert!(values(&req, "if-none-match").is_empty());
        assert_eq!(values(&req, "via"), [&b"1.1 relay"[..]]);
        // After the intermediaries the client's request passed.
        let req = request(None, &fields(&[("Via", "1.1 edge-a")]));
        assert_eq!(values(&req, "via"), [&b"1.1 edge-a"[..], b"1.1 relay"]);
    }

    #[test]
    fn relays_own_fields_replace_any_the_client_list_carries() {
        // FILL_OWN keeps these out already; the request builder does not rely on it.
        let forward = fields(&[
            ("Host", "client.example"),
            ("Range", "bytes=5-9"),
            ("Accept-Encoding", "gzip"),
            ("If-None-Match", "\"client\""),
        ]);
        let mut meta = ObjectMeta::file(10, 1, "\"stored\"".into(), String::new());
        meta.last_modified = "Sun, 06 Nov 1994 08:49:37 GMT".into();
        let req = request(Some(&meta), &forward);
        assert_eq!(values(&req, "host"), [&b"origin.example"[..]]);
        assert_eq!(values(&req, "range"), [&b"bytes=0-65535"[..]]);
        assert_eq!(values(&req, "accept-encoding"), [&b"identity"[..]]);
        assert_eq!(values(&req, "if-none-match"), [&b"\"stored\""[..]]);
        assert_eq!(
            values(&req, "if-modified-since"),
            [&b"Sun, 06 Nov 1994 08:49:37 GMT"[..]]
        );
        let req = request(None, &forward);
        assert!(values(&req, "if-none-match").is_empty());
    }

    #[test]
    fn without_a_client_user_agent_relay_names_itself_and_bad_fields_are_skipped() {
        let forward = fields(&[("Bad Name", "x"), ("X-Ctl", "a\u{7f}b"), ("X-Ok", "ok")]);
        let req = request(None, &forward);
        assert_eq!(values(&req, "user-agent"), [&b"relay"[..]]);
        assert_eq!(values(&req, "x-ok"), [&b"ok"[..]]);
        assert!(values(&req, "x-ctl").is_empty());
        assert_eq!(req.headers().len(), 6, "{:?}", req.headers());
    }

    fn origin(retries: u32, down_after_failures: u32) -> Origin {
        pool(&[(1, false)], retries, down_after_failures)
    }

    /// An origin of servers with these (weight, backup).
    fn pool(servers: &[(u32, bool)], retries: u32, down_after_failures: u32) -> Origin {
        Origin::new(relay_config::HttpOrigin {
            servers: servers
                .iter()
                .enumerate()
                .map(|(i, &(weight, backup))| relay_config::OriginServer {
                    name: format!("s{i}"),
                    host: relay_config::ServerHost::Address(
                        format!("127.0.0.{}:9", i + 1).parse().expect("address"),
                    ),
                    weight,
                    backup,
                })
                .collect(),
            authority: "origin.example".into(),
            tls: None,
            health_check: None,
            cache: Default::default(),
            host: None,
            prefix: "/".into(),
            connect_timeout_ms: 100,
            first_byte_timeout_ms: 100,
            idle_timeout_ms: 100,
            retries,
            down_after_failures,
            down_ms: 60_000,
            max_connections: 1,
        })
    }

    #[test]
    fn whole_slots_are_half_the_fetch_slots_and_come_back() {
        let mut o = origin(0, 1);
        assert!(o.whole_slot().is_some(), "one at least, of one connection");
        o.config.max_connections = 5;
        let held: Vec<_> = (0..2).map(|_| o.whole_slot().expect("a slot")).collect();
        assert!(o.whole_slot().is_none(), "two of five");
        drop(held);
        assert!(o.whole_slot().is_some(), "given back");
    }

    /// Runs the retry loop over attempts that fail as `outcomes` say (then answer); returns
    /// its result and how many attempts it made.
    fn run(
        o: &Origin,
        stats: &UpstreamStats,
        outcomes: &[Failure],
    ) -> (Result<u32, FillError>, u32) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let mut made = 0u32;
        let r = rt.block_on(retrying(o, Instant::now(), stats, o.config.retries, |_| {
            made += 1;
            let outcome = match outcomes.get(made as usize - 1) {
                Some(&f) => Err(f),
                None => Ok(made),
            };
            async move { outcome }
        }));
        (r, made)
    }

    fn counted(stats: &UpstreamStats) -> (u64, u64) {
        (
            stats.errors.load(Ordering::Relaxed),
            stats.retries.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn backoff_doubles_from_50_ms_up_to_1600_ms_while_retries_last() {
        let waits: Vec<Option<u64>> = (0..8)
            .map(|n| backoff(n, 7, false).map(|d| d.as_millis() as u64))
            .collect();
        assert_eq!(
            waits,
            [50, 100, 200, 400, 800, 1600, 1600]
                .map(Some)
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
        assert_eq!(backoff(0, 0, false), None);
        assert_eq!(
            backoff(0, 3, true),
            None,
            "a down origin is not asked again"
        );
    }

    #[test]
    fn a_request_that_got_nothing_back_is_sent_again_up_to_its_retries() {
        use Failure::{NoAnswer, Unreachable};
        // Connection failures, first-byte timeouts and garbage alike; the last error is
        // returned.
        let o = origin(2, 100);
        let stats = UpstreamStats::default();
        let fails = [
            Unreachable(FillError::Connect),
            NoAnswer(FillError::Truncated),
            NoAnswer(FillError::timeout(Wait::FirstByte, 100)),
        ];
        assert_eq!(
            run(&o, &stats, &fails),
            (Err(FillError::timeout(Wait::FirstByte, 100)), 3)
        );
        assert_eq!(counted(&stats), (3, 2));
        // An answer on a retry ends the loop.
        let stats = UpstreamStats::default();
        let (r, made) = run(&o, &stats, &fails[..2]);
        assert_eq!((r, made), (Ok(3), 3));
        assert_eq!(counted(&stats), (2, 2));
        // Without retries (a pass-through of a method that is not idempotent): once.
        let o = origin(0, 100);
        let stats = UpstreamStats::default();
        assert_eq!(run(&o, &stats, &fails), (Err(FillError::Connect), 1));
        assert_eq!(counted(&stats), (1, 0));
    }

    #[test]
    fn a_request_that_could_not_be_made_is_neither_retried_nor_counted() {
        let o = origin(2, 1);
        let stats = UpstreamStats::default();
        let refused = [Failure::Refused(FillError::Status(400))];
        assert_eq!(run(&o, &stats, &refused), (Err(FillError::Status(400)), 1));
        assert_eq!(counted(&stats), (0, 0));
        assert!(
            !o.is_down(Instant::now()),
            "the origin's health is untouched"
        );
    }

    #[test]
    fn requests_that_reach_no_origin_mark_it_down_each_counting_once() {
        // Three attempts each, two requests: down after the second, not the first.
        let o = origin(2, 2);
        let stats = UpstreamStats::default();
        let fails = [Failure::Unreachable(FillError::Connect); 3];
        assert_eq!(run(&o, &stats, &fails), (Err(FillError::Connect), 3));
        assert!(!o.is_down(Instant::now()), "one request is one failure");
        assert_eq!(run(&o, &stats, &fails), (Err(FillError::Connect), 3));
        assert!(o.is_down(Instant::now()));
        assert_eq!(counted(&stats), (6, 4));
        // Down: not asked at all.
        assert_eq!(run(&o, &stats, &fails), (Err(FillError::Down), 0));
        // A request that reached the origin on a retry is no failure of it.
        let o = origin(2, 1);
        let mixed = [
            Failure::Unreachable(FillError::Connect),
            Failure::NoAnswer(FillError::timeout(Wait::FirstByte, 100)),
            Failure::NoAnswer(FillError::timeout(Wait::FirstByte, 100)),
        ];
        assert_eq!(run(&o, &stats, &mixed[..1]), (Ok(2), 2));
        assert!(!o.is_down(Instant::now()));
        // One that never got an answer, and could not reach it on some attempt, is (its
        // first-byte timeout ends it: the one server is not asked again).
        assert_eq!(
            run(&o, &stats, &mixed),
            (Err(FillError::timeout(Wait::FirstByte, 100)), 2)
        );
        assert!(o.is_down(Instant::now()));
    }

    #[test]
    fn slow_or_garbage_answers_fail_their_request_but_never_mark_the_origin_down() {
        let o = origin(1, 1);
        let stats = UpstreamStats::default();
        for fail in [
            FillError::timeout(Wait::FirstByte, 100),
            FillError::Truncated,
        ] {
            // A garbled answer is asked again; a slow one, of the one server, is not.
            let made = if fail == FillError::Truncated { 2 } else { 1 };
            for _ in 0..10 {
                let fails = [Failure::NoAnswer(fail); 2];
                assert_eq!(run(&o, &stats, &fails), (Err(fail), made));
            }
        }
        assert_eq!(counted(&stats), (30, 10), "each counted in the metrics");
        assert!(
            !o.is_down(Instant::now()),
            "no client can take the origin down"
        );
    }

    #[test]
    fn any_answer_clears_the_count() {
        let o = origin(0, 2);
        let stats = UpstreamStats::default();
        let unreachable = [Failure::Unreachable(FillError::Connect)];
        assert_eq!(run(&o, &stats, &unreachable), (Err(FillError::Connect), 1));
        assert_eq!(run(&o, &stats, &[]), (Ok(1), 1));
        assert_eq!(run(&o, &stats, &unreachable), (Err(FillError::Connect), 1));
        assert!(
            !o.is_down(Instant::now()),
            "the answer in between cleared it"
        );
        assert_eq!(run(&o, &stats, &unreachable), (Err(FillError::Connect), 1));
        assert!(o.is_down(Instant::now()));
    }

    #[test]
    fn servers_are_picked_by_weight_backups_only_when_the_others_are_down() {
        let o = pool(&[(1, false), (3, false), (1, true)], 2, 1);
        let epoch = Instant::now();
        let mut picks = [0u32; 3];
        for _ in 0..400 {
            picks[o.pick(epoch, 0).expect("a server")] += 1;
        }
        assert_eq!(picks, [100, 300, 0], "by weight; the backup idle");
        // A retry goes elsewhere when it can.
        assert!((0..20).all(|_| o.pick(epoch, 1 << 1) == Some(0)));
        o.failed(1, epoch);
        assert!((0..20).all(|_| o.pick(epoch, 0) == Some(0)));
        // A retry after the only primary up failed goes to the backup.
        assert!((0..20).all(|_| o.pick(epoch, 1) == Some(2)));
        o.failed(0, epoch);
        assert!(!o.is_down(epoch));
        assert!((0..20).all(|_| o.pick(epoch, 0) == Some(2)), "the backup");
        o.failed(2, epoch);
        assert!(o.is_down(epoch) && o.pick(epoch, 0).is_none());
    }

    /// A pool of one address (weight 1) and one DNS name (weight 2, not looked up yet).
    fn named_pool() -> Origin {
        let mut o = pool(&[(1, false), (2, false)], 2, 1).config;
        o.servers[1].host = relay_config::ServerHost::Name {
            name: "b.example".into(),
            port: 9,
        };
        Origin::new(o)
    }

    #[test]
    fn a_name_s_addresses_are_servers_that_come_and_go_with_its_records() {
        let o = named_pool();
        let epoch = Instant::now();
        let at = |s: &str| -> std::net::SocketAddr { s.parse().expect("address") };
        // Not looked up yet: the name's slots are never picked.
        assert!((0..10).all(|_| o.pick(epoch, 0) == Some(0)));
        assert_eq!(o.servers_up(epoch).len(), 1);
        o.set_addresses(1, &[at("10.0.0.1:9"), at("10.0.0.2:9")]);
        let mut by_address = std::collections::HashMap::new();
        for _ in 0..500 {
            let s = o.pick(epoch, 0).expect("a server");
            *by_address
                .entry(o.address(s).expect("an address"))
                .or_insert(0) += 1;
        }
        // Each address of the name has the name's weight.
        assert_eq!(by_address[&at("127.0.0.1:9")], 100);
        assert_eq!(by_address[&at("10.0.0.1:9")], 200);
        assert_eq!(by_address[&at("10.0.0.2:9")], 200);
        // One that stays keeps its slot and its health; one that goes leaves the pool; a
        // new one comes in healthy.
        let slot = |a: &str| (0..o.servers.len()).find(|&s| o.address(s) == Some(at(a)));
        let kept = slot("10.0.0.2:9").expect("a slot");
        o.failed(kept, epoch);
        o.set_addresses(1, &[at("10.0.0.2:9"), at("10.0.0.3:9")]);
        assert_eq!(slot("10.0.0.2:9"), Some(kept));
        assert!(o.server_down(kept, epoch), "its health kept");
        assert_eq!(slot("10.0.0.1:9"), None);
        let new = slot("10.0.0.3:9").expect("a slot");
        assert!(!o.server_down(new, epoch));
        assert_eq!(
            o.addresses(1),
            [at("10.0.0.2:9"), at("10.0.0.3:9")],
            "sorted"
        );
        // No more slots than a name has: the rest are left out.
        let many: Vec<std::net::SocketAddr> =
            (1..=40).map(|i| at(&format!("10.1.0.{i}:9"))).collect();
        o.set_addresses(1, &many);
        assert_eq!(o.addresses(1).len(), crate::origin::MAX_ADDRESSES_PER_NAME);
        o.set_addresses(1, &[]);
        assert!((0..10).all(|_| o.pick(epoch, 0) == Some(0)));
    }

    /// Three servers, two of them taking no connection: a request, even one never retried
    /// (a POST), reaches the third; a retry never goes back to one it failed on.
    #[test]
    fn a_request_not_sent_goes_to_each_server_once_before_it_fails() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        for retries in [0, 2] {
            let o = pool(&[(1, false), (1, false), (1, false)], retries, 5);
            let stats = UpstreamStats::default();
            let mut tried = Vec::new();
            let r = rt.block_on(retrying(&o, Instant::now(), &stats, retries, |server| {
                tried.push(server);
                let outcome = match server {
                    2 => Ok(server),
                    _ => Err(Failure::Unreachable(FillError::Connect)),
                };
                async move { outcome }
            }));
            assert_eq!(r, Ok(2), "retries {retries}: tried {tried:?}");
            let mut seen = tried.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), tried.len(), "a server tried twice: {tried:?}");
        }
    }

    /// A first-byte timeout is not retried on the server that let it pass: with one
    /// server, one request reaches the origin; in a pool, each server is asked once at
    /// most (then the answer of one that is not slow).
    #[test]
    fn a_slow_answer_goes_on_to_another_server_never_back_to_a_slow_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let slow = || Err(Failure::NoAnswer(FillError::timeout(Wait::FirstByte, 100)));
        for (servers, answers) in [(1, None), (3, None), (3, Some(1)), (2, Some(0))] {
            let o = pool(&vec![(1, false); servers], 5, 100);
            let stats = UpstreamStats::default();
            let mut tried = Vec::new();
            let r = rt.block_on(retrying(&o, Instant::now(), &stats, 5, |server| {
                tried.push(server);
                let outcome = if Some(server) == answers {
                    Ok(server)
                } else {
                    slow()
                };
                async move { outcome }
            }));
            let mut seen = tried.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(
                seen.len(),
                tried.len(),
                "a slow server asked twice: {tried:?}"
            );
            match answers {
                Some(s) => assert_eq!(r, Ok(s), "{tried:?}"),
                None => {
                    assert_eq!(r, Err(FillError::timeout(Wait::FirstByte, 100)));
                    assert_eq!(tried.len(), servers, "each server once: {tried:?}");
                }
            }
            assert!(!o.is_down(Instant::now()), "slow is not down");
        }
    }

    #[test]
    fn a_request_that_fails_on_one_server_is_answered_by_the_next() {
        let o = pool(&[(1, false), (1, false)], 2, 1);
        let stats = UpstreamStats::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let mut tried = Vec::new();
        let r = rt.block_on(retrying(&o, Instant::now(), &stats, 2, |server| {
            tried.push(server);
            let outcome = match tried.len() {
                1 => Err(Failure::Unreachable(FillError::Connect)),
                _ => Ok(server),
            };
            async move { outcome }
        }));
        assert_eq!(tried.len(), 2);
        assert_ne!(tried[0], tried[1], "the retry went to the other server");
        assert_eq!(r, Ok(tried[1]));
        // The one that could not be reached counts against its health (down after 1).
        let epoch = Instant::now();
        assert!((0..10).all(|_| o.pick(epoch, 0) == Some(tried[1])));
    }

    #[test]
    fn retries_stop_once_the_origin_is_marked_down_meanwhile() {
        let o = origin(5, 1);
        let stats = UpstreamStats::default();
        let epoch = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let mut made = 0;
        let r: Result<(), FillError> = rt.block_on(retrying(&o, epoch, &stats, 5, |_| {
            made += 1;
            // Another request's failure marks the origin down during this one's attempt.
            o.failed(0, epoch);
            async { Err(Failure::NoAnswer(FillError::timeout(Wait::FirstByte, 100))) }
        }));
        assert_eq!(
            (r, made),
            (Err(FillError::timeout(Wait::FirstByte, 100)), 1)
        );
    }

    /// What `failure` makes of a real client's error against a listener that behaves as
    /// `serve` says (None: nothing listens).
    fn classify(serve: Option<fn(std::net::TcpStream)>) -> Failure {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        match serve {
            None => drop(listener),
            Some(serve) => {
                std::thread::spawn(move || {
                    if let Ok((conn, _)) = listener.accept() {
                        serve(conn);
                    }
                });
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use hyper_util::client::legacy::{Client, connect::HttpConnector};
            let client: Client<_, Full<Bytes>> =
                Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
            let uri: http::Uri = format!("http://{addr}/x").parse().expect("uri");
            let e = client.get(uri).await.expect_err("no answer");
            failure(&e)
        })
    }

    #[test]
    fn only_a_connection_refused_speaks_of_the_origin() {
        use std::io::{Read, Write};
        let refused = classify(None);
        assert_eq!(refused, Failure::Unreachable(FillError::Connect));
        let closed = classify(Some(|mut conn| {
            let _ = conn.read(&mut [0u8; 4096]);
        }));
        assert_eq!(closed, Failure::NoAnswer(FillError::Closed));
        // Closed with the request unread: the kernel resets the connection.
        let reset = classify(Some(|conn| {
            std::thread::sleep(Duration::from_millis(100));
            drop(conn);
        }));
        assert_eq!(reset, Failure::NoAnswer(FillError::Closed));
        let garbage = classify(Some(|mut conn| {
            let _ = conn.read(&mut [0u8; 4096]);
            let _ = conn.write_all(b"SPAM SPAM SPAM\r\n\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }));
        assert_eq!(garbage, Failure::NoAnswer(FillError::Malformed));
    }
}

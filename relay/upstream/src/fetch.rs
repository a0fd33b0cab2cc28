//! One upstream job: send the request (with retries while nothing was received), check the
//! response head, and stream the body into chunk fills, waking waiting workers as bytes land.

use crate::head::{self, ObjectHead};
use crate::{
    Forward, Job, Origin, PASS_BUFFER_LIMIT, PASS_STALL, PASS_WINDOW, PassBody, PassSlot, Passed,
    Store, UpstreamStats,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relay_cache::fill::{FillError, FillWriter};
use relay_cache::{ChunkKey, ObjectMeta};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Everything a job needs; cheap to clone into each task.
#[derive(Clone)]
pub struct Context {
    origins: Arc<Vec<Origin>>,
    clients: Arc<Vec<Client<HttpConnector, Full<Bytes>>>>,
    store: Store,
    epoch: Instant,
    stats: Arc<UpstreamStats>,
    writer: Option<crate::disk_writer::DiskWriter>,
    /// Bytes of passed-through bodies held now, bounded by `origin.pass_buffer_bytes`:
    /// each stays in memory until its client has read it, and any client can make a GET
    /// pass through (with `Authorization`), so this is what bounds their memory.
    pass_budget: Arc<relay_cache::fill::Budget>,
}

impl Context {
    pub fn new(
        origins: Arc<Vec<Origin>>,
        store: Store,
        epoch: Instant,
        stats: Arc<UpstreamStats>,
        writer: Option<crate::disk_writer::DiskWriter>,
        pass_budget: Arc<relay_cache::fill::Budget>,
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
        }
    }
}

/// The upstream thread's loop: one task per job.
pub async fn run(mut ctx: Context, mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>) {
    ctx.clients = Arc::new(
        ctx.origins
            .iter()
            .map(|o| {
                let mut conn = HttpConnector::new();
                conn.set_connect_timeout(Some(Duration::from_millis(o.config.connect_timeout_ms)));
                conn.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(o.config.max_connections)
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(conn)
            })
            .collect(),
    );
    while let Some(job) = rx.recv().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match job {
                Job::Head {
                    origin,
                    object,
                    path,
                    stale,
                    forward,
                    variant,
                } => {
                    ctx.head(origin, object, path, stale, forward, variant)
                        .await
                }
                Job::Chunk {
                    origin,
                    path,
                    meta,
                    writer,
                    forward,
                } => ctx.chunk(origin, path, meta, writer, &forward).await,
                Job::Pass {
                    origin,
                    method,
                    path,
                    headers,
                    body,
                    host,
                    slot,
                } => {
                    let r = ctx
                        .pass(origin, method, &path, headers, body, &host, &slot)
                        .await;
                    if let Err(e) = r {
                        let _ = slot.result.set(Err(e));
                        ctx.wake(slot.watchers.load(Ordering::Acquire));
                    }
                }
            }
        });
    }
}

impl Context {
    fn wake(&self, mask: u64) {
        // Pairs with the fence a worker makes between setting its watcher bit and reading
        // the fill: one of the two sides sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        if mask != 0 {
            (self.store.wake)(mask);
        }
    }

    /// Sends `GET path` with `Range: bytes=start-end` and the client's `forward` fields,
    /// retrying connection failures with backoff; returns the response once its head arrived.
    async fn send(
        &self,
        origin: usize,
        path: &str,
        start: u64,
        end: u64,
        validate: Option<&ObjectMeta>,
        forward: &[(String, Vec<u8>)],
    ) -> Result<http::Response<Incoming>, FillError> {
        let o = &self.origins[origin];
        if o.is_down(self.epoch) {
            return Err(FillError::Down);
        }
        let client = &self.clients[origin];
        let uri: http::Uri = format!("http://{}{}", o.config.address, path)
            .parse()
            .map_err(|_| FillError::Connect)?;
        let mut attempt = 0;
        loop {
            let req = fill_request(
                uri.clone(),
                &o.config.authority,
                (start, end),
                validate,
                forward,
            )?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let first_byte = Duration::from_millis(o.config.first_byte_timeout_ms);
            let err = match tokio::time::timeout(first_byte, client.request(req)).await {
                Ok(Ok(resp)) => {
                    if resp.status().is_server_error() {
                        o.failed(self.epoch);
                    } else {
                        o.succeeded();
                    }
                    return Ok(resp);
                }
                Ok(Err(e)) if e.is_connect() => FillError::Connect,
                Ok(Err(e)) => {
                    log::warn!("origin {}: {e}", o.config.authority);
                    FillError::Connect
                }
                Err(_) => FillError::Timeout,
            };
            o.failed(self.epoch);
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            // Only requests that got nothing back are retried (a GET is idempotent).
            if attempt >= o.config.retries || o.is_down(self.epoch) {
                return Err(err);
            }
            attempt += 1;
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
        }
    }

    /// The object's description is unknown or stale: ask for its first chunk (conditionally
    /// when a stale copy exists).
    async fn head(
        &self,
        origin: usize,
        object: Arc<str>,
        path: String,
        stale: Option<Arc<ObjectMeta>>,
        mut forward: Forward,
        variant: bool,
    ) {
        let layout = self.store.layout;
        let cs = layout.chunk_size();
        loop {
            let request_time = unix_now();
            let resp = match self
                .send(origin, &path, 0, cs - 1, stale.as_deref(), &forward)
                .await
            {
                Ok(r) => r,
                Err(e) => return self.head_failed(&object, e),
            };
            let response_time = unix_now();
            let status = resp.status().as_u16();
            if status == 304 {
                let Some(stale) = stale else {
                    return self.head_failed(&object, FillError::Status(502));
                };
                // Still valid: renew the stored description; its chunks stay as they are.
                let fresh = describe(200, resp.headers(), request_time, response_time);
                let mut renewed = (*stale).clone();
                renewed.fetched = Instant::now();
                if fresh.explicit {
                    renewed.ttl = fresh.ttl;
                    renewed.storable = fresh.storable;
                    renewed.stale_while_revalidate = fresh.swr;
                    renewed.stale_if_error = fresh.sie;
                    renewed.initial_age = fresh.initial_age;
                }
                let renewed = Arc::new(renewed);
                if renewed.storable {
                    self.store.meta.insert(&object, (*renewed).clone());
                }
                let m = self.store.inflight.finish_head(&object, Ok(renewed), None);
                return self.wake(m);
            }
            if head::is_error_status(status) {
                // 5xx: stale-if-error may stand in (the waiting worker decides).
                return self.head_failed(&object, FillError::Status(status));
            }
            let parsed = match status {
                200 | 206 => head::parse(status, resp.headers()),
                416 => match head::content_range(resp.headers()) {
                    // An empty object answers any range with 416 and `bytes */0`.
                    Ok((None, Some(0))) => Ok(ObjectHead {
                        total: Some(0),
                        range_start: 0,
                        etag: String::new(),
                        last_modified: String::new(),
                    }),
                    _ => Err(head::HeadError::ContentRange),
                },
                s => return self.head_failed(&object, FillError::Status(s)),
            };
            let (h, total) = match parsed {
                Ok(h) if h.range_start == 0 && h.total.is_some() => {
                    let t = h.total.unwrap_or(0);
                    (h, t)
                }
                // Unusable framing (no length, a range not starting at 0, garbage).
                _ => return self.head_failed(&object, FillError::Truncated),
            };
            let d = describe(200, resp.headers(), request_time, response_time);
            // What the fetching client alone gets when the stored fields leave some out.
            let owner_headers = d.strips.then(|| end_to_end(resp.headers(), STORED_WRITTEN));
            // The base entry answers requests that send none of the fields the response
            // varies on; this answer was fetched with some of them. It is the variant of the
            // values sent: keep it as that, and ask for the base entry without those fields
            // (each round drops at least one field, so this ends).
            let carried = d
                .vary
                .clone()
                .filter(|fields| !variant && carries_any(&forward, fields));
            let meta = Arc::new(object_meta(&h, total, d));
            let body = resp.into_body();
            if let Some(fields) = carried {
                if meta.storable {
                    let mut key = object.to_string();
                    let sent = forward.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
                    relay_cache::key::push_variant(&mut key, &fields, sent);
                    let key: Arc<str> = key.into();
                    self.store.meta.insert(&key, (*meta).clone());
                    let writer = self.start_first(&key, &meta);
                    let ctx = self.clone();
                    tokio::spawn(async move {
                        ctx.fill_from(origin, status, body, writer, &key, &meta, None)
                            .await;
                    });
                }
                forward = forward
                    .iter()
                    .filter(|(n, _)| !fields.iter().any(|f| f.eq_ignore_ascii_case(n)))
                    .cloned()
                    .collect();
                continue;
            }
            // Start chunk 0's fill before publishing the description, so waiters find it.
            let writer = self.start_first(&object, &meta);
            if meta.storable {
                self.store.meta.insert(&object, (*meta).clone());
            }
            let first = writer.as_ref().map(|w| w.fill().clone());
            let pending = self.store.inflight.pending(&object);
            if let (Some(p), Some(h)) = (pending.as_ref(), owner_headers) {
                p.set_owner_headers(h);
            }
            // A response that may not be stored never reaches the memory tier: its client
            // reads the later chunks of a whole body from the pending fetch it started.
            let keep = pending.filter(|_| !meta.storable);
            let m = self
                .store
                .inflight
                .finish_head(&object, Ok(meta.clone()), first);
            self.wake(m);
            return self
                .fill_from(
                    origin,
                    status,
                    body,
                    writer,
                    &object,
                    &meta,
                    keep.as_deref(),
                )
                .await;
        }
    }

    /// The fill of an object's first chunk (None when it is empty or already being filled).
    fn start_first(&self, object: &Arc<str>, meta: &ObjectMeta) -> Option<FillWriter> {
        let first_len = self.store.layout.chunk_len(meta.len, 0) as usize;
        let key = ChunkKey {
            object: object.clone(),
            version: meta.version,
            index: 0,
        };
        (first_len > 0)
            .then(|| self.store.inflight.start_chunk(key, first_len).ok())
            .flatten()
    }

    /// Streams the body of a head fetch: its first chunk (206), or every chunk when the
    /// origin ignored Range (200).
    #[expect(
        clippy::too_many_arguments,
        reason = "one fetch's state, passed through"
    )]
    async fn fill_from(
        &self,
        origin: usize,
        status: u16,
        body: Incoming,
        first: Option<FillWriter>,
        object: &Arc<str>,
        meta: &Arc<ObjectMeta>,
        keep: Option<&relay_cache::fill::Pending>,
    ) {
        if status == 206 {
            if let Some(w) = first {
                let _ = self.stream(origin, body, w, meta).await;
            }
        } else if status == 200 {
            self.stream_whole(origin, body, first, object, meta, keep)
                .await;
        }
    }

    /// A request with another method, passed through with its body; the answer streams
    /// back through a fill. Only idempotent methods are retried, and only when nothing came
    /// back.
    #[expect(clippy::too_many_arguments, reason = "one job's fields, destructured")]
    async fn pass(
        &self,
        origin: usize,
        method: http::Method,
        path: &str,
        headers: Vec<(String, Vec<u8>)>,
        body: Bytes,
        host: &str,
        slot: &Arc<PassSlot>,
    ) -> Result<(), FillError> {
        let o = &self.origins[origin];
        if o.is_down(self.epoch) {
            return Err(FillError::Down);
        }
        let idempotent = matches!(
            method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::PUT
                | http::Method::DELETE
                | http::Method::OPTIONS
                | http::Method::TRACE
        );
        let uri = format!("http://{}{}", o.config.address, path);
        let mut attempt = 0;
        let resp = loop {
            let mut req = http::Request::builder().method(method.clone()).uri(&uri);
            for (n, v) in &headers {
                req = req.header(n.as_str(), v.as_slice());
            }
            req = req
                .header(http::header::HOST, &o.config.authority)
                .header(http::header::VIA, VIA);
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|_| FillError::Status(400))?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let first_byte = Duration::from_millis(o.config.first_byte_timeout_ms);
            let err =
                match tokio::time::timeout(first_byte, self.clients[origin].request(req)).await {
                    Ok(Ok(resp)) => break resp,
                    Ok(Err(_)) => FillError::Connect,
                    Err(_) => FillError::Timeout,
                };
            o.failed(self.epoch);
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if !idempotent || attempt >= o.config.retries {
                return Err(err);
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
        };
        // The request body was kept for a retry; it is sent now. Its memory (and its share of
        // the pass-through budget) goes back before the response's window is reserved.
        drop(body);
        let status = resp.status().as_u16();
        let invalidate = relay_cache::policy::invalidate::invalidated_paths(
            method.as_str().as_bytes(),
            status,
            &relay_cache::policy::invalidate::Target {
                scheme: "http",
                authority: host,
                path,
            },
            resp.headers()
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        );
        // The origin's answer as it is: relay writes only the framing, Date, Server and
        // Cache-Status of its own.
        let headers = end_to_end(resp.headers(), PASS_WRITTEN);
        let no_body =
            method == http::Method::HEAD || status == 204 || status == 304 || status < 200;
        let key = ChunkKey {
            object: Arc::from(path),
            version: 0,
            index: 0,
        };
        let length = head::content_length(resp.headers()).map_err(|_| FillError::Truncated)?;
        let publish = |body: Option<PassBody>, invalidate: Vec<String>| {
            // A response without a body announces the length a GET would have had (HEAD,
            // 304), and none at all for 204 (RFC 9110 §8.6).
            let content_length = match &body {
                Some(b) => Some(b.len()),
                None if status == 204 || status < 200 => None,
                None => length,
            };
            let _ = slot.result.set(Ok(Passed {
                status,
                content_length,
                headers: headers.clone(),
                body,
                invalidate,
            }));
            self.wake(slot.watchers.load(Ordering::Acquire));
        };
        if no_body {
            publish(None, invalidate);
            return Ok(());
        }
        let mut incoming = resp.into_body();
        match length {
            Some(len) => {
                // Streamed: one window of memory however long the body (an absurd length
                // included: the client gets what the origin sends, then a cut connection).
                let window = len.min(PASS_WINDOW as u64);
                let Some(reserved) = self.pass_budget.reserve(window) else {
                    log::warn!(
                        "pass-through of {path}: no room for its {window}-byte window ({} \
                         held)",
                        self.pass_budget.held()
                    );
                    return Err(FillError::Busy);
                };
                let (stream, mut writer) =
                    relay_cache::stream::Stream::new(len, PASS_WINDOW, Some(reserved));
                publish(Some(PassBody::Stream(stream.clone())), invalidate);
                let wake = |s: &relay_cache::stream::Stream| {
                    // Between publishing bytes and reading who waits for them (pairs with the
                    // fence a worker makes between its watcher bit and its read).
                    std::sync::atomic::fence(Ordering::SeqCst);
                    self.wake(
                        s.watchers.load(Ordering::Acquire) | slot.watchers.load(Ordering::Acquire),
                    )
                };
                'body: while writer.remaining() > 0 {
                    let Ok(Some(d)) = self.next_frame(origin, &mut incoming).await else {
                        break;
                    };
                    let mut off = 0;
                    while off < d.len() && writer.remaining() > 0 {
                        let n = writer.write_some(&d[off..]);
                        if n > 0 {
                            off += n;
                            wake(&stream);
                            continue;
                        }
                        // The window is full: wait until the client has taken some of it,
                        // looking every second whether anyone still will: a client gone
                        // before its head was answered never attaches a reader (its worker
                        // dropped the slot, ours is the last handle).
                        let mut waited = Duration::ZERO;
                        loop {
                            let room = std::future::poll_fn(|cx| writer.poll_room(cx));
                            if tokio::time::timeout(Duration::from_secs(1), room)
                                .await
                                .is_ok()
                            {
                                break;
                            }
                            waited += Duration::from_secs(1);
                            // The count first: a worker attaches its reader before it
                            // drops its handle on the slot (the fence pairs with that drop).
                            let alone = Arc::strong_count(slot) == 1;
                            std::sync::atomic::fence(Ordering::Acquire);
                            let orphaned = alone && !writer.attached();
                            if orphaned || waited >= PASS_STALL {
                                break 'body;
                            }
                        }
                        if writer.reader_gone() {
                            break 'body;
                        }
                    }
                }
                // A short body (or a client gone) fails the stream when the writer drops:
                // the client's connection is cut, never a short body passed off as whole.
                drop(writer);
                wake(&stream);
            }
            None => {
                // No length (chunked): buffer it, bounded, then serve it with one.
                let mut all = Vec::new();
                let Some(mut reserved) = self.pass_budget.reserve(0) else {
                    return Err(FillError::Busy);
                };
                while let Some(d) = self.next_frame(origin, &mut incoming).await? {
                    if all.len() + d.len() > PASS_BUFFER_LIMIT {
                        return Err(FillError::Truncated);
                    }
                    // Held twice while it is copied into its fill: counted twice.
                    if !reserved.grow(2 * d.len() as u64) {
                        return Err(FillError::Busy);
                    }
                    all.extend_from_slice(&d);
                }
                let (fill, writer) = relay_cache::fill::Fill::reserved(key, all.len(), reserved);
                let _ = writer.complete_with(&all, |_| {});
                publish(Some(PassBody::Whole(fill)), invalidate);
            }
        }
        Ok(())
    }

    /// Fills one chunk of a known version.
    async fn chunk(
        &self,
        origin: usize,
        path: String,
        meta: Arc<ObjectMeta>,
        writer: FillWriter,
        forward: &[(String, Vec<u8>)],
    ) {
        let layout = self.store.layout;
        let index = writer.fill().key.index;
        let start = layout.chunk_start(index);
        let end = start + writer.fill().len() as u64 - 1;
        let key = writer.fill().key.clone();
        let resp = match self.send(origin, &path, start, end, None, forward).await {
            Ok(r) => r,
            Err(e) => return self.fail(writer, e),
        };
        let status = resp.status().as_u16();
        if status != 200 && status != 206 {
            return self.fail(writer, FillError::Status(status));
        }
        let h = match head::parse(status, resp.headers()) {
            Ok(h) => h,
            Err(_) => return self.fail(writer, FillError::Truncated),
        };
        let same = h.total == Some(meta.len)
            && h.etag == meta.etag
            && h.last_modified == meta.last_modified;
        if !same {
            // The object changed between chunks: never stitch two versions together.
            self.store.meta.remove(&key.object);
            return self.fail(writer, FillError::Changed);
        }
        let mut body = resp.into_body();
        let skip = if status == 206 {
            if h.range_start != start {
                return self.fail(writer, FillError::Truncated);
            }
            0
        } else {
            start
        };
        let leftover = if skip > 0 {
            match self.skip(origin, &mut body, skip).await {
                Ok(rest) => rest,
                Err(e) => return self.fail(writer, e),
            }
        } else {
            Bytes::new()
        };
        let mut writer = writer;
        if !leftover.is_empty() {
            let n = leftover.len().min(writer.remaining());
            if writer.append(&leftover[..n]).is_err() {
                return self.fail(writer, FillError::Truncated);
            }
        }
        let _ = self.stream(origin, body, writer, &meta).await;
    }

    fn head_failed(&self, object: &str, e: FillError) {
        let m = self.store.inflight.finish_head(object, Err(e), None);
        self.wake(m);
    }

    fn fail(&self, writer: FillWriter, e: FillError) {
        writer.fail(e);
        let fill = writer.fill().clone();
        self.store.inflight.end_fill(&fill);
        drop(writer);
        self.wake(fill.watchers.load(Ordering::Acquire));
    }

    async fn next_frame(
        &self,
        origin: usize,
        body: &mut Incoming,
    ) -> Result<Option<Bytes>, FillError> {
        let idle = Duration::from_millis(self.origins[origin].config.idle_timeout_ms);
        loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(FillError::Timeout),
                Ok(None) => return Ok(None),
                Ok(Some(Err(_))) => return Err(FillError::Truncated),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.stats
                            .bytes
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// Discards `n` body bytes; returns what the last frame held beyond them.
    async fn skip(
        &self,
        origin: usize,
        body: &mut Incoming,
        mut n: u64,
    ) -> Result<Bytes, FillError> {
        while n > 0 {
            let Some(data) = self.next_frame(origin, body).await? else {
                return Err(FillError::Truncated);
            };
            if (data.len() as u64) > n {
                return Ok(data.slice(n as usize..));
            }
            n -= data.len() as u64;
        }
        Ok(Bytes::new())
    }

    /// Streams a body into one fill.
    async fn stream(
        &self,
        origin: usize,
        mut body: Incoming,
        mut writer: FillWriter,
        meta: &ObjectMeta,
    ) -> Result<(), FillError> {
        while writer.remaining() > 0 {
            let data = match self.next_frame(origin, &mut body).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    self.fail(writer, FillError::Truncated);
                    return Err(FillError::Truncated);
                }
                Err(e) => {
                    self.fail(writer, e);
                    return Err(e);
                }
            };
            // A whole-object body (Range ignored) runs past this chunk: keep only its part.
            let n = data.len().min(writer.remaining());
            if n == writer.remaining() {
                self.complete(writer, &data[..n], meta);
                return Ok(());
            }
            if writer.append(&data[..n]).is_err() {
                self.fail(writer, FillError::Truncated);
                return Err(FillError::Truncated);
            }
            self.wake(writer.fill().watchers.load(Ordering::Acquire));
        }
        self.complete(writer, &[], meta);
        Ok(())
    }

    /// A finished fill goes to the memory tier (when the response may be stored).
    /// The chunk's last bytes go in only after the chunk is in the memory tier; then it is
    /// written to the disk tier (if admitted) off this thread.
    fn complete(&self, writer: FillWriter, last: &[u8], meta: &ObjectMeta) {
        let fill = writer.fill().clone();
        let key = fill.key.clone();
        let memory = &self.store.memory;
        let mut whole = None;
        let stored = writer.complete_with(last, |bytes| {
            if meta.storable {
                memory.insert(key.clone(), bytes.clone());
                whole = Some(bytes);
            }
        });
        self.store.inflight.end_fill(&fill);
        if let Ok(fill) = stored {
            self.wake(fill.watchers.load(Ordering::Acquire));
        }
        if let (Some(writer), Some(body)) = (self.writer.as_ref(), whole) {
            let admitted = self
                .store
                .admission
                .as_ref()
                .is_none_or(|a| a.record(&key.as_ref()));
            if admitted {
                let queued = writer.submit(crate::disk_writer::WriteJob {
                    key: key.clone(),
                    object_len: meta.len,
                    etag: meta.etag.clone(),
                    last_modified: meta.last_modified.clone(),
                    meta: meta.encode_blob(Instant::now(), unix_now()),
                    body,
                });
                if !queued {
                    self.stats.disk_write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The fill for chunk `index` of a whole-object body, or how many bytes to skip when
    /// another fetch is already filling it.
    /// A response that may not be stored has a version no other fetch shares
    /// (`object_meta`), so only its own client finds its fills; `keep` holds them for that
    /// client, as they never reach the memory tier.
    fn open_chunk(
        &self,
        object: &Arc<str>,
        meta: &ObjectMeta,
        index: u64,
        keep: Option<&relay_cache::fill::Pending>,
    ) -> (Option<FillWriter>, u64) {
        let len = self.store.layout.chunk_len(meta.len, index);
        let key = ChunkKey {
            object: object.clone(),
            version: meta.version,
            index,
        };
        match self.store.inflight.start_chunk(key, len as usize) {
            Ok(w) => {
                if let Some(p) = keep {
                    p.push_fill(w.fill().clone());
                }
                (Some(w), 0)
            }
            Err(_) => (None, len),
        }
    }

    /// A whole-object body (the origin ignored Range): cut it into chunks as it arrives.
    /// Chunks already being filled by another fetch are skipped.
    async fn stream_whole(
        &self,
        origin: usize,
        mut body: Incoming,
        first: Option<FillWriter>,
        object: &Arc<str>,
        meta: &Arc<ObjectMeta>,
        keep: Option<&relay_cache::fill::Pending>,
    ) {
        let layout = self.store.layout;
        let count = layout.chunk_count(meta.len);
        let mut current = first;
        let mut index = 0u64;
        let mut skip_left = if current.is_none() {
            layout.chunk_len(meta.len, 0)
        } else {
            0
        };
        let mut pending = Bytes::new();
        while index < count {
            if pending.is_empty() {
                match self.next_frame(origin, &mut body).await {
                    Ok(Some(d)) => pending = d,
                    Ok(None) | Err(_) => {
                        if let Some(w) = current.take() {
                            self.fail(w, FillError::Truncated);
                        }
                        return;
                    }
                }
            }
            if let Some(w) = current.as_mut() {
                let n = pending.len().min(w.remaining());
                if n < w.remaining() {
                    if w.append(&pending[..n]).is_err() {
                        if let Some(w) = current.take() {
                            self.fail(w, FillError::Truncated);
                        }
                        return;
                    }
                    pending = pending.slice(n..);
                    self.wake(w.fill().watchers.load(Ordering::Acquire));
                } else {
                    let last = pending.slice(..n);
                    pending = pending.slice(n..);
                    let done = current.take();
                    index += 1;
                    // The next chunk's fill enters the table before this one completes:
                    // a client woken by the completion finds it there and joins it instead
                    // of asking the origin for it again.
                    if index < count {
                        (current, skip_left) = self.open_chunk(object, meta, index, keep);
                    }
                    if let Some(w) = done {
                        self.complete(w, &last, meta);
                    }
                }
            } else {
                let n = (pending.len() as u64).min(skip_left) as usize;
                pending = pending.slice(n..);
                skip_left -= n as u64;
                if skip_left == 0 {
                    index += 1;
                    if index < count {
                        (current, skip_left) = self.open_chunk(object, meta, index, keep);
                    }
                }
            }
        }
    }
}

/// relay's `Via` entry on requests to origins (protocol version and pseudonym).
const VIA: &str = "1.1 relay";

fn unix_now() -> u64 {
    relay_cache::policy::unix_seconds(std::time::SystemTime::now())
}

/// The request of a fill: the client's `forward` fields first, then relay's own — Host,
/// `Range: bytes=start-end`, `Accept-Encoding: identity` and the stored validators —
/// replacing any of the same name; `User-Agent: relay` only when the client sent none.
/// Fields `http` refuses are left out rather than failing the fetch.
fn fill_request(
    uri: http::Uri,
    authority: &str,
    (start, end): (u64, u64),
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
    h.insert(header::RANGE, value(&format!("bytes={start}-{end}"))?);
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

/// Whether a fetch that sent `forward` carried any of the fields a response varies on.
fn carries_any(forward: &[(String, Vec<u8>)], vary: &[String]) -> bool {
    forward
        .iter()
        .any(|(n, _)| vary.iter().any(|f| f.eq_ignore_ascii_case(n)))
}

/// An object's description from its first response head.
///
/// A response that may not be stored gets a version of its own, unique to this fetch: its
/// chunk fills (keyed by version) are then found by the client it was fetched for — its
/// later chunks, even when the origin sent the whole body at once — and by no one else,
/// not even a later fetch of the same object for another client.
fn object_meta(h: &ObjectHead, total: u64, d: Described) -> ObjectMeta {
    static PRIVATE: AtomicU64 = AtomicU64::new(0);
    let version = if d.storable {
        head::version(&h.etag, &h.last_modified, total)
    } else {
        (1 << 63) | PRIVATE.fetch_add(1, Ordering::Relaxed)
    };
    ObjectMeta {
        len: total,
        version,
        etag: h.etag.clone(),
        last_modified: h.last_modified.clone(),
        fetched: Instant::now(),
        ttl: d.ttl,
        storable: d.storable,
        stale_while_revalidate: d.swr,
        stale_if_error: d.sie,
        initial_age: d.initial_age,
        content_type: d.content_type,
        headers: d.headers,
        vary: d.vary,
    }
}

/// What RFC 9111 makes of a response head, in the terms the cache keeps.
struct Described {
    ttl: Duration,
    storable: bool,
    swr: Duration,
    sie: Duration,
    initial_age: u64,
    /// The head carried explicit freshness (or validation) directives of its own.
    explicit: bool,
    content_type: String,
    headers: Bytes,
    /// `headers` leave out fields a qualified `private` / `no-cache` names (the fetching
    /// client still gets them).
    strips: bool,
    vary: Option<Arc<[String]>>,
}

/// Freshness, storability and stale windows from a response head (the shared-cache rules
/// of `relay_cache::policy`), and the end-to-end header fields to relay to clients.
fn describe(status: u16, h: &http::HeaderMap, request_time: u64, response_time: u64) -> Described {
    use relay_cache::policy::{self, PolicyConfig, RequestDirectives, Storability, StoredMeta};
    let config = PolicyConfig::default();
    let pairs = || h.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    let stored = StoredMeta::from_response(status, pairs(), request_time, response_time, &config);
    let request = RequestDirectives::from_request(b"GET", std::iter::empty(), &config);
    let mut storable = policy::storable(&request, &stored, &config) == Storability::Store;
    // `Vary: *` never matches another request. Other fields make variants, stored under
    // keys of their own; `accept-encoding` is left out: relay always asks for identity,
    // which every client accepts.
    let mut vary = None;
    match &stored.vary {
        policy::Vary::Any => storable = false,
        policy::Vary::Fields(f) => {
            let fields: Vec<String> = f
                .iter()
                .filter(|n| n.as_str() != "accept-encoding")
                .cloned()
                .collect();
            if !fields.is_empty() {
                vary = Some(fields.into());
            }
        }
    }
    let lifetime = policy::freshness::freshness_lifetime(&stored);
    let age = policy::freshness::current_age(&stored, response_time);
    let ttl = if policy::freshness::always_validate(&stored) {
        Duration::ZERO
    } else {
        Duration::from_secs(lifetime.saturating_sub(age))
    };
    let forbidden = policy::freshness::stale_forbidden(&stored);
    let window = |w: Option<u32>| match w {
        Some(s) if !forbidden => Duration::from_secs(u64::from(s)),
        _ => Duration::ZERO,
    };
    let d = &stored.directives;
    let explicit = d.max_age.is_some()
        || d.s_maxage.is_some()
        || stored.expires.is_some()
        || d.no_cache.is_present();
    Described {
        ttl,
        storable,
        swr: window(d.stale_while_revalidate),
        sie: window(d.stale_if_error),
        initial_age: age,
        explicit,
        content_type: h
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        headers: stored_fields(h, d),
        strips: !d.private.fields().is_empty() || !d.no_cache.fields().is_empty(),
        vary,
    }
}

/// The end-to-end fields kept with a description, without those a qualified `private` or
/// `no-cache` names (RFC 9111 §5.2.2.4, §5.2.2.7: e.g. `private="Set-Cookie"` shares the
/// body, never the cookie). The client whose request fetched it gets the fields all the
/// same (`Pending::set_owner_headers`).
fn stored_fields(h: &http::HeaderMap, d: &relay_cache::policy::CacheControl) -> Bytes {
    let mut left_out = STORED_WRITTEN.to_vec();
    left_out.extend(
        d.private
            .fields()
            .iter()
            .chain(d.no_cache.fields())
            .map(String::as_str),
    );
    end_to_end(h, &left_out)
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

/// Response fields relay writes itself for a passed-through response.
const PASS_WRITTEN: &[&str] = &["content-length", "date", "server", "cache-status"];

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
        if relay_proto::HOP_BY_HOP.contains(&n) || own.contains(&n) || named.iter().any(|c| c == n)
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
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

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
        fill_request(uri, "origin.example", (0, 65535), validate, forward).expect("request")
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

    #[test]
    fn a_fetch_carries_a_vary_field_whatever_its_case() {
        let vary = ["accept-language".to_string(), "x-device".to_string()];
        assert!(carries_any(&fields(&[("Accept-Language", "fr")]), &vary));
        assert!(carries_any(
            &fields(&[("Cookie", "a"), ("X-DEVICE", "tv")]),
            &vary
        ));
        assert!(!carries_any(&fields(&[("Cookie", "a")]), &vary));
        assert!(!carries_any(&[], &vary));
        assert!(!carries_any(&fields(&[("Cookie", "a")]), &[]));
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

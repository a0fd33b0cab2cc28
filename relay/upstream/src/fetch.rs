//! One upstream job: send the request (with retries while nothing was received), check the
//! response head, and stream the body into chunk fills, waking waiting workers as bytes land.

use crate::head::{self, ObjectHead};
use crate::{Job, Origin, Store, UpstreamStats};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relay_cache::fill::{FillError, FillWriter};
use relay_cache::{ChunkKey, ObjectMeta};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Everything a job needs; cheap to clone into each task.
#[derive(Clone)]
pub struct Context {
    origins: Arc<Vec<Origin>>,
    clients: Arc<Vec<Client<HttpConnector, Empty<Bytes>>>>,
    store: Store,
    epoch: Instant,
    stats: Arc<UpstreamStats>,
}

impl Context {
    pub fn new(
        origins: Arc<Vec<Origin>>,
        store: Store,
        epoch: Instant,
        stats: Arc<UpstreamStats>,
    ) -> Context {
        // Clients are built lazily inside the runtime (`run`); this holds the pools.
        Context {
            origins,
            clients: Arc::new(Vec::new()),
            store,
            epoch,
            stats,
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
                } => ctx.head(origin, object, path).await,
                Job::Chunk {
                    origin,
                    path,
                    meta,
                    writer,
                } => ctx.chunk(origin, path, meta, writer).await,
            }
        });
    }
}

/// Why a request got no usable response.
enum SendError {
    Fill(FillError),
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

    /// Sends `GET path` with `Range: bytes=start-end`, retrying connection failures with
    /// backoff; returns the response once its head arrived.
    async fn send(
        &self,
        origin: usize,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<http::Response<Incoming>, SendError> {
        let o = &self.origins[origin];
        if o.is_down(self.epoch) {
            return Err(SendError::Fill(FillError::Down));
        }
        let client = &self.clients[origin];
        let uri = format!("http://{}{}", o.config.address, path);
        let mut attempt = 0;
        loop {
            let req = http::Request::get(&uri)
                .header(http::header::HOST, &o.config.authority)
                .header(http::header::RANGE, format!("bytes={start}-{end}"))
                .header(http::header::ACCEPT_ENCODING, "identity")
                .header(http::header::USER_AGENT, "relay")
                .body(Empty::new())
                .map_err(|_| SendError::Fill(FillError::Connect))?;
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
                return Err(SendError::Fill(err));
            }
            attempt += 1;
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
        }
    }

    /// The object's description is unknown: ask for its first chunk.
    async fn head(&self, origin: usize, object: Arc<str>, path: String) {
        let layout = self.store.layout;
        let cs = layout.chunk_size();
        let resp = match self.send(origin, &path, 0, cs - 1).await {
            Ok(r) => r,
            Err(SendError::Fill(e)) => {
                let m = self.store.inflight.finish_head(&object, Err(e), None);
                self.wake(m);
                return;
            }
        };
        let status = resp.status().as_u16();
        let parsed = match status {
            200 | 206 => head::parse(status, resp.headers()),
            416 => {
                // An empty object answers any range with 416 and `bytes */0`.
                match head::content_range(resp.headers()) {
                    Ok((None, Some(0))) => Ok(ObjectHead {
                        total: Some(0),
                        range_start: 0,
                        etag: String::new(),
                        last_modified: String::new(),
                        ttl: head::freshness(resp.headers()).0,
                        storable: head::freshness(resp.headers()).1,
                    }),
                    _ => Err(head::HeadError::ContentRange),
                }
            }
            s => {
                let m = self
                    .store
                    .inflight
                    .finish_head(&object, Err(FillError::Status(s)), None);
                self.wake(m);
                return;
            }
        };
        let (h, total) = match parsed {
            Ok(h) if h.range_start == 0 && h.total.is_some() => {
                let t = h.total.unwrap_or(0);
                (h, t)
            }
            _ => {
                // Unusable framing (no length, a range not starting at 0, garbage).
                let m = self
                    .store
                    .inflight
                    .finish_head(&object, Err(FillError::Truncated), None);
                self.wake(m);
                return;
            }
        };
        let meta = Arc::new(ObjectMeta {
            len: total,
            version: head::version(&h.etag, &h.last_modified, total),
            etag: h.etag.clone(),
            last_modified: h.last_modified.clone(),
            fetched: Instant::now(),
            ttl: h.ttl,
            storable: h.storable,
        });
        // Start chunk 0's fill before publishing the description, so waiters find it.
        let first_len = layout.chunk_len(total, 0) as usize;
        let writer = (first_len > 0)
            .then(|| {
                self.store.inflight.start_chunk(
                    ChunkKey {
                        object: object.clone(),
                        version: meta.version,
                        index: 0,
                    },
                    first_len,
                )
            })
            .and_then(Result::ok);
        if meta.storable {
            self.store.meta.insert(&object, (*meta).clone());
        }
        let first = writer.as_ref().map(|w| w.fill().clone());
        let m = self
            .store
            .inflight
            .finish_head(&object, Ok(meta.clone()), first);
        self.wake(m);
        let body = resp.into_body();
        if status == 206 {
            if let Some(w) = writer {
                let _ = self.stream(origin, body, w, &meta).await;
            }
        } else if status == 200 {
            // The origin ignored Range: every chunk comes from this one body.
            self.stream_whole(origin, body, writer, &object, &meta)
                .await;
        }
    }

    /// Fills one chunk of a known version.
    async fn chunk(&self, origin: usize, path: String, meta: Arc<ObjectMeta>, writer: FillWriter) {
        let layout = self.store.layout;
        let index = writer.fill().key.index;
        let start = layout.chunk_start(index);
        let end = start + writer.fill().len() as u64 - 1;
        let key = writer.fill().key.clone();
        let resp = match self.send(origin, &path, start, end).await {
            Ok(r) => r,
            Err(SendError::Fill(e)) => return self.fail(writer, e),
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

    fn fail(&self, writer: FillWriter, e: FillError) {
        writer.fail(e);
        let fill = writer.fill().clone();
        self.store.inflight.end_chunk(&fill.key);
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
    /// The chunk's last bytes go in only after the chunk is in the memory tier.
    fn complete(&self, writer: FillWriter, last: &[u8], meta: &ObjectMeta) {
        let key = writer.fill().key.clone();
        let memory = &self.store.memory;
        let stored = writer.complete_with(last, |bytes| {
            if meta.storable {
                memory.insert(key.clone(), bytes);
            }
        });
        self.store.inflight.end_chunk(&key);
        if let Ok(fill) = stored {
            self.wake(fill.watchers.load(Ordering::Acquire));
        }
    }

    /// The fill for chunk `index` of a whole-object body, or how many bytes to skip when
    /// another fetch is already filling it.
    fn open_chunk(
        &self,
        object: &Arc<str>,
        meta: &ObjectMeta,
        index: u64,
    ) -> (Option<FillWriter>, u64) {
        let len = self.store.layout.chunk_len(meta.len, index);
        let key = ChunkKey {
            object: object.clone(),
            version: meta.version,
            index,
        };
        match self.store.inflight.start_chunk(key, len as usize) {
            Ok(w) => (Some(w), 0),
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
                    if let Some(w) = current.take() {
                        self.complete(w, &last, meta);
                    }
                    index += 1;
                    if index < count {
                        (current, skip_left) = self.open_chunk(object, meta, index);
                    }
                }
            } else {
                let n = (pending.len() as u64).min(skip_left) as usize;
                pending = pending.slice(n..);
                skip_left -= n as u64;
                if skip_left == 0 {
                    index += 1;
                    if index < count {
                        (current, skip_left) = self.open_chunk(object, meta, index);
                    }
                }
            }
        }
    }
}

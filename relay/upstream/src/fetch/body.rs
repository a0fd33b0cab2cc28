//! Streaming an origin's body into fills: one chunk ([`Context::stream`]), or a whole object
//! cut into chunks as it arrives ([`Context::stream_whole`]), and completing a fill into the
//! memory tier and, when admitted, the disk tier.

use super::{Context, unix_now};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use relay_cache::fill::{FillError, FillWriter};
use relay_cache::{ChunkKey, ObjectMeta};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Context {
    pub(super) async fn next_frame(
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
    pub(super) async fn skip(
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
    pub(super) async fn stream(
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
            self.store.wakers.wake(&writer.fill().watchers);
        }
        self.complete(writer, &[], meta);
        Ok(())
    }

    /// A finished fill goes to the memory tier (when the response may be stored).
    /// The chunk's last bytes go in only after the chunk is in the memory tier; then it is
    /// written to the disk tier (if admitted) off this thread.
    pub(super) fn complete(&self, writer: FillWriter, last: &[u8], meta: &ObjectMeta) {
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
            self.store.wakers.wake(&fill.watchers);
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
    pub(super) fn open_chunk(
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
    pub(super) async fn stream_whole(
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
                    self.store.wakers.wake(&w.fill().watchers);
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

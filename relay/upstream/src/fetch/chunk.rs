//! A chunk job: fill one chunk of a known object version with a Range request, refusing an
//! answer from another version (never stitch two versions together).

use super::Context;
use crate::ChunkRequest;
use crate::head;
use bytes::Bytes;
use relay_cache::fill::FillError;

impl Context {
    /// Fills one chunk of a known version.
    pub(super) async fn chunk(&self, request: ChunkRequest) {
        let ChunkRequest {
            origin,
            path,
            meta,
            writer,
            forward,
        } = request;
        let layout = self.store.layout;
        let index = writer.fill().key.index;
        let start = layout.chunk_start(index);
        let end = start + writer.fill().len() as u64 - 1;
        let key = writer.fill().key.clone();
        let resp = match self
            .send_fill(origin, &path, Some((start, end)), None, &forward, None)
            .await
        {
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
}

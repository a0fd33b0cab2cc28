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
            peers,
        } = request;
        let layout = self.store.layout;
        let index = writer.fill().key.index;
        let start = layout.chunk_start(index);
        let end = start + writer.fill().len() as u64 - 1;
        let key = writer.fill().key.clone();
        let range = Some((start, end));
        // The chunk's owner among the site's relays first, then the origin; an answer from
        // the owner that does not fit is dropped and the origin asked.
        let mut from_peer = match &peers {
            Some(route) => {
                self.ask_owner(origin, route, &path, range, None, &forward)
                    .await
            }
            None => None,
        };
        let (resp, status) = loop {
            let peer = from_peer.is_some();
            let resp = match from_peer.take() {
                Some(r) => r,
                None => match self
                    .send_fill(origin, &path, range, None, &forward, None)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return self.fail(writer, e),
                },
            };
            let status = resp.status().as_u16();
            let checked = match status {
                200 | 206 => match head::parse(status, resp.headers()) {
                    // The object changed between chunks: never stitch two versions together.
                    Ok(h)
                        if h.total != Some(meta.len)
                            || h.etag != meta.etag
                            || h.last_modified != meta.last_modified =>
                    {
                        Err(FillError::Changed)
                    }
                    Ok(h) if status == 206 && h.range_start != start => Err(FillError::Truncated),
                    Ok(_) => Ok(()),
                    Err(_) => Err(FillError::Truncated),
                },
                _ => Err(FillError::Status(status)),
            };
            match checked {
                Ok(()) => {
                    if peer {
                        self.peer_answered();
                    }
                    break (resp, status);
                }
                // (Another relay may hold another version for a while: the origin says.)
                Err(_) if peer => self.peer_fell_back(),
                Err(e) => {
                    if e == FillError::Changed {
                        self.store.meta.remove(&key.object);
                    }
                    return self.fail(writer, e);
                }
            }
        };
        let mut body = resp.into_body();
        let skip = if status == 206 { 0 } else { start };
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

//! What only another relay is answered: this relay's digest (`crate::digest`, at
//! `relay_cluster::digest::PATH` on the peer listener, its credentials already checked),
//! and the checksum of a whole chunk (`relay_cluster::peer::CHUNK_SUM`).

use super::respond::base_head;
use super::{Cx, Exchange};
use relay_cache::{ChunkRef, ObjectMeta};
use relay_proto::{Method, ResponseHead};
use std::sync::atomic::Ordering;

impl Exchange {
    /// 200 with the digest and its `ETag`; 304 when the request's `If-None-Match` names
    /// it; 404 before the first build; 405 for a method other than GET and HEAD.
    pub(super) fn answer_digest(&mut self, cx: &mut Cx<'_>) {
        cx.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.req_start = Some(cx.now);
        self.src = None;
        self.local = None;
        self.pass_body = None;
        let req = self.saved.req;
        if !matches!(req.method, Method::Get | Method::Head) {
            let allow: &[(&str, &[u8])] = &[("Allow", b"GET, HEAD")];
            self.simple(cx, &req, 405, allow, "method not allowed\n");
            return;
        }
        let Some(served) = cx.shared.digest.as_ref().and_then(|d| d.get()) else {
            self.simple(cx, &req, 404, &[], "no digest built yet\n");
            return;
        };
        let unchanged = self
            .saved
            .cond
            .if_none_match
            .as_ref()
            .is_some_and(|v| v.as_bytes() == served.etag.as_bytes());
        let extra: &[(&str, &[u8])] = &[
            ("ETag", served.etag.as_bytes()),
            ("Cache-Control", b"no-store"),
        ];
        let (status, len) = match unchanged {
            true => (304, None),
            false => (200, Some(served.body.len() as u64)),
        };
        let head = ResponseHead {
            content_length: len,
            content_type: len.map(|_| "application/octet-stream"),
            extra,
            ..base_head(cx.date.get(), status, &req, None)
        };
        head.encode(&mut self.out.head);
        if status == 200 && req.method == Method::Get {
            self.out.body = served.body;
            self.out.body_off = 0;
        }
        if !req.keep_alive {
            self.close_after = true;
        }
    }

    /// The checksum of the chunk the body `start..end` is, when it is one whole chunk: of
    /// its bytes when taken from memory, else the one its disk file carries (what its read
    /// is verified against).
    /// Whether the body `start..end` of `meta` is one whole chunk.
    pub(super) fn whole_chunk(&self, cx: &Cx<'_>, meta: &ObjectMeta, start: u64, end: u64) -> bool {
        let layout = cx.shared.cache.layout;
        let index = layout.chunk_of(start);
        !meta.open_ended
            && layout.chunk_start(index) == start
            && start + layout.chunk_len(meta.len, index) == end
    }

    pub(super) fn whole_chunk_sum(
        &self,
        cx: &Cx<'_>,
        meta: &ObjectMeta,
        start: u64,
        end: u64,
    ) -> Option<u64> {
        let layout = cx.shared.cache.layout;
        let index = layout.chunk_of(start);
        if layout.chunk_start(index) != start {
            return None;
        }
        if let Some((_, i, chunk)) = self.local.as_ref() {
            return (*i == index && start + chunk.len() as u64 == end)
                .then(|| relay_cache::disk::checksum(chunk));
        }
        let key = ChunkRef {
            object: &self.key,
            version: meta.version,
            index,
        };
        let (sum, len) = cx.shared.cache.disk.as_ref()?.body_sum(&key)?;
        (start + len == end).then_some(sum)
    }
}

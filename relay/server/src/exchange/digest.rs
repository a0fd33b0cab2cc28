//! Another relay asking for this relay's digest (`crate::digest`, at
//! `relay_cluster::digest::PATH` on the peer listener, its credentials already checked).

use super::respond::base_head;
use super::{Cx, Exchange};
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
            ..base_head(cx.date, status, &req, None)
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
}

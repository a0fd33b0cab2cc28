//! A pass-through job: the client's request with its body goes to the origin as it is, and
//! the answer comes back through a window of [`PASS_WINDOW`] bytes as its client reads it,
//! with a `Content-Length` or without one (chunked, or until the origin closes: its client
//! gets it chunked, or until the close). Nothing is stored; an unsafe method's answer
//! invalidates what it names.

use super::request::VIA;
use super::{Context, end_to_end};
use crate::budget::{Client, Refused};
use crate::{
    PASS_READ_AHEAD, PASS_STALL, PASS_WINDOW, PASS_WINDOW_UNSIZED, PassBody, PassRequest, PassSlot,
    Passed, RequestBody,
};
use http_body_util::Full;
use relay_cache::fill::FillError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Response fields relay writes itself for a passed-through response.
pub(super) const PASS_WRITTEN: &[&str] = &["content-length", "date", "server", "cache-status"];

impl Context {
    /// A request with another method, passed through with its body; the answer streams
    /// back through a fill. Only idempotent methods are retried, and only when nothing came
    /// back.
    ///
    /// The job holds the only reference the upstream has to its slot: a pass whose client
    /// left sees its slot alone and gives its window back (`try_pass`).
    pub(super) async fn pass(&self, request: PassRequest) {
        let PassRequest {
            origin,
            method,
            path,
            headers,
            body,
            host,
            slot,
            client,
        } = request;
        let r = self
            .try_pass(origin, method, &path, headers, body, &host, client, &slot)
            .await;
        if let Err(e) = r {
            let _ = slot.result.set(Err(e));
            self.store.wakers.wake(&slot.watchers);
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one job's fields, destructured")]
    async fn try_pass(
        &self,
        origin: usize,
        method: http::Method,
        path: &str,
        headers: Vec<(String, Vec<u8>)>,
        body: RequestBody,
        host: &str,
        client: Client,
        slot: &Arc<PassSlot>,
    ) -> Result<(), FillError> {
        let o = &self.origins[origin];
        let idempotent = matches!(
            method,
            http::Method::GET
                | http::Method::HEAD
                | http::Method::PUT
                | http::Method::DELETE
                | http::Method::OPTIONS
                | http::Method::TRACE
        );
        let request = |server| {
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(o.uri(server, path));
            for (n, v) in &headers {
                req = req.header(n.as_str(), v.as_slice());
            }
            req.header(http::header::HOST, &o.config.authority)
                .header(http::header::VIA, VIA)
        };
        let bad = |_| FillError::Status(400);
        // (A streamed upload's own connection: kept until the answer has been read.)
        let mut uploaded = None;
        let (resp, _conn) = match body {
            RequestBody::Whole(body) => {
                let retries = if idempotent { o.config.retries } else { 0 };
                let build = |server| request(server).body(Full::new(body.clone())).map_err(bad);
                let resp = self.send(origin, retries, build).await?;
                // The request body was kept for a retry; it is sent now. Its memory (and its
                // share of the pass-through budget) goes back before the response's window
                // is reserved.
                drop(body);
                (resp, None)
            }
            // Sent once, never retried: its bytes are gone once sent.
            RequestBody::Stream(body) => {
                let upload = body.upload().clone();
                // (Its own connection picks its server; the target goes in origin-form.)
                let req = request(0).body(body).map_err(bad)?;
                let (resp, conn) = self.send_upload(origin, req, &upload).await?;
                upload.release_if_sent();
                uploaded = Some(upload);
                (resp, Some(conn))
            }
        };
        let status = resp.status().as_u16();
        // (Its Date goes on as the origin's, reformatted; one that is not a date, or none,
        // is the time it was received.)
        let date = relay_cache::ResponseDate::from_unix(
            resp.headers()
                .get_all(http::header::DATE)
                .iter()
                .find_map(|v| relay_cache::policy::response_headers::parse_http_date(v.as_bytes()))
                .unwrap_or_else(super::unix_now),
        );
        // A transfer coding relay cannot take off (`gzip, chunked`): its bytes are not the
        // body, and the field that names it is hop-by-hop.
        if crate::head::foreign_transfer_coding(resp.headers()) {
            return Err(FillError::Framing);
        }
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
        // The origin's answer as it is: relay writes only the framing, Server and
        // Cache-Status of its own, and the Date as read above.
        let headers = end_to_end(resp.headers(), PASS_WRITTEN);
        let no_body =
            method == http::Method::HEAD || status == 204 || status == 304 || status < 200;
        let length =
            crate::head::content_length(resp.headers()).map_err(|_| FillError::Truncated)?;
        let publish = |body: Option<PassBody>, invalidate: Vec<String>| {
            // A response without a body announces the length a GET would have had (HEAD,
            // 304), and none at all for 204 (RFC 9110 §8.6).
            let content_length = match &body {
                Some(b) => b.len(),
                None if status == 204 || status < 200 => None,
                None => length,
            };
            let _ = slot.result.set(Ok(Passed {
                status,
                content_length,
                headers: headers.clone(),
                date,
                body,
                invalidate,
            }));
            self.store.wakers.wake(&slot.watchers);
        };
        if no_body {
            publish(None, invalidate);
            return Ok(());
        }
        let mut incoming = resp.into_body();
        // Streamed: one window of memory however long the body (an absurd length included:
        // the client gets what the origin sends, then a cut connection). A body without a
        // length (chunked, or until the origin closes) streams the same way, and ends where
        // the origin's does. (The window, and what the upstream connection holds ahead of it
        // besides.)
        let ring = match length {
            Some(len) => len.min(PASS_WINDOW as u64) as usize,
            // (A small ring, not the whole window: most such answers are small, an API's
            // JSON, and each would hold and zero a window of its own.)
            None => PASS_WINDOW_UNSIZED,
        };
        let window = ring as u64 + PASS_READ_AHEAD as u64;
        let mut reserved = self.pass_budget.reserve(client, window);
        // No room beside this request's own upload window, still reserved: the origin
        // answered the moment it had read the body, before the worker marked it whole or
        // the connection dropped its last piece. Given a moment to.
        if let (Err(_), Some(upload)) = (&reserved, &uploaded)
            && upload
                .release_when_sent(std::time::Duration::from_millis(50))
                .await
        {
            reserved = self.pass_budget.reserve(client, window);
        }
        let reserved = reserved.map_err(|e| {
            log::warn!(
                "pass-through of {path} for {client}: no room for its {window}-byte window \
                 ({e}: {} held, {} by this client)",
                self.pass_budget.held(),
                self.pass_budget.held_by(client)
            );
            refused(e)
        })?;
        let (stream, mut writer) = match length {
            Some(len) => crate::stream::Stream::new(len, PASS_WINDOW, Some(reserved)),
            None => crate::stream::Stream::unsized_body(ring, Some(reserved)),
        };
        publish(Some(PassBody::Stream(stream.clone())), invalidate);
        let wake =
            |s: &crate::stream::Stream| self.store.wakers.wake_any(&[&s.watchers, &slot.watchers]);
        let ended = 'body: loop {
            if writer.remaining() == 0 {
                break true;
            }
            let d = match self.next_frame(origin, &mut incoming).await {
                Ok(Some(d)) => d,
                // The end of a body without a length: whole. (One with a length that ends
                // short stays unfinished.)
                Ok(None) => break length.is_none(),
                Err(_) => break false,
            };
            let mut off = 0;
            while off < d.len() && writer.remaining() > 0 {
                let n = writer.write_some(&d[off..]);
                if n > 0 {
                    off += n;
                    wake(&stream);
                    continue;
                }
                // The window is full: wait until the client has taken some of it, looking
                // every second whether anyone still will: a client gone before its head was
                // answered never attaches a reader (its worker dropped the slot, ours is the
                // last handle).
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
                    // The count first: a worker attaches its reader before it drops its
                    // handle on the slot (the fence pairs with that drop).
                    let alone = Arc::strong_count(slot) == 1;
                    std::sync::atomic::fence(Ordering::Acquire);
                    let orphaned = alone && !writer.attached();
                    if orphaned || waited >= PASS_STALL {
                        break 'body false;
                    }
                }
                if writer.reader_gone() {
                    break 'body false;
                }
            }
        };
        // A short body (or a client gone) fails the stream when the writer drops: the
        // client's connection is cut, never a short body passed off as whole.
        if ended {
            writer.finish();
        } else {
            drop(writer);
        }
        wake(&stream);
        Ok(())
    }
}

/// A budget's refusal as the client's answer says it (503 either way).
fn refused(e: Refused) -> FillError {
    match e {
        Refused::Full => FillError::Busy,
        Refused::Share => FillError::Share,
    }
}

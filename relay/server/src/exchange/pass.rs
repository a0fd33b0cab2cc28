//! Answering a passed-through request (other methods; GET/HEAD the cache may not answer)
//! with the origin's response as it streams back, and what that answer invalidates.

use super::respond::base_head;
use super::types::{Body, Chunked, PassReader, Route};
use super::{Cx, Exchange, State, Step};
use crate::cache_status::CacheStatus;
use relay_cache::ObjectMeta;
use relay_proto::{Method, ResponseHead};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Exchange {
    /// Waits for a passed-through request's answer, then answers with it.
    pub(super) fn await_pass(&mut self, cx: &mut Cx<'_>) -> Step {
        let State::AwaitingPass(ps) = &self.state else {
            return Step::Again;
        };
        let ps = ps.clone();
        ps.watchers.watch(cx.worker);
        match ps.result.get() {
            None => return Step::Do(self.wait(cx)),
            Some(Ok(p)) => {
                self.waited(cx);
                self.leave();
                self.respond_pass(cx, p);
            }
            Some(Err(e)) => {
                self.waited(cx);
                self.leave();
                self.upstream_error(cx, *e);
            }
        }
        Step::Again
    }

    /// Answers a passed-through request with the origin's response; a successful unsafe
    /// method invalidates what it names (RFC 9111 §4.4).
    pub(super) fn respond_pass(&mut self, cx: &mut Cx<'_>, p: &relay_upstream::Passed) {
        let origin = self.key_origin();
        // (Stored under its GET's target, shaped as the origin's policy says.)
        let policy = match self.route {
            Route::Http(o) => cx.shared.upstream.as_ref().and_then(|u| u.cache_policy(o)),
            Route::Directory => None,
        };
        for path in &p.invalidate {
            let mut path = path.clone();
            if let Some(policy) = policy {
                relay_cache::key::shape_query(&mut path, policy);
            }
            let mut key = String::with_capacity(origin.len() + path.len());
            key.push_str(origin);
            key.push_str(&path);
            // Every stored response for the URI, its variants too (§4.4): marked invalid
            // among the descriptions at once (each goes when next looked up), and dropped on
            // disk, whose index is walked for the base already and would restore a variant
            // once its base comes back. (Remembered against the disk writes on their way
            // when it was described or is being fetched: `DiskTier::remove_named_now`.)
            let known = cx.shared.cache.meta.remove(&key)
                || cx.shared.cache.inflight.pending(&key).is_some()
                || cx.shared.cache.inflight.arriving(&key);
            cx.shared.cache.meta.invalidate_variants(&key);
            if let Some(disk) = cx.shared.cache.disk.as_ref() {
                disk.remove_named_now(relay_cache::disk::Removal::Variants(key.into()), known);
            }
            cx.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        let req = self.saved.req;
        if req.method == Method::Head && p.status == 200 {
            self.head_answered(cx, p);
        }
        // A body whose length the origin did not say (chunked, or until it closed): chunked
        // to an HTTP/1.1 client, until the close to a 1.0 one, as it arrives.
        let no_length = p.body.as_ref().is_some_and(|b| b.len().is_none());
        let len = p.body.as_ref().map_or(0, |b| b.len().unwrap_or(u64::MAX));
        let chunked = no_length && self.saved.req.version == 1;
        let status = CacheStatus {
            fwd_status: p.status,
            ..self.pass_status
        };
        cx.stats
            .lookups
            .count(&status, p.status, self.origin_slot());
        status.write(&mut self.status_buf);
        let te: &[(&str, &[u8])] = match chunked {
            true => &[("Transfer-Encoding", b"chunked")],
            false => &[],
        };
        let keep_alive = req.keep_alive && (!no_length || chunked);
        let head = ResponseHead {
            content_length: p.content_length,
            raw: &p.headers,
            extra: te,
            keep_alive,
            // (The origin's Date, as a proxy forwards it: RFC 9110 §6.6.1.)
            ..base_head(p.date.as_bytes(), p.status, &req, Some(&self.status_buf))
        };
        head.encode(&mut self.out.head);
        if !keep_alive {
            self.close_after = true;
        }
        if let Some(b) = p.body.as_ref().filter(|_| len > 0) {
            self.pass_body = Some(match b {
                relay_upstream::PassBody::Stream(s) => PassReader::Stream(s.attach()),
            });
            let mut meta = ObjectMeta::file(len, 0, String::new(), String::new());
            // (A body cut short that was going until the close is then reset, not closed:
            // `Exchange::upstream_failed`.)
            meta.open_ended = no_length;
            self.body = Some(Body {
                meta: Arc::new(meta),
                pos: 0,
                end: len,
                file: None,
                chunked: match chunked {
                    true => Chunked::First,
                    false => Chunked::No,
                },
                sum: None,
                ahead: 0,
                ahead_fills: Default::default(),
                reader: None,
                ahead_held: Default::default(),
                feed: None,
                counted: 0,
            });
        }
    }

    /// An origin answered a HEAD passed through for this request's object (RFC 9111
    /// §4.3.5): a stored response whose validators or length the answer contradicts is
    /// invalidated; one it agrees with stays.
    fn head_answered(&mut self, cx: &mut Cx<'_>, p: &relay_upstream::Passed) {
        let Some(m) = cx.shared.cache.meta.get(&self.key) else {
            return;
        };
        let field = |name: &str| {
            p.headers.split(|&b| b == b'\n').find_map(|line| {
                let (n, v) = line.split_at(line.iter().position(|&b| b == b':')?);
                n.eq_ignore_ascii_case(name.as_bytes())
                    .then(|| v[1..].trim_ascii())
            })
        };
        let differs = |stored: &str, name| field(name).is_some_and(|v| v != stored.as_bytes());
        let changed = differs(&m.etag, "etag")
            || differs(&m.last_modified, "last-modified")
            || p.content_length.is_some_and(|n| n != m.len);
        if changed {
            cx.shared.cache.meta.remove(&self.key);
            if let Some(disk) = cx.shared.cache.disk.as_ref() {
                let named = relay_cache::disk::Removal::Object(self.key.as_str().into());
                disk.remove_named_now(named, true);
            }
            cx.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

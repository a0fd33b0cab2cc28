//! After a restart the memory is empty but the disk tier may hold an object: its
//! description is rebuilt from its first chunk's stored fields, read once however many
//! clients ask (the reading connection owns the object's in-flight head entry; the others
//! wait on it as on a head fetch, and a head fetch takes the entry over when the read
//! cannot describe the object or its client leaves).

use super::types::Route;
use super::{Cx, Exchange, Phase, State};
use bytes::Bytes;
use relay_cache::fill::FillError;
use relay_cache::{ChunkRef, ObjectMeta};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

impl Exchange {
    /// One connection reads the object's description from disk, owning its in-flight head
    /// entry; others that ask meanwhile wait on that entry as on a head fetch, so a crowd on
    /// one object makes one disk read. True when the request waits (on its own read, on
    /// another's, or on the head fetch that took over); false to go on (nothing on disk for
    /// it, or it was described meanwhile).
    pub(super) fn restore_or_join(&mut self, cx: &mut Cx<'_>, which: u8) -> bool {
        let Some(disk) = cx.shared.cache.disk.as_ref() else {
            return false;
        };
        self.restores |= which;
        let Route::Http(origin) = self.route else {
            return false;
        };
        if disk.object(&self.key).is_none() {
            return false;
        }
        if self.restore_entry.is_some() && self.settle_restore(cx) {
            // (Not reached: an entry is settled when its read ends.) Its head fetch now
            // answers this request too.
            return true;
        }
        let meta = &cx.shared.cache.meta;
        let path = self.key.as_str();
        let Some((pending, new)) = cx
            .shared
            .cache
            .inflight
            .head_unless(path, || meta.get(path).is_some())
        else {
            return false;
        };
        // The receive buffer moves on while the request waits.
        self.save_head();
        self.stale = None;
        if !new {
            // Being restored (or fetched) for another client: wait for that.
            self.head_owner = false;
            self.enter(State::AwaitingHead(pending));
            return true;
        }
        let key: Arc<str> = Arc::from(self.key.as_str());
        let fallback = relay_upstream::HeadRequest {
            origin,
            object: key.clone(),
            path: self.target.clone(),
            stale: None,
            forward: self.fill_forward(cx),
            peers: self.peer_route(true),
            variant: self.variant,
            authorization: self.saved.authorized,
            span: self.head_span(cx),
        };
        self.restore_entry = Some(super::types::RestoreEntry {
            key,
            pending,
            fallback,
        });
        if !self.start_restore(cx, which) {
            self.restore_fallback(cx);
        }
        true
    }

    /// The restore this connection owns cannot describe the object (nothing usable on disk,
    /// or the client left): its head fetch, under the same entry, will. The connection, if
    /// it still waits, waits on that fetch as the client whose fields it carries.
    pub(super) fn restore_fallback(&mut self, cx: &mut Cx<'_>) {
        let Some(e) = self.restore_entry.take() else {
            return;
        };
        self.head_owner = true;
        if !self.is_closed() {
            // (A closing connection waits on nothing, and keeps what the kernel may still
            // read into until its slot is released.)
            self.enter(State::AwaitingHead(e.pending));
        }
        match cx.shared.upstream.as_ref() {
            Some(up) => {
                cx.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                up.fetch_head(e.fallback);
            }
            // No upstream to take it over (an HTTP route implies one): never leave the
            // entry's waiters waiting.
            None => {
                let wake = &cx.shared.wake;
                cx.shared
                    .cache
                    .inflight
                    .finish_head(&e.key, Err(FillError::Connect), None, wake);
            }
        }
    }

    /// A restore read ended (or this connection moves on while it owns an entry): finish
    /// the entry. A fresh description (read from disk, or stored meanwhile by another fetch)
    /// is published to the clients waiting on it: their responses are hits. Otherwise a
    /// head fetch takes the entry over, conditional when the description is stale, and this
    /// connection waits on it: true then (the caller must not answer it from here).
    pub(super) fn settle_restore(&mut self, cx: &mut Cx<'_>) -> bool {
        let Some(e) = self.restore_entry.as_mut() else {
            return false;
        };
        let meta = cx.shared.cache.meta.get(&e.key);
        if let Some(m) = meta.as_ref().filter(|m| m.is_fresh(cx.now, Duration::MAX)) {
            let Some(e) = self.restore_entry.take() else {
                return false;
            };
            e.pending.mark_local();
            let wake = &cx.shared.wake;
            cx.shared
                .cache
                .inflight
                .finish_head(&e.key, Ok(m.clone()), None, wake);
            return false;
        }
        e.fallback.stale.clone_from(&meta);
        self.stale = meta;
        self.restore_fallback(cx);
        true
    }

    /// Sets up the read of an object's first chunk from the disk tier (through the ring,
    /// like any disk read) to rebuild its description. True when the read is set up;
    /// `poll` submits it and `on_disk_read` answers.
    fn start_restore(&mut self, cx: &mut Cx<'_>, which: u8) -> bool {
        let Some(disk) = cx.shared.cache.disk.as_ref() else {
            return false;
        };
        self.restores |= which;
        let Some(ov) = disk.object(&self.key) else {
            return false;
        };
        let key = ChunkRef {
            object: &self.key,
            version: ov.version,
            index: 0,
        };
        let Some(plan) = disk.locate(&key) else {
            return false;
        };
        // (No room for the chunk: no restore; the miss is fetched, and waits for room then.)
        let Some(body) = cx.shared.cache.memory.chunk_buf(plan.body_len as usize) else {
            return false;
        };
        let Some(read) = super::types::DiskRead::new(plan, body, true) else {
            return false;
        };
        self.enter(State::ReadingDisk(Box::new(read)));
        self.phase = Phase::Fill;
        self.deadline = cx.now + cx.timeouts.send;
        true
    }

    /// A description rebuilt from a verified first chunk: the chunk goes to memory, the
    /// description to the meta cache.
    pub(super) fn restored(
        &mut self,
        cx: &Cx<'_>,
        plan: &relay_cache::disk::ReadPlan,
        h: &relay_cache::disk::ChunkHeader,
        body: Bytes,
    ) {
        // A purge or an invalidation may have dropped the object while the read was in
        // flight, or a fetch may have described it anew: then the read is stale.
        let current = cx
            .shared
            .cache
            .disk
            .as_ref()
            .and_then(|d| d.object(&plan.key.object))
            .is_some_and(|ov| ov.version == plan.key.version);
        if !current || cx.shared.cache.meta.get(&plan.key.object).is_some() {
            return;
        }
        let now_unix = relay_cache::policy::unix_seconds(SystemTime::now());
        let Some(meta) = ObjectMeta::decode_blob(
            h.object_len,
            plan.key.version,
            &h.etag,
            &h.last_modified,
            &h.meta,
            now_unix,
        ) else {
            return;
        };
        cx.shared.cache.memory.insert(plan.key.clone(), body);
        cx.shared.cache.meta.insert(&plan.key.object, meta);
    }
}

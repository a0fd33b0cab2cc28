//! File I/O an exchange asks for and what it does with the results: a directory-origin
//! file opened and described, a chunk read from it (and the file looked at again after each
//! read: one changed under it cuts the response), a disk-tier chunk read and verified;
//! and one read per chunk however many connections want it (`Cache::inflight`).

use super::{Action, Cx, Exchange, Phase, ReadOp, State, Step};
use crate::cache_status::{CacheStatus, Fwd};
use crate::origin::{FileStat, OriginError};
use bytes::Bytes;
use relay_cache::ChunkKey;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;

impl Exchange {
    /// A directory-origin file to open and describe: its `openat2` goes out once, then
    /// [`Exchange::on_dir_opened`] and [`Exchange::on_dir_stat`] go on.
    pub(super) fn open_dir(&mut self, cx: &Cx<'_>) -> Step {
        let State::Opening(o) = &mut self.state else {
            return Step::Again;
        };
        if o.submitted {
            return Step::Do(Action::Idle);
        }
        o.submitted = true;
        let Some(root) = cx.shared.origin.as_ref().map(|d| d.root_fd()) else {
            return Step::Do(Action::Close);
        };
        let (path, how) = (o.path.as_ptr(), &*o.how as *const _);
        self.filling(cx);
        Step::Do(Action::OpenDir { root, path, how })
    }

    /// A directory-origin file's `openat2` completed: describe it (`statx` on the fd).
    pub fn on_dir_opened(&mut self, cx: &mut Cx<'_>, file: Result<File, i32>) -> Action {
        let State::Opening(o) = &mut self.state else {
            // Opened for nothing: the file closes here.
            return self.poll(cx);
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => return self.dir_failed(cx, crate::origin::open_error(-e)),
        };
        let fd = file.as_raw_fd();
        o.file = Some(file);
        Action::StatDir {
            fd,
            buf: &mut *o.stat,
        }
    }

    /// A directory-origin file described (`res`: the `statx` result): answer the saved
    /// request with its description, or go on with the body whose head came from a cached
    /// one (if it is still that file). A file that can be served is made blocking for its
    /// reads first (`make_blocking`: it was opened non-blocking so that a FIFO cannot hold
    /// the open).
    pub fn on_dir_stat(
        &mut self,
        cx: &mut Cx<'_>,
        res: i32,
        make_blocking: impl FnOnce(RawFd) -> std::io::Result<()>,
    ) -> Action {
        let State::Opening(o) = &self.state else {
            return self.poll(cx);
        };
        if res < 0 {
            let kind = std::io::Error::from_raw_os_error(-res).kind();
            return self.dir_failed(cx, OriginError::Io(kind));
        }
        let described =
            crate::origin::describe(&o.path, &FileStat::from_statx(&o.stat)).and_then(|meta| {
                let fd = o.file.as_ref().map_or(-1, |f| f.as_raw_fd());
                make_blocking(fd).map_err(|e| OriginError::Io(e.kind()))?;
                Ok(meta)
            });
        let meta = match described {
            Ok(m) => m,
            Err(e) => return self.dir_failed(cx, e),
        };
        let State::Opening(o) = self.leave() else {
            return self.poll(cx);
        };
        if o.describe {
            // A description due for revalidation is replaced: `fwd=stale`.
            let lookup = match cx.shared.cache.meta.get(&self.key) {
                Some(_) => Fwd::Stale,
                None => Fwd::UriMiss,
            };
            let meta = cx.shared.cache.meta.insert(&self.key, meta);
            self.phase = Phase::Recv;
            let how = CacheStatus {
                fwd_status: meta.status,
                stored: true,
                ..CacheStatus::fwd(lookup)
            };
            self.respond_meta(cx, meta, o.file, Some(how));
        } else {
            match self.body.as_mut() {
                Some(b) if b.meta.version == meta.version => b.file = o.file,
                // The object changed since its head was sent: the client sees a cut
                // connection, never another file's bytes.
                _ => return self.file_changed(cx),
            }
        }
        self.poll(cx)
    }

    /// A directory-origin open or `statx` failed. A request being described gets its status;
    /// a body whose file vanished since its head was sent cuts the connection (its client
    /// must never take a short body as whole).
    fn dir_failed(&mut self, cx: &mut Cx<'_>, e: OriginError) -> Action {
        let describe = matches!(self.leave(), State::Opening(o) if o.describe);
        if !describe {
            cx.shared.cache.meta.remove(&self.key);
            return Action::Close;
        }
        self.phase = Phase::Recv;
        self.origin_error(cx, e);
        self.poll(cx)
    }

    /// The read of (the rest of) the directory-origin chunk being read, and the `statx`
    /// linked after it.
    pub(super) fn read_chunk(&mut self, cx: &Cx<'_>) -> Action {
        let layout = cx.shared.cache.layout;
        let (State::ReadingFile(fill), Some(body)) = (&mut self.state, self.body.as_ref()) else {
            return Action::Idle;
        };
        let Some(file) = body.file.as_ref() else {
            return Action::Idle;
        };
        let op = ReadOp {
            fd: file.as_raw_fd(),
            at: fill.buf.as_ptr().wrapping_add(fill.got),
            len: fill.buf.len() - fill.got,
            offset: layout.chunk_start(fill.key.index) + fill.got as u64,
        };
        (fill.read, fill.checked) = (None, None);
        let check = &mut *fill.stat as *mut libc::statx;
        self.filling(cx);
        Action::ReadChunk { op, check }
    }

    /// A read of a directory-origin chunk completed with `res`; the `statx` after it is
    /// [`Exchange::on_chunk_checked`]. The two are taken together, in either order.
    pub fn on_chunk_read(&mut self, cx: &mut Cx<'_>, res: i32) -> Action {
        let State::ReadingFile(fill) = &mut self.state else {
            return Action::Close;
        };
        fill.read = Some(res);
        self.chunk_read(cx)
    }

    /// The `statx` linked after a directory-origin chunk's read completed with `res`
    /// (`-ECANCELED` when the read failed or came up short).
    pub fn on_chunk_checked(&mut self, cx: &mut Cx<'_>, res: i32) -> Action {
        let State::ReadingFile(fill) = &mut self.state else {
            return Action::Close;
        };
        fill.checked = Some(res);
        self.chunk_read(cx)
    }

    /// A directory-origin chunk's read and the `statx` after it have both completed: read
    /// the rest, or store and send the chunk if the file is still the version the response
    /// was built from. A file that changed (length, modification time or inode) under the
    /// read cuts the connection: the bytes read may be the new file's, so they are neither
    /// stored nor sent, and the description goes so that the next request describes the
    /// file again.
    fn chunk_read(&mut self, cx: &mut Cx<'_>) -> Action {
        let (State::ReadingFile(fill), Some(_)) = (&mut self.state, self.body.as_ref()) else {
            return Action::Close;
        };
        let (Some(res), Some(checked)) = (fill.read, fill.checked) else {
            return Action::Idle;
        };
        // The file shrank or failed under us: the head promised more bytes than we can
        // send, so the client must see a cut connection, never a short body as whole.
        let failed = |what: &str, res: i32| {
            log::warn!(
                "origin {what} of {:?} chunk {} failed: {res}",
                self.key,
                fill.key.index
            );
            cx.shared.cache.meta.remove(&self.key);
            Action::Close
        };
        if res <= 0 {
            return failed("read", res);
        }
        fill.got += res as usize;
        if checked >= 0 && FileStat::from_statx(&fill.stat).version() != fill.key.version {
            return self.file_changed(cx);
        }
        if fill.got < fill.buf.len() {
            // A short read (its `statx` canceled): the rest, and a look after it.
            return self.read_chunk(cx);
        }
        if checked < 0 {
            return failed("statx after the read", checked);
        }
        let State::ReadingFile(fill) = self.leave() else {
            return Action::Close;
        };
        let chunk = fill.buf.freeze();
        let key = fill.key;
        cx.shared.cache.memory.insert(key.clone(), chunk.clone());
        cx.stats.origin_file_reads.fetch_add(1, Ordering::Relaxed);
        self.publish_chunk_share(cx, Some((&key, chunk)));
        self.poll(cx)
    }

    /// The directory-origin file changed since the description the response was built
    /// from: cut the connection (its client sees fewer bytes than announced, never a body
    /// mixed from two files), count it, and drop the description.
    fn file_changed(&mut self, cx: &Cx<'_>) -> Action {
        log::warn!(
            "origin file {:?} changed while being served; cutting the response",
            self.key
        );
        cx.stats.origin_file_changed.fetch_add(1, Ordering::Relaxed);
        cx.shared.cache.meta.remove(&self.key);
        Action::Close
    }

    /// The reads of a disk-tier chunk: its file's open first, then the header into a heap
    /// buffer and the body into its own memory (the registered arena when large enough),
    /// both at once.
    pub(super) fn read_disk(&mut self, cx: &Cx<'_>) -> Action {
        let State::ReadingDisk(d) = &mut self.state else {
            return Action::Idle;
        };
        self.phase = Phase::Fill;
        self.deadline = cx.now + cx.timeouts.send;
        let Some(file) = d.file.as_ref() else {
            // Open the chunk file through the ring first (no blocking open on the loop).
            d.reads += 1;
            return Action::OpenDisk {
                path: d.path.as_ptr(),
            };
        };
        let fd = file.as_raw_fd();
        let header = (d.header_got < d.header.len()).then(|| {
            d.reads += 1;
            let room = &mut d.header[d.header_got..];
            ReadOp {
                fd,
                at: room.as_mut_ptr(),
                len: room.len(),
                offset: d.plan.offset + d.header_got as u64,
            }
        });
        let body = (d.body_got < d.body.len()).then(|| {
            d.reads += 1;
            ReadOp {
                fd,
                at: d.body.as_ptr().wrapping_add(d.body_got),
                len: d.body.len() - d.body_got,
                offset: d.plan.offset + d.plan.body_offset + d.body_got as u64,
            }
        });
        Action::ReadDisk { header, body }
    }

    /// A disk-tier chunk file's open completed: read it, or take a failed open for a failed
    /// read (the entry leaves the index and the chunk comes from upstream).
    pub fn on_disk_opened(&mut self, cx: &mut Cx<'_>, file: Result<File, i32>) -> Action {
        let State::ReadingDisk(d) = &mut self.state else {
            // Opened for nothing: the file closes here.
            return self.poll(cx);
        };
        match file {
            Ok(file) => {
                d.reads = d.reads.saturating_sub(1);
                d.file = Some(file);
                self.read_disk(cx)
            }
            // Counted like a read that failed: the entry leaves the index.
            Err(e) => self.on_disk_read(cx, false, e),
        }
    }

    /// One read of a disk-tier chunk completed (`body_part`: the body's, else the
    /// header's). When both are done, verified bytes go to memory (promotion) and to this
    /// response; a bad or vanished file is dropped and counted, and the chunk is fetched
    /// from upstream instead. A corrupt chunk is never sent.
    pub fn on_disk_read(&mut self, cx: &mut Cx<'_>, body_part: bool, res: i32) -> Action {
        let (Some(disk), State::ReadingDisk(d)) = (cx.shared.cache.disk.as_ref(), &mut self.state)
        else {
            return self.poll(cx);
        };
        d.reads = d.reads.saturating_sub(1);
        if res <= 0 {
            d.failed.get_or_insert(res);
        } else if body_part {
            d.body_got += res as usize;
        } else {
            d.header_got += res as usize;
        }
        if d.reads > 0 {
            return Action::Idle;
        }
        if d.failed.is_none() && (d.header_got < d.header.len() || d.body_got < d.body.len()) {
            // A short read (rare for files): read the rest.
            return self.read_disk(cx);
        }
        let State::ReadingDisk(d) = self.leave() else {
            return self.poll(cx);
        };
        if let Some(res) = d.failed {
            let e = if res < 0 {
                std::io::Error::from_raw_os_error(-res)
            } else {
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
            };
            disk.read_failed(&d.plan, &e);
            if d.restore {
                self.phase = Phase::Recv;
                if !self.settle_restore(cx) {
                    self.respond(cx);
                }
            }
            self.publish_chunk_share(cx, None);
            return self.poll(cx);
        }
        if d.restore {
            match disk.verify_parts(&d.plan, &d.header, d.body.as_ref()) {
                Ok(h) => {
                    cx.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                    self.restored(cx, &d.plan, &h, d.body.freeze());
                }
                Err(e) => {
                    log::warn!("disk tier: {e}; fetching {:?} again", d.plan.key.object);
                    cx.stats.disk_corrupt.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.phase = Phase::Recv;
            if !self.settle_restore(cx) {
                self.respond(cx);
            }
            return self.poll(cx);
        }
        let shared = match disk.verify_parts(&d.plan, &d.header, d.body.as_ref()) {
            Ok(_) => {
                let bytes = d.body.freeze();
                cx.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                if self.body.as_ref().is_some_and(|b| b.meta.storable) {
                    cx.shared
                        .cache
                        .memory
                        .insert(d.plan.key.clone(), bytes.clone());
                }
                self.local = Some((d.plan.key.version, d.plan.key.index, bytes.clone()));
                Some(bytes)
            }
            Err(e) => {
                log::warn!("disk tier: {e}; fetching the chunk again");
                cx.stats.disk_corrupt.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        self.publish_chunk_share(cx, shared.map(|b| (&d.plan.key, b)));
        self.poll(cx)
    }

    /// The chunk read this connection made for others too has ended: hand its verified
    /// bytes (or None: read or fetch it yourselves) to the connections waiting on it.
    /// `read`: the chunk's key and its bytes, handed on only when that is the chunk the
    /// share is for.
    pub(super) fn publish_chunk_share(&mut self, cx: &Cx<'_>, read: Option<(&ChunkKey, Bytes)>) {
        let Some(share) = self.chunk_share.take() else {
            return;
        };
        let bytes = read.filter(|(k, _)| **k == share.key).map(|(_, b)| b);
        cx.shared
            .cache
            .inflight
            .settle(&share, bytes, &cx.shared.wake);
    }
}

#[cfg(test)]
impl Exchange {
    /// The path of the directory-origin file being opened (what `Action::OpenDir` names).
    pub(super) fn dir_path(&self) -> Option<&std::ffi::CStr> {
        match &self.state {
            State::Opening(o) => Some(o.path.as_c_str()),
            _ => None,
        }
    }

    /// The path of the disk-tier chunk file being opened (what `Action::OpenDisk` names).
    pub(super) fn disk_path(&self) -> Option<&std::ffi::CStr> {
        match &self.state {
            State::ReadingDisk(d) => Some(d.path.as_c_str()),
            _ => None,
        }
    }

    /// The `statx` buffer of the directory-origin file being described (what
    /// `Action::StatDir` fills).
    pub(super) fn dir_stat_buf(&mut self) -> Option<&mut libc::statx> {
        match &mut self.state {
            State::Opening(o) => Some(&mut *o.stat),
            _ => None,
        }
    }
}

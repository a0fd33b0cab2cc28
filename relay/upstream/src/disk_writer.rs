//! Writes admitted chunks to the disk tier through io_urings of their own, on threads of
//! their own: open the temp file, one `writev` of header and body, optional `fdatasync`,
//! close, `renameat` into place (creating the directory on first use), then commit to the
//! index. Neither the upstream loop nor a serving worker ever waits on the disk.
//!
//! [`WRITERS`] threads take jobs from one queue, each writing one chunk at a time: a
//! chunk's write waits on the device (an `O_DIRECT` write, ext4 creating the file), and one
//! thread alone left the device at a queue depth of one, so a disk slowed by other I/O held
//! the queued chunks' memory, which the fills then waited for. Two writes of one chunk may
//! overlap (a fill's, and one admitted as it was served); each is numbered as it is queued
//! and has its own temp and final file under that number, and the one queued later stays
//! whichever commits first, as it would after a restart. A job admitted only if the tier
//! lacks its chunk is dropped while another writer writes that chunk.
//!
//! A chunk whose body is page-aligned in memory and a whole number of pages long (a full
//! chunk in the memory tier's arena) is written with `O_DIRECT`, its header copied into a
//! page-aligned buffer: the device reads the chunk where it lies, with no copy into the
//! page cache, and the page cache does not hold a second copy of what the memory tier
//! holds (nor dirty pages to write back in bursts). Other chunks, and every chunk on a
//! filesystem that refuses `O_DIRECT`, go through the page cache.
//!
//! The buffer rule: every pointer handed to the kernel (paths, iovecs, header and body
//! bytes) lives in the job being written, and each operation is waited for before the next
//! is submitted, so nothing is freed while the kernel may read it.

use bytes::Bytes;
use io_uring::{IoUring, opcode, types};
use relay_cache::ChunkKey;
use relay_cache::disk::{ChunkInfo, DiskTier, WritePlan};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One chunk to write.
pub struct WriteJob {
    pub key: ChunkKey,
    pub object_len: u64,
    pub etag: String,
    pub last_modified: String,
    pub meta: Vec<u8>,
    pub body: Bytes,
    /// The body's checksum, taken as it was written into its fill (None: taken here).
    pub sum: Option<u64>,
    /// Not written when the tier holds the chunk already (one admitted as it was served
    /// from memory, which may have come from the disk).
    pub if_absent: bool,
    /// The disk tiers' removals when the chunk's bytes were asked for (its fill's start,
    /// `Fill::since`; for a chunk in memory, when it was queued): one after it naming the
    /// chunk's object keeps it out.
    pub since: u64,
}

/// The writer threads' inbox.
#[derive(Clone)]
pub struct DiskWriter {
    tx: crossbeam_channel::Sender<Queued>,
    disk: Arc<DiskTier>,
    stats: Arc<WriterStats>,
}

/// A job as queued: numbered then, so that the write queued last is the newest whichever
/// writer finishes first ([`DiskTier::next_write`]).
struct Queued {
    job: WriteJob,
    generation: u64,
}

/// The chunks being written now, so that a job admitted only if the tier lacks its chunk
/// (`if_absent`) is dropped while another writer writes that chunk, as it is once the tier
/// holds it.
#[derive(Default)]
struct Writing(std::sync::Mutex<std::collections::HashMap<ChunkKey, u32>>);

impl Writing {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ChunkKey, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `job` is to be written (not an `if_absent` one whose chunk is being written
    /// or held); if so it is noted as being written until [`Writing::done`]. (Checked and
    /// noted under one lock: of two `if_absent` jobs of a chunk, one writes.)
    fn take(&self, job: &WriteJob, disk: &DiskTier) -> bool {
        let mut map = self.map();
        let skip =
            job.if_absent && (map.contains_key(&job.key) || disk.contains(&job.key.as_ref()));
        if !skip {
            *map.entry(job.key.clone()).or_default() += 1;
        }
        !skip
    }

    fn done(&self, key: &ChunkKey) {
        let mut map = self.map();
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }
}

/// What the writers did, for `/metrics`.
#[derive(Default)]
pub struct WriterStats {
    /// Chunks written and committed to the index.
    pub written: AtomicU64,
    /// Writes that failed.
    pub failed: AtomicU64,
    /// Chunks admitted but not written: the queue was full.
    pub queue_full: AtomicU64,
    /// Body bytes queued now (chunk memory the queue holds).
    pub queued_bytes: AtomicU64,
    /// Nanoseconds spent writing, summed over the writers.
    pub busy_ns: AtomicU64,
}

/// Writer threads: chunks written at once, each waiting on the device on its own.
pub const WRITERS: usize = 4;

/// What `O_DIRECT` asks of a write's memory address, length and file offset: a page covers
/// the logical block size and DMA alignment of the devices relay runs on.
const DIRECT_ALIGN: usize = 4096;

/// Chunks queued beyond this are dropped (counted): the disk tier is a cache, and a disk
/// that cannot keep up must not hold memory without bound.
const QUEUE: usize = 1024;

impl DiskWriter {
    pub fn start(disk: Arc<DiskTier>, stats: Arc<WriterStats>) -> io::Result<DiskWriter> {
        let (tx, rx) = crossbeam_channel::bounded::<Queued>(QUEUE);
        let writing = Arc::new(Writing::default());
        for n in 0..WRITERS {
            let ring = IoUring::new(8)?;
            let (rx, disk, stats) = (rx.clone(), disk.clone(), stats.clone());
            let writing = writing.clone();
            std::thread::Builder::new()
                .name(format!("relay-disk-{n}"))
                .spawn(move || write_jobs(ring, &rx, &disk, &stats, &writing))?;
        }
        Ok(DiskWriter { tx, disk, stats })
    }

    /// Queues a chunk (a purge or an invalidation of its object since `job.since` keeps
    /// it off the disk); false when the queue is full (the chunk is then not written, and
    /// counted).
    pub fn submit(&self, job: WriteJob) -> bool {
        let len = job.body.len() as u64;
        self.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let generation = self.disk.next_write();
        let queued = self.tx.try_send(Queued { job, generation }).is_ok();
        if !queued {
            self.stats.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }
}

/// One writer thread: takes jobs from the queue until every sender is gone.
fn write_jobs(
    mut ring: IoUring,
    rx: &crossbeam_channel::Receiver<Queued>,
    disk: &DiskTier,
    stats: &WriterStats,
    writing: &Writing,
) {
    // Cleared when the filesystem refuses O_DIRECT.
    let mut direct = true;
    for Queued { job, generation } in rx {
        let started = std::time::Instant::now();
        if writing.take(&job, disk) {
            match write(&mut ring, disk, &job, generation, &mut direct) {
                Ok(true) => {
                    stats.written.fetch_add(1, Ordering::Relaxed);
                }
                // (Refused at commit: its object was removed since; the tier counts it.)
                Ok(false) => {}
                Err(e) => {
                    log::warn!(
                        "disk write of {:?} chunk {}: {e}",
                        job.key.object,
                        job.key.index
                    );
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            writing.done(&job.key);
        }
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        stats.busy_ns.fetch_add(took, Ordering::Relaxed);
        stats
            .queued_bytes
            .fetch_sub(job.body.len() as u64, Ordering::Relaxed);
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))
}

/// Submits one entry and waits for its completion; the result as the syscall would give.
fn run(ring: &mut IoUring, sqe: io_uring::squeue::Entry) -> io::Result<i32> {
    // SAFETY: the entry's pointers live in the caller's frame until this returns, and this
    // returns only after the completion (module rule).
    unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("queue full"))?;
    ring.submit_and_wait(1)?;
    // The entry is submitted: the kernel may use its buffers until its completion, so this
    // waits for it through any interrupted wait rather than return before it.
    let cqe = loop {
        if let Some(cqe) = ring.completion().next() {
            break cqe;
        }
        match ring.submit_and_wait(1) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
    };
    let res = cqe.result();
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    Ok(res)
}

fn write(
    ring: &mut IoUring,
    disk: &DiskTier,
    job: &WriteJob,
    generation: u64,
    direct: &mut bool,
) -> Result<bool, String> {
    let info = ChunkInfo {
        key: job.key.as_ref(),
        object_len: job.object_len,
        etag: &job.etag,
        last_modified: &job.last_modified,
        meta: &job.meta,
    };
    let mut plan = disk
        .plan_write_numbered(&info, &job.body, job.sum, generation)
        .map_err(|e| e.to_string())?;
    plan.since = job.since;
    match write_file(ring, &plan, &job.body, direct) {
        // (False: its object was removed since; counted by the tier.)
        Ok(()) => Ok(disk.commit_write(&plan)),
        Err(e) => {
            disk.abort_write(&plan);
            Err(e.to_string())
        }
    }
}

/// Whether `bytes` may be written with `O_DIRECT`: page-aligned, whole pages.
fn direct_ok(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && (bytes.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
        && bytes.len().is_multiple_of(DIRECT_ALIGN)
}

fn open_temp(ring: &mut IoUring, temp: &CString, direct: bool) -> io::Result<i32> {
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC;
    run(
        ring,
        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), temp.as_ptr())
            .flags(if direct {
                flags | libc::O_DIRECT
            } else {
                flags
            })
            .mode(0o644)
            .build(),
    )
}

/// Writes the chunk's file: with O_DIRECT when `direct` still holds and the chunk is whole
/// pages, else (or when the filesystem or device refuses it, which clears `direct`) through
/// the page cache.
fn write_file(
    ring: &mut IoUring,
    plan: &WritePlan,
    body: &[u8],
    direct: &mut bool,
) -> io::Result<()> {
    // The header padded to the body's offset, in a page of its own: a large chunk's body
    // starts on a page boundary, so header and body are whole pages.
    let whole_pages = direct_ok(body) && plan.header.len().is_multiple_of(DIRECT_ALIGN);
    let page = (*direct && whole_pages)
        .then(|| PageAligned::copy_of(&plan.header))
        .flatten();
    if let Some(page) = page {
        match write_temp(ring, plan, page.bytes(), body, true) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // The filesystem takes no O_DIRECT, or the device asks more alignment than
                // a page: this chunk and the next ones go through the page cache.
                log::info!(
                    "disk tier: O_DIRECT refused ({e}); chunks are written through the page cache"
                );
                *direct = false;
                let _ = std::fs::remove_file(&plan.temp_path);
            }
            r => return r,
        }
    }
    write_temp(ring, plan, &plan.header, body, false)
}

/// Creates the temp file (`O_DIRECT` when `direct`), writes `header` then `body`, syncs if
/// asked, closes, and renames it into place.
fn write_temp(
    ring: &mut IoUring,
    plan: &WritePlan,
    header: &[u8],
    body: &[u8],
    direct: bool,
) -> io::Result<()> {
    let temp = cpath(&plan.temp_path)?;
    let fd = open_temp(ring, &temp, direct)?;
    let result = (|| {
        let parts: [&[u8]; 2] = [header, body];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0usize;
        while done < total {
            // iovecs for what is left.
            let mut iov = Vec::with_capacity(2);
            let mut skip = done;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                let rest = &p[skip..];
                skip = 0;
                iov.push(libc::iovec {
                    iov_base: rest.as_ptr() as *mut libc::c_void,
                    iov_len: rest.len(),
                });
            }
            let n = run(
                ring,
                opcode::Writev::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32)
                    .offset(done as u64)
                    .build(),
            )?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            done += n as usize;
        }
        if plan.fsync {
            run(
                ring,
                opcode::Fsync::new(types::Fd(fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            )?;
        }
        Ok(())
    })();
    run(ring, opcode::Close::new(types::Fd(fd)).build())?;
    result?;
    let dest = cpath(&plan.final_path)?;
    let rename = |ring: &mut IoUring| {
        run(
            ring,
            opcode::RenameAt::new(
                types::Fd(libc::AT_FDCWD),
                temp.as_ptr(),
                types::Fd(libc::AT_FDCWD),
                dest.as_ptr(),
            )
            .build(),
        )
    };
    match rename(ring) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // First chunk in this fan-out directory: create it and try again.
            let dir = cpath(plan.final_dir())?;
            match run(
                ring,
                opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), dir.as_ptr())
                    .mode(0o755)
                    .build(),
            ) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            rename(ring).map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

/// A copy of some bytes at a page-aligned address (an `O_DIRECT` write's header).
struct PageAligned {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    layout: std::alloc::Layout,
}

impl PageAligned {
    /// `bytes` copied to a page boundary; None for no bytes.
    fn copy_of(bytes: &[u8]) -> Option<PageAligned> {
        let layout = std::alloc::Layout::from_size_align(bytes.len(), DIRECT_ALIGN).ok()?;
        if bytes.is_empty() {
            return None;
        }
        // SAFETY: the layout's size is not zero (checked above).
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: `ptr` holds `layout.size() == bytes.len()` fresh bytes, apart from `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        Some(PageAligned {
            ptr,
            len: bytes.len(),
            layout,
        })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `copy_of` wrote all `len` bytes; they live until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

// SAFETY: it owns its allocation alone, and hands out only shared slices of it.
unsafe impl Send for PageAligned {}

impl Drop for PageAligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `copy_of` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_cache::disk::DiskConfig;

    impl AsRef<[u8]> for PageAligned {
        fn as_ref(&self) -> &[u8] {
            self.bytes()
        }
    }

    /// Pages of the file at `path` in the page cache, and its pages.
    fn cached_pages(path: &Path) -> (usize, usize) {
        let file = std::fs::File::open(path).expect("open");
        let len = file.metadata().expect("stat").len() as usize;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: a fresh shared read-only mapping of the whole file, unmapped below; only
        // its residency is asked, no byte of it is read.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        let mut pages = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `at` maps `len` bytes; `pages` holds one byte per page of them.
        let r = unsafe { libc::mincore(at, len, pages.as_mut_ptr()) };
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(at, len) };
        assert_eq!(r, 0);
        (pages.iter().filter(|&&p| p & 1 == 1).count(), pages.len())
    }

    /// Whether `path` is on tmpfs, whose files live in the page cache whatever the flags.
    fn on_tmpfs(path: &Path) -> bool {
        let c = CString::new(path.as_os_str().as_bytes()).expect("path");
        // SAFETY: statfs writes only into the zeroed struct it is given.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a NUL-terminated path; `st` is a valid statfs to fill.
        let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        r == 0 && st.f_type == libc::TMPFS_MAGIC
    }

    fn job(index: u64, body: Bytes) -> WriteJob {
        WriteJob {
            key: ChunkKey {
                object: Arc::from("http://o/big"),
                version: 7,
                index,
            },
            object_len: 8 << 20,
            etag: "\"e\"".into(),
            last_modified: String::new(),
            meta: b"m".to_vec(),
            body,
            sum: None,
            if_absent: false,
            since: 0,
        }
    }

    /// A full chunk from page-aligned memory (as the arena holds it) is written with
    /// O_DIRECT where the filesystem takes it, a chunk of any other length through the
    /// page cache, and each reads back whole and verified; on a filesystem that refuses
    /// O_DIRECT the writer goes on without it.
    #[test]
    fn whole_page_chunks_are_written_direct_and_others_buffered_and_all_read_back() {
        for parent in [std::env::temp_dir(), std::path::PathBuf::from("/dev/shm")] {
            if !parent.is_dir() {
                continue;
            }
            let dir = parent.join(format!("relay-dw-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let disk = DiskTier::open(&DiskConfig::new(&dir, 64 << 20)).expect("tier");
            let mut ring = IoUring::new(8).expect("ring");
            let mut direct = true;
            let full: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
            let aligned = PageAligned::copy_of(&full).expect("aligned");
            assert!(direct_ok(aligned.bytes()));
            let odd = Bytes::from(full[..300_001].to_vec());
            write(
                &mut ring,
                &disk,
                &job(0, Bytes::from_owner(aligned)),
                disk.next_write(),
                &mut direct,
            )
            .expect("the full chunk");
            let after_full = direct;
            write(
                &mut ring,
                &disk,
                &job(1, odd.clone()),
                disk.next_write(),
                &mut direct,
            )
            .expect("the odd one");
            for (index, want) in [(0u64, &full[..]), (1, &odd[..])] {
                let key = job(index, Bytes::new()).key;
                let path = disk.locate(&key.as_ref()).expect("located").path;
                let (cached, pages) = cached_pages(&path);
                match (index, after_full) {
                    // Written past the page cache: none of it there (before it is read).
                    (0, true) if !on_tmpfs(&parent) => {
                        assert_eq!(cached, 0, "{}", parent.display())
                    }
                    (0, true) => {}
                    // Through the page cache: all of it there.
                    _ => assert_eq!(cached, pages, "{} chunk {index}", parent.display()),
                }
                let got = disk.get(&key.as_ref()).expect("read").expect("held");
                assert_eq!(&got.body[..], want, "{} chunk {index}", parent.display());
            }
            eprintln!(
                "{}: O_DIRECT {}",
                parent.display(),
                if after_full { "taken" } else { "refused" }
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Chunks queued faster than one writer could take them are all written by the
    /// writers side by side, each readable and counted, two writes of one chunk included
    /// (the one queued later stays), and the queue's bytes go back to zero.
    #[test]
    fn queued_chunks_are_all_written_by_the_writers_and_counted() {
        let (dir, disk, stats, writer) = writers("many");
        let body = |i: u64| Bytes::from(vec![(i % 251) as u8; 4096 * (1 + i as usize % 5)]);
        let jobs = 96u64;
        for i in 0..jobs {
            assert!(writer.submit(job(i, body(i))), "queued");
        }
        // Chunk 3 again, while the first may still be on its way.
        assert!(writer.submit(job(3, body(3))));
        drained(&stats);
        // (The second write of chunk 3 stays; the first is written too, unless it came to
        // commit after the second, which refuses it.)
        let written = stats.written.load(Ordering::Relaxed);
        assert!((jobs..=jobs + 1).contains(&written), "{written} written");
        assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
        assert_eq!(stats.queue_full.load(Ordering::Relaxed), 0);
        for i in 0..jobs {
            let key = job(i, Bytes::new()).key;
            let got = disk.get(&key.as_ref()).expect("read").expect("held");
            assert_eq!(got.body, body(i), "chunk {i}");
        }
        assert_eq!(disk.stats().entries, jobs as usize);
        assert!(stats.busy_ns.load(Ordering::Relaxed) > 0);
        drop(writer);
        drop(disk);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A disk tier of 256 MiB in a fresh temp dir, and the writers on it.
    fn writers(
        tag: &str,
    ) -> (
        std::path::PathBuf,
        Arc<DiskTier>,
        Arc<WriterStats>,
        DiskWriter,
    ) {
        let dir = std::env::temp_dir().join(format!("relay-dw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let disk = Arc::new(DiskTier::open(&DiskConfig::new(&dir, 256 << 20)).expect("tier"));
        let stats = Arc::new(WriterStats::default());
        let writer = DiskWriter::start(disk.clone(), stats.clone()).expect("writers");
        (dir, disk, stats, writer)
    }

    /// Waits (at most 20 s) until the writers have taken every job queued.
    fn drained(stats: &WriterStats) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while stats.queued_bytes.load(Ordering::Relaxed) != 0 {
            assert!(std::time::Instant::now() < until, "done within 20 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Two versions of an object's first chunk queued one after the other, the older one
    /// slower to plan (its checksum taken by the writer): the one queued last is the
    /// newest on disk, whichever writer finished first (a restore describes the object
    /// from it).
    #[test]
    fn the_version_queued_last_is_the_newest_on_disk() {
        let (dir, disk, stats, writer) = writers("ver");
        let object = "http://o/changed";
        let key = |version| ChunkKey {
            object: Arc::from(object),
            version,
            index: 0,
        };
        let old = Bytes::from(vec![1u8; 16 << 20]);
        let new = Bytes::from(vec![2u8; 4096]);
        let v1 = WriteJob {
            key: key(1),
            object_len: old.len() as u64,
            body: old,
            sum: None,
            if_absent: true,
            ..job(0, Bytes::new())
        };
        let v2 = WriteJob {
            key: key(2),
            object_len: new.len() as u64,
            sum: Some(relay_cache::disk::checksum(&new)),
            body: new,
            ..job(0, Bytes::new())
        };
        assert!(writer.submit(v1));
        assert!(writer.submit(v2));
        drained(&stats);
        assert_eq!(stats.written.load(Ordering::Relaxed), 2);
        let newest = disk.object(object).map(|v| v.version);
        drop(writer);
        drop(disk);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            newest,
            Some(2),
            "the version queued last is the newest on disk"
        );
    }

    /// A chunk admitted as it was served (`if_absent`) queued twice at once is written
    /// once: the second finds it being written.
    #[test]
    fn an_if_absent_chunk_queued_twice_is_written_once() {
        let (dir, disk, stats, writer) = writers("abs");
        let body = Bytes::from(vec![3u8; 4 << 20]);
        for _ in 0..2 {
            let again = WriteJob {
                if_absent: true,
                ..job(0, body.clone())
            };
            assert!(writer.submit(again));
        }
        drained(&stats);
        let (written, replaced) = (stats.written.load(Ordering::Relaxed), disk.stats().replaced);
        drop(writer);
        drop(disk);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((written, replaced), (1, 0), "one write of one chunk");
    }

    /// A chunk queued before its object was removed (a purge, an unsafe method's
    /// invalidation) is written, then refused at commit: it never reaches the index, its
    /// file goes. One queued after the removal lands.
    #[test]
    fn a_chunk_queued_before_its_object_was_removed_never_lands() {
        let dir = std::env::temp_dir().join(format!("relay-dw-rm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let disk = Arc::new(DiskTier::open(&DiskConfig::new(&dir, 64 << 20)).expect("tier"));
        let mut ring = IoUring::new(8).expect("ring");
        let mut direct = true;
        let queued = WriteJob {
            since: disk.removals(),
            ..job(0, Bytes::from_static(b"old bytes"))
        };
        disk.remove_object("http://o/big");
        write(&mut ring, &disk, &queued, disk.next_write(), &mut direct).expect("written");
        assert!(!disk.contains(&queued.key.as_ref()), "refused at commit");
        assert_eq!(disk.stats().refused_removed, 1);
        disk.unlink_pending();
        let later = WriteJob {
            since: disk.removals(),
            ..job(0, Bytes::from_static(b"new bytes"))
        };
        write(&mut ring, &disk, &later, disk.next_write(), &mut direct).expect("written");
        let got = disk.get(&later.key.as_ref()).expect("read").expect("held");
        assert_eq!(&got.body[..], b"new bytes");
        fn files(dir: &Path) -> usize {
            std::fs::read_dir(dir)
                .expect("dir")
                .flatten()
                .fold(0, |n, e| match e.file_type().expect("type").is_dir() {
                    true => n + files(&e.path()),
                    false => n + usize::from(e.file_name() != "lock"),
                })
        }
        assert_eq!(files(&dir), 1, "the refused chunk's file is gone");
        drop(disk);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

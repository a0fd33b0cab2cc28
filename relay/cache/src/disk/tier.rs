//! [`DiskTier`]: the index plus the plan/commit/verify operations whose I/O the caller does
//! (io_uring in the server), and a blocking std::fs implementation of the same operations
//! ([`DiskTier::put`], [`DiskTier::get`]) for tests and for callers off the hot path.

use super::error::{Corruption, DiskError};
use super::format::{self, ChunkHeader, ChunkInfo};
use super::index::{Entry, Gone, Index, ObjectVersion};
use super::recover::{self, RecoveryReport};
use crate::key::{ChunkKey, ChunkRef};
use bytes::Bytes;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Where and how big the disk tier is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The cache directory (created if missing). One relay per directory: a lock file
    /// inside it enforces that.
    pub dir: PathBuf,
    /// Bytes of chunk files (each counted in whole 4 KiB blocks) the tier may hold.
    pub capacity_bytes: u64,
    /// The usual chunk size, to size the index up front.
    pub chunk_size: u64,
    /// `fdatasync` each chunk before its rename. Off by default: the tier promises never
    /// to serve a wrong byte, not to keep every chunk across a power cut, and checksums
    /// keep the first promise without syncing.
    pub fsync: bool,
    /// Threads reading headers at start.
    pub recovery_threads: usize,
}

impl DiskConfig {
    pub fn new(dir: impl Into<PathBuf>, capacity_bytes: u64) -> Self {
        DiskConfig {
            dir: dir.into(),
            capacity_bytes,
            chunk_size: 1 << 20,
            fsync: false,
            recovery_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// How to write one chunk: the caller creates `temp_path` (`O_CREAT|O_EXCL`), writes
/// `header` at offset 0 and the body at `body_offset` (one `writev`), `fdatasync`s if
/// `fsync`, renames it to `final_path` (on `ENOENT`, creates [`WritePlan::final_dir`] and
/// retries), then calls [`DiskTier::commit_write`] — or [`DiskTier::abort_write`] on any
/// failure.
#[derive(Clone, Debug)]
pub struct WritePlan {
    pub key: ChunkKey,
    pub temp_path: PathBuf,
    pub final_path: PathBuf,
    /// The header padded to the body offset: `header.len() == body_offset`.
    pub header: Vec<u8>,
    pub body_offset: u64,
    pub body_len: u64,
    /// Checksum of the body (also inside `header`).
    pub checksum: u64,
    pub object_len: u64,
    pub generation: u64,
    pub fsync: bool,
    /// The removals made when the chunk's bytes were asked for ([`removals`]: its fill's
    /// start, `Fill::since`): a removal after it that names the chunk's object keeps the
    /// write from landing. Set to the plan's own time; a writer whose bytes were fetched or
    /// waited in a queue before sets it to theirs.
    pub since: u64,
}

impl WritePlan {
    /// Bytes of the whole file.
    pub fn file_len(&self) -> u64 {
        self.body_offset + self.body_len
    }

    /// The directory `final_path` lives in.
    pub fn final_dir(&self) -> &Path {
        self.final_path.parent().unwrap_or(Path::new("."))
    }
}

/// How to read one chunk: the caller reads `len` bytes at `offset` (the whole file: header
/// and body in one read) from `path`, then hands them to [`DiskTier::verify`] — or, if the
/// open or read fails, the error to [`DiskTier::read_failed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    pub key: ChunkKey,
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// Where the body starts in the bytes read; the body is `body_offset..len`.
    pub body_offset: u64,
    pub body_len: u64,
    pub expected_checksum: u64,
    pub generation: u64,
    /// Lookups of this chunk since it was stored or loaded, this one included: the hint
    /// for promotion to memory (e.g. promote from the second hit on).
    pub hits: u32,
}

/// A chunk whose bytes passed verification: its header, and where its body is in the
/// buffer that was verified (so the body can be sent from that buffer without a copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChunk {
    pub header: ChunkHeader,
    pub body: Range<usize>,
}

impl ReadPlan {
    /// Verifies the bytes read for this plan: the header (checksum, key, generation,
    /// lengths) and the body checksum. Pure: no I/O, no index change.
    pub fn check(&self, bytes: &[u8]) -> Result<VerifiedChunk, Corruption> {
        let Some(bytes) = usize::try_from(self.len).ok().and_then(|n| bytes.get(..n)) else {
            return Err(Corruption::Truncated {
                expected: self.len,
                actual: bytes.len() as u64,
            });
        };
        let split = usize::try_from(self.body_offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let (head, body) = bytes.split_at(split);
        let header = self.check_parts(head, body)?;
        Ok(VerifiedChunk {
            header,
            body: split..bytes.len(),
        })
    }

    /// Like [`ReadPlan::check`], for a file read in two parts: `header` holds the bytes
    /// before `body_offset`, `body` the `body_len` bytes after (so the body can be read
    /// straight into the memory it will be sent from).
    pub fn check_parts(&self, header: &[u8], body: &[u8]) -> Result<ChunkHeader, Corruption> {
        let got = (header.len() + body.len()) as u64;
        if got < self.len || body.len() as u64 != self.body_len {
            return Err(Corruption::Truncated {
                expected: self.len,
                actual: got,
            });
        }
        let decoded = format::decode_header(header)?;
        if decoded.key != self.key || decoded.generation != self.generation {
            return Err(Corruption::WrongChunk);
        }
        let expected = decoded.file_len();
        if expected > self.len {
            return Err(Corruption::Truncated {
                expected,
                actual: self.len,
            });
        }
        if expected < self.len {
            return Err(Corruption::Oversized {
                expected,
                actual: self.len,
            });
        }
        // The file's own layout must match the split it was read with.
        if decoded.body_offset != header.len() as u64 || decoded.body_offset != self.body_offset {
            return Err(Corruption::BadField("body_offset"));
        }
        if decoded.body_sum != self.expected_checksum {
            return Err(Corruption::WrongChunk);
        }
        if format::checksum(body) != decoded.body_sum {
            return Err(Corruption::BodyChecksum);
        }
        Ok(decoded)
    }
}

/// A chunk read by the blocking [`DiskTier::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    pub header: ChunkHeader,
    /// The body: a slice of the buffer the file was read into.
    pub body: Bytes,
    /// As [`ReadPlan::hits`].
    pub hits: u32,
}

/// Counters and sizes of the disk tier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub entries: usize,
    /// Bytes held (files in whole blocks).
    pub usage: u64,
    pub capacity: u64,
    pub writes: u64,
    pub reads: u64,
    /// Reads that failed verification: dropped, to be refetched.
    pub corrupt: u64,
    /// Indexed files that had vanished when read.
    pub missing: u64,
    /// Reads that failed with an I/O error other than a vanished file.
    pub read_errors: u64,
    pub evicted: u64,
    pub replaced: u64,
    /// Writes refused as larger than the whole tier.
    pub rejected: u64,
    pub unlink_errors: u64,
    /// Written chunk files refused at commit: a removal since their bytes were taken
    /// named their object ([`DiskTier::commit_write`]).
    pub refused_removed: u64,
    /// Files waiting for the caller to unlink them.
    pub pending_unlinks: usize,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    reads: AtomicU64,
    corrupt: AtomicU64,
    missing: AtomicU64,
    read_errors: AtomicU64,
    evicted: AtomicU64,
    replaced: AtomicU64,
    rejected: AtomicU64,
    unlink_errors: AtomicU64,
    refused_removed: AtomicU64,
}

struct Inner {
    index: Index,
    /// Files no longer in the index, for the caller to delete. Every path names one write
    /// generation, so deleting it late can never hit a newer file of the same chunk.
    unlinks: Vec<PathBuf>,
    /// The last removals ([`REMOVALS_KEPT`]), each with its number: a write planned
    /// before one that names its object is refused at commit ([`DiskTier::commit_write`]).
    removals: std::collections::VecDeque<(u64, Removal)>,
    /// The number of the last removal let go from `removals`: a write from before it is
    /// refused whatever it names.
    forgotten: u64,
}

/// Removals made by any disk tier of the process: each is numbered by it, and a chunk's fill
/// takes the count when it starts (`Fill::since`), so a write of bytes asked for before a
/// removal that names their object is refused ([`DiskTier::commit_write`]).
static REMOVALS: AtomicU64 = AtomicU64::new(0);

/// The objects held that `what` names, from the index's key order (not a walk of every
/// chunk).
fn named(index: &Index, what: &Removal) -> Vec<Arc<str>> {
    match what {
        Removal::Object(k) | Removal::Version(k, _) => index.objects_from(k, |o| o == &**k),
        Removal::Variants(k) => {
            let variants = format!("{k}\0");
            let mut named = index.objects_from(k, |o| o == &**k);
            named.extend(index.objects_from(&variants, |o| o.starts_with(&variants)));
            named
        }
        Removal::Prefix(p) => index.objects_from(p, |o| o.starts_with(&**p)),
        Removal::First(named) => self::named(index, named),
    }
}

/// Numbers a removal and keeps it among the last [`REMOVALS_KEPT`] (under the index lock:
/// `commit_write` sees each removal with its number).
fn remember(inner: &mut Inner, what: Removal) {
    if inner.removals.len() == REMOVALS_KEPT
        && let Some((n, _)) = inner.removals.pop_front()
    {
        inner.forgotten = n;
    }
    let n = REMOVALS.fetch_add(1, Relaxed) + 1;
    inner.removals.push_back((n, what));
}

/// Removals made so far ([`REMOVALS`]).
pub fn removals() -> u64 {
    REMOVALS.load(Relaxed)
}

/// How many removals the tier remembers for the writes queued before them: a write older
/// than the oldest remembered is refused whatever it is (the disk tier is a cache).
pub(super) const REMOVALS_KEPT: usize = 4096;

/// What a removal named ([`DiskTier::remove_named`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// One object key (every version of it).
    Object(Box<str>),
    /// One object key and its variants (`crate::purge::Purge::Key`).
    Variants(Box<str>),
    /// Every object key with this prefix.
    Prefix(Box<str>),
    /// One version of one object (found to have changed at its origin).
    Version(Box<str>, u64),
    /// The first chunk of each version of what the other names (a soft purge's part:
    /// [`DiskTier::remove_first_chunks`]).
    First(Box<Removal>),
}

impl Removal {
    /// Whether chunk `index` of `version` of `object` (a key as stored) is one this removal
    /// names.
    pub fn matches(&self, object: &str, version: u64, index: u64) -> bool {
        match self {
            Removal::First(named) => index == 0 && named.matches(object, version, index),
            Removal::Object(k) => object == &**k,
            Removal::Variants(k) => crate::purge::Purge::Key(k).matches(object),
            Removal::Prefix(p) => crate::purge::Purge::Prefix(p).matches(object),
            Removal::Version(k, v) => object == &**k && version == *v,
        }
    }
}

/// The disk tier of one relay: a directory of chunk files and their index. Shared by all
/// workers; the index lock is held only for map updates, never across I/O.
pub struct DiskTier {
    root: PathBuf,
    inner: Mutex<Inner>,
    next_generation: AtomicU64,
    /// Bumped whenever the index gains or loses a chunk (for the digest: a scan only after
    /// a change).
    changes: AtomicU64,
    fsync: bool,
    counters: Counters,
    recovery: RecoveryReport,
    /// Held (flock) for the tier's lifetime.
    _lock: File,
}

impl DiskTier {
    /// Opens (or creates) the directory and rebuilds the index from the chunk headers:
    /// leftover temp files are deleted, files whose header does not hold are deleted and
    /// counted, bodies are not read. See [`DiskTier::recovery`] for what was found.
    pub fn open(config: &DiskConfig) -> Result<DiskTier, DiskError> {
        let start = Instant::now();
        let root = config.dir.clone();
        fs::create_dir_all(&root).map_err(|e| DiskError::io("create", &root, e))?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| DiskError::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(DiskError::Locked(root)),
            Err(TryLockError::Error(e)) => return Err(DiskError::io("lock", lock_path, e)),
        }
        let temp_removed = recover::clear_temp(&root)?;
        let (mut found, mut report) = recover::scan(&root, config.recovery_threads)?;
        report.temp_removed = temp_removed;
        // Oldest first: when a chunk has two files the newer one wins, and when the
        // capacity shrank the oldest chunks are the ones evicted.
        found.sort_unstable_by_key(|f| f.entry.generation);
        let mut index = Index::new(config.capacity_bytes, config.chunk_size);
        let mut next_generation = 1;
        let mut unlinks = Vec::new();
        for f in found {
            next_generation = next_generation.max(f.entry.generation + 1);
            let key = ChunkKey {
                object: index.intern(&f.key.object),
                ..f.key
            };
            for (k, e, why) in index.insert(key, f.entry, f.object_len) {
                match why {
                    Gone::Replaced => report.dropped_duplicate += 1,
                    Gone::Evicted => report.dropped_over_capacity += 1,
                }
                unlinks.push(chunk_path(&root, &k, e.generation));
            }
        }
        report.loaded = index.len() as u64;
        let mut tier = DiskTier {
            root,
            inner: Mutex::new(Inner {
                index,
                unlinks,
                removals: Default::default(),
                forgotten: 0,
            }),
            next_generation: AtomicU64::new(next_generation),
            changes: AtomicU64::new(0),
            fsync: config.fsync,
            counters: Counters::default(),
            recovery: report,
            _lock: lock,
        };
        tier.unlink_pending();
        tier.recovery.elapsed = start.elapsed();
        Ok(tier)
    }

    /// What recovery at open found and did, and how long it took.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- writes ------------------------------------------------------------------------

    /// Plans the write of one chunk: checksums the body and encodes the header. Nothing is
    /// visible to readers until [`DiskTier::commit_write`].
    pub fn plan_write(&self, info: &ChunkInfo<'_>, body: &[u8]) -> Result<WritePlan, DiskError> {
        self.plan_write_summed(info, body, None)
    }

    /// [`DiskTier::plan_write`] of a body whose checksum was taken as it was written
    /// (`sum`: [`crate::fill::FillWriter::sum_with`]); None: it is taken here. (Debug
    /// builds take it here too and check they agree.)
    pub fn plan_write_summed(
        &self,
        info: &ChunkInfo<'_>,
        body: &[u8],
        sum: Option<u64>,
    ) -> Result<WritePlan, DiskError> {
        self.plan_write_numbered(info, body, sum, self.next_write())
    }

    /// A number for a write to come, higher than every number taken before: writers that
    /// run side by side take theirs when each write is queued, so that the write queued
    /// last is the newest ([`DiskTier::plan_write_numbered`]): an object's newest version
    /// on disk is the one whose write was numbered last, and of two writes of one chunk
    /// the later one stays.
    pub fn next_write(&self) -> u64 {
        self.next_generation.fetch_add(1, Relaxed)
    }

    /// [`DiskTier::plan_write_summed`] under `generation`, a number from
    /// [`DiskTier::next_write`].
    pub fn plan_write_numbered(
        &self,
        info: &ChunkInfo<'_>,
        body: &[u8],
        sum: Option<u64>,
        generation: u64,
    ) -> Result<WritePlan, DiskError> {
        let body_len = body.len() as u64;
        if body_len > info.object_len {
            return Err(DiskError::BadChunk("body longer than its object"));
        }
        debug_assert!(sum.is_none_or(|s| s == format::checksum(body)));
        let checksum = sum.unwrap_or_else(|| format::checksum(body));
        let header = format::encode(info, generation, body_len, checksum)?;
        let body_offset = header.len() as u64;
        let file_bytes = format::weight(body_offset + body_len);
        let capacity = self.capacity();
        if file_bytes > capacity {
            self.counters.rejected.fetch_add(1, Relaxed);
            return Err(DiskError::TooLarge {
                file_bytes,
                capacity,
            });
        }
        let hash = format::key_hash(&info.key);
        Ok(WritePlan {
            key: info.key.to_owned_key(),
            temp_path: format::temp_path(&self.root, hash, generation),
            final_path: format::chunk_path(&self.root, hash, generation),
            header,
            body_offset,
            body_len,
            checksum,
            object_len: info.object_len,
            generation,
            fsync: self.fsync,
            since: removals(),
        })
    }

    /// [`removals`].
    pub fn removals(&self) -> u64 {
        removals()
    }

    /// Makes a written and renamed chunk visible to readers. May evict other chunks (their
    /// files join the pending unlinks) and replaces any older file of the same chunk.
    /// False, and the file joins the pending unlinks, when a removal since the chunk's
    /// bytes were taken (`plan.since`) names its object: a write queued before a purge or
    /// an invalidation never brings back what it removed (the file's description would
    /// answer for the object again, at once or after a restart). So is one older than the
    /// removals the tier remembers, and one numbered before the write of the same chunk
    /// the tier holds (counted as replaced).
    pub fn commit_write(&self, plan: &WritePlan) -> bool {
        let mut inner = self.inner();
        let removed = plan.since < inner.forgotten
            || inner
                .removals
                .iter()
                .rev()
                .take_while(|(n, _)| *n > plan.since)
                .any(|(_, r)| r.matches(&plan.key.object, plan.key.version, plan.key.index));
        if removed {
            drop(inner);
            self.counters.refused_removed.fetch_add(1, Relaxed);
            // At once, not at the next sweep: a crash before it would leave the file for
            // the restart to load, describing what was removed again.
            self.unlink_now(vec![plan.final_path.clone()]);
            return false;
        }
        // A write of the chunk numbered after this one committed first (writers run side
        // by side): it stays, as a restart's recovery would keep it.
        if inner
            .index
            .peek(&plan.key.as_ref())
            .is_some_and(|held| held.generation > plan.generation)
        {
            self.counters.replaced.fetch_add(1, Relaxed);
            inner.unlinks.push(plan.final_path.clone());
            return false;
        }
        let entry = Entry {
            generation: plan.generation,
            file_len: plan.file_len(),
            body_sum: plan.checksum,
            // The header limit keeps it far below u32::MAX.
            body_offset: u32::try_from(plan.body_offset).unwrap_or(u32::MAX),
            hits: 0,
        };
        let key = ChunkKey {
            object: inner.index.intern(&plan.key.object),
            ..plan.key.clone()
        };
        let gone = inner.index.insert(key, entry, plan.object_len);
        self.changes.fetch_add(1, Relaxed);
        self.retire(&mut inner, gone);
        self.counters.writes.fetch_add(1, Relaxed);
        true
    }

    /// Gives up a planned write: its temp file (if the caller created it) is queued for
    /// unlinking. Nothing was visible to readers.
    pub fn abort_write(&self, plan: &WritePlan) {
        self.inner().unlinks.push(plan.temp_path.clone());
    }

    fn retire(&self, inner: &mut Inner, gone: Vec<(ChunkKey, Entry, Gone)>) {
        for (k, e, why) in gone {
            match why {
                Gone::Evicted => &self.counters.evicted,
                Gone::Replaced => &self.counters.replaced,
            }
            .fetch_add(1, Relaxed);
            inner.unlinks.push(chunk_path(&self.root, &k, e.generation));
        }
    }

    // ---- reads -------------------------------------------------------------------------

    /// Finds a chunk and says what to read; counts a use (for eviction and promotion).
    pub fn locate(&self, key: &ChunkRef<'_>) -> Option<ReadPlan> {
        let mut inner = self.inner();
        let e = inner.index.lookup(key)?;
        let key = ChunkKey {
            object: inner.index.intern(key.object),
            version: key.version,
            index: key.index,
        };
        drop(inner);
        Some(ReadPlan {
            path: chunk_path(&self.root, &key, e.generation),
            key,
            offset: 0,
            len: e.file_len,
            body_offset: u64::from(e.body_offset),
            body_len: e.body_len(),
            expected_checksum: e.body_sum,
            generation: e.generation,
            hits: e.hits,
        })
    }

    /// Verifies the bytes read for `plan` ([`ReadPlan::check`]). On corruption the entry
    /// leaves the index, its file joins the pending unlinks, the `corrupt` counter goes up
    /// and [`DiskError::Corrupt`] tells the caller to refetch.
    pub fn verify(&self, plan: &ReadPlan, bytes: &[u8]) -> Result<VerifiedChunk, DiskError> {
        self.counted(plan, plan.check(bytes))
    }

    /// Like [`DiskTier::verify`], for a file read as header and body apart.
    pub fn verify_parts(
        &self,
        plan: &ReadPlan,
        header: &[u8],
        body: &[u8],
    ) -> Result<ChunkHeader, DiskError> {
        self.counted(plan, plan.check_parts(header, body))
    }

    fn counted<T>(&self, plan: &ReadPlan, checked: Result<T, Corruption>) -> Result<T, DiskError> {
        match checked {
            Ok(v) => {
                self.counters.reads.fetch_add(1, Relaxed);
                Ok(v)
            }
            Err(c) => {
                self.counters.corrupt.fetch_add(1, Relaxed);
                self.drop_file(plan, true);
                Err(DiskError::Corrupt(c))
            }
        }
    }

    /// Reports that opening or reading `plan`'s file failed: the entry leaves the index
    /// (a vanished file is counted as missing; any other error as a read error, and the
    /// unreadable file is queued for unlinking). The caller treats it as a miss.
    pub fn read_failed(&self, plan: &ReadPlan, err: &io::Error) {
        let vanished = err.kind() == io::ErrorKind::NotFound;
        if vanished {
            &self.counters.missing
        } else {
            &self.counters.read_errors
        }
        .fetch_add(1, Relaxed);
        self.drop_file(plan, !vanished);
    }

    fn drop_file(&self, plan: &ReadPlan, unlink: bool) {
        let mut inner = self.inner();
        // Only this generation: a newer file of the chunk committed meanwhile stays.
        inner
            .index
            .remove_if(&plan.key.as_ref(), |e| e.generation == plan.generation);
        if unlink {
            inner.unlinks.push(plan.path.clone());
        }
    }

    // ---- blocking implementation -------------------------------------------------------

    /// Stores a chunk with std::fs: plan, write the temp file, rename, commit, unlink what
    /// left the index.
    pub fn put(&self, info: &ChunkInfo<'_>, body: &[u8]) -> Result<(), DiskError> {
        let plan = self.plan_write(info, body)?;
        if let Err(e) = write_file(&plan, body) {
            self.abort_write(&plan);
            self.unlink_pending();
            return Err(e);
        }
        self.commit_write(&plan);
        self.unlink_pending();
        Ok(())
    }

    /// Reads and verifies a chunk with std::fs. `Ok(None)`: not on disk (or its file had
    /// vanished). `Err(Corrupt)`: it was on disk but failed verification; it is gone now.
    pub fn get(&self, key: &ChunkRef<'_>) -> Result<Option<StoredChunk>, DiskError> {
        let Some(plan) = self.locate(key) else {
            return Ok(None);
        };
        let bytes = match read_file(&plan) {
            Ok(b) => b,
            Err(e) => {
                self.read_failed(&plan, &e);
                self.unlink_pending();
                return match e.kind() {
                    io::ErrorKind::NotFound => Ok(None),
                    _ => Err(DiskError::io("read", plan.path, e)),
                };
            }
        };
        let verified = self.verify(&plan, &bytes);
        self.unlink_pending();
        let v = verified?;
        Ok(Some(StoredChunk {
            header: v.header,
            body: Bytes::from(bytes).slice(v.body),
            hits: plan.hits,
        }))
    }

    /// Unlinks `paths` now, outside the index lock (one that fails is left for the sweep,
    /// which counts it if it fails again).
    fn unlink_now(&self, paths: Vec<PathBuf>) {
        for p in paths {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => self.inner().unlinks.push(p),
            }
        }
    }

    /// Moves the paths waiting to be unlinked into `out` (for the caller's own unlinks).
    pub fn drain_unlinks(&self, out: &mut Vec<PathBuf>) {
        out.append(&mut self.inner().unlinks);
    }

    /// Unlinks the pending files with std::fs; returns how many were removed.
    pub fn unlink_pending(&self) -> usize {
        let paths = std::mem::take(&mut self.inner().unlinks);
        let mut removed = 0;
        for p in paths {
            match fs::remove_file(&p) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => {
                    self.counters.unlink_errors.fetch_add(1, Relaxed);
                }
            }
        }
        removed
    }

    // ---- queries and purge -------------------------------------------------------------

    /// Whether a chunk is indexed, without counting a use.
    pub fn contains(&self, key: &ChunkRef<'_>) -> bool {
        self.inner().index.peek(key).is_some()
    }

    /// The checksum (XXH3-64) and length of a chunk's body on disk, without counting a use:
    /// what its read is verified against.
    pub fn body_sum(&self, key: &ChunkRef<'_>) -> Option<(u64, u64)> {
        self.inner()
            .index
            .peek(key)
            .map(|e| (e.body_sum, e.body_len()))
    }

    /// Lookups of a chunk so far, without counting one.
    pub fn hits(&self, key: &ChunkRef<'_>) -> Option<u32> {
        self.inner().index.peek(key).map(|e| e.hits)
    }

    /// The newest version of an object on disk (by write order), so that a restarted relay
    /// can find an object's chunks by its cache key; its validators and `meta` come with
    /// the header of any chunk read.
    pub fn object(&self, object: &str) -> Option<ObjectVersion> {
        self.inner().index.object(object)
    }

    /// Every version of an object on disk.
    pub fn object_versions(&self, object: &str) -> Vec<ObjectVersion> {
        self.inner().index.object_versions(object)
    }

    /// Drops one chunk (its file joins the pending unlinks).
    pub fn remove(&self, key: &ChunkRef<'_>) -> bool {
        let mut inner = self.inner();
        self.changes.fetch_add(1, Relaxed);
        let Some((k, e)) = inner.index.remove_if(key, |_| true) else {
            return false;
        };
        inner.unlinks.push(chunk_path(&self.root, &k, e.generation));
        true
    }

    /// Drops every chunk of every version of an object; returns how many.
    pub fn remove_object(&self, object: &str) -> usize {
        self.remove_named(Removal::Object(object.into())).len()
    }

    /// Drops every chunk whose object key starts with `prefix`; returns how many.
    pub fn remove_prefix(&self, prefix: &str) -> usize {
        self.remove_named(Removal::Prefix(prefix.into())).len()
    }

    /// Drops every chunk of every object `what` names; returns each dropped chunk's object
    /// key. Remembered, so that a write whose bytes were taken before cannot bring them
    /// back ([`DiskTier::commit_write`]).
    pub fn remove_named(&self, what: Removal) -> Vec<Arc<str>> {
        self.remove_named_into(what, None, true)
    }

    /// [`DiskTier::remove_named`], its files unlinked before it returns rather than left
    /// to the next sweep of the pending unlinks: what a purge or an invalidation removed is
    /// gone from the disk once it is answered, so a crash right after cannot bring it back
    /// at the restart. Blocking: an unlink per chunk removed (none for a key with nothing
    /// on disk, the usual unsafe method's). One that removed nothing is remembered only
    /// when `known`: what it names was described or on its way (whose chunks may be on
    /// their way to the disk); so unsafe methods to URIs never cached (an API's) do not
    /// crowd out the removals queued writes are checked against.
    pub fn remove_named_now(&self, what: Removal, known: bool) -> Vec<Arc<str>> {
        let mut paths = Vec::new();
        let objects = self.remove_named_into(what, Some(&mut paths), known);
        self.unlink_now(paths);
        objects
    }

    /// Removes what `what` names; the files go to `now` when given, else to the pending
    /// unlinks. Remembered when it removed something, or when `log`.
    fn remove_named_into(
        &self,
        what: Removal,
        now: Option<&mut Vec<PathBuf>>,
        log: bool,
    ) -> Vec<Arc<str>> {
        let mut inner = self.inner();
        let objects = named(&inner.index, &what);
        let version = match what {
            Removal::Version(_, v) => Some(v),
            _ => None,
        };
        let removed: Vec<_> = objects
            .iter()
            .flat_map(|o| inner.index.remove_object(o, version))
            .collect();
        self.changes.fetch_add(1, Relaxed);
        if log || !removed.is_empty() {
            remember(&mut inner, what);
        }
        let mut objects = Vec::with_capacity(removed.len());
        let paths = match now {
            Some(paths) => paths,
            None => &mut inner.unlinks,
        };
        for (k, e) in removed {
            paths.push(chunk_path(&self.root, &k, e.generation));
            objects.push(k.object);
        }
        objects
    }

    /// Drops the first chunk of every version of every object `what` names, unlinked before
    /// it returns; returns how many. A soft purge's part on disk: a restarted relay cannot
    /// rebuild those descriptions (each from its first chunk) as fresh, and asks the origin
    /// again, while the other chunks stay for the answer's version if it is the same.
    /// Remembered, as a removal is, against first chunks on their way to the disk.
    pub fn remove_first_chunks(&self, what: &Removal) -> usize {
        let mut paths = Vec::new();
        {
            let mut inner = self.inner();
            remember(&mut inner, Removal::First(Box::new(what.clone())));
            for object in named(&inner.index, what) {
                for v in inner.index.object_versions(&object) {
                    let first = ChunkRef {
                        object: &object,
                        version: v.version,
                        index: 0,
                    };
                    if let Some((k, e)) = inner.index.remove_if(&first, |_| true) {
                        paths.push(chunk_path(&self.root, &k, e.generation));
                    }
                }
            }
            if !paths.is_empty() {
                self.changes.fetch_add(1, Relaxed);
            }
        }
        let removed = paths.len();
        self.unlink_now(paths);
        removed
    }

    /// Bytes held (files in whole blocks).
    pub fn usage(&self) -> u64 {
        self.inner().index.weight()
    }

    pub fn capacity(&self) -> u64 {
        self.inner().index.capacity()
    }

    /// [`DiskTier::usage`] and [`DiskTier::capacity`] under one lock.
    pub fn usage_and_capacity(&self) -> (u64, u64) {
        let inner = self.inner();
        (inner.index.weight(), inner.index.capacity())
    }

    /// Changes the capacity (config reload); shrinking evicts at once.
    pub fn set_capacity(&self, capacity_bytes: u64) {
        let mut inner = self.inner();
        let gone = inner.index.set_capacity(capacity_bytes);
        self.changes.fetch_add(1, Relaxed);
        self.retire(&mut inner, gone);
    }

    pub fn len(&self) -> usize {
        self.inner().index.len()
    }

    /// Up to `limit` chunks on disk: their object key and number (for the digest; the lock
    /// is held while they are copied, reference counts and numbers only: about 46 ms for two
    /// million).
    pub fn chunk_keys(&self, out: &mut Vec<(Arc<str>, u64)>, limit: usize) {
        out.reserve(self.len().min(limit));
        self.inner().index.chunk_keys(out, limit);
    }

    /// A count that moves whenever the index gains or loses a chunk.
    pub fn changes(&self) -> u64 {
        self.changes.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> DiskStats {
        let inner = self.inner();
        let c = &self.counters;
        DiskStats {
            entries: inner.index.len(),
            usage: inner.index.weight(),
            capacity: inner.index.capacity(),
            writes: c.writes.load(Relaxed),
            reads: c.reads.load(Relaxed),
            corrupt: c.corrupt.load(Relaxed),
            missing: c.missing.load(Relaxed),
            read_errors: c.read_errors.load(Relaxed),
            evicted: c.evicted.load(Relaxed),
            replaced: c.replaced.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            unlink_errors: c.unlink_errors.load(Relaxed),
            refused_removed: c.refused_removed.load(Relaxed),
            pending_unlinks: inner.unlinks.len(),
        }
    }
}

impl Drop for DiskTier {
    /// Files still waiting to be unlinked are unlinked now, so that a restart does not
    /// load chunks that had been evicted or purged.
    fn drop(&mut self) {
        self.unlink_pending();
    }
}

fn chunk_path(root: &Path, key: &ChunkKey, generation: u64) -> PathBuf {
    format::chunk_path(root, format::key_hash(&key.as_ref()), generation)
}

fn write_file(plan: &WritePlan, body: &[u8]) -> Result<(), DiskError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&plan.temp_path)
        .map_err(|e| DiskError::io("create", &plan.temp_path, e))?;
    f.write_all(&plan.header)
        .and_then(|()| f.write_all(body))
        .and_then(|()| if plan.fsync { f.sync_data() } else { Ok(()) })
        .map_err(|e| DiskError::io("write", &plan.temp_path, e))?;
    drop(f);
    let renamed = match fs::rename(&plan.temp_path, &plan.final_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(plan.final_dir())
            .and_then(|()| fs::rename(&plan.temp_path, &plan.final_path)),
        r => r,
    };
    renamed.map_err(|e| DiskError::io("rename", &plan.final_path, e))
}

fn read_file(plan: &ReadPlan) -> io::Result<Vec<u8>> {
    let mut f = File::open(&plan.path)?;
    let len = usize::try_from(plan.len).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len];
    let n = recover::read_full(&mut f, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

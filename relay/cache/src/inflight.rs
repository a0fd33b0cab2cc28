//! What is in flight, process-wide: the object heads being fetched ([`Pending`]), and the
//! chunks being brought ([`Flight`]), each either filled from an origin (readers stream it
//! as it arrives) or read from a local file by one reader that the others wait on. However
//! many clients want a chunk at once, it is fetched or read once: the first claims it
//! ([`InFlight::claim_read`], [`InFlight::claim_fill`]), the others follow what it brings.

use crate::arena::Arena;
use crate::fill::{Fill, FillError, FillWriter};
use crate::key::ChunkKey;
use crate::memory::MemoryTier;
use crate::meta::ObjectMeta;
use crate::wake::{Wakers, Watchers};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// How many bytes of later fills a fetch keeps for the clients reading a body only it has
/// ([`Pending::push_fill`]).
pub const KEPT_BYTES: usize = 64 << 20;

/// How far a fetch of a body that may not be stored runs ahead of its client: at most this
/// many bytes (and at least two chunks) past the chunk the client reads
/// ([`Pending::may_fill`]). Beyond, the fetch stops reading the origin until the client
/// catches up: a slow client is never cut for being slow, and holds no more than this.
pub const AHEAD_BYTES: u64 = 8 << 20;

/// An object description being fetched (the first response head of a miss); clients wait on
/// it, then find the chunk fills it started in [`InFlight`].
#[derive(Default)]
pub struct Pending {
    result: OnceLock<Result<Arc<ObjectMeta>, FillError>>,
    /// The fill of the object's first chunk, started by the head fetch: waiters read it even
    /// after it left [`InFlight`] (a response that may not be stored is never in memory).
    first: OnceLock<Arc<Fill>>,
    /// The response's fields as the fetching client gets them, when the stored description
    /// leaves some out (`private="Set-Cookie"`: the cookie is that client's).
    owner_headers: OnceLock<Bytes>,
    /// The variant the first answer turned out to be, for the client whose request
    /// fetched it (the base's answer asked for next is another's).
    carried: OnceLock<Carried>,
    /// The origin's first `103 Early Hints`, encoded as an interim response for HTTP/1.1
    /// clients waiting on the final one (RFC 8297).
    hints: OnceLock<Bytes>,
    /// For a response that may not be stored (never in the memory tier), the later chunks'
    /// fills of a whole body the origin sent at once, or of the chunks after the first that
    /// a ranged one's head fetch brought (its span): its client reads them from here (the
    /// span's it takes out, [`Pending::take_kept`]).
    more: Mutex<Vec<Arc<Fill>>>,
    /// The furthest chunk a client asked `more` for ([`Pending::fill`]).
    asked: AtomicU64,
    /// Where each client reading the body is ([`Pending::reader`]): under a memory bound,
    /// no kept fill the slowest of them has not passed is let go.
    readers: Mutex<Vec<std::sync::Weak<AtomicU64>>>,
    /// The body may not be stored: its one client paces the fetch, and fills it passed go
    /// ([`Pending::pace`]).
    paced: AtomicBool,
    /// The description came from the disk tier (a restore after a restart), not upstream.
    local: AtomicBool,
    /// The fetch is still bringing a body from one answer ([`Pending::answering`]).
    answering: AtomicBool,
    /// A kept fill was let go: a client joining from the start would miss it
    /// ([`Pending::keeps_all`]).
    let_go: AtomicBool,
    /// The workers with a client waiting.
    pub watchers: Watchers,
}

impl Pending {
    pub fn result(&self) -> Option<&Result<Arc<ObjectMeta>, FillError>> {
        self.result.get()
    }

    /// Marks the description as read from the disk tier (before it is published).
    pub fn mark_local(&self) {
        self.local.store(true, Ordering::Release);
    }

    /// The description was read from the disk tier: its waiters' responses are hits.
    pub fn is_local(&self) -> bool {
        self.local.load(Ordering::Acquire)
    }

    pub fn first(&self) -> Option<&Arc<Fill>> {
        self.first.get()
    }

    /// Keeps a later chunk's fill of a body only this fetch has (one that may not be
    /// stored, or one from one answer), for the clients reading it: the last
    /// [`KEPT_BYTES`] of them (a client further behind its fetch than that is cut rather
    /// than letting an endless answer hold memory without bound).
    pub fn push_fill(&self, fill: Arc<Fill>) {
        let mut more = self.more.lock().unwrap_or_else(|p| p.into_inner());
        more.push(fill);
        self.drop_passed(&mut more);
        let mut held: usize = more.iter().map(|f| f.room()).sum();
        while held > KEPT_BYTES && more.len() > 1 {
            held -= more.remove(0).room();
            self.let_go.store(true, Ordering::Release);
        }
    }

    /// Lets go of kept fills every client has passed: older than the furthest one asked for
    /// and read by no one now (a client reading one holds it).
    fn drop_passed(&self, more: &mut Vec<Arc<Fill>>) {
        if !self.paced.load(Ordering::Acquire) {
            // Clients may still join from the start (an answer without a length).
            return;
        }
        let asked = self.asked.load(Ordering::Acquire);
        let passed = more
            .iter()
            .take_while(|f| f.key.index < asked && Arc::strong_count(f) == 1)
            .count();
        if passed > 0 {
            self.let_go.store(true, Ordering::Release);
        }
        more.drain(..passed);
    }

    /// Lets go of kept fills every client has passed even when others might still have
    /// joined from the start: chunk memory is at its bound and the fetch needs room for the
    /// next chunk (a client that joins later fetches on its own, [`Pending::keeps_all`]).
    /// The fills a client still reading the body has not reached stay (the fetch waits for
    /// room meanwhile, so it keeps pace with its slowest reader): let go, that client would
    /// find its chunk nowhere (a body from one answer cannot be fetched a chunk at a time)
    /// and be cut.
    /// `spare_slowest` false: past the fetch's patience, the furthest client's position
    /// alone counts, as before, and the slower ones are cut when they reach a fill let go
    /// (one reader trickling on must not hold the answer back, and its memory, for all).
    /// With no client holding the fetch any more (none waiting on it, reading from it or
    /// about to: each holds its `Pending`), every fill goes (but one a sender still holds):
    /// none is kept ahead for a client that left (a range's, say) while the fetch waits for
    /// the room they take, until its idle timeout; a client that comes later fetches on its
    /// own. `self` is the fetch's own reference, its only one.
    pub fn let_go_passed(self: &Arc<Self>, spare_slowest: bool) {
        let mut more = self.more.lock().unwrap_or_else(|p| p.into_inner());
        let asked = self.asked.load(Ordering::Acquire);
        let upto = match Arc::strong_count(self) {
            1 => u64::MAX,
            holders => self
                .slowest(holders - 1)
                .filter(|_| spare_slowest)
                .map_or(asked, |at| at.min(asked)),
        };
        let before = more.len();
        more.retain(|f| f.key.index >= upto || Arc::strong_count(f) > 1);
        if more.len() < before {
            self.let_go.store(true, Ordering::Release);
        }
    }

    /// A client starts reading the body: the position it keeps up to date (the chunk it
    /// is on) while it holds it.
    pub fn reader(&self) -> Arc<AtomicU64> {
        let at = Arc::new(AtomicU64::new(0));
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        readers.retain(|r| r.strong_count() > 0);
        readers.push(Arc::downgrade(&at));
        at
    }

    /// The chunk the slowest of `clients` clients (those holding the fetch) is on: the
    /// start for one that holds it but reads nothing yet (woken by the head and not yet
    /// polled, say), else the slowest reader's.
    fn slowest(&self, clients: usize) -> Option<u64> {
        let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let at: Vec<u64> = readers
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|at| at.load(Ordering::Acquire))
            .collect();
        match clients > at.len() {
            true => Some(0),
            false => at.into_iter().min(),
        }
    }

    /// Marks the body as one that may not be stored: its fills are its client's alone, so
    /// the fetch keeps pace with that client ([`Pending::may_fill`]) and lets go of the
    /// fills it passed.
    pub fn pace(&self) {
        self.paced.store(true, Ordering::Release);
    }

    /// The body may not be stored and its fetch keeps pace with its client.
    pub fn is_paced(&self) -> bool {
        self.paced.load(Ordering::Acquire)
    }

    /// Marks the fetch as bringing a body from one answer, chunk after chunk, or as done
    /// with it (`false`: it ended, failed or was dropped; its waiters are to be woken).
    pub fn set_answering(&self, answering: bool) {
        self.answering.store(answering, Ordering::Release);
    }

    /// The fetch still brings a body from one answer: a chunk of it not started yet is
    /// still to come (a client that asks for it waits, [`Pending::watchers`] woken as each
    /// fill starts and when the answer ends).
    pub fn answering(&self) -> bool {
        self.answering.load(Ordering::Acquire)
    }

    /// Whether the fetch may start the fill of chunk `index` of a body that may not be
    /// stored: while it is less than `ahead` chunks past the furthest a client asked for.
    /// (Chunk 0 is the head fetch's own; clients ask for the others as they reach them.)
    pub fn may_fill(&self, index: u64, ahead: u64) -> bool {
        index < self.asked.load(Ordering::Acquire).max(1) + ahead
    }

    /// Every chunk after the first is still kept ([`Pending::push_fill`]): none was let go.
    pub fn keeps_all(&self) -> bool {
        let more = self.more.lock().unwrap_or_else(|p| p.into_inner());
        !self.let_go.load(Ordering::Acquire) && more.first().is_none_or(|f| f.key.index == 1)
    }

    /// Takes the fill of chunk `index` kept by [`Pending::push_fill`] out, for the one
    /// client of a ranged body that may not be stored: it holds the fill until it passed it
    /// (its read-ahead's `ahead_fills`), and the fetch no longer does (a body that is not
    /// paced lets go of nothing itself). A failed fill is left: the client asks again.
    pub fn take_kept(&self, index: u64) -> Option<Arc<Fill>> {
        let mut more = self.more.lock().unwrap_or_else(|p| p.into_inner());
        let at = more
            .iter()
            .position(|f| f.key.index == index && f.error().is_none())?;
        Some(more.remove(at))
    }

    /// The fill of chunk `index` kept by [`Pending::push_fill`].
    pub fn fill(&self, index: u64) -> Option<Arc<Fill>> {
        self.asked.fetch_max(index, Ordering::AcqRel);
        let mut more = self.more.lock().unwrap_or_else(|p| p.into_inner());
        let found = more.iter().find(|f| f.key.index == index).cloned();
        self.drop_passed(&mut more);
        found
    }

    /// Gives the client that started the fetch its own response fields (before the fetch's
    /// outcome is published).
    pub fn set_owner_headers(&self, headers: Bytes) {
        let _ = self.owner_headers.set(headers);
    }

    /// Keeps the origin's first `103 Early Hints` (an encoded interim response); false when
    /// one was kept already.
    pub fn set_hints(&self, hints: Bytes) -> bool {
        self.hints.set(hints).is_ok()
    }

    /// The origin's `103 Early Hints`, if it sent one before its final answer.
    pub fn hints(&self) -> Option<&Bytes> {
        self.hints.get()
    }

    /// The fields for the client whose request started the fetch, if they differ from the
    /// stored description's.
    pub fn owner_headers(&self) -> Option<&Bytes> {
        self.owner_headers.get()
    }

    /// The first answer was a variant (fetched with the client's fields, the response
    /// varying on them): kept as that; the client whose request started the fetch gets it.
    pub fn set_carried(&self, carried: Carried) {
        let _ = self.carried.set(carried);
    }

    /// The variant the client that started the fetch gets, if the first answer was one.
    pub fn carried(&self) -> Option<&Carried> {
        self.carried.get()
    }
}

/// A head fetch's first answer, a variant ([`Pending::carried`]).
pub struct Carried {
    /// The variant's key (the object's, `\0`, the fields and values it was fetched with).
    pub key: Arc<str>,
    /// Its version.
    pub version: u64,
    /// Its fields as its client gets them (`Name: value\r\n` lines).
    pub headers: Bytes,
}

/// Where the bytes of a chunk in flight are coming from: [`InFlight`] holds one per chunk,
/// so a chunk is fetched or read once however many readers want it.
#[derive(Clone)]
pub enum Flight {
    /// Fetched from an origin: readers stream the fill's bytes as they arrive.
    Fill(Arc<Fill>),
    /// Read from a local file (the disk tier, a directory origin's file) by one reader; the
    /// others wait on its share for the verified bytes (or for word that there are none,
    /// and then read or fetch the chunk themselves).
    Read(Arc<ChunkShare>),
}

impl Flight {
    /// The chunk in flight.
    pub fn key(&self) -> &ChunkKey {
        match self {
            Flight::Fill(fill) => &fill.key,
            Flight::Read(share) => &share.key,
        }
    }
}

/// A chunk read in flight, as the readers that wait on it see it.
pub struct ChunkShare {
    /// The chunk being read.
    pub key: ChunkKey,
    result: OnceLock<Option<Bytes>>,
    /// The workers with a reader waiting.
    pub watchers: Watchers,
}

impl ChunkShare {
    fn new(key: ChunkKey) -> ChunkShare {
        ChunkShare {
            key,
            result: OnceLock::new(),
            watchers: Watchers::default(),
        }
    }

    /// None while the read is in flight; then its bytes, or None when it ended without
    /// them (a bad or vanished file, or its reader left).
    pub fn result(&self) -> Option<&Option<Bytes>> {
        self.result.get()
    }
}

/// How a caller stands with a chunk it found in no tier and is about to bring
/// ([`InFlight::claim_read`], [`InFlight::claim_fill`]).
pub enum Claim<M> {
    /// It was brought and stored since the caller looked: take it from the memory tier.
    Stored,
    /// Another brings it already: stream from its fill, or wait on its read.
    InFlight(Flight),
    /// The caller brings it: `M` is the read's share, to [`InFlight::settle`], or the
    /// fill's writer, to have fetched (and [`InFlight::end_fill`] when it ends).
    Mine(M),
    /// The caller would bring it, but chunk memory is at its bound (the arena has no block
    /// free and the heap chunks beside it are at their cap): it lets go of the chunks it
    /// holds and asks again later (`arena`).
    NoRoom,
}

/// A fill could not start: chunk memory is at its bound ([`Claim::NoRoom`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

/// What is in flight now, process-wide: one entry per object head being fetched, and one per
/// chunk being brought, whether fetched from an origin or read from a local file, so any
/// number of concurrent misses make one fetch or one read. Locked only on the miss path.
#[derive(Default)]
pub struct InFlight {
    heads: Mutex<HashMap<Arc<str>, Arc<Pending>>>,
    /// The chunks in flight: a chunk is fetched or read, never both at once.
    chunks: Mutex<HashMap<ChunkKey, Flight>>,
    /// The fetches of bodies from one answer, by object, while anyone holds them (Weak: a
    /// fetch's readers are the references to its `Pending`): a client that came another
    /// way (a revalidation's 304) reads what the fetch keeps and waits for what it still
    /// brings ([`InFlight::answering`]); one asking for an answer without a length joins it
    /// from the start ([`InFlight::join_open`]).
    answering: Mutex<HashMap<Arc<str>, Weak<Pending>>>,
    /// Where the fills' bytes go (the memory tier's registered arena), if anywhere.
    arena: Option<Arc<Arena>>,
    /// Whether fills sum their bytes as written ([`FillWriter::sum_as_written`]): there
    /// is a disk tier, whose files carry each chunk's checksum.
    summed: bool,
    /// Chunks of a whole answer whose fetch waits for chunk memory before it fills them
    /// ([`InFlight::await_room`]): their readers wait too, rather than finding the chunk
    /// nowhere.
    room_waits: Mutex<HashSet<ChunkKey>>,
}

/// A fetch waiting for room to fill a chunk, registered until dropped
/// ([`InFlight::await_room`]).
pub struct RoomWait {
    inflight: Arc<InFlight>,
    key: ChunkKey,
}

impl Drop for RoomWait {
    fn drop(&mut self) {
        let mut waits = self
            .inflight
            .room_waits
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        waits.remove(&self.key);
    }
}

impl InFlight {
    /// A table whose fills take their memory from `arena` when it has room.
    pub fn with_arena(arena: Option<Arc<Arena>>) -> InFlight {
        InFlight {
            arena,
            ..InFlight::default()
        }
    }

    /// Fills started from now on sum their bytes as they are written (a disk tier will
    /// want each chunk's checksum).
    pub fn summed(mut self) -> InFlight {
        self.summed = true;
        self
    }

    fn new_fill(&self, key: ChunkKey, len: usize) -> Option<(Arc<Fill>, FillWriter)> {
        let (fill, mut writer) = Fill::new_in(key, len, self.arena.as_ref())?;
        if self.summed {
            writer.sum_as_written();
        }
        Some((fill, writer))
    }

    /// The arena fills allocate from.
    pub fn arena(&self) -> Option<&Arc<Arena>> {
        self.arena.as_ref()
    }

    /// The fetch of a whole answer waits for chunk memory before it fills chunk `key`:
    /// until the guard drops, [`InFlight::awaits_room`] says so to the chunk's readers.
    pub fn await_room(self: &Arc<Self>, key: ChunkKey) -> RoomWait {
        let mut waits = self.room_waits.lock().unwrap_or_else(|p| p.into_inner());
        waits.insert(key.clone());
        RoomWait {
            inflight: self.clone(),
            key,
        }
    }

    /// Whether chunk `key` is coming from a fetch that waits for room to fill it.
    pub fn awaits_room(&self, key: &ChunkKey) -> bool {
        let waits = self.room_waits.lock().unwrap_or_else(|p| p.into_inner());
        waits.contains(key)
    }

    /// `pending`'s fetch brings a body of `object` from one answer, chunk after chunk
    /// ([`Pending::answering`]), until [`InFlight::end_answer`].
    pub fn begin_answer(&self, object: Arc<str>, pending: &Arc<Pending>) {
        pending.set_answering(true);
        let mut answering = self.answering.lock().unwrap_or_else(|p| p.into_inner());
        // (Fetches no one holds any more go as others come: the map stays as small as the
        // bodies being read.)
        answering.retain(|_, w| w.strong_count() > 0);
        answering.insert(object, Arc::downgrade(pending));
    }

    /// That answer ended (whole, cut or left): what the fetch keeps is still read by the
    /// clients holding it, and found by others while they do.
    pub fn end_answer(&self, pending: &Arc<Pending>) {
        pending.set_answering(false);
    }

    /// Whether an answer for `object` is still arriving (a body from one answer).
    pub fn arriving(&self, object: &str) -> bool {
        let answering = self.answering.lock().unwrap_or_else(|p| p.into_inner());
        answering
            .get(object)
            .is_some_and(|w| w.upgrade().is_some_and(|p| p.answering()))
    }

    /// The fetch that brings, or brought, version `version` of `object` from one answer,
    /// while anyone holds it.
    pub fn answering(&self, object: &str, version: u64) -> Option<Arc<Pending>> {
        let answering = self.answering.lock().unwrap_or_else(|p| p.into_inner());
        answering.get(object).and_then(Weak::upgrade).filter(|p| {
            p.result()
                .is_some_and(|r| r.as_ref().is_ok_and(|m| m.version == version))
        })
    }

    /// The fetch of an answer without a length to `object` still arriving, if it still
    /// keeps every chunk of it (a client joining reads it from the start; such an answer
    /// is described only once it ended, so it is not found in the meta cache). Before its
    /// description is published its head fetch is found instead ([`InFlight::head`]).
    pub fn join_open(&self, object: &str) -> Option<Arc<Pending>> {
        let answering = self.answering.lock().unwrap_or_else(|p| p.into_inner());
        answering.get(object).and_then(Weak::upgrade).filter(|p| {
            p.answering()
                && p.keeps_all()
                && p.result()
                    .is_some_and(|r| r.as_ref().is_ok_and(|m| m.open_ended))
        })
    }

    /// The pending head fetch of `object`, and whether the caller created it (and so must
    /// start the fetch).
    pub fn head(&self, object: &str) -> (Arc<Pending>, bool) {
        self.head_unless(object, || false)
            .unwrap_or_else(|| (Arc::new(Pending::default()), false))
    }

    /// Like [`InFlight::head`], but None when `cached()` (asked under the lock) says the
    /// description is stored now: a head fetch publishes before it leaves the table.
    pub fn head_unless(
        &self,
        object: &str,
        cached: impl FnOnce() -> bool,
    ) -> Option<(Arc<Pending>, bool)> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = heads.get(object) {
            return Some((p.clone(), false));
        }
        if cached() {
            return None;
        }
        let p = Arc::new(Pending::default());
        heads.insert(Arc::from(object), p.clone());
        Some((p, true))
    }

    /// The pending head fetch of `object`, if one is in flight.
    pub fn pending(&self, object: &str) -> Option<Arc<Pending>> {
        self.heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(object)
            .cloned()
    }

    /// Publishes a head fetch's outcome, forgets it, and wakes its watchers.
    pub fn finish_head(
        &self,
        object: &str,
        result: Result<Arc<ObjectMeta>, FillError>,
        first: Option<Arc<Fill>>,
        wakers: &Wakers,
    ) {
        let p = self
            .heads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(object);
        if let Some(p) = p {
            if let Some(f) = first {
                let _ = p.first.set(f);
            }
            let _ = p.result.set(result);
            wakers.wake(&p.watchers);
        }
    }

    /// What is in flight for chunk `key`, if anything (a look: a caller about to bring the
    /// chunk claims it, [`InFlight::claim_read`] or [`InFlight::claim_fill`]).
    pub fn flight(&self, key: &ChunkKey) -> Option<Flight> {
        self.chunks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Claims the read of chunk `key` from a local file (the disk tier, a directory
    /// origin's file): the caller reads it and settles the share it gets for the others
    /// ([`InFlight::settle`]) — unless it is in flight already, or stored since the caller
    /// looked.
    pub fn claim_read(&self, key: ChunkKey, memory: &MemoryTier) -> Claim<Arc<ChunkShare>> {
        self.claim(key, memory, |key| {
            let share = Arc::new(ChunkShare::new(key.clone()));
            Some((Flight::Read(share.clone()), share))
        })
    }

    /// Claims the fetch of chunk `key` (`len` bytes) from an origin: the caller has the
    /// fill it gets fetched — unless it is in flight already, or stored since the caller
    /// looked.
    pub fn claim_fill(&self, key: ChunkKey, len: usize, memory: &MemoryTier) -> Claim<FillWriter> {
        self.claim(key, memory, |key| {
            let (fill, writer) = self.new_fill(key.clone(), len)?;
            Some((Flight::Fill(fill), writer))
        })
    }

    /// The one claim: what is in flight; else the chunk in `memory` (a fill or a read
    /// stores its chunk before it leaves the table, so a caller that missed the memory tier
    /// just before the store finds it here rather than bringing it again); else the
    /// caller's, made by `start`.
    fn claim<M>(
        &self,
        key: ChunkKey,
        memory: &MemoryTier,
        start: impl FnOnce(&ChunkKey) -> Option<(Flight, M)>,
    ) -> Claim<M> {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = chunks.get(&key) {
            return Claim::InFlight(flight.clone());
        }
        if memory.contains(&key.as_ref()) {
            return Claim::Stored;
        }
        let Some((flight, mine)) = start(&key) else {
            return Claim::NoRoom;
        };
        chunks.insert(key, flight);
        Claim::Mine(mine)
    }

    /// Starts a fill of `len` bytes for a fetch the upstream makes on its own (the first
    /// chunk of a head fetch, the chunks of a whole body arriving in one answer); None when
    /// the chunk is in flight already (fetched or read); [`NoRoom`] when chunk memory is at
    /// its bound (the fetch waits for room).
    pub fn start_fill(&self, key: ChunkKey, len: usize) -> Result<Option<FillWriter>, NoRoom> {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.contains_key(&key) {
            return Ok(None);
        }
        let (fill, writer) = self.new_fill(key.clone(), len).ok_or(NoRoom)?;
        chunks.insert(key, Flight::Fill(fill));
        Ok(Some(writer))
    }

    /// Forgets a finished or failed fill (readers holding it keep it alive), if it is the
    /// one in the table under its key (one already replaced stays).
    pub fn end_fill(&self, fill: &Arc<Fill>) {
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(chunks.get(&fill.key), Some(Flight::Fill(f)) if Arc::ptr_eq(f, fill)) {
            chunks.remove(&fill.key);
        }
    }

    /// Ends the read that `share` stands for: its `bytes` (None: the others read or fetch
    /// the chunk themselves) go to the readers waiting on it, which are woken.
    pub fn settle(&self, share: &ChunkShare, bytes: Option<Bytes>, wakers: &Wakers) {
        {
            // Out of the table and settled together: a reader that finds it settled must
            // not find it in the table again (it would spin until it left).
            let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(chunks.get(&share.key), Some(Flight::Read(s)) if std::ptr::eq(&**s, share))
            {
                chunks.remove(&share.key);
            }
            let _ = share.result.set(bytes);
        }
        wakers.wake(&share.watchers);
    }

    /// Head fetches and chunks (fills and reads) in flight now.
    pub fn len(&self) -> (usize, usize) {
        let h = self.heads.lock().map(|h| h.len()).unwrap_or(0);
        let c = self.chunks.lock().map(|c| c.len()).unwrap_or(0);
        (h, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn in_flight_coalesces() {
        let f = InFlight::default();
        let (a, new_a) = f.head("o");
        let (b, new_b) = f.head("o");
        assert!(new_a && !new_b && Arc::ptr_eq(&a, &b));
        b.watchers.watch(1);
        let woken = Arc::new(Mutex::new(Vec::new()));
        let w = woken.clone();
        let wakers = Wakers::new(move |n| w.lock().unwrap().push(n));
        f.finish_head("o", Err(FillError::Connect), None, &wakers);
        assert_eq!(*woken.lock().unwrap(), [1]);
        // Finished and forgotten: finishing again wakes nobody.
        f.finish_head("o", Err(FillError::Connect), None, &wakers);
        assert_eq!(*woken.lock().unwrap(), [1]);
        assert_eq!(a.result(), Some(&Err(FillError::Connect)));
    }

    fn chunk(i: u64) -> ChunkKey {
        ChunkKey {
            object: Arc::from("h/o"),
            version: 1,
            index: i,
        }
    }

    fn memory() -> MemoryTier {
        MemoryTier::new(1 << 20, 4096)
    }

    /// Wakers that count the wake-ups.
    fn counting() -> (Wakers, Arc<AtomicUsize>) {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let wakers = Wakers::new(move |_| {
            w.fetch_add(1, Ordering::Relaxed);
        });
        (wakers, woken)
    }

    fn is_fill(flight: Option<Flight>, fill: &Arc<Fill>) -> bool {
        matches!(flight, Some(Flight::Fill(f)) if Arc::ptr_eq(&f, fill))
    }

    fn is_read(flight: Option<Flight>, share: &Arc<ChunkShare>) -> bool {
        matches!(flight, Some(Flight::Read(s)) if Arc::ptr_eq(&s, share))
    }

    #[test]
    fn the_first_claim_fetches_the_others_join_its_fill() {
        let f = InFlight::default();
        let memory = memory();
        let Claim::Mine(w) = f.claim_fill(chunk(0), 3, &memory) else {
            panic!("the first claim fetches it")
        };
        let Claim::InFlight(Flight::Fill(joined)) = f.claim_fill(chunk(0), 3, &memory) else {
            panic!("a second joins the fill")
        };
        assert!(Arc::ptr_eq(w.fill(), &joined));
        assert!(
            matches!(f.start_fill(chunk(0), 3), Ok(None)),
            "the upstream starts no second fill"
        );
        assert!(is_fill(f.flight(&chunk(0)), w.fill()));
        assert!(
            matches!(f.claim_fill(chunk(1), 3, &memory), Claim::Mine(_)),
            "per chunk"
        );
        assert_eq!(f.len(), (0, 2));
        f.end_fill(w.fill());
        assert!(f.flight(&chunk(0)).is_none());
        // Ending a fill that is not the one in the table leaves the table as it is.
        let shared = f.start_fill(chunk(0), 3).unwrap().unwrap();
        let (other, _w) = Fill::new(chunk(0), 3);
        f.end_fill(&other);
        assert!(is_fill(f.flight(&chunk(0)), shared.fill()));
        f.end_fill(shared.fill());
        assert!(f.flight(&chunk(0)).is_none());
    }

    #[test]
    fn the_first_reader_claims_the_others_wait_and_are_woken() {
        let f = InFlight::default();
        let memory = memory();
        let (wakers, woken) = counting();
        let Claim::Mine(mine) = f.claim_read(chunk(0), &memory) else {
            panic!("the first reader reads it")
        };
        assert_eq!(mine.key, chunk(0));
        let Claim::InFlight(Flight::Read(theirs)) = f.claim_read(chunk(0), &memory) else {
            panic!("a second waits on the first")
        };
        assert!(Arc::ptr_eq(&mine, &theirs));
        assert!(theirs.result().is_none());
        theirs.watchers.watch(3);
        assert!(
            matches!(f.claim_read(chunk(1), &memory), Claim::Mine(_)),
            "per chunk"
        );
        // The reader stores the chunk, then settles its share.
        memory.insert(chunk(0), Bytes::from_static(b"chunk"));
        f.settle(&mine, Some(Bytes::from_static(b"chunk")), &wakers);
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        assert!(matches!(theirs.result(), Some(Some(b)) if &b[..] == b"chunk"));
        // Settled and out of the table together.
        assert!(f.flight(&chunk(0)).is_none());
        assert!(
            matches!(f.claim_read(chunk(0), &memory), Claim::Stored),
            "then it is stored"
        );
        assert_eq!(f.len(), (0, 1), "only chunk 1's read is left");
    }

    #[test]
    fn a_read_that_ends_without_bytes_lets_the_next_reader_read_or_fetch_it() {
        let f = InFlight::default();
        let memory = memory();
        let (wakers, woken) = counting();
        let Claim::Mine(mine) = f.claim_read(chunk(0), &memory) else {
            panic!()
        };
        mine.watchers.watch(0);
        f.settle(&mine, None, &wakers);
        assert_eq!(woken.load(Ordering::Relaxed), 1, "its waiters are woken");
        assert!(matches!(mine.result(), Some(None)));
        assert!(f.flight(&chunk(0)).is_none());
        assert!(matches!(f.claim_read(chunk(0), &memory), Claim::Mine(_)));
        let Claim::Mine(again) = f.claim_read(chunk(1), &memory) else {
            panic!()
        };
        f.settle(&again, None, &Wakers::none());
        assert!(
            matches!(f.claim_fill(chunk(1), 3, &memory), Claim::Mine(_)),
            "or fetches it"
        );
    }

    #[test]
    fn a_chunk_stored_since_the_look_is_taken_from_memory() {
        let f = InFlight::default();
        let memory = memory();
        let Claim::Mine(w) = f.claim_fill(chunk(0), 5, &memory) else {
            panic!()
        };
        // A fill stores its chunk before it leaves the table.
        let fill = w
            .complete_with(b"chunk", |b| {
                memory.insert(chunk(0), b);
            })
            .unwrap();
        f.end_fill(&fill);
        assert!(matches!(f.claim_fill(chunk(0), 5, &memory), Claim::Stored));
        assert!(matches!(f.claim_read(chunk(0), &memory), Claim::Stored));
        assert!(f.flight(&chunk(0)).is_none(), "no claim was left behind");
        // The upstream's own fills do not look in memory (it fills what it was asked to).
        assert!(matches!(f.start_fill(chunk(0), 5), Ok(Some(_))));
    }

    #[test]
    fn a_fill_and_a_read_of_one_chunk_are_never_both_in_flight() {
        let f = InFlight::default();
        let memory = memory();
        // A read in flight: a fetch joins it instead, and the upstream starts no fill.
        let Claim::Mine(share) = f.claim_read(chunk(0), &memory) else {
            panic!()
        };
        let Claim::InFlight(Flight::Read(s)) = f.claim_fill(chunk(0), 3, &memory) else {
            panic!("a fetch waits on the read in flight")
        };
        assert!(Arc::ptr_eq(&s, &share));
        assert!(matches!(f.start_fill(chunk(0), 3), Ok(None)));
        let (stray, _w) = Fill::new(chunk(0), 3);
        f.end_fill(&stray);
        assert!(
            is_read(f.flight(&chunk(0)), &share),
            "ending a fill leaves a read"
        );
        f.settle(&share, None, &Wakers::none());
        // A fill in flight: a read joins it instead.
        let Claim::Mine(w) = f.claim_fill(chunk(0), 3, &memory) else {
            panic!()
        };
        let Claim::InFlight(Flight::Fill(joined)) = f.claim_read(chunk(0), &memory) else {
            panic!("a read streams the fill in flight")
        };
        assert!(Arc::ptr_eq(&joined, w.fill()));
        // Settling a read that is not the one in the table leaves the fill there.
        let stray = ChunkShare::new(chunk(0));
        f.settle(&stray, None, &Wakers::none());
        assert!(matches!(stray.result(), Some(None)));
        assert!(is_fill(f.flight(&chunk(0)), w.fill()));
        assert_eq!(f.len(), (0, 1));
    }

    #[test]
    fn one_claim_wins_however_many_race_for_a_chunk() {
        let f = Arc::new(InFlight::default());
        let memory = Arc::new(memory());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (f, memory) = (f.clone(), memory.clone());
                std::thread::spawn(move || {
                    (0..200u64)
                        .filter(|&i| match t % 3 {
                            0 => matches!(f.claim_read(chunk(i), &memory), Claim::Mine(_)),
                            1 => matches!(f.claim_fill(chunk(i), 3, &memory), Claim::Mine(_)),
                            _ => matches!(f.start_fill(chunk(i), 3), Ok(Some(_))),
                        })
                        .count()
                })
            })
            .collect();
        let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(won, 200, "each chunk claimed once");
        assert_eq!(f.len(), (0, 200));
    }

    #[test]
    fn a_paced_fetch_keeps_within_reach_of_its_client_and_drops_what_it_passed() {
        let fill = |index| {
            let key = ChunkKey {
                object: Arc::from("h/p"),
                version: 9,
                index,
            };
            Fill::new(key, 4).0
        };
        let p = Pending::default();
        p.pace();
        // Chunk 0 is the head fetch's; before the client asks for more, 1 and 2 may fill.
        assert!(p.may_fill(1, 2) && p.may_fill(2, 2) && !p.may_fill(3, 2));
        p.push_fill(fill(1));
        p.push_fill(fill(2));
        // The client reads chunk 1 (it holds it): still 1 and 2 only.
        let reading = p.fill(1).unwrap();
        assert!(p.may_fill(2, 2) && !p.may_fill(3, 2));
        // It reaches chunk 2: 3 may fill.
        let next = p.fill(2).unwrap();
        assert!(p.may_fill(3, 2) && !p.may_fill(4, 2));
        p.push_fill(fill(3));
        assert!(p.fill(1).is_some(), "kept while its client still holds it");
        drop(reading);
        p.push_fill(fill(4));
        assert!(p.fill(1).is_none(), "passed and read by no one: let go");
        assert!(p.fill(3).is_some());
        drop(next);
        // Unpaced (an answer others may still join from the start), nothing goes early.
        let q = Pending::default();
        q.push_fill(fill(1));
        q.push_fill(fill(2));
        drop(q.fill(2));
        assert!(q.fill(1).is_some());
    }

    #[test]
    fn under_a_memory_bound_kept_fills_passed_go_and_awaited_chunks_are_known() {
        // An answer without a length: unpaced, every fill kept for clients that may join.
        // (Each client holds the fetch's `Pending`, as the fetch does.)
        let p = Arc::new(Pending::default());
        let _client = p.clone();
        let fill = |i| Fill::new(chunk(i), 4).0;
        for i in 1..=3 {
            p.push_fill(fill(i));
        }
        let at = p.reader();
        at.store(3, Ordering::Release);
        let reading = p.fill(3).unwrap();
        assert!(p.keeps_all(), "unpaced: nothing passed goes on its own");
        p.let_go_passed(true);
        assert!(
            !p.keeps_all(),
            "passed fills went: joiners fetch on their own"
        );
        assert!(p.fill(3).is_some(), "the one a client reads stays");
        drop(reading);
        // Ahead of every client, with no client left (a range's): they go too. Not while
        // a client holds the fetch, reading or not yet (a waiter woken by the head).
        let r = Arc::new(Pending::default());
        for i in 1..=4 {
            r.push_fill(fill(i));
        }
        let waiter = r.clone();
        r.let_go_passed(true);
        assert!(
            (1..=4).all(|i| r.fill(i).is_some()),
            "a waiter not reading yet"
        );
        let gone = waiter.reader();
        gone.store(2, Ordering::Release);
        drop(r.fill(2));
        r.let_go_passed(true);
        assert!(r.fill(3).is_some(), "ahead of its reader: kept");
        assert!(!r.keeps_all(), "chunk 1, passed, went");
        drop((gone, waiter));
        r.let_go_passed(true);
        assert!(
            (1..=4).all(|i| r.fill(i).is_none()),
            "no client left: none kept"
        );
        assert!(!r.keeps_all(), "a client joining now fetches on its own");
        // A client that holds the fetch but reads nothing yet (woken by the head, not yet
        // polled) keeps every fill, though another reads further on.
        let w = Arc::new(Pending::default());
        for i in 1..=4 {
            w.push_fill(fill(i));
        }
        let owner = w.clone();
        let ahead = owner.reader();
        ahead.store(3, Ordering::Release);
        drop(owner.fill(3));
        let waiter = w.clone();
        w.let_go_passed(true);
        assert!(
            (1..=4).all(|i| w.fill(i).is_some()),
            "the waiter's chunks went"
        );
        drop(waiter);
        w.let_go_passed(true);
        assert!(w.fill(1).is_none() && w.fill(3).is_some());
        drop((ahead, owner));
        // A client still on chunk 4 keeps 4 and after; one that leaves keeps nothing.
        let q = Arc::new(Pending::default());
        let _clients = q.clone();
        for i in 1..=6 {
            q.push_fill(fill(i));
        }
        let (slow, fast) = (q.reader(), q.reader());
        slow.store(4, Ordering::Release);
        fast.store(6, Ordering::Release);
        drop(q.fill(6));
        q.let_go_passed(true);
        assert!(q.fill(3).is_none() && q.fill(4).is_some() && q.fill(5).is_some());
        q.let_go_passed(false);
        assert!(
            q.fill(4).is_none(),
            "past the fetch's patience: the slow reader is cut"
        );
        drop(slow);
        q.let_go_passed(true);
        assert!(q.fill(5).is_none() && q.fill(6).is_some());
        let f = Arc::new(InFlight::default());
        let waiting = f.await_room(chunk(4));
        assert!(f.awaits_room(&chunk(4)) && !f.awaits_room(&chunk(5)));
        drop(waiting);
        assert!(!f.awaits_room(&chunk(4)));
    }
}

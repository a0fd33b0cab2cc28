//! Chunk memory registered with io_uring.
//!
//! The memory tier keeps chunks of at least [`ARENA_MIN`] bytes in one anonymous mapping
//! of `memory_bytes` plus headroom ([`arena_len`]), carved by a buddy allocator (`buddy`:
//! a chunk takes its length rounded up to 16 KiB, cut from the smallest power-of-two block
//! aligned to its size that holds it, so it never straddles the 1 GiB boundaries the
//! mapping is registered in). Every worker registers the mapping with its ring as fixed
//! buffers, so a zero-copy send or a disk read into a chunk skips the page
//! pinning each unregistered operation pays. Smaller chunks live on the heap: they ride
//! behind their response head in one copied send and never go zero-copy.
//!
//! A block returns to the allocator when the last `Bytes` handle of its chunk drops — after
//! eviction *and* after every send reading it completed (a zero-copy send holds its handle
//! until the kernel's notification) — so memory the kernel may still read is never reused.
//! When the arena has no block free (fragmentation, or chunks held by sends after eviction),
//! the chunk goes to the heap instead and the fallback is counted.
//!
//! Those heap chunks are the only chunk memory outside the mapping, so they are bounded:
//! the arena counts their bytes, alive or kept for reuse (`loose`, `spare`), against a cap
//! set with it (the config's `CacheConfig::loose_chunk_bytes`). Past the cap [`ChunkBuf::alloc`] gives nothing and its
//! caller waits for room (a fill already under way, a sender finishing, a slow reader cut
//! at its send deadline all give some back). The memory tier never keeps a heap chunk of
//! arena size (`MemoryTier::insert` copies it into a block or leaves it out), so what is
//! loose is only what fills, senders and the disk writer hold for a while.

use crate::buddy::Buddy;
use crate::wake::{Wakers, Watchers};
use bytes::Bytes;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Smallest chunk kept in the arena.
pub const ARENA_MIN: usize = 16 * 1024;
/// Largest block io_uring registers as one fixed buffer.
pub const SEGMENT: usize = 1 << 30;
/// Largest chunk kept in the arena (larger ones, if a config allows them, go to the heap).
pub const ARENA_MAX: usize = 256 << 20;
/// The mapping's length is a multiple of this (a huge page).
const ROUND: usize = 2 << 20;

/// The arena for a memory tier of `capacity` bytes, as `CacheConfig::arena_bytes` sizes it
/// (a fill takes its block before the insert that evicts to make room, hence the headroom).
pub fn arena_len(capacity: u64, chunk_size: u64) -> usize {
    let config = relay_config::CacheConfig {
        memory_bytes: capacity,
        chunk_size,
        ..relay_config::CacheConfig::default()
    };
    usize::try_from(config.arena_bytes()).unwrap_or(usize::MAX)
}

/// The registered mapping and its allocator.
pub struct Arena {
    base: NonNull<u8>,
    len: usize,
    blocks: Mutex<Buddy>,
    /// Bytes in blocks handed out now.
    used: AtomicU64,
    /// Chunks that wanted a block and went to the heap.
    fallbacks: AtomicU64,
    /// Bytes of such heap chunks alive now.
    loose: AtomicU64,
    /// The most `loose` may reach.
    loose_cap: u64,
    /// Loose mappings given back, as (address, length), kept for the next loose chunk of
    /// the same length rather than unmapped: a fresh mapping's pages fault in one by one,
    /// zeroed and charged, as a fill writes them (a tenth of a cold transfer's CPU once
    /// chunk memory is full). Still counted in `loose`, so within its cap; unmapped when
    /// loose bytes are wanted for another length ([`Arena::release_spare`]).
    spare: Mutex<Vec<(usize, usize)>>,
    /// Bytes of those.
    spare_bytes: AtomicU64,
    /// Chunks refused because `loose` was at its cap.
    refused: AtomicU64,
    /// Workers with a response waiting for room ([`Arena::watch_room`]), woken once when a
    /// block or loose bytes are given back.
    room: Watchers,
    /// How to wake them (the server's, set once its workers exist).
    wakers: OnceLock<Wakers>,
}

// SAFETY: the mapping is plain memory owned by the arena for its whole life; the allocator
// state is behind a Mutex; blocks are owned exclusively by one `ChunkBuf` at a time.
unsafe impl Send for Arena {}
// SAFETY: as above; `&Arena` only allocates (locked) and reads addresses.
unsafe impl Sync for Arena {}

impl Arena {
    /// Maps `len` bytes (rounded up to 2 MiB) for chunk storage, with at most `loose_cap`
    /// bytes of chunks of arena size on the heap beside it. The pages are faulted in when a
    /// ring registers them (registration pins them), not here.
    pub fn new(len: usize, loose_cap: u64) -> io::Result<Arc<Arena>> {
        let len = len
            .checked_next_multiple_of(ROUND)
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "arena size"))?;
        // Mapped one huge page longer, then trimmed to a huge-page-aligned start: blocks
        // are aligned to their size, so an aligned base lets whole chunks take one block.
        let mapped = len
            .checked_add(ROUND)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "arena size"))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; the
        // result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = (p as usize).next_multiple_of(ROUND);
        let (head, tail) = (start - p as usize, ROUND - (start - p as usize));
        // SAFETY: both ranges are parts of the mapping just made, outside the kept
        // `start..start + len`; nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
        }
        let p = start as *mut libc::c_void;
        // Huge pages make registration and the TLB cheaper; failure to get them is fine.
        // SAFETY: advice on the mapping made just above.
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let start = base.as_ptr() as usize;
        let blocks = Buddy::new(
            start,
            start + len,
            ARENA_MIN.trailing_zeros(),
            SEGMENT.trailing_zeros(),
        );
        Ok(Arc::new(Arena {
            base,
            len,
            blocks: Mutex::new(blocks),
            used: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            loose: AtomicU64::new(0),
            loose_cap,
            spare: Mutex::new(Vec::new()),
            spare_bytes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            room: Watchers::default(),
            wakers: OnceLock::new(),
        }))
    }

    /// Bytes mapped.
    pub fn capacity(&self) -> u64 {
        self.len as u64
    }

    /// Bytes in blocks handed out now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Chunks that went to the heap because no block was free.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Bytes of loose chunks (of arena size, that found no block free) alive now.
    pub fn loose(&self) -> u64 {
        let held = self.loose.load(Ordering::Relaxed);
        held.saturating_sub(self.spare_bytes.load(Ordering::Relaxed))
    }

    /// Bytes of loose mappings kept for reuse ([`Arena::spare`]).
    pub fn spare(&self) -> u64 {
        self.spare_bytes.load(Ordering::Relaxed)
    }

    /// The most [`Arena::loose`] and [`Arena::spare`] may reach together.
    pub fn loose_cap(&self) -> u64 {
        self.loose_cap
    }

    /// Chunks refused memory: no block free and the loose bytes at their cap.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How to wake workers parked for room (set once, by the server).
    pub fn set_wakers(&self, wakers: Wakers) {
        let _ = self.wakers.set(wakers);
    }

    /// Worker `worker` parks a response until chunk memory is given back. (Noted after the
    /// refusal, so memory given back in between wakes no one; the worker's tick is the
    /// safety net then.)
    pub fn watch_room(&self, worker: usize) {
        self.room.watch(worker);
    }

    /// Chunk memory was given back: wake the workers parked for room, once.
    fn room_freed(&self) {
        if let Some(w) = self.wakers.get() {
            w.wake_once(&self.room);
        }
    }

    /// A kept loose mapping of exactly `len` bytes ([`Arena::spare`]), its bytes counted
    /// in `loose` already.
    fn reuse_loose(&self, len: usize) -> Option<NonNull<u8>> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        let at = spare.iter().position(|&(_, l)| l == len)?;
        let (addr, _) = spare.swap_remove(at);
        self.spare_bytes.fetch_sub(len as u64, Ordering::Relaxed);
        NonNull::new(addr as *mut u8)
    }

    /// A loose chunk's mapping given back: kept for the next ([`Arena::spare`]).
    fn give_back_loose(&self, ptr: NonNull<u8>, len: usize) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        spare.push((ptr.as_ptr() as usize, len));
        // (Counted under the list's lock, so the count never runs behind the list.)
        self.spare_bytes.fetch_add(len as u64, Ordering::Relaxed);
        drop(spare);
        self.room_freed();
    }

    /// Unmaps kept loose mappings, the largest first, until at least `want` bytes are given
    /// back to `loose` (all of them for `u64::MAX`); the bytes given back. Only as many as
    /// needed: a caller may hold the in-flight table's lock.
    fn release_spare(&self, want: u64) -> u64 {
        let mut taken = Vec::new();
        let mut freed = 0u64;
        {
            let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
            spare.sort_unstable_by_key(|&(_, len)| len);
            while freed < want {
                let Some((addr, len)) = spare.pop() else {
                    break;
                };
                self.spare_bytes.fetch_sub(len as u64, Ordering::Relaxed);
                freed += len as u64;
                taken.push((addr, len));
            }
        }
        for (addr, len) in taken {
            unmap_loose(addr, len);
            self.loose.fetch_sub(len as u64, Ordering::Relaxed);
        }
        freed
    }

    /// Takes `len` loose bytes if they fit under the cap (kept mappings, of other lengths,
    /// giving theirs back first when they do not).
    fn take_loose(&self, len: usize) -> bool {
        let len = len as u64;
        let take = || {
            self.loose
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                    held.checked_add(len).filter(|&n| n <= self.loose_cap)
                })
                .is_ok()
        };
        if take() {
            return true;
        }
        let over = (self.loose.load(Ordering::Relaxed) + len).saturating_sub(self.loose_cap);
        // (Asked again either way: another thread may have given bytes back meanwhile.)
        if over > 0 {
            self.release_spare(over);
        }
        let taken = take();
        if !taken {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// The arena bytes a chunk of `len` bytes takes: its length rounded up to the smallest
    /// block (the rest of its power-of-two block is given back, see `buddy::alloc_run`).
    pub fn block_len(len: usize) -> usize {
        len.max(1).next_multiple_of(ARENA_MIN)
    }

    fn start(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// The mapping's address range (start, end).
    pub fn bounds(&self) -> (usize, usize) {
        (self.start(), self.start() + self.len)
    }

    /// Whether `ptr..ptr + len` lies inside the arena.
    pub fn contains(&self, ptr: *const u8, len: usize) -> bool {
        let p = ptr as usize;
        p >= self.start() && p.saturating_add(len) <= self.start() + self.len
    }

    /// The iovecs to register: the mapping cut at absolute 1 GiB boundaries, so the fixed
    /// buffer index of an address is a division (see [`Arena::buf_index`]).
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        let (start, end) = (self.start(), self.start() + self.len);
        let mut out = Vec::new();
        let mut at = start;
        while at < end {
            let next = ((at / SEGMENT) + 1) * SEGMENT;
            let stop = next.min(end);
            out.push(libc::iovec {
                iov_base: at as *mut libc::c_void,
                iov_len: stop - at,
            });
            at = stop;
        }
        out
    }

    /// The fixed buffer index (in the order of [`Arena::iovecs`]) that holds all of
    /// `ptr..ptr + len`, or None when the range is outside the arena or crosses a segment.
    pub fn buf_index(&self, ptr: *const u8, len: usize) -> Option<u16> {
        if len == 0 || !self.contains(ptr, len) {
            return None;
        }
        let p = ptr as usize;
        let first = self.start() / SEGMENT;
        let seg = p / SEGMENT;
        if (p + len - 1) / SEGMENT != seg {
            return None;
        }
        u16::try_from(seg - first).ok()
    }

    fn alloc(self: &Arc<Self>, len: usize) -> Option<NonNull<u8>> {
        let block = Self::block_len(len);
        let got = self
            .blocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .alloc_run(block);
        match got.and_then(|at| NonNull::new(at as *mut u8)) {
            Some(p) => {
                self.used.fetch_add(block as u64, Ordering::Relaxed);
                Some(p)
            }
            None => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn dealloc(&self, ptr: NonNull<u8>, len: usize) {
        let block = Self::block_len(len);
        // The same length as at `alloc`: the same run.
        self.blocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .free_run(ptr.as_ptr() as usize, block);
        self.used.fetch_sub(block as u64, Ordering::Relaxed);
        self.room_freed();
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        self.release_spare(u64::MAX);
        // SAFETY: every block's owner holds an Arc to the arena, so none is alive now; the
        // mapping is this arena's own.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

enum Home {
    Heap,
    Arena(Arc<Arena>),
    /// A mapping of its own (not the allocator's, which would keep freed pages a while, on
    /// another thread's list when another thread frees them), counted in the arena's loose
    /// bytes: kept for the next loose chunk of its length when dropped ([`Arena::spare`]).
    Loose(Arc<Arena>),
}

/// Unmaps a loose chunk's mapping of `len` bytes at `addr`.
fn unmap_loose(addr: usize, len: usize) {
    // SAFETY: callers pass a mapping `map_loose` made for exactly `len` bytes, which no
    // buffer refers to any more (its `ChunkBuf` was dropped, or it was kept spare and just
    // taken out of the spare list), unmapped once.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// A private anonymous mapping of `len` bytes (zeroed), for a loose chunk.
fn map_loose(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing; the
    // result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast::<u8>())
}

/// One chunk's memory, owned exclusively: a block of the arena or a heap allocation.
/// Written through raw pointers while filling (see `fill`), then frozen into `Bytes`.
pub struct ChunkBuf {
    ptr: NonNull<u8>,
    len: usize,
    home: Home,
}

// SAFETY: the buffer owns its memory exclusively; nothing in it is tied to a thread.
unsafe impl Send for ChunkBuf {}
// SAFETY: shared access only reads (`as_slice`) or hands out the raw pointer; writers
// through that pointer are synchronised by their owner (the fill's publication rule).
unsafe impl Sync for ChunkBuf {}

impl ChunkBuf {
    /// `len` bytes: from the arena when given, the chunk is large enough and a block is
    /// free; else a mapping of its own (fresh and zeroed, or one kept from an earlier loose
    /// chunk, holding its bytes) counted in the arena's loose bytes when the chunk was of
    /// arena size, or zeroed heap memory for a smaller one. (Readers see only the bytes a
    /// fill published, as for reused arena blocks.) None when it would take the loose bytes past their cap: the caller
    /// waits for room.
    pub fn alloc(len: usize, arena: Option<&Arc<Arena>>) -> Option<ChunkBuf> {
        let arena = arena.filter(|_| (ARENA_MIN..=ARENA_MAX).contains(&len));
        let home = match arena {
            Some(a) => {
                if let Some(ptr) = a.alloc(len) {
                    return Some(ChunkBuf {
                        ptr,
                        len,
                        home: Home::Arena(a.clone()),
                    });
                }
                if let Some(ptr) = a.reuse_loose(len) {
                    return Some(ChunkBuf {
                        ptr,
                        len,
                        home: Home::Loose(a.clone()),
                    });
                }
                if !a.take_loose(len) {
                    return None;
                }
                return match map_loose(len) {
                    Some(ptr) => Some(ChunkBuf {
                        ptr,
                        len,
                        home: Home::Loose(a.clone()),
                    }),
                    None => {
                        a.loose.fetch_sub(len as u64, Ordering::Relaxed);
                        None
                    }
                };
            }
            None => Home::Heap,
        };
        Some(ChunkBuf::heap(len, home))
    }

    /// `len` bytes of the arena, or None when no block is free (never the heap).
    pub fn in_arena(len: usize, arena: &Arc<Arena>) -> Option<ChunkBuf> {
        if !(ARENA_MIN..=ARENA_MAX).contains(&len) {
            return None;
        }
        let ptr = arena.alloc(len)?;
        Some(ChunkBuf {
            ptr,
            len,
            home: Home::Arena(arena.clone()),
        })
    }

    /// `len` bytes of zeroed heap memory, uncounted (small chunks, and memory held within
    /// another budget).
    pub fn on_heap(len: usize) -> ChunkBuf {
        ChunkBuf::heap(len, Home::Heap)
    }

    fn heap(len: usize, home: Home) -> ChunkBuf {
        let boxed: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        let ptr = NonNull::new(Box::into_raw(boxed).cast::<u8>()).unwrap_or(NonNull::dangling());
        ChunkBuf { ptr, len, home }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes live in the registered arena.
    pub fn registered(&self) -> bool {
        matches!(self.home, Home::Arena(_))
    }

    /// The start of the memory, for writers that follow their own publication rule.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr + len` is this buffer's own initialised memory (zeroed heap or
        // mapped pages), and `&mut self` excludes every other access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The whole buffer as `Bytes`, without a copy.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for ChunkBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`; shared readers only read bytes their owner finished
        // writing (a frozen buffer is never written again).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        match &self.home {
            Home::Arena(a) => a.dealloc(self.ptr, self.len),
            // (Its bytes may be in a send still: a loose buffer is dropped only when the
            // last `Bytes` of it is, after every send of it completed.)
            Home::Loose(a) => a.give_back_loose(self.ptr, self.len),
            Home::Heap => {
                let raw = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
                // SAFETY: made by Box::into_raw of a boxed slice of exactly `len` bytes in
                // `alloc`, and dropped once, here.
                drop(unsafe { Box::from_raw(raw) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_chunks_go_to_the_heap_large_ones_to_the_arena() {
        let a = Arena::new(4 << 20, 0).unwrap();
        let small = ChunkBuf::alloc(4096, Some(&a)).unwrap();
        assert!(!small.registered());
        let mut big = ChunkBuf::alloc(100_000, Some(&a)).unwrap();
        assert!(big.registered());
        // 100,000 bytes in seven 16 KiB units.
        assert_eq!(a.used(), 112 * 1024);
        big.as_mut_slice().fill(7);
        let b = big.freeze();
        assert!(b.iter().all(|&x| x == 7));
        assert!(a.contains(b.as_ptr(), b.len()));
        assert_eq!(a.buf_index(b.as_ptr(), b.len()), Some(0));
        drop(b);
        assert_eq!(a.used(), 0);
        assert!(a.buf_index(small.as_ref().as_ptr(), 4096).is_none());
    }

    #[test]
    fn a_loose_mapping_given_back_is_kept_for_the_next_of_its_length() {
        let a = Arena::new(2 << 20, 4 << 20).unwrap();
        let full = ChunkBuf::alloc(2 << 20, Some(&a)).unwrap();
        assert!(full.registered());
        let one = ChunkBuf::alloc(1 << 20, Some(&a)).unwrap();
        let at = one.as_ptr();
        drop(one);
        assert_eq!((a.loose(), a.spare()), (0, 1 << 20));
        // The same length: the same mapping, no new one.
        let again = ChunkBuf::alloc(1 << 20, Some(&a)).unwrap();
        assert_eq!(again.as_ptr(), at);
        assert_eq!((a.loose(), a.spare()), (1 << 20, 0));
        let other = ChunkBuf::alloc(1 << 20, Some(&a)).unwrap();
        drop((again, other));
        assert_eq!((a.loose(), a.spare()), (0, 2 << 20));
        // Another length wants the cap's bytes: the spare ones go first.
        let big: Vec<_> = (0..2)
            .map(|_| ChunkBuf::alloc(2 << 20, Some(&a)).unwrap())
            .collect();
        assert_eq!((a.loose(), a.spare()), (4 << 20, 0));
        drop((big, full));
    }

    #[test]
    fn a_full_arena_falls_back_to_the_heap_and_frees_on_drop() {
        let a = Arena::new(2 << 20, 1 << 20).unwrap();
        let bufs: Vec<_> = (0..4)
            .map(|_| ChunkBuf::alloc(512 * 1024, Some(&a)).unwrap())
            .collect();
        assert!(bufs.iter().all(ChunkBuf::registered));
        let extra = ChunkBuf::alloc(512 * 1024, Some(&a)).unwrap();
        assert!(!extra.registered());
        assert_eq!(a.fallbacks(), 1);
        assert_eq!(a.loose(), 512 * 1024);
        drop((bufs, extra));
        assert_eq!(a.loose(), 0);
        assert_eq!(a.used(), 0);
        // Freed blocks merge again: the whole arena is one block.
        let whole = ChunkBuf::alloc(2 << 20, Some(&a)).unwrap();
        assert!(whole.registered());
    }

    #[test]
    fn memory_given_back_wakes_the_workers_parked_for_room_once() {
        let a = Arena::new(2 << 20, 512 * 1024).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        a.set_wakers(Wakers::new(move |w| s.lock().unwrap().push(w)));
        let bufs: Vec<_> = (0..5)
            .map(|_| ChunkBuf::alloc(512 * 1024, Some(&a)).unwrap())
            .collect();
        assert!(
            ChunkBuf::alloc(512 * 1024, Some(&a)).is_none(),
            "at the bound"
        );
        a.watch_room(1);
        let mut bufs = bufs.into_iter();
        // A loose chunk given back wakes the parked worker, once.
        drop(bufs.next_back());
        assert_eq!(*seen.lock().unwrap(), [1]);
        // A block given back with nobody parked wakes no one.
        drop(bufs.next());
        assert_eq!(*seen.lock().unwrap(), [1]);
        a.watch_room(0);
        drop(bufs);
        assert_eq!(*seen.lock().unwrap(), [1, 0]);
    }

    #[test]
    fn segments_cover_the_mapping_at_gib_boundaries() {
        let a = Arena::new(6 << 20, 0).unwrap();
        let iov = a.iovecs();
        assert_eq!(iov.iter().map(|v| v.iov_len).sum::<usize>(), 6 << 20);
        for (i, v) in iov.iter().enumerate() {
            let p = v.iov_base as *const u8;
            assert_eq!(a.buf_index(p, v.iov_len), Some(i as u16));
        }
        assert!(a.buf_index(std::ptr::null(), 1).is_none());
    }
}

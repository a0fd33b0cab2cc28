//! A provided-buffer ring: receive buffers the kernel picks from when a multishot receive
//! completes, so an idle connection holds no receive buffer of its own and one submission
//! serves every receive of a connection's life.
//!
//! The rule, stated once: a buffer belongs to the kernel from the moment its entry is
//! published at the ring's tail until a completion names its id; then it is ours until we
//! publish it again. The ring and buffer memory is mapped here, registered with one
//! io_uring, and unmapped only after that ring is gone (the kernel pins the pages while the
//! ring lives).

use io_uring::IoUring;
use io_uring::types::BufRingEntry;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    bufs: *mut u8,
    bufs_bytes: usize,
    entries: u16,
    buf_size: usize,
    tail: u16,
    pub bgid: u16,
}

fn map(bytes: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous private mapping; no file, no aliasing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

impl BufRing {
    /// `entries` buffers (a power of two) of `buf_size` bytes, registered as group `bgid`.
    pub fn new(ring: &IoUring, bgid: u16, entries: u16, buf_size: usize) -> io::Result<BufRing> {
        if !entries.is_power_of_two() {
            return Err(io::Error::other("buffer ring size must be a power of two"));
        }
        let ring_bytes = entries as usize * std::mem::size_of::<BufRingEntry>();
        let bufs_bytes = entries as usize * buf_size;
        let ring_mem = map(ring_bytes)?.cast::<BufRingEntry>();
        let bufs = match map(bufs_bytes) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: unmapping what we just mapped, unused.
                unsafe { libc::munmap(ring_mem.cast(), ring_bytes) };
                return Err(e);
            }
        };
        let mut br = BufRing {
            ring: ring_mem,
            ring_bytes,
            bufs,
            bufs_bytes,
            entries,
            buf_size,
            tail: 0,
            bgid,
        };
        // SAFETY: `ring_mem` is page-aligned (mmap), zeroed, `entries` entries long, and
        // outlives the io_uring it is registered with (see the module rule).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed back to us.
    pub fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(self.buf_size);
        let at = (bid % self.entries) as usize * self.buf_size;
        // SAFETY: `at + len` lies inside the buffer area; the completion that named `bid`
        // made the buffer ours (module rule) and the kernel wrote `len` bytes to it.
        unsafe { std::slice::from_raw_parts(self.bufs.add(at), len) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid % self.entries);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `slot < entries`; the entry at the tail is not yet visible to the kernel
        // (the tail is published after), so writing it races with nothing.
        let e = unsafe { &mut *self.ring.add(slot) };
        // SAFETY: in bounds of the buffer area.
        e.set_addr(unsafe { self.bufs.add(bid as usize * self.buf_size) } as u64);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `ring` is the first entry of an initialised, registered ring, so the tail
        // field lies in it; the kernel reads it with acquire semantics.
        let tail = unsafe { BufRingEntry::tail(self.ring) } as *const AtomicU16;
        // SAFETY: the tail is a u16 the kernel only reads; AtomicU16 has its layout.
        unsafe { &*tail }.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the worker drops its io_uring before this ring (field order), so the
        // kernel no longer uses these pages; they were mapped in `new`.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
            libc::munmap(self.bufs.cast(), self.bufs_bytes);
        }
    }
}

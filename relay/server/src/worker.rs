//! One worker: an io_uring event loop on its own thread, with its own listener
//! (SO_REUSEPORT), its own connections and its own buffers. Workers share only the cache
//! (sharded, reference-counted chunks) and their statistics (one cache line each).
//!
//! A request's way: multishot accept → recv into the connection's buffer → sans-IO parse
//! (`relay_proto`) → object description (cache, else origin) → response head → for each
//! chunk of the body: memory tier hit, else an io_uring read from the origin file that fills
//! the memory tier → one `sendmsg` per piece (head and first piece together) → next request.

use crate::conn::{
    Body, Conditionals, Conn, DirOpen, FileRead, Linger, PassReader, PassRequest, Phase,
    RequestInfo, Route, Small, Upload,
};
use crate::origin::{FileStat, OriginError};
use crate::ring::Ring;
use crate::{Shared, WorkerStats, sys};
use bytes::Bytes;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use io_uring::types::Timespec;
use relay_cache::fill::{FillError, Start};
use relay_cache::{ChunkKey, ChunkRef, ObjectMeta};
use relay_proto::multipart::Multipart;
use relay_proto::range::RangeSpec;
use relay_proto::{DateCache, Method, Parsed, ResponseHead, parse_request};
use relay_upstream::{ChunkRequest, HeadRequest};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

const ACCEPT: u8 = 1;
const RECV: u8 = 2;
const SEND: u8 = 4;
const READ: u8 = 6;
const TICK: u8 = 7;
const CANCEL: u8 = 8;
const WAKE: u8 = 9;
/// A disk-tier chunk's header read.
const DISK_READ: u8 = 10;
const SEND_ZC: u8 = 11;
/// Bodies up to this size are copied behind their head and sent with one plain `send`.
const SMALL_BODY: usize = 16 * 1024;
const RECV_MULTI: u8 = 12;
/// A disk-tier chunk's body read.
const DISK_BODY: u8 = 13;
/// A response head sent ahead of (and linked to) a zero-copy fixed-buffer body.
const SEND_HEAD: u8 = 14;
/// A disk-tier chunk file's `openat`.
const DISK_OPEN: u8 = 15;
/// A directory-origin file's `openat2` beneath the root, then its `statx`.
const DIR_OPEN: u8 = 16;
const DIR_STAT: u8 = 17;

/// `Conn::restores` bits: the description of the request's base key, or of its variant, was
/// looked for on disk.
const RESTORE_BASE: u8 = 1;
const RESTORE_VARIANT: u8 = 2;

/// Provided buffers per worker, and their size: a request head (or a part of one) lands in
/// one and is copied into the connection's parse buffer at once.
const RECV_BUFFERS: u16 = 1024;
const RECV_BUFFER_SIZE: usize = 4096;
/// Bytes a client may send ahead (pipelining) beyond the parse buffer before it is cut off.
const OVERFLOW_LIMIT: usize = 1 << 20;

/// IORING_NOTIF_USAGE_ZC_COPIED, in a zero-copy notification's result.
const ZC_COPIED: i32 = i32::MIN;

/// How long in-flight responses may finish after shutdown is asked for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How much longer a worker waits for operations it cannot cancel (file reads) before it
/// stops anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How often the worker's timer fires: connection deadlines are checked at this grain.
const TICK_INTERVAL: Duration = Duration::from_millis(200);

fn ud(kind: u8, slot: u32, generation: u32) -> u64 {
    (u64::from(slot) << 32) | (u64::from(generation & 0x00ff_ffff) << 8) | u64::from(kind)
}

fn ud_parts(ud: u64) -> (u8, u32, u32) {
    (
        ud as u8,
        (ud >> 32) as u32,
        ((ud >> 8) & 0x00ff_ffff) as u32,
    )
}

fn timespec(d: Duration) -> Box<Timespec> {
    Box::new(Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()))
}

pub struct Worker {
    ring: Ring,
    /// Declared after `ring`: dropped after it (the kernel stops using the buffers first).
    bufring: Option<crate::bufring::BufRing>,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stats: Arc<CachePadded<WorkerStats>>,
    /// This worker's number: what it watches fills under, and its eventfd.
    id: usize,
    /// Eight bytes the eventfd read lands in (boxed: the kernel writes it).
    wake_buf: Box<[u8; 8]>,
    /// Connections waiting for upstream bytes (slot, generation); checked when woken.
    waiting: Vec<(u32, u32)>,
    waiting_now: Vec<(u32, u32)>,
    conns: Vec<Conn>,
    free: Vec<u32>,
    live: usize,
    date: DateCache,
    header_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    max_connections: usize,
    /// `server.zerocopy_min_bytes`: arena pieces at least this long go SEND_ZC from their
    /// fixed buffer (0: never); `zc_min_unregistered`, the same for other memory.
    zc_min: usize,
    zc_min_unregistered: usize,
    /// The memory tier's arena, when this ring registered it: pieces inside it are sent
    /// (and disk chunks read) as fixed buffers.
    fixed: Option<Arc<relay_cache::arena::Arena>>,
    /// How long a directory object's description is trusted (`origin.revalidate_ms`).
    revalidate: Duration,
    tick: Box<Timespec>,
    /// The loop turn's clock reading (one `clock_gettime` per turn, not per operation).
    now: Instant,
    completions: Vec<(u64, i32, u32)>,
    /// The multipart/byteranges boundary of this worker (random per process).
    boundary: String,
    /// Request latency (µs) since the last tick; published to `stats.latency` on the tick.
    latency: Histogram<u64>,
    /// The multishot accept is armed. Off when a drain ended it, or when it ended for want
    /// of descriptors or memory (armed again on the next tick unless draining).
    accepting: bool,
    /// The drain deadline and its grace passed with connections still busy: stop anyway.
    given_up: bool,
    draining: Option<Instant>,
}

impl Worker {
    pub fn new(
        listener: std::net::TcpListener,
        shared: Arc<Shared>,
        stats: Arc<CachePadded<WorkerStats>>,
        id: usize,
    ) -> std::io::Result<Worker> {
        let cfg = &shared.config;
        let mut ring = Ring::new(4096)?;
        // Kernels without provided-buffer rings fall back to one receive per request.
        let bufring =
            crate::bufring::BufRing::new(&ring.ring, 0, RECV_BUFFERS, RECV_BUFFER_SIZE).ok();
        let fixed = shared.memory.arena().and_then(|arena| {
            // SAFETY: the arena stays mapped while this worker (and so its ring) lives: the
            // worker holds an Arc to it in `fixed`, dropped after the ring.
            match unsafe { ring.register_buffers(&arena.iovecs()) } {
                Ok(()) => Some(arena.clone()),
                Err(e) => {
                    static WARNED: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "memory tier: worker {id}: registering {} bytes with io_uring \
                             failed ({e}); it sends from unregistered memory (each worker's \
                             ring locks the arena: raise RLIMIT_MEMLOCK to workers x that, or \
                             grant CAP_IPC_LOCK)",
                            arena.capacity()
                        );
                    }
                    None
                }
            }
        });
        stats
            .arena_registered
            .store(fixed.is_some() as u64, Ordering::Relaxed);
        Ok(Worker {
            fixed,
            ring,
            bufring,
            listener,
            header_timeout: cfg.server.header_timeout(),
            idle_timeout: cfg.server.idle_timeout(),
            send_timeout: cfg.server.idle_timeout(),
            max_connections: cfg.server.max_connections,
            zc_min: cfg.server.zerocopy_min_bytes as usize,
            zc_min_unregistered: cfg.server.zerocopy_unregistered_min_bytes as usize,
            revalidate: Duration::from_millis(cfg.origin.revalidate_ms),
            tick: timespec(TICK_INTERVAL),
            now: Instant::now(),
            shared,
            stats,
            id,
            wake_buf: Box::new([0; 8]),
            waiting: Vec::new(),
            waiting_now: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            date: DateCache::new(SystemTime::now()),
            completions: Vec::with_capacity(1024),
            boundary: random_boundary(),
            latency: crate::metrics::latency_histogram(),
            accepting: true,
            given_up: false,
            draining: None,
        })
    }

    /// Runs until shutdown is asked for and the connections are drained.
    pub fn run(mut self) -> std::io::Result<()> {
        self.ring
            .accept_multi(self.listener.as_raw_fd(), ud(ACCEPT, 0, 0))?;
        // SAFETY: `self.tick` is boxed and lives as long as the worker.
        unsafe { self.ring.timeout(&*self.tick, ud(TICK, 0, 0))? };
        self.arm_wake()?;
        loop {
            match self.ring.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            self.completions.clear();
            for cqe in self.ring.ring.completion() {
                self.completions
                    .push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
            self.date.update(SystemTime::now());
            self.now = Instant::now();
            for i in 0..self.completions.len() {
                let (u, res, flags) = self.completions[i];
                self.complete(u, res, flags)?;
            }
            if self.draining.is_some() && (self.live == 0 || self.given_up) && !self.accepting {
                return Ok(());
            }
        }
    }

    fn complete(&mut self, u: u64, res: i32, flags: u32) -> std::io::Result<()> {
        let (kind, slot, generation) = ud_parts(u);
        match kind {
            ACCEPT => self.on_accept(res, flags),
            TICK => self.on_tick(),
            CANCEL => Ok(()),
            WAKE => {
                if res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
                    log::warn!("wake read: {}", std::io::Error::from_raw_os_error(-res));
                }
                self.arm_wake()?;
                self.wake_waiting()
            }
            _ => {
                let Some(c) = self.conns.get_mut(slot as usize) else {
                    return Ok(());
                };
                if c.generation & 0x00ff_ffff != generation || c.inflight == 0 {
                    log::error!("completion for a stale slot {slot} (kind {kind})");
                    return Ok(());
                }
                if kind == RECV_MULTI {
                    return self.on_recv_multi(slot, res, flags);
                }
                // A zero-copy send completes twice: the send, then (flag MORE) the
                // notification that releases its memory. Only the second ends it.
                if kind == SEND_ZC
                    && !io_uring::cqueue::notif(flags)
                    && io_uring::cqueue::more(flags)
                {
                    c.zc_sent = Some(res.max(0) as usize);
                    return Ok(());
                }
                c.inflight -= 1;
                if c.closing {
                    if (kind == DISK_OPEN || kind == DIR_OPEN) && res >= 0 {
                        // Opened for a connection that is gone: nobody will read it.
                        sys::close(res);
                    }
                    self.maybe_free(slot);
                    return Ok(());
                }
                match kind {
                    RECV => self.on_recv(slot, res),
                    SEND => self.on_send(slot, res),
                    SEND_HEAD => self.on_send_head(slot, res),
                    SEND_ZC => self.on_send_zc(slot, res, flags),
                    READ => self.on_read(slot, res),
                    DISK_READ => self.on_disk_read(slot, false, res),
                    DISK_BODY => self.on_disk_read(slot, true, res),
                    DISK_OPEN => self.on_disk_open(slot, res),
                    DIR_OPEN => self.on_dir_open(slot, res),
                    DIR_STAT => self.on_dir_stat(slot, res),
                    _ => Ok(()),
                }
            }
        }
    }

    fn on_tick(&mut self) -> std::io::Result<()> {
        if self.shared.shutdown.load(Ordering::Relaxed) && self.draining.is_none() {
            self.draining = Some(Instant::now());
            if self.accepting {
                self.ring.cancel(ud(ACCEPT, 0, 0), ud(CANCEL, 0, 0))?;
            }
            // Idle connections go now; busy ones close after their response.
            for slot in 0..self.conns.len() as u32 {
                let c = &mut self.conns[slot as usize];
                if c.fd < 0 || c.closing {
                    continue;
                }
                c.close_after = true;
                let idle = c.rstart == c.rend
                    && c.pass_request.is_none()
                    && c.discard == 0
                    && c.chunked.is_none()
                    && c.linger.is_none();
                if c.phase == Phase::Recv && idle {
                    self.close(slot);
                }
            }
        }
        self.now = Instant::now();
        self.publish_latency();
        let t = &self.shared.tunables;
        self.header_timeout = Duration::from_millis(t.header_timeout_ms.load(Ordering::Relaxed));
        self.idle_timeout = Duration::from_millis(t.idle_timeout_ms.load(Ordering::Relaxed));
        self.send_timeout = self.idle_timeout;
        self.max_connections = t.max_connections.load(Ordering::Relaxed) as usize;
        self.zc_min = t.zerocopy_min_bytes.load(Ordering::Relaxed) as usize;
        self.zc_min_unregistered =
            t.zerocopy_unregistered_min_bytes.load(Ordering::Relaxed) as usize;
        self.sweep_deadlines();
        self.wake_waiting()?;
        if self.id == 0
            && let Some(disk) = self.shared.disk.as_ref()
        {
            // Files the disk tier dropped (evicted, replaced, corrupt): unlink a bounded
            // batch per tick.
            let mut paths = Vec::new();
            disk.drain_unlinks(&mut paths);
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        }
        if let Some(t) = self.draining
            && t.elapsed() > DRAIN_DEADLINE
        {
            for slot in 0..self.conns.len() as u32 {
                if self.conns[slot as usize].fd >= 0 {
                    self.close(slot);
                }
            }
            if t.elapsed() > DRAIN_DEADLINE + DRAIN_GRACE && !self.given_up {
                // A file read that never completes (a hung disk) holds its slot: stop anyway;
                // `Drop` resets what is left and never frees memory the kernel may still use.
                log::warn!(
                    "worker {}: {} connection(s) still busy {:?} after the drain deadline; \
                     stopping anyway",
                    self.id,
                    self.live,
                    DRAIN_GRACE
                );
                self.given_up = true;
            }
        }
        if !self.accepting && self.draining.is_none() {
            self.accepting = true;
            self.ring
                .accept_multi(self.listener.as_raw_fd(), ud(ACCEPT, 0, 0))?;
        }
        // SAFETY: `self.tick` is boxed and lives as long as the worker.
        unsafe { self.ring.timeout(&*self.tick, ud(TICK, 0, 0)) }
    }

    fn arm_wake(&mut self) -> std::io::Result<()> {
        let fd = self.shared.wakers[self.id].as_raw_fd();
        // SAFETY: `wake_buf` is boxed and lives as long as the worker, which outlives the ring.
        unsafe {
            self.ring
                .read(fd, self.wake_buf.as_mut_ptr(), 8, 0, ud(WAKE, 0, 0))
        }
    }

    /// Drives every connection waiting for upstream bytes (woken, or on the tick as a
    /// safety net).
    fn wake_waiting(&mut self) -> std::io::Result<()> {
        std::mem::swap(&mut self.waiting, &mut self.waiting_now);
        for i in 0..self.waiting_now.len() {
            let (slot, generation) = self.waiting_now[i];
            let c = &self.conns[slot as usize];
            if c.generation == generation && !c.closing && c.fd >= 0 && c.phase == Phase::Wait {
                self.drive(slot)?;
            }
        }
        self.waiting_now.clear();
        Ok(())
    }

    /// Parks a connection until upstream bytes or a head arrive.
    fn wait(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.phase != Phase::Wait {
            // Set on entering the wait, not each time a wake finds nothing new (every tick
            // drives the waiters): a wait without progress ends at its deadline.
            c.deadline = self.now + self.send_timeout;
        }
        c.phase = Phase::Wait;
        self.waiting.push((slot, c.generation));
    }

    fn publish_latency(&mut self) {
        if self.latency.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.stats.latency.lock() {
            let _ = shared.add(&self.latency);
        }
        self.latency.reset();
    }

    /// Closes connections past their deadline (header, idle or send timeout). One io_uring
    /// timer per worker drives this sweep: a linked timeout per operation costs an hrtimer
    /// arm and disarm per request, measured at ~8% of a worker's CPU for 4 KiB hits.
    fn sweep_deadlines(&mut self) {
        for slot in 0..self.conns.len() as u32 {
            let c = &self.conns[slot as usize];
            // A file read that outlives the send deadline (a hung disk) cuts its client too;
            // the slot is freed when the read completes.
            if c.fd < 0 || c.closing || c.deadline > self.now {
                continue;
            }
            if !c.linger.is_some_and(|l| l.shut) {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            self.close(slot);
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) -> std::io::Result<()> {
        if !io_uring::cqueue::more(flags) {
            if self.draining.is_some() {
                self.accepting = false;
            } else if matches!(
                -res,
                libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS
            ) {
                // Out of descriptors or memory: the connection waits in the backlog, and
                // arming again now would fail again at once. Armed again on the next tick.
                self.accepting = false;
            } else {
                // The kernel ended the multishot: arm it again.
                self.ring
                    .accept_multi(self.listener.as_raw_fd(), ud(ACCEPT, 0, 0))?;
            }
        }
        if res < 0 {
            if res != -libc::ECANCELED {
                log::warn!("accept: {}", std::io::Error::from_raw_os_error(-res));
            }
            return Ok(());
        }
        let fd = res as RawFd;
        if self.live >= self.max_connections || self.draining.is_some() {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            sys::close(fd);
            return Ok(());
        }
        sys::set_nodelay(fd);
        let rbuf_len = self.shared.config.server.limits.max_head_bytes + 4096;
        let slot = match self.free.pop() {
            Some(s) => {
                let c = &mut self.conns[s as usize];
                let g = c.generation.wrapping_add(1);
                c.reset(fd, g);
                s
            }
            None => {
                self.conns.push(Conn::new(fd, 0, rbuf_len));
                (self.conns.len() - 1) as u32
            }
        };
        self.live += 1;
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        if self.bufring.is_some() {
            let c = &mut self.conns[slot as usize];
            c.phase = Phase::Recv;
            c.deadline = self.now + self.idle_timeout;
            return self.arm_multishot(slot);
        }
        self.submit_recv(slot)
    }

    fn arm_multishot(&mut self, slot: u32) -> std::io::Result<()> {
        let Some(bgid) = self.bufring.as_ref().map(|b| b.bgid) else {
            return Ok(());
        };
        let c = &mut self.conns[slot as usize];
        c.multishot = true;
        c.inflight += 1;
        self.ring
            .recv_multi(c.fd, bgid, ud(RECV_MULTI, slot, c.generation))
    }

    /// A multishot receive completed: copy the bytes out of the provided buffer (and give it
    /// back at once), re-arm if the kernel ended the multishot, drive the connection if it
    /// was waiting for input.
    fn on_recv_multi(&mut self, slot: u32, res: i32, flags: u32) -> std::io::Result<()> {
        let more = io_uring::cqueue::more(flags);
        let bid = io_uring::cqueue::buffer_select(flags);
        let c = &mut self.conns[slot as usize];
        if let (Some(bid), Some(br)) = (bid, self.bufring.as_mut()) {
            if let (true, false, Some(l)) = (res > 0, c.closing, c.linger.as_mut()) {
                // Input after a refused request: read and dropped (a lingering close).
                l.left = l.left.saturating_sub(res as u64);
            } else if res > 0 && !c.closing {
                let data = br.buf(bid, res as usize);
                if c.rend == c.rstart && c.overflow.is_empty() {
                    c.request_started = Some(self.now);
                }
                if c.rstart > 0 && c.rbuf.len() - c.rend < data.len() {
                    // The response being sent may still need its request's head (a later
                    // chunk's fill forwards its fields): keep it before it is overwritten.
                    c.save_head();
                    c.rbuf.copy_within(c.rstart..c.rend, 0);
                    c.rend -= c.rstart;
                    c.rstart = 0;
                }
                let room = c.rbuf.len() - c.rend;
                if c.overflow.is_empty() && room >= data.len() {
                    c.rbuf[c.rend..c.rend + data.len()].copy_from_slice(data);
                    c.rend += data.len();
                } else {
                    c.overflow.extend_from_slice(data);
                }
            }
            br.recycle(bid);
        }
        if !more {
            c.inflight -= 1;
            c.multishot = false;
        }
        if c.closing {
            self.maybe_free(slot);
            return Ok(());
        }
        if let Some(l) = c.linger {
            let gone = res == 0 || (res < 0 && res != -libc::ENOBUFS);
            let ended = gone || l.left == 0;
            // Gone while its answer waits on an origin: let the fetch go (as without linger).
            // Past `LINGER_BYTES` before the answer is sent, input is still dropped until it
            // is; `linger` then closes at once.
            if (ended && l.shut) || (gone && c.phase == Phase::Wait && c.body.is_none()) {
                self.close(slot);
            } else if !ended && !more {
                self.arm_multishot(slot)?;
            }
            // Until the response is sent, an ended input only stops the reading (`linger`
            // then closes at once).
            return Ok(());
        }
        if res == 0 && (matches!(c.phase, Phase::Send | Phase::Fill) || c.body.is_some()) {
            // The client shut its side after its requests (a half-close): the response under
            // way (its body being sent, read, or waited for), and the requests already
            // received, are still answered; the next read then sees the end again and
            // closes. A client that leaves while relay waits on an origin before its answer
            // has begun is taken for gone, as nginx does, so the fetch it started is let go
            // (`relay_upstream` notices).
            return Ok(());
        }
        if res == 0 || (res < 0 && res != -libc::ENOBUFS) || c.overflow.len() > OVERFLOW_LIMIT {
            self.close(slot);
            return Ok(());
        }
        if !more {
            // Ended by the kernel (e.g. the buffer group ran dry): arm it again.
            self.arm_multishot(slot)?;
        }
        if self.conns[slot as usize].phase == Phase::Recv {
            return self.drive(slot);
        }
        Ok(())
    }

    /// The connection needs more input. With a multishot receive armed it only waits (after
    /// taking in bytes that overflowed earlier); returns true when such bytes were taken in
    /// and the caller should parse again.
    fn need_input(&mut self, slot: u32) -> std::io::Result<bool> {
        let c = &mut self.conns[slot as usize];
        if c.rstart > 0 {
            c.rbuf.copy_within(c.rstart..c.rend, 0);
            c.rend -= c.rstart;
            c.rstart = 0;
        }
        if !c.overflow.is_empty() {
            let n = c.overflow.len().min(c.rbuf.len() - c.rend);
            c.rbuf[c.rend..c.rend + n].copy_from_slice(&c.overflow[..n]);
            c.rend += n;
            c.overflow.drain(..n);
            if n > 0 {
                return Ok(true);
            }
        }
        if !c.multishot {
            // (After the bytes that overflowed earlier: a half-closed client's multishot
            // ended with them still there.)
            self.submit_recv(slot)?;
            return Ok(false);
        }
        c.deadline = match c.request_started {
            Some(t) if c.rend > 0 => t + self.header_timeout,
            _ => self.now + self.idle_timeout,
        };
        c.phase = Phase::Recv;
        Ok(false)
    }

    fn submit_recv(&mut self, slot: u32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        if c.rstart > 0 {
            c.rbuf.copy_within(c.rstart..c.rend, 0);
            c.rend -= c.rstart;
            c.rstart = 0;
        }
        // Slowloris defence: a request's head must be whole within the header timeout of its
        // first byte, however slowly the rest trickles in; between requests, the idle timeout.
        c.deadline = match c.request_started {
            Some(t) if c.rend > 0 => t + self.header_timeout,
            _ => self.now + self.idle_timeout,
        };
        let room = &mut c.rbuf[c.rend..];
        c.phase = Phase::Recv;
        c.inflight += 1;
        // SAFETY: `rbuf` is a boxed slice owned by the slot, freed only once the slot's
        // in-flight count is 0.
        unsafe {
            self.ring.recv(
                c.fd,
                room.as_mut_ptr(),
                room.len() as u32,
                ud(RECV, slot, c.generation),
            )
        }
    }

    fn submit_send(&mut self, slot: u32) -> std::io::Result<()> {
        let zc = ZeroCopy {
            fixed: self.fixed.as_deref(),
            min_fixed: self.zc_min,
            min_other: self.zc_min_unregistered,
        };
        let c = &mut self.conns[slot as usize];
        // A small body rides in the head buffer: one contiguous `send` costs less than a
        // two-iovec `sendmsg`, and the copy of a few KiB is cheaper than the difference.
        let body_left = c.send.body.len() - c.send.body_off;
        if body_left > 0
            && body_left <= SMALL_BODY
            && c.send.head_off == 0
            && !c.send.head.is_empty()
        {
            let body = std::mem::take(&mut c.send.body);
            c.send.head.extend_from_slice(&body[c.send.body_off..]);
            c.send.body_off = 0;
        }
        if c.send.body.is_empty() || c.send.head_off == c.send.head.len() {
            let part: &[u8] = if c.send.body.is_empty() {
                &c.send.head[c.send.head_off..]
            } else {
                &c.send.body[c.send.body_off..]
            };
            if !part.is_empty() && zc.index(c.zc_ok, part).is_none() {
                c.phase = Phase::Send;
                c.deadline = self.now + self.send_timeout;
                c.inflight += 1;
                self.stats.sends.fetch_add(1, Ordering::Relaxed);
                // SAFETY: `part` points into the slot's SendState (head Vec or body Bytes),
                // untouched until the send completes.
                return unsafe {
                    self.ring.send(
                        c.fd,
                        part.as_ptr(),
                        part.len() as u32,
                        ud(SEND, slot, c.generation),
                    )
                };
            }
        }
        c.send.prepare();
        c.phase = Phase::Send;
        c.deadline = self.now + self.send_timeout;
        c.inflight += 1;
        let piece = c.send.body.len() - c.send.body_off;
        if let Some(fixed) = zc.index(c.zc_ok, &c.send.body[c.send.body_off..]) {
            c.zc_sent = Some(0);
            let body = &c.send.body[c.send.body_off..];
            if let Some(index) = fixed {
                self.stats.zc_fixed.fetch_add(1, Ordering::Relaxed);
                let head = &c.send.head[c.send.head_off..];
                if !head.is_empty() {
                    c.inflight += 1;
                    // SAFETY: `head` is the slot's head Vec and `body` lies inside
                    // registered buffer `index`; both are held by the SendState, untouched
                    // until the head's completion and the body's notification.
                    return unsafe {
                        self.ring.send_head_then_fixed(
                            c.fd,
                            head,
                            ud(SEND_HEAD, slot, c.generation),
                            body.as_ptr(),
                            piece as u32,
                            index,
                            ud(SEND_ZC, slot, c.generation),
                        )
                    };
                }
                // SAFETY: `body` lies inside registered buffer `index` (checked by the arena)
                // and is held by the slot's SendState, untouched until the notification.
                return unsafe {
                    self.ring.send_zc_fixed(
                        c.fd,
                        body.as_ptr(),
                        piece as u32,
                        index,
                        ud(SEND_ZC, slot, c.generation),
                    )
                };
            }
            // SAFETY: as for `sendmsg` below; in addition the SendState (head, body, iovecs)
            // is not touched until the notification completion (`on_send_zc`).
            return unsafe {
                self.ring
                    .sendmsg_zc(c.fd, &c.send.msg, ud(SEND_ZC, slot, c.generation))
            };
        }
        self.stats.sends.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the msghdr and iovecs live in the slot's boxed SendState and point into its
        // head Vec and body Bytes, none of which change until the send completes.
        unsafe {
            self.ring
                .sendmsg(c.fd, &c.send.msg, ud(SEND, slot, c.generation))
        }
    }

    fn on_recv(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        if res <= 0 {
            self.close(slot);
            return Ok(());
        }
        let c = &mut self.conns[slot as usize];
        if c.rend == c.rstart {
            c.request_started = Some(self.now);
        }
        c.rend += res as usize;
        self.drive(slot)
    }

    fn on_send(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        if res < 0 {
            self.close(slot);
            return Ok(());
        }
        let c = &mut self.conns[slot as usize];
        c.send.advance(res as usize);
        self.stats.bytes.fetch_add(res as u64, Ordering::Relaxed);
        if c.send.pending() > 0 {
            return self.submit_send(slot);
        }
        self.drive(slot)
    }

    /// The head sent ahead of a linked fixed-buffer body: only account for it; the body's
    /// completions drive the connection. A failed or short head cancels the body, whose
    /// completion then closes the connection.
    fn on_send_head(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let head_left = c.send.head.len() - c.send.head_off;
        if res < 0 || res as usize != head_left {
            return Ok(());
        }
        c.send.advance(res as usize);
        self.stats.bytes.fetch_add(res as u64, Ordering::Relaxed);
        Ok(())
    }

    fn on_send_zc(&mut self, slot: u32, res: i32, flags: u32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        if !io_uring::cqueue::notif(flags) {
            // Failed at once (no notification follows).
            c.zc_sent = None;
            return self.on_send(slot, res.min(-1));
        }
        if res & ZC_COPIED != 0 {
            c.zc_ok = false;
            self.stats.zc_copied.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.zc_sends.fetch_add(1, Ordering::Relaxed);
        }
        let sent = c.zc_sent.take().unwrap_or(0);
        if sent == 0 {
            self.close(slot);
            return Ok(());
        }
        self.on_send(slot, sent as i32)
    }

    fn on_read(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let (Some(fill), Some(_)) = (c.fill.as_mut(), c.body.as_ref()) else {
            self.close(slot);
            return Ok(());
        };
        if res <= 0 {
            // The file shrank or failed under us: the head promised more bytes than we can
            // send, so the client must see a cut connection, never a short body as whole.
            log::warn!(
                "origin read of {:?} chunk {} failed: {res}",
                c.path,
                fill.key.index
            );
            self.shared.meta.remove(&c.path);
            self.close(slot);
            return Ok(());
        }
        fill.got += res as usize;
        if fill.got < fill.buf.len() {
            return self.submit_read(slot);
        }
        let fill = c.fill.take().expect("checked above");
        let chunk = fill.buf.freeze();
        let key = fill.key;
        self.shared.memory.insert(key.clone(), chunk.clone());
        self.stats.origin_file_reads.fetch_add(1, Ordering::Relaxed);
        self.publish_chunk_share(slot, Some((&key, chunk)));
        self.drive(slot)
    }

    /// Reads a disk-tier chunk: the header into a heap buffer and the body into its own
    /// memory (READ_FIXED when that is the registered arena), both submitted together.
    fn submit_disk_read(&mut self, slot: u32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let Some(d) = c.dread.as_mut() else {
            return Ok(());
        };
        c.phase = Phase::Fill;
        c.deadline = self.now + self.send_timeout;
        let Some(file) = d.file.as_ref() else {
            // Open the chunk file through the ring first (no blocking open on the loop).
            d.reads += 1;
            c.inflight += 1;
            // SAFETY: `d.path` is a CString owned by the slot's DiskRead (its bytes live on
            // the heap, unmoved) and kept until the open completes.
            return unsafe {
                self.ring
                    .open_read(&d.path, ud(DISK_OPEN, slot, c.generation))
            };
        };
        let fd = file.as_raw_fd();
        if d.header_got < d.header.len() {
            let room = &mut d.header[d.header_got..];
            d.reads += 1;
            c.inflight += 1;
            // SAFETY: `d.header` is a heap Vec owned by the slot, not resized, and kept until
            // the read completes.
            unsafe {
                self.ring.read(
                    fd,
                    room.as_mut_ptr(),
                    room.len() as u32,
                    d.plan.offset + d.header_got as u64,
                    ud(DISK_READ, slot, c.generation),
                )?
            };
        }
        if d.body_got < d.body.len() {
            let len = d.body.len() - d.body_got;
            // SAFETY: `body_got < len` of the buffer, so the pointer stays inside it.
            let at = unsafe { d.body.as_ptr().add(d.body_got) };
            let offset = d.plan.offset + d.plan.body_offset + d.body_got as u64;
            let u = ud(DISK_BODY, slot, c.generation);
            d.reads += 1;
            c.inflight += 1;
            // SAFETY: `at..at + len` is the rest of the slot's DiskRead body buffer, owned
            // by the slot and kept until the read completes.
            unsafe { self.read_file(fd, at, len, offset, u)? };
        }
        Ok(())
    }

    /// Reads `len` bytes of a file at `offset` into `at`: READ_FIXED when the memory lies in
    /// the registered arena, else a plain read.
    ///
    /// # Safety
    /// `at..at + len` obeys the ring's buffer rule (valid, unmoved and untouched until the
    /// read completes).
    unsafe fn read_file(
        &mut self,
        fd: RawFd,
        at: *mut u8,
        len: usize,
        offset: u64,
        u: u64,
    ) -> std::io::Result<()> {
        match self.fixed.as_ref().and_then(|a| a.buf_index(at, len)) {
            Some(index) => {
                self.stats.read_fixed.fetch_add(1, Ordering::Relaxed);
                // SAFETY: inside registered buffer `index` (checked by the arena); the
                // caller keeps the memory for the read.
                unsafe { self.ring.read_fixed(fd, at, len as u32, offset, index, u) }
            }
            // SAFETY: the caller keeps the memory for the read.
            None => unsafe { self.ring.read(fd, at, len as u32, offset, u) },
        }
    }

    /// A chunk file's `openat` finished: read it, or treat a failed open as a failed read
    /// (the entry leaves the index and the chunk comes from upstream).
    fn on_disk_open(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let Some(d) = c.dread.as_mut() else {
            if res >= 0 {
                sys::close(res);
            }
            return self.drive(slot);
        };
        if res >= 0 {
            use std::os::fd::FromRawFd;
            d.reads = d.reads.saturating_sub(1);
            // SAFETY: the ring's openat returned this fd to us; nothing else owns it.
            d.file = Some(unsafe { std::fs::File::from_raw_fd(res) });
            return self.submit_disk_read(slot);
        }
        // Counted like a read that failed: the entry leaves the index.
        self.on_disk_read(slot, false, res)
    }

    /// One read of a disk-tier chunk finished. When both are done, verified bytes go to
    /// memory (promotion) and to this response; a bad or vanished file is dropped and
    /// counted, and the chunk is fetched from upstream instead. A corrupt chunk is never
    /// sent.
    fn on_disk_read(&mut self, slot: u32, body_part: bool, res: i32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let (Some(disk), Some(d)) = (self.shared.disk.as_ref(), c.dread.as_mut()) else {
            return self.drive(slot);
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
            return Ok(());
        }
        if d.failed.is_none() && (d.header_got < d.header.len() || d.body_got < d.body.len()) {
            // A short read (rare for files): read the rest.
            return self.submit_disk_read(slot);
        }
        let Some(d) = c.dread.take() else {
            return self.drive(slot);
        };
        if let Some(res) = d.failed {
            let e = if res < 0 {
                std::io::Error::from_raw_os_error(-res)
            } else {
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
            };
            disk.read_failed(&d.plan, &e);
            if d.restore {
                self.conns[slot as usize].phase = Phase::Recv;
                if !self.settle_restore(slot) {
                    self.respond(slot);
                }
            }
            self.publish_chunk_share(slot, None);
            return self.drive(slot);
        }
        if d.restore {
            match disk.verify_parts(&d.plan, &d.header, d.body.as_ref()) {
                Ok(h) => {
                    self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                    self.restored(&d.plan, &h, d.body.freeze());
                }
                Err(e) => {
                    log::warn!("disk tier: {e}; fetching {:?} again", d.plan.key.object);
                    self.stats.disk_corrupt.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.conns[slot as usize].phase = Phase::Recv;
            if !self.settle_restore(slot) {
                self.respond(slot);
            }
            return self.drive(slot);
        }
        let shared = match disk.verify_parts(&d.plan, &d.header, d.body.as_ref()) {
            Ok(_) => {
                let bytes = d.body.freeze();
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                if c.body.as_ref().is_some_and(|b| b.meta.storable) {
                    self.shared.memory.insert(d.plan.key.clone(), bytes.clone());
                }
                c.local = Some((d.plan.key.version, d.plan.key.index, bytes.clone()));
                Some(bytes)
            }
            Err(e) => {
                log::warn!("disk tier: {e}; fetching the chunk again");
                self.stats.disk_corrupt.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        self.publish_chunk_share(slot, shared.map(|b| (&d.plan.key, b)));
        self.drive(slot)
    }

    /// One read per chunk however many connections want it at once: true when this
    /// connection takes on the read of `key` for the others (it reads it, then publishes);
    /// false when it is to look again, because it now waits on a read in flight or the chunk
    /// was read and stored since its memory lookup (a reader stores before it leaves the
    /// table).
    fn claim_read(&mut self, slot: u32, key: ChunkKey) -> bool {
        let c = &mut self.conns[slot as usize];
        let mut reads = self
            .shared
            .chunk_reads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(w) = reads.get(&key) {
            c.chunk_wait = Some((key, w.clone()));
            return false;
        }
        if self.shared.memory.contains(&key.as_ref()) {
            return false;
        }
        let w = Arc::new(crate::conn::ChunkShare::default());
        reads.insert(key.clone(), w.clone());
        c.chunk_share = Some((key, w));
        true
    }

    /// Where a connection stands with another connection's read of chunk `index` (of
    /// `version` of its object): `Again` when its bytes are now this response's (or just
    /// arrived: look again), `Waiting` when it waits for them, `NotWaiting` when it waits on
    /// no read of this chunk (a wait left behind by a chunk taken from memory meanwhile is
    /// dropped) or that read ended without bytes for it.
    fn shared_read(&mut self, slot: u32, version: u64, index: u64) -> SharedRead {
        let c = &mut self.conns[slot as usize];
        let Some((k, w)) = c
            .chunk_wait
            .take()
            .filter(|(k, _)| k.index == index && k.version == version && *k.object == *c.path)
        else {
            return SharedRead::NotWaiting;
        };
        match w.result.get() {
            Some(Some(bytes)) => {
                c.local = Some((version, index, bytes.clone()));
                c.waited(self.now + self.send_timeout);
                SharedRead::Again
            }
            // That read found nothing or its client left: look again (the disk tier has
            // dropped a bad file by now; a good one is read by whoever asks first).
            Some(None) => {
                c.waited(self.now + self.send_timeout);
                SharedRead::NotWaiting
            }
            None => {
                w.watchers.watch(self.id);
                let done = w.result.get().is_some();
                c.chunk_wait = Some((k, w));
                if done {
                    return SharedRead::Again;
                }
                self.wait(slot);
                SharedRead::Waiting
            }
        }
    }

    /// The disk read this connection made for others too has ended: hand its verified bytes
    /// (or None: fetch it upstream) to the connections waiting on it.
    /// `read`: the chunk's key and its bytes, handed on only when that is the chunk the share
    /// is for (anything else, or None, tells the waiters to read or fetch it themselves).
    fn publish_chunk_share(&mut self, slot: u32, read: Option<(&ChunkKey, Bytes)>) {
        let Some((key, w)) = self.conns[slot as usize].chunk_share.take() else {
            return;
        };
        let bytes = read.filter(|(k, _)| **k == key).map(|(_, b)| b);
        {
            // Out of the table and settled together: a connection that finds it settled
            // must not find it in the table again (it would spin until it left).
            let mut reads = self
                .shared
                .chunk_reads
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            reads.remove(&key);
            let _ = w.result.set(bytes);
        }
        self.shared.wake.wake(&w.watchers);
    }

    /// After a restart the memory is empty but the disk tier may hold the object. One
    /// connection reads its description, owning the object's in-flight head entry; others
    /// that ask meanwhile wait on that entry as on a head fetch, so a crowd on one object
    /// makes one disk read. True when the request waits (on its own read, on another's, or
    /// on the head fetch that took over); false to go on (nothing on disk for it, or it was
    /// described meanwhile).
    fn restore_or_join(&mut self, slot: u32, which: u8) -> bool {
        let Some(disk) = self.shared.disk.as_ref() else {
            return false;
        };
        let c = &mut self.conns[slot as usize];
        c.restores |= which;
        let Route::Http(origin) = c.route else {
            return false;
        };
        if disk.object(&c.path).is_none() {
            return false;
        }
        if c.restore_entry.is_some() && self.settle_restore(slot) {
            // (Not reached: an entry is settled when its read ends.) Its head fetch now
            // answers this request too.
            return true;
        }
        let c = &mut self.conns[slot as usize];
        let meta = &self.shared.meta;
        let path = c.path.as_str();
        let Some((pending, new)) = self
            .shared
            .inflight
            .head_unless(path, || meta.get(path).is_some())
        else {
            return false;
        };
        // The receive buffer moves on while the request waits.
        c.save_head();
        c.stale = None;
        if !new {
            // Being restored (or fetched) for another client: wait for that.
            c.head_owner = false;
            c.pending = Some(pending);
            return true;
        }
        let key: Arc<str> = Arc::from(c.path.as_str());
        let fallback = HeadRequest {
            origin,
            object: key.clone(),
            path: c.upath.clone(),
            stale: None,
            forward: c.fill_forward(),
            variant: c.variant,
        };
        c.restore_entry = Some(crate::conn::RestoreEntry {
            key,
            pending,
            fallback,
        });
        if !self.start_restore(slot, which) {
            self.restore_fallback(slot);
        }
        true
    }

    /// The restore this connection owns cannot describe the object (nothing usable on disk,
    /// or the client left): its head fetch, under the same entry, will. The connection, if
    /// it still waits, waits on that fetch as the client whose fields it carries.
    fn restore_fallback(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let Some(e) = c.restore_entry.take() else {
            return;
        };
        c.head_owner = true;
        c.pending = Some(e.pending);
        match self.shared.upstream.as_ref() {
            Some(up) => {
                self.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                up.fetch_head(e.fallback);
            }
            // No upstream to take it over (an HTTP route implies one): never leave the
            // entry's waiters waiting.
            None => {
                self.shared.inflight.finish_head(
                    &e.key,
                    Err(FillError::Connect),
                    None,
                    &self.shared.wake,
                );
            }
        }
    }

    /// A restore read ended (or this connection moves on while it owns an entry): finish
    /// the entry. A fresh description (read from disk, or stored meanwhile by another fetch)
    /// is published to the clients waiting on it: their responses are hits. Otherwise a
    /// head fetch takes the entry over, conditional when the description is stale, and this
    /// connection waits on it: true then (the caller must not answer it from here).
    fn settle_restore(&mut self, slot: u32) -> bool {
        let c = &mut self.conns[slot as usize];
        let Some(e) = c.restore_entry.as_mut() else {
            return false;
        };
        let meta = self.shared.meta.get(&e.key);
        if let Some(m) = meta
            .as_ref()
            .filter(|m| m.is_fresh(self.now, Duration::MAX))
        {
            let Some(e) = c.restore_entry.take() else {
                return false;
            };
            e.pending.mark_local();
            self.shared
                .inflight
                .finish_head(&e.key, Ok(m.clone()), None, &self.shared.wake);
            return false;
        }
        e.fallback.stale.clone_from(&meta);
        c.stale = meta;
        self.restore_fallback(slot);
        true
    }

    /// Sets up the read of an object's first chunk from the disk tier (through the ring,
    /// like any disk read) to rebuild its description. True when the read is set up;
    /// `drive` submits it and `on_disk_read` answers.
    fn start_restore(&mut self, slot: u32, which: u8) -> bool {
        let Some(disk) = self.shared.disk.as_ref() else {
            return false;
        };
        let c = &mut self.conns[slot as usize];
        c.restores |= which;
        let Some(ov) = disk.object(&c.path) else {
            return false;
        };
        let key = ChunkRef {
            object: &c.path,
            version: ov.version,
            index: 0,
        };
        let Some(plan) = disk.locate(&key) else {
            return false;
        };
        let Some(read) = crate::conn::DiskRead::new(plan, &self.shared.memory, true) else {
            return false;
        };
        c.dread = Some(read);
        c.phase = Phase::Fill;
        c.deadline = self.now + self.send_timeout;
        true
    }

    /// A description rebuilt from a verified first chunk: the chunk goes to memory, the
    /// description to the meta cache.
    fn restored(
        &mut self,
        plan: &relay_cache::disk::ReadPlan,
        h: &relay_cache::disk::ChunkHeader,
        body: Bytes,
    ) {
        // A purge or an invalidation may have dropped the object while the read was in
        // flight, or a fetch may have described it anew: then the read is stale.
        let current = self
            .shared
            .disk
            .as_ref()
            .and_then(|d| d.object(&plan.key.object))
            .is_some_and(|ov| ov.version == plan.key.version);
        if !current || self.shared.meta.get(&plan.key.object).is_some() {
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
        self.shared.memory.insert(plan.key.clone(), body);
        self.shared.meta.insert(&plan.key.object, meta);
    }

    fn submit_read(&mut self, slot: u32) -> std::io::Result<()> {
        let layout = self.shared.layout;
        let c = &mut self.conns[slot as usize];
        let (Some(fill), Some(body)) = (c.fill.as_mut(), c.body.as_ref()) else {
            return Ok(());
        };
        let Some(file) = body.file.as_ref() else {
            return Ok(());
        };
        let offset = layout.chunk_start(fill.key.index) + fill.got as u64;
        let len = fill.buf.len() - fill.got;
        // SAFETY: `got < len` of the buffer, so the pointer stays inside it.
        let at = unsafe { fill.buf.as_ptr().add(fill.got) };
        let (fd, u) = (file.as_raw_fd(), ud(READ, slot, c.generation));
        c.phase = Phase::Fill;
        c.deadline = self.now + self.send_timeout;
        c.inflight += 1;
        // SAFETY: `at..at + len` is the rest of the slot's `fill.buf`, owned by the slot and
        // kept until the read completes.
        unsafe { self.read_file(fd, at, len, offset, u) }
    }

    fn drive(&mut self, slot: u32) -> std::io::Result<()> {
        loop {
            let c = &mut self.conns[slot as usize];
            if c.closing {
                return Ok(());
            }
            if let Some(o) = c.dopen.as_mut() {
                // A directory-origin file being opened and described through the ring:
                // submit its open once, then `on_dir_open` and `on_dir_stat` go on.
                if o.submitted {
                    return Ok(());
                }
                o.submitted = true;
                let Some(root) = self.shared.origin.as_ref().map(|d| d.root_fd()) else {
                    self.close(slot);
                    return Ok(());
                };
                c.phase = Phase::Fill;
                c.deadline = self.now + self.send_timeout;
                c.inflight += 1;
                let u = ud(DIR_OPEN, slot, c.generation);
                // SAFETY: the path and open_how live in the slot's DirOpen (heap), kept
                // until the open completes.
                return unsafe { self.ring.open_beneath(root, &o.path, &o.how, u) };
            }
            if c.dread.as_ref().is_some_and(|d| d.restore) {
                // An object's description being rebuilt from the disk tier: read it (once),
                // then `respond` runs again from `on_disk_read`.
                if c.dread.as_ref().is_some_and(|d| d.reads == 0) {
                    return self.submit_disk_read(slot);
                }
                return Ok(());
            }
            if c.pass_request.is_some() {
                // Collect the request body, then hand the request to the upstream thread.
                // A chunked body goes on decoded, with its length (trailers dropped).
                let with_body = c.pass_request.as_ref().is_some_and(|r| r.with_body);
                let collected = match with_body {
                    true => c.decode_chunked(true, PASS_BODY_LIMIT),
                    // Skipped after the response, like any body relay does not use.
                    false => Ok(Upload::Whole),
                };
                let refused = match collected {
                    Ok(Upload::TooLong) => 413,
                    Ok(_) if !c.reserve_upload() => 503,
                    Ok(Upload::Whole) => 0,
                    Ok(Upload::Partial) => {
                        if self.need_input(slot)? {
                            continue;
                        }
                        return Ok(());
                    }
                    Err(_) => 400,
                };
                if refused != 0 {
                    self.refuse(slot, refused);
                    continue;
                }
                let n = (c.upload_left.min((c.rend - c.rstart) as u64)) as usize;
                c.upload.extend_from_slice(&c.rbuf[c.rstart..c.rstart + n]);
                c.rstart += n;
                c.upload_left -= n as u64;
                if c.upload_left > 0 {
                    if self.need_input(slot)? {
                        continue;
                    }
                    return Ok(());
                }
                let Some(r) = c.pass_request.take() else {
                    continue;
                };
                let slot_ = Arc::new(relay_upstream::PassSlot::default());
                if let Some(up) = self.shared.upstream.as_ref() {
                    up.pass(relay_upstream::PassRequest {
                        origin: r.origin,
                        method: r.method,
                        path: c.upath.clone(),
                        headers: r.headers,
                        body: c.take_upload(),
                        host: r.host,
                        slot: slot_.clone(),
                    });
                }
                c.pass = Some(slot_);
                continue;
            }
            if let Some(ps) = c.pass.clone() {
                ps.watchers.watch(self.id);
                match ps.result.get() {
                    None => {
                        self.wait(slot);
                        return Ok(());
                    }
                    Some(Ok(p)) => {
                        c.waited(self.now + self.send_timeout);
                        c.pass = None;
                        self.respond_pass(slot, p);
                    }
                    Some(Err(e)) => {
                        c.waited(self.now + self.send_timeout);
                        c.pass = None;
                        let req = c.saved.req;
                        self.simple(slot, &req, e.status(), &[], "upstream failed\n");
                    }
                }
                continue;
            }
            if let Some(p) = c.pending.clone() {
                p.watchers.watch(self.id);
                match p.result() {
                    None => {
                        self.wait(slot);
                        return Ok(());
                    }
                    Some(Ok(meta)) => {
                        c.waited(self.now + self.send_timeout);
                        c.pending = None;
                        let meta = meta.clone();
                        // The base entry came back varying, and this request selects another
                        // variant: fetch that one (with the request's values) instead.
                        if !c.variant
                            && let Route::Http(origin) = c.route
                            && let Some(fields) = meta.vary.clone()
                            && c.select_variant(&fields)
                        {
                            c.variant = true;
                            c.stale = None;
                            if let Some(m) = self
                                .shared
                                .meta
                                .get(&c.path)
                                .filter(|m| m.is_fresh(self.now, Duration::MAX))
                            {
                                self.respond_meta(slot, m, None, None);
                                continue;
                            }
                            // After a restart the variant may be on disk: read it (once, however
                            // many clients of the base want it) rather than fetch it.
                            if c.restores & RESTORE_VARIANT == 0
                                && self.restore_or_join(slot, RESTORE_VARIANT)
                            {
                                continue;
                            }
                            let c = &mut self.conns[slot as usize];
                            let (pending, new) = self.shared.inflight.head(&c.path);
                            if new && let Some(up) = self.shared.upstream.as_ref() {
                                self.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                                up.fetch_head(HeadRequest {
                                    origin,
                                    object: Arc::from(c.path.as_str()),
                                    path: c.upath.clone(),
                                    stale: None,
                                    forward: c.fill_forward(),
                                    variant: true,
                                });
                            }
                            c.head_owner = new;
                            c.pending = Some(pending);
                            continue;
                        }
                        // A response that may not be stored was fetched with the fields of
                        // the client that started the fetch (its cookies, say): it is that
                        // client's alone. Every other waiting client asks for itself.
                        if !meta.storable
                            && !c.head_owner
                            && let Route::Http(origin) = c.route
                        {
                            let method = match c.saved.req.method {
                                Method::Head => http::Method::HEAD,
                                _ => http::Method::GET,
                            };
                            let mut headers = relay_proto::forward::forwarded_fields(
                                c.head(),
                                relay_proto::forward::PASS_OWN,
                            );
                            c.forwarded_for(&mut headers);
                            c.stale = None;
                            c.upload_left = 0;
                            c.pass_note = "fwd=miss; detail=not-shared";
                            c.pass_request = Some(Box::new(PassRequest {
                                origin,
                                method,
                                headers,
                                host: String::new(),
                                with_body: false,
                            }));
                            continue;
                        }
                        // Fields the stored description leaves out (a cookie named by
                        // `private=`) still reach the client whose request fetched it.
                        let meta = match p.owner_headers().filter(|_| c.head_owner) {
                            Some(h) => Arc::new(ObjectMeta {
                                headers: h.clone(),
                                ..(*meta).clone()
                            }),
                            None => meta,
                        };
                        c.src = p.first().cloned();
                        if c.head_owner && !meta.storable {
                            c.owner_fetch = Some(p.clone());
                        }
                        // Same version as the stale copy: the origin confirmed it (304). Read
                        // from the disk tier for another client: a hit.
                        let note = c
                            .stale
                            .take()
                            .filter(|s| s.version == meta.version && p.first().is_none())
                            .map_or("fwd=miss", |_| "fwd=stale; fwd-status=304");
                        let note = (!p.is_local()).then_some(note);
                        self.respond_meta(slot, meta, None, note);
                    }
                    Some(Err(e)) => {
                        c.waited(self.now + self.send_timeout);
                        c.pending = None;
                        let e = *e;
                        match c.stale.take().filter(|s| s.may_serve_on_error(self.now)) {
                            // stale-if-error: the origin failed, a stale copy may stand in.
                            Some(stale) => self.respond_meta(
                                slot,
                                stale,
                                None,
                                Some("hit; detail=stale-if-error"),
                            ),
                            None => {
                                let req = c.saved.req;
                                self.simple(slot, &req, e.status(), &[], "upstream failed\n");
                            }
                        }
                    }
                }
                continue;
            }
            // The next body piece first, so that a head (or part head) and the piece after
            // it leave in one send (one TCP segment for a small response, not two).
            if c.send.body_off >= c.send.body.len()
                && c.body.as_ref().is_some_and(|b| b.pos < b.end)
            {
                match self.next_piece(slot)? {
                    true => continue,
                    false => return Ok(()),
                }
            }
            if c.send.pending() > 0 {
                return self.submit_send(slot);
            }
            if let Some(body) = c.body.as_mut() {
                // multipart/byteranges: the next part's head, or the closing boundary.
                if c.multi.n > 0 {
                    let m = &mut c.multi;
                    let ct = &body.meta.content_type;
                    if let Ok(mp) = Multipart::new(
                        &self.boundary,
                        (!ct.is_empty()).then_some(ct.as_str()),
                        m.total,
                    ) {
                        if m.next < m.n {
                            let r = m.ranges[m.next];
                            mp.part_head(m.next, r, &mut c.send.head);
                            body.pos = r.start;
                            body.end = r.end + 1;
                            m.next += 1;
                        } else {
                            mp.trailer(&mut c.send.head);
                            m.n = 0;
                        }
                        continue;
                    }
                    m.n = 0;
                }
                c.body = None;
                c.pass_body = None;
                c.local = None;
                c.chunk_wait = None;
                // (A share is always settled before its chunk is sent; never leave one.)
                self.publish_chunk_share(slot, None);
            }
            let c = &mut self.conns[slot as usize];
            // The chunk this response streamed from (or, for HEAD and 304, the fill its head
            // fetch started): an idle keep-alive connection must not hold its memory (an
            // arena block) after eviction.
            c.src = None;
            c.owner_fetch = None;
            if let Some(t) = c.req_start.take() {
                let us = self.now.saturating_duration_since(t).as_micros() as u64;
                let _ = self.latency.record(us.max(1));
            }
            if c.close_after {
                if c.linger.is_some() {
                    self.linger(slot);
                } else {
                    self.close(slot);
                }
                return Ok(());
            }
            // Skip a request body we do not use.
            match c.decode_chunked(false, DISCARD_MAX) {
                Ok(Upload::Whole) => {}
                Ok(Upload::Partial) => {
                    if self.need_input(slot)? {
                        continue;
                    }
                    return Ok(());
                }
                Ok(Upload::TooLong) | Err(_) => {
                    // Too long to read through, or the next request cannot be found: the
                    // connection ends here, lingering while the client may still send.
                    c.chunked = None;
                    c.linger = Some(Linger::new(LINGER_BYTES));
                    self.linger(slot);
                    return Ok(());
                }
            }
            if c.discard > 0 {
                let n = (c.discard.min((c.rend - c.rstart) as u64)) as usize;
                c.rstart += n;
                c.discard -= n as u64;
                if c.discard > 0 {
                    if self.need_input(slot)? {
                        continue;
                    }
                    return Ok(());
                }
            }
            if c.rstart == c.rend {
                c.rstart = 0;
                c.rend = 0;
                if self.need_input(slot)? {
                    continue;
                }
                return Ok(());
            }
            let limits = &self.shared.limits;
            match parse_request(&c.rbuf[c.rstart..c.rend], limits) {
                Ok(Parsed::Partial) => {
                    if c.rend - c.rstart >= limits.max_head_bytes {
                        self.error(slot, 431);
                        continue;
                    }
                    if self.need_input(slot)? {
                        continue;
                    }
                    return Ok(());
                }
                Ok(Parsed::Complete { request, head_len }) => {
                    let req = RequestInfo {
                        method: request.method,
                        version: request.version,
                        keep_alive: request.keep_alive,
                    };
                    c.saved.req = req;
                    c.saved.cond = Conditionals {
                        range: request.range.map(Small::copy),
                        if_range: request.if_range.map(Small::copy),
                        if_none_match: request.if_none_match.map(Small::copy),
                        if_modified_since: request.if_modified_since.map(Small::copy),
                    };
                    // Route: an HTTP origin claiming Host and path, else the directory.
                    c.path.clear();
                    c.upath.clear();
                    let http = self
                        .shared
                        .upstream
                        .as_ref()
                        .and_then(|u| u.route(request.host, request.path));
                    match http {
                        Some(o) => {
                            // Cache key: scheme-less host + path (and query).
                            let host = request.host.unwrap_or(b"");
                            for &b in host {
                                c.path.push(b.to_ascii_lowercase() as char);
                            }
                            let target = if request.target.starts_with('/') {
                                request.target
                            } else {
                                request.path
                            };
                            c.path.push_str(target);
                            c.upath.push_str(target);
                            c.route = Route::Http(o);
                            // The head stays readable in `rbuf` while `respond` runs; it is
                            // copied out only if the response has to wait (a miss) or `rbuf`
                            // is compacted under it (`Conn::save_head`).
                            c.head_at = (c.rstart, head_len);
                            c.head_saved = false;
                        }
                        None => {
                            c.path.push_str(request.path);
                            c.route = Route::Directory;
                        }
                    }
                    let content_length = request.content_length;
                    let has_body = content_length > 0 || request.chunked;
                    let expect_continue = request.expect_continue && has_body;
                    c.chunked = request
                        .chunked
                        .then(|| relay_proto::chunked::Decoder::new(limits.max_head_bytes));
                    // Other methods go to the origin as they are; so do GET and HEAD with
                    // credentials: a shared cache neither answers them from nor stores their
                    // responses (RFC 9111 §3.5; relay does not look for the response
                    // directives that would allow it).
                    let pass = request.method == Method::Other || request.authorization;
                    if let (Route::Http(origin), true) = (c.route, pass) {
                        let host =
                            String::from_utf8_lossy(request.host.unwrap_or(b"")).into_owned();
                        let method = http::Method::from_bytes(request.method_str.as_bytes());
                        let mut headers = relay_proto::forward::forwarded_fields(
                            &c.rbuf[c.rstart..c.rstart + head_len],
                            relay_proto::forward::PASS_OWN,
                        );
                        c.forwarded_for(&mut headers);
                        c.rstart += head_len;
                        c.request_started = (c.rend > c.rstart).then_some(self.now);
                        self.stats.requests.fetch_add(1, Ordering::Relaxed);
                        c.req_start = Some(self.now);
                        // RFC 9211: GET and HEAD come this way for a reason of the request
                        // (its credentials); other methods are never looked up.
                        c.pass_note = match request.method {
                            Method::Other => "fwd=uri-miss",
                            _ => "fwd=request; detail=authorization",
                        };
                        // The body is held whole until it is handed over: within the
                        // pass-through budget, reserved now for a length, as it grows for a
                        // chunked body.
                        let reserved = self
                            .shared
                            .upstream
                            .as_ref()
                            .and_then(|u| u.pass_budget.reserve(content_length));
                        match method {
                            Ok(_) if content_length > PASS_BODY_LIMIT => self.refuse(slot, 413),
                            Ok(_) if reserved.is_none() => self.refuse(slot, 503),
                            Ok(method) => {
                                // A chunked body's length is known once it is read.
                                c.upload_reserved = reserved;
                                c.upload = Vec::with_capacity(content_length as usize);
                                c.upload_left = content_length;
                                c.pass_request = Some(Box::new(PassRequest {
                                    origin,
                                    method,
                                    headers,
                                    host,
                                    with_body: true,
                                }));
                                // The client may wait for this before it sends the body that
                                // relay is about to read (RFC 9110 §10.1.1). Nothing else is
                                // being sent on the connection now: the previous response is
                                // done before the next request is parsed.
                                if expect_continue
                                    && c.rend == c.rstart
                                    && sys::send_now(c.fd, CONTINUE).ok() != Some(CONTINUE.len())
                                {
                                    self.close(slot);
                                    return Ok(());
                                }
                            }
                            Err(_) => self.refuse(slot, 400),
                        }
                        continue;
                    }
                    if expect_continue || content_length > DISCARD_MAX {
                        // Answered without its body: one the client may never send (it waits
                        // for a 100), or one too long to read through (a trickled huge body
                        // would hold the connection for as long as it likes; a chunked one is
                        // cut off the same way as it is skipped). The connection ends after
                        // the response; what comes meanwhile is dropped, within the linger
                        // bounds.
                        c.saved.req.keep_alive = false;
                        c.linger = Some(Linger::new(LINGER_BYTES));
                    }
                    c.rstart += head_len;
                    c.discard = content_length;
                    c.request_started = (c.rend > c.rstart).then_some(self.now);
                    c.restores = 0;
                    c.path_base = c.path.len();
                    self.respond(slot);
                }
                Err(e) => {
                    self.error(slot, e.status());
                }
            }
        }
    }

    /// Queues the next body piece; returns false when it has to wait for an origin read.
    fn next_piece(&mut self, slot: u32) -> std::io::Result<bool> {
        let layout = self.shared.layout;
        let c = &mut self.conns[slot as usize];
        let Some(body) = c.body.as_mut() else {
            return Ok(true);
        };
        if let Some(pass) = c.pass_body.as_ref() {
            let (piece, ended) = match pass {
                PassReader::Stream(r) => {
                    let s = r.stream();
                    // This runs once the previous piece is sent (a zero-copy one's
                    // notification included): its room goes back to the upstream.
                    s.release(body.pos);
                    s.watchers.watch(self.id);
                    // The end first: a body that ends right after this still has every
                    // byte readable below.
                    let ended = s.failed() || s.is_done();
                    (s.readable(body.pos), ended)
                }
                PassReader::Whole(fill) => {
                    fill.watchers.watch(self.id);
                    let ended = fill.error().is_some() || fill.is_done();
                    (fill.slice(body.pos as usize, body.end as usize), ended)
                }
            };
            let piece = piece.slice(..piece.len().min((body.end - body.pos) as usize));
            if !piece.is_empty() {
                body.pos += piece.len() as u64;
                c.send.body = piece;
                c.send.body_off = 0;
                return Ok(true);
            }
            if ended {
                // Cut short upstream: the client sees a cut connection.
                self.close(slot);
                return Ok(false);
            }
            self.wait(slot);
            return Ok(false);
        }
        let index = layout.chunk_of(body.pos);
        let key = ChunkRef {
            object: &c.path,
            version: body.meta.version,
            index,
        };
        // The chunk this response already holds (taken when the head was built, or read
        // from disk), else the memory tier.
        let held = c
            .local
            .as_ref()
            .filter(|(version, i, _)| *version == body.meta.version && *i == index)
            .map(|(_, _, bytes)| bytes.clone());
        if let Some(chunk) = held.or_else(|| self.shared.memory.get(&key)) {
            // A read this connection took on for others while the chunk reached memory some
            // other way: hand them these bytes.
            if c.chunk_share.is_some() {
                let owned = key.to_owned_key();
                self.publish_chunk_share(slot, Some((&owned, chunk.clone())));
            }
            let c = &mut self.conns[slot as usize];
            let Some(body) = c.body.as_mut() else {
                return Ok(true);
            };
            let start = layout.chunk_start(index);
            let from = (body.pos - start) as usize;
            let to = ((body.end - start) as usize).min(chunk.len());
            if from >= to {
                // A stored chunk shorter than the object says: never send it.
                log::error!(
                    "chunk {index} of {:?} is short; dropping the connection",
                    c.path
                );
                self.close(slot);
                return Ok(false);
            }
            c.send.body = chunk.slice(from..to);
            c.send.body_off = 0;
            body.pos += (to - from) as u64;
            return Ok(true);
        }
        if let Route::Http(origin) = c.route {
            return self.next_upstream_piece(slot, origin, index);
        }
        // Miss: one read of this chunk however many connections want it at once. Wait for
        // the read another connection makes, or make it for the others too.
        let key = ChunkKey {
            object: Arc::from(c.path.as_str()),
            version: body.meta.version,
            index,
        };
        match self.shared_read(slot, key.version, index) {
            SharedRead::Again => return Ok(true),
            SharedRead::Waiting => return Ok(false),
            SharedRead::NotWaiting => {}
        }
        if self.conns[slot as usize]
            .chunk_share
            .as_ref()
            .is_some_and(|(k, _)| *k != key)
        {
            self.publish_chunk_share(slot, None);
        }
        if self.conns[slot as usize].chunk_share.is_none() && !self.claim_read(slot, key.clone()) {
            return Ok(true);
        }
        let c = &mut self.conns[slot as usize];
        // Read the chunk from the origin file into a new buffer, opening the file first
        // (through the ring) when the head came from a cached description.
        let Some(body) = c.body.as_ref() else {
            return Ok(true);
        };
        if body.file.is_none() {
            return match crate::origin::object_path(&c.path) {
                Ok(path) => {
                    c.dopen = Some(DirOpen::new(path, false));
                    Ok(true)
                }
                Err(_) => {
                    self.close(slot);
                    Ok(false)
                }
            };
        }
        let len = layout.chunk_len(body.meta.len, index) as usize;
        c.fill = Some(FileRead {
            buf: self.shared.memory.chunk_buf(len),
            got: 0,
            key,
        });
        self.submit_read(slot)?;
        Ok(false)
    }

    /// The next body piece of an HTTP-origin object whose chunk is not in memory: join the
    /// fill in flight (or start one) and send what it has published; wait for more.
    fn next_upstream_piece(
        &mut self,
        slot: u32,
        origin: usize,
        index: u64,
    ) -> std::io::Result<bool> {
        let layout = self.shared.layout;
        let c = &mut self.conns[slot as usize];
        let Some(meta) = c.body.as_ref().map(|b| b.meta.clone()) else {
            return Ok(true);
        };
        let have = c.src.as_ref().is_some_and(|f| {
            f.key.index == index && f.key.version == meta.version && *f.key.object == *c.path
        });
        // A disk read of this chunk another connection makes: take its bytes, or (it found
        // none) fetch the chunk upstream.
        if !have {
            match self.shared_read(slot, meta.version, index) {
                SharedRead::Again => return Ok(true),
                SharedRead::Waiting => return Ok(false),
                SharedRead::NotWaiting => {}
            }
        }
        let c = &mut self.conns[slot as usize];
        if !have && let Some(disk) = self.shared.disk.as_ref() {
            let key = ChunkRef {
                object: &c.path,
                version: meta.version,
                index,
            };
            if let Some(plan) = disk.locate(&key) {
                let owned = key.to_owned_key();
                if !self.claim_read(slot, owned) {
                    return Ok(true);
                }
                match crate::conn::DiskRead::new(plan, &self.shared.memory, false) {
                    Some(read) => {
                        self.conns[slot as usize].dread = Some(read);
                        self.submit_disk_read(slot)?;
                        return Ok(false);
                    }
                    None => self.publish_chunk_share(slot, None),
                }
            }
        }
        let c = &mut self.conns[slot as usize];
        if !have {
            let key = ChunkKey {
                object: Arc::from(c.path.as_str()),
                version: meta.version,
                index,
            };
            let len = layout.chunk_len(meta.len, index) as usize;
            let memory = &self.shared.memory;
            // A response that may not be stored has a version of its own (its fetch's), so
            // the fills found here are this client's alone; those its fetch already finished
            // (never in memory) are kept with the fetch.
            let kept = c.owner_fetch.as_ref().and_then(|p| p.fill(index));
            let start = match kept {
                Some(f) => Start::Joined(f),
                None => self
                    .shared
                    .inflight
                    .join_or_start(key, len, |k| memory.contains(&k.as_ref())),
            };
            let fill = match start {
                Start::Joined(f) => f,
                // Stored between our memory lookup and now: take it from memory.
                Start::Cached => return Ok(true),
                Start::New(writer) => {
                    let f = writer.fill().clone();
                    self.stats.upstream_chunks.fetch_add(1, Ordering::Relaxed);
                    if let Some(up) = self.shared.upstream.as_ref() {
                        up.fill_chunk(ChunkRequest {
                            origin,
                            path: c.upath.clone(),
                            meta,
                            writer,
                            forward: c.fill_forward(),
                        });
                    }
                    f
                }
            };
            c.src = Some(fill);
        }
        let (Some(fill), Some(body)) = (c.src.clone(), c.body.as_mut()) else {
            return Ok(false);
        };
        fill.watchers.watch(self.id);
        let start = layout.chunk_start(index);
        let from = (body.pos - start) as usize;
        let to = ((body.end - start) as usize).min(fill.len());
        let piece = fill.slice(from, to);
        if !piece.is_empty() {
            body.pos += piece.len() as u64;
            c.send.body = piece;
            c.send.body_off = 0;
            return Ok(true);
        }
        if let Some(e) = fill.error() {
            c.src = None;
            return Ok(self.upstream_failed(slot, e));
        }
        if from >= to {
            // The fill is shorter than the object says: never send a short body as whole.
            c.src = None;
            return Ok(self.upstream_failed(slot, FillError::Truncated));
        }
        self.wait(slot);
        Ok(false)
    }

    /// An upstream fetch failed under a response: if no byte of it left yet, answer with an
    /// error status; otherwise cut the connection (the client sees a short body, never a
    /// wrong one passed off as whole).
    fn upstream_failed(&mut self, slot: u32, e: FillError) -> bool {
        self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        let c = &mut self.conns[slot as usize];
        let untouched = c.send.head_off == 0 && !c.send.head.is_empty() && c.send.body.is_empty();
        if untouched && c.multi.n == 0 {
            c.body = None;
            c.send.head.clear();
            let req = c.saved.req;
            self.simple(slot, &req, e.status(), &[], "upstream failed\n");
            self.conns[slot as usize].close_after = true;
            true
        } else {
            log::warn!("upstream failed mid-response ({e}); closing the connection");
            self.close(slot);
            false
        }
    }

    /// Answers a passed-through request with the origin's response; a successful unsafe
    /// method invalidates what it names (RFC 9111 §4.4).
    fn respond_pass(&mut self, slot: u32, p: &relay_upstream::Passed) {
        let c = &mut self.conns[slot as usize];
        let host_len = c.path.len() - c.upath.len();
        for path in &p.invalidate {
            let mut key = String::with_capacity(host_len + path.len());
            key.push_str(&c.path[..host_len]);
            key.push_str(path);
            self.shared.meta.remove(&key);
            if let Some(disk) = self.shared.disk.as_ref() {
                disk.remove_object(&key);
            }
            self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        let req = c.saved.req;
        let len = p.body.as_ref().map_or(0, |b| b.len());
        let note = c.pass_note;
        let head = ResponseHead {
            content_length: p.content_length,
            raw: &p.headers,
            ..base_head(&self.date, p.status, &req, Some(note))
        };
        head.encode(&mut c.send.head);
        if !req.keep_alive {
            c.close_after = true;
        }
        if let Some(b) = p.body.as_ref().filter(|_| len > 0) {
            c.pass_body = Some(match b {
                relay_upstream::PassBody::Stream(s) => PassReader::Stream(s.attach()),
                relay_upstream::PassBody::Whole(f) => PassReader::Whole(f.clone()),
            });
            c.body = Some(Body {
                meta: Arc::new(ObjectMeta::file(len, 0, String::new(), String::new())),
                pos: 0,
                end: len,
                file: None,
            });
        }
    }

    /// Starts the response to a parsed request (saved in the slot).
    /// Answers the parsed request. Runs again (with `restores` set) after the disk tier
    /// rebuilt a description it needed, so it counts and times the request once and starts
    /// from the request's own key each time.
    fn respond(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.restores == 0 {
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            c.req_start = Some(self.now);
        }
        c.path.truncate(c.path_base);
        c.forward = None;
        c.variant = false;
        // Sources of the previous response on this connection.
        c.src = None;
        c.local = None;
        c.pass_body = None;
        let req = c.saved.req;
        if !matches!(req.method, Method::Get | Method::Head) {
            self.simple(
                slot,
                &req,
                405,
                &[("Allow", b"GET, HEAD")],
                "method not allowed\n",
            );
            return;
        }
        let mut cached = self.shared.meta.get(&c.path);
        if cached.is_none() && matches!(c.route, Route::Http(_)) && c.restores & RESTORE_BASE == 0 {
            if self.restore_or_join(slot, RESTORE_BASE) {
                return;
            }
            cached = self.shared.meta.get(&self.conns[slot as usize].path);
        }
        let c = &mut self.conns[slot as usize];
        // A response that varies: this request's variant has a key of its own (unless it
        // sends none of the fields, then the base entry is its variant).
        if let Some(fields) = cached.as_ref().and_then(|m| m.vary.clone())
            && c.select_variant(&fields)
        {
            c.variant = true;
            cached = self.shared.meta.get(&c.path);
            if cached.is_none() && c.restores & RESTORE_VARIANT == 0 {
                if self.restore_or_join(slot, RESTORE_VARIANT) {
                    return;
                }
                cached = self.shared.meta.get(&self.conns[slot as usize].path);
            }
        }
        let c = &mut self.conns[slot as usize];
        match c.route {
            Route::Http(origin) => {
                if let Some(m) = cached
                    .as_ref()
                    .filter(|m| m.is_fresh(self.now, Duration::MAX))
                {
                    self.respond_meta(slot, m.clone(), None, None);
                    return;
                }
                let Some(up) = self.shared.upstream.as_ref() else {
                    return;
                };
                // Stale within stale-while-revalidate: serve it now and revalidate once in
                // the background (no client waits on that fetch).
                if let Some(m) = cached
                    .as_ref()
                    .filter(|m| m.may_serve_while_revalidating(self.now))
                {
                    if let Some((_, true)) = self.shared.inflight.head_unless(&c.path, || false) {
                        self.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                        up.fetch_head(HeadRequest {
                            origin,
                            object: Arc::from(c.path.as_str()),
                            path: c.upath.clone(),
                            stale: Some(m.clone()),
                            forward: c.fill_forward(),
                            variant: c.variant,
                        });
                    }
                    self.respond_meta(
                        slot,
                        m.clone(),
                        None,
                        Some("hit; detail=stale-while-revalidate"),
                    );
                    return;
                }
                if c.restore_entry.as_ref().is_some_and(|e| *e.key == *c.path) {
                    // The disk tier could not describe it after all: a head fetch takes over
                    // the entry other clients may be waiting on.
                    self.restore_fallback(slot);
                    return;
                }
                // Unknown or stale: one head fetch however many clients ask.
                let now = self.now;
                let meta_cache = &self.shared.meta;
                let fresh = || {
                    meta_cache
                        .get(&c.path)
                        .is_some_and(|m| m.is_fresh(now, Duration::MAX))
                };
                let Some((pending, new)) = self.shared.inflight.head_unless(&c.path, fresh) else {
                    // Described between our lookup and now.
                    match self.shared.meta.get(&c.path) {
                        Some(m) => self.respond_meta(slot, m, None, None),
                        // ...and evicted again at once: let the client retry.
                        None => self.simple(slot, &req, 503, &[("Retry-After", b"1")], "retry\n"),
                    }
                    return;
                };
                if new {
                    self.stats.upstream_heads.fetch_add(1, Ordering::Relaxed);
                    up.fetch_head(HeadRequest {
                        origin,
                        object: Arc::from(c.path.as_str()),
                        path: c.upath.clone(),
                        stale: cached.clone(),
                        forward: c.fill_forward(),
                        variant: c.variant,
                    });
                }
                c.head_owner = new;
                c.stale = cached;
                c.pending = Some(pending);
                // The receive buffer moves on while the head is fetched; a `Vary` in the
                // answer is matched against this copy, and later fills forward its fields.
                c.save_head();
                // `drive` waits on it.
            }
            Route::Directory => match cached {
                Some(m) if m.is_fresh(self.now, self.revalidate) => {
                    self.respond_meta(slot, m, None, None);
                }
                // Unknown or due for revalidation: open and describe the file through the
                // ring; `drive` submits the open, `on_dir_stat` answers.
                _ => match crate::origin::object_path(&c.path) {
                    Ok(path) if self.shared.origin.is_some() => {
                        c.dopen = Some(DirOpen::new(path, true));
                    }
                    Ok(_) => self.simple(slot, &req, 404, &[], "not found\n"),
                    Err(e) => self.origin_error(slot, e),
                },
            },
        }
    }

    /// A directory-origin file opened through the ring: describe it (`statx` on the fd).
    fn on_dir_open(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let Some(o) = c.dopen.as_mut() else {
            if res >= 0 {
                sys::close(res);
            }
            return self.drive(slot);
        };
        if res < 0 {
            return self.dir_failed(slot, crate::origin::open_error(-res));
        }
        use std::os::fd::FromRawFd;
        // SAFETY: the ring's openat2 returned this fd to us; nothing else owns it.
        let file = unsafe { std::fs::File::from_raw_fd(res) };
        let fd = file.as_raw_fd();
        o.file = Some(file);
        let buf: *mut libc::statx = &mut *o.stat;
        c.inflight += 1;
        // SAFETY: `buf` is the slot's boxed statx, kept until the completion.
        unsafe {
            self.ring
                .statx_fd(fd, buf, ud(DIR_STAT, slot, c.generation))
        }
    }

    /// A directory-origin file described: answer the saved request with its description,
    /// or go on with the body whose head came from a cached one (if it is still that file).
    fn on_dir_stat(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let Some(o) = c.dopen.as_ref() else {
            return self.drive(slot);
        };
        if res < 0 {
            let kind = std::io::Error::from_raw_os_error(-res).kind();
            return self.dir_failed(slot, OriginError::Io(kind));
        }
        let described =
            crate::origin::describe(&o.path, &FileStat::from_statx(&o.stat)).and_then(|meta| {
                let fd = o.file.as_ref().map_or(-1, |f| f.as_raw_fd());
                sys::clear_nonblock(fd).map_err(|e| OriginError::Io(e.kind()))?;
                Ok(meta)
            });
        let meta = match described {
            Ok(m) => m,
            Err(e) => return self.dir_failed(slot, e),
        };
        let Some(o) = c.dopen.take() else {
            return self.drive(slot);
        };
        if o.describe {
            let meta = self.shared.meta.insert(&c.path, meta);
            c.phase = Phase::Recv;
            self.respond_meta(slot, meta, o.file, None);
        } else {
            match c.body.as_mut() {
                Some(b) if b.meta.version == meta.version => b.file = o.file,
                _ => {
                    // The object changed or vanished since its head was sent: the client
                    // sees a cut connection, never another file's bytes.
                    self.shared.meta.remove(&c.path);
                    self.close(slot);
                    return Ok(());
                }
            }
        }
        self.drive(slot)
    }

    /// A directory-origin open or `statx` failed. A request being described gets its status;
    /// a body whose file vanished since its head was sent cuts the connection (its client
    /// must never take a short body as whole).
    fn dir_failed(&mut self, slot: u32, e: OriginError) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let describe = c.dopen.take().is_some_and(|o| o.describe);
        if !describe {
            self.shared.meta.remove(&c.path);
            self.close(slot);
            return Ok(());
        }
        c.phase = Phase::Recv;
        self.origin_error(slot, e);
        self.drive(slot)
    }

    /// The status a request gets when its directory-origin file cannot be served.
    fn origin_error(&mut self, slot: u32, e: OriginError) {
        let req = self.conns[slot as usize].saved.req;
        match e {
            OriginError::NotFound => self.simple(slot, &req, 404, &[], "not found\n"),
            OriginError::BadPath => self.simple(slot, &req, 400, &[], "bad path\n"),
            OriginError::Io(kind) => {
                log::warn!("origin: {kind:?}");
                self.simple(slot, &req, 502, &[], "origin error\n");
            }
        }
    }

    /// Answers the saved request from a known object description.
    fn respond_meta(
        &mut self,
        slot: u32,
        meta: Arc<ObjectMeta>,
        file: Option<std::fs::File>,
        note: Option<&'static str>,
    ) {
        let c = &mut self.conns[slot as usize];
        let req = c.saved.req;
        let req = &req;
        let cond = &c.saved.cond;
        let len = meta.len;
        let (etag, last_modified) = (meta.etag.as_bytes(), meta.last_modified.as_bytes());
        let (etag, last_modified) = (
            (!etag.is_empty()).then_some(etag),
            (!last_modified.is_empty()).then_some(last_modified),
        );
        if relay_proto::conditional::evaluate(
            cond.if_none_match.as_ref().map(Small::as_bytes),
            cond.if_modified_since.as_ref().map(Small::as_bytes),
            etag,
            last_modified,
        ) == relay_proto::conditional::Precondition::NotModified
        {
            self.head_only(slot, req, 304, &meta, None);
            return;
        }
        // A Range counts only if If-Range (when sent) still names this representation.
        let range = cond.range.as_ref().filter(|_| {
            cond.if_range.as_ref().is_none_or(|v| {
                relay_proto::conditional::if_range_allows(v.as_bytes(), etag, last_modified)
            })
        });
        let spec = match range {
            Some(r) => relay_proto::range::parse_range(r.as_bytes(), len, &mut c.multi.ranges),
            None => RangeSpec::None,
        };
        let (status, start, end) = match spec {
            RangeSpec::Single(r) => (206, r.start, r.end + 1),
            RangeSpec::Multi(_) => (206, 0, 0),
            RangeSpec::Unsatisfiable => {
                let head = ResponseHead {
                    content_length: Some(0),
                    content_range: Some(relay_proto::ContentRange::Unsatisfied { total: len }),
                    ..base_head(&self.date, 416, req, None)
                };
                head.encode(&mut c.send.head);
                if !req.keep_alive {
                    c.close_after = true;
                }
                return;
            }
            RangeSpec::None => (200, 0, len),
        };
        let multi_n = match spec {
            RangeSpec::Multi(n) => n,
            _ => 0,
        };
        // Hit when every chunk the body needs is in memory now.
        let layout = self.shared.layout;
        let memory = &self.shared.memory;
        let disk = self.shared.disk.as_deref();
        let held = |i: u64| {
            let k = ChunkRef {
                object: &c.path,
                version: meta.version,
                index: i,
            };
            memory.contains(&k) || disk.is_some_and(|d| d.contains(&k))
        };
        let all_held = |start: u64, end: u64| {
            start >= end || (layout.chunk_of(start)..=layout.chunk_of(end - 1)).all(held)
        };
        let hit = if multi_n > 0 {
            c.multi.ranges[..multi_n]
                .iter()
                .all(|r| all_held(r.start, r.end + 1))
        } else if start < end {
            // Take the first chunk now (one lookup, not a check here and a get when the
            // body is sent): the response keeps it.
            let first = layout.chunk_of(start);
            let chunk = memory.get(&ChunkRef {
                object: &c.path,
                version: meta.version,
                index: first,
            });
            let first_held = chunk.is_some()
                || disk.is_some_and(|d| {
                    d.contains(&ChunkRef {
                        object: &c.path,
                        version: meta.version,
                        index: first,
                    })
                });
            let rest_held = (first + 1..=layout.chunk_of(end - 1)).all(held);
            if let Some(chunk) = chunk {
                c.local = Some((meta.version, first, chunk));
            }
            first_held && rest_held
        } else {
            true
        };
        if hit {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
        }
        let content_range =
            (status == 206 && multi_n == 0).then(|| relay_proto::ContentRange::Bytes {
                start,
                end: end - 1,
                total: len,
            });
        let object_type = (!meta.content_type.is_empty()).then_some(meta.content_type.as_str());
        let (content_length, content_type) = if multi_n > 0 {
            let Ok(mp) = Multipart::new(&self.boundary, object_type, len) else {
                // The boundary is ours and valid; never reached.
                return;
            };
            mp.content_type(&mut c.multi.content_type);
            (
                mp.body_len(&c.multi.ranges[..multi_n]),
                Some(c.multi.content_type.as_str()),
            )
        } else {
            (end - start, object_type)
        };
        // HTTP-origin objects carry their age (RFC 9111 §5.1); files have none.
        let mut age_buf = itoa::Buffer::new();
        let age: &[(&str, &[u8])] = if matches!(c.route, Route::Http(_)) {
            &[("Age", age_buf.format(meta.age(self.now)).as_bytes())]
        } else {
            &[]
        };
        let cache_status = note.unwrap_or(if hit { "hit" } else { "fwd=miss" });
        let head = ResponseHead {
            content_length: Some(content_length),
            etag,
            last_modified,
            content_range,
            accept_ranges: true,
            content_type,
            extra: age,
            raw: &meta.headers,
            ..base_head(&self.date, status, req, Some(cache_status))
        };
        head.encode(&mut c.send.head);
        if !req.keep_alive {
            c.close_after = true;
        }
        if req.method == Method::Get && content_length > 0 {
            c.multi.n = multi_n;
            c.multi.next = 0;
            c.multi.total = len;
            c.body = Some(Body {
                meta,
                pos: start,
                end,
                file,
            });
        }
    }

    fn head_only(
        &mut self,
        slot: u32,
        req: &RequestInfo,
        status: u16,
        meta: &ObjectMeta,
        cache_status: Option<&str>,
    ) {
        let head = ResponseHead {
            etag: Some(meta.etag.as_bytes()),
            last_modified: Some(meta.last_modified.as_bytes()),
            ..base_head(&self.date, status, req, cache_status)
        };
        let c = &mut self.conns[slot as usize];
        head.encode(&mut c.send.head);
        if !req.keep_alive {
            c.close_after = true;
        }
    }

    /// A small complete response (errors, 404) on a connection that stays usable.
    fn simple(
        &mut self,
        slot: u32,
        req: &RequestInfo,
        status: u16,
        extra: &[(&str, &[u8])],
        text: &'static str,
    ) {
        let head = ResponseHead {
            content_length: Some(text.len() as u64),
            content_type: Some("text/plain"),
            extra,
            ..base_head(&self.date, status, req, None)
        };
        let c = &mut self.conns[slot as usize];
        head.encode(&mut c.send.head);
        if req.method != Method::Head {
            c.send.body = Bytes::from_static(text.as_bytes());
            c.send.body_off = 0;
        }
        if !req.keep_alive {
            c.close_after = true;
        }
    }

    /// An error response after which the connection closes (the request stream is no longer
    /// trustworthy).
    fn error(&mut self, slot: u32, status: u16) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.refuse(slot, status);
    }

    /// [`Self::error`] for a request already counted.
    fn refuse(&mut self, slot: u32, status: u16) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let c = &mut self.conns[slot as usize];
        // The client may still be sending (a body refused at its head, a request cut short):
        // what comes is dropped, and the connection lingers after the answer.
        c.linger = Some(Linger::new(LINGER_BYTES));
        c.overflow = Vec::new();
        c.req_start = Some(self.now);
        relay_proto::error_response(status, self.date.get(), &mut c.send.head);
        c.close_after = true;
        c.rstart = c.rend;
        c.discard = 0;
        c.chunked = None;
        c.pass_request = None;
        c.upload = Vec::new();
        c.upload_reserved = None;
    }

    /// Closes after an answer while the client may still be sending: the write side is shut
    /// (the client sees the whole answer and its end) and input is read and dropped until
    /// the client closes, `LINGER_BYTES` have come or `LINGER_TIME` has passed. Closing at
    /// once could leave the client blocked on a full window (no RST goes out when the
    /// receive queue happens to be empty), or reset it before it read the answer.
    fn linger(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let reading = c.multishot && !c.closing && c.fd >= 0;
        let Some(l) = c.linger.as_mut().filter(|l| l.left > 0 && reading) else {
            // Input already ended (or is not read without a request).
            self.close(slot);
            return;
        };
        l.shut = true;
        sys::shutdown_write(c.fd);
        c.phase = Phase::Recv;
        c.deadline = self.now + LINGER_TIME;
    }

    fn close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.closing || c.fd < 0 {
            return;
        }
        if c.zc_sent.is_some() {
            // A zero-copy send's notification waits for the peer to ack its bytes, which a
            // client that stopped reading never does: reset, so the send queue is dropped.
            sys::abort(c.fd);
        }
        c.closing = true;
        if c.restore_entry.is_some() {
            // Others may wait on the description this connection was restoring.
            self.restore_fallback(slot);
        }
        // ...or on a chunk it was reading: they fetch it upstream.
        self.publish_chunk_share(slot, None);
        let c = &mut self.conns[slot as usize];
        // Pending receives and sends complete at once; the slot is freed when they have.
        sys::shutdown(c.fd);
        self.maybe_free(slot);
    }

    fn maybe_free(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.inflight > 0 || c.fd < 0 {
            return;
        }
        sys::close(c.fd);
        c.fd = -1;
        c.release();
        self.free.push(slot);
        self.live -= 1;
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Worker {
    /// A worker that stops (shutdown, or an error that ends its loop) leaves nobody waiting
    /// on it: its shared reads and restores are settled for the other workers' clients.
    fn drop(&mut self) {
        for slot in 0..self.conns.len() as u32 {
            self.publish_chunk_share(slot, None);
            if self.conns[slot as usize].restore_entry.is_some() {
                self.restore_fallback(slot);
            }
        }
        // The kernel may still read or write memory of operations in flight (a zero-copy
        // send waiting for its acks, a file read) after the ring is gone: that memory is
        // never handed back (other workers would put other chunks in it), and the
        // connections are reset and closed. Only a worker that stops with connections open
        // (an error) leaks anything; the eventfd buffer and the tick, always in flight, are
        // a few bytes.
        let mut busy = false;
        for mut c in std::mem::take(&mut self.conns) {
            if c.fd >= 0 {
                if c.inflight > 0 {
                    sys::abort(c.fd);
                    sys::shutdown(c.fd);
                }
                sys::close(c.fd);
                c.fd = -1;
                self.stats.open.fetch_sub(1, Ordering::Relaxed);
            }
            if c.inflight > 0 {
                busy = true;
                // What the kernel never touches goes back now (pass-through budget, upstream
                // streams and fetches, cache entries); the receive buffer, the send state and
                // the read targets are kept for good.
                c.forget_kernel_memory();
            }
        }
        if busy && let Some(b) = self.bufring.take() {
            // Multishot receives may still land in its buffers.
            std::mem::forget(b);
        }
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
        std::mem::forget(std::mem::replace(&mut self.tick, timespec(Duration::ZERO)));
    }
}

/// See [`Worker::shared_read`].
enum SharedRead {
    Again,
    Waiting,
    NotWaiting,
}

/// Which sends go zero-copy: a worker's thresholds and its registered arena, borrowed
/// apart from its connections so that the decision can be made while one is borrowed.
#[derive(Clone, Copy)]
struct ZeroCopy<'a> {
    fixed: Option<&'a relay_cache::arena::Arena>,
    min_fixed: usize,
    min_other: usize,
}

impl ZeroCopy<'_> {
    /// None: send `part` with a copy. Some(Some(i)): zero-copy from registered buffer `i`;
    /// Some(None): zero-copy from unregistered memory (pinned per send). Arena memory has
    /// its own, lower threshold (`cargo xtask bench zc-send`). A connection whose kernel
    /// copied a zero-copy send (`zc_ok` false) copies from then on.
    fn index(self, zc_ok: bool, part: &[u8]) -> Option<Option<u16>> {
        if !zc_ok || part.is_empty() {
            return None;
        }
        let index = self
            .fixed
            .and_then(|a| a.buf_index(part.as_ptr(), part.len()));
        let min = if index.is_some() {
            self.min_fixed
        } else {
            self.min_other
        };
        (min > 0 && part.len() >= min).then_some(index)
    }
}

fn base_head<'a>(
    date: &'a DateCache,
    status: u16,
    req: &RequestInfo,
    cache_status: Option<&'a str>,
) -> ResponseHead<'a> {
    ResponseHead {
        version: req.version,
        keep_alive: req.keep_alive,
        cache_status,
        ..ResponseHead::new(status, date.get())
    }
}

/// A boundary unlikely to occur in any body: random per process (RandomState is seeded from
/// the OS), 32 hex digits.
fn random_boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    let a = h.finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a);
    format!("relay-{a:016x}{:016x}", h.finish())
}

/// The longest request body relay reads through and drops to keep a connection (a GET or
/// HEAD with a body); past it, or for a chunked one, the connection ends after the answer.
const DISCARD_MAX: u64 = 64 << 10;

/// A lingering close (after an error answer) reads and drops at most this much input...
const LINGER_BYTES: u64 = 16 << 20;
/// ...for at most this long.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The interim response to a request that expects `100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Largest request body relay passes through (413 beyond).
const PASS_BODY_LIMIT: u64 = 64 << 20;

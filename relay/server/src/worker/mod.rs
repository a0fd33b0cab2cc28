//! One worker: an io_uring event loop on its own thread, with its own listener
//! (SO_REUSEPORT), its own connections and its own buffers. Workers share only the cache
//! (sharded, reference-counted chunks) and their statistics (one cache line each).
//!
//! The worker is the I/O shell of the connections' exchanges (`crate::exchange`): it owns
//! the ring, the slot table, the user-data encoding, the sockets and the send state the
//! kernel reads; it turns completions into the exchange's events and the actions the
//! exchange answers with into submissions, and decides nothing about HTTP.

mod accept;
mod recv;
mod send;

use crate::exchange::{Action, Cx, Exchange, ReadOp, Timeouts};
use crate::ring::Ring;
use crate::{Shared, WorkerStats, sys};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use io_uring::types::Timespec;
use relay_proto::DateCache;
use relay_upstream::budget::Client;
use send::SendMsg;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// The `statx` linked after a directory-origin chunk's read: has the file changed?
const FILE_CHECK: u8 = 18;

/// Provided buffers per worker, and their size: a request head (or a part of one) lands in
/// one and is copied into the connection's parse buffer at once.
const RECV_BUFFERS: u16 = 1024;
const RECV_BUFFER_SIZE: usize = 4096;

/// How long a connection accepted just before a stop has to send its first request.
const FRESH_GRACE: Duration = Duration::from_millis(500);
/// How long in-flight responses may finish after shutdown is asked for.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How much longer a worker waits for operations it cannot cancel (file reads) before it
/// stops anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Ticks after memory was freed on which the allocator is asked to give it back.
const RELEASE_TICKS: u8 = 3;
/// Connections closed (or idle ones trimmed) that make it worth asking: a forced collect
/// walks the heap, so a few closes a tick do not ask it.
const RELEASE_AFTER: usize = 64;
/// Free slots the table keeps however many connections left.
const SLOTS_KEPT: usize = 256;
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

/// A connection's slot: its socket and what the kernel holds of it, and its exchange.
struct Slot {
    fd: RawFd,
    generation: u32,
    /// Operations in flight; the slot is reused only when none is.
    inflight: u32,
    /// A multishot receive is armed (bytes arrive without a submission per request).
    multishot: bool,
    /// Zero-copy sends are worth trying on this connection (off once the kernel reports
    /// that it copied anyway, e.g. over loopback).
    zc_ok: bool,
    /// A zero-copy send is in flight (until its notification, or its failure without one):
    /// the bytes it reported sent, applied when the notification comes. The notification
    /// comes only once the peer has acked the bytes, so a close meanwhile resets the
    /// connection rather than wait on a client that stopped reading.
    zc_sent: Option<usize>,
    /// The `msghdr` of a `sendmsg` (boxed: the kernel reads it while the table moves).
    msg: Box<SendMsg>,
    /// The client's address, as budgets count clients (read at accept).
    client: Client,
    /// The connection is counted in `Shared::clients` (until its slot is freed).
    counted: bool,
    ex: Exchange,
}

/// A listening socket of a worker.
struct Listener {
    socket: std::net::TcpListener,
    /// The peer listener (`[cluster] peer_listen`).
    peer: bool,
    /// Its multishot accept is armed. Off when a drain ended it, or when it ended for want
    /// of descriptors or memory (armed again on the next tick unless draining).
    accepting: bool,
}

pub struct Worker {
    ring: Ring,
    /// Declared after `ring`: dropped after it (the kernel stops using the buffers first).
    bufring: Option<crate::bufring::BufRing>,
    /// Its listeners: one per `server.listen` address, then the peer listener, where
    /// other relays' requests come in (each must carry a valid `Relay-Peer` field). An
    /// accept's user data holds the listener's index.
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
    stats: Arc<CachePadded<WorkerStats>>,
    /// This worker's number: its bit in fills' watcher masks and its eventfd.
    id: usize,
    /// Eight bytes the eventfd read lands in (boxed: the kernel writes it).
    wake_buf: Box<[u8; 8]>,
    /// Connections waiting for upstream bytes (slot, generation); checked when woken.
    waiting: Vec<(u32, u32)>,
    waiting_now: Vec<(u32, u32)>,
    /// Connections holding input beyond their receive buffers (slot, generation), the
    /// longest holder first: cut first when the worker's bound on such input is reached.
    holders: std::collections::VecDeque<(u32, u32)>,
    conns: Vec<Slot>,
    /// Free slots, the lowest taken first: connections gather at the start of the table,
    /// so its end can be given back (`shrink_slots`).
    free: std::collections::BinaryHeap<std::cmp::Reverse<u32>>,
    live: usize,
    date: DateCache,
    timeouts: Timeouts,
    max_connections: usize,
    /// Connections closed, or idle ones that gave their buffers back, since the last tick:
    /// the allocator is asked to return what they freed.
    released: usize,
    /// Ticks on which the allocator is still to be asked.
    release_ticks: u8,
    /// `server.max_connections_per_client` (0: no limit).
    max_per_client: usize,
    /// `server.zerocopy_min_bytes`: arena pieces at least this long go SEND_ZC from their
    /// fixed buffer (0: never); `zc_min_unregistered`, the same for other memory.
    zc_min: usize,
    zc_min_unregistered: usize,
    /// The memory tier's arena, when this ring registered it: pieces inside it are sent
    /// (and disk chunks read) as fixed buffers.
    fixed: Option<Arc<relay_cache::arena::Arena>>,
    tick: Box<Timespec>,
    /// The loop turn's clock reading (one `clock_gettime` per turn, not per operation).
    now: Instant,
    completions: Vec<(u64, i32, u32)>,
    /// The multipart/byteranges boundary of this worker (random per process).
    boundary: String,
    /// Request latency (µs) since the last tick; published to `stats.latency` on the tick.
    latency: Histogram<u64>,
    /// The drain deadline and its grace passed with connections still busy: stop anyway.
    given_up: bool,
    draining: Option<Instant>,
}

impl Worker {
    pub fn new(
        client: Vec<std::net::TcpListener>,
        peer: Option<std::net::TcpListener>,
        shared: Arc<Shared>,
        stats: Arc<CachePadded<WorkerStats>>,
        id: usize,
    ) -> std::io::Result<Worker> {
        let cfg = &shared.config;
        let mut ring = Ring::new(4096)?;
        // A ring that refuses a provided-buffer ring (every kernel with the multishot accept
        // relay needs has them) falls back to one receive per request, into each
        // connection's own buffer, which it then keeps while idle: said, once.
        let bufring =
            match crate::bufring::BufRing::new(&ring.ring, 0, RECV_BUFFERS, RECV_BUFFER_SIZE) {
                Ok(b) => Some(b),
                Err(e) => {
                    static SAID: AtomicBool = AtomicBool::new(false);
                    warn_once(
                        &SAID,
                        format_args!(
                            "no provided-buffer ring ({e}): connections are read by single \
                             receives and keep their receive buffers while idle"
                        ),
                    );
                    None
                }
            };
        let fixed = shared.cache.memory.arena().and_then(|arena| {
            // SAFETY: the arena stays mapped while this worker (and so its ring) lives: the
            // worker holds an Arc to it in `fixed`, dropped after the ring.
            match unsafe { ring.register_buffers(&arena.iovecs()) } {
                Ok(()) => Some(arena.clone()),
                Err(e) => {
                    static SAID: AtomicBool = AtomicBool::new(false);
                    warn_once(
                        &SAID,
                        format_args!(
                            "memory tier: worker {id}: registering {} bytes with io_uring \
                             failed ({e}); it sends from unregistered memory (each worker's \
                             ring locks the arena: raise RLIMIT_MEMLOCK to workers x that, or \
                             grant CAP_IPC_LOCK)",
                            arena.capacity()
                        ),
                    );
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
            listeners: client
                .into_iter()
                .map(|socket| (socket, false))
                .chain(peer.map(|socket| (socket, true)))
                .map(|(socket, peer)| Listener {
                    socket,
                    peer,
                    accepting: false,
                })
                .collect(),
            timeouts: Timeouts {
                header: cfg.server.header_timeout(),
                idle: cfg.server.idle_timeout(),
                send: cfg.server.idle_timeout(),
                body: cfg.server.body_timeout(),
                body_min_rate: cfg.server.body_min_rate,
                revalidate: Duration::from_millis(cfg.origin.revalidate_ms),
            },
            max_connections: cfg.server.max_connections,
            released: 0,
            release_ticks: 0,
            max_per_client: cfg.server.max_connections_per_client,
            zc_min: cfg.server.zerocopy_min_bytes as usize,
            zc_min_unregistered: cfg.server.zerocopy_unregistered_min_bytes as usize,
            tick: timespec(TICK_INTERVAL),
            now: Instant::now(),
            shared,
            stats,
            id,
            wake_buf: Box::new([0; 8]),
            waiting: Vec::new(),
            waiting_now: Vec::new(),
            holders: std::collections::VecDeque::new(),
            conns: Vec::new(),
            free: std::collections::BinaryHeap::new(),
            live: 0,
            date: DateCache::new(SystemTime::now()),
            completions: Vec::with_capacity(1024),
            boundary: random_boundary(),
            latency: crate::metrics::latency_histogram(),
            given_up: false,
            draining: None,
        })
    }

    /// Runs until shutdown is asked for and the connections are drained.
    pub fn run(mut self) -> std::io::Result<()> {
        self.arm_accepts()?;
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
            let accepting = self.listeners.iter().any(|l| l.accepting);
            if self.draining.is_some() && (self.live == 0 || self.given_up) && !accepting {
                return Ok(());
            }
        }
    }

    fn complete(&mut self, u: u64, res: i32, flags: u32) -> std::io::Result<()> {
        let (kind, slot, generation) = ud_parts(u);
        match kind {
            ACCEPT => self.on_accept(slot as usize, res, flags),
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
                if c.ex.is_closed() {
                    if (kind == DISK_OPEN || kind == DIR_OPEN) && res >= 0 {
                        // Opened for a connection that is gone: nobody will read it.
                        sys::close(res);
                    }
                    self.maybe_free(slot);
                    return Ok(());
                }
                let a = match kind {
                    RECV if res <= 0 => Action::Close,
                    RECV => self.with_ex(slot, |ex, cx| ex.on_received(cx, res as usize)),
                    SEND => return self.on_send(slot, res),
                    SEND_HEAD => return self.on_send_head(slot, res),
                    SEND_ZC => return self.on_send_zc(slot, res, flags),
                    READ => self.with_ex(slot, |ex, cx| ex.on_chunk_read(cx, res)),
                    FILE_CHECK => self.with_ex(slot, |ex, cx| ex.on_chunk_checked(cx, res)),
                    DISK_READ => self.with_ex(slot, |ex, cx| ex.on_disk_read(cx, false, res)),
                    DISK_BODY => self.with_ex(slot, |ex, cx| ex.on_disk_read(cx, true, res)),
                    DISK_OPEN => {
                        let file = crate::exchange::opened(res);
                        self.with_ex(slot, |ex, cx| ex.on_disk_opened(cx, file))
                    }
                    DIR_OPEN => {
                        let file = crate::exchange::opened(res);
                        self.with_ex(slot, |ex, cx| ex.on_dir_opened(cx, file))
                    }
                    DIR_STAT => {
                        self.with_ex(slot, |ex, cx| ex.on_dir_stat(cx, res, sys::clear_nonblock))
                    }
                    _ => return Ok(()),
                };
                self.act(slot, a)
            }
        }
    }

    /// Runs `f` on a slot's exchange with this worker's context.
    fn with_ex<R>(&mut self, slot: u32, f: impl FnOnce(&mut Exchange, &mut Cx<'_>) -> R) -> R {
        let c = &mut self.conns[slot as usize];
        let fd = c.fd;
        let peer = move || sys::peer_addr(fd);
        let mut cx = Cx {
            shared: &self.shared,
            stats: &self.stats,
            worker: self.id,
            now: self.now,
            date: &self.date,
            timeouts: self.timeouts,
            boundary: &self.boundary,
            latency: &mut self.latency,
            peer: &peer,
            client: c.client,
            // (A paused connection's receive is ending: it does not count as reading.)
            reading: c.multishot && c.ex.reads_in_bursts() && !c.ex.is_closed() && c.fd >= 0,
            single_reads: !c.multishot && !c.ex.is_closed() && c.fd >= 0,
        };
        f(&mut c.ex, &mut cx)
    }

    /// Carries out what an exchange asked for: submits its operation, or parks it, or
    /// closes its connection.
    fn act(&mut self, slot: u32, mut a: Action) -> std::io::Result<()> {
        loop {
            let c = &mut self.conns[slot as usize];
            let u = |kind| ud(kind, slot, c.generation);
            match a {
                Action::Idle => return Ok(()),
                Action::Recv if c.multishot => return Ok(()),
                // Read again after an end the exchange reads past; a paused connection is
                // read by single receives from then on.
                Action::Recv if self.bufring.is_some() && c.ex.reads_in_bursts() => {
                    return self.arm_multishot(slot);
                }
                // A paused connection that caught up (nothing queued: a client that sends
                // ahead again is paused again).
                Action::Recv
                    if self.bufring.is_some()
                        && sys::unread(c.fd) == Some(0)
                        && c.ex.resume_bursts() =>
                {
                    return self.arm_multishot(slot);
                }
                Action::Recv => return self.submit_recv(slot),
                Action::Send => return self.submit_send(slot),
                Action::SendNow(bytes) => {
                    if sys::send_now(c.fd, bytes).ok() != Some(bytes.len()) {
                        self.close(slot);
                        return Ok(());
                    }
                    a = self.with_ex(slot, |ex, cx| ex.poll(cx));
                }
                Action::OpenDir { root, path, how } => {
                    c.inflight += 1;
                    // SAFETY: the path and open_how live in the exchange's DirOpen (heap),
                    // kept until the open completes.
                    return unsafe { self.ring.open_beneath(root, path, how, u(DIR_OPEN)) };
                }
                Action::StatDir { fd, buf } => {
                    c.inflight += 1;
                    // SAFETY: `buf` is the exchange's boxed statx, kept until the completion.
                    return unsafe { self.ring.statx_fd(fd, buf, u(DIR_STAT)) };
                }
                Action::ReadChunk { op, check } => {
                    c.inflight += 2;
                    let uds = [u(READ), u(FILE_CHECK)];
                    // SAFETY: the exchange keeps the chunk buffer and the statx buffer until
                    // both completions.
                    return unsafe { self.read_file(op, uds[0], Some((check, uds[1]))) };
                }
                Action::OpenDisk { path } => {
                    c.inflight += 1;
                    // SAFETY: the path is a CString in the exchange's DiskRead (heap), kept
                    // until the open completes.
                    return unsafe { self.ring.open_read(path, u(DISK_OPEN)) };
                }
                Action::ReadDisk { header, body } => {
                    let (uh, ub) = (u(DISK_READ), u(DISK_BODY));
                    if let Some(op) = header {
                        self.conns[slot as usize].inflight += 1;
                        // SAFETY: the exchange keeps the header buffer until the read
                        // completes.
                        unsafe { self.read_file(op, uh, None)? };
                    }
                    if let Some(op) = body {
                        self.conns[slot as usize].inflight += 1;
                        // SAFETY: the exchange keeps the body buffer until the read
                        // completes.
                        unsafe { self.read_file(op, ub, None)? };
                    }
                    return Ok(());
                }
                Action::Wait => {
                    self.waiting.push((slot, c.generation));
                    return Ok(());
                }
                Action::Linger => {
                    // (Asked for only while input is read as it comes, `Cx::reading`, or
                    // by single receives, `Cx::single_reads`: then the next one goes out.)
                    sys::shutdown_write(c.fd);
                    if !c.multishot {
                        return self.submit_recv(slot);
                    }
                    return Ok(());
                }
                Action::Close => {
                    self.close(slot);
                    return Ok(());
                }
            }
        }
    }

    /// Reads into an exchange's buffer: READ_FIXED when the memory lies in the registered
    /// arena, else a plain read; with `check` (a statx buffer and its user data), a `statx`
    /// of the file linked after it.
    ///
    /// # Safety
    /// `op.at..op.at + op.len`, and the statx buffer, obey the ring's buffer rule (valid,
    /// unmoved and untouched until their operations complete).
    unsafe fn read_file(
        &mut self,
        op: ReadOp,
        u: u64,
        check: Option<(*mut libc::statx, u64)>,
    ) -> std::io::Result<()> {
        let ReadOp {
            fd,
            at,
            len,
            offset,
        } = op;
        let fixed = self.fixed.as_ref().and_then(|a| a.buf_index(at, len));
        if fixed.is_some() {
            self.stats.read_fixed.fetch_add(1, Ordering::Relaxed);
        }
        let span = (len as u32, offset);
        match check {
            // SAFETY: `fixed` is the registered buffer holding the memory (checked by the
            // arena); the caller keeps the memory and the statx buffer for the operations.
            Some((stat, su)) => unsafe {
                self.ring
                    .read_then_statx(fd, at, span, fixed, (stat, [u, su]))
            },
            // SAFETY: as above, for the read alone.
            None => unsafe { self.ring.read(fd, at, span, fixed, u) },
        }
    }

    fn on_tick(&mut self) -> std::io::Result<()> {
        if self.shared.shutdown.load(Ordering::Relaxed) && self.draining.is_none() {
            self.draining = Some(Instant::now());
            for i in 0..self.listeners.len() {
                if self.listeners[i].accepting {
                    self.ring
                        .cancel(ud(ACCEPT, i as u32, 0), ud(CANCEL, 0, 0))?;
                }
            }
            // Idle connections go now; busy ones close after their response.
            for slot in 0..self.conns.len() as u32 {
                let c = &mut self.conns[slot as usize];
                if c.fd < 0 || c.ex.is_closed() {
                    continue;
                }
                if c.ex.drain() {
                    match c.ex.is_fresh() {
                        // (Accepted just now, its request perhaps on its way: a moment to
                        // send it, then the deadline closes it.)
                        true => c.ex.drain_fresh(Instant::now() + FRESH_GRACE),
                        false => self.close(slot),
                    }
                }
            }
        }
        self.now = Instant::now();
        self.publish_latency();
        // Error answer lines left out in a second that is over are reported now.
        self.stats.made_up.roll(self.now);
        let t = &self.shared.tunables;
        self.timeouts.header = Duration::from_millis(t.header_timeout_ms.load(Ordering::Relaxed));
        self.timeouts.idle = Duration::from_millis(t.idle_timeout_ms.load(Ordering::Relaxed));
        self.timeouts.send = self.timeouts.idle;
        self.timeouts.body = Duration::from_millis(t.body_timeout_ms.load(Ordering::Relaxed));
        self.timeouts.body_min_rate = t.body_min_rate.load(Ordering::Relaxed);
        self.max_connections = t.max_connections.load(Ordering::Relaxed) as usize;
        self.max_per_client = t.max_connections_per_client.load(Ordering::Relaxed) as usize;
        self.zc_min = t.zerocopy_min_bytes.load(Ordering::Relaxed) as usize;
        self.zc_min_unregistered =
            t.zerocopy_unregistered_min_bytes.load(Ordering::Relaxed) as usize;
        self.sweep_deadlines()?;
        let shrunk = self.shrink_slots();
        if self.released >= RELEASE_AFTER || shrunk {
            self.released = 0;
            self.release_ticks = RELEASE_TICKS;
        }
        if self.release_ticks > 0 {
            // Over a few ticks: the allocator gives pages back some time after they were
            // freed (its purge delay), when asked again.
            self.release_ticks -= 1;
            crate::release_memory();
        }
        self.wake_waiting()?;
        if self.id == 0
            && let Some(disk) = self.shared.cache.disk.as_ref()
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
        if self.draining.is_none() {
            self.arm_accepts()?;
        }
        // SAFETY: `self.tick` is boxed and lives as long as the worker.
        unsafe { self.ring.timeout(&*self.tick, ud(TICK, 0, 0)) }
    }

    /// Arms the multishot accept of every listener whose accept is not armed.
    fn arm_accepts(&mut self) -> std::io::Result<()> {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if !l.accepting {
                l.accepting = true;
                self.ring
                    .accept_multi(l.socket.as_raw_fd(), ud(ACCEPT, i as u32, 0))?;
            }
        }
        Ok(())
    }

    fn arm_wake(&mut self) -> std::io::Result<()> {
        let fd = self.shared.wakers[self.id].as_raw_fd();
        // SAFETY: `wake_buf` is boxed and lives as long as the worker, which outlives the ring.
        unsafe {
            self.ring
                .read(fd, self.wake_buf.as_mut_ptr(), (8, 0), None, ud(WAKE, 0, 0))
        }
    }

    /// Drives every connection waiting for upstream bytes (woken, or on the tick as a
    /// safety net).
    fn wake_waiting(&mut self) -> std::io::Result<()> {
        std::mem::swap(&mut self.waiting, &mut self.waiting_now);
        for i in 0..self.waiting_now.len() {
            let (slot, generation) = self.waiting_now[i];
            let Some(c) = self.conns.get(slot as usize) else {
                continue;
            };
            if c.generation == generation && !c.ex.is_closed() && c.fd >= 0 && c.ex.is_waiting() {
                let a = self.with_ex(slot, |ex, cx| ex.poll(cx));
                self.act(slot, a)?;
            }
        }
        self.waiting_now.clear();
        Ok(())
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

    /// Closes connections past their deadline (header, idle or send timeout; a request body
    /// past its own is answered 408 first). One io_uring timer per worker drives this
    /// sweep: a linked timeout per operation costs an hrtimer arm and disarm per request,
    /// measured at ~8% of a worker's CPU for 4 KiB hits.
    fn sweep_deadlines(&mut self) -> std::io::Result<()> {
        for slot in 0..self.conns.len() as u32 {
            let c = &self.conns[slot as usize];
            // A file read that outlives the send deadline (a hung disk) cuts its client too;
            // the slot is freed when the read completes.
            if c.fd < 0 || c.ex.is_closed() {
                continue;
            }
            if c.ex.deadline() > self.now {
                // (Multishot: no single receive is in flight into its buffer.)
                if c.multishot && self.conns[slot as usize].ex.trim(self.now) {
                    self.released += 1;
                }
                continue;
            }
            if c.ex.timeout_counts() {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                log::debug!("slot {slot}: past its deadline ({})", c.ex.state_name());
            }
            let a = self.with_ex(slot, |ex, cx| ex.on_deadline(cx));
            self.act(slot, a)?;
        }
        Ok(())
    }

    /// Gives back the slots at the end of the table once most of it is free (the clients of
    /// a crowd or a flood left): the memory of closed connections returns.
    fn shrink_slots(&mut self) -> bool {
        if self.free.len() < SLOTS_KEPT || self.free.len() < self.live {
            return false;
        }
        let before = self.conns.len();
        while let Some(c) = self.conns.last() {
            if c.fd >= 0 || c.inflight > 0 || self.conns.len() <= SLOTS_KEPT {
                break;
            }
            self.conns.pop();
        }
        if self.conns.len() < before {
            let n = self.conns.len() as u32;
            self.free.retain(|&std::cmp::Reverse(s)| s < n);
            self.conns.shrink_to(self.conns.len().max(SLOTS_KEPT));
            self.free.shrink_to(self.free.len().max(SLOTS_KEPT));
            return true;
        }
        false
    }

    fn close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.ex.is_closed() || c.fd < 0 {
            return;
        }
        if c.zc_sent.is_some() || c.ex.aborts() {
            // A zero-copy send's notification waits for the peer to ack its bytes, which a
            // client that stopped reading never does: reset, so the send queue is dropped.
            // (And a body delimited by the close that was cut must not end in a close.)
            sys::abort(c.fd);
        }
        self.with_ex(slot, |ex, cx| ex.on_close(cx));
        // Pending receives and sends complete at once; the slot is freed when they have.
        sys::shutdown(self.conns[slot as usize].fd);
        self.maybe_free(slot);
    }

    fn maybe_free(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if c.inflight > 0 || c.fd < 0 {
            return;
        }
        sys::close(c.fd);
        c.fd = -1;
        if std::mem::take(&mut c.counted) {
            self.shared.clients.close(c.client);
        }
        c.ex.release();
        self.released += 1;
        self.free.push(std::cmp::Reverse(slot));
        self.live -= 1;
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Worker {
    /// A worker that stops (shutdown, or an error that ends its loop) leaves nobody waiting
    /// on it: its shared reads and restores are settled for the other workers' clients.
    fn drop(&mut self) {
        for slot in 0..self.conns.len() as u32 {
            self.with_ex(slot, |ex, cx| ex.on_close(cx));
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
            if std::mem::take(&mut c.counted) {
                self.shared.clients.close(c.client);
            }
            if c.inflight > 0 {
                busy = true;
                // What the kernel never touches goes back now (pass-through budget, upstream
                // streams and fetches, cache entries); the receive buffer, the response, the
                // msghdr and the read targets are kept for good.
                std::mem::forget(c.msg);
                c.ex.forget_kernel_memory();
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

/// Logs `msg` the first time `said` is passed: a fact about every worker, said once.
fn warn_once(said: &AtomicBool, msg: std::fmt::Arguments<'_>) {
    if !said.swap(true, Ordering::Relaxed) {
        log::warn!("{msg}");
    }
}

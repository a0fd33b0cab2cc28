//! The sender: one thread, one io_uring (set up as relay's workers set theirs up), K
//! keep-alive TCP connections, each sending whole chunk files back to back by one method:
//!
//! - `read_fixed`: READ_FIXED of the file into the connection's registered buffer, then SEND
//!   of that buffer (re-submitted for the rest after a short read or send);
//! - `read_fixed+xxh3`: the same, with the XXH3-64 of the chunk checked against the one
//!   recorded at write time before the SEND (relay's disk-tier path: verify, then serve);
//! - `send_zc_fixed`: READ_FIXED, then SEND_ZC from the registered buffer
//!   (IORING_RECVSEND_FIXED_BUF); the buffer is reused only after the kernel's notification;
//! - `splice`: per connection a pipe; SPLICE file→pipe linked to SPLICE pipe→socket, as many
//!   rounds as the pipe's capacity needs. A short file→pipe splice cancels the linked one
//!   (-ECANCELED) and whatever sits in the pipe is spliced out on its own.
//!
//! Connection `c` sends file `(c + n) % files` as its `n`-th file of a run, so the receiver
//! knows which bytes to expect. A connection starts no new file after the run's deadline;
//! the run ends when every file in flight is completely sent.

use super::Method;
use super::sys;
use anyhow::{Context, Result, anyhow, bail};
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::fs::File;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// `IORING_SEND_ZC_REPORT_USAGE`: the notification says whether the kernel copied after all.
const SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// Set in a notification's result when the zero-copy send was copied.
const NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

const READ: u64 = 1;
const SEND: u64 = 2;
const SPLICE_IN: u64 = 3;
const SPLICE_OUT: u64 = 4;

/// One set of equally sized chunk files, open for reading.
pub struct Files {
    pub size: u64,
    pub files: Vec<File>,
    /// XXH3-64 of each file (relay_cache::disk::checksum), taken when written.
    pub sums: Vec<u64>,
}

/// What one run asks of the sender.
pub struct Spec<'a> {
    pub method: Method,
    pub files: &'a Files,
    pub duration: Duration,
    /// posix_fadvise(DONTNEED) on each file right before it is read or spliced.
    pub cold: bool,
    /// Stop starting files after this many bytes (a bound besides the deadline).
    pub max_bytes: u64,
}

/// What one run did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Bytes of complete files sent per connection.
    pub per_conn: Vec<u64>,
    pub files: u64,
    pub start: Option<Instant>,
    pub end: Option<Instant>,
    pub counts: Counts,
}

/// What the sender counted during a run (kept with every run record).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Counts {
    /// Re-submissions after a short read, send or splice (partial transfers handled).
    pub short_reads: u64,
    pub short_sends: u64,
    pub short_splices: u64,
    /// Linked pipe→socket splices cancelled by a short file→pipe splice.
    pub cancelled_links: u64,
    pub checksums: u64,
    pub zc_notifs: u64,
    pub zc_copied: u64,
    pub submit_calls: u64,
}

#[derive(Clone, Copy, Default, PartialEq)]
enum Phase {
    /// No file in progress (before the first, or after the deadline).
    #[default]
    Idle,
    /// A file is being read, sent or spliced.
    Busy,
    /// The file is sent, but zero-copy notifications are outstanding: the buffer may not be
    /// overwritten yet.
    Draining,
}

#[derive(Clone, Copy, Default)]
struct Conn {
    phase: Phase,
    /// Files started this run.
    seq: u64,
    file: usize,
    /// Bytes of the current file read into the buffer, or spliced into the pipe.
    off: u64,
    /// Bytes of the current file the socket took.
    sent: u64,
    /// Bytes sitting in the pipe.
    in_pipe: u64,
    inflight: u32,
    notifs: u32,
}

pub struct Sender {
    // Declared first: dropped (and the registrations released) before the buffers.
    ring: IoUring,
    /// One registered buffer of `slot` bytes per connection.
    bufs: Box<[u8]>,
    /// `bufs`' start, taken once: the kernel writes into some buffers while others are
    /// used, so no reference spanning all of them is made after registration.
    base: *mut u8,
    slot: usize,
    socks: Vec<TcpStream>,
    pipes: Vec<(OwnedFd, OwnedFd)>,
    pub pipe_size: usize,
    /// SQEs submitted and not completed: non-zero only when a run failed midway.
    inflight: u64,
    /// io-wq's [bounded, unbounded] worker limits as the kernel reported them.
    pub iowq_max_workers: [u32; 2],
}

impl Sender {
    /// Sets up the ring on the calling thread (the one that will submit): registers one
    /// buffer of `slot` bytes per socket, pins the ring's io-wq workers to `cpu`, and makes a
    /// pipe of up to `pipe_size` bytes per socket.
    pub fn new(socks: Vec<TcpStream>, slot: usize, pipe_size: usize, cpu: usize) -> Result<Sender> {
        let k = socks.len();
        let entries = (4 * k).next_power_of_two().max(64) as u32;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(entries * 4)
            .build(entries)
            .or_else(|_| IoUring::new(entries))
            .context("creating the io_uring")?;
        let mut bufs = vec![0u8; k * slot].into_boxed_slice();
        let iovecs: Vec<libc::iovec> = bufs
            .chunks_mut(slot)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: the buffers live in `bufs`, which the Sender owns and never reallocates;
        // `ring` is declared before `bufs`, so it is dropped first, and Drop leaks `bufs`
        // if a failed run left operations in flight.
        unsafe { ring.submitter().register_buffers(&iovecs) }.with_context(|| {
            format!(
                "registering {k} buffers of {slot} bytes (RLIMIT_MEMLOCK too low? try \
                 `ulimit -l unlimited`, or fewer connections)"
            )
        })?;
        let base = bufs.as_mut_ptr();
        let mut sender = Sender {
            ring,
            bufs,
            base,
            slot,
            socks,
            pipes: Vec::new(),
            pipe_size: usize::MAX,
            inflight: 0,
            iowq_max_workers: [0, 0],
        };
        // io-wq exists once the task has submitted: one NOP, then pin its workers.
        sender.push(&[opcode::Nop::new().build().user_data(0)])?;
        sender.ring.submit_and_wait(1)?;
        sender.ring.completion().for_each(drop);
        sender.inflight = 0;
        let set = sys::cpu_set(cpu)?;
        sender
            .ring
            .submitter()
            .register_iowq_aff(&set)
            .context("pinning io-wq workers (IORING_REGISTER_IOWQ_AFF)")?;
        let mut max = [0u32, 0];
        if sender
            .ring
            .submitter()
            .register_iowq_max_workers(&mut max)
            .is_ok()
        {
            sender.iowq_max_workers = max;
        }
        for _ in 0..k {
            let (r, w, got) = sys::pipe(pipe_size).context("creating a pipe")?;
            sender.pipe_size = sender.pipe_size.min(got);
            sender.pipes.push((r, w));
        }
        Ok(sender)
    }

    fn push(&mut self, entries: &[squeue::Entry]) -> Result<()> {
        let mut sq = self.ring.submission();
        for e in entries {
            // SAFETY: every entry points into `self.bufs` (registered, alive as long as the
            // ring) or at files, pipes and sockets that stay open while the ring lives.
            unsafe { sq.push(e) }.map_err(|_| anyhow!("submission queue full"))?;
        }
        self.inflight += entries.len() as u64;
        Ok(())
    }

    fn buf_ptr(&self, conn: usize, at: u64) -> *mut u8 {
        debug_assert!(at as usize <= self.slot);
        self.base.wrapping_add(conn * self.slot + at as usize)
    }

    /// One measured run: every connection sends whole files until the deadline.
    pub fn run(&mut self, spec: &Spec) -> Result<Outcome> {
        let k = self.socks.len();
        if spec.files.size as usize > self.slot {
            bail!(
                "files of {} bytes do not fit the {} byte buffers",
                spec.files.size,
                self.slot
            );
        }
        let mut conns = vec![Conn::default(); k];
        let mut out = Outcome {
            per_conn: vec![0; k],
            ..Outcome::default()
        };
        let mut pending: Vec<squeue::Entry> = Vec::with_capacity(4 * k);
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(8 * k);
        let start = Instant::now();
        let deadline = start + spec.duration;
        let hard = deadline + Duration::from_secs(30);
        let mut total = 0u64;
        for (c, conn) in conns.iter_mut().enumerate() {
            self.start_file(c, conn, spec, deadline, &mut total, &mut pending)?;
        }
        out.start = Some(start);
        loop {
            self.push(&pending)?;
            pending.clear();
            if conns
                .iter()
                .all(|c| c.phase == Phase::Idle && c.inflight == 0)
            {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e).context("io_uring_enter"),
            }
            out.counts.submit_calls += 1;
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &cqes {
                let (c, tag) = ((ud >> 8) as usize, ud & 0xff);
                if !cqueue::notif(flags) {
                    self.inflight -= 1;
                }
                let conn = &mut conns[c];
                let what = || format!("{} on connection {c}", spec.method.name());
                complete(conn, tag, res, flags, &mut out).with_context(what)?;
                let ready = conn.inflight == 0
                    && match conn.phase {
                        Phase::Busy => true,
                        Phase::Draining => conn.notifs == 0,
                        Phase::Idle => false,
                    };
                if ready
                    && self
                        .next_step(c, conn, spec, &mut out, &mut pending)
                        .with_context(what)?
                {
                    self.start_file(c, conn, spec, deadline, &mut total, &mut pending)?;
                }
            }
            if Instant::now() > hard {
                bail!(
                    "{}: files still in flight 30 s after the deadline",
                    spec.method.name()
                );
            }
        }
        out.end = Some(Instant::now());
        Ok(out)
    }

    /// Starts connection `c`'s next file, or leaves it idle after the deadline.
    fn start_file(
        &mut self,
        c: usize,
        conn: &mut Conn,
        spec: &Spec,
        deadline: Instant,
        total: &mut u64,
        pending: &mut Vec<squeue::Entry>,
    ) -> Result<()> {
        // Every connection sends at least one file per run, then none after the deadline.
        if conn.seq > 0 && (Instant::now() >= deadline || *total >= spec.max_bytes) {
            conn.phase = Phase::Idle;
            return Ok(());
        }
        let n = spec.files.files.len();
        *conn = Conn {
            phase: Phase::Busy,
            seq: conn.seq + 1,
            file: (c + conn.seq as usize) % n,
            ..Conn::default()
        };
        *total += spec.files.size;
        let fd = spec.files.files[conn.file].as_raw_fd();
        if spec.cold {
            sys::drop_cache(fd).context("posix_fadvise(DONTNEED)")?;
        }
        match spec.method {
            Method::Splice => self.splice_pair(c, conn, spec, pending),
            _ => self.read(c, conn, spec, pending),
        }
        Ok(())
    }

    fn read(&mut self, c: usize, conn: &mut Conn, spec: &Spec, pending: &mut Vec<squeue::Entry>) {
        let fd = spec.files.files[conn.file].as_raw_fd();
        let len = (spec.files.size - conn.off) as u32;
        let ptr = self.buf_ptr(c, conn.off);
        pending.push(
            opcode::ReadFixed::new(types::Fd(fd), ptr, len, c as u16)
                .offset(conn.off)
                .build()
                .user_data(ud(c, READ)),
        );
        conn.inflight += 1;
    }

    fn send(&mut self, c: usize, conn: &mut Conn, spec: &Spec, pending: &mut Vec<squeue::Entry>) {
        let sock = self.socks[c].as_raw_fd();
        let len = (spec.files.size - conn.sent) as u32;
        let ptr = self.buf_ptr(c, conn.sent).cast_const();
        let e = match spec.method {
            Method::SendZc => opcode::SendZc::new(types::Fd(sock), ptr, len)
                .buf_index(Some(c as u16))
                .zc_flags(SEND_ZC_REPORT_USAGE)
                .build(),
            _ => opcode::Send::new(types::Fd(sock), ptr, len).build(),
        };
        pending.push(e.user_data(ud(c, SEND)));
        conn.inflight += 1;
    }

    /// SPLICE file→pipe (as much as the pipe holds) linked to SPLICE pipe→socket.
    fn splice_pair(
        &self,
        c: usize,
        conn: &mut Conn,
        spec: &Spec,
        pending: &mut Vec<squeue::Entry>,
    ) {
        let file = spec.files.files[conn.file].as_raw_fd();
        let (r, w) = self.pipe(c);
        let len = (spec.files.size - conn.off).min(self.pipe_size as u64) as u32;
        pending.push(
            opcode::Splice::new(types::Fd(file), conn.off as i64, types::Fd(w), -1, len)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(ud(c, SPLICE_IN)),
        );
        let sock = self.socks[c].as_raw_fd();
        pending.push(
            opcode::Splice::new(types::Fd(r), -1, types::Fd(sock), -1, len)
                .build()
                .user_data(ud(c, SPLICE_OUT)),
        );
        conn.inflight += 2;
    }

    /// SPLICE pipe→socket of what the pipe holds (after a short splice on either side).
    fn splice_out(&self, c: usize, conn: &mut Conn, pending: &mut Vec<squeue::Entry>) {
        let (r, _) = self.pipe(c);
        let sock = self.socks[c].as_raw_fd();
        pending.push(
            opcode::Splice::new(types::Fd(r), -1, types::Fd(sock), -1, conn.in_pipe as u32)
                .build()
                .user_data(ud(c, SPLICE_OUT)),
        );
        conn.inflight += 1;
    }

    fn pipe(&self, c: usize) -> (RawFd, RawFd) {
        let (r, w) = &self.pipes[c];
        (r.as_raw_fd(), w.as_raw_fd())
    }

    /// With nothing in flight for connection `c`: queues its next operation, or returns
    /// true when its file is completely sent (and its buffer free again).
    fn next_step(
        &mut self,
        c: usize,
        conn: &mut Conn,
        spec: &Spec,
        out: &mut Outcome,
        pending: &mut Vec<squeue::Entry>,
    ) -> Result<bool> {
        let size = spec.files.size;
        if conn.phase == Phase::Draining {
            return Ok(true); // the last zero-copy notification arrived
        }
        match spec.method {
            Method::Splice if conn.in_pipe > 0 => {
                // A short splice on either side (a short file→pipe one cancels its link).
                out.counts.short_splices += 1;
                self.splice_out(c, conn, pending);
                return Ok(false);
            }
            Method::Splice if conn.off < size => {
                self.splice_pair(c, conn, spec, pending);
                return Ok(false);
            }
            Method::Splice => {}
            _ if conn.off < size => {
                out.counts.short_reads += 1;
                self.read(c, conn, spec, pending);
                return Ok(false);
            }
            _ if conn.sent < size => {
                if conn.sent == 0 {
                    self.verify(c, conn, spec, out)?;
                } else {
                    out.counts.short_sends += 1;
                }
                self.send(c, conn, spec, pending);
                return Ok(false);
            }
            _ => {}
        }
        out.per_conn[c] += size;
        out.files += 1;
        if conn.notifs > 0 {
            conn.phase = Phase::Draining;
            return Ok(false);
        }
        Ok(true)
    }

    /// read_fixed+xxh3: the chunk's checksum against the one recorded at write time; a
    /// mismatch fails the run (relay would drop the chunk and refetch, never send it).
    fn verify(&self, c: usize, conn: &Conn, spec: &Spec, out: &mut Outcome) -> Result<()> {
        if spec.method != Method::ReadFixedXxh3 {
            return Ok(());
        }
        let len = spec.files.size as usize;
        assert!(len <= self.slot);
        // SAFETY: connection `c`'s buffer lies within `bufs` (len <= slot); its read has
        // completed and nothing writes to it until its next read, submitted after this
        // borrow ends. Other connections' buffers, which the kernel may be writing, are not
        // covered.
        let body = unsafe { std::slice::from_raw_parts(self.buf_ptr(c, 0), len) };
        out.counts.checksums += 1;
        if relay_cache::disk::checksum(body) != spec.files.sums[conn.file] {
            bail!("checksum mismatch on file {}", conn.file);
        }
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.inflight > 0 {
            // A failed run left reads in flight into the registered buffers: never hand
            // that memory back to the allocator (the process exits after an error anyway).
            std::mem::forget(std::mem::take(&mut self.bufs));
        }
    }
}

/// Books one completion for its connection.
fn complete(conn: &mut Conn, tag: u64, res: i32, flags: u32, out: &mut Outcome) -> Result<()> {
    let fail = |op: &str, zero: &str| {
        if res == 0 {
            anyhow!("{op}: {zero}")
        } else {
            anyhow!("{op}: {}", std::io::Error::from_raw_os_error(-res))
        }
    };
    if cqueue::notif(flags) {
        conn.notifs -= 1;
        out.counts.zc_notifs += 1;
        if res as u32 & NOTIF_USAGE_ZC_COPIED != 0 {
            out.counts.zc_copied += 1;
        }
        return Ok(());
    }
    conn.inflight -= 1;
    match tag {
        READ if res > 0 => conn.off += res as u64,
        READ => return Err(fail("read", "unexpected end of file")),
        SEND => {
            if cqueue::more(flags) {
                conn.notifs += 1;
            }
            if res <= 0 {
                return Err(fail("send", "connection closed"));
            }
            conn.sent += res as u64;
        }
        SPLICE_IN if res > 0 => {
            conn.off += res as u64;
            conn.in_pipe += res as u64;
        }
        SPLICE_IN => return Err(fail("splice file→pipe", "unexpected end of file")),
        SPLICE_OUT if res == -libc::ECANCELED => out.counts.cancelled_links += 1,
        SPLICE_OUT if res > 0 => {
            conn.sent += res as u64;
            conn.in_pipe -= res as u64;
        }
        SPLICE_OUT => return Err(fail("splice pipe→socket", "moved nothing")),
        _ => bail!("unknown completion tag {tag}"),
    }
    Ok(())
}

fn ud(conn: usize, tag: u64) -> u64 {
    (conn as u64) << 8 | tag
}

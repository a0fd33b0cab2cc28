//! The io_uring submission side: one small function per operation the worker uses.
//!
//! The buffer rule, stated once: every pointer handed to the kernel here (receive buffers,
//! `msghdr`s and the iovecs they point to, read buffers, timespecs) must stay valid and
//! unmoved until the operation's completion has been reaped. The worker keeps
//! that rule by owning each buffer in its connection slot (heap memory, never reallocated
//! while an operation is in flight) and by freeing a slot only when its in-flight count is 0.

use io_uring::{IoUring, opcode, squeue, types};
use std::io;
use std::os::fd::RawFd;

/// IORING_SEND_ZC_REPORT_USAGE (in the SQE's ioprio field): the notification says whether
/// the kernel had to copy after all.
const REPORT_USAGE: u16 = 8;

/// A ring plus a push that flushes when the submission queue is full.
pub struct Ring {
    pub ring: IoUring,
}

impl Ring {
    /// One ring per worker thread: single issuer, deferred task running (completions are
    /// processed only when the worker asks, which batches them), cooperative task running.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(entries * 4)
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        Ok(Ring { ring })
    }

    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: the entry's pointers obey the buffer rule above (each caller's contract).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("submission queue stays full"))
    }

    /// Multishot accept on a listening socket: one submission, one completion per client.
    pub fn accept_multi(&mut self, listener: RawFd, ud: u64) -> io::Result<()> {
        let sqe = opcode::AcceptMulti::new(types::Fd(listener))
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// Receive into `buf`.
    ///
    /// # Safety
    /// `buf` obeys the buffer rule (module docs).
    pub unsafe fn recv(&mut self, fd: RawFd, buf: *mut u8, len: u32, ud: u64) -> io::Result<()> {
        let sqe = opcode::Recv::new(types::Fd(fd), buf, len)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// Multishot receive into buffers of group `bgid` (see `bufring`): one submission, one
    /// completion per arrival, until the connection ends or the group runs dry.
    pub fn recv_multi(&mut self, fd: RawFd, bgid: u16, ud: u64) -> io::Result<()> {
        let sqe = opcode::RecvMulti::new(types::Fd(fd), bgid)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// `sendmsg` of the iovecs `msg` points to.
    ///
    /// # Safety
    /// `msg`, its iovecs and the memory they describe obey the buffer rule.
    pub unsafe fn sendmsg(
        &mut self,
        fd: RawFd,
        msg: *const libc::msghdr,
        ud: u64,
    ) -> io::Result<()> {
        let sqe = opcode::SendMsg::new(types::Fd(fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// `send` of one contiguous buffer (cheaper than `sendmsg`: no msghdr or iovec to
    /// import).
    ///
    /// # Safety
    /// `buf` obeys the buffer rule.
    pub unsafe fn send(&mut self, fd: RawFd, buf: *const u8, len: u32, ud: u64) -> io::Result<()> {
        let sqe = opcode::Send::new(types::Fd(fd), buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// Zero-copy `sendmsg`: the kernel sends from our memory and posts a second completion
    /// (a notification) once it no longer reads it; with REPORT_USAGE the notification says
    /// whether it had to copy after all.
    ///
    /// # Safety
    /// As `sendmsg`, and the memory must stay untouched until the notification.
    pub unsafe fn sendmsg_zc(
        &mut self,
        fd: RawFd,
        msg: *const libc::msghdr,
        ud: u64,
    ) -> io::Result<()> {
        let sqe = opcode::SendMsgZc::new(types::Fd(fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .ioprio(REPORT_USAGE)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// Zero-copy `send` of one range of a registered buffer (`buf_index`): the kernel skips
    /// pinning the pages, which the registration pinned once. Completions as `sendmsg_zc`.
    ///
    /// # Safety
    /// `buf..buf + len` lies inside registered buffer `buf_index` and stays untouched
    /// until the notification.
    pub unsafe fn send_zc_fixed(
        &mut self,
        fd: RawFd,
        buf: *const u8,
        len: u32,
        buf_index: u16,
        ud: u64,
    ) -> io::Result<()> {
        let sqe = opcode::SendZc::new(types::Fd(fd), buf, len)
            .buf_index(Some(buf_index))
            .flags(libc::MSG_NOSIGNAL)
            .zc_flags(REPORT_USAGE)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// A response head, then a zero-copy send of its body from registered buffer
    /// `buf_index`, linked: the body starts only once the whole head is sent (MSG_WAITALL
    /// makes a short head a failure, which cancels the body), and MSG_MORE lets TCP put the
    /// head and the body's first bytes in one segment. Both entries enter the queue in
    /// the same submission, so the link is never cut between them.
    ///
    /// # Safety
    /// `head` obeys the buffer rule; `body..body + body_len` lies inside registered buffer
    /// `buf_index` and stays untouched until the body's notification.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn send_head_then_fixed(
        &mut self,
        fd: RawFd,
        head: &[u8],
        head_ud: u64,
        body: *const u8,
        body_len: u32,
        buf_index: u16,
        body_ud: u64,
    ) -> io::Result<()> {
        let first = opcode::Send::new(types::Fd(fd), head.as_ptr(), head.len() as u32)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL | libc::MSG_MORE)
            .build()
            .user_data(head_ud);
        let second = opcode::SendZc::new(types::Fd(fd), body, body_len)
            .buf_index(Some(buf_index))
            .flags(libc::MSG_NOSIGNAL)
            .zc_flags(REPORT_USAGE)
            .build()
            .user_data(body_ud);
        self.push_linked(first, second)
    }

    /// `second` runs once `first` has completed, and only if it succeeded in full (a short
    /// read or send fails the link: `second` completes with `-ECANCELED`). Both entries
    /// enter the queue in the same submission, so the link is never cut between them.
    fn push_linked(&mut self, first: squeue::Entry, second: squeue::Entry) -> io::Result<()> {
        let first = first.flags(squeue::Flags::IO_LINK);
        let free = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if free < 2 {
            self.ring.submit()?;
        }
        // SAFETY: the entries' pointers obey the buffer rule (each caller's contract).
        unsafe { self.ring.submission().push_multiple(&[first, second]) }
            .map_err(|_| io::Error::other("submission queue stays full"))
    }

    /// Registers `iovecs` as the ring's fixed buffers (pins their pages once).
    ///
    /// # Safety
    /// The memory stays mapped for the life of the ring.
    pub unsafe fn register_buffers(&mut self, iovecs: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: the caller keeps the memory mapped while the ring lives.
        unsafe { self.ring.submitter().register_buffers(iovecs) }
    }

    /// Open `path` read-only (close-on-exec); the completion's result is the fd.
    ///
    /// # Safety
    /// `path` is a NUL-terminated string that obeys the buffer rule (module docs).
    pub unsafe fn open_read(&mut self, path: *const libc::c_char, ud: u64) -> io::Result<()> {
        let sqe = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path)
            .flags(libc::O_RDONLY | libc::O_CLOEXEC)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// `openat2(dir, path, how)`: a directory-origin file beneath its root; the
    /// completion's result is the fd.
    ///
    /// # Safety
    /// `path` (NUL-terminated) and `how` obey the buffer rule (module docs).
    pub unsafe fn open_beneath(
        &mut self,
        dir: RawFd,
        path: *const libc::c_char,
        how: *const types::OpenHow,
        ud: u64,
    ) -> io::Result<()> {
        let sqe = opcode::OpenAt2::new(types::Fd(dir), path, how)
            .build()
            .user_data(ud);
        self.push(&sqe)
    }

    /// `statx` of an open file (`AT_EMPTY_PATH`) into `buf`: type, size, mtime, inode.
    ///
    /// # Safety
    /// `buf` obeys the buffer rule (module docs).
    pub unsafe fn statx_fd(&mut self, fd: RawFd, buf: *mut libc::statx, ud: u64) -> io::Result<()> {
        self.push(&statx_entry(fd, buf).user_data(ud))
    }

    /// Read `len` bytes of a file at `offset` into `buf`: `READ_FIXED` when `fixed` names
    /// the registered buffer `buf` lies in (no page pinning per read), else a plain read.
    ///
    /// # Safety
    /// `buf` obeys the buffer rule and has room for `len` bytes (inside registered buffer
    /// `fixed` when given).
    pub unsafe fn read(
        &mut self,
        fd: RawFd,
        buf: *mut u8,
        (len, offset): (u32, u64),
        fixed: Option<u16>,
        ud: u64,
    ) -> io::Result<()> {
        self.push(&read_entry(fd, buf, (len, offset), fixed).user_data(ud))
    }

    /// A read as [`Ring::read`], then `statx` of the same file into `stat` as
    /// [`Ring::statx_fd`], linked: the file is looked at again as soon as the read is
    /// done, with no round trip between. A failed or short read cancels the `statx`
    /// (`-ECANCELED`).
    ///
    /// # Safety
    /// As [`Ring::read`], and `stat` obeys the buffer rule.
    pub unsafe fn read_then_statx(
        &mut self,
        fd: RawFd,
        buf: *mut u8,
        (len, offset): (u32, u64),
        fixed: Option<u16>,
        (stat, uds): (*mut libc::statx, [u64; 2]),
    ) -> io::Result<()> {
        let read = read_entry(fd, buf, (len, offset), fixed).user_data(uds[0]);
        self.push_linked(read, statx_entry(fd, stat).user_data(uds[1]))
    }

    /// A one-shot timer.
    ///
    /// # Safety
    /// `ts` obeys the buffer rule.
    pub unsafe fn timeout(&mut self, ts: *const types::Timespec, ud: u64) -> io::Result<()> {
        let sqe = opcode::Timeout::new(ts).build().user_data(ud);
        self.push(&sqe)
    }

    /// Cancel the operation submitted with user data `target`.
    pub fn cancel(&mut self, target: u64, ud: u64) -> io::Result<()> {
        let sqe = opcode::AsyncCancel::new(target).build().user_data(ud);
        self.push(&sqe)
    }
}

/// A read of `len` bytes at `offset` into `buf` (from registered buffer `fixed`, if any).
fn read_entry(
    fd: RawFd,
    buf: *mut u8,
    (len, offset): (u32, u64),
    fixed: Option<u16>,
) -> squeue::Entry {
    match fixed {
        Some(index) => opcode::ReadFixed::new(types::Fd(fd), buf, len, index)
            .offset(offset)
            .build(),
        None => opcode::Read::new(types::Fd(fd), buf, len)
            .offset(offset)
            .build(),
    }
}

/// `statx` of an open file (`AT_EMPTY_PATH`): type, size, mtime, inode.
fn statx_entry(fd: RawFd, buf: *mut libc::statx) -> squeue::Entry {
    opcode::Statx::new(types::Fd(fd), c"".as_ptr(), buf.cast())
        .flags(libc::AT_EMPTY_PATH)
        .mask(libc::STATX_TYPE | libc::STATX_SIZE | libc::STATX_MTIME | libc::STATX_INO)
        .build()
}

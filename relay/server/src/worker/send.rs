//! Sending a response: one `send` for a head with a small body, a two-iovec `sendmsg` for a
//! head and a body piece, zero-copy (`SEND_ZC` from a registered buffer, with the head linked
//! ahead of it, or `SENDMSG_ZC`) where it pays; and the completions of each.

use super::{SEND, SEND_HEAD, SEND_ZC, Slot, Worker, ud};
use crate::exchange::{Outgoing, SEND_MAX};
use std::sync::atomic::Ordering;

/// Bodies up to this size are copied behind their head and sent with one plain `send`.
const SMALL_BODY: usize = 16 * 1024;
/// IORING_NOTIF_USAGE_ZC_COPIED, in a zero-copy notification's result.
const ZC_COPIED: i32 = i32::MIN;

/// The `msghdr` and iovecs of one `sendmsg`: the response head and one body piece.
pub(super) struct SendMsg {
    iov: [libc::iovec; 2],
    msg: libc::msghdr,
}

impl SendMsg {
    pub(super) fn new() -> Box<SendMsg> {
        Box::new(SendMsg {
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 2],
            // SAFETY: msghdr is a plain C struct; all-zero is its documented empty value.
            msg: unsafe { std::mem::zeroed() },
        })
    }

    /// Points the iovecs and msghdr at what is left to send, at most `max_body` of the body.
    fn prepare(&mut self, out: &Outgoing, max_body: usize) {
        let mut n = 0;
        for part in out.sendable(max_body) {
            if !part.is_empty() {
                self.iov[n] = libc::iovec {
                    iov_base: part.as_ptr() as *mut libc::c_void,
                    iov_len: part.len(),
                };
                n += 1;
            }
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = n;
    }
}

impl Worker {
    pub(super) fn submit_send(&mut self, slot: u32) -> std::io::Result<()> {
        let zc = ZeroCopy {
            fixed: self.fixed.as_deref(),
            min_fixed: self.zc_min,
            min_other: self.zc_min_unregistered,
        };
        let Slot {
            fd,
            generation,
            inflight,
            zc_ok,
            zc_sent,
            msg,
            ex,
            ..
        } = &mut self.conns[slot as usize];
        let (fd, u) = (*fd, |kind| ud(kind, slot, *generation));
        let out = ex.outgoing();
        // A small body rides in the head buffer: one contiguous `send` costs less than a
        // two-iovec `sendmsg`, and the copy of a few KiB is cheaper than the difference.
        let body_left = out.body.len() - out.body_off;
        if body_left > 0 && body_left <= SMALL_BODY && out.head_off == 0 && !out.head.is_empty() {
            let body = std::mem::take(&mut out.body);
            out.head.extend_from_slice(&body[out.body_off..]);
            out.body_off = 0;
        }
        // A zero-copy send takes the whole piece; a copying one at most SEND_MAX of it.
        let zero_copy = zc.index(*zc_ok, out.parts()[1]);
        let max_body = match zero_copy {
            Some(_) => usize::MAX,
            None => SEND_MAX,
        };
        if out.body.is_empty() || out.head_off == out.head.len() {
            let part: &[u8] = if out.body.is_empty() {
                &out.head[out.head_off..]
            } else {
                out.sendable(max_body)[1]
            };
            if !part.is_empty() && zc.index(*zc_ok, part).is_none() {
                *inflight += 1;
                self.stats.sends.fetch_add(1, Ordering::Relaxed);
                // SAFETY: `part` points into the exchange's response (head Vec or body
                // Bytes), which it leaves alone until the send completes.
                return unsafe {
                    self.ring
                        .send(fd, part.as_ptr(), part.len() as u32, u(SEND))
                };
            }
        }
        msg.prepare(out, max_body);
        *inflight += 1;
        let body = out.sendable(max_body)[1];
        if let Some(fixed) = zero_copy {
            *zc_sent = Some(0);
            if let Some(index) = fixed {
                self.stats.zc_fixed.fetch_add(1, Ordering::Relaxed);
                let head = &out.head[out.head_off..];
                if !head.is_empty() {
                    *inflight += 1;
                    // SAFETY: `head` is the response's head Vec and `body` lies inside
                    // registered buffer `index`; the exchange leaves both alone until the
                    // head's completion and the body's notification.
                    return unsafe {
                        self.ring.send_head_then_fixed(
                            fd,
                            head,
                            u(SEND_HEAD),
                            body.as_ptr(),
                            body.len() as u32,
                            index,
                            u(SEND_ZC),
                        )
                    };
                }
                // SAFETY: `body` lies inside registered buffer `index` (checked by the arena)
                // and is left alone by the exchange until the notification.
                return unsafe {
                    self.ring
                        .send_zc_fixed(fd, body.as_ptr(), body.len() as u32, index, u(SEND_ZC))
                };
            }
            // SAFETY: as for `sendmsg` below; in addition the response and the msghdr are
            // not touched until the notification completion (`on_send_zc`).
            return unsafe { self.ring.sendmsg_zc(fd, &msg.msg, u(SEND_ZC)) };
        }
        self.stats.sends.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the msghdr and iovecs live in the slot's boxed SendMsg and point into the
        // exchange's response (head Vec and body Bytes), none of which change until the send
        // completes.
        unsafe { self.ring.sendmsg(fd, &msg.msg, u(SEND)) }
    }

    pub(super) fn on_send(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        if res < 0 {
            self.close(slot);
            return Ok(());
        }
        self.stats.bytes.fetch_add(res as u64, Ordering::Relaxed);
        let a = self.with_ex(slot, |ex, cx| ex.on_sent(cx, res as usize));
        self.act(slot, a)
    }

    /// The head sent ahead of a linked fixed-buffer body: only account for it; the body's
    /// completions drive the connection. A failed or short head cancels the body, whose
    /// completion then closes the connection.
    pub(super) fn on_send_head(&mut self, slot: u32, res: i32) -> std::io::Result<()> {
        if res < 0 {
            return Ok(());
        }
        if self.conns[slot as usize].ex.on_head_sent(res as usize) {
            self.stats.bytes.fetch_add(res as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(super) fn on_send_zc(&mut self, slot: u32, res: i32, flags: u32) -> std::io::Result<()> {
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

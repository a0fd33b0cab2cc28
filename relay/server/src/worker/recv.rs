//! Receiving: a connection's multishot receive into the provided buffers (its bytes copied
//! to the exchange, the buffer given back at once), what the exchange makes of each
//! completion (keep, re-arm, pause, poll), the worker's bound on input held beyond receive
//! buffers (the longest holder cut first), and single receives into the exchange's own
//! buffer (paused connections, kernels without provided-buffer rings).

use super::{CANCEL, RECV, RECV_MULTI, Worker, ud};
use crate::exchange::{Input, Received};
use std::sync::atomic::Ordering;

impl Worker {
    /// Arms the connection's multishot receive (bytes land in the provided buffers).
    pub(super) fn arm_multishot(&mut self, slot: u32) -> std::io::Result<()> {
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
    pub(super) fn on_recv_multi(&mut self, slot: u32, res: i32, flags: u32) -> std::io::Result<()> {
        let more = io_uring::cqueue::more(flags);
        let bid = io_uring::cqueue::buffer_select(flags);
        if let Some(bid) = bid {
            if res > 0 && !self.conns[slot as usize].ex.is_closed() {
                self.give_input(slot, bid, res as usize);
            }
            if let Some(br) = self.bufring.as_mut() {
                br.recycle(bid);
            }
        }
        let c = &mut self.conns[slot as usize];
        if !more {
            c.inflight -= 1;
            c.multishot = false;
        }
        if c.ex.is_closed() {
            self.maybe_free(slot);
            return Ok(());
        }
        match c.ex.on_recv_result(res, more) {
            Received::Close => {
                if c.ex.flooded() {
                    self.stats.floods_cut.fetch_add(1, Ordering::Relaxed);
                }
                self.close(slot);
                Ok(())
            }
            Received::Keep { rearm } => match rearm {
                true => self.arm_multishot(slot),
                false => Ok(()),
            },
            Received::Pause => {
                self.stats.reads_paused.fetch_add(1, Ordering::Relaxed);
                // The multishot receive's last completion (ECANCELED) comes back to the
                // exchange, which asks for input again when it has used what it holds.
                let target = ud(RECV_MULTI, slot, c.generation);
                self.ring.cancel(target, ud(CANCEL, 0, 0))
            }
            Received::Poll { rearm } => {
                if rearm {
                    self.arm_multishot(slot)?;
                }
                let a = self.with_ex(slot, |ex, cx| ex.poll(cx));
                self.act(slot, a)
            }
        }
    }

    /// Hands a provided buffer's bytes to the connection's exchange. When they would take
    /// the worker past its bound on input held beyond receive buffers, the connection that
    /// has held such input longest is cut to make room (a client that sent far ahead and
    /// does not read its answers), and they are given again; the longest holder being this
    /// connection, or room not coming, it is cut itself.
    fn give_input(&mut self, slot: u32, bid: u16, len: usize) {
        for attempt in 0..2 {
            let Some(br) = self.bufring.as_ref() else {
                return;
            };
            let c = &mut self.conns[slot as usize];
            match c.ex.on_input(self.now, br.buf(bid, len)) {
                Input::Kept => return,
                Input::Holding => {
                    let holder = (slot, c.generation);
                    self.hold(holder);
                    return;
                }
                Input::NoRoom if attempt == 0 => self.make_room(slot),
                Input::NoRoom => c.ex.on_no_room(),
            }
        }
    }

    /// Remembers that a connection began holding input beyond its receive buffer.
    fn hold(&mut self, holder: (u32, u32)) {
        if self.holders.len() >= 2 * self.conns.len().max(64) {
            // Entries of connections that closed or caught up since.
            let conns = &self.conns;
            self.holders.retain(|&(s, g)| {
                conns
                    .get(s as usize)
                    .is_some_and(|c| c.generation == g && c.fd >= 0 && c.ex.holds_overflow())
            });
        }
        self.holders.push_back(holder);
    }

    /// Cuts the connection that has held input beyond its receive buffer longest, unless it
    /// is `asking` (which is then cut for asking more).
    fn make_room(&mut self, asking: u32) {
        while let Some((s, g)) = self.holders.pop_front() {
            let Some(c) = self.conns.get(s as usize) else {
                continue;
            };
            if c.generation != g || c.fd < 0 || c.ex.is_closed() || !c.ex.holds_overflow() {
                continue;
            }
            if s == asking {
                self.holders.push_front((s, g));
                return;
            }
            self.stats.floods_cut.fetch_add(1, Ordering::Relaxed);
            log::debug!("slot {s}: cut to make room for input held beyond receive buffers");
            self.close(s);
            return;
        }
    }

    /// A single receive into the exchange's receive buffer (kernels without provided
    /// buffer rings).
    pub(super) fn submit_recv(&mut self, slot: u32) -> std::io::Result<()> {
        let c = &mut self.conns[slot as usize];
        let room = c.ex.recv_room();
        let (at, len) = (room.as_mut_ptr(), room.len() as u32);
        c.inflight += 1;
        // SAFETY: the receive buffer is a boxed slice owned by the exchange, which leaves it
        // alone until the receive completes and is freed only once the slot's in-flight
        // count is 0.
        unsafe { self.ring.recv(c.fd, at, len, ud(RECV, slot, c.generation)) }
    }
}

//! Accepting: a connection from either listener (clients', or other relays' on the peer
//! listener) gets a slot, unless the worker is at `server.max_connections` or the client's
//! address is at `server.max_connections_per_client`; the multishot accept is armed again
//! when the kernel ends it. One accepted while the worker stops (its accept being
//! cancelled) is served once and closed.

use super::{ACCEPT, Slot, Worker, ud};
use crate::exchange::Exchange;
use crate::sys;
use relay_upstream::budget::Client;
use send::SendMsg;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;

use super::send;

impl Worker {
    /// A connection accepted on listener `index`.
    pub(super) fn on_accept(&mut self, index: usize, res: i32, flags: u32) -> std::io::Result<()> {
        let Some(l) = self.listeners.get(index) else {
            log::error!("an accept for listener {index}, which this worker does not have");
            return Ok(());
        };
        let peer = l.peer;
        if !io_uring::cqueue::more(flags) {
            // (EINVAL: the socket is not listening; armed again now, it would fail again at
            // once, in a loop.)
            let stop = self.draining.is_some()
                || matches!(
                    -res,
                    libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EINVAL
                );
            let fd = l.socket.as_raw_fd();
            if stop {
                // Draining; or out of descriptors or memory: the connection waits in the
                // backlog, and arming again now would fail again at once. Armed again on
                // the next tick.
                self.listeners[index].accepting = false;
            } else {
                // The kernel ended the multishot: arm it again.
                self.ring.accept_multi(fd, ud(ACCEPT, index as u32, 0))?;
            }
        }
        if res < 0 {
            if res != -libc::ECANCELED {
                log::warn!("accept: {}", std::io::Error::from_raw_os_error(-res));
            }
            return Ok(());
        }
        let fd = res as RawFd;
        if self.live >= self.max_connections {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            sys::close(fd);
            return Ok(());
        }
        // The client's address, read once: what its connections and budgets count against.
        let Some(client) = sys::peer_addr(fd).map(|a| Client::of(a.ip())) else {
            // Gone as it was accepted.
            sys::close(fd);
            return Ok(());
        };
        if !self.shared.clients.open(client, self.max_per_client) {
            self.stats
                .refused_per_client
                .fetch_add(1, Ordering::Relaxed);
            log::debug!("{client}: at server.max_connections_per_client; refused");
            sys::close(fd);
            return Ok(());
        }
        sys::set_nodelay(fd);
        let rbuf_len = self.shared.config.server.limits.max_head_bytes + 4096;
        let slot = match self.free.pop().map(|std::cmp::Reverse(s)| s) {
            Some(s) => {
                let c = &mut self.conns[s as usize];
                c.generation = c.generation.wrapping_add(1);
                c.fd = fd;
                c.inflight = 0;
                c.multishot = false;
                c.zc_ok = true;
                c.zc_sent = None;
                c.client = client;
                c.counted = true;
                c.ex.reset(self.now + self.timeouts.idle);
                c.ex.set_peer(peer);
                s
            }
            None => {
                self.conns.push(Slot {
                    fd,
                    // Not 0: a slot given back and made again must not match what was
                    // queued for the old one (`waiting`).
                    generation: self.stats.accepted.load(Ordering::Relaxed) as u32,
                    inflight: 0,
                    multishot: false,
                    zc_ok: true,
                    zc_sent: None,
                    msg: SendMsg::new(),
                    client,
                    counted: true,
                    ex: Exchange::new(
                        rbuf_len,
                        self.now + self.timeouts.idle,
                        self.stats.overflow.clone(),
                    ),
                });
                let s = self.conns.len() - 1;
                self.conns[s].ex.set_peer(peer);
                s as u32
            }
        };
        if self.draining.is_some() {
            // Accepted as the accept was being cancelled (a stop, a hand-over): served, then
            // closed, rather than refused.
            self.conns[slot as usize]
                .ex
                .drain_fresh(self.now + super::FRESH_GRACE);
        }
        self.live += 1;
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        if self.bufring.is_some() {
            return self.arm_multishot(slot);
        }
        self.submit_recv(slot)
    }
}

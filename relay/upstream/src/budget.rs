//! The bound on bytes held for pass-throughs (`origin.pass_buffer_bytes`): a passed-through
//! body stays in memory while its client reads it, and any client can make a GET pass
//! through (with `Authorization`), so this is what bounds their memory. No client address
//! holds more than its share of it (`origin.pass_buffer_per_client`): a few clients that
//! trickle uploads or stop reading cannot take it from everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A client as relay tells clients apart: by address, an IPv4 address or an IPv6 /64 (the
/// block one host usually holds; an IPv4-mapped IPv6 address is its IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    V4([u8; 4]),
    /// The first 64 bits of the address.
    V6([u8; 8]),
}

impl Client {
    /// The client `ip` belongs to.
    pub fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V4(a) => Client::V4(a.octets()),
            IpAddr::V6(a) => {
                let mut net = [0; 8];
                net.copy_from_slice(&a.octets()[..8]);
                Client::V6(net)
            }
        }
    }

    /// A shard index for maps keyed by client (the low bits of a cheap mix).
    pub fn shard(&self, shards: usize) -> usize {
        let x = match *self {
            Client::V4(a) => u64::from(u32::from_be_bytes(a)),
            Client::V6(n) => u64::from_be_bytes(n),
        };
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % shards.max(1)
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Client::V4(a) => write!(f, "{}", std::net::Ipv4Addr::from(a)),
            Client::V6(n) => {
                let mut a = [0; 16];
                a[..8].copy_from_slice(&n);
                write!(f, "{}/64", std::net::Ipv6Addr::from(a))
            }
        }
    }
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the pass-through budget is full")]
    Full,
    #[error("the client holds its share of the pass-through budget")]
    Share,
}

/// Shards of the per-client map (a reservation locks one).
const SHARDS: usize = 16;

/// A process-wide bound on bytes held for one purpose (passed-through bodies, which stay
/// in memory while their client reads them): reserve before holding, release on drop. Each
/// client's part is counted too, and bounded by the share.
#[derive(Debug)]
pub struct Budget {
    held: AtomicU64,
    limit: u64,
    /// The most one client may hold (`u64::MAX`: no bound).
    share: AtomicU64,
    /// Bytes held per client (only clients holding a reservation have an entry).
    clients: [Mutex<HashMap<Client, u64>>; SHARDS],
}

/// Bytes reserved from a [`Budget`] for a client; given back when dropped (with the body
/// holding them).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    client: Client,
    bytes: u64,
}

impl Budget {
    /// A budget of `limit` bytes, of which one client may hold `share` (None: all).
    pub fn new(limit: u64, share: Option<u64>) -> Arc<Budget> {
        let b = Budget {
            held: AtomicU64::new(0),
            limit,
            share: AtomicU64::new(u64::MAX),
            clients: std::array::from_fn(|_| Mutex::default()),
        };
        b.set_share(share);
        Arc::new(b)
    }

    /// Sets the most one client may hold (None: no bound), from now on: never less than one
    /// response window and its upstream read buffer ([`crate::PASS_WINDOW`] +
    /// [`crate::PASS_READ_AHEAD`], or the whole budget when that is smaller),
    /// so that any client can stream a response. What clients hold already stays.
    pub fn set_share(&self, share: Option<u64>) {
        let floor = self
            .limit
            .min((crate::PASS_WINDOW + crate::PASS_READ_AHEAD) as u64);
        let bytes = share.map_or(u64::MAX, |s| s.max(floor));
        self.share.store(bytes, Ordering::Relaxed);
    }

    /// The most one client may hold now (`u64::MAX`: no bound).
    pub fn share(&self) -> u64 {
        self.share.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` for `client`: refused when that would pass the limit, or take the
    /// client past its share.
    pub fn reserve(self: &Arc<Self>, client: Client, bytes: u64) -> Result<Reservation, Refused> {
        self.take(client, bytes)?;
        Ok(Reservation {
            budget: self.clone(),
            client,
            bytes,
        })
    }

    /// Counts `bytes` more for `client`, or refuses (nothing counted).
    fn take(&self, client: Client, bytes: u64) -> Result<(), Refused> {
        let mut clients = self.clients(client);
        let mine = clients.get(&client).copied().unwrap_or(0);
        if mine.saturating_add(bytes) > self.share() {
            return Err(Refused::Share);
        }
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let next = held
                .checked_add(bytes)
                .filter(|&n| n <= self.limit)
                .ok_or(Refused::Full)?;
            match self
                .held
                .compare_exchange_weak(held, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => held = now,
            }
        }
        *clients.entry(client).or_insert(0) += bytes;
        Ok(())
    }

    /// Gives back `bytes` of `client`'s.
    fn give_back(&self, client: Client, bytes: u64) {
        let mut clients = self.clients(client);
        if let Some(mine) = clients.get_mut(&client) {
            *mine = mine.saturating_sub(bytes);
            if *mine == 0 {
                clients.remove(&client);
            }
        }
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn clients(&self, client: Client) -> MutexGuard<'_, HashMap<Client, u64>> {
        self.clients[client.shard(SHARDS)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes reserved now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Bytes `client` holds now.
    pub fn held_by(&self, client: Client) -> u64 {
        self.clients(client).get(&client).copied().unwrap_or(0)
    }

    /// Clients holding some of the budget now.
    pub fn clients_holding(&self) -> usize {
        self.clients
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// The most that may be reserved at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Reservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation by `bytes`, or refuses (unchanged) past the limit or the
    /// client's share.
    pub fn grow(&mut self, bytes: u64) -> Result<(), Refused> {
        self.budget.take(self.client, bytes)?;
        self.bytes += bytes;
        Ok(())
    }

    /// Gives back what this reservation holds beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.give_back(self.client, self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.client, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_cache::ChunkKey;
    use relay_cache::fill::Fill;

    const A: Client = Client::V4([192, 0, 2, 1]);
    const B: Client = Client::V4([192, 0, 2, 2]);

    #[test]
    fn a_budget_is_reserved_grown_and_given_back() {
        let b = Budget::new(100, None);
        let r = b.reserve(A, 60).unwrap();
        assert_eq!(b.reserve(A, 41).unwrap_err(), Refused::Full);
        let mut s = b.reserve(A, 40).unwrap();
        assert_eq!(b.held(), 100);
        assert_eq!(s.grow(1), Err(Refused::Full));
        drop(r);
        assert!(s.grow(60).is_ok());
        assert_eq!(b.held(), 100);
        assert_eq!(b.reserve(B, u64::MAX).unwrap_err(), Refused::Full);
        // The fill holding a reservation gives it back when its last reader drops it.
        let (fill, w) = Fill::holding(
            ChunkKey {
                object: Arc::from("p"),
                version: 0,
                index: 0,
            },
            4,
            Box::new(s),
        );
        drop(w);
        assert_eq!(b.held(), 100);
        drop(fill);
        assert_eq!(b.held(), 0);
        assert_eq!(b.clients_holding(), 0);
    }

    /// One client cannot hold more than its share, whatever room is left: its own new
    /// reservations (and growth) are refused while another client's go on; what it gives
    /// back it may take again.
    #[test]
    fn no_client_holds_more_than_its_share() {
        let mib = 1 << 20;
        let b = Budget::new(16 * mib, Some(4 * mib));
        assert_eq!(b.share(), 4 * mib);
        let r1 = b.reserve(A, 3 * mib).unwrap();
        assert_eq!(b.reserve(A, 2 * mib).unwrap_err(), Refused::Share);
        let mut r2 = b.reserve(A, mib).unwrap();
        assert_eq!(r2.grow(1), Err(Refused::Share));
        assert_eq!((b.held_by(A), b.held()), (4 * mib, 4 * mib));
        // Another client has its own share.
        let other = b.reserve(B, 4 * mib).unwrap();
        assert_eq!(b.held_by(B), 4 * mib);
        assert_eq!(b.clients_holding(), 2);
        drop(r1);
        assert!(r2.grow(3 * mib).is_ok());
        r2.shrink_to(mib);
        assert_eq!(b.held_by(A), mib);
        drop((r2, other));
        assert_eq!((b.held(), b.clients_holding()), (0, 0));
        // A share is never less than one response window (nor more than the budget).
        let small = Budget::new(16 * mib, Some(64 << 10));
        assert_eq!(
            small.share(),
            (crate::PASS_WINDOW + crate::PASS_READ_AHEAD) as u64
        );
        let tiny = Budget::new(256 << 10, Some(64 << 10));
        assert_eq!(tiny.share(), 256 << 10);
        assert!(tiny.reserve(A, 256 << 10).is_ok());
        // Off: one client may take everything; set live.
        b.set_share(None);
        let all = b.reserve(A, 16 * mib).unwrap();
        b.set_share(Some(2 * mib));
        assert_eq!(b.reserve(A, 1).unwrap_err(), Refused::Share);
        drop(all);
        assert!(b.reserve(A, 2 * mib).is_ok());
    }

    #[test]
    fn clients_are_addresses_and_ipv6_slash_64s() {
        let c = |s: &str| Client::of(s.parse().unwrap());
        assert_eq!(c("192.0.2.1"), A);
        assert_eq!(c("::ffff:192.0.2.1"), A, "IPv4-mapped is the IPv4 address");
        assert_ne!(c("192.0.2.1"), c("192.0.2.2"));
        assert_eq!(c("2001:db8:1:2::1"), c("2001:db8:1:2:ffff::9"));
        assert_ne!(c("2001:db8:1:2::1"), c("2001:db8:1:3::1"));
        assert_eq!(c("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(A.to_string(), "192.0.2.1");
    }

    /// Threads reserving, growing and dropping for a few clients at once: no client is
    /// ever counted past its share nor the budget past its limit, and everything comes back.
    #[test]
    fn concurrent_reservations_keep_both_bounds() {
        const K: u64 = 64 << 10;
        let b = Budget::new(160 * K, Some(48 * K));
        assert_eq!(b.share(), 48 * K, "above the window floor");
        let clients: Vec<Client> = (0..4u8).map(|i| Client::V4([10, 0, 0, i])).collect();
        let threads: Vec<_> = (0..8usize)
            .map(|t| {
                let (b, client) = (b.clone(), clients[t % 4]);
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..20_000u64 {
                        if let Ok(mut r) = b.reserve(client, K * (1 + (i * 7 + t as u64) % 20)) {
                            let _ = r.grow(K * (i % 5));
                            kept.push(r);
                        }
                        assert!(b.held() <= 160 * K);
                        assert!(b.held_by(client) <= 48 * K);
                        if kept.len() > 3 || i % 3 == 0 {
                            kept.clear();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((b.held(), b.clients_holding()), (0, 0));
    }
}

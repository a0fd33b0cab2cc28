//! Open connections per client address across all workers (`server.max_connections_per_client`):
//! a sharded map from client (an IPv4 address, an IPv6 /64: `relay_upstream::budget::Client`)
//! to its count, touched when a connection is accepted and when its slot is freed, never
//! per request. A worker counts a connection up at accept (or refuses it) and down exactly
//! once when it closes; a client with no connection open has no entry.

use relay_upstream::budget::Client;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Shards of the map (an accept or a close locks one).
const SHARDS: usize = 64;

/// Connections open per client.
pub struct ClientConns {
    shards: [Mutex<HashMap<Client, u32>>; SHARDS],
}

impl Default for ClientConns {
    fn default() -> Self {
        ClientConns {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl ClientConns {
    /// Counts a new connection of `client`, unless it has `limit` open already (0: no
    /// limit): false, and nothing counted, when it is refused.
    pub fn open(&self, client: Client, limit: usize) -> bool {
        let mut shard = self.shard(client);
        let n = shard.get(&client).map_or(0, |&n| n as usize);
        if limit > 0 && n >= limit {
            return false;
        }
        *shard.entry(client).or_insert(0) += 1;
        true
    }

    /// A connection `open` counted for `client` has closed.
    pub fn close(&self, client: Client) {
        let mut shard = self.shard(client);
        if let Some(n) = shard.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&client);
            }
        } else {
            debug_assert!(false, "a connection of {client} closed twice");
        }
    }

    /// Connections of `client` open now.
    pub fn of(&self, client: Client) -> usize {
        self.shard(client).get(&client).map_or(0, |&n| n as usize)
    }

    /// Clients with a connection open now.
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn shard(&self, client: Client) -> MutexGuard<'_, HashMap<Client, u32>> {
        self.shards[client.shard(SHARDS)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const A: Client = Client::V4([192, 0, 2, 1]);
    const B: Client = Client::V4([192, 0, 2, 2]);

    #[test]
    fn a_client_past_its_limit_is_refused_and_others_are_not() {
        let c = ClientConns::default();
        for _ in 0..3 {
            assert!(c.open(A, 3));
        }
        assert!(!c.open(A, 3), "a fourth");
        assert_eq!(c.of(A), 3, "a refusal counts nothing");
        assert!(c.open(B, 3));
        c.close(A);
        assert!(c.open(A, 3), "room again after a close");
        // A lowered limit: those open stay, new ones wait until fewer are open.
        assert!(!c.open(A, 2));
        c.close(A);
        c.close(A);
        assert!(c.open(A, 2));
        // 0: no limit.
        for _ in 0..100 {
            assert!(c.open(B, 0));
        }
        assert_eq!(c.clients(), 2);
        for _ in 0..2 {
            c.close(A);
        }
        for _ in 0..101 {
            c.close(B);
        }
        assert_eq!((c.of(A), c.of(B), c.clients()), (0, 0, 0));
    }

    /// Threads as workers, accepting and closing connections of a few clients at once: no
    /// client is ever counted past its limit, and once every connection has closed the map
    /// is empty (each counted down exactly once).
    #[test]
    fn concurrent_opens_and_closes_keep_the_limit_and_end_empty() {
        let c = Arc::new(ClientConns::default());
        let clients: Vec<Client> = (0..5u8).map(|i| Client::V4([10, 0, 0, i])).collect();
        let threads: Vec<_> = (0..8usize)
            .map(|t| {
                let (c, clients) = (c.clone(), clients.clone());
                std::thread::spawn(move || {
                    let mut open = Vec::new();
                    let mut refused = 0u32;
                    for i in 0..20_000usize {
                        let who = clients[(i * 7 + t) % clients.len()];
                        if c.open(who, 4) {
                            open.push(who);
                        } else {
                            refused += 1;
                        }
                        assert!(c.of(who) <= 4);
                        if open.len() > 6 || i % 4 == 0 {
                            for who in open.drain(..) {
                                c.close(who);
                            }
                        }
                    }
                    for who in open {
                        c.close(who);
                    }
                    refused
                })
            })
            .collect();
        let refused: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(refused > 0, "the limit was never reached");
        assert_eq!(c.clients(), 0);
    }
}

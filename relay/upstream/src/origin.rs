//! One HTTP origin as the miss path sees it: its pool of servers with their passive health
//! ([`Server`], [`Health`]), its fetch slots and whole slots, its TLS and caching policy,
//! and the objects it ignores Range for ([`Origin`]).

use crate::{ranges, tls};
use relay_config::HttpOrigin;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Passive health of one server of an origin: `down_after_failures` requests in a row that
/// could not reach it (refused or timed out connecting, a TLS handshake refused; a request
/// counts once per server however many attempts it made) mark it down for `down_ms`. A slow
/// URL, a connection closed unanswered, a garbage answer or a 5xx fails its own request
/// only; any response head clears the count (`fetch::request`).
#[derive(Default)]
pub struct Health {
    /// Requests in a row that could not reach the server.
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the server is considered down.
    down_until: AtomicU64,
    /// The active health check's verdict (`health_check`): out of the pool.
    checked_down: std::sync::atomic::AtomicBool,
    /// Health checks in a row that failed, or passed.
    checks_failed: AtomicU32,
    checks_passed: AtomicU32,
}

/// Server `server`'s bit in a set of servers (at most `MAX_ORIGIN_SERVERS`, 64).
pub fn server_bit(server: usize) -> u64 {
    1 << (server % 64)
}

impl Health {
    /// As new: a server whose address has just come (or gone).
    pub(crate) fn reset(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.down_until.store(0, Ordering::Relaxed);
        self.checked_down.store(false, Ordering::Relaxed);
        self.checks_failed.store(0, Ordering::Relaxed);
        self.checks_passed.store(0, Ordering::Relaxed);
    }
}

/// One server of an origin's pool: an address of one of its `servers` entries, and its
/// health. An entry given by address has one; one given by a DNS name has a few, filled
/// and emptied as its records change ([`Origin::set_addresses`]), so that a server's index
/// (what a request's retries avoid, what its health is kept under) never moves.
pub struct Server {
    /// Its entry in `config.servers`.
    pub entry: usize,
    /// None: a name's slot without an address now (never picked).
    address: std::sync::Mutex<Option<SocketAddr>>,
    health: Health,
}

impl Server {
    pub(crate) fn new(entry: usize, address: Option<SocketAddr>) -> Server {
        Server {
            entry,
            address: std::sync::Mutex::new(address),
            health: Health::default(),
        }
    }

    pub fn address(&self) -> Option<SocketAddr> {
        *self.address.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_address(&self, address: Option<SocketAddr>) {
        *self.address.lock().unwrap_or_else(|e| e.into_inner()) = address;
        self.health.reset();
    }
}

/// The slots a DNS name has for its addresses: its share of [`MAX_ORIGIN_SERVERS`] after the
/// entries given by address, at most 16 (a name with more records uses its first 16).
pub(crate) const MAX_ADDRESSES_PER_NAME: usize = 16;

/// An origin's servers (`servers`, or the URL's host; a DNS name's addresses each a server),
/// their health, and the turn of the weighted round robin that picks one for each attempt
/// ([`Origin::pick`]).
pub struct Origin {
    pub config: HttpOrigin,
    /// The pool: a slot per address (see [`Server`]).
    pub servers: Vec<Server>,
    turn: AtomicU64,
    /// Cache fetches (head fetches and chunk fills) to this origin under way at once, at
    /// most `max_connections`: each holds a connection and its read buffer (up to
    /// [`crate::UPSTREAM_READ_BUFFER`] and the frame its fetch has not written yet) for as long as
    /// its body streams, and misses of distinct objects would otherwise open as many as
    /// they are. Pass-throughs are bounded by the pass budget instead, which counts their
    /// connection's buffers ([`crate::PASS_READ_AHEAD`]).
    pub fetches: Arc<tokio::sync::Semaphore>,
    /// TLS for an `https://` origin.
    pub tls: Option<tls::Tls>,
    /// The caching policy its answers are read under: the cache's, with this origin's
    /// operator terms (`cache_` keys).
    pub policy: Arc<relay_cache::policy::PolicyConfig>,
    /// Its objects it answered a Range request for with the whole body.
    pub range_ignored: ranges::ObjectSet,
    /// Its objects whose last answer had no strong validator (a body from one answer): a
    /// head fetch asks for them whole at once, not for a range first (whose answer it would
    /// drop, asking again without Range).
    pub unvalidated: ranges::ObjectSet,
    /// Its objects it answers Range requests for with ranges capped so short that a chunk
    /// took more answers than a chunk fetch asks for (`fetch::chunk::MAX_RESUMES`): asked
    /// for whole at once, and the whole answer read as a body from one answer, never a
    /// chunk by Range.
    pub capped: ranges::ObjectSet,
    /// Whole fetches ([`feed::Feed::whole`]) that wait for their clients, holding a fetch
    /// slot while they read: at most half of `max_connections` ([`Origin::whole_slot`]).
    pub(crate) whole_fetches: Arc<AtomicU64>,
    /// Fetches waiting for one of [`Origin::fetches`] now: a whole fetch waiting for its
    /// client lets its slot go then.
    pub slot_waiters: AtomicU64,
    /// The bytes it sent past the end of its answers (`crate::stray`).
    pub strays: Arc<crate::stray::Strays>,
}

/// One of an origin's whole slots, given back when dropped.
pub struct WholeSlot(Arc<AtomicU64>);

impl Drop for WholeSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Origin {
    /// An `http://` origin (any TLS settings left out).
    pub fn new(config: HttpOrigin) -> Origin {
        let fetches = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
        let literal = config
            .servers
            .iter()
            .filter(|s| s.address().is_some())
            .count();
        let names = config.servers.len() - literal;
        let per_name = (relay_config::MAX_ORIGIN_SERVERS.saturating_sub(literal))
            .checked_div(names)
            .unwrap_or(0)
            .clamp(1, MAX_ADDRESSES_PER_NAME);
        let mut servers = Vec::new();
        for (entry, s) in config.servers.iter().enumerate() {
            match s.address() {
                Some(a) => servers.push(Server::new(entry, Some(a))),
                None => servers.extend((0..per_name).map(|_| Server::new(entry, None))),
            }
        }
        Origin {
            servers,
            turn: AtomicU64::new(0),
            config,
            fetches,
            tls: None,
            policy: Arc::default(),
            range_ignored: Default::default(),
            unvalidated: Default::default(),
            capped: Default::default(),
            whole_fetches: Arc::default(),
            slot_waiters: AtomicU64::new(0),
            strays: Arc::default(),
        }
    }

    /// A whole slot: leave for a whole fetch to wait for its client as long as it reads,
    /// holding its connection and fetch slot. At most half of `max_connections` (one at
    /// least) are given, so clients reading slowly from an origin that ignores Range leave
    /// the other half to every other miss; a fetch that gets none pauses out as any
    /// streamed fetch does (its client's later chunks are fetched one answer each).
    pub fn whole_slot(&self) -> Option<WholeSlot> {
        let most = (self.config.max_connections as u64 / 2).max(1);
        self.whole_fetches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .ok()
            .map(|_| WholeSlot(self.whole_fetches.clone()))
    }

    /// Whether a fetch waits for one of the origin's fetch slots now.
    pub fn slots_awaited(&self) -> bool {
        self.slot_waiters.load(Ordering::Acquire) > 0
    }

    /// An origin with its TLS, when its URL is `https://` (roots read now).
    pub fn with_tls(config: HttpOrigin) -> Result<Origin, tls::TlsError> {
        let tls = config.tls.as_ref().map(tls::Tls::new).transpose()?;
        if config.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            log::warn!(
                "origin https://{}: tls_insecure_skip_verify: its certificate is not verified; \
                 anyone on the path to it can answer for it, into the cache",
                config.authority
            );
        }
        Ok(Origin {
            tls,
            ..Origin::new(config)
        })
    }

    /// The URI of `path` on server `server`: its address, under the origin's scheme (the
    /// `Host` field and, for TLS, the name verified are set apart).
    pub fn uri(&self, server: usize, path: &str) -> String {
        let scheme = match self.tls {
            Some(_) => "https",
            None => "http",
        };
        let uri = |path: &str| match self.address(server) {
            Some(a) => format!("{scheme}://{a}{path}"),
            None => format!("{scheme}://{path}"),
        };
        // As the client sent it, unless no request could be made of it (an origin may
        // sign or compare its targets byte for byte).
        let raw = uri(path);
        match raw.parse::<http::Uri>() {
            Ok(_) => raw,
            Err(_) => uri(&upstream_target(path)),
        }
    }

    /// Server `server`'s address now (None: a name's slot without one).
    pub fn address(&self, server: usize) -> Option<SocketAddr> {
        self.servers.get(server).and_then(Server::address)
    }

    /// Entry `entry`'s addresses now, sorted.
    pub fn addresses(&self, entry: usize) -> Vec<SocketAddr> {
        let mut a: Vec<SocketAddr> = self
            .servers
            .iter()
            .filter(|s| s.entry == entry)
            .filter_map(Server::address)
            .collect();
        a.sort();
        a
    }

    /// Entry `entry` (a DNS name) resolves to `addresses` now: those it had keep their
    /// slot and health, those gone leave theirs, new ones take free slots (as many as
    /// there are; the rest are left out, and said so). Logged when anything changed.
    pub fn set_addresses(&self, entry: usize, addresses: &[SocketAddr]) {
        let before = self.addresses(entry);
        if before == addresses {
            return;
        }
        let mine = || self.servers.iter().filter(|s| s.entry == entry);
        for s in mine() {
            if s.address().is_some_and(|a| !addresses.contains(&a)) {
                s.set_address(None);
            }
        }
        let mut left_out = Vec::new();
        for a in addresses.iter().filter(|a| !before.contains(a)) {
            match mine().find(|s| s.address().is_none()) {
                Some(free) => free.set_address(Some(*a)),
                None => left_out.push(*a),
            }
        }
        let name = self
            .config
            .servers
            .get(entry)
            .map_or("?", |s| s.name.as_str());
        log::info!(
            "origin {}: {name} resolves to {:?} (was {before:?}){}",
            self.config.authority,
            self.addresses(entry),
            match left_out.is_empty() {
                true => String::new(),
                false => format!(
                    "; {left_out:?} left out: a name has {MAX_ADDRESSES_PER_NAME} servers at most"
                ),
            }
        );
    }

    pub(crate) fn now_ms(epoch: Instant) -> u64 {
        epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn server_down(&self, server: usize, epoch: Instant) -> bool {
        self.servers.get(server).is_none_or(|s| {
            let h = &s.health;
            h.checked_down.load(Ordering::Relaxed)
                || h.down_until.load(Ordering::Relaxed) > Self::now_ms(epoch)
                || s.address().is_none()
        })
    }

    /// Server `server`'s health check passed or failed: `fall` failures in a row take it
    /// out of the pool, `rise` passes in a row bring it back (logged either way).
    pub(crate) fn checked(&self, server: usize, passed: bool, why: &str) {
        let h = self.servers.get(server).map(|s| &s.health);
        let (Some(h), Some(check)) = (h, &self.config.health_check) else {
            return;
        };
        if passed {
            h.checks_failed.store(0, Ordering::Relaxed);
            let n = h.checks_passed.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= check.rise && h.checked_down.swap(false, Ordering::Relaxed) {
                log::warn!(
                    "origin {}: server {} passes its health check again ({n} in a row): back \
                     in the pool",
                    self.config.authority,
                    self.server_name(server)
                );
            }
        } else {
            h.checks_passed.store(0, Ordering::Relaxed);
            let n = h.checks_failed.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= check.fall && !h.checked_down.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "origin {}: server {} fails its health check ({why}; {n} in a row): out \
                     of the pool",
                    self.config.authority,
                    self.server_name(server)
                );
            }
        }
    }

    /// Each server with an address: its name and whether it is up now (for `/metrics`).
    pub fn servers_up(&self, epoch: Instant) -> Vec<(String, bool)> {
        (0..self.servers.len())
            .filter(|&s| self.address(s).is_some())
            .map(|s| (self.server_name(s), !self.server_down(s, epoch)))
            .collect()
    }

    /// Every server is down (or no name has an address): the origin is not asked.
    pub fn is_down(&self, epoch: Instant) -> bool {
        (0..self.servers.len()).all(|s| self.server_down(s, epoch))
    }

    /// The server the next attempt goes to: by weighted round robin among the servers up
    /// that are not backups, else among the backups up; those in `avoid` (a bit each: the
    /// ones this request failed on) only when no other is up. None when every server is down.
    pub fn pick(&self, epoch: Instant, avoid: u64) -> Option<usize> {
        self.pick_other(epoch, avoid)
            .or_else(|| self.pick_among(epoch, |_| true))
    }

    /// [`Origin::pick`] among the servers not in `avoid` only.
    pub fn pick_other(&self, epoch: Instant, avoid: u64) -> Option<usize> {
        self.pick_among(epoch, |i| avoid & server_bit(i) == 0)
    }

    pub(crate) fn pick_among(
        &self,
        epoch: Instant,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let entry = |i: usize| &self.config.servers[self.servers[i].entry];
        for backup in [false, true] {
            let eligible = |i: &usize| {
                entry(*i).backup == backup && !self.server_down(*i, epoch) && allowed(*i)
            };
            let total: u64 = (0..self.servers.len())
                .filter(eligible)
                .map(|i| u64::from(entry(i).weight))
                .sum();
            if total == 0 {
                continue;
            }
            let mut at = self.turn.fetch_add(1, Ordering::Relaxed) % total;
            for i in (0..self.servers.len()).filter(eligible) {
                let w = u64::from(entry(i).weight);
                if at < w {
                    return Some(i);
                }
                at -= w;
            }
        }
        None
    }

    pub(crate) fn failed(&self, server: usize, epoch: Instant) {
        let Some(h) = self.servers.get(server).map(|s| &s.health) else {
            return;
        };
        let n = h.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.config.down_after_failures {
            let until = Self::now_ms(epoch) + self.config.down_ms;
            h.down_until.store(until, Ordering::Relaxed);
            h.failures.store(0, Ordering::Relaxed);
            log::warn!(
                "origin {}: server {} marked down for {} ms after {n} failures",
                self.config.authority,
                self.server_name(server),
                self.config.down_ms
            );
        }
    }

    pub(crate) fn succeeded(&self, server: usize) {
        if let Some(s) = self.servers.get(server) {
            s.health.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Server `server` as the config names it, with its address.
    pub(crate) fn server_name(&self, server: usize) -> String {
        let entry = self.servers.get(server).map(|s| s.entry);
        match (
            entry.and_then(|e| self.config.servers.get(e)),
            self.address(server),
        ) {
            (Some(s), Some(a)) if s.name == a.to_string() => s.name.clone(),
            (Some(s), Some(a)) => format!("{} ({a})", s.name),
            (Some(s), None) => s.name.clone(),
            (None, _) => "?".to_string(),
        }
    }
}

/// A client's request target as it goes upstream when it cannot go as sent: the bytes a
/// URI may not hold (RFC 3986:
/// `"`, `<`, `>`, `` ` ``, `{`, `}`, `|`, `\`, `^`, `#`, controls and non-ASCII bytes, which
/// clients such as curl send as they are) percent-encoded, as a browser would have sent
/// them; a target without any, as it is. (Left raw, the request could not be made at all,
/// and the client got a 502 that blamed the origin.)
pub fn upstream_target(target: &str) -> std::borrow::Cow<'_, str> {
    fn allowed(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%[]".contains(&b)
    }
    if target.bytes().all(allowed) {
        return std::borrow::Cow::Borrowed(target);
    }
    let mut out = String::with_capacity(target.len() + 16);
    for b in target.bytes() {
        match allowed(b) {
            true => out.push(char::from(b)),
            false => out.push_str(&format!("%{b:02X}")),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod target_tests {
    use super::upstream_target;

    #[test]
    fn targets_a_uri_cannot_hold_are_encoded_and_others_kept() {
        for plain in ["/a/b.bin?x=1&y=%22q%22", "/", "/p;v=1/@x:y?a=b+c&d=(e)*"] {
            assert_eq!(upstream_target(plain), plain);
        }
        let cases = [
            ("/z?a=\"q\"", "/z?a=%22q%22"),
            ("/p`<x>?{a}|b\\^", "/p%60%3Cx%3E?%7Ba%7D%7Cb%5C%5E"),
            ("/caf\u{e9}", "/caf%C3%A9"),
        ];
        for (raw, sent) in cases {
            assert_eq!(upstream_target(raw), sent);
            let uri = format!("http://10.0.0.1:80{}", upstream_target(raw));
            assert!(uri.parse::<http::Uri>().is_ok(), "{uri}");
        }
    }
}

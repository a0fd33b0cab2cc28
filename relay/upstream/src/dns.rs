//! Origin servers given by DNS name (`servers = [{ address = "name:port" }]`, or the URL's
//! host): their addresses looked up through hickory-resolver, from the name servers
//! `origin.resolver` lists or else `/etc/resolv.conf`'s (with its hosts file), before the
//! upstream takes its first job and again whenever the records expire (their TTL, held
//! within `origin.dns_ttl_min_ms` and `dns_ttl_max_ms`). Each address is a server of the
//! origin's pool ([`crate::Origin::set_addresses`]): one that stays keeps its slot and its
//! health, one that goes is no longer picked, one that comes takes a free slot. A lookup
//! that fails keeps the last addresses (an origin is not emptied by a name server's
//! hiccup) and is tried again after the shortest wait.

use crate::Origin;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use relay_config::{DnsConfig, ServerHost};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver (origin.resolver, else /etc/resolv.conf): {0}")]
pub struct ResolverError(String);

/// Looks up origin server names.
pub struct Resolver {
    inner: TokioResolver,
    config: DnsConfig,
}

impl Resolver {
    /// A resolver over `config.resolver`'s name servers, or the system's when it lists none.
    /// (Built inside the upstream's runtime: hickory binds its sockets there.)
    pub fn new(config: &DnsConfig) -> Result<Resolver, ResolverError> {
        let err = |e: &dyn std::fmt::Display| ResolverError(e.to_string());
        let mut builder = match config.resolver.is_empty() {
            true => TokioResolver::builder_tokio().map_err(|e| err(&e))?,
            false => {
                let servers = config
                    .resolver
                    .iter()
                    .map(|a| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = a.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = a.port();
                        NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                )
            }
        };
        let opts = builder.options_mut();
        // (`/etc/hosts` with resolv.conf's servers, as getaddrinfo would; not with the
        // operator's own.)
        if !config.resolver.is_empty() {
            opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        }
        opts.timeout = Duration::from_millis(config.timeout_ms);
        opts.attempts = 1;
        // The records' own TTL, within the operator's bounds, is how long an answer is
        // kept, here as in the resolver's cache (so a lookup at expiry asks the server).
        opts.positive_min_ttl = Some(Duration::from_millis(config.ttl_min_ms));
        opts.positive_max_ttl = Some(Duration::from_millis(config.ttl_max_ms));
        opts.negative_max_ttl = Some(Duration::from_millis(config.ttl_min_ms));
        let inner = builder.build().map_err(|e| err(&e))?;
        Ok(Resolver {
            inner,
            config: config.clone(),
        })
    }

    /// `name`'s addresses with `port`, sorted, and how long they hold (the records' TTL
    /// within the bounds).
    pub async fn lookup(
        &self,
        name: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, Duration), String> {
        // (A name as written is absolute: no search domains tried after it.)
        let fqdn = format!("{name}.");
        let found = tokio::time::timeout(
            Duration::from_millis(self.config.timeout_ms.saturating_mul(2)),
            self.inner.lookup_ip(fqdn.as_str()),
        )
        .await
        .map_err(|_| format!("no answer within {} ms", self.config.timeout_ms))?
        .map_err(|e| e.to_string())?;
        let mut addresses: Vec<SocketAddr> =
            found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err("no address records".to_string());
        }
        Ok((addresses, self.valid_for(found.valid_until())))
    }

    fn valid_for(&self, until: Instant) -> Duration {
        let min = Duration::from_millis(self.config.ttl_min_ms);
        let max = Duration::from_millis(self.config.ttl_max_ms);
        until
            .saturating_duration_since(Instant::now())
            .clamp(min, max)
    }

    /// The wait after `failures` lookups in a row failed: from `ttl_min_ms`, doubling, at
    /// most 30 s (or `ttl_max_ms` when shorter), so a dead name server is not asked (and
    /// logged about) ever faster.
    fn retry_after(&self, failures: u32) -> Duration {
        let min = Duration::from_millis(self.config.ttl_min_ms);
        let max = Duration::from_millis(self.config.ttl_max_ms).min(Duration::from_secs(30));
        min.saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(max)
            .max(min)
    }
}

/// Every (origin, server entry) given by name.
pub(crate) fn names(origins: &[Origin]) -> Vec<(usize, usize)> {
    let mut names = Vec::new();
    for (o, origin) in origins.iter().enumerate() {
        for (e, s) in origin.config.servers.iter().enumerate() {
            if matches!(s.host, ServerHost::Name { .. }) {
                names.push((o, e));
            }
        }
    }
    names
}

/// Looks up server entry `entry` of origin `origin` once and sets its addresses (kept when
/// the lookup fails: `failures` is then one more); how long until the next lookup.
pub(crate) async fn refresh(
    resolver: &Resolver,
    origins: &[Origin],
    origin: usize,
    entry: usize,
    failures: &mut u32,
) -> Duration {
    let o = &origins[origin];
    let ServerHost::Name { name, port } = &o.config.servers[entry].host else {
        return Duration::MAX;
    };
    match resolver.lookup(name, *port).await {
        Ok((addresses, valid)) => {
            *failures = 0;
            o.set_addresses(entry, &addresses);
            valid
        }
        Err(why) => {
            *failures += 1;
            let kept = o.addresses(entry);
            // (A name with no address at all keeps its origin answering 502: asked again
            // within 5 s however long it has failed.)
            let wait = match kept.is_empty() {
                true => resolver.retry_after(*failures).min(Duration::from_secs(5)),
                false => resolver.retry_after(*failures),
            };
            log::warn!(
                "origin {}: cannot look up {name}: {why} ({} in a row); keeping {} (asked \
                 again in {} ms)",
                o.config.authority,
                *failures,
                match kept.is_empty() {
                    true => "no address: the server is out of the pool".to_string(),
                    false => format!("{kept:?}"),
                },
                wait.as_millis()
            );
            wait
        }
    }
}

/// Keeps server entry `entry` of origin `origin` looked up, for as long as the upstream runs
/// (the first lookup made: `wait` until the next, after `failures` in a row).
pub(crate) async fn keep(
    resolver: Arc<Resolver>,
    origins: Arc<Vec<Origin>>,
    (origin, entry): (usize, usize),
    mut wait: Duration,
    mut failures: u32,
) {
    loop {
        tokio::time::sleep(wait).await;
        wait = refresh(&resolver, &origins, origin, entry, &mut failures).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_name_is_asked_again_ever_less_often_within_the_bounds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = DnsConfig {
            resolver: vec!["127.0.0.1:9".parse().expect("address")],
            ..DnsConfig::default()
        };
        let r = rt
            .block_on(async { Resolver::new(&config) })
            .expect("resolver");
        let waits: Vec<u64> = (1..=8).map(|n| r.retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        let r = Resolver {
            config: DnsConfig {
                ttl_min_ms: 500,
                ttl_max_ms: 3000,
                ..config
            },
            ..r
        };
        let waits: Vec<u128> = (1..=5).map(|n| r.retry_after(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000]);
        let now = Instant::now();
        assert_eq!(r.valid_for(now), Duration::from_millis(500), "TTL 0");
        assert_eq!(
            r.valid_for(now + Duration::from_secs(3600)),
            Duration::from_millis(3000)
        );
    }
}

//! The file as serde reads it: every table rejects unknown keys, and every
//! value that is validated later keeps its span for the error message.

use serde::Deserialize;
use toml::Spanned;

use crate::bytesize::ByteSize;
use crate::share::RawShare;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a relay config")]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) cache: RawCache,
    #[serde(default)]
    pub(crate) origin: Option<RawOrigin>,
    #[serde(default)]
    pub(crate) steer: RawSteer,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
    #[serde(default)]
    pub(crate) cluster: Option<crate::cluster::RawCluster>,
    #[serde(default)]
    pub(crate) log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [log] table")]
pub(crate) struct RawLog {
    pub(crate) access: Option<Spanned<String>>,
    pub(crate) access_format: Option<Spanned<String>>,
    pub(crate) access_queue: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "an [admin] table")]
pub(crate) struct RawAdmin {
    pub(crate) enabled: Option<bool>,
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) purge_token: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [server] table")]
pub(crate) struct RawServer {
    pub(crate) listen: Option<Spanned<OneOrMany>>,
    pub(crate) workers: Option<Spanned<u64>>,
    pub(crate) max_connections: Option<Spanned<u64>>,
    pub(crate) header_timeout_ms: Option<Spanned<u64>>,
    pub(crate) idle_timeout_ms: Option<Spanned<u64>>,
    pub(crate) body_timeout_ms: Option<Spanned<u64>>,
    pub(crate) body_min_rate: Option<Spanned<ByteSize>>,
    pub(crate) max_connections_per_client: Option<Spanned<u64>>,
    pub(crate) pin_cpus: Option<bool>,
    pub(crate) zerocopy_min_bytes: Option<Spanned<ByteSize>>,
    pub(crate) zerocopy_unregistered_min_bytes: Option<Spanned<ByteSize>>,
    pub(crate) drain_ms: Option<Spanned<u64>>,
    pub(crate) limits: RawLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [server.limits] table")]
pub(crate) struct RawLimits {
    pub(crate) max_head_bytes: Option<Spanned<ByteSize>>,
    pub(crate) max_headers: Option<Spanned<u64>>,
    pub(crate) max_uri_bytes: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [cache] table")]
pub(crate) struct RawCache {
    pub(crate) chunk_size: Option<Spanned<ByteSize>>,
    pub(crate) memory_bytes: Option<Spanned<ByteSize>>,
    pub(crate) disk_dir: Option<Spanned<String>>,
    pub(crate) disk_bytes: Option<Spanned<ByteSize>>,
    pub(crate) disk_fsync: Option<bool>,
    pub(crate) disk_admission: Option<Spanned<String>>,
    pub(crate) targeted_fields: Option<Spanned<Vec<String>>>,
    pub(crate) meta_bytes: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [origin] table")]
pub(crate) struct RawOrigin {
    pub(crate) directory: Option<Spanned<String>>,
    pub(crate) revalidate_ms: Option<Spanned<u64>>,
    pub(crate) pass_buffer_bytes: Option<Spanned<ByteSize>>,
    pub(crate) read_ahead_bytes: Option<Spanned<ByteSize>>,
    pub(crate) pass_buffer_per_client: Option<Spanned<RawShare>>,
    pub(crate) resolver: Option<Spanned<Vec<String>>>,
    pub(crate) resolver_timeout_ms: Option<Spanned<u64>>,
    pub(crate) dns_ttl_min_ms: Option<Spanned<u64>>,
    pub(crate) dns_ttl_max_ms: Option<Spanned<u64>>,
    #[serde(default)]
    pub(crate) http: Vec<RawHttpOrigin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [[origin.http]] table")]
pub(crate) struct RawHttpOrigin {
    pub(crate) url: Spanned<String>,
    pub(crate) servers: Option<Spanned<Vec<RawOriginServer>>>,
    pub(crate) health_check: Option<Spanned<RawHealthCheck>>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) prefix: Option<Spanned<String>>,
    pub(crate) connect_timeout_ms: Option<Spanned<u64>>,
    pub(crate) first_byte_timeout_ms: Option<Spanned<u64>>,
    pub(crate) idle_timeout_ms: Option<Spanned<u64>>,
    pub(crate) retries: Option<Spanned<u64>>,
    pub(crate) down_after_failures: Option<Spanned<u64>>,
    pub(crate) down_ms: Option<Spanned<u64>>,
    pub(crate) max_connections: Option<Spanned<u64>>,
    pub(crate) host_header: Option<Spanned<String>>,
    pub(crate) tls_ca_file: Option<Spanned<String>>,
    pub(crate) tls_server_name: Option<Spanned<String>>,
    pub(crate) tls_insecure_skip_verify: Option<Spanned<bool>>,
    pub(crate) cache_default_ttl: Option<Spanned<toml::Value>>,
    pub(crate) cache_status_ttl: Option<Spanned<toml::Table>>,
    pub(crate) cache_ttl_min: Option<Spanned<toml::Value>>,
    pub(crate) cache_ttl_max: Option<Spanned<toml::Value>>,
    pub(crate) cache_ignore_no_cache: Option<Spanned<bool>>,
    pub(crate) cache_ignore_private: Option<Spanned<bool>>,
    pub(crate) cache_ignore_set_cookie: Option<Spanned<bool>>,
    pub(crate) cache_stale_while_revalidate: Option<Spanned<toml::Value>>,
    pub(crate) cache_stale_if_error: Option<Spanned<toml::Value>>,
    pub(crate) cache_key_query: Option<Spanned<String>>,
    pub(crate) cache_key_query_drop: Option<Spanned<Vec<String>>>,
}

/// `health_check = { ... }` in an `[[origin.http]]` table.
#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a health check: { path = \"/health\", interval_ms, timeout_ms, fall, rise }"
)]
pub(crate) struct RawHealthCheck {
    pub(crate) path: String,
    pub(crate) interval_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) fall: Option<u64>,
    pub(crate) rise: Option<u64>,
}

/// One server of `servers = [...]` in an `[[origin.http]]` table.
#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a server: { address = \"host:port\", weight, backup }"
)]
pub(crate) struct RawOriginServer {
    pub(crate) address: String,
    pub(crate) weight: Option<u64>,
    pub(crate) backup: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [steer] table")]
pub(crate) struct RawSteer {
    pub(crate) iface: Option<Spanned<String>>,
    pub(crate) pin_root: Option<Spanned<String>>,
    pub(crate) ring_size: Option<Spanned<u64>>,
    pub(crate) max_services: Option<Spanned<u64>>,
    pub(crate) flow_table_entries: Option<Spanned<u64>>,
    pub(crate) malformed: Option<Spanned<String>>,
    pub(crate) fragments: Option<Spanned<String>>,
    pub(crate) ip_options: Option<Spanned<String>>,
    pub(crate) decap: Option<bool>,
    pub(crate) encap_source_v4: Option<Spanned<String>>,
    pub(crate) encap_source_v6: Option<Spanned<String>>,
    pub(crate) proximity_rtt_us: Option<Spanned<u64>>,
    pub(crate) cluster_nodes: Option<Spanned<bool>>,
    pub(crate) cluster_next_hop: Option<Spanned<String>>,
    pub(crate) guard: RawSteerGuard,
    pub(crate) health: RawSteerHealth,
    pub(crate) services: Vec<RawSteerService>,
    pub(crate) nodes: Vec<RawSteerNode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [steer.health] table")]
pub(crate) struct RawSteerHealth {
    pub(crate) interval_ms: Option<Spanned<u64>>,
    pub(crate) timeout_ms: Option<Spanned<u64>>,
    pub(crate) down_after: Option<Spanned<u64>>,
    pub(crate) up_after: Option<Spanned<u64>>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) measure_rtt: Option<bool>,
    pub(crate) rtt_change_percent: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [steer.guard] table")]
pub(crate) struct RawSteerGuard {
    pub(crate) new_flows_per_second: Option<Spanned<u64>>,
    pub(crate) new_flow_burst: Option<Spanned<u64>>,
    pub(crate) rate_table_entries: Option<Spanned<u64>>,
    pub(crate) blocklist: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[steer.services]] table")]
pub(crate) struct RawSteerService {
    pub(crate) address: Spanned<String>,
    pub(crate) port: Spanned<u64>,
    pub(crate) protocol: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[steer.nodes]] table")]
pub(crate) struct RawSteerNode {
    pub(crate) name: Spanned<String>,
    pub(crate) address: Option<Spanned<String>>,
    pub(crate) address_v6: Option<Spanned<String>>,
    pub(crate) mac: Option<Spanned<String>>,
    pub(crate) next_hop: Option<Spanned<String>>,
    pub(crate) local: Option<bool>,
    pub(crate) weight: Option<Spanned<u64>>,
    pub(crate) up: Option<bool>,
    pub(crate) rtt_us: Option<Spanned<u64>>,
    pub(crate) health_check: Option<Spanned<String>>,
}

/// A string, or a list of them (`server.listen`).
pub(crate) struct OneOrMany(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address, or a list of addresses")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    all.push(s);
                }
                Ok(OneOrMany(all))
            }
        }
        d.deserialize_any(Visit)
    }
}

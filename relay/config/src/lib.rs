//! relay's TOML config: schema, defaults, and validation whose errors name
//! the file, line, column and dotted key, e.g.
//! `relay.toml:7:14: cache.chunk_size: must be a power of two between 4 KiB and 64 MiB, got 1000`.
//!
//! # Layout
//!
//! - [`schema`]: the validated [`Config`] and its sections, defaults and bounds.
//! - [`load`](Config::load) / [`from_str`](Config::from_str) (module `load`):
//!   TOML syntax, then the schema via serde, then value checks; every error found
//!   is reported (a file that is not TOML: the first syntax error; a table holding a
//!   key the schema refuses: that key's error, its value checks once it is fixed).
//! - `read`: the file into the serde mirror, every key serde refuses reported and
//!   the rest read without it.
//! - `raw`: the serde mirror of the file; unknown keys are refused, validated
//!   values keep their `toml::Spanned` position.
//! - `steer`: validation of `[steer]` (services, nodes, policies, guard).
//! - [`bytesize`]: [`ByteSize`], sizes written as `4096` or `"64 KiB"`.
//! - `share`: `origin.pass_buffer_per_client`, a fraction of the budget or a byte size.
//! - [`error`]: [`ConfigError`] and byte-offset to line:column mapping.
//!
//! The documented default config is `config/relay.toml` at the repository root;
//! a test parses it.

pub mod bytesize;
pub mod cluster;
pub mod error;
mod load;
pub mod machine;
mod origin;
mod raw;
mod read;
pub mod schema;
mod share;
mod steer;

pub use bytesize::ByteSize;
pub use cluster::ClusterConfig;
pub use error::{ConfigError, Diagnostic, ErrorKind};
pub use schema::{
    AccessLogFormat, AccessLogTarget, AdminConfig, CacheConfig, CachePolicy, ClientShare, Config,
    DiskAdmission, DnsConfig, HealthCheck, HttpOrigin, LogConfig, MAX_ORIGIN_SERVERS, OriginConfig,
    OriginServer, OriginTls, QueryKey, ServerConfig, ServerHost, StatusMatch, SteerConfig,
    SteerGuard, SteerNode, SteerPolicy, SteerProtocol, SteerService,
};

#[cfg(test)]
mod cache_policy_tests;
#[cfg(test)]
mod fair_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod steer_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

//! The file as serde reads it: every table rejects unknown keys, and every
//! value that is validated later keeps its span for the error message.

use serde::Deserialize;
use toml::Spanned;

use crate::bytesize::ByteSize;

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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [server] table")]
pub(crate) struct RawServer {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) workers: Option<Spanned<u64>>,
    pub(crate) max_connections: Option<Spanned<u64>>,
    pub(crate) header_timeout_ms: Option<Spanned<u64>>,
    pub(crate) idle_timeout_ms: Option<Spanned<u64>>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [origin] table")]
pub(crate) struct RawOrigin {
    pub(crate) directory: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default, expecting = "a [steer] table")]
pub(crate) struct RawSteer {
    pub(crate) pin_root: Option<Spanned<String>>,
}

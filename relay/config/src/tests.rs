//! Config tests: defaults, the shipped file, and one test per error class
//! asserting the key and line it names.

use std::path::{Path, PathBuf};

use relay_proto::Limits;

use crate::bytesize::{GIB, KIB, MIB};
use crate::schema::*;
use crate::{ConfigError, ErrorKind};

const SHIPPED: &str = include_str!("../../../config/relay.toml");
const MINIMAL: &str = "[origin]\ndirectory = \"/srv/objects\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("/etc/relay"), "relay.toml")
}

pub(crate) fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

/// Asserts class, key and line of the error for `text`; returns its message.
#[track_caller]
fn expect(text: &str, kind: ErrorKind, key: Option<&str>, line: Option<usize>) -> String {
    let e = err(text);
    assert_eq!((e.kind(), e.key(), e.line()), (kind, key, line), "{e}");
    e.to_string()
}

#[test]
fn defaults_apply_when_keys_are_omitted() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.cache, CacheConfig::default());
    assert_eq!(config.steer, SteerConfig::default());
    assert_eq!(config.origin.directory, Some(PathBuf::from("/srv/objects")));

    let s = &config.server;
    assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.workers, 0);
    assert!(s.effective_workers() >= 1);
    assert_eq!(s.max_connections, 16384);
    assert_eq!(s.header_timeout_ms, 10_000);
    assert_eq!(s.idle_timeout_ms, 60_000);
    assert_eq!(s.header_timeout().as_secs(), 10);
    assert_eq!(s.idle_timeout().as_secs(), 60);
    assert_eq!(s.limits, Limits::default());
    assert_eq!(config.cache.chunk_size, MIB);
    assert_eq!(config.cache.memory_bytes, 256 * MIB);
    assert_eq!(config.cache.meta_bytes, 64 * MIB);
    assert_eq!(config.steer.pin_root, PathBuf::from("/sys/fs/bpf/relay"));

    // Empty tables and partly filled tables keep the other defaults.
    let config = parse(
        "[server]\nworkers = 3\n[server.limits]\n[cache]\n[steer]\n[origin]\ndirectory = \"/d\"\n",
    )
    .unwrap();
    assert_eq!(config.server.workers, 3);
    assert_eq!(config.server.effective_workers(), 3);
    assert_eq!(config.server.limits, Limits::default());
    assert_eq!(config.cache, CacheConfig::default());
}

#[test]
fn shipped_file_parses_and_documents_the_defaults() {
    let config = Config::from_str(SHIPPED, Path::new("/opt/relay/config"), "relay.toml").unwrap();
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.cache, CacheConfig::default());
    assert_eq!(config.steer, SteerConfig::default());
    assert_eq!(
        config.origin.directory,
        Some(PathBuf::from("/opt/relay/config/../var/demo"))
    );
    assert_eq!(
        config.origin.pass_buffer_bytes,
        crate::schema::DEFAULT_PASS_BUFFER_BYTES
    );
    assert_eq!(
        config.origin.pass_buffer_per_client,
        crate::schema::DEFAULT_PASS_BUFFER_PER_CLIENT
    );
    assert_eq!(config.origin.dns, crate::DnsConfig::default());
    assert_eq!(config.log, crate::LogConfig::default());
    assert_eq!(
        config.origin.read_ahead_bytes,
        crate::schema::DEFAULT_READ_AHEAD_BYTES
    );

    // Every key of the schema is present in the file.
    let table: toml::Table = toml::from_str(SHIPPED).unwrap();
    let mut keys = Vec::new();
    fn walk(prefix: &str, table: &toml::Table, keys: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => walk(&path, inner, keys),
                _ => keys.push(path),
            }
        }
    }
    walk("", &table, &mut keys);
    keys.sort();
    assert_eq!(
        keys,
        [
            "admin.enabled",
            "admin.listen",
            "cache.chunk_size",
            "cache.disk_admission",
            "cache.disk_bytes",
            "cache.disk_fsync",
            "cache.memory_bytes",
            "cache.meta_bytes",
            "cache.targeted_fields",
            "log.access",
            "log.access_format",
            "log.access_queue",
            "origin.directory",
            "origin.dns_ttl_max_ms",
            "origin.dns_ttl_min_ms",
            "origin.pass_buffer_bytes",
            "origin.pass_buffer_per_client",
            "origin.read_ahead_bytes",
            "origin.resolver",
            "origin.resolver_timeout_ms",
            "origin.revalidate_ms",
            "server.body_min_rate",
            "server.body_timeout_ms",
            "server.drain_ms",
            "server.header_timeout_ms",
            "server.idle_timeout_ms",
            "server.limits.max_head_bytes",
            "server.limits.max_headers",
            "server.limits.max_uri_bytes",
            "server.listen",
            "server.max_connections",
            "server.max_connections_per_client",
            "server.pin_cpus",
            "server.workers",
            "server.zerocopy_min_bytes",
            "server.zerocopy_unregistered_min_bytes",
            "steer.cluster_nodes",
            "steer.decap",
            "steer.encap_source_v4",
            "steer.encap_source_v6",
            "steer.flow_table_entries",
            "steer.fragments",
            "steer.guard.blocklist",
            "steer.guard.new_flow_burst",
            "steer.guard.new_flows_per_second",
            "steer.guard.rate_table_entries",
            "steer.health.down_after",
            "steer.health.interval_ms",
            "steer.health.measure_rtt",
            "steer.health.path",
            "steer.health.rtt_change_percent",
            "steer.health.timeout_ms",
            "steer.health.up_after",
            "steer.ip_options",
            "steer.malformed",
            "steer.max_services",
            "steer.pin_root",
            "steer.proximity_rtt_us",
            "steer.ring_size",
        ]
    );
}

#[test]
fn values_in_range_are_accepted() {
    let text = r#"
[server]
listen = "[::1]:443"
workers = 1024
max_connections = 1
header_timeout_ms = 1
idle_timeout_ms = 86400000

[server.limits]
max_head_bytes = 1048576
max_headers = 100
max_uri_bytes = "1 MiB"

[cache]
chunk_size = "64 MiB"
memory_bytes = "1 GiB"
meta_bytes = "16 MiB"

[origin]
directory = "demo"

[steer]
pin_root = "/sys/fs/bpf/other"
"#;
    let config = parse(text).unwrap();
    assert_eq!(config.server.listen, "[::1]:443".parse().unwrap());
    assert_eq!(config.server.workers, 1024);
    assert_eq!(config.server.max_connections, 1);
    assert_eq!(
        config.server.limits,
        Limits {
            max_head_bytes: 1 << 20,
            max_headers: 100,
            max_uri_bytes: 1 << 20
        }
    );
    assert_eq!(
        config.cache,
        CacheConfig {
            chunk_size: 64 * MIB,
            memory_bytes: GIB,
            meta_bytes: 16 * MIB,
            ..CacheConfig::default()
        }
    );
    assert_eq!(
        config.origin.directory,
        Some(PathBuf::from("/etc/relay/demo"))
    );
    assert_eq!(config.steer.pin_root, PathBuf::from("/sys/fs/bpf/other"));

    let config = parse(
        "[cache]\nchunk_size = 4096\nmemory_bytes = \"4 KiB\"\n[origin]\ndirectory = \"/d\"\n",
    )
    .unwrap();
    assert_eq!(
        config.cache,
        CacheConfig {
            chunk_size: 4 * KIB,
            memory_bytes: 4 * KIB,
            ..CacheConfig::default()
        }
    );
}

#[test]
fn targeted_fields_are_field_names_kept_lower_case() {
    let config = parse(
        "[cache]\ntargeted_fields = [\"Relay-Cache-Control\", \"CDN-Cache-Control\"]\n\
         [origin]\ndirectory = \"/d\"\n",
    )
    .unwrap();
    assert_eq!(
        config.cache.targeted_fields,
        ["relay-cache-control", "cdn-cache-control"]
    );
    assert_eq!(
        parse("[origin]\ndirectory = \"/d\"\n")
            .unwrap()
            .cache
            .targeted_fields,
        ["cdn-cache-control"]
    );
    for bad in ["[\"a b\"]", "[\"\"]", "[\"Cache-Control\"]"] {
        let msg = expect(
            &format!("[cache]\ntargeted_fields = {bad}\n[origin]\ndirectory = \"/d\"\n"),
            ErrorKind::InvalidValue,
            Some("cache.targeted_fields"),
            Some(2),
        );
        assert!(msg.contains("targeted_fields"), "{bad}: {msg}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let msg = expect(
        "[origin]\ndirectory = \"/d\"\n[server\n",
        ErrorKind::Syntax,
        None,
        Some(3),
    );
    assert!(msg.starts_with("relay.toml:3:"), "{msg}");
    expect(
        "[origin]\ndirectory = = \"/d\"\n",
        ErrorKind::Syntax,
        None,
        Some(2),
    );
    expect(
        "[origin]\ndirectory = \"/d\n",
        ErrorKind::Syntax,
        None,
        Some(2),
    );
    // A duplicate key is a TOML error too.
    let msg = expect(
        "[origin]\ndirectory = \"/a\"\ndirectory = \"/b\"\n",
        ErrorKind::Syntax,
        None,
        Some(3),
    );
    assert!(msg.contains("duplicate key"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn unknown_keys_name_key_line_and_valid_keys() {
    let msg = expect(
        "[server]\nworkers = 2\nworker = 3\n[origin]\ndirectory = \"/d\"\n",
        ErrorKind::UnknownKey,
        Some("server.worker"),
        Some(3),
    );
    assert_eq!(
        msg,
        "relay.toml:3:1: server.worker: unknown key `worker`, expected one of `listen`, \
         `workers`, `max_connections`, `header_timeout_ms`, `idle_timeout_ms`, \
         `body_timeout_ms`, `body_min_rate`, `max_connections_per_client`, `pin_cpus`, \
         `zerocopy_min_bytes`, `zerocopy_unregistered_min_bytes`, `drain_ms`, `limits`"
    );
    let msg = expect(
        "[origin]\ndirectory = \"/d\"\n\n[server.limits]\nmax_uri = 5\n",
        ErrorKind::UnknownKey,
        Some("server.limits.max_uri"),
        Some(5),
    );
    assert!(
        msg.contains("`max_head_bytes`, `max_headers`, `max_uri_bytes`"),
        "{msg}"
    );
    let msg = expect(
        "[cache]\nsize = 5\n[origin]\ndirectory = \"/d\"\n",
        ErrorKind::UnknownKey,
        Some("cache.size"),
        Some(2),
    );
    assert!(
        msg.contains("expected one of `chunk_size`, `memory_bytes`, `disk_dir`"),
        "{msg}"
    );
    expect(
        "[origin]\ndirectory = \"/d\"\nmirror = \"/e\"\n",
        ErrorKind::UnknownKey,
        Some("origin.mirror"),
        Some(3),
    );
    expect(
        "[origin]\ndirectory = \"/d\"\n[steer]\npin = \"/x\"\n",
        ErrorKind::UnknownKey,
        Some("steer.pin"),
        Some(4),
    );
    // Unknown tables, top-level keys and dotted keys.
    let msg = expect(
        "[origin]\ndirectory = \"/d\"\n[peering]\npeers = []\n",
        ErrorKind::UnknownKey,
        Some("peering"),
        Some(3),
    );
    assert!(
        msg.contains("`server`, `cache`, `origin`, `steer`"),
        "{msg}"
    );
    expect(
        "verbose = true\n[origin]\ndirectory = \"/d\"\n",
        ErrorKind::UnknownKey,
        Some("verbose"),
        Some(1),
    );
    expect(
        "server.limits.max_body = 1\n[origin]\ndirectory = \"/d\"\n",
        ErrorKind::UnknownKey,
        Some("server.limits.max_body"),
        Some(1),
    );
}

#[test]
fn wrong_types_name_key_and_line() {
    let cases: &[(&str, &str, usize)] = &[
        ("[server]\nworkers = \"four\"\n", "server.workers", 2),
        ("[server]\n\nlisten = 8080\n", "server.listen", 3),
        (
            "[server]\nheader_timeout_ms = 1.5\n",
            "server.header_timeout_ms",
            2,
        ),
        (
            "[server]\nidle_timeout_ms = true\n",
            "server.idle_timeout_ms",
            2,
        ),
        (
            "[server]\nmax_connections = [1]\n",
            "server.max_connections",
            2,
        ),
        (
            "[server.limits]\nmax_headers = \"64\"\n",
            "server.limits.max_headers",
            2,
        ),
        (
            "[server.limits]\nmax_head_bytes = true\n",
            "server.limits.max_head_bytes",
            2,
        ),
        ("[cache]\nchunk_size = 1.0\n", "cache.chunk_size", 2),
        (
            "[cache]\nmemory_bytes = { a = 1 }\n",
            "cache.memory_bytes",
            2,
        ),
        ("[steer]\npin_root = 1\n", "steer.pin_root", 2),
        ("server = 1\n", "server", 1),
        ("cache = \"big\"\n", "cache", 1),
    ];
    for &(prefix, key, line) in cases {
        let text = format!("{prefix}[origin]\ndirectory = \"/d\"\n");
        expect(&text, ErrorKind::WrongType, Some(key), Some(line));
    }
    expect(
        "[origin]\ndirectory = 5\n",
        ErrorKind::WrongType,
        Some("origin.directory"),
        Some(2),
    );
    let msg = expect(
        "[cache]\nchunk_size = false\n[origin]\ndirectory = \"/d\"\n",
        ErrorKind::WrongType,
        Some("cache.chunk_size"),
        Some(2),
    );
    assert!(
        msg.contains("expected a byte size: an integer or a string like \"64 KiB\""),
        "{msg}"
    );
    let msg = expect(
        "server = 1\n[origin]\ndirectory = \"/d\"\n",
        ErrorKind::WrongType,
        Some("server"),
        Some(1),
    );
    assert!(msg.contains("expected a [server] table"), "{msg}");
}

#[test]
fn missing_origin_directory() {
    let msg = expect(
        "[server]\nworkers = 1\n\n[origin]\n",
        ErrorKind::MissingKey,
        Some("origin.directory"),
        Some(4),
    );
    assert_eq!(
        msg,
        "relay.toml:4:1: origin.directory: missing: set origin.directory or at least one \
         [[origin.http]]"
    );
    let msg = expect(
        "[server]\nworkers = 1\n",
        ErrorKind::MissingKey,
        Some("origin.directory"),
        None,
    );
    assert!(
        msg.starts_with("relay.toml: origin.directory: missing: set origin.directory"),
        "{msg}"
    );
    expect("", ErrorKind::MissingKey, Some("origin.directory"), None);
}

#[test]
fn impossible_values_name_key_and_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "[server]\nworkers = 1025\n",
            "server.workers",
            2,
            "must be between 0 and 1024, got 1025",
        ),
        (
            "[server]\nworkers = -1\n",
            "server.workers",
            2,
            "invalid value: integer `-1`",
        ),
        (
            "[server]\nmax_connections = 0\n",
            "server.max_connections",
            2,
            "must be between 1 and 1048576, got 0",
        ),
        (
            "[server]\nheader_timeout_ms = 0\n",
            "server.header_timeout_ms",
            2,
            "must be between 1 and 86400000, got 0",
        ),
        (
            "[server]\nidle_timeout_ms = 0\n",
            "server.idle_timeout_ms",
            2,
            "got 0",
        ),
        (
            "[server]\nidle_timeout_ms = 86400001\n",
            "server.idle_timeout_ms",
            2,
            "got 86400001",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:99999\"\n",
            "server.listen",
            2,
            "the port must be a number from 0 to 65535, got \"127.0.0.1:99999\"",
        ),
        (
            "[server]\nlisten = \"127.0.0.1\"\n",
            "server.listen",
            2,
            "expected an IP address and port",
        ),
        (
            "[server]\nlisten = \"localhost:80\"\n",
            "server.listen",
            2,
            "got \"localhost:80\"",
        ),
        (
            "[server.limits]\nmax_head_bytes = 512\n",
            "server.limits.max_head_bytes",
            2,
            "must be between 1 KiB and 1 MiB, got 512",
        ),
        (
            "[server.limits]\nmax_head_bytes = \"2 MiB\"\n",
            "server.limits.max_head_bytes",
            2,
            "got 2 MiB",
        ),
        (
            "[server.limits]\nmax_headers = 0\n",
            "server.limits.max_headers",
            2,
            "must be between 1 and 100, got 0",
        ),
        (
            "[server.limits]\nmax_headers = 101\n",
            "server.limits.max_headers",
            2,
            "got 101",
        ),
        (
            "[server.limits]\nmax_uri_bytes = 8\n",
            "server.limits.max_uri_bytes",
            2,
            "must be between 16 and 1 MiB, got 8",
        ),
        (
            "[server.limits]\nmax_uri_bytes = \"32 KiB\"\n",
            "server.limits.max_uri_bytes",
            2,
            "must not exceed server.limits.max_head_bytes (16 KiB), got 32 KiB",
        ),
        (
            "[server.limits]\nmax_head_bytes = \"4 KiB\"\n",
            "server.limits.max_head_bytes",
            2,
            "must be at least server.limits.max_uri_bytes (8 KiB), got 4 KiB",
        ),
        (
            "[server.limits]\nmax_head_bytes = \"4 KiB\"\nmax_uri_bytes = \"5 KiB\"\n",
            "server.limits.max_uri_bytes",
            3,
            "must not exceed",
        ),
        (
            "[cache]\nchunk_size = 1000\n",
            "cache.chunk_size",
            2,
            "must be a power of two between 4 KiB and 64 MiB, got 1000",
        ),
        (
            "[cache]\nchunk_size = \"2 KiB\"\n",
            "cache.chunk_size",
            2,
            "got 2 KiB",
        ),
        (
            "[cache]\nchunk_size = \"128 MiB\"\n",
            "cache.chunk_size",
            2,
            "got 128 MiB",
        ),
        (
            "[cache]\nchunk_size = \"3 MiB\"\n",
            "cache.chunk_size",
            2,
            "got 3 MiB",
        ),
        ("[cache]\nchunk_size = 0\n", "cache.chunk_size", 2, "got 0"),
        (
            "[cache]\nchunk_size = -4096\n",
            "cache.chunk_size",
            2,
            "invalid value: integer `-4096`",
        ),
        (
            "[cache]\nchunk_size = \"64 KB\"\n",
            "cache.chunk_size",
            2,
            "invalid byte size \"64 KB\": unknown unit",
        ),
        (
            "[cache]\nchunk_size = \"lots\"\n",
            "cache.chunk_size",
            2,
            "invalid byte size \"lots\"",
        ),
        (
            "[cache]\nchunk_size = \"64 MiB\"\nmemory_bytes = \"32 MiB\"\n",
            "cache.memory_bytes",
            3,
            "must be at least cache.chunk_size (64 MiB), got 32 MiB",
        ),
        (
            "[cache]\nchunk_size = \"64 KiB\"\nmeta_bytes = \"1 MiB\"\n",
            "cache.meta_bytes",
            3,
            "must be between 4 MiB and 1 TiB, got 1 MiB",
        ),
        (
            "[cache]\nmeta_bytes = \"2 TiB\"\n",
            "cache.meta_bytes",
            2,
            "got 2 TiB",
        ),
        (
            "[steer]\npin_root = \"bpf/relay\"\n",
            "steer.pin_root",
            2,
            "must be an absolute path, got \"bpf/relay\"",
        ),
    ];
    for &(prefix, key, line, needle) in cases {
        let text = format!("{prefix}[origin]\ndirectory = \"/d\"\n");
        let msg = expect(&text, ErrorKind::InvalidValue, Some(key), Some(line));
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    let msg = expect(
        "[origin]\ndirectory = \"/d\"\npass_buffer_bytes = \"1 KiB\"\n",
        ErrorKind::InvalidValue,
        Some("origin.pass_buffer_bytes"),
        Some(3),
    );
    assert!(msg.contains("got 1 KiB"), "{msg:?}");
    expect(
        "[origin]\ndirectory = \"\"\n",
        ErrorKind::InvalidValue,
        Some("origin.directory"),
        Some(2),
    );
}

#[test]
fn error_display_is_file_line_col_key_message() {
    let text = "# relay\n\n[server]\nworkers = 2\n\n[cache]\nchunk_size = 1000\n\n[origin]\ndirectory = \"/d\"\n";
    let e = err(text);
    assert_eq!(
        e.to_string(),
        "relay.toml:7:14: cache.chunk_size: must be a power of two between 4 KiB and 64 MiB, got 1000"
    );
    assert_eq!((e.line(), e.column()), (Some(7), Some(14)));
    assert_eq!(e.key(), Some("cache.chunk_size"));
    assert_eq!(
        e.message(),
        "must be a power of two between 4 KiB and 64 MiB, got 1000"
    );
    // Inline tables and dotted keys point at the value too.
    let e = err("cache = { chunk_size = \"3 MiB\" }\n[origin]\ndirectory = \"/d\"\n");
    assert_eq!(
        (e.key(), e.line(), e.column()),
        (Some("cache.chunk_size"), Some(1), Some(24))
    );
    let e = err("[origin]\ndirectory = \"/d\"\n[server]\nlimits.max_headers = 0\n");
    assert_eq!(
        (e.key(), e.line(), e.column()),
        (Some("server.limits.max_headers"), Some(4), Some(22))
    );
}

mod load;
pub(crate) use load::load_err;

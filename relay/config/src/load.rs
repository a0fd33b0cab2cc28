//! From text to [`Config`]: TOML syntax, then the schema, then the values.

use std::fs;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use relay_proto::{Limits, MAX_HEADERS_CAP};
use toml::Spanned;

use crate::bytesize::ByteSize;
use crate::error::{ConfigError, Source};
use crate::raw::{RawAdmin, RawCache, RawServer};
use crate::schema::*;

impl Config {
    /// Reads, parses and validates the config file at `path`, then checks it against this
    /// machine: the memory tier fits in its memory (`machine`), and `origin.directory` is
    /// an existing directory, made canonical.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file = path.display().to_string();
        let src = Source {
            text: &text,
            file: &file,
        };
        let (mut config, spans) = parse(src, base_dir)?;
        // What the machine says, each checked whatever the others found.
        let mut errors = Vec::new();
        if let Some(total) = crate::machine::mem_total()
            && let Err(m) = crate::machine::memory_fits(&config.cache, total)
        {
            errors.push(src.invalid("cache.memory_bytes", spans.memory_bytes.clone(), m));
        }
        let directory_span = spans.directory;
        if let Some(directory) = &config.origin.directory {
            match fs::canonicalize(directory) {
                Err(e) => errors.push(src.invalid(
                    "origin.directory",
                    directory_span.clone(),
                    format!("cannot open {}: {e}", directory.display()),
                )),
                Ok(canonical) if !canonical.is_dir() => errors.push(src.invalid(
                    "origin.directory",
                    directory_span,
                    format!("{} is not a directory", canonical.display()),
                )),
                Ok(canonical) => config.origin.directory = Some(canonical),
            }
        }
        if let Some(AccessLogTarget::File(f)) = &config.log.access {
            let dir = f.parent().unwrap_or(Path::new("/"));
            if !dir.is_dir() {
                errors.push(src.invalid(
                    "log.access",
                    spans.access_log.clone(),
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        if let Some(c) = &config.cluster
            && let Err(m) = crate::cluster::read_key(&c.key_file)
        {
            errors.push(src.invalid("cluster.key_file", spans.key_file.clone(), m));
        }
        if let Some(e) = ConfigError::all(errors) {
            return Err(e);
        }
        Ok(config)
    }

    /// Parses and validates config text without touching the filesystem.
    /// A relative `origin.directory` is joined to `base_dir`; `file_name`
    /// only labels error messages.
    pub fn from_str(text: &str, base_dir: &Path, file_name: &str) -> Result<Config, ConfigError> {
        let src = Source {
            text,
            file: file_name,
        };
        parse(src, base_dir).map(|(config, _)| config)
    }
}

/// Where the values `load` checks against the machine were written, if they were.
struct Spans {
    directory: Option<Range<usize>>,
    memory_bytes: Option<Range<usize>>,
    key_file: Option<Range<usize>>,
    access_log: Option<Range<usize>>,
}

/// The config and the spans of the values `load` checks.
fn parse(src: Source<'_>, base_dir: &Path) -> Result<(Config, Spans), ConfigError> {
    // Syntax first (the first error ends it), then the schema: every key it refuses is
    // reported, and the rest read without them.
    let (raw, refused) = crate::read::read(src)?;

    // Each part checked whatever the others hold: every error found is reported, each part
    // that fails standing in with its defaults for the checks that look across parts (a
    // part with a key the schema refused is checked without that key, its errors left out).
    let mut errors = Vec::new();
    let server = keep(&mut errors, server(src, raw.server)).unwrap_or_default();
    let (cache, memory_bytes_span) =
        keep(&mut errors, cache(src, raw.cache)).unwrap_or_else(|| (CacheConfig::default(), None));
    let steer = keep(
        &mut errors,
        crate::steer::steer(src, raw.steer, raw.cluster.is_some()),
    )
    .unwrap_or_default();
    let admin = keep(&mut errors, admin(src, raw.admin, &server.listens())).unwrap_or_default();
    let mut taken: Vec<_> = server
        .listens()
        .into_iter()
        .map(|a| ("server.listen", a))
        .collect();
    if admin.enabled {
        taken.push(("admin.listen", admin.listen));
    }
    let (cluster, key_file) = match keep(
        &mut errors,
        crate::cluster::cluster(src, raw.cluster, base_dir, &taken),
    )
    .flatten()
    {
        Some((c, span)) => (Some(c), span),
        None => (None, None),
    };
    let (log, access_log) = keep(&mut errors, log(src, raw.log, base_dir)).unwrap_or_default();
    let origin = keep(
        &mut errors,
        crate::origin::origin_config(src, raw.origin, base_dir),
    );
    if let Some(e) = refused.with(errors) {
        return Err(e);
    }
    let Some((origin, span)) = origin else {
        unreachable!("an origin error, or one the schema found in [origin], was reported above");
    };
    let mut cache = cache;
    cache.disk_dir = cache.disk_dir.map(|d| base_dir.join(d));
    let config = Config {
        log,
        server,
        cache,
        origin,
        admin,
        steer,
        cluster,
    };
    let spans = Spans {
        directory: span,
        memory_bytes: memory_bytes_span,
        key_file,
        access_log,
    };
    Ok((config, spans))
}

/// A validated field (as [`check`]), or its default with the error kept in `errors`.
pub(crate) fn check_or_default<T, U: Clone>(
    errors: &mut Vec<ConfigError>,
    src: Source<'_>,
    key: &str,
    field: Option<Spanned<T>>,
    default: U,
    validate: impl FnOnce(T) -> Result<U, String>,
) -> U {
    keep(errors, check(src, key, field, default.clone(), validate)).map_or(default, |(v, _)| v)
}

/// `r`'s value, or None with its error kept in `errors`: the part stands in with its
/// defaults while the others are checked.
pub(crate) fn keep<T>(errors: &mut Vec<ConfigError>, r: Result<T, ConfigError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// Whether two listen addresses would take the same port on some address (port 0 takes a
/// free one: never).
pub(crate) fn overlaps(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    // An unspecified IPv6 address takes the port on every address (dual stack); an
    // unspecified IPv4 one on every IPv4 address.
    let covers = |x: std::net::SocketAddr, y: std::net::SocketAddr| {
        x.ip().is_unspecified() && (x.is_ipv6() || y.is_ipv4())
    };
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// A validated field: the value, or the default when the key is absent.
pub(crate) fn check<T, U>(
    src: Source<'_>,
    key: &str,
    field: Option<Spanned<T>>,
    default: U,
    validate: impl FnOnce(T) -> Result<U, String>,
) -> Result<(U, Option<Range<usize>>), ConfigError> {
    match field {
        None => Ok((default, None)),
        Some(field) => {
            let span = field.span();
            validate(field.into_inner())
                .map(|value| (value, Some(span.clone())))
                .map_err(|message| src.invalid(key, Some(span), message))
        }
    }
}

pub(crate) fn in_range(lo: u64, hi: u64) -> impl FnOnce(u64) -> Result<u64, String> {
    move |v| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("must be between {lo} and {hi}, got {v}"))
        }
    }
}

fn to_usize(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{v} does not fit this platform"))
}

fn server(src: Source<'_>, raw: RawServer) -> Result<ServerConfig, ConfigError> {
    let defaults = ServerConfig::default();
    let (mut listen, _) = check(
        src,
        "server.listen",
        raw.listen,
        vec![defaults.listen],
        |all| listen_list(&all.0),
    )?;
    let listen_more = listen.split_off(1);
    let listen = listen[0];
    let (workers, _) = check(src, "server.workers", raw.workers, defaults.workers, |v| {
        in_range(0, MAX_WORKERS as u64)(v).and_then(to_usize)
    })?;
    let (max_connections, _) = check(
        src,
        "server.max_connections",
        raw.max_connections,
        defaults.max_connections,
        |v| in_range(1, MAX_CONNECTIONS as u64)(v).and_then(to_usize),
    )?;
    let (header_timeout_ms, _) = check(
        src,
        "server.header_timeout_ms",
        raw.header_timeout_ms,
        defaults.header_timeout_ms,
        in_range(1, MAX_TIMEOUT_MS),
    )?;
    let (idle_timeout_ms, _) = check(
        src,
        "server.idle_timeout_ms",
        raw.idle_timeout_ms,
        defaults.idle_timeout_ms,
        in_range(1, MAX_TIMEOUT_MS),
    )?;
    let (body_timeout_ms, _) = check(
        src,
        "server.body_timeout_ms",
        raw.body_timeout_ms,
        defaults.body_timeout_ms,
        in_range(1, MAX_TIMEOUT_MS),
    )?;
    let (body_min_rate, _) = check(
        src,
        "server.body_min_rate",
        raw.body_min_rate,
        defaults.body_min_rate,
        |size: ByteSize| bytes_in_range(size, 0, MAX_BODY_MIN_RATE),
    )?;
    let (max_connections_per_client, _) = check(
        src,
        "server.max_connections_per_client",
        raw.max_connections_per_client,
        defaults.max_connections_per_client,
        |v| in_range(0, MAX_CONNECTIONS as u64)(v).and_then(to_usize),
    )?;
    let (zerocopy_min_bytes, _) = check(
        src,
        "server.zerocopy_min_bytes",
        raw.zerocopy_min_bytes,
        defaults.zerocopy_min_bytes,
        |size: ByteSize| bytes_in_range(size, 0, 1 << 30),
    )?;
    let (zerocopy_unregistered_min_bytes, _) = check(
        src,
        "server.zerocopy_unregistered_min_bytes",
        raw.zerocopy_unregistered_min_bytes,
        defaults.zerocopy_unregistered_min_bytes,
        |size: ByteSize| bytes_in_range(size, 0, 1 << 30),
    )?;
    let limits = raw.limits;
    let (max_head_bytes, head_span) = check(
        src,
        "server.limits.max_head_bytes",
        limits.max_head_bytes,
        Limits::DEFAULT.max_head_bytes as u64,
        |size: ByteSize| bytes_in_range(size, HEAD_BYTES_RANGE.0, HEAD_BYTES_RANGE.1),
    )?;
    let (max_headers, _) = check(
        src,
        "server.limits.max_headers",
        limits.max_headers,
        Limits::DEFAULT.max_headers,
        |v| in_range(1, MAX_HEADERS_CAP as u64)(v).and_then(to_usize),
    )?;
    let (max_uri_bytes, uri_span) = check(
        src,
        "server.limits.max_uri_bytes",
        limits.max_uri_bytes,
        Limits::DEFAULT.max_uri_bytes as u64,
        |size: ByteSize| bytes_in_range(size, MIN_URI_BYTES, HEAD_BYTES_RANGE.1),
    )?;
    if max_uri_bytes > max_head_bytes {
        // Blame whichever of the two the file sets (the URI limit if both).
        let (uri, head) = (ByteSize(max_uri_bytes), ByteSize(max_head_bytes));
        return Err(if uri_span.is_some() || head_span.is_none() {
            src.invalid(
                "server.limits.max_uri_bytes",
                uri_span,
                format!("must not exceed server.limits.max_head_bytes ({head}), got {uri}"),
            )
        } else {
            src.invalid(
                "server.limits.max_head_bytes",
                head_span,
                format!("must be at least server.limits.max_uri_bytes ({uri}), got {head}"),
            )
        });
    }
    let (drain_ms, _) = check(
        src,
        "server.drain_ms",
        raw.drain_ms,
        defaults.drain_ms,
        in_range(0, 600_000),
    )?;
    let to_usize = |v: u64, key: &str, span| to_usize(v).map_err(|m| src.invalid(key, span, m));
    Ok(ServerConfig {
        drain_ms,
        listen,
        listen_more,
        workers,
        max_connections,
        header_timeout_ms,
        idle_timeout_ms,
        body_timeout_ms,
        body_min_rate,
        max_connections_per_client,
        pin_cpus: raw.pin_cpus.unwrap_or(defaults.pin_cpus),
        zerocopy_min_bytes,
        zerocopy_unregistered_min_bytes,
        limits: Limits {
            max_head_bytes: to_usize(max_head_bytes, "server.limits.max_head_bytes", None)?,
            max_headers,
            max_uri_bytes: to_usize(max_uri_bytes, "server.limits.max_uri_bytes", None)?,
        },
    })
}

pub(crate) fn bytes_in_range(size: ByteSize, lo: u64, hi: u64) -> Result<u64, String> {
    if (lo..=hi).contains(&size.0) {
        Ok(size.0)
    } else {
        Err(format!(
            "must be between {} and {}, got {size}",
            ByteSize(lo),
            ByteSize(hi)
        ))
    }
}

/// `host:port` with an IP address; names are not resolved.
/// `server.listen`: one address or a list, at most `MAX_LISTEN`, no two taking the same
/// port on some address.
fn listen_list(all: &[String]) -> Result<Vec<SocketAddr>, String> {
    if all.is_empty() {
        return Err("lists no address".into());
    }
    if all.len() > MAX_LISTEN {
        return Err(format!(
            "lists {} addresses, at most {MAX_LISTEN}",
            all.len()
        ));
    }
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(all.len());
    for s in all {
        let a = parse_listen(s)?;
        if let Some(b) = addrs.iter().find(|&&b| overlaps(a, b)) {
            return Err(format!("{a} takes the same port as {b}, listed before it"));
        }
        addrs.push(a);
    }
    Ok(addrs)
}

pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let hint = "expected an IP address and port like \"127.0.0.1:8080\" or \"[::1]:8080\"";
    match text.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_err() => Err(format!(
            "{hint}; the port must be a number from 0 to 65535, got {text:?}"
        )),
        _ => Err(format!("{hint}, got {text:?}")),
    }
}

/// The cache's settings, and where `cache.memory_bytes` was written.
fn cache(
    src: Source<'_>,
    raw: RawCache,
) -> Result<(CacheConfig, Option<Range<usize>>), ConfigError> {
    let defaults = CacheConfig::default();
    let (chunk_size, _) = check(
        src,
        "cache.chunk_size",
        raw.chunk_size,
        defaults.chunk_size,
        |size: ByteSize| {
            let (lo, hi) = CHUNK_SIZE_RANGE;
            if size.0.is_power_of_two() && (lo..=hi).contains(&size.0) {
                Ok(size.0)
            } else {
                Err(format!(
                    "must be a power of two between {} and {}, got {size}",
                    ByteSize(lo),
                    ByteSize(hi)
                ))
            }
        },
    )?;
    let (memory_bytes, memory_bytes_span) = check(
        src,
        "cache.memory_bytes",
        raw.memory_bytes,
        defaults.memory_bytes,
        |size: ByteSize| {
            if size.0 >= chunk_size {
                Ok(size.0)
            } else {
                Err(format!(
                    "must be at least cache.chunk_size ({}), got {size}",
                    ByteSize(chunk_size)
                ))
            }
        },
    )?;
    if memory_bytes < chunk_size {
        // Only reachable with the default memory size and a larger chunk.
        return Err(src.invalid(
            "cache.memory_bytes",
            None,
            format!(
                "the default ({}) is smaller than cache.chunk_size ({}); set it",
                ByteSize(memory_bytes),
                ByteSize(chunk_size)
            ),
        ));
    }
    let (meta_bytes, _) = check(
        src,
        "cache.meta_bytes",
        raw.meta_bytes,
        defaults.meta_bytes,
        |size: ByteSize| bytes_in_range(size, META_BYTES_RANGE.0, META_BYTES_RANGE.1),
    )?;
    let disk_dir = raw
        .disk_dir
        .map(|d| std::path::PathBuf::from(d.into_inner()));
    let (disk_bytes, _) = check(
        src,
        "cache.disk_bytes",
        raw.disk_bytes,
        DEFAULT_DISK_BYTES,
        |size: ByteSize| bytes_in_range(size, chunk_size, u64::MAX / 2),
    )?;
    let (disk_admission, _) = check(
        src,
        "cache.disk_admission",
        raw.disk_admission,
        DiskAdmission::SecondHitWhenFull,
        |s: String| match s.as_str() {
            "second-hit-when-full" => Ok(DiskAdmission::SecondHitWhenFull),
            "second-hit" => Ok(DiskAdmission::SecondHit),
            "always" => Ok(DiskAdmission::Always),
            _ => Err(format!(
                "must be \"second-hit-when-full\", \"second-hit\" or \"always\", got {s:?}"
            )),
        },
    )?;
    let (targeted_fields, _) = check(
        src,
        "cache.targeted_fields",
        raw.targeted_fields,
        defaults.targeted_fields,
        targeted_fields,
    )?;
    let config = CacheConfig {
        chunk_size,
        memory_bytes,
        meta_bytes,
        disk_dir,
        disk_bytes,
        disk_fsync: raw.disk_fsync.unwrap_or(false),
        disk_admission,
        targeted_fields,
    };
    Ok((config, memory_bytes_span))
}

/// `cache.targeted_fields`: at most 8 field names (RFC 9110 §5.1 tokens), none of the
/// fields relay reads otherwise, kept lower-case.
fn targeted_fields(names: Vec<String>) -> Result<Vec<String>, String> {
    if names.len() > 8 {
        return Err(format!("at most 8 field names, got {}", names.len()));
    }
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    names
        .into_iter()
        .map(|n| match n.to_ascii_lowercase() {
            l if l.is_empty() || !l.chars().all(tchar) => Err(format!("{n:?} is not a field name")),
            l if matches!(l.as_str(), "cache-control" | "expires" | "pragma") => Err(format!(
                "{n:?} is read as it is; list targeted fields such as \"CDN-Cache-Control\""
            )),
            l => Ok(l),
        })
        .collect()
}

fn admin(
    src: Source<'_>,
    raw: RawAdmin,
    server: &[std::net::SocketAddr],
) -> Result<AdminConfig, ConfigError> {
    let defaults = AdminConfig::default();
    let enabled = raw.enabled.unwrap_or(defaults.enabled);
    let (listen, span) = check(src, "admin.listen", raw.listen, defaults.listen, |s| {
        parse_listen(&s)
    })?;
    if enabled && let Some(server) = server.iter().find(|&&s| overlaps(listen, s)) {
        // `run` could not bind both (the server's listeners take the port first).
        return Err(src.invalid(
            "admin.listen",
            span,
            format!("{listen} is also server.listen ({server}): give the admin listener a port of its own"),
        ));
    }
    let (purge_token, _) = check(src, "admin.purge_token", raw.purge_token, None, |t| {
        if t.len() >= 16 && t.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Some(t))
        } else {
            Err("must be at least 16 visible ASCII characters".to_string())
        }
    })?;
    Ok(AdminConfig {
        enabled,
        listen,
        purge_token,
    })
}

/// `[log]`: `access` (a path, relative to the file's directory, or "-"), `access_format`,
/// `access_queue`.
fn log(
    src: Source<'_>,
    raw: crate::raw::RawLog,
    base_dir: &Path,
) -> Result<(LogConfig, Option<Range<usize>>), ConfigError> {
    let d = LogConfig::default();
    let (access, span) = check(src, "log.access", raw.access, None, |a: String| {
        match a.as_str() {
            "" => Ok(None),
            "-" => Ok(Some(AccessLogTarget::Stdout)),
            _ if a.ends_with('/') => Err(format!("must name a file, got {a:?}")),
            _ => Ok(Some(AccessLogTarget::File(base_dir.join(a)))),
        }
    })?;
    let (access_format, _) = check(
        src,
        "log.access_format",
        raw.access_format,
        d.access_format,
        |f: String| match f.as_str() {
            "logfmt" => Ok(AccessLogFormat::Logfmt),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err(format!("must be \"logfmt\" or \"json\", got {f:?}")),
        },
    )?;
    let (access_queue, _) = check(
        src,
        "log.access_queue",
        raw.access_queue,
        d.access_queue as u64,
        in_range(16, 1 << 24),
    )?;
    let log = LogConfig {
        access,
        access_format,
        access_queue: access_queue as usize,
    };
    Ok((log, span))
}

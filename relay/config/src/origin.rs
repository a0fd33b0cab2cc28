//! `[origin]` and its `[[origin.http]]` tables: every origin's servers (addresses or DNS
//! names), TLS, health check and cache policy, the resolver's settings; each origin checked
//! whatever the others hold, every error reported.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use crate::bytesize::ByteSize;
use crate::error::{ConfigError, ErrorKind, Source};
use crate::load::{bytes_in_range, check, check_or_default, in_range, keep};
use crate::raw::RawHttpOrigin;
use crate::schema::*;

/// `[origin]` and its `[[origin.http]]` tables: each origin checked whatever the others
/// hold (every error reported); the directory's span, for `load`'s check of it.
pub(crate) fn origin_config(
    src: Source<'_>,
    origin: Option<crate::raw::RawOrigin>,
    base_dir: &Path,
) -> Result<(OriginConfig, Option<Range<usize>>), ConfigError> {
    let Some(origin) = origin else {
        return Err(src.error(
            ErrorKind::MissingKey,
            "origin.directory",
            None,
            "missing: set origin.directory or at least one [[origin.http]]",
        ));
    };
    let mut errors = Vec::new();
    let dns = keep(&mut errors, dns(src, &origin)).unwrap_or_default();
    let read_ahead_bytes = check_or_default(
        &mut errors,
        src,
        "origin.read_ahead_bytes",
        origin.read_ahead_bytes,
        DEFAULT_READ_AHEAD_BYTES,
        |size: ByteSize| bytes_in_range(size, 0, 1 << 30),
    );
    let revalidate_ms = check_or_default(
        &mut errors,
        src,
        "origin.revalidate_ms",
        origin.revalidate_ms,
        DEFAULT_REVALIDATE_MS,
        in_range(1, MAX_TIMEOUT_MS),
    );
    let pass_buffer_bytes = check_or_default(
        &mut errors,
        src,
        "origin.pass_buffer_bytes",
        origin.pass_buffer_bytes,
        crate::schema::DEFAULT_PASS_BUFFER_BYTES,
        |size: ByteSize| bytes_in_range(size, 64 * 1024, 1 << 40),
    );
    let pass_buffer_per_client = check_or_default(
        &mut errors,
        src,
        "origin.pass_buffer_per_client",
        origin.pass_buffer_per_client,
        crate::schema::DEFAULT_PASS_BUFFER_PER_CLIENT,
        |share| crate::share::client_share(share, pass_buffer_bytes),
    );
    let mut span = None;
    let directory = match origin.directory {
        None => None,
        Some(d) => {
            let s = d.span();
            let d = d.into_inner();
            if d.is_empty() {
                keep(
                    &mut errors,
                    Err::<(), _>(src.invalid(
                        "origin.directory",
                        Some(s.clone()),
                        "must not be empty",
                    )),
                );
            }
            span = Some(s);
            Some(base_dir.join(d))
        }
    };
    let any_http = !origin.http.is_empty();
    let mut http = Vec::with_capacity(origin.http.len());
    for (i, raw) in origin.http.into_iter().enumerate() {
        if let Some(o) = keep(&mut errors, http_origin(src, i, raw, base_dir)) {
            http.push(o);
        }
    }
    if directory.is_none() && !any_http {
        // Point at the [origin] table header when there is one.
        let header = src
            .text
            .match_indices("[origin]")
            .map(|(at, _)| at)
            .find(|&at| at == 0 || src.text.as_bytes()[at - 1] == b'\n');
        keep(
            &mut errors,
            Err::<(), _>(src.error(
                ErrorKind::MissingKey,
                "origin.directory",
                header.map(|at| at..at + 8),
                "missing: set origin.directory or at least one [[origin.http]]",
            )),
        );
    }
    if let Some(e) = ConfigError::all(errors) {
        return Err(e);
    }
    let config = OriginConfig {
        directory,
        http,
        revalidate_ms,
        pass_buffer_bytes,
        pass_buffer_per_client,
        read_ahead_bytes,
        dns,
    };
    Ok((config, span))
}

fn http_origin(
    src: Source<'_>,
    i: usize,
    raw: RawHttpOrigin,
    base_dir: &Path,
) -> Result<HttpOrigin, ConfigError> {
    use crate::schema::http_defaults as d;
    let key = |k: &str| format!("origin.http[{i}].{k}");
    let url_span = raw.url.span();
    let url = raw.url.get_ref().clone();
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, Some(rest)),
        (None, rest) => (false, rest),
    };
    let authority = rest
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/') && !a.contains('@'))
        .map(str::to_string)
        .ok_or_else(|| {
            src.invalid(
                &key("url"),
                Some(url_span.clone()),
                format!(
                    "must be http://host[:port] or https://host[:port] with no path, got {url:?}"
                ),
            )
        })?;
    let default_port = if https { 443 } else { 80 };
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']');
    let with_port = if has_port {
        authority.clone()
    } else {
        format!("{authority}:{default_port}")
    };
    let servers = match raw.servers.clone() {
        Some(list) => origin_servers(src, &key, list, default_port)?,
        None => {
            let host = server_host(&authority, default_port).map_err(|e| {
                src.invalid(
                    &key("url"),
                    Some(url_span.clone()),
                    format!("{e}, got {url:?}"),
                )
            })?;
            vec![OriginServer {
                name: with_port.clone(),
                host,
                weight: 1,
                backup: false,
            }]
        }
    };
    let tls = origin_tls(src, &key, &raw, https, &authority, &url_span, base_dir)?;
    let cache = cache_policy(src, &key, &raw)?;
    // A name given to verify is the origin's name: the Host sent too, unless host_header
    // says otherwise (with the URL's port when it is not 443).
    let authority = match (raw.tls_server_name.as_ref(), tls.as_ref()) {
        (Some(_), Some(t)) if has_port && !with_port.ends_with(":443") => {
            let port = with_port.rsplit_once(':').map_or("", |(_, p)| p);
            format!("{}:{port}", bracketed(&t.server_name))
        }
        (Some(_), Some(t)) => bracketed(&t.server_name),
        _ => authority,
    };
    let (authority, _) = check(src, &key("host_header"), raw.host_header, authority, |h| {
        // (What goes in the Host field: no whitespace, controls, or a path.)
        let ok = !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        match ok {
            true => Ok(h),
            false => Err(format!("must be host[:port], got {h:?}")),
        }
    })?;
    let host = raw.host.map(|h| h.into_inner().to_ascii_lowercase());
    let (prefix, _) = check(
        src,
        &key("prefix"),
        raw.prefix,
        "/".to_string(),
        |p: String| {
            if p.starts_with('/') {
                Ok(p)
            } else {
                Err(format!("must start with '/', got {p:?}"))
            }
        },
    )?;
    let ms = |k: &str, v: Option<Spanned<u64>>, default: u64| {
        check(src, &key(k), v, default, in_range(1, MAX_TIMEOUT_MS)).map(|(v, _)| v)
    };
    let count = |k: &str, v: Option<Spanned<u64>>, default: u64, lo: u64, hi: u64| {
        check(src, &key(k), v, default, in_range(lo, hi)).map(|(v, _)| v)
    };
    let health_check = match raw.health_check.clone() {
        Some(h) => Some(health_check(src, &key, h)?),
        None => None,
    };
    Ok(HttpOrigin {
        servers,
        health_check,
        authority,
        tls,
        cache,
        host,
        prefix,
        connect_timeout_ms: ms(
            "connect_timeout_ms",
            raw.connect_timeout_ms,
            d::CONNECT_TIMEOUT_MS,
        )?,
        first_byte_timeout_ms: ms(
            "first_byte_timeout_ms",
            raw.first_byte_timeout_ms,
            d::FIRST_BYTE_TIMEOUT_MS,
        )?,
        idle_timeout_ms: ms("idle_timeout_ms", raw.idle_timeout_ms, d::IDLE_TIMEOUT_MS)?,
        retries: count("retries", raw.retries, d::RETRIES, 0, 10)? as u32,
        down_after_failures: count(
            "down_after_failures",
            raw.down_after_failures,
            d::DOWN_AFTER_FAILURES,
            1,
            1000,
        )? as u32,
        down_ms: ms("down_ms", raw.down_ms, d::DOWN_MS)?,
        max_connections: count(
            "max_connections",
            raw.max_connections,
            d::MAX_CONNECTIONS,
            1,
            65536,
        )? as usize,
    })
}

/// The TLS settings of origin `key(..)`: None for an `http://` one (where any `tls_` key is
/// refused); for an `https://` one, the name to verify (`tls_server_name`, else the URL's
/// host), the CA file (read here: a missing file, or one without a PEM certificate, is
/// refused now rather than at the first miss) and the loudly named opt-out.
/// `name` as it stands in a Host field: an IPv6 address in brackets.
fn bracketed(name: &str) -> String {
    match name.contains(':') {
        true => format!("[{name}]"),
        false => name.to_string(),
    }
}

fn origin_tls(
    src: Source<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawHttpOrigin,
    https: bool,
    authority: &str,
    url_span: &Range<usize>,
    base_dir: &Path,
) -> Result<Option<OriginTls>, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    if !https {
        let set = [
            ("tls_ca_file", raw.tls_ca_file.as_ref().map(Spanned::span)),
            (
                "tls_server_name",
                raw.tls_server_name.as_ref().map(Spanned::span),
            ),
            (
                "tls_insecure_skip_verify",
                raw.tls_insecure_skip_verify.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((name, span)) = set.into_iter().find(|(_, s)| s.is_some()) {
            return Err(src.invalid(
                &key(name),
                span,
                "is for an https:// origin; this url is http://".to_string(),
            ));
        }
        return Ok(None);
    }
    // The URL's host: its port and an IPv6 literal's brackets off.
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let (server_name, _) = check(
        src,
        &key("tls_server_name"),
        raw.tls_server_name.clone(),
        host.to_string(),
        Ok,
    )?;
    if rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err() {
        let (k, span) = match raw.tls_server_name.as_ref() {
            Some(s) => ("tls_server_name", s.span()),
            None => ("url", url_span.clone()),
        };
        return Err(src.invalid(
            &key(k),
            Some(span),
            format!("{server_name:?} is not a DNS name or an IP address to verify"),
        ));
    }
    let (ca_file, _) = check(
        src,
        &key("tls_ca_file"),
        raw.tls_ca_file.clone(),
        None,
        |f: String| {
            let path = base_dir.join(&f);
            // Every PEM section must read (relay's start reads them all again).
            let found = rustls_pki_types::CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len();
            match found {
                0 => Err(format!("{} holds no PEM certificate", path.display())),
                _ => Ok(Some(path)),
            }
        },
    )?;
    let (insecure_skip_verify, _) = check(
        src,
        &key("tls_insecure_skip_verify"),
        raw.tls_insecure_skip_verify.clone(),
        false,
        Ok,
    )?;
    Ok(Some(OriginTls {
        server_name,
        ca_file,
        insecure_skip_verify,
    }))
}

/// The longest TTL or stale window: a year.
const MAX_TTL: u64 = 365 * 86_400;

/// A TTL: whole seconds (`600`), or a number and a unit (`"90s"`, `"10m"`, `"2h"`, `"1d"`);
/// at most a year.
fn ttl(v: toml::Value) -> Result<u32, String> {
    let secs = match &v {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (n, unit) = s.split_at(split);
            let unit = match unit.trim() {
                "" | "s" => Some(1),
                "m" => Some(60),
                "h" => Some(3600),
                "d" => Some(86_400),
                _ => None,
            };
            n.parse::<u64>()
                .ok()
                .zip(unit)
                .map(|(n, u)| n.saturating_mul(u))
        }
        _ => None,
    };
    match secs {
        Some(s) if s <= MAX_TTL => Ok(s as u32),
        Some(_) => Err(format!("must be at most a year ({MAX_TTL} s), got {v}")),
        None => Err(format!(
            "must be seconds (600) or a number and a unit (\"90s\", \"10m\", \"2h\", \"1d\"), got {v}"
        )),
    }
}

/// The `cache_` keys of origin `key(..)`.
fn cache_policy(
    src: Source<'_>,
    key: &dyn Fn(&str) -> String,
    raw: &RawHttpOrigin,
) -> Result<CachePolicy, ConfigError> {
    let secs = |k: &str, v: &Option<Spanned<toml::Value>>| {
        check(src, &key(k), v.clone(), None, |v| ttl(v).map(Some)).map(|(v, _)| v)
    };
    let flag = |k: &str, v: &Option<Spanned<bool>>| {
        check(src, &key(k), v.clone(), false, Ok).map(|(v, _)| v)
    };
    let (status_ttl, _) = check(
        src,
        &key("cache_status_ttl"),
        raw.cache_status_ttl.clone(),
        Vec::new(),
        |table: toml::Table| {
            table
                .into_iter()
                .map(|(status, v)| {
                    let m = status_match(&status).ok_or_else(|| {
                        format!(
                            "{status:?} is not a status (200 to 599) or a class (\"2xx\" to \"5xx\")"
                        )
                    })?;
                    Ok((m, ttl(v).map_err(|e| format!("{status:?} {e}"))?))
                })
                .collect::<Result<Vec<_>, String>>()
        },
    )?;
    let policy = CachePolicy {
        default_ttl: secs("cache_default_ttl", &raw.cache_default_ttl)?,
        status_ttl,
        ttl_min: secs("cache_ttl_min", &raw.cache_ttl_min)?,
        ttl_max: secs("cache_ttl_max", &raw.cache_ttl_max)?,
        ignore_no_cache: flag("cache_ignore_no_cache", &raw.cache_ignore_no_cache)?,
        ignore_private: flag("cache_ignore_private", &raw.cache_ignore_private)?,
        ignore_set_cookie: flag("cache_ignore_set_cookie", &raw.cache_ignore_set_cookie)?,
        stale_while_revalidate: secs(
            "cache_stale_while_revalidate",
            &raw.cache_stale_while_revalidate,
        )?,
        stale_if_error: secs("cache_stale_if_error", &raw.cache_stale_if_error)?,
        query: check(
            src,
            &key("cache_key_query"),
            raw.cache_key_query.clone(),
            QueryKey::Keep,
            |v: String| match v.as_str() {
                "keep" => Ok(QueryKey::Keep),
                "sort" => Ok(QueryKey::Sort),
                "drop" => Ok(QueryKey::Drop),
                _ => Err(format!("must be \"keep\", \"sort\" or \"drop\", got {v:?}")),
            },
        )?
        .0,
        query_drop: check(
            src,
            &key("cache_key_query_drop"),
            raw.cache_key_query_drop.clone(),
            Vec::new(),
            |names: Vec<String>| match names
                .iter()
                .find(|n| n.is_empty() || n.contains(['&', '=']))
            {
                Some(bad) => Err(format!("{bad:?} is not a parameter name")),
                None => Ok(names),
            },
        )?
        .0,
    };
    if policy.query == QueryKey::Drop && !policy.query_drop.is_empty() {
        return Err(src.invalid(
            &key("cache_key_query_drop"),
            raw.cache_key_query_drop.as_ref().map(Spanned::span),
            "has nothing to drop from: cache_key_query = \"drop\" drops the whole query"
                .to_string(),
        ));
    }
    if let (Some(min), Some(max)) = (policy.ttl_min, policy.ttl_max)
        && min > max
    {
        return Err(src.invalid(
            &key("cache_ttl_min"),
            raw.cache_ttl_min.as_ref().map(Spanned::span),
            format!("{min} s is above cache_ttl_max, {max} s"),
        ));
    }
    Ok(policy)
}

/// `"404"` or `"4xx"`.
fn status_match(s: &str) -> Option<StatusMatch> {
    let b = s.as_bytes();
    if b.len() != 3 || !(b'2'..=b'5').contains(&b[0]) {
        return None;
    }
    let class = u16::from(b[0] - b'0');
    if &s[1..] == "xx" {
        return Some(StatusMatch::Class(class));
    }
    s.parse::<u16>().ok().map(StatusMatch::Code)
}

/// `servers = [...]`: each server an address or a DNS name (its addresses looked up by the
/// upstream, each a server of that weight), the port the scheme's when left out. At least
/// one that is not a backup; at most [`MAX_ORIGIN_SERVERS`] (a name counts one here).
fn origin_servers(
    src: Source<'_>,
    key: &dyn Fn(&str) -> String,
    list: Spanned<Vec<crate::raw::RawOriginServer>>,
    default_port: u16,
) -> Result<Vec<OriginServer>, ConfigError> {
    let span = list.span();
    let invalid = |message: String| src.invalid(&key("servers"), Some(span.clone()), message);
    let mut servers = Vec::new();
    for s in list.into_inner() {
        let weight = s.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            return Err(invalid(format!(
                "{:?}: weight must be between 1 and 1000, got {weight}",
                s.address
            )));
        }
        let host = server_host(&s.address, default_port)
            .map_err(|e| invalid(format!("{e}, got {:?}", s.address)))?;
        let name = match &host {
            ServerHost::Name { name, port } => format!("{name}:{port}"),
            ServerHost::Address(a) => a.to_string(),
        };
        servers.push(OriginServer {
            name,
            host,
            weight: weight as u32,
            backup: s.backup.unwrap_or(false),
        });
    }
    if servers.len() > MAX_ORIGIN_SERVERS {
        return Err(invalid(format!(
            "{} servers: at most {MAX_ORIGIN_SERVERS}",
            servers.len()
        )));
    }
    if servers.iter().all(|s| s.backup) {
        return Err(invalid("needs a server that is not a backup".to_string()));
    }
    Ok(servers)
}

/// A server written as `host[:port]`: an IPv4 address, a bracketed IPv6 address or a DNS
/// name (lower-cased, a trailing dot dropped), with `default_port` when it has none.
pub(crate) fn server_host(written: &str, default_port: u16) -> Result<ServerHost, String> {
    if let Ok(a) = written.parse::<SocketAddr>() {
        return Ok(ServerHost::Address(a));
    }
    if let Ok(ip) = written.parse::<std::net::Ipv4Addr>() {
        return Ok(ServerHost::Address(SocketAddr::new(
            ip.into(),
            default_port,
        )));
    }
    if let Some(ip) = written.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
        return match ip.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok(ServerHost::Address(SocketAddr::new(
                ip.into(),
                default_port,
            ))),
            Err(_) => Err("not an IPv6 address in brackets".to_string()),
        };
    }
    let (host, port) = match written.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p != 0 => (h, p),
            _ => return Err("a port must be 1 to 65535".to_string()),
        },
        None => (written, default_port),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // (All digits and dots would be an IPv4 address, and it did not parse as one.)
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if host.is_empty() || host.len() > 253 || numeric || !host.split('.').all(label_ok) {
        return Err("must be an IP address or a DNS name, with an optional :port".to_string());
    }
    Ok(ServerHost::Name {
        name: host.to_ascii_lowercase(),
        port,
    })
}

/// `[origin]`'s `resolver`, `resolver_timeout_ms`, `dns_ttl_min_ms`, `dns_ttl_max_ms`.
fn dns(src: Source<'_>, origin: &crate::raw::RawOrigin) -> Result<DnsConfig, ConfigError> {
    let d = DnsConfig::default();
    let (resolver, _) = check(
        src,
        "origin.resolver",
        origin.resolver.clone(),
        Vec::new(),
        |list: Vec<String>| {
            if list.len() > 8 {
                return Err(format!("at most 8 name servers, got {}", list.len()));
            }
            list.iter()
                .map(|a| match a.parse::<std::net::IpAddr>() {
                    Ok(ip) => Ok(SocketAddr::new(ip, 53)),
                    Err(_) => match server_host(a, 53) {
                        Ok(ServerHost::Address(a)) => Ok(a),
                        _ => Err(format!(
                            "must be IP addresses with an optional :port, got {a:?}"
                        )),
                    },
                })
                .collect()
        },
    )?;
    let ms = |k: &str, v: &Option<Spanned<u64>>, default: u64| {
        check(src, k, v.clone(), default, in_range(1, MAX_TIMEOUT_MS)).map(|(v, _)| v)
    };
    let timeout_ms = ms(
        "origin.resolver_timeout_ms",
        &origin.resolver_timeout_ms,
        d.timeout_ms,
    )?;
    let ttl_min_ms = ms(
        "origin.dns_ttl_min_ms",
        &origin.dns_ttl_min_ms,
        d.ttl_min_ms,
    )?;
    let (ttl_max_ms, _) = check(
        src,
        "origin.dns_ttl_max_ms",
        origin.dns_ttl_max_ms.clone(),
        d.ttl_max_ms.max(ttl_min_ms),
        |v: u64| match v >= ttl_min_ms && v <= MAX_TIMEOUT_MS {
            true => Ok(v),
            false => Err(format!(
                "must be between dns_ttl_min_ms ({ttl_min_ms}) and {MAX_TIMEOUT_MS}, got {v}"
            )),
        },
    )?;
    Ok(DnsConfig {
        resolver,
        timeout_ms,
        ttl_min_ms,
        ttl_max_ms,
    })
}

/// `health_check = { path, interval_ms (2000), timeout_ms (1000), fall (3), rise (2) }`.
fn health_check(
    src: Source<'_>,
    key: &dyn Fn(&str) -> String,
    raw: Spanned<crate::raw::RawHealthCheck>,
) -> Result<HealthCheck, ConfigError> {
    let span = raw.span();
    let h = raw.into_inner();
    let invalid = |message: String| src.invalid(&key("health_check"), Some(span.clone()), message);
    if !h.path.starts_with('/') || h.path.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "path must start with '/' and hold no spaces or controls, got {:?}",
            h.path
        )));
    }
    let within = |name: &str, v: Option<u64>, default: u64, lo: u64, hi: u64| {
        let v = v.unwrap_or(default);
        match (lo..=hi).contains(&v) {
            true => Ok(v),
            false => Err(invalid(format!(
                "{name} must be between {lo} and {hi}, got {v}"
            ))),
        }
    };
    let interval_ms = within("interval_ms", h.interval_ms, 2000, 50, MAX_TIMEOUT_MS)?;
    let timeout_ms = within("timeout_ms", h.timeout_ms, 1000, 10, MAX_TIMEOUT_MS)?;
    if timeout_ms > interval_ms {
        return Err(invalid(format!(
            "timeout_ms ({timeout_ms}) must not pass interval_ms ({interval_ms})"
        )));
    }
    Ok(HealthCheck {
        path: h.path,
        interval_ms,
        timeout_ms,
        fall: within("fall", h.fall, 3, 1, 100)? as u32,
        rise: within("rise", h.rise, 2, 1, 100)? as u32,
    })
}

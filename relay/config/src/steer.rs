//! `[steer]`: from the raw table to [`SteerConfig`], every error naming its dotted key
//! (`steer.nodes[1].mac`) and place.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use toml::Spanned;

use crate::error::{ConfigError, ErrorKind, Source};
use crate::load::{check, in_range};
use crate::raw::{RawSteer, RawSteerGuard, RawSteerHealth, RawSteerNode, RawSteerService};
use crate::schema::*;

/// `[steer]` checked; `has_cluster`: whether the config has a `[cluster]` (which
/// `steer.cluster_nodes` needs).
pub(crate) fn steer(
    src: Source<'_>,
    raw: RawSteer,
    has_cluster: bool,
) -> Result<SteerConfig, ConfigError> {
    let defaults = SteerConfig::default();
    let iface = optional(src, "steer.iface", raw.iface, |s| {
        let bad = s.is_empty()
            || s.len() > 15
            || s == "."
            || s == ".."
            || s.bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
        if bad {
            Err(format!(
                "must be an interface name (1 to 15 bytes, no '/', ':' or spaces), got {s:?}"
            ))
        } else {
            Ok(s.to_owned())
        }
    })?;
    let (pin_root, _) = check(
        src,
        "steer.pin_root",
        raw.pin_root,
        defaults.pin_root,
        |s| {
            let path = PathBuf::from(&s);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(format!("must be an absolute path, got {s:?}"))
            }
        },
    )?;
    let (ring_size, _) = check(
        src,
        "steer.ring_size",
        raw.ring_size,
        defaults.ring_size,
        |v| {
            let (lo, hi) = RING_SIZE_RANGE;
            match u32::try_from(v) {
                Ok(n) if (lo..=hi).contains(&n) && is_prime(n) => Ok(n),
                _ => Err(format!("must be a prime between {lo} and {hi}, got {v}")),
            }
        },
    )?;
    let (max_services, max_services_span) = check(
        src,
        "steer.max_services",
        raw.max_services,
        defaults.max_services,
        |v| in_range(1, u64::from(MAX_STEER_SERVICES))(v).map(|v| v as u32),
    )?;
    let (flow_table_entries, _) = check(
        src,
        "steer.flow_table_entries",
        raw.flow_table_entries,
        defaults.flow_table_entries,
        |v| in_range(FLOW_TABLE_RANGE.0, FLOW_TABLE_RANGE.1)(v).map(|v| v as u32),
    )?;
    let pass_or_drop = |key: &str, field, default| {
        check(src, key, field, default, |s: String| match s.as_str() {
            "pass" => Ok(SteerPolicy::Pass),
            "drop" => Ok(SteerPolicy::Drop),
            _ => Err(format!("must be \"pass\" or \"drop\", got {s:?}")),
        })
        .map(|(policy, _)| policy)
    };
    let malformed = pass_or_drop("steer.malformed", raw.malformed, defaults.malformed)?;
    let fragments = pass_or_drop("steer.fragments", raw.fragments, defaults.fragments)?;
    let (ip_options, _) = check(
        src,
        "steer.ip_options",
        raw.ip_options,
        defaults.ip_options,
        |s: String| match s.as_str() {
            "steer" => Ok(SteerPolicy::Steer),
            "pass" => Ok(SteerPolicy::Pass),
            "drop" => Ok(SteerPolicy::Drop),
            _ => Err(format!(
                "must be \"steer\", \"pass\" or \"drop\", got {s:?}"
            )),
        },
    )?;
    let (encap_source_v4, _) = check(
        src,
        "steer.encap_source_v4",
        raw.encap_source_v4,
        defaults.encap_source_v4,
        |s| match parse_prefix(&s)? {
            (IpAddr::V4(addr), len) if (8..=32).contains(&len) => Ok((addr, len)),
            _ => Err(format!(
                "must be an IPv4 prefix from /8 to /32 like \"172.16.0.0/16\", got {s:?}"
            )),
        },
    )?;
    let (encap_source_v6, _) = check(
        src,
        "steer.encap_source_v6",
        raw.encap_source_v6,
        defaults.encap_source_v6,
        |s| match parse_prefix(&s)? {
            (IpAddr::V6(addr), len) if (64..=128).contains(&len) => Ok((addr, len)),
            _ => Err(format!(
                "must be an IPv6 prefix from /64 to /128 like \"100::/64\", got {s:?}"
            )),
        },
    )?;
    let (proximity_rtt_us, _) = check(
        src,
        "steer.proximity_rtt_us",
        raw.proximity_rtt_us,
        defaults.proximity_rtt_us,
        in_range(1, 60_000_000),
    )?;
    let (cluster_nodes, _) =
        check(
            src,
            "steer.cluster_nodes",
            raw.cluster_nodes,
            false,
            |on| match on && !has_cluster {
                true => Err(
                    "the site's relays come from [cluster], which this config has not: \
                         add [cluster] or list the relays as [[steer.nodes]]"
                        .to_owned(),
                ),
                false => Ok(on),
            },
        )?;
    let cluster_next_hop =
        optional(
            src,
            "steer.cluster_next_hop",
            raw.cluster_next_hop,
            |s| match parse_ip(s)? {
                IpAddr::V6(_) => Err(format!(
                    "IPv6 next hops are not resolved; the site's relays must share the link, \
                 got {s:?}"
                )),
                ip => Ok(ip),
            },
        )?;
    let guard = guard(src, raw.guard)?;
    let health = health(src, raw.health)?;
    let services = services(src, raw.services)?;
    if services.len() > max_services as usize {
        return Err(src.invalid(
            "steer.max_services",
            max_services_span,
            format!(
                "{} services are configured but steer.max_services is {max_services}",
                services.len()
            ),
        ));
    }
    let nodes = nodes(src, raw.nodes)?;
    Ok(SteerConfig {
        iface,
        pin_root,
        ring_size,
        max_services,
        flow_table_entries,
        malformed,
        fragments,
        ip_options,
        decap: raw.decap.unwrap_or(defaults.decap),
        encap_source_v4,
        encap_source_v6,
        proximity_rtt_us,
        cluster_nodes,
        cluster_next_hop,
        guard,
        health,
        services,
        nodes,
    })
}

fn health(src: Source<'_>, raw: RawSteerHealth) -> Result<SteerHealth, ConfigError> {
    let defaults = SteerHealth::default();
    let (interval_ms, _) = check(
        src,
        "steer.health.interval_ms",
        raw.interval_ms,
        defaults.interval_ms,
        in_range(10, 3_600_000),
    )?;
    let (timeout_ms, _) = check(
        src,
        "steer.health.timeout_ms",
        raw.timeout_ms,
        defaults.timeout_ms,
        in_range(1, 60_000),
    )?;
    let count = |key: &str, field, default| {
        check(src, key, field, default, |v| {
            in_range(1, 1000)(v).map(|v| v as u32)
        })
        .map(|(n, _)| n)
    };
    let down_after = count(
        "steer.health.down_after",
        raw.down_after,
        defaults.down_after,
    )?;
    let up_after = count("steer.health.up_after", raw.up_after, defaults.up_after)?;
    let (path, _) = check(
        src,
        "steer.health.path",
        raw.path,
        defaults.path,
        |s: String| {
            if s.starts_with('/') && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(s)
            } else {
                Err(format!(
                    "must be a path starting with '/', without spaces, got {s:?}"
                ))
            }
        },
    )?;
    let (rtt_change_percent, _) = check(
        src,
        "steer.health.rtt_change_percent",
        raw.rtt_change_percent,
        defaults.rtt_change_percent,
        |v| in_range(1, 1000)(v).map(|v| v as u32),
    )?;
    Ok(SteerHealth {
        interval_ms,
        timeout_ms,
        down_after,
        up_after,
        path,
        measure_rtt: raw.measure_rtt.unwrap_or(defaults.measure_rtt),
        rtt_change_percent,
    })
}

fn guard(src: Source<'_>, raw: RawSteerGuard) -> Result<SteerGuard, ConfigError> {
    let defaults = SteerGuard::default();
    let (new_flows_per_second, _) = check(
        src,
        "steer.guard.new_flows_per_second",
        raw.new_flows_per_second,
        defaults.new_flows_per_second,
        in_range(0, 1_000_000_000),
    )?;
    let (new_flow_burst, _) = check(
        src,
        "steer.guard.new_flow_burst",
        raw.new_flow_burst,
        defaults.new_flow_burst,
        in_range(1, 1_000_000),
    )?;
    let (rate_table_entries, _) = check(
        src,
        "steer.guard.rate_table_entries",
        raw.rate_table_entries,
        defaults.rate_table_entries,
        |v| in_range(RATE_TABLE_RANGE.0, RATE_TABLE_RANGE.1)(v).map(|v| v as u32),
    )?;
    let mut blocklist = Vec::with_capacity(raw.blocklist.len());
    for (i, entry) in raw.blocklist.into_iter().enumerate() {
        let key = format!("steer.guard.blocklist[{i}]");
        let (prefix, _) = check(src, &key, Some(entry), (IpAddr::from([0; 4]), 0), |s| {
            parse_prefix(&s)
        })?;
        blocklist.push(prefix);
    }
    Ok(SteerGuard {
        new_flows_per_second,
        new_flow_burst,
        rate_table_entries,
        blocklist,
    })
}

fn services(src: Source<'_>, raw: Vec<RawSteerService>) -> Result<Vec<SteerService>, ConfigError> {
    let mut services = Vec::with_capacity(raw.len());
    let mut seen = HashSet::new();
    for (i, service) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("steer.services[{i}].{field}");
        let address_span = service.address.span();
        let (address, _) = check(
            src,
            &key("address"),
            Some(service.address),
            IpAddr::from([0; 4]),
            |s| parse_ip(&s),
        )?;
        let (port, _) = check(src, &key("port"), Some(service.port), 0, |v| {
            in_range(1, 65535)(v).map(|v| v as u16)
        })?;
        let (protocol, _) = check(
            src,
            &key("protocol"),
            service.protocol,
            SteerProtocol::Tcp,
            |s: String| match s.as_str() {
                "tcp" => Ok(SteerProtocol::Tcp),
                "udp" => Ok(SteerProtocol::Udp),
                _ => Err(format!("must be \"tcp\" or \"udp\", got {s:?}")),
            },
        )?;
        let service = SteerService {
            address,
            port,
            protocol,
        };
        if !seen.insert(service) {
            return Err(src.invalid(
                &key("address"),
                Some(address_span),
                format!("{address} port {port} is configured twice"),
            ));
        }
        services.push(service);
    }
    Ok(services)
}

fn nodes(src: Source<'_>, raw: Vec<RawSteerNode>) -> Result<Vec<SteerNode>, ConfigError> {
    if raw.len() > MAX_STEER_NODES {
        return Err(src.invalid(
            "steer.nodes",
            None,
            format!("at most {MAX_STEER_NODES} nodes, got {}", raw.len()),
        ));
    }
    let mut nodes: Vec<SteerNode> = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (i, node) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("steer.nodes[{i}].{field}");
        let name_span = node.name.span();
        let (name, _) = check(src, &key("name"), Some(node.name), String::new(), |s| {
            if s.is_empty() || s.len() > 64 {
                Err(format!("must be 1 to 64 bytes, got {s:?}"))
            } else {
                Ok(s)
            }
        })?;
        if !names.insert(name.clone()) {
            return Err(src.invalid(
                &key("name"),
                Some(name_span),
                format!("node {name:?} is configured twice"),
            ));
        }
        let address = optional(src, &key("address"), node.address, |s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("must be an IPv4 address, got {s:?}"))
        })?;
        let address_v6 = optional(src, &key("address_v6"), node.address_v6, |s| {
            s.parse::<Ipv6Addr>()
                .map_err(|_| format!("must be an IPv6 address, got {s:?}"))
        })?;
        let mac = optional(src, &key("mac"), node.mac, parse_mac)?;
        let next_hop = optional(src, &key("next_hop"), node.next_hop, parse_ip)?;
        let (weight, _) = check(src, &key("weight"), node.weight, DEFAULT_NODE_WEIGHT, |v| {
            in_range(0, MAX_NODE_WEIGHT)(v).map(|v| v as u32)
        })?;
        let (rtt_us, _) = check(src, &key("rtt_us"), node.rtt_us, 0, in_range(0, 60_000_000))?;
        let health_check = optional(src, &key("health_check"), node.health_check, |s| {
            s.parse::<SocketAddr>().map_err(|_| {
                format!("must be an address and port like \"192.0.2.12:9090\", got {s:?}")
            })
        })?;
        let local = node.local.unwrap_or(false);
        if local && nodes.iter().any(|n| n.local) {
            return Err(src.invalid(
                &key("local"),
                Some(name_span),
                "only one node can be the local one",
            ));
        }
        if !local {
            let missing = if address.is_none() && address_v6.is_none() {
                Some("a remote node needs `address` or `address_v6`")
            } else if mac.is_none() && next_hop.is_none() {
                Some("a remote node needs `mac` or `next_hop`")
            } else {
                None
            };
            if let Some(message) = missing {
                return Err(src.error(
                    ErrorKind::MissingKey,
                    &key("name"),
                    Some(name_span),
                    message,
                ));
            }
        }
        nodes.push(SteerNode {
            name,
            address,
            address_v6,
            mac,
            next_hop,
            local,
            weight,
            up: node.up.unwrap_or(true),
            rtt_us,
            health_check,
        });
    }
    Ok(nodes)
}

/// An optional string key parsed by `parse`; absent is `None`.
fn optional<T>(
    src: Source<'_>,
    key: &str,
    field: Option<Spanned<String>>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match field {
        None => Ok(None),
        Some(field) => {
            let span = field.span();
            parse(field.get_ref())
                .map(Some)
                .map_err(|message| src.invalid(key, Some(span), message))
        }
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("must be an IP address, got {text:?}"))
}

/// `ADDR/LEN` (or a bare address: all its bits). Host bits must be zero.
pub(crate) fn parse_prefix(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr = parse_ip(addr)
        .map_err(|_| format!("must be a prefix like \"10.0.0.0/8\", got {text:?}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(len) => match len.parse::<u8>() {
            Ok(len) if len <= max => len,
            _ => return Err(format!("prefix length must be 0 to {max}, got {text:?}")),
        },
    };
    let bits = match addr {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    };
    let host_bits = u32::from(max - len);
    let host_mask = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
    if host_bits > 0 && bits & host_mask != 0 {
        return Err(format!("{text:?} has host bits set beyond /{len}"));
    }
    Ok((addr, len))
}

pub(crate) fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().unwrap_or("");
        *byte = match u8::from_str_radix(part, 16) {
            Ok(b) if part.len() == 2 => b,
            _ => {
                return Err(format!(
                    "must be a MAC address like \"02:00:00:00:00:01\", got {text:?}"
                ));
            }
        };
    }
    if parts.next().is_some() {
        return Err(format!(
            "must be a MAC address like \"02:00:00:00:00:01\", got {text:?}"
        ));
    }
    Ok(mac)
}

pub(crate) fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

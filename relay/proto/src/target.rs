//! What a request names: its authority — the `Host` field, or an absolute-form target's own
//! (RFC 9112 §3.2, §3.2.2; RFC 9110 §7.2) — validated as `uri-host [ ":" port ]` (RFC 3986
//! §3.2.2, §3.2.3) and written in one normal form for cache keys; and the request-target
//! split into path and query per form.

use crate::request::{ParseError, decimal};
use std::net::Ipv6Addr;

/// The `http` scheme's default port (RFC 9110 §4.2.1).
pub const HTTP_PORT: u16 = 80;

/// A request's authority: `uri-host [ ":" port ]`, validated, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// The host as sent, less one trailing dot: a reg-name (possibly empty), an IPv4 address
    /// or a bracketed IP-literal. ASCII; hosts compare case-insensitively.
    pub host: &'a str,
    /// The port, if one was given (an empty port, `host:`, is none).
    pub port: Option<u16>,
}

impl<'a> Authority<'a> {
    /// Validates a `Host` field value or an absolute-form target's authority: no userinfo,
    /// path, query, whitespace or other byte a host cannot hold; a decimal port up to 65535.
    pub fn parse(value: &'a [u8]) -> Result<Authority<'a>, ParseError> {
        let value = std::str::from_utf8(value.trim_ascii()).map_err(|_| ParseError::InvalidHost)?;
        let (host, port) = if value.starts_with('[') {
            let end = value.find(']').ok_or(ParseError::InvalidHost)?;
            let (literal, rest) = value.split_at(end + 1);
            if !ip_literal(literal) {
                return Err(ParseError::InvalidHost);
            }
            match rest.strip_prefix(':') {
                Some(port) => (literal, port),
                None if rest.is_empty() => (literal, ""),
                None => return Err(ParseError::InvalidHost),
            }
        } else {
            let (host, port) = value.split_once(':').unwrap_or((value, ""));
            if !reg_name(host) {
                return Err(ParseError::InvalidHost);
            }
            // A fully qualified name's root dot names the same host ("example.com.").
            let host = match host.strip_suffix('.') {
                Some(h) if !h.is_empty() => h,
                _ => host,
            };
            (host, port)
        };
        Ok(Authority {
            host,
            port: parse_port(port)?,
        })
    }

    /// Appends the authority in its normal form: the host in lower case, then `:port` unless
    /// the port is `default_port` or none was given. Two authorities that name the same
    /// origin append the same text, and the text never holds `/`.
    pub fn push_normalised(&self, out: &mut String, default_port: u16) {
        out.extend(self.host.chars().map(|c| c.to_ascii_lowercase()));
        if let Some(port) = self.port.filter(|&p| p != default_port) {
            out.push(':');
            out.push_str(itoa::Buffer::new().format(port));
        }
    }
}

/// `port = *DIGIT` that fits in 16 bits; empty is none.
fn parse_port(port: &str) -> Result<Option<u16>, ParseError> {
    if port.is_empty() {
        return Ok(None);
    }
    decimal(port.as_bytes())
        .and_then(|n| u16::try_from(n).ok())
        .map(Some)
        .ok_or(ParseError::InvalidHost)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (an IPv4 address is one too).
fn reg_name(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            match b.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if unreserved(c) || sub_delim(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// `IP-literal = "[" ( IPv6address / IPvFuture ) "]"`.
fn ip_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
    if let Some(future) = inner.strip_prefix(['v', 'V']) {
        let Some((version, rest)) = future.split_once('.') else {
            return false;
        };
        return !version.is_empty()
            && version.bytes().all(|b| b.is_ascii_hexdigit())
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| unreserved(b) || sub_delim(b) || b == b':');
    }
    inner.parse::<Ipv6Addr>().is_ok()
}

/// A request-target split as relay uses it (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    /// An absolute-form target's authority.
    pub authority: Option<Authority<'a>>,
    /// The path: an absolute-form target's is `/` when it has none; `*` (OPTIONS) and the
    /// empty string (CONNECT's authority-form) stand for themselves.
    pub path: &'a str,
    /// The query, without its `?`.
    pub query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Splits `target` for `method`: origin-form (`/path?query`), absolute-form with the
    /// `http` scheme (`http://authority/path?query`, no userinfo, a non-empty host), `*` for
    /// OPTIONS, anything for CONNECT. A fragment is dropped. Other forms and schemes are
    /// [`ParseError::InvalidTarget`].
    pub fn parse(method: &str, target: &'a str) -> Result<Target<'a>, ParseError> {
        let target = target.split('#').next().unwrap_or(target);
        let (rest, query) = match target.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (target, None),
        };
        if rest.starts_with('/') {
            return Ok(Target {
                authority: None,
                path: rest,
                query,
            });
        }
        if let Some(rest) = strip_http_scheme(rest) {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority =
                Authority::parse(authority.as_bytes()).map_err(|_| ParseError::InvalidTarget)?;
            // An "http" URI with an empty host is invalid (RFC 9110 §4.2.1).
            if authority.host.is_empty() {
                return Err(ParseError::InvalidTarget);
            }
            return Ok(Target {
                authority: Some(authority),
                path: if path.is_empty() { "/" } else { path },
                query,
            });
        }
        match (method, target) {
            ("OPTIONS", "*") => Ok(Target {
                authority: None,
                path: "*",
                query: None,
            }),
            ("CONNECT", _) => Ok(Target {
                authority: None,
                path: "",
                query: None,
            }),
            _ => Err(ParseError::InvalidTarget),
        }
    }
}

/// The part after `http://` (scheme case-insensitive), if any.
fn strip_http_scheme(target: &str) -> Option<&str> {
    const HTTP: &str = "http://";
    let head = target.get(..HTTP.len())?;
    head.eq_ignore_ascii_case(HTTP)
        .then(|| target.get(HTTP.len()..))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Result<String, ParseError> {
        let a = Authority::parse(value.as_bytes())?;
        let mut out = String::new();
        a.push_normalised(&mut out, HTTP_PORT);
        Ok(out)
    }

    #[test]
    fn rfc9112_3_2_host_must_be_uri_host_and_port() {
        for good in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com:080",
            "192.0.2.7:443",
            "[::1]",
            "[2001:db8::1]:8443",
            "[v1.fe80::a+en1]",
            "a-b_c~d.%2e!$&'()*+,;=",
            "example.com:",
            // An empty Host is what a client sends for a target without an authority.
            "",
            " padded.example ",
        ] {
            assert!(Authority::parse(good.as_bytes()).is_ok(), "{good:?}");
        }
        for bad in [
            "victim.example/v3",
            "/static",
            "user@example.com",
            "user:pw@example.com",
            "exa mple.com",
            "example.com?x",
            "example.com#x",
            "example.com\\x",
            "example.com:80x",
            "example.com:-1",
            "example.com:65536",
            "example.com:99999999999999999999",
            "example.com:80:80",
            "[::1",
            "[::1]x",
            "[::1]:8x",
            "[example.com]",
            "[v.x]",
            "[vz.x]",
            "[v1.]",
            "::1",
            "%zz.example",
            "%2",
            "ex\"ample",
            "<x>",
            "a\u{e9}.example",
        ] {
            assert_eq!(
                Authority::parse(bad.as_bytes()),
                Err(ParseError::InvalidHost),
                "{bad:?}"
            );
        }
        assert_eq!(ParseError::InvalidHost.status(), 400);
        assert_eq!(
            Authority::parse(b"[::1]:8080"),
            Ok(Authority {
                host: "[::1]",
                port: Some(8080)
            })
        );
    }

    #[test]
    fn rfc9110_4_2_3_equivalent_authorities_normalise_alike() {
        // Case, a root dot, the default port (explicit, with leading zeros, or empty).
        for same in [
            "example.com",
            "Example.COM.:80",
            "EXAMPLE.com.",
            "example.com:0080",
            "example.com:",
        ] {
            assert_eq!(key(same).as_deref(), Ok("example.com"), "{same:?}");
        }
        assert_eq!(key("example.com:8080").as_deref(), Ok("example.com:8080"));
        assert_eq!(key("[2001:DB8::1]:80").as_deref(), Ok("[2001:db8::1]"));
        assert_eq!(key("[::1]:8080").as_deref(), Ok("[::1]:8080"));
        // Only one root dot goes, and a lone dot stays what it is.
        assert_eq!(key("example.com..").as_deref(), Ok("example.com."));
        assert_eq!(key(".").as_deref(), Ok("."));
        assert_eq!(key("").as_deref(), Ok(""));
        // Normalised hosts never hold a path's first byte.
        for host in ["a", "[::1]:81", "x.%2F"] {
            assert!(!key(host).unwrap().contains('/'));
        }
    }

    #[test]
    fn rfc9112_3_2_2_absolute_form_names_authority_path_and_query() {
        let t = Target::parse("GET", "http://Cdn.Example:8080/p/q?x=1&y#frag").unwrap();
        assert_eq!(
            t,
            Target {
                authority: Some(Authority {
                    host: "Cdn.Example",
                    port: Some(8080)
                }),
                path: "/p/q",
                query: Some("x=1&y"),
            }
        );
        let t = Target::parse("GET", "HTTP://cdn.example?q").unwrap();
        assert_eq!((t.path, t.query), ("/", Some("q")));
        let t = Target::parse("GET", "http://cdn.example").unwrap();
        assert_eq!((t.path, t.query), ("/", None));
        for bad in [
            "https://cdn.example/p",
            "ftp://cdn.example/p",
            "http://user@cdn.example/p",
            "http:///p",
            "http://:80/p",
            "http://cdn.example:x/p",
            "http://cdn example/p",
            "http:/cdn.example/p",
            "cdn.example/p",
        ] {
            assert_eq!(
                Target::parse("GET", bad),
                Err(ParseError::InvalidTarget),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rfc9112_3_2_1_origin_form_splits_path_and_query() {
        let t = Target::parse("GET", "/a/b?c=d?e#f").unwrap();
        assert_eq!(
            (t.authority, t.path, t.query),
            (None, "/a/b", Some("c=d?e"))
        );
        let t = Target::parse("GET", "/a?").unwrap();
        assert_eq!((t.path, t.query), ("/a", Some("")));
        let t = Target::parse("GET", "/a#?b").unwrap();
        assert_eq!((t.path, t.query), ("/a", None));
        assert_eq!(Target::parse("OPTIONS", "*").unwrap().path, "*");
        assert_eq!(Target::parse("CONNECT", "a.example:443").unwrap().path, "");
        assert_eq!(Target::parse("GET", "*"), Err(ParseError::InvalidTarget));
    }
}

//! Invalidation (RFC 9111 §4.4): a non-error response (2xx, 3xx) to an unsafe method
//! invalidates the stored responses for the target URI, and for the URIs in `Location` and
//! `Content-Location` when they have the same origin as the target (a different origin is
//! never invalidated: that would let one origin purge another's objects).
//!
//! URI references are resolved against the target (RFC 3986 §5.2, with dot-segment removal);
//! fragments are dropped; origins compare scheme and host case-insensitively, with default
//! ports (80, 443) made explicit. Anything that does not resolve is ignored.

/// The request's target URI, split as the relay sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The authority (`Host`): `host[:port]`.
    pub authority: &'a str,
    /// The path and query (origin-form request target), e.g. `/a/b?x=1`.
    pub path: &'a str,
}

/// Safe methods (RFC 9110 §9.2.1); every other method, known or not, is unsafe.
pub fn is_safe_method(method: &[u8]) -> bool {
    matches!(method, b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE")
}

/// The paths (with query) on the target's origin whose stored responses must be invalidated
/// after a response with `status` and `response_headers` to a `method` request on `target`;
/// empty when nothing is invalidated. The target's own path comes first, as given.
pub fn invalidated_paths<'a, I>(
    method: &[u8],
    status: u16,
    target: &Target<'_>,
    response_headers: I,
) -> Vec<String>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    if is_safe_method(method) || !(200..400).contains(&status) {
        return Vec::new();
    }
    let mut paths = vec![target.path.to_owned()];
    let Some(origin) = Origin::parse(target.scheme, target.authority) else {
        return paths;
    };
    for (name, value) in response_headers {
        if !(name.eq_ignore_ascii_case(b"location")
            || name.eq_ignore_ascii_case(b"content-location"))
        {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        if let Some(p) = resolve(&origin, target.path, value.trim())
            && !paths.contains(&p)
        {
            paths.push(p);
        }
    }
    paths
}

/// Scheme, host and port, normalised for comparison.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(scheme: &str, authority: &str) -> Option<Origin> {
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        // drop userinfo
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None | Some("") => default,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Resolves `reference` against the target (origin and path); `Some(path)` when it lies on
/// the same origin.
fn resolve(origin: &Origin, base_path: &str, reference: &str) -> Option<String> {
    let reference = reference.split('#').next().unwrap_or_default();
    if reference.is_empty() {
        return Some(base_path.to_owned());
    }
    if let Some(rest) = reference.strip_prefix("//") {
        return same_origin_path(origin, &origin.scheme, rest);
    }
    if let Some((scheme, rest)) = split_scheme(reference) {
        return same_origin_path(origin, scheme, rest.strip_prefix("//")?);
    }
    let (path, query) = split_query(reference);
    let (base, base_query) = split_query(base_path);
    let merged = if path.is_empty() {
        let q = query.or(base_query);
        return Some(join(&remove_dot_segments(base), q));
    } else if path.starts_with('/') {
        path.to_owned()
    } else {
        let dir = base
            .rfind('/')
            .map_or("/", |i| base.get(..=i).unwrap_or("/"));
        format!("{dir}{path}")
    };
    Some(join(&remove_dot_segments(&merged), query))
}

/// `scheme ":"` at the start of an absolute URI (RFC 3986 §3.1).
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic() && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)))
        .then_some((scheme, rest))
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

fn join(path: &str, query: Option<&str>) -> String {
    let path = if path.is_empty() { "/" } else { path };
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// `authority path-abempty [ "?" query ]` after `//`: the path when the origin matches.
fn same_origin_path(origin: &Origin, scheme: &str, rest: &str) -> Option<String> {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if Origin::parse(scheme, authority)? != *origin {
        return None;
    }
    let (path, query) = split_query(path);
    Some(join(&remove_dot_segments(path), query))
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let absolute = path.starts_with('/');
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                if out.len() > usize::from(absolute) {
                    out.pop();
                }
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = out.join("/");
    if absolute && !s.starts_with('/') {
        s.insert(0, '/');
    }
    if trailing_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Target<'static> = Target {
        scheme: "http",
        authority: "Example.com",
        path: "/a/b/c?q=1",
    };

    fn inv(method: &str, status: u16, hs: &[(&str, &str)]) -> Vec<String> {
        invalidated_paths(
            method.as_bytes(),
            status,
            &T,
            hs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
    }

    #[test]
    fn rfc9111_4_4_unsafe_methods_invalidate_target() {
        assert_eq!(inv("POST", 200, &[]), ["/a/b/c?q=1"]);
        assert_eq!(inv("DELETE", 204, &[]), ["/a/b/c?q=1"]);
        assert_eq!(inv("PUT", 301, &[]), ["/a/b/c?q=1"]);
        assert_eq!(
            inv("FROB", 200, &[]),
            ["/a/b/c?q=1"],
            "unknown methods are unsafe"
        );
        assert!(inv("GET", 200, &[]).is_empty());
        assert!(inv("OPTIONS", 200, &[]).is_empty());
        assert!(inv("POST", 404, &[]).is_empty(), "error status: nothing");
        assert!(inv("POST", 500, &[]).is_empty());
        assert!(inv("POST", 100, &[]).is_empty());
    }

    #[test]
    fn rfc9111_4_4_location_same_origin_only() {
        let r = inv(
            "POST",
            201,
            &[
                ("Location", "/new/item"),
                ("Content-Location", "http://EXAMPLE.com:80/a/b/x#frag"),
            ],
        );
        assert_eq!(r, ["/a/b/c?q=1", "/new/item", "/a/b/x"]);
        let r = inv(
            "POST",
            201,
            &[
                ("Location", "http://other.example/x"),
                ("Content-Location", "https://example.com/x"),
                ("Location", "//example.com:8080/y"),
                ("Location", "mailto:a@example.com"),
            ],
        );
        assert_eq!(r, ["/a/b/c?q=1"]);
    }

    #[test]
    fn rfc3986_5_2_relative_references() {
        let r = inv(
            "PUT",
            200,
            &[
                ("Location", "d"),
                ("Location", "../e?z"),
                ("Location", "./../../../f"),
                ("Location", "?only=query"),
                ("Location", "//example.com/g/./h/../i"),
                ("Location", "/a/b/c?q=1"),
                ("Location", ""),
            ],
        );
        assert_eq!(
            r,
            [
                "/a/b/c?q=1",
                "/a/b/d",
                "/a/e?z",
                "/f",
                "/a/b/c?only=query",
                "/g/i"
            ]
        );
    }

    #[test]
    fn rfc9111_4_4_garbage_locations_ignored() {
        let hs: [(&[u8], &[u8]); 4] = [
            (b"Location", b"\xff\xfe"),
            (b"Location", b"http://[::1"),
            (b"Location", b"http://example.com:99999/x"),
            (b"Content-Location", b"http://:80/x"),
        ];
        assert_eq!(invalidated_paths(b"POST", 200, &T, hs), ["/a/b/c?q=1"]);
        let odd = Target {
            scheme: "gopher",
            authority: "",
            path: "/p",
        };
        assert_eq!(
            invalidated_paths(b"POST", 200, &odd, [(&b"Location"[..], &b"/x"[..])]),
            ["/p"]
        );
        let v6 = Target {
            scheme: "https",
            authority: "user@[::1]",
            path: "/p",
        };
        let r = invalidated_paths(
            b"POST",
            200,
            &v6,
            [(&b"Location"[..], &b"https://[::1]:443/q"[..])],
        );
        assert_eq!(r, ["/p", "/q"]);
    }
}

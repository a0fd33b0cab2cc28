//! HTTP caching semantics for a shared cache (RFC 9111), sans-IO: every function here takes
//! header fields and a clock value as arguments and reads neither sockets, files nor the OS
//! clock.
//!
//! Layout:
//! - [`cache_control`]: `Cache-Control` directives (request and response), `CDN-Cache-Control`
//!   (RFC 9213), `Surrogate-Control`, and which of them decides ([`effective_directives`]).
//! - [`response_headers`]: defensive parsing of an origin's response head: body framing
//!   (`Content-Length`, `Transfer-Encoding`), `Content-Range`, HTTP dates.
//! - [`stored`]: [`StoredMeta`], what the cache keeps per object to decide later, and
//!   [`RequestDirectives`], what a request asks of the cache.
//! - [`storable`]: may a response be stored (RFC 9111 §3), and if not, why ([`Reason`]).
//! - [`freshness`]: freshness lifetime, current age, when serving stale is forbidden (§4.2),
//!   and whether a kept description is fresh or within a stale window (RFC 5861).
//! - [`keep`]: what a response head means for the description kept of it (lifetime,
//!   storability, stale windows, variants), and how a 304 renews it (§4.3.4).
//! - [`vary`]: secondary cache keys from `Vary` (§4.1).
//! - [`invalidate`]: what an unsafe method's response invalidates (§4.4).
//! - [`age_header`]: parsing and emitting `Age` (§5.1).
//!
//! Header fields come in as `(name, value)` byte pairs, one per field line as received (the
//! shape of `httparse::Header` with `name.as_bytes()`); names are matched case-insensitively.
//! Times are whole seconds since the Unix epoch ([`unix_seconds`] converts a `SystemTime`).
//! Nothing here panics on any input: malformed fields get the RFC's rule for them, which
//! errs towards not storing or not reusing.

pub mod age_header;
pub mod cache_control;
pub mod freshness;
pub mod invalidate;
pub mod keep;
pub mod response_headers;
pub mod storable;
pub mod stored;
pub mod vary;

pub use cache_control::{
    CacheControl, DirectiveSource, Effective, FieldScope, MaxStale, SurrogateControl,
    effective_directives,
};
pub use response_headers::{BodyFraming, ContentRange, FramingError};
pub use storable::{Reason, Storability, storable};
pub use stored::{Method, RequestDirectives, StoredMeta};
pub use vary::{Vary, VaryKey};

use std::time::{SystemTime, UNIX_EPOCH};

/// The largest delta-seconds value a cache must represent (RFC 9111 §1.2.2): larger values
/// and overflowing calculations saturate here.
pub const DELTA_SECONDS_MAX: u32 = 1 << 31;

/// Tunables of the caching policy; [`Default`] is the conservative choice of issue 4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Store responses that carry no freshness information at all (no `max-age`,
    /// `s-maxage`, `Expires`, and no heuristic). They are then stored with a freshness
    /// lifetime of zero: every reuse revalidates. Default `false`: such responses are neither
    /// stored nor served from cache.
    pub cache_without_freshness: bool,
    /// Allow heuristic freshness (RFC 9111 §4.2.2) for heuristically cacheable status codes
    /// (or `public`) with a `Last-Modified`. Default `true`.
    pub heuristic: bool,
    /// Fraction of (`Date` − `Last-Modified`) used as heuristic lifetime, in percent.
    /// Default 10, the RFC's "typical setting".
    pub heuristic_percent: u8,
    /// Upper bound of a heuristic lifetime, in seconds. Default one day.
    pub heuristic_max: u32,
    /// Honour a request's `no-cache` / `Pragma: no-cache` (revalidate before serving).
    /// Default `true`; a CDN may turn it off so that client reloads do not reach the origin.
    pub honor_request_no_cache: bool,
    /// The targeted cache-control fields obeyed (RFC 9213 §2.1), lower-case, most specific
    /// first: the first a response carries, valid, decides its caching over
    /// `Cache-Control` and `Expires`. Default `["cdn-cache-control"]`; empty: none.
    pub targeted: Vec<String>,
    /// Use `Surrogate-Control` (`max-age`, `no-store`). Default `true`.
    pub surrogate_control: bool,
    /// The operator's terms for one origin's answers (`[[origin.http]]`'s `cache_` keys):
    /// TTLs where an answer states none, bounds, directives ignored, stale windows. Default
    /// none: the answers decide.
    pub operator: relay_config::CachePolicy,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            cache_without_freshness: false,
            heuristic: true,
            heuristic_percent: 10,
            heuristic_max: 86_400,
            honor_request_no_cache: true,
            targeted: vec!["cdn-cache-control".to_string()],
            surrogate_control: true,
            operator: relay_config::CachePolicy::default(),
        }
    }
}

/// Seconds since the Unix epoch; times before the epoch count as 0.
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Trims optional whitespace (and any other ASCII whitespace) from both ends.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// Whether `s` is a `token` (RFC 9110 §5.6.2).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `delta-seconds = 1*DIGIT` (RFC 9111 §1.2.2), saturating at [`DELTA_SECONDS_MAX`].
/// `None` when `s` is not all digits (signs, spaces, empty: invalid).
pub(crate) fn parse_delta_seconds(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u32 = 0;
    for &d in s {
        v = v
            .saturating_mul(10)
            .saturating_add(u32::from(d - b'0'))
            .min(DELTA_SECONDS_MAX);
    }
    Some(v)
}

/// Iterates over the values of the field lines named `name` (case-insensitive).
pub(crate) fn values_of<'a, I>(headers: I, name: &'static str) -> impl Iterator<Item = &'a [u8]>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    headers
        .into_iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v)
}

/// Splits a `#list` field value at commas outside quoted strings, trims each element and
/// drops empty ones (RFC 9110 §5.6.1).
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut in_quotes = false;
            let mut escaped = false;
            let mut end = rest.len();
            for (i, &b) in rest.iter().enumerate() {
                if escaped {
                    escaped = false;
                } else if in_quotes && b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quotes = !in_quotes;
                } else if b == b',' && !in_quotes {
                    end = i;
                    break;
                }
            }
            let (elem, tail) = rest.split_at(end);
            rest = tail.get(1..).unwrap_or_default();
            let elem = trim(elem);
            if !elem.is_empty() {
                return Some(elem);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9111_1_2_2_delta_seconds() {
        assert_eq!(parse_delta_seconds(b"0"), Some(0));
        assert_eq!(parse_delta_seconds(b"0060"), Some(60));
        assert_eq!(parse_delta_seconds(b"2147483647"), Some(2_147_483_647));
        assert_eq!(parse_delta_seconds(b"2147483648"), Some(DELTA_SECONDS_MAX));
        assert_eq!(
            parse_delta_seconds(b"99999999999999999999999999999"),
            Some(DELTA_SECONDS_MAX)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1.5",
            b"1e3",
            b" 1",
            b"abc",
            b"\xff",
        ] {
            assert_eq!(parse_delta_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc9110_5_6_1_list_elements() {
        let v: Vec<&[u8]> = list_elements(b" a ,, b=\"x,y\" ,c,").collect();
        assert_eq!(v, [&b"a"[..], b"b=\"x,y\"", b"c"]);
        let v: Vec<&[u8]> = list_elements(b"a=\"unterminated, b").collect();
        assert_eq!(v, [&b"a=\"unterminated, b"[..]]);
        let v: Vec<&[u8]> = list_elements(b"a=\"q\\\",x\", b").collect();
        assert_eq!(v, [&b"a=\"q\\\",x\""[..], b"b"]);
        assert_eq!(list_elements(b" , ,").count(), 0);
    }

    /// Deterministic pseudo-random header soup through every entry point: nothing panics.
    #[test]
    fn garbage_never_panics() {
        const ALPHABET: &[u8] = b"\"\\,;=*/-+?:# \t0123456789azAZ\xff\x00WGMT";
        const NAMES: [&str; 16] = [
            "cache-control",
            "cdn-cache-control",
            "surrogate-control",
            "date",
            "expires",
            "last-modified",
            "etag",
            "age",
            "vary",
            "content-length",
            "transfer-encoding",
            "content-range",
            "location",
            "content-location",
            "connection",
            "pragma",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let config = PolicyConfig::default();
        for _ in 0..3000 {
            let mut values: Vec<(String, Vec<u8>)> = Vec::new();
            for _ in 0..(next() % 6) {
                let name = NAMES[(next() % 16) as usize];
                let len = (next() % 24) as usize;
                let v = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
                values.push((name.to_owned(), v.collect()));
            }
            let h = || values.iter().map(|(n, v)| (n.as_bytes(), v.as_slice()));
            let status = (next() % 700) as u16;
            let now = next() % 4_000_000_000;
            let meta = StoredMeta::from_response(status, h(), now / 2, now / 3, &config);
            let req = RequestDirectives::from_request(b"GET", h(), &config);
            let _ = storable(&req, &meta, &config);
            let _ = age_header::age_value(&meta, now);
            let _ = meta.vary.key(h());
            let _ = response_headers::body_framing(false, status, h());
            let _ = response_headers::content_range(h());
            for (_, v) in h() {
                let _ = response_headers::parse_content_range(v);
                let _ = CacheControl::parse_targeted([v]);
            }
            let target = invalidate::Target {
                scheme: "http",
                authority: "h",
                path: "/a/b",
            };
            let _ = invalidate::invalidated_paths(b"POST", 200, &target, h());
        }
    }

    #[test]
    fn unix_seconds_before_epoch_is_zero() {
        assert_eq!(unix_seconds(UNIX_EPOCH), 0);
        let before = UNIX_EPOCH.checked_sub(std::time::Duration::from_secs(5));
        assert_eq!(before.map(unix_seconds), Some(0));
    }
}

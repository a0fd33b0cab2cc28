//! What the cache keeps per stored response to decide on later requests ([`StoredMeta`]),
//! and what a request asks of the cache ([`RequestDirectives`]).
//!
//! [`StoredMeta`] is derived entirely from the stored status, the stored header fields and
//! two timestamps, so a persistent tier need only keep those and rebuild it on load with
//! [`StoredMeta::from_response`].

use super::cache_control::{
    Builder, CacheControl, DirectiveSource, SurrogateControl, effective_directives,
};
use super::response_headers::{first_date, parse_expires};
use super::vary::Vary;
use super::{PolicyConfig, age_header, freshness, trim};

/// The request method, as far as the cache cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET: served from and stored in the cache.
    Get,
    /// HEAD: served from a stored GET response (without body).
    Head,
    /// Anything else: passed through; see [`super::invalidate`].
    Other,
}

impl Method {
    /// Classifies a method token (methods are case-sensitive, RFC 9110 §9.1).
    pub fn parse(method: &[u8]) -> Method {
        match method {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// What a request asks of the cache: its method, its `Cache-Control`, whether it carries
/// credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestDirectives {
    /// The method.
    pub method: Method,
    /// The request's cache directives. When the config does not honour request `no-cache`,
    /// it is cleared here (along with `Pragma: no-cache`).
    pub directives: CacheControl,
    /// `Pragma: no-cache` in a request without `Cache-Control` (RFC 7234 §5.4; deprecated
    /// by RFC 9111 but still sent by HTTP/1.0 clients).
    pub pragma_no_cache: bool,
    /// The request has an `Authorization` field (RFC 9111 §3.5).
    pub authorization: bool,
}

impl RequestDirectives {
    /// Reads a request's method and header fields.
    pub fn from_request<'a, I>(method: &[u8], headers: I, config: &PolicyConfig) -> Self
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        // one pass, no allocation: this runs for every request
        let mut cc = Builder::default();
        let mut cc_present = false;
        let mut pragma_no_cache = false;
        let mut authorization = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(b"cache-control") {
                cc.line(value);
                cc_present = true;
            } else if name.eq_ignore_ascii_case(b"pragma") {
                pragma_no_cache |=
                    super::list_elements(value).any(|d| trim(d).eq_ignore_ascii_case(b"no-cache"));
            } else if name.eq_ignore_ascii_case(b"authorization") {
                authorization = true;
            }
        }
        let mut directives = cc.finish();
        pragma_no_cache &= !cc_present;
        if !config.honor_request_no_cache {
            directives.no_cache = Default::default();
            pragma_no_cache = false;
        }
        RequestDirectives {
            method: Method::parse(method),
            directives,
            pragma_no_cache,
            authorization,
        }
    }

    /// The request asks for validation before a stored response is used.
    pub fn no_cache(&self) -> bool {
        self.directives.no_cache.is_present() || self.pragma_no_cache
    }
}

/// What the cache keeps per stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMeta {
    /// Status code of the stored response.
    pub status: u16,
    /// `Date`, seconds since the epoch; `None` when absent or invalid (then the response
    /// time stands in, RFC 9110 §6.6.1).
    pub date: Option<u64>,
    /// `Expires`; `Some(0)` when invalid (already expired); `None` when absent or ignored
    /// (`CDN-Cache-Control` decides).
    pub expires: Option<u64>,
    /// `Last-Modified`, when valid.
    pub last_modified: Option<u64>,
    /// `ETag` as received, when it is a syntactically valid entity-tag.
    pub etag: Option<Vec<u8>>,
    /// `Last-Modified` as received (sent back verbatim in `If-Modified-Since`), when valid.
    pub last_modified_value: Option<Vec<u8>>,
    /// `Age` as received (0 when absent or invalid).
    pub age: u32,
    /// The effective directives (after `CDN-Cache-Control` / `Surrogate-Control` precedence).
    pub directives: CacheControl,
    /// Which field the directives came from.
    pub source: DirectiveSource,
    /// The response's `Vary`.
    pub vary: Vary,
    /// The response carries `Set-Cookie`.
    pub sets_cookie: bool,
    /// Heuristic freshness lifetime, when there is no explicit one and heuristics are allowed.
    pub heuristic_lifetime: Option<u32>,
    /// The operator's freshness lifetime for an answer that states none
    /// (`CachePolicy::ttl_for`): it stands before the heuristic, and makes the answer
    /// storable as explicit freshness would.
    pub operator_lifetime: Option<u32>,
    /// When the request that produced the response was sent (seconds since the epoch).
    pub request_time: u64,
    /// When the response was received.
    pub response_time: u64,
}

impl StoredMeta {
    /// Builds the metadata from a response's status, its header fields, and the times its
    /// request was sent and it was received.
    pub fn from_response<'a, I>(
        status: u16,
        headers: I,
        request_time: u64,
        response_time: u64,
        config: &PolicyConfig,
    ) -> StoredMeta
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut cc = Vec::new();
        // The lines of each targeted field, in the config's order.
        let mut targeted: Vec<Vec<&[u8]>> = vec![Vec::new(); config.targeted.len()];
        let mut surrogate = Vec::new();
        let mut date = Vec::new();
        let mut expires = Vec::new();
        let mut last_modified = Vec::new();
        let mut etag = None;
        let mut age = Vec::new();
        let mut vary = Vec::new();
        let mut sets_cookie = false;
        for (name, value) in headers {
            sets_cookie |= name.eq_ignore_ascii_case(b"set-cookie");
            let target = config
                .targeted
                .iter()
                .position(|t| name.eq_ignore_ascii_case(t.as_bytes()));
            if let Some(i) = target {
                targeted[i].push(value);
                continue;
            }
            let list = match name {
                n if n.eq_ignore_ascii_case(b"cache-control") => &mut cc,
                n if n.eq_ignore_ascii_case(b"surrogate-control") => &mut surrogate,
                n if n.eq_ignore_ascii_case(b"date") => &mut date,
                n if n.eq_ignore_ascii_case(b"expires") => &mut expires,
                n if n.eq_ignore_ascii_case(b"last-modified") => &mut last_modified,
                n if n.eq_ignore_ascii_case(b"age") => &mut age,
                n if n.eq_ignore_ascii_case(b"vary") => &mut vary,
                n if n.eq_ignore_ascii_case(b"etag") => {
                    etag = etag.or(Some(value));
                    continue;
                }
                _ => continue,
            };
            list.push(value);
        }
        // RFC 9213 §2.1: the first targeted field present and valid.
        let cdn = targeted
            .iter()
            .find_map(|lines| CacheControl::parse_targeted(lines.iter().copied()));
        let surrogate = config
            .surrogate_control
            .then(|| SurrogateControl::parse(surrogate.iter().copied()))
            .flatten();
        let eff = effective_directives(CacheControl::parse(cc.iter().copied()), cdn, surrogate);
        let lm_value = last_modified
            .iter()
            .map(|v| trim(v))
            .find(|v| super::response_headers::parse_http_date(v).is_some());
        let date = first_date(date.iter().copied());
        let last_modified = first_date(last_modified.iter().copied());
        let mut meta = StoredMeta {
            status,
            date,
            expires: eff
                .use_expires
                .then(|| parse_expires(expires.iter().copied()))
                .flatten(),
            last_modified,
            etag: etag
                .map(trim)
                .filter(|e| is_entity_tag(e))
                .map(<[u8]>::to_vec),
            last_modified_value: lm_value.map(<[u8]>::to_vec),
            age: age_header::parse_age(age.iter().copied()).unwrap_or(0),
            directives: eff.directives,
            source: eff.source,
            vary: Vary::parse(vary.iter().copied()),
            sets_cookie,
            heuristic_lifetime: None,
            operator_lifetime: None,
            request_time: request_time.min(response_time),
            response_time,
        };
        meta.operator_terms(&config.operator);
        if meta.operator_lifetime.is_none() {
            meta.heuristic_lifetime = freshness::heuristic_lifetime(&meta, config);
        }
        meta
    }

    /// Applies the operator's terms (`op`) over what the response said: directives it
    /// ignores, and its lifetime for a response that states none.
    fn operator_terms(&mut self, op: &relay_config::CachePolicy) {
        use super::cache_control::FieldScope;
        let d = &mut self.directives;
        // (Only the unqualified forms: a field named, `private="X-Session"`, stays out of
        // what is stored.)
        if op.ignore_no_cache && d.no_cache.is_all() {
            d.no_cache = FieldScope::Absent;
        }
        if op.ignore_private && d.private.is_all() {
            d.private = FieldScope::Absent;
        }
        // Stored without the cookie, as `private="Set-Cookie"` would have it.
        if op.ignore_set_cookie && self.sets_cookie {
            match &mut d.private {
                FieldScope::All => {}
                FieldScope::Fields(f) => f.push("set-cookie".to_string()),
                FieldScope::Absent => d.private = FieldScope::Fields(vec!["set-cookie".into()]),
            }
        }
        if !self.has_explicit_freshness() {
            let by_default = freshness::heuristically_cacheable(self.status);
            self.operator_lifetime = op.ttl_for(self.status, by_default);
        }
    }

    /// The response carries a validator (`ETag` or `Last-Modified`) for revalidation.
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified_value.is_some()
    }

    /// The response states its freshness: `s-maxage`, `max-age` or `Expires`.
    pub fn has_explicit_freshness(&self) -> bool {
        self.directives.s_maxage.is_some()
            || self.directives.max_age.is_some()
            || self.expires.is_some()
    }

    /// The `Date` value used in age calculations: `Date`, else the response time.
    pub fn date_value(&self) -> u64 {
        self.date.unwrap_or(self.response_time)
    }
}

/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE` (RFC 9110 §8.8.3).
pub(crate) fn is_entity_tag(v: &[u8]) -> bool {
    let v = v.strip_prefix(b"W/").unwrap_or(v);
    match v {
        [b'"', inner @ .., b'"'] => inner
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: u16, hs: &[(&str, &str)]) -> StoredMeta {
        let h = hs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        StoredMeta::from_response(status, h, 1000, 1001, &PolicyConfig::default())
    }

    #[test]
    fn stored_meta_collects_fields() {
        let m = meta(
            200,
            &[
                ("Date", "Thu, 01 Jan 1970 00:16:40 GMT"),
                ("Cache-Control", "max-age=60"),
                ("cache-control", "must-revalidate"),
                ("ETag", " \"abc\" "),
                ("Last-Modified", "Thu, 01 Jan 1970 00:00:10 GMT"),
                ("Age", "5"),
                ("Vary", "Accept-Encoding"),
                ("Expires", "0"),
            ],
        );
        assert_eq!(m.date, Some(1000));
        assert_eq!(m.directives.max_age, Some(60));
        assert!(m.directives.must_revalidate);
        assert_eq!(m.etag.as_deref(), Some(&b"\"abc\""[..]));
        assert_eq!(m.last_modified, Some(10));
        assert_eq!(m.age, 5);
        assert_eq!(m.expires, Some(0));
        assert!(m.has_validator() && m.has_explicit_freshness());
        assert_eq!(
            m.heuristic_lifetime, None,
            "explicit freshness: no heuristic"
        );
    }

    #[test]
    fn rfc9110_8_8_3_invalid_etag_is_no_validator() {
        for bad in ["abc", "\"a\"b\"", "W/abc", "\"unterminated", "\"a b\""] {
            let m = meta(200, &[("ETag", bad)]);
            assert_eq!(m.etag, None, "{bad}");
        }
        assert!(meta(200, &[("ETag", "W/\"x\"")]).etag.is_some());
        assert!(meta(200, &[("ETag", "\"\"")]).etag.is_some());
    }

    #[test]
    fn rfc9111_4_2_3_clock_skew_request_after_response() {
        let h = [(&b"Cache-Control"[..], &b"max-age=1"[..])];
        let m = StoredMeta::from_response(200, h, 50, 40, &PolicyConfig::default());
        assert_eq!((m.request_time, m.response_time), (40, 40));
    }

    #[test]
    fn rfc9213_cdn_cache_control_ignores_expires() {
        let m = meta(
            200,
            &[
                ("CDN-Cache-Control", "max-age=600"),
                ("Cache-Control", "no-store"),
                ("Expires", "0"),
            ],
        );
        assert_eq!(m.source, DirectiveSource::CdnCacheControl);
        assert!(!m.directives.no_store);
        assert_eq!(m.expires, None);
        let off = PolicyConfig {
            targeted: Vec::new(),
            ..PolicyConfig::default()
        };
        let h = [
            (&b"CDN-Cache-Control"[..], &b"max-age=600"[..]),
            (b"Cache-Control", b"no-store"),
        ];
        let m = StoredMeta::from_response(200, h, 0, 0, &off);
        assert!(m.directives.no_store);
    }

    #[test]
    fn rfc9213_2_1_the_first_targeted_field_of_the_list_decides() {
        let list = PolicyConfig {
            targeted: vec!["relay-cache-control".into(), "cdn-cache-control".into()],
            ..PolicyConfig::default()
        };
        let h = |pairs: &'static [(&'static str, &'static str)]| {
            pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        };
        let both = h(&[
            ("CDN-Cache-Control", "max-age=60"),
            ("Relay-Cache-Control", "max-age=600"),
            ("Cache-Control", "no-store"),
        ]);
        let m = StoredMeta::from_response(200, both, 0, 0, &list);
        assert_eq!(m.directives.max_age, Some(600));
        assert!(!m.directives.no_store);
        // An invalid one is as if absent: the next in the list decides.
        let bad = h(&[
            ("Relay-Cache-Control", "max-age=\"60"),
            ("CDN-Cache-Control", "max-age=60"),
        ]);
        let m = StoredMeta::from_response(200, bad, 0, 0, &list);
        assert_eq!(m.directives.max_age, Some(60));
        // Not in the list: an ordinary field.
        let other = h(&[
            ("Relay-Cache-Control", "no-store"),
            ("Cache-Control", "max-age=5"),
        ]);
        let m = StoredMeta::from_response(200, other, 0, 0, &PolicyConfig::default());
        assert_eq!(
            (m.source, m.directives.max_age),
            (DirectiveSource::CacheControl, Some(5))
        );
    }

    #[test]
    fn rfc9111_5_4_pragma_only_without_cache_control() {
        let c = PolicyConfig::default();
        let r = RequestDirectives::from_request(b"GET", [(&b"Pragma"[..], &b"no-cache"[..])], &c);
        assert!(r.no_cache());
        let h = [
            (&b"Pragma"[..], &b"no-cache"[..]),
            (b"Cache-Control", b"max-stale"),
        ];
        let r = RequestDirectives::from_request(b"GET", h, &c);
        assert!(!r.no_cache());
        let h = [
            (&b"authorization"[..], &b"Basic x"[..]),
            (b"Cache-Control", b"no-cache"),
        ];
        let r = RequestDirectives::from_request(b"HEAD", h, &c);
        assert!(r.authorization && r.no_cache() && r.method == Method::Head);
        let off = PolicyConfig {
            honor_request_no_cache: false,
            ..c
        };
        let r = RequestDirectives::from_request(
            b"GET",
            [(&b"Cache-Control"[..], &b"no-cache"[..])],
            &off,
        );
        assert!(!r.no_cache());
        assert_eq!(Method::parse(b"get"), Method::Other);
    }
}

//! Cache directives: `Cache-Control` (RFC 9111 §5.2, request and response directives),
//! `CDN-Cache-Control` (RFC 9213) and `Surrogate-Control` (Edge Architecture 1.0:
//! `max-age`, `no-store`), and [`effective_directives`], the precedence a CDN applies.
//!
//! Parsing is tolerant (RFC 9111 §4.2.1, §5.2): names are case-insensitive, arguments may be
//! tokens or quoted strings, unknown extensions are ignored, delta-seconds saturate at 2^31.
//! Where the RFC leaves the choice, malformed or conflicting input resolves to the most
//! restrictive reading:
//! - `max-age` / `s-maxage` (either side) with an invalid argument count as `0` ("consider
//!   responses with invalid freshness information stale"); repeated with different values,
//!   the smallest wins;
//! - `stale-while-revalidate`, `stale-if-error`, `max-stale` with an invalid argument grant
//!   nothing (all occurrences of that directive are dropped); repeated, the smallest wins;
//! - `min-fresh` repeated: the largest wins; invalid: ignored;
//! - `private` / `no-cache` with a malformed field-name list count as unqualified.

use super::{DELTA_SECONDS_MAX, is_tchar, is_token, list_elements, parse_delta_seconds, trim};
use std::borrow::Cow;

/// A directive that may name header fields (`private`, `no-cache`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FieldScope {
    /// The directive is not present.
    #[default]
    Absent,
    /// Unqualified: the directive applies to the whole response.
    All,
    /// Qualified: applies to these header fields only (lower-case names).
    Fields(Vec<String>),
}

impl FieldScope {
    /// Present, qualified or not.
    pub fn is_present(&self) -> bool {
        !matches!(self, FieldScope::Absent)
    }

    /// Present and unqualified.
    pub fn is_all(&self) -> bool {
        matches!(self, FieldScope::All)
    }

    /// The named fields of a qualified directive (empty otherwise).
    pub fn fields(&self) -> &[String] {
        match self {
            FieldScope::Fields(f) => f,
            _ => &[],
        }
    }

    fn merge(&mut self, other: FieldScope) {
        match (&mut *self, other) {
            (_, FieldScope::Absent) | (FieldScope::All, _) => {}
            (FieldScope::Fields(a), FieldScope::Fields(b)) => {
                for f in b {
                    if !a.contains(&f) {
                        a.push(f);
                    }
                }
            }
            (s, o) => *s = o,
        }
    }
}

/// The request directive `max-stale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without argument: any staleness is acceptable.
    Any,
    /// `max-stale=N`: stale by at most N seconds.
    Limit(u32),
}

impl MaxStale {
    /// Whether a response stale by `staleness` seconds is acceptable.
    pub fn allows(self, staleness: u64) -> bool {
        match self {
            MaxStale::Any => true,
            MaxStale::Limit(n) => staleness <= u64::from(n),
        }
    }
}

/// Parsed cache directives. Request-only and response-only directives share the struct;
/// each consumer reads the ones that apply to its side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age=N` (request and response).
    pub max_age: Option<u32>,
    /// `s-maxage=N` (response; shared caches only).
    pub s_maxage: Option<u32>,
    /// `no-store` (request and response).
    pub no_store: bool,
    /// `no-cache` (request: unqualified only; response: possibly with field names).
    pub no_cache: FieldScope,
    /// `private` (response; possibly with field names).
    pub private: FieldScope,
    /// `public` (response).
    pub public: bool,
    /// `must-revalidate` (response).
    pub must_revalidate: bool,
    /// `proxy-revalidate` (response).
    pub proxy_revalidate: bool,
    /// `must-understand` (response).
    pub must_understand: bool,
    /// `immutable` (response, RFC 8246).
    pub immutable: bool,
    /// `no-transform` (request and response).
    pub no_transform: bool,
    /// `only-if-cached` (request).
    pub only_if_cached: bool,
    /// `stale-while-revalidate=N` (response, RFC 5861).
    pub stale_while_revalidate: Option<u32>,
    /// `stale-if-error=N` (request and response, RFC 5861).
    pub stale_if_error: Option<u32>,
    /// `max-stale[=N]` (request).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh=N` (request).
    pub min_fresh: Option<u32>,
    /// Something in the field(s) was malformed (for logs; the rules above already applied).
    pub malformed: bool,
}

/// How a directive with a numeric argument accumulates over repeated occurrences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Num {
    #[default]
    Unset,
    Val(u32),
    Invalid,
}

impl Num {
    /// Keeps the smallest value; an invalid occurrence poisons the directive.
    fn push_min(&mut self, v: Option<u32>) {
        *self = match (*self, v) {
            (Num::Invalid, _) | (_, None) => Num::Invalid,
            (Num::Unset, Some(v)) => Num::Val(v),
            (Num::Val(a), Some(b)) => Num::Val(a.min(b)),
        };
    }

    /// `max-age` / `s-maxage`: invalid means stale (0).
    fn lifetime(self) -> Option<u32> {
        match self {
            Num::Unset => None,
            Num::Val(v) => Some(v),
            Num::Invalid => Some(0),
        }
    }

    /// Permissions (`stale-*`, `max-stale`): invalid grants nothing.
    fn permission(self) -> Option<u32> {
        match self {
            Num::Val(v) => Some(v),
            Num::Unset | Num::Invalid => None,
        }
    }
}

/// Accumulates directives over field lines; [`CacheControl::parse`] in pieces.
#[derive(Default)]
pub(crate) struct Builder {
    cc: CacheControl,
    max_age: Num,
    s_maxage: Num,
    swr: Num,
    sie: Num,
    /// `max-stale` without argument counts as `DELTA_SECONDS_MAX` + 1 (any).
    max_stale: Option<Num>,
}

/// One `name[=value]` member.
struct Directive<'a> {
    name: &'a [u8],
    value: Arg<'a>,
    well_formed: bool,
}

/// A directive's argument.
enum Arg<'a> {
    None,
    Some(Cow<'a, [u8]>),
    /// Present but unusable (empty, unterminated quote, junk after the quote).
    Invalid,
}

impl Arg<'_> {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Arg::Some(v) => Some(v),
            _ => None,
        }
    }
}

/// Splits a member at `=` and unquotes a quoted-string argument.
fn directive(elem: &[u8]) -> Directive<'_> {
    let Some(eq) = elem.iter().position(|&b| b == b'=') else {
        return Directive {
            name: trim(elem),
            value: Arg::None,
            well_formed: is_token(trim(elem)),
        };
    };
    let (name, rest) = elem.split_at(eq);
    let name = trim(name);
    let raw = trim(rest.get(1..).unwrap_or_default());
    let value = match raw.strip_prefix(b"\"") {
        Some(q) => match unquote(q) {
            Some((v, tail)) if trim(tail).is_empty() => Arg::Some(v),
            _ => Arg::Invalid,
        },
        None if raw.is_empty() => Arg::Invalid,
        None => Arg::Some(Cow::Borrowed(raw)),
    };
    Directive {
        name,
        well_formed: is_token(name) && !matches!(value, Arg::Invalid),
        value,
    }
}

/// Reads a quoted-string body (after the opening quote); returns the unescaped content and
/// what follows the closing quote, or `None` when it is unterminated.
fn unquote(s: &[u8]) -> Option<(Cow<'_, [u8]>, &[u8])> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => {
                let tail = s.get(i + 1..).unwrap_or_default();
                let body = match out {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(s.get(..i).unwrap_or_default()),
                };
                return Some((body, tail));
            }
            b'\\' => {
                let buf = out.get_or_insert_with(|| s.get(..i).unwrap_or_default().to_vec());
                buf.push(*s.get(i + 1)?);
                i += 2;
            }
            _ => {
                if let Some(buf) = out.as_mut() {
                    buf.push(b);
                }
                i += 1;
            }
        }
    }
    None
}

/// A field-name list argument; `None` when malformed (the caller then widens to `All`).
fn field_names(value: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for n in list_elements(value) {
        if !is_token(n) {
            return None;
        }
        let n = String::from_utf8_lossy(n).to_ascii_lowercase();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    (!names.is_empty()).then_some(names)
}

fn delta(value: &Arg<'_>) -> Option<u32> {
    value.bytes().and_then(|v| parse_delta_seconds(trim(v)))
}

/// A boolean directive is set unless its argument is the structured-field false, `?0`.
fn flag(value: &Arg<'_>) -> bool {
    value.bytes() != Some(b"?0")
}

impl Builder {
    fn apply(&mut self, d: &Directive<'_>) {
        let mut buf = [0u8; 24];
        let Some(lower) = buf.get_mut(..d.name.len()) else {
            return; // longer than any directive we know: an extension
        };
        lower.copy_from_slice(d.name);
        lower.make_ascii_lowercase();
        let v = &d.value;
        let cc = &mut self.cc;
        match &*lower {
            b"max-age" => self.max_age.push_min(delta(v)),
            b"s-maxage" => self.s_maxage.push_min(delta(v)),
            b"stale-while-revalidate" => self.swr.push_min(delta(v)),
            b"stale-if-error" => self.sie.push_min(delta(v)),
            b"max-stale" => {
                let n = match v {
                    Arg::None => Some(DELTA_SECONDS_MAX.saturating_add(1)),
                    _ => delta(v),
                };
                self.max_stale.get_or_insert_default().push_min(n);
            }
            b"min-fresh" => match delta(v) {
                Some(n) => cc.min_fresh = Some(cc.min_fresh.map_or(n, |m| m.max(n))),
                None => cc.malformed = true,
            },
            b"no-store" => cc.no_store |= flag(v),
            b"public" => cc.public |= flag(v),
            b"must-revalidate" => cc.must_revalidate |= flag(v),
            b"proxy-revalidate" => cc.proxy_revalidate |= flag(v),
            b"must-understand" => cc.must_understand |= flag(v),
            b"immutable" => cc.immutable |= flag(v),
            b"no-transform" => cc.no_transform |= flag(v),
            b"only-if-cached" => cc.only_if_cached |= flag(v),
            b"no-cache" => {
                let scope = scope(v, &mut cc.malformed);
                cc.no_cache.merge(scope);
            }
            b"private" => {
                let scope = scope(v, &mut cc.malformed);
                cc.private.merge(scope);
            }
            _ => {}
        }
    }

    /// Adds one field line.
    pub(crate) fn line(&mut self, line: &[u8]) {
        for elem in list_elements(line) {
            let d = directive(elem);
            self.cc.malformed |= !d.well_formed;
            if is_token(d.name) {
                self.apply(&d);
            }
        }
    }

    pub(crate) fn finish(mut self) -> CacheControl {
        let nums = [self.max_age, self.s_maxage, self.swr, self.sie];
        if nums.contains(&Num::Invalid) || self.max_stale == Some(Num::Invalid) {
            self.cc.malformed = true;
        }
        self.cc.max_age = self.max_age.lifetime();
        self.cc.s_maxage = self.s_maxage.lifetime();
        self.cc.stale_while_revalidate = self.swr.permission();
        self.cc.stale_if_error = self.sie.permission();
        self.cc.max_stale = self.max_stale.and_then(Num::permission).map(|n| match n {
            n if n > DELTA_SECONDS_MAX => MaxStale::Any,
            n => MaxStale::Limit(n),
        });
        self.cc
    }
}

fn scope(v: &Arg<'_>, malformed: &mut bool) -> FieldScope {
    match v {
        Arg::None | Arg::Invalid => FieldScope::All,
        Arg::Some(v) if v.as_ref() == b"?0" => FieldScope::Absent,
        Arg::Some(v) => match field_names(v) {
            Some(names) => FieldScope::Fields(names),
            None => {
                *malformed = true;
                FieldScope::All
            }
        },
    }
}

impl CacheControl {
    /// Parses the values of all `Cache-Control` field lines of a message, in order.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> CacheControl {
        let mut b = Builder::default();
        for line in lines {
            b.line(line);
        }
        b.finish()
    }

    /// The `Cache-Control` directives of a message given as `(name, value)` field lines.
    pub fn from_headers<'a, I>(headers: I) -> CacheControl
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        CacheControl::parse(super::values_of(headers, "cache-control"))
    }

    /// Parses a targeted field (`CDN-Cache-Control`, RFC 9213), whose value is a structured
    /// field dictionary. `None` when it is absent, empty or invalid: the cache then falls back
    /// to the next field in precedence (RFC 9213 §2.2). Parameters are ignored.
    pub fn parse_targeted<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<CacheControl> {
        let mut b = Builder::default();
        let mut members = 0usize;
        for line in lines {
            if !no_empty_member(line) {
                return None; // an empty member is not a valid dictionary
            }
            for elem in list_elements(line) {
                let member = strip_params(elem);
                let d = directive(member);
                if !d.well_formed || !is_sf_key(d.name) {
                    return None;
                }
                if let Some(raw) = member.iter().position(|&b| b == b'=') {
                    let raw = trim(member.get(raw + 1..).unwrap_or_default());
                    if !is_sf_bare_item(raw) {
                        return None;
                    }
                }
                b.apply(&d);
                members += 1;
            }
        }
        (members > 0).then(|| b.finish())
    }

    /// Whether no directive is present.
    pub fn is_empty(&self) -> bool {
        *self == CacheControl::default()
    }
}

/// Whether `line` is a non-empty list with no empty member outside quoted strings.
fn no_empty_member(line: &[u8]) -> bool {
    let mut in_q = false;
    let mut esc = false;
    let mut last_sep = true; // start of line counts as a separator
    for &b in line {
        if esc {
            esc = false;
            continue;
        }
        match b {
            b'\\' if in_q => esc = true,
            b'"' => {
                in_q = !in_q;
                last_sep = false;
            }
            b',' if !in_q => {
                if last_sep {
                    return false;
                }
                last_sep = true;
            }
            b' ' | b'\t' => {}
            _ if !in_q => last_sep = false,
            _ => {}
        }
    }
    !last_sep
}

/// Cuts structured-field parameters (`;key=value`) off a dictionary member.
fn strip_params(elem: &[u8]) -> &[u8] {
    let mut in_q = false;
    let mut esc = false;
    for (i, &b) in elem.iter().enumerate() {
        if esc {
            esc = false;
        } else if in_q && b == b'\\' {
            esc = true;
        } else if b == b'"' {
            in_q = !in_q;
        } else if b == b';' && !in_q {
            return trim(elem.get(..i).unwrap_or_default());
        }
    }
    elem
}

/// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )` (RFC 8941 §3.1.2).
fn is_sf_key(k: &[u8]) -> bool {
    match k.split_first() {
        Some((&f, rest)) => {
            (f.is_ascii_lowercase() || f == b'*')
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b))
        }
        None => false,
    }
}

/// A bare item: integer, decimal, string, token, byte sequence or boolean (RFC 8941 §3.3).
fn is_sf_bare_item(v: &[u8]) -> bool {
    match v {
        [b'?', b'0' | b'1'] => true,
        [b'"', rest @ ..] => matches!(unquote(rest), Some((_, tail)) if tail.is_empty()),
        [b':', rest @ .., b':'] => rest
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        [f, ..] if f.is_ascii_alphabetic() || *f == b'*' => {
            v.iter().all(|&b| is_tchar(b) || b == b':' || b == b'/')
        }
        _ => {
            let digits = v.strip_prefix(b"-").unwrap_or(v);
            let mut parts = digits.splitn(2, |&b| b == b'.');
            let int = parts.next().unwrap_or_default();
            let frac = parts.next();
            !int.is_empty()
                && int.len() <= 15
                && int.iter().all(u8::is_ascii_digit)
                && frac
                    .is_none_or(|f| (1..=3).contains(&f.len()) && f.iter().all(u8::is_ascii_digit))
        }
    }
}

/// `Surrogate-Control` as far as relay uses it: `max-age` (a `+N` stale extension is
/// ignored) and `no-store` / `no-store-remote`. Members targeted at a named surrogate
/// (`max-age=60;name`) are ignored: relay has no surrogate name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SurrogateControl {
    /// `max-age=N`: freshness lifetime for surrogates.
    pub max_age: Option<u32>,
    /// `no-store` or `no-store-remote`.
    pub no_store: bool,
}

impl SurrogateControl {
    /// Parses the `Surrogate-Control` lines; `None` when none carried a directive relay uses.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<SurrogateControl> {
        let mut max_age = Num::Unset;
        let mut no_store = false;
        for line in lines {
            for elem in list_elements(line) {
                if elem.contains(&b';') {
                    continue;
                }
                let d = directive(elem);
                if d.name.eq_ignore_ascii_case(b"max-age") {
                    let n = d.value.bytes().and_then(|v| {
                        let v = trim(v);
                        let first = v.split(|&b| b == b'+').next().unwrap_or_default();
                        parse_delta_seconds(first)
                    });
                    max_age.push_min(n);
                } else if d.name.eq_ignore_ascii_case(b"no-store")
                    || d.name.eq_ignore_ascii_case(b"no-store-remote")
                {
                    no_store = true;
                }
            }
        }
        let sc = SurrogateControl {
            max_age: max_age.lifetime(),
            no_store,
        };
        (sc != SurrogateControl::default()).then_some(sc)
    }
}

/// Which field decided a response's caching policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DirectiveSource {
    /// `Cache-Control` (with `Expires`).
    #[default]
    CacheControl,
    /// `CDN-Cache-Control`: `Cache-Control` and `Expires` were ignored.
    CdnCacheControl,
    /// `Surrogate-Control` over `Cache-Control`.
    SurrogateControl,
}

impl DirectiveSource {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DirectiveSource::CacheControl => "cache-control",
            DirectiveSource::CdnCacheControl => "cdn-cache-control",
            DirectiveSource::SurrogateControl => "surrogate-control",
        }
    }
}

/// The directives a response is cached under, after precedence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effective {
    /// The directives that apply.
    pub directives: CacheControl,
    /// Where they came from.
    pub source: DirectiveSource,
    /// Whether `Expires` may be consulted (not when `CDN-Cache-Control` decides).
    pub use_expires: bool,
}

/// The precedence relay applies, as a CDN:
/// 1. a valid, non-empty `CDN-Cache-Control` decides alone; `Cache-Control` and `Expires`
///    are ignored (RFC 9213 §2.2);
/// 2. else `Surrogate-Control` overrides `Cache-Control`: its `max-age` takes the place of
///    `s-maxage` (the shared-cache lifetime; `Expires` is then ignored as with `s-maxage`)
///    and its `no-store` forbids storing; the other `Cache-Control` directives (`private`,
///    `no-cache`, `must-revalidate`, stale windows) still apply;
/// 3. else `Cache-Control` with `Expires`.
pub fn effective_directives(
    cache_control: CacheControl,
    cdn: Option<CacheControl>,
    surrogate: Option<SurrogateControl>,
) -> Effective {
    if let Some(directives) = cdn {
        return Effective {
            directives,
            source: DirectiveSource::CdnCacheControl,
            use_expires: false,
        };
    }
    if let Some(sc) = surrogate {
        let mut directives = cache_control;
        directives.no_store |= sc.no_store;
        if sc.max_age.is_some() {
            directives.s_maxage = sc.max_age;
        }
        return Effective {
            directives,
            source: DirectiveSource::SurrogateControl,
            use_expires: true,
        };
    }
    Effective {
        directives: cache_control,
        source: DirectiveSource::CacheControl,
        use_expires: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(s: &str) -> CacheControl {
        CacheControl::parse([s.as_bytes()])
    }

    #[test]
    fn rfc9111_5_2_2_response_directives() {
        let c = cc(
            "public, max-age=60, s-maxage=30, must-revalidate, proxy-revalidate, \
                    must-understand, immutable, no-transform, stale-while-revalidate=10, \
                    stale-if-error=20",
        );
        assert!(c.public && c.must_revalidate && c.proxy_revalidate);
        assert!(c.must_understand && c.immutable && c.no_transform);
        assert_eq!(c.max_age, Some(60));
        assert_eq!(c.s_maxage, Some(30));
        assert_eq!(c.stale_while_revalidate, Some(10));
        assert_eq!(c.stale_if_error, Some(20));
        assert!(!c.malformed);
        assert!(cc("no-store").no_store);
        assert_eq!(cc("no-cache").no_cache, FieldScope::All);
        assert_eq!(cc("private").private, FieldScope::All);
    }

    #[test]
    fn rfc9111_5_2_1_request_directives() {
        let c = cc("max-age=0, min-fresh=5, max-stale=7, only-if-cached, no-cache, no-store");
        assert_eq!(c.max_age, Some(0));
        assert_eq!(c.min_fresh, Some(5));
        assert_eq!(c.max_stale, Some(MaxStale::Limit(7)));
        assert!(c.only_if_cached && c.no_store && c.no_cache.is_all());
        assert_eq!(cc("max-stale").max_stale, Some(MaxStale::Any));
        assert_eq!(
            cc("max-stale, max-stale=3").max_stale,
            Some(MaxStale::Limit(3))
        );
        assert_eq!(cc("max-stale=x").max_stale, None);
        assert_eq!(
            cc("max-stale=\"5").max_stale,
            None,
            "unterminated quote grants nothing"
        );
        assert_eq!(cc("max-stale=5, max-stale=\"").max_stale, None);
    }

    #[test]
    fn rfc9111_5_2_case_insensitive_and_quoted_arguments() {
        let c = cc("MAX-AGE=\"120\", No-Store, S-MaxAge = 5");
        assert_eq!(c.max_age, Some(120));
        assert_eq!(c.s_maxage, Some(5));
        assert!(c.no_store);
    }

    #[test]
    fn rfc9111_5_2_2_qualified_private_and_no_cache() {
        let c = cc("private=\"Set-Cookie, X-User\", no-cache=\"set-cookie\"");
        assert_eq!(
            c.private,
            FieldScope::Fields(vec!["set-cookie".into(), "x-user".into()])
        );
        assert_eq!(c.no_cache.fields(), ["set-cookie"]);
        // token form, accepted
        assert_eq!(cc("private=x-a").private.fields(), ["x-a"]);
        // malformed lists widen to the unqualified directive
        assert!(cc("private=\"\"").private.is_all());
        assert!(cc("private=\"a b\"").private.is_all());
        assert!(cc("no-cache=\"unterminated").no_cache.is_all());
        assert!(cc("private=\"a\"junk").private.is_all());
        assert_eq!(cc("private=?0").private, FieldScope::Absent);
        // unqualified dominates a qualified repeat
        assert!(cc("private=\"a\", private").private.is_all());
        assert_eq!(cc("private=a, private=b").private.fields(), ["a", "b"]);
    }

    #[test]
    fn rfc9111_4_2_1_conflicting_duplicates_most_restrictive() {
        assert_eq!(cc("max-age=60, max-age=10").max_age, Some(10));
        let two_lines = CacheControl::parse([&b"max-age=10"[..], b"max-age=60"]);
        assert_eq!(two_lines.max_age, Some(10));
        assert_eq!(cc("s-maxage=5, s-maxage=50").s_maxage, Some(5));
        assert_eq!(
            cc("stale-while-revalidate=5, stale-while-revalidate=50").stale_while_revalidate,
            Some(5)
        );
        assert_eq!(cc("min-fresh=5, min-fresh=50").min_fresh, Some(50));
    }

    #[test]
    fn rfc9111_4_2_1_invalid_freshness_is_stale() {
        for v in [
            "max-age=abc",
            "max-age=-1",
            "max-age=",
            "max-age",
            "max-age=1.5",
            "max-age=60, max-age=x",
        ] {
            let c = cc(v);
            assert_eq!(c.max_age, Some(0), "{v}");
            assert!(c.malformed, "{v}");
        }
        assert_eq!(cc("s-maxage=\"\"").s_maxage, Some(0));
        // invalid stale windows grant nothing, even beside a valid one
        assert_eq!(
            cc("stale-if-error=1, stale-if-error=zz").stale_if_error,
            None
        );
        assert_eq!(cc("stale-while-revalidate").stale_while_revalidate, None);
    }

    #[test]
    fn rfc9111_1_2_2_huge_delta_seconds_saturate() {
        let c = cc("max-age=999999999999999999999999, stale-if-error=4294967296");
        assert_eq!(c.max_age, Some(DELTA_SECONDS_MAX));
        assert_eq!(c.stale_if_error, Some(DELTA_SECONDS_MAX));
        assert_eq!(
            cc("max-stale=2147483648").max_stale,
            Some(MaxStale::Limit(DELTA_SECONDS_MAX))
        );
    }

    #[test]
    fn rfc9111_5_2_3_unknown_extensions_ignored() {
        let c = cc("community=\"UCI\", foo=bar, x-very-long-extension-name-indeed=1, max-age=3");
        assert_eq!(c.max_age, Some(3));
        assert!(!c.malformed);
    }

    #[test]
    fn rfc9111_5_2_garbage_never_panics() {
        let inputs: [&[u8]; 12] = [
            b"",
            b",,,",
            b"=",
            b"==,=",
            b"\"",
            b"max-age=\"",
            b"\\",
            b"no-cache=\"\\",
            b"\xff\xfe\x00",
            b"max-age=1 2",
            b"private=\"a\"junk",
            b";;;max-age=1",
        ];
        for i in inputs {
            let c = CacheControl::parse([i]);
            let _ = c.is_empty();
        }
        assert!(cc("max-age=1 2").malformed);
        assert_eq!(cc("max-age=1 2").max_age, Some(0));
        assert!(cc("").is_empty());
    }

    #[test]
    fn rfc9213_2_1_targeted_field_is_a_dictionary() {
        let c = CacheControl::parse_targeted([&b"max-age=600, stale-if-error=30"[..]]);
        assert_eq!(c.as_ref().and_then(|c| c.max_age), Some(600));
        let c = CacheControl::parse_targeted([&b"no-store;foo=1"[..]]);
        assert!(c.is_some_and(|c| c.no_store));
        let c = CacheControl::parse_targeted([&b"no-cache=?0, max-age=5"[..]]);
        assert!(c.as_ref().is_some_and(|c| !c.no_cache.is_present()));
        let c = CacheControl::parse_targeted([&b"private=\"a,,b\""[..]]);
        assert!(c.is_some());
        // invalid dictionaries are ignored altogether (fall back to Cache-Control)
        for bad in [
            &b""[..],
            b"Max-Age=5",
            b"max-age=5,,",
            b"max-age=@",
            b"max-age=\"5",
            b"a b",
        ] {
            assert_eq!(CacheControl::parse_targeted([bad]), None, "{bad:?}");
        }
        assert_eq!(CacheControl::parse_targeted(std::iter::empty()), None);
    }

    #[test]
    fn surrogate_control_max_age_and_no_store() {
        let s = SurrogateControl::parse([&b"max-age=300+60, content=\"ESI/1.0\""[..]]);
        assert_eq!(
            s,
            Some(SurrogateControl {
                max_age: Some(300),
                no_store: false
            })
        );
        let s = SurrogateControl::parse([&b"no-store-remote"[..]]);
        assert_eq!(
            s,
            Some(SurrogateControl {
                max_age: None,
                no_store: true
            })
        );
        assert_eq!(
            SurrogateControl::parse([&b"max-age=300;other-cdn"[..]]),
            None
        );
        assert_eq!(SurrogateControl::parse([&b"content=\"ESI/1.0\""[..]]), None);
        let s = SurrogateControl::parse([&b"max-age=x"[..]]);
        assert_eq!(s.and_then(|s| s.max_age), Some(0));
    }

    #[test]
    fn rfc9213_2_2_precedence() {
        let base = cc("private, max-age=5");
        let cdn = CacheControl::parse_targeted([&b"max-age=600"[..]]);
        let e = effective_directives(base.clone(), cdn, None);
        assert_eq!(e.source, DirectiveSource::CdnCacheControl);
        assert!(!e.directives.private.is_present() && !e.use_expires);
        assert_eq!(e.directives.max_age, Some(600));

        let sc = SurrogateControl {
            max_age: Some(99),
            no_store: false,
        };
        let e = effective_directives(base.clone(), None, Some(sc));
        assert_eq!(e.source, DirectiveSource::SurrogateControl);
        assert_eq!(e.directives.s_maxage, Some(99));
        assert!(e.directives.private.is_all());

        let e = effective_directives(base, None, None);
        assert_eq!(e.source, DirectiveSource::CacheControl);
        assert!(e.use_expires);
    }
}

//! May a response be stored by a shared cache (RFC 9111 §3)? [`storable`] answers with
//! [`Storability::Store`] or the [`Reason`] it may not, named for logs and metrics (like
//! pingora's `Disabled(reason)`); the same reasons name a disabled lookup in [`super::Phase`].

use super::freshness::heuristically_cacheable;
use super::{Method, PolicyConfig, RequestDirectives, StoredMeta, Vary};

/// Why a response is not stored, or a request not served from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request method is not GET or HEAD.
    Method,
    /// The status is not final (1xx) or not a valid status code.
    StatusNotFinal,
    /// A 304 is not stored; it refreshes a stored response (RFC 9111 §4.3.4).
    NotModified,
    /// The request said `no-store`.
    RequestNoStore,
    /// The response said `no-store` (or `Surrogate-Control: no-store`).
    ResponseNoStore,
    /// `must-understand` with a status code relay does not implement.
    MustUnderstand,
    /// Unqualified `private`.
    Private,
    /// The request had `Authorization` and the response did not allow sharing (§3.5).
    Authorization,
    /// The response sets a cookie (`Set-Cookie`) and no `private="set-cookie"` or
    /// `no-cache="set-cookie"` says to store it without that field: a cookie is meant for
    /// one client, and shared caches (nginx, Varnish) do not store such responses.
    SetCookie,
    /// `Vary: *` (or a malformed `Vary`): never reusable.
    VaryAny,
    /// No freshness information (and `cache_without_freshness` is off), or nothing in the
    /// response makes it storable under §3 (explicit freshness, `public`, a heuristically
    /// cacheable status).
    NoFreshness,
}

impl Reason {
    /// A short stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Method => "method",
            Reason::StatusNotFinal => "status_not_final",
            Reason::NotModified => "not_modified",
            Reason::RequestNoStore => "request_no_store",
            Reason::ResponseNoStore => "response_no_store",
            Reason::MustUnderstand => "must_understand",
            Reason::Private => "private",
            Reason::Authorization => "authorization",
            Reason::SetCookie => "set_cookie",
            Reason::VaryAny => "vary_any",
            Reason::NoFreshness => "no_freshness",
        }
    }
}

/// The verdict on storing a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storability {
    /// The response may be stored.
    Store,
    /// The response must not be stored, for this reason.
    Bypass(Reason),
}

/// Status codes whose caching requirements relay implements (for `must-understand`, 206).
pub fn understood_status(status: u16) -> bool {
    heuristically_cacheable(status) || matches!(status, 302 | 303 | 307)
}

/// RFC 9111 §3 for a shared cache, with relay's freshness rule:
/// - method GET or HEAD; final status; a 304 is never stored on its own;
/// - no `no-store` in the request; none in the response unless `must-understand` is present
///   with an understood status (§5.2.2.3); `must-understand` with any other status: not stored;
/// - no unqualified `private` (a qualified one is fine: the named fields are stripped, see
///   [`super::validate::strip_for_storage`]);
/// - with `Authorization` in the request only if `public`, `must-revalidate` or `s-maxage`
///   (§3.5);
/// - no `Set-Cookie`, unless `private` or `no-cache` names it (then it is stripped);
/// - not `Vary: *`;
/// - freshness information: explicit (`s-maxage`, `max-age`, `Expires`), a heuristic lifetime,
///   or unqualified `no-cache` with a validator (the origin's own "revalidate every time").
///   Otherwise only with `cache_without_freshness`, and then only where §3 allows (`public` or
///   a heuristically cacheable status): such a response is stored with a lifetime of 0.
///
/// A response to HEAD has no body: it may refresh a stored GET response's header fields
/// (§4.3.5) but must not be stored as one.
pub fn storable(
    request: &RequestDirectives,
    response: &StoredMeta,
    config: &PolicyConfig,
) -> Storability {
    match storable_reason(request, response, config) {
        Some(reason) => Storability::Bypass(reason),
        None => Storability::Store,
    }
}

fn storable_reason(
    request: &RequestDirectives,
    response: &StoredMeta,
    config: &PolicyConfig,
) -> Option<Reason> {
    let d = &response.directives;
    let status = response.status;
    if request.method == Method::Other {
        return Some(Reason::Method);
    }
    if !(200..=999).contains(&status) {
        return Some(Reason::StatusNotFinal);
    }
    if status == 304 {
        return Some(Reason::NotModified);
    }
    if request.directives.no_store {
        return Some(Reason::RequestNoStore);
    }
    if d.must_understand {
        if !understood_status(status) {
            return Some(Reason::MustUnderstand);
        }
    } else if d.no_store {
        return Some(Reason::ResponseNoStore);
    }
    if d.private.is_all() {
        return Some(Reason::Private);
    }
    if request.authorization && !(d.public || d.must_revalidate || d.s_maxage.is_some()) {
        return Some(Reason::Authorization);
    }
    let names_cookie = |f: &[String]| f.iter().any(|n| n.eq_ignore_ascii_case("set-cookie"));
    if response.sets_cookie
        && !names_cookie(d.private.fields())
        && !names_cookie(d.no_cache.fields())
    {
        return Some(Reason::SetCookie);
    }
    if response.vary == Vary::Any {
        return Some(Reason::VaryAny);
    }
    // (A lifetime the operator set counts as explicit freshness.)
    let operator = response.operator_lifetime.is_some();
    let freshness_info = response.has_explicit_freshness()
        || operator
        || response.heuristic_lifetime.is_some()
        || (d.no_cache.is_all() && response.has_validator());
    let section3 = response.has_explicit_freshness()
        || operator
        || d.public
        || heuristically_cacheable(status);
    if !section3 || !(freshness_info || config.cache_without_freshness) {
        return Some(Reason::NoFreshness);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        method: &str,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
    ) -> Storability {
        check_with(method, req, status, resp, &PolicyConfig::default())
    }

    fn check_with(
        method: &str,
        req: &[(&str, &str)],
        status: u16,
        resp: &[(&str, &str)],
        config: &PolicyConfig,
    ) -> Storability {
        let rq = RequestDirectives::from_request(
            method.as_bytes(),
            req.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            config,
        );
        let m = StoredMeta::from_response(
            status,
            resp.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            0,
            0,
            config,
        );
        storable(&rq, &m, config)
    }

    const FRESH: (&str, &str) = ("Cache-Control", "max-age=60");

    #[test]
    fn rfc9111_3_method_and_status() {
        assert_eq!(check("GET", &[], 200, &[FRESH]), Storability::Store);
        assert_eq!(check("HEAD", &[], 200, &[FRESH]), Storability::Store);
        assert_eq!(
            check("POST", &[], 200, &[FRESH]),
            Storability::Bypass(Reason::Method)
        );
        assert_eq!(
            check("GET", &[], 100, &[FRESH]),
            Storability::Bypass(Reason::StatusNotFinal)
        );
        assert_eq!(
            check("GET", &[], 0, &[FRESH]),
            Storability::Bypass(Reason::StatusNotFinal)
        );
        assert_eq!(
            check("GET", &[], 1000, &[FRESH]),
            Storability::Bypass(Reason::StatusNotFinal)
        );
        assert_eq!(
            check("GET", &[], 304, &[FRESH]),
            Storability::Bypass(Reason::NotModified)
        );
        // a non-heuristic status with explicit freshness is storable
        assert_eq!(check("GET", &[], 500, &[FRESH]), Storability::Store);
        assert_eq!(check("GET", &[], 206, &[FRESH]), Storability::Store);
    }

    #[test]
    fn rfc9111_3_no_store_and_private() {
        let ns = ("Cache-Control", "max-age=60, no-store");
        assert_eq!(
            check("GET", &[], 200, &[ns]),
            Storability::Bypass(Reason::ResponseNoStore)
        );
        assert_eq!(
            check("GET", &[("Cache-Control", "no-store")], 200, &[FRESH]),
            Storability::Bypass(Reason::RequestNoStore)
        );
        let p = ("Cache-Control", "max-age=60, private");
        assert_eq!(
            check("GET", &[], 200, &[p]),
            Storability::Bypass(Reason::Private)
        );
        let q = ("Cache-Control", "max-age=60, private=\"set-cookie\"");
        assert_eq!(check("GET", &[], 200, &[q]), Storability::Store);
        let sc = [FRESH, ("Surrogate-Control", "no-store")];
        assert_eq!(
            check("GET", &[], 200, &sc),
            Storability::Bypass(Reason::ResponseNoStore)
        );
    }

    #[test]
    fn a_response_setting_a_cookie_is_stored_only_without_the_cookie() {
        let cookie = ("Set-Cookie", "session=abc; HttpOnly");
        assert_eq!(
            check("GET", &[], 200, &[("Cache-Control", "max-age=60"), cookie]),
            Storability::Bypass(Reason::SetCookie)
        );
        assert_eq!(
            check(
                "GET",
                &[],
                200,
                &[("Cache-Control", "public, s-maxage=60"), cookie]
            ),
            Storability::Bypass(Reason::SetCookie)
        );
        // The origin says which field must not be shared: stored, the field stripped.
        for cc in [
            "max-age=60, private=\"Set-Cookie\"",
            "max-age=60, no-cache=\"set-cookie\"",
        ] {
            assert_eq!(
                check("GET", &[], 200, &[("Cache-Control", cc), cookie]),
                Storability::Store,
                "{cc}"
            );
        }
        assert_eq!(Reason::SetCookie.as_str(), "set_cookie");
    }

    #[test]
    fn rfc9111_5_2_2_3_must_understand() {
        let mu = ("Cache-Control", "max-age=60, must-understand, no-store");
        assert_eq!(check("GET", &[], 200, &[mu]), Storability::Store);
        assert_eq!(
            check("GET", &[], 299, &[mu]),
            Storability::Bypass(Reason::MustUnderstand)
        );
        let mu = ("Cache-Control", "max-age=60, must-understand");
        assert_eq!(
            check("GET", &[], 418, &[mu]),
            Storability::Bypass(Reason::MustUnderstand)
        );
    }

    #[test]
    fn rfc9111_3_5_authorization() {
        let auth = [("Authorization", "Bearer t")];
        assert_eq!(
            check("GET", &auth, 200, &[FRESH]),
            Storability::Bypass(Reason::Authorization)
        );
        for cc in [
            "max-age=60, public",
            "max-age=60, must-revalidate",
            "s-maxage=60",
        ] {
            assert_eq!(
                check("GET", &auth, 200, &[("Cache-Control", cc)]),
                Storability::Store,
                "{cc}"
            );
        }
    }

    #[test]
    fn rfc9111_4_1_vary_star_not_stored() {
        let v = [FRESH, ("Vary", "*")];
        assert_eq!(
            check("GET", &[], 200, &v),
            Storability::Bypass(Reason::VaryAny)
        );
    }

    #[test]
    fn issue4_no_freshness_not_stored_by_default() {
        let nothing = check("GET", &[], 200, &[("ETag", "\"x\"")]);
        assert_eq!(nothing, Storability::Bypass(Reason::NoFreshness));
        // heuristic from Last-Modified is freshness information
        let lm = [
            ("Date", "Mon, 12 Jan 1970 13:46:40 GMT"),
            ("Last-Modified", "Thu, 01 Jan 1970 00:00:00 GMT"),
        ];
        assert_eq!(check("GET", &[], 200, &lm), Storability::Store);
        // but not for a status that is not heuristically cacheable
        assert_eq!(
            check("GET", &[], 302, &lm),
            Storability::Bypass(Reason::NoFreshness)
        );
        // Expires (even invalid: already expired) is explicit freshness
        assert_eq!(
            check("GET", &[], 200, &[("Expires", "0")]),
            Storability::Store
        );
        // no-cache with a validator: "revalidate each time" is stored
        let nc = [("Cache-Control", "no-cache"), ("ETag", "\"x\"")];
        assert_eq!(check("GET", &[], 200, &nc), Storability::Store);
        let nc = [("Cache-Control", "no-cache")];
        assert_eq!(
            check("GET", &[], 200, &nc),
            Storability::Bypass(Reason::NoFreshness)
        );
    }

    #[test]
    fn issue4_cache_without_freshness_switch() {
        let on = PolicyConfig {
            cache_without_freshness: true,
            ..PolicyConfig::default()
        };
        assert_eq!(
            check_with("GET", &[], 200, &[("ETag", "\"x\"")], &on),
            Storability::Store
        );
        // §3 still needs a reason to store: a 302 without freshness or public is not stored
        assert_eq!(
            check_with("GET", &[], 302, &[], &on),
            Storability::Bypass(Reason::NoFreshness)
        );
        let public = [("Cache-Control", "public")];
        assert_eq!(
            check_with("GET", &[], 302, &public, &on),
            Storability::Store
        );
        assert_eq!(Reason::NoFreshness.as_str(), "no_freshness");
    }
}

//! An origin's `cache_` keys: TTLs in seconds or with a unit, statuses and classes, and
//! errors naming the key and line.

use crate::{CachePolicy, Config, StatusMatch};
use std::path::Path;

fn origin(lines: &str) -> Result<Config, crate::ConfigError> {
    Config::from_str(
        &format!("[[origin.http]]\nurl = \"http://127.0.0.1:8000\"\n{lines}"),
        Path::new("/"),
        "relay.toml",
    )
}

#[test]
fn cache_keys_parse_into_the_origin_s_policy() {
    let c = origin(
        "cache_default_ttl = \"10m\"\ncache_status_ttl = { \"404\" = \"10s\", \"5xx\" = 5 }\n\
         cache_ttl_min = 30\ncache_ttl_max = \"1h\"\ncache_ignore_set_cookie = true\n\
         cache_stale_if_error = \"1d\"\n",
    )
    .unwrap();
    let p = &c.origin.http[0].cache;
    assert_eq!(p.default_ttl, Some(600));
    assert!(p.status_ttl.contains(&(StatusMatch::Code(404), 10)));
    assert!(p.status_ttl.contains(&(StatusMatch::Class(5), 5)));
    assert_eq!((p.ttl_min, p.ttl_max), (Some(30), Some(3600)));
    assert!(p.ignore_set_cookie && !p.ignore_private && !p.ignore_no_cache);
    assert_eq!(
        (p.stale_if_error, p.stale_while_revalidate),
        (Some(86_400), None)
    );
    assert_eq!(p.ttl_for(404, true), Some(10));
    assert_eq!(p.ttl_for(503, false), Some(5));
    assert_eq!(p.ttl_for(200, true), Some(600));
    assert_eq!(p.ttl_for(302, false), None);
    assert_eq!(p.query, crate::QueryKey::Keep);
    let c =
        origin("cache_key_query = \"sort\"\ncache_key_query_drop = [\"utm_source\"]\n").unwrap();
    let p = &c.origin.http[0].cache;
    assert_eq!(
        (p.query, &p.query_drop[..]),
        (crate::QueryKey::Sort, &["utm_source".to_string()][..])
    );
    // Nothing said: the answers decide.
    assert_eq!(
        origin("").unwrap().origin.http[0].cache,
        CachePolicy::default()
    );
}

#[test]
fn bad_cache_keys_are_named_with_their_line() {
    for (lines, key, says) in [
        (
            "cache_default_ttl = \"10 minutes\"",
            "cache_default_ttl",
            "a unit",
        ),
        ("cache_default_ttl = -1", "cache_default_ttl", "a unit"),
        (
            "cache_ttl_max = \"400d\"",
            "cache_ttl_max",
            "at most a year",
        ),
        (
            "cache_status_ttl = { \"6xx\" = 5 }",
            "cache_status_ttl",
            "\"6xx\"",
        ),
        (
            "cache_status_ttl = { \"404\" = \"soon\" }",
            "cache_status_ttl",
            "\"404\"",
        ),
        (
            "cache_ttl_min = 600\ncache_ttl_max = 60",
            "cache_ttl_min",
            "above cache_ttl_max",
        ),
        (
            "cache_key_query = \"sorted\"",
            "cache_key_query",
            "\"sort\"",
        ),
        (
            "cache_key_query_drop = [\"a=b\"]",
            "cache_key_query_drop",
            "parameter name",
        ),
        (
            "cache_key_query_drop = [\"utm\"]\ncache_key_query = \"drop\"",
            "cache_key_query_drop",
            "drops the whole query",
        ),
    ] {
        let e = origin(&format!("{lines}\n")).unwrap_err();
        assert_eq!(
            (e.key(), e.line()),
            (Some(format!("origin.http[0].{key}").as_str()), Some(3)),
            "{lines}: {e}"
        );
        assert!(e.to_string().contains(says), "{lines}: {e}");
    }
}

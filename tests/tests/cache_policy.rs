//! The operator's cache policy per origin (`cache_` keys of `[[origin.http]]`), against
//! nginx answering as it does: a default TTL where nginx says nothing, negative caching of
//! 404 and 5xx, a cap and a floor on TTLs, `private` and `Set-Cookie` ignored when the
//! operator trusts the origin. Each case side by side with a relay without the policy, on
//! the same nginx: what nginx's access log shows it was asked.

use relay_tests::nginx::NginxOrigin;
use relay_tests::{Relay, TempDir, fetch};
use std::time::Duration;

/// Which nginx location, and the `cache_` lines the policy relay gives its prefix.
const CASES: &[(&str, &str)] = &[
    ("plain", "cache_default_ttl = \"1h\""),
    ("capped", "cache_ttl_max = 2"),
    ("floored", "cache_ttl_min = \"1m\""),
    ("cookie", "cache_ignore_set_cookie = true"),
    ("private", "cache_ignore_private = true"),
    (
        "err",
        "cache_status_ttl = { \"5xx\" = \"10s\", \"503\" = \"20s\" }",
    ),
    ("neg", "cache_status_ttl = { \"404\" = \"10s\" }"),
];

fn relay_for(origin: &NginxOrigin, policy: bool) -> Relay {
    let mut config = String::from("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n");
    for (location, lines) in CASES {
        config.push_str(&format!(
            "[[origin.http]]\nurl = \"http://127.0.0.1:{}\"\nprefix = \"/{location}/\"\n{}\n\n",
            origin.port,
            if policy { lines } else { "" }
        ));
    }
    config.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
    Relay::start(&config)
}

#[test]
fn an_operator_s_cache_policy_per_origin_against_nginx() {
    let www = TempDir::new("policy-www");
    for location in ["plain", "capped", "floored", "cookie", "private"] {
        std::fs::create_dir_all(www.path().join(location)).unwrap();
        for who in ["p", "b"] {
            www.write(
                &format!("{location}/{who}.txt"),
                format!("{location} {who}\n").as_bytes(),
            );
        }
    }
    let origin = NginxOrigin::start(
        www.path(),
        "location /capped/ { expires 1h; }\n\
         location /floored/ { expires 0; }\n\
         location /cookie/ { expires 1h; add_header Set-Cookie \"session=abc\"; }\n\
         location /private/ { expires 1h; add_header Cache-Control private; }\n\
         location /err/ { return 503; }\n",
    );
    let with = relay_for(&origin, true);
    let without = relay_for(&origin, false);
    let asked = |path: &str| {
        origin
            .access_log()
            .iter()
            .filter(|(_, r)| r.split(' ').nth(1) == Some(path))
            .count()
    };
    // Each path asked twice through each relay: how often nginx was asked.
    let twice = |relay: &Relay, path: &str| {
        let first = fetch(&relay.url(path), &[]);
        let second = fetch(&relay.url(path), &[]);
        assert_eq!(first.status, second.status, "{path}");
        assert_eq!(first.body, second.body, "{path}");
        (first, second, asked(path))
    };
    let mut table = Vec::new();
    for (location, status) in [
        ("plain", 200),
        ("floored", 200),
        ("cookie", 200),
        ("private", 200),
        ("err", 503),
        ("neg", 404),
    ] {
        let (p, b) = match location {
            "err" | "neg" => (format!("/{location}/p"), format!("/{location}/b")),
            _ => (format!("/{location}/p.txt"), format!("/{location}/b.txt")),
        };
        let (first, second, by_policy) = twice(&with, &p);
        assert_eq!(first.status, status, "{p}: {}", first.head);
        let (_, _, by_default) = twice(&without, &b);
        table.push(format!(
            "{location}: nginx asked {by_policy} (policy) vs {by_default}"
        ));
        assert_eq!(
            by_policy, 1,
            "{p}: the second request was not a hit: {}",
            second.head
        );
        assert_eq!(by_default, 2, "{b}: stored without the policy");
        if location == "cookie" {
            assert!(
                first.field("set-cookie").is_some(),
                "the fetching client gets its cookie"
            );
            assert!(
                second.field("set-cookie").is_none(),
                "a stored cookie was shared"
            );
        }
    }
    // A cap: nginx says an hour, the operator two seconds.
    let (_, _, n) = twice(&with, "/capped/p.txt");
    assert_eq!(n, 1);
    std::thread::sleep(Duration::from_millis(2500));
    let later = fetch(&with.url("/capped/p.txt"), &[]);
    assert_eq!(later.status, 200);
    assert_eq!(asked("/capped/p.txt"), 2, "past the cap: asked again");
    let (_, _, n) = twice(&without, "/capped/b.txt");
    assert_eq!(n, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(asked("/capped/b.txt"), 1);
    table.push("capped: asked again after 2.5 s with the policy (2 s cap), not without".into());
    eprintln!(
        "operator cache policy against nginx:\n  {}",
        table.join("\n  ")
    );
}

/// The cache key's query (`cache_key_query`, `cache_key_query_drop`): nginx answers with
/// the query it got, so each body shows what was asked of it. Two requests whose queries
/// differ only in order, or in a parameter left out, are one object: nginx is asked once.
#[test]
fn a_query_is_kept_sorted_filtered_or_dropped_in_the_key_and_upstream() {
    let www = TempDir::new("query-www");
    let origin = NginxOrigin::start(
        www.path(),
        "location / { expires 1h; default_type text/plain; return 200 \"[$args]\\n\"; }",
    );
    let mut config = String::from("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n");
    for (prefix, lines) in [
        ("keep", ""),
        ("sort", "cache_key_query = \"sort\""),
        ("drop", "cache_key_query = \"drop\""),
        (
            "utm",
            "cache_key_query_drop = [\"utm_source\", \"utm_medium\"]",
        ),
    ] {
        config.push_str(&format!(
            "[[origin.http]]\nurl = \"http://127.0.0.1:{}\"\nprefix = \"/{prefix}/\"\n{lines}\n\n",
            origin.port
        ));
    }
    config.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
    let relay = Relay::start(&config);
    let asked = |path: &str| {
        origin
            .access_log()
            .iter()
            .filter(|(_, r)| r.split(' ').nth(1).is_some_and(|t| t.starts_with(path)))
            .count()
    };
    let body = |target: &str| {
        let got = fetch(&relay.url(target), &[]);
        assert_eq!(got.status, 200, "{target}: {}", got.head);
        String::from_utf8_lossy(&got.body).trim().to_string()
    };
    // As sent: two objects.
    assert_eq!(body("/keep/a?b=2&a=1"), "[b=2&a=1]");
    assert_eq!(body("/keep/a?a=1&b=2"), "[a=1&b=2]");
    assert_eq!(asked("/keep/a"), 2);
    // Sorted: one.
    assert_eq!(body("/sort/a?b=2&a=1"), "[a=1&b=2]");
    assert_eq!(body("/sort/a?a=1&b=2"), "[a=1&b=2]");
    assert_eq!(asked("/sort/a"), 1);
    // One name's values keep their order (`a=2&a=1` may not mean `a=1&a=2`).
    assert_eq!(body("/sort/a?c=1&a=2&a=1"), "[a=2&a=1&c=1]");
    // None: one, and nginx got no query.
    assert_eq!(body("/drop/a?x=1"), "[]");
    assert_eq!(body("/drop/a?y=2"), "[]");
    assert_eq!(asked("/drop/a"), 1);
    // Tracking parameters left out, the rest sorted: one.
    assert_eq!(body("/utm/a?utm_source=mail&id=5&utm_medium=x"), "[id=5]");
    assert_eq!(body("/utm/a?id=5&utm_source=web"), "[id=5]");
    assert_ne!(body("/utm/a?id=6"), "[id=5]");
    assert_eq!(asked("/utm/a"), 2);
    // Other methods pass through with the query as sent.
    let posted = fetch(&relay.url("/sort/a?b=2&a=1"), &["-X", "POST", "-d", "x"]);
    assert!(
        origin
            .access_log()
            .iter()
            .any(|(_, r)| r.starts_with("POST /sort/a?b=2&a=1 ")),
        "{}",
        posted.head
    );
}

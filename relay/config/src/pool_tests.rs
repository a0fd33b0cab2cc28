//! An origin's `servers`: addresses, weights and backups, and the errors naming the key.

use crate::Config;
use std::path::Path;

fn origin(lines: &str) -> Result<Config, crate::ConfigError> {
    Config::from_str(
        &format!("[[origin.http]]\nurl = \"https://origin.test\"\n{lines}"),
        Path::new("/"),
        "relay.toml",
    )
}

#[test]
fn servers_make_the_origin_s_pool_and_the_url_still_names_it() {
    let c = origin(
        "servers = [{ address = \"127.0.0.1:8443\", weight = 3 }, { address = \"127.0.0.2\" }, \
         { address = \"127.0.0.3:9000\", backup = true }]\n",
    )
    .unwrap();
    let o = &c.origin.http[0];
    let got: Vec<(String, u32, bool)> = o
        .servers
        .iter()
        .map(|s| (s.name.clone(), s.weight, s.backup))
        .collect();
    assert_eq!(
        got,
        [
            ("127.0.0.1:8443".to_string(), 3, false),
            ("127.0.0.2:443".to_string(), 1, false),
            ("127.0.0.3:9000".to_string(), 1, true),
        ]
    );
    // The url's host need not resolve: it is the Host sent and the name verified.
    assert_eq!(o.authority, "origin.test");
    assert_eq!(o.tls.as_ref().unwrap().server_name, "origin.test");
    // Without servers, the url's address is the one server.
    let c = Config::from_str(
        "[[origin.http]]\nurl = \"http://127.0.0.1:8000\"\n",
        Path::new("/"),
        "relay.toml",
    )
    .unwrap();
    assert_eq!(c.origin.http[0].servers.len(), 1);
}

#[test]
fn bad_servers_are_named() {
    for (line, says) in [
        (
            "servers = [{ address = \"127.0.0.1:1\", weight = 0 }]",
            "weight",
        ),
        (
            "servers = [{ address = \"127.0.0.1:1\", backup = true }]",
            "not a backup",
        ),
        ("servers = [{ addr = \"127.0.0.1:1\" }]", ""),
    ] {
        let e = origin(&format!("{line}\n")).unwrap_err();
        assert_eq!(e.line(), Some(3), "{line}: {e}");
        assert!(
            e.to_string().contains("servers") && e.to_string().contains(says),
            "{line}: {e}"
        );
    }
    let many: Vec<String> = (0..65)
        .map(|i| format!("{{ address = \"127.0.0.1:{}\" }}", 1000 + i))
        .collect();
    let e = origin(&format!("servers = [{}]\n", many.join(", "))).unwrap_err();
    assert!(e.to_string().contains("at most 64"), "{e}");
}

/// One server by address.
const ONE: &str = "servers = [{ address = \"127.0.0.1:1\" }]\n";

#[test]
fn a_health_check_takes_its_defaults_and_refuses_what_cannot_work() {
    let c = origin(&format!("{ONE}health_check = {{ path = \"/health\" }}\n")).unwrap();
    let h = c.origin.http[0].health_check.as_ref().expect("a check");
    assert_eq!(
        (h.path.as_str(), h.interval_ms, h.timeout_ms, h.fall, h.rise),
        ("/health", 2000, 1000, 3, 2)
    );
    assert!(origin(ONE).unwrap().origin.http[0].health_check.is_none());
    for (line, says) in [
        ("health_check = { path = \"health\" }", "start with '/'"),
        (
            "health_check = { path = \"/h\", interval_ms = 100, timeout_ms = 500 }",
            "must not pass",
        ),
        ("health_check = { path = \"/h\", fall = 0 }", "fall"),
        ("health_check = { path = \"/h\", every = 5 }", ""),
    ] {
        let e = origin(&format!("{ONE}{line}\n")).unwrap_err();
        assert_eq!(e.line(), Some(4), "{line}: {e}");
        assert!(
            e.to_string().contains("health_check") && e.to_string().contains(says),
            "{line}: {e}"
        );
    }
}

#[test]
fn servers_may_be_dns_names_looked_up_when_the_relay_runs() {
    use crate::ServerHost;
    let c = origin(
        "servers = [{ address = \"Origin-A.Example.:8443\" }, { address = \"b.example\" }, \
         { address = \"[::1]\" }]\n",
    )
    .unwrap();
    let hosts: Vec<&ServerHost> = c.origin.http[0].servers.iter().map(|s| &s.host).collect();
    assert_eq!(
        hosts,
        [
            &ServerHost::Name {
                name: "origin-a.example".into(),
                port: 8443
            },
            &ServerHost::Name {
                name: "b.example".into(),
                port: 443
            },
            &ServerHost::Address("[::1]:443".parse().unwrap()),
        ]
    );
    // The url's own host when there are no servers.
    let c = Config::from_str(
        "[[origin.http]]\nurl = \"http://cdn.example:8080\"\n",
        Path::new("/"),
        "relay.toml",
    )
    .unwrap();
    assert_eq!(
        c.origin.http[0].servers[0].host,
        ServerHost::Name {
            name: "cdn.example".into(),
            port: 8080
        }
    );
    for bad in [
        "a..b",
        "-a.example",
        "a b",
        "300.1.2.3",
        "a.example:0",
        "[::1",
    ] {
        let e = origin(&format!("servers = [{{ address = \"{bad}\" }}]\n")).unwrap_err();
        assert!(
            e.to_string().contains("servers") && e.to_string().contains(bad),
            "{bad}: {e}"
        );
    }
}

#[test]
fn the_resolver_and_its_bounds_are_read_and_checked() {
    let at = |text: &str| {
        Config::from_str(
            &format!("[origin]\n{text}\n[[origin.http]]\nurl = \"http://o.example\"\n"),
            Path::new("/"),
            "relay.toml",
        )
    };
    let d = at("").unwrap().origin.dns;
    assert_eq!(d, crate::DnsConfig::default());
    assert!(d.resolver.is_empty(), "resolv.conf's by default");
    let d = at(
        "resolver = [\"127.0.0.1:5353\", \"::1\", \"10.0.0.53\"]\nresolver_timeout_ms = 500\n\
                dns_ttl_min_ms = 200\ndns_ttl_max_ms = 60000",
    )
    .unwrap()
    .origin
    .dns;
    assert_eq!(
        d.resolver,
        [
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "10.0.0.53:53".parse().unwrap()
        ]
    );
    assert_eq!(
        (d.timeout_ms, d.ttl_min_ms, d.ttl_max_ms),
        (500, 200, 60000)
    );
    for (line, key) in [
        ("resolver = [\"dns.example\"]", "origin.resolver"),
        ("resolver_timeout_ms = 0", "origin.resolver_timeout_ms"),
        (
            "dns_ttl_min_ms = 5000\ndns_ttl_max_ms = 1000",
            "origin.dns_ttl_max_ms",
        ),
    ] {
        let e = at(line).unwrap_err();
        assert!(e.to_string().contains(key), "{line}: {e}");
    }
}

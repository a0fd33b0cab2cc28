//! `[steer]`: a full example, defaults, and errors that name the key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::steer::{is_prime, parse_mac, parse_prefix};
use crate::{Config, ErrorKind, SteerConfig, SteerPolicy, SteerProtocol};

fn parse(steer: &str) -> Result<Config, crate::ConfigError> {
    let text = format!("[origin]\ndirectory = \"/d\"\n\n{steer}");
    Config::from_str(&text, Path::new("/"), "relay.toml")
}

fn error(steer: &str) -> (ErrorKind, String, String) {
    let err = parse(steer).expect_err("must be refused");
    (
        err.kind(),
        err.key().unwrap_or("").to_owned(),
        err.to_string(),
    )
}

const SITE: &str = r#"
[steer]
ring_size = 251
max_services = 2
malformed = "pass"
fragments = "drop"
ip_options = "drop"
decap = true
encap_source_v4 = "10.200.252.0/24"
encap_source_v6 = "fd00:1::/96"
proximity_rtt_us = 500

[steer.guard]
new_flows_per_second = 100
new_flow_burst = 10
rate_table_entries = 4096
blocklist = ["10.200.99.0/24", "2001:db8:bad::/48", "10.200.98.7"]

[[steer.services]]
address = "10.200.251.1"
port = 8080

[[steer.services]]
address = "2001:db8::1"
port = 443
protocol = "udp"

[[steer.nodes]]
name = "here"
local = true

[[steer.nodes]]
name = "r2"
address = "10.200.250.12"
mac = "02:00:00:00:fa:12"
weight = 200
rtt_us = 1500

[[steer.nodes]]
name = "r3"
address_v6 = "2001:db8::13"
next_hop = "10.200.250.1"
up = false
"#;

#[test]
fn a_site_parses() {
    let steer = parse(SITE).expect("site config").steer;
    assert_eq!(steer.ring_size, 251);
    assert_eq!(steer.max_services, 2);
    assert_eq!(steer.malformed, SteerPolicy::Pass);
    assert_eq!(steer.fragments, SteerPolicy::Drop);
    assert_eq!(steer.ip_options, SteerPolicy::Drop);
    assert!(steer.decap);
    assert_eq!(steer.encap_source_v4, (Ipv4Addr::new(10, 200, 252, 0), 24));
    assert_eq!(steer.encap_source_v6.1, 96);
    assert_eq!(steer.proximity_rtt_us, 500);
    assert_eq!(steer.guard.new_flows_per_second, 100);
    assert_eq!(steer.guard.new_flow_burst, 10);
    assert_eq!(steer.guard.rate_table_entries, 4096);
    assert_eq!(steer.guard.blocklist.len(), 3);
    assert_eq!(
        steer.guard.blocklist[2],
        (IpAddr::V4(Ipv4Addr::new(10, 200, 98, 7)), 32)
    );
    assert_eq!(steer.services.len(), 2);
    assert_eq!(steer.services[0].protocol, SteerProtocol::Tcp);
    assert_eq!(steer.services[1].protocol, SteerProtocol::Udp);
    assert_eq!(steer.services[1].port, 443);
    let [here, r2, r3] = &steer.nodes[..] else {
        panic!("three nodes: {:?}", steer.nodes)
    };
    assert!(here.local && here.up && here.weight == 100);
    assert_eq!(r2.mac, Some([2, 0, 0, 0, 0xfa, 0x12]));
    assert_eq!(r2.weight, 200);
    assert_eq!(r2.rtt_us, 1500);
    assert_eq!(
        r3.address_v6,
        Some("2001:db8::13".parse::<Ipv6Addr>().unwrap())
    );
    assert!(!r3.up);
    assert_eq!(
        r3.next_hop,
        Some(IpAddr::V4(Ipv4Addr::new(10, 200, 250, 1)))
    );
}

#[test]
fn an_empty_steer_table_is_the_default() {
    assert_eq!(parse("[steer]\n").unwrap().steer, SteerConfig::default());
    let d = SteerConfig::default();
    assert_eq!(d.ring_size, 65537);
    assert_eq!(d.malformed, SteerPolicy::Drop);
    assert_eq!(d.fragments, SteerPolicy::Pass);
    assert_eq!(d.ip_options, SteerPolicy::Steer);
}

#[test]
fn the_daemon_keys_parse() {
    let text = "[steer]\niface = \"eth1\"\n\n[steer.health]\ninterval_ms = 200\ntimeout_ms = 100\n\
                down_after = 2\nup_after = 4\npath = \"/ready\"\nmeasure_rtt = false\n\
                rtt_change_percent = 50\n\n[[steer.nodes]]\nname = \"r2\"\n\
                address = \"10.200.250.12\"\nmac = \"02:00:00:00:fa:12\"\n\
                health_check = \"10.200.250.12:9090\"\n";
    let steer = parse(text).expect("daemon keys").steer;
    assert_eq!(steer.iface.as_deref(), Some("eth1"));
    assert_eq!(steer.health.interval_ms, 200);
    assert_eq!(steer.health.timeout_ms, 100);
    assert_eq!(steer.health.down_after, 2);
    assert_eq!(steer.health.up_after, 4);
    assert_eq!(steer.health.path, "/ready");
    assert!(!steer.health.measure_rtt);
    assert_eq!(steer.health.rtt_change_percent, 50);
    assert_eq!(
        steer.nodes[0].health_check,
        Some("10.200.250.12:9090".parse().unwrap())
    );
    let d = SteerConfig::default();
    assert_eq!(d.iface, None);
    assert_eq!((d.health.interval_ms, d.health.timeout_ms), (1000, 500));
    assert_eq!((d.health.down_after, d.health.up_after), (3, 2));
    assert_eq!(d.health.path, "/healthz");
    assert!(d.health.measure_rtt);
    assert_eq!(d.health.rtt_change_percent, 20);
    let cases = [
        (
            "[steer]\niface = \"a/b\"\n",
            "steer.iface",
            "interface name",
        ),
        ("[steer]\niface = \"\"\n", "steer.iface", "interface name"),
        (
            "[steer.health]\ninterval_ms = 1\n",
            "steer.health.interval_ms",
            "between",
        ),
        (
            "[steer.health]\ndown_after = 0\n",
            "steer.health.down_after",
            "between",
        ),
        (
            "[steer.health]\nrtt_change_percent = 0\n",
            "steer.health.rtt_change_percent",
            "between",
        ),
        (
            "[steer.health]\npath = \"healthz\"\n",
            "steer.health.path",
            "starting with '/'",
        ),
        (
            "[[steer.nodes]]\nname = \"a\"\nlocal = true\nhealth_check = \"10.0.0.1\"\n",
            "steer.nodes[0].health_check",
            "address and port",
        ),
    ];
    for (text, key, needle) in cases {
        let (_, got_key, message) = error(text);
        assert_eq!(got_key, key, "{text}: {message}");
        assert!(message.contains(needle), "{text}: {message}");
    }
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("[steer]\nring_size = 65536\n", "steer.ring_size", "prime"),
        ("[steer]\nring_size = 7\n", "steer.ring_size", "prime"),
        (
            "[steer]\nmax_services = 0\n",
            "steer.max_services",
            "between",
        ),
        (
            "[steer]\nmalformed = \"steer\"\n",
            "steer.malformed",
            "\"pass\" or \"drop\"",
        ),
        (
            "[steer]\nip_options = \"x\"\n",
            "steer.ip_options",
            "\"steer\"",
        ),
        (
            "[steer]\nencap_source_v4 = \"10.0.0.1/8\"\n",
            "steer.encap_source_v4",
            "host bits",
        ),
        (
            "[steer]\nencap_source_v6 = \"10.0.0.0/8\"\n",
            "steer.encap_source_v6",
            "IPv6",
        ),
        (
            "[steer.guard]\nblocklist = [\"10.0.0.0/8\", \"nope\"]\n",
            "steer.guard.blocklist[1]",
            "prefix",
        ),
        (
            "[[steer.services]]\naddress = \"10.200.0.1\"\nport = 70000\n",
            "steer.services[0].port",
            "between 1 and 65535",
        ),
        (
            "[[steer.services]]\naddress = \"10.200.0.1\"\nport = 80\nprotocol = \"sctp\"\n",
            "steer.services[0].protocol",
            "tcp",
        ),
        (
            "[[steer.nodes]]\nname = \"a\"\nlocal = true\n[[steer.nodes]]\nname = \"a\"\nlocal = false\n",
            "steer.nodes[1].name",
            "twice",
        ),
        (
            "[[steer.nodes]]\nname = \"a\"\naddress = \"10.200.0.1\"\nmac = \"02:00:00:00:00\"\n",
            "steer.nodes[0].mac",
            "MAC",
        ),
        (
            "[[steer.nodes]]\nname = \"a\"\naddress = \"10.200.0.1\"\n",
            "steer.nodes[0].name",
            "`mac` or `next_hop`",
        ),
        (
            "[[steer.nodes]]\nname = \"a\"\nweight = 10001\nlocal = true\n",
            "steer.nodes[0].weight",
            "between 0 and 10000",
        ),
    ];
    for (text, key, needle) in cases {
        let (_, got_key, message) = error(text);
        assert_eq!(got_key, key, "{text}: {message}");
        assert!(message.contains(needle), "{text}: {message}");
        assert!(message.starts_with("relay.toml:"), "{message}");
    }
    let two = "[steer]\nmax_services = 1\n[[steer.services]]\naddress = \"10.200.0.1\"\nport = 80\n\
               [[steer.services]]\naddress = \"10.200.0.1\"\nport = 81\n";
    let (kind, key, message) = error(two);
    assert_eq!(
        (kind, key.as_str()),
        (ErrorKind::InvalidValue, "steer.max_services")
    );
    assert!(message.contains("2 services"), "{message}");
    let (kind, key, _) = error("[[steer.nodes]]\nname = \"a\"\ncolour = \"red\"\n");
    assert_eq!(kind, ErrorKind::UnknownKey);
    assert_eq!(key, "steer.nodes[0].colour");
}

#[test]
fn helpers() {
    assert!(is_prime(65537) && is_prime(13) && is_prime(251));
    assert!(!is_prime(65535) && !is_prime(1) && !is_prime(49));
    assert_eq!(parse_mac("0a:0B:00:ff:10:01"), Ok([10, 11, 0, 255, 16, 1]));
    assert!(parse_mac("0a:0b:00:ff:10:01:02").is_err());
    assert!(parse_mac("a:0b:00:ff:10:01").is_err());
    assert_eq!(
        parse_prefix("0.0.0.0/0"),
        Ok((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
    );
    assert!(parse_prefix("::1/127").is_err());
    assert!(parse_prefix("::/129").is_err());
}

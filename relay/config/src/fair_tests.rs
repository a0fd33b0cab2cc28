//! The settings that keep one client from taking what others need: the per-client share of
//! the pass-through budget, the request body's pause and rate, and the per-client
//! connection limit. Defaults, accepted forms, and errors naming key and line.

use std::path::Path;

use crate::bytesize::{KIB, MIB};
use crate::schema::*;
use crate::{ConfigError, ErrorKind};

const DIR: &str = "[origin]\ndirectory = \"/d\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("/etc/relay"), "relay.toml")
}

#[test]
fn defaults() {
    let c = parse(DIR).unwrap();
    assert_eq!(c.server.body_timeout_ms, 10_000);
    assert_eq!(c.server.body_timeout().as_secs(), 10);
    assert_eq!(c.server.body_min_rate, 8 * KIB);
    assert_eq!(c.server.max_connections_per_client, 1024);
    assert_eq!(
        c.origin.pass_buffer_per_client,
        ClientShare::Fraction(250_000)
    );
    // A quarter of the default budget: the largest body relay collects fits.
    assert_eq!(
        c.origin
            .pass_buffer_per_client
            .bytes(c.origin.pass_buffer_bytes),
        Some(64 * MIB)
    );
}

#[test]
fn accepted_forms() {
    let c = parse(
        "[server]\nbody_timeout_ms = 1\nbody_min_rate = 0\nmax_connections_per_client = 0\n\
         [origin]\ndirectory = \"/d\"\npass_buffer_bytes = \"8 MiB\"\n\
         pass_buffer_per_client = \"12.5%\"\n",
    )
    .unwrap();
    assert_eq!(
        (
            c.server.body_timeout_ms,
            c.server.body_min_rate,
            c.server.max_connections_per_client
        ),
        (1, 0, 0)
    );
    assert_eq!(
        c.origin.pass_buffer_per_client,
        ClientShare::Fraction(125_000)
    );
    assert_eq!(c.origin.pass_buffer_per_client.bytes(8 * MIB), Some(MIB));
    let share = |v: &str| {
        parse(&format!(
            "[origin]\ndirectory = \"/d\"\npass_buffer_bytes = \"8 MiB\"\n\
             pass_buffer_per_client = {v}\n"
        ))
        .map(|c| c.origin.pass_buffer_per_client)
    };
    assert_eq!(share("1.0").unwrap(), ClientShare::Fraction(1_000_000));
    assert_eq!(share("0.125").unwrap(), ClientShare::Fraction(125_000));
    assert_eq!(share("0").unwrap(), ClientShare::Off);
    assert_eq!(share("0.0").unwrap(), ClientShare::Off);
    assert_eq!(share("\"0%\"").unwrap(), ClientShare::Off);
    assert_eq!(share("\"2 MiB\"").unwrap(), ClientShare::Bytes(2 * MIB));
    assert_eq!(share("65536").unwrap(), ClientShare::Bytes(64 * KIB));
    assert_eq!(share("\"8 MiB\"").unwrap(), ClientShare::Bytes(8 * MIB));
    assert_eq!(ClientShare::Off.bytes(8 * MIB), None);
    let c = parse(
        "[server]\nbody_timeout_ms = 86400000\nbody_min_rate = \"1 GiB\"\n\
         max_connections_per_client = 1048576\n[origin]\ndirectory = \"/d\"\n",
    )
    .unwrap();
    assert_eq!(c.server.body_min_rate, 1 << 30);
    assert_eq!(c.server.max_connections_per_client, 1 << 20);
}

#[test]
fn impossible_values_name_key_and_line() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "[server]\nbody_timeout_ms = 0\n",
            "server.body_timeout_ms",
            2,
            "must be between 1 and 86400000, got 0",
        ),
        (
            "[server]\nworkers = 1\nbody_min_rate = \"2 GiB\"\n",
            "server.body_min_rate",
            3,
            "must be between 0 and 1 GiB, got 2 GiB",
        ),
        (
            "[server]\nbody_min_rate = \"fast\"\n",
            "server.body_min_rate",
            2,
            "invalid byte size \"fast\"",
        ),
        (
            "[server]\nmax_connections_per_client = 1048577\n",
            "server.max_connections_per_client",
            2,
            "must be between 0 and 1048576, got 1048577",
        ),
    ];
    for &(prefix, key, line, needle) in cases {
        let e = parse(&format!("{prefix}{DIR}")).unwrap_err();
        assert_eq!(
            (e.kind(), e.key(), e.line()),
            (ErrorKind::InvalidValue, Some(key), Some(line)),
            "{e}"
        );
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
    }
    let shares: &[(&str, &str)] = &[
        ("1.5", "between 0.001 and 1 (0.1% to 100%), got 1.5"),
        ("-0.5", "got -0.5"),
        ("\"150%\"", "got 1.5"),
        ("0.0001", "got 0.0001"),
        (
            "\"1 KiB\"",
            "between 64 KiB and origin.pass_buffer_bytes (8 MiB), got 1 KiB",
        ),
        ("\"9 MiB\"", "got 9 MiB"),
        ("\"a lot\"", "invalid byte size \"a lot\""),
        ("\"x%\"", "invalid percentage \"x%\""),
        ("true", "a fraction of origin.pass_buffer_bytes"),
    ];
    for &(value, needle) in shares {
        let text = format!(
            "[origin]\ndirectory = \"/d\"\npass_buffer_bytes = \"8 MiB\"\n\
             pass_buffer_per_client = {value}\n"
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(
            (e.key(), e.line()),
            (Some("origin.pass_buffer_per_client"), Some(4)),
            "{value}: {e}"
        );
        assert!(
            e.to_string().contains(needle),
            "{value}: {e} lacks {needle:?}"
        );
    }
}

//! check-config reports every error a file holds, each with its key and line: the schema's
//! (unknown keys, wrong types, `read`) and the value checks' together, within a bound.

use std::path::Path;

use crate::tests::{err, load_err};
use crate::{Config, ConfigError, ErrorKind};

#[test]
fn every_error_is_reported_each_with_its_key_and_line() {
    let text = "[server]\nworkers = 100000\n\n[cache]\nchunk_size = 3\n\n[log]\n\
                access_format = \"xml\"\n\n[[origin.http]]\nurl = \"http://127.0.0.1:1\"\n\
                retries = 1000\n\n[[origin.http]]\nurl = \"ftp://x\"\n";
    let e = Config::from_str(text, Path::new("/"), "relay.toml").unwrap_err();
    let each: Vec<(Option<usize>, String)> = e
        .each()
        .iter()
        .map(|e| (e.line(), e.key().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        each,
        [
            (Some(2), "server.workers".to_string()),
            (Some(5), "cache.chunk_size".to_string()),
            (Some(8), "log.access_format".to_string()),
            (Some(12), "origin.http[0].retries".to_string()),
            (Some(15), "origin.http[1].url".to_string()),
        ],
        "{e}"
    );
    // One line each, in file order.
    assert_eq!(e.to_string().lines().count(), 5, "{e}");
    assert_eq!(e.line(), Some(2), "the first");

    // What the machine says too: a directory that is not there and a log's directory.
    let e = load_err(
        "many",
        "[origin]\ndirectory = \"no/such/dir\"\n\n[log]\naccess = \"nope/access.log\"\n",
    );
    let keys: Vec<&str> = e.each().iter().filter_map(|e| e.key()).collect();
    assert_eq!(keys, ["origin.directory", "log.access"], "{e}");
}

/// One expected error: its line, dotted key and class (as [`each`] gives them).
fn at(line: usize, key: &str, kind: ErrorKind) -> (Option<usize>, String, ErrorKind) {
    (Some(line), key.to_string(), kind)
}

/// Each error's line, dotted key and class, in the order reported.
fn each(e: &ConfigError) -> Vec<(Option<usize>, String, ErrorKind)> {
    e.each()
        .iter()
        .map(|e| (e.line(), e.key().unwrap_or("").to_string(), e.kind()))
        .collect()
}

#[test]
fn every_key_the_schema_refuses_is_reported() {
    use ErrorKind::{InvalidValue, MissingKey, UnknownKey, WrongType};
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\nbogus = 1\nworkers = \"x\"\n\
                [cache]\nfoo = 2\nmemory_bytes = \"zz\"\n";
    let e = err(text);
    assert_eq!(
        each(&e),
        [
            at(3, "server.bogus", UnknownKey),
            at(4, "server.workers", WrongType),
            at(6, "cache.foo", UnknownKey),
            at(7, "cache.memory_bytes", InvalidValue),
            // The file names no origin either: what the later checks find is reported too.
            (None, "origin.directory".to_string(), MissingKey),
        ],
        "{e}"
    );
    let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
    assert_eq!(lines.len(), 5, "{e}");
    // Each message as when it was the only error: position, key, the keys the table takes.
    assert_eq!(
        lines[0],
        "relay.toml:3:1: server.bogus: unknown key `bogus`, expected one of `listen`, \
         `workers`, `max_connections`, `header_timeout_ms`, `idle_timeout_ms`, \
         `body_timeout_ms`, `body_min_rate`, `max_connections_per_client`, `pin_cpus`, \
         `zerocopy_min_bytes`, `zerocopy_unregistered_min_bytes`, `drain_ms`, `limits`"
    );
    assert_eq!(
        lines[1],
        "relay.toml:4:11: server.workers: invalid type: string \"x\", expected a \
         non-negative integer"
    );
    assert!(
        lines[2].starts_with(
            "relay.toml:6:1: cache.foo: unknown key `foo`, expected one of `chunk_size`"
        ),
        "{e}"
    );
    assert!(
        lines[3].starts_with("relay.toml:7:16: cache.memory_bytes: invalid byte size \"zz\""),
        "{e}"
    );

    // Unknown keys and wrong types in many tables, nested and dotted ones, array entries and
    // inline tables, beside a table that only the later checks refuse.
    let text = "verbose = true\n\
                [server]\nworkers = 2\nworker = 3\nlisten = 8080\n\
                [server.limits]\nmax_uri = 5\nmax_headers = \"64\"\n\
                [cache]\nchunk_size = false\nsize = 5\n\
                [log]\naccess_format = \"xml\"\n\
                [steer]\npin = \"/x\"\n\
                [[steer.nodes]]\nname = \"a\"\ncolour = \"red\"\n\
                [origin]\ndirectory = \"/d\"\nmirror = \"/e\"\n\
                [[origin.http]]\nurl = \"http://127.0.0.1:1\"\ncolour = \"red\"\nretries = \"3\"\n\
                health_check = { path = \"/h\", every = 5 }\n\
                [[origin.http]]\nurl = \"http://127.0.0.1:2\"\n\
                servers = [{ address = \"127.0.0.1:1\" }, { address = \"127.0.0.1:2\", wieght = 2 }]\n\
                cluster.peer = 1\n";
    let e = err(text);
    assert_eq!(
        each(&e),
        [
            at(1, "verbose", UnknownKey),
            at(4, "server.worker", UnknownKey),
            at(5, "server.listen", WrongType),
            at(7, "server.limits.max_uri", UnknownKey),
            at(8, "server.limits.max_headers", WrongType),
            at(10, "cache.chunk_size", WrongType),
            at(11, "cache.size", UnknownKey),
            at(13, "log.access_format", InvalidValue),
            at(15, "steer.pin", UnknownKey),
            at(18, "steer.nodes[0].colour", UnknownKey),
            at(21, "origin.mirror", UnknownKey),
            at(24, "origin.http[0].colour", UnknownKey),
            at(25, "origin.http[0].retries", WrongType),
            at(26, "origin.http[0].health_check.every", UnknownKey),
            at(29, "origin.http[1].servers[1].wieght", UnknownKey),
            at(30, "origin.http[1].cluster", UnknownKey),
        ],
        "{e}"
    );
    assert!(
        e.to_string().lines().all(|l| l.starts_with("relay.toml:")),
        "{e}"
    );

    // `load`, which `run` and check-config call, reports them all too.
    let loaded = load_err("schema", text);
    assert_eq!(each(&loaded), each(&e), "{loaded}");
}

#[test]
fn a_refused_key_is_reported_once_and_entries_keep_their_numbers() {
    use ErrorKind::{InvalidValue, MissingKey, UnknownKey, WrongType};
    // A required key of the wrong type is not also missing; an entry without its required
    // key is left out, and the entries after it keep their numbers.
    let text = "[[origin.http]]\nurl = 5\n\
                [[origin.http]]\nretries = 1\n\
                [[origin.http]]\nurl = \"http://127.0.0.1:1\"\ncolour = 1\n\
                [[origin.http]]\nurl = \"ftp://x\"\n\
                [[steer.nodes]]\naddress = \"10.0.0.1\"\n\
                [[steer.nodes]]\nname = \"b\"\nup = \"yes\"\n";
    let e = err(text);
    assert_eq!(
        each(&e),
        [
            at(2, "origin.http[0].url", WrongType),
            at(3, "origin.http[1].url", MissingKey),
            at(7, "origin.http[2].colour", UnknownKey),
            at(10, "steer.nodes[0].name", MissingKey),
            at(14, "steer.nodes[1].up", WrongType),
        ],
        "{e}"
    );
    // [origin]'s own checks are left out once the schema refused a key in it (ftp:// in
    // entry 3 would be named as entry 1 of what is left, and `origin.directory` as
    // missing); those of the other tables are reported.
    let text = "[origin]\ndirectory = 5\n\
                [[origin.http]]\nurl = \"ftp://x\"\n\
                [server]\nworkers = 100000\n\
                [cache]\nchunk_size = 3\n";
    let e = err(text);
    assert_eq!(
        each(&e),
        [
            at(2, "origin.directory", WrongType),
            at(6, "server.workers", InvalidValue),
            at(8, "cache.chunk_size", InvalidValue),
        ],
        "{e}"
    );
    // A table whose value is of the wrong type, and one with a wrong key beside a value only
    // the later checks would refuse: that one waits for the key to be fixed.
    let text = "server = 1\n[cache]\ncolour = 1\nchunk_size = 3\n[origin]\ndirectory = \"/d\"\n";
    assert_eq!(
        each(&err(text)),
        [
            at(1, "server", WrongType),
            at(3, "cache.colour", UnknownKey)
        ]
    );
    // A syntax error still stops at the first.
    let e = err("[server]\nbogus = 1\nworkers = = 2\n[cache\n");
    assert_eq!(each(&e), [at(3, "", ErrorKind::Syntax)], "{e}");
}

#[test]
fn thousands_of_bad_keys_are_reported_up_to_a_bound() {
    // (Each refused key costs another reading of the file: the bound keeps a file of
    // thousands from taking seconds.)
    let mut text = String::from("[server]\n");
    for i in 0..5000 {
        text.push_str(&format!("bogus{i} = 1\n"));
    }
    let e = err(&text);
    assert_eq!(e.each().len(), 64, "the first 64");
    assert_eq!(e.each()[0].key(), Some("server.bogus0"));
}

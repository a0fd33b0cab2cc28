//! Config tests of `Config::load` on files in a scratch directory: the origin directory,
//! the machine's memory, I/O errors, and the sections checked against each other.

use super::*;

/// What `Config::load` (as `run` and check-config call it) says of `text` written to a
/// `relay.toml` in a scratch directory named after `name`: the errors it expects.
pub(crate) fn load_err(name: &str, text: &str) -> ConfigError {
    let dir = Scratch::new(name);
    let file = dir.0.join("relay.toml");
    std::fs::write(&file, text).unwrap();
    match Config::load(&file) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("relay-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_resolves_and_checks_the_origin_directory() {
    let scratch = Scratch::new("load");
    let etc = scratch.0.join("config");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(scratch.0.join("var/demo")).unwrap();
    let file = etc.join("relay.toml");
    std::fs::write(&file, SHIPPED).unwrap();
    let config = Config::load(&file).unwrap();
    assert_eq!(
        config.origin.directory,
        Some(scratch.0.join("var/demo").canonicalize().unwrap())
    );

    // Missing directory: named by key and line.
    std::fs::write(
        &file,
        "[server]\nworkers = 1\n[origin]\ndirectory = \"nowhere\"\n",
    )
    .unwrap();
    let e = Config::load(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.key(), e.line()),
        (ErrorKind::InvalidValue, Some("origin.directory"), Some(4))
    );
    assert!(
        e.to_string().starts_with(&format!(
            "{}:4:13: origin.directory: cannot open ",
            file.display()
        )),
        "{e}"
    );

    // A file, not a directory.
    std::fs::write(&file, "[origin]\ndirectory = \"relay.toml\"\n").unwrap();
    let e = Config::load(&file).unwrap_err();
    assert_eq!((e.key(), e.line()), (Some("origin.directory"), Some(2)));
    assert!(e.to_string().ends_with("is not a directory"), "{e}");

    // Errors from the text carry the path as given.
    std::fs::write(
        &file,
        "[cache]\nchunk_size = 1000\n[origin]\ndirectory = \".\"\n",
    )
    .unwrap();
    let e = Config::load(&file).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:14: cache.chunk_size: ", file.display())),
        "{e}"
    );
}

#[test]
fn load_refuses_a_memory_tier_larger_than_the_machine() {
    let scratch = Scratch::new("memory");
    let file = scratch.0.join("relay.toml");
    std::fs::write(
        &file,
        "[cache]\nchunk_size = \"1 MiB\"\nmemory_bytes = \"1 TiB\"\n[origin]\ndirectory = \".\"\n",
    )
    .unwrap();
    // The text alone is fine: the machine is what it does not fit.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(Config::from_str(&text, &scratch.0, "relay.toml").is_ok());
    let total = crate::machine::mem_total().expect("/proc/meminfo");
    if total >= 2 << 40 {
        eprintln!("SKIPPED: load_refuses_a_memory_tier_larger_than_the_machine: 2 TiB or more");
        return;
    }
    let e = Config::load(&file).unwrap_err();
    assert_eq!(
        (e.kind(), e.key(), e.line(), e.column()),
        (
            ErrorKind::InvalidValue,
            Some("cache.memory_bytes"),
            Some(3),
            Some(16)
        )
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}:3:16: cache.memory_bytes: 1 TiB (an arena of 1152 GiB with its headroom) \
             is more than this machine's memory (MemTotal ",
            file.display()
        )),
        "{msg}"
    );
}

#[test]
fn load_reports_io_errors_with_the_file() {
    let scratch = Scratch::new("io");
    let file = scratch.0.join("absent.toml");
    let e = Config::load(&file).unwrap_err();
    assert!(matches!(e, ConfigError::Io { ref path, .. } if *path == file));
    assert_eq!((e.kind(), e.key(), e.line()), (ErrorKind::Io, None, None));
    assert!(
        e.to_string().starts_with(&format!("{}: ", file.display())),
        "{e}"
    );
}

#[test]
fn http_origins_parse_with_defaults_and_name_bad_keys() {
    let text = "[[origin.http]]\nurl = \"http://127.0.0.1:8000\"\n\n\
                [[origin.http]]\nurl = \"http://127.0.0.1:9000/\"\nhost = \"Video.Example\"\n\
                prefix = \"/v/\"\nretries = 0\n";
    let c = Config::from_str(text, Path::new("/"), "relay.toml").unwrap();
    assert_eq!(c.origin.directory, None);
    assert_eq!(c.origin.http.len(), 2);
    let a = &c.origin.http[0];
    assert_eq!(a.servers.len(), 1);
    assert_eq!(
        a.servers[0].address(),
        Some("127.0.0.1:8000".parse().unwrap())
    );
    assert_eq!(
        (a.prefix.as_str(), a.host.as_deref(), a.retries),
        ("/", None, 2)
    );
    let b = &c.origin.http[1];
    assert_eq!(b.authority, "127.0.0.1:9000");
    assert_eq!(
        (b.prefix.as_str(), b.host.as_deref(), b.retries),
        ("/v/", Some("video.example"), 0)
    );
    let e = Config::from_str(
        "[[origin.http]]\nurl = \"ftp://127.0.0.1:1\"\n",
        Path::new("/"),
        "relay.toml",
    )
    .unwrap_err();
    assert_eq!((e.key(), e.line()), (Some("origin.http[0].url"), Some(2)));
    let e = Config::from_str(
        "[[origin.http]]\nurl = \"http://127.0.0.1:1\"\nprefix = \"v\"\n",
        Path::new("/"),
        "relay.toml",
    )
    .unwrap_err();
    assert_eq!(
        (e.key(), e.line()),
        (Some("origin.http[0].prefix"), Some(3))
    );
    let e = Config::from_str("[origin]\n", Path::new("/"), "relay.toml").unwrap_err();
    assert_eq!(e.key(), Some("origin.directory"));
}

#[test]
fn an_admin_listener_on_the_servers_port_is_refused() {
    let base = "[origin]\ndirectory = \"/srv/objects\"\n[server]\nlisten = \"0.0.0.0:8080\"\n";
    let m = expect(
        &format!("{base}[admin]\nlisten = \"127.0.0.1:8080\"\n"),
        ErrorKind::InvalidValue,
        Some("admin.listen"),
        Some(6),
    );
    assert!(m.contains("server.listen (0.0.0.0:8080)"), "{m}");
    // The same address exactly, and an IPv6 wildcard over an IPv4 one.
    let same = "[origin]\ndirectory = \"/x\"\n[server]\nlisten = \"127.0.0.1:9\"\n\
                [admin]\nlisten = \"127.0.0.1:9\"\n";
    assert_eq!(err(same).key(), Some("admin.listen"));
    let v6 = "[origin]\ndirectory = \"/x\"\n[server]\nlisten = \"127.0.0.1:9\"\n\
              [admin]\nlisten = \"[::]:9\"\n";
    assert_eq!(err(v6).key(), Some("admin.listen"));
    // Another port, another address, port 0, or the admin listener off: fine.
    for ok in [
        "[server]\nlisten = \"127.0.0.1:9\"\n[admin]\nlisten = \"127.0.0.1:10\"\n",
        "[server]\nlisten = \"127.0.0.1:9\"\n[admin]\nlisten = \"127.0.0.2:9\"\n",
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[server]\nlisten = \"127.0.0.1:9\"\n[admin]\nenabled = false\nlisten = \"127.0.0.1:9\"\n",
        "[server]\nlisten = \"[::1]:9\"\n[admin]\nlisten = \"0.0.0.0:9\"\n",
    ] {
        assert!(parse(&format!("{MINIMAL}{ok}")).is_ok(), "{ok}");
    }
}

#[test]
fn the_access_log_is_read_and_its_errors_named() {
    let at = |text: &str| {
        Config::from_str(
            &format!("[origin]\ndirectory = \"/\"\n\n[log]\n{text}\n"),
            Path::new("/etc/relay"),
            "relay.toml",
        )
    };
    assert_eq!(at("").unwrap().log, crate::LogConfig::default());
    let l = at("access = \"log/access.log\"\naccess_format = \"json\"\naccess_queue = 100")
        .unwrap()
        .log;
    assert_eq!(
        l.access,
        Some(crate::AccessLogTarget::File(PathBuf::from(
            "/etc/relay/log/access.log"
        )))
    );
    assert_eq!(
        (l.access_format, l.access_queue),
        (crate::AccessLogFormat::Json, 100)
    );
    assert_eq!(
        at("access = \"-\"").unwrap().log.access,
        Some(crate::AccessLogTarget::Stdout)
    );
    for (line, key) in [
        ("access_format = \"combined\"", "log.access_format"),
        ("access_queue = 1", "log.access_queue"),
        ("access = \"/var/log/\"", "log.access"),
        ("acess = \"-\"", "acess"),
    ] {
        let e = at(line).unwrap_err();
        assert!(e.to_string().contains(key), "{line}: {e}");
    }
    // A file in a directory that does not exist: `load` (and check-config) says so.
    let e = load_err(
        "log",
        "[origin]\ndirectory = \"/\"\n\n[log]\naccess = \"no/such/dir/access.log\"\n",
    );
    assert!(
        e.to_string().contains("log.access") && e.to_string().contains("not a directory"),
        "{e}"
    );
}

#[test]
fn server_listen_takes_a_list_of_addresses() {
    let c = parse(
        "[origin]\ndirectory = \"/x\"\n[server]\n\
         listen = [\"127.0.0.1:8080\", \"[::1]:8080\", \"10.0.0.1:80\"]\n",
    )
    .unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        c.server.listens(),
        ["127.0.0.1:8080", "[::1]:8080", "10.0.0.1:80"]
            .map(|a| a.parse::<std::net::SocketAddr>().unwrap())
    );
    // One address alone is the same as before.
    let c = parse("[origin]\ndirectory = \"/x\"\n[server]\nlisten = \"[::1]:443\"\n").unwrap();
    assert!(c.server.listen_more.is_empty());
    // An empty list, a bad entry, two taking one port, too many, a number: each refused,
    // naming the key.
    let base = "[origin]\ndirectory = \"/x\"\n[server]\n";
    let refused = |list: &str, needle: &str| {
        let e = err(&format!("{base}listen = {list}\n"));
        assert!(
            e.key().is_some_and(|k| k.starts_with("server.listen")),
            "{list}: {e}"
        );
        assert!(e.to_string().contains(needle), "{list}: {e}");
    };
    refused("[]", "lists no address");
    refused("[\"127.0.0.1:80\", \"nowhere\"]", "nowhere");
    refused(
        "[\"0.0.0.0:80\", \"10.0.0.1:80\"]",
        "10.0.0.1:80 takes the same port as 0.0.0.0:80",
    );
    let many: Vec<String> = (0..17)
        .map(|i| format!("\"127.0.0.{}:80\"", i + 1))
        .collect();
    refused(
        &format!("[{}]", many.join(", ")),
        "lists 17 addresses, at most 16",
    );
    refused("[80]", "a string");
    // The admin listener may take none of their ports.
    let e = err(&format!(
        "{base}listen = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n[admin]\nlisten = \"127.0.0.1:8081\"\n"
    ));
    assert_eq!(e.key(), Some("admin.listen"), "{e}");
}

#[test]
fn disk_admission_defaults_to_second_hit_when_full() {
    let base = "[origin]\ndirectory = \"/x\"\n";
    assert_eq!(
        parse(base).unwrap().cache.disk_admission,
        DiskAdmission::SecondHitWhenFull
    );
    for (text, want) in [
        ("second-hit-when-full", DiskAdmission::SecondHitWhenFull),
        ("second-hit", DiskAdmission::SecondHit),
        ("always", DiskAdmission::Always),
    ] {
        let c = parse(&format!("{base}[cache]\ndisk_admission = \"{text}\"\n")).unwrap();
        assert_eq!(c.cache.disk_admission, want, "{text}");
    }
    let e = err(&format!("{base}[cache]\ndisk_admission = \"never\"\n"));
    assert_eq!(e.key(), Some("cache.disk_admission"));
    assert!(e.to_string().contains("second-hit-when-full"), "{e}");
}

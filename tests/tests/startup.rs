//! Start-up: a SIGTERM while a large memory tier is being registered stops the relay at
//! once, a memory tier larger than the machine is refused before anything starts, and so
//! is a second relay on an address a live relay holds.

use relay_tests::{TempDir, relay_bin};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write_config(dir: &TempDir, memory: &str) -> std::path::PathBuf {
    let origin = dir.path().join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    dir.write(
        "relay.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nmemory_bytes = \
             \"{memory}\"\n\n[origin]\ndirectory = \"{}\"\n\n[admin]\nenabled = false\n",
            origin.display()
        )
        .as_bytes(),
    )
}

/// `relay run` on `config`, its stderr piped.
fn spawn_run(config: &std::path::Path) -> std::process::Child {
    Command::new(relay_bin())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay")
}

/// Each ring pins the whole arena as it registers it: 1 to 5 s for 2 GiB and two workers
/// here, 7 to 12 s for 4 GiB, and a SIGTERM used to wait for all of it (root; without root
/// registration fails at once and there is nothing to wait for).
#[test]
fn sigterm_during_start_up_stops_the_relay_at_once() {
    let test = "sigterm_during_start_up_stops_the_relay_at_once";
    if !relay_tests::is_root() {
        eprintln!("SKIPPED: {test}: registering (pinning) the arena is slow only as root");
        return;
    }
    let dir = TempDir::new("startup");
    let config = write_config(&dir, "2 GiB");
    let mut child = spawn_run(&config);
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // The signal is sent once the relay catches SIGTERM: before that, the default action
    // would end it without a word (a cold start on a busy machine can take past 100 ms).
    let pid = child.id();
    let t = Instant::now();
    while !catches_sigterm(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the relay did not install its SIGTERM handler within 20 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Into the slow part: the rings registering the arena.
    std::thread::sleep(Duration::from_millis(100));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let t = Instant::now();
    let mut status = None;
    while t.elapsed() < Duration::from_secs(20) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the relay ignored SIGTERM during start-up for 20 s");
    };
    let took = t.elapsed();
    let lines = lines.join().unwrap();
    eprintln!("SIGTERM during start-up: exited in {took:?} ({status})");
    if lines.iter().any(|l| l.contains("relay: listening on")) {
        eprintln!("SKIPPED: {test}: start-up finished before the signal; nothing to interrupt");
        return;
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("during start-up: stopped before serving")),
        "{lines:?}"
    );
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    // What is left is the kernel finishing the pinning step under way and letting go of
    // the pages pinned so far: measured 20 ms to 0.5 s, at times 3.5 s on a busy machine.
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
}

/// Whether process `pid` catches SIGTERM (`SigCgt` in its `/proc` status, a hex mask whose
/// bit `n - 1` stands for signal `n`).
fn catches_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

#[test]
fn a_memory_tier_larger_than_the_machine_is_refused() {
    let dir = TempDir::new("startup");
    let config = write_config(&dir, "1 TiB");
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = Command::new(relay_bin())
            .args(args)
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run relay");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted 1 TiB: {err}");
        let at = format!("{}:6:16: cache.memory_bytes: 1 TiB ", config.display());
        assert!(
            err.contains(&at) && err.contains("MemTotal"),
            "{args:?}: {err}"
        );
    }
}

/// A second relay on an address a live relay holds is refused (SO_REUSEPORT would let it
/// join the first one's listeners and split their clients between two caches); once the
/// first has stopped, the address is free again.
#[test]
fn a_second_relay_on_a_held_address_refuses_to_start() {
    let origin = TempDir::new("startup");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let cfg = relay_tests::config(&listen, origin.path(), 65536, 1 << 24);
    let first = relay_tests::Relay::start(&cfg);
    let config = origin.write("second.toml", cfg.as_bytes());
    let mut second = spawn_run(&config);
    let t = Instant::now();
    let mut status = None;
    while t.elapsed() < Duration::from_secs(10) && status.is_none() {
        status = second.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    if status.is_none() {
        let _ = second.kill();
    }
    let out = second.wait_with_output().expect("second relay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_some(),
        "the second relay started beside the first: {err}"
    );
    assert!(!out.status.success());
    let pid = first.pid();
    assert!(
        err.contains(&format!(
            "another relay (pid {pid}) already listens on {listen}"
        )),
        "{err}"
    );
    first.stop();
    let again = relay_tests::Relay::start(&cfg);
    assert_eq!(again.addr.port(), port);
}

/// `relay --version` names the version, the git revision it was built from, and whether
/// the XDP programs are embedded (they are when built with `RELAY_EBPF_OBJECT`, as
/// `cargo xtask` builds it).
#[test]
fn the_version_names_its_revision_and_whether_xdp_is_embedded() {
    let out = Command::new(relay_bin())
        .arg("--version")
        .output()
        .expect("run relay");
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("relay --version: {said}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let revision = head.unwrap_or_else(|| "unknown".into());
    assert!(
        said.starts_with(&format!(
            "relay {} (git {revision}, ",
            env!("CARGO_PKG_VERSION")
        )),
        "{said}"
    );
    let embedded = std::env::var_os("RELAY_EBPF_OBJECT").is_some();
    assert_eq!(said.contains("XDP programs embedded"), embedded, "{said}");
}

/// `relay steer status` and `detach` take the pin root from `--config`'s steer.pin_root
/// (a flag still wins); without either, the default.
#[test]
fn steer_commands_take_the_pin_root_from_the_config() {
    let dir = TempDir::new("steer-pins");
    let pins = dir.path().join("pins");
    std::fs::create_dir_all(&pins).unwrap();
    let config = dir.write(
        "relay.toml",
        format!(
            "[origin]\ndirectory = \"/\"\n\n[steer]\npin_root = \"{}\"\n",
            pins.display()
        )
        .as_bytes(),
    );
    let status = |args: &[&str]| {
        let out = Command::new(relay_bin())
            .args(["steer", "status"])
            .args(args)
            .output()
            .expect("relay steer status");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let text = status(&["--config", config.to_str().unwrap()]);
    assert!(
        text.contains(&format!(
            "no interface attached (pin root {})",
            pins.display()
        )),
        "{text}"
    );
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let text = status(&[
        "--config",
        config.to_str().unwrap(),
        "--pin-root",
        other.to_str().unwrap(),
    ]);
    assert!(
        text.contains(&format!("(pin root {})", other.display())),
        "{text}"
    );
}

/// The log: a line per event with its time and level on a terminal; under systemd
/// (`JOURNAL_STREAM` set), the journal's priority and no time of its own.
#[test]
fn log_lines_carry_time_and_level_or_the_journal_s_priority() {
    let dir = TempDir::new("log-format");
    let config = write_config(&dir, "16 MiB");
    for journal in [false, true] {
        let mut cmd = Command::new(relay_bin());
        cmd.args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("JOURNAL_STREAM");
        if journal {
            cmd.env("JOURNAL_STREAM", "8:12345");
        }
        let mut child = cmd.spawn().expect("start relay");
        let stderr = child.stderr.take().expect("piped");
        let line = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take(50)
            .find(|l| l.contains("relay: listening on http://"));
        let _ = child.kill();
        let _ = child.wait();
        let line = line.expect("a listening line");
        if journal {
            assert!(line.starts_with("<6>relay: listening on http://"), "{line}");
        } else {
            // 2026-12-07T01:59:00.123Z  INFO relay: listening on http://...
            let (time, rest) = line.split_once(' ').expect("a time");
            assert!(
                time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                "{line}"
            );
            assert!(
                rest.trim_start().starts_with("INFO relay: listening on"),
                "{line}"
            );
        }
    }
}

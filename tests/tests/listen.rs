//! Several listen addresses (`server.listen = [...]`): every worker accepts on each, curl
//! gets the same object on all of them, each address is locked against a second relay,
//! and a restart with `--take-over` takes every address's sockets.

use relay_tests::{Relay, TempDir, curl};
use std::time::Duration;

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// The config, and the URLs of `/a.txt` on each of its addresses.
fn config(www: &TempDir, disk: &TempDir) -> (String, Vec<String>) {
    // (127.0.0.2 is loopback too; [::1] where this machine has IPv6.)
    let mut addrs = vec![
        format!("127.0.0.1:{}", free_port("127.0.0.1")),
        format!("127.0.0.2:{}", free_port("127.0.0.2")),
    ];
    if ipv6_loopback() {
        addrs.push(format!("[::1]:{}", free_port("::1")));
    } else {
        eprintln!("no IPv6 loopback here: two IPv4 addresses only");
    }
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let config = format!(
        "[server]\nlisten = [{}]\nworkers = 2\n\n[cache]\ndisk_dir = \"{}\"\n\
         disk_bytes = \"16 MiB\"\n\n[origin]\ndirectory = \"{}\"\n\n[admin]\nenabled = false\n",
        list.join(", "),
        disk.path().display(),
        www.path().display()
    );
    let urls = addrs.iter().map(|a| format!("http://{a}/a.txt")).collect();
    (config, urls)
}

fn every_address_answers(urls: &[String]) {
    for url in urls {
        // Several requests each, so both workers' sockets are likely used.
        for _ in 0..4 {
            let (code, body, err) = curl(&[url.as_str()]);
            assert_eq!(code, 0, "{url}: {err}");
            assert_eq!(body, b"hello\n", "{url}");
        }
    }
}

#[test]
fn a_relay_serves_on_every_listen_address_and_hands_them_all_over() {
    let www = TempDir::new("listen-www");
    www.write("a.txt", b"hello\n");
    let disk = TempDir::new("listen-disk");
    let (config, urls) = config(&www, &disk);
    let old = Relay::start(&config);
    for (i, url) in urls.iter().enumerate() {
        let addr = url.trim_start_matches("http://").trim_end_matches("/a.txt");
        assert!(
            old.wait_log(
                &format!("listening on http://{addr} (2 workers)"),
                Duration::from_secs(2)
            ),
            "address {i} ({addr}) not said"
        );
    }
    every_address_answers(&urls);

    // A second relay without --take-over is refused: the addresses are locked.
    let dir = TempDir::new("listen-second");
    let path = dir.write("relay.toml", config.as_bytes());
    let out = std::process::Command::new(relay_tests::relay_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run relay");
    assert!(
        !out.status.success(),
        "a second relay started on the same addresses"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already"), "{err}");

    // Taken over: 2 workers × every address.
    let new = Relay::take_over(&config);
    let sockets = 2 * urls.len();
    assert!(
        new.wait_log(
            &format!("took over {sockets} listening sockets"),
            Duration::from_secs(2)
        ),
        "the new relay did not take {sockets} sockets"
    );
    assert!(new.wait_log("listening on", Duration::from_secs(15)));
    every_address_answers(&urls);
    drop(old);
}

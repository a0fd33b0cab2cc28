//! Relays on loopback forming a cluster through `[cluster]`: real processes, real UDP
//! gossip, the key from a file. They find each other through one seed, a relay killed
//! with SIGKILL is dropped by the others within the detection bound (`docs/CLUSTER.md`:
//! 10 s for three relays on LAN timings), it comes back by itself when started again,
//! and packets that are not under the key (a relay with another key, forged packets) never
//! make a member and are counted.

use relay_tests::{Relay, TempDir};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Writes a key file (mode 600) holding `byte` 32 times, in hex.
fn key_file(dir: &TempDir, name: &str, byte: u8) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.write(name, format!("{byte:02x}").repeat(32).as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn relay(origin: &TempDir, key: &std::path::Path, seeds: &[SocketAddr]) -> Relay {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[origin]\ndirectory = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nlisten = \"127.0.0.1:0\"\n\
         seeds = [{}]\nkey_file = \"{}\"\nsize = 3\n",
        origin.path().display(),
        seeds.join(", "),
        key.display()
    ))
}

/// The gossip address the relay printed.
fn gossip_addr(r: &Relay) -> SocketAddr {
    r.printed_addr("relay: cluster on udp://")
}

fn members(r: &Relay) -> f64 {
    r.metric("relay_cluster_members")
        .expect("the cluster's metrics")
}

/// Waits (at most `within`) until every relay in `relays` counts `n` members; how long.
fn until_members(relays: &[&Relay], n: f64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if relays.iter().all(|r| members(r) == n) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "members {:?}, wanted {n} within {within:?}",
            relays.iter().map(|r| members(r)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn packets(r: &Relay, result: &str) -> f64 {
    let text = r.metrics();
    let line = format!("relay_cluster_packets_total{{result=\"{result}\"}}");
    relay_tests::metric_in(&text, &line).unwrap_or(0.0)
}

#[test]
fn relays_join_through_a_seed_drop_a_dead_one_and_take_it_back() {
    let dir = TempDir::new("cluster");
    let origin = TempDir::new("cluster-origin");
    let key = key_file(&dir, "cluster.key", 0x5a);
    let a = relay(&origin, &key, &[]);
    let seed = gossip_addr(&a);
    let b = relay(&origin, &key, &[seed]);
    let c = relay(&origin, &key, &[seed]);
    let joined = until_members(&[&a, &b, &c], 2.0, Duration::from_secs(10));
    eprintln!("3 relays joined in {joined:?}");
    // What each says of itself reaches the others: its site, the HTTP address it serves.
    let end = Instant::now() + Duration::from_secs(5);
    let want: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| {
            format!(
                "site=\"default\",http=\"{}\",weight=\"100\",load=\"",
                r.addr
            )
        })
        .collect();
    while !want.iter().all(|w| a.metrics().contains(w.as_str())) {
        assert!(Instant::now() < end, "records on a:\n{}", a.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL: no leave message; the others must detect it.
    c.signal(libc::SIGKILL);
    drop(c);
    let gone = until_members(&[&a, &b], 1.0, Duration::from_secs(15));
    eprintln!("a killed relay was dropped by both others in {gone:?} (bound 10 s)");
    assert!(gone <= Duration::from_secs(10), "{gone:?}");
    // Started again (a new life, a new port): a member again without anyone's help.
    let c = relay(&origin, &key, &[seed]);
    let back = until_members(&[&a, &b, &c], 2.0, Duration::from_secs(10));
    eprintln!("started again, a member in {back:?}");
    // A clean stop (SIGTERM) leaves: the others know at once.
    drop(c);
    let left = until_members(&[&a, &b], 1.0, Duration::from_secs(5));
    eprintln!("a stopped relay left in {left:?}");
    assert!(left < Duration::from_secs(2), "{left:?}");
    // [cluster] is read once at start: a reload says a change needs a restart.
    let text = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(&a.config, text.replace("size = 3", "size = 5")).unwrap();
    a.signal(libc::SIGHUP);
    assert!(a.wait_log(
        "changed keys that need a restart (kept as they were): cluster",
        Duration::from_secs(5)
    ));
}

#[test]
fn packets_not_under_the_key_never_make_a_member_and_are_counted() {
    let dir = TempDir::new("cluster-forged");
    let origin = TempDir::new("cluster-forged-origin");
    let a = relay(&origin, &key_file(&dir, "a.key", 0x11), &[]);
    let seed = gossip_addr(&a);
    // A relay under another key announces itself to `a`, again and again.
    let intruder = relay(&origin, &key_file(&dir, "b.key", 0x22), &[seed]);
    // And forged packets: garbage, and a sealed-looking packet with a wrong MAC.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"hello", seed).unwrap();
    let mut fake = vec![1u8; 200];
    // (The seal's version, then an IPv4 sender.)
    fake[0] = 2;
    fake[1] = 4;
    s.send_to(&fake, seed).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(members(&a), 0.0);
    assert_eq!(members(&intruder), 0.0);
    assert_eq!(packets(&a, "accepted"), 0.0);
    assert!(packets(&a, "bad_mac") >= 2.0, "{}", a.metrics());
    assert_eq!(packets(&a, "malformed"), 1.0);
}

#[test]
fn a_key_file_open_to_others_is_refused_by_check_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cluster-perm");
    let key = key_file(&dir, "open.key", 0x33);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.write(
        "relay.toml",
        format!(
            "[origin]\ndirectory = \"{}\"\n[cluster]\nlisten = \"127.0.0.1:0\"\nkey_file = \"{}\"\n",
            dir.path().display(),
            key.display()
        )
        .as_bytes(),
    );
    let out = std::process::Command::new(relay_tests::relay_bin())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("cluster.key_file") && text.contains("chmod 600"),
        "{text}"
    );
}

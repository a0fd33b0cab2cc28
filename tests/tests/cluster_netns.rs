//! Relays in network namespaces of their own, joined through a bridge, forming a cluster:
//! the failure a real edge server has, a link going down, rather than a process dying. A
//! relay whose link goes down is dropped by the others within the detection bound
//! (`docs/CLUSTER.md`: 10 s for three relays on LAN timings), and when its link comes back
//! it is a member again by itself.
//!
//! Root only; otherwise prints `SKIPPED: ...`. Topology: a "switch" namespace holding a
//! bridge, and per relay a namespace with one veth into it, `10.201.0.<i + 1>/24`; nothing
//! is added to the host's namespace. Every namespace is removed by its guard.

use relay_tests::netns::{Bridge, Namespace, in_netns, is_root, run};
use relay_tests::{Relay, TempDir};
use std::time::{Duration, Instant};

const RELAYS: usize = 3;

fn addr(i: usize) -> String {
    format!("10.201.0.{}", i + 1)
}

/// The switch (a bridge in its own namespace) and a namespace per relay, plugged into it.
fn topology() -> std::io::Result<(Bridge, Vec<Namespace>)> {
    let sw = Bridge::new("sw")?;
    let mut relays = Vec::new();
    for i in 0..RELAYS {
        let ns = Namespace::new(&format!("cl{i}"))?;
        sw.plug(&ns, &format!("p{i}"), &format!("{}/24", addr(i)), None)?;
        relays.push(ns);
    }
    Ok((sw, relays))
}

fn members(ns: &Namespace, r: &Relay) -> f64 {
    in_netns(ns.name(), || r.metric("relay_cluster_members"))
        .expect("enter the namespace")
        .expect("the cluster's metrics")
}

/// Waits (at most `within`) until each of `which` counts `n` members; how long it took.
fn until(which: &[(&Namespace, &Relay)], n: f64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now: Vec<f64> = which.iter().map(|(ns, r)| members(ns, r)).collect();
        if now.iter().all(|&m| m == n) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "members {now:?}, wanted {n} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_relay_whose_link_goes_down_is_dropped_and_rejoins_when_it_comes_back() {
    let test = "a_relay_whose_link_goes_down_is_dropped_and_rejoins_when_it_comes_back";
    if !is_root() {
        eprintln!("SKIPPED: {test}: needs root (network namespaces)");
        return;
    }
    let (_sw, nss) = topology().expect("the namespaces and the bridge");
    let dir = TempDir::new("cluster-ns");
    let key = {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.write("cluster.key", "c3".repeat(32).as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let relays: Vec<Relay> = (0..RELAYS)
        .map(|i| {
            let cfg = format!(
                "[server]\nlisten = \"{a}:8080\"\nworkers = 1\n\n[origin]\ndirectory = \"{d}\"\n\n\
                 [admin]\nlisten = \"127.0.0.1:9090\"\n\n[cluster]\nlisten = \"{a}:7946\"\n\
                 seeds = [\"{seed}:7946\"]\nkey_file = \"{k}\"\nsize = 3\n",
                a = addr(i),
                d = dir.path().display(),
                seed = addr(0),
                k = key.display()
            );
            Relay::start_with(&cfg, &["ip", "netns", "exec", nss[i].name()])
        })
        .collect();
    let all: Vec<(&Namespace, &Relay)> = nss.iter().zip(&relays).collect();
    let joined = until(&all, 2.0, Duration::from_secs(15));
    // The third relay's link goes down: it neither answers nor hears.
    run(nss[2].ip().args(["link", "set", "eth0", "down"])).expect("link down");
    let gone = until(&all[..2], 1.0, Duration::from_secs(20));
    let alone = until(&all[2..], 0.0, Duration::from_secs(20));
    // The link comes back: it rejoins by itself (declared down, it renews its identity).
    run(nss[2].ip().args(["link", "set", "eth0", "up"])).expect("link up");
    let back = until(&all, 2.0, Duration::from_secs(20));
    eprintln!(
        "{RELAYS} relays in namespaces: joined in {joined:?}; link down: dropped by the others \
         in {gone:?} (bound 10 s), alone in {alone:?}; link up: a member again in {back:?}"
    );
    assert!(gone <= Duration::from_secs(10), "{gone:?}");
}

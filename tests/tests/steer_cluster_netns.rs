//! Steering from the cluster, end to end in network namespaces (the topology of
//! `relay_tests::steer_site`): the entry's `relay_steer` has no `[[steer.nodes]]`; its daemon
//! is a member of the site's cluster (weight 0: it steers, it serves no share) with
//! `steer.cluster_nodes`, so the tables hold the site's live relays as gossip knows them.
//!
//! Checks: the three relays that join get flows, evenly; `ip link set eth0 down` on one of
//! them: the entry marks it down (its checks connect to the relay's peer listener) and then
//! drops it from the tables (gossip declares it down), each within its stated bound, and new
//! flows avoid it; a fourth relay started later joins the tables and gets its share; the
//! link up again: the relay rejoins by itself and gets flows again. No config edit, no
//! reload, no `relay steer sync` anywhere.
//! Root only; otherwise prints `SKIPPED: ...`. Every namespace is removed by its guard.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use relay_tests::netns::{BpfFs, Namespace, is_root, run};
use relay_tests::steer_site::{
    ENCAP_SOURCE, ENTRY, PORT, Site, VIP, attach_decap, attach_entry, share, spread, wait_nodes,
};
use relay_tests::{Relay, TempDir, relay_bin};

const RELAYS: [(&str, &str, &str); 4] = [
    ("r1", "10.200.250.11", "02:00:00:00:fa:11"),
    ("r2", "10.200.250.12", "02:00:00:00:fa:12"),
    ("r3", "10.200.250.13", "02:00:00:00:fa:13"),
    ("r4", "10.200.250.14", "02:00:00:00:fa:14"),
];
/// New flows per phase: each asserted share sits more than 5 standard deviations inside
/// its tolerance.
const FLOWS: usize = 600;
/// The entry's checks: every 100 ms, 200 ms each, down after 2 failures: a relay whose link
/// goes down is marked down within about 0.5 s; 3 s is the bound asserted.
const MARK_DOWN_BOUND: Duration = Duration::from_secs(3);
/// Gossip (LAN settings for 5 members) declares a silent member down within 10 s
/// (`docs/CLUSTER.md`); the keeper sees it at its next check.
const DROP_BOUND: Duration = Duration::from_secs(12);

/// The entry's config: its daemon joins the cluster (weight 0) and keeps `eth0`'s tables
/// from the site's relays.
fn entry_config(origin: &Path, key: &Path, pins: &Path) -> String {
    format!(
        "[server]\nlisten = \"{ENTRY}:{PORT}\"\nworkers = 1\n\n[cache]\nchunk_size = 65536\n\
         memory_bytes = 1048576\n\n[origin]\ndirectory = \"{}\"\n\n\
         [cluster]\nlisten = \"{ENTRY}:7946\"\nkey_file = \"{}\"\nsite = \"edge\"\nweight = 0\n\
         size = 5\n\n\
         [steer]\niface = \"eth0\"\npin_root = \"{}\"\nring_size = 65537\n\
         encap_source_v4 = \"{ENCAP_SOURCE}\"\ncluster_nodes = true\n\n\
         [steer.health]\ninterval_ms = 100\ntimeout_ms = 200\ndown_after = 2\nup_after = 2\n\n\
         [[steer.services]]\naddress = \"{VIP}\"\nport = {PORT}\n",
        origin.display(),
        key.display(),
        pins.display()
    )
}

/// A relay's config: the service on the VIP, a member of the site through the entry, its
/// peer listener (what the entry's checks connect to) on its own address.
fn relay_config(addr: &str, origin: &Path, key: &Path) -> String {
    format!(
        "[server]\nlisten = \"{VIP}:{PORT}\"\nworkers = 1\n\n[cache]\nchunk_size = 65536\n\
         memory_bytes = 1048576\n\n[origin]\ndirectory = \"{}\"\n\n\
         [cluster]\nlisten = \"{addr}:7946\"\nseeds = [\"{ENTRY}:7946\"]\nkey_file = \"{}\"\n\
         site = \"edge\"\nsize = 5\npeer_listen = \"{addr}:8081\"\n",
        origin.display(),
        key.display()
    )
}

/// Starts relay `i` of `RELAYS` in its namespace, its decapsulating program attached first.
fn start_relay(
    site: &Site,
    i: usize,
    bpffs: &BpfFs,
    configs: &TempDir,
    key: &Path,
    origins: &mut Vec<TempDir>,
) -> Relay {
    let (name, addr, _) = RELAYS[i];
    let ns: &Namespace = &site.relays[i];
    let dir = TempDir::new(&format!("steer-cl-{name}"));
    dir.write("who", name.as_bytes());
    attach_decap(ns, name, dir.path(), configs, &bpffs.path().join(name));
    let relay = Relay::start_with(
        &relay_config(addr, dir.path(), key),
        &["ip", "netns", "exec", ns.name()],
    );
    origins.push(dir);
    relay
}

/// Whether the entry's `nodes` words show `addr` up.
fn is_up(nodes: &[&str], addr: &str) -> bool {
    nodes.contains(&format!("{addr}=up").as_str())
}

/// The shares of `served` among `names`, for messages.
fn shares(served: &HashMap<String, usize>, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n} {:.1}%", share(served, n, FLOWS) * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `FLOWS` new flows: none failed, none to a relay outside `expect`, each of those within
/// 12 points of an even share.
fn assert_even(site: &Site, expect: &[&str], phase: &str) {
    let (served, failed) = spread(site, FLOWS);
    let all: Vec<&str> = RELAYS.iter().map(|r| r.0).collect();
    let report = shares(&served, &all);
    eprintln!("steer cluster {phase}: {FLOWS} new flows, {failed} failed: {report}");
    assert_eq!(failed, 0, "{phase}: {report}");
    for name in &all {
        let got = share(&served, name, FLOWS);
        match expect.contains(name) {
            true => assert!(
                (got - 1.0 / expect.len() as f64).abs() < 0.12,
                "{phase}: {name}: {report}"
            ),
            false => assert_eq!(got, 0.0, "{phase}: a flow reached {name}: {report}"),
        }
    }
}

#[test]
fn flows_follow_the_sites_membership() {
    let test = "flows_follow_the_sites_membership";
    if !is_root() {
        eprintln!("SKIPPED: {test}: needs root (namespaces, XDP)");
        return;
    }
    let relay = relay_bin();
    assert!(relay.exists(), "relay binary {} missing", relay.display());
    let bpffs = BpfFs::new("steer-cl-bpf").expect("bpffs for the pins");
    let site = Site::new(&RELAYS).expect("namespaces, bridge and veths");
    let configs = TempDir::new("steer-cl-cfg");
    let key = {
        use std::os::unix::fs::PermissionsExt;
        let p = configs.write("cluster.key", "5e".repeat(32).as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    };
    let entry_origin = TempDir::new("steer-cl-entry");
    let entry_pins = bpffs.path().join("entry");
    let entry_toml = configs.write(
        "entry.toml",
        entry_config(entry_origin.path(), &key, &entry_pins).as_bytes(),
    );
    if !attach_entry(&site, &entry_toml, &entry_pins) {
        eprintln!("SKIPPED: {test}: {} has no XDP object", relay.display());
        return;
    }
    let entry = Relay::start_with(
        &entry_config(entry_origin.path(), &key, &entry_pins),
        &["ip", "netns", "exec", site.entry.name()],
    );

    // 1. Three relays start and join: the entry's tables take them in by themselves.
    let mut origins = Vec::new();
    let started = Instant::now();
    let mut daemons: Vec<Relay> = (0..3)
        .map(|i| start_relay(&site, i, &bpffs, &configs, &key, &mut origins))
        .collect();
    let joined = wait_nodes(&site, &entry_pins, Duration::from_secs(20), |nodes| {
        RELAYS[..3].iter().all(|r| is_up(nodes, r.1))
    })
    .expect("the three relays in the entry's tables within 20 s");
    eprintln!(
        "steer cluster join: three relays in the tables {joined:.1?} after the wait began \
         ({:.1?} after the first started)",
        started.elapsed()
    );
    assert_even(&site, &["r1", "r2", "r3"], "three relays");

    // 2. r3's link goes down: marked down by the checks, then dropped with its membership.
    let r3 = RELAYS[2].1;
    let down_at = Instant::now();
    run(site.relays[2].ip().args(["link", "set", "eth0", "down"])).expect("link down");
    let marked = wait_nodes(&site, &entry_pins, MARK_DOWN_BOUND, |nodes| {
        !is_up(nodes, r3)
    });
    let dropped = wait_nodes(&site, &entry_pins, DROP_BOUND, |nodes| {
        !nodes.iter().any(|w| w.starts_with(&format!("{r3}=")))
    });
    let dropped = dropped.map(|_| down_at.elapsed());
    eprintln!(
        "steer cluster link down: r3 out of the flows {marked:.1?} after `ip link set eth0 \
         down` (bound {MARK_DOWN_BOUND:?}), out of the tables (gossip) {dropped:.1?} after \
         (bound {DROP_BOUND:?})"
    );
    assert!(
        marked.is_some(),
        "r3 still up {MARK_DOWN_BOUND:?} after its link went down"
    );
    assert!(
        dropped.is_some(),
        "r3 still in the tables {DROP_BOUND:?} after its link went down"
    );
    assert_even(&site, &["r1", "r2"], "r3's link down");

    // 3. r4 starts: it joins the tables and gets its share.
    let joining = Instant::now();
    daemons.push(start_relay(&site, 3, &bpffs, &configs, &key, &mut origins));
    let r4 = RELAYS[3].1;
    let joined = wait_nodes(&site, &entry_pins, Duration::from_secs(20), |nodes| {
        is_up(nodes, r4)
    })
    .map(|_| joining.elapsed());
    eprintln!("steer cluster join: r4 in the tables {joined:.1?} after it was started");
    assert!(joined.is_some(), "r4 not in the tables within 20 s");
    assert_even(&site, &["r1", "r2", "r4"], "r4 joined");

    // 4. r3's link comes back: it rejoins by itself and gets flows again.
    let back_at = Instant::now();
    run(site.relays[2].ip().args(["link", "set", "eth0", "up"])).expect("link up");
    let back = wait_nodes(&site, &entry_pins, Duration::from_secs(20), |nodes| {
        is_up(nodes, r3)
    })
    .map(|_| back_at.elapsed());
    eprintln!(
        "steer cluster link up: r3 back in the tables {back:.1?} after `ip link set eth0 up`"
    );
    assert!(back.is_some(), "r3 not back within 20 s of its link up");
    assert_even(&site, &["r1", "r2", "r3", "r4"], "r3 back");

    let log = entry.log.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(
        log.contains("joins the tables") && log.contains("leaves the tables"),
        "the entry's daemon logged no membership changes:\n{log}"
    );
    drop(entry);
    drop(daemons);
    drop(origins);
    drop(site);
}

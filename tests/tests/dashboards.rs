//! The Grafana dashboard and the Prometheus alert rules shipped in `deploy/` use only
//! metrics relay exports: every `relay_` name in them is on a running relay's `/metrics`
//! (an HTTP origin, a disk tier, the access log on), or, for those only steering or a
//! cluster brings, rendered by the code that exports them.

use relay_tests::python::PythonOrigin;
use relay_tests::{Relay, TempDir, fetch};
use std::collections::BTreeSet;

const DASHBOARD: &str = include_str!("../../deploy/grafana/relay-dashboard.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/relay-alerts.yml");
const XDP_SOURCE: &str = include_str!("../../relay/steer/src/status.rs");
const CLUSTER_SOURCE: &str = include_str!("../../relay/cluster/src/agent.rs");

/// Every `relay_...` metric name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("relay_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        // (Not `relay_` alone, in prose.)
        if !name.ends_with('_') {
            out.insert(name);
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_exists() {
    let _: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let used: BTreeSet<String> = names(DASHBOARD).union(&names(ALERTS)).cloned().collect();
    assert!(used.len() >= 15, "{used:?}");

    let files = TempDir::new("dash-www");
    files.write("a.txt", b"hello\n");
    let origin = PythonOrigin::start(files.path());
    let disk = TempDir::new("dash-disk");
    let logs = TempDir::new("dash-log");
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[cache]\ndisk_dir = \"{}\"\n\
         disk_bytes = \"64 MiB\"\n\n[[origin.http]]\nurl = \"http://127.0.0.1:{}\"\n\n\
         [log]\naccess = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        disk.path().display(),
        origin.port,
        logs.path().join("access.log").display()
    ));
    assert_eq!(fetch(&relay.url("/a.txt"), &[]).status, 200);
    // An answer relay makes up (400), so its error counters have a series.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(relay.addr).unwrap();
        s.write_all(b"GARBAGE\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(answer.starts_with(b"HTTP/1.1 400"));
    }
    let scraped = relay.metrics();
    let exported: BTreeSet<String> = scraped
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let mut missing = Vec::new();
    for name in &used {
        let found = if name.starts_with("relay_xdp_") {
            XDP_SOURCE.contains(name.as_str())
        } else if name.starts_with("relay_cluster_") {
            CLUSTER_SOURCE.contains(name.as_str())
        } else {
            exported.contains(name)
        };
        if !found {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported: {missing:?}\n{scraped}"
    );
    eprintln!(
        "{} metrics used by the dashboard and alerts, all exported",
        used.len()
    );
}

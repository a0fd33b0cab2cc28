//! `attach` / `status` / `detach` against a real interface: the host end of a veth pair into a
//! namespace this test creates (10.200.0.0/16), with pins under
//! `/sys/fs/bpf/relay-test-<pid>-<n>`. Needs root and the embedded object; otherwise each test
//! prints `SKIPPED: ...` and returns. The namespace, links and pins are removed by guards,
//! also when an assertion fails.

#[allow(
    dead_code,
    reason = "shared with relay-tests; not every helper is used here"
)]
#[path = "../../../tests/src/netns.rs"]
mod netns;

use std::{
    net::UdpSocket,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use netns::NetNs;
use relay_common::{Counter, Verdict};
use relay_steer::{Attachment, IfaceStatus, Mode, SteerError, attach, detach, status};

fn ready_or_skip(test: &str) -> bool {
    if !netns::is_root() {
        eprintln!("SKIPPED: {test}: needs root (namespaces, XDP, bpffs)");
        return false;
    }
    if let Err(error) = relay_steer::object() {
        eprintln!("SKIPPED: {test}: {error}");
        return false;
    }
    true
}

/// A pin root under /sys/fs/bpf, removed with everything in it on drop.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/relay-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        // Removing the link pins releases any link a failed test left attached.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `ip link show` says is attached to `iface`: e.g. `Some("xdpgeneric")`, `None`.
fn xdp_shown(iface: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    ["xdpgeneric", "xdpdrv", "xdpoffload", "xdp"]
        .into_iter()
        .find(|mode| text.split_whitespace().any(|word| word == *mode))
        .map(str::to_owned)
}

fn only_status(root: &Path) -> IfaceStatus {
    let mut statuses = status(root).expect("status");
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    statuses.remove(0)
}

fn ifindex(iface: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .expect("ifindex")
        .trim()
        .parse()
        .expect("ifindex is a number")
}

#[test]
fn attach_status_detach_on_a_veth() {
    if !ready_or_skip("attach_status_detach_on_a_veth") {
        return;
    }
    let ns = NetNs::new().expect("namespace and veth pair");
    let root = PinRoot::new();
    let iface = ns.host_iface();

    assert_eq!(status(&root.0).expect("status of a missing root").len(), 0);
    attach(iface, Mode::Skb, &root.0).expect("attach");
    // The loader has exited attach(): only the pins hold the program on the interface now.
    assert_eq!(xdp_shown(iface).as_deref(), Some("xdpgeneric"));
    assert!(root.0.join(iface).join("link").exists());
    assert!(root.0.join(iface).join(relay_common::maps::STATS).exists());

    match attach(iface, Mode::Skb, &root.0) {
        Err(SteerError::AlreadyAttached(name)) => assert_eq!(name, iface),
        other => panic!("second attach: {other:?}"),
    }

    let first = only_status(&root.0);
    assert_eq!(first.iface, iface);
    match first.attachment {
        Attachment::Attached { ifindex: index, .. } => assert_eq!(index, ifindex(iface)),
        other => panic!("attachment {other:?}"),
    }

    // Traffic into the host end: UDP to the namespace end makes it answer an ARP request and
    // send ICMP port-unreachables back through the veth.
    let socket = UdpSocket::bind((ns.host_addr(), 0)).expect("bind UDP");
    let started = Instant::now();
    let mut pass = Counter::default();
    for _ in 0..100 {
        let _ = socket.send_to(b"relay steer test", (ns.ns_addr(), 9));
        std::thread::sleep(Duration::from_millis(20));
        pass = only_status(&root.0).counter(Verdict::Pass);
        if pass.packets >= 2 || started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(pass.packets >= 2, "pass counter after traffic: {pass:?}");
    assert!(
        pass.bytes >= pass.packets * 42,
        "every frame is at least 42 bytes: {pass:?}"
    );
    let counted = only_status(&root.0);
    for verdict in [
        Verdict::Aborted,
        Verdict::Drop,
        Verdict::Tx,
        Verdict::Redirect,
    ] {
        assert_eq!(
            counted.counter(verdict),
            Counter::default(),
            "{}",
            verdict.name()
        );
    }
    let text = counted.to_string();
    assert!(
        text.starts_with(&format!("{iface}: attached ifindex=")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.trim_start().starts_with("pass")
                && line.contains(&format!(
                    "packets={}",
                    counted.counter(Verdict::Pass).packets
                ))),
        "{text}"
    );

    detach(iface, &root.0).expect("detach");
    assert_eq!(
        xdp_shown(iface),
        None,
        "the program must leave the interface"
    );
    assert!(!root.0.join(iface).exists());
    assert_eq!(status(&root.0).expect("status").len(), 0);
    match detach(iface, &root.0) {
        Err(SteerError::NotAttached(name)) => assert_eq!(name, iface),
        other => panic!("second detach: {other:?}"),
    }

    // And again, natively this time (veth has a native XDP path).
    attach(iface, Mode::Native, &root.0).expect("attach native");
    assert_eq!(xdp_shown(iface).as_deref(), Some("xdp"));
    detach(iface, &root.0).expect("detach native");
    assert_eq!(xdp_shown(iface), None);
}

#[test]
fn bad_requests_are_clear_errors() {
    if !ready_or_skip("bad_requests_are_clear_errors") {
        return;
    }
    let root = PinRoot::new();
    let missing = format!("rx{}nope", std::process::id());
    match attach(&missing, Mode::Default, &root.0) {
        Err(SteerError::NoSuchInterface(name)) => assert_eq!(name, missing),
        other => panic!("attach to a missing interface: {other:?}"),
    }
    assert!(
        !root.0.join(&missing).exists(),
        "a failed attach leaves nothing pinned"
    );
    assert!(matches!(
        detach(&missing, &root.0),
        Err(SteerError::NotAttached(_))
    ));
    assert!(matches!(
        attach("../../etc", Mode::Default, &root.0),
        Err(SteerError::InvalidInterface { .. })
    ));
    // A pin root off bpffs is refused rather than silently unpinnable.
    let ns = NetNs::new().expect("namespace and veth pair");
    match attach(ns.host_iface(), Mode::Skb, Path::new("/tmp")) {
        Err(SteerError::BpfFsUnavailable { .. }) => {}
        other => panic!("attach with a pin root on tmpfs: {other:?}"),
    }
    assert_eq!(xdp_shown(ns.host_iface()), None);
}

#[test]
fn pins_of_a_deleted_interface_are_reported_and_cleared() {
    if !ready_or_skip("pins_of_a_deleted_interface_are_reported_and_cleared") {
        return;
    }
    let root = PinRoot::new();
    let ns = NetNs::new().expect("namespace and veth pair");
    let iface = ns.host_iface().to_owned();
    attach(&iface, Mode::Skb, &root.0).expect("attach");
    drop(ns); // deletes the veth pair under the attached program

    let gone = only_status(&root.0);
    assert!(
        matches!(gone.attachment, Attachment::Defunct { .. }),
        "{gone:?}"
    );
    assert!(
        gone.to_string()
            .starts_with(&format!("{iface}: detached (interface gone)"))
    );
    detach(&iface, &root.0).expect("detach clears the stale pins");
    assert_eq!(status(&root.0).expect("status").len(), 0);
}

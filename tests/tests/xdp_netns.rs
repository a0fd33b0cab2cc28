//! End to end through XDP: the relay daemon serves from inside a network namespace, the XDP
//! program is attached (generic mode) to the namespace's veth end with `relay steer attach`,
//! curl fetches an object across the veth from the host side, and `relay steer status` shows
//! the packets it passed. Root only; otherwise prints `SKIPPED: ...` and returns.
//!
//! The pin root is a bpffs mounted under the temp dir: `ip netns exec` gives its command a
//! fresh `/sys`, so `/sys/fs/bpf` there is not the host's (and pins made on a bpffs mounted
//! inside it would vanish with the command).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use relay_tests::netns::{BpfFs, NetNs, is_root};
use relay_tests::{TempDir, curl, pattern, relay_bin};

const PORT: u16 = 8080;

#[test]
fn curl_through_xdp_on_a_veth_in_a_namespace() {
    if !is_root() {
        eprintln!(
            "SKIPPED: curl_through_xdp_on_a_veth_in_a_namespace: needs root (namespaces, XDP)"
        );
        return;
    }
    let relay = relay_bin();
    assert!(
        relay.exists(),
        "relay binary {} does not exist: build it (`cargo xtask build`) or set RELAY_BIN",
        relay.display()
    );

    let bpffs = BpfFs::new("e2e-bpf").expect("mount a bpffs for the pins");
    let pin_root = bpffs.path().join("relay");
    let ns = NetNs::new().expect("namespace and veth pair");
    let origin = TempDir::new("e2e-origin");
    let object = pattern(300_000, 42);
    origin.write("object.bin", &object);
    let config_dir = TempDir::new("e2e-cfg");
    let listen = SocketAddr::from((ns.ns_addr(), PORT));
    let config = config_dir.write(
        "relay.toml",
        format!(
            "[server]\nlisten = \"{listen}\"\nworkers = 1\n\n[cache]\nchunk_size = 65536\n\
             memory_bytes = 16777216\n\n[origin]\ndirectory = \"{}\"\n",
            origin.path().display()
        )
        .as_bytes(),
    );

    let mut daemon = Daemon::start(ns.exec(&relay).arg("run").arg("--config").arg(&config));
    daemon.wait_listening(listen, Duration::from_secs(20));

    let attach = steer(
        &ns,
        &relay,
        &["attach", "--iface", ns.ns_iface(), "--mode", "skb"],
        &pin_root,
    );
    let attach_err = String::from_utf8_lossy(&attach.stderr);
    if !attach.status.success() && attach_err.contains("built without XDP programs") {
        eprintln!(
            "SKIPPED: curl_through_xdp_on_a_veth_in_a_namespace: {} has no XDP object \
             (build it with `cargo xtask build`)",
            relay.display()
        );
        return;
    }
    assert!(attach.status.success(), "steer attach failed: {attach_err}");
    assert_eq!(xdp_mode_in_ns(&ns), Some("xdpgeneric".to_owned()));

    let headers = config_dir.path().join("headers");
    let url = format!("http://{listen}/object.bin");
    let (code, body, err) = curl(&["-D", headers.to_str().expect("utf-8 temp path"), &url]);
    assert_eq!(code, 0, "curl {url}: {err}");
    assert_eq!(
        body.len(),
        object.len(),
        "length of the object fetched through XDP"
    );
    assert!(
        body == object,
        "the object fetched through XDP differs from the origin file"
    );
    let head = std::fs::read_to_string(&headers).expect("curl wrote the headers");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("cache-status: relay")),
        "no Cache-Status from relay: {head}"
    );

    let status = steer(&ns, &relay, &["status"], &pin_root);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.status.success(),
        "steer status failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    eprintln!("relay steer status:\n{text}");
    let passed = pass_packets(&text, ns.ns_iface());
    assert!(
        passed.is_some_and(|n| n > 0),
        "no passed packets counted for {}: {text}",
        ns.ns_iface()
    );

    let detach = steer(
        &ns,
        &relay,
        &["detach", "--iface", ns.ns_iface()],
        &pin_root,
    );
    assert!(
        detach.status.success(),
        "steer detach failed: {}",
        String::from_utf8_lossy(&detach.stderr)
    );
    assert_eq!(
        xdp_mode_in_ns(&ns),
        None,
        "the program must leave the interface"
    );
    let after = steer(&ns, &relay, &["status"], &pin_root);
    let after = String::from_utf8_lossy(&after.stdout).into_owned();
    assert_eq!(pass_packets(&after, ns.ns_iface()), None, "{after}");

    // Still serving without XDP.
    let (code, body, err) = curl(&[&url]);
    assert_eq!(code, 0, "curl {url} after detach: {err}");
    assert!(body == object);
    drop(daemon);
}

/// `ip netns exec NS relay steer ARGS --pin-root ROOT`.
fn steer(ns: &NetNs, relay: &Path, args: &[&str], pin_root: &Path) -> Output {
    ns.exec(relay)
        .arg("steer")
        .args(args)
        .arg("--pin-root")
        .arg(pin_root)
        .stdin(Stdio::null())
        .output()
        .expect("run relay steer")
}

/// The XDP mode `ip` shows on the namespace's veth end, if any.
fn xdp_mode_in_ns(ns: &NetNs) -> Option<String> {
    let out = ns
        .ip()
        .args(["-d", "link", "show", "dev", ns.ns_iface()])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    ["xdpgeneric", "xdpdrv", "xdpoffload", "xdp"]
        .into_iter()
        .find(|mode| text.split_whitespace().any(|word| word == *mode))
        .map(str::to_owned)
}

/// The `pass packets=N` of `iface` in `relay steer status` output:
/// ```text
/// IFACE: attached ifindex=.. link_id=.. prog_id=..
///   pass      packets=N bytes=M
/// ```
fn pass_packets(status: &str, iface: &str) -> Option<u64> {
    let mut current = None;
    for line in status.lines() {
        if !line.starts_with(char::is_whitespace) {
            current = line.split_once(':').map(|(name, _)| name.trim().to_owned());
            continue;
        }
        let mut words = line.split_whitespace();
        if current.as_deref() == Some(iface) && words.next() == Some("pass") {
            return words
                .find_map(|w| w.strip_prefix("packets="))
                .and_then(|n| n.parse().ok());
        }
    }
    None
}

/// The relay daemon, started through `ip netns exec` (which execs it, so the child is relay
/// itself); SIGTERM, then SIGKILL after 10 s, on drop.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start relay run");
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[relay] {line}");
                }
            });
        }
        Daemon { child }
    }

    /// Connects to `addr` until it accepts (at most `limit`, 200 tries); fails at once if the
    /// daemon exits.
    fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) {
        let started = Instant::now();
        for _ in 0..200 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("relay exited before listening on {addr}: {status}");
            }
            if started.elapsed() > limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("relay did not accept connections on {addr} within {limit:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signals our own child, which has not been reaped (try_wait saw it alive),
            // so the pid still names it.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn status_output_is_parsed_per_interface() {
    let text = "a: attached ifindex=2 link_id=1 prog_id=1\n  aborted   packets=0 bytes=0\n  \
                pass      packets=5 bytes=300\nb: attached ifindex=3 link_id=2 prog_id=2\n  \
                pass      packets=7 bytes=420\n";
    assert_eq!(pass_packets(text, "a"), Some(5));
    assert_eq!(pass_packets(text, "b"), Some(7));
    assert_eq!(pass_packets(text, "c"), None);
}

//! The peer listener (`[cluster] peer_listen`): served by the same workers as clients, but
//! every request must carry `Relay-Peer` credentials under the cluster key
//! (`relay_cluster::peer`): a MAC over its method, target, `Range`, time and sender. A
//! request without them, with another key's, an old time, or credentials made for another
//! target or range is answered 403 and its connection closed, and counted; a signed one
//! is served like a client's. The test signs requests as another relay would.

use relay_cluster::peer::{PeerKey, Signed, now_ms};
use relay_tests::client::Client;
use relay_tests::{Relay, TempDir, pattern};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const KEY_BYTE: u8 = 0x6b;

fn start(dir: &TempDir) -> Relay {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.write(
        "cluster.key",
        format!("{KEY_BYTE:02x}").repeat(32).as_bytes(),
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("obj.bin"), pattern(100_000, 3)).unwrap();
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[origin]\ndirectory = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nlisten = \"127.0.0.1:0\"\n\
         key_file = \"{}\"\npeer_listen = \"127.0.0.1:0\"\n",
        www.display(),
        key.display()
    ))
}

/// The peer address the relay printed.
fn peer_addr(r: &Relay) -> SocketAddr {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let found = r.log.lock().unwrap().iter().find_map(|l| {
            l.strip_prefix("relay: peers on http://")?
                .trim()
                .parse()
                .ok()
        });
        if let Some(a) = found {
            return a;
        }
        assert!(Instant::now() < end, "no peers line");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A GET of `target` to `addr` with `extra` header lines: (status, body, closed after).
fn get(addr: SocketAddr, target: &str, extra: &str) -> (u16, Vec<u8>, bool) {
    let mut c = Client::connect(addr);
    c.send(format!("GET {target} HTTP/1.1\r\nHost: peer\r\n{extra}\r\n").as_bytes());
    let r = c.read_response(false).expect("an answer");
    // (A refusal closes the connection; an answer keeps it: not waited for.)
    let closed = r.status >= 400 && c.is_closed();
    (r.status, r.body, closed)
}

fn field(key: &PeerKey, t: u64, target: &str, range: &str) -> String {
    let v = key.sign(
        "127.0.0.1:7946",
        t,
        &Signed {
            method: "GET",
            target,
            range: range.as_bytes(),
        },
    );
    format!("Relay-Peer: {v}\r\n")
}

#[test]
fn peer_requests_need_credentials_under_the_cluster_key() {
    let dir = TempDir::new("peer");
    let relay = start(&dir);
    let peer = peer_addr(&relay);
    let key = PeerKey::derive(&relay_cluster::Key::new([KEY_BYTE; 32]));
    let stranger = PeerKey::derive(&relay_cluster::Key::new([0x11; 32]));
    let body = pattern(100_000, 3);
    let now = now_ms();
    let forbidden = || relay.metric("relay_peer_requests_total{result=\"forbidden\"}");

    // Without credentials, with another key's, an old time, or made for another request.
    let refused = [
        String::new(),
        field(&stranger, now, "/obj.bin", ""),
        field(&key, now - 120_000, "/obj.bin", ""),
        field(&key, now, "/other.bin", ""),
        field(&key, now, "/obj.bin", "bytes=0-99"),
        "Relay-Peer: node=x;t=1;mac=00\r\n".to_string(),
    ];
    for (i, extra) in refused.iter().enumerate() {
        let (status, _, closed) = get(peer, "/obj.bin", extra);
        assert_eq!(status, 403, "case {i}: {extra:?}");
        assert!(closed, "case {i}: the connection stays open");
    }
    assert_eq!(forbidden(), Some(refused.len() as f64));
    assert_eq!(
        relay.metric("relay_errors_total{status=\"403\",reason=\"peer_forbidden\"}"),
        Some(refused.len() as f64)
    );

    // Signed: served like a client's request, whole or by range.
    let (status, got, _) = get(peer, "/obj.bin", &field(&key, now, "/obj.bin", ""));
    assert_eq!(status, 200);
    assert!(got == body, "the peer got other bytes");
    let extra = format!(
        "Range: bytes=0-99\r\n{}",
        field(&key, now, "/obj.bin", "bytes=0-99")
    );
    let (status, got, _) = get(peer, "/obj.bin", &extra);
    assert_eq!((status, &got[..]), (206, &body[..100]));
    // The range is covered: another range under the same credentials is refused.
    let extra = format!(
        "Range: bytes=0-9999\r\n{}",
        field(&key, now, "/obj.bin", "bytes=0-99")
    );
    assert_eq!(get(peer, "/obj.bin", &extra).0, 403);
    assert_eq!(
        relay.metric("relay_peer_requests_total{result=\"ok\"}"),
        Some(2.0)
    );

    // The client listener knows nothing of peers: the field is no key to anything there.
    let (status, got, _) = get(relay.addr, "/obj.bin", "Relay-Peer: whatever\r\n");
    assert_eq!(status, 200);
    assert!(got == body);
    assert_eq!(forbidden(), Some(refused.len() as f64 + 1.0));
}

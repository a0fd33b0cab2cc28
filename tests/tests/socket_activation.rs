//! Under systemd (`deploy/relay.socket`, `Type=notify`): relay serves on the listening
//! sockets systemd passes (`LISTEN_FDS`), tells it when it is ready, stopping and
//! reloading (`NOTIFY_SOCKET`), and a restart loses no connection, since the socket and
//! the connections waiting on it stay with whoever passed it.
//!
//! The first test runs systemd's own `systemd-socket-activate`; the second holds the socket
//! in the test, as systemd holds a socket unit's, through a stop and a start.

use relay_tests::{Relay, TempDir, curl, hammer};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

fn config(www: &TempDir, port: u16) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 2\ndrain_ms = 200\n\n\
         [origin]\ndirectory = \"{}\"\n\n[admin]\nenabled = false\n",
        www.path().display()
    )
}

fn www() -> TempDir {
    let www = TempDir::new("activation-www");
    www.write("a.txt", b"hello\n");
    www
}

/// A listening socket with a backlog as deep as a socket unit's default (`Backlog=`
/// SOMAXCONN), on a free loopback port.
fn socket() -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .expect("bind");
    s.listen(4096).expect("listen");
    s.into()
}

/// Every datagram that came on `sock` so far, as text.
fn received(sock: &UnixDatagram) -> String {
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
        all.push('\n');
    }
    all
}

#[test]
fn systemd_socket_activate_passes_the_socket_and_hears_ready() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        // (xtask setup installs it: Debian's systemd package.)
        eprintln!("SKIP: no systemd-socket-activate on this machine");
        return;
    }
    let www = www();
    let port = socket().local_addr().unwrap().port();
    let dir = TempDir::new("activation-notify");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let listen = format!("127.0.0.1:{port}");
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    // systemd-socket-activate listens, and on the first connection becomes relay with the
    // socket as descriptor 3: the first request, from curl, starts it.
    let url = format!("http://{listen}/a.txt");
    let first = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        curl(&[url.as_str()])
    });
    let relay = Relay::start_with(
        &config(&www, port),
        &[
            "systemd-socket-activate",
            "-l",
            &listen,
            "-E",
            &notify_env,
            "-E",
            "RUST_LOG=info",
        ],
    );
    let (code, body, err) = first.join().unwrap();
    assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]), "{err}");
    assert!(relay.wait_log("systemd passed 1 listening socket", Duration::from_secs(1)));
    for _ in 0..4 {
        let (code, body, err) = curl(&[&format!("http://{listen}/a.txt")]);
        assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]), "{err}");
    }
    let mut said = String::new();
    for _ in 0..25 {
        said.push_str(&received(&notify));
        if said.contains("READY=1") {
            break;
        }
    }
    assert!(said.contains("READY=1"), "told systemd: {said:?}");
    // A reload is told as one, then ready again; a stop as stopping.
    relay.signal(libc::SIGHUP);
    assert!(relay.wait_log("reloaded", Duration::from_secs(5)));
    let status = relay.stop();
    assert!(status.success(), "{status:?}");
    let said = received(&notify);
    assert!(
        said.contains("RELOADING=1") && said.contains("READY=1") && said.contains("STOPPING=1"),
        "told systemd: {said:?}"
    );
}

#[test]
fn a_restart_on_a_socket_systemd_holds_loses_no_connection() {
    let www = www();
    let sock = socket();
    let addr = sock.local_addr().unwrap();
    let config = config(&www, addr.port());
    let old = Relay::start_activated(&config, &sock);
    assert_eq!(old.addr, addr);
    assert!(old.wait_log("systemd passed 1 listening socket", Duration::from_secs(1)));
    let (stop, counts, clients) = hammer::start(addr);
    std::thread::sleep(Duration::from_millis(500));
    // `systemctl restart relay`: SIGTERM (a drain, then the responses in flight), then a
    // new relay on the same socket once the old one is gone. Meanwhile connections wait in
    // the socket's backlog.
    let before = counts.get().0;
    let status = old.stop();
    assert!(status.success(), "{status:?}");
    let new = Relay::start_activated(&config, &sock);
    std::thread::sleep(Duration::from_millis(500));
    hammer::finish(&stop, clients);
    let (ok, refused, failed, reconnected) = counts.get();
    eprintln!(
        "restart under load on a passed socket: {ok} answered ({before} before the stop), \
         {refused} refused, {failed} failed, {reconnected} kept-alive connections closed \
         between requests"
    );
    assert_eq!(refused, 0, "a connection refused through the restart");
    assert_eq!(failed, 0, "requests failed through the restart");
    assert!(ok > before + 50, "the new relay served: {ok} vs {before}");
    drop(new);
}

//! A site of five relays, each in a network namespace of its own, and the origin in
//! another, joined through a bridge: one cache across them over real network stacks.
//! Objects warmed through one relay are served through the others from their peers (the
//! origin's count does not move); a Zipf workload over all five fetches each chunk from
//! the origin about once for the site (independent relays: once per relay asked); forged
//! gossip packets and an unsigned peer request from another namespace are dropped and
//! counted, and refused with 403; then, while clients fetch new objects through one relay,
//! another is killed with SIGKILL: every answer that completes is right, and the cut ones
//! are counted.
//!
//! Root only; otherwise prints `SKIPPED: ...`. Topology: a "switch" namespace holding a
//! bridge; the relays at `10.202.0.<i + 1>/24`, the origin at `10.202.0.100/24`. Nothing is
//! added to the host's namespace; every namespace is removed by its guard.

use relay_tests::netns::{Bridge, Namespace, in_netns, is_root};
use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, TempDir, pattern};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const RELAYS: usize = 5;
const CHUNK: usize = 64 << 10;

fn addr(i: usize) -> String {
    format!("10.202.0.{}", i + 1)
}

/// A GET of `path` from `to`, made from inside `ns`: the body when the answer is a whole
/// 200, None when the connection was cut or the answer was another.
fn get(ns: &Namespace, to: SocketAddr, path: &str) -> Option<Vec<u8>> {
    in_netns(ns.name(), || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).ok()?;
        let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        let body = got[end + 4..].to_vec();
        (head.starts_with("http/1.1 200") && body.len() == len).then_some(body)
    })
    .ok()
    .flatten()
}

fn metric(ns: &Namespace, r: &Relay, name: &str) -> f64 {
    in_netns(ns.name(), || r.metric(name))
        .ok()
        .flatten()
        .unwrap_or(0.0)
}

#[test]
fn a_site_in_namespaces_serves_from_peers_and_survives_a_killed_relay() {
    let test = "a_site_in_namespaces_serves_from_peers_and_survives_a_killed_relay";
    if !is_root() {
        eprintln!("SKIPPED: {test}: needs root (network namespaces)");
        return;
    }
    let sw = Bridge::new("ssw").expect("the switch");
    let ons = Namespace::new("sorg").expect("the origin's namespace");
    sw.plug(&ons, "po", "10.202.0.100/24", None)
        .expect("plug the origin");
    let origin = in_netns(ons.name(), || Origin::start_on("10.202.0.100:0"))
        .expect("the origin in its namespace");
    let nss: Vec<Namespace> = (0..RELAYS)
        .map(|i| {
            let ns = Namespace::new(&format!("s{i}")).expect("a relay's namespace");
            sw.plug(&ns, &format!("p{i}"), &format!("{}/24", addr(i)), None)
                .expect("plug a relay");
            ns
        })
        .collect();
    let dir = TempDir::new("site-ns");
    let key = {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.write("cluster.key", "d4".repeat(32).as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let relays: Vec<Relay> = (0..RELAYS)
        .map(|i| {
            let cfg = format!(
                "[server]\nlisten = \"{a}:8080\"\nworkers = 1\n\n[cache]\nmemory_bytes = \"64 MiB\"\n\
                 chunk_size = \"64 KiB\"\n\n[[origin.http]]\nurl = \"{o}\"\n\n\
                 [admin]\nlisten = \"127.0.0.1:9090\"\n\n[cluster]\nlisten = \"{a}:7946\"\n\
                 seeds = [\"{seed}:7946\"]\nkey_file = \"{k}\"\npeer_listen = \"{a}:7947\"\nsize = 5\n",
                a = addr(i),
                o = origin.url(),
                seed = addr(0),
                k = key.display()
            );
            Relay::start_with(&cfg, &["ip", "netns", "exec", nss[i].name()])
        })
        .collect();
    let records = |i: usize| {
        in_netns(nss[i].name(), || {
            relays[i]
                .metrics()
                .lines()
                .filter(|l| l.starts_with("relay_cluster_member_info{"))
                .count()
        })
        .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(20);
    while (0..RELAYS).any(|i| records(i) < RELAYS) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        (0..RELAYS).all(|i| records(i) == RELAYS),
        "the relays know each other"
    );
    let http = |i: usize| -> SocketAddr { format!("{}:8080", addr(i)).parse().unwrap() };

    // Warm through relay 0; then the others serve the same objects from their peers.
    let bodies: Vec<Vec<u8>> = (0..12)
        .map(|i| pattern(3 * CHUNK - 500 * i, 60 + i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put(&format!("/w{i}"), Object::new(b.clone(), &format!("w{i}")));
    }
    for (i, b) in bodies.iter().enumerate() {
        let got = get(&nss[0], http(0), &format!("/w{i}"));
        assert!(got.as_ref() == Some(b), "/w{i} through relay 0");
    }
    let warmed: usize = (0..bodies.len())
        .map(|i| origin.count(&format!("/w{i}")))
        .sum();
    for (r, ns) in nss.iter().enumerate().skip(1) {
        for (i, b) in bodies.iter().enumerate() {
            let got = get(ns, http(r), &format!("/w{i}"));
            assert!(got.as_ref() == Some(b), "/w{i} through relay {r}");
        }
    }
    let after: usize = (0..bodies.len())
        .map(|i| origin.count(&format!("/w{i}")))
        .sum();
    let peer_served: f64 = (0..RELAYS)
        .map(|i| {
            metric(
                &nss[i],
                &relays[i],
                "relay_peer_requests_total{result=\"ok\"}",
            )
        })
        .sum();
    eprintln!(
        "{} objects of 3 chunks: the origin served {warmed} requests warming them through one \
         relay, {} more when the other four were asked; peers served {peer_served} requests",
        bodies.len(),
        after - warmed
    );
    assert_eq!(warmed, 3 * bodies.len());
    assert_eq!(after, warmed, "the other relays went to the origin");

    // Zipf over the five relays: each chunk asked for comes from the origin about once.
    let sizes: Vec<usize> = (0..60)
        .map(|i| CHUNK * (1 + i % 3) - 300 * (i % 5))
        .collect();
    for (i, &len) in sizes.iter().enumerate() {
        origin.put(
            &format!("/z{i}"),
            Object::new(pattern(len, 500 + i as u64), &format!("z{i}")),
        );
    }
    let mut zipf = relay_tests::Zipf::new(sizes.len(), 0x2545_f491_4f6c_dd1d);
    let mut asked = vec![std::collections::HashSet::new(); sizes.len()];
    for _ in 0..300 {
        let obj = zipf.item();
        let r = (zipf.next_u64() % RELAYS as u64) as usize;
        asked[obj].insert(r);
        let got = get(&nss[r], http(r), &format!("/z{obj}"));
        assert_eq!(
            got.map(|b| b.len()),
            Some(sizes[obj]),
            "/z{obj} through relay {r}"
        );
    }
    let (mut chunks, mut fetched, mut independent) = (0, 0, 0);
    for (i, who) in asked.iter().enumerate().filter(|(_, w)| !w.is_empty()) {
        let c = sizes[i].div_ceil(CHUNK);
        chunks += c;
        independent += c * who.len();
        fetched += origin.count(&format!("/z{i}"));
    }
    eprintln!(
        "Zipf, 300 requests over five relays in namespaces: {chunks} chunks asked for, the \
         origin fetched {fetched} (independent relays would have fetched {independent})"
    );
    assert!(
        fetched <= chunks + chunks / 20,
        "{fetched} origin fetches for {chunks} chunks"
    );

    // Forged gossip from the origin's namespace: garbage, and a packet sealed under another
    // key. Dropped and counted; no member made. An unsigned peer request: 403.
    let packets = |what: &str| {
        let name = format!("relay_cluster_packets_total{{result=\"{what}\"}}");
        metric(&nss[0], &relays[0], &name)
    };
    let (malformed, bad_mac) = (packets("malformed"), packets("bad_mac"));
    let gossip: SocketAddr = format!("{}:7946", addr(0)).parse().unwrap();
    in_netns(ons.name(), || {
        let socket = std::net::UdpSocket::bind("10.202.0.100:0").expect("a UDP socket");
        for _ in 0..10 {
            let _ = socket.send_to(b"not a gossip packet", gossip);
        }
        let me: SocketAddr = "10.202.0.100:7946".parse().unwrap();
        let mut forger =
            relay_cluster::seal::Sealer::new(relay_cluster::Key::new([0x11; 32]), me, 1);
        for _ in 0..10 {
            let packet = forger.seal(b"\x01forged", relay_cluster::peer::now_ms());
            let _ = socket.send_to(&packet, gossip);
        }
    })
    .expect("the origin's namespace");
    let end = Instant::now() + Duration::from_secs(5);
    while (packets("malformed") < malformed + 10.0 || packets("bad_mac") < bad_mac + 10.0)
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let members = metric(&nss[0], &relays[0], "relay_cluster_members");
    eprintln!(
        "forged gossip: malformed +{}, bad MAC +{}; members {members}",
        packets("malformed") - malformed,
        packets("bad_mac") - bad_mac
    );
    assert_eq!(packets("malformed") - malformed, 10.0);
    assert_eq!(packets("bad_mac") - bad_mac, 10.0);
    assert_eq!(members, (RELAYS - 1) as f64);
    let peer: SocketAddr = format!("{}:7947", addr(0)).parse().unwrap();
    let status = in_netns(ons.name(), || {
        let mut s = TcpStream::connect_timeout(&peer, Duration::from_secs(5)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /w0 HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .ok()?;
        let mut got = [0u8; 12];
        s.read_exact(&mut got).ok()?;
        Some(String::from_utf8_lossy(&got).into_owned())
    })
    .ok()
    .flatten();
    assert_eq!(
        status.as_deref(),
        Some("HTTP/1.1 403"),
        "an unsigned peer request"
    );

    // Clients fetch new objects through relay 1 while relay 2 is killed.
    let fresh: Vec<Vec<u8>> = (0..60)
        .map(|i| pattern(2 * CHUNK + 77 * i, 900 + i as u64))
        .collect();
    for (i, b) in fresh.iter().enumerate() {
        origin.put(&format!("/k{i}"), Object::new(b.clone(), &format!("k{i}")));
    }
    let (mut right, mut cut) = (0, 0);
    for (i, b) in fresh.iter().enumerate() {
        if i == 20 {
            // SAFETY: signalling a child process of this test by its pid.
            unsafe { libc::kill(relays[2].pid() as libc::pid_t, libc::SIGKILL) };
        }
        match get(&nss[1], http(1), &format!("/k{i}")) {
            Some(got) => {
                assert!(&got == b, "/k{i}: other bytes through relay 1");
                right += 1;
            }
            None => cut += 1,
        }
    }
    let fell_back = metric(
        &nss[1],
        &relays[1],
        "relay_peer_fetches_total{result=\"fell_back\"}",
    );
    eprintln!(
        "60 new objects through relay 1, relay 2 killed after 20: {right} right, {cut} cut; \
         {fell_back} fetches went to the origin instead of a peer"
    );
    assert_eq!(right + cut, fresh.len());
    assert!(right >= fresh.len() - 2, "{cut} answers cut");
    drop(relays);
    drop(origin);
    drop(nss);
    drop(ons);
    drop(sw);
}

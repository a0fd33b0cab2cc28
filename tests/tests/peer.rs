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
    r.printed_addr("relay: peers on http://")
}

/// A GET of `target` to `addr` with `extra` header lines: (status, body, closed after).
fn get(addr: SocketAddr, target: &str, extra: &str) -> (u16, Vec<u8>, bool) {
    let mut c = Client::connect(addr);
    c.send(format!("GET {target} HTTP/1.1\r\nHost: peer\r\n{extra}\r\n").as_bytes());
    let r = c.read_response(false).expect("an answer");
    // (A refusal, 403, closes the connection; any other answer keeps it: not waited for.)
    let closed = r.status == 403 && c.is_closed();
    (r.status, r.body, closed)
}

fn field(key: &PeerKey, t: u64, target: &str, range: &str) -> String {
    let v = key.sign(
        "127.0.0.1:7946",
        t,
        1,
        &Signed {
            method: "GET",
            target,
            host: b"peer",
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

/// A relay of a cluster with an HTTP origin, a peer listener and `seeds`.
fn cluster_relay(
    dir: &TempDir,
    origin: &relay_tests::origin::Origin,
    seeds: &[SocketAddr],
) -> Relay {
    cluster_relay_chunked(dir, origin, seeds, "64 KiB")
}

/// [`cluster_relay`] with chunks of `chunk`.
fn cluster_relay_chunked(
    dir: &TempDir,
    origin: &relay_tests::origin::Origin,
    seeds: &[SocketAddr],
    chunk: &str,
) -> Relay {
    cluster_relay_with(dir, origin, seeds, chunk, "")
}

/// [`cluster_relay_chunked`] with more `[server]` lines.
fn cluster_relay_with(
    dir: &TempDir,
    origin: &relay_tests::origin::Origin,
    seeds: &[SocketAddr],
    chunk: &str,
    server: &str,
) -> Relay {
    cluster_relay_full(dir, origin, seeds, chunk, server, "")
}

/// [`cluster_relay_with`] with more `[cluster]` lines.
fn cluster_relay_full(
    dir: &TempDir,
    origin: &relay_tests::origin::Origin,
    seeds: &[SocketAddr],
    chunk: &str,
    server: &str,
    cluster: &str,
) -> Relay {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.write(
        "cluster.key",
        format!("{KEY_BYTE:02x}").repeat(32).as_bytes(),
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n{server}\n[cache]\nmemory_bytes = \"64 MiB\"\n\
         chunk_size = \"{chunk}\"\n\n\
         [[origin.http]]\nurl = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [cluster]\nlisten = \"127.0.0.1:0\"\nseeds = [{}]\nkey_file = \"{}\"\n\
         peer_listen = \"127.0.0.1:0\"\nsize = 3\n{cluster}",
        origin.url(),
        seeds.join(", "),
        key.display()
    ))
}

/// The gossip address the relay printed.
fn gossip_addr(r: &Relay) -> SocketAddr {
    r.printed_addr("relay: cluster on udp://")
}

/// Waits (at most 15 s) until each of `relays` knows the records of all of them.
fn know_each_other(relays: &[&Relay]) {
    let n = relays.len();
    let end = Instant::now() + Duration::from_secs(15);
    while relays.iter().any(|r| records(r) < n) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let known: Vec<usize> = relays.iter().map(|r| records(r)).collect();
    assert!(known.iter().all(|&k| k == n), "records known: {known:?}");
}

/// Records (`relay_cluster_member_info` lines) the relay knows.
fn records(r: &Relay) -> usize {
    r.metrics()
        .lines()
        .filter(|l| l.starts_with("relay_cluster_member_info{"))
        .count()
}

/// Two relays of one site share one cache: each chunk goes to its owner among them
/// (weighted rendezvous hashing, the same pick on both), which fetches it from the origin
/// once. Twenty objects asked through one relay, then through the other: the origin sees
/// each once (two independent relays would fetch each twice), the relays answered each
/// other's misses over the peer listener, and every body is right.
#[test]
fn two_relays_fetch_each_object_from_the_origin_once() {
    use relay_tests::origin::{Object, Origin};
    let origin = Origin::start();
    let bodies: Vec<Vec<u8>> = (0..20)
        .map(|i| pattern(50_000 + i * 1000, 40 + i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put(&format!("/o{i}"), Object::new(b.clone(), &format!("e{i}")));
    }
    let (da, db) = (TempDir::new("peer-a"), TempDir::new("peer-b"));
    let a = cluster_relay(&da, &origin, &[]);
    let b = cluster_relay(&db, &origin, &[gossip_addr(&a)]);
    know_each_other(&[&a, &b]);
    for relay in [&a, &b] {
        for (i, want) in bodies.iter().enumerate() {
            let (status, got, _) = get(relay.addr, &format!("/o{i}"), "");
            assert_eq!(status, 200, "/o{i}");
            assert!(&got == want, "/o{i}: other bytes");
        }
    }
    // (Objects past 64 KiB are two chunks, fetched with a request each.)
    let fetched: Vec<usize> = (0..20).map(|i| origin.count(&format!("/o{i}"))).collect();
    let chunks: Vec<usize> = bodies.iter().map(|b| b.len().div_ceil(64 << 10)).collect();
    eprintln!("origin fetches per object through two relays: {fetched:?}");
    assert_eq!(fetched, chunks);
    // Every whole chunk one relay took from the other came with its checksum: in the head
    // when the other held it, in a trailer when it streamed it from the origin.
    let sums = |how: &str| {
        let name = format!("relay_peer_chunk_sums_total{{sum=\"{how}\"}}");
        a.metric(&name).unwrap_or(0.0) + b.metric(&name).unwrap_or(0.0)
    };
    let (head, trailer, none) = (sums("head"), sums("trailer"), sums("none"));
    eprintln!("peer chunks' checksums: {head} in the head, {trailer} in a trailer, {none} none");
    assert!(head > 0.0 && trailer > 0.0 && none == 0.0);
    let answered = |r: &Relay| {
        r.metric("relay_peer_fetches_total{result=\"answered\"}")
            .unwrap_or(0.0)
    };
    let served = |r: &Relay| {
        r.metric("relay_peer_requests_total{result=\"ok\"}")
            .unwrap_or(0.0)
    };
    eprintln!(
        "peer fetches answered: a {} b {}; peer requests served: a {} b {}",
        answered(&a),
        answered(&b),
        served(&a),
        served(&b)
    );
    assert!(answered(&a) > 0.0 && answered(&b) > 0.0);
    // (A relay also serves the other's digest requests and its holder requests.)
    assert!(answered(&a) + answered(&b) <= served(&a) + served(&b));
    let fell_back = |r: &Relay| {
        r.metric("relay_peer_fetches_total{result=\"fell_back\"}")
            .unwrap_or(0.0)
    };
    assert_eq!(fell_back(&a), 0.0);

    // A client request within this relay's limits that the owner's refuses once the fields
    // of a fetch are added (62 fields: past 64 with them, 431 at the owner): only an
    // answer a cache gives when all went well is used, else the origin is asked.
    let many: String = (0..62).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    for (i, body) in bodies.iter().enumerate() {
        let path = format!("/m{i}");
        origin.put(&path, Object::new(body.clone(), &format!("m{i}")));
        let (status, got, _) = get(a.addr, &path, &many);
        assert_eq!(status, 200, "{path}");
        assert!(&got == body, "{path}: other bytes");
    }
    let refused = fell_back(&a);
    eprintln!("requests the owner refused (431): {refused} fell back to the origin");
    assert!(refused > 0.0);

    // The other relay killed (SIGKILL: the cluster has not noticed yet): misses it owned
    // go to the origin instead, and every client still gets its bytes.
    // SAFETY: signalling a child process of this test by its pid.
    unsafe { libc::kill(b.pid() as libc::pid_t, libc::SIGKILL) };
    for (i, body) in bodies.iter().enumerate() {
        let path = format!("/n{i}");
        origin.put(&path, Object::new(body.clone(), &format!("n{i}")));
        let (status, got, _) = get(a.addr, &path, "");
        assert_eq!(status, 200, "{path}");
        assert!(&got == body, "{path}: other bytes");
        assert_eq!(origin.count(&path), body.len().div_ceil(64 << 10), "{path}");
    }
    let dead = fell_back(&a) - refused;
    eprintln!("with the other relay killed: {dead} misses fell back to the origin");
    assert!(dead > 0.0);
}

/// A relay that joins a site starts warm: objects fetched through one relay (alone, it
/// holds every chunk), then a second relay joins and is asked for all of them. Half the
/// chunks are now the newcomer's own to fetch (it is their owner); without digests it
/// would take them from the origin. Its misses ask the relay whose digest names the chunk
/// first (`only-if-cached`), and the origin sees no request more.
#[test]
fn a_relay_that_joins_takes_chunks_from_the_holder_its_digests_name() {
    use relay_tests::origin::{Object, Origin};
    let origin = Origin::start();
    let bodies: Vec<Vec<u8>> = (0..30)
        .map(|i| pattern(100_000 + i * 1000, 90 + i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put(&format!("/d{i}"), Object::new(b.clone(), &format!("d{i}")));
    }
    let (da, dc) = (TempDir::new("digest-a"), TempDir::new("digest-c"));
    let a = cluster_relay(&da, &origin, &[]);
    for (i, want) in bodies.iter().enumerate() {
        let (status, got, _) = get(a.addr, &format!("/d{i}"), "");
        assert!(
            status == 200 && &got == want,
            "/d{i} through the first relay"
        );
    }
    let chunks: usize = bodies.iter().map(|b| b.len().div_ceil(64 << 10)).sum();
    let warmed: usize = (0..30).map(|i| origin.count(&format!("/d{i}"))).sum();
    assert_eq!(warmed, chunks);
    // Its digest is rebuilt within a look (5 s) of its chunks changing.
    let end = Instant::now() + Duration::from_secs(15);
    while a.metric("relay_digest_chunks").unwrap_or(0.0) < chunks as f64 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        a.metric("relay_digest_chunks"),
        Some(chunks as f64),
        "the first relay's digest"
    );
    let c = cluster_relay(&dc, &origin, &[gossip_addr(&a)]);
    know_each_other(&[&a, &c]);
    let end = Instant::now() + Duration::from_secs(15);
    while c.metric("relay_peer_digests_fetched_total").unwrap_or(0.0) < 1.0 && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        c.metric("relay_peer_digests_fetched_total").unwrap_or(0.0) >= 1.0,
        "the newcomer fetched no digest"
    );
    for (i, want) in bodies.iter().enumerate() {
        let (status, got, _) = get(c.addr, &format!("/d{i}"), "");
        assert_eq!(status, 200, "/d{i} through the newcomer");
        assert!(&got == want, "/d{i}: other bytes");
    }
    // The checksum between relays is never stored with the object, nor shown to a client.
    let mut cl = Client::connect(c.addr);
    cl.send(b"GET /d1 HTTP/1.1\r\nHost: peer\r\n\r\n");
    let r = cl.read_response(false).expect("/d1");
    assert_eq!(r.status, 200);
    assert!(
        r.header("relay-chunk-sum").is_none(),
        "a client saw the peers' checksum"
    );
    let after: usize = (0..30).map(|i| origin.count(&format!("/d{i}"))).sum();
    let hits = c
        .metric("relay_peer_holder_requests_total{result=\"hit\"}")
        .unwrap_or(0.0);
    let misses = c
        .metric("relay_peer_holder_requests_total{result=\"miss\"}")
        .unwrap_or(0.0);
    eprintln!(
        "digest: the first relay's digest of {chunks} chunks is {} bytes; the newcomer's \
         {chunks} chunks: {hits} from the holder its digest named, {misses} holder misses; \
         origin requests {warmed} warming, {} more through the newcomer",
        a.metric("relay_digest_bytes").unwrap_or(0.0),
        after - warmed
    );
    assert_eq!(after, warmed, "the origin was asked again");
    assert!(
        hits >= chunks as f64 / 4.0,
        "{hits} holder hits for {chunks} chunks"
    );

    // A holder is asked only for what it holds: an object described here whose chunk is
    // not is 504 at once, never fetched.
    let body = pattern(200_000, 77);
    origin.put("/h", Object::new(body.clone(), "h"));
    let (status, _, _) = get(a.addr, "/h", "Range: bytes=0-99\r\n");
    assert_eq!(status, 206);
    assert_eq!(origin.count("/h"), 1);
    let key = PeerKey::derive(&relay_cluster::Key::new([KEY_BYTE; 32]));
    let ask = |range: &str| {
        let extra = format!(
            "Range: {range}\r\nCache-Control: only-if-cached\r\n{}",
            field(&key, now_ms(), "/h", range)
        );
        get(peer_addr(&a), "/h", &extra)
    };
    // (The client's 206 may end before the chunk's fill does: held once it has.)
    let end = Instant::now() + Duration::from_secs(5);
    let mut answer = ask("bytes=0-99");
    while answer.0 == 504 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        answer = ask("bytes=0-99");
    }
    let (status, got, _) = answer;
    assert_eq!((status, &got[..]), (206, &body[..100]));
    assert_eq!(ask("bytes=131072-196607").0, 504);
    // Nor with credentials, whose stored response it may not use: 504, never the origin.
    let extra = format!(
        "Range: bytes=0-99\r\nCache-Control: only-if-cached\r\nAuthorization: Bearer x\r\n{}",
        field(&key, now_ms(), "/h", "bytes=0-99")
    );
    assert_eq!(get(peer_addr(&a), "/h", &extra).0, 504);
    // One whole chunk held in memory comes with its checksum (the disk tier's XXH3-64).
    let extra = format!(
        "Range: bytes=0-65535\r\n{}",
        field(&key, now_ms(), "/h", "bytes=0-65535")
    );
    let mut cl = Client::connect(peer_addr(&a));
    cl.send(format!("GET /h HTTP/1.1\r\nHost: peer\r\n{extra}\r\n").as_bytes());
    let r = cl.read_response(false).expect("chunk 0");
    assert_eq!((r.status, &r.body[..]), (206, &body[..65536]));
    let sum = r
        .header("relay-chunk-sum")
        .expect("a checksum with a whole chunk");
    assert_eq!(
        relay_cluster::peer::parse_chunk_sum(sum.as_bytes()),
        Some(relay_cache::disk::checksum(&body[..65536]))
    );
    assert_eq!(
        origin.count("/h"),
        1,
        "a holder fetched what it was asked only if held"
    );

    // The digest itself: signed, with its ETag and 304 for it; unsigned, 403.
    let digest_field = field(&key, now_ms(), relay_cluster::digest::PATH, "");
    let mut cl = Client::connect(peer_addr(&a));
    cl.send(
        format!(
            "GET {} HTTP/1.1\r\nHost: peer\r\n{digest_field}\r\n",
            relay_cluster::digest::PATH
        )
        .as_bytes(),
    );
    let r = cl.read_response(false).expect("the digest");
    assert_eq!(r.status, 200);
    let digest = relay_cluster::digest::Digest::decode(&r.body).expect("a digest that decodes");
    let etag = r.header("etag").expect("an ETag").to_owned();
    let (status, _, _) = get(
        peer_addr(&a),
        relay_cluster::digest::PATH,
        &format!("If-None-Match: {etag}\r\n{digest_field}"),
    );
    assert_eq!(status, 304);
    let (status, _, _) = get(peer_addr(&a), relay_cluster::digest::PATH, "");
    assert_eq!(status, 403);
    // A client asking a relay for that path gets the origin's answer, never a peer's digest:
    // paths under /.relay/ are never asked of peers.
    let (status, got, _) = get(c.addr, relay_cluster::digest::PATH, "");
    assert!(
        !got.starts_with(b"RDG1"),
        "a client got a relay's digest ({status})"
    );
    assert_eq!(origin.count(relay_cluster::digest::PATH), 1);
    let mut name = Vec::new();
    relay_cluster::digest::chunk_name(b"peer/d0", 1, &mut name);
    assert!(digest.may_hold(relay_cluster::digest::name_hash(&name)));
}

/// A chunk's owner loaded well above the site's average (its connections open, in its
/// record) gives its chunks to their second owner: three relays; 150 idle connections held
/// open to one of them; once the others see its load, 30 new objects through another relay
/// go to the owners other than the loaded one, and the origin still sees each chunk once.
#[test]
fn chunks_of_an_owner_loaded_well_above_the_average_go_to_the_next_owner() {
    use relay_tests::origin::{Object, Origin};
    let origin = Origin::start();
    let (da, db, dc) = (
        TempDir::new("spill-a"),
        TempDir::new("spill-b"),
        TempDir::new("spill-c"),
    );
    let a = cluster_relay(&da, &origin, &[]);
    // b holds idle connections for as long as the test takes, however slow the machine.
    let patient = "header_timeout_ms = 120000\nidle_timeout_ms = 120000\n";
    let b = cluster_relay_with(&db, &origin, &[gossip_addr(&a)], "64 KiB", patient);
    let c = cluster_relay(&dc, &origin, &[gossip_addr(&a)]);
    know_each_other(&[&a, &b, &c]);
    // Idle connections to b: its load.
    let held: Vec<std::net::TcpStream> = (0..150)
        .filter_map(|_| std::net::TcpStream::connect(b.addr).ok())
        .collect();
    assert_eq!(held.len(), 150);
    // As a relay sees b's load (a asks the owners, and c, asked as a second owner, may ask
    // the first chunk's owner for a description: both must see it).
    let b_load = |by: &Relay| {
        by.metrics()
            .lines()
            .find(|l| {
                l.starts_with("relay_cluster_member_info{")
                    && l.contains(&format!("node=\"{}\"", gossip_addr(&b)))
            })
            .and_then(|l| {
                l.split("load=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or(0)
    };
    // (A record update reaches every member by gossip, else by the republishing every
    // 30 s: on a loaded machine one relay was seen to learn it 8 s after the other.)
    let end = Instant::now() + Duration::from_secs(40);
    while (b_load(&a) < 150 || b_load(&c) < 150) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = b_load(&a);
    assert!(seen >= 150, "a sees b's load as {seen}");
    assert!(b_load(&c) >= 150, "c sees b's load as {}", b_load(&c));
    let served = |r: &Relay| {
        r.metric("relay_peer_requests_total{result=\"ok\"}")
            .unwrap_or(0.0)
    };
    let (b_before, c_before) = (served(&b), served(&c));
    let bodies: Vec<Vec<u8>> = (0..30).map(|i| pattern(60_000, 300 + i as u64)).collect();
    for (i, body) in bodies.iter().enumerate() {
        let path = format!("/s{i}");
        origin.put(&path, Object::new(body.clone(), &format!("s{i}")));
        let (status, got, _) = get(a.addr, &path, "");
        assert!(status == 200 && &got == body, "{path}");
        assert_eq!(origin.count(&path), 1, "{path}");
    }
    let (to_b, to_c) = (served(&b) - b_before, served(&c) - c_before);
    eprintln!(
        "spill: b at load {seen} (a and c near 0): of 30 one-chunk misses through a, the \
         loaded b served {to_b} peer requests (digest requests included), c served {to_c}"
    );
    // Without the spill b would own about a third of them (10); its only requests now
    // are the others' digest fetches.
    assert!(to_b <= 3.0, "b served {to_b}");
    assert!(to_c >= 8.0, "c served {to_c}");
    drop(held);
}

/// A whole chunk answered to another relay carries its checksum from memory and from the
/// disk tier alike: 30 one-chunk objects through a relay whose memory holds about 14
/// (the first ones are then on disk only); each asked for by a signed request comes with
/// the XXH3 of its bytes.
#[test]
fn whole_chunks_from_memory_and_disk_carry_their_checksum() {
    use relay_tests::origin::{Object, Origin};
    use std::os::unix::fs::PermissionsExt;
    let origin = Origin::start();
    let dir = TempDir::new("peer-disk-sum");
    let key_file = dir.write(
        "cluster.key",
        format!("{KEY_BYTE:02x}").repeat(32).as_bytes(),
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let disk = dir.path().join("disk");
    let a = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nmemory_bytes = \"1 MiB\"\n\
         chunk_size = \"64 KiB\"\ndisk_dir = \"{}\"\ndisk_bytes = \"64 MiB\"\n\
         disk_admission = \"always\"\n\n[[origin.http]]\nurl = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nlisten = \"127.0.0.1:0\"\n\
         key_file = \"{}\"\npeer_listen = \"127.0.0.1:0\"\n",
        disk.display(),
        origin.url(),
        key_file.display()
    ));
    let bodies: Vec<Vec<u8>> = (0..30).map(|i| pattern(60_000, 700 + i as u64)).collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put(&format!("/e{i}"), Object::new(b.clone(), &format!("e{i}")));
        let (status, got, _) = get(a.addr, &format!("/e{i}"), "");
        assert!(status == 200 && &got == b, "/e{i}");
    }
    // The disk writer works off the request path: wait until every chunk is on disk.
    let end = Instant::now() + Duration::from_secs(10);
    while a.metric("relay_disk_tier_chunks").unwrap_or(0.0) < 30.0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let in_memory = a.metric("relay_memory_tier_chunks").unwrap_or(0.0);
    let key = PeerKey::derive(&relay_cluster::Key::new([KEY_BYTE; 32]));
    for (i, b) in bodies.iter().enumerate() {
        let target = format!("/e{i}");
        let extra = format!(
            "Range: bytes=0-65535\r\n{}",
            field(&key, now_ms(), &target, "bytes=0-65535")
        );
        let mut cl = Client::connect(peer_addr(&a));
        cl.send(format!("GET {target} HTTP/1.1\r\nHost: peer\r\n{extra}\r\n").as_bytes());
        let r = cl.read_response(false).expect("a chunk");
        assert_eq!((r.status, &r.body[..]), (206, &b[..]), "{target}");
        let sum = r.header("relay-chunk-sum").map(|v| v.as_bytes().to_vec());
        assert_eq!(
            sum.as_deref()
                .and_then(relay_cluster::peer::parse_chunk_sum),
            Some(relay_cache::disk::checksum(b)),
            "{target}: its checksum"
        );
    }
    eprintln!(
        "30 whole chunks asked by a peer, {in_memory} of them in memory (the rest on disk \
         only): each came with its checksum"
    );
    assert!(
        in_memory < 30.0,
        "every chunk still in memory: the disk case was not tried"
    );
    let from_disk = a
        .metric("relay_disk_reads_total{result=\"verified\"}")
        .unwrap_or(0.0);
    assert!(
        from_disk >= 30.0 - in_memory,
        "{from_disk} chunks read from disk"
    );
    assert_eq!(origin.count("/e0"), 1);
}

/// A whole chunk a relay does not hold when another relay asks for it streams as it
/// arrives from the origin, chunked, with its checksum in a trailer field after it; once
/// held, the same chunk comes with a length and its checksum in the head.
#[test]
fn a_chunk_streamed_to_a_peer_carries_its_checksum_in_a_trailer() {
    use relay_tests::origin::{Object, Origin};
    use std::sync::atomic::Ordering;
    let origin = Origin::start();
    // The origin's body in 8 KiB pieces 5 ms apart: about 40 ms for a 64 KiB chunk.
    origin.behaviour.piece_bytes.store(8192, Ordering::Relaxed);
    origin.behaviour.piece_delay_ms.store(5, Ordering::Relaxed);
    let body = pattern(180_000, 91);
    origin.put("/s", Object::new(body.clone(), "s1"));
    let dir = TempDir::new("peer-trailer");
    let a = cluster_relay(&dir, &origin, &[]);
    let key = PeerKey::derive(&relay_cluster::Key::new([KEY_BYTE; 32]));
    let ask = || {
        let range = "bytes=65536-131071";
        let mut c = Client::connect(peer_addr(&a));
        c.send(
            format!(
                "GET /s HTTP/1.1\r\nHost: peer\r\nTE: trailers\r\nRange: {range}\r\n{}\r\n",
                field(&key, now_ms(), "/s", range)
            )
            .as_bytes(),
        );
        c
    };
    let want = &body[65536..131072];
    let r = ask().read_response(false).expect("a chunk");
    let trailers = &r.trailers;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-range"), Some("bytes 65536-131071/180000"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("trailer"), Some("Relay-Chunk-Sum"));
    assert!(r.body == want, "{} bytes, not the chunk", r.body.len());
    let sum = trailers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("relay-chunk-sum"))
        .and_then(|(_, v)| relay_cluster::peer::parse_chunk_sum(v.as_bytes()));
    assert_eq!(sum, Some(relay_cache::disk::checksum(want)), "{trailers:?}");
    let fetched = origin.count("/s");
    // Held now: a length, and the checksum in the head.
    let r = ask().read_response(false).expect("a chunk");
    assert_eq!((r.status, &r.body[..]), (206, want));
    let sum = r.header("relay-chunk-sum").map(|v| v.as_bytes().to_vec());
    assert_eq!(
        sum.as_deref()
            .and_then(relay_cluster::peer::parse_chunk_sum),
        Some(relay_cache::disk::checksum(want))
    );
    // A client never sees either.
    let mut c = Client::connect(a.addr);
    c.send(b"GET /s HTTP/1.1\r\nHost: peer\r\nRange: bytes=65536-131071\r\n\r\n");
    let r = c.read_response(false).expect("a chunk");
    assert_eq!((r.status, &r.body[..]), (206, want));
    assert!(r.header("trailer").is_none() && r.header("relay-chunk-sum").is_none());
    assert_eq!(origin.count("/s"), fetched);
}

/// Five relays of one site and a Zipf workload over them: 400 requests for 60 objects of
/// one to four 64 KiB chunks (s = 1), each to a relay picked at random. The origin sees each
/// chunk of each object asked for once: chunk 0 (with the description) from its owner,
/// the others from theirs, who ask chunk 0's owner for the description rather than the
/// origin. Five independent relays would fetch a chunk once per relay that was asked for it.
#[test]
fn five_relays_fetch_each_chunk_from_the_origin_once_under_zipf() {
    use relay_tests::origin::{Object, Origin};
    const CHUNK: usize = 64 << 10;
    let origin = Origin::start();
    let sizes: Vec<usize> = (0..60)
        .map(|i| CHUNK * (1 + i % 4) - 1000 * (i % 3))
        .collect();
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, 100 + i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put(&format!("/z{i}"), Object::new(b.clone(), &format!("z{i}")));
    }
    let dirs: Vec<TempDir> = (0..5).map(|i| TempDir::new(&format!("zipf-{i}"))).collect();
    // The WAN's failure detection (a probe every 5 s): five debug builds on a loaded
    // machine answered the LAN's probes late now and then, a member was declared down in
    // one relay's view for a while, and that relay took other owners for its chunks (a
    // chunk fetched twice). This test is about a steady membership; churn is cluster.rs's.
    let relay = |d, seeds: &[SocketAddr]| {
        cluster_relay_full(d, &origin, seeds, "64 KiB", "", "mode = \"wan\"\n")
    };
    let first = relay(&dirs[0], &[]);
    let seed = gossip_addr(&first);
    let mut relays = vec![first];
    for d in &dirs[1..] {
        relays.push(relay(d, &[seed]));
    }
    know_each_other(&relays.iter().collect::<Vec<_>>());
    let mut zipf = relay_tests::Zipf::new(bodies.len(), 0x2545_f491_4f6c_dd1d);
    let mut asked = vec![std::collections::HashSet::new(); bodies.len()];
    for _ in 0..400 {
        let obj = zipf.item();
        let relay = (zipf.next_u64() % 5) as usize;
        asked[obj].insert(relay);
        let (status, got, _) = get(relays[relay].addr, &format!("/z{obj}"), "");
        assert_eq!(status, 200, "/z{obj} through relay {relay}");
        assert!(
            got == bodies[obj],
            "/z{obj} through relay {relay}: other bytes"
        );
    }
    let (mut fetched, mut chunks, mut independent) = (0, 0, 0);
    for (i, relays_asked) in asked.iter().enumerate() {
        if relays_asked.is_empty() {
            continue;
        }
        let n = sizes[i].div_ceil(CHUNK);
        chunks += n;
        independent += n * relays_asked.len();
        fetched += origin.count(&format!("/z{i}"));
    }
    eprintln!(
        "zipf over five relays: {chunks} chunks asked for, the origin fetched {fetched} \
         (five independent relays: {independent})"
    );
    assert_eq!(fetched, chunks, "the origin saw a chunk more than once");
}

/// A peer that dies in the middle of a chunk: the rest of the chunk comes from the origin
/// into the same fill, the client's bytes going on from where the peer stopped (the origin
/// is asked from the chunk's start: the bytes the peer sent, which no checksum covers, are
/// compared with its own first). Twelve one-chunk objects (512 KiB, the
/// origin sending 32 KiB every 40 ms: about 0.6 s each) asked through one relay at once;
/// the other relay, owner of about half of them and streaming them, is killed after
/// 300 ms. Every client gets its whole object, right.
#[test]
fn a_chunk_from_a_peer_that_dies_mid_transfer_continues_from_the_origin() {
    peer_dies_mid_transfer("die", 0);
}

/// The same with an origin capping its ranges at 200 KiB: the first chunk a peer broke off
/// in is continued from the origin answer after answer, as any chunk is, and every client
/// gets its object whole.
#[test]
fn a_first_chunk_a_peer_broke_off_in_is_finished_from_a_capping_origin() {
    peer_dies_mid_transfer("capdie", 200 << 10);
}

/// Twelve objects through relay A, B (owner of about half) killed mid-transfer; the origin
/// capping its ranges at `cap` bytes (0: not).
fn peer_dies_mid_transfer(tag: &str, cap: u64) {
    use relay_tests::origin::{Object, Origin};
    use std::sync::atomic::Ordering;
    let origin = Origin::start();
    origin.behaviour.range_cap.store(cap, Ordering::Relaxed);
    origin
        .behaviour
        .piece_bytes
        .store(32 << 10, Ordering::Relaxed);
    origin.behaviour.piece_delay_ms.store(40, Ordering::Relaxed);
    let bodies: Vec<Vec<u8>> = (0..12).map(|i| pattern(512 << 10, 300 + i)).collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put(&format!("/d{i}"), Object::new(b.clone(), &format!("d{i}")));
    }
    let (da, db) = (
        TempDir::new(&format!("{tag}-a")),
        TempDir::new(&format!("{tag}-b")),
    );
    let a = cluster_relay_chunked(&da, &origin, &[], "1 MiB");
    let b = cluster_relay_chunked(&db, &origin, &[gossip_addr(&a)], "1 MiB");
    know_each_other(&[&a, &b]);
    let got: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..bodies.len())
            .map(|i| {
                let addr = a.addr;
                s.spawn(move || {
                    let (status, body, _) = get(addr, &format!("/d{i}"), "");
                    (status, body)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling a child process of this test by its pid.
        unsafe { libc::kill(b.pid() as libc::pid_t, libc::SIGKILL) };
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let bad: Vec<String> = got
        .iter()
        .enumerate()
        .filter(|(i, (status, body))| *status != 200 || body != &bodies[*i])
        .map(|(i, (status, body))| format!("/d{i}: {status}, {} bytes", body.len()))
        .collect();
    assert!(bad.is_empty(), "cut or wrong (range cap {cap}): {bad:?}");
    let broke_off = a
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("broke off"))
        .count();
    eprintln!(
        "12 objects through a relay whose peer died mid-transfer (range cap {cap}): all \
         right; {broke_off} chunks continued from the origin where the peer stopped"
    );
    assert!(broke_off > 0, "no chunk was mid-transfer from the peer");
}

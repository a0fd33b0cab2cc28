//! An origin of several servers (`servers = [...]`), each python's `http.server` serving
//! the same files: misses spread by weight, a server that dies is passed over (its share
//! goes to the others, no client sees an error), and the backup is asked only once every
//! other server is down.

use relay_tests::python::PythonOrigin;
use relay_tests::{Relay, TempDir, fetch, pattern};
use std::time::{Duration, Instant};

#[test]
fn an_origin_pool_spreads_by_weight_passes_over_the_dead_and_falls_back_to_its_backup() {
    let files = TempDir::new("pool-www");
    let bodies: Vec<Vec<u8>> = (0..120)
        .map(|i| pattern(2000 + i * 13, 50 + i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        files.write(&format!("o{i}.bin"), b);
    }
    let mut a = PythonOrigin::start(files.path());
    let mut b = PythonOrigin::start(files.path());
    let backup = PythonOrigin::start(files.path());
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[[origin.http]]\n\
         url = \"http://origin.test\"\nservers = [\n  {{ address = \"127.0.0.1:{}\" }},\n  \
         {{ address = \"127.0.0.1:{}\", weight = 3 }},\n  \
         {{ address = \"127.0.0.1:{}\", backup = true }},\n]\n\
         connect_timeout_ms = 500\nretries = 2\ndown_after_failures = 1\ndown_ms = 60000\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        a.port, b.port, backup.port
    ));
    let get = |i: usize| {
        let got = fetch(&relay.url(&format!("/o{i}.bin")), &[]);
        assert_eq!(got.status, 200, "/o{i}.bin: {}", got.head);
        assert!(got.body == bodies[i], "/o{i}.bin: other bytes");
    };
    // Misses spread 1 : 3 (one request each: small objects are one chunk).
    for i in 0..40 {
        get(i);
    }
    let wait_logged = |p: &PythonOrigin, n: usize| {
        let end = Instant::now() + Duration::from_secs(5);
        while p.gets("/") < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_logged(&a, 10);
    wait_logged(&b, 30);
    eprintln!(
        "40 misses: {} to a (weight 1), {} to b (weight 3), {} to the backup",
        a.gets("/"),
        b.gets("/"),
        backup.gets("/")
    );
    assert_eq!((a.gets("/"), b.gets("/"), backup.gets("/")), (10, 30, 0));
    // b dies: its share goes to a; no client sees an error.
    b.kill();
    for i in 40..80 {
        get(i);
    }
    wait_logged(&a, 50);
    eprintln!(
        "b killed, 40 misses more: a {} in all, backup {}",
        a.gets("/"),
        backup.gets("/")
    );
    assert_eq!((a.gets("/"), backup.gets("/")), (50, 0));
    assert!(relay.wait_log("marked down", Duration::from_secs(2)));
    // a dies too: the backup answers.
    a.kill();
    for i in 80..120 {
        get(i);
    }
    wait_logged(&backup, 40);
    eprintln!(
        "a killed too, 40 misses more: the backup {}",
        backup.gets("/")
    );
    assert_eq!(backup.gets("/"), 40);
}

/// An active health check (`health_check`): a server whose check fails is taken out of the
/// pool before any client's request fails on it, and comes back once its check passes.
/// Two `http.server`s with the same objects; only one has the health file at first.
#[test]
fn a_server_failing_its_health_check_leaves_the_pool_and_comes_back() {
    let (da, db) = (TempDir::new("health-a"), TempDir::new("health-b"));
    let bodies: Vec<Vec<u8>> = (0..60)
        .map(|i| pattern(1000 + i * 7, 90 + i as u64))
        .collect();
    for dir in [&da, &db] {
        for (i, b) in bodies.iter().enumerate() {
            dir.write(&format!("o{i}.bin"), b);
        }
    }
    da.write("health.txt", b"ok\n");
    let a = PythonOrigin::start(da.path());
    let b = PythonOrigin::start(db.path());
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[[origin.http]]\n\
         url = \"http://origin.test\"\nservers = [{{ address = \"127.0.0.1:{}\" }}, \
         {{ address = \"127.0.0.1:{}\" }}]\n\
         health_check = {{ path = \"/health.txt\", interval_ms = 100, timeout_ms = 100, \
         fall = 2, rise = 2 }}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        a.port, b.port
    ));
    let b_addr = format!("127.0.0.1:{}", b.port);
    let up = |server: &str| {
        relay.metric(&format!(
            "relay_origin_server_up{{origin=\"origin.test/\",server=\"{server}\"}}"
        ))
    };
    assert!(
        relay.wait_log("fails its health check (status 404", Duration::from_secs(5)),
        "b's failing check was not noticed"
    );
    assert_eq!(up(&b_addr), Some(0.0));
    let get = |i: usize| {
        let got = fetch(&relay.url(&format!("/o{i}.bin")), &[]);
        assert_eq!(got.status, 200, "/o{i}.bin: {}", got.head);
        assert!(got.body == bodies[i], "/o{i}.bin: other bytes");
    };
    let objects = |p: &PythonOrigin| p.gets("/o");
    for i in 0..20 {
        get(i);
    }
    std::thread::sleep(Duration::from_millis(200));
    eprintln!(
        "b failing its check: 20 misses, {} to a, {} to b",
        objects(&a),
        objects(&b)
    );
    assert_eq!((objects(&a), objects(&b)), (20, 0));
    // Its health file back: b rejoins after two passing checks.
    db.write("health.txt", b"ok\n");
    assert!(
        relay.wait_log("passes its health check again", Duration::from_secs(5)),
        "b did not come back"
    );
    assert_eq!(up(&b_addr), Some(1.0));
    for i in 20..60 {
        get(i);
    }
    std::thread::sleep(Duration::from_millis(200));
    eprintln!(
        "b back: 40 misses more, a {} in all, b {}",
        objects(&a),
        objects(&b)
    );
    assert_eq!(objects(&b), 20);
    assert_eq!(objects(&a), 40);
}

/// A server that lets a URL's first-byte timeout pass (the test's origin, answering after
/// 2 s) is not asked that URL again: in a pool, the request goes on to the next server
/// (python's `http.server`) and its client gets the object; alone, one request reaches it
/// and its client gets a 504 at the timeout, where a retry on the same server would be slow
/// again and add to the load of a server already behind.
#[test]
fn a_slow_answer_is_asked_of_another_server_never_again_of_the_slow_one() {
    let files = TempDir::new("slow-pool-www");
    let slow = relay_tests::origin::Origin::start();
    slow.behaviour
        .head_delay_ms
        .store(2000, std::sync::atomic::Ordering::Relaxed);
    let bodies: Vec<Vec<u8>> = (0..6).map(|i| pattern(3000 + i, 7 + i as u64)).collect();
    for (i, b) in bodies.iter().enumerate() {
        files.write(&format!("o{i}.bin"), b);
        let object = relay_tests::origin::Object::new(b.clone(), &format!("\"o{i}\""));
        slow.put(&format!("/o{i}.bin"), object.clone());
        slow.put(&format!("/alone/o{i}.bin"), object);
    }
    let fast = PythonOrigin::start(files.path());
    let relay = Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n\
         [[origin.http]]\nurl = \"http://alone.test\"\nprefix = \"/alone/\"\n\
         servers = [{{ address = \"{slow}\" }}]\n\
         first_byte_timeout_ms = 300\nretries = 2\ndown_after_failures = 100\n\n\
         [[origin.http]]\nurl = \"http://pool.test\"\n\
         servers = [{{ address = \"{slow}\" }}, {{ address = \"127.0.0.1:{fast}\" }}]\n\
         first_byte_timeout_ms = 300\nretries = 2\ndown_after_failures = 100\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        slow = slow.addr,
        fast = fast.port
    ));
    for (i, body) in bodies.iter().enumerate() {
        let got = fetch(&relay.url(&format!("/o{i}.bin")), &[]);
        assert_eq!(got.status, 200, "/o{i}.bin: {}", got.head);
        assert!(got.body == *body, "/o{i}.bin: other bytes");
        assert!(
            slow.count(&format!("/o{i}.bin")) <= 1,
            "/o{i}.bin asked of the slow server {} times",
            slow.count(&format!("/o{i}.bin"))
        );
    }
    for i in 0..3 {
        let started = Instant::now();
        let got = fetch(&relay.url(&format!("/alone/o{i}.bin")), &[]);
        let took = started.elapsed();
        assert_eq!(got.status, 504, "/alone/o{i}.bin: {}", got.head);
        assert!(
            took < Duration::from_millis(1500),
            "504 after {took:?}, not at the 300 ms timeout"
        );
        assert_eq!(
            slow.count(&format!("/alone/o{i}.bin")),
            1,
            "one request of a slow URL"
        );
    }
}

//! Cache keys never let one request plant an object under another's: `Host` must be an
//! authority (RFC 9112 §3.2, RFC 9110 §7.2), an absolute-form target names its own authority,
//! path and query (RFC 9112 §3.2.2), and HTTP-origin and directory keys never meet.

use relay_tests::client::{Client, Response};
use relay_tests::origin::{Object, Origin};
use relay_tests::{Relay, TempDir};

/// A relay with one HTTP origin (`origin_extra` added to its table) and, when given, a
/// directory serving what the origin does not claim.
fn start(origin: &Origin, origin_extra: &str, directory: Option<&TempDir>) -> Relay {
    let dir = directory.map_or(String::new(), |d| {
        format!("directory = \"{}\"\n", d.path().display())
    });
    Relay::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[cache]\nchunk_size = 65536\n\
         memory_bytes = 16777216\n\n[origin]\n{dir}\n[[origin.http]]\nurl = \"{}\"\n\
         first_byte_timeout_ms = 2000\nretries = 0\n{origin_extra}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    ))
}

/// One request (its head as written, CRLFs included) on a connection of its own.
fn ask(relay: &Relay, head: &str) -> Response {
    let mut c = Client::connect(relay.addr);
    c.send(head.as_bytes());
    c.read_response(false).expect("a response")
}

fn text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn w1_a_host_with_a_path_cannot_plant_an_object_under_another_path() {
    let origin = Origin::start();
    origin.put("/obj/app.js", Object::new(b"planted".to_vec(), "p"));
    origin.put("/v3/obj/app.js", Object::new(b"genuine".to_vec(), "g"));
    let relay = start(&origin, "", None);
    // Host + target would read "victim.example/v3/obj/app.js" under the old keys.
    let plant = ask(
        &relay,
        "GET /obj/app.js HTTP/1.1\r\nHost: victim.example/v3\r\n\r\n",
    );
    let r = ask(
        &relay,
        "GET /v3/obj/app.js HTTP/1.1\r\nHost: victim.example\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), "genuine", "the victim got a planted object");
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    assert_eq!(plant.status, 400, "a Host with a path was accepted");
    assert_eq!(origin.count("/obj/app.js"), 0);
}

#[test]
fn w1_hosts_are_validated_and_normalised_into_the_key() {
    let origin = Origin::start();
    origin.put("/a", Object::new(b"a".to_vec(), "a"));
    let relay = start(&origin, "", None);
    for bad in [
        "victim.example/v3",
        "user@victim.example",
        "victim example",
        "victim.example:80x",
        "victim.example:65536",
        "[::1",
        "victim.example?x",
    ] {
        let r = ask(&relay, &format!("GET /a HTTP/1.1\r\nHost: {bad}\r\n\r\n"));
        assert_eq!(r.status, 400, "Host {bad:?} was accepted");
    }
    let r = ask(&relay, "GET /a HTTP/1.1\r\nHost: Example.COM.:80\r\n\r\n");
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    // Case, a trailing dot and the default port name the same origin.
    for same in ["example.com", "EXAMPLE.com:80", "example.com."] {
        let r = ask(&relay, &format!("GET /a HTTP/1.1\r\nHost: {same}\r\n\r\n"));
        assert_eq!(r.header("cache-status"), Some("relay; hit"), "{same}");
    }
    // Another port or host is another resource.
    for other in ["example.com:8080", "www.example.com", "[::1]:80"] {
        let r = ask(&relay, &format!("GET /a HTTP/1.1\r\nHost: {other}\r\n\r\n"));
        assert_eq!(
            r.header("cache-status"),
            Some("relay; fwd=uri-miss; fwd-status=200; stored"),
            "{other}"
        );
    }
    assert_eq!(origin.count("/a"), 4);
}

#[test]
fn w2_an_http_origin_object_is_never_a_directory_file() {
    let origin = Origin::start();
    origin.put("/x", Object::new(b"from the origin".to_vec(), "o"));
    origin.put("/api/x", Object::new(b"from the origin".to_vec(), "o"));
    let dir = TempDir::new("keys-dir");
    dir.write("x", b"from the directory");
    dir.write("static/api/x", b"from the directory");
    // The origin claims only requests with an empty Host (RFC 9112 §3.2 allows one); the
    // directory serves the rest.
    let relay = start(&origin, "host = \"\"\n", Some(&dir));
    let r = ask(&relay, "GET /x HTTP/1.1\r\nHost:\r\n\r\n");
    assert_eq!(text(&r), "from the origin");
    let r = ask(&relay, "GET /x HTTP/1.1\r\nHost: files.example\r\n\r\n");
    assert_eq!(
        text(&r),
        "from the directory",
        "the origin's object was served"
    );
    // And the other way round: a directory file is not the origin's object.
    let r = ask(&relay, "GET /x HTTP/1.1\r\nHost:\r\n\r\n");
    assert_eq!(text(&r), "from the origin");
    assert_eq!(r.header("cache-status"), Some("relay; hit"));

    // A Host that is a path put the origin's answer under a directory path.
    let relay = start(&origin, "prefix = \"/api\"\n", Some(&dir));
    let r = ask(&relay, "GET /api/x HTTP/1.1\r\nHost: /static\r\n\r\n");
    assert_eq!(r.status, 400, "a Host that is a path was accepted");
    let r = ask(&relay, "GET /static/api/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        text(&r),
        "from the directory",
        "the origin's object was served"
    );
}

#[test]
fn an_absolute_form_target_names_the_authority_path_and_query() {
    let origin = Origin::start();
    origin.put("/p", Object::new(b"no query".to_vec(), "p"));
    origin.put("/p?q=1", Object::new(b"query 1".to_vec(), "q"));
    let relay = start(&origin, "host = \"cdn.example\"\n", None);
    // The target's authority, not Host, picks the origin (RFC 9112 §3.2.2); its query goes
    // upstream and into the key.
    let r = ask(
        &relay,
        "GET http://CDN.example/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), "query 1");
    assert_eq!(origin.count("/p?q=1"), 1);
    let r = ask(&relay, "GET /p?q=1 HTTP/1.1\r\nHost: cdn.example\r\n\r\n");
    assert_eq!(text(&r), "query 1");
    assert_eq!(r.header("cache-status"), Some("relay; hit"));
    let r = ask(&relay, "GET /p HTTP/1.1\r\nHost: cdn.example\r\n\r\n");
    assert_eq!(text(&r), "no query");
    // An unsafe method in absolute-form invalidates what it names (RFC 9111 §4.4).
    let r = ask(
        &relay,
        "PUT http://cdn.example/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\
         Content-Length: 5\r\n\r\nnewer",
    );
    assert_eq!(r.status, 200);
    let r = ask(&relay, "GET /p?q=1 HTTP/1.1\r\nHost: cdn.example.\r\n\r\n");
    assert_eq!(text(&r), "newer");
    assert_eq!(
        r.header("cache-status"),
        Some("relay; fwd=uri-miss; fwd-status=200; stored")
    );
    // An empty path is "/"; the query stays.
    let r = ask(
        &relay,
        "GET http://cdn.example?q=1 HTTP/1.1\r\nHost: cdn.example\r\n\r\n",
    );
    assert_eq!(r.status, 404);
    assert_eq!(origin.count("/?q=1"), 1);
    for bad in [
        "https://cdn.example/p",
        "ftp://cdn.example/p",
        "http://user@cdn.example/p",
        "http:///p",
        "http://cdn.example:x/p",
    ] {
        let r = ask(
            &relay,
            &format!("GET {bad} HTTP/1.1\r\nHost: cdn.example\r\n\r\n"),
        );
        assert_eq!(r.status, 400, "{bad} was accepted");
    }
}

/// Field values that are not UTF-8 each select their own variant: `caf\xe9`, `caf\xe8` and
/// the `caf\u{fffd}` a lossy copy makes of both never share one (the first to ask would fill
/// it for the others). Each reaches the origin; each is then a hit of its own.
#[test]
fn values_that_are_not_utf8_select_variants_of_their_own() {
    let origin = Origin::start();
    let mut o = Object::new(b"varies on the agent".to_vec(), "ua");
    o.extra_headers = vec![
        ("Vary".into(), "User-Agent".into()),
        ("Cache-Control".into(), "max-age=600".into()),
    ];
    origin.put("/ua", o);
    let relay = start(&origin, "", None);
    let agents: [&[u8]; 3] = [b"caf\xe9", b"caf\xe8", "caf\u{fffd}".as_bytes()];
    let ask_as = |agent: &[u8]| {
        let mut head = b"GET /ua HTTP/1.1\r\nHost: a.example\r\nUser-Agent: ".to_vec();
        head.extend_from_slice(agent);
        head.extend_from_slice(b"\r\n\r\n");
        let mut c = Client::connect(relay.addr);
        c.send(&head);
        c.read_response(false).expect("a response")
    };
    let mut asked = 0;
    for (i, agent) in agents.iter().enumerate() {
        let r = ask_as(agent);
        assert_eq!(r.status, 200);
        let now = origin.count("/ua");
        assert!(now > asked, "agent {i} was served another's variant");
        asked = now;
    }
    for agent in agents {
        let r = ask_as(agent);
        let status = r.header("cache-status").unwrap_or_default().to_string();
        assert!(status.contains("hit"), "{status}");
    }
    assert_eq!(origin.count("/ua"), asked, "each variant is stored");
}

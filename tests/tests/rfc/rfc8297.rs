//! RFC 8297: an origin's 103 Early Hints reach the clients waiting on its answer.

use crate::kit::*;
use relay_tests::fetch;

#[test]
fn rfc8297_an_origins_early_hints_reach_the_clients_waiting_on_its_answer() {
    let node = Node::start();
    let relay = node.relay();
    let got = get(&relay, "/hints");
    assert!(
        got.head.starts_with("HTTP/1.1 103 Early Hints\r\n"),
        "{}",
        got.head
    );
    assert!(
        got.head
            .contains("link: </style.css>; rel=preload; as=style\r\n")
    );
    assert_eq!(
        (got.status, &got.body[..]),
        (200, &b"hinted"[..]),
        "{}",
        got.head
    );
    // Stored: a hit has no interim answer; nor does an HTTP/1.0 client ever get one.
    let again = get(&relay, "/hints");
    assert!(again.head.starts_with("HTTP/1.1 200"), "{}", again.head);
    let old = fetch(&relay.url("/hints?v=1.0"), &["--http1.0"]);
    assert!(old.head.starts_with("HTTP/1.1 200"), "{}", old.head);
    assert_eq!(old.body, b"hinted");
}

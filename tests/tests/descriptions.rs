//! Stored response descriptions (the meta cache) are bounded by bytes, not by count: an
//! origin whose answers carry large heads, asked for many distinct URLs (a client varying
//! the query string), cannot grow relay past `cache.meta_bytes` (64 MiB by default;
//! docs/MEMORY.md). A head too large to keep is passed to its client and not stored.

use relay_tests::Relay;
use relay_tests::client::Client;
use relay_tests::origin::{Object, Origin};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// `cache.meta_bytes` when omitted.
const META_BYTES: u64 = 64 * MIB;

/// What comes and goes besides the descriptions: the allocator's pages (relay's heap is in
/// 2 MiB transparent huge pages), the upstream's connections and buffers, the clients'.
const SLACK: u64 = 40 * MIB;

fn config(origin: &Origin) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\n[cache]\nchunk_size = 65536\n\
         memory_bytes = 67108864\n\n[origin]\n\n[[origin.http]]\nurl = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n",
        origin.url()
    )
}

/// `count` objects `/o?i=N`, each answering `max-age=3600` with an `X-Pad` field of `pad`
/// bytes.
fn padded_origin(count: usize, pad: usize) -> Origin {
    let origin = Origin::start();
    for i in 0..count {
        let mut o = Object::new(format!("body {i}\n").into_bytes(), &format!("e{i}"));
        o.cache_control = Some("max-age=3600".into());
        o.extra_headers = vec![("X-Pad".into(), "p".repeat(pad))];
        origin.put(&format!("/o?i={i}"), o);
    }
    origin
}

/// Asks for `/o?i=N` for every N in `range`, on 4 keep-alive connections at once; every
/// answer is the object, with its whole `X-Pad`.
fn ask_all(relay: &Relay, range: std::ops::Range<usize>, pad: usize) {
    let all: Vec<usize> = range.collect();
    std::thread::scope(|s| {
        for part in all.chunks(all.len().div_ceil(4)) {
            s.spawn(move || {
                let mut c = Client::connect(relay.addr);
                for i in part {
                    let r = c.get(&format!("/o?i={i}"));
                    assert_eq!(r.status, 200, "/o?i={i}");
                    assert_eq!(r.body, format!("body {i}\n").into_bytes(), "/o?i={i}");
                    assert_eq!(r.header("x-pad").map(str::len), Some(pad), "/o?i={i}");
                }
            });
        }
    });
}

/// RSS after the workers had a moment to hand freed pages back.
fn settled_rss(relay: &Relay) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..4 {
        drop(Client::connect(relay.addr)); // a close: workers ask the allocator
    }
    std::thread::sleep(Duration::from_millis(500));
    relay.rss()
}

/// 3,000 URLs whose answers carry a 40 KB field: about 120 MB of descriptions asked for,
/// held to the 64 MiB of `cache.meta_bytes`. (Bounded by count, relay held them all, each
/// twice over: +240 MB.)
#[test]
fn descriptions_of_many_urls_with_large_heads_stay_within_meta_bytes() {
    const URLS: usize = 3000;
    const PAD: usize = 40_000;
    let origin = padded_origin(URLS, PAD);
    let relay = Relay::start(&config(&origin));
    let started = Instant::now();
    ask_all(&relay, 0..8, PAD);
    let base = settled_rss(&relay);
    ask_all(&relay, 8..URLS, PAD);
    let grown = settled_rss(&relay).saturating_sub(base);
    let held = relay.metric("relay_cache_descriptions_bytes");
    let limit = relay.metric("relay_cache_descriptions_limit_bytes");
    eprintln!(
        "{URLS} URLs with {PAD} B heads in {:?}: RSS +{} MiB; descriptions {:?} of {:?} \
         bytes",
        started.elapsed(),
        grown >> 20,
        held,
        limit
    );
    assert!(
        grown <= META_BYTES + SLACK,
        "RSS grew by {} MiB for descriptions bounded to {} MiB (+{} MiB slack)",
        grown >> 20,
        META_BYTES >> 20,
        SLACK >> 20
    );
    if let (Some(held), Some(limit)) = (held, limit) {
        assert_eq!(limit, META_BYTES as f64);
        assert!(held <= limit, "{held} of {limit}");
        // Most of the budget is used: the bound drops descriptions, not far more.
        assert!(held >= limit / 2.0, "{held} of {limit}");
    }
}

/// Answers whose head (a 100 KB field) would make a description heavier than 64 KiB are
/// passed to their client whole and not stored: 1,000 such URLs hold nothing. (Stored, they
/// took +200 MB.)
#[test]
fn a_head_too_large_to_keep_is_passed_on_and_not_stored() {
    const URLS: usize = 1000;
    const PAD: usize = 100_000;
    let origin = padded_origin(URLS, PAD);
    let relay = Relay::start(&config(&origin));
    ask_all(&relay, 0..8, PAD);
    let base = settled_rss(&relay);
    ask_all(&relay, 8..URLS, PAD);
    let grown = settled_rss(&relay).saturating_sub(base);
    eprintln!("{URLS} URLs with {PAD} B heads: RSS +{} MiB", grown >> 20);
    assert!(
        grown <= SLACK,
        "RSS grew by {} MiB for answers that are not stored",
        grown >> 20
    );
    if let Some(refused) = relay.metric("relay_cache_descriptions_refused_total") {
        assert!(refused >= URLS as f64, "{refused} refused");
    }
    // Asked again, each goes to the origin again, and its client gets the whole head.
    ask_all(&relay, 0..4, PAD);
    assert_eq!(origin.count("/o?i=0"), 2, "not stored");
}

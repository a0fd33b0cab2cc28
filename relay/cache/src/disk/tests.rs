//! Tests of the disk tier against real files in temporary directories: round trips through
//! both the plan API and the blocking one, restart, torn writes, corruption, eviction,
//! scan resistance, admission, and the startup time for 10,000 chunks.

use super::*;
use crate::key::ChunkRef;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("relay-disk-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    fn config(&self, capacity: u64) -> DiskConfig {
        let mut c = DiskConfig::new(self.0.join("cache"), capacity);
        c.chunk_size = 64 * 1024;
        c
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const MIB: u64 = 1 << 20;

fn key(object: &str, index: u64) -> ChunkRef<'_> {
    ChunkRef {
        object,
        version: 7,
        index,
    }
}

fn info<'a>(key: ChunkRef<'a>, meta: &'a [u8]) -> ChunkInfo<'a> {
    ChunkInfo {
        key,
        object_len: 100 * MIB,
        etag: "\"e-1\"",
        last_modified: "Sun, 06 Nov 1994 08:49:37 GMT",
        meta,
    }
}

/// Deterministic bytes that differ per seed.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every chunk file under the directory, with its length.
fn chunk_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "chunk") {
                out.push((p.clone(), e.metadata().expect("meta").len()));
            }
        }
    }
    out
}

fn path_of(tier: &DiskTier, k: ChunkRef<'_>) -> PathBuf {
    tier.locate(&k).expect("indexed").path
}

fn flip(path: &Path, at: u64) {
    let mut b = fs::read(path).expect("read");
    b[at as usize] ^= 0x20;
    fs::write(path, b).expect("write");
}

fn truncate(path: &Path, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.set_len(len).expect("truncate");
}

#[test]
fn round_trip_blocking() {
    let t = TempDir::new("rt");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let b = body(1, 300_000);
    tier.put(&info(key("a.org/x", 0), b"rfc9111"), &b)
        .expect("put");
    let got = tier.get(&key("a.org/x", 0)).expect("get").expect("hit");
    assert_eq!(got.body, b);
    assert_eq!(got.header.key, key("a.org/x", 0).to_owned_key());
    assert_eq!(got.header.meta, b"rfc9111");
    assert_eq!(got.header.etag, "\"e-1\"");
    assert_eq!(got.header.object_len, 100 * MIB);
    assert_eq!(
        got.header.body_offset % BLOCK,
        0,
        "a large body is block aligned"
    );
    assert_eq!(got.hits, 1);
    assert_eq!(
        tier.get(&key("a.org/x", 0)).expect("get").map(|c| c.hits),
        Some(2)
    );
    assert!(tier.get(&key("a.org/x", 1)).expect("get").is_none());
    assert!(
        tier.get(&ChunkRef {
            version: 8,
            ..key("a.org/x", 0)
        })
        .expect("get")
        .is_none()
    );
    let v = tier.object("a.org/x").expect("object");
    assert_eq!((v.version, v.object_len, v.chunks), (7, 100 * MIB, 1));
    let s = tier.stats();
    assert_eq!((s.writes, s.reads, s.entries), (1, 2, 1));
    assert_eq!(s.usage, (300_000 + BLOCK).div_ceil(BLOCK) * BLOCK);
    // Nothing is left in tmp/, and exactly one chunk file exists.
    assert_eq!(
        fs::read_dir(tier.root().join("tmp")).expect("tmp").count(),
        0
    );
    assert_eq!(chunk_files(tier.root()).len(), 1);
}

/// The io_uring path, done by hand: the tier plans, the "caller" does each syscall.
#[test]
fn round_trip_through_the_plan_api() {
    let t = TempDir::new("plan");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let b = body(2, 1000);
    let k = key("p.org/y", 3);
    let plan = tier.plan_write(&info(k, b"m"), &b).expect("plan");
    assert_eq!(plan.header.len() as u64, plan.body_offset);
    fs::write(&plan.temp_path, [&plan.header[..], &b[..]].concat()).expect("write");
    assert!(
        tier.locate(&k).is_none(),
        "invisible before the rename and commit"
    );
    fs::rename(&plan.temp_path, &plan.final_path).expect("rename");
    tier.commit_write(&plan);

    let rp = tier.locate(&k).expect("located");
    assert_eq!((rp.offset, rp.len), (0, plan.file_len()));
    assert_eq!(rp.expected_checksum, checksum(&b));
    let bytes = fs::read(&rp.path).expect("read");
    let v = tier.verify(&rp, &bytes).expect("verified");
    assert_eq!(&bytes[v.body.clone()], &b[..]);
    assert_eq!(v.body.start as u64, rp.body_offset);

    // An aborted write leaves no file behind once the caller unlinks what it is told to.
    let plan2 = tier
        .plan_write(&info(key("p.org/y", 4), b""), &b)
        .expect("plan");
    fs::write(&plan2.temp_path, &plan2.header).expect("half a write");
    tier.abort_write(&plan2);
    let mut unlinks = Vec::new();
    tier.drain_unlinks(&mut unlinks);
    assert_eq!(unlinks, vec![plan2.temp_path.clone()]);
    for p in unlinks {
        fs::remove_file(p).expect("unlink");
    }
    assert!(!tier.contains(&key("p.org/y", 4)));
}

/// Every single flipped byte and every truncation of a stored file is caught by
/// `ReadPlan::check`, header or body.
#[test]
fn check_rejects_every_flipped_byte_and_every_truncation() {
    let t = TempDir::new("flipall");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let k = key("f.org/z", 0);
    tier.put(&info(k, b"meta!"), &body(3, 200)).expect("put");
    let rp = tier.locate(&k).expect("located");
    let bytes = fs::read(&rp.path).expect("read");
    assert!(rp.check(&bytes).is_ok());
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        assert!(rp.check(&b).is_err(), "flip at {at} passed");
        assert!(rp.check(&bytes[..at]).is_err(), "truncation at {at} passed");
    }
}

/// The same for a file read as header and body apart (the body read straight into the
/// memory it is sent from): every flip, every short part and a wrong split are caught.
#[test]
fn check_parts_rejects_every_flipped_byte_short_part_and_wrong_split() {
    let t = TempDir::new("flipparts");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let k = key("f.org/parts", 0);
    tier.put(&info(k, b"meta!"), &body(5, 3_000)).expect("put");
    let rp = tier.locate(&k).expect("located");
    let bytes = fs::read(&rp.path).expect("read");
    let split = rp.body_offset as usize;
    let (head, tail) = bytes.split_at(split);
    assert_eq!(tail.len() as u64, rp.body_len);
    assert!(rp.check_parts(head, tail).is_ok());
    assert!(tier.verify_parts(&rp, head, tail).is_ok());
    // Bodies of 64 KiB and more start on a block boundary; zeros between header and body
    // would be padding that is never served (none here: a small body follows its header).
    let header_len = format::header_len(&bytes).expect("header length");
    assert!(header_len <= split);
    for at in (0..header_len).chain(split..bytes.len()) {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        let (h, t) = b.split_at(split);
        assert!(rp.check_parts(h, t).is_err(), "flip at {at} passed");
    }
    assert!(rp.check_parts(&head[..split - 1], tail).is_err());
    assert!(rp.check_parts(head, &tail[1..]).is_err());
    assert!(rp.check_parts(&bytes[..split + 1], &tail[1..]).is_err());
    assert!(rp.check_parts(&[], &bytes).is_err());
}

#[test]
fn flipped_byte_in_body_and_in_header_is_detected_dropped_and_counted() {
    let t = TempDir::new("flip");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let b = body(4, 100_000);
    for i in 0..6 {
        tier.put(&info(key("c.org/o", i), b"m"), &b).expect("put");
    }
    let header_len = {
        let p = path_of(&tier, key("c.org/o", 0));
        decode_header(&fs::read(p).expect("read"))
            .expect("header")
            .header_len
    };
    // Body, then five places in the header: magic, a length, the version, the key, the
    // header checksum.
    let spots = [BLOCK + 5000, 0, 20, 45, 90, header_len - 1];
    let mut seen = Vec::new();
    for (i, at) in spots.into_iter().enumerate() {
        let k = key("c.org/o", i as u64);
        let p = path_of(&tier, k);
        flip(&p, at);
        match tier.get(&k) {
            Err(DiskError::Corrupt(c)) => seen.push(c),
            other => panic!("flip at {at}: {other:?}"),
        }
        assert!(!p.exists(), "corrupt file deleted");
        assert!(!tier.contains(&k), "and dropped from the index");
        assert!(tier.get(&k).expect("get").is_none(), "a miss now: refetch");
    }
    assert_eq!(seen[0], Corruption::BodyChecksum);
    assert_eq!(seen[1], Corruption::BadMagic);
    assert!(seen[2..].iter().all(|c| *c != Corruption::BodyChecksum));
    let s = tier.stats();
    assert_eq!((s.corrupt, s.entries), (6, 0));
    assert!(chunk_files(tier.root()).is_empty());
}

/// The index comes back from headers alone: a body corrupted while the relay was down is
/// not noticed at start (bodies are not read) but is caught by the first read.
#[test]
fn restart_rebuilds_the_index_from_headers_only() {
    let t = TempDir::new("restart");
    let cfg = t.config(64 * MIB);
    let body_len = 64 * 1024;
    let mut last_generation = 0;
    {
        let tier = DiskTier::open(&cfg).expect("open");
        for o in 0..5 {
            for i in 0..10 {
                let obj = format!("r.org/{o}");
                tier.put(
                    &info(key(&obj, i), format!("meta {o}").as_bytes()),
                    &body(o * 100 + i, body_len),
                )
                .expect("put");
            }
        }
        last_generation =
            last_generation.max(tier.locate(&key("r.org/4", 9)).expect("held").generation);
    }
    let victim = {
        let files = chunk_files(&cfg.dir);
        assert_eq!(files.len(), 50);
        let tier = DiskTier::open(&cfg).expect("reopen");
        let p = path_of(&tier, key("r.org/2", 5));
        drop(tier);
        flip(&p, BLOCK + 1234);
        p
    };
    let tier = DiskTier::open(&cfg).expect("reopen");
    let r = tier.recovery().clone();
    assert_eq!((r.files_scanned, r.loaded, r.dropped_corrupt), (50, 50, 0));
    assert!(
        r.bytes_read <= 50 * HEADER_PROBE as u64,
        "read {} bytes: headers only (bodies hold {})",
        r.bytes_read,
        50 * body_len
    );
    for o in 0..5u64 {
        let obj = format!("r.org/{o}");
        let v = tier.object(&obj).expect("object known after restart");
        assert_eq!((v.version, v.chunks), (7, 10));
        for i in 0..10 {
            let got = tier.get(&key(&obj, i));
            if (o, i) == (2, 5) {
                assert!(matches!(
                    got,
                    Err(DiskError::Corrupt(Corruption::BodyChecksum))
                ));
                assert!(!victim.exists());
            } else {
                let got = got.expect("get").expect("hit");
                assert_eq!(got.body, body(o * 100 + i, body_len));
                assert_eq!(got.header.meta, format!("meta {o}").as_bytes());
            }
        }
    }
    // Generations resume above everything on disk, so new names never collide.
    tier.put(&info(key("r.org/new", 0), b""), &body(9, 10))
        .expect("put");
    assert!(tier.locate(&key("r.org/new", 0)).expect("held").generation > last_generation);
}

#[test]
fn torn_files_are_never_served_and_are_cleaned_at_start() {
    let t = TempDir::new("torn");
    let cfg = t.config(64 * MIB);
    let body_len = 70_000u64; // aligned body: there is padding between header and body
    let cuts: Vec<Box<dyn Fn(u64, u64) -> u64>> = vec![
        Box::new(|_, _| 0),
        Box::new(|_, _| 1),
        Box::new(|_, _| 40),
        Box::new(|_, _| 87),
        Box::new(|_, _| 88),
        Box::new(|h, _| h - 1),
        Box::new(|h, _| h),
        Box::new(|_, f| BLOCK + (f - BLOCK) / 2),
        Box::new(|_, f| f - 1),
    ];
    let n = cuts.len() as u64;
    let mut paths = Vec::new();
    {
        let tier = DiskTier::open(&cfg).expect("open");
        for i in 0..=n + 1 {
            tier.put(&info(key("t.org/o", i), b""), &body(i, body_len as usize))
                .expect("put");
        }
        for i in 0..=n + 1 {
            paths.push(path_of(&tier, key("t.org/o", i)));
        }
        // A write cut short by kill -9: a temp file that was never renamed.
        let plan = tier
            .plan_write(&info(key("t.org/o", 99), b""), &body(99, 5000))
            .expect("plan");
        fs::write(&plan.temp_path, &plan.header[..50]).expect("partial write");
    }
    let header_len = decode_header(&fs::read(&paths[0]).expect("read"))
        .expect("hdr")
        .header_len;
    let file_len = BLOCK + body_len;
    for (i, cut) in cuts.iter().enumerate() {
        truncate(&paths[i], cut(header_len, file_len));
    }
    // And one file grown by garbage after its end.
    let mut grown = fs::read(&paths[n as usize]).expect("read");
    grown.extend_from_slice(b"garbage");
    fs::write(&paths[n as usize], grown).expect("write");

    let tier = DiskTier::open(&cfg).expect("reopen");
    let r = tier.recovery();
    assert_eq!(r.temp_removed, 1);
    assert_eq!(r.dropped_corrupt, n + 1);
    assert_eq!(r.loaded, 1);
    for (i, p) in paths.iter().enumerate().take(n as usize + 1) {
        assert!(!p.exists(), "torn file {i} deleted");
        assert!(tier.get(&key("t.org/o", i as u64)).expect("get").is_none());
    }
    assert!(!tier.contains(&key("t.org/o", 99)));
    assert_eq!(fs::read_dir(cfg.dir.join("tmp")).expect("tmp").count(), 0);

    // Torn while running (truncated behind the tier's back): caught by the read.
    let last = key("t.org/o", n + 1);
    truncate(&paths[n as usize + 1], file_len - 10);
    assert!(matches!(
        tier.get(&last),
        Err(DiskError::Corrupt(Corruption::Truncated { .. }))
    ));
    assert_eq!(tier.stats().corrupt, 1);
    assert!(tier.is_empty());
}

#[test]
fn a_vanished_file_is_a_counted_miss() {
    let t = TempDir::new("gone");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    tier.put(&info(key("v.org", 0), b""), b"abc").expect("put");
    fs::remove_file(path_of(&tier, key("v.org", 0))).expect("rm");
    assert!(tier.get(&key("v.org", 0)).expect("get").is_none());
    assert_eq!(tier.stats().missing, 1);
    assert!(!tier.contains(&key("v.org", 0)));
}

#[test]
fn eviction_keeps_usage_within_capacity_on_disk_too() {
    let t = TempDir::new("evict");
    let capacity = 40 * BLOCK;
    let tier = DiskTier::open(&t.config(capacity)).expect("open");
    for i in 0..200 {
        tier.put(&info(key("e.org", i), b""), &body(i, 3000))
            .expect("put");
        assert!(
            tier.usage() <= capacity,
            "usage {} over {capacity}",
            tier.usage()
        );
    }
    let files = chunk_files(tier.root());
    let on_disk: u64 = files.iter().map(|(_, l)| l.div_ceil(BLOCK) * BLOCK).sum();
    assert!(on_disk <= capacity, "{on_disk} bytes of files on disk");
    assert_eq!(files.len(), tier.len());
    let s = tier.stats();
    assert_eq!(s.evicted as usize + s.entries, 200);
    assert!(s.entries >= 30, "only {} chunks kept", s.entries);

    // Shrinking evicts at once, and a chunk larger than the tier is refused.
    tier.set_capacity(10 * BLOCK);
    tier.unlink_pending();
    assert!(tier.usage() <= 10 * BLOCK);
    assert_eq!(chunk_files(tier.root()).len(), tier.len());
    assert!(matches!(
        tier.put(&info(key("e.org/big", 0), b""), &body(1, 50_000)),
        Err(DiskError::TooLarge { .. })
    ));
    assert_eq!(tier.stats().rejected, 1);
    drop(tier);

    // Reopened with less room: the oldest chunks go.
    let tier = DiskTier::open(&t.config(4 * BLOCK)).expect("reopen");
    assert_eq!(tier.recovery().dropped_over_capacity, 6);
    assert_eq!(chunk_files(tier.root()).len(), 4);
}

#[test]
fn scan_does_not_flush_hot_chunks() {
    let t = TempDir::new("scan");
    let tier = DiskTier::open(&t.config(64 * BLOCK)).expect("open");
    for round in 0..4 {
        for i in 0..16 {
            let k = key("hot", i);
            if tier.get(&k).expect("get").is_none() {
                tier.put(&info(k, b""), &body(i, 2000)).expect("put");
            }
        }
        for i in 0..200 {
            tier.put(&info(key("scan", round * 1000 + i), b""), &body(i, 2000))
                .expect("put");
        }
    }
    let hot = (0..16).filter(|&i| tier.contains(&key("hot", i))).count();
    assert!(hot >= 12, "only {hot}/16 hot chunks survived the scans");
}

#[test]
fn replacing_a_chunk_keeps_one_file_and_the_newest_meta() {
    let t = TempDir::new("replace");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let k = key("u.org", 0);
    tier.put(&info(k, b"old"), b"same bytes").expect("put");
    tier.put(&info(k, b"new"), b"same bytes").expect("put");
    assert_eq!(chunk_files(tier.root()).len(), 1);
    assert_eq!(tier.get(&k).expect("get").expect("hit").header.meta, b"new");
    assert_eq!(tier.stats().replaced, 1);
    assert_eq!(tier.object("u.org").map(|v| v.chunks), Some(1));
}

/// A crash between the rename of a new file and the unlink of the one it replaced leaves
/// two files for one chunk: the newer generation wins at start.
#[test]
fn two_files_for_one_chunk_the_newer_wins_at_start() {
    let t = TempDir::new("dup");
    let cfg = t.config(64 * MIB);
    let k = key("d.org", 0);
    let (old_path, old_bytes) = {
        let tier = DiskTier::open(&cfg).expect("open");
        tier.put(&info(k, b"old"), b"bytes").expect("put");
        let p = path_of(&tier, k);
        let b = fs::read(&p).expect("read");
        tier.put(&info(k, b"new"), b"bytes").expect("put");
        assert!(!p.exists(), "replaced file unlinked");
        (p, b)
    };
    fs::write(&old_path, old_bytes).expect("restore the old file");
    let tier = DiskTier::open(&cfg).expect("reopen");
    assert_eq!(tier.recovery().dropped_duplicate, 1);
    assert!(!old_path.exists());
    assert_eq!(tier.get(&k).expect("get").expect("hit").header.meta, b"new");
}

#[test]
fn purge_by_key_object_and_prefix() {
    let t = TempDir::new("purge");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    for obj in ["s.org/a/1", "s.org/a/2", "s.org/b/1"] {
        for i in 0..3 {
            tier.put(&info(key(obj, i), b""), b"x").expect("put");
        }
    }
    assert!(tier.remove(&key("s.org/b/1", 0)));
    assert!(!tier.remove(&key("s.org/b/1", 0)));
    assert_eq!(tier.remove_object("s.org/a/1"), 3);
    assert_eq!(tier.remove_prefix("s.org/"), 5);
    tier.unlink_pending();
    assert!(tier.is_empty());
    assert!(chunk_files(tier.root()).is_empty());
    assert!(tier.object("s.org/a/2").is_none());
}

/// A chunk whose bytes were taken before a removal that names its object (a write queued
/// before a purge or an invalidation) is refused at commit and its file unlinked at once: it never
/// brings back what was removed. A removal of another object, or one before the bytes were
/// taken, does not stop it; nor does a write taken after. One older than the removals the
/// tier remembers is refused whatever it is.
#[test]
fn a_write_taken_before_a_removal_of_its_object_never_lands() {
    let t = TempDir::new("removed");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let b = body(5, 1000);
    let write = |object: &str, index: u64, since: Option<u64>| {
        let k = key(object, index);
        let mut plan = tier.plan_write(&info(k, b"m"), &b).expect("plan");
        if let Some(s) = since {
            plan.since = s;
        }
        fs::write(&plan.temp_path, [&plan.header[..], &b[..]].concat()).expect("write");
        fs::rename(&plan.temp_path, &plan.final_path).expect("rename");
        (tier.commit_write(&plan), plan.final_path)
    };
    let before = tier.removals();
    assert_eq!(tier.remove_object("r.org/a"), 0);
    tier.remove_named(Removal::Variants("r.org/v".into()));
    tier.remove_named(Removal::Prefix("r.org/p/".into()));
    tier.remove_named(Removal::Version("r.org/ver".into(), 8));
    let (landed, path) = write("r.org/a", 0, Some(before));
    assert!(!landed, "taken before the object's removal");
    assert!(!tier.contains(&key("r.org/a", 0)));
    let (landed, _) = write("r.org/v\0accept-language=fr", 0, Some(before));
    assert!(!landed, "a variant of a key removed with its variants");
    let (landed, _) = write("r.org/p/x", 0, Some(before));
    assert!(!landed, "under a prefix removed");
    // Their files are gone at once (a crash now leaves nothing for the restart to load).
    assert!(!path.exists());
    assert_eq!(chunk_files(tier.root()).len(), 0);
    assert_eq!(tier.stats().refused_removed, 3);
    // Not named by any removal since, or taken after them: it lands.
    assert!(write("r.org/vv", 0, Some(before)).0, "another key");
    assert!(write("r.org/ver", 0, Some(before)).0, "another version (7)");
    assert!(write("r.org/a", 1, None).0, "taken after the removal");
    assert!(tier.contains(&key("r.org/a", 1)));
    // Past what the tier remembers: refused whatever it names.
    let old = tier.removals();
    for i in 0..=super::tier::REMOVALS_KEPT {
        tier.remove_object(&format!("r.org/gone/{i}"));
    }
    assert!(
        !write("r.org/other", 0, Some(old)).0,
        "older than every removal kept"
    );
    assert!(write("r.org/other", 0, None).0);
    // Unsafe methods to URIs never cached (nothing on disk, nothing known of them) are not
    // remembered: however many, they refuse no write queued before them.
    let queued = tier.removals();
    for i in 0..=super::tier::REMOVALS_KEPT {
        tier.remove_named_now(Removal::Variants(format!("r.org/api/{i}").into()), false);
    }
    assert!(
        write("r.org/static", 0, Some(queued)).0,
        "refused, though nothing named it"
    );
}

#[test]
fn one_relay_per_directory() {
    let t = TempDir::new("lock");
    let cfg = t.config(MIB);
    let tier = DiskTier::open(&cfg).expect("open");
    assert!(matches!(DiskTier::open(&cfg), Err(DiskError::Locked(_))));
    drop(tier);
    assert!(DiskTier::open(&cfg).is_ok());
}

/// What a caller does on a miss: record the request with the doorkeeper, fetch, and write
/// the chunk to disk only if admitted. One-hit wonders never reach the disk.
#[test]
fn admission_keeps_one_hit_wonders_off_the_disk() {
    let t = TempDir::new("admit");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let doorkeeper = Admission::new(10_000);
    let mut requests: Vec<(String, u64)> = (0..2000).map(|i| ("once".to_string(), i)).collect();
    for i in 0..50 {
        requests.insert(i as usize * 30, ("twice".to_string(), i));
        requests.push(("twice".to_string(), i));
    }
    for (obj, i) in &requests {
        let k = key(obj, *i);
        if tier.get(&k).expect("get").is_none() && doorkeeper.record(&k) {
            tier.put(&info(k, b""), &body(*i, 100)).expect("put");
        }
    }
    let twice = (0..50).filter(|&i| tier.contains(&key("twice", i))).count();
    let once = (0..2000)
        .filter(|&i| tier.contains(&key("once", i)))
        .count();
    assert_eq!(twice, 50);
    assert!(once <= 20, "{once} one-hit wonders written");
}

/// The startup figure: 10,000 small chunks, index rebuilt from their headers.
#[test]
fn startup_time_for_10000_chunks() {
    let t = TempDir::new("startup");
    let cfg = t.config(1 << 30);
    let n = 10_000u64;
    let write = Instant::now();
    {
        // Two writers at once: the tier is shared by workers, so this also exercises
        // concurrent plan/commit.
        let tier = DiskTier::open(&cfg).expect("open");
        std::thread::scope(|s| {
            for half in 0..2 {
                let tier = &tier;
                s.spawn(move || {
                    for i in (half..n).step_by(2) {
                        let obj = format!("s.org/obj-{}", i / 4);
                        let meta = b"cache-control: max-age=60";
                        tier.put(&info(key(&obj, i % 4), meta), &body(i, 1024))
                            .expect("put");
                    }
                });
            }
        });
        assert_eq!(tier.len() as u64, n);
    }
    let write = write.elapsed();
    let tier = DiskTier::open(&cfg).expect("reopen");
    let r = tier.recovery().clone();
    assert_eq!((r.loaded, r.dropped_corrupt), (n, 0));
    assert_eq!(tier.len() as u64, n);
    assert_eq!(tier.object("s.org/obj-17").map(|v| v.chunks), Some(4));
    println!(
        "disk tier startup: {n} chunks indexed in {:?} ({:.1} µs/chunk, {} bytes read, \
         {} threads, warm page cache); writing them took {write:?}",
        r.elapsed,
        r.elapsed.as_secs_f64() * 1e6 / n as f64,
        r.bytes_read,
        cfg.recovery_threads,
    );
    assert!(r.elapsed.as_secs() < 30, "startup took {:?}", r.elapsed);
    let got = tier
        .get(&key("s.org/obj-100", 2))
        .expect("get")
        .expect("hit");
    assert_eq!(got.body, body(402, 1024));
}

#[test]
fn odd_entries_do_not_stop_startup() {
    let t = TempDir::new("odd");
    let cfg = t.config(MIB);
    drop(DiskTier::open(&cfg).expect("open"));
    let leaf = cfg.dir.join("0").join("00");
    // A directory by a chunk's name (unreadable as a file), and a file the tier never names.
    fs::create_dir_all(leaf.join(format!("{:032x}-{:016x}.chunk", 0, 1))).expect("mkdir");
    fs::write(leaf.join("README"), b"not a chunk").expect("write");
    // A valid-looking name in the wrong directory.
    fs::write(
        cfg.dir
            .join("f")
            .join("ff")
            .join(format!("{:032x}-{:016x}.chunk", 0, 2)),
        b"x",
    )
    .expect("write");
    let tier = DiskTier::open(&cfg).expect("reopen despite odd entries");
    let r = tier.recovery();
    assert_eq!((r.unknown_files, r.dropped_corrupt, r.loaded), (1, 2, 0));
    assert!(
        leaf.join("README").exists(),
        "files the tier does not name are left alone"
    );
}

/// Two writes of one chunk committing the other way round (writers side by side): the one
/// numbered later stays, as a restart's recovery would keep it; the other's file goes.
#[test]
fn a_late_commit_of_an_older_write_does_not_replace_a_newer_one() {
    let t = TempDir::new("late-commit");
    let tier = DiskTier::open(&t.config(64 * MIB)).expect("open");
    let k = key("late.org", 0);
    let body = b"same bytes";
    let older = tier.plan_write(&info(k, b"old"), body).expect("plan");
    let newer = tier.plan_write(&info(k, b"new"), body).expect("plan");
    for plan in [&older, &newer] {
        fs::create_dir_all(plan.final_dir()).expect("dir");
        fs::write(&plan.final_path, [&plan.header[..], body].concat()).expect("write");
    }
    assert!(tier.commit_write(&newer));
    assert!(!tier.commit_write(&older), "refused: a later write is held");
    tier.unlink_pending();
    assert_eq!(tier.get(&k).expect("get").expect("hit").header.meta, b"new");
    assert!(!older.final_path.exists(), "the older write's file is gone");
    assert!(newer.final_path.exists());
}

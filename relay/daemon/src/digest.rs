//! This relay's digest (`relay_cluster::digest`): a thread looks at the chunks the cache
//! holds every [`LOOK`], and builds the digest again when at least [`REBUILD_SHARE`] of their
//! names changed since the last build, or any changed and the last build is [`MAX_AGE`]
//! old. Each build is served on the peer listener (`relay_server::digest::DigestSlot`) and
//! its ETag put in this relay's record, so the others fetch it only when it changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relay_cache::{Cache, Holdings};
use relay_cluster::digest::{Digest, chunk_name, name_hash};
use relay_server::digest::DigestSlot;

/// How often the cache's chunks are looked at (a scan only when a tier gained or lost a
/// chunk since the last).
const LOOK: Duration = Duration::from_secs(5);
/// The most chunks a digest names (memory first): about 2.4 MB of digest, and at most
/// about 50 ms of the disk index's lock to list them.
const MAX_KEYS: usize = 2 << 20;
/// The share of chunk names that changed which makes a new build.
const REBUILD_SHARE: usize = 50; // 1 in 50: 2%
/// The age after which any change makes a new build.
const MAX_AGE: Duration = Duration::from_secs(120);

/// The digest thread; stopped when dropped.
pub struct DigestKeeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DigestKeeper {
    pub fn start(
        holdings: Holdings,
        slot: Arc<DigestSlot>,
        etag: Arc<AtomicU64>,
    ) -> std::io::Result<DigestKeeper> {
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::Builder::new()
            .name("relay-digest".into())
            .spawn(move || keep(&holdings, &slot, &etag, &halt))?;
        Ok(DigestKeeper {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DigestKeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The hashes of the names of every chunk held, sorted, each once.
pub fn held_names(holdings: &Holdings) -> Vec<u64> {
    let mut name = Vec::new();
    let mut hashes: Vec<u64> = holdings
        .chunk_names(MAX_KEYS)
        .iter()
        .filter_map(|(object, index)| {
            chunk_name(Cache::peer_name(object)?.as_bytes(), *index, &mut name);
            Some(name_hash(&name))
        })
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    hashes
}

/// How many of two sorted sets' members are in one only.
fn changed(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => (i, j) = (i + 1, j + 1),
            std::cmp::Ordering::Less => (i, n) = (i + 1, n + 1),
            std::cmp::Ordering::Greater => (j, n) = (j + 1, n + 1),
        }
    }
    n + (a.len() - i) + (b.len() - j)
}

fn keep(holdings: &Holdings, slot: &DigestSlot, etag: &AtomicU64, stop: &AtomicBool) {
    let mut built: Option<(Vec<u64>, Instant)> = None;
    let mut seen: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        let changes = holdings.changes();
        if seen == Some(changes) {
            sleep_unless_stopped(stop);
            continue;
        }
        seen = Some(changes);
        let names = held_names(holdings);
        let due = match &built {
            None => true,
            Some((last, at)) => {
                let n = changed(last, &names);
                n > 0 && (n * REBUILD_SHARE >= last.len().max(1) || at.elapsed() >= MAX_AGE)
            }
        };
        if due {
            let started = Instant::now();
            let digest = Digest::build(names.clone());
            slot.set(digest.etag, digest.encode(), digest.keys);
            etag.store(digest.etag, Ordering::Relaxed);
            log::debug!(
                "digest {:016x}: {} chunks, {} bytes, built in {:?}",
                digest.etag,
                digest.keys,
                digest.size(),
                started.elapsed()
            );
            built = Some((names, Instant::now()));
        }
        sleep_unless_stopped(stop);
    }
}

/// [`LOOK`] asleep, in short steps so a stop is not kept waiting.
fn sleep_unless_stopped(stop: &AtomicBool) {
    let until = Instant::now() + LOOK;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn changes_between_two_sorted_sets_are_counted() {
        assert_eq!(super::changed(&[1, 2, 3], &[1, 2, 3]), 0);
        assert_eq!(super::changed(&[1, 2, 3], &[2, 3, 4]), 2);
        assert_eq!(super::changed(&[], &[5, 6]), 2);
        assert_eq!(super::changed(&[1, 9], &[]), 2);
    }
}

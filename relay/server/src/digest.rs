//! This relay's digest as its peers fetch it (`relay_cluster::digest`): the daemon builds it
//! from the cache now and then and puts each build here; a `GET` of
//! `relay_cluster::digest::PATH` on the peer listener, its credentials checked as for any
//! peer request, is answered with it (`ETag`, and 304 for an `If-None-Match` that names it).
//! Nothing on the client listener answers it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// The digest being served; empty until the first build.
#[derive(Default)]
pub struct DigestSlot {
    current: Mutex<Option<Served>>,
    /// Chunks in the build served, for `/metrics`.
    keys: AtomicU64,
}

/// One build as served: its ETag (quoted, as the field carries it) and its bytes.
#[derive(Clone)]
pub struct Served {
    pub etag: String,
    pub body: Bytes,
}

impl DigestSlot {
    /// Serves `bytes`, the digest named `etag` of `keys` chunks, from now on.
    pub fn set(&self, etag: u64, bytes: Vec<u8>, keys: usize) {
        self.keys.store(keys as u64, Ordering::Relaxed);
        let served = Served {
            etag: format!("\"{etag:016x}\""),
            body: Bytes::from(bytes),
        };
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(served);
    }

    /// Prometheus text: the chunks and bytes of the build served.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let bytes = self.get().map_or(0, |s| s.body.len());
        let _ = writeln!(
            out,
            "# HELP relay_digest_chunks Chunks in this relay's digest as served to the others.\n\
             # TYPE relay_digest_chunks gauge\nrelay_digest_chunks {}\n\
             # HELP relay_digest_bytes Bytes of this relay's digest as served.\n\
             # TYPE relay_digest_bytes gauge\nrelay_digest_bytes {bytes}",
            self.keys.load(Ordering::Relaxed)
        );
    }

    /// The digest being served, if one was built.
    pub fn get(&self) -> Option<Served> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

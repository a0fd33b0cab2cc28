//! Recovery at start: empty the temp directory, then read the header — and only the
//! header — of every chunk file, in parallel over the top-level directories. A file whose
//! header, name or length does not hold is deleted and counted; the rest become index
//! entries. Blocking std I/O: this runs once, before the event loops start.

use super::error::DiskError;
use super::format;
use super::index::Entry;
use crate::key::ChunkKey;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Chunk files whose header was read.
    pub files_scanned: u64,
    /// Chunks now in the index.
    pub loaded: u64,
    /// Bytes read from chunk files in all (headers only; bodies are verified on read).
    pub bytes_read: u64,
    /// Chunk files deleted because their header, name or length did not hold (torn or
    /// corrupted writes).
    pub dropped_corrupt: u64,
    /// Older files of a chunk that a newer file replaced (a crash between a rename and
    /// the unlink of the file it replaced).
    pub dropped_duplicate: u64,
    /// Files over the capacity (it shrank since the last run), evicted at start.
    pub dropped_over_capacity: u64,
    /// Leftover temp files of interrupted writes, deleted.
    pub temp_removed: u64,
    /// Files with names the tier does not use, left alone.
    pub unknown_files: u64,
    /// Wall time of the whole recovery.
    pub elapsed: Duration,
}

/// A valid chunk file found on disk.
pub(crate) struct Found {
    pub key: ChunkKey,
    pub entry: Entry,
    pub object_len: u64,
}

#[derive(Default)]
struct Partial {
    found: Vec<Found>,
    files: u64,
    bytes: u64,
    corrupt: u64,
    unknown: u64,
}

/// Deletes every file in the temp directory (creating it if missing).
pub(crate) fn clear_temp(root: &Path) -> Result<u64, DiskError> {
    let tmp = root.join(format::TEMP_DIR);
    fs::create_dir_all(&tmp).map_err(|e| DiskError::io("create", &tmp, e))?;
    let mut removed = 0;
    for ent in fs::read_dir(&tmp).map_err(|e| DiskError::io("read dir", &tmp, e))? {
        let ent = ent.map_err(|e| DiskError::io("read dir", &tmp, e))?;
        let path = ent.path();
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DiskError::io("remove", path, e)),
        }
    }
    Ok(removed)
}

/// Scans the 16 × 256 fan-out directories (creating missing ones) with `threads` threads.
pub(crate) fn scan(root: &Path, threads: usize) -> Result<(Vec<Found>, RecoveryReport), DiskError> {
    let threads = threads.clamp(1, 16);
    let parts: Vec<Result<Partial, DiskError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut p = Partial::default();
                    for top in (t..16).step_by(threads) {
                        for sub in 0..256u32 {
                            let dir = root.join(format!("{top:x}")).join(format!("{sub:02x}"));
                            scan_dir(&dir, top as u8, sub as u8, &mut p)?;
                        }
                    }
                    Ok(p)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(DiskError::io(
                        "scan",
                        root,
                        io::Error::other("recovery thread panicked"),
                    ))
                })
            })
            .collect()
    });
    let mut found = Vec::new();
    let mut report = RecoveryReport::default();
    for p in parts {
        let p = p?;
        found.extend(p.found);
        report.files_scanned += p.files;
        report.bytes_read += p.bytes;
        report.dropped_corrupt += p.corrupt;
        report.unknown_files += p.unknown;
    }
    Ok((found, report))
}

fn scan_dir(dir: &Path, top: u8, sub: u8, p: &mut Partial) -> Result<(), DiskError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| DiskError::io("create", dir, e))?;
            return Ok(());
        }
        Err(e) => return Err(DiskError::io("read dir", dir, e)),
    };
    for ent in entries {
        let ent = ent.map_err(|e| DiskError::io("read dir", dir, e))?;
        let name = ent.file_name();
        let Some((hash, generation)) = name.to_str().and_then(format::parse_chunk_name) else {
            p.unknown += 1;
            continue;
        };
        let path = ent.path();
        // The file must sit in the directory its hash names.
        let in_place = (hash >> 124) as u8 == top && (hash >> 116) as u8 == sub;
        p.files += 1;
        match in_place.then(|| load(&path, hash, generation, p)) {
            Some(Ok(Some(f))) => p.found.push(f),
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
            // Not a valid chunk, or not readable (EIO, a directory by a chunk's name): it
            // is not loaded; deleting it is best effort, and a file that stays is looked
            // at again at the next start. One bad file never stops the relay.
            Some(Ok(None) | Err(_)) | None => {
                p.corrupt += 1;
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

/// Reads and checks one file's header: `Ok(None)` when the file is not a valid chunk.
fn load(path: &Path, hash: u128, generation: u64, p: &mut Partial) -> io::Result<Option<Found>> {
    let mut f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut buf = vec![0u8; format::HEADER_PROBE.min(file_len as usize)];
    let n = read_full(&mut f, &mut buf)?;
    p.bytes += n as u64;
    buf.truncate(n);
    let header_len = match format::header_len(&buf) {
        Ok(l) => l,
        Err(_) => return Ok(None),
    };
    if header_len > buf.len() && (header_len as u64) <= file_len {
        // An unusually large header: read the rest of it (bounded by MAX_HEADER).
        let have = buf.len();
        buf.resize(header_len, 0);
        let m = read_full(&mut f, &mut buf[have..])?;
        p.bytes += m as u64;
        buf.truncate(have + m);
    }
    let Ok(header) = format::decode_header(&buf) else {
        return Ok(None);
    };
    let valid = header.file_len() == file_len
        && header.generation == generation
        && format::key_hash(&header.key.as_ref()) == hash;
    // decode_header bounds the body offset by the header limit.
    let Ok(body_offset) = u32::try_from(header.body_offset) else {
        return Ok(None);
    };
    if !valid {
        return Ok(None);
    }
    Ok(Some(Found {
        entry: Entry {
            generation,
            file_len,
            body_sum: header.body_sum,
            body_offset,
            hits: 0,
        },
        object_len: header.object_len,
        key: header.key,
    }))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub(crate) fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

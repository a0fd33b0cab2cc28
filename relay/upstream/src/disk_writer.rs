//! Writes admitted chunks to the disk tier through an io_uring of its own, on a thread of
//! its own: open the temp file, one `writev` of header and body, optional `fdatasync`,
//! close, `renameat` into place (creating the directory on first use), then commit to the
//! index. Neither the upstream loop nor a serving worker ever waits on the disk.
//!
//! The buffer rule: every pointer handed to the kernel (paths, iovecs, header and body
//! bytes) lives in the job being written, and each operation is waited for before the next
//! is submitted, so nothing is freed while the kernel may read it.

use bytes::Bytes;
use io_uring::{IoUring, opcode, types};
use relay_cache::ChunkKey;
use relay_cache::disk::{ChunkInfo, DiskTier, WritePlan};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One chunk to write.
pub struct WriteJob {
    pub key: ChunkKey,
    pub object_len: u64,
    pub etag: String,
    pub last_modified: String,
    pub meta: Vec<u8>,
    pub body: Bytes,
    /// The body's checksum, taken as it was written into its fill (None: taken here).
    pub sum: Option<u64>,
    /// Not written when the tier holds the chunk already (one admitted as it was served
    /// from memory, which may have come from the disk).
    pub if_absent: bool,
}

/// The writer thread's inbox.
#[derive(Clone)]
pub struct DiskWriter {
    tx: crossbeam_channel::Sender<WriteJob>,
}

/// Chunks queued beyond this are dropped (counted): the disk tier is a cache, and a disk
/// that cannot keep up must not hold memory without bound.
const QUEUE: usize = 1024;

impl DiskWriter {
    pub fn start(
        disk: Arc<DiskTier>,
        written: Arc<AtomicU64>,
        failed: Arc<AtomicU64>,
    ) -> io::Result<DiskWriter> {
        let (tx, rx) = crossbeam_channel::bounded::<WriteJob>(QUEUE);
        let mut ring = IoUring::new(8)?;
        std::thread::Builder::new()
            .name("relay-disk".into())
            .spawn(move || {
                for job in rx {
                    if job.if_absent && disk.contains(&job.key.as_ref()) {
                        continue;
                    }
                    match write(&mut ring, &disk, &job) {
                        Ok(()) => written.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            log::warn!(
                                "disk write of {:?} chunk {}: {e}",
                                job.key.object,
                                job.key.index
                            );
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })?;
        Ok(DiskWriter { tx })
    }

    /// Queues a chunk; false when the queue is full (the chunk is then not written).
    pub fn submit(&self, job: WriteJob) -> bool {
        self.tx.try_send(job).is_ok()
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in a path"))
}

/// Submits one entry and waits for its completion; the result as the syscall would give.
fn run(ring: &mut IoUring, sqe: io_uring::squeue::Entry) -> io::Result<i32> {
    // SAFETY: the entry's pointers live in the caller's frame until this returns, and this
    // returns only after the completion (module rule).
    unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("queue full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("no completion"))?;
    let res = cqe.result();
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    Ok(res)
}

fn write(ring: &mut IoUring, disk: &DiskTier, job: &WriteJob) -> Result<(), String> {
    let info = ChunkInfo {
        key: job.key.as_ref(),
        object_len: job.object_len,
        etag: &job.etag,
        last_modified: &job.last_modified,
        meta: &job.meta,
    };
    let plan = disk
        .plan_write_summed(&info, &job.body, job.sum)
        .map_err(|e| e.to_string())?;
    match write_file(ring, &plan, &job.body) {
        Ok(()) => {
            disk.commit_write(&plan);
            Ok(())
        }
        Err(e) => {
            disk.abort_write(&plan);
            Err(e.to_string())
        }
    }
}

fn write_file(ring: &mut IoUring, plan: &WritePlan, body: &[u8]) -> io::Result<()> {
    let temp = cpath(&plan.temp_path)?;
    let fd = run(
        ring,
        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), temp.as_ptr())
            .flags(libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC)
            .mode(0o644)
            .build(),
    )?;
    let result = (|| {
        let parts: [&[u8]; 2] = [&plan.header, body];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0usize;
        while done < total {
            // iovecs for what is left.
            let mut iov = Vec::with_capacity(2);
            let mut skip = done;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                let rest = &p[skip..];
                skip = 0;
                iov.push(libc::iovec {
                    iov_base: rest.as_ptr() as *mut libc::c_void,
                    iov_len: rest.len(),
                });
            }
            let n = run(
                ring,
                opcode::Writev::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32)
                    .offset(done as u64)
                    .build(),
            )?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            done += n as usize;
        }
        if plan.fsync {
            run(
                ring,
                opcode::Fsync::new(types::Fd(fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
            )?;
        }
        Ok(())
    })();
    run(ring, opcode::Close::new(types::Fd(fd)).build())?;
    result?;
    let dest = cpath(&plan.final_path)?;
    let rename = |ring: &mut IoUring| {
        run(
            ring,
            opcode::RenameAt::new(
                types::Fd(libc::AT_FDCWD),
                temp.as_ptr(),
                types::Fd(libc::AT_FDCWD),
                dest.as_ptr(),
            )
            .build(),
        )
    };
    match rename(ring) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // First chunk in this fan-out directory: create it and try again.
            let dir = cpath(plan.final_dir())?;
            match run(
                ring,
                opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), dir.as_ptr())
                    .mode(0o755)
                    .build(),
            ) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            rename(ring).map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

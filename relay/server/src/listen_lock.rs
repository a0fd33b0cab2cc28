//! One relay per listen address. The workers' listeners share their address with
//! SO_REUSEPORT, which would as gladly let a second relay process (same user) join them: the
//! kernel would then split new connections between two processes with two caches. So a
//! relay takes an exclusive `flock` on a file named after its address (and its network
//! namespace, where the same address is another one) before it binds, and a second relay
//! on that address is refused, naming the first one's pid.
//!
//! The files live in `/run/relay` (made if missing), or, where that cannot be written (not
//! root), in the temp directory's `relay-locks`. The lock goes with the process (the kernel
//! drops it at exit, even a `kill -9`); the file stays, harmless. Port 0 takes no lock: the
//! kernel gives each process a port of its own.
//!
//! A restart without a gap keeps this rule (`crate::handover`): the new process takes the
//! running one's listening sockets over a Unix socket beside the lock file, waits for it to
//! finish and exit, and only then takes the lock ([`ListenLock::take_when_free`]) — it
//! never binds beside a live relay.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the lock files go when it can be written.
pub const RUNTIME_DIR: &str = "/run/relay";

/// Why a listen address could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another relay{} already listens on {addr} (lock {})", holder.map_or(String::new(), |p| format!(" (pid {p})")), path.display())]
    Held {
        addr: SocketAddr,
        path: PathBuf,
        holder: Option<u32>,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The exclusive claim on a listen address, held while this lives.
#[derive(Debug)]
pub struct ListenLock {
    _file: Option<File>,
}

/// The directory the lock files (and hand-over sockets) go in: [`RUNTIME_DIR`] where it can
/// be written, else the temp directory's `relay-locks`.
pub fn lock_dir() -> PathBuf {
    [
        PathBuf::from(RUNTIME_DIR),
        std::env::temp_dir().join("relay-locks"),
    ]
    .into_iter()
    .find(|d| std::fs::create_dir_all(d).is_ok() && writable(d))
    .unwrap_or_else(std::env::temp_dir)
}

/// The file name for `addr` in this network namespace (the same address in another one is
/// another address), with `ext`.
pub fn file_name(addr: SocketAddr, ext: &str) -> String {
    let netns = std::fs::read_link("/proc/self/ns/net")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("net:[")?.strip_suffix(']')?.to_owned())
        })
        .unwrap_or_default();
    format!("listen-{netns}-{addr}.{ext}").replace([':', '[', ']'], "_")
}

impl ListenLock {
    /// Claims `addr` for this process, in [`lock_dir`].
    pub fn take(addr: SocketAddr) -> Result<ListenLock, LockError> {
        if addr.port() == 0 {
            return Ok(ListenLock { _file: None });
        }
        Self::take_in(&lock_dir(), addr)
    }

    /// [`ListenLock::take`], waiting up to `wait` for a relay that is finishing (after a
    /// hand-over) to let it go.
    pub fn take_when_free(
        addr: SocketAddr,
        wait: std::time::Duration,
    ) -> Result<ListenLock, LockError> {
        let until = std::time::Instant::now() + wait;
        loop {
            match Self::take(addr) {
                Err(LockError::Held { .. }) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => return r,
            }
        }
    }

    /// Claims `addr` with a lock file in `dir`.
    pub fn take_in(dir: &Path, addr: SocketAddr) -> Result<ListenLock, LockError> {
        let path = dir.join(file_name(addr, "lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    addr,
                    holder: text.trim().parse().ok(),
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // The holder's pid, for the error a second relay prints.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(ListenLock { _file: Some(file) })
    }
}

/// Whether this process may create files in `dir`.
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_an_address_is_refused_until_the_first_goes() {
        let dir = std::env::temp_dir().join(format!("relay-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr: SocketAddr = "[::1]:8080".parse().unwrap();
        let first = ListenLock::take_in(&dir, addr).unwrap();
        // flock is per open file: a second open in this process conflicts like another
        // process would.
        let e = ListenLock::take_in(&dir, addr).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("(pid {})", std::process::id())) && msg.contains("[::1]:8080"),
            "{msg}"
        );
        let other: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let _third = ListenLock::take_in(&dir, other).unwrap();
        drop(first);
        let _again = ListenLock::take_in(&dir, addr).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

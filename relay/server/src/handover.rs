//! Restarts without a gap: a new relay takes the listening sockets of the one running on
//! the same address, so that no client connection is refused while one process stops and
//! the other starts.
//!
//! The running relay offers its sockets ([`offer`]) on a Unix socket beside its listen lock
//! (`listen_lock::file_name(addr, "sock")`, mode 0600). A new relay on the same address
//! connects first ([`take_over`]) and gets, with `SCM_RIGHTS`, every client listener, every
//! peer listener and the admin listener. The old relay then stops accepting at once (no
//! drain: its sockets are already in other hands), finishes its responses in flight and
//! exits; the connection to the new one closes with it. The new relay waits for that (the
//! disk tier and the listen lock are the old one's until it exits), takes the lock, and
//! serves on the sockets it was given. Connections that arrive meanwhile wait in the
//! sockets' backlog: late, never refused.

use sendfd::{RecvWithFd, SendWithFd};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// The first line of an offer, then the counts.
const MAGIC: &str = "relay-handover-1";
/// The most descriptors one message carries: the kernel refuses more than 253
/// (`SCM_MAX_FD`), so an offer of more (workers × listen addresses, the peer listeners,
/// the admin listener) goes in several messages, the first with the counts.
const BATCH: usize = 250;
/// The most descriptors an offer may carry in all.
const MAX_FDS: usize = 1024 * 18 + 1;

/// Where the relay on `addr` offers its sockets (None for port 0: no lock, no offer).
pub fn socket_path(addr: SocketAddr) -> Option<PathBuf> {
    (addr.port() != 0)
        .then(|| crate::listen_lock::lock_dir().join(crate::listen_lock::file_name(addr, "sock")))
}

/// Sockets taken over from the relay that ran before.
pub struct Handed {
    pub client: Vec<TcpListener>,
    pub peer: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
    /// Open until the old relay exits.
    conn: UnixStream,
}

impl Handed {
    /// Waits until the old relay has exited (its end of the connection closed), at most
    /// `wait`; false when it had not.
    pub fn wait_old_gone(&mut self, wait: Duration) -> bool {
        let _ = self.conn.set_read_timeout(Some(wait));
        let mut byte = [0u8; 1];
        matches!(self.conn.read(&mut byte), Ok(0))
    }
}

/// Asks the relay on `addr`, if one runs and offers, for its sockets.
pub fn take_over(addr: SocketAddr) -> std::io::Result<Option<Handed>> {
    let Some(path) = socket_path(addr) else {
        return Ok(None);
    };
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        // Nobody offers: a first start, or one after a relay that is gone.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    (&conn).write_all(b"take over\n")?;
    let mut text = [0u8; 256];
    let mut fds = [-1 as RawFd; BATCH];
    let mut owned: Vec<TcpListener> = Vec::new();
    let mut take = |fds: &[RawFd]| {
        // SAFETY: `recv_with_fd` returned these descriptors, passed with SCM_RIGHTS: new
        // ones in this process that nothing else owns; each is wrapped once, and closed by
        // its owner on drop (also on the errors below).
        owned.extend(
            fds.iter()
                .map(|&fd| unsafe { TcpListener::from_raw_fd(fd) }),
        );
    };
    let (n, got) = conn.recv_with_fd(&mut text, &mut fds)?;
    take(&fds[..got]);
    let header = String::from_utf8_lossy(&text[..n]).into_owned();
    let count = |key: &str| -> Option<usize> {
        header
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let (Some(c), Some(p), Some(a)) = (count("client"), count("peer"), count("admin")) else {
        return Err(std::io::Error::other(format!(
            "a bad hand-over offer: {header:?}"
        )));
    };
    let total = c.saturating_add(p).saturating_add(a);
    if !header.starts_with(MAGIC) || c == 0 || a > 1 || total > MAX_FDS {
        return Err(std::io::Error::other(format!(
            "a bad hand-over offer: {header:?}"
        )));
    }
    // The rest, BATCH at a time, each behind one byte.
    let mut received = got;
    while received < total {
        let mut byte = [0u8; 1];
        let (n, got) = conn.recv_with_fd(&mut byte, &mut fds)?;
        if n == 0 || got == 0 {
            return Err(std::io::Error::other(format!(
                "the hand-over ended after {received} of {total} descriptors"
            )));
        }
        take(&fds[..got]);
        received += got;
    }
    if owned.len() != total {
        return Err(std::io::Error::other(format!(
            "a bad hand-over offer: {header:?} with {} descriptors",
            owned.len()
        )));
    }
    let admin = (a == 1).then(|| owned.remove(c + p));
    let peer = owned.split_off(c);
    Ok(Some(Handed {
        client: owned,
        peer,
        admin,
        conn,
    }))
}

/// Offers this relay's sockets on `addr`'s hand-over socket, on a thread of its own, until a
/// new relay takes them; then calls `handed` (which stops this relay). The connection to the
/// new relay stays open until this process exits, which tells it when.
pub fn offer(
    addr: SocketAddr,
    client: Vec<RawFd>,
    peer: Vec<RawFd>,
    admin: Option<RawFd>,
    handed: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let Some(path) = socket_path(addr) else {
        return Ok(());
    };
    // (A socket file left by a relay that is gone: nobody answers on it.)
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut fds = client.clone();
    fds.extend(&peer);
    fds.extend(admin);
    let header = format!(
        "{MAGIC} client={} peer={} admin={}\n",
        client.len(),
        peer.len(),
        usize::from(admin.is_some())
    );
    std::thread::Builder::new()
        .name("relay-handover".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut ask = [0u8; 16];
                match conn.read(&mut ask) {
                    Ok(n) if ask[..n].starts_with(b"take over") => {}
                    _ => continue,
                }
                match send_all(&conn, header.as_bytes(), &fds) {
                    Ok(()) => {
                        log::warn!("handing the listening sockets over to a new relay; stopping");
                        // Closed when this process exits: the new relay waits for that.
                        std::mem::forget(conn);
                        handed();
                        return;
                    }
                    Err(e) => log::error!("hand-over: cannot pass the sockets: {e}"),
                }
            }
        })?;
    Ok(())
}

/// Sends `fds` behind `header`: the first `BATCH` with it, the rest `BATCH` at a time, each
/// message behind one byte.
fn send_all(conn: &UnixStream, header: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut batches = fds.chunks(BATCH);
    let first = batches.next().unwrap_or_default();
    if conn.send_with_fd(header, first)? != header.len() {
        return Err(std::io::Error::other("the hand-over header was cut"));
    }
    for batch in batches {
        if conn.send_with_fd(b"+", batch)? != 1 {
            return Err(std::io::Error::other("a hand-over batch was not sent"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// An offer of more sockets than one message may carry (253) is taken over whole.
    #[test]
    fn an_offer_of_more_than_one_message_of_sockets_is_taken_over_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let copies: Vec<TcpListener> = (0..300).map(|_| listener.try_clone().unwrap()).collect();
        let fds: Vec<RawFd> = copies.iter().map(|l| l.as_raw_fd()).collect();
        let handed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = handed.clone();
        let (client, peer, admin) = (fds[..280].to_vec(), fds[280..299].to_vec(), fds[299]);
        offer(addr, client, peer, Some(admin), move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst)
        })
        .unwrap();
        let got = take_over(addr).unwrap().expect("an offer");
        assert_eq!((got.client.len(), got.peer.len()), (280, 19));
        assert!(got.admin.is_some());
        let all = got.client.iter().chain(&got.peer).chain(got.admin.as_ref());
        assert!(all.map(|l| l.local_addr().unwrap()).all(|a| a == addr));
        for _ in 0..100 {
            if handed.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(handed.load(std::sync::atomic::Ordering::SeqCst));
        let _ = std::fs::remove_file(socket_path(addr).unwrap());
    }
}

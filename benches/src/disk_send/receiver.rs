//! The receiver: one thread, level-triggered epoll over the K accepted sockets, reading
//! (or, with `--discard`, discarding with MSG_TRUNC) everything that arrives and counting
//! bytes per connection. In a verifying run it also compares every byte with the file it
//! belongs to (connection `c`'s `n`-th file of a run is file `(c + n) % files`).
//!
//! A run ends when the sender's per-connection byte counts (sent by the main thread once
//! the sender is done) are reached exactly; more bytes than were sent, or fewer after the
//! time limit, fail the run.

use super::sys;
use anyhow::{Context, Result, bail};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes per read.
const READ_BYTES: usize = 256 << 10;

pub enum Cmd {
    /// Drain the connections until the counts given by a later `Expect` are reached.
    Run {
        size: u64,
        /// The files' bytes: compare everything received against them.
        verify: Option<std::sync::Arc<Vec<Vec<u8>>>>,
        limit: Duration,
    },
    /// The sender's bytes per connection for the run in progress.
    Expect(Vec<u64>),
}

#[derive(Debug)]
pub struct Outcome {
    pub per_conn: Vec<u64>,
    /// When the last byte arrived.
    pub last_byte: Instant,
    /// Bytes compared with the files (0 unless verifying).
    pub verified: u64,
}

pub struct Receiver {
    socks: Vec<TcpStream>,
    epoll: sys::Epoll,
    buf: Vec<u8>,
    discard: bool,
}

impl Receiver {
    pub fn new(socks: Vec<TcpStream>, discard: bool) -> Result<Receiver> {
        let epoll = sys::Epoll::new().context("epoll_create1")?;
        for (i, s) in socks.iter().enumerate() {
            s.set_nonblocking(true)?;
            epoll.add(s.as_raw_fd(), i as u64).context("epoll_ctl")?;
        }
        Ok(Receiver {
            socks,
            epoll,
            buf: vec![0; READ_BYTES],
            discard,
        })
    }

    /// One run; `cmds` delivers the expected counts while it drains.
    pub fn run(
        &mut self,
        size: u64,
        verify: Option<&[Vec<u8>]>,
        limit: Duration,
        cmds: &mpsc::Receiver<Cmd>,
    ) -> Result<Outcome> {
        let k = self.socks.len();
        let mut got = vec![0u64; k];
        let mut expected: Option<Vec<u64>> = None;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; k];
        let started = Instant::now();
        let mut last_byte = started;
        let mut verified = 0u64;
        // Copy unless discarding; a verifying run always copies.
        let flags = if self.discard && verify.is_none() {
            libc::MSG_TRUNC
        } else {
            0
        };
        loop {
            let n = self.epoll.wait(&mut events, 1).context("epoll_wait")?;
            for ev in &events[..n] {
                let c = ev.u64 as usize;
                // A few reads per event, then the next socket (level-triggered: it returns).
                for _ in 0..4 {
                    let Some(r) = sys::recv(self.socks[c].as_raw_fd(), &mut self.buf, flags)
                        .with_context(|| format!("recv on connection {c}"))?
                    else {
                        break;
                    };
                    if r == 0 {
                        bail!("connection {c} closed by the sender");
                    }
                    if let Some(files) = verify {
                        check(c, got[c], &self.buf[..r], size, files)?;
                        verified += r as u64;
                    }
                    got[c] += r as u64;
                    last_byte = Instant::now();
                    if r < self.buf.len() {
                        break;
                    }
                }
            }
            if expected.is_none() {
                match cmds.try_recv() {
                    Ok(Cmd::Expect(v)) => expected = Some(v),
                    Ok(Cmd::Run { .. }) => bail!("a run was started during a run"),
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => bail!("the main thread is gone"),
                }
            }
            if let Some(want) = &expected {
                if let Some(c) = (0..k).find(|&c| got[c] > want[c]) {
                    bail!(
                        "connection {c}: received {} bytes, {} were sent",
                        got[c],
                        want[c]
                    );
                }
                if got == *want {
                    break;
                }
            }
            if started.elapsed() > limit {
                bail!("received {got:?} bytes after {limit:?}; sender reported {expected:?}");
            }
        }
        // Nothing more may be queued: the byte counts are exact.
        for (c, s) in self.socks.iter().enumerate() {
            if let Some(extra) = sys::recv(s.as_raw_fd(), &mut self.buf, libc::MSG_PEEK)?
                && extra > 0
            {
                bail!("connection {c}: {extra} bytes more than the sender sent");
            }
        }
        Ok(Outcome {
            per_conn: got,
            last_byte,
            verified,
        })
    }
}

/// Runs what `cmds` asks until it closes or a run fails; a failure drops the receiver and
/// so closes its sockets, and a sender blocked on a full socket fails instead of hanging.
pub fn serve(
    mut rcv: Receiver,
    cmds: &mpsc::Receiver<Cmd>,
    results: &mpsc::Sender<Result<Outcome>>,
) {
    while let Ok(cmd) = cmds.recv() {
        let Cmd::Run {
            size,
            verify,
            limit,
        } = cmd
        else {
            continue; // a late Expect of a failed run
        };
        let r = rcv.run(size, verify.as_deref().map(Vec::as_slice), limit, cmds);
        let failed = r.is_err();
        let _ = results.send(r);
        if failed {
            return;
        }
    }
}

/// Compares `data`, received on connection `c` at run offset `pos`, with the files.
fn check(c: usize, mut pos: u64, mut data: &[u8], size: u64, files: &[Vec<u8>]) -> Result<()> {
    while !data.is_empty() {
        let (n, off) = (pos / size, (pos % size) as usize);
        let file = (c + n as usize) % files.len();
        let take = data.len().min(size as usize - off);
        if data[..take] != files[file][off..off + take] {
            let at = data[..take]
                .iter()
                .zip(&files[file][off..])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!("connection {c}: byte {} of file {file} differs", off + at);
        }
        data = &data[take..];
        pos += take as u64;
    }
    Ok(())
}

//! Bytes an origin sends past the end of an answer, before the next request on the same
//! kept-alive connection, must never be taken as the answer to that request: an origin
//! that says `Content-Length: 5` and sends a second response after the five bytes (a
//! response-splitting bug in the application behind it) would otherwise have its second
//! response cached under whatever URL the pool sends next on that connection, and every
//! answer after it one request behind. (hyper's pool was seen to do just that with a node
//! origin that wrote its answer and a second one in two writes.)
//!
//! [`Guarded`] wraps each pooled connection, above TLS (a TLS session ticket is no stray
//! byte). It follows the framing of each answer as hyper reads it ([`Framing`]: the head,
//! then `Content-Length` bytes or the chunked coding; answers to HEAD, 1xx, 204 and 304
//! without a body), and hands hyper only an answer's own bytes: a byte past the end of one
//! marks the connection stray, so hyper never reads it, reading on errors, and the next
//! request is not written there; the connection is dropped and the fetch goes on as for
//! any failed connection (its retry, on a new one). When a request starts on a connection
//! that has answered before, it also looks whether anything is readable already (bytes
//! that came after hyper last read). Framing it does not follow (an answer read to the
//! connection's close, an upgrade, a head past 64 KiB) turns the checks off for the
//! connection. Counted in `relay_upstream_stray_answers_total`.

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long after an origin last sent stray bytes its connections are not kept alive.
pub const SUSPECT_FOR: Duration = Duration::from_secs(600);

/// An origin's stray bytes, as its connections find them.
#[derive(Default)]
pub struct Strays {
    /// Connections dropped for them.
    pub count: AtomicU64,
    /// When the last was found, in ms from `epoch` plus one (0: never).
    last_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Strays {
    fn found(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let epoch = *self.epoch.get_or_init(Instant::now);
        let ms = epoch.elapsed().as_millis() as u64 + 1;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// The origin sent stray bytes within [`SUSPECT_FOR`]: a connection it answers on may
    /// carry more of them after the next request is written (they can reach the socket
    /// after it, held back by the origin's TCP stack), where no framing tells them from
    /// the answer; so each request closes its connection after its answer
    /// (`Connection: close`) until then.
    pub fn suspect(&self) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        let Some(epoch) = self.epoch.get() else {
            return false;
        };
        last != 0
            && (epoch.elapsed().as_millis() as u64 + 1).saturating_sub(last)
                < SUSPECT_FOR.as_millis() as u64
    }
}

/// A pooled connection to an origin, whose answers are kept to their own bytes.
pub struct Guarded<T> {
    inner: T,
    /// Where the answers read so far end.
    framing: Framing,
    /// The origin sent bytes past the end of an answer: no more are read, and no request
    /// is written.
    stray: bool,
    /// The connection has read since its last request started: the next write that starts
    /// a request is after an answer.
    answered: bool,
    /// Its origin's stray bytes.
    strays: Arc<Strays>,
}

impl<T> Guarded<T> {
    pub fn new(inner: T, strays: Arc<Strays>) -> Guarded<T> {
        Guarded {
            inner,
            framing: Framing::Idle,
            stray: false,
            answered: false,
            strays,
        }
    }

    fn found_stray(&mut self, bytes: usize) {
        if !self.stray {
            self.stray = true;
            self.strays.found();
            log::warn!(
                "an origin sent {bytes}+ bytes past the end of an answer: its connection is \
                 dropped, they are not read as the next request's answer, and its \
                 connections are not kept alive for {} s",
                SUSPECT_FOR.as_secs()
            );
        }
    }
}

/// The most of an answer's head kept while it arrives (past it, the checks go off).
const MOST_HEAD: usize = 64 << 10;

/// Where an answer ends, followed as its bytes are read.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// No request is waiting for an answer: any byte read is stray.
    Idle,
    /// A request was written (`head`: a HEAD, answered without a body); its answer's head so
    /// far.
    Head { head: bool, bytes: Vec<u8> },
    /// Body bytes still to come.
    Length(u64),
    /// A chunked body: a chunk-size line so far.
    ChunkSize(Vec<u8>),
    /// A chunk's data still to come, and its CRLF after it.
    ChunkData(u64),
    /// The trailer section: the bytes of its current line (without CR).
    Trailer(usize),
    /// Framing not followed: no checks.
    Off,
}

impl Framing {
    /// A request starts (`head`: a HEAD).
    fn request(&mut self, head: bool) {
        *self = match self {
            // (hyper writes a request only once the last answer ended; a framing that says
            // otherwise is not followed further.)
            Framing::Idle => Framing::Head {
                head,
                bytes: Vec::new(),
            },
            _ => Framing::Off,
        };
    }

    /// Follows `bytes`, read after what it has seen: how many of them belong to answers
    /// (the rest, stray).
    fn read(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let (used, next) = match self {
                Framing::Idle => return at,
                Framing::Off => return bytes.len(),
                Framing::Head { head, bytes: seen } => {
                    let before = seen.len();
                    let take = rest.len().min(MOST_HEAD - before);
                    seen.extend_from_slice(&rest[..take]);
                    match answer_head(seen, *head) {
                        Parsed::Partial if seen.len() >= MOST_HEAD => (take, Framing::Off),
                        Parsed::Partial => (
                            take,
                            Framing::Head {
                                head: *head,
                                bytes: std::mem::take(seen),
                            },
                        ),
                        Parsed::Done(len, next) => (len - before, next),
                    }
                }
                Framing::Length(n) => {
                    let take = (rest.len() as u64).min(*n);
                    match *n - take {
                        0 => (take as usize, Framing::Idle),
                        left => (take as usize, Framing::Length(left)),
                    }
                }
                Framing::ChunkSize(line) => match rest.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        line.extend_from_slice(&rest[..end]);
                        let next = match chunk_size(line) {
                            Some(0) => Framing::Trailer(0),
                            // (Its data, then the CRLF after it.)
                            Some(n) => Framing::ChunkData(n.saturating_add(2)),
                            None => Framing::Off,
                        };
                        (end + 1, next)
                    }
                    None if line.len() + rest.len() > 1024 => (rest.len(), Framing::Off),
                    None => {
                        line.extend_from_slice(rest);
                        (rest.len(), Framing::ChunkSize(std::mem::take(line)))
                    }
                },
                Framing::ChunkData(n) => {
                    let take = (rest.len() as u64).min(*n);
                    match *n - take {
                        0 => (take as usize, Framing::ChunkSize(Vec::new())),
                        left => (take as usize, Framing::ChunkData(left)),
                    }
                }
                Framing::Trailer(line) => {
                    let b = rest[0];
                    let next = match b {
                        b'\n' if *line == 0 => Framing::Idle,
                        b'\n' => Framing::Trailer(0),
                        b'\r' => Framing::Trailer(*line),
                        _ => Framing::Trailer(*line + 1),
                    };
                    (1, next)
                }
            };
            *self = next;
            at += used;
        }
        at
    }
}

/// An answer's head, parsed so far.
enum Parsed {
    Partial,
    /// Its length, and how the answer goes on.
    Done(usize, Framing),
}

/// The head at the start of `bytes` (`head`: the answer to a HEAD).
fn answer_head(bytes: &[u8], head: bool) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Done(bytes.len(), Framing::Off),
    };
    let code = resp.code.unwrap_or(0);
    let next = match code {
        101 => Framing::Off,
        100..=199 => Framing::Head {
            head,
            bytes: Vec::new(),
        },
        204 | 304 => Framing::Idle,
        _ if head => Framing::Idle,
        _ => body_framing(resp.headers),
    };
    Parsed::Done(len, next)
}

/// How a body with these fields ends: chunked, a length, or (neither, or lengths that
/// disagree) not followed.
fn body_framing(fields: &[httparse::Header<'_>]) -> Framing {
    fn named<'a>(
        fields: &'a [httparse::Header<'a>],
        name: &'static str,
    ) -> impl Iterator<Item = &'a [u8]> {
        fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    }
    if let Some(coding) = named(fields, "transfer-encoding").last() {
        let last = coding.rsplit(|&b| b == b',').next().unwrap_or_default();
        return match last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            true => Framing::ChunkSize(Vec::new()),
            false => Framing::Off,
        };
    }
    let mut lengths = named(fields, "content-length").map(|v| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    match lengths.next() {
        Some(Some(n)) if lengths.all(|m| m == Some(n)) => match n {
            0 => Framing::Idle,
            n => Framing::Length(n),
        },
        _ => Framing::Off,
    }
}

/// A chunk-size line's size (hex digits before any extension).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// The TCP socket under a connection, when it is plain (not TLS).
pub trait PlainTcp {
    fn tcp(&self) -> Option<&tokio::net::TcpStream>;
}

impl PlainTcp for hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>> {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        match self {
            hyper_rustls::MaybeHttpsStream::Http(io) => Some(io.inner()),
            hyper_rustls::MaybeHttpsStream::Https(_) => None,
        }
    }
}

impl<T: Read + PlainTcp + Unpin> Guarded<T> {
    /// A request starts on the connection: anything readable now was sent before it was
    /// asked. Ready(Err) when something is (or the origin closed the connection), Ready(Ok)
    /// when the request may go. A plain socket is asked directly (a peek: the reactor may
    /// not have seen bytes that came since hyper last read); under TLS, a read of the
    /// stream (left pending, it registers the connection's task for the answer, as its own
    /// read would).
    fn check_quiet(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(tcp) = self.inner.tcp() {
            let mut some = [MaybeUninit::<u8>::uninit(); 16];
            return match socket2::SockRef::from(tcp).peek(&mut some) {
                Ok(0) => Poll::Ready(Err(closed_error())),
                Ok(n) => {
                    // SAFETY: the peek initialized its first `n` bytes.
                    let seen = unsafe { std::slice::from_raw_parts(some.as_ptr().cast::<u8>(), n) };
                    if timed_out(seen) {
                        return Poll::Ready(Err(closed_error()));
                    }
                    self.found_stray(n);
                    Poll::Ready(Err(stray_error()))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Ready(Ok(())),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        let mut scratch = [MaybeUninit::<u8>::uninit(); 64];
        let mut buf = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut self.inner).poll_read(cx, buf.unfilled()) {
            Poll::Pending => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Err(closed_error())),
            Poll::Ready(Ok(())) if timed_out(buf.filled()) => Poll::Ready(Err(closed_error())),
            Poll::Ready(Ok(())) => {
                self.found_stray(buf.filled().len());
                Poll::Ready(Err(stray_error()))
            }
        }
    }

    /// Before writing `first` (the start of what hyper writes now): a write while no
    /// answer is awaited starts a request (hyper sends one at a time, each once the last
    /// answer ended; the head first), after the check on a connection that has answered
    /// one. Any other write (the rest of a head, a body, a head retried after the socket
    /// was full) changes nothing.
    fn before_write(&mut self, cx: &mut Context<'_>, first: &[u8]) -> Poll<io::Result<()>> {
        if self.framing != Framing::Idle {
            return Poll::Ready(Ok(()));
        }
        if self.stray {
            return Poll::Ready(Err(stray_error()));
        }
        if self.answered {
            self.answered = false;
            if let Poll::Ready(Err(e)) = self.check_quiet(cx) {
                return Poll::Ready(Err(e));
            }
        }
        self.framing.request(first.starts_with(b"HEAD "));
        Poll::Ready(Ok(()))
    }
}

/// Whether `bytes` begin an HTTP/1.x `408` answer: what some servers send on a kept-alive
/// connection they close for idleness, unasked; a close, not stray bytes.
fn timed_out(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes.starts_with(b"HTTP/1.") && &bytes[8..12] == b" 408"
}

/// Why the guard dropped a connection before a request went on it: nothing was sent, so
/// the request may go again, and the origin's health is not the request's affair
/// (`crate::fetch::request::failure`).
#[derive(Debug, thiserror::Error)]
pub enum Dropped {
    #[error("the origin closed the connection before the next request")]
    Closed,
    #[error("the origin sent bytes past the end of an answer")]
    Stray,
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, Dropped::Closed)
}

fn stray_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Dropped::Stray)
}

impl<T: Read + PlainTcp + Unpin> Read for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stray {
            return Poll::Ready(Err(stray_error()));
        }
        if this.framing == Framing::Off {
            let read = Pin::new(&mut this.inner).poll_read(cx, buf);
            this.answered |= matches!(read, Poll::Ready(Ok(())));
            return read;
        }
        // Read into the caller's buffer, then hand it only the answers' bytes: no copy.
        let (got, kept) = {
            // SAFETY: the slice is only written through a `ReadBuf` (which never
            // de-initializes what it is given), and nothing is read from it but what that
            // read filled.
            let unfilled = unsafe { buf.as_mut() };
            let mut into = ReadBuf::uninit(unfilled);
            match Pin::new(&mut this.inner).poll_read(cx, into.unfilled()) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let got = into.filled();
            let kept = this.framing.read(got);
            if kept == 0 && timed_out(got) {
                // (Closed for idleness: no stray bytes.)
                return Poll::Ready(Err(closed_error()));
            }
            (got.len(), kept)
        };
        this.answered = true;
        if let (Framing::Idle, Some(tcp)) = (&this.framing, this.inner.tcp()) {
            // An answer ended: acknowledged at once, not after the delayed-ACK wait, so an
            // origin whose TCP stack holds back its next small write until then (Nagle)
            // sends it now, and stray bytes reach the socket before the next request is
            // written, where the check finds them, rather than just after. (Best effort: a
            // failure changes nothing else.)
            let _ = socket2::SockRef::from(tcp).set_quickack(true);
        }
        if kept < got {
            this.found_stray(got - kept);
            if kept == 0 {
                return Poll::Ready(Err(stray_error()));
            }
        }
        // SAFETY: the read above filled (initialized) `got` bytes from the cursor's start,
        // and `kept` is at most `got`.
        unsafe { buf.advance(kept) };
        Poll::Ready(Ok(()))
    }
}

impl<T: Read + Write + PlainTcp + Unpin> Write for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(e)) = this.before_write(cx, buf) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if let Poll::Ready(Err(e)) = this.before_write(cx, first) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for Guarded<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::{Framing, timed_out};

    /// Follows `bytes` from a request (`head`: a HEAD) in reads of `step` bytes: the bytes
    /// kept, and whether the framing is idle after them.
    fn follow(bytes: &[u8], head: bool, step: usize) -> (usize, Framing) {
        let mut f = Framing::Idle;
        f.request(head);
        let mut kept = 0;
        for piece in bytes.chunks(step) {
            let k = f.read(piece);
            kept += k;
            if k < piece.len() {
                break;
            }
        }
        (kept, f)
    }

    #[test]
    fn an_answer_is_kept_to_its_own_bytes_however_it_is_read() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let chunked = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                        HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5;x=y\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n";
        let empty = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
        let stray = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nPOISONED!!!\n";
        for step in [1, 3, 7, 4096] {
            for (answer, head) in [
                (&one[..], false),
                (&chunked[..], false),
                (&empty[..], false),
            ] {
                assert_eq!(follow(answer, head, step), (answer.len(), Framing::Idle));
                let mut both = answer.to_vec();
                both.extend_from_slice(stray);
                assert_eq!(
                    follow(&both, head, step),
                    (answer.len(), Framing::Idle),
                    "step {step}: {}",
                    String::from_utf8_lossy(answer)
                );
            }
            // A HEAD's answer has no body, whatever its length says.
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
            assert_eq!(follow(head, true, step), (head.len(), Framing::Idle));
        }
    }

    #[test]
    fn framing_it_cannot_follow_turns_the_checks_off() {
        let to_close = b"HTTP/1.1 200 OK\r\n\r\nbody until the connection closes";
        assert_eq!(follow(to_close, false, 5), (to_close.len(), Framing::Off));
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
        assert_eq!(follow(two, false, 9).1, Framing::Off);
        let mut f = Framing::Head {
            head: false,
            bytes: Vec::new(),
        };
        // A request while an answer is still followed: not followed further.
        f.request(false);
        assert_eq!(f, Framing::Off);
    }

    #[test]
    fn a_408_is_told_from_other_stray_bytes() {
        assert!(timed_out(b"HTTP/1.1 408 Request Timeout\r\n"));
        assert!(timed_out(b"HTTP/1.0 408 x"));
        assert!(!timed_out(b"HTTP/1.1 200 OK\r\n"));
        assert!(!timed_out(b"HTTP/1.1 40"));
    }
}

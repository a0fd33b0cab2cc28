//! The client side of `miss`: a blocking HTTP/1.1 connection that sends a GET, takes the
//! instants of its first and last response bytes, follows the body's framing
//! (`Content-Length` or chunked) and checks every body byte against the origin's stream
//! for that object: a wrong status, a wrong length or a wrong byte is an error, never a
//! number.

use super::origin;
use crate::load::parse_head;
use anyhow::{Context, Result, bail, ensure};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The Host every request carries.
pub const HOST: &str = "miss.bench";
/// Longest response head taken.
const MAX_HEAD: usize = 64 << 10;

/// The object a response must be: the origin's bytes for `name`, `size` of them.
#[derive(Clone, Copy)]
pub struct Want {
    pub seed: u64,
    pub size: u64,
}

impl Want {
    pub fn of(name: &str, size: u64) -> Want {
        Want {
            seed: origin::seed(name),
            size,
        }
    }
}

/// One response, checked.
pub struct Got {
    pub first_byte: Instant,
    pub last_byte: Instant,
    /// The server said it closes the connection after this response.
    pub close: bool,
}

/// A connection (or, for [`check`], bytes already read).
pub struct Conn<S = TcpStream> {
    s: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Expected bytes, made for each piece compared.
    scratch: Vec<u8>,
}

impl Conn<TcpStream> {
    pub fn open(addr: SocketAddr, buffer: usize) -> Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            s,
            buf: vec![0; buffer.max(MAX_HEAD)],
            start: 0,
            end: 0,
            scratch: Vec::new(),
        })
    }

    /// `GET path` and its checked response; returns (when the request was written, the
    /// response).
    pub fn get(&mut self, path: &str, want: Want) -> Result<(Instant, Got)> {
        let sent = send(&mut self.s, path)?;
        Ok((sent, self.response(want)?))
    }
}

/// Checks a whole response read already (head and body) against `want`.
pub fn check(response: &[u8], want: Want) -> Result<()> {
    let mut c = Conn {
        s: response,
        buf: vec![0; MAX_HEAD],
        start: 0,
        end: 0,
        scratch: Vec::new(),
    };
    c.response(want)?;
    ensure!(c.start == c.end, "bytes after the response");
    Ok(())
}

/// Whether `bytes` hold a whole response (by its framing; a chunked body by its last
/// chunk, with no trailer fields); an error for a head that does not parse.
pub fn complete(bytes: &[u8]) -> Result<bool> {
    let head = match parse_head(bytes) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(false),
        Err(()) => bail!("a response head that does not parse"),
    };
    Ok(match (head.chunked, head.length) {
        (true, _) => bytes.ends_with(b"\r\n0\r\n\r\n"),
        (false, Some(n)) => (bytes.len() - head.len) as u64 >= n,
        (false, None) => false,
    })
}

impl<S: Read> Conn<S> {
    /// Reads one response and checks it against `want`.
    pub fn response(&mut self, want: Want) -> Result<Got> {
        let mut first = None;
        let head = loop {
            if let Ok(Some(h)) = parse_head(&self.buf[self.start..self.end]) {
                break h;
            }
            ensure!(
                self.end - self.start < MAX_HEAD,
                "a response head over {MAX_HEAD} bytes"
            );
            let n = self.read_more()?;
            ensure!(n > 0, "the connection closed before a response head");
            first.get_or_insert_with(Instant::now);
        };
        let first_byte = first.unwrap_or_else(Instant::now);
        let head_bytes = &self.buf[self.start..self.start + head.len];
        let close = find_ci(head_bytes, b"\r\nconnection: close");
        if head.status != 200 {
            let text = String::from_utf8_lossy(head_bytes).into_owned();
            bail!("status {} (head: {})", head.status, text.trim_end());
        }
        self.start += head.len;
        let mut at = 0u64;
        if head.chunked {
            loop {
                let line = self.line()?;
                let size = line.split(';').next().unwrap_or("").trim().to_string();
                let size = u64::from_str_radix(&size, 16)
                    .with_context(|| format!("chunk size line {line:?}"))?;
                if size == 0 {
                    // Trailer fields up to the empty line (bounded by MAX_FIELDS lines).
                    for _ in 0..100 {
                        if self.line()?.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                self.body(want, &mut at, size)?;
                ensure!(self.line()?.is_empty(), "no CRLF after a chunk");
            }
        } else {
            let len = head
                .length
                .context("a response without Content-Length or chunked")?;
            ensure!(
                len == want.size,
                "Content-Length {len}, the object is {} bytes",
                want.size
            );
            self.body(want, &mut at, len)?;
        }
        ensure!(
            at == want.size,
            "a body of {at} bytes, the object is {}",
            want.size
        );
        Ok(Got {
            first_byte,
            last_byte: Instant::now(),
            close,
        })
    }

    /// `len` body bytes, compared with the object's from `*at`.
    fn body(&mut self, want: Want, at: &mut u64, len: u64) -> Result<()> {
        let mut left = len;
        while left > 0 {
            if self.start == self.end {
                let n = self.read_more()?;
                ensure!(
                    n > 0,
                    "the body ended after {at} of {} bytes (closed)",
                    want.size
                );
            }
            let n = ((self.end - self.start) as u64).min(left) as usize;
            ensure!(
                *at + n as u64 <= want.size,
                "more body than the object's {} bytes",
                want.size
            );
            self.scratch.resize(n, 0);
            origin::fill(want.seed, *at, &mut self.scratch);
            if self.buf[self.start..self.start + n] != self.scratch[..] {
                let off = (0..n)
                    .find(|&i| self.buf[self.start + i] != self.scratch[i])
                    .unwrap_or(0);
                bail!("body byte {} differs from the object's", *at + off as u64);
            }
            self.start += n;
            *at += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    /// One CRLF-ended line of chunked framing, without its CRLF.
    fn line(&mut self) -> Result<String> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some(i) = avail.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&avail[..i]).into_owned();
                self.start += i + 2;
                return Ok(l);
            }
            ensure!(avail.len() < 4096, "a chunked framing line over 4 KiB");
            ensure!(self.read_more()? > 0, "closed inside chunked framing");
        }
    }

    /// Reads what comes into the free end of the buffer (moving what is held to its start
    /// first); 0 when the peer closed.
    fn read_more(&mut self) -> Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self
            .s
            .read(&mut self.buf[self.end..])
            .context("reading a response")?;
        self.end += n;
        Ok(n)
    }
}

/// Writes `GET path` with the benchmark's Host; returns when it was written.
pub fn send(s: &mut TcpStream, path: &str) -> Result<Instant> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: relay-bench\r\n\r\n");
    let t = Instant::now();
    s.write_all(req.as_bytes()).context("sending a request")?;
    Ok(t)
}

fn find_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the bench's own origin: whole bodies checked, a wrong object refused.
    #[test]
    fn checks_bodies_against_the_origin() {
        let o = origin::Origin::start(Duration::ZERO).unwrap();
        let mut c = Conn::open(o.addr, 64 << 10).unwrap();
        for size in [1, 7, 100_000, 3 << 20] {
            let (sent, got) = c
                .get(&origin::path("a", size), Want::of("a", size))
                .unwrap();
            assert!(got.first_byte >= sent && got.last_byte >= got.first_byte);
        }
        let e = c
            .get(&origin::path("a", 1000), Want::of("b", 1000))
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("differs"), "{e:#}");
        let mut c = Conn::open(o.addr, 64 << 10).unwrap();
        let e = c
            .get(&origin::path("a", 1000), Want::of("a", 1001))
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("Content-Length 1000"), "{e:#}");
    }
}

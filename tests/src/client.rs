//! A raw HTTP/1.1 client over one `TcpStream`: send bytes exactly as written (pipelining,
//! malformed requests), read responses framed by Content-Length or the chunked coding.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes per second a paced client reads at ([`Client::connect_paced`]).
    pace: Option<u64>,
}

/// Header or trailer fields: (name, value) pairs in order.
pub type Fields = Vec<(String, String)>;

/// One response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The trailer fields after a chunked body.
    pub trailers: Fields,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        Client::on(stream, None)
    }

    fn on(stream: TcpStream, pace: Option<u64>) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
            pace,
        }
    }

    /// A client that reads at about `bytes_per_sec`, through a receive buffer of 16 KiB
    /// set before it connects (so the kernel holds little ahead of it), as a client on a
    /// slow link does (`curl --limit-rate` reads whole socket buffers at once, too fast
    /// for rates near a chunk per second). [`Client::read_response`] reads at that pace.
    pub fn connect_paced(addr: SocketAddr, bytes_per_sec: u64) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket.set_recv_buffer_size(16 << 10).expect("SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .expect("connect");
        Client::on(socket.into(), Some(bytes_per_sec.max(1)))
    }

    /// The client's own port (what relay logs as its address).
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |a| a.port())
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send request");
    }

    /// Sends without panicking: Err once the server has closed the connection.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.get_with(path, "")
    }

    /// GET with more header field lines (each ending in CRLF).
    pub fn get_with(&mut self, path: &str, fields: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{fields}\r\n").as_bytes());
        self.read_response(false).expect("response")
    }

    /// Reads one response; `head_only` for responses to HEAD. None if the server closed
    /// the connection before a whole response arrived.
    pub fn read_response(&mut self, head_only: bool) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let chunked = headers.iter().any(|(n, v)| {
                        n.eq_ignore_ascii_case("transfer-encoding")
                            && v.eq_ignore_ascii_case("chunked")
                    });
                    let bodiless = head_only || matches!(status, 204 | 304);
                    if chunked && !bodiless {
                        self.buf.drain(..head_len);
                        let (body, trailers) = self.read_chunked()?;
                        return Some(Response {
                            status,
                            headers,
                            body,
                            trailers,
                        });
                    }
                    let len: usize = if bodiless {
                        0
                    } else {
                        headers
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse().ok())
                            .unwrap_or(0)
                    };
                    while self.buf.len() < head_len + len {
                        if !self.fill() {
                            return None;
                        }
                    }
                    let body = self.buf[head_len..head_len + len].to_vec();
                    self.buf.drain(..head_len + len);
                    return Some(Response {
                        status,
                        headers,
                        body,
                        trailers: Vec::new(),
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if !self.fill() {
                        return None;
                    }
                }
                Err(e) => panic!("bad response from relay: {e}"),
            }
        }
    }

    /// A body in the chunked coding, decoded, and the trailer fields after it. None if the
    /// connection closed before its end.
    fn read_chunked(&mut self) -> Option<(Vec<u8>, Fields)> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line()?;
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16)
                .expect("a chunk-size line");
            if size == 0 {
                break;
            }
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    return None;
                }
            }
            assert_eq!(
                &self.buf[size..size + 2],
                b"\r\n",
                "chunk data ends in CRLF"
            );
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                return Some((body, trailers));
            }
            let (name, value) = line.split_once(':').expect("a trailer field line");
            trailers.push((name.to_string(), value.trim().to_string()));
        }
    }

    /// The next CRLF-ended line, without its CRLF.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// True if the server closed the connection (EOF) within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }

    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        // A paced client reads 4 KiB at a time, then sleeps what they take at its pace.
        let most = match self.pace {
            Some(_) => 4096,
            None => tmp.len(),
        };
        match self.stream.read(&mut tmp[..most]) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                if let Some(rate) = self.pace {
                    std::thread::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate));
                }
                true
            }
        }
    }
}

/// `n` clients, each on a connection of its own opened beforehand, send `GET path` at the
/// same moment (a barrier releases them together); their responses, in order.
pub fn crowd(addr: SocketAddr, n: usize, path: &str) -> Vec<Response> {
    crowd_with(addr, n, path, "")
}

/// [`crowd`] with extra request header lines (`fields`, each ending in CRLF).
pub fn crowd_with(addr: SocketAddr, n: usize, path: &str, fields: &str) -> Vec<Response> {
    let mut clients: Vec<Client> = (0..n).map(|_| Client::connect(addr)).collect();
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|c| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    c.get_with(path, fields)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a crowd client panicked"))
            .collect()
    })
}

/// Sends `request` on a new connection and reads its response's head only, for a client
/// that then reads the body at a pace of its own: the stream (reads time out after 10 s),
/// the head's text, and the body bytes that came with it.
pub fn head_only(addr: SocketAddr, request: &str) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(request.as_bytes()).expect("send request");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut buf).expect("read the head");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let body = got.split_off(head_end);
    (s, String::from_utf8_lossy(&got).into_owned(), body)
}

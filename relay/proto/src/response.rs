//! Response heads encoded into a caller's buffer.
//!
//! [`ResponseHead::encode`] appends to a `Vec<u8>` and allocates only if the
//! vector must grow; numbers go through `itoa`. The `Date` value comes from a
//! [`DateCache`] the caller updates with its own clock.
//!
//! Field values are written as given: callers pass only values they built
//! (never raw request bytes), so no CR or LF can reach the output.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use httpdate::HttpDate;

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const IMF_FIXDATE_LEN: usize = 29;

/// `Content-Range` of a 206 or 416 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes start-end/total` (206).
    Bytes {
        /// First byte sent.
        start: u64,
        /// Last byte sent, inclusive.
        end: u64,
        /// Length of the whole representation.
        total: u64,
    },
    /// `bytes */total` (416).
    Unsatisfied {
        /// Length of the whole representation.
        total: u64,
    },
}

impl ContentRange {
    /// Appends the field value (no name, no CRLF).
    pub fn encode_value(&self, out: &mut Vec<u8>) {
        self.write_value(out);
    }

    pub(crate) fn write_value(&self, out: &mut impl Sink) {
        let mut num = itoa::Buffer::new();
        out.put(b"bytes ");
        match *self {
            ContentRange::Bytes { start, end, total } => {
                out.put(num.format(start).as_bytes());
                out.put(b"-");
                out.put(num.format(end).as_bytes());
                out.put(b"/");
                out.put(num.format(total).as_bytes());
            }
            ContentRange::Unsatisfied { total } => {
                out.put(b"*/");
                out.put(num.format(total).as_bytes());
            }
        }
    }
}

/// Where encoded bytes go: a buffer, or (in [`crate::multipart`]) a byte
/// counter, so lengths are computed by the code that writes.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The head of a response. Build with [`ResponseHead::new`] and struct update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    /// Status code, 100..=999 (three digits).
    pub status: u16,
    /// The request's minor version: with 0 (HTTP/1.0) a kept-alive connection
    /// is announced with `Connection: keep-alive`. The status line always says
    /// HTTP/1.1 (RFC 9110 §6.2).
    pub version: u8,
    /// `Content-Length`, if the response has one.
    pub content_length: Option<u64>,
    /// Whether the connection stays open; `false` sends `Connection: close`.
    pub keep_alive: bool,
    /// The `Date` value, an IMF-fixdate (see [`DateCache::get`]).
    pub date: &'a [u8],
    /// Sends `Cache-Status: relay; <value>`, e.g. `hit` or `fwd=miss`.
    pub cache_status: Option<&'a str>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `ETag`, quotes included.
    pub etag: Option<&'a [u8]>,
    /// `Last-Modified`, an IMF-fixdate.
    pub last_modified: Option<&'a [u8]>,
    /// `Content-Range`.
    pub content_range: Option<ContentRange>,
    /// Sends `Accept-Ranges: bytes`.
    pub accept_ranges: bool,
    /// More fields, written in order after the others.
    pub extra: &'a [(&'a str, &'a [u8])],
    /// Pre-encoded field lines (`Name: value\r\n` each), written after `extra`: an origin's
    /// end-to-end header fields, validated and encoded once when the response was stored.
    pub raw: &'a [u8],
    /// When set, only the lines of `raw` whose field names (any case) are among these are
    /// written: a 304's fields of a stored response (RFC 9110 §15.4.5).
    pub raw_only: Option<&'a [&'a str]>,
}

impl<'a> ResponseHead<'a> {
    /// A head with only a status and date: HTTP/1.1, keep-alive, no optional fields.
    pub fn new(status: u16, date: &'a [u8]) -> Self {
        ResponseHead {
            status,
            version: 1,
            content_length: None,
            keep_alive: true,
            date,
            cache_status: None,
            content_type: None,
            etag: None,
            last_modified: None,
            content_range: None,
            accept_ranges: false,
            extra: &[],
            raw: &[],
            raw_only: None,
        }
    }

    /// Appends the head, final CRLF included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(num.format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\nServer: relay\r\nDate: ");
        out.extend_from_slice(self.date);
        out.extend_from_slice(b"\r\n");
        if let Some(len) = self.content_length {
            field(out, b"Content-Length", num.format(len).as_bytes());
        }
        if let Some(content_type) = self.content_type {
            field(out, b"Content-Type", content_type.as_bytes());
        }
        if let Some(etag) = self.etag {
            field(out, b"ETag", etag);
        }
        if let Some(last_modified) = self.last_modified {
            field(out, b"Last-Modified", last_modified);
        }
        if let Some(range) = self.content_range {
            out.extend_from_slice(b"Content-Range: ");
            range.encode_value(out);
            out.extend_from_slice(b"\r\n");
        }
        if self.accept_ranges {
            out.extend_from_slice(b"Accept-Ranges: bytes\r\n");
        }
        if let Some(cache_status) = self.cache_status {
            out.extend_from_slice(b"Cache-Status: relay; ");
            out.extend_from_slice(cache_status.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in self.extra {
            field(out, name.as_bytes(), value);
        }
        match self.raw_only {
            None => out.extend_from_slice(self.raw),
            Some(names) => {
                for line in self.raw.split_inclusive(|&b| b == b'\n') {
                    let name = line.split(|&b| b == b':').next().unwrap_or_default();
                    if names
                        .iter()
                        .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
                    {
                        out.extend_from_slice(line);
                    }
                }
            }
        }
        if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for a status code; empty for codes relay does not know
/// (the reason phrase is optional, RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a complete error response: head with `Connection: close` and a
/// one-line `text/plain` body naming the status.
pub fn error_response(status: u16, date: &[u8], out: &mut Vec<u8>) {
    let reason = reason_phrase(status);
    let mut num = itoa::Buffer::new();
    let code = num.format(status);
    // Body: "<code> <reason>\n".
    let body_len = code.len() + 1 + reason.len() + 1;
    ResponseHead {
        content_length: Some(body_len as u64),
        keep_alive: false,
        content_type: Some("text/plain; charset=utf-8"),
        ..ResponseHead::new(status, date)
    }
    .encode(out);
    out.extend_from_slice(code.as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// The current `Date` value, reformatted only when the second changes.
#[derive(Debug, Clone)]
pub struct DateCache {
    secs: u64,
    bytes: [u8; IMF_FIXDATE_LEN],
}

impl DateCache {
    /// A cache holding `now`.
    pub fn new(now: SystemTime) -> Self {
        let secs = unix_secs(now);
        DateCache {
            secs,
            bytes: format_imf_fixdate(secs),
        }
    }

    /// Moves the cache to `now`; formats only if the second differs.
    pub fn update(&mut self, now: SystemTime) {
        let secs = unix_secs(now);
        if secs != self.secs {
            self.secs = secs;
            self.bytes = format_imf_fixdate(secs);
        }
    }

    /// The IMF-fixdate for the last update, 29 bytes.
    pub fn get(&self) -> &[u8] {
        &self.bytes
    }
}

impl Default for DateCache {
    /// A cache holding the Unix epoch; call [`DateCache::update`] before use.
    fn default() -> Self {
        DateCache::new(UNIX_EPOCH)
    }
}

/// Seconds since the epoch, clamped to what an IMF-fixdate can show
/// (1970 to 9999).
fn unix_secs(now: SystemTime) -> u64 {
    const YEAR_10000: u64 = 253_402_300_800;
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(YEAR_10000 - 1)
}

/// Formats an IMF-fixdate into a fixed array (no allocation).
fn format_imf_fixdate(secs: u64) -> [u8; IMF_FIXDATE_LEN] {
    struct Fixed {
        bytes: [u8; IMF_FIXDATE_LEN],
        len: usize,
    }
    impl fmt::Write for Fixed {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
            let dst = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut out = Fixed {
        bytes: *b"Thu, 01 Jan 1970 00:00:00 GMT",
        len: 0,
    };
    // `unix_secs` keeps the date in httpdate's range, so this cannot fail; if
    // it did, the epoch placeholder is still a valid date.
    let date = HttpDate::from(UNIX_EPOCH + Duration::from_secs(secs));
    if fmt::write(&mut out, format_args!("{date}")).is_err() || out.len != IMF_FIXDATE_LEN {
        return *b"Thu, 01 Jan 1970 00:00:00 GMT";
    }
    out.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn encode(head: &ResponseHead<'_>) -> String {
        let mut out = Vec::new();
        head.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn minimal_head() {
        let head = ResponseHead {
            content_length: Some(0),
            ..ResponseHead::new(200, DATE)
        };
        assert_eq!(
            encode(&head),
            "HTTP/1.1 200 OK\r\nServer: relay\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn full_head() {
        let extra: &[(&str, &[u8])] = &[("X-Relay-Node", b"edge-1"), ("Vary", b"Accept")];
        let head = ResponseHead {
            status: 206,
            version: 1,
            content_length: Some(100),
            keep_alive: false,
            date: DATE,
            cache_status: Some("hit"),
            content_type: Some("video/mp4"),
            etag: Some(b"\"abc\""),
            last_modified: Some(b"Sat, 05 Nov 1994 08:49:37 GMT"),
            content_range: Some(ContentRange::Bytes {
                start: 0,
                end: 99,
                total: 1000,
            }),
            accept_ranges: true,
            extra,
            raw: b"X-Origin: a\r\n",
            raw_only: None,
        };
        assert_eq!(
            encode(&head),
            "HTTP/1.1 206 Partial Content\r\n\
             Server: relay\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 100\r\n\
             Content-Type: video/mp4\r\n\
             ETag: \"abc\"\r\n\
             Last-Modified: Sat, 05 Nov 1994 08:49:37 GMT\r\n\
             Content-Range: bytes 0-99/1000\r\n\
             Accept-Ranges: bytes\r\n\
             Cache-Status: relay; hit\r\n\
             X-Relay-Node: edge-1\r\n\
             Vary: Accept\r\n\
             X-Origin: a\r\n\
             Connection: close\r\n\
             \r\n"
        );
    }

    #[test]
    fn connection_header_by_version() {
        let base = ResponseHead {
            status: 304,
            cache_status: Some("fwd=miss"),
            ..ResponseHead::new(304, DATE)
        };
        let http11 = encode(&base);
        assert_eq!(
            http11,
            "HTTP/1.1 304 Not Modified\r\nServer: relay\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nCache-Status: relay; fwd=miss\r\n\r\n"
        );
        let http10 = encode(&ResponseHead { version: 0, ..base });
        assert!(
            http10.ends_with("Connection: keep-alive\r\n\r\n"),
            "{http10}"
        );
        let http10_close = encode(&ResponseHead {
            version: 0,
            keep_alive: false,
            ..base
        });
        assert!(
            http10_close.ends_with("Connection: close\r\n\r\n"),
            "{http10_close}"
        );
        assert!(!http10_close.contains("keep-alive"));
    }

    #[test]
    fn raw_lines_by_name() {
        let raw = b"cache-control: max-age=60\r\nx-origin: a\r\nexpires: Sun, 06 Nov 1994 \
                    08:49:37 GMT\r\nvary: accept\r\ncontent-location: /a\r\n";
        let head = ResponseHead {
            raw,
            raw_only: Some(&["Cache-Control", "Expires", "Vary", "Content-Location"]),
            ..ResponseHead::new(304, DATE)
        };
        assert_eq!(
            encode(&head),
            "HTTP/1.1 304 Not Modified\r\nServer: relay\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\ncache-control: max-age=60\r\n\
             expires: Sun, 06 Nov 1994 08:49:37 GMT\r\nvary: accept\r\n\
             content-location: /a\r\n\r\n"
        );
        let none = ResponseHead {
            raw,
            raw_only: Some(&[]),
            ..ResponseHead::new(304, DATE)
        };
        assert!(!encode(&none).contains("x-origin"));
    }

    #[test]
    fn unsatisfied_range() {
        let head = ResponseHead {
            content_length: Some(0),
            content_range: Some(ContentRange::Unsatisfied { total: 1000 }),
            ..ResponseHead::new(416, DATE)
        };
        assert_eq!(
            encode(&head),
            "HTTP/1.1 416 Range Not Satisfiable\r\nServer: relay\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\n\
             Content-Range: bytes */1000\r\n\r\n"
        );
    }

    #[test]
    fn encode_does_not_allocate_with_capacity() {
        let head = ResponseHead {
            content_length: Some(u64::MAX),
            content_range: Some(ContentRange::Bytes {
                start: 1,
                end: u64::MAX,
                total: u64::MAX,
            }),
            ..ResponseHead::new(206, DATE)
        };
        let mut out = Vec::with_capacity(512);
        let ptr = out.as_ptr();
        head.encode(&mut out);
        head.encode(&mut out);
        assert_eq!(out.as_ptr(), ptr);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("18446744073709551615\r\n")
        );
    }

    #[test]
    fn error_responses() {
        let mut out = Vec::new();
        error_response(400, DATE, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 400 Bad Request\r\nServer: relay\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 16\r\n\
             Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
             400 Bad Request\n"
        );
        let mut out = Vec::new();
        error_response(431, DATE, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "431 Request Header Fields Too Large\n");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(206), "Partial Content");
        assert_eq!(reason_phrase(304), "Not Modified");
        assert_eq!(reason_phrase(414), "URI Too Long");
        assert_eq!(reason_phrase(416), "Range Not Satisfiable");
        assert_eq!(reason_phrase(501), "Not Implemented");
        assert_eq!(reason_phrase(599), "");
        let head = ResponseHead {
            content_length: Some(0),
            ..ResponseHead::new(599, DATE)
        };
        assert!(encode(&head).starts_with("HTTP/1.1 599 \r\n"));
    }

    #[test]
    fn date_cache() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut cache = DateCache::new(t);
        assert_eq!(cache.get(), DATE);
        cache.update(t + Duration::from_millis(999));
        assert_eq!(cache.get(), DATE);
        cache.update(t + Duration::from_secs(1));
        assert_eq!(cache.get(), b"Sun, 06 Nov 1994 08:49:38 GMT");
        cache.update(t + Duration::from_secs(86_400 * 366));
        assert_eq!(cache.get(), b"Tue, 07 Nov 1995 08:49:37 GMT");
        assert_eq!(DateCache::default().get(), b"Thu, 01 Jan 1970 00:00:00 GMT");
        // Clocks outside IMF-fixdate's range clamp instead of panicking.
        cache.update(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(cache.get(), b"Thu, 01 Jan 1970 00:00:00 GMT");
        cache.update(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4));
        assert_eq!(cache.get(), b"Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(cache.get().len(), IMF_FIXDATE_LEN);
    }
}

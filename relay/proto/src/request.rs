//! Request-head parsing: bytes in, a borrowed [`Request`] or a status to close with.
//!
//! [`parse_request`] is called each time more bytes arrive. It returns
//! [`Parsed::Partial`] until the head is complete, then [`Parsed::Complete`]
//! with the head length so pipelined requests can be parsed from
//! `buf[head_len + content_length..]`. Parsing uses `httparse` with a stack array
//! of header slots and never allocates.
//!
//! Limits are checked on partial input too, so a peer cannot make the caller
//! buffer more than [`Limits::max_head_bytes`] before being answered.

use std::mem::MaybeUninit;

use crate::response::reason_phrase;
use crate::target::{Authority, Target};

/// Hard ceiling on [`Limits::max_headers`]: the size of the stack array of header slots.
pub const MAX_HEADERS_CAP: usize = 100;

/// Size limits on one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted head (request line, header fields, final CRLF); longer → 431.
    pub max_head_bytes: usize,
    /// Most header fields accepted; more → 431. Values above [`MAX_HEADERS_CAP`] act as it.
    pub max_headers: usize,
    /// Longest accepted request-target; longer → 414.
    pub max_uri_bytes: usize,
}

impl Limits {
    /// 16 KiB heads, 64 header fields, 8 KiB request-targets.
    pub const DEFAULT: Limits = Limits {
        max_head_bytes: 16 * 1024,
        max_headers: 64,
        max_uri_bytes: 8 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The request method, as far as relay cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// Any other valid method token; see [`Request::method_str`].
    Other,
}

impl Method {
    fn from_token(token: &str) -> Method {
        // Methods are case-sensitive (RFC 9110 §9.1).
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// A parsed request head, borrowing from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, classified.
    pub method: Method,
    /// The method token as sent.
    pub method_str: &'a str,
    /// The request-target as sent.
    pub target: &'a str,
    /// The target's path without query or fragment. Absolute-form targets give
    /// their path (`/` if they have none); `*` (OPTIONS only) gives `*`;
    /// authority-form (CONNECT only) gives the empty string.
    pub path: &'a str,
    /// The target's query, without its `?` (and without a fragment).
    pub query: Option<&'a str>,
    /// The authority the request is for: an absolute-form target's, which replaces `Host`
    /// (RFC 9112 §3.2.2), else the `Host` field's; none for an HTTP/1.0 request without
    /// `Host`. Validated (a `Host` that is not `uri-host [ ":" port ]` is refused).
    pub authority: Option<Authority<'a>>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Whether the connection stays open after this exchange (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// Length of the body following the head (0 if none, or if it is chunked); the caller
    /// skips it.
    pub content_length: u64,
    /// The body follows in the chunked transfer coding (`Transfer-Encoding: chunked`): the
    /// caller reads it with a [`crate::chunked::Decoder`] to find where it ends.
    pub chunked: bool,
    /// The `Host` field value as sent (validated as [`Request::authority`] is).
    pub host: Option<&'a [u8]>,
    /// The `Range` field value.
    pub range: Option<&'a [u8]>,
    /// The `If-Range` field value.
    pub if_range: Option<&'a [u8]>,
    /// The `If-None-Match` field value.
    pub if_none_match: Option<&'a [u8]>,
    /// The `If-Modified-Since` field value.
    pub if_modified_since: Option<&'a [u8]>,
    /// The `If-Match` field value; None when the field came on several lines (not
    /// evaluated here then: the origin is the one to judge a list split so).
    pub if_match: Option<&'a [u8]>,
    /// The `If-Unmodified-Since` field value.
    pub if_unmodified_since: Option<&'a [u8]>,
    /// The request carries `Authorization` (a shared cache must not answer it from, nor
    /// store its response in, the cache unless the response allows it: RFC 9111 §3.5).
    pub authorization: bool,
    /// The request carries `Cache-Control` or `Pragma`: directives of its own for the
    /// cache (RFC 9111 §5.2.1, §5.4), read from the head by whoever answers it
    /// ([`crate::forward::with_fields`]); most requests carry none, and cost nothing here.
    pub cache_directives: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110 §10.1.1): the client may
    /// wait for a `100 Continue` before it sends its body. HTTP/1.0 requests never have it
    /// (a server must ignore the expectation there).
    pub expect_continue: bool,
}

impl Request<'_> {
    /// Appends the target in origin-form, what goes upstream and into a cache key: the path,
    /// then `?` and the query if there is one. For an absolute-form target that is its path
    /// and query (`http://h?q` gives `/?q`); for origin-form, the target without a fragment.
    pub fn push_origin_form(&self, out: &mut String) {
        out.push_str(self.path);
        if let Some(query) = self.query {
            out.push('?');
            out.push_str(query);
        }
    }
}

/// Outcome of [`parse_request`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned by value once per request head; boxing it would allocate per request"
)]
pub enum Parsed<'a> {
    /// The head is not complete yet: read more and call again with the whole buffer.
    Partial,
    /// A complete head of `head_len` bytes (leading empty lines included).
    Complete {
        /// The request.
        request: Request<'a>,
        /// Bytes of `buf` taken by the head; the body (if any) starts here.
        head_len: usize,
    },
}

/// Why a request was refused. Each one means: answer with [`ParseError::status`]
/// and close the connection.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The head is longer than [`Limits::max_head_bytes`].
    #[error("request head exceeds the size limit")]
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`].
    #[error("request has more header fields than allowed")]
    TooManyHeaders,
    /// The request-target is longer than [`Limits::max_uri_bytes`].
    #[error("request-target exceeds the length limit")]
    UriTooLong,
    /// The request line is not `method SP request-target SP HTTP-version CRLF`.
    #[error("malformed request line")]
    InvalidRequestLine,
    /// The request-target is not in a form relay accepts for this method.
    #[error("malformed request-target")]
    InvalidTarget,
    /// A header line is malformed: bad name or value bytes, whitespace before
    /// the colon, obsolete line folding.
    #[error("malformed header field")]
    InvalidHeader,
    /// An HTTP version other than 1.0 or 1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// `Content-Length` is not a plain decimal number that fits in 64 bits.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several `Content-Length` fields with different values.
    #[error("conflicting Content-Length fields")]
    ConflictingContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3).
    #[error("both Transfer-Encoding and Content-Length")]
    TransferEncodingWithContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 request (RFC 9112 §6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingHttp10,
    /// `Transfer-Encoding` with codings before `chunked` (such as `gzip, chunked`): relay
    /// decodes only the chunked coding.
    #[error("transfer codings other than chunked are not supported")]
    TransferEncodingUnsupported,
    /// `Transfer-Encoding` whose final coding is not `chunked`: the body's length cannot be
    /// known (RFC 9112 §6.3).
    #[error("Transfer-Encoding whose final coding is not chunked")]
    TransferEncodingNotChunked,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    /// More than one `Host` field.
    #[error("more than one Host field")]
    MultipleHost,
    /// A `Host` value that is not `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 9112 §3.2).
    #[error("invalid Host field")]
    InvalidHost,
    /// A field relay reads that must appear at most once appears again.
    #[error("header field {0} repeated")]
    DuplicateHeader(&'static str),
    /// An `Expect` value other than `100-continue` (RFC 9110 §10.1.1).
    #[error("unsupported expectation")]
    UnsupportedExpectation,
}

impl ParseError {
    /// Status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::UriTooLong => 414,
            ParseError::UnsupportedVersion => 505,
            ParseError::TransferEncodingUnsupported => 501,
            ParseError::UnsupportedExpectation => 417,
            ParseError::InvalidRequestLine
            | ParseError::InvalidTarget
            | ParseError::InvalidHeader
            | ParseError::InvalidContentLength
            | ParseError::ConflictingContentLength
            | ParseError::TransferEncodingWithContentLength
            | ParseError::TransferEncodingNotChunked
            | ParseError::TransferEncodingHttp10
            | ParseError::MissingHost
            | ParseError::MultipleHost
            | ParseError::InvalidHost
            | ParseError::DuplicateHeader(_) => 400,
        }
    }

    /// Reason phrase of [`ParseError::status`].
    pub fn reason(&self) -> &'static str {
        reason_phrase(self.status())
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns [`Parsed::Partial`] when more bytes are needed; never an error for
/// a prefix of a valid request that is within `limits`.
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, ParseError> {
    // Parse only as much as a head may take: a complete head inside the window
    // is within the limit, a partial one with more bytes behind it is not.
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let mut slots = [MaybeUninit::<httparse::Header<'a>>::uninit(); MAX_HEADERS_CAP];
    let slots = slots
        .get_mut(..limits.max_headers.min(MAX_HEADERS_CAP))
        .unwrap_or_default();
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(head_len)) => {
            let request = interpret(&parsed, limits)?;
            Ok(Parsed::Complete { request, head_len })
        }
        Ok(httparse::Status::Partial) => {
            if partial_target_len(window) > limits.max_uri_bytes {
                Err(ParseError::UriTooLong)
            } else if buf.len() > window.len() {
                Err(ParseError::HeadTooLarge)
            } else {
                Ok(Parsed::Partial)
            }
        }
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::TooManyHeaders),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue) => {
            Err(ParseError::InvalidHeader)
        }
        Err(httparse::Error::Version) => Err(version_error(window)),
        Err(httparse::Error::NewLine) => Err(newline_error(window)),
        Err(httparse::Error::Token | httparse::Error::Status) => {
            Err(ParseError::InvalidRequestLine)
        }
    }
}

/// Builds a [`Request`] from a complete httparse head and applies the checks
/// httparse leaves to us.
fn interpret<'a>(
    parsed: &httparse::Request<'_, 'a>,
    limits: &Limits,
) -> Result<Request<'a>, ParseError> {
    let (Some(method_str), Some(target), Some(version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(ParseError::InvalidRequestLine);
    };
    if target.len() > limits.max_uri_bytes {
        return Err(ParseError::UriTooLong);
    }
    let method = Method::from_token(method_str);
    let split = Target::parse(method_str, target)?;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = None;
    let mut host = None;
    let mut connection = ConnectionTokens::default();
    let mut range = None;
    let mut if_range = None;
    let mut if_none_match = None;
    let mut if_modified_since = None;
    let mut if_match = None;
    let mut if_match_lines = 0u32;
    let mut if_unmodified_since = None;
    let mut authorization = false;
    let mut cache_directives = false;
    let mut expect = None;

    for header in parsed.headers.iter() {
        let value = header.value;
        match FieldName::classify(header.name) {
            FieldName::ContentLength => {
                let n = parse_content_length(value)?;
                if content_length.is_some_and(|seen| seen != n) {
                    return Err(ParseError::ConflictingContentLength);
                }
                content_length = Some(n);
            }
            FieldName::TransferEncoding => {
                set_once(&mut transfer_encoding, value, "Transfer-Encoding")?;
            }
            FieldName::Host => {
                if host.replace(value).is_some() {
                    return Err(ParseError::MultipleHost);
                }
            }
            FieldName::Connection => connection.scan(value),
            FieldName::Range => set_once(&mut range, value, "Range")?,
            FieldName::IfRange => set_once(&mut if_range, value, "If-Range")?,
            FieldName::IfNoneMatch => set_once(&mut if_none_match, value, "If-None-Match")?,
            FieldName::IfModifiedSince => {
                set_once(&mut if_modified_since, value, "If-Modified-Since")?;
            }
            FieldName::IfMatch => {
                if_match_lines += 1;
                if_match = Some(value);
            }
            FieldName::IfUnmodifiedSince => {
                set_once(&mut if_unmodified_since, value, "If-Unmodified-Since")?;
            }
            FieldName::Authorization => authorization = true,
            FieldName::CacheDirectives => cache_directives = true,
            FieldName::Expect => set_once(&mut expect, value, "Expect")?,
            FieldName::Other => {}
        }
    }

    let chunked = match transfer_encoding {
        None => false,
        Some(_) if content_length.is_some() => {
            return Err(ParseError::TransferEncodingWithContentLength);
        }
        Some(_) if version == 0 => return Err(ParseError::TransferEncodingHttp10),
        Some(value) => {
            transfer_codings(value)?;
            true
        }
    };
    if version == 1 && host.is_none() {
        return Err(ParseError::MissingHost);
    }
    // A bad Host is refused even when an absolute-form target overrides it (RFC 9112 §3.2).
    let host_authority = host.map(Authority::parse).transpose()?;
    let expect_continue = match expect {
        None => false,
        Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"100-continue") => version == 1,
        Some(_) => return Err(ParseError::UnsupportedExpectation),
    };
    let keep_alive = match version {
        0 => connection.keep_alive && !connection.close,
        _ => !connection.close,
    };

    Ok(Request {
        method,
        method_str,
        target,
        path: split.path,
        query: split.query,
        authority: split.authority.or(host_authority),
        version,
        keep_alive,
        content_length: content_length.unwrap_or(0),
        chunked,
        host,
        range,
        if_range,
        if_none_match,
        if_modified_since,
        if_match: if_match.filter(|_| if_match_lines == 1),
        if_unmodified_since,
        authorization,
        cache_directives,
        expect_continue,
    })
}

/// A request's one `Transfer-Encoding` value: exactly `chunked` (any case, optional
/// whitespace) is read; other codings before a final `chunked` are 501; a final coding that
/// is not `chunked` is 400. Like nginx, relay takes no list it would have to undo in part,
/// and a second `Transfer-Encoding` field is refused as a duplicate before this.
fn transfer_codings(value: &[u8]) -> Result<(), ParseError> {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or(value);
    if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
        return Err(ParseError::TransferEncodingNotChunked);
    }
    if value.contains(&b',') {
        return Err(ParseError::TransferEncodingUnsupported);
    }
    Ok(())
}

/// The header fields the parser looks at.
enum FieldName {
    ContentLength,
    TransferEncoding,
    Host,
    Connection,
    Range,
    IfRange,
    IfNoneMatch,
    IfModifiedSince,
    IfMatch,
    IfUnmodifiedSince,
    Authorization,
    /// `Cache-Control` or `Pragma`.
    CacheDirectives,
    Expect,
    Other,
}

impl FieldName {
    fn classify(name: &str) -> FieldName {
        // Dispatch on length first so most fields cost one comparison.
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        match name.len() {
            4 if is("host") => FieldName::Host,
            5 if is("range") => FieldName::Range,
            6 if is("expect") => FieldName::Expect,
            6 if is("pragma") => FieldName::CacheDirectives,
            8 if is("if-range") => FieldName::IfRange,
            8 if is("if-match") => FieldName::IfMatch,
            10 if is("connection") => FieldName::Connection,
            13 if is("if-none-match") => FieldName::IfNoneMatch,
            13 if is("authorization") => FieldName::Authorization,
            13 if is("cache-control") => FieldName::CacheDirectives,
            14 if is("content-length") => FieldName::ContentLength,
            17 if is("transfer-encoding") => FieldName::TransferEncoding,
            17 if is("if-modified-since") => FieldName::IfModifiedSince,
            19 if is("if-unmodified-since") => FieldName::IfUnmodifiedSince,
            _ => FieldName::Other,
        }
    }
}

/// `close` and `keep-alive` options seen across all `Connection` fields.
#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
}

impl ConnectionTokens {
    fn scan(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = trim_ows(token);
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }
}

fn set_once<'a>(
    slot: &mut Option<&'a [u8]>,
    value: &'a [u8],
    name: &'static str,
) -> Result<(), ParseError> {
    // These fields are singletons (or, for If-None-Match, a list a client
    // sends in one line); two copies are ambiguous, so refuse rather than guess.
    match slot.replace(value) {
        Some(_) => Err(ParseError::DuplicateHeader(name)),
        None => Ok(()),
    }
}

/// `Content-Length = 1*DIGIT`, nothing else: no sign, no list, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    decimal(value).ok_or(ParseError::InvalidContentLength)
}

/// `1*DIGIT` that fits in 64 bits, nothing else (no sign, no whitespace).
pub(crate) fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The request line's bytes: leading empty lines skipped, up to (not
/// including) the first LF or the end of the input.
fn request_line(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = buf.get(start..).unwrap_or_default();
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    line.get(..end).unwrap_or_default()
}

/// Length of the request-target received so far (0 if it has not started).
fn partial_target_len(buf: &[u8]) -> usize {
    let line = request_line(buf);
    let Some(method_end) = line.iter().position(|&b| b == b' ') else {
        return 0;
    };
    let target = line.get(method_end + 1..).unwrap_or_default();
    target
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(target.len())
}

/// The request line's third field, if it has started.
fn version_field(buf: &[u8]) -> &[u8] {
    let mut fields = request_line(buf).splitn(3, |&b| b == b' ');
    let version = fields.nth(2).unwrap_or_default();
    version.strip_suffix(b"\r").unwrap_or(version)
}

/// httparse reports any version but 1.0 and 1.1 as a `Version` error: a
/// well-formed `HTTP/<digit>...` is a version we do not speak (505), anything
/// else is a malformed request line (400).
fn version_error(buf: &[u8]) -> ParseError {
    match version_field(buf) {
        [b'H', b'T', b'T', b'P', b'/', d, ..] if d.is_ascii_digit() => {
            ParseError::UnsupportedVersion
        }
        _ => ParseError::InvalidRequestLine,
    }
}

/// A `NewLine` error is in the request line (junk after the version) or at a
/// header line's end (a lone CR). A version field of exactly `HTTP/1.x` means
/// the request line ended cleanly, so the fault is in the headers.
fn newline_error(buf: &[u8]) -> ParseError {
    match version_field(buf) {
        b"HTTP/1.1" | b"HTTP/1.0" => ParseError::InvalidHeader,
        _ => ParseError::InvalidRequestLine,
    }
}

#[cfg(test)]
mod tests;

//! Sans-IO HTTP/1.1 for relay (RFC 9110 semantics, RFC 9112 framing).
//!
//! Nothing here touches a socket or reads a clock: the caller hands in bytes and
//! the current time, and gets back parsed requests and encoded response heads.
//!
//! # Layout
//!
//! - [`request`]: [`parse_request`] turns the bytes of a request head into a
//!   borrowed [`Request`], enforcing [`Limits`] and the request-smuggling
//!   defences; every [`ParseError`] maps to a status to answer with before
//!   closing.
//! - [`target`]: the request's [`Authority`] (`Host`, or an absolute-form target's),
//!   validated and normalised for cache keys, and the target split into path and query.
//! - [`chunked`]: the chunked transfer coding of request bodies, decoded
//!   incrementally and strictly, without allocating.
//! - [`range`]: `Range: bytes=..` into at most [`range::MAX_RANGES`] byte
//!   ranges, without allocating.
//! - [`conditional`]: `If-None-Match`, `If-Modified-Since` and `If-Range`
//!   evaluated in RFC 9110 §13.2.2 order.
//! - [`response`]: response heads encoded into a caller's buffer, reason
//!   phrases, canned error responses and the once-a-second [`DateCache`].
//! - [`multipart`]: `multipart/byteranges` part heads and the exact body length
//!   for multi-range responses.
//! - [`forward`]: which of a client's request header fields go on to an origin
//!   (cache fills and pass-throughs).
//!
//! The fuzz targets for [`parse_request`] and [`range::parse_range`] live in
//! `fuzz/` (cargo-fuzz layout, its own workspace; `cargo xtask fuzz`).

pub mod chunked;
pub mod conditional;
pub mod forward;
pub mod multipart;
pub mod range;
pub mod request;
pub mod response;
pub mod target;

/// Hop-by-hop header fields (RFC 9110 §7.6.1), lower-case: they concern one connection and
/// are never forwarded (nor are the fields a `Connection` header names).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub use request::{Limits, MAX_HEADERS_CAP, Method, ParseError, Parsed, Request, parse_request};
pub use response::{ContentRange, DateCache, ResponseHead, error_response, reason_phrase};
pub use target::{Authority, HTTP_PORT};

//! RFC conformance of relay as a shared cache and HTTP/1.1 intermediary, one module per
//! RFC, each test named after the section it checks (`rfc9111_5_2_1_...`). The origin is
//! software no one here wrote (node's `http` module; see `kit`), the client is curl.
//! Other suites check sections too where their kit fits better: `keys.rs` (RFC 9112 §3.2),
//! `forward.rs` (RFC 9111 §3.5, §4.3.5), `answers_attack.rs` and `third_party.rs` (framing
//! against raw sockets, python and nginx); the policy's own unit tests in relay-cache.

mod kit;
mod rfc8297;
mod rfc9110;
mod rfc9111;
mod rfc9112;

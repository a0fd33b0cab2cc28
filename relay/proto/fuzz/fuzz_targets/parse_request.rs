//! Feeds arbitrary bytes to `parse_request` (and the range and conditional
//! parsers on the fields it finds), checking it never panics and that what it
//! reports stays inside the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_proto::range::{ByteRange, MAX_RANGES, parse_range};
use relay_proto::{Limits, Parsed, conditional, parse_request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut rest = data;
    // Walk pipelined requests the way the server does.
    while let Ok(Parsed::Complete { request, head_len }) = parse_request(rest, &limits) {
        assert!(head_len > 0 && head_len <= rest.len());
        assert!(head_len <= limits.max_head_bytes);
        assert!(request.target.len() <= limits.max_uri_bytes);
        if let Some(range) = request.range {
            let mut out = [ByteRange::default(); MAX_RANGES];
            let _ = parse_range(range, request.content_length, &mut out);
        }
        // Request bytes stand in for the validators: any bytes must be safe.
        let _ = conditional::evaluate(
            request.if_none_match,
            request.if_modified_since,
            request.host,
            request.if_range,
        );
        if let Some(if_range) = request.if_range {
            let _ = conditional::if_range_allows(if_range, request.if_none_match, request.host);
        }
        let body = usize::try_from(request.content_length).unwrap_or(usize::MAX);
        match head_len.checked_add(body).and_then(|skip| rest.get(skip..)) {
            Some(next) => rest = next,
            None => break,
        }
    }
    // Every prefix of the input parses without panicking, too.
    if data.len() <= 256 {
        for end in 0..data.len() {
            let _ = parse_request(&data[..end], &limits);
        }
    }
});

//! `range::parse_range` on arbitrary `Range` values and representation lengths.
//!
//! Input: the first 8 bytes (little-endian, zero-padded) are the representation length, the
//! rest is the field value. Each value is tried against that length, a small length derived
//! from it, 0 and `u64::MAX`. Properties:
//!
//! - every range returned lies inside the representation (`start <= end < len`);
//! - the ranges are sorted, and neither overlap nor touch (they were coalesced);
//! - `Multi(n)` has `2 <= n <= MAX_RANGES`; a zero length is never satisfiable;
//! - the result is a normal form: writing the ranges back as `bytes=a-b,c-d` and parsing
//!   again gives the same result;
//! - the `multipart/byteranges` body length for the ranges is at least their bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_proto::multipart::Multipart;
use relay_proto::range::{ByteRange, MAX_RANGES, RangeSpec, parse_range};

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(8);
    let mut len = [0u8; 8];
    len[..split].copy_from_slice(&data[..split]);
    let len = u64::from_le_bytes(len);
    let value = &data[split..];
    for len in [len, len % 4096, 0, u64::MAX] {
        check(value, len);
    }
});

fn check(value: &[u8], len: u64) {
    let mut out = [ByteRange::default(); MAX_RANGES];
    let spec = parse_range(value, len, &mut out);
    let ranges: &[ByteRange] = match spec {
        RangeSpec::None => return,
        RangeSpec::Unsatisfiable => return,
        RangeSpec::Single(r) => {
            assert_eq!(r, out[0], "Single must also be the first output entry");
            &out[..1]
        }
        RangeSpec::Multi(n) => {
            assert!((2..=MAX_RANGES).contains(&n), "Multi({n})");
            &out[..n]
        }
    };
    assert!(len > 0, "a range of an empty representation: {spec:?}");
    for r in ranges {
        assert!(r.start <= r.end && r.end < len, "{r:?} outside 0..{len}");
    }
    for pair in ranges.windows(2) {
        assert!(
            pair[0]
                .end
                .checked_add(1)
                .is_some_and(|e| e < pair[1].start),
            "not sorted and coalesced: {pair:?}"
        );
    }
    let total: u64 = ranges.iter().map(ByteRange::len).sum();
    assert!(total <= len);

    // The output is a fixed point.
    let mut again = b"bytes=".to_vec();
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            again.push(b',');
        }
        again.extend_from_slice(format!("{}-{}", r.start, r.end).as_bytes());
    }
    let mut out2 = [ByteRange::default(); MAX_RANGES];
    let spec2 = parse_range(&again, len, &mut out2);
    assert_eq!(
        spec,
        spec2,
        "re-parsing {:?}",
        String::from_utf8_lossy(&again)
    );
    assert_eq!(&out2[..ranges.len()], ranges);

    if ranges.len() > 1 {
        let m = Multipart::new("relay-boundary", Some("video/mp4"), len).expect("valid boundary");
        assert!(m.body_len(ranges) >= total);
    }
}

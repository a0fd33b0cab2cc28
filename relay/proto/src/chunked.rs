//! The chunked transfer coding of request bodies (RFC 9112 §7.1), decoded incrementally.
//!
//! A [`Decoder`] is fed whatever bytes have arrived; it hands the body's bytes to a sink as
//! it finds them and says how much input it consumed. Input that ends inside a chunk-size
//! line, a chunk's closing CRLF or a trailer line is left unconsumed: the caller keeps it
//! and calls again with more behind it. Nothing is allocated.
//!
//! The coding is read strictly, because a proxy and the server behind it that frame the same
//! bytes differently are how requests get smuggled: every line ends in CRLF (no bare LF or
//! CR anywhere), a chunk-size has at least one hex digit and fits in 64 bits, extensions hold
//! no control characters, each chunk's data is followed by exactly CRLF, and trailer fields
//! are `name: value` lines (dropped: relay forwards the body with a `Content-Length`). Lines
//! and the trailer section are bounded, so a peer cannot make the caller buffer without end.

/// Longest chunk-size line accepted, extensions and CRLF included.
pub const MAX_SIZE_LINE: usize = 4096;

/// Why a chunked body cannot be read; the request gets a 400 and its connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk-size line that is not `1*HEXDIG [ chunk-ext ] CRLF`, or a size over 64 bits.
    #[error("invalid chunk-size line")]
    InvalidSize,
    /// A chunk-size line longer than [`MAX_SIZE_LINE`].
    #[error("chunk-size line too long")]
    SizeLineTooLong,
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    /// A trailer line that is not a header field line.
    #[error("invalid trailer field")]
    InvalidTrailer,
    /// The trailer section is longer than the decoder's limit.
    #[error("trailer section too large")]
    TrailerTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// In the trailer section (after the last chunk), at the start of a line.
    Trailer,
    /// The body is complete.
    Done,
}

/// Where a [`Decoder::decode`] call stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input taken; the rest is for the next call (or, once `done`, the next
    /// request on the connection).
    pub consumed: usize,
    /// The body ended: its last chunk and trailer section are read.
    pub done: bool,
}

/// Incremental decoder of one chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    /// Body bytes decoded so far.
    body_len: u64,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

impl Decoder {
    /// A decoder at the start of a body whose trailer section may take `max_trailer_bytes`.
    pub fn new(max_trailer_bytes: usize) -> Decoder {
        Decoder {
            state: State::Size,
            body_len: 0,
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Body bytes decoded so far.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `buf`, handing each run of body bytes to `data` in order. Stops when
    /// the body ends or the input does; never consumes a partial line.
    pub fn decode(
        &mut self,
        buf: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Progress, ChunkedError> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                State::Done => break,
                State::Size => {
                    let Some(line) = line(
                        rest,
                        MAX_SIZE_LINE,
                        ChunkedError::SizeLineTooLong,
                        ChunkedError::InvalidSize,
                    )?
                    else {
                        break;
                    };
                    let size = chunk_size(&rest[..line])?;
                    at += line;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(&rest[..n]);
                    at += n;
                    self.body_len += n as u64;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => match rest {
                    [] | [b'\r'] => break,
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        self.state = State::Size;
                    }
                    _ => return Err(ChunkedError::MissingCrlf),
                },
                State::Trailer => {
                    let room = self.max_trailer_bytes - self.trailer_bytes;
                    let Some(line) = line(
                        rest,
                        room,
                        ChunkedError::TrailerTooLarge,
                        ChunkedError::InvalidTrailer,
                    )?
                    else {
                        break;
                    };
                    let field = &rest[..line - 2];
                    if !field.is_empty() && !is_field_line(field) {
                        return Err(ChunkedError::InvalidTrailer);
                    }
                    at += line;
                    self.trailer_bytes += line;
                    if field.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
        Ok(Progress {
            consumed: at,
            done: self.state == State::Done,
        })
    }
}

/// The length of the CRLF-terminated line at the start of `buf`, CRLF included; `None` if
/// the line is not complete yet. A line (or a partial one) longer than `max` is `too_long`;
/// a CR or LF anywhere but at its end is an invalid line.
fn line(
    buf: &[u8],
    max: usize,
    too_long: ChunkedError,
    invalid: ChunkedError,
) -> Result<Option<usize>, ChunkedError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) if lf == 0 || window[lf - 1] != b'\r' || window[..lf - 1].contains(&b'\r') => {
            Err(invalid)
        }
        Some(lf) => Ok(Some(lf + 1)),
        // A CR that is not the last byte so far is a bare CR (looked for first, so that the
        // same bytes give the same error however they arrive).
        None if window.iter().rev().skip(1).any(|&b| b == b'\r') => Err(invalid),
        None if buf.len() >= max => Err(too_long),
        None => Ok(None),
    }
}

/// The size on a complete chunk-size line (CRLF included, no other CR or LF in it):
/// `1*HEXDIG *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ) CRLF`
/// (RFC 9112 §7.1.1), extensions checked and ignored. Leading zeros are allowed; the size
/// must fit in 64 bits. Written here rather than taken from `httparse::parse_chunk_size`,
/// which also takes a line without digits (as 0), whitespace with no extension after it,
/// and any byte inside an extension.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let line = &line[..line.len() - 2];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkedError::InvalidSize);
    }
    let (hex, mut rest) = line.split_at(digits);
    let zeros = hex.iter().take_while(|&&b| b == b'0').count();
    let significant = &hex[zeros..];
    if significant.len() > 16 {
        return Err(ChunkedError::InvalidSize);
    }
    let size = significant.iter().fold(0u64, |n, &b| {
        // Checked above: hex digits, at most 16 of them.
        (n << 4) | u64::from((b as char).to_digit(16).unwrap_or(0))
    });
    while !rest.is_empty() {
        rest = extension(rest).ok_or(ChunkedError::InvalidSize)?;
    }
    Ok(size)
}

/// One `BWS ";" BWS name [ BWS "=" BWS value ]` at the start of `s`; what follows it.
fn extension(s: &[u8]) -> Option<&[u8]> {
    let s = skip_ws(s).strip_prefix(b";")?;
    let s = skip_ws(s);
    let name = s.iter().take_while(|&&b| is_tchar(b)).count();
    if name == 0 {
        return None;
    }
    let s = &s[name..];
    let Some(s) = skip_ws(s).strip_prefix(b"=") else {
        // Whitespace only before another extension, never at the end of the line.
        return (s.is_empty() || skip_ws(s).first() == Some(&b';')).then_some(s);
    };
    let s = skip_ws(s);
    let value = match s.first() {
        Some(b'"') => quoted_string(s)?,
        _ => s.iter().take_while(|&&b| is_tchar(b)).count(),
    };
    if value == 0 {
        return None;
    }
    let s = &s[value..];
    (s.is_empty() || skip_ws(s).first() == Some(&b';')).then_some(s)
}

/// The length of the quoted-string at the start of `s` (which starts with `"`).
fn quoted_string(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return Some(i + 1),
            b'\\' => {
                let next = *s.get(i + 1)?;
                if next != b'\t' && !(0x20..0x7f).contains(&next) && next < 0x80 {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// Whether a trailer line is `field-name ":" OWS field-value OWS` with a token name and a
/// value free of control characters (other than HTAB).
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_tchar(b))
        && value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces cut at `cuts`, as a caller with a receive buffer would:
    /// unconsumed bytes stay and the next piece is appended.
    fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = Decoder::new(1024);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut taken = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            pending.extend_from_slice(&input[fed..cut]);
            fed = cut;
            let p = d.decode(&pending, |b| body.extend_from_slice(b))?;
            pending.drain(..p.consumed);
            taken += p.consumed;
            if p.done {
                assert_eq!(d.body_len(), body.len() as u64);
                return Ok((body, taken));
            }
        }
        panic!("input ended before the body: {:?}", d.state);
    }

    const WIRE: &[u8] =
        b"5\r\nhello\r\n1a; ext=\"a b\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 12\r\n\r\nGET";

    #[test]
    fn a_body_decodes_the_same_whatever_the_pieces() {
        let want = b"helloabcdefghijklmnopqrstuvwxyz".to_vec();
        let end = WIRE.len() - 3;
        assert_eq!(decode_in_pieces(WIRE, &[]).unwrap(), (want.clone(), end));
        for a in 0..WIRE.len() {
            assert_eq!(
                decode_in_pieces(WIRE, &[a]).unwrap(),
                (want.clone(), end),
                "cut at {a}"
            );
            for b in a..WIRE.len() {
                assert_eq!(decode_in_pieces(WIRE, &[a, b]).unwrap().0, want);
            }
        }
    }

    #[test]
    fn extensions_and_leading_zeros_that_the_grammar_allows() {
        for line in [
            &b"5;a\r\n"[..],
            b"5 ;a\r\n",
            b"5\t; a = b\r\n",
            b"5;a=\"q \\\" ;\"\r\n",
            b"5;a=b;c;d=\"\"\r\n",
            b"5 ; a ; b = c\r\n",
            b"00000000000000000000005\r\n",
        ] {
            let wire = [line, b"hello\r\n0\r\n\r\n"].concat();
            let got = decode_in_pieces(&wire, &[]);
            assert_eq!(
                got.map(|(b, _)| b),
                Ok(b"hello".to_vec()),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let mut d = Decoder::new(64);
        let p = d
            .decode(b"0000000000000000ffffffffffffffff\r\n", |_| {})
            .unwrap();
        assert_eq!(p.consumed, 34);
        assert_eq!(d.state, State::Data(u64::MAX));
    }

    #[test]
    fn an_empty_body_and_upper_case_sizes() {
        assert_eq!(decode_in_pieces(b"0\r\n\r\n", &[]).unwrap().0, b"");
        let big = [b"A\r\n".as_slice(), &[b'x'; 10], b"\r\n0\r\n\r\n"].concat();
        assert_eq!(decode_in_pieces(&big, &[]).unwrap().0, vec![b'x'; 10]);
    }

    #[test]
    fn partial_input_consumes_nothing_it_cannot_finish() {
        let mut d = Decoder::new(64);
        let p = d.decode(b"1f; a=b", |_| panic!("no data yet")).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 0,
                done: false
            }
        );
        let p = d.decode(b"3\r\nab", |_| {}).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 5,
                done: false
            }
        );
        let p = d.decode(b"c\r", |_| {}).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 1,
                done: false
            }
        );
    }

    #[test]
    fn malformed_framing_is_refused() {
        let cases: &[(&[u8], ChunkedError)] = &[
            (b"\r\n", ChunkedError::InvalidSize),
            (b"; ext\r\n", ChunkedError::InvalidSize),
            (b"g\r\n", ChunkedError::InvalidSize),
            (b"-1\r\n", ChunkedError::InvalidSize),
            (b" 5\r\n", ChunkedError::InvalidSize),
            (b"5\n", ChunkedError::InvalidSize),
            (b"5\rx\r\n", ChunkedError::InvalidSize),
            (b"5;a\nb\r\n", ChunkedError::InvalidSize),
            (b"5;a\x00\r\n", ChunkedError::InvalidSize),
            (b"5 6\r\n", ChunkedError::InvalidSize),
            (b"5 \r\n", ChunkedError::InvalidSize),
            (b"5;\r\n", ChunkedError::InvalidSize),
            (b"5;a \r\n", ChunkedError::InvalidSize),
            (b"5;a=\r\n", ChunkedError::InvalidSize),
            (b"5;a=\"x\r\n", ChunkedError::InvalidSize),
            (b"5;a=b c\r\n", ChunkedError::InvalidSize),
            (b"5;a=\"\x01\"\r\n", ChunkedError::InvalidSize),
            (b"5;a b\r\n", ChunkedError::InvalidSize),
            (b"5;;a\r\n", ChunkedError::InvalidSize),
            (b"5,a\r\n", ChunkedError::InvalidSize),
            (b"10000000000000000\r\n", ChunkedError::InvalidSize),
            (b"1ffffffffffffffff\r\n", ChunkedError::InvalidSize),
            (b"3\r\nabcd\r\n", ChunkedError::MissingCrlf),
            (b"3\r\nabc\n0\r\n\r\n", ChunkedError::MissingCrlf),
            (b"0\r\nno colon\r\n\r\n", ChunkedError::InvalidTrailer),
            (b"0\r\n: empty name\r\n\r\n", ChunkedError::InvalidTrailer),
            (b"0\r\nA b: c\r\n\r\n", ChunkedError::InvalidTrailer),
            (b"0\r\nA: b\nc\r\n\r\n", ChunkedError::InvalidTrailer),
            (b"0\r\n\n", ChunkedError::InvalidTrailer),
        ];
        for (wire, want) in cases {
            let mut d = Decoder::new(64);
            assert_eq!(
                d.decode(wire, |_| {}),
                Err(*want),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let mut d = Decoder::new(64);
        let long = [b"1;".as_slice(), &[b'x'; MAX_SIZE_LINE]].concat();
        assert_eq!(d.decode(&long, |_| {}), Err(ChunkedError::SizeLineTooLong));
        let mut d = Decoder::new(16);
        assert_eq!(
            d.decode(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", |_| {}),
            Err(ChunkedError::TrailerTooLarge)
        );
        // Within the bound, a trailer section fed a byte at a time is fine.
        let wire = b"0\r\nA: 1\r\n\r\n";
        let mut d = Decoder::new(16);
        let mut pending = Vec::new();
        for &b in wire {
            pending.push(b);
            let p = d.decode(&pending, |_| {}).unwrap();
            pending.drain(..p.consumed);
        }
        assert!(d.is_done() && pending.is_empty());
    }

    #[test]
    fn a_size_near_the_limit_streams_without_overflow() {
        let mut d = Decoder::new(64);
        let p = d.decode(b"fffffffffffffff\r\nabc", |_| {}).unwrap();
        assert_eq!(p.consumed, 20);
        assert_eq!(d.body_len(), 3);
        assert_eq!(d.state, State::Data(0xfff_ffff_ffff_ffff - 3));
    }
}

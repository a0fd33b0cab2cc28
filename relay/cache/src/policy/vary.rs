//! Secondary cache keys (RFC 9111 §4.1): a stored response with `Vary` may only be reused
//! for a request whose nominated header fields match those of the request that produced it.
//!
//! [`Vary::key`] turns a request's nominated fields into a [`VaryKey`]; two requests match
//! when their keys are equal. Normalisation: names are case-insensitive; several field lines
//! are combined; each comma-separated element is trimmed and empty elements dropped; values
//! keep their case. A field absent from the request differs from one present and empty.
//! `Vary: *`, or a `Vary` that is not a list of field names, never matches.

use super::{is_token, list_elements};

/// The `Vary` of a stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vary {
    /// The nominated field names, lower-case, sorted, without duplicates (empty: no `Vary`).
    Fields(Vec<String>),
    /// `Vary: *` or a malformed `Vary`: no request ever matches.
    Any,
}

/// A secondary key: the normalised values of the nominated request fields, in an unambiguous
/// byte encoding (length-prefixed), ready to hash or compare.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaryKey(Vec<u8>);

impl VaryKey {
    /// The encoded key; empty when the response does not vary.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Default for Vary {
    fn default() -> Self {
        Vary::Fields(Vec::new())
    }
}

impl Vary {
    /// Parses the `Vary` field lines of a response.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vary {
        let mut names = Vec::new();
        for line in lines {
            for elem in list_elements(line) {
                if elem == b"*" || !is_token(elem) {
                    return Vary::Any;
                }
                names.push(String::from_utf8_lossy(elem).to_ascii_lowercase());
            }
        }
        names.sort_unstable();
        names.dedup();
        Vary::Fields(names)
    }

    /// The response varies on nothing.
    pub fn is_empty(&self) -> bool {
        matches!(self, Vary::Fields(f) if f.is_empty())
    }

    /// The secondary key of a request; `None` for [`Vary::Any`] (never reusable).
    pub fn key<'a, I>(&self, request_headers: I) -> Option<VaryKey>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let names = match self {
            Vary::Any => return None,
            Vary::Fields(f) if f.is_empty() => return Some(VaryKey::default()),
            Vary::Fields(f) => f,
        };
        let mut values: Vec<Option<Vec<u8>>> = vec![None; names.len()];
        for (name, value) in request_headers {
            let Some(i) = names
                .iter()
                .position(|n| n.as_bytes().eq_ignore_ascii_case(name))
            else {
                continue;
            };
            let Some(slot) = values.get_mut(i) else {
                continue;
            };
            let buf = slot.get_or_insert_with(Vec::new);
            for elem in list_elements(value) {
                if !buf.is_empty() {
                    buf.push(b',');
                }
                buf.extend_from_slice(elem);
            }
        }
        let mut key = Vec::new();
        for (name, value) in names.iter().zip(values) {
            push_len_prefixed(&mut key, name.as_bytes());
            match value {
                None => key.push(0),
                Some(v) => {
                    key.push(1);
                    push_len_prefixed(&mut key, &v);
                }
            }
        }
        Some(VaryKey(key))
    }

    /// Whether a request matches the stored response whose request had `stored_key`.
    pub fn matches<'a, I>(&self, stored_key: &VaryKey, request_headers: I) -> bool
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        self.key(request_headers).is_some_and(|k| k == *stored_key)
    }
}

fn push_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    #[test]
    fn rfc9111_4_1_names_normalised() {
        let v = Vary::parse([&b"Accept-Encoding, accept-language"[..], b"ACCEPT-ENCODING"]);
        assert_eq!(
            v,
            Vary::Fields(vec!["accept-encoding".into(), "accept-language".into()])
        );
        assert!(Vary::parse(std::iter::empty()).is_empty());
        assert!(Vary::parse([&b" , "[..]]).is_empty());
    }

    #[test]
    fn rfc9111_4_1_star_and_garbage_never_match() {
        for bad in [&b"*"[..], b"Accept, *", b"Acc ept", b"\"quoted\"", b"\xff"] {
            let v = Vary::parse([bad]);
            assert_eq!(v, Vary::Any, "{bad:?}");
            assert_eq!(v.key(h(&[])), None);
            assert!(!v.matches(&VaryKey::default(), h(&[])));
        }
    }

    #[test]
    fn rfc9111_4_1_values_combined_and_trimmed() {
        let v = Vary::parse([&b"Accept-Encoding"[..]]);
        let a = v.key(h(&[("accept-encoding", "gzip,  br")]));
        let b = v.key(h(&[
            ("Accept-Encoding", " gzip"),
            ("ACCEPT-ENCODING", "br "),
        ]));
        let c = v.key(h(&[("Accept-Encoding", "gzip,br,")]));
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_eq!(a, c);
        let d = v.key(h(&[("Accept-Encoding", "br, gzip")]));
        assert_ne!(a, d, "order of values is significant");
        let e = v.key(h(&[("Accept-Encoding", "GZIP, br")]));
        assert_ne!(a, e, "values keep their case");
    }

    #[test]
    fn rfc9111_4_1_absent_differs_from_empty() {
        let v = Vary::parse([&b"X-A, X-B"[..]]);
        let absent = v.key(h(&[("X-B", "1")]));
        let empty = v.key(h(&[("X-A", ""), ("X-B", "1")]));
        assert_ne!(absent, empty);
        // unrelated fields do not matter
        let other = v.key(h(&[("X-B", "1"), ("Cookie", "x")]));
        assert_eq!(absent, other);
        // no ambiguity between fields: (X-A="1", X-B absent) vs (X-A absent, X-B="1")
        assert_ne!(v.key(h(&[("X-A", "1")])), v.key(h(&[("X-B", "1")])));
        let stored = absent.unwrap_or_default();
        assert!(v.matches(&stored, h(&[("x-b", "1")])));
        assert!(!v.matches(&stored, h(&[("x-b", "2")])));
    }

    #[test]
    fn rfc9111_4_1_no_vary_matches_everything() {
        let v = Vary::default();
        assert_eq!(v.key(h(&[("Accept", "x")])), Some(VaryKey::default()));
        assert!(v.matches(&VaryKey::default(), h(&[])));
    }
}

//! Chunk keys. A chunk is named by its object's cache key, the object's version (a hash of
//! its validators, so chunks of two versions never mix) and its index in the object.
//! [`ChunkRef`] borrows the object key so a lookup on the hit path allocates nothing.
//! [`push_variant`] extends an object key to name one variant of a response that varies.
//!
//! An object key starts with its origin's kind, so the objects of an HTTP origin and the
//! directory's files never share one: [`HTTP`] + the request's authority, normalised (host in
//! lower case, no trailing dot, no `:80`: `relay_proto::Authority::push_normalised`) + the
//! target in origin-form (path and query), e.g. `http://video.example/seg/1.ts?q=1`; or
//! [`DIRECTORY`] + the path, e.g. `dir:/hello.txt`. A normalised authority holds no `/` and
//! every target an HTTP origin serves starts with one (origin prefixes do), so host and
//! target cannot trade bytes: no two requests for different resources share a key.
//! [`shape_query`] makes the target's query what the origin's policy says it is in the key
//! (as sent, sorted, some parameters left out, or none).

use quick_cache::Equivalent;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The start of an HTTP origin's object keys.
pub const HTTP: &str = "http://";

/// The start of the directory origin's object keys.
pub const DIRECTORY: &str = "dir:";

/// An owned chunk key, stored in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkKey {
    pub object: Arc<str>,
    pub version: u64,
    pub index: u64,
}

/// A borrowed chunk key for lookups; hashes exactly as the [`ChunkKey`] it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef<'a> {
    pub object: &'a str,
    pub version: u64,
    pub index: u64,
}

impl Hash for ChunkKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state)
    }
}

impl Hash for ChunkRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.object.hash(state);
        self.version.hash(state);
        self.index.hash(state);
    }
}

impl ChunkKey {
    pub fn as_ref(&self) -> ChunkRef<'_> {
        ChunkRef {
            object: &self.object,
            version: self.version,
            index: self.index,
        }
    }
}

impl Equivalent<ChunkKey> for ChunkRef<'_> {
    fn equivalent(&self, key: &ChunkKey) -> bool {
        *self == key.as_ref()
    }
}

impl ChunkRef<'_> {
    pub fn to_owned_key(&self) -> ChunkKey {
        ChunkKey {
            object: Arc::from(self.object),
            version: self.version,
            index: self.index,
        }
    }
}

/// Appends to an object's cache key the variant a request selects, for a response that
/// varies on `fields` (lower-case names, as stored): `\0`, then per field `name=value\n`
/// (several lines of the field joined with `, `, each value trimmed) or `name\n` when the
/// request does not send it. `headers` are the request's fields as (name, value) — the
/// client's, or the ones a fetch sent, which give the same key.
///
/// Returns false and leaves `key` as it was when the request sends none of the fields: the
/// base entry (the response to a request without them) is its variant. Allocates nothing
/// beyond growing `key`.
pub fn push_variant<'h, I>(key: &mut String, fields: &[String], headers: I) -> bool
where
    I: Iterator<Item = (&'h str, &'h [u8])> + Clone,
{
    let base = key.len();
    let mut selects = false;
    key.push('\0');
    for name in fields {
        key.push_str(name);
        let mut values = headers
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .peekable();
        if values.peek().is_some() {
            selects = true;
            key.push('=');
        }
        for (i, (_, value)) in values.enumerate() {
            if i > 0 {
                key.push_str(", ");
            }
            let blank = |b: &u8| *b == b' ' || *b == b'\t';
            let start = value.iter().position(|b| !blank(b)).unwrap_or(value.len());
            let end = value
                .iter()
                .rposition(|b| !blank(b))
                .map_or(start, |e| e + 1);
            push_value(key, &value[start..end]);
        }
        key.push('\n');
    }
    if !selects {
        key.truncate(base);
    }
    selects
}

/// Appends a field's value to a variant key, one key per value: as it is when it is UTF-8
/// (what clients send), else `\u{1}` and the hex of its bytes (a lossy copy would make
/// `caf\xe9`, `caf\xe8` and `caf\u{fffd}` one variant, which the first to ask fills for
/// all). A value of the first kind holding `\u{1}` takes the second form too, so the two
/// never meet.
fn push_value(key: &mut String, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(text) if !text.contains('\u{1}') => key.push_str(text),
        _ => {
            use std::fmt::Write;
            key.push('\u{1}');
            for b in value {
                let _ = write!(key, "{b:02x}");
            }
        }
    }
}

/// Makes the query of `target` (a GET or HEAD's, in origin-form) what `policy` says it is
/// in the cache key, which is also what is asked of the origin: as sent (nothing done),
/// none, or its parameters without those `query_drop` names (by name as sent, without
/// decoding) and sorted by name, those of one name in the order sent (`a=2&a=1` may not
/// mean `a=1&a=2`). Empty parameters (`&&`) go when it is rewritten.
pub fn shape_query(target: &mut String, policy: &relay_config::CachePolicy) {
    use relay_config::QueryKey;
    let Some(at) = target.find('?') else {
        return;
    };
    match policy.query {
        QueryKey::Keep if policy.query_drop.is_empty() => return,
        QueryKey::Drop => return target.truncate(at),
        QueryKey::Keep | QueryKey::Sort => {}
    }
    let query = target.split_off(at + 1);
    target.pop();
    let dropped = |p: &str| {
        let name = p.split('=').next().unwrap_or(p);
        policy.query_drop.iter().any(|d| d == name)
    };
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !dropped(p))
        .collect();
    // (Stable: a name's values keep their order.)
    params.sort_by_key(|p| p.split('=').next().unwrap_or(p));
    for (i, p) in params.iter().enumerate() {
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str(p);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_query_is_kept_sorted_filtered_or_dropped_as_the_policy_says() {
        use relay_config::{CachePolicy, QueryKey};
        let shaped = |target: &str, query: QueryKey, drop: &[&str]| {
            let policy = CachePolicy {
                query,
                query_drop: drop.iter().map(|d| d.to_string()).collect(),
                ..CachePolicy::default()
            };
            let mut t = target.to_string();
            super::shape_query(&mut t, &policy);
            t
        };
        let t = "/v/a.ts?b=2&utm_source=x&a=1&&a=0";
        assert_eq!(shaped(t, QueryKey::Keep, &[]), t, "as sent");
        assert_eq!(
            shaped(t, QueryKey::Sort, &[]),
            "/v/a.ts?a=1&a=0&b=2&utm_source=x"
        );
        assert_eq!(
            shaped(t, QueryKey::Keep, &["utm_source"]),
            "/v/a.ts?a=1&a=0&b=2"
        );
        assert_eq!(shaped(t, QueryKey::Drop, &[]), "/v/a.ts");
        assert_eq!(
            shaped("/v/a.ts?utm_source=x", QueryKey::Sort, &["utm_source"]),
            "/v/a.ts"
        );
        assert_eq!(shaped("/v/a.ts", QueryKey::Sort, &[]), "/v/a.ts");
        // A name is matched whole, `=` or not.
        assert_eq!(
            shaped(
                "/a?utm=1&utm_sourcex=2&utm_source",
                QueryKey::Keep,
                &["utm_source"]
            ),
            "/a?utm=1&utm_sourcex=2"
        );
    }

    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn variant(fields: &[&str], headers: &[(&str, &str)]) -> Option<String> {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let mut key = String::from("example.org/a");
        let pairs = headers.iter().map(|(n, v)| (*n, v.as_bytes()));
        if push_variant(&mut key, &fields, pairs) {
            Some(key)
        } else {
            assert_eq!(key, "example.org/a", "left changed without a variant");
            None
        }
    }

    #[test]
    fn a_variant_key_names_each_field_and_its_values() {
        let fields = ["accept-language", "x-device"];
        assert_eq!(
            variant(&fields, &[("Accept-Language", "fr"), ("Cookie", "a=1")]).as_deref(),
            Some("example.org/a\0accept-language=fr\nx-device\n")
        );
        // Repeated lines are joined; names match whatever their case; values are trimmed.
        assert_eq!(
            variant(
                &fields,
                &[
                    ("X-DEVICE", " tv "),
                    ("accept-language", "de"),
                    ("x-device", "hd")
                ]
            )
            .as_deref(),
            Some("example.org/a\0accept-language=de\nx-device=tv, hd\n")
        );
        // Present but empty differs from absent.
        let empty = variant(&fields, &[("X-Device", "")]);
        assert_eq!(
            empty.as_deref(),
            Some("example.org/a\0accept-language\nx-device=\n")
        );
    }

    /// Values that are not UTF-8 each select their own variant: `caf\xe9`, `caf\xe8` and
    /// the `caf\u{fffd}` a lossy copy would make of both are three keys.
    #[test]
    fn values_that_are_not_utf8_are_keyed_by_their_bytes() {
        let fields = vec!["user-agent".to_string()];
        let key = |value: &[u8]| {
            let mut key = String::from("example.org/a");
            assert!(push_variant(
                &mut key,
                &fields,
                [("User-Agent", value)].into_iter()
            ));
            key
        };
        let keys = [
            key(b"caf\xe9"),
            key(b"caf\xe8"),
            key("caf\u{fffd}".as_bytes()),
            // (What `caf\xe9` becomes, sent as such: a key of its own too.)
            key(b"\x01636166e9"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(keys[0], "example.org/a\0user-agent=\u{1}636166e9\n");
        assert_eq!(key(b" \tcaf\xe9 "), keys[0], "trimmed as before");
        assert_eq!(
            key("caf\u{e9}".as_bytes()),
            "example.org/a\0user-agent=caf\u{e9}\n"
        );
    }

    #[test]
    fn a_request_without_the_fields_selects_the_base_entry() {
        assert_eq!(variant(&["accept-language"], &[("Cookie", "a=1")]), None);
        assert_eq!(variant(&[], &[("Accept-Language", "fr")]), None);
    }

    fn h<T: Hash>(t: &T) -> u64 {
        let mut s = DefaultHasher::new();
        t.hash(&mut s);
        s.finish()
    }

    #[test]
    fn borrowed_and_owned_hash_alike() {
        let r = ChunkRef {
            object: "example.org/a",
            version: 7,
            index: 3,
        };
        let k = r.to_owned_key();
        assert_eq!(h(&r), h(&k));
        assert!(r.equivalent(&k));
        let other = ChunkRef { index: 4, ..r };
        assert!(!other.equivalent(&k));
    }
}

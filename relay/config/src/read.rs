//! The file read into the schema's serde mirror (`raw`), with every key serde refuses
//! reported, not only the first.
//!
//! The text is parsed once into a document that keeps each item's place in the file. serde
//! stops at the first key it refuses (unknown, of the wrong type, a byte size it cannot
//! read, a table without a required key): that error is kept, the item it is about is
//! taken out of the document, and the rest is read again, until what is left reads. Each
//! error so keeps toml's own message and position (an unknown key's still lists the keys
//! the table takes), and each refused key is reported once: a required key of the wrong
//! type is not then reported as missing too.

use std::collections::{BTreeMap, BTreeSet};

use serde_path_to_error::Segment;
use toml_edit::{DocumentMut, ImDocument, Item, Value};

use crate::error::{ConfigError, Source};
use crate::raw::RawConfig;

/// What serde refused in the file: each error, and the top-level tables they are in.
#[derive(Default)]
pub(crate) struct Refused {
    errors: Vec<ConfigError>,
    /// The dotted keys reported, each once.
    keys: BTreeSet<String>,
    /// The top-level tables (`server`, `origin`, ...) holding a refused key.
    parts: BTreeSet<String>,
}

impl Refused {
    /// These errors and those of the later `checks` (none: the file is good). A top-level
    /// table holding a refused key was read without it, so its own checks' errors are left
    /// out: they may be about that key's absence, or, in an array whose entry was taken
    /// out, name the entries after it by the wrong number.
    pub(crate) fn with(self, checks: Vec<ConfigError>) -> Option<ConfigError> {
        let mut errors: Vec<ConfigError> = checks
            .into_iter()
            .flat_map(ConfigError::into_each)
            .filter(|e| !e.key().is_some_and(|key| self.parts.contains(part(key))))
            .collect();
        errors.extend(self.errors);
        ConfigError::all(errors)
    }

    fn add(&mut self, error: ConfigError, part: Option<&Step>) {
        let key = error.key().unwrap_or_default().to_owned();
        if let Some(Step::Key(part)) = part {
            self.parts.insert(part.clone());
        }
        if self.keys.insert(key) {
            self.errors.push(error);
        }
    }
}

/// The top-level table a dotted key is in: `origin` for `origin.http[1].url`.
fn part(key: &str) -> &str {
    key.split(['.', '[']).next().unwrap_or(key)
}

/// Parses `src` and reads it into the schema, every key serde refuses taken out and
/// reported. An error: the file is not TOML (the first syntax error), or a refused item
/// could not be found in the document to take it out (every error found so far).
pub(crate) fn read(src: Source<'_>) -> Result<(RawConfig, Refused), ConfigError> {
    let doc = ImDocument::parse(src.text).map_err(|e| src.syntax(&e))?;
    let mut root = doc.into_item();
    let mut refused = Refused::default();
    let mut gone = Gone::default();
    loop {
        let table = root.as_table().cloned().unwrap_or_default();
        let de = toml_edit::de::Deserializer::from(DocumentMut::from(table));
        let err = match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Ok(raw) => return Ok((raw, refused)),
            Err(err) => err,
        };
        let now = steps(err.path());
        let was = gone.original(&now);
        let error = src.schema(&dotted(&was), err.inner());
        // Each round takes an item out, so this ends.
        match take_out(&mut root, &now) {
            Some(depth) => gone.note(was.get(..depth).unwrap_or_default()),
            // (Not found: what serde named is not in the document; no going on.)
            None => return Err(error.and(refused.errors)),
        }
        refused.add(error, was.first());
        if refused.errors.len() >= MAX_REFUSED {
            // (Each round reads the whole document again: a file of thousands of bad keys
            // would take seconds. The first ones are reported; fixing them shows the rest.)
            let mut errors = std::mem::take(&mut refused.errors);
            let first = errors.remove(0);
            return Err(first.and(errors));
        }
    }
}

/// The most refused keys reported in one reading.
const MAX_REFUSED: usize = 64;

/// One step of a key's path in the document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A table's key.
    Key(String),
    /// An array's entry.
    Index(usize),
    /// A step serde named that is not in a TOML document (an enum variant, an unknown
    /// segment): shown, never found.
    Other(String),
}

/// serde's path without the steps `toml::Spanned` adds.
fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } if key.starts_with("$__serde_spanned_private") => None,
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { variant } => Some(Step::Other(variant.clone())),
            Segment::Unknown => Some(Step::Other("?".to_owned())),
        })
        .collect()
}

/// The path as `a.b.c`, array entries as `steer.nodes[0]`, as the later checks name them.
fn dotted(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Index(index) => out.push_str(&format!("[{index}]")),
            Step::Key(part) | Step::Other(part) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(part);
            }
        }
    }
    out
}

/// The array entries taken out so far, by their number in the file, under their array's
/// path in the file: later errors are named as the file numbers its entries.
#[derive(Default)]
struct Gone(BTreeMap<Vec<Step>, BTreeSet<usize>>);

impl Gone {
    /// The path in the file of `path` in the document as it is now.
    fn original(&self, path: &[Step]) -> Vec<Step> {
        let mut out = Vec::with_capacity(path.len());
        for step in path {
            let step = match (step, self.0.get(&out)) {
                // The `index`th entry of those left is the `index`th not taken out.
                (Step::Index(index), Some(taken)) => Step::Index(
                    (0..)
                        .filter(|n| !taken.contains(n))
                        .nth(*index)
                        .unwrap_or(*index),
                ),
                (step, _) => step.clone(),
            };
            out.push(step);
        }
        out
    }

    /// Notes that the item at `path` (in the file's numbering) was taken out.
    fn note(&mut self, path: &[Step]) {
        if let Some((Step::Index(index), array)) = path.split_last() {
            self.0.entry(array.to_vec()).or_default().insert(*index);
        }
    }
}

fn child<'a>(item: &'a Item, step: &Step) -> Option<&'a Item> {
    match step {
        Step::Key(key) => item.as_table_like()?.get(key),
        Step::Index(index) => item.get(*index),
        Step::Other(_) => None,
    }
}

fn child_mut<'a>(item: &'a mut Item, step: &Step) -> Option<&'a mut Item> {
    match step {
        Step::Key(key) => item.as_table_like_mut()?.get_mut(key),
        Step::Index(index) => item.get_mut(*index),
        Step::Other(_) => None,
    }
}

/// Takes the deepest item on `path` that `root` holds out of it (never `root` itself);
/// how many steps of `path` led to it, or None if `root` holds none.
fn take_out(root: &mut Item, path: &[Step]) -> Option<usize> {
    let mut depth = 0;
    let mut at = &*root;
    for step in path {
        match child(at, step) {
            Some(next) => (at, depth) = (next, depth + 1),
            None => break,
        }
    }
    let (last, to_parent) = path.get(..depth)?.split_last()?;
    let mut parent = root;
    for step in to_parent {
        parent = child_mut(parent, step)?;
    }
    match (last, parent) {
        (Step::Key(key), parent) => parent.as_table_like_mut()?.remove(key).map(|_| depth),
        (Step::Index(index), Item::ArrayOfTables(array)) if *index < array.len() => {
            array.remove(*index);
            Some(depth)
        }
        (Step::Index(index), Item::Value(Value::Array(array))) if *index < array.len() => {
            array.remove(*index);
            Some(depth)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Step {
        Step::Key(k.to_owned())
    }

    #[test]
    fn taken_out_entries_keep_their_numbers() {
        let mut gone = Gone::default();
        let http = [key("origin"), key("http")];
        let at = |i| [http[0].clone(), http[1].clone(), Step::Index(i), key("url")];
        assert_eq!(gone.original(&at(1)), at(1));
        gone.note(&[http[0].clone(), http[1].clone(), Step::Index(0)]);
        // Entry 0 taken out: what is now entry 1 was entry 2.
        assert_eq!(gone.original(&at(1)), at(2));
        gone.note(&[http[0].clone(), http[1].clone(), Step::Index(2)]);
        assert_eq!(gone.original(&at(0)), at(1));
        assert_eq!(gone.original(&at(1)), at(3));
        // A key taken out does not renumber.
        gone.note(&at(3));
        assert_eq!(gone.original(&at(1)), at(3));
        assert_eq!(dotted(&at(3)), "origin.http[3].url");
    }

    #[test]
    fn take_out_finds_tables_inline_tables_and_arrays() {
        let text = "a = 1\n[t]\nb = { c = [1, { d = 2 }] }\n[[u]]\ne = 1\n[[u]]\ne = 2\n";
        let mut root = ImDocument::parse(text).unwrap().into_item();
        let c = [key("t"), key("b"), key("c")];
        let d = [&c[..], &[Step::Index(1), key("d")]].concat();
        assert_eq!(take_out(&mut root, &d), Some(5));
        assert_eq!(take_out(&mut root, &d), Some(4), "then its inline table");
        assert_eq!(take_out(&mut root, &[key("u"), Step::Index(0)]), Some(2));
        assert_eq!(root["u"].as_array_of_tables().map(|a| a.len()), Some(1));
        // Past what is there, the deepest item found; nothing found, nothing taken.
        assert_eq!(take_out(&mut root, &[key("a"), key("x")]), Some(1));
        assert_eq!(take_out(&mut root, &[key("x")]), None);
        assert_eq!(take_out(&mut root, &[]), None);
        assert_eq!(take_out(&mut root, &[Step::Other("?".into())]), None);
        assert_eq!(
            take_out(&mut root, &[key("t"), Step::Index(0)]),
            Some(1),
            "t is a table, not an array"
        );
        assert!(root.as_table().is_some_and(|t| t.len() == 1), "{root}");
    }
}

//! [`ConfigError`]: what went wrong, in which file, at which key and line.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// Broad class of a config error, for callers and tests that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Not valid TOML (including duplicate keys).
    Syntax,
    /// A key the schema does not know.
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong TOML type.
    WrongType,
    /// A value of the right type that is out of range or otherwise impossible.
    InvalidValue,
}

/// A config error tied to a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The error's class.
    pub kind: ErrorKind,
    /// The file name as given to the loader.
    pub file: String,
    /// 1-based line and column (in characters), if the error has a place.
    pub position: Option<(usize, usize)>,
    /// Dotted key path, e.g. `cache.chunk_size`; empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a config could not be loaded. Displays as
/// `<file>:<line>:<col>: <dotted.key>: <message>`.
#[derive(thiserror::Error, Debug)]
pub enum ConfigError {
    /// Reading the config file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are wrong somewhere.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
    /// Wrong in several places, each its own error (in file order), one per line.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// Several errors as one (none: not an error; one: itself), in file order.
    pub(crate) fn all(errors: Vec<ConfigError>) -> Option<ConfigError> {
        let mut errors = errors.into_iter();
        let first = errors.next()?;
        Some(first.and(errors.collect()))
    }

    /// This error and `others` as one (itself, if they are none), in file order.
    pub(crate) fn and(self, others: Vec<ConfigError>) -> ConfigError {
        let mut errors: Vec<ConfigError> = std::iter::once(self)
            .chain(others)
            .flat_map(ConfigError::into_each)
            .collect();
        errors.sort_by_key(|e| e.position().unwrap_or((usize::MAX, 0)));
        match <[ConfigError; 1]>::try_from(errors) {
            Ok([one]) => one,
            Err(errors) => ConfigError::Many(errors),
        }
    }

    /// Every error this one holds (itself, or each of several).
    pub fn each(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(all) => all.iter().collect(),
            e => vec![e],
        }
    }

    /// Every error this one holds, taken apart.
    pub(crate) fn into_each(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Many(all) => all,
            e => vec![e],
        }
    }

    /// The error's class (the first's, of several).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConfigError::Io { .. } => ErrorKind::Io,
            ConfigError::Invalid(d) => d.kind,
            ConfigError::Many(all) => all[0].kind(),
        }
    }

    /// The dotted key the error is about, if any (the first's, of several).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid(d) if !d.key.is_empty() => Some(&d.key),
            ConfigError::Many(all) => all[0].key(),
            _ => None,
        }
    }

    /// The 1-based line the error is on, if known.
    pub fn line(&self) -> Option<usize> {
        self.position().map(|(line, _)| line)
    }

    /// The 1-based column (in characters) the error is at, if known.
    pub fn column(&self) -> Option<usize> {
        self.position().map(|(_, col)| col)
    }

    /// The message without file, position or key.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Io { source, .. } => source.to_string(),
            ConfigError::Invalid(d) => d.message.clone(),
            ConfigError::Many(all) => all[0].message(),
        }
    }

    fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Invalid(d) => d.position,
            ConfigError::Many(all) => all[0].position(),
        }
    }
}

/// The text and name of the file being parsed, for building errors.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) text: &'a str,
    pub(crate) file: &'a str,
}

impl Source<'_> {
    pub(crate) fn error(
        &self,
        kind: ErrorKind,
        key: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid(Box::new(Diagnostic {
            kind,
            file: self.file.to_owned(),
            position: span.map(|span| line_col(self.text, span.start)),
            key: key.to_owned(),
            message: message.into(),
        }))
    }

    /// An impossible value at `key`.
    pub(crate) fn invalid(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(ErrorKind::InvalidValue, key, span, message)
    }

    /// Maps a TOML syntax error.
    pub(crate) fn syntax(&self, err: &toml_edit::TomlError) -> ConfigError {
        self.error(ErrorKind::Syntax, "", err.span(), one_line(err.message()))
    }

    /// Maps a schema error from deserialization at dotted `key` (the path that
    /// `serde_path_to_error` tracked).
    pub(crate) fn schema(&self, key: &str, err: &toml_edit::de::Error) -> ConfigError {
        let mut key = key.to_owned();
        let message =
            one_line(err.message()).replace("expected u64", "expected a non-negative integer");
        let (kind, message) = if let Some(rest) = message.strip_prefix("unknown field") {
            (ErrorKind::UnknownKey, format!("unknown key{rest}"))
        } else if let Some(rest) = message.strip_prefix("missing field") {
            if let Some(name) = rest
                .trim()
                .strip_prefix('`')
                .and_then(|r| r.strip_suffix('`'))
            {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            (ErrorKind::MissingKey, "missing required key".to_owned())
        } else if message.starts_with("invalid type") {
            (ErrorKind::WrongType, message)
        } else {
            (ErrorKind::InvalidValue, message)
        };
        self.error(kind, &key, err.span(), message)
    }
}

/// toml's messages may span lines; keep them on one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// 1-based line and character column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbb = 2\n\né = 3\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 11), (2, 6));
        assert_eq!(line_col(text, 13), (3, 1));
        // Columns count characters: `é` is two bytes.
        assert_eq!(line_col(text, 19), (4, 5));
        // Inside a character, or past the end: no panic.
        assert_eq!(line_col(text, 15), (4, 1));
        assert_eq!(line_col(text, 1000), (5, 1));
    }

    #[test]
    fn display_forms() {
        let d = |position, key: &str| Diagnostic {
            kind: ErrorKind::InvalidValue,
            file: "relay.toml".into(),
            position,
            key: key.into(),
            message: "bad".into(),
        };
        assert_eq!(
            d(Some((7, 14)), "cache.chunk_size").to_string(),
            "relay.toml:7:14: cache.chunk_size: bad"
        );
        assert_eq!(d(Some((2, 1)), "").to_string(), "relay.toml:2:1: bad");
        assert_eq!(
            d(None, "origin.directory").to_string(),
            "relay.toml: origin.directory: bad"
        );
        let io = ConfigError::Io {
            path: "/etc/relay.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(io.to_string().starts_with("/etc/relay.toml: "), "{io}");
        assert_eq!(
            (io.kind(), io.key(), io.line()),
            (ErrorKind::Io, None, None)
        );
    }
}

//! The directory origin: URL path `/a/b` names the file `<root>/a/b`. The worker opens files
//! through its ring with `openat2(RESOLVE_BENEATH)`, so no request can reach outside the
//! root, and describes them with `statx` on the open file: the event loop never blocks on
//! the origin's file system. This module holds the pure parts: the path a request names,
//! what a failed open means, and the description of an opened file (and its version, which
//! the `statx` after each chunk read is checked against: a file changed under a read is
//! never sent as its old version).

use relay_cache::ObjectMeta;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why an object could not be opened.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error("no such object")]
    NotFound,
    #[error("bad object path")]
    BadPath,
    #[error("origin I/O error: {0}")]
    Io(std::io::ErrorKind),
}

/// `open_how.flags` for an origin file: read-only, and non-blocking so that opening a FIFO
/// or a device someone left under the root returns at once (it is then refused as not a
/// regular file); the worker clears `O_NONBLOCK` on regular files before reading them.
pub const OPEN_FLAGS: u64 =
    (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
/// `open_how.resolve`: beneath the root, whatever `..` or symlinks the path holds.
pub const OPEN_RESOLVE: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// What describing an origin file needs from `statx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub len: u64,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    pub ino: u64,
    pub regular: bool,
}

impl FileStat {
    pub fn from_statx(s: &libc::statx) -> FileStat {
        FileStat {
            len: s.stx_size,
            mtime_s: s.stx_mtime.tv_sec,
            mtime_ns: s.stx_mtime.tv_nsec,
            ino: s.stx_ino,
            regular: u32::from(s.stx_mode) & libc::S_IFMT == libc::S_IFREG,
        }
    }

    /// Modification time (the epoch for times before it).
    fn mtime(&self) -> SystemTime {
        u64::try_from(self.mtime_s).map_or(UNIX_EPOCH, |s| {
            UNIX_EPOCH + Duration::new(s, self.mtime_ns.min(999_999_999))
        })
    }

    /// The version of the file this describes: FNV-1a over its validators (length,
    /// modification time in ns, inode). Any change to them is another version; a file
    /// whose version is not its description's has changed since it was described.
    pub fn version(&self) -> u64 {
        let since = self.mtime().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for v in [self.len, since.as_nanos() as u64, self.ino] {
            for b in v.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

pub struct DirOrigin {
    root: OwnedFd,
}

impl DirOrigin {
    pub fn open(root: &Path) -> std::io::Result<DirOrigin> {
        let dir = File::open(root)?;
        if !dir.metadata()?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(DirOrigin { root: dir.into() })
    }

    /// The root directory, for `openat2` beneath it.
    pub fn root_fd(&self) -> RawFd {
        self.root.as_raw_fd()
    }
}

/// The path beneath the root that a request path names.
pub fn object_path(url_path: &str) -> Result<CString, OriginError> {
    CString::new(decode_path(url_path)?).map_err(|_| OriginError::BadPath)
}

/// What a failed `openat2` (its errno) means for the request.
pub fn open_error(errno: i32) -> OriginError {
    match errno {
        libc::ENOENT | libc::ENOTDIR | libc::ELOOP => OriginError::NotFound,
        libc::EXDEV => OriginError::BadPath,
        e => OriginError::Io(std::io::Error::from_raw_os_error(e).kind()),
    }
}

/// Describes an opened origin file: validators from its length, modification time and
/// inode; a type from its name. Anything but a regular file is not an object.
pub fn describe(path: &CStr, st: &FileStat) -> Result<ObjectMeta, OriginError> {
    if !st.regular {
        return Err(OriginError::NotFound);
    }
    let mtime = st.mtime();
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut meta = ObjectMeta::file(
        st.len,
        st.version(),
        format!("\"{:x}-{:x}\"", since.as_secs(), st.len),
        httpdate::fmt_http_date(mtime),
    );
    meta.content_type = content_type(path.to_bytes()).to_string();
    Ok(meta)
}

/// Percent-decodes a URL path into a path relative to the root. Rejects NUL, `..`
/// segments and invalid escapes; `openat2(RESOLVE_BENEATH)` is the second line of defence.
pub fn decode_path(url_path: &str) -> Result<Vec<u8>, OriginError> {
    let raw = url_path.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(OriginError::BadPath)?;
            let s = std::str::from_utf8(hex).map_err(|_| OriginError::BadPath)?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| OriginError::BadPath)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(OriginError::BadPath);
    }
    let trimmed: Vec<u8> = out
        .split(|&b| b == b'/')
        .filter(|seg| !seg.is_empty() && *seg != b".")
        .map(|seg| {
            if seg == b".." {
                Err(OriginError::BadPath)
            } else {
                Ok(seg)
            }
        })
        .collect::<Result<Vec<_>, _>>()?
        .join(&b'/');
    if trimmed.is_empty() {
        return Err(OriginError::NotFound);
    }
    Ok(trimmed)
}

/// `Content-Type` of a file from its extension (the common types of a content relay).
pub fn content_type(path: &[u8]) -> &'static str {
    let ext = path
        .rsplit(|&b| b == b'.')
        .next()
        .filter(|e| e.len() < path.len())
        .unwrap_or(b"");
    let ext = std::str::from_utf8(ext).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "txt" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "mp4" | "m4s" | "m4v" => "video/mp4",
        "m4a" => "audio/mp4",
        "webm" => "video/webm",
        "ts" => "video/mp2t",
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "mp3" => "audio/mpeg",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "iso" | "img" | "bin" | "deb" | "rpm" => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_guards_paths() {
        assert_eq!(decode_path("/a/b.txt").unwrap(), b"a/b.txt");
        assert_eq!(decode_path("//a/./b%20c").unwrap(), b"a/b c");
        assert_eq!(decode_path("/../etc/passwd"), Err(OriginError::BadPath));
        assert_eq!(decode_path("/a/%2e%2e/b"), Err(OriginError::BadPath));
        assert_eq!(decode_path("/a%00b"), Err(OriginError::BadPath));
        assert_eq!(decode_path("/a%zz"), Err(OriginError::BadPath));
        assert_eq!(decode_path("/a%2"), Err(OriginError::BadPath));
        assert_eq!(decode_path("/"), Err(OriginError::NotFound));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type(b"a/b.TXT"), "text/plain; charset=utf-8");
        assert_eq!(content_type(b"seg-1.m4s"), "video/mp4");
        assert_eq!(content_type(b"noext"), "application/octet-stream");
        assert_eq!(content_type(b"dir.d/file"), "application/octet-stream");
    }

    #[test]
    fn open_errors_and_descriptions() {
        assert_eq!(open_error(libc::ENOENT), OriginError::NotFound);
        assert_eq!(open_error(libc::ELOOP), OriginError::NotFound);
        assert_eq!(open_error(libc::EXDEV), OriginError::BadPath);
        assert_eq!(
            open_error(libc::EACCES),
            OriginError::Io(std::io::ErrorKind::PermissionDenied)
        );
        assert_eq!(
            object_path("/a/b%20c.txt").unwrap().as_bytes(),
            b"a/b c.txt"
        );
        assert_eq!(object_path("/a/../b"), Err(OriginError::BadPath));
        let st = FileStat {
            len: 3,
            mtime_s: 1_700_000_000,
            mtime_ns: 5,
            ino: 42,
            regular: true,
        };
        let m = describe(c"sub/x.txt", &st).unwrap();
        assert_eq!(m.len, 3);
        assert_eq!(m.content_type, "text/plain; charset=utf-8");
        // Any validator change is a new version; the same file describes the same way.
        assert_eq!(describe(c"sub/x.txt", &st).unwrap().version, m.version);
        for other in [
            FileStat { len: 4, ..st },
            FileStat { mtime_ns: 6, ..st },
            FileStat { ino: 43, ..st },
        ] {
            assert_ne!(describe(c"sub/x.txt", &other).unwrap().version, m.version);
        }
        assert_eq!(
            describe(
                c"sub",
                &FileStat {
                    regular: false,
                    ..st
                }
            )
            .unwrap_err(),
            OriginError::NotFound
        );
        // Before the epoch: described at the epoch, not a panic.
        assert!(describe(c"old", &FileStat { mtime_s: -5, ..st }).is_ok());
    }
}

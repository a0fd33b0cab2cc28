//! The directory origin: URL path `/a/b` names the file `<root>/a/b`. Files are opened with
//! `openat2(RESOLVE_BENEATH)`, so no request can reach outside the root.

use crate::sys;
use relay_cache::ObjectMeta;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error("no such object")]
    NotFound,
    #[error("bad object path")]
    BadPath,
    #[error("origin I/O error: {0}")]
    Io(std::io::ErrorKind),
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

    /// Opens the object a request path names and describes it.
    pub fn open_object(&self, url_path: &str) -> Result<(File, ObjectMeta), OriginError> {
        let rel = decode_path(url_path)?;
        let c = CString::new(rel).map_err(|_| OriginError::BadPath)?;
        let fd =
            sys::open_beneath(self.root.as_raw_fd(), &c).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) => {
                    OriginError::NotFound
                }
                Some(libc::EXDEV) => OriginError::BadPath,
                _ => OriginError::Io(e.kind()),
            })?;
        let file = File::from(fd);
        let md = file.metadata().map_err(|e| OriginError::Io(e.kind()))?;
        if !md.is_file() {
            return Err(OriginError::NotFound);
        }
        let mtime = md.modified().unwrap_or(UNIX_EPOCH);
        let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
        use std::os::unix::fs::MetadataExt;
        let version = {
            // FNV-1a over the validators: length, mtime (ns), inode.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for v in [md.len(), since.as_nanos() as u64, md.ino()] {
                for b in v.to_le_bytes() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            h
        };
        let mut meta = ObjectMeta::file(
            md.len(),
            version,
            format!("\"{:x}-{:x}\"", since.as_secs(), md.len()),
            httpdate::fmt_http_date(mtime),
        );
        meta.content_type = content_type(c.as_bytes()).to_string();
        Ok((file, meta))
    }
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
    fn opens_only_beneath_root() {
        let dir = std::env::temp_dir().join(format!("relay-origin-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/x"), b"xyz").unwrap();
        let _ = std::fs::remove_file(dir.join("escape"));
        std::os::unix::fs::symlink("/etc/hostname", dir.join("escape")).unwrap();
        let o = DirOrigin::open(&dir).unwrap();
        let (_, m) = o.open_object("/sub/x").unwrap();
        assert_eq!(m.len, 3);
        assert_eq!(o.open_object("/sub").unwrap_err(), OriginError::NotFound);
        assert_eq!(o.open_object("/nope").unwrap_err(), OriginError::NotFound);
        assert!(o.open_object("/escape").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Thin wrappers over the few plain syscalls the worker makes outside the ring.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Shut a socket down both ways: pending receives and sends on it complete promptly.
pub fn shutdown(fd: RawFd) {
    // SAFETY: plain syscall on an fd the caller owns; failure (already shut) is harmless.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Close an fd the caller owns and no in-flight operation uses any more.
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and never uses it again.
    unsafe {
        libc::close(fd);
    }
}

/// Disable Nagle on an accepted socket: responses are written whole, so coalescing small
/// writes would only add delayed-ACK stalls.
pub fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call; the length matches its type.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `openat2(dir, path, O_RDONLY, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: opens a file
/// that is guaranteed to lie below `dir`, whatever `..` or symlinks the path holds.
pub fn open_beneath(dir: RawFd, path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain C struct; all-zero is its documented empty value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `path` is NUL-terminated, `how` is a valid open_how that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

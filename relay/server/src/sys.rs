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

/// Bytes waiting in a socket's receive queue (`SIOCINQ`); None when it cannot be asked.
pub fn unread(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one int through the pointer, valid for the call;
    // the caller owns `fd`.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    (r == 0).then_some(n.max(0) as usize)
}

/// Sends a few bytes at once, never waiting (an interim response on an otherwise idle
/// connection); the count sent, which may be short only if the socket is in trouble.
pub fn send_now(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is a valid slice for the call's duration; the caller owns `fd`.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Resets a TCP connection (`connect` with `AF_UNSPEC`): its send queue is dropped at once,
/// so zero-copy sends still queued to a peer that stopped reading are notified, and the peer
/// gets an RST.
pub fn abort(fd: RawFd) {
    let addr = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: `addr` is a valid sockaddr for the call's duration; the caller owns `fd`;
    // failure (not connected any more) is harmless.
    unsafe {
        libc::connect(
            fd,
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}

/// Shuts the write side: the peer sees the end of the stream, reads go on.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall on an fd the caller owns; failure is harmless.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Raises the soft limit on open files to the hard one; the limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit for the call's duration.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
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

/// Clears `O_NONBLOCK` on a file the worker opened non-blocking (directory-origin files):
/// reads of it then wait for the file system as usual (io_uring runs them in io-wq when
/// they must block) instead of failing with EAGAIN on file systems without non-blocking
/// reads.
pub fn clear_nonblock(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller owns; F_GETFL/F_SETFL take and return plain ints.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to the `n`-th CPU (modulo their count) of those this process may
/// run on.
pub fn pin_to_allowed_cpu(n: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit set; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes that outlives the call.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `i` is below CPU_SETSIZE, the bit count of `set`.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect();
    let Some(&cpu) = allowed.get(n % allowed.len().max(1)) else {
        return Err(io::Error::other("no CPU allowed"));
    };
    // SAFETY: as above; CPU_ZERO/CPU_SET only write bits of `set`.
    unsafe {
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
    }
    // SAFETY: `set` is valid for `size` bytes.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking eventfd (the upstream thread wakes a worker's ring through it).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a returned fd is ours.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter (waking a pending read); errors (counter full) are
/// harmless: the reader is already due to wake.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), 8);
    }
}

/// The address of a connected socket's peer (one `getpeername`; asked on a miss only).
pub fn peer_addr(fd: RawFd) -> Option<std::net::SocketAddr> {
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is an open socket the caller owns for the duration of the call; the
    // stream borrowing it is never dropped (ManuallyDrop), so it is not closed here.
    let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    stream.peer_addr().ok()
}

//! The few libc calls the loader makes itself (aya makes the `bpf()` ones). Each wrapper is
//! safe to call, checks its input, and holds the crate's only `unsafe` blocks.

use std::{ffi::CString, io, mem::MaybeUninit, os::unix::ffi::OsStrExt as _, path::Path};

/// `f_type` of a BPF filesystem, from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// Index of the network interface `name` in this process's network namespace, if it exists.
pub(crate) fn if_index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that lives across the call;
    // if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Whether `path` (which must exist) lies on a BPF filesystem.
pub(crate) fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = c_path(path)?;
    let mut stat = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `stat` is a writable buffer of
    // the size statfs expects, which the kernel fills on success.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it initialised the whole struct.
    let stat = unsafe { stat.assume_init() };
    #[expect(
        clippy::unnecessary_cast,
        reason = "f_type is i64 on x86_64 but other types elsewhere"
    )]
    let f_type = stat.f_type as i64;
    Ok(f_type == BPF_FS_MAGIC)
}

/// `mount -t bpf bpf <target>`.
pub(crate) fn mount_bpffs(target: &Path) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call (the two
    // literals are 'static); `data` may be null for bpffs. mount(2) only reads them.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

//! Where things are pinned, and making sure that place is a BPF filesystem.
//!
//! Layout under the pin root (default `/sys/fs/bpf/relay`), one directory per interface:
//! ```text
//! <pin root>/<iface>/link            the bpf_link that holds relay_steer on <iface>
//! <pin root>/<iface>/RELAY_STATS     the per-CPU counters map
//! <pin root>/<iface>/RELAY_*         every other map (relay_common::maps::ALL)
//! ```
//! The link pin is what keeps the program attached after `relay steer attach` exits;
//! removing it (`detach`) releases the link and the program leaves the interface.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use crate::{SteerError, sys};

/// Where bpffs is conventionally mounted; the default pin root lives under it.
pub(crate) const SYS_FS_BPF: &str = "/sys/fs/bpf";
/// File name of the link pin inside an interface's directory.
pub(crate) const LINK: &str = "link";

/// The pins of one interface.
pub(crate) struct IfacePins {
    pub(crate) dir: PathBuf,
    pub(crate) link: PathBuf,
    pub(crate) counters: PathBuf,
}

impl IfacePins {
    /// `iface` must already be validated (see `crate::validate_iface`): it is a path component.
    pub(crate) fn new(pin_root: &Path, iface: &str) -> Self {
        let dir = pin_root.join(iface);
        Self {
            link: dir.join(LINK),
            counters: dir.join(relay_common::maps::STATS),
            dir,
        }
    }

    /// Where the map `name` is pinned.
    pub(crate) fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Removes whatever of ours is pinned, then the directory. Missing pieces are fine.
    pub(crate) fn remove_all(&self) -> Result<(), SteerError> {
        remove_if_present(&self.link)?;
        for name in relay_common::maps::ALL {
            remove_if_present(&self.map(name))?;
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(SteerError::io(&self.dir, error)),
        }
    }
}

fn remove_if_present(path: &Path) -> Result<(), SteerError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(SteerError::io(path, error)),
    }
}

/// Makes `pin_root` an existing directory on a BPF filesystem, mounting bpffs at
/// `/sys/fs/bpf` first if the root lies under it and nothing is mounted there.
pub(crate) fn prepare_root(pin_root: &Path) -> Result<(), SteerError> {
    let existing = nearest_existing(pin_root);
    let on_bpffs = sys::is_bpffs(&existing).map_err(|error| SteerError::io(&existing, error))?;
    if !on_bpffs {
        if !pin_root.starts_with(SYS_FS_BPF) {
            return Err(SteerError::BpfFsUnavailable {
                path: pin_root.to_path_buf(),
                reason: "it is not on a BPF filesystem (mount one with `mount -t bpf bpf DIR`)"
                    .to_owned(),
            });
        }
        if let Some(netns) = ip_netns_exec_name() {
            return Err(SteerError::BpfFsUnavailable {
                path: pin_root.to_path_buf(),
                reason: format!(
                    "nothing is mounted at {SYS_FS_BPF} under `ip netns exec {netns}`, whose \
                     private /sys would take a bpffs mounted now (and the pins) away when this \
                     command exits; mount a bpffs outside /sys (`mount -t bpf bpf DIR`) and pass \
                     DIR as the pin root"
                ),
            });
        }
        mount_sys_fs_bpf()?;
    }
    fs::create_dir_all(pin_root).map_err(|error| SteerError::io(pin_root, error))
}

/// Mounts bpffs at `/sys/fs/bpf` unless it already is one. Serialised within the process, so
/// that two threads attaching at once do not stack two mounts (hiding the first one's pins).
fn mount_sys_fs_bpf() -> Result<(), SteerError> {
    static MOUNT: Mutex<()> = Mutex::new(());
    let _serialised = MOUNT.lock().unwrap_or_else(PoisonError::into_inner);
    let target = Path::new(SYS_FS_BPF);
    if sys::is_bpffs(target).map_err(|error| SteerError::io(target, error))? {
        return Ok(());
    }
    sys::mount_bpffs(target).map_err(|error| SteerError::io(target, error))?;
    log::info!("mounted the BPF filesystem at {SYS_FS_BPF}");
    Ok(())
}

/// The deepest ancestor of `path` (or `path` itself) that exists.
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .filter(|ancestor| !ancestor.as_os_str().is_empty())
        .find(|ancestor| ancestor.exists())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// If this process runs under `ip netns exec NAME`, returns NAME.
///
/// iproute2 gives such a process a private mount namespace with a fresh sysfs on `/sys`,
/// mounted with the namespace's name as its source; nothing mounted under that `/sys` outlives
/// the command.
fn ip_netns_exec_name() -> Option<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let source = sys_mount_source(&mountinfo)?;
    let named_netns =
        source != "sysfs" && !source.contains('/') && Path::new("/run/netns").join(source).exists();
    named_netns.then(|| source.to_owned())
}

/// The source of the last sysfs mounted on `/sys` in a `/proc/self/mountinfo` text.
fn sys_mount_source(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().rev().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mount_point = mount.split(' ').nth(4)?;
        let mut fs = fs.split(' ');
        let (fs_type, source) = (fs.next()?, fs.next()?);
        (mount_point == "/sys" && fs_type == "sysfs").then_some(source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_source_of_the_last_sys_mount() {
        let host = "22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
                    40 22 0:35 / /sys/fs/bpf rw - bpf bpf rw\n";
        assert_eq!(sys_mount_source(host), Some("sysfs"));
        let netns = "22 1 0:21 / /sys rw,nosuid master:7 - sysfs sysfs rw\n\
                     500 22 0:60 / /sys rw - sysfs relay-ns-1 rw\n";
        assert_eq!(sys_mount_source(netns), Some("relay-ns-1"));
        assert_eq!(sys_mount_source("garbage\n\n1 2 3\n"), None);
    }

    #[test]
    fn nearest_existing_walks_up() {
        assert_eq!(
            nearest_existing(Path::new("/proc/self/no/such/dir")),
            Path::new("/proc/self")
        );
        assert_eq!(
            nearest_existing(Path::new("no-such-relative-dir")),
            Path::new(".")
        );
    }
}

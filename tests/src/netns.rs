//! Network namespace and veth guards for root-only tests.
//!
//! [`NetNs::new`] creates a namespace and a veth pair: one end stays in this (the host's)
//! namespace, the other is moved into the new one; both get an address from a /30 of
//! 10.200.0.0/16, and both ends and the namespace's `lo` are brought up. Dropping the guard
//! deletes the namespace and the host end, also when the test panics.
//!
//! [`BpfFs`] mounts a BPF filesystem on a temporary directory outside `/sys`: `ip netns exec`
//! gives its command a fresh `/sys`, so pins meant to outlive a command run there must live on
//! a bpffs mounted elsewhere.
//!
//! Only `std` and `libc`: `relay/steer`'s tests include this file with `#[path]`.
//! Every wait is bounded in count and time; commands run here are short-lived `ip` calls.

use std::ffi::OsStr;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether this process runs as root (the namespace and XDP tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// Distinguishes the guards one process creates.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Number of /30 subnets in 10.200.0.0/16.
const SUBNETS: u32 = 1 << 14;

/// A network namespace with a veth pair into it; removed on drop.
pub struct NetNs {
    name: String,
    host_iface: String,
    ns_iface: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
}

impl NetNs {
    /// Creates the namespace `relay-t<pid>-<n>` and the veth pair `rh<pid>x<n>` (host side) /
    /// `rn<pid>x<n>` (namespace side), addressed `10.200.a.b+1/30` and `+2/30`.
    pub fn new() -> io::Result<NetNs> {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (host_addr, ns_addr) = free_subnet(pid, n)?;
        let name = format!("relay-t{pid}-{n}");
        let host_iface = format!("rh{pid}x{n}");
        let ns_iface = format!("rn{pid}x{n}");
        if host_iface.len() > 15 {
            return Err(io::Error::other(format!(
                "interface name {host_iface} too long"
            )));
        }

        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on the guard exists, so a failure below still removes what was made.
        let ns = NetNs {
            name,
            host_iface,
            ns_iface,
            host_addr,
            ns_addr,
        };
        run(Command::new("ip").args([
            "link",
            "add",
            &ns.host_iface,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_iface,
            "netns",
            &ns.name,
        ]))?;
        let host_cidr = format!("{}/30", ns.host_addr);
        let ns_cidr = format!("{}/30", ns.ns_addr);
        run(Command::new("ip").args(["addr", "add", &host_cidr, "dev", &ns.host_iface]))?;
        run(Command::new("ip").args(["link", "set", &ns.host_iface, "up"]))?;
        run(ns.ip().args(["addr", "add", &ns_cidr, "dev", &ns.ns_iface]))?;
        run(ns.ip().args(["link", "set", &ns.ns_iface, "up"]))?;
        run(ns.ip().args(["link", "set", "lo", "up"]))?;
        ns.wait_carrier(Duration::from_secs(5))?;
        Ok(ns)
    }

    /// The namespace's name (for `ip netns exec` / `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The veth end left in this process's namespace.
    pub fn host_iface(&self) -> &str {
        &self.host_iface
    }

    /// The veth end inside the namespace.
    pub fn ns_iface(&self) -> &str {
        &self.ns_iface
    }

    /// Address of the host end.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// Address of the namespace end.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.ns_addr
    }

    /// `ip netns exec NAME program`: add the program's arguments to the returned command.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `ip -n NAME`: an `ip` command run against the namespace.
    pub fn ip(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]);
        cmd
    }

    /// Waits until the host end reports its carrier up (both ends are up).
    fn wait_carrier(&self, limit: Duration) -> io::Result<()> {
        let operstate = Path::new("/sys/class/net")
            .join(&self.host_iface)
            .join("operstate");
        let started = Instant::now();
        for _ in 0..500 {
            if std::fs::read_to_string(&operstate).is_ok_and(|s| s.trim() == "up") {
                return Ok(());
            }
            if started.elapsed() > limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(io::Error::other(format!(
            "{} did not come up within {limit:?}",
            self.host_iface
        )))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, which takes the host end with it.
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.name]));
        if Path::new("/sys/class/net").join(&self.host_iface).exists() {
            let _ = quiet(Command::new("ip").args(["link", "del", &self.host_iface]));
        }
    }
}

/// A /30 of 10.200.0.0/16 that no local address uses, chosen from `pid` and `n`.
fn free_subnet(pid: u32, n: u32) -> io::Result<(Ipv4Addr, Ipv4Addr)> {
    let base = Ipv4Addr::new(10, 200, 0, 0).to_bits();
    let start = pid.wrapping_mul(64).wrapping_add(n.wrapping_mul(7));
    for attempt in 0..64 {
        let subnet = base + (start.wrapping_add(attempt) % SUBNETS) * 4;
        let cidr = format!("{}/30", Ipv4Addr::from_bits(subnet));
        let used = Command::new("ip")
            .args(["-o", "-4", "addr", "show", "to", &cidr])
            .stderr(Stdio::null())
            .output()?;
        if used.status.success() && used.stdout.is_empty() {
            return Ok((
                Ipv4Addr::from_bits(subnet + 1),
                Ipv4Addr::from_bits(subnet + 2),
            ));
        }
    }
    Err(io::Error::other(
        "no free /30 in 10.200.0.0/16 after 64 tries",
    ))
}

/// A BPF filesystem mounted on a fresh directory under the temp dir; unmounted (lazily) and
/// removed on drop.
pub struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    pub fn new(tag: &str) -> io::Result<BpfFs> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("relay-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        let fs = BpfFs { path };
        run(Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&fs.path))?;
        Ok(fs)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        // Unmounting drops every pin left on it (and so any link they held).
        let _ = quiet(Command::new("umount").arg("-l").arg(&self.path));
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Runs `cmd`, failing with its stderr unless it exits 0.
pub fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn quiet(cmd: &mut Command) -> io::Result<std::process::ExitStatus> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// Runs `f` on a thread that has entered the network namespace `name` (from `ip netns add`):
/// sockets it opens live in that namespace. Only that thread moves; this one stays.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let path = Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                use std::os::fd::AsRawFd as _;
                // SAFETY: `file` is an open namespace file that outlives the call; setns only
                // changes this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("the thread in the namespace panicked"))?
    })
}

/// A named network namespace with nothing in it yet; deleted (with every link in it) on drop.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `relay-<tag><pid>-<n>` with its `lo` up.
    pub fn new(tag: &str) -> io::Result<Namespace> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("relay-{tag}{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Namespace { name };
        run(ns.ip().args(["link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME`.
    pub fn ip(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]);
        cmd
    }

    /// `ip netns exec NAME program`.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Writes a sysctl of this namespace (`key` like `net/ipv4/conf/all/rp_filter`).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/{key}");
        in_netns(&self.name, || std::fs::write(&path, value))?
    }
}

/// A namespace holding a bridge, `br0`: a switch other namespaces plug into.
pub struct Bridge {
    pub ns: Namespace,
}

impl Bridge {
    pub fn new(tag: &str) -> io::Result<Bridge> {
        let ns = Namespace::new(tag)?;
        run(ns.ip().args(["link", "add", "br0", "type", "bridge"]))?;
        run(ns.ip().args(["link", "set", "br0", "up"]))?;
        Ok(Bridge { ns })
    }

    /// A veth from `ns` (as `eth0`, with `cidr` and, when given, `mac`) to the bridge (as
    /// `port`), both ends up.
    pub fn plug(
        &self,
        ns: &Namespace,
        port: &str,
        cidr: &str,
        mac: Option<&str>,
    ) -> io::Result<()> {
        run(self.ns.ip().args([
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]))?;
        run(self
            .ns
            .ip()
            .args(["link", "set", port, "master", "br0", "up"]))?;
        if let Some(mac) = mac {
            run(ns.ip().args(["link", "set", "eth0", "address", mac]))?;
        }
        run(ns.ip().args(["addr", "add", cidr, "dev", "eth0"]))?;
        run(ns.ip().args(["link", "set", "eth0", "up"]))?;
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

//! Child processes and what they cost: guards that stop a child (and its children) on drop,
//! CPU seconds of a process tree from `/proc/PID/stat`, CPU seconds of reaped children from
//! `getrusage`, and a flag raised by SIGINT/SIGTERM so the harness unwinds and its guards run.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM raise a flag that the measuring loop checks, so the guards below stop
/// every server even when the run is interrupted.
pub fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Whether SIGINT/SIGTERM arrived.
pub fn interrupted() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// An error if SIGINT/SIGTERM arrived.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// `taskset -c CPUS PROGRAM`: taskset execs the program, so the child's pid is the
/// program's. The child is also killed if the harness dies without unwinding.
pub fn pinned(cpus: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpus).arg(program);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and only changes the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Pins this process, every thread it has and every one it starts later, to `cpus`
/// (`taskset -a -p -c`): a harness that is its own load client and origin.
pub fn pin_self(cpus: &str) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus])
        .arg(std::process::id().to_string())
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {cpus}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A child process (and whatever it forks) stopped on drop: `stop_signal`, up to 10 s for
/// it to exit, then SIGKILL to the whole tree.
pub struct Guard {
    child: Child,
    name: String,
    stop_signal: libc::c_int,
    stopped: bool,
}

impl Guard {
    pub fn spawn(cmd: &mut Command, name: &str, stop_signal: libc::c_int) -> Result<Guard> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Guard {
            child,
            name: name.to_string(),
            stop_signal,
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// An error naming the process if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => bail!("{} exited unexpectedly ({st})", self.name),
            Err(e) => bail!("{}: wait failed: {e}", self.name),
        }
    }

    /// Stops the process (and its children); returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        let tree = descendants(self.pid());
        signal(self.pid(), self.stop_signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                kill_all(&tree);
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "relay-bench: {} did not stop within 10 s: SIGKILL",
            self.name
        );
        kill_all(&tree);
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) on a pid of our own process tree; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn kill_all(pids: &[u32]) {
    for &p in pids {
        signal(p, libc::SIGKILL);
    }
}

/// (parent pid, utime + stime in clock ticks) of one process, all its threads included.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15 (proc(5)).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn all_processes() -> HashMap<u32, (u32, u64)> {
    let mut all = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(s) = stat(pid) {
            all.insert(pid, s);
        }
    }
    all
}

/// `root` and every process below it.
fn tree(root: u32, all: &HashMap<u32, (u32, u64)>) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    // Bounded: each pid is added once (a process has one parent).
    while i < out.len() && out.len() <= all.len() {
        let parent = out[i];
        out.extend(
            all.iter()
                .filter(|(pid, (ppid, _))| *ppid == parent && **pid != root)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    out
}

/// Every process below `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let all = all_processes();
    tree(root, &all).into_iter().skip(1).collect()
}

/// CPU ticks per process of a tree at one instant.
pub struct CpuSample(HashMap<u32, u64>);

/// Samples the CPU ticks of `root` and all its descendants (nginx: master and workers).
pub fn sample_tree(root: u32) -> CpuSample {
    let all = all_processes();
    CpuSample(
        tree(root, &all)
            .into_iter()
            .filter_map(|p| all.get(&p).map(|(_, t)| (p, *t)))
            .collect(),
    )
}

/// CPU seconds the tree spent between two samples. A process that appeared in between
/// counts whole; one that exited in between loses what it spent after `before`.
pub fn cpu_seconds(before: &CpuSample, after: &CpuSample) -> f64 {
    let ticks: u64 = after
        .0
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.0.get(pid).copied().unwrap_or(0)))
        .sum();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User + system CPU seconds of all children reaped so far (getrusage RUSAGE_CHILDREN).
pub fn reaped_children_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain old data (all-zero is valid), and getrusage writes only into
    // the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Busy CPU seconds of the whole machine so far (all CPUs: user, nice, system, irq,
/// softirq and steal from /proc/stat). Minus what the server and wrk spent, it shows how
/// much else ran during a measurement.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    busy as f64 / clock_ticks()
}

/// Seconds `cpus` spent idle (idle + iowait, from `/proc/stat`), summed: with the wall time,
/// how busy those cores were, whoever the kernel charged their time to (loopback softirq
/// work is charged to no process).
pub fn cpus_idle_seconds(cpus: &[usize]) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let idle: u64 = stat
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu: usize = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            if !cpus.contains(&cpu) {
                return None;
            }
            let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
            Some(v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0))
        })
        .sum();
    idle as f64 / clock_ticks()
}

/// The CPUs this process may run on (sched_getaffinity), in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain old data; sched_getaffinity writes at most its size.
    let (rc, set) = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (rc, set)
    };
    if rc != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set within CPU_SETSIZE bits.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// A free TCP port on 127.0.0.1 (bound, read and released; the caller binds it next).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits (at most `limit`) until `addr` accepts a TCP connection.
pub fn wait_listening(addr: std::net::SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing accepts connections on {addr} after {limit:?}");
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_read_and_grows() {
        let me = std::process::id();
        let a = sample_tree(me);
        assert!(a.0.contains_key(&me));
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = sample_tree(me);
        assert!(cpu_seconds(&a, &b) > 0.0);
    }

    #[test]
    fn child_is_in_the_tree_and_stopped_by_its_guard() {
        let mut g = Guard::spawn(Command::new("sleep").arg("30"), "sleep", libc::SIGTERM).unwrap();
        let pid = g.pid();
        assert!(sample_tree(std::process::id()).0.contains_key(&pid));
        g.check_alive().unwrap();
        drop(g);
        assert!(!std::path::Path::new(&format!("/proc/{pid}/stat")).exists());
    }
}

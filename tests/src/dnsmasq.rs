//! dnsmasq as a name server no one here wrote: on a free loopback port, answering only from
//! a hosts file of its own (no upstream servers, not `/etc/hosts`), with a TTL of one
//! second, so no query leaves the machine; the file rewritten and re-read (SIGHUP) to move
//! a name; the queries it logs counted. Stopped on drop.

use crate::TempDir;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Dnsmasq {
    child: Child,
    pub port: u16,
    dir: TempDir,
    /// Every line it logged (its queries among them).
    log: Arc<Mutex<Vec<String>>>,
}

impl Dnsmasq {
    /// Answering `records` (address, name); None when dnsmasq is not installed (`cargo
    /// xtask setup` installs it).
    pub fn start(records: &[(&str, &str)]) -> Option<Dnsmasq> {
        let found = Command::new("dnsmasq")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return None;
        }
        let dir = TempDir::new("dnsmasq");
        let hosts = dir.write("hosts", &hosts_file(records));
        // A free port, tried again when another process took it (UDP or TCP) meanwhile.
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = Command::new("dnsmasq")
                .args(["--keep-in-foreground", "--conf-file=/dev/null"])
                .args(["--no-resolv", "--no-hosts", "--no-poll"])
                .arg(format!("--addn-hosts={}", hosts.display()))
                .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
                .arg(format!("--port={port}"))
                .args(["--local-ttl=1", "--log-queries", "--log-facility=-"])
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start dnsmasq");
            let log = Arc::new(Mutex::new(Vec::new()));
            let logged = log.clone();
            let stderr = child.stderr.take().expect("piped");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[dnsmasq] {line}");
                    logged.lock().unwrap().push(line);
                }
            });
            let read = || log.lock().unwrap().iter().any(|l| l.contains("read "));
            let end = Instant::now() + Duration::from_secs(10);
            while !read() && child.try_wait().ok().flatten().is_none() {
                assert!(
                    Instant::now() < end,
                    "dnsmasq did not read its hosts file within 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            if read() {
                return Some(Dnsmasq {
                    child,
                    port,
                    dir,
                    log,
                });
            }
            // (It exited: its port was taken.)
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on any of 5 free ports")
    }

    /// Answers `records` from now on (the file rewritten, SIGHUP, waited for its re-read).
    pub fn set(&self, records: &[(&str, &str)]) {
        let reads = self.count("read ");
        self.dir.write("hosts", &hosts_file(records));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        let end = Instant::now() + Duration::from_secs(10);
        while self.count("read ") <= reads {
            assert!(Instant::now() < end, "dnsmasq did not re-read within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Queries it logged for `name` (any type).
    pub fn queries(&self, name: &str) -> usize {
        let needle = format!("] {name} from");
        self.count(&needle)
    }

    fn count(&self, needle: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).count()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn hosts_file(records: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::new();
    for (address, name) in records {
        text.push_str(&format!("{address} {name}\n"));
    }
    text.into_bytes()
}

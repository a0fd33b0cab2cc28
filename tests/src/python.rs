//! python's `http.server` as an origin no one here wrote: serving a directory on a loopback
//! port (no Range support: every fetch gets the whole body, `Last-Modified` and no `ETag`),
//! the requests it logs counted; killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PythonOrigin {
    child: Child,
    pub port: u16,
    /// The targets of the GETs it logged, in order.
    gets: Arc<Mutex<Vec<String>>>,
}

impl PythonOrigin {
    pub fn start(dir: &std::path::Path) -> PythonOrigin {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        PythonOrigin::start_on(dir, std::net::Ipv4Addr::LOCALHOST, port)
    }

    /// Serving `dir` on `ip:port` (any address of 127.0.0.0/8 is on loopback).
    pub fn start_on(dir: &std::path::Path, ip: std::net::Ipv4Addr, port: u16) -> PythonOrigin {
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", &ip.to_string()])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 is installed by `cargo xtask setup`");
        // Each request is a line on stderr: `127.0.0.1 - - [date] "GET /x HTTP/1.1" 200 -`.
        let gets = Arc::new(Mutex::new(Vec::new()));
        let logged = gets.clone();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(target) = line
                    .split("\"GET ")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                {
                    logged.lock().unwrap().push(target.to_string());
                }
            }
        });
        let mut origin = PythonOrigin { child, port, gets };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(
                origin.child.try_wait().ok().flatten().is_none(),
                "http.server exited"
            );
            assert!(
                Instant::now() < deadline,
                "http.server did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        origin
    }

    /// GETs it logged whose target starts with `prefix` ("/": all of them).
    pub fn gets(&self, prefix: &str) -> usize {
        let gets = self.gets.lock().unwrap();
        gets.iter().filter(|t| t.starts_with(prefix)).count()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PythonOrigin {
    fn drop(&mut self) {
        self.kill();
    }
}

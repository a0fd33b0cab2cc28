//! `nginx` (nginx-light, installed by `cargo xtask setup`) as an origin no one here wrote:
//! serving a directory on a loopback port, in the foreground as one process (no master),
//! everything it writes under its own directory; killed on drop. Over TLS too, with a
//! certificate made at test time ([`crate::tls::TestCa`]).

use crate::TempDir;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One request nginx answered ([`NginxOrigin::answers`]).
#[derive(Clone, Debug)]
pub struct Answered {
    pub connection: u64,
    pub status: u16,
    /// Body bytes sent (as nginx counts them: those written to the socket).
    pub bytes: u64,
    pub path: String,
    /// The `Range` field asked for; `-` when none.
    pub range: String,
}

pub struct NginxOrigin {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl NginxOrigin {
    /// Plain HTTP; `locations`: the server block's `location`s.
    pub fn start(root: &std::path::Path, locations: &str) -> NginxOrigin {
        NginxOrigin::start_with(root, "", locations)
    }

    /// HTTPS with the PEM certificate chain `cert` and key `key`; every request logged as
    /// `connection-serial request-line` ([`NginxOrigin::access_log`]).
    pub fn start_tls(
        root: &std::path::Path,
        cert: &str,
        key: &str,
        locations: &str,
    ) -> NginxOrigin {
        let dir = TempDir::new("nginx-tls-files");
        let cert = dir.write("origin.crt", cert.as_bytes());
        let key = dir.write("origin.key", key.as_bytes());
        let server = format!(
            "ssl_certificate {};\nssl_certificate_key {};\n{locations}",
            cert.display(),
            key.display()
        );
        let origin = NginxOrigin::start_with(root, " ssl", &server);
        // (The files are read at start.)
        drop(dir);
        origin
    }

    /// `listen` options after the address, and the server block's other lines.
    fn start_with(root: &std::path::Path, listen: &str, server: &str) -> NginxOrigin {
        let dir = TempDir::new("nginx");
        let d = dir.path().display();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let user = if crate::is_root() { "user root;\n" } else { "" };
        let config = format!(
            "{user}worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n\
             types {{ text/html html; }}\ndefault_type application/octet-stream;\n\
             log_format conn '$connection $request';\naccess_log {d}/access.log conn;\n\
             log_format answers '$connection $status $body_bytes_sent $uri \"$http_range\"';\n\
             access_log {d}/answers.log answers;\n\
             client_body_temp_path {d}/tmp;\nproxy_temp_path {d}/tmp;\n\
             fastcgi_temp_path {d}/tmp;\nuwsgi_temp_path {d}/tmp;\nscgi_temp_path {d}/tmp;\n\
             server {{\nlisten 127.0.0.1:{port}{listen};\nroot {};\n{server}\n}}\n}}\n",
            root.display()
        );
        let path = dir.write("nginx.conf", config.as_bytes());
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx is installed by `cargo xtask setup`");
        let mut origin = NginxOrigin { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                origin.child.try_wait().ok().flatten().is_none(),
                "nginx exited: {}",
                origin.error_log()
            );
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        origin
    }

    /// The requests nginx answered: (connection serial, request line), in order.
    pub fn access_log(&self) -> Vec<(u64, String)> {
        settled(&self.dir.path().join("access.log"))
            .lines()
            .filter_map(|l| {
                let (conn, request) = l.split_once(' ')?;
                Some((conn.parse().ok()?, request.to_string()))
            })
            .collect()
    }

    /// What nginx answered, in order: for each request its connection serial, status, the
    /// body bytes it sent, the path and the `Range` asked for (`-` when none).
    pub fn answers(&self) -> Vec<Answered> {
        settled(&self.dir.path().join("answers.log"))
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(5, ' ');
                Some(Answered {
                    connection: f.next()?.parse().ok()?,
                    status: f.next()?.parse().ok()?,
                    bytes: f.next()?.parse().ok()?,
                    path: f.next()?.to_string(),
                    range: f.next()?.trim_matches('"').to_string(),
                })
            })
            .collect()
    }

    /// What nginx logged as errors.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A log of nginx's once it has stopped growing: nginx writes a request's line after the
/// answer's last byte went out, so a client through relay may have the body before the line
/// is there. Read until two reads 50 ms apart agree, for at most 2 s.
fn settled(path: &std::path::Path) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut text = read();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let again = read();
        if again == text || std::time::Instant::now() >= until {
            return again;
        }
        text = again;
    }
}

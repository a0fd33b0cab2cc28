//! The servers under test, each a pinned child process stopped on drop:
//! - relay on a config the harness writes (memory hits);
//! - one nginx instance (config written under the run's temp dir: pid, logs, temp and cache
//!   paths all there) with two servers: a file server (`sendfile`, page cache) and a caching
//!   proxy (`proxy_cache`) in front of that file server;
//! - Varnish (Debian's `varnishd`, its working directory under the run's temp dir, objects
//!   in `malloc` storage) in front of the same file server.

use crate::procs::{self, Guard};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running relay.
pub struct Relay {
    guard: Guard,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Relay {
    /// Starts `bin run --config DIR/relay.toml` pinned to `cpus` with `workers` workers and
    /// the directory `origin`; see [`Relay::start_config`].
    pub fn start(
        bin: &Path,
        dir: &Path,
        origin: &Path,
        cpus: &str,
        workers: usize,
    ) -> Result<Relay> {
        let config = format!(
            "# written by relay-bench\n[server]\nlisten = \"127.0.0.1:0\"\nworkers = {workers}\n\n\
             [cache]\nchunk_size = \"1 MiB\"\nmemory_bytes = \"256 MiB\"\n\n\
             [origin]\ndirectory = \"{}\"\n\n[admin]\nenabled = false\n",
            origin.display()
        );
        Relay::start_config(bin, dir, &config, cpus)
    }

    /// Writes `config` to DIR/relay.toml, starts `bin run --config` on it pinned to `cpus`
    /// and waits (at most 20 s) for its listening line. stderr goes to DIR/relay.log.
    pub fn start_config(bin: &Path, dir: &Path, text: &str, cpus: &str) -> Result<Relay> {
        let config = dir.join("relay.toml");
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join("relay.log");
        let mut cmd = procs::pinned(cpus, bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut guard = Guard::spawn(&mut cmd, "relay", libc::SIGTERM)?;
        let stderr = guard.child_mut().stderr.take().context("relay stderr")?;
        let mut file = std::fs::File::create(&log)?;
        let (tx, rx) = mpsc::channel();
        // Drains relay's stderr for its whole life (a full pipe would block its logging).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(rest) = relay_tests::after(&line, "relay: listening on http://") {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a
                .parse()
                .with_context(|| format!("relay's listening address {a:?}"))?,
            Err(_) => {
                guard.check_alive()?;
                bail!(
                    "relay did not print its listening line within 20 s (log: {})",
                    log.display()
                );
            }
        };
        Ok(Relay { guard, addr, log })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.guard.check_alive()
    }
}

/// A running nginx (master and workers): file server and caching proxy.
pub struct Nginx {
    guard: Guard,
    pub files: SocketAddr,
    pub proxy: SocketAddr,
    pub error_log: PathBuf,
    pub config: PathBuf,
}

impl Nginx {
    /// Writes DIR/nginx.conf, checks it with `nginx -t`, starts nginx in the foreground
    /// (`daemon off`) pinned to `cpus`, and waits for both servers to accept.
    /// `sendfile`: the file server's mode (the proxy always reads its cache files the
    /// same way).
    pub fn start(
        dir: &Path,
        origin: &Path,
        cpus: &str,
        workers: usize,
        sendfile: bool,
    ) -> Result<Nginx> {
        let files: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
        let proxy: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let text = config_text(dir, origin, workers, files, proxy, root, sendfile);
        Nginx::start_config(dir, &text, cpus, files, proxy)
    }

    /// nginx on a config of the caller's (written to DIR/nginx.conf; its temp paths under
    /// DIR, see [`main_context`] and [`http_common`]), started as [`Nginx::start`] does; `files` and `proxy` are
    /// the addresses waited for (the same one twice for a config with one server).
    pub fn start_config(
        dir: &Path,
        text: &str,
        cpus: &str,
        files: SocketAddr,
        proxy: SocketAddr,
    ) -> Result<Nginx> {
        for sub in [
            "cache",
            "client_body",
            "proxy_temp",
            "fastcgi",
            "uwsgi",
            "scgi",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let config = dir.join("nginx.conf");
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let error_log = dir.join("error.log");
        let base = |cmd: &mut Command| {
            cmd.arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&config)
                .arg("-e")
                .arg(&error_log)
                .stdin(Stdio::null());
        };
        let mut test = Command::new("nginx");
        base(&mut test);
        let out = test.arg("-t").output().context("running nginx -t")?;
        if !out.status.success() {
            bail!(
                "nginx rejects {}: {}",
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cmd = procs::pinned(cpus, "nginx");
        base(&mut cmd);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        // SIGTERM: nginx's fast shutdown (master and workers).
        let mut guard = Guard::spawn(&mut cmd, "nginx", libc::SIGTERM)?;
        for addr in [files, proxy] {
            procs::wait_listening(addr, Duration::from_secs(10))
                .with_context(|| format!("nginx (error log {})", error_log.display()))?;
        }
        guard.check_alive()?;
        Ok(Nginx {
            guard,
            files,
            proxy,
            error_log,
            config,
        })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.guard.check_alive()
    }
}

/// A running Varnish (manager and cache child).
pub struct Varnish {
    guard: Guard,
    pub addr: SocketAddr,
    pub vcl: PathBuf,
}

impl Varnish {
    /// Writes DIR/bench.vcl (every answer of `backend` cached for an hour; `X-Cache: HIT`
    /// on hits, to check them), starts `varnishd -F` pinned to `cpus` with one thread pool
    /// per server CPU (512 threads each from the start), 512 MiB of `malloc` storage, and
    /// waits for it to accept.
    pub fn start(dir: &Path, backend: SocketAddr, cpus: &str, pools: usize) -> Result<Varnish> {
        Varnish::start_with(dir, backend, cpus, pools, "malloc,512m", 512)
    }

    /// [`Varnish::start`] with this storage (`-s`) and `thread_pool_min`.
    pub fn start_with(
        dir: &Path,
        backend: SocketAddr,
        cpus: &str,
        pools: usize,
        storage: &str,
        threads: usize,
    ) -> Result<Varnish> {
        std::fs::create_dir_all(dir)?;
        let addr: SocketAddr = ([127, 0, 0, 1], procs::free_port()?).into();
        let vcl = dir.join("bench.vcl");
        std::fs::write(&vcl, vcl_text(backend))
            .with_context(|| format!("writing {}", vcl.display()))?;
        let mut cmd = procs::pinned(cpus, "varnishd");
        cmd.arg("-F")
            .arg("-n")
            .arg(dir.join("work"))
            .arg("-a")
            .arg(addr.to_string())
            .arg("-f")
            .arg(&vcl)
            .args(["-s", storage, "-p"])
            .arg(format!("thread_pools={}", pools.max(1)))
            // Threads for every connection the benchmark opens (up to 256) from the start:
            // growing the pool under load made 1 MiB at 256 connections time out.
            .arg("-p")
            .arg(format!("thread_pool_min={threads}"))
            // (Privilege separation would need the run dir readable by another user.)
            .args(["-j", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = Guard::spawn(&mut cmd, "varnishd", libc::SIGTERM)?;
        procs::wait_listening(addr, Duration::from_secs(20)).context("varnishd")?;
        guard.check_alive()?;
        Ok(Varnish { guard, addr, vcl })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.guard.check_alive()
    }
}

fn vcl_text(backend: SocketAddr) -> String {
    format!(
        "# written by relay-bench (cargo xtask bench serve)
vcl 4.1;

backend files {{
    .host = \"{}\";
    .port = \"{}\";
}}

sub vcl_backend_response {{
    set beresp.ttl = 1h;
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache = \"HIT\";
    }} else {{
        set resp.http.X-Cache = \"MISS\";
    }}
}}
",
        backend.ip(),
        backend.port()
    )
}

/// nginx's main context: workers, the pid and error log under `dir`, descriptors and
/// connections for thousands of clients (`user root` when run as root, so the workers can
/// read the run dir).
pub fn main_context(dir: &Path, workers: usize, root: bool) -> String {
    let d = dir.display();
    let user = if root { "user root;\n" } else { "" };
    format!(
        "{user}worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 65536;

events {{
    worker_connections 8192;
}}
"
    )
}

/// The http context's common part: no access log, sendfile, long keep-alive, and the temp
/// paths, all under `dir` (created by [`Nginx::start_config`]).
pub fn http_common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;"
    )
}

/// The nginx config: tuned as an operator would for static files (issue 3: `sendfile on`,
/// `tcp_nopush on`, `access_log off`, `open_file_cache`, long keep-alive), the same worker
/// count as relay. `X-Cache-Status` carries `$upstream_cache_status` so hits can be checked.
fn config_text(
    dir: &Path,
    origin: &Path,
    workers: usize,
    files: SocketAddr,
    proxy: SocketAddr,
    root: bool,
    sendfile: bool,
) -> String {
    let d = dir.display();
    let o = origin.display();
    let main = main_context(dir, workers, root);
    let common = http_common(dir);
    let copy = if sendfile {
        ""
    } else {
        "\n        sendfile off;\n        output_buffers 1 1m;"
    };
    format!(
        "# written by relay-bench (cargo xtask bench serve)
{main}
http {{
{common}
    open_file_cache max=1024 inactive=300s;
    open_file_cache_valid 300s;
    open_file_cache_min_uses 1;
    open_file_cache_errors on;
    proxy_cache_path {d}/cache levels=1:2 keys_zone=bench:16m max_size=1g inactive=1h use_temp_path=off;

    upstream files {{
        server {files};
        keepalive 32;
    }}

    # The file server: objects from the page cache with sendfile (or copied, --nginx-copy).
    server {{
        listen {files} backlog=4096;
        root {o};{copy}
        location / {{ }}
    }}

    # The caching proxy in front of it: every measured request is a proxy_cache hit.
    server {{
        listen {proxy} backlog=4096;
        location / {{
            proxy_pass http://files;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_config_keeps_everything_under_the_run_dir() {
        let text = |sendfile| {
            config_text(
                Path::new("/tmp/rb"),
                Path::new("/tmp/rb/origin"),
                1,
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
                false,
                sendfile,
            )
        };
        let t = text(true);
        let mut paths = 0;
        for l in t.lines().map(str::trim) {
            let directive = l.split_whitespace().next().unwrap_or("");
            if ["pid", "error_log", "root", "proxy_cache_path"].contains(&directive)
                || directive.ends_with("_temp_path")
            {
                assert!(l.contains(" /tmp/rb/"), "path outside the run dir: {l}");
                paths += 1;
            }
        }
        assert_eq!(paths, 9);
        assert!(!t.contains("access_log /"));
        for must in [
            "sendfile on;",
            "tcp_nopush on;",
            "access_log off;",
            "open_file_cache ",
        ] {
            assert!(t.contains(must), "{must}");
        }
        assert!(t.contains("worker_processes 1;"));
        assert!(text(false).contains("sendfile off;\n        output_buffers 1 1m;"));
    }
}

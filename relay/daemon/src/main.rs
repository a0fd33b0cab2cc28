//! The `relay` binary: command line, config loading, signals, and the wiring of the parts:
//! it opens the cache (`relay_cache`), starts the upstream (`relay_upstream`) and hands both
//! to the workers (`relay_server`). The work happens in those libraries and `relay_steer`
//! (XDP), from a `relay_config` config.

mod digest;
mod logging;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use relay_config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the config is when no `--config` names it (the package installs it there).
const DEFAULT_CONFIG: &str = "/etc/relay/relay.toml";

/// Set once the listening sockets were handed over to a new relay (`relay_server::handover`).
static HANDED_OVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a new relay waits for the one it took the sockets from to finish and exit:
/// beyond the workers' drain deadline and grace (10 s and 5 s).
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the pages the calling thread freed back to the system now, rather than when that
/// thread next allocates (a worker whose clients left may not allocate for hours).
fn release_memory() {
    // SAFETY: `mi_collect` takes no pointers and only purges pages the allocator already
    // holds free.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[derive(Parser)]
#[command(
    name = "relay",
    version,
    about = "A caching edge relay for Linux edge servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on the configured address until SIGTERM or SIGINT.
    Run {
        /// The TOML config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take the listening sockets of the relay running on this address (a restart
        /// without a gap: it finishes its responses and exits, and this one serves; clients
        /// that connect meanwhile wait, none is refused). Without it, a second relay on an
        /// address is refused. (Under systemd, enable relay.socket instead: the new relay
        /// would not be the service's.)
        #[arg(long)]
        take_over: bool,
    },
    /// Validate a config file; errors name the key and line (exit status 2).
    CheckConfig {
        /// The TOML config file (as `run` takes it; default /etc/relay/relay.toml).
        #[arg(long, short, conflicts_with = "file")]
        config: Option<PathBuf>,
        /// The TOML config file, given without `--config`.
        file: Option<PathBuf>,
    },
    /// Load, attach, inspect and remove the XDP steering program.
    Steer {
        #[command(subcommand)]
        command: SteerCommand,
    },
    /// Ask a running relay (its admin listener) about its cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Write the manual pages (relay.1 and one per command) into a directory (packaging).
    #[command(hide = true)]
    Man {
        /// The directory the pages go to.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Whether a URL is cached, where (memory, disk, on its way), its age, TTL and
    /// validators, as JSON (exit status 1 when nothing of it is held).
    Inspect {
        /// The URL as clients ask for it (http://host/path?query), or a directory
        /// origin's /path.
        url: String,
        /// The config whose admin.listen to ask.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The admin listener to ask instead (host:port).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
enum SteerCommand {
    /// Attach the embedded XDP program to an interface, pinned so it outlives this command.
    Attach {
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum, default_value_t = Mode::Default)]
        mode: Mode,
        /// Where the pins go (default: the config's steer.pin_root, else /sys/fs/bpf/relay).
        #[arg(long)]
        pin_root: Option<PathBuf>,
        /// Fill the maps from this config's [steer] (services, nodes, guard); default: none.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Bring an attached program's maps in step with a config's [steer] (atomic table swap).
    Sync {
        #[arg(long)]
        iface: String,
        /// Where the pins are (default: the config's steer.pin_root).
        #[arg(long)]
        pin_root: Option<PathBuf>,
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Detach the program from an interface and remove its pins.
    Detach {
        #[arg(long)]
        iface: String,
        /// Where the pins are (default: the config's steer.pin_root, else /sys/fs/bpf/relay).
        #[arg(long)]
        pin_root: Option<PathBuf>,
        /// The TOML config file whose steer.pin_root to use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the per-verdict packet counters of every attached interface.
    Status {
        /// Where the pins are (default: the config's steer.pin_root, else /sys/fs/bpf/relay).
        #[arg(long)]
        pin_root: Option<PathBuf>,
        /// The TOML config file whose steer.pin_root to use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Let the kernel choose (native where the driver supports it).
    Default,
    /// Generic XDP in the network stack (works on every device).
    Skb,
    /// Native XDP in the driver.
    Native,
}

/// What `relay --version` says: the version, the git revision it was built from, and
/// whether the XDP programs are in the binary (`cargo install` alone builds one without).
fn version() -> String {
    let xdp = match relay_steer::object() {
        Ok(_) => "XDP programs embedded",
        Err(_) => {
            "no XDP programs: built without RELAY_EBPF_OBJECT (`cargo xtask build` embeds them)"
        }
    };
    format!(
        "{} (git {}, {xdp})",
        env!("CARGO_PKG_VERSION"),
        env!("RELAY_GIT_REVISION")
    )
}

fn main() -> ExitCode {
    logging::init();
    // (Made once per process; clap takes a static string.)
    let matches = Cli::command()
        .version(version().leak() as &str)
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Run { config, take_over } => run(&config, take_over),
        Command::CheckConfig { config, file } => {
            let file = config
                .or(file)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            return check_config(&file);
        }
        Command::Steer { command } => steer(command),
        Command::Man { out } => man(&out),
        Command::Cache {
            command: CacheCommand::Inspect { url, config, admin },
        } => return cache_inspect(&url, &config, admin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `relay man --out DIR`: relay.1, and relay-<command>.1 for each command (relay-steer-*.1
/// for steer's), generated from the command line's own definitions.
fn man(out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cli = Cli::command().version(version().leak() as &str).long_about(
        "relay serves HTTP/1.1 from a memory and disk chunk cache, one io_uring event \
             loop per core, and fetches misses from its origins (or from the other relays of \
             its site) once per chunk however many clients wait. `relay run` serves; SIGHUP \
             reloads the config, SIGUSR1 opens the access log again, SIGTERM finishes the \
             responses in flight and stops. The config reference, every key with its \
             default: /usr/share/doc/relay/relay.toml.example.",
    );
    let mut pages = vec![("relay".to_string(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("relay-{}", sub.get_name());
        for subsub in sub.get_subcommands() {
            let n = format!("{name}-{}", subsub.get_name());
            // (clap names are static strings; this runs once, when packaging.)
            pages.push((n.clone(), subsub.clone().name(n.leak() as &str)));
        }
        pages.push((name.clone(), sub.clone().name(name.leak() as &str)));
    }
    for (name, cmd) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .with_context(|| format!("rendering {name}.1"))?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The cache key of `url` as relay writes it (`relay_cache::key`): `http://` + the host in
/// lower case without a trailing dot or `:80` + path and query; `dir:` + a bare path.
fn cache_key(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://").or(url.strip_prefix("HTTP://")) {
        let (authority, target) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let authority = authority.to_ascii_lowercase();
        let authority = authority.strip_suffix(":80").unwrap_or(&authority);
        let (host, port) = match authority.strip_prefix('[') {
            // (An IPv6 address: its port after the bracket.)
            Some(_) => match authority.split_once("]:") {
                Some((h, p)) => (&authority[..h.len() + 1], Some(p)),
                None => (authority, None),
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let target = if target.is_empty() { "/" } else { target };
        return match port {
            Some(p) => format!("http://{host}:{p}{target}"),
            None => format!("http://{host}{target}"),
        };
    }
    match url.strip_prefix("dir:") {
        Some(_) => url.to_string(),
        None => format!("dir:{url}"),
    }
}

/// `relay cache inspect URL`: asks the admin listener's `/cache` and prints its answer.
fn cache_inspect(
    url: &str,
    config: &std::path::Path,
    admin: Option<std::net::SocketAddr>,
) -> ExitCode {
    use std::io::{Read, Write};
    let admin = match admin {
        Some(a) => a,
        None => match Config::load(config) {
            Ok(c) if c.admin.enabled => c.admin.listen,
            Ok(_) => {
                eprintln!("relay: {}: the admin listener is off", config.display());
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    let key = cache_key(url);
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let asked = (|| -> std::io::Result<Vec<u8>> {
        let mut s =
            std::net::TcpStream::connect_timeout(&admin, std::time::Duration::from_secs(5))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(
            s,
            "GET /cache?key={encoded} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)?;
        Ok(answer)
    })();
    let answer = match asked {
        Ok(a) => String::from_utf8_lossy(&a).into_owned(),
        Err(e) => {
            eprintln!("relay: cannot ask the admin listener at {admin}: {e}");
            return ExitCode::from(2);
        }
    };
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    print!("{body}");
    match head.split_whitespace().nth(1) {
        Some("200") => ExitCode::SUCCESS,
        Some("404") => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

/// `server.drain_ms` after SIGTERM: serving and accepting as ever with `/healthz` at 503,
/// until the time is up or a second SIGTERM (or SIGINT) comes.
fn drain(
    server: &relay_server::Server,
    signals: &mut signal_hook::iterator::Signals,
    drain_ms: u64,
) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    server.drain();
    tracing::warn!("draining for {drain_ms} ms: /healthz answers 503, still serving");
    let until = std::time::Instant::now() + std::time::Duration::from_millis(drain_ms);
    while std::time::Instant::now() < until {
        if signals.pending().any(|s| s == SIGTERM || s == SIGINT) {
            tracing::warn!("a second signal: draining cut short");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path, take_over: bool) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config_drain_ms = config.server.drain_ms;
    use relay_server::listen_lock::ListenLock;
    // A relay already running on this address hands its listening sockets over (a restart
    // without a gap: `relay_server::handover`); it finishes and exits, and this one waits
    // for that before it takes the address's lock and the cache's directories.
    let offered = match take_over {
        true => relay_server::handover::take_over(config.server.listen)
            .context("taking over from the running relay")?,
        false => None,
    };
    let handed = match offered {
        Some(mut h) => {
            tracing::warn!(
                "took over {} listening sockets from the running relay; waiting for it \
                 to finish its responses",
                h.client.len() + h.peer.len() + usize::from(h.admin.is_some())
            );
            if !h.wait_old_gone(HANDOVER_WAIT) {
                anyhow::bail!(
                    "the running relay did not stop within {HANDOVER_WAIT:?} after handing over"
                );
            }
            Some(h)
        }
        None => None,
    };
    let taking_over = handed.is_some();
    let take_lock = |addr| match taking_over {
        true => ListenLock::take_when_free(addr, std::time::Duration::from_secs(10)),
        false => ListenLock::take(addr),
    };
    // Held for the process's life: a second relay on these addresses is refused.
    let listens = config.server.listens();
    let _listen_locks = listens
        .iter()
        .map(|&a| take_lock(a))
        .collect::<Result<Vec<_>, _>>()?;
    let (client_handed, peer_handed, admin_handed) = match handed {
        Some(h) => (h.client, h.peer, h.admin),
        None => (Vec::new(), Vec::new(), None),
    };
    // The sockets handed over, by address.
    let mut client_handed = by_address(client_handed);
    let peer_listen = config.cluster.as_ref().and_then(|c| c.peer_listen);
    // Sockets systemd passed (`relay.socket`, LISTEN_FDS), by address: it keeps them, and
    // the connections queued on them, across a restart.
    let mut activated: std::collections::HashMap<_, _> = activated_sockets()?
        .into_iter()
        .filter_map(|l| Some((l.local_addr().ok()?, l)))
        .collect();
    // (Taken over: one worker per listening socket of the first address, whatever
    // server.workers now says, so that no socket's queue is left unread.)
    let workers = match client_handed.get(&config.server.listen).map_or(0, Vec::len) {
        0 => config.server.effective_workers(),
        n => n,
    };
    // The start-up guard catches SIGTERM first, so a signal from the moment the process
    // catches it (`SigCgt`) stops start-up at once; the signals the running relay answers
    // are registered before any worker thread starts.
    let startup = StartupGuard::start()?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("signals")?;
    let admin = match (config.admin.enabled, admin_handed) {
        (true, Some(l)) if l.local_addr().ok() == Some(config.admin.listen) => Some(l),
        (true, _) => match activated.remove(&config.admin.listen) {
            Some(l) => Some(l),
            None => Some(
                std::net::TcpListener::bind(config.admin.listen)
                    .with_context(|| format!("admin listener on {}", config.admin.listen))?,
            ),
        },
        (false, _) => None,
    };
    // Each worker's listeners, one per address: those handed over where there are one per
    // worker, else bound now.
    let mut listeners: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for &addr in &listens {
        let group = match (client_handed.remove(&addr), activated.remove(&addr)) {
            (Some(g), _) if g.len() == workers => g,
            (_, Some(l)) => shared_socket(l, workers)?,
            _ => relay_server::bind(addr, workers)?,
        };
        for (w, l) in group.into_iter().enumerate() {
            listeners[w].push(l);
        }
    }
    for (addr, group) in client_handed {
        tracing::warn!(
            "{addr} was handed over but is no longer in server.listen: {} socket(s) closed",
            group.len()
        );
    }
    let peer_activated = peer_listen.and_then(|a| activated.remove(&a));
    for addr in activated.keys() {
        tracing::warn!(
            "systemd passed a socket on {addr}, which the config does not listen on: unused"
        );
    }
    // The cluster key, read once: gossip is sealed under it, and peer requests are checked
    // under a key derived from it.
    let cluster_key = match &config.cluster {
        Some(c) => Some(
            relay_config::cluster::read_key(&c.key_file)
                .map(relay_cluster::Key::new)
                .map_err(|m| anyhow::anyhow!("cluster.key_file: {m}"))?,
        ),
        None => None,
    };
    let (_peer_lock, peers) = match (peer_listen, &cluster_key) {
        (Some(addr), Some(key)) => {
            let lock = take_lock(addr)?;
            let listeners = match (peer_handed.len() == workers, peer_activated) {
                (true, _) => peer_handed,
                (false, Some(l)) => shared_socket(l, workers)?,
                (false, None) => relay_server::bind(addr, workers)?,
            };
            let peers = relay_server::Peers {
                listeners,
                key: relay_cluster::peer::PeerKey::derive(key),
                digest: std::sync::Arc::default(),
            };
            (Some(lock), Some(peers))
        }
        _ => (None, None),
    };
    let peer_addr = peers
        .as_ref()
        .and_then(|p| p.listeners.first())
        .and_then(|l| l.local_addr().ok());
    // Syncs the steering maps of `steer.iface` (if attached) and checks the nodes' health.
    let steer = relay_steer::Keeper::start(&config.steer);
    let cache = relay_cache::Cache::open(&config.cache)?;
    let wake = relay_server::Eventfds::new(listeners.len())?;
    let upstream = relay_upstream::Upstream::open(&config.origin, &cache, wake.wakers())?;
    relay_server::set_memory_release(release_memory);
    // Where misses learn of the site's other relays once the cluster is joined.
    let peer_slot = upstream.as_ref().map(|u| u.peers());
    let peer_key = peers.as_ref().map(|p| p.key.clone());
    let digest_slot = peers.as_ref().map(|p| p.digest.clone());
    let holdings = cache.holdings();
    // The sockets a later relay may take over (`relay_server::handover`).
    use std::os::fd::AsRawFd;
    let client_fds: Vec<std::os::fd::RawFd> =
        listeners.iter().flatten().map(|l| l.as_raw_fd()).collect();
    let peer_fds: Vec<std::os::fd::RawFd> = peers
        .as_ref()
        .map(|p| p.listeners.iter().map(|l| l.as_raw_fd()).collect())
        .unwrap_or_default();
    let admin_fd = admin.as_ref().map(|l| l.as_raw_fd());
    let listen = config.server.listen;
    let parts = relay_server::Parts {
        cache,
        upstream,
        wake,
        peers,
    };
    let cluster_config = config.cluster.clone();
    let pin_root = config.steer.pin_root.clone();
    let steer_cluster = config.steer.cluster_nodes;
    let server = relay_server::serve(config, listeners, parts)?;
    let mut digest_keeper = None;
    let cluster = match (&cluster_config, cluster_key) {
        (Some(c), Some(key)) => {
            // The address the others reach this relay's HTTP at: its peer listener's, else
            // its client listener's.
            let http = match peer_addr {
                Some(a) => c.peer_advertised(a),
                None => server.local_addr(),
            };
            // Its load, told to the others: the connections open now.
            let open = server.open_connections();
            let load = Box::new(move || u32::try_from(open()).unwrap_or(u32::MAX));
            let agent = start_cluster(c, key, http, load)?;
            // With a peer listener, misses ask a chunk's owner among the site's relays
            // before the origin (every relay of a site needs one).
            if let (Some(slot), Some(key)) = (&peer_slot, peer_key) {
                let _ = slot.set(site_peers(&agent, &c.site, key));
            }
            // This relay's digest, rebuilt as its chunks change, served to the others.
            if let Some(slot) = digest_slot {
                digest_keeper = Some(
                    digest::DigestKeeper::start(holdings, slot, agent.digest_etag())
                        .context("digest thread")?,
                );
            }
            // The steering tables follow the site's live relays.
            if steer_cluster {
                steer.follow(site_members(&agent, &c.site));
            }
            Some(agent)
        }
        _ => None,
    };
    // From here a SIGTERM drains (below) instead of ending the process.
    startup.done();
    for a in server.local_addrs() {
        tracing::info!("listening on http://{a} ({workers} workers)");
    }
    if let Some(c) = &cluster {
        tracing::info!("cluster on udp://{}", c.addr);
    }
    if let Some(a) = peer_addr {
        tracing::info!("peers on http://{a}");
    }
    if let Some(l) = admin {
        let addr = l.local_addr()?;
        // Beside the server's own: what was built, the XDP counters of every interface
        // pinned under steer.pin_root (when this process may read them), the cluster's.
        let view = cluster.as_ref().map(|c| c.view.clone());
        let build_info = format!(
            "# HELP relay_build_info The running relay: version, git revision, whether the \
             XDP programs are embedded.\n# TYPE relay_build_info gauge\n\
             relay_build_info{{version=\"{}\",revision=\"{}\",xdp=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            env!("RELAY_GIT_REVISION"),
            relay_steer::object().is_ok()
        );
        let metrics = server.metrics().with_extra(move |out| {
            out.push_str(&build_info);
            if let Ok(all) = relay_steer::status(&pin_root) {
                relay_steer::render_metrics(&all, out);
            }
            if let Some(view) = &view {
                view.render(out);
            }
        });
        relay_server::admin::spawn(l, metrics).context("admin thread")?;
        tracing::info!("admin on http://{addr} (/metrics, /healthz)");
    }
    // A new relay on this address may take the sockets over: this one then stops at once
    // (no drain: its sockets are in the new one's hands), finishing what is in flight.
    relay_server::handover::offer(listen, client_fds, peer_fds, admin_fd, || {
        HANDED_OVER.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = signal_hook::low_level::raise(SIGTERM);
    })
    .context("offering the sockets for a restart without a gap")?;
    // Under systemd (`Type=notify`): started once it serves.
    notify(&[sd_notify::NotifyState::Ready]);
    let mut drain_ms = config_drain_ms;
    for sig in signals.forever() {
        if sig == SIGUSR1 {
            // (logrotate moved the access log: a new file from the next line on.)
            server.reopen_logs();
            continue;
        }
        if sig != SIGHUP {
            notify(&[sd_notify::NotifyState::Stopping]);
            let handed = HANDED_OVER.load(std::sync::atomic::Ordering::Relaxed);
            if sig == SIGTERM && drain_ms > 0 && !handed {
                drain(&server, &mut signals, drain_ms);
            }
            tracing::warn!("signal {sig}: finishing in-flight responses");
            break;
        }
        notify(&[sd_notify::NotifyState::Reloading]);
        match Config::load(path) {
            Ok(new) => {
                drain_ms = new.server.drain_ms;
                steer.reload(&new.steer);
                let restart = server.reload(&new);
                tracing::warn!("reloaded {}", path.display());
                if !restart.is_empty() {
                    tracing::warn!(
                        "changed keys that need a restart (kept as they were): {}",
                        restart.join(", ")
                    );
                }
            }
            Err(e) => tracing::error!("reload refused, keeping the running config: {e}"),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }
    drop(steer);
    drop(digest_keeper);
    // Leaving tells the other relays at once, rather than letting them detect it.
    if let Some(c) = cluster {
        c.stop();
    }
    server.shutdown();
    server.join().context("worker failed")?;
    tracing::warn!("stopped");
    Ok(())
}

/// The site's other relays as the miss path asks them: a chunk's owner among the members of
/// `site` with a weight (weighted rendezvous hashing over their records), when it is not
/// this relay; requests to it signed with `key`.
fn site_peers(
    agent: &relay_cluster::Agent,
    site: &str,
    key: relay_cluster::peer::PeerKey,
) -> relay_upstream::Peers {
    use relay_cluster::owners::{
        Candidate, key_hash, overloaded, owners, stays_overloaded, totals,
    };
    let (view, me, site) = (agent.view.clone(), agent.addr, site.to_owned());
    // The owners spilling now (hysteresis: `stays_overloaded`).
    let spilling = std::sync::Mutex::new(std::collections::HashSet::new());
    relay_upstream::Peers {
        owner: Box::new(move |name| {
            let records = view.site_records(me, &site);
            let candidates: Vec<Candidate> = records
                .iter()
                .filter(|r| r.weight > 0)
                .map(|r| Candidate::new(r.node, r.weight))
                .collect();
            let listed = owners(key_hash(name), &candidates, 2);
            let record = |node| records.iter().find(|r| r.node == node);
            let mut owner = *listed.first()?;
            // An owner loaded well above the rest of the site gives its chunks to the second
            // (every relay sees the same loads, within a gossip round).
            let site_totals = totals(records.iter().map(|r| (r.load, r.weight)));
            if let (Some(first), Some(&second)) = (record(owner), listed.get(1)) {
                let mut spilling = spilling.lock().unwrap_or_else(|p| p.into_inner());
                let over = match spilling.contains(&owner) {
                    true => stays_overloaded(first.load, first.weight, site_totals),
                    false => overloaded(first.load, first.weight, site_totals),
                };
                match over {
                    true => spilling.insert(owner),
                    false => spilling.remove(&owner),
                };
                if over {
                    owner = second;
                }
            }
            match owner == me {
                true => None,
                false => record(owner).map(|r| r.http),
            }
        }),
        key,
        node: agent.addr.to_string(),
        members: {
            let (view, me) = (agent.view.clone(), agent.addr);
            Box::new(move || {
                let live: Vec<std::net::SocketAddr> =
                    view.members().iter().map(|m| m.addr).collect();
                view.records()
                    .into_iter()
                    .filter(|r| r.node != me && live.contains(&r.node))
                    .map(|r| (r.http, r.digest))
                    .collect()
            })
        },
    }
}

/// The live relays of `site` (this one's included) as steering nodes: what the keeper asks
/// at every check interval with `steer.cluster_nodes`.
fn site_members(agent: &relay_cluster::Agent, site: &str) -> relay_steer::members::MemberSource {
    let (view, me, site) = (agent.view.clone(), agent.addr, site.to_owned());
    std::sync::Arc::new(move || {
        view.site_records(me, &site)
            .into_iter()
            .map(|r| relay_steer::members::Member {
                name: r.node.to_string(),
                address: r.steer,
                weight: r.weight,
                local: r.node == me,
                probe: r.http,
            })
            .collect()
    })
}

/// Joins the cluster `[cluster]` describes under `key`: the gossip socket bound, the agent's
/// thread started, saying this relay serves HTTP at `http`.
fn start_cluster(
    c: &relay_config::ClusterConfig,
    key: relay_cluster::Key,
    http: std::net::SocketAddr,
    load: Box<dyn Fn() -> u32 + Send>,
) -> Result<relay_cluster::Agent> {
    relay_cluster::Agent::start(c, key, http, load)
        .with_context(|| format!("cluster gossip on udp://{}", c.listen))
}

/// Until [`StartupGuard::done`], SIGTERM or SIGINT ends the process at once: start-up
/// (opening the disk tier, every ring registering — pinning — a large memory tier) can take
/// long, and nothing it has made needs finishing: nothing was served, and a disk tier is
/// made safe to stop at any instant (temp file, then rename).
struct StartupGuard {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
    started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StartupGuard {
    fn start() -> Result<StartupGuard> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use std::sync::atomic::Ordering;
        let mut signals =
            signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).context("start-up signals")?;
        let handle = signals.handle();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = started.clone();
        let thread = std::thread::Builder::new()
            .name("relay-startup".into())
            .spawn(move || {
                for sig in signals.forever() {
                    // Once started, the main thread's own `Signals` has the signal too.
                    if !seen.load(Ordering::Acquire) {
                        tracing::warn!("signal {sig} during start-up: stopped before serving");
                        std::process::exit(128 + sig);
                    }
                }
            })
            .context("start-up signal thread")?;
        Ok(StartupGuard {
            handle,
            thread,
            started,
        })
    }

    fn done(self) {
        self.started
            .store(true, std::sync::atomic::Ordering::Release);
        self.handle.close();
        let _ = self.thread.join();
    }
}

fn steer(command: SteerCommand) -> Result<()> {
    // The pin root: the flag, else the config's steer.pin_root (its default without one).
    let pin_root = |flag: Option<PathBuf>, steer: &relay_steer::SteerConfig| {
        flag.unwrap_or_else(|| steer.pin_root.clone())
    };
    match command {
        SteerCommand::Attach {
            iface,
            mode,
            pin_root: flag,
            config,
        } => {
            let mode = match mode {
                Mode::Default => relay_steer::Mode::Default,
                Mode::Skb => relay_steer::Mode::Skb,
                Mode::Native => relay_steer::Mode::Native,
            };
            let steer = steer_config(config.as_deref())?;
            let pin_root = pin_root(flag, &steer);
            relay_steer::attach_with(
                &iface,
                mode,
                &pin_root,
                &relay_steer::Plan::from_config(&steer)?,
            )?;
            println!("attached to {iface} (pinned under {})", pin_root.display());
        }
        SteerCommand::Sync {
            iface,
            pin_root: flag,
            config,
        } => {
            let steer = steer_config(Some(&config))?;
            let pin_root = pin_root(flag, &steer);
            let report =
                relay_steer::sync(&iface, &pin_root, &relay_steer::Plan::from_config(&steer)?)?;
            println!("synced {iface} (table half {})", report.half);
        }
        SteerCommand::Detach {
            iface,
            pin_root: flag,
            config,
        } => {
            let pin_root = pin_root(flag, &steer_config(config.as_deref())?);
            relay_steer::detach(&iface, &pin_root)?;
            println!("detached from {iface}");
        }
        SteerCommand::Status {
            pin_root: flag,
            config,
        } => {
            let pin_root = pin_root(flag, &steer_config(config.as_deref())?);
            let all = relay_steer::status(&pin_root)?;
            if all.is_empty() {
                println!("no interface attached (pin root {})", pin_root.display());
            }
            for s in all {
                println!("{s}");
            }
        }
    }
    Ok(())
}

/// `[steer]` of the config at `path`, or the defaults without one.
fn steer_config(path: Option<&std::path::Path>) -> Result<relay_steer::SteerConfig> {
    Ok(match path {
        Some(path) => {
            Config::load(path)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .steer
        }
        None => relay_steer::SteerConfig::default(),
    })
}

/// Listening sockets grouped by the address they are bound to (a hand-over passes them
/// all in one list).
fn by_address(
    all: Vec<std::net::TcpListener>,
) -> std::collections::HashMap<std::net::SocketAddr, Vec<std::net::TcpListener>> {
    let mut out: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
    for l in all {
        match l.local_addr() {
            Ok(a) => out.entry(a).or_default().push(l),
            Err(e) => tracing::warn!("a socket handed over has no address ({e}): closed"),
        }
    }
    out
}

/// The listening TCP sockets systemd passed (`LISTEN_FDS`, for this process's pid), none
/// when it passed none.
fn activated_sockets() -> Result<Vec<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i) {
            // (A connected socket, `Accept=yes`, would fail every accept at once.)
            Ok(Some(l)) if !socket2::SockRef::from(&l).is_listener().unwrap_or(false) => {
                anyhow::bail!(
                    "socket {i} passed by systemd (LISTEN_FDS) is not listening: relay.socket \
                     must not set Accept=yes"
                )
            }
            Ok(Some(l)) => out.push(l),
            Ok(None) => {}
            Err(e) => anyhow::bail!("socket {i} passed by systemd (LISTEN_FDS): {e}"),
        }
    }
    if !out.is_empty() {
        tracing::info!("systemd passed {} listening socket(s)", out.len());
    }
    Ok(out)
}

/// One socket systemd passed for an address, given to `workers` workers: each its own
/// descriptor of the same socket, so that all accept from its one queue (binding more
/// with SO_REUSEPORT would give them queues of their own, whose waiting connections a
/// restart would reset).
fn shared_socket(
    first: std::net::TcpListener,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(workers);
    for _ in 1..workers.max(1) {
        out.push(
            first
                .try_clone()
                .context("sharing a socket systemd passed")?,
        );
    }
    out.push(first);
    Ok(out)
}

/// Tells systemd (`NOTIFY_SOCKET`, `Type=notify`) how the service stands; nothing when not
/// run by it.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("telling systemd (NOTIFY_SOCKET): {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_becomes_the_key_relay_writes() {
        for (url, key) in [
            (
                "http://Video.Example./seg/1.ts?b=2",
                "http://video.example/seg/1.ts?b=2",
            ),
            ("http://video.example:80/a", "http://video.example/a"),
            ("http://video.example:8080", "http://video.example:8080/"),
            ("http://[::1]:8080/x", "http://[::1]:8080/x"),
            ("http://[::1]/x", "http://[::1]/x"),
            ("/files/a.bin", "dir:/files/a.bin"),
            ("dir:/files/a.bin", "dir:/files/a.bin"),
        ] {
            assert_eq!(super::cache_key(url), key, "{url}");
        }
    }
}

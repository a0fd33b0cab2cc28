//! Issue 13's abuse scenarios: each attack a function of its scale, run against a live relay
//! while its resident memory is sampled from `/proc` and a well-behaved client fetches;
//! shared by `tests/tests/abuse.rs` (CI scale, asserting the bounds) and `relay-bench
//! abuse` (full scale, the table).
//!
//! One run ([`run`]): the objects stored and the good client's requests made a few times
//! (warm-up), the relay's RSS at rest (the baseline); then the attackers connect and do what their [`Attack`] says for
//! `hold` while the RSS is sampled every 10 ms (and the kernel's high-water mark, `VmHWM`,
//! reset at the start, is read at the end) and the good client makes its [`Probe`]s one
//! after another; then the attackers close their connections, and the RSS is watched until
//! it is back within `after_slack` of the baseline or `settle` has passed.
//!
//! Layout: [`backend`] the HTTP origin, [`crowd`] the attacking connections (non-blocking,
//! one `poll` thread), [`probe`] the good client, this file the attacks, the bounds they
//! are held to and the measuring.

pub mod backend;
pub mod crowd;
pub mod probe;

use crate::Relay;
use backend::Backend;
use crowd::{Behaviour, CrowdStats, Drip, Group};
use probe::{Probe, Sample, Summary};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// The relay's settings the attacks run against (the rest are relay's defaults).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `server.workers` (0: one per core).
    pub workers: usize,
    /// `cache.memory_bytes`.
    pub memory_bytes: u64,
    /// `origin.pass_buffer_bytes`.
    pub pass_buffer_bytes: u64,
    /// Length of the origin's large object, which slow readers ask for (stored beforehand,
    /// so that a GET with `Authorization` is passed through: keep it within the memory
    /// tier; and well over a pass-through window, 2 MiB, so that a reader that stops holds
    /// a whole window).
    pub big_bytes: u64,
}

impl Settings {
    /// The workers relay runs: `workers`, or one per core for 0 (as relay counts them).
    pub fn worker_count(&self) -> u64 {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()) as u64,
            n => n as u64,
        }
    }

    /// Small tiers, so the baseline is small and what an attack adds shows (the tests).
    pub fn small() -> Settings {
        Settings {
            workers: 2,
            memory_bytes: 16 * MIB,
            pass_buffer_bytes: 16 * MIB,
            big_bytes: 8 * MIB,
        }
    }

    /// The config file's defaults for the tiers and the budget (the benchmark).
    pub fn defaults() -> Settings {
        Settings {
            workers: 0,
            memory_bytes: 256 * MIB,
            pass_buffer_bytes: 256 * MIB,
            big_bytes: 16 * MIB,
        }
    }

    /// Chunk memory relay may hold on the heap beside its arena (`docs/MEMORY.md`): what
    /// `CacheConfig::loose_chunk_bytes` gives for this memory tier and 1 MiB chunks.
    pub fn loose_chunk_bytes(&self) -> u64 {
        relay_config::CacheConfig {
            memory_bytes: self.memory_bytes,
            ..relay_config::CacheConfig::default()
        }
        .loose_chunk_bytes()
    }

    /// The relay's config: these settings, an HTTP origin at `origin`, an admin listener.
    pub fn config(&self, origin: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = {}\n\n[cache]\nmemory_bytes = {}\n\n\
             [origin]\npass_buffer_bytes = {}\n\n[[origin.http]]\nurl = \"{origin}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            self.workers, self.memory_bytes, self.pass_buffer_bytes
        )
    }
}

/// A relay in front of a [`Backend`], started on [`Settings`].
pub struct Fixture {
    pub backend: Backend,
    pub relay: Relay,
    pub settings: Settings,
}

impl Fixture {
    /// Starts the backend and the relay binary at `bin` (the test kit's [`crate::relay_bin`]
    /// for the tests).
    pub fn start(bin: &Path, settings: &Settings) -> Fixture {
        raise_nofile();
        let backend = Backend::start(settings.big_bytes);
        let relay = Relay::start_bin(bin, &settings.config(&backend.url()), &[]);
        Fixture {
            backend,
            relay,
            settings: settings.clone(),
        }
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (thousands of attacking
/// connections); the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed; no other effect.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// What the attackers do, at what scale.
#[derive(Clone, Debug)]
pub enum Attack {
    /// `connections` connections each send `bytes` of pipelined `GET`s of the cached object
    /// as fast as relay takes them, and never read (a 4 KiB receive window).
    Flood { connections: usize, bytes: usize },
    /// `silent` connections send nothing; `after_request` send one `GET` of the cached
    /// object and read its answer; then all stay idle.
    Idle { silent: usize, after_request: usize },
    /// Slowloris: `heads` connections trickle a request head that never ends, `bodies` send
    /// a `GET` of the cached object announcing a 60,000-byte body (relay reads a body of up
    /// to 64 KiB through to keep the connection) and trickle it; a byte every `every`
    /// each. Connections relay closes are opened again.
    Slowloris {
        heads: usize,
        bodies: usize,
        every: Duration,
    },
    /// `uploads` POSTs (passed through to the origin) announcing `announce` bytes each,
    /// their bodies trickled a byte every `every`, from `sources` addresses; an upload
    /// refused for want of room is made again a quarter of a second later.
    Uploads {
        uploads: usize,
        announce: u64,
        every: Duration,
        sources: usize,
    },
    /// `readers` GETs of the origin's large object that pass through (half with
    /// `Cache-Control: no-store` of a key never stored, half with `Authorization` of the
    /// stored object, which is not `public`), from `sources` addresses, never read past
    /// the status line (a 4 KiB receive window); a reader refused for want of room asks
    /// again a quarter of a second later.
    PassReaders { readers: usize, sources: usize },
    /// `readers` GETs of distinct cacheable large objects (the origin's large object under
    /// as many query strings: each a miss, its body fetched whole and kept for its reader),
    /// from `sources` addresses, never read past what a 4 KiB window takes: a crowd that
    /// makes relay hold chunk memory for readers that do not take it.
    MissReaders { readers: usize, sources: usize },
    /// `clients` connections to the admin listener from `sources` addresses, each
    /// trickling a request head a byte every `every`; connections relay closes are opened
    /// again.
    AdminStall {
        clients: usize,
        sources: usize,
        every: Duration,
    },
}

/// The scales the attacks run at: the tests' (CI: two shared cores, a debug build, hundreds
/// of connections) and the benchmark's (issue 13's figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Ci,
    Full,
}

impl Scale {
    /// Pipelined `GET`s, 1 MB a connection, never read: 200 connections (CI), 2,000 (full).
    pub fn flood(self) -> Attack {
        Attack::Flood {
            connections: self.pick(200, 2000),
            bytes: 1_000_000,
        }
    }

    /// Idle connections, half silent, half after one request: 4,000 (CI), 10,000 (full).
    pub fn idle(self) -> Attack {
        let half = self.pick(2000, 5000);
        Attack::Idle {
            silent: half,
            after_request: half,
        }
    }

    /// 100 slowloris heads and 100 slow bodies, a byte a second each.
    pub fn slowloris(self) -> Attack {
        Attack::Slowloris {
            heads: 100,
            bodies: 100,
            every: Duration::from_secs(1),
        }
    }

    /// 8 uploads trickling a byte a second from 2 addresses, each announcing a quarter of
    /// the budget (CI: 4 MiB of 16 MiB) or the most relay takes (full: 64 MiB of 256 MiB):
    /// four of them would hold the whole budget.
    pub fn uploads(self) -> Attack {
        Attack::Uploads {
            uploads: 8,
            announce: self.pick(4, 64) as u64 * MIB,
            every: Duration::from_secs(1),
            sources: 2,
        }
    }

    /// Readers of a passed-through object that never read: 16 from 2 addresses (CI: twice
    /// what the 16 MiB budget holds in 2 MiB windows), 128 from 4 (full: what 256 MiB holds).
    pub fn pass_readers(self) -> Attack {
        Attack::PassReaders {
            readers: self.pick(16, 128),
            sources: self.pick(2, 4),
        }
    }

    /// Admin clients trickling a byte every 1.5 s, more than the listener serves at once
    /// (64) and from more addresses than its share per address (8) fills: 80 from 10 (CI),
    /// 128 from 16 (full).
    pub fn admin_stall(self) -> Attack {
        Attack::AdminStall {
            clients: self.pick(80, 128),
            sources: self.pick(10, 16),
            every: Duration::from_millis(1500),
        }
    }

    /// Readers of distinct large objects that never read: 64 from 16 addresses (CI: each
    /// object 8 MiB, 32 times the 16 MiB memory tier in all), 256 from 64 (full: 16 MiB
    /// each, 16 times the 256 MiB tier).
    pub fn miss_readers(self) -> Attack {
        Attack::MissReaders {
            readers: self.pick(64, 256),
            sources: self.pick(16, 64),
        }
    }

    pub fn all(self) -> Vec<Attack> {
        vec![
            self.flood(),
            self.idle(),
            self.slowloris(),
            self.uploads(),
            self.pass_readers(),
            self.miss_readers(),
            self.admin_stall(),
        ]
    }

    /// The relay's settings at this scale: [`Settings::small`] (CI), [`Settings::defaults`].
    pub fn settings(self) -> Settings {
        match self {
            Scale::Ci => Settings::small(),
            Scale::Full => Settings::defaults(),
        }
    }

    /// How long a run's phases last: [`Timing::test`] (CI), [`Timing::bench`].
    pub fn timing(self) -> Timing {
        match self {
            Scale::Ci => Timing::test(),
            Scale::Full => Timing::bench(),
        }
    }

    fn pick(self, ci: usize, full: usize) -> usize {
        match self {
            Scale::Ci => ci,
            Scale::Full => full,
        }
    }
}

/// Per-connection memory a bound allows: a connection with pipelined input waiting (or a
/// pass-through request or answer under way): its receive buffer (`max_head_bytes` + 4 KiB
/// = 20 KiB), 64 KiB of input read ahead (or of the upstream connection's buffers), 12 KiB
/// of state (the exchange, its slot, the response head).
pub const BUSY_CONN: u64 = 96 * KIB;
/// What all of a worker's connections may hold beyond their receive buffers (input that
/// arrived before relay stopped reading them: `docs/MEMORY.md`).
pub const WORKER_OVERFLOW: u64 = 8 * MIB;
/// A worker's provided receive buffers (1,024 × 4 KiB), touched once input comes faster
/// than the worker takes it.
pub const PROVIDED: u64 = 4 * MIB;
/// A connection in the middle of a request head or a request body: its receive buffer
/// (20 KiB) and its state (12 KiB).
pub const TRICKLING_CONN: u64 = 32 * KIB;
/// An idle connection (nothing received, or between requests): no receive buffer, its
/// state and slot only.
pub const IDLE_CONN: u64 = 8 * KIB;
/// Admin connection threads alive at most: 64 served and 64 ending (`relay_server::admin`).
pub const ADMIN_THREADS: u64 = 128;
/// What one admin connection's thread holds: the stack it touches (of 256 KiB reserved),
/// its 8 KiB head buffer and response, and its allocator's thread-local pages.
pub const ADMIN_CONN: u64 = 96 << 10;
/// What else may come and go while an attack runs: allocator pages, the admin listener's
/// threads, the good client's requests (its pass-throughs hold windows of their own), the
/// upstream's connection pool.
pub const SLACK: u64 = 16 * MIB;
/// What the origin's connections in use for cache fetches hold: at most
/// `origin.max_connections` (64) fetches at once (`relay_upstream::Origin::fetches`), each
/// with up to two 128 KiB read buffers (the one being read into and the frame its fetch has
/// not written yet) and its task's state.
pub const UPSTREAM_FETCHES: u64 = 64 * 288 * KIB;
/// What the origin's pooled keep-alive connections hold once the fetches are over: up to
/// `origin.max_connections` (64 by default) kept idle for 30 s, each with its read buffer
/// (`relay_upstream::UPSTREAM_READ_BUFFER`, 128 KiB) and state: relay keeps them on purpose,
/// for the next misses.
pub const UPSTREAM_POOL: u64 = 64 * 160 * KIB;
/// How far above its baseline relay's RSS may stay once the attackers have left. relay
/// gives freed memory back (closed connections' slots and buffers, then the allocator's
/// pages), but its heap lies in 2 MiB transparent huge pages, which the kernel's khugepaged
/// collapses again when a few pages of one are still in use: RSS after settles 8–14 MiB
/// above the baseline with THP on (`docs/MEMORY.md`), about 7 MiB with it off.
pub const AFTER_SLACK: u64 = 16 * MIB;

impl Attack {
    /// A short name (the table's first column).
    pub fn name(&self) -> &'static str {
        match self {
            Attack::Flood { .. } => "pipelining flood",
            Attack::Idle { .. } => "idle connections",
            Attack::Slowloris { .. } => "slowloris",
            Attack::Uploads { .. } => "trickled uploads",
            Attack::PassReaders { .. } => "slow pass readers",
            Attack::MissReaders { .. } => "slow miss readers",
            Attack::AdminStall { .. } => "stalled admin",
        }
    }

    /// Its name on a command line (`--only`).
    pub fn key(&self) -> &'static str {
        match self {
            Attack::Flood { .. } => "flood",
            Attack::Idle { .. } => "idle",
            Attack::Slowloris { .. } => "slowloris",
            Attack::Uploads { .. } => "uploads",
            Attack::PassReaders { .. } => "pass-readers",
            Attack::MissReaders { .. } => "miss-readers",
            Attack::AdminStall { .. } => "admin",
        }
    }

    /// Its scale, in words.
    pub fn scale(&self) -> String {
        match self {
            Attack::Flood { connections, bytes } => {
                format!(
                    "{connections} connections x {} of GETs, never read",
                    human(*bytes as u64)
                )
            }
            Attack::Idle {
                silent,
                after_request,
            } => format!("{silent} silent + {after_request} after one request"),
            Attack::Slowloris {
                heads,
                bodies,
                every,
            } => format!("{heads} heads + {bodies} bodies, a byte every {every:?}"),
            Attack::Uploads {
                uploads,
                announce,
                every,
                sources,
            } => format!(
                "{uploads} POSTs announcing {}, a byte every {every:?}, from {sources} address{}",
                human(*announce),
                if *sources == 1 { "" } else { "es" }
            ),
            Attack::PassReaders { readers, sources } => format!(
                "{readers} GETs of a passed-through object, never read, from {sources} address{}",
                if *sources == 1 { "" } else { "es" }
            ),
            Attack::MissReaders { readers, sources } => format!(
                "{readers} GETs of distinct large objects, never read, from {sources} address{}",
                if *sources == 1 { "" } else { "es" }
            ),
            Attack::AdminStall {
                clients,
                sources,
                every,
            } => format!(
                "{clients} admin connections from {sources} address{}, a byte every {every:?}",
                if *sources == 1 { "" } else { "es" }
            ),
        }
    }

    /// Attacking connections at once.
    pub fn connections(&self) -> usize {
        match *self {
            Attack::Flood { connections, .. } => connections,
            Attack::Idle {
                silent,
                after_request,
            } => silent + after_request,
            Attack::Slowloris { heads, bodies, .. } => heads + bodies,
            Attack::Uploads { uploads, .. } => uploads,
            Attack::PassReaders { readers, .. } | Attack::MissReaders { readers, .. } => readers,
            Attack::AdminStall { clients, .. } => clients,
        }
    }

    /// The bound on relay's RSS above its baseline while this attack runs against
    /// `settings`:
    /// - flood: connections × [`TRICKLING_CONN`] + workers × ([`WORKER_OVERFLOW`] +
    ///   [`PROVIDED`]) + [`SLACK`] (a connection whose receive buffer is full is not read
    ///   until it is answered; what arrived before it stopped counts against its worker's
    ///   bound; a flood touches every provided receive buffer);
    /// - idle: connections × [`IDLE_CONN`] + workers × [`PROVIDED`] + [`SLACK`] (half of
    ///   them send a request at once: when a worker falls behind, the burst lands in every
    ///   one of its provided receive buffers, the formula's `provided` term; seen once in
    ///   CI at +47.7 MiB where runs are usually +36 to +40);
    /// - slowloris: connections × [`TRICKLING_CONN`] + [`SLACK`];
    /// - uploads and slow pass readers: `pass_buffer_bytes` + connections ×
    ///   [`BUSY_CONN`] + [`SLACK`] (whatever they hold is within the pass-through budget);
    /// - slow miss readers: the chunk memory beside the arena
    ///   ([`Settings::loose_chunk_bytes`]) + connections × [`TRICKLING_CONN`] (each holds
    ///   its request's state, its response waiting) + [`UPSTREAM_FETCHES`] (the origin
    ///   connections their fetches hold, at most 64 at once) + [`SLACK`] (the arena itself is
    ///   mapped and pinned at start, in the baseline);
    /// - stalled admin: [`ADMIN_THREADS`] × [`ADMIN_CONN`] + [`SLACK`] (the admin
    ///   listener serves 64 connections at once, each a thread, and as many again may be
    ///   ending after being closed for new ones).
    pub fn memory_bound(&self, settings: &Settings) -> u64 {
        let n = self.connections() as u64;
        match self {
            Attack::Flood { .. } => {
                n * TRICKLING_CONN + settings.worker_count() * (WORKER_OVERFLOW + PROVIDED) + SLACK
            }
            Attack::Idle { .. } => n * IDLE_CONN + settings.worker_count() * PROVIDED + SLACK,
            Attack::Slowloris { .. } => n * TRICKLING_CONN + SLACK,
            Attack::Uploads { .. } | Attack::PassReaders { .. } => {
                settings.pass_buffer_bytes + n * BUSY_CONN + SLACK
            }
            Attack::MissReaders { .. } => {
                settings.loose_chunk_bytes() + n * TRICKLING_CONN + UPSTREAM_FETCHES + SLACK
            }
            Attack::AdminStall { .. } => ADMIN_THREADS * ADMIN_CONN + SLACK,
        }
    }

    /// How far above its baseline relay's RSS may stay once the attackers have left:
    /// `timing.after_slack`, plus [`UPSTREAM_POOL`] for attacks whose every connection
    /// makes relay open one to the origin.
    pub fn after_bound(&self, timing: &Timing) -> u64 {
        match self {
            Attack::Uploads { .. } | Attack::PassReaders { .. } | Attack::MissReaders { .. } => {
                timing.after_slack + UPSTREAM_POOL
            }
            _ => timing.after_slack,
        }
    }

    /// Objects fetched (and so stored) before the baseline is read.
    pub fn stored_first(&self) -> &'static [&'static str] {
        match self {
            Attack::PassReaders { .. } => &[backend::OBJ_PATH, backend::BIG_PATH],
            _ => &[backend::OBJ_PATH],
        }
    }

    /// What the good client asks for meanwhile.
    pub fn probes(&self) -> Vec<Probe> {
        match self {
            Attack::Uploads { .. } | Attack::PassReaders { .. } => {
                vec![Probe::Hit, Probe::Post, Probe::AuthGet, Probe::Healthz]
            }
            _ => vec![Probe::Hit, Probe::Healthz],
        }
    }

    /// The attacking connections.
    pub fn groups(&self, relay: SocketAddr, admin: Option<SocketAddr>) -> Vec<Group> {
        let obj = backend::OBJ_PATH;
        let get = format!("GET {obj} HTTP/1.1\r\nHost: t\r\n\r\n");
        let plain = |first: &[u8], read: bool| Behaviour {
            first: first.into(),
            drip: None,
            read,
            rcvbuf: None,
            reconnect: false,
            retry_refused: false,
        };
        // Many clients: four connections from each address.
        let spread = |n: usize| n.div_ceil(4).max(1);
        match *self {
            Attack::Flood { connections, bytes } => {
                let n = (bytes / get.len()).max(1);
                let mut first = get.repeat(n).into_bytes();
                first.truncate(bytes.max(get.len()));
                vec![Group {
                    target: relay,
                    count: connections,
                    sources: spread(connections),
                    first_source: 0,
                    behaviour: Behaviour {
                        rcvbuf: Some(4096),
                        ..plain(&first, false)
                    },
                }]
            }
            Attack::Idle {
                silent,
                after_request,
            } => vec![
                Group {
                    target: relay,
                    count: silent,
                    sources: spread(silent),
                    first_source: 0,
                    behaviour: plain(b"", true),
                },
                Group {
                    target: relay,
                    count: after_request,
                    sources: spread(after_request),
                    first_source: spread(silent),
                    behaviour: plain(get.as_bytes(), true),
                },
            ],
            Attack::Slowloris {
                heads,
                bodies,
                every,
            } => {
                let trickle = |first: String, max: u64| Behaviour {
                    drip: Some(Drip {
                        byte: b'a',
                        every,
                        max,
                    }),
                    reconnect: true,
                    ..plain(first.as_bytes(), true)
                };
                vec![
                    Group {
                        target: relay,
                        count: heads,
                        sources: spread(heads),
                        first_source: 0,
                        behaviour: trickle(
                            format!("GET {obj} HTTP/1.1\r\nHost: t\r\nX-Slow: "),
                            8 << 10,
                        ),
                    },
                    Group {
                        target: relay,
                        count: bodies,
                        sources: spread(bodies),
                        first_source: spread(heads),
                        behaviour: trickle(
                            format!(
                                "GET {obj} HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n"
                            ),
                            59_999,
                        ),
                    },
                ]
            }
            Attack::Uploads {
                uploads,
                announce,
                every,
                sources,
            } => vec![Group {
                target: relay,
                count: uploads,
                sources,
                first_source: 0,
                behaviour: Behaviour {
                    drip: Some(Drip {
                        byte: b'a',
                        every,
                        max: announce.saturating_sub(1),
                    }),
                    // Refused uploads (503, then closed) come back until they hold room.
                    reconnect: true,
                    retry_refused: true,
                    ..plain(
                        format!(
                            "POST {} HTTP/1.1\r\nHost: t\r\nContent-Length: {announce}\r\n\r\n",
                            backend::UPLOAD_PATH
                        )
                        .as_bytes(),
                        true,
                    )
                },
            }],
            Attack::PassReaders { readers, sources } => {
                let big = backend::BIG_PATH;
                // A reader refused (503) asks again until it holds a window.
                let reader = |target: &str, field: &str| Behaviour {
                    rcvbuf: Some(4096),
                    reconnect: true,
                    retry_refused: true,
                    ..plain(
                        format!("GET {target} HTTP/1.1\r\nHost: t\r\n{field}\r\n\r\n").as_bytes(),
                        false,
                    )
                };
                vec![
                    Group {
                        target: relay,
                        count: readers / 2,
                        sources,
                        first_source: 0,
                        // A key never stored (a stored response would answer no-store).
                        behaviour: reader(&format!("{big}?no-store"), "Cache-Control: no-store"),
                    },
                    Group {
                        target: relay,
                        count: readers - readers / 2,
                        sources,
                        first_source: 0,
                        // The stored object, which may not answer it: passed through.
                        behaviour: reader(big, "Authorization: Bearer attacker"),
                    },
                ]
            }
            Attack::MissReaders { readers, sources } => (0..readers)
                .map(|i| Group {
                    target: relay,
                    count: 1,
                    sources: 1,
                    first_source: i % sources.max(1),
                    behaviour: Behaviour {
                        rcvbuf: Some(4096),
                        ..plain(
                            format!(
                                "GET {}?r={i} HTTP/1.1\r\nHost: t\r\n\r\n",
                                backend::BIG_PATH
                            )
                            .as_bytes(),
                            false,
                        )
                    },
                })
                .collect(),
            Attack::AdminStall {
                clients,
                sources,
                every,
            } => match admin {
                Some(admin) => vec![Group {
                    target: admin,
                    count: clients,
                    sources,
                    first_source: 0,
                    behaviour: Behaviour {
                        drip: Some(Drip {
                            byte: b'a',
                            every,
                            max: 4 << 10,
                        }),
                        reconnect: true,
                        ..plain(b"GET /healthz HTTP/1.1\r\nX-Slow: ", true)
                    },
                }],
                None => Vec::new(),
            },
        }
    }
}

/// How long each phase of a run lasts.
#[derive(Clone, Debug)]
pub struct Timing {
    /// The attackers stay this long once all are connected.
    pub hold: Duration,
    /// Longest wait, once they left, for the RSS to come back within `after_slack` of the
    /// baseline.
    pub settle: Duration,
    pub after_slack: u64,
    /// Pause between two of the good client's requests.
    pub probe_every: Duration,
    /// Longest wait for each step (connect, send, each read) of a good request.
    pub probe_timeout: Duration,
}

impl Timing {
    /// A run of the tests: attackers stay 4 s, RSS back within 8 MiB of the baseline within 5 s.
    pub fn test() -> Timing {
        Timing {
            hold: Duration::from_secs(4),
            settle: Duration::from_secs(5),
            after_slack: AFTER_SLACK,
            probe_every: Duration::from_millis(20),
            probe_timeout: Duration::from_secs(5),
        }
    }

    /// A run of the benchmark: attackers stay 12 s (past relay's 10 s header timeout, so
    /// slowloris connections are cut and come back), RSS watched for 10 s after.
    pub fn bench() -> Timing {
        Timing {
            hold: Duration::from_secs(12),
            settle: Duration::from_secs(10),
            ..Timing::test()
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub attack: Attack,
    pub connections: usize,
    /// RSS at rest before the attack, bytes.
    pub baseline: u64,
    /// Highest RSS while the attack ran: the larger of the sampled maximum and the kernel's
    /// high-water mark (`VmHWM`, reset at the start when `/proc/PID/clear_refs` allows).
    pub peak: u64,
    /// The sampled maximum alone.
    pub peak_sampled: u64,
    /// Whether the high-water mark could be reset (and counts in `peak`).
    pub hwm_reset: bool,
    /// RSS when it came back within the slack, or when the wait ended.
    pub after: u64,
    /// How long after the attackers left `after` was read.
    pub after_wait: Duration,
    pub memory_bound: u64,
    /// [`Attack::after_bound`].
    pub after_bound: u64,
    pub crowd: CrowdStats,
    /// The good client's requests while the attack ran, by probe.
    pub probes: Vec<Summary>,
    /// Its requests after the attackers left (until the RSS after was read).
    pub after_probes: Vec<Summary>,
    pub samples: Vec<Sample>,
    pub took: Duration,
}

impl Outcome {
    /// Peak RSS above the baseline.
    pub fn grew(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }

    /// RSS after, above the baseline.
    pub fn kept(&self) -> u64 {
        self.after.saturating_sub(self.baseline)
    }

    /// One line per figure, for a test's output.
    pub fn report(&self) -> String {
        let mut s = format!(
            "{}: {}\n  RSS baseline {}, peak {} (+{}, bound +{}{}), after {} (+{}, {:.1?} after the \
             attackers left)\n  attackers: {} opened in {:.1?}, {} connects failed, {} closed by \
             relay, {} still open at the end, {} reconnects, {} refused, {} sent\n",
            self.attack.name(),
            self.attack.scale(),
            human(self.baseline),
            human(self.peak),
            human(self.grew()),
            human(self.memory_bound),
            if self.hwm_reset { "" } else { ", sampled" },
            human(self.after),
            human(self.kept()),
            self.after_wait,
            self.crowd.opened,
            self.crowd.connect_time,
            self.crowd.connect_failed,
            self.crowd.closed_by_relay,
            self.crowd.open_at_end,
            self.crowd.reconnects,
            self.crowd.refused,
            human(self.crowd.bytes_sent),
        );
        for (when, list) in [("during", &self.probes), ("after", &self.after_probes)] {
            for p in list {
                s.push_str(&format!(
                    "  good {} {when}: {} requests, p50 {:.2?}, p99 {:.2?}, max {:.2?}, \
                     failures: {}\n",
                    p.probe.name(),
                    p.requests,
                    p.p50,
                    p.p99,
                    p.max,
                    p.failures_text()
                ));
            }
        }
        s
    }
}

/// Runs `attack` against the fixture's relay, measuring as the module's doc says.
pub fn run(fx: &Fixture, attack: &Attack, timing: &Timing) -> Outcome {
    let started = Instant::now();
    let pid = fx.relay.pid();
    let (addr, admin) = (fx.relay.addr, fx.relay.admin);
    let probes = attack.probes();
    // Warm-up: the objects stored, each request a few times (the pass path and the admin
    // listener used), then the RSS at rest.
    for path in attack.stored_first() {
        probe::fetch_whole(addr, path, timing.probe_timeout);
    }
    for _ in 0..3 {
        for &p in &probes {
            let _ = probe::once(p, addr, admin, timing.probe_timeout);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let baseline = rss_at_rest(pid);
    let hwm_reset = reset_peak(pid);
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampled = Arc::new(AtomicU64::new(rss(pid)));
    let sampler = {
        let (stop, sampled) = (stop_sampler.clone(), sampled.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sampled.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // The good client goes on after the attackers left, until the RSS after is read (a
    // relay keeps serving); its requests then count apart.
    let attack_over = Arc::new(AtomicBool::new(false));
    let stop_probes = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let prober = {
        let (over, stop, samples) = (attack_over.clone(), stop_probes.clone(), samples.clone());
        let probes = probes.clone();
        let (every, timeout) = (timing.probe_every, timing.probe_timeout);
        let t0 = Instant::now();
        std::thread::spawn(move || {
            // At most 100,000 requests (the end of the run stops it long before).
            for i in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let p = probes[i % probes.len()];
                let at = t0.elapsed();
                let during = !over.load(Ordering::Relaxed);
                let (latency, failure) = probe::once(p, addr, admin, timeout);
                samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Sample {
                        probe: p,
                        at,
                        during,
                        latency,
                        failure,
                    });
                std::thread::sleep(every);
            }
        })
    };
    let never = AtomicBool::new(false);
    let crowd = crowd::run(&attack.groups(addr, admin), timing.hold, &never);
    attack_over.store(true, Ordering::Relaxed);
    // The crowd has left: a last sample of the peak.
    std::thread::sleep(Duration::from_millis(100));
    stop_sampler.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak_sampled = sampled.load(Ordering::Relaxed).max(rss(pid));
    let peak = match hwm_reset {
        true => peak_sampled.max(hwm(pid)),
        false => peak_sampled,
    };
    let left = Instant::now();
    let after = loop {
        let now = rss(pid);
        if now <= baseline + attack.after_bound(timing) || left.elapsed() >= timing.settle {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let after_wait = left.elapsed();
    stop_probes.store(true, Ordering::Relaxed);
    let _ = prober.join();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    Outcome {
        attack: attack.clone(),
        connections: attack.connections(),
        baseline,
        peak,
        peak_sampled,
        hwm_reset,
        after,
        after_wait,
        memory_bound: attack.memory_bound(&fx.settings),
        after_bound: attack.after_bound(timing),
        crowd,
        probes: probes
            .iter()
            .map(|&p| Summary::of(p, true, &samples))
            .collect(),
        after_probes: probes
            .iter()
            .map(|&p| Summary::of(p, false, &samples))
            .collect(),
        samples,
        took: started.elapsed(),
    }
}

/// A `/proc/PID/status` field in bytes (0 when the process is gone).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * KIB)
}

/// The process's resident memory now (`VmRSS`), bytes.
pub fn rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Its resident high-water mark (`VmHWM`), bytes.
pub fn hwm(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Resets the high-water mark to the RSS now (`echo 5 > /proc/PID/clear_refs`); false when
/// not allowed.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The RSS at rest: the median of five samples 100 ms apart.
pub fn rss_at_rest(pid: u32) -> u64 {
    let mut v: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            rss(pid)
        })
        .collect();
    v.sort_unstable();
    v[2]
}

/// Bytes as "12.3 MiB" (or KiB, GiB).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= MIB as f64 {
        format!("{:.1} MiB", b / MIB as f64)
    } else {
        format!("{:.0} KiB", b / KIB as f64)
    }
}

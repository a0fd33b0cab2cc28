//! Prometheus text exposition (format 0.0.4) of the workers' counters and latency.
//!
//! Written by hand rather than through a metrics crate: the counters already live in each
//! worker's own cache line and the latency in per-worker `hdrhistogram`s, so a scrape only
//! sums and merges them; a registry crate would add a second copy of every value and
//! atomic traffic on the hot path.

use crate::{Shared, WorkerStats};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Upper bounds (seconds) of the exported latency buckets.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A new latency histogram: microseconds, 1 µs to 100 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("static histogram bounds are valid")
}

/// Renders metrics of a part outside the server into a scrape's text.
pub type RenderExtra = Arc<dyn Fn(&mut String) + Send + Sync>;

/// What a scrape reads: the shared state and every worker's counters.
#[derive(Clone)]
pub struct Metrics {
    pub(crate) shared: Arc<Shared>,
    pub(crate) workers: Arc<Vec<Arc<CachePadded<WorkerStats>>>>,
    /// Metrics of parts outside the server (the cluster agent), rendered after its own.
    pub(crate) extra: Option<RenderExtra>,
}

impl Metrics {
    /// These metrics, and `render`'s after them.
    pub fn with_extra(self, render: impl Fn(&mut String) + Send + Sync + 'static) -> Metrics {
        Metrics {
            extra: Some(Arc::new(render)),
            ..self
        }
    }

    /// Renders every metric into `out`.
    pub fn render(&self, out: &mut String) {
        let sum = |f: fn(&WorkerStats) -> &std::sync::atomic::AtomicU64| -> u64 {
            self.workers
                .iter()
                .map(|w| f(w).load(Ordering::Relaxed))
                .sum()
        };
        let arena = self.shared.cache.memory.arena();
        let left_out = self.shared.cache.memory.left_out();
        let meta = &self.shared.cache.meta;
        let counters: [(&str, &str, &str, u64); 36] = [
            (
                "relay_requests_total",
                "counter",
                "Requests answered (any status).",
                sum(|w| &w.requests),
            ),
            (
                "relay_request_errors_total",
                "counter",
                "Requests rejected as malformed or over a limit (the connection then closes).",
                sum(|w| &w.errors),
            ),
            (
                "relay_bytes_sent_total",
                "counter",
                "Bytes written to clients (heads and bodies).",
                sum(|w| &w.bytes),
            ),
            (
                "relay_sends_copy_total",
                "counter",
                "Plain sendmsg operations (the kernel copies the bytes).",
                sum(|w| &w.sends),
            ),
            (
                "relay_sends_zerocopy_total",
                "counter",
                "Zero-copy sends the kernel did not copy (SENDMSG_ZC notifications).",
                sum(|w| &w.zc_sends),
            ),
            (
                "relay_sends_zerocopy_copied_total",
                "counter",
                "Zero-copy sends the kernel copied anyway (the connection then sends plainly).",
                sum(|w| &w.zc_copied),
            ),
            (
                "relay_sends_zerocopy_fixed_total",
                "counter",
                "Zero-copy sends from memory registered with io_uring (fixed buffers).",
                sum(|w| &w.zc_fixed),
            ),
            (
                "relay_reads_fixed_total",
                "counter",
                "File reads into registered memory (READ_FIXED): disk-tier bodies, directory chunks.",
                sum(|w| &w.read_fixed),
            ),
            (
                "relay_origin_file_chunks_read_total",
                "counter",
                "Chunks read from the directory origin's files (once however many clients wait).",
                sum(|w| &w.origin_file_reads),
            ),
            (
                "relay_origin_file_changed_total",
                "counter",
                "Responses cut because their directory-origin file changed while being served.",
                sum(|w| &w.origin_file_changed),
            ),
            (
                "relay_memory_arena_registered_workers",
                "gauge",
                "Workers whose ring registered the memory tier's arena.",
                sum(|w| &w.arena_registered),
            ),
            (
                "relay_memory_arena_bytes",
                "gauge",
                "Bytes of the registered arena in chunk blocks now.",
                arena.map_or(0, |a| a.used()),
            ),
            (
                "relay_memory_arena_capacity_bytes",
                "gauge",
                "Bytes of the registered arena (chunks of 16 KiB and more live there).",
                arena.map_or(0, |a| a.capacity()),
            ),
            (
                "relay_memory_arena_fallbacks_total",
                "counter",
                "Chunks that went to the heap because the arena had no free block.",
                arena.map_or(0, |a| a.fallbacks()),
            ),
            (
                "relay_memory_loose_chunk_bytes",
                "gauge",
                "Bytes of chunks of arena size on the heap now (the arena had no free block).",
                arena.map_or(0, |a| a.loose()),
            ),
            (
                "relay_memory_loose_chunk_spare_bytes",
                "gauge",
                "Bytes of mappings of loose chunks given back, kept for the next loose chunk of \
                 their length (within relay_memory_loose_chunk_limit_bytes, with those in use).",
                arena.map_or(0, |a| a.spare()),
            ),
            (
                "relay_memory_loose_chunk_limit_bytes",
                "gauge",
                "The most relay_memory_loose_chunk_bytes and the spare ones may reach together (the \
                 arena's headroom).",
                arena.map_or(0, |a| a.loose_cap()),
            ),
            (
                "relay_memory_chunk_refusals_total",
                "counter",
                "Chunks refused memory (no arena block free, loose chunks at their limit); \
                 their fetch or read waited and asked again.",
                arena.map_or(0, |a| a.refused()),
            ),
            (
                "relay_memory_room_waits_total",
                "counter",
                "Times a response waited for chunk memory to have room.",
                sum(|w| &w.room_waits),
            ),
            (
                "relay_responses_started_over_total",
                "counter",
                "Responses that started over from the lookup before their first byte: a \
                 chunk of a body from one answer let go by the memory tier before the \
                 client read it (the object is fetched whole again).",
                sum(|w| &w.started_over),
            ),
            (
                "relay_pass_uploads_streamed_total",
                "counter",
                "Pass-through request bodies streamed to the origin through a window as they \
                 came (longer than one window, or chunked and growing past it).",
                sum(|w| &w.uploads_streamed),
            ),
            (
                "relay_pass_uploads_answered_early_total",
                "counter",
                "Streamed request bodies the origin answered before they were whole (the rest \
                 was dropped and the connection closed after the answer).",
                sum(|w| &w.uploads_answered_early),
            ),
            (
                "relay_memory_tier_left_out_total",
                "counter",
                "Heap chunks not stored in the memory tier: no arena block free to copy them to.",
                left_out,
            ),
            (
                "relay_cache_descriptions",
                "gauge",
                "Object descriptions held in memory (objects and variants).",
                meta.len() as u64,
            ),
            (
                "relay_cache_descriptions_bytes",
                "gauge",
                "Bytes the object descriptions held weigh (keys, stored header fields, \
                 validators, bookkeeping).",
                meta.weight(),
            ),
            (
                "relay_cache_descriptions_limit_bytes",
                "gauge",
                "The most relay_cache_descriptions_bytes may reach (cache.meta_bytes); past it \
                 the least used descriptions are dropped.",
                meta.capacity(),
            ),
            (
                "relay_cache_descriptions_refused_total",
                "counter",
                "Responses not stored because their description would weigh more than 64 KiB \
                 (a huge head); passed to their client.",
                meta.refused(),
            ),
            (
                "relay_connections_accepted_total",
                "counter",
                "Connections accepted.",
                sum(|w| &w.accepted),
            ),
            (
                "relay_connections_rejected_total",
                "counter",
                "Connections closed at once because a worker was at max_connections.",
                sum(|w| &w.rejected),
            ),
            (
                "relay_connection_reads_paused_total",
                "counter",
                "Connections that sent far ahead of their answers (a full receive buffer): not read until they are answered, then by single receives.",
                sum(|w| &w.reads_paused),
            ),
            (
                "relay_connections_flood_cut_total",
                "counter",
                "Connections closed for sending past their receive buffer and its overflow bound before reading could stop.",
                sum(|w| &w.floods_cut),
            ),
            (
                "relay_input_overflow_bytes",
                "gauge",
                "Bytes connections hold beyond their receive buffers (received before reading could stop); at most 8 MiB per worker.",
                self.workers.iter().map(|w| w.overflow.held() as u64).sum(),
            ),
            (
                "relay_connection_timeouts_total",
                "counter",
                "Connections closed by the header, idle or send timeout.",
                sum(|w| &w.timeouts),
            ),
            (
                "relay_connections_open",
                "gauge",
                "Connections open now.",
                sum(|w| &w.open),
            ),
            (
                "relay_memory_tier_bytes",
                "gauge",
                "Bytes held by the memory tier (chunks plus entry overhead).",
                self.shared.cache.memory.weight(),
            ),
            (
                "relay_memory_tier_capacity_bytes",
                "gauge",
                "Capacity of the memory tier.",
                self.shared.cache.memory.capacity(),
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP relay_connections_refused_total Connections closed as they were accepted, \
             by why: the worker at server.max_connections (or draining), or the client's \
             address at server.max_connections_per_client.\n\
             # TYPE relay_connections_refused_total counter\n\
             relay_connections_refused_total{{reason=\"max_connections\"}} {}\n\
             relay_connections_refused_total{{reason=\"per_client\"}} {}\n\
             # HELP relay_connection_clients Client addresses (IPv4, IPv6 /64) with a \
             connection open.\n\
             # TYPE relay_connection_clients gauge\nrelay_connection_clients {}",
            sum(|w| &w.rejected),
            sum(|w| &w.refused_per_client),
            self.shared.clients.clients(),
        );
        let _ = writeln!(
            out,
            "# HELP relay_peer_requests_total Requests on the peer listener ([cluster] \
             peer_listen), by whether their Relay-Peer credentials held (refused: 403).\n\
             # TYPE relay_peer_requests_total counter\n\
             relay_peer_requests_total{{result=\"ok\"}} {}\n\
             relay_peer_requests_total{{result=\"forbidden\"}} {}",
            sum(|w| &w.peer_ok),
            sum(|w| &w.peer_forbidden),
        );
        let _ = writeln!(
            out,
            "# HELP relay_cache_lookups_total Responses that looked in the cache: hits (served \
             from storage) and misses (forwarded), as their Cache-Status says.\n\
             # TYPE relay_cache_lookups_total counter\n\
             relay_cache_lookups_total{{result=\"hit\",tier=\"memory\"}} {}\n\
             relay_cache_lookups_total{{result=\"miss\",tier=\"origin\"}} {}",
            sum(|w| &w.lookups.hits),
            sum(|w| &w.lookups.misses),
        );
        let _ = writeln!(
            out,
            "# HELP relay_cache_forwards_total Responses forwarded to the origin, by the reason \
             their Cache-Status gives (fwd).\n# TYPE relay_cache_forwards_total counter"
        );
        for f in crate::cache_status::Fwd::ALL {
            let n: u64 = self.workers.iter().map(|w| w.lookups.forwarded(f)).sum();
            let _ = writeln!(
                out,
                "relay_cache_forwards_total{{fwd=\"{}\"}} {n}",
                f.as_str()
            );
        }
        let ahead = sum(|w| &w.read_ahead);
        let _ = writeln!(
            out,
            "# HELP relay_chunk_fetches_total Chunks the workers started fetching (beyond those \
             an object's head fetch brings): for a client on that chunk (miss), or ahead of \
             one (origin.read_ahead_bytes; one streamed request takes a run of them).\n\
             # TYPE relay_chunk_fetches_total counter\n\
             relay_chunk_fetches_total{{started=\"miss\"}} {}\n\
             relay_chunk_fetches_total{{started=\"ahead\"}} {ahead}",
            sum(|w| &w.upstream_chunks).saturating_sub(ahead),
        );
        let _ = writeln!(
            out,
            "# HELP relay_read_ahead_streams_total Range requests that fetch a run of the \
             chunks ahead of a client in one answer (outside a cluster).\n\
             # TYPE relay_read_ahead_streams_total counter\n\
             relay_read_ahead_streams_total {}",
            sum(|w| &w.upstream_streams),
        );
        self.render_errors(out);
        let _ = writeln!(
            out,
            "# HELP relay_disk_reads_total Chunks read from the disk tier, by outcome.\n\
             # TYPE relay_disk_reads_total counter\n\
             relay_disk_reads_total{{result=\"verified\"}} {}\n\
             relay_disk_reads_total{{result=\"corrupt\"}} {}",
            sum(|w| &w.disk_hits),
            sum(|w| &w.disk_corrupt),
        );
        if let Some(disk) = self.shared.cache.disk.as_ref() {
            let d = disk.stats();
            let _ = writeln!(
                out,
                "# HELP relay_disk_tier_bytes Bytes held by the disk tier (whole blocks).\n\
                 # TYPE relay_disk_tier_bytes gauge\nrelay_disk_tier_bytes {}\n\
                 # HELP relay_disk_tier_capacity_bytes Capacity of the disk tier.\n\
                 # TYPE relay_disk_tier_capacity_bytes gauge\nrelay_disk_tier_capacity_bytes {}\n\
                 # HELP relay_disk_tier_chunks Chunks held by the disk tier.\n\
                 # TYPE relay_disk_tier_chunks gauge\nrelay_disk_tier_chunks {}\n\
                 # HELP relay_disk_tier_dropped_total Chunk files dropped by the disk tier.\n\
                 # TYPE relay_disk_tier_dropped_total counter\n\
                 relay_disk_tier_dropped_total{{reason=\"corrupt\"}} {}\n\
                 relay_disk_tier_dropped_total{{reason=\"missing\"}} {}\n\
                 relay_disk_tier_dropped_total{{reason=\"evicted\"}} {}\n\
                 relay_disk_tier_dropped_total{{reason=\"removed\"}} {}",
                d.usage, d.capacity, d.entries, d.corrupt, d.missing, d.evicted, d.refused_removed
            );
        }
        if let Some(up) = self.shared.upstream.as_ref() {
            let st = &up.stats;
            let _ = writeln!(
                out,
                "# HELP relay_upstream_requests_total Requests sent to HTTP origins.\n\
                 # TYPE relay_upstream_requests_total counter\nrelay_upstream_requests_total {}\n\
                 # HELP relay_upstream_errors_total Upstream requests that failed.\n\
                 # TYPE relay_upstream_errors_total counter\nrelay_upstream_errors_total {}\n\
                 # HELP relay_upstream_bytes_total Body bytes received from HTTP origins.\n\
                 # TYPE relay_upstream_bytes_total counter\nrelay_upstream_bytes_total {}\n\
                 # HELP relay_upstream_range_ignored_total Range requests an HTTP origin \
                 answered with the whole body (200): the bytes before the wanted ones are read \
                 and thrown away (relay_upstream_range_skipped_bytes_total).\n\
                 # TYPE relay_upstream_range_ignored_total counter\n\
                 relay_upstream_range_ignored_total {}\n\
                 # HELP relay_upstream_range_skipped_bytes_total Body bytes read from HTTP \
                 origins that ignored Range and thrown away: before the bytes asked for, and \
                 of chunks held elsewhere that a whole answer ran past.\n\
                 # TYPE relay_upstream_range_skipped_bytes_total counter\n\
                 relay_upstream_range_skipped_bytes_total {}\n\
                 # HELP relay_upstream_answers_resumed_total Origin answers to a chunk's \
                 Range request that ended short of the chunk (a 206 for fewer bytes than \
                 asked, or one that broke off) after some of its bytes: the rest asked for \
                 from there.\n\
                 # TYPE relay_upstream_answers_resumed_total counter\n\
                 relay_upstream_answers_resumed_total {}\n\
                 # HELP relay_upstream_stray_answers_total Origin connections dropped because \
                 the origin sent bytes past the end of an answer before the next request on \
                 them (never read as that request's answer).\n\
                 # TYPE relay_upstream_stray_answers_total counter\n\
                 relay_upstream_stray_answers_total {}\n\
                 # HELP relay_upstream_whole_fetches Whole answers of origins that ignore \
                 Range read at their clients' pace, each holding a fetch slot (at most half \
                 of an origin's max_connections).\n\
                 # TYPE relay_upstream_whole_fetches gauge\n\
                 relay_upstream_whole_fetches {}\n\
                 # HELP relay_disk_writes_total Chunks written to the disk tier.\n\
                 # TYPE relay_disk_writes_total counter\nrelay_disk_writes_total {}\n\
                 # HELP relay_disk_writes_failed_total Chunks admitted to the disk tier and \
                 not written: the writer's queue was full (the disk is not keeping up), or the \
                 write failed.\n\
                 # TYPE relay_disk_writes_failed_total counter\n\
                 relay_disk_writes_failed_total{{reason=\"queue_full\"}} {}\n\
                 relay_disk_writes_failed_total{{reason=\"error\"}} {}\n\
                 # HELP relay_disk_write_queue_bytes Chunk bytes waiting for the disk writer \
                 (chunk memory they hold until written).\n\
                 # TYPE relay_disk_write_queue_bytes gauge\nrelay_disk_write_queue_bytes {}\n\
                 # HELP relay_disk_write_seconds_total Time the disk writer spent on writes \
                 (a file's creation to its rename), summed over the writes in flight.\n\
                 # TYPE relay_disk_write_seconds_total counter\n\
                 relay_disk_write_seconds_total {:.6}\n\
                 # HELP relay_pass_buffer_bytes Memory held for pass-throughs: response windows \
                 and request bodies.\n\
                 # TYPE relay_pass_buffer_bytes gauge\nrelay_pass_buffer_bytes {}\n\
                 # HELP relay_pass_buffer_capacity_bytes origin.pass_buffer_bytes.\n\
                 # TYPE relay_pass_buffer_capacity_bytes gauge\n\
                 relay_pass_buffer_capacity_bytes {}\n\
                 # HELP relay_pass_buffer_clients Client addresses holding pass-through memory \
                 now.\n\
                 # TYPE relay_pass_buffer_clients gauge\nrelay_pass_buffer_clients {}\n\
                 # HELP relay_upstream_fetch_slot_waits_total Cache fetches that found every \
                 fetch slot of their origin (max_connections) taken and waited for one.\n\
                 # TYPE relay_upstream_fetch_slot_waits_total counter\n\
                 relay_upstream_fetch_slot_waits_total {}\n\
                 # HELP relay_upstream_fetch_slot_timeouts_total Cache fetches that got no \
                 fetch slot within first_byte_timeout_ms and failed.\n\
                 # TYPE relay_upstream_fetch_slot_timeouts_total counter\n\
                 relay_upstream_fetch_slot_timeouts_total {}\n\
                 # HELP relay_peer_fetches_total Head and chunk fetches asked of the chunk's \
                 owner among the site's relays first: answered by it (below 500), or fell \
                 back to the origin (no answer, 5xx, or an answer that did not fit), or a chunk that did \
                 not match the checksum it came with (not kept, its readers cut).\n\
                 # TYPE relay_peer_fetches_total counter\n\
                 relay_peer_fetches_total{{result=\"answered\"}} {}\n\
                 relay_peer_fetches_total{{result=\"fell_back\"}} {}\n\
                 relay_peer_fetches_total{{result=\"corrupt\"}} {}\n\
                 # HELP relay_peer_chunk_sums_total Whole chunks answered by another relay, by \
                 where their checksum came: in the head (held there), in a trailer (streamed \
                 as it arrived there), or none (a relay that sends none).\n\
                 # TYPE relay_peer_chunk_sums_total counter\n\
                 relay_peer_chunk_sums_total{{sum=\"head\"}} {}\n\
                 relay_peer_chunk_sums_total{{sum=\"trailer\"}} {}\n\
                 relay_peer_chunk_sums_total{{sum=\"none\"}} {}\n\
                 # HELP relay_peer_holder_requests_total Chunks asked of a relay whose digest \
                 named it as a holder (only-if-cached): answered, or missed (held no more, a \
                 false positive of the digest, or no answer).\n\
                 # TYPE relay_peer_holder_requests_total counter\n\
                 relay_peer_holder_requests_total{{result=\"hit\"}} {}\n\
                 relay_peer_holder_requests_total{{result=\"miss\"}} {}\n\
                 # HELP relay_peer_digests_fetched_total Other relays' digests fetched (a new \
                 build each).\n\
                 # TYPE relay_peer_digests_fetched_total counter\n\
                 relay_peer_digests_fetched_total {}",
                st.requests.load(Ordering::Relaxed),
                st.errors.load(Ordering::Relaxed),
                st.bytes.load(Ordering::Relaxed),
                st.range_ignored.load(Ordering::Relaxed),
                st.range_skipped_bytes.load(Ordering::Relaxed),
                st.answers_resumed.load(Ordering::Relaxed),
                up.stray_answers(),
                up.whole_fetches(),
                st.disk.written.load(Ordering::Relaxed),
                st.disk.queue_full.load(Ordering::Relaxed),
                st.disk.failed.load(Ordering::Relaxed),
                st.disk.queued_bytes.load(Ordering::Relaxed),
                st.disk.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
                up.pass_budget.held(),
                up.pass_budget.limit(),
                up.pass_budget.clients_holding(),
                st.fetch_slot_waits.load(Ordering::Relaxed),
                st.fetch_slot_timeouts.load(Ordering::Relaxed),
                st.peer_answered.load(Ordering::Relaxed),
                st.peer_fell_back.load(Ordering::Relaxed),
                st.peer_corrupt.load(Ordering::Relaxed),
                st.peer_sums[0].load(Ordering::Relaxed),
                st.peer_sums[1].load(Ordering::Relaxed),
                st.peer_sums[2].load(Ordering::Relaxed),
                st.holder_hits.load(Ordering::Relaxed),
                st.holder_misses.load(Ordering::Relaxed),
                st.digests_fetched.load(Ordering::Relaxed),
            );
            let _ = writeln!(
                out,
                "# HELP relay_origin_server_up Whether an origin's server is in its pool now \
                 (1), or out of it (0): down after failed requests, or failing its health \
                 check.\n# TYPE relay_origin_server_up gauge"
            );
            for (origin, servers) in up.servers_up() {
                for (server, is_up) in servers {
                    let _ = writeln!(
                        out,
                        "relay_origin_server_up{{origin=\"{}\",server=\"{}\"}} {}",
                        label(&origin),
                        label(&server),
                        u8::from(is_up)
                    );
                }
            }
        }
        if let Some(d) = self.shared.digest.as_ref() {
            d.render(out);
        }
        if let Some(log) = self.shared.access_log.as_ref() {
            let c = &log.counters;
            for (name, help, n) in [
                ("written", "Access log lines written.", &c.written),
                (
                    "dropped",
                    "Access log lines dropped: the writer's queue (log.access_queue) was full.",
                    &c.dropped,
                ),
                (
                    "errors",
                    "Access log writes (or reopens) that failed.",
                    &c.errors,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "# HELP relay_access_log_{name}_total {help}\n\
                     # TYPE relay_access_log_{name}_total counter\n\
                     relay_access_log_{name}_total {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP relay_memory_tier_chunks Chunks held by the memory tier.\n\
             # TYPE relay_memory_tier_chunks gauge\nrelay_memory_tier_chunks {}",
            self.shared.cache.memory.len()
        );
        let _ = writeln!(
            out,
            "# HELP relay_workers Worker threads (one io_uring each).\n\
             # TYPE relay_workers gauge\nrelay_workers {}",
            self.workers.len()
        );
        self.render_latency(out);
        if let Some(extra) = &self.extra {
            extra(out);
        }
    }

    /// Answers relay made up itself, by status and reason, summed over the workers.
    fn render_errors(&self, out: &mut String) {
        let mut sums: Vec<(&str, &str, u64)> = Vec::new();
        for w in self.workers.iter() {
            for (status, reason, n) in w.made_up.each() {
                match sums.iter_mut().find(|e| e.0 == status && e.1 == reason) {
                    Some(e) => e.2 += n,
                    None => sums.push((status, reason, n)),
                }
            }
        }
        // Every response by what became of it and its status class, the answers relay made
        // up as result="error".
        let _ = writeln!(
            out,
            "# HELP relay_responses_total Responses by origin (directory, or an HTTP origin's \
             Host and prefix; \"-\" for answers relay made up), result (hit, stale, \
             revalidated, miss, pass: as their Cache-Status says; error: made up by relay) and \
             status class.\n\
             # TYPE relay_responses_total counter"
        );
        use crate::cache_status::{COUNTED_ORIGINS, Outcome, status_class};
        // The origins by slot: the directory, each HTTP origin as its Host and prefix, the
        // ones past the counted as "other".
        let http: Vec<String> = self
            .shared
            .upstream
            .as_ref()
            .map(|u| u.servers_up().into_iter().map(|(name, _)| name).collect())
            .unwrap_or_default();
        let mut origins: Vec<(usize, String)> = Vec::new();
        if self.shared.origin.is_some() {
            origins.push((0, "directory".into()));
        }
        for (o, name) in http.iter().enumerate().take(COUNTED_ORIGINS - 2) {
            origins.push((o + 1, name.clone()));
        }
        if http.len() > COUNTED_ORIGINS - 2 {
            origins.push((COUNTED_ORIGINS - 1, "other".into()));
        }
        for (slot, name) in origins {
            for o in Outcome::ALL {
                for class in 1..=5 {
                    let n: u64 = self
                        .workers
                        .iter()
                        .map(|w| {
                            w.lookups.responses[slot][o as usize][class].load(Ordering::Relaxed)
                        })
                        .sum();
                    let _ = writeln!(
                        out,
                        "relay_responses_total{{origin=\"{}\",result=\"{}\",status=\"{class}xx\"}} {n}",
                        label(&name),
                        o.as_str()
                    );
                }
            }
        }
        let mut errors = [0u64; 6];
        for (status, _, n) in &sums {
            errors[status_class(status.parse().unwrap_or(0))] += n;
        }
        for (class, n) in errors.iter().enumerate().skip(1) {
            let _ = writeln!(
                out,
                "relay_responses_total{{origin=\"-\",result=\"error\",status=\"{class}xx\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP relay_errors_total Answers relay made up itself (not the origin's), by \
             status and reason.\n# TYPE relay_errors_total counter"
        );
        for (status, reason, n) in sums {
            let _ = writeln!(
                out,
                "relay_errors_total{{status=\"{status}\",reason=\"{reason}\"}} {n}"
            );
        }
    }

    fn render_latency(&self, out: &mut String) {
        let mut merged = latency_histogram();
        for w in self.workers.iter() {
            if let Ok(h) = w.latency.lock() {
                let _ = merged.add(&*h);
            }
        }
        let name = "relay_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a request's parse to its last byte handed to the kernel.\n\
             # TYPE {name} histogram"
        );
        for le in BUCKETS {
            let us = (le * 1e6) as u64;
            let count = merged.count_between(0, us);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let total = merged.len();
        let sum_s: f64 = merged
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum::<f64>()
            / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum {sum_s}\n{name}_count {total}");
        let _ = writeln!(
            out,
            "# HELP relay_request_duration_quantile_seconds Quantiles of {name} since the \
             relay started (for a window, use histogram_quantile over the buckets' rate).\n\
             # TYPE relay_request_duration_quantile_seconds gauge"
        );
        for q in [0.5, 0.9, 0.99, 0.999] {
            let _ = writeln!(
                out,
                "relay_request_duration_quantile_seconds{{quantile=\"{q}\"}} {}",
                merged.value_at_quantile(q) as f64 / 1e6
            );
        }
    }
}

/// A label value in the Prometheus text format: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

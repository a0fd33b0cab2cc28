//! relay's log: `tracing` events (and the libraries' `log` records, bridged) filtered by
//! `RUST_LOG` (default `info`), one line each on standard error: with the time and level
//! on a terminal, or, under systemd (`JOURNAL_STREAM` set: standard error is the journal),
//! with the syslog priority the journal reads (`<3>` error ... `<7>` debug) and no time of
//! its own.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Starts the log; a second call does nothing.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Line { journald })
        .try_init();
}

/// One event as a line: `2026-12-07T01:59:00.123Z  WARN relay_upstream::dns: message`, or
/// `<4>relay_upstream::dns: message` for the journal.
struct Line {
    journald: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // (A `log` record's own level and target, not the bridge's.)
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let level = *meta.level();
        if self.journald {
            let priority = match level {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                _ => 7,
            };
            write!(w, "<{priority}>")?;
        } else {
            write!(w, "{:.3} {level:>5} ", jiff::Timestamp::now())?;
        }
        write!(w, "{}: ", meta.target())?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

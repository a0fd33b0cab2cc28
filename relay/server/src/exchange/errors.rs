//! Answers relay makes up itself: counted by status and reason, and logged (one line each,
//! within the worker's budget: `crate::errors`) with the client, the request and the
//! origin. Nothing here runs for an answer from the cache or an origin.

use super::types::Route;
use super::{Cx, Exchange};
use crate::errors::Why;
use relay_proto::Method;

impl Exchange {
    /// Counts and logs an answer relay made up for `why` (warn for a 5xx, info for a 4xx).
    pub(super) fn made_up(&self, cx: &Cx<'_>, why: Why) {
        let status = why.status();
        cx.stats.made_up.count(status, why);
        let level = match status {
            500.. => log::Level::Warn,
            _ => log::Level::Info,
        };
        if !log::log_enabled!(level) || !cx.stats.made_up.admit(cx.now) {
            return;
        }
        let client = (cx.peer)().map_or_else(|| "-".to_string(), |a| a.to_string());
        if !why.parsed() {
            log::log!(
                level,
                "answered {status}: client {client}, request unparsed, origin -: {why}"
            );
            return;
        }
        let method = match self.saved.req.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other => self.other_method.as_str(),
        };
        let origin = match self.route {
            Route::Http(o) => cx
                .shared
                .config
                .origin
                .http
                .get(o)
                .map_or("-", |o| o.authority.as_str()),
            Route::Directory => "directory",
        };
        let host = match self.route {
            Route::Http(_) => self.authority().to_string(),
            Route::Directory => self.host_field().unwrap_or_else(|| "-".to_string()),
        };
        log::log!(
            level,
            "answered {status}: client {client}, {method} {host}{}, origin {origin}: {why}",
            self.target
        );
    }

    /// The request's `Host` field, when its head is still at hand.
    fn host_field(&self) -> Option<String> {
        let mut slots = [httparse::EMPTY_HEADER; relay_proto::MAX_HEADERS_CAP];
        let mut req = httparse::Request::new(&mut slots);
        let _ = req.parse(self.head());
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    }
}

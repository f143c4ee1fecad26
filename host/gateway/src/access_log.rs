//! The access log: one line per request the gateway answers, saying what was
//! asked (method, path), who answered (service, version), how (status) and
//! how fast (latency), under the request's id.
//!
//! The line is the `tracing` event `served`, at `info`, target
//! `switchyard_gateway`, in the request's span `request{id}`: the log filter
//! turns it on and off like any other line. By default the process's
//! subscriber formats it. A busy host writes one per request, and generic
//! formatting made it cost more than the rest of a small request's logging
//! (`make bench`, hello), so the binary installs a [`Writer`] that puts the
//! same line, byte for byte, straight into its output ([`install`]).
//!
//! Owns the record of a served request and the choice of the way it is
//! written; must never fail, block or slow down a request beyond writing one
//! line.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use tracing::{Level, Span};

/// The target the line is filtered and printed under.
pub const TARGET: &str = "switchyard_gateway";

/// One request, answered.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    /// The request's id (its span's `id`).
    pub id: &'a str,
    pub method: &'a Method,
    /// The path as the client sent it, percent-encoding kept.
    pub path: &'a str,
    /// The service and version that answered; none when no version could be
    /// picked (no such service, none active).
    pub service: Option<&'a str>,
    pub version: Option<&'a str>,
    pub status: StatusCode,
    /// From the request's arrival to its answer's head.
    pub latency: Duration,
}

impl Served<'_> {
    /// The latency as logged: milliseconds, to the microsecond.
    pub fn latency_ms(&self) -> f64 {
        self.latency.as_micros() as f64 / 1e3
    }
}

/// Writes access-log lines in place of the subscriber; it must write what
/// the subscriber would (`tracing_subscriber::fmt`'s format, text or JSON).
pub trait Writer: Send + Sync {
    fn write(&self, served: &Served<'_>);
}

static INSTALLED: OnceLock<Box<dyn Writer>> = OnceLock::new();

/// Write the access log with `writer` from now on, for the whole process
/// (like the subscriber it stands in for). Only the first call counts: it
/// says whether it was the first.
pub fn install(writer: Box<dyn Writer>) -> bool {
    INSTALLED.set(writer).is_ok()
}

/// The span a request runs in, `request{id}`: every line logged while it
/// runs carries its id. The access log's writer spells it out the same way.
pub fn request_span(id: &str) -> Span {
    tracing::info_span!(target: TARGET, "request", id)
}

/// Log `served`, whose span is `span`, if the filter lets lines at `info`
/// through.
pub fn log(served: &Served<'_>, span: &Span) {
    match INSTALLED.get() {
        Some(writer) => {
            if tracing::enabled!(target: TARGET, Level::INFO) {
                writer.write(served);
            }
        }
        None => span.in_scope(|| event(served)),
    }
}

/// `served` as a `tracing` event, in the current span.
pub fn event(served: &Served<'_>) {
    tracing::info!(
        target: TARGET,
        method = %served.method,
        path = served.path,
        service = served.service,
        version = served.version,
        status = served.status.as_u16(),
        latency_ms = served.latency_ms(),
        "served"
    );
}

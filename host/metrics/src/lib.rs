//! Every metric a Switchyard host records: its name, its labels, and the one
//! function that records it, so that a name or a label set is written once
//! and an operator's dashboard can be checked against this file.
//!
//! It records into whatever `metrics` recorder the process installed; it
//! never exports (the gateway serves `GET /metrics`) and never decides what
//! counts as a failure (its callers say which [`Failure`] happened).

pub mod signals;

use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};

/// HTTP requests a version answered; labels `service`, `version`, `status`
/// (`ok` for 1xx–3xx, `4xx`, `5xx`).
pub const REQUESTS: &str = "switchyard_requests_total";
/// Requests tried again on a fresh instance (a read that trapped or ran out
/// of memory, having written nothing); labels `service`, `version`. Calls
/// made on a version's instances are its requests plus these.
pub const RETRIES: &str = "switchyard_retries_total";
/// Their latency, a histogram in seconds; labels `service`, `version`.
pub const REQUEST_SECONDS: &str = "switchyard_request_duration_seconds";
/// Calls that failed on the service's side; labels `service`, `version`,
/// `kind` (see [`Failure`]).
pub const ERRORS: &str = "switchyard_errors_total";
/// Of those, the traps (memory included); labels `service`, `version`.
pub const TRAPS: &str = "switchyard_traps_total";
/// Of those, the timeouts; labels `service`, `version`.
pub const TIMEOUTS: &str = "switchyard_timeouts_total";
/// Guest log messages and output lines dropped over a call's budget; labels
/// `service`, `version`.
pub const LOG_DROPPED: &str = "switchyard_log_dropped_total";
/// Instances, a gauge; labels `service`, `version`, `state` (`busy`, `idle`).
pub const INSTANCES: &str = "switchyard_instances";
/// Changes of what serves (activation, replacement, split, failover); label
/// `service`.
pub const SWAPS: &str = "switchyard_swaps_total";
/// Versions refused when they loaded; label `service`.
pub const REJECTED: &str = "switchyard_rejected_versions_total";
/// Failovers; label `service`.
pub const FAILOVERS: &str = "switchyard_failovers_total";

/// One version's request metrics, registered once: looking them up by name
/// and labels on every request cost some 1.2 µs of its CPU time (`make
/// bench`, hello, profiled).
pub struct RequestMetrics {
    ok: Counter,
    client_error: Counter,
    server_error: Counter,
    retries: Counter,
    seconds: Histogram,
}

impl RequestMetrics {
    /// `service` `version`'s, in the process's recorder (which must be
    /// installed by now, or they count nothing).
    pub fn register(service: &str, version: &str) -> RequestMetrics {
        let labels = version_labels(service, version);
        let requests = |class: &str| counter!(REQUESTS, &with(&labels, "status", class));
        RequestMetrics {
            ok: requests("ok"),
            client_error: requests("4xx"),
            server_error: requests("5xx"),
            retries: counter!(RETRIES, &labels),
            seconds: histogram!(REQUEST_SECONDS, &labels),
        }
    }

    /// An HTTP request the version answered (whatever the status).
    pub fn served(&self, status: u16, elapsed: Duration) {
        match status {
            100..=399 => &self.ok,
            400..=499 => &self.client_error,
            _ => &self.server_error,
        }
        .increment(1);
        self.seconds.record(elapsed.as_secs_f64());
    }

    /// A request tried again, on a fresh instance.
    pub fn retried(&self) {
        self.retries.increment(1);
    }
}

/// How a call failed on the service's side: the `kind` label of [`ERRORS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Memory,
    Dependency,
    Trap,
    Oversized,
    Start,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Memory => "memory",
            Failure::Dependency => "dependency",
            Failure::Trap => "trap",
            Failure::Oversized => "oversized",
            Failure::Start => "start",
        }
    }
}

/// A call (HTTP or from another service) that failed on the service's side.
pub fn call_failed(service: &str, version: &str, failure: Failure) {
    let labels = version_labels(service, version);
    counter!(ERRORS, &with(&labels, "kind", failure.label())).increment(1);
    match failure {
        Failure::Trap | Failure::Memory => counter!(TRAPS, &labels).increment(1),
        Failure::Timeout => counter!(TIMEOUTS, &labels).increment(1),
        Failure::Dependency | Failure::Oversized | Failure::Start => {}
    }
}

/// A guest log message or output line dropped over its call's budget.
pub fn log_dropped(service: &str, version: &str) {
    counter!(LOG_DROPPED, &version_labels(service, version)).increment(1);
}

/// `service` `version` has `busy` instances on a call and `idle` ones.
pub fn instances(service: &str, version: &str, busy: usize, idle: usize) {
    let labels = version_labels(service, version);
    gauge!(INSTANCES, &with(&labels, "state", "busy")).set(busy as f64);
    gauge!(INSTANCES, &with(&labels, "state", "idle")).set(idle as f64);
}

/// A change of what serves `service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Activated, replaced, or its traffic split changed.
    Swap,
    /// Traffic moved off a failing version (also a swap).
    Failover,
    /// A version was refused when it loaded.
    Rejected,
}

pub fn deployment_changed(service: &str, change: Change) {
    let labels = [("service", service.to_string())];
    match change {
        Change::Swap => counter!(SWAPS, &labels).increment(1),
        Change::Failover => {
            counter!(SWAPS, &labels).increment(1);
            counter!(FAILOVERS, &labels).increment(1);
        }
        Change::Rejected => counter!(REJECTED, &labels).increment(1),
    }
}

/// The labels every per-version metric carries.
fn version_labels(service: &str, version: &str) -> [(&'static str, String); 2] {
    [
        ("service", service.to_string()),
        ("version", version.to_string()),
    ]
}

/// `labels` and one more.
fn with(
    labels: &[(&'static str, String)],
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    [labels, &[(name, value.to_string())]].concat()
}

//! The metrics the control plane records: calls that failed on a service's
//! side, by kind, and each version's requests and their latency. (The
//! gateway's exporter serves them.)

use std::time::Duration;

use metrics::{Counter, Histogram, counter, histogram};

use switchyard_runtime::CallError;

pub const ERRORS: &str = "switchyard_errors_total";
pub const TRAPS: &str = "switchyard_traps_total";
pub const TIMEOUTS: &str = "switchyard_timeouts_total";
pub const REQUESTS: &str = "switchyard_requests_total";
pub const REQUEST_SECONDS: &str = "switchyard_request_duration_seconds";

/// One version's request metrics, registered once: looking them up by name
/// and labels on every request cost some 1.2 µs of its CPU time (`make
/// bench`, hello, profiled).
pub struct RequestMetrics {
    /// By class of status: 1xx–3xx, 4xx, 5xx.
    ok: Counter,
    client_error: Counter,
    server_error: Counter,
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
}

/// A call (HTTP or from another service) that failed on the service's side.
pub fn call_failed(service: &str, version: &str, failure: &CallError) {
    let kind = match failure {
        CallError::Timeout(_) => "timeout",
        CallError::OutOfMemory(_) => "memory",
        CallError::Dependency(_) => "dependency",
        CallError::Trap(_) => "trap",
        CallError::TooMuchData => "oversized",
        CallError::Start(_) => "start",
    };
    let labels = version_labels(service, version);
    counter!(ERRORS, &with(&labels, "kind", kind)).increment(1);
    match failure {
        CallError::Trap(_) | CallError::OutOfMemory(_) => counter!(TRAPS, &labels).increment(1),
        CallError::Timeout(_) => counter!(TIMEOUTS, &labels).increment(1),
        CallError::Dependency(_) | CallError::TooMuchData | CallError::Start(_) => {}
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

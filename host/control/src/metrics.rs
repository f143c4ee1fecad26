//! The metrics the control plane records: calls that failed on a service's
//! side, by kind. (The gateway's exporter serves them with its own.)

use metrics::counter;

use switchyard_runtime::CallError;

pub const ERRORS: &str = "switchyard_errors_total";
pub const TRAPS: &str = "switchyard_traps_total";
pub const TIMEOUTS: &str = "switchyard_timeouts_total";

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
    let labels = [
        ("service", service.to_string()),
        ("version", version.to_string()),
    ];
    counter!(
        ERRORS,
        &[&labels[..], &[("kind", kind.to_string())]].concat()
    )
    .increment(1);
    match failure {
        CallError::Trap(_) | CallError::OutOfMemory(_) => counter!(TRAPS, &labels).increment(1),
        CallError::Timeout(_) => counter!(TIMEOUTS, &labels).increment(1),
        CallError::Dependency(_) | CallError::TooMuchData | CallError::Start(_) => {}
    }
}

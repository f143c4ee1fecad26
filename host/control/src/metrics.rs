//! Which [`Failure`] a failed call is, for the metrics every host records
//! (named, labelled and recorded in `switchyard_metrics`; the gateway's
//! exporter serves them).

use switchyard_metrics::Failure;
pub use switchyard_metrics::RequestMetrics;
use switchyard_runtime::CallError;

/// A call (HTTP or from another service) that failed on the service's side.
pub fn call_failed(service: &str, version: &str, failure: &CallError) {
    let failure = match failure {
        CallError::Timeout(_) => Failure::Timeout,
        CallError::OutOfMemory(_) => Failure::Memory,
        CallError::Dependency(_) => Failure::Dependency,
        CallError::Trap(_) => Failure::Trap,
        CallError::TooMuchData => Failure::Oversized,
        CallError::Start(_) => Failure::Start,
    };
    switchyard_metrics::call_failed(service, version, failure);
}

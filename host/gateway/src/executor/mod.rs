//! Running an HTTP request on a version: what every kind of component has
//! in common (an instance from the version's pool, the busy answer, the
//! deadline's backstop, failures counted and reported, a read retried once
//! after a trap or running out of memory, failures turned into answers), around an [`Executor`] that
//! knows its kind of component: how the request goes in and the answer
//! comes out. One executor per kind, one file each: [`handler`] for
//! components exporting `switchyard:platform/handler`, [`handler2`] for
//! those exporting `switchyard:platform/handler2`, [`wasi_http`] for
//! those exporting `wasi:http/incoming-handler`; and [`rpc`] for calls
//! to exported functions with JSON, which any kind with interfaces takes.

pub mod handler;
pub mod handler2;
pub mod rpc;
pub mod wasi_http;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Gateway;
use crate::http::{error, set_header};
use switchyard_control::balance::{AcquireError, Lease};
use switchyard_control::registry::LoadedVersion;
use switchyard_runtime::{CallError, root_cause};
use switchyard_trace::Trace;

/// Which instance (slot of the version's pool) answered.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-switchyard-instance");

/// How the gateway runs requests on one kind of component.
pub trait Executor: Send + Sync {
    /// A request as this kind of component takes it.
    type Call: Send + Sync;

    /// Read what the call needs from `request` (`path` is what follows the
    /// service's name) for `version`, or answer at once (a body too large,
    /// too slow; nothing there to call).
    fn prepare(
        &self,
        gateway: &Gateway,
        version: &LoadedVersion,
        path: &str,
        request: Request,
    ) -> impl Future<Output = Result<Self::Call, Response>> + Send;

    /// Where a consistent-hash pool sends `call`.
    fn hash_key(&self, version: &LoadedVersion, call: &Self::Call) -> Option<u64>;

    /// Whether `call` may run again after a trap (it changes nothing).
    fn is_read(&self, call: &Self::Call) -> bool;

    /// Run `call` on the leased instance, in `trace` if the request is
    /// traced, and give the HTTP answer. The lease goes back to the pool
    /// when dropped: at the end of the call, or later when the answer
    /// streams.
    fn call(
        &self,
        gateway: &Gateway,
        version: &Arc<LoadedVersion>,
        lease: Lease,
        call: &Self::Call,
        trace: Option<&Trace>,
    ) -> impl Future<Output = Result<Response, CallError>> + Send;
}

/// Beyond a call's own deadline, enforced inside the guest by epoch
/// interruption, the host stops waiting this much later: a backstop for a call
/// stuck in the host (waiting on another service) rather than in the guest.
const BACKSTOP: Duration = Duration::from_millis(100);

/// `running`'s outcome, or a timeout once it has run `deadline` and the
/// backstop past it.
pub(crate) async fn within_deadline<T>(
    deadline: Duration,
    running: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(deadline + BACKSTOP, running).await {
        Ok(outcome) => outcome,
        Err(_) => Err(CallError::Timeout(deadline)),
    }
}

/// `request` answered by `version`, through `executor`, in `trace` if it
/// is traced.
pub async fn run<E: Executor>(
    executor: &E,
    gateway: &Gateway,
    version: &Arc<LoadedVersion>,
    path: &str,
    request: Request,
    trace: Option<&Trace>,
) -> Response {
    let request_id = request.headers().get(crate::REQUEST_ID_HEADER).cloned();
    let call = match executor.prepare(gateway, version, path, request).await {
        Ok(call) => call,
        Err(refusal) => return refusal,
    };
    let key = executor.hash_key(version, &call);
    let policy = *version.pool.policy();
    // A read that trapped or ran out of memory is retried once, on a fresh
    // instance: reads are safe to repeat, unless the guest asked the store
    // to change something during the call.
    let retries = usize::from(executor.is_read(&call));
    let mut retries_left = retries;
    loop {
        let retried = retries_left < retries;
        let mut lease = match version.pool.acquire(key).await {
            Ok(lease) => lease,
            Err(busy @ (AcquireError::Busy { .. } | AcquireError::QueueFull(..))) => {
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("service {} is busy: {busy}", version.service),
                );
                let retry_after = policy.queue_timeout.as_secs().max(1).to_string();
                set_header(response.headers_mut(), "retry-after", &retry_after);
                return response;
            }
            Err(AcquireError::Instantiate(e)) => {
                // The version's own failure: counted, and it may fail over.
                let failure = CallError::Start(e);
                report(gateway, version, retried, Some(&failure));
                return failure_response(version, failure, request_id.as_ref());
            }
        };
        let slot = lease.slot();
        // Asked only where a retry is possible.
        let wrote = (retries_left > 0).then(|| lease.writes());
        let running = executor.call(gateway, version, lease, &call, trace);
        let outcome = within_deadline(policy.limits.deadline, running).await;
        report(gateway, version, retried, outcome.as_ref().err());
        match outcome {
            Ok(mut response) => {
                response
                    .headers_mut()
                    .insert(INSTANCE_HEADER, HeaderValue::from(slot));
                return response;
            }
            Err(failure @ (CallError::Trap(_) | CallError::OutOfMemory(_)))
                if wrote.as_ref().is_some_and(|w| !w.load(Ordering::Relaxed)) =>
            {
                retries_left -= 1;
                tracing::warn!(service = %version.service, version = %version.version, "retrying a read on a fresh instance: {failure}");
            }
            Err(failure) => return failure_response(version, failure, request_id.as_ref()),
        }
    }
}

/// Count one attempt at a request: the request itself, or its retry.
fn report(
    gateway: &Gateway,
    version: &Arc<LoadedVersion>,
    retried: bool,
    failure: Option<&CallError>,
) {
    if retried {
        gateway.registry.report_retry(version, failure);
    } else {
        gateway.registry.report(version, failure);
    }
}

/// The answer for a call that failed on the service's side, to the request
/// `request_id`. A trap's answer says that the service failed, how in one
/// line, and under which id: the wasm backtrace and what the guest wrote as
/// it failed are for the log line below and the admin view, not for clients.
fn failure_response(
    version: &LoadedVersion,
    failure: CallError,
    request_id: Option<&HeaderValue>,
) -> Response {
    let name = format!("service {} {}", version.service, version.version);
    // A trap's whole chain (its wasm backtrace too) and the guest's stderr
    // go in the log.
    let (trap, stderr) = match &failure {
        CallError::Trap(trap) => (Some(format!("{:#}", trap.error)), trap.stderr.as_deref()),
        _ => (None, None),
    };
    tracing::error!(service = %version.service, version = %version.version, trap, stderr, "request failed: {failure}");
    match failure {
        CallError::Timeout(deadline) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{name} did not answer within {} ms", deadline.as_millis()),
        ),
        CallError::OutOfMemory(mib) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name} ran out of memory (its limit is {mib} MiB)"),
        ),
        CallError::Dependency(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name} could not complete the request: {why}"),
        ),
        CallError::Start(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name} cannot start an instance: {}", root_cause(&e)),
        ),
        CallError::TooMuchData => error(
            StatusCode::BAD_GATEWAY,
            format!(
                "{name} answered with more than the {} MiB one call may return",
                switchyard_runtime::MAX_CALL_DATA >> 20
            ),
        ),
        CallError::Trap(trap) => {
            let id = request_id
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default();
            let message = format!(
                "{name} failed ({}); its operators find why in the host's log \
                 under request id {id}",
                trap.cause()
            );
            let body = json!({ "error": message, "request_id": id });
            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
        }
    }
}

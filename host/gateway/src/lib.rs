//! The HTTP front door: routes `/<service>/...` to a version of that service,
//! and answers health and metrics. The admin API (`switchyard_admin`) is
//! mounted next to these routes and uses the same conventions ([`error`],
//! [`ApiError`], [`read_body_in_time`]).
//!
//! Thin by design: it turns HTTP into a handler call and back, and maps host-side
//! failures to JSON errors. It holds no business logic and no state of its own
//! beyond its limits; which version serves is the registry's answer, what a file
//! becomes is the loader's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use serde_json::json;

pub mod server;
pub mod telemetry;

use switchyard_control::balance::AcquireError;
use switchyard_control::registry::{LoadedVersion, Registry, RegistryError};
use switchyard_platform::handler;
use switchyard_runtime::CallError;
use telemetry::Telemetry;
use tracing::Instrument;

/// Headers naming the service and version that answered.
pub const SERVICE_HEADER: &str = "x-switchyard-service";
pub const VERSION_HEADER: &str = "x-switchyard-version";
/// Which instance (slot of the version's pool) answered.
pub const INSTANCE_HEADER: &str = "x-switchyard-instance";

/// Response headers that belong to one connection (RFC 9110 §7.6.1) or that
/// the host frames itself; a guest's values for them are dropped.
const HOP_BY_HOP_HEADERS: [&str; 10] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The gateway's shared state.
pub struct Gateway {
    pub registry: Arc<Registry>,
    pub telemetry: Arc<Telemetry>,
    /// Request bodies larger than this get a 413.
    pub max_body_bytes: usize,
    /// A request still running after this gets a 504; its instance is discarded.
    pub request_timeout: Duration,
}

/// The gateway's routes, with `admin` mounted next to them.
pub fn router(gateway: Arc<Gateway>, admin: Router) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(forward)
        .with_state(gateway)
        .merge(admin)
        // After the merge: it applies to the routes registered before it.
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed(request: Request) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// A JSON error body: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A refusal: a status and a message, answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let status = match e {
            RegistryError::UnknownService { .. } | RegistryError::UnknownVersion { .. } => {
                StatusCode::NOT_FOUND
            }
            RegistryError::Rejected { .. } | RegistryError::NoPrevious { .. } => {
                StatusCode::CONFLICT
            }
            RegistryError::Incompatible { .. } | RegistryError::InvalidSplit { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        };
        ApiError::new(status, e.to_string())
    }
}

// === health and metrics ===

/// The process is up and answering.
async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Every known service has a version taking traffic.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let missing: Vec<String> = gateway
        .registry
        .list()
        .iter()
        .filter(|s| !s.is_serving())
        .map(|s| s.name.clone())
        .collect();
    if missing.is_empty() {
        return axum::Json(json!({ "status": "ready" })).into_response();
    }
    let body = json!({
        "error": format!("not ready: no active version for {}", missing.join(", ")),
        "missing": missing,
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let text = gateway.telemetry.render(&gateway.registry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

// === the service route ===

/// The header that carries a request's id, kept from the client or made here.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The client's request id if it is a sensible one, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("{:032x}", fastrand::u128(..)), str::to_string)
}

async fn forward(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    if let Ok(value) = HeaderValue::from_str(&id) {
        // The service sees the id too, to put in its own logs.
        request.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        service = tracing::field::Empty,
        version = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let (mut response, served_by) = route_to_service(&gateway, request)
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    span.record("status", status);
    span.record("latency_ms", started.elapsed().as_secs_f64() * 1e3);
    if let Some(version) = served_by {
        let number = version.version.to_string();
        telemetry::request_served(&version.service, &number, status, started.elapsed());
        span.record("service", version.service.as_str());
        span.record("version", number.as_str());
    }
    span.in_scope(|| tracing::info!("served"));
    set_header(response.headers_mut(), REQUEST_ID_HEADER, &id);
    response
}

/// The service's answer, and the version that gave it (none when no version
/// could be picked).
async fn route_to_service(
    gateway: &Gateway,
    request: Request,
) -> (Response, Option<Arc<LoadedVersion>>) {
    let path = request.uri().path().to_string();
    let (name, rest) = split_service(&path);
    let Some(service) = gateway.registry.get(name) else {
        let response = error(StatusCode::NOT_FOUND, format!("no service named {name:?}"));
        return (response, None);
    };
    let Some(version) = service.pick() else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            gateway.registry.unavailable_reason(name),
        );
        set_header(response.headers_mut(), SERVICE_HEADER, &service.name);
        return (response, None);
    };
    let mut response = call_service(gateway, &version, rest, request).await;
    set_header(response.headers_mut(), SERVICE_HEADER, &version.service);
    set_header(
        response.headers_mut(),
        VERSION_HEADER,
        &version.version.to_string(),
    );
    (response, Some(version))
}

/// `/goods/42` → (`goods`, `/42`); `/goods` → (`goods`, `/`).
fn split_service(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    }
}

/// Beyond a call's own deadline, enforced inside the guest by epoch
/// interruption, the host stops waiting this much later: a backstop for a call
/// stuck in the host (waiting on another service) rather than in the guest.
const BACKSTOP: Duration = Duration::from_millis(100);

async fn call_service(
    gateway: &Gateway,
    version: &Arc<LoadedVersion>,
    path: &str,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body_in_time(
        gateway.request_timeout,
        body,
        &parts.headers,
        gateway.max_body_bytes,
    )
    .await
    {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let guest_request = handler::Request {
        method: parts.method.as_str().to_string(),
        path: path.to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let key = version.hash_key.as_ref().and_then(|k| k.of(&guest_request));
    let policy = *version.pool.policy();
    // A trap on a read is retried once, on a fresh instance: reads are safe to repeat.
    let mut retries_left = usize::from(matches!(parts.method.as_str(), "GET" | "HEAD"));
    loop {
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
                gateway.registry.report(version, Some(&failure)).await;
                return failure_response(version, failure);
            }
        };
        let slot = lease.slot();
        let backstop = policy.limits.deadline + BACKSTOP;
        let outcome = match tokio::time::timeout(backstop, lease.handle(&guest_request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CallError::Timeout(policy.limits.deadline)),
        };
        drop(lease);
        gateway
            .registry
            .report(version, outcome.as_ref().err())
            .await;
        match outcome {
            Ok(response) => {
                let mut response = into_http(version, response);
                set_header(response.headers_mut(), INSTANCE_HEADER, &slot.to_string());
                return response;
            }
            Err(CallError::Trap(trap)) if retries_left > 0 => {
                retries_left -= 1;
                tracing::warn!(service = %version.service, version = %version.version, "retrying a read after a trap: {trap:#}");
            }
            Err(failure) => return failure_response(version, failure),
        }
    }
}

/// The answer for a call that failed on the service's side.
fn failure_response(version: &LoadedVersion, failure: CallError) -> Response {
    let name = format!("service {} {}", version.service, version.version);
    tracing::error!(service = %version.service, version = %version.version, "request failed: {failure}");
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
        CallError::Trap(trap) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{name} failed: {}", root_cause(&trap)),
        ),
    }
}

/// The innermost error worth showing a client: the trap itself.
fn root_cause(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

/// How much of an oversized body is read and discarded before answering 413
/// (at least the limit itself).
/// Clients that send the whole body before reading the answer (most do) then
/// get the 413 instead of a broken pipe; beyond this, the connection is closed.
const DISCARD_LIMIT: usize = 16 << 20;

/// A request body of at most `limit` bytes, read within the request timeout.
pub async fn read_body_in_time(
    timeout: Duration,
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let reading = read_body(body, headers, limit);
    match tokio::time::timeout(timeout, reading).await {
        Ok(read) => read,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive within the request timeout",
        )),
    }
}

async fn read_body(mut body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the limit of {limit} bytes"),
    );
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let discard_limit = limit.max(DISCARD_LIMIT);
    if declared.is_some_and(|len| len > discard_limit as u64) {
        return Err(too_large);
    }
    let mut buffer = Vec::new();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        if received > discard_limit {
            break;
        }
        if received <= limit {
            buffer.extend_from_slice(&data);
        }
    }
    if received > limit {
        return Err(too_large);
    }
    Ok(Bytes::from(buffer))
}

/// The most headers a service's response may carry, and their total size
/// (names and values): beyond either the response is refused with a 502.
pub const MAX_RESPONSE_HEADERS: usize = 100;
pub const MAX_RESPONSE_HEADER_BYTES: usize = 64 << 10;

/// Why a service's response could not be passed on.
#[derive(Debug, thiserror::Error)]
enum BadResponse {
    #[error("an invalid status {0} (a response status is from 200 to 599)")]
    Status(u16),
    #[error("{0} headers (at most {MAX_RESPONSE_HEADERS} are passed on)")]
    TooManyHeaders(usize),
    #[error("{0} bytes of headers (at most {MAX_RESPONSE_HEADER_BYTES} are passed on)")]
    HeadersTooLarge(usize),
}

fn into_http(version: &LoadedVersion, response: handler::Response) -> Response {
    match checked_response(version, response) {
        Ok(response) => response,
        Err(bad) => {
            tracing::warn!(service = %version.service, version = %version.version, "refused a response: {bad}");
            error(
                StatusCode::BAD_GATEWAY,
                format!("service {} answered with {bad}", version.service),
            )
        }
    }
}

fn checked_response(
    version: &LoadedVersion,
    response: handler::Response,
) -> Result<Response, BadResponse> {
    let status = match StatusCode::from_u16(response.status) {
        Ok(status) if (200..=599).contains(&status.as_u16()) => status,
        _ => return Err(BadResponse::Status(response.status)),
    };
    if response.headers.len() > MAX_RESPONSE_HEADERS {
        return Err(BadResponse::TooManyHeaders(response.headers.len()));
    }
    let header_bytes: usize = response
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if header_bytes > MAX_RESPONSE_HEADER_BYTES {
        return Err(BadResponse::HeadersTooLarge(header_bytes));
    }
    // Hop-by-hop headers describe the guest's own connection, which does not
    // exist: the host frames the client's. So do any the guest's `connection`
    // header names.
    let named_by_connection: Vec<String> = response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut http = Response::new(Body::from(response.body));
    *http.status_mut() = status;
    for (name, value) in response.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP_HEADERS.contains(&lower.as_str()) || named_by_connection.contains(&lower) {
            continue;
        }
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                http.headers_mut().append(name, value);
            }
            _ => {
                tracing::warn!(service = %version.service, "dropping an invalid response header {name:?}")
            }
        }
    }
    Ok(http)
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::split_service;

    #[test]
    fn the_first_segment_names_the_service() {
        assert_eq!(split_service("/goods/42"), ("goods", "/42"));
        assert_eq!(split_service("/goods"), ("goods", "/"));
        assert_eq!(split_service("/goods/"), ("goods", "/"));
        assert_eq!(split_service("/"), ("", "/"));
    }
}

//! The HTTP front door: routes `/<service>/...` to a version of that service,
//! and answers health and metrics. The admin API (`switchyard_admin`) is
//! mounted next to these routes and uses the same conventions ([`error`],
//! [`ApiError`], [`read_body_in_time`]).
//!
//! Thin by design: it picks the version (the registry's answer) and hands
//! the request to the executor for that version's kind of component
//! ([`executor`]), or, under `/rpc/<service>/...`, to the executor that calls
//! its exported functions with JSON; and maps host-side failures to JSON
//! errors. It holds no business logic and no state of its own beyond its
//! limits.
//!
//! - [`access_log`]: the line logged for every request.
//! - [`server`]: the listening socket: connection limits and timeouts.
//! - [`executor`]: running a request on a version, one executor per kind.
//! - [`http`]: errors as JSON, bodies read within limits.
//! - [`operator`]: who may change things and call what is not published.
//! - [`telemetry`]: the metrics it serves.

pub mod access_log;
pub mod executor;
pub mod http;
pub mod operator;
pub mod server;
pub mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tracing::Instrument;

pub use executor::INSTANCE_HEADER;
use executor::handler::Handler;
use executor::handler2::Handler2;
use executor::rpc::Rpc;
use executor::wasi_http::WasiHttp;
use http::set_header;
pub use http::{ApiError, error, read_body_in_time};
use operator::Operators;
use switchyard_control::registry::{LoadedVersion, Registry};
use switchyard_control::rpc::{self, RPC_PREFIX};
use switchyard_runtime::ComponentKind;
use switchyard_trace::{Trace, Tracer};
use telemetry::Telemetry;

/// Headers naming the service and version that answered.
pub const SERVICE_HEADER: HeaderName = HeaderName::from_static("x-switchyard-service");
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-switchyard-version");

/// The gateway's shared state.
pub struct Gateway {
    pub registry: Arc<Registry>,
    pub telemetry: Arc<Telemetry>,
    /// Request bodies larger than this get a 413.
    pub max_body_bytes: usize,
    /// A request still running after this gets a 504; its instance is discarded.
    pub request_timeout: Duration,
    /// Who may call the functions services do not publish over `/rpc`.
    pub operators: Operators,
    /// Makes each request's trace, when traces are exported.
    pub tracer: Option<Tracer>,
}

impl Gateway {
    /// A request body within the gateway's size limit and timeout, or the
    /// answer that refuses it.
    pub async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
        read_body_in_time(self.request_timeout, body, headers, self.max_body_bytes)
            .await
            .map_err(IntoResponse::into_response)
    }
}

/// The gateway's routes, with `admin` mounted next to them.
pub fn router(gateway: Arc<Gateway>, admin: Router) -> Router {
    Router::new()
        .route("/", get(front_door))
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

/// A person who opens the host in a browser learns what it is and where
/// to go; nothing here lists what it serves.
async fn front_door() -> Response {
    let body = json!({
        "error": "no service at /: this is a Switchyard host, and each service answers \
                  at /<name>/...",
        "operators": "the dashboard is at /admin/ui and the admin API at /admin (a token, or a loopback client without one)",
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

// === health and metrics ===

/// The process is up and answering.
async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Every known service has a version taking traffic.
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let missing = gateway.registry.unready();
    if missing.is_empty() {
        return axum::Json(json!({ "status": "ready" })).into_response();
    }
    let body = json!({
        "error": format!("not ready: no active version for {}", missing.join(", ")),
        "missing": missing,
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// The metrics, for operators (and the scrapers they give the token): per
/// service and version counts and latencies are the host's, not the public's.
async fn metrics(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    if let Err(not) = gateway.operators.check_request(&request) {
        return not.refusal("metrics");
    }
    let text = gateway.telemetry.render(&gateway.registry);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

// === the service route ===

/// The header that carries a request's id, kept from the client or made here.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The client's request id if it is a sensible one, else a fresh one: 32
/// random hex digits.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let sensible = |id: &&HeaderValue| {
        let id = id.as_bytes();
        !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic)
    };
    if let Some(id) = headers.get(REQUEST_ID_HEADER).filter(sensible) {
        return id.clone();
    }
    let mut hex = [0u8; 32];
    let random = fastrand::u128(..);
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(random >> (4 * (31 - i)) & 0xf) as usize];
    }
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&hex))
        .expect("hex digits are a valid header value")
}

async fn forward(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers());
    // The service sees the id too, to put in its own logs.
    request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    // What the request's own log lines (and its service's) carry: its id.
    // The rest goes in the one access-log line, once known: recording
    // fields on a span formats them again at every `record`.
    let id_text = id.to_str().unwrap_or_default();
    let span = access_log::request_span(id_text);
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let traced = gateway.tracer.as_ref().map(|tracer| {
        let traced = tracer.request(request.headers(), &method, &path, id_text);
        // The service reads the trace's context, to carry it on.
        traced.pass_on(request.headers_mut());
        traced
    });
    let trace = traced.as_ref().map(switchyard_trace::Span::trace);
    let (mut response, served_by) = route_to_service(&gateway, &path, request, trace)
        .instrument(span.clone())
        .await;
    let status = response.status();
    let latency = started.elapsed();
    if let Some(traced) = &traced {
        let route = served_by.as_ref().map(|v| route_of(&path, &v.service));
        let served = served_by.as_ref().zip(route.as_deref());
        let served = served.map(|(version, route)| switchyard_trace::Served {
            route,
            service: &version.service,
            version: &version.version_text,
        });
        traced.answered(&method, status, served);
    }
    if let Some(version) = &served_by {
        version.request_metrics().served(status.as_u16(), latency);
        version.signals.record(status.is_server_error(), latency);
    }
    let served = access_log::Served {
        id: id_text,
        method: &method,
        path: &path,
        service: served_by.as_ref().map(|v| v.service.as_str()),
        version: served_by.as_ref().map(|v| v.version_text.as_str()),
        status,
        latency,
    };
    access_log::log(&served, &span);
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    response
}

/// The service's answer to `request` (whose path is `path`), in `trace` if
/// it is traced, and the version that gave it (none when no version could be
/// picked).
async fn route_to_service(
    gateway: &Gateway,
    path: &str,
    request: Request,
    trace: Option<&Trace>,
) -> (Response, Option<Arc<LoadedVersion>>) {
    let (mut name, mut rest) = split_service(path);
    let rpc = name == RPC_PREFIX;
    if rpc {
        (name, rest) = split_service(rest);
    }
    let Some(service) = gateway.registry.get(name) else {
        let response = error(StatusCode::NOT_FOUND, format!("no service named {name:?}"));
        return (response, None);
    };
    let Some(version) = service.pick() else {
        let Some(reason) = gateway.registry.unavailable_reason(name) else {
            // Every version of it was removed: it is no service any more.
            let response = error(StatusCode::NOT_FOUND, format!("no service named {name:?}"));
            return (response, None);
        };
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, reason);
        set_header(response.headers_mut(), SERVICE_HEADER, &service.name);
        return (response, None);
    };
    let mut response = match version.kind {
        _ if rpc => executor::run(&Rpc, gateway, &version, rest, request, trace).await,
        ComponentKind::Handler => {
            executor::run(&Handler, gateway, &version, rest, request, trace).await
        }
        ComponentKind::Handler2 => {
            executor::run(&Handler2, gateway, &version, rest, request, trace).await
        }
        ComponentKind::WasiHttp => {
            executor::run(&WasiHttp, gateway, &version, rest, request, trace).await
        }
        ComponentKind::Interfaces => error(
            StatusCode::NOT_FOUND,
            format!(
                "service {name} {} has no HTTP handler: it exports only typed interfaces, \
                 which other services import; clients call what it publishes ({}) with \
                 POST /{RPC_PREFIX}/{name}/<interface>/<function>",
                version.version,
                rpc::describe_published(&version.published)
            ),
        ),
    };
    set_header(response.headers_mut(), SERVICE_HEADER, &version.service);
    set_header(
        response.headers_mut(),
        VERSION_HEADER,
        &version.version_text,
    );
    (response, Some(version))
}

/// The route a request to `path` answered by `service` took: `/<service>`,
/// or `/rpc/<service>` for a call over `/rpc`.
fn route_of(path: &str, service: &str) -> String {
    match split_service(path) {
        (RPC_PREFIX, _) => format!("/{RPC_PREFIX}/{service}"),
        _ => format!("/{service}"),
    }
}

/// `/goods/42` → (`goods`, `/42`); `/goods` → (`goods`, `/`).
fn split_service(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    }
}

#[cfg(test)]
mod tests {
    use super::{route_of, split_service};

    #[test]
    fn a_route_is_the_service_or_its_rpc_prefix() {
        assert_eq!(route_of("/goods/42", "goods"), "/goods");
        assert_eq!(route_of("/rpc/goods/catalog/get", "goods"), "/rpc/goods");
    }

    #[test]
    fn the_first_segment_names_the_service() {
        assert_eq!(split_service("/goods/42"), ("goods", "/42"));
        assert_eq!(split_service("/goods"), ("goods", "/"));
        assert_eq!(split_service("/goods/"), ("goods", "/"));
        assert_eq!(split_service("/"), ("", "/"));
    }
}

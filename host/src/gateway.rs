//! The HTTP front door: routes `/<service>/...` to that service's active version,
//! and serves the admin API under `/admin`.
//!
//! Thin by design: it turns HTTP into a handler call and back, and maps host-side
//! failures to JSON errors. It holds no business logic and no state of its own
//! beyond its limits; which version serves is the registry's answer.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::platform::handler;
use crate::registry::{LoadedVersion, Registry, ServiceEntry};
use crate::runtime::Provider;

/// Headers naming the service and version that answered.
pub const SERVICE_HEADER: &str = "x-switchyard-service";
pub const VERSION_HEADER: &str = "x-switchyard-version";

/// Response headers the host frames itself; a guest's values for them are dropped.
const HOST_FRAMED_HEADERS: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// The gateway's shared state.
pub struct Gateway {
    pub registry: Arc<Registry>,
    /// Request bodies larger than this get a 413.
    pub max_body_bytes: usize,
    /// A request still running after this gets a 504; its instance is discarded.
    pub request_timeout: Duration,
}

/// The gateway's routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/admin/services", get(list_services))
        .route("/admin/services/{name}", get(show_service))
        .fallback(forward)
        .with_state(gateway)
}

/// A JSON error body: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

// === the service route ===

async fn forward(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let (name, rest) = split_service(&path);
    let Some(service) = gateway.registry.get(name) else {
        return error(StatusCode::NOT_FOUND, format!("no service named {name:?}"));
    };
    let Some(version) = service.active() else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            service.unavailable_reason(),
        );
        set_header(response.headers_mut(), SERVICE_HEADER, &service.name);
        return response;
    };
    let mut response = call_service(&gateway, &version, rest, request).await;
    set_header(response.headers_mut(), SERVICE_HEADER, &version.service);
    set_header(
        response.headers_mut(),
        VERSION_HEADER,
        &version.version.to_string(),
    );
    response
}

/// `/goods/42` → (`goods`, `/42`); `/goods` → (`goods`, `/`).
fn split_service(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, "/"),
    }
}

async fn call_service(
    gateway: &Gateway,
    version: &LoadedVersion,
    path: &str,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(body, &parts.headers, gateway.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
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

    let mut lease = match version.pool.acquire().await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::error!(service = %version.service, version = %version.version, "{e:#}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("service {} cannot start an instance", version.service),
            );
        }
    };
    match tokio::time::timeout(gateway.request_timeout, lease.handle(&guest_request)).await {
        Ok(Ok(response)) => into_http(version, response),
        Ok(Err(trap)) => {
            tracing::error!(service = %version.service, version = %version.version, "request failed: {trap:#}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "service {} {} failed: {}",
                    version.service,
                    version.version,
                    root_cause(&trap)
                ),
            )
        }
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "service {} did not answer within {} ms",
                version.service,
                gateway.request_timeout.as_millis()
            ),
        ),
    }
}

/// The innermost error worth showing a client: the first cause in the chain
/// that is ours (a provider that failed, no provider), else the trap itself.
fn root_cause(e: &anyhow::Error) -> String {
    e.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large()
        } else {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

fn into_http(version: &LoadedVersion, response: handler::Response) -> Response {
    let status = match StatusCode::from_u16(response.status) {
        Ok(status) if status.as_u16() >= 200 => status,
        _ => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "service {} answered with an invalid status {}",
                    version.service, response.status
                ),
            );
        }
    };
    let mut http = Response::new(Body::from(response.body));
    *http.status_mut() = status;
    for (name, value) in response.headers {
        if HOST_FRAMED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
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
    http
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

// === the admin API ===

async fn list_services(State(gateway): State<Arc<Gateway>>) -> Response {
    let services: Vec<Value> = gateway
        .registry
        .list()
        .iter()
        .map(|s| describe(s))
        .collect();
    axum::Json(json!({ "services": services })).into_response()
}

async fn show_service(State(gateway): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    match gateway.registry.get(&name) {
        Some(service) => axum::Json(describe(&service)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service named {name:?}")),
    }
}

fn describe(service: &ServiceEntry) -> Value {
    let active = service.active();
    let versions = service.versions();
    let instances: usize = versions
        .iter()
        .filter_map(|v| v.loaded.as_ref())
        .map(|v| v.pool.instances())
        .sum();
    let names = |uses: Option<Vec<String>>| uses.unwrap_or_default();
    json!({
        "name": service.name,
        "active_version": active.as_ref().map(|v| v.version.to_string()),
        "versions": versions.iter().map(|v| json!({
            "version": v.version.to_string(),
            "state": v.state,
            "reason": v.reason,
        })).collect::<Vec<_>>(),
        "exports": names(active.as_ref().map(|v| v.exports.iter().map(|e| e.name.clone()).collect())),
        "imports": names(active.as_ref().map(|v| v
            .imports
            .iter()
            .filter(|i| i.provider() != Provider::WasiSystem)
            .map(|i| i.name.clone())
            .collect())),
        "instances": instances,
    })
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

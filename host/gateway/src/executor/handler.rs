//! The executor for components that export `switchyard:platform/handler`:
//! the request, body read in full, goes in as one record; the answer comes
//! back as one record, checked before it is passed on.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use super::Executor;
use crate::Gateway;
use crate::http::error;
use switchyard_control::balance::Lease;
use switchyard_control::registry::LoadedVersion;
use switchyard_platform::handler;
use switchyard_runtime::CallError;
use switchyard_trace::Trace;

/// Runs handler components.
pub struct Handler;

impl Executor for Handler {
    type Call = handler::Request;

    async fn prepare(
        &self,
        gateway: &Gateway,
        _version: &LoadedVersion,
        path: &str,
        request: Request,
    ) -> Result<handler::Request, Response> {
        let (parts, body) = request.into_parts();
        let body = gateway.read_body(&parts.headers, body).await?;
        Ok(handler::Request {
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
        })
    }

    fn hash_key(&self, version: &LoadedVersion, call: &handler::Request) -> Option<u64> {
        let header = |name: &str| {
            call.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        version.hash_key.as_ref()?.of(&call.path, header)
    }

    fn is_read(&self, call: &handler::Request) -> bool {
        matches!(call.method.as_str(), "GET" | "HEAD")
    }

    async fn call(
        &self,
        _gateway: &Gateway,
        version: &Arc<LoadedVersion>,
        mut lease: Lease,
        call: &handler::Request,
        trace: Option<&Trace>,
    ) -> Result<Response, CallError> {
        let trace = trace.cloned();
        let response = lease
            .run(async |guest| guest.handle(call, trace).await)
            .await?;
        Ok(into_http(version, response))
    }
}

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

pub(super) fn into_http(version: &LoadedVersion, response: handler::Response) -> Response {
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

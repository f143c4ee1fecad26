//! The gateway's HTTP conventions, which the admin API shares: errors as
//! JSON, and request bodies read within a size limit and a timeout.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::IntoHeaderName;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use serde_json::json;

use switchyard_control::registry::RegistryError;

/// A JSON error body: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A refusal: a status and a message, answered as `{"error": message}`,
/// with `"why"` next to it when the reason is structured data too.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    why: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            why: None,
        }
    }

    /// The same, with the reason as data (`kind` says which).
    pub fn because(mut self, why: &impl serde::Serialize) -> ApiError {
        self.why = serde_json::to_value(why).ok();
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.why {
            None => error(self.status, self.message),
            Some(why) => (
                self.status,
                axum::Json(json!({ "error": self.message, "why": why })),
            )
                .into_response(),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let status = match e {
            RegistryError::UnknownService { .. } | RegistryError::UnknownVersion { .. } => {
                StatusCode::NOT_FOUND
            }
            RegistryError::Rejected { .. }
            | RegistryError::NoPrevious { .. }
            | RegistryError::Conflict { .. } => StatusCode::CONFLICT,
            RegistryError::Incompatible { .. } | RegistryError::InvalidSplit { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        };
        let refusal = ApiError::new(status, e.to_string());
        match &e {
            RegistryError::Rejected { why, .. } => refusal.because(why),
            RegistryError::Incompatible { why, .. } => refusal.because(why),
            _ => refusal,
        }
    }
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
    // No body (a GET, say): nothing to wait for, so no timer to set.
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
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

pub fn set_header(headers: &mut HeaderMap, name: impl IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

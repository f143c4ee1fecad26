//! The executor for components that export `switchyard:platform/handler2`:
//! the request, body read in full, is lent to the guest as it arrived (the
//! guest copies in only what it reads); the answer comes back as one record
//! and is checked as [`handler`](super::handler)'s is.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

use super::Executor;
use super::handler::into_http;
use crate::Gateway;
use switchyard_control::balance::Lease;
use switchyard_control::registry::LoadedVersion;
use switchyard_platform::handler;
use switchyard_runtime::CallError;
use switchyard_runtime::incoming::IncomingRequest;
use switchyard_trace::Trace;

/// Runs handler2 components.
pub struct Handler2;

impl Executor for Handler2 {
    type Call = IncomingRequest;

    async fn prepare(
        &self,
        gateway: &Gateway,
        _version: &LoadedVersion,
        path: &str,
        request: Request,
    ) -> Result<IncomingRequest, Response> {
        let (parts, body) = request.into_parts();
        let body = gateway.read_body(&parts.headers, body).await?;
        let query = parts.uri.query().unwrap_or("").to_string();
        Ok(IncomingRequest::new(
            parts.method,
            path.to_string(),
            query,
            parts.headers,
            body,
        ))
    }

    fn hash_key(&self, version: &LoadedVersion, call: &IncomingRequest) -> Option<u64> {
        version
            .hash_key
            .as_ref()?
            .of(call.path(), |name| call.header(name))
    }

    fn is_read(&self, call: &IncomingRequest) -> bool {
        matches!(*call.method(), Method::GET | Method::HEAD)
    }

    async fn call(
        &self,
        _gateway: &Gateway,
        version: &Arc<LoadedVersion>,
        mut lease: Lease,
        call: &IncomingRequest,
        trace: Option<&Trace>,
    ) -> Result<Response, CallError> {
        let trace = trace.cloned();
        let response = lease
            .run(async |guest| guest.handle_lent(call, trace).await)
            .await?;
        // The same record as handler's, field for field.
        let response = handler::Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        };
        Ok(into_http(version, response))
    }
}

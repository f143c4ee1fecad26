//! The executor for calls to exported functions over HTTP:
//! `POST /rpc/<service>/<interface>/<function>`, the arguments a JSON object
//! (by parameter name) or array (in order), the answer the function's result
//! as JSON (`null` when it returns nothing). Any kind of component that
//! exports typed interfaces takes these calls, through the same pools,
//! versions and limits as the calls other services make.
//!
//! Anonymous clients reach the functions the service publishes (`[rpc]
//! public`); operators ([`crate::operator`]) reach every exported one.
//!
//! Addressing is [`switchyard_control::rpc`]'s, the JSON mapping is
//! [`switchyard_runtime::json`]'s; this file only joins them to HTTP.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Executor;
use crate::Gateway;
use crate::http::{ApiError, error, set_header};
use switchyard_control::balance::Lease;
use switchyard_control::registry::LoadedVersion;
use switchyard_control::rpc;
use switchyard_runtime::{CallError, Val, json as wit_json};
use switchyard_trace::Trace;

/// Runs calls to exported functions.
pub struct Rpc;

/// One call, its arguments converted.
pub struct RpcCall {
    interface: String,
    function: String,
    params: Vec<Val>,
    /// Whether the function returns a value.
    returns: bool,
}

impl Executor for Rpc {
    type Call = RpcCall;

    async fn prepare(
        &self,
        gateway: &Gateway,
        version: &LoadedVersion,
        path: &str,
        request: Request,
    ) -> Result<RpcCall, Response> {
        let name = format!("service {} {}", version.service, version.version);
        if request.method() != Method::POST {
            let mut refusal = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on /rpc: call a function with POST",
                    request.method()
                ),
            );
            set_header(refusal.headers_mut(), "allow", "POST");
            return Err(refusal);
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let [interface, function] = segments[..] else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!(
                    "a call is POST /rpc/{}/<interface>/<function>, not {path:?}",
                    version.service
                ),
            ));
        };
        // Anonymous clients see only what the service publishes: whether an
        // unpublished function exists is not theirs to learn.
        let operator = gateway.operators.check_request(&request).is_ok();
        let callable = if operator {
            &version.exports
        } else {
            &version.published
        };
        let (interface, function) =
            rpc::resolve(callable, interface, function).map_err(|e| match e {
                _ if operator => error(StatusCode::NOT_FOUND, format!("{name} {e}")),
                rpc::NotFound::Ambiguous { .. } => {
                    error(StatusCode::NOT_FOUND, format!("{name} publishes {e}"))
                }
                _ => error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "{name} publishes no function {interface}/{function} over /rpc; \
                         it publishes {} (a service's [rpc] public names what clients may \
                         call; operators call the rest with the admin token)",
                        rpc::describe_published(&version.published)
                    ),
                ),
            })?;
        let signature = &function.signature;
        if let Some(ty) = wit_json::unsupported(signature) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}#{} cannot be called with JSON: its type {signature} has a {ty}",
                    interface.name, function.name
                ),
            ));
        }
        let (parts, body) = request.into_parts();
        let body = gateway.read_body(&parts.headers, body).await?;
        let arguments: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("the arguments are not JSON: {e}"),
                )
            })?
        };
        let params = wit_json::arguments(signature, &arguments).map_err(|mismatch| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "wrong arguments for {}#{} {signature}: {mismatch}",
                    interface.name, function.name
                ),
            )
            .because(&json!({ "kind": "arguments", "at": mismatch.at }))
            .into_response()
        })?;
        Ok(RpcCall {
            interface: interface.name.clone(),
            function: function.name.clone(),
            params,
            returns: signature.result.is_some(),
        })
    }

    fn hash_key(&self, _version: &LoadedVersion, _call: &RpcCall) -> Option<u64> {
        None
    }

    /// Nothing says whether a function changes anything: never repeated.
    fn is_read(&self, _call: &RpcCall) -> bool {
        false
    }

    async fn call(
        &self,
        _gateway: &Gateway,
        _version: &Arc<LoadedVersion>,
        mut lease: Lease,
        call: &RpcCall,
        trace: Option<&Trace>,
    ) -> Result<Response, CallError> {
        let mut results = vec![Val::Bool(false); usize::from(call.returns)];
        lease
            .call_export(
                0,
                trace.cloned(),
                &call.interface,
                &call.function,
                &call.params,
                &mut results,
            )
            .await?;
        let result = results.first().map_or(Value::Null, wit_json::to_json);
        Ok(axum::Json(result).into_response())
    }
}

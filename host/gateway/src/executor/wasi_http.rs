//! The executor for components that export `wasi:http/incoming-handler`
//! (the `wasi:http/proxy` world other hosts run). Bodies stream both ways:
//! the request body reaches the guest as the client sends it, and the
//! response goes out as soon as the guest sets it, its body following as the
//! guest writes; neither is held whole in the host.
//!
//! The guest keeps its instance until its handler returns, which may be after
//! the answer began: the call then runs on in a task of its own, still under
//! the service's deadline, and a failure after that point (a trap halfway
//! through the body) is reported late. A client that goes away mid-answer is
//! not the service's failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version, header};
use axum::response::Response;
use http_body::{Frame, SizeHint};

use super::{Executor, within_deadline};
use crate::Gateway;
use crate::http::error;
use switchyard_control::balance::Lease;
use switchyard_control::registry::LoadedVersion;
use switchyard_runtime::{CallError, incoming_body};

/// Runs `wasi:http` components.
pub struct WasiHttp;

/// A request as a `wasi:http` guest gets it: the path below the service's
/// name, the body still unread.
pub struct HttpCall {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// Taken by the first attempt; a retried read gets an empty body (only
    /// requests without one are retried).
    body: Mutex<Option<Body>>,
}

impl Executor for WasiHttp {
    type Call = HttpCall;

    async fn prepare(
        &self,
        _gateway: &Gateway,
        _version: &LoadedVersion,
        path: &str,
        request: Request,
    ) -> Result<HttpCall, Response> {
        let (parts, body) = request.into_parts();
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        // wasi:http gives the guest an authority: the client's Host, as
        // HTTP/1.1 requires one.
        let authority = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .map_or_else(|| "localhost".to_string(), |a| a.to_string());
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request URI: {e}")))?;
        Ok(HttpCall {
            method: parts.method,
            uri,
            version: parts.version,
            headers: parts.headers,
            body: Mutex::new(Some(body)),
        })
    }

    fn hash_key(&self, version: &LoadedVersion, call: &HttpCall) -> Option<u64> {
        let header = |name: &str| call.headers.get(name).and_then(|v| v.to_str().ok());
        version.hash_key.as_ref()?.of(call.uri.path(), header)
    }

    /// A GET or HEAD without a body: nothing was consumed that a second
    /// attempt would miss.
    fn is_read(&self, call: &HttpCall) -> bool {
        let bodiless = !call.headers.contains_key(header::TRANSFER_ENCODING)
            && call
                .headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|len| len.as_bytes() == b"0");
        matches!(call.method, Method::GET | Method::HEAD) && bodiless
    }

    async fn call(
        &self,
        gateway: &Gateway,
        version: &Arc<LoadedVersion>,
        mut lease: Lease,
        call: &HttpCall,
    ) -> Result<Response, CallError> {
        let body = call
            .body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(Body::empty);
        let mut request = axum::http::Request::new(incoming_body(body));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = call.uri.clone();
        *request.version_mut() = call.version;
        *request.headers_mut() = call.headers.clone();

        let (respond, answer) = tokio::sync::oneshot::channel();
        let deadline = version.pool.policy().limits.deadline;
        let guest = tokio::spawn(async move {
            within_deadline(deadline, lease.handle_http(request, respond)).await
            // The lease ends here: the instance goes back, or is discarded.
        });
        let name = format!("service {} {}", version.service, version.version);
        match answer.await {
            Ok(Ok(response)) => {
                let abandoned = Arc::new(AtomicBool::new(false));
                let watch = abandoned.clone();
                let (settle, settled) = tokio::sync::oneshot::channel();
                let (registry, version) = (gateway.registry.clone(), version.clone());
                tokio::spawn(async move {
                    let failure = match guest.await {
                        Ok(Err(failure)) => failure,
                        Ok(Ok(())) => {
                            let _ = settle.send(true);
                            return;
                        }
                        Err(join) => CallError::Trap(anyhow::anyhow!("{join}")),
                    };
                    // Read before the body learns of the failure: ending in
                    // an error, it is dropped unfinished too.
                    let client_gone = watch.load(Ordering::Relaxed);
                    let _ = settle.send(false);
                    if client_gone {
                        tracing::info!(service = %version.service, version = %version.version, "the client went away mid-answer: {failure}");
                    } else {
                        tracing::error!(service = %version.service, version = %version.version, "failed after answering: {failure}");
                        registry.report_late(&version, &failure).await;
                    }
                });
                Ok(response.map(|body| {
                    Body::new(Watched {
                        body,
                        settled,
                        finished: false,
                        abandoned,
                    })
                }))
            }
            Ok(Err(code)) => Ok(error(
                StatusCode::BAD_GATEWAY,
                format!("{name} answered with an error instead of a response: {code:?}"),
            )),
            // The guest's handler ended without setting a response.
            Err(_) => match guest.await {
                Ok(Err(failure)) => Err(failure),
                Ok(Ok(())) => Ok(error(
                    StatusCode::BAD_GATEWAY,
                    format!("{name} returned without setting a response"),
                )),
                Err(join) => Err(CallError::Trap(anyhow::anyhow!("{join}"))),
            },
        }
    }
}

/// A response body that ends only once the guest's handler has returned
/// well: cut short by a failure, it ends in an error (the client sees the
/// answer broken off, never a truncated body that looks whole). It also
/// notes whether the client stopped reading before the end.
struct Watched<B> {
    body: B,
    /// Whether the guest's handler returned well.
    settled: tokio::sync::oneshot::Receiver<bool>,
    finished: bool,
    abandoned: Arc<AtomicBool>,
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(frame) = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
            return Poll::Ready(Some(frame.map_err(Into::into)));
        }
        match std::task::ready!(Pin::new(&mut self.settled).poll(cx)) {
            Ok(true) => {
                self.finished = true;
                Poll::Ready(None)
            }
            _ => Poll::Ready(Some(Err(
                "the service failed before finishing its answer".into()
            ))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if !self.finished {
            self.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

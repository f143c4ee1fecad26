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
use switchyard_control::registry::{LoadedVersion, Registry};
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
        let name = || format!("service {} {}", version.service, version.version);
        match answer.await {
            Ok(Ok(response)) => Ok(response.map(|body| {
                Body::new(Watched {
                    body,
                    guest: Some(guest),
                    registry: gateway.registry.clone(),
                    version: version.clone(),
                })
            })),
            Ok(Err(code)) => Ok(error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{} answered with an error instead of a response: {code:?}",
                    name()
                ),
            )),
            // The guest's handler ended without setting a response.
            Err(_) => match failure(guest.await) {
                Some(failure) => Err(failure),
                None => Ok(error(
                    StatusCode::BAD_GATEWAY,
                    format!("{} returned without setting a response", name()),
                )),
            },
        }
    }
}

/// The guest's handler, running on after its answer began.
type Guest = tokio::task::JoinHandle<Result<(), CallError>>;

/// How the guest's handler failed, if it did (a panic of its task is a trap).
fn failure(outcome: Result<Result<(), CallError>, tokio::task::JoinError>) -> Option<CallError> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(failure)) => Some(failure),
        Err(join) => Some(CallError::Trap(anyhow::anyhow!("{join}"))),
    }
}

/// A response body that ends only once the guest's handler has returned
/// well: cut short by a failure, it ends in an error (the client sees the
/// answer broken off, never a truncated body that looks whole), and the
/// failure counts against the version. A client that stops reading before
/// the end is not the version's failure: then the guest's outcome is only
/// logged. It waits for the guest itself, so that a request that goes well
/// costs no task beyond the guest's.
struct Watched<B> {
    body: B,
    /// Until its outcome is known.
    guest: Option<Guest>,
    registry: Arc<Registry>,
    version: Arc<LoadedVersion>,
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(guest) = this.guest.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(frame) = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            return Poll::Ready(Some(frame.map_err(Into::into)));
        }
        let outcome = std::task::ready!(Pin::new(guest).poll(cx));
        this.guest = None;
        let Some(failure) = failure(outcome) else {
            return Poll::Ready(None);
        };
        let (registry, version) = (this.registry.clone(), this.version.clone());
        tracing::error!(service = %version.service, version = %version.version, "failed after answering: {failure}");
        tokio::spawn(async move { registry.report_late(&version, &failure).await });
        Poll::Ready(Some(Err(
            "the service failed before finishing its answer".into()
        )))
    }

    fn is_end_stream(&self) -> bool {
        self.guest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    /// The client went away mid-answer: the guest runs on to its end (its
    /// instance is then recycled or discarded as usual), and how it ended
    /// is logged.
    fn drop(&mut self) {
        let Some(guest) = self.guest.take() else {
            return;
        };
        let version = self.version.clone();
        tokio::spawn(async move {
            if let Some(failure) = failure(guest.await) {
                tracing::info!(service = %version.service, version = %version.version, "the client went away mid-answer: {failure}");
            }
        });
    }
}

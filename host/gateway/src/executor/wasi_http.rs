//! The executor for components that export `wasi:http/incoming-handler`
//! (the `wasi:http/proxy` world other hosts run). Bodies stream both ways:
//! the request body reaches the guest as the client sends it, and the
//! response goes out as soon as the guest sets it, its body following as the
//! guest writes; neither is held whole in the host.
//!
//! The guest keeps its instance until its handler returns, which may be after
//! the answer began: the call then runs on in a task of its own, still under
//! the service's deadline, and a failure after that point (a trap halfway
//! through the body) is reported late. Every handler's end is watched, also
//! when its client left before the answer began. A client that goes away
//! mid-answer is not the service's failure. A handler that returns without
//! setting a response has failed (a 500), as in `wasmtime serve`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Buf as _;

use super::{Executor, within_deadline};
use crate::Gateway;
use crate::http::{ApiError, error};
use switchyard_control::balance::Lease;
use switchyard_control::registry::{LoadedVersion, Registry};
use switchyard_runtime::{CallError, incoming_body};
use switchyard_trace::Trace;

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
        let authority =
            authority(&parts.uri, &parts.headers).map_err(IntoResponse::into_response)?;
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
        trace: Option<&Trace>,
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
        let trace = trace.cloned();
        let deadline = version.pool.policy().limits.deadline;
        let outcome = Outcome {
            registry: gateway.registry.clone(),
            version: version.clone(),
        };
        let mut guest = Running {
            guest: Some(tokio::spawn(async move {
                let handled =
                    lease.run(async |guest| guest.handle_http(request, respond, trace).await);
                within_deadline(deadline, handled).await
                // The lease ends here: the instance goes back, or is discarded.
            })),
            outcome: outcome.clone(),
        };
        let name = || format!("service {} {}", version.service, version.version);
        match answer.await {
            Ok(Ok(response)) => {
                let remaining = response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|len| len.to_str().ok()?.parse().ok());
                Ok(response.map(|body| {
                    Body::new(Watched {
                        body: Some(body),
                        guest: guest.take(),
                        remaining,
                        outcome,
                    })
                }))
            }
            Ok(Err(code)) => Ok(error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{} answered with an error instead of a response: {code:?}",
                    name()
                ),
            )),
            // The guest's handler ended without setting a response: its own
            // failure, as a trap is (wasmtime serve answers 500 too).
            Err(_) => match failure(guest.take().expect("not yet taken").await) {
                Some(failure) => Err(failure),
                None => Err(CallError::Trap(
                    anyhow::anyhow!("its wasi:http handler returned without setting a response")
                        .into(),
                )),
            },
        }
    }
}

/// The guest's handler, until the request's answer takes it over. A request
/// dropped before that (its client went away while the guest had not
/// answered) leaves the handler running: how it ends is still watched, and
/// a failure is logged and counted against the version like any other,
/// since the guest never learnt that the client left.
struct Running {
    guest: Option<Guest>,
    outcome: Outcome,
}

impl Running {
    fn take(&mut self) -> Option<Guest> {
        self.guest.take()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(guest) = self.guest.take() else {
            return;
        };
        self.outcome
            .clone()
            .follow(guest, Afterwards::Unanswered, async {});
    }
}

/// When a guest's handler ended, relative to its answer: what a failure
/// then counts as.
#[derive(Clone, Copy)]
enum Afterwards {
    /// Its client left before any answer: a failure like any other.
    Unanswered,
    /// Its answer had begun, or was complete: a late failure.
    Answered,
    /// Its client left mid-answer: logged, never counted (a client that
    /// leaves must not be able to fail a version over).
    Abandoned,
}

/// Where the outcome of a guest's handler goes: the version's log lines
/// and its failover accounting.
#[derive(Clone)]
struct Outcome {
    registry: Arc<Registry>,
    version: Arc<LoadedVersion>,
}

impl Outcome {
    /// Log and count `failure` as `afterwards` says.
    fn failed(&self, failure: &CallError, afterwards: Afterwards) {
        let version = &self.version;
        let (service, number) = (&version.service, &version.version);
        match afterwards {
            Afterwards::Unanswered => {
                tracing::error!(service = %service, version = %number, "failed after its client went away: {failure}");
                self.registry.report(version, Some(failure));
            }
            Afterwards::Answered => {
                tracing::error!(service = %service, version = %number, "failed after answering: {failure}");
                self.registry.report_late(version, failure);
            }
            Afterwards::Abandoned => {
                tracing::info!(service = %service, version = %number, "the client went away mid-answer: {failure}");
            }
        }
    }

    /// Off the request: once `first` is done, wait for `guest` to end and
    /// take its failure, if any, as `afterwards` says.
    fn follow(
        self,
        guest: Guest,
        afterwards: Afterwards,
        first: impl Future<Output = ()> + Send + 'static,
    ) {
        tokio::spawn(async move {
            first.await;
            if let Some(failure) = failure(guest.await) {
                self.failed(&failure, afterwards);
            }
        });
    }
}

/// The authority a `wasi:http` guest is given, as wasmtime gives it: the
/// request's own when it came in absolute form (`GET http://host/x`, which
/// wins over its Host header, RFC 9112 §3.2.2), else its Host header. A
/// request with neither names no host: a 400, as HTTP/1.1 asks of a
/// request without Host (RFC 9112 §3.2).
fn authority(uri: &Uri, headers: &HeaderMap) -> Result<Authority, ApiError> {
    if let Some(authority) = uri.authority() {
        return Ok(authority.clone());
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request must name its host in exactly one Host header",
        ));
    };
    host.to_str()
        .ok()
        .and_then(|h| h.parse::<Authority>().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the Host header {host:?} is not a valid host"),
            )
        })
}

/// The guest's handler, running on after its answer began.
type Guest = tokio::task::JoinHandle<Result<(), CallError>>;

/// How the guest's handler failed, if it did (a panic of its task is a trap).
fn failure(outcome: Result<Result<(), CallError>, tokio::task::JoinError>) -> Option<CallError> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(failure)) => Some(failure),
        Err(join) => Some(CallError::Trap(anyhow::anyhow!("{join}").into())),
    }
}

/// A response body that ends only once the guest's handler has returned
/// well: cut short by a failure, it ends in an error (the client sees the
/// answer broken off, never a truncated body that looks whole), and the
/// failure counts against the version. A client that stops reading before
/// the end is not the version's failure: then the guest's outcome is only
/// logged. It waits for the guest itself, so that a request that goes well
/// costs no task beyond the guest's.
struct Watched<B: http_body::Body + Unpin + Send + 'static> {
    /// Until the connection lets go of the answer.
    body: Option<B>,
    /// Until its outcome is known.
    guest: Option<Guest>,
    /// Bytes the answer's content-length still promises, when it has one.
    remaining: Option<u64>,
    outcome: Outcome,
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body + Unpin + Send + 'static,
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
        if let Some(body) = this.body.as_mut()
            && let Some(frame) = std::task::ready!(Pin::new(body).poll_frame(cx))
        {
            if let (Ok(frame), Some(remaining)) = (&frame, this.remaining.as_mut())
                && let Some(data) = frame.data_ref()
            {
                *remaining = remaining.saturating_sub(data.remaining() as u64);
            }
            return Poll::Ready(Some(frame.map_err(Into::into)));
        }
        let outcome = std::task::ready!(Pin::new(guest).poll(cx));
        this.guest = None;
        let Some(failure) = failure(outcome) else {
            return Poll::Ready(None);
        };
        this.outcome.failed(&failure, Afterwards::Answered);
        Poll::Ready(Some(Err(
            "the service failed before finishing its answer".into()
        )))
    }

    fn is_end_stream(&self) -> bool {
        self.guest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(SizeHint::default, http_body::Body::size_hint)
    }
}

impl<B: http_body::Body + Unpin + Send + 'static> Drop for Watched<B> {
    fn drop(&mut self) {
        let Some(guest) = self.guest.take() else {
            return;
        };
        let body = self.body.take();
        let outcome = self.outcome.clone();
        if self.remaining == Some(0) {
            // The whole answer was sent: the connection is done with it
            // (hyper lets go of a body once its content-length is met), but
            // the guest may still be flushing and finishing its stream. Its
            // stream stays open until it returns, so that finishing a
            // complete answer never fails, and how it ends is its own.
            let drained = async move {
                // Whatever else it sends (the end of the stream) goes nowhere.
                if let Some(mut body) = body {
                    while let Some(Ok(_)) = body.frame().await {}
                }
            };
            outcome.follow(guest, Afterwards::Answered, drained);
            return;
        }
        // The client went away mid-answer: the guest runs on to its end
        // (its writes now fail; its instance is then recycled or discarded
        // as usual).
        drop(body);
        outcome.follow(guest, Afterwards::Abandoned, async {});
    }
}

//! A live instance: its store (WASI context, resources, platform view,
//! limits, deadline), instantiating it from a linked component, calling its
//! entry points and exports, and telling how a call failed ([`CallError`]).
//! It serves one call at a time; pooling instances is control's business.

use std::time::Instant;

use anyhow::{Result, anyhow};
use http_body_util::BodyExt;
use wasmtime::component::{ComponentExportIndex, Instance, Resource, ResourceTable, Val};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::engine::Runtime;
use crate::error::{CallError, DependencyFailure, MAX_CALL_DATA, Trap};
use crate::guest_output::{CallOutput, GuestOutput};
use crate::incoming::{self, Handler2, IncomingRequest};
use crate::link::EntryIndices;
use crate::link::Linked;
use crate::outbound::Outbound;
use crate::state::{DEFAULT_RETAINED_FACTOR, DEFAULT_RETAINED_FLOOR, Limits, ServiceState};

use switchyard_platform::{self as platform, Platform, ServiceBindings, handler};
use switchyard_trace::Trace;

impl Runtime {
    /// A fresh instance, with its own store, acting for `platform.service`.
    pub async fn instantiate(
        &self,
        linked: &Linked,
        platform: Platform,
        limits: Limits,
    ) -> Result<LiveInstance> {
        // Deliberately empty: no preopened directories, no environment, no
        // arguments, no sockets. Only clocks and random reach the host, and
        // stdout and stderr reach its log.
        let output = CallOutput::default();
        let stream =
            |name| GuestOutput::new(&platform.service, &platform.version, name, output.clone());
        let wasi = WasiCtx::builder()
            .stdout(stream("stdout"))
            .stderr(stream("stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let outbound = Outbound {
            service: platform.service.clone(),
            allowed: linked.allowed.clone(),
        };
        let state = ServiceState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound,
            output,
            platform,
            limits,
            deadline: None,
            depth: 0,
            timed_out: false,
            out_of_memory: false,
            memory_size: 0,
            initial_memory: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.set_hostcall_fuel(MAX_CALL_DATA);
        // Every epoch tick a running guest yields to the executor; once its
        // call is past the deadline, it is interrupted instead.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            if state.deadline.is_some_and(|d| Instant::now() >= d) {
                state.timed_out = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let instance = linked.pre.instantiate_async(&mut store).await?;
        let state = store.data_mut();
        state.initial_memory = state.memory_size;
        let entry = match &linked.entry {
            EntryIndices::Handler(indices) => Entry::Handler(indices.load(&mut store, &instance)?),
            EntryIndices::Handler2(indices) => {
                Entry::Handler2(indices.load(&mut store, &instance)?)
            }
            EntryIndices::WasiHttp(indices) => {
                Entry::WasiHttp(indices.load(&mut store, &instance)?)
            }
            EntryIndices::Interfaces => Entry::Interfaces,
        };
        Ok(LiveInstance {
            store,
            instance,
            entry,
        })
    }
}

/// One instantiated service with its own store. Serves one call at a time.
pub struct LiveInstance {
    store: Store<ServiceState>,
    instance: Instance,
    /// Where the host enters it, by its kind.
    entry: Entry,
}

/// An instance's entry point, by the kind of its component.
enum Entry {
    Handler(ServiceBindings),
    Handler2(Handler2),
    WasiHttp(Proxy),
    /// An interface-only service: entered through its exports alone.
    Interfaces,
}

/// A request body as a `wasi:http` guest reads it (see [`incoming_body`]).
pub type IncomingBody = wasmtime_wasi_http::p2::body::HyperIncomingBody;

/// `body`, streamed, as a `wasi:http` guest reads it.
pub fn incoming_body<B>(body: B) -> IncomingBody
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
        .boxed_unsync()
}

/// Where a `wasi:http` guest's response goes, as soon as it sets it (the
/// guest may go on writing the body after that).
pub type HttpResponder =
    tokio::sync::oneshot::Sender<Result<http::Response<HyperOutgoingBody>, ErrorCode>>;

impl LiveInstance {
    /// Hand one HTTP request to the guest's handler, in `trace` if traced.
    pub async fn handle(
        &mut self,
        request: &handler::Request,
        trace: Option<Trace>,
    ) -> Result<handler::Response, CallError> {
        let Entry::Handler(bindings) = &self.entry else {
            return Err(CallError::Trap(
                anyhow!("exports no {}", platform::HANDLER_INTERFACE).into(),
            ));
        };
        let handler = bindings.switchyard_platform_handler().clone();
        self.begin(0, trace);
        let outcome = handler.call_handle(&mut self.store, request).await;
        self.finish(outcome)
    }

    /// Lend one HTTP request to the guest's `handler2`, for the call, in
    /// `trace` if traced.
    pub async fn handle_lent(
        &mut self,
        request: &IncomingRequest,
        trace: Option<Trace>,
    ) -> Result<incoming::Response, CallError> {
        let Entry::Handler2(handler) = &self.entry else {
            return Err(CallError::Trap(
                anyhow!("exports no {}", platform::HANDLER2_INTERFACE).into(),
            ));
        };
        let handler = handler.clone();
        let table = &mut self.store.data_mut().table;
        let lent = table
            .push(request.clone())
            .map_err(|e| CallError::Trap(anyhow::Error::from(e).into()))?;
        // The guest holds a borrow, which ends with the call: the request
        // is the host's again afterwards, whatever the guest did.
        let borrowed = Resource::new_borrow(lent.rep());
        self.begin(0, trace);
        let outcome = handler.call_handle(&mut self.store, borrowed).await;
        let returned = self.store.data_mut().table.delete(lent);
        let response = self.finish(outcome)?;
        returned.map_err(|e| CallError::Trap(anyhow::Error::from(e).into()))?;
        Ok(response)
    }

    /// Hand one HTTP request to the guest's `wasi:http` handler. Its
    /// response goes to `respond` when the guest sets it; this returns when
    /// the guest's handler returns (after writing the body, usually). In
    /// `trace` if traced.
    pub async fn handle_http(
        &mut self,
        request: http::Request<IncomingBody>,
        respond: HttpResponder,
        trace: Option<Trace>,
    ) -> Result<(), CallError> {
        let Entry::WasiHttp(proxy) = &self.entry else {
            return Err(CallError::Trap(
                anyhow!("exports no wasi:http/incoming-handler").into(),
            ));
        };
        let handler = proxy.wasi_http_incoming_handler().clone();
        let mut http = self.store.data_mut().http();
        let prepared = http
            .new_incoming_request(Scheme::Http, request)
            .and_then(|request| Ok((request, http.new_response_outparam(respond)?)));
        let (request, response) =
            prepared.map_err(|e| CallError::Trap(anyhow::Error::from(e).into()))?;
        self.begin(0, trace);
        let outcome = handler
            .call_handle(&mut self.store, request, response)
            .await;
        self.finish(outcome)
    }

    /// Call an exported interface function with dynamically typed values, on
    /// behalf of a caller `depth` service-to-service calls deep, in `trace`
    /// if traced.
    pub async fn call_export(
        &mut self,
        depth: u32,
        trace: Option<Trace>,
        index: &ComponentExportIndex,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallError> {
        let Some(func) = self.instance.get_func(&mut self.store, index) else {
            return Err(CallError::Trap(
                anyhow!("the exported function is missing").into(),
            ));
        };
        self.begin(depth, trace);
        let outcome = func.call_async(&mut self.store, params, results).await;
        self.finish(outcome)
    }

    /// Whether the call in progress (or the last) asked the store to change
    /// anything: a call that did is not safe to repeat.
    pub fn wrote_during_call(&self) -> bool {
        self.store.data().platform.wrote()
    }

    /// Whether it is better replaced than kept for the next call: its memory
    /// has grown to within an eighth of its limit (a guest whose heap only
    /// grows, as some JavaScript engines' does, would otherwise fail a call
    /// at the limit), or beyond what it may retain (memory a burst of large
    /// calls grew would otherwise stay resident for good: linear memory
    /// never shrinks, and a replaced instance's memory goes back to the
    /// system).
    pub fn grew_too_large(&self) -> bool {
        let state = self.store.data();
        let limits = &state.limits;
        let retained = limits.retained_memory_bytes.unwrap_or_else(|| {
            (DEFAULT_RETAINED_FACTOR * state.initial_memory).max(DEFAULT_RETAINED_FLOOR)
        });
        state.memory_size >= limits.memory_bytes - limits.memory_bytes / 8
            || state.memory_size > retained
    }

    fn begin(&mut self, depth: u32, trace: Option<Trace>) {
        let state = self.store.data_mut();
        state.deadline = Some(Instant::now() + state.limits.deadline);
        state.depth = depth;
        state.platform.begin_call(trace);
        state.output.refill(tracing::Span::current());
        state.timed_out = false;
        state.out_of_memory = false;
    }

    fn finish<R>(&mut self, outcome: wasmtime::Result<R>) -> Result<R, CallError> {
        let state = self.store.data_mut();
        state.deadline = None;
        state.platform.end_call();
        let error = match outcome {
            Ok(value) => return Ok(value),
            Err(e) => anyhow::Error::from(e),
        };
        Err(if state.timed_out {
            CallError::Timeout(state.limits.deadline)
        } else if state.out_of_memory {
            CallError::OutOfMemory(state.limits.memory_bytes >> 20)
        } else if let Some(failure) = error.downcast_ref::<DependencyFailure>() {
            CallError::Dependency(failure.clone())
        } else if is_out_of_hostcall_fuel(&error) {
            CallError::TooMuchData
        } else {
            CallError::Trap(Trap {
                error,
                stderr: state.output.stderr(),
            })
        })
    }
}

/// Whether wasmtime refused to copy more data out of the guest. Its error
/// type is private, so it is known by its message.
fn is_out_of_hostcall_fuel(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.to_string().contains("fuel allocated for hostcalls"))
}

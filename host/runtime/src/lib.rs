//! The one crate that knows wasmtime in depth: the [`Engine`], compiling
//! components, building each component's [`Linker`], and running instances.
//!
//! It owns the rules of what a guest may touch: the platform imports, a WASI
//! environment with no files, network, environment variables or arguments, a
//! memory cap, call deadlines enforced by epoch interruption, and cooperative
//! yielding so that a busy guest cannot starve the gateway; and it tells how a
//! call failed ([`CallError`]). It calls a guest's HTTP entry point in each
//! of its forms: `handler` (the request copied in as a record), `handler2`
//! (the request lent, [`incoming`]) and `wasi:http`. It knows nothing of the
//! registry: calls to other services leave through [`ServiceCalls`],
//! supplied by whoever links the component.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, ComponentExportIndex, Instance, InstancePre, Linker, Resource, ResourceTable,
};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    ProfilingStrategy, ResourceLimiter, Store, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyIndices};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use guest_output::{GuestOutput, OutputBudget};
use incoming::{Handler2, IncomingRequest};
use outbound::{AllowedHosts, Outbound};

use switchyard_platform::{
    self as platform, HandlerIndices, Platform, PlatformView, ServiceBindings, handler,
};

/// How often the epoch advances. Every tick, a running guest yields to the async
/// executor, so a long computation delays other requests by at most this much
/// per guest ahead of them on a worker (a yield costs about a microsecond;
/// 10 ms let four computing guests push other services' p99 to 25 ms, 2 ms
/// keeps it near 6 ms: see BENCHMARKS.md, fairness). Deadlines are checked at
/// each tick too.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The most linear memory any instance may be given (a service's own cap,
/// `limits.memory_mib`, is at most this): the size of one pooled memory slot.
pub const MEMORY_CEILING: usize = 256 << 20;

/// The most data one call may hand the host: a response (status, headers and
/// body together), or the arguments of one import call. wasmtime counts it
/// ("hostcall fuel"); past it the call fails with [`CallError::TooMuchData`].
pub const MAX_CALL_DATA: usize = 128 << 20;

/// Instances the pooling allocator has room for by default, across all
/// services and versions (`--pool-instances`): with the default of at most 4
/// per version, ample for dozens of services, while the virtual address space
/// it reserves stays modest.
pub const POOLED_INSTANCES: u32 = 256;

/// Interfaces the guest's standard library imports and wasmtime-wasi provides,
/// configured below so that they reach nothing outside the instance; and
/// `wasi:http`, which wasmtime-wasi-http provides (outgoing requests only to
/// the hosts a service allows: [`outbound`]).
const WASI_SYSTEM_PREFIXES: [&str; 7] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
];

/// The export of a component that serves HTTP the standard way
/// (`wasi:http/proxy`): its name, at any 0.2 version, starts with this.
pub const WASI_HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.";

mod guest_output;
pub mod incoming;
pub mod json;
mod kind;
pub use kind::ComponentKind;
pub mod outbound;
pub use wasmtime::component::Val;
mod signature;
pub use signature::{Signature, WitType};

/// A boxed future, as the dynamic-call seam needs.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a component's calls to another service's interface go.
pub trait ServiceCalls: Send + Sync + 'static {
    /// Call `function` of `interface` on whichever service provides it now,
    /// on behalf of a caller at call depth `depth`.
    fn call<'a>(
        &'a self,
        depth: u32,
        interface: &'a str,
        function: &'a str,
        params: &'a [Val],
        results: &'a mut [Val],
    ) -> BoxFuture<'a, Result<()>>;
}

/// What a service may use, per instance and per call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// An instance whose memory grew beyond this is replaced once its call
    /// ends, so that a burst of large calls does not keep its memory
    /// resident for good; `None`: [`DEFAULT_RETAINED_FACTOR`] times the
    /// instance's initial memory, at least [`DEFAULT_RETAINED_FLOOR`].
    pub retained_memory_bytes: Option<usize>,
    /// How long one call may run.
    pub deadline: Duration,
    /// How deep a chain of service-to-service calls may go.
    pub call_depth: u32,
}

/// Without a setting, an instance may keep this many times the memory it
/// started with between calls.
pub const DEFAULT_RETAINED_FACTOR: usize = 4;
/// Without a setting, an instance may always keep this much memory between
/// calls: small guests' ordinary calls never replace their instance.
pub const DEFAULT_RETAINED_FLOOR: usize = 16 << 20;

/// How a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// It ran past its deadline and was interrupted.
    #[error("did not finish within {0:?}")]
    Timeout(Duration),
    /// It tried to grow its memory past the service's limit.
    #[error("tried to use more than its memory limit of {0} MiB")]
    OutOfMemory(usize),
    /// No instance could be started (the component's start-up failed, or the
    /// host has no room for another instance).
    #[error("cannot start an instance: {0:#}")]
    Start(anyhow::Error),
    /// It tried to hand the host more than [`MAX_CALL_DATA`] bytes at once.
    #[error("tried to hand the host more than {} MiB in one call", MAX_CALL_DATA >> 20)]
    TooMuchData,
    /// A call it made to another service failed; the message names that service.
    #[error("{0}")]
    Dependency(DependencyFailure),
    /// The guest trapped (a panic, a stack overflow, ...).
    #[error("trapped: {0:#}")]
    Trap(anyhow::Error),
}

/// A call to another service's interface failed (that service trapped, timed
/// out, is unavailable...). The error a guest's import call fails with, so the
/// caller's own failure can be told from its dependency's by downcasting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}")]
pub struct DependencyFailure {
    pub interface: String,
    pub function: String,
    /// What went wrong, naming the service that was called.
    pub cause: String,
}

/// What a guest's store holds: its WASI context, its resources, its platform
/// view, and what the host tracks about the call in progress.
pub struct ServiceState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: Outbound,
    /// What the call in progress may still write to stdout and stderr.
    output_budget: OutputBudget,
    platform: Platform,
    limits: Limits,
    /// When the call in progress must end.
    deadline: Option<Instant>,
    /// How many service-to-service calls deep the call in progress is.
    depth: u32,
    timed_out: bool,
    out_of_memory: bool,
    /// The largest linear memory the instance has grown to.
    memory_size: usize,
    /// Its linear memory once instantiated.
    initial_memory: usize,
}

impl ResourceLimiter for ServiceState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limits.memory_bytes;
        self.out_of_memory |= !allowed;
        if allowed {
            self.memory_size = self.memory_size.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for ServiceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ServiceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

fn platform_view(state: &mut ServiceState) -> PlatformView<'_> {
    PlatformView::new(&mut state.platform, &mut state.table)
}

/// Who provides an imported or exported interface of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// wasmtime-wasi: clocks, random, and closed stdio, files and sockets.
    WasiSystem,
    /// This host's platform interfaces (imported), or the entry points the
    /// host calls (exported: the handler, recovery).
    Platform,
    /// Another service.
    Service,
    /// The component itself: a plain name, not an `ns:pkg/iface`
    /// interface, which a guest toolchain leaves in what it builds (such as
    /// componentize-py's `init` and `exports`). Never another service's.
    Toolchain,
}

/// One interface a component imports or exports.
#[derive(Debug, Clone)]
pub struct InterfaceUse {
    pub name: String,
    pub functions: Vec<FunctionUse>,
    pub uses_resources: bool,
}

/// One function of an interface, with its type.
#[derive(Debug, Clone)]
pub struct FunctionUse {
    pub name: String,
    pub signature: Signature,
}

impl InterfaceUse {
    pub fn provider(&self) -> Provider {
        let name = self.name.as_str();
        if !name.contains(':') {
            Provider::Toolchain
        } else if platform::INTERFACES.contains(&name)
            || platform::ENTRY_POINTS.contains(&name)
            || name == incoming::INTERFACE
        {
            Provider::Platform
        } else if WASI_SYSTEM_PREFIXES
            .iter()
            .any(|p| self.name.starts_with(p))
        {
            Provider::WasiSystem
        } else {
            Provider::Service
        }
    }
}

/// How much of a recycled memory (and table) is reset in place rather than
/// handed back to the kernel. Handing pages back (`madvise`) flushes the TLB
/// of every core running the host, with an interrupt to each; with a fresh
/// instance per request it was the largest cost of a request (`make bench`,
/// hello per request: over 50 µs of its ~150 µs, in the kernel's
/// `smp_call_function_many_cond`). With `PAGEMAP_SCAN` (Linux 6.7+) only the
/// pages a guest dirtied are reset, up to this much; a guest that dirties
/// more has the rest handed back as before. At most this much stays resident
/// per memory slot that has been used.
const KEEP_RESIDENT: usize = 256 << 10;

/// Where each exported function of a component lives, by interface and
/// function name: looked up on every service-to-service call, with the
/// caller's borrowed names (no key to build).
#[derive(Default)]
pub struct ExportIndices(HashMap<String, HashMap<String, ComponentExportIndex>>);

impl ExportIndices {
    pub fn get(&self, interface: &str, function: &str) -> Option<ComponentExportIndex> {
        self.0.get(interface)?.get(function).copied()
    }
}

/// The engine and the linker every component starts from.
///
/// Instances come from wasmtime's pooling allocator: memory, tables and
/// stacks are reserved once up front and recycled, so creating an instance
/// costs tens of microseconds (see BENCHMARKS.md).
pub struct Runtime {
    engine: Engine,
    base_linker: Linker<ServiceState>,
}

impl Runtime {
    /// An engine with room for `instances` instances at once. With
    /// `perf_map`, the names of the guests' compiled functions are written to
    /// `/tmp/perf-<pid>.map`, where `perf` finds them: a profile of the host
    /// then names guest code too.
    pub fn new(instances: u32, perf_map: bool) -> Result<Runtime> {
        let mut pooling = PoolingAllocationConfig::new();
        // Per component instance, room for what the guest toolchains build:
        // core instances are one per core module (Rust 3, QuickJS 8,
        // componentize-py 14), memories and tables at most 2 each. Unused
        // room costs nothing for core instances, address space only for the rest.
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(MEMORY_CEILING)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        if perf_map {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let mut base_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut base_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut base_linker)?;
        platform::add_to_linker(&mut base_linker, platform_view)?;
        incoming::add_to_linker(&mut base_linker, |state| &mut state.table)?;
        Ok(Runtime {
            engine,
            base_linker,
        })
    }

    /// Compile `bytes`, or load the result of an earlier compilation from
    /// `cache_dir`. The cache key is the SHA-256 of the bytes and the engine's
    /// compatibility hash (wasmtime version, compiler settings, CPU features), so
    /// an entry is only ever loaded by an engine that could have written it.
    pub fn compile_cached(&self, bytes: &[u8], cache_dir: &Path) -> Result<Compiled> {
        let started = Instant::now();
        let digest = digest(bytes);
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let entry = cache_dir.join(format!("{digest}-{:016x}.cwasm", engine_hash.finish()));
        if entry.exists() {
            // SAFETY: the entry was written by `Component::serialize` below, into
            // the host's own data directory, by an engine with this same hash.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(&self.engine, &entry) };
            match cached {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        digest,
                        from_cache: true,
                        compile_time: started.elapsed(),
                    });
                }
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), "ignoring an unreadable cache entry: {e:#}")
                }
            }
        }
        let component = self.compile(bytes)?;
        if let Err(e) = write_cache_entry(&component, &entry) {
            tracing::warn!(entry = %entry.display(), "cannot cache a compiled component: {e:#}");
        }
        Ok(Compiled {
            component,
            digest,
            from_cache: false,
            compile_time: started.elapsed(),
        })
    }

    /// Compile `bytes`, refusing anything that is not a component.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component> {
        if bytes.is_empty() {
            bail!("the file is empty");
        }
        if !bytes.starts_with(b"\0asm") {
            bail!("not a WebAssembly file (no \\0asm header)");
        }
        if is_core_module(bytes) {
            bail!("a core WebAssembly module, not a component (build for wasm32-wasip2)");
        }
        Component::new(&self.engine, bytes).map_err(|e| {
            let detail = format!("{e:#}");
            if detail.contains("requires the component model async feature") {
                anyhow!(
                    "built for the component-model async ABI ({detail}), which this host does \
                     not run: build it for the synchronous ABI (componentize-qjs --sync, say)"
                )
            } else {
                anyhow!("not a valid component: {detail}")
            }
        })
    }

    /// The interfaces `component` imports.
    pub fn imports(&self, component: &Component) -> Vec<InterfaceUse> {
        let ty = component.component_type();
        ty.imports(&self.engine)
            .map(|(name, item)| self.interface_use(name, &item.ty))
            .collect()
    }

    /// The interfaces `component` exports.
    pub fn exports(&self, component: &Component) -> Vec<InterfaceUse> {
        let ty = component.component_type();
        ty.exports(&self.engine)
            .map(|(name, item)| self.interface_use(name, &item.ty))
            .collect()
    }

    fn interface_use(&self, name: &str, item: &ComponentItem) -> InterfaceUse {
        let mut use_ = InterfaceUse {
            name: name.to_string(),
            functions: Vec::new(),
            uses_resources: false,
        };
        if let ComponentItem::ComponentInstance(instance) = item {
            for (export, item) in instance.exports(&self.engine) {
                match item.ty {
                    ComponentItem::ComponentFunc(ty) => use_.functions.push(FunctionUse {
                        name: export.to_string(),
                        signature: Signature::from(&ty),
                    }),
                    ComponentItem::Resource(_) => use_.uses_resources = true,
                    _ => {}
                }
            }
        }
        use_
    }

    /// Link `component`: platform and WASI imports to the host, every other
    /// imported interface to `calls`, outgoing HTTP to the `allowed` hosts.
    /// Fails when an import cannot be satisfied or the component exports a
    /// handler of the wrong type.
    pub fn link(
        &self,
        component: &Component,
        calls: Arc<dyn ServiceCalls>,
        allowed: AllowedHosts,
    ) -> Result<Linked> {
        let mut linker = self.base_linker.clone();
        for import in self.imports(component) {
            if import.provider() != Provider::Service {
                continue;
            }
            let mut instance = linker.instance(&import.name)?;
            for function in &import.functions {
                let calls = calls.clone();
                let (interface, function_name) = (import.name.clone(), function.name.clone());
                instance.func_new_async(&function.name, move |store, _ty, params, results| {
                    let calls = calls.clone();
                    let interface = interface.clone();
                    let function = function_name.clone();
                    Box::new(async move {
                        let depth = store.data().depth;
                        calls
                            .call(depth, &interface, &function, params, results)
                            .await
                            // Typed, so that the caller's trap can be told
                            // apart from a failure of the service it called.
                            .map_err(|e| {
                                wasmtime::Error::new(DependencyFailure {
                                    interface: interface.clone(),
                                    function: function.clone(),
                                    cause: format!("{e:#}"),
                                })
                            })
                    })
                })?;
            }
        }
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| anyhow!("{e:#}"))?;
        let handler = component
            .get_export_index(None, platform::HANDLER_INTERFACE)
            .map(|_| HandlerIndices::new(&pre))
            .transpose()
            .map_err(|e| {
                anyhow!(
                    "does not export a usable {}: {e:#}",
                    platform::HANDLER_INTERFACE
                )
            })?;
        let handler2 = component
            .get_export_index(None, platform::HANDLER2_INTERFACE)
            .map(|_| incoming::GuestIndices::new(&pre))
            .transpose()
            .map_err(|e| {
                anyhow!(
                    "does not export a usable {}: {e:#}",
                    platform::HANDLER2_INTERFACE
                )
            })?;
        // Names only: the exports' types are the loader's business.
        let exports_wasi_http = component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with(WASI_HTTP_HANDLER));
        let proxy = exports_wasi_http
            .then(|| ProxyIndices::new(&pre))
            .transpose()
            .map_err(|e| anyhow!("does not export a usable wasi:http/incoming-handler: {e:#}"))?;
        Ok(Linked {
            pre,
            handler,
            handler2,
            proxy,
            allowed,
        })
    }

    /// Where each exported function of `interfaces` lives in `component`.
    pub fn export_indices(
        &self,
        component: &Component,
        interfaces: &[InterfaceUse],
    ) -> ExportIndices {
        let mut indices = ExportIndices::default();
        for interface in interfaces {
            let Some((_, iface)) = component.get_export(None, &interface.name) else {
                continue;
            };
            for function in &interface.functions {
                if let Some((_, func)) = component.get_export(Some(&iface), &function.name) {
                    indices
                        .0
                        .entry(interface.name.clone())
                        .or_default()
                        .insert(function.name.clone(), func);
                }
            }
        }
        indices
    }

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
        let output_budget = OutputBudget::default();
        let output = |stream| {
            GuestOutput::new(
                &platform.service,
                &platform.version,
                stream,
                output_budget.clone(),
            )
        };
        let wasi = WasiCtx::builder()
            .stdout(output("stdout"))
            .stderr(output("stderr"))
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
            output_budget,
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
        let handler = linked
            .handler
            .as_ref()
            .map(|indices| indices.load(&mut store, &instance))
            .transpose()?;
        let handler2 = linked
            .handler2
            .as_ref()
            .map(|indices| indices.load(&mut store, &instance))
            .transpose()?;
        let proxy = linked
            .proxy
            .as_ref()
            .map(|indices| indices.load(&mut store, &instance))
            .transpose()?;
        Ok(LiveInstance {
            store,
            instance,
            handler,
            handler2,
            proxy,
        })
    }
}

/// A component linked to the host, ready to instantiate.
pub struct Linked {
    pre: InstancePre<ServiceState>,
    /// Where its HTTP handler is, if it exports one (an interface-only
    /// service does not).
    handler: Option<HandlerIndices>,
    /// Where its `handler2` is, if it exports one.
    handler2: Option<incoming::GuestIndices>,
    /// Where its `wasi:http` handler is, if it exports one.
    proxy: Option<ProxyIndices>,
    /// Where its outgoing HTTP may go.
    allowed: AllowedHosts,
}

impl Linked {
    /// Whether the component exports the platform handler.
    pub fn has_handler(&self) -> bool {
        self.handler.is_some()
    }
}

/// A compiled component and how it came to be.
pub struct Compiled {
    pub component: Component,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    pub from_cache: bool,
    pub compile_time: Duration,
}

fn write_cache_entry(component: &Component, entry: &Path) -> Result<()> {
    let dir = entry
        .parent()
        .context("a cache entry lives in a directory")?;
    std::fs::create_dir_all(dir)?;
    let partial = entry.with_extension("partial");
    std::fs::write(&partial, component.serialize()?)?;
    std::fs::rename(&partial, entry)?;
    Ok(())
}

/// The SHA-256 of a component file, lower-case hex: its identity.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A core module's header is `\0asm` + version 1 + layer 0; a component's layer is 1.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(&[1, 0, 0, 0])
}

/// One instantiated service with its own store. Serves one call at a time.
pub struct LiveInstance {
    store: Store<ServiceState>,
    instance: Instance,
    /// Its HTTP handler, if it exports one.
    handler: Option<ServiceBindings>,
    /// Its `handler2`, if it exports one.
    handler2: Option<Handler2>,
    /// Its `wasi:http` handler, if it exports one.
    proxy: Option<Proxy>,
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
    /// Hand one HTTP request to the guest's handler.
    pub async fn handle(
        &mut self,
        request: &handler::Request,
    ) -> Result<handler::Response, CallError> {
        let Some(bindings) = &self.handler else {
            return Err(CallError::Trap(anyhow!(
                "exports no {}",
                platform::HANDLER_INTERFACE
            )));
        };
        let handler = bindings.switchyard_platform_handler().clone();
        self.begin(0);
        let outcome = handler.call_handle(&mut self.store, request).await;
        self.finish(outcome)
    }

    /// Lend one HTTP request to the guest's `handler2`, for the call.
    pub async fn handle_lent(
        &mut self,
        request: &IncomingRequest,
    ) -> Result<incoming::Response, CallError> {
        let Some(handler) = self.handler2.clone() else {
            return Err(CallError::Trap(anyhow!(
                "exports no {}",
                platform::HANDLER2_INTERFACE
            )));
        };
        let table = &mut self.store.data_mut().table;
        let lent = table
            .push(request.clone())
            .map_err(|e| CallError::Trap(e.into()))?;
        // The guest holds a borrow, which ends with the call: the request
        // is the host's again afterwards, whatever the guest did.
        let borrowed = Resource::new_borrow(lent.rep());
        self.begin(0);
        let outcome = handler.call_handle(&mut self.store, borrowed).await;
        let returned = self.store.data_mut().table.delete(lent);
        let response = self.finish(outcome)?;
        returned.map_err(|e| CallError::Trap(e.into()))?;
        Ok(response)
    }

    /// Hand one HTTP request to the guest's `wasi:http` handler. Its
    /// response goes to `respond` when the guest sets it; this returns when
    /// the guest's handler returns (after writing the body, usually).
    pub async fn handle_http(
        &mut self,
        request: http::Request<IncomingBody>,
        respond: HttpResponder,
    ) -> Result<(), CallError> {
        let Some(proxy) = &self.proxy else {
            return Err(CallError::Trap(anyhow!(
                "exports no wasi:http/incoming-handler"
            )));
        };
        let handler = proxy.wasi_http_incoming_handler().clone();
        let mut http = self.store.data_mut().http();
        let prepared = http
            .new_incoming_request(Scheme::Http, request)
            .and_then(|request| Ok((request, http.new_response_outparam(respond)?)));
        let (request, response) = prepared.map_err(|e| CallError::Trap(e.into()))?;
        self.begin(0);
        let outcome = handler
            .call_handle(&mut self.store, request, response)
            .await;
        self.finish(outcome)
    }

    /// Call an exported interface function with dynamically typed values, on
    /// behalf of a caller `depth` service-to-service calls deep.
    pub async fn call_export(
        &mut self,
        depth: u32,
        index: &ComponentExportIndex,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), CallError> {
        let Some(func) = self.instance.get_func(&mut self.store, index) else {
            return Err(CallError::Trap(anyhow!("the exported function is missing")));
        };
        self.begin(depth);
        let outcome = func.call_async(&mut self.store, params, results).await;
        self.finish(outcome)
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

    fn begin(&mut self, depth: u32) {
        let state = self.store.data_mut();
        state.deadline = Some(Instant::now() + state.limits.deadline);
        state.depth = depth;
        state.platform.begin_call();
        state.output_budget.refill();
        state.timed_out = false;
        state.out_of_memory = false;
    }

    fn finish<R>(&mut self, outcome: wasmtime::Result<R>) -> Result<R, CallError> {
        let state = self.store.data_mut();
        state.deadline = None;
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
            CallError::Trap(error)
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

#[cfg(test)]
mod tests {
    use super::{InterfaceUse, Provider};

    fn provider(name: &str) -> Provider {
        InterfaceUse {
            name: name.to_string(),
            functions: Vec::new(),
            uses_resources: false,
        }
        .provider()
    }

    #[test]
    fn names_say_who_provides_an_interface() {
        assert_eq!(provider("switchyard:shop/catalog@1.0.0"), Provider::Service);
        assert_eq!(
            provider("switchyard:platform/handler@0.1.0"),
            Provider::Platform
        );
        assert_eq!(
            provider("wasi:keyvalue/store@0.2.0-draft"),
            Provider::Platform
        );
        assert_eq!(provider("wasi:io/streams@0.2.6"), Provider::WasiSystem);
        // What toolchains leave: plain names, never another service's.
        assert_eq!(provider("init"), Provider::Toolchain);
        assert_eq!(provider("exports"), Provider::Toolchain);
    }
}

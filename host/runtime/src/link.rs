//! Linking a component to the host: platform and WASI imports to the host,
//! every other imported interface to [`crate::ServiceCalls`], outgoing HTTP
//! to the hosts a service allows; and finding its entry points and exported
//! functions once, so that a call never looks them up by name.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Val};
use wasmtime_wasi_http::p2::bindings::ProxyIndices;

use crate::engine::Runtime;
use crate::error::{DependencyCause, DependencyFailure};
use crate::incoming;
use crate::introspect::{InterfaceUse, Provider};
use crate::kind::ComponentKind;
use crate::outbound::AllowedHosts;
use crate::state::ServiceState;

use switchyard_platform::{self as platform, HandlerIndices};
use switchyard_trace::Trace;

/// A boxed future, as the dynamic-call seam needs.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a component's calls to another service's interface go.
pub trait ServiceCalls: Send + Sync + 'static {
    /// Call `function` of `interface` on whichever service provides it now,
    /// on behalf of a caller at call depth `depth`, in the caller's `trace`
    /// if it is traced.
    fn call<'a>(
        &'a self,
        depth: u32,
        trace: Option<Trace>,
        interface: &'a str,
        function: &'a str,
        params: &'a [Val],
        results: &'a mut [Val],
    ) -> BoxFuture<'a, Result<(), DependencyCause>>;
}

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

impl Runtime {
    /// Link `component`, which exports `exports`: platform and WASI imports
    /// to the host, every other imported interface to `calls`, outgoing HTTP
    /// to the `allowed` hosts. Its kind is decided here, once, and the entry
    /// point of that kind found. Fails when it is no kind of service, an
    /// import cannot be satisfied or its entry point has the wrong type.
    pub fn link(
        &self,
        component: &Component,
        exports: &[InterfaceUse],
        calls: Arc<dyn ServiceCalls>,
        allowed: AllowedHosts,
    ) -> Result<Linked> {
        let Some(kind) = ComponentKind::of(exports) else {
            bail!(
                "exports neither {}, {}, wasi:http/incoming-handler nor a typed interface of \
                 its own: a service targets the switchyard:platform/service, \
                 switchyard:platform/service2 or wasi:http/proxy world, or exports interfaces \
                 for other services to import",
                platform::HANDLER_INTERFACE,
                platform::HANDLER2_INTERFACE,
            );
        };
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
                        let state = store.data();
                        let (depth, trace) = (state.depth, state.platform.trace().cloned());
                        calls
                            .call(depth, trace, &interface, &function, params, results)
                            .await
                            // Typed, so that the caller's trap can be told
                            // apart from a failure of the service it called.
                            .map_err(|e| {
                                wasmtime::Error::new(DependencyFailure {
                                    interface: interface.clone(),
                                    function: function.clone(),
                                    cause: e,
                                })
                            })
                    })
                })?;
            }
        }
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| anyhow!("{e:#}"))?;
        fn unusable(entry: &str) -> impl FnOnce(wasmtime::Error) -> anyhow::Error + '_ {
            move |e| anyhow!("does not export a usable {entry}: {e:#}")
        }
        let entry = match kind {
            ComponentKind::Handler => EntryIndices::Handler(
                HandlerIndices::new(&pre).map_err(unusable(platform::HANDLER_INTERFACE))?,
            ),
            ComponentKind::Handler2 => EntryIndices::Handler2(
                incoming::GuestIndices::new(&pre)
                    .map_err(unusable(platform::HANDLER2_INTERFACE))?,
            ),
            ComponentKind::WasiHttp => EntryIndices::WasiHttp(
                ProxyIndices::new(&pre).map_err(unusable("wasi:http/incoming-handler"))?,
            ),
            ComponentKind::Interfaces => EntryIndices::Interfaces,
        };
        Ok(Linked {
            exports: export_indices(component, exports),
            pre,
            entry,
            allowed,
        })
    }
}

/// Where each exported function of `interfaces` lives in `component`.
fn export_indices(component: &Component, interfaces: &[InterfaceUse]) -> ExportIndices {
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

/// Where the host enters a component, by its kind: found once, when it is
/// linked (each instance then loads the functions from these indices).
pub(crate) enum EntryIndices {
    Handler(HandlerIndices),
    Handler2(incoming::GuestIndices),
    WasiHttp(ProxyIndices),
    Interfaces,
}

/// A component linked to the host, ready to instantiate.
pub struct Linked {
    pub(crate) pre: InstancePre<ServiceState>,
    /// Its entry point, which says its kind.
    pub(crate) entry: EntryIndices,
    /// Its exported functions, for calls from other services and `/rpc`.
    exports: ExportIndices,
    /// Where its outgoing HTTP may go.
    pub(crate) allowed: AllowedHosts,
}

impl Linked {
    /// What kind of service the component is.
    pub fn kind(&self) -> ComponentKind {
        match self.entry {
            EntryIndices::Handler(_) => ComponentKind::Handler,
            EntryIndices::Handler2(_) => ComponentKind::Handler2,
            EntryIndices::WasiHttp(_) => ComponentKind::WasiHttp,
            EntryIndices::Interfaces => ComponentKind::Interfaces,
        }
    }

    /// Where its exported functions are.
    pub fn exports(&self) -> &ExportIndices {
        &self.exports
    }
}

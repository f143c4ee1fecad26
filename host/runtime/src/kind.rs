//! What shape of component a version is, decided once from its exports
//! when it loads: which entry point the host calls, and so which executor
//! the gateway runs its requests with.

use switchyard_platform::{HANDLER_INTERFACE, HANDLER2_INTERFACE};

use crate::introspect::{InterfaceUse, Provider};

/// The export of a component that serves HTTP the standard way
/// (`wasi:http/proxy`): its name, at any 0.2 version, starts with this.
pub const WASI_HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.";

/// What shape of component a version is, which decides how the gateway runs
/// requests on it (one executor per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// Exports `switchyard:platform/handler`: a request record in, a
    /// response record out.
    Handler,
    /// Exports `switchyard:platform/handler2`: the request lent, read by the
    /// guest part by part; a response record out.
    Handler2,
    /// Exports `wasi:http/incoming-handler` (the `wasi:http/proxy` world
    /// other hosts run): requests and responses stream both ways.
    WasiHttp,
    /// Exports typed interfaces and no HTTP entry point: a library other
    /// services import (and clients call over `/rpc`).
    Interfaces,
}

impl ComponentKind {
    /// The kind of a component that exports `exports`, if it is a service.
    pub fn of(exports: &[InterfaceUse]) -> Option<ComponentKind> {
        // A component exporting both handlers is served the cheaper way.
        if exports.iter().any(|e| e.name == HANDLER2_INTERFACE) {
            Some(ComponentKind::Handler2)
        } else if exports.iter().any(|e| e.name == HANDLER_INTERFACE) {
            Some(ComponentKind::Handler)
        } else if exports
            .iter()
            .any(|e| e.name.starts_with(WASI_HTTP_HANDLER))
        {
            Some(ComponentKind::WasiHttp)
        } else if exports.iter().any(|e| e.provider() == Provider::Service) {
            Some(ComponentKind::Interfaces)
        } else {
            None
        }
    }
}

//! The one crate that knows wasmtime in depth: the engine and compiling
//! ([`engine`], with the compiled cache in [`cache`]), what a component
//! imports and exports ([`introspect`]), linking it ([`link`]) and running
//! its instances ([`instance`]).
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

pub mod cache;
pub mod engine;
pub mod error;
mod guest_output;
pub mod incoming;
pub mod instance;
pub mod introspect;
pub mod json;
mod kind;
pub mod link;
pub mod outbound;
mod signature;
pub mod state;

pub use cache::{Compiled, digest};
pub use engine::{MEMORY_CEILING, POOLED_INSTANCES, Runtime};
pub use error::{
    CallError, Callee, DependencyCause, DependencyFailure, MAX_CALL_DATA, Trap, root_cause,
};
pub use guest_output::GUEST_ERROR_BYTES;
pub use instance::{HttpResponder, IncomingBody, LiveInstance, incoming_body};
pub use introspect::{FunctionUse, InterfaceUse, Provider};
pub use kind::{ComponentKind, WASI_HTTP_HANDLER};
pub use link::{BoxFuture, ExportIndices, Linked, ServiceCalls};
pub use signature::{Signature, WitType};
pub use state::{DEFAULT_RETAINED_FACTOR, DEFAULT_RETAINED_FLOOR, Limits, ServiceState};
pub use wasmtime::component::Val;

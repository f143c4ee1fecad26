//! Switchyard's control plane: which versions exist, which serve, and which
//! instance takes a call.
//!
//! - [`registry`]: the registry, a state machine ([`registry::machine`]) over
//!   plain data with a thin shell that publishes routing, persists and sends
//!   events; activation, rollback, traffic splits, failover, history.
//! - [`deployable`]: what the registry routes to (the bottom: it uses
//!   nothing of control's).
//! - [`version`]: one version as the host runs it ([`version::LoadedVersion`]).
//! - [`failover`]: the rule that moves traffic off a failing version.
//! - [`compat`]: whether a version fits the versions of other services, and
//!   why a version is refused.
//! - [`balance`]: instance pools and strategies.
//! - [`links`]: service-to-service calls, forwarded at call time.
//! - [`loader`]: turning component files and uploads into versions.
//! - [`watcher`]: noticing files added, replaced or removed while serving.
//! - [`recovery`]: letting services finish or undo work a crash left
//!   half-done.
//! - [`rpc`]: how exported functions are addressed over HTTP.
//! - [`files`]: reading what sits in the services folder without ever
//!   blocking on a pipe, a device or an endless file.
//! - [`cluster`]: this host as one of several sharing a store: following
//!   the others' deployments and components, its heartbeat.
//! - [`metrics`]: the failures it counts.
//!
//! It knows nothing of HTTP: the gateway and the admin API drive it.

pub mod balance;
pub mod cluster;
pub mod compat;
pub mod deployable;
pub mod failover;
pub mod files;
pub mod links;
pub mod loader;
pub mod metrics;
mod outage;
pub mod recovery;
pub mod registry;
pub mod rpc;
pub mod version;
pub mod watcher;

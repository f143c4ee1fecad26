//! This host as one of several sharing a store: it follows the deployments
//! other hosts store ([`deployments`]), fetches the components they offer
//! ([`components`]), and beats its heartbeat, through which they see what it
//! serves ([`node`]).
//!
//! It never decides anything about deployments: the registry's state machine
//! does; this module feeds it what the store says and reports what it serves.

pub mod components;
pub mod deployments;
pub mod node;

use std::sync::Arc;

use switchyard_store::Store;

use crate::loader::Loader;
use crate::registry::Registry;
pub use node::Node;

/// Start following the other hosts sharing `store`, as `node`: tasks that
/// end when the registry and the loader are gone.
pub fn join(node: Node, registry: &Arc<Registry>, loader: &Arc<Loader>, store: Arc<dyn Store>) {
    tokio::spawn(deployments::follow(Arc::downgrade(registry)));
    if let Some(told) = store.changes() {
        tokio::spawn(components::follow(Arc::downgrade(loader), told));
    }
    tokio::spawn(node::beat(node, Arc::downgrade(registry), store));
}

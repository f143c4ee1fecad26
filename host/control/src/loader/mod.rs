//! Turns component files (and uploads) into validated, compiled versions, and
//! hands them to the registry.
//!
//! Layout: `services/<name>/<semver>.wasm`, plus an optional
//! `services/<name>/service.toml`. A version is compiled off the request path
//! (or loaded from the compiled-component cache), checked to be a component
//! that exports the platform handler and uses no resources across services,
//! and linked. What cannot load gets a reason naming the problem; one bad file
//! never stops the other services.
//!
//! - `settings.rs`: `service.toml`, its schema and checks.
//! - `naming.rs`: which names in the folder are services and versions.
//! - `scan.rs`: the folder at start-up and as it changes.
//! - `assemble.rs`: one version from a component's bytes.

mod assemble;
mod naming;
mod scan;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::registry::Registry;
use switchyard_runtime::Runtime;
use switchyard_store::{ComponentStore, KeyValueStore};

pub use naming::{is_component_file, misplaced, valid_service_name, version_of_file};
pub use settings::{
    FailoverSettings, InstanceSettings, LimitSettings, OutboundSettings, RpcSettings,
    ServiceSettings, SettingsError,
};

/// The largest component accepted, from a file or an upload.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// What loading needs from the rest of the host.
pub struct Loader {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn KeyValueStore>,
    /// Where versions are shared with other hosts (a no-op on one host).
    pub components: Arc<dyn ComponentStore>,
    pub services_dir: PathBuf,
    /// Where compiled components are cached (under the data directory).
    pub cache_dir: PathBuf,
    /// A call's deadline where the service sets none.
    pub default_deadline: Duration,
}

impl Loader {
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.services_dir.join(service)
    }
}

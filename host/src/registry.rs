//! The one place that answers "which version of a service serves this call".
//!
//! It owns every service's known versions, their states (and why a version was
//! rejected), and the active-version pointer. Activation swaps that pointer
//! atomically: calls already running keep the version they started with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwapOption;
use semver::Version;
use serde::Serialize;

use crate::balance::InstancePool;
use crate::runtime::{InterfaceUse, Provider};

/// A version compiled, validated and linked: ready to take traffic.
pub struct LoadedVersion {
    pub service: String,
    pub version: Version,
    pub imports: Vec<InterfaceUse>,
    pub exports: Vec<InterfaceUse>,
    pub pool: Arc<InstancePool>,
}

impl LoadedVersion {
    /// Does this version export `interface` with every function in `functions`?
    pub fn provides(&self, interface: &str, functions: &[String]) -> bool {
        self.exports
            .iter()
            .any(|e| e.name == interface && functions.iter().all(|f| e.functions.contains(f)))
    }

    /// The interfaces this version needs from other services.
    pub fn service_imports(&self) -> impl Iterator<Item = &InterfaceUse> {
        self.imports
            .iter()
            .filter(|i| i.provider() == Provider::Service)
    }
}

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Serving this service's traffic.
    Active,
    /// Valid and compiled, not serving.
    Standby,
    /// Refused; the reason says why.
    Rejected,
}

/// One version of a service, as known to the registry.
#[derive(Clone)]
pub struct VersionEntry {
    pub version: Version,
    pub state: VersionState,
    pub reason: Option<String>,
    pub loaded: Option<Arc<LoadedVersion>>,
}

/// A service: its versions and the pointer to the active one.
pub struct ServiceEntry {
    pub name: String,
    active: ArcSwapOption<LoadedVersion>,
    versions: Mutex<Vec<VersionEntry>>,
}

impl ServiceEntry {
    /// A service whose versions are `versions` (any order); the one marked
    /// active, if any, starts serving.
    pub fn new(name: String, mut versions: Vec<VersionEntry>) -> ServiceEntry {
        versions.sort_by(|a, b| b.version.cmp(&a.version));
        let active = versions
            .iter()
            .find(|v| v.state == VersionState::Active)
            .and_then(|v| v.loaded.clone());
        ServiceEntry {
            name,
            active: ArcSwapOption::new(active),
            versions: Mutex::new(versions),
        }
    }

    /// The version serving now, if any.
    pub fn active(&self) -> Option<Arc<LoadedVersion>> {
        self.active.load_full()
    }

    /// Every known version, highest first.
    pub fn versions(&self) -> Vec<VersionEntry> {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why nothing serves, for the error a client gets.
    pub fn unavailable_reason(&self) -> String {
        let versions = self.versions();
        match versions
            .iter()
            .find_map(|v| v.reason.as_ref().map(|r| (v, r)))
        {
            Some((v, reason)) => format!(
                "service {} has no active version ({} was rejected: {reason})",
                self.name, v.version
            ),
            None => format!("service {} has no active version", self.name),
        }
    }
}

/// Every service the host knows.
#[derive(Default)]
pub struct Registry {
    services: RwLock<BTreeMap<String, Arc<ServiceEntry>>>,
}

impl Registry {
    pub fn insert(&self, service: ServiceEntry) {
        let mut services = self.services.write().unwrap_or_else(|p| p.into_inner());
        services.insert(service.name.clone(), Arc::new(service));
    }

    pub fn get(&self, name: &str) -> Option<Arc<ServiceEntry>> {
        let services = self.services.read().unwrap_or_else(|p| p.into_inner());
        services.get(name).cloned()
    }

    /// Every service, by name.
    pub fn list(&self) -> Vec<Arc<ServiceEntry>> {
        let services = self.services.read().unwrap_or_else(|p| p.into_inner());
        services.values().cloned().collect()
    }

    /// The active version that exports `interface` now.
    pub fn provider_of(&self, interface: &str, function: &str) -> Option<Arc<LoadedVersion>> {
        self.list()
            .iter()
            .filter_map(|s| s.active())
            .find(|v| v.provides(interface, std::slice::from_ref(&function.to_string())))
    }
}

//! The one place that answers "which version of a service serves this call".
//!
//! It owns every service's versions and their states, the routing (the active
//! version, or a weighted traffic split across versions), the rollback stack and
//! the recent history, and persists them through a [`DeploymentStore`].
//!
//! Routing is an [`ArcSwap`]: a request loads it once and keeps the version it
//! picked, so a swap never disturbs a call already running; the next request
//! sees the new routing. Every change goes through one lock, so the
//! compatibility check of [`crate::compat`] always sees a stable world.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::balance::{HashKey, InstancePool};
use crate::compat::{self, Incompatibility};
use crate::telemetry;
use switchyard_runtime::{CallError, InterfaceUse, Provider};
use switchyard_store::DeploymentStore;

/// How many history events each service keeps.
const HISTORY_LEN: usize = 50;

/// The largest weight one version may have in a traffic split: fine enough
/// for a 0.01 % canary, small enough that no sum of weights can overflow.
pub const MAX_WEIGHT: u32 = 10_000;

/// A version compiled, validated and linked: able to take traffic.
pub struct LoadedVersion {
    pub service: String,
    pub version: Version,
    pub imports: Vec<InterfaceUse>,
    pub exports: Vec<InterfaceUse>,
    pub pool: Arc<InstancePool>,
    /// SHA-256 of the component file.
    pub digest: String,
    pub compile_time: Duration,
    pub from_cache: bool,
    pub loaded_at_ms: u64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Where a consistent-hash service finds a request's key.
    pub hash_key: Option<HashKey>,
    pub failover: FailoverPolicy,
    /// Recent failures (traps, timeouts, memory), for the failover rule.
    pub failures: Mutex<VecDeque<Instant>>,
}

/// When a version's failures move its service's traffic back to the previous
/// good version.
#[derive(Debug, Clone, Copy)]
pub struct FailoverPolicy {
    pub enabled: bool,
    /// Failures within `window` that trigger it.
    pub threshold: usize,
    pub window: Duration,
}

impl LoadedVersion {
    /// The exported interface named `name`, if any.
    pub fn export(&self, name: &str) -> Option<&InterfaceUse> {
        self.exports.iter().find(|e| e.name == name)
    }

    /// The interfaces this version needs from other services.
    pub fn service_imports(&self) -> impl Iterator<Item = &InterfaceUse> {
        self.imports
            .iter()
            .filter(|i| i.provider() == Provider::Service)
    }

    /// The interfaces this version offers other services.
    pub fn service_exports(&self) -> impl Iterator<Item = &InterfaceUse> {
        self.exports
            .iter()
            .filter(|e| e.provider() == Provider::Service)
    }

    /// Count one call served (an HTTP request, or a call from another service),
    /// and whether it failed on the service's side (see [`CallError`]).
    fn record(&self, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Note a failure of this version's own (not of a service it called);
    /// true when it crosses the failover threshold.
    fn failed(&self) -> bool {
        if !self.failover.enabled {
            return false;
        }
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.failover.window)
        {
            failures.pop_front();
        }
        if failures.len() >= self.failover.threshold {
            failures.clear();
            true
        } else {
            false
        }
    }
}

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Traffic goes to it.
    Active,
    /// Compiled and valid; no traffic.
    Standby,
    /// No new traffic, but calls that started on it are still running.
    Draining,
    /// Refused; the reason says why.
    Rejected,
    /// Taken out of traffic by failover; the reason says why. Activating it
    /// again clears the mark.
    Failed,
}

/// A version as known to the registry: loaded, or refused with a reason.
#[derive(Clone)]
pub enum VersionEntry {
    Loaded(Arc<LoadedVersion>),
    Rejected(Refusal),
}

/// Whether a new highest version takes traffic when it arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// The highest version becomes active as soon as it is valid.
    #[default]
    Auto,
    /// New versions wait on standby until activated through the admin API.
    Manual,
}

/// Where a service's traffic goes: one version, or several by weight. The first
/// entry is the primary, the one reported as active and kept on rollback.
pub struct Routing {
    entries: Vec<(Arc<LoadedVersion>, u32)>,
}

impl Routing {
    fn none() -> Routing {
        Routing {
            entries: Vec::new(),
        }
    }

    fn single(version: Arc<LoadedVersion>) -> Routing {
        Routing {
            entries: vec![(version, 100)],
        }
    }

    /// A version for one call, drawn by weight.
    pub fn pick(&self) -> Option<Arc<LoadedVersion>> {
        match self.entries.as_slice() {
            [] => None,
            [(only, _)] => Some(only.clone()),
            entries => {
                // Weights are validated (see `check_split`); u64 keeps even
                // unvalidated ones from overflowing.
                let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut ticket = fastrand::u64(0..total.max(1));
                for (version, weight) in entries {
                    if ticket < u64::from(*weight) {
                        return Some(version.clone());
                    }
                    ticket -= u64::from(*weight);
                }
                entries.first().map(|(v, _)| v.clone())
            }
        }
    }

    pub fn primary(&self) -> Option<&Arc<LoadedVersion>> {
        self.entries.first().map(|(v, _)| v)
    }

    pub fn versions(&self) -> impl Iterator<Item = &Arc<LoadedVersion>> {
        self.entries.iter().map(|(v, _)| v)
    }

    fn weight_of(&self, version: &Version) -> Option<u32> {
        self.entries
            .iter()
            .find(|(v, _)| &v.version == version)
            .map(|(_, w)| *w)
    }

    fn without(&self, version: &Version) -> Routing {
        Routing {
            entries: self
                .entries
                .iter()
                .filter(|(v, _)| &v.version != version)
                .cloned()
                .collect(),
        }
    }

    fn with_replaced(&self, loaded: &Arc<LoadedVersion>) -> Routing {
        Routing {
            entries: self
                .entries
                .iter()
                .map(|(v, w)| {
                    let v = if v.version == loaded.version {
                        loaded
                    } else {
                        v
                    };
                    (v.clone(), *w)
                })
                .collect(),
        }
    }
}

/// What happened to a service, in its history (and as a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A version took all traffic.
    Activated,
    /// A new build of a serving version took its place.
    Replaced,
    /// Traffic was split across versions.
    Traffic,
    /// A failing version's traffic moved elsewhere.
    Failover,
    /// A version was refused.
    Rejected,
    /// A new build of a serving version was refused; the old one serves on.
    Refused,
    /// A version arrived on standby.
    Added,
    /// A version's file was removed.
    Removed,
}

impl Action {
    /// The name it goes by in the history and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Activated => "activated",
            Action::Replaced => "replaced",
            Action::Traffic => "traffic",
            Action::Failover => "failover",
            Action::Rejected => "rejected",
            Action::Refused => "refused",
            Action::Added => "added",
            Action::Removed => "removed",
        }
    }
}

/// Why a version was refused: the loader's reason (the file, the component,
/// its settings, its start-up), or how it does not fit the other services.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    #[error("{reason}")]
    Load { reason: String },
    #[error("{why}")]
    Incompatible { why: Incompatibility },
}

impl From<Incompatibility> for Refusal {
    fn from(why: Incompatibility) -> Refusal {
        Refusal::Incompatible { why }
    }
}

/// Something that happened to a service, for its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub reason: String,
}

/// What survives a restart, per service.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Deployment {
    active: Option<Version>,
    #[serde(default)]
    traffic: Vec<(Version, u32)>,
    #[serde(default)]
    previous: Vec<Version>,
    /// Every version the host has seen, so that one dropped while the host was
    /// stopped can be told from one the operator rolled back from.
    #[serde(default)]
    known: BTreeSet<Version>,
    #[serde(default)]
    history: VecDeque<Event>,
}

/// The mutable part of a service, changed only under the registry's lock.
#[derive(Default)]
struct Book {
    service: String,
    mode: Activation,
    versions: BTreeMap<Version, VersionEntry>,
    /// Earlier primaries, most recent last: where rollback goes.
    previous: Vec<Version>,
    known: BTreeSet<Version>,
    history: VecDeque<Event>,
    /// Files in the service's folder that are not `<semver>.wasm`.
    refused_files: BTreeMap<String, String>,
    /// Versions failover took out of traffic, and why.
    failed: BTreeMap<Version, String>,
}

impl Book {
    fn log(&mut self, action: Action, version: Option<&Version>, reason: impl ToString) {
        self.log_at(now_ms(), action, version, reason);
    }

    /// Log an event that happened at `at_ms` (for a swap: just before it, so
    /// that no call served by the new routing predates its event).
    fn log_at(
        &mut self,
        at_ms: u64,
        action: Action,
        version: Option<&Version>,
        reason: impl ToString,
    ) {
        let reason = reason.to_string();
        let shown = version.map_or_else(String::new, Version::to_string);
        tracing::info!(service = %self.service, action = action.as_str(), version = %shown, "{reason}");
        telemetry::deployment_event(&self.service, action);
        self.history.push_back(Event {
            at_ms,
            action,
            version: version.map(Version::to_string),
            reason,
        });
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
    }

    fn loaded(&self, version: &Version) -> Option<&Arc<LoadedVersion>> {
        match self.versions.get(version) {
            Some(VersionEntry::Loaded(v)) => Some(v),
            _ => None,
        }
    }

    /// `version`, if it can be given traffic; else why not.
    fn usable(
        &self,
        service: &str,
        version: &Version,
    ) -> Result<Arc<LoadedVersion>, RegistryError> {
        match self.versions.get(version) {
            None => Err(RegistryError::UnknownVersion {
                service: service.to_string(),
                version: version.clone(),
            }),
            Some(VersionEntry::Rejected(why)) => Err(RegistryError::Rejected {
                service: service.to_string(),
                version: version.clone(),
                why: Box::new(why.clone()),
            }),
            Some(VersionEntry::Loaded(loaded)) => Ok(loaded.clone()),
        }
    }

    fn highest_loaded(&self) -> Option<&Arc<LoadedVersion>> {
        self.versions.values().rev().find_map(|e| match e {
            VersionEntry::Loaded(v) => Some(v),
            VersionEntry::Rejected(_) => None,
        })
    }
}

/// A service: its routing (read on every call) and its book (changed rarely).
pub struct Service {
    pub name: String,
    routing: ArcSwap<Routing>,
    book: Mutex<Book>,
}

impl Service {
    fn new(name: String) -> Service {
        Service {
            book: Mutex::new(Book {
                service: name.clone(),
                ..Book::default()
            }),
            routing: ArcSwap::from_pointee(Routing::none()),
            name,
        }
    }

    /// Where this service's traffic goes now.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// Every version loaded (serving, standby, draining or failed).
    pub fn loaded_versions(&self) -> Vec<Arc<LoadedVersion>> {
        self.book()
            .versions
            .values()
            .filter_map(|e| match e {
                VersionEntry::Loaded(v) => Some(v.clone()),
                VersionEntry::Rejected(_) => None,
            })
            .collect()
    }

    /// Whether some version takes this service's traffic.
    pub fn is_serving(&self) -> bool {
        self.routing.load().primary().is_some()
    }

    /// The version for one call, or `None` when nothing serves.
    pub fn pick(&self) -> Option<Arc<LoadedVersion>> {
        self.routing.load().pick()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why nothing serves, for the error a client gets.
    pub fn unavailable_reason(&self) -> String {
        let book = self.book();
        let rejected = book.versions.iter().rev().find_map(|(v, e)| match e {
            VersionEntry::Rejected(reason) => Some((v, reason)),
            VersionEntry::Loaded(_) => None,
        });
        match rejected {
            Some((v, reason)) => format!(
                "service {} has no active version ({v} was rejected: {reason})",
                self.name
            ),
            None => format!("service {} has no active version", self.name),
        }
    }

    /// Route all traffic as `routing` says; retire the versions it leaves.
    /// Returns when the swap happened (taken just before it), in ms.
    fn route(&self, routing: Routing) -> u64 {
        for version in routing.versions() {
            version.pool.revive();
        }
        let at_ms = now_ms();
        let old = self.routing.swap(Arc::new(routing));
        let new = self.routing.load();
        for version in old.versions() {
            if !new.versions().any(|v| Arc::ptr_eq(v, version)) {
                version.pool.retire();
            }
        }
        at_ms
    }

    fn state_of(&self, version: &LoadedVersion) -> VersionState {
        let routing = self.routing.load();
        if routing.versions().any(|v| std::ptr::eq(&**v, version)) {
            VersionState::Active
        } else if version.pool.leased() > 0 {
            VersionState::Draining
        } else {
            VersionState::Standby
        }
    }
}

/// Why an admin request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no service named {service:?}")]
    UnknownService { service: String },
    #[error("service {service} has no version {version}")]
    UnknownVersion { service: String, version: Version },
    #[error("{service} {version} was rejected: {why}")]
    Rejected {
        service: String,
        version: Version,
        why: Box<Refusal>,
    },
    #[error("{service} {version} cannot serve: {why}")]
    Incompatible {
        service: String,
        version: Version,
        why: Box<Incompatibility>,
    },
    #[error("service {service} has no earlier version to roll back to")]
    NoPrevious { service: String },
    #[error("invalid traffic split: {why}")]
    InvalidSplit { why: SplitError },
}

/// Why a traffic split was refused.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("weight {weight} is above the largest allowed, {MAX_WEIGHT}")]
    WeightTooLarge { weight: u32 },
    #[error("at least one version needs a weight above 0")]
    NothingWeighted,
}

/// Whether `weights` make a usable split: each at most [`MAX_WEIGHT`], and
/// at least one above 0.
pub fn check_split<'a>(weights: impl IntoIterator<Item = &'a u32>) -> Result<(), RegistryError> {
    let mut total = 0u64;
    for &weight in weights {
        if weight > MAX_WEIGHT {
            return Err(RegistryError::InvalidSplit {
                why: SplitError::WeightTooLarge { weight },
            });
        }
        total += u64::from(weight);
    }
    if total == 0 {
        return Err(RegistryError::InvalidSplit {
            why: SplitError::NothingWeighted,
        });
    }
    Ok(())
}

/// One service as the loader found it at start-up.
pub struct Found {
    pub name: String,
    pub mode: Activation,
    pub versions: BTreeMap<Version, VersionEntry>,
    pub refused_files: BTreeMap<String, String>,
}

/// Every service the host knows.
pub struct Registry {
    services: RwLock<BTreeMap<String, Arc<Service>>>,
    /// Serialises every change, across services.
    changes: Mutex<()>,
    deployments: Arc<dyn DeploymentStore>,
}

impl Registry {
    pub fn new(deployments: Arc<dyn DeploymentStore>) -> Registry {
        Registry {
            services: RwLock::default(),
            changes: Mutex::default(),
            deployments,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        let services = self.services.read().unwrap_or_else(|p| p.into_inner());
        services.get(name).cloned()
    }

    /// Every service, by name.
    pub fn list(&self) -> Vec<Arc<Service>> {
        let services = self.services.read().unwrap_or_else(|p| p.into_inner());
        services.values().cloned().collect()
    }

    /// The version that serves a call to `interface`, drawn by its service's
    /// routing like any other call to that service.
    pub fn provider_of(&self, interface: &str) -> Option<Arc<LoadedVersion>> {
        self.list()
            .into_iter()
            .find(|s| {
                s.routing()
                    .versions()
                    .any(|v| v.export(interface).is_some())
            })?
            .pick()
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn service(&self, name: &str) -> Result<Arc<Service>, RegistryError> {
        self.get(name).ok_or_else(|| RegistryError::UnknownService {
            service: name.to_string(),
        })
    }

    fn service_or_new(&self, name: &str) -> Arc<Service> {
        let mut services = self.services.write().unwrap_or_else(|p| p.into_inner());
        services
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Service::new(name.to_string())))
            .clone()
    }

    /// What serves now, with `service`'s routing replaced by `routing`.
    fn serving(
        &self,
        service: &str,
        routing: Option<&[Arc<LoadedVersion>]>,
    ) -> Vec<(String, Vec<Arc<LoadedVersion>>)> {
        self.list()
            .iter()
            .map(|s| {
                let versions = match routing {
                    Some(versions) if s.name == service => versions.to_vec(),
                    _ => s.routing().versions().cloned().collect(),
                };
                (s.name.clone(), versions)
            })
            .collect()
    }

    fn persist(&self, service: &Service, book: &Book) {
        let routing = service.routing();
        let deployment = Deployment {
            active: routing.primary().map(|v| v.version.clone()),
            traffic: if routing.entries.len() > 1 {
                routing
                    .entries
                    .iter()
                    .map(|(v, w)| (v.version.clone(), *w))
                    .collect()
            } else {
                Vec::new()
            },
            previous: book.previous.clone(),
            known: book.known.clone(),
            history: book.history.clone(),
        };
        let record = serde_json::to_string(&deployment).expect("a deployment serialises");
        if let Err(e) = self.deployments.save_deployment(&service.name, &record) {
            tracing::error!(service = %service.name, "cannot persist the deployment: {e}");
        }
    }

    /// Set up every service found at start-up: restore what was active (or the
    /// traffic split) before the restart, activate the highest version of
    /// services that had none, and then, in auto mode, versions that arrived
    /// while the host was stopped. A version whose imports no serving version
    /// satisfies is rejected, falling back to the next one.
    pub fn bootstrap(&self, found: Vec<Found>) {
        let _changing = self.changing();
        let mut saved: BTreeMap<String, Deployment> = match self.deployments.load_deployments() {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(name, record)| match serde_json::from_str(&record) {
                    Ok(d) => Some((name, d)),
                    Err(e) => {
                        tracing::warn!(service = %name, "ignoring an unreadable deployment record: {e}");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::error!("cannot read the deployment records: {e}");
                BTreeMap::new()
            }
        };

        let mut choices: BTreeMap<String, Vec<Arc<LoadedVersion>>> = BTreeMap::new();
        for found in found {
            let service = self.service_or_new(&found.name);
            let deployment = saved.remove(&found.name).unwrap_or_default();
            let mut book = service.book();
            book.mode = found.mode;
            book.versions = found.versions;
            book.refused_files = found.refused_files;
            book.previous = deployment.previous;
            book.history = deployment.history;
            book.known = deployment.known;
            let mut preferred: Vec<Arc<LoadedVersion>> = Vec::new();
            if let Some(active) = deployment.active.as_ref().and_then(|v| book.loaded(v)) {
                preferred.push(active.clone());
            }
            for entry in book.versions.values().rev() {
                if let VersionEntry::Loaded(v) = entry
                    && !preferred.iter().any(|p| Arc::ptr_eq(p, v))
                {
                    preferred.push(v.clone());
                }
            }
            choices.insert(found.name.clone(), preferred);
            drop(book);
            let split: Vec<(Arc<LoadedVersion>, u32)> = deployment
                .traffic
                .iter()
                .filter_map(|(v, w)| service.book().loaded(v).map(|l| (l.clone(), *w)))
                .collect();
            if split.len() == deployment.traffic.len() && split.len() > 1 {
                match check_split(split.iter().map(|(_, w)| w)) {
                    Ok(()) => {
                        service.route(Routing { entries: split });
                    }
                    Err(e) => tracing::warn!(
                        service = %found.name,
                        "ignoring the stored traffic split: {e}"
                    ),
                }
            }
        }

        // Reject would-be active versions whose imports are not satisfied
        // until every one is; each round rejects one version, so this ends.
        loop {
            let serving: Vec<(String, Vec<Arc<LoadedVersion>>)> = choices
                .iter()
                .map(|(name, c)| (name.clone(), c.first().cloned().into_iter().collect()))
                .collect();
            let refusal = serving.iter().find_map(|(name, versions)| {
                let candidate = versions.first()?;
                compat::check(candidate, &serving)
                    .err()
                    .map(|reason| (name.clone(), reason))
            });
            let Some((name, reason)) = refusal else { break };
            let rejected = choices.get_mut(&name).expect("from choices").remove(0);
            let service = self.service_or_new(&name);
            let mut book = service.book();
            book.log(Action::Rejected, Some(&rejected.version), &reason);
            book.versions.insert(
                rejected.version.clone(),
                VersionEntry::Rejected(reason.into()),
            );
        }

        for (name, chosen) in choices {
            let service = self.service_or_new(&name);
            let keeps_split = service
                .routing()
                .primary()
                .is_some_and(|p| chosen.first().is_some_and(|c| Arc::ptr_eq(p, c)));
            if !keeps_split {
                service.route(
                    chosen
                        .first()
                        .cloned()
                        .map_or_else(Routing::none, Routing::single),
                );
            }
        }

        for service in self.list() {
            let mut book = service.book();
            let arrivals: Vec<Version> = book
                .versions
                .keys()
                .filter(|v| !book.known.contains(v))
                .cloned()
                .collect();
            let newest = arrivals
                .iter()
                .rev()
                .find(|v| book.loaded(v).is_some())
                .cloned();
            let primary = service.routing().primary().map(|p| p.version.clone());
            if book.mode == Activation::Auto
                && let Some(newest) = newest
                && primary.as_ref().is_some_and(|p| &newest > p)
            {
                let reason = "the highest version, added while the host was stopped (auto)";
                if let Err(e) = self.activate_locked(&service, &mut book, &newest, reason) {
                    book.log(Action::Rejected, Some(&newest), e.to_string());
                }
            }
            if let Some(primary) = service.routing().primary() {
                let primary = primary.version.clone();
                if book
                    .history
                    .back()
                    .is_none_or(|e| e.version.as_ref() != Some(&primary.to_string()))
                {
                    book.log(Action::Activated, Some(&primary), "serving after start-up");
                }
            }
            book.known.extend(arrivals);
            self.persist(&service, &book);
        }
    }

    /// A new or rebuilt version of `service` (a dropped file or an upload).
    /// Returns the state it ended up in, or why it was refused.
    pub fn offer(
        &self,
        service: &str,
        mode: Activation,
        version: Version,
        entry: VersionEntry,
    ) -> Result<VersionState, Refusal> {
        let _changing = self.changing();
        let service = self.service_or_new(service);
        let mut book = service.book();
        book.mode = mode;
        book.known.insert(version.clone());
        let outcome = self.offer_locked(&service, &mut book, version, entry);
        self.persist(&service, &book);
        outcome
    }

    fn offer_locked(
        &self,
        service: &Service,
        book: &mut Book,
        version: Version,
        entry: VersionEntry,
    ) -> Result<VersionState, Refusal> {
        let routing = service.routing();
        let serving_now = routing.weight_of(&version).is_some();
        let loaded = match entry {
            VersionEntry::Rejected(reason) => {
                if serving_now {
                    book.log(
                        Action::Refused,
                        Some(&version),
                        format!("the new file was refused, the old build keeps serving: {reason}"),
                    );
                } else {
                    book.log(Action::Rejected, Some(&version), &reason);
                    book.versions
                        .insert(version, VersionEntry::Rejected(reason.clone()));
                }
                return Err(reason);
            }
            VersionEntry::Loaded(loaded) => loaded,
        };
        if let Err(reason) = compat::check(&loaded, &self.serving(&service.name, None)) {
            if !serving_now {
                book.versions.insert(
                    version.clone(),
                    VersionEntry::Rejected(reason.clone().into()),
                );
            }
            book.log(Action::Rejected, Some(&version), &reason);
            return Err(reason.into());
        }
        book.versions
            .insert(version.clone(), VersionEntry::Loaded(loaded.clone()));
        if serving_now {
            let at = service.route(routing.with_replaced(&loaded));
            book.log_at(
                at,
                Action::Replaced,
                Some(&version),
                "a new build of a serving version",
            );
            return Ok(VersionState::Active);
        }
        let higher = routing.primary().is_none_or(|p| version > p.version);
        if book.mode == Activation::Auto && higher {
            self.activate_locked(service, book, &version, "the highest version (auto)")
                .map_err(|e| match e {
                    RegistryError::Incompatible { why, .. } => Refusal::from(*why),
                    other => Refusal::Load {
                        reason: other.to_string(),
                    },
                })?;
            Ok(VersionState::Active)
        } else {
            book.log(Action::Added, Some(&version), "on standby");
            Ok(VersionState::Standby)
        }
    }

    /// The file of `version` is gone: forget it. If it was serving, traffic
    /// falls back to the version before it, else to the highest one left.
    pub fn withdraw(&self, service: &str, version: &Version) {
        let _changing = self.changing();
        let Some(service) = self.get(service) else {
            return;
        };
        let mut book = service.book();
        if book.versions.remove(version).is_none() {
            return;
        }
        book.log(Action::Removed, Some(version), "its file was removed");
        let routing = service.routing();
        if routing.weight_of(version).is_some() {
            let rest = routing.without(version);
            if rest.entries.is_empty() {
                let fallback = book
                    .previous
                    .iter()
                    .rev()
                    .find_map(|v| book.loaded(v))
                    .or_else(|| book.highest_loaded())
                    .cloned();
                match fallback {
                    Some(fallback) => {
                        let at = service.route(Routing::single(fallback.clone()));
                        book.log_at(
                            at,
                            Action::Activated,
                            Some(&fallback.version),
                            format!("{version} was removed"),
                        );
                    }
                    None => {
                        service.route(Routing::none());
                    }
                }
            } else {
                service.route(rest);
            }
        }
        self.persist(&service, &book);
    }

    /// Send all of `service`'s traffic to `version`.
    pub fn activate(
        &self,
        service: &str,
        version: &Version,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let _changing = self.changing();
        let service = self.service(service)?;
        let mut book = service.book();
        let outcome = self.activate_locked(&service, &mut book, version, reason);
        self.persist(&service, &book);
        outcome
    }

    fn activate_locked(
        &self,
        service: &Service,
        book: &mut Book,
        version: &Version,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let loaded = book.usable(&service.name, version)?;
        let serving = self.serving(&service.name, Some(std::slice::from_ref(&loaded)));
        compat::check(&loaded, &serving).map_err(|why| RegistryError::Incompatible {
            service: service.name.clone(),
            version: version.clone(),
            why: Box::new(why),
        })?;
        if let Some(current) = service.routing().primary()
            && &current.version != version
        {
            book.previous.push(current.version.clone());
        }
        let at = service.route(Routing::single(loaded));
        book.failed.remove(version);
        book.log_at(at, Action::Activated, Some(version), reason);
        Ok(())
    }

    /// Back to the version that was active before the current one.
    pub fn rollback(&self, service: &str) -> Result<Version, RegistryError> {
        let _changing = self.changing();
        let service = self.service(service)?;
        let mut book = service.book();
        let current = service.routing().primary().map(|p| p.version.clone());
        while let Some(previous) = book.previous.pop() {
            if Some(&previous) == current.as_ref() {
                continue;
            }
            let Some(loaded) = book.loaded(&previous).cloned() else {
                continue;
            };
            let serving = self.serving(&service.name, Some(std::slice::from_ref(&loaded)));
            if let Err(why) = compat::check(&loaded, &serving) {
                book.previous.push(previous.clone());
                self.persist(&service, &book);
                return Err(RegistryError::Incompatible {
                    service: service.name.clone(),
                    version: previous,
                    why: Box::new(why),
                });
            }
            let at = service.route(Routing::single(loaded));
            let from = current
                .map(|c| format!("rollback from {c}"))
                .unwrap_or_else(|| "rollback".into());
            book.log_at(at, Action::Activated, Some(&previous), from);
            self.persist(&service, &book);
            return Ok(previous);
        }
        self.persist(&service, &book);
        Err(RegistryError::NoPrevious {
            service: service.name.clone(),
        })
    }

    /// Split `service`'s traffic across versions by relative weight.
    pub fn set_traffic(
        &self,
        service: &str,
        weights: BTreeMap<Version, u32>,
    ) -> Result<(), RegistryError> {
        let _changing = self.changing();
        let service = self.service(service)?;
        let mut book = service.book();
        check_split(weights.values())?;
        let mut entries = Vec::new();
        for (version, weight) in weights.iter().filter(|(_, w)| **w > 0) {
            entries.push((book.usable(&service.name, version)?, *weight));
        }
        // The heaviest version is the primary; on a tie, the highest.
        entries.sort_by(|(a, wa), (b, wb)| wb.cmp(wa).then(b.version.cmp(&a.version)));
        let versions: Vec<Arc<LoadedVersion>> = entries.iter().map(|(v, _)| v.clone()).collect();
        let serving = self.serving(&service.name, Some(&versions));
        for version in &versions {
            compat::check(version, &serving).map_err(|why| RegistryError::Incompatible {
                service: service.name.clone(),
                version: version.version.clone(),
                why: Box::new(why),
            })?;
        }
        if let Some(current) = service.routing().primary()
            && current.version != versions[0].version
        {
            book.previous.push(current.version.clone());
        }
        let split: Vec<String> = entries
            .iter()
            .map(|(v, w)| format!("{} {w}", v.version))
            .collect();
        let at = service.route(Routing { entries });
        book.log_at(
            at,
            Action::Traffic,
            None,
            format!("split: {}", split.join(", ")),
        );
        self.persist(&service, &book);
        Ok(())
    }

    /// Account for one call `version` served, and apply the failover rule: when
    /// its own failures cross the threshold while it serves, traffic moves to
    /// the previous good version.
    pub fn report(&self, version: &Arc<LoadedVersion>, failure: Option<&CallError>) {
        version.record(failure.is_some());
        if let Some(failure) = failure {
            telemetry::call_failed(&version.service, &version.version.to_string(), failure);
        }
        let own = match failure {
            Some(
                CallError::Trap(_)
                | CallError::Timeout(_)
                | CallError::OutOfMemory(_)
                | CallError::TooMuchData
                | CallError::Start(_),
            ) => true,
            Some(CallError::Dependency(_)) | None => false,
        };
        if own && version.failed() {
            let reason = format!(
                "{} failures within {:?} (the last: {})",
                version.failover.threshold,
                version.failover.window,
                failure.expect("own failure")
            );
            self.fail_over(version, &reason);
        }
    }

    fn fail_over(&self, failing: &Arc<LoadedVersion>, reason: &str) {
        let _changing = self.changing();
        let Some(service) = self.get(&failing.service) else {
            return;
        };
        let mut book = service.book();
        let routing = service.routing();
        if !routing.versions().any(|v| Arc::ptr_eq(v, failing)) {
            return;
        }
        book.failed
            .insert(failing.version.clone(), reason.to_string());
        let healthy = |v: &Arc<LoadedVersion>, book: &Book| {
            v.version != failing.version
                && !book.failed.contains_key(&v.version)
                && compat::check(
                    v,
                    &self.serving(&service.name, Some(std::slice::from_ref(v))),
                )
                .is_ok()
        };
        let previous = book
            .previous
            .iter()
            .rev()
            .filter_map(|v| book.loaded(v))
            .find(|v| healthy(v, &book))
            .cloned();
        let fallback = previous.or_else(|| {
            book.versions.values().rev().find_map(|e| match e {
                VersionEntry::Loaded(v) if healthy(v, &book) => Some(v.clone()),
                _ => None,
            })
        });
        match fallback {
            Some(fallback) => {
                while let Some(top) = book.previous.pop() {
                    if top == fallback.version {
                        break;
                    }
                }
                let at = service.route(Routing::single(fallback.clone()));
                book.log_at(
                    at,
                    Action::Failover,
                    Some(&fallback.version),
                    format!("{} {} failed: {reason}", service.name, failing.version),
                );
            }
            None => {
                let rest = routing.without(&failing.version);
                if !rest.entries.is_empty() {
                    service.route(rest);
                }
                book.log(
                    Action::Failover,
                    Some(&failing.version),
                    format!("failed ({reason}), and no healthy version is left to take over"),
                );
            }
        }
        self.persist(&service, &book);
    }

    /// A file in `service`'s folder that is not a version (its name is not semver).
    pub fn refuse_file(&self, service: &str, file: &str, reason: &str) {
        let _changing = self.changing();
        let service = self.service_or_new(service);
        service
            .book()
            .refused_files
            .insert(file.to_string(), reason.to_string());
    }

    /// A refused file is gone again.
    pub fn forget_file(&self, service: &str, file: &str) {
        if let Some(service) = self.get(service) {
            service.book().refused_files.remove(file);
        }
    }

    /// Is `digest` already what `service` `version` runs? (An upload's own file
    /// showing up in the folder, or a file touched without change.)
    pub fn has_build(&self, service: &str, version: &Version, digest: &str) -> bool {
        self.get(service).is_some_and(|s| {
            matches!(s.book().versions.get(version), Some(VersionEntry::Loaded(v)) if v.digest == digest)
        })
    }

    /// Every version `service` knows, loaded or rejected.
    pub fn versions_of(&self, service: &str) -> Vec<Version> {
        self.get(service)
            .map(|s| s.book().versions.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Does `service` know `version` at all?
    pub fn has_version(&self, service: &str, version: &Version) -> bool {
        self.get(service)
            .is_some_and(|s| s.book().versions.contains_key(version))
    }

    /// The admin view of one service.
    pub fn describe(&self, name: &str) -> Option<ServiceView> {
        let service = self.get(name)?;
        let routing = service.routing();
        let book = service.book();
        let active = routing.primary();
        let versions: Vec<VersionView> = book
            .versions
            .iter()
            .rev()
            .map(|(version, entry)| match entry {
                VersionEntry::Loaded(v) => VersionView {
                    version: version.to_string(),
                    state: match (service.state_of(v), book.failed.get(version)) {
                        (VersionState::Standby, Some(_)) => VersionState::Failed,
                        (state, _) => state,
                    },
                    reason: book.failed.get(version).cloned(),
                    refusal: None,
                    weight: routing.weight_of(version),
                    compile_ms: Some(v.compile_time.as_secs_f64() * 1e3),
                    from_cache: Some(v.from_cache),
                    loaded_at_ms: Some(v.loaded_at_ms),
                    requests: v.requests.load(Ordering::Relaxed),
                    errors: v.errors.load(Ordering::Relaxed),
                    instances: v.pool.instances(),
                },
                VersionEntry::Rejected(reason) => VersionView {
                    version: version.to_string(),
                    state: VersionState::Rejected,
                    reason: Some(reason.to_string()),
                    refusal: Some(reason.clone()),
                    weight: None,
                    compile_ms: None,
                    from_cache: None,
                    loaded_at_ms: None,
                    requests: 0,
                    errors: 0,
                    instances: 0,
                },
            })
            .collect();
        let names =
            |uses: &mut dyn Iterator<Item = &InterfaceUse>| uses.map(|u| u.name.clone()).collect();
        Some(ServiceView {
            name: service.name.clone(),
            mode: book.mode,
            active_version: active.map(|v| v.version.to_string()),
            traffic: routing
                .entries
                .iter()
                .map(|(v, w)| (v.version.to_string(), *w))
                .collect(),
            instances: versions.iter().map(|v| v.instances).sum(),
            exports: active.map_or_else(Vec::new, |v| names(&mut v.exports.iter())),
            imports: active.map_or_else(Vec::new, |v| {
                names(
                    &mut v
                        .imports
                        .iter()
                        .filter(|i| i.provider() != Provider::WasiSystem),
                )
            }),
            versions,
            history: book.history.iter().rev().cloned().collect(),
            refused_files: book
                .refused_files
                .iter()
                .map(|(file, reason)| RefusedFile {
                    file: file.clone(),
                    reason: reason.clone(),
                })
                .collect(),
        })
    }
}

/// The admin view of a service.
#[derive(Serialize)]
pub struct ServiceView {
    pub name: String,
    pub mode: Activation,
    pub active_version: Option<String>,
    /// Version → weight; one entry at 100 when a single version is active.
    pub traffic: BTreeMap<String, u32>,
    pub versions: Vec<VersionView>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub instances: usize,
    /// Newest first.
    pub history: Vec<Event>,
    pub refused_files: Vec<RefusedFile>,
}

/// The admin view of one version.
#[derive(Serialize)]
pub struct VersionView {
    pub version: String,
    pub state: VersionState,
    /// Why it is rejected or failed, as a sentence.
    pub reason: Option<String>,
    /// Why it is rejected, as structured data (`kind` says which reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    pub weight: Option<u32>,
    pub compile_ms: Option<f64>,
    pub from_cache: Option<bool>,
    pub loaded_at_ms: Option<u64>,
    pub requests: u64,
    pub errors: u64,
    pub instances: usize,
}

#[derive(Serialize)]
pub struct RefusedFile {
    pub file: String,
    pub reason: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

//! The one place that answers "which version of a service serves this call".
//!
//! The decisions are made by [`machine::Deployments`], a state machine over
//! plain data. [`Registry`] is the thin shell around it for the host's
//! [`LoadedVersion`]s: it makes each change under one lock, publishes each
//! service's new routing with a pointer swap, sends the events out on a
//! broadcast channel (metrics and logs subscribe; see [`Registry::subscribe`]),
//! and then, outside that lock but in the order of the changes, stores the
//! records of what changed through the async [`DeploymentStore`]. Reading the
//! state never waits for the store. Others read a service's book through
//! [`Registry::read_book`] (the admin API's views, the heartbeat's report);
//! none of them changes it.
//!
//! Routing is an [`ArcSwap`]: a request loads it once and keeps the version it
//! picked, so a swap never disturbs a call already running; the next request
//! sees the new routing.

pub mod events;
pub mod machine;
pub mod model;
#[cfg(test)]
mod shell_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use semver::Version;
use tokio::sync::broadcast;

use switchyard_runtime::CallError;
use switchyard_store::{DeploymentStore, StoreError, StoredDeployment};

pub use crate::version::{LastError, LoadedVersion};
pub use events::{Action, Cause, Change, Event, Failing, HistoryEntry};
pub use machine::{Book, Found, Stored};
pub use model::{
    Activation, Deployable, FailoverPolicy, FailureWindow, MAX_WEIGHT, Refusal, RegistryError,
    SplitError, VersionState, check_split,
};

/// Whose records a change stores, besides those of the services it logged
/// events for.
enum Persist<'a> {
    Touched,
    Also(&'a str),
    /// The service's, if the version is news to it as the change begins
    /// (see [`machine::Deployments::is_news`]): then the record must say
    /// the service knows it, even when nothing else changed.
    IfNews(&'a str, &'a Version),
    /// Every service's (at start-up).
    All,
}

/// The registry's state machine over the host's versions.
type Deployments = machine::Deployments<LoadedVersion>;
pub type Routing = model::Routing<LoadedVersion>;
pub type VersionEntry = model::VersionEntry<LoadedVersion>;

/// What a change came to, and whether another host's change to a record it
/// would store won (then the other host's is taken, and this one is lost).
struct Changed<T> {
    outcome: T,
    lost: Option<String>,
}

impl<T> Changed<T> {
    /// The outcome, or [`RegistryError::Conflict`] when the change was lost.
    fn or_conflict<R>(self) -> Result<R, RegistryError>
    where
        T: Into<Result<R, RegistryError>>,
    {
        match self.lost {
            Some(service) => Err(RegistryError::Conflict { service }),
            None => self.outcome.into(),
        }
    }
}

/// The stored records that can be read, by service. A record that cannot is
/// skipped with a warning; a stored split with invalid weights (stored by
/// an older host, before weights were checked) is dropped.
fn parse_records(rows: Vec<StoredDeployment>) -> BTreeMap<String, Stored> {
    rows.into_iter()
        .filter_map(|row| {
            let service = row.service;
            match serde_json::from_str::<model::Deployment>(&row.record) {
                Ok(mut deployment) => {
                    if !deployment.traffic.is_empty()
                        && let Err(e) = check_split(deployment.traffic.iter().map(|(_, w)| w))
                    {
                        tracing::warn!(%service, "ignoring the stored traffic split: {e}");
                        deployment.traffic.clear();
                    }
                    let generation = row.generation;
                    Some((
                        service,
                        Stored {
                            deployment,
                            generation,
                        },
                    ))
                }
                Err(e) => {
                    tracing::warn!(%service, "ignoring an unreadable deployment record: {e}");
                    None
                }
            }
        })
        .collect()
}

/// How many events a slow subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 1024;

/// A service's routing, read on every call.
pub struct Service {
    pub name: String,
    routing: ArcSwap<Routing>,
}

impl Service {
    /// Where this service's traffic goes now.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The version for one call, or `None` when nothing serves.
    pub fn pick(&self) -> Option<Arc<LoadedVersion>> {
        self.routing.load().pick()
    }

    /// Route as `routing` says: instances for the versions it adds, retirement
    /// for those it leaves.
    fn publish(&self, routing: Arc<Routing>) {
        for version in routing.versions() {
            version.pool.revive();
        }
        let old = self.routing.swap(routing);
        let new = self.routing.load();
        for version in old.versions() {
            if !new.routes_to(version) {
                version.pool.retire();
            }
        }
    }
}

/// Every service the host knows.
pub struct Registry {
    /// What requests read: each service's published routing.
    services: RwLock<BTreeMap<String, Arc<Service>>>,
    /// Which service provides each interface, for service-to-service
    /// calls: rebuilt whenever routing is published, so that a call looks
    /// its provider up instead of scanning every service's versions.
    providers: ArcSwap<HashMap<String, Arc<Service>>>,
    /// The decisions' state; every change holds this lock from decision to
    /// publication, so the compatibility check always sees a stable world.
    state: Mutex<Deployments>,
    /// Serialises changes from decision to stored record.
    persisting: tokio::sync::Mutex<()>,
    deployments: Arc<dyn DeploymentStore>,
    events: broadcast::Sender<Event>,
    /// Component files in the services folder that belong to no service
    /// (see `loader::misplaced`), by path under the folder, and why: never
    /// loaded, but listed, so that nothing is ignored silently. Not stored:
    /// the folder is read again at start-up.
    misplaced: Mutex<BTreeMap<String, String>>,
}

impl Registry {
    pub fn new(deployments: Arc<dyn DeploymentStore>) -> Registry {
        Registry {
            services: RwLock::default(),
            providers: ArcSwap::default(),
            state: Mutex::new(match deployments.changes() {
                Some(_) => Deployments::shared(),
                None => Deployments::default(),
            }),
            persisting: tokio::sync::Mutex::default(),
            deployments,
            events: broadcast::channel(EVENT_BACKLOG).0,
            misplaced: Mutex::default(),
        }
    }

    /// Every change from now on, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
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
        self.providers.load().get(interface)?.pick()
    }

    fn state(&self) -> MutexGuard<'_, Deployments> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `transition` on the state, then publish what it changed: routing
    /// swapped and events sent at once, then the records of the services
    /// `persist` names stored.
    async fn change<T>(
        &self,
        persist: Persist<'_>,
        transition: impl FnOnce(&mut Deployments, u64) -> T,
    ) -> Changed<T> {
        // Held until the records are stored, so that they reach the store in
        // the order the changes were made.
        let _in_order = self.persisting.lock().await;
        let (outcome, records) = {
            let mut state = self.state();
            let also = match persist {
                Persist::Also(service) => Some(service),
                Persist::IfNews(service, version) => {
                    state.is_news(service, version).then_some(service)
                }
                Persist::Touched | Persist::All => None,
            };
            let outcome = transition(&mut state, now_ms());
            let events = state.take_events();
            self.publish(&state);
            let mut names: BTreeSet<&str> = match persist {
                Persist::All => state.books().map(|(name, _)| name.as_str()).collect(),
                _ => also.into_iter().collect(),
            };
            names.extend(events.iter().map(|e| e.service.as_str()));
            let records: Vec<(String, model::Deployment, u64)> = names
                .into_iter()
                .filter_map(|name| {
                    let book = state.book(name)?;
                    Some((name.to_string(), book.record(), book.generation))
                })
                .collect();
            // Sent under the lock, so that subscribers see changes in order.
            for event in events {
                // No subscriber is not an error.
                let _ = self.events.send(event);
            }
            (outcome, records)
        };
        let mut lost = None;
        for (service, record, based_on) in records {
            let record = serde_json::to_string(&record).expect("a deployment serialises");
            match self
                .deployments
                .save_deployment(&service, &record, based_on)
                .await
            {
                Ok(generation) => self.state().stored(&service, generation),
                Err(StoreError::Conflict(_)) => {
                    tracing::warn!(%service, "another host changed the deployment first: taking its");
                    lost = Some(service);
                }
                Err(e) => tracing::error!(%service, "cannot persist the deployment: {e}"),
            }
        }
        if lost.is_some()
            && let Err(e) = self.take_stored().await
        {
            tracing::warn!("cannot read the deployment records: {e}");
        }
        Changed { outcome, lost }
    }

    /// Take what other hosts stored since this host last looked (the caller
    /// holds `persisting`).
    async fn take_stored(&self) -> Result<(), StoreError> {
        let stored = parse_records(self.deployments.load_deployments().await?);
        let mut state = self.state();
        let mut taken = Vec::new();
        for (service, stored) in stored {
            let generation = stored.generation;
            if state.adopt(&service, stored) {
                taken.push((service, generation));
            }
        }
        if !taken.is_empty() {
            self.publish(&state);
        }
        drop(state);
        for (service, generation) in taken {
            tracing::info!(%service, generation, "took the deployment another host stored");
        }
        Ok(())
    }

    /// Where other hosts' changes are announced, if anywhere: `None` when
    /// no other host can share the store.
    pub(crate) fn announced_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.deployments.changes()
    }

    /// Take what other hosts stored since this host last looked, in order
    /// with this host's own saves.
    pub(crate) async fn take_others_changes(&self) -> Result<(), StoreError> {
        let _in_order = self.persisting.lock().await;
        self.take_stored().await
    }

    /// Route every service as the state says.
    fn publish(&self, state: &Deployments) {
        let mut services = self.services.write().unwrap_or_else(|p| p.into_inner());
        for (name, book) in state.books() {
            let service = services.entry(name.clone()).or_insert_with(|| {
                Arc::new(Service {
                    name: name.clone(),
                    routing: ArcSwap::from_pointee(Routing::none()),
                })
            });
            if !Arc::ptr_eq(&service.routing.load(), &book.routing) {
                service.publish(book.routing.clone());
            }
        }
        // The first service by name whose routed versions export it, as
        // the compatibility check allows only one.
        let mut providers = HashMap::new();
        for service in services.values() {
            for version in service.routing().versions() {
                for export in &version.exports {
                    providers
                        .entry(export.name.clone())
                        .or_insert_with(|| service.clone());
                }
            }
        }
        self.providers.store(Arc::new(providers));
    }

    /// Set up every service found at start-up from what was stored before
    /// the restart (see [`machine::Deployments::bootstrap`]).
    pub async fn bootstrap(&self, found: Vec<Found<LoadedVersion>>) {
        let saved = match self.deployments.load_deployments().await {
            Ok(rows) => parse_records(rows),
            Err(e) => {
                tracing::error!("cannot read the deployment records: {e}");
                BTreeMap::new()
            }
        };
        // Every service's record, changed or not, so that versions seen now
        // are known at the next start.
        self.change(Persist::All, |state, now| {
            state.bootstrap(now, found, saved)
        })
        .await
        .outcome
    }

    /// A new or rebuilt version of `service` (a dropped file or an upload).
    /// Returns the state it ended up in, or why it was refused.
    pub async fn offer(
        &self,
        service: &str,
        mode: Activation,
        version: Version,
        entry: VersionEntry,
    ) -> Result<VersionState, Refusal> {
        let offered = version.clone();
        self.change(Persist::IfNews(service, &offered), |state, now| {
            state.offer(now, service, mode, version, entry)
        })
        .await
        .outcome
    }

    /// The file of `version` is gone: forget it (see
    /// [`machine::Deployments::withdraw`]).
    pub async fn withdraw(&self, service: &str, version: &Version) {
        self.change(Persist::Touched, |state, now| {
            state.withdraw(now, service, version)
        })
        .await;
    }

    /// Send all of `service`'s traffic to `version`.
    pub async fn activate(
        &self,
        service: &str,
        version: &Version,
        cause: Cause,
    ) -> Result<(), RegistryError> {
        self.change(Persist::Touched, |state, now| {
            state.activate(now, service, version, cause)
        })
        .await
        .or_conflict()
    }

    /// Back to the version that was active before the current one.
    pub async fn rollback(&self, service: &str) -> Result<Version, RegistryError> {
        // A rollback that found nothing still consumed the stale entries.
        self.change(Persist::Also(service), |state, now| {
            state.rollback(now, service)
        })
        .await
        .or_conflict()
    }

    /// Split `service`'s traffic across versions by relative weight.
    pub async fn set_traffic(
        &self,
        service: &str,
        weights: BTreeMap<Version, u32>,
    ) -> Result<(), RegistryError> {
        self.change(Persist::Touched, |state, now| {
            state.split(now, service, &weights)
        })
        .await
        .or_conflict()
    }

    /// Account for one call `version` served, and apply the failover rule: when
    /// its own failures cross the threshold while it serves, traffic moves to
    /// the previous good version.
    pub fn report(self: &Arc<Self>, version: &Arc<LoadedVersion>, failure: Option<&CallError>) {
        version.requests.fetch_add(1, Ordering::Relaxed);
        self.attempted(version, failure);
    }

    /// As [`Registry::report`], for one more attempt at a request already
    /// reported (a read retried on a fresh instance): an attempt, not a
    /// request.
    pub fn report_retry(
        self: &Arc<Self>,
        version: &Arc<LoadedVersion>,
        failure: Option<&CallError>,
    ) {
        version.request_metrics().retried();
        self.attempted(version, failure);
    }

    fn attempted(self: &Arc<Self>, version: &Arc<LoadedVersion>, failure: Option<&CallError>) {
        version.attempts.fetch_add(1, Ordering::Relaxed);
        if let Some(failure) = failure {
            self.report_late(version, failure);
        }
    }

    /// A call already reported as answered failed after all: a streamed
    /// response cut short by a trap or the deadline. Counted as an error of
    /// that request, and it may fail over like any failure.
    ///
    /// Never waits: the failover a failure decides is made and stored by a
    /// task of its own, so that the request that crossed the threshold
    /// answers at once even while the store is slow or out of reach.
    pub fn report_late(self: &Arc<Self>, version: &Arc<LoadedVersion>, failure: &CallError) {
        version.errors.fetch_add(1, Ordering::Relaxed);
        *version.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(LastError::of(failure, now_ms()));
        crate::metrics::call_failed(&version.service, &version.version_text, failure);
        let own = match failure {
            CallError::Trap(_)
            | CallError::Timeout(_)
            | CallError::OutOfMemory(_)
            | CallError::TooMuchData
            | CallError::Start(_) => true,
            CallError::Dependency(_) => false,
        };
        if own && version.failed() {
            let failing = Failing {
                failures: version.failover.threshold,
                window: version.failover.window,
                last: failure.to_string(),
            };
            let (registry, version) = (self.clone(), version.clone());
            tokio::spawn(async move {
                registry
                    .change(Persist::Touched, |state, now| {
                        state.fail_over(now, &version, failing)
                    })
                    .await;
            });
        }
    }

    /// A file in `service`'s folder that is not a version (its name is not semver).
    pub async fn refuse_file(&self, service: &str, file: &str, reason: &str) {
        self.change(Persist::Touched, |state, _| {
            state.refuse_file(service, file, reason)
        })
        .await;
    }

    /// `service`'s loaded versions built again with new settings take
    /// their old builds' place (see `Deployments::reconfigure`); the old
    /// builds' instances finish their calls and go.
    pub async fn reconfigure(
        &self,
        service: &str,
        mode: Activation,
        builds: Vec<Arc<LoadedVersion>>,
    ) -> usize {
        self.change(Persist::Touched, |state, _| {
            state.reconfigure(service, mode, builds)
        })
        .await
        .outcome
    }

    /// A refused file is gone again.
    pub fn forget_file(&self, service: &str, file: &str) {
        self.state().forget_file(service, file);
    }

    /// Is `digest` already what `service` `version` runs? (An upload's own file
    /// showing up in the folder, or a file touched without change.)
    pub fn has_build(&self, service: &str, version: &Version, digest: &str) -> bool {
        self.state()
            .book(service)
            .and_then(|b| b.loaded(version))
            .is_some_and(|v| v.digest == digest)
    }

    /// Every version `service` knows, loaded or rejected.
    pub fn versions_of(&self, service: &str) -> Vec<Version> {
        self.state()
            .book(service)
            .map(|b| b.versions.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Does `service` know `version` at all?
    pub fn has_version(&self, service: &str, version: &Version) -> bool {
        self.state()
            .book(service)
            .is_some_and(|b| b.versions.contains_key(version))
    }

    /// Every loaded version of every service.
    pub fn loaded_versions(&self) -> Vec<Arc<LoadedVersion>> {
        self.state()
            .books()
            .flat_map(|(_, b)| b.loaded_versions().cloned())
            .collect()
    }

    /// The component file `file` (its path under the services folder) will
    /// not be loaded, for `reason`; or, with `None`, it is gone.
    pub fn misplaced_file(&self, file: &str, reason: Option<&str>) {
        let mut misplaced = self.misplaced.lock().unwrap_or_else(|p| p.into_inner());
        match reason {
            Some(reason) => misplaced.insert(file.to_string(), reason.to_string()),
            None => misplaced.remove(file),
        };
    }

    /// The folder `dir` (under the services folder) is gone, and with it
    /// every misplaced file in it.
    pub fn forget_misplaced_in(&self, dir: &str) {
        let prefix = format!("{dir}/");
        let mut misplaced = self.misplaced.lock().unwrap_or_else(|p| p.into_inner());
        misplaced.retain(|file, _| !file.starts_with(&prefix));
    }

    /// Every misplaced component file and why it is not loaded, by path.
    pub fn misplaced_files(&self) -> BTreeMap<String, String> {
        self.misplaced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why nothing serves `service`, for the error a client gets; `None`
    /// when it has no version at all: every file of it was removed, so it
    /// is no service any more.
    pub fn unavailable_reason(&self, service: &str) -> Option<String> {
        let state = self.state();
        let book = state.book(service)?;
        if book.versions.is_empty() {
            return None;
        }
        let rejected = book.versions.iter().rev().find_map(|(v, e)| match e {
            model::VersionEntry::Rejected(reason) => Some((v.clone(), reason.clone())),
            model::VersionEntry::Loaded(_) => None,
        });
        Some(match rejected {
            Some((v, reason)) => {
                format!("service {service} has no active version ({v} was rejected: {reason})")
            }
            None => format!("service {service} has no active version"),
        })
    }

    /// The services that have versions but none serving: what `/readyz`
    /// waits for. A service whose every version was removed is not one.
    pub fn unready(&self) -> Vec<String> {
        self.read_books(|name, book| {
            (!book.versions.is_empty() && book.routing.primary().is_none())
                .then(|| name.to_string())
        })
        .into_iter()
        .flatten()
        .collect()
    }

    /// Read the book of service `name` (the registry's own record of it:
    /// versions, routing, history), briefly, under the registry's lock.
    pub fn read_book<R>(
        &self,
        name: &str,
        read: impl FnOnce(&Book<LoadedVersion>) -> R,
    ) -> Option<R> {
        self.state().book(name).map(read)
    }

    /// Read every service's book, in name order, as [`Registry::read_book`].
    pub fn read_books<R>(&self, mut read: impl FnMut(&str, &Book<LoadedVersion>) -> R) -> Vec<R> {
        self.state()
            .books()
            .map(|(name, book)| read(name, book))
            .collect()
    }
}

/// The state of `loaded`, version `version` of the service `book` records.
pub fn version_state(
    book: &Book<LoadedVersion>,
    version: &Version,
    loaded: &Arc<LoadedVersion>,
) -> VersionState {
    let failed = book.failed.contains_key(version);
    if book.routing.routes_to(loaded) {
        // Failover marks a version it could not move off.
        if failed {
            VersionState::Failing
        } else {
            VersionState::Active
        }
    } else if loaded.pool.leased() > 0 {
        VersionState::Draining
    } else if failed {
        VersionState::Failed
    } else {
        VersionState::Standby
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

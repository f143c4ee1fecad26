//! The registry's decisions, as a state machine over plain data.
//!
//! [`Deployments`] holds every service's versions, routing, rollback stack,
//! failed marks and history. Each transition (offer, withdraw, activate,
//! rollback, split, fail over, bootstrap) checks compatibility, changes the
//! state and records typed [`Event`]s, which the caller takes with
//! [`Deployments::take_events`]. Time comes in as an argument. It must never
//! do I/O, lock, log or touch a metric: the shell around it
//! ([`super::Registry`]) publishes the new routing, persists, and sends the
//! events out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use semver::Version;

use super::events::{Cause, Change, Event, Failing, HistoryEntry};
use super::model::{
    Activation, Deployable, Deployment, Refusal, RegistryError, Routing, VersionEntry,
    VersionState, check_split,
};
use crate::compat::{self, LoadStage};

/// How many history entries each service keeps.
pub const HISTORY_LEN: usize = 50;

/// One service's state.
pub struct Book<V> {
    pub mode: Activation,
    pub versions: BTreeMap<Version, VersionEntry<V>>,
    pub routing: Arc<Routing<V>>,
    /// Earlier primaries, most recent last: where rollback goes.
    pub previous: Vec<Version>,
    /// Every version seen, across restarts.
    pub known: BTreeSet<Version>,
    /// Newest last.
    pub history: VecDeque<HistoryEntry>,
    /// Files in the service's folder that are not `<semver>.wasm`, and why.
    pub refused_files: BTreeMap<String, String>,
    /// Versions failover took out of traffic, and why.
    pub failed: BTreeMap<Version, String>,
    /// The generation of the stored record this state reflects (0: none).
    pub generation: u64,
    /// The stored record's routing while this host cannot serve it (it
    /// lacks a version the record names): what its own records keep
    /// saying, and what it routes to as soon as it has those versions
    /// ([`Book::disagreement`] says why it cannot yet). A decision made
    /// here (an activation, a split, a failover) ends it.
    pub wanted: Option<Wanted>,
}

/// A stored record's routing: its active version, or its split.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub active: Option<Version>,
    pub traffic: Vec<(Version, u32)>,
}

impl Wanted {
    fn of(deployment: &Deployment) -> Wanted {
        Wanted {
            active: deployment.active.clone(),
            traffic: deployment.traffic.clone(),
        }
    }

    /// Each version it routes to, with its weight.
    fn versions(&self) -> Vec<(Version, u32)> {
        if self.traffic.is_empty() {
            self.active.iter().map(|v| (v.clone(), 100)).collect()
        } else {
            self.traffic.clone()
        }
    }
}

impl<V: Deployable> Default for Book<V> {
    fn default() -> Self {
        Book {
            mode: Activation::default(),
            versions: BTreeMap::new(),
            routing: Arc::new(Routing::none()),
            previous: Vec::new(),
            known: BTreeSet::new(),
            history: VecDeque::new(),
            refused_files: BTreeMap::new(),
            failed: BTreeMap::new(),
            generation: 0,
            wanted: None,
        }
    }
}

impl<V: Deployable> Book<V> {
    pub fn loaded(&self, version: &Version) -> Option<&Arc<V>> {
        match self.versions.get(version) {
            Some(VersionEntry::Loaded(v)) => Some(v),
            _ => None,
        }
    }

    /// Every loaded version (serving, standby, draining or failed).
    pub fn loaded_versions(&self) -> impl DoubleEndedIterator<Item = &Arc<V>> {
        self.versions.values().filter_map(|e| match e {
            VersionEntry::Loaded(v) => Some(v),
            VersionEntry::Rejected(_) => None,
        })
    }

    fn highest_loaded(&self) -> Option<&Arc<V>> {
        self.loaded_versions().last()
    }

    /// `version`, if it can be given traffic; else why not.
    fn usable(&self, service: &str, version: &Version) -> Result<Arc<V>, RegistryError> {
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

    /// The version the service's record names active: the stored record's
    /// while this host follows one it cannot serve, else its own primary.
    fn active_version(&self) -> Option<&Version> {
        match &self.wanted {
            Some(wanted) => wanted.active.as_ref(),
            None => self.routing.primary().map(|p| p.version()),
        }
    }

    /// Why this host cannot serve each version `wanted` names, if it cannot.
    fn unmet(&self, wanted: &Wanted) -> Vec<String> {
        wanted
            .versions()
            .iter()
            .filter_map(|(v, _)| match self.versions.get(v) {
                Some(VersionEntry::Loaded(_)) => None,
                Some(VersionEntry::Rejected(why)) => Some(format!("{v} (refused here: {why})")),
                None => Some(format!("{v} (not loaded here)")),
            })
            .collect()
    }

    /// Why this host cannot serve as the stored record says, if it cannot.
    pub fn disagreement(&self) -> Option<String> {
        let missing = self.unmet(self.wanted.as_ref()?);
        (!missing.is_empty()).then(|| {
            format!(
                "the cluster serves {}; this host serves what it has",
                missing.join(", ")
            )
        })
    }

    /// Route as `wanted` says if this host has every version it names, and
    /// return true; else keep routing as it does and remember `wanted`.
    fn follow(&mut self, wanted: Wanted) -> bool {
        if !self.unmet(&wanted).is_empty() {
            self.wanted = Some(wanted);
            return false;
        }
        let entries: Vec<(Arc<V>, u32)> = wanted
            .versions()
            .iter()
            .filter_map(|(v, w)| self.loaded(v).map(|l| (l.clone(), *w)))
            .collect();
        self.routing = Arc::new(match entries.len() {
            0 => Routing::none(),
            1 => Routing::single(entries[0].0.clone()),
            _ => Routing::split(entries),
        });
        self.wanted = None;
        true
    }

    /// Take `stored`, another host's record, as this book's (see
    /// [`Deployments::adopt`]).
    /// Where no other host shares the record (`follow` false), this host's
    /// routing stays its own.
    fn take(&mut self, stored: Stored, follow: bool) {
        let Stored {
            deployment,
            generation,
        } = stored;
        if follow {
            self.follow(Wanted::of(&deployment));
        }
        self.previous = deployment.previous;
        self.known.extend(deployment.known);
        self.history = deployment.history;
        self.failed = deployment.failed;
        self.generation = generation;
    }

    /// Route to `routing`; the primary it replaces (if another) goes on the
    /// rollback stack.
    fn reroute(&mut self, routing: Routing<V>) {
        if let (Some(current), Some(next)) = (self.routing.primary(), routing.primary())
            && current.version() != next.version()
        {
            self.previous.push(current.version().clone());
        }
        self.routing = Arc::new(routing);
    }

    /// What survives a restart.
    pub fn record(&self) -> Deployment {
        // While following a record this host cannot serve, what it serves
        // meanwhile is its own affair: the record keeps the cluster's routing.
        let wanted = self.wanted.clone().unwrap_or_else(|| Wanted {
            active: self.routing.primary().map(|v| v.version().clone()),
            traffic: if self.routing.is_split() {
                self.routing
                    .weights()
                    .map(|(v, w)| (v.clone(), w))
                    .collect()
            } else {
                Vec::new()
            },
        });
        Deployment {
            active: wanted.active,
            traffic: wanted.traffic,
            previous: self.previous.clone(),
            known: self.known.clone(),
            history: self.history.clone(),
            failed: self.failed.clone(),
            rejected: self
                .versions
                .iter()
                .filter_map(|(version, entry)| match entry {
                    VersionEntry::Rejected(why @ Refusal::Incompatible { .. }) => {
                        Some((version.clone(), why.clone()))
                    }
                    _ => None,
                })
                .collect(),
        }
    }
}

/// One service as the loader found it at start-up.
pub struct Found<V> {
    pub name: String,
    pub mode: Activation,
    pub versions: BTreeMap<Version, VersionEntry<V>>,
    pub refused_files: BTreeMap<String, String>,
}

/// A service's deployment as stored, with its generation.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub deployment: Deployment,
    pub generation: u64,
}

/// What serves: each service's name with the versions its traffic goes to.
type Serving<V> = Vec<(String, Vec<Arc<V>>)>;

/// Every service's state, and the events of the transitions not yet taken.
pub struct Deployments<V> {
    books: BTreeMap<String, Book<V>>,
    /// Stored records of services this host has no book of yet.
    unheld: BTreeMap<String, Stored>,
    /// Whether other hosts share the records: then a stored record this
    /// host cannot serve yet is followed, not replaced by its own choice.
    shared: bool,
    events: Vec<Event>,
}

impl<V: Deployable> Default for Deployments<V> {
    fn default() -> Self {
        Deployments {
            books: BTreeMap::new(),
            unheld: BTreeMap::new(),
            shared: false,
            events: Vec::new(),
        }
    }
}

impl<V: Deployable> Deployments<V> {
    /// The state of a host whose records other hosts share.
    pub fn shared() -> Self {
        Deployments {
            shared: true,
            ..Deployments::default()
        }
    }

    pub fn book(&self, service: &str) -> Option<&Book<V>> {
        self.books.get(service)
    }

    /// Every service, by name.
    pub fn books(&self) -> impl Iterator<Item = (&String, &Book<V>)> {
        self.books.iter()
    }

    /// The events recorded since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn book_mut(&mut self, service: &str) -> Result<&mut Book<V>, RegistryError> {
        self.books
            .get_mut(service)
            .ok_or_else(|| RegistryError::UnknownService {
                service: service.to_string(),
            })
    }

    /// `service`'s book; a new one follows the record another host stored
    /// of it, if one did.
    fn book_or_new(&mut self, service: &str) -> &mut Book<V> {
        let (unheld, shared) = (&mut self.unheld, self.shared);
        self.books.entry(service.to_string()).or_insert_with(|| {
            let mut book = Book::default();
            if let Some(stored) = unheld.remove(service) {
                book.take(stored, shared);
            }
            book
        })
    }

    /// Record `change` in `service`'s history and among the events.
    fn log(&mut self, service: &str, at_ms: u64, change: Change) {
        let event = Event {
            service: service.to_string(),
            at_ms,
            change,
        };
        let book = self.book_or_new(service);
        if event.change.routes() {
            // A decision made here: the records say it from now on.
            book.wanted = None;
        }
        let history = &mut book.history;
        history.push_back(event.entry());
        while history.len() > HISTORY_LEN {
            history.pop_front();
        }
        self.events.push(event);
    }

    /// What serves now, with `service`'s routing replaced by `routing`.
    fn serving(&self, service: &str, routing: Option<&[Arc<V>]>) -> Serving<V> {
        self.books
            .iter()
            .map(|(name, book)| {
                let versions = match routing {
                    Some(versions) if name == service => versions.to_vec(),
                    _ => book.routing.versions().cloned().collect(),
                };
                (name.clone(), versions)
            })
            .collect()
    }

    /// Can `candidate` serve alone as its service's routing?
    fn fits_alone(&self, candidate: &Arc<V>) -> Result<(), compat::Incompatibility> {
        let serving = self.serving(candidate.service(), Some(std::slice::from_ref(candidate)));
        compat::check(&**candidate, &serving)
    }

    /// Set up every service found at start-up, given what was stored before
    /// the restart: restore what was active (or the traffic split), activate
    /// the highest version of services that had none, and then, in auto mode,
    /// versions that arrived while the host was stopped. A version whose
    /// imports no serving version satisfies is rejected, falling back to the
    /// next one.
    pub fn bootstrap(
        &mut self,
        now: u64,
        found: Vec<Found<V>>,
        mut saved: BTreeMap<String, Stored>,
    ) {
        // Each service's candidates, best first.
        let mut choices: BTreeMap<String, Vec<Arc<V>>> = BTreeMap::new();
        // What each service's record routes to, where others share it.
        let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
        for found in found {
            let Stored {
                deployment: stored,
                generation,
            } = saved.remove(&found.name).unwrap_or_default();
            if self.shared {
                wanted.insert(found.name.clone(), Wanted::of(&stored));
            }
            let book = self.book_or_new(&found.name);
            book.mode = found.mode;
            book.versions = found.versions;
            // Refused before the restart for not fitting: still refused,
            // for the same reason, until its file is dropped in again.
            for (version, why) in stored.rejected {
                if let Some(entry @ VersionEntry::Loaded(_)) = book.versions.get_mut(&version) {
                    *entry = VersionEntry::Rejected(why);
                }
            }
            book.refused_files = found.refused_files;
            book.previous = stored.previous;
            book.history = stored.history;
            book.known = stored.known;
            book.failed = stored.failed;
            book.generation = generation;
            let mut preferred: Vec<Arc<V>> = Vec::new();
            if let Some(active) = stored.active.as_ref().and_then(|v| book.loaded(v)) {
                preferred.push(active.clone());
            }
            for v in book.loaded_versions().rev() {
                if !preferred.iter().any(|p| Arc::ptr_eq(p, v)) {
                    preferred.push(v.clone());
                }
            }
            choices.insert(found.name.clone(), preferred);
            let split: Vec<(Arc<V>, u32)> = stored
                .traffic
                .iter()
                .filter_map(|(v, w)| book.loaded(v).map(|l| (l.clone(), *w)))
                .collect();
            if split.len() == stored.traffic.len()
                && split.len() > 1
                && check_split(split.iter().map(|(_, w)| w)).is_ok()
            {
                book.routing = Arc::new(Routing::split(split));
            }
        }

        // Reject would-be active versions whose imports are not satisfied
        // until every one is; each round rejects one version, so this ends.
        loop {
            let serving: Serving<V> = choices
                .iter()
                .map(|(name, c)| (name.clone(), c.first().cloned().into_iter().collect()))
                .collect();
            let refusal = serving.iter().find_map(|(name, versions)| {
                let candidate = versions.first()?;
                compat::check(&**candidate, &serving)
                    .err()
                    .map(|why| (name.clone(), why))
            });
            let Some((name, why)) = refusal else { break };
            let rejected = choices.get_mut(&name).expect("from choices").remove(0);
            let version = rejected.version().clone();
            let why = Refusal::from(why);
            self.book_or_new(&name)
                .versions
                .insert(version.clone(), VersionEntry::Rejected(why.clone()));
            self.log(&name, now, Change::Rejected { version, why });
        }

        // Records of services with no file here, for when one arrives.
        self.unheld.append(&mut saved);

        for (name, chosen) in choices {
            let book = self.book_or_new(&name);
            let keeps_split = book
                .routing
                .primary()
                .is_some_and(|p| chosen.first().is_some_and(|c| Arc::ptr_eq(p, c)));
            if !keeps_split {
                book.routing = Arc::new(
                    chosen
                        .first()
                        .cloned()
                        .map_or_else(Routing::none, Routing::single),
                );
            }
            // Serving what it has until it has what the cluster serves.
            if let Some(wanted) = wanted.remove(&name)
                && !book.unmet(&wanted).is_empty()
            {
                book.follow(wanted);
            }
        }

        let names: Vec<String> = self.books.keys().cloned().collect();
        for name in names {
            let book = &self.books[&name];
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
            let primary = book.active_version().cloned();
            if book.mode == Activation::Auto
                && let Some(newest) = newest
                && primary.as_ref().is_some_and(|p| &newest > p)
                && let Err(e) = self.activate(now, &name, &newest, Cause::AutoWhileStopped)
            {
                let why = refusal_of(e);
                self.log(
                    &name,
                    now,
                    Change::Rejected {
                        version: newest,
                        why,
                    },
                );
            }
            let book = &self.books[&name];
            if book.wanted.is_none()
                && let Some(primary) = book.routing.primary().map(|p| p.version().clone())
                && book
                    .history
                    .back()
                    .is_none_or(|e| e.version.as_ref() != Some(&primary.to_string()))
            {
                self.log(
                    &name,
                    now,
                    Change::Activated {
                        version: primary,
                        cause: Cause::StartUp,
                    },
                );
            }
            self.book_or_new(&name).known.extend(arrivals);
        }
    }

    /// Whether `version` arriving here is news to `service`: never seen,
    /// or a new build of one this host has. A version the service knows
    /// but this host lacks is catching up with the others (fetched from
    /// them): what it does was decided, and recorded, where it arrived
    /// first, so it activates nothing and adds no history.
    pub fn is_news(&self, service: &str, version: &Version) -> bool {
        match self.books.get(service) {
            Some(book) => book.versions.contains_key(version) || !book.known.contains(version),
            None => !self
                .unheld
                .get(service)
                .is_some_and(|stored| stored.deployment.known.contains(version)),
        }
    }

    /// A new or rebuilt version of `service` (a dropped file or an upload).
    /// Returns the state it ended up in, or why it was refused.
    pub fn offer(
        &mut self,
        now: u64,
        service: &str,
        mode: Activation,
        version: Version,
        entry: VersionEntry<V>,
    ) -> Result<VersionState, Refusal> {
        let news = self.is_news(service, &version);
        let book = self.book_or_new(service);
        book.mode = mode;
        book.known.insert(version.clone());
        let serving_now = book.routing.weight_of(&version).is_some();
        let loaded = match entry {
            VersionEntry::Loaded(loaded) => {
                match compat::check(&*loaded, &self.serving(service, None)) {
                    Ok(()) => loaded,
                    Err(why) => return Err(self.refuse(now, service, version, why.into())),
                }
            }
            VersionEntry::Rejected(why) => return Err(self.refuse(now, service, version, why)),
        };
        let book = self.book_or_new(service);
        book.versions
            .insert(version.clone(), VersionEntry::Loaded(loaded.clone()));
        if serving_now {
            book.routing = Arc::new(book.routing.with_replaced(&loaded));
            self.log(service, now, Change::Replaced { version });
            return Ok(VersionState::Active);
        }
        if let Some(wanted) = book.wanted.clone() {
            book.follow(wanted);
        }
        let higher = book.active_version().is_none_or(|a| &version > a);
        if book.mode == Activation::Auto && news && higher {
            self.activate(now, service, &version, Cause::Auto)
                .map_err(refusal_of)?;
            return Ok(VersionState::Active);
        }
        let serving = book.routing.weight_of(&version).is_some();
        if news {
            self.log(service, now, Change::Added { version });
        }
        Ok(if serving {
            VersionState::Active
        } else {
            VersionState::Standby
        })
    }

    /// `version` of `service` cannot serve, for `why`. A new version is
    /// rejected; a new build of a serving version is refused, and the build
    /// that serves stays.
    fn refuse(&mut self, now: u64, service: &str, version: Version, why: Refusal) -> Refusal {
        let book = self.book_or_new(service);
        let change = if book.routing.weight_of(&version).is_some() {
            Change::Refused {
                version,
                why: why.clone(),
            }
        } else {
            book.versions
                .insert(version.clone(), VersionEntry::Rejected(why.clone()));
            Change::Rejected {
                version,
                why: why.clone(),
            }
        };
        self.log(service, now, change);
        why
    }

    /// The file of `version` is gone: forget it. If it was serving, traffic
    /// falls back to the version before it, else to the highest one left.
    pub fn withdraw(&mut self, now: u64, service: &str, version: &Version) {
        let Ok(book) = self.book_mut(service) else {
            return;
        };
        if book.versions.remove(version).is_none() {
            return;
        }
        // Forgotten: dropped in again, it is news.
        book.known.remove(version);
        self.log(
            service,
            now,
            Change::Removed {
                version: version.clone(),
            },
        );
        let book = self.book_or_new(service);
        if book.routing.weight_of(version).is_none() {
            return;
        }
        let rest = book.routing.without(version);
        if rest.primary().is_some() {
            book.routing = Arc::new(rest);
            return;
        }
        let fallback = book
            .previous
            .iter()
            .rev()
            .find_map(|v| book.loaded(v))
            .or_else(|| book.highest_loaded())
            .cloned();
        match fallback {
            // While it follows a record it cannot serve, what this host
            // serves meanwhile is its own affair, not the cluster's choice.
            Some(fallback) if book.wanted.is_some() => {
                book.routing = Arc::new(Routing::single(fallback));
            }
            Some(fallback) => {
                book.routing = Arc::new(Routing::single(fallback.clone()));
                let change = Change::Activated {
                    version: fallback.version().clone(),
                    cause: Cause::Fallback {
                        removed: version.clone(),
                    },
                };
                self.log(service, now, change);
            }
            None => book.routing = Arc::new(Routing::none()),
        }
    }

    /// Send all of `service`'s traffic to `version`.
    pub fn activate(
        &mut self,
        now: u64,
        service: &str,
        version: &Version,
        cause: Cause,
    ) -> Result<(), RegistryError> {
        let loaded = self.book_mut(service)?.usable(service, version)?;
        self.fits_alone(&loaded)
            .map_err(|why| RegistryError::Incompatible {
                service: service.to_string(),
                version: version.clone(),
                why: Box::new(why),
            })?;
        let book = self.book_or_new(service);
        book.reroute(Routing::single(loaded));
        book.failed.remove(version);
        let change = Change::Activated {
            version: version.clone(),
            cause,
        };
        self.log(service, now, change);
        Ok(())
    }

    /// Back to the version that was active before the current one, skipping
    /// versions gone or rejected since.
    pub fn rollback(&mut self, now: u64, service: &str) -> Result<Version, RegistryError> {
        let book = self.book_mut(service)?;
        // From what the service's record serves, where this host follows it.
        let current = book.active_version().cloned();
        while let Some(previous) = book.previous.pop() {
            if Some(&previous) == current.as_ref() {
                continue;
            }
            let Some(loaded) = book.loaded(&previous).cloned() else {
                continue;
            };
            if let Err(why) = self.fits_alone(&loaded) {
                self.book_or_new(service).previous.push(previous.clone());
                return Err(RegistryError::Incompatible {
                    service: service.to_string(),
                    version: previous,
                    why: Box::new(why),
                });
            }
            self.book_or_new(service).routing = Arc::new(Routing::single(loaded));
            let change = Change::Activated {
                version: previous.clone(),
                cause: Cause::Rollback { from: current },
            };
            self.log(service, now, change);
            return Ok(previous);
        }
        Err(RegistryError::NoPrevious {
            service: service.to_string(),
        })
    }

    /// Split `service`'s traffic across versions by relative weight.
    pub fn split(
        &mut self,
        now: u64,
        service: &str,
        weights: &BTreeMap<Version, u32>,
    ) -> Result<(), RegistryError> {
        let book = self.book_mut(service)?;
        check_split(weights.values())?;
        let mut entries = Vec::new();
        for (version, weight) in weights.iter().filter(|(_, w)| **w > 0) {
            entries.push((book.usable(service, version)?, *weight));
        }
        // The heaviest version is the primary; on a tie, the highest.
        entries.sort_by(|(a, wa), (b, wb)| wb.cmp(wa).then(b.version().cmp(a.version())));
        let versions: Vec<Arc<V>> = entries.iter().map(|(v, _)| v.clone()).collect();
        let serving = self.serving(service, Some(&versions));
        for version in &versions {
            compat::check(&**version, &serving).map_err(|why| RegistryError::Incompatible {
                service: service.to_string(),
                version: version.version().clone(),
                why: Box::new(why),
            })?;
        }
        let weights = entries
            .iter()
            .map(|(v, w)| (v.version().clone(), *w))
            .collect();
        self.book_or_new(service).reroute(Routing::split(entries));
        self.log(service, now, Change::Split { weights });
        Ok(())
    }

    /// `failing`'s own failures crossed its threshold: if it still takes
    /// traffic, mark it failed and move the traffic to the most recent
    /// healthy previous version, else the highest healthy one; with none
    /// left, drop it from a split, or leave it serving alone.
    pub fn fail_over(&mut self, now: u64, failing: &Arc<V>, failure: Failing) {
        let service = failing.service();
        let Ok(book) = self.book_mut(service) else {
            return;
        };
        if !book.routing.routes_to(failing) {
            return;
        }
        let failed = failing.version().clone();
        book.failed.insert(failed.clone(), failure.to_string());
        let book = &self.books[service];
        let healthy = |v: &Arc<V>| {
            v.version() != &failed
                && !book.failed.contains_key(v.version())
                && self.fits_alone(v).is_ok()
        };
        let fallback = book
            .previous
            .iter()
            .rev()
            .filter_map(|v| book.loaded(v))
            .find(|v| healthy(v))
            .or_else(|| book.loaded_versions().rev().find(|v| healthy(v)))
            .cloned();
        let book = self.book_or_new(service);
        match fallback {
            Some(fallback) => {
                while let Some(top) = book.previous.pop() {
                    if &top == fallback.version() {
                        break;
                    }
                }
                book.routing = Arc::new(Routing::single(fallback.clone()));
                let change = Change::FailedOver {
                    failed,
                    to: fallback.version().clone(),
                    failure,
                };
                self.log(service, now, change);
            }
            None => {
                let rest = book.routing.without(&failed);
                if rest.primary().is_some() {
                    book.routing = Arc::new(rest);
                }
                self.log(service, now, Change::NoFallback { failed, failure });
            }
        }
    }

    /// Another host stored `stored` as `service`'s deployment: take it as
    /// this host's, unless this host already reflects that generation. Routing
    /// follows the record where this host has the versions it names; where it
    /// lacks one, it keeps its own routing, says why ([`Book::disagreement`])
    /// and follows as soon as it has them ([`Book::wanted`]). A service this
    /// host has no book of yet keeps the record for the book its first
    /// version here makes. History comes with the record (the host that made
    /// the change logged it), so no event. Returns whether anything was taken.
    pub fn adopt(&mut self, service: &str, stored: Stored) -> bool {
        let Some(book) = self.books.get_mut(service) else {
            // Kept for when a version of it arrives here.
            let newer = self
                .unheld
                .get(service)
                .is_none_or(|held| held.generation < stored.generation);
            if newer {
                self.unheld.insert(service.to_string(), stored);
            }
            return false;
        };
        if stored.generation <= book.generation {
            return false;
        }
        book.take(stored, true);
        true
    }

    /// `service`'s record is stored as `generation`.
    pub fn stored(&mut self, service: &str, generation: u64) {
        if let Ok(book) = self.book_mut(service) {
            book.generation = generation;
        }
    }

    /// A file in `service`'s folder that is not a version (its name is not semver).
    pub fn refuse_file(&mut self, service: &str, file: &str, reason: &str) {
        self.book_or_new(service)
            .refused_files
            .insert(file.to_string(), reason.to_string());
    }

    /// New builds of `service`'s loaded versions with new settings (its
    /// `service.toml` changed), each taking its old build's place, in the
    /// routing too. What serves, the weights and the history stay as they
    /// are: no event, nothing stored. The settings' activation `mode`
    /// applies from now on. Returns how many versions took their place (a
    /// version withdrawn meanwhile is skipped).
    pub fn reconfigure(&mut self, service: &str, mode: Activation, builds: Vec<Arc<V>>) -> usize {
        let Ok(book) = self.book_mut(service) else {
            return 0;
        };
        book.mode = mode;
        let mut replaced = 0;
        for build in builds {
            let Some(entry @ VersionEntry::Loaded(_)) = book.versions.get_mut(build.version())
            else {
                continue;
            };
            *entry = VersionEntry::Loaded(build.clone());
            if book.routing.weight_of(build.version()).is_some() {
                book.routing = Arc::new(book.routing.with_replaced(&build));
            }
            replaced += 1;
        }
        replaced
    }

    /// A refused file is gone again.
    pub fn forget_file(&mut self, service: &str, file: &str) {
        if let Ok(book) = self.book_mut(service) {
            book.refused_files.remove(file);
        }
    }
}

/// An activation that failed, as the refusal of the version offered.
fn refusal_of(error: RegistryError) -> Refusal {
    match error {
        RegistryError::Incompatible { why, .. } => Refusal::from(*why),
        other => Refusal::load(LoadStage::Activate, other),
    }
}

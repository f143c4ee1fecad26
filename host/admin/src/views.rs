//! The admin API's views of the registry: a service with its versions,
//! functions, history and refused files, as `GET /admin/services` shows it.
//! Reading only: it never changes what the registry decides.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use switchyard_control::registry::{
    Activation, Book, HistoryEntry, LastError, LoadedVersion, Refusal, Registry, VersionEntry,
    VersionState, version_state,
};
use switchyard_control::rpc;
use switchyard_runtime::{ComponentKind, InterfaceUse, Provider};

/// The admin view of one service.
pub fn describe(registry: &Registry, name: &str) -> Option<ServiceView> {
    registry.read_book(name, |book| view(name, book))
}

fn view(name: &str, book: &Book<LoadedVersion>) -> ServiceView {
    let routing = &book.routing;
    let active = routing.primary();
    let versions: Vec<VersionView> = book
        .versions
        .iter()
        .rev()
        .map(|(version, entry)| match entry {
            VersionEntry::Loaded(v) => VersionView {
                version: version.to_string(),
                kind: Some(v.kind),
                state: version_state(book, version, v),
                reason: book.failed.get(version).cloned(),
                refusal: None,
                weight: routing.weight_of(version),
                compile_ms: Some(v.compile_time.as_secs_f64() * 1e3),
                from_cache: Some(v.from_cache),
                loaded_at_ms: Some(v.loaded_at_ms),
                requests: v.requests.load(Ordering::Relaxed),
                attempts: v.attempts.load(Ordering::Relaxed),
                errors: v.errors.load(Ordering::Relaxed),
                last_error: v
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                instances: v.pool.instances(),
            },
            VersionEntry::Rejected(reason) => VersionView {
                version: version.to_string(),
                kind: None,
                state: VersionState::Rejected,
                reason: Some(reason.to_string()),
                refusal: Some(reason.clone()),
                weight: None,
                compile_ms: None,
                from_cache: None,
                loaded_at_ms: None,
                requests: 0,
                attempts: 0,
                errors: 0,
                last_error: None,
                instances: 0,
            },
        })
        .collect();
    let names =
        |uses: &mut dyn Iterator<Item = &InterfaceUse>| uses.map(|u| u.name.clone()).collect();
    ServiceView {
        name: name.to_string(),
        removed: book.versions.is_empty(),
        mode: book.mode,
        active_version: active.map(|v| v.version.to_string()),
        traffic: routing.weights().map(|(v, w)| (v.to_string(), w)).collect(),
        instances: versions.iter().map(|v| v.instances).sum(),
        exports: active.map_or_else(Vec::new, |v| names(&mut v.exports.iter())),
        functions: active.map_or_else(Vec::new, |v| {
            rpc::callable(&v.exports)
                .flat_map(|interface| {
                    interface.functions.iter().map(|function| FunctionView {
                        interface: interface.name.clone(),
                        function: function.name.clone(),
                        signature: function.signature.to_string(),
                        rpc: rpc::path_of(name, &v.exports, &interface.name, &function.name),
                        public: rpc::is_published(&v.published, &interface.name, &function.name),
                    })
                })
                .collect()
        }),
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
        generation: book.generation,
        disagreement: book.disagreement(),
    }
}

/// The admin view of a service.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceView {
    pub name: String,
    /// Every version's file was removed: it serves nothing, `/readyz` does
    /// not wait for it and its routes answer 404; its history stays until
    /// the host restarts.
    pub removed: bool,
    pub mode: Activation,
    pub active_version: Option<String>,
    /// Version → weight; one entry at 100 when a single version is active.
    pub traffic: BTreeMap<String, u32>,
    pub versions: Vec<VersionView>,
    pub exports: Vec<String>,
    /// The functions of the active version's interfaces, which other
    /// services and `POST /rpc/...` can call.
    pub functions: Vec<FunctionView>,
    pub imports: Vec<String>,
    pub instances: usize,
    /// Newest first.
    pub history: Vec<HistoryEntry>,
    pub refused_files: Vec<RefusedFile>,
    /// The generation of the stored record this host serves by (every
    /// change bumps it; hosts sharing a store converge on the same).
    pub generation: u64,
    /// Why this host cannot serve as the stored record says, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disagreement: Option<String>,
}

/// The admin view of one version.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: String,
    /// Its kind of component (none when it is rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ComponentKind>,
    pub state: VersionState,
    /// Why it is rejected or failed, as a sentence.
    pub reason: Option<String>,
    /// Why it is rejected, as structured data (`kind` says which reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub refusal: Option<Refusal>,
    pub weight: Option<u32>,
    pub compile_ms: Option<f64>,
    pub from_cache: Option<bool>,
    pub loaded_at_ms: Option<u64>,
    /// HTTP requests and calls from other services it answered.
    pub requests: u64,
    /// Calls made on its instances: requests and their retries.
    pub attempts: u64,
    /// Attempts that failed on its side.
    pub errors: u64,
    /// The most recent of those failures, with what the guest wrote to
    /// stderr as it failed.
    pub last_error: Option<LastError>,
    pub instances: usize,
}

/// One exported function, as the admin view lists it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FunctionView {
    pub interface: String,
    pub function: String,
    /// Its WIT type, as `func(id: string) -> option<...>`.
    pub signature: String,
    /// The path that calls it with JSON.
    pub rpc: String,
    /// Whether anonymous clients may call it over `/rpc` (its service's
    /// `[rpc] public` names it); else only other services and operators.
    pub public: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RefusedFile {
    pub file: String,
    pub reason: String,
}

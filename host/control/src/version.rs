//! One version of a service as the host runs it: compiled, validated,
//! linked, with its instance pool and what the registry counts of it.
//!
//! It owns the version's own facts and counters; deciding what serves
//! (routing, states, failover) is the registry's, never this file's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use semver::Version;
use switchyard_metrics::signals::Signals;
use switchyard_runtime::{CallError, ComponentKind, GUEST_ERROR_BYTES, InterfaceUse};
use wasmtime::component::Component;

use crate::balance::{HashKey, InstancePool};
use crate::deployable::Deployable;
use crate::failover::{FailoverPolicy, FailureWindow};
use crate::metrics::RequestMetrics;

/// A version compiled, validated and linked: able to take traffic.
pub struct LoadedVersion {
    pub service: String,
    pub version: Version,
    /// `version` as text, for labels and headers: formatted once.
    pub version_text: String,
    pub imports: Vec<InterfaceUse>,
    pub exports: Vec<InterfaceUse>,
    /// The part of `exports` its `service.toml` publishes to anonymous
    /// clients over `/rpc` (see [`crate::rpc::publish`]).
    pub published: Vec<InterfaceUse>,
    pub pool: Arc<InstancePool>,
    /// SHA-256 of the component file.
    pub digest: String,
    pub compile_time: Duration,
    pub from_cache: bool,
    pub loaded_at_ms: u64,
    /// Requests and calls it answered (a retried read counts once).
    pub requests: AtomicU64,
    /// Calls made on its instances: requests and their retries.
    pub attempts: AtomicU64,
    /// Attempts that failed on its side.
    pub errors: AtomicU64,
    /// Where a consistent-hash service finds a request's key.
    pub hash_key: Option<HashKey>,
    /// How the gateway runs requests on it.
    pub kind: ComponentKind,
    pub failover: FailoverPolicy,
    pub failures: Mutex<FailureWindow>,
    /// Its most recent failure, for the admin view.
    pub last_error: Mutex<Option<LastError>>,
    /// Registered at the first request, when the recorder is surely installed.
    pub(crate) request_metrics: OnceLock<RequestMetrics>,
    /// Its calls over the last minute, for the dashboard (shared with the
    /// build that replaces it when its settings change).
    pub signals: Arc<Signals>,
    /// The compiled component, for building it again with new settings.
    pub component: Component,
}

/// A version's most recent failure, as operators read it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LastError {
    pub at_ms: u64,
    /// How the call failed, in one line (for a trap, the trap without its
    /// wasm backtrace).
    pub failure: String,
    /// The end of what the guest wrote to stderr during the call that
    /// trapped (a panic message, a traceback, an exception), when it wrote
    /// anything there: at most [`GUEST_ERROR_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

impl LastError {
    pub fn of(failure: &CallError, at_ms: u64) -> LastError {
        // A failure's Display is one line (a trap's without its backtrace).
        let stderr = match failure {
            CallError::Trap(trap) => trap.stderr.clone(),
            _ => None,
        };
        LastError {
            at_ms,
            failure: switchyard_platform::cut(failure.to_string(), GUEST_ERROR_BYTES),
            stderr,
        }
    }
}

impl Deployable for LoadedVersion {
    fn service(&self) -> &str {
        &self.service
    }
    fn version(&self) -> &Version {
        &self.version
    }
    fn imports(&self) -> &[InterfaceUse] {
        &self.imports
    }
    fn exports(&self) -> &[InterfaceUse] {
        &self.exports
    }
}

impl LoadedVersion {
    /// Its request count and latency, as metrics.
    pub fn request_metrics(&self) -> &RequestMetrics {
        self.request_metrics
            .get_or_init(|| RequestMetrics::register(&self.service, &self.version_text))
    }

    /// This build, taking over what `old` (the same version, built before
    /// with other settings) counted: its requests, errors, last error and
    /// window of calls stay with the version.
    pub fn succeeding(mut self, old: &LoadedVersion) -> LoadedVersion {
        let count = |n: &AtomicU64| AtomicU64::new(n.load(Ordering::Relaxed));
        self.requests = count(&old.requests);
        self.attempts = count(&old.attempts);
        self.errors = count(&old.errors);
        self.signals = old.signals.clone();
        self.loaded_at_ms = old.loaded_at_ms;
        *self.last_error.get_mut().unwrap_or_else(|p| p.into_inner()) = old
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self
    }

    /// Note a failure of this version's own (not of a service it called);
    /// true when it crosses the failover threshold.
    pub(crate) fn failed(&self) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.crosses(&self.failover, Instant::now())
    }
}

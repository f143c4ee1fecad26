//! `GET /admin/stats`: each service's golden signals over the last minute
//! (request rate, success rate, p50/p99 latency) with its instances and
//! queue now, per version and for the service as a whole; what the
//! dashboard draws every two seconds.
//!
//! Reading only: the window is kept by each version
//! (`switchyard_metrics::signals`), this module sums and words it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use switchyard_control::registry::{
    Book, LoadedVersion, Registry, VersionEntry, VersionState, version_state,
};
use switchyard_metrics::signals::{Summary, WINDOW_SECONDS};

/// Every service that has a version loaded, in name order.
pub fn stats(registry: &Registry) -> Stats {
    let services = registry
        .read_books(service_stats)
        .into_iter()
        .flatten()
        .collect();
    Stats {
        window_seconds: WINDOW_SECONDS,
        services,
    }
}

fn service_stats(name: &str, book: &Book<LoadedVersion>) -> Option<ServiceStats> {
    let mut whole = Summary::empty();
    let mut instances = Instances::default();
    let mut queued = 0;
    let mut versions = Vec::new();
    for (version, entry) in book.versions.iter().rev() {
        let VersionEntry::Loaded(loaded) = entry else {
            continue;
        };
        let summary = loaded.signals.summary();
        whole.merge(&summary);
        let state = version_state(book, version, loaded);
        let weight = book.routing.weight_of(version);
        let pool = &loaded.pool;
        let busy = pool.leased();
        let mine = Instances {
            busy,
            idle: pool.instances().saturating_sub(busy),
            max: pool.policy().max,
        };
        instances.busy += mine.busy;
        instances.idle += mine.idle;
        if weight.is_some() {
            instances.max += mine.max;
        }
        let waiting = pool.waiting();
        queued += waiting;
        versions.push(VersionStats {
            version: version.to_string(),
            state,
            weight,
            signals: Signals::of(&summary),
            instances: mine,
            queued: waiting,
        });
    }
    if versions.is_empty() {
        return None;
    }
    let states = || versions.iter().map(|v| v.state);
    Some(ServiceStats {
        name: name.to_string(),
        active_version: book.routing.primary().map(|v| v.version.to_string()),
        traffic: book
            .routing
            .weights()
            .map(|(v, w)| (v.to_string(), w))
            .collect(),
        failed_over: states().any(|s| s == VersionState::Failed),
        failing: states().any(|s| s == VersionState::Failing),
        signals: Signals::of(&whole),
        instances,
        queued,
        versions,
    })
}

/// What `GET /admin/stats` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// How far back the rates and latencies reach.
    pub window_seconds: u64,
    pub services: Vec<ServiceStats>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceStats {
    pub name: String,
    pub active_version: Option<String>,
    /// Version → weight, as the traffic split stands.
    pub traffic: BTreeMap<String, u32>,
    /// A version was taken out of traffic by failover (and is still marked).
    pub failed_over: bool,
    /// A version fails past its threshold with no healthy one to take over.
    pub failing: bool,
    /// Its versions' calls together.
    #[serde(flatten)]
    pub signals: Signals,
    /// Its versions' instances together; `max` counts the versions taking
    /// traffic.
    pub instances: Instances,
    /// Calls waiting for an instance now, all versions together.
    pub queued: usize,
    /// Loaded versions, newest first (rejected ones have no numbers).
    pub versions: Vec<VersionStats>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionStats {
    pub version: String,
    pub state: VersionState,
    pub weight: Option<u32>,
    #[serde(flatten)]
    pub signals: Signals,
    pub instances: Instances,
    pub queued: usize,
}

/// The golden signals of a window.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Signals {
    /// HTTP requests and calls from other services, answered in the window.
    pub requests: u64,
    /// Those that failed on the service's side (5xx, trap, timeout, a
    /// failed dependency); a client's 4xx is not one.
    pub failures: u64,
    pub requests_per_second: f64,
    /// The share that did not fail; null without requests.
    pub success_rate: Option<f64>,
    /// p50 and p99 in milliseconds (to the upper edge of a bucket at most
    /// 25% wide); null without requests.
    pub latency_ms: Option<Latency>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct Instances {
    /// On a call now.
    pub busy: usize,
    /// Alive and waiting for a call.
    pub idle: usize,
    /// The most its pool may hold.
    pub max: usize,
}

impl Signals {
    fn of(summary: &Summary) -> Signals {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Signals {
            requests: summary.calls,
            failures: summary.failures,
            requests_per_second: summary.rate(),
            success_rate: summary.success_rate(),
            latency_ms: summary
                .quantile(0.5)
                .zip(summary.quantile(0.99))
                .map(|(p50, p99)| Latency {
                    p50: ms(p50),
                    p99: ms(p99),
                }),
        }
    }
}

//! What the host tells its operators: Prometheus metrics, served at
//! `GET /metrics`.
//!
//! Every metric is named, labelled and recorded by `switchyard_metrics`, where
//! things happen: requests by the gateway, in their version's
//! `RequestMetrics`, failed calls by the control plane, changes of what serves
//! from the registry's events (here); gauges of instances are read from the
//! registry when metrics are scraped, so they are never stale.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::broadcast::{self, error::TryRecvError};

use switchyard_control::registry::{Action, Event, Registry};
use switchyard_metrics::{Change, REQUEST_SECONDS};

/// How often latency samples are folded into their histogram buckets.
const UPKEEP: Duration = Duration::from_secs(1);

/// Latency buckets, in seconds: the gateway's own cost is tens of
/// microseconds, a service's work milliseconds, a deadline seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
    10.0,
];

/// The process's metrics recorder.
pub struct Telemetry {
    handle: PrometheusHandle,
    /// The registry's events, counted when metrics are scraped (so a scrape
    /// always includes every change made before it).
    deployments: Mutex<Option<broadcast::Receiver<Event>>>,
}

impl Telemetry {
    /// Install the process-wide recorder (once per process).
    pub fn install() -> Result<Telemetry> {
        let handle = Self::builder()?.install_recorder()?;
        Ok(Telemetry::new(handle))
    }

    /// A recorder of its own, not the process's: for a host built in process
    /// next to others (tests). What the host records still goes to the
    /// process-wide recorder, if any; this one renders empty.
    pub fn detached() -> Result<Telemetry> {
        let handle = Self::builder()?.build_recorder().handle();
        Ok(Telemetry::new(handle))
    }

    fn new(handle: PrometheusHandle) -> Telemetry {
        Telemetry {
            handle,
            deployments: Mutex::default(),
        }
    }

    /// Count `registry`'s changes in the metrics, log each as it happens,
    /// and keep the latency histograms folded in ([`Telemetry::keep_up`]).
    pub fn follow(&self, registry: &Registry) {
        *self.deployments.lock().unwrap_or_else(|p| p.into_inner()) = Some(registry.subscribe());
        tokio::spawn(log_events(registry.subscribe()));
        self.keep_up(UPKEEP);
    }

    /// Every `interval`, fold the latency samples recorded since into their
    /// buckets. The recorder keeps each sample until then (or until a
    /// scrape): a busy host nobody scrapes would otherwise grow by some 20
    /// bytes a request, for good (measured: 10.6 MB over 541k requests).
    pub fn keep_up(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                handle.run_upkeep();
            }
        })
    }

    /// Count the changes since the last scrape.
    fn count_deployments(&self) {
        let mut events = self.deployments.lock().unwrap_or_else(|p| p.into_inner());
        let Some(events) = events.as_mut() else {
            return;
        };
        loop {
            match events.try_recv() {
                Ok(event) => deployment_event(&event.service, event.change.action()),
                Err(TryRecvError::Lagged(missed)) => {
                    tracing::warn!("{missed} deployment events were not counted in the metrics");
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn builder() -> Result<PrometheusBuilder> {
        Ok(PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.into()), &BUCKETS)?)
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self, registry: &Registry) -> String {
        self.count_deployments();
        for version in registry.loaded_versions() {
            let busy = version.pool.leased();
            let idle = version.pool.instances().saturating_sub(busy);
            switchyard_metrics::instances(&version.service, &version.version_text, busy, idle);
        }
        self.handle.render()
    }
}

/// Log every change of `events` as it happens.
async fn log_events(mut events: broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(event) => {
                let version = event.change.version().map(ToString::to_string);
                tracing::info!(
                    service = %event.service,
                    action = event.change.action().as_str(),
                    version = version.as_deref().unwrap_or_default(),
                    "{event}"
                );
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("{missed} deployment events were not logged");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A change in what serves: counted by kind of history event.
fn deployment_event(service: &str, action: Action) {
    let change = match action {
        Action::Activated | Action::Replaced | Action::Traffic => Change::Swap,
        Action::Failover => Change::Failover,
        Action::Rejected => Change::Rejected,
        // Nothing moved: what serves is what served.
        Action::NoFallback | Action::Refused | Action::Added | Action::Removed => return,
    };
    switchyard_metrics::deployment_changed(service, change);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{REQUEST_SECONDS, Telemetry};

    /// Resident memory of this process, in bytes.
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split(' ').nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn latency_samples_do_not_pile_up_between_scrapes() {
        let recorder = Telemetry::builder().unwrap().build_recorder();
        let telemetry = Telemetry::new(recorder.handle());
        const ROUND: usize = 100_000;
        let record = |samples: usize| {
            metrics::with_local_recorder(&recorder, || {
                let histogram = metrics::histogram!(REQUEST_SECONDS, "service" => "s");
                for _ in 0..samples {
                    histogram.record(0.001);
                }
            })
        };
        // Kept up: memory stays flat however many requests are served.
        let upkeep = telemetry.keep_up(Duration::from_millis(2));
        record(ROUND);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = rss();
        for _ in 0..20 {
            record(ROUND);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kept_up = rss().saturating_sub(before);
        // Not kept up (and not scraped): every sample stays.
        upkeep.abort();
        let before = rss();
        record(20 * ROUND);
        let piled_up = rss().saturating_sub(before);
        assert!(
            kept_up < 4 << 20 && piled_up > 16 << 20,
            "2M samples grew memory by {kept_up} bytes kept up, {piled_up} not"
        );
    }
}

//! `make bench`: what the balancing strategies and isolation modes cost, and
//! what one instantiation costs, on this machine, in one run.
//!
//! Each strategy and isolation mode serves the same trivial route (`GET /ok`
//! of the faulty fixture, which does no work) to the same closed-loop load,
//! so the differences are the host's. Instantiation is timed in-process,
//! straight from a linked component with the pooling allocator.
//!
//! Writes `target/bench/balance.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use switchyard_platform::Platform;
use switchyard_runtime::{BoxFuture, DependencyCause, Limits, Runtime, ServiceCalls};
use switchyard_store::SqliteStore;
use wasmtime::component::Val;

use measure::{MakeRequest, load, ms, write_report};
use support::{Site, component};

const CLIENTS: usize = 8;
const PHASE: Duration = Duration::from_secs(3);
const INSTANTIATIONS: usize = 500;

/// The services under test: (name, service.toml).
const SERVICES: [(&str, &str); 5] = [
    (
        "round-robin",
        "strategy = \"round-robin\"\n[instances]\nmin = 4\nmax = 4\n",
    ),
    (
        "random",
        "strategy = \"random\"\n[instances]\nmin = 4\nmax = 4\n",
    ),
    (
        "least-outstanding",
        "strategy = \"least-outstanding\"\n[instances]\nmin = 4\nmax = 4\n",
    ),
    (
        "consistent-hash",
        "strategy = \"consistent-hash\"\nhash_key = \"header:x-user-id\"\n[instances]\nmin = 4\nmax = 4\n",
    ),
    (
        "per-request",
        "isolation = \"per-request\"\n[instances]\nmax = 8\n",
    ),
];

/// Instantiation needs somewhere for service calls to go; the fixture makes none.
struct NoCalls;

impl ServiceCalls for NoCalls {
    fn call<'a>(
        &'a self,
        _: u32,
        _: Option<switchyard_trace::Trace>,
        interface: &'a str,
        _: &'a str,
        _: &'a [Val],
        _: &'a mut [Val],
    ) -> BoxFuture<'a, Result<(), DependencyCause>> {
        Box::pin(async move {
            Err(DependencyCause::NoProvider {
                interface: interface.to_string(),
            })
        })
    }
}

async fn instantiation_time() -> serde_json::Value {
    let runtime = Runtime::new(switchyard_runtime::POOLED_INSTANCES, false).unwrap();
    let component = runtime
        .compile(&std::fs::read(component("faulty")).unwrap())
        .unwrap();
    let exports = runtime.exports(&component);
    let pre = runtime
        .link(&component, &exports, Arc::new(NoCalls), Default::default())
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let store: Arc<SqliteStore> =
        Arc::new(SqliteStore::open(&data.path().join("kv.sqlite")).unwrap());
    let limits = Limits {
        memory_bytes: 64 << 20,
        retained_memory_bytes: None,
        deadline: Duration::from_secs(10),
        call_depth: 8,
    };
    let platform = || {
        Platform::new(
            "bench".into(),
            "1.0.0".into(),
            store.clone(),
            Default::default(),
            Default::default(),
        )
    };
    // Warm the pooling allocator's slots first, as a running host has.
    for _ in 0..50 {
        drop(runtime.instantiate(&pre, platform(), limits).await.unwrap());
    }
    let started = Instant::now();
    for _ in 0..INSTANTIATIONS {
        drop(runtime.instantiate(&pre, platform(), limits).await.unwrap());
    }
    let each = started.elapsed() / INSTANTIATIONS as u32;
    json!({"n": INSTANTIATIONS, "p50_ms": ms(each), "p99_ms": null, "mean_us": each.as_secs_f64() * 1e6})
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let site = Site::new();
    for (name, settings) in SERVICES {
        site.install(name, "1.0.0", &component("faulty"));
        site.settings(name, settings);
    }
    let host = Arc::new(site.start());

    let requests: BTreeMap<&str, MakeRequest> = BTreeMap::from([
        (
            "round-robin",
            (|h, _| h.client().get(format!("{}/round-robin/ok", h.base))) as MakeRequest,
        ),
        ("random", |h, _| {
            h.client().get(format!("{}/random/ok", h.base))
        }),
        ("least-outstanding", |h, _| {
            h.client().get(format!("{}/least-outstanding/ok", h.base))
        }),
        ("consistent-hash", |h, i| {
            h.client()
                .get(format!("{}/consistent-hash/ok", h.base))
                .header("x-user-id", format!("user-{}", i % 1000))
        }),
        ("per-request", |h, _| {
            h.client().get(format!("{}/per-request/ok", h.base))
        }),
    ]);
    let mut report = json!({"clients": CLIENTS, "phase_seconds": PHASE.as_secs()});
    for (name, _) in SERVICES {
        // A short warm-up, then the measured phase.
        load(
            &host,
            CLIENTS,
            Duration::from_millis(300),
            requests[name],
            async {},
        )
        .await;
        report[name] = load(&host, CLIENTS, PHASE, requests[name], async {}).await;
    }
    report["instantiation"] = instantiation_time().await;
    let pooled = report["round-robin"]["rps"].as_f64().unwrap();
    let fresh = report["per-request"]["rps"].as_f64().unwrap();
    report["per_request_vs_pooled_rps"] = json!(fresh / pooled);

    let rows: Vec<&str> = SERVICES
        .iter()
        .map(|(name, _)| *name)
        .chain(["instantiation"])
        .collect();
    write_report("balance", &report, &rows);
    println!(
        "per-request / pooled throughput: x{:.2}; one instantiation: {:.1} µs",
        fresh / pooled,
        report["instantiation"]["mean_us"].as_f64().unwrap()
    );
}

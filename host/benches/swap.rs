//! `make bench`: what hot swapping costs, measured end to end against a real
//! host over HTTP on this machine.
//!
//! - drop → first response: a component file renamed into `services/goods/`
//!   until the first response carrying its version;
//! - activate and rollback: the admin call's round trip, until the call
//!   returns with the version serving;
//! - request latency under load, with and without a swap every 50 ms, in the
//!   same run, side by side.
//!
//! Writes `target/bench/swap.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::sync::Arc;
use std::time::{Duration, Instant};

use measure::{MakeRequest, load, summary, write_report};
use serde_json::json;
use support::{Site, component};

/// Concurrent clients of the load phases, and how long each phase runs.
const CLIENTS: usize = 4;
const LOAD_PHASE: Duration = Duration::from_secs(4);
const DROPS: usize = 10;
const SWAPS: usize = 40;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let site = Site::shop();
    let host = Arc::new(site.start());
    let pen = host.add_goods("pen", 150, 10).await.str("id");
    let path = format!("/goods/{pen}");
    assert_eq!(
        pen, "g1",
        "the load below asks for the first goods of a fresh site"
    );
    let builds = [
        std::fs::read(component("goods_v2")).unwrap(),
        std::fs::read(component("goods")).unwrap(),
    ];

    // Drop → first response from the new version. The first drop (goods 2.x)
    // compiles; the later ones reuse the compiled cache (bytes seen before,
    // under a new version number).
    let mut first_compile = Vec::new();
    let mut cached = Vec::new();
    for i in 0..DROPS {
        let version = format!("2.{i}.0");
        let started = Instant::now();
        site.drop_in("goods", &version, &builds[i % 2]);
        loop {
            if host.get(&path).await.header("x-switchyard-version") == version {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if i == 0 {
            first_compile.push(started.elapsed())
        } else {
            cached.push(started.elapsed())
        }
    }

    // Activate / rollback round trips.
    let mut activate = Vec::new();
    let mut rollback = Vec::new();
    for i in 0..SWAPS / 2 {
        let target = format!("2.{}.0", i % DROPS);
        let started = Instant::now();
        let reply = host
            .post("/admin/services/goods/activate", json!({"version": target}))
            .await;
        activate.push(started.elapsed());
        assert!(reply.status.is_success(), "{reply:?}");
        let started = Instant::now();
        let reply = host.post("/admin/services/goods/rollback", json!({})).await;
        rollback.push(started.elapsed());
        assert!(reply.status.is_success(), "{reply:?}");
    }

    // Latency under load: steady, then with a swap every 50 ms.
    let get_pen: MakeRequest = |host, _| host.client().get(format!("{}/goods/g1", host.base));
    let steady = load(&host, CLIENTS, LOAD_PHASE, get_pen, async {}).await;
    let swapper = {
        let host = host.clone();
        async move {
            let deadline = Instant::now() + LOAD_PHASE;
            let mut i = 0;
            while Instant::now() < deadline {
                let version = format!("2.{}.0", i % DROPS);
                host.post(
                    "/admin/services/goods/activate",
                    json!({"version": version}),
                )
                .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let swapping = load(&host, CLIENTS, LOAD_PHASE, get_pen, swapper).await;
    let ratio = |key: &str| swapping[key].as_f64().unwrap() / steady[key].as_f64().unwrap();
    let report = json!({
        "drop_to_first_response_compiling": summary(&mut first_compile),
        "drop_to_first_response_cached": summary(&mut cached),
        "activate": summary(&mut activate),
        "rollback": summary(&mut rollback),
        "swapping_vs_steady": {"p50": ratio("p50_ms"), "p99": ratio("p99_ms")},
        "load_steady": steady,
        "load_swapping_every_50ms": swapping,
        "clients": CLIENTS,
        "phase_seconds": LOAD_PHASE.as_secs(),
    });
    write_report(
        "swap",
        &report,
        &[
            "drop_to_first_response_compiling",
            "drop_to_first_response_cached",
            "activate",
            "rollback",
            "load_steady",
            "load_swapping_every_50ms",
        ],
    );
    println!(
        "under swaps / steady: p50 x{:.2}, p99 x{:.2}; failed requests: {} steady, {} swapping",
        ratio("p50_ms"),
        ratio("p99_ms"),
        report["load_steady"]["failed"],
        report["load_swapping_every_50ms"]["failed"],
    );
}

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

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Host, Site, component};

/// Concurrent clients of the load phases, and how long each phase runs.
const CLIENTS: usize = 4;
const LOAD_PHASE: Duration = Duration::from_secs(4);
const DROPS: usize = 10;
const SWAPS: usize = 40;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(samples: &mut [Duration]) -> serde_json::Value {
    samples.sort();
    json!({
        "n": samples.len(),
        "p50_ms": ms(percentile(samples, 0.50)),
        "p99_ms": ms(percentile(samples, 0.99)),
        "max_ms": ms(*samples.last().unwrap()),
    })
}

/// Latencies of GET /goods/{id} from `CLIENTS` clients for `LOAD_PHASE`.
async fn load(
    host: &Arc<Host>,
    path: &str,
    during: impl std::future::Future<Output = ()>,
) -> (Vec<Duration>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (host, stop, path) = (host.clone(), stop.clone(), path.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let reply = host.get(&path).await;
                    latencies.push(started.elapsed());
                    failed += usize::from(!reply.status.is_success());
                }
                (latencies, failed)
            })
        })
        .collect();
    let timer = tokio::time::sleep(LOAD_PHASE);
    tokio::join!(timer, during);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failed = 0;
    for client in clients {
        let (latencies, f) = client.await.unwrap();
        all.extend(latencies);
        failed += f;
    }
    (all, failed)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let site = Site::shop();
    let host = Arc::new(site.start());
    let pen = host.add_goods("pen", 150, 10).await.str("id");
    let path = format!("/goods/{pen}");
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
    let (mut steady, steady_failed) = load(&host, &path, async {}).await;
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
    let (mut swapping, swapping_failed) = load(&host, &path, swapper).await;

    let steady_summary = summary(&mut steady);
    let swapping_summary = summary(&mut swapping);
    let ratio =
        |key: &str| swapping_summary[key].as_f64().unwrap() / steady_summary[key].as_f64().unwrap();
    let report = json!({
        "drop_to_first_response_compiling": summary(&mut first_compile),
        "drop_to_first_response_cached": summary(&mut cached),
        "activate": summary(&mut activate),
        "rollback": summary(&mut rollback),
        "load_steady": steady_summary,
        "load_swapping_every_50ms": swapping_summary,
        "failed_requests": {"steady": steady_failed, "swapping": swapping_failed},
        "swapping_vs_steady": {"p50": ratio("p50_ms"), "p99": ratio("p99_ms")},
        "clients": CLIENTS,
        "phase_seconds": LOAD_PHASE.as_secs(),
    });

    println!(
        "{:<40} {:>8} {:>10} {:>10}",
        "swap benchmark", "n", "p50 ms", "p99 ms"
    );
    for key in [
        "drop_to_first_response_compiling",
        "drop_to_first_response_cached",
        "activate",
        "rollback",
        "load_steady",
        "load_swapping_every_50ms",
    ] {
        let row = &report[key];
        println!(
            "{key:<40} {:>8} {:>10.3} {:>10.3}",
            row["n"],
            row["p50_ms"].as_f64().unwrap(),
            row["p99_ms"].as_f64().unwrap()
        );
    }
    println!(
        "under swaps / steady: p50 x{:.2}, p99 x{:.2}; failed requests: {steady_failed} steady, {swapping_failed} swapping",
        ratio("p50_ms"),
        ratio("p99_ms")
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("swap.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("wrote {}", out.join("swap.json").display());
}

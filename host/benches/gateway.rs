//! `make bench`: how close the gateway comes to the physical limit, measured
//! with a real load generator (wrk) against real processes, side by side in
//! one run:
//!
//! - (a) `GET /goods/{id}` through Switchyard, pooled instances;
//! - (b) the same with per-request isolation;
//! - (c) the same work served natively by axum (`examples/native_goods.rs`:
//!   the same SQLite read through the same store, the same JSON): the limit;
//! - (d) `POST /orders` through Switchyard: two service-to-service calls and
//!   three writes per request.
//!
//! And: the cost of one service-to-service call, host start-up with three
//! services (cold, then with the compiled cache warm), and resident memory per
//! idle instance. Writes `target/bench/gateway.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Host, Site, component};

use measure::{
    CONNECTIONS, DURATION, THREADS, WARMUP, start_native, target_dir, write_report, wrk,
};

/// Mean cost of one service-to-service call: `calls?n=` with many and none.
async fn service_call_cost(host: &Host) -> f64 {
    const CALLS: u32 = 200;
    const ROUNDS: u32 = 50;
    let time = |n: u32| async move {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let reply = host.get(&format!("/ping/calls?n={n}")).await;
            assert_eq!(reply.body, 0, "{reply:?}");
        }
        started.elapsed().as_secs_f64() / f64::from(ROUNDS)
    };
    let (none, many) = (time(0).await, time(CALLS).await);
    (many - none) / f64::from(CALLS) * 1e6
}

/// Resident memory per idle instance: a host with 33 idle instances of a
/// service against one with 1.
fn rss_per_idle_instance() -> f64 {
    let rss_with = |min: usize| {
        let site = Site::new();
        site.install("faulty", "1.0.0", &component("faulty"));
        site.settings(
            "faulty",
            &format!("[instances]\nmin = {min}\nmax = {min}\n"),
        );
        let host = site.start();
        std::thread::sleep(Duration::from_millis(300));
        host.rss_kib()
    };
    let (one, many) = (rss_with(1), rss_with(33));
    (many as f64 - one as f64) / 32.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // Start-up with the three shop services: first compiling, then cached.
    let site = Site::shop();
    site.install("ping", "1.0.0", &component("cycle"));
    site.install("pong", "1.0.0", &component("pong"));
    let started = Instant::now();
    let host = site.start();
    let cold_start = started.elapsed();
    host.kill();
    let started = Instant::now();
    let host = site.start();
    let warm_start = started.elapsed();

    let user = host.add_user().await.str("id");
    let pen = host.add_goods("pen", 150, u32::MAX).await.str("id");
    let (mut native, native_base) = start_native(&site.data());
    let orders_script = target_dir().join("bench/post-order.lua");
    std::fs::create_dir_all(orders_script.parent().unwrap()).unwrap();
    std::fs::write(
        &orders_script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.body = '{{\"user_id\":\"{user}\",\"items\":[{{\"goods_id\":\"{pen}\",\"qty\":1}}]}}'\n"
        ),
    )
    .unwrap();

    let mut report = json!({
        "wrk": {"threads": THREADS, "connections": CONNECTIONS, "warmup": WARMUP, "duration": DURATION},
    });
    report["c_native"] = wrk(&format!("{native_base}/goods/{pen}"), None);
    report["a_pooled"] = wrk(&format!("{}/goods/{pen}", host.base), None);
    report["d_orders"] = wrk(&format!("{}/orders", host.base), Some(&orders_script));
    let _ = native.kill();

    // Per-request isolation: a new build of goods under that setting.
    site.settings("goods", "isolation = \"per-request\"\n");
    site.drop_in(
        "goods",
        "1.0.1",
        &std::fs::read(component("goods")).unwrap(),
    );
    host.wait_active("goods", "1.0.1").await;
    report["b_per_request"] = wrk(&format!("{}/goods/{pen}", host.base), None);

    let native_rps = report["c_native"]["rps"].as_f64().unwrap();
    let native_p99 = report["c_native"]["p99_ms"].as_f64().unwrap();
    for key in ["a_pooled", "b_per_request", "c_native", "d_orders"] {
        let row = &mut report[key];
        row["rps_vs_native"] = json!(row["rps"].as_f64().unwrap() / native_rps);
        row["p99_added_ms"] = json!(row["p99_ms"].as_f64().unwrap() - native_p99);
    }
    report["service_call_us"] = json!(service_call_cost(&host).await);
    report["start_cold_ms"] = json!(cold_start.as_secs_f64() * 1e3);
    report["start_warm_ms"] = json!(warm_start.as_secs_f64() * 1e3);
    drop(host);
    report["rss_per_idle_instance_kib"] = json!(rss_per_idle_instance());

    write_report(
        "gateway",
        &report,
        &["a_pooled", "b_per_request", "c_native", "d_orders"],
    );
    for key in ["a_pooled", "b_per_request", "d_orders"] {
        println!(
            "{key}: x{:.2} of native req/s, p99 {:+.3} ms over native",
            report[key]["rps_vs_native"].as_f64().unwrap(),
            report[key]["p99_added_ms"].as_f64().unwrap()
        );
    }
    println!(
        "one service-to-service call: {:.1} µs; start-up with 5 services: {:.0} ms cold, {:.0} ms cached; RSS per idle instance: {:.0} KiB",
        report["service_call_us"].as_f64().unwrap(),
        report["start_cold_ms"].as_f64().unwrap(),
        report["start_warm_ms"].as_f64().unwrap(),
        report["rss_per_idle_instance_kib"].as_f64().unwrap()
    );
}

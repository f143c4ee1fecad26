//! `make bench`: whether guests that burn CPU starve the rest of the host.
//!
//! A service `hog` computes in a loop for 5 s per request (its deadline); 0,
//! 1, 2 and 4 such requests run at once on this 2-core machine while two
//! clients measure an unrelated service (`GET /goods/{id}`) and the host's own
//! `/healthz`, back to back for 3 s each. The goal: the unrelated service's
//! p99 stays under 50 ms however many hogs run. Writes
//! `target/bench/fairness.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Host, Site, component};

use measure::{load, write_report};

/// How long each hog computes: longer than a measuring phase.
const HOG_MS: u64 = 5_000;
const PHASE: Duration = Duration::from_secs(3);

fn goods(host: &Host, _: usize) -> support::RequestBuilder {
    host.client().get(format!("{}/goods/g1", host.base))
}

fn healthz(host: &Host, _: usize) -> support::RequestBuilder {
    host.client().get(format!("{}/healthz", host.base))
}

/// Start `n` hogs, measure both routes, and wait for the hogs to end.
async fn with_hogs(host: &Arc<Host>, n: usize) -> (Value, Value) {
    let hogs = host.get_at_once(n, "/hog/loop");
    // Let the hogs get going before measuring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let goods = load(host, 2, PHASE, goods, async {}).await;
    let healthz = load(host, 2, Duration::from_secs(1), healthz, async {}).await;
    for hog in hogs {
        hog.await.unwrap();
    }
    (goods, healthz)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    site.install("hog", "1.0.0", &component("faulty"));
    site.settings(
        "hog",
        &format!(
            "[limits]\ndeadline_ms = {HOG_MS}\n[instances]\nmax = 8\n[failover]\nenabled = false\n"
        ),
    );
    let host = Arc::new(site.start());
    let pen = host.add_goods("pen", 150, 10).await.str("id");
    assert_eq!(pen, "g1");

    let mut report = json!({});
    let mut rows = Vec::new();
    for hogs in [0, 1, 2, 4] {
        let (goods, healthz) = with_hogs(&host, hogs).await;
        report[format!("goods_{hogs}_hogs")] = goods;
        report[format!("healthz_{hogs}_hogs")] = healthz;
        rows.push(format!("goods_{hogs}_hogs"));
        rows.push(format!("healthz_{hogs}_hogs"));
    }
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    write_report("fairness", &report, &rows);
    let worst = [1, 2, 4]
        .iter()
        .map(|n| {
            report[format!("goods_{n}_hogs")]["p99_ms"]
                .as_f64()
                .unwrap()
        })
        .fold(0.0, f64::max);
    println!(
        "worst p99 of an unrelated service with CPU-bound guests running: {worst:.1} ms (goal < 50 ms)"
    );
}

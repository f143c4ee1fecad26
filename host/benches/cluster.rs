//! `make bench`: what running several hosts on PostgreSQL costs, measured end
//! to end against real hosts over HTTP on this machine, side by side in one
//! run:
//!
//! - propagation: an activation on one of three hosts, from the admin call's
//!   answer until the two others serve the new version (50 changes);
//! - GET /goods/{id} and POST /orders on one host on SQLite, on one host on
//!   PostgreSQL, and on three hosts on PostgreSQL together (the load spread
//!   evenly over them; all three share the machine's two cores); the orders
//!   both of one hot pen by one user (the worst case) and spread over 1,000
//!   goods and 1,000 users;
//! - the store alone: one service's writes to distinct keys on PostgreSQL,
//!   by one writer and by 16 at once (whether they queue behind each
//!   other).
//!
//! Needs the PostgreSQL server at SWITCHYARD_TEST_PG (a fresh database is
//! made for the run). Writes `target/bench/cluster.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::sync::Arc;
use std::time::{Duration, Instant};

use measure::{
    MakeRequest, closed_loop, load, spread_order, stock_up_spread, summary, write_report,
};
use serde_json::{Value, json};
use support::{Host, Site, component};
use switchyard_store::{KeyValueStore, Namespace, PostgresStore, Quota};

const CLIENTS: usize = 8;
const PHASE: Duration = Duration::from_secs(4);
const CHANGES: usize = 50;

/// The first goods and user of a fresh store, which every load asks for.
const PEN: &str = "g1";
const USER: &str = "u1";

fn read(host: &Host, _: usize) -> support::RequestBuilder {
    host.client().get(format!("{}/goods/{PEN}", host.base))
}

fn order(host: &Host, _: usize) -> support::RequestBuilder {
    let body = json!({"user_id": USER, "items": [{"goods_id": PEN, "qty": 1}]});
    host.client()
        .post(format!("{}/orders", host.base))
        .body(body.to_string())
}

/// The shop with a user and plenty of pens, on `store` (None: SQLite).
async fn shop(sites: &mut Vec<Site>, store: Option<&str>) -> Arc<Host> {
    let site = Site::shop();
    site.install("goods", "1.1.0", &component("goods_v2"));
    let host = match store {
        Some(url) => site.start_with(&["--store", url]),
        None => site.start(),
    };
    sites.push(site);
    Arc::new(host)
}

async fn stock_up(host: &Host) {
    assert_eq!(host.add_user().await.str("id"), USER);
    assert_eq!(host.add_goods("pen", 150, u32::MAX).await.str("id"), PEN);
    stock_up_spread(host).await;
}

/// `request` on every host of `hosts` at once, CLIENTS / hosts each: the
/// first host's row (latencies) with req/s and failures summed.
async fn spread(hosts: &[Arc<Host>], request: MakeRequest) -> Value {
    let each = CLIENTS / hosts.len();
    let running: Vec<_> = hosts
        .iter()
        .map(|host| {
            let host = host.clone();
            tokio::spawn(async move { load(&host, each, PHASE, request, async {}).await })
        })
        .collect();
    let mut rows = Vec::new();
    for run in running {
        rows.push(run.await.unwrap());
    }
    let mut total = rows[0].clone();
    total["rps"] = json!(rows.iter().map(|r| r["rps"].as_f64().unwrap()).sum::<f64>());
    total["failed"] = json!(
        rows.iter()
            .map(|r| r["failed"].as_u64().unwrap())
            .sum::<u64>()
    );
    total
}

/// `writers` tasks setting distinct keys of one service in `store`, back to
/// back for PHASE: writes per second and their latencies.
async fn distinct_writes(store: Arc<dyn KeyValueStore>, writers: usize) -> Value {
    let attempt = move |i| {
        let store = store.clone();
        async move {
            let ns = Namespace {
                service: "goods".into(),
                bucket: "b".into(),
            };
            let key = format!("{writers}-{i}");
            store
                .set(&ns, &key, b"{\"stock\":1}", &Quota::default())
                .await
                .is_ok()
        }
    };
    closed_loop(writers, PHASE, attempt, async {}).await
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let Some(database) = test_pg::fresh("bench cluster").await else {
        println!(
            "cluster: skipped, no PostgreSQL server at {}",
            test_pg::server_url()
        );
        return;
    };
    let mut sites = Vec::new();
    let mut report = json!({ "clients": CLIENTS, "phase_s": PHASE.as_secs() });

    // One host on SQLite.
    let alone = shop(&mut sites, None).await;
    stock_up(&alone).await;
    report["sqlite_read"] = load(&alone, CLIENTS, PHASE, read, async {}).await;
    report["sqlite_order"] = load(&alone, CLIENTS, PHASE, order, async {}).await;
    report["sqlite_order_spread"] = load(&alone, CLIENTS, PHASE, spread_order, async {}).await;
    drop(alone);

    // Three hosts on PostgreSQL.
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(shop(&mut sites, Some(&database.url)).await);
    }
    stock_up(&hosts[0]).await;
    report["pg_one_read"] = load(&hosts[0], CLIENTS, PHASE, read, async {}).await;
    report["pg_one_order"] = load(&hosts[0], CLIENTS, PHASE, order, async {}).await;
    report["pg_three_read"] = spread(&hosts, read).await;
    report["pg_three_order"] = spread(&hosts, order).await;
    report["pg_one_order_spread"] = load(&hosts[0], CLIENTS, PHASE, spread_order, async {}).await;
    report["pg_three_order_spread"] = spread(&hosts, spread_order).await;

    // Propagation of an activation to the two other hosts.
    let mut samples = Vec::new();
    for i in 0..CHANGES {
        let version = if i % 2 == 0 { "1.0.0" } else { "1.1.0" };
        let activated = hosts[0]
            .post(
                "/admin/services/goods/activate",
                json!({"version": version}),
            )
            .await;
        assert!(activated.status.is_success(), "{activated:?}");
        let answered = Instant::now();
        for host in &hosts[1..] {
            while host.active("goods").await != version {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        samples.push(answered.elapsed());
    }
    report["propagation"] = summary(&mut samples);
    drop(hosts);

    // The store alone, on a database of its own.
    let writes = test_pg::fresh("bench cluster writes").await.unwrap();
    let store: Arc<dyn KeyValueStore> =
        Arc::new(PostgresStore::connect(&writes.url).await.unwrap());
    report["pg_writes_1"] = distinct_writes(store.clone(), 1).await;
    report["pg_writes_16"] = distinct_writes(store, 16).await;

    write_report(
        "cluster",
        &report,
        &[
            "sqlite_read",
            "pg_one_read",
            "pg_three_read",
            "sqlite_order",
            "pg_one_order",
            "pg_three_order",
            "sqlite_order_spread",
            "pg_one_order_spread",
            "pg_three_order_spread",
            "propagation",
            "pg_writes_1",
            "pg_writes_16",
        ],
    );
    let ratio =
        |a: &str, b: &str| report[a]["rps"].as_f64().unwrap() / report[b]["rps"].as_f64().unwrap();
    println!(
        "one host on PostgreSQL against SQLite: reads x{:.2}, orders x{:.2}, spread orders x{:.2}; three hosts against one: reads x{:.2}, orders x{:.2}, spread orders x{:.2}; 16 writers of distinct keys against one: x{:.2}",
        ratio("pg_one_read", "sqlite_read"),
        ratio("pg_one_order", "sqlite_order"),
        ratio("pg_one_order_spread", "sqlite_order_spread"),
        ratio("pg_three_read", "pg_one_read"),
        ratio("pg_three_order", "pg_one_order"),
        ratio("pg_three_order_spread", "pg_one_order_spread"),
        ratio("pg_writes_16", "pg_writes_1"),
    );
}

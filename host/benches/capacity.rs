//! `make bench`: what one request of each kind costs the PostgreSQL
//! database, the figures BENCHMARKS.md's capacity model starts from. One
//! host on PostgreSQL, the requests one after another (so that nothing
//! else is in flight), each kind 300 times:
//!
//! - round trips: messages after which the host waits for the server,
//!   counted by a relay in front of it (`test_pg::Proxy`);
//! - commits, rows written (inserted, updated, deleted): `pg_stat_database`;
//! - WAL bytes: the difference of `pg_current_wal_lsn()`; WAL records and
//!   fsyncs: `pg_stat_wal`;
//! - the server's CPU time: user + system time of every `postgres` process.
//!
//! The host's own background work (a heartbeat each second, a look for
//! changed records every 0.5 s) is measured idle for as long and
//! subtracted. Needs the PostgreSQL server at SWITCHYARD_TEST_PG on this
//! machine (for its CPU time). Writes `target/bench/capacity.json`.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::time::{Duration, Instant};

use measure::{SPREAD, postgres_cpu_ms, spread_order, stock_up_spread};
use serde_json::{Value, json};
use support::{Host, Site};

/// Requests of each kind.
const N: usize = 300;

/// The server's cumulative counters at one moment.
#[derive(Clone, Copy, Default)]
struct Counters {
    round_trips: f64,
    commits: f64,
    rows_written: f64,
    wal_bytes: f64,
    wal_records: f64,
    fsyncs: f64,
    cpu_ms: f64,
}

impl Counters {
    fn minus(self, other: Counters) -> Counters {
        Counters {
            round_trips: self.round_trips - other.round_trips,
            commits: self.commits - other.commits,
            rows_written: self.rows_written - other.rows_written,
            wal_bytes: self.wal_bytes - other.wal_bytes,
            wal_records: self.wal_records - other.wal_records,
            fsyncs: self.fsyncs - other.fsyncs,
            cpu_ms: self.cpu_ms - other.cpu_ms,
        }
    }

    fn scaled(self, by: f64) -> Counters {
        Counters {
            round_trips: self.round_trips * by,
            commits: self.commits * by,
            rows_written: self.rows_written * by,
            wal_bytes: self.wal_bytes * by,
            wal_records: self.wal_records * by,
            fsyncs: self.fsyncs * by,
            cpu_ms: self.cpu_ms * by,
        }
    }

    fn json(self) -> Value {
        json!({
            "round_trips": self.round_trips,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "wal_bytes": self.wal_bytes,
            "wal_records": self.wal_records,
            "fsyncs": self.fsyncs,
            "db_cpu_us": self.cpu_ms * 1e3,
        })
    }
}

async fn counters(db: &tokio_postgres::Client, proxy: &test_pg::Proxy) -> Counters {
    // Let every backend publish its pending statistics.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let row = db
        .query_one(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                    (SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database
                     WHERE datname = current_database()),
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::FLOAT8,
                    (SELECT wal_records FROM pg_stat_wal),
                    (SELECT wal_sync FROM pg_stat_wal)",
            &[],
        )
        .await
        .unwrap();
    Counters {
        round_trips: proxy.round_trips() as f64,
        commits: row.get::<_, i64>(0) as f64,
        rows_written: row.get::<_, i64>(1) as f64,
        wal_bytes: row.get::<_, f64>(2),
        wal_records: row.get::<_, i64>(3) as f64,
        fsyncs: row.get::<_, i64>(4) as f64,
        cpu_ms: postgres_cpu_ms(),
    }
}

/// What one request costs: `run` sends N of them; the idle rate is
/// subtracted for the time they took.
async fn cost<F: AsyncFnMut(usize)>(
    db: &tokio_postgres::Client,
    proxy: &test_pg::Proxy,
    idle_per_s: Counters,
    mut run: F,
) -> Value {
    let before = counters(db, proxy).await;
    let started = Instant::now();
    for i in 0..N {
        run(i).await;
    }
    let after = counters(db, proxy).await;
    let elapsed = started.elapsed().as_secs_f64();
    after
        .minus(before)
        .minus(idle_per_s.scaled(elapsed))
        .scaled(1.0 / N as f64)
        .json()
}

fn ok(reply: support::Reply) -> Value {
    assert!(reply.status.is_success(), "{reply:?}");
    reply.body
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let Some(database) = test_pg::fresh("bench capacity").await else {
        println!(
            "capacity: skipped, no PostgreSQL server at {}",
            test_pg::server_url()
        );
        return;
    };
    let (db, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let proxy = test_pg::Proxy::to(&database.url).await;
    let site = Site::shop();
    let host: Host = site.start_with(&["--store", &proxy.url(&database.url)]);
    host.add_user().await;
    host.add_goods("pen", 150, u32::MAX).await;
    stock_up_spread(&host).await;

    let idle = {
        let before = counters(&db, &proxy).await;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = counters(&db, &proxy).await;
        after
            .minus(before)
            .scaled(1.0 / started.elapsed().as_secs_f64())
    };

    let mut report = json!({ "n": N, "idle_per_s": idle.json() });
    report["get_goods"] = cost(&db, &proxy, idle, async |i| {
        ok(host.get(&format!("/goods/g{}", i % SPREAD + 1)).await);
    })
    .await;
    let mut orders = Vec::new();
    report["post_order"] = cost(&db, &proxy, idle, async |i| {
        let reply = spread_order(&host, i).send().await.unwrap();
        assert!(reply.status().is_success());
        let body: Value = serde_json::from_slice(&reply.bytes().await.unwrap()).unwrap();
        orders.push(body["id"].as_str().unwrap().to_string());
    })
    .await;
    report["pay_order"] = cost(&db, &proxy, idle, async |i| {
        ok(host
            .post(&format!("/orders/{}/pay", orders[i]), json!({}))
            .await);
    })
    .await;
    report["cancel_order"] = cost(&db, &proxy, idle, async |i| {
        ok(host
            .post(&format!("/orders/{}/cancel", orders[i]), json!({}))
            .await);
    })
    .await;

    println!(
        "{:<16} {:>11} {:>8} {:>13} {:>10} {:>8} {:>12}",
        "capacity", "round trips", "commits", "rows written", "WAL bytes", "fsyncs", "DB CPU µs"
    );
    for kind in ["get_goods", "post_order", "pay_order", "cancel_order"] {
        let row = &report[kind];
        println!(
            "{kind:<16} {:>11.1} {:>8.1} {:>13.1} {:>10.0} {:>8.1} {:>12.0}",
            row["round_trips"].as_f64().unwrap(),
            row["commits"].as_f64().unwrap(),
            row["rows_written"].as_f64().unwrap(),
            row["wal_bytes"].as_f64().unwrap(),
            row["fsyncs"].as_f64().unwrap(),
            row["db_cpu_us"].as_f64().unwrap(),
        );
    }
    let out = measure::target_dir().join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("capacity.json");
    std::fs::write(&file, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", file.display());
}

//! Several hosts on one PostgreSQL database, each with a fresh database of
//! its own (`test_pg`): without a reachable server these tests skip, and
//! `make test` says so; CI sets `SWITCHYARD_REQUIRE_PG=1` to fail instead.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{Host, Site};

/// `n` hosts serving the shop, each from a folder of its own, on `url`.
fn cluster(n: usize, url: &str) -> Vec<(Site, Arc<Host>)> {
    (0..n)
        .map(|_| {
            let site = Site::shop();
            let host = Arc::new(site.start_with(&["--store", url]));
            (site, host)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_spread_over_three_nodes_share_the_data_and_never_oversell() {
    let Some(database) = test_pg::fresh("cluster orders").await else {
        return;
    };
    let nodes = cluster(3, &database.url);
    let first = &nodes[0].1;
    let user = first.add_user().await.str("id");
    const STOCK: u64 = 30;
    let pen = first.add_goods("pen", 150, STOCK as u32).await.str("id");
    // What one node wrote, every node reads.
    for (_, node) in &nodes {
        let pen = node.get(&format!("/goods/{pen}")).await;
        assert_eq!(pen.body["stock"], STOCK, "{pen:?}");
    }

    let placing: Vec<_> = (0..3 * STOCK as usize)
        .map(|i| {
            let node = nodes[i % 3].1.clone();
            let order = json!({"user_id": user, "items": [{"goods_id": pen, "qty": 1}]});
            tokio::spawn(async move { node.post("/orders", order).await })
        })
        .collect();
    let mut created = 0;
    for placed in placing {
        let reply = placed.await.unwrap();
        match reply.status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                assert!(reply.error().contains("stock"), "{reply:?}")
            }
            _ => panic!("an order failed: {reply:?}"),
        }
    }
    assert_eq!(created, STOCK, "every unit sold once, none twice");
    for (_, node) in &nodes {
        let pen = node.get(&format!("/goods/{pen}")).await;
        assert_eq!(pen.body["stock"], 0, "{pen:?}");
        let orders = node.get("/orders").await.body;
        assert_eq!(orders.as_array().unwrap().len() as u64, STOCK);
    }
}

#[test]
fn an_unreachable_store_stops_the_host_at_start_with_the_reason() {
    let site = Site::shop();
    let started = Instant::now();
    // A port nothing listens on.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .arg("--services")
        .arg(site.services())
        .arg("--data")
        .arg(site.data())
        .args(["--listen", "127.0.0.1:0"])
        .args(["--store", "postgres://postgres:secret@127.0.0.1:9/shop"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot open the store (postgres://postgres@127.0.0.1:9/shop)"),
        "{said}"
    );
    assert!(!said.contains("secret"), "the password was shown: {said}");

    let refused = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--store", "mysql://somewhere"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is not a store"), "{said}");
}

//! Several hosts on one PostgreSQL database, each with a fresh database of
//! its own (`test_pg`): without a reachable server these tests skip, and
//! `make test` says so; CI sets `SWITCHYARD_REQUIRE_PG=1` to fail instead.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::hardening::{QUICK_RECOVERY, stock_accounts_for_orders};
use crate::support::{Host, Site, component, eventually};

/// `n` hosts serving the shop, each from a folder of its own, on `url`.
fn cluster(n: usize, url: &str) -> Vec<(Site, Arc<Host>)> {
    cluster_with(n, url, |_| {})
}

/// The same, with `prepare` run on each folder before its host starts.
fn cluster_with(n: usize, url: &str, prepare: impl Fn(&Site)) -> Vec<(Site, Arc<Host>)> {
    (0..n)
        .map(|_| {
            let site = Site::shop();
            prepare(&site);
            let host = Arc::new(site.start_with(&["--store", url]));
            (site, host)
        })
        .collect()
}

/// goods 1.1.0 next to 1.0.0.
fn with_goods_v2(site: &Site) {
    site.install("goods", "1.1.0", &component("goods_v2"));
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
            tokio::spawn(async move {
                // A busy answer placed nothing (the call never reached
                // orders): try again, as a client would after Retry-After.
                for _ in 0..50 {
                    let reply = node.post("/orders", order.clone()).await;
                    if reply.status != StatusCode::SERVICE_UNAVAILABLE
                        || !reply.error().contains("busy")
                    {
                        return reply;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("orders stayed busy");
            })
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

/// Wait until every node serves goods 1.1.0 from the latest record (the
/// last node's start-up stored it).
async fn settled(nodes: &[(Site, Arc<Host>)]) {
    let last = nodes.last().unwrap().1.service("goods").await["generation"].clone();
    for (_, node) in nodes {
        observed(node, "goods", |v| {
            v["active_version"] == "1.1.0" && v["generation"] == last
        })
        .await;
    }
}

/// Wait until `node`'s view of `service` satisfies `check`.
async fn observed(node: &Host, service: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let seen = eventually(async || {
        let view = node.service(service).await;
        check(&view).then_some(())
    });
    if seen.await.is_none() {
        panic!("never observed: {}", node.service(service).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn activate_rollback_and_split_on_one_node_reach_the_others() {
    let Some(database) = test_pg::fresh("cluster changes").await else {
        return;
    };
    let nodes = cluster_with(3, &database.url, with_goods_v2);
    let (a, others) = (&nodes[0].1, &nodes[1..]);
    settled(&nodes).await;

    let activated = a
        .post(
            "/admin/services/goods/activate",
            json!({"version": "1.0.0"}),
        )
        .await;
    assert_eq!(activated.status, StatusCode::OK, "{activated:?}");
    for (_, node) in others {
        observed(node, "goods", |v| v["active_version"] == "1.0.0").await;
        // Requests go where the cluster says.
        let reply = node.get("/goods").await;
        assert_eq!(reply.header("x-switchyard-version"), "1.0.0");
    }

    let rolled = a.post("/admin/services/goods/rollback", json!({})).await;
    assert_eq!(rolled.status, StatusCode::OK, "{rolled:?}");
    for (_, node) in others {
        observed(node, "goods", |v| v["active_version"] == "1.1.0").await;
    }

    let split = a
        .put(
            "/admin/services/goods/traffic",
            json!({"1.0.0": 30, "1.1.0": 70}),
        )
        .await;
    assert_eq!(split.status, StatusCode::OK, "{split:?}");
    for (_, node) in others {
        observed(node, "goods", |v| {
            v["traffic"] == json!({"1.0.0": 30, "1.1.0": 70})
        })
        .await;
    }
    // Every node agrees on the record and its history.
    let generation = a.service("goods").await["generation"].clone();
    for (_, node) in others {
        let view = node.service("goods").await;
        assert_eq!(view["generation"], generation, "{view}");
        assert_eq!(view["history"][0]["reason"], "split: 1.1.0 70, 1.0.0 30");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_changes_on_two_nodes_are_each_made_or_refused_never_lost() {
    let Some(database) = test_pg::fresh("cluster conflicts").await else {
        return;
    };
    let nodes = cluster_with(2, &database.url, with_goods_v2);
    settled(&nodes).await;
    let mut made = 0;
    let mut refused = 0;
    for round in 0..10 {
        let changes: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, (_, node))| {
                let node = node.clone();
                let version = if (round + i) % 2 == 0 {
                    "1.0.0"
                } else {
                    "1.1.0"
                };
                tokio::spawn(async move {
                    node.post(
                        "/admin/services/goods/activate",
                        json!({"version": version}),
                    )
                    .await
                })
            })
            .collect();
        for change in changes {
            let reply = change.await.unwrap();
            match reply.status {
                StatusCode::OK => made += 1,
                StatusCode::CONFLICT => {
                    assert!(reply.error().contains("another host"), "{reply:?}");
                    refused += 1;
                }
                _ => panic!("{reply:?}"),
            }
        }
    }
    assert_eq!(made + refused, 20);
    // Every change answered 200 is in the record, on both nodes.
    let admin_activations = |view: &serde_json::Value| {
        view["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "activated through the admin API")
            .count()
    };
    for (_, node) in &nodes {
        observed(node, "goods", |v| admin_activations(v) == made).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_uploaded_to_one_node_is_served_by_the_others() {
    let Some(database) = test_pg::fresh("cluster upload").await else {
        return;
    };
    let nodes = cluster(3, &database.url);
    let (b, c) = (&nodes[1].1, &nodes[2].1);
    let upload = b
        .send(
            Method::POST,
            "/admin/services/goods/versions?version=1.1.0",
            Some(std::fs::read(component("goods_v2")).unwrap()),
        )
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{upload:?}");
    for (site, node) in &nodes {
        observed(node, "goods", |v| v["active_version"] == "1.1.0").await;
        let reply = node.get("/goods").await;
        assert_eq!(reply.header("x-goods-edition"), "2", "{reply:?}");
        // Each node keeps the file in its own folder, like a dropped one.
        assert!(site.services().join("goods/1.1.0.wasm").exists());
    }
    let reply = c.get("/goods").await;
    assert_eq!(reply.header("x-switchyard-version"), "1.1.0");

    // Every node, as any node lists them: alive, serving goods 1.1.0.
    let agreed = eventually(async || {
        let nodes = c.get("/admin/nodes").await.body["nodes"].clone();
        let listed = nodes.as_array()?;
        let agreeing = listed
            .iter()
            .filter(|n| {
                n["alive"] == true && n["services"]["goods"]["serving"] == json!({"1.1.0": 100})
            })
            .count();
        (listed.len() == 3 && agreeing == 3).then_some(nodes)
    });
    let Some(listing) = agreed.await else {
        panic!(
            "the nodes never agreed: {}",
            c.get("/admin/nodes").await.body
        );
    };
    let listing = listing.as_array().unwrap();
    assert_eq!(listing.iter().filter(|n| n["this_node"] == true).count(), 1);
    assert!(
        listing
            .iter()
            .all(|n| n["services"]["goods"]["loaded_all"] == true)
    );

    // A service new to the cluster: the others build on the record the
    // uploading node stored, with no conflict and no activation of their own.
    let upload = b
        .send(
            Method::POST,
            "/admin/services/hello2/versions?version=1.0.0",
            Some(std::fs::read(component("hello2")).unwrap()),
        )
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{upload:?}");
    for (site, node) in &nodes {
        node.wait_state("hello2", "1.0.0", "active").await;
        let activated = activations(node, "hello2").await;
        assert_eq!(activated.len(), 1, "{activated:?}");
        assert!(
            !site.log().contains("another host changed"),
            "{}",
            site.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_a_node_under_load_loses_no_accepted_order_and_the_others_serve_on() {
    let Some(database) = test_pg::fresh("cluster kill").await else {
        return;
    };
    let nodes = cluster_with(3, &database.url, |site| {
        site.settings("orders", QUICK_RECOVERY)
    });
    let user = nodes[0].1.add_user().await.str("id");
    const STOCK: u64 = 1_000_000;
    let pen = nodes[0]
        .1
        .add_goods("pen", 150, STOCK as u32)
        .await
        .str("id");

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|client| {
            let node = nodes[client % 3].1.clone();
            let (user, pen, stop) = (user.clone(), pen.clone(), stop.clone());
            tokio::spawn(async move {
                // (order id, or the failure) for each attempt on this node.
                let mut accepted = Vec::new();
                let mut failed = 0;
                while !stop.load(Ordering::Relaxed) {
                    let order = json!({"user_id": user, "items": [{"goods_id": pen, "qty": 2}]});
                    let orders = format!("{}/orders", node.base);
                    match node
                        .client()
                        .post(&orders)
                        .body(order.to_string())
                        .send()
                        .await
                    {
                        Ok(reply) if reply.status() == StatusCode::CREATED => {
                            let body: serde_json::Value = reply.json().await.unwrap();
                            accepted.push(body["id"].as_str().unwrap().to_string());
                        }
                        _ => failed += 1,
                    }
                }
                (client % 3, accepted, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[0].1.crash();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let survivor = &nodes[1].1;
    let mut accepted_by_the_killed = 0;
    for client in clients {
        let (node, accepted, failed) = client.await.unwrap();
        if node == 0 {
            accepted_by_the_killed += accepted.len();
        } else {
            assert_eq!(
                failed, 0,
                "node {node} failed requests while another node died"
            );
            assert!(!accepted.is_empty());
        }
        // Every order any node answered 201 for is stored.
        for id in accepted {
            let order = survivor.get(&format!("/orders/{id}")).await;
            assert_eq!(
                order.status,
                StatusCode::OK,
                "order {id} from node {node}: {order:?}"
            );
        }
    }
    assert!(accepted_by_the_killed > 0, "the killed node took no orders");
    // What the killed node left half-done, the others finish or undo.
    stock_accounts_for_orders(survivor, &pen, STOCK).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hosts_embedded_store_moves_into_a_cluster_store_with_store_copy() {
    let Some(database) = test_pg::fresh("store copy").await else {
        return;
    };
    let site = Site::shop();
    with_goods_v2(&site);
    let host = site.start();
    let user = host.add_user().await.str("id");
    let pen = host.add_goods("pen", 150, 10).await.str("id");
    let order = json!({"user_id": user, "items": [{"goods_id": pen, "qty": 3}]});
    let order = host.post("/orders", order).await;
    assert_eq!(order.status, StatusCode::CREATED, "{order:?}");
    let activated = host
        .post(
            "/admin/services/goods/activate",
            json!({"version": "1.0.0"}),
        )
        .await;
    assert_eq!(activated.status, StatusCode::OK);
    host.terminate();
    host.wait_exit();

    let copy = |from: String| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["store", "copy", "--from", &from, "--to", &database.url])
            .output()
            .unwrap()
    };
    let from = format!("sqlite:{}", site.data().display());
    let copied = copy(from.clone());
    assert!(copied.status.success(), "{copied:?}");
    assert!(String::from_utf8_lossy(&copied.stdout).contains("deployment records"));
    // Not twice: the target is no longer empty.
    let again = copy(from);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"));
    let missing = copy("sqlite:/nonexistent".into());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no store"));

    let host = site.start_with(&["--store", &database.url]);
    assert_eq!(host.active("goods").await, "1.0.0");
    let pen = host.get(&format!("/goods/{pen}")).await;
    assert_eq!(pen.body["stock"], 7, "{pen:?}");
    let stored = host.get(&format!("/orders/{}", order.str("id"))).await;
    assert_eq!(stored.status, StatusCode::OK, "{stored:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_is_a_503_for_what_needs_it_and_the_node_catches_up_after() {
    let Some(database) = test_pg::fresh("cluster outage").await else {
        return;
    };
    let proxy = test_pg::Proxy::to(&database.url).await;
    let through_proxy = proxy.url(&database.url);
    let a_site = Site::shop();
    with_goods_v2(&a_site);
    let a = a_site.start_with(&["--store", &through_proxy]);
    let b_site = Site::shop();
    with_goods_v2(&b_site);
    let b = b_site.start_with(&["--store", &database.url]);
    let pen = a.add_goods("pen", 150, 10).await.str("id");
    observed(&a, "goods", |v| v["active_version"] == "1.1.0").await;

    proxy.cut();
    let read = a.get(&format!("/goods/{pen}")).await;
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{read:?}");
    assert!(read.error().contains("storage"), "{read:?}");
    // What needs no store goes on: health, the admin view, routing.
    assert_eq!(a.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(a.active("goods").await, "1.1.0");
    // Meanwhile another node changes what serves.
    let activated = b
        .post(
            "/admin/services/goods/activate",
            json!({"version": "1.0.0"}),
        )
        .await;
    assert_eq!(activated.status, StatusCode::OK, "{activated:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.active("goods").await, "1.1.0", "no news while cut off");

    proxy.restore();
    observed(&a, "goods", |v| v["active_version"] == "1.0.0").await;
    let read = eventually(async || {
        let read = a.get(&format!("/goods/{pen}")).await;
        (read.status == StatusCode::OK).then_some(read)
    });
    match read.await {
        Some(read) => assert_eq!(read.body["stock"], 10),
        None => panic!(
            "never read back: {:?}",
            a.get(&format!("/goods/{pen}")).await
        ),
    }
}

#[test]
fn an_unreachable_store_stops_the_host_at_start_with_the_reason() {
    let site = Site::shop();
    let started = Instant::now();
    // A port nothing listens on.
    let out = site
        .serve_command(&["--store", "postgres://postgres:secret@127.0.0.1:9/shop"])
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

#[tokio::test(flavor = "multi_thread")]
async fn a_failover_is_decided_off_the_request_path_while_the_store_stalls() {
    let Some(database) = test_pg::fresh("cluster failover stall").await else {
        return;
    };
    let proxy = test_pg::Proxy::to(&database.url).await;
    let site = Site::new();
    for version in ["1.0.0", "1.1.0"] {
        site.install("faulty", version, &component("faulty"));
    }
    site.settings("faulty", "[failover]\nthreshold = 2\n");
    let host = site.start_with(&["--store", &proxy.url(&database.url)]);
    host.wait_active("faulty", "1.1.0").await;

    // The database stops answering; the request whose failures cross the
    // threshold (a read that traps: tried twice) answers at once all the
    // same, and so does the next.
    proxy.stall();
    for _ in 0..2 {
        let started = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(10), host.get("/faulty/panic"))
            .await
            .expect("a failing request does not wait for the store");
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    // Once the database answers again, the decision is made and stored.
    proxy.restore();
    host.wait_active("faulty", "1.0.0").await;
    let failed = host.wait_state("faulty", "1.1.0", "failed").await;
    assert!(
        failed["reason"].as_str().unwrap().contains("trapped"),
        "{failed}"
    );
}

/// The activations in `service`'s history on `node`, oldest first, as
/// (version, reason).
async fn activations(node: &Host, service: &str) -> Vec<(String, String)> {
    let view = node.service(service).await;
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["action"] == "activated")
        .map(|e| {
            let version = e["version"].as_str().unwrap_or("").to_string();
            (version, e["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_joins_behind_follows_the_cluster_and_changes_nothing() {
    let Some(database) = test_pg::fresh("cluster joins").await else {
        return;
    };
    let nodes = cluster_with(1, &database.url, with_goods_v2);
    let a = &nodes[0].1;
    a.wait_active("goods", "1.1.0").await;
    let before = activations(a, "goods").await;

    // A node whose folder has only goods 1.0.0 joins while the cluster
    // serves 1.1.0: it fetches 1.1.0 and serves it, and its start with an
    // older folder is no activation of 1.0.0 for the cluster.
    let behind = Site::shop();
    let b = behind.start_with(&["--store", &database.url]);
    b.wait_state("goods", "1.1.0", "active").await;
    assert!(behind.services().join("goods/1.1.0.wasm").exists());
    let generation = b.service("goods").await["generation"].clone();
    observed(a, "goods", |v| v["generation"] == generation).await;
    assert_eq!(a.active("goods").await, "1.1.0");
    assert_eq!(
        activations(a, "goods").await,
        before,
        "{}",
        b.service("goods").await
    );

    // An operator goes back to 1.0.0; a node that joins with only 1.0.0
    // then fetches 1.1.0, a version the cluster knows and left: it stays
    // on standby, everywhere.
    let back = a
        .post(
            "/admin/services/goods/activate",
            json!({"version": "1.0.0"}),
        )
        .await;
    assert_eq!(back.status, StatusCode::OK, "{back:?}");
    observed(&b, "goods", |v| v["active_version"] == "1.0.0").await;
    let late = Site::shop();
    let c = late.start_with(&["--store", &database.url]);
    c.wait_state("goods", "1.1.0", "standby").await;
    for node in [a, &b, &c] {
        let generation = c.service("goods").await["generation"].clone();
        observed(node, "goods", |v| v["generation"] == generation).await;
        assert_eq!(node.active("goods").await, "1.0.0");
    }
}

//! Drop-in upgrades, rollback, canary splits and version management, end to
//! end: files dropped into a running host's services folder, admin calls, and
//! traffic flowing throughout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{Host, Site, component};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn create_goods(host: &Host, stock: u32) -> String {
    host.add_goods("pen", 150, stock).await.str("id")
}

async fn rollback(host: &Host, service: &str) -> Value {
    let reply = host
        .post(&format!("/admin/services/{service}/rollback"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.body
}

/// One response seen by a client: when it was sent and answered, and by what.
struct Seen {
    sent_ms: u64,
    answered_ms: u64,
    status: StatusCode,
    version: String,
    edition: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_by_file_drop_and_rollback_under_load_drop_no_request() {
    let site = Site::shop();
    let host = Arc::new(site.start_in_process());
    let pen = create_goods(&host, 10).await;
    let (v1, v2) = (bytes("goods"), bytes("goods_v2"));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (host, stop, path) = (host.clone(), stop.clone(), format!("/goods/{pen}"));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent_ms = now_ms();
                    let reply = host.get(&path).await;
                    seen.push(Seen {
                        sent_ms,
                        answered_ms: now_ms(),
                        status: reply.status,
                        version: reply.header("x-switchyard-version").to_string(),
                        edition: reply.header("x-goods-edition").to_string(),
                    });
                }
                seen
            })
        })
        .collect();

    for cycle in 1..=20 {
        let version = format!("1.{cycle}.0");
        // Odd cycles bring goods 2.x, even ones a rebuild of 1.x under a new number.
        site.drop_in("goods", &version, if cycle % 2 == 1 { &v2 } else { &v1 });
        host.wait_active("goods", &version).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let after = rollback(&host, "goods").await;
        assert_eq!(after["active_version"], "1.0.0");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }

    let failed: Vec<_> = seen
        .iter()
        .filter(|s| s.status != StatusCode::OK)
        .map(|s| s.status)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    assert!(
        seen.len() > 200,
        "the load ran throughout ({} requests)",
        seen.len()
    );

    // When each version was active, from the service's history (newest first).
    let service = host.service("goods").await;
    let mut activations: Vec<(u64, String)> = service["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "activated")
        .map(|e| {
            (
                e["at_ms"].as_u64().unwrap(),
                e["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    activations.reverse();
    assert_eq!(
        activations.len(),
        41,
        "start-up plus 20 upgrades and 20 rollbacks"
    );
    // The history stamps an activation just before the pointer swap; allow a
    // few milliseconds for the clients' clocks (read around each request).
    const SLACK_MS: u64 = 5;
    let active_during = |version: &str, from: u64, to: u64| {
        activations.iter().enumerate().any(|(i, (start, v))| {
            let end = activations.get(i + 1).map_or(u64::MAX, |(next, _)| *next);
            v == version && *start <= to + SLACK_MS && from <= end.saturating_add(SLACK_MS)
        })
    };
    let mut versions_seen = std::collections::BTreeSet::new();
    for s in &seen {
        assert!(
            active_during(&s.version, s.sent_ms, s.answered_ms),
            "{} answered a request sent at {} and answered at {}, but was not active then; activations: {activations:?}",
            s.version,
            s.sent_ms,
            s.answered_ms
        );
        let cycle: u32 = s.version.split('.').nth(1).unwrap().parse().unwrap();
        let expected_edition = if cycle % 2 == 1 { "2" } else { "" };
        assert_eq!(
            s.edition, expected_edition,
            "version {} answered as the wrong build",
            s.version
        );
        versions_seen.insert(s.version.clone());
    }
    assert!(
        versions_seen.len() > 10,
        "the load saw the upgrades: {versions_seen:?}"
    );
    // Every upgrade's instances drained away after its rollback.
    for entry in service["versions"].as_array().unwrap() {
        if entry["version"] != "1.0.0" {
            assert_eq!(entry["state"], "standby", "{entry}");
            assert_eq!(entry["instances"], 0, "{entry}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn bad_components_are_refused_with_a_reason_while_the_old_version_serves() {
    let site = Site::shop();
    // What goods publishes would refuse goods_broken first (it lost `list`);
    // here it is the component's own faults and broken consumers.
    site.settings("goods", "");
    let host = site.start();
    let pen = create_goods(&host, 10).await;
    let goods = bytes("goods");

    let bad: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "2.0.0",
            b"definitely not wasm".to_vec(),
            vec!["not a WebAssembly file"],
        ),
        ("2.0.1", Vec::new(), vec!["empty"]),
        (
            "2.0.2",
            b"\0asm\x01\0\0\0".to_vec(),
            vec!["core WebAssembly module"],
        ),
        (
            "2.0.3",
            goods[..goods.len() / 3].to_vec(),
            vec!["not a valid component"],
        ),
        (
            "2.0.4",
            b"\0asm\x0d\0\x01\0".to_vec(),
            vec!["exports neither switchyard:platform/handler"],
        ),
        (
            "3.0.0",
            bytes("goods_broken"),
            vec![
                "breaks orders 1.0.0",
                "catalog@1.0.0#release",
                "catalog@1.0.0#hold with a different type",
            ],
        ),
    ];
    for (version, component, reasons) in bad {
        site.drop_in("goods", version, &component);
        let entry = host.wait_state("goods", version, "rejected").await;
        let reason = entry["reason"].as_str().unwrap();
        for expected in reasons {
            assert!(
                reason.contains(expected),
                "{version}: {reason:?} lacks {expected:?}"
            );
        }
        let reply = host.get(&format!("/goods/{pen}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-switchyard-version"), "1.0.0");
    }

    site.drop_in("goods", "latest", &goods);
    let refused = host.wait_refused("goods", "latest.wasm", |_| true).await;
    assert!(refused.contains("semver"), "{refused}");
    assert_eq!(host.active("goods").await, "1.0.0");

    // Uploads that name no valid service or version, or try to leave the folder.
    for path in [
        "/admin/services/..%2F..%2Fetc/versions?version=1.0.0",
        "/admin/services/Goods/versions?version=1.0.0",
        "/admin/services/goods/versions?version=..%2F1.0.0",
        "/admin/services/goods/versions",
    ] {
        let reply = host.send(Method::POST, path, Some(goods.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {reply:?}");
        assert!(!reply.error().is_empty());
    }
    assert!(!site.services().join("etc").exists());
    assert!(
        site.log_mentioning("2.0.0.wasm").contains("2.0.0.wasm"),
        "the log names the refused file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_whose_imports_nobody_provides_is_refused_at_drop() {
    let site = Site::new();
    site.install("users", "1.0.0", &component("users"));
    let host = site.start_in_process();
    site.drop_in("orders", "1.0.0", &bytes("orders"));
    let entry = host.wait_state("orders", "1.0.0", "rejected").await;
    let reason = entry["reason"].as_str().unwrap();
    assert!(
        reason.contains("switchyard:shop/catalog@1.0.0")
            && reason.contains("no loaded service exports"),
        "{reason}"
    );

    // Once goods arrives, the same orders file dropped again is accepted.
    site.drop_in("goods", "1.0.0", &bytes("goods"));
    host.wait_active("goods", "1.0.0").await;
    std::fs::remove_file(site.services().join("orders/1.0.0.wasm")).unwrap();
    site.drop_in("orders", "1.0.1", &bytes("orders"));
    host.wait_active("orders", "1.0.1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_keep_flowing_across_a_goods_upgrade_and_rollback_without_overselling() {
    let site = Site::shop();
    let host = Arc::new(site.start_in_process());
    let user = host.add_user().await.str("id");
    const STOCK: u64 = 1000;
    let pen = create_goods(&host, STOCK as u32).await;

    let stop = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..3)
        .map(|_| {
            let (host, stop, user, pen) = (host.clone(), stop.clone(), user.clone(), pen.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let items = json!([{"goods_id": pen, "qty": 1}]);
                    statuses.push(
                        host.post("/orders", json!({"user_id": user, "items": items}))
                            .await
                            .status,
                    );
                }
                statuses
            })
        })
        .collect();

    for version in ["1.1.0", "1.2.0"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        site.drop_in("goods", version, &bytes("goods_v2"));
        host.wait_active("goods", version).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        rollback(&host, "goods").await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    let mut accepted = 0u64;
    for buyer in buyers {
        for status in buyer.await.unwrap() {
            match status {
                StatusCode::CREATED => accepted += 1,
                StatusCode::CONFLICT => {}
                other => panic!("an order got {other}"),
            }
        }
    }
    let stock = host.get(&format!("/goods/{pen}")).await.body["stock"]
        .as_u64()
        .unwrap();
    assert_eq!(
        accepted + stock,
        STOCK,
        "every accepted order took exactly one from stock"
    );
    let orders = host.get(&format!("/orders?user_id={user}")).await;
    assert_eq!(orders.body.as_array().unwrap().len() as u64, accepted);

    // orders, never reloaded, reserved stock through the goods upgrades too.
    let goods = host.service("goods").await;
    for entry in goods["versions"].as_array().unwrap() {
        assert!(
            entry["requests"].as_u64().unwrap() > 0,
            "no call reached {entry}; accepted {accepted}: {goods}"
        );
    }
    assert_eq!(
        host.service("orders").await["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_survives_a_restart_and_nothing_is_recompiled() {
    let site = Site::shop();
    let host = site.start();
    site.drop_in("goods", "1.1.0", &bytes("goods_v2"));
    host.wait_active("goods", "1.1.0").await;
    rollback(&host, "goods").await;
    host.kill();

    let host = site.start();
    assert_eq!(
        host.active("goods").await,
        "1.0.0",
        "still rolled back, though 1.1.0 is higher"
    );
    let goods = host.service("goods").await;
    assert_eq!(goods["versions"][0]["version"], "1.1.0");
    assert_eq!(goods["versions"][0]["state"], "standby");
    for service in ["goods", "users", "orders"] {
        for entry in host.service(service).await["versions"].as_array().unwrap() {
            assert_eq!(entry["from_cache"], true, "{service}: {entry}");
        }
    }
    host.kill();

    // A version dropped while the host was stopped is new: auto mode takes it.
    site.install("goods", "1.2.0", &component("goods"));
    let host = site.start();
    assert_eq!(host.active("goods").await, "1.2.0");
    assert_eq!(rollback(&host, "goods").await["active_version"], "1.0.0");
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_traffic_split_sends_each_version_its_share() {
    let site = Site::shop();
    site.install("goods", "1.1.0", &component("goods_v2"));
    let host = Arc::new(site.start_in_process());
    let pen = create_goods(&host, 10).await;

    let split = host
        .put(
            "/admin/services/goods/traffic",
            json!({"1.0.0": 90, "1.1.0": 10}),
        )
        .await;
    assert_eq!(split.status, StatusCode::OK, "{split:?}");
    assert_eq!(split.body["traffic"], json!({"1.0.0": 90, "1.1.0": 10}));
    assert_eq!(split.body["active_version"], "1.0.0");

    const REQUESTS: usize = 10_000;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (host, path) = (host.clone(), format!("/goods/{pen}"));
            tokio::spawn(async move {
                let mut counts: HashMap<String, usize> = HashMap::new();
                for _ in 0..REQUESTS / 8 {
                    let reply = host.get(&path).await;
                    assert_eq!(reply.status, StatusCode::OK);
                    let edition = reply.header("x-goods-edition").to_string();
                    let version = reply.header("x-switchyard-version").to_string();
                    assert_eq!(
                        edition == "2",
                        version == "1.1.0",
                        "{version} answered as {edition:?}"
                    );
                    *counts.entry(version).or_default() += 1;
                }
                counts
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (version, n) in task.await.unwrap() {
            *counts.entry(version).or_default() += n;
        }
    }
    for (version, weight) in [("1.0.0", 90.0), ("1.1.0", 10.0)] {
        let share = counts[version] as f64 * 100.0 / REQUESTS as f64;
        assert!(
            (share - weight).abs() <= 3.0,
            "{version}: {share:.1}% of traffic, weight {weight}"
        );
    }

    let refused = [
        (json!({"1.0.0": 0}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"9.9.9": 1}), StatusCode::NOT_FOUND),
        (json!({"one": 1}), StatusCode::BAD_REQUEST),
        (json!({"1.0.0": -5}), StatusCode::BAD_REQUEST),
        (json!(["1.0.0"]), StatusCode::BAD_REQUEST),
    ];
    for (body, status) in refused {
        let reply = host
            .put("/admin/services/goods/traffic", body.clone())
            .await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        assert!(!reply.error().is_empty());
    }
    // The split survives a restart.
    drop(tasks_done(host));
    let host = site.start_in_process();
    assert_eq!(
        host.service("goods").await["traffic"],
        json!({"1.0.0": 90, "1.1.0": 10})
    );
}

/// Stop a shared host once its clients are done.
fn tasks_done(host: Arc<Host>) -> Host {
    Arc::try_unwrap(host).unwrap_or_else(|_| panic!("clients still hold the host"))
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_changes_are_refused_without_the_token() {
    let site = Site::shop();
    let host = site.start_in_process_with(|s| s.admin_token = Some("s3cret".into()));
    let goods = bytes("goods_v2");
    let changes = [
        (Method::POST, "/admin/services/goods/rollback", None),
        (
            Method::POST,
            "/admin/services/goods/activate",
            Some(br#"{"version":"1.0.0"}"#.to_vec()),
        ),
        (
            Method::PUT,
            "/admin/services/goods/traffic",
            Some(br#"{"1.0.0":100}"#.to_vec()),
        ),
        (
            Method::POST,
            "/admin/services/goods/versions?version=1.1.0",
            Some(goods.clone()),
        ),
    ];
    for (method, path, body) in &changes {
        let anonymous = host.send(method.clone(), path, body.clone()).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(anonymous.error().contains("Bearer"));
        let wrong = host
            .send_as("s3cre", method.clone(), path, body.clone())
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(host.active("goods").await, "1.0.0");
    assert!(!site.services().join("goods/1.1.0.wasm").exists());

    let upload = host
        .send_as(
            "s3cret",
            Method::POST,
            "/admin/services/goods/versions?version=1.1.0",
            Some(goods),
        )
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{upload:?}");
    let back = host
        .send_as(
            "s3cret",
            Method::POST,
            "/admin/services/goods/rollback",
            None,
        )
        .await;
    assert_eq!(
        (back.status, back.body["active_version"].clone()),
        (StatusCode::OK, json!("1.0.0"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_mode_keeps_new_versions_on_standby_until_activated() {
    let site = Site::shop();
    site.settings("goods", "activation = \"manual\"\n");
    let host = site.start_in_process();
    let pen = create_goods(&host, 10).await;

    let upload = host
        .send(
            Method::POST,
            "/admin/services/goods/versions?version=1.1.0",
            Some(bytes("goods_v2")),
        )
        .await;
    assert_eq!(upload.status, StatusCode::CREATED, "{upload:?}");
    assert_eq!(upload.body["state"], "standby");
    assert!(
        site.services().join("goods/1.1.0.wasm").exists(),
        "an upload is kept in the folder"
    );
    assert_eq!(host.active("goods").await, "1.0.0");

    let again = host
        .send(
            Method::POST,
            "/admin/services/goods/versions?version=1.1.0",
            Some(bytes("goods")),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let garbage = host
        .send(
            Method::POST,
            "/admin/services/goods/versions?version=1.2.0",
            Some(b"junk".to_vec()),
        )
        .await;
    assert_eq!(garbage.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(garbage.error().contains("not a WebAssembly file"));
    let broken = host
        .send(
            Method::POST,
            "/admin/services/goods/versions?version=2.0.0",
            Some(bytes("goods_broken")),
        )
        .await;
    assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(broken.error().contains("breaks orders"), "{broken:?}");
    let why = &broken.body["why"];
    assert_eq!(why["kind"], "incompatible", "{broken:?}");
    assert_eq!(why["why"]["kind"], "breaks-consumer", "{broken:?}");
    assert_eq!(why["why"]["consumer"], "orders", "{broken:?}");
    assert!(!site.services().join("goods/2.0.0.wasm").exists());

    site.drop_in("goods", "1.3.0", &bytes("goods"));
    host.wait_state("goods", "1.3.0", "standby").await;
    assert_eq!(host.active("goods").await, "1.0.0");

    let activated = host
        .post(
            "/admin/services/goods/activate",
            json!({"version": "1.1.0"}),
        )
        .await;
    assert_eq!(activated.status, StatusCode::OK, "{activated:?}");
    let reply = host.get(&format!("/goods/{pen}")).await;
    assert_eq!(reply.header("x-switchyard-version"), "1.1.0");
    assert_eq!(reply.header("x-goods-edition"), "2");
    assert_eq!(
        reply.body["stock"], 10,
        "data belongs to the service, not the version"
    );

    for (body, status) in [
        (json!({"version": "7.0.0"}), StatusCode::NOT_FOUND),
        (json!({"version": "seven"}), StatusCode::BAD_REQUEST),
        (json!({"release": "1.0.0"}), StatusCode::BAD_REQUEST),
    ] {
        let reply = host
            .post("/admin/services/goods/activate", body.clone())
            .await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
    }
    let unknown = host
        .post("/admin/services/nothing/rollback", json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_copy_is_read_once_complete_and_removing_a_version_falls_back() {
    let site = Site::shop();
    let host = site.start_in_process();
    let goods = bytes("goods_v2");
    let path = site.services().join("goods/1.5.0.wasm");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in goods.chunks(16 * 1024) {
            file.write_all(chunk).unwrap();
            file.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    host.wait_active("goods", "1.5.0").await;
    let history = host.service("goods").await["history"].clone();
    assert!(
        !history
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "rejected"),
        "a partial file was read: {history}"
    );

    std::fs::remove_file(&path).unwrap();
    host.wait_active("goods", "1.0.0").await;
    let versions = host.service("goods").await["versions"].clone();
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");
}

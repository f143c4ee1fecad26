//! Instance pools, balancing strategies, limits and failover, end to end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{Host, Site, component, eventually};
use axum::http::{Method, StatusCode};
use serde_json::json;

/// Install the faulty fixture as `service` with these service.toml settings.
fn faulty(site: &Site, service: &str, settings: &str) {
    site.install(service, "1.0.0", &component("faulty"));
    site.settings(service, settings);
}

/// The instance (pool slot) that answered.
fn instance(reply: &crate::support::Reply) -> String {
    reply.header("x-switchyard-instance").to_string()
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn limits_stop_loops_hoarders_and_overflows_and_the_host_stays_healthy() {
    let site = Site::new();
    faulty(
        &site,
        "faulty",
        "[limits]\ndeadline_ms = 300\nmemory_mib = 16\n[failover]\nenabled = false\n",
    );
    let host = site.start_in_process();

    let started = Instant::now();
    let looped = host.get("/faulty/loop").await;
    let took = started.elapsed();
    assert_eq!(looped.status, StatusCode::GATEWAY_TIMEOUT, "{looped:?}");
    assert!(looped.error().contains("300 ms"), "{looped:?}");
    assert!(
        took >= Duration::from_millis(300),
        "interrupted early: {took:?}"
    );
    // The promise is deadline + 100 ms inside the host; the margin above that
    // is for the HTTP round trip on a loaded machine.
    assert!(
        took < Duration::from_millis(300 + 100 + 400),
        "took {took:?}"
    );

    let hoard = host.get("/faulty/alloc").await;
    assert_eq!(hoard.status, StatusCode::SERVICE_UNAVAILABLE, "{hoard:?}");
    assert!(hoard.error().contains("memory"), "{hoard:?}");

    let overflow = host.get("/faulty/overflow").await;
    assert_eq!(
        overflow.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{overflow:?}"
    );

    for _ in 0..3 {
        assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
    }
    let service = host.service("faulty").await;
    assert!(service["instances"].as_u64().unwrap() <= 4, "{service}");
    assert!(
        service["versions"][0]["errors"].as_u64().unwrap() >= 3,
        "{service}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_traps_is_retried_once_and_the_instance_is_replaced() {
    let site = Site::new();
    faulty(&site, "faulty", "[failover]\nenabled = false\n");
    let host = site.start();
    let counted = host.get("/faulty/count").await;
    let slot = instance(&counted);

    let panicked = host.get("/faulty/panic").await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(panicked.error().contains("failed"), "{panicked:?}");
    let errors = |s: &serde_json::Value| s["versions"][0]["errors"].as_u64().unwrap();
    assert_eq!(
        errors(&host.service("faulty").await),
        2,
        "a GET is tried twice"
    );
    let retries = r#"switchyard_retries_total{service="faulty",version="1.0.0"}"#;
    assert_eq!(
        host.metric(retries).await,
        1.0,
        "the retry is counted apart"
    );
    let five = r#"switchyard_requests_total{service="faulty",version="1.0.0",status="5xx"}"#;
    assert_eq!(host.metric(five).await, 1.0, "one request");
    let posted = host.send(Method::POST, "/faulty/panic", None).await;
    assert_eq!(posted.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        errors(&host.service("faulty").await),
        3,
        "a POST is not retried"
    );
    assert_eq!(host.metric(retries).await, 1.0, "a POST is not retried");

    // The instance that counted before is gone: its successor starts at 1.
    let recount = host.get("/faulty/count").await;
    assert_eq!(instance(&recount), slot);
    assert_eq!(recount.body, 1, "a trapped instance was reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_pool_answers_503_with_retry_after_instead_of_queueing_forever() {
    let site = Site::new();
    faulty(
        &site,
        "faulty",
        "[instances]\nmin = 1\nmax = 1\nqueue_timeout_ms = 200\n",
    );
    let host = Arc::new(site.start_in_process());
    let slow = {
        let host = host.clone();
        tokio::spawn(async move { host.get("/faulty/slow?ms=1500").await.status })
    };
    host.wait_busy("faulty", "1.0.0", 1).await;
    let started = Instant::now();
    let refused = host.get("/faulty/ok").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), "1");
    assert!(refused.error().contains("busy"));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "it waited its queue timeout first"
    );
    // Past 32 waiting calls per instance, more are refused at once.
    let burst = host.get_at_once(40, "/faulty/ok");
    let mut turned_away = 0;
    for reply in burst {
        let reply = reply.await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        turned_away += usize::from(reply.error().contains("32 calls are waiting already"));
    }
    assert!(turned_away >= 8, "{turned_away} turned away at once");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn pooled_instances_are_reused_and_per_request_ones_are_not() {
    let site = Site::new();
    faulty(&site, "pooled", "[instances]\nmin = 1\nmax = 1\n");
    faulty(&site, "fresh", "isolation = \"per-request\"\n");
    let host = site.start_in_process();
    let mut pooled = Vec::new();
    let mut fresh = Vec::new();
    for _ in 0..5 {
        pooled.push(host.get("/pooled/count").await.body.as_u64().unwrap());
        fresh.push(host.get("/fresh/count").await.body.as_u64().unwrap());
    }
    assert_eq!(pooled, [1, 2, 3, 4, 5], "one instance serves every call");
    assert_eq!(fresh, [1, 1, 1, 1, 1], "every call gets a new instance");
    assert_eq!(host.service("fresh").await["instances"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_strategy_spreads_calls_as_it_promises() {
    let site = Site::new();
    faulty(
        &site,
        "rr",
        "strategy = \"round-robin\"\n[instances]\nmin = 3\nmax = 3\n",
    );
    faulty(
        &site,
        "rnd",
        "strategy = \"random\"\n[instances]\nmin = 4\nmax = 4\n",
    );
    faulty(
        &site,
        "least",
        "strategy = \"least-outstanding\"\n[instances]\nmin = 2\nmax = 2\n",
    );
    let hashed = "strategy = \"consistent-hash\"\nhash_key = \"header:x-user-id\"\n[instances]\nmin = 0\nmax = 4\n";
    faulty(&site, "hash", hashed);
    // The same for a handler2 service, whose executor finds the key in the
    // request it lends.
    site.install("hash2", "1.0.0", &component("hello2"));
    site.settings("hash2", hashed);
    let host = Arc::new(site.start_in_process());

    // Round-robin: strictly in turn.
    let mut turns = Vec::new();
    for _ in 0..30 {
        turns.push(instance(&host.get("/rr/ok").await));
    }
    for pair in turns.windows(4) {
        assert_eq!(pair[0], pair[3], "not in turn: {turns:?}");
        assert_ne!(pair[0], pair[1], "not in turn: {turns:?}");
    }

    // Random: every instance gets about its share of 400 calls (100 ± 50).
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..400 {
        *counts
            .entry(instance(&host.get("/rnd/ok").await))
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(
        counts.values().all(|&n| (50..=150).contains(&n)),
        "{counts:?}"
    );

    // Least outstanding: while one instance is busy, calls go to the other.
    let busy = {
        let host = host.clone();
        tokio::spawn(async move { instance(&host.get("/least/slow?ms=800").await) })
    };
    host.wait_busy("least", "1.0.0", 1).await;
    let mut during = BTreeSet::new();
    for _ in 0..10 {
        let started = Instant::now();
        let reply = host.get("/least/ok").await;
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "a call queued behind the busy instance"
        );
        during.insert(instance(&reply));
    }
    let busy = busy.await.unwrap();
    assert_eq!(during.len(), 1, "{during:?}");
    assert!(!during.contains(&busy), "a call went to the busy instance");

    // Consistent hash: a key always lands on the same instance; keys spread.
    for path in ["/hash/ok", "/hash2/hello"] {
        let mut homes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for round in 0..3 {
            for user in 0..40 {
                let reply = host
                    .client()
                    .get(format!("{}{path}", host.base))
                    .header("x-user-id", format!("user-{user}"))
                    .send()
                    .await
                    .unwrap();
                let slot = reply.headers()["x-switchyard-instance"]
                    .to_str()
                    .unwrap()
                    .to_string();
                homes
                    .entry(format!("user-{user}"))
                    .or_default()
                    .insert(slot);
                assert_eq!(reply.status(), StatusCode::OK, "{path}, round {round}");
            }
        }
        assert!(
            homes.values().all(|slots| slots.len() == 1),
            "{path}: a key moved: {homes:?}"
        );
        let used: BTreeSet<&String> = homes.values().flatten().collect();
        assert_eq!(
            used.len(),
            4,
            "{path}: 40 keys use all 4 instances: {used:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_cycle_of_service_calls_ends_at_the_depth_limit() {
    let site = Site::new();
    site.install("ping", "1.0.0", &component("cycle"));
    site.install("pong", "1.0.0", &component("pong"));
    site.settings("ping", "[limits]\ncall_depth = 6\n");
    let host = site.start_in_process();
    let reply = host.get("/ping/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(reply.error().contains("call depth limit"), "{reply:?}");
    assert_eq!(
        host.get("/ping/").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "and again, no hang"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_version_fails_over_to_the_previous_good_one_unless_turned_off() {
    let site = Site::new();
    for service in ["guarded", "unguarded"] {
        site.install(service, "1.0.0", &component("faulty"));
        site.install(service, "1.1.0", &component("faulty"));
    }
    site.settings("guarded", "[failover]\nthreshold = 4\nwindow_ms = 60000\n");
    site.settings("unguarded", "[failover]\nenabled = false\n");
    let host = site.start_in_process();
    rollback_then_upgrade(&host, "guarded").await;
    rollback_then_upgrade(&host, "unguarded").await;

    for _ in 0..2 {
        // Each GET traps twice (the retry traps too): 4 failures in all.
        host.get("/guarded/panic").await;
        host.get("/unguarded/panic").await;
    }
    // The failover is decided off the request path: wait for it.
    host.wait_state("guarded", "1.1.0", "failed").await;
    let guarded = host.service("guarded").await;
    assert_eq!(guarded["active_version"], "1.0.0", "{guarded}");
    let event = &guarded["history"][0];
    assert_eq!(event["action"], "failover");
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("1.1.0 failed: 4 failures"),
        "{event}"
    );
    let failed = guarded["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1.1.0")
        .unwrap();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        host.get("/guarded/ok").await.header("x-switchyard-version"),
        "1.0.0"
    );
    assert_eq!(host.active("unguarded").await, "1.1.0");

    // An operator can put it back.
    let back = host
        .post(
            "/admin/services/guarded/activate",
            json!({"version": "1.1.0"}),
        )
        .await;
    assert_eq!(back.status, StatusCode::OK);
    let versions = back.body["versions"].as_array().unwrap().clone();
    assert!(
        versions.iter().all(|v| v["state"] != "failed"),
        "{versions:?}"
    );
}

/// A read that traps is retried once on a fresh instance, unless it asked
/// the store to change something: then repeating it would change it twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_read_is_retried_only_when_it_wrote_nothing() {
    let site = Site::new();
    faulty(&site, "faulty", "[failover]\nenabled = false\n");
    let host = site.start_in_process();
    let failed = host.get("/faulty/bump-then-panic").await;
    assert_eq!(
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{failed:?}"
    );
    assert_eq!(
        host.get("/faulty/bumps").await.body,
        "1",
        "run once, not twice"
    );
    let version = &host.service("faulty").await["versions"][0];
    assert_eq!(
        (
            &version["requests"],
            &version["attempts"],
            &version["errors"]
        ),
        (&json!(2), &json!(2), &json!(1)),
        "{version}"
    );

    // One that wrote nothing is retried: two failed attempts.
    assert_eq!(
        host.get("/faulty/panic").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let version = &host.service("faulty").await["versions"][0];
    assert_eq!(
        (
            &version["requests"],
            &version["attempts"],
            &version["errors"]
        ),
        (&json!(3), &json!(4), &json!(3)),
        "one request, two attempts: {version}"
    );
}

/// A failing version with no healthy one to take over serves on, and says
/// so: its history line is no failover to itself, its state is not a plain
/// `active`.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_version_with_nowhere_to_go_serves_on_marked_failing() {
    let site = Site::new();
    site.install("alone", "1.0.0", &component("faulty"));
    site.settings("alone", "[failover]\nthreshold = 4\nwindow_ms = 60000\n");
    let host = site.start_in_process();
    for _ in 0..2 {
        // Each GET traps twice (the retry traps too): 4 failures in all.
        host.get("/alone/panic").await;
    }
    // Decided off the request path: wait for it.
    host.wait_state("alone", "1.0.0", "failing").await;
    let alone = host.service("alone").await;
    assert_eq!(alone["active_version"], "1.0.0", "{alone}");
    let event = &alone["history"][0];
    assert_eq!(event["action"], "no-fallback", "{event}");
    assert_eq!(event["version"], "1.0.0", "{event}");
    let version = &alone["versions"][0];
    assert_eq!(version["state"], "failing", "{version}");
    assert!(
        version["reason"].as_str().unwrap().contains("4 failures"),
        "{version}"
    );
    assert_eq!(host.get("/alone/ok").await.status, StatusCode::OK);
}

/// Make 1.1.0 active with 1.0.0 before it on the rollback stack.
async fn rollback_then_upgrade(host: &Host, service: &str) {
    let activate = |version: &str| json!({"version": version});
    host.post(
        &format!("/admin/services/{service}/activate"),
        activate("1.0.0"),
    )
    .await;
    let reply = host
        .post(
            &format!("/admin/services/{service}/activate"),
            activate("1.1.0"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn orders_keep_being_accepted_after_a_panicking_goods_fails_over() {
    let site = Site::shop();
    let host = Arc::new(site.start_in_process());
    let user = host.add_user().await.str("id");
    let pen = host.add_goods("pen", 150, 1000).await.str("id");
    site.drop_in(
        "goods",
        "9.0.0",
        &std::fs::read(component("goods_panic")).unwrap(),
    );
    host.wait_active("goods", "9.0.0").await;

    let buyers: Vec<_> = (0..3)
        .map(|_| {
            let (host, user, pen) = (host.clone(), user.clone(), pen.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..30 {
                    let order = json!({"user_id": user, "items": [{"goods_id": pen, "qty": 1}]});
                    let reply = host.post("/orders", order).await;
                    if reply.status != StatusCode::CREATED {
                        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
                        assert!(reply.error().contains("service goods 9.0.0"), "{reply:?}");
                    }
                    statuses.push(reply.status);
                }
                statuses
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for buyer in buyers {
        statuses.extend(buyer.await.unwrap());
    }
    let failed = statuses
        .iter()
        .filter(|s| **s != StatusCode::CREATED)
        .count();
    // Failover after 5 failures; a few more calls may have been in flight.
    assert!((5..=10).contains(&failed), "{failed} orders failed");
    assert_eq!(host.active("goods").await, "1.0.0");
    for _ in 0..10 {
        let order = json!({"user_id": user, "items": [{"goods_id": pen, "qty": 1}]});
        statuses.push(host.post("/orders", order).await.status);
        assert_eq!(
            statuses.last(),
            Some(&StatusCode::CREATED),
            "after the failover"
        );
    }
    let stock = host.get(&format!("/goods/{pen}")).await.body["stock"]
        .as_u64()
        .unwrap();
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count() as u64;
    assert_eq!(stock + accepted, 1000, "a failed order holds no stock");

    // With no healthy goods at all, orders says which provider is missing.
    site.drop_in(
        "goods",
        "9.1.0",
        &std::fs::read(component("goods_panic")).unwrap(),
    );
    host.wait_active("goods", "9.1.0").await;
    std::fs::remove_file(site.services().join("goods/1.0.0.wasm")).unwrap();
    std::fs::remove_file(site.services().join("goods/9.0.0.wasm")).unwrap();
    let versions = async || {
        host.service("goods").await["versions"]
            .as_array()
            .map(Vec::len)
    };
    let forgotten = eventually(async || (versions().await == Some(1)).then_some(()));
    assert!(forgotten.await.is_some(), "{}", host.service("goods").await);
    assert_eq!(host.active("goods").await, "9.1.0");
    for _ in 0..8 {
        let order = json!({"user_id": user, "items": [{"goods_id": pen, "qty": 1}]});
        let reply = host.post("/orders", order).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.error().contains("goods"), "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_storm_of_traps_and_timeouts_instances_and_memory_return_to_baseline() {
    let site = Site::new();
    faulty(
        &site,
        "faulty",
        "[limits]\ndeadline_ms = 100\n[failover]\nenabled = false\n",
    );
    let host = Arc::new(site.start());
    for _ in 0..50 {
        host.get("/faulty/ok").await;
    }
    let baseline_instances = host.service("faulty").await["instances"].as_u64().unwrap();
    let baseline_rss = host.rss_kib();

    let storm: Vec<_> = (0..4)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                for round in 0..15 {
                    let path = [
                        "/faulty/panic",
                        "/faulty/loop",
                        "/faulty/alloc",
                        "/faulty/overflow",
                    ][(i + round) % 4];
                    let reply = host.get(path).await;
                    assert!(reply.status.is_server_error(), "{path}: {reply:?}");
                }
            })
        })
        .collect();
    for task in storm {
        task.await.unwrap();
    }
    for _ in 0..50 {
        assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
    }
    let after = host.service("faulty").await;
    assert!(
        after["instances"].as_u64().unwrap() <= baseline_instances.max(1),
        "{after}"
    );
    let rss = host.rss_kib();
    assert!(
        rss < baseline_rss + 32 * 1024,
        "RSS grew from {baseline_rss} KiB to {rss} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_whose_memory_only_grows_is_replaced_before_its_limit() {
    let site = Site::new();
    site.install("faulty", "1.0.0", &component("faulty"));
    site.settings(
        "faulty",
        "[instances]\nmin = 1\nmax = 1\n[limits]\nmemory_mib = 8\n",
    );
    let host = site.start_in_process();
    // Each call leaks 1 MiB: without recycling, the eighth or so would meet
    // the limit.
    for call in 0..24 {
        let leaked = host.get("/faulty/leak?kib=1024").await;
        assert_eq!(leaked.status, StatusCode::OK, "call {call}: {leaked:?}");
    }
    let faulty = host.service("faulty").await;
    assert_eq!(faulty["versions"][0]["errors"], 0, "{faulty}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_a_burst_of_large_answers_grew_goes_back_after_it() {
    let site = Site::new();
    faulty(
        &site,
        "faulty",
        "[instances]\nmin = 1\nmax = 4\n[limits]\nmemory_mib = 256\n[failover]\nenabled = false\n",
    );
    let host = Arc::new(site.start());
    for _ in 0..20 {
        assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
    }
    let baseline_rss = host.rss_kib();

    // Four instances at once each grow past 100 MiB to answer.
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move {
                let url = format!("{}/faulty/big?mib=100", host.base);
                let response = host.client().get(url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.bytes().await.unwrap().len()
            })
        })
        .collect();
    for answer in burst {
        assert_eq!(answer.await.unwrap(), 100 << 20);
    }
    // Instances that grew that much were replaced after their call: their
    // memory went back to the system, and ordinary calls still answer.
    for _ in 0..20 {
        assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
    }
    let rss = host.rss_kib();
    assert!(
        rss < baseline_rss + 20 * 1024,
        "RSS grew from {baseline_rss} KiB to {rss} KiB after the burst"
    );
    let faulty = host.service("faulty").await;
    assert_eq!(faulty["versions"][0]["errors"], 0, "{faulty}");
}

//! The operator's dashboard and the numbers it draws (`GET /admin/stats`),
//! end to end against the real host.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::webdriver::Browser;
use crate::support::{Site, component, eventually};

/// The stats of service `name` in a `GET /admin/stats` answer.
fn service<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

/// `/admin/stats` counts every call a version answered over the last
/// minute (HTTP requests and calls from other services), its failures and
/// latencies, its pool now, and marks a service that failed over; it is for
/// operators only.
#[tokio::test(flavor = "multi_thread")]
async fn stats_show_each_services_rate_success_latency_instances_and_failover() {
    const TOKEN: &str = "stats-secret";
    let site = Site::shop();
    for version in ["1.0.0", "1.1.0"] {
        site.install("faulty", version, &component("faulty"));
    }
    site.settings(
        "faulty",
        "[instances]\nmax = 3\n[failover]\nthreshold = 2\n",
    );
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));
    host.wait_active("faulty", "1.1.0").await;

    let anonymous = host.send(Method::GET, "/admin/stats", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");

    let user = host.add_user().await.str("id");
    let goods = host.add_goods("pen", 150, 10).await.str("id");
    for _ in 0..20 {
        assert_eq!(host.get("/goods").await.status, StatusCode::OK);
    }
    let order = json!({"user_id": user, "items": [{"goods_id": goods, "qty": 1}]});
    assert_eq!(
        host.post("/orders", order).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        host.get("/goods/nothing-here").await.status,
        StatusCode::NOT_FOUND
    );
    // A read that traps, tried twice: two failures cross the threshold.
    let trapped = host.get("/faulty/panic").await;
    assert_eq!(trapped.status, StatusCode::INTERNAL_SERVER_ERROR);
    host.wait_state("faulty", "1.1.0", "failed").await;

    let stats = host.send_as(TOKEN, Method::GET, "/admin/stats", None).await;
    assert_eq!(stats.status, StatusCode::OK, "{stats:?}");
    assert_eq!(stats.body["window_seconds"], 60);
    let goods = service(&stats.body, "goods");
    // 1 create + 20 lists + 1 missing over HTTP, and the order's calls from
    // orders (at least one lookup and one reservation).
    let requests = goods["requests"].as_u64().unwrap();
    assert!(requests >= 24, "{goods}");
    assert_eq!(goods["failures"], 0, "a 404 is the client's: {goods}");
    assert_eq!(goods["success_rate"], 1.0);
    assert!(
        goods["requests_per_second"].as_f64().unwrap() > 0.0,
        "{goods}"
    );
    let (p50, p99) = (
        goods["latency_ms"]["p50"].as_f64().unwrap(),
        goods["latency_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{goods}");
    assert_eq!(goods["active_version"], "1.0.0");
    assert_eq!(goods["traffic"], json!({"1.0.0": 100}));
    assert_eq!(goods["failed_over"], false);
    let version = &goods["versions"][0];
    assert_eq!(
        (&version["version"], &version["state"]),
        (&json!("1.0.0"), &json!("active"))
    );
    assert_eq!(version["requests"], requests);
    let instances = &goods["instances"];
    assert!(instances["idle"].as_u64().unwrap() >= 1, "{goods}");
    assert_eq!(instances["busy"], 0, "{goods}");
    assert_eq!(goods["queued"], 0);

    let faulty = service(&stats.body, "faulty");
    assert_eq!(faulty["failed_over"], true, "{faulty}");
    assert_eq!(faulty["active_version"], "1.0.0", "{faulty}");
    assert_eq!(faulty["instances"]["max"], 3, "{faulty}");
    let failed = faulty["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1.1.0")
        .unwrap();
    assert_eq!(failed["state"], "failed");
    assert_eq!(
        (&failed["requests"], &failed["failures"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(failed["success_rate"], 0.0);
    assert_eq!(failed["weight"], Value::Null);
}

/// In a real browser: opening `/admin` leads to the dashboard, which lists
/// the shop's services with live numbers under load; a rollback clicked in
/// the page (and confirmed) changes the version that serves, as do a split
/// set with its sliders and an upload; a refused upload shows the host's
/// reason. The page under load is saved as `target/dashboard.png`.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_shop_live_under_load_and_acts_on_clicks() {
    let site = Site::shop();
    let host = Arc::new(site.start_in_process());
    let v2 = std::fs::read(component("goods_v2")).unwrap();
    site.drop_in("goods", "1.1.0", &v2);
    host.wait_active("goods", "1.1.0").await;
    host.add_goods("pen", 150, 10).await;
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let (host, loading) = (host.clone(), loading.clone());
        tokio::spawn(async move {
            while loading.load(Ordering::Relaxed) {
                host.get("/goods").await;
                host.get("/users").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let browser = Browser::open().await;
    browser.goto(&format!("http://{}/admin", host.addr())).await;
    assert_eq!(
        browser.current_path().await,
        "/admin/ui",
        "opening /admin leads to the dashboard"
    );
    for name in ["goods", "orders", "users"] {
        browser.text(&format!("tr[data-service={name:?}]")).await;
    }
    let goods = "tr[data-service=\"goods\"]";
    assert_eq!(
        browser.text(&format!("{goods} .active-version")).await,
        "1.1.0"
    );
    let rate = browser
        .text_until(&format!("{goods} .rps"), |t| {
            t.parse::<f64>().is_ok_and(|r| r > 0.0)
        })
        .await;
    assert!(!rate.is_empty());
    assert_eq!(browser.text(&format!("{goods} .success")).await, "100.0%");
    let p99 = browser.text(&format!("{goods} .p99")).await;
    assert!(p99.ends_with(" ms"), "{p99}");
    browser
        .text_until("tr[data-service=\"users\"] .rps", |t| {
            t.parse::<f64>().is_ok_and(|r| r > 0.0)
        })
        .await;

    // Open goods: its versions, history, and what uses it.
    browser.click(goods).await;
    let detail = browser.text("tr[data-detail=\"goods\"]").await;
    assert!(
        detail.contains("1.0.0") && detail.contains("standby"),
        "{detail}"
    );
    assert!(
        detail.contains("orders"),
        "orders imports goods' catalog: {detail}"
    );
    let screenshot = browser.screenshot().await;
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).with_file_name("dashboard.png");
    std::fs::write(&file, screenshot).unwrap();

    browser
        .click("button[data-action=\"rollback\"][data-service=\"goods\"]")
        .await;
    let question = browser.text("#confirm-text").await;
    assert!(question.contains("goods"), "{question}");
    browser.click("#confirm-yes").await;
    host.wait_active("goods", "1.0.0").await;
    browser
        .text_until(&format!("{goods} .active-version"), |t| t == "1.0.0")
        .await;

    // A split set with the sliders (moved as a hand would: the value, then
    // the input event), applied and confirmed.
    let panel = "tr[data-detail=\"goods\"]";
    for (version, weight) in [("1.0.0", 75), ("1.1.0", 25)] {
        let slider = format!("{panel} input[type=range][data-version={version:?}]");
        browser.text(&slider).await;
        let moved = "const s = document.querySelector(arguments[0]); s.value = arguments[1]; \
                     s.dispatchEvent(new Event('input')); return s.value;";
        let value = browser
            .execute(moved, vec![json!(slider), json!(weight)])
            .await;
        assert_eq!(value, json!(weight.to_string()));
    }
    browser
        .click("button[data-action=\"split\"][data-service=\"goods\"]")
        .await;
    let question = browser.text("#confirm-text").await;
    assert!(
        question.contains("1.0.0 75") && question.contains("1.1.0 25"),
        "{question}"
    );
    browser.click("#confirm-yes").await;
    let split = json!({"1.0.0": 75, "1.1.0": 25});
    let reached =
        eventually(async || (host.service("goods").await["traffic"] == split).then_some(()));
    assert!(reached.await.is_some(), "the split did not reach the host");

    // A version uploaded from a file, refused with the host's reason when
    // it exists already.
    let file = component("goods_v2");
    let upload = |version: &'static str| {
        let browser = &browser;
        let file = file.clone();
        async move {
            let field = |name: &str| format!("{panel} input[data-field={name:?}]");
            browser.type_into(&field("version"), version).await;
            browser
                .choose_file(&field("file"), file.to_str().unwrap())
                .await;
            browser
                .click("button[data-action=\"upload\"][data-service=\"goods\"]")
                .await;
            browser.click("#confirm-yes").await;
        }
    };
    upload("1.2.0").await;
    host.wait_active("goods", "1.2.0").await;
    upload("1.2.0").await;
    browser
        .text_until("#error", |t| t.contains("exists already"))
        .await;

    loading.store(false, Ordering::Relaxed);
    load.await.unwrap();
    browser.close().await;
}

/// On a host with an admin token, the page holds no data and asks for the
/// token; a wrong one is refused with an error on the page, the right one
/// shows the services.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_asks_for_the_admin_token_and_shows_a_wrong_one_refused() {
    const TOKEN: &str = "page-secret";
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));

    let page = host
        .client()
        .get(format!("http://{}/admin/ui", host.addr()));
    let page = page.send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("goods"), "the page carries no data: {html}");

    let browser = Browser::open().await;
    let ui = format!("http://{}/admin/ui", host.addr());
    browser.goto(&ui).await;
    let error = browser
        .text_until("#error", |t| t.contains("needs its admin token"))
        .await;
    assert!(error.contains("Bearer"), "the host's own reason: {error}");

    browser.type_into("#token-input", "not-the-token").await;
    browser.click("#token-submit").await;
    browser
        .text_until("#error", |t| t.contains("refused this admin token"))
        .await;
    assert_eq!(
        browser.count("tr[data-service]").await,
        0,
        "nothing is shown without the token"
    );

    browser.type_into("#token-input", TOKEN).await;
    browser.click("#token-submit").await;
    browser.text("tr[data-service=\"goods\"]").await;
    assert!(!browser.shown("#error").await, "the error is gone");
    browser.close().await;
}

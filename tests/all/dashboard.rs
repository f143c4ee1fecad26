//! The operator's dashboard and the numbers it draws (`GET /admin/stats`),
//! end to end against the real host.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::support::{Site, component};

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
    let host = site.start_with(&["--admin-token", TOKEN]);
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

/// A headless Chromium driven over WebDriver: `chromedriver` on a free port
/// (Debian's `chromium` and `chromium-driver`, which `make tools` installs).
struct Browser {
    driver: std::process::Child,
    client: Client,
}

impl Browser {
    async fn open() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("no chromedriver: `make tools` installs chromium and chromium-driver");
        let capabilities = json!({"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1400,900",
        ]}});
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let connecting = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match connecting {
                Ok(client) => return Browser { driver, client },
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    panic!("chromedriver at {url} gave no session: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The text of the first element `css` selects, once there is one. Read
    /// in the page in one step: the dashboard redraws its tables every two
    /// seconds, which would leave a found element stale.
    async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let script = "const e = document.querySelector(arguments[0]); return e && e.innerText;";
            let text = self.client.execute(script, vec![json!(css)]).await.unwrap();
            if let Value::String(text) = text {
                return text;
            }
            assert!(Instant::now() < deadline, "no {css} on the page");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the text of `css` satisfies `test`; that text.
    async fn text_until(&self, css: &str, test: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(css).await;
            if test(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} stayed {text:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Click the first element `css` selects, as a user would; again if a
    /// redraw replaced it between finding and clicking.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// End the session (the browser quits); dropping stops the driver.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// In a real browser: opening `/admin` leads to the dashboard, which lists
/// the shop's services with live numbers under load; a rollback clicked in
/// the page (and confirmed) changes the version that serves. The page under
/// load is saved as `target/dashboard.png`.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_shop_live_under_load_and_rolls_back_on_a_click() {
    let site = Site::shop();
    let host = Arc::new(site.start());
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
    browser
        .client
        .goto(&format!("http://{}/admin", host.addr()))
        .await
        .unwrap();
    assert!(
        browser.client.current_url().await.unwrap().path() == "/admin/ui",
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
    let screenshot = browser.client.screenshot().await.unwrap();
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
    let host = site.start_with(&["--admin-token", TOKEN]);

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
    browser.client.goto(&ui).await.unwrap();
    let error = browser
        .text_until("#error", |t| t.contains("needs its admin token"))
        .await;
    assert!(error.contains("Bearer"), "the host's own reason: {error}");

    let input = browser
        .client
        .find(Locator::Css("#token-input"))
        .await
        .unwrap();
    input.send_keys("not-the-token").await.unwrap();
    browser.click("#token-submit").await;
    browser
        .text_until("#error", |t| t.contains("refused this admin token"))
        .await;
    assert!(
        browser
            .client
            .find_all(Locator::Css("tr[data-service]"))
            .await
            .unwrap()
            .is_empty(),
        "nothing is shown without the token"
    );

    let input = browser
        .client
        .find(Locator::Css("#token-input"))
        .await
        .unwrap();
    input.send_keys(TOKEN).await.unwrap();
    browser.click("#token-submit").await;
    browser.text("tr[data-service=\"goods\"]").await;
    let error = browser.client.find(Locator::Css("#error")).await.unwrap();
    assert!(!error.is_displayed().await.unwrap(), "the error is gone");
    browser.close().await;
}

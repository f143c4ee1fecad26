//! What operators see and rely on: metrics, request ids and logs, health and
//! readiness, graceful shutdown. End to end, against the real host.

use std::sync::Arc;

use crate::support::{Site, component, eventually};
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_as_requests_errors_and_swaps_happen() {
    let site = Site::shop();
    site.install("faulty", "1.0.0", &component("faulty"));
    site.settings(
        "faulty",
        "[limits]\ndeadline_ms = 200\n[failover]\nenabled = false\n",
    );
    let host = site.start();

    let ok = r#"switchyard_requests_total{service="goods",version="1.0.0",status="ok"}"#;
    let before = host.metric(ok).await;
    for _ in 0..3 {
        host.get("/goods").await;
    }
    assert_eq!(host.metric(ok).await, before + 3.0);
    let latency = r#"switchyard_request_duration_seconds_count{service="goods",version="1.0.0"}"#;
    assert_eq!(host.metric(latency).await, before + 3.0);

    host.post("/faulty/panic", json!({})).await;
    host.get("/faulty/loop").await;
    assert_eq!(
        host.metric(r#"switchyard_traps_total{service="faulty",version="1.0.0"}"#)
            .await,
        1.0
    );
    assert_eq!(
        host.metric(r#"switchyard_timeouts_total{service="faulty",version="1.0.0"}"#)
            .await,
        1.0
    );
    let five = r#"switchyard_requests_total{service="faulty",version="1.0.0",status="5xx"}"#;
    assert_eq!(host.metric(five).await, 2.0);

    let swaps = r#"switchyard_swaps_total{service="goods"}"#;
    let swaps_before = host.metric(swaps).await;
    site.drop_in(
        "goods",
        "1.1.0",
        &std::fs::read(component("goods_v2")).unwrap(),
    );
    host.wait_active("goods", "1.1.0").await;
    host.post("/admin/services/goods/rollback", json!({})).await;
    assert_eq!(host.metric(swaps).await, swaps_before + 2.0);
    site.drop_in("goods", "1.2.0", b"not a component");
    host.wait_state("goods", "1.2.0", "rejected").await;
    assert_eq!(
        host.metric(r#"switchyard_rejected_versions_total{service="goods"}"#)
            .await,
        1.0
    );
    let idle = r#"switchyard_instances{service="goods",version="1.0.0",state="idle"}"#;
    assert!(host.metric(idle).await >= 1.0);
}

/// What a guest prints goes to the log in the span of the request that
/// printed it: its line carries the request id, as the service's own
/// `wasi:logging` lines do.
#[tokio::test(flavor = "multi_thread")]
async fn a_guests_output_lines_carry_the_request_id() {
    let site = Site::new();
    site.install("faulty", "1.0.0", &component("faulty"));
    let host = site.start_with(&["--log-format", "json"]);
    let printed = host
        .send_with_id(Method::GET, "/faulty/print?n=1&bytes=12", "print-me-7")
        .await;
    assert_eq!(printed.status, StatusCode::OK);
    let entry = site.log_entry_mentioning("xxxxxxxxxxxx");
    assert_eq!(entry["target"], "guest", "{entry}");
    assert_eq!(entry["fields"]["stream"], "stdout", "{entry}");
    assert_eq!(entry["span"]["id"], "print-me-7", "{entry}");
}

/// When a guest traps, what it wrote to stderr as it failed (here a Rust
/// panic message) is the operators': in the log line of the failed request
/// and in the admin view. The client learns that the service failed and
/// under which request id, not the guest's text nor the wasm backtrace.
#[tokio::test(flavor = "multi_thread")]
async fn a_trap_gives_the_client_a_request_id_and_the_operators_the_guests_error() {
    let site = Site::new();
    site.install("faulty", "1.0.0", &component("faulty"));
    site.settings(
        "faulty",
        "[limits]\ndeadline_ms = 200\n[failover]\nenabled = false\n",
    );
    let host = site.start_with(&["--log-format", "json"]);
    let panicked = host
        .send_with_id(Method::POST, "/faulty/panic", "panic-me-3")
        .await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    let body = panicked.body;
    assert_eq!(body["request_id"], "panic-me-3", "{body}");
    let error = body["error"].as_str().unwrap();
    for part in ["service faulty 1.0.0 failed", "panic-me-3"] {
        assert!(error.contains(part), "{part}: {body}");
    }
    for hidden in ["panics on request", "backtrace"] {
        assert!(!error.contains(hidden), "{hidden}: {body}");
    }

    let service = host.service("faulty").await;
    let last = &service["versions"][0]["last_error"];
    let stderr = last["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.contains("the faulty fixture panics on request"),
        "{last}"
    );
    assert!(
        last["failure"].as_str().unwrap().starts_with("trapped: "),
        "{last}"
    );
    assert!(last["at_ms"].as_u64().unwrap() > 0, "{last}");

    let entry = site.log_entry_mentioning("request failed");
    assert_eq!(entry["span"]["id"], "panic-me-3", "{entry}");
    let logged = entry["fields"]["stderr"].as_str().unwrap_or_default();
    assert!(
        logged.contains("the faulty fixture panics on request"),
        "{entry}"
    );
    assert!(
        entry["fields"]["trap"]
            .as_str()
            .unwrap_or_default()
            .contains("wasm"),
        "the whole trap is logged: {entry}"
    );

    // A call that succeeds leaves the last error as it was; the next
    // failure's stderr is its own.
    assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
    let timed_out = host.post("/faulty/loop", json!({})).await;
    assert_eq!(
        timed_out.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{timed_out:?}"
    );
    let last = &host.service("faulty").await["versions"][0]["last_error"];
    assert!(
        last["failure"].as_str().unwrap().contains("did not finish"),
        "{last}"
    );
    assert!(last.get("stderr").is_none(), "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_kept_or_made_and_logged_with_the_service() {
    let site = Site::shop();
    let host = site.start_with(&["--log-format", "json"]);
    let reply = host
        .send_with_id(Method::GET, "/goods", "trace-me-42")
        .await;
    assert_eq!(reply.header("x-request-id"), "trace-me-42");
    let made = host.get("/users").await;
    let id = made.header("x-request-id").to_string();
    assert_eq!(id.len(), 32, "a fresh id: {id:?}");
    assert_ne!(host.get("/users").await.header("x-request-id"), id);

    let entry = site.log_entry_mentioning("trace-me-42");
    assert_eq!(entry["span"]["id"], "trace-me-42");
    assert_eq!(entry["fields"]["method"], "GET");
    assert_eq!(entry["fields"]["path"], "/goods");
    assert_eq!(entry["fields"]["service"], "goods");
    assert_eq!(entry["fields"]["version"], "1.0.0");
    assert_eq!(entry["fields"]["status"], 200);
    assert!(entry["fields"]["latency_ms"].as_f64().is_some(), "{entry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_follows_the_log_filter() {
    let site = Site::new();
    site.install("faulty", "1.0.0", &component("faulty"));
    let mut quiet = site.serve_command(&[]);
    quiet.env("RUST_LOG", "warn");
    let host = site.start_command(quiet);
    assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
    // An error is written at once, after every line before it.
    let failed = host.get("/faulty/panic").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let logs = site.log_mentioning("request failed");
    assert!(!logs.contains(" served "), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_perf_map_perf_can_name_guest_functions() {
    let site = Site::new();
    site.install("faulty", "1.0.0", &component("faulty"));
    let host = site.start_with(&["--perf-map"]);
    assert_eq!(host.get("/faulty/ok").await.status, StatusCode::OK);
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", host.pid()));
    let names = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    // perf's format: start address, size, name (mangled; perf demangles
    // it); the guest's own handler among them.
    let handler = names
        .lines()
        .find(|line| line.contains("faulty") && line.contains("6handle"))
        .unwrap_or_else(|| panic!("no faulty handler in {map:?}: {names:.2000}"));
    let fields: Vec<&str> = handler.splitn(3, ' ').collect();
    let hex = |field: &str| u64::from_str_radix(field.trim_start_matches("0x"), 16);
    assert!(
        hex(fields[0]).is_ok() && hex(fields[1]).is_ok(),
        "{handler}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_whether_every_service_has_an_active_version() {
    let site = Site::new();
    site.install("users", "1.0.0", &component("users"));
    site.write("goods", "1.0.0", b"broken");
    let host = site.start_in_process();

    let health = host.get("/healthz").await;
    assert_eq!(
        (health.status, health.body["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    let ready = host.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["missing"], json!(["goods"]));
    assert!(ready.error().contains("goods"));

    site.drop_in(
        "goods",
        "1.0.1",
        &std::fs::read(component("goods")).unwrap(),
    );
    host.wait_active("goods", "1.0.1").await;
    let ready = host.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.body["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );
}

/// A service whose files are all deleted is withdrawn: readiness no longer
/// waits for it, its routes answer 404, the admin view says it was removed.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_service_folder_removes_the_service_without_a_restart() {
    let site = Site::new();
    site.install("users", "1.0.0", &component("users"));
    site.write("ratings", "1.0.0", b"broken");
    let host = site.start_in_process();
    assert_eq!(
        host.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        host.get("/ratings/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    std::fs::remove_dir_all(site.services().join("ratings")).unwrap();
    let ready =
        eventually(async || Some(host.get("/readyz").await).filter(|r| r.status == StatusCode::OK));
    let ready = match ready.await {
        Some(ready) => ready,
        None => host.get("/readyz").await,
    };
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    let gone = host.get("/ratings/").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{gone:?}");
    assert!(gone.error().contains("no service named"), "{gone:?}");
    let ratings = host.service("ratings").await;
    assert_eq!(ratings["removed"], true, "{ratings}");
    assert_eq!(ratings["history"][0]["action"], "removed", "{ratings}");
    assert_eq!(host.service("users").await["removed"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_cleanly() {
    let site = Site::new();
    site.install("faulty", "1.0.0", &component("faulty"));
    let host = Arc::new(site.start());
    let in_flight = {
        let host = host.clone();
        tokio::spawn(async move { host.get("/faulty/slow?ms=1000").await })
    };
    host.wait_busy("faulty", "1.0.0", 1).await;
    host.terminate();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, 1000);
    let host = Arc::try_unwrap(host).unwrap_or_else(|_| panic!("the request still holds the host"));
    let status = host.wait_exit();
    assert!(status.success(), "exit status {status}");
    assert!(site.log().contains("stopped"), "{}", site.log());
}

/// The admin API removes a version or a whole service, operators only: the
/// files go, the versions are withdrawn, traffic falls back.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_removes_a_version_or_a_service_through_the_admin_api() {
    const TOKEN: &str = "remove-secret";
    let site = Site::new();
    site.install("users", "1.0.0", &component("users"));
    site.install("goods", "1.0.0", &component("goods"));
    site.install("goods", "1.1.0", &component("goods_v2"));
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));
    assert_eq!(host.active("goods").await, "1.1.0");

    let anonymous = host
        .send(Method::DELETE, "/admin/services/goods/versions/1.1.0", None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");
    assert!(site.services().join("goods/1.1.0.wasm").exists());

    let removed = host
        .send_as(
            TOKEN,
            Method::DELETE,
            "/admin/services/goods/versions/1.1.0",
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{removed:?}");
    assert_eq!(removed.body["active_version"], "1.0.0", "traffic fell back");
    assert!(!site.services().join("goods/1.1.0.wasm").exists());
    assert_eq!(
        host.get("/goods").await.header("x-switchyard-version"),
        "1.0.0"
    );
    let again = host
        .send_as(
            TOKEN,
            Method::DELETE,
            "/admin/services/goods/versions/1.1.0",
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{again:?}");

    let gone = host
        .send_as(TOKEN, Method::DELETE, "/admin/services/goods", None)
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{gone:?}");
    assert_eq!(gone.body["removed"], true, "{gone:?}");
    assert!(!site.services().join("goods").exists());
    assert_eq!(host.get("/goods").await.status, StatusCode::NOT_FOUND);
    assert_eq!(host.get("/readyz").await.status, StatusCode::OK);
    let unknown = host
        .send_as(TOKEN, Method::DELETE, "/admin/services/nothing", None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown:?}");
    assert_eq!(host.active("users").await, "1.0.0");
}

/// The front door: `/` says what the host is and where to go, without
/// naming a service; `/admin` lists the admin API, to operators only.
#[tokio::test(flavor = "multi_thread")]
async fn the_front_door_says_where_to_go_and_lists_nothing_to_the_public() {
    const TOKEN: &str = "door-secret";
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));

    let root = host.get("/").await;
    assert_eq!(root.status, StatusCode::NOT_FOUND, "{root:?}");
    assert!(root.error().contains("/<name>/"), "{root:?}");
    assert!(root.body["operators"].as_str().unwrap().contains("/admin"));
    assert!(!root.body.to_string().contains("goods"), "{root:?}");

    for path in ["/admin", "/admin/"] {
        let anonymous = host.send(Method::GET, path, None).await;
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {anonymous:?}"
        );
        let index = host.send_as(TOKEN, Method::GET, path, None).await;
        assert_eq!(index.status, StatusCode::OK, "{path}: {index:?}");
        let routes = index.body["routes"].as_array().unwrap();
        assert!(
            routes.iter().any(|r| r["path"] == "/admin/services"),
            "{index:?}"
        );
    }
}

/// A web page of another site cannot make an operator's browser act on a
/// token-less host on loopback: a request carrying a foreign `Origin` is
/// refused (403) before it changes anything; the same request from the
/// host's own page (its origin) or from a program (no `Origin`) acts.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_another_site_cannot_act_through_an_operators_browser() {
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    let host = site.start_in_process();
    site.drop_in(
        "goods",
        "1.1.0",
        &std::fs::read(component("goods_v2")).unwrap(),
    );
    host.wait_active("goods", "1.1.0").await;
    let rollback = format!("http://{}/admin/services/goods/rollback", host.addr());

    for origin in ["http://evil.example", "null"] {
        let refused = host
            .client()
            .post(&rollback)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{origin}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("another site"),
            "{body}"
        );
        assert_eq!(host.active("goods").await, "1.1.0", "nothing changed");
    }

    let own = host
        .client()
        .post(&rollback)
        .header("origin", format!("http://{}", host.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(host.active("goods").await, "1.0.0");
}

//! Kinds of component beyond handler services, and how clients reach them:
//! handler2 services (lent their request), interface-only services (a
//! library other services import), and any exported function called with
//! JSON over `POST /rpc/...`.

use std::io::{Read, Write};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{Host, Site, component};

/// tax (interface-only) and till (a handler service that imports it).
fn till_and_tax() -> Site {
    let site = Site::new();
    site.install("tax", "1.0.0", &component("tax"));
    site.settings("tax", "[rpc]\npublic = [\"rates\"]\n");
    site.install("till", "1.0.0", &component("till"));
    site
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn an_interface_only_service_is_imported_swapped_and_refuses_http_with_a_reason() {
    let site = till_and_tax();
    let host = site.start_in_process();

    let levy = host.get("/till/1000/eu").await;
    assert_eq!(levy.status, StatusCode::OK, "{levy:?}");
    assert_eq!(levy.body, json!({"net": 1000, "tax": 200, "gross": 1200}));
    let exempt = host.get("/till/1000/exempt").await;
    assert_eq!(exempt.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(exempt.error(), "the region is exempt");

    // HTTP to tax itself: a 404 that says what tax is and how to call it.
    let http = host.get("/tax/rates").await;
    assert_eq!(http.status, StatusCode::NOT_FOUND);
    assert_eq!(http.header("x-switchyard-service"), "tax");
    for part in [
        "no HTTP handler",
        "it publishes (rates.",
        "POST /rpc/tax/<interface>/<function>",
    ] {
        assert!(http.error().contains(part), "{part}: {http:?}");
    }

    // The admin view says what kind it is, and lists what can be called.
    let tax = host.service("tax").await;
    assert_eq!(tax["versions"][0]["kind"], "interfaces");
    assert_eq!(host.service("till").await["versions"][0]["kind"], "handler");
    let apply = tax["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "apply")
        .unwrap_or_else(|| panic!("apply is listed: {tax}"));
    assert_eq!(apply["interface"], "switchyard:tax/rates@1.0.0");
    assert_eq!(apply["rpc"], "/rpc/tax/rates/apply");
    assert_eq!(
        apply["signature"],
        "func(net-cents: u64, region: enum { eu, us, exempt }) -> result<record { \
         net-cents: u64, tax-cents: u64, gross-cents: u64 }, variant { too-large(u64), exempt }>"
    );

    // A new version takes over while till keeps calling; a rollback returns.
    site.drop_in("tax", "1.1.0", &std::fs::read(component("tax")).unwrap());
    host.wait_active("tax", "1.1.0").await;
    let rate = host.post("/rpc/tax/rates/rate", json!(["us"])).await;
    assert_eq!(rate.body, json!(700));
    assert_eq!(rate.header("x-switchyard-version"), "1.1.0");
    assert_eq!(host.get("/till/1000/us").await.body["gross"], 1070);
    let back = host.post("/admin/services/tax/rollback", json!({})).await;
    assert_eq!(back.status, StatusCode::OK, "{back:?}");
    let rate = host.post("/rpc/tax/rates/rate", json!(["eu"])).await;
    assert_eq!(rate.header("x-switchyard-version"), "1.0.0");
    assert_eq!(host.get("/till/500/eu").await.body["gross"], 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn exported_functions_answer_json_over_rpc() {
    let site = Site::shop();
    site.install("tax", "1.0.0", &component("tax"));
    let host = site.start_in_process();
    let pen = host.add_goods("pen", 150, 10).await.str("id");

    // Records and options.
    let got = host
        .post("/rpc/goods/catalog/get", json!({ "id": pen }))
        .await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(
        got.body,
        json!({"id": pen, "name": "pen", "price-cents": 150, "stock": 10})
    );
    assert_eq!(got.header("x-switchyard-service"), "goods");
    let none = host.post("/rpc/goods/catalog/get", json!(["nope"])).await;
    assert_eq!((none.status, none.body), (StatusCode::OK, Value::Null));

    // Results and variants; the call changes what HTTP sees too.
    let reserved = host
        .post("/rpc/goods/catalog/reserve", json!([pen, 3]))
        .await;
    assert_eq!(reserved.body["ok"]["stock"], 7, "{reserved:?}");
    let short = host
        .post("/rpc/goods/catalog/reserve", json!({"id": pen, "qty": 100}))
        .await;
    assert_eq!(short.body, json!({"err": {"insufficient": 7}}));
    assert_eq!(host.get(&format!("/goods/{pen}")).await.body["stock"], 7);

    // Lists, tuples and enums; a variant case without a payload.
    let regions = host.post_raw("/rpc/tax/rates/regions", b"").await;
    assert_eq!(
        regions.body,
        json!([["eu", 2000], ["us", 700], ["exempt", 0]])
    );
    let exempt = host
        .post(
            "/rpc/tax/rates/apply",
            json!({"net-cents": 1000, "region": "exempt"}),
        )
        .await;
    assert_eq!(exempt.body, json!({"err": "exempt"}));

    // The full interface name, percent-encoded, with or without its version.
    for interface in [
        "switchyard%3Ashop%2Fcatalog%401.0.0",
        "switchyard%3Ashop%2Fcatalog",
    ] {
        let path = format!("/rpc/goods/{interface}/get");
        let full = host.post(&path, json!([pen])).await;
        assert_eq!(full.body["name"], "pen", "{path}: {full:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_refuses_what_it_cannot_call_with_a_reason() {
    let site = Site::shop();
    let host = site.start_in_process();
    let pen = host.add_goods("pen", 150, 10).await.str("id");

    let cases: [(&str, &[u8], StatusCode, &[&str]); 10] = [
        (
            "/rpc/goods/catalog/reserve",
            br#"{"id": "x", "qty": "3"}"#,
            StatusCode::BAD_REQUEST,
            &["qty: expected u32, got a string \"3\""],
        ),
        (
            "/rpc/goods/catalog/reserve",
            br#"{"id": "x"}"#,
            StatusCode::BAD_REQUEST,
            &["qty: missing parameter of type u32"],
        ),
        (
            "/rpc/goods/catalog/reserve",
            br#"["x", 1, 2]"#,
            StatusCode::BAD_REQUEST,
            &["expected 2 (id: string, qty: u32), got 3"],
        ),
        (
            "/rpc/goods/catalog/get",
            b"{not json",
            StatusCode::BAD_REQUEST,
            &["not JSON"],
        ),
        (
            "/rpc/goods/stock/get",
            b"[]",
            StatusCode::NOT_FOUND,
            &[
                "no interface named \"stock\"",
                "switchyard:shop/catalog@1.0.0",
            ],
        ),
        (
            "/rpc/goods/catalog/delete",
            b"[]",
            StatusCode::NOT_FOUND,
            &["no function named \"delete\"", "get, list, reserve"],
        ),
        // The platform's entry points are the host's to call, not a client's.
        (
            "/rpc/goods/handler/handle",
            b"[]",
            StatusCode::NOT_FOUND,
            &["no interface named \"handler\""],
        ),
        (
            "/rpc/orders/catalog/get",
            b"[]",
            StatusCode::NOT_FOUND,
            &["service orders 1.0.0 exports no interfaces that can be called"],
        ),
        (
            "/rpc/goods/catalog",
            b"[]",
            StatusCode::NOT_FOUND,
            &["a call is POST /rpc/goods/<interface>/<function>"],
        ),
        (
            "/rpc/nowhere/catalog/get",
            b"[]",
            StatusCode::NOT_FOUND,
            &["no service named \"nowhere\""],
        ),
    ];
    for (path, body, status, parts) in cases {
        let reply = host.post_raw(path, body).await;
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        for part in parts {
            assert!(reply.error().contains(part), "{path}: {part}: {reply:?}");
        }
    }
    let wrong = host
        .post("/rpc/goods/catalog/reserve", json!({"id": pen, "qty": -1}))
        .await;
    assert_eq!(wrong.body["why"], json!({"kind": "arguments", "at": "qty"}));

    let get = host.get("/rpc/goods/catalog/get").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), "POST");

    // Nothing was reserved by the refused calls.
    assert_eq!(host.get(&format!("/goods/{pen}")).await.body["stock"], 10);

    // `rpc` is the host's: no service may take the name.
    let upload = host
        .post_raw(
            "/admin/services/rpc/versions?version=1.0.0",
            &std::fs::read(component("tax")).unwrap(),
        )
        .await;
    assert_eq!(upload.status, StatusCode::BAD_REQUEST);
    assert!(upload.error().contains("reserved"), "{upload:?}");
    let listing = host.get("/admin/services").await.body;
    assert!(
        listing["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "rpc")
    );
}

/// The kind of `version` of `service`, as the admin API tells it.
async fn kind_of(host: &Host, service: &str, version: &str) -> Value {
    let listed = host.service(service).await;
    let versions = listed["versions"].as_array().unwrap();
    versions
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("{version} is listed: {listed}"))["kind"]
        .clone()
}

/// `head` (request line and headers, no blank line) sent as raw bytes; the
/// answer's JSON body.
fn raw_exchange(host: &Host, head: &[u8]) -> Value {
    let mut stream = host.connect(Duration::from_secs(30));
    stream.write_all(head).unwrap();
    stream
        .write_all(b"\r\nhost: test\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let start = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&answer[start..]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_handler2_service_reads_its_lent_request_part_by_part() {
    // A service that serves with `handler` first, then upgrades to a
    // version exporting `handler2`: a service may change kinds.
    let site = Site::new();
    site.install("hello", "1.0.0", &component("faulty"));
    let host = site.start_in_process();
    assert_eq!(kind_of(&host, "hello", "1.0.0").await, "handler");
    site.drop_in(
        "hello",
        "2.0.0",
        &std::fs::read(component("hello2")).unwrap(),
    );
    host.wait_active("hello", "2.0.0").await;
    assert_eq!(kind_of(&host, "hello", "2.0.0").await, "handler2");

    let hello = host.client().get(format!("{}/hello/hello", host.base));
    let hello = hello.send().await.unwrap();
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.headers()["x-switchyard-version"], "2.0.0");
    assert_eq!(hello.text().await.unwrap(), "hello, world\n");

    // Every part, as sent: a header asked for in any case has every value.
    let echo = host
        .client()
        .post(format!("{}/hello/echo/a%20b?header=X-Multi&z=1", host.base))
        .header("x-multi", "one")
        .header("X-Multi", "two")
        .header("x-other", "three")
        .body("the body")
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), StatusCode::OK);
    let echo: Value = echo.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/a%20b");
    assert_eq!(echo["query"], "header=X-Multi&z=1");
    assert_eq!(echo["header"], json!(["one", "two"]));
    assert_eq!(echo["body"], "the body");
    let headers = echo["headers"].as_array().unwrap();
    for sent in [
        json!(["x-multi", "one"]),
        json!(["x-multi", "two"]),
        json!(["x-other", "three"]),
    ] {
        assert!(headers.contains(&sent), "{sent} in {headers:?}");
    }
    // The gateway's request id reaches the guest as a header too.
    assert!(
        headers.iter().any(|h| h[0] == "x-request-id"),
        "{headers:?}"
    );

    // Asking for a header that is absent, or a name no header can have, is
    // an empty answer, not a failure.
    for name in ["x-absent", "bad%20name", ""] {
        let none = host.get(&format!("/hello/echo?header={name}")).await;
        assert_eq!(none.status, StatusCode::OK, "{name}: {none:?}");
        assert_eq!(none.body["header"], json!([]), "{name}");
        assert_eq!(none.body["body"], "", "{name}");
    }
    // A value that is not UTF-8 arrives with its bad byte replaced.
    let latin1 = raw_exchange(
        &host,
        b"GET /hello/echo?header=x-name HTTP/1.1\r\nx-name: caf\xe9",
    );
    assert_eq!(latin1["header"], json!(["caf\u{fffd}"]), "{latin1}");

    // A trap is a 500 for that request alone, and names the panic.
    let panic = host.get("/hello/panic").await;
    assert_eq!(panic.status, StatusCode::INTERNAL_SERVER_ERROR, "{panic:?}");
    assert!(
        panic.error().contains("service hello 2.0.0 failed"),
        "{panic:?}"
    );
    let after = host.get("/hello/echo").await;
    assert_eq!(after.status, StatusCode::OK, "{after:?}");

    // Back to the handler version, which serves at once.
    let back = host.post("/admin/services/hello/rollback", json!({})).await;
    assert_eq!(back.status, StatusCode::OK, "{back:?}");
    let ok = host.get("/hello/ok").await;
    assert_eq!((ok.status, &ok.body), (StatusCode::OK, &json!("ok")));
    assert_eq!(ok.header("x-switchyard-version"), "1.0.0");
}

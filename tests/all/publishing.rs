//! What the public gateway reaches of a service beyond its HTTP handler: the
//! exported functions its `service.toml` publishes (`[rpc] public`), and
//! nothing else unless the caller is an operator (the admin token). A
//! service's interfaces are for the services the operator installed.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Host, Site, component};

const TOKEN: &str = "s3cret";

/// Every function of the shop's catalog that changes stock, with arguments
/// that would change it (`goods` names real goods).
fn stock_changes(goods: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("reserve", json!([goods, 3])),
        ("release", json!([goods, 1000])),
        ("hold", json!(["h1", goods, 3])),
        ("release-hold", json!(["h1", goods])),
        ("settle-hold", json!(["h1", goods])),
        ("restock", json!(["r1", goods, 1000])),
        ("forget-return", json!(["r1", goods])),
    ]
}

async fn stock(host: &Host, goods: &str) -> Value {
    host.get(&format!("/goods/{goods}")).await.body["stock"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_clients_reach_only_what_the_shop_publishes() {
    let site = Site::shop();
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));
    let pen = host.add_goods("pen", 150, 10).await.str("id");
    let ana = host.add_user().await.str("id");

    // Nothing that changes stock answers an anonymous client, or a client
    // with a wrong token, whether the function exists or not: the same 404
    // for `reserve` as for `delete`, which does not exist.
    let unknown = host.post("/rpc/goods/catalog/delete", json!([pen])).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown:?}");
    for (function, arguments) in stock_changes(&pen) {
        let path = format!("/rpc/goods/catalog/{function}");
        let body = Some(arguments.to_string().into_bytes());
        for reply in [
            host.send(Method::POST, &path, body.clone()).await,
            host.send_as("s3cre", Method::POST, &path, body.clone())
                .await,
        ] {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
            assert_eq!(
                reply.error().replace(function, "?"),
                unknown.error().replace("delete", "?"),
                "{path}"
            );
            for part in ["publishes no function", "catalog.get, catalog.list"] {
                assert!(reply.error().contains(part), "{part}: {reply:?}");
            }
        }
        // Under its full name too.
        let full = format!("/rpc/goods/switchyard%3Ashop%2Fcatalog%401.0.0/{function}");
        let reply = host.send(Method::POST, &full, body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{full}: {reply:?}");
    }
    assert_eq!(stock(&host, &pen).await, 10, "a refused call changed stock");
    // orders exports only the platform's recovery entry point.
    let recover = host.post("/rpc/orders/recovery/recover", json!([])).await;
    assert_eq!(recover.status, StatusCode::NOT_FOUND, "{recover:?}");
    assert!(recover.error().contains("publishes nothing"), "{recover:?}");

    // What the shop publishes answers anyone.
    let got = host.post("/rpc/goods/catalog/get", json!([pen])).await;
    assert_eq!(got.body["stock"], 10, "{got:?}");
    let listed = host.post("/rpc/goods/catalog/list", json!([0, 10])).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1), "{listed:?}");
    let user = host.post("/rpc/users/directory/get", json!([ana])).await;
    assert_eq!(user.body["name"], "Ana", "{user:?}");
    let exists = host
        .post("/rpc/users/directory/exists", json!(["nobody"]))
        .await;
    assert_eq!(exists.body, json!(false), "{exists:?}");

    // An operator calls everything.
    let reserve = host
        .send_as(
            TOKEN,
            Method::POST,
            "/rpc/goods/catalog/reserve",
            Some(json!([pen, 3]).to_string().into_bytes()),
        )
        .await;
    assert_eq!(reserve.body["ok"]["stock"], 7, "{reserve:?}");
    assert_eq!(stock(&host, &pen).await, 7);

    // The admin view says, per function, whether it is public.
    let goods = host.service("goods").await;
    let public: Vec<(&str, bool)> = goods["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["function"].as_str().unwrap(), f["public"] == true))
        .collect();
    assert_eq!(
        public,
        [
            ("get", true),
            ("list", true),
            ("reserve", false),
            ("release", false),
            ("hold", false),
            ("release-hold", false),
            ("settle-hold", false),
            ("restock", false),
            ("forget-return", false),
        ]
    );

    // Only operators install a component, so only they decide who imports
    // the catalog: an anonymous upload of one that would is refused.
    let thief = std::fs::read(component("orders")).unwrap();
    let upload = "/admin/services/thief/versions?version=1.0.0";
    let anonymous = host.send(Method::POST, upload, Some(thief.clone())).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");
    assert!(!site.services().join("thief").exists());
    let listed = host.read("/admin/services/thief").await;
    assert_eq!(listed.status, StatusCode::NOT_FOUND, "{listed:?}");
    let installed = host.send_as(TOKEN, Method::POST, upload, Some(thief)).await;
    assert_eq!(installed.status, StatusCode::CREATED, "{installed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_itself_answers_anonymous_clients_only_whether_it_is_up() {
    let site = Site::shop();
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));
    // What serves, its versions, functions, history and numbers are the
    // operators'.
    for path in [
        "/admin/services",
        "/admin/services/goods",
        "/admin/services/nope",
        "/admin/nodes",
        "/metrics",
    ] {
        for reply in [
            host.get(path).await,
            host.send_as("s3cre", Method::GET, path, None).await,
        ] {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}: {reply:?}");
            assert!(reply.error().contains("Bearer <token>"), "{reply:?}");
            assert_eq!(reply.header("www-authenticate"), "Bearer");
        }
        let operator = host
            .client()
            .get(format!("{}{path}", host.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let expected = if path.ends_with("nope") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(operator.status(), expected, "{path}");
    }
    // Load balancers ask whether it is up and ready, without a token.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(host.get(path).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_drops_a_published_function_is_refused() {
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    site.install_settings("goods");
    let host = site.start_in_process();
    // goods_broken lost `list`, which goods' service.toml publishes.
    site.drop_in(
        "goods",
        "1.1.0",
        &std::fs::read(component("goods_broken")).unwrap(),
    );
    let entry = host.wait_state("goods", "1.1.0", "rejected").await;
    let reason = entry["reason"].as_str().unwrap();
    for part in [
        "service.toml",
        "[rpc] public names \"catalog.list\"",
        "has no function named \"list\"",
    ] {
        assert!(reason.contains(part), "{part}: {reason}");
    }
    assert_eq!(host.active("goods").await, "1.0.0");
    let listed = host.post("/rpc/goods/catalog/list", json!([0, 10])).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");

    // A name that matches nothing refuses the service's versions at start.
    site.settings("goods", "[rpc]\npublic = [\"catalog.delete\"]\n");
    drop(host);
    let host = site.start_in_process();
    let entry = host.wait_state("goods", "1.0.0", "rejected").await;
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("[rpc] public names \"catalog.delete\""),
        "{entry}"
    );
}

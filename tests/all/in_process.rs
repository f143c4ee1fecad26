//! The admin API and the gateway's own answers on the router itself: the
//! host's routes built by `App::load` and driven with `oneshot`, with no
//! socket (axum's testing example). The other modules talk to a host over
//! a socket, in this process (`Site::start_in_process`) or as a process of
//! its own where the test is about the process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchyard::App;
use switchyard_gateway::telemetry::Telemetry;
use tower::ServiceExt;

use crate::support::{component, in_process_settings};

/// A host over `dir` with goods 1.0.0 and 1.1.0, loaded in process.
async fn goods_app(dir: &Path) -> App {
    let services = dir.join("services");
    for version in ["1.0.0", "1.1.0"] {
        let file = services.join(format!("goods/{version}.wasm"));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::copy(component("goods"), file).unwrap();
    }
    let settings = in_process_settings(services, dir.join("data"));
    let telemetry = Arc::new(Telemetry::detached().unwrap());
    App::load(&settings, telemetry).await.unwrap()
}

/// One request from a loopback client; the status and the JSON body.
async fn call(app: &App, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_string()))
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_changes_answer_each_mistake_with_its_status_and_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let app = goods_app(dir.path()).await;

    let cases = [
        (
            Method::GET,
            "/admin/services/nope",
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/admin/services/nope/rollback",
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/admin/services/goods/activate",
            "{",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/services/goods/activate",
            r#"{"version":"one"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/services/goods/activate",
            r#"{"version":"9.9.9"}"#,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/admin/services/goods/rollback",
            "",
            StatusCode::CONFLICT,
        ),
        (
            Method::PUT,
            "/admin/services/goods/traffic",
            r#"{"1.0.0":0}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            "/admin/services/goods/traffic",
            r#"{"1.0.0":10001,"1.1.0":1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PATCH,
            "/admin/services/goods",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/admin/services/goods/versions/not-semver",
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            "/admin/services/goods/versions/9.9.9",
            "",
            StatusCode::NOT_FOUND,
        ),
        (Method::GET, "/nope/x", "", StatusCode::NOT_FOUND),
    ];
    for (method, uri, body, status) in cases {
        let (got, reply) = call(&app, method.clone(), uri, body).await;
        assert_eq!(got, status, "{method} {uri} {body}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {uri}: {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn activation_and_splits_show_in_the_service_view() {
    let dir = tempfile::tempdir().unwrap();
    let app = goods_app(dir.path()).await;

    let (status, goods) = call(&app, Method::GET, "/admin/services/goods", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(goods["active_version"], "1.1.0", "the highest at start-up");

    let (status, goods) = call(
        &app,
        Method::POST,
        "/admin/services/goods/activate",
        r#"{"version":"1.0.0"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{goods}");
    assert_eq!(goods["active_version"], "1.0.0");
    assert_eq!(goods["history"][0]["action"], "activated");

    let (status, goods) = call(
        &app,
        Method::PUT,
        "/admin/services/goods/traffic",
        r#"{"1.0.0":3,"1.1.0":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{goods}");
    assert_eq!(goods["traffic"], json!({"1.0.0": 3, "1.1.0": 1}));

    let (status, reply) = call(&app, Method::GET, "/goods/g404", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    let (status, ready) = call(&app, Method::GET, "/readyz", "").await;
    assert_eq!(
        (status, ready["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_on_its_own_lists_itself_as_the_only_node() {
    let dir = tempfile::tempdir().unwrap();
    let app = goods_app(dir.path()).await;
    let (status, body) = call(&app, Method::GET, "/admin/nodes", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes = body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{body}");
    let node = &nodes[0];
    assert_eq!(node["this_node"], true);
    assert_eq!(node["alive"], true);
    assert!(node["id"].as_str().unwrap().ends_with(":0"), "{node}");
    assert_eq!(node["services"]["goods"]["serving"], json!({"1.1.0": 100}));
    assert_eq!(node["services"]["goods"]["loaded_all"], true);
}

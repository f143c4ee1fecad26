//! Per-service durable data, end to end.

use crate::support::{Site, component};
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_service_cannot_read_or_overwrite_another_services_keys() {
    let site = Site::shop();
    site.install("probe", "1.0.0", &component("kv_probe"));
    let host = site.start_in_process();

    let goods = host.add_goods("pen", 150, 10).await;
    let id = goods.str("id");

    // goods keeps its records in its bucket "goods" under the goods id; the probe
    // opens a bucket of the same name and finds nothing there.
    let peek = host.get(&format!("/probe/goods/{id}")).await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND, "{peek:?}");
    let counter = host.get("/probe/counters/g").await;
    assert_eq!(counter.status, StatusCode::NOT_FOUND, "{counter:?}");

    let forged = br#"{"id":"g1","name":"forged","price_cents":0,"stock":0}"#.to_vec();
    let put = host
        .send(
            Method::PUT,
            &format!("/probe/goods/{id}"),
            Some(forged.clone()),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    // The probe reads its own write back: its namespace works, it is just its own.
    let own = host
        .send(Method::GET, &format!("/probe/goods/{id}"), None)
        .await;
    assert_eq!(
        own.body,
        serde_json::from_slice::<serde_json::Value>(&forged).unwrap()
    );
    assert_eq!(host.get(&format!("/goods/{id}")).await.body, goods.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_a_host_restart() {
    let site = Site::shop();
    let host = site.start();
    let user = host.add_user().await;
    let pen = host.add_goods("pen", 150, 10).await;
    let order = host
        .post(
            "/orders",
            json!({"user_id": user.str("id"), "items": [{"goods_id": pen.str("id"), "qty": 4}]}),
        )
        .await;
    assert_eq!(order.status, StatusCode::CREATED);
    let paid = host
        .post(&format!("/orders/{}/pay", order.str("id")), json!({}))
        .await;
    host.kill(); // no graceful shutdown: what was acknowledged must be on disk

    let host = site.start();
    assert_eq!(
        host.get(&format!("/users/{}", user.str("id"))).await.body,
        user.body
    );
    let stock = host.get(&format!("/goods/{}", pen.str("id"))).await;
    assert_eq!(stock.body["stock"], 6);
    assert_eq!(
        host.get(&format!("/orders/{}", order.str("id"))).await.body,
        paid.body
    );

    // Ids keep counting where they stopped: nothing is overwritten.
    let second = host
        .post(
            "/users",
            json!({"name": "Bo", "address": "2 High St", "phone": "555 0101 22"}),
        )
        .await;
    assert_ne!(second.str("id"), user.str("id"));
    assert_eq!(host.get("/users").await.body.as_array().unwrap().len(), 2);
}

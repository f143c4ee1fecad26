//! The shop, end to end: real host, real components, real HTTP.

use crate::support::{Host, Site};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

async fn create_user(host: &Host) -> String {
    host.add_user().await.str("id")
}

async fn create_goods(host: &Host, name: &str, price_cents: u64, stock: u32) -> String {
    host.add_goods(name, price_cents, stock).await.str("id")
}

async fn stock(host: &Host, goods_id: &str) -> u64 {
    host.get(&format!("/goods/{goods_id}")).await.body["stock"]
        .as_u64()
        .unwrap()
}

async fn order(host: &Host, user_id: &str, items: Value) -> crate::support::Reply {
    host.post("/orders", json!({"user_id": user_id, "items": items}))
        .await
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn shop_flow_walks_every_order_transition() {
    let site = Site::shop();
    let host = site.start_in_process();

    let user = host.add_user().await;
    assert_eq!(user.status, StatusCode::CREATED);
    assert_eq!(user.header("x-switchyard-service"), "users");
    assert_eq!(user.header("x-switchyard-version"), "1.0.0");
    assert_eq!(user.body["name"], "Ana");
    let user_id = user.str("id");
    assert_eq!(host.get(&format!("/users/{user_id}")).await.body, user.body);
    assert_eq!(host.get("/users").await.body, json!([user.body]));

    let changed = host
        .patch(
            &format!("/users/{user_id}"),
            json!({"address": "2 High St"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(changed.body["address"], "2 High St");
    assert_eq!(changed.body["name"], "Ana");

    let pen = create_goods(&host, "pen", 150, 10).await;
    let ink = create_goods(&host, "ink", 700, 5).await;
    let goods = host.get(&format!("/goods/{pen}")).await;
    assert_eq!(
        goods.body,
        json!({"id": pen, "name": "pen", "price_cents": 150, "stock": 10})
    );
    assert_eq!(goods.header("x-switchyard-service"), "goods");
    let repriced = host
        .patch(&format!("/goods/{ink}"), json!({"price_cents": 650}))
        .await;
    assert_eq!(repriced.body["price_cents"], 650);
    assert_eq!(repriced.body["stock"], 5);
    let page = host.get("/goods?limit=1&offset=1").await;
    assert_eq!(page.body.as_array().unwrap().len(), 1);
    assert_eq!(page.body[0]["id"], ink.as_str());
    assert_eq!(host.get("/goods").await.body.as_array().unwrap().len(), 2);

    // created → paid → shipped
    let first = order(
        &host,
        &user_id,
        json!([{"goods_id": pen, "qty": 2}, {"goods_id": ink, "qty": 1}]),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.body["status"], "created");
    assert_eq!(first.body["total_cents"], 2 * 150 + 650);
    assert_eq!(first.body["user_id"], user_id.as_str());
    assert_eq!(first.body["items"][0]["goods_id"], pen.as_str());
    assert_eq!(first.body["items"][0]["qty"], 2);
    assert_eq!(stock(&host, &pen).await, 8);
    assert_eq!(stock(&host, &ink).await, 4);
    let first_id = first.str("id");
    assert_eq!(
        host.get(&format!("/orders/{first_id}")).await.body,
        first.body
    );

    let paid = host
        .post(&format!("/orders/{first_id}/pay"), json!({}))
        .await;
    assert_eq!(
        (paid.status, paid.body["status"].clone()),
        (StatusCode::OK, json!("paid"))
    );
    let shipped = host
        .post(&format!("/orders/{first_id}/ship"), json!({}))
        .await;
    assert_eq!(
        (shipped.status, shipped.body["status"].clone()),
        (StatusCode::OK, json!("shipped"))
    );
    for action in ["pay", "ship", "cancel"] {
        let refused = host
            .post(&format!("/orders/{first_id}/{action}"), json!({}))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::CONFLICT,
            "{action} a shipped order: {refused:?}"
        );
        assert!(refused.error().contains("shipped"), "{refused:?}");
    }
    assert_eq!(
        stock(&host, &pen).await,
        8,
        "shipping keeps the stock taken"
    );

    // created → cancelled releases the stock
    let second = order(&host, &user_id, json!([{"goods_id": pen, "qty": 3}])).await;
    let second_id = second.str("id");
    assert_eq!(stock(&host, &pen).await, 5);
    let shipped_early = host
        .post(&format!("/orders/{second_id}/ship"), json!({}))
        .await;
    assert_eq!(
        shipped_early.status,
        StatusCode::CONFLICT,
        "ship before pay"
    );
    let cancelled = host
        .post(&format!("/orders/{second_id}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(stock(&host, &pen).await, 8);
    for action in ["pay", "ship", "cancel"] {
        let refused = host
            .post(&format!("/orders/{second_id}/{action}"), json!({}))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::CONFLICT,
            "{action} a cancelled order"
        );
    }
    assert_eq!(
        stock(&host, &pen).await,
        8,
        "a second cancel releases nothing"
    );

    // created → paid → cancelled releases the stock too
    let third = order(&host, &user_id, json!([{"goods_id": ink, "qty": 4}])).await;
    let third_id = third.str("id");
    assert_eq!(stock(&host, &ink).await, 0);
    host.post(&format!("/orders/{third_id}/pay"), json!({}))
        .await;
    let cancelled = host
        .post(&format!("/orders/{third_id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (cancelled.status, cancelled.body["status"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    assert_eq!(stock(&host, &ink).await, 4);

    let mine = host.get(&format!("/orders?user_id={user_id}")).await;
    let ids: Vec<&str> = mine
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first_id.as_str(), second_id.as_str(), third_id.as_str()]
    );
    assert_eq!(host.get("/orders?user_id=nobody").await.body, json!([]));

    let deleted = host.delete(&format!("/users/{user_id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        host.get(&format!("/users/{user_id}")).await.status,
        StatusCode::NOT_FOUND
    );
    let orphan = order(&host, &user_id, json!([{"goods_id": pen, "qty": 1}])).await;
    assert_eq!(
        orphan.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a deleted user cannot order"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_json_4xx_naming_the_problem() {
    let site = Site::shop();
    let host = site.start_in_process();
    let user = create_user(&host).await;
    let pen = create_goods(&host, "pen", 150, 3).await;
    let ink = create_goods(&host, "ink", 700, 1).await;

    let cases: Vec<(Method, String, Option<String>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/users".into(),
            Some("{not json".into()),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            Method::POST,
            "/users".into(),
            Some("".into()),
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            Method::POST,
            "/users".into(),
            Some(r#"{"name":"Ana","address":"x"}"#.into()),
            StatusCode::BAD_REQUEST,
            "missing field `phone`",
        ),
        (
            Method::POST,
            "/users".into(),
            Some(r#"{"name":"","address":"x","phone":"5550100123"}"#.into()),
            StatusCode::BAD_REQUEST,
            "name must not be empty",
        ),
        (
            Method::POST,
            "/users".into(),
            Some(r#"{"name":"A","address":"  ","phone":"5550100123"}"#.into()),
            StatusCode::BAD_REQUEST,
            "address must not be empty",
        ),
        (
            Method::POST,
            "/users".into(),
            Some(r#"{"name":"A","address":"x","phone":"call me"}"#.into()),
            StatusCode::BAD_REQUEST,
            "phone",
        ),
        (
            Method::POST,
            "/users".into(),
            Some(r#"{"name":7,"address":"x","phone":"5550100123"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            Method::PATCH,
            format!("/users/{user}"),
            Some(r#"{"phone":"12"}"#.into()),
            StatusCode::BAD_REQUEST,
            "phone",
        ),
        (
            Method::PATCH,
            format!("/users/{user}"),
            Some("{}".into()),
            StatusCode::BAD_REQUEST,
            "nothing to change",
        ),
        (
            Method::GET,
            "/users/u999".into(),
            None,
            StatusCode::NOT_FOUND,
            "u999",
        ),
        (
            Method::DELETE,
            "/users/u999".into(),
            None,
            StatusCode::NOT_FOUND,
            "u999",
        ),
        (
            Method::PUT,
            "/users".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "PUT",
        ),
        (
            Method::POST,
            "/goods".into(),
            Some(r#"{"name":"x","price_cents":-1,"stock":1}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid value",
        ),
        (
            Method::POST,
            "/goods".into(),
            Some(r#"{"name":"x","price_cents":"1","stock":1}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            Method::POST,
            "/goods".into(),
            Some(r#"{"name":"x","price_cents":1}"#.into()),
            StatusCode::BAD_REQUEST,
            "missing field `stock`",
        ),
        (
            Method::POST,
            "/goods".into(),
            Some(r#"[1,2]"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            Method::PATCH,
            format!("/goods/{pen}"),
            Some(r#"{"stock":1.5}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            Method::PATCH,
            format!("/goods/{pen}"),
            Some(r#"{"colour":"red"}"#.into()),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            Method::PATCH,
            "/goods/g999".into(),
            Some(r#"{"stock":1}"#.into()),
            StatusCode::NOT_FOUND,
            "g999",
        ),
        (
            Method::GET,
            "/goods?limit=ten".into(),
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/goods/g1/extra".into(),
            None,
            StatusCode::NOT_FOUND,
            "no route",
        ),
        (
            Method::POST,
            "/orders".into(),
            Some(r#"{"user_id":"u1"}"#.into()),
            StatusCode::BAD_REQUEST,
            "missing field `items`",
        ),
        (
            Method::POST,
            "/orders".into(),
            Some(format!(r#"{{"user_id":"{user}","items":[]}}"#)),
            StatusCode::BAD_REQUEST,
            "items must not be empty",
        ),
        (
            Method::POST,
            "/orders".into(),
            Some(format!(
                r#"{{"user_id":"{user}","items":[{{"goods_id":"{pen}","qty":0}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "at least 1",
        ),
        (
            Method::POST,
            "/orders".into(),
            Some(format!(
                r#"{{"user_id":"{user}","items":[{{"goods_id":"{pen}","qty":"2"}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            Method::POST,
            "/orders".into(),
            Some(format!(
                r#"{{"user_id":"nobody","items":[{{"goods_id":"{pen}","qty":1}}]}}"#
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no user",
        ),
        (
            Method::POST,
            "/orders".into(),
            Some(format!(
                r#"{{"user_id":"{user}","items":[{{"goods_id":"g999","qty":1}}]}}"#
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no goods",
        ),
        (
            Method::POST,
            "/orders".into(),
            Some(format!(
                r#"{{"user_id":"{user}","items":[{{"goods_id":"{pen}","qty":4}}]}}"#
            )),
            StatusCode::CONFLICT,
            "not enough stock",
        ),
        (
            Method::GET,
            "/orders/o999".into(),
            None,
            StatusCode::NOT_FOUND,
            "o999",
        ),
        (
            Method::POST,
            "/orders/o999/pay".into(),
            None,
            StatusCode::NOT_FOUND,
            "o999",
        ),
        (
            Method::GET,
            "/orders/o1/pay".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "GET",
        ),
        (
            Method::GET,
            "/nowhere/at/all".into(),
            None,
            StatusCode::NOT_FOUND,
            "no service named \"nowhere\"",
        ),
        (
            Method::GET,
            "/".into(),
            None,
            StatusCode::NOT_FOUND,
            "no service",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let reply = host
            .send(method.clone(), &path, body.clone().map(String::into_bytes))
            .await;
        assert_eq!(reply.status, status, "{method} {path} {body:?}: {reply:?}");
        assert!(
            reply.error().contains(message),
            "{method} {path}: {:?} lacks {message:?}",
            reply.error()
        );
    }

    // All or nothing: the pen reserved before the ink failed is released again.
    for items in [
        json!([{"goods_id": pen, "qty": 2}, {"goods_id": "g999", "qty": 1}]),
        json!([{"goods_id": pen, "qty": 2}, {"goods_id": ink, "qty": 2}]),
    ] {
        let refused = order(&host, &user, items).await;
        assert!(refused.status.is_client_error(), "{refused:?}");
        assert_eq!(stock(&host, &pen).await, 3);
        assert_eq!(stock(&host, &ink).await, 1);
    }

    // Bodies over the limit are refused before any guest sees them.
    let huge = vec![b' '; (1 << 20) + 1];
    let reply = host.post_raw("/goods", &huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.error().contains("limit"));
    assert_eq!(reply.header("x-switchyard-service"), "goods");
    assert_eq!(host.get("/goods").await.body.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_orders_never_oversell() {
    let site = Site::shop();
    let host = std::sync::Arc::new(site.start_in_process());
    let user = create_user(&host).await;
    let pen = create_goods(&host, "pen", 150, 10).await;

    let attempts: Vec<_> = (0..50)
        .map(|_| {
            let (host, user, pen) = (host.clone(), user.clone(), pen.clone());
            tokio::spawn(async move {
                order(&host, &user, json!([{"goods_id": pen, "qty": 1}]))
                    .await
                    .status
            })
        })
        .collect();
    let mut accepted = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            StatusCode::CREATED => accepted += 1,
            StatusCode::CONFLICT => {}
            other => panic!("an order got {other}"),
        }
    }
    assert_eq!(accepted, 10);
    assert_eq!(stock(&host, &pen).await, 0);
    let orders = host.get(&format!("/orders?user_id={user}")).await;
    assert_eq!(orders.body.as_array().unwrap().len(), 10);
}

/// A page of the catalog reads the records on the page, not every record:
/// counted in round trips to PostgreSQL, through a relay.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_goods_costs_its_own_size_not_the_catalogs() {
    let Some(database) = test_pg::fresh("goods page").await else {
        return;
    };
    let proxy = test_pg::Proxy::to(&database.url).await;
    let site = Site::shop();
    let host = site.start_with(&["--store", &proxy.url(&database.url)]);
    const GOODS: usize = 120;
    for i in 0..GOODS {
        create_goods(&host, &format!("item {i}"), 100, 1).await;
    }
    let before = proxy.round_trips();
    let page = host.get("/goods?offset=100&limit=3").await;
    let round_trips = proxy.round_trips() - before;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    let names: Vec<&str> = page
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["item 100", "item 101", "item 102"]);
    // The keys (one page of them), then the three records; the host's own
    // background (a heartbeat, a look for changed records) may add a few.
    assert!(
        round_trips <= 10,
        "{round_trips} round trips for 3 goods of {GOODS}"
    );
}

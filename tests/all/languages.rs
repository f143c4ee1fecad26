//! Services written in Python (`guests/reviews`, built by componentize-py)
//! and JavaScript (`guests/wishlist`, built by componentize-qjs) next to the
//! Rust shop: each imports the catalog as orders does, and keeps its own
//! data in the key-value store.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::{Site, component};

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn python_and_javascript_services_call_the_catalog_and_keep_data() {
    let site = Site::shop();
    site.install("reviews", "1.0.0", &component("reviews"));
    // A second Python service: the toolchain's own exports are no interface
    // two services could clash on.
    site.install("critics", "1.0.0", &component("reviews"));
    site.install("wishlist", "1.0.0", &component("wishlist"));
    // The same JavaScript, built for the component-model async ABI.
    site.install("wishlist-async", "1.0.0", &component("wishlist_async"));
    let host = site.start();
    let pen = host.add_goods("pen", 150, 10).await.str("id");

    // Python.
    let first = host
        .post(
            &format!("/reviews/{pen}"),
            json!({"rating": 5, "text": "writes well"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.header("x-switchyard-service"), "reviews");
    assert_eq!(
        first.body,
        json!({"id": 1, "goods_id": pen, "rating": 5, "text": "writes well"})
    );
    let second = host
        .post(&format!("/reviews/{pen}"), json!({"rating": 2}))
        .await;
    assert_eq!(second.body["id"], 2);
    let listed = host.get(&format!("/reviews/{pen}")).await;
    assert_eq!(listed.body["average"], 3.5);
    assert_eq!(listed.body["reviews"].as_array().unwrap().len(), 2);
    let refusals = [
        (
            "/reviews/nope",
            json!({"rating": 4}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no goods with id 'nope'",
        ),
        (
            &*format!("/reviews/{pen}"),
            json!({"rating": 9}),
            StatusCode::BAD_REQUEST,
            "rating must be",
        ),
        (
            &*format!("/reviews/{pen}"),
            json!({"stars": 4}),
            StatusCode::BAD_REQUEST,
            "unknown field 'stars'",
        ),
    ];
    for (path, body, status, message) in refusals {
        let refused = host.post(path, body).await;
        assert_eq!(refused.status, status, "{refused:?}");
        assert!(refused.error().contains(message), "{refused:?}");
    }
    let garbled = host.post_raw(&format!("/reviews/{pen}"), b"{oops").await;
    assert_eq!(garbled.status, StatusCode::BAD_REQUEST, "{garbled:?}");
    // Its own data: none of reviews'.
    let critics = host.get(&format!("/critics/{pen}")).await;
    assert_eq!(critics.body["reviews"], json!([]), "{critics:?}");

    // JavaScript.
    let wished = host.put(&format!("/wishlist/ana/{pen}"), json!({})).await;
    assert_eq!(wished.status, StatusCode::OK, "{wished:?}");
    assert_eq!(wished.header("x-switchyard-service"), "wishlist");
    let again = host.put(&format!("/wishlist/ana/{pen}"), json!({})).await;
    assert_eq!(again.body, json!({"user": "ana", "goods": [pen]}));
    let unknown = host.put("/wishlist/ana/nope", json!({})).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.error(), "no goods with id \"nope\"");
    let shown = host.get("/wishlist/ana").await;
    assert_eq!(
        shown.body,
        json!({"user": "ana", "goods": [{"id": pen, "name": "pen", "price_cents": 150, "stock": 10}]})
    );
    let removed = host.delete(&format!("/wishlist/ana/{pen}")).await;
    assert_eq!(removed.body, json!({"user": "ana", "goods": []}));
    let wrong = host.post("/wishlist/ana", json!({})).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);

    for name in ["reviews", "wishlist"] {
        assert_eq!(host.service(name).await["versions"][0]["kind"], "handler");
    }
    let refused = host.service("wishlist-async").await;
    let reason = refused["versions"][0]["reason"].as_str().unwrap();
    for part in ["built for the component-model async ABI", "--sync"] {
        assert!(reason.contains(part), "{part}: {reason}");
    }
}

/// A Python exception and a JavaScript one, as newcomers' services throw
/// them: the client gets a 500 with the request id; the traceback, or the
/// exception with its stack, is in the version's `last_error` and in the
/// log line of that request. And `console` works in JavaScript: each call
/// is a log line at its level, with the request's id.
#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn python_and_javascript_errors_reach_the_operators_and_console_logs() {
    let site = Site::new();
    site.install("shelf-py", "1.0.0", &component("failing_py"));
    site.install("shelf-js", "1.0.0", &component("failing_js"));
    for name in ["shelf-py", "shelf-js"] {
        site.settings(name, "[failover]\nenabled = false\n");
    }
    let host = site.start_with(&["--log-format", "json"]);

    let expected = [
        (
            "shelf-py",
            &[
                "Traceback (most recent call last)",
                "shelf_count",
                "AttributeError: 'NoneType' object has no attribute 'count'",
            ][..],
        ),
        ("shelf-js", &["the shelf is empty", "emptyShelf"][..]),
    ];
    for (name, said) in expected {
        let failed = host.get(&format!("/{name}/fail")).await;
        assert_eq!(
            failed.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{failed:?}"
        );
        let id = failed.header("x-request-id");
        assert_eq!(failed.body["request_id"], id, "{failed:?}");
        assert!(failed.error().contains(id), "{failed:?}");
        let last = &host.service(name).await["versions"][0]["last_error"];
        let stderr = last["stderr"].as_str().unwrap_or_default();
        for part in said {
            assert!(stderr.contains(part), "{name}: {part}: {last}");
            assert!(!failed.error().contains(part), "{name}: {failed:?}");
        }
        let log = site.log_mentioning(id);
        let line = log
            .lines()
            .find(|l| l.contains("request failed") && l.contains(id))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .unwrap_or_else(|| panic!("no failed request logged for {id}: {log}"));
        let stderr = line["fields"]["stderr"].as_str().unwrap_or_default();
        assert!(stderr.contains(said[0]), "{name}: {line}");
    }

    let logged = host
        .send_with_id(Method::GET, "/shelf-js/log", "console-1")
        .await;
    assert_eq!(logged.status, StatusCode::OK, "{logged:?}");
    for (text, level) in [
        ("javascript says 42 {\"id\":\"pen\"}", "INFO"),
        ("a warning", "WARN"),
        (
            "Error: an error, logged\n    at handle (/app.js:19:23)",
            "ERROR",
        ),
    ] {
        let needle = text.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let entry = site.log_entry_mentioning(&needle);
        assert_eq!(
            entry["fields"]["message"].as_str().unwrap().trim_end(),
            text
        );
        assert_eq!(entry["level"], level, "{entry}");
        assert_eq!(entry["span"]["id"], "console-1", "{entry}");
        assert_eq!(entry["fields"]["service"], "shelf-js", "{entry}");
    }
    let printed = host.get("/shelf-py/print").await;
    assert_eq!(printed.status, StatusCode::OK, "{printed:?}");
    let entry = site.log_entry_mentioning("python says hello");
    assert_eq!(entry["fields"]["stream"], "stdout", "{entry}");
}

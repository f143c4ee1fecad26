//! The admin API's OpenAPI description (`GET /admin/openapi.json`), against
//! the real host: every route it describes is called here, every answer
//! must be one the description lists for that route and match its schema,
//! and every route is described.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Host, Site, component};

const TOKEN: &str = "described";

/// Calls the admin API and checks each answer against the description.
struct Checker<'a> {
    host: &'a Host,
    description: Value,
    /// (method, described path) of every call made.
    called: BTreeSet<(String, String)>,
}

impl Checker<'_> {
    /// `method path` (`route` its described path) with `body`, as an
    /// operator (or anonymously); its status must be `expected` and its
    /// body match the schema the description gives for that status.
    async fn call(
        &mut self,
        method: Method,
        route: &str,
        path: &str,
        body: Option<Vec<u8>>,
        expected: StatusCode,
    ) -> Value {
        let reply = self.host.send_as(TOKEN, method.clone(), path, body).await;
        self.check(&method, route, &reply.status, &reply.body, expected)
    }

    fn check(
        &mut self,
        method: &Method,
        route: &str,
        status: &StatusCode,
        body: &Value,
        expected: StatusCode,
    ) -> Value {
        assert_eq!(*status, expected, "{method} {route}: {body}");
        let method = method.as_str().to_lowercase();
        self.called.insert((method.clone(), route.to_string()));
        let operation = &self.description["paths"][route][&method];
        assert!(
            operation.is_object(),
            "{method} {route} is not described in /admin/openapi.json"
        );
        let response = &operation["responses"][status.as_str()];
        assert!(
            response.is_object(),
            "{method} {route} answered {status}, which its description does not list: {body}"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {route} {status} has no JSON schema"
        );
        let mut errors = Vec::new();
        conforms(&self.description, schema, body, "", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {route} {status} does not match its schema: {errors:#?}\n{body}"
        );
        body.clone()
    }
}

/// Whether `value` (at `at`) conforms to `schema`, for the part of JSON
/// Schema 2020-12 that utoipa writes: `$ref` into the description's
/// components, `allOf`/`oneOf`/`anyOf`, `type` (one or several), `enum`,
/// `properties`/`required`/`additionalProperties`, `items`, `minimum`. What
/// does not conform is added to `errors`. (A full validator crate would
/// change the features of crates the host shares, and `make build` after
/// `make test` would compile the host again.)
fn conforms(
    description: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    errors: &mut Vec<String>,
) {
    let check = |schema: &Value, errors: &mut Vec<String>| {
        conforms(description, schema, value, at, errors);
    };
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
        let target = &description["components"]["schemas"][name];
        assert!(target.is_object(), "{reference} is not in the description");
        check(target, errors);
    }
    for all in schema["allOf"].as_array().into_iter().flatten() {
        check(all, errors);
    }
    for (keyword, wanted) in [("oneOf", Some(1)), ("anyOf", None)] {
        if let Some(choices) = schema[keyword].as_array() {
            let matching = choices
                .iter()
                .filter(|choice| {
                    let mut mine = Vec::new();
                    conforms(description, choice, value, at, &mut mine);
                    mine.is_empty()
                })
                .count();
            if wanted.map_or(matching == 0, |n| matching != n) {
                errors.push(format!(
                    "{at}: {matching} of the {keyword} choices match {value}"
                ));
            }
        }
    }
    if let Some(kinds) = schema.get("type") {
        let kinds: Vec<&str> = match kinds {
            Value::String(kind) => vec![kind.as_str()],
            Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
            other => panic!("unexpected type {other}"),
        };
        let is = |kind: &str| match kind {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            other => panic!("unexpected type {other}"),
        };
        if !kinds.iter().any(|kind| is(kind)) {
            errors.push(format!("{at}: {value} is not of type {kinds:?}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64())
        && number < minimum
    {
        errors.push(format!("{at}: {number} is below {minimum}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            if !object.contains_key(required) {
                errors.push(format!("{at}: {required} is missing"));
            }
        }
        for (key, item) in object {
            let place = format!("{at}/{key}");
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => conforms(description, property, item, &place, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{place} is not described"))
                }
                (None, Some(extra @ Value::Object(_))) => {
                    conforms(description, extra, item, &place, errors)
                }
                _ => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            conforms(description, items, item, &format!("{at}/{i}"), errors);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_route_is_described_and_answers_as_described() {
    let site = Site::shop();
    let host = site.start_in_process_with(|s| s.admin_token = Some(TOKEN.into()));
    let described = host
        .send_as(TOKEN, Method::GET, "/admin/openapi.json", None)
        .await;
    assert_eq!(described.status, StatusCode::OK);
    let description = described.body;
    assert_eq!(description["openapi"], "3.1.0");
    assert_eq!(
        description["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    let anonymous = host.send(Method::GET, "/admin/openapi.json", None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "operators only");

    let mut api = Checker {
        host: &host,
        description: description.clone(),
        called: BTreeSet::new(),
    };
    api.called
        .insert(("get".into(), "/admin/openapi.json".into()));
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let ok = StatusCode::OK;
    let json = |v: Value| Some(v.to_string().into_bytes());

    let index = api.call(get.clone(), "/admin", "/admin", None, ok).await;
    let listed: BTreeSet<(String, String)> = index["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_lowercase(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    api.call(get.clone(), "/admin/services", "/admin/services", None, ok)
        .await;
    let one = "/admin/services/{name}";
    api.call(get.clone(), one, "/admin/services/goods", None, ok)
        .await;
    api.call(
        get.clone(),
        one,
        "/admin/services/nope",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.call(get.clone(), "/admin/stats", "/admin/stats", None, ok)
        .await;
    api.call(get.clone(), "/admin/nodes", "/admin/nodes", None, ok)
        .await;

    let upload = "/admin/services/{name}/versions";
    let v2 = std::fs::read(component("goods_v2")).unwrap();
    let at = |v: &str| format!("/admin/services/goods/versions?version={v}");
    api.call(
        post.clone(),
        upload,
        &at("1.1.0"),
        Some(v2.clone()),
        StatusCode::CREATED,
    )
    .await;
    api.call(
        post.clone(),
        upload,
        &at("1.1.0"),
        Some(v2),
        StatusCode::CONFLICT,
    )
    .await;
    let refused = api
        .call(
            post.clone(),
            upload,
            &at("1.2.0"),
            Some(b"not wasm".to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert_eq!(refused["why"]["stage"], "compile", "{refused}");
    api.call(
        post.clone(),
        upload,
        "/admin/services/goods/versions",
        Some(Vec::new()),
        StatusCode::BAD_REQUEST,
    )
    .await;

    let traffic = "/admin/services/{name}/traffic";
    api.call(
        put.clone(),
        traffic,
        "/admin/services/goods/traffic",
        json(json!({"1.0.0": 50, "1.1.0": 50})),
        ok,
    )
    .await;
    api.call(
        put.clone(),
        traffic,
        "/admin/services/goods/traffic",
        json(json!({"one": 1})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let activate = "/admin/services/{name}/activate";
    api.call(
        post.clone(),
        activate,
        "/admin/services/goods/activate",
        json(json!({"version": "1.1.0"})),
        ok,
    )
    .await;
    api.call(
        post.clone(),
        activate,
        "/admin/services/goods/activate",
        json(json!({"version": "9.9.9"})),
        StatusCode::NOT_FOUND,
    )
    .await;
    let rollback = "/admin/services/{name}/rollback";
    api.call(
        post.clone(),
        rollback,
        "/admin/services/goods/rollback",
        None,
        ok,
    )
    .await;
    api.call(
        post.clone(),
        rollback,
        "/admin/services/users/rollback",
        None,
        StatusCode::CONFLICT,
    )
    .await;
    let version = "/admin/services/{name}/versions/{version}";
    api.call(
        delete.clone(),
        version,
        "/admin/services/goods/versions/1.1.0",
        None,
        ok,
    )
    .await;
    api.call(
        delete.clone(),
        version,
        "/admin/services/goods/versions/7.0.0",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    api.call(delete.clone(), one, "/admin/services/orders", None, ok)
        .await;
    api.call(
        delete.clone(),
        one,
        "/admin/services/nope",
        None,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Refusals of the operator check are described too.
    let anonymous = host.send(Method::GET, "/admin/services", None).await;
    api.check(
        &get,
        "/admin/services",
        &anonymous.status,
        &anonymous.body,
        StatusCode::UNAUTHORIZED,
    );

    // The dashboard's files are pages, not JSON.
    for (route, path, kind) in [
        ("/admin/ui", "/admin/ui", "text/html"),
        ("/admin/ui/{file}", "/admin/ui/app.js", "text/javascript"),
    ] {
        let url = format!("http://{}{path}", host.addr());
        let page = host.client().get(url).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let content = page.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content.starts_with(kind), "{path}: {content}");
        assert!(description["paths"][route]["get"]["responses"]["200"].is_object());
        api.called.insert(("get".into(), route.to_string()));
    }

    // Every described route was called, and the index lists exactly them.
    let mut described_routes = BTreeSet::new();
    for (path, item) in description["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described_routes.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        api.called, described_routes,
        "a described route is not tested here"
    );
    let mut expected_index = described_routes;
    expected_index.insert(("get".into(), "/metrics".into()));
    assert_eq!(
        listed, expected_index,
        "GET /admin lists every described route"
    );
}

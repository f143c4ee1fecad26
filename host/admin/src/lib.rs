//! The admin API under `/admin`: reading what serves, and changing it
//! (upload, activate, rollback, traffic split).
//!
//! Every call is an operator's (see `switchyard_gateway::operator`: the
//! bearer token, or loopback clients when none is configured); it owns how
//! admin requests are read and refused. It must
//! never change state except through the registry and the loader.

mod stats;
mod ui;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use semver::Version;
use serde::de::DeserializeOwned;
use serde_json::json;

use switchyard_control::cluster::node::{self, Node};
use switchyard_control::loader::{Loader, MAX_COMPONENT_BYTES, valid_service_name};
use switchyard_control::registry::{Cause, Registry, VersionEntry};
use switchyard_gateway::operator::Operators;
use switchyard_gateway::{ApiError, error, read_body_in_time};
use switchyard_store::NodeStore;

/// What the admin API works with.
pub struct Admin {
    pub registry: Arc<Registry>,
    pub loader: Arc<Loader>,
    /// Who may use the admin API.
    pub operators: Operators,
    /// An admin request body still arriving after this gets a 408.
    pub request_timeout: Duration,
    /// This host, as a node of its cluster.
    pub node: Node,
    /// Where the nodes' heartbeats are.
    pub nodes: Arc<dyn NodeStore>,
}

/// The admin routes, every one for operators only: what serves, its
/// versions, functions and history are the host's, not the public's. Serve
/// them with connect info (`ConnectInfo<SocketAddr>`): without a token,
/// operators are loopback clients.
pub fn router(admin: Arc<Admin>) -> Router {
    let changes = Router::new()
        .route("/admin/services/{name}/versions", post(upload_version))
        .route("/admin/services/{name}/activate", post(activate))
        .route("/admin/services/{name}/rollback", post(rollback))
        .route("/admin/services/{name}/traffic", put(set_traffic))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
        .layer(middleware::from_fn_with_state(
            admin.clone(),
            read_admin_body,
        ));
    let operated = Router::new()
        .route("/admin/services", get(list_services))
        .route(
            "/admin/services/{name}",
            get(show_service).delete(remove_service),
        )
        .route(
            "/admin/services/{name}/versions/{version}",
            delete(remove_version),
        )
        .route("/admin/nodes", get(list_nodes))
        .route("/admin/stats", get(show_stats))
        .merge(changes)
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorize));
    // Who may open these is decided by each (see `ui::may_open`).
    let pages = Router::new()
        .route("/admin", get(front))
        .route("/admin/", get(front))
        .route(ui::PAGE, get(page))
        .route("/admin/ui/{*file}", get(page_file));
    operated.merge(pages).with_state(admin)
}

/// What the admin API offers, for an operator who opens `/admin`.
const ROUTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/admin/ui",
        "the dashboard, in a browser (where a browser opening /admin goes)",
    ),
    (
        "GET",
        "/admin/services",
        "every service, its versions, functions and history",
    ),
    ("GET", "/admin/services/{name}", "one service"),
    (
        "POST",
        "/admin/services/{name}/versions?version=X.Y.Z",
        "upload a version (the component as the body)",
    ),
    (
        "POST",
        "/admin/services/{name}/activate",
        "send all traffic to a version: {\"version\": \"X.Y.Z\"}",
    ),
    (
        "POST",
        "/admin/services/{name}/rollback",
        "back to the version that served before",
    ),
    (
        "PUT",
        "/admin/services/{name}/traffic",
        "split traffic: {\"1.0.0\": 90, \"1.1.0\": 10}",
    ),
    (
        "DELETE",
        "/admin/services/{name}/versions/{version}",
        "withdraw a version",
    ),
    ("DELETE", "/admin/services/{name}", "withdraw a service"),
    (
        "GET",
        "/admin/stats",
        "each service's request rate, success rate and latency over the last minute, instances and queue",
    ),
    ("GET", "/admin/nodes", "the hosts sharing this host's store"),
    ("GET", "/metrics", "Prometheus metrics"),
];

/// `/admin`: a browser goes to the dashboard; a program gets the index of
/// the admin API (operators only).
async fn front(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    if ui::wants_page(&request) {
        return match ui::may_open(&admin.operators, &request) {
            Ok(()) => ui::to_page(),
            Err(not) => not.refusal("dashboard pages"),
        };
    }
    match admin.operators.check_request(&request) {
        Ok(()) => index(),
        Err(not) => not.refusal("admin calls"),
    }
}

async fn page(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    match ui::may_open(&admin.operators, &request) {
        Ok(()) => ui::file(""),
        Err(not) => not.refusal("dashboard pages"),
    }
}

async fn page_file(
    State(admin): State<Arc<Admin>>,
    Path(file): Path<String>,
    request: Request,
) -> Response {
    match ui::may_open(&admin.operators, &request) {
        Ok(()) => ui::file(&format!("/{file}")),
        Err(not) => not.refusal("dashboard pages"),
    }
}

fn index() -> Response {
    let routes: Vec<_> = ROUTES
        .iter()
        .map(|(method, path, does)| json!({ "method": method, "path": path, "does": does }))
        .collect();
    axum::Json(json!({ "admin": "switchyard", "routes": routes })).into_response()
}

async fn list_services(State(admin): State<Arc<Admin>>) -> Response {
    let services: Vec<_> = admin
        .registry
        .list()
        .iter()
        .filter_map(|s| views::describe(&admin.registry, &s.name))
        .collect();
    let misplaced: Vec<_> = admin
        .registry
        .misplaced_files()
        .into_iter()
        .map(|(file, reason)| json!({ "file": file, "reason": reason }))
        .collect();
    axum::Json(json!({ "services": services, "misplaced_files": misplaced })).into_response()
}

async fn show_stats(State(admin): State<Arc<Admin>>) -> Response {
    axum::Json(stats::stats(&admin.registry)).into_response()
}

async fn show_service(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    match views::describe(&admin.registry, &name) {
        Some(view) => axum::Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service named {name:?}")),
    }
}

/// Every node of the cluster (just this one on an embedded store), with
/// what each serves.
async fn list_nodes(State(admin): State<Arc<Admin>>) -> Response {
    match node::nodes(&admin.node, &admin.registry, &*admin.nodes).await {
        Ok(nodes) => axum::Json(json!({ "nodes": nodes })).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the nodes' heartbeats: {e}"),
        ),
    }
}

/// Operators only (the admin token, or loopback without one).
async fn authorize(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    match admin.operators.check_request(&request) {
        Ok(()) => next.run(request).await,
        Err(not) => not.refusal("admin calls"),
    }
}

/// Admin changes read their whole body (up to the largest component) within
/// the request timeout, as service requests do: a client that stalls gets a
/// 408, not a task held open forever.
async fn read_admin_body(
    State(admin): State<Arc<Admin>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match read_body_in_time(
        admin.request_timeout,
        body,
        &parts.headers,
        MAX_COMPONENT_BYTES,
    )
    .await
    {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn parse_json<T: DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body ({e}); expected {expected}"),
        )
    })
}

fn parse_version(text: &str) -> Result<Version, ApiError> {
    Version::parse(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not a semver version (like 1.2.0): {e}"),
        )
    })
}

/// The service after a change, as `GET /admin/services/{name}` shows it, once
/// the versions now serving have an instance ready.
async fn changed(admin: &Admin, name: &str) -> Result<Response, ApiError> {
    admin.loader.warm_serving().await;
    let view = views::describe(&admin.registry, name);
    let view = view.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, format!("no service named {name:?}"))
    })?;
    Ok(axum::Json(view).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    version: String,
}

async fn activate(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: Activate = parse_json(&body, r#"{"version": "X.Y.Z"}"#)?;
    let version = parse_version(&request.version)?;
    admin
        .registry
        .activate(&name, &version, Cause::Admin)
        .await?;
    changed(&admin, &name).await
}

async fn rollback(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin.registry.rollback(&name).await?;
    changed(&admin, &name).await
}

async fn set_traffic(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let weights: BTreeMap<String, u32> =
        parse_json(&body, r#"{"X.Y.Z": weight, ...} with whole-number weights"#)?;
    let mut split = BTreeMap::new();
    for (version, weight) in weights {
        split.insert(parse_version(&version)?, weight);
    }
    admin.registry.set_traffic(&name, split).await?;
    changed(&admin, &name).await
}

/// Upload a component as a new version: validated like a dropped file, then
/// stored as `services/<name>/<version>.wasm`.
async fn upload_version(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    valid_service_name(&name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let version = query.get("version").ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "give the version: ?version=X.Y.Z")
    })?;
    let version = parse_version(version)?;
    if admin.registry.has_version(&name, &version) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{name} {version} exists already; upload under a new version"),
        ));
    }
    let loaded = admin
        .loader
        .load_bytes(&name, &version, body.to_vec())
        .await
        .map_err(|refusal| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, refusal.to_string()).because(&refusal)
        })?;
    // Written hidden first, moved into place only once accepted: the watcher
    // never sees a partial file, and sees the final one as already loaded.
    let dir = admin.loader.service_dir(&name);
    let staged = dir.join(format!(".{version}.wasm.upload"));
    let writing = {
        let (dir, staged, body) = (dir.clone(), staged.clone(), body.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)
                .and_then(|()| switchyard_control::files::write_new(&staged, &body))
        })
    };
    if let Err(e) = writing.await.map_err(std::io::Error::other).and_then(|w| w) {
        tracing::error!(file = %staged.display(), "cannot store an upload: {e}");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot store the component",
        ));
    }
    let mode = admin.loader.activation(&name);
    let offered = admin
        .registry
        .offer(&name, mode, version.clone(), VersionEntry::Loaded(loaded))
        .await;
    let state = match offered {
        Ok(state) => state,
        Err(reason) => {
            let _ = std::fs::remove_file(&staged);
            return Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, reason.to_string())
                    .because(&reason),
            );
        }
    };
    if let Err(e) = std::fs::rename(&staged, dir.join(format!("{version}.wasm"))) {
        tracing::error!(file = %staged.display(), "cannot move an upload into place: {e}");
    }
    admin.loader.warm_serving().await;
    let created = json!({ "service": name, "version": version.to_string(), "state": state });
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// Remove one version: its file is deleted from the services folder and the
/// version withdrawn, as if an operator had deleted the file (traffic falls
/// back as it would then). The service's data stays.
async fn remove_version(
    State(admin): State<Arc<Admin>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let version = parse_version(&version)?;
    if !admin.registry.has_version(&name, &version) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("service {name:?} has no version {version}"),
        ));
    }
    let file = admin
        .loader
        .service_dir(&name)
        .join(format!("{version}.wasm"));
    delete_path(&file).await?;
    admin.loader.file_removed(&name, &version).await;
    changed(&admin, &name).await
}

/// Remove a whole service: its folder (versions and `service.toml`) is
/// deleted and every version withdrawn. Its data in the store stays, for a
/// service of the same name to find again.
async fn remove_service(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    valid_service_name(&name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e:#}")))?;
    let versions = admin.registry.versions_of(&name);
    if versions.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no service named {name:?}"),
        ));
    }
    delete_path(&admin.loader.service_dir(&name)).await?;
    for version in &versions {
        admin.loader.file_removed(&name, version).await;
    }
    changed(&admin, &name).await
}

/// Delete the file or folder at `path` (gone already is fine), off the
/// async workers.
async fn delete_path(path: &std::path::Path) -> Result<(), ApiError> {
    let target = path.to_path_buf();
    let deleted = tokio::task::spawn_blocking(move || {
        let outcome = if target.is_dir() {
            std::fs::remove_dir_all(&target)
        } else {
            std::fs::remove_file(&target)
        };
        match outcome {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|d| d);
    deleted.map_err(|e| {
        tracing::error!(path = %path.display(), "cannot delete: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot delete {}: {e}", path.display()),
        )
    })
}

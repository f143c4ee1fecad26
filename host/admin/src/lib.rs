//! The admin API under `/admin`: reading what serves, and changing it
//! (upload, activate, rollback, traffic split).
//!
//! Every call is an operator's (see `switchyard_gateway::operator`: the
//! bearer token, or loopback clients when none is configured); it owns how
//! admin requests are read and refused. It must
//! never change state except through the registry and the loader.

mod api;
mod stats;
mod ui;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use semver::Version;
use serde::de::DeserializeOwned;
use serde_json::json;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use api::ErrorBody;
use views::ServiceView;

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
/// operators are loopback clients. Each route is described in the OpenAPI
/// document (`GET /admin/openapi.json`) by the same list that routes it.
pub fn router(admin: Arc<Admin>) -> Router {
    let changes = OpenApiRouter::new()
        .routes(routes!(upload_version))
        .routes(routes!(activate))
        .routes(routes!(rollback))
        .routes(routes!(set_traffic))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
        .layer(middleware::from_fn_with_state(
            admin.clone(),
            read_admin_body,
        ));
    let mut operated = OpenApiRouter::new()
        .routes(routes!(list_services))
        .routes(routes!(show_service, remove_service))
        .routes(routes!(remove_version))
        .routes(routes!(list_nodes))
        .routes(routes!(show_stats))
        .routes(routes!(openapi_json))
        .merge(changes)
        .route_layer(middleware::from_fn_with_state(admin.clone(), authorize));
    // Where the operator check is layered, its refusals are described.
    api::refused_to_non_operators(operated.get_openapi_mut());
    // Who may open these is decided by each (see `ui::may_open`).
    let pages = OpenApiRouter::new()
        .routes(routes!(front))
        .routes(routes!(page))
        .routes(routes!(page_file));
    let (router, openapi) = OpenApiRouter::with_openapi(api::ApiDoc::openapi())
        .merge(operated)
        .merge(pages)
        .split_for_parts();
    let described = Arc::new(Described {
        json: openapi.to_json().expect("the OpenAPI document serialises"),
        index: api::index(&openapi),
    });
    router
        // The index's other spelling, not described twice.
        .route("/admin/", get(front))
        .layer(Extension(described))
        .with_state(admin)
}

/// The OpenAPI document, and the index made from it, built once.
struct Described {
    json: String,
    index: api::Index,
}

/// The admin API's description, OpenAPI 3.1.
#[utoipa::path(get, path = "/admin/openapi.json", tag = "admin",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json(Extension(described): Extension<Arc<Described>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        described.json.clone(),
    )
        .into_response()
}

/// Every admin route, with what it does; a browser is sent to the dashboard.
///
/// A request accepting `text/html` is redirected to `/admin/ui` (303); any
/// other gets this index, for operators only.
#[utoipa::path(get, path = "/admin", tag = "admin",
    responses(
        (status = 200, description = "the index", body = api::Index),
        (status = 303, description = "a browser: to the dashboard"),
        (status = 401, description = "no or a wrong admin token", body = ErrorBody),
        (status = 403, description = "not loopback, on a host without a token; or a page of another site", body = ErrorBody),
    ))]
async fn front(
    State(admin): State<Arc<Admin>>,
    Extension(described): Extension<Arc<Described>>,
    request: Request,
) -> Response {
    if ui::wants_page(&request) {
        return match ui::may_open(&admin.operators, &request) {
            Ok(()) => ui::to_page(),
            Err(not) => not.refusal("dashboard pages"),
        };
    }
    match admin.operators.check_request(&request) {
        Ok(()) => axum::Json(&described.index).into_response(),
        Err(not) => not.refusal("admin calls"),
    }
}

/// The dashboard, in a browser.
///
/// A page without data: it reads the admin API with the operator's token.
/// Served to loopback clients on a host without a token, and to anyone on a
/// host with one (the page then asks for the token).
#[utoipa::path(get, path = "/admin/ui", tag = "dashboard", security(()),
    responses(
        (status = 200, description = "the page", content_type = "text/html", body = String),
        (status = 403, description = "not loopback, on a host without a token; or a page of another site", body = ErrorBody),
    ))]
async fn page(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    match ui::may_open(&admin.operators, &request) {
        Ok(()) => ui::file(""),
        Err(not) => not.refusal("dashboard pages"),
    }
}

/// The dashboard's script and stylesheet (`app.js`, `style.css`).
#[utoipa::path(get, path = "/admin/ui/{file}", tag = "dashboard", security(()),
    params(("file" = String, Path, description = "app.js or style.css")),
    responses(
        (status = 200, description = "the file", content_type = "text/javascript", body = String),
        (status = 403, description = "not loopback, on a host without a token; or a page of another site", body = ErrorBody),
        (status = 404, description = "no such file", body = ErrorBody),
    ))]
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

/// Every service, its versions, functions and history.
#[utoipa::path(get, path = "/admin/services", tag = "services",
    responses(
        (status = 200, description = "every service, and the misplaced component files", body = api::ServiceList),
    ))]
async fn list_services(State(admin): State<Arc<Admin>>) -> Response {
    let services: Vec<_> = admin
        .registry
        .list()
        .iter()
        .filter_map(|s| views::describe(&admin.registry, &s.name))
        .collect();
    let misplaced_files = admin
        .registry
        .misplaced_files()
        .into_iter()
        .map(|(file, reason)| api::MisplacedFile { file, reason })
        .collect();
    axum::Json(api::ServiceList {
        services,
        misplaced_files,
    })
    .into_response()
}

/// Each service's request rate, success rate and latency over the last minute, instances and queue.
#[utoipa::path(get, path = "/admin/stats", tag = "services",
    responses(
        (status = 200, description = "per service and per version", body = stats::Stats),
    ))]
async fn show_stats(State(admin): State<Arc<Admin>>) -> Response {
    axum::Json(stats::stats(&admin.registry)).into_response()
}

/// One service.
#[utoipa::path(get, path = "/admin/services/{name}", tag = "services", params(("name" = String, Path, description = "the service")),
    responses(
        (status = 200, description = "the service", body = ServiceView),
        (status = 404, description = "no such service", body = ErrorBody),
    ))]
async fn show_service(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    match views::describe(&admin.registry, &name) {
        Some(view) => axum::Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no service named {name:?}")),
    }
}

/// The hosts sharing this host's store.
///
/// Every node of the cluster (just this one on an embedded store), with
/// what each serves.
#[utoipa::path(get, path = "/admin/nodes", tag = "cluster",
    responses(
        (status = 200, description = "every host heard from, this one included", body = api::NodeList),
        (status = 503, description = "the heartbeats cannot be read", body = ErrorBody),
    ))]
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

/// Send all traffic to a version.
#[utoipa::path(post, path = "/admin/services/{name}/activate", tag = "changes", params(("name" = String, Path, description = "the service")),
    request_body = api::Activate,
    responses(
        (status = 200, description = "the service after the change", body = ServiceView),
        (status = 400, description = "not JSON of that shape, or not a version", body = ErrorBody),
        (status = 404, description = "no such service or version", body = ErrorBody),
        (status = 409, description = "the version is rejected, or another host changed the service first", body = ErrorBody),
        (status = 422, description = "it would break a service that imports this one", body = ErrorBody),
    ))]
async fn activate(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: api::Activate = parse_json(&body, r#"{"version": "X.Y.Z"}"#)?;
    let version = parse_version(&request.version)?;
    admin
        .registry
        .activate(&name, &version, Cause::Admin)
        .await?;
    changed(&admin, &name).await
}

/// Back to the version that served before.
#[utoipa::path(post, path = "/admin/services/{name}/rollback", tag = "changes", params(("name" = String, Path, description = "the service")),
    responses(
        (status = 200, description = "the service after the change", body = ServiceView),
        (status = 404, description = "no such service", body = ErrorBody),
        (status = 409, description = "no earlier version to go back to", body = ErrorBody),
        (status = 422, description = "it would break a service that imports this one", body = ErrorBody),
    ))]
async fn rollback(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin.registry.rollback(&name).await?;
    changed(&admin, &name).await
}

/// Split traffic across versions by weight.
///
/// The body maps versions to whole-number weights (each 0 to 10000, at least
/// one above 0), e.g. `{"1.0.0": 90, "1.1.0": 10}`.
#[utoipa::path(put, path = "/admin/services/{name}/traffic", tag = "changes", params(("name" = String, Path, description = "the service")),
    request_body = BTreeMap<String, u32>,
    responses(
        (status = 200, description = "the service after the change", body = ServiceView),
        (status = 400, description = "not such a JSON object, or a key not a version", body = ErrorBody),
        (status = 404, description = "no such service or version", body = ErrorBody),
        (status = 422, description = "an invalid split, or one that would break an importer", body = ErrorBody),
    ))]
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

/// Upload a version (the component as the body).
///
/// Validated like a dropped file, then stored as
/// `services/<name>/<version>.wasm`.
#[utoipa::path(post, path = "/admin/services/{name}/versions", tag = "changes",
    params(("name" = String, Path, description = "the service"), ("version" = String, Query, description = "its version, X.Y.Z")),
    request_body(content = api::ComponentFile, content_type = "application/wasm"),
    responses(
        (status = 201, description = "accepted: its state", body = api::Uploaded),
        (status = 400, description = "a bad service name or version", body = ErrorBody),
        (status = 408, description = "the body did not arrive in time", body = ErrorBody),
        (status = 409, description = "that version exists already", body = ErrorBody),
        (status = 413, description = "larger than a component may be", body = ErrorBody),
        (status = 422, description = "refused: `why` says at which step", body = ErrorBody),
    ))]
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
    let created = api::Uploaded {
        service: name,
        version: version.to_string(),
        state,
    };
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// Withdraw a version.
///
/// Its file is deleted from the services folder and the version withdrawn,
/// as if an operator had deleted the file (traffic falls back as it would
/// then). The service's data stays.
#[utoipa::path(delete, path = "/admin/services/{name}/versions/{version}", tag = "changes",
    params(("name" = String, Path, description = "the service"), ("version" = String, Path, description = "X.Y.Z")),
    responses(
        (status = 200, description = "the service after the change", body = ServiceView),
        (status = 400, description = "not a version", body = ErrorBody),
        (status = 404, description = "no such version", body = ErrorBody),
    ))]
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

/// Withdraw a whole service.
///
/// Its folder (versions and `service.toml`) is deleted and every version
/// withdrawn. Its data in the store stays, for a service of the same name
/// to find again.
#[utoipa::path(delete, path = "/admin/services/{name}", tag = "changes", params(("name" = String, Path, description = "the service")),
    responses(
        (status = 200, description = "the service, now removed", body = ServiceView),
        (status = 400, description = "not a valid service name", body = ErrorBody),
        (status = 404, description = "no such service", body = ErrorBody),
    ))]
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

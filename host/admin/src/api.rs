//! The admin API's OpenAPI 3.1 description, `GET /admin/openapi.json`:
//! generated from the handlers' `#[utoipa::path]` attributes and the types
//! they answer with (`utoipa-axum` builds the router and the description
//! from the same list, so a route cannot be served and left undescribed).
//!
//! It owns the document's frame (title, security) and the bodies that exist
//! only on the wire (lists, errors); it must never describe a route the
//! router does not serve.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use switchyard_control::cluster::node::NodeView;

use crate::views::ServiceView;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard admin API",
        description = "What a Switchyard host serves, and changing it: versions, activation, \
                       rollback, traffic splits. Every call is an operator's: with \
                       `Authorization: Bearer <token>` when the host has an admin token, \
                       else from loopback clients only (401 or 403 otherwise).",
    ),
    modifiers(&AdminToken),
    security(("admin_token" = [])),
)]
pub struct ApiDoc;

/// The bearer token (`--admin-token`).
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The host's --admin-token. A host without one takes admin calls from \
                 loopback clients only, without a token.",
            ))
            .build();
        components.add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// Add the operator check's refusals (401, 403) to every operation of
/// `openapi`: the routes behind that check, described where it is layered
/// rather than on each handler.
pub fn refused_to_non_operators(openapi: &mut utoipa::openapi::OpenApi) {
    let refusal = |description: &str| {
        let body = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build(),
        )
    };
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            responses.insert("401".into(), refusal("no or a wrong admin token"));
            responses.insert(
                "403".into(),
                refusal("not loopback, on a host without a token; or a page of another site"),
            );
        }
    }
}

/// A refusal: what is wrong, in a sentence; `why` carries the reason as
/// data where there is one (which step refused a component, which
/// interface a change would break).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<serde_json::Value>,
}

/// `GET /admin/services`.
#[derive(Serialize, ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceView>,
    /// Component files where no service can be made of them, and where they
    /// belong.
    pub misplaced_files: Vec<MisplacedFile>,
}

#[derive(Serialize, ToSchema)]
pub struct MisplacedFile {
    pub file: String,
    pub reason: String,
}

/// `GET /admin/nodes`.
#[derive(Serialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// `GET /admin`: every admin route, from this description.
#[derive(Serialize, ToSchema)]
pub struct Index {
    /// Always `"switchyard"`.
    pub admin: String,
    pub routes: Vec<RouteEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct RouteEntry {
    pub method: String,
    pub path: String,
    pub does: String,
}

/// An upload accepted.
#[derive(Serialize, ToSchema)]
pub struct Uploaded {
    pub service: String,
    pub version: String,
    pub state: switchyard_control::registry::VersionState,
}

/// `POST /admin/services/{name}/activate`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// The version to send all traffic to, as `X.Y.Z`.
    pub version: String,
}

/// A component, as the bytes of its `.wasm` file.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[expect(dead_code, reason = "described for the upload's body, never built")]
pub struct ComponentFile(Vec<u8>);

/// The index of the admin API: each operation of `openapi`, with its
/// summary; and `/metrics`, which the gateway serves to operators.
pub fn index(openapi: &utoipa::openapi::OpenApi) -> Index {
    let mut routes = Vec::new();
    for (path, item) in openapi.paths.paths.iter() {
        let operations = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                routes.push(RouteEntry {
                    method: method.to_string(),
                    path: path.clone(),
                    does: operation.summary.clone().unwrap_or_default(),
                });
            }
        }
    }
    routes.push(RouteEntry {
        method: "GET".into(),
        path: "/metrics".into(),
        does: "Prometheus metrics".into(),
    });
    Index {
        admin: "switchyard".into(),
        routes,
    }
}

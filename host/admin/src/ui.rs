//! The dashboard, `/admin/ui`: one page with its stylesheet and script,
//! embedded in the binary (no build step, nothing fetched from elsewhere).
//! The page draws the admin API (`/admin/stats`, `/admin/services`,
//! `/admin/nodes`) every two seconds and makes its calls for the buttons.
//!
//! It owns serving those three files and who gets them. The page must
//! never carry data of the host: everything it shows it reads through the
//! admin API, with the operator's token, so that a page served to someone
//! without the token shows them nothing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use switchyard_gateway::operator::{NotOperator, Operators};

/// Where the dashboard is.
pub const PAGE: &str = "/admin/ui";

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The page may load its own script, stylesheet and admin calls, nothing
/// else, and may not be framed (its buttons change what serves).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; base-uri 'none'; \
                      frame-ancestors 'none'";

/// Who gets the page: the operators, as for the admin API; and, on a host
/// with an admin token, anyone who can reach it, because a browser cannot
/// send the token when it opens a page: the page then asks for the token,
/// and shows nothing until the host accepts it. On a host without a token,
/// the page is for loopback clients only, as the admin API is.
pub fn may_open(
    operators: &Operators,
    request: &axum::extract::Request,
) -> Result<(), NotOperator> {
    match operators.check_request(request) {
        Ok(()) | Err(NotOperator::NoToken) => Ok(()),
        Err(not @ (NotOperator::NotLoopback | NotOperator::CrossSite)) => Err(not),
    }
}

/// One of the dashboard's files, `file` being the path under [`PAGE`] (""
/// for the page itself).
pub fn file(file: &str) -> Response {
    let (body, kind) = match file {
        "" | "/" => (INDEX, "text/html; charset=utf-8"),
        "/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return switchyard_gateway::error(
                StatusCode::NOT_FOUND,
                format!("the dashboard has no file {file:?}; it is at {PAGE}"),
            );
        }
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new host binary may bring a new page: ask again every time.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Whether a request comes from a browser opening a page (it accepts HTML).
pub fn wants_page(request: &axum::extract::Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A browser opening `/admin` goes to the dashboard.
pub fn to_page() -> Response {
    Redirect::to(PAGE).into_response()
}

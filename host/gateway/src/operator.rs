//! Who is an operator: whoever presents the admin token (`Authorization:
//! Bearer <token>`), or, on a host configured without a token, a client on
//! loopback. Operators change what serves (the admin API) and may call any
//! exported function over `/rpc`; everyone else reaches only what services
//! publish.
//!
//! A request a browser sends for a page of another site (its `Origin` is
//! not this host) is never an operator's, token or not: without this, any
//! web page an operator opens could make their browser call a token-less
//! host on loopback (a cross-site POST needs no permission to be sent).
//!
//! It decides and words refusals; it must never let a request through when
//! a token is configured and the request does not carry it.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{self as http, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::http::error;

/// The host's rule for operators.
#[derive(Debug, Clone, Default)]
pub struct Operators {
    token: Option<String>,
}

/// Why a request is not an operator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotOperator {
    /// A token is configured and the request lacks it (or has another).
    NoToken,
    /// No token is configured and the client is not on loopback.
    NotLoopback,
    /// A browser sent it for a page of another site.
    CrossSite,
}

impl Operators {
    /// `token`: the admin token; none (or empty) leaves operators to loopback.
    pub fn new(token: Option<String>) -> Operators {
        Operators {
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// Whether `request` is an operator's: its headers, and the client
    /// address the server put in its extensions (`ConnectInfo`).
    pub fn check_request<B>(&self, request: &http::Request<B>) -> Result<(), NotOperator> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        self.check(request.headers(), peer)
    }

    /// Whether the request with `headers`, from `peer` (unknown when the
    /// request came without a socket), is an operator's.
    pub fn check(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), NotOperator> {
        if from_another_site(headers) {
            return Err(NotOperator::CrossSite);
        }
        let Some(token) = &self.token else {
            return match peer {
                Some(peer) if peer.ip().is_loopback() => Ok(()),
                _ => Err(NotOperator::NotLoopback),
            };
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match given {
            Some(given) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
            _ => Err(NotOperator::NoToken),
        }
    }
}

impl NotOperator {
    /// The answer to a request that needs an operator, naming `what` it asked
    /// for (`"admin changes"`).
    pub fn refusal(self, what: &str) -> Response {
        match self {
            NotOperator::CrossSite => error(
                StatusCode::FORBIDDEN,
                format!(
                    "{what} from a page of another site are refused (its Origin is not this host)"
                ),
            ),
            NotOperator::NotLoopback => error(
                StatusCode::FORBIDDEN,
                format!("no admin token is configured, so {what} are accepted from loopback only"),
            ),
            NotOperator::NoToken => {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    format!("{what} need a valid Authorization: Bearer <token> header"),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }
    }
}

/// Whether a browser sent the request for a page of another site: it has an
/// `Origin` (browsers send one with every cross-origin request, and with
/// same-origin ones that change something) that does not name the `Host`
/// it was sent to. Programs (curl, the CLI) send no `Origin`.
fn from_another_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (authority, host) {
        (Some(authority), Some(host)) => !authority.eq_ignore_ascii_case(host),
        // `Origin: null` (a sandboxed or local page), or no Host to compare.
        _ => true,
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    const LOOPBACK: Option<SocketAddr> = Some(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        40000,
    ));
    const REMOTE: Option<SocketAddr> = Some(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)),
        40000,
    ));

    #[test]
    fn with_a_token_only_its_holder_is_an_operator_wherever_they_are() {
        let operators = Operators::new(Some("s3cret".into()));
        for peer in [LOOPBACK, REMOTE, None] {
            for good in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
                assert_eq!(operators.check(&headers(Some(good)), peer), Ok(()));
            }
            for bad in [
                None,
                Some("Bearer s3cre"),
                Some("Basic s3cret"),
                Some("s3cret"),
            ] {
                assert_eq!(
                    operators.check(&headers(bad), peer),
                    Err(NotOperator::NoToken),
                    "{bad:?} from {peer:?}"
                );
            }
        }
    }

    #[test]
    fn a_browser_page_of_another_site_is_never_an_operator() {
        let with = |origin: Option<&str>, host: &str, token: Option<&str>| {
            let mut headers = headers(token);
            headers.insert(header::HOST, host.parse().unwrap());
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, origin.parse().unwrap());
            }
            headers
        };
        let loopback = Operators::new(None);
        let tokened = Operators::new(Some("s3cret".into()));
        for (origin, ok) in [
            (None, true),
            (Some("http://127.0.0.1:8080"), true),
            (Some("http://evil.example"), false),
            (Some("http://127.0.0.1:9999"), false),
            (Some("null"), false),
        ] {
            let expected = if ok {
                Ok(())
            } else {
                Err(NotOperator::CrossSite)
            };
            let plain = with(origin, "127.0.0.1:8080", None);
            assert_eq!(loopback.check(&plain, LOOPBACK), expected, "{origin:?}");
            let bearing = with(origin, "127.0.0.1:8080", Some("Bearer s3cret"));
            assert_eq!(tokened.check(&bearing, REMOTE), expected, "{origin:?}");
        }
    }

    #[test]
    fn without_a_token_loopback_clients_are_operators() {
        for operators in [Operators::new(None), Operators::new(Some(String::new()))] {
            assert_eq!(operators.check(&headers(None), LOOPBACK), Ok(()));
            for peer in [REMOTE, None] {
                assert_eq!(
                    operators.check(&headers(Some("Bearer x")), peer),
                    Err(NotOperator::NotLoopback)
                );
            }
        }
    }
}

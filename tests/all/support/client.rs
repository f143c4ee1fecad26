//! The HTTP client the tests and benchmarks talk to the host with: hyper's
//! pooled client (keep-alive connections), behind the few calls they use.
//!
//! It is built on hyper and hyper-util, which the host depends on with the same
//! features, so the tests add no second build of the host's dependencies.

use std::fmt;

use axum::body::Bytes;
use axum::http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use axum::http::{self, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// A keep-alive HTTP/1.1 client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            pool: Pool::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    pub fn request(&self, method: Method, url: impl AsRef<str>) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            request: http::Request::builder().method(method).uri(url.as_ref()),
            body: Vec::new(),
        }
    }

    pub fn get(&self, url: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::POST, url)
    }
}

/// A request being put together.
pub struct RequestBuilder {
    client: Client,
    request: http::request::Builder,
    body: Vec<u8>,
}

impl RequestBuilder {
    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        let name = HeaderName::try_from(name).expect("a valid header name");
        let value = HeaderValue::try_from(value.as_ref()).expect("a valid header value");
        self.request = self.request.header(name, value);
        self
    }

    pub fn bearer_auth(self, token: &str) -> Self {
        self.header(AUTHORIZATION.as_str(), format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Send it and read the whole answer.
    pub async fn send(self) -> Result<Response, Error> {
        let request = self
            .request
            .body(Full::new(Bytes::from(self.body)))
            .map_err(|e| Error(e.to_string()))?;
        let response = self
            .client
            .pool
            .request(request)
            .await
            .map_err(|e| Error(format!("{e:?}")))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Error(e.to_string()))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A whole answer.
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub async fn bytes(self) -> Result<Bytes, Error> {
        Ok(self.body)
    }

    pub async fn text(self) -> Result<String, Error> {
        String::from_utf8(self.body.to_vec()).map_err(|e| Error(e.to_string()))
    }

    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error(e.to_string()))
    }
}

/// Why a request got no answer (connection refused or dropped, say).
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

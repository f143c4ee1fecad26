//! Outgoing HTTP from guests (`wasi:http/outgoing-handler`): denied unless
//! the service's `service.toml` allows the host (`[outbound] allowed_hosts`).
//!
//! It owns the rule of where a request may go and nothing else: sending is
//! wasmtime-wasi-http's, the list comes from the service's settings.

use std::future::Future;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The hosts one service may send HTTP requests to, each `host:port`, or
/// `host` for the scheme's default port (80, or 443 for https); `*` allows
/// any. Empty (the default): none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Arc<[Allowed]>);

/// One entry of the list, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// `*`.
    Any,
    /// A host (lower-case), on a port or the scheme's default one.
    Host { host: String, port: Option<u16> },
}

/// An `allowed_hosts` entry that is neither a host, a `host:port` nor `*`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allowed_hosts entry {0:?} is not a host or host:port \
     (like \"api.example.com\" or \"127.0.0.1:9000\", or \"*\" for any)"
)]
pub struct NotAHost(pub String);

impl AllowedHosts {
    /// The list from a service's settings, each entry checked.
    pub fn parse(entries: &[String]) -> Result<AllowedHosts, NotAHost> {
        let parse = |entry: &String| {
            if entry == "*" {
                return Some(Allowed::Any);
            }
            if entry.contains("://") || entry.contains(['/', '?', '#', '@', ' ']) {
                return None;
            }
            let authority = entry.parse::<http::uri::Authority>().ok()?;
            Some(Allowed::Host {
                host: authority.host().to_lowercase(),
                port: authority.port_u16(),
            })
        };
        entries
            .iter()
            .map(|entry| parse(entry).ok_or_else(|| NotAHost(entry.clone())))
            .collect::<Result<_, _>>()
            .map(AllowedHosts)
    }

    /// Whether a request to `authority` over `https` (or not) may go.
    pub fn allows(&self, authority: &http::uri::Authority, https: bool) -> bool {
        let default_port = if https { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host().to_lowercase();
        self.0.iter().any(|entry| match entry {
            Allowed::Any => true,
            Allowed::Host {
                host: allowed,
                port: allowed_port,
            } => *allowed == host && allowed_port.unwrap_or(default_port) == port,
        })
    }
}

/// The hooks wasmtime-wasi-http calls for one instance's outgoing requests.
pub struct Outbound {
    pub service: String,
    pub allowed: AllowedHosts,
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let allowed = uri
            .authority()
            .is_some_and(|authority| self.allowed.allows(authority, https));
        if !allowed {
            tracing::warn!(
                service = %self.service,
                "denied an outgoing request to {uri}: the host is not in [outbound] \
                 allowed_hosts of services/{}/service.toml",
                self.service
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{AllowedHosts, NotAHost};

    fn allows(entries: &[&str], authority: &str, https: bool) -> bool {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        AllowedHosts::parse(&entries)
            .unwrap()
            .allows(&authority.parse().unwrap(), https)
    }

    #[test]
    fn only_listed_hosts_and_ports_are_allowed() {
        assert!(allows(&["127.0.0.1:9000"], "127.0.0.1:9000", false));
        assert!(!allows(&["127.0.0.1:9000"], "127.0.0.1:9001", false));
        assert!(!allows(&["127.0.0.1:9000"], "127.0.0.2:9000", false));
        assert!(!allows(&[], "127.0.0.1:9000", false));
        // No port: the scheme's default.
        assert!(allows(&["api.example.com"], "API.example.com", true));
        assert!(allows(&["api.example.com"], "api.example.com:443", true));
        assert!(!allows(&["api.example.com"], "api.example.com:8443", true));
        assert!(allows(&["api.example.com:80"], "api.example.com", false));
        assert!(allows(&["*"], "anywhere:1", false));
    }

    #[test]
    fn entries_that_are_not_hosts_are_refused() {
        for bad in [
            "",
            "http://a.example",
            "a.example/path",
            "user@a.example",
            "a b",
        ] {
            let error = AllowedHosts::parse(&[bad.to_string()]).unwrap_err();
            assert_eq!(error, NotAHost(bad.to_string()));
            assert!(
                error.to_string().contains("is not a host"),
                "{bad}: {error}"
            );
        }
    }
}

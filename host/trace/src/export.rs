//! Sending spans to a collector: where ([`Endpoint`]), and how: in batches,
//! from a thread of the SDK, over HTTP with hyper's client run on a runtime
//! of that thread's own ([`OffRuntime`]), never on the host's.
//!
//! The standard `OTEL_*` variables still apply where the flag says nothing:
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or
//! `http/json`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `_ARG`, and the
//! batching's `OTEL_BSP_*`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use http::uri::{PathAndQuery, Scheme, Uri};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    ExporterBuildError, Protocol, SpanExporter, WithExportConfig, WithHttpConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::Tracer;

/// How long one batch may take to reach the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The path an OTLP/HTTP collector takes traces at, under its base URL.
const TRACES_PATH: &str = "/v1/traces";

/// Where spans go: an OTLP/HTTP collector, given by its base URL
/// (`http://collector:4318`, to which `/v1/traces` is added) or by the full
/// URL of its traces (ending in `/v1/traces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    traces: Uri,
}

/// Why a text is no endpoint to export to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    /// Not a URL.
    Unparsable { text: String, why: String },
    /// Not `http://`: spans are sent over plain HTTP (a collector next to
    /// the host forwards them over TLS).
    NotHttp { text: String },
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::Unparsable { text, why } => {
                write!(
                    f,
                    "{text:?} is not a URL ({why}); expected http://HOST:PORT"
                )
            }
            EndpointError::NotHttp { text } => write!(
                f,
                "{text:?} is not an http:// URL: spans are sent over plain HTTP \
                 (to reach a collector over TLS, run one next to the host)"
            ),
        }
    }
}

impl std::error::Error for EndpointError {}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        let unparsable = |why: String| EndpointError::Unparsable {
            text: text.to_owned(),
            why,
        };
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| unparsable(e.to_string()))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(EndpointError::NotHttp {
                text: text.to_owned(),
            });
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(unparsable("it names no host".to_owned()));
        }
        if uri.query().is_some() {
            return Err(unparsable("a collector's URL has no query".to_owned()));
        }
        let path = uri.path().trim_end_matches('/').to_owned();
        if path.ends_with(TRACES_PATH) {
            return Ok(Endpoint { traces: uri });
        }
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(
            PathAndQuery::try_from(format!("{path}{TRACES_PATH}"))
                .map_err(|e| unparsable(e.to_string()))?,
        );
        let traces = Uri::from_parts(parts).map_err(|e| unparsable(e.to_string()))?;
        Ok(Endpoint { traces })
    }

    /// The URL spans are posted to.
    pub fn traces_url(&self) -> &Uri {
        &self.traces
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.traces.fmt(f)
    }
}

/// Exports the spans of a host's [`Tracer`] until shut down.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Start exporting to `endpoint`, as the host `node` (the spans'
    /// `service.instance.id`).
    pub fn start(endpoint: &Endpoint, node: &str) -> Result<Exporter, ExporterBuildError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ExporterBuildError::InternalFailure(e.to_string()))?;
        let client = OffRuntime {
            client: HyperClient::with_default_connector(EXPORT_TIMEOUT, None),
            runtime,
        };
        let mut exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint.traces.to_string())
            .with_timeout(EXPORT_TIMEOUT);
        // OTLP's default, protobuf, unless the operator says (the crate
        // would pick JSON, as it is built with both).
        let chosen = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ];
        if chosen.iter().all(|name| std::env::var_os(name).is_none()) {
            exporter = exporter.with_protocol(Protocol::HttpBinary);
        }
        let exporter = exporter.build()?;
        // Named `switchyard` unless the operator names it (OTEL_SERVICE_NAME,
        // read by the default resource).
        let mut resource = Resource::builder().with_attributes([
            KeyValue::new("service.instance.id", node.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ]);
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("switchyard");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Exporter { provider })
    }

    /// The tracer whose spans this exports.
    pub fn tracer(&self) -> Tracer {
        let scope = InstrumentationScope::builder("switchyard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Tracer {
            tracer: opentelemetry::trace::TracerProvider::tracer_with_scope(&self.provider, scope),
        }
    }

    /// Export what is queued, waiting at most `timeout`, and stop. Blocks
    /// (call it off the host runtime's workers).
    pub fn shutdown(&self, timeout: Duration) -> Result<(), String> {
        self.provider
            .shutdown_with_timeout(timeout)
            .map_err(|e| e.to_string())
    }
}

/// Hyper's client, on a runtime of its own. The SDK exports from a thread
/// of its own, with no runtime, blocking on each export (there is nothing
/// else for that thread to do); hyper's client needs a runtime, and the
/// host's must not carry the exports: its tasks would wait behind requests,
/// and a busy host's queue of spans would overflow.
#[derive(Debug)]
struct OffRuntime {
    client: HyperClient,
    /// Only the SDK's exporting thread enters it, one export at a time.
    runtime: tokio::runtime::Runtime,
}

#[async_trait]
impl HttpClient for OffRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        self.runtime.block_on(self.client.send_bytes(request))
    }
}

#[cfg(test)]
mod tests {
    use super::{Endpoint, EndpointError};

    #[test]
    fn an_endpoint_is_a_collectors_base_url_or_its_traces_url() {
        let traces = |text: &str| Endpoint::parse(text).unwrap().traces_url().to_string();
        assert_eq!(
            traces("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(traces("http://c:4318/otlp"), "http://c:4318/otlp/v1/traces");
        assert_eq!(traces("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
        assert_eq!(
            traces("http://127.0.0.1:9/v1/traces/"),
            "http://127.0.0.1:9/v1/traces/"
        );
    }

    #[test]
    fn an_endpoint_must_be_plain_http_with_a_host() {
        assert!(matches!(
            Endpoint::parse("https://collector:4318"),
            Err(EndpointError::NotHttp { .. })
        ));
        for text in [
            "collector:4318",
            "",
            "http://",
            "http://c:4318/?x=1",
            "not a url",
        ] {
            let refused = Endpoint::parse(text).unwrap_err();
            assert!(!refused.to_string().is_empty(), "{text:?}");
        }
    }
}

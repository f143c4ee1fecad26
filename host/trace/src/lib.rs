//! Traces of the requests a host serves, exported over OTLP/HTTP to an
//! OpenTelemetry collector (`--otlp-endpoint`).
//!
//! One trace per request: the gateway's span ([`Tracer::request`]), a child
//! for each service-to-service call ([`Trace::service_call`]) and for each
//! call to the key-value store ([`Trace::store_call`]), each with the
//! service and version it concerns. A client's W3C `traceparent` makes the
//! request's span a child of the client's, and the guest is handed a
//! `traceparent` naming the request's span ([`Span::pass_on`]).
//!
//! The context travels explicitly, as a [`Trace`] handed from the gateway to
//! the instance's call and from a call to the calls it makes: never through
//! thread-local state, which a guest's fiber, suspended in the middle of a
//! call, would leave set for whatever the thread runs next.
//!
//! Owns the tracer, the spans' names and attributes, and the exporter. Must
//! never block or fail a request: spans are queued for a thread of the SDK
//! that exports them in batches; when the collector is slow or down and
//! the queue is full, new spans are dropped (and the SDK logs it), not the
//! request.
//! Without an endpoint there is no [`Tracer`], and every span below is an
//! `Option` that is `None`.

mod export;

use std::borrow::Cow;
use std::fmt::Display;

use http::{HeaderMap, Method, StatusCode};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

pub use export::{Endpoint, EndpointError, Exporter};

/// The attribute naming the service a span concerns.
pub const SERVICE: &str = "switchyard.service";
/// The attribute naming its version.
pub const VERSION: &str = "switchyard.version";

/// The longest `url.path` a span carries: a client's path may be as long as
/// the server takes, and every span would carry it to the collector.
pub const MAX_PATH_BYTES: usize = 1024;

/// The first `max` bytes of `text` at most, cut on a character boundary.
fn within(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Makes the spans of a host's requests. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    tracer: SdkTracer,
}

impl Tracer {
    /// A request arrived with `headers`: its span, the root of its trace, or
    /// a child of the client's span if it sent a valid `traceparent`.
    /// `request_id` is the id its log lines carry.
    pub fn request(
        &self,
        headers: &HeaderMap,
        method: &Method,
        path: &str,
        request_id: &str,
    ) -> Span {
        let client = TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &HeaderExtractor(headers));
        let root = Trace {
            tracer: self.tracer.clone(),
            context: client,
        };
        root.child(
            method.as_str().to_owned(),
            SpanKind::Server,
            vec![
                KeyValue::new("http.request.method", method.as_str().to_owned()),
                KeyValue::new("url.path", within(path, MAX_PATH_BYTES).to_owned()),
                KeyValue::new("switchyard.request_id", request_id.to_owned()),
            ],
        )
    }
}

/// The trace a call belongs to: the span its own spans are children of.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Trace {
    tracer: SdkTracer,
    context: Context,
}

impl Trace {
    /// A call from one service to `function` of `interface`, answered by
    /// `version` of `service`.
    pub fn service_call(
        &self,
        interface: &str,
        function: &str,
        service: &str,
        version: &str,
    ) -> Span {
        self.child(
            format!("{interface}/{function}"),
            SpanKind::Client,
            vec![
                KeyValue::new("rpc.system", "switchyard"),
                KeyValue::new("rpc.service", interface.to_owned()),
                KeyValue::new("rpc.method", function.to_owned()),
                KeyValue::new(SERVICE, service.to_owned()),
                KeyValue::new(VERSION, version.to_owned()),
            ],
        )
    }

    /// A call of `version` of `service` to the key-value store: `operation`
    /// (`get`, `set`, ...) in `bucket`. Keys and values are the service's
    /// data and stay out of the trace.
    pub fn store_call(
        &self,
        operation: &'static str,
        service: &str,
        version: &str,
        bucket: &str,
    ) -> Span {
        self.child(
            format!("keyvalue {operation}"),
            SpanKind::Client,
            vec![
                KeyValue::new("db.system.name", "switchyard.keyvalue"),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.namespace", bucket.to_owned()),
                KeyValue::new(SERVICE, service.to_owned()),
                KeyValue::new(VERSION, version.to_owned()),
            ],
        )
    }

    fn child(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> Span {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.context);
        Span {
            trace: Trace {
                tracer: self.tracer.clone(),
                context: self.context.with_span(span),
            },
        }
    }
}

/// Who answered a request.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    /// The route it took: `/<service>`, or `/rpc/<service>`.
    pub route: &'a str,
    pub service: &'a str,
    pub version: &'a str,
}

/// Mark `span`, if the call is traced, as failed for `why`.
pub fn failed(span: Option<&Span>, why: &dyn Display) {
    if let Some(span) = span {
        span.failed(why);
    }
}

/// A span being timed. It ends when dropped: at the end of what it times, or
/// when that is abandoned (a request timed out, a client gone).
#[derive(Debug)]
pub struct Span {
    trace: Trace,
}

impl Span {
    /// The trace the calls made within this span belong to, as their parent.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Put this span's W3C `traceparent` (and the client's `tracestate`) in
    /// `headers`, in place of the client's: what the guest reads, to carry
    /// the trace on.
    pub fn pass_on(&self, headers: &mut HeaderMap) {
        TraceContextPropagator::new()
            .inject_context(&self.trace.context, &mut HeaderInjector(headers));
    }

    /// The request, a `method` request, was answered `status`, by whoever
    /// `served` it if a version was picked.
    pub fn answered(&self, method: &Method, status: StatusCode, served: Option<Served<'_>>) {
        let span = self.trace.context.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if let Some(served) = served {
            span.set_attribute(KeyValue::new(SERVICE, served.service.to_owned()));
            span.set_attribute(KeyValue::new(VERSION, served.version.to_owned()));
            span.set_attribute(KeyValue::new("http.route", served.route.to_owned()));
            // Low cardinality, as span names must be: the route, not the path.
            span.update_name(format!("{method} {}", served.route));
        }
        if status.is_server_error() {
            span.set_status(Status::error(status.to_string()));
        }
    }

    /// What it timed failed, for the reason `why`.
    pub fn failed(&self, why: &dyn Display) {
        self.trace
            .context
            .span()
            .set_status(Status::error(why.to_string()));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.trace.context.span().end();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{HeaderMap, HeaderValue, Method, StatusCode};
    use opentelemetry::trace::{
        SpanId, SpanKind, Status, TraceContextExt as _, TraceId, TracerProvider as _,
    };
    use opentelemetry::{Key, Value};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    use super::{Served, Tracer};

    /// Keeps every span ended, as the collector would get it.
    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn tracer() -> (Tracer, Kept) {
        let kept = Kept::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .build();
        let tracer = Tracer {
            tracer: provider.tracer("test"),
        };
        (tracer, kept)
    }

    impl Kept {
        fn named(&self, name: &str) -> SpanData {
            let spans = self.0.lock().unwrap();
            let found = spans.iter().find(|s| s.name == name);
            found
                .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
                .clone()
        }
    }

    fn attribute(span: &SpanData, key: &str) -> Option<Value> {
        let key = Key::from(key.to_owned());
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn a_long_path_is_cut_on_a_character_boundary() {
        let (tracer, kept) = tracer();
        let path = format!("/{}é", "a".repeat(super::MAX_PATH_BYTES - 2));
        drop(tracer.request(&HeaderMap::new(), &Method::GET, &path, "id"));
        let cut = attribute(&kept.named("GET"), "url.path")
            .unwrap()
            .to_string();
        assert_eq!(cut.len(), super::MAX_PATH_BYTES - 1);
        assert!(path.starts_with(&cut));
        let short = "/goods/g1";
        assert_eq!(super::within(short, super::MAX_PATH_BYTES), short);
    }

    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CLIENT_SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn a_clients_traceparent_is_the_requests_parent_and_the_guest_gets_the_requests() {
        let (tracer, kept) = tracer();
        let mut headers = HeaderMap::new();
        let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
        headers.insert("traceparent", HeaderValue::from_str(&traceparent).unwrap());
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        let span = tracer.request(&headers, &Method::GET, "/goods/g1", "id-1");
        span.pass_on(&mut headers);
        let own_id = span.trace().context.span().span_context().span_id();
        let served = Served {
            route: "/goods",
            service: "goods",
            version: "1.0.0",
        };
        span.answered(&Method::GET, StatusCode::OK, Some(served));
        drop(span);

        let request = kept.named("GET /goods");
        assert_eq!(
            request.span_context.trace_id(),
            TraceId::from_hex(CLIENT_TRACE).unwrap()
        );
        assert_eq!(
            request.parent_span_id,
            SpanId::from_hex(CLIENT_SPAN).unwrap()
        );
        assert_eq!(request.span_kind, SpanKind::Server);
        assert_eq!(
            attribute(&request, "switchyard.service"),
            Some("goods".into())
        );
        assert_eq!(
            attribute(&request, "switchyard.version"),
            Some("1.0.0".into())
        );
        assert_eq!(
            attribute(&request, "switchyard.request_id"),
            Some("id-1".into())
        );
        assert_eq!(
            attribute(&request, "http.response.status_code"),
            Some(200.into())
        );
        assert_eq!(request.status, Status::Unset);
        // What the guest reads: the same trace, the request's span as parent.
        assert_eq!(
            headers["traceparent"],
            format!("00-{CLIENT_TRACE}-{own_id}-01")
        );
        assert_eq!(headers["tracestate"], "vendor=1");
    }

    #[test]
    fn without_a_valid_traceparent_a_request_starts_a_trace_of_its_own() {
        let (tracer, kept) = tracer();
        for sent in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let mut headers = HeaderMap::new();
            if let Some(sent) = sent {
                headers.insert("traceparent", HeaderValue::from_static(sent));
            }
            let span = tracer.request(&headers, &Method::POST, "/orders", "id");
            span.pass_on(&mut headers);
            let own = span.trace().context.span().span_context().clone();
            span.answered(&Method::POST, StatusCode::SERVICE_UNAVAILABLE, None);
            drop(span);
            assert!(own.is_valid() && own.is_sampled(), "{sent:?}");
            assert_ne!(own.trace_id(), TraceId::from_hex(CLIENT_TRACE).unwrap());
            let passed = headers["traceparent"].to_str().unwrap().to_owned();
            assert_eq!(
                passed,
                format!("00-{}-{}-01", own.trace_id(), own.span_id()),
                "{sent:?}"
            );
        }
        let spans = kept.0.lock().unwrap();
        assert_eq!(spans.len(), 3);
        for span in spans.iter() {
            // No service was picked: named by the method alone, and failed.
            assert_eq!(span.name, "POST");
            assert_eq!(span.parent_span_id, SpanId::INVALID);
            assert!(matches!(span.status, Status::Error { .. }));
        }
    }

    #[test]
    fn service_and_store_calls_are_children_of_the_call_they_are_made_in() {
        let (tracer, kept) = tracer();
        let request = tracer.request(&HeaderMap::new(), &Method::POST, "/orders", "id");
        let call = request
            .trace()
            .service_call("shop:goods/catalog", "reserve", "goods", "1.2.0");
        let store = call
            .trace()
            .store_call("compare-and-swap", "goods", "1.2.0", "stock");
        store.failed(&"the database is gone");
        drop(store);
        drop(call);
        let served = Served {
            route: "/rpc/orders",
            service: "orders",
            version: "1.0.0",
        };
        request.answered(&Method::POST, StatusCode::CREATED, Some(served));
        drop(request);

        let (request, call, store) = (
            kept.named("POST /rpc/orders"),
            kept.named("shop:goods/catalog/reserve"),
            kept.named("keyvalue compare-and-swap"),
        );
        let trace = request.span_context.trace_id();
        assert_eq!(call.span_context.trace_id(), trace);
        assert_eq!(store.span_context.trace_id(), trace);
        assert_eq!(call.parent_span_id, request.span_context.span_id());
        assert_eq!(store.parent_span_id, call.span_context.span_id());
        assert_eq!(attribute(&call, "switchyard.service"), Some("goods".into()));
        assert_eq!(attribute(&call, "switchyard.version"), Some("1.2.0".into()));
        assert_eq!(attribute(&call, "rpc.method"), Some("reserve".into()));
        assert_eq!(attribute(&store, "db.namespace"), Some("stock".into()));
        assert_eq!(
            attribute(&store, "db.operation.name"),
            Some("compare-and-swap".into())
        );
        assert_eq!(store.status, Status::error("the database is gone"));
        assert!(request.start_time <= call.start_time && call.end_time <= request.end_time);
    }
}

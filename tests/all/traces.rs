//! Traces: a host started with `--otlp-endpoint` exports each request's spans
//! over OTLP/HTTP (protobuf, the default) to a collector, here a small
//! receiver in the test that decodes what it is sent.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use serde_json::json;

use crate::support::{Site, component, eventually};

/// A span as the collector got it, with its resource's attributes.
#[derive(Debug, Clone)]
struct Received {
    span: opentelemetry_proto::tonic::trace::v1::Span,
    resource: Vec<KeyValue>,
    /// The content type it came in.
    format: String,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }

    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        Any {
            value: Some(AnyValue::StringValue(text)),
        } => Some(text.clone()),
        Any {
            value: Some(AnyValue::IntValue(n)),
        } => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP collector: takes `POST /v1/traces`, protobuf or JSON, and
/// keeps every span.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = spans.clone();
        let receive = move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let format = headers["content-type"].to_str().unwrap().to_owned();
                let export = match format.as_str() {
                    "application/x-protobuf" => ExportTraceServiceRequest::decode(body).ok(),
                    "application/json" => serde_json::from_slice(&body).ok(),
                    _ => None,
                };
                let Some(export) = export else {
                    return StatusCode::BAD_REQUEST;
                };
                let mut kept = kept.lock().unwrap();
                for resource_spans in export.resource_spans {
                    let resource = resource_spans.resource.unwrap_or_default().attributes;
                    for scope in resource_spans.scope_spans {
                        kept.extend(scope.spans.into_iter().map(|span| Received {
                            span,
                            resource: resource.clone(),
                            format: format.clone(),
                        }));
                    }
                }
                StatusCode::OK
            }
        };
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans }
    }

    /// The spans of trace `trace_id` once `complete` says they are all
    /// there (or, after waiting for that in vain, those there are: the
    /// assertions say what is missing).
    async fn trace(&self, trace_id: &str, complete: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let spans = || -> Vec<Received> {
            let spans = self.spans.lock().unwrap();
            let of_trace = spans.iter().filter(|s| s.trace_id() == trace_id);
            of_trace.cloned().collect()
        };
        let complete = eventually(async || Some(spans()).filter(|s| complete(s)));
        complete.await.unwrap_or_else(spans)
    }
}

/// `site` served with traces exported to `collector` as `protocol` says
/// (`OTEL_EXPORTER_OTLP_PROTOCOL`; none: the default), in batches sent
/// every 50 ms (the SDK's `OTEL_BSP_SCHEDULE_DELAY`; 5 s by default).
fn traced_host(site: &Site, collector: &Collector, protocol: Option<&str>) -> crate::support::Host {
    let mut command = site.serve_command(&["--otlp-endpoint", &collector.url]);
    command.env("OTEL_BSP_SCHEDULE_DELAY", "50");
    if let Some(protocol) = protocol {
        command.env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol);
    }
    site.start_command(command)
}

fn server_span(spans: &[Received]) -> Option<&Received> {
    spans.iter().find(|s| s.kind() == SpanKind::Server)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orders_trace_spans_the_gateway_each_service_call_and_each_store_call() {
    let collector = Collector::start().await;
    let site = Site::shop();
    let host = traced_host(&site, &collector, None);
    let user_id = host.add_user().await.str("id");
    let goods_id = host.add_goods("mug", 300, 5).await.str("id");

    // A client that traces sends its context: the request joins its trace.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let order = json!({"user_id": user_id, "items": [{"goods_id": goods_id, "qty": 2}]});
    let placed = host
        .client()
        .post(format!("{}/orders", host.base))
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .body(order.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);

    let is_store = |s: &Received| s.attribute("db.operation.name").is_some();
    let spans = collector
        .trace(client_trace, |spans| {
            server_span(spans).is_some()
                && spans.iter().any(|s| {
                    is_store(s) && s.attribute("switchyard.service").as_deref() == Some("orders")
                })
        })
        .await;
    let names: Vec<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();

    // The gateway's span: a child of the client's, named by route, with who answered.
    let request = server_span(&spans).unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(request.span.name, "POST /orders");
    assert_eq!(request.parent_id(), client_span);
    assert_eq!(
        request.attribute("switchyard.service").as_deref(),
        Some("orders")
    );
    assert_eq!(
        request.attribute("switchyard.version").as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        text_of(&request.resource, "service.name").as_deref(),
        Some("switchyard")
    );
    // OTLP's default encoding.
    assert_eq!(request.format, "application/x-protobuf");

    // Orders called users and goods: a span each, children of the request,
    // naming the service and version that answered.
    let calls_to = |service: &str| -> Vec<&Received> {
        spans
            .iter()
            .filter(|s| s.kind() == SpanKind::Client && !is_store(s))
            .filter(|s| s.attribute("switchyard.service").as_deref() == Some(service))
            .collect()
    };
    for service in ["users", "goods"] {
        let calls = calls_to(service);
        assert!(!calls.is_empty(), "no call to {service} in {names:?}");
        for call in calls {
            assert_eq!(call.parent_id(), request.span_id(), "{call:?}");
            assert_eq!(
                call.attribute("switchyard.version").as_deref(),
                Some("1.0.0")
            );
            assert_eq!(call.attribute("rpc.system").as_deref(), Some("switchyard"));
        }
    }

    // Store calls: goods' are children of a call to goods, orders' of the request.
    let goods_calls: Vec<String> = calls_to("goods").iter().map(|c| c.span_id()).collect();
    let store_calls_of = |service: &str| -> Vec<&Received> {
        spans
            .iter()
            .filter(|s| {
                is_store(s) && s.attribute("switchyard.service").as_deref() == Some(service)
            })
            .collect()
    };
    let goods_store = store_calls_of("goods");
    assert!(
        !goods_store.is_empty(),
        "goods reached no store in {names:?}"
    );
    for store in goods_store {
        assert!(goods_calls.contains(&store.parent_id()), "{store:?}");
        assert_eq!(
            store.attribute("switchyard.version").as_deref(),
            Some("1.0.0")
        );
    }
    let orders_store = store_calls_of("orders");
    assert!(
        !orders_store.is_empty(),
        "orders reached no store in {names:?}"
    );
    for store in orders_store {
        assert_eq!(store.parent_id(), request.span_id(), "{store:?}");
    }
    // Every span of the request is in this one trace, and nothing failed.
    for span in &spans {
        let status = span.span.status.clone().unwrap_or_default();
        assert_ne!(status.code, SpanStatus::Error as i32, "{span:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_gets_the_requests_traceparent_and_a_failure_is_marked() {
    let collector = Collector::start().await;
    let site = Site::new();
    site.install("hello", "1.0.0", &component("hello2"));
    // The operator may ask for JSON instead of protobuf.
    let host = traced_host(&site, &collector, Some("http/json"));

    let echo = |traceparent: Option<&'static str>| {
        let mut request = host
            .client()
            .get(format!("{}/hello/echo?header=traceparent", host.base));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        async move {
            let reply = request.send().await.unwrap();
            assert_eq!(reply.status(), StatusCode::OK);
            let body: serde_json::Value = reply.json().await.unwrap();
            let values = body["header"].as_array().cloned().unwrap_or_default();
            assert_eq!(values.len(), 1, "one traceparent for the guest: {body}");
            values[0].as_str().unwrap().to_owned()
        }
    };
    // With the client's context, and with none or a broken one (a trace of
    // the request's own): the guest reads `00-<trace>-<request's span>-01`.
    let sent = [
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        None,
        Some("00-not-a-trace-context"),
    ];
    for traceparent in sent {
        let seen = echo(traceparent).await;
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "{seen}");
        let (trace_id, span_id) = (parts[1], parts[2]);
        if traceparent == sent[0] {
            assert_eq!(trace_id, "0af7651916cd43dd8448eb211c80319c");
        }
        let spans = collector
            .trace(trace_id, |spans| server_span(spans).is_some())
            .await;
        let request = server_span(&spans).unwrap_or_else(|| panic!("no span for {seen}"));
        assert_eq!(
            request.span_id(),
            span_id,
            "the guest's parent is the request's span"
        );
        assert_eq!(request.span.name, "GET /hello");
        assert_eq!(request.format, "application/json");
        if traceparent == sent[0] {
            assert_eq!(request.parent_id(), "b7ad6b7169203331");
        } else {
            assert!(request.span.parent_span_id.is_empty(), "{request:?}");
        }
    }

    // A request the service fails: its span says so.
    let failed = host
        .client()
        .get(format!("{}/hello/panic", host.base))
        .header(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let spans = collector
        .trace("11111111111111111111111111111111", |spans| {
            server_span(spans).is_some()
        })
        .await;
    let request = server_span(&spans).expect("the failed request's span");
    let status = request.span.status.clone().unwrap_or_default();
    assert_eq!(status.code, SpanStatus::Error as i32, "{request:?}");
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("500")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_costs_no_request_and_a_bad_endpoint_is_refused() {
    // Nothing listens where the spans go: requests are served as ever.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let site = Site::new();
    site.install("hello", "1.0.0", &component("hello2"));
    let mut command = site.serve_command(&["--otlp-endpoint", &nowhere]);
    command.env("OTEL_BSP_SCHEDULE_DELAY", "20");
    let host = site.start_command(command);
    for _ in 0..50 {
        let reply = host.get("/hello/echo").await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The operator learns the spans are not getting through.
    let log = site.log_mentioning("ExportError");
    assert!(log.contains("ExportError"), "{log}");

    // An endpoint the host cannot send to is refused, naming the problem.
    for (endpoint, problem) in [
        ("https://collector:4318", "not an http:// URL"),
        ("http://", "not a URL"),
    ] {
        let refused = site
            .serve_command(&["--otlp-endpoint", endpoint])
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2), "{endpoint}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(problem) && stderr.contains("--otlp-endpoint"),
            "{stderr}"
        );
    }
}

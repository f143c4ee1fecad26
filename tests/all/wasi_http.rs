//! Services built for the standard `wasi:http/proxy` world (the
//! `streamer` fixture): bodies streamed both ways in bounded host memory,
//! platform imports, outgoing HTTP only where allowed, and the same
//! versions, swaps, headers and failure accounting as handler services.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::support::{Host, Site, component, eventually};

const GIB: u64 = 1 << 30;

/// A connection to `host` that gives up on a read after 30 s.
fn connect(host: &Host) -> TcpStream {
    host.connect(Duration::from_secs(30))
}

/// Send `head` (a request line and headers, without the blank line), and
/// return the reader positioned at the response body with the status and
/// lower-cased header lines.
fn request(
    host: &Host,
    head: &str,
    body: impl FnOnce(&mut TcpStream),
) -> (BufReader<TcpStream>, u16, Vec<String>) {
    let mut stream = connect(host);
    write!(stream, "{head}\r\nhost: test\r\nconnection: close\r\n\r\n").unwrap();
    body(&mut stream);
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        headers.push(line.trim().to_ascii_lowercase());
    }
    (reader, status, headers)
}

/// Read `reader` to its end, counting bytes and checking each is `x`;
/// the most the host's memory grew meanwhile, in KiB.
fn drain(reader: &mut impl Read, host: &Host, baseline_kib: u64) -> (u64, u64) {
    let mut buffer = vec![0u8; 1 << 20];
    let (mut total, mut peak) = (0u64, 0u64);
    loop {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            return (total, peak);
        }
        assert!(buffer[..n].iter().all(|&b| b == b'x'));
        total += n as u64;
        if total % (64 << 20) < n as u64 {
            peak = peak.max(host.rss_kib().saturating_sub(baseline_kib));
        }
    }
}

/// An HTTP server on loopback that answers every request with `hello`.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

/// `GET /streamer/hello`, whose answer is text.
async fn hello(host: &Host) -> (StatusCode, HeaderMap, String) {
    let url = format!("{}/streamer/hello", host.base);
    let response = host.client().get(url).send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_wasi_http_service_streams_a_gib_each_way_in_bounded_memory() {
    let site = Site::new();
    site.install("streamer", "1.0.0", &component("streamer"));
    let host = site.start();

    let (status, headers, text) = hello(&host).await;
    assert_eq!(status, StatusCode::OK);
    for (name, value) in [
        ("x-switchyard-service", "streamer"),
        ("x-switchyard-version", "1.0.0"),
        ("x-switchyard-instance", "0"),
        ("content-type", "text/plain"),
    ] {
        assert_eq!(headers[name], value, "{name}");
    }
    assert_eq!(text, "hello from wasi:http\n");
    assert_eq!(
        host.service("streamer").await["versions"][0]["kind"],
        "wasi-http"
    );

    // Platform imports work from a wasi:http component too.
    assert_eq!(
        host.get("/streamer/visits").await.body,
        json!({"visits": 1})
    );
    assert_eq!(
        host.get("/streamer/visits").await.body,
        json!({"visits": 2})
    );

    let baseline = host.rss_kib();
    let (mut body, status, headers) = request(
        &host,
        &format!("GET /streamer/bytes?n={GIB} HTTP/1.1"),
        |_| {},
    );
    assert_eq!(status, 200);
    assert!(
        headers.contains(&format!("content-length: {GIB}")),
        "{headers:?}"
    );
    let (received, grew_kib) = drain(&mut body, &host, baseline);
    assert_eq!(received, GIB);
    assert!(
        grew_kib < 128 << 10,
        "the host grew by {grew_kib} KiB sending 1 GiB"
    );

    // An upload far beyond --max-body-bytes streams into the guest.
    let baseline = host.rss_kib();
    let sent = std::thread::scope(|scope| {
        let host = &host;
        let sampler = scope.spawn(move || {
            let mut peak = 0;
            for _ in 0..40 {
                peak = peak.max(host.rss_kib().saturating_sub(baseline));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        let (mut reader, status, _) = request(
            host,
            &format!("POST /streamer/count HTTP/1.1\r\ncontent-length: {GIB}"),
            |stream| {
                let chunk = vec![7u8; 1 << 20];
                for _ in 0..(GIB >> 20) {
                    stream.write_all(&chunk).unwrap();
                }
            },
        );
        let mut answer = String::new();
        reader.read_to_string(&mut answer).unwrap();
        (status, answer, sampler.join().unwrap())
    });
    let (status, answer, grew_kib) = sent;
    assert_eq!(status, 200, "{answer}");
    let counted: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(counted, json!({"bytes": GIB, "sum": 7 * GIB}));
    assert!(
        grew_kib < 128 << 10,
        "the host grew by {grew_kib} KiB receiving 1 GiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn outgoing_http_reaches_only_the_hosts_a_service_allows() {
    let (allowed, other) = (upstream(), upstream());
    let site = Site::new();
    site.install("streamer", "1.0.0", &component("streamer"));
    site.settings(
        "streamer",
        &format!("[outbound]\nallowed_hosts = [\"127.0.0.1:{allowed}\"]\n"),
    );
    site.install("careless", "1.0.0", &component("streamer"));
    site.settings(
        "careless",
        "[outbound]\nallowed_hosts = [\"http://127.0.0.1\"]\n",
    );
    let host = site.start();

    let fetched = host
        .get(&format!("/streamer/fetch?host=127.0.0.1:{allowed}&path=/"))
        .await;
    assert_eq!(fetched.body, json!({"status": 200, "body": "hello"}));
    let denied = host
        .get(&format!("/streamer/fetch?host=127.0.0.1:{other}&path=/"))
        .await;
    assert_eq!(denied.status, StatusCode::BAD_GATEWAY);
    assert_eq!(denied.error(), "ErrorCode::HttpRequestDenied");
    let log = site.log_mentioning("allowed_hosts of");
    assert!(
        log.contains(&format!(
            "denied an outgoing request to http://127.0.0.1:{other}/"
        )) && log.contains("allowed_hosts of services/streamer/service.toml"),
        "{log}"
    );

    // An entry that is not a host refuses the version, naming the setting.
    let careless = host.service("careless").await;
    let reason = careless["versions"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("[outbound] allowed_hosts entry \"http://127.0.0.1\""),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_wasi_http_service_swaps_mid_stream_and_counts_its_failures() {
    let site = Site::new();
    let streamer = std::fs::read(component("streamer")).unwrap();
    site.drop_in("streamer", "1.0.0", &streamer);
    let host = site.start();

    // A download that began on 1.0.0 ends whole after 1.1.0 took over.
    let size = 64u64 << 20;
    let (mut body, status, _) = request(
        &host,
        &format!("GET /streamer/bytes?n={size} HTTP/1.1"),
        |_| {},
    );
    assert_eq!(status, 200);
    let mut first = vec![0u8; 1 << 20];
    body.read_exact(&mut first).unwrap();
    site.drop_in("streamer", "1.1.0", &streamer);
    host.wait_active("streamer", "1.1.0").await;
    let (rest, _) = drain(&mut body, &host, host.rss_kib());
    assert_eq!(rest + (1 << 20), size);
    assert_eq!(hello(&host).await.1["x-switchyard-version"], "1.1.0");

    // A trap before answering is a 500 (a read: tried twice); after
    // answering, the body is cut short and the failure still counted.
    let errors = |service: serde_json::Value| service["versions"][0]["errors"].as_u64().unwrap();
    let panicked = host.get("/streamer/panic").await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        panicked.error().contains("service streamer 1.1.0 failed"),
        "{panicked:?}"
    );
    assert_eq!(errors(host.service("streamer").await), 2);
    // What the guest wrote to stderr as it panicked reached the host's log.
    let log = site.log_mentioning("asked to panic");
    assert!(log.contains("asked to panic"), "{log}");
    let (mut cut, status, _) = request(&host, "GET /streamer/partial HTTP/1.1", |_| {});
    assert_eq!(status, 200);
    let mut received = Vec::new();
    let _ = cut.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("the beginning, and then"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut body must not end cleanly: {text:?}"
    );
    let counted = eventually(async || (errors(host.service("streamer").await) == 3).then_some(()));
    if counted.await.is_none() {
        panic!(
            "the failure after answering was not counted: {}",
            host.service("streamer").await
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn a_component_built_for_other_hosts_runs_unchanged() {
    // hello-http imports only what wasi:http/proxy gives: `wasmtime serve`
    // runs the same file (the benchmarks compare the two on it).
    let site = Site::new();
    site.install("hello", "1.0.0", &component("hello_http"));
    let host = site.start();
    let url = format!("{}/hello/anything?at=all", host.base);
    let response = host.client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "13");
    assert_eq!(response.text().await.unwrap(), "hello, world\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasi_http_guest_is_served_as_the_reference_host_serves_it() {
    let site = Site::new();
    site.install("streamer", "1.0.0", &component("streamer"));
    let host = site.start();
    let errors = || async {
        host.service("streamer").await["versions"][0]["errors"]
            .as_u64()
            .unwrap()
    };

    // The guest gets the authority a request in absolute form names, over
    // its Host header; else its Host header; a request naming none is a 400.
    let authority = |head: &str| {
        let (mut reader, status, _) = request(&host, head, |_| {});
        let mut body = String::new();
        reader.read_to_string(&mut body).unwrap();
        (status, body)
    };
    assert_eq!(
        authority("GET http://elsewhere.example:81/streamer/authority HTTP/1.1"),
        (200, "elsewhere.example:81".to_string())
    );
    assert_eq!(
        authority("GET /streamer/authority HTTP/1.1"),
        (200, "test".to_string())
    );
    let mut bare = connect(&host);
    bare.write_all(b"GET /streamer/authority HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = bare.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains("Host header"), "{answer}");

    // Complete answers end cleanly on the guest's side too: finishing its
    // stream after the client had every byte does not fail.
    for n in [1u64 << 20, 100, 0].into_iter().cycle().take(60) {
        let url = format!("{}/streamer/bytes?n={n}", host.base);
        let response = host.client().get(url).send().await.unwrap();
        assert_eq!(response.bytes().await.unwrap().len() as u64, n);
        assert_eq!(hello(&host).await.2, "hello from wasi:http\n");
    }
    assert_eq!(errors().await, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!site.log().contains("went away"), "{}", site.log());

    // A handler that returns without setting a response failed: a 500,
    // counted (a read: tried twice) and logged as an error.
    let silent = host.get("/streamer/silent").await;
    assert_eq!(
        silent.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{silent:?}"
    );
    assert!(
        silent
            .error()
            .contains("returned without setting a response"),
        "{silent:?}"
    );
    assert_eq!(errors().await, 2);
    let log = site.log_mentioning("request failed");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("without setting a response")),
        "{log}"
    );

    // A client that leaves before the answer: the guest's later trap is
    // still logged and counted, once (the request is gone: no retry).
    let mut leaving = connect(&host);
    leaving
        .write_all(b"GET /streamer/late-panic?ms=300 HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(leaving);
    eventually(async || (errors().await == 3).then_some(())).await;
    assert_eq!(errors().await, 3, "{}", host.service("streamer").await);
    let log = site.log_mentioning("after its client went away");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("after its client went away")),
        "{log}"
    );
    assert!(log.contains("asked to fail after 300 ms"), "{log}");
}

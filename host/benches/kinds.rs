//! `make bench`, kinds: the same hello work served by each kind of
//! component and guest language, side by side in one run, with a real load
//! generator (wrk) against a real host:
//!
//! - a handler component in Rust (`faulty`, `GET /hello`);
//! - a handler2 component in Rust (`hello2`, `GET /hello`);
//! - a `wasi:http` component in Rust (`streamer`, `GET /hello`);
//! - a handler service in Python (`reviews`, componentize-py, `GET /`);
//! - a handler service in JavaScript (`wishlist`, componentize-qjs, `GET /`).
//!
//! Per kind: req/s and p99 with pooled instances, and with a fresh instance
//! per request (per-request isolation), from which the server CPU a fresh
//! instance adds to a request follows (req/s ≈ 2 cores ÷ CPU per request on
//! this machine, the load generator included); the resident memory each idle
//! instance holds (a host started with 9 instances of that service against
//! one with 1); and the `wasi:http` streaming throughput for a 1 GiB
//! response. Writes `target/bench/kinds.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Site, component};

use measure::{write_report, wrk};

/// Kind, the component serving it, and the path of its hello.
const KINDS: [(&str, &str, &str); 5] = [
    ("handler", "faulty", "/hello"),
    ("handler2", "hello2", "/hello"),
    ("wasi-http", "streamer", "/hello"),
    ("python", "reviews", "/"),
    ("javascript", "wishlist", "/"),
];

/// Instances in the "many" start-up, against 1.
const MANY: usize = 9;

/// Each kind's settings: pooled or one instance per request, and a fixed
/// number of instances where `instances` gives one (else the default).
fn site_with(site: &Site, isolation: &str, instances: impl Fn(&str) -> Option<usize>) {
    for (kind, _, _) in KINDS {
        let fixed = instances(kind)
            .map(|n| format!("[instances]\nmin = {n}\nmax = {n}\n"))
            .unwrap_or_default();
        site.settings(kind, &format!("isolation = \"{isolation}\"\n{fixed}"));
    }
}

/// Read a `GET` of `bytes` bytes from the streaming route; MiB/s.
fn stream(addr: &str, bytes: u64) -> f64 {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /wasi-http/bytes?n={bytes} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    let mut buffer = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    assert_eq!(received, bytes, "the whole body arrives");
    bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let site = Site::new();
    site.install("goods", "1.0.0", &component("goods"));
    for (kind, file, _) in KINDS {
        site.install(kind, "1.0.0", &component(file));
    }
    // The first start compiles (Python's component for some 20 s); the
    // later ones load from the compiled cache.
    let mut report = json!({});
    site_with(&site, "pooled", |_| None);
    let host = site.start();
    for (kind, _, path) in KINDS {
        report[kind] = wrk(&format!("{}/{kind}{path}", host.base), None);
    }
    report["wasi_http_stream_mib_s"] = json!(stream(host.addr(), 1 << 30));
    drop(host);

    site_with(&site, "per-request", |_| None);
    let host = site.start();
    for (kind, _, path) in KINDS {
        let fresh = wrk(&format!("{}/{kind}{path}", host.base), None);
        let (pooled, fresh_rps) = (&report[kind]["rps"], fresh["rps"].as_f64().unwrap());
        let added_us = 2e6 * (1.0 / fresh_rps - 1.0 / pooled.as_f64().unwrap());
        report[kind]["per_request_rps"] = json!(fresh_rps);
        report[kind]["per_request_p99_ms"] = fresh["p99_ms"].clone();
        report[kind]["fresh_instance_us"] = json!(added_us);
    }
    drop(host);

    // Resident memory with one instance of each kind, then with MANY of one.
    let rss = |many: &str| {
        site_with(&site, "pooled", |kind| {
            Some(if kind == many { MANY } else { 1 })
        });
        let host = site.start();
        std::thread::sleep(Duration::from_millis(300));
        host.rss_kib() as f64
    };
    let base_rss = rss("");
    for (kind, _, _) in KINDS {
        report[kind]["rss_per_instance_kib"] = json!((rss(kind) - base_rss) / (MANY - 1) as f64);
    }

    let rows: Vec<&str> = KINDS.iter().map(|(kind, ..)| *kind).collect();
    write_report("kinds", &report, &rows);
    for kind in &rows {
        let row = &report[*kind];
        println!(
            "{kind}: pooled {:.0} req/s (p99 {:.2} ms); a fresh instance per request {:.0} req/s \
             (p99 {:.2} ms), ~{:.0} µs more CPU each; {:.0} KiB per idle instance",
            row["rps"].as_f64().unwrap(),
            row["p99_ms"].as_f64().unwrap(),
            row["per_request_rps"].as_f64().unwrap(),
            row["per_request_p99_ms"].as_f64().unwrap(),
            row["fresh_instance_us"].as_f64().unwrap(),
            row["rss_per_instance_kib"].as_f64().unwrap()
        );
    }
    println!(
        "wasi:http streaming a 1 GiB response: {:.0} MiB/s",
        report["wasi_http_stream_mib_s"].as_f64().unwrap()
    );
}

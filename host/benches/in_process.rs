//! `make bench`, in process: hello (`GET /hello/hello`, 13 bytes) through
//! the host's routes built by `App::load` and driven with `oneshot`, with no
//! socket, no load generator and one thread: what the host itself spends
//! per request, free of the kernel's and wrk's share that makes the HTTP
//! benchmarks' figures move by microseconds from run to run. Rows:
//!
//! - `axum_router`: an axum router answering the same route itself, the floor;
//! - `host_warn`: the host's routes, logs at `warn` (no access log);
//! - `host_access_log`: as deployed by default, the access log on (`info`,
//!   a line per request, to a file);
//! - `host_access_log_json`: the same with `--log-format json`;
//! - `axum_router_browser_headers`, `host_browser_headers`: the first two
//!   with the 14 headers a browser sends (~900 bytes): what handing every
//!   header to the guest costs, which a guest that reads headers on demand
//!   would not pay;
//! - `host_handler2`, `host_handler2_browser_headers`: the same hello from a
//!   guest exporting `handler2` (`hello2`), which is lent the request and
//!   reads only its path;
//! - `axum_goods`, `host_goods`: `GET /goods/{id}`, natively
//!   (`examples/native_goods.rs`' router) and by the goods service, on the
//!   same record in the same SQLite store;
//! - `host_service_call`: `GET /till/1000/eu`, a service (`till`) whose
//!   answer takes one call of another service's interface (`tax`'s
//!   `rates.apply`): what a service-to-service call adds to a request.
//! - `host_warn_traced`, `host_goods_traced`, `host_service_call_traced`:
//!   the same three with traces exported (`--otlp-endpoint`) to a collector
//!   in the parent process, which counts the spans it gets: a span per
//!   request, plus one per store call (goods) or service call (till).
//!
//! Each row runs in a process of its own (logging is set up once per
//! process), nine rounds alternating between them; each figure is the
//! median over the rounds (of a difference: of its value in each round) of the CPU time the process spent per request (all its threads:
//! the log writer's too; a virtual machine's stolen time is not in it,
//! which steadies the figures where wall time moved by 15 %). Writes `target/bench/in_process.json` and prints a table.

#[path = "../../tests/all/support/mod.rs"]
mod support;

mod measure;

// Only its router is used here; its `main` is the example's.
#[allow(dead_code)]
#[path = "../examples/native_goods.rs"]
mod native_goods;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;
use support::{component, in_process_settings};
use switchyard_store::{KeyValueStore, Namespace, Quota, SqliteStore};
use tower::ServiceExt;

/// Measured rounds per row.
const ROUNDS: usize = 9;
/// Requests per round, after as many to warm up.
const REQUESTS: u32 = 60_000;
/// Tells a child process which row it measures.
const ROW_VAR: &str = "SWITCHYARD_BENCH_ROW";

/// Every row: its name, `RUST_LOG`, and whether lines are JSON.
const ROWS: [(&str, &str, bool); 14] = [
    ("axum_router", "warn", false),
    ("host_warn", "warn", false),
    ("host_access_log", "info", false),
    ("host_access_log_json", "info", true),
    ("axum_router_browser_headers", "warn", false),
    ("host_browser_headers", "warn", false),
    ("host_handler2", "warn", false),
    ("host_handler2_browser_headers", "warn", false),
    ("axum_goods", "warn", false),
    ("host_goods", "warn", false),
    ("host_service_call", "warn", false),
    ("host_warn_traced", "warn", false),
    ("host_goods_traced", "warn", false),
    ("host_service_call_traced", "warn", false),
];

/// The traced rows' rows without traces.
const TRACED: [(&str, &str); 3] = [
    ("host_warn_traced", "host_warn"),
    ("host_goods_traced", "host_goods"),
    ("host_service_call_traced", "host_service_call"),
];

/// Tells a traced row's child where the collector is.
const COLLECTOR_VAR: &str = "SWITCHYARD_BENCH_COLLECTOR";

/// The sites the host rows load, each a services and a data folder: the
/// services there and the components they run.
type Services = &'static [(&'static str, &'static str)];
const SITES: [(&str, &str, Services); 4] = [
    ("services", "data", &[("hello", "faulty")]),
    ("services2", "data2", &[("hello", "hello2")]),
    ("services3", "data3", &[("goods", "goods")]),
    ("services4", "data4", &[("tax", "tax"), ("till", "till")]),
];

/// The site a host row loads: its services and data folders.
fn site(row: &str) -> (&'static str, &'static str) {
    let row = untraced(row);
    let (services, data, ..) = if row.starts_with("host_handler2") {
        SITES[1]
    } else if row.ends_with("goods") {
        SITES[2]
    } else if row == "host_service_call" {
        SITES[3]
    } else {
        SITES[0]
    };
    (services, data)
}

/// The goods record the goods rows read, and its id.
const GOODS_ID: &str = "g-bench";
const GOODS: &str = r#"{"id":"g-bench","name":"pen","price_cents":150,"stock":10}"#;

/// What `GET /till/1000/eu` answers.
const LEVY: &str = r#"{"net":1000,"tax":200,"gross":1200}"#;

/// What a browser sends with a page request, besides `host`.
const BROWSER_HEADERS: [(&str, &str); 14] = [
    ("connection", "keep-alive"),
    ("sec-ch-ua", r#""Chromium";v="156", "Not.A/Brand";v="99""#),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", r#""Linux""#),
    ("upgrade-insecure-requests", "1"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/156.0.0.0 Safari/537.36",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,\
         image/apng,*/*;q=0.8",
    ),
    ("sec-fetch-site", "none"),
    ("sec-fetch-mode", "navigate"),
    ("sec-fetch-user", "?1"),
    ("sec-fetch-dest", "document"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
    (
        "cookie",
        "session=4f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7; \
         theme=dark; consent=analytics%3Dno%26ads%3Dno",
    ),
];

/// A traced row's requests, as its untraced row names them.
fn untraced(row: &str) -> &str {
    row.strip_suffix("_traced").unwrap_or(row)
}

fn main() {
    match std::env::var(ROW_VAR) {
        Ok(row) => measure(&row),
        Err(_) => compare(),
    }
}

/// Run every row in a child process, round after round; report medians.
fn compare() {
    let dir = tempfile::tempdir().unwrap();
    for (services, _, installs) in SITES {
        for (service, file) in installs {
            let installed = dir.path().join(services).join(service).join("1.0.0.wasm");
            std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
            std::fs::copy(component(file), &installed).unwrap();
        }
    }
    let (collector, spans) = collector();
    // Spans the collector got per request, and the exporter's thread's CPU
    // per request, by traced row and round.
    let mut exported: Vec<(&str, f64, f64)> = Vec::new();
    // rounds[i][row]: the machine's speed drifts by 20 % over a run, so
    // differences are taken within a round, where it is about the same.
    let rounds: Vec<Vec<f64>> = (0..ROUNDS)
        .map(|_| {
            ROWS.iter()
                .map(|(row, log, _)| {
                    let before = spans.load(Ordering::Relaxed);
                    let (ns, exporting) = run_child(dir.path(), row, log, &collector);
                    let got = spans.load(Ordering::Relaxed) - before;
                    if row.ends_with("_traced") {
                        exported.push((row, got as f64 / f64::from(2 * REQUESTS), exporting));
                    }
                    ns
                })
                .collect()
        })
        .collect();
    let column = |name: &str| ROWS.iter().position(|(row, ..)| *row == name).unwrap();
    let median_of = |figure: &dyn Fn(&[f64]) -> f64| {
        let mut figures: Vec<f64> = rounds.iter().map(|round| figure(round)).collect();
        figures.sort_by(f64::total_cmp);
        figures[figures.len() / 2]
    };
    let mut report = json!({});
    for (i, (row, ..)) in ROWS.iter().enumerate() {
        report[*row] = json!({
            "ns_per_request": median_of(&|round| round[i]),
            "rounds": rounds.iter().map(|round| round[i]).collect::<Vec<_>>(),
        });
    }
    let ns = |round: &[f64], row: &str| round[column(row)];
    let differences = [
        (
            "host_over_axum_ns",
            median_of(&|r| ns(r, "host_warn") - ns(r, "axum_router")),
        ),
        (
            "access_log_ns",
            median_of(&|r| ns(r, "host_access_log") - ns(r, "host_warn")),
        ),
        (
            "access_log_json_ns",
            median_of(&|r| ns(r, "host_access_log_json") - ns(r, "host_warn")),
        ),
        (
            "browser_headers_ns",
            median_of(&|r| {
                (ns(r, "host_browser_headers") - ns(r, "host_warn"))
                    - (ns(r, "axum_router_browser_headers") - ns(r, "axum_router"))
            }),
        ),
        (
            "handler2_over_handler_ns",
            median_of(&|r| ns(r, "host_handler2") - ns(r, "host_warn")),
        ),
        (
            "handler2_browser_headers_ns",
            median_of(&|r| {
                (ns(r, "host_handler2_browser_headers") - ns(r, "host_handler2"))
                    - (ns(r, "axum_router_browser_headers") - ns(r, "axum_router"))
            }),
        ),
        (
            "goods_host_over_native_ns",
            median_of(&|r| ns(r, "host_goods") - ns(r, "axum_goods")),
        ),
        (
            "goods_native_over_host",
            median_of(&|r| ns(r, "axum_goods") / ns(r, "host_goods")),
        ),
        (
            "handler2_browser_over_handler_ns",
            median_of(&|r| ns(r, "host_handler2_browser_headers") - ns(r, "host_browser_headers")),
        ),
        (
            "traced_hello_ns",
            median_of(&|r| ns(r, TRACED[0].0) - ns(r, TRACED[0].1)),
        ),
        (
            "traced_goods_ns",
            median_of(&|r| ns(r, TRACED[1].0) - ns(r, TRACED[1].1)),
        ),
        (
            "traced_service_call_ns",
            median_of(&|r| ns(r, TRACED[2].0) - ns(r, TRACED[2].1)),
        ),
    ];
    println!("{:<30} {:>12}", "in process", "ns/request");
    for (row, ..) in ROWS {
        println!(
            "{row:<30} {:>12.0}",
            report[row]["ns_per_request"].as_f64().unwrap()
        );
    }
    for (name, difference) in differences {
        if name.ends_with("_over_host") {
            println!("{name:<30} {difference:>12.2}");
        } else {
            println!("{name:<30} {difference:>+12.0}");
        }
        report[name] = json!(difference);
    }
    for (row, _) in TRACED {
        let of_row = || exported.iter().filter(|(r, ..)| *r == row);
        let mut got: Vec<f64> = of_row().map(|(_, n, _)| *n).collect();
        got.sort_by(f64::total_cmp);
        let mut exporting: Vec<f64> = of_row().map(|(.., ns)| *ns).collect();
        exporting.sort_by(f64::total_cmp);
        let median = exporting[exporting.len() / 2];
        println!(
            "{:<30} {:>12.2}",
            format!("{row}: spans/request, least"),
            got[0]
        );
        println!(
            "{:<30} {median:>12.0}",
            format!("{row}: exporter's thread, ns")
        );
        report[row]["spans_exported_per_request"] = json!(got);
        report[row]["exporter_thread_ns_per_request"] = json!(median);
    }
    let out = measure::target_dir().join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("in_process.json");
    std::fs::write(&file, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", file.display());
}

/// This benchmark again, measuring `row` with logs at `log` (its lines to a
/// file in `dir`), traces (if it is traced) to `collector`; its CPU
/// nanoseconds per request, and how many of them the trace exporter's
/// thread spent.
fn run_child(dir: &Path, row: &str, log: &str, collector: &str) -> (f64, f64) {
    let output = Command::new(std::env::current_exe().unwrap())
        .env(ROW_VAR, row)
        .env(COLLECTOR_VAR, collector)
        .env("RUST_LOG", log)
        .env("SWITCHYARD_BENCH_DIR", dir)
        .stderr(std::fs::File::create(dir.join(format!("{row}.log"))).unwrap())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{row} failed: {text}");
    let figures: Vec<f64> = text
        .split_whitespace()
        .map(|figure| {
            figure
                .parse()
                .unwrap_or_else(|_| panic!("{row} printed {text:?}"))
        })
        .collect();
    match figures[..] {
        [total, exporting] => (total, exporting),
        _ => panic!("{row} printed {text:?}"),
    }
}

/// In a child: set up `row`, send it requests, print ns per request.
fn measure(row: &str) {
    let (_, _, json) = *ROWS.iter().find(|(name, ..)| *name == row).unwrap();
    let _logs = switchyard::logs::init(json);
    let dir = PathBuf::from(std::env::var("SWITCHYARD_BENCH_DIR").unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let traced = row.ends_with("_traced");
    let row = untraced(row);
    runtime.block_on(async {
        let goods = row.ends_with("goods");
        // The goods rows, native and host alike, read the goods site's store.
        let (services, data) = site(row);
        let store = dir.join(data).join("store.sqlite");
        if goods {
            seed_goods(&store).await;
        }
        let router = if row.starts_with("axum_router") {
            Router::new().route("/hello/hello", get(|| async { "hello, world\n" }))
        } else if row == "axum_goods" {
            native_goods::router(Arc::new(SqliteStore::open(&store).unwrap()))
        } else {
            let mut settings = in_process_settings(dir.join(services), dir.join(data));
            if traced {
                let collector = std::env::var(COLLECTOR_VAR).unwrap();
                settings.otlp_endpoint =
                    Some(switchyard_trace::Endpoint::parse(&collector).unwrap());
            }
            let telemetry = switchyard_gateway::telemetry::Telemetry::install().unwrap();
            switchyard::App::load(&settings, Arc::new(telemetry))
                .await
                .unwrap()
                .router
        };
        let headers: &[(&str, &str)] = if row.ends_with("browser_headers") {
            &BROWSER_HEADERS
        } else {
            &[]
        };
        let (path, answer) = if goods {
            (format!("/goods/{GOODS_ID}"), GOODS)
        } else if row == "host_service_call" {
            ("/till/1000/eu".to_string(), LEVY)
        } else {
            ("/hello/hello".to_string(), "hello, world\n")
        };
        let one = || async {
            let mut request = Request::get(&path);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let request = request.body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body: &[u8] = &body;
            if goods || row == "host_service_call" {
                let got: serde_json::Value = serde_json::from_slice(body).unwrap();
                assert_eq!(
                    got,
                    serde_json::from_str::<serde_json::Value>(answer).unwrap()
                );
            } else {
                assert_eq!(body, answer.as_bytes());
            }
        };
        for _ in 0..REQUESTS {
            one().await;
        }
        let (before, exporting_before) = (cpu_ns(), cpu_ns_of(is_exporter));
        for _ in 0..REQUESTS {
            one().await;
        }
        let per_request = |ns: u64| ns as f64 / f64::from(REQUESTS);
        let exporting = per_request(cpu_ns_of(is_exporter) - exporting_before);
        println!("{} {exporting}", per_request(cpu_ns() - before));
    });
}

/// CPU time this process's threads have run so far (the scheduler's
/// count, in nanoseconds).
fn cpu_ns() -> u64 {
    cpu_ns_of(|_| true)
}

/// The same, of the threads whose name `counts`.
fn cpu_ns_of(counts: impl Fn(&str) -> bool) -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    let counted = tasks.filter_map(|task| {
        let task = task.ok()?.path();
        let name = std::fs::read_to_string(task.join("comm")).ok()?;
        counts(name.trim_end()).then(|| std::fs::read_to_string(task.join("schedstat")).ok())?
    });
    counted
        .filter_map(|stat| stat.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Whether a thread is the trace exporter's (the SDK's batch processor,
/// named `OpenTelemetry.Traces.BatchProcessor`, cut to 15 bytes).
fn is_exporter(thread: &str) -> bool {
    thread.starts_with("OpenTelemetry")
}

/// Put the goods rows' record into the store at `path` (the host's and the
/// native router's alike), as the goods service keeps it.
async fn seed_goods(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = SqliteStore::open(path).unwrap();
    let goods = Namespace {
        service: "goods".into(),
        bucket: "goods".into(),
    };
    store
        .set(&goods, GOODS_ID, GOODS.as_bytes(), &Quota::default())
        .await
        .unwrap();
}

/// An OTLP/HTTP collector on a thread of this process: where the traced
/// rows' children send their spans. Its address, and how many spans it got.
fn collector() -> (String, Arc<AtomicU64>) {
    let spans = Arc::new(AtomicU64::new(0));
    let counted = spans.clone();
    let (address, bound) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            address.send(listener.local_addr().unwrap()).unwrap();
            let receive = move |body: Bytes| {
                let counted = counted.clone();
                async move {
                    let export = ExportTraceServiceRequest::decode(body).unwrap();
                    let spans = export.resource_spans.iter().flat_map(|r| &r.scope_spans);
                    let n: usize = spans.map(|s| s.spans.len()).sum();
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    StatusCode::OK
                }
            };
            let app = Router::new().route("/v1/traces", post(receive));
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{}", bound.recv().unwrap()), spans)
}

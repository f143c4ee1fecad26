//! What the benchmarks share: a closed-loop HTTP load against a real host,
//! wrk for open-ended throughput, percentiles, and the JSON report under
//! `target/bench/`.

#![allow(dead_code)] // each benchmark uses its own subset

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Host;

/// wrk's settings: threads, connections, and seconds of warm-up and measure.
pub const THREADS: &str = "2";
pub const CONNECTIONS: &str = "16";
pub const WARMUP: &str = "1s";
pub const DURATION: &str = "5s";

pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A duration as wrk prints it (`812.00us`, `1.53ms`, `2.10s`), in ms.
fn wrk_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        (text, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

/// Run wrk against `url` (warm-up first); req/s, p50, p99 and errors.
pub fn wrk(url: &str, script: Option<&Path>) -> Value {
    wrk_server(url, script, None)
}

/// CPU time (user and system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses:
    // utime and stime are the 14th and 15th fields of the line.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    // In clock ticks, which Linux reports at USER_HZ = 100 on every platform.
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// Where the machine's CPU goes: busy cores in all, and of those the
/// `postgres` processes' share, as seconds of CPU since boot.
#[derive(Clone, Copy)]
pub struct CpuSample {
    machine_busy_s: f64,
    postgres_s: f64,
}

impl CpuSample {
    pub fn now() -> Self {
        Self {
            machine_busy_s: machine_busy_s(),
            postgres_s: postgres_cpu_ms() / 1e3,
        }
    }

    /// Cores busy on average since `self` (machine, postgres), over `elapsed`.
    pub fn cores_since(self, elapsed: Duration) -> (f64, f64) {
        let now = Self::now();
        let s = elapsed.as_secs_f64();
        (
            (now.machine_busy_s - self.machine_busy_s) / s,
            (now.postgres_s - self.postgres_s) / s,
        )
    }
}

/// Seconds every core of the machine has spent busy (not idle, not waiting
/// for I/O) since boot: the first line of /proc/stat, in USER_HZ ticks.
fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks[3] - ticks[4];
    busy as f64 / 100.0
}

/// User + system CPU time of every `postgres` process, in ms.
pub fn postgres_cpu_ms() -> f64 {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = entry.path().join("stat");
        let Ok(text) = std::fs::read_to_string(stat) else {
            continue;
        };
        let Some((name, rest)) = text.split_once(") ") else {
            continue;
        };
        if !name.ends_with("(postgres") {
            continue;
        }
        // After the name: state, then utime and stime are fields 12 and 13.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    ticks as f64 * 1e3 / ticks_per_s
}

/// As [`wrk`], and with the server's CPU time per request (`cpu_us`) when
/// `server` (its pid) is given: steadier than req/s here, where the load
/// generator shares the two cores.
pub fn wrk_server(url: &str, script: Option<&Path>, server: Option<u32>) -> Value {
    let run = |duration: &str| {
        let mut command = Command::new("wrk");
        command.args([
            "-t",
            THREADS,
            "-c",
            CONNECTIONS,
            "-d",
            duration,
            "--latency",
        ]);
        if let Some(script) = script {
            command.arg("-s").arg(script);
        }
        let output = command
            .arg(url)
            .output()
            .expect("wrk runs (make bench installs it)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(WARMUP);
    let cpu_before = server.map(cpu_time);
    let report = run(DURATION);
    let cpu = server
        .zip(cpu_before)
        .map(|(pid, before)| cpu_time(pid) - before);
    let field = |prefix: &str| {
        report
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|rest| rest.trim().to_string()))
            .unwrap_or_default()
    };
    let non_2xx = field("Non-2xx or 3xx responses:")
        .parse::<u64>()
        .unwrap_or(0);
    let n = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.parse::<u64>().ok());
    let cpu_us = cpu
        .zip(n)
        .map(|(cpu, n)| cpu.as_secs_f64() * 1e6 / n.max(1) as f64);
    json!({
        "rps": field("Requests/sec:").parse::<f64>().unwrap_or(f64::NAN),
        "p50_ms": wrk_ms(&field("50%")),
        "p99_ms": wrk_ms(&field("99%")),
        "non_2xx": non_2xx,
        "n": n,
        "cpu_us": cpu_us,
    })
}

/// Start the native baseline on the host's data; it and its address.
pub fn start_native(data: &Path) -> (Child, String) {
    let binary = target_dir().join("release/examples/native_goods");
    let mut child = Command::new(&binary)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} ({e}): make bench builds it", binary.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("native listening on ")
        .unwrap()
        .to_string();
    (child, base)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// n, p50, p99 and max of `samples`, in milliseconds.
pub fn summary(samples: &mut [Duration]) -> Value {
    samples.sort();
    json!({
        "n": samples.len(),
        "p50_ms": ms(percentile(samples, 0.50)),
        "p99_ms": ms(percentile(samples, 0.99)),
        "max_ms": ms(*samples.last().unwrap()),
    })
}

/// Builds the `i`-th request of a load.
pub type MakeRequest = fn(&Host, usize) -> crate::support::RequestBuilder;

/// `clients` clients sending `request`s back to back for `phase`, while
/// `during` runs; returns the summary with requests per second and failures.
pub async fn load(
    host: &Arc<Host>,
    clients: usize,
    phase: Duration,
    request: MakeRequest,
    during: impl Future<Output = ()>,
) -> Value {
    let host = host.clone();
    let attempt = move |i| {
        let host = host.clone();
        async move {
            match request(&host, i).send().await {
                Ok(reply) => {
                    let ok = reply.status().is_success();
                    let _ = reply.bytes().await;
                    ok
                }
                Err(_) => false,
            }
        }
    };
    closed_loop(clients, phase, attempt, during).await
}

/// `clients` tasks each making `attempt(i)` back to back for `phase` (while
/// `during` runs), every `i` a different number: a row of latencies, req/s
/// and failures (the attempts that answered false).
pub async fn closed_loop<Attempt, Made>(
    clients: usize,
    phase: Duration,
    attempt: Attempt,
    during: impl Future<Output = ()>,
) -> Value
where
    Attempt: Fn(usize) -> Made + Clone + Send + 'static,
    Made: Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (attempt, stop) = (attempt.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0usize;
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = attempt(i).await;
                    latencies.push(started.elapsed());
                    failed += usize::from(!ok);
                    i += clients;
                }
                (latencies, failed)
            })
        })
        .collect();
    let started = Instant::now();
    let cpu = CpuSample::now();
    tokio::join!(tokio::time::sleep(phase), during);
    stop.store(true, Ordering::Relaxed);
    let (machine_cores, postgres_cores) = cpu.cores_since(started.elapsed());
    let mut all = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (latencies, f) = task.await.unwrap();
        all.extend(latencies);
        failed += f;
    }
    let elapsed = started.elapsed();
    let mut row = summary(&mut all);
    row["rps"] = json!(all.len() as f64 / elapsed.as_secs_f64());
    row["failed"] = json!(failed);
    row["machine_cores_busy"] = json!(machine_cores);
    row["postgres_cores_busy"] = json!(postgres_cores);
    row
}

/// Print `rows` of `report` as a table, and write the report as JSON.
pub fn write_report(name: &str, report: &Value, rows: &[&str]) {
    println!(
        "{:<44} {:>9} {:>10} {:>10} {:>10} {:>6} {:>6}",
        name, "n", "req/s", "p50 ms", "p99 ms", "busy", "pg"
    );
    for key in rows {
        let row = &report[*key];
        let rps = row["rps"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |r| format!("{r:.0}"));
        let cores = |field: &str| {
            row[field]
                .as_f64()
                .map_or_else(|| "-".to_string(), |c| format!("{c:.2}"))
        };
        println!(
            "{key:<44} {:>9} {rps:>10} {:>10.3} {:>10.3} {:>6} {:>6}",
            row["n"],
            row["p50_ms"].as_f64().unwrap_or(f64::NAN),
            row["p99_ms"].as_f64().unwrap_or(f64::NAN),
            cores("machine_cores_busy"),
            cores("postgres_cores_busy"),
        );
    }
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_string_pretty(report).unwrap()).unwrap();
    println!("wrote {}", file.display());
}

/// How many goods and users the spread orders draw from.
pub const SPREAD: usize = 1000;

/// Goods and users up to SPREAD each (g1..g1000, u1..u1000), after a shop's
/// first goods and user.
pub async fn stock_up_spread(host: &Host) {
    for _ in 1..SPREAD {
        host.add_user().await;
        host.add_goods("ink", 90, u32::MAX).await;
    }
}

/// An order of one of SPREAD goods by one of SPREAD users: different
/// requests rarely share either.
pub fn spread_order(host: &Host, i: usize) -> crate::support::RequestBuilder {
    let user = i % SPREAD + 1;
    let goods = (i * 7 + i / SPREAD) % SPREAD + 1;
    let body = json!({"user_id": format!("u{user}"), "items": [{"goods_id": format!("g{goods}"), "qty": 1}]});
    host.client()
        .post(format!("{}/orders", host.base))
        .body(body.to_string())
}

//! Starting a real host over a scratch services/data folder, and talking
//! HTTP to it: a `switchyard` process ([`Site::start`]) where the test is
//! about the process (signals, crashes, restarts, its log, its metrics, its
//! memory), else the same host in the test's own process
//! ([`Site::start_in_process`]): `App::load` and the gateway's server on a
//! runtime of its own, behind a real socket.

#![allow(dead_code)] // the benchmarks use a subset

mod client;
pub mod webdriver;

pub use client::{Client, RequestBuilder};

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use switchyard_gateway::telemetry::Telemetry;
use tokio::task::JoinHandle;

/// The file of a shop service or test fixture, built from source by the
/// `test-artifacts` crate (`"goods"`, `"goods_v2"`, ...).
pub fn component(name: &str) -> PathBuf {
    PathBuf::from(test_artifacts::path(name))
}

/// Where every host the tests start keeps compiled components: one cache
/// for the whole test run, so each component is compiled once, not once per
/// test.
pub fn compiled_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled")
}

/// Settings to load the services in `services` in process (`App::load`),
/// with data in `data`: `switchyard serve`'s defaults, but for the shared
/// compiled cache and a shutdown that waits for requests in flight 1 s,
/// not 10 (a test that ends stops its host).
pub fn in_process_settings(services: PathBuf, data: PathBuf) -> switchyard::Settings {
    switchyard::Settings {
        services_dir: services,
        data_dir: data,
        compiled_cache: Some(compiled_cache()),
        listen: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes: 1 << 20,
        request_timeout: Duration::from_secs(30),
        admin_token: None,
        shutdown_timeout: Duration::from_secs(1),
        pool_instances: switchyard_runtime::POOLED_INSTANCES,
        perf_map: false,
        connections: switchyard_gateway::server::ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        },
        store: None,
        otlp_endpoint: None,
        node_id: None,
    }
}

/// A services folder and a data folder that outlive host restarts.
pub struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(site.services()).unwrap();
        site
    }

    /// The shop: goods, users and orders at 1.0.0, with the settings
    /// `make run` installs (`guests/<name>/service.toml`).
    pub fn shop() -> Site {
        let site = Site::new();
        for name in ["goods", "users", "orders"] {
            site.install(name, "1.0.0", &component(name));
            site.install_settings(name);
        }
        site
    }

    /// Copy the shop service `name`'s own `guests/<name>/service.toml`, if
    /// it has one, as `make run` does.
    pub fn install_settings(&self, name: &str) {
        let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests");
        if let Ok(toml) = std::fs::read_to_string(guests.join(name).join("service.toml")) {
            self.settings(name, &toml);
        }
    }

    pub fn services(&self) -> PathBuf {
        self.dir.path().join("services")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Copy a component to `services/<service>/<version>.wasm`.
    pub fn install(&self, service: &str, version: &str, component: &Path) {
        self.write(service, version, &std::fs::read(component).unwrap());
    }

    /// Write raw bytes as `services/<service>/<version>.wasm`.
    pub fn write(&self, service: &str, version: &str, bytes: &[u8]) {
        let dir = self.services().join(service);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{version}.wasm")), bytes).unwrap();
    }

    /// Drop a component in the way deploy tools do: write a hidden file, then
    /// rename it into place, so the host only ever sees the complete file.
    pub fn drop_in(&self, service: &str, version: &str, bytes: &[u8]) {
        let dir = self.services().join(service);
        std::fs::create_dir_all(&dir).unwrap();
        let staged = dir.join(format!(".{version}.wasm.partial"));
        std::fs::write(&staged, bytes).unwrap();
        std::fs::rename(&staged, dir.join(format!("{version}.wasm"))).unwrap();
    }

    /// Write `services/<service>/service.toml`.
    pub fn settings(&self, service: &str, toml: &str) {
        let dir = self.services().join(service);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("service.toml"), toml).unwrap();
    }

    pub fn start(&self) -> Host {
        self.start_with(&[])
    }

    /// `switchyard serve` over this site's folders on a free port, with
    /// extra command-line arguments (the tests' shared compiled cache
    /// unless they name one); not started.
    pub fn serve_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .arg("serve")
            .arg("--services")
            .arg(self.services())
            .arg("--data")
            .arg(self.data())
            .args(["--listen", "127.0.0.1:0"]);
        if !args.contains(&"--compiled-cache") {
            command.arg("--compiled-cache").arg(compiled_cache());
        }
        command.args(args);
        command
    }

    /// Start the host on a free port with extra command-line arguments.
    /// With `--admin-token T`, the host's helpers that read the admin API
    /// and metrics present `T`.
    pub fn start_with(&self, args: &[&str]) -> Host {
        let mut host = self.start_command(self.serve_command(args));
        host.token = args
            .windows(2)
            .find(|pair| pair[0] == "--admin-token")
            .map(|pair| pair[1].to_string());
        host
    }

    /// Start the host as `command` (from [`Site::serve_command`]) says,
    /// its log going to this site's `host.log`.
    pub fn start_command(&self, mut command: Command) -> Host {
        let log = std::fs::File::create(self.dir.path().join("host.log")).unwrap();
        let mut child = command.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("switchyard listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("the host did not start; its log:\n{}", self.log());
            }
        };
        Host {
            running: Running::Process(child),
            base,
            client: Client::new(),
            token: None,
        }
    }

    /// The host in this process, on a free port, as `switchyard serve`
    /// with default settings would run it (see [`in_process_settings`]).
    pub fn start_in_process(&self) -> Host {
        self.start_in_process_with(|_| {})
    }

    /// The same, with the settings `adjust` makes.
    pub fn start_in_process_with(&self, adjust: impl FnOnce(&mut switchyard::Settings)) -> Host {
        let mut settings = in_process_settings(self.services(), self.data());
        adjust(&mut settings);
        let token = settings.admin_token.clone();
        let (host, base) = InProcess::start(settings);
        Host {
            running: Running::InProcess(host),
            base,
            client: Client::new(),
            token,
        }
    }

    /// What the host wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// The first line of the host's JSON log (`--log-format json`) that
    /// mentions `needle`, parsed, once there is one.
    pub fn log_entry_mentioning(&self, needle: &str) -> Value {
        let logs = self.log_mentioning(needle);
        let line = logs
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line mentions {needle:?}:\n{logs}"));
        serde_json::from_str(line).expect("JSON logs")
    }

    /// What the host wrote to stderr, once it mentions `needle` (the host
    /// writes lines at `info` in batches, within 20 ms), or after 5 s.
    pub fn log_mentioning(&self, needle: &str) -> String {
        let since = std::time::Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) || since.elapsed() > Duration::from_secs(5) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// How long [`eventually`] waits for what it looks for.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// What `check` finds, once it finds something: asked every 20 ms for up to
/// [`EVENTUALLY`]; `None` if it never does (the caller says what did not
/// happen). For waiting on something the host does in its own time: a file
/// picked up, a change another host made, a batch of spans sent.
pub async fn eventually<T>(mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + EVENTUALLY;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running host. When dropped, a process is killed (SIGKILL, no graceful
/// shutdown); a host in process stops serving and closes its store.
pub struct Host {
    running: Running,
    pub base: String,
    client: Client,
    /// The admin token it was started with, for the helpers that read.
    token: Option<String>,
}

/// One HTTP exchange's outcome.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `error` message of a JSON error body; fails the test if there is none.
    pub fn error(&self) -> &str {
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("expected a JSON error body, got {self:?}"))
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {self:?}"))
            .to_string()
    }
}

impl Host {
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.body(body);
        }
        self.exchange(request, path).await
    }

    async fn exchange(&self, request: RequestBuilder, path: &str) -> Reply {
        let response = request.send().await.expect("the host answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Send as request `id` (its `x-request-id` header).
    pub async fn send_with_id(&self, method: Method, path: &str, id: &str) -> Reply {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-request-id", id);
        self.exchange(request, path).await
    }

    /// Send with an `Authorization: Bearer <token>` header.
    pub async fn send_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.exchange(
            self.client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(token)
                .body(body.unwrap_or_default()),
            path,
        )
        .await
    }

    /// `GET path` as an operator: with the host's admin token, if it has
    /// one (else from loopback, which is one).
    pub async fn read(&self, path: &str) -> Reply {
        match &self.token {
            Some(token) => self.send_as(token, Method::GET, path, None).await,
            None => self.get(path).await,
        }
    }

    /// `GET /admin/services/{name}`.
    pub async fn service(&self, name: &str) -> Value {
        let reply = self.read(&format!("/admin/services/{name}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply.body
    }

    /// The version `name` has active now ("" when none, or no such service).
    pub async fn active(&self, name: &str) -> String {
        let reply = self.read(&format!("/admin/services/{name}")).await;
        reply.body["active_version"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Wait (up to 20 s) until `name` has `version` active.
    pub async fn wait_active(&self, name: &str, version: &str) {
        let active = eventually(async || (self.active(name).await == version).then_some(()));
        if active.await.is_none() {
            panic!(
                "{name} {version} never became active: {}",
                self.service(name).await
            );
        }
    }

    /// Wait (up to 20 s) until `name` lists `version` in `state`; its entry.
    pub async fn wait_state(&self, name: &str, version: &str, state: &str) -> Value {
        let entry = eventually(async || {
            let service = self.read(&format!("/admin/services/{name}")).await.body;
            let versions = service["versions"].as_array()?;
            let entry = versions
                .iter()
                .find(|v| v["version"] == version && v["state"] == state);
            entry.cloned()
        });
        match entry.await {
            Some(entry) => entry,
            None => panic!(
                "{name} {version} never became {state}: {}",
                self.service(name).await
            ),
        }
    }

    /// Wait (up to 20 s) until `service` lists `file` among its refused
    /// files for a reason `reason` accepts; that reason.
    pub async fn wait_refused(
        &self,
        service: &str,
        file: &str,
        reason: impl Fn(&str) -> bool,
    ) -> String {
        let refused = eventually(async || {
            let view = self.service(service).await;
            let refused = view["refused_files"].as_array()?;
            let why = refused.iter().find(|f| f["file"] == file)?["reason"].as_str()?;
            reason(why).then(|| why.to_string())
        });
        match refused.await {
            Some(why) => why,
            None => panic!(
                "{service}'s {file} was never refused so: {}",
                self.service(service).await
            ),
        }
    }

    /// Create the user Ana; the 201 reply.
    pub async fn add_user(&self) -> Reply {
        let user = json!({"name": "Ana", "address": "1 Main St", "phone": "+1 555 0100"});
        let reply = self.post("/users", user).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        reply
    }

    /// Create goods `name` at `price_cents` with `stock`; the 201 reply.
    pub async fn add_goods(&self, name: &str, price_cents: u64, stock: u32) -> Reply {
        let goods = json!({"name": name, "price_cents": price_cents, "stock": stock});
        let reply = self.post("/goods", goods).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        reply
    }

    /// Start `n` `GET {path}` requests at once, each in a task of its own.
    pub fn get_at_once(self: &Arc<Self>, n: usize, path: &str) -> Vec<JoinHandle<Reply>> {
        (0..n)
            .map(|_| {
                let (host, path) = (self.clone(), path.to_string());
                tokio::spawn(async move { host.get(&path).await })
            })
            .collect()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &[u8]) -> Reply {
        self.send(Method::POST, path, Some(body.to_vec())).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(body.to_string().into_bytes()))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    /// The value of the metric line starting with `series` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let mut request = self.client.get(format!("{}/metrics", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Wait (up to 20 s) until `n` instances of `service` `version` are on
    /// a call (as `GET /admin/stats` counts them): the moment a test's slow
    /// request is surely in flight.
    pub async fn wait_busy(&self, service: &str, version: &str, n: usize) {
        let busy = eventually(async || {
            let stats = self.read("/admin/stats").await.body;
            let services = stats["services"].as_array()?;
            let service = services.iter().find(|s| s["name"] == service)?;
            let versions = service["versions"].as_array()?;
            let version = versions.iter().find(|v| v["version"] == version)?;
            (version["instances"]["busy"].as_u64()? >= n as u64).then_some(())
        });
        if busy.await.is_none() {
            panic!("{service} {version} never had {n} instances busy");
        }
    }

    /// `host:port` the host listens on, for raw TCP clients.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// A raw TCP connection to the host, whose reads give up after
    /// `read_timeout` (a test waiting on a host that never answers fails
    /// instead of hanging).
    pub fn connect(&self, read_timeout: Duration) -> TcpStream {
        let stream = TcpStream::connect(self.addr()).unwrap();
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        stream
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// The host's process: for what only a host of its own has.
    fn child(&self) -> &Child {
        match &self.running {
            Running::Process(child) => child,
            Running::InProcess(_) => panic!("this host runs in the test's process"),
        }
    }

    /// The HTTP client, for requests the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The host's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Send SIGTERM, as a service manager stopping the host would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait (up to 30 s) for the host to exit; its exit status.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let Running::Process(child) = &mut self.running else {
            panic!("this host runs in the test's process");
        };
        for _ in 0..300 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the host did not exit");
    }

    /// Send SIGKILL, as a crash would, while clients may still hold the host.
    pub fn crash(&self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stop the host abruptly, as a crash would.
    pub fn kill(self) {
        self.child();
        drop(self);
    }
}

/// Where a test's host runs.
enum Running {
    Process(Child),
    InProcess(InProcess),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Process(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A host in the test's process: `App::load` and the gateway's server on a
/// thread and a runtime of their own, so that a test blocking its own
/// threads (a raw socket's read, say) never holds the host up.
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Start serving as `settings` say (their `listen` port is chosen
    /// here); the host and the base URL it answers on.
    fn start(mut settings: switchyard::Settings) -> (InProcess, String) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (started, listening) = mpsc::channel::<Result<String, String>>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .unwrap();
                settings.listen = listener.local_addr().unwrap();
                let telemetry = Arc::new(Telemetry::detached().unwrap());
                let app = match switchyard::App::load(&settings, telemetry).await {
                    Ok(app) => app,
                    Err(e) => {
                        let _ = started.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = started.send(Ok(format!("http://{}", settings.listen)));
                let stopped = async {
                    let _ = stopped.await;
                };
                switchyard_gateway::server::serve(
                    listener,
                    app.router.clone(),
                    settings.connections,
                    stopped,
                    settings.shutdown_timeout,
                )
                .await;
                app.close().await.expect("the store closes");
            });
            // A guest still computing (a test that failed mid-call) is
            // not waited for past its own deadline.
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        match listening.recv() {
            Ok(Ok(base)) => {
                let host = InProcess {
                    stop: Some(stop),
                    thread: Some(thread),
                };
                (host, base)
            }
            Ok(Err(e)) => panic!("the host did not start: {e}"),
            Err(_) => panic!("the host did not start: {:?}", thread.join()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

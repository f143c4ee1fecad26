//! Switchyard runs microservices as WebAssembly components inside one host
//! process and serves them through one HTTP gateway.
//!
//! This crate is the `switchyard` binary's library: its settings, and
//! [`App::load`], which builds the host from its crates. A request travels
//! straight through them, each owning one concept (README, "Layout"):
//!
//! - `switchyard_gateway` (`host/gateway`): the listening socket, HTTP in and
//!   out for `/<service>/...`, health and metrics;
//! - `switchyard_admin` (`host/admin`): the admin API under `/admin`;
//! - `switchyard_control` (`host/control`): which version serves (the
//!   registry), whether versions fit together, loading and watching files,
//!   which instance takes the call;
//! - `switchyard_runtime` (`host/runtime`): wasmtime: compiling, linking,
//!   instantiating, calling;
//! - `switchyard_platform` (`host/platform`): the host side of the imports
//!   every service gets;
//! - `switchyard_store` (`host/store`): durable data.

pub mod logs;
pub mod operator;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use switchyard_admin::Admin;
use switchyard_control::cluster::{self, Node};
use switchyard_control::{loader, recovery, registry, watcher};
use switchyard_gateway::operator::Operators;
use switchyard_gateway::{Gateway, server, telemetry};
use switchyard_store::{Location, Store};
use switchyard_trace::Exporter;

/// At exit, how long the traces still queued may take to reach the collector.
const TRACES_DRAIN: Duration = Duration::from_secs(5);

/// Everything `switchyard serve` can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub services_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where compiled components are kept; `None`: `data_dir/compiled`.
    /// Entries are keyed by the component's digest and the engine, and
    /// written whole, so hosts may share one.
    pub compiled_cache: Option<PathBuf>,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub admin_token: Option<String>,
    /// After a shutdown signal, how long requests in flight may take to finish.
    pub shutdown_timeout: Duration,
    /// Instances of all services together that can exist at once.
    pub pool_instances: u32,
    /// Whether to tell `perf` the names of guest functions (see
    /// [`switchyard_runtime::Runtime::new`]).
    pub perf_map: bool,
    /// How many connections, and how slow and idle they may be.
    pub connections: server::ConnectionLimits,
    /// Where services' data and the deployment records live; `None`: the
    /// embedded store under `data_dir`.
    pub store: Option<Location>,
    /// This host's name among the nodes sharing the store; `None`: its host
    /// name and port.
    pub node_id: Option<String>,
    /// Where each request's trace is exported; `None`: no traces.
    pub otlp_endpoint: Option<switchyard_trace::Endpoint>,
}

/// The host, loaded and ready to serve: its routes, and what must live as
/// long as they do.
pub struct App {
    /// The gateway's and the admin API's routes. Serve them with connect info
    /// (`ConnectInfo<SocketAddr>` in each request's extensions).
    pub router: axum::Router,
    store: Arc<dyn Store>,
    /// Sends the requests' traces, when exported.
    traces: Option<Exporter>,
    _watcher: notify::RecommendedWatcher,
}

impl App {
    /// After serving: make the store's writes durable and send the last
    /// traces.
    pub async fn close(self) -> Result<()> {
        self.store.close().await.context("cannot flush the store")?;
        if let Some(traces) = self.traces {
            // The SDK's thread sends the last batch through this runtime: wait
            // for it off the runtime's workers.
            let sent = tokio::task::spawn_blocking(move || traces.shutdown(TRACES_DRAIN)).await?;
            if let Err(e) = sent {
                tracing::warn!("the last traces were not sent: {e}");
            }
        }
        Ok(())
    }

    /// Load every service, start watching the folder and recovering, and
    /// build the routes; nothing listens yet. Tests drive `router` in process.
    pub async fn load(settings: &Settings, telemetry: Arc<telemetry::Telemetry>) -> Result<App> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                settings.data_dir.display()
            )
        })?;
        std::fs::create_dir_all(&settings.services_dir).with_context(|| {
            format!(
                "cannot create the services directory {}",
                settings.services_dir.display()
            )
        })?;
        let location = settings
            .store
            .clone()
            .unwrap_or_else(|| Location::sqlite_in(&settings.data_dir));
        let store = switchyard_store::open(&location)
            .await
            .with_context(|| format!("cannot open the store ({})", describe(&location)))?;
        let runtime = Arc::new(switchyard_runtime::Runtime::new(
            settings.pool_instances,
            settings.perf_map,
        )?);
        let registry = Arc::new(registry::Registry::new(store.clone()));
        telemetry.follow(&registry);
        let loader = Arc::new(loader::Loader {
            runtime,
            registry: registry.clone(),
            store: store.clone(),
            components: store.clone(),
            // Canonical, so that the watcher's event paths can be matched against it.
            services_dir: settings.services_dir.canonicalize()?,
            cache_dir: settings
                .compiled_cache
                .clone()
                .unwrap_or_else(|| settings.data_dir.join("compiled")),
            default_deadline: settings.request_timeout,
        });
        loader.load_all().await?;
        let watcher = watcher::watch(loader.clone())?;
        recovery::recover_all(&registry).await;
        tokio::spawn(recovery::run(Arc::downgrade(&registry)));
        let node = Node {
            id: settings
                .node_id
                .clone()
                .unwrap_or_else(|| format!("{}:{}", host_name(), settings.listen.port())),
            address: settings.listen.to_string(),
        };
        cluster::join(node.clone(), &registry, &loader, store.clone());
        let traces = match &settings.otlp_endpoint {
            Some(endpoint) => Some(
                Exporter::start(endpoint, &node.id)
                    .with_context(|| format!("cannot export traces to {endpoint}"))?,
            ),
            None => None,
        };
        let operators = Operators::new(settings.admin_token.clone());
        let admin = switchyard_admin::router(Arc::new(Admin {
            registry: registry.clone(),
            loader,
            operators: operators.clone(),
            request_timeout: settings.request_timeout,
            node,
            nodes: store.clone(),
        }));
        let gateway = Arc::new(Gateway {
            registry,
            telemetry,
            max_body_bytes: settings.max_body_bytes,
            request_timeout: settings.request_timeout,
            operators,
            tracer: traces.as_ref().map(Exporter::tracer),
        });
        let router = switchyard_gateway::router(gateway, admin);
        Ok(App {
            router,
            store,
            traces,
            _watcher: watcher,
        })
    }
}

/// Load the services, then serve until interrupted (Ctrl-C or SIGTERM).
///
/// Prints `switchyard listening on http://ADDR` on stdout once the gateway
/// accepts connections, with the actual port when `listen` asks for port 0.
pub async fn serve(mut settings: Settings) -> Result<()> {
    let telemetry = Arc::new(telemetry::Telemetry::install()?);
    // Bound first, so that the node knows its port; connections wait in the
    // backlog until the services are loaded.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    settings.listen = listener.local_addr()?;
    let app = App::load(&settings, telemetry).await?;
    let mut connections = settings.connections;
    connections.max_connections = server::raise_fd_limit(connections.max_connections);
    println!("switchyard listening on http://{}", settings.listen);

    // On a signal: stop accepting, let requests in flight finish, but no
    // longer than the shutdown timeout; then make the store's writes durable.
    server::serve(
        listener,
        app.router.clone(),
        connections,
        shutdown_signal(),
        settings.shutdown_timeout,
    )
    .await;
    app.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Copy the store at `from` into the empty store at `to` (see
/// `switchyard_store::copy`).
pub async fn copy_store(from: &Location, to: &Location) -> Result<switchyard_store::Copied> {
    if let Location::Sqlite(path) = from
        && !path.is_file()
    {
        anyhow::bail!("there is no store at {}", path.display());
    }
    let source = switchyard_store::open(from)
        .await
        .with_context(|| format!("cannot open the store to copy ({})", describe(from)))?;
    let target = switchyard_store::open(to)
        .await
        .with_context(|| format!("cannot open the store to fill ({})", describe(to)))?;
    let copied = switchyard_store::copy(&*source, &*target)
        .await
        .with_context(|| format!("cannot copy into {}", describe(to)))?;
    target.close().await?;
    Ok(copied)
}

/// This machine's name, for the default node id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `location` for a message: a PostgreSQL URL without its password.
fn describe(location: &Location) -> String {
    match location {
        Location::Sqlite(path) => path.display().to_string(),
        Location::Postgres(url) => match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let user = &url[scheme + 3..at];
                let user = user.split(':').next().unwrap_or_default();
                format!("{}{user}{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.clone(),
        },
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

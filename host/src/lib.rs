//! Switchyard runs microservices as WebAssembly components inside one host
//! process and serves them through one HTTP gateway.
//!
//! A request travels straight through the modules, each owning one concept:
//!
//! - [`gateway`]: HTTP in and out; `/<service>/...` and the admin API.
//! - [`registry`]: which version of a service serves a call; activation,
//!   rollback, traffic splits, history.
//! - [`compat`]: whether a version fits the versions of other services.
//! - [`balance`]: which instance serves it; service-to-service forwarding.
//! - [`runtime`]: wasmtime: compiling (and the compiled cache), linking,
//!   instantiating, calling.
//! - [`platform`]: the host side of the imports every service gets.
//! - [`store`]: durable data: the services' key-value data and the
//!   registry's deployment records.
//! - [`loader`]: turning component files and uploads into versions.
//! - [`watcher`]: noticing files added, replaced or removed while serving.
//! - [`telemetry`]: metrics for operators.

pub mod balance;
pub mod compat;
pub mod gateway;
pub mod loader;
pub mod platform;
pub mod registry;
pub mod runtime;
pub mod store;
pub mod telemetry;
pub mod watcher;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

/// Everything `switchyard serve` can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub services_dir: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub admin_token: Option<String>,
    /// After a shutdown signal, how long requests in flight may take to finish.
    pub shutdown_timeout: Duration,
}

/// Load the services, then serve until interrupted (Ctrl-C or SIGTERM).
///
/// Prints `switchyard listening on http://ADDR` on stdout once the gateway
/// accepts connections, with the actual port when `listen` asks for port 0.
pub async fn serve(settings: Settings) -> Result<()> {
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
    let telemetry = Arc::new(telemetry::Telemetry::install()?);
    let store = Arc::new(
        store::SqliteStore::open(&settings.data_dir.join("store.sqlite"))
            .context("cannot open the store")?,
    );
    let runtime = Arc::new(runtime::Runtime::new()?);
    let registry = Arc::new(registry::Registry::new(store.clone()));
    let loader = Arc::new(loader::Loader {
        runtime,
        registry: registry.clone(),
        store: store.clone(),
        // Canonical, so that the watcher's event paths can be matched against it.
        services_dir: settings.services_dir.canonicalize()?,
        cache_dir: settings.data_dir.join("compiled"),
        default_deadline: settings.request_timeout,
    });
    loader.load_all().await?;
    let _watcher = watcher::watch(loader.clone())?;

    let app = gateway::router(Arc::new(gateway::Gateway {
        registry,
        telemetry,
        loader,
        admin_token: settings.admin_token.clone(),
        max_body_bytes: settings.max_body_bytes,
        request_timeout: settings.request_timeout,
    }));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    println!("switchyard listening on http://{}", listener.local_addr()?);

    // On a signal: stop accepting, let requests in flight finish, but no
    // longer than the shutdown timeout; then make the store's writes durable.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping.send(true);
    });
    let deadline = async {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(settings.shutdown_timeout).await;
    };
    tokio::select! {
        served = server => served?,
        () = deadline => tracing::warn!(
            "requests still running after {:?}; closing them",
            settings.shutdown_timeout
        ),
    }
    store.checkpoint().context("cannot flush the store")?;
    tracing::info!("stopped");
    Ok(())
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

//! Switchyard runs microservices as WebAssembly components inside one host
//! process and serves them through one HTTP gateway.
//!
//! A request travels straight through the modules, each owning one concept:
//!
//! - [`gateway`]: HTTP in and out; `/<service>/...` and the admin API.
//! - [`registry`]: which version of a service serves a call.
//! - [`balance`]: which instance serves it; service-to-service forwarding.
//! - [`runtime`]: wasmtime: compiling, linking, instantiating, calling.
//! - [`platform`]: the host side of the imports every service gets.
//! - [`store`]: the durable key-value data behind the platform.
//! - [`loader`]: turning `services/<name>/<version>.wasm` files into versions.

pub mod balance;
pub mod gateway;
pub mod loader;
pub mod platform;
pub mod registry;
pub mod runtime;
pub mod store;

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
    pub pool_size: usize,
    pub request_timeout: Duration,
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
    let store = store::SqliteStore::open(&settings.data_dir.join("store.sqlite"))
        .context("cannot open the key-value store")?;
    let runtime = Arc::new(runtime::Runtime::new()?);
    let registry = Arc::new(registry::Registry::default());
    loader::Loader {
        runtime,
        registry: registry.clone(),
        store: Arc::new(store),
        services_dir: settings.services_dir.clone(),
        pool_size: settings.pool_size,
    }
    .load_all()
    .await?;

    let app = gateway::router(Arc::new(gateway::Gateway {
        registry,
        max_body_bytes: settings.max_body_bytes,
        request_timeout: settings.request_timeout,
    }));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    println!("switchyard listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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

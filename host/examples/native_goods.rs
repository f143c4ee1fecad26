//! The benchmarks' stand-in for the physical limit: `GET /goods/{id}` served
//! natively by axum, doing the same work as the goods service does inside
//! Switchyard (the same SQLite read through the same store, the same JSON
//! decoding and encoding), without WebAssembly or the gateway. And
//! `GET /hello`: `hello, world\n`, the least a server can do.
//!
//! `native_goods --data DIR --listen ADDR`; prints `native listening on http://ADDR`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use serde::{Deserialize, Serialize};
use switchyard_store::{KeyValueStore, Namespace, SqliteStore};

#[derive(Parser)]
struct Args {
    /// A Switchyard data directory (its store.sqlite is read).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// The goods record, as the goods service stores it.
#[derive(Serialize, Deserialize)]
struct Goods {
    id: String,
    name: String,
    price_cents: u64,
    stock: u32,
}

async fn goods(State(store): State<Arc<SqliteStore>>, Path(id): Path<String>) -> Response {
    let ns = Namespace {
        service: "goods".into(),
        bucket: "goods".into(),
    };
    match store.get(&ns, &id).await {
        Ok(Some(bytes)) => match serde_json::from_slice::<Goods>(&bytes) {
            Ok(goods) => axum::Json(goods).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Ok(None) => (StatusCode::NOT_FOUND, "no such goods").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// `GET /goods/{id}` and `GET /hello`, natively, on `store`.
pub fn router(store: Arc<SqliteStore>) -> Router {
    Router::new()
        .route("/goods/{id}", get(goods))
        .route("/hello", get(|| async { "hello, world\n" }))
        .with_state(store)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = Arc::new(SqliteStore::open(&args.data.join("store.sqlite"))?);
    let app = router(store);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("native listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

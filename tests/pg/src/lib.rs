//! For tests: a fresh PostgreSQL database each, created on the server that
//! `SWITCHYARD_TEST_PG` names (default `postgres://postgres@127.0.0.1:5432/test`)
//! and dropped again when the test is done with it, even when it fails.
//!
//! When that server cannot be reached, [`fresh`] says so on stderr and
//! returns `None`, and the test skips; with `SWITCHYARD_REQUIRE_PG=1` (CI)
//! it panics instead, so that a missing server fails the run.

// A helper for tests: it talks to the person running them on stderr.
#![allow(clippy::print_stderr)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::NoTls;

/// The server tests use unless `SWITCHYARD_TEST_PG` says otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of a test's own.
pub struct TestDatabase {
    /// Its URL, for a store or a host's `--store`.
    pub url: String,
    server: String,
    name: String,
}

/// The server's URL, from `SWITCHYARD_TEST_PG` or the default.
pub fn server_url() -> String {
    std::env::var("SWITCHYARD_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// Whether a missing server fails the tests instead of skipping them.
fn required() -> bool {
    std::env::var("SWITCHYARD_REQUIRE_PG").is_ok_and(|v| v == "1")
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A new, empty database, or `None` (the test should return) when the
/// server cannot be reached and is not required.
pub async fn fresh(test: &str) -> Option<TestDatabase> {
    let server = server_url();
    let client = match connect(&server).await {
        Ok(client) => client,
        Err(e) if required() => {
            panic!("PostgreSQL at {server} is unreachable and SWITCHYARD_REQUIRE_PG=1: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: PostgreSQL at {server} is unreachable ({e})");
            return None;
        }
    };
    let name = format!(
        "switchyard_test_{}_{:08x}",
        std::process::id(),
        fastrand::u32(..)
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
    Some(TestDatabase {
        url: with_database(&server, &name),
        server,
        name,
    })
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let server = server_span(url);
    let options = url[server.end..]
        .find('?')
        .map_or("", |i| &url[server.end + i..]);
    format!("{}/{name}{options}", &url[..server.end])
}

/// Where in `url` its server (`host:port`) is: after the scheme and the
/// user, before the database and the options.
fn server_span(url: &str) -> std::ops::Range<usize> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    start..end
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs outside any runtime's async context: a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let client = connect(&server).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("cannot drop the test database {}: {e}", self.name);
        }
    }
}

/// A TCP relay in front of the server, which a test can cut (every
/// connection closed, new ones closed at once) and restore: a PostgreSQL
/// outage without stopping the server other tests use. It can also stall
/// (connections stay open, nothing moves: a server that hangs). It counts
/// the round trips its clients make ([`Proxy::round_trips`]).
pub struct Proxy {
    /// Where the relay listens.
    pub addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    round_trips: Arc<AtomicU64>,
    relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A relay to the server of `url`.
    pub async fn to(url: &str) -> Proxy {
        let upstream = url[server_span(url)].to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let round_trips = Arc::new(AtomicU64::new(0));
        let relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accepting = tokio::spawn({
            let (cut, relays, round_trips) = (cut.clone(), relays.clone(), round_trips.clone());
            let stalled = stalled.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let (upstream, round_trips) = (upstream.clone(), round_trips.clone());
                    let stalled = stalled.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                            // As the client and the server themselves do:
                            // without it every small message waits for the
                            // last one's ACK (40 ms of delayed ACK a round trip).
                            let _ = (client.set_nodelay(true), server.set_nodelay(true));
                            let (client_read, mut client_write) = client.into_split();
                            let (mut server_read, server_write) = server.into_split();
                            let answers = tokio::spawn(async move {
                                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                            });
                            let _ =
                                relay_counting(client_read, server_write, &round_trips, &stalled)
                                    .await;
                            answers.abort();
                        }
                    });
                    relays.lock().unwrap().push(relay);
                }
            }
        });
        Proxy {
            addr,
            cut,
            stalled,
            round_trips,
            relays,
            accepting,
        }
    }

    /// Round trips its clients have made so far: the messages after which
    /// a client waits for the server (`Sync` ending an extended-protocol
    /// exchange, a simple `Query`).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }

    /// `url` with its server replaced by this relay.
    pub fn url(&self, url: &str) -> String {
        let server = server_span(url);
        format!(
            "{}{}{}",
            &url[..server.start],
            self.addr,
            &url[server.end..]
        )
    }

    /// Close every connection, and every new one at once, until restored.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    /// Hold every client message until restored: queries hang, as on a
    /// server that stopped answering.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copy a client's messages to the server, counting round trips: the
/// startup message (untyped, after any SSL or GSS request), then typed
/// messages (a tag byte and a length that counts itself).
async fn relay_counting(
    mut client: tokio::net::tcp::OwnedReadHalf,
    mut server: tokio::net::tcp::OwnedWriteHalf,
    round_trips: &AtomicU64,
    stalled: &AtomicBool,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: u32 = 80_877_103;
    const GSSENC_REQUEST: u32 = 80_877_104;
    loop {
        let len = client.read_u32().await?;
        let mut body = vec![0; (len as usize).saturating_sub(4)];
        client.read_exact(&mut body).await?;
        server.write_u32(len).await?;
        server.write_all(&body).await?;
        let code = body
            .get(..4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        if code != Some(SSL_REQUEST) && code != Some(GSSENC_REQUEST) {
            break;
        }
    }
    loop {
        let tag = client.read_u8().await?;
        let len = client.read_u32().await?;
        let mut body = vec![0; (len as usize).saturating_sub(4)];
        client.read_exact(&mut body).await?;
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if tag == b'S' || tag == b'Q' {
            round_trips.fetch_add(1, Ordering::SeqCst);
        }
        server.write_u8(tag).await?;
        server.write_u32(len).await?;
        server.write_all(&body).await?;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

#[cfg(test)]
mod tests {
    use super::{server_span, with_database};

    #[test]
    fn the_server_is_between_the_user_and_the_database() {
        let server = |url: &'static str| &url[server_span(url)];
        assert_eq!(
            server("postgres://postgres@127.0.0.1:5432/test"),
            "127.0.0.1:5432"
        );
        assert_eq!(server("postgres://u:p@h:1?x=y"), "h:1");
        assert_eq!(server("postgres://h:1/db"), "h:1");
    }

    #[test]
    fn the_database_is_the_last_path_segment() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u@h:1/db?sslmode=disable", "t2"),
            "postgres://u@h:1/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "t3"), "postgres://u@h/t3");
    }
}

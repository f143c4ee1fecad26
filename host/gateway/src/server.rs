//! The listening socket and the connections on it: how many may be open, how
//! long each may take to say what it wants, how long it may sit idle, and how
//! they end on shutdown.
//!
//! A client that connects and sends nothing, or drips a request head one byte
//! at a time, holds a file descriptor and a task for as long as it is let. So:
//!
//! - a request head must be complete within `header_timeout` of its first byte
//!   (for a new connection, of the connection itself);
//! - a connection with no request running and no bytes moving for
//!   `idle_timeout` is closed (this also ends a response stuck on a client that
//!   stopped reading);
//! - at most `max_connections` are open at once; past that, new ones wait in
//!   the kernel's backlog, and the connections being served keep working;
//! - an accept error (out of file descriptors, say) pauses accepting for a few
//!   milliseconds, never longer, and the soft limit on file descriptors is
//!   raised to the hard limit at start-up ([`raise_fd_limit`]).
//!
//! Reading request bodies and running calls are bounded elsewhere, by the
//! request timeout and the services' deadlines. This module knows nothing of
//! what the router does with a request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// How long accepting pauses after an error that is not one connection's own
/// (such as running out of file descriptors): long enough not to spin, short
/// enough that nobody notices.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// File descriptors kept for the host's own use (store, component files,
/// watcher) when the connection cap is fitted under the descriptor limit.
const RESERVED_FDS: u64 = 256;

/// What bounds the connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must be complete within this of its first byte.
    pub header_timeout: Duration,
    /// A connection with no request running and no traffic is closed after this.
    pub idle_timeout: Duration,
    /// Open connections at most; more wait in the backlog.
    pub max_connections: usize,
}

/// Raise the soft limit on open file descriptors to the hard limit, and fit
/// `max_connections` under it. Returns the connection cap to use.
pub fn raise_fd_limit(max_connections: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot raise the limit on open files: {e}");
            match rlimit::getrlimit(rlimit::Resource::NOFILE) {
                Ok((soft, _)) => soft,
                Err(_) => return max_connections,
            }
        }
    };
    let fits = limit.saturating_sub(RESERVED_FDS).max(1);
    if (max_connections as u64) > fits {
        tracing::warn!(
            "at most {fits} connections fit under the limit of {limit} open files; \
             --max-connections {max_connections} is lowered to that"
        );
        return fits as usize;
    }
    max_connections
}

/// Serve `app` on `listener` until `shutdown` completes; then stop accepting,
/// let the requests in flight finish for at most `drain`, and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, stop).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, slots.acquire_many(everyone))
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {drain:?}; closing them");
    }
}

/// Errors that concern one connection only (the client gave up before it was
/// accepted); the next accept is unaffected.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new(std::time::Instant::now()));
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let tracker = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let running = tracker.request_started();
        let read = Arc::new(AtomicBool::new(request.body().is_end_stream()));
        let watched = |inner| WatchedBody {
            inner,
            read: read.clone(),
        };
        let answer = app.clone().oneshot(request.map(|b| Body::new(watched(b))));
        // Boxed, so that the connection can be polled without shutting its
        // socket down, and the socket taken back to close it politely.
        Box::pin(async move {
            let mut response = answer.await;
            drop(running);
            // Answered before the client's body was read (a 401 to an
            // upload, say): the connection cannot carry another request, so
            // the client must not try to reuse it.
            if let Ok(response) = &mut response
                && !read.load(Ordering::Relaxed)
            {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
        })
    });
    let mut connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let mut stopping = false;
    loop {
        // New traffic does not wake this loop, so it looks again at least
        // every header timeout: a head that starts arriving meanwhile is
        // still held to its deadline.
        let next_look = Instant::now() + limits.header_timeout;
        let due = activity
            .due(&limits)
            .map_or(next_look, |due| Instant::from_std(due).min(next_look));
        tokio::select! {
            served = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => {
                match served {
                    Ok(()) => linger(connection.into_parts().io.into_inner().stream).await,
                    Err(e) => tracing::debug!(%peer, "connection ended: {e}"),
                }
                return;
            }
            () = tokio::time::sleep_until(due) => {
                if activity.expired(&limits, std::time::Instant::now()) {
                    tracing::debug!(%peer, "closing a connection that is idle or too slow");
                    return;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                Pin::new(&mut connection).graceful_shutdown();
            }
        }
    }
}

/// How long a closing connection is drained of what the client still sends.
const LINGER: Duration = Duration::from_secs(1);
/// How much is drained at most.
const LINGER_BYTES: usize = 1 << 20;

/// Close a connection the way clients can read: say we are done writing, then
/// read and discard what the client is still sending (the rest of a body
/// answered early, with a 401 say) for a moment. Closing a socket with
/// unread data resets it, and a reset can destroy the answer in flight.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buffer = vec![0u8; 16 << 10];
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while drained < LINGER_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// What a connection is doing, as the watchdog of [`serve_connection`] sees it.
/// Times are milliseconds since the connection was accepted.
struct Activity {
    accepted: std::time::Instant,
    /// When the last byte was read or written.
    last_traffic: AtomicU64,
    /// When the head of the next request began to arrive, plus one (0: it has not).
    head_since: AtomicU64,
    /// Requests handed to the router and not yet answered.
    running: AtomicUsize,
}

impl Activity {
    fn new(accepted: std::time::Instant) -> Activity {
        Activity {
            accepted,
            last_traffic: AtomicU64::new(0),
            // A new connection owes its first request head from the start.
            head_since: AtomicU64::new(1),
            running: AtomicUsize::new(0),
        }
    }

    fn ms(&self, now: std::time::Instant) -> u64 {
        now.saturating_duration_since(self.accepted).as_millis() as u64
    }

    fn traffic(&self, read: bool, now: std::time::Instant) {
        let now = self.ms(now);
        self.last_traffic.store(now, Ordering::Relaxed);
        if read && self.running.load(Ordering::Relaxed) == 0 {
            let _ =
                self.head_since
                    .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn request_started(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        Running(self.clone())
    }

    /// When the connection must be closed unless something changes; `None`
    /// while a request runs.
    fn due(&self, limits: &ConnectionLimits) -> Option<std::time::Instant> {
        if self.running.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let at = |ms: u64| self.accepted + Duration::from_millis(ms);
        let idle_until = at(self.last_traffic.load(Ordering::Relaxed)) + limits.idle_timeout;
        Some(match self.head_since.load(Ordering::Relaxed) {
            0 => idle_until,
            since => (at(since - 1) + limits.header_timeout).min(idle_until),
        })
    }

    /// Whether the connection has overstayed at `now`: a head too slow to
    /// arrive, or nothing running and nothing moving for too long.
    fn expired(&self, limits: &ConnectionLimits, now: std::time::Instant) -> bool {
        self.due(limits).is_some_and(|due| due <= now)
    }
}

/// A request being answered; dropped when the router has answered it.
struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.traffic(false, std::time::Instant::now());
    }
}

/// A request body that notes when it has been read to its end.
struct WatchedBody<B> {
    inner: B,
    read: Arc<AtomicBool>,
}

impl<B: http_body::Body + Unpin> http_body::Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that notes every byte that moves on it.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.traffic(true, std::time::Instant::now());
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.traffic(false, std::time::Instant::now());
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.traffic(false, std::time::Instant::now());
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
    };

    fn at(activity: &Activity, secs: u64) -> std::time::Instant {
        activity.accepted + Duration::from_secs(secs)
    }

    #[test]
    fn a_new_connection_owes_its_head_within_the_header_timeout() {
        let activity = Activity::new(std::time::Instant::now());
        assert!(!activity.expired(&LIMITS, at(&activity, 9)));
        assert!(activity.expired(&LIMITS, at(&activity, 11)));
    }

    #[test]
    fn a_dripping_head_expires_though_bytes_keep_coming() {
        let activity = Activity::new(std::time::Instant::now());
        for second in 1..=11 {
            activity.traffic(true, at(&activity, second));
        }
        assert!(activity.expired(&LIMITS, at(&activity, 11)));
    }

    #[test]
    fn between_requests_the_idle_timeout_applies_and_never_while_one_runs() {
        let activity = Arc::new(Activity::new(std::time::Instant::now()));
        activity.traffic(true, at(&activity, 1));
        let running = activity.request_started();
        assert!(
            !activity.expired(&LIMITS, at(&activity, 120)),
            "a long request is not idle"
        );
        drop(running);
        // The answer went out just now; the next head has not begun.
        let answered = std::time::Instant::now();
        let later = |secs| answered + Duration::from_secs(secs);
        assert!(!activity.expired(&LIMITS, later(30)), "idle for 30 s of 60");
        assert!(activity.expired(&LIMITS, later(61)));
        // A head that begins arriving must then be complete within 10 s.
        activity.traffic(true, later(20));
        assert!(!activity.expired(&LIMITS, later(29)));
        assert!(activity.expired(&LIMITS, later(31)));
    }
}

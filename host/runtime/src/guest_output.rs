//! Guests' stdout and stderr (a Python traceback, a `console.log`, a Rust
//! panic message), forwarded to the host's log line by line, tagged with the
//! service, version and stream: stdout at info, stderr at warn.
//!
//! Bounded like `wasi:logging`: a line is cut at [`MAX_LOG_MESSAGE_BYTES`],
//! and one call may write [`LOG_BYTES_PER_CALL`] across both streams; past
//! that, output is dropped (and counted in `switchyard_log_dropped_total`)
//! until the next call. Writing never makes a guest wait.
//!
//! Each line is logged in the span of the call that wrote it (the request's,
//! with its id): wasmtime writes the streams from tasks of its own, outside
//! that span, so the call's span is kept here when the call begins.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use switchyard_platform::{LOG_BYTES_PER_CALL, MAX_LOG_MESSAGE_BYTES};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// What one call may still write to stdout and stderr together, and the
/// span its lines go in; both reset when a call begins.
#[derive(Clone)]
pub struct OutputBudget(Arc<AtomicUsize>, Arc<Mutex<tracing::Span>>);

impl Default for OutputBudget {
    fn default() -> Self {
        OutputBudget(Arc::default(), Arc::new(Mutex::new(tracing::Span::none())))
    }
}

impl OutputBudget {
    /// A call begins, in `span`.
    pub fn refill(&self, span: tracing::Span) {
        self.0.store(LOG_BYTES_PER_CALL, Ordering::Relaxed);
        *self.1.lock().unwrap_or_else(|p| p.into_inner()) = span;
    }

    /// The span of the call in progress (or the last one).
    fn span(&self) -> tracing::Span {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Take `n` bytes; false when fewer are left.
    fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// One of a guest instance's output streams.
pub struct GuestOutput(Arc<Mutex<Lines>>);

struct Lines {
    service: String,
    version: String,
    stream: &'static str,
    /// The line being written, up to its newline.
    pending: Vec<u8>,
    budget: OutputBudget,
}

impl GuestOutput {
    /// `stream` is `"stdout"` or `"stderr"`.
    pub fn new(service: &str, version: &str, stream: &'static str, budget: OutputBudget) -> Self {
        GuestOutput(Arc::new(Mutex::new(Lines {
            service: service.to_string(),
            version: version.to_string(),
            stream,
            pending: Vec::new(),
            budget,
        })))
    }
}

impl Lines {
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes);
    }

    /// Part of the current line, as much as a line may hold.
    fn keep(&mut self, part: &[u8]) {
        let room = MAX_LOG_MESSAGE_BYTES.saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(&part[..part.len().min(room)]);
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        if !self.budget.take(line.len().max(1)) {
            switchyard_metrics::log_dropped(&self.service, &self.version);
            return;
        }
        let (service, version, stream) = (&self.service, &self.version, self.stream);
        let _call = self.budget.span().entered();
        if stream == "stderr" {
            tracing::warn!(target: "guest", %service, %version, stream, "{line}");
        } else {
            tracing::info!(target: "guest", %service, %version, stream, "{line}");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Writer(self.0.clone()))
    }
}

struct Writer(Arc<Mutex<Lines>>);

impl Writer {
    fn lines(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.lines().write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut lines = self.lines();
        if !lines.pending.is_empty() {
            lines.emit();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(budget: &OutputBudget) -> Lines {
        Lines {
            service: "s".into(),
            version: "1.0.0".into(),
            stream: "stdout",
            pending: Vec::new(),
            budget: budget.clone(),
        }
    }

    #[test]
    fn lines_are_cut_and_the_budget_runs_out() {
        let budget = OutputBudget::default();
        budget.refill(tracing::Span::none());
        let mut out = lines(&budget);
        out.write(&vec![b'a'; MAX_LOG_MESSAGE_BYTES * 3]);
        assert_eq!(out.pending.len(), MAX_LOG_MESSAGE_BYTES);
        out.write(b"\nnext");
        assert_eq!(out.pending, b"next");
        assert_eq!(
            budget.0.load(Ordering::Relaxed),
            LOG_BYTES_PER_CALL - MAX_LOG_MESSAGE_BYTES
        );
        // Past the budget, lines are dropped and take nothing.
        for _ in 0..LOG_BYTES_PER_CALL / MAX_LOG_MESSAGE_BYTES + 2 {
            out.write(&vec![b'b'; MAX_LOG_MESSAGE_BYTES]);
            out.write(b"\n");
        }
        assert!(budget.0.load(Ordering::Relaxed) < MAX_LOG_MESSAGE_BYTES);
        budget.refill(tracing::Span::none());
        assert!(budget.take(MAX_LOG_MESSAGE_BYTES));
    }
}

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
//!
//! The end of what a call wrote to stderr ([`GUEST_ERROR_BYTES`]) is kept
//! too, dropped or not: when the call traps, it is the guest's own account
//! of why (a panic message, a traceback, an exception and its stack).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use switchyard_platform::{LOG_BYTES_PER_CALL, MAX_LOG_MESSAGE_BYTES};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// How much of the end of a call's stderr is kept to explain its failure:
/// enough for a Python traceback's last frames and its exception, or a
/// JavaScript exception with its stack.
pub const GUEST_ERROR_BYTES: usize = 4096;

/// One call's output as a whole: what it may still write to stdout and
/// stderr together, the span its lines go in, and the end of its stderr;
/// all reset when a call begins.
#[derive(Clone)]
pub struct CallOutput(Arc<AtomicUsize>, Arc<Mutex<Call>>);

struct Call {
    span: tracing::Span,
    /// The end of its stderr: at most twice [`GUEST_ERROR_BYTES`], cut back
    /// to the last [`GUEST_ERROR_BYTES`] when read.
    stderr: Vec<u8>,
    /// Whether the start of its stderr is gone.
    cut: bool,
}

impl Default for CallOutput {
    fn default() -> Self {
        let call = Call {
            span: tracing::Span::none(),
            stderr: Vec::new(),
            cut: false,
        };
        CallOutput(Arc::default(), Arc::new(Mutex::new(call)))
    }
}

impl CallOutput {
    /// A call begins, in `span`.
    pub fn refill(&self, span: tracing::Span) {
        self.0.store(LOG_BYTES_PER_CALL, Ordering::Relaxed);
        let mut call = self.call();
        call.span = span;
        call.stderr.clear();
        call.cut = false;
    }

    fn call(&self) -> std::sync::MutexGuard<'_, Call> {
        self.1.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The span of the call in progress (or the last one).
    fn span(&self) -> tracing::Span {
        self.call().span.clone()
    }

    /// Take `n` bytes; false when fewer are left.
    fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    /// Keep `bytes` the call wrote to stderr, as the end of what it wrote.
    fn said(&self, bytes: &[u8]) {
        let mut call = self.call();
        let kept = &bytes[bytes.len().saturating_sub(GUEST_ERROR_BYTES)..];
        call.cut |= kept.len() < bytes.len();
        call.stderr.extend_from_slice(kept);
        if call.stderr.len() > 2 * GUEST_ERROR_BYTES {
            let gone = call.stderr.len() - GUEST_ERROR_BYTES;
            call.stderr.drain(..gone);
            call.cut = true;
        }
    }

    /// The end of what the call in progress (or the last) wrote to stderr,
    /// at most [`GUEST_ERROR_BYTES`] and starting at a line where it can;
    /// none when it wrote nothing there but blank space.
    pub fn stderr(&self) -> Option<String> {
        let call = self.call();
        let start = call.stderr.len().saturating_sub(GUEST_ERROR_BYTES);
        let mut end = &call.stderr[start..];
        if call.cut || start > 0 {
            // Cut: start at the first whole line, if one begins soon.
            if let Some(newline) = end.iter().take(256).position(|&b| b == b'\n') {
                end = &end[newline + 1..];
            }
        }
        let text = String::from_utf8_lossy(end);
        // Indentation is meaningful (a traceback's frames): only blank
        // lines are trimmed at the start.
        let text = text.trim_end().trim_start_matches(['\n', '\r']);
        (!text.is_empty()).then(|| text.to_string())
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
    budget: CallOutput,
}

impl GuestOutput {
    /// `stream` is `"stdout"` or `"stderr"`.
    pub fn new(service: &str, version: &str, stream: &'static str, budget: CallOutput) -> Self {
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
        if self.stream == "stderr" {
            self.budget.said(bytes);
        }
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

    fn lines(budget: &CallOutput) -> Lines {
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
        let budget = CallOutput::default();
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

    #[test]
    fn the_end_of_stderr_is_kept_for_the_call_that_wrote_it() {
        let output = CallOutput::default();
        output.refill(tracing::Span::none());
        let mut stdout = lines(&output);
        let mut stderr = Lines {
            stream: "stderr",
            ..lines(&output)
        };
        stdout.write(b"not an error\n");
        assert_eq!(output.stderr(), None);
        stderr.write(b"Traceback (most recent call last):\n");
        for frame in 0..1000 {
            stderr.write(format!("  frame {frame}\n").as_bytes());
        }
        stderr.write(b"AttributeError: 'NoneType' object has no attribute 'x'\n");
        let said = output.stderr().unwrap();
        assert!(said.len() <= GUEST_ERROR_BYTES, "{}", said.len());
        assert!(said.starts_with("  frame "), "starts at a line: {said:.40}");
        assert!(said.ends_with("has no attribute 'x'"), "{said}");
        assert!(!said.contains("Traceback"), "the start was cut");
        // Even a write far larger than what is kept keeps its end.
        stderr.write(&vec![b'z'; 5 * GUEST_ERROR_BYTES]);
        stderr.write(b"\nthe end\n");
        assert!(output.stderr().unwrap().ends_with("zzz\nthe end"));
        // The next call starts afresh.
        output.refill(tracing::Span::none());
        assert_eq!(output.stderr(), None);
        stderr.write(b"short\n");
        assert_eq!(output.stderr().as_deref(), Some("short"));
    }
}

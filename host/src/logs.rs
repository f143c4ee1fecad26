//! Where the host's log lines go: stderr, in batches.
//!
//! A busy host writes an access-log line per request. Written where it is
//! made, each line costs a `write(2)` on the request's path; handed to a
//! writer thread line by line (tracing-appender's `non_blocking`), each
//! wakes that thread, and on a small machine the wake-ups cost as much as the
//! writes (measured in `make bench`, hello: 11.8 µs and 10.1 µs of CPU per
//! request). So lines at `info` and below are appended to a buffer, which a
//! thread of its own writes out every [`FLUSH_EVERY`], or sooner once it
//! holds [`HIGH_WATER`] bytes. Warnings and errors are written at once,
//! after every line before them: an operator sees trouble as it happens.
//!
//! This must never drop a line, nor let the buffer grow without bound: past
//! [`MAX_PENDING`] bytes, the line's writer writes the buffer out itself.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a line at `info` may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this full is written out without waiting for the interval.
pub const HIGH_WATER: usize = 256 << 10;
/// A buffer this full is written out by whoever adds to it.
pub const MAX_PENDING: usize = 8 << 20;

/// Log to stderr, lines as JSON if `json` else text, filtered by `RUST_LOG`
/// (default: `info`, wasmtime's own at `warn`). Keep the guard until exit:
/// dropping it writes out what is buffered.
pub fn init(json: bool) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into());
    let (writer, guard) = Batched::start(Box::new(io::stderr()));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours for people at a terminal, not escape codes in files.
        .with_ansi(io::stderr().is_terminal())
        .with_writer(writer);
    if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.init();
    }
    guard
}

/// Log lines, batched on their way to one output.
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Where lines go. Taken while `pending` is held, so that batches go out
    /// in the order they were cut.
    out: Mutex<Box<dyn Write + Send>>,
    flusher: OnceLock<thread::Thread>,
    stopping: AtomicBool,
}

impl Shared {
    fn lock_pending(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write out the lines in `pending` (its lock held by the caller).
    fn write_out(&self, mut pending: MutexGuard<'_, Vec<u8>>) {
        if pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut *pending);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        drop(pending);
        // Nowhere to report a failing stderr; the lines are lost with it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
    }
}

impl Batched {
    /// Batch lines to `out`, written by a thread of its own until the guard
    /// is dropped.
    pub fn start(out: Box<dyn Write + Send>) -> (Batched, LogGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(HIGH_WATER)),
            out: Mutex::new(out),
            flusher: OnceLock::new(),
            stopping: AtomicBool::new(false),
        });
        let flushing = shared.clone();
        let flusher = thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                loop {
                    thread::park_timeout(FLUSH_EVERY);
                    let stopping = flushing.stopping.load(Ordering::Acquire);
                    flushing.write_out(flushing.lock_pending());
                    if stopping {
                        return;
                    }
                }
            })
            .expect("a thread for the log writer");
        let _ = shared.flusher.set(flusher.thread().clone());
        let guard = LogGuard {
            shared: shared.clone(),
            flusher: Some(flusher),
        };
        (Batched { shared }, guard)
    }
}

/// Writes out what is buffered when dropped, and stops the writer thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            let _ = flusher.join();
        }
    }
}

/// One log line's way into the buffer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    /// Written out at once (warnings and errors), with everything before it.
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock_pending();
        pending.extend_from_slice(line);
        if self.urgent || pending.len() >= MAX_PENDING {
            self.shared.write_out(pending);
        } else if pending.len() >= HIGH_WATER
            && let Some(flusher) = self.shared.flusher.get()
        {
            flusher.unpark();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
            // Levels order by verbosity: ERROR < WARN < INFO.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An output the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn write(writer: &Batched, urgent: bool, line: &str) {
        let mut writer = LineWriter {
            shared: &writer.shared,
            urgent,
        };
        writer.write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn info_lines_wait_for_the_interval_and_a_warning_takes_them_along() {
        let out = Captured::default();
        let (writer, _guard) = Batched::start(Box::new(out.clone()));
        let logs = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(logs, || {
            tracing::info!("served 1");
            tracing::info!("served 2");
            tracing::warn!("trouble");
            assert_eq!(
                out.text(),
                " INFO switchyard::logs::tests: served 1\n \
                 INFO switchyard::logs::tests: served 2\n \
                 WARN switchyard::logs::tests: trouble\n"
            );
            tracing::info!("served 3");
        });
        let since = Instant::now();
        while !out.text().ends_with("served 3\n") {
            assert!(since.elapsed() < Duration::from_secs(5), "never written");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn dropping_the_guard_writes_out_every_line_in_order() {
        let out = Captured::default();
        let (writer, guard) = Batched::start(Box::new(out.clone()));
        let lines: Vec<String> = (0..10_000).map(|i| format!("line {i}\n")).collect();
        for line in &lines {
            write(&writer, false, line);
        }
        drop(guard);
        assert_eq!(out.text(), lines.concat());
    }

    #[test]
    fn a_writer_that_falls_behind_holds_at_most_the_cap() {
        let out = Captured::default();
        let (writer, _guard) = Batched::start(Box::new(out.clone()));
        let line = "x".repeat(1 << 20) + "\n";
        for _ in 0..MAX_PENDING.div_ceil(line.len()) + 1 {
            write(&writer, false, &line);
            assert!(writer.shared.lock_pending().len() < MAX_PENDING);
        }
    }
}

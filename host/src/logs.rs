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
//! The access log's line itself is made here too (`AccessLines`, the same
//! bytes the subscriber would write): formatting it the subscriber's way
//! cost more than the rest of a request's logging.
//!
//! This must never drop a line, nor let the buffer grow without bound: past
//! [`MAX_PENDING`] bytes, the line's writer writes the buffer out itself.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use switchyard_gateway::access_log::{self, Served};
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
    // Colours for people at a terminal, not escape codes in files.
    let ansi = io::stderr().is_terminal();
    if !ansi {
        access_log::install(Box::new(AccessLines {
            shared: writer.shared.clone(),
            json,
        }));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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

    /// Add `line` to the buffer; write the buffer out now if the line is
    /// `urgent` or the buffer full, else wake the writer if it is filling up.
    fn add(&self, line: &[u8], urgent: bool) {
        let mut pending = self.lock_pending();
        pending.extend_from_slice(line);
        if urgent || pending.len() >= MAX_PENDING {
            self.write_out(pending);
        } else if pending.len() >= HIGH_WATER
            && let Some(flusher) = self.flusher.get()
        {
            flusher.unpark();
        }
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

/// The access log's lines, formatted here as `tracing_subscriber::fmt`
/// formats the `served` event without colours (text or JSON), which costs a
/// quarter of what the subscriber spends on it; and batched with the other
/// lines. See `switchyard_gateway::access_log`.
struct AccessLines {
    shared: Arc<Shared>,
    json: bool,
}

impl access_log::Writer for AccessLines {
    fn write(&self, served: &Served<'_>) {
        let mut line = Vec::with_capacity(256);
        let written = if self.json {
            json_line(&mut line, served)
        } else {
            text_line(&mut line, served)
        };
        // Writing to memory fails only if a value's formatting does, which
        // leaves the line incomplete: better none than a garbled one.
        if written.is_ok() {
            self.shared.add(&line, false);
        }
    }
}

/// Now, as the subscriber's lines show it: `2026-11-28T05:35:57.952063Z`
/// (humantime writes it in one go; the subscriber's own clock, through
/// `fmt`, cost twice the rest of the line).
fn timestamp() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_micros(std::time::SystemTime::now())
}

/// `2026-11-28T05:35:57.952063Z  INFO request{id="0fd4…"}: switchyard_gateway:
/// served method=GET path="/hello/hello" service="hello" version="1.0.0"
/// status=200 latency_ms=0.05`: strings as Rust's `Debug` quotes them.
fn text_line(line: &mut Vec<u8>, s: &Served<'_>) -> io::Result<()> {
    write!(line, "{}", timestamp())?;
    line.extend_from_slice(b"  INFO request{id=");
    debug_str(line, s.id)?;
    line.extend_from_slice(b"}: ");
    line.extend_from_slice(access_log::TARGET.as_bytes());
    line.extend_from_slice(b": served method=");
    line.extend_from_slice(s.method.as_str().as_bytes());
    line.extend_from_slice(b" path=");
    debug_str(line, s.path)?;
    if let Some(service) = s.service {
        line.extend_from_slice(b" service=");
        debug_str(line, service)?;
    }
    if let Some(version) = s.version {
        line.extend_from_slice(b" version=");
        debug_str(line, version)?;
    }
    line.extend_from_slice(b" status=");
    line.extend_from_slice(s.status.as_str().as_bytes());
    line.extend_from_slice(b" latency_ms=");
    latency_ms(line, s)?;
    line.push(b'\n');
    Ok(())
}

/// The same as one JSON object (`--log-format json`), fields in the
/// subscriber's order.
fn json_line(line: &mut Vec<u8>, s: &Served<'_>) -> io::Result<()> {
    let string = |line: &mut Vec<u8>, text: &str| serde_json::to_writer(&mut *line, text);
    write!(line, r#"{{"timestamp":"{}""#, timestamp())?;
    line.extend_from_slice(br#","level":"INFO","fields":{"message":"served","method":"#);
    string(line, s.method.as_str())?;
    line.extend_from_slice(br#","path":"#);
    string(line, s.path)?;
    if let Some(service) = s.service {
        line.extend_from_slice(br#","service":"#);
        string(line, service)?;
    }
    if let Some(version) = s.version {
        line.extend_from_slice(br#","version":"#);
        string(line, version)?;
    }
    line.extend_from_slice(br#","status":"#);
    line.extend_from_slice(s.status.as_str().as_bytes());
    line.extend_from_slice(br#","latency_ms":"#);
    latency_ms(line, s)?;
    line.extend_from_slice(br#"},"target":""#);
    line.extend_from_slice(access_log::TARGET.as_bytes());
    line.extend_from_slice(br#"","span":{"id":"#);
    string(line, s.id)?;
    line.extend_from_slice(b",\"name\":\"request\"}}\n");
    Ok(())
}

/// `text` as `{:?}` writes it; without `fmt` when nothing needs escaping.
fn debug_str(line: &mut Vec<u8>, text: &str) -> io::Result<()> {
    if text
        .bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        line.push(b'"');
        line.extend_from_slice(text.as_bytes());
        line.push(b'"');
        Ok(())
    } else {
        write!(line, "{text:?}")
    }
}

/// The latency in milliseconds as `{:?}` and JSON write the `f64` (the
/// shortest form: `0.17`, `2000.0`), without formatting a float.
fn latency_ms(line: &mut Vec<u8>, s: &Served<'_>) -> io::Result<()> {
    let micros = s.latency.as_micros();
    write!(line, "{}.{:03}", micros / 1000, micros % 1000)?;
    while line.ends_with(b"0") && !line.ends_with(b".0") {
        line.pop();
    }
    Ok(())
}

/// One log line's way into the buffer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    /// Written out at once (warnings and errors), with everything before it.
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.shared.add(line, self.urgent);
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

    use axum::http::StatusCode;

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

    /// What the subscriber writes for `served`, and what `AccessLines`
    /// writes, each with its timestamp cut off.
    fn both_ways(served: &Served<'_>, json: bool) -> (String, String) {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer({
            let out = out.clone();
            move || out.clone()
        });
        let event = || {
            access_log::request_span(served.id).in_scope(|| access_log::event(served));
        };
        if json {
            let logs = subscriber
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish();
            tracing::subscriber::with_default(logs, event);
        } else {
            tracing::subscriber::with_default(subscriber.finish(), event);
        }
        let mut line = Vec::new();
        if json {
            json_line(&mut line, served).unwrap();
        } else {
            text_line(&mut line, served).unwrap();
        }
        // The first digits are the time: `2026-11-28T05:35:57.952063Z`.
        let without_time = |line: String| {
            let at = line.find(|c: char| c.is_ascii_digit()).unwrap();
            assert_eq!(line.as_bytes()[at + 26], b'Z', "{line}");
            format!("{}<time>{}", &line[..at], &line[at + 27..])
        };
        (
            without_time(out.text()),
            without_time(String::from_utf8(line).unwrap()),
        )
    }

    #[test]
    fn access_lines_are_the_lines_the_subscriber_writes() {
        let get = axum::http::Method::GET;
        let post = axum::http::Method::POST;
        let answered = Served {
            id: "0fd4e5aad9f4b021ab8c6538e7f2b618",
            method: &get,
            path: "/hello/hello",
            service: Some("hello"),
            version: Some("1.0.0-beta.1+build"),
            status: StatusCode::OK,
            latency: Duration::from_micros(173),
        };
        let odd = Served {
            id: r#"a"b\c{}'"#,
            method: &post,
            path: "/n%22o/%E2%9C%93?",
            service: None,
            version: None,
            status: StatusCode::NOT_FOUND,
            latency: Duration::from_secs(2),
        };
        let unprintable = Served {
            id: "tab\there é",
            ..odd
        };
        let mut cases = vec![answered, odd, unprintable];
        for micros in [0, 1, 10, 100, 120, 1_000, 1_500, 999_999, 86_400_000_000] {
            cases.push(Served {
                latency: Duration::from_micros(micros),
                ..answered
            });
        }
        for served in cases {
            for json in [false, true] {
                let (subscriber, ours) = both_ways(&served, json);
                assert_eq!(ours, subscriber, "json: {json}");
            }
        }
        // The comparison has something to compare.
        let (text, _) = both_ways(&answered, false);
        assert!(
            text.contains(r#"<time>  INFO request{id="0fd4e5aad9f4b021ab8c6538e7f2b618"}: switchyard_gateway: served method=GET path="/hello/hello" service="hello""#),
            "{text}"
        );
    }
}

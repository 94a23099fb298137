//! Logging and tracing set-up: human or JSON lines on stderr, filtered by `RUST_LOG` or the
//! config's `log.level`. Spans carry `job.id`, `step` and `attempt` fields.
//!
//! **Logging never stops the service.** Lines go through a bounded queue to one writer thread;
//! a full queue (a stderr pipe nobody reads) or a failed write (a full disk, a closed pipe) drops
//! the line and counts it (`lectern_log_dropped_total`), instead of blocking a request, panicking
//! (`eprintln!` does on a broken stderr) or aborting. Panics are logged through the same queue.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogFormat, LogOptions};

/// Lines waiting for the writer thread; beyond this, new lines are dropped (and counted).
const QUEUE_LINES: usize = 8192;

static DROPPED: AtomicU64 = AtomicU64::new(0);
static SINK: OnceLock<SyncSender<Msg>> = OnceLock::new();

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// Log lines dropped so far because stderr could not take them.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Writes `bytes` to stderr now (the writer thread's job, and the fallback before it exists);
/// a failure is counted, never raised.
fn write_stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    if err.write_all(bytes).and_then(|_| err.flush()).is_err() {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn writer_thread(rx: Receiver<Msg>) {
    for msg in rx {
        match msg {
            Msg::Line(line) => write_stderr(&line),
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

/// The queue to the writer thread, started on first use.
fn sink() -> &'static SyncSender<Msg> {
    SINK.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let spawned = std::thread::Builder::new().name("lectern-log".into()).spawn(move || writer_thread(rx));
        if spawned.is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        tx
    })
}

/// Hands one line to the writer thread, or drops it (counted) when the queue is full.
fn emit(line: Vec<u8>) {
    match sink().try_send(Msg::Line(line)) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits (at most `timeout`) until the lines queued so far were written or dropped: call before
/// the process exits so its last words are not lost.
pub fn flush(timeout: Duration) {
    let Some(tx) = SINK.get() else { return };
    let (ack, done) = sync_channel(1);
    if tx.try_send(Msg::Flush(ack)).is_ok() {
        let _ = done.recv_timeout(timeout);
    }
}

/// One log event being formatted; handed to the queue whole when dropped.
pub struct LineWriter {
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            emit(std::mem::take(&mut self.buf));
        }
    }
}

/// The subscriber's writer: never blocks, never fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeStderr;

impl<'a> MakeWriter<'a> for SafeStderr {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { buf: Vec::with_capacity(256) }
    }
}

/// Installs the global subscriber (once; later calls are ignored) and a panic hook that logs
/// through it.
pub fn init(opts: &LogOptions) {
    // ONNX Runtime logs every session option at info: keep it to warnings unless asked for.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&opts.level))
        .add_directive("ort=warn".parse().expect("a valid directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(SafeStderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    let _ = match opts.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    install_panic_hook();
}

/// Panics are logged as events (so they reach JSON logs and never write to a broken stderr
/// directly). The hook itself must not panic: it only formats and queues.
fn install_panic_hook() {
    static ONCE: Mutex<bool> = Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    *done = true;
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(%thread, %location, panic = %message, "panicked");
    }));
}

/// Writes a line for a person to stderr (CLI errors, progress): never panics, never blocks on a
/// queue. Before the subscriber exists it writes directly.
pub fn eprint_line(line: &str) {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    if SINK.get().is_some() {
        emit(bytes);
    } else {
        write_stderr(&bytes);
    }
}

/// The W3C trace id of a job (the 32 hex digits of its UUIDv7 id; a hash for other ids) and a span
/// id for one attempt of one of its steps. Logs (`log.format = "json"`) carry both on every line of
/// a step attempt, so a collector can rebuild one trace per job; webhooks carry `traceparent`.
pub fn trace_ids(job_id: &str, step: &str, attempt: u32) -> (String, String) {
    use sha2::{Digest, Sha256};
    let hex = job_id.rsplit('_').next().unwrap_or(job_id);
    let trace = if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex.to_ascii_lowercase()
    } else {
        hex::encode(&Sha256::digest(job_id.as_bytes())[..16])
    };
    let span = hex::encode(&Sha256::digest(format!("{job_id}/{step}/{attempt}").as_bytes())[..8]);
    (trace, span)
}

/// The `traceparent` header (W3C Trace Context) of a job's step attempt.
pub fn traceparent(job_id: &str, step: &str, attempt: u32) -> String {
    let (trace, span) = trace_ids(job_id, step, attempt);
    format!("00-{trace}-{span}-01")
}

//! Logging and tracing set-up: human or JSON lines on stderr, filtered by `RUST_LOG` or the
//! config's `log.level`. Spans carry `job.id`, `step` and `attempt` fields.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogOptions};

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(opts: &LogOptions) {
    // ONNX Runtime logs every session option at info: keep it to warnings unless asked for.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&opts.level))
        .add_directive("ort=warn".parse().expect("a valid directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match opts.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
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

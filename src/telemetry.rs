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

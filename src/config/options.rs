//! The option sections of [`super::Config`], one struct per `[section]`, each with its defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct DataOptions {
    /// Where the journal (SQLite), media files and indexes live.
    pub dir: PathBuf,
    /// `/readyz` answers 503 when the data dir's filesystem has fewer free bytes than this.
    pub min_free_bytes: u64,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self { dir: PathBuf::from("./data"), min_free_bytes: 512 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct HttpOptions {
    /// Listen address.
    pub addr: String,
    /// How long a playback URL of a `signed` media stays valid.
    #[serde(with = "humantime_serde")]
    pub playback_token_ttl: Duration,
    /// Requests per second one tenant may make (token bucket refill rate); 0: no limit.
    pub rate_per_tenant: f64,
    /// Burst size of the per-tenant token bucket.
    pub burst_per_tenant: u32,
    /// Uploads one tenant may stream at once (beyond: 429).
    pub uploads_per_tenant: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            playback_token_ttl: Duration::from_secs(24 * 3600),
            rate_per_tenant: 50.0,
            burst_per_tenant: 200,
            uploads_per_tenant: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ModelsOptions {
    /// Where fetched models live (`lectern models fetch` fills it).
    pub dir: PathBuf,
    /// Transcribe and index every upload (needs the models). `false` runs only probe + transcode.
    pub speech: bool,
    /// Load every model when `serve` starts, failing at once when one is missing or corrupt
    /// (otherwise on first use, failing the step with `model_missing` / `model_invalid`).
    pub preload: bool,
    /// The Whisper model: `tiny.en` (fp32) or `tiny.en-int8` (int8 weights, faster; the default for
    /// a 2-vCPU node), or the multilingual `base` / `base-int8` for accuracy (fetched with
    /// `LECTERN_MODELS_EXTRA=whisper-base lectern models fetch`).
    pub asr: String,
    /// Threads of one Whisper inference.
    pub asr_threads: usize,
    /// Threads of one embedding batch.
    pub embed_threads: usize,
    /// Let ONNX Runtime's intra-op threads busy-wait between operators. Off by default: on 2 vCPU
    /// with transcode beside it, spinning cost 13–50 % more CPU for no faster transcription.
    pub intra_op_spinning: bool,
}

impl Default for ModelsOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./models/cache"),
            speech: true,
            preload: true,
            asr: "tiny.en-int8".into(),
            asr_threads: 2,
            embed_threads: 1,
            intra_op_spinning: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AdminOptions {
    /// The operator's bearer key.
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WebhookOptions {
    /// Hosts or CIDRs webhooks may reach despite the private-address guard (comma-separated in env).
    #[serde(deserialize_with = "list_or_csv")]
    pub allow: Vec<String>,
    /// Delay before the second attempt; each later one waits 4× longer (±20 % jitter).
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// The longest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts before a delivery is given up (`exhausted`).
    pub max_attempts: u32,
    /// Time limit of one attempt (connect + answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LogOptions {
    pub format: LogFormat,
    /// A tracing filter (`info`, `lectern=debug,actix=warn`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct UploadOptions {
    /// The largest upload accepted, in bytes (413 beyond).
    pub max_bytes: u64,
    /// Uploads streaming at once; more are refused with 503 and `Retry-After`.
    pub max_in_flight: usize,
    /// An upload body that sends nothing for this long is cut off (408) and its slot freed; a
    /// tus PATCH keeps what arrived (fsynced), so the client resumes from there.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The slowest body accepted, in bytes per second, averaged over each `idle-timeout` window
    /// (a client trickling bytes to hold a slot is cut off with 408); 0: no floor.
    pub min_rate: u64,
    /// A resumable (tus) upload not finished within this long expires (`Upload-Expires`); the
    /// sweeper then removes it, as it does finished uploads' staging files after this long.
    #[serde(with = "humantime_serde")]
    pub expiry: Duration,
    /// Resumable uploads one tenant may have open (created, not finished or expired) at once.
    pub open_per_tenant: usize,
    /// Bytes one tenant's open resumable uploads may declare (`Upload-Length`) in all.
    pub declared_bytes_per_tenant: u64,
    /// How often the sweeper removes expired uploads and orphaned staging files (it also runs at
    /// start).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_in_flight: 8,
            idle_timeout: Duration::from_secs(30),
            min_rate: 1024,
            expiry: Duration::from_secs(24 * 3600),
            open_per_tenant: 16,
            declared_bytes_per_tenant: 16 * 1024 * 1024 * 1024,
            sweep_interval: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct TranscodeOptions {
    /// Sources longer than this measure their loudness on evenly spaced excerpts instead of the
    /// whole file, so the first segment of a 3-hour upload is playable in seconds, not after a
    /// full decode. The output's loudness is still measured over every sample and recorded.
    #[serde(with = "humantime_serde")]
    pub excerpt_loudness_above: Duration,
    /// How many excerpts.
    pub loudness_excerpts: u32,
    /// How long each excerpt is.
    #[serde(with = "humantime_serde")]
    pub loudness_excerpt: Duration,
}

impl Default for TranscodeOptions {
    fn default() -> Self {
        Self {
            excerpt_loudness_above: Duration::from_secs(20 * 60),
            loudness_excerpts: 48,
            loudness_excerpt: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SchedulerOptions {
    /// How often the scheduler looks at the journal for work it was not told about (CLI changes,
    /// elapsed backoffs, other nodes).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often running steps' leases are renewed from their progress reports.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A running step whose lease was not renewed for this long is taken back (a silent node).
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// A running step that reported no progress for this long is cancelled and retried.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// At most this many steps of one tenant run at once, across stages.
    pub tenant_max_in_flight: usize,
    /// On shutdown, how long running steps get to notice and stop before the process exits. Steps
    /// stopped this way go back to the queue without using up a retry.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            heartbeat_interval: Duration::from_secs(2),
            lease_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(600),
            tenant_max_in_flight: 4,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct StageOptions {
    /// Worker threads of the stage: how many of its steps run at once on this node.
    pub workers: usize,
}

impl Default for StageOptions {
    fn default() -> Self {
        Self { workers: 1 }
    }
}

fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(l) => l,
        Raw::Csv(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
    })
}

//! Configuration: a TOML file (`--config PATH` or `LECTERN_CONFIG`) whose every `[section] key` can
//! be overridden by an environment variable `LECTERN_<SECTION>_<KEY>` (upper case, `-` as `_`).
//! Unknown keys and invalid values fail at start with a message naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::RetryPolicy;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("invalid config key {key}: {message}")]
    Key { key: String, message: String },
}

fn key_err(key: &str, message: impl Into<String>) -> Error {
    Error::Key { key: key.to_string(), message: message.into() }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub data: DataOptions,
    pub http: HttpOptions,
    pub models: ModelsOptions,
    pub admin: AdminOptions,
    pub webhook: WebhookOptions,
    pub log: LogOptions,
    pub upload: UploadOptions,
    pub scheduler: SchedulerOptions,
    pub transcode: TranscodeOptions,
    /// The default retry policy of every step.
    pub retry: RetryPolicy,
    /// Per-step overrides of the retry policy: `[step-retry.transcode]`.
    pub step_retry: BTreeMap<String, RetryPolicy>,
    /// Per-stage worker pools: `[stages.transcode] workers = 1`.
    pub stages: BTreeMap<String, StageOptions>,
}

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
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self { max_bytes: 2 * 1024 * 1024 * 1024, max_in_flight: 8 }
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

/// Keys whose environment value is always taken as a string, however it looks.
const STRING_KEYS: &[&str] =
    &["data.dir", "http.addr", "models.dir", "models.asr", "admin.key", "webhook.allow", "log.format", "log.level"];
/// Sections that `LECTERN_<SECTION>_<KEY>` can address.
const SECTIONS: &[&str] =
    &["data", "http", "models", "admin", "webhook", "log", "upload", "scheduler", "transcode", "retry"];
/// Environment variables with the prefix that are not config keys.
const NOT_KEYS: &[&str] = &["LECTERN_CONFIG"];

/// Default worker counts for the pipeline's stages on a 2-vCPU node.
fn default_workers(stage: &str) -> usize {
    match stage {
        "probe" => 2,
        "notify" => 4,
        _ => 1,
    }
}

impl Config {
    /// Loads the file (if any), applies `LECTERN_*` variables from `env`, and validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        let mut root = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Read { path: p.into(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| Error::Invalid { origin: format!(" file {}", p.display()), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        let mut env: Vec<_> = env.into_iter().filter(|(k, _)| k.starts_with("LECTERN_")).collect();
        env.sort();
        let mut applied = Vec::new();
        for (var, value) in env {
            if NOT_KEYS.contains(&var.as_str()) {
                continue;
            }
            applied.push((var.clone(), apply_env(&mut root, &var, &value)?));
        }
        let file_origin = path.map(|p| format!(" file {}", p.display())).unwrap_or_default();
        let cfg: Config = toml::Value::Table(root).try_into().map_err(|e: toml::de::Error| {
            let message = e.to_string().trim().replace('\n', " ");
            // Name the environment variable when the offending key came from one.
            let origin = applied
                .iter()
                .find(|(_, (section, key))| {
                    message.contains(&format!("`{section}.{key}`"))
                        || (message.contains(&format!("`{key}`")) && message.contains(&format!("`{section}`")))
                })
                .map(|(var, _)| format!(" from {var}"))
                .unwrap_or(file_origin);
            Error::Invalid { origin, message }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads from `--config`/`LECTERN_CONFIG` and the process environment.
    pub fn from_env(path: Option<&Path>) -> Result<Self, Error> {
        let from_var = std::env::var_os("LECTERN_CONFIG").map(PathBuf::from);
        Self::load(path.or(from_var.as_deref()), std::env::vars())
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.http.addr.parse::<std::net::SocketAddr>().map_err(|e| key_err("http.addr", e.to_string()))?;
        if self.data.dir.as_os_str().is_empty() {
            return Err(key_err("data.dir", "must not be empty"));
        }
        let s = &self.scheduler;
        for (key, d) in [
            ("scheduler.poll-interval", s.poll_interval),
            ("scheduler.heartbeat-interval", s.heartbeat_interval),
            ("scheduler.lease-timeout", s.lease_timeout),
            ("scheduler.stall-timeout", s.stall_timeout),
        ] {
            if d.is_zero() {
                return Err(key_err(key, "must be longer than zero"));
            }
        }
        if s.lease_timeout <= s.heartbeat_interval * 2 {
            return Err(key_err("scheduler.lease-timeout", "must exceed twice scheduler.heartbeat-interval"));
        }
        if self.upload.max_in_flight == 0 {
            return Err(key_err("upload.max-in-flight", "must be at least 1"));
        }
        if self.upload.max_bytes == 0 {
            return Err(key_err("upload.max-bytes", "must be at least 1"));
        }
        if s.tenant_max_in_flight == 0 {
            return Err(key_err("scheduler.tenant-max-in-flight", "must be at least 1"));
        }
        if !["tiny.en", "tiny.en-int8", "base", "base-int8"].contains(&self.models.asr.as_str()) {
            return Err(key_err(
                "models.asr",
                format!("unknown model {:?} (tiny.en, tiny.en-int8, base, base-int8)", self.models.asr),
            ));
        }
        if self.models.asr_threads == 0 || self.models.embed_threads == 0 {
            return Err(key_err("models.asr-threads", "thread counts must be at least 1"));
        }
        let t = &self.transcode;
        if t.loudness_excerpts == 0 {
            return Err(key_err("transcode.loudness-excerpts", "must be at least 1"));
        }
        if t.loudness_excerpt < Duration::from_secs(1) {
            return Err(key_err("transcode.loudness-excerpt", "must be at least 1s"));
        }
        self.retry.validate().map_err(|m| key_err("retry", m))?;
        for (step, p) in &self.step_retry {
            p.validate().map_err(|m| key_err(&format!("step-retry.{step}"), m))?;
        }
        for (stage, o) in &self.stages {
            if !(1..=64).contains(&o.workers) {
                return Err(key_err(&format!("stages.{stage}.workers"), "must be between 1 and 64"));
            }
        }
        Ok(())
    }

    /// The retry policy of a step.
    pub fn retry_for(&self, step: &str) -> RetryPolicy {
        self.step_retry.get(step).copied().unwrap_or(self.retry)
    }

    /// Worker threads of a stage.
    pub fn workers_for(&self, stage: &str) -> usize {
        self.stages.get(stage).map(|s| s.workers).unwrap_or_else(|| default_workers(stage))
    }

    /// The SQLite journal's file.
    pub fn journal_path(&self) -> PathBuf {
        self.data.dir.join("journal.db")
    }

    /// The search index file.
    pub fn index_path(&self) -> PathBuf {
        self.data.dir.join("index.sqlite")
    }

    /// Where blobs (step outputs, media) are stored.
    pub fn blob_dir(&self) -> PathBuf {
        self.data.dir.join("blobs")
    }
}

/// Sets `[section] key` from `LECTERN_SECTION_KEY`; returns (section, key).
fn apply_env(root: &mut toml::Table, var: &str, value: &str) -> Result<(String, String), Error> {
    let rest = &var["LECTERN_".len()..];
    let (section, key) = rest
        .split_once('_')
        .map(|(s, k)| (s.to_ascii_lowercase(), k.to_ascii_lowercase().replace('_', "-")))
        .ok_or_else(|| key_err(var, "is not of the form LECTERN_<SECTION>_<KEY>"))?;
    if !SECTIONS.contains(&section.as_str()) || key.is_empty() {
        return Err(key_err(&format!("{section}.{key} (from {var})"), "no such setting"));
    }
    let dotted = format!("{section}.{key}");
    let parsed = format!("v = {value}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    let value = match parsed {
        Some(v) if !STRING_KEYS.contains(&dotted.as_str()) => v,
        _ => toml::Value::String(value.to_string()),
    };
    let table = root
        .entry(section.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| key_err(&section, "must be a table"))?;
    table.insert(key.clone(), value);
    Ok((section, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:8080");
        assert_eq!(c.data.dir, PathBuf::from("./data"));
        assert_eq!(c.workers_for("transcode"), 1);
        assert_eq!(c.workers_for("probe"), 2);
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lectern.toml");
        std::fs::write(
            &p,
            "[http]\naddr = \"127.0.0.1:9000\"\n[scheduler]\npoll-interval = \"1s\"\n\
             [stages.transcode]\nworkers = 2\n[step-retry.notify]\nmax-attempts = 9\n\
             initial-delay = \"1s\"\nmax-delay = \"1h\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("LECTERN_HTTP_ADDR", "127.0.0.1:9100"),
                ("LECTERN_DATA_DIR", "/tmp/x"),
                ("LECTERN_ADMIN_KEY", "12345"),
                ("LECTERN_WEBHOOK_ALLOW", "10.0.0.0/8, hooks.local"),
                ("LECTERN_SCHEDULER_TENANT_MAX_IN_FLIGHT", "7"),
                ("LECTERN_RETRY_MAX_ATTEMPTS", "3"),
                ("LECTERN_CONFIG", "ignored"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:9100");
        assert_eq!(c.data.dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.admin.key.as_deref(), Some("12345"), "a numeric-looking key stays a string");
        assert_eq!(c.webhook.allow, vec!["10.0.0.0/8", "hooks.local"]);
        assert_eq!(c.scheduler.poll_interval, Duration::from_secs(1));
        assert_eq!(c.scheduler.tenant_max_in_flight, 7);
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.retry_for("notify").max_attempts, 9);
        assert_eq!(c.retry_for("probe").max_attempts, 3);
        assert_eq!(c.workers_for("transcode"), 2);
    }

    #[test]
    fn bad_config_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("LECTERN_HTTP_ADDR", "not an address")], "http.addr"),
            (&[("LECTERN_SCHEDULER_POLL_INTERVAL", "soon")], "poll-interval"),
            (&[("LECTERN_SCHEDULER_TENANT_MAX_IN_FLIGHT", "0")], "scheduler.tenant-max-in-flight"),
            (&[("LECTERN_HTTP_PORTT", "1")], "portt"),
            (&[("LECTERN_NOSUCH_THING", "1")], "nosuch.thing"),
            (&[("LECTERN_RETRY_MAX_ATTEMPTS", "0")], "retry"),
            (&[("LECTERN_SCHEDULER_LEASE_TIMEOUT", "1s")], "scheduler.lease-timeout"),
        ];
        for (vars, needle) in cases {
            let err = Config::load(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err:?} should name {needle}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[stages.transcode]\nworkers = 0\n").unwrap();
        let err = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(err.contains("stages.transcode.workers"), "{err}");
        std::fs::write(&p, "[http]\nadress = \"x\"\n").unwrap();
        let err = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
    }
}

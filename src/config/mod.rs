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

/// The shortest operator key accepted (`admin.key`).
pub const MIN_ADMIN_KEY_CHARS: usize = 16;

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

mod options;

pub use options::*;

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
        if let Some(key) = &self.admin.key
            && (key.trim().len() < MIN_ADMIN_KEY_CHARS || key.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(key_err(
                "admin.key",
                format!(
                    "LECTERN_ADMIN_KEY must be at least {MIN_ADMIN_KEY_CHARS} characters without spaces (an \
                     empty key would leave the API open); generate one with `openssl rand -hex 32`"
                ),
            ));
        }
        let u = &self.upload;
        if u.idle_timeout < Duration::from_secs(1) {
            return Err(key_err("upload.idle-timeout", "must be at least 1s"));
        }
        if u.open_per_tenant == 0 || u.declared_bytes_per_tenant == 0 {
            return Err(key_err("upload.open-per-tenant", "tus caps must be at least 1"));
        }
        if u.sweep_interval < Duration::from_secs(1) || u.expiry < Duration::from_secs(1) {
            return Err(key_err("upload.sweep-interval", "the sweep interval and the expiry must be at least 1s"));
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
mod tests;

//! The sweeper: removes what uploads and steps left behind, at start and every
//! `upload.sweep-interval`:
//!
//! - tus uploads past their `Upload-Expires` (finished ones too: their staging link only answers
//!   `HEAD`), and tus files without a sidecar;
//! - `POST /v1/media` staging files no upload holds (a `kill -9` mid-body leaves one);
//! - a step's staging files (`waveform-*.json.part`) and the store's temp files: all of them at
//!   start (nothing runs yet), later only those untouched for an hour;
//! - stored sources with no media record (stored, then the journal refused the record or the
//!   process died before it committed).
//!
//! What it reclaims is counted in `lectern_sweeper_reclaimed_bytes_total{kind}` and logged.

use std::path::Path;
use std::time::Duration;

use super::State;
use super::tus;
use crate::clock::Millis;

/// Files untouched this long are leftovers even while the server runs.
const STALE: Duration = Duration::from_secs(3600);

/// What one sweep removed, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub kinds: Vec<(&'static str, u64, u64)>,
}

impl Report {
    fn add(&mut self, kind: &'static str, files: u64, bytes: u64) {
        if files > 0 {
            self.kinds.push((kind, files, bytes));
        }
    }

    pub fn bytes(&self) -> u64 {
        self.kinds.iter().map(|k| k.2).sum()
    }

    pub fn files(&self) -> u64 {
        self.kinds.iter().map(|k| k.1).sum()
    }
}

/// Sweeps once. `at_start`: nothing is running yet, so every staging leftover is an orphan.
pub fn sweep(state: &State, at_start: bool) -> Report {
    let now = state.app.clock.now_ms();
    let mut report = Report::default();
    let t = tus::sweep(&tus::dir(state), now, state.app.config.upload.expiry, STALE);
    report.add("tus_expired", t.files, t.bytes);
    let (files, bytes) = staging(state, now, at_start);
    report.add("staging", files, bytes);
    let tmp = state.staging_dir().join("tmp");
    let (files, bytes) = remove_where(&tmp, now, |_, age| at_start || age >= STALE.as_millis() as Millis);
    report.add("tmp", files, bytes);
    let (files, bytes) = orphan_sources(state, now, at_start);
    report.add("orphan_source", files, bytes);
    for (kind, files, bytes) in &report.kinds {
        state.metrics.add(crate::metrics::SWEPT_BYTES, &[("kind", kind)], *bytes as f64);
        state.metrics.add(crate::metrics::SWEPT_FILES, &[("kind", kind)], *files as f64);
    }
    if report.files() > 0 {
        tracing::info!(files = report.files(), bytes = report.bytes(), kinds = ?report.kinds, "sweeper reclaimed space");
    }
    report
}

/// Upload and step staging files in the staging root.
fn staging(state: &State, now: Millis, at_start: bool) -> (u64, u64) {
    let in_flight = state.in_flight.clone();
    remove_where(&state.staging_dir(), now, |path, age| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("upl_") && name.ends_with(".part") {
            // A POST upload: only its own handler holds it (and removes it when it ends).
            !in_flight.contains(path)
        } else if name.ends_with(".part") {
            at_start || age >= STALE.as_millis() as Millis
        } else {
            false
        }
    })
}

/// Removes the files directly in `dir` for which `doomed(path, age_ms)` holds.
fn remove_where(dir: &Path, now: Millis, doomed: impl Fn(&Path, Millis) -> bool) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || !doomed(&entry.path(), tus::age_ms(&entry, now)) {
            continue;
        }
        if std::fs::remove_file(entry.path()).is_ok() {
            files += 1;
            bytes += meta.len();
        }
    }
    (files, bytes)
}

/// Sources stored under `media/<id>/source` whose media record never committed.
fn orphan_sources(state: &State, now: Millis, at_start: bool) -> (u64, u64) {
    let Ok(listed) = state.blobs.list("media/") else { return (0, 0) };
    let (mut files, mut bytes) = (0, 0);
    for blob in listed {
        let Some(id) = blob.key.strip_prefix("media/").and_then(|k| k.strip_suffix("/source")) else { continue };
        if state.in_flight.contains(Path::new(&blob.key)) {
            continue;
        }
        // A source being accepted right now is younger than a minute; only older ones are judged.
        if !at_start && now - blob.modified_ms < 60_000 {
            continue;
        }
        match state.app.journal.media(id) {
            Ok(None) => {}
            _ => continue,
        }
        if state.blobs.delete(&blob.key).is_ok() {
            files += 1;
            bytes += blob.size;
        }
    }
    (files, bytes)
}

/// Runs [`sweep`] every `upload.sweep-interval` until `stop` says so.
pub async fn run(state: State, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.app.config.upload.sweep_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let s = state.clone();
        if actix_web::web::block(move || sweep(&s, false)).await.is_err() {
            tracing::warn!("sweeper could not run (blocking pool closed)");
        }
    }
}

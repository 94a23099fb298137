//! Every metric Lectern exports, declared in one place and rendered in the Prometheus text format.
//! Names follow `lectern_<name>_<unit>`, counters end in `_total`.
//!
//! A [`Metrics`] value is per engine instance (tests assert on their own counters).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A metric's name, type and help text.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    /// Upper bounds of a histogram's buckets (empty for counters and gauges).
    pub buckets: &'static [f64],
}

impl PartialEq for Def {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Def {}
impl PartialOrd for Def {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Def {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(other.name)
    }
}

const fn counter(name: &'static str, help: &'static str) -> Def {
    Def { name, kind: "counter", help, buckets: &[] }
}

const fn gauge(name: &'static str, help: &'static str) -> Def {
    Def { name, kind: "gauge", help, buckets: &[] }
}

const fn histogram(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Def {
    Def { name, kind: "histogram", help, buckets }
}

/// Buckets for step durations: 50 ms to 2 h.
const STEP_BUCKETS: &[f64] = &[0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0];
/// Buckets for HTTP requests and webhook attempts: 1 ms to 30 s.
const REQUEST_BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 30.0];
/// Buckets for the real-time factor (processing time / audio time).
const RTF_BUCKETS: &[f64] = &[0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0];

pub const STAGE_BACKPRESSURE: Def = counter(
    "lectern_stage_backpressure_seconds_total",
    "Time ready work waited because every worker of its stage was busy.",
);
pub const ACTOR_RESTARTS: Def = counter("lectern_actor_restarts_total", "Stage worker actors restarted after a panic.");
pub const STEP_ATTEMPTS: Def = counter("lectern_step_attempts_total", "Step attempts finished, by stage and outcome.");
pub const STEP_SECONDS: Def = counter("lectern_step_seconds_total", "Time spent running step attempts, by stage.");
pub const STEPS_RECLAIMED: Def =
    counter("lectern_steps_reclaimed_total", "Running steps taken back from a crashed or silent worker.");
pub const STEPS_STALLED: Def =
    counter("lectern_steps_stalled_total", "Running steps cancelled for reporting no progress.");
pub const DISPATCHES: Def = counter("lectern_scheduler_dispatches_total", "Steps handed to stage workers.");
pub const JOURNAL_ERRORS: Def =
    counter("lectern_journal_errors_total", "Journal operations that failed (the scheduler retries them).");
pub const STEP_DURATION: Def =
    histogram("lectern_step_duration_seconds", "Duration of step attempts, by stage and outcome.", STEP_BUCKETS);
pub const STEP_RETRIES: Def =
    counter("lectern_step_retries_total", "Step attempts that failed with a retry scheduled, by stage and code.");
pub const JOBS_DEAD: Def = counter("lectern_jobs_dead_total", "Jobs that went dead, by stage and code.");
pub const TRANSCRIBE_RTF: Def = histogram(
    "lectern_transcribe_real_time_factor",
    "Transcription time divided by audio duration, per transcribe step (ratio).",
    RTF_BUCKETS,
);
pub const HTTP_REQUESTS: Def =
    counter("lectern_http_requests_total", "HTTP requests answered, by route, method and status.");
pub const HTTP_SECONDS: Def =
    histogram("lectern_http_request_duration_seconds", "Time to answer HTTP requests, by route.", REQUEST_BUCKETS);
pub const UPLOAD_BYTES: Def = counter("lectern_upload_bytes_total", "Bytes of accepted uploads, by tenant.");
pub const QUEUE_DEPTH: Def =
    gauge("lectern_queue_depth_steps", "Steps ready or waiting for a retry, by stage and tenant.");
pub const QUEUE_OLDEST: Def =
    gauge("lectern_queue_oldest_age_seconds", "Age of the oldest queued job, by stage and tenant.");
pub const WEBHOOK_ATTEMPTS: Def =
    counter("lectern_webhook_attempts_total", "Webhook delivery attempts, by event type and outcome.");
pub const WEBHOOK_SECONDS: Def =
    histogram("lectern_webhook_attempt_duration_seconds", "Time of one webhook delivery attempt.", REQUEST_BUCKETS);
pub const STAGE_RUNNING: Def = gauge("lectern_stage_running_steps", "Steps running now, by stage.");
pub const STAGE_WORKERS: Def = gauge("lectern_stage_workers", "Worker threads of each stage.");
pub const SWEPT_BYTES: Def = counter(
    "lectern_sweeper_reclaimed_bytes_total",
    "Bytes the sweeper removed: expired uploads, orphaned staging and temp files, sources without media.",
);
pub const SWEPT_FILES: Def = counter("lectern_sweeper_reclaimed_files_total", "Files the sweeper removed, by kind.");
pub const LOG_DROPPED: Def =
    counter("lectern_log_dropped_total", "Log lines dropped because stderr could not take them (full, closed, slow).");

type Labels = Vec<(&'static str, String)>;

/// One histogram series: cumulative bucket counts, sum, count.
#[derive(Debug, Clone, Default)]
struct Hist {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<Def, BTreeMap<Labels, f64>>>,
    hists: Mutex<BTreeMap<Def, BTreeMap<Labels, Hist>>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<Def, BTreeMap<Labels, f64>>) -> R) -> R {
        f(&mut self.values.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn labels(labels: &[(&'static str, &str)]) -> Labels {
        labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    pub fn add(&self, def: Def, labels: &[(&'static str, &str)], by: f64) {
        self.with(|m| *m.entry(def).or_default().entry(Self::labels(labels)).or_default() += by);
    }

    pub fn inc(&self, def: Def, labels: &[(&'static str, &str)]) {
        self.add(def, labels, 1.0);
    }

    pub fn set(&self, def: Def, labels: &[(&'static str, &str)], v: f64) {
        self.with(|m| m.entry(def).or_default().insert(Self::labels(labels), v));
    }

    pub fn get(&self, def: Def, labels: &[(&'static str, &str)]) -> f64 {
        self.with(|m| m.get(&def).and_then(|s| s.get(&Self::labels(labels))).copied().unwrap_or(0.0))
    }

    /// Records one observation of a histogram.
    pub fn observe(&self, def: Def, labels: &[(&'static str, &str)], v: f64) {
        let mut h = self.hists.lock().unwrap_or_else(|p| p.into_inner());
        let series = h
            .entry(def)
            .or_default()
            .entry(Self::labels(labels))
            .or_insert_with(|| Hist { buckets: vec![0; def.buckets.len()], ..Default::default() });
        for (i, le) in def.buckets.iter().enumerate() {
            if v <= *le {
                series.buckets[i] += 1;
            }
        }
        series.sum += v;
        series.count += 1;
    }

    /// Replaces every series of a gauge (values computed at scrape time).
    pub fn replace(&self, def: Def, series: Vec<(Labels, f64)>) {
        self.with(|m| {
            let s = m.entry(def).or_default();
            s.clear();
            s.extend(series);
        });
    }

    /// The count of a histogram series (for tests).
    pub fn observations(&self, def: Def, labels: &[(&'static str, &str)]) -> u64 {
        let h = self.hists.lock().unwrap_or_else(|p| p.into_inner());
        h.get(&def).and_then(|s| s.get(&Self::labels(labels))).map(|x| x.count).unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let fmt_labels = |labels: &Labels, extra: Option<(&str, String)>| {
            let mut l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            if let Some((k, v)) = extra {
                l.push(format!("{k}=\"{v}\""));
            }
            if l.is_empty() { String::new() } else { format!("{{{}}}", l.join(",")) }
        };
        self.with(|m| {
            for (def, series) in m.iter() {
                let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", def.name, def.help, def.name, def.kind);
                for (labels, v) in series {
                    let _ = writeln!(out, "{}{} {v}", def.name, fmt_labels(labels, None));
                }
            }
        });
        let h = self.hists.lock().unwrap_or_else(|p| p.into_inner());
        for (def, series) in h.iter() {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} histogram", def.name, def.help, def.name);
            for (labels, x) in series {
                for (le, n) in def.buckets.iter().zip(&x.buckets) {
                    let _ =
                        writeln!(out, "{}_bucket{} {n}", def.name, fmt_labels(labels, Some(("le", le.to_string()))));
                }
                let _ =
                    writeln!(out, "{}_bucket{} {}", def.name, fmt_labels(labels, Some(("le", "+Inf".into()))), x.count);
                let _ = writeln!(out, "{}_sum{} {}", def.name, fmt_labels(labels, None), x.sum);
                let _ = writeln!(out, "{}_count{} {}", def.name, fmt_labels(labels, None), x.count);
            }
        }
        out
    }
}

/// Owned labels, for [`Metrics::replace`].
pub fn owned_labels(labels: &[(&'static str, &str)]) -> Labels {
    Metrics::labels(labels)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc(ACTOR_RESTARTS, &[("stage", "transcode")]);
        m.add(ACTOR_RESTARTS, &[("stage", "transcode")], 2.0);
        m.set(STAGE_WORKERS, &[("stage", "a\"b")], 3.0);
        assert_eq!(m.get(ACTOR_RESTARTS, &[("stage", "transcode")]), 3.0);
        let text = m.render();
        assert!(text.contains("# TYPE lectern_actor_restarts_total counter"), "{text}");
        assert!(text.contains("lectern_actor_restarts_total{stage=\"transcode\"} 3"), "{text}");
        assert!(text.contains("lectern_stage_workers{stage=\"a\\\"b\"} 3"), "{text}");
    }
}

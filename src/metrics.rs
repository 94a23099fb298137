//! Every metric Lectern exports, declared in one place and rendered in the Prometheus text format.
//! Names follow `lectern_<name>_<unit>`, counters end in `_total`.
//!
//! A [`Metrics`] value is per engine instance (tests assert on their own counters).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A metric's name, type and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Def {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Def {
    Def { name, kind: "counter", help }
}

const fn gauge(name: &'static str, help: &'static str) -> Def {
    Def { name, kind: "gauge", help }
}

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
pub const STAGE_RUNNING: Def = gauge("lectern_stage_running_steps", "Steps running now, by stage.");
pub const STAGE_WORKERS: Def = gauge("lectern_stage_workers", "Worker threads of each stage.");

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<Def, BTreeMap<Labels, f64>>>,
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

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|m| {
            for (def, series) in m.iter() {
                let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", def.name, def.help, def.name, def.kind);
                for (labels, v) in series {
                    let l: Vec<_> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                    let l = if l.is_empty() { String::new() } else { format!("{{{}}}", l.join(",")) };
                    let _ = writeln!(out, "{}{l} {v}", def.name);
                }
            }
        });
        out
    }
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

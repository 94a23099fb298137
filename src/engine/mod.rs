//! The job engine's vocabulary: job kinds (step DAGs), the executor interface and retry policy.
//! The actors that run it live in [`crate::actors`].

pub mod executor;
pub mod retry;
#[cfg(feature = "testsuite")]
pub mod testkind;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use executor::{CancelToken, StepContext, StepError, StepExecutor, StepOutput};
pub use retry::RetryPolicy;

use crate::journal::StepSpec;

/// A kind of job: its name and step DAG.
#[derive(Debug, Clone)]
pub struct JobKind {
    pub name: String,
    pub steps: Vec<StepSpec>,
}

impl JobKind {
    /// Builds a kind from `(step, stage, deps)` triples.
    pub fn new(name: &str, steps: &[(&str, &str, &[&str])]) -> Self {
        let steps = steps
            .iter()
            .map(|(n, stage, deps)| StepSpec {
                name: n.to_string(),
                stage: stage.to_string(),
                deps: deps.iter().map(|d| d.to_string()).collect(),
            })
            .collect();
        Self { name: name.to_string(), steps }
    }

    /// The ingest pipeline: `probe → transcode ∥ (transcribe → embed) → notify`.
    pub fn ingest() -> Self {
        Self::new(
            "ingest",
            &[
                ("probe", "probe", &[]),
                ("transcode", "transcode", &["probe"]),
                ("transcribe", "transcribe", &["probe"]),
                ("embed", "embed", &["transcribe"]),
                ("notify", "notify", &["transcode", "embed"]),
            ],
        )
    }
}

/// Which job kinds exist and which executor serves each stage.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, JobKind>,
    executors: BTreeMap<String, Arc<dyn StepExecutor>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The kinds and stages this build ships.
    pub fn builtin(
        config: &crate::config::Config,
        models: &std::sync::Arc<crate::actors::speech::Models>,
        index: &std::sync::Arc<crate::index::Index>,
    ) -> Self {
        let mut r = Self::new();
        crate::actors::ingest::register(&mut r, config, models, index);
        #[cfg(feature = "testsuite")]
        testkind::register(&mut r);
        r
    }

    pub fn kind(mut self, kind: JobKind) -> Self {
        self.kinds.insert(kind.name.clone(), kind);
        self
    }

    pub fn executor(mut self, stage: &str, e: impl StepExecutor) -> Self {
        self.executors.insert(stage.to_string(), Arc::new(e));
        self
    }

    pub fn add_kind(&mut self, kind: JobKind) {
        self.kinds.insert(kind.name.clone(), kind);
    }

    pub fn add_executor(&mut self, stage: &str, e: Arc<dyn StepExecutor>) {
        self.executors.insert(stage.to_string(), e);
    }

    pub fn job_kind(&self, name: &str) -> Option<&JobKind> {
        self.kinds.get(name)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &JobKind> {
        self.kinds.values()
    }

    pub fn stages(&self) -> impl Iterator<Item = (&String, &Arc<dyn StepExecutor>)> {
        self.executors.iter()
    }

    /// Every stage used by a kind must have an executor.
    pub fn validate(&self) -> Result<(), String> {
        for k in self.kinds.values() {
            crate::journal::validate_steps(&k.steps).map_err(|e| format!("job kind {}: {e}", k.name))?;
            if let Some(s) = k.steps.iter().find(|s| !self.executors.contains_key(&s.stage)) {
                return Err(format!("job kind {} uses stage {} which has no executor", k.name, s.stage));
            }
        }
        Ok(())
    }
}

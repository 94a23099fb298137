//! What a stage runs: the [`StepExecutor`] interface, its context and its errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::clock::{Millis, SharedClock};
use crate::journal::{AttemptRef, ClaimedStep};
use crate::storage::BlobStore;

/// Runs one step. Implementations are called on a worker thread (blocking is fine), must be
/// idempotent (write outputs under deterministic keys, atomically), should call
/// [`StepContext::progress`] regularly and return [`StepError::cancelled`] soon after
/// [`StepContext::is_cancelled`] turns true.
pub trait StepExecutor: Send + Sync + 'static {
    fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError>;
}

impl<F> StepExecutor for F
where
    F: Fn(&StepContext) -> Result<StepOutput, StepError> + Send + Sync + 'static,
{
    fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        self(ctx)
    }
}

/// A step's result, committed to the journal after the output is durably stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// Where the output lives (a blob key).
    pub output_ref: Option<String>,
    pub sha256: Option<String>,
    /// A small JSON summary (probe metadata, counts, ...).
    pub output: Option<serde_json::Value>,
}

/// Why a step failed. `transient` errors are retried by policy; the others make the job `dead`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StepError {
    pub code: String,
    pub message: String,
    pub transient: bool,
}

/// The code a cooperative cancellation ends with.
pub const CANCELLED: &str = "cancelled";

impl StepError {
    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), transient: true }
    }

    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), transient: false }
    }

    pub fn cancelled() -> Self {
        Self::permanent(CANCELLED, "the step was cancelled")
    }

    pub fn is_cancelled(&self) -> bool {
        self.code == CANCELLED
    }
}

/// A cooperative cancellation flag shared by the scheduler and one running step.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The time of a running step's last progress report, read by the scheduler to renew its lease and
/// to spot a frozen step.
#[derive(Debug, Clone)]
pub struct ProgressCell(Arc<AtomicI64>);

impl ProgressCell {
    pub fn new(now: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(now)))
    }
    pub fn touch(&self, now: Millis) {
        self.0.fetch_max(now, Ordering::SeqCst);
    }
    pub fn last(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// An event a running step reports, recorded in its job's timeline by the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct StepNote {
    pub attempt: AttemptRef,
    pub kind: String,
    pub detail: Option<serde_json::Value>,
    pub at: Millis,
}

/// Everything a running step can see and use.
#[derive(Clone)]
pub struct StepContext {
    pub step: ClaimedStep,
    pub blobs: Arc<dyn BlobStore>,
    pub cancel: CancelToken,
    pub(crate) progress: ProgressCell,
    pub(crate) clock: SharedClock,
    pub(crate) notes: Option<std::sync::mpsc::Sender<StepNote>>,
}

impl StepContext {
    pub fn new(step: ClaimedStep, blobs: Arc<dyn BlobStore>, clock: SharedClock) -> Self {
        let progress = ProgressCell::new(clock.now_ms());
        Self { step, blobs, cancel: CancelToken::default(), progress, clock, notes: None }
    }

    /// Reports an event to the job's timeline (e.g. `media.ready`); recorded within one scheduler
    /// tick. Best effort: a note is lost only if the process dies before it is recorded.
    pub fn emit(&self, kind: &str, detail: serde_json::Value) {
        if let Some(tx) = &self.notes {
            let note = StepNote {
                attempt: self.step.attempt.clone(),
                kind: kind.to_string(),
                detail: Some(detail),
                at: self.clock.now_ms(),
            };
            let _ = tx.send(note);
        }
    }

    pub fn attempt(&self) -> &AttemptRef {
        &self.step.attempt
    }

    /// Reports that the step is alive and moving (a heartbeat for its lease).
    pub fn progress(&self) {
        self.progress.touch(self.clock.now_ms());
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// `Err(cancelled)` once cancellation was requested: `ctx.checkpoint()?` between chunks.
    pub fn checkpoint(&self) -> Result<(), StepError> {
        self.progress();
        if self.is_cancelled() { Err(StepError::cancelled()) } else { Ok(()) }
    }

    /// A deterministic blob key for this step's output: `jobs/<job>/<step>/<name>`.
    pub fn output_key(&self, name: &str) -> String {
        format!("jobs/{}/{}/{}", self.step.attempt.job_id, self.step.attempt.step, name)
    }
}

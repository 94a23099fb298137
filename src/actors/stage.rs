//! A stage's worker: a `SyncArbiter` actor, one per worker thread, that runs step executors.
//!
//! A panic inside an executor is caught here, reported as the attempt's outcome, and the actor is
//! restarted: `ctx.stop()` in a `SyncContext` makes the arbiter build a fresh actor from its factory
//! on the same thread (the thread itself survives, so the pool never shrinks).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Handler, Message, MessageResponse, SyncContext};

use crate::engine::{StepContext, StepError, StepExecutor, StepOutput};
use crate::metrics::{self, Metrics};

/// Runs one claimed step.
#[derive(Message)]
#[rtype(result = "Attempted")]
pub struct RunStep(pub StepContext);

/// How an attempt ended, as seen by the worker.
#[derive(Debug)]
pub enum AttemptResult {
    Done(StepOutput),
    Failed(StepError),
    Panicked(String),
}

#[derive(Debug, MessageResponse)]
pub struct Attempted {
    pub result: AttemptResult,
    pub elapsed: Duration,
}

pub struct StageWorker {
    stage: String,
    executor: Arc<dyn StepExecutor>,
    metrics: Arc<Metrics>,
}

impl StageWorker {
    pub fn new(stage: &str, executor: Arc<dyn StepExecutor>, metrics: Arc<Metrics>) -> Self {
        Self { stage: stage.to_string(), executor, metrics }
    }
}

impl Actor for StageWorker {
    type Context = SyncContext<Self>;
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

impl Handler<RunStep> for StageWorker {
    type Result = Attempted;

    fn handle(&mut self, RunStep(step): RunStep, ctx: &mut SyncContext<Self>) -> Attempted {
        let a = step.attempt();
        // One trace per job (its W3C trace id is the job id's 128 bits), one span per attempt.
        let (trace_id, span_id) = crate::telemetry::trace_ids(&a.job_id, &a.step, a.attempt);
        let span = tracing::info_span!("step", job.id = %a.job_id, step = %a.step, attempt = a.attempt,
            stage = %self.stage, trace_id = %trace_id, span_id = %span_id);
        let _guard = span.enter();
        let started = Instant::now();
        tracing::debug!("step started");
        let result = match catch_unwind(AssertUnwindSafe(|| self.executor.run(&step))) {
            Ok(Ok(out)) => AttemptResult::Done(out),
            Ok(Err(e)) => AttemptResult::Failed(e),
            Err(payload) => {
                let msg = panic_message(payload.as_ref());
                tracing::error!(panic = %msg, "step panicked; restarting the stage worker");
                self.metrics.inc(metrics::ACTOR_RESTARTS, &[("stage", &self.stage)]);
                ctx.stop(); // SyncContext: recreate this actor from the factory
                AttemptResult::Panicked(msg)
            }
        };
        let elapsed = started.elapsed();
        tracing::debug!(elapsed_ms = elapsed.as_millis() as u64, "step ended");
        Attempted { result, elapsed }
    }
}

//! Test-only job kinds (feature `testsuite`), for process-level tests and benchmarks until the audio
//! stages exist, and for exercising the engine's failure paths on a real binary.
//!
//! Kind `test`: `a → (b ∥ c) → d`, all on stage `test`. Kind `noop3`: `a → b → c` on stage `noop`,
//! which does nothing but store a tiny output (the durable no-op job of the benchmarks).
//!
//! `test` reads its behaviour from the job's params:
//! `{"sleep_ms": 1500, "fail": {"b": 2}, "panic": {"c": 1}, "fatal": ["d"], "log": "/path/effects.log"}`
//! - `sleep_ms`: how long each step works (in 20 ms slices, reporting progress and checking for
//!   cancellation between slices);
//! - `fail`/`panic`: the step fails transiently / panics on its first N attempts;
//! - `fatal`: the step fails permanently (code `test_fatal`);
//! - `log`: a file to append `START|END job step attempt pid epoch_ms` lines to (the side effects
//!   the tests count).

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::{JobKind, Registry, StepContext, StepError, StepOutput};

pub fn register(r: &mut Registry) {
    r.add_kind(JobKind::new(
        "test",
        &[("a", "test", &[]), ("b", "test", &["a"]), ("c", "test", &["a"]), ("d", "test", &["b", "c"])],
    ));
    r.add_kind(JobKind::new("noop3", &[("a", "noop", &[]), ("b", "noop", &["a"]), ("c", "noop", &["b"])]));
    r.add_executor("test", std::sync::Arc::new(run_test_step));
    r.add_executor("noop", std::sync::Arc::new(run_noop_step));
}

fn count_for(params: &Value, field: &str, step: &str) -> u32 {
    params.get(field).and_then(|m| m.get(step)).and_then(Value::as_u64).unwrap_or(0) as u32
}

fn log_line(ctx: &StepContext, what: &str) -> Result<(), StepError> {
    let Some(path) = ctx.step.params.get("log").and_then(Value::as_str) else { return Ok(()) };
    let a = ctx.attempt();
    let line = format!("{what} {} {} {} {} {}\n", a.job_id, a.step, a.attempt, std::process::id(), ctx.clock.now_ms());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| StepError::transient("test_log", e.to_string()))?;
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| StepError::transient("test_log", e.to_string()))
}

fn store_output(ctx: &StepContext) -> Result<StepOutput, StepError> {
    let body = serde_json::json!({"job": ctx.attempt().job_id, "step": ctx.attempt().step});
    let key = ctx.output_key("out.json");
    let blob = ctx.blobs.put(&key, body.to_string().as_bytes()).map_err(|e| StepError {
        transient: e.is_transient(),
        code: "storage".into(),
        message: e.to_string(),
    })?;
    Ok(StepOutput { output_ref: Some(blob.key), sha256: Some(blob.sha256), output: Some(body) })
}

fn run_test_step(ctx: &StepContext) -> Result<StepOutput, StepError> {
    let p = &ctx.step.params;
    let step = ctx.attempt().step.as_str();
    let attempt = ctx.attempt().attempt;
    log_line(ctx, "START")?;
    let sleep_ms = p.get("sleep_ms").and_then(Value::as_u64).unwrap_or(0);
    let mut slept = 0;
    while slept < sleep_ms {
        ctx.checkpoint()?;
        let slice = (sleep_ms - slept).min(20);
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(slice));
        slept += slice;
    }
    ctx.checkpoint()?;
    if attempt <= count_for(p, "panic", step) {
        panic!("test step {step} panics on attempt {attempt}");
    }
    if attempt <= count_for(p, "fail", step) {
        return Err(StepError::transient("test_transient", format!("step {step} fails on attempt {attempt}")));
    }
    let fatal = p.get("fatal").and_then(Value::as_array).is_some_and(|f| f.iter().any(|s| s.as_str() == Some(step)));
    if fatal {
        return Err(StepError::permanent("test_fatal", format!("step {step} always fails")));
    }
    let out = store_output(ctx)?;
    log_line(ctx, "END")?;
    Ok(out)
}

fn run_noop_step(ctx: &StepContext) -> Result<StepOutput, StepError> {
    store_output(ctx)
}

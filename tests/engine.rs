//! The job engine in-process: real SQLite journal, real actors, a controlled clock where time
//! matters. Each test builds its own job kind and executors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lectern::actors::{Engine, EngineParts};
use lectern::app::{App, EnqueueRequest};
use lectern::clock::{Clock, ManualClock, SharedClock, SystemClock};
use lectern::config::{Config, StageOptions};
use lectern::engine::{JobKind, Registry, RetryPolicy, StepContext, StepError, StepOutput};
use lectern::journal::{JobState, Journal, PauseScope, SqliteJournal, StepState};
use lectern::metrics::{self, Metrics};
use lectern::storage::LocalFs;

/// Every step execution, in the order the workers started them: (job id, step, attempt).
type Runs = Arc<Mutex<Vec<(String, String, u32)>>>;

struct Harness {
    app: App,
    metrics: Arc<Metrics>,
    _engine: Engine,
    _dir: tempfile::TempDir,
}

fn config(stages: &[(&str, usize)]) -> Config {
    let mut c = Config::default();
    c.scheduler.poll_interval = Duration::from_millis(20);
    c.scheduler.heartbeat_interval = Duration::from_millis(50);
    c.scheduler.lease_timeout = Duration::from_secs(3600);
    c.scheduler.stall_timeout = Duration::from_secs(3600);
    c.scheduler.tenant_max_in_flight = 16;
    c.retry =
        RetryPolicy { max_attempts: 5, initial_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) };
    for (s, w) in stages {
        c.stages.insert(s.to_string(), StageOptions { workers: *w });
    }
    c
}

impl Harness {
    fn start(registry: Registry, config: Config, clock: SharedClock) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let journal: Arc<dyn Journal> = Arc::new(SqliteJournal::open(&dir.path().join("journal.db")).unwrap());
        let metrics = Arc::new(Metrics::new());
        let mut app = App::with(journal.clone(), clock.clone(), config, registry.clone());
        let engine = Engine::start(EngineParts {
            journal,
            clock,
            blobs: Arc::new(LocalFs::new(dir.path().join("blobs"))),
            metrics: metrics.clone(),
            config: app.config.clone(),
            registry,
        })
        .unwrap();
        app.engine = Some(engine.clone());
        Self { app, metrics, _engine: engine, _dir: dir }
    }

    fn enqueue(&self, kind: &str, tenant: Option<&str>) -> String {
        let req = EnqueueRequest { kind: kind.into(), tenant: tenant.map(String::from), ..Default::default() };
        self.app.enqueue(req).unwrap().job.id
    }

    fn job(&self, id: &str) -> lectern::journal::JobRecord {
        self.app.journal.job(id).unwrap().unwrap()
    }

    /// Polls (real time) until `cond` holds; panics with `what` after `secs`.
    async fn until(&self, secs: u64, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        for _ in 0..secs * 50 {
            if cond(self) {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    async fn until_state(&self, id: &str, state: JobState, secs: u64) {
        self.until(secs, &format!("job {id} to be {state}"), |h| h.job(id).state == state).await;
    }
}

fn recording(
    runs: &Runs,
    work: impl Fn(&StepContext) -> Result<(), StepError> + Send + Sync + 'static,
) -> impl Fn(&StepContext) -> Result<StepOutput, StepError> + Send + Sync + 'static {
    let runs = runs.clone();
    move |ctx: &StepContext| {
        let a = ctx.attempt();
        runs.lock().unwrap().push((a.job_id.clone(), a.step.clone(), a.attempt));
        work(ctx)?;
        Ok(StepOutput { output: Some(serde_json::json!({"step": a.step})), ..Default::default() })
    }
}

fn sleep_ms(ms: u64) {
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(Duration::from_millis(ms));
}

#[actix_rt::test]
async fn a_small_tenant_is_not_starved_by_a_big_one() {
    let runs: Runs = Default::default();
    let registry = Registry::new().kind(JobKind::new("one", &[("work", "work", &[])])).executor(
        "work",
        recording(&runs, |_| {
            sleep_ms(2);
            Ok(())
        }),
    );
    let h = Harness::start(registry, config(&[("work", 1)]), Arc::new(SystemClock));
    let a = h.app.journal.create_tenant("big", 0).unwrap();
    let b = h.app.journal.create_tenant("small", 0).unwrap();
    let mut a_jobs = Vec::new();
    for _ in 0..1000 {
        a_jobs.push(h.enqueue("one", Some(&a.id)));
    }
    let before = runs.lock().unwrap().len();
    let b_job = h.enqueue("one", Some(&b.id));
    h.until_state(&b_job, JobState::Succeeded, 30).await;
    let order = runs.lock().unwrap().clone();
    let pos = order.iter().position(|(j, _, _)| *j == b_job).unwrap();
    assert!(
        pos < before + 3,
        "B's job ran {}th after it was enqueued, behind {} A jobs already queued",
        pos - before + 1,
        1000 - before
    );
    assert!(before < 1000, "A still had queued work when B arrived ({before} of A's ran)");
    // FIFO within A's queue: A's jobs ran in the order they were enqueued.
    let a_order: Vec<_> = order.iter().filter(|(j, _, _)| *j != b_job).map(|(j, _, _)| j.clone()).collect();
    assert_eq!(a_order[..], a_jobs[..a_order.len()]);
}

#[actix_rt::test]
async fn a_batch_queue_does_not_delay_live_work() {
    let runs: Runs = Default::default();
    let registry = Registry::new().kind(JobKind::new("one", &[("work", "work", &[])])).executor(
        "work",
        recording(&runs, |_| {
            sleep_ms(2);
            Ok(())
        }),
    );
    let h = Harness::start(registry, config(&[("work", 1)]), Arc::new(SystemClock));
    h.app.set_paused(PauseScope::Stage("work".into()), true).unwrap();
    for _ in 0..300 {
        let req = EnqueueRequest { kind: "one".into(), batch: Some("bat_reembed".into()), ..Default::default() };
        h.app.enqueue(req).unwrap();
    }
    let live = h.enqueue("one", None);
    h.app.set_paused(PauseScope::Stage("work".into()), false).unwrap();
    h.until_state(&live, JobState::Succeeded, 30).await;
    let pos = runs.lock().unwrap().iter().position(|(j, _, _)| *j == live).unwrap();
    assert!(pos < 3, "the live job ran {}th, behind the batch", pos + 1);
}

#[actix_rt::test]
async fn a_paused_stage_runs_nothing_and_loses_nothing() {
    let runs: Runs = Default::default();
    let registry = Registry::new()
        .kind(JobKind::new("two", &[("fetch", "fetch", &[]), ("work", "work", &["fetch"])]))
        .executor("fetch", recording(&runs, |_| Ok(())))
        .executor("work", recording(&runs, |_| Ok(())));
    let h = Harness::start(registry, config(&[("work", 2)]), Arc::new(SystemClock));
    h.app.set_paused(PauseScope::Stage("work".into()), true).unwrap();
    let ids: Vec<_> = (0..20).map(|_| h.enqueue("two", None)).collect();
    h.until(10, "every fetch step to succeed", |h| {
        ids.iter().all(|id| h.job(id).step("fetch").unwrap().state == StepState::Succeeded)
    })
    .await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert!(runs.lock().unwrap().iter().all(|(_, s, _)| s == "fetch"), "a paused stage ran work");
    let queued = h.app.queues().unwrap().stages.into_iter().find(|s| s.stage == "work").unwrap();
    assert_eq!((queued.ready, queued.paused), (20, true));
    h.app.set_paused(PauseScope::Stage("work".into()), false).unwrap();
    for id in &ids {
        h.until_state(id, JobState::Succeeded, 10).await;
    }
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 40, "each of 20 jobs ran each of its 2 steps exactly once");
}

#[actix_rt::test]
async fn a_step_failing_n_times_takes_n_plus_one_attempts_with_backoff() {
    const N: u32 = 3;
    let runs: Runs = Default::default();
    let registry = Registry::new().kind(JobKind::new("flaky", &[("work", "work", &[])])).executor(
        "work",
        recording(&runs, |ctx| {
            if ctx.attempt().attempt <= N { Err(StepError::transient("upstream_busy", "try later")) } else { Ok(()) }
        }),
    );
    let clock = ManualClock::new(1_767_225_600_000);
    let mut cfg = config(&[]);
    cfg.retry =
        RetryPolicy { max_attempts: 10, initial_delay: Duration::from_secs(10), max_delay: Duration::from_secs(25) };
    let policy = cfg.retry;
    let h = Harness::start(registry, cfg, Arc::new(clock.clone()));
    let id = h.enqueue("flaky", None);
    for attempt in 1..=N {
        h.until(10, &format!("attempt {attempt} to fail"), |h| {
            let s = h.job(&id);
            let s = s.step("work").unwrap();
            s.attempts == attempt && s.state == StepState::Failed
        })
        .await;
        let job = h.job(&id);
        assert_eq!(job.state, JobState::Failed, "failed = a retry is pending");
        let step = job.step("work").unwrap();
        assert_eq!(step.error.as_ref().unwrap().code, "upstream_busy");
        let wait = step.retry_at.unwrap() - clock.now_ms();
        assert!(
            (0..=policy.cap(attempt).as_millis() as i64).contains(&wait),
            "backoff {wait} ms after attempt {attempt} exceeds its cap {:?}",
            policy.cap(attempt)
        );
        if wait > 0 {
            // Time stands still: the retry must not happen.
            actix_rt::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(h.job(&id).step("work").unwrap().attempts, attempt, "retried before its backoff elapsed");
        }
        clock.set(step.retry_at.unwrap());
    }
    h.until_state(&id, JobState::Succeeded, 10).await;
    assert_eq!(h.job(&id).step("work").unwrap().attempts, N + 1);
    assert_eq!(runs.lock().unwrap().len(), (N + 1) as usize);
}

#[actix_rt::test]
async fn retries_run_out_into_dead() {
    let registry = Registry::new()
        .kind(JobKind::new("doomed", &[("work", "work", &[])]))
        .executor("work", |_: &StepContext| -> Result<StepOutput, StepError> {
            Err(StepError::transient("io", "nope"))
        });
    let mut cfg = config(&[]);
    cfg.retry =
        RetryPolicy { max_attempts: 3, initial_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
    let h = Harness::start(registry, cfg, Arc::new(SystemClock));
    let id = h.enqueue("doomed", None);
    h.until_state(&id, JobState::Dead, 10).await;
    let job = h.job(&id);
    assert_eq!(job.step("work").unwrap().attempts, 3);
    assert!(job.finished_at.is_some());
}

#[actix_rt::test]
async fn a_panicking_stage_is_restarted_and_the_job_still_completes() {
    let runs: Runs = Default::default();
    let registry = Registry::new().kind(JobKind::new("boom", &[("work", "work", &[])])).executor(
        "work",
        recording(&runs, |ctx| {
            if ctx.attempt().attempt == 1 {
                panic!("decoder exploded");
            }
            Ok(())
        }),
    );
    let h = Harness::start(registry, config(&[("work", 1)]), Arc::new(SystemClock));
    let id = h.enqueue("boom", None);
    h.until_state(&id, JobState::Succeeded, 10).await;
    let events = h.app.journal.events(&id).unwrap();
    let failed = events.iter().find(|e| e.kind == "failed").expect("the panicking attempt is recorded");
    assert_eq!(failed.error.as_ref().unwrap().code, "panic");
    assert!(failed.error.as_ref().unwrap().message.contains("decoder exploded"));
    assert_eq!(h.job(&id).step("work").unwrap().attempts, 2);
    assert_eq!(h.metrics.get(metrics::ACTOR_RESTARTS, &[("stage", "work")]), 1.0);
    // The single worker thread survived its actor's panic: the stage still serves.
    let more: Vec<_> = (0..3).map(|_| h.enqueue("boom", None)).collect();
    for id in &more {
        h.until_state(id, JobState::Succeeded, 10).await;
    }
    assert_eq!(h.metrics.get(metrics::ACTOR_RESTARTS, &[("stage", "work")]), 4.0);
}

#[actix_rt::test]
async fn retrying_a_dead_job_reruns_only_its_failed_tail() {
    let runs: Runs = Default::default();
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    let registry = Registry::new()
        .kind(JobKind::new("chain", &[("a", "s", &[]), ("b", "s", &["a"]), ("c", "s", &["b"])]))
        .executor(
            "s",
            recording(&runs, move |ctx| {
                if ctx.attempt().step == "b" && b.load(Ordering::SeqCst) {
                    return Err(StepError::permanent("unsupported_audio", "cannot decode"));
                }
                Ok(())
            }),
        );
    let h = Harness::start(registry, config(&[]), Arc::new(SystemClock));
    let id = h.enqueue("chain", None);
    h.until_state(&id, JobState::Dead, 10).await;
    let job = h.job(&id);
    assert_eq!(job.step("b").unwrap().attempts, 1, "a permanent error is not retried");
    assert_eq!(job.step("c").unwrap().state, StepState::Skipped, "a step the dead job never ran");
    broken.store(false, Ordering::SeqCst);
    let retried = h.app.retry(&id).unwrap();
    assert_eq!(retried.id, id, "same job id");
    h.until_state(&id, JobState::Succeeded, 10).await;
    let steps: Vec<_> = runs.lock().unwrap().iter().map(|(_, s, a)| format!("{s}#{a}")).collect();
    assert_eq!(steps, ["a#1", "b#1", "b#2", "c#1"], "a was memoized");
}

#[actix_rt::test]
async fn cancel_reaches_a_running_step_between_chunks() {
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let saw = saw_cancel.clone();
    let registry = Registry::new()
        .kind(JobKind::new("long", &[("work", "work", &[]), ("after", "work", &["work"])]))
        .executor("work", move |ctx: &StepContext| -> Result<StepOutput, StepError> {
            for _ in 0..1000 {
                if let Err(e) = ctx.checkpoint() {
                    saw.store(true, Ordering::SeqCst);
                    return Err(e);
                }
                sleep_ms(10);
            }
            Ok(StepOutput::default())
        });
    let h = Harness::start(registry, config(&[]), Arc::new(SystemClock));
    let id = h.enqueue("long", None);
    h.until(10, "the step to run", |h| h.job(&id).step("work").unwrap().state == StepState::Running).await;
    h.app.cancel(&id).unwrap();
    h.until(10, "the running step to end cancelled", |h| {
        h.job(&id).step("work").unwrap().state == StepState::Cancelled
    })
    .await;
    assert!(saw_cancel.load(Ordering::SeqCst));
    let job = h.job(&id);
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.step("after").unwrap().state, StepState::Cancelled);
}

#[actix_rt::test]
async fn a_step_without_progress_is_cancelled_and_retried() {
    let registry = Registry::new().kind(JobKind::new("stuck", &[("work", "work", &[])])).executor(
        "work",
        |ctx: &StepContext| -> Result<StepOutput, StepError> {
            if ctx.attempt().attempt > 1 {
                return Ok(StepOutput::default());
            }
            // Frozen: never reports progress, but does notice cancellation.
            while !ctx.is_cancelled() {
                sleep_ms(5);
            }
            Err(StepError::cancelled())
        },
    );
    let clock = ManualClock::new(1_767_225_600_000);
    let mut cfg = config(&[]);
    cfg.scheduler.stall_timeout = Duration::from_secs(60);
    cfg.retry.initial_delay = Duration::ZERO;
    cfg.retry.max_delay = Duration::ZERO;
    let h = Harness::start(registry, cfg, Arc::new(clock.clone()));
    let id = h.enqueue("stuck", None);
    h.until(10, "the step to run", |h| h.job(&id).step("work").unwrap().state == StepState::Running).await;
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.job(&id).step("work").unwrap().state, StepState::Running, "alive until the stall timeout");
    clock.advance(Duration::from_secs(61));
    h.until_state(&id, JobState::Succeeded, 10).await;
    let events = h.app.journal.events(&id).unwrap();
    assert!(events.iter().any(|e| e.error.as_ref().is_some_and(|e| e.code == "stalled")), "{events:?}");
    assert_eq!(h.metrics.get(metrics::STEPS_STALLED, &[("stage", "work")]), 1.0);
}

#[actix_rt::test]
async fn a_tenant_never_exceeds_its_in_flight_limit() {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (now.clone(), peak.clone());
    let registry = Registry::new().kind(JobKind::new("one", &[("work", "work", &[])])).executor(
        "work",
        move |_: &StepContext| -> Result<StepOutput, StepError> {
            let c = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(c, Ordering::SeqCst);
            sleep_ms(60);
            n.fetch_sub(1, Ordering::SeqCst);
            Ok(StepOutput::default())
        },
    );
    let mut cfg = config(&[("work", 4)]);
    cfg.scheduler.tenant_max_in_flight = 2;
    let h = Harness::start(registry, cfg, Arc::new(SystemClock));
    let ids: Vec<_> = (0..8).map(|_| h.enqueue("one", None)).collect();
    for id in &ids {
        h.until_state(id, JobState::Succeeded, 10).await;
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "at most 2 in flight for one tenant, and 2 were reached");
}

#[actix_rt::test]
async fn waiting_on_a_full_stage_is_counted_as_backpressure() {
    let registry = Registry::new().kind(JobKind::new("one", &[("work", "work", &[])])).executor(
        "work",
        |_: &StepContext| -> Result<StepOutput, StepError> {
            sleep_ms(50);
            Ok(StepOutput::default())
        },
    );
    let h = Harness::start(registry, config(&[("work", 1)]), Arc::new(SystemClock));
    let ids: Vec<_> = (0..5).map(|_| h.enqueue("one", None)).collect();
    for id in &ids {
        h.until_state(id, JobState::Succeeded, 10).await;
    }
    let waited = h.metrics.get(metrics::STAGE_BACKPRESSURE, &[("stage", "work")]);
    assert!(waited >= 0.1, "4 jobs waited ~50 ms each on a 1-worker stage, but only {waited} s was counted");
}

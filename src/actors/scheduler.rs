//! The scheduler: the one actor that decides what runs where.
//!
//! - Fairness: ready work sits in FIFO queues (one per tenant, one per batch); the scheduler serves
//!   the queues round-robin per stage: each free slot of a stage goes to the next queue after the one
//!   that got that stage's previous slot.
//! - Bounded stages: each stage has `workers` slots; a step is sent only into a free slot (credits),
//!   so a stage's mailbox never holds more than its workers can take. Time during which ready work
//!   waited on a full stage is added to `lectern_stage_backpressure_seconds_total{stage}`.
//! - Limits: at most `tenant-max-in-flight` running steps per tenant.
//! - Durability: claims and outcomes are journal transactions; outcomes arriving together are
//!   committed in one transaction (group commit) before anything new is dispatched.
//! - Leases: running steps' leases are renewed every `heartbeat-interval`; a step with no progress
//!   for `stall-timeout` is cancelled and retried; other owners' steps whose lease lapsed for
//!   `lease-timeout` are taken back. At start, everything another process left running is taken back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use super::stage::{AttemptResult, Attempted, RunStep, StageWorker};
use crate::clock::{Millis, SharedClock};
use crate::config::Config;
use crate::engine::{CancelToken, StepContext, executor::ProgressCell};
use crate::journal::{AttemptRef, ClaimedStep, ErrorInfo, Finished, Journal, Outcome, ReadyStep, ReclaimScope};
use crate::metrics::{self, Metrics};
use crate::storage::BlobStore;

/// The scheduler's own mailbox: wake-ups and observations only (work never queues here), so a small
/// bound is plenty; a full mailbox just drops a redundant wake-up.
const SCHEDULER_MAILBOX: usize = 64;

/// How long to wait before retrying a journal write that failed.
const JOURNAL_RETRY_MS: u64 = 500;

/// Everything the scheduler needs.
pub struct SchedulerDeps {
    pub journal: Arc<dyn Journal>,
    pub clock: SharedClock,
    pub blobs: Arc<dyn BlobStore>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// This process's lease owner id.
    pub owner: String,
    /// Stage name → (worker pool address, worker count).
    pub stages: BTreeMap<String, (Addr<StageWorker>, usize)>,
}

struct Stage {
    addr: Addr<StageWorker>,
    workers: usize,
    running: usize,
    /// Since when ready work has waited for a free worker of this stage.
    blocked_since: Option<Instant>,
}

struct Running {
    stage: String,
    tenant: String,
    budget_used: u32,
    cancel: CancelToken,
    progress: ProgressCell,
    stalled: bool,
    /// Cancelled because the process is shutting down: hand back, do not charge.
    releasing: bool,
    since: Millis,
}

pub struct Scheduler {
    d: SchedulerDeps,
    stages: BTreeMap<String, Stage>,
    running: HashMap<AttemptRef, Running>,
    tenant_in_flight: HashMap<String, usize>,
    /// The queue served last (round-robin position).
    /// Per stage: the queue that got the stage's last slot.
    cursors: HashMap<String, String>,
    /// Outcomes waiting for the next group commit.
    done: Vec<(AttemptRef, Outcome)>,
    flush_scheduled: bool,
    last_heartbeat: Millis,
    rng: StdRng,
    /// Shutting down: dispatch nothing new.
    draining: bool,
    /// The data dir's disk is nearly full: dispatch nothing new until space returns.
    disk_low: bool,
    /// Attempts stopped by the shutdown, to hand back without charging their budget.
    released: Vec<AttemptRef>,
    /// Events reported by running steps, recorded on the next tick.
    notes_tx: std::sync::mpsc::Sender<crate::engine::executor::StepNote>,
    notes_rx: std::sync::mpsc::Receiver<crate::engine::executor::StepNote>,
}

/// Look at the journal for work now (sent after an in-process enqueue or operator action).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// A snapshot of the scheduler's state, for `/debug/pipeline`.
#[derive(Message)]
#[rtype(result = "Snapshot")]
pub struct Observe;

#[derive(Debug, Clone, Serialize, MessageResponse)]
pub struct Snapshot {
    pub owner: String,
    pub stages: Vec<StageSnapshot>,
    pub running: Vec<RunningSnapshot>,
    pub pending_commits: usize,
    /// New work is held because the data dir's disk is nearly full.
    pub disk_low: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageSnapshot {
    pub stage: String,
    pub workers: usize,
    pub running: usize,
    pub blocked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunningSnapshot {
    pub job_id: String,
    pub step: String,
    pub attempt: u32,
    pub stage: String,
    pub tenant: String,
    pub last_progress_ms: Millis,
    pub stalled: bool,
}

impl Scheduler {
    pub fn new(d: SchedulerDeps) -> Self {
        let (notes_tx, notes_rx) = std::sync::mpsc::channel();
        let stages = d
            .stages
            .iter()
            .map(|(name, (addr, workers))| {
                let s = Stage { addr: addr.clone(), workers: *workers, running: 0, blocked_since: None };
                (name.clone(), s)
            })
            .collect();
        Self {
            d,
            stages,
            running: HashMap::new(),
            tenant_in_flight: HashMap::new(),
            cursors: HashMap::new(),
            done: Vec::new(),
            flush_scheduled: false,
            last_heartbeat: 0,
            rng: StdRng::from_os_rng(),
            draining: false,
            disk_low: false,
            released: Vec::new(),
            notes_tx,
            notes_rx,
        }
    }

    /// Records the events running steps reported since the last tick.
    fn record_notes(&mut self) {
        while let Ok(n) = self.notes_rx.try_recv() {
            if let Err(e) = self.d.journal.record_event(&n.attempt, &n.kind, n.detail, n.at) {
                self.journal_error("record_event", &e);
            }
        }
    }

    fn now(&self) -> Millis {
        self.d.clock.now_ms()
    }

    fn journal_error(&self, op: &str, e: &crate::journal::Error) {
        self.d.metrics.inc(metrics::JOURNAL_ERRORS, &[("op", op)]);
        tracing::error!(op, error = %e, "journal operation failed");
    }

    /// Takes back everything a previous process left running. Called once at start.
    fn recover(&mut self) {
        let now = self.now();
        let config = self.d.config.clone();
        let decide = |step: &str, used: u32| {
            let p = config.retry_for(step);
            (used < p.max_attempts).then_some(now)
        };
        let scope = ReclaimScope::AllBut { owner: self.d.owner.clone() };
        match self.d.journal.reclaim(&scope, now, &decide) {
            Ok(back) => {
                for r in &back {
                    self.d.metrics.inc(metrics::STEPS_RECLAIMED, &[("stage", &r.stage)]);
                    tracing::warn!(job.id = %r.attempt.job_id, step = %r.attempt.step, attempt = r.attempt.attempt,
                        previous_owner = ?r.lease_owner, job_state = %r.job_state, "took back interrupted step");
                }
                tracing::info!(count = back.len(), "recovery done");
            }
            Err(e) => self.journal_error("reclaim", &e),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.record_notes();
        let now = self.now();
        let sc = self.d.config.scheduler.clone();
        if now - self.last_heartbeat >= sc.heartbeat_interval.as_millis() as Millis {
            self.last_heartbeat = now;
            self.watch_running(now, sc.stall_timeout.as_millis() as Millis);
            let before = now - sc.lease_timeout.as_millis() as Millis;
            self.reclaim_stale(now, before);
        }
        self.dispatch(ctx);
    }

    /// Renews live leases, signals cancellations, and cancels steps that stopped making progress.
    fn watch_running(&mut self, now: Millis, stall_after: Millis) {
        if self.running.is_empty() {
            return;
        }
        let ids: Vec<&str> = self.running.keys().map(|a| a.job_id.as_str()).collect();
        let cancelled = match self.d.journal.cancelled_jobs(&ids) {
            Ok(c) => c,
            Err(e) => return self.journal_error("cancelled_jobs", &e),
        };
        let mut alive = Vec::new();
        for (a, r) in self.running.iter_mut() {
            if cancelled.contains(&a.job_id) && !r.cancel.is_cancelled() {
                tracing::info!(job.id = %a.job_id, step = %a.step, "signalling cancellation to running step");
                r.cancel.cancel();
            }
            if !r.stalled && now - r.progress.last() > stall_after {
                tracing::warn!(job.id = %a.job_id, step = %a.step, "step reported no progress; cancelling it");
                self.d.metrics.inc(metrics::STEPS_STALLED, &[("stage", &r.stage)]);
                r.stalled = true;
                r.cancel.cancel();
            }
            if !r.stalled {
                alive.push(a.clone());
            }
        }
        if let Err(e) = self.d.journal.heartbeat(&alive, &self.d.owner, now) {
            self.journal_error("heartbeat", &e);
        }
    }

    /// Takes back steps of other owners whose lease lapsed (a node that died or went silent).
    fn reclaim_stale(&mut self, now: Millis, before: Millis) {
        let config = self.d.config.clone();
        let decide = |step: &str, used: u32| (used < config.retry_for(step).max_attempts).then_some(now);
        match self.d.journal.reclaim(&ReclaimScope::StaleSince { before }, now, &decide) {
            Ok(back) => {
                for r in back {
                    self.d.metrics.inc(metrics::STEPS_RECLAIMED, &[("stage", &r.stage)]);
                    tracing::warn!(job.id = %r.attempt.job_id, step = %r.attempt.step, owner = ?r.lease_owner,
                        "took back step whose lease lapsed");
                }
            }
            Err(e) => self.journal_error("reclaim", &e),
        }
    }

    /// Whether the data dir's disk has room for new work: below a quarter of `data.min-free-bytes`
    /// (uploads are refused below all of it) nothing new starts, so the journal keeps room to
    /// commit what runs; dispatch resumes by itself once space returns.
    fn room_for_work(&mut self) -> bool {
        let hold_below = self.d.config.data.min_free_bytes / 4;
        let low = crate::storage::free_bytes(&self.d.config.data.dir).is_some_and(|f| f < hold_below);
        if low != self.disk_low {
            self.disk_low = low;
            if low {
                tracing::error!(hold_below, "disk nearly full: holding new work until space returns");
            } else {
                tracing::info!("disk space is back: dispatching again");
            }
        }
        !low
    }

    /// Fills free worker slots from the queues, round-robin.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.flush_scheduled || self.draining {
            return; // outcomes first: they may free dependants and they hold slots' results
        }
        if !self.room_for_work() {
            return;
        }
        let now = self.now();
        self.note_blocked_stages(now);
        let free: Vec<&str> =
            self.stages.iter().filter(|(_, s)| s.running < s.workers).map(|(n, _)| n.as_str()).collect();
        if free.is_empty() {
            return;
        }
        let slots: usize = self.stages.values().map(|s| s.workers.saturating_sub(s.running)).sum();
        let queues = match self.d.journal.active_queues(now) {
            Ok(q) => q,
            Err(e) => return self.journal_error("active_queues", &e),
        };
        if queues.is_empty() {
            return;
        }
        let mut candidates: Vec<(String, std::collections::VecDeque<ReadyStep>)> = Vec::new();
        for q in &queues {
            match self.d.journal.ready_steps(q, &free, now, slots) {
                Ok(r) => candidates.push((q.clone(), r.into())),
                Err(e) => return self.journal_error("ready_steps", &e),
            }
        }
        let picks = self.pick_round_robin(&mut candidates);
        if picks.is_empty() {
            return;
        }
        let claimed = match self.d.journal.claim(&picks, &self.d.owner, now) {
            Ok(c) => c,
            Err(e) => {
                for p in &picks {
                    self.release(&p.stage, &p.tenant);
                }
                return self.journal_error("claim", &e);
            }
        };
        for (pick, c) in picks.iter().zip(claimed) {
            match c {
                Some(c) => self.start(c, ctx),
                None => self.release(&pick.stage, &pick.tenant),
            }
        }
    }

    /// Round-robin per stage: each free slot of a stage goes to the next queue, after the one that
    /// got that stage's previous slot, with a ready step of that stage (skipping steps whose tenant
    /// is at its in-flight limit). A cursor per stage, not one for all: otherwise a queue served
    /// in one stage (an upload's probe) would lose its turn in the next (its transcode) to a batch.
    /// `candidates` are in queue order. Reserves a slot for each pick.
    fn pick_round_robin(
        &mut self,
        candidates: &mut [(String, std::collections::VecDeque<ReadyStep>)],
    ) -> Vec<ReadyStep> {
        let max_tenant = self.d.config.scheduler.tenant_max_in_flight;
        let mut picks = Vec::new();
        let stages: Vec<String> = self.stages.keys().cloned().collect();
        for stage in stages {
            loop {
                let free = self.stages.get(&stage).is_some_and(|st| st.running < st.workers);
                if !free || candidates.is_empty() {
                    break;
                }
                let n = candidates.len();
                let start =
                    self.cursors.get(&stage).and_then(|c| candidates.iter().position(|(q, _)| q > c)).unwrap_or(0);
                let mut picked = None;
                for k in 0..n {
                    let (queue, steps) = &mut candidates[(start + k) % n];
                    let fits = |s: &ReadyStep| {
                        s.stage == stage && self.tenant_in_flight.get(&s.tenant).copied().unwrap_or(0) < max_tenant
                    };
                    if let Some(i) = steps.iter().position(fits) {
                        picked = Some((queue.clone(), steps.remove(i).expect("position is in range")));
                        break;
                    }
                }
                let Some((queue, s)) = picked else { break };
                if let Some(st) = self.stages.get_mut(&s.stage) {
                    st.running += 1;
                }
                *self.tenant_in_flight.entry(s.tenant.clone()).or_default() += 1;
                self.cursors.insert(stage.clone(), queue);
                picks.push(s);
            }
        }
        picks
    }

    /// Marks full stages that have ready work as blocked (the start of a backpressure interval).
    fn note_blocked_stages(&mut self, now: Millis) {
        let full: Vec<String> = self
            .stages
            .iter()
            .filter(|(_, s)| s.running >= s.workers && s.blocked_since.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in full {
            if let (Ok(true), Some(s)) = (self.d.journal.has_ready(&name, now), self.stages.get_mut(&name)) {
                s.blocked_since = Some(Instant::now());
            }
        }
    }

    fn release(&mut self, stage: &str, tenant: &str) {
        if let Some(st) = self.stages.get_mut(stage) {
            st.running = st.running.saturating_sub(1);
            if let Some(since) = st.blocked_since.take() {
                let waited = since.elapsed().as_secs_f64();
                self.d.metrics.add(metrics::STAGE_BACKPRESSURE, &[("stage", stage)], waited);
            }
            self.d.metrics.set(metrics::STAGE_RUNNING, &[("stage", stage)], st.running as f64);
        }
        if let Some(n) = self.tenant_in_flight.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tenant_in_flight.remove(tenant);
            }
        }
    }

    fn start(&mut self, c: ClaimedStep, ctx: &mut Context<Self>) {
        let Some(stage) = self.stages.get(&c.stage) else {
            // Claimed only from `free`, which lists known stages.
            tracing::error!(stage = %c.stage, "claimed a step of an unknown stage");
            return;
        };
        let addr = stage.addr.clone();
        self.d.metrics.set(metrics::STAGE_RUNNING, &[("stage", &c.stage)], stage.running as f64);
        self.d.metrics.inc(metrics::DISPATCHES, &[("stage", &c.stage)]);
        let key = c.attempt.clone();
        let run = Running {
            stage: c.stage.clone(),
            tenant: c.tenant.clone(),
            budget_used: c.budget_used,
            cancel: CancelToken::default(),
            progress: ProgressCell::new(self.now()),
            stalled: false,
            releasing: false,
            since: self.now(),
        };
        let mut step_ctx = StepContext::new(c, self.d.blobs.clone(), self.d.clock.clone());
        step_ctx.cancel = run.cancel.clone();
        step_ctx.progress = run.progress.clone();
        step_ctx.notes = Some(self.notes_tx.clone());
        tracing::info!(job.id = %key.job_id, step = %key.step, attempt = key.attempt, "dispatched");
        self.running.insert(key.clone(), run);
        addr.send(RunStep(step_ctx)).into_actor(self).map(move |res, act, ctx| act.attempted(key, res, ctx)).spawn(ctx);
    }

    /// A worker answered (or its mailbox closed): decide the outcome and queue it for commit.
    fn attempted(&mut self, key: AttemptRef, res: Result<Attempted, MailboxError>, ctx: &mut Context<Self>) {
        let Some(run) = self.running.remove(&key) else { return };
        self.release(&run.stage, &run.tenant);
        let now = self.now();
        let (result, secs) = match res {
            Ok(a) => (a.result, a.elapsed.as_secs_f64()),
            Err(e) => (AttemptResult::Panicked(format!("stage worker gone: {e}")), (now - run.since) as f64 / 1e3),
        };
        self.d.metrics.add(metrics::STEP_SECONDS, &[("stage", &run.stage)], secs);
        let outcome = match result {
            AttemptResult::Done(out) => {
                Outcome::Succeeded { output_ref: out.output_ref, sha256: out.sha256, output: out.output }
            }
            AttemptResult::Failed(e) if e.is_cancelled() && run.stalled => {
                let msg = format!("no progress for {:?}", self.d.config.scheduler.stall_timeout);
                self.failure(&key.step, run.budget_used, ErrorInfo::new("stalled", msg), true, now)
            }
            AttemptResult::Failed(e) if e.is_cancelled() && run.releasing => {
                self.released.push(key);
                return;
            }
            AttemptResult::Failed(e) if e.is_cancelled() && run.cancel.is_cancelled() => Outcome::Cancelled,
            AttemptResult::Failed(e) => {
                self.failure(&key.step, run.budget_used, ErrorInfo::new(e.code, e.message), e.transient, now)
            }
            AttemptResult::Panicked(msg) => {
                self.failure(&key.step, run.budget_used, ErrorInfo::new("panic", msg), true, now)
            }
        };
        let label = match &outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { retry_at: Some(_), .. } => "retry",
            Outcome::Failed { retry_at: None, .. } => "dead",
            Outcome::Cancelled => "cancelled",
        };
        let m = &self.d.metrics;
        m.inc(metrics::STEP_ATTEMPTS, &[("stage", &run.stage), ("outcome", label)]);
        m.observe(metrics::STEP_DURATION, &[("stage", &run.stage), ("outcome", label)], secs);
        match &outcome {
            Outcome::Failed { error, retry_at: Some(_) } => {
                m.inc(metrics::STEP_RETRIES, &[("stage", &run.stage), ("code", &error.code)]);
            }
            Outcome::Failed { error, retry_at: None } => {
                m.inc(metrics::JOBS_DEAD, &[("stage", &run.stage), ("code", &error.code)]);
            }
            // The real-time factor of a whole (not resumed) transcription.
            Outcome::Succeeded { output: Some(out), .. } if run.stage == "transcribe" => {
                if let (Some(rtf), Some(0)) =
                    (out.get("rtf").and_then(|r| r.as_f64()), out.get("windows_resumed").and_then(|r| r.as_u64()))
                {
                    m.observe(metrics::TRANSCRIBE_RTF, &[], rtf);
                }
            }
            _ => {}
        }
        tracing::info!(job.id = %key.job_id, step = %key.step, attempt = key.attempt, outcome = label, "attempt ended");
        self.done.push((key, outcome));
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    fn failure(&mut self, step: &str, budget_used: u32, error: ErrorInfo, transient: bool, now: Millis) -> Outcome {
        let policy = self.d.config.retry_for(step);
        let retry_at = if transient {
            policy.backoff(budget_used, &mut self.rng).map(|d| now + d.as_millis() as Millis)
        } else {
            None
        };
        Outcome::Failed { error, retry_at }
    }

    /// Commits every outcome gathered since the last flush in one transaction, then dispatches.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.flush_scheduled = false;
        self.record_notes(); // a step's own events come before its outcome in the timeline
        if self.done.is_empty() {
            return self.dispatch(ctx);
        }
        let batch = std::mem::take(&mut self.done);
        match self.d.journal.finish(&batch, self.now()) {
            Ok(results) => {
                for ((a, _), f) in batch.iter().zip(results) {
                    if f == Finished::Stale {
                        tracing::warn!(job.id = %a.job_id, step = %a.step, "outcome of a lost lease ignored");
                    }
                }
                self.dispatch(ctx);
            }
            Err(e) => {
                self.journal_error("finish", &e);
                self.done = batch;
                self.flush_scheduled = true;
                ctx.notify_later(Flush, std::time::Duration::from_millis(JOURNAL_RETRY_MS));
            }
        }
    }

    /// Stops dispatching and asks every running step to stop; they end up in `released`.
    fn begin_shutdown(&mut self) {
        self.draining = true;
        for (a, r) in self.running.iter_mut() {
            tracing::info!(job.id = %a.job_id, step = %a.step, "asking running step to stop for shutdown");
            r.releasing = true;
            r.cancel.cancel();
        }
    }

    /// Commits pending outcomes and hands back released and still-running attempts.
    fn end_shutdown(&mut self) {
        self.record_notes();
        let now = self.now();
        if !self.done.is_empty() {
            let batch = std::mem::take(&mut self.done);
            if let Err(e) = self.d.journal.finish(&batch, now) {
                self.journal_error("finish", &e);
            }
        }
        let mut back = std::mem::take(&mut self.released);
        back.extend(self.running.keys().cloned());
        match self.d.journal.release(&back, now) {
            Ok(_) => tracing::info!(released = back.len(), "running steps handed back for the next start"),
            Err(e) => self.journal_error("release", &e),
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            owner: self.d.owner.clone(),
            stages: self
                .stages
                .iter()
                .map(|(n, s)| StageSnapshot {
                    stage: n.clone(),
                    workers: s.workers,
                    running: s.running,
                    blocked: s.blocked_since.is_some(),
                })
                .collect(),
            running: self
                .running
                .iter()
                .map(|(a, r)| RunningSnapshot {
                    job_id: a.job_id.clone(),
                    step: a.step.clone(),
                    attempt: a.attempt,
                    stage: r.stage.clone(),
                    tenant: r.tenant.clone(),
                    last_progress_ms: r.progress.last(),
                    stalled: r.stalled,
                })
                .collect(),
            pending_commits: self.done.len(),
            disk_low: self.disk_low,
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(SCHEDULER_MAILBOX);
        for (name, s) in &self.stages {
            self.d.metrics.set(metrics::STAGE_WORKERS, &[("stage", name)], s.workers as f64);
        }
        self.recover();
        ctx.run_interval(self.d.config.scheduler.poll_interval, |_, ctx| ctx.notify(Tick));
        ctx.notify(Tick);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        tracing::info!(running = self.running.len(), "scheduler stopped");
    }
}

/// Runs a handler body; a panic in the scheduler is logged and counted instead of killing the
/// arbiter. The journal stays the source of truth, so the next tick works from it again.
fn guarded(act: &mut Scheduler, what: &str, f: impl FnOnce(&mut Scheduler)) {
    let metrics = act.d.metrics.clone();
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(act))) {
        let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
        metrics.inc(metrics::ACTOR_RESTARTS, &[("stage", "scheduler")]);
        tracing::error!(handler = what, panic = ?msg, "scheduler handler panicked");
    }
}

impl Handler<Tick> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        guarded(self, "tick", |s| s.tick(ctx));
    }
}

impl Handler<Wake> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        guarded(self, "wake", |s| s.dispatch(ctx));
    }
}

impl Handler<Flush> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        guarded(self, "flush", |s| s.flush(ctx));
    }
}

/// Drain for shutdown: stop dispatching, ask running steps to stop, wait up to `grace` for them,
/// commit what finished and hand the rest back (uncharged). Answers when done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub grace: std::time::Duration,
}

impl Handler<Shutdown> for Scheduler {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.begin_shutdown();
        let deadline = Instant::now() + msg.grace;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        // Outcomes keep arriving while this interval runs, so `running` drains as steps return.
        ctx.run_interval(std::time::Duration::from_millis(20), move |act, _| {
            if tx.is_some() && (act.running.is_empty() || Instant::now() >= deadline) {
                act.end_shutdown();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        });
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Observe> for Scheduler {
    type Result = Snapshot;
    fn handle(&mut self, _: Observe, _: &mut Context<Self>) -> Snapshot {
        self.snapshot()
    }
}

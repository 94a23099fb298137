//! The job journal: the source of truth for tenants, media, jobs, steps, their event history,
//! idempotency keys and pause state.
//!
//! The journal is policy-free: it never decides how long to back off or whether an error is worth
//! retrying. Callers (the scheduler) pass those decisions in (`retry_at`), and the journal applies
//! them atomically together with the state change and its timeline event.
//!
//! Every backend passes the suite in [`conformance_tests`].

pub mod hooks;
mod schema;
pub mod sqlite;

#[cfg(any(test, feature = "testsuite"))]
pub mod conformance_tests;

use serde::{Deserialize, Serialize};

use crate::clock::{Millis, rfc3339};

pub use sqlite::SqliteJournal;

/// The tenant every single-user installation works under.
pub const DEFAULT_TENANT: &str = "default";

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("journal storage error: {0}")]
    Storage(String),
    #[error("{what} not found: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("journal schema version {found} is newer than this binary understands ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("invalid job: {0}")]
    Invalid(String),
}

impl Error {
    /// Busy databases and I/O hiccups are worth another try; logical errors are not.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Storage(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A job's state, as in the public contract. `failed`: a step will be retried after its backoff;
/// `dead`: retries are spent or the error is permanent (the dead-letter state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// A step failed and waits for its backoff to retry.
    Failed,
    Succeeded,
    /// Retries exhausted or a permanent error: the dead-letter state.
    Dead,
    Cancelled,
}

/// A step's state, as in the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for the steps it depends on.
    Pending,
    /// Ready to run.
    Queued,
    Running,
    Succeeded,
    /// Failed; `retry_at` set means a retry is scheduled, unset means final.
    Failed,
    Skipped,
    Cancelled,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(JobState { Queued = "queued", Running = "running", Failed = "failed", Succeeded = "succeeded",
    Dead = "dead", Cancelled = "cancelled" });
str_enum!(StepState { Pending = "pending", Queued = "queued", Running = "running", Succeeded = "succeeded",
    Failed = "failed", Skipped = "skipped", Cancelled = "cancelled" });

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Cancelled)
    }
}

/// A machine-readable error code plus a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Serialised as RFC 3339, like every other timestamp of the API.
    #[serde(serialize_with = "ser_rfc3339")]
    pub created_at: Millis,
}

fn ser_rfc3339<S: serde::Serializer>(ms: &Millis, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Media {
    pub id: String,
    pub tenant: String,
    pub title: Option<String>,
    pub created_at: Millis,
    /// Free-form metadata written by the pipeline's steps (probe results, loudness, ...).
    pub meta: serde_json::Value,
}

/// One step of a job's DAG, as declared by its job kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    /// The worker pool that runs it.
    pub stage: String,
    pub deps: Vec<String>,
}

/// What `enqueue` needs.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant: String,
    pub media_id: Option<String>,
    pub kind: String,
    pub params: serde_json::Value,
    /// A batch (e.g. a reprocess run) gets its own queue; otherwise the tenant's queue is used.
    pub batch: Option<String>,
    pub idempotency_key: Option<String>,
    pub steps: Vec<StepSpec>,
    /// A media record to create in the same transaction (an upload and its job commit together).
    /// Its id becomes the job's `media_id`.
    pub new_media: Option<NewMedia>,
}

/// A media record created together with its first job.
#[derive(Debug, Clone)]
pub struct NewMedia {
    /// Chosen by the caller, because the upload is stored under it before the commit.
    pub id: String,
    pub title: Option<String>,
    pub meta: serde_json::Value,
}

/// Result of `enqueue`: the job, and whether an idempotency key matched an existing one.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job: JobRecord,
    pub existing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub stage: String,
    pub deps: Vec<String>,
    pub state: StepState,
    /// Attempts made in total (claims), across manual retries.
    pub attempts: u32,
    /// Attempts made since the last manual retry: what the retry policy counts.
    pub budget_used: u32,
    pub retry_at: Option<Millis>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub heartbeat_at: Option<Millis>,
    pub lease_owner: Option<String>,
    pub output_ref: Option<String>,
    pub output_sha256: Option<String>,
    pub output: Option<serde_json::Value>,
    pub error: Option<ErrorInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub seq: i64,
    pub tenant: String,
    pub media_id: Option<String>,
    pub kind: String,
    pub queue: String,
    pub batch: Option<String>,
    pub params: serde_json::Value,
    pub state: JobState,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
    pub steps: Vec<StepRecord>,
}

impl JobRecord {
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The public JSON shape (CONTRACT.md), with a few extra fields.
    pub fn to_contract_json(&self) -> serde_json::Value {
        let ts = |m: Option<Millis>| m.map(rfc3339);
        let steps: Vec<_> = self
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "stage": s.stage, "state": s.state, "attempts": s.attempts,
                    "depends_on": s.deps,
                    "started_at": ts(s.started_at), "finished_at": ts(s.finished_at),
                    "retry_at": ts(s.retry_at), "output_ref": s.output_ref,
                    "error": s.error,
                })
            })
            .collect();
        serde_json::json!({
            "id": self.id, "tenant": self.tenant, "media_id": self.media_id, "kind": self.kind,
            "state": self.state, "queue": self.queue, "batch": self.batch,
            "created_at": rfc3339(self.created_at), "finished_at": ts(self.finished_at),
            "steps": steps,
        })
    }
}

/// One entry of a job's append-only timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: i64,
    pub at: Millis,
    pub step: Option<String>,
    pub attempt: Option<u32>,
    /// `enqueued`, `started`, `succeeded`, `failed`, `retry_scheduled`, `dead`, `interrupted`,
    /// `cancel_requested`, `cancelled`, `retried`, `completed`, ...
    pub kind: String,
    pub error: Option<ErrorInfo>,
    pub detail: Option<serde_json::Value>,
}

/// Filter for listing jobs. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub tenant: Option<String>,
    pub batch: Option<String>,
    pub media_id: Option<String>,
    /// Only jobs with `seq` below this (pagination, newest first).
    pub before_seq: Option<i64>,
    pub limit: Option<usize>,
}

/// A step ready to run, as found by [`Journal::ready_steps`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyStep {
    pub job_id: String,
    pub job_seq: i64,
    pub step: String,
    pub stage: String,
    pub tenant: String,
    pub queue: String,
    /// Attempts made so far (the claim makes attempt `attempts + 1`).
    pub attempts: u32,
    /// When it became ready (enqueue, dependency done, or backoff elapsed).
    pub ready_at: Millis,
}

/// Identifies one attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptRef {
    pub job_id: String,
    pub step: String,
    pub attempt: u32,
}

/// Everything a stage needs to run a claimed step.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedStep {
    pub attempt: AttemptRef,
    pub stage: String,
    pub tenant: String,
    pub media_id: Option<String>,
    pub kind: String,
    pub params: serde_json::Value,
    /// Attempts since the last manual retry, including this one.
    pub budget_used: u32,
    /// Outputs of the steps this one depends on: (name, output_ref, output JSON).
    pub deps: Vec<(String, Option<String>, Option<serde_json::Value>)>,
}

/// How one attempt ended, with the scheduler's decision already made.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded {
        output_ref: Option<String>,
        sha256: Option<String>,
        output: Option<serde_json::Value>,
    },
    /// `retry_at: None` makes the failure final and the job `dead`.
    Failed {
        error: ErrorInfo,
        retry_at: Option<Millis>,
    },
    Cancelled,
}

/// What `finish` did with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Recorded; the job is now in this state.
    Recorded(JobState),
    /// The attempt no longer holds the step (it was reclaimed or the job retried); nothing changed.
    Stale,
}

/// What pause applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
pub enum PauseScope {
    Stage(String),
    Tenant(String),
    /// One queue, e.g. a batch's `batch:<id>` (a reprocess run), whatever its stages.
    Queue(String),
}

/// Queue depth, per queue and stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStat {
    pub queue: String,
    pub tenant: String,
    pub stage: String,
    /// Steps ready now (queued, or failed with an elapsed backoff).
    pub ready: u64,
    /// Failed steps waiting for their backoff.
    pub waiting_retry: u64,
    pub running: u64,
    /// Ready time of the oldest ready step.
    pub oldest_ready_at: Option<Millis>,
}

/// A running step handed back by [`Journal::reclaim`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reclaimed {
    pub attempt: AttemptRef,
    pub stage: String,
    pub lease_owner: Option<String>,
    /// The job's state after the reclaim (`dead` if the retry budget was spent).
    pub job_state: JobState,
}

/// Which running steps to take back.
#[derive(Debug, Clone)]
pub enum ReclaimScope {
    /// Every running step not held by `owner` (single node, at start-up, holding the data-dir lock).
    AllBut { owner: String },
    /// Running steps whose last heartbeat is older than `before` (a node that went silent).
    StaleSince { before: Millis },
}

/// The journal. Implementations must make every method atomic (one transaction) and durable once
/// it returns.
pub trait Journal: Send + Sync + 'static {
    // ---- tenants and media ----
    fn create_tenant(&self, name: &str, now: Millis) -> Result<Tenant> {
        self.create_tenant_with(name, &hooks::TenantCredentials::default(), now)
    }
    /// Creates a tenant with the hash of its API key and its webhook signing secret.
    fn create_tenant_with(&self, name: &str, creds: &hooks::TenantCredentials, now: Millis) -> Result<Tenant>;
    /// The tenant whose API key hashes to `hash` (SHA-256, hex).
    fn tenant_by_key_hash(&self, hash: &str) -> Result<Option<Tenant>>;
    /// Whether any tenant has an API key (the API stops being open once one does).
    fn any_api_key(&self) -> Result<bool>;
    fn webhook_secret(&self, tenant: &str) -> Result<Option<String>>;
    fn set_webhook_secret_if_unset(&self, tenant: &str, secret: &str) -> Result<()>;

    // ---- webhooks ----
    fn create_endpoint(&self, ep: &hooks::Endpoint) -> Result<()>;
    /// A tenant's endpoints (`None`: every endpoint, operator ones included).
    fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<hooks::Endpoint>>;
    /// Deletes an endpoint (of `tenant` only, when given; another's is `NotFound`).
    fn delete_endpoint(&self, id: &str, tenant: Option<&str>) -> Result<()>;
    /// Claims up to `limit` due deliveries (each attempt counted and leased for
    /// [`sqlite::DELIVERY_LEASE_MS`], so a crash mid-request retries it later).
    fn claim_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<hooks::Delivery>>;
    /// Records how an attempt went, with a `webhook` event in the job's timeline.
    fn record_delivery(&self, d: &hooks::Delivery, r: &hooks::AttemptResult, now: Millis) -> Result<()>;
    fn deliveries(&self, job_id: &str) -> Result<Vec<hooks::DeliveryRecord>>;
    /// The earliest pending delivery's due time.
    fn next_delivery_at(&self) -> Result<Option<Millis>>;
    /// Looks a tenant up by id or by name.
    fn tenant(&self, id_or_name: &str) -> Result<Option<Tenant>>;
    fn tenants(&self) -> Result<Vec<Tenant>>;
    fn create_media(&self, tenant: &str, title: Option<&str>, now: Millis) -> Result<Media>;
    fn media(&self, id: &str) -> Result<Option<Media>>;
    /// Merges `patch` (a JSON object) into the media's metadata.
    fn update_media_meta(&self, id: &str, patch: &serde_json::Value) -> Result<()>;

    // ---- jobs ----
    /// Records a job and its steps (roots `queued`, the rest `pending`). With an idempotency key seen
    /// for the tenant in the last 24 h, returns that job instead (`existing: true`).
    fn enqueue(&self, job: NewJob, now: Millis) -> Result<Enqueued>;
    fn job(&self, id: &str) -> Result<Option<JobRecord>>;
    /// The job an idempotency key of the tenant maps to, if the key was used in the last 24 h.
    fn idempotent_job(&self, tenant: &str, key: &str, now: Millis) -> Result<Option<JobRecord>>;
    /// Media of a tenant, newest first.
    fn media_list(&self, tenant: &str, limit: usize) -> Result<Vec<Media>>;
    /// Newest first.
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>>;
    fn events(&self, job_id: &str) -> Result<Vec<Event>>;
    /// Appends an event a running step reported (e.g. `media.ready` at the first playable segment).
    fn record_event(
        &self,
        attempt: &AttemptRef,
        kind: &str,
        detail: Option<serde_json::Value>,
        now: Millis,
    ) -> Result<()>;

    // ---- scheduling ----
    /// Queues (FIFO lanes) that hold ready steps in unpaused stages and tenants, sorted.
    fn active_queues(&self, now: Millis) -> Result<Vec<String>>;
    /// Ready steps of one queue in the given stages, oldest job first. Paused stages and tenants are
    /// never returned.
    fn ready_steps(&self, queue: &str, stages: &[&str], now: Millis, limit: usize) -> Result<Vec<ReadyStep>>;
    /// Whether any unpaused ready step waits for `stage` (used to measure backpressure).
    fn has_ready(&self, stage: &str, now: Millis) -> Result<bool>;
    /// Claims steps for `owner`, in one transaction. Each entry is `Some` if the step was still ready
    /// with the expected attempt count, `None` if someone else took it or it changed.
    fn claim(&self, steps: &[ReadyStep], owner: &str, now: Millis) -> Result<Vec<Option<ClaimedStep>>>;
    /// Renews the lease of running attempts held by `owner`.
    fn heartbeat(&self, attempts: &[AttemptRef], owner: &str, now: Millis) -> Result<()>;
    /// Records how attempts ended, in one transaction, promoting dependants of succeeded steps.
    fn finish(&self, outcomes: &[(AttemptRef, Outcome)], now: Millis) -> Result<Vec<Finished>>;
    /// Takes back running steps (crashed or silent owners). Each becomes `failed` with code
    /// `interrupted`; `decide(step, budget_used)` gives its retry time, `None` making the job dead.
    fn reclaim(
        &self,
        scope: &ReclaimScope,
        now: Millis,
        decide: &dyn Fn(&str, u32) -> Option<Millis>,
    ) -> Result<Vec<Reclaimed>>;
    /// Hands running attempts back without charging them to the retry budget (a graceful shutdown
    /// interrupted them, not a fault): each step becomes `queued` again (or `cancelled`, if its job
    /// was cancelled meanwhile), with a `released` timeline event.
    fn release(&self, attempts: &[AttemptRef], now: Millis) -> Result<Vec<Finished>>;
    /// Among these job ids, the ones that were cancelled.
    fn cancelled_jobs(&self, job_ids: &[&str]) -> Result<Vec<String>>;
    /// The earliest scheduled retry, to know when to look again.
    fn next_retry_at(&self) -> Result<Option<Millis>>;

    // ---- operator actions ----
    /// Cancels a job that has not ended: queued/pending/failed steps become `cancelled`; running steps
    /// are left to notice (the scheduler signals them) and end as `cancelled`.
    fn cancel_job(&self, id: &str, now: Millis) -> Result<JobRecord>;
    /// Resumes a dead, failed or cancelled job from its first steps that did not succeed, same id,
    /// with a fresh retry budget. Succeeded steps are kept (memoized).
    fn retry_job(&self, id: &str, now: Millis) -> Result<JobRecord>;
    fn set_paused(&self, scope: &PauseScope, paused: bool, now: Millis) -> Result<()>;
    fn pauses(&self) -> Result<Vec<PauseScope>>;
    fn queue_stats(&self, now: Millis) -> Result<Vec<QueueStat>>;
    /// Takes the write lock and lets it go (readiness: the journal accepts writers now).
    fn check_writable(&self) -> Result<()>;
}

/// The queue a job runs in.
pub fn queue_name(tenant: &str, batch: Option<&str>) -> String {
    match batch {
        Some(b) => format!("batch:{b}"),
        None => format!("tenant:{tenant}"),
    }
}

/// Checks a DAG: unique names, known dependencies, no cycles; returns it in a topological order.
pub fn validate_steps(steps: &[StepSpec]) -> Result<Vec<StepSpec>> {
    if steps.is_empty() {
        return Err(Error::Invalid("a job needs at least one step".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for s in steps {
        if !seen.insert(s.name.as_str()) {
            return Err(Error::Invalid(format!("step {} is declared twice", s.name)));
        }
    }
    for s in steps {
        if let Some(d) = s.deps.iter().find(|d| !seen.contains(d.as_str())) {
            return Err(Error::Invalid(format!("step {} depends on unknown step {d}", s.name)));
        }
    }
    let mut ordered: Vec<StepSpec> = Vec::with_capacity(steps.len());
    let mut rest: Vec<&StepSpec> = steps.iter().collect();
    while !rest.is_empty() {
        let before = rest.len();
        let (ready, blocked): (Vec<&StepSpec>, Vec<&StepSpec>) =
            rest.into_iter().partition(|s| s.deps.iter().all(|d| ordered.iter().any(|o| &o.name == d)));
        ordered.extend(ready.into_iter().cloned());
        rest = blocked;
        if rest.len() == before {
            return Err(Error::Invalid("step dependencies form a cycle".into()));
        }
    }
    Ok(ordered)
}

/// Generates a prefixed, time-ordered id (`job_0192...`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, deps: &[&str]) -> StepSpec {
        StepSpec { name: name.into(), stage: name.into(), deps: deps.iter().map(|d| d.to_string()).collect() }
    }

    #[test]
    fn dag_is_ordered_and_checked() {
        let ordered =
            validate_steps(&[spec("d", &["b", "c"]), spec("b", &["a"]), spec("a", &[]), spec("c", &["a"])]).unwrap();
        let names: Vec<_> = ordered.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert!(validate_steps(&[spec("a", &["b"]), spec("b", &["a"])]).is_err());
        assert!(validate_steps(&[spec("a", &["zz"])]).is_err());
        assert!(validate_steps(&[spec("a", &[]), spec("a", &[])]).is_err());
        assert!(validate_steps(&[]).is_err());
    }
}

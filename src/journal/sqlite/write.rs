//! Write-side operations of the SQLite journal. Each public function runs inside the caller's
//! immediate transaction, so a state change and its timeline event commit together or not at all.

use rusqlite::{OptionalExtension, Transaction, params};

use super::SqliteJournal;
use super::read::{self, READY, steps_of};
use crate::clock::Millis;
use crate::journal::{
    AttemptRef, ClaimedStep, Enqueued, Error, ErrorInfo, Finished, JobRecord, JobState, NewJob, Outcome, PauseScope,
    ReadyStep, ReclaimScope, Reclaimed, Result, StepState, queue_name, validate_steps,
};

/// How long an idempotency key maps to its job.
const IDEMPOTENCY_TTL_MS: Millis = 24 * 3600 * 1000;

struct EventRow<'a> {
    step: Option<&'a str>,
    attempt: Option<u32>,
    kind: &'a str,
    error: Option<&'a ErrorInfo>,
    detail: Option<serde_json::Value>,
}

fn event(tx: &Transaction<'_>, job_seq: i64, now: Millis, e: EventRow<'_>) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (job_seq, at, step, attempt, kind, error_code, error_message, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        job_seq,
        now,
        e.step,
        e.attempt,
        e.kind,
        e.error.map(|x| &x.code),
        e.error.map(|x| &x.message),
        e.detail.as_ref().map(|d| d.to_string()),
    ])?;
    let announced = super::hooks::Announced {
        job_seq,
        event_seq: tx.last_insert_rowid(),
        kind: e.kind,
        step: e.step,
        error: e.error,
        detail: e.detail.as_ref(),
        now,
    };
    super::hooks::fan_out(tx, &announced)
}

fn job_event(tx: &Transaction<'_>, job_seq: i64, now: Millis, kind: &str) -> Result<()> {
    event(tx, job_seq, now, EventRow { step: None, attempt: None, kind, error: None, detail: None })
}

fn job_head(tx: &Transaction<'_>, id: &str) -> Result<(i64, JobState)> {
    let row: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, state FROM jobs WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, state) = row.ok_or_else(|| Error::NotFound { what: "job", id: id.to_string() })?;
    Ok((seq, JobState::parse(&state).unwrap_or(JobState::Queued)))
}

fn set_job_state(tx: &Transaction<'_>, seq: i64, state: JobState, now: Millis) -> Result<()> {
    let finished = if state.is_terminal() { Some(now) } else { None };
    tx.prepare_cached("UPDATE jobs SET state = ?2, updated_at = ?3, finished_at = ?4 WHERE seq = ?1")?
        .execute(params![seq, state.as_str(), now, finished])?;
    Ok(())
}

/// Moves pending steps whose dependencies all succeeded to `queued`, then derives the job state
/// from its steps (unless the job already ended as dead or cancelled).
fn settle(tx: &Transaction<'_>, seq: i64, now: Millis) -> Result<JobState> {
    let head: String = tx.query_row("SELECT state FROM jobs WHERE seq = ?1", [seq], |r| r.get(0))?;
    let current = JobState::parse(&head).unwrap_or(JobState::Queued);
    if matches!(current, JobState::Dead | JobState::Cancelled) {
        return Ok(current);
    }
    let steps = steps_of(tx, seq)?;
    let done = |name: &str| {
        steps.iter().any(|s| s.name == name && matches!(s.state, StepState::Succeeded | StepState::Skipped))
    };
    for s in steps.iter().filter(|s| s.state == StepState::Pending) {
        if s.deps.iter().all(|d| done(d)) {
            tx.prepare_cached("UPDATE steps SET state = 'queued', ready_at = ?3 WHERE job_seq = ?1 AND name = ?2")?
                .execute(params![seq, s.name, now])?;
        }
    }
    let steps = steps_of(tx, seq)?;
    let next = if steps.iter().all(|s| matches!(s.state, StepState::Succeeded | StepState::Skipped)) {
        JobState::Succeeded
    } else if steps.iter().any(|s| s.state == StepState::Running) {
        JobState::Running
    } else if steps.iter().any(|s| s.state == StepState::Failed && s.retry_at.is_some()) {
        JobState::Failed
    } else {
        JobState::Queued
    };
    if next != current {
        set_job_state(tx, seq, next, now)?;
        if next == JobState::Succeeded {
            job_event(tx, seq, now, "completed")?;
        }
    } else {
        tx.execute("UPDATE jobs SET updated_at = ?2 WHERE seq = ?1", params![seq, now])?;
    }
    Ok(next)
}

/// The job goes dead: nothing of it is dispatched any more until a manual retry. Steps that never
/// ran (waiting on their dependencies, or queued behind) are `skipped`; a failed one stays failed.
fn bury(tx: &Transaction<'_>, seq: i64, now: Millis, error: &ErrorInfo) -> Result<()> {
    tx.execute(
        "UPDATE steps SET state = CASE WHEN state IN ('queued', 'pending') THEN 'skipped' ELSE state END, \
         ready_at = NULL WHERE job_seq = ?1 AND state IN ('queued', 'pending', 'failed')",
        [seq],
    )?;
    set_job_state(tx, seq, JobState::Dead, now)?;
    event(tx, seq, now, EventRow { step: None, attempt: None, kind: "dead", error: Some(error), detail: None })
}

pub(super) fn idempotent_job(tx: &Transaction<'_>, tenant: &str, key: &str, now: Millis) -> Result<Option<JobRecord>> {
    let hit: Option<String> = tx
        .query_row(
            "SELECT job_id FROM idempotency WHERE tenant = ?1 AND key = ?2 AND created_at > ?3",
            params![tenant, key, now - IDEMPOTENCY_TTL_MS],
            |r| r.get(0),
        )
        .optional()?;
    match hit {
        Some(id) => read::job_by_id(tx, &id),
        None => Ok(None),
    }
}

impl SqliteJournal {
    pub(crate) fn enqueue_impl(&self, job: NewJob, now: Millis) -> Result<Enqueued> {
        let steps = validate_steps(&job.steps)?;
        self.write(|tx| {
            if let Some(key) = &job.idempotency_key
                && let Some(existing) = idempotent_job(tx, &job.tenant, key, now)?
            {
                return Ok(Enqueued { job: existing, existing: true });
            }
            let tenant_ok: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1)", [&job.tenant], |r| r.get(0))?;
            if !tenant_ok {
                return Err(Error::NotFound { what: "tenant", id: job.tenant.clone() });
            }
            let id = crate::journal::new_id("job");
            let queue = queue_name(&job.tenant, job.batch.as_deref());
            let mut media_id = job.media_id.clone();
            if let Some(m) = &job.new_media {
                tx.execute(
                    "INSERT INTO media (id, tenant, title, created_at, meta) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![m.id, job.tenant, m.title, now, m.meta.to_string()],
                )?;
                media_id = Some(m.id.clone());
            }
            tx.execute(
                "INSERT INTO jobs (id, tenant, media_id, kind, queue, batch, params, state, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8)",
                params![id, job.tenant, media_id, job.kind, queue, job.batch, job.params.to_string(), now],
            )?;
            let seq = tx.last_insert_rowid();
            let mut ins = tx.prepare_cached(
                "INSERT INTO steps (job_seq, idx, name, stage, deps, queue, tenant, state, ready_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (idx, s) in steps.iter().enumerate() {
                let root = s.deps.is_empty();
                ins.execute(params![
                    seq,
                    idx as i64,
                    s.name,
                    s.stage,
                    serde_json::to_string(&s.deps)?,
                    queue,
                    job.tenant,
                    if root { "queued" } else { "pending" },
                    if root { Some(now) } else { None },
                ])?;
            }
            if let Some(key) = &job.idempotency_key {
                tx.execute(
                    "INSERT OR REPLACE INTO idempotency (tenant, key, job_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![job.tenant, key, id, now],
                )?;
            }
            job_event(tx, seq, now, "enqueued")?;
            let job = read::job_by_id(tx, &id)?.ok_or_else(|| Error::Storage("job vanished".into()))?;
            Ok(Enqueued { job, existing: false })
        })
    }
}

pub(super) fn claim(
    tx: &Transaction<'_>,
    steps: &[ReadyStep],
    owner: &str,
    now: Millis,
) -> Result<Vec<Option<ClaimedStep>>> {
    let mut out = Vec::with_capacity(steps.len());
    for r in steps {
        let sql = format!(
            "UPDATE steps AS s SET state = 'running', attempts = attempts + 1, started_at = :now, \
               heartbeat_at = :now, lease_owner = :owner, ready_at = NULL, finished_at = NULL \
             WHERE s.job_seq = :seq AND s.name = :name AND s.attempts = :attempts \
               AND s.state IN ('queued', 'failed') AND {READY}"
        );
        let changed = tx.prepare_cached(&sql)?.execute(rusqlite::named_params! {
            ":now": now, ":owner": owner, ":seq": r.job_seq, ":name": r.step, ":attempts": r.attempts,
        })?;
        if changed == 0 {
            out.push(None);
            continue;
        }
        let attempt = r.attempts + 1;
        event(
            tx,
            r.job_seq,
            now,
            EventRow {
                step: Some(&r.step),
                attempt: Some(attempt),
                kind: "started",
                error: None,
                detail: Some(serde_json::json!({ "owner": owner })),
            },
        )?;
        settle(tx, r.job_seq, now)?;
        let job = read::job_by_id(tx, &r.job_id)?.ok_or_else(|| Error::Storage("job vanished".into()))?;
        let step = job.step(&r.step).ok_or_else(|| Error::Storage("step vanished".into()))?;
        let deps = step
            .deps
            .iter()
            .filter_map(|d| job.step(d))
            .map(|d| (d.name.clone(), d.output_ref.clone(), d.output.clone()))
            .collect();
        out.push(Some(ClaimedStep {
            attempt: AttemptRef { job_id: job.id.clone(), step: r.step.clone(), attempt },
            stage: step.stage.clone(),
            tenant: job.tenant.clone(),
            media_id: job.media_id.clone(),
            kind: job.kind.clone(),
            params: job.params.clone(),
            budget_used: step.budget_used,
            deps,
        }));
    }
    Ok(out)
}

pub(super) fn record_event(
    tx: &Transaction<'_>,
    a: &AttemptRef,
    kind: &str,
    detail: Option<serde_json::Value>,
    now: Millis,
) -> Result<()> {
    let (seq, _) = job_head(tx, &a.job_id)?;
    event(tx, seq, now, EventRow { step: Some(&a.step), attempt: Some(a.attempt), kind, error: None, detail })
}

pub(super) fn heartbeat(tx: &Transaction<'_>, attempts: &[AttemptRef], owner: &str, now: Millis) -> Result<()> {
    let mut st = tx.prepare_cached(
        "UPDATE steps SET heartbeat_at = ?1 WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?2) \
         AND name = ?3 AND attempts = ?4 AND state = 'running' AND lease_owner = ?5",
    )?;
    for a in attempts {
        st.execute(params![now, a.job_id, a.step, a.attempt, owner])?;
    }
    Ok(())
}

pub(super) fn finish(tx: &Transaction<'_>, outcomes: &[(AttemptRef, Outcome)], now: Millis) -> Result<Vec<Finished>> {
    let mut out = Vec::with_capacity(outcomes.len());
    for (a, outcome) in outcomes {
        let Ok((seq, job_state)) = job_head(tx, &a.job_id) else {
            out.push(Finished::Stale);
            continue;
        };
        // A job that already ended (dead, cancelled) schedules no more retries.
        let no_retry;
        let outcome = match outcome {
            Outcome::Failed { error, retry_at: Some(_) } if job_state.is_terminal() => {
                no_retry = Outcome::Failed { error: error.clone(), retry_at: None };
                &no_retry
            }
            o => o,
        };
        let guard = "WHERE job_seq = :seq AND name = :name AND attempts = :attempt AND state = 'running'";
        let changed = match outcome {
            Outcome::Succeeded { output_ref, sha256, output } => tx
                .prepare_cached(&format!(
                    "UPDATE steps SET state = 'succeeded', finished_at = :now, lease_owner = NULL, \
                       ready_at = NULL, output_ref = :oref, output_sha256 = :sha, output = :out, \
                       error_code = NULL, error_message = NULL {guard}"
                ))?
                .execute(rusqlite::named_params! {
                    ":now": now, ":oref": output_ref, ":sha": sha256,
                    ":out": output.as_ref().map(|o| o.to_string()),
                    ":seq": seq, ":name": a.step, ":attempt": a.attempt,
                })?,
            Outcome::Failed { error, retry_at } => tx
                .prepare_cached(&format!(
                    "UPDATE steps SET state = 'failed', finished_at = :now, lease_owner = NULL, \
                       ready_at = :retry, error_code = :code, error_message = :msg {guard}"
                ))?
                .execute(rusqlite::named_params! {
                    ":now": now, ":retry": retry_at, ":code": error.code, ":msg": error.message,
                    ":seq": seq, ":name": a.step, ":attempt": a.attempt,
                })?,
            Outcome::Cancelled => tx
                .prepare_cached(&format!(
                    "UPDATE steps SET state = 'cancelled', finished_at = :now, lease_owner = NULL, ready_at = NULL {guard}"
                ))?
                .execute(rusqlite::named_params! {
                    ":now": now, ":seq": seq, ":name": a.step, ":attempt": a.attempt,
                })?,
        };
        if changed == 0 {
            out.push(Finished::Stale);
            continue;
        }
        let (kind, error, detail) = match outcome {
            Outcome::Succeeded { output_ref, .. } => {
                ("succeeded", None, output_ref.as_ref().map(|r| serde_json::json!({"output_ref": r})))
            }
            Outcome::Failed { error, retry_at: Some(t) } => {
                ("failed", Some(error), Some(serde_json::json!({"retry_at": t})))
            }
            Outcome::Failed { error, retry_at: None } => {
                ("failed", Some(error), Some(serde_json::json!({"final": true})))
            }
            Outcome::Cancelled => ("cancelled", None, None),
        };
        event(tx, seq, now, EventRow { step: Some(&a.step), attempt: Some(a.attempt), kind, error, detail })?;
        if let Outcome::Failed { error, retry_at: None } = outcome
            && !job_state.is_terminal()
        {
            bury(tx, seq, now, error)?;
        }
        out.push(Finished::Recorded(settle(tx, seq, now)?));
    }
    Ok(out)
}

pub(super) fn reclaim(
    tx: &Transaction<'_>,
    scope: &ReclaimScope,
    now: Millis,
    decide: &dyn Fn(&str, u32) -> Option<Millis>,
) -> Result<Vec<Reclaimed>> {
    let (clause, arg): (&str, rusqlite::types::Value) = match scope {
        ReclaimScope::AllBut { owner } => ("(s.lease_owner IS NULL OR s.lease_owner != ?1)", owner.clone().into()),
        ReclaimScope::StaleSince { before } => ("s.heartbeat_at < ?1", (*before).into()),
    };
    let sql = format!(
        "SELECT j.id, s.job_seq, s.name, s.stage, s.attempts, s.budget_base, s.lease_owner \
         FROM steps s JOIN jobs j ON j.seq = s.job_seq WHERE s.state = 'running' AND {clause}"
    );
    type Row = (String, i64, String, String, u32, u32, Option<String>);
    let rows: Vec<Row> = tx
        .prepare(&sql)?
        .query_map([arg], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (job_id, seq, name, stage, attempts, base, owner) in rows {
        let error = ErrorInfo::new(
            "interrupted",
            format!("the attempt was interrupted (its worker {} stopped)", owner.as_deref().unwrap_or("?")),
        );
        let (_, state) = job_head(tx, &job_id)?;
        // Steps of a cancelled job end as cancelled; of a dead job, as a final failure.
        let retry_at = if state.is_terminal() { None } else { decide(&name, attempts - base) };
        let outcome = if state == JobState::Cancelled {
            Outcome::Cancelled
        } else {
            Outcome::Failed { error: error.clone(), retry_at }
        };
        let a = AttemptRef { job_id: job_id.clone(), step: name.clone(), attempt: attempts };
        event(
            tx,
            seq,
            now,
            EventRow {
                step: Some(&name),
                attempt: Some(attempts),
                kind: "interrupted",
                error: Some(&error),
                detail: owner.as_ref().map(|o| serde_json::json!({ "owner": o })),
            },
        )?;
        let finished = finish(tx, &[(a.clone(), outcome)], now)?;
        let job_state = match finished.first() {
            Some(Finished::Recorded(s)) => *s,
            _ => state,
        };
        out.push(Reclaimed { attempt: a, stage, lease_owner: owner, job_state });
    }
    Ok(out)
}

pub(super) fn release(tx: &Transaction<'_>, attempts: &[AttemptRef], now: Millis) -> Result<Vec<Finished>> {
    let mut out = Vec::with_capacity(attempts.len());
    for a in attempts {
        let Ok((seq, state)) = job_head(tx, &a.job_id) else {
            out.push(Finished::Stale);
            continue;
        };
        if state == JobState::Cancelled {
            out.extend(finish(tx, &[(a.clone(), Outcome::Cancelled)], now)?);
            continue;
        }
        let ready = if state.is_terminal() { None } else { Some(now) };
        let changed = tx
            .prepare_cached(
                "UPDATE steps SET state = CASE WHEN ?5 IS NULL THEN 'pending' ELSE 'queued' END, ready_at = ?5, \
                   lease_owner = NULL, budget_base = budget_base + 1, finished_at = ?4 \
                 WHERE job_seq = ?1 AND name = ?2 AND attempts = ?3 AND state = 'running'",
            )?
            .execute(params![seq, a.step, a.attempt, now, ready])?;
        if changed == 0 {
            out.push(Finished::Stale);
            continue;
        }
        event(
            tx,
            seq,
            now,
            EventRow {
                step: Some(&a.step),
                attempt: Some(a.attempt),
                kind: "released",
                error: None,
                detail: Some(serde_json::json!({"reason": "shutdown"})),
            },
        )?;
        out.push(Finished::Recorded(settle(tx, seq, now)?));
    }
    Ok(out)
}

pub(super) fn cancel_job(tx: &Transaction<'_>, id: &str, now: Millis) -> Result<JobRecord> {
    let (seq, state) = job_head(tx, id)?;
    if state.is_terminal() {
        return Err(Error::Conflict(format!("job {id} already ended ({state})")));
    }
    tx.execute(
        "UPDATE steps SET state = 'cancelled', ready_at = NULL, finished_at = ?2 \
         WHERE job_seq = ?1 AND state IN ('pending', 'queued', 'failed')",
        params![seq, now],
    )?;
    set_job_state(tx, seq, JobState::Cancelled, now)?;
    job_event(tx, seq, now, "cancelled")?;
    read::job_by_id(tx, id)?.ok_or_else(|| Error::Storage("job vanished".into()))
}

pub(super) fn retry_job(tx: &Transaction<'_>, id: &str, now: Millis) -> Result<JobRecord> {
    let (seq, state) = job_head(tx, id)?;
    if !matches!(state, JobState::Dead | JobState::Failed | JobState::Cancelled) {
        return Err(Error::Conflict(format!(
            "job {id} is {state}; only dead, failed or cancelled jobs can be retried"
        )));
    }
    // Every step that did not succeed starts over with a fresh budget; `settle` queues those whose
    // dependencies are done. Running steps (of a cancelled job that has not stopped yet) are left be.
    tx.execute(
        "UPDATE steps SET state = 'pending', ready_at = NULL, budget_base = attempts, lease_owner = NULL \
         WHERE job_seq = ?1 AND state IN ('pending', 'queued', 'failed', 'cancelled', 'skipped')",
        [seq],
    )?;
    set_job_state(tx, seq, JobState::Queued, now)?;
    job_event(tx, seq, now, "retried")?;
    settle(tx, seq, now)?;
    read::job_by_id(tx, id)?.ok_or_else(|| Error::Storage("job vanished".into()))
}

pub(super) fn set_paused(tx: &Transaction<'_>, scope: &PauseScope, paused: bool, now: Millis) -> Result<()> {
    let (kind, name) = match scope {
        PauseScope::Stage(n) => ("stage", n),
        PauseScope::Tenant(n) => ("tenant", n),
        PauseScope::Queue(n) => ("queue", n),
    };
    if paused {
        tx.execute("INSERT OR IGNORE INTO pauses (scope, name, since) VALUES (?1, ?2, ?3)", params![kind, name, now])?;
    } else {
        tx.execute("DELETE FROM pauses WHERE scope = ?1 AND name = ?2", params![kind, name])?;
    }
    Ok(())
}

//! Read-side queries of the SQLite journal.

use rusqlite::{OptionalExtension, Transaction, params, params_from_iter};

use crate::clock::Millis;
use crate::journal::{
    ErrorInfo, Event, JobFilter, JobRecord, JobState, PauseScope, QueueStat, ReadyStep, Result, StepRecord, StepState,
};

/// SQL fragment: the step is ready at `?now` and neither its stage, its tenant nor its queue is
/// paused.
pub(super) const READY: &str = "s.ready_at IS NOT NULL AND s.ready_at <= :now \
     AND s.stage NOT IN (SELECT name FROM pauses WHERE scope = 'stage') \
     AND s.tenant NOT IN (SELECT name FROM pauses WHERE scope = 'tenant') \
     AND s.queue NOT IN (SELECT name FROM pauses WHERE scope = 'queue')";

const JOB_COLS: &str =
    "seq, id, tenant, media_id, kind, queue, batch, params, state, created_at, updated_at, finished_at";

const STEP_COLS: &str = "job_seq, name, stage, deps, state, attempts, budget_base, ready_at, started_at, \
     finished_at, heartbeat_at, lease_owner, output_ref, output_sha256, output, error_code, error_message";

fn parse_state<T>(s: String, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    parse(&s).ok_or_else(|| rusqlite::Error::InvalidColumnType(0, s, rusqlite::types::Type::Text))
}

fn json_col(s: Option<String>) -> rusqlite::Result<Option<serde_json::Value>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))).transpose()
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        seq: r.get(0)?,
        id: r.get(1)?,
        tenant: r.get(2)?,
        media_id: r.get(3)?,
        kind: r.get(4)?,
        queue: r.get(5)?,
        batch: r.get(6)?,
        params: json_col(r.get(7)?)?.unwrap_or_default(),
        state: parse_state(r.get(8)?, JobState::parse)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        finished_at: r.get(11)?,
        steps: Vec::new(),
    })
}

pub(super) fn step_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, StepRecord)> {
    let state = parse_state(r.get(4)?, StepState::parse)?;
    let attempts: u32 = r.get(5)?;
    let budget_base: u32 = r.get(6)?;
    let ready_at: Option<Millis> = r.get(7)?;
    let code: Option<String> = r.get(15)?;
    let deps: String = r.get(3)?;
    Ok((
        r.get(0)?,
        StepRecord {
            name: r.get(1)?,
            stage: r.get(2)?,
            deps: serde_json::from_str(&deps).unwrap_or_default(),
            state,
            attempts,
            budget_used: attempts.saturating_sub(budget_base),
            retry_at: if state == StepState::Failed { ready_at } else { None },
            started_at: r.get(8)?,
            finished_at: r.get(9)?,
            heartbeat_at: r.get(10)?,
            lease_owner: r.get(11)?,
            output_ref: r.get(12)?,
            output_sha256: r.get(13)?,
            output: json_col(r.get(14)?)?,
            error: code.map(|code| ErrorInfo {
                code,
                message: r.get::<_, Option<String>>(16).ok().flatten().unwrap_or_default(),
            }),
        },
    ))
}

/// The steps of one job, in declaration order.
pub(super) fn steps_of(tx: &Transaction<'_>, job_seq: i64) -> Result<Vec<StepRecord>> {
    let mut st = tx.prepare_cached(&format!("SELECT {STEP_COLS} FROM steps WHERE job_seq = ?1 ORDER BY idx"))?;
    let rows = st.query_map([job_seq], step_row)?.map(|r| r.map(|(_, s)| s)).collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn job_by_id(tx: &Transaction<'_>, id: &str) -> Result<Option<JobRecord>> {
    let job = tx.query_row(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"), [id], job_row).optional()?;
    job.map(|mut j| {
        j.steps = steps_of(tx, j.seq)?;
        Ok(j)
    })
    .transpose()
}

pub(super) fn jobs(tx: &Transaction<'_>, f: &JobFilter) -> Result<Vec<JobRecord>> {
    let sql = format!(
        "SELECT {JOB_COLS} FROM jobs WHERE (:state IS NULL OR state = :state) \
         AND (:tenant IS NULL OR tenant = :tenant) AND (:batch IS NULL OR batch = :batch) \
         AND (:media IS NULL OR media_id = :media) \
         AND (:before IS NULL OR seq < :before) ORDER BY seq DESC LIMIT :limit"
    );
    let mut st = tx.prepare_cached(&sql)?;
    let limit = f.limit.map(|l| l as i64).unwrap_or(-1);
    let rows = st.query_map(
        rusqlite::named_params! {
            ":state": f.state.map(|s| s.as_str()), ":tenant": f.tenant, ":batch": f.batch, ":media": f.media_id,
            ":before": f.before_seq, ":limit": limit,
        },
        job_row,
    )?;
    let mut jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    for j in &mut jobs {
        j.steps = steps_of(tx, j.seq)?;
    }
    Ok(jobs)
}

pub(super) fn events(tx: &Transaction<'_>, job_id: &str) -> Result<Vec<Event>> {
    let mut st = tx.prepare_cached(
        "SELECT e.seq, e.at, e.step, e.attempt, e.kind, e.error_code, e.error_message, e.detail \
         FROM events e JOIN jobs j ON j.seq = e.job_seq WHERE j.id = ?1 ORDER BY e.seq",
    )?;
    let rows = st.query_map([job_id], |r| {
        let code: Option<String> = r.get(5)?;
        Ok(Event {
            seq: r.get(0)?,
            at: r.get(1)?,
            step: r.get(2)?,
            attempt: r.get(3)?,
            kind: r.get(4)?,
            error: code.map(|code| ErrorInfo {
                code,
                message: r.get::<_, Option<String>>(6).ok().flatten().unwrap_or_default(),
            }),
            detail: json_col(r.get(7)?)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A `(queue, stage)` lane of the ready index, with the lane's tenant.
struct Lane {
    queue: String,
    stage: String,
    tenant: String,
}

/// Every `(queue, stage)` pair that has steps with a ready time, found by seeking the ready index
/// once per pair (a loose index scan): cost grows with the number of lanes, not with the backlog.
fn lanes(tx: &Transaction<'_>, queue: Option<&str>) -> Result<Vec<Lane>> {
    // Two plain seeks (SQLite walks a row-value `(queue, stage) > (?, ?)` instead of seeking past it).
    let mut next_stage = tx.prepare_cached(
        "SELECT queue, stage, tenant FROM steps INDEXED BY steps_ready \
         WHERE ready_at IS NOT NULL AND queue = ?1 AND stage > ?2 ORDER BY queue, stage LIMIT 1",
    )?;
    let mut next_queue = tx.prepare_cached(
        "SELECT queue, stage, tenant FROM steps INDEXED BY steps_ready \
         WHERE ready_at IS NOT NULL AND queue > ?1 ORDER BY queue, stage LIMIT 1",
    )?;
    let row = |r: &rusqlite::Row<'_>| Ok(Lane { queue: r.get(0)?, stage: r.get(1)?, tenant: r.get(2)? });
    let mut out: Vec<Lane> = Vec::new();
    let mut at = match queue {
        Some(q) => next_stage.query_row(params![q, ""], row).optional()?,
        None => next_queue.query_row(params![""], row).optional()?,
    };
    while let Some(lane) = at {
        at = match next_stage.query_row(params![lane.queue, lane.stage], row).optional()? {
            Some(next) => Some(next),
            None if queue.is_none() => next_queue.query_row(params![lane.queue], row).optional()?,
            None => None,
        };
        out.push(lane);
    }
    Ok(out)
}

/// Paused stages, tenants and queues.
type Paused = (Vec<String>, Vec<String>, Vec<String>);

fn paused_sets(tx: &Transaction<'_>) -> Result<Paused> {
    let (mut stages, mut tenants, mut queues) = (Vec::new(), Vec::new(), Vec::new());
    for p in pauses(tx)? {
        match p {
            PauseScope::Stage(s) => stages.push(s),
            PauseScope::Tenant(t) => tenants.push(t),
            PauseScope::Queue(q) => queues.push(q),
        }
    }
    Ok((stages, tenants, queues))
}

/// Up to `limit` steps of one lane that are ready at `now`, in job order, read in index order.
fn lane_ready(tx: &Transaction<'_>, queue: &str, stage: &str, now: Millis, limit: usize) -> Result<Vec<ReadyStep>> {
    let mut st = tx.prepare_cached(
        "SELECT j.id, s.job_seq, s.name, s.stage, s.tenant, s.queue, s.attempts, s.ready_at \
         FROM steps s INDEXED BY steps_ready JOIN jobs j ON j.seq = s.job_seq \
         WHERE s.queue = ?1 AND s.stage = ?2 AND s.ready_at IS NOT NULL AND s.ready_at <= ?3 \
         ORDER BY s.job_seq, s.idx LIMIT ?4",
    )?;
    let rows = st.query_map(params![queue, stage, now, limit as i64], |r| {
        Ok(ReadyStep {
            job_id: r.get(0)?,
            job_seq: r.get(1)?,
            step: r.get(2)?,
            stage: r.get(3)?,
            tenant: r.get(4)?,
            queue: r.get(5)?,
            attempts: r.get(6)?,
            ready_at: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn active_queues(tx: &Transaction<'_>, now: Millis) -> Result<Vec<String>> {
    let (paused_stages, paused_tenants, paused_queues) = paused_sets(tx)?;
    let mut out: Vec<String> = Vec::new();
    for lane in lanes(tx, None)? {
        if out.last() == Some(&lane.queue)
            || paused_stages.contains(&lane.stage)
            || paused_tenants.contains(&lane.tenant)
            || paused_queues.contains(&lane.queue)
        {
            continue;
        }
        if !lane_ready(tx, &lane.queue, &lane.stage, now, 1)?.is_empty() {
            out.push(lane.queue);
        }
    }
    Ok(out)
}

pub(super) fn ready_steps(
    tx: &Transaction<'_>,
    queue: &str,
    stages: &[&str],
    now: Millis,
    limit: usize,
) -> Result<Vec<ReadyStep>> {
    if stages.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let (paused_stages, paused_tenants, paused_queues) = paused_sets(tx)?;
    if paused_queues.iter().any(|q| q == queue) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for lane in lanes(tx, Some(queue))? {
        if stages.contains(&lane.stage.as_str())
            && !paused_stages.contains(&lane.stage)
            && !paused_tenants.contains(&lane.tenant)
        {
            out.extend(lane_ready(tx, queue, &lane.stage, now, limit)?);
        }
    }
    out.sort_by_key(|r| r.job_seq);
    out.truncate(limit);
    Ok(out)
}

pub(super) fn has_ready(tx: &Transaction<'_>, stage: &str, now: Millis) -> Result<bool> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM steps s WHERE s.stage = :stage AND {READY})");
    Ok(tx.query_row(&sql, rusqlite::named_params! {":stage": stage, ":now": now}, |r| r.get(0))?)
}

pub(super) fn cancelled_jobs(tx: &Transaction<'_>, ids: &[&str]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; ids.len()].join(",");
    let mut st = tx.prepare(&format!("SELECT id FROM jobs WHERE state = 'cancelled' AND id IN ({marks})"))?;
    let rows = st.query_map(params_from_iter(ids.iter()), |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn pauses(tx: &Transaction<'_>) -> Result<Vec<PauseScope>> {
    let mut st = tx.prepare_cached("SELECT scope, name FROM pauses ORDER BY scope, name")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (scope, name) = row?;
        out.push(match scope.as_str() {
            "stage" => PauseScope::Stage(name),
            "queue" => PauseScope::Queue(name),
            _ => PauseScope::Tenant(name),
        });
    }
    Ok(out)
}

pub(super) fn queue_stats(tx: &Transaction<'_>, now: Millis) -> Result<Vec<QueueStat>> {
    let mut st = tx.prepare_cached(
        "SELECT queue, tenant, stage, \
           SUM(state IN ('queued','failed') AND ready_at IS NOT NULL AND ready_at <= ?1), \
           SUM(state = 'failed' AND ready_at > ?1), \
           SUM(state = 'running'), \
           MIN(CASE WHEN state IN ('queued','failed') AND ready_at <= ?1 THEN ready_at END) \
         FROM steps WHERE ready_at IS NOT NULL OR state = 'running' \
         GROUP BY queue, tenant, stage ORDER BY queue, stage",
    )?;
    let rows = st.query_map(params![now], |r| {
        Ok(QueueStat {
            queue: r.get(0)?,
            tenant: r.get(1)?,
            stage: r.get(2)?,
            ready: r.get(3)?,
            waiting_retry: r.get(4)?,
            running: r.get(5)?,
            oldest_ready_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

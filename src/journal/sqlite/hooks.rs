//! API keys, webhook endpoints and the delivery outbox in SQLite.

use rusqlite::{OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use super::SqliteJournal;
use crate::clock::{Millis, rfc3339};
use crate::journal::hooks::{AttemptResult, Delivery, DeliveryRecord, Endpoint};
use crate::journal::{Error, ErrorInfo, Result, Tenant};

/// How long a claimed delivery is held before another notifier may take it again (a crash
/// mid-request): longer than the request timeout.
pub const DELIVERY_LEASE_MS: Millis = 60_000;

fn json_list(v: Option<String>) -> Vec<String> {
    v.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default()
}

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Endpoint> {
    Ok(Endpoint {
        id: r.get(0)?,
        tenant: r.get(1)?,
        url: r.get(2)?,
        events: json_list(r.get(3)?),
        codes: json_list(r.get(4)?),
        secret: r.get(5)?,
        created_at: r.get(6)?,
    })
}

const ENDPOINT_COLS: &str = "id, tenant, url, events, codes, secret, created_at";

/// A timeline event, as the outbox sees it.
pub(super) struct Announced<'a> {
    pub job_seq: i64,
    /// The `events` row just inserted (makes each occurrence of a job event distinct).
    pub event_seq: i64,
    pub kind: &'a str,
    pub step: Option<&'a str>,
    pub error: Option<&'a ErrorInfo>,
    pub detail: Option<&'a serde_json::Value>,
    pub now: Millis,
}

/// The webhook event type a timeline event announces, if any.
fn event_type(e: &Announced<'_>) -> Option<&'static str> {
    match e.kind {
        "media.ready" => Some("media.ready"),
        "media.transcribed" => Some("media.transcribed"),
        "media.indexed" => Some("media.indexed"),
        "completed" => Some("job.succeeded"),
        "dead" => Some("job.dead"),
        // A step failure with a retry scheduled; a final one is followed by `dead`.
        "failed" if e.step.is_some() && e.detail.is_some_and(|d| d.get("retry_at").is_some()) => Some("job.failed"),
        _ => None,
    }
}

/// Writes the deliveries a timeline event causes: to the job's `callback_url` (every event type)
/// and to each endpoint of the job's tenant (and the operator's) that hears it.
pub(super) fn fan_out(tx: &Transaction<'_>, e: &Announced<'_>) -> Result<()> {
    let Some(ty) = event_type(e) else { return Ok(()) };
    let (job_id, tenant, params): (String, String, String) = tx
        .prepare_cached("SELECT id, tenant, params FROM jobs WHERE seq = ?1")?
        .query_row([e.job_seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let params: serde_json::Value = serde_json::from_str(&params).unwrap_or_default();
    let code = e.error.map(|x| x.code.as_str());
    let mut dests: Vec<(Option<String>, String, String)> = Vec::new();
    let secret: Option<String> = tx
        .prepare_cached("SELECT webhook_secret FROM tenants WHERE id = ?1")?
        .query_row([&tenant], |r| r.get(0))
        .optional()?
        .flatten();
    if let (Some(url), Some(secret)) = (params.get("callback_url").and_then(|u| u.as_str()), &secret) {
        dests.push((None, url.to_string(), secret.clone()));
    }
    let endpoints = tx
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE tenant = ?1 OR tenant IS NULL ORDER BY created_at, id"
        ))?
        .query_map([&tenant], endpoint_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for ep in endpoints.into_iter().filter(|ep| ep.hears(ty, code)) {
        dests.push((Some(ep.id), ep.url, ep.secret));
    }
    if dests.is_empty() {
        return Ok(());
    }
    let data = match ty {
        "job.succeeded" | "job.failed" | "job.dead" => {
            let job = super::read::job_by_id(tx, &job_id)?.ok_or_else(|| Error::Storage("job vanished".into()))?;
            let mut body = job.to_contract_json();
            body["error"] = serde_json::to_value(e.error).unwrap_or_default();
            if let Some(step) = e.step {
                body["failed_step"] = step.into();
            }
            body
        }
        _ => {
            let mut body = e.detail.cloned().unwrap_or_else(|| serde_json::json!({}));
            body["job_id"] = job_id.clone().into();
            if let Some(media) = body.get("media_id").and_then(|m| m.as_str()).map(str::to_string) {
                // A signed media's playable URL carries a token: the integrator gets it from the
                // media JSON (links.hls), not from a webhook that may be logged or forwarded.
                let meta: Option<String> = tx
                    .prepare_cached("SELECT meta FROM media WHERE id = ?1")?
                    .query_row([&media], |r| r.get(0))
                    .optional()?;
                let meta: serde_json::Value = meta.and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default();
                if meta["playback_policy"] == "signed"
                    && let Some(o) = body.as_object_mut()
                {
                    o.remove("hls");
                }
                body["links"] = serde_json::json!({"media": format!("/v1/media/{media}")});
            }
            body
        }
    };
    let payload = serde_json::json!({"type": ty, "timestamp": rfc3339(e.now), "data": data}).to_string();
    // A media event is announced once per job (a re-run of its step does not repeat it); a job
    // event once per occurrence (a retried job that dies again says so again).
    let occurrence = if ty.starts_with("media.") { ty.to_string() } else { format!("{ty}#{}", e.event_seq) };
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO deliveries (id, dedupe, tenant, job_seq, endpoint_id, url, secret, event_type, \
           payload, state, attempts, next_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', 0, ?10, ?10)",
    )?;
    for (endpoint, url, secret) in dests {
        let dedupe = format!("{}:{occurrence}:{}", e.job_seq, endpoint.as_deref().unwrap_or("callback"));
        let id = format!("msg_{}", &hex::encode(Sha256::digest(dedupe.as_bytes()))[..26]);
        insert.execute(params![id, dedupe, tenant, e.job_seq, endpoint, url, secret, ty, payload, e.now])?;
    }
    Ok(())
}

fn tenant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant { id: r.get(0)?, name: r.get(1)?, created_at: r.get(2)? })
}

impl SqliteJournal {
    pub(crate) fn tenant_by_key_hash_impl(&self, hash: &str) -> Result<Option<Tenant>> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT id, name, created_at FROM tenants WHERE api_key_hash = ?1")?
                .query_row([hash], tenant_row)
                .optional()?)
        })
    }

    pub(crate) fn any_api_key_impl(&self) -> Result<bool> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM tenants WHERE api_key_hash IS NOT NULL)")?
                .query_row([], |r| r.get(0))?)
        })
    }

    pub(crate) fn webhook_secret_impl(&self, tenant: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .query_row("SELECT webhook_secret FROM tenants WHERE id = ?1", [tenant], |r| r.get(0))
                .optional()?
                .flatten())
        })
    }

    pub(crate) fn set_webhook_secret_if_unset_impl(&self, tenant: &str, secret: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE tenants SET webhook_secret = ?2 WHERE id = ?1 AND webhook_secret IS NULL",
                params![tenant, secret],
            )?;
            Ok(())
        })
    }

    pub(crate) fn create_endpoint_impl(&self, ep: &Endpoint) -> Result<()> {
        let list = |v: &Vec<String>| if v.is_empty() { None } else { serde_json::to_string(v).ok() };
        self.write(|tx| {
            tx.execute(
                &format!("INSERT INTO webhook_endpoints ({ENDPOINT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![ep.id, ep.tenant, ep.url, list(&ep.events), list(&ep.codes), ep.secret, ep.created_at],
            )?;
            Ok(())
        })
    }

    pub(crate) fn endpoints_impl(&self, tenant: Option<&str>) -> Result<Vec<Endpoint>> {
        self.read(|tx| {
            let sql = format!(
                "SELECT {ENDPOINT_COLS} FROM webhook_endpoints WHERE ?1 IS NULL OR tenant = ?1 ORDER BY created_at, id"
            );
            Ok(tx.prepare(&sql)?.query_map([tenant], endpoint_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub(crate) fn delete_endpoint_impl(&self, id: &str, tenant: Option<&str>) -> Result<()> {
        self.write(|tx| {
            let sql = "DELETE FROM webhook_endpoints WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)";
            if tx.execute(sql, params![id, tenant])? == 0 {
                return Err(Error::NotFound { what: "webhook endpoint", id: id.to_string() });
            }
            Ok(())
        })
    }

    pub(crate) fn claim_deliveries_impl(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>> {
        self.write(|tx| {
            let rows = tx
                .prepare_cached(
                    "SELECT d.seq, d.id, d.tenant, j.id, d.endpoint_id, d.url, d.secret, d.event_type, d.payload, \
                       d.attempts, d.created_at \
                     FROM deliveries d JOIN jobs j ON j.seq = d.job_seq \
                     WHERE d.state = 'pending' AND d.next_at <= ?1 ORDER BY d.next_at, d.seq LIMIT ?2",
                )?
                .query_map(params![now, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Delivery {
                            id: r.get(1)?,
                            tenant: r.get(2)?,
                            job_id: r.get(3)?,
                            endpoint_id: r.get(4)?,
                            url: r.get(5)?,
                            secret: r.get(6)?,
                            event_type: r.get(7)?,
                            payload: r.get(8)?,
                            attempt: r.get::<_, u32>(9)? + 1,
                            created_at: r.get(10)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut lease =
                tx.prepare_cached("UPDATE deliveries SET attempts = attempts + 1, next_at = ?2 WHERE seq = ?1")?;
            for (seq, _) in &rows {
                lease.execute(params![seq, now + DELIVERY_LEASE_MS])?;
            }
            Ok(rows.into_iter().map(|(_, d)| d).collect())
        })
    }

    pub(crate) fn record_delivery_impl(&self, d: &Delivery, r: &AttemptResult, now: Millis) -> Result<()> {
        self.write(|tx| {
            let state = match (&r.error, r.retry_at) {
                (None, _) => "delivered",
                (Some(_), Some(_)) => "pending",
                (Some(_), None) => "exhausted",
            };
            let finished = (state != "pending").then_some(now);
            let job_seq: i64 = tx.query_row(
                "UPDATE deliveries SET state = ?3, next_at = ?4, last_status = ?5, last_error = ?6, finished_at = ?7 \
                 WHERE id = ?1 AND attempts = ?2 RETURNING job_seq",
                params![d.id, d.attempt, state, r.retry_at, r.status, r.error, finished],
                |row| row.get(0),
            )?;
            let detail = serde_json::json!({
                "webhook_id": d.id, "event": d.event_type, "url": d.url, "endpoint_id": d.endpoint_id,
                "status": r.status, "latency_ms": r.latency_ms, "outcome": state, "retry_at": r.retry_at,
            });
            let error = r.error.as_ref().map(|m| ErrorInfo::new("webhook_failed", m.clone()));
            tx.prepare_cached(
                "INSERT INTO events (job_seq, at, step, attempt, kind, error_code, error_message, detail) \
                 VALUES (?1, ?2, 'notify', ?3, 'webhook', ?4, ?5, ?6)",
            )?
            .execute(params![
                job_seq,
                now,
                d.attempt,
                error.as_ref().map(|e| e.code.clone()),
                error.as_ref().map(|e| e.message.clone()),
                detail.to_string()
            ])?;
            Ok(())
        })
    }

    pub(crate) fn deliveries_impl(&self, job_id: &str) -> Result<Vec<DeliveryRecord>> {
        self.read(|tx| {
            let mut st = tx.prepare(
                "SELECT d.id, j.id, d.endpoint_id, d.url, d.event_type, d.state, d.attempts, d.last_status, \
                   d.last_error, d.next_at \
                 FROM deliveries d JOIN jobs j ON j.seq = d.job_seq WHERE j.id = ?1 ORDER BY d.seq",
            )?;
            let rows = st
                .query_map([job_id], |r| {
                    Ok(DeliveryRecord {
                        id: r.get(0)?,
                        job_id: r.get(1)?,
                        endpoint_id: r.get(2)?,
                        url: r.get(3)?,
                        event_type: r.get(4)?,
                        state: r.get(5)?,
                        attempts: r.get(6)?,
                        last_status: r.get(7)?,
                        last_error: r.get(8)?,
                        next_at: r.get(9)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub(crate) fn next_delivery_at_impl(&self) -> Result<Option<Millis>> {
        self.read(|tx| {
            Ok(tx.query_row("SELECT MIN(next_at) FROM deliveries WHERE state = 'pending'", [], |r| r.get(0))?)
        })
    }
}

//! Operational routes: health, readiness, metrics, the pipeline snapshot.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::auth::require_admin;
use super::openapi::schemas as s;
use super::openapi::{CallerErrors, Forbidden};
use super::{ApiError, State, blocking};
use crate::auth::Caller;

/// Liveness: the process answers.
#[utoipa::path(
    tag = "ops",
    operation_id = "healthz",
    security(()),
    responses((status = 200, description = "Alive", body = s::Health)),
)]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: every check is named in the answer.
///
/// Ready when the journal's write lock can be had within a second (another process holding it, or
/// a full disk, makes uploads fail), the engine runs, the models are loaded (when speech is on)
/// and the data dir's disk has more than `data.min-free-bytes` free (below it uploads get 507).
/// Each check is named; it answers within about a second whatever holds the journal.
#[utoipa::path(
    tag = "ops",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "Ready", body = s::Readiness),
        (status = 503, description = "Not ready: the error body with every check", body = s::NotReady),
    ),
)]
#[get("/readyz")]
async fn readyz(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    // Both checks wait at most a second, side by side.
    let journal = async {
        blocking(&state, |app| Ok(app.journal.check_writable()?))
            .await
            .map(|_| "ok".to_string())
            .unwrap_or_else(|e| format!("failed: {}", e.message))
    };
    let engine = async {
        match &state.app.engine {
            Some(e) if e.observe().await.is_some() => "ok",
            _ => "not answering (stopped, or waiting for the journal)",
        }
    };
    let (journal, engine) = futures_util::future::join(journal, engine).await;
    let models = if !state.app.config.models.speech {
        "off"
    } else if state.app.models.loaded() {
        "ok"
    } else {
        "not loaded"
    };
    let floor = state.space.floor();
    let free = state.space.free();
    let disk = match free {
        Some(f) if f >= floor => "ok",
        Some(_) => "low",
        None => "unknown",
    };
    let ok = journal == "ok" && engine == "ok" && models != "not loaded" && disk != "low";
    let body = json!({"status": if ok { "ready" } else { "not_ready" }, "journal": journal, "engine": engine,
                      "models": models, "disk": disk, "disk_free_bytes": free, "disk_floor_bytes": floor});
    if !ok {
        let mut resp = HttpResponse::ServiceUnavailable();
        resp.insert_header((actix_web::http::header::RETRY_AFTER, "5"));
        return Ok(resp.json(json!({"error": {"code": "not_ready", "message": format!(
            "not ready: journal {journal}, engine {engine}, models {models}, disk {disk}")}, "checks": body})));
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Prometheus metrics (text format 0.0.4).
///
/// The operator key once the API is closed (the series name tenants).
#[utoipa::path(
    tag = "ops",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 403, response = Forbidden),
        CallerErrors,
    ),
)]
#[get("/metrics")]
async fn metrics(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    state.metrics.set(crate::metrics::LOG_DROPPED, &[], crate::telemetry::dropped_lines() as f64);
    let stats = blocking(&state, |app| {
        let now = app.clock.now_ms();
        Ok((app.journal.queue_stats(now)?, now))
    })
    .await;
    // Queue gauges are computed from the journal at scrape time (shared by every process).
    if let Ok((stats, now)) = stats {
        let mut depth = Vec::new();
        let mut oldest = Vec::new();
        for s in &stats {
            let labels = crate::metrics::owned_labels(&[("stage", &s.stage), ("tenant", &s.tenant)]);
            depth.push((labels.clone(), (s.ready + s.waiting_retry) as f64));
            oldest.push((labels, s.oldest_ready_at.map(|t| (now - t).max(0) as f64 / 1e3).unwrap_or(0.0)));
        }
        state.metrics.replace(crate::metrics::QUEUE_DEPTH, merge(depth, |a, b| a + b));
        state.metrics.replace(crate::metrics::QUEUE_OLDEST, merge(oldest, f64::max));
    }
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render()))
}

/// Several queues (a tenant's own and its batches) share stage + tenant labels: combine them.
fn merge(
    series: Vec<(Vec<(&'static str, String)>, f64)>,
    f: fn(f64, f64) -> f64,
) -> Vec<(Vec<(&'static str, String)>, f64)> {
    let mut m: std::collections::BTreeMap<Vec<(&'static str, String)>, f64> = Default::default();
    for (l, v) in series {
        m.entry(l).and_modify(|x| *x = f(*x, v)).or_insert(v);
    }
    m.into_iter().collect()
}

/// The scheduler's live snapshot (operator key).
#[utoipa::path(
    tag = "ops",
    operation_id = "debug_pipeline",
    responses(
        (status = 200, description = "Stages, running steps, commits in flight", body = s::PipelineSnapshot),
        (status = 403, response = Forbidden),
        CallerErrors,
    ),
)]
#[get("/debug/pipeline")]
async fn pipeline(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let snap = match &state.app.engine {
        Some(e) => e.observe().await,
        None => None,
    };
    Ok(HttpResponse::Ok().json(json!({"scheduler": snap})))
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz, metrics, pipeline))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics).service(pipeline);
}

//! Operational routes: health, readiness, metrics, the pipeline snapshot.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use super::{ApiError, State, blocking};

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the journal answers and the engine runs.
#[get("/readyz")]
async fn readyz(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    blocking(&state, |app| Ok(app.journal.pauses()?)).await?;
    let engine = match &state.app.engine {
        Some(e) => e.observe().await.is_some(),
        None => false,
    };
    if !engine {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the job engine is not running",
        ));
    }
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "journal": "ok", "engine": "ok"})))
}

#[get("/metrics")]
async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

#[get("/debug/pipeline")]
async fn pipeline(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let snap = match &state.app.engine {
        Some(e) => e.observe().await,
        None => None,
    };
    Ok(HttpResponse::Ok().json(json!({"scheduler": snap})))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics).service(pipeline);
}

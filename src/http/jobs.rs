//! `/v1/jobs`: list, show (with timeline), retry, cancel.

use actix_web::{HttpResponse, get, post, web};
use serde::Deserialize;
use serde_json::json;

use super::openapi::schemas as s;
use super::openapi::{BadRequest, CallerErrors, Conflict, NotFound};
use super::{ApiError, State, blocking};
use crate::auth::Caller;
use crate::journal::JobState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<s::JobState>)]
    state: Option<JobState>,
    /// The operator only: one tenant's jobs (id or name); tenants always see their own.
    tenant: Option<String>,
    /// Page size, clamped to 1..=500; default 50.
    #[param(maximum = 18446744073709551615_u64)]
    limit: Option<usize>,
    /// Pagination cursor: the `next_cursor` of the previous page.
    #[param(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    cursor: Option<i64>,
}

const MAX_PAGE: usize = 500;

/// The caller's jobs, newest first, a page at a time.
#[utoipa::path(
    tag = "jobs",
    operation_id = "list_jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = s::JobList),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[get("/v1/jobs")]
async fn list(state: web::Data<State>, caller: Caller, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let tenant = caller.scope(q.tenant.as_deref()).map(str::to_string);
    let jobs = blocking(&state, move |app| app.jobs(q.state, tenant.as_deref(), limit, q.cursor)).await?;
    let next = if jobs.len() == limit { jobs.last().map(|j| j.seq) } else { None };
    let jobs: Vec<_> = jobs.iter().map(|j| j.to_contract_json()).collect();
    Ok(HttpResponse::Ok().json(json!({"jobs": jobs, "next_cursor": next})))
}

/// The caller's job `id` (another tenant's answers 404 like a missing one).
async fn own_job(state: &web::Data<State>, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let lookup = id.to_string();
    match blocking(state, move |app| Ok(app.journal.job(&lookup)?)).await? {
        Some(j) if caller.sees(&j.tenant) => Ok(()),
        _ => Err(super::not_found("job", id)),
    }
}

/// A job with its step timeline and webhook deliveries.
#[utoipa::path(
    tag = "jobs",
    operation_id = "get_job",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = s::JobDetail),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[get("/v1/jobs/{id}")]
async fn show(state: web::Data<State>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let lookup = id.clone();
    // Read once; another tenant's job answers like a missing one, with nothing more read.
    let shown = blocking(&state, move |app| {
        let Some(job) = app.journal.job(&lookup)?.filter(|j| caller.sees(&j.tenant)) else { return Ok(None) };
        Ok(Some((app.journal.events(&lookup)?, app.journal.deliveries(&lookup)?, job)))
    })
    .await?;
    let (events, deliveries, job) = shown.ok_or_else(|| super::not_found("job", &id))?;
    let mut body = job.to_contract_json();
    body["events"] = serde_json::to_value(events).unwrap_or_default();
    body["webhooks"] = serde_json::to_value(deliveries).unwrap_or_default();
    Ok(HttpResponse::Ok().json(body))
}

/// Retries a failed, dead or cancelled job from the steps that did not succeed (same job id).
#[utoipa::path(
    tag = "jobs",
    operation_id = "retry_job",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 202, description = "Queued again", body = s::Job),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        CallerErrors,
    ),
)]
#[post("/v1/jobs/{id}/retry")]
async fn retry(state: web::Data<State>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    own_job(&state, &caller, &id).await?;
    let job = blocking(&state, move |app| app.retry(&id)).await?;
    Ok(HttpResponse::Accepted().json(job.to_contract_json()))
}

/// Cancels a job that has not ended (a running step stops at its next check).
#[utoipa::path(
    tag = "jobs",
    operation_id = "cancel_job",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancelled, or cancelling", body = s::Job),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        CallerErrors,
    ),
)]
#[post("/v1/jobs/{id}/cancel")]
async fn cancel(state: web::Data<State>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    own_job(&state, &caller, &id).await?;
    let job = blocking(&state, move |app| app.cancel(&id)).await?;
    Ok(HttpResponse::Accepted().json(job.to_contract_json()))
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, show, retry, cancel))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(show).service(retry).service(cancel);
}

//! Tenants, queues and webhook endpoints.
//!
//! - `POST /v1/tenants`, `GET /v1/tenants` — the operator only; a new tenant's API key and webhook
//!   secret are in the answer once and never again.
//! - `GET /v1/queues`, `POST /v1/queues/pause|resume` — the operator only.
//! - `POST /v1/webhooks`, `GET /v1/webhooks`, `DELETE /v1/webhooks/{id}` — a tenant's own endpoints;
//!   the operator may add ones that hear every tenant (`"tenant": "*"`), e.g. an alert on
//!   `unsupported_audio` or `panic` only. Each endpoint has its own secret, shown once.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use serde_json::json;

use super::auth::require_admin;
use super::openapi::schemas as s;
use super::openapi::{BadRequest, CallerErrors, Conflict, Forbidden, NotFound};
use super::{ApiError, State, blocking};
use crate::auth::Caller;
use crate::journal::PauseScope;
use crate::journal::hooks::{EVENT_TYPES, Endpoint};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

/// Creates a tenant (operator key); its API key and webhook secret are shown this once.
#[utoipa::path(
    tag = "admin",
    operation_id = "create_tenant",
    request_body = s::NewTenant,
    responses(
        (status = 201, description = "Created", body = s::CreatedTenant),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        CallerErrors,
    ),
)]
#[post("/v1/tenants")]
async fn create_tenant(
    state: web::Data<State>,
    caller: Caller,
    body: web::Json<NewTenant>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let name = body.into_inner().name;
    let created = blocking(&state, move |app| app.create_tenant(&name)).await?;
    Ok(HttpResponse::Created().json(created))
}

/// Every tenant (operator key).
#[utoipa::path(
    tag = "admin",
    operation_id = "list_tenants",
    responses(
        (status = 200, description = "Tenants", body = s::TenantList),
        (status = 403, response = Forbidden),
        CallerErrors,
    ),
)]
#[get("/v1/tenants")]
async fn list_tenants(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let tenants = blocking(&state, |app| Ok(app.journal.tenants()?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "tenants": tenants })))
}

/// Queue depths per queue and stage (operator key).
#[utoipa::path(
    tag = "admin",
    operation_id = "list_queues",
    responses(
        (status = 200, description = "Queues and stages", body = s::Queues),
        (status = 403, response = Forbidden),
        CallerErrors,
    ),
)]
#[get("/v1/queues")]
async fn queues(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let view = blocking(&state, |app| app.queues()).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    stage: Option<String>,
    tenant: Option<String>,
    batch: Option<String>,
}

impl PauseBody {
    fn scope(self) -> Result<PauseScope, ApiError> {
        match (self.stage, self.tenant, self.batch) {
            (Some(s), None, None) => Ok(PauseScope::Stage(s)),
            (None, Some(t), None) => Ok(PauseScope::Tenant(t)),
            (None, None, Some(b)) => Ok(PauseScope::Queue(format!("batch:{b}"))),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give exactly one of stage, tenant, batch",
            )),
        }
    }
}

async fn set_paused(
    state: web::Data<State>,
    caller: Caller,
    body: web::Json<PauseBody>,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    require_admin(&caller)?;
    let scope = body.into_inner().scope()?;
    let scope = blocking(&state, move |app| app.set_paused(scope, paused)).await?;
    Ok(HttpResponse::Ok().json(json!({ "paused": paused, "scope": scope })))
}

/// Pauses a stage, a tenant or a batch (operator key): nothing new of it starts.
#[utoipa::path(
    tag = "admin",
    operation_id = "pause_queue",
    request_body = s::PauseRequest,
    responses(
        (status = 200, description = "Paused", body = s::Paused),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[post("/v1/queues/pause")]
async fn pause(state: web::Data<State>, caller: Caller, body: web::Json<PauseBody>) -> Result<HttpResponse, ApiError> {
    set_paused(state, caller, body, true).await
}

/// Resumes a paused stage, tenant or batch (operator key).
#[utoipa::path(
    tag = "admin",
    operation_id = "resume_queue",
    request_body = s::PauseRequest,
    responses(
        (status = 200, description = "Resumed", body = s::Paused),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[post("/v1/queues/resume")]
async fn resume(state: web::Data<State>, caller: Caller, body: web::Json<PauseBody>) -> Result<HttpResponse, ApiError> {
    set_paused(state, caller, body, false).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    codes: Vec<String>,
    /// The operator: a tenant id or name, or `*` for every tenant. Tenants: ignored (their own).
    tenant: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn endpoint_json(ep: &Endpoint) -> serde_json::Value {
    json!({"id": ep.id, "tenant": ep.tenant.as_deref().unwrap_or("*"), "url": ep.url, "events": ep.events,
           "codes": ep.codes, "created_at": crate::clock::rfc3339(ep.created_at)})
}

/// Registers a webhook endpoint; its signing secret is shown this once.
#[utoipa::path(
    tag = "webhooks",
    operation_id = "create_webhook",
    request_body = s::NewEndpoint,
    responses(
        (status = 201, description = "Registered", body = s::CreatedEndpoint),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[post("/v1/webhooks")]
async fn create_endpoint(
    state: web::Data<State>,
    caller: Caller,
    body: web::Json<NewEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    if let Some(e) = b.events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
        return Err(bad(format!("unknown event type {e:?} (known: {})", EVENT_TYPES.join(", "))));
    }
    let code_ok = |c: &String| (1..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if b.codes.len() > 32 || b.events.len() > 32 || !b.codes.iter().all(code_ok) {
        return Err(bad("codes are up to 32 snake_case error codes (e.g. unsupported_audio, panic)"));
    }
    let url = b.url.clone();
    let guard = state.guard.clone();
    web::block(move || guard.admit(&url))
        .await?
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_webhook_url", e.to_string()))?;
    let tenant = match (caller.admin, b.tenant) {
        (true, Some(t)) if t == "*" => None,
        (true, Some(t)) => Some(blocking(&state, move |app| app.tenant_id(Some(&t))).await?),
        _ => Some(caller.tenant.clone()),
    };
    let ep = Endpoint {
        id: crate::journal::new_id("whe"),
        tenant,
        url: b.url,
        events: b.events,
        codes: b.codes,
        secret: crate::auth::new_webhook_secret(),
        created_at: state.app.clock.now_ms(),
    };
    let stored = ep.clone();
    blocking(&state, move |app| Ok(app.journal.create_endpoint(&stored)?)).await?;
    let mut body = endpoint_json(&ep);
    body["secret"] = ep.secret.into();
    Ok(HttpResponse::Created().json(body))
}

/// The caller's webhook endpoints (the operator: all of them).
#[utoipa::path(
    tag = "webhooks",
    operation_id = "list_webhooks",
    responses(
        (status = 200, description = "Endpoints", body = s::EndpointList),
        CallerErrors,
    ),
)]
#[get("/v1/webhooks")]
async fn list_endpoints(state: web::Data<State>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let tenant = (!caller.admin).then(|| caller.tenant.clone());
    let eps = blocking(&state, move |app| Ok(app.journal.endpoints(tenant.as_deref())?)).await?;
    Ok(HttpResponse::Ok().json(json!({ "webhooks": eps.iter().map(endpoint_json).collect::<Vec<_>>() })))
}

/// Removes a webhook endpoint: it hears no further events.
#[utoipa::path(
    tag = "webhooks",
    operation_id = "delete_webhook",
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[delete("/v1/webhooks/{id}")]
async fn delete_endpoint(
    state: web::Data<State>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    // A tenant deletes only its own (another tenant's id is as missing as an unknown one).
    let tenant = (!caller.admin).then(|| caller.tenant.clone());
    let target = id.clone();
    match blocking(&state, move |app| Ok(app.journal.delete_endpoint(&target, tenant.as_deref())?)).await {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(e) if e.status == actix_web::http::StatusCode::NOT_FOUND => Err(super::not_found("webhook endpoint", &id)),
        Err(e) => Err(e),
    }
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_tenant, list_tenants, queues, pause, resume, create_endpoint, list_endpoints, delete_endpoint))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_tenant)
        .service(list_tenants)
        .service(queues)
        .service(pause)
        .service(resume)
        .service(create_endpoint)
        .service(list_endpoints)
        .service(delete_endpoint);
}

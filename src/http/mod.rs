//! The HTTP API: a thin face over [`crate::app`]. Every error answers
//! `{"error": {"code", "message"}}` with a fitting status, extractor errors included.

mod admin;
pub mod auth;
mod edge;
pub mod hls;
pub mod intake;
mod jobs;
mod media;
pub mod openapi;
mod ops;
mod speech;
pub mod sweeper;
mod tus;
mod upload;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde_json::json;

pub use edge::{query_is_utf8, server};
pub use tus::parse_metadata as parse_tus_metadata;

use crate::app::{self, App};
use crate::metrics::Metrics;

/// Shared state of every handler.
#[derive(Clone)]
pub struct State {
    pub app: App,
    pub metrics: Arc<Metrics>,
    pub blobs: Arc<dyn crate::storage::BlobStore>,
    /// One permit per upload streaming now (`upload.max-in-flight`).
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Uploads streaming now, per tenant (`http.uploads-per-tenant`).
    pub tenant_uploads: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Key caches and per-tenant rate limits.
    pub auth: Arc<auth::AuthState>,
    /// Checks callback and endpoint URLs when they are registered.
    pub guard: Arc<crate::webhooks::Guard>,
    /// Free-disk admission of uploads (`data.min-free-bytes`).
    pub space: Arc<intake::Space>,
    /// Staging files being written now (the sweeper leaves them alone).
    pub in_flight: Arc<intake::InFlight>,
    /// Content-derived ETags of HLS files.
    pub etags: Arc<hls::ContentTags>,
}

impl State {
    pub fn new(app: App, metrics: Arc<Metrics>, blobs: Arc<dyn crate::storage::BlobStore>) -> Self {
        let uploads = Arc::new(tokio::sync::Semaphore::new(app.config.upload.max_in_flight));
        let guard = Arc::new(crate::webhooks::Guard::new(&app.config.webhook));
        let space = Arc::new(intake::Space::new(app.data_dir().to_path_buf(), app.config.data.min_free_bytes));
        Self {
            app,
            metrics,
            blobs,
            uploads,
            tenant_uploads: Default::default(),
            auth: Default::default(),
            guard,
            space,
            in_flight: Default::default(),
            etags: Default::default(),
        }
    }

    /// Where uploads are received: on the blob store's disk when it has one (adopted by a rename).
    pub fn staging_dir(&self) -> std::path::PathBuf {
        self.blobs.staging_dir().unwrap_or_else(|| self.app.data_dir().join("staging"))
    }

    /// Takes one of the tenant's upload slots (and one of the server's), or answers 429/503.
    pub fn upload_slot(&self, tenant: &str) -> Result<UploadSlot, ApiError> {
        let permit = self.uploads.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many uploads in progress; retry shortly")
                .retry_after(5)
        })?;
        let cap = self.app.config.http.uploads_per_tenant;
        let mut map = self.tenant_uploads.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(tenant.to_string()).or_default();
        if *n >= cap {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!("at most {cap} uploads at once per tenant; retry when one finishes"),
            )
            .retry_after(5));
        }
        *n += 1;
        Ok(UploadSlot { map: self.tenant_uploads.clone(), tenant: tenant.to_string(), _permit: permit })
    }
}

/// An upload in progress: frees its tenant slot and server permit when dropped.
pub struct UploadSlot {
    map: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    tenant: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

/// `Retry-After` of a 503 or 429 whose cause did not name a better delay, in seconds.
const DEFAULT_RETRY_AFTER_S: u32 = 5;

/// 404 for a resource of another tenant, exactly as for one that does not exist.
pub fn not_found(what: &str, id: &str) -> ApiError {
    // Echo at most 80 characters of what the client sent.
    let shown: String = id.chars().take(80).collect();
    let more = if shown.len() < id.len() { "…" } else { "" };
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found: {shown}{more}"))
}

/// An API error: a status, a snake_case code, a sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds a client should wait before trying again (`Retry-After`), for 429/503.
    pub retry_after: Option<u32>,
    /// Other headers the answer must carry (e.g. tus's `Tus-Version` on 412).
    pub headers: Vec<(&'static str, &'static str)>,
    /// Close the connection after answering (the request body was not read to its end).
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            headers: Vec::new(),
            close: false,
        }
    }

    /// Closes the connection after the answer (a body left unread must not be parsed as a request).
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        // Every 503 and 429 says when to come back, also where the site that raised it did not.
        let retry_after = self.retry_after.or(match self.status {
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => Some(DEFAULT_RETRY_AFTER_S),
            _ => None,
        });
        if let Some(s) = retry_after {
            resp.insert_header((actix_web::http::header::RETRY_AFTER, s.to_string()));
        }
        if self.close {
            resp.force_close();
        }
        for (name, value) in &self.headers {
            resp.insert_header((*name, *value));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer realm=\"lectern\""));
        }
        resp.json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

impl From<app::Error> for ApiError {
    fn from(e: app::Error) -> Self {
        let status = match &e {
            app::Error::NotFound { .. } => StatusCode::NOT_FOUND,
            app::Error::Invalid(_) => StatusCode::BAD_REQUEST,
            app::Error::Conflict(_) => StatusCode::CONFLICT,
            app::Error::Journal(_) | app::Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = match &e {
            app::Error::Unavailable { code, .. } => code.clone(),
            _ => e.code().to_string(),
        };
        Self::new(status, &code, e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the server is shutting down or overloaded")
            .retry_after(5)
    }
}

/// Runs a blocking application command off the async workers.
pub async fn blocking<T: Send + 'static>(
    state: &web::Data<State>,
    f: impl FnOnce(&App) -> app::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let app = state.app.clone();
    Ok(web::block(move || f(&app)).await??)
}

/// A received, fsynced upload on the store's disk, to become media + its ingest job.
pub(crate) struct Upload {
    pub tenant: String,
    pub idempotency_key: Option<String>,
    /// The staged file (inside the store's staging dir).
    pub staged: std::path::PathBuf,
    /// Leave `staged` in place (tus keeps answering `HEAD`): the store adopts a hard link instead.
    pub keep_staged: bool,
    pub title: Option<String>,
    /// Recorded as the media's `meta`.
    pub meta: serde_json::Value,
}

/// The one way an upload is accepted, for `POST /v1/media` and tus alike: the file goes into the
/// store under `media/<id>/source` (atomic), then media + job commit in one transaction. A lost race
/// on the idempotency key keeps the first upload only. Only after this returns may the client hear
/// 2xx: an accepted upload is never lost.
pub(crate) async fn accept_upload(state: &web::Data<State>, up: Upload) -> Result<crate::journal::Enqueued, ApiError> {
    let media_id = crate::journal::new_id("med");
    let key = format!("media/{media_id}/source");
    // The sweeper leaves a source alone while its media record is being committed.
    let _held = state.in_flight.hold(std::path::Path::new(&key));
    let (blobs, staged, keep) = (state.blobs.clone(), up.staged, up.keep_staged);
    let store_key = key.clone();
    web::block(move || -> crate::storage::Result<()> {
        let src = if keep {
            let link = staged.with_extension("adopt");
            std::fs::hard_link(&staged, &link)
                .map_err(|source| crate::storage::Error::Io { key: store_key.clone(), source })?;
            link
        } else {
            staged
        };
        blobs.adopt_file(&store_key, &src)
    })
    .await?
    .map_err(|e| {
        tracing::error!(error = %e, "could not store upload");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "the upload could not be stored")
            .retry_after(30)
    })?;
    let title = up.title.filter(|t| !t.trim().is_empty());
    // The job carries the callback: the journal fans each of its events out to it.
    let params = up.meta.get("callback_url").filter(|u| u.is_string()).map(|u| json!({"callback_url": u}));
    let req = app::EnqueueRequest {
        kind: "ingest".into(),
        params,
        tenant: Some(up.tenant),
        idempotency_key: up.idempotency_key,
        new_media: Some(crate::journal::NewMedia { id: media_id, title, meta: up.meta }),
        ..Default::default()
    };
    let blobs = state.blobs.clone();
    blocking(state, move |app| match app.enqueue(req) {
        Ok(e) => {
            if e.existing {
                // Lost a race with the same idempotency key: keep the first upload only.
                let _ = blobs.delete(&key);
            }
            Ok(e)
        }
        Err(e) => {
            // Refused (e.g. the journal is busy): the client hears 503 and will send it again, so
            // the stored file must not stay behind without its media record.
            let _ = blobs.delete(&key);
            Err(e)
        }
    })
    .await
}

fn json_error(status: StatusCode, code: &str, e: impl std::fmt::Display) -> actix_web::Error {
    ApiError::new(status, code, e.to_string()).into()
}

/// Routes and uniform error handling, for `App::configure`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|e, _| json_error(StatusCode::BAD_REQUEST, "invalid_json", e)),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| json_error(StatusCode::BAD_REQUEST, "invalid_query", e)))
    .app_data(web::PathConfig::default().error_handler(|e, _| json_error(StatusCode::BAD_REQUEST, "invalid_path", e)))
    .configure(ops::configure)
    .configure(admin::configure)
    .configure(jobs::configure)
    .configure(hls::configure)
    .configure(media::configure)
    .configure(upload::configure)
    .configure(speech::configure)
    .configure(tus::configure)
    .configure(openapi::configure)
    .default_service(web::to(fallback));
}

/// No route takes this request: 405 with `Allow` when the path exists for other methods, else 404.
/// The OpenAPI document serves as the route table (a unit test keeps the two equal).
pub(crate) async fn fallback(req: actix_web::HttpRequest) -> HttpResponse {
    let Some(allow) = openapi::allowed_methods(req.path()) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").error_response();
    };
    let message = format!("{} is not allowed here (allowed: {allow})", req.method());
    let mut resp = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message).error_response();
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    resp
}
